#include <uv.h> /* before libwebsockets.h: it declares its libuv helpers only after uv.h */

#include "protocols/ws/ws.h"

#include "protocols/ws/guard.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uthash.h>

#define SWEEP_MS 250
#define WRITE_CHUNK 262144 /* largest WebSocket message we send */
#define RX_CHUNK 65536     /* libwebsockets hands us input in pieces of at most this */
/* What libwebsockets may send in one write: a whole message of ours with its header (else it
 * sends rx_buffer_size and copies the rest aside). */
#define TX_PACKET (WRITE_CHUNK + 16)
/* no subprotocol: the first bytes must come by then */
#define SNIFF_TIMEOUT_MS 10000
/* reads and writes per sweep (250 ms) from which a connection is busy */
#define BUSY_OPS 16

/* What a connection speaks, by the subprotocol table below (also the lws protocol id). */
enum { P_SNIFF, P_MQTT, P_STOMP, P_AMQP };

typedef struct listener {
    tn_ws *w;
    struct lws_vhost *vh;
    tn_ws_adapter ad[4]; /* by P_* (P_SNIFF unused) */
    uint32_t max_message;
    char **origins;
    size_t n_origins;
    tn_tls_conf tls; /* wss: strings owned */
    bool is_tls;
    struct listener *next;
} listener;

typedef struct wconn {
    tn_ws *w;
    listener *l;
    struct lws *wsi;
    struct wconn **slot; /* libwebsockets' per-connection space, which points here */
    int kind;            /* P_* */
    const tn_adapter_ops *ops;
    void *a;       /* the adapter's state, NULL until opened */
    tn_buf in;     /* unparsed input */
    tn_buf out;    /* output */
    tn_orefs refs; /* payloads written from where they are, interleaved with out */
    size_t sent;   /* bytes of out and refs (stream order) already written */
    uint64_t msg;  /* bytes of the incoming message so far */
    uint64_t deadline;
    uint64_t close_by;
    struct wconn *next, *prev;
    struct wconn *dirty_next, *wake_next;
    char *subject;
    char peer[64];
    int fd;              /* its socket, while guard.h follows it (else -1) */
    bool closing;        /* no more input; closes once the output is written */
    bool close_sent;     /* our close frame is written */
    uint16_t close_code; /* its status (0: 1000, normal) */
    bool peer_closed;    /* the client's close frame arrived */
    uint32_t n_ops;      /* reads and writes since the last sweep */
    bool gone;           /* libwebsockets closed it (or is about to) */
    bool paused;
    bool full;
    bool dirty;
    bool woken;
    bool busy;
    bool ip_counted;             /* counted in limits.per_ip, under ip */
    struct sockaddr_storage *ip; /* its address, when counted */
} wconn;

/* wss: a connection in its TLS handshake, so one that never finishes it is logged when
 * libwebsockets drops it (the handshake deadline, or the client going away). */
typedef struct handshake {
    struct lws *wsi;
    uint64_t since;
    char peer[64];
    UT_hash_handle hh;
} handshake;

struct tn_ws {
    uv_loop_t *loop;
    handshake *handshakes; /* by wsi */
    struct lws_context *ctx;
    tn_ws_limits limits;
    uv_prepare_t prepare;
    uv_timer_t sweep;
    listener *listeners;
    wconn *conns;
    wconn *dirty;
    wconn *wakeq;
    uint32_t n_conns;
    bool closing;
    uint8_t wbuf[LWS_PRE + WRITE_CHUNK];
};

static void conn_feed(wconn *c);

/* ---- logging: libwebsockets' own lines go to ours ---- */

static void
lws_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (level & LLL_ERR)
        tn_log_info("WS-LWS", "%.*s", (int)n, line);
    else
        tn_log_debug("WS-LWS", "%.*s", (int)n, line);
}

/* ---- output ---- */

static size_t
pending(const wconn *c)
{
    return c->out.len + c->refs.bytes - c->sent;
}

static void
mark_dirty(wconn *c)
{
    c->busy = true;
    if (c->dirty || c->gone)
        return;
    c->dirty = true;
    c->dirty_next = c->w->dirty;
    c->w->dirty = c;
}

static void
mark_woken(wconn *c)
{
    if (c->woken || c->gone)
        return;
    c->woken = true;
    c->wake_next = c->w->wakeq;
    c->w->wakeq = c;
}

static void
unlist(wconn *c)
{
    tn_ws *w = c->w;
    if (c->dirty)
        for (wconn **pp = &w->dirty; *pp; pp = &(*pp)->dirty_next)
            if (*pp == c) {
                *pp = c->dirty_next;
                break;
            }
    if (c->woken)
        for (wconn **pp = &w->wakeq; *pp; pp = &(*pp)->wake_next)
            if (*pp == c) {
                *pp = c->wake_next;
                break;
            }
    c->dirty = c->woken = false;
}

/* Copies up to cap bytes of the output stream from byte `from` on into dst; returns how many. */
static size_t
gather(const wconn *c, size_t from, uint8_t *dst, size_t cap)
{
    tn_piece v[64];
    size_t bytes, got = 0;
    unsigned k = tn_out_pieces(&c->out, &c->refs, from, v, 64, &bytes);
    for (unsigned i = 0; i < k && got < cap; i++) {
        size_t n = v[i].n < cap - got ? v[i].n : cap - got;
        memcpy(dst + got, v[i].p, n);
        got += n;
    }
    return got;
}

/* Closes the connection from outside its callbacks (it is closed on lws' next service). */
static void
kill_async(wconn *c)
{
    if (c->gone)
        return;
    c->closing = true;
    /* libwebsockets' own asynchronous kill is a timer it only runs when serviced; shutting the
     * socket down makes the loop report it at once, and libwebsockets closes it. */
    int fd = lws_get_socket_fd(c->wsi);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
}

/* Writes one message of the pending output (at most WRITE_CHUNK): the bytes written, or -1 if
 * the write failed. What the socket does not take at once, libwebsockets keeps and writes
 * before anything else. */
static ssize_t
write_some(wconn *c)
{
    size_t n = gather(c, c->sent, c->w->wbuf + LWS_PRE, WRITE_CHUNK);
    if (n) {
        if (lws_write(c->wsi, c->w->wbuf + LWS_PRE, n, LWS_WRITE_BINARY) < (int)n)
            return -1;
        c->sent += n;
        c->busy = true;
        c->n_ops++;
        if (c->sent == c->out.len + c->refs.bytes) {
            c->out.len = 0;
            tn_orefs_release(&c->refs);
            c->sent = 0;
        } else {
            /* What is written leaves the buffer: a large output written a message at a time
             * must not fill it with sent bytes. */
            c->sent = tn_out_drop(&c->out, &c->refs, c->sent);
        }
    }
    if (c->full && pending(c) < c->w->limits.max_output / 4 * 3) {
        c->full = false;
        if (!c->closing && c->a)
            c->ops->drained(c->a);
    }
    return (ssize_t)n;
}

/* WRITEABLE: one message of the pending output, or the close. Returns -1 to close. */
static int
on_writeable(wconn *c)
{
    ssize_t n = write_some(c);
    if (n < 0)
        return -1;
    if (pending(c) || (c->closing && n)) {
        /* One write per callback: the close frame goes in the next one. */
        lws_callback_on_writable(c->wsi);
    } else if (c->closing && !c->close_sent) {
        /* Our close frame (1000), written by us: libwebsockets 4.1 drops the one
         * lws_close_reason() asks for when the callback returns -1. The socket closes on the
         * next writable turn (or when the client answers with its own close). */
        uint8_t *p = c->w->wbuf + LWS_PRE;
        int code = c->close_code ? c->close_code : LWS_CLOSE_STATUS_NORMAL;
        p[0] = (uint8_t)(code >> 8);
        p[1] = (uint8_t)(code & 0xff);
        c->close_sent = true;
        if (lws_write(c->wsi, p, 2, (enum lws_write_protocol)4 /* close; lws-write.h */) < 0)
            return -1;
        /* Then the client's answering close ends it (RFC 6455 7.1.1), or close_timeout:
         * closing at once could reset the socket under data the client is still sending,
         * and the reset would discard our close frame before the client reads it. */
    }
    return 0;
}

/* ---- tn_io ---- */

static tn_buf *
io_out(void *ctx)
{
    wconn *c = ctx;
    mark_dirty(c);
    return &c->out;
}

static void
io_out_ref(void *ctx, const uint8_t *p, size_t n, void (*release)(void *owner), void *owner)
{
    wconn *c = ctx;
    mark_dirty(c);
    if (c->gone || n == 0) {
        release(owner);
        return;
    }
    tn_orefs_add(&c->refs, c->out.len, p, n, release, owner);
}

static bool
io_out_full(void *ctx)
{
    wconn *c = ctx;
    if (pending(c) >= c->w->limits.max_output)
        c->full = true;
    return c->full;
}

static void
start_closing(wconn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->w->limits.close_timeout_ms)
        c->close_by = uv_now(c->w->loop) + c->w->limits.close_timeout_ms;
    mark_dirty(c);
}

static void
io_close(void *ctx)
{
    start_closing(ctx);
}

static void
io_pause(void *ctx, bool paused)
{
    wconn *c = ctx;
    if (c->paused == paused)
        return;
    c->paused = paused;
    if (!c->gone)
        lws_rx_flow_control(c->wsi, paused ? 0 : 1);
    if (!paused && c->in.len)
        mark_woken(c);
}

static void
io_wake(void *ctx)
{
    mark_woken(ctx);
}

static void
io_set_deadline(void *ctx, uint64_t at)
{
    ((wconn *)ctx)->deadline = at;
}

static uint64_t
io_now(void *ctx)
{
    return uv_now(((wconn *)ctx)->w->loop);
}

static const char *
io_peer(void *ctx)
{
    return ((wconn *)ctx)->peer;
}

static const char *
io_cert_subject(void *ctx)
{
    return ((wconn *)ctx)->subject;
}

static const tn_io ws_io = {
    .out = io_out,
    .out_ref = io_out_ref,
    .out_full = io_out_full,
    .close = io_close,
    .pause = io_pause,
    .wake = io_wake,
    .set_deadline = io_set_deadline,
    .now = io_now,
    .peer = io_peer,
    .cert_subject = io_cert_subject,
};

/* ---- input ---- */

/* Offers c->in (or nothing new) to the adapter. */
static void
conn_feed(wconn *c)
{
    if (!c->a || c->closing || c->gone || c->paused)
        return;
    ssize_t used = c->ops->input(c->a, c->in.data, c->in.len);
    if (used < 0) {
        start_closing(c);
        return;
    }
    tn_buf_consume(&c->in, (size_t)used);
}

static void
conn_input(wconn *c, const uint8_t *p, size_t n)
{
    if (c->in.len == 0 && !c->paused && c->a) {
        ssize_t used = c->ops->input(c->a, p, n);
        if (used < 0) {
            start_closing(c);
            return;
        }
        p += used;
        n -= (size_t)used;
        if (n == 0 || c->closing)
            return;
    }
    if (tn_buf_append(&c->in, p, n) != 0) {
        tn_log_warn("NET-INPUT-LIMIT", "%s: unparsed input over the %u byte limit, closing",
                    c->peer, c->w->limits.max_input);
        kill_async(c);
        return;
    }
    if (!c->paused)
        conn_feed(c);
}

/* A client that offered no subprotocol: its first bytes say which protocol it speaks. */
static int
sniff(const uint8_t *p, size_t n, int *kind)
{
    size_t i = 0;
    while (i < n && (p[i] == '\r' || p[i] == '\n')) /* STOMP heart-beats before CONNECT */
        i++;
    if (i == n)
        return 0; /* not yet */
    if (p[i] == 0x10 && i == 0)
        *kind = P_MQTT;
    else if (p[i] == 'A' && i == 0)
        *kind = P_AMQP;
    else if (p[i] == 'C' || p[i] == 'S')
        *kind = P_STOMP;
    else
        return -1;
    return 1;
}

static bool
open_adapter(wconn *c, int kind)
{
    tn_ws_adapter *ad = &c->l->ad[kind];
    if (!ad->ops)
        return false;
    c->kind = kind;
    c->ops = ad->ops;
    c->a = ad->ops->open(ad->proto, &ws_io, c);
    return c->a != NULL;
}

/* Bad input: no more is read, what is pending goes out, then our close frame with `code`
 * (written by us, like every close: lws' own may be dropped when a callback returns -1). */
static int
fail_close(wconn *c, int code)
{
    c->close_code = (uint16_t)code;
    start_closing(c); /* what still arrives is read and dropped (on_receive) */
    return 0;
}

/* RFC 6455 5.1: an unmasked client frame closes the connection (1002); what it carried, and
 * whatever came with it, is dropped. */
static int
refuse_unmasked(wconn *c)
{
    if (c->closing || c->gone)
        return 0;
    tn_log_info("WS-PROTOCOL", "%s: unmasked frame from the client (RFC 6455 5.1), closing",
                c->peer);
    return fail_close(c, LWS_CLOSE_STATUS_PROTOCOL_ERR);
}

static int
on_receive(wconn *c, const uint8_t *p, size_t n)
{
    if (c->closing || c->gone)
        return 0;
    if (c->fd >= 0 && tn_ws_guard_unmasked(c->fd))
        return refuse_unmasked(c);
    c->busy = true;
    c->n_ops++;
    if (lws_is_first_fragment(c->wsi))
        c->msg = 0;
    c->msg += n;
    if (c->msg > (uint64_t)c->l->max_message + 65536) {
        tn_log_info("WS-TOO-LARGE", "%s: WebSocket message over %u bytes, closing", c->peer,
                    c->l->max_message);
        return fail_close(c, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
    }
    if (!lws_frame_is_binary(c->wsi) && (c->kind == P_MQTT || c->kind == P_AMQP)) {
        tn_log_info("WS-TEXT", "%s: text message on a %s connection (binary only), closing",
                    c->peer, c->kind == P_MQTT ? "MQTT" : "AMQP");
        return fail_close(c, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE);
    }
    if (n == 0)
        return 0;
    if (!c->a) {
        /* No subprotocol: pick one from the first bytes (kept in c->in until they tell). */
        if (tn_buf_append(&c->in, p, n) != 0)
            return -1;
        int kind = P_SNIFF, r = sniff(c->in.data, c->in.len, &kind);
        if (r == 0)
            return 0;
        if (r < 0 || !open_adapter(c, kind)) {
            tn_log_info("WS-PROTOCOL",
                        "%s: no subprotocol offered and the first bytes are not MQTT, STOMP or "
                        "AMQP, closing",
                        c->peer);
            return fail_close(c, LWS_CLOSE_STATUS_PROTOCOL_ERR);
        }
        if (!lws_frame_is_binary(c->wsi) && c->kind != P_STOMP) {
            tn_log_info("WS-TEXT", "%s: text message on a %s connection (binary only), closing",
                        c->peer, c->kind == P_MQTT ? "MQTT" : "AMQP");
            return fail_close(c, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE);
        }
        conn_feed(c);
        return 0;
    }
    conn_input(c, p, n);
    return 0;
}

/* ---- connections ---- */

/* "ADDR:PORT" of wsi's peer, for logs. */
static void
peer_of(struct lws *wsi, char *buf, size_t len)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } a;
    socklen_t alen = sizeof a;
    char host[INET6_ADDRSTRLEN] = "?";
    int fd = lws_get_socket_fd(wsi);
    if (fd < 0 || getpeername(fd, &a.sa, &alen) != 0) {
        snprintf(buf, len, "unknown");
    } else if (a.sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &a.in4.sin_addr, host, sizeof host);
        snprintf(buf, len, "%s:%u", host, ntohs(a.in4.sin_port));
    } else {
        inet_ntop(AF_INET6, &a.in6.sin6_addr, host, sizeof host);
        snprintf(buf, len, "[%s]:%u", host, ntohs(a.in6.sin6_port));
    }
}

static void
set_peer(wconn *c)
{
    peer_of(c->wsi, c->peer, sizeof c->peer);
}

static void
set_subject(wconn *c)
{
    SSL *ssl = lws_get_ssl(c->wsi);
    if (ssl)
        c->subject = tn_tls_verified_subject(ssl);
}

static wconn *
conn_new(tn_ws *w, listener *l, struct lws *wsi, int kind)
{
    wconn *c = tn_xcalloc(1, sizeof *c);
    c->w = w;
    c->l = l;
    c->wsi = wsi;
    c->kind = kind;
    tn_buf_init(&c->in, w->limits.max_input);
    tn_buf_init(&c->out, (size_t)w->limits.max_output * 2 + w->limits.max_input);
    set_peer(c);
    set_subject(c);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    return c;
}

static void
conn_free(wconn *c, int reason)
{
    tn_ws *w = c->w;
    c->gone = true;
    if (c->ip_counted)
        tn_iplimit_give(w->limits.per_ip, (const struct sockaddr *)c->ip);
    free(c->ip);
    c->ip = NULL;
    c->ip_counted = false;
    if (c->fd >= 0)
        tn_ws_guard_forget(c->fd);
    unlist(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->n_conns--;
    if (c->a)
        c->ops->closed(c->a, reason);
    tn_orefs_release(&c->refs);
    tn_buf_fini(&c->in);
    tn_buf_fini(&c->out);
    free(c->subject);
    free(c);
}

/* ---- the handshake ---- */

static bool
origin_ok(listener *l, struct lws *wsi, char *origin, size_t len)
{
    origin[0] = 0;
    if (!l->n_origins)
        return true;
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (n <= 0)
        return true; /* not a browser: any client can claim any Origin, so none is no less */
    if ((size_t)n >= len)
        return false;
    lws_hdr_copy(wsi, origin, (int)len, WSI_TOKEN_ORIGIN);
    for (size_t i = 0; i < l->n_origins; i++)
        if (strcasecmp(l->origins[i], origin) == 0)
            return true;
    return false;
}

/* wss: our TLS settings on the vhost's SSL_CTX (libwebsockets made it from the cert and key). */
static int
setup_ssl_ctx(listener *l, SSL_CTX *s)
{
    const tn_tls_conf *t = &l->tls;
    SSL_CTX_set_min_proto_version(
        s, t->min_version && strcmp(t->min_version, "1.3") == 0 ? TLS1_3_VERSION : TLS1_2_VERSION);
    /* Record buffers are given back after each record, except on busy connections (the
     * sweep clears this per connection): no 16 KiB allocation per record there. */
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(s, 1);
    if (t->ca_file) {
        if (SSL_CTX_load_verify_locations(s, t->ca_file, NULL) != 1)
            return -1;
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->ca_file);
        if (names)
            SSL_CTX_set_client_CA_list(s, names);
    }
    if (t->ciphersuites && SSL_CTX_set_ciphersuites(s, t->ciphersuites) != 1)
        return -1;
    int mode = t->verify == TN_TLS_VERIFY_REQUIRE
                   ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
               : t->verify == TN_TLS_VERIFY_OPTIONAL ? SSL_VERIFY_PEER
                                                     : SSL_VERIFY_NONE;
    SSL_CTX_set_verify(s, mode, NULL);
    return 0;
}

static const struct lws_protocols protocols[];

/* wss handshakes: tracked from their start; a failure is logged once, with OpenSSL's reason. */
static void
on_ssl_info(tn_ws *w, struct lws *wsi, const struct lws_ssl_info *si)
{
    handshake *h;
    HASH_FIND_PTR(w->handshakes, &wsi, h);
    SSL *ssl = lws_get_ssl(wsi);
    if (si->where & SSL_CB_HANDSHAKE_DONE) {
        if (h) {
            HASH_DEL(w->handshakes, h);
            free(h);
        }
        return;
    }
    if (!h && ssl && !SSL_is_init_finished(ssl)) {
        h = tn_xcalloc(1, sizeof *h);
        h->wsi = wsi;
        h->since = uv_now(w->loop);
        peer_of(wsi, h->peer, sizeof h->peer);
        HASH_ADD_PTR(w->handshakes, wsi, h);
    }
    if (!h || !(si->where & SSL_CB_EXIT) || si->ret > 0 || !ssl || SSL_want_read(ssl) ||
        SSL_want_write(ssl))
        return;
    /* SSL_accept failed: garbage, a plain-text client, an unknown CA, a refused certificate. */
    char why[160] = "TLS error";
    long vr = SSL_get_verify_result(ssl);
    unsigned long code = ERR_peek_last_error();
    if (vr != X509_V_OK)
        snprintf(why, sizeof why, "client certificate: %s", X509_verify_cert_error_string(vr));
    else if (code)
        ERR_error_string_n(code, why, sizeof why);
    tn_log_info("WS-TLS-FAIL", "%s: TLS handshake failed: %s, closing", h->peer, why);
    HASH_DEL(w->handshakes, h);
    free(h);
}

/* True when the client offers no subprotocol, or one we serve ("mqtt, v12.stomp" lists). */
static bool
subprotocol_ok(struct lws *wsi, char *offered, size_t len)
{
    offered[0] = 0;
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
    if (n <= 0)
        return true;
    if ((size_t)n >= len)
        n = (int)len - 1;
    lws_hdr_copy(wsi, offered, n + 1, WSI_TOKEN_PROTOCOL);
    char copy[256];
    snprintf(copy, sizeof copy, "%s", offered);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save))
        for (const struct lws_protocols *p = protocols + 1; p->name; p++)
            if (strcmp(p->name, tok) == 0)
                return true;
    return false;
}

static int
callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    wconn **slot = user;
    wconn *c = slot ? *slot : NULL;
    struct lws_vhost *vh = wsi ? lws_get_vhost(wsi) : NULL;
    listener *l = vh ? lws_vhost_user(vh) : NULL;
    tn_ws *w = l ? l->w : NULL;
    char origin[256];

    switch (reason) {
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
        l = lws_vhost_user(in);
        return l ? setup_ssl_ctx(l, user) : 0;

    case LWS_CALLBACK_SSL_INFO:
        if (w)
            on_ssl_info(w, wsi, in);
        return 0;

    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        /* A socket just accepted (`user` is not a connection's space here): follow what
         * libwebsockets reads from it (guard.h). */
        tn_ws_guard_watch((int)(intptr_t)in);
        return 0;

    case LWS_CALLBACK_WSI_DESTROY:
        /* One that never became a WebSocket (plain HTTP, a refused upgrade or handshake). */
        tn_ws_guard_forget(lws_get_socket_fd(wsi));
        if (w) {
            handshake *h;
            HASH_FIND_PTR(w->handshakes, &wsi, h);
            if (h) {
                tn_log_info("WS-TLS-FAIL",
                            "%s: TLS handshake not finished after %" PRIu64
                            " ms (deadline or client gone), closed",
                            h->peer, uv_now(w->loop) - h->since);
                HASH_DEL(w->handshakes, h);
                free(h);
            }
        }
        return 0;

    case LWS_CALLBACK_HTTP: {
        /* A plain HTTP request: this port speaks WebSocket only. */
        char peer[64];
        peer_of(wsi, peer, sizeof peer);
        tn_log_info("WS-NOT-UPGRADE", "%s: plain HTTP request on a WebSocket port, answered 426",
                    peer);
        lws_return_http_status(wsi, 426 /* Upgrade Required */,
                               "This port speaks WebSocket only (subprotocols mqtt, v12.stomp, "
                               "amqp)");
        return -1;
    }

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
        char peer[64], offered[256];
        if (!l || !origin_ok(l, wsi, origin, sizeof origin)) {
            peer_of(wsi, peer, sizeof peer);
            tn_log_info("WS-ORIGIN", "%s: Origin '%s' is not allowed, answered 403", peer, origin);
            lws_return_http_status(wsi, HTTP_STATUS_FORBIDDEN, "Origin not allowed");
            return 1;
        }
        if (!subprotocol_ok(wsi, offered, sizeof offered)) {
            peer_of(wsi, peer, sizeof peer);
            tn_log_info("WS-SUBPROTOCOL",
                        "%s: none of the subprotocols offered (%s) is served, answered 400", peer,
                        offered);
            lws_return_http_status(wsi, HTTP_STATUS_BAD_REQUEST,
                                   "No supported subprotocol (mqtt, mqttv3.1, v10.stomp, "
                                   "v11.stomp, v12.stomp, amqp, AMQPWSB10)");
            return 1;
        }
        return 0;
    }

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (!w || w->closing || w->n_conns >= w->limits.max_connections) {
            if (w && !w->closing)
                tn_log_warn("NET-MAX-CONN", "WebSocket connection refused: max_connections (%u)",
                            w->limits.max_connections);
            return 1;
        }
        return 0;

    case LWS_CALLBACK_ESTABLISHED: {
        if (!w || !slot)
            return -1;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        bool counted = false;
        if (w->limits.per_ip &&
            getpeername(lws_get_socket_fd(wsi), (struct sockaddr *)&ss, &sl) == 0) {
            if (!tn_iplimit_take(w->limits.per_ip, (struct sockaddr *)&ss)) {
                char peer[64];
                peer_of(wsi, peer, sizeof peer);
                tn_log_warn("NET-MAX-CONN-IP",
                            "%s: WebSocket connection refused: max_connections_per_ip (%u)", peer,
                            tn_iplimit_max(w->limits.per_ip));
                return -1;
            }
            counted = true;
        }
        int kind = lws_get_protocol(wsi)->id;
        c = *slot = conn_new(w, l, wsi, kind);
        if (counted) {
            c->ip_counted = true;
            c->ip = tn_xmalloc(sizeof ss);
            memcpy(c->ip, &ss, sizeof ss);
        }
        c->slot = slot;
        c->fd = lws_get_socket_fd(wsi);
        if (!tn_ws_guard_arm(c->fd, c)) {
            tn_log_debug("WS-GUARD", "%s: frames not followed (masking unchecked)", c->peer);
            c->fd = -1;
        }
        if (kind == P_SNIFF) /* its first bytes must come soon */
            c->deadline = uv_now(w->loop) + SNIFF_TIMEOUT_MS;
        if (kind != P_SNIFF && !open_adapter(c, kind)) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION, NULL, 0);
            return -1;
        }
        return 0;
    }

    case LWS_CALLBACK_RECEIVE:
        return c ? on_receive(c, in, len) : -1;

    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!c)
            return 0;
        return on_writeable(c);

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (!c)
            return 0;
        c->peer_closed = true; /* nothing more may be written but lws' echo */
        /* Our own close frame went first: this is the client's answer, not a close to echo
         * (a second close frame makes browsers report an unclean close). */
        return c->close_sent ? 1 : 0;

    case LWS_CALLBACK_CLOSED:
        if (c) {
            *slot = NULL;
            conn_free(c, c->closing ? TN_CLOSE_LOCAL : TN_CLOSE_PEER);
        }
        return 0;

    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* protocols[0] is the one a client that offers no subprotocol gets (and plain HTTP). */
static const struct lws_protocols protocols[] = {
    {"tern", callback, sizeof(wconn *), RX_CHUNK, P_SNIFF, NULL, TX_PACKET},
    {"mqtt", callback, sizeof(wconn *), RX_CHUNK, P_MQTT, NULL, TX_PACKET},
    {"mqttv3.1", callback, sizeof(wconn *), RX_CHUNK, P_MQTT, NULL, TX_PACKET},
    {"v12.stomp", callback, sizeof(wconn *), RX_CHUNK, P_STOMP, NULL, TX_PACKET},
    {"v11.stomp", callback, sizeof(wconn *), RX_CHUNK, P_STOMP, NULL, TX_PACKET},
    {"v10.stomp", callback, sizeof(wconn *), RX_CHUNK, P_STOMP, NULL, TX_PACKET},
    {"amqp", callback, sizeof(wconn *), RX_CHUNK, P_AMQP, NULL, TX_PACKET},
    {"AMQPWSB10", callback, sizeof(wconn *), RX_CHUNK, P_AMQP, NULL, TX_PACKET},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- the loop turn: input the adapters asked for, then writable requests ---- */

static void
prepare_cb(uv_prepare_t *h)
{
    tn_ws *w = h->data;
    wconn *bad;
    while ((bad = tn_ws_guard_take())) /* unmasked frames no receive callback saw (control) */
        refuse_unmasked(bad);
    while (w->wakeq || w->dirty) {
        wconn *c;
        while ((c = w->wakeq)) {
            w->wakeq = c->wake_next;
            c->woken = false;
            conn_feed(c);
        }
        while ((c = w->dirty)) {
            w->dirty = c->dirty_next;
            c->dirty = false;
            if (c->gone || c->peer_closed)
                continue;
            /* This turn's output goes out now, as one message, when nothing written before
             * is still waiting in libwebsockets: asking for a writable callback first would
             * cost two epoll changes and a loop turn per message. */
            if (pending(c) && !c->closing && !lws_partial_buffered(c->wsi) && write_some(c) < 0) {
                kill_async(c);
                continue;
            }
            if (pending(c) || c->closing)
                lws_callback_on_writable(c->wsi);
        }
    }
}

static void
sweep_cb(uv_timer_t *t)
{
    tn_ws *w = t->data;
    uint64_t now = uv_now(w->loop);
    for (wconn *c = w->conns; c; c = c->next) {
        if (!c->busy) {
            if (c->out.len == 0 && c->out.cap && c->refs.n == 0)
                tn_buf_reset(&c->out);
            if (c->in.len == 0 && c->in.cap)
                tn_buf_reset(&c->in);
        }
        SSL *ssl = c->gone ? NULL : lws_get_ssl(c->wsi);
        bool busy = c->n_ops >= BUSY_OPS; /* dozens a second: keep OpenSSL's record buffers */
        c->n_ops = 0;
        if (ssl && busy) {
            SSL_clear_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
        } else if (ssl) {
            SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS); /* freed at the next record's end */
        }
        c->busy = false;
        if (c->deadline && c->deadline <= now && !c->closing && c->a) {
            c->deadline = 0;
            c->ops->timeout(c->a, now);
        } else if (c->deadline && c->deadline <= now && !c->a && !c->gone) {
            tn_log_info("WS-PROTOCOL", "%s: nothing received within %u ms of the upgrade, closing",
                        c->peer, SNIFF_TIMEOUT_MS);
            c->deadline = 0;
            kill_async(c);
        }
        if (c->closing && c->close_by && c->close_by <= now && !c->gone) {
            tn_log_info("NET-CLOSE-TIMEOUT",
                        "%s: %zu bytes still unread by the client after close_timeout (%u ms): "
                        "closing without them",
                        c->peer, pending(c), w->limits.close_timeout_ms);
            c->close_by = 0;
            kill_async(c);
        }
    }
}

/* ---- lifecycle ---- */

tn_ws *
tn_ws_new(uv_loop_t *loop, const tn_ws_limits *limits, char *err, size_t errlen)
{
    tn_ws *w = tn_xcalloc(1, sizeof *w);
    w->loop = loop;
    w->limits = *limits;
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
    struct lws_context_creation_info ci;
    memset(&ci, 0, sizeof ci);
    void *loops[1] = {loop};
    ci.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
                 LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT | LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN;
    ci.foreign_loops = loops;
    ci.pcontext = &w->ctx;
    ci.timeout_secs = (limits->tls_handshake_timeout_ms + 999) / 1000;
    ci.pt_serv_buf_size = RX_CHUNK; /* what lws reads from a socket at once (default 4 KiB) */
    ci.user = w;
    w->ctx = lws_create_context(&ci);
    if (!w->ctx) {
        snprintf(err, errlen,
                 "libwebsockets cannot run on libuv (is the libwebsockets-evlib-uv package "
                 "installed?)");
        free(w);
        return NULL;
    }
    uv_prepare_init(loop, &w->prepare);
    w->prepare.data = w;
    uv_prepare_start(&w->prepare, prepare_cb);
    uv_timer_init(loop, &w->sweep);
    w->sweep.data = w;
    uv_timer_start(&w->sweep, sweep_cb, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&w->sweep);
    return w;
}

static char *
dup_or_null(const char *s)
{
    return s ? tn_xstrdup(s) : NULL;
}

int
tn_ws_listen(tn_ws *w, const tn_ws_listen_conf *c, uint16_t *bound, char *err, size_t errlen)
{
    listener *l = tn_xcalloc(1, sizeof *l);
    l->w = w;
    l->ad[P_MQTT] = c->mqtt;
    l->ad[P_STOMP] = c->stomp;
    l->ad[P_AMQP] = c->amqp;
    l->max_message = c->max_message;
    l->n_origins = c->n_origins;
    l->origins = c->n_origins ? tn_xcalloc(c->n_origins, sizeof(char *)) : NULL;
    for (size_t i = 0; i < c->n_origins; i++)
        l->origins[i] = tn_xstrdup(c->origins[i]);
    l->next = w->listeners;
    w->listeners = l;

    struct lws_context_creation_info vi;
    memset(&vi, 0, sizeof vi);
    char name[80];
    snprintf(name, sizeof name, "%s:%u", c->address, c->port);
    vi.vhost_name = name;
    vi.port = c->port ? c->port : CONTEXT_PORT_NO_LISTEN_SERVER;
    vi.iface = c->address;
    vi.protocols = protocols;
    vi.user = l;
    vi.timeout_secs = (w->limits.tls_handshake_timeout_ms + 999) / 1000;
    /* The wait for the HTTP upgrade (and, on wss, what libwebsockets applies to the TLS
     * handshake) is the same deadline. */
    vi.timeout_secs_ah_idle = vi.timeout_secs;
    /* An IPv4 address binds only with IPv6 off (else libwebsockets listens on every address). */
    if (!strchr(c->address, ':'))
        vi.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    if (c->tls) {
        l->is_tls = true;
        l->tls = *c->tls;
        l->tls.cert_file = dup_or_null(c->tls->cert_file);
        l->tls.key_file = dup_or_null(c->tls->key_file);
        l->tls.ca_file = dup_or_null(c->tls->ca_file);
        l->tls.min_version = dup_or_null(c->tls->min_version);
        l->tls.ciphers = dup_or_null(c->tls->ciphers);
        l->tls.ciphersuites = dup_or_null(c->tls->ciphersuites);
        /* Without DO_SSL_GLOBAL_INIT on the vhost itself it would serve plain text. */
        vi.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        vi.ssl_cert_filepath = l->tls.cert_file;
        vi.ssl_private_key_filepath = l->tls.key_file;
        vi.ssl_cipher_list = l->tls.ciphers;
        vi.alpn = "http/1.1"; /* WebSocket over HTTP/1.1 upgrades, not HTTP/2 */
        vi.ssl_info_event_mask = SSL_CB_EXIT | SSL_CB_HANDSHAKE_START | SSL_CB_HANDSHAKE_DONE;
    }
    if (c->port == 0) {
        /* libwebsockets has no "any free port": find one, then bind it. */
        uv_tcp_t probe;
        union {
            struct sockaddr sa;
            struct sockaddr_in in4;
            struct sockaddr_in6 in6;
        } a;
        int r = strchr(c->address, ':') ? uv_ip6_addr(c->address, 0, &a.in6)
                                        : uv_ip4_addr(c->address, 0, &a.in4);
        uv_tcp_init(w->loop, &probe);
        if (r == 0)
            r = uv_tcp_bind(&probe, &a.sa, 0);
        int len = sizeof a;
        if (r == 0)
            r = uv_tcp_getsockname(&probe, &a.sa, &len);
        uv_close((uv_handle_t *)&probe, NULL);
        uv_run(w->loop, UV_RUN_NOWAIT);
        if (r != 0) {
            snprintf(err, errlen, "cannot find a free port on %s: %s", c->address, uv_strerror(r));
            return TN_EIO;
        }
        vi.port = ntohs(a.sa.sa_family == AF_INET6 ? a.in6.sin6_port : a.in4.sin_port);
    }
    l->vh = lws_create_vhost(w->ctx, &vi);
    if (!l->vh) {
        snprintf(err, errlen,
                 "cannot listen on %s port %u (address in use, or the certificate or key "
                 "cannot be read)",
                 c->address, (unsigned)vi.port);
        return TN_EIO;
    }
    int port = lws_get_vhost_listen_port(l->vh);
    if (port <= 0) {
        snprintf(err, errlen, "cannot listen on %s port %u", c->address, (unsigned)vi.port);
        return TN_EIO;
    }
    *bound = (uint16_t)port;
    return 0;
}

void
tn_ws_drop_all(tn_ws *w)
{
    for (wconn *c = w->conns; c; c = c->next)
        kill_async(c);
}

void
tn_ws_close(tn_ws *w)
{
    if (w->closing)
        return;
    w->closing = true;
    /* The adapters let go now (the journal closes after this); lws closes the sockets. */
    while (w->conns) {
        wconn *c = w->conns;
        *c->slot = NULL;
        conn_free(c, TN_CLOSE_SHUTDOWN);
    }
    uv_close((uv_handle_t *)&w->prepare, NULL);
    uv_close((uv_handle_t *)&w->sweep, NULL);
    lws_context_destroy(w->ctx);
}

void
tn_ws_free(tn_ws *w)
{
    if (!w)
        return;
    if (w->ctx) {
        /* libwebsockets on a foreign loop is destroyed in two steps, each with a loop run. */
        lws_context_destroy(w->ctx);
        uv_run(w->loop, UV_RUN_DEFAULT);
    }
    while (w->listeners) {
        listener *l = w->listeners;
        w->listeners = l->next;
        for (size_t i = 0; i < l->n_origins; i++)
            free(l->origins[i]);
        free(l->origins);
        if (l->is_tls) {
            free((char *)l->tls.cert_file);
            free((char *)l->tls.key_file);
            free((char *)l->tls.ca_file);
            free((char *)l->tls.min_version);
            free((char *)l->tls.ciphers);
            free((char *)l->tls.ciphersuites);
        }
        free(l);
    }
    handshake *h, *tmp;
    HASH_ITER(hh, w->handshakes, h, tmp)
    {
        HASH_DEL(w->handshakes, h);
        free(h);
    }
    free(w);
}

uint32_t
tn_ws_connections(const tn_ws *w)
{
    return w->n_conns;
}
