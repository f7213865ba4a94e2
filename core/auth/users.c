/*
 * auth: the password file (mosquitto_passwd's format, see auth.h) and checking a password.
 *
 * A loaded tn_users is never written again, so any number of threads may check passwords at
 * once: a check reads the hash table and uses only its own stack and OpenSSL's (thread-safe)
 * one-shot functions.
 */
#include "core/auth/auth.h"
#include "core/auth/auth_int.h"

#include "core/base/base.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#define HASH_LEN 64 /* SHA-512 */
#define SALT_MAX 64 /* longest salt we read; mosquitto_passwd writes 12 bytes */

enum { TYPE_SHA512 = 6, TYPE_PBKDF2 = 7 };

struct user {
    UT_hash_handle hh;
    char *name;
    unsigned lineno;
    uint8_t type;
    uint8_t salt_len;
    uint32_t iterations; /* $7$ only */
    uint8_t salt[SALT_MAX];
    uint8_t hash[HASH_LEN];
};

struct tn_users {
    struct user *by_name;
    size_t n;
    /* Unknown users run PBKDF2 this many times: the count most $7$ lines have. */
    uint32_t dummy_iterations;
};

/* ---- base64, standard alphabet with padding (RFC 4648 section 4) ---- */

static int
b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes s (n characters, a multiple of 4, '=' only as the last one or two) into out (room for
 * max bytes). The number of bytes, or -1. */
static long
b64_decode(const char *s, size_t n, uint8_t *out, size_t max)
{
    size_t len = 0;

    if (n == 0 || n % 4 != 0)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)s[i + k];
            if (c == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad > 0 || (v[k] = b64_value(c)) < 0) {
                return -1; /* a character after '=', or not base64 */
            }
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t got = 3 - (size_t)pad;
        if (len + got > max)
            return -1;
        out[len++] = (uint8_t)(w >> 16);
        if (got > 1)
            out[len++] = (uint8_t)(w >> 8);
        if (got > 2)
            out[len++] = (uint8_t)w;
    }
    return (long)len;
}

/* ---- hashing ---- */

/* PBKDF2-HMAC-SHA512 or SHA-512(password || salt) of pw into out. 0 or -1. */
static int
hash_password(const struct user *e, const uint8_t *pw, size_t len, uint8_t out[HASH_LEN])
{
    static const uint8_t none[1];
    if (pw == NULL)
        pw = none;
    if (len > INT_MAX)
        return -1;
    if (e->type == TYPE_PBKDF2) {
        return PKCS5_PBKDF2_HMAC((const char *)pw, (int)len, e->salt, e->salt_len,
                                 (int)e->iterations, EVP_sha512(), HASH_LEN, out) == 1
                   ? 0
                   : -1;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, pw, len) == 1 &&
             EVP_DigestUpdate(ctx, e->salt, e->salt_len) == 1 &&
             EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == HASH_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -1;
}

int
tn_users_check(const tn_users *u, const char *name, const uint8_t *pw, size_t len)
{
    uint8_t got[HASH_LEN];
    struct user dummy;
    const struct user *e = NULL;

    if (u == NULL || name == NULL)
        return TN_EDENIED;
    HASH_FIND_STR(u->by_name, name, e);
    if (e == NULL) {
        /* The same work as for a user of the file, against a hash nothing produces. */
        memset(&dummy, 0, sizeof dummy);
        dummy.type = TYPE_PBKDF2;
        dummy.iterations = u->dummy_iterations;
        dummy.salt_len = TN_USERS_SALT_LEN;
        memset(dummy.hash, 0xff, sizeof dummy.hash);
    }
    int ok = hash_password(e ? e : &dummy, pw, len, got) == 0 &&
             CRYPTO_memcmp(got, e ? e->hash : dummy.hash, HASH_LEN) == 0;
    OPENSSL_cleanse(got, sizeof got);
    return ok && e != NULL ? 0 : TN_EDENIED;
}

/* ---- making a line ---- */

bool
tn_users_name_is_valid(const char *name)
{
    if (name == NULL || name[0] == '\0' || name[0] == '#' || name[0] == ' ' || name[0] == '\t')
        return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p == ':' || *p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

int
tn_users_make_line(const char *name, const uint8_t *pw, size_t len, unsigned iterations, char *out,
                   size_t outlen)
{
    struct user e;
    uint8_t hash[HASH_LEN];
    /* EVP_EncodeBlock writes 4 characters per 3 bytes and a NUL. */
    unsigned char salt64[4 * ((SALT_MAX + 2) / 3) + 1], hash64[4 * ((HASH_LEN + 2) / 3) + 1];
    int rc = TN_EIO;

    if (outlen > 0)
        out[0] = '\0';
    if (iterations == 0)
        iterations = TN_USERS_DEFAULT_ITERATIONS;
    if (!tn_users_name_is_valid(name) || iterations > INT_MAX || len > INT_MAX)
        return TN_EINVAL;
    memset(&e, 0, sizeof e);
    e.type = TYPE_PBKDF2;
    e.iterations = iterations;
    e.salt_len = TN_USERS_SALT_LEN;
    if (RAND_bytes(e.salt, TN_USERS_SALT_LEN) != 1 || hash_password(&e, pw, len, hash) != 0)
        goto out;
    EVP_EncodeBlock(salt64, e.salt, TN_USERS_SALT_LEN);
    EVP_EncodeBlock(hash64, hash, HASH_LEN);
    int n =
        snprintf(out, outlen, "%s:$7$%u$%s$%s", name, iterations, (char *)salt64, (char *)hash64);
    if (n < 0 || (size_t)n >= outlen) {
        if (outlen > 0)
            out[0] = '\0';
        rc = TN_ETOOBIG;
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(hash, sizeof hash);
    return rc;
}

/* ---- loading ---- */

static void
free_users(struct user **head)
{
    struct user *e, *tmp;
    HASH_ITER(hh, *head, e, tmp)
    {
        HASH_DEL(*head, e);
        free(e->name);
        free(e);
    }
}

void
tn_users_free(tn_users *u)
{
    if (u == NULL)
        return;
    free_users(&u->by_name);
    free(u);
}

size_t
tn_users_count(const tn_users *u)
{
    return u ? u->n : 0;
}

/* The next '$'-separated field of [*p, end): its start and length. *p moves past the '$', or
 * becomes NULL after the last field. */
static bool
next_field(const char **p, const char *end, const char **f, size_t *n)
{
    if (*p == NULL)
        return false;
    const char *d = memchr(*p, '$', (size_t)(end - *p));
    *f = *p;
    *n = (size_t)((d ? d : end) - *p);
    *p = d ? d + 1 : NULL;
    return true;
}

/* Parses "$7$ITER$SALT$HASH" or "$6$SALT$HASH" (s, n bytes) into e. NULL or what is wrong. */
static const char *
parse_hash(const char *s, size_t n, struct user *e)
{
    const char *end = s + n, *f;
    size_t fl;

    if (n < 3 || s[0] != '$' || (s[1] != '6' && s[1] != '7') || s[2] != '$')
        return "expected $7$ITERATIONS$SALT$HASH or $6$SALT$HASH after the name";
    e->type = s[1] == '7' ? TYPE_PBKDF2 : TYPE_SHA512;
    const char *p = s + 3;
    if (e->type == TYPE_PBKDF2) {
        uint64_t it = 0;
        if (!next_field(&p, end, &f, &fl) || fl == 0 || fl > 10)
            return "bad iteration count";
        for (size_t i = 0; i < fl; i++) {
            if (f[i] < '0' || f[i] > '9')
                return "bad iteration count";
            it = it * 10 + (uint64_t)(f[i] - '0');
        }
        if (it == 0 || it > INT_MAX)
            return "bad iteration count";
        e->iterations = (uint32_t)it;
    }
    if (!next_field(&p, end, &f, &fl))
        return "missing salt";
    long sl = b64_decode(f, fl, e->salt, sizeof e->salt);
    if (sl <= 0)
        return "bad salt (base64, 1 to 64 bytes)";
    e->salt_len = (uint8_t)sl;
    if (!next_field(&p, end, &f, &fl))
        return "missing hash";
    if (b64_decode(f, fl, e->hash, sizeof e->hash) != HASH_LEN)
        return "bad hash (base64 of 64 bytes)";
    if (p != NULL)
        return "unexpected '$' after the hash";
    return NULL;
}

static bool
is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return false;
    return true;
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The iteration count most $7$ users have (the larger on a tie), or the default. */
static uint32_t
common_iterations(const tn_users *u)
{
    uint32_t *v = NULL, best = TN_USERS_DEFAULT_ITERATIONS;
    size_t n = 0, best_n = 0;
    const struct user *e;

    if (u->n == 0 || (v = malloc(u->n * sizeof *v)) == NULL)
        return best;
    for (e = u->by_name; e; e = e->hh.next)
        if (e->type == TYPE_PBKDF2)
            v[n++] = e->iterations;
    qsort(v, n, sizeof *v, cmp_u32);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && v[j] == v[i])
            j++;
        if (j - i >= best_n) {
            best_n = j - i;
            best = v[i];
        }
        i = j;
    }
    free(v);
    return best;
}

int
tn_users_parse(const char *name, const char *text, size_t len, tn_users **out, char *err,
               size_t errlen)
{
    tn_users *u = calloc(1, sizeof *u);
    struct user *e = NULL;
    tn_auth__lines it;
    const char *line;
    size_t n;
    int rc = TN_EINVAL;

    *out = NULL;
    if (u == NULL) {
        tn_auth__err(err, errlen, "%s: out of memory", name);
        return TN_ENOMEM;
    }
    tn_auth__lines_init(&it, text, len);
    while (tn_auth__lines_next(&it, &line, &n)) {
        if (n == 0 || line[0] == '#' || is_blank(line, n))
            continue;
        const char *colon = memchr(line, ':', n);
        if (memchr(line, '\0', n) != NULL) {
            tn_auth__err(err, errlen, "%s:%u: NUL byte in the line", name, it.lineno);
            goto out;
        }
        if (colon == NULL || colon == line) {
            tn_auth__err(err, errlen, "%s:%u: expected NAME:HASH", name, it.lineno);
            goto out;
        }
        e = calloc(1, sizeof *e);
        if (e == NULL || (e->name = strndup(line, (size_t)(colon - line))) == NULL) {
            tn_auth__err(err, errlen, "%s: out of memory", name);
            rc = TN_ENOMEM;
            goto out;
        }
        e->lineno = it.lineno;
        const char *why = parse_hash(colon + 1, n - (size_t)(colon + 1 - line), e);
        if (why != NULL) {
            tn_auth__err(err, errlen, "%s:%u: user %s: %s", name, it.lineno, e->name, why);
            goto out;
        }
        struct user *dup;
        HASH_FIND_STR(u->by_name, e->name, dup);
        if (dup != NULL) {
            tn_auth__err(err, errlen, "%s:%u: user %s given twice (first on line %u)", name,
                         it.lineno, e->name, dup->lineno);
            goto out;
        }
        HASH_ADD_KEYPTR(hh, u->by_name, e->name, strlen(e->name), e);
        e = NULL;
        u->n++;
    }
    u->dummy_iterations = common_iterations(u);
    *out = u;
    u = NULL;
    rc = 0;
out:
    if (e != NULL) {
        free(e->name);
        free(e);
    }
    tn_users_free(u);
    return rc;
}

int
tn_users_load(const char *path, tn_users **out, char *err, size_t errlen)
{
    char *text;
    size_t len;
    int rc = tn_auth__read_file(path, &text, &len, err, errlen);

    *out = NULL;
    if (rc != 0)
        return rc;
    rc = tn_users_parse(path, text, len, out, err, errlen);
    free(text);
    return rc;
}

/* ---- test hooks ---- */

long
tn_auth__users_iterations(const tn_users *u, const char *name)
{
    const struct user *e;
    HASH_FIND_STR(u->by_name, name, e);
    if (e == NULL)
        return -1;
    return e->type == TYPE_PBKDF2 ? (long)e->iterations : 0;
}

unsigned
tn_auth__users_dummy_iterations(const tn_users *u)
{
    return u->dummy_iterations;
}
