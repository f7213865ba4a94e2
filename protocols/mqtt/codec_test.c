#include "protocols/mqtt/codec.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

/* A byte array literal and its size, as two arguments. */
#define BYTES(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})
#define B(s) ((tn_mqtt_bytes){(const uint8_t *)(s), (uint32_t)(sizeof(s) - 1)})

static const uint8_t *
u8(const char *s)
{
    return (const uint8_t *)s;
}

static bool
bytes_eq(tn_mqtt_bytes b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && (n == 0 || memcmp(b.p, s, n) == 0);
}

/* Decodes buf[0..n) as one whole packet with a fresh decoder. */
static int
decode1(tn_mqtt_role role, uint8_t version, const uint8_t *buf, size_t n, tn_mqtt_packet *pkt)
{
    tn_mqtt_decoder d;
    size_t used = 99;

    tn_mqtt_decoder_init(&d, role, 1u << 20);
    d.version = version;
    int rc = tn_mqtt_decode(&d, buf, n, &used, pkt);
    if (rc == 0) {
        CU_ASSERT_EQUAL(used, n);
        CU_ASSERT_EQUAL(pkt->size, n);
        CU_ASSERT_PTR_NULL(d.error);
    } else {
        CU_ASSERT_EQUAL(used, 0);
    }
    return rc;
}

/* Expects TN_EPROTO with an error text and the given CONNACK return code. */
static void
expect_proto_rc(tn_mqtt_role role, uint8_t version, const uint8_t *buf, size_t n, int connack_rc)
{
    tn_mqtt_decoder d;
    tn_mqtt_packet pkt;
    size_t used = 99;

    tn_mqtt_decoder_init(&d, role, 1u << 20);
    d.version = version;
    CU_ASSERT_EQUAL(tn_mqtt_decode(&d, buf, n, &used, &pkt), TN_EPROTO);
    CU_ASSERT_EQUAL(used, 0);
    CU_ASSERT_PTR_NOT_NULL(d.error);
    CU_ASSERT_EQUAL(d.connack_rc, connack_rc);
    CU_ASSERT_EQUAL(d.version, version);
}

static void
expect_proto(tn_mqtt_role role, uint8_t version, const uint8_t *buf, size_t n)
{
    expect_proto_rc(role, version, buf, n, -1);
}

#define SERVER TN_MQTT_ROLE_SERVER
#define CLIENT TN_MQTT_ROLE_CLIENT

static void
expect_bytes(const tn_buf *b, const uint8_t *want, size_t n)
{
    CU_ASSERT_EQUAL_FATAL(b->len, n);
    CU_ASSERT_EQUAL(memcmp(b->data, want, n), 0);
}

/* --- Known wire bytes --- */

/* What `mosquitto_pub -i tern-test -t a/b -m hi` sends first (3.1.1, keepalive 60, clean). */
static const uint8_t mosq_connect[] = {0x10, 0x15, 0x00, 0x04, 'M',  'Q',  'T', 'T',
                                       0x04, 0x02, 0x00, 0x3c, 0x00, 0x09, 't', 'e',
                                       'r',  'n',  '-',  't',  'e',  's',  't'};

static void
test_connect_known_bytes(void)
{
    tn_mqtt_packet pkt;
    tn_mqtt_decoder d;
    size_t used;

    tn_mqtt_decoder_init(&d, SERVER, 1024);
    CU_ASSERT_EQUAL_FATAL(tn_mqtt_decode(&d, mosq_connect, sizeof mosq_connect, &used, &pkt), 0);
    CU_ASSERT_EQUAL(used, sizeof mosq_connect);
    CU_ASSERT_EQUAL(d.version, TN_MQTT_V311);
    CU_ASSERT_EQUAL(pkt.type, TN_MQTT_CONNECT);
    CU_ASSERT_EQUAL(pkt.u.connect.version, TN_MQTT_V311);
    CU_ASSERT_TRUE(pkt.u.connect.clean);
    CU_ASSERT_EQUAL(pkt.u.connect.keepalive, 60);
    CU_ASSERT_TRUE(bytes_eq(pkt.u.connect.client_id, "tern-test"));
    CU_ASSERT_FALSE(pkt.u.connect.will);
    CU_ASSERT_FALSE(pkt.u.connect.has_username);
    CU_ASSERT_FALSE(pkt.u.connect.has_password);
    /* The view points into the input. */
    CU_ASSERT_PTR_EQUAL(pkt.u.connect.client_id.p, mosq_connect + 14);

    tn_buf b;
    tn_buf_init(&b, 1024);
    tn_mqtt_connect c = {
        .version = TN_MQTT_V311, .clean = true, .keepalive = 60, .client_id = B("tern-test")};
    CU_ASSERT_EQUAL(tn_mqtt_encode_connect(&b, &c), 0);
    expect_bytes(&b, mosq_connect, sizeof mosq_connect);
    tn_buf_fini(&b);
}

static void
test_publish_qos1_known_bytes(void)
{
    static const uint8_t want[] = {0x32, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01, 'h', 'i'};
    tn_mqtt_publish p = {.qos = 1, .topic = B("a/b"), .pid = 1, .payload = B("hi")};
    tn_mqtt_packet pkt;
    tn_buf b;

    tn_buf_init(&b, 64);
    CU_ASSERT_EQUAL(tn_mqtt_encode_publish(&b, TN_MQTT_V311, &p), 0);
    expect_bytes(&b, want, sizeof want);
    tn_buf_fini(&b);

    CU_ASSERT_EQUAL_FATAL(decode1(SERVER, TN_MQTT_V311, want, sizeof want, &pkt), 0);
    CU_ASSERT_EQUAL(pkt.u.publish.qos, 1);
    CU_ASSERT_EQUAL(pkt.u.publish.pid, 1);
    CU_ASSERT_FALSE(pkt.u.publish.dup);
    CU_ASSERT_FALSE(pkt.u.publish.retain);
    CU_ASSERT_TRUE(bytes_eq(pkt.u.publish.topic, "a/b"));
    CU_ASSERT_TRUE(bytes_eq(pkt.u.publish.payload, "hi"));
}

static void
test_small_packets_known_bytes(void)
{
    tn_buf b;
    tn_buf_init(&b, 64);

    CU_ASSERT_EQUAL(tn_mqtt_encode_connack(&b, TN_MQTT_V311, true, 0), 0);
    expect_bytes(&b, BYTES(0x20, 0x02, 0x01, 0x00));
    tn_buf_reset(&b);
    CU_ASSERT_EQUAL(tn_mqtt_encode_connack(&b, TN_MQTT_V5, false, 0x84), 0);
    expect_bytes(&b, BYTES(0x20, 0x03, 0x00, 0x84, 0x00));
    tn_buf_reset(&b);
    CU_ASSERT_EQUAL(tn_mqtt_encode_ack(&b, TN_MQTT_V311, TN_MQTT_PUBREL, 0x1234, 0), 0);
    expect_bytes(&b, BYTES(0x62, 0x02, 0x12, 0x34));
    tn_buf_reset(&b);
    CU_ASSERT_EQUAL(tn_mqtt_encode_ack(&b, TN_MQTT_V5, TN_MQTT_PUBACK, 7, 0x10), 0);
    expect_bytes(&b, BYTES(0x40, 0x04, 0x00, 0x07, 0x10, 0x00));
    tn_buf_reset(&b);
    CU_ASSERT_EQUAL(tn_mqtt_encode_ack(&b, TN_MQTT_V5, TN_MQTT_UNSUBACK, 7, 0x11), 0);
    expect_bytes(&b, BYTES(0xb0, 0x04, 0x00, 0x07, 0x00, 0x11));
    tn_buf_reset(&b);
    CU_ASSERT_EQUAL(tn_mqtt_encode_simple(&b, TN_MQTT_PINGRESP), 0);
    expect_bytes(&b, BYTES(0xd0, 0x00));
    tn_buf_reset(&b);
    tn_mqtt_bytes f[] = {B("a/+"), B("#")};
    uint8_t o[] = {1, 2};
    CU_ASSERT_EQUAL(tn_mqtt_encode_subscribe(&b, TN_MQTT_V311, 10, f, o, 2), 0);
    expect_bytes(
        &b, BYTES(0x82, 0x0c, 0x00, 0x0a, 0x00, 0x03, 'a', '/', '+', 0x01, 0x00, 0x01, '#', 0x02));
    tn_buf_reset(&b);
    CU_ASSERT_EQUAL(tn_mqtt_encode_unsubscribe(&b, TN_MQTT_V5, 10, f, 1), 0);
    expect_bytes(&b, BYTES(0xa2, 0x08, 0x00, 0x0a, 0x00, 0x00, 0x03, 'a', '/', '+'));
    tn_buf_reset(&b);
    CU_ASSERT_EQUAL(tn_mqtt_encode_suback(&b, TN_MQTT_V311, 10, o, 2), 0);
    expect_bytes(&b, BYTES(0x90, 0x04, 0x00, 0x0a, 0x01, 0x02));
    tn_buf_fini(&b);
}

/* --- Round trips --- */

static void
test_roundtrip_connect(void)
{
    static const uint8_t props[] = {0x11, 0, 0, 0, 60, 0x21, 0, 10}; /* session expiry, rcv max */
    static const uint8_t wprops[] = {0x18, 0, 0, 0, 5};              /* will delay */
    const uint8_t versions[] = {TN_MQTT_V31, TN_MQTT_V311, TN_MQTT_V5};

    for (size_t i = 0; i < 3; i++) {
        tn_mqtt_connect c = {
            .version = versions[i],
            .clean = false,
            .keepalive = 300,
            .client_id = B("client-1"),
            .will = true,
            .will_qos = 2,
            .will_retain = true,
            .will_topic = B("status/client-1"),
            .will_payload = B("gone\0binary"),
            .has_username = true,
            .username = B("\xc3\xa9t\xc3\xa9"),
            .has_password = true,
            .password = B("p\0ss"),
        };
        if (c.version == TN_MQTT_V5) {
            c.props = (tn_mqtt_bytes){props, sizeof props};
            c.will_props = (tn_mqtt_bytes){wprops, sizeof wprops};
        }
        tn_buf b;
        tn_mqtt_packet pkt;
        tn_buf_init(&b, 1024);
        CU_ASSERT_EQUAL_FATAL(tn_mqtt_encode_connect(&b, &c), 0);
        CU_ASSERT_EQUAL_FATAL(decode1(SERVER, 0, b.data, b.len, &pkt), 0);
        const tn_mqtt_connect *r = &pkt.u.connect;
        CU_ASSERT_EQUAL(r->version, c.version);
        CU_ASSERT_FALSE(r->clean);
        CU_ASSERT_EQUAL(r->keepalive, 300);
        CU_ASSERT_TRUE(bytes_eq(r->client_id, "client-1"));
        CU_ASSERT_TRUE(r->will);
        CU_ASSERT_EQUAL(r->will_qos, 2);
        CU_ASSERT_TRUE(r->will_retain);
        CU_ASSERT_TRUE(bytes_eq(r->will_topic, "status/client-1"));
        CU_ASSERT_EQUAL(r->will_payload.len, 11);
        CU_ASSERT_EQUAL(memcmp(r->will_payload.p, "gone\0binary", 11), 0);
        CU_ASSERT_TRUE(r->has_username && bytes_eq(r->username, "\xc3\xa9t\xc3\xa9"));
        CU_ASSERT_TRUE(r->has_password && r->password.len == 4);
        CU_ASSERT_EQUAL(r->props.len, c.props.len);
        CU_ASSERT_EQUAL(r->will_props.len, c.will_props.len);
        if (c.version == TN_MQTT_V5) {
            CU_ASSERT_EQUAL(memcmp(r->props.p, props, sizeof props), 0);
            CU_ASSERT_EQUAL(memcmp(r->will_props.p, wprops, sizeof wprops), 0);
        }
        if (c.version == TN_MQTT_V31)
            CU_ASSERT_EQUAL(memcmp(b.data + 4, "MQIsdp", 6), 0);
        tn_buf_fini(&b);
    }
}

static void
test_roundtrip_publish(void)
{
    static const uint8_t props[] = {0x01, 1, 0x23, 0, 3}; /* format indicator, topic alias */
    const uint8_t versions[] = {TN_MQTT_V31, TN_MQTT_V311, TN_MQTT_V5};

    for (size_t v = 0; v < 3; v++) {
        for (uint8_t qos = 0; qos <= 2; qos++) {
            tn_mqtt_publish p = {.qos = qos,
                                 .dup = qos > 0,
                                 .retain = qos == 1,
                                 .topic = B("sensors/\xe2\x82\xac"),
                                 .pid = qos ? 65535 : 0,
                                 .payload = B("")};
            if (versions[v] == TN_MQTT_V5)
                p.props = (tn_mqtt_bytes){props, sizeof props};
            tn_buf b;
            tn_mqtt_packet pkt;
            tn_buf_init(&b, 256);
            CU_ASSERT_EQUAL_FATAL(tn_mqtt_encode_publish(&b, versions[v], &p), 0);
            CU_ASSERT_EQUAL_FATAL(decode1(SERVER, versions[v], b.data, b.len, &pkt), 0);
            CU_ASSERT_EQUAL(pkt.type, TN_MQTT_PUBLISH);
            CU_ASSERT_EQUAL(pkt.u.publish.qos, qos);
            CU_ASSERT_EQUAL(pkt.u.publish.dup, p.dup);
            CU_ASSERT_EQUAL(pkt.u.publish.retain, p.retain);
            CU_ASSERT_EQUAL(pkt.u.publish.pid, p.pid);
            CU_ASSERT_TRUE(bytes_eq(pkt.u.publish.topic, "sensors/\xe2\x82\xac"));
            CU_ASSERT_EQUAL(pkt.u.publish.payload.len, 0);
            CU_ASSERT_EQUAL(pkt.u.publish.props.len, p.props.len);
            /* The client role decodes the same bytes. */
            CU_ASSERT_EQUAL(decode1(CLIENT, versions[v], b.data, b.len, &pkt), 0);
            tn_buf_fini(&b);
        }
    }
}

static void
test_roundtrip_acks(void)
{
    const tn_mqtt_type types[] = {TN_MQTT_PUBACK, TN_MQTT_PUBREC, TN_MQTT_PUBREL, TN_MQTT_PUBCOMP,
                                  TN_MQTT_UNSUBACK};
    const uint8_t versions[] = {TN_MQTT_V311, TN_MQTT_V5};

    for (size_t v = 0; v < 2; v++) {
        for (size_t i = 0; i < 5; i++) {
            tn_buf b;
            tn_mqtt_packet pkt;
            uint8_t rc = versions[v] == TN_MQTT_V5 ? 0x92 : 0;
            tn_mqtt_role role = types[i] == TN_MQTT_UNSUBACK ? CLIENT : SERVER;
            tn_buf_init(&b, 16);
            CU_ASSERT_EQUAL_FATAL(tn_mqtt_encode_ack(&b, versions[v], types[i], 42, rc), 0);
            CU_ASSERT_EQUAL_FATAL(decode1(role, versions[v], b.data, b.len, &pkt), 0);
            CU_ASSERT_EQUAL(pkt.type, types[i]);
            CU_ASSERT_EQUAL(pkt.flags, types[i] == TN_MQTT_PUBREL ? 2 : 0);
            if (types[i] == TN_MQTT_UNSUBACK && versions[v] == TN_MQTT_V5) {
                tn_mqtt_list_iter it;
                tn_mqtt_bytes f;
                uint8_t o;
                CU_ASSERT_EQUAL(pkt.u.list.pid, 42);
                CU_ASSERT_EQUAL(pkt.u.list.count, 1);
                CU_ASSERT_TRUE(tn_mqtt_list_begin(&pkt.u.list, &it));
                CU_ASSERT_TRUE(tn_mqtt_list_next(&it, TN_MQTT_UNSUBACK, &f, &o));
                CU_ASSERT_EQUAL(o, rc);
                CU_ASSERT_FALSE(tn_mqtt_list_next(&it, TN_MQTT_UNSUBACK, &f, &o));
            } else {
                CU_ASSERT_EQUAL(pkt.u.ack.pid, 42);
                CU_ASSERT_EQUAL(pkt.u.ack.rc, rc);
            }
            tn_buf_fini(&b);
        }
    }
}

static void
test_roundtrip_connack(void)
{
    tn_buf b;
    tn_mqtt_packet pkt;

    tn_buf_init(&b, 16);
    CU_ASSERT_EQUAL(tn_mqtt_encode_connack(&b, TN_MQTT_V311, true, 0), 0);
    CU_ASSERT_EQUAL_FATAL(decode1(CLIENT, TN_MQTT_V311, b.data, b.len, &pkt), 0);
    CU_ASSERT_EQUAL(pkt.type, TN_MQTT_CONNACK);
    CU_ASSERT_TRUE(pkt.u.connack.session_present);
    CU_ASSERT_EQUAL(pkt.u.connack.rc, 0);
    tn_buf_reset(&b);
    CU_ASSERT_EQUAL(tn_mqtt_encode_connack(&b, TN_MQTT_V5, false, 0x87), 0);
    CU_ASSERT_EQUAL_FATAL(decode1(CLIENT, TN_MQTT_V5, b.data, b.len, &pkt), 0);
    CU_ASSERT_EQUAL(pkt.u.connack.rc, 0x87);
    CU_ASSERT_EQUAL(pkt.u.connack.props.len, 0);
    tn_buf_fini(&b);
}

static void
test_roundtrip_lists(void)
{
    tn_mqtt_bytes f[] = {B("a/b"), B("+/x/#"), B("$SYS/#")};
    uint8_t o[] = {0, 1, 2};
    uint8_t rcs[] = {0, 2, TN_MQTT_SUBACK_FAILURE};
    const uint8_t versions[] = {TN_MQTT_V311, TN_MQTT_V5};

    for (size_t v = 0; v < 2; v++) {
        tn_buf b;
        tn_mqtt_packet pkt;
        tn_mqtt_list_iter it;
        tn_mqtt_bytes got;
        uint8_t opt;
        uint32_t n;

        tn_buf_init(&b, 256);
        CU_ASSERT_EQUAL(tn_mqtt_encode_subscribe(&b, versions[v], 9, f, o, 3), 0);
        CU_ASSERT_EQUAL_FATAL(decode1(SERVER, versions[v], b.data, b.len, &pkt), 0);
        CU_ASSERT_EQUAL(pkt.type, TN_MQTT_SUBSCRIBE);
        CU_ASSERT_EQUAL(pkt.flags, 2);
        CU_ASSERT_EQUAL(pkt.u.list.pid, 9);
        CU_ASSERT_EQUAL(pkt.u.list.count, 3);
        CU_ASSERT_TRUE(tn_mqtt_list_begin(&pkt.u.list, &it));
        for (n = 0; tn_mqtt_list_next(&it, TN_MQTT_SUBSCRIBE, &got, &opt); n++) {
            CU_ASSERT_EQUAL(got.len, f[n].len);
            CU_ASSERT_EQUAL(memcmp(got.p, f[n].p, got.len), 0);
            CU_ASSERT_EQUAL(opt, o[n]);
        }
        CU_ASSERT_EQUAL(n, 3);

        tn_buf_reset(&b);
        CU_ASSERT_EQUAL(tn_mqtt_encode_unsubscribe(&b, versions[v], 10, f, 3), 0);
        CU_ASSERT_EQUAL_FATAL(decode1(SERVER, versions[v], b.data, b.len, &pkt), 0);
        CU_ASSERT_EQUAL(pkt.type, TN_MQTT_UNSUBSCRIBE);
        CU_ASSERT_EQUAL(pkt.u.list.count, 3);
        CU_ASSERT_TRUE(tn_mqtt_list_begin(&pkt.u.list, &it));
        for (n = 0; tn_mqtt_list_next(&it, TN_MQTT_UNSUBSCRIBE, &got, &opt); n++) {
            CU_ASSERT_EQUAL(got.len, f[n].len);
            CU_ASSERT_EQUAL(memcmp(got.p, f[n].p, got.len), 0);
            CU_ASSERT_EQUAL(opt, 0);
        }
        CU_ASSERT_EQUAL(n, 3);

        tn_buf_reset(&b);
        CU_ASSERT_EQUAL(tn_mqtt_encode_suback(&b, versions[v], 11, rcs, 3), 0);
        CU_ASSERT_EQUAL_FATAL(decode1(CLIENT, versions[v], b.data, b.len, &pkt), 0);
        CU_ASSERT_EQUAL(pkt.type, TN_MQTT_SUBACK);
        CU_ASSERT_EQUAL(pkt.u.list.pid, 11);
        CU_ASSERT_EQUAL(pkt.u.list.count, 3);
        CU_ASSERT_TRUE(tn_mqtt_list_begin(&pkt.u.list, &it));
        for (n = 0; tn_mqtt_list_next(&it, TN_MQTT_SUBACK, &got, &opt); n++) {
            CU_ASSERT_EQUAL(got.len, 0);
            CU_ASSERT_EQUAL(opt, rcs[n]);
        }
        CU_ASSERT_EQUAL(n, 3);
        tn_buf_fini(&b);
    }
}

static void
test_roundtrip_simple(void)
{
    const tn_mqtt_type types[] = {TN_MQTT_PINGREQ, TN_MQTT_PINGRESP, TN_MQTT_DISCONNECT};
    const tn_mqtt_role roles[] = {SERVER, CLIENT, SERVER};

    for (size_t i = 0; i < 3; i++) {
        tn_buf b;
        tn_mqtt_packet pkt;
        tn_buf_init(&b, 4);
        CU_ASSERT_EQUAL(tn_mqtt_encode_simple(&b, types[i]), 0);
        CU_ASSERT_EQUAL(b.len, 2);
        CU_ASSERT_EQUAL_FATAL(decode1(roles[i], TN_MQTT_V311, b.data, b.len, &pkt), 0);
        CU_ASSERT_EQUAL(pkt.type, types[i]);
        CU_ASSERT_EQUAL_FATAL(decode1(roles[i], TN_MQTT_V5, b.data, b.len, &pkt), 0);
        CU_ASSERT_EQUAL(pkt.u.rc, 0);
        tn_buf_fini(&b);
    }
    tn_buf b;
    tn_buf_init(&b, 4);
    CU_ASSERT_EQUAL(tn_mqtt_encode_simple(&b, TN_MQTT_PUBLISH), TN_EINVAL);
    CU_ASSERT_EQUAL(b.len, 0);
    tn_buf_fini(&b);
}

/* --- Incremental decoding, limits, several packets in one buffer --- */

static void
test_incremental(void)
{
    tn_buf b;
    tn_mqtt_decoder d;
    tn_mqtt_packet pkt;
    size_t used;
    uint8_t payload[300];

    /* 300 bytes of payload: a 2-byte remaining length, so the header itself arrives in parts. */
    memset(payload, 'x', sizeof payload);
    tn_mqtt_publish p = {.qos = 2, .topic = B("t"), .pid = 5, .payload = {payload, sizeof payload}};
    tn_buf_init(&b, 1024);
    CU_ASSERT_EQUAL_FATAL(tn_mqtt_encode_publish(&b, TN_MQTT_V311, &p), 0);
    CU_ASSERT_EQUAL(b.data[1] & 0x80, 0x80);
    tn_mqtt_decoder_init(&d, SERVER, 1024);
    for (size_t n = 0; n < b.len; n++) {
        /* An exact-size copy, so ASan would catch a read past the bytes given. */
        uint8_t *part = malloc(n ? n : 1);
        memcpy(part, b.data, n);
        CU_ASSERT_EQUAL(tn_mqtt_decode(&d, part, n, &used, &pkt), TN_EAGAIN);
        CU_ASSERT_EQUAL(used, 0);
        CU_ASSERT_PTR_NULL(d.error);
        free(part);
    }
    CU_ASSERT_EQUAL(tn_mqtt_decode(&d, b.data, b.len, &used, &pkt), 0);
    CU_ASSERT_EQUAL(used, b.len);
    CU_ASSERT_EQUAL(pkt.u.publish.payload.len, 300);
    tn_buf_fini(&b);
}

static void
test_stream_of_packets(void)
{
    tn_buf b;
    tn_mqtt_decoder d;
    tn_mqtt_packet pkt;
    size_t used, off = 0;
    tn_mqtt_publish p = {.topic = B("a"), .payload = B("1")};
    tn_mqtt_bytes f = B("a");
    uint8_t o = 1;

    tn_buf_init(&b, 1024);
    CU_ASSERT_EQUAL(tn_buf_append(&b, mosq_connect, sizeof mosq_connect), 0);
    CU_ASSERT_EQUAL(tn_mqtt_encode_subscribe(&b, TN_MQTT_V311, 1, &f, &o, 1), 0);
    CU_ASSERT_EQUAL(tn_mqtt_encode_publish(&b, TN_MQTT_V311, &p), 0);
    CU_ASSERT_EQUAL(tn_mqtt_encode_simple(&b, TN_MQTT_PINGREQ), 0);
    CU_ASSERT_EQUAL(tn_mqtt_encode_simple(&b, TN_MQTT_DISCONNECT), 0);
    const tn_mqtt_type want[] = {TN_MQTT_CONNECT, TN_MQTT_SUBSCRIBE, TN_MQTT_PUBLISH,
                                 TN_MQTT_PINGREQ, TN_MQTT_DISCONNECT};
    tn_mqtt_decoder_init(&d, SERVER, 1024);
    for (size_t i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL_FATAL(tn_mqtt_decode(&d, b.data + off, b.len - off, &used, &pkt), 0);
        CU_ASSERT_EQUAL(pkt.type, want[i]);
        off += used;
    }
    CU_ASSERT_EQUAL(off, b.len);
    CU_ASSERT_EQUAL(tn_mqtt_decode(&d, b.data + off, 0, &used, &pkt), TN_EAGAIN);
    /* A second CONNECT on the same connection is a protocol violation [MQTT-3.1.0-2]. */
    CU_ASSERT_EQUAL(tn_mqtt_decode(&d, mosq_connect, sizeof mosq_connect, &used, &pkt), TN_EPROTO);
    CU_ASSERT_EQUAL(d.version, TN_MQTT_V311);
    tn_buf_fini(&b);
}

static void
test_oversize_from_header(void)
{
    tn_mqtt_decoder d;
    tn_mqtt_packet pkt;
    size_t used;

    /* Remaining length 200 announced; only the 3 header bytes are here. */
    tn_mqtt_decoder_init(&d, SERVER, 100);
    CU_ASSERT_EQUAL(tn_mqtt_decode(&d, BYTES(0x30, 0xc8, 0x01), &used, &pkt), TN_ETOOBIG);
    CU_ASSERT_EQUAL(used, 0);
    CU_ASSERT_PTR_NOT_NULL(d.error);
    /* The limit is on the whole packet: 2 + 98 = 100 fits, 2 + 99 does not. */
    CU_ASSERT_EQUAL(tn_mqtt_decode(&d, BYTES(0x30, 98), &used, &pkt), TN_EAGAIN);
    CU_ASSERT_EQUAL(tn_mqtt_decode(&d, BYTES(0x30, 99), &used, &pkt), TN_ETOOBIG);
    /* The largest remaining length, 4 bytes. */
    CU_ASSERT_EQUAL(tn_mqtt_decode(&d, BYTES(0x30, 0xff, 0xff, 0xff, 0x7f), &used, &pkt),
                    TN_ETOOBIG);
}

static void
test_varint(void)
{
    tn_mqtt_packet pkt;

    CU_ASSERT_EQUAL(tn_mqtt_varint_size(0), 1);
    CU_ASSERT_EQUAL(tn_mqtt_varint_size(127), 1);
    CU_ASSERT_EQUAL(tn_mqtt_varint_size(128), 2);
    CU_ASSERT_EQUAL(tn_mqtt_varint_size(16383), 2);
    CU_ASSERT_EQUAL(tn_mqtt_varint_size(16384), 3);
    CU_ASSERT_EQUAL(tn_mqtt_varint_size(2097151), 3);
    CU_ASSERT_EQUAL(tn_mqtt_varint_size(2097152), 4);
    CU_ASSERT_EQUAL(tn_mqtt_varint_size(268435455), 4);
    CU_ASSERT_EQUAL(tn_mqtt_varint_size(268435456), 0);

    /* A fifth length byte is malformed, seen as soon as the 4th still continues. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x30, 0x80, 0x80, 0x80, 0x80));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x30, 0xff, 0xff, 0xff, 0xff, 0x01));
    /* Non-minimal encodings are accepted on input: PINGREQ with length 0 in two bytes. */
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V311, BYTES(0xc0, 0x80, 0x00), &pkt), 0);
    CU_ASSERT_EQUAL(pkt.type, TN_MQTT_PINGREQ);

    /* Encoders use the minimum: remaining length 16384 takes 3 bytes. */
    static uint8_t big[16384 - 5];
    tn_mqtt_publish p = {.topic = B("abc"), .payload = {big, sizeof big}};
    tn_buf b;
    tn_buf_init(&b, 20000);
    CU_ASSERT_EQUAL(tn_mqtt_encode_publish(&b, TN_MQTT_V311, &p), 0);
    CU_ASSERT_EQUAL(b.len, 1 + 3 + 16384);
    CU_ASSERT_EQUAL(b.data[1], 0x80);
    CU_ASSERT_EQUAL(b.data[2], 0x80);
    CU_ASSERT_EQUAL(b.data[3], 0x01);
    tn_buf_fini(&b);
}

static void
test_encode_too_small(void)
{
    tn_buf b;
    tn_mqtt_publish p = {.qos = 1, .topic = B("a/b"), .pid = 1, .payload = B("hi")};
    tn_mqtt_bytes f = B("a/b");
    uint8_t o = 0;

    /* 5 bytes already in a buffer of 15: the 11-byte PUBLISH does not fit. */
    tn_buf_init(&b, 15);
    CU_ASSERT_EQUAL(tn_buf_append(&b, "hello", 5), 0);
    CU_ASSERT_EQUAL(tn_mqtt_encode_publish(&b, TN_MQTT_V311, &p), TN_ETOOBIG);
    CU_ASSERT_EQUAL(b.len, 5);
    CU_ASSERT_EQUAL(tn_mqtt_encode_connect(
                        &b, &(tn_mqtt_connect){.version = TN_MQTT_V311, .client_id = B("abc")}),
                    TN_ETOOBIG);
    CU_ASSERT_EQUAL(tn_mqtt_encode_subscribe(&b, TN_MQTT_V311, 1, &f, &o, 1), 0);
    CU_ASSERT_EQUAL(b.len, 5 + 10);
    CU_ASSERT_EQUAL(tn_mqtt_encode_simple(&b, TN_MQTT_PINGREQ), TN_ETOOBIG);
    CU_ASSERT_EQUAL(tn_mqtt_encode_ack(&b, TN_MQTT_V311, TN_MQTT_PUBACK, 1, 0), TN_ETOOBIG);
    CU_ASSERT_EQUAL(tn_mqtt_encode_connack(&b, TN_MQTT_V311, false, 0), TN_ETOOBIG);
    CU_ASSERT_EQUAL(tn_mqtt_encode_suback(&b, TN_MQTT_V311, 1, &o, 1), TN_ETOOBIG);
    CU_ASSERT_EQUAL(tn_mqtt_encode_unsubscribe(&b, TN_MQTT_V311, 1, &f, 1), TN_ETOOBIG);
    CU_ASSERT_EQUAL(b.len, 15);
    CU_ASSERT_EQUAL(memcmp(b.data, "hello", 5), 0);
    tn_buf_fini(&b);

    /* What no packet can carry is TN_EINVAL, buffer unchanged. */
    tn_buf_init(&b, 100);
    p.qos = 3;
    CU_ASSERT_EQUAL(tn_mqtt_encode_publish(&b, TN_MQTT_V311, &p), TN_EINVAL);
    CU_ASSERT_EQUAL(tn_mqtt_encode_subscribe(&b, TN_MQTT_V311, 1, &f, &o, 0), TN_EINVAL);
    CU_ASSERT_EQUAL(tn_mqtt_encode_ack(&b, TN_MQTT_V311, TN_MQTT_PUBLISH, 1, 0), TN_EINVAL);
    CU_ASSERT_EQUAL(tn_mqtt_encode_connack(&b, 6, false, 0), TN_EINVAL);
    CU_ASSERT_EQUAL(b.len, 0);
    tn_buf_fini(&b);
}

/* --- Fixed header rules --- */

static void
test_reserved_flags(void)
{
    tn_mqtt_packet pkt;

    /* [MQTT-2.2.2-2]: PUBACK with a flag, PINGREQ with a flag, rejected on the first byte. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x41));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0xc8, 0x00));
    expect_proto(SERVER, 0, BYTES(0x11));
    /* [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]: 0010 exactly. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x60, 0x02, 0x00, 0x01));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x8a, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0xa0, 0x05, 0x00, 0x01, 0x00, 0x01, 'a'));
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V311, BYTES(0x62, 0x02, 0x00, 0x01), &pkt), 0);
    /* MQTT 3.1 retries carry DUP on these QoS 1 packets. */
    CU_ASSERT_EQUAL(
        decode1(SERVER, TN_MQTT_V31, BYTES(0x8a, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00), &pkt),
        0);
    /* [MQTT-3.3.1-4]: QoS 3; [MQTT-3.3.1-2]: DUP with QoS 0. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x36));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x38, 0x03, 0x00, 0x01, 'a'));
    /* Type 0, and type 15 before 5.0. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x00, 0x00));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0xf0, 0x00));
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0xf0, 0x00));
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V5, BYTES(0xf0, 0x00), &pkt), 0);
    CU_ASSERT_EQUAL(pkt.type, TN_MQTT_AUTH);
}

static void
test_roles(void)
{
    tn_mqtt_packet pkt;

    /* A server never receives CONNACK, SUBACK, UNSUBACK, PINGRESP. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x20, 0x02, 0x00, 0x00));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x90, 0x03, 0x00, 0x01, 0x00));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0xb0, 0x02, 0x00, 0x01));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0xd0, 0x00));
    /* A client never receives CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ (nor DISCONNECT < 5). */
    expect_proto(CLIENT, TN_MQTT_V311, mosq_connect, sizeof mosq_connect);
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00));
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0xa2, 0x05, 0x00, 0x01, 0x00, 0x01, 'a'));
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0xc0, 0x00));
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0xe0, 0x00));
    CU_ASSERT_EQUAL(decode1(CLIENT, TN_MQTT_V5, BYTES(0xe0, 0x01, 0x8b), &pkt), 0);
    CU_ASSERT_EQUAL(pkt.u.rc, 0x8b);
    /* Both receive PUBLISH and the acks. */
    CU_ASSERT_EQUAL(decode1(CLIENT, TN_MQTT_V311, BYTES(0x50, 0x02, 0x00, 0x01), &pkt), 0);
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V311, BYTES(0x50, 0x02, 0x00, 0x01), &pkt), 0);
}

/* --- CONNECT rules --- */

static void
test_connect_protocol(void)
{
    tn_mqtt_packet pkt;

    /* [MQTT-3.1.2-1]: unknown name, close without CONNACK. */
    expect_proto_rc(
        SERVER, 0,
        BYTES(0x10, 0x0d, 0x00, 0x04, 'M', 'Q', 'T', 'X', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, 'c'),
        -1);
    /* [MQTT-3.1.2-2]: known name, unsupported level: CONNACK 1. */
    expect_proto_rc(
        SERVER, 0,
        BYTES(0x10, 0x0d, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x06, 0x02, 0x00, 0x3c, 0x00, 0x01, 'c'),
        TN_MQTT_CONNACK_BAD_VERSION);
    expect_proto_rc(
        SERVER, 0,
        BYTES(0x10, 0x0d, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x03, 0x02, 0x00, 0x3c, 0x00, 0x01, 'c'),
        TN_MQTT_CONNACK_BAD_VERSION);
    expect_proto_rc(SERVER, 0,
                    BYTES(0x10, 0x0f, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x04, 0x02, 0x00,
                          0x3c, 0x00, 0x01, 'c'),
                    TN_MQTT_CONNACK_BAD_VERSION);
    /* MQIsdp level 3 is MQTT 3.1. */
    CU_ASSERT_EQUAL(decode1(SERVER, 0,
                            BYTES(0x10, 0x0f, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x03, 0x02,
                                  0x00, 0x3c, 0x00, 0x01, 'c'),
                            &pkt),
                    0);
    CU_ASSERT_EQUAL(pkt.u.connect.version, TN_MQTT_V31);
    /* Truncated before the level: no CONNACK. */
    expect_proto_rc(SERVER, 0, BYTES(0x10, 0x06, 0x00, 0x04, 'M', 'Q', 'T', 'T'), -1);
}

/* A 3.1.1 CONNECT with the given flags byte and payload after the client id "c". The views in
 * *pkt stay valid until the next call. */
static int
connect_with(uint8_t flags, const uint8_t *rest, size_t n, tn_mqtt_packet *pkt, int *connack_rc)
{
    static uint8_t buf[256];
    tn_mqtt_decoder d;
    size_t used;

    memcpy(buf,
           "\x10\x00\x00\x04MQTT\x04\x00\x00\x3c\x00\x01"
           "c",
           15);
    buf[1] = (uint8_t)(13 + n); /* remaining length */
    buf[9] = flags;
    if (n > 0)
        memcpy(buf + 15, rest, n);
    tn_mqtt_decoder_init(&d, SERVER, 1024);
    int rc = tn_mqtt_decode(&d, buf, 15 + n, &used, pkt);
    *connack_rc = d.connack_rc;
    if (rc != 0)
        CU_ASSERT_PTR_NOT_NULL(d.error);
    return rc;
}

static void
test_connect_flags(void)
{
    tn_mqtt_packet pkt;
    int crc;
    static const uint8_t will[] = {0x00, 0x01, 'w', 0x00, 0x00};
    static const uint8_t user[] = {0x00, 0x01, 'u'};
    static const uint8_t pass[] = {0x00, 0x01, 'p'};

    CU_ASSERT_EQUAL(connect_with(0x02, NULL, 0, &pkt, &crc), 0);
    /* [MQTT-3.1.2-3] reserved bit. */
    CU_ASSERT_EQUAL(connect_with(0x03, NULL, 0, &pkt, &crc), TN_EPROTO);
    CU_ASSERT_EQUAL(crc, -1);
    /* [MQTT-3.1.2-13] will QoS without will; [MQTT-3.1.2-15] will retain without will. */
    CU_ASSERT_EQUAL(connect_with(0x0a, NULL, 0, &pkt, &crc), TN_EPROTO);
    CU_ASSERT_EQUAL(connect_with(0x22, NULL, 0, &pkt, &crc), TN_EPROTO);
    /* [MQTT-3.1.2-14] will QoS 3. */
    CU_ASSERT_EQUAL(connect_with(0x1e, will, sizeof will, &pkt, &crc), TN_EPROTO);
    CU_ASSERT_EQUAL(connect_with(0x36, will, sizeof will, &pkt, &crc), 0);
    CU_ASSERT_EQUAL(pkt.u.connect.will_qos, 2);
    CU_ASSERT_TRUE(pkt.u.connect.will_retain);
    /* [MQTT-3.1.2-22] password without username. */
    CU_ASSERT_EQUAL(connect_with(0x42, pass, sizeof pass, &pkt, &crc), TN_EPROTO);
    CU_ASSERT_EQUAL(connect_with(0x82, user, sizeof user, &pkt, &crc), 0);
    CU_ASSERT_TRUE(pkt.u.connect.has_username && !pkt.u.connect.has_password);
    uint8_t both[] = {0x00, 0x01, 'u', 0x00, 0x01, 'p'};
    CU_ASSERT_EQUAL(connect_with(0xc2, both, sizeof both, &pkt, &crc), 0);
    CU_ASSERT_TRUE(bytes_eq(pkt.u.connect.password, "p"));
    /* Missing fields the flags announce, and trailing bytes. */
    CU_ASSERT_EQUAL(connect_with(0xc2, user, sizeof user, &pkt, &crc), TN_EPROTO);
    CU_ASSERT_EQUAL(connect_with(0x06, NULL, 0, &pkt, &crc), TN_EPROTO);
    CU_ASSERT_EQUAL(connect_with(0x02, user, sizeof user, &pkt, &crc), TN_EPROTO);
    CU_ASSERT_EQUAL(connect_with(0x82, BYTES(0x00, 0x05, 'u'), &pkt, &crc), TN_EPROTO);
    CU_ASSERT_EQUAL(crc, -1);
}

static void
test_connect_strings(void)
{
    tn_mqtt_packet pkt;
    int crc;

    /* [MQTT-3.3.2-2] will topic with wildcards; [MQTT-4.7.3-1] empty will topic. */
    CU_ASSERT_EQUAL(connect_with(0x06, BYTES(0x00, 0x03, 'a', '/', '#', 0x00, 0x00), &pkt, &crc),
                    TN_EPROTO);
    CU_ASSERT_EQUAL(connect_with(0x06, BYTES(0x00, 0x01, '+', 0x00, 0x00), &pkt, &crc), TN_EPROTO);
    CU_ASSERT_EQUAL(connect_with(0x06, BYTES(0x00, 0x00, 0x00, 0x00), &pkt, &crc), TN_EPROTO);
    /* [MQTT-3.1.3-10] will topic UTF-8 (a surrogate), [MQTT-3.1.3-11] username UTF-8. */
    CU_ASSERT_EQUAL(connect_with(0x06, BYTES(0x00, 0x03, 0xed, 0xa0, 0x80, 0x00, 0x00), &pkt, &crc),
                    TN_EPROTO);
    CU_ASSERT_EQUAL(connect_with(0x82, BYTES(0x00, 0x02, 'u', 0x00), &pkt, &crc), TN_EPROTO);
    /* The password and will message are binary. */
    CU_ASSERT_EQUAL(connect_with(0xc6,
                                 BYTES(0x00, 0x01, 'w', 0x00, 0x02, 0x00, 0xff, 0x00, 0x01, 'u',
                                       0x00, 0x02, 0x00, 0xff),
                                 &pkt, &crc),
                    0);

    /* [MQTT-3.1.3-4] client id UTF-8: an overlong '/' (C0 AF). */
    expect_proto(SERVER, 0,
                 BYTES(0x10, 0x0e, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, 0x00,
                       0x02, 0xc0, 0xaf));
    /* [MQTT-3.1.3-8] empty client id needs clean session: CONNACK 2. */
    expect_proto_rc(
        SERVER, 0,
        BYTES(0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x00, 0x00, 0x3c, 0x00, 0x00),
        TN_MQTT_CONNACK_ID_REJECTED);
    CU_ASSERT_EQUAL(decode1(SERVER, 0,
                            BYTES(0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00,
                                  0x3c, 0x00, 0x00),
                            &pkt),
                    0);
    /* In 5.0 the server assigns one either way. */
    CU_ASSERT_EQUAL(decode1(SERVER, 0,
                            BYTES(0x10, 0x0d, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x00, 0x00,
                                  0x3c, 0x00, 0x00, 0x00),
                            &pkt),
                    0);
}

static void
test_connect_v31_lenient(void)
{
    tn_mqtt_packet pkt;

    /* MQTT 3.1 clients may announce a username and password and send neither. */
    CU_ASSERT_EQUAL(decode1(SERVER, 0,
                            BYTES(0x10, 0x0f, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x03, 0xc2,
                                  0x00, 0x3c, 0x00, 0x01, 'c'),
                            &pkt),
                    0);
    CU_ASSERT_FALSE(pkt.u.connect.has_username);
    CU_ASSERT_FALSE(pkt.u.connect.has_password);
    /* But half a field is still malformed, and 3.1 needs a client id. */
    expect_proto(SERVER, 0,
                 BYTES(0x10, 0x10, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x03, 0xc2, 0x00, 0x3c,
                       0x00, 0x01, 'c', 0x00));
    expect_proto_rc(SERVER, 0,
                    BYTES(0x10, 0x0e, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x03, 0x02, 0x00,
                          0x3c, 0x00, 0x00),
                    TN_MQTT_CONNACK_ID_REJECTED);
}

static void
test_connect_v5(void)
{
    tn_mqtt_packet pkt;
    tn_mqtt_decoder d;
    size_t used;

    /* Properties (session expiry 10), will properties (will delay 1), password without
     * username (allowed in 5.0). */
    static const uint8_t v5[] = {0x10, 0x22, 0x00, 0x04, 'M',  'Q',  'T',  'T',  0x05,
                                 0x46, 0x00, 0x3c, 0x05, 0x11, 0x00, 0x00, 0x00, 0x0a,
                                 0x00, 0x01, 'c',  0x05, 0x18, 0x00, 0x00, 0x00, 0x01,
                                 0x00, 0x01, 'w',  0x00, 0x01, 'x',  0x00, 0x01, 'p'};
    tn_mqtt_decoder_init(&d, SERVER, 1024);
    CU_ASSERT_EQUAL_FATAL(tn_mqtt_decode(&d, v5, sizeof v5, &used, &pkt), 0);
    CU_ASSERT_EQUAL(d.version, TN_MQTT_V5);
    CU_ASSERT_EQUAL(pkt.u.connect.props.len, 5);
    CU_ASSERT_PTR_EQUAL(pkt.u.connect.props.p, v5 + 13);
    CU_ASSERT_EQUAL(pkt.u.connect.will_props.len, 5);
    CU_ASSERT_PTR_EQUAL(pkt.u.connect.will_props.p, v5 + 22);
    CU_ASSERT_TRUE(bytes_eq(pkt.u.connect.will_topic, "w"));
    CU_ASSERT_TRUE(pkt.u.connect.has_password && !pkt.u.connect.has_username);

    /* Property length past the packet, unknown property 0x7f, truncated value. */
    expect_proto(SERVER, 0,
                 BYTES(0x10, 0x0e, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x3c, 0x09,
                       0x00, 0x01, 'c'));
    expect_proto(SERVER, 0,
                 BYTES(0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x3c, 0x02,
                       0x7f, 0x00, 0x00, 0x01, 'c'));
    expect_proto(SERVER, 0,
                 BYTES(0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x3c, 0x02,
                       0x11, 0x00, 0x00, 0x01, 'c'));
    /* A user property whose value is not UTF-8. */
    expect_proto(SERVER, 0,
                 BYTES(0x10, 0x15, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x3c, 0x07,
                       0x26, 0x00, 0x01, 'k', 0x00, 0x01, 0xff, 0x00, 0x01, 'c'));
}

/* --- PUBLISH, SUBSCRIBE, UNSUBSCRIBE, acks --- */

static void
test_publish_rules(void)
{
    tn_mqtt_packet pkt;

    /* [MQTT-4.7.3-1] empty topic (allowed in 5.0 with a topic alias). */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x30, 0x03, 0x00, 0x00, 'x'));
    /* Views point into the input, so inputs read after decoding are named arrays. */
    static const uint8_t alias[] = {0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, 'x'};
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V5, alias, sizeof alias, &pkt), 0);
    CU_ASSERT_EQUAL(pkt.u.publish.props.len, 3);
    CU_ASSERT_TRUE(bytes_eq(pkt.u.publish.payload, "x"));
    /* [MQTT-3.3.2-2] wildcards in the topic name. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x30, 0x05, 0x00, 0x03, 'a', '/', '+'));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x30, 0x03, 0x00, 0x01, '#'));
    /* [MQTT-3.3.2-1] UTF-8: U+0000 in the topic. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x30, 0x04, 0x00, 0x02, 'a', 0x00));
    /* [MQTT-2.3.1-1] packet identifier 0 with QoS 1. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x32, 0x05, 0x00, 0x01, 'a', 0x00, 0x00));
    /* Truncated: topic length past the end, missing packet identifier. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x30, 0x03, 0x00, 0x05, 'a'));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x34, 0x04, 0x00, 0x01, 'a', 0x00));
    /* 5.0 properties past the end. */
    expect_proto(SERVER, TN_MQTT_V5, BYTES(0x30, 0x05, 0x00, 0x01, 'a', 0x05, 0x01));
}

static void
test_subscribe_rules(void)
{
    tn_mqtt_packet pkt;

    /* [MQTT-2.3.1-1] packet identifier 0. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x82, 0x06, 0x00, 0x00, 0x00, 0x01, 'a', 0x00));
    /* [MQTT-3.8.3-3] no filters. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x82, 0x02, 0x00, 0x01));
    /* [MQTT-3.8.3-4] QoS 3, upper bits set. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x03));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x04));
    /* [MQTT-3.8.3-1] UTF-8; [MQTT-4.7.3-1] empty filter; missing options byte. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x80, 0x00));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x82, 0x05, 0x00, 0x01, 0x00, 0x01, 'a'));
    /* Wildcard placement is the adapter's call (SUBACK 0x80), not a decode error. */
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V311,
                            BYTES(0x82, 0x07, 0x00, 0x01, 0x00, 0x02, 'a', '#', 0x00), &pkt),
                    0);
    /* 5.0: no local + retain as published + retain handling 2 are fine; retain handling 3 and
     * bits 6-7 are not. */
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V5,
                            BYTES(0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x2e), &pkt),
                    0);
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x2e));
    expect_proto(SERVER, TN_MQTT_V5, BYTES(0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x30));
    expect_proto(SERVER, TN_MQTT_V5, BYTES(0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x40));
    /* 5.0 subscription identifier property. */
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V5,
                            BYTES(0x82, 0x09, 0x00, 0x01, 0x02, 0x0b, 0x05, 0x00, 0x01, 'a', 0x01),
                            &pkt),
                    0);
    CU_ASSERT_EQUAL(pkt.u.list.props.len, 2);
    CU_ASSERT_EQUAL(pkt.u.list.count, 1);
}

static void
test_unsubscribe_rules(void)
{
    /* [MQTT-2.3.1-1], [MQTT-3.10.3-2], UTF-8, empty filter. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0xa2, 0x05, 0x00, 0x00, 0x00, 0x01, 'a'));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0xa2, 0x02, 0x00, 0x01));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0xa2, 0x06, 0x00, 0x01, 0x00, 0x02, 0xc3, 0x28));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0xa2, 0x04, 0x00, 0x01, 0x00, 0x00));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0xa2, 0x05, 0x00, 0x01, 0x00, 0x02, 'a'));
}

static void
test_ack_rules(void)
{
    tn_mqtt_packet pkt;

    /* 3.1.1: remaining length exactly 2, rejected from the header alone. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x40, 0x03));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x50, 0x01));
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0xb0, 0x03));
    /* Packet identifier 0. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0x70, 0x02, 0x00, 0x00));
    /* 5.0: 2 bytes, reason code, reason code + properties. */
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V5, BYTES(0x40, 0x02, 0x00, 0x01), &pkt), 0);
    CU_ASSERT_EQUAL(pkt.u.ack.rc, 0);
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V5, BYTES(0x40, 0x03, 0x00, 0x01, 0x10), &pkt), 0);
    CU_ASSERT_EQUAL(pkt.u.ack.rc, 0x10);
    static const uint8_t full[] = {0x62, 0x08, 0x00, 0x01, 0x92, 0x04, 0x1f, 0x00, 0x01, 'r'};
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V5, full, sizeof full, &pkt), 0);
    CU_ASSERT_EQUAL(pkt.u.ack.rc, 0x92);
    CU_ASSERT_TRUE(pkt.u.ack.props.len == 4 && pkt.u.ack.props.p[0] == 0x1f);
    expect_proto(SERVER, TN_MQTT_V5, BYTES(0x40, 0x01));
    expect_proto(SERVER, TN_MQTT_V5, BYTES(0x40, 0x05, 0x00, 0x01, 0x00, 0x02, 0x01));
    /* Trailing bytes after the properties. */
    expect_proto(SERVER, TN_MQTT_V5, BYTES(0x40, 0x06, 0x00, 0x01, 0x00, 0x00, 'x', 'y'));
}

static void
test_simple_rules(void)
{
    tn_mqtt_packet pkt;

    /* PINGREQ, DISCONNECT (3.1.1) and PINGRESP have no body. */
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0xc0, 0x01));
    expect_proto(SERVER, TN_MQTT_V311, BYTES(0xe0, 0x01));
    expect_proto(SERVER, 0, BYTES(0xe0, 0x01));
    expect_proto(CLIENT, TN_MQTT_V5, BYTES(0xd0, 0x01));
    /* 5.0 DISCONNECT and AUTH: reason code, then properties. */
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V5,
                            BYTES(0xe0, 0x07, 0x04, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00), &pkt),
                    0);
    CU_ASSERT_EQUAL(pkt.u.rc, 0x04);
    CU_ASSERT_EQUAL(decode1(SERVER, TN_MQTT_V5, BYTES(0xf0, 0x01, 0x18), &pkt), 0);
    CU_ASSERT_EQUAL(pkt.u.rc, 0x18);
    expect_proto(SERVER, TN_MQTT_V5, BYTES(0xe0, 0x03, 0x04, 0x01, 0x11));
}

static void
test_client_rules(void)
{
    tn_mqtt_packet pkt;

    /* [MQTT-3.9.3-2] SUBACK return codes 0, 1, 2, 0x80 only (any in 5.0). */
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0x90, 0x03, 0x00, 0x01, 0x03));
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0x90, 0x04, 0x00, 0x01, 0x00, 0x81));
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0x90, 0x02, 0x00, 0x01));
    CU_ASSERT_EQUAL(decode1(CLIENT, TN_MQTT_V5, BYTES(0x90, 0x04, 0x00, 0x01, 0x00, 0x87), &pkt),
                    0);
    /* CONNACK: [MQTT-3.2.2-1] reserved flags, reserved return code, [MQTT-3.2.2-4]. */
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0x20, 0x02, 0x02, 0x00));
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0x20, 0x02, 0x00, 0x06));
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0x20, 0x02, 0x01, 0x05));
    expect_proto(CLIENT, TN_MQTT_V311, BYTES(0x20, 0x03, 0x00, 0x00, 0x00));
    CU_ASSERT_EQUAL(decode1(CLIENT, TN_MQTT_V5,
                            BYTES(0x20, 0x07, 0x00, 0x00, 0x04, 0x24, 0x01, 0x25, 0x00), &pkt),
                    0);
    CU_ASSERT_EQUAL(pkt.u.connack.props.len, 4);
    /* 5.0 properties must fill their block exactly: here the block ends inside a property. */
    expect_proto(CLIENT, TN_MQTT_V5, BYTES(0x20, 0x06, 0x00, 0x00, 0x03, 0x24, 0x01, 0x25));
}

/* --- UTF-8 and filters --- */

static void
test_utf8(void)
{
    CU_ASSERT_TRUE(tn_mqtt_utf8_valid(u8(""), 0));
    CU_ASSERT_TRUE(tn_mqtt_utf8_valid(u8("a/b c"), 5));
    CU_ASSERT_TRUE(tn_mqtt_utf8_valid(u8("\xc2\x80"), 2));         /* U+0080 */
    CU_ASSERT_TRUE(tn_mqtt_utf8_valid(u8("\xdf\xbf"), 2));         /* U+07FF */
    CU_ASSERT_TRUE(tn_mqtt_utf8_valid(u8("\xe0\xa0\x80"), 3));     /* U+0800 */
    CU_ASSERT_TRUE(tn_mqtt_utf8_valid(u8("\xed\x9f\xbf"), 3));     /* U+D7FF */
    CU_ASSERT_TRUE(tn_mqtt_utf8_valid(u8("\xee\x80\x80"), 3));     /* U+E000 */
    CU_ASSERT_TRUE(tn_mqtt_utf8_valid(u8("\xef\xbf\xbf"), 3));     /* U+FFFF */
    CU_ASSERT_TRUE(tn_mqtt_utf8_valid(u8("\xf0\x90\x80\x80"), 4)); /* U+10000 */
    CU_ASSERT_TRUE(tn_mqtt_utf8_valid(u8("\xf4\x8f\xbf\xbf"), 4)); /* U+10FFFF */
    CU_ASSERT_TRUE(tn_mqtt_utf8_valid(u8("\x01\x7f"), 2));         /* controls: SHOULD NOT only */

    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("a\0b"), 3));             /* U+0000 [MQTT-1.5.3-2] */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xc0\x80"), 2));         /* overlong U+0000 */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xc1\xbf"), 2));         /* overlong U+007F */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xe0\x9f\xbf"), 3));     /* overlong U+07FF */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xf0\x8f\xbf\xbf"), 4)); /* overlong U+FFFF */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xed\xa0\x80"), 3));     /* U+D800 */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xed\xbf\xbf"), 3));     /* U+DFFF */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xf4\x90\x80\x80"), 4)); /* U+110000 */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xf5\x80\x80\x80"), 4));
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xff"), 1));
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\x80"), 1));         /* lone continuation */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xe2\x82"), 2));     /* truncated */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xe2\x82\xac"), 2)); /* cut by the length */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xe2\x28\xac"), 3)); /* bad 2nd byte */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xe2\x82\x28"), 3)); /* bad 3rd byte */
    CU_ASSERT_FALSE(tn_mqtt_utf8_valid(u8("\xf0\x90\x80"), 3)); /* truncated 4-byte */
}

static void
test_filter_valid(void)
{
    const char *good[] = {"#", "+", "a/+/b", "a/#", "+/+", "/", "a//b", "+/#", "$SYS/#", "a/b/c"};
    const char *bad[] = {"a#", "a/#/b", "a+", "", "+a", "a/b#", "#/", "a/+b/c", "##", "++"};

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        CU_ASSERT_TRUE(tn_mqtt_filter_valid(u8(good[i]), strlen(good[i])));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT_FALSE(tn_mqtt_filter_valid(u8(bad[i]), strlen(bad[i])));
}

static void
test_list_iter_bounds(void)
{
    /* A list whose raw bytes end mid-entry stops there instead of reading past the end. */
    static const uint8_t raw[] = {0x00, 0x01, 'a', 0x01, 0x00, 0x05, 'b'};
    tn_mqtt_list l = {.pid = 1, .count = 2, .raw = {raw, sizeof raw}};
    tn_mqtt_list empty = {0};
    tn_mqtt_list_iter it;
    tn_mqtt_bytes f;
    uint8_t o;

    CU_ASSERT_TRUE(tn_mqtt_list_begin(&l, &it));
    CU_ASSERT_TRUE(tn_mqtt_list_next(&it, TN_MQTT_SUBSCRIBE, &f, &o));
    CU_ASSERT_TRUE(bytes_eq(f, "a") && o == 1);
    CU_ASSERT_FALSE(tn_mqtt_list_next(&it, TN_MQTT_SUBSCRIBE, &f, &o));
    CU_ASSERT_FALSE(tn_mqtt_list_begin(&empty, &it));
    CU_ASSERT_FALSE(tn_mqtt_list_next(&it, TN_MQTT_SUBACK, &f, &o));
}

/* [issue 12] The head of a PUBLISH whose payload is still arriving. */
static void
test_publish_head(void)
{
    tn_mqtt_decoder d;
    tn_mqtt_decoder_init(&d, TN_MQTT_ROLE_SERVER, 1u << 20);
    tn_mqtt_packet pkt;
    size_t used = 99;
    /* QoS 1, topic "a/b", packet id 7, a payload of 300 bytes of which 2 are here. */
    static const uint8_t p[] = {0x32, 0xb3, 0x02, 0, 3, 'a', '/', 'b', 0, 7, 'x', 'y'};
    for (size_t k = 0; k < 10; k++) {
        CU_ASSERT_EQUAL(tn_mqtt_decode_publish_head(&d, p, k, &used, &pkt), TN_EAGAIN);
        CU_ASSERT_EQUAL(used, 0);
    }
    CU_ASSERT_EQUAL(tn_mqtt_decode_publish_head(&d, p, sizeof p, &used, &pkt), 0);
    CU_ASSERT_EQUAL(used, 10);
    CU_ASSERT_EQUAL(pkt.size, 3 + 307);
    CU_ASSERT_EQUAL(pkt.u.publish.qos, 1);
    CU_ASSERT_EQUAL(pkt.u.publish.pid, 7);
    CU_ASSERT_TRUE(pkt.u.publish.topic.len == 3 && !memcmp(pkt.u.publish.topic.p, "a/b", 3));
    CU_ASSERT_PTR_NULL(pkt.u.publish.payload.p);
    CU_ASSERT_EQUAL(pkt.u.publish.payload.len, 300);
    /* Not a PUBLISH; a wildcard topic; packet id 0; a topic longer than the packet; over the
     * maximum packet size. */
    static const uint8_t sub[] = {0x82, 0x05, 0, 1, 0, 1, 'a'};
    CU_ASSERT_EQUAL(tn_mqtt_decode_publish_head(&d, sub, sizeof sub, &used, &pkt), TN_EINVAL);
    static const uint8_t wild[] = {0x30, 0xb3, 0x02, 0, 3, 'a', '/', '#'};
    CU_ASSERT_EQUAL(tn_mqtt_decode_publish_head(&d, wild, sizeof wild, &used, &pkt), TN_EPROTO);
    static const uint8_t pid0[] = {0x32, 0xb3, 0x02, 0, 1, 'a', 0, 0};
    CU_ASSERT_EQUAL(tn_mqtt_decode_publish_head(&d, pid0, sizeof pid0, &used, &pkt), TN_EPROTO);
    static const uint8_t longtopic[] = {0x30, 0x04, 0, 9, 'a', 'b'};
    CU_ASSERT_EQUAL(tn_mqtt_decode_publish_head(&d, longtopic, sizeof longtopic, &used, &pkt),
                    TN_EPROTO);
    tn_mqtt_decoder_init(&d, TN_MQTT_ROLE_SERVER, 200);
    CU_ASSERT_EQUAL(tn_mqtt_decode_publish_head(&d, p, 3, &used, &pkt), TN_ETOOBIG);
}

int
main(void)
{
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"connect_known_bytes", test_connect_known_bytes},
        {"publish_head", test_publish_head},
        {"publish_qos1_known_bytes", test_publish_qos1_known_bytes},
        {"small_packets_known_bytes", test_small_packets_known_bytes},
        {"roundtrip_connect", test_roundtrip_connect},
        {"roundtrip_publish", test_roundtrip_publish},
        {"roundtrip_acks", test_roundtrip_acks},
        {"roundtrip_connack", test_roundtrip_connack},
        {"roundtrip_lists", test_roundtrip_lists},
        {"roundtrip_simple", test_roundtrip_simple},
        {"incremental", test_incremental},
        {"stream_of_packets", test_stream_of_packets},
        {"oversize_from_header", test_oversize_from_header},
        {"varint", test_varint},
        {"encode_too_small", test_encode_too_small},
        {"reserved_flags", test_reserved_flags},
        {"roles", test_roles},
        {"connect_protocol", test_connect_protocol},
        {"connect_flags", test_connect_flags},
        {"connect_strings", test_connect_strings},
        {"connect_v31_lenient", test_connect_v31_lenient},
        {"connect_v5", test_connect_v5},
        {"publish_rules", test_publish_rules},
        {"subscribe_rules", test_subscribe_rules},
        {"unsubscribe_rules", test_unsubscribe_rules},
        {"ack_rules", test_ack_rules},
        {"simple_rules", test_simple_rules},
        {"client_rules", test_client_rules},
        {"utf8", test_utf8},
        {"filter_valid", test_filter_valid},
        {"list_iter_bounds", test_list_iter_bounds},
    };

    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("mqtt_codec", NULL, NULL);
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    return tn_test_run();
}
