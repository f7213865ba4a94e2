/*
 * Fuzz target: any bytes as a password file must load or be refused with a message, never crash
 * or leak. Input: FILE, optionally followed by "\0NAME\0PASSWORD": then NAME is checked against
 * the file (when its hashes are cheap enough), and a line made for NAME must load and verify.
 */
#include "core/auth/auth.h"
#include "core/auth/auth_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* PBKDF2 iterations a fuzz input may make us run: more would only be slow. */
#define CHEAP 1000

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nul = memchr(text, '\0', size);
    size_t flen = nul ? (size_t)(nul - text) : size;
    tn_users *u = NULL;
    char err[256];

    /* The whole input first: a NUL in a line must be refused. */
    if (tn_users_parse("fuzz", text, size, &u, err, sizeof err) == 0)
        tn_users_free(u);
    if (nul == NULL)
        return 0;

    /* NAME and PASSWORD, each NUL-terminated in a copy. */
    size_t rest = size - flen - 1;
    char *q = malloc(rest + 2);
    if (q == NULL)
        return 0;
    memcpy(q, nul + 1, rest);
    q[rest] = q[rest + 1] = '\0';
    const char *name = q;
    const char *pw = q + strlen(q) + 1;
    size_t pwlen = strlen(pw);

    if (tn_users_parse("fuzz", text, flen, &u, err, sizeof err) == 0) {
        long it = tn_auth__users_iterations(u, name);
        unsigned dummy = tn_auth__users_dummy_iterations(u);
        if ((it >= 0 && it <= CHEAP) || (it < 0 && dummy <= CHEAP))
            tn_users_check(u, name, (const uint8_t *)pw, pwlen);
        tn_users_free(u);
    }

    /* A line we make must load and verify, and refuse another password. */
    char line[512];
    if (strlen(name) < 256 &&
        tn_users_make_line(name, (const uint8_t *)pw, pwlen, 1, line, sizeof line) == 0) {
        if (tn_users_parse("made", line, strlen(line), &u, err, sizeof err) != 0 ||
            tn_users_check(u, name, (const uint8_t *)pw, pwlen) != 0 ||
            tn_users_check(u, name, (const uint8_t *)"x", pwlen == 1 && pw[0] == 'x' ? 0 : 1) == 0)
            abort();
        tn_users_free(u);
    }
    free(q);
    return 0;
}
