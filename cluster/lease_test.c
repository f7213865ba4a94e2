/*
 * tn_lease against a real tn_witness, both on one loop over loopback, with a short lease (300 ms,
 * renewed every 75 ms, so valid for 150 ms after each send). Every wait is for an event, bounded
 * by a timer; the one sleep is the fault under test (a frozen process).
 */
#include "cluster/cluster.h"
#include "core/base/base.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LEASE_MS 300
#define RENEW_MS 75

static uv_loop_t loop;
static tn_witness *wit;
static uint16_t port;
static char dir[64];

/* ---- waiting ---- */

static bool timed_out;
static void
on_timeout(uv_timer_t *t)
{
    (void)t;
    timed_out = true;
}

/* Runs the loop until cond(arg) holds, for at most ms (a timeout fails the test). */
static void
run_until(bool (*cond)(void *), void *arg, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    timed_out = false;
    uv_timer_start(&t, on_timeout, ms, 0);
    while (!cond(arg) && !timed_out)
        uv_run(&loop, UV_RUN_ONCE);
    CU_ASSERT_FALSE(timed_out);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* Lets closing handles finish: nothing may be left open. */
static void
drain(void)
{
    uint64_t end = uv_hrtime() + 2000000000ull;
    while (uv_loop_alive(&loop) && uv_hrtime() < end)
        uv_run(&loop, UV_RUN_NOWAIT);
    CU_ASSERT_FALSE(uv_loop_alive(&loop));
}

/* ---- a node ---- */

typedef struct node {
    const char *name;
    tn_lease *l;
    int granted, lost;
    uint64_t granted_epoch, lost_epoch;
    uint64_t granted_at; /* uv_hrtime() */
    char why[128];
} node;

static void
on_granted(void *arg, uint64_t epoch)
{
    node *n = arg;
    n->granted++;
    n->granted_epoch = epoch;
    n->granted_at = uv_hrtime();
    CU_ASSERT_TRUE(tn_lease_valid(n->l));
    CU_ASSERT_EQUAL(tn_lease_epoch(n->l), epoch);
}

static void
on_lost(void *arg, uint64_t epoch, const char *why)
{
    node *n = arg;
    n->lost++;
    n->lost_epoch = epoch;
    snprintf(n->why, sizeof n->why, "%s", why);
    CU_ASSERT_FALSE(tn_lease_valid(n->l)); /* invalid before anyone is told */
}

static void
node_start(node *n, const char *name, uint16_t witness_port)
{
    memset(n, 0, sizeof *n);
    n->name = name;
    tn_lease_conf c = {.loop = &loop,
                       .node = name,
                       .host = "127.0.0.1",
                       .port = witness_port,
                       .lease_ms = LEASE_MS,
                       .renew_ms = RENEW_MS,
                       .granted = on_granted,
                       .lost = on_lost,
                       .arg = n};
    n->l = tn_lease_new(&c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(n->l);
    tn_lease_want(n->l, true);
}

static bool
is_granted(void *arg)
{
    return ((node *)arg)->granted > 0;
}

static bool
is_lost(void *arg)
{
    return ((node *)arg)->lost > 0;
}

/* The node has been told who holds the lease (a BUSY, BEHIND or LOST). */
static const char *want_holder;
static bool
knows_holder(void *arg)
{
    return strcmp(tn_lease_holder(((node *)arg)->l), want_holder) == 0;
}

typedef struct done_rec {
    int calls;
    bool ok;
} done_rec;

static void
on_done(void *arg, bool ok)
{
    done_rec *d = arg;
    d->calls++;
    d->ok = ok;
}

static bool
is_done(void *arg)
{
    return ((done_rec *)arg)->calls > 0;
}

/* ---- the witness ---- */

static void
witness_start(const char *addr, uint16_t at)
{
    char err[512];
    int rc = tn_witness_open(&loop, addr, at, dir, LEASE_MS, &wit, &port, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "%s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_NOT_EQUAL(port, 0);
}

static int
suite_init(void)
{
    snprintf(dir, sizeof dir, "/tmp/tn-lease-test-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    return uv_loop_init(&loop);
}

static int
suite_clean(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/witness.state", dir);
    unlink(path);
    rmdir(dir);
    return uv_loop_close(&loop) == 0 ? 0 : -1;
}

/* Each test starts with a new witness history. */
static void
fresh_witness(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/witness.state", dir);
    unlink(path);
    witness_start("127.0.0.1", 0);
}

static void
teardown(node *a, node *b)
{
    if (a)
        tn_lease_free(a->l);
    if (b)
        tn_lease_free(b->l);
    tn_witness_close(wit);
    wit = NULL;
    drain();
}

/* ---- tests ---- */

static void
test_grant_busy_and_handover(void)
{
    node a, b;
    done_rec d = {0}, early = {0};

    fresh_witness();
    node_start(&a, "a", port);
    run_until(is_granted, &a, 2000);
    CU_ASSERT_EQUAL(a.granted_epoch, 1);
    CU_ASSERT_STRING_EQUAL(tn_lease_holder(a.l), "a");

    node_start(&b, "b", port);
    tn_lease_set_standby(b.l, "a", on_done, &early); /* not held: refused at once */
    CU_ASSERT_EQUAL(early.calls, 1);
    CU_ASSERT_FALSE(early.ok);
    want_holder = "a";
    run_until(knows_holder, &b, 2000); /* BUSY 1 a */
    CU_ASSERT_EQUAL(b.granted, 0);

    /* The standby is recorded, synced, then confirmed. */
    tn_lease_set_standby(a.l, "b", on_done, &d);
    run_until(is_done, &d, 2000);
    CU_ASSERT_EQUAL(d.calls, 1);
    CU_ASSERT_TRUE(d.ok);

    /* Renewals keep it for many lease lengths. */
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    timed_out = false;
    uv_timer_start(&t, on_timeout, 4 * LEASE_MS, 0);
    while (!timed_out)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    CU_ASSERT_TRUE(tn_lease_valid(a.l));
    CU_ASSERT_EQUAL(a.lost, 0);
    CU_ASSERT_EQUAL(b.granted, 0);

    /* The active's process goes away: its connection closes, the standby takes over at once
     * (at its next ACQUIRE, within renew_ms), not at the lease's end. */
    uint64_t t0 = uv_hrtime();
    tn_lease_free(a.l);
    run_until(is_granted, &b, 2000);
    CU_ASSERT_EQUAL(b.granted_epoch, 2);
    CU_ASSERT_TRUE(b.granted_at - t0 < (uint64_t)(LEASE_MS * 2 / 3) * 1000000u);
    CU_ASSERT_EQUAL(a.lost, 0); /* nothing is called after tn_lease_free */

    /* Released: invalid at once; a node that is not the standby stays BEHIND, the releaser
     * may take it again without waiting for a lease length. */
    node c;
    tn_lease_want(b.l, false);
    tn_lease_release(b.l);
    CU_ASSERT_FALSE(tn_lease_valid(b.l));
    node_start(&c, "c", port);
    want_holder = "b";
    run_until(knows_holder, &c, 2000); /* BEHIND 2 b */
    CU_ASSERT_EQUAL(c.granted, 0);
    tn_lease_want(b.l, true);
    b.granted = 0;
    run_until(is_granted, &b, 2000);
    CU_ASSERT_EQUAL(b.granted_epoch, 3);
    CU_ASSERT_EQUAL(b.lost, 0);
    tn_lease_free(c.l);
    teardown(NULL, &b);
}

static void
test_frozen_active(void)
{
    node a, b;
    done_rec d = {0}, d2 = {0};

    fresh_witness();
    node_start(&a, "a", port);
    run_until(is_granted, &a, 2000);
    node_start(&b, "b", port);
    want_holder = "a";
    run_until(knows_holder, &b, 2000);
    tn_lease_set_standby(a.l, "b", on_done, &d);
    run_until(is_done, &d, 2000);
    CU_ASSERT_TRUE(d.ok);

    /* A change of standby goes out, then the whole process freezes for longer than the lease
     * (a SIGSTOP, a long GC-like pause, a VM migration). */
    tn_lease_set_standby(a.l, "c", on_done, &d2);
    CU_ASSERT_TRUE(tn_lease_valid(a.l));
    usleep((LEASE_MS + 100) * 1000);
    /* No callback has run yet, and no loop time was updated: the lease is already invalid. */
    CU_ASSERT_FALSE(tn_lease_valid(a.l));
    CU_ASSERT_EQUAL(a.lost, 0);
    run_until(is_lost, &a, 2000);
    CU_ASSERT_EQUAL(a.lost, 1);
    CU_ASSERT_EQUAL(a.lost_epoch, 1);
    CU_ASSERT_EQUAL(d2.calls, 1); /* lost before the witness synced it */
    CU_ASSERT_FALSE(d2.ok);
    /* The recorded standby is promoted; the old active, still asking, is told it is BUSY. */
    run_until(is_granted, &b, 2000);
    CU_ASSERT_EQUAL(b.granted_epoch, 2);
    want_holder = "b";
    run_until(knows_holder, &a, 2000);
    CU_ASSERT_EQUAL(a.lost, 1); /* once per epoch */
    CU_ASSERT_EQUAL(a.granted, 1);
    CU_ASSERT_EQUAL(tn_lease_epoch(a.l), 1);
    teardown(&a, &b);
}

/* ---- a raw client, to move the lease behind a node's back ---- */

typedef struct raw {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    char line[512];
    char got[512];
    size_t len;
    int want_lines; /* answered once this many lines came (0: when the witness closed) */
    bool eof, closed;
} raw;

static void
raw_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    raw *r = (raw *)h;
    *buf = uv_buf_init(r->got + r->len, (unsigned)(sizeof r->got - 1 - r->len));
}

static void
raw_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    raw *r = (raw *)s;
    if (nread > 0)
        r->len += (size_t)nread;
    else if (nread < 0)
        r->eof = true;
    r->got[r->len] = '\0';
}

static void
raw_connected(uv_connect_t *req, int status)
{
    raw *r = TN_CONTAINER_OF(req, raw, creq);
    CU_ASSERT_EQUAL(status, 0);
    uv_buf_t b = uv_buf_init(r->line, (unsigned)strlen(r->line));
    uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &b, 1, NULL);
    uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
}

static bool
raw_answered(void *arg)
{
    raw *r = arg;
    int lines = 0;
    for (size_t i = 0; i < r->len; i++)
        lines += r->got[i] == '\n';
    return r->want_lines ? lines >= r->want_lines : r->eof;
}

static void
raw_closed(uv_handle_t *h)
{
    ((raw *)h)->closed = true;
}

static bool
raw_is_closed(void *arg)
{
    return ((raw *)arg)->closed;
}

/* Sends bytes on a new connection, waits for lines replies (0: for the witness to close it),
 * closes. */
static void
raw_exchange(const char *bytes, int lines, char *reply, size_t reply_len)
{
    raw r;
    struct sockaddr_in sa;
    memset(&r, 0, sizeof r);
    snprintf(r.line, sizeof r.line, "%s", bytes);
    r.want_lines = lines;
    uv_ip4_addr("127.0.0.1", port, &sa);
    uv_tcp_init(&loop, &r.tcp);
    uv_tcp_connect(&r.creq, &r.tcp, (struct sockaddr *)&sa, raw_connected);
    run_until(raw_answered, &r, 2000);
    snprintf(reply, reply_len, "%s", r.got);
    uv_close((uv_handle_t *)&r.tcp, raw_closed);
    run_until(raw_is_closed, &r, 2000);
}

/* Sends one line on a new connection, waits for the reply, closes. */
static void
raw_request(const char *line, char *reply, size_t reply_len)
{
    char bytes[256];
    snprintf(bytes, sizeof bytes, "%s\n", line);
    raw_exchange(bytes, 1, reply, reply_len);
}

/* BUSY lines carry the lease's time left, which depends on timing: dropped before comparing
 * (witness_test checks it with a controlled clock). */
static void
strip_busy_ms(char *s)
{
    char *p = s;
    while ((p = strstr(p, "BUSY ")) != NULL) {
        char *eol = strchr(p, '\n');
        char *sp = eol ? eol : p + strlen(p);
        while (sp > p && sp[-1] >= '0' && sp[-1] <= '9')
            sp--;
        if (sp > p && sp[-1] == ' ' && (size_t)(sp - p) > 7 && (!eol || sp < eol)) {
            char *cut = sp - 1;
            memmove(cut, eol ? eol : sp + strlen(sp), strlen(eol ? eol : sp + strlen(sp)) + 1);
        }
        p = strchr(p, '\n');
        if (!p)
            break;
    }
}

/* The server's framing: pipelined requests answered in order; a bad or overlong line is
 * answered ERR and the connection closed, with nothing after it answered. */
static void
test_server_framing(void)
{
    char got[512], longline[300];

    fresh_witness();
    raw_exchange("ACQUIRE a\nACQUIRE b\nRENEW a 1 b\nRENEW a 1 b\nRELEASE a 1\n", 5, got,
                 sizeof got);
    strip_busy_ms(got);
    CU_ASSERT_STRING_EQUAL(got, "GRANT 1 300\nBUSY 1 a\nOK 1\nOK 1\nOK 1\n");
    raw_exchange("ACQUIRE b\nHELLO\nACQUIRE b\n", 0, got, sizeof got);
    CU_ASSERT_STRING_EQUAL(got, "GRANT 2 300\nERR unknown request\n");
    /* The witness closed b's connection itself (the bad request): b may not know yet, so its
     * lease runs on to its expiry (only a close by the node ends it at once). */
    raw_request("ACQUIRE a", got, sizeof got);
    strip_busy_ms(got);
    CU_ASSERT_STRING_EQUAL(got, "BUSY 2 b\n");
    memset(longline, 'x', sizeof longline - 1);
    longline[sizeof longline - 1] = '\0';
    raw_exchange(longline, 0, got, sizeof got);
    CU_ASSERT_STRING_EQUAL(got, "ERR line too long\n");
    /* 255 bytes and the "\n" is a line (a bad one). */
    memset(longline, 'x', 255);
    strcpy(longline + 255, "\n");
    raw_exchange(longline, 0, got, sizeof got);
    CU_ASSERT_STRING_EQUAL(got, "ERR unknown request\n");
    teardown(NULL, NULL);
}

static void
test_lost_reply(void)
{
    node a;
    char got[128], line[64];

    fresh_witness();
    node_start(&a, "a", port);
    run_until(is_granted, &a, 2000);
    /* Behind a's back, its lease is released and granted again at the next epoch (a's RENEW
     * may come in between: then it hears LOST for the released lease instead). */
    snprintf(line, sizeof line, "RELEASE a %llu", (unsigned long long)a.granted_epoch);
    raw_request(line, got, sizeof got);
    CU_ASSERT_STRING_EQUAL(got, "OK 1\n");
    raw_request("ACQUIRE a", got, sizeof got);
    strip_busy_ms(got);
    CU_ASSERT_TRUE(strcmp(got, "GRANT 2 300\n") == 0 || strcmp(got, "BUSY 2 a\n") == 0);
    run_until(is_lost, &a, 2000);
    CU_ASSERT_STRING_EQUAL(a.why, "the witness answered LOST");
    CU_ASSERT_EQUAL(a.lost_epoch, 1);
    CU_ASSERT_FALSE(tn_lease_valid(a.l));
    teardown(&a, NULL);
}

static void
test_witness_restart(void)
{
    node a;

    fresh_witness();
    node_start(&a, "a", port);
    run_until(is_granted, &a, 2000);
    CU_ASSERT_EQUAL(a.granted_epoch, 1);

    /* The witness goes away: the connection breaks, the lease is over at once. */
    uint16_t was = port;
    tn_witness_close(wit);
    run_until(is_lost, &a, 2000);
    CU_ASSERT_EQUAL(a.lost_epoch, 1);
    CU_ASSERT_STRING_EQUAL(a.why, "witness connection closed");
    CU_ASSERT_FALSE(tn_lease_valid(a.l));

    /* Back on the same port with the same state: the epoch goes on from the file, after the
     * restarted witness has let the last holder's lease run out. */
    witness_start("127.0.0.1", was);
    a.granted = 0;
    uint64_t t0 = uv_hrtime();
    run_until(is_granted, &a, 3000);
    CU_ASSERT_EQUAL(a.granted_epoch, 2);
    CU_ASSERT_TRUE(a.granted_at - t0 >= (uint64_t)(LEASE_MS - 50) * 1000000u);
    teardown(&a, NULL);
}

static void
test_ipv6_and_names(void)
{
    char err[512];
    tn_witness *w6 = NULL;
    uint16_t p6 = 0;
    node a;

    fresh_witness();
    /* Only where this host has IPv6 loopback. */
    if (tn_witness_open(&loop, "::1", 0, dir, LEASE_MS, &w6, &p6, err, sizeof err) == 0) {
        tn_witness_close(wit);
        wit = w6;
        memset(&a, 0, sizeof a);
        tn_lease_conf c = {.loop = &loop,
                           .node = "a",
                           .host = "::1",
                           .port = p6,
                           .lease_ms = LEASE_MS,
                           .renew_ms = RENEW_MS,
                           .granted = on_granted,
                           .lost = on_lost,
                           .arg = &a};
        a.l = tn_lease_new(&c);
        tn_lease_want(a.l, true);
        run_until(is_granted, &a, 2000);
        tn_lease_free(a.l);
    }
    /* A name is resolved (localhost: whichever address comes first; the witness is then on
     * 127.0.0.1 or ::1 as above, so only that it resolves and connects or fails cleanly). */
    tn_lease_conf c = {.loop = &loop, .node = "n", .host = "localhost", .port = port};
    memset(&a, 0, sizeof a);
    c.granted = on_granted;
    c.lost = on_lost;
    c.arg = &a;
    a.l = tn_lease_new(&c);
    tn_lease_want(a.l, true);
    tn_lease_free(a.l); /* while resolving: waits for the resolver before freeing */
    CU_ASSERT_EQUAL(
        tn_witness_open(&loop, "localhost", 0, dir, LEASE_MS, &w6, &p6, err, sizeof err),
        TN_EINVAL);
    teardown(NULL, NULL);
}

/* Nothing listens: attempts are refused and retried, nothing is granted, nothing leaks. */
static void
test_no_witness(void)
{
    node a;
    fresh_witness();
    uint16_t gone = port;
    tn_witness_close(wit);
    wit = NULL;
    node_start(&a, "a", gone);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    timed_out = false;
    uv_timer_start(&t, on_timeout, 4 * RENEW_MS, 0);
    while (!timed_out)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    CU_ASSERT_EQUAL(a.granted, 0);
    CU_ASSERT_FALSE(tn_lease_valid(a.l));
    teardown(&a, NULL);
}

static void
test_bad_conf(void)
{
    tn_lease_conf c = {.loop = &loop, .node = "a", .host = "127.0.0.1", .port = 1};
    c.lease_ms = TN_LEASE_MARGIN_MS;
    CU_ASSERT_PTR_NULL(tn_lease_new(&c));
    c.lease_ms = 300;
    c.renew_ms = 150;
    CU_ASSERT_PTR_NULL(tn_lease_new(&c));
    c.renew_ms = 0;
    c.lease_ms = 0;
    c.node = "a b";
    CU_ASSERT_PTR_NULL(tn_lease_new(&c));
    c.node = "a";
    tn_lease *l = tn_lease_new(&c);
    CU_ASSERT_PTR_NOT_NULL(l);
    CU_ASSERT_FALSE(tn_lease_valid(l));
    CU_ASSERT_EQUAL(tn_lease_epoch(l), 0);
    CU_ASSERT_STRING_EQUAL(tn_lease_holder(l), "");
    tn_lease_free(l);
    drain();
}

int
main(void)
{
    tn_log_set_level(TN_LOG_ERROR);
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("lease", suite_init, suite_clean);
    CU_add_test(s, "grant_busy_and_handover", test_grant_busy_and_handover);
    CU_add_test(s, "frozen_active", test_frozen_active);
    CU_add_test(s, "lost_reply", test_lost_reply);
    CU_add_test(s, "server_framing", test_server_framing);
    CU_add_test(s, "no_witness", test_no_witness);
    CU_add_test(s, "witness_restart", test_witness_restart);
    CU_add_test(s, "ipv6_and_names", test_ipv6_and_names);
    CU_add_test(s, "bad_conf", test_bad_conf);
    return tn_test_run();
}
