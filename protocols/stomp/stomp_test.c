/* Unit tests of the STOMP adapter through a fake tn_io (no sockets): frames in, frames out. */
#include "protocols/stomp/stomp.h"

#include "core/base/base.h"

#include "tests/unit/fake_io.h"
#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>

typedef struct fio {
    tn_fake_conn io;      /* first: the fake tn_io's ctx */
    tn_stomp_decoder dec; /* client role: reads what the adapter wrote */
    size_t read;          /* bytes of io.out decoded so far */
} fio;

static tn_broker *b;
static tn_stomp *st;

static void
setup(void)
{
    tn_broker_limits bl = {
        .max_inflight = 10, .max_queued = 100, .max_offline = 100, .max_topic_levels = 4};
    b = tn_broker_new(&bl);
    tn_stomp_conf sc = {.limits = {8192, 64, 65536, 65536, 0}, .prefetch = 10, .max_deliveries = 3};
    st = tn_stomp_new(b, &sc);
}

static void
teardown(void)
{
    tn_stomp_free(st);
    tn_broker_free(b);
}

static void
conn_open(fio *f)
{
    memset(f, 0, sizeof *f);
    tn_buf_init(&f->io.out, 1 << 20);
    tn_stomp_decoder_init(&f->dec, TN_STOMP_ROLE_CLIENT, NULL);
    f->io.a = tn_stomp_adapter.open(st, &tn_fake_io, &f->io);
}

/* Feeds a frame (its text; "\0" terminates frames) and runs deferred work like net would. */
static void
feed(fio *f, const char *s, size_t n)
{
    CU_ASSERT_EQUAL((size_t)tn_stomp_adapter.input(f->io.a, (const uint8_t *)s, n), n);
    while (f->io.woken) {
        f->io.woken = 0;
        tn_stomp_adapter.input(f->io.a, NULL, 0);
    }
}
#define FEED(f, lit) feed(f, lit, sizeof lit - 1)

/* The next frame the adapter wrote, or false. */
static bool
next(fio *f, tn_stomp_frame *fr)
{
    size_t used;
    int rc = tn_stomp_decode(&f->dec, f->io.out.data + f->read, f->io.out.len - f->read, &used, fr);
    if (rc != 0) {
        f->read = f->io.out.len;
        return false;
    }
    f->read += used;
    return true;
}

static void
conn_close(fio *f)
{
    tn_stomp_adapter.closed(f->io.a, TN_CLOSE_PEER);
    tn_stomp_decoder_fini(&f->dec);
    tn_buf_fini(&f->io.out);
}

static void
connect12(fio *f)
{
    conn_open(f);
    FEED(f, "CONNECT\naccept-version:1.0,1.1,1.2\nhost:x\n\n\0");
    tn_stomp_frame fr;
    CU_ASSERT_FATAL(next(f, &fr));
    CU_ASSERT_EQUAL(fr.command, TN_STOMP_CONNECTED);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "version"), "1.2");
    tn_stomp_decoder_set_version(&f->dec, TN_STOMP_V12);
}

static void
test_connect_versions(void)
{
    setup();
    fio f;
    conn_open(&f);
    FEED(&f, "CONNECT\n\n\0"); /* 1.0: no accept-version */
    tn_stomp_frame fr;
    CU_ASSERT_FATAL(next(&f, &fr));
    CU_ASSERT_EQUAL(fr.command, TN_STOMP_CONNECTED);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "version"), "1.0");
    CU_ASSERT_PTR_NOT_NULL(tn_stomp_header(&fr, "session"));
    conn_close(&f);
    conn_open(&f);
    FEED(&f, "STOMP\naccept-version:1.1\nheart-beat:0,500\n\n\0");
    CU_ASSERT_FATAL(next(&f, &fr));
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "version"), "1.1");
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "heart-beat"), "500,0");
    CU_ASSERT_EQUAL(f.io.deadline, tn_fake_now + 500); /* the first heart-beat is due then */
    conn_close(&f);
    conn_open(&f);
    FEED(&f, "CONNECT\naccept-version:2.0\n\n\0");
    CU_ASSERT_FATAL(next(&f, &fr));
    CU_ASSERT_EQUAL(fr.command, TN_STOMP_ERROR);
    CU_ASSERT_TRUE(f.io.closed);
    conn_close(&f);
    teardown();
}

static char auth_subject[128], auth_protocol[16];

static int
auth_check(void *ctx, const tn_auth_req *r)
{
    (void)ctx;
    snprintf(auth_subject, sizeof auth_subject, "%s", r->cert_subject ? r->cert_subject : "");
    snprintf(auth_protocol, sizeof auth_protocol, "%s", r->protocol ? r->protocol : "");
    return r->user && strcmp(r->user, "ann") == 0 && r->password_len == 2 &&
                   memcmp(r->password, "pw", 2) == 0
               ? 0
               : TN_EDENIED;
}

static void
test_login_checked(void)
{
    setup();
    tn_stomp_free(st); /* again, with the shared authenticator: it sees login and passcode */
    tn_stomp_conf sc = {.limits = {8192, 64, 65536, 65536, 0}, .auth = {.check = auth_check}};
    st = tn_stomp_new(b, &sc);
    fio f;
    conn_open(&f);
    FEED(&f, "CONNECT\naccept-version:1.2\nlogin:ann\npasscode:pw\n\n\0");
    tn_stomp_frame fr;
    CU_ASSERT_FATAL(next(&f, &fr));
    CU_ASSERT_EQUAL(fr.command, TN_STOMP_CONNECTED);
    conn_close(&f);
    conn_open(&f);
    FEED(&f, "CONNECT\naccept-version:1.2\nlogin:ann\npasscode:no\n\n\0");
    CU_ASSERT_FATAL(next(&f, &fr));
    CU_ASSERT_EQUAL(fr.command, TN_STOMP_ERROR);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "message"), "not authorized");
    CU_ASSERT_TRUE(f.io.closed);
    conn_close(&f);
    /* [issue 14] The verified TLS client certificate's subject reaches the authenticator. */
    CU_ASSERT_STRING_EQUAL(auth_subject, "");
    conn_open(&f);
    f.io.cert_subject = "O=Acme,CN=dev-1";
    FEED(&f, "CONNECT\naccept-version:1.2\nlogin:ann\npasscode:pw\n\n\0");
    CU_ASSERT_FATAL(next(&f, &fr));
    CU_ASSERT_EQUAL(fr.command, TN_STOMP_CONNECTED);
    CU_ASSERT_STRING_EQUAL(auth_subject, "O=Acme,CN=dev-1");
    CU_ASSERT_STRING_EQUAL(auth_protocol, "stomp");
    conn_close(&f);
    teardown();
}

static void
test_queue_send_receive_ack(void)
{
    setup();
    fio p, c;
    connect12(&p);
    connect12(&c);
    FEED(&p, "SEND\ndestination:/queue/jobs\nreceipt:r1\ncorrelation-id:c9\nx-user:u\n\nwork1\0");
    tn_stomp_frame fr;
    CU_ASSERT_FATAL(next(&p, &fr));
    CU_ASSERT_EQUAL(fr.command, TN_STOMP_RECEIPT);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "receipt-id"), "r1");
    FEED(&c, "SUBSCRIBE\nid:s\ndestination:/queue/jobs\nack:client-individual\n\n\0");
    CU_ASSERT_FATAL(next(&c, &fr));
    CU_ASSERT_EQUAL(fr.command, TN_STOMP_MESSAGE);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "destination"), "/queue/jobs");
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "subscription"), "s");
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "correlation-id"), "c9");
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "x-user"), "u");
    CU_ASSERT_EQUAL(fr.body_len, 5);
    char ack[64];
    int n = snprintf(ack, sizeof ack, "NACK\nid:%s\n\n", tn_stomp_header(&fr, "ack"));
    feed(&c, ack, (size_t)n + 1); /* NACK: redelivered */
    CU_ASSERT_FATAL(next(&c, &fr));
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "redelivered"), "true");
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "delivery-count"), "2");
    n = snprintf(ack, sizeof ack, "ACK\nid:%s\nreceipt:a\n\n", tn_stomp_header(&fr, "ack"));
    feed(&c, ack, (size_t)n + 1);
    CU_ASSERT_FATAL(next(&c, &fr));
    CU_ASSERT_EQUAL(fr.command, TN_STOMP_RECEIPT);
    CU_ASSERT_EQUAL(tn_queue_depth(tn_session_queue(tn_broker_queue(b, "jobs", 4, true))), 0);
    CU_ASSERT_EQUAL(tn_queue_inflight(tn_session_queue(tn_broker_queue(b, "jobs", 4, true))), 0);
    /* An ACK of something never sent: ERROR and close. */
    FEED(&c, "ACK\nid:1.999\n\n\0");
    CU_ASSERT_FATAL(next(&c, &fr));
    CU_ASSERT_EQUAL(fr.command, TN_STOMP_ERROR);
    CU_ASSERT_TRUE(c.io.closed);
    conn_close(&c);
    conn_close(&p);
    teardown();
}

static void
test_dead_letter_after_max_deliveries(void)
{
    setup();
    fio p, c, d;
    connect12(&p);
    connect12(&c);
    connect12(&d);
    FEED(&d, "SUBSCRIBE\nid:dl\ndestination:/queue/DLQ.q\n\n\0");
    FEED(&p, "SEND\ndestination:/queue/q\n\npoison\0");
    FEED(&c, "SUBSCRIBE\nid:s\ndestination:/queue/q\nack:client\n\n\0");
    tn_stomp_frame fr;
    for (int i = 0; i < 3; i++) { /* max_deliveries 3 */
        CU_ASSERT_FATAL(next(&c, &fr));
        CU_ASSERT_EQUAL(fr.command, TN_STOMP_MESSAGE);
        char nack[64];
        int n = snprintf(nack, sizeof nack, "NACK\nid:%s\n\n", tn_stomp_header(&fr, "ack"));
        feed(&c, nack, (size_t)n + 1);
    }
    CU_ASSERT_FALSE(next(&c, &fr)); /* not a fourth time */
    CU_ASSERT_FATAL(next(&d, &fr));
    CU_ASSERT_EQUAL(fr.command, TN_STOMP_MESSAGE);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "destination"), "/queue/DLQ.q");
    CU_ASSERT_EQUAL(fr.body_len, 6);
    conn_close(&c);
    conn_close(&d);
    conn_close(&p);
    teardown();
}

static void
test_topic_transaction_and_errors(void)
{
    setup();
    fio p, c;
    connect12(&p);
    connect12(&c);
    FEED(&c, "SUBSCRIBE\nid:t\ndestination:/topic/a.*\n\n\0");
    FEED(&p, "BEGIN\ntransaction:x\n\n\0SEND\ndestination:/topic/a.b\ntransaction:x\n\none\0");
    tn_stomp_frame fr;
    CU_ASSERT_FALSE(next(&c, &fr)); /* not before COMMIT */
    FEED(&p, "COMMIT\ntransaction:x\n\n\0");
    CU_ASSERT_FATAL(next(&c, &fr));
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&fr, "destination"), "/topic/a.b");
    FEED(&p, "BEGIN\ntransaction:y\n\n\0SEND\ndestination:/topic/a.b\ntransaction:y\n\ntwo\0"
             "ABORT\ntransaction:y\n\n\0");
    CU_ASSERT_FALSE(next(&c, &fr));
    FEED(&p, "SEND\n\nno destination\0");
    CU_ASSERT_FATAL(next(&p, &fr));
    CU_ASSERT_EQUAL(fr.command, TN_STOMP_ERROR);
    CU_ASSERT_PTR_NOT_NULL(tn_stomp_header(&fr, "message"));
    CU_ASSERT_TRUE(p.io.closed);
    conn_close(&p);
    conn_close(&c);
    teardown();
}

/* Each bad input: an ERROR frame with a message header, then the connection closes. */
static void
test_bad_input_gets_error_and_close(void)
{
    static const struct {
        const char *what, *bytes;
        size_t len;
    } cases[] = {
#define CASE(w, lit) {w, lit, sizeof lit - 1}
        CASE("unknown command", "FLY\n\n\0"),
        CASE("missing NUL", "SEND\ndestination:/queue/a\ncontent-length:2\n\nabX"),
        CASE("bad content-length", "SEND\ndestination:/queue/a\ncontent-length:x\n\n\0"),
        CASE("header without colon", "SEND\ndestination /queue/a\n\n\0"),
        CASE("SEND without destination", "SEND\n\nbody\0"),
        CASE("unknown destination", "SEND\ndestination:/elsewhere/a\n\n\0"),
        CASE("wildcard in SEND", "SEND\ndestination:/topic/a.*\n\n\0"),
        CASE("ACK of an unknown id", "ACK\nid:7.7\n\n\0"),
        CASE("malformed ack id", "ACK\nid:nonsense\n\n\0"),
        CASE("unknown transaction", "COMMIT\ntransaction:nope\n\n\0"),
        CASE("second CONNECT", "CONNECT\naccept-version:1.2\n\n\0"),
        CASE("bad ack mode", "SUBSCRIBE\nid:1\ndestination:/queue/a\nack:sometimes\n\n\0"),
        CASE("bad prefetch",
             "SUBSCRIBE\nid:1\ndestination:/queue/a\nactivemq.prefetchSize:0\n\n\0"),
        CASE("UNSUBSCRIBE of nothing", "UNSUBSCRIBE\nid:zz\n\n\0"),
        CASE("durable without client-id",
             "SUBSCRIBE\nid:1\ndestination:/topic/a\nactivemq.subscriptionName:d\n\n\0"),
        CASE("SEND past max_topic_levels (4)", "SEND\ndestination:/topic/a.b.c.d.e\n\n\0"),
        CASE("SUBSCRIBE past max_topic_levels (4)",
             "SUBSCRIBE\nid:1\ndestination:/topic/a.b.c.d.>\n\n\0"),
#undef CASE
    };
    setup();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fio f;
        connect12(&f);
        feed(&f, cases[i].bytes, cases[i].len);
        tn_stomp_frame fr;
        bool got = next(&f, &fr);
        CU_ASSERT_TRUE(got && fr.command == TN_STOMP_ERROR && tn_stomp_header(&fr, "message"));
        CU_ASSERT_TRUE(f.io.closed);
        if (!got || fr.command != TN_STOMP_ERROR || !f.io.closed)
            fprintf(stderr, "\n  case: %s\n", cases[i].what);
        conn_close(&f);
    }
    /* Before CONNECT, and a header line over the limit (8192). */
    fio f;
    conn_open(&f);
    FEED(&f, "SEND\ndestination:/queue/a\n\n\0");
    tn_stomp_frame fr;
    CU_ASSERT_TRUE(next(&f, &fr) && fr.command == TN_STOMP_ERROR);
    CU_ASSERT_TRUE(f.io.closed);
    conn_close(&f);
    /* A body over the limit (65536 here) is refused at its content-length, before the body,
     * with an ERROR that names the limit [issue 12]. */
    connect12(&f);
    FEED(&f, "SEND\ndestination:/queue/a\ncontent-length:70000\n\n");
    CU_ASSERT_TRUE(next(&f, &fr) && fr.command == TN_STOMP_ERROR);
    CU_ASSERT_TRUE(f.io.closed);
    CU_ASSERT_PTR_NOT_NULL(strstr((const char *)fr.body, "65536-byte limit"));
    conn_close(&f);
    /* A first command that cannot be CONNECT or STOMP: refused on its first bytes, before the
     * frame is complete [issue 19]; heart-beat EOLs before it and a CONNECT in pieces are fine. */
    conn_open(&f);
    FEED(&f, "\n\r\nSE");
    CU_ASSERT_TRUE(next(&f, &fr) && fr.command == TN_STOMP_ERROR);
    CU_ASSERT_TRUE(f.io.closed);
    conn_close(&f);
    conn_open(&f);
    FEED(&f, "\nCONN");
    CU_ASSERT_FALSE(f.io.closed);
    FEED(&f, "ECT\naccept-version:1.2\n\n\0");
    CU_ASSERT_TRUE(next(&f, &fr) && fr.command == TN_STOMP_CONNECTED);
    conn_close(&f);
    conn_open(&f);
    FEED(&f, "CONNECTX\n\n\0");
    CU_ASSERT_TRUE(next(&f, &fr) && fr.command == TN_STOMP_ERROR);
    CU_ASSERT_TRUE(f.io.closed);
    conn_close(&f);
    connect12(&f);
    static char big[9000 + 64];
    int n = snprintf(big, sizeof big, "SEND\ndestination:/queue/a\nx:");
    memset(big + n, 'v', 9000);
    memcpy(big + n + 9000, "\n\n", 3);
    feed(&f, big, (size_t)n + 9000 + 3);
    CU_ASSERT_TRUE(next(&f, &fr) && fr.command == TN_STOMP_ERROR);
    CU_ASSERT_TRUE(f.io.closed);
    conn_close(&f);
    teardown();
}

/* No CONNECT within connect_timeout_ms of accepting, however the bytes trickle in: closed. A
 * client that promised heart-beats and went silent: closed after twice the interval. */
static void
test_timeouts(void)
{
    setup();
    fio f;
    conn_open(&f);
    uint64_t t0 = tn_fake_now;
    for (int i = 0; i < 20; i++) {
        tn_fake_now += 1000;
        FEED(&f, "\n"); /* an EOL a second: never a CONNECT */
    }
    CU_ASSERT_FALSE(f.io.closed);
    CU_ASSERT_TRUE(f.io.deadline <= t0 + 10000);
    tn_stomp_adapter.timeout(f.io.a, tn_fake_now);
    CU_ASSERT_TRUE(f.io.closed);
    conn_close(&f);
    conn_open(&f);
    FEED(&f, "CONNECT\naccept-version:1.2\nheart-beat:1000,0\n\n\0");
    CU_ASSERT_EQUAL(f.io.deadline, tn_fake_now + 2000);
    tn_fake_now += 1999;
    tn_stomp_adapter.timeout(f.io.a, tn_fake_now);
    CU_ASSERT_FALSE(f.io.closed);
    FEED(&f, "\n"); /* a heart-beat: alive */
    tn_fake_now += 1999;
    tn_stomp_adapter.timeout(f.io.a, tn_fake_now);
    CU_ASSERT_FALSE(f.io.closed);
    tn_fake_now += 2;
    tn_stomp_adapter.timeout(f.io.a, tn_fake_now);
    CU_ASSERT_TRUE(f.io.closed);
    conn_close(&f);
    teardown();
}

int
main(void)
{
    tn_log_set_level(TN_LOG_ERROR);
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("stomp", NULL, NULL);
    CU_add_test(s, "connect_versions", test_connect_versions);
    CU_add_test(s, "queue_send_receive_ack", test_queue_send_receive_ack);
    CU_add_test(s, "login_checked", test_login_checked);
    CU_add_test(s, "dead_letter", test_dead_letter_after_max_deliveries);
    CU_add_test(s, "topic_transaction_errors", test_topic_transaction_and_errors);
    CU_add_test(s, "bad_input", test_bad_input_gets_error_and_close);
    CU_add_test(s, "timeouts", test_timeouts);
    return tn_test_run();
}
