/*
 * Fuzz target: any bytes as an ACL file must load or be refused with a message, never crash or
 * leak. Input: FILE, optionally followed by "\0USER\0CLIENT_ID\0NAME\0FILTER": then the checks
 * run with those (an empty USER is anonymous), and a name that may be read must make a readable
 * filter of itself.
 */
#include "core/auth/auth.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nul = memchr(text, '\0', size);
    size_t flen = nul ? (size_t)(nul - text) : size;
    tn_acl *a = NULL;
    char err[256];

    if (tn_acl_parse("fuzz", text, size, &a, err, sizeof err) == 0)
        tn_acl_free(a);
    if (nul == NULL || tn_acl_parse("fuzz", text, flen, &a, err, sizeof err) != 0)
        return 0;

    /* Four NUL-terminated strings from a copy of the rest. */
    size_t rest = size - flen - 1;
    char *q = malloc(rest + 4);
    if (q == NULL) {
        tn_acl_free(a);
        return 0;
    }
    memcpy(q, nul + 1, rest);
    memset(q + rest, 0, 4);
    const char *f[4];
    const char *p = q;
    for (int i = 0; i < 4; i++) {
        f[i] = p;
        p += strlen(p) + 1;
        if (p > q + rest + 3)
            p = q + rest + 3;
    }
    const char *user = f[0][0] ? f[0] : NULL;
    for (int kind = TN_ACL_TOPIC; kind <= TN_ACL_QUEUE; kind++) {
        bool r = tn_acl_allows(a, user, f[1], kind, f[2], TN_ACL_READ);
        tn_acl_allows(a, user, f[1], kind, f[2], TN_ACL_WRITE);
        tn_acl_allows(a, user, f[1], kind, f[2], TN_ACL_READ | TN_ACL_WRITE);
        if (r && !tn_acl_filter_readable(a, user, f[1], kind, f[2]))
            abort();
        tn_acl_filter_readable(a, user, f[1], kind, f[3]);
    }
    tn_acl_is_admin(a, user);
    free(q);
    tn_acl_free(a);
    return 0;
}
