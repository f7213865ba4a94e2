/*
 * AMQP 1.0 message codec: the bytes of one AMQP message (a transfer's payload: the sections of
 * OASIS AMQP 1.0 part 3.2, "Message Format") <-> what the broker needs of them, sans-IO and
 * without proton (proton's pn_message/pn_data allocate per message; the adapter keeps message
 * bytes opaque and decodes only what routing and the other protocols need). Types and their
 * encodings: part 1.6 ("Primitive Type Definitions") and 1.2 ("Type Encodings").
 *
 * Private to protocols/amqp (the adapter includes it); ternbench and tests may use it.
 *
 * Decoding never copies: spans point into the caller's bytes, which must outlive them. Every
 * size read from the input is checked against what is left, and nesting (lists, maps, arrays,
 * described values inside each other) is bounded (TN_AMQP_MAX_DEPTH), so any input is safe.
 * Encoders append to a tn_buf and leave it as it was on error (TN_ETOOBIG: the buffer's limit).
 */
#ifndef TN_AMQP_CODEC_H
#define TN_AMQP_CODEC_H

#include "core/base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TN_AMQP_MAX_DEPTH 32

/* Section descriptors (part 3.2; also accepted in their symbolic form, e.g. "amqp:data:binary"). */
enum {
    TN_AMQP_HEADER = 0x70,
    TN_AMQP_DELIVERY_ANNOTATIONS = 0x71,
    TN_AMQP_MESSAGE_ANNOTATIONS = 0x72,
    TN_AMQP_PROPERTIES = 0x73,
    TN_AMQP_APPLICATION_PROPERTIES = 0x74,
    TN_AMQP_DATA = 0x75,
    TN_AMQP_SEQUENCE = 0x76,
    TN_AMQP_VALUE = 0x77,
    TN_AMQP_FOOTER = 0x78,
};

/* Bytes inside the input (p NULL: absent). */
typedef struct tn_amqp_span {
    const uint8_t *p;
    size_t n;
} tn_amqp_span;

/* One encoded value as it is on the wire. */
typedef struct tn_amqp_value {
    uint8_t code;      /* its format code (0x40 null, 0x41 true, 0xa1 str8-utf8, 0xd1 map32, ...)
                          0 when absent; for a described value, the code of the value itself */
    bool described;    /* it had a descriptor (skipped: raw still covers it) */
    tn_amqp_span raw;  /* the whole encoding: descriptor, constructor and data */
    tn_amqp_span data; /* the data after the constructor: for variable-width types (binary,
                          string, symbol) the bytes without their size; for fixed-width types
                          their big-endian bytes (empty for null, true, false, uint0, ulong0);
                          for compound types (list, map, array) the bytes after size and count */
    uint32_t count;    /* compound types: their element count (a map: keys + values) */
} tn_amqp_value;

/* What a message's body is (the adapter keeps it as the core message's payload). */
typedef enum {
    TN_AMQP_BODY_DATA,   /* exactly one data section: content is its binary (an empty message,
                            with no body section at all, is reported as DATA with no bytes,
                            content pointing where the body would be) */
    TN_AMQP_BODY_STRING, /* exactly one amqp-value section holding a string (str8/str32):
                            content is the UTF-8 bytes */
    TN_AMQP_BODY_OTHER,  /* anything else (amqp-sequence sections, several data sections, an
                            amqp-value of another type): content is every body section,
                            verbatim (re-sent as it is) */
    TN_AMQP_BODY_BINARY, /* exactly one amqp-value section holding binary (vbin8/vbin32), as
                            python-qpid-proton sends bytes: content is the bytes */
} tn_amqp_body_kind;

typedef struct tn_amqp_msg {
    /* Sections, verbatim (descriptor included); absent ones have p NULL. body spans every body
     * section (data, amqp-sequence or amqp-value) from the first to the last. */
    tn_amqp_span header, delivery_annotations, message_annotations, properties,
        application_properties, body, footer;
    /* The bytes from the first of message-annotations, properties and application-properties
     * to the end of the last of them (they are adjacent on the wire), p NULL if none: kept
     * verbatim for AMQP receivers. */
    tn_amqp_span bare_head;
    tn_amqp_body_kind body_kind;
    tn_amqp_span content;

    /* header (defaults of part 3.2.1 when absent) */
    bool durable;     /* false */
    uint8_t priority; /* 4 */
    bool has_ttl;
    uint32_t ttl;            /* milliseconds */
    bool first_acquirer;     /* false */
    uint32_t delivery_count; /* 0 */

    /* properties (part 3.2.4); a null or absent field has code 0 / p NULL / has_ false */
    tn_amqp_value message_id, correlation_id;    /* ulong, uuid, binary or string */
    tn_amqp_span user_id;                        /* binary */
    tn_amqp_span to, subject, reply_to;          /* string (to and reply-to: addresses) */
    tn_amqp_span content_type, content_encoding; /* symbol */
    bool has_absolute_expiry_time, has_creation_time, has_group_sequence;
    int64_t absolute_expiry_time, creation_time; /* timestamps: ms since the epoch */
    tn_amqp_span group_id, reply_to_group_id;    /* string */
    uint32_t group_sequence;
} tn_amqp_msg;

/*
 * Decodes the sections of one message (p[0..n), a whole delivery's payload). Sections must
 * come in the order of part 3.2 (each at most once, body sections adjacent and of one kind);
 * every field of the header and properties lists must have its type (null allowed for each).
 * Returns 0, or TN_EPROTO for anything malformed (*why, if given, gets a static reason for a
 * decode-error condition).
 */
int tn_amqp_msg_decode(const uint8_t *p, size_t n, tn_amqp_msg *m, const char **why);

/* Decodes the one value at p[0..n): *v and the bytes it takes (*used). TN_EPROTO if malformed
 * or truncated. */
int tn_amqp_value_decode(const uint8_t *p, size_t n, tn_amqp_value *v, size_t *used);

/* Iterating a map: a section holding one (application-properties, message-annotations,
 * delivery-annotations, footer), or a bare map value. */
typedef struct tn_amqp_map_iter {
    const uint8_t *p, *end;
    uint32_t left; /* entries (keys + values) not yet returned */
} tn_amqp_map_iter;
/* TN_EPROTO if m is neither a map nor a section holding one; an absent span is an empty map. */
int tn_amqp_map_begin(tn_amqp_span m, tn_amqp_map_iter *it);
/* 1 and the next entry, 0 at the end, TN_EPROTO if malformed. */
int tn_amqp_map_next(tn_amqp_map_iter *it, tn_amqp_value *key, tn_amqp_value *val);

/*
 * The text form of a simple value, for protocols whose headers are text (STOMP): string,
 * symbol and binary as their bytes, booleans "true"/"false", integers in decimal, float and
 * double in the shortest %g form that reads back as the same value (at most 9 and 17 digits:
 * "0.1", "2.5", "1e+300", "inf", "nan"), timestamps as decimal ms, uuids in the 8-4-4-4-12
 * lower-case hex form, char as its UTF-8, null as "". Returns the length written (at most cap;
 * the text is not NUL-terminated), or TN_EINVAL for a compound or described value, a decimal
 * type, a char that is not a Unicode scalar value, or text longer than cap.
 */
int tn_amqp_value_text(const tn_amqp_value *v, char *buf, size_t cap);

/* ---- encoding ---- */

/* A header section; fields at their defaults are left out (an all-default header is still
 * written, as an empty list, when always is true). ttl 0: none. */
int tn_amqp_put_header(tn_buf *b, bool durable, uint8_t priority, uint32_t ttl, bool first_acquirer,
                       uint32_t delivery_count, bool always);

/* A properties section from text (what the other protocols carry); p NULL fields are null
 * (trailing nulls are left out; nothing is written when every field is null). */
typedef struct tn_amqp_props_out {
    tn_amqp_span message_id; /* written as a string */
    tn_amqp_span user_id;    /* binary */
    tn_amqp_span to, subject, reply_to;
    tn_amqp_span correlation_id;                 /* string */
    tn_amqp_span content_type, content_encoding; /* symbols */
    int64_t absolute_expiry_time, creation_time; /* 0: null */
    tn_amqp_span group_id;
    bool has_group_sequence;
    uint32_t group_sequence;
    tn_amqp_span reply_to_group_id;
} tn_amqp_props_out;
int tn_amqp_put_properties(tn_buf *b, const tn_amqp_props_out *p);

/* A section holding a map of string keys and string values (application-properties:
 * descriptor TN_AMQP_APPLICATION_PROPERTIES): open, add entries, close (which writes the size
 * and count; an open map with no entries is removed again by close). With the descriptor of
 * delivery- or message-annotations or footer the keys are written as symbols, which part
 * 3.2.10 requires. After an error from put_str the map cannot be closed: the caller drops it
 * (b->len = mo->start). */
typedef struct tn_amqp_map_out {
    size_t start; /* where the section begins in the buffer */
    uint32_t count;
} tn_amqp_map_out;
int tn_amqp_map_open(tn_buf *b, uint8_t descriptor, tn_amqp_map_out *mo);
int tn_amqp_map_put_str(tn_buf *b, tn_amqp_map_out *mo, const char *k, size_t klen, const char *v,
                        size_t vlen);
int tn_amqp_map_close(tn_buf *b, tn_amqp_map_out *mo);

/* Body sections. */
int tn_amqp_put_data(tn_buf *b, const uint8_t *p, size_t n);
int tn_amqp_put_string_value(tn_buf *b, const char *s, size_t n);
/* An amqp-value section holding binary. */
int tn_amqp_put_binary_value(tn_buf *b, const uint8_t *p, size_t n);
/* Just the head of a data section for n bytes that the caller sends after it (by reference):
 * descriptor and vbin32 constructor and size. */
int tn_amqp_put_data_head(tn_buf *b, size_t n);

/*
 * A message-annotations section that is old (a section, or absent) with the entries of add (a
 * bare map value, e.g. the message-annotations of a modified outcome) merged in: keys of add
 * replace equal keys of old (compared by their encoding), new ones are appended (when add
 * repeats a key, its first entry counts). add may also be absent or a map section. Nothing is
 * written when the result has no entries. TN_EPROTO if either is malformed, TN_ENOMEM if the
 * index of add's keys (one allocation, freed before returning) cannot be allocated.
 */
int tn_amqp_annotations_merge(tn_buf *out, tn_amqp_span old, tn_amqp_span add);

#endif
