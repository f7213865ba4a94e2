#include "core/base/base.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static tn_log_level log_level = TN_LOG_INFO;

const char *
tn_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define TN_ERR_CASE(name, val, text)                                                               \
    case TN_##name:                                                                                \
        return text;
        TN_ERRNO_MAP(TN_ERR_CASE)
#undef TN_ERR_CASE
    }
    return "unknown error";
}

void
tn_log_set_level(tn_log_level level)
{
    log_level = level;
}

tn_log_level
tn_log_get_level(void)
{
    return log_level;
}

int
tn_log_parse_level(const char *name, tn_log_level *out)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (tn_log_level)i;
            return 0;
        }
    }
    return TN_EINVAL;
}

void
tn_log(tn_log_level level, const char *id, const char *fmt, ...)
{
    static const char *tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    if (!tn_log_enabled(level))
        return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, tags[level], id);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One write per line so lines from several threads do not interleave. */
    fprintf(stderr, "%s\n", line);
}

void
tn_assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "tern: assertion failed: %s (%s:%d)\n", what, file, line);
    abort();
}

void *
tn_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        tn_assert_fail("out of memory", __FILE__, __LINE__);
    return p;
}

void *
tn_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        tn_assert_fail("out of memory", __FILE__, __LINE__);
    return p;
}

void *
tn_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        tn_assert_fail("out of memory", __FILE__, __LINE__);
    return q;
}

char *
tn_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = tn_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

void
tn_buf_init(tn_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void
tn_buf_fini(tn_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

uint8_t *
tn_buf_reserve(tn_buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return NULL;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : TN_BUF_MIN;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > b->max)
            cap = b->max;
        uint8_t *p = realloc(b->data, cap);
        if (!p)
            return NULL;
        b->data = p;
        b->cap = cap;
    }
    return b->data + b->len;
}

void
tn_buf_commit(tn_buf *b, size_t n)
{
    tn_assert(b->len + n <= b->cap);
    b->len += n;
}

int
tn_buf_append(tn_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    uint8_t *dst = tn_buf_reserve(b, n);
    if (!dst)
        return TN_ETOOBIG;
    memcpy(dst, p, n);
    b->len += n;
    return 0;
}

void
tn_buf_consume(tn_buf *b, size_t n)
{
    tn_assert(n <= b->len);
    if (n == 0)
        return;
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void
tn_buf_reset(tn_buf *b)
{
    tn_buf_fini(b);
}

int
tn_mkdirs(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}
