/* auth: reading a whole (small) file and walking it line by line, for users.c and acl.c. */
#include "core/auth/auth_int.h"

#include "core/base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void
tn_auth__err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int
tn_auth__read_file(const char *path, char **buf, size_t *len, char *err, size_t errlen)
{
    char *data = NULL;
    size_t n = 0;
    int rc = TN_EIO;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;

    *buf = NULL;
    *len = 0;
    if (fd < 0) {
        rc = errno == ENOENT ? TN_ENOENT : TN_EIO;
        tn_auth__err(err, errlen, "%s: %s", path, strerror(errno));
        return rc;
    }
    if (fstat(fd, &st) != 0) {
        tn_auth__err(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        tn_auth__err(err, errlen, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > TN_AUTH_MAX_FILE) {
        tn_auth__err(err, errlen, "%s: larger than %u bytes", path, TN_AUTH_MAX_FILE);
        rc = TN_ETOOBIG;
        goto out;
    }
    /* The size is a hint: the file may change while it is read, but never past the limit. */
    size_t cap = (size_t)st.st_size + 1;
    data = malloc(cap);
    if (data == NULL) {
        rc = TN_ENOMEM;
        tn_auth__err(err, errlen, "%s: out of memory", path);
        goto out;
    }
    for (;;) {
        if (n + 1 == cap) {
            if (cap > TN_AUTH_MAX_FILE) {
                tn_auth__err(err, errlen, "%s: larger than %u bytes", path, TN_AUTH_MAX_FILE);
                rc = TN_ETOOBIG;
                goto out;
            }
            char *p = realloc(data, cap * 2);
            if (p == NULL) {
                rc = TN_ENOMEM;
                tn_auth__err(err, errlen, "%s: out of memory", path);
                goto out;
            }
            data = p;
            cap *= 2;
        }
        ssize_t r = read(fd, data + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            tn_auth__err(err, errlen, "%s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    data[n] = '\0';
    *buf = data;
    *len = n;
    data = NULL;
    rc = 0;
out:
    free(data);
    close(fd);
    return rc;
}

void
tn_auth__lines_init(tn_auth__lines *it, const char *text, size_t len)
{
    it->p = text;
    it->end = text + len;
    it->lineno = 0;
}

bool
tn_auth__lines_next(tn_auth__lines *it, const char **line, size_t *len)
{
    if (it->p >= it->end)
        return false;
    const char *nl = memchr(it->p, '\n', (size_t)(it->end - it->p));
    const char *stop = nl ? nl : it->end;
    *line = it->p;
    *len = (size_t)(stop - it->p);
    if (*len > 0 && stop[-1] == '\r')
        --*len;
    it->p = nl ? nl + 1 : it->end;
    it->lineno++;
    return true;
}
