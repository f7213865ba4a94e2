#include "protocols/stomp/codec.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A string literal as pointer and length, NULs inside included. */
#define S(lit) (const uint8_t *)(lit), (sizeof(lit) - 1)

#define SERVER TN_STOMP_ROLE_SERVER
#define CLIENT TN_STOMP_ROLE_CLIENT

static const tn_stomp_limits small = {
    .max_line = 32, .max_headers = 4, .max_header_bytes = 128, .max_body = 16};

static bool
str_eq(const char *p, size_t n, const char *want)
{
    size_t wn = strlen(want);
    return p != NULL && n == wn && memcmp(p, want, n) == 0;
}

static bool
body_eq(const tn_stomp_frame *f, const void *want, size_t n)
{
    return f->body != NULL && f->body_len == n && (n == 0 || memcmp(f->body, want, n) == 0);
}

/* --- A transcript of everything a decoder returns for an input cut into pieces --- */

static void
put(tn_buf *out, const void *p, size_t n)
{
    CU_ASSERT_EQUAL_FATAL(tn_buf_append(out, p, n), 0);
}

static void
putf(tn_buf *out, const char *fmt, size_t v)
{
    char tmp[64];
    int n = snprintf(tmp, sizeof tmp, fmt, v);
    put(out, tmp, (size_t)n);
}

/* Frames are written with lengths so that no content can fake a boundary. */
static void
describe(tn_buf *out, const tn_stomp_frame *f)
{
    const char *name = tn_stomp_command_name(f->command);
    put(out, name, strlen(name));
    putf(out, " %zu\n", f->nheaders);
    for (uint32_t i = 0; i < f->nheaders; i++) {
        const tn_stomp_hdr *h = &f->headers[i];
        CU_ASSERT_EQUAL(strlen(h->name), h->nlen);
        CU_ASSERT_EQUAL(strlen(h->value), h->vlen);
        putf(out, "%zu:", h->nlen);
        put(out, h->name, h->nlen);
        putf(out, "=%zu:", h->vlen);
        put(out, h->value, h->vlen);
        put(out, "\n", 1);
    }
    putf(out, f->has_content_length ? "body %zu (cl):" : "body %zu:", f->body_len);
    put(out, f->body, f->body_len);
    put(out, "\n", 1);
}

/*
 * Decodes in[0..n), cut before each offset in cuts[] (increasing), each piece in its own
 * allocation that is freed once the decoder is done with it, so ASan catches a frame that still
 * points into old input. Appends the transcript to out and returns the last result.
 */
static int
transcript(tn_stomp_role role, uint8_t version, const tn_stomp_limits *lim, const uint8_t *in,
           size_t n, const size_t *cuts, size_t ncuts, tn_buf *out)
{
    tn_stomp_decoder d;
    tn_stomp_frame f;
    int rc = TN_EAGAIN;
    size_t start = 0;

    tn_stomp_decoder_init(&d, role, lim);
    CU_ASSERT_EQUAL(tn_stomp_decoder_set_version(&d, version), 0);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        size_t len = end - start;
        uint8_t *piece = malloc(len ? len : 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(piece);
        if (len)
            memcpy(piece, in + start, len);
        size_t off = 0;
        while (off < len) {
            size_t used = 0;
            rc = tn_stomp_decode(&d, piece + off, len - off, &used, &f);
            if (rc == 0) {
                CU_ASSERT_TRUE(used > 0 && used <= len - off);
                describe(out, &f);
                off += used;
            } else if (rc == TN_EAGAIN) {
                CU_ASSERT_EQUAL(used, len - off);
                off = len;
            } else {
                break;
            }
        }
        free(piece);
        start = end;
        if (rc != 0 && rc != TN_EAGAIN)
            break;
    }
    if (rc == 0)
        rc = TN_EAGAIN; /* every frame was taken; the stream simply ended */
    putf(out, "rc %zu ", (size_t)-rc);
    if (rc != TN_EAGAIN) {
        CU_ASSERT_PTR_NOT_NULL(d.error);
        put(out, d.error, strlen(d.error));
        /* Errors stick. */
        size_t used;
        CU_ASSERT_EQUAL(tn_stomp_decode(&d, in, n, &used, &f), rc);
    }
    putf(out, " hb %zu", (size_t)d.heartbeats);
    /* Memory stayed inside the limits. */
    CU_ASSERT_TRUE(d.line.cap <= (size_t)d.lim.max_line + 1);
    CU_ASSERT_TRUE(d.head.cap <= d.lim.max_header_bytes);
    CU_ASSERT_TRUE(d.body.cap <= d.lim.max_body);
    CU_ASSERT_TRUE(d.hdrs_cap <= d.lim.max_headers);
    tn_stomp_decoder_fini(&d);
    return rc;
}

static int
transcript1(tn_stomp_role role, uint8_t version, const tn_stomp_limits *lim, const uint8_t *in,
            size_t n, tn_buf *out)
{
    return transcript(role, version, lim, in, n, NULL, 0, out);
}

static bool
same_buf(const tn_buf *a, const tn_buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* The input gives the same transcript in one piece, cut at every offset, cut at every pair of
 * offsets and fed one byte at a time. Returns the result of the one-piece run. */
static int
check_splits(tn_stomp_role role, uint8_t version, const tn_stomp_limits *lim, const uint8_t *in,
             size_t n)
{
    tn_buf whole, t;
    size_t *cuts = malloc((n + 1) * sizeof *cuts);

    tn_buf_init(&whole, 1u << 20);
    tn_buf_init(&t, 1u << 20);
    int rc = transcript1(role, version, lim, in, n, &whole);
    for (size_t i = 1; i < n; i++) {
        t.len = 0;
        CU_ASSERT_EQUAL(transcript(role, version, lim, in, n, &i, 1, &t), rc);
        CU_ASSERT_TRUE(same_buf(&whole, &t));
        for (size_t j = i + 1; j < n; j++) {
            size_t two[2] = {i, j};
            t.len = 0;
            transcript(role, version, lim, in, n, two, 2, &t);
            CU_ASSERT_TRUE(same_buf(&whole, &t));
        }
    }
    for (size_t i = 0; i + 1 < n; i++)
        cuts[i] = i + 1;
    t.len = 0;
    transcript(role, version, lim, in, n, cuts, n ? n - 1 : 0, &t);
    CU_ASSERT_TRUE(same_buf(&whole, &t));
    free(cuts);
    tn_buf_fini(&whole);
    tn_buf_fini(&t);
    return rc;
}

/* --- One-frame helpers --- */

/* Decodes exactly one frame that fills in[0..n). */
static void
decode_one(tn_stomp_decoder *d, const uint8_t *in, size_t n, tn_stomp_frame *f)
{
    size_t used = 0;
    int rc = tn_stomp_decode(d, in, n, &used, f);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(used, n);
}

/* Expects the input to fail with rc and reason why (also when fed a byte at a time). */
static void
expect_error(tn_stomp_role role, uint8_t version, const tn_stomp_limits *lim, const uint8_t *in,
             size_t n, int rc, const char *why)
{
    tn_stomp_decoder d;
    tn_stomp_frame f;
    size_t used;

    tn_stomp_decoder_init(&d, role, lim);
    tn_stomp_decoder_set_version(&d, version);
    int got = tn_stomp_decode(&d, in, n, &used, &f);
    CU_ASSERT_EQUAL(got, rc);
    CU_ASSERT_TRUE(d.error != NULL && strcmp(d.error, why) == 0);
    if (got != rc || d.error == NULL || strcmp(d.error, why) != 0)
        fprintf(stderr, "\n  got %d (%s), want %d (%s) for %.*s\n", got, d.error ? d.error : "-",
                rc, why, (int)n, (const char *)in);
    tn_stomp_decoder_fini(&d);

    tn_stomp_decoder_init(&d, role, lim);
    tn_stomp_decoder_set_version(&d, version);
    got = TN_EAGAIN;
    for (size_t i = 0; i < n && got == TN_EAGAIN; i++)
        got = tn_stomp_decode(&d, in + i, 1, &used, &f);
    CU_ASSERT_EQUAL(got, rc);
    CU_ASSERT_TRUE(d.error != NULL && strcmp(d.error, why) == 0);
    tn_stomp_decoder_fini(&d);
}

/* --- Commands --- */

static void
test_client_commands(void)
{
    for (tn_stomp_command c = TN_STOMP_CONNECT; c <= TN_STOMP_DISCONNECT; c++) {
        char in[64];
        int n = snprintf(in, sizeof in, "%s\nreceipt:r-%d\n\n", tn_stomp_command_name(c), (int)c);
        in[n++] = '\0';
        tn_stomp_decoder d;
        tn_stomp_frame f;
        char want[16];
        snprintf(want, sizeof want, "r-%d", (int)c);

        tn_stomp_decoder_init(&d, SERVER, NULL);
        decode_one(&d, (const uint8_t *)in, (size_t)n, &f);
        CU_ASSERT_EQUAL(f.command, c);
        CU_ASSERT_EQUAL(f.nheaders, 1);
        CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "receipt"), want);
        CU_ASSERT_EQUAL(f.body_len, 0);
        CU_ASSERT_FALSE(f.has_content_length);
        tn_stomp_decoder_fini(&d);

        /* A client does not accept client frames. */
        expect_error(CLIENT, TN_STOMP_V12, NULL, (const uint8_t *)in, (size_t)n, TN_EPROTO,
                     "unknown command");
    }
}

static void
test_server_commands(void)
{
    static const char *const names[] = {"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"};

    for (size_t i = 0; i < 4; i++) {
        char in[64];
        int n = snprintf(in, sizeof in, "%s\n\nbody", names[i]);
        in[n++] = '\0';
        tn_stomp_decoder d;
        tn_stomp_frame f;

        tn_stomp_decoder_init(&d, CLIENT, NULL);
        decode_one(&d, (const uint8_t *)in, (size_t)n, &f);
        CU_ASSERT_EQUAL(f.command, (tn_stomp_command)(TN_STOMP_CONNECTED + i));
        CU_ASSERT_TRUE(body_eq(&f, "body", 4));
        tn_stomp_decoder_fini(&d);
        /* A server does not accept them. */
        expect_error(SERVER, TN_STOMP_V12, NULL, (const uint8_t *)in, (size_t)n, TN_EPROTO,
                     "unknown command");
    }
    CU_ASSERT_STRING_EQUAL(tn_stomp_command_name(TN_STOMP_UNSUBSCRIBE), "UNSUBSCRIBE");
    CU_ASSERT_PTR_NULL(tn_stomp_command_name(0));
    CU_ASSERT_PTR_NULL(tn_stomp_command_name(TN_STOMP_ERROR + 1));
}

static void
test_unknown_command(void)
{
    expect_error(SERVER, TN_STOMP_V12, NULL, S("send\n\n\0"), TN_EPROTO, "unknown command");
    expect_error(SERVER, TN_STOMP_V12, NULL, S("SEND \n\n\0"), TN_EPROTO, "unknown command");
    expect_error(SERVER, TN_STOMP_V12, NULL, S(" SEND\n\n\0"), TN_EPROTO, "unknown command");
    expect_error(SERVER, TN_STOMP_V12, NULL, S("SENDX\n\n\0"), TN_EPROTO, "unknown command");
    expect_error(SERVER, TN_STOMP_V12, NULL, S("\0\n"), TN_EPROTO, "unknown command");
    /* An HTTP request fails as soon as its line is longer than any command, before its LF. */
    expect_error(SERVER, TN_STOMP_V10, NULL, S("GET / HTTP/1.1"), TN_EPROTO, "unknown command");
    expect_error(SERVER, TN_STOMP_V10, NULL, S("UNSUBSCRIBEXY"), TN_EPROTO, "unknown command");
    /* The longest command, with CRLF, is fine. */
    tn_buf t;
    tn_buf_init(&t, 4096);
    CU_ASSERT_EQUAL(transcript1(SERVER, TN_STOMP_V12, NULL, S("UNSUBSCRIBE\r\nid:1\r\n\r\n\0"), &t),
                    TN_EAGAIN);
    tn_buf_fini(&t);
}

/* --- Framing --- */

static void
test_multiple_frames_one_chunk(void)
{
    static const uint8_t in[] = "SEND\ndestination:/q/a\n\nfirst\0"
                                "SEND\ndestination:/q/b\ncontent-length:6\n\nsec\0nd\0"
                                "DISCONNECT\nreceipt:77\n\n\0";
    size_t n = sizeof in - 1, off = 0, used;
    tn_stomp_decoder d;
    tn_stomp_frame f;

    tn_stomp_decoder_init(&d, SERVER, NULL);
    CU_ASSERT_EQUAL_FATAL(tn_stomp_decode(&d, in, n, &used, &f), 0);
    CU_ASSERT_EQUAL(f.command, TN_STOMP_SEND);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "destination"), "/q/a");
    CU_ASSERT_TRUE(body_eq(&f, "first", 5));
    /* The body arrived whole: no copy, it points into the input. */
    CU_ASSERT_PTR_EQUAL(f.body, in + 23);
    CU_ASSERT_EQUAL(used, 29);
    off += used;

    CU_ASSERT_EQUAL_FATAL(tn_stomp_decode(&d, in + off, n - off, &used, &f), 0);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "destination"), "/q/b");
    CU_ASSERT_TRUE(f.has_content_length);
    CU_ASSERT_TRUE(body_eq(&f, "sec\0nd", 6));
    CU_ASSERT_TRUE(f.body >= in && f.body < in + n);
    off += used;

    CU_ASSERT_EQUAL_FATAL(tn_stomp_decode(&d, in + off, n - off, &used, &f), 0);
    CU_ASSERT_EQUAL(f.command, TN_STOMP_DISCONNECT);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "receipt"), "77");
    off += used;
    CU_ASSERT_EQUAL(off, n);
    CU_ASSERT_EQUAL(d.heartbeats, 0);
    CU_ASSERT_EQUAL(tn_stomp_decode(&d, in + off, 0, &used, &f), TN_EAGAIN);
    CU_ASSERT_EQUAL(used, 0);
    tn_stomp_decoder_fini(&d);
}

/* A stream that uses every feature, checked cut at every byte and every pair of bytes. */
static void
test_split_everywhere(void)
{
    static const uint8_t v12[] = "\n\r\n"
                                 "SEND\r\ndestination:/q/a\\cb\r\nx\\\\y:1\\n2\\r\r\n"
                                 "content-length:5\r\n\r\na\0b\0c\0\n"
                                 "SUBSCRIBE\nid:0\ndestination:/t\nid:1\n\n\0"
                                 "\n\n"
                                 "SEND\ndestination:/q\n\nplain body\0"
                                 "ACK\nid:9\n\n\0\r\n";
    tn_buf t;

    tn_buf_init(&t, 1u << 16);
    CU_ASSERT_EQUAL(check_splits(SERVER, TN_STOMP_V12, NULL, v12, sizeof v12 - 1), TN_EAGAIN);
    CU_ASSERT_EQUAL(transcript1(SERVER, TN_STOMP_V12, NULL, v12, sizeof v12 - 1, &t), TN_EAGAIN);
    static const char want[] = "SEND 3\n"
                               "11:destination=6:/q/a:b\n"
                               "3:x\\y=4:1\n2\r\n"
                               "14:content-length=1:5\n"
                               "body 5 (cl):a\0b\0c\n"
                               "SUBSCRIBE 3\n"
                               "2:id=1:0\n"
                               "11:destination=2:/t\n"
                               "2:id=1:1\n"
                               "body 0:\n"
                               "SEND 1\n"
                               "11:destination=2:/q\n"
                               "body 10:plain body\n"
                               "ACK 1\n"
                               "2:id=1:9\n"
                               "body 0:\n"
                               "rc 1  hb 6";
    CU_ASSERT_EQUAL(t.len, sizeof want - 1);
    CU_ASSERT_EQUAL(memcmp(t.data, want, sizeof want - 1), 0);
    tn_buf_fini(&t);

    /* Errors come at the same byte however the input is cut. */
    static const uint8_t bad[] = "SEND\ndestination:/q\n\nok\0SEND\nx:\\t\n\n\0";
    CU_ASSERT_EQUAL(check_splits(SERVER, TN_STOMP_V12, NULL, bad, sizeof bad - 1), TN_EPROTO);
    static const uint8_t big[] =
        "SEND\na:0123456789\nb:0123456789012345678901234567890123456789\n\n\0";
    CU_ASSERT_EQUAL(check_splits(SERVER, TN_STOMP_V12, &small, big, sizeof big - 1), TN_ETOOBIG);
    static const uint8_t body[] = "SEND\n\n0123456789\0SEND\n\n0123456789012345678\0";
    CU_ASSERT_EQUAL(check_splits(SERVER, TN_STOMP_V12, &small, body, sizeof body - 1), TN_ETOOBIG);
}

static void
test_split_body_is_copied(void)
{
    static const uint8_t in[] = "SEND\ncontent-length:4\n\nab\0d\0";
    size_t n = sizeof in - 1, used;
    tn_stomp_decoder d;
    tn_stomp_frame f;

    /* Cut inside the body, the first part is kept by the decoder; cut before, the body is read
     * from the second piece. */
    for (size_t cut = 1; cut < n; cut++) {
        uint8_t *a = malloc(cut), *b = malloc(n - cut);
        memcpy(a, in, cut);
        memcpy(b, in + cut, n - cut);
        tn_stomp_decoder_init(&d, SERVER, NULL);
        CU_ASSERT_EQUAL(tn_stomp_decode(&d, a, cut, &used, &f), TN_EAGAIN);
        CU_ASSERT_EQUAL(used, cut);
        free(a);
        CU_ASSERT_EQUAL_FATAL(tn_stomp_decode(&d, b, n - cut, &used, &f), 0);
        CU_ASSERT_EQUAL(used, n - cut);
        CU_ASSERT_TRUE(body_eq(&f, "ab\0d", 4));
        /* Only when the body arrived whole in the second piece does it point there. */
        bool in_b = f.body >= b && f.body < b + (n - cut);
        CU_ASSERT_EQUAL(in_b, cut <= 23);
        free(b);
        tn_stomp_decoder_fini(&d);
    }
}

static void
test_heartbeats(void)
{
    tn_stomp_decoder d;
    tn_stomp_frame f;
    size_t used;

    tn_stomp_decoder_init(&d, SERVER, NULL);
    CU_ASSERT_EQUAL(tn_stomp_decode(&d, S("\n\n\r\n\r"), &used, &f), TN_EAGAIN);
    CU_ASSERT_EQUAL(used, 5);
    CU_ASSERT_EQUAL(d.heartbeats, 3);
    CU_ASSERT_EQUAL(tn_stomp_decode(&d, S("\nBEGIN\ntransaction:t\n\n\0\n"), &used, &f), 0);
    CU_ASSERT_EQUAL(d.heartbeats, 4);
    CU_ASSERT_EQUAL(f.command, TN_STOMP_BEGIN);
    CU_ASSERT_EQUAL(used, 23); /* the EOL after the NUL is left for the next call */
    CU_ASSERT_EQUAL(tn_stomp_decode(&d, S("\n"), &used, &f), TN_EAGAIN);
    CU_ASSERT_EQUAL(d.heartbeats, 5);
    tn_stomp_decoder_fini(&d);

    /* A CR must be followed by its LF. */
    expect_error(SERVER, TN_STOMP_V12, NULL, S("\r\r\n"), TN_EPROTO, "CR without LF");
    expect_error(SERVER, TN_STOMP_V12, NULL, S("\rSEND\n\n\0"), TN_EPROTO, "CR without LF");
}

static void
test_crlf(void)
{
    static const uint8_t in[] = "SEND\r\ndestination:/q\r\nempty:\r\n\r\nhi\0";
    const uint8_t versions[] = {TN_STOMP_V10, TN_STOMP_V11, TN_STOMP_V12};

    for (size_t i = 0; i < 3; i++) {
        tn_stomp_decoder d;
        tn_stomp_frame f;
        size_t vlen;

        tn_stomp_decoder_init(&d, SERVER, NULL);
        tn_stomp_decoder_set_version(&d, versions[i]);
        decode_one(&d, in, sizeof in - 1, &f);
        CU_ASSERT_EQUAL(f.command, TN_STOMP_SEND);
        CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "destination"), "/q");
        CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "empty"), "");
        CU_ASSERT_TRUE(body_eq(&f, "hi", 2));
        /* Only one CR belongs to the line ending. */
        decode_one(&d, S("SEND\nx:a\r\r\n\n\0"), &f);
        const char *v = tn_stomp_header_n(&f, "x", 1, &vlen);
        CU_ASSERT_TRUE(str_eq(v, vlen, "a\r"));
        tn_stomp_decoder_fini(&d);
    }
}

/* --- Bodies --- */

static void
test_content_length_body(void)
{
    tn_stomp_decoder d;
    tn_stomp_frame f;

    tn_stomp_decoder_init(&d, SERVER, NULL);
    decode_one(&d, S("SEND\ncontent-length:7\n\n\0a\0\0b\0\n\0"), &f);
    CU_ASSERT_TRUE(f.has_content_length);
    CU_ASSERT_TRUE(body_eq(&f, "\0a\0\0b\0\n", 7));
    decode_one(&d, S("SEND\ncontent-length:0\n\n\0"), &f);
    CU_ASSERT_TRUE(f.has_content_length);
    CU_ASSERT_EQUAL(f.body_len, 0);
    CU_ASSERT_PTR_NOT_NULL(f.body);
    decode_one(&d, S("SEND\ncontent-length:0003\n\nabc\0"), &f);
    CU_ASSERT_TRUE(body_eq(&f, "abc", 3));
    /* Without content-length the body ends at the first NUL. */
    decode_one(&d, S("SEND\n\n\0"), &f);
    CU_ASSERT_FALSE(f.has_content_length);
    CU_ASSERT_EQUAL(f.body_len, 0);
    tn_stomp_decoder_fini(&d);
}

static void
test_missing_nul(void)
{
    expect_error(SERVER, TN_STOMP_V12, NULL, S("SEND\ncontent-length:2\n\nabc\0"), TN_EPROTO,
                 "missing NUL after body");
    expect_error(SERVER, TN_STOMP_V12, NULL, S("SEND\ncontent-length:0\n\n\n"), TN_EPROTO,
                 "missing NUL after body");
    expect_error(SERVER, TN_STOMP_V10, NULL, S("SEND\ncontent-length:3\n\na\0cd"), TN_EPROTO,
                 "missing NUL after body");
}

static void
test_repeated_header(void)
{
    tn_stomp_decoder d;
    tn_stomp_frame f;
    size_t vlen = 0;

    tn_stomp_decoder_init(&d, SERVER, NULL);
    decode_one(&d, S("SEND\nfoo:first\nbar:x\nfoo:second\n\n\0"), &f);
    CU_ASSERT_EQUAL(f.nheaders, 3);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "foo"), "first");
    CU_ASSERT_STRING_EQUAL(f.headers[2].value, "second");
    CU_ASSERT_PTR_NULL(tn_stomp_header(&f, "fo"));
    CU_ASSERT_PTR_NULL(tn_stomp_header(&f, "baz"));
    CU_ASSERT_STRING_EQUAL(tn_stomp_header_n(&f, "barbaz", 3, &vlen), "x");
    CU_ASSERT_EQUAL(vlen, 1);
    /* The first content-length counts; later ones are not even parsed. */
    decode_one(&d, S("SEND\ncontent-length:1\ncontent-length:junk\n\n\0\0"), &f);
    CU_ASSERT_TRUE(body_eq(&f, "\0", 1));
    decode_one(&d, S("SEND\ncontent-length:3\ncontent-length:1\n\nabc\0"), &f);
    CU_ASSERT_TRUE(body_eq(&f, "abc", 3));
    tn_stomp_decoder_fini(&d);
}

static void
test_bad_content_length(void)
{
    static const char *const bad[] = {
        "", "-1", "+1", " 1", "1 ", "1a", "0x10", "1.0", "Ⅻ", "\\c1", "99999999999999999999999"};

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char in[128];
        int n = snprintf(in, sizeof in, "SEND\ncontent-length:%s\n\n", bad[i]);
        in[n++] = '\0';
        expect_error(SERVER, TN_STOMP_V10, NULL, (const uint8_t *)in, (size_t)n, TN_EPROTO,
                     "bad content-length");
    }
    /* The largest value a uint64 holds is still only too large. */
    expect_error(SERVER, TN_STOMP_V12, NULL, S("SEND\ncontent-length:18446744073709551615\n"),
                 TN_ETOOBIG, "frame too large");
}

/* --- Header syntax and escaping --- */

static void
test_header_syntax(void)
{
    expect_error(SERVER, TN_STOMP_V12, NULL, S("SEND\nfoo\n\n\0"), TN_EPROTO, "header without ':'");
    expect_error(SERVER, TN_STOMP_V10, NULL, S("SEND\r\nfoo\r\n\r\n\0"), TN_EPROTO,
                 "header without ':'");
    expect_error(SERVER, TN_STOMP_V12, NULL, S("SEND\n:value\n\n\0"), TN_EPROTO,
                 "empty header name");
    expect_error(SERVER, TN_STOMP_V12, NULL, S("SEND\nfo\0o:v\n\n\0"), TN_EPROTO,
                 "NUL in a header");
    /* No blank line: the NUL lands in a header line. */
    expect_error(SERVER, TN_STOMP_V12, NULL, S("DISCONNECT\n\0\n"), TN_EPROTO, "NUL in a header");

    /* Values may hold ':' (split at the first one) and spaces, which are kept. */
    tn_stomp_decoder d;
    tn_stomp_frame f;
    tn_stomp_decoder_init(&d, SERVER, NULL);
    decode_one(&d, S("SEND\ndestination:/q:a:b\n key : v \n\n\0"), &f);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "destination"), "/q:a:b");
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, " key "), " v ");
    tn_stomp_decoder_fini(&d);
}

static void
test_escapes(void)
{
    static const uint8_t in[] = "SEND\na\\cb\\\\:x\\ny\\\\z\\c\n\n\0";
    tn_stomp_decoder d;
    tn_stomp_frame f;

    /* 1.1 and 1.2 unescape names and values. */
    for (uint8_t v = TN_STOMP_V11; v <= TN_STOMP_V12; v++) {
        tn_stomp_decoder_init(&d, SERVER, NULL);
        tn_stomp_decoder_set_version(&d, v);
        decode_one(&d, in, sizeof in - 1, &f);
        CU_ASSERT_TRUE(str_eq(f.headers[0].name, f.headers[0].nlen, "a:b\\"));
        CU_ASSERT_TRUE(str_eq(f.headers[0].value, f.headers[0].vlen, "x\ny\\z:"));
        tn_stomp_decoder_fini(&d);
    }
    /* \r is 1.2 only. */
    tn_stomp_decoder_init(&d, SERVER, NULL);
    tn_stomp_decoder_set_version(&d, TN_STOMP_V12);
    decode_one(&d, S("SEND\nx:a\\rb\\r\n\n\0"), &f);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "x"), "a\rb\r");
    tn_stomp_decoder_fini(&d);
    expect_error(SERVER, TN_STOMP_V11, NULL, S("SEND\nx:a\\rb\n\n\0"), TN_EPROTO,
                 "undefined escape sequence");
    /* Undefined escapes and a lone backslash are fatal [1.2 "Value Encoding"]. */
    expect_error(SERVER, TN_STOMP_V12, NULL, S("SEND\nx:\\t\n\n\0"), TN_EPROTO,
                 "undefined escape sequence");
    expect_error(SERVER, TN_STOMP_V12, NULL, S("SEND\nx\\:v\n\n\0"), TN_EPROTO,
                 "undefined escape sequence");
    expect_error(SERVER, TN_STOMP_V12, NULL, S("SEND\nx:v\\\n\n\0"), TN_EPROTO,
                 "undefined escape sequence");
    expect_error(SERVER, TN_STOMP_V11, NULL, S("SEND\nx:\\C\n\n\0"), TN_EPROTO,
                 "undefined escape sequence");

    /* 1.0: no escaping at all. */
    tn_stomp_decoder_init(&d, SERVER, NULL);
    decode_one(&d, in, sizeof in - 1, &f);
    CU_ASSERT_STRING_EQUAL(f.headers[0].name, "a\\cb\\\\");
    CU_ASSERT_STRING_EQUAL(f.headers[0].value, "x\\ny\\\\z\\c");
    decode_one(&d, S("SEND\nx:\\t\\\n\n\0"), &f);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "x"), "\\t\\");
    tn_stomp_decoder_fini(&d);

    /* CONNECT and STOMP are never escaped, whatever the version; the next frame is. */
    tn_stomp_decoder_init(&d, SERVER, NULL);
    tn_stomp_decoder_set_version(&d, TN_STOMP_V12);
    decode_one(&d, S("CONNECT\nlogin:a\\cb\npasscode:\\t\n\n\0"), &f);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "login"), "a\\cb");
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "passcode"), "\\t");
    decode_one(&d, S("STOMP\nlogin:a\\cb\n\n\0"), &f);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "login"), "a\\cb");
    decode_one(&d, S("SEND\nlogin:a\\cb\n\n\0"), &f);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "login"), "a:b");
    tn_stomp_decoder_fini(&d);
    /* Neither is CONNECTED, for a client. */
    tn_stomp_decoder_init(&d, CLIENT, NULL);
    tn_stomp_decoder_set_version(&d, TN_STOMP_V12);
    decode_one(&d, S("CONNECTED\nserver:tern\\c1\n\n\0"), &f);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "server"), "tern\\c1");
    decode_one(&d, S("MESSAGE\nserver:tern\\c1\n\n\0"), &f);
    CU_ASSERT_STRING_EQUAL(tn_stomp_header(&f, "server"), "tern:1");
    tn_stomp_decoder_fini(&d);
}

static void
test_set_version(void)
{
    tn_stomp_decoder d;

    tn_stomp_decoder_init(&d, SERVER, NULL);
    CU_ASSERT_EQUAL(d.version, TN_STOMP_V10);
    CU_ASSERT_EQUAL(tn_stomp_decoder_set_version(&d, 13), TN_EINVAL);
    CU_ASSERT_EQUAL(tn_stomp_decoder_set_version(&d, 0), TN_EINVAL);
    CU_ASSERT_EQUAL(d.version, TN_STOMP_V10);
    CU_ASSERT_EQUAL(tn_stomp_decoder_set_version(&d, TN_STOMP_V11), 0);
    CU_ASSERT_EQUAL(d.version, TN_STOMP_V11);
    tn_stomp_decoder_fini(&d);
}

/* --- Limits --- */

static void
test_limit_line(void)
{
    tn_buf t;
    tn_buf_init(&t, 4096);

    /* max_line 32: a 32-byte header line passes, with LF or CRLF; 33 bytes fail. */
    CU_ASSERT_EQUAL(transcript1(SERVER, TN_STOMP_V12, &small,
                                S("SEND\n0123456789:012345678901234567890\n\n\0"), &t),
                    TN_EAGAIN);
    CU_ASSERT_EQUAL(transcript1(SERVER, TN_STOMP_V12, &small,
                                S("SEND\n0123456789:012345678901234567890\r\n\n\0"), &t),
                    TN_EAGAIN);
    expect_error(SERVER, TN_STOMP_V12, &small, S("SEND\n0123456789:0123456789012345678901\n"),
                 TN_ETOOBIG, "line too long");
    expect_error(SERVER, TN_STOMP_V12, &small, S("SEND\n0123456789:0123456789012345678901\r\n"),
                 TN_ETOOBIG, "line too long");
    /* Refused before the LF arrives: 34 bytes cannot be 32 and a CR. */
    expect_error(SERVER, TN_STOMP_V12, &small, S("SEND\n0123456789:01234567890123456789012"),
                 TN_ETOOBIG, "line too long");
    /* A command longer than max_line, when max_line is shorter than the commands. */
    tn_stomp_limits tiny = small;
    tiny.max_line = 4;
    expect_error(SERVER, TN_STOMP_V12, &tiny, S("SUBSCRIBE\n"), TN_ETOOBIG, "line too long");
    CU_ASSERT_EQUAL(transcript1(SERVER, TN_STOMP_V12, &tiny, S("SEND\r\na:bb\n\n\0"), &t),
                    TN_EAGAIN);
    tn_buf_fini(&t);
}

static void
test_limit_headers(void)
{
    tn_buf t;
    tn_buf_init(&t, 4096);

    CU_ASSERT_EQUAL(
        transcript1(SERVER, TN_STOMP_V12, &small, S("SEND\na:1\nb:2\na:3\nd:4\n\n\0"), &t),
        TN_EAGAIN);
    expect_error(SERVER, TN_STOMP_V12, &small, S("SEND\na:1\nb:2\na:3\nd:4\ne:5\n\n\0"), TN_ETOOBIG,
                 "too many headers");
    tn_buf_fini(&t);
}

static void
test_limit_header_bytes(void)
{
    /* 128 bytes of head: "SEND\n" (5) + 3 lines of 32 + LF (99) + 22 + LF + the blank line;
     * one more byte in the last header and the blank line does not fit. */
    static const uint8_t over[] = "SEND\n"
                                  "a:012345678901234567890123456789\n"
                                  "b:012345678901234567890123456789\n"
                                  "c:012345678901234567890123456789\n"
                                  "d:012345678901234567890\n"
                                  "\n\0";
    static const uint8_t fits[] = "SEND\n"
                                  "a:012345678901234567890123456789\n"
                                  "b:012345678901234567890123456789\n"
                                  "c:012345678901234567890123456789\n"
                                  "d:01234567890123456789\n"
                                  "\n\0";
    tn_buf t;

    tn_buf_init(&t, 4096);
    CU_ASSERT_EQUAL(sizeof fits - 2, 128);
    CU_ASSERT_EQUAL(transcript1(SERVER, TN_STOMP_V12, &small, fits, sizeof fits - 1, &t),
                    TN_EAGAIN);
    expect_error(SERVER, TN_STOMP_V12, &small, over, sizeof over - 1, TN_ETOOBIG,
                 "frame header too large");
    /* CRLF line endings count too. */
    expect_error(SERVER, TN_STOMP_V12, &small,
                 S("SEND\r\n"
                   "a:012345678901234567890123456789\r\n"
                   "b:012345678901234567890123456789\r\n"
                   "c:012345678901234567890123456789\r\n"
                   "d:0123456789012345\r\n"
                   "\r\n\0"),
                 TN_ETOOBIG, "frame header too large");
    tn_buf_fini(&t);
}

static void
test_limit_body(void)
{
    tn_buf t;
    tn_buf_init(&t, 4096);

    /* max_body 16: 16 bytes pass with and without content-length. */
    CU_ASSERT_EQUAL(transcript1(SERVER, TN_STOMP_V12, &small, S("SEND\n\n0123456789abcdef\0"), &t),
                    TN_EAGAIN);
    CU_ASSERT_EQUAL(transcript1(SERVER, TN_STOMP_V12, &small,
                                S("SEND\ncontent-length:16\n\n0123456789abcde\0\0"), &t),
                    TN_EAGAIN);
    /* content-length over the maximum fails before any of the body arrives. */
    expect_error(SERVER, TN_STOMP_V12, &small, S("SEND\ncontent-length:17\n"), TN_ETOOBIG,
                 "frame too large");
    expect_error(SERVER, TN_STOMP_V12, NULL, S("SEND\ncontent-length:1048577\n"), TN_ETOOBIG,
                 "frame too large");
    /* Without content-length, at the 17th byte without a NUL. */
    expect_error(SERVER, TN_STOMP_V12, &small, S("SEND\n\n0123456789abcdefg"), TN_ETOOBIG,
                 "frame too large");
    tn_buf_fini(&t);
}

/* A large body that arrived in pieces is not kept after the next frame starts. */
static void
test_body_buffer_released(void)
{
    enum { N = 100000 };
    uint8_t *in = malloc(N + 16);
    tn_stomp_decoder d;
    tn_stomp_frame f;
    size_t used, n;

    memcpy(in, "SEND\n\n", 6);
    memset(in + 6, 'x', N);
    in[6 + N] = '\0';
    n = 7 + N;
    tn_stomp_decoder_init(&d, SERVER, NULL);
    CU_ASSERT_EQUAL(tn_stomp_decode(&d, in, 100, &used, &f), TN_EAGAIN);
    CU_ASSERT_EQUAL_FATAL(tn_stomp_decode(&d, in + 100, n - 100, &used, &f), 0);
    CU_ASSERT_EQUAL(f.body_len, N);
    CU_ASSERT_TRUE(d.body.cap >= N);
    decode_one(&d, S("SEND\n\nsmall\0"), &f);
    CU_ASSERT_EQUAL(d.body.cap, 0);
    tn_stomp_decoder_fini(&d);
    free(in);
}

/* --- Encoder --- */

static void
expect_bytes(const tn_buf *b, const uint8_t *want, size_t n)
{
    CU_ASSERT_EQUAL_FATAL(b->len, n);
    CU_ASSERT_EQUAL(memcmp(b->data, want, n), 0);
}

static void
test_encode_known_bytes(void)
{
    tn_stomp_encoder e;
    tn_buf b;

    tn_buf_init(&b, 4096);
    tn_stomp_encode_begin(&e, &b, TN_STOMP_V12, TN_STOMP_MESSAGE);
    tn_stomp_encode_header(&e, "destination", 11, "/q/a:b", 6);
    tn_stomp_encode_header(&e, "x\r\n", 3, "a\\b\r", 4);
    CU_ASSERT_EQUAL(tn_stomp_encode_end(&e, "hi\0", 3, true), 0);
    expect_bytes(&b,
                 S("MESSAGE\ndestination:/q/a\\cb\nx\\r\\n:a\\\\b\\r\ncontent-length:3\n\nhi\0\0"));

    b.len = 0;
    tn_stomp_encode_begin(&e, &b, TN_STOMP_V11, TN_STOMP_MESSAGE);
    tn_stomp_encode_header(&e, "a:b", 3, "x\ry\n\\", 5);
    CU_ASSERT_EQUAL(tn_stomp_encode_end(&e, "body", 4, false), 0);
    expect_bytes(&b, S("MESSAGE\na\\cb:x\ry\\n\\\\\n\nbody\0"));

    b.len = 0;
    tn_stomp_encode_begin(&e, &b, TN_STOMP_V10, TN_STOMP_RECEIPT);
    tn_stomp_encode_header(&e, "receipt-id", 10, "a:b\\c", 5);
    CU_ASSERT_EQUAL(tn_stomp_encode_end(&e, NULL, 0, false), 0);
    expect_bytes(&b, S("RECEIPT\nreceipt-id:a:b\\c\n\n\0"));

    /* CONNECTED is never escaped. */
    b.len = 0;
    tn_stomp_encode_begin(&e, &b, TN_STOMP_V12, TN_STOMP_CONNECTED);
    tn_stomp_encode_header(&e, "version", 7, "1.2", 3);
    tn_stomp_encode_header(&e, "server", 6, "tern/0.1 a:b\\", 13);
    CU_ASSERT_EQUAL(tn_stomp_encode_end(&e, NULL, 0, false), 0);
    expect_bytes(&b, S("CONNECTED\nversion:1.2\nserver:tern/0.1 a:b\\\n\n\0"));

    b.len = 0;
    CU_ASSERT_EQUAL(tn_stomp_encode_heartbeat(&b), 0);
    tn_stomp_encode_begin(&e, &b, TN_STOMP_V12, TN_STOMP_ERROR);
    tn_stomp_encode_header(&e, "message", 7, "frame too large", 15);
    CU_ASSERT_EQUAL(tn_stomp_encode_end(&e, "x", 1, true), 0);
    expect_bytes(&b, S("\nERROR\nmessage:frame too large\ncontent-length:1\n\nx\0"));
    tn_buf_fini(&b);
}

static void
test_encode_errors(void)
{
    tn_stomp_encoder e;
    tn_buf b;

    tn_buf_init(&b, 64);
    CU_ASSERT_EQUAL(tn_buf_append(&b, "keep", 4), 0);

    CU_ASSERT_EQUAL(tn_stomp_encode_begin(&e, &b, 13, TN_STOMP_MESSAGE), TN_EINVAL);
    CU_ASSERT_EQUAL(tn_stomp_encode_begin(&e, &b, TN_STOMP_V12, 0), TN_EINVAL);
    CU_ASSERT_EQUAL(tn_stomp_encode_begin(&e, &b, TN_STOMP_V12, TN_STOMP_ERROR + 1), TN_EINVAL);
    expect_bytes(&b, S("keep"));

    struct {
        uint8_t version;
        tn_stomp_command cmd;
        const char *name, *value;
        size_t nlen, vlen;
    } bad[] = {
        {TN_STOMP_V12, TN_STOMP_MESSAGE, "", "v", 0, 1},      /* empty name */
        {TN_STOMP_V12, TN_STOMP_MESSAGE, "a\0b", "v", 3, 1},  /* NUL in a name */
        {TN_STOMP_V12, TN_STOMP_MESSAGE, "a", "v\0", 1, 2},   /* NUL in a value */
        {TN_STOMP_V10, TN_STOMP_MESSAGE, "a", "x\ny", 1, 3},  /* LF without escaping */
        {TN_STOMP_V10, TN_STOMP_MESSAGE, "a:b", "v", 3, 1},   /* ':' in a name, 1.0 */
        {TN_STOMP_V12, TN_STOMP_CONNECTED, "a:b", "v", 3, 1}, /* CONNECTED never escapes */
        {TN_STOMP_V12, TN_STOMP_CONNECTED, "a", "\n", 1, 1},  /* same */
        {TN_STOMP_V11, TN_STOMP_MESSAGE, "a", "v\r", 1, 2},   /* would read as CRLF */
        {TN_STOMP_V10, TN_STOMP_RECEIPT, "a", "\r", 1, 1},    /* same */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_EQUAL(tn_stomp_encode_begin(&e, &b, bad[i].version, bad[i].cmd), 0);
        CU_ASSERT_EQUAL(tn_stomp_encode_header(&e, "ok", 2, "fine", 4), 0);
        CU_ASSERT_EQUAL(
            tn_stomp_encode_header(&e, bad[i].name, bad[i].nlen, bad[i].value, bad[i].vlen),
            TN_EINVAL);
        /* Sticky, and the buffer is as it was. */
        CU_ASSERT_EQUAL(tn_stomp_encode_header(&e, "ok", 2, "fine", 4), TN_EINVAL);
        CU_ASSERT_EQUAL(tn_stomp_encode_end(&e, "x", 1, true), TN_EINVAL);
        expect_bytes(&b, S("keep"));
    }
    /* A CR inside a 1.1 value or a name is fine: only one that ends the line is ambiguous. */
    tn_stomp_encode_begin(&e, &b, TN_STOMP_V11, TN_STOMP_MESSAGE);
    tn_stomp_encode_header(&e, "a\r", 2, "\rb", 2);
    CU_ASSERT_EQUAL(tn_stomp_encode_end(&e, NULL, 0, false), 0);
    b.len = 4;

    /* A NUL in the body needs content-length. */
    tn_stomp_encode_begin(&e, &b, TN_STOMP_V12, TN_STOMP_MESSAGE);
    CU_ASSERT_EQUAL(tn_stomp_encode_end(&e, "a\0b", 3, false), TN_EINVAL);
    expect_bytes(&b, S("keep"));

    /* Past the buffer's maximum: TN_ETOOBIG at any step, the buffer unchanged. */
    char big[80];
    memset(big, 'v', sizeof big);
    tn_stomp_encode_begin(&e, &b, TN_STOMP_V12, TN_STOMP_MESSAGE);
    CU_ASSERT_EQUAL(tn_stomp_encode_header(&e, "a", 1, big, sizeof big), TN_ETOOBIG);
    CU_ASSERT_EQUAL(tn_stomp_encode_end(&e, NULL, 0, false), TN_ETOOBIG);
    expect_bytes(&b, S("keep"));
    tn_stomp_encode_begin(&e, &b, TN_STOMP_V12, TN_STOMP_MESSAGE);
    CU_ASSERT_EQUAL(tn_stomp_encode_end(&e, big, sizeof big, false), TN_ETOOBIG);
    expect_bytes(&b, S("keep"));
    /* Exactly full is fine: "keep" + "MESSAGE\n" + "\n" + 50 bytes + NUL = 64. */
    tn_stomp_encode_begin(&e, &b, TN_STOMP_V12, TN_STOMP_MESSAGE);
    CU_ASSERT_EQUAL(tn_stomp_encode_end(&e, big, 50, false), 0);
    CU_ASSERT_EQUAL(b.len, 64);
    tn_buf_fini(&b);
}

/* Encodes headers and a body, decodes the result, and expects the same frame. */
static void
roundtrip(uint8_t version, tn_stomp_command cmd, const tn_stomp_hdr *h, size_t n, const void *body,
          size_t len, bool cl)
{
    tn_stomp_role role = cmd >= TN_STOMP_CONNECTED ? CLIENT : SERVER;
    tn_stomp_decoder d;
    tn_stomp_frame f;
    tn_buf b;

    tn_buf_init(&b, 4096);
    CU_ASSERT_EQUAL_FATAL(tn_stomp_encode_frame(&b, version, cmd, h, n, body, len, cl), 0);
    tn_stomp_decoder_init(&d, role, NULL);
    tn_stomp_decoder_set_version(&d, version);
    decode_one(&d, b.data, b.len, &f);
    CU_ASSERT_EQUAL(f.command, cmd);
    CU_ASSERT_EQUAL_FATAL(f.nheaders, n + (cl ? 1 : 0));
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT_TRUE(str_eq(f.headers[i].name, f.headers[i].nlen, h[i].name));
        CU_ASSERT_TRUE(str_eq(f.headers[i].value, f.headers[i].vlen, h[i].value));
    }
    CU_ASSERT_EQUAL(f.has_content_length, cl);
    CU_ASSERT_TRUE(body_eq(&f, body, len));
    /* And once more, cut everywhere. */
    CU_ASSERT_EQUAL(check_splits(role, version, NULL, b.data, b.len), TN_EAGAIN);
    tn_stomp_decoder_fini(&d);
    tn_buf_fini(&b);
}

#define H(n, v)                                                                                    \
    {                                                                                              \
        n, v, sizeof(n) - 1, sizeof(v) - 1                                                         \
    }

static void
test_encode_roundtrip(void)
{
    static const tn_stomp_hdr plain[] = {H("destination", "/queue/a"), H("message-id", "m-1"),
                                         H("subscription", "0"), H("empty", "")};
    static const tn_stomp_hdr special11[] = {H("dest:ination", "/q/a:b"), H("a\\b", "x\ny\\z"),
                                             H("cr\r", "in\rside"), H("dup", "1"), H("dup", "2")};
    static const tn_stomp_hdr special12[] = {H("dest:ination", "/q/a:b"),
                                             H("a\\b\r\n", "x\ny\\z\r"), H("\\c", ":\\n")};
    static const tn_stomp_hdr raw10[] = {H("destination", "/q/a:b\\c\\n"), H("a\r", "\r\\")};
    const uint8_t versions[] = {TN_STOMP_V10, TN_STOMP_V11, TN_STOMP_V12};

    for (size_t i = 0; i < 3; i++) {
        uint8_t v = versions[i];
        roundtrip(v, TN_STOMP_MESSAGE, plain, 4, "hello", 5, false);
        roundtrip(v, TN_STOMP_MESSAGE, plain, 4, "bin\0ary", 7, true);
        roundtrip(v, TN_STOMP_SEND, plain, 4, "", 0, true);
        roundtrip(v, TN_STOMP_RECEIPT, plain, 1, NULL, 0, false);
        roundtrip(v, TN_STOMP_ERROR, raw10, 2, "oops", 4, true);
        roundtrip(v, TN_STOMP_CONNECTED, raw10, 2, NULL, 0, false);
        roundtrip(v, TN_STOMP_CONNECT, raw10, 2, NULL, 0, false);
    }
    roundtrip(TN_STOMP_V11, TN_STOMP_MESSAGE, special11, 5, "b", 1, false);
    roundtrip(TN_STOMP_V11, TN_STOMP_SEND, special11, 5, "b", 1, true);
    roundtrip(TN_STOMP_V12, TN_STOMP_MESSAGE, special11, 5, "b", 1, false);
    roundtrip(TN_STOMP_V12, TN_STOMP_MESSAGE, special12, 3, "b\0", 2, true);
    roundtrip(TN_STOMP_V12, TN_STOMP_SUBSCRIBE, special12, 3, NULL, 0, false);
}

int
main(void)
{
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"client_commands", test_client_commands},
        {"server_commands", test_server_commands},
        {"unknown_command", test_unknown_command},
        {"multiple_frames_one_chunk", test_multiple_frames_one_chunk},
        {"split_everywhere", test_split_everywhere},
        {"split_body_is_copied", test_split_body_is_copied},
        {"heartbeats", test_heartbeats},
        {"crlf", test_crlf},
        {"content_length_body", test_content_length_body},
        {"missing_nul", test_missing_nul},
        {"repeated_header", test_repeated_header},
        {"bad_content_length", test_bad_content_length},
        {"header_syntax", test_header_syntax},
        {"escapes", test_escapes},
        {"set_version", test_set_version},
        {"limit_line", test_limit_line},
        {"limit_headers", test_limit_headers},
        {"limit_header_bytes", test_limit_header_bytes},
        {"limit_body", test_limit_body},
        {"body_buffer_released", test_body_buffer_released},
        {"encode_known_bytes", test_encode_known_bytes},
        {"encode_errors", test_encode_errors},
        {"encode_roundtrip", test_encode_roundtrip},
    };

    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("stomp_codec", NULL, NULL);
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    return tn_test_run();
}
