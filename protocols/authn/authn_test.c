/* The authenticator on a real libuv loop: users from a password file, anonymous rules, the
 * certificate's CN, refusals answered after the delay, cancelled jobs, reload. */
#include "protocols/authn/authn.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uv_loop_t loop;
static char dir[64], pwfile[128];

static void
write_users(const char *const *names, const char *const *pws, int n)
{
    FILE *f = fopen(pwfile, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    for (int i = 0; i < n; i++) {
        char line[512];
        CU_ASSERT_EQUAL(tn_users_make_line(names[i], (const uint8_t *)pws[i], strlen(pws[i]), 1000,
                                           line, sizeof line),
                        0);
        fprintf(f, "%s\n", line);
    }
    fclose(f);
}

static int
setup(void)
{
    uv_loop_init(&loop);
    snprintf(dir, sizeof dir, "/tmp/tern-authn-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    snprintf(pwfile, sizeof pwfile, "%s/passwd", dir);
    return 0;
}

static int
teardown(void)
{
    unlink(pwfile);
    rmdir(dir);
    uv_loop_close(&loop);
    return 0;
}

typedef struct answer {
    int calls;
    uint64_t at;
} answer;

static void
on_done(void *arg)
{
    answer *a = arg;
    a->calls++;
    a->at = uv_now(&loop);
}

/* Asks and, when the answer comes later, runs the loop until it does; returns it. */
static int
ask(tn_auth *au, const char *user, const char *pw, const char *subject, char **who, uint64_t *took)
{
    tn_auth_req req = {.protocol = "mqtt",
                       .client_id = "c",
                       .user = user,
                       .password = (const uint8_t *)pw,
                       .password_len = pw ? strlen(pw) : 0,
                       .cert_subject = subject};
    tn_auth_job *job = NULL;
    answer an = {0};
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    int rc = au->begin(au->ctx, &req, who, &job, on_done, &an);
    CU_ASSERT_EQUAL(an.calls, 0); /* never from inside begin() */
    if (rc == TN_EAGAIN) {
        CU_ASSERT_PTR_NOT_NULL(job);
        while (an.calls == 0)
            uv_run(&loop, UV_RUN_ONCE);
        CU_ASSERT_EQUAL(an.calls, 1);
        rc = au->finish(au->ctx, job, who);
        uv_run(&loop, UV_RUN_NOWAIT); /* the job's handle closes */
    }
    if (took)
        *took = an.calls ? an.at - t0 : 0;
    return rc;
}

static void
test_users_and_anonymous(void)
{
    static const char *const names[] = {"alice", "bob"};
    static const char *const pws[] = {"wonderland", "builder"};
    write_users(names, pws, 2);
    char err[256];
    tn_authn_conf c = {.loop = &loop, .password_file = pwfile, .fail_delay_ms = 200};
    tn_authn *a = NULL;
    CU_ASSERT_EQUAL_FATAL(tn_authn_new(&c, &a, err, sizeof err), 0);
    CU_ASSERT_EQUAL(tn_authn_users(a), 2);
    tn_auth au = tn_authn_iface(a);
    char *who = NULL;
    uint64_t took = 0;
    CU_ASSERT_EQUAL(ask(&au, "alice", "wonderland", NULL, &who, &took), 0);
    CU_ASSERT_STRING_EQUAL(who, "alice");
    CU_ASSERT_TRUE(took < 200); /* no delay when allowed */
    free(who);
    /* Wrong password, unknown user: the same answer, after the delay. */
    CU_ASSERT_EQUAL(ask(&au, "alice", "rabbit", NULL, &who, &took), TN_EINVAL);
    CU_ASSERT_PTR_NULL(who);
    CU_ASSERT_TRUE(took >= 190);
    CU_ASSERT_EQUAL(ask(&au, "carol", "x", NULL, &who, &took), TN_EINVAL);
    CU_ASSERT_EQUAL(ask(&au, "bob", NULL, NULL, &who, NULL), TN_EINVAL); /* no password */
    /* Anonymous: refused (allow_anonymous false), after the delay. */
    CU_ASSERT_EQUAL(ask(&au, NULL, NULL, NULL, &who, &took), TN_EDENIED);
    CU_ASSERT_TRUE(took >= 190);
    tn_authn_free(a);
    /* Anonymous allowed, users still checked. */
    c.allow_anonymous = true;
    CU_ASSERT_EQUAL_FATAL(tn_authn_new(&c, &a, err, sizeof err), 0);
    au = tn_authn_iface(a);
    CU_ASSERT_EQUAL(ask(&au, NULL, NULL, NULL, &who, NULL), 0);
    CU_ASSERT_PTR_NULL(who);
    CU_ASSERT_EQUAL(ask(&au, "bob", "nope", NULL, &who, NULL), TN_EINVAL);
    tn_authn_free(a);
    /* No password file: names are taken as given where anonymous clients are allowed. */
    c.password_file = NULL;
    CU_ASSERT_EQUAL_FATAL(tn_authn_new(&c, &a, err, sizeof err), 0);
    au = tn_authn_iface(a);
    CU_ASSERT_EQUAL(ask(&au, "anyone", "x", NULL, &who, NULL), 0);
    CU_ASSERT_STRING_EQUAL(who, "anyone");
    free(who);
    tn_authn_free(a);
    c.allow_anonymous = false;
    c.fail_delay_ms = 0; /* refused at once */
    CU_ASSERT_EQUAL_FATAL(tn_authn_new(&c, &a, err, sizeof err), 0);
    au = tn_authn_iface(a);
    tn_auth_job *job = NULL;
    tn_auth_req req = {.user = "anyone"};
    CU_ASSERT_EQUAL(au.begin(au.ctx, &req, &who, &job, on_done, NULL), TN_EDENIED);
    CU_ASSERT_PTR_NULL(job);
    tn_authn_free(a);
}

static void
test_certificate_cn(void)
{
    char err[256];
    tn_authn_conf c = {.loop = &loop, .identity_as_username = true, .fail_delay_ms = 10};
    tn_authn *a = NULL;
    CU_ASSERT_EQUAL_FATAL(tn_authn_new(&c, &a, err, sizeof err), 0);
    tn_auth au = tn_authn_iface(a);
    char *who = NULL;
    CU_ASSERT_EQUAL(ask(&au, "ignored", "x", "CN=dev-1,O=Acme", &who, NULL), 0);
    CU_ASSERT_STRING_EQUAL(who, "dev-1");
    free(who);
    CU_ASSERT_EQUAL(ask(&au, NULL, NULL, "O=Acme\\, Inc.,CN=sensor\\,7", &who, NULL), 0);
    CU_ASSERT_STRING_EQUAL(who, "sensor,7");
    free(who);
    CU_ASSERT_EQUAL(ask(&au, "u", "p", NULL, &who, NULL), TN_EDENIED);       /* no certificate */
    CU_ASSERT_EQUAL(ask(&au, NULL, NULL, "O=Acme", &who, NULL), TN_EDENIED); /* no CN */
    tn_authn_free(a);
}

/* A connection gone while its password is hashed, or while its refusal waits: no answer comes
 * and nothing leaks; jobs left when the authenticator goes are dropped too. A reload takes
 * effect for the next login. */
static void
test_cancel_and_reload(void)
{
    static const char *const names[] = {"alice"};
    static const char *const pws[] = {"one"};
    write_users(names, pws, 1);
    char err[256];
    tn_authn_conf c = {.loop = &loop, .password_file = pwfile, .fail_delay_ms = 50};
    tn_authn *a = NULL;
    CU_ASSERT_EQUAL_FATAL(tn_authn_new(&c, &a, err, sizeof err), 0);
    tn_auth au = tn_authn_iface(a);
    answer an = {0};
    tn_auth_req ok = {.user = "alice", .password = (const uint8_t *)"one", .password_len = 3};
    tn_auth_req bad = {.user = "alice", .password = (const uint8_t *)"two", .password_len = 3};
    char *who = NULL;
    tn_auth_job *j1 = NULL, *j2 = NULL, *j3 = NULL;
    CU_ASSERT_EQUAL(au.begin(au.ctx, &ok, &who, &j1, on_done, &an), TN_EAGAIN);
    au.cancel(au.ctx, j1); /* while hashing */
    CU_ASSERT_EQUAL(au.begin(au.ctx, &bad, &who, &j2, on_done, &an), TN_EAGAIN);
    /* Reload with a new password while j2 hashes against the old file. */
    static const char *const pws2[] = {"two"};
    write_users(names, pws2, 1);
    CU_ASSERT_EQUAL(tn_authn_reload(a, err, sizeof err), 0);
    while (uv_run(&loop, UV_RUN_ONCE) && an.calls == 0)
        ;
    CU_ASSERT_EQUAL(an.calls, 1);                            /* j2 only: j1 was cancelled */
    CU_ASSERT_EQUAL(au.finish(au.ctx, j2, &who), TN_EINVAL); /* checked against the old file */
    uv_run(&loop, UV_RUN_NOWAIT);
    CU_ASSERT_EQUAL(ask(&au, "alice", "two", NULL, &who, NULL), 0);
    free(who);
    /* A refusal waiting out its delay, cancelled; another left to tn_authn_free(). */
    an.calls = 0;
    CU_ASSERT_EQUAL(au.begin(au.ctx, &ok, &who, &j3, on_done, &an), TN_EAGAIN);
    while (uv_run(&loop, UV_RUN_NOWAIT) && an.calls == 0) {
        usleep(1000);
        if (!uv_loop_alive(&loop))
            break;
    }
    /* A bad reload keeps the old files. */
    FILE *f = fopen(pwfile, "w");
    fputs("broken line\n", f);
    fclose(f);
    CU_ASSERT_NOT_EQUAL(tn_authn_reload(a, err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "passwd:1"));
    tn_auth_job *j4 = NULL;
    CU_ASSERT_EQUAL(au.begin(au.ctx, &bad, &who, &j4, on_done, &an), TN_EAGAIN);
    if (an.calls == 0)
        au.cancel(au.ctx, j3);
    else
        CU_ASSERT_EQUAL(au.finish(au.ctx, j3, &who), TN_EINVAL);
    tn_authn_free(a); /* j4 dropped: its done() never comes */
    int before = an.calls;
    uv_run(&loop, UV_RUN_DEFAULT);
    CU_ASSERT_EQUAL(an.calls, before);
    CU_ASSERT_EQUAL(uv_loop_alive(&loop), 0);
}

int
main(void)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("authn", setup, teardown);
    CU_add_test(s, "users_and_anonymous", test_users_and_anonymous);
    CU_add_test(s, "certificate_cn", test_certificate_cn);
    CU_add_test(s, "cancel_and_reload", test_cancel_and_reload);
    return tn_test_run();
}
