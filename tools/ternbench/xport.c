/*
 * MQTT over TLS (mqtts://), over WebSocket (ws://) and over both (wss://), between conns.c's
 * socket and its MQTT reader and batched writes. Plain TCP connections (c->x NULL) never get
 * here.
 *
 * TLS is OpenSSL on two memory BIOs: what the socket reads is written into the SSL's read BIO
 * and SSL_read's plaintext goes on; the flush hands the turn's encoded packets to one SSL_write
 * and writes what the write BIO then holds (handshake messages and alerts included) with
 * conns.c's usual try-write-then-uv_write. So the loop never waits on OpenSSL, and a batch costs
 * one SSL_write (TLS records of up to 16 KiB), as it costs one write(2) over plain TCP.
 *
 * WebSocket is an RFC 6455 client: after the TCP connect (wss: the TLS handshake) it sends the
 * HTTP upgrade request (GET PATH, Sec-WebSocket-Key of 16 random bytes, Sec-WebSocket-Protocol
 * mqtt) and checks the response's 101 status, Sec-WebSocket-Accept (base64 of SHA-1 of the key
 * and the RFC's GUID) and, when present, that the subprotocol is mqtt. Each flush sends the
 * turn's packets as one binary frame, masked with a fresh key. Frames from the broker must be
 * unmasked binary or continuation frames (or control frames: a ping is answered with a pong,
 * a close ends the connection); their payloads are one MQTT byte stream whatever the frame
 * boundaries: the payload bytes of one read are moved together in place (over the frame
 * headers) and handed to the MQTT reader, which keeps a cut packet in c->in as over TCP.
 *
 * The MQTT handshake (CONNECT, CONNACK, SUBSCRIBE) starts once the transport is up
 * (tn_bench_conn_session); until then the connection is CONNECTING, so closing it just closes
 * the socket.
 */
#include "tools/ternbench/ternbench.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_MAX_HEAD 8192 /* the upgrade response up to its blank line, at most */
/* c->out's bytes framed and encrypted: TLS adds 22 bytes per 16 KiB record, a frame 14. */
#define X_MAX_WIRE (TN_BENCH_MAX_OUT + TN_BENCH_MAX_OUT / 512 + 65536)

enum { WS_CONT = 0, WS_TEXT = 1, WS_BINARY = 2, WS_CLOSE = 8, WS_PING = 9, WS_PONG = 10 };
enum { X_TLS_HANDSHAKE, X_WS_UPGRADE, X_UP };

struct tn_bench_xport {
    SSL *ssl; /* NULL without TLS; reads rbio, writes wbio (memory BIOs it owns) */
    BIO *rbio, *wbio;
    int state;
    bool shut;    /* close_notify queued */
    tn_buf wire;  /* wire bytes being built; the flush swaps them into c->out */
    tn_buf frame; /* wss: the frame handed to SSL_write */
    tn_buf ctl;   /* ws: control frames to send (pongs), framed and masked */
    tn_buf head;  /* ws: the upgrade response until its blank line */
    char key[32]; /* ws: Sec-WebSocket-Key */
    uint64_t rng; /* ws: masking keys (xorshift64) */
    /* ws reader: a frame header (hlen of hneed bytes), then `left` payload bytes */
    uint8_t hdr[14];
    uint8_t hlen, hneed;
    bool in_payload;
    uint8_t opcode;    /* of the frame being read */
    uint64_t left;     /* its payload bytes still to come */
    uint8_t cbuf[125]; /* a control frame's payload */
    uint8_t clen;
};

static SSL_CTX *ctx;
static uint8_t xbuf[TN_BENCH_READ_SIZE]; /* SSL_read's plaintext: the loop reads one socket at
                                            once, and nothing keeps a pointer into it */

/* ---- set-up ---- */

static void
print_ssl_errors(const char *what)
{
    char err[256];
    unsigned long e;
    fprintf(stderr, "ternbench: %s\n", what);
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, err, sizeof err);
        fprintf(stderr, "  %s\n", err);
    }
}

int
tn_bench_x_init(const tn_bench_opts *o)
{
    if (!o->tls)
        return 0;
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        print_ssl_errors("cannot create the TLS context");
        return -1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* 10,000 idle connections: no 2 x 16 KiB of record buffers each while nothing moves. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (o->tls_ca) {
        if (SSL_CTX_load_verify_locations(ctx, o->tls_ca, NULL) != 1) {
            char what[300];
            snprintf(what, sizeof what, "--tls-ca %s: cannot load it", o->tls_ca);
            print_ssl_errors(what);
            return -1;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        fprintf(stderr, "ternbench: warning: no --tls-ca: the broker's certificate is NOT "
                        "verified\n");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (o->tls_cert) {
        if (SSL_CTX_use_certificate_chain_file(ctx, o->tls_cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, o->tls_key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            char what[600];
            snprintf(what, sizeof what, "--tls-cert %s --tls-key %s: cannot use them", o->tls_cert,
                     o->tls_key);
            print_ssl_errors(what);
            return -1;
        }
    }
    return 0;
}

void
tn_bench_x_fini(void)
{
    SSL_CTX_free(ctx);
    ctx = NULL;
}

void
tn_bench_x_free(tn_bench_conn *c)
{
    tn_bench_xport *x = c->x;
    if (!x)
        return;
    SSL_free(x->ssl); /* and its BIOs */
    tn_buf_fini(&x->wire);
    tn_buf_fini(&x->frame);
    tn_buf_fini(&x->ctl);
    tn_buf_fini(&x->head);
    free(x);
    c->x = NULL;
}

/* Fails c with OpenSSL's reason for the failed call that returned r. */
static void
tls_fail(tn_bench_conn *c, const char *what, int r)
{
    tn_bench_xport *x = c->x;
    char err[256] = "";
    int kind = SSL_get_error(x->ssl, r);
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, err, sizeof err);
    ERR_clear_error(); /* the queue is the thread's: keep it from the next connection */
    long v = SSL_get_verify_result(x->ssl);
    if (x->state == X_TLS_HANDSHAKE && v != X509_V_OK)
        tn_bench_conn_fail(c, "%s: the broker's certificate: %s", what,
                           X509_verify_cert_error_string(v));
    else if (kind == SSL_ERROR_ZERO_RETURN)
        tn_bench_conn_fail(c, "closed by the broker (TLS close_notify)");
    else
        tn_bench_conn_fail(c, "%s: %s", what,
                           *err ? err : "the broker ended the TLS stream (SSL_ERROR_SYSCALL)");
}

/* ---- WebSocket ---- */

static uint32_t
ws_mask_key(tn_bench_xport *x)
{
    uint64_t v = x->rng;
    v ^= v << 13;
    v ^= v >> 7;
    v ^= v << 17;
    x->rng = v;
    return (uint32_t)(v >> 16);
}

/* Appends a masked frame (FIN set) of p[0..n) to out. */
static int
ws_frame(tn_bench_xport *x, tn_buf *out, uint8_t opcode, const uint8_t *p, size_t n)
{
    uint8_t *h = tn_buf_reserve(out, 14 + n);
    if (!h)
        return TN_ETOOBIG;
    size_t hl = 0;
    h[hl++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        h[hl++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        h[hl++] = 0x80 | 126;
        h[hl++] = (uint8_t)(n >> 8);
        h[hl++] = (uint8_t)n;
    } else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[hl++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint32_t k = ws_mask_key(x);
    uint8_t mk[8];
    memcpy(mk, &k, 4);
    memcpy(mk + 4, &k, 4);
    memcpy(h + hl, mk, 4);
    hl += 4;
    uint8_t *d = h + hl;
    uint64_t k8;
    memcpy(&k8, mk, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        v ^= k8;
        memcpy(d + i, &v, 8);
    }
    for (; i < n; i++)
        d[i] = p[i] ^ mk[i & 3];
    tn_buf_commit(out, hl + n);
    return 0;
}

/* A complete control frame from the broker (its payload in x->cbuf). */
static void
ws_control(tn_bench_conn *c)
{
    tn_bench_xport *x = c->x;
    switch (x->opcode) {
    case WS_PING:
        if (ws_frame(x, &x->ctl, WS_PONG, x->cbuf, x->clen) != 0)
            tn_bench_conn_fail(c, "WebSocket: too many pings unanswered");
        return;
    case WS_PONG:
        return;
    default: { /* close: a status code, then a reason */
        unsigned code = x->clen >= 2 ? (unsigned)x->cbuf[0] << 8 | x->cbuf[1] : 1005;
        int rlen = x->clen > 2 ? x->clen - 2 : 0;
        tn_bench_conn_fail(c, "closed by the broker (WebSocket close %u%s%.*s)", code,
                           rlen ? ": " : "", rlen, (const char *)x->cbuf + 2);
        return;
    }
    }
}

/* The frame header in x->hdr is complete: checks it and starts its payload. 0, or -1 (c
 * failed). */
static int
ws_header(tn_bench_conn *c)
{
    tn_bench_xport *x = c->x;
    uint8_t b0 = x->hdr[0], b1 = x->hdr[1];
    uint64_t len = b1 & 127;
    if (len == 126) {
        len = (uint64_t)x->hdr[2] << 8 | x->hdr[3];
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | x->hdr[2 + i];
    }
    uint8_t op = b0 & 15;
    const char *bad = NULL;
    if (b1 & 0x80)
        bad = "a masked frame from the server";
    else if (b0 & 0x70)
        bad = "reserved bits set (no extension was negotiated)";
    else if (op == WS_TEXT)
        bad = "a text frame (MQTT needs binary frames)";
    else if (op >= 8 && (len > 125 || !(b0 & 0x80)))
        bad = "a control frame longer than 125 bytes or fragmented";
    else if (op != WS_CONT && op != WS_BINARY && op != WS_CLOSE && op != WS_PING && op != WS_PONG)
        bad = "an unknown opcode";
    if (bad) {
        tn_bench_conn_fail(c, "WebSocket: %s", bad);
        return -1;
    }
    x->opcode = op;
    x->left = len;
    x->clen = 0;
    x->hlen = 0;
    x->in_payload = true;
    return 0;
}

/* Frames from the broker in p[0..n) (a buffer of ours: data payloads are moved together over the
 * headers in place), then their MQTT bytes to the reader. */
static void
ws_input(tn_bench_conn *c, uint8_t *p, size_t n, uint64_t now)
{
    tn_bench_xport *x = c->x;
    size_t i = 0, w = 0;
    while (i < n) {
        if (!x->in_payload) {
            x->hdr[x->hlen++] = p[i++];
            if (x->hlen == 2) {
                uint8_t l7 = x->hdr[1] & 127;
                x->hneed = (uint8_t)(2 +
                                     (l7 == 126   ? 2
                                      : l7 == 127 ? 8
                                                  : 0) +
                                     (x->hdr[1] & 0x80 ? 4 : 0));
            }
            if (x->hlen < 2 || x->hlen < x->hneed)
                continue;
            if (ws_header(c) != 0)
                return;
        } else {
            size_t take = n - i < x->left ? n - i : (size_t)x->left;
            if (x->opcode < 8) {
                if (w != i)
                    memmove(p + w, p + i, take);
                w += take;
            } else {
                memcpy(x->cbuf + x->clen, p + i, take);
                x->clen = (uint8_t)(x->clen + take);
            }
            i += take;
            x->left -= take;
        }
        if (x->left == 0 && x->in_payload) {
            x->in_payload = false;
            if (x->opcode >= 8) {
                if (x->opcode == WS_CLOSE && w) { /* what came before it still counts */
                    tn_bench_mqtt_stream(c, p, w, now);
                    w = 0;
                    if (!tn_bench_conn_is_active(c))
                        return;
                }
                ws_control(c);
                if (!tn_bench_conn_is_active(c))
                    return;
            }
        }
    }
    if (w)
        tn_bench_mqtt_stream(c, p, w, now);
    if (tn_bench_conn_is_active(c) && x->ctl.len)
        tn_bench_conn_dirty(c);
}

/* Queues the upgrade request (over TLS: through SSL_write). 0, or -1 (c failed). */
static int
ws_request(tn_bench_conn *c)
{
    tn_bench_xport *x = c->x;
    const tn_bench_opts *o = &c->b->o;
    uint8_t raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        ERR_clear_error();
        for (size_t i = 0; i < sizeof raw; i++)
            raw[i] = (uint8_t)ws_mask_key(x);
    }
    EVP_EncodeBlock((unsigned char *)x->key, raw, sizeof raw);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s:%u\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: mqtt\r\n"
                     "\r\n",
                     o->ws_path, o->host, ntohs(o->addr.sin_port), x->key);
    tn_assert(n > 0 && (size_t)n < sizeof req);
    x->state = X_WS_UPGRADE;
    if (x->ssl) {
        int r = SSL_write(x->ssl, req, n);
        if (r <= 0) {
            tls_fail(c, "TLS write", r);
            return -1;
        }
    } else if (tn_buf_append(&c->out, req, (size_t)n) != 0) { /* c->out is empty: wire bytes */
        tn_bench_conn_fail(c, "out of memory");
        return -1;
    }
    tn_bench_conn_dirty(c);
    return 0;
}

/* value of header `name` in the response head (NUL-terminated lines), trimmed, or NULL. */
static const char *
head_value(char *head, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    for (char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, nl) != 0 || line[nl] != ':')
            continue;
        const char *v = line + nl + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        const char *end = strstr(v, "\r\n");
        size_t len = end ? (size_t)(end - v) : strlen(v);
        while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
            len--;
        if (len >= size)
            len = size - 1;
        memcpy(out, v, len);
        out[len] = '\0';
        return out;
    }
    return NULL;
}

/* Response bytes while the upgrade is pending. */
static void
ws_upgrade_input(tn_bench_conn *c, const uint8_t *p, size_t n, uint64_t now)
{
    tn_bench_xport *x = c->x;
    size_t from = x->head.len > 3 ? x->head.len - 3 : 0;
    if (tn_buf_append(&x->head, p, n) != 0) {
        tn_bench_conn_fail(c, "WebSocket: no end to the upgrade response");
        return;
    }
    const uint8_t *end = memmem(x->head.data + from, x->head.len - from, "\r\n\r\n", 4);
    if (!end) {
        if (x->head.len > WS_MAX_HEAD)
            tn_bench_conn_fail(c, "WebSocket: upgrade response longer than %d bytes", WS_MAX_HEAD);
        return;
    }
    size_t hend = (size_t)(end - x->head.data) + 4;
    if (hend > WS_MAX_HEAD) {
        tn_bench_conn_fail(c, "WebSocket: upgrade response longer than %d bytes", WS_MAX_HEAD);
        return;
    }
    char head[WS_MAX_HEAD + 1], v[128];
    memcpy(head, x->head.data, hend);
    head[hend] = '\0';
    int status = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &status) != 1 || status != 101) {
        char *eol = strstr(head, "\r\n");
        *eol = '\0';
        tn_bench_conn_fail(c, "WebSocket upgrade refused: %.200s", head);
        return;
    }
    char want[64], both[64];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int bl = snprintf(both, sizeof both, "%s%s", x->key, WS_GUID);
    if (EVP_Digest(both, (size_t)bl, md, &mdlen, EVP_sha1(), NULL) != 1) {
        ERR_clear_error();
        tn_bench_conn_fail(c, "WebSocket: SHA-1 unavailable");
        return;
    }
    EVP_EncodeBlock((unsigned char *)want, md, (int)mdlen);
    const char *why = NULL;
    if (!head_value(head, "Upgrade", v, sizeof v) || strcasecmp(v, "websocket") != 0)
        why = "no Upgrade: websocket";
    else if (!head_value(head, "Sec-WebSocket-Accept", v, sizeof v))
        why = "no Sec-WebSocket-Accept";
    else if (strcmp(v, want) != 0)
        why = "a wrong Sec-WebSocket-Accept";
    else if (head_value(head, "Sec-WebSocket-Protocol", v, sizeof v) && strcmp(v, "mqtt") != 0)
        why = "a subprotocol other than mqtt";
    if (why) {
        tn_bench_conn_fail(c, "WebSocket upgrade response with %s", why);
        return;
    }
    x->state = X_UP;
    tn_bench_conn_session(c);
    if (tn_bench_conn_is_active(c) && x->head.len > hend)
        ws_input(c, x->head.data + hend, x->head.len - hend, now);
    tn_buf_reset(&x->head);
}

/* ---- the connection's bytes ---- */

/* The transport below the WebSocket layer is up (TCP, or TLS once its handshake is done). */
static int
lower_up(tn_bench_conn *c)
{
    if (c->b->o.ws)
        return ws_request(c);
    c->x->state = X_UP;
    tn_bench_conn_session(c);
    return 0;
}

int
tn_bench_x_start(tn_bench_conn *c)
{
    const tn_bench_opts *o = &c->b->o;
    tn_bench_xport *x = tn_xcalloc(1, sizeof *x);
    tn_buf_init(&x->wire, X_MAX_WIRE);
    tn_buf_init(&x->frame, X_MAX_WIRE);
    tn_buf_init(&x->ctl, 65536);
    tn_buf_init(&x->head, WS_MAX_HEAD + TN_BENCH_READ_SIZE);
    x->rng = (tn_bench_now_ns() ^ ((uint64_t)c->id << 32) ^ (uintptr_t)x) | 1;
    c->x = x;
    if (!o->tls)
        return lower_up(c);
    x->state = X_TLS_HANDSHAKE;
    x->ssl = SSL_new(ctx);
    x->rbio = BIO_new(BIO_s_mem());
    x->wbio = BIO_new(BIO_s_mem());
    if (!x->ssl || !x->rbio || !x->wbio) {
        BIO_free(x->rbio);
        BIO_free(x->wbio);
        x->rbio = x->wbio = NULL;
        ERR_clear_error();
        tn_bench_conn_fail(c, "cannot set up TLS (out of memory)");
        return -1;
    }
    BIO_set_mem_eof_return(x->rbio, -1); /* empty: "retry", not end of stream */
    SSL_set_bio(x->ssl, x->rbio, x->wbio);
    SSL_set_connect_state(x->ssl);
    struct in_addr ip;
    bool is_ip = inet_pton(AF_INET, o->host, &ip) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(x->ssl, o->host);
    if (o->tls_ca) { /* the certificate must name the host of --url */
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(x->ssl), o->host)
                       : SSL_set1_host(x->ssl, o->host);
        if (ok != 1) {
            ERR_clear_error();
            tn_bench_conn_fail(c, "cannot set the host name to verify");
            return -1;
        }
    }
    int r = SSL_do_handshake(x->ssl); /* the ClientHello, into wbio */
    if (r != 1 && SSL_get_error(x->ssl, r) != SSL_ERROR_WANT_READ) {
        tls_fail(c, "TLS handshake", r);
        return -1;
    }
    tn_bench_conn_dirty(c);
    return 0;
}

/* Plaintext from the broker. */
static void
plain_input(tn_bench_conn *c, uint8_t *p, size_t n, uint64_t now)
{
    switch (c->x->state) {
    case X_UP:
        if (c->b->o.ws)
            ws_input(c, p, n, now);
        else
            tn_bench_mqtt_stream(c, p, n, now);
        return;
    case X_WS_UPGRADE:
        ws_upgrade_input(c, p, n, now);
        return;
    default:
        tn_bench_conn_fail(c, "data before the TLS handshake ended");
        return;
    }
}

void
tn_bench_x_input(tn_bench_conn *c, uint8_t *p, size_t len)
{
    tn_bench_xport *x = c->x;
    uint64_t now = tn_bench_now_ns(); /* one clock read per read, as over TCP */
    if (!x->ssl) {
        plain_input(c, p, len, now);
        return;
    }
    if (BIO_write(x->rbio, p, (int)len) != (int)len) {
        ERR_clear_error();
        tn_bench_conn_fail(c, "out of memory for TLS input");
        return;
    }
    if (x->state == X_TLS_HANDSHAKE) {
        int r = SSL_do_handshake(x->ssl);
        if (r != 1) {
            if (SSL_get_error(x->ssl, r) != SSL_ERROR_WANT_READ) {
                tls_fail(c, "TLS handshake", r);
                return;
            }
            if (BIO_ctrl_pending(x->wbio))
                tn_bench_conn_dirty(c);
            return;
        }
        tn_bench_conn_dirty(c); /* the client's Finished */
        if (lower_up(c) != 0 || !tn_bench_conn_is_active(c))
            return;
    }
    /* Ends once the read BIO is empty: what one read brought, at most 64 KiB. */
    for (;;) {
        int r = SSL_read(x->ssl, xbuf, sizeof xbuf);
        if (r <= 0) {
            if (SSL_get_error(x->ssl, r) != SSL_ERROR_WANT_READ) {
                tls_fail(c, "TLS read", r);
                return;
            }
            break;
        }
        plain_input(c, xbuf, (size_t)r, now);
        if (!tn_bench_conn_is_active(c))
            return;
    }
    if (BIO_ctrl_pending(x->wbio))
        tn_bench_conn_dirty(c); /* a key update's answer, an alert */
}

bool
tn_bench_x_pending(const tn_bench_conn *c)
{
    const tn_bench_xport *x = c->x;
    return x->ctl.len || (x->ssl && BIO_ctrl_pending(x->wbio));
}

int
tn_bench_x_wrap(tn_bench_conn *c)
{
    tn_bench_xport *x = c->x;
    tn_buf *w = &x->wire;
    if (x->state == X_UP && (c->out.len || x->ctl.len)) {
        const uint8_t *p = c->out.data;
        size_t n = c->out.len;
        if (c->b->o.ws) {
            tn_buf *f = x->ssl ? &x->frame : w;
            if ((n && ws_frame(x, f, WS_BINARY, p, n) != 0) ||
                (x->ctl.len && tn_buf_append(f, x->ctl.data, x->ctl.len) != 0)) {
                tn_bench_conn_fail(c, "out of memory for a WebSocket frame");
                return -1;
            }
            x->ctl.len = 0;
            p = f->data;
            n = f->len;
        }
        if (x->ssl) {
            int r = SSL_write(x->ssl, p, (int)n);
            x->frame.len = 0;
            if (r <= 0) {
                tls_fail(c, "TLS write", r);
                return -1;
            }
            /* MQTT's DISCONNECT is in: close_notify after it. */
            if (c->state == TN_BENCH_CS_CLOSING && !x->shut) {
                x->shut = true;
                SSL_shutdown(x->ssl);
                ERR_clear_error();
            }
        }
        c->out.len = 0;
    }
    if (x->ssl) {
        size_t n = BIO_ctrl_pending(x->wbio);
        if (n) {
            uint8_t *d = tn_buf_reserve(w, n);
            if (!d || BIO_read(x->wbio, d, (int)n) != (int)n) {
                ERR_clear_error();
                tn_bench_conn_fail(c, "out of memory for TLS output");
                return -1;
            }
            tn_buf_commit(w, n);
        }
    }
    if (w->len) { /* c->out is empty: hand it the wire bytes, keep its buffer for the next */
        tn_assert(c->out.len == 0);
        tn_buf t = c->out;
        c->out = *w;
        *w = t;
    }
    return 0;
}
