/* Unit tests of the AMQP adapter through a fake tn_io (no sockets): a proton client (its own
 * connection driver) talks to the adapter in memory. */
#include "protocols/amqp/amqp.h"

#include "core/base/base.h"

#include "tests/unit/fake_io.h"
#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tn_broker *b;
static tn_amqp *am;

typedef struct cli {
    tn_fake_conn io; /* the adapter's side */
    pn_connection_driver_t d;
    pn_session_t *ssn;
    size_t read; /* bytes of io.out given to the client */
    tn_buf in;   /* input the adapter has not consumed yet: offered again, as net does */
} cli;

static void
setup_with(uint32_t max_queued)
{
    tn_broker_limits bl = {.max_inflight = 10,
                           .max_queued = max_queued,
                           .max_offline = max_queued * 10,
                           .max_topic_levels = 8};
    b = tn_broker_new(&bl);
    tn_amqp_conf ac = {.max_message = 1 << 20,
                       .max_frame = 4096,
                       .idle_timeout_ms = 2000,
                       .credit = 10,
                       .prefetch = 10,
                       .max_deliveries = 3};
    am = tn_amqp_new(b, &ac);
}

static void
teardown(void)
{
    tn_amqp_free(am);
    tn_broker_free(b);
}

/* Offers the kept input as net does: again while the adapter takes some and some is left (its
 * read buffer was full), or while it asks to be woken. */
static void
offer(cli *c)
{
    for (int i = 0; i < 100000 && !c->io.closed; i++) {
        c->io.woken = 0;
        ssize_t k = tn_amqp_adapter.input(c->io.a, c->in.data, c->in.len);
        CU_ASSERT_FATAL(k >= 0);
        tn_buf_consume(&c->in, (size_t)k);
        if (!c->io.woken && (!k || !c->in.len))
            return;
    }
}

static void
to_adapter(cli *c, const uint8_t *p, size_t n)
{
    if (c->io.closed)
        return;
    if (!c->in.max)
        tn_buf_init(&c->in, 64 << 20);
    CU_ASSERT_FATAL(tn_buf_append(&c->in, p, n) == 0);
    offer(c);
}

/* Moves bytes both ways until neither side has anything more to say. */
static void
run(cli *c)
{
    for (int i = 0; i < 1000; i++) {
        bool moved = false;
        while (pn_connection_driver_next_event(&c->d))
            ;
        pn_bytes_t wb = pn_connection_driver_write_buffer(&c->d);
        if (wb.size) {
            to_adapter(c, (const uint8_t *)wb.start, wb.size);
            pn_connection_driver_write_done(&c->d, wb.size);
            moved = true;
        }
        if (c->io.woken && !c->io.closed)
            offer(c);
        while (c->read < c->io.out.len) {
            pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->d);
            if (!rb.size)
                break;
            size_t n = c->io.out.len - c->read;
            n = n < rb.size ? n : rb.size;
            memcpy(rb.start, c->io.out.data + c->read, n);
            pn_connection_driver_read_done(&c->d, n);
            c->read += n;
            moved = true;
        }
        if (c->io.closed && c->read == c->io.out.len && !pn_connection_driver_read_closed(&c->d))
            pn_connection_driver_read_close(&c->d);
        if (!moved && !pn_connection_driver_has_event(&c->d))
            return;
    }
    CU_FAIL("no quiescence");
}

static void
cli_open(cli *c, bool sasl)
{
    memset(c, 0, sizeof *c);
    tn_buf_init(&c->io.out, 64 << 20);
    c->io.a = tn_amqp_adapter.open(am, &tn_fake_io, &c->io);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c->io.a);
    pn_connection_driver_init(&c->d, NULL, NULL);
    if (sasl) {
        pn_sasl_t *s = pn_sasl(c->d.transport);
        pn_sasl_allowed_mechs(s, "ANONYMOUS");
    }
    pn_connection_set_container(c->d.connection, "test-client");
    pn_connection_open(c->d.connection);
    c->ssn = pn_session(c->d.connection);
    pn_session_open(c->ssn);
    run(c);
}

static void
cli_close(cli *c)
{
    /* net calls closed() exactly once, also after the adapter closed */
    tn_amqp_adapter.closed(c->io.a, c->io.closed ? TN_CLOSE_LOCAL : TN_CLOSE_PEER);
    pn_connection_driver_destroy(&c->d);
    tn_buf_fini(&c->io.out);
    tn_buf_fini(&c->in);
}

static pn_link_t *
sender(cli *c, const char *name, const char *addr)
{
    pn_link_t *l = pn_sender(c->ssn, name);
    pn_terminus_set_address(pn_link_target(l), addr);
    pn_link_open(l);
    run(c);
    return l;
}

static pn_link_t *
receiver(cli *c, const char *name, const char *addr, int credit)
{
    pn_link_t *l = pn_receiver(c->ssn, name);
    pn_terminus_set_address(pn_link_source(l), addr);
    pn_link_open(l);
    if (credit)
        pn_link_flow(l, credit);
    run(c);
    return l;
}

static pn_delivery_t *
send_msg(cli *c, pn_link_t *l, const char *body, bool durable)
{
    static int tag;
    pn_message_t *m = pn_message();
    pn_data_put_string(pn_message_body(m), pn_bytes(strlen(body), body));
    pn_message_set_durable(m, durable);
    char buf[4096];
    size_t n = sizeof buf;
    CU_ASSERT_EQUAL_FATAL(pn_message_encode(m, buf, &n), 0);
    pn_message_free(m);
    tag++;
    pn_delivery_t *d = pn_delivery(l, pn_dtag((const char *)&tag, sizeof tag));
    pn_link_send(l, buf, n);
    pn_link_advance(l);
    run(c);
    return d;
}

/* The body (a string) of the current delivery on l, or "" if none; advances. */
static pn_delivery_t *
recv_msg(cli *c, pn_link_t *l, char *out, size_t cap)
{
    (void)c;
    out[0] = '\0';
    pn_delivery_t *d = pn_link_current(l);
    if (!d || !pn_delivery_readable(d) || pn_delivery_partial(d))
        return NULL;
    char buf[8192];
    ssize_t n = pn_link_recv(l, buf, sizeof buf);
    pn_link_advance(l);
    pn_message_t *m = pn_message();
    if (n > 0 && pn_message_decode(m, buf, (size_t)n) == 0) {
        pn_data_t *body = pn_message_body(m);
        pn_data_rewind(body);
        if (pn_data_next(body) && pn_data_type(body) == PN_STRING) {
            pn_bytes_t s = pn_data_get_string(body);
            snprintf(out, cap, "%.*s", (int)s.size, s.start);
        }
    }
    pn_message_free(m);
    return d;
}

static const char *
remote_cond(pn_link_t *l)
{
    const char *n = pn_condition_get_name(pn_link_remote_condition(l));
    return n ? n : "";
}

/* ---- tests ---- */

static void
test_queue_roundtrip(void)
{
    setup_with(100);
    cli c;
    cli_open(&c, true);
    CU_ASSERT_TRUE(pn_connection_state(c.d.connection) & PN_REMOTE_ACTIVE);
    pn_link_t *s = sender(&c, "s", "queue://q");
    CU_ASSERT_TRUE(pn_link_state(s) & PN_REMOTE_ACTIVE);
    CU_ASSERT_EQUAL(pn_link_credit(s), 10);
    CU_ASSERT_TRUE(pn_link_remote_max_message_size(s) > 0);
    pn_delivery_t *d = send_msg(&c, s, "hello", false);
    CU_ASSERT_EQUAL(pn_delivery_remote_state(d), PN_ACCEPTED);
    CU_ASSERT_TRUE(pn_delivery_settled(d));
    pn_delivery_settle(d);
    pn_link_t *r = receiver(&c, "r", "q", 10); /* a bare name is a queue */
    char body[64];
    pn_delivery_t *rd = recv_msg(&c, r, body, sizeof body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rd);
    CU_ASSERT_STRING_EQUAL(body, "hello");
    pn_delivery_update(rd, PN_ACCEPTED);
    pn_delivery_settle(rd);
    run(&c);
    tn_session *q = tn_broker_queue_find(b, "q", 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    CU_ASSERT_EQUAL(tn_queue_depth(tn_session_queue(q)), 0);
    CU_ASSERT_EQUAL(tn_queue_inflight(tn_session_queue(q)), 0);
    cli_close(&c);
    teardown();
}

/* A fake authenticator: user "ann" with password "pw" may connect, as "ann"; another user or
 * password is refused with TN_EINVAL; an anonymous client with TN_EDENIED, unless anon_ok. It
 * answers at once, or (defer) later: begin() keeps the job and its done(), and the test calls
 * auth_fire(). */
struct tn_auth_job {
    int rc;
    char *user;
};

typedef struct fake_auth {
    bool defer, anon_ok;
    int begun, finished, cancelled;
    tn_auth_job *job; /* deferred, not finished or cancelled yet */
    void (*done)(void *arg);
    void *arg;
} fake_auth;

static fake_auth fa;

static int
fa_begin(void *ctx, const tn_auth_req *r, char **user, tn_auth_job **job, void (*done)(void *arg),
         void *arg)
{
    fake_auth *a = ctx;
    a->begun++;
    CU_ASSERT_STRING_EQUAL(r->protocol, "amqp");
    int rc = !r->user ? (a->anon_ok ? 0 : TN_EDENIED)
             : strcmp(r->user, "ann") == 0 && r->password_len == 2 && !memcmp(r->password, "pw", 2)
                 ? 0
                 : TN_EINVAL;
    if (!a->defer) {
        if (rc == 0)
            *user = r->user ? tn_xstrdup(r->user) : NULL;
        return rc;
    }
    CU_ASSERT_PTR_NULL_FATAL(a->job); /* one at a time here */
    a->job = tn_xcalloc(1, sizeof *a->job);
    a->job->rc = rc;
    a->job->user = rc == 0 && r->user ? tn_xstrdup(r->user) : NULL;
    a->done = done;
    a->arg = arg;
    *job = a->job;
    return TN_EAGAIN;
}

static int
fa_finish(void *ctx, tn_auth_job *job, char **user)
{
    fake_auth *a = ctx;
    CU_ASSERT_PTR_EQUAL(job, a->job);
    a->finished++;
    a->job = NULL;
    int rc = job->rc;
    *user = job->user;
    free(job);
    return rc;
}

static void
fa_cancel(void *ctx, tn_auth_job *job)
{
    fake_auth *a = ctx;
    CU_ASSERT_PTR_EQUAL(job, a->job);
    a->cancelled++;
    a->job = NULL;
    free(job->user);
    free(job);
}

/* The deferred job is decided: its done() comes (as from the loop). */
static void
auth_fire(void)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(fa.job);
    fa.done(fa.arg);
    CU_ASSERT_PTR_NULL(fa.job); /* finished */
}

/* setup_with(100) and the fake authenticator, answering at once or deferring. */
static void
setup_auth(bool defer, bool anon_ok)
{
    setup_with(100);
    tn_amqp_free(am);
    memset(&fa, 0, sizeof fa);
    fa.defer = defer;
    fa.anon_ok = anon_ok;
    tn_amqp_conf ac = {.max_message = 1 << 20, .auth = {fa_begin, fa_finish, fa_cancel, &fa}};
    am = tn_amqp_new(b, &ac);
}

/* A client that authenticates with SASL mech (user NULL: none given); run until quiet. */
static void
cli_open_sasl(cli *c, const char *mech, const char *user, const char *pw)
{
    memset(c, 0, sizeof *c);
    tn_buf_init(&c->io.out, 1 << 20);
    c->io.a = tn_amqp_adapter.open(am, &tn_fake_io, &c->io);
    pn_connection_driver_init(&c->d, NULL, NULL);
    pn_sasl_t *sasl = pn_sasl(c->d.transport);
    pn_sasl_allowed_mechs(sasl, mech);
    pn_sasl_set_allow_insecure_mechs(sasl, true);
    if (user) {
        pn_connection_set_user(c->d.connection, user);
        pn_connection_set_password(c->d.connection, pw);
    }
    pn_connection_set_container(c->d.connection, "test-client");
    pn_connection_open(c->d.connection);
    c->ssn = pn_session(c->d.connection);
    pn_session_open(c->ssn);
    run(c);
}

static bool
remote_open(cli *c)
{
    return pn_connection_state(c->d.connection) & PN_REMOTE_ACTIVE;
}

/* Immediate answers: SASL PLAIN reaches the shared authenticator; a bad password, ANONYMOUS
 * and no SASL are refused by it. */
static void
test_sasl_plain_checked(void)
{
    setup_auth(false, false);
    static const char *const users[][3] = {
        {"PLAIN", "ann", "pw"}, {"PLAIN", "ann", "no"}, {"ANONYMOUS", NULL, NULL}};
    for (size_t i = 0; i < 3; i++) {
        cli c;
        cli_open_sasl(&c, users[i][0], users[i][1], users[i][2]);
        CU_ASSERT_EQUAL(remote_open(&c), i == 0);
        CU_ASSERT_EQUAL(pn_sasl_outcome(pn_sasl(c.d.transport)),
                        i == 0 ? PN_SASL_OK : PN_SASL_AUTH);
        CU_ASSERT_EQUAL(c.io.closed, i > 0);
        cli_close(&c);
    }
    cli c; /* no SASL layer: checked as anonymous at open */
    cli_open(&c, false);
    CU_ASSERT_STRING_EQUAL(pn_condition_get_name(pn_connection_remote_condition(c.d.connection)),
                           "amqp:unauthorized-access");
    cli_close(&c);
    /* allowed anonymously: either way */
    fa.anon_ok = true;
    cli_open_sasl(&c, "ANONYMOUS", NULL, NULL);
    CU_ASSERT_TRUE(remote_open(&c));
    cli_close(&c);
    cli_open(&c, false);
    CU_ASSERT_TRUE(remote_open(&c));
    cli_close(&c);
    CU_ASSERT_EQUAL(fa.begun, 6);
    CU_ASSERT_EQUAL(fa.finished + fa.cancelled, 0);
    teardown();
}

/* Deferred SASL: no outcome until done(); then the outcome, and the connection goes on (or is
 * closed: unauthorized-access). */
static void
test_auth_deferred_sasl(void)
{
    setup_auth(true, false);
    cli c;
    cli_open_sasl(&c, "PLAIN", "ann", "pw");
    CU_ASSERT_EQUAL(fa.begun, 1);
    CU_ASSERT_EQUAL(pn_sasl_outcome(pn_sasl(c.d.transport)), PN_SASL_NONE);
    CU_ASSERT_FALSE(remote_open(&c));
    CU_ASSERT_TRUE(c.io.paused);
    CU_ASSERT_FALSE(c.io.closed);
    auth_fire();
    CU_ASSERT_FALSE(c.io.paused);
    run(&c);
    CU_ASSERT_EQUAL(pn_sasl_outcome(pn_sasl(c.d.transport)), PN_SASL_OK);
    CU_ASSERT_TRUE(remote_open(&c));
    pn_link_t *s = sender(&c, "s", "queue://dsq");
    pn_delivery_t *d = send_msg(&c, s, "after auth", false);
    CU_ASSERT_EQUAL(pn_delivery_remote_state(d), PN_ACCEPTED);
    cli_close(&c);
    /* refused */
    cli_open_sasl(&c, "PLAIN", "ann", "no");
    CU_ASSERT_EQUAL(pn_sasl_outcome(pn_sasl(c.d.transport)), PN_SASL_NONE);
    CU_ASSERT_FALSE(c.io.closed);
    auth_fire();
    run(&c);
    CU_ASSERT_EQUAL(pn_sasl_outcome(pn_sasl(c.d.transport)), PN_SASL_AUTH);
    CU_ASSERT_FALSE(remote_open(&c));
    CU_ASSERT_TRUE(c.io.closed);
    cli_close(&c);
    CU_ASSERT_EQUAL(fa.finished, 2);
    CU_ASSERT_EQUAL(fa.cancelled, 0);
    teardown();
}

/* Appends a frame (type 0: AMQP, 1: SASL; channel 0) with body p[0..n) to buf. */
static void
frame_add(tn_buf *buf, uint8_t type, const uint8_t *p, size_t n)
{
    uint32_t size = (uint32_t)n + 8;
    uint8_t h[8] = {(uint8_t)(size >> 24),
                    (uint8_t)(size >> 16),
                    (uint8_t)(size >> 8),
                    (uint8_t)size,
                    2,
                    type,
                    0,
                    0};
    tn_buf_append(buf, h, 8);
    tn_buf_append(buf, p, n);
}

/* Where needle first is in c's output from `from` on, or SIZE_MAX. */
static size_t
out_find(cli *c, size_t from, const void *needle, size_t n)
{
    if (from > c->io.out.len)
        return SIZE_MAX;
    const uint8_t *p = memmem(c->io.out.data + from, c->io.out.len - from, needle, n);
    return p ? (size_t)(p - c->io.out.data) : SIZE_MAX;
}

/* A client that pipelines its AMQP header, open and begin after its sasl-init (proton's own
 * client waits for the outcome; others need not): none of it reaches proton before the
 * outcome, which comes first, then the open and begin in order. */
static void
test_auth_deferred_pipelined(void)
{
    static const uint8_t init[] = {0x00, 0x53, 0x41, 0xc0, 0x11, 0x02, 0xa3, 0x05, 'P',  'L', 'A',
                                   'I',  'N',  0xa0, 0x07, 0x00, 'a',  'n',  'n',  0x00, 'p', 'w'};
    static const uint8_t open[] = {0x00, 0x53, 0x10, 0xc0, 0x03, 0x01, 0xa1, 0x00};
    static const uint8_t begin[] = {0x00, 0x53, 0x11, 0xc0, 0x0d, 0x04, 0x40, 0x43, 0x70,
                                    0,    0,    0,    0x64, 0x70, 0,    0,    0,    0x64};
    static const uint8_t outcome[] = {0x00, 0x53, 0x44}, o_open[] = {0x00, 0x53, 0x10},
                         o_begin[] = {0x00, 0x53, 0x11};
    for (int refuse = 0; refuse < 2; refuse++) {
        setup_auth(true, false);
        tn_buf in;
        tn_buf_init(&in, 4096);
        tn_buf_append(&in, "AMQP\x03\x01\x00\x00", 8);
        frame_add(&in, 1, init, sizeof init);
        if (refuse)
            in.data[in.len - 1] = 'x'; /* password "px" */
        tn_buf_append(&in, "AMQP\x00\x01\x00\x00", 8);
        frame_add(&in, 0, open, sizeof open);
        frame_add(&in, 0, begin, sizeof begin);
        cli c;
        memset(&c, 0, sizeof c);
        tn_buf_init(&c.io.out, 1 << 20);
        c.io.a = tn_amqp_adapter.open(am, &tn_fake_io, &c.io);
        to_adapter(&c, in.data, in.len);
        CU_ASSERT_EQUAL(fa.begun, 1);
        CU_ASSERT_TRUE(c.io.paused);
        CU_ASSERT_FALSE(c.io.closed);
        CU_ASSERT_EQUAL(c.in.len, 8 + 16 + 26); /* what came after the sasl-init: kept */
        CU_ASSERT_EQUAL(out_find(&c, 0, outcome, 3), SIZE_MAX);
        CU_ASSERT_EQUAL(out_find(&c, 0, o_open, 3), SIZE_MAX);
        auth_fire();
        offer(&c);
        size_t at = out_find(&c, 0, outcome, 3);
        CU_ASSERT_FATAL(at != SIZE_MAX);
        /* sasl-outcome: list8 of one field, the code: ubyte 0 (ok) or 1 (auth) */
        CU_ASSERT_TRUE(at + 8 <= c.io.out.len &&
                       memcmp(c.io.out.data + at + 3, "\xc0\x03\x01\x50", 4) == 0);
        CU_ASSERT_EQUAL(c.io.out.data[at + 7], refuse ? 1 : 0);
        if (!refuse) {
            size_t h = out_find(&c, at, "AMQP\x00\x01\x00\x00", 8);
            size_t o = out_find(&c, at, o_open, 3), bg = out_find(&c, at, o_begin, 3);
            CU_ASSERT_TRUE(h != SIZE_MAX && o != SIZE_MAX && bg != SIZE_MAX && h < o && o < bg);
            CU_ASSERT_FALSE(c.io.closed);
            CU_ASSERT_EQUAL(c.in.len, 0);
        } else {
            /* nothing after a refused sasl-init reaches proton: no open is looked at */
            CU_ASSERT_EQUAL(out_find(&c, at, o_open, 3), SIZE_MAX);
            CU_ASSERT_EQUAL(fa.begun, 1);
            CU_ASSERT_TRUE(c.io.closed);
        }
        tn_amqp_adapter.closed(c.io.a, c.io.closed ? TN_CLOSE_LOCAL : TN_CLOSE_PEER);
        tn_buf_fini(&c.io.out);
        tn_buf_fini(&c.in);
        tn_buf_fini(&in);
        CU_ASSERT_EQUAL(fa.finished, 1);
        CU_ASSERT_EQUAL(fa.cancelled, 0);
        teardown();
    }
}

/* No SASL, the anonymous check at open deferred: the open, and the begin and attach the client
 * pipelined after it, wait for done(); refused, the attach never makes a link. */
static void
test_auth_deferred_open(void)
{
    for (int refuse = 0; refuse < 2; refuse++) {
        setup_auth(true, !refuse);
        cli c;
        memset(&c, 0, sizeof c);
        tn_buf_init(&c.io.out, 1 << 20);
        c.io.a = tn_amqp_adapter.open(am, &tn_fake_io, &c.io);
        pn_connection_driver_init(&c.d, NULL, NULL);
        pn_connection_set_container(c.d.connection, "test-client");
        pn_connection_open(c.d.connection);
        c.ssn = pn_session(c.d.connection);
        pn_session_open(c.ssn);
        pn_link_t *s = pn_sender(c.ssn, "s");
        pn_terminus_set_address(pn_link_target(s), "queue://doq");
        pn_link_open(s);
        run(&c);
        CU_ASSERT_EQUAL(fa.begun, 1);
        CU_ASSERT_FALSE(remote_open(&c));
        CU_ASSERT_FALSE(pn_session_state(c.ssn) & PN_REMOTE_ACTIVE);
        CU_ASSERT_TRUE(c.io.paused);
        CU_ASSERT_EQUAL(c.io.deadline, tn_fake_now + 10000); /* the connect deadline holds */
        auth_fire();
        run(&c);
        if (!refuse) {
            CU_ASSERT_TRUE(remote_open(&c));
            CU_ASSERT_TRUE(pn_session_state(c.ssn) & PN_REMOTE_ACTIVE);
            CU_ASSERT_TRUE(pn_link_state(s) & PN_REMOTE_ACTIVE);
            pn_delivery_t *d = send_msg(&c, s, "after open", false);
            CU_ASSERT_EQUAL(pn_delivery_remote_state(d), PN_ACCEPTED);
        } else {
            CU_ASSERT_STRING_EQUAL(
                pn_condition_get_name(pn_connection_remote_condition(c.d.connection)),
                "amqp:unauthorized-access");
            CU_ASSERT_FALSE(pn_link_state(s) & PN_REMOTE_ACTIVE);
            CU_ASSERT_PTR_NULL(tn_broker_queue_find(b, "doq", 3));
            CU_ASSERT_TRUE(c.io.closed);
        }
        cli_close(&c);
        CU_ASSERT_EQUAL(fa.finished, 1);
        CU_ASSERT_EQUAL(fa.cancelled, 0);
        teardown();
    }
}

/* Closed while the authenticator decides: the job is cancelled and done() never comes. The
 * connect deadline closes a connection still waiting, not before. */
static void
test_auth_closed_while_waiting(void)
{
    setup_auth(true, true);
    cli c;
    cli_open_sasl(&c, "PLAIN", "ann", "pw");
    CU_ASSERT_PTR_NOT_NULL(fa.job);
    cli_close(&c); /* the peer went */
    CU_ASSERT_EQUAL(fa.cancelled, 1);
    CU_ASSERT_EQUAL(fa.finished, 0);
    cli_open(&c, false); /* waiting at open */
    CU_ASSERT_PTR_NOT_NULL(fa.job);
    cli_close(&c);
    CU_ASSERT_EQUAL(fa.cancelled, 2);
    CU_ASSERT_EQUAL(fa.finished, 0);
    uint64_t t0 = tn_fake_now;
    cli_open(&c, false);
    CU_ASSERT_PTR_NOT_NULL(fa.job);
    tn_fake_now = t0 + 9999;
    tn_amqp_adapter.timeout(c.io.a, tn_fake_now);
    CU_ASSERT_FALSE(c.io.closed);
    CU_ASSERT_EQUAL(c.io.deadline, t0 + 10000);
    tn_fake_now = t0 + 10000;
    tn_amqp_adapter.timeout(c.io.a, tn_fake_now);
    CU_ASSERT_TRUE(c.io.closed);
    size_t out = c.io.out.len;
    auth_fire(); /* done() before closed(): finished, nothing said on a closing connection */
    CU_ASSERT_EQUAL(c.io.out.len, out);
    cli_close(&c);
    CU_ASSERT_EQUAL(fa.cancelled, 2);
    CU_ASSERT_EQUAL(fa.finished, 1);
    teardown();
}

static void
test_no_sasl_and_topic(void)
{
    setup_with(100);
    cli c;
    cli_open(&c, false);
    CU_ASSERT_TRUE(pn_connection_state(c.d.connection) & PN_REMOTE_ACTIVE);
    pn_link_t *r1 = receiver(&c, "r1", "topic://a.*", 10);
    pn_link_t *r2 = receiver(&c, "r2", "topic://a.>", 10);
    pn_link_t *s = sender(&c, "s", "topic://a.b");
    send_msg(&c, s, "one", false);
    pn_link_t *s2 = sender(&c, "s2", "topic://a.b.c");
    send_msg(&c, s2, "two", false);
    CU_ASSERT_EQUAL(pn_link_queued(r1), 1);
    CU_ASSERT_EQUAL(pn_link_queued(r2), 2);
    cli_close(&c);
    teardown();
}

static void
test_malformed_message(void)
{
    /* A transfer whose bytes are not an AMQP message: its link is closed with
     * amqp:decode-error; the connection and its other links go on. */
    setup_with(100);
    cli c;
    cli_open(&c, true);
    pn_link_t *s = sender(&c, "s", "queue://mq");
    pn_link_t *ok = sender(&c, "ok", "queue://mq2");
    pn_delivery(s, pn_dtag("x", 1));
    static const char junk[] = "\x00\x53\x75\xb0\xff\xff\xff\xff"; /* data of 4 GiB */
    pn_link_send(s, junk, sizeof junk - 1);
    pn_link_advance(s);
    run(&c);
    CU_ASSERT_STRING_EQUAL(remote_cond(s), "amqp:decode-error");
    CU_ASSERT_FALSE(c.io.closed);
    pn_delivery_t *d = send_msg(&c, ok, "fine", false);
    CU_ASSERT_EQUAL(pn_delivery_remote_state(d), PN_ACCEPTED);
    cli_close(&c);
    teardown();
}

static void
test_aborted_delivery(void)
{
    /* A sender aborts a delivery half sent (max-frame-size is 4 KiB here): it is dropped, the
     * link goes on. */
    setup_with(100);
    cli c;
    cli_open(&c, true);
    pn_link_t *s = sender(&c, "s", "queue://aq");
    static char half[10000];
    pn_delivery_t *d = pn_delivery(s, pn_dtag("a", 1));
    pn_link_send(s, half, sizeof half);
    run(&c);
    pn_delivery_abort(d);
    run(&c);
    CU_ASSERT_FALSE(c.io.closed);
    pn_delivery_t *d2 = send_msg(&c, s, "after", false);
    CU_ASSERT_EQUAL(pn_delivery_remote_state(d2), PN_ACCEPTED);
    tn_session *q = tn_broker_queue_find(b, "aq", 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    CU_ASSERT_EQUAL(tn_queue_depth(tn_session_queue(q)), 1);
    cli_close(&c);
    teardown();
}

static void
test_credit(void)
{
    setup_with(100);
    cli c;
    cli_open(&c, true);
    pn_link_t *s = sender(&c, "s", "queue://cq");
    for (int i = 0; i < 3; i++)
        send_msg(&c, s, "m", false);
    pn_link_t *r = receiver(&c, "r", "queue://cq", 1);
    CU_ASSERT_EQUAL(pn_link_queued(r), 1);
    pn_link_flow(r, 1);
    run(&c);
    CU_ASSERT_EQUAL(pn_link_queued(r), 2);
    /* drain: what is there comes, the rest of the credit is used up */
    pn_link_drain(r, 5);
    run(&c);
    CU_ASSERT_EQUAL(pn_link_queued(r), 3);
    CU_ASSERT_EQUAL(pn_link_remote_credit(r), 0);
    CU_ASSERT_FALSE(pn_link_draining(r));
    cli_close(&c);
    teardown();
}

static void
test_dispositions(void)
{
    setup_with(100);
    cli c;
    cli_open(&c, true);
    pn_link_t *s = sender(&c, "s", "queue://dq");
    send_msg(&c, s, "x", false);
    pn_link_t *r = receiver(&c, "r", "queue://dq", 1);
    char body[64];
    tn_session *q = tn_broker_queue_find(b, "dq", 2);
    tn_queue *qq = tn_session_queue(q);
    /* released: back, not counted */
    pn_delivery_t *d = recv_msg(&c, r, body, sizeof body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    pn_delivery_update(d, PN_RELEASED);
    pn_delivery_settle(d);
    pn_link_flow(r, 1);
    run(&c);
    d = recv_msg(&c, r, body, sizeof body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    /* modified, delivery-failed: counted; past max_deliveries (3) to the DLQ */
    for (int i = 0; i < 3 && d; i++) {
        pn_disposition_set_failed(pn_delivery_local(d), true);
        pn_delivery_update(d, PN_MODIFIED);
        pn_delivery_settle(d);
        pn_link_flow(r, 1);
        run(&c);
        d = recv_msg(&c, r, body, sizeof body);
    }
    CU_ASSERT_PTR_NULL(d);
    CU_ASSERT_EQUAL(tn_queue_depth(qq), 0);
    tn_session *dlq = tn_broker_queue_find(b, "DLQ.dq", 6);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dlq);
    CU_ASSERT_EQUAL(tn_queue_depth(tn_session_queue(dlq)), 1);
    /* rejected: to the DLQ at once */
    send_msg(&c, s, "y", false);
    d = recv_msg(&c, r, body, sizeof body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_STRING_EQUAL(body, "y");
    pn_delivery_update(d, PN_REJECTED);
    pn_delivery_settle(d);
    run(&c);
    CU_ASSERT_EQUAL(tn_queue_depth(tn_session_queue(dlq)), 2);
    CU_ASSERT_EQUAL(tn_queue_depth(qq) + tn_queue_inflight(qq), 0);
    cli_close(&c);
    teardown();
}

static void
test_undeliverable_here(void)
{
    setup_with(100);
    cli c;
    cli_open(&c, true);
    pn_link_t *s = sender(&c, "s", "queue://uq");
    send_msg(&c, s, "first", false);
    pn_link_t *r1 = receiver(&c, "r1", "queue://uq", 1);
    char body[64];
    pn_delivery_t *d = recv_msg(&c, r1, body, sizeof body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    pn_disposition_set_undeliverable(pn_delivery_local(d), true);
    pn_delivery_update(d, PN_MODIFIED);
    pn_delivery_settle(d);
    pn_link_flow(r1, 1);
    send_msg(&c, s, "second", false);
    /* r1 never sees "first" again, but gets what is behind it */
    d = recv_msg(&c, r1, body, sizeof body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_STRING_EQUAL(body, "second");
    pn_link_t *r2 = receiver(&c, "r2", "queue://uq", 1);
    d = recv_msg(&c, r2, body, sizeof body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_STRING_EQUAL(body, "first");
    cli_close(&c);
    teardown();
}

static void
test_refused_links(void)
{
    setup_with(100);
    cli c;
    cli_open(&c, true);
    pn_link_t *l1 = sender(&c, "a", "foo://x");
    CU_ASSERT_STRING_EQUAL(remote_cond(l1), "amqp:not-found");
    pn_link_t *l2 = sender(&c, "b", "queue://");
    CU_ASSERT_STRING_EQUAL(remote_cond(l2), "amqp:not-found");
    pn_link_t *l3 = sender(&c, "c", "topic://a.*");
    CU_ASSERT_STRING_EQUAL(remote_cond(l3), "amqp:not-found");
    pn_link_t *l4 = receiver(&c, "d", "queue://tmp.99.1", 1);
    CU_ASSERT_STRING_EQUAL(remote_cond(l4), "amqp:not-found");
    /* the connection is fine */
    pn_link_t *s = sender(&c, "e", "queue://ok");
    CU_ASSERT_TRUE(pn_link_state(s) & PN_REMOTE_ACTIVE);
    CU_ASSERT_FALSE(c.io.closed);
    cli_close(&c);
    teardown();
}

static void
test_dynamic(void)
{
    setup_with(100);
    cli c;
    cli_open(&c, true);
    pn_link_t *r = pn_receiver(c.ssn, "dyn");
    pn_terminus_set_dynamic(pn_link_source(r), true);
    pn_link_open(r);
    pn_link_flow(r, 5);
    run(&c);
    const char *addr = pn_terminus_get_address(pn_link_remote_source(r));
    CU_ASSERT_PTR_NOT_NULL_FATAL(addr);
    char name[128];
    snprintf(name, sizeof name, "%s", addr);
    CU_ASSERT_EQUAL(strncmp(name, "tmp.", 4), 0);
    pn_link_t *s = sender(&c, "s", name);
    send_msg(&c, s, "reply", false);
    CU_ASSERT_EQUAL(pn_link_queued(r), 1);
    pn_link_close(r);
    run(&c);
    CU_ASSERT_PTR_NULL(tn_broker_queue_find(b, name, strlen(name)));
    pn_link_t *s2 = sender(&c, "s2", name);
    CU_ASSERT_STRING_EQUAL(remote_cond(s2), "amqp:not-found");
    cli_close(&c);
    teardown();
}

static void
test_flow_control(void)
{
    /* A queue past its limit (max_offline 40) slows its producer: no more credit, nothing
     * dropped. */
    setup_with(4);
    cli c;
    cli_open(&c, true);
    pn_link_t *s = sender(&c, "s", "queue://fq");
    int sent = 0;
    while (pn_link_credit(s) > 0 && sent < 100) {
        send_msg(&c, s, "m", false);
        sent++;
    }
    CU_ASSERT_TRUE(sent < 100);
    tn_session *q = tn_broker_queue_find(b, "fq", 2);
    CU_ASSERT_EQUAL(tn_queue_depth(tn_session_queue(q)), (uint32_t)sent);
    /* a consumer drains it: credit comes back */
    pn_link_t *r = receiver(&c, "r", "queue://fq", 100);
    char body[16];
    pn_delivery_t *d;
    int got = 0;
    for (int i = 0; i < 1000 && got < sent; i++) {
        while ((d = recv_msg(&c, r, body, sizeof body))) {
            pn_delivery_update(d, PN_ACCEPTED);
            pn_delivery_settle(d);
            got++;
        }
        run(&c);
    }
    CU_ASSERT_EQUAL(got, sent);
    CU_ASSERT_TRUE(pn_link_credit(s) > 0);
    cli_close(&c);
    teardown();
}

static void
test_bad_header(void)
{
    setup_with(100);
    cli c;
    memset(&c, 0, sizeof c);
    tn_buf_init(&c.io.out, 1 << 20);
    c.io.a = tn_amqp_adapter.open(am, &tn_fake_io, &c.io);
    to_adapter(&c, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18);
    CU_ASSERT_TRUE(c.io.closed);
    CU_ASSERT_TRUE(c.io.out.len >= 8 && memcmp(c.io.out.data, "AMQP", 4) == 0);
    tn_amqp_adapter.closed(c.io.a, TN_CLOSE_LOCAL);
    tn_buf_fini(&c.io.out);
    tn_buf_fini(&c.in);
    teardown();
}

static void
test_sasl_after_sasl(void)
{
    /* proton would take a sasl-init in the AMQP phase (and leak its mechanism name): the
     * scanner in front of it closes the connection with a framing error instead. */
    static const uint8_t in[] = {'A', 'M', 'Q', 'P', 3, 1, 0, 0,
                                 /* sasl-init(ANONYMOUS): size 25, doff 2, type 1 */
                                 0, 0, 0, 25, 2, 1, 0, 0, 0x00, 0x53, 0x41, 0xc0, 0x0c, 0x01, 0xa3,
                                 0x09, 'A', 'N', 'O', 'N', 'Y', 'M', 'O', 'U', 'S', 'A', 'M', 'Q',
                                 'P', 0, 1, 0, 0,
                                 /* the same sasl-init again, now in the AMQP phase */
                                 0, 0, 0, 25, 2, 1, 0, 0, 0x00, 0x53, 0x41, 0xc0, 0x0c, 0x01, 0xa3,
                                 0x09, 'A', 'N', 'O', 'N', 'Y', 'M', 'O', 'U', 'S'};
    setup_with(100);
    for (size_t chunk = 1; chunk <= sizeof in; chunk *= 3) {
        cli c;
        memset(&c, 0, sizeof c);
        tn_buf_init(&c.io.out, 1 << 20);
        c.io.a = tn_amqp_adapter.open(am, &tn_fake_io, &c.io);
        for (size_t off = 0; off < sizeof in && !c.io.closed; off += chunk)
            to_adapter(&c, in + off, sizeof in - off < chunk ? sizeof in - off : chunk);
        CU_ASSERT_TRUE(c.io.closed); /* before any open: no close frame, just the end */
        tn_amqp_adapter.closed(c.io.a, TN_CLOSE_LOCAL);
        tn_buf_fini(&c.io.out);
        tn_buf_fini(&c.in);
    }
    teardown();
}

/* Raw frames (type 0, channel 0) after a plain AMQP header, into a fresh connection; returns
 * whether the error condition ternd sent is in its output and the connection is closed (or,
 * with link_only, still open). */
static bool
raw_frames_on(const uint8_t *const *bodies, const size_t *lens, size_t n, const char *cond,
              bool link_only)
{
    cli c;
    memset(&c, 0, sizeof c);
    tn_buf_init(&c.io.out, 1 << 20);
    c.io.a = tn_amqp_adapter.open(am, &tn_fake_io, &c.io);
    to_adapter(&c, (const uint8_t *)"AMQP\x00\x01\x00\x00", 8);
    for (size_t i = 0; i < n; i++) {
        uint32_t size = (uint32_t)lens[i] + 8;
        uint8_t h[8] = {(uint8_t)(size >> 24),
                        (uint8_t)(size >> 16),
                        (uint8_t)(size >> 8),
                        (uint8_t)size,
                        2,
                        0,
                        0,
                        0};
        to_adapter(&c, h, 8);
        to_adapter(&c, bodies[i], lens[i]);
    }
    bool ok =
        c.io.closed != link_only && memmem(c.io.out.data, c.io.out.len, cond, strlen(cond)) != NULL;
    if (!ok)
        fprintf(stderr, "closed %d, no %s in the output\n", c.io.closed, cond);
    tn_amqp_adapter.closed(c.io.a, TN_CLOSE_LOCAL);
    tn_buf_fini(&c.io.out);
    tn_buf_fini(&c.in);
    return ok;
}

static bool
raw_frames(const uint8_t *const *bodies, const size_t *lens, size_t n, const char *cond)
{
    return raw_frames_on(bodies, lens, n, cond, false);
}

static void
test_out_of_order_and_unattached(void)
{
    setup_with(100);
    static const uint8_t open[] = {0x00, 0x53, 0x10, 0xc0, 0x03, 0x01, 0xa1, 0x00};
    static const uint8_t begin[] = {0x00, 0x53, 0x11, 0xc0, 0x0d, 0x04, 0x40, 0x43, 0x70,
                                    0,    0,    0,    0x64, 0x70, 0,    0,    0,    0x64};
    static const uint8_t transfer[] = {0x00, 0x53, 0x14, 0xc0, 0x03, 0x01, 0x52, 0x05};
    /* a begin before the open: performatives out of order (closed at once: nothing was
     * opened to close with an error) */
    CU_ASSERT_TRUE(raw_frames((const uint8_t *[]){begin}, (size_t[]){sizeof begin}, 1, "AMQP"));
    /* a malformed performative after the open */
    static const uint8_t bad[] = {0x00, 0x53, 0x11, 0xc0, 0x20, 0x04, 0x40};
    CU_ASSERT_TRUE(raw_frames((const uint8_t *[]){open, bad}, (size_t[]){sizeof open, sizeof bad},
                              2, "amqp:decode-error"));
    /* a transfer on a link that was never attached */
    CU_ASSERT_TRUE(raw_frames((const uint8_t *[]){open, begin, transfer},
                              (size_t[]){sizeof open, sizeof begin, sizeof transfer}, 3,
                              "amqp:invalid-field"));
    teardown();
}

/* A client that sends past its credit (flow control withheld it: the queue is full) loses
 * the link with amqp:link:transfer-limit-exceeded; the queue holds what it was allowed. */
static void
test_transfer_without_credit(void)
{
    setup_with(4); /* a named queue waits its producers past max_offline: 40 */
    static const uint8_t open[] = {0x00, 0x53, 0x10, 0xc0, 0x03, 0x01, 0xa1, 0x00};
    static const uint8_t begin[] = {0x00, 0x53, 0x11, 0xc0, 0x0d, 0x04, 0x40, 0x43, 0x70,
                                    0,    0,    0,    0xff, 0x70, 0,    0,    0,    0xff};
    /* attach(name "l", handle 0, role sender, target address "q") */
    static const uint8_t attach[] = {0x00, 0x53, 0x12, 0xc0, 0x12, 0x07, 0xa1, 0x01,
                                     'l',  0x43, 0x42, 0x40, 0x40, 0x40, 0x00, 0x53,
                                     0x29, 0xc0, 0x04, 0x01, 0xa1, 0x01, 'q'};
    const uint8_t *bodies[3 + 200];
    size_t lens[3 + 200];
    static uint8_t transfers[200][18];
    bodies[0] = open, bodies[1] = begin, bodies[2] = attach;
    lens[0] = sizeof open, lens[1] = sizeof begin, lens[2] = sizeof attach;
    for (int i = 0; i < 200; i++) {
        /* transfer(handle 0, delivery-id i, tag i, format 0, settled) + amqp-value "x" */
        uint8_t t[18] = {0x00, 0x53, 0x14,       0xc0, 0x09, 0x05, 0x43, 0x52, (uint8_t)i,
                         0xa0, 0x01, (uint8_t)i, 0x43, 0x41, 0x00, 0x53, 0x77, 0x45};
        memcpy(transfers[i], t, sizeof t);
        bodies[3 + i] = transfers[i];
        lens[3 + i] = sizeof t;
    }
    CU_ASSERT_TRUE(raw_frames_on(bodies, lens, 203, "amqp:link:transfer-limit-exceeded", true));
    tn_session *q = tn_broker_queue_find(b, "q", 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    uint32_t depth = tn_queue_depth(tn_session_queue(q));
    CU_ASSERT_TRUE(depth >= 40 && depth < 60);
    teardown();
}

static void
test_frame_too_large(void)
{
    setup_with(100);
    cli c;
    cli_open(&c, false);
    /* a frame header claiming 1 MiB, past our max-frame-size of 4096 */
    static const uint8_t big[] = {0x00, 0x10, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00};
    to_adapter(&c, big, sizeof big);
    run(&c);
    CU_ASSERT_TRUE(c.io.closed);
    const char *n = pn_condition_get_name(pn_connection_remote_condition(c.d.connection));
    if (!n)
        n = pn_condition_get_name(pn_transport_condition(c.d.transport));
    CU_ASSERT_PTR_NOT_NULL_FATAL(n);
    CU_ASSERT_STRING_EQUAL(n, "amqp:connection:framing-error");
    cli_close(&c);
    teardown();
}

static void
test_idle_timeout(void)
{
    setup_with(100);
    cli c;
    cli_open(&c, true);
    CU_ASSERT_EQUAL(pn_transport_get_remote_idle_timeout(c.d.transport), 2000);
    CU_ASSERT_TRUE(c.io.deadline > 0);
    tn_fake_now += 1900; /* not yet */
    tn_amqp_adapter.timeout(c.io.a, tn_fake_now);
    run(&c);
    CU_ASSERT_FALSE(c.io.closed);
    tn_fake_now += 200; /* silent past our idle timeout */
    tn_amqp_adapter.timeout(c.io.a, tn_fake_now);
    run(&c);
    CU_ASSERT_TRUE(c.io.closed);
    cli_close(&c);
    teardown();
}

static void
test_durable_subscription(void)
{
    setup_with(100);
    cli c;
    cli_open(&c, true);
    pn_link_t *r = pn_receiver(c.ssn, "sub1");
    pn_terminus_set_address(pn_link_source(r), "topic://news");
    pn_terminus_set_durability(pn_link_source(r), PN_DELIVERIES);
    pn_terminus_set_expiry_policy(pn_link_source(r), PN_EXPIRE_NEVER);
    pn_link_open(r);
    pn_link_flow(r, 10);
    run(&c);
    pn_link_detach(r); /* away, not gone */
    run(&c);
    pn_link_t *s = sender(&c, "s", "topic://news");
    send_msg(&c, s, "while away", true);
    tn_session *sub = tn_broker_session_find(b,
                                             "\x01"
                                             "d:test-client:sub1",
                                             19);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sub);
    CU_ASSERT_EQUAL(tn_queue_depth(tn_session_queue(sub)), 1);
    /* Qpid JMS's unsubscribe: the name and no source; the stored source comes back */
    pn_link_t *u = pn_receiver(c.ssn, "sub1");
    pn_link_open(u);
    run(&c);
    CU_ASSERT_STRING_EQUAL(pn_terminus_get_address(pn_link_remote_source(u)), "topic://news");
    pn_link_close(u);
    run(&c);
    CU_ASSERT_PTR_NULL(tn_broker_session_find(b,
                                              "\x01"
                                              "d:test-client:sub1",
                                              19));
    cli_close(&c);
    teardown();
}

static void
test_large_message(void)
{
    /* 200 KB in 4 KiB frames: made once its head is here, filled as it arrives. */
    setup_with(100);
    cli c;
    cli_open(&c, true);
    pn_link_t *s = sender(&c, "s", "queue://lq");
    size_t n = 200000;
    char *payload = malloc(n);
    for (size_t i = 0; i < n; i++)
        payload[i] = (char)(i * 7);
    pn_message_t *m = pn_message();
    pn_message_set_inferred(m, true);
    pn_data_put_binary(pn_message_body(m), pn_bytes(n, payload));
    char *buf = malloc(n + 1024);
    size_t len = n + 1024;
    CU_ASSERT_EQUAL_FATAL(pn_message_encode(m, buf, &len), 0);
    pn_message_free(m);
    pn_delivery_t *d = pn_delivery(s, pn_dtag("L", 1));
    pn_link_send(s, buf, len);
    pn_link_advance(s);
    run(&c);
    CU_ASSERT_EQUAL(pn_delivery_remote_state(d), PN_ACCEPTED);
    tn_session *q = tn_broker_queue_find(b, "lq", 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    tn_delivery *td = tn_queue_first(tn_session_queue(q));
    CU_ASSERT_PTR_NOT_NULL_FATAL(td);
    CU_ASSERT_EQUAL(td->msg->payload_len, n);
    CU_ASSERT_EQUAL(memcmp(td->msg->payload, payload, n), 0);
    /* and back out, in frames of the client's size */
    pn_link_t *r = receiver(&c, "r", "queue://lq", 1);
    pn_delivery_t *rd = pn_link_current(r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rd);
    CU_ASSERT_FALSE(pn_delivery_partial(rd));
    ssize_t got = pn_link_recv(r, buf, n + 1024);
    CU_ASSERT_TRUE_FATAL(got > (ssize_t)n);
    CU_ASSERT_EQUAL(memcmp(buf + got - n, payload, n), 0); /* the data section comes last */
    free(buf);
    free(payload);
    cli_close(&c);
    teardown();
}

int
main(void)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("amqp", NULL, NULL);
    CU_add_test(s, "queue_roundtrip", test_queue_roundtrip);
    CU_add_test(s, "no_sasl_and_topic", test_no_sasl_and_topic);
    CU_add_test(s, "sasl_plain_checked", test_sasl_plain_checked);
    CU_add_test(s, "auth_deferred_sasl", test_auth_deferred_sasl);
    CU_add_test(s, "auth_deferred_pipelined", test_auth_deferred_pipelined);
    CU_add_test(s, "auth_deferred_open", test_auth_deferred_open);
    CU_add_test(s, "auth_closed_while_waiting", test_auth_closed_while_waiting);
    CU_add_test(s, "credit", test_credit);
    CU_add_test(s, "malformed_message", test_malformed_message);
    CU_add_test(s, "aborted_delivery", test_aborted_delivery);
    CU_add_test(s, "dispositions", test_dispositions);
    CU_add_test(s, "undeliverable_here", test_undeliverable_here);
    CU_add_test(s, "refused_links", test_refused_links);
    CU_add_test(s, "dynamic", test_dynamic);
    CU_add_test(s, "flow_control", test_flow_control);
    CU_add_test(s, "bad_header", test_bad_header);
    CU_add_test(s, "frame_too_large", test_frame_too_large);
    CU_add_test(s, "out_of_order_and_unattached", test_out_of_order_and_unattached);
    CU_add_test(s, "transfer_without_credit", test_transfer_without_credit);
    CU_add_test(s, "sasl_after_sasl", test_sasl_after_sasl);
    CU_add_test(s, "idle_timeout", test_idle_timeout);
    CU_add_test(s, "durable_subscription", test_durable_subscription);
    CU_add_test(s, "large_message", test_large_message);
    return tn_test_run();
}
