#include "protocols/amqp/codec.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Messages encoded by python-qpid-proton 0.37 (Message(...).encode().hex()), so that the decoder
 * is checked against what a real client sends, not only against our own encoder.
 */

/* Message(body='hi', durable=True, priority=7, ttl=1.5, id=5, correlation_id='c',
 * reply_to='queue://r', content_type='text/plain', subject='s',
 * properties={'a':1,'b':'x','c':True,'d':2.5}, annotations={'x-opt-a':'v'}) */
static const char proton_full[] =
    "005370c0090341500770000005dc"
    "005372d10000001000000002a307782d6f70742d61a10176"
    "005373c0220753054040a10173a10971756575653a2f2f72a10163a30a746578742f706c61696e"
    "005374d10000001f00000008a101615501a10162a10178a1016341a10164824004000000000000"
    "005377a1026869";

/* Message(body=b'x', inferred=True, durable=False, priority=4, first_acquirer=True,
 * delivery_count=3, user_id=b'guest', address='q1', group_id='g', group_sequence=9,
 * reply_to_group_id='rg', creation_time=1700000000.123, expiry_time=1700000100.5,
 * id=uuid.UUID('12345678-9abc-def0-1234-56789abcdef0'), correlation_id=b'\x01\x02',
 * content_encoding='gzip', instructions={'x-opt-i':1}, annotations={symbol('x-opt-b'):ulong(7)}) */
static const char proton_all[] =
    "005370c00705404040415203"
    "005371d10000000f00000002a307782d6f70742d695501"
    "005372d10000000f00000002a307782d6f70742d625307"
    "005373c0450d98123456789abcdef0123456789abcdef0a0056775657374a10271314040a002010240a304677a"
    "6970830000018bcfe6f094830000018bcfe5687ba101675209a1027267"
    "005375a00178";

/* Message(body=b'bytes', inferred=True): a data section. */
static const char proton_data[] = "0053704500537345005375a0056279746573";
/* Message(body=b'bytes'): without inferred, an amqp-value holding a binary. */
static const char proton_bin_value[] = "0053704500537345005377a0056279746573";
/* Message(body=[1, 2], inferred=True): an amqp-sequence section. */
static const char proton_sequence[] = "0053704500537345005376d0000000080000000255015502";
/* Message(body=[1, 2]): an amqp-value holding a list. */
static const char proton_list_value[] = "0053704500537345005377d0000000080000000255015502";
/* Message(body={'k': 'v'}) */
static const char proton_map_value[] = "0053704500537345005377d10000000a00000002a1016ba10176";
/* Message(body=None): no body section. */
static const char proton_none[] = "0053704500537345";
/* Message(properties={'n': None, 'i': int32(-7), 'u': uint(70000), 'f': float32(0.5),
 * 'c': char('é'), 't': timestamp(1700000000123), 'sym': symbol('abc'), 'bin': b'\0\1',
 * 'l': ulong(2**64-1), 'neg': -2**63, 'sh': short(-2), 'us': ushort(65535), 'by': byte(-128),
 * 'ub': ubyte(255), 'uu': uuid.UUID(int=1), 'f0': False, 'dd': 0.1}) */
static const char proton_types[] =
    "0053704500537345005374d10000009f00000022a1016e40a1016954f9a101757000011170a10166723f000000"
    "a1016373000000e9a10174830000018bcfe5687ba10373796da303616263a10362696ea0020001a1016c80ffff"
    "ffffffffffffa1036e6567818000000000000000a102736861fffea102757360ffffa10262795180a102756250"
    "ffa10275759800000000000000000000000000000001a102663042a1026464823fb999999999999a";
/* Message(annotations={'x-opt-arr': Array(UNDESCRIBED, Data.SYMBOL, 'a', 'b'),
 * 'x-opt-d': Described(symbol('t'), 1)}, body=b'') */
static const char proton_array[] =
    "00537045005372d10000003200000004a309782d6f70742d617272f00000000f00000002b300000001610000"
    "000162a307782d6f70742d6400a30174550100537345005377a000";

/* Bytes from hex (spaces allowed), in an allocation of exactly their size so that AddressSanitizer
 * catches a read past the end. Free with free(). */
static uint8_t *
unhex(const char *h, size_t *n)
{
    size_t len = 0;
    uint8_t *p = malloc(strlen(h) / 2 + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    for (const char *s = h; *s;) {
        if (*s == ' ') {
            s++;
            continue;
        }
        unsigned v;
        CU_ASSERT_EQUAL_FATAL(sscanf(s, "%2x", &v), 1);
        p[len++] = (uint8_t)v;
        s += 2;
    }
    uint8_t *exact = malloc(len ? len : 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(exact);
    memcpy(exact, p, len);
    free(p);
    *n = len;
    return exact;
}

static bool
span_is(tn_amqp_span s, const char *want)
{
    size_t n = strlen(want);
    return s.p != NULL && s.n == n && memcmp(s.p, want, n) == 0;
}

static bool
bytes_are(const uint8_t *p, size_t n, const char *hex)
{
    size_t wn;
    uint8_t *w = unhex(hex, &wn);
    bool eq = n == wn && (n == 0 || memcmp(p, w, n) == 0);
    if (!eq) {
        printf("\n  got  ");
        for (size_t i = 0; i < n; i++)
            printf("%02x", p[i]);
        printf("\n  want %s\n", hex);
    }
    free(w);
    return eq;
}

static bool
inside(tn_amqp_span s, const uint8_t *p, size_t n)
{
    return s.p == NULL || (s.p >= p && s.n <= n && (size_t)(s.p - p) <= n - s.n);
}

/* The text of a simple value, NUL-terminated, "(einval)" when there is none. */
static const char *
text(const tn_amqp_value *v)
{
    static char buf[256];
    int n = tn_amqp_value_text(v, buf, sizeof buf - 1);
    if (n < 0)
        return "(einval)";
    buf[n] = '\0';
    return buf;
}

/* Decodes hex as a message, checking that every span lies inside the input. The input stays
 * allocated in *in until the caller frees it. */
static int
decode_hex(const char *hex, tn_amqp_msg *m, uint8_t **in, size_t *n)
{
    const char *why = NULL;
    *in = unhex(hex, n);
    int rc = tn_amqp_msg_decode(*in, *n, m, &why);
    CU_ASSERT_TRUE(rc == 0 ? why == NULL : why != NULL);
    if (rc == 0) {
        const tn_amqp_span spans[] = {m->header,
                                      m->delivery_annotations,
                                      m->message_annotations,
                                      m->properties,
                                      m->application_properties,
                                      m->body,
                                      m->footer,
                                      m->bare_head,
                                      m->content,
                                      m->user_id,
                                      m->to,
                                      m->subject,
                                      m->reply_to,
                                      m->content_type,
                                      m->content_encoding,
                                      m->group_id,
                                      m->reply_to_group_id,
                                      m->message_id.raw,
                                      m->correlation_id.raw};
        for (size_t i = 0; i < sizeof spans / sizeof spans[0]; i++)
            CU_ASSERT_TRUE(inside(spans[i], *in, *n));
    }
    return rc;
}

/* The n-th entry of a map (key and value as text), or false. */
static bool
map_entry(tn_amqp_span map, unsigned n, char *key, char *val)
{
    tn_amqp_map_iter it;
    tn_amqp_value k, v;
    if (tn_amqp_map_begin(map, &it) != 0)
        return false;
    for (unsigned i = 0; i <= n; i++)
        if (tn_amqp_map_next(&it, &k, &v) != 1)
            return false;
    strcpy(key, text(&k));
    memcpy(val, text(&v), 256); /* binary values may hold NULs */
    return true;
}

static int
map_size(tn_amqp_span map)
{
    tn_amqp_map_iter it;
    tn_amqp_value k, v;
    int n = 0, rc;
    if (tn_amqp_map_begin(map, &it) != 0)
        return -1;
    while ((rc = tn_amqp_map_next(&it, &k, &v)) == 1)
        n++;
    return rc == 0 ? n : -1;
}

/* --- Decoding what proton sends --- */

static void
test_proton_full(void)
{
    tn_amqp_msg m;
    uint8_t *in;
    size_t n;
    char k[256], v[256];

    CU_ASSERT_EQUAL_FATAL(decode_hex(proton_full, &m, &in, &n), 0);
    CU_ASSERT_TRUE(m.durable);
    CU_ASSERT_EQUAL(m.priority, 7);
    CU_ASSERT_TRUE(m.has_ttl);
    CU_ASSERT_EQUAL(m.ttl, 1500);
    CU_ASSERT_FALSE(m.first_acquirer);
    CU_ASSERT_EQUAL(m.delivery_count, 0);
    CU_ASSERT_EQUAL(m.message_id.code, 0x53); /* smallulong */
    CU_ASSERT_STRING_EQUAL(text(&m.message_id), "5");
    CU_ASSERT_EQUAL(m.correlation_id.code, 0xa1);
    CU_ASSERT_STRING_EQUAL(text(&m.correlation_id), "c");
    CU_ASSERT_PTR_NULL(m.user_id.p);
    CU_ASSERT_PTR_NULL(m.to.p);
    CU_ASSERT_TRUE(span_is(m.subject, "s"));
    CU_ASSERT_TRUE(span_is(m.reply_to, "queue://r"));
    CU_ASSERT_TRUE(span_is(m.content_type, "text/plain"));
    CU_ASSERT_PTR_NULL(m.content_encoding.p);
    CU_ASSERT_FALSE(m.has_creation_time || m.has_absolute_expiry_time || m.has_group_sequence);
    CU_ASSERT_PTR_NULL(m.delivery_annotations.p);
    CU_ASSERT_PTR_NULL(m.footer.p);

    /* Sections are verbatim and in place. */
    CU_ASSERT_PTR_EQUAL(m.header.p, in);
    CU_ASSERT_EQUAL(m.header.n, 14);
    CU_ASSERT_PTR_EQUAL(m.message_annotations.p, in + 14);
    CU_ASSERT_PTR_EQUAL(m.properties.p, m.message_annotations.p + m.message_annotations.n);
    CU_ASSERT_PTR_EQUAL(m.application_properties.p, m.properties.p + m.properties.n);
    CU_ASSERT_PTR_EQUAL(m.body.p, m.application_properties.p + m.application_properties.n);
    CU_ASSERT_EQUAL(m.body.n, 7);
    CU_ASSERT_PTR_EQUAL(m.body.p + m.body.n, in + n);
    CU_ASSERT_PTR_EQUAL(m.bare_head.p, m.message_annotations.p);
    CU_ASSERT_PTR_EQUAL(m.bare_head.p + m.bare_head.n, m.body.p);

    CU_ASSERT_EQUAL(m.body_kind, TN_AMQP_BODY_STRING);
    CU_ASSERT_TRUE(span_is(m.content, "hi"));

    CU_ASSERT_EQUAL(map_size(m.application_properties), 4);
    CU_ASSERT_TRUE(map_entry(m.application_properties, 0, k, v));
    CU_ASSERT_STRING_EQUAL(k, "a");
    CU_ASSERT_STRING_EQUAL(v, "1"); /* smalllong */
    CU_ASSERT_TRUE(map_entry(m.application_properties, 1, k, v));
    CU_ASSERT_STRING_EQUAL(k, "b");
    CU_ASSERT_STRING_EQUAL(v, "x");
    CU_ASSERT_TRUE(map_entry(m.application_properties, 2, k, v));
    CU_ASSERT_STRING_EQUAL(k, "c");
    CU_ASSERT_STRING_EQUAL(v, "true");
    CU_ASSERT_TRUE(map_entry(m.application_properties, 3, k, v));
    CU_ASSERT_STRING_EQUAL(k, "d");
    CU_ASSERT_STRING_EQUAL(v, "2.5");
    CU_ASSERT_EQUAL(map_size(m.message_annotations), 1);
    CU_ASSERT_TRUE(map_entry(m.message_annotations, 0, k, v));
    CU_ASSERT_STRING_EQUAL(k, "x-opt-a");
    CU_ASSERT_STRING_EQUAL(v, "v");
    free(in);
}

static void
test_proton_all_properties(void)
{
    tn_amqp_msg m;
    uint8_t *in;
    size_t n;
    char k[256], v[256];

    CU_ASSERT_EQUAL_FATAL(decode_hex(proton_all, &m, &in, &n), 0);
    CU_ASSERT_FALSE(m.durable);
    CU_ASSERT_EQUAL(m.priority, 4);
    CU_ASSERT_FALSE(m.has_ttl);
    CU_ASSERT_TRUE(m.first_acquirer);
    CU_ASSERT_EQUAL(m.delivery_count, 3);
    CU_ASSERT_EQUAL(m.message_id.code, 0x98);
    CU_ASSERT_STRING_EQUAL(text(&m.message_id), "12345678-9abc-def0-1234-56789abcdef0");
    CU_ASSERT_TRUE(span_is(m.user_id, "guest"));
    CU_ASSERT_TRUE(span_is(m.to, "q1"));
    CU_ASSERT_PTR_NULL(m.subject.p);
    CU_ASSERT_PTR_NULL(m.reply_to.p);
    CU_ASSERT_EQUAL(m.correlation_id.code, 0xa0);
    CU_ASSERT_EQUAL(m.correlation_id.data.n, 2);
    CU_ASSERT_PTR_NULL(m.content_type.p);
    CU_ASSERT_TRUE(span_is(m.content_encoding, "gzip"));
    CU_ASSERT_TRUE(m.has_absolute_expiry_time);
    CU_ASSERT_EQUAL(m.absolute_expiry_time, 1700000100500);
    CU_ASSERT_TRUE(m.has_creation_time);
    CU_ASSERT_EQUAL(m.creation_time, 1700000000123);
    CU_ASSERT_TRUE(span_is(m.group_id, "g"));
    CU_ASSERT_TRUE(m.has_group_sequence);
    CU_ASSERT_EQUAL(m.group_sequence, 9);
    CU_ASSERT_TRUE(span_is(m.reply_to_group_id, "rg"));
    CU_ASSERT_TRUE(map_entry(m.delivery_annotations, 0, k, v));
    CU_ASSERT_STRING_EQUAL(k, "x-opt-i");
    CU_ASSERT_STRING_EQUAL(v, "1");
    CU_ASSERT_TRUE(map_entry(m.message_annotations, 0, k, v));
    CU_ASSERT_STRING_EQUAL(k, "x-opt-b");
    CU_ASSERT_STRING_EQUAL(v, "7");
    /* Delivery annotations are not part of the bare head. */
    CU_ASSERT_PTR_EQUAL(m.bare_head.p, m.message_annotations.p);
    CU_ASSERT_PTR_EQUAL(m.bare_head.p + m.bare_head.n, m.body.p);
    CU_ASSERT_EQUAL(m.body_kind, TN_AMQP_BODY_DATA);
    CU_ASSERT_TRUE(span_is(m.content, "x"));
    free(in);
}

static void
test_proton_types(void)
{
    static const char *const want[][2] = {
        {"n", ""},
        {"i", "-7"},
        {"u", "70000"},
        {"f", "0.5"},
        {"c", "\xc3\xa9"},
        {"t", "1700000000123"},
        {"sym", "abc"},
        {"bin", "(bin)"},
        {"l", "18446744073709551615"},
        {"neg", "-9223372036854775808"},
        {"sh", "-2"},
        {"us", "65535"},
        {"by", "-128"},
        {"ub", "255"},
        {"uu", "00000000-0000-0000-0000-000000000001"},
        {"f0", "false"},
        {"dd", "0.1"},
    };
    tn_amqp_msg m;
    uint8_t *in;
    size_t n;
    char k[256], v[256];

    CU_ASSERT_EQUAL_FATAL(decode_hex(proton_types, &m, &in, &n), 0);
    CU_ASSERT_EQUAL(map_size(m.application_properties), 17);
    for (unsigned i = 0; i < 17; i++) {
        CU_ASSERT_TRUE_FATAL(map_entry(m.application_properties, i, k, v));
        CU_ASSERT_STRING_EQUAL(k, want[i][0]);
        if (strcmp(k, "bin") == 0) {
            CU_ASSERT_EQUAL(memcmp(v, "\0\1", 2), 0);
        } else {
            CU_ASSERT_STRING_EQUAL(v, want[i][1]);
        }
    }
    /* Properties and header are present but empty lists. */
    CU_ASSERT_EQUAL(m.header.n, 4);
    CU_ASSERT_EQUAL(m.properties.n, 4);
    CU_ASSERT_PTR_EQUAL(m.bare_head.p, m.properties.p);
    CU_ASSERT_EQUAL(m.body_kind, TN_AMQP_BODY_DATA);
    CU_ASSERT_EQUAL(m.content.n, 0);
    free(in);
}

static void
test_proton_array(void)
{
    tn_amqp_msg m;
    tn_amqp_map_iter it;
    tn_amqp_value k, v;
    uint8_t *in;
    size_t n;

    CU_ASSERT_EQUAL_FATAL(decode_hex(proton_array, &m, &in, &n), 0);
    CU_ASSERT_EQUAL_FATAL(tn_amqp_map_begin(m.message_annotations, &it), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &k, &v), 1);
    CU_ASSERT_STRING_EQUAL(text(&k), "x-opt-arr");
    CU_ASSERT_EQUAL(v.code, 0xf0);
    CU_ASSERT_EQUAL(v.count, 2);
    CU_ASSERT_EQUAL(tn_amqp_value_text(&v, (char[8]){0}, 8), TN_EINVAL);
    CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &k, &v), 1);
    CU_ASSERT_STRING_EQUAL(text(&k), "x-opt-d");
    CU_ASSERT_TRUE(v.described);
    CU_ASSERT_EQUAL(v.code, 0x55);
    CU_ASSERT_EQUAL(v.raw.n, 6);
    CU_ASSERT_STRING_EQUAL(text(&v), "(einval)");
    CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &k, &v), 0);
    /* body=b'' without inferred: an amqp-value holding an empty binary. */
    CU_ASSERT_EQUAL(m.body_kind, TN_AMQP_BODY_BINARY);
    CU_ASSERT_TRUE(m.content.p != NULL && m.content.n == 0 && m.body.n == 5);
    free(in);
}

static void
test_proton_body_kinds(void)
{
    static const struct {
        const char *hex;
        tn_amqp_body_kind kind;
        size_t body;         /* bytes of body sections */
        const char *content; /* for DATA and STRING */
    } cases[] = {
        {proton_data, TN_AMQP_BODY_DATA, 10, "bytes"},
        {proton_bin_value, TN_AMQP_BODY_BINARY, 10, "bytes"},
        {proton_sequence, TN_AMQP_BODY_OTHER, 16, NULL},
        {proton_list_value, TN_AMQP_BODY_OTHER, 16, NULL},
        {proton_map_value, TN_AMQP_BODY_OTHER, 18, NULL},
        {proton_none, TN_AMQP_BODY_DATA, 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tn_amqp_msg m;
        uint8_t *in;
        size_t n;
        CU_ASSERT_EQUAL_FATAL(decode_hex(cases[i].hex, &m, &in, &n), 0);
        CU_ASSERT_EQUAL(m.body_kind, cases[i].kind);
        CU_ASSERT_EQUAL(m.body.n, cases[i].body);
        CU_ASSERT_TRUE(cases[i].body == 0 ? m.body.p == NULL : m.body.p + m.body.n == in + n);
        CU_ASSERT_PTR_NOT_NULL(m.header.p);
        CU_ASSERT_PTR_NOT_NULL(m.properties.p);
        if (cases[i].content) {
            CU_ASSERT_TRUE(m.content.p != NULL && m.content.n == strlen(cases[i].content));
            CU_ASSERT_EQUAL(memcmp(m.content.p, cases[i].content, m.content.n), 0);
        } else {
            CU_ASSERT_TRUE(m.content.p == m.body.p && m.content.n == m.body.n);
        }
        free(in);
    }
}

/* --- Messages built by hand --- */

static void
test_defaults(void)
{
    static const char *const cases[] = {
        "",                                    /* no section at all */
        "00 53 70 45",                         /* an empty header */
        "00 53 70 c0 06 05 40 40 40 40 40",    /* every header field null */
        "00 53 70 c0 01 00 00 53 73 45",       /* list8 with no element, empty properties */
        "00 53 70 d0 00 00 00 04 00 00 00 00", /* list32 with no element */
        "00 53 73 c0 0e 0d 40 40 40 40 40 40 40 40 40 40 40 40 40", /* properties all null */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tn_amqp_msg m;
        uint8_t *in;
        size_t n;
        CU_ASSERT_EQUAL_FATAL(decode_hex(cases[i], &m, &in, &n), 0);
        CU_ASSERT_FALSE(m.durable);
        CU_ASSERT_EQUAL(m.priority, 4);
        CU_ASSERT_FALSE(m.has_ttl);
        CU_ASSERT_FALSE(m.first_acquirer);
        CU_ASSERT_EQUAL(m.delivery_count, 0);
        CU_ASSERT_EQUAL(m.message_id.code, 0);
        CU_ASSERT_EQUAL(m.correlation_id.code, 0);
        CU_ASSERT_PTR_NULL(m.user_id.p);
        CU_ASSERT_PTR_NULL(m.to.p);
        CU_ASSERT_PTR_NULL(m.subject.p);
        CU_ASSERT_PTR_NULL(m.reply_to.p);
        CU_ASSERT_PTR_NULL(m.content_type.p);
        CU_ASSERT_PTR_NULL(m.content_encoding.p);
        CU_ASSERT_PTR_NULL(m.group_id.p);
        CU_ASSERT_PTR_NULL(m.reply_to_group_id.p);
        CU_ASSERT_FALSE(m.has_absolute_expiry_time || m.has_creation_time || m.has_group_sequence);
        CU_ASSERT_PTR_NULL(m.body.p);
        CU_ASSERT_EQUAL(m.body_kind, TN_AMQP_BODY_DATA);
        CU_ASSERT_EQUAL(m.content.n, 0);
        CU_ASSERT_PTR_NULL(m.application_properties.p);
        CU_ASSERT_EQUAL(map_size(m.application_properties), 0);
        free(in);
    }
}

static void
test_every_section(void)
{
    /* header (ubyte boolean 0x56, uint ttl), delivery-annotations (map8), message-annotations,
     * properties (list32, str32 subject, empty strings), application-properties, two data
     * sections, footer. */
    static const char hex[] = "00 53 70 c0 0d 05 56 01 50 09 70 00 00 00 0a 56 00 43"
                              "00 53 71 c1 05 02 a3 01 64 41"
                              "00 53 72 c1 05 02 a3 01 6d 42"
                              "00 53 73 d0 00 00 00 11 00 00 00 05 a1 00 40 40 b1 00 00 00 02 73 "
                              "6a a1 00"
                              "00 53 74 c1 06 02 a1 01 6b 50 05"
                              "00 53 75 a0 02 68 69"
                              "00 53 75 b0 00 00 00 01 21"
                              "00 53 78 c1 05 02 a3 01 66 40";
    tn_amqp_msg m;
    uint8_t *in;
    size_t n;
    char k[256], v[256];

    CU_ASSERT_EQUAL_FATAL(decode_hex(hex, &m, &in, &n), 0);
    CU_ASSERT_TRUE(m.durable);
    CU_ASSERT_EQUAL(m.priority, 9);
    CU_ASSERT_TRUE(m.has_ttl && m.ttl == 10);
    CU_ASSERT_FALSE(m.first_acquirer);
    CU_ASSERT_EQUAL(m.delivery_count, 0);
    CU_ASSERT_EQUAL(m.message_id.code, 0xa1);
    CU_ASSERT_EQUAL(m.message_id.data.n, 0);
    CU_ASSERT_TRUE(span_is(m.subject, "sj"));
    CU_ASSERT_TRUE(span_is(m.reply_to, ""));
    CU_ASSERT_EQUAL(m.header.n, 18);
    CU_ASSERT_EQUAL(m.delivery_annotations.n, 10);
    CU_ASSERT_EQUAL(m.message_annotations.n, 10);
    CU_ASSERT_EQUAL(m.properties.n, 25);
    CU_ASSERT_EQUAL(m.application_properties.n, 11);
    CU_ASSERT_EQUAL(m.body.n, 16);
    CU_ASSERT_EQUAL(m.footer.n, 10);
    CU_ASSERT_PTR_EQUAL(m.footer.p + m.footer.n, in + n);
    CU_ASSERT_PTR_EQUAL(m.bare_head.p, m.message_annotations.p);
    CU_ASSERT_EQUAL(m.bare_head.n, 10 + 25 + 11);
    CU_ASSERT_EQUAL(m.body_kind, TN_AMQP_BODY_OTHER); /* two data sections */
    CU_ASSERT_TRUE(m.content.p == m.body.p && m.content.n == m.body.n);
    CU_ASSERT_TRUE(map_entry(m.footer, 0, k, v));
    CU_ASSERT_STRING_EQUAL(k, "f");
    CU_ASSERT_STRING_EQUAL(v, "");
    CU_ASSERT_TRUE(map_entry(m.application_properties, 0, k, v));
    CU_ASSERT_STRING_EQUAL(v, "5");
    free(in);
}

static void
test_body_kinds(void)
{
    static const struct {
        const char *hex;
        tn_amqp_body_kind kind;
        const char *content; /* for DATA, STRING and BINARY */
    } cases[] = {
        {"00 53 77 a0 02 68 69", TN_AMQP_BODY_BINARY, "hi"},
        {"00 53 77 b0 00 00 00 00", TN_AMQP_BODY_BINARY, ""},
        {"00 53 75 a0 00", TN_AMQP_BODY_DATA, ""},
        {"00 53 75 b0 00 00 00 03 61 62 63 00 53 78 c1 01 00", TN_AMQP_BODY_DATA, "abc"},
        {"00 53 77 a1 00", TN_AMQP_BODY_STRING, ""},
        {"00 53 77 b1 00 00 00 02 68 69", TN_AMQP_BODY_STRING, "hi"},
        {"00 53 77 71 00 00 00 05", TN_AMQP_BODY_OTHER, NULL},
        {"00 53 77 40", TN_AMQP_BODY_OTHER, NULL},
        {"00 53 77 a3 01 73", TN_AMQP_BODY_OTHER, NULL},          /* a symbol */
        {"00 53 77 00 53 01 a1 01 73", TN_AMQP_BODY_OTHER, NULL}, /* a described string */
        {"00 53 77 c1 04 02 a1 00 40", TN_AMQP_BODY_OTHER, NULL},
        {"00 53 76 45", TN_AMQP_BODY_OTHER, NULL},
        {"00 53 76 45 00 53 76 c0 02 01 41", TN_AMQP_BODY_OTHER, NULL},
        {"00 53 75 a0 01 61 00 53 75 a0 01 62", TN_AMQP_BODY_OTHER, NULL},
        {"00 53 75 a0 01 61 00 53 75 a0 01 62 00 53 75 a0 00", TN_AMQP_BODY_OTHER, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tn_amqp_msg m;
        uint8_t *in;
        size_t n;
        CU_ASSERT_EQUAL_FATAL(decode_hex(cases[i].hex, &m, &in, &n), 0);
        CU_ASSERT_EQUAL(m.body_kind, cases[i].kind);
        CU_ASSERT_PTR_EQUAL(m.body.p, in);
        if (cases[i].content) {
            CU_ASSERT_TRUE(m.content.p != NULL && m.content.n == strlen(cases[i].content));
            CU_ASSERT_TRUE(m.content.p >= m.body.p &&
                           m.content.p + m.content.n <= m.body.p + m.body.n);
            CU_ASSERT_EQUAL(memcmp(m.content.p, cases[i].content, m.content.n), 0);
        } else {
            CU_ASSERT_TRUE(m.content.p == m.body.p && m.content.n == m.body.n);
            CU_ASSERT_TRUE(m.footer.p == NULL && m.body.n == n);
        }
        free(in);
    }
}

static void
test_descriptors(void)
{
    static const struct {
        const char *hex;
        int rc;
    } cases[] = {
        /* ulong form of 0x70, symbolic header, data and amqp-value */
        {"00 80 00 00 00 00 00 00 00 70 c0 02 01 41", 0},
        {"00 a3 10 61 6d 71 70 3a 68 65 61 64 65 72 3a 6c 69 73 74 c0 02 01 41", 0},
        {"00 b3 00 00 00 10 61 6d 71 70 3a 64 61 74 61 3a 62 69 6e 61 72 79 a0 01 78", 0},
        {"00 a3 11 61 6d 71 70 3a 61 6d 71 70 2d 76 61 6c 75 65 3a 2a a1 01 78", 0},
        /* "amqp:footer:map", "amqp:application-properties:map" */
        {"00 a3 0f 61 6d 71 70 3a 66 6f 6f 74 65 72 3a 6d 61 70 c1 01 00", 0},
        {"00 a3 1f 61 6d 71 70 3a 61 70 70 6c 69 63 61 74 69 6f 6e 2d 70 72 6f 70 65 72 74 69 65 73"
         " 3a 6d 61 70 c1 01 00",
         0},
        /* unknown: 0x79, 0x6f, a ulong with a domain, ulong0, "amqp:header:lisT", a string */
        {"00 53 79 45", TN_EPROTO},
        {"00 53 6f 45", TN_EPROTO},
        {"00 80 00 00 00 01 00 00 00 70 45", TN_EPROTO},
        {"00 44 45", TN_EPROTO},
        {"00 a3 10 61 6d 71 70 3a 68 65 61 64 65 72 3a 6c 69 73 54 45", TN_EPROTO},
        {"00 a1 10 61 6d 71 70 3a 68 65 61 64 65 72 3a 6c 69 73 74 45", TN_EPROTO},
        /* a described descriptor; a value that is not a section */
        {"00 00 53 01 53 70 45", TN_EPROTO},
        {"a1 01 78", TN_EPROTO},
        {"45", TN_EPROTO},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tn_amqp_msg m;
        uint8_t *in;
        size_t n;
        CU_ASSERT_EQUAL(decode_hex(cases[i].hex, &m, &in, &n), cases[i].rc);
        free(in);
    }
    tn_amqp_msg m;
    uint8_t *in;
    size_t n;
    CU_ASSERT_EQUAL(decode_hex(cases[0].hex, &m, &in, &n), 0);
    CU_ASSERT_TRUE(m.durable && m.header.n == n);
    free(in);
    CU_ASSERT_EQUAL(decode_hex(cases[2].hex, &m, &in, &n), 0);
    CU_ASSERT_EQUAL(m.body_kind, TN_AMQP_BODY_DATA);
    CU_ASSERT_TRUE(span_is(m.content, "x"));
    free(in);
    CU_ASSERT_EQUAL(decode_hex(cases[3].hex, &m, &in, &n), 0);
    CU_ASSERT_EQUAL(m.body_kind, TN_AMQP_BODY_STRING);
    free(in);
}

/* Every prefix of a valid message is refused unless it ends between two sections, when it is the
 * message without its last sections. Each prefix is its own allocation. */
static void
test_truncated(void)
{
    static const char *const msgs[] = {proton_full,     proton_all,   proton_data,
                                       proton_sequence, proton_types, proton_array};
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        tn_amqp_msg whole;
        uint8_t *in;
        size_t n;
        CU_ASSERT_EQUAL_FATAL(decode_hex(msgs[i], &whole, &in, &n), 0);
        const tn_amqp_span sections[] = {
            whole.header,     whole.delivery_annotations,   whole.message_annotations,
            whole.properties, whole.application_properties, whole.body,
            whole.footer};
        for (size_t len = 0; len < n; len++) {
            bool boundary = len == 0;
            for (size_t s = 0; s < sizeof sections / sizeof sections[0]; s++)
                if (sections[s].p && sections[s].p + sections[s].n == in + len)
                    boundary = true;
            uint8_t *cut = malloc(len ? len : 1);
            CU_ASSERT_PTR_NOT_NULL_FATAL(cut);
            memcpy(cut, in, len);
            tn_amqp_msg m;
            const char *why = NULL;
            int rc = tn_amqp_msg_decode(cut, len, &m, &why);
            CU_ASSERT_EQUAL(rc, boundary ? 0 : TN_EPROTO);
            CU_ASSERT_TRUE(rc == 0 || why != NULL);
            free(cut);
        }
        free(in);
    }
}

static void
test_order(void)
{
    static const char *const bad[] = {
        "00 53 73 45 00 53 70 45",             /* header after properties */
        "00 53 70 45 00 53 70 45",             /* two headers */
        "00 53 72 c1 01 00 00 53 71 c1 01 00", /* delivery- after message-annotations */
        "00 53 74 c1 01 00 00 53 73 45",       /* properties after application-properties */
        "00 53 73 45 00 53 73 45",             /* two properties */
        "00 53 74 c1 01 00 00 53 74 c1 01 00", /* two application-properties */
        "00 53 75 a0 00 00 53 74 c1 01 00",    /* application-properties after the body */
        "00 53 77 40 00 53 77 40",             /* two amqp-values */
        "00 53 75 a0 00 00 53 77 40",          /* data, then amqp-value */
        "00 53 77 40 00 53 75 a0 00",          /* amqp-value, then data */
        "00 53 76 45 00 53 75 a0 00",          /* sequence, then data */
        "00 53 75 a0 00 00 53 76 45",          /* data, then sequence */
        "00 53 75 a0 00 00 53 78 c1 01 00 00 53 75 a0 00", /* data after the footer */
        "00 53 78 c1 01 00 00 53 78 c1 01 00",             /* two footers */
        "00 53 78 c1 01 00 00 53 70 45",                   /* header after the footer */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tn_amqp_msg m;
        uint8_t *in;
        size_t n;
        const char *why = NULL;
        in = unhex(bad[i], &n);
        CU_ASSERT_EQUAL(tn_amqp_msg_decode(in, n, &m, &why), TN_EPROTO);
        CU_ASSERT_PTR_NOT_NULL(why);
        CU_ASSERT_EQUAL(tn_amqp_msg_decode(in, n, &m, NULL), TN_EPROTO);
        free(in);
    }
}

static void
test_field_types(void)
{
    static const char *const bad[] = {
        /* header: durable ubyte, priority uint, ttl ulong, ttl int, first-acquirer string,
         * delivery-count ulong, a described durable, not a list, a map */
        "00 53 70 c0 03 01 50 01",
        "00 53 70 c0 07 02 40 70 00 00 00 04",
        "00 53 70 c0 0c 03 40 40 80 00 00 00 00 00 00 00 01",
        "00 53 70 c0 08 03 40 40 71 00 00 00 01",
        "00 53 70 c0 06 04 40 40 40 a1 00",
        "00 53 70 c0 06 05 40 40 40 40 44",
        "00 53 70 c0 05 01 00 53 01 41",
        "00 53 70 c0 07 03 40 40 00 53 01 52 05", /* a described ttl */
        "00 53 70 40",
        "00 53 70 c1 01 00",
        "00 53 70 00 53 01 45", /* a described list */
        /* properties: message-id symbol, message-id int, user-id string, to symbol, subject
         * binary, reply-to ulong, correlation-id boolean, content-type string, content-encoding
         * string, absolute-expiry-time ulong, creation-time long, group-id symbol,
         * group-sequence ulong, reply-to-group-id binary, not a list */
        "00 53 73 c0 03 01 a3 00",
        "00 53 73 c0 03 01 54 01",
        "00 53 73 c0 04 02 40 a1 00",
        "00 53 73 c0 05 03 40 40 a3 00",
        "00 53 73 c0 06 04 40 40 40 a0 00",
        "00 53 73 c0 06 05 40 40 40 40 44",
        "00 53 73 c0 07 06 40 40 40 40 40 41",
        "00 53 73 c0 09 07 40 40 40 40 40 40 a1 00",
        "00 53 73 c0 0a 08 40 40 40 40 40 40 40 a1 00",
        "00 53 73 c0 12 09 40 40 40 40 40 40 40 40 80 00 00 00 00 00 00 00 01",
        "00 53 73 c0 13 0a 40 40 40 40 40 40 40 40 40 81 00 00 00 00 00 00 00 01",
        "00 53 73 c0 0d 0b 40 40 40 40 40 40 40 40 40 40 a3 00",
        "00 53 73 c0 0d 0c 40 40 40 40 40 40 40 40 40 40 40 44",
        "00 53 73 c0 0f 0d 40 40 40 40 40 40 40 40 40 40 40 40 a0 00",
        "00 53 73 c1 01 00",
        /* sections of the wrong type */
        "00 53 71 45",
        "00 53 72 40",
        "00 53 74 c0 01 00",
        "00 53 78 a1 00",
        "00 53 74 00 53 01 c1 01 00",
        "00 53 75 a1 01 78",
        "00 53 75 00 53 01 a0 01 78",
        "00 53 76 c1 01 00",
        "00 53 76 40",
    };
    static const char *const good[] = {
        /* extra fields after the defined ones are ignored; each type's small forms */
        "00 53 70 c0 09 06 42 40 52 01 56 00 43 41",
        "00 53 73 c0 10 07 44 40 40 40 40 80 00 00 00 00 00 00 00 00 40",
        "00 53 73 c0 0d 0c 40 40 40 40 40 40 40 40 40 40 40 43",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tn_amqp_msg m;
        uint8_t *in;
        size_t n;
        CU_ASSERT_EQUAL(decode_hex(bad[i], &m, &in, &n), TN_EPROTO);
        free(in);
    }
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        tn_amqp_msg m;
        uint8_t *in;
        size_t n;
        CU_ASSERT_EQUAL(decode_hex(good[i], &m, &in, &n), 0);
        free(in);
    }
}

/* --- Values --- */

static void
test_values(void)
{
    static const struct {
        const char *hex;
        int rc;
        uint8_t code;
        size_t data_at, data_n; /* where the data is in the input */
        uint32_t count;
    } cases[] = {
        {"40", 0, 0x40, 1, 0, 0},
        {"56 01", 0, 0x56, 1, 1, 0},
        {"60 01 02", 0, 0x60, 1, 2, 0},
        {"98 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f", 0, 0x98, 1, 16, 0},
        {"94 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f", 0, 0x94, 1, 16, 0},
        {"a0 02 01 02", 0, 0xa0, 2, 2, 0},
        {"b3 00 00 00 01 61", 0, 0xb3, 5, 1, 0},
        {"45", 0, 0x45, 1, 0, 0},
        {"c0 01 00", 0, 0xc0, 3, 0, 0},
        {"c0 03 02 41 42", 0, 0xc0, 3, 2, 2},
        {"d1 00 00 00 07 00 00 00 02 a1 00 40", 0, 0xd1, 9, 3, 2},
        {"00 53 01 00 a3 01 78 71 ff ff ff ff", 0, 0x71, 8, 4, 0},
        {"e0 04 02 50 01 02", 0, 0xe0, 3, 3, 2},
        {"e0 02 03 40", 0, 0xe0, 3, 1, 3}, /* three nulls in no bytes */
        {"f0 00 00 00 05 ff ff ff ff 40", 0, 0xf0, 9, 1, 0xffffffff},
        {"e0 07 02 a1 01 61 02 62 63", 0, 0xe0, 3, 6, 2},    /* strings */
        {"e0 07 02 00 53 01 50 01 02", 0, 0xe0, 3, 6, 2},    /* described elements */
        {"e0 07 02 c0 01 00 02 01 41", 0, 0xe0, 3, 6, 2},    /* lists */
        {"e0 08 02 e0 02 00 40 02 01 41", 0, 0xe0, 3, 7, 2}, /* arrays */
        {"e0 01 00", TN_EPROTO, 0, 0, 0, 0},                 /* no element constructor */
        {"e0 04 03 50 01 02", TN_EPROTO, 0, 0, 0, 0},        /* too few bytes for 3 */
        {"e0 04 01 50 01 02", TN_EPROTO, 0, 0, 0, 0},        /* bytes left over */
        {"e0 04 02 57 01 02", TN_EPROTO, 0, 0, 0, 0},        /* bad element code */
        {"e0 04 02 a1 01 61", TN_EPROTO, 0, 0, 0, 0},        /* a string missing */
        {"e0 05 02 a1 01 61 02", TN_EPROTO, 0, 0, 0, 0},     /* past the region */
        {"e0 02 02 00", TN_EPROTO, 0, 0, 0, 0},              /* descriptor missing */
        {"", TN_EPROTO, 0, 0, 0, 0},
        {"57", TN_EPROTO, 0, 0, 0, 0},
        {"a2 00", TN_EPROTO, 0, 0, 0, 0},
        {"ff", TN_EPROTO, 0, 0, 0, 0},
        {"00", TN_EPROTO, 0, 0, 0, 0},
        {"00 53", TN_EPROTO, 0, 0, 0, 0},
        {"00 53 01", TN_EPROTO, 0, 0, 0, 0},
        {"50", TN_EPROTO, 0, 0, 0, 0},
        {"98 00 01", TN_EPROTO, 0, 0, 0, 0},
        {"a1 02 61", TN_EPROTO, 0, 0, 0, 0},
        {"b1 00 00 00", TN_EPROTO, 0, 0, 0, 0},
        {"b1 ff ff ff ff 61", TN_EPROTO, 0, 0, 0, 0},
        {"c0", TN_EPROTO, 0, 0, 0, 0},
        {"c0 00", TN_EPROTO, 0, 0, 0, 0}, /* size without the count */
        {"c0 00 00", TN_EPROTO, 0, 0, 0, 0},
        {"c0 02 01", TN_EPROTO, 0, 0, 0, 0},                   /* size past the end */
        {"c0 01 01", TN_EPROTO, 0, 0, 0, 0},                   /* an element missing */
        {"c0 02 00 40", TN_EPROTO, 0, 0, 0, 0},                /* an element too many */
        {"c0 03 01 a1 05", TN_EPROTO, 0, 0, 0, 0},             /* element past the size */
        {"c1 03 01 40 40", TN_EPROTO, 0, 0, 0, 0},             /* odd map */
        {"d0 00 00 00 03 00 00 00 00", TN_EPROTO, 0, 0, 0, 0}, /* size less than the count */
        {"d0 00 00 00 04 ff ff ff ff", TN_EPROTO, 0, 0, 0, 0},
        {"d0 00 00 00 04 00 00 00", TN_EPROTO, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n, used = 12345;
        uint8_t *in = unhex(cases[i].hex, &n);
        tn_amqp_value v;
        int rc = tn_amqp_value_decode(in, n, &v, &used);
        CU_ASSERT_EQUAL(rc, cases[i].rc);
        if (rc != cases[i].rc)
            printf("\n  case %zu: %s\n", i, cases[i].hex);
        if (rc == 0 && cases[i].rc == 0) {
            CU_ASSERT_EQUAL(used, n);
            CU_ASSERT_TRUE(v.raw.p == in && v.raw.n == n);
            CU_ASSERT_EQUAL(v.code, cases[i].code);
            CU_ASSERT_PTR_EQUAL(v.data.p, in + cases[i].data_at);
            CU_ASSERT_EQUAL(v.data.n, cases[i].data_n);
            CU_ASSERT_EQUAL(v.count, cases[i].count);
            CU_ASSERT_EQUAL(v.described, in[0] == 0);
        }
        free(in);
    }
    /* Trailing bytes are not the value's. */
    size_t n, used;
    tn_amqp_value v;
    uint8_t *in = unhex("a1 01 61 40", &n);
    CU_ASSERT_EQUAL(tn_amqp_value_decode(in, n, &v, &used), 0);
    CU_ASSERT_EQUAL(used, 3);
    free(in);
}

/* depth lists (list8) inside each other, innermost list0, and the same with descriptors. */
static uint8_t *
nested(unsigned depth, bool descriptors, size_t *n)
{
    uint8_t *p = malloc(3 * depth + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    size_t len = 3 * depth + 1;
    for (unsigned i = 0; i < depth; i++) {
        p[3 * i] = descriptors ? 0x00 : 0xc0;
        p[3 * i + 1] = descriptors ? 0x53 : (uint8_t)(len - 3 * i - 2);
        p[3 * i + 2] = 1;
    }
    p[len - 1] = descriptors ? 0x40 : 0x45;
    *n = len;
    return p;
}

static void
test_depth(void)
{
    for (int descriptors = 0; descriptors < 2; descriptors++) {
        size_t n, used;
        tn_amqp_value v;
        uint8_t *p = nested(TN_AMQP_MAX_DEPTH, descriptors, &n);
        CU_ASSERT_EQUAL(tn_amqp_value_decode(p, n, &v, &used), 0);
        CU_ASSERT_EQUAL(used, n);
        free(p);
        p = nested(TN_AMQP_MAX_DEPTH + 1, descriptors, &n);
        CU_ASSERT_EQUAL(tn_amqp_value_decode(p, n, &v, &used), TN_EPROTO);
        free(p);
        p = nested(10000, descriptors, &n);
        CU_ASSERT_EQUAL(tn_amqp_value_decode(p, n, &v, &used), TN_EPROTO);
        free(p);
    }
    /* Inside a message: the section's descriptor counts as one level. */
    size_t n;
    uint8_t *inner = nested(TN_AMQP_MAX_DEPTH - 1, false, &n);
    uint8_t *msg = malloc(n + 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    memcpy(msg, "\x00\x53\x77", 3);
    memcpy(msg + 3, inner, n);
    tn_amqp_msg m;
    CU_ASSERT_EQUAL(tn_amqp_msg_decode(msg, n + 3, &m, NULL), 0);
    free(msg);
    free(inner);
    inner = nested(TN_AMQP_MAX_DEPTH, false, &n);
    msg = malloc(n + 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    memcpy(msg, "\x00\x53\x77", 3);
    memcpy(msg + 3, inner, n);
    CU_ASSERT_EQUAL(tn_amqp_msg_decode(msg, n + 3, &m, NULL), TN_EPROTO);
    free(msg);
    free(inner);
}

static void
test_map_iter(void)
{
    tn_amqp_map_iter it;
    tn_amqp_value k, v;
    size_t n;
    uint8_t *p;

    /* An absent map is empty. */
    CU_ASSERT_EQUAL(tn_amqp_map_begin((tn_amqp_span){NULL, 0}, &it), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &k, &v), 0);

    /* A bare map8, then the same in a footer section, then symbolic. */
    static const char *const maps[] = {
        "c1 09 04 a1 01 61 41 50 02 52 02",
        "00 53 78 c1 09 04 a1 01 61 41 50 02 52 02",
        "00 53 71 c1 09 04 a1 01 61 41 50 02 52 02",
        "00 a3 0f 61 6d 71 70 3a 66 6f 6f 74 65 72 3a 6d 61 70 c1 09 04 a1 01 61 41 50 02 52 02",
    };
    for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++) {
        p = unhex(maps[i], &n);
        CU_ASSERT_EQUAL_FATAL(tn_amqp_map_begin((tn_amqp_span){p, n}, &it), 0);
        CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &k, &v), 1);
        CU_ASSERT_STRING_EQUAL(text(&k), "a");
        CU_ASSERT_STRING_EQUAL(text(&v), "true");
        CU_ASSERT_EQUAL(k.raw.n, 3);
        CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &k, &v), 1);
        CU_ASSERT_EQUAL(k.code, 0x50);
        CU_ASSERT_STRING_EQUAL(text(&v), "2");
        CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &k, &v), 0);
        CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &k, &v), 0);
        free(p);
    }

    static const char *const bad[] = {
        "c0 01 00",                   /* a list */
        "40",                         /* null */
        "c1 01 00 40",                /* bytes after the map */
        "c1 03 02 40",                /* truncated */
        "00 53 70 c1 01 00",          /* a header section */
        "00 53 73 c1 01 00",          /* a properties section */
        "00 53 75 a0 00",             /* a data section */
        "00 53 74 c0 01 00",          /* application-properties holding a list */
        "00 53 01 c1 01 00",          /* a described map */
        "00 53 74 00 53 01 c1 01 00", /* a section holding a described map */
        "00 53 74 c1 01 00 40",       /* bytes after the section */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = unhex(bad[i], &n);
        CU_ASSERT_EQUAL(tn_amqp_map_begin((tn_amqp_span){p, n}, &it), TN_EPROTO);
        free(p);
    }

    /* An iterator that the caller broke: errors, not a crash. */
    p = unhex("c1 03 02 40 a1", &n);
    it = (tn_amqp_map_iter){p + 3, p + n, 2};
    CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &k, &v), TN_EPROTO);
    it = (tn_amqp_map_iter){p + 4, p + n, 2};
    CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &k, &v), TN_EPROTO);
    it = (tn_amqp_map_iter){p + 3, p + n, 1};
    CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &k, &v), TN_EPROTO);
    it = (tn_amqp_map_iter){p + 3, p + n, 0};
    CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &k, &v), TN_EPROTO);
    free(p);
}

static void
test_value_text(void)
{
    static const struct {
        const char *hex;
        const char *text; /* NULL: TN_EINVAL */
    } cases[] = {
        {"40", ""},
        {"41", "true"},
        {"42", "false"},
        {"56 00", "false"},
        {"56 01", "true"},
        {"43", "0"},
        {"44", "0"},
        {"50 ff", "255"},
        {"51 ff", "-1"},
        {"52 07", "7"},
        {"53 80", "128"},
        {"54 80", "-128"},
        {"55 fe", "-2"},
        {"60 ff fe", "65534"},
        {"61 ff fe", "-2"},
        {"70 ff ff ff ff", "4294967295"},
        {"71 80 00 00 00", "-2147483648"},
        {"80 ff ff ff ff ff ff ff ff", "18446744073709551615"},
        {"81 80 00 00 00 00 00 00 00", "-9223372036854775808"},
        {"81 00 00 00 00 00 00 00 2a", "42"},
        {"83 00 00 01 8b cf e5 68 7b", "1700000000123"},
        {"83 ff ff ff ff ff ff ff ff", "-1"},
        {"72 40 20 00 00", "2.5"},
        {"72 3d cc cc cd", "0.1"}, /* 0.1f: shortest form that reads back as the float */
        {"72 7f 80 00 00", "inf"},
        {"82 3f b9 99 99 99 99 99 9a", "0.1"},
        {"82 3f f0 00 00 00 00 00 01", "1.0000000000000002"},
        {"82 7f ef ff ff ff ff ff ff", "1.7976931348623157e+308"},
        {"82 c0 00 00 00 00 00 00 00", "-2"},
        {"82 ff f0 00 00 00 00 00 00", "-inf"},
        {"73 00 00 00 41", "A"},
        {"73 00 00 00 e9", "\xc3\xa9"},
        {"73 00 00 20 ac", "\xe2\x82\xac"},
        {"73 00 01 f6 00", "\xf0\x9f\x98\x80"},
        {"73 00 00 d8 00", NULL}, /* a surrogate */
        {"73 00 11 00 00", NULL},
        {"98 12 34 56 78 9a bc de f0 12 34 56 78 9a bc de f0",
         "12345678-9abc-def0-1234-56789abcdef0"},
        {"a1 03 61 62 63", "abc"},
        {"b1 00 00 00 00", ""},
        {"a3 02 78 79", "xy"},
        {"a0 01 7a", "z"},
        {"74 00 00 00 00", NULL},
        {"84 00 00 00 00 00 00 00 00", NULL},
        {"94 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00", NULL},
        {"45", NULL},
        {"c0 01 00", NULL},
        {"c1 01 00", NULL},
        {"e0 02 00 40", NULL},
        {"00 53 01 a1 01 61", NULL},
        {"00 53 01 40", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n, used;
        uint8_t *in = unhex(cases[i].hex, &n);
        tn_amqp_value v;
        CU_ASSERT_EQUAL_FATAL(tn_amqp_value_decode(in, n, &v, &used), 0);
        const char *got = text(&v);
        const char *want = cases[i].text ? cases[i].text : "(einval)";
        CU_ASSERT_STRING_EQUAL(got, want);
        if (strcmp(got, want) != 0)
            printf("\n  %s: got '%s' want '%s'\n", cases[i].hex, got, want);
        if (cases[i].text) {
            /* Exactly enough room, and one byte less. */
            size_t len = strlen(cases[i].text);
            char *buf = malloc(len ? len : 1);
            CU_ASSERT_EQUAL(tn_amqp_value_text(&v, buf, len), (int)len);
            CU_ASSERT_EQUAL(memcmp(buf, cases[i].text, len), 0);
            if (len > 0)
                CU_ASSERT_EQUAL(tn_amqp_value_text(&v, buf, len - 1), TN_EINVAL);
            free(buf);
        }
        free(in);
    }
}

/* --- Encoding --- */

static void
expect_buf(tn_buf *b, const char *hex)
{
    CU_ASSERT_TRUE(bytes_are(b->data, b->len, hex));
    b->len = 0;
}

static void
test_encode_header(void)
{
    tn_buf b;
    tn_amqp_msg m;

    tn_buf_init(&b, 1024);
    CU_ASSERT_EQUAL(tn_amqp_put_header(&b, false, 4, 0, false, 0, false), 0);
    CU_ASSERT_EQUAL(b.len, 0);
    CU_ASSERT_EQUAL(tn_amqp_put_header(&b, false, 4, 0, false, 0, true), 0);
    expect_buf(&b, "00 53 70 45");
    CU_ASSERT_EQUAL(tn_amqp_put_header(&b, true, 4, 0, false, 0, false), 0);
    expect_buf(&b, "00 53 70 c0 02 01 41");
    CU_ASSERT_EQUAL(tn_amqp_put_header(&b, false, 4, 100, false, 0, false), 0);
    expect_buf(&b, "00 53 70 c0 05 03 40 40 52 64");
    CU_ASSERT_EQUAL(tn_amqp_put_header(&b, false, 0, 0, false, 0, false), 0);
    expect_buf(&b, "00 53 70 c0 04 02 40 50 00");
    CU_ASSERT_EQUAL(tn_amqp_put_header(&b, true, 7, 1500, true, 3, false), 0);
    expect_buf(&b, "00 53 70 c0 0c 05 41 50 07 70 00 00 05 dc 41 52 03");

    /* Round trips, each field alone and all together. */
    static const struct {
        bool durable;
        uint8_t priority;
        uint32_t ttl;
        bool first_acquirer;
        uint32_t delivery_count;
    } cases[] = {
        {false, 4, 0, false, 0},     {true, 4, 0, false, 0},
        {false, 9, 0, false, 0},     {false, 4, 0xffffffff, false, 0},
        {false, 4, 0, true, 0},      {false, 4, 0, false, 1},
        {false, 4, 0, false, 70000}, {true, 255, 86400000, true, 0xffffffff},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CU_ASSERT_EQUAL_FATAL(tn_amqp_put_header(&b, cases[i].durable, cases[i].priority,
                                                 cases[i].ttl, cases[i].first_acquirer,
                                                 cases[i].delivery_count, true),
                              0);
        CU_ASSERT_EQUAL_FATAL(tn_amqp_msg_decode(b.data, b.len, &m, NULL), 0);
        CU_ASSERT_TRUE(m.header.p == b.data && m.header.n == b.len);
        CU_ASSERT_EQUAL(m.durable, cases[i].durable);
        CU_ASSERT_EQUAL(m.priority, cases[i].priority);
        CU_ASSERT_EQUAL(m.has_ttl, cases[i].ttl != 0);
        CU_ASSERT_EQUAL(m.ttl, cases[i].ttl);
        CU_ASSERT_EQUAL(m.first_acquirer, cases[i].first_acquirer);
        CU_ASSERT_EQUAL(m.delivery_count, cases[i].delivery_count);
        b.len = 0;
    }
    tn_buf_fini(&b);
}

#define SPAN(lit) ((tn_amqp_span){(const uint8_t *)(lit), sizeof(lit) - 1})

static void
test_encode_properties(void)
{
    tn_buf b;
    tn_amqp_msg m;
    tn_amqp_props_out p;
    char big[300];

    tn_buf_init(&b, 4096);
    memset(&p, 0, sizeof p);
    CU_ASSERT_EQUAL(tn_amqp_put_properties(&b, &p), 0);
    CU_ASSERT_EQUAL(b.len, 0);
    p.message_id = SPAN("m1");
    CU_ASSERT_EQUAL(tn_amqp_put_properties(&b, &p), 0);
    expect_buf(&b, "00 53 73 c0 05 01 a1 02 6d 31");
    memset(&p, 0, sizeof p);
    p.content_type = SPAN("text/plain");
    p.has_group_sequence = true;
    p.group_sequence = 0;
    CU_ASSERT_EQUAL(tn_amqp_put_properties(&b, &p), 0);
    expect_buf(&b, "00 53 73 c0 18 0c 40 40 40 40 40 40 a3 0a 74 65 78 74 2f 70 6c 61 69 6e 40"
                   " 40 40 40 43");

    /* Every field. */
    p = (tn_amqp_props_out){
        .message_id = SPAN("id-1"),
        .user_id = SPAN("guest"),
        .to = SPAN("queue://q"),
        .subject = SPAN(""),
        .reply_to = SPAN("topic://r"),
        .correlation_id = SPAN("c-9"),
        .content_type = SPAN("application/json"),
        .content_encoding = SPAN("gzip"),
        .absolute_expiry_time = 1700000100500,
        .creation_time = -5,
        .group_id = SPAN("g"),
        .has_group_sequence = true,
        .group_sequence = 70000,
        .reply_to_group_id = SPAN("rg"),
    };
    CU_ASSERT_EQUAL_FATAL(tn_amqp_put_properties(&b, &p), 0);
    CU_ASSERT_EQUAL(b.data[3], 0xc0);
    CU_ASSERT_EQUAL_FATAL(tn_amqp_msg_decode(b.data, b.len, &m, NULL), 0);
    CU_ASSERT_TRUE(m.properties.p == b.data && m.properties.n == b.len);
    CU_ASSERT_EQUAL(m.message_id.code, 0xa1);
    CU_ASSERT_STRING_EQUAL(text(&m.message_id), "id-1");
    CU_ASSERT_TRUE(span_is(m.user_id, "guest"));
    CU_ASSERT_TRUE(span_is(m.to, "queue://q"));
    CU_ASSERT_TRUE(span_is(m.subject, ""));
    CU_ASSERT_TRUE(span_is(m.reply_to, "topic://r"));
    CU_ASSERT_EQUAL(m.correlation_id.code, 0xa1);
    CU_ASSERT_STRING_EQUAL(text(&m.correlation_id), "c-9");
    CU_ASSERT_TRUE(span_is(m.content_type, "application/json"));
    CU_ASSERT_TRUE(span_is(m.content_encoding, "gzip"));
    CU_ASSERT_TRUE(m.has_absolute_expiry_time && m.absolute_expiry_time == 1700000100500);
    CU_ASSERT_TRUE(m.has_creation_time && m.creation_time == -5);
    CU_ASSERT_TRUE(span_is(m.group_id, "g"));
    CU_ASSERT_TRUE(m.has_group_sequence && m.group_sequence == 70000);
    CU_ASSERT_TRUE(span_is(m.reply_to_group_id, "rg"));
    b.len = 0;

    /* A long subject: str32 in a list32. */
    memset(big, 's', sizeof big);
    memset(&p, 0, sizeof p);
    p.subject = (tn_amqp_span){(const uint8_t *)big, sizeof big};
    p.reply_to = SPAN("r");
    CU_ASSERT_EQUAL_FATAL(tn_amqp_put_properties(&b, &p), 0);
    CU_ASSERT_EQUAL(b.len, 3 + 9 + 3 + 5 + 300 + 3);
    CU_ASSERT_TRUE(
        bytes_are(b.data, 20, "00 53 73 d0 00 00 01 3b 00 00 00 05 40 40 40 b1 00 00 01 2c"));
    CU_ASSERT_EQUAL_FATAL(tn_amqp_msg_decode(b.data, b.len, &m, NULL), 0);
    CU_ASSERT_TRUE(m.subject.n == 300 && m.subject.p == b.data + 20);
    CU_ASSERT_TRUE(span_is(m.reply_to, "r"));
    b.len = 0;

    /* 255 bytes of string is still a str8, in a list32 (size past 255). */
    p.subject.n = 255;
    p.reply_to.p = NULL;
    CU_ASSERT_EQUAL_FATAL(tn_amqp_put_properties(&b, &p), 0);
    CU_ASSERT_TRUE(bytes_are(b.data, 17, "00 53 73 d0 00 00 01 08 00 00 00 04 40 40 40 a1 ff"));
    CU_ASSERT_EQUAL_FATAL(tn_amqp_msg_decode(b.data, b.len, &m, NULL), 0);
    CU_ASSERT_EQUAL(m.subject.n, 255);
    b.len = 0;
    /* The largest list8: its size byte is 255. */
    p.subject.n = 249;
    CU_ASSERT_EQUAL_FATAL(tn_amqp_put_properties(&b, &p), 0);
    CU_ASSERT_TRUE(bytes_are(b.data, 11, "00 53 73 c0 ff 04 40 40 40 a1 f9"));
    CU_ASSERT_EQUAL_FATAL(tn_amqp_msg_decode(b.data, b.len, &m, NULL), 0);
    b.len = 0;
    p.subject.n = 250;
    CU_ASSERT_EQUAL_FATAL(tn_amqp_put_properties(&b, &p), 0);
    CU_ASSERT_EQUAL(b.data[3], 0xd0);
    CU_ASSERT_EQUAL_FATAL(tn_amqp_msg_decode(b.data, b.len, &m, NULL), 0);
    tn_buf_fini(&b);
}

static void
test_encode_map(void)
{
    tn_buf b;
    tn_amqp_map_out mo;
    tn_amqp_msg m;
    char k[256], v[300];
    static char big[300];

    tn_buf_init(&b, 4096);
    CU_ASSERT_EQUAL(tn_amqp_map_open(&b, TN_AMQP_APPLICATION_PROPERTIES, &mo), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_put_str(&b, &mo, "k", 1, "v", 1), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_close(&b, &mo), 0);
    expect_buf(&b, "00 53 74 d1 00 00 00 0a 00 00 00 02 a1 01 6b a1 01 76");

    /* Empty: nothing is left, and what was there before stays. */
    CU_ASSERT_EQUAL(tn_buf_append(&b, "keep", 4), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_open(&b, TN_AMQP_APPLICATION_PROPERTIES, &mo), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_close(&b, &mo), 0);
    CU_ASSERT_TRUE(b.len == 4 && memcmp(b.data, "keep", 4) == 0);
    b.len = 0;

    /* Annotation keys are symbols. */
    CU_ASSERT_EQUAL(tn_amqp_map_open(&b, TN_AMQP_MESSAGE_ANNOTATIONS, &mo), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_put_str(&b, &mo, "x-opt-a", 7, "", 0), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_close(&b, &mo), 0);
    expect_buf(&b, "00 53 72 d1 00 00 00 0f 00 00 00 02 a3 07 78 2d 6f 70 74 2d 61 a1 00");

    /* Round trip, with str32 values and keys, after a header. */
    memset(big, 'b', sizeof big);
    CU_ASSERT_EQUAL(tn_amqp_put_header(&b, true, 4, 0, false, 0, false), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_open(&b, TN_AMQP_APPLICATION_PROPERTIES, &mo), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_put_str(&b, &mo, "a", 1, "1", 1), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_put_str(&b, &mo, big, 256, big, 300), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_put_str(&b, &mo, "", 0, "", 0), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_close(&b, &mo), 0);
    CU_ASSERT_EQUAL(tn_amqp_put_data(&b, (const uint8_t *)"d", 1), 0);
    CU_ASSERT_EQUAL_FATAL(tn_amqp_msg_decode(b.data, b.len, &m, NULL), 0);
    CU_ASSERT_EQUAL(map_size(m.application_properties), 3);
    CU_ASSERT_TRUE(map_entry(m.application_properties, 0, k, v));
    CU_ASSERT_STRING_EQUAL(k, "a");
    CU_ASSERT_STRING_EQUAL(v, "1");
    tn_amqp_map_iter it;
    tn_amqp_value kv, vv;
    CU_ASSERT_EQUAL(tn_amqp_map_begin(m.application_properties, &it), 0);
    CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &kv, &vv), 1);
    CU_ASSERT_EQUAL(tn_amqp_map_next(&it, &kv, &vv), 1);
    CU_ASSERT_TRUE(kv.code == 0xb1 && kv.data.n == 256 && vv.code == 0xb1 && vv.data.n == 300);
    CU_ASSERT_TRUE(map_entry(m.application_properties, 2, k, v));
    CU_ASSERT_STRING_EQUAL(k, "");
    CU_ASSERT_TRUE(m.durable);
    CU_ASSERT_TRUE(span_is(m.content, "d"));
    tn_buf_fini(&b);
}

static void
test_encode_body(void)
{
    tn_buf b;
    tn_amqp_msg m;
    static uint8_t big[256];

    tn_buf_init(&b, 4096);
    CU_ASSERT_EQUAL(tn_amqp_put_data(&b, (const uint8_t *)"abc", 3), 0);
    expect_buf(&b, "00 53 75 a0 03 61 62 63");
    CU_ASSERT_EQUAL(tn_amqp_put_data(&b, NULL, 0), 0);
    expect_buf(&b, "00 53 75 a0 00");
    CU_ASSERT_EQUAL(tn_amqp_put_string_value(&b, "hi", 2), 0);
    expect_buf(&b, "00 53 77 a1 02 68 69");
    CU_ASSERT_EQUAL(tn_amqp_put_data_head(&b, 5), 0);
    expect_buf(&b, "00 53 75 b0 00 00 00 05");
    CU_ASSERT_EQUAL(tn_amqp_put_data_head(&b, 0), 0);
    expect_buf(&b, "00 53 75 b0 00 00 00 00");

    memset(big, 0x5a, sizeof big);
    CU_ASSERT_EQUAL(tn_amqp_put_data(&b, big, 256), 0);
    CU_ASSERT_TRUE(bytes_are(b.data, 8, "00 53 75 b0 00 00 01 00"));
    CU_ASSERT_EQUAL_FATAL(tn_amqp_msg_decode(b.data, b.len, &m, NULL), 0);
    CU_ASSERT_EQUAL(m.body_kind, TN_AMQP_BODY_DATA);
    CU_ASSERT_TRUE(m.content.p == b.data + 8 && m.content.n == 256);
    b.len = 0;
    CU_ASSERT_EQUAL(tn_amqp_put_string_value(&b, (const char *)big, 256), 0);
    CU_ASSERT_TRUE(bytes_are(b.data, 8, "00 53 77 b1 00 00 01 00"));
    CU_ASSERT_EQUAL_FATAL(tn_amqp_msg_decode(b.data, b.len, &m, NULL), 0);
    CU_ASSERT_EQUAL(m.body_kind, TN_AMQP_BODY_STRING);
    CU_ASSERT_TRUE(m.content.p == b.data + 8 && m.content.n == 256);
    b.len = 0;
    /* The head, then the bytes by reference: one data section. */
    CU_ASSERT_EQUAL(tn_amqp_put_data_head(&b, 3), 0);
    CU_ASSERT_EQUAL(tn_buf_append(&b, "xyz", 3), 0);
    CU_ASSERT_EQUAL_FATAL(tn_amqp_msg_decode(b.data, b.len, &m, NULL), 0);
    CU_ASSERT_EQUAL(m.body_kind, TN_AMQP_BODY_DATA);
    CU_ASSERT_TRUE(span_is(m.content, "xyz"));
    tn_buf_fini(&b);
}

/* Each encoder, given every buffer limit too small by one or more bytes, fails with TN_ETOOBIG
 * and leaves the buffer's bytes as they were. */
typedef int (*encode_fn)(tn_buf *b);

static int
enc_header(tn_buf *b)
{
    return tn_amqp_put_header(b, true, 7, 1000, true, 300, true);
}

static int
enc_properties(tn_buf *b)
{
    static char big[300];
    tn_amqp_props_out p = {.message_id = SPAN("m"), .creation_time = 1, .to = SPAN("t")};
    p.subject = (tn_amqp_span){(const uint8_t *)big, sizeof big};
    return tn_amqp_put_properties(b, &p);
}

static int
enc_properties_small(tn_buf *b)
{
    tn_amqp_props_out p = {.message_id = SPAN("m"), .creation_time = 1, .to = SPAN("t")};
    return tn_amqp_put_properties(b, &p);
}

static int
enc_map(tn_buf *b)
{
    tn_amqp_map_out mo;
    int rc = tn_amqp_map_open(b, TN_AMQP_APPLICATION_PROPERTIES, &mo);
    if (rc != 0)
        return rc;
    rc = tn_amqp_map_put_str(b, &mo, "key", 3, "value", 5);
    if (rc == 0)
        rc = tn_amqp_map_put_str(b, &mo, "k2", 2, "v2", 2);
    if (rc == 0)
        rc = tn_amqp_map_close(b, &mo);
    if (rc != 0)
        b->len = mo.start; /* what a caller does to drop a map it could not finish */
    return rc;
}

static int
enc_data(tn_buf *b)
{
    return tn_amqp_put_data(b, (const uint8_t *)"0123456789", 10);
}

static int
enc_string(tn_buf *b)
{
    return tn_amqp_put_string_value(b, "0123456789", 10);
}

static int
enc_data_head(tn_buf *b)
{
    return tn_amqp_put_data_head(b, 10);
}

static int
enc_merge(tn_buf *b)
{
    static const uint8_t old[] = {0x00, 0x53, 0x72, 0xc1, 0x05, 0x02, 0xa3, 0x01, 0x61, 0x41};
    static const uint8_t add[] = {0xc1, 0x05, 0x02, 0xa3, 0x01, 0x62, 0x42};
    return tn_amqp_annotations_merge(b, (tn_amqp_span){old, sizeof old},
                                     (tn_amqp_span){add, sizeof add});
}

static void
test_encode_limits(void)
{
    static const encode_fn fns[] = {enc_header, enc_properties, enc_properties_small, enc_map,
                                    enc_data,   enc_string,     enc_data_head,        enc_merge};
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        tn_buf b;
        tn_buf_init(&b, 4096);
        CU_ASSERT_EQUAL(tn_buf_append(&b, "keep", 4), 0);
        CU_ASSERT_EQUAL_FATAL(fns[i](&b), 0);
        size_t need = b.len - 4;
        tn_buf_fini(&b);
        for (size_t max = 4; max < 4 + need; max++) {
            tn_buf_init(&b, max);
            CU_ASSERT_EQUAL(tn_buf_append(&b, "keep", 4), 0);
            int rc = fns[i](&b);
            CU_ASSERT_EQUAL(rc, TN_ETOOBIG);
            CU_ASSERT_TRUE(b.len == 4 && memcmp(b.data, "keep", 4) == 0);
            tn_buf_fini(&b);
        }
    }
}

/* --- Merging annotations --- */

static void
merge(const char *old, const char *add, int rc, const char *want)
{
    size_t on = 0, an = 0;
    uint8_t *o = old ? unhex(old, &on) : NULL;
    uint8_t *a = add ? unhex(add, &an) : NULL;
    tn_buf b;

    tn_buf_init(&b, 4096);
    CU_ASSERT_EQUAL(tn_buf_append(&b, "keep", 4), 0);
    CU_ASSERT_EQUAL(tn_amqp_annotations_merge(&b, (tn_amqp_span){o, on}, (tn_amqp_span){a, an}),
                    rc);
    CU_ASSERT_TRUE_FATAL(b.len >= 4);
    CU_ASSERT_EQUAL(memcmp(b.data, "keep", 4), 0);
    if (rc != 0 || want == NULL) {
        CU_ASSERT_EQUAL(b.len, 4);
    } else {
        CU_ASSERT_TRUE(bytes_are(b.data + 4, b.len - 4, want));
        tn_amqp_msg m;
        CU_ASSERT_EQUAL(tn_amqp_msg_decode(b.data + 4, b.len - 4, &m, NULL), 0);
        CU_ASSERT_EQUAL(m.message_annotations.n, b.len - 4);
    }
    tn_buf_fini(&b);
    free(o);
    free(a);
}

#define KEY_A "a3 07 78 2d 6f 70 74 2d 61 "
#define KEY_B "a3 07 78 2d 6f 70 74 2d 62 "

static void
test_merge(void)
{
    const char *old = "00 53 72 d1 00 00 00 10 00 00 00 02 " KEY_A "a1 01 76";
    const char *old2 = "00 53 72 c1 17 04 " KEY_A "a1 01 76 " KEY_B "41";

    /* Replace a key: x-opt-a "v" -> "w", and append one. */
    merge(old, "c1 18 04 " KEY_A "a1 01 77 " KEY_B "55 01", 0,
          "00 53 72 d1 00 00 00 1b 00 00 00 04 " KEY_A "a1 01 77 " KEY_B "55 01");
    /* Replace the second of two; old's order stays. */
    merge(old2, "c1 0b 02 " KEY_B "40", 0,
          "00 53 72 d1 00 00 00 1a 00 00 00 04 " KEY_A "a1 01 76 " KEY_B "40");
    /* Append. */
    merge(old, "c1 0c 02 " KEY_B "52 07", 0,
          "00 53 72 d1 00 00 00 1b 00 00 00 04 " KEY_A "a1 01 76 " KEY_B "52 07");
    /* Old absent; add a map32 or a section. */
    merge(NULL, "d1 00 00 00 10 00 00 00 02 " KEY_B "a1 01 76", 0,
          "00 53 72 d1 00 00 00 10 00 00 00 02 " KEY_B "a1 01 76");
    merge(NULL, "00 53 72 c1 0d 02 " KEY_B "a1 01 76", 0,
          "00 53 72 d1 00 00 00 10 00 00 00 02 " KEY_B "a1 01 76");
    /* Add empty or absent: old's entries (a map8 old comes out as a map32). */
    merge(old, "c1 01 00", 0, old);
    merge(old, NULL, 0, old);
    merge(old2, NULL, 0, "00 53 72 d1 00 00 00 1a 00 00 00 04 " KEY_A "a1 01 76 " KEY_B "41");
    /* Nothing at all: nothing written. */
    merge(NULL, NULL, 0, NULL);
    merge(NULL, "c1 01 00", 0, NULL);
    merge("00 53 72 c1 01 00", "c1 01 00", 0, NULL);
    /* A key repeated in add: the first counts. Keys are compared by their encoding: a sym32
     * x-opt-a is another key. */
    merge(old, "c1 1f 06 " KEY_B "41 " KEY_A "42 " KEY_B "42", 0,
          "00 53 72 d1 00 00 00 18 00 00 00 04 " KEY_A "42 " KEY_B "41");
    merge(old, "c1 0e 02 b3 00 00 00 07 78 2d 6f 70 74 2d 61 40", 0,
          "00 53 72 d1 00 00 00 1d 00 00 00 04 " KEY_A "a1 01 76 "
          "b3 00 00 00 07 78 2d 6f 70 74 2d 61 40");
    /* Many keys: every one of add replaces or is appended once. */
    char many_old[2048] = "00 53 72 d1 00 00 00 c4 00 00 00 80 ",
         many_add[2048] = "d1 00 00 00 c4 00 00 00 80 ";
    char many_want[4096] = "00 53 72 d1 00 00 01 24 00 00 00 c0 ";
    for (int i = 0; i < 64; i++)
        sprintf(many_old + strlen(many_old), "52 %02x 41 ", i);
    for (int i = 32; i < 96; i++)
        sprintf(many_add + strlen(many_add), "52 %02x 42 ", i);
    for (int i = 0; i < 96; i++)
        sprintf(many_want + strlen(many_want), "52 %02x %s ", i, i < 32 ? "41" : "42");
    merge(many_old, many_add, 0, many_want);

    /* Malformed: the buffer is left as it was. */
    merge("00 53 72 c1 03 02 40", NULL, TN_EPROTO, NULL);
    merge("00 53 72 c0 01 00", NULL, TN_EPROTO, NULL);
    merge(old, "c0 01 00", TN_EPROTO, NULL);
    merge(old, "c1 05 02 a3 01", TN_EPROTO, NULL);
    merge(old, "", TN_EPROTO, NULL);
    merge("00 53 70 45", NULL, TN_EPROTO, NULL);
}

int
main(void)
{
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"proton_full", test_proton_full},
        {"proton_all_properties", test_proton_all_properties},
        {"proton_types", test_proton_types},
        {"proton_array", test_proton_array},
        {"proton_body_kinds", test_proton_body_kinds},
        {"defaults", test_defaults},
        {"every_section", test_every_section},
        {"body_kinds", test_body_kinds},
        {"descriptors", test_descriptors},
        {"truncated", test_truncated},
        {"order", test_order},
        {"field_types", test_field_types},
        {"values", test_values},
        {"depth", test_depth},
        {"map_iter", test_map_iter},
        {"value_text", test_value_text},
        {"encode_header", test_encode_header},
        {"encode_properties", test_encode_properties},
        {"encode_map", test_encode_map},
        {"encode_body", test_encode_body},
        {"encode_limits", test_encode_limits},
        {"merge", test_merge},
    };

    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("amqp_codec", NULL, NULL);
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    return tn_test_run();
}
