/*
 * Fuzz target for the AMQP message codec. The input is one message's bytes as a peer would send
 * them in a transfer.
 *
 * Checked, when the input decodes: every span lies inside the input, sections in their order and
 * the content inside the body; the maps of the annotations, application-properties and footer
 * iterate to their end; value_text on each of their values fits the room it is given (an
 * allocation of exactly that size, so ASan sees one byte too many). Then what can be encoded
 * again is: the header's fields, the properties as the text the other protocols would carry,
 * the application-properties whose keys and values are strings, the body's content; each is
 * decoded back and compared. Last, the input's message-annotations are merged with a fixed map
 * and with the input's application-properties map, and the output is checked entry by entry.
 * Whatever the input, value_decode of it must stay inside it. Failures abort, which libFuzzer and
 * tests/fuzz/replay.c report as a crash.
 */
#include "protocols/amqp/codec.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* The output is bounded by what the input can produce: a few times its size. */
#define BUF_MAX(size) (4 * (size) + 4096)

static bool
inside(tn_amqp_span s, tn_amqp_span in)
{
    if (s.p == NULL)
        return s.n == 0;
    return s.p >= in.p && s.n <= in.n && (size_t)(s.p - in.p) <= in.n - s.n;
}

static bool
span_eq(tn_amqp_span a, tn_amqp_span b)
{
    return (a.p == NULL) == (b.p == NULL) && a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

static void
check_value(const tn_amqp_value *v, tn_amqp_span in)
{
    CHECK(inside(v->raw, in) && inside(v->data, v->raw));
    CHECK(v->code != 0);
}

/* value_text into an exact-size allocation of cap bytes (at least one, for malloc). */
static int
text(const tn_amqp_value *v, size_t cap, char **out)
{
    char *buf = malloc(cap ? cap : 1);
    CHECK(buf != NULL);
    int n = tn_amqp_value_text(v, buf, cap);
    CHECK(n == TN_EINVAL || (n >= 0 && (size_t)n <= cap));
    if (n < 0 || out == NULL)
        free(buf);
    else
        *out = buf;
    return n;
}

/* Iterates a map section to its end; every entry inside the input. Returns the entries. */
static uint32_t
check_map(tn_amqp_span map, bool texts)
{
    tn_amqp_map_iter it;
    tn_amqp_value k, v;
    uint32_t n = 0;
    int rc;

    CHECK(tn_amqp_map_begin(map, &it) == 0);
    uint32_t left = it.left;
    while ((rc = tn_amqp_map_next(&it, &k, &v)) == 1) {
        check_value(&k, map);
        check_value(&v, map);
        if (texts) {
            /* Too little room, then enough for any simple value, then exactly the length. */
            int len = text(&v, 64, NULL);
            if (len >= 0) {
                CHECK(text(&v, (size_t)len, NULL) == len);
                if (len > 0)
                    CHECK(text(&v, (size_t)len - 1, NULL) == TN_EINVAL);
            } else if (v.data.n > 64) {
                text(&v, v.data.n, NULL);
            }
        }
        n++;
    }
    CHECK(rc == 0 && n * 2 == left);
    return n;
}

static void
check_spans(const tn_amqp_msg *m, tn_amqp_span in)
{
    const tn_amqp_span order[] = {m->header,     m->delivery_annotations,   m->message_annotations,
                                  m->properties, m->application_properties, m->body,
                                  m->footer};
    const uint8_t *at = in.p;
    size_t total = 0;

    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        CHECK(inside(order[i], in));
        if (order[i].p == NULL)
            continue;
        CHECK(order[i].p == at && order[i].n > 0); /* adjacent, in order, nothing between */
        at += order[i].n;
        total += order[i].n;
    }
    CHECK(total == in.n);
    CHECK(inside(m->bare_head, in));
    if (m->bare_head.p) {
        const uint8_t *first = m->message_annotations.p ? m->message_annotations.p
                               : m->properties.p        ? m->properties.p
                                                        : m->application_properties.p;
        CHECK(m->bare_head.p == first);
        const tn_amqp_span last = m->application_properties.p ? m->application_properties
                                  : m->properties.p           ? m->properties
                                                              : m->message_annotations;
        CHECK(m->bare_head.p + m->bare_head.n == last.p + last.n);
    } else {
        CHECK(!m->message_annotations.p && !m->properties.p && !m->application_properties.p);
    }
    const tn_amqp_span fields[] = {
        m->user_id,          m->to,       m->subject,          m->reply_to, m->content_type,
        m->content_encoding, m->group_id, m->reply_to_group_id};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        CHECK(inside(fields[i], m->properties));
    if (m->message_id.code)
        CHECK(inside(m->message_id.raw, m->properties));
    if (m->correlation_id.code)
        CHECK(inside(m->correlation_id.raw, m->properties));

    switch (m->body_kind) {
    case TN_AMQP_BODY_DATA:
    case TN_AMQP_BODY_STRING:
        CHECK(m->content.p != NULL || in.n == 0);
        if (m->body.p)
            CHECK(inside(m->content, m->body));
        else
            CHECK(m->body_kind == TN_AMQP_BODY_DATA && m->content.n == 0);
        break;
    case TN_AMQP_BODY_OTHER:
        CHECK(m->body.p && m->content.p == m->body.p && m->content.n == m->body.n);
        break;
    default:
        CHECK(0);
    }
}

static void
roundtrip_header(const tn_amqp_msg *m)
{
    tn_buf b;
    tn_amqp_msg g;

    tn_buf_init(&b, 64);
    CHECK(tn_amqp_put_header(&b, m->durable, m->priority, m->ttl, m->first_acquirer,
                             m->delivery_count, true) == 0);
    CHECK(tn_amqp_msg_decode(b.data, b.len, &g, NULL) == 0);
    CHECK(g.header.p == b.data && g.header.n == b.len);
    CHECK(g.durable == m->durable && g.priority == m->priority);
    CHECK(g.has_ttl == (m->has_ttl && m->ttl != 0) && g.ttl == (m->has_ttl ? m->ttl : 0));
    CHECK(g.first_acquirer == m->first_acquirer && g.delivery_count == m->delivery_count);
    tn_buf_fini(&b);
}

/* An id as the text another protocol would carry; *p NULL when absent or not representable. */
static char *
id_text(const tn_amqp_value *v, tn_amqp_span *out)
{
    char *t = NULL;
    *out = (tn_amqp_span){NULL, 0};
    if (v->code == 0)
        return NULL;
    int n = text(v, v->data.n + 64, &t);
    CHECK(n >= 0); /* every message-id type has a text form */
    *out = (tn_amqp_span){(const uint8_t *)t, (size_t)n};
    return t;
}

static void
roundtrip_properties(const tn_amqp_msg *m, size_t size)
{
    tn_amqp_props_out p = {
        .user_id = m->user_id,
        .to = m->to,
        .subject = m->subject,
        .reply_to = m->reply_to,
        .content_type = m->content_type,
        .content_encoding = m->content_encoding,
        .absolute_expiry_time = m->has_absolute_expiry_time ? m->absolute_expiry_time : 0,
        .creation_time = m->has_creation_time ? m->creation_time : 0,
        .group_id = m->group_id,
        .has_group_sequence = m->has_group_sequence,
        .group_sequence = m->group_sequence,
        .reply_to_group_id = m->reply_to_group_id,
    };
    char *mid = id_text(&m->message_id, &p.message_id);
    char *cid = id_text(&m->correlation_id, &p.correlation_id);
    tn_buf b;
    tn_amqp_msg g;

    tn_buf_init(&b, BUF_MAX(size));
    CHECK(tn_amqp_put_properties(&b, &p) == 0);
    CHECK(tn_amqp_msg_decode(b.data, b.len, &g, NULL) == 0);
    CHECK(g.properties.n == b.len);
    if (g.message_id.code)
        CHECK(span_eq(g.message_id.data, p.message_id));
    else
        CHECK(p.message_id.p == NULL);
    if (g.correlation_id.code)
        CHECK(span_eq(g.correlation_id.data, p.correlation_id));
    else
        CHECK(p.correlation_id.p == NULL);
    CHECK(span_eq(g.user_id, p.user_id) && span_eq(g.to, p.to) && span_eq(g.subject, p.subject));
    CHECK(span_eq(g.reply_to, p.reply_to) && span_eq(g.content_type, p.content_type));
    CHECK(span_eq(g.content_encoding, p.content_encoding) && span_eq(g.group_id, p.group_id));
    CHECK(span_eq(g.reply_to_group_id, p.reply_to_group_id));
    CHECK(g.has_absolute_expiry_time == (p.absolute_expiry_time != 0));
    CHECK(g.absolute_expiry_time == p.absolute_expiry_time);
    CHECK(g.has_creation_time == (p.creation_time != 0) && g.creation_time == p.creation_time);
    CHECK(g.has_group_sequence == p.has_group_sequence && g.group_sequence == p.group_sequence);
    tn_buf_fini(&b);
    free(mid);
    free(cid);
}

static bool
is_string(const tn_amqp_value *v)
{
    return !v->described && (v->code == 0xa1 || v->code == 0xb1);
}

/* The application-properties whose keys and values are strings, through the map encoder. */
static void
roundtrip_app_properties(const tn_amqp_msg *m, size_t size)
{
    tn_amqp_map_iter it, jt;
    tn_amqp_value k, v;
    tn_amqp_map_out mo;
    tn_buf b;
    tn_amqp_msg g;
    uint32_t n = 0;

    tn_buf_init(&b, BUF_MAX(size));
    CHECK(tn_amqp_map_open(&b, TN_AMQP_APPLICATION_PROPERTIES, &mo) == 0);
    CHECK(tn_amqp_map_begin(m->application_properties, &it) == 0);
    while (tn_amqp_map_next(&it, &k, &v) == 1) {
        if (!is_string(&k) || !is_string(&v))
            continue;
        CHECK(tn_amqp_map_put_str(&b, &mo, (const char *)k.data.p, k.data.n, (const char *)v.data.p,
                                  v.data.n) == 0);
        n++;
    }
    CHECK(tn_amqp_map_close(&b, &mo) == 0);
    CHECK(tn_amqp_msg_decode(b.data, b.len, &g, NULL) == 0);
    CHECK((g.application_properties.p != NULL) == (n > 0));
    CHECK(tn_amqp_map_begin(m->application_properties, &it) == 0);
    CHECK(tn_amqp_map_begin(g.application_properties, &jt) == 0);
    CHECK(jt.left == 2 * n);
    while (tn_amqp_map_next(&it, &k, &v) == 1) {
        if (!is_string(&k) || !is_string(&v))
            continue;
        tn_amqp_value k2, v2;
        CHECK(tn_amqp_map_next(&jt, &k2, &v2) == 1);
        CHECK(is_string(&k2) && is_string(&v2));
        CHECK(span_eq(k.data, k2.data) && span_eq(v.data, v2.data));
    }
    CHECK(tn_amqp_map_next(&jt, &k, &v) == 0);
    tn_buf_fini(&b);
}

static void
roundtrip_body(const tn_amqp_msg *m, size_t size)
{
    tn_buf b;
    tn_amqp_msg g;

    if (m->body_kind == TN_AMQP_BODY_OTHER)
        return;
    tn_buf_init(&b, BUF_MAX(size));
    if (m->body_kind == TN_AMQP_BODY_DATA)
        CHECK(tn_amqp_put_data(&b, m->content.p, m->content.n) == 0);
    else
        CHECK(tn_amqp_put_string_value(&b, (const char *)m->content.p, m->content.n) == 0);
    CHECK(tn_amqp_msg_decode(b.data, b.len, &g, NULL) == 0);
    CHECK(g.body_kind == m->body_kind && g.content.n == m->content.n);
    CHECK(m->content.n == 0 || memcmp(g.content.p, m->content.p, m->content.n) == 0);
    /* The same through the data head, the bytes after it. */
    if (m->body_kind == TN_AMQP_BODY_DATA) {
        b.len = 0;
        CHECK(tn_amqp_put_data_head(&b, m->content.n) == 0);
        CHECK(tn_buf_append(&b, m->content.p, m->content.n) == 0);
        CHECK(tn_amqp_msg_decode(b.data, b.len, &g, NULL) == 0);
        CHECK(g.body_kind == TN_AMQP_BODY_DATA && g.content.n == m->content.n);
    }
    tn_buf_fini(&b);
}

/* The entry of map whose key has the encoding key, or false. */
static bool
find(tn_amqp_span map, tn_amqp_span key, tn_amqp_value *val)
{
    tn_amqp_map_iter it;
    tn_amqp_value k;

    CHECK(tn_amqp_map_begin(map, &it) == 0);
    while (tn_amqp_map_next(&it, &k, val) == 1)
        if (span_eq(k.raw, key))
            return true;
    return false;
}

/* Merges add into old and checks: keys of add have add's (first) value, other keys of old keep
 * theirs, nothing else is there, and the output is a message-annotations section. */
static void
check_merge(tn_amqp_span old, tn_amqp_span add, size_t size)
{
    tn_buf b;
    tn_amqp_msg g;
    tn_amqp_map_iter it;
    tn_amqp_value k, v, x;

    tn_buf_init(&b, BUF_MAX(size) + add.n);
    CHECK(tn_amqp_annotations_merge(&b, old, add) == 0);
    if (b.len == 0) {
        CHECK(tn_amqp_map_begin(old, &it) == 0 && it.left == 0);
        CHECK(tn_amqp_map_begin(add, &it) == 0 && it.left == 0);
        goto out;
    }
    CHECK(tn_amqp_msg_decode(b.data, b.len, &g, NULL) == 0);
    CHECK(g.message_annotations.p == b.data && g.message_annotations.n == b.len);
    CHECK(tn_amqp_map_begin(old, &it) == 0);
    while (tn_amqp_map_next(&it, &k, &v) == 1) {
        tn_amqp_value y; /* the value that counts: add's first, else old's first */
        CHECK(find(g.message_annotations, k.raw, &x));
        if (!find(add, k.raw, &y))
            CHECK(find(old, k.raw, &y));
        CHECK(span_eq(x.raw, y.raw));
    }
    CHECK(tn_amqp_map_begin(add, &it) == 0);
    while (tn_amqp_map_next(&it, &k, &v) == 1) {
        CHECK(find(g.message_annotations, k.raw, &x));
        tn_amqp_value first;
        CHECK(find(add, k.raw, &first) && span_eq(x.raw, first.raw));
    }
    CHECK(tn_amqp_map_begin(g.message_annotations, &it) == 0);
    while (tn_amqp_map_next(&it, &k, &v) == 1)
        CHECK(find(old, k.raw, &x) || find(add, k.raw, &x));
out:
    tn_buf_fini(&b);
}

/* The map held by a section (the bytes after its descriptor). */
static tn_amqp_span
section_map(tn_amqp_span s)
{
    tn_amqp_value d;
    size_t k;
    if (s.p == NULL)
        return s;
    CHECK(s.n > 1 && s.p[0] == 0x00);
    CHECK(tn_amqp_value_decode(s.p + 1, s.n - 1, &d, &k) == 0);
    return (tn_amqp_span){s.p + 1 + k, s.n - 1 - k};
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tn_amqp_span in = {data, size};
    tn_amqp_value v;
    tn_amqp_msg m;
    size_t used;
    const char *why = NULL;

    if (tn_amqp_value_decode(data, size, &v, &used) == 0) {
        CHECK(used > 0 && used <= size && v.raw.p == data && v.raw.n == used);
        check_value(&v, in);
        text(&v, 64, NULL);
    }

    int rc = tn_amqp_msg_decode(data, size, &m, &why);
    if (rc != 0) {
        CHECK(rc == TN_EPROTO && why != NULL);
        return 0;
    }
    CHECK(why == NULL);
    check_spans(&m, in);
    check_map(m.delivery_annotations, false);
    check_map(m.message_annotations, false);
    check_map(m.application_properties, true);
    check_map(m.footer, false);
    if (m.message_id.code)
        check_value(&m.message_id, in);
    if (m.correlation_id.code)
        check_value(&m.correlation_id, in);

    roundtrip_header(&m);
    roundtrip_properties(&m, size);
    roundtrip_app_properties(&m, size);
    roundtrip_body(&m, size);

    /* {x-opt-a: "v", 7: null}, then the input's own application-properties map as the
     * outcome's annotations, and an absent old. */
    static const uint8_t fixed[] = {0xc1, 0x10, 0x04, 0xa3, 0x07, 'x', '-',  'o',  'p',
                                    't',  '-',  'a',  0xa1, 0x01, 'v', 0x53, 0x07, 0x40};
    check_merge(m.message_annotations, (tn_amqp_span){fixed, sizeof fixed}, size);
    check_merge(m.message_annotations, section_map(m.application_properties), size);
    check_merge((tn_amqp_span){NULL, 0}, section_map(m.message_annotations), size);
    return 0;
}
