/*
 * MQTT codec: bytes <-> packets, sans-IO (no sockets, clocks or core calls).
 *
 * Private to protocols/mqtt (the module's public header is mqtt.h); ternbench and tests may use it.
 *
 * Decoding is incremental and zero-copy: tn_mqtt_decode() looks at the bytes received so far and
 * either returns one complete packet whose byte views point into the caller's buffer (valid until
 * the caller consumes those bytes), TN_EAGAIN (need more bytes), or an error. Limits are checked
 * before anything is buffered: a fixed header announcing more than max_packet bytes fails at once.
 * Every field is validated against MQTT 3.1.1 (and the parts of 5.0 marked below) so the adapter
 * only ever sees well-formed packets.
 *
 * Encoders append to a bounded tn_buf and return 0 or TN_ETOOBIG, leaving the buffer unchanged
 * on error.
 *
 * MQTT 5: the packet structs already carry reason codes and the raw property bytes, so adding
 * 5.0 means parsing properties, not changing the layout.
 */
#ifndef TN_MQTT_CODEC_H
#define TN_MQTT_CODEC_H

#include "core/base/base.h"

#include <stdbool.h>
#include <stdint.h>

#define TN_MQTT_V31 3  /* MQIsdp 3.1 */
#define TN_MQTT_V311 4 /* MQTT 3.1.1 */
#define TN_MQTT_V5 5

typedef enum {
    TN_MQTT_CONNECT = 1,
    TN_MQTT_CONNACK = 2,
    TN_MQTT_PUBLISH = 3,
    TN_MQTT_PUBACK = 4,
    TN_MQTT_PUBREC = 5,
    TN_MQTT_PUBREL = 6,
    TN_MQTT_PUBCOMP = 7,
    TN_MQTT_SUBSCRIBE = 8,
    TN_MQTT_SUBACK = 9,
    TN_MQTT_UNSUBSCRIBE = 10,
    TN_MQTT_UNSUBACK = 11,
    TN_MQTT_PINGREQ = 12,
    TN_MQTT_PINGRESP = 13,
    TN_MQTT_DISCONNECT = 14,
    TN_MQTT_AUTH = 15,
} tn_mqtt_type;

/* CONNACK return codes (3.1.1 table 3.1). */
enum {
    TN_MQTT_CONNACK_ACCEPTED = 0,
    TN_MQTT_CONNACK_BAD_VERSION = 1,
    TN_MQTT_CONNACK_ID_REJECTED = 2,
    TN_MQTT_CONNACK_UNAVAILABLE = 3,
    TN_MQTT_CONNACK_BAD_CREDENTIALS = 4,
    TN_MQTT_CONNACK_NOT_AUTHORIZED = 5,
};
#define TN_MQTT_SUBACK_FAILURE 0x80

/* A borrowed view of bytes inside the decoder's input. */
typedef struct tn_mqtt_bytes {
    const uint8_t *p;
    uint32_t len;
} tn_mqtt_bytes;

typedef struct tn_mqtt_connect {
    uint8_t version; /* TN_MQTT_V31, TN_MQTT_V311 or TN_MQTT_V5 */
    bool clean;      /* clean session (3.1.1) / clean start (5) */
    uint16_t keepalive;
    tn_mqtt_bytes client_id;
    bool will;
    uint8_t will_qos;
    bool will_retain;
    tn_mqtt_bytes will_topic;
    tn_mqtt_bytes will_payload;
    bool has_username;
    tn_mqtt_bytes username;
    bool has_password;
    tn_mqtt_bytes password;
    tn_mqtt_bytes props;      /* v5 only: raw CONNECT properties */
    tn_mqtt_bytes will_props; /* v5 only */
} tn_mqtt_connect;

typedef struct tn_mqtt_connack {
    bool session_present;
    uint8_t rc; /* return code (3.1.1) or reason code (5) */
    tn_mqtt_bytes props;
} tn_mqtt_connack;

typedef struct tn_mqtt_publish {
    uint8_t qos;
    bool dup;
    bool retain;
    tn_mqtt_bytes topic;
    uint16_t pid; /* 0 for QoS 0 */
    tn_mqtt_bytes props;
    tn_mqtt_bytes payload;
} tn_mqtt_publish;

/* PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK (3.1.1) */
typedef struct tn_mqtt_ack {
    uint16_t pid;
    uint8_t rc; /* v5 reason code; 0 in 3.1.1 */
    tn_mqtt_bytes props;
} tn_mqtt_ack;

/* SUBSCRIBE, SUBACK, UNSUBSCRIBE, and UNSUBACK in 5.0 (one reason code per filter, like
 * SUBACK): the list is validated whole by the decoder, then walked with tn_mqtt_list_next(). */
typedef struct tn_mqtt_list {
    uint16_t pid;
    uint32_t count; /* entries in the list (>= 1 for SUBSCRIBE/UNSUBSCRIBE) */
    tn_mqtt_bytes props;
    tn_mqtt_bytes raw; /* the entries, as on the wire */
} tn_mqtt_list;

typedef struct tn_mqtt_list_iter {
    const uint8_t *p;
    const uint8_t *end;
} tn_mqtt_list_iter;

typedef struct tn_mqtt_packet {
    tn_mqtt_type type;
    uint8_t flags; /* low nibble of the fixed header */
    uint32_t size; /* whole packet on the wire, fixed header included */
    union {
        tn_mqtt_connect connect;
        tn_mqtt_connack connack;
        tn_mqtt_publish publish;
        tn_mqtt_ack ack;
        tn_mqtt_list list; /* SUBSCRIBE, SUBACK, UNSUBSCRIBE; UNSUBACK in 5.0 */
        uint8_t rc;        /* v5 DISCONNECT/AUTH reason code */
    } u;
} tn_mqtt_packet;

typedef enum {
    TN_MQTT_ROLE_SERVER = 0, /* decodes packets a client sends */
    TN_MQTT_ROLE_CLIENT = 1, /* decodes packets a server sends (tests, ternbench) */
} tn_mqtt_role;

typedef struct tn_mqtt_decoder {
    tn_mqtt_role role;
    uint8_t version;     /* 0 until CONNECT is decoded (server) or set by the caller (client) */
    uint32_t max_packet; /* largest whole packet accepted, in bytes */
    /* After an error: a short description, and the CONNACK return code to answer with when the
     * spec gives one (e.g. TN_MQTT_CONNACK_BAD_VERSION), or -1. */
    const char *error;
    int connack_rc;
} tn_mqtt_decoder;

void tn_mqtt_decoder_init(tn_mqtt_decoder *d, tn_mqtt_role role, uint32_t max_packet);
/* Forgets the CONNECT decoded last (its version), so the same CONNECT may be decoded again
 * (one the server handles later, once its authenticator has answered). */
void tn_mqtt_decoder_unconnect(tn_mqtt_decoder *d);

/*
 * Decodes one packet from buf[0..len). Returns:
 *   0           a packet in *pkt; *used = its size; views point into buf.
 *   TN_EAGAIN   the packet is not complete yet; *used = 0.
 *   TN_ETOOBIG  the fixed header announces more than max_packet.
 *   TN_EPROTO   malformed or forbidden (d->error says what; d->connack_rc as above).
 * A CONNECT decoded by a server sets d->version; a second CONNECT is TN_EPROTO [MQTT-3.1.0-2].
 * Until then other packets are decoded by 3.1.1 rules (refusing them is the adapter's job,
 * [MQTT-3.1.0-1]). A server rejects server-only packets (CONNACK, SUBACK, ...) and vice versa.
 * 5.0 properties are checked for structure (known identifiers, values inside the block), not
 * for which packet may carry them; DISCONNECT/AUTH properties are checked but not returned.
 */
int tn_mqtt_decode(tn_mqtt_decoder *d, const uint8_t *buf, size_t len, size_t *used,
                   tn_mqtt_packet *pkt);

/*
 * The head of a PUBLISH whose payload is still arriving (a large message, received straight into
 * its place): decodes the fixed header and the variable header from buf[0..len), which starts at
 * the packet. Returns 0 with pkt as tn_mqtt_decode would give it, except payload.p is NULL and
 * payload.len is the payload's length; *used = the bytes of both headers. TN_EAGAIN while the
 * variable header has not all arrived; TN_EINVAL when buf does not start a PUBLISH; the errors of
 * tn_mqtt_decode otherwise. The decoder's state does not change: call it again from the start.
 */
int tn_mqtt_decode_publish_head(tn_mqtt_decoder *d, const uint8_t *buf, size_t len, size_t *used,
                                tn_mqtt_packet *pkt);

/* Next entry of a decoded list. SUBSCRIBE: filter + options byte (QoS in the low 2 bits);
 * UNSUBSCRIBE: filter, *opts = 0; SUBACK, UNSUBACK (5.0): *opts = return code, filter empty.
 * Returns false at the end. */
bool tn_mqtt_list_begin(const tn_mqtt_list *l, tn_mqtt_list_iter *it);
bool tn_mqtt_list_next(tn_mqtt_list_iter *it, tn_mqtt_type type, tn_mqtt_bytes *filter,
                       uint8_t *opts);

/* True when p[0..len) is well-formed UTF-8 without U+0000 and without surrogates
 * [MQTT-1.5.3-1], [MQTT-1.5.3-2]. */
bool tn_mqtt_utf8_valid(const uint8_t *p, size_t len);
/* True when filter is a valid MQTT topic filter: '+' and '#' only as whole levels, '#' last
 * [MQTT-4.7.1-2], [MQTT-4.7.1-3]; not empty [MQTT-4.7.3-1]. */
bool tn_mqtt_filter_valid(const uint8_t *p, size_t len);

/* Encoders (append to out). version is TN_MQTT_V31, TN_MQTT_V311 or TN_MQTT_V5. Besides
 * TN_ETOOBIG they return TN_EINVAL, out unchanged, for what no packet can carry (a string over
 * 65,535 bytes, QoS 3, no filters, a bad type or version). In 5.0 the property blocks are the
 * props/will_props bytes given (borrowed, written as they are) or empty where the encoder takes
 * none; acks use the full form with a reason code. */
int tn_mqtt_encode_connect(tn_buf *out, const tn_mqtt_connect *c);
int tn_mqtt_encode_connack(tn_buf *out, uint8_t version, bool session_present, uint8_t rc);
int tn_mqtt_encode_publish(tn_buf *out, uint8_t version, const tn_mqtt_publish *p);
/* The same PUBLISH without the payload's bytes (its length counts): the caller writes
 * p->payload.len bytes of payload next, e.g. by reference to the message (tn_io.out_ref). */
int tn_mqtt_encode_publish_head(tn_buf *out, uint8_t version, const tn_mqtt_publish *p);
/* PUBACK, PUBREC, PUBREL (flags 0x2 set for you), PUBCOMP, UNSUBACK (5.0: one reason code) */
int tn_mqtt_encode_ack(tn_buf *out, uint8_t version, tn_mqtt_type type, uint16_t pid, uint8_t rc);
/* SUBSCRIBE: n filters with their options byte. */
int tn_mqtt_encode_subscribe(tn_buf *out, uint8_t version, uint16_t pid,
                             const tn_mqtt_bytes *filters, const uint8_t *opts, uint32_t n);
int tn_mqtt_encode_unsubscribe(tn_buf *out, uint8_t version, uint16_t pid,
                               const tn_mqtt_bytes *filters, uint32_t n);
int tn_mqtt_encode_suback(tn_buf *out, uint8_t version, uint16_t pid, const uint8_t *rcs,
                          uint32_t n);
/* PINGREQ, PINGRESP, DISCONNECT (3.1.1 form) */
int tn_mqtt_encode_simple(tn_buf *out, tn_mqtt_type type);

/* Size of the remaining-length varint for n, or 0 when n > 268,435,455. */
unsigned tn_mqtt_varint_size(uint32_t n);

#endif
