/* The MQTT adapter driven through a fake tn_io: no sockets, exact bytes. */
#include "protocols/mqtt/codec.h"
#include "protocols/mqtt/mqtt.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

typedef struct fake_io {
    tn_buf out;
    bool closed;
    bool paused;
    int woken;
    uint64_t deadline;
    void *a; /* adapter state */
    bool gone;
} fake_io;

static uint64_t now_ms = 1000;

static tn_buf *
f_out(void *ctx)
{
    return &((fake_io *)ctx)->out;
}
static bool
f_full(void *ctx)
{
    return ((fake_io *)ctx)->out.len > 1 << 20;
}
static void
f_close(void *ctx)
{
    ((fake_io *)ctx)->closed = true;
}
static void
f_pause(void *ctx, bool p)
{
    ((fake_io *)ctx)->paused = p;
}
static void
f_deadline(void *ctx, uint64_t at)
{
    ((fake_io *)ctx)->deadline = at;
}
static uint64_t
f_now(void *ctx)
{
    (void)ctx;
    return now_ms;
}
static const char *
f_peer(void *ctx)
{
    (void)ctx;
    return "test:1";
}
static void
f_wake(void *ctx)
{
    ((fake_io *)ctx)->woken++;
}
static void
f_out_ref(void *ctx, const uint8_t *p, size_t n, void (*release)(void *owner), void *owner)
{
    tn_buf_append(&((fake_io *)ctx)->out, p, n); /* copied: tests compare the byte stream */
    release(owner);
}
static const tn_io fio = {
    .out = f_out,
    .out_full = f_full,
    .close = f_close,
    .pause = f_pause,
    .wake = f_wake,
    .set_deadline = f_deadline,
    .now = f_now,
    .peer = f_peer,
    .out_ref = f_out_ref,
};

static tn_broker *broker;
static tn_mqtt *mqtt;

static int
setup(void)
{
    tn_broker_limits bl = {
        .max_inflight = 10, .max_queued = 100, .max_offline = 100, .max_topic_levels = 8};
    broker = tn_broker_new(&bl);
    tn_mqtt_conf mc = {.max_message = 1024, .max_packet = 1024, .connect_timeout_ms = 5000};
    mqtt = tn_mqtt_new(broker, &mc);
    return 0;
}

static int
teardown(void)
{
    tn_mqtt_free(mqtt);
    tn_broker_free(broker);
    return 0;
}

static void
conn_open(fake_io *f)
{
    memset(f, 0, sizeof *f);
    tn_buf_init(&f->out, 1 << 22);
    f->a = tn_mqtt_adapter.open(mqtt, &fio, f);
}

/* Feeds bytes as net does: returns the adapter's result. */
static ssize_t
feed(fake_io *f, const void *p, size_t n)
{
    return tn_mqtt_adapter.input(f->a, p, n);
}

static void
feed_buf(fake_io *f, tn_buf *b)
{
    CU_ASSERT_EQUAL(feed(f, b->data, b->len), (ssize_t)b->len);
    b->len = 0;
}

static void
conn_close(fake_io *f, int reason)
{
    tn_mqtt_adapter.closed(f->a, reason);
    tn_buf_fini(&f->out);
    f->gone = true;
}

static bool
out_is(fake_io *f, const char *hex_bytes, size_t n)
{
    bool eq = f->out.len == n && memcmp(f->out.data, hex_bytes, n) == 0;
    f->out.len = 0;
    return eq;
}

static void
connect_as(fake_io *f, const char *id, bool clean, const char *will_topic, uint16_t keepalive)
{
    tn_buf b;
    tn_buf_init(&b, 4096);
    tn_mqtt_connect c = {.version = TN_MQTT_V311, .clean = clean, .keepalive = keepalive};
    c.client_id = (tn_mqtt_bytes){(const uint8_t *)id, (uint32_t)strlen(id)};
    if (will_topic) {
        c.will = true;
        c.will_qos = 1;
        c.will_topic = (tn_mqtt_bytes){(const uint8_t *)will_topic, (uint32_t)strlen(will_topic)};
        c.will_payload = (tn_mqtt_bytes){(const uint8_t *)"bye", 3};
    }
    CU_ASSERT_EQUAL(tn_mqtt_encode_connect(&b, &c), 0);
    feed_buf(f, &b);
    tn_buf_fini(&b);
}

static void
subscribe(fake_io *f, const char *filter, uint8_t qos)
{
    tn_buf b;
    tn_buf_init(&b, 4096);
    tn_mqtt_bytes fb = {(const uint8_t *)filter, (uint32_t)strlen(filter)};
    CU_ASSERT_EQUAL(tn_mqtt_encode_subscribe(&b, TN_MQTT_V311, 1, &fb, &qos, 1), 0);
    feed_buf(f, &b);
    tn_buf_fini(&b);
}

static void
publish(fake_io *f, const char *topic, const char *payload, uint8_t qos, uint16_t pid, bool retain)
{
    tn_buf b;
    tn_buf_init(&b, 4096);
    tn_mqtt_publish p = {.qos = qos, .retain = retain, .pid = pid};
    p.topic = (tn_mqtt_bytes){(const uint8_t *)topic, (uint32_t)strlen(topic)};
    p.payload = (tn_mqtt_bytes){(const uint8_t *)payload, (uint32_t)strlen(payload)};
    CU_ASSERT_EQUAL(tn_mqtt_encode_publish(&b, TN_MQTT_V311, &p), 0);
    feed_buf(f, &b);
    tn_buf_fini(&b);
}

/* Decodes the next server packet from f->out (consuming it). */
static bool
next_packet(fake_io *f, tn_mqtt_packet *pkt, tn_buf *keep)
{
    tn_mqtt_decoder d;
    tn_mqtt_decoder_init(&d, TN_MQTT_ROLE_CLIENT, 1 << 20);
    d.version = TN_MQTT_V311;
    size_t used = 0;
    if (f->out.len == 0 || tn_mqtt_decode(&d, f->out.data, f->out.len, &used, pkt) != 0)
        return false;
    /* keep a copy so views stay valid after consuming */
    keep->len = 0;
    tn_buf_append(keep, f->out.data, used);
    tn_mqtt_decode(&d, keep->data, keep->len, &used, pkt);
    tn_buf_consume(&f->out, used);
    return true;
}

static void
test_connect_accepted(void)
{
    fake_io f;
    conn_open(&f);
    CU_ASSERT_EQUAL(f.deadline, now_ms + 5000); /* connect timeout armed */
    connect_as(&f, "c1", true, NULL, 10);
    CU_ASSERT_TRUE(out_is(&f, "\x20\x02\x00\x00", 4));
    CU_ASSERT_FALSE(f.closed);
    CU_ASSERT_EQUAL(f.deadline, now_ms + 15000); /* 1.5 x keepalive */
    static const uint8_t ping[] = {0xc0, 0x00};
    CU_ASSERT_EQUAL(feed(&f, ping, 2), 2);
    CU_ASSERT_TRUE(out_is(&f, "\xd0\x00", 2));
    static const uint8_t disc[] = {0xe0, 0x00};
    CU_ASSERT_EQUAL(feed(&f, disc, 2), 2);
    CU_ASSERT_TRUE(f.closed);
    conn_close(&f, TN_CLOSE_LOCAL);
}

static void
test_bad_version_gets_connack_1(void)
{
    fake_io f;
    conn_open(&f);
    static const uint8_t c[] = {0x10, 0x0e, 0, 4, 'M', 'Q', 'T', 'T', 6, 2, 0, 10, 0, 2, 'i', 'd'};
    CU_ASSERT_TRUE(feed(&f, c, sizeof c) < 0);
    CU_ASSERT_TRUE(out_is(&f, "\x20\x02\x00\x01", 4));
    CU_ASSERT_TRUE(f.closed);
    conn_close(&f, TN_CLOSE_LOCAL);
}

static void
test_bad_protocol_name_closes_silently(void)
{
    fake_io f;
    conn_open(&f);
    static const uint8_t c[] = {0x10, 0x0e, 0, 4, 'M', 'Q', 'T', 'X', 4, 2, 0, 10, 0, 2, 'i', 'd'};
    CU_ASSERT_TRUE(feed(&f, c, sizeof c) < 0);
    CU_ASSERT_EQUAL(f.out.len, 0);
    CU_ASSERT_TRUE(f.closed);
    conn_close(&f, TN_CLOSE_LOCAL);
}

static void
test_first_packet_must_be_connect(void)
{
    fake_io f;
    conn_open(&f);
    static const uint8_t ping[] = {0xc0, 0x00};
    CU_ASSERT_TRUE(feed(&f, ping, 2) < 0);
    CU_ASSERT_EQUAL(f.out.len, 0);
    CU_ASSERT_TRUE(f.closed);
    conn_close(&f, TN_CLOSE_LOCAL);
}

static void
test_second_connect_closes(void)
{
    fake_io f;
    conn_open(&f);
    connect_as(&f, "c2", true, NULL, 0);
    f.out.len = 0;
    tn_buf b;
    tn_buf_init(&b, 256);
    tn_mqtt_connect c = {.version = TN_MQTT_V311, .clean = true};
    c.client_id = (tn_mqtt_bytes){(const uint8_t *)"c2", 2};
    tn_mqtt_encode_connect(&b, &c);
    CU_ASSERT_TRUE(feed(&f, b.data, b.len) < 0);
    CU_ASSERT_TRUE(f.closed);
    tn_buf_fini(&b);
    conn_close(&f, TN_CLOSE_LOCAL);
}

static void
test_empty_client_id(void)
{
    fake_io f;
    conn_open(&f);
    /* [MQTT-3.1.3-8]: CONNACK 2, then close */
    static const uint8_t c[] = {0x10, 0x0c, 0, 4, 'M', 'Q', 'T', 'T', 4, 0, 0, 10, 0, 0};
    CU_ASSERT_TRUE(feed(&f, c, sizeof c) < 0);
    CU_ASSERT_TRUE(out_is(&f, "\x20\x02\x00\x02", 4));
    CU_ASSERT_TRUE(f.closed);
    conn_close(&f, TN_CLOSE_LOCAL);
    conn_open(&f);
    connect_as(&f, "", true, NULL, 0); /* [MQTT-3.1.3-6] */
    CU_ASSERT_TRUE(out_is(&f, "\x20\x02\x00\x00", 4));
    CU_ASSERT_FALSE(f.closed);
    conn_close(&f, TN_CLOSE_PEER);
}

static void
test_bad_publish_topics_close(void)
{
    static const uint8_t wild[] = {0x30, 0x05, 0, 3, 'a', '/', '#'};
    static const uint8_t bad_utf8[] = {0x30, 0x05, 0, 3, 'a', 0xc0, 0x80};
    static const uint8_t qos3[] = {0x36, 0x05, 0, 1, 'a', 0, 1};
    static const uint8_t long_len[] = {0x30, 0xff, 0xff, 0xff, 0xff, 0x01};
    /* A payload of 2045 > max 1024: refused once the topic's length tells, before the payload */
    static const uint8_t too_big[] = {0x30, 0x80, 0x10, 0, 1, 'a'};
    const uint8_t *cases[] = {wild, bad_utf8, qos3, long_len, too_big};
    size_t sizes[] = {sizeof wild, sizeof bad_utf8, sizeof qos3, sizeof long_len, sizeof too_big};
    for (int i = 0; i < 5; i++) {
        fake_io f;
        conn_open(&f);
        connect_as(&f, "bad", true, NULL, 0);
        f.out.len = 0;
        CU_ASSERT_TRUE(feed(&f, cases[i], sizes[i]) < 0);
        CU_ASSERT_TRUE(f.closed);
        CU_ASSERT_EQUAL(f.out.len, 0);
        conn_close(&f, TN_CLOSE_LOCAL);
    }
}

static void
test_pubsub_qos1_and_session_present(void)
{
    fake_io sub, pub;
    tn_mqtt_packet pkt;
    tn_buf keep;
    tn_buf_init(&keep, 1 << 20);
    conn_open(&sub);
    connect_as(&sub, "sub", false, NULL, 0);
    CU_ASSERT_TRUE(out_is(&sub, "\x20\x02\x00\x00", 4));
    subscribe(&sub, "a/+", 1);
    CU_ASSERT_TRUE(out_is(&sub, "\x90\x03\x00\x01\x01", 5));
    conn_open(&pub);
    connect_as(&pub, "pub", true, NULL, 0);
    pub.out.len = 0;
    publish(&pub, "a/b", "hi", 1, 7, false);
    CU_ASSERT_TRUE(out_is(&pub, "\x40\x02\x00\x07", 4)); /* PUBACK */
    CU_ASSERT_TRUE_FATAL(next_packet(&sub, &pkt, &keep));
    CU_ASSERT_EQUAL(pkt.type, TN_MQTT_PUBLISH);
    CU_ASSERT_EQUAL(pkt.u.publish.qos, 1);
    CU_ASSERT_FALSE(pkt.u.publish.dup);
    CU_ASSERT_EQUAL(pkt.u.publish.topic.len, 3);
    CU_ASSERT_EQUAL(memcmp(pkt.u.publish.topic.p, "a/b", 3), 0);
    uint16_t pid = pkt.u.publish.pid;
    /* Not acked: the subscriber drops off and comes back: re-sent with DUP, same id. */
    conn_close(&sub, TN_CLOSE_PEER);
    conn_open(&sub);
    connect_as(&sub, "sub", false, NULL, 0);
    CU_ASSERT_TRUE_FATAL(next_packet(&sub, &pkt, &keep));
    CU_ASSERT_EQUAL(pkt.type, TN_MQTT_CONNACK);
    CU_ASSERT_TRUE(pkt.u.connack.session_present);
    CU_ASSERT_TRUE_FATAL(next_packet(&sub, &pkt, &keep));
    CU_ASSERT_EQUAL(pkt.type, TN_MQTT_PUBLISH);
    CU_ASSERT_TRUE(pkt.u.publish.dup);
    CU_ASSERT_EQUAL(pkt.u.publish.pid, pid);
    uint8_t ack[4] = {0x40, 0x02, (uint8_t)(pid >> 8), (uint8_t)pid};
    CU_ASSERT_EQUAL(feed(&sub, ack, 4), 4);
    /* clean session 1 discards it */
    conn_close(&sub, TN_CLOSE_PEER);
    conn_open(&sub);
    connect_as(&sub, "sub", true, NULL, 0);
    CU_ASSERT_TRUE(out_is(&sub, "\x20\x02\x00\x00", 4));
    publish(&pub, "a/b", "again", 1, 8, false);
    CU_ASSERT_EQUAL(sub.out.len, 0);
    conn_close(&sub, TN_CLOSE_PEER);
    conn_close(&pub, TN_CLOSE_PEER);
    tn_buf_fini(&keep);
}

static void
test_qos2_both_ways(void)
{
    fake_io sub, pub;
    tn_mqtt_packet pkt;
    tn_buf keep;
    tn_buf_init(&keep, 1 << 20);
    conn_open(&sub);
    connect_as(&sub, "s2", true, NULL, 0);
    subscribe(&sub, "q", 2);
    sub.out.len = 0;
    conn_open(&pub);
    connect_as(&pub, "p2", true, NULL, 0);
    pub.out.len = 0;
    publish(&pub, "q", "x", 2, 9, false);
    CU_ASSERT_TRUE(out_is(&pub, "\x50\x02\x00\x09", 4)); /* PUBREC */
    publish(&pub, "q", "x", 2, 9, false); /* re-sent before PUBREL: not published again */
    CU_ASSERT_TRUE(out_is(&pub, "\x50\x02\x00\x09", 4));
    static const uint8_t rel[] = {0x62, 0x02, 0x00, 0x09};
    CU_ASSERT_EQUAL(feed(&pub, rel, 4), 4);
    CU_ASSERT_TRUE(out_is(&pub, "\x70\x02\x00\x09", 4)); /* PUBCOMP */
    CU_ASSERT_TRUE_FATAL(next_packet(&sub, &pkt, &keep));
    CU_ASSERT_EQUAL(pkt.u.publish.qos, 2);
    CU_ASSERT_EQUAL(sub.out.len, 0); /* exactly once */
    uint16_t pid = pkt.u.publish.pid;
    uint8_t rec[4] = {0x50, 0x02, (uint8_t)(pid >> 8), (uint8_t)pid};
    CU_ASSERT_EQUAL(feed(&sub, rec, 4), 4);
    uint8_t want_rel[4] = {0x62, 0x02, (uint8_t)(pid >> 8), (uint8_t)pid};
    CU_ASSERT_TRUE(out_is(&sub, (const char *)want_rel, 4));
    uint8_t comp[4] = {0x70, 0x02, (uint8_t)(pid >> 8), (uint8_t)pid};
    CU_ASSERT_EQUAL(feed(&sub, comp, 4), 4);
    conn_close(&sub, TN_CLOSE_PEER);
    conn_close(&pub, TN_CLOSE_PEER);
    tn_buf_fini(&keep);
}

static void
test_will(void)
{
    fake_io w, obs;
    tn_mqtt_packet pkt;
    tn_buf keep;
    tn_buf_init(&keep, 1 << 20);
    conn_open(&obs);
    connect_as(&obs, "obs", true, NULL, 0);
    subscribe(&obs, "will/#", 1);
    obs.out.len = 0;
    /* DISCONNECT: no will */
    conn_open(&w);
    connect_as(&w, "w", true, "will/w", 0);
    static const uint8_t disc[] = {0xe0, 0x00};
    feed(&w, disc, 2);
    conn_close(&w, TN_CLOSE_LOCAL);
    CU_ASSERT_EQUAL(obs.out.len, 0);
    /* keepalive expiry: will */
    conn_open(&w);
    connect_as(&w, "w", true, "will/w", 2);
    CU_ASSERT_EQUAL(w.deadline, now_ms + 3000);
    tn_mqtt_adapter.timeout(w.a, now_ms + 3000);
    CU_ASSERT_TRUE(w.closed);
    conn_close(&w, TN_CLOSE_LOCAL);
    CU_ASSERT_TRUE_FATAL(next_packet(&obs, &pkt, &keep));
    CU_ASSERT_EQUAL(pkt.type, TN_MQTT_PUBLISH);
    CU_ASSERT_EQUAL(memcmp(pkt.u.publish.payload.p, "bye", 3), 0);
    /* shutdown: no will */
    conn_open(&w);
    connect_as(&w, "w", true, "will/w", 0);
    conn_close(&w, TN_CLOSE_SHUTDOWN);
    CU_ASSERT_EQUAL(obs.out.len, 0);
    conn_close(&obs, TN_CLOSE_PEER);
    tn_buf_fini(&keep);
}

static void
test_takeover_closes_first(void)
{
    fake_io a, b;
    conn_open(&a);
    connect_as(&a, "dup", false, NULL, 0);
    conn_open(&b);
    connect_as(&b, "dup", false, NULL, 0);
    CU_ASSERT_TRUE(a.closed);
    CU_ASSERT_TRUE(out_is(&b, "\x20\x02\x01\x00", 4)); /* the session is resumed */
    conn_close(&a, TN_CLOSE_LOCAL);
    conn_close(&b, TN_CLOSE_PEER);
}

static void
test_retained_then_subscribe(void)
{
    fake_io p, s;
    tn_mqtt_packet pkt;
    tn_buf keep;
    tn_buf_init(&keep, 1 << 20);
    conn_open(&p);
    connect_as(&p, "rp", true, NULL, 0);
    publish(&p, "r/1", "kept", 0, 0, true);
    conn_open(&s);
    connect_as(&s, "rs", true, NULL, 0);
    s.out.len = 0;
    subscribe(&s, "r/+", 0);
    CU_ASSERT_TRUE_FATAL(next_packet(&s, &pkt, &keep));
    CU_ASSERT_EQUAL(pkt.type, TN_MQTT_SUBACK); /* SUBACK before the retained message */
    CU_ASSERT_TRUE_FATAL(next_packet(&s, &pkt, &keep));
    CU_ASSERT_EQUAL(pkt.type, TN_MQTT_PUBLISH);
    CU_ASSERT_TRUE(pkt.u.publish.retain);
    publish(&p, "r/1", "", 0, 0, true); /* clear */
    s.out.len = 0;
    subscribe(&s, "r/+", 0);
    CU_ASSERT_TRUE(out_is(&s, "\x90\x03\x00\x01\x00", 5)); /* nothing retained any more */
    conn_close(&s, TN_CLOSE_PEER);
    conn_close(&p, TN_CLOSE_PEER);
    tn_buf_fini(&keep);
}

static void
test_suback_failure_for_bad_filter(void)
{
    fake_io f;
    conn_open(&f);
    connect_as(&f, "sf", true, NULL, 0);
    f.out.len = 0;
    subscribe(&f, "a/#/b", 1);
    CU_ASSERT_TRUE(out_is(&f, "\x90\x03\x00\x01\x80", 5));
    subscribe(&f, "a/x*y", 1); /* can't be mapped to the core */
    CU_ASSERT_TRUE(out_is(&f, "\x90\x03\x00\x01\x80", 5));
    CU_ASSERT_FALSE(f.closed);
    conn_close(&f, TN_CLOSE_PEER);
}

/* A client that publishes to its own subscription faster than it acks: its publishes wait for
 * flow control, but its PUBACKs must still be read, or it would wait for itself forever. */
static void
test_flow_blocked_client_still_acks(void)
{
    fake_io f;
    tn_mqtt_packet pkt;
    tn_buf keep, in;
    tn_buf_init(&keep, 1 << 20);
    tn_buf_init(&in, 1 << 20);
    conn_open(&f);
    connect_as(&f, "self", true, NULL, 0);
    subscribe(&f, "loop", 1);
    f.out.len = 0;
    const int n = 300; /* > max_queued (100) + max_inflight (10) */
    for (int i = 0; i < n; i++) {
        tn_mqtt_publish p = {.qos = 1, .pid = (uint16_t)(i + 1)};
        p.topic = (tn_mqtt_bytes){(const uint8_t *)"loop", 4};
        p.payload = (tn_mqtt_bytes){(const uint8_t *)"x", 1};
        tn_mqtt_encode_publish(&in, TN_MQTT_V311, &p);
    }
    CU_ASSERT_EQUAL(feed(&f, in.data, in.len), (ssize_t)in.len); /* taken, some deferred */
    int delivered = 0, pubacks = 0, rounds = 0;
    while ((delivered < n || pubacks < n) && rounds++ < 10000) {
        in.len = 0;
        while (next_packet(&f, &pkt, &keep)) {
            if (pkt.type == TN_MQTT_PUBLISH) {
                delivered++;
                tn_mqtt_encode_ack(&in, TN_MQTT_V311, TN_MQTT_PUBACK, pkt.u.publish.pid, 0);
            } else if (pkt.type == TN_MQTT_PUBACK) {
                pubacks++;
            }
        }
        if (rounds == 1)
            CU_ASSERT_TRUE(pubacks < n); /* the rest of the publishes were made to wait */
        if (in.len)
            CU_ASSERT_EQUAL(feed(&f, in.data, in.len), (ssize_t)in.len);
        if (f.woken) { /* what net does on wake: input() again on the next loop turn */
            f.woken = 0;
            CU_ASSERT_EQUAL(feed(&f, NULL, 0), 0);
        }
    }
    CU_ASSERT_EQUAL(delivered, n);
    CU_ASSERT_EQUAL(pubacks, n);
    CU_ASSERT_FALSE(f.paused);
    conn_close(&f, TN_CLOSE_PEER);
    tn_buf_fini(&keep);
    tn_buf_fini(&in);
}

/* [issue 19] A first byte that is not CONNECT's closes at once, before the rest arrives. */
static void
test_first_byte_not_connect_closes_at_once(void)
{
    static const uint8_t starts[][4] = {
        {0x30, 0xc0, 0x9a, 0x0c}, /* PUBLISH of 200,000 bytes, announced */
        {0x82, 0xff, 0xff, 0x7f}, /* SUBSCRIBE */
        {0x11, 0x00, 0x00, 0x00}, /* CONNECT with reserved flags set [MQTT-2.2.2-2] */
    };
    for (size_t i = 0; i < sizeof starts / sizeof starts[0]; i++) {
        fake_io f;
        conn_open(&f);
        CU_ASSERT_TRUE(feed(&f, starts[i], 1) < 0); /* the first byte is enough */
        CU_ASSERT_TRUE(f.closed);
        CU_ASSERT_EQUAL(f.deadline, 0);
        CU_ASSERT_EQUAL(f.out.len, 0);
        conn_close(&f, TN_CLOSE_LOCAL);
    }
    fake_io f;
    conn_open(&f);
    static const uint8_t connect_start[] = {0x10, 0x0e};
    CU_ASSERT_EQUAL(feed(&f, connect_start, 2), 0); /* a CONNECT on its way: wait for it */
    CU_ASSERT_FALSE(f.closed);
    conn_close(&f, TN_CLOSE_LOCAL);
}

/* [issue 19] max_topic_levels (8 here): deeper topic names, filters and will topics close. */
static void
test_too_many_levels_close(void)
{
    const char *ok = "1/2/3/4/5/6/7/8", *deep = "1/2/3/4/5/6/7/8/9";
    fake_io f;
    conn_open(&f);
    connect_as(&f, "lv", true, NULL, 0);
    subscribe(&f, "1/2/3/4/5/6/7/#", 0); /* 8 levels */
    f.out.len = 0;
    publish(&f, ok, "fine", 0, 0, false);
    CU_ASSERT_FALSE(f.closed);
    CU_ASSERT_TRUE(f.out.len > 0); /* delivered to itself */
    f.out.len = 0;
    tn_buf b;
    tn_buf_init(&b, 4096);
    tn_mqtt_publish p = {.qos = 1, .pid = 5};
    p.topic = (tn_mqtt_bytes){(const uint8_t *)deep, (uint32_t)strlen(deep)};
    p.payload = (tn_mqtt_bytes){(const uint8_t *)"x", 1};
    tn_mqtt_encode_publish(&b, TN_MQTT_V311, &p);
    CU_ASSERT_TRUE(feed(&f, b.data, b.len) < 0);
    CU_ASSERT_TRUE(f.closed);
    CU_ASSERT_EQUAL(f.out.len, 0); /* no PUBACK, no delivery */
    conn_close(&f, TN_CLOSE_LOCAL);

    conn_open(&f);
    connect_as(&f, "lv", true, NULL, 0);
    f.out.len = 0;
    b.len = 0;
    tn_mqtt_bytes fb = {(const uint8_t *)"1/2/3/4/5/6/7/8/#", 17};
    uint8_t q = 0;
    tn_mqtt_encode_subscribe(&b, TN_MQTT_V311, 1, &fb, &q, 1);
    CU_ASSERT_TRUE(feed(&f, b.data, b.len) < 0);
    CU_ASSERT_TRUE(f.closed);
    CU_ASSERT_EQUAL(f.out.len, 0);
    conn_close(&f, TN_CLOSE_LOCAL);

    conn_open(&f);
    b.len = 0;
    tn_mqtt_connect c = {.version = TN_MQTT_V311, .clean = true, .will = true};
    c.client_id = (tn_mqtt_bytes){(const uint8_t *)"lv", 2};
    c.will_topic = (tn_mqtt_bytes){(const uint8_t *)deep, (uint32_t)strlen(deep)};
    c.will_payload = (tn_mqtt_bytes){(const uint8_t *)"bye", 3};
    tn_mqtt_encode_connect(&b, &c);
    CU_ASSERT_TRUE(feed(&f, b.data, b.len) < 0);
    CU_ASSERT_TRUE(f.closed);
    conn_close(&f, TN_CLOSE_LOCAL);
    tn_buf_fini(&b);
}

/* [issue 19] A subscriber that stopped reading leaves by DISCONNECT while its output cannot
 * drain: its session ends at once, so the publisher it held back resumes before the socket
 * closes. */
static void
test_closing_subscriber_releases_publisher(void)
{
    fake_io sub, pub;
    conn_open(&sub);
    connect_as(&sub, "stalled", false, NULL, 0);
    subscribe(&sub, "st", 1);
    conn_open(&pub);
    connect_as(&pub, "pub", true, NULL, 0);
    tn_buf in;
    tn_buf_init(&in, 1 << 20);
    for (int i = 0; i < 200; i++) { /* > max_queued (100) + max_inflight (10) */
        tn_mqtt_publish p = {.qos = 1, .pid = (uint16_t)(i + 1)};
        p.topic = (tn_mqtt_bytes){(const uint8_t *)"st", 2};
        p.payload = (tn_mqtt_bytes){(const uint8_t *)"x", 1};
        tn_mqtt_encode_publish(&in, TN_MQTT_V311, &p);
    }
    CU_ASSERT_EQUAL(feed(&pub, in.data, in.len), (ssize_t)in.len);
    CU_ASSERT_EQUAL(pub.woken, 0); /* held back by the subscriber */
    static const uint8_t disc[] = {0xe0, 0x00};
    CU_ASSERT_EQUAL(feed(&sub, disc, 2), 2);
    CU_ASSERT_TRUE(sub.closed);
    CU_ASSERT_EQUAL(pub.woken, 1); /* before the subscriber's socket is gone */
    pub.out.len = 0;
    CU_ASSERT_EQUAL(feed(&pub, NULL, 0), 0); /* the loop's wake: the deferred PUBLISHes run */
    int pubacks = 0;
    tn_mqtt_packet pkt;
    tn_buf keep;
    tn_buf_init(&keep, 1 << 20);
    while (next_packet(&pub, &pkt, &keep))
        pubacks += pkt.type == TN_MQTT_PUBACK;
    CU_ASSERT_TRUE(pubacks > 0);
    conn_close(&sub, TN_CLOSE_LOCAL);
    conn_close(&pub, TN_CLOSE_PEER);
    tn_buf_fini(&in);
    tn_buf_fini(&keep);
    /* The persistent session went offline keeping its messages; discard it for the next test. */
    fake_io again;
    conn_open(&again);
    connect_as(&again, "stalled", true, NULL, 0);
    conn_close(&again, TN_CLOSE_PEER);
}

static void
test_name_mapping(void)
{
    char core[16];
    tn_mqtt_to_core((const uint8_t *)"a/b.c/+/#", 9, core);
    CU_ASSERT_EQUAL(memcmp(core, "a.b/c.*.>", 9), 0);
    uint8_t back[16];
    tn_mqtt_from_core("a.b/c", 5, back);
    CU_ASSERT_EQUAL(memcmp(back, "a/b.c", 5), 0);
}

/* A large PUBLISH is received straight into its message as it arrives, from the broker's
 * incoming budget: a second one that does not fit waits (its connection paused, nothing
 * consumed) until the first is whole, then goes on; both arrive intact. */
static void
test_large_publish_budget(void)
{
    tn_broker *saved_b = broker;
    tn_mqtt *saved_m = mqtt;
    tn_broker_limits bl = {
        .max_inflight = 10, .max_queued = 100, .max_offline = 100, .max_incoming = 200000};
    broker = tn_broker_new(&bl);
    tn_mqtt_conf mc = {.max_message = 160000, .max_packet = 1024, .connect_timeout_ms = 5000};
    mqtt = tn_mqtt_new(broker, &mc);

    fake_io sub, a, b;
    conn_open(&sub);
    connect_as(&sub, "sub", true, NULL, 0);
    subscribe(&sub, "big", 0);
    sub.out.len = 0;
    conn_open(&a);
    connect_as(&a, "a", true, NULL, 0);
    conn_open(&b);
    connect_as(&b, "b", true, NULL, 60);
    a.out.len = b.out.len = 0;

    size_t n = 150000;
    uint8_t *payload = malloc(n);
    for (size_t i = 0; i < n; i++)
        payload[i] = (uint8_t)(i * 7 + i / 251);
    tn_buf pa, pb;
    tn_buf_init(&pa, n + 64);
    tn_buf_init(&pb, n + 64);
    tn_mqtt_publish p = {.qos = 1,
                         .pid = 5,
                         .topic = {(const uint8_t *)"big", 3},
                         .payload = {payload, (uint32_t)n}};
    CU_ASSERT_EQUAL(tn_mqtt_encode_publish(&pa, TN_MQTT_V311, &p), 0);
    CU_ASSERT_EQUAL(tn_mqtt_encode_publish(&pb, TN_MQTT_V311, &p), 0);

    /* A: the head and a little of the payload: all taken, 150,000 bytes reserved. */
    CU_ASSERT_EQUAL(feed(&a, pa.data, 4000), 4000);
    tn_broker_stats st;
    tn_broker_get_stats(broker, &st);
    CU_ASSERT_EQUAL(st.incoming_bytes, n);
    /* B: does not fit beside it: nothing taken, reads paused, keep-alive not timed. */
    CU_ASSERT_EQUAL(feed(&b, pb.data, 4000), 0);
    CU_ASSERT_TRUE(b.paused);
    CU_ASSERT_EQUAL(b.deadline, 0);
    tn_broker_get_stats(broker, &st);
    CU_ASSERT_EQUAL(st.incoming_waiting, 1);
    /* A's payload in odd pieces; whole, it is published and B is woken. */
    size_t off = 4000;
    while (off < pa.len) {
        size_t k = pa.len - off < 9999 ? pa.len - off : 9999;
        CU_ASSERT_EQUAL(feed(&a, pa.data + off, k), (ssize_t)k);
        off += k;
    }
    CU_ASSERT_TRUE(out_is(&a, "\x40\x02\x00\x05", 4)); /* PUBACK */
    CU_ASSERT_EQUAL(b.woken, 1);
    tn_mqtt_packet pkt;
    tn_buf keep;
    tn_buf_init(&keep, 1 << 20);
    CU_ASSERT_TRUE(next_packet(&sub, &pkt, &keep));
    CU_ASSERT_EQUAL(pkt.type, TN_MQTT_PUBLISH);
    CU_ASSERT_EQUAL(pkt.u.publish.payload.len, n);
    CU_ASSERT_EQUAL(memcmp(pkt.u.publish.payload.p, payload, n), 0);
    /* B, offered its input again (as net does on wake), goes on. */
    CU_ASSERT_EQUAL(feed(&b, pb.data, 4000), 4000);
    CU_ASSERT_FALSE(b.paused);
    CU_ASSERT_TRUE(b.deadline > now_ms); /* timed again */
    CU_ASSERT_EQUAL(feed(&b, pb.data + 4000, pb.len - 4000), (ssize_t)(pb.len - 4000));
    CU_ASSERT_TRUE(out_is(&b, "\x40\x02\x00\x05", 4));
    CU_ASSERT_TRUE(next_packet(&sub, &pkt, &keep));
    CU_ASSERT_EQUAL(pkt.u.publish.payload.len, n);
    CU_ASSERT_EQUAL(memcmp(pkt.u.publish.payload.p, payload, n), 0);
    tn_broker_get_stats(broker, &st);
    CU_ASSERT_EQUAL(st.incoming_bytes, 0);

    /* Over max_message: refused from its head, before the payload. */
    p.payload.len = 160001;
    uint8_t *big = calloc(1, 160001);
    p.payload.p = big;
    tn_buf_fini(&pa);
    tn_buf_init(&pa, 200000);
    CU_ASSERT_EQUAL(tn_mqtt_encode_publish(&pa, TN_MQTT_V311, &p), 0);
    CU_ASSERT_TRUE(feed(&a, pa.data, 16) < 0);
    CU_ASSERT_TRUE(a.closed);
    /* A connection closed in the middle gives its reservation back. */
    pb.len = 0;
    p.payload.len = 100000;
    CU_ASSERT_EQUAL(tn_mqtt_encode_publish(&pb, TN_MQTT_V311, &p), 0);
    CU_ASSERT_EQUAL(feed(&b, pb.data, 5000), 5000);
    tn_broker_get_stats(broker, &st);
    CU_ASSERT_EQUAL(st.incoming_bytes, 100000);
    conn_close(&b, TN_CLOSE_PEER);
    tn_broker_get_stats(broker, &st);
    CU_ASSERT_EQUAL(st.incoming_bytes, 0);

    conn_close(&a, TN_CLOSE_LOCAL);
    conn_close(&sub, TN_CLOSE_PEER);
    free(big);
    free(payload);
    tn_buf_fini(&pa);
    tn_buf_fini(&pb);
    tn_buf_fini(&keep);
    tn_mqtt_free(mqtt);
    tn_broker_free(broker);
    broker = saved_b;
    mqtt = saved_m;
}

/* A standby about to take over holds a CONNECT (nothing read, nothing answered) and serves it
 * once active; once the hold ends without a promotion, the client is refused as on any
 * standby; a connection closed while held leaves nothing behind. */
static void
test_standby_hold(void)
{
    tn_buf b;
    tn_buf_init(&b, 256);
    tn_mqtt_connect c = {.version = TN_MQTT_V311, .clean = true};
    c.client_id = (tn_mqtt_bytes){(const uint8_t *)"held", 4};
    tn_mqtt_encode_connect(&b, &c);
    tn_broker_tick(broker, 1000);
    tn_broker_set_standby(broker, true, "10.0.0.1");
    fake_io f, g, h;
    /* Not about to take over: refused at once. */
    conn_open(&f);
    feed(&f, b.data, b.len);
    CU_ASSERT_TRUE(f.closed);
    CU_ASSERT_TRUE(out_is(&f, "\x20\x02\x00\x03", 4));
    conn_close(&f, TN_CLOSE_LOCAL);
    /* About to: held, then served when active. */
    tn_broker_set_hold(broker, 2500);
    conn_open(&f);
    conn_open(&h);
    CU_ASSERT_EQUAL(feed(&f, b.data, b.len), 0);
    CU_ASSERT_EQUAL(feed(&h, b.data, 3), 0);
    CU_ASSERT_TRUE(f.paused && h.paused);
    CU_ASSERT_EQUAL(f.out.len, 0);
    CU_ASSERT_EQUAL(feed(&f, b.data, b.len), 0); /* more input: still held */
    conn_close(&h, TN_CLOSE_PEER);               /* gone while held */
    tn_broker_set_standby(broker, false, NULL);
    CU_ASSERT_TRUE(f.woken > 0);
    CU_ASSERT_FALSE(f.paused);
    CU_ASSERT_EQUAL(feed(&f, b.data, b.len), (ssize_t)b.len);
    CU_ASSERT_TRUE(out_is(&f, "\x20\x02\x00\x00", 4));
    conn_close(&f, TN_CLOSE_PEER);
    /* Held, and the hold runs out: refused. */
    tn_broker_set_standby(broker, true, NULL);
    tn_broker_set_hold(broker, 2500);
    conn_open(&g);
    CU_ASSERT_EQUAL(feed(&g, b.data, b.len), 0);
    tn_broker_tick(broker, 2000);
    CU_ASSERT_EQUAL(g.woken, 0);
    tn_broker_tick(broker, 2500);
    CU_ASSERT_TRUE(g.woken > 0);
    feed(&g, b.data, b.len);
    CU_ASSERT_TRUE(g.closed);
    CU_ASSERT_TRUE(out_is(&g, "\x20\x02\x00\x03", 4));
    conn_close(&g, TN_CLOSE_LOCAL);
    /* set_hold(0) ends every hold at once. */
    tn_broker_set_hold(broker, 9000);
    conn_open(&g);
    CU_ASSERT_EQUAL(feed(&g, b.data, b.len), 0);
    tn_broker_set_hold(broker, 0);
    CU_ASSERT_TRUE(g.woken > 0);
    conn_close(&g, TN_CLOSE_PEER);
    tn_broker_set_standby(broker, false, NULL);
    tn_buf_fini(&b);
}

/* A fake authenticator whose answers come later, when the test says. */
typedef struct fake_auth {
    int answer; /* what finish() says */
    bool defer;
    void (*done)(void *arg);
    void *arg;
    int begun, finished, cancelled;
} fake_auth;
struct tn_auth_job {
    int unused;
};
static tn_auth_job the_job;

static int
fa_begin(void *ctx, const tn_auth_req *req, char **user, tn_auth_job **job, void (*done)(void *arg),
         void *arg)
{
    fake_auth *fa = ctx;
    fa->begun++;
    *user = NULL;
    if (!fa->defer) {
        if (fa->answer == 0 && req->user)
            *user = strdup(req->user);
        return fa->answer;
    }
    fa->done = done;
    fa->arg = arg;
    *job = &the_job;
    return TN_EAGAIN;
}
static int
fa_finish(void *ctx, tn_auth_job *job, char **user)
{
    fake_auth *fa = ctx;
    CU_ASSERT_PTR_EQUAL(job, &the_job);
    fa->finished++;
    *user = fa->answer == 0 ? strdup("alice") : NULL;
    return fa->answer;
}
static void
fa_cancel(void *ctx, tn_auth_job *job)
{
    fake_auth *fa = ctx;
    CU_ASSERT_PTR_EQUAL(job, &the_job);
    fa->cancelled++;
}

/* The CONNECT waits for the authenticator: nothing is read or answered meanwhile (not even the
 * SUBSCRIBE pipelined behind it); then CONNACK 0 and the SUBACK, in order; CONNACK 4 for a
 * wrong password, 5 for a refused anonymous client; a connection closed while waiting cancels
 * the job. */
static void
test_auth_deferred(void)
{
    fake_auth fa = {.defer = true};
    tn_mqtt_conf mc = {.max_message = 1024,
                       .max_packet = 1024,
                       .connect_timeout_ms = 5000,
                       .auth = {fa_begin, fa_finish, fa_cancel, &fa}};
    tn_mqtt *m = tn_mqtt_new(broker, &mc);
    tn_buf b;
    tn_buf_init(&b, 4096);
    tn_mqtt_connect c = {
        .version = TN_MQTT_V311, .clean = true, .has_username = true, .has_password = true};
    c.client_id = (tn_mqtt_bytes){(const uint8_t *)"authed", 6};
    c.username = (tn_mqtt_bytes){(const uint8_t *)"alice", 5};
    c.password = (tn_mqtt_bytes){(const uint8_t *)"pw", 2};
    tn_mqtt_encode_connect(&b, &c);
    size_t connect_len = b.len;
    uint8_t qos = 1;
    tn_mqtt_bytes fb = {(const uint8_t *)"a/b", 3};
    tn_mqtt_encode_subscribe(&b, TN_MQTT_V311, 7, &fb, &qos, 1);
    fake_io f;
    memset(&f, 0, sizeof f);
    tn_buf_init(&f.out, 1 << 16);
    f.a = tn_mqtt_adapter.open(m, &fio, &f);
    CU_ASSERT_EQUAL(tn_mqtt_adapter.input(f.a, b.data, b.len), 0);
    CU_ASSERT_EQUAL(fa.begun, 1);
    CU_ASSERT_TRUE(f.paused);
    CU_ASSERT_EQUAL(f.out.len, 0);
    fa.answer = 0;
    fa.done(fa.arg);
    CU_ASSERT_FALSE(f.paused);
    CU_ASSERT_TRUE(f.woken > 0);
    CU_ASSERT_EQUAL(tn_mqtt_adapter.input(f.a, b.data, b.len), (ssize_t)b.len);
    CU_ASSERT_EQUAL(fa.begun, 1);
    CU_ASSERT_EQUAL(fa.finished, 1);
    CU_ASSERT_TRUE(f.out.len == 4 + 5 &&
                   memcmp(f.out.data, "\x20\x02\x00\x00\x90\x03\x00\x07\x01", 9) == 0);
    tn_mqtt_adapter.closed(f.a, TN_CLOSE_PEER);
    CU_ASSERT_EQUAL(fa.cancelled, 0);
    /* Wrong password: CONNACK 4. */
    f.out.len = 0;
    f.closed = false;
    f.a = tn_mqtt_adapter.open(m, &fio, &f);
    CU_ASSERT_EQUAL(tn_mqtt_adapter.input(f.a, b.data, connect_len), 0);
    fa.answer = TN_EINVAL;
    fa.done(fa.arg);
    tn_mqtt_adapter.input(f.a, b.data, connect_len);
    CU_ASSERT_TRUE(f.closed);
    CU_ASSERT_TRUE(f.out.len == 4 && memcmp(f.out.data, "\x20\x02\x00\x04", 4) == 0);
    tn_mqtt_adapter.closed(f.a, TN_CLOSE_LOCAL);
    /* Refused at once: CONNACK 5. */
    fa.defer = false;
    fa.answer = TN_EDENIED;
    f.out.len = 0;
    f.closed = false;
    f.a = tn_mqtt_adapter.open(m, &fio, &f);
    tn_mqtt_adapter.input(f.a, b.data, connect_len);
    CU_ASSERT_TRUE(f.closed);
    CU_ASSERT_TRUE(f.out.len == 4 && memcmp(f.out.data, "\x20\x02\x00\x05", 4) == 0);
    tn_mqtt_adapter.closed(f.a, TN_CLOSE_LOCAL);
    /* Gone while waiting. */
    fa.defer = true;
    f.out.len = 0;
    f.closed = false;
    f.a = tn_mqtt_adapter.open(m, &fio, &f);
    CU_ASSERT_EQUAL(tn_mqtt_adapter.input(f.a, b.data, connect_len), 0);
    tn_mqtt_adapter.closed(f.a, TN_CLOSE_PEER);
    CU_ASSERT_EQUAL(fa.cancelled, 1);
    tn_buf_fini(&f.out);
    tn_buf_fini(&b);
    tn_mqtt_free(m);
}

int
main(void)
{
    tn_log_set_level(TN_LOG_ERROR);
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("mqtt_adapter", setup, teardown);
    CU_add_test(s, "connect_accepted", test_connect_accepted);
    CU_add_test(s, "bad_version_connack_1", test_bad_version_gets_connack_1);
    CU_add_test(s, "bad_protocol_name", test_bad_protocol_name_closes_silently);
    CU_add_test(s, "first_packet_connect", test_first_packet_must_be_connect);
    CU_add_test(s, "second_connect", test_second_connect_closes);
    CU_add_test(s, "empty_client_id", test_empty_client_id);
    CU_add_test(s, "bad_publish_topics", test_bad_publish_topics_close);
    CU_add_test(s, "pubsub_qos1_session_present", test_pubsub_qos1_and_session_present);
    CU_add_test(s, "qos2_both_ways", test_qos2_both_ways);
    CU_add_test(s, "will", test_will);
    CU_add_test(s, "takeover", test_takeover_closes_first);
    CU_add_test(s, "retained", test_retained_then_subscribe);
    CU_add_test(s, "suback_failure", test_suback_failure_for_bad_filter);
    CU_add_test(s, "flow_blocked_client_acks", test_flow_blocked_client_still_acks);
    CU_add_test(s, "name_mapping", test_name_mapping);
    CU_add_test(s, "first_byte_not_connect", test_first_byte_not_connect_closes_at_once);
    CU_add_test(s, "too_many_levels", test_too_many_levels_close);
    CU_add_test(s, "closing_subscriber_releases", test_closing_subscriber_releases_publisher);
    CU_add_test(s, "large_publish_budget", test_large_publish_budget);
    CU_add_test(s, "standby_hold", test_standby_hold);
    CU_add_test(s, "auth_deferred", test_auth_deferred);
    return tn_test_run();
}
