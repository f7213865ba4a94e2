/*
 * base: what every Tern module shares: error codes, logging, assertions and a bounded buffer.
 *
 * Errors: functions return 0 or a negative TN_E* code; results go in out-params, last.
 * Thread: the logger may be called from any thread; everything else is per-owner.
 */
#ifndef TN_BASE_H
#define TN_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One table of error codes, like libuv's UV_ERRNO_MAP. */
#define TN_ERRNO_MAP(X)                                                                            \
    X(EAGAIN, -1, "need more input")                                                               \
    X(ENOMEM, -2, "out of memory")                                                                 \
    X(EINVAL, -3, "invalid argument")                                                              \
    X(EPROTO, -4, "protocol error")                                                                \
    X(ETOOBIG, -5, "over the configured limit")                                                    \
    X(ENOENT, -6, "not found")                                                                     \
    X(EEXIST, -7, "already exists")                                                                \
    X(ECLOSED, -8, "closed")                                                                       \
    X(EIO, -9, "input/output error")                                                               \
    X(EDENIED, -10, "not authorized")                                                              \
    X(EUNSUPP, -11, "not supported")

enum {
#define TN_ERR_ENUM(name, val, text) TN_##name = (val),
    TN_ERRNO_MAP(TN_ERR_ENUM)
#undef TN_ERR_ENUM
};

/* A constant description of a TN_E* code (or "unknown error"). */
const char *tn_strerror(int err);

/* Logging. Each message carries a stable ID ("MQTT-BAD-LEN") so operators can grep for it. */
typedef enum {
    TN_LOG_ERROR = 0,
    TN_LOG_WARN = 1,
    TN_LOG_INFO = 2,
    TN_LOG_DEBUG = 3,
} tn_log_level;

void tn_log_set_level(tn_log_level level);
tn_log_level tn_log_get_level(void);
/* Parses "error", "warn", "info" or "debug"; TN_EINVAL otherwise. */
int tn_log_parse_level(const char *name, tn_log_level *out);
static inline bool
tn_log_enabled(tn_log_level level)
{
    return level <= tn_log_get_level();
}
void tn_log(tn_log_level level, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define tn_log_error(id, ...) tn_log(TN_LOG_ERROR, id, __VA_ARGS__)
#define tn_log_warn(id, ...) tn_log(TN_LOG_WARN, id, __VA_ARGS__)
#define tn_log_info(id, ...) tn_log(TN_LOG_INFO, id, __VA_ARGS__)
/* Debug logs are per-message: the level check comes before the arguments are evaluated. */
#define tn_log_debug(id, ...)                                                                      \
    do {                                                                                           \
        if (tn_log_enabled(TN_LOG_DEBUG))                                                          \
            tn_log(TN_LOG_DEBUG, id, __VA_ARGS__);                                                 \
    } while (0)

/* TN_SANITIZED is 1 in AddressSanitizer builds, where free lists that recycle memory are turned
 * off so that a use after free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define TN_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TN_SANITIZED 1
#endif
#endif
#ifndef TN_SANITIZED
#define TN_SANITIZED 0
#endif

/* mkdir -p: creates path and its missing parents (mode 0755). 0 or -1 with errno set. */
int tn_mkdirs(const char *path);

/* For our own bugs only, never for peer input: logs and aborts. Always on. */
#define tn_assert(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            tn_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)
_Noreturn void tn_assert_fail(const char *what, const char *file, int line);

/* Allocation that aborts on failure, for small bookkeeping structures (like most brokers do:
 * there is no sane way to continue half-way through a routing decision). */
void *tn_xmalloc(size_t n);
void *tn_xcalloc(size_t n, size_t size);
void *tn_xrealloc(void *p, size_t n);
char *tn_xstrdup(const char *s);

/*
 * tn_buf: a growable byte buffer with a maximum fixed at init. Appends past the maximum fail with
 * TN_ETOOBIG and leave the buffer unchanged. Memory is allocated on the first append and given
 * back by tn_buf_reset(), so an idle connection's buffers cost nothing.
 */
/* The first allocation of a tn_buf; it doubles from there. */
#define TN_BUF_MIN 256

typedef struct tn_buf {
    uint8_t *data;
    size_t len; /* bytes in use, from data[0] */
    size_t cap; /* bytes allocated */
    size_t max; /* never grows past this */
} tn_buf;

void tn_buf_init(tn_buf *b, size_t max);
void tn_buf_fini(tn_buf *b);
int tn_buf_append(tn_buf *b, const void *p, size_t n);
/* Makes room for n more bytes and returns where they go (then tn_buf_commit(b, n)); NULL past max.
 */
uint8_t *tn_buf_reserve(tn_buf *b, size_t n);
void tn_buf_commit(tn_buf *b, size_t n);
/* Drops the first n bytes. */
void tn_buf_consume(tn_buf *b, size_t n);
/* Empties the buffer and frees its memory. */
void tn_buf_reset(tn_buf *b);

/* The struct holding member, from a pointer to it. */
#define TN_CONTAINER_OF(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

#endif
