/*
 * Fuzz target for the STOMP codec. The input is a byte stream as a peer would send it. It is
 * decoded in a few setups (server and client role, each version, a negotiation that switches
 * version after CONNECT, small and larger limits), each time in one piece and cut into pieces at
 * points drawn from a generator seeded by the input. Each piece is its own allocation, freed once
 * decoded, so a frame that points into old input is a use after free under ASan.
 *
 * Checked: all cuts give the same frames, error and heart-beat count; the decoder's buffers stay
 * within the limits after every call; each frame is well-formed (headers are C strings, the body
 * fits, content-length matches); and each frame, encoded again with the same version, decodes to
 * the same frame. Failures abort, which libFuzzer and tests/fuzz/replay.c report as a crash.
 */
#include "protocols/stomp/codec.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

typedef struct setup {
    tn_stomp_role role;
    uint8_t version;
    bool negotiate; /* after CONNECT or STOMP, switch to the best accept-version */
    tn_stomp_limits lim;
} setup;

static const setup setups[] = {
    /* The last field, big_body: bodies from that size go where the caller says. */
    {TN_STOMP_ROLE_SERVER, TN_STOMP_V10, true, {256, 16, 1024, 4096, 64}},
    {TN_STOMP_ROLE_SERVER, TN_STOMP_V11, false, {24, 4, 96, 32, 0}},
    {TN_STOMP_ROLE_SERVER, TN_STOMP_V12, false, {64, 8, 256, 128, 16}},
    {TN_STOMP_ROLE_CLIENT, TN_STOMP_V12, false, {256, 16, 1024, 4096, 0}},
    {TN_STOMP_ROLE_CLIENT, TN_STOMP_V10, false, {8, 2, 32, 8, 0}},
};

static uint64_t
next_rand(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void
put(tn_buf *b, const void *p, size_t n)
{
    CHECK(tn_buf_append(b, p, n) == 0);
}

static void
put_u64(tn_buf *b, uint64_t v)
{
    put(b, &v, sizeof v);
}

static bool
is_content_length(const tn_stomp_hdr *h)
{
    return h->nlen == 14 && memcmp(h->name, "content-length", 14) == 0;
}

/* Parses a decimal that the decoder accepted. */
static uint64_t
decimal(const char *s, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(s[i] >= '0' && s[i] <= '9');
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    return v;
}

static bool
escapes_cr(uint8_t version, tn_stomp_command cmd)
{
    return version == TN_STOMP_V12 && cmd != TN_STOMP_CONNECT && cmd != TN_STOMP_STOMP &&
           cmd != TN_STOMP_CONNECTED;
}

/* Encodes f again (content-length headers dropped, one added when the frame had one) and
 * expects the same frame back from a fresh decoder. */
static void
roundtrip(const setup *s, uint8_t version, const tn_stomp_frame *f)
{
    tn_stomp_hdr *h = malloc((f->nheaders + 1) * sizeof *h);
    size_t n = 0;
    bool cr_at_end = false;
    tn_buf b;

    CHECK(h != NULL);
    for (uint32_t i = 0; i < f->nheaders; i++) {
        if (is_content_length(&f->headers[i]))
            continue;
        h[n++] = f->headers[i];
        const tn_stomp_hdr *x = &f->headers[i];
        if (x->vlen > 0 && x->value[x->vlen - 1] == '\r')
            cr_at_end = true;
    }
    tn_buf_init(&b, 3 * (size_t)s->lim.max_header_bytes + f->body_len + 64);
    int rc = tn_stomp_encode_frame(&b, version, f->command, h, n, f->body, f->body_len,
                                   f->has_content_length);
    if (rc != 0) {
        /* The one header a decoder returns that no encoder can write unambiguously. */
        CHECK(rc == TN_EINVAL && cr_at_end && !escapes_cr(version, f->command));
        CHECK(b.len == 0);
        goto out;
    }

    tn_stomp_decoder d;
    tn_stomp_frame g;
    size_t used;
    tn_stomp_decoder_init(&d, s->role, NULL);
    CHECK(tn_stomp_decoder_set_version(&d, version) == 0);
    CHECK(tn_stomp_decode(&d, b.data, b.len, &used, &g) == 0);
    CHECK(used == b.len);
    CHECK(g.command == f->command && g.has_content_length == f->has_content_length);
    CHECK(g.body_len == f->body_len && memcmp(g.body, f->body, f->body_len) == 0);
    CHECK(g.nheaders == n + (f->has_content_length ? 1 : 0));
    for (size_t i = 0; i < n; i++) {
        CHECK(g.headers[i].nlen == h[i].nlen && g.headers[i].vlen == h[i].vlen);
        CHECK(memcmp(g.headers[i].name, h[i].name, h[i].nlen) == 0);
        CHECK(memcmp(g.headers[i].value, h[i].value, h[i].vlen) == 0);
    }
    tn_stomp_decoder_fini(&d);
out:
    tn_buf_fini(&b);
    free(h);
}

static void
check_frame(const setup *s, const tn_stomp_frame *f)
{
    if (s->role == TN_STOMP_ROLE_SERVER)
        CHECK(f->command >= TN_STOMP_CONNECT && f->command <= TN_STOMP_DISCONNECT);
    else
        CHECK(f->command >= TN_STOMP_CONNECTED && f->command <= TN_STOMP_ERROR);
    CHECK(f->nheaders <= s->lim.max_headers);
    CHECK(f->body != NULL && f->body_len <= s->lim.max_body);
    const tn_stomp_hdr *cl = NULL;
    for (uint32_t i = 0; i < f->nheaders; i++) {
        const tn_stomp_hdr *h = &f->headers[i];
        CHECK(h->nlen > 0 && strlen(h->name) == h->nlen && strlen(h->value) == h->vlen);
        if (cl == NULL && is_content_length(h))
            cl = h;
        size_t vlen = 0;
        const char *first = tn_stomp_header_n(f, h->name, h->nlen, &vlen);
        CHECK(first != NULL && vlen <= s->lim.max_header_bytes);
    }
    CHECK((cl != NULL) == f->has_content_length);
    if (cl)
        CHECK(decimal(cl->value, cl->vlen) == f->body_len);
    else
        CHECK(memchr(f->body, '\0', f->body_len) == NULL);
}

static void
describe(tn_buf *t, const tn_stomp_frame *f)
{
    put_u64(t, (uint64_t)f->command);
    put_u64(t, f->nheaders);
    for (uint32_t i = 0; i < f->nheaders; i++) {
        put_u64(t, f->headers[i].nlen);
        put(t, f->headers[i].name, f->headers[i].nlen);
        put_u64(t, f->headers[i].vlen);
        put(t, f->headers[i].value, f->headers[i].vlen);
    }
    put_u64(t, f->has_content_length);
    put_u64(t, f->body_len);
    put(t, f->body, f->body_len);
}

/* What an adapter does after CONNECT: pick the best version both sides speak. */
static void
negotiate(tn_stomp_decoder *d, const tn_stomp_frame *f)
{
    size_t n = 0;
    const char *v = tn_stomp_header_n(f, "accept-version", 14, &n);

    if (v == NULL)
        return;
    if (memmem(v, n, "1.2", 3))
        CHECK(tn_stomp_decoder_set_version(d, TN_STOMP_V12) == 0);
    else if (memmem(v, n, "1.1", 3))
        CHECK(tn_stomp_decoder_set_version(d, TN_STOMP_V11) == 0);
}

/*
 * Decodes data[0..size) with setup s: in one piece when seed is 0, else cut into pieces whose
 * sizes come from the seed (mostly short ones, so cuts land inside lines and bodies). Writes the
 * transcript to t. checks: also check and round-trip each frame (done once per setup).
 */
static void
run(const setup *s, const uint8_t *data, size_t size, uint64_t seed, bool checks, tn_buf *t)
{
    tn_stomp_decoder d;
    tn_stomp_frame f;
    size_t start = 0;
    int rc = TN_EAGAIN;
    uint64_t max_piece = seed == 0 ? size : 1 + next_rand(&seed) % 17;
    uint8_t *ext = NULL; /* a big body's place */
    unsigned n_heads = 0;

    tn_stomp_decoder_init(&d, s->role, &s->lim);
    CHECK(tn_stomp_decoder_set_version(&d, s->version) == 0);
    while (start < size && (rc == 0 || rc == TN_EAGAIN)) {
        size_t len = size - start;
        if (seed != 0 && len > 1)
            len = 1 + (size_t)(next_rand(&seed) % (max_piece < len ? max_piece : len));
        uint8_t *piece = malloc(len);
        CHECK(piece != NULL);
        memcpy(piece, data + start, len);
        size_t off = 0;
        while (off < len) {
            size_t used = (size_t)-1;
            uint8_t version = d.version;
            uint64_t hb = d.heartbeats;
            rc = tn_stomp_decode(&d, piece + off, len - off, &used, &f);
            if (rc == TN_STOMP_HEAD) {
                /* Headers of a big body: nothing more is consumed until a place is given. */
                CHECK(used <= len - off && f.body == NULL && f.body_len >= s->lim.big_body);
                CHECK(f.body_len <= s->lim.max_body);
                off += used;
                CHECK(tn_stomp_decode(&d, piece + off, len - off, &used, &f) == TN_EAGAIN &&
                      used == 0);
                /* Alternately a place of the caller's and the decoder's own. */
                free(ext);
                ext = n_heads++ % 2 == 0 ? malloc(f.body_len) : NULL;
                tn_stomp_decoder_body_to(&d, ext);
                continue;
            }
            CHECK(d.line.cap <= (size_t)s->lim.max_line + 1);
            CHECK(d.head.cap <= s->lim.max_header_bytes);
            CHECK(d.body.cap <= s->lim.max_body);
            CHECK(d.hdrs_cap <= s->lim.max_headers);
            CHECK(d.heartbeats >= hb);
            if (rc == 0) {
                CHECK(used > 0 && used <= len - off);
                CHECK(d.error == NULL);
                if (checks) {
                    check_frame(s, &f);
                    roundtrip(s, version, &f);
                }
                describe(t, &f);
                if (s->negotiate && (f.command == TN_STOMP_CONNECT || f.command == TN_STOMP_STOMP))
                    negotiate(&d, &f);
                off += used;
            } else if (rc == TN_EAGAIN) {
                CHECK(used == len - off && d.error == NULL);
                off = len;
            } else {
                CHECK(rc == TN_EPROTO || rc == TN_ETOOBIG);
                CHECK(d.error != NULL);
                /* Sticky. */
                CHECK(tn_stomp_decode(&d, piece, len, &used, &f) == rc);
                break;
            }
        }
        free(piece);
        start += len;
    }
    free(ext);
    put_u64(t, (uint64_t)(rc == 0 || rc == TN_STOMP_HEAD ? TN_EAGAIN : rc));
    if (d.error)
        put(t, d.error, strlen(d.error));
    put_u64(t, d.heartbeats);
    tn_stomp_decoder_fini(&d);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t seed = 0x5354304d50ull; /* FNV-1a of the input: the cuts follow the bytes */
    tn_buf whole, cut;

    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 0x100000001b3ull;
    tn_buf_init(&whole, 1u << 26);
    tn_buf_init(&cut, 1u << 26);
    for (size_t i = 0; i < sizeof setups / sizeof setups[0]; i++) {
        whole.len = 0;
        run(&setups[i], data, size, 0, true, &whole);
        for (int k = 0; k < 2; k++) {
            cut.len = 0;
            run(&setups[i], data, size, (seed + i * 2 + (uint64_t)k) | 1, false, &cut);
            CHECK(cut.len == whole.len && memcmp(cut.data, whole.data, whole.len) == 0);
        }
    }
    tn_buf_fini(&whole);
    tn_buf_fini(&cut);
    return 0;
}
