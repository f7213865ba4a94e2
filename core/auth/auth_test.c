#include "core/auth/auth.h"
#include "core/auth/auth_int.h"

#include "core/base/base.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Written by Mosquitto 2.0.11's mosquitto_passwd (Debian 12): `mosquitto_passwd -b` for the $7$
 * lines (101 iterations), `mosquitto_passwd -H sha512 -b` for the $6$ ones. */
#define MOSQ_ALICE                                                                                 \
    "alice:$7$101$IBL8M16xDhMCQsVU$wmYyPfXqOAPn+D/dolovDHsIow7W4TDGGgygqv4UduTqfyR0kzLp3Hi/"       \
    "rBJH8VizaE/KXixCdD8y12DGC1h3zQ==" /* secret */
#define MOSQ_JURGEN                                                                                \
    "j\xc3\xbcrgen:$7$101$xmjBb4dnSXYtxcb9$"                                                       \
    "sj2gLr1nwMB0waLB8YM5Gyu2UyxD2Nno5G32XTwko54itlzTQmN8oqg"                                      \
    "et3GZCQXVgS9c/JVkr/5lYu9a1sO5yg==" /* "p\xc3\xa4ssw\xc3\xb6rd with spaces" */
#define MOSQ_EVE                                                                                   \
    "eve:$7$101$yoHxjW9T0SYSAWOM$ZuwAeFzp3hyoxFDEpIern794pO4epovkFtFRGiHpOKkv7da48QHegoBCgGJbAFy+" \
    "utvhD7XJwmQOxzdQLizovA==" /* empty */
#define MOSQ_MALLORY                                                                               \
    "mallory:$7$101$tQQlxTbTfVvBeFjY$h+lyB4T0kh1mcBJGLBiJXmAZ+qxJy7N9IxjABa+"                      \
    "xrnDBb8UL8ybykLpaAmbbkTV3NjsWsF0QPxan7JiyqOhoJQ==" /* p@ss:w$rd#1 */
#define MOSQ_CAROL                                                                                 \
    "carol:$6$iBgYmA+RoMDPLS7S$"                                                                   \
    "ptEoH2cSyLtFo30ieCQszxGlJKnIClfqZ651odf7zz6DzLKhmsok3L0N8w2UiE2PrkF"                          \
    "REirWOhJ2gdiEqnFNTQ==" /* hunter2 */
#define MOSQ_DAVE                                                                                  \
    "dave:$6$f/"                                                                                   \
    "fwGJNykSeSjsKJ$tVKfLCMLmFU1P48jevdSv+3elwhASMMmEJ701aKRDkq1lm3IpUzNGgqaUVuTpq0G8ij3E"         \
    "ZzSbqRjJTEV6bpIxw==" /* empty */

#define PW(s) (const uint8_t *)(s), strlen(s)

static tn_users *
users_ok(const char *text)
{
    tn_users *u = NULL;
    char err[256] = "";
    int rc = tn_users_parse("t", text, strlen(text), &u, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "unexpected: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return u;
}

/* Parsing text fails with exactly want. */
static void
users_bad(const char *text, size_t len, const char *want)
{
    tn_users *u = (tn_users *)1;
    char err[256] = "";
    CU_ASSERT_EQUAL(tn_users_parse("t", text, len, &u, err, sizeof err), TN_EINVAL);
    CU_ASSERT_PTR_NULL(u);
    if (strcmp(err, want) != 0)
        fprintf(stderr, "\n  got:  %s\n  want: %s\n", err, want);
    CU_ASSERT_STRING_EQUAL(err, want);
}

#define USERS_BAD(text, want) users_bad(text, sizeof(text) - 1, want)

static void
test_users_mosquitto(void)
{
    tn_users *u = users_ok("# made by mosquitto_passwd\n" MOSQ_ALICE "\n" MOSQ_JURGEN "\r\n"
                           "\n" MOSQ_EVE "\n" MOSQ_MALLORY "\n   \t\n" MOSQ_CAROL "\r\n" MOSQ_DAVE);
    CU_ASSERT_EQUAL(tn_users_count(u), 6);
    CU_ASSERT_EQUAL(tn_users_check(u, "alice", PW("secret")), 0);
    CU_ASSERT_EQUAL(tn_users_check(u, "alice", PW("Secret")), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(u, "alice", PW("secret ")), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(u, "alice", PW("")), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(u, "alice", NULL, 0), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(u, "j\xc3\xbcrgen", PW("p\xc3\xa4ssw\xc3\xb6rd with spaces")),
                    0);
    CU_ASSERT_EQUAL(tn_users_check(u, "jurgen", PW("p\xc3\xa4ssw\xc3\xb6rd with spaces")),
                    TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(u, "eve", PW("")), 0);
    CU_ASSERT_EQUAL(tn_users_check(u, "eve", NULL, 0), 0);
    CU_ASSERT_EQUAL(tn_users_check(u, "eve", PW(" ")), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(u, "mallory", PW("p@ss:w$rd#1")), 0);
    CU_ASSERT_EQUAL(tn_users_check(u, "carol", PW("hunter2")), 0);
    CU_ASSERT_EQUAL(tn_users_check(u, "carol", PW("hunter3")), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(u, "dave", PW("")), 0);
    CU_ASSERT_EQUAL(tn_users_check(u, "dave", PW("x")), TN_EDENIED);
    /* Unknown users: the same answer as a wrong password, whatever the password. */
    CU_ASSERT_EQUAL(tn_users_check(u, "bob", PW("secret")), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(u, "", PW("")), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(u, "Alice", PW("secret")), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(u, NULL, PW("secret")), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(NULL, "alice", PW("secret")), TN_EDENIED);
    /* A NUL inside the password is a byte like the others (but HMAC pads its key with zeros,
     * so $7$ cannot tell "secret" from "secret\0": mosquitto cannot either). */
    CU_ASSERT_EQUAL(tn_users_check(u, "alice", (const uint8_t *)"\0secret", 7), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(u, "alice", (const uint8_t *)"sec\0ret", 7), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_users_check(u, "carol", (const uint8_t *)"hunter2\0", 8), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_auth__users_iterations(u, "alice"), 101);
    CU_ASSERT_EQUAL(tn_auth__users_iterations(u, "carol"), 0);
    CU_ASSERT_EQUAL(tn_auth__users_iterations(u, "bob"), -1);
    CU_ASSERT_EQUAL(tn_auth__users_dummy_iterations(u), 101);
    tn_users_free(u);
    tn_users_free(NULL);
}

static void
test_users_empty(void)
{
    tn_users *u = users_ok("");
    CU_ASSERT_EQUAL(tn_users_count(u), 0);
    CU_ASSERT_EQUAL(tn_users_check(u, "alice", PW("secret")), TN_EDENIED);
    CU_ASSERT_EQUAL(tn_auth__users_dummy_iterations(u), TN_USERS_DEFAULT_ITERATIONS);
    tn_users_free(u);
    u = users_ok("# nothing\n\n\r\n#alice:x\n");
    CU_ASSERT_EQUAL(tn_users_count(u), 0);
    tn_users_free(u);
}

/* A line for name with its hash spelled out: salt "AAAAAAAAAAAAAAAA" (12 zero bytes). */
#define HASH88                                                                                     \
    "ptEoH2cSyLtFo30ieCQszxGlJKnIClfqZ651odf7zz6DzLKhmsok3L0N8w2UiE2PrkFREirWOhJ2gdiEqnFNTQ=="

static void
test_users_bad(void)
{
    const char *e7 = "t:1: user a: expected $7$ITERATIONS$SALT$HASH or $6$SALT$HASH after the name";
    USERS_BAD("alice\n", "t:1: expected NAME:HASH");
    USERS_BAD("#c\n\n:$6$AAAA$" HASH88 "\n", "t:3: expected NAME:HASH");
    USERS_BAD("a:secret", e7);
    USERS_BAD("a:", e7);
    USERS_BAD("a:$5$AAAA$" HASH88, e7);
    USERS_BAD("a:$7", e7);
    USERS_BAD("a:$7$$AAAA$" HASH88, "t:1: user a: bad iteration count");
    USERS_BAD("a:$7$0$AAAA$" HASH88, "t:1: user a: bad iteration count");
    USERS_BAD("a:$7$-1$AAAA$" HASH88, "t:1: user a: bad iteration count");
    USERS_BAD("a:$7$2147483648$AAAA$" HASH88, "t:1: user a: bad iteration count");
    USERS_BAD("a:$7$ 10$AAAA$" HASH88, "t:1: user a: bad iteration count");
    USERS_BAD("a:$7$10", "t:1: user a: missing salt");
    USERS_BAD("a:$7$10$AAAA", "t:1: user a: missing hash");
    USERS_BAD("a:$6$AAAA", "t:1: user a: missing hash");
    USERS_BAD("a:$6$$" HASH88, "t:1: user a: bad salt (base64, 1 to 64 bytes)");
    USERS_BAD("a:$6$AAA$" HASH88, "t:1: user a: bad salt (base64, 1 to 64 bytes)");
    USERS_BAD("a:$6$AA=A$" HASH88, "t:1: user a: bad salt (base64, 1 to 64 bytes)");
    USERS_BAD("a:$6$A===$" HASH88, "t:1: user a: bad salt (base64, 1 to 64 bytes)");
    USERS_BAD("a:$6$AA-_$" HASH88, "t:1: user a: bad salt (base64, 1 to 64 bytes)");
    USERS_BAD("a:$6$AAAA$", "t:1: user a: bad hash (base64 of 64 bytes)");
    USERS_BAD("a:$6$AAAA$AAAA", "t:1: user a: bad hash (base64 of 64 bytes)");
    USERS_BAD("a:$6$AAAA$" HASH88 "AAAA", "t:1: user a: bad hash (base64 of 64 bytes)");
    USERS_BAD("a:$6$AAAA$" HASH88 " ", "t:1: user a: bad hash (base64 of 64 bytes)");
    USERS_BAD("a:$6$AAAA$" HASH88 "$", "t:1: user a: unexpected '$' after the hash");
    USERS_BAD("a:$6$AAAA$" HASH88 "\nb:$6$AAAA$" HASH88 "\na:$6$AAAA$" HASH88,
              "t:3: user a given twice (first on line 1)");
    USERS_BAD("a:$6$AA\0A$" HASH88, "t:1: NUL byte in the line");
    /* A lone '\r' is not a line end. */
    USERS_BAD("a:$6$AAAA$" HASH88 "\rb:$6$AAAA$" HASH88,
              "t:1: user a: bad hash (base64 of 64 bytes)");
    /* The good line is fine. */
    tn_users *u = users_ok("a:$6$AAAA$" HASH88);
    tn_users_free(u);
    u = users_ok("a:$7$007$AAAAAAAAAAAAAAAA$" HASH88 "\r");
    CU_ASSERT_EQUAL(tn_auth__users_iterations(u, "a"), 7);
    tn_users_free(u);
}

static void
test_users_make_line(void)
{
    char line[512], line2[512];
    tn_users *u;

    CU_ASSERT_EQUAL(tn_users_make_line("alice", PW("secret"), 0, line, sizeof line), 0);
    /* alice:$7$10000$ + 16 characters of salt + '$' + 88 of hash */
    CU_ASSERT_EQUAL(strlen(line), 6 + 9 + 16 + 1 + 88);
    CU_ASSERT_EQUAL(strncmp(line, "alice:$7$10000$", 15), 0);
    CU_ASSERT(strlen(line) < 6 + TN_USERS_HASH_MAX);
    u = users_ok(line);
    CU_ASSERT_EQUAL(tn_auth__users_iterations(u, "alice"), 10000);
    CU_ASSERT_EQUAL(tn_auth__users_dummy_iterations(u), 10000);
    CU_ASSERT_EQUAL(tn_users_check(u, "alice", PW("secret")), 0);
    CU_ASSERT_EQUAL(tn_users_check(u, "alice", PW("secreT")), TN_EDENIED);
    tn_users_free(u);

    /* A fresh salt each time. */
    CU_ASSERT_EQUAL(tn_users_make_line("alice", PW("secret"), 5, line, sizeof line), 0);
    CU_ASSERT_EQUAL(tn_users_make_line("alice", PW("secret"), 5, line2, sizeof line2), 0);
    CU_ASSERT_STRING_NOT_EQUAL(line, line2);
    CU_ASSERT_EQUAL(strncmp(line, "alice:$7$5$", 11), 0);

    /* Any bytes, and the empty password. */
    CU_ASSERT_EQUAL(tn_users_make_line("b", (const uint8_t *)"\0\xff\n", 3, 3, line, sizeof line),
                    0);
    u = users_ok(line);
    CU_ASSERT_EQUAL(tn_users_check(u, "b", (const uint8_t *)"\0\xff\n", 3), 0);
    CU_ASSERT_EQUAL(tn_users_check(u, "b", (const uint8_t *)"\0\xff", 2), TN_EDENIED);
    tn_users_free(u);
    CU_ASSERT_EQUAL(tn_users_make_line("c", NULL, 0, 3, line, sizeof line), 0);
    u = users_ok(line);
    CU_ASSERT_EQUAL(tn_users_check(u, "c", PW("")), 0);
    tn_users_free(u);

    /* Names a file could not hold, or would read as something else. */
    const char *bad[] = {"",        "#alice",  " alice", "\talice", "al:ice",
                         "al\nice", "al\rice", "al\x7f", NULL};
    for (int i = 0; bad[i]; i++) {
        CU_ASSERT_FALSE(tn_users_name_is_valid(bad[i]));
        CU_ASSERT_EQUAL(tn_users_make_line(bad[i], PW("x"), 1, line, sizeof line), TN_EINVAL);
    }
    CU_ASSERT_FALSE(tn_users_name_is_valid(NULL));
    CU_ASSERT_TRUE(tn_users_name_is_valid("al ice#$%\xc3\xbc"));
    CU_ASSERT_EQUAL(tn_users_make_line("a", PW("x"), 0x80000000u, line, sizeof line), TN_EINVAL);

    /* Too small a buffer: nothing half-written. */
    CU_ASSERT_EQUAL(tn_users_make_line("alice", PW("x"), 1, line, 40), TN_ETOOBIG);
    CU_ASSERT_STRING_EQUAL(line, "");
    CU_ASSERT_EQUAL(tn_users_make_line("alice", PW("x"), 1, line, 6 + 5 + 16 + 1 + 88), TN_ETOOBIG);
    CU_ASSERT_EQUAL(tn_users_make_line("alice", PW("x"), 1, line, 6 + 5 + 16 + 1 + 88 + 1), 0);
}

static void
test_users_dummy_iterations(void)
{
    char file[2048] = "", line[256];
    const unsigned its[] = {500, 101, 500, 7, 101, 101, 500};
    const char *names[] = {"a", "b", "c", "d", "e", "f", "g"};
    tn_users *u;

    /* 101 and 500 three times each: the larger wins the tie. */
    for (int i = 0; i < 7; i++) {
        CU_ASSERT_EQUAL(tn_users_make_line(names[i], PW("x"), its[i], line, sizeof line), 0);
        strcat(file, line);
        strcat(file, "\n");
    }
    strcat(file, "h:$6$AAAA$" HASH88 "\n");
    u = users_ok(file);
    CU_ASSERT_EQUAL(tn_auth__users_dummy_iterations(u), 500);
    CU_ASSERT_EQUAL(tn_users_check(u, "zz", PW("x")), TN_EDENIED);
    tn_users_free(u);
    /* Only $6$ lines: the default. */
    u = users_ok("h:$6$AAAA$" HASH88 "\n");
    CU_ASSERT_EQUAL(tn_auth__users_dummy_iterations(u), TN_USERS_DEFAULT_ITERATIONS);
    tn_users_free(u);
}

static char tmpdir[64];

static const char *
write_tmp(const char *name, const char *text)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void
test_users_load(void)
{
    char err[256], want[256];
    tn_users *u = (tn_users *)1;
    const char *path = write_tmp("passwd", MOSQ_ALICE "\n" MOSQ_CAROL "\n");

    CU_ASSERT_EQUAL(tn_users_load(path, &u, err, sizeof err), 0);
    CU_ASSERT_EQUAL(tn_users_count(u), 2);
    CU_ASSERT_EQUAL(tn_users_check(u, "carol", PW("hunter2")), 0);
    tn_users_free(u);

    path = write_tmp("passwd", MOSQ_ALICE "\nbroken\n");
    CU_ASSERT_EQUAL(tn_users_load(path, &u, err, sizeof err), TN_EINVAL);
    snprintf(want, sizeof want, "%s:2: expected NAME:HASH", path);
    CU_ASSERT_STRING_EQUAL(err, want);
    CU_ASSERT_PTR_NULL(u);
    /* err may be NULL. */
    CU_ASSERT_EQUAL(tn_users_load(path, &u, NULL, 0), TN_EINVAL);
    unlink(path);

    CU_ASSERT_EQUAL(tn_users_load(path, &u, err, sizeof err), TN_ENOENT);
    snprintf(want, sizeof want, "%s: No such file or directory", path);
    CU_ASSERT_STRING_EQUAL(err, want);
    CU_ASSERT_EQUAL(tn_users_load(tmpdir, &u, err, sizeof err), TN_EIO);
    snprintf(want, sizeof want, "%s: not a regular file", tmpdir);
    CU_ASSERT_STRING_EQUAL(err, want);
}

/* Many threads checking at once against one tn_users: every answer right. */
struct checker {
    const tn_users *u;
    int bad;
};

static void *
check_thread(void *arg)
{
    struct checker *c = arg;
    for (int i = 0; i < 40; i++) {
        c->bad += tn_users_check(c->u, "alice", PW("secret")) != 0;
        c->bad += tn_users_check(c->u, "carol", PW("hunter2")) != 0;
        c->bad += tn_users_check(c->u, "alice", PW("hunter2")) != TN_EDENIED;
        c->bad += tn_users_check(c->u, "nobody", PW("secret")) != TN_EDENIED;
    }
    return NULL;
}

static void
test_users_threads(void)
{
    tn_users *u = users_ok(MOSQ_ALICE "\n" MOSQ_CAROL "\n");
    pthread_t t[4];
    struct checker c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (struct checker){u, 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, check_thread, &c[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(c[i].bad, 0);
    }
    tn_users_free(u);
}

/* ---- ACL ---- */

static tn_acl *
acl_ok(const char *text)
{
    tn_acl *a = NULL;
    char err[256] = "";
    int rc = tn_acl_parse("acl", text, strlen(text), &a, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "unexpected: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return a;
}

static void
acl_bad(const char *text, size_t len, const char *want)
{
    tn_acl *a = (tn_acl *)1;
    char err[256] = "";
    CU_ASSERT_EQUAL(tn_acl_parse("acl", text, len, &a, err, sizeof err), TN_EINVAL);
    CU_ASSERT_PTR_NULL(a);
    if (strcmp(err, want) != 0)
        fprintf(stderr, "\n  got:  %s\n  want: %s\n", err, want);
    CU_ASSERT_STRING_EQUAL(err, want);
}

#define ACL_BAD(text, want) acl_bad(text, sizeof(text) - 1, want)

#define R TN_ACL_READ
#define W TN_ACL_WRITE
#define RW (TN_ACL_READ | TN_ACL_WRITE)
#define T TN_ACL_TOPIC
#define Q TN_ACL_QUEUE

static void
test_acl_sections(void)
{
    tn_acl *a = acl_ok("# anonymous\n"
                       "topic read public/#\n"
                       "topic write\tinbox\n"
                       "\n"
                       "user alice\n"
                       "topic alice/#\n"
                       "queue read orders/+\n"
                       "queue write orders/eu\n"
                       "user bob\n"
                       "topic readwrite bob\n"
                       "user alice\n" /* a second section for alice adds to the first */
                       "topic read shared\n");
    /* Anonymous: the lines before any user. */
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c1", T, "public/news", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c1", T, "public", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c1", T, "public/news", W));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c1", T, "public/news", RW));
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c1", T, "inbox", W));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c1", T, "inbox", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c1", T, "alice/x", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c1", Q, "public/news", R));
    /* alice: her lines only, not the anonymous ones. */
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c1", T, "alice/x", RW));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c1", T, "alice", W));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c1", T, "shared", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c1", T, "shared", W));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c1", T, "public/news", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c1", T, "bob", R));
    /* Queues are their own names: a topic rule says nothing about a queue. */
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c1", Q, "orders/us", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c1", Q, "orders/us", W));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c1", Q, "orders/eu", W));
    /* READ and WRITE together, from two rules. */
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c1", Q, "orders/eu", RW));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c1", Q, "alice/x", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c1", T, "orders/eu", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "bob", "c2", T, "bob", RW));
    CU_ASSERT_FALSE(tn_acl_allows(a, "bob", "c2", T, "bob/x", R));
    /* A user the file does not name: nothing (no pattern here). */
    CU_ASSERT_FALSE(tn_acl_allows(a, "carol", "c3", T, "public/news", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "", "c3", T, "public/news", R));
    /* Names are case-sensitive, user names too. */
    CU_ASSERT_FALSE(tn_acl_allows(a, "Alice", "c1", T, "alice/x", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c1", T, "Alice/x", R));
    tn_acl_free(a);
}

static void
test_acl_deny(void)
{
    tn_acl *a = acl_ok("topic #\n"
                       "topic deny secret/#\n"
                       "user alice\n"
                       "topic readwrite #\n"
                       "topic deny private/+/key\n"
                       "topic read $SYS/#\n"
                       "topic deny $SYS/broker/clients/#\n"
                       "user bob\n"
                       "topic deny bob/in\n"
                       "pattern read bob/#\n"
                       "pattern deny +/%u/hidden\n"
                       "pattern write users/%u/#\n");
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c", T, "a/b", RW));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "secret", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "secret/x", W));
    /* deny wins whatever the order of the lines. */
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "private/a", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", T, "private/a/key", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", T, "private/a/key", W));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "private/a/key/x", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "$SYS/broker/uptime", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", T, "$SYS/broker/uptime", W));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", T, "$SYS/broker/clients/connected", R));
    /* The anonymous deny is not alice's. */
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "secret/x", R));
    /* A user's deny beats a pattern's grant, and a pattern's deny beats the user's grant. */
    CU_ASSERT_TRUE(tn_acl_allows(a, "bob", "c", T, "bob/out", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "bob", "c", T, "bob/in", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", T, "x/alice/hidden", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "x/bob/hidden", R));
    /* A deny pattern with %u does not match anonymous clients: the grant stands. */
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c", T, "x/y/hidden", R));
    /* Grants from the user's lines and a pattern add up. */
    CU_ASSERT_TRUE(tn_acl_allows(a, "bob", "c", T, "bob/x", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "bob", "c", T, "bob/x", W));
    tn_acl_free(a);

    /* Deny alone grants nothing. */
    a = acl_ok("topic deny a\n");
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "a", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "b", R));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", T, "#"));
    tn_acl_free(a);
    /* An empty file denies everything. */
    a = acl_ok("");
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "a", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", Q, "a", W));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", T, "#"));
    CU_ASSERT_FALSE(tn_acl_is_admin(a, "alice"));
    tn_acl_free(a);
}

static void
test_acl_patterns(void)
{
    tn_acl *a = acl_ok("pattern write sensor/%u/data\n"
                       "pattern read devices/%c/#\n"
                       "pattern readwrite mix/%u/%c\n"
                       "pattern read in-level/dev-%c-x/%u%u\n"
                       "pattern read %c/home\n"
                       "pattern read 100%/%x/%\n"
                       "topic read literal/%c\n"
                       "user alice\n"
                       "topic read alice-only\n");
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c1", T, "sensor/alice/data", W));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c1", T, "sensor/alice/data", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c1", T, "sensor/bob/data", W));
    CU_ASSERT_TRUE(tn_acl_allows(a, "bob", "c1", T, "sensor/bob/data", W));
    CU_ASSERT_FALSE(tn_acl_allows(a, "bob", "c1", T, "sensor/%u/data", W));
    /* Patterns apply to users the file does not name, and to anonymous clients without %u. */
    CU_ASSERT_TRUE(tn_acl_allows(a, "zed", "c9", T, "devices/c9/status", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c9", T, "devices/c9", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c9", T, "devices/c8/status", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c9", T, "sensor//data", W));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c9", T, "mix//c9", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "u", "c9", T, "mix/u/c9", RW));
    CU_ASSERT_TRUE(tn_acl_allows(a, "u", "c9", T, "in-level/dev-c9-x/uu", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "u", "c9", T, "in-level/dev-c9-x/u", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "u", "c9", T, "in-level/dev-c9/uu", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "u", "$c", T, "$c/home", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "u", "c", T, "100%/%x/%", R));
    /* A `topic` line never substitutes. */
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c9", T, "literal/%c", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c9", T, "literal/c9", R));
    /* An id or name that is empty, missing or holds a wildcard or '/' substitutes nothing. */
    const char *badid[] = {"", "a+", "#", "a/b", "+", NULL};
    for (int i = 0; badid[i]; i++) {
        char name[64];
        snprintf(name, sizeof name, "devices/%s/x", badid[i]);
        CU_ASSERT_FALSE(tn_acl_allows(a, "zed", badid[i], T, name, R));
        CU_ASSERT_FALSE(tn_acl_filter_readable(a, "zed", badid[i], T, name));
        CU_ASSERT_FALSE(tn_acl_filter_readable(a, "zed", badid[i], T, "devices/#"));
        snprintf(name, sizeof name, "sensor/%s/data", badid[i]);
        CU_ASSERT_FALSE(tn_acl_allows(a, badid[i], "c", T, name, W));
    }
    CU_ASSERT_FALSE(tn_acl_allows(a, "zed", NULL, T, "devices//x", R));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, "zed", NULL, T, "devices/#"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, "zed", "c", T, "devices/#"));
    /* Patterns are for topics only. */
    CU_ASSERT_FALSE(tn_acl_allows(a, "zed", "c9", Q, "devices/c9/status", R));
    tn_acl_free(a);
}

static void
test_acl_wildcards(void)
{
    tn_acl *a = acl_ok("topic read a/#\n"
                       "topic read +/b\n"
                       "topic read #\n"
                       "user alice\n"
                       "topic read +/+\n"
                       "topic read x/+/z\n"
                       "topic read $SYS/+\n"
                       "topic read $q/#\n"
                       "topic read /lead\n"
                       "topic read trail/\n"
                       "user bob\n"
                       "topic read +/#\n");
    /* '#' matches the parent level, and everything not starting with '$'. */
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c", T, "a", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c", T, "anything/at/all", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c", T, "/", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "$SYS/x", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "$SYS", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "$x/b", R));
    /* '+' takes exactly one level, an empty one too. */
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "a/b", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "a/", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "/", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", T, "a", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", T, "a/b/c", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", T, "$a/b", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "x//z", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", T, "x/y/w", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "$SYS/uptime", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", T, "$SYS/a/b", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "$q", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "$q/1/2", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "/lead", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", T, "lead", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "trail/", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "alice", "c", T, "trail", R));
    /* '+/#' matches one level and more, not '$' ones. */
    CU_ASSERT_TRUE(tn_acl_allows(a, "bob", "c", T, "a", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "bob", "c", T, "a/b/c", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, "bob", "c", T, "$a", R));
    /* Not names: empty, or holding wildcards. */
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "a/+", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "#", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, NULL, R));
    /* Not accesses or kinds. */
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "a", 0));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "a", 4));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "a", -1));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", (tn_acl_kind)2, "a", R));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", (tn_acl_kind)2, "a"));
    tn_acl_free(a);
}

static void
test_acl_syntax(void)
{
    tn_acl *a = acl_ok("  # indented comment\n"
                       "\t\n"
                       "topic read with space/and more  \t\r\n"
                       "topic   write\t  padded \r\n"
                       "topic readable\n" /* not an access word: the filter */
                       "topic deny  \t deny\n"
                       "  user   Ann Smith  \n"
                       "topic read ann\n"
                       "admin\n"
                       "user carol\n"
                       "  admin  \n"
                       "user dave\n"
                       "topic read d");
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c", T, "with space/and more", R));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "with space/and more  ", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c", T, "padded", W));
    CU_ASSERT_TRUE(tn_acl_allows(a, NULL, "c", T, "readable", RW));
    CU_ASSERT_FALSE(tn_acl_allows(a, NULL, "c", T, "deny", R));
    CU_ASSERT_TRUE(tn_acl_allows(a, "Ann Smith", "c", T, "ann", R));
    CU_ASSERT_TRUE(tn_acl_is_admin(a, "Ann Smith"));
    CU_ASSERT_TRUE(tn_acl_is_admin(a, "carol"));
    CU_ASSERT_FALSE(tn_acl_is_admin(a, "dave"));
    CU_ASSERT_FALSE(tn_acl_is_admin(a, "Ann"));
    CU_ASSERT_FALSE(tn_acl_is_admin(a, "nobody"));
    CU_ASSERT_FALSE(tn_acl_is_admin(a, NULL));
    CU_ASSERT_TRUE(tn_acl_allows(a, "dave", "c", T, "d", R));
    tn_acl_free(a);

    ACL_BAD("topic a\nsubscribe b\n",
            "acl:2: unknown keyword \"subscribe\" (expected topic, pattern, queue, user or admin)");
    ACL_BAD("topics a\n",
            "acl:1: unknown keyword \"topics\" (expected topic, pattern, queue, user or admin)");
    ACL_BAD("Topic a\n",
            "acl:1: unknown keyword \"Topic\" (expected topic, pattern, queue, user or admin)");
    ACL_BAD("admin\n", "acl:1: `admin` takes nothing and follows a `user` line");
    ACL_BAD("user a\nadmin yes\n", "acl:2: `admin` takes nothing and follows a `user` line");
    ACL_BAD("user\n", "acl:1: `user` needs a name");
    ACL_BAD("user  \t\n", "acl:1: `user` needs a name");
    ACL_BAD("topic\n", "acl:1: missing filter");
    ACL_BAD("\n\ntopic read\n", "acl:3: missing filter after the access");
    ACL_BAD("queue deny   \n", "acl:1: missing filter after the access");
    ACL_BAD("topic a/#/b\n", "acl:1: invalid filter (+ and # must be whole levels, # the last)");
    ACL_BAD("pattern a+\n", "acl:1: invalid filter (+ and # must be whole levels, # the last)");
    ACL_BAD("topic read a#\n", "acl:1: invalid filter (+ and # must be whole levels, # the last)");
    ACL_BAD("topic a\0b\n", "acl:1: NUL byte in the line");
}

static void
test_acl_null(void)
{
    CU_ASSERT_TRUE(tn_acl_allows(NULL, NULL, NULL, T, "a", R));
    CU_ASSERT_TRUE(tn_acl_allows(NULL, "u", "c", Q, "a/b", RW));
    CU_ASSERT_TRUE(tn_acl_filter_readable(NULL, NULL, NULL, T, "#"));
    CU_ASSERT_TRUE(tn_acl_is_admin(NULL, NULL));
    tn_acl_free(NULL);
}

static void
test_acl_filter_valid(void)
{
    const char *good[] = {"#",     "+", "a",  "a/b", "a/+",    "+/b", "a/#",
                          "+/+/#", "/", "//", "/#",  "$SYS/#", "a b", NULL};
    const char *bad[] = {"", "a#", "#/a", "a/#/b", "a+", "+a", "a/b+", "++", "##", "a/##", NULL};
    for (int i = 0; good[i]; i++)
        CU_ASSERT_TRUE(tn_acl_filter_is_valid(good[i]));
    for (int i = 0; bad[i]; i++)
        CU_ASSERT_FALSE(tn_acl_filter_is_valid(bad[i]));
    CU_ASSERT_FALSE(tn_acl_filter_is_valid(NULL));
}

/* Whether a grant of rule filter g makes subscription filter s readable. */
static bool
readable(const char *g, const char *s)
{
    char text[256];
    snprintf(text, sizeof text, "topic read %s\n", g);
    tn_acl *a = acl_ok(text);
    bool r = tn_acl_filter_readable(a, NULL, "c", T, s);
    tn_acl_free(a);
    return r;
}

static void
test_acl_filter_readable(void)
{
    static const struct {
        const char *grant, *sub;
        bool want;
    } cases[] = {
        {"a/b", "a/b", true},
        {"a/b", "a/c", false},
        {"a/b", "a", false},
        {"a/b", "a/b/c", false},
        {"a/b", "a/+", true},
        {"a/b", "+/b", true},
        {"a/b", "+/+", true},
        {"a/b", "+", false},
        {"a/b", "+/+/+", false},
        {"a/b", "#", true},
        {"a/b", "a/#", true},
        {"a/b", "a/b/#", true}, /* "a/b" itself */
        {"a/b", "a/b/c/#", false},
        {"a/b", "b/#", false},
        {"a/+", "a/#", true},
        {"a/+", "+/b", true},
        {"a/+", "b/+", false},
        {"a/+", "a", false},
        {"a/+", "a/b/c", false},
        {"a/#", "a", true},
        {"a/#", "+", true},
        {"a/#", "b", false},
        {"a/#", "+/x/y/z", true},
        {"a/#", "#", true},
        {"a/b/#", "a/+", true}, /* "a/b" */
        {"a/b/#", "a", false},
        {"a/b/#", "+/c/#", false},
        {"+/+", "#", true},
        {"+/+", "a/#", true},
        {"+/+", "a", false},
        {"+", "#", true},
        {"+", "a/#", true}, /* "a" */
        {"+", "a/+", false},
        {"#", "#", true},
        {"#", "anything/at/all", true},
        {"#", "+/+", true},
        {"#", "/", true},
        /* '$' names: a first-level wildcard never matches them. */
        {"#", "$SYS/#", false},
        {"#", "$SYS", false},
        {"+/#", "$SYS/a", false},
        {"+", "$SYS", false},
        {"$SYS/#", "#", false},
        {"$SYS/#", "+/#", false},
        {"$SYS/#", "+/uptime", false},
        {"$SYS/#", "$SYS/#", true},
        {"$SYS/#", "$SYS", true},
        {"$SYS/#", "$SYS/+", true},
        {"$SYS/uptime", "$SYS/+", true},
        {"$SYS/uptime", "$sys/+", false},
        {"a/$b", "+/+", true}, /* only the first level is special */
        {"a/$b", "a/#", true},
        {"+/$b", "a/#", true},
        /* empty levels */
        {"/", "+/+", true},
        {"/", "#", true},
        {"/a", "+/a", true},
        {"/a", "/#", true},
        {"a//b", "a/+/b", true},
        {"a//b", "a/b", false},
        {"a/", "a/#", true},
        {"a/", "a", false},
        {"a/", "+/+", true},
        /* "" is no name: what "/#" and "+" share */
        {"/#", "+", false},
        {"+", "/#", false},
        {"/#", "+/#", true},
        {"/#", "/", true},
        {"#", "/#", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool got = readable(cases[i].grant, cases[i].sub);
        if (got != cases[i].want)
            fprintf(stderr, "\n  grant %s, sub %s: got %d\n", cases[i].grant, cases[i].sub, got);
        CU_ASSERT_EQUAL(got, cases[i].want);
    }

    /* Only read grants count; a deny counts when it leaves nothing of the filter (a filter
     * without wildcards is one name). */
    tn_acl *a = acl_ok("topic write w/#\n"
                       "topic read r/#\n"
                       "topic deny r/secret/#\n"
                       "queue read q/+\n"
                       "user alice\n"
                       "topic readwrite alice/#\n"
                       "pattern read p/%u/#\n"
                       "pattern read c/%c\n");
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", T, "w/#"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", T, "r/secret/x"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", T, "r/secret/#"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", T, "r/secret/+/y"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, NULL, "c", T, "r/+"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, NULL, "c", T, "r/#"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, NULL, "c", T, "r/other"));
    tn_acl *paho = acl_ok("topic readwrite #\ntopic deny test/nosubscribe\n");
    /* The Paho interoperability suite's test_subscribe_failure. */
    CU_ASSERT_FALSE(tn_acl_filter_readable(paho, NULL, "c", T, "test/nosubscribe"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(paho, NULL, "c", T, "test/+"));
    tn_acl_free(paho);
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, NULL, "c", T, "#"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", T, "q/+"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, NULL, "c", Q, "q/+"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, NULL, "c", Q, "#"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", Q, "q"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, "alice", "c", T, "alice"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, "alice", "c", T, "r/#"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, "alice", "c", T, "p/alice/x"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, "alice", "c", T, "p/+/x"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, "alice", "c", T, "p/bob/x"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", T, "p/+/x"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, NULL, "c", T, "c/c"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", T, "c/d"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, NULL, "c", T, "+/c"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", T, "a/#/b"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", T, ""));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, NULL, "c", T, NULL));
    tn_acl_free(a);

    /* A substituted first level that starts with '$'. */
    a = acl_ok("pattern read %c/#\n");
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, "u", "$c", T, "#"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, "u", "$c", T, "+/x"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, "u", "$c", T, "+"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, "u", "$c", T, "$c/x"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, "u", "$c", T, "$c"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, "u", "c", T, "+/x"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, "u", "c", T, "#"));
    tn_acl_free(a);
    a = acl_ok("pattern read %u\n");
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, "$u", "c", T, "$u"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, "$u", "c", T, "+"));
    CU_ASSERT_FALSE(tn_acl_filter_readable(a, "$u", "c", T, "#"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, "u", "c", T, "+"));
    CU_ASSERT_TRUE(tn_acl_filter_readable(a, "u", "c", T, "#"));
    tn_acl_free(a);
}

/* ---- against a reference: random filters and every name over a small alphabet ---- */

static const char *const alpha[] = {"a", "b", "", "$s"};
enum { NALPHA = 4, MAXLV = 5 };

/* Splits s at '/' into v (at most MAXLV + 1 levels); the count. */
static int
split(const char *s, char v[][8])
{
    int n = 0;
    const char *p = s;
    for (;;) {
        const char *e = strchrnul(p, '/');
        snprintf(v[n++], 8, "%.*s", (int)(e - p), p);
        if (*e == '\0')
            return n;
        p = e + 1;
    }
}

/* MQTT matching, written the obvious way. */
static bool
ref_match(const char *filter, const char *name)
{
    char f[MAXLV + 2][8], t[MAXLV + 2][8];
    int nf = split(filter, f), nt = split(name, t);
    for (int i = 0; i < nf; i++) {
        if (strcmp(f[i], "#") == 0)
            return !(i == 0 && t[0][0] == '$');
        if (i >= nt)
            return false;
        if (strcmp(f[i], "+") == 0) {
            if (i == 0 && t[0][0] == '$')
                return false;
        } else if (strcmp(f[i], t[i]) != 0) {
            return false;
        }
    }
    return nf == nt;
}

static unsigned rng = 12345;

static unsigned
rnd(unsigned n)
{
    rng = rng * 1103515245u + 12345u;
    return (rng >> 16) % n;
}

/* A valid filter of 1 to 4 levels over alpha, '+' and '#' (never the empty filter). */
static void
random_filter(char *out, size_t cap)
{
    int n = 1 + (int)rnd(4);
    out[0] = '\0';
    for (int i = 0; i < n || out[0] == '\0'; i++) {
        const char *lv;
        unsigned k = rnd(7);
        if (k < 4)
            lv = alpha[k];
        else if (k < 6 || i + 1 < n)
            lv = "+";
        else
            lv = "#";
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", i ? "/" : "", lv);
    }
}

/* Calls f on every name of 1 to MAXLV levels over alpha; stops when f returns true. */
static bool
each_name(bool (*f)(const char *name, void *arg), void *arg)
{
    char name[64];
    for (int n = 1; n <= MAXLV; n++) {
        int total = 1;
        for (int i = 0; i < n; i++)
            total *= NALPHA;
        for (int k = 0; k < total; k++) {
            int x = k;
            name[0] = '\0';
            for (int i = 0; i < n; i++, x /= NALPHA)
                snprintf(name + strlen(name), sizeof name - strlen(name), "%s%s", i ? "/" : "",
                         alpha[x % NALPHA]);
            if (name[0] != '\0' && f(name, arg))
                return true;
        }
    }
    return false;
}

struct pair {
    const char *g, *s;
};

static bool
both_match(const char *name, void *arg)
{
    struct pair *p = arg;
    return ref_match(p->g, name) && ref_match(p->s, name);
}

static void
test_acl_intersect_reference(void)
{
    char g[64], s[64];
    int mismatches = 0;
    for (int i = 0; i < 3000; i++) {
        random_filter(g, sizeof g);
        random_filter(s, sizeof s);
        struct pair p = {g, s};
        bool want = each_name(both_match, &p);
        bool got = readable(g, s);
        if (got != want && mismatches++ < 10)
            fprintf(stderr, "\n  grant %s, sub %s: got %d, want %d\n", g, s, got, want);
    }
    CU_ASSERT_EQUAL(mismatches, 0);
}

/* Random files of a few rules, every name: tn_acl_allows() as the reference says. */
struct allows_case {
    tn_acl *a;
    char filters[4][64];
    int access[4]; /* 0 deny */
    int n;
    int bad;
};

static bool
check_allows(const char *name, void *arg)
{
    struct allows_case *c = arg;
    for (int want = 1; want <= 3; want++) {
        bool denied = false;
        int have = 0;
        for (int i = 0; i < c->n; i++) {
            if (!ref_match(c->filters[i], name))
                continue;
            if (c->access[i] == 0)
                denied = true;
            have |= c->access[i];
        }
        bool expect = !denied && (have & want) == want;
        bool got = tn_acl_allows(c->a, NULL, "c", T, name, want);
        if (got != expect && c->bad++ < 10)
            fprintf(stderr, "\n  name %s, access %d: got %d\n", name, want, got);
        /* A name that may be read is a filter that is readable. */
        if (got && (want & R) && !tn_acl_filter_readable(c->a, NULL, "c", T, name) && c->bad++ < 10)
            fprintf(stderr, "\n  name %s readable but not as a filter\n", name);
    }
    return false;
}

static void
test_acl_allows_reference(void)
{
    static const char *const words[] = {"deny", "read", "write", "readwrite"};
    int bad = 0;
    for (int round = 0; round < 150; round++) {
        struct allows_case c = {.n = 1 + (int)rnd(4)};
        char text[512] = "";
        for (int i = 0; i < c.n; i++) {
            unsigned w = rnd(4);
            random_filter(c.filters[i], sizeof c.filters[i]);
            c.access[i] = (int)w;
            /* Patterns without substitutions behave as topic lines. */
            snprintf(text + strlen(text), sizeof text - strlen(text), "%s %s %s\n",
                     rnd(2) ? "topic" : "pattern", words[w], c.filters[i]);
        }
        c.a = acl_ok(text);
        each_name(check_allows, &c);
        tn_acl_free(c.a);
        bad += c.bad;
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void
test_acl_load(void)
{
    char err[256], want[256];
    tn_acl *a = (tn_acl *)1;
    const char *path = write_tmp("acl", "user alice\ntopic read a\nadmin\n");

    CU_ASSERT_EQUAL(tn_acl_load(path, &a, err, sizeof err), 0);
    CU_ASSERT_TRUE(tn_acl_is_admin(a, "alice"));
    CU_ASSERT_TRUE(tn_acl_allows(a, "alice", "c", T, "a", R));
    tn_acl_free(a);
    path = write_tmp("acl", "user alice\n\ntopic read a\nwrite b\n");
    CU_ASSERT_EQUAL(tn_acl_load(path, &a, err, sizeof err), TN_EINVAL);
    snprintf(want, sizeof want,
             "%s:4: unknown keyword \"write\" (expected topic, pattern, queue, user or admin)",
             path);
    CU_ASSERT_STRING_EQUAL(err, want);
    CU_ASSERT_PTR_NULL(a);
    unlink(path);
    CU_ASSERT_EQUAL(tn_acl_load(path, &a, err, sizeof err), TN_ENOENT);
}

int
main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tern-auth-test-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return 1;
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("users", NULL, NULL);
    CU_add_test(s, "mosquitto", test_users_mosquitto);
    CU_add_test(s, "empty", test_users_empty);
    CU_add_test(s, "bad", test_users_bad);
    CU_add_test(s, "make_line", test_users_make_line);
    CU_add_test(s, "dummy_iterations", test_users_dummy_iterations);
    CU_add_test(s, "load", test_users_load);
    CU_add_test(s, "threads", test_users_threads);
    s = CU_add_suite("acl", NULL, NULL);
    CU_add_test(s, "sections", test_acl_sections);
    CU_add_test(s, "deny", test_acl_deny);
    CU_add_test(s, "patterns", test_acl_patterns);
    CU_add_test(s, "wildcards", test_acl_wildcards);
    CU_add_test(s, "syntax", test_acl_syntax);
    CU_add_test(s, "null", test_acl_null);
    CU_add_test(s, "filter_valid", test_acl_filter_valid);
    CU_add_test(s, "filter_readable", test_acl_filter_readable);
    CU_add_test(s, "intersect_reference", test_acl_intersect_reference);
    CU_add_test(s, "allows_reference", test_acl_allows_reference);
    CU_add_test(s, "load", test_acl_load);
    int rc = tn_test_run();
    rmdir(tmpdir);
    return rc;
}
