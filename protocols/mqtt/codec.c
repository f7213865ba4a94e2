/*
 * MQTT codec: bytes <-> packets for MQTT 3.1 (MQIsdp), 3.1.1 and the structure of 5.0.
 *
 * The decoder validates a whole packet before it returns it, so the adapter never looks at a
 * field the spec calls malformed. Checks that need only the fixed header (packet type, flags,
 * remaining length) run as soon as those bytes arrive, before the body is buffered.
 * Spec IDs without a version are MQTT 3.1.1; "5.0 section x" points into MQTT 5.0.
 */
#include "protocols/mqtt/codec.h"

#include <string.h>

/* Largest remaining length a 4-byte variable byte integer can carry (3.1.1 section 2.2.3). */
#define VARINT_MAX 268435455u
#define STR_MAX 65535u

static int
fail(tn_mqtt_decoder *d, const char *why)
{
    d->error = why;
    return TN_EPROTO;
}

/*
 * Reads a variable byte integer from p[0..n). Returns its size in bytes (1 to 4), 0 when more
 * bytes are needed, or -1 when the 4th byte still has the continuation bit. Non-minimal encodings
 * are accepted: [MQTT-1.5.5-1] binds the sender only.
 */
static int
varint_get(const uint8_t *p, size_t n, uint32_t *v)
{
    uint32_t x = 0;

    for (size_t i = 0; i < 4; i++) {
        if (i >= n)
            return 0;
        x |= (uint32_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = x;
            return (int)i + 1;
        }
    }
    return -1;
}

/* --- Body reader: every read checks what is left of the packet. --- */

typedef struct reader {
    const uint8_t *p;
    const uint8_t *end;
} reader;

static size_t
left(const reader *r)
{
    return (size_t)(r->end - r->p);
}

static bool
rd_u8(reader *r, uint8_t *v)
{
    if (left(r) < 1)
        return false;
    *v = *r->p++;
    return true;
}

static bool
rd_u16(reader *r, uint16_t *v)
{
    if (left(r) < 2)
        return false;
    *v = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    return true;
}

static bool
rd_n(reader *r, size_t n, tn_mqtt_bytes *b)
{
    if (left(r) < n)
        return false;
    b->p = r->p;
    b->len = (uint32_t)n;
    r->p += n;
    return true;
}

/* A 2-byte length followed by that many bytes (UTF-8 string or binary data, section 1.5.3). */
static bool
rd_str(reader *r, tn_mqtt_bytes *b)
{
    uint16_t n;
    const uint8_t *save = r->p;

    if (!rd_u16(r, &n) || !rd_n(r, n, b)) {
        r->p = save;
        return false;
    }
    return true;
}

static bool
rd_varint(reader *r, uint32_t *v)
{
    int n = varint_get(r->p, left(r), v);

    if (n <= 0)
        return false;
    r->p += n;
    return true;
}

static void
rd_rest(reader *r, tn_mqtt_bytes *b)
{
    rd_n(r, left(r), b);
}

static bool
bytes_is(tn_mqtt_bytes b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && memcmp(b.p, s, n) == 0;
}

static bool
has_wildcard(tn_mqtt_bytes b)
{
    return b.len > 0 && (memchr(b.p, '+', b.len) || memchr(b.p, '#', b.len));
}

/* --- MQTT 5 properties (5.0 section 2.2.2): structure only. --- */

typedef enum {
    PROP_UNKNOWN,
    PROP_BYTE,
    PROP_U16,
    PROP_U32,
    PROP_VARINT,
    PROP_UTF8,
    PROP_BINARY,
    PROP_PAIR,
} prop_kind;

/* 5.0 table 2-4. Identifiers are variable byte integers, but all defined ones fit in one byte. */
static prop_kind
prop_kind_of(uint8_t id)
{
    switch (id) {
    case 0x01: /* payload format indicator */
    case 0x17: /* request problem information */
    case 0x19: /* request response information */
    case 0x24: /* maximum QoS */
    case 0x25: /* retain available */
    case 0x28: /* wildcard subscription available */
    case 0x29: /* subscription identifier available */
    case 0x2A: /* shared subscription available */
        return PROP_BYTE;
    case 0x13: /* server keep alive */
    case 0x21: /* receive maximum */
    case 0x22: /* topic alias maximum */
    case 0x23: /* topic alias */
        return PROP_U16;
    case 0x02: /* message expiry interval */
    case 0x11: /* session expiry interval */
    case 0x18: /* will delay interval */
    case 0x27: /* maximum packet size */
        return PROP_U32;
    case 0x0B: /* subscription identifier */
        return PROP_VARINT;
    case 0x03: /* content type */
    case 0x08: /* response topic */
    case 0x12: /* assigned client identifier */
    case 0x15: /* authentication method */
    case 0x1A: /* response information */
    case 0x1C: /* server reference */
    case 0x1F: /* reason string */
        return PROP_UTF8;
    case 0x09: /* correlation data */
    case 0x16: /* authentication data */
        return PROP_BINARY;
    case 0x26: /* user property */
        return PROP_PAIR;
    default:
        return PROP_UNKNOWN;
    }
}

static bool
rd_utf8(reader *r)
{
    tn_mqtt_bytes s;
    return rd_str(r, &s) && tn_mqtt_utf8_valid(s.p, s.len);
}

/* One property: a known identifier and a value of its type that fits in the block. */
static bool
rd_prop(reader *r)
{
    uint8_t id;
    uint32_t v;
    tn_mqtt_bytes b;

    if (!rd_u8(r, &id))
        return false;
    switch (prop_kind_of(id)) {
    case PROP_BYTE:
        return rd_n(r, 1, &b);
    case PROP_U16:
        return rd_n(r, 2, &b);
    case PROP_U32:
        return rd_n(r, 4, &b);
    case PROP_VARINT:
        return rd_varint(r, &v);
    case PROP_UTF8:
        return rd_utf8(r);
    case PROP_BINARY:
        return rd_str(r, &b);
    case PROP_PAIR:
        return rd_utf8(r) && rd_utf8(r);
    case PROP_UNKNOWN:
        break;
    }
    return false;
}

/* A property block: its length, then properties that fill it exactly. *out gets the properties
 * without the length. Which properties a packet may carry is not checked here. */
static int
rd_props(tn_mqtt_decoder *d, reader *r, tn_mqtt_bytes *out)
{
    uint32_t n;
    tn_mqtt_bytes raw;

    if (!rd_varint(r, &n))
        return fail(d, "malformed property length");
    if (!rd_n(r, n, &raw))
        return fail(d, "properties past the end of the packet");
    reader pr = {raw.p, raw.p + raw.len};
    while (left(&pr) > 0) {
        if (!rd_prop(&pr))
            return fail(d, "malformed property");
    }
    if (out)
        *out = raw;
    return 0;
}

/* --- Fixed header --- */

static bool
is_v5(const tn_mqtt_decoder *d)
{
    return d->version == TN_MQTT_V5;
}

/*
 * Checks the first byte as soon as it arrives: a type this role may receive and the flags of
 * 3.1.1 table 2.2 [MQTT-2.2.2-1], [MQTT-2.2.2-2].
 */
static int
check_first_byte(tn_mqtt_decoder *d, uint8_t b0)
{
    unsigned type = b0 >> 4;
    unsigned flags = b0 & 0x0f;
    bool server = d->role == TN_MQTT_ROLE_SERVER;

    switch (type) {
    case 0:
        return fail(d, "reserved packet type 0");
    case TN_MQTT_CONNECT:
    case TN_MQTT_SUBSCRIBE:
    case TN_MQTT_UNSUBSCRIBE:
    case TN_MQTT_PINGREQ:
        if (!server)
            return fail(d, "packet only a client sends");
        break;
    case TN_MQTT_CONNACK:
    case TN_MQTT_SUBACK:
    case TN_MQTT_UNSUBACK:
    case TN_MQTT_PINGRESP:
        if (server)
            return fail(d, "packet only a server sends");
        break;
    case TN_MQTT_DISCONNECT:
        /* Before 5.0 only the client sends DISCONNECT (3.1.1 section 3.14). */
        if (!server && !is_v5(d))
            return fail(d, "DISCONNECT from a server before MQTT 5");
        break;
    case TN_MQTT_AUTH:
        /* Type 15 is reserved before 5.0 (3.1.1 table 2.1). */
        if (!is_v5(d))
            return fail(d, "reserved packet type 15");
        break;
    default:
        break;
    }

    if (type == TN_MQTT_PUBLISH) {
        unsigned qos = (flags >> 1) & 3;
        if (qos == 3)
            return fail(d, "PUBLISH with QoS 3"); /* [MQTT-3.3.1-4] */
        if (qos == 0 && (flags & 0x08))
            return fail(d, "PUBLISH QoS 0 with DUP set"); /* [MQTT-3.3.1-2] */
    } else if (type == TN_MQTT_PUBREL || type == TN_MQTT_SUBSCRIBE || type == TN_MQTT_UNSUBSCRIBE) {
        /* [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]. MQTT 3.1 sent these as QoS 1
         * messages that may carry DUP on a retry, so allow DUP there (mosquitto does too). */
        if (flags != 0x2 && !(d->version == TN_MQTT_V31 && flags == 0xA))
            return fail(d, "reserved fixed header flags must be 0010");
    } else if (flags != 0) {
        return fail(d, "reserved fixed header flags must be 0000");
    }
    return 0;
}

/* Packets of a fixed size are rejected from the fixed header alone, before the body arrives. */
static int
check_length(tn_mqtt_decoder *d, unsigned type, uint32_t rl)
{
    bool v5 = is_v5(d);

    switch (type) {
    case TN_MQTT_CONNACK:
    case TN_MQTT_PUBACK:
    case TN_MQTT_PUBREC:
    case TN_MQTT_PUBREL:
    case TN_MQTT_PUBCOMP:
        /* 3.1.1: exactly 2. 5.0: 2, or more with a reason code and properties. */
        if (v5 ? rl < 2 : rl != 2)
            return fail(d, "bad remaining length");
        break;
    case TN_MQTT_UNSUBACK:
        if (v5 ? rl < 3 : rl != 2)
            return fail(d, "bad remaining length");
        break;
    case TN_MQTT_PINGREQ:
    case TN_MQTT_PINGRESP:
        if (rl != 0)
            return fail(d, "bad remaining length");
        break;
    case TN_MQTT_DISCONNECT:
        if (!v5 && rl != 0)
            return fail(d, "bad remaining length");
        break;
    default:
        break;
    }
    return 0;
}

/* --- Bodies --- */

static int
end_of_packet(tn_mqtt_decoder *d, const reader *r)
{
    return left(r) == 0 ? 0 : fail(d, "trailing bytes after the packet");
}

/* MQTT 3.1 clients may set the username or password flag and leave the field out; like
 * mosquitto, such a flag is ignored when the packet ends there. */
static int
rd_credential(tn_mqtt_decoder *d, reader *r, uint8_t version, bool *has, tn_mqtt_bytes *b,
              bool utf8)
{
    if (version == TN_MQTT_V31 && left(r) == 0) {
        *has = false;
        return 0;
    }
    if (!rd_str(r, b))
        return fail(d, "truncated username or password");
    if (utf8 && !tn_mqtt_utf8_valid(b->p, b->len))
        return fail(d, "username is not valid UTF-8"); /* [MQTT-3.1.3-11] */
    return 0;
}

static int
decode_connect(tn_mqtt_decoder *d, reader *r, tn_mqtt_connect *c)
{
    tn_mqtt_bytes name;
    uint8_t level, flags;
    int rc;

    if (d->version != 0)
        return fail(d, "second CONNECT"); /* [MQTT-3.1.0-2] */
    if (!rd_str(r, &name) || !rd_u8(r, &level))
        return fail(d, "truncated CONNECT");
    if (bytes_is(name, "MQTT")) {
        if (level != TN_MQTT_V311 && level != TN_MQTT_V5) {
            d->connack_rc = TN_MQTT_CONNACK_BAD_VERSION; /* [MQTT-3.1.2-2] */
            return fail(d, "unsupported protocol level");
        }
    } else if (bytes_is(name, "MQIsdp")) {
        if (level != TN_MQTT_V31) {
            d->connack_rc = TN_MQTT_CONNACK_BAD_VERSION;
            return fail(d, "unsupported protocol level");
        }
    } else {
        /* [MQTT-3.1.2-1]: the server may close without a CONNACK. */
        return fail(d, "unknown protocol name");
    }
    c->version = level;

    if (!rd_u8(r, &flags) || !rd_u16(r, &c->keepalive))
        return fail(d, "truncated CONNECT");
    if (flags & 0x01)
        return fail(d, "reserved CONNECT flag set"); /* [MQTT-3.1.2-3] */
    c->clean = flags & 0x02;
    c->will = flags & 0x04;
    c->will_qos = (flags >> 3) & 3;
    c->will_retain = flags & 0x20;
    c->has_password = flags & 0x40;
    c->has_username = flags & 0x80;
    if (!c->will && (c->will_qos != 0 || c->will_retain))
        return fail(d, "will QoS or retain without a will"); /* [MQTT-3.1.2-13], [MQTT-3.1.2-15] */
    if (c->will_qos == 3)
        return fail(d, "will QoS 3"); /* [MQTT-3.1.2-14] */
    if (level != TN_MQTT_V5 && c->has_password && !c->has_username)
        return fail(d, "password without username"); /* [MQTT-3.1.2-22] */
    if (level == TN_MQTT_V5 && (rc = rd_props(d, r, &c->props)) != 0)
        return rc;

    if (!rd_str(r, &c->client_id))
        return fail(d, "truncated client identifier");
    if (!tn_mqtt_utf8_valid(c->client_id.p, c->client_id.len))
        return fail(d, "client identifier is not valid UTF-8"); /* [MQTT-3.1.3-4] */
    /* [MQTT-3.1.3-8]; MQTT 3.1 requires 1 to 23 characters, the length is left to the adapter. */
    if (c->client_id.len == 0 && (level == TN_MQTT_V31 || (level == TN_MQTT_V311 && !c->clean))) {
        d->connack_rc = TN_MQTT_CONNACK_ID_REJECTED;
        return fail(d, "empty client identifier without clean session");
    }

    if (c->will) {
        if (level == TN_MQTT_V5 && (rc = rd_props(d, r, &c->will_props)) != 0)
            return rc;
        if (!rd_str(r, &c->will_topic))
            return fail(d, "truncated will topic");
        if (!tn_mqtt_utf8_valid(c->will_topic.p, c->will_topic.len))
            return fail(d, "will topic is not valid UTF-8"); /* [MQTT-3.1.3-10] */
        if (c->will_topic.len == 0)
            return fail(d, "empty will topic"); /* [MQTT-4.7.3-1] */
        if (has_wildcard(c->will_topic))
            return fail(d, "wildcard in will topic"); /* [MQTT-3.3.2-2] */
        if (!rd_str(r, &c->will_payload))
            return fail(d, "truncated will message");
    }
    if (c->has_username &&
        (rc = rd_credential(d, r, level, &c->has_username, &c->username, true)) != 0)
        return rc;
    if (c->has_password &&
        (rc = rd_credential(d, r, level, &c->has_password, &c->password, false)) != 0)
        return rc;
    if ((rc = end_of_packet(d, r)) != 0)
        return rc;
    d->version = level;
    return 0;
}

static int
decode_connack(tn_mqtt_decoder *d, reader *r, tn_mqtt_connack *c)
{
    uint8_t flags;
    int rc;

    if (!rd_u8(r, &flags) || !rd_u8(r, &c->rc))
        return fail(d, "truncated CONNACK");
    if (flags & 0xfe)
        return fail(d, "reserved CONNACK flags set"); /* [MQTT-3.2.2-1] */
    c->session_present = flags & 0x01;
    if (!is_v5(d) && c->rc > TN_MQTT_CONNACK_NOT_AUTHORIZED)
        return fail(d, "reserved CONNACK return code"); /* 3.1.1 table 3.1 */
    if (c->rc != 0 && c->session_present)
        return fail(d, "session present on a refused connection"); /* [MQTT-3.2.2-4] */
    if (is_v5(d) && (rc = rd_props(d, r, &c->props)) != 0)
        return rc;
    return end_of_packet(d, r);
}

static int
decode_publish(tn_mqtt_decoder *d, reader *r, uint8_t flags, tn_mqtt_publish *p)
{
    int rc;

    p->qos = (flags >> 1) & 3;
    p->dup = flags & 0x08;
    p->retain = flags & 0x01;
    if (!rd_str(r, &p->topic))
        return fail(d, "truncated topic name");
    if (!tn_mqtt_utf8_valid(p->topic.p, p->topic.len))
        return fail(d, "topic name is not valid UTF-8"); /* [MQTT-3.3.2-1] */
    /* [MQTT-4.7.3-1]; 5.0 allows an empty name that a topic alias stands for. */
    if (p->topic.len == 0 && !is_v5(d))
        return fail(d, "empty topic name");
    if (has_wildcard(p->topic))
        return fail(d, "wildcard in topic name"); /* [MQTT-3.3.2-2] */
    if (p->qos > 0) {
        if (!rd_u16(r, &p->pid))
            return fail(d, "truncated packet identifier");
        if (p->pid == 0)
            return fail(d, "packet identifier 0"); /* [MQTT-2.3.1-1] */
    }
    if (is_v5(d) && (rc = rd_props(d, r, &p->props)) != 0)
        return rc;
    rd_rest(r, &p->payload);
    return 0;
}

static int
rd_pid(tn_mqtt_decoder *d, reader *r, uint16_t *pid)
{
    if (!rd_u16(r, pid))
        return fail(d, "truncated packet identifier");
    if (*pid == 0)
        return fail(d, "packet identifier 0"); /* [MQTT-2.3.1-1] */
    return 0;
}

/* PUBACK, PUBREC, PUBREL, PUBCOMP; UNSUBACK before 5.0. In 5.0 the reason code and the property
 * block may each be left out from the end (5.0 section 3.4.2.1). */
static int
decode_ack(tn_mqtt_decoder *d, reader *r, tn_mqtt_ack *a)
{
    int rc;

    if ((rc = rd_pid(d, r, &a->pid)) != 0)
        return rc;
    if (is_v5(d) && left(r) > 0) {
        rd_u8(r, &a->rc);
        if (left(r) > 0 && (rc = rd_props(d, r, &a->props)) != 0)
            return rc;
    }
    return end_of_packet(d, r);
}

/* SUBSCRIBE options byte: 3.1.1 allows QoS only [MQTT-3.8.3-4]; 5.0 adds no local, retain as
 * published and retain handling (3 is a protocol error), bits 6-7 stay reserved. */
static bool
sub_opts_valid(const tn_mqtt_decoder *d, uint8_t o)
{
    if ((o & 3) == 3)
        return false;
    if (!is_v5(d))
        return (o & 0xfc) == 0;
    return (o & 0xc0) == 0 && ((o >> 4) & 3) != 3;
}

/* SUBSCRIBE and UNSUBSCRIBE: packet identifier, 5.0 properties, then one or more filters. */
static int
decode_filters(tn_mqtt_decoder *d, reader *r, bool subscribe, tn_mqtt_list *l)
{
    int rc;

    if ((rc = rd_pid(d, r, &l->pid)) != 0)
        return rc;
    if (is_v5(d) && (rc = rd_props(d, r, &l->props)) != 0)
        return rc;
    l->raw.p = r->p;
    l->raw.len = (uint32_t)left(r);
    while (left(r) > 0) {
        tn_mqtt_bytes f;
        uint8_t opts;
        if (!rd_str(r, &f))
            return fail(d, "truncated topic filter");
        if (!tn_mqtt_utf8_valid(f.p, f.len))
            return fail(d, "topic filter is not valid UTF-8"); /* [MQTT-3.8.3-1] */
        if (f.len == 0)
            return fail(d, "empty topic filter"); /* [MQTT-4.7.3-1] */
        if (subscribe) {
            if (!rd_u8(r, &opts))
                return fail(d, "truncated subscription options");
            if (!sub_opts_valid(d, opts))
                return fail(d, "bad subscription options"); /* [MQTT-3.8.3-4] */
        }
        l->count++;
    }
    if (l->count == 0) /* [MQTT-3.8.3-3], [MQTT-3.10.3-2] */
        return fail(d, subscribe ? "SUBSCRIBE without filters" : "UNSUBSCRIBE without filters");
    return 0;
}

/* SUBACK (and UNSUBACK in 5.0): packet identifier, 5.0 properties, one return code a filter. */
static int
decode_codes(tn_mqtt_decoder *d, reader *r, tn_mqtt_list *l)
{
    int rc;

    if ((rc = rd_pid(d, r, &l->pid)) != 0)
        return rc;
    if (is_v5(d) && (rc = rd_props(d, r, &l->props)) != 0)
        return rc;
    rd_rest(r, &l->raw);
    l->count = l->raw.len;
    if (l->count == 0)
        return fail(d, "acknowledgement without return codes");
    if (!is_v5(d)) {
        for (uint32_t i = 0; i < l->count; i++) {
            uint8_t c = l->raw.p[i];
            if (c > 2 && c != TN_MQTT_SUBACK_FAILURE)
                return fail(d, "reserved SUBACK return code"); /* [MQTT-3.9.3-2] */
        }
    }
    return 0;
}

/* 5.0 DISCONNECT and AUTH: an optional reason code, then optional properties. */
static int
decode_reason(tn_mqtt_decoder *d, reader *r, uint8_t *code)
{
    int rc;

    if (left(r) > 0) {
        rd_u8(r, code);
        if (left(r) > 0 && (rc = rd_props(d, r, NULL)) != 0)
            return rc;
    }
    return end_of_packet(d, r);
}

static int
decode_body(tn_mqtt_decoder *d, reader *r, tn_mqtt_packet *pkt)
{
    switch (pkt->type) {
    case TN_MQTT_CONNECT:
        return decode_connect(d, r, &pkt->u.connect);
    case TN_MQTT_CONNACK:
        return decode_connack(d, r, &pkt->u.connack);
    case TN_MQTT_PUBLISH:
        return decode_publish(d, r, pkt->flags, &pkt->u.publish);
    case TN_MQTT_PUBACK:
    case TN_MQTT_PUBREC:
    case TN_MQTT_PUBREL:
    case TN_MQTT_PUBCOMP:
        return decode_ack(d, r, &pkt->u.ack);
    case TN_MQTT_SUBSCRIBE:
        return decode_filters(d, r, true, &pkt->u.list);
    case TN_MQTT_UNSUBSCRIBE:
        return decode_filters(d, r, false, &pkt->u.list);
    case TN_MQTT_SUBACK:
        return decode_codes(d, r, &pkt->u.list);
    case TN_MQTT_UNSUBACK:
        return is_v5(d) ? decode_codes(d, r, &pkt->u.list) : decode_ack(d, r, &pkt->u.ack);
    case TN_MQTT_PINGREQ:
    case TN_MQTT_PINGRESP:
        return 0; /* remaining length 0, checked with the fixed header */
    case TN_MQTT_DISCONNECT:
    case TN_MQTT_AUTH:
        return decode_reason(d, r, &pkt->u.rc);
    }
    return fail(d, "reserved packet type"); /* not reached: check_first_byte */
}

void
tn_mqtt_decoder_init(tn_mqtt_decoder *d, tn_mqtt_role role, uint32_t max_packet)
{
    d->role = role;
    d->version = 0;
    d->max_packet = max_packet;
    d->error = NULL;
    d->connack_rc = -1;
}

void
tn_mqtt_decoder_unconnect(tn_mqtt_decoder *d)
{
    d->version = 0;
}

/* The fixed header at buf: its remaining-length varint's size in *n and the packet's whole size
 * in *size, checked against max_packet and, for fixed-size packets, their length. 0, TN_EAGAIN
 * while it is incomplete, or an error (d->error says which). */
static int
fixed_header(tn_mqtt_decoder *d, const uint8_t *buf, size_t len, int *n, uint32_t *rl,
             uint32_t *size)
{
    int rc;

    d->error = NULL;
    d->connack_rc = -1;
    if (len == 0)
        return TN_EAGAIN;
    if ((rc = check_first_byte(d, buf[0])) != 0)
        return rc;
    *n = varint_get(buf + 1, len - 1, rl);
    if (*n == 0)
        return TN_EAGAIN;
    if (*n < 0)
        return fail(d, "remaining length longer than 4 bytes"); /* 3.1.1 section 2.2.3 */
    *size = 1 + (uint32_t)*n + *rl;                             /* at most 5 + VARINT_MAX */
    if (*size > d->max_packet) {
        d->error = "packet larger than the maximum packet size";
        return TN_ETOOBIG;
    }
    return check_length(d, buf[0] >> 4, *rl);
}

int
tn_mqtt_decode(tn_mqtt_decoder *d, const uint8_t *buf, size_t len, size_t *used,
               tn_mqtt_packet *pkt)
{
    uint32_t rl, size;
    int n, rc;

    *used = 0;
    if ((rc = fixed_header(d, buf, len, &n, &rl, &size)) != 0)
        return rc;
    if (len < size)
        return TN_EAGAIN;

    memset(pkt, 0, sizeof *pkt);
    pkt->type = (tn_mqtt_type)(buf[0] >> 4);
    pkt->flags = buf[0] & 0x0f;
    pkt->size = size;
    reader r = {buf + 1 + n, buf + size};
    if ((rc = decode_body(d, &r, pkt)) != 0)
        return rc;
    *used = size;
    return 0;
}

int
tn_mqtt_decode_publish_head(tn_mqtt_decoder *d, const uint8_t *buf, size_t len, size_t *used,
                            tn_mqtt_packet *pkt)
{
    uint32_t rl, size;
    int n, rc;

    *used = 0;
    if (len > 0 && buf[0] >> 4 != TN_MQTT_PUBLISH)
        return TN_EINVAL;
    if ((rc = fixed_header(d, buf, len, &n, &rl, &size)) != 0)
        return rc;
    /* The variable header's length, from what has arrived of it. */
    const uint8_t *q = buf + 1 + n;
    size_t have = (len < size ? len : size) - (1 + (size_t)n);
    uint8_t qos = (buf[0] >> 1) & 3;
    if (rl < 2)
        return fail(d, "truncated topic name");
    if (have < 2)
        return TN_EAGAIN;
    size_t vh = 2 + (size_t)(q[0] << 8 | q[1]) + (qos > 0 ? 2 : 0);
    if (is_v5(d) && vh < rl) {
        uint32_t plen;
        if (have <= vh)
            return TN_EAGAIN;
        int k = varint_get(q + vh, have - vh, &plen);
        if (k == 0 && have < rl)
            return TN_EAGAIN;
        if (k <= 0)
            return fail(d, "bad property length");
        vh += (size_t)k + plen;
    }
    if (vh > rl)
        return fail(d, "truncated PUBLISH variable header");
    if (have < vh)
        return TN_EAGAIN;
    memset(pkt, 0, sizeof *pkt);
    pkt->type = TN_MQTT_PUBLISH;
    pkt->flags = buf[0] & 0x0f;
    pkt->size = size;
    reader r = {q, q + vh};
    if ((rc = decode_publish(d, &r, pkt->flags, &pkt->u.publish)) != 0)
        return rc;
    pkt->u.publish.payload.p = NULL; /* not here yet */
    pkt->u.publish.payload.len = (uint32_t)(rl - vh);
    *used = 1 + (size_t)n + vh;
    return 0;
}

bool
tn_mqtt_list_begin(const tn_mqtt_list *l, tn_mqtt_list_iter *it)
{
    if (l->raw.len == 0 || l->raw.p == NULL) {
        it->p = it->end = NULL;
        return false;
    }
    it->p = l->raw.p;
    it->end = l->raw.p + l->raw.len;
    return true;
}

bool
tn_mqtt_list_next(tn_mqtt_list_iter *it, tn_mqtt_type type, tn_mqtt_bytes *filter, uint8_t *opts)
{
    filter->p = NULL;
    filter->len = 0;
    *opts = 0;
    if (it->p == NULL || it->p >= it->end)
        return false;
    size_t avail = (size_t)(it->end - it->p);
    if (type == TN_MQTT_SUBACK || type == TN_MQTT_UNSUBACK) {
        *opts = *it->p++;
        return true;
    }
    if (avail < 2)
        return false;
    size_t flen = (size_t)(it->p[0] << 8 | it->p[1]);
    size_t need = 2 + flen + (type == TN_MQTT_SUBSCRIBE ? 1 : 0);
    if (avail < need)
        return false;
    filter->p = it->p + 2;
    filter->len = (uint32_t)flen;
    if (type == TN_MQTT_SUBSCRIBE)
        *opts = it->p[2 + flen];
    it->p += need;
    return true;
}

/*
 * Well-formed UTF-8 per Unicode table 3-7, which already excludes overlong forms, surrogates
 * (U+D800..U+DFFF) and code points past U+10FFFF [MQTT-1.5.3-1]; U+0000 is refused on top
 * [MQTT-1.5.3-2].
 */
bool
tn_mqtt_utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint8_t c = p[i];
        uint8_t lo = 0x80, hi = 0xbf;
        size_t more;

        if (c < 0x80) {
            if (c == 0)
                return false;
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
        } else if (c == 0xe0) {
            more = 2, lo = 0xa0; /* overlong below U+0800 */
        } else if (c == 0xed) {
            more = 2, hi = 0x9f; /* surrogates */
        } else if (c >= 0xe1 && c <= 0xef) {
            more = 2;
        } else if (c == 0xf0) {
            more = 3, lo = 0x90; /* overlong below U+10000 */
        } else if (c >= 0xf1 && c <= 0xf3) {
            more = 3;
        } else if (c == 0xf4) {
            more = 3, hi = 0x8f; /* past U+10FFFF */
        } else {
            return false; /* continuation byte, C0/C1 overlong, F5..FF */
        }
        if (len - i - 1 < more)
            return false;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= more; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
        }
        i += more + 1;
    }
    return true;
}

bool
tn_mqtt_filter_valid(const uint8_t *p, size_t len)
{
    if (len == 0)
        return false; /* [MQTT-4.7.3-1] */
    for (size_t i = 0; i < len; i++) {
        bool starts_level = i == 0 || p[i - 1] == '/';
        bool ends_level = i + 1 == len || p[i + 1] == '/';
        if (p[i] == '+' && !(starts_level && ends_level))
            return false; /* [MQTT-4.7.1-3] */
        if (p[i] == '#' && !(starts_level && i + 1 == len))
            return false; /* [MQTT-4.7.1-2] */
    }
    return true;
}

/* --- Encoders --- */

unsigned
tn_mqtt_varint_size(uint32_t n)
{
    if (n < 128u)
        return 1;
    if (n < 16384u)
        return 2;
    if (n < 2097152u)
        return 3;
    if (n <= VARINT_MAX)
        return 4;
    return 0;
}

static uint8_t *
put_u8(uint8_t *p, uint8_t v)
{
    *p = v;
    return p + 1;
}

static uint8_t *
put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

/* Minimum number of bytes [MQTT-1.5.5-1]. */
static uint8_t *
put_varint(uint8_t *p, uint32_t v)
{
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        *p++ = v ? (uint8_t)(b | 0x80) : b;
    } while (v);
    return p;
}

static uint8_t *
put_raw(uint8_t *p, const void *s, size_t n)
{
    if (n > 0)
        memcpy(p, s, n);
    return p + n;
}

static uint8_t *
put_str(uint8_t *p, tn_mqtt_bytes b)
{
    return put_raw(put_u16(p, (uint16_t)b.len), b.p, b.len);
}

/* 5.0 property block holding props (which the caller vouches for). */
static uint8_t *
put_props(uint8_t *p, tn_mqtt_bytes props)
{
    return put_raw(put_varint(p, props.len), props.p, props.len);
}

static uint64_t
props_size(tn_mqtt_bytes props)
{
    return (uint64_t)tn_mqtt_varint_size(props.len) + props.len;
}

static bool
version_ok(uint8_t version)
{
    return version == TN_MQTT_V31 || version == TN_MQTT_V311 || version == TN_MQTT_V5;
}

/* An encoder in progress: the whole packet is reserved up front so a packet that does not fit
 * leaves the buffer as it was. */
typedef struct writer {
    tn_buf *out;
    uint8_t *start;
    uint8_t *p;
    size_t total;
} writer;

static int
begin(writer *w, tn_buf *out, uint8_t b0, uint64_t rl)
{
    if (rl > VARINT_MAX)
        return TN_EINVAL;
    w->out = out;
    w->total = 1 + tn_mqtt_varint_size((uint32_t)rl) + (size_t)rl;
    w->start = tn_buf_reserve(out, w->total);
    if (w->start == NULL)
        return TN_ETOOBIG;
    w->p = put_varint(put_u8(w->start, b0), (uint32_t)rl);
    return 0;
}

static int
finish(writer *w)
{
    tn_assert((size_t)(w->p - w->start) == w->total);
    tn_buf_commit(w->out, w->total);
    return 0;
}

int
tn_mqtt_encode_connect(tn_buf *out, const tn_mqtt_connect *c)
{
    static const tn_mqtt_bytes mqtt = {(const uint8_t *)"MQTT", 4};
    static const tn_mqtt_bytes mqisdp = {(const uint8_t *)"MQIsdp", 6};
    tn_mqtt_bytes name = c->version == TN_MQTT_V31 ? mqisdp : mqtt;
    bool v5 = c->version == TN_MQTT_V5;
    uint8_t flags = 0;
    uint64_t rl;
    writer w;
    int rc;

    if (!version_ok(c->version) || (c->will && c->will_qos > 2))
        return TN_EINVAL;
    if (c->client_id.len > STR_MAX || c->will_topic.len > STR_MAX ||
        c->will_payload.len > STR_MAX || c->username.len > STR_MAX || c->password.len > STR_MAX)
        return TN_EINVAL;
    rl = 2 + name.len + 1 + 1 + 2 + 2 + c->client_id.len;
    if (v5)
        rl += props_size(c->props);
    if (c->clean)
        flags |= 0x02;
    if (c->will) {
        flags |= (uint8_t)(0x04 | c->will_qos << 3 | (c->will_retain ? 0x20 : 0));
        rl += 2 + c->will_topic.len + 2 + c->will_payload.len;
        if (v5)
            rl += props_size(c->will_props);
    }
    if (c->has_username) {
        flags |= 0x80;
        rl += 2 + c->username.len;
    }
    if (c->has_password) {
        flags |= 0x40;
        rl += 2 + c->password.len;
    }
    if ((rc = begin(&w, out, TN_MQTT_CONNECT << 4, rl)) != 0)
        return rc;
    w.p = put_str(w.p, name);
    w.p = put_u8(w.p, c->version);
    w.p = put_u8(w.p, flags);
    w.p = put_u16(w.p, c->keepalive);
    if (v5)
        w.p = put_props(w.p, c->props);
    w.p = put_str(w.p, c->client_id);
    if (c->will) {
        if (v5)
            w.p = put_props(w.p, c->will_props);
        w.p = put_str(w.p, c->will_topic);
        w.p = put_str(w.p, c->will_payload);
    }
    if (c->has_username)
        w.p = put_str(w.p, c->username);
    if (c->has_password)
        w.p = put_str(w.p, c->password);
    return finish(&w);
}

int
tn_mqtt_encode_connack(tn_buf *out, uint8_t version, bool session_present, uint8_t rc)
{
    bool v5 = version == TN_MQTT_V5;
    writer w;
    int err;

    if (!version_ok(version))
        return TN_EINVAL;
    if ((err = begin(&w, out, TN_MQTT_CONNACK << 4, v5 ? 3 : 2)) != 0)
        return err;
    w.p = put_u8(w.p, session_present ? 1 : 0);
    w.p = put_u8(w.p, rc);
    if (v5)
        w.p = put_u8(w.p, 0); /* no properties */
    return finish(&w);
}

/* PUBLISH, with its payload (head_only false) or all of it but the payload's bytes. */
static int
encode_publish(tn_buf *out, uint8_t version, const tn_mqtt_publish *p, bool head_only)
{
    bool v5 = version == TN_MQTT_V5;
    uint64_t rl;
    writer w;
    int rc;

    if (!version_ok(version) || p->qos > 2 || p->topic.len > STR_MAX)
        return TN_EINVAL;
    rl = 2 + (uint64_t)p->topic.len + (p->qos ? 2 : 0) + p->payload.len;
    if (v5)
        rl += props_size(p->props);
    uint8_t b0 = (uint8_t)(TN_MQTT_PUBLISH << 4 | (p->dup ? 0x08 : 0) | p->qos << 1 |
                           (p->retain ? 0x01 : 0));
    if (head_only) {
        if (rl > VARINT_MAX)
            return TN_EINVAL;
        w.out = out;
        w.total = 1 + tn_mqtt_varint_size((uint32_t)rl) + (size_t)rl - p->payload.len;
        if ((w.start = tn_buf_reserve(out, w.total)) == NULL)
            return TN_ETOOBIG;
        w.p = put_varint(put_u8(w.start, b0), (uint32_t)rl);
    } else if ((rc = begin(&w, out, b0, rl)) != 0) {
        return rc;
    }
    w.p = put_str(w.p, p->topic);
    if (p->qos)
        w.p = put_u16(w.p, p->pid);
    if (v5)
        w.p = put_props(w.p, p->props);
    if (!head_only)
        w.p = put_raw(w.p, p->payload.p, p->payload.len);
    return finish(&w);
}

int
tn_mqtt_encode_publish(tn_buf *out, uint8_t version, const tn_mqtt_publish *p)
{
    return encode_publish(out, version, p, false);
}

int
tn_mqtt_encode_publish_head(tn_buf *out, uint8_t version, const tn_mqtt_publish *p)
{
    return encode_publish(out, version, p, true);
}

int
tn_mqtt_encode_ack(tn_buf *out, uint8_t version, tn_mqtt_type type, uint16_t pid, uint8_t rc)
{
    bool v5 = version == TN_MQTT_V5;
    writer w;
    int err;

    if (!version_ok(version))
        return TN_EINVAL;
    if (type != TN_MQTT_PUBACK && type != TN_MQTT_PUBREC && type != TN_MQTT_PUBREL &&
        type != TN_MQTT_PUBCOMP && type != TN_MQTT_UNSUBACK)
        return TN_EINVAL;
    /* 5.0: the full form, reason code and an empty property block; UNSUBACK puts its one
     * reason code after the properties. */
    if ((err = begin(&w, out, (uint8_t)(type << 4 | (type == TN_MQTT_PUBREL ? 0x2 : 0)),
                     v5 ? 4 : 2)) != 0)
        return err;
    w.p = put_u16(w.p, pid);
    if (v5 && type == TN_MQTT_UNSUBACK) {
        w.p = put_u8(w.p, 0);
        w.p = put_u8(w.p, rc);
    } else if (v5) {
        w.p = put_u8(w.p, rc);
        w.p = put_u8(w.p, 0);
    }
    return finish(&w);
}

static int
encode_filters(tn_buf *out, uint8_t version, uint8_t b0, uint16_t pid, const tn_mqtt_bytes *filters,
               const uint8_t *opts, uint32_t n)
{
    bool v5 = version == TN_MQTT_V5;
    uint64_t rl = 2 + (v5 ? 1 : 0);
    writer w;
    int rc;

    if (!version_ok(version) || n == 0)
        return TN_EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        if (filters[i].len > STR_MAX)
            return TN_EINVAL;
        rl += 2 + (uint64_t)filters[i].len + (opts ? 1 : 0);
    }
    if ((rc = begin(&w, out, b0, rl)) != 0)
        return rc;
    w.p = put_u16(w.p, pid);
    if (v5)
        w.p = put_u8(w.p, 0);
    for (uint32_t i = 0; i < n; i++) {
        w.p = put_str(w.p, filters[i]);
        if (opts)
            w.p = put_u8(w.p, opts[i]);
    }
    return finish(&w);
}

int
tn_mqtt_encode_subscribe(tn_buf *out, uint8_t version, uint16_t pid, const tn_mqtt_bytes *filters,
                         const uint8_t *opts, uint32_t n)
{
    if (opts == NULL)
        return TN_EINVAL;
    return encode_filters(out, version, TN_MQTT_SUBSCRIBE << 4 | 0x2, pid, filters, opts, n);
}

int
tn_mqtt_encode_unsubscribe(tn_buf *out, uint8_t version, uint16_t pid, const tn_mqtt_bytes *filters,
                           uint32_t n)
{
    return encode_filters(out, version, TN_MQTT_UNSUBSCRIBE << 4 | 0x2, pid, filters, NULL, n);
}

int
tn_mqtt_encode_suback(tn_buf *out, uint8_t version, uint16_t pid, const uint8_t *rcs, uint32_t n)
{
    bool v5 = version == TN_MQTT_V5;
    writer w;
    int rc;

    if (!version_ok(version) || n == 0)
        return TN_EINVAL;
    if ((rc = begin(&w, out, TN_MQTT_SUBACK << 4, 2 + (v5 ? 1 : 0) + (uint64_t)n)) != 0)
        return rc;
    w.p = put_u16(w.p, pid);
    if (v5)
        w.p = put_u8(w.p, 0);
    w.p = put_raw(w.p, rcs, n);
    return finish(&w);
}

int
tn_mqtt_encode_simple(tn_buf *out, tn_mqtt_type type)
{
    writer w;
    int rc;

    if (type != TN_MQTT_PINGREQ && type != TN_MQTT_PINGRESP && type != TN_MQTT_DISCONNECT)
        return TN_EINVAL;
    if ((rc = begin(&w, out, (uint8_t)(type << 4), 0)) != 0)
        return rc;
    return finish(&w);
}
