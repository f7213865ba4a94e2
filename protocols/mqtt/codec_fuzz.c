/*
 * Fuzz target for the MQTT codec. The input is a byte stream as a peer would send it; it is
 * decoded in both roles, as a fresh connection and as one that negotiated MQTT 5, with a small
 * and a large max_packet. For every packet decoded it checks the invariants the adapter relies
 * on (views inside the input, lists that walk to their count, a shorter prefix gives TN_EAGAIN),
 * then encodes the packet again and decodes the result, which must carry the same fields.
 * Invariant failures abort, which libFuzzer and tests/fuzz/replay.c report as a crash.
 */
#include "protocols/mqtt/codec.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

typedef struct span {
    const uint8_t *lo;
    const uint8_t *hi;
} span;

static void
check_view(span s, tn_mqtt_bytes b)
{
    if (b.len == 0)
        return;
    CHECK(b.p >= s.lo && b.p <= s.hi && b.len <= (size_t)(s.hi - b.p));
}

static bool
same(tn_mqtt_bytes a, tn_mqtt_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Walks a decoded list, checking every view, and returns its entries (malloc'd, caller frees). */
static uint32_t
walk_list(span s, const tn_mqtt_list *l, tn_mqtt_type type, tn_mqtt_bytes **filters, uint8_t **opts)
{
    tn_mqtt_list_iter it;
    tn_mqtt_bytes f;
    uint8_t o;
    uint32_t n = 0;

    check_view(s, l->raw);
    check_view(s, l->props);
    *filters = calloc(l->count ? l->count : 1, sizeof **filters);
    *opts = calloc(l->count ? l->count : 1, 1);
    CHECK(*filters && *opts);
    CHECK(tn_mqtt_list_begin(l, &it) == (l->count > 0));
    while (tn_mqtt_list_next(&it, type, &f, &o)) {
        CHECK(n < l->count);
        check_view(s, f);
        if (type == TN_MQTT_SUBSCRIBE) {
            CHECK((o & 3) != 3);
        }
        if (type == TN_MQTT_SUBSCRIBE || type == TN_MQTT_UNSUBSCRIBE) {
            CHECK(f.len > 0 && tn_mqtt_utf8_valid(f.p, f.len));
            (void)tn_mqtt_filter_valid(f.p, f.len);
        }
        (*filters)[n] = f;
        (*opts)[n] = o;
        n++;
    }
    CHECK(n == l->count);
    return n;
}

/* Decodes the single packet in b, which an encoder just wrote. */
static void
redecode(tn_mqtt_role role, uint8_t version, const tn_buf *b, tn_mqtt_packet *out)
{
    tn_mqtt_decoder d;
    size_t used;

    tn_mqtt_decoder_init(&d, role, b->len);
    d.version = version;
    CHECK(tn_mqtt_decode(&d, b->data, b->len, &used, out) == 0);
    CHECK(used == b->len);
}

/* Runs encode() into a buffer one byte too small: it must fail and leave the buffer alone. */
static void
check_too_small(size_t need, int (*encode)(tn_buf *, const void *), const void *arg)
{
    tn_buf b;

    tn_buf_init(&b, need - 1);
    CHECK(encode(&b, arg) == TN_ETOOBIG);
    CHECK(b.len == 0);
    tn_buf_fini(&b);
}

static int
enc_connect(tn_buf *b, const void *arg)
{
    return tn_mqtt_encode_connect(b, arg);
}

typedef struct pub_arg {
    uint8_t version;
    const tn_mqtt_publish *p;
} pub_arg;

static int
enc_publish(tn_buf *b, const void *arg)
{
    const pub_arg *a = arg;
    return tn_mqtt_encode_publish(b, a->version, a->p);
}

static void
roundtrip_connect(const tn_mqtt_connect *c, tn_buf *b)
{
    tn_mqtt_packet q;

    CHECK(tn_mqtt_encode_connect(b, c) == 0);
    check_too_small(b->len, enc_connect, c);
    redecode(TN_MQTT_ROLE_SERVER, 0, b, &q);
    const tn_mqtt_connect *r = &q.u.connect;
    CHECK(q.type == TN_MQTT_CONNECT && r->version == c->version && r->clean == c->clean);
    CHECK(r->keepalive == c->keepalive && same(r->client_id, c->client_id));
    CHECK(r->will == c->will && r->will_qos == c->will_qos && r->will_retain == c->will_retain);
    CHECK(same(r->will_topic, c->will_topic) && same(r->will_payload, c->will_payload));
    CHECK(r->has_username == c->has_username && same(r->username, c->username));
    CHECK(r->has_password == c->has_password && same(r->password, c->password));
    CHECK(same(r->props, c->props) && same(r->will_props, c->will_props));
}

static void
roundtrip_publish(tn_mqtt_role role, uint8_t version, const tn_mqtt_publish *p, tn_buf *b)
{
    pub_arg a = {version, p};
    tn_mqtt_packet q;

    CHECK(tn_mqtt_encode_publish(b, version, p) == 0);
    check_too_small(b->len, enc_publish, &a);
    redecode(role, version, b, &q);
    const tn_mqtt_publish *r = &q.u.publish;
    CHECK(q.type == TN_MQTT_PUBLISH && r->qos == p->qos && r->dup == p->dup);
    CHECK(r->retain == p->retain && r->pid == p->pid && same(r->topic, p->topic));
    CHECK(same(r->props, p->props) && same(r->payload, p->payload));
}

static void
roundtrip_list(tn_mqtt_role role, uint8_t version, const tn_mqtt_packet *pkt, span s, tn_buf *b)
{
    const tn_mqtt_list *l = &pkt->u.list;
    tn_mqtt_bytes *filters;
    uint8_t *opts;
    tn_mqtt_packet q;
    uint32_t n = walk_list(s, l, pkt->type, &filters, &opts);
    int rc;

    switch (pkt->type) {
    case TN_MQTT_SUBSCRIBE:
        rc = tn_mqtt_encode_subscribe(b, version, l->pid, filters, opts, n);
        break;
    case TN_MQTT_UNSUBSCRIBE:
        rc = tn_mqtt_encode_unsubscribe(b, version, l->pid, filters, n);
        break;
    case TN_MQTT_SUBACK:
        rc = tn_mqtt_encode_suback(b, version, l->pid, opts, n);
        break;
    default: /* 5.0 UNSUBACK: the encoder writes one reason code */
        rc = n == 1 ? tn_mqtt_encode_ack(b, version, TN_MQTT_UNSUBACK, l->pid, opts[0]) : 1;
        break;
    }
    if (rc == 0) {
        redecode(role, version, b, &q);
        CHECK(q.type == pkt->type && q.u.list.pid == l->pid && q.u.list.count == n);
        /* The entries are the same bytes; the properties are not carried over. */
        CHECK(same(q.u.list.raw, l->raw));
    } else {
        CHECK(rc == 1);
    }
    free(filters);
    free(opts);
}

static void
exercise(tn_mqtt_role role, uint8_t version, const tn_mqtt_packet *pkt, span s)
{
    tn_buf b;
    tn_mqtt_packet q;

    tn_buf_init(&b, (size_t)pkt->size + 64);
    switch (pkt->type) {
    case TN_MQTT_CONNECT: {
        const tn_mqtt_connect *c = &pkt->u.connect;
        check_view(s, c->client_id);
        check_view(s, c->will_topic);
        check_view(s, c->will_payload);
        check_view(s, c->username);
        check_view(s, c->password);
        check_view(s, c->props);
        check_view(s, c->will_props);
        CHECK(c->version == version); /* the decoder took the packet's level */
        CHECK(c->will || (c->will_qos == 0 && !c->will_retain));
        roundtrip_connect(c, &b);
        break;
    }
    case TN_MQTT_CONNACK:
        check_view(s, pkt->u.connack.props);
        CHECK(tn_mqtt_encode_connack(&b, version ? version : TN_MQTT_V311,
                                     pkt->u.connack.session_present, pkt->u.connack.rc) == 0);
        redecode(role, version, &b, &q);
        CHECK(q.u.connack.rc == pkt->u.connack.rc);
        CHECK(q.u.connack.session_present == pkt->u.connack.session_present);
        break;
    case TN_MQTT_PUBLISH:
        check_view(s, pkt->u.publish.topic);
        check_view(s, pkt->u.publish.props);
        check_view(s, pkt->u.publish.payload);
        CHECK((pkt->u.publish.qos == 0) == (pkt->u.publish.pid == 0));
        roundtrip_publish(role, version ? version : TN_MQTT_V311, &pkt->u.publish, &b);
        break;
    case TN_MQTT_PUBACK:
    case TN_MQTT_PUBREC:
    case TN_MQTT_PUBREL:
    case TN_MQTT_PUBCOMP:
    case TN_MQTT_UNSUBACK:
        if (pkt->type == TN_MQTT_UNSUBACK && version == TN_MQTT_V5) {
            roundtrip_list(role, version, pkt, s, &b);
            break;
        }
        check_view(s, pkt->u.ack.props);
        CHECK(pkt->u.ack.pid != 0);
        CHECK(tn_mqtt_encode_ack(&b, version ? version : TN_MQTT_V311, pkt->type, pkt->u.ack.pid,
                                 pkt->u.ack.rc) == 0);
        redecode(role, version, &b, &q);
        CHECK(q.type == pkt->type && q.u.ack.pid == pkt->u.ack.pid);
        CHECK(q.u.ack.rc == pkt->u.ack.rc);
        break;
    case TN_MQTT_SUBSCRIBE:
    case TN_MQTT_UNSUBSCRIBE:
    case TN_MQTT_SUBACK:
        CHECK(pkt->u.list.count > 0 && pkt->u.list.pid != 0);
        roundtrip_list(role, version ? version : TN_MQTT_V311, pkt, s, &b);
        break;
    case TN_MQTT_PINGREQ:
    case TN_MQTT_PINGRESP:
    case TN_MQTT_DISCONNECT:
        if (pkt->type == TN_MQTT_DISCONNECT && pkt->u.rc != 0)
            break;
        CHECK(tn_mqtt_encode_simple(&b, pkt->type) == 0);
        redecode(role, version, &b, &q);
        CHECK(q.type == pkt->type && q.size == 2);
        break;
    case TN_MQTT_AUTH:
        CHECK(version == TN_MQTT_V5);
        break;
    }
    tn_buf_fini(&b);
}

static void
run(const uint8_t *data, size_t size, tn_mqtt_role role, uint8_t version, uint32_t max_packet)
{
    tn_mqtt_decoder d;
    tn_mqtt_packet pkt;
    size_t off = 0, used;

    tn_mqtt_decoder_init(&d, role, max_packet);
    d.version = version;
    while (off < size) {
        tn_mqtt_decoder before = d;
        const uint8_t *p = data + off;
        int rc = tn_mqtt_decode(&d, p, size - off, &used, &pkt);
        if (rc != 0) {
            CHECK(rc == TN_EAGAIN || rc == TN_EPROTO || rc == TN_ETOOBIG);
            CHECK(used == 0 && d.version == before.version);
            CHECK(rc == TN_EAGAIN ? d.error == NULL : d.error != NULL);
            CHECK(rc == TN_EPROTO || d.connack_rc == -1);
            return;
        }
        CHECK(used >= 2 && used <= size - off && pkt.size == used && used <= max_packet);
        CHECK((pkt.type == TN_MQTT_CONNECT) == (d.version != before.version));

        /* Any prefix of a packet that decodes is only incomplete, never an error. */
        tn_mqtt_decoder again = before;
        tn_mqtt_packet scratch;
        size_t u2;
        CHECK(tn_mqtt_decode(&again, p, used - 1, &u2, &scratch) == TN_EAGAIN);
        again = before;
        CHECK(tn_mqtt_decode(&again, p, 1, &u2, &scratch) == TN_EAGAIN);

        /* A PUBLISH's head, decoded alone from any prefix that holds it, agrees with the whole
         * packet; shorter prefixes are only incomplete. */
        if (pkt.type == TN_MQTT_PUBLISH) {
            tn_mqtt_packet h;
            size_t hu = 0;
            again = before;
            int hr = tn_mqtt_decode_publish_head(&again, p, used, &hu, &h);
            CHECK(hr == 0 && hu + pkt.u.publish.payload.len == used);
            CHECK(h.u.publish.payload.len == pkt.u.publish.payload.len &&
                  h.u.publish.qos == pkt.u.publish.qos && h.u.publish.pid == pkt.u.publish.pid &&
                  h.u.publish.topic.len == pkt.u.publish.topic.len);
            for (size_t k = 0; k < hu; k++) {
                again = before;
                CHECK(tn_mqtt_decode_publish_head(&again, p, k, &u2, &h) == TN_EAGAIN);
            }
        } else {
            again = before;
            CHECK(tn_mqtt_decode_publish_head(&again, p, used, &u2, &scratch) == TN_EINVAL);
        }

        span s = {p, p + used};
        exercise(role, d.version, &pkt, s);
        off += used;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t maxes[] = {64, 1u << 20};

    for (size_t i = 0; i < sizeof maxes / sizeof maxes[0]; i++) {
        run(data, size, TN_MQTT_ROLE_SERVER, 0, maxes[i]);
        run(data, size, TN_MQTT_ROLE_SERVER, TN_MQTT_V5, maxes[i]);
        run(data, size, TN_MQTT_ROLE_CLIENT, TN_MQTT_V311, maxes[i]);
        run(data, size, TN_MQTT_ROLE_CLIENT, TN_MQTT_V5, maxes[i]);
    }
    (void)tn_mqtt_utf8_valid(data, size);
    (void)tn_mqtt_filter_valid(data, size);
    return 0;
}
