/*
 * AMQP 1.0 message codec: the type system of part 1 and the message sections of part 3.2.
 *
 * A value is checked whole when it is decoded: every element of a list, map or array, to the
 * bottom, so that everything after (sections, fields, map entries) can step through bytes that
 * are known to be well-formed. Nesting is bounded by TN_AMQP_MAX_DEPTH and each size is checked
 * against what is left before it is used. Elements of an array of a fixed-width type are not
 * looped over (an array of a billion nulls takes no bytes): count times width must be its size.
 *
 * Section and part numbers are those of the OASIS AMQP 1.0 specification.
 */
#include "protocols/amqp/codec.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Format codes (part 1.6). */
enum {
    C_DESCRIBED = 0x00,
    C_NULL = 0x40,
    C_TRUE = 0x41,
    C_FALSE = 0x42,
    C_UINT0 = 0x43,
    C_ULONG0 = 0x44,
    C_LIST0 = 0x45,
    C_UBYTE = 0x50,
    C_BYTE = 0x51,
    C_SMALLUINT = 0x52,
    C_SMALLULONG = 0x53,
    C_SMALLINT = 0x54,
    C_SMALLLONG = 0x55,
    C_BOOLEAN = 0x56,
    C_USHORT = 0x60,
    C_SHORT = 0x61,
    C_UINT = 0x70,
    C_INT = 0x71,
    C_FLOAT = 0x72,
    C_CHAR = 0x73,
    C_DECIMAL32 = 0x74,
    C_ULONG = 0x80,
    C_LONG = 0x81,
    C_DOUBLE = 0x82,
    C_TIMESTAMP = 0x83,
    C_DECIMAL64 = 0x84,
    C_DECIMAL128 = 0x94,
    C_UUID = 0x98,
    C_VBIN8 = 0xa0,
    C_STR8 = 0xa1,
    C_SYM8 = 0xa3,
    C_VBIN32 = 0xb0,
    C_STR32 = 0xb1,
    C_SYM32 = 0xb3,
    C_LIST8 = 0xc0,
    C_MAP8 = 0xc1,
    C_LIST32 = 0xd0,
    C_MAP32 = 0xd1,
    C_ARRAY8 = 0xe0,
    C_ARRAY32 = 0xf0,
};

/* How the bytes after a format code are laid out (part 1.2, "Format Code" subcategories). */
enum {
    K_BAD,
    K_FIXED,    /* width bytes */
    K_VAR,      /* size (width bytes), then size bytes */
    K_COMPOUND, /* size and count (width bytes each), then the elements */
    K_ARRAY,    /* size and count (width bytes each), then a constructor and the elements */
};

typedef struct layout {
    uint8_t kind;
    uint8_t width;
} layout;

static layout
layout_of(uint8_t code)
{
    switch (code) {
    case C_NULL:
    case C_TRUE:
    case C_FALSE:
    case C_UINT0:
    case C_ULONG0:
    case C_LIST0:
        return (layout){K_FIXED, 0};
    case C_UBYTE:
    case C_BYTE:
    case C_SMALLUINT:
    case C_SMALLULONG:
    case C_SMALLINT:
    case C_SMALLLONG:
    case C_BOOLEAN:
        return (layout){K_FIXED, 1};
    case C_USHORT:
    case C_SHORT:
        return (layout){K_FIXED, 2};
    case C_UINT:
    case C_INT:
    case C_FLOAT:
    case C_CHAR:
    case C_DECIMAL32:
        return (layout){K_FIXED, 4};
    case C_ULONG:
    case C_LONG:
    case C_DOUBLE:
    case C_TIMESTAMP:
    case C_DECIMAL64:
        return (layout){K_FIXED, 8};
    case C_DECIMAL128:
    case C_UUID:
        return (layout){K_FIXED, 16};
    case C_VBIN8:
    case C_STR8:
    case C_SYM8:
        return (layout){K_VAR, 1};
    case C_VBIN32:
    case C_STR32:
    case C_SYM32:
        return (layout){K_VAR, 4};
    case C_LIST8:
    case C_MAP8:
        return (layout){K_COMPOUND, 1};
    case C_LIST32:
    case C_MAP32:
        return (layout){K_COMPOUND, 4};
    case C_ARRAY8:
        return (layout){K_ARRAY, 1};
    case C_ARRAY32:
        return (layout){K_ARRAY, 4};
    default:
        return (layout){K_BAD, 0};
    }
}

static bool
is_list(uint8_t code)
{
    return code == C_LIST0 || code == C_LIST8 || code == C_LIST32;
}

static bool
is_map(uint8_t code)
{
    return code == C_MAP8 || code == C_MAP32;
}

static uint32_t
get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static uint32_t
get_be(const uint8_t *p, unsigned width)
{
    return width == 1 ? p[0] : get_be32(p);
}

static void
set_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- Decoding values ---- */

static int decode(const uint8_t *p, size_t n, unsigned depth, tn_amqp_value *v, size_t *used);
static int encoding(uint8_t code, const uint8_t *p, size_t n, unsigned depth, tn_amqp_span *data,
                    uint32_t *count, size_t *used);

/* Checks that p[0..n) is exactly count values. */
static int
elements(const uint8_t *p, size_t n, uint32_t count, unsigned depth)
{
    size_t off = 0;
    for (uint32_t i = 0; i < count; i++) {
        tn_amqp_value v;
        size_t k;
        if (decode(p + off, n - off, depth, &v, &k) != 0)
            return TN_EPROTO;
        off += k;
    }
    return off == n ? 0 : TN_EPROTO;
}

/*
 * A constructor at p[0..n): a format code, or 0x00, a descriptor and a constructor (part 1.2,
 * "constructor"). *code gets the format code, *used the bytes, *described whether there was a
 * descriptor.
 */
static int
constructor(const uint8_t *p, size_t n, unsigned depth, uint8_t *code, bool *described,
            size_t *used)
{
    size_t off = 0;

    *described = false;
    for (;;) {
        if (depth > TN_AMQP_MAX_DEPTH || off == n)
            return TN_EPROTO;
        if (p[off] != C_DESCRIBED)
            break;
        tn_amqp_value d;
        size_t k;
        if (decode(p + off + 1, n - off - 1, depth + 1, &d, &k) != 0)
            return TN_EPROTO;
        off += 1 + k;
        *described = true;
        depth++;
    }
    *code = p[off];
    *used = off + 1;
    return 0;
}

/* The elements of an array (part 1.2, "array"): count encodings of code, with no constructor
 * of their own, exactly filling p[0..n). */
static int
array_elements(uint8_t code, const uint8_t *p, size_t n, uint32_t count, unsigned depth)
{
    layout l = layout_of(code);

    if (l.kind == K_BAD)
        return TN_EPROTO;
    if (l.kind == K_FIXED)
        return (uint64_t)count * l.width == n ? 0 : TN_EPROTO;
    size_t off = 0;
    for (uint32_t i = 0; i < count; i++) {
        tn_amqp_span data;
        uint32_t c;
        size_t k;
        if (off == n || encoding(code, p + off, n - off, depth, &data, &c, &k) != 0)
            return TN_EPROTO;
        off += k;
    }
    return off == n ? 0 : TN_EPROTO;
}

/* The bytes after format code `code` (in p[0..n)): their length (*used) and, as in
 * tn_amqp_value, *data and *count. Compound contents are checked to the bottom. */
static int
encoding(uint8_t code, const uint8_t *p, size_t n, unsigned depth, tn_amqp_span *data,
         uint32_t *count, size_t *used)
{
    layout l = layout_of(code);
    unsigned w = l.width;

    *count = 0;
    switch (l.kind) {
    case K_FIXED:
        if (n < w)
            return TN_EPROTO;
        *data = (tn_amqp_span){p, w};
        *used = w;
        return 0;
    case K_VAR: {
        if (n < w)
            return TN_EPROTO;
        uint32_t size = get_be(p, w);
        if (size > n - w)
            return TN_EPROTO;
        *data = (tn_amqp_span){p + w, size};
        *used = w + (size_t)size;
        return 0;
    }
    case K_COMPOUND:
    case K_ARRAY: {
        /* size counts the bytes after itself: the count and the rest. */
        if (n < 2 * (size_t)w || depth >= TN_AMQP_MAX_DEPTH)
            return TN_EPROTO;
        uint32_t size = get_be(p, w);
        if (size < w || size > n - w)
            return TN_EPROTO;
        uint32_t c = get_be(p + w, w);
        const uint8_t *q = p + 2 * w;
        size_t left = size - w;
        *data = (tn_amqp_span){q, left};
        *count = c;
        *used = w + (size_t)size;
        if (l.kind == K_COMPOUND) {
            if (is_map(code) && c % 2 != 0)
                return TN_EPROTO;
            return elements(q, left, c, depth + 1);
        }
        /* An empty array may still have its constructor; it must have one. */
        uint8_t ecode;
        bool described;
        size_t k;
        if (constructor(q, left, depth + 1, &ecode, &described, &k) != 0)
            return TN_EPROTO;
        return array_elements(ecode, q + k, left - k, c, depth + 1);
    }
    default:
        return TN_EPROTO;
    }
}

static int
decode(const uint8_t *p, size_t n, unsigned depth, tn_amqp_value *v, size_t *used)
{
    size_t k, e;

    memset(v, 0, sizeof *v);
    if (constructor(p, n, depth, &v->code, &v->described, &k) != 0)
        return TN_EPROTO;
    if (encoding(v->code, p + k, n - k, depth, &v->data, &v->count, &e) != 0)
        return TN_EPROTO;
    v->raw = (tn_amqp_span){p, k + e};
    *used = k + e;
    return 0;
}

int
tn_amqp_value_decode(const uint8_t *p, size_t n, tn_amqp_value *v, size_t *used)
{
    int rc = decode(p, n, 0, v, used);
    if (rc != 0)
        memset(v, 0, sizeof *v);
    return rc;
}

/* ---- Typed fields ---- */

static bool
get_bool(const tn_amqp_value *v, bool *out)
{
    if (v->described)
        return false;
    switch (v->code) {
    case C_TRUE:
        *out = true;
        return true;
    case C_FALSE:
        *out = false;
        return true;
    case C_BOOLEAN:
        *out = v->data.p[0] != 0;
        return true;
    default:
        return false;
    }
}

static bool
get_uint(const tn_amqp_value *v, uint32_t *out)
{
    if (v->described)
        return false;
    switch (v->code) {
    case C_UINT0:
        *out = 0;
        return true;
    case C_SMALLUINT:
        *out = v->data.p[0];
        return true;
    case C_UINT:
        *out = get_be32(v->data.p);
        return true;
    default:
        return false;
    }
}

static bool
get_ulong(const tn_amqp_value *v, uint64_t *out)
{
    if (v->described)
        return false;
    switch (v->code) {
    case C_ULONG0:
        *out = 0;
        return true;
    case C_SMALLULONG:
        *out = v->data.p[0];
        return true;
    case C_ULONG:
        *out = get_be64(v->data.p);
        return true;
    default:
        return false;
    }
}

/* A field of type string (str8, str32), binary or symbol: its bytes. */
static bool
get_bytes(const tn_amqp_value *v, uint8_t code8, uint8_t code32, tn_amqp_span *out)
{
    if (v->described || (v->code != code8 && v->code != code32))
        return false;
    *out = v->data;
    return true;
}

/* message-id and correlation-id (part 3.2.11-3.2.15): ulong, uuid, binary or string. */
static bool
is_message_id(const tn_amqp_value *v)
{
    switch (v->described ? 0 : v->code) {
    case C_ULONG0:
    case C_SMALLULONG:
    case C_ULONG:
    case C_UUID:
    case C_VBIN8:
    case C_VBIN32:
    case C_STR8:
    case C_STR32:
        return true;
    default:
        return false;
    }
}

/* The header's fields (part 3.2.1). Fields past the five defined ones are ignored (a later
 * version may add some, part 1.4 "Composite Types"); a boolean 0x56 is true when not 0. */
static int
header_fields(const tn_amqp_value *list, tn_amqp_msg *m)
{
    const uint8_t *p = list->data.p;
    size_t left = list->data.n;

    for (uint32_t i = 0; i < list->count; i++) {
        tn_amqp_value f;
        size_t k;
        bool ok = true;
        if (decode(p, left, 1, &f, &k) != 0)
            return TN_EPROTO;
        p += k, left -= k;
        if (f.code == C_NULL && !f.described)
            continue;
        switch (i) {
        case 0:
            ok = get_bool(&f, &m->durable);
            break;
        case 1:
            ok = f.code == C_UBYTE && !f.described;
            if (ok)
                m->priority = f.data.p[0];
            break;
        case 2:
            ok = get_uint(&f, &m->ttl);
            m->has_ttl = ok;
            break;
        case 3:
            ok = get_bool(&f, &m->first_acquirer);
            break;
        case 4:
            ok = get_uint(&f, &m->delivery_count);
            break;
        }
        if (!ok)
            return TN_EPROTO;
    }
    return 0;
}

/* The properties' fields (part 3.2.4). Fields past the thirteen defined ones are ignored. */
static int
properties_fields(const tn_amqp_value *list, tn_amqp_msg *m)
{
    const uint8_t *p = list->data.p;
    size_t left = list->data.n;

    for (uint32_t i = 0; i < list->count; i++) {
        tn_amqp_value f;
        size_t k;
        bool ok = true;
        uint64_t ts;
        if (decode(p, left, 1, &f, &k) != 0)
            return TN_EPROTO;
        p += k, left -= k;
        if (f.code == C_NULL && !f.described)
            continue;
        switch (i) {
        case 0:
        case 5:
            ok = is_message_id(&f);
            if (ok)
                *(i == 0 ? &m->message_id : &m->correlation_id) = f;
            break;
        case 1:
            ok = get_bytes(&f, C_VBIN8, C_VBIN32, &m->user_id);
            break;
        case 2:
            ok = get_bytes(&f, C_STR8, C_STR32, &m->to);
            break;
        case 3:
            ok = get_bytes(&f, C_STR8, C_STR32, &m->subject);
            break;
        case 4:
            ok = get_bytes(&f, C_STR8, C_STR32, &m->reply_to);
            break;
        case 6:
            ok = get_bytes(&f, C_SYM8, C_SYM32, &m->content_type);
            break;
        case 7:
            ok = get_bytes(&f, C_SYM8, C_SYM32, &m->content_encoding);
            break;
        case 8:
        case 9:
            ok = f.code == C_TIMESTAMP && !f.described;
            if (!ok)
                break;
            ts = get_be64(f.data.p);
            if (i == 8) {
                m->has_absolute_expiry_time = true;
                m->absolute_expiry_time = (int64_t)ts;
            } else {
                m->has_creation_time = true;
                m->creation_time = (int64_t)ts;
            }
            break;
        case 10:
            ok = get_bytes(&f, C_STR8, C_STR32, &m->group_id);
            break;
        case 11:
            ok = get_uint(&f, &m->group_sequence);
            m->has_group_sequence = ok;
            break;
        case 12:
            ok = get_bytes(&f, C_STR8, C_STR32, &m->reply_to_group_id);
            break;
        }
        if (!ok)
            return TN_EPROTO;
    }
    return 0;
}

/* ---- Sections ---- */

static const char *const section_names[] = {
    [TN_AMQP_HEADER - TN_AMQP_HEADER] = "amqp:header:list",
    [TN_AMQP_DELIVERY_ANNOTATIONS - TN_AMQP_HEADER] = "amqp:delivery-annotations:map",
    [TN_AMQP_MESSAGE_ANNOTATIONS - TN_AMQP_HEADER] = "amqp:message-annotations:map",
    [TN_AMQP_PROPERTIES - TN_AMQP_HEADER] = "amqp:properties:list",
    [TN_AMQP_APPLICATION_PROPERTIES - TN_AMQP_HEADER] = "amqp:application-properties:map",
    [TN_AMQP_DATA - TN_AMQP_HEADER] = "amqp:data:binary",
    [TN_AMQP_SEQUENCE - TN_AMQP_HEADER] = "amqp:amqp-sequence:list",
    [TN_AMQP_VALUE - TN_AMQP_HEADER] = "amqp:amqp-value:*",
    [TN_AMQP_FOOTER - TN_AMQP_HEADER] = "amqp:footer:map",
};

/* The section a descriptor names (TN_AMQP_HEADER..TN_AMQP_FOOTER), or 0. Descriptor codes are
 * domain 0x00000000, so only the low byte may be set (part 3.2). */
static int
section_id(const tn_amqp_value *d)
{
    uint64_t id;
    tn_amqp_span name;

    if (get_ulong(d, &id))
        return id >= TN_AMQP_HEADER && id <= TN_AMQP_FOOTER ? (int)id : 0;
    if (!get_bytes(d, C_SYM8, C_SYM32, &name))
        return 0;
    for (int i = 0; i <= TN_AMQP_FOOTER - TN_AMQP_HEADER; i++) {
        const char *s = section_names[i];
        if (strlen(s) == name.n && memcmp(s, name.p, name.n) == 0)
            return TN_AMQP_HEADER + i;
    }
    return 0;
}

/* A section at p[0..n): its id, its value (after the descriptor) and its length. */
static int
section(const uint8_t *p, size_t n, int *id, tn_amqp_value *v, size_t *used)
{
    tn_amqp_value d;
    size_t k, e;

    if (n == 0 || p[0] != C_DESCRIBED)
        return TN_EPROTO;
    if (decode(p + 1, n - 1, 1, &d, &k) != 0)
        return TN_EPROTO;
    *id = section_id(&d);
    if (decode(p + 1 + k, n - 1 - k, 1, v, &e) != 0)
        return TN_EPROTO;
    *used = 1 + k + e;
    return 0;
}

/* Order of the sections (part 3.2): header, delivery-annotations, message-annotations,
 * properties, application-properties, body, footer. */
#define RANK_BODY 6

static int
rank(int id)
{
    switch (id) {
    case 0:
        return 0;
    case TN_AMQP_DATA:
    case TN_AMQP_SEQUENCE:
    case TN_AMQP_VALUE:
        return RANK_BODY;
    case TN_AMQP_FOOTER:
        return RANK_BODY + 1;
    default:
        return id - TN_AMQP_HEADER + 1;
    }
}

/* Where a section holding a map goes. */
static tn_amqp_span *
map_section(tn_amqp_msg *m, int id)
{
    switch (id) {
    case TN_AMQP_DELIVERY_ANNOTATIONS:
        return &m->delivery_annotations;
    case TN_AMQP_MESSAGE_ANNOTATIONS:
        return &m->message_annotations;
    case TN_AMQP_APPLICATION_PROPERTIES:
        return &m->application_properties;
    default:
        return &m->footer;
    }
}

static int
bad(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return TN_EPROTO;
}

int
tn_amqp_msg_decode(const uint8_t *p, size_t n, tn_amqp_msg *m, const char **why)
{
    size_t off = 0;
    int last = 0, body_id = 0, nbody = 0;
    const uint8_t *body_end = NULL, *bare_end = NULL;
    tn_amqp_value first_body = {0};

    memset(m, 0, sizeof *m);
    m->priority = 4;
    if (why)
        *why = NULL;
    while (off < n) {
        tn_amqp_value v;
        size_t k;
        int id;
        if (section(p + off, n - off, &id, &v, &k) != 0)
            return bad(why, "malformed section");
        if (id == 0)
            return bad(why, "unknown section");
        /* Only data and amqp-sequence sections may repeat, one after the other (part 3.2). */
        bool again = id == last && (id == TN_AMQP_DATA || id == TN_AMQP_SEQUENCE);
        if (rank(id) < rank(last) || (rank(id) == rank(last) && !again))
            return bad(why, "section out of order or repeated");
        tn_amqp_span s = {p + off, k};
        const char *type_error = NULL;
        switch (id) {
        case TN_AMQP_HEADER:
            m->header = s;
            if (v.described || !is_list(v.code))
                type_error = "header is not a list";
            else if (header_fields(&v, m) != 0)
                type_error = "bad header field";
            break;
        case TN_AMQP_PROPERTIES:
            m->properties = s;
            if (v.described || !is_list(v.code))
                type_error = "properties is not a list";
            else if (properties_fields(&v, m) != 0)
                type_error = "bad properties field";
            break;
        case TN_AMQP_DELIVERY_ANNOTATIONS:
        case TN_AMQP_MESSAGE_ANNOTATIONS:
        case TN_AMQP_APPLICATION_PROPERTIES:
        case TN_AMQP_FOOTER:
            *map_section(m, id) = s;
            if (v.described || !is_map(v.code))
                type_error = "annotations, application-properties or footer is not a map";
            break;
        case TN_AMQP_DATA:
            if (v.described || (v.code != C_VBIN8 && v.code != C_VBIN32))
                type_error = "data section is not binary";
            break;
        case TN_AMQP_SEQUENCE:
            if (v.described || !is_list(v.code))
                type_error = "amqp-sequence section is not a list";
            break;
        }
        if (rank(id) == RANK_BODY) {
            if (nbody++ == 0) {
                m->body.p = s.p;
                body_id = id;
                first_body = v;
            }
            body_end = s.p + s.n;
        }
        if (type_error)
            return bad(why, type_error);
        if (id == TN_AMQP_MESSAGE_ANNOTATIONS || id == TN_AMQP_PROPERTIES ||
            id == TN_AMQP_APPLICATION_PROPERTIES) {
            if (m->bare_head.p == NULL)
                m->bare_head.p = s.p;
            bare_end = s.p + s.n;
        }
        last = id;
        off += k;
    }

    if (m->bare_head.p)
        m->bare_head.n = (size_t)(bare_end - m->bare_head.p);
    if (nbody == 0) {
        /* No body: an empty message, reported as one empty data section where the body would
         * be (before the footer). */
        m->body_kind = TN_AMQP_BODY_DATA;
        m->content = (tn_amqp_span){m->footer.p ? m->footer.p : n ? p + n : p, 0};
        return 0;
    }
    m->body.n = (size_t)(body_end - m->body.p);
    if (nbody == 1 && body_id == TN_AMQP_DATA) {
        m->body_kind = TN_AMQP_BODY_DATA;
        m->content = first_body.data;
    } else if (nbody == 1 && body_id == TN_AMQP_VALUE && !first_body.described &&
               (first_body.code == C_STR8 || first_body.code == C_STR32)) {
        m->body_kind = TN_AMQP_BODY_STRING;
        m->content = first_body.data;
    } else if (nbody == 1 && body_id == TN_AMQP_VALUE && !first_body.described &&
               (first_body.code == C_VBIN8 || first_body.code == C_VBIN32)) {
        m->body_kind = TN_AMQP_BODY_BINARY;
        m->content = first_body.data;
    } else {
        m->body_kind = TN_AMQP_BODY_OTHER;
        m->content = m->body;
    }
    return 0;
}

/* ---- Maps ---- */

int
tn_amqp_map_begin(tn_amqp_span m, tn_amqp_map_iter *it)
{
    tn_amqp_value v;
    size_t k;

    memset(it, 0, sizeof *it);
    if (m.p == NULL)
        return 0;
    if (m.n > 0 && m.p[0] == C_DESCRIBED) {
        int id;
        if (section(m.p, m.n, &id, &v, &k) != 0 || k != m.n)
            return TN_EPROTO;
        if (id != TN_AMQP_DELIVERY_ANNOTATIONS && id != TN_AMQP_MESSAGE_ANNOTATIONS &&
            id != TN_AMQP_APPLICATION_PROPERTIES && id != TN_AMQP_FOOTER)
            return TN_EPROTO;
    } else if (decode(m.p, m.n, 0, &v, &k) != 0 || k != m.n) {
        return TN_EPROTO;
    }
    if (v.described || !is_map(v.code))
        return TN_EPROTO;
    it->p = v.data.p;
    it->end = v.data.p + v.data.n;
    it->left = v.count;
    return 0;
}

int
tn_amqp_map_next(tn_amqp_map_iter *it, tn_amqp_value *key, tn_amqp_value *val)
{
    size_t k, e;

    if (it->left == 0)
        return it->p == it->end ? 0 : TN_EPROTO;
    if (it->left < 2)
        return TN_EPROTO;
    if (decode(it->p, (size_t)(it->end - it->p), 1, key, &k) != 0)
        return TN_EPROTO;
    if (decode(it->p + k, (size_t)(it->end - it->p) - k, 1, val, &e) != 0)
        return TN_EPROTO;
    it->p += k + e;
    it->left -= 2;
    return 1;
}

/* ---- Text ---- */

/* The shortest %g form of d (up to max digits) that reads back as d (as a float when single). */
static int
format_real(char *tmp, size_t size, double d, int max, bool single)
{
    int len = 0;
    for (int prec = 1; prec <= max; prec++) {
        len = snprintf(tmp, size, "%.*g", prec, d);
        if (!isfinite(d))
            break;
        if (single ? strtof(tmp, NULL) == (float)d : strtod(tmp, NULL) == d)
            break;
    }
    return len;
}

/* A UTF-32 code point as UTF-8, or -1 for a surrogate or a value past U+10FFFF. */
static int
utf8(uint32_t c, char *out)
{
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xc0 | c >> 6);
        out[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c >= 0xd800 && c <= 0xdfff)
        return -1;
    if (c < 0x10000) {
        out[0] = (char)(0xe0 | c >> 12);
        out[1] = (char)(0x80 | (c >> 6 & 0x3f));
        out[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    if (c > 0x10ffff)
        return -1;
    out[0] = (char)(0xf0 | c >> 18);
    out[1] = (char)(0x80 | (c >> 12 & 0x3f));
    out[2] = (char)(0x80 | (c >> 6 & 0x3f));
    out[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

int
tn_amqp_value_text(const tn_amqp_value *v, char *buf, size_t cap)
{
    char tmp[64];
    const uint8_t *d = v->data.p;
    int len = -1;

    if (v->described)
        return TN_EINVAL;
    switch (v->code) {
    case C_VBIN8:
    case C_VBIN32:
    case C_STR8:
    case C_STR32:
    case C_SYM8:
    case C_SYM32:
        if (v->data.n > cap || v->data.n > INT_MAX)
            return TN_EINVAL;
        if (v->data.n > 0)
            memcpy(buf, d, v->data.n);
        return (int)v->data.n;
    case C_NULL:
        return 0;
    case C_TRUE:
    case C_FALSE:
    case C_BOOLEAN:
        len = v->code == C_TRUE || (v->code == C_BOOLEAN && d[0] != 0)
                  ? snprintf(tmp, sizeof tmp, "true")
                  : snprintf(tmp, sizeof tmp, "false");
        break;
    case C_UINT0:
    case C_ULONG0:
        len = snprintf(tmp, sizeof tmp, "0");
        break;
    case C_UBYTE:
    case C_SMALLUINT:
    case C_SMALLULONG:
        len = snprintf(tmp, sizeof tmp, "%u", (unsigned)d[0]);
        break;
    case C_BYTE:
    case C_SMALLINT:
    case C_SMALLLONG:
        len = snprintf(tmp, sizeof tmp, "%d", (int)(int8_t)d[0]);
        break;
    case C_USHORT:
        len = snprintf(tmp, sizeof tmp, "%u", (unsigned)(d[0] << 8 | d[1]));
        break;
    case C_SHORT:
        len = snprintf(tmp, sizeof tmp, "%d", (int)(int16_t)(uint16_t)(d[0] << 8 | d[1]));
        break;
    case C_UINT:
        len = snprintf(tmp, sizeof tmp, "%lu", (unsigned long)get_be32(d));
        break;
    case C_INT:
        len = snprintf(tmp, sizeof tmp, "%ld", (long)(int32_t)get_be32(d));
        break;
    case C_ULONG:
        len = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)get_be64(d));
        break;
    case C_LONG:
    case C_TIMESTAMP:
        len = snprintf(tmp, sizeof tmp, "%lld", (long long)(int64_t)get_be64(d));
        break;
    case C_FLOAT: {
        uint32_t bits = get_be32(d);
        float f;
        memcpy(&f, &bits, sizeof f);
        len = format_real(tmp, sizeof tmp, f, 9, true);
        break;
    }
    case C_DOUBLE: {
        uint64_t bits = get_be64(d);
        double x;
        memcpy(&x, &bits, sizeof x);
        len = format_real(tmp, sizeof tmp, x, 17, false);
        break;
    }
    case C_CHAR:
        len = utf8(get_be32(d), tmp);
        break;
    case C_UUID: {
        static const char hex[] = "0123456789abcdef";
        len = 0;
        for (int i = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10)
                tmp[len++] = '-';
            tmp[len++] = hex[d[i] >> 4];
            tmp[len++] = hex[d[i] & 15];
        }
        break;
    }
    default: /* decimals, lists, maps, arrays */
        return TN_EINVAL;
    }
    if (len < 0 || (size_t)len > cap)
        return TN_EINVAL;
    memcpy(buf, tmp, (size_t)len);
    return len;
}

/* ---- Encoding ---- */

/* Appends to a tn_buf with a sticky error; wr_end() puts the buffer back as it was on error. */
typedef struct wr {
    tn_buf *b;
    size_t start;
    int err;
} wr;

static void
wr_init(wr *w, tn_buf *b)
{
    w->b = b;
    w->start = b->len;
    w->err = 0;
}

static int
wr_end(wr *w)
{
    if (w->err)
        w->b->len = w->start;
    return w->err;
}

static inline void
put(wr *w, const void *p, size_t n)
{
    tn_buf *b = w->b;
    if (w->err)
        return;
    if (n == 0)
        return;                 /* p may be NULL then */
    if (b->cap - b->len >= n) { /* the usual case: room already there (cap <= max) */
        memcpy(b->data + b->len, p, n);
        b->len += n;
    } else if (tn_buf_append(b, p, n) != 0) {
        w->err = TN_ETOOBIG;
    }
}

static void
put_u8(wr *w, uint8_t c)
{
    put(w, &c, 1);
}

static void
put_be32(wr *w, uint32_t v)
{
    uint8_t b[4];
    set_be32(b, v);
    put(w, b, 4);
}

static void
put_be64(wr *w, uint64_t v)
{
    put_be32(w, (uint32_t)(v >> 32));
    put_be32(w, (uint32_t)v);
}

/* A described section's head: 0x00 and the smallulong descriptor code. */
static void
put_descriptor(wr *w, uint8_t id)
{
    uint8_t b[3] = {C_DESCRIBED, C_SMALLULONG, id};
    put(w, b, 3);
}

/* Binary, string or symbol: the 1-byte size form below 256 bytes. */
static void
put_var(wr *w, uint8_t code8, uint8_t code32, const void *p, size_t n)
{
    if (n > UINT32_MAX) {
        if (w->err == 0)
            w->err = TN_ETOOBIG;
        return;
    }
    if (n < 256) {
        put_u8(w, code8);
        put_u8(w, (uint8_t)n);
    } else {
        put_u8(w, code32);
        put_be32(w, (uint32_t)n);
    }
    put(w, p, n);
}

static void
put_uint(wr *w, uint32_t v)
{
    if (v == 0) {
        put_u8(w, C_UINT0);
    } else if (v < 256) {
        put_u8(w, C_SMALLUINT);
        put_u8(w, (uint8_t)v);
    } else {
        put_u8(w, C_UINT);
        put_be32(w, v);
    }
}

/* A list of fields is written as list32 with room for its size and count (list_open), then
 * moved down to a list8 when it turns out small enough (list_close). */
static size_t
list_open(wr *w)
{
    static const uint8_t head[9] = {C_LIST32};
    size_t at = w->b->len;
    put(w, head, sizeof head);
    return at;
}

static void
list_close(wr *w, size_t at, uint32_t count)
{
    if (w->err)
        return;
    uint8_t *p = w->b->data + at;
    size_t items = w->b->len - at - 9;
    if (items + 1 <= 255 && count <= 255) {
        p[0] = C_LIST8;
        p[1] = (uint8_t)(items + 1);
        p[2] = (uint8_t)count;
        memmove(p + 3, p + 9, items);
        w->b->len -= 6;
    } else if (items + 4 > UINT32_MAX) {
        w->err = TN_ETOOBIG;
    } else {
        set_be32(p + 1, (uint32_t)(items + 4));
        set_be32(p + 5, count);
    }
}

int
tn_amqp_put_header(tn_buf *b, bool durable, uint8_t priority, uint32_t ttl, bool first_acquirer,
                   uint32_t delivery_count, bool always)
{
    wr w;
    uint32_t count = delivery_count   ? 5
                     : first_acquirer ? 4
                     : ttl            ? 3
                     : priority != 4  ? 2
                     : durable        ? 1
                                      : 0;

    if (count == 0 && !always)
        return 0;
    wr_init(&w, b);
    put_descriptor(&w, TN_AMQP_HEADER);
    if (count == 0) {
        put_u8(&w, C_LIST0);
        return wr_end(&w);
    }
    /* Fields at their default are null (part 1.4: a null field has its default). */
    size_t at = list_open(&w);
    put_u8(&w, durable ? C_TRUE : C_NULL);
    if (count > 1) {
        if (priority != 4) {
            put_u8(&w, C_UBYTE);
            put_u8(&w, priority);
        } else {
            put_u8(&w, C_NULL);
        }
    }
    if (count > 2) {
        if (ttl)
            put_uint(&w, ttl);
        else
            put_u8(&w, C_NULL);
    }
    if (count > 3)
        put_u8(&w, first_acquirer ? C_TRUE : C_NULL);
    if (count > 4)
        put_uint(&w, delivery_count);
    list_close(&w, at, count);
    return wr_end(&w);
}

int
tn_amqp_put_properties(tn_buf *b, const tn_amqp_props_out *p)
{
    const tn_amqp_span *strs[13] = {
        [0] = &p->message_id,   [1] = &p->user_id,
        [2] = &p->to,           [3] = &p->subject,
        [4] = &p->reply_to,     [5] = &p->correlation_id,
        [6] = &p->content_type, [7] = &p->content_encoding,
        [10] = &p->group_id,    [12] = &p->reply_to_group_id,
    };
    bool present[13];
    uint32_t count = 0;
    wr w;

    for (int i = 0; i < 13; i++) {
        if (i == 8)
            present[i] = p->absolute_expiry_time != 0;
        else if (i == 9)
            present[i] = p->creation_time != 0;
        else if (i == 11)
            present[i] = p->has_group_sequence;
        else
            present[i] = strs[i]->p != NULL;
        if (present[i])
            count = (uint32_t)i + 1;
    }
    if (count == 0)
        return 0;
    wr_init(&w, b);
    put_descriptor(&w, TN_AMQP_PROPERTIES);
    size_t at = list_open(&w);
    for (uint32_t i = 0; i < count; i++) {
        if (!present[i]) {
            put_u8(&w, C_NULL);
        } else if (i == 8 || i == 9) {
            put_u8(&w, C_TIMESTAMP);
            put_be64(&w, (uint64_t)(i == 8 ? p->absolute_expiry_time : p->creation_time));
        } else if (i == 11) {
            put_uint(&w, p->group_sequence);
        } else if (i == 1) {
            put_var(&w, C_VBIN8, C_VBIN32, strs[i]->p, strs[i]->n);
        } else if (i == 6 || i == 7) {
            put_var(&w, C_SYM8, C_SYM32, strs[i]->p, strs[i]->n);
        } else {
            put_var(&w, C_STR8, C_STR32, strs[i]->p, strs[i]->n);
        }
    }
    list_close(&w, at, count);
    return wr_end(&w);
}

/* Annotation keys are symbols (part 3.2.10); application-properties keys strings (3.2.5). */
static bool
symbol_keys(const tn_buf *b, const tn_amqp_map_out *mo)
{
    uint8_t id = b->data[mo->start + 2];
    return id == TN_AMQP_DELIVERY_ANNOTATIONS || id == TN_AMQP_MESSAGE_ANNOTATIONS ||
           id == TN_AMQP_FOOTER;
}

int
tn_amqp_map_open(tn_buf *b, uint8_t descriptor, tn_amqp_map_out *mo)
{
    static const uint8_t head[9] = {C_MAP32};
    wr w;

    wr_init(&w, b);
    mo->start = b->len;
    mo->count = 0;
    put_descriptor(&w, descriptor);
    put(&w, head, sizeof head);
    return wr_end(&w);
}

int
tn_amqp_map_put_str(tn_buf *b, tn_amqp_map_out *mo, const char *k, size_t klen, const char *v,
                    size_t vlen)
{
    wr w;

    if (mo->count > UINT32_MAX - 2)
        return TN_ETOOBIG;
    wr_init(&w, b);
    if (symbol_keys(b, mo))
        put_var(&w, C_SYM8, C_SYM32, k, klen);
    else
        put_var(&w, C_STR8, C_STR32, k, klen);
    put_var(&w, C_STR8, C_STR32, v, vlen);
    if (w.err == 0)
        mo->count += 2;
    return wr_end(&w);
}

int
tn_amqp_map_close(tn_buf *b, tn_amqp_map_out *mo)
{
    uint8_t *p = b->data + mo->start + 3; /* after the descriptor */
    size_t items = b->len - mo->start - 3 - 9;

    if (mo->count == 0) {
        b->len = mo->start;
        return 0;
    }
    if (items > UINT32_MAX - 4) {
        b->len = mo->start;
        return TN_ETOOBIG;
    }
    set_be32(p + 1, (uint32_t)(items + 4));
    set_be32(p + 5, mo->count);
    return 0;
}

/* A section holding one binary or string value. */
static int
put_section_var(tn_buf *b, uint8_t id, uint8_t code8, uint8_t code32, const void *p, size_t n)
{
    wr w;

    wr_init(&w, b);
    put_descriptor(&w, id);
    put_var(&w, code8, code32, p, n);
    return wr_end(&w);
}

int
tn_amqp_put_data(tn_buf *b, const uint8_t *p, size_t n)
{
    return put_section_var(b, TN_AMQP_DATA, C_VBIN8, C_VBIN32, p, n);
}

int
tn_amqp_put_binary_value(tn_buf *b, const uint8_t *p, size_t n)
{
    return put_section_var(b, TN_AMQP_VALUE, C_VBIN8, C_VBIN32, p, n);
}

int
tn_amqp_put_string_value(tn_buf *b, const char *s, size_t n)
{
    return put_section_var(b, TN_AMQP_VALUE, C_STR8, C_STR32, s, n);
}

int
tn_amqp_put_data_head(tn_buf *b, size_t n)
{
    wr w;

    if (n > UINT32_MAX)
        return TN_ETOOBIG;
    wr_init(&w, b);
    put_descriptor(&w, TN_AMQP_DATA);
    put_u8(&w, C_VBIN32);
    put_be32(&w, (uint32_t)n);
    return wr_end(&w);
}

/* ---- Merging annotations ---- */

/* One entry of the map being merged in, found again by its key's encoding through a hash table
 * of indexes (0: empty slot). */
typedef struct entry {
    tn_amqp_span key, val;
    bool taken; /* its key is in old (so its value went there), or earlier in add */
} entry;

static uint64_t
hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static bool
span_eq(tn_amqp_span a, tn_amqp_span b)
{
    return a.n == b.n && memcmp(a.p, b.p, a.n) == 0;
}

/* The entry whose key is k, or NULL. */
static entry *
lookup(entry *e, const uint32_t *slots, size_t mask, tn_amqp_span k)
{
    for (size_t i = hash_bytes(k.p, k.n) & mask; slots[i]; i = (i + 1) & mask)
        if (span_eq(e[slots[i] - 1].key, k))
            return &e[slots[i] - 1];
    return NULL;
}

int
tn_amqp_annotations_merge(tn_buf *out, tn_amqp_span old, tn_amqp_span add)
{
    tn_amqp_map_iter io, ia;
    tn_amqp_value k, v;
    entry *e = NULL;
    uint32_t *slots = NULL;
    size_t ne = 0, mask = 0;
    uint64_t count = 0;
    int rc;
    wr w;

    wr_init(&w, out);
    if (tn_amqp_map_begin(old, &io) != 0 || tn_amqp_map_begin(add, &ia) != 0)
        return TN_EPROTO;
    if (ia.left > 0) {
        size_t nslots = 2;
        while (nslots < ia.left) /* twice the entries: left counts keys and values */
            nslots *= 2;
        mask = nslots - 1;
        e = calloc(ia.left / 2, sizeof *e);
        slots = calloc(nslots, sizeof *slots);
        if (e == NULL || slots == NULL) {
            rc = TN_ENOMEM;
            goto out;
        }
        while ((rc = tn_amqp_map_next(&ia, &k, &v)) == 1) {
            e[ne] = (entry){k.raw, v.raw, false};
            if (lookup(e, slots, mask, k.raw)) {
                e[ne++].taken = true; /* a repeated key: the first one counts */
                continue;
            }
            size_t i = hash_bytes(k.raw.p, k.raw.n) & mask;
            while (slots[i])
                i = (i + 1) & mask;
            slots[i] = (uint32_t)++ne;
        }
        if (rc != 0)
            goto out;
    }

    size_t at = out->len;
    put_descriptor(&w, TN_AMQP_MESSAGE_ANNOTATIONS);
    put(&w, (const uint8_t[9]){C_MAP32}, 9);
    while ((rc = tn_amqp_map_next(&io, &k, &v)) == 1) {
        entry *x = ne ? lookup(e, slots, mask, k.raw) : NULL;
        put(&w, k.raw.p, k.raw.n);
        if (x) {
            x->taken = true;
            put(&w, x->val.p, x->val.n);
        } else {
            put(&w, v.raw.p, v.raw.n);
        }
        count += 2;
    }
    if (rc != 0)
        goto out;
    for (size_t i = 0; i < ne; i++) {
        if (e[i].taken)
            continue;
        put(&w, e[i].key.p, e[i].key.n);
        put(&w, e[i].val.p, e[i].val.n);
        count += 2;
    }
    if (w.err) {
        rc = w.err;
        goto out;
    }
    if (count == 0) {
        out->len = at; /* nothing to annotate: no section */
        goto out;
    }
    size_t items = out->len - at - 3 - 9;
    if (items > UINT32_MAX - 4 || count > UINT32_MAX) {
        rc = TN_ETOOBIG;
        goto out;
    }
    set_be32(out->data + at + 4, (uint32_t)(items + 4));
    set_be32(out->data + at + 8, (uint32_t)count);
out:
    free(e);
    free(slots);
    if (rc != 0)
        out->len = w.start;
    return rc;
}
