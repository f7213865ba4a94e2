/* auth: what users.c and acl.c share, and hooks for the unit test. Not for other modules. */
#ifndef TN_AUTH_INT_H
#define TN_AUTH_INT_H

#include "core/auth/auth.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Reads all of path into a new buffer (*buf, freed by the caller; NUL-terminated, the NUL not
 * counted in *len). Returns 0, TN_ENOENT, TN_EIO, TN_ETOOBIG or TN_ENOMEM with "PATH: why" in
 * err. */
int tn_auth__read_file(const char *path, char **buf, size_t *len, char *err, size_t errlen);

/* Walks text one line at a time: the line's bytes without "\n" or "\r\n". */
typedef struct tn_auth__lines {
    const char *p, *end;
    unsigned lineno; /* of the line last returned, from 1 */
} tn_auth__lines;

void tn_auth__lines_init(tn_auth__lines *it, const char *text, size_t len);
/* false at the end of text. */
bool tn_auth__lines_next(tn_auth__lines *it, const char **line, size_t *len);

/* snprintf into err when err is not NULL. */
void tn_auth__err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Test hooks: a user's iteration count (0 for $6$, -1 for no such user), and the count the
 * unknown users' dummy PBKDF2 runs. */
long tn_auth__users_iterations(const tn_users *u, const char *name);
unsigned tn_auth__users_dummy_iterations(const tn_users *u);

#endif
