#include "protocols/net/net.h"
#include "protocols/tls/tls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define READ_CHUNK 65536
#define SWEEP_MS 250
/* TLS: plaintext is encrypted in pieces of at most this, and only while less than this much
 * ciphertext waits to be written, so a large payload is never held twice in full. */
#define SEAL_CHUNK 262144
/* TLS: reads and writes in one sweep period (250 ms) from which a connection is busy. */
#define BUSY_OPS 16

typedef struct conn conn;

/* An output buffer being written asynchronously (only when a direct write came up short). */
typedef struct wreq {
    uv_write_t req;
    tn_buf buf;
    tn_orefs refs;
    size_t done;  /* bytes of buf and refs written so far */
    size_t left;  /* bytes still to write */
    size_t chunk; /* bytes of the write in flight (at most MAX_IOV pieces) */
} wreq;

struct conn {
    uv_tcp_t tcp; /* first: the handle's address is the conn's */
    tn_net *net;
    const tn_adapter_ops *ops;
    void *a;
    tn_buf in;     /* unparsed input */
    tn_buf out;    /* output not yet handed to the kernel (TLS: plaintext not yet encrypted) */
    tn_orefs refs; /* payloads written from where they are, interleaved with out */
    tn_tls *tls;   /* TLS connection, or NULL (plain TCP) */
    tn_buf tout;   /* TLS: ciphertext not yet handed to the kernel */
    size_t sealed; /* TLS: bytes of out and refs (in stream order) already encrypted */
    uint64_t handshake_by; /* TLS: loop time by which the handshake must be done (0: done) */
    bool tls_shut;         /* TLS: close_notify queued */
    uint32_t tls_ops;      /* TLS: reads and writes since the last sweep */
    wreq *wr;              /* async write in flight, or NULL */
    uint64_t deadline;
    uint64_t close_by; /* closing: loop time after which the output is given up (0: none) */
    conn *next, *prev; /* all connections */
    conn *dirty_next;  /* in net's dirty list: output to write this loop turn */
    conn *wake_next;   /* in net's wake list: input() to call again this loop turn */
    int close_reason;
    bool dirty;
    bool woken;
    bool closing;        /* no more input; uv_close once output is flushed */
    bool handle_closing; /* uv_close called */
    bool paused;         /* the adapter paused input */
    bool reading;
    bool full;       /* out_full() said true; drained() is due once below three quarters */
    bool busy;       /* read or wrote since the last sweep (else its buffers are freed) */
    bool ip_counted; /* counted in limits.per_ip */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;
};

typedef struct listener {
    uv_tcp_t tcp;
    tn_net *net;
    const tn_adapter_ops *ops;
    void *proto;
    tn_tls_ctx *tls; /* TLS listener (not owned), or NULL */
    struct listener *next;
} listener;

/* Connections refused for one reason: logged at most once a second, with how many. */
typedef struct refusals {
    const char *id;    /* log ID */
    const char *why;   /* the last reason, for the log */
    uint32_t count;    /* refused since the last log line */
    uint64_t last_log; /* loop time of the last log line */
    bool logged;       /* a line was logged already (the first one goes out at once) */
} refusals;

struct tn_net {
    uv_loop_t *loop;
    tn_net_limits limits;
    uv_prepare_t prepare;
    uv_timer_t sweep;
    listener *listeners;
    conn *conns;
    conn *dirty;
    conn *wakeq;
    uint32_t n_conns;
    uint32_t n_handles;      /* open handles, for shutdown */
    uint64_t tls_handshakes; /* completed, since the start */
    bool closing;
    refusals ref_max;    /* refused at max_connections */
    refusals ref_accept; /* accept() failed (out of file descriptors, mostly) */
    refusals ref_ip;     /* refused at max_connections_per_ip */
    void (*done)(void *arg);
    void *done_arg;
    char peerbuf[64];
    uint8_t rbuf[READ_CHUNK];
    uint8_t pbuf[READ_CHUNK]; /* TLS: plaintext decrypted from rbuf */
};

static void conn_update_reading(conn *c);
static void conn_flush(conn *c);
static const char *io_peer(void *ctx);

static size_t
pending_out(const conn *c)
{
    return c->out.len + c->refs.bytes - c->sealed + c->tout.len + (c->wr ? c->wr->left : 0);
}

/*
 * All of b is written (or encrypted). Its memory is kept for the next loop turn, and the sweep
 * frees it once the connection has been idle a whole period; but output that never outgrew the
 * smallest buffer (a CONNACK, a PINGRESP now and then) is freed at once: otherwise each new
 * connection leaves a hole between long-lived allocations until the sweep, and 2,000 idle
 * clients cost about 230 B more each (measured). A busy connection's buffer outgrows it.
 */
static void
out_written(tn_buf *b)
{
    b->len = 0;
    if (b->cap <= TN_BUF_MIN)
        tn_buf_reset(b);
}

/* The buffer the socket is written from: the output itself, or its ciphertext. */
static tn_buf *
wire(conn *c)
{
    return c->tls ? &c->tout : &c->out;
}

/* At most this many pieces per write; a longer list is written in several. */
#define MAX_IOV 64

/* The pieces of buf and refs from byte `skip` on, as iovecs (at most MAX_IOV); returns how
 * many, and the bytes they cover in *bytes. */
static unsigned
build_iov(const tn_buf *buf, const tn_orefs *r, size_t skip, uv_buf_t *iov, size_t *bytes)
{
    tn_piece v[MAX_IOV];
    unsigned k = tn_out_pieces(buf, r, skip, v, MAX_IOV, bytes);
    for (unsigned i = 0; i < k; i++)
        iov[i] = uv_buf_init((char *)v[i].p, (unsigned)v[i].n);
    return k;
}

static void
mark_dirty(conn *c)
{
    c->busy = true;
    if (c->dirty || c->handle_closing)
        return;
    c->dirty = true;
    c->dirty_next = c->net->dirty;
    c->net->dirty = c;
}

/* Queues c for input() in this loop turn's prepare (unparsed input, or the adapter asked). */
static void
mark_woken(conn *c)
{
    if (c->woken || c->handle_closing)
        return;
    c->woken = true;
    c->wake_next = c->net->wakeq;
    c->net->wakeq = c;
}

static void
handle_closed(tn_net *n)
{
    if (--n->n_handles == 0 && n->closing && n->done)
        n->done(n->done_arg);
}

/* Removes c from the loop-turn lists it may still be on (it is about to be freed). */
static void
unlist(conn *c)
{
    tn_net *n = c->net;
    if (c->dirty)
        for (conn **pp = &n->dirty; *pp; pp = &(*pp)->dirty_next)
            if (*pp == c) {
                *pp = c->dirty_next;
                break;
            }
    if (c->woken)
        for (conn **pp = &n->wakeq; *pp; pp = &(*pp)->wake_next)
            if (*pp == c) {
                *pp = c->wake_next;
                break;
            }
    c->dirty = c->woken = false;
}

static void
conn_close_cb(uv_handle_t *h)
{
    conn *c = (conn *)h;
    tn_net *n = c->net;
    unlist(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        n->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    n->n_conns--;
    if (c->ip_counted)
        tn_iplimit_give(n->limits.per_ip, &c->peer.sa);
    if (c->a)
        c->ops->closed(c->a, c->close_reason);
    tn_orefs_release(&c->refs);
    tn_buf_fini(&c->in);
    tn_buf_fini(&c->out);
    tn_buf_fini(&c->tout);
    tn_tls_free(c->tls);
    free(c);
    handle_closed(n);
}

/* Closes the socket now; pending output is dropped. */
static void
conn_abort(conn *c, int reason)
{
    if (c->handle_closing)
        return;
    if (!c->closing)
        c->close_reason = reason;
    c->closing = true;
    c->handle_closing = true;
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

/* c stops reading and closes once its output is written, or after close_timeout without it. */
static void
conn_start_closing(conn *c)
{
    c->closing = true;
    c->close_reason = TN_CLOSE_LOCAL;
    if (c->net->limits.close_timeout_ms)
        c->close_by = uv_now(c->net->loop) + c->net->limits.close_timeout_ms;
    conn_update_reading(c);
    mark_dirty(c);
}

static void
conn_maybe_finish(conn *c)
{
    if (!c->closing || c->handle_closing || pending_out(c) != 0)
        return;
    if (c->tls && !c->tls_shut && tn_tls_ready(c->tls)) {
        /* Our side of a TLS close: close_notify, written before the socket closes. */
        c->tls_shut = true;
        tn_tls_shutdown(c->tls);
        if (c->tout.len) {
            mark_dirty(c);
            return;
        }
    }
    conn_abort(c, c->close_reason);
}

static void write_cb(uv_write_t *req, int status);

/* Writes the next (at most MAX_IOV) pieces of w; 0 or a libuv error. */
static int
wreq_next(conn *c, wreq *w)
{
    uv_buf_t iov[MAX_IOV];
    unsigned k = build_iov(&w->buf, &w->refs, w->done, iov, &w->chunk);
    return uv_write(&w->req, (uv_stream_t *)&c->tcp, iov, k, write_cb);
}

static void
write_cb(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    conn *c = req->data;
    if (status == 0 && !c->handle_closing && w->chunk < w->left) {
        w->done += w->chunk;
        w->left -= w->chunk;
        if ((status = wreq_next(c, w)) == 0)
            return;
    }
    tn_orefs_release(&w->refs);
    tn_buf *b = wire(c);
    if (b->cap == 0 && !c->handle_closing) {
        b->data = w->buf.data; /* reuse the written buffer's memory */
        b->cap = w->buf.cap;
        b->len = 0;
    } else {
        tn_buf_fini(&w->buf);
    }
    free(w);
    c->wr = NULL;
    if (c->handle_closing)
        return;
    if (status < 0) {
        tn_log_debug("NET-WRITE-FAIL", "%s: write failed: %s", io_peer(c), uv_strerror(status));
        conn_abort(c, TN_CLOSE_PEER);
        return;
    }
    conn_flush(c);
}

/* The rest of c's output after a direct write took `written` of `total` bytes goes out
 * asynchronously, from a request that owns the buffer and the references; new output collects in
 * a fresh buffer meanwhile. 0 or a libuv error (nothing is then left pending). */
static int
write_rest(conn *c, size_t written, size_t total)
{
    wreq *w = tn_xmalloc(sizeof *w);
    tn_buf *b = wire(c);
    w->buf = *b;
    w->done = written;
    w->left = total - written;
    w->req.data = c;
    tn_buf_init(b, b->max);
    if (c->tls) {
        memset(&w->refs, 0, sizeof w->refs); /* sealed already: all in the ciphertext */
    } else {
        w->refs = c->refs;
        memset(&c->refs, 0, sizeof c->refs);
    }
    c->wr = w;
    int r = wreq_next(c, w);
    if (r < 0) {
        c->wr = NULL;
        tn_orefs_release(&w->refs);
        tn_buf_fini(&w->buf);
        free(w);
    }
    return r;
}

/* TLS: encrypts the output (out and refs, in stream order) into tout, while tout holds less
 * than SEAL_CHUNK; what is fully encrypted is released. Before the handshake is done, the
 * plaintext waits. 0, or TN_EPROTO. */
static int
seal(conn *c)
{
    if (!tn_tls_ready(c->tls))
        return 0;
    size_t total = c->out.len + c->refs.bytes;
    while (c->sealed < total && c->tout.len < SEAL_CHUNK) {
        tn_piece v[MAX_IOV];
        size_t bytes;
        unsigned k = tn_out_pieces(&c->out, &c->refs, c->sealed, v, MAX_IOV, &bytes);
        for (unsigned i = 0; i < k && c->tout.len < SEAL_CHUNK; i++) {
            size_t n = v[i].n < SEAL_CHUNK ? v[i].n : SEAL_CHUNK;
            if (tn_tls_write(c->tls, v[i].p, n) != 0)
                return TN_EPROTO;
            c->sealed += n;
            if (n < v[i].n)
                break;
        }
    }
    if (c->sealed == total) {
        out_written(&c->out);
        tn_orefs_release(&c->refs);
        c->sealed = 0;
    } else if (c->sealed > 0) {
        /* What is encrypted leaves the buffer: a large output encrypted a piece at a time
         * must not fill it with bytes already sent. */
        c->sealed = tn_out_drop(&c->out, &c->refs, c->sealed);
    }
    return 0;
}

/* Hands c's output to the kernel: directly when it takes it all, else one async write. */
static void
conn_flush(conn *c)
{
    if (c->handle_closing)
        return;
    if (c->tls && c->out.len + c->refs.bytes > c->sealed)
        c->tls_ops++;
    if (c->tls && !c->wr && seal(c) != 0) {
        tn_log_info("NET-TLS-FAIL", "%s: %s, closing", io_peer(c), tn_tls_error(c->tls));
        conn_abort(c, TN_CLOSE_LOCAL);
        return;
    }
    static const tn_orefs none;
    tn_buf *b = wire(c);
    const tn_orefs *refs = c->tls ? &none : &c->refs;
    if (!c->wr && (b->len > 0 || refs->n > 0)) {
        uv_buf_t iov[MAX_IOV];
        size_t total = b->len + refs->bytes, bytes;
        unsigned k = build_iov(b, refs, 0, iov, &bytes);
        int r = uv_try_write((uv_stream_t *)&c->tcp, iov, k);
        if (r == UV_EAGAIN || r == UV_ENOSYS)
            r = 0;
        if (r < 0) {
            conn_abort(c, TN_CLOSE_PEER);
            return;
        }
        if ((size_t)r == total) {
            out_written(b);
            if (!c->tls)
                tn_orefs_release(&c->refs);
            else if (c->sealed < c->out.len + c->refs.bytes)
                mark_dirty(c); /* more to encrypt: next turn */
        } else if (write_rest(c, (size_t)r, total) != 0) {
            conn_abort(c, TN_CLOSE_PEER);
            return;
        }
    }
    size_t pend = pending_out(c);
    if (c->full && pend < c->net->limits.max_output / 4 * 3) {
        c->full = false;
        if (!c->closing)
            c->ops->drained(c->a);
    }
    conn_maybe_finish(c);
}

static void
alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn *c = (conn *)h;
    size_t n = 0;
    uint8_t *dst;
    /* A large body arriving: straight into the message it belongs to, when nothing is kept
     * before it. Worth a read of its own only when there is a good deal of it left. */
    if (c->ops->read_into && !c->tls && c->in.len == 0 && (dst = c->ops->read_into(c->a, &n)) &&
        n >= sizeof c->net->rbuf) {
        *buf = uv_buf_init((char *)dst, n > INT32_MAX ? INT32_MAX : (unsigned)n);
        return;
    }
    *buf = uv_buf_init((char *)c->net->rbuf, sizeof c->net->rbuf);
}

/* Offers p[0..len) to the adapter; keeps what it did not consume in c->in. from_in: p is c->in. */
static void
conn_feed(conn *c, const uint8_t *p, size_t len, bool from_in)
{
    ssize_t used = c->ops->input(c->a, p, len);
    if (used < 0) {
        /* The adapter queued its error reply: write it, then close. */
        if (!c->closing)
            conn_start_closing(c);
        return;
    }
    if (c->closing)
        return;
    size_t rest = len - (size_t)used;
    if (from_in) {
        tn_buf_consume(&c->in, (size_t)used);
    } else if (rest > 0 && tn_buf_append(&c->in, p + used, rest) != 0) {
        tn_log_warn("NET-INPUT-LIMIT",
                    "%s: %zu unparsed input bytes over the %u byte limit, closing", io_peer(c),
                    rest, c->net->limits.max_input);
        conn_abort(c, TN_CLOSE_LOCAL);
        return;
    }
}

/* Plaintext for the adapter: given at once, or kept in c->in while the adapter is paused (it
 * arrived in the same read as what made it pause) or while earlier input waits there. */
static void
conn_input(conn *c, const uint8_t *p, size_t n)
{
    if (c->in.len == 0 && !c->paused) {
        conn_feed(c, p, n, false);
    } else if (tn_buf_append(&c->in, p, n) != 0) {
        tn_log_warn("NET-INPUT-LIMIT", "%s: unparsed input over the %u byte limit, closing",
                    io_peer(c), c->net->limits.max_input);
        conn_abort(c, TN_CLOSE_LOCAL);
    } else if (!c->paused) {
        conn_feed(c, c->in.data, c->in.len, true);
    }
}

/* TLS: ciphertext p[0..n) in; the handshake advances, records decrypt into the adapter's input. */
static void
tls_read(conn *c, const uint8_t *p, size_t n)
{
    c->tls_ops++;
    tn_tls_input(c->tls, p, n);
    for (;;) {
        ssize_t r = tn_tls_read(c->tls, c->net->pbuf, sizeof c->net->pbuf);
        if (c->handshake_by && tn_tls_ready(c->tls)) {
            c->handshake_by = 0;
            c->net->tls_handshakes++;
            tn_log_debug("NET-TLS-READY", "%s: %s%s%s", io_peer(c), tn_tls_version(c->tls),
                         tn_tls_subject(c->tls) ? ", client " : "",
                         tn_tls_subject(c->tls) ? tn_tls_subject(c->tls) : "");
        }
        if (r == 0)
            return;
        if (r == TN_ECLOSED) {
            conn_abort(c, TN_CLOSE_PEER); /* close_notify: the peer is done */
            return;
        }
        if (r < 0) {
            tn_log_info("NET-TLS-FAIL", "%s: TLS %s failed: %s, closing", io_peer(c),
                        c->handshake_by ? "handshake" : "connection", tn_tls_error(c->tls));
            /* Write the alert OpenSSL queued, then close. */
            c->tls_shut = true;
            if (!c->closing)
                conn_start_closing(c);
            return;
        }
        conn_input(c, c->net->pbuf, (size_t)r);
        if (c->closing || c->handle_closing)
            return;
    }
}

static void
read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = (conn *)s;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        conn_abort(c, TN_CLOSE_PEER);
        return;
    }
    const uint8_t *p = (const uint8_t *)buf->base;
    c->busy = true;
    if (c->tls) {
        tls_read(c, p, (size_t)nread);
    } else if (c->in.len == 0) {
        conn_feed(c, p, (size_t)nread, false);
    } else if (tn_buf_append(&c->in, p, (size_t)nread) != 0) {
        tn_log_warn("NET-INPUT-LIMIT", "%s: unparsed input over the %u byte limit, closing",
                    io_peer(c), c->net->limits.max_input);
        conn_abort(c, TN_CLOSE_LOCAL);
        return;
    } else {
        conn_feed(c, c->in.data, c->in.len, true);
    }
    mark_dirty(c);
}

static void
conn_update_reading(conn *c)
{
    bool want = !c->closing && !c->paused;
    if (want == c->reading || c->handle_closing)
        return;
    if (want)
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    else
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = want;
    /* Input kept while paused may hold whole packets: offer it again this loop turn. */
    if (want && c->in.len > 0)
        mark_woken(c);
}

/*
 * Once per loop turn, before polling: first input() for connections that asked for it, then one
 * write per connection with output. Each list is popped one node at a time because handling one
 * connection can queue others (a delivery to a subscriber, a producer woken by flow control).
 */
static void
prepare_cb(uv_prepare_t *h)
{
    tn_net *n = h->data;
    while (n->wakeq || n->dirty) {
        conn *c;
        while ((c = n->wakeq)) {
            n->wakeq = c->wake_next;
            c->woken = false;
            if (!c->closing && !c->handle_closing)
                conn_feed(c, c->in.data, c->in.len, true);
        }
        while ((c = n->dirty)) {
            n->dirty = c->dirty_next;
            c->dirty = false;
            conn_flush(c);
        }
    }
}

/* tn_io for TCP connections */
static tn_buf *
io_out(void *ctx)
{
    conn *c = ctx;
    mark_dirty(c);
    return &c->out;
}

static void
io_out_ref(void *ctx, const uint8_t *p, size_t n, void (*release)(void *owner), void *owner)
{
    conn *c = ctx;
    mark_dirty(c);
    if (c->handle_closing || n == 0) {
        release(owner);
        return;
    }
    tn_orefs_add(&c->refs, c->out.len, p, n, release, owner);
}

static bool
io_out_full(void *ctx)
{
    conn *c = ctx;
    if (pending_out(c) >= c->net->limits.max_output)
        c->full = true;
    return c->full;
}

static void
io_close(void *ctx)
{
    conn *c = ctx;
    if (c->closing)
        return;
    conn_start_closing(c);
}

static void
io_pause(void *ctx, bool paused)
{
    conn *c = ctx;
    c->paused = paused;
    conn_update_reading(c);
}

static void
io_wake(void *ctx)
{
    mark_woken(ctx);
}

static void
io_set_deadline(void *ctx, uint64_t at)
{
    ((conn *)ctx)->deadline = at;
}

static uint64_t
io_now(void *ctx)
{
    return uv_now(((conn *)ctx)->net->loop);
}

static const char *
io_peer(void *ctx)
{
    conn *c = ctx;
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (c->peer.sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &c->peer.in4.sin_addr, host, sizeof host);
        port = ntohs(c->peer.in4.sin_port);
        snprintf(c->net->peerbuf, sizeof c->net->peerbuf, "%s:%u", host, port);
    } else if (c->peer.sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &c->peer.in6.sin6_addr, host, sizeof host);
        port = ntohs(c->peer.in6.sin6_port);
        snprintf(c->net->peerbuf, sizeof c->net->peerbuf, "[%s]:%u", host, port);
    } else {
        snprintf(c->net->peerbuf, sizeof c->net->peerbuf, "unknown");
    }
    return c->net->peerbuf;
}

static const char *
io_cert_subject(void *ctx)
{
    conn *c = ctx;
    return c->tls ? tn_tls_subject(c->tls) : NULL;
}

static const tn_io tcp_io = {
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

static void
refused_close_cb(uv_handle_t *h)
{
    conn *c = (conn *)h;
    tn_net *n = c->net;
    free(c);
    handle_closed(n);
}

static void
refusals_log(refusals *r, uint64_t now, uint32_t open)
{
    if (r->count)
        tn_log_warn(r->id, "refused %u connection%s since the last report: %s (%u open)", r->count,
                    r->count == 1 ? "" : "s", r->why, open);
    r->count = 0;
    r->last_log = now;
    r->logged = true;
}

/* Counts a refused connection; the first of a burst is logged at once, the rest once a second
 * (from the sweep), so a flood of refusals costs a line a second, not a line each. */
static void
refusals_add(tn_net *n, refusals *r, const char *why)
{
    uint64_t now = uv_now(n->loop);
    r->count++;
    r->why = why;
    if (!r->logged || now >= r->last_log + 1000)
        refusals_log(r, now, n->n_conns);
}

static void
connection_cb(uv_stream_t *server, int status)
{
    listener *l = server->data;
    tn_net *n = l->net;
    if (status < 0) {
        /* Out of file descriptors, mostly (libuv accepts and closes the connection for us). */
        refusals_add(n, &n->ref_accept, uv_strerror(status));
        return;
    }
    conn *c = tn_xcalloc(1, sizeof *c);
    c->net = n;
    c->ops = l->ops;
    tn_buf_init(&c->in, n->limits.max_input);
    tn_buf_init(&c->out, (size_t)n->limits.max_output * 2 + n->limits.max_input);
    uv_tcp_init(n->loop, &c->tcp);
    n->n_handles++;
    int r = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (r != 0 || n->closing || n->n_conns >= n->limits.max_connections) {
        if (r != 0)
            refusals_add(n, &n->ref_accept, uv_strerror(r));
        else if (!n->closing)
            refusals_add(n, &n->ref_max, "max_connections reached");
        uv_close((uv_handle_t *)&c->tcp, refused_close_cb);
        return;
    }
    int len = sizeof c->peer;
    uv_tcp_getpeername(&c->tcp, &c->peer.sa, &len);
    if (n->limits.per_ip) {
        if (!tn_iplimit_take(n->limits.per_ip, &c->peer.sa)) {
            refusals_add(n, &n->ref_ip, "max_connections_per_ip reached");
            uv_close((uv_handle_t *)&c->tcp, refused_close_cb);
            return;
        }
        c->ip_counted = true;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (l->tls) {
        /* Ciphertext may briefly exceed the plaintext limits: records, handshake, alerts. */
        tn_buf_init(&c->tout, (size_t)n->limits.max_output * 2 + n->limits.max_input + (1u << 20));
        c->tls = tn_tls_new(l->tls, &c->tout);
        if (!c->tls) {
            tn_log_warn("NET-TLS-FAIL", "%s: cannot make a TLS connection", io_peer(c));
            uv_close((uv_handle_t *)&c->tcp, refused_close_cb);
            return;
        }
        c->handshake_by = uv_now(n->loop) + n->limits.tls_handshake_timeout_ms;
    }
    c->next = n->conns;
    if (n->conns)
        n->conns->prev = c;
    n->conns = c;
    n->n_conns++;
    c->a = l->ops->open(l->proto, &tcp_io, c);
    if (!c->a) {
        conn_abort(c, TN_CLOSE_LOCAL);
        return;
    }
    conn_update_reading(c);
}

static void
sweep_cb(uv_timer_t *t)
{
    tn_net *n = t->data;
    uint64_t now = uv_now(n->loop);
    for (conn *c = n->conns; c; c = c->next) {
        /* Connections idle for a whole sweep give their buffers back: 50,000 idle clients
         * must cost no buffer memory, busy ones must not realloc every loop turn. */
        if (!c->busy) {
            if (c->out.len == 0 && c->out.cap)
                tn_buf_reset(&c->out);
            if (c->in.len == 0 && c->in.cap)
                tn_buf_reset(&c->in);
            if (c->tout.len == 0 && c->tout.cap)
                tn_buf_reset(&c->tout);
        }
        if (c->tls) {
            /* Busy: dozens of reads and writes a second. Only those keep OpenSSL's record
             * buffers between records; thousands of quiet devices must not hold 34 KiB each. */
            tn_tls_busy(c->tls, c->tls_ops >= BUSY_OPS);
            c->tls_ops = 0;
        }
        if (c->handshake_by && c->handshake_by <= now && !c->handle_closing) {
            tn_log_info("NET-TLS-TIMEOUT", "%s: TLS handshake not finished within %u ms, closing",
                        io_peer(c), n->limits.tls_handshake_timeout_ms);
            c->handshake_by = 0;
            conn_abort(c, TN_CLOSE_LOCAL);
            continue;
        }
        c->busy = false;
        if (c->deadline && c->deadline <= now && !c->closing) {
            c->deadline = 0;
            c->ops->timeout(c->a, now);
        }
        if (c->closing && !c->handle_closing && c->close_by && c->close_by <= now) {
            tn_log_info("NET-CLOSE-TIMEOUT",
                        "%s: %zu bytes still unread by the client after close_timeout (%u ms): "
                        "closing without them",
                        io_peer(c), pending_out(c), n->limits.close_timeout_ms);
            conn_abort(c, c->close_reason);
        }
    }
    if (n->ref_max.count && now >= n->ref_max.last_log + 1000)
        refusals_log(&n->ref_max, now, n->n_conns);
    if (n->ref_accept.count && now >= n->ref_accept.last_log + 1000)
        refusals_log(&n->ref_accept, now, n->n_conns);
    if (n->ref_ip.count && now >= n->ref_ip.last_log + 1000)
        refusals_log(&n->ref_ip, now, n->n_conns);
}

tn_net *
tn_net_new(uv_loop_t *loop, const tn_net_limits *limits)
{
    tn_net *n = tn_xcalloc(1, sizeof *n);
    n->loop = loop;
    n->limits = *limits;
    n->ref_max.id = "NET-MAX-CONN";
    n->ref_accept.id = "NET-ACCEPT-FAIL";
    n->ref_ip.id = "NET-MAX-CONN-IP";
    uv_prepare_init(loop, &n->prepare);
    n->prepare.data = n;
    uv_prepare_start(&n->prepare, prepare_cb);
    uv_timer_init(loop, &n->sweep);
    n->sweep.data = n;
    uv_timer_start(&n->sweep, sweep_cb, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&n->sweep);
    n->n_handles = 2;
    return n;
}

int
tn_net_listen(tn_net *n, const char *address, uint16_t port, const tn_adapter_ops *ops, void *proto,
              tn_tls_ctx *tls, uint16_t *bound)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } addr;
    int r;
    if (strchr(address, ':'))
        r = uv_ip6_addr(address, port, &addr.in6);
    else
        r = uv_ip4_addr(address, port, &addr.in4);
    if (r != 0)
        return TN_EINVAL;
    listener *l = tn_xcalloc(1, sizeof *l);
    l->net = n;
    l->ops = ops;
    l->proto = proto;
    l->tls = tls;
    uv_tcp_init(n->loop, &l->tcp);
    l->tcp.data = l;
    n->n_handles++;
    l->next = n->listeners;
    n->listeners = l;
    r = uv_tcp_bind(&l->tcp, &addr.sa, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&l->tcp, 1024, connection_cb);
    if (r != 0) {
        tn_log_error("NET-LISTEN-FAIL", "cannot listen on %s port %u: %s", address, port,
                     uv_strerror(r));
        return TN_EIO;
    }
    int len = sizeof addr;
    uv_tcp_getsockname(&l->tcp, &addr.sa, &len);
    if (bound)
        *bound = ntohs(addr.sa.sa_family == AF_INET6 ? addr.in6.sin6_port : addr.in4.sin_port);
    return 0;
}

static void
plain_close_cb(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void
listener_close_cb(uv_handle_t *h)
{
    listener *l = h->data;
    tn_net *n = l->net;
    free(l);
    handle_closed(n);
}

void
tn_net_close(tn_net *n, void (*done)(void *arg), void *arg)
{
    n->closing = true;
    n->done = done;
    n->done_arg = arg;
    for (listener *l = n->listeners; l; l = l->next)
        uv_close((uv_handle_t *)&l->tcp, listener_close_cb);
    n->listeners = NULL;
    for (conn *c = n->conns; c; c = c->next) {
        if (!c->handle_closing) {
            c->close_reason = TN_CLOSE_SHUTDOWN;
            c->closing = false; /* so conn_abort records the shutdown reason */
            conn_abort(c, TN_CLOSE_SHUTDOWN);
        }
    }
    n->prepare.data = n;
    n->sweep.data = n;
    uv_close((uv_handle_t *)&n->prepare, plain_close_cb);
    uv_close((uv_handle_t *)&n->sweep, plain_close_cb);
}

void
tn_net_drop_all(tn_net *n)
{
    for (conn *c = n->conns; c; c = c->next)
        conn_abort(c, TN_CLOSE_LOCAL);
}

void
tn_net_free(tn_net *n)
{
    free(n);
}

uint32_t
tn_net_connections(const tn_net *n)
{
    return n->n_conns;
}

uint64_t
tn_net_tls_handshakes(const tn_net *n)
{
    return n->tls_handshakes;
}
