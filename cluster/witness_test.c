/* The witness' state machine and state file, without sockets (the server: lease_test.c). */
#include "cluster/cluster.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LEASE 1000 /* ms */
#define MS 1000000ull

static tn_witness_state st;
static char out[256];
static bool changed;

/* Sends one request (without its "\n") at t ms on conn; the reply is in out. */
static int
req(uint64_t conn, uint64_t t, const char *line)
{
    memset(out, 0, sizeof out);
    return tn_witness_handle(&st, LEASE, conn, t * MS, line, strlen(line), out, sizeof out,
                             &changed);
}

static void
test_first_grant_and_busy(void)
{
    memset(&st, 0, sizeof st);
    CU_ASSERT_EQUAL(req(1, 0, "ACQUIRE a"), 0);
    CU_ASSERT_STRING_EQUAL(out, "GRANT 1 1000\n");
    CU_ASSERT_TRUE(changed);
    CU_ASSERT_STRING_EQUAL(st.holder, "a");
    CU_ASSERT_TRUE(st.live);
    CU_ASSERT_EQUAL(st.conn, 1);
    CU_ASSERT_EQUAL(st.expires, LEASE * MS);
    /* Live: everyone, the holder included, is told who has it. */
    CU_ASSERT_EQUAL(req(2, 500, "ACQUIRE b"), 0);
    CU_ASSERT_STRING_EQUAL(out, "BUSY 1 a 500\n"); /* with what is left of the lease */
    CU_ASSERT_FALSE(changed);
    CU_ASSERT_EQUAL(req(1, 999, "ACQUIRE a"), 0);
    CU_ASSERT_STRING_EQUAL(out, "BUSY 1 a 1\n");
    CU_ASSERT_EQUAL(st.epoch, 1);
}

static void
test_expiry_and_behind(void)
{
    memset(&st, 0, sizeof st);
    req(1, 0, "ACQUIRE a");
    /* Expired at exactly lease_ms after receipt; b was never recorded in sync. */
    CU_ASSERT_EQUAL(req(2, LEASE, "ACQUIRE b"), 0);
    CU_ASSERT_STRING_EQUAL(out, "BEHIND 1 a\n");
    CU_ASSERT_FALSE(st.live);
    CU_ASSERT_FALSE(changed);
    /* The last holder may take it back, at a new epoch. */
    CU_ASSERT_EQUAL(req(3, LEASE + 1, "ACQUIRE a"), 0);
    CU_ASSERT_STRING_EQUAL(out, "GRANT 2 1000\n");
    CU_ASSERT_EQUAL(st.conn, 3);
}

static void
test_conn_closed_ends_lease(void)
{
    memset(&st, 0, sizeof st);
    req(1, 0, "ACQUIRE a");
    tn_witness_conn_closed(&st, 2); /* someone else's connection: nothing */
    CU_ASSERT_TRUE(st.live);
    tn_witness_conn_closed(&st, 1);
    CU_ASSERT_FALSE(st.live);
    CU_ASSERT_EQUAL(st.conn, 0);
    CU_ASSERT_EQUAL(req(2, 10, "ACQUIRE b"), 0);
    CU_ASSERT_STRING_EQUAL(out, "BEHIND 1 a\n");
    /* A renewal moves the lease to the connection it came on. */
    CU_ASSERT_EQUAL(req(4, 20, "ACQUIRE a"), 0);
    CU_ASSERT_STRING_EQUAL(out, "GRANT 2 1000\n");
    CU_ASSERT_EQUAL(req(5, 30, "RENEW a 2 -"), 0);
    CU_ASSERT_STRING_EQUAL(out, "OK 2\n");
    tn_witness_conn_closed(&st, 4);
    CU_ASSERT_TRUE(st.live);
    tn_witness_conn_closed(&st, 5);
    CU_ASSERT_FALSE(st.live);
}

static void
test_standby_promoted_and_epochs_increase(void)
{
    memset(&st, 0, sizeof st);
    req(1, 0, "ACQUIRE a");
    CU_ASSERT_EQUAL(req(1, 100, "RENEW a 1 b"), 0);
    CU_ASSERT_STRING_EQUAL(out, "OK 1\n");
    CU_ASSERT_TRUE(changed);
    CU_ASSERT_STRING_EQUAL(st.standby, "b");
    CU_ASSERT_EQUAL(st.expires, (100 + LEASE) * MS);
    /* The same standby again: extended, nothing durable changed. */
    CU_ASSERT_EQUAL(req(1, 200, "RENEW a 1 b"), 0);
    CU_ASSERT_STRING_EQUAL(out, "OK 1\n");
    CU_ASSERT_FALSE(changed);
    CU_ASSERT_EQUAL(req(2, 1199, "ACQUIRE b"), 0);
    CU_ASSERT_STRING_EQUAL(out, "BUSY 1 a 1\n");
    /* Expired: the recorded standby is promoted, the grant clears the standby. */
    CU_ASSERT_EQUAL(req(2, 1200, "ACQUIRE b"), 0);
    CU_ASSERT_STRING_EQUAL(out, "GRANT 2 1000\n");
    CU_ASSERT_TRUE(changed);
    CU_ASSERT_STRING_EQUAL(st.holder, "b");
    CU_ASSERT_STRING_EQUAL(st.standby, "");
    /* The old active wakes up: its epoch is gone. */
    CU_ASSERT_EQUAL(req(1, 1300, "RENEW a 1 b"), 0);
    CU_ASSERT_STRING_EQUAL(out, "LOST 2 b\n");
    CU_ASSERT_FALSE(changed);
    /* a is not b's standby (yet): never promoted. */
    tn_witness_conn_closed(&st, 2);
    CU_ASSERT_EQUAL(req(1, 1400, "ACQUIRE a"), 0);
    CU_ASSERT_STRING_EQUAL(out, "BEHIND 2 b\n");
    /* Every later grant: epoch + 1. */
    uint64_t e = st.epoch;
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(req(2, 2000 + (uint64_t)i * 10, "ACQUIRE b"), 0);
        CU_ASSERT_EQUAL(st.epoch, e + 1);
        e = st.epoch;
        tn_witness_conn_closed(&st, 2);
    }
    CU_ASSERT_EQUAL(e, 7);
    /* Recording "none" is a change too, once. */
    req(2, 3000, "ACQUIRE b");
    req(2, 3001, "RENEW b 8 a");
    CU_ASSERT_TRUE(changed);
    req(2, 3002, "RENEW b 8 -");
    CU_ASSERT_TRUE(changed);
    CU_ASSERT_STRING_EQUAL(st.standby, "");
    req(2, 3003, "RENEW b 8 -");
    CU_ASSERT_FALSE(changed);
}

static void
test_renew_lost_and_release(void)
{
    memset(&st, 0, sizeof st);
    CU_ASSERT_EQUAL(req(1, 0, "RENEW a 0 -"), 0); /* never granted */
    CU_ASSERT_STRING_EQUAL(out, "LOST 0 -\n");
    req(1, 0, "ACQUIRE a");
    CU_ASSERT_EQUAL(req(1, 10, "RENEW a 2 -"), 0);
    CU_ASSERT_STRING_EQUAL(out, "LOST 1 a\n");
    CU_ASSERT_EQUAL(req(2, 10, "RENEW b 1 -"), 0);
    CU_ASSERT_STRING_EQUAL(out, "LOST 1 a\n");
    CU_ASSERT_EQUAL(req(1, LEASE, "RENEW a 1 -"), 0); /* expired, even if not granted again */
    CU_ASSERT_STRING_EQUAL(out, "LOST 1 a\n");
    CU_ASSERT_FALSE(st.live);
    req(1, LEASE + 1, "ACQUIRE a");
    /* RELEASE by a non-holder or at the wrong epoch changes nothing. */
    CU_ASSERT_EQUAL(req(2, 1100, "RELEASE b 2"), 0);
    CU_ASSERT_STRING_EQUAL(out, "OK 2\n");
    CU_ASSERT_EQUAL(req(1, 1100, "RELEASE a 1"), 0);
    CU_ASSERT_TRUE(st.live);
    CU_ASSERT_EQUAL(req(1, 1100, "RELEASE a 2"), 0);
    CU_ASSERT_STRING_EQUAL(out, "OK 2\n");
    CU_ASSERT_FALSE(st.live);
    CU_ASSERT_FALSE(changed);
    CU_ASSERT_STRING_EQUAL(st.holder, "a"); /* still the last holder */
}

static void
test_bad_requests(void)
{
    static const char *const bad[] = {
        "",
        "ACQUIRE",
        "ACQUIRE  a",
        "ACQUIRE a ",
        " ACQUIRE a",
        "ACQUIRE a b",
        "ACQUIRE -",
        "ACQUIRE a/b",
        "ACQUIRE a\r",
        "acquire a",
        "RENEW a 1",
        "RENEW a x -",
        "RENEW a -1 -",
        "RENEW a 18446744073709551616 -",
        "RENEW a 1 a",
        "RENEW a 1 b c",
        "RENEW a 1 b!",
        "RELEASE a",
        "RELEASE a 1 2",
        "HELLO",
        "GRANT 1 1000",
    };
    memset(&st, 0, sizeof st);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_EQUAL(req(1, 0, bad[i]), -1);
        CU_ASSERT_NSTRING_EQUAL(out, "ERR ", 4);
        CU_ASSERT_EQUAL(out[strlen(out) - 1], '\n');
        CU_ASSERT_FALSE(changed);
    }
    CU_ASSERT_EQUAL(st.epoch, 0);
    /* An embedded NUL is not a name character. */
    CU_ASSERT_EQUAL(
        tn_witness_handle(&st, LEASE, 1, 0, "ACQUIRE a\0b", 11, out, sizeof out, &changed), -1);
    /* Names: 64 characters is the most; the line: 255 characters before its "\n". */
    char line[400];
    snprintf(line, sizeof line, "ACQUIRE %.*s", 65,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    CU_ASSERT_EQUAL(req(1, 0, line), -1);
    CU_ASSERT_STRING_EQUAL(out, "ERR bad node name\n");
    line[strlen(line) - 1] = '\0';
    CU_ASSERT_EQUAL(req(1, 0, line), 0);
    CU_ASSERT_STRING_EQUAL(out, "GRANT 1 1000\n");
    memset(line, 'x', 255);
    line[255] = '\0';
    CU_ASSERT_EQUAL(req(1, 0, line), -1);
    CU_ASSERT_STRING_EQUAL(out, "ERR unknown request\n");
    memset(line, 'x', 256);
    line[256] = '\0';
    CU_ASSERT_EQUAL(req(1, 0, line), -1);
    CU_ASSERT_STRING_EQUAL(out, "ERR line too long\n");
    /* The largest epoch parses, and the largest reply fits. */
    st.epoch = UINT64_MAX;
    snprintf(line, sizeof line, "RENEW %.64s 18446744073709551615 -",
             "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
    CU_ASSERT_EQUAL(req(1, 0, line), 0);
    CU_ASSERT_NSTRING_EQUAL(out, "LOST 18446744073709551615 xxxx", 30);
}

/* ---- the state file ---- */

static char dir[64];

static void
write_state(const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/witness.state", dir);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
}

static void
test_save_load(void)
{
    char err[512], path[128];
    tn_witness_state a = {0}, b;

    snprintf(dir, sizeof dir, "/tmp/tn-witness-test-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    /* No file yet: zeroes. */
    memset(&b, 0xff, sizeof b);
    CU_ASSERT_EQUAL(tn_witness_state_load(&b, dir, err, sizeof err), 0);
    CU_ASSERT_EQUAL(b.epoch, 0);
    CU_ASSERT_STRING_EQUAL(b.holder, "");
    CU_ASSERT_FALSE(b.live);

    a.epoch = 18446744073709551615ull;
    strcpy(a.holder, "node-a.eu:1");
    strcpy(a.standby, "B_2");
    a.live = true; /* not durable */
    a.conn = 9;
    CU_ASSERT_EQUAL(tn_witness_state_save(&a, dir, err, sizeof err), 0);
    CU_ASSERT_EQUAL(tn_witness_state_load(&b, dir, err, sizeof err), 0);
    CU_ASSERT_EQUAL(b.epoch, a.epoch);
    CU_ASSERT_STRING_EQUAL(b.holder, a.holder);
    CU_ASSERT_STRING_EQUAL(b.standby, a.standby);
    CU_ASSERT_FALSE(b.live);
    CU_ASSERT_EQUAL(b.conn, 0);
    a.epoch = 3;
    a.standby[0] = '\0';
    CU_ASSERT_EQUAL(tn_witness_state_save(&a, dir, err, sizeof err), 0);
    CU_ASSERT_EQUAL(tn_witness_state_load(&b, dir, err, sizeof err), 0);
    CU_ASSERT_EQUAL(b.epoch, 3);
    CU_ASSERT_STRING_EQUAL(b.standby, "");
    snprintf(path, sizeof path, "%s/witness.state.tmp", dir);
    CU_ASSERT_NOT_EQUAL(access(path, F_OK), 0); /* renamed away */

    static const char *const corrupt[] = {
        "",
        "tern-witness 1 3 a -",         /* no "\n": cut short */
        "tern-witness 1 3 a -\n\n",     /* trailing bytes */
        "tern-witness 2 3 a -\n",       /* a version we do not know */
        "tern-witness 1 x a -\n",       /* epoch */
        "tern-witness 1 3 a/b -\n",     /* holder */
        "tern-witness 1 0 a -\n",       /* a holder with nothing granted */
        "tern-witness 1 3 - -\n",       /* granted without a holder */
        "tern-witness 1 3  a -\n",      /* double space */
        "tern-witness 1 3 a - extra\n", /* a field too many */
        "\x01\x02 garbage\n",
    };
    for (size_t i = 0; i < sizeof corrupt / sizeof corrupt[0]; i++) {
        write_state(corrupt[i]);
        b.epoch = 77;
        err[0] = '\0';
        CU_ASSERT_EQUAL(tn_witness_state_load(&b, dir, err, sizeof err), -1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "corrupt witness state"));
    }
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    write_state(big);
    CU_ASSERT_EQUAL(tn_witness_state_load(&b, dir, err, sizeof err), -1);

    /* Saving into a folder that is not there fails with the path in the message. */
    char gone[160];
    snprintf(gone, sizeof gone, "%s/missing", dir);
    CU_ASSERT_EQUAL(tn_witness_state_save(&a, gone, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "missing"));

    snprintf(path, sizeof path, "%s/witness.state", dir);
    unlink(path);
    CU_ASSERT_EQUAL(rmdir(dir), 0);
}

int
main(void)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("witness", NULL, NULL);
    CU_add_test(s, "first_grant_and_busy", test_first_grant_and_busy);
    CU_add_test(s, "expiry_and_behind", test_expiry_and_behind);
    CU_add_test(s, "conn_closed_ends_lease", test_conn_closed_ends_lease);
    CU_add_test(s, "standby_promoted_and_epochs_increase",
                test_standby_promoted_and_epochs_increase);
    CU_add_test(s, "renew_lost_and_release", test_renew_lost_and_release);
    CU_add_test(s, "bad_requests", test_bad_requests);
    CU_add_test(s, "save_load", test_save_load);
    return tn_test_run();
}
