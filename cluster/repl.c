/* Replication between a pair's nodes: the active ships its journal to the standby, which
 * appends it to its own and acknowledges what is durable there (see cluster.h). */
#include "cluster/cluster.h"
#include "cluster/repl_int.h"

#include "core/base/base.h"
#include "core/store/store.h"
#include "protocols/tls/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { F_HELLO = 1, F_WELCOME, F_NOTACTIVE, F_RECORDS, F_ACK, F_INSYNC, F_OUTOFSYNC, F_BEAT };

#define FRAME_HDR 5
#define SEND_CHUNK (256u << 10)  /* records read and sent at a time */
#define MAX_INFLIGHT (8u << 20)  /* bytes handed to the socket and not yet written */
#define RETRY_MS 100             /* a standby reconnects this often */
#define CHECK_MS 100             /* the active checks its standby this often */
#define MAX_EPOCHS 4096          /* a history longer than this is refused */
#define MAX_CONTROL (1u << 20)   /* largest frame other than RECORDS */
#define TAP_MAX_REC (256u << 10) /* records larger than this go from the disk */
#define TAP_LIMIT (8u << 20)     /* records kept in memory for the standby at most */
#define PAD8(x) (((x) + 7) & ~(uint64_t)7)

enum { R_IDLE, R_STANDBY, R_ACTIVE, R_FENCED };
enum { S_ALONE, S_PAIRED, S_GOING_ALONE };

typedef struct plink {
    tn_repl *r;
    uv_tcp_t tcp;
    uv_connect_t conn;
    tn_buf in;
    size_t inflight; /* bytes in write requests not yet completed */
    bool served;     /* accepted by us: we (the active) serve a standby on it */
    bool closing;
    bool welcomed;   /* standby: WELCOME arrived; active: HELLO answered */
    bool connected;  /* standby: the TCP connection is up */
    bool hello_sent; /* standby */
    char name[65];   /* the standby's (served links) */
    /* TLS (when the pair has a certificate): ciphertext in and out, and the plaintext frames
     * sent before the handshake was done. */
    tn_tls *tls;
    tn_buf cin, cout, pend;
} plink;

typedef struct wreq {
    uv_write_t req;
    plink *l;
    tn_buf buf;
} wreq;

struct tn_repl {
    tn_repl_conf conf;
    tn_store_conf store_conf;
    char *node, *peer_host, *listen_addr, *data_dir, *jdir;
    uv_tcp_t server;
    uv_timer_t timer;
    uv_async_t wake;  /* the standby's journal: records became durable */
    unsigned handles; /* open libuv handles of ours (free once 0 after tn_repl_free) */
    bool freeing;
    int mode;
    epoch_ent *hist;
    size_t n_hist;

    /* active */
    tn_store *store;
    tn_lease *lease;
    uint64_t epoch;
    plink *sb; /* the standby's link */
    /* What the standby gets next: record `next`, at next_pos in the journal. Records come from
     * the tap (as they are appended: tapq holds tap_first..tap_last, whole, in order) or, when
     * not there (large, or the standby fell behind), from the journal files (cur). */
    uint64_t next;
    tn_store_pos next_pos;
    tn_store_cursor *cur;
    bool cur_stale; /* cur is not at next (records went from the tap) */
    tn_buf tapq;
    uint64_t tap_first, tap_last;
    tn_store_pos tap_end; /* where the record after tap_last starts */
    bool tap_due;
    uv_prepare_t prep; /* sends what the tap took this loop turn */
    uint64_t acked;
    int sync;
    bool recording;
    uint64_t behind_since, behind_mark;
    uint64_t down_since;
    char sb_name[65];

    /* standby */
    plink *up;
    tn_store *sstore;
    uint64_t s_epoch;
    uint64_t s_acked_sent;
    uint64_t heard; /* loop time a frame last came from the active */
    bool s_flush;   /* records appended by this read: standby_flush */
    bool logged_down;
    uint64_t tls_logged; /* when a TLS failure was last logged */
};

static void link_close(plink *l);
static void ship(tn_repl *r);

/* ---- little-endian fields ---- */

static void
put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t
get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void
put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t
get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A reader over a frame's payload: every get fails once the payload is short. */
typedef struct rd {
    const uint8_t *p;
    size_t n;
    bool bad;
} rd;

static uint64_t
rd_u64(rd *r)
{
    if (r->n < 8) {
        r->bad = true;
        return 0;
    }
    uint64_t v = get64(r->p);
    r->p += 8;
    r->n -= 8;
    return v;
}

static uint32_t
rd_u32(rd *r)
{
    if (r->n < 4) {
        r->bad = true;
        return 0;
    }
    uint32_t v = get32(r->p);
    r->p += 4;
    r->n -= 4;
    return v;
}

static uint8_t
rd_u8(rd *r)
{
    if (r->n < 1) {
        r->bad = true;
        return 0;
    }
    r->n--;
    return *r->p++;
}

/* A node name (1-64 of [A-Za-z0-9._:-]) into out[65]. */
static void
rd_name(rd *r, char *out)
{
    out[0] = 0;
    if (r->n < 2) {
        r->bad = true;
        return;
    }
    size_t len = (size_t)r->p[0] | (size_t)r->p[1] << 8;
    r->p += 2;
    r->n -= 2;
    if (len == 0 || len > 64 || len > r->n) {
        r->bad = true;
        return;
    }
    for (size_t i = 0; i < len; i++) {
        char c = (char)r->p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-')) {
            r->bad = true;
            return;
        }
        out[i] = c;
    }
    out[len] = 0;
    r->p += len;
    r->n -= len;
}

/* A history: u32 n, n x (epoch, first), epochs strictly increasing. Returns a new array. */
static epoch_ent *
rd_hist(rd *r, size_t *n_out)
{
    uint32_t n = rd_u32(r);
    if (r->bad || n > MAX_EPOCHS || (size_t)n * 16 > r->n) {
        r->bad = true;
        return NULL;
    }
    epoch_ent *h = n ? tn_xcalloc(n, sizeof *h) : NULL;
    for (uint32_t i = 0; i < n; i++) {
        h[i].epoch = rd_u64(r);
        h[i].first = rd_u64(r);
        if (i && (h[i].epoch <= h[i - 1].epoch || h[i].first < h[i - 1].first))
            r->bad = true;
    }
    if (r->bad) {
        free(h);
        return NULL;
    }
    *n_out = n;
    return h;
}

/* ---- the epoch history file: DIR/pair-epochs, "epoch first_lsn" lines ---- */

static int
hist_load(tn_repl *r, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/pair-epochs", r->data_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
    uint64_t e, first;
    int rc = 0;
    while (fscanf(f, "%" SCNu64 " %" SCNu64, &e, &first) == 2) {
        if ((r->n_hist &&
             (e <= r->hist[r->n_hist - 1].epoch || first < r->hist[r->n_hist - 1].first)) ||
            r->n_hist >= MAX_EPOCHS) {
            snprintf(err, errlen, "%s: epochs out of order", path);
            rc = -1;
            break;
        }
        r->hist = tn_xrealloc(r->hist, (r->n_hist + 1) * sizeof *r->hist);
        r->hist[r->n_hist++] = (epoch_ent){e, first};
    }
    if (rc == 0 && !feof(f)) {
        snprintf(err, errlen, "%s: not a list of \"epoch first-LSN\" lines", path);
        rc = -1;
    }
    fclose(f);
    return rc;
}

/* Written whole to a temporary file, synced, renamed over the old one, the folder synced. */
static int
hist_save(tn_repl *r)
{
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/pair-epochs", r->data_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    for (size_t i = 0; i < r->n_hist; i++)
        fprintf(f, "%" PRIu64 " %" PRIu64 "\n", r->hist[i].epoch, r->hist[i].first);
    bool ok = fflush(f) == 0 && fdatasync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0)
        return -1;
    int d = open(r->data_dir, O_RDONLY | O_DIRECTORY);
    if (d >= 0) {
        fsync(d);
        close(d);
    }
    return 0;
}

/* ---- links ---- */

static void
maybe_free(tn_repl *r)
{
    if (r->handles || !r->freeing)
        return;
    free(r->hist);
    free(r->node);
    free(r->peer_host);
    free(r->listen_addr);
    free(r->data_dir);
    free(r->jdir);
    tn_buf_fini(&r->tapq);
    free(r);
}

static void
on_handle_closed(uv_handle_t *h)
{
    tn_repl *r = h->data;
    r->handles--;
    maybe_free(r);
}

static void
on_link_closed(uv_handle_t *h)
{
    plink *l = h->data;
    tn_repl *r = l->r;
    tn_buf_fini(&l->in);
    tn_tls_free(l->tls);
    tn_buf_fini(&l->cin);
    tn_buf_fini(&l->cout);
    tn_buf_fini(&l->pend);
    free(l);
    r->handles--;
    maybe_free(r);
}

static plink *
link_new(tn_repl *r, bool served)
{
    plink *l = tn_xcalloc(1, sizeof *l);
    l->r = r;
    l->served = served;
    tn_buf_init(&l->in, (size_t)r->conf.max_record + MAX_CONTROL + FRAME_HDR);
    tn_buf_init(&l->cin, 1u << 20);
    tn_buf_init(&l->cout, SIZE_MAX);
    tn_buf_init(&l->pend, SIZE_MAX);
    tn_tls_ctx *x = served ? r->conf.tls_server : r->conf.tls_client;
    if (x)
        l->tls = tn_tls_new(x, &l->cout);
    uv_tcp_init(r->conf.loop, &l->tcp);
    l->tcp.data = l;
    r->handles++;
    return l;
}

static void
link_close(plink *l)
{
    if (l->closing)
        return;
    l->closing = true;
    tn_repl *r = l->r;
    if (r->sb == l) {
        r->sb = NULL;
        tn_store_cursor_close(r->cur);
        r->cur = NULL;
        r->tapq.len = 0;
        if (r->mode == R_ACTIVE && r->sync == S_PAIRED)
            r->down_since = uv_now(r->conf.loop);
    }
    if (r->up == l)
        r->up = NULL;
    uv_close((uv_handle_t *)&l->tcp, on_link_closed);
}

static void
on_written(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    plink *l = w->l;
    l->inflight -= w->buf.len;
    tn_buf_fini(&w->buf);
    free(w);
    if (status < 0) {
        link_close(l);
        return;
    }
    if (!l->closing && l->served && l->r->sb == l)
        ship(l->r);
}

static void write_buf(plink *l, tn_buf *buf);

/* TLS: what OpenSSL wrote (handshake, records, alerts) goes out. */
static void
flush_cout(plink *l)
{
    if (l->cout.len)
        write_buf(l, &l->cout);
}

/* Sends buf (a frame: FRAME_HDR bytes reserved at its start, filled here); takes it. */
static void
send_frame(plink *l, uint8_t type, tn_buf *buf)
{
    buf->data[0] = type;
    put32(buf->data + 1, (uint32_t)(buf->len - FRAME_HDR));
    if (l->tls) {
        if (!tn_tls_ready(l->tls)) {
            tn_assert(tn_buf_append(&l->pend, buf->data, buf->len) == 0);
        } else if (tn_tls_write(l->tls, buf->data, buf->len) != 0) {
            link_close(l);
        }
        tn_buf_fini(buf);
        tn_buf_init(buf, SIZE_MAX);
        if (!l->closing)
            flush_cout(l);
        return;
    }
    write_buf(l, buf);
}

/* Writes buf's bytes as they are; takes them (buf is left empty). */
static void
write_buf(plink *l, tn_buf *buf)
{
    wreq *w = tn_xcalloc(1, sizeof *w);
    w->l = l;
    w->buf = *buf;
    tn_buf_init(buf, buf->max);
    l->inflight += w->buf.len;
    uv_buf_t b = uv_buf_init((char *)w->buf.data, (unsigned)w->buf.len);
    if (uv_write(&w->req, (uv_stream_t *)&l->tcp, &b, 1, on_written) != 0) {
        l->inflight -= w->buf.len;
        tn_buf_fini(&w->buf);
        free(w);
        link_close(l);
    }
}

static void
frame_begin(tn_buf *b, size_t max)
{
    tn_buf_init(b, max);
    tn_assert(tn_buf_append(b, "\0\0\0\0\0", FRAME_HDR) == 0);
}

static void
add(tn_buf *b, const void *p, size_t n)
{
    tn_assert(tn_buf_append(b, p, n) == 0);
}

static void
add64(tn_buf *b, uint64_t v)
{
    uint8_t x[8];
    put64(x, v);
    add(b, x, 8);
}

static void
add_name(tn_buf *b, const char *name)
{
    size_t n = strlen(name);
    uint8_t x[2] = {(uint8_t)n, (uint8_t)(n >> 8)};
    add(b, x, 2);
    add(b, name, n);
}

static void
add_hist(tn_buf *b, const epoch_ent *h, size_t n)
{
    uint8_t x[4];
    put32(x, (uint32_t)n);
    add(b, x, 4);
    for (size_t i = 0; i < n; i++) {
        add64(b, h[i].epoch);
        add64(b, h[i].first);
    }
}

static void
send_simple(plink *l, uint8_t type, const uint64_t *v)
{
    tn_buf b;
    frame_begin(&b, SIZE_MAX);
    if (v)
        add64(&b, *v);
    send_frame(l, type, &b);
}

/* ---- the active ---- */

static uint64_t
gate(void *arg)
{
    tn_repl *r = arg;
    if (r->mode != R_ACTIVE || !tn_lease_valid(r->lease))
        return 0;
    if (r->conf.async || r->sync == S_ALONE)
        return UINT64_MAX;
    return r->acked;
}

/* Records as far as the socket takes them: from the tap when the next one is there, else from
 * the journal files (up to where the tap's run starts). */
static void
ship(tn_repl *r)
{
    plink *l = r->sb;
    while (l && !l->closing && l->inflight < MAX_INFLIGHT) {
        tn_buf b;
        if (r->tapq.len && r->next >= r->tap_first && r->next <= r->tap_last) {
            size_t off = 0;
            for (uint64_t k = r->tap_first; k < r->next; k++) /* sent from the files already */
                off += (size_t)PAD8((uint64_t)TN_STORE_HEADER + get32(r->tapq.data + off + 4));
            frame_begin(&b, SIZE_MAX);
            add(&b, r->tapq.data + off, r->tapq.len - off);
            r->next = r->tap_last + 1;
            r->next_pos = r->tap_end;
            r->tapq.len = 0;
            r->cur_stale = true;
            send_frame(l, F_RECORDS, &b);
            continue;
        }
        if (r->cur_stale || !r->cur) {
            if (tn_store_written_lsn(r->store) < r->next)
                return; /* not written yet: the store's notify brings us back */
            tn_store_cursor_close(r->cur);
            r->cur = NULL;
            if (tn_store_cursor_open_at(r->store, &r->next_pos, r->next, &r->cur) != 0) {
                tn_log_error("PAIR-LINK", "standby %s: cannot read the journal at LSN %" PRIu64,
                             l->name, r->next);
                link_close(l);
                return;
            }
            r->cur_stale = false;
        }
        uint64_t upto = r->tapq.len && r->tap_first > r->next ? r->tap_first - 1 : UINT64_MAX;
        frame_begin(&b, SIZE_MAX);
        uint64_t next;
        int n = tn_store_cursor_read(r->cur, &b, SEND_CHUNK, upto, &next);
        if (n <= 0) {
            tn_buf_fini(&b);
            if (n < 0) {
                tn_log_error("PAIR-LINK",
                             "standby %s: cannot read the journal to send it (%s); dropping "
                             "the link",
                             l->name, tn_strerror(n));
                link_close(l);
            }
            return;
        }
        r->next = next;
        tn_store_cursor_pos(r->cur, &r->next_pos);
        send_frame(l, F_RECORDS, &b);
    }
}

/* The store appends a record (under its lock: copy only). */
static void
on_tap(void *arg, uint64_t lsn, const uint8_t *rec, size_t size, const tn_store_pos *pos)
{
    tn_repl *r = arg;
    if (!r->sb || r->mode != R_ACTIVE)
        return;
    bool fits = rec && size <= TAP_MAX_REC && r->tapq.len + size <= TAP_LIMIT;
    if (!fits || (r->tapq.len && lsn != r->tap_last + 1))
        r->tapq.len = 0; /* the run ends: what it held is read from the files */
    if (!fits)
        return;
    if (!r->tapq.len)
        r->tap_first = lsn;
    tn_assert(tn_buf_append(&r->tapq, rec, size) == 0);
    r->tap_last = lsn;
    r->tap_end = (tn_store_pos){pos->seg, pos->off + pos->size, 0};
    r->tap_due = true;
}

static void
on_prepare(uv_prepare_t *h)
{
    tn_repl *r = h->data;
    if (r->tap_due) {
        r->tap_due = false;
        ship(r);
    }
}

static void
recorded_sync(void *arg, bool ok)
{
    tn_repl *r = arg;
    r->recording = false;
    if (!ok || r->mode != R_ACTIVE)
        return;
    tn_log_info("PAIR-SYNC", "standby %s is in sync at LSN %" PRIu64 " (epoch %" PRIu64 ")",
                r->sb_name, r->acked, r->epoch);
    if (r->sb && strcmp(r->sb->name, r->sb_name) == 0)
        send_simple(r->sb, F_INSYNC, &r->epoch);
}

static void
recorded_alone(void *arg, bool ok)
{
    tn_repl *r = arg;
    r->recording = false;
    if (!ok || r->mode != R_ACTIVE)
        return;
    r->sync = S_ALONE;
    r->behind_since = r->down_since = 0;
    if (r->sb) /* still connected (slow, or its link stalled): it is catching up again */
        send_simple(r->sb, F_OUTOFSYNC, &r->epoch);
    tn_log_warn("PAIR-ALONE",
                "standby %s out of sync for %u ms: going on alone (epoch %" PRIu64
                "; confirming on this node only until it catches up)",
                r->sb_name, r->conf.alone_ms, r->epoch);
    tn_store_poll(r->store);
}

/* Caught up: nothing left to send and everything acknowledged. Then its ACKs gate confirms
 * from now on (not with --pair-async: confirms never wait for it), and the witness records it
 * in sync, so it may be promoted; one whose ACKs stop is dropped again (check_standby), in
 * async mode too, so a dead standby is never promoted. */
static void
maybe_in_sync(tn_repl *r)
{
    if (r->sync != S_ALONE || r->recording || !r->sb)
        return;
    uint64_t written = tn_store_written_lsn(r->store);
    if (r->acked < written)
        return;
    r->sync = S_PAIRED;
    r->recording = true;
    r->behind_since = r->down_since = 0;
    snprintf(r->sb_name, sizeof r->sb_name, "%s", r->sb->name);
    tn_lease_set_standby(r->lease, r->sb_name, recorded_sync, r);
}

uint64_t
tn_repl__start_for(const epoch_ent *ha, size_t na, uint64_t written, uint64_t oldest, uint64_t last,
                   const epoch_ent *h, size_t n, bool *reset)
{
    *reset = false;
    if (last == 0) {
        if (oldest <= 1)
            return 1;
        *reset = true;
        return oldest;
    }
    /* The epoch of the standby's last record, and where that epoch ends here. */
    size_t i = n;
    while (i > 0 && h[i - 1].first > last)
        i--;
    bool ok = false;
    if (i > 0) {
        const epoch_ent *e = &h[i - 1];
        for (size_t k = 0; k < na; k++) {
            if (ha[k].epoch != e->epoch)
                continue;
            uint64_t end = k + 1 < na ? ha[k + 1].first - 1 : UINT64_MAX;
            ok = ha[k].first == e->first && last <= end && last <= written && last + 1 >= oldest;
            break;
        }
    }
    if (ok)
        return last + 1;
    *reset = true;
    return oldest;
}

int
tn_repl__parse_hello(const uint8_t *p, size_t len, char name[65], uint64_t *last, epoch_ent **hist,
                     size_t *n)
{
    rd r = {p, len, false};
    rd_name(&r, name);
    *last = rd_u64(&r);
    *hist = NULL;
    *n = 0;
    if (!r.bad)
        *hist = rd_hist(&r, n);
    if (r.bad || r.n) {
        free(*hist);
        *hist = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

int
tn_repl__parse_welcome(const uint8_t *p, size_t len, char name[65], uint64_t *epoch, bool *reset,
                       uint64_t *start, epoch_ent **hist, size_t *n)
{
    rd r = {p, len, false};
    rd_name(&r, name);
    *epoch = rd_u64(&r);
    uint8_t mode = rd_u8(&r);
    *start = rd_u64(&r);
    *reset = mode == 1;
    *hist = NULL;
    *n = 0;
    if (!r.bad)
        *hist = rd_hist(&r, n);
    if (r.bad || r.n || mode > 1 || *start == 0) {
        free(*hist);
        *hist = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

static void
on_hello(plink *l, const uint8_t *pl, size_t len)
{
    tn_repl *r = l->r;
    char name[65];
    uint64_t last;
    size_t n = 0;
    epoch_ent *h = NULL;
    if (tn_repl__parse_hello(pl, len, name, &last, &h, &n) != 0) {
        tn_log_warn("PAIR-LINK", "a standby sent a malformed HELLO; closing");
        link_close(l);
        return;
    }
    if (r->mode != R_ACTIVE || !tn_lease_valid(r->lease)) {
        /* Not (or no longer) active by its own clock: a node whose lease ended while it was
         * frozen must not tell a standby what its journal should hold (the model in
         * cluster/model found a standby wiping a confirmed message that way). */
        free(h);
        send_simple(l, F_NOTACTIVE, NULL);
        link_close(l);
        return;
    }
    if (r->sb && r->sb != l)
        link_close(r->sb); /* the standby came back on a new connection */
    bool reset;
    uint64_t written = tn_store_written_lsn(r->store);
    uint64_t first_seg = tn_store_first_segment(r->store);
    uint64_t start = tn_repl__start_for(r->hist, r->n_hist, written,
                                        first_seg ? first_seg : written + 1, last, h, n, &reset);
    free(h);
    tn_store_cursor *cur = NULL;
    if (tn_store_cursor_open(r->store, start, &cur) != 0) {
        tn_log_error("PAIR-LINK", "standby %s: cannot read the journal from LSN %" PRIu64, name,
                     start);
        link_close(l);
        return;
    }
    snprintf(l->name, sizeof l->name, "%s", name);
    l->welcomed = true;
    r->sb = l;
    tn_store_cursor_close(r->cur);
    r->cur = cur;
    r->cur_stale = false;
    r->next = start;
    r->tapq.len = 0;
    r->acked = start - 1;
    r->down_since = 0;
    tn_log_info("PAIR-STANDBY",
                "standby %s connected (its journal ends at LSN %" PRIu64 "): %s from LSN %" PRIu64,
                name, last, reset ? "it copies the journal anew" : "records follow", start);
    tn_buf b;
    frame_begin(&b, SIZE_MAX);
    add_name(&b, r->node);
    add64(&b, r->epoch);
    uint8_t mode = reset;
    add(&b, &mode, 1);
    add64(&b, start);
    add_hist(&b, r->hist, r->n_hist);
    send_frame(l, F_WELCOME, &b);
    ship(r);
    maybe_in_sync(r); /* nothing to copy: in sync at once */
}

static void
on_ack(plink *l, rd *p)
{
    tn_repl *r = l->r;
    uint64_t lsn = rd_u64(p);
    if (p->bad || r->sb != l)
        return;
    if (lsn > r->acked)
        r->acked = lsn;
    maybe_in_sync(r);
    tn_store_poll(r->store);
}

/* Every CHECK_MS: an active whose standby is overdue goes on alone. */
static void
check_standby(tn_repl *r)
{
    if (r->sync != S_PAIRED || r->recording)
        return;
    uint64_t now = uv_now(r->conf.loop);
    uint64_t written = tn_store_written_lsn(r->store);
    if (r->acked >= r->behind_mark) {
        r->behind_since = r->acked < written ? now : 0;
        r->behind_mark = written;
    } else if (!r->behind_since) {
        r->behind_since = now;
    }
    bool overdue = (r->behind_since && now - r->behind_since > r->conf.alone_ms) ||
                   (!r->sb && r->down_since && now - r->down_since > r->conf.alone_ms);
    if (!overdue)
        return;
    r->sync = S_GOING_ALONE; /* the gate stays at the last ACK until the witness records it */
    r->recording = true;
    tn_lease_set_standby(r->lease, NULL, recorded_alone, r);
}

/* ---- the standby ---- */

static void standby_connect(tn_repl *r);

static void
on_standby_durable(void *arg, int status)
{
    tn_repl *r = arg;
    if (status != 0 || !r->sstore || !r->up)
        return;
    uint64_t d = tn_store_durable_lsn(r->sstore);
    if (d > r->s_acked_sent) {
        r->s_acked_sent = d;
        send_simple(r->up, F_ACK, &d);
    }
}

static int
skip_record(void *arg, uint64_t lsn, uint16_t type, const uint8_t *p, uint32_t len)
{
    (void)arg;
    (void)lsn;
    (void)type;
    (void)p;
    (void)len;
    return 0;
}

static int
open_sstore(tn_repl *r, uint64_t first_lsn, char *err, size_t errlen)
{
    tn_store_conf c = r->store_conf;
    c.first_lsn = first_lsn;
    c.notify_written = false;
    /* What arrives is written and synced by this loop at the end of each read, and
     * acknowledged at once: no thread hand-off either way (a standby serves no client, its loop
     * has time to wait for the disk). The interval policy keeps its writer thread. */
    c.inline_writes = c.sync != TN_SYNC_INTERVAL;
    if (tn_store_open(&c, &r->sstore, err, errlen) != 0)
        return -1;
    if (tn_store_replay(r->sstore, skip_record, NULL, err, errlen) != 0 ||
        tn_store_start(r->sstore) != 0) {
        tn_store_close(r->sstore);
        r->sstore = NULL;
        return -1;
    }
    r->s_acked_sent = tn_store_durable_lsn(r->sstore);
    return 0;
}

static void
on_welcome(plink *l, const uint8_t *pl, size_t len)
{
    tn_repl *r = l->r;
    char name[65];
    uint64_t epoch, start;
    bool reset;
    size_t n = 0;
    epoch_ent *h = NULL;
    if (tn_repl__parse_welcome(pl, len, name, &epoch, &reset, &start, &h, &n) != 0) {
        tn_log_warn("PAIR-LINK", "the active sent a malformed WELCOME; closing");
        link_close(l);
        return;
    }
    char err[256] = "";
    if (r->n_hist && epoch < r->hist[r->n_hist - 1].epoch) {
        /* A node of a superseded epoch (frozen, not yet fenced) must not make this journal
         * start over. */
        tn_log_warn("PAIR-LINK",
                    "%s claims to be active at epoch %" PRIu64
                    ", but this node has seen epoch %" PRIu64 "; closing",
                    name, epoch, r->hist[r->n_hist - 1].epoch);
        free(h);
        link_close(l);
        return;
    }
    if (reset) {
        tn_log_warn("PAIR-RESET",
                    "the active %s (epoch %" PRIu64
                    ") does not hold this journal's end (LSN %" PRIu64
                    "): copying its journal anew from LSN %" PRIu64,
                    name, epoch, tn_store_last_lsn(r->sstore), start);
        tn_store_close(r->sstore);
        r->sstore = NULL;
        if (tn_store_wipe(r->jdir, err, sizeof err) != 0 ||
            open_sstore(r, start, err, sizeof err)) {
            tn_log_error("PAIR-RESET", "cannot start the journal anew: %s", err);
            free(h);
            link_close(l);
            return;
        }
    } else if (start != tn_store_last_lsn(r->sstore) + 1) {
        tn_log_warn("PAIR-LINK",
                    "the active sends from LSN %" PRIu64 ", this journal ends at %" PRIu64
                    "; closing",
                    start, tn_store_last_lsn(r->sstore));
        free(h);
        link_close(l);
        return;
    }
    free(r->hist);
    r->hist = h;
    r->n_hist = n;
    if (hist_save(r) != 0) {
        tn_log_error("PAIR-LINK", "%s/pair-epochs: cannot write: %s", r->data_dir, strerror(errno));
        link_close(l);
        return;
    }
    l->welcomed = true;
    r->s_epoch = epoch;
    r->logged_down = false;
    if (r->conf.role)
        r->conf.role(r->conf.arg, TN_ROLE_CATCHING_UP, epoch);
}

static void
on_records(plink *l, const uint8_t *p, size_t n)
{
    tn_repl *r = l->r;
    uint64_t last = 0;
    while (n) {
        uint64_t lsn;
        uint16_t type;
        const uint8_t *pl;
        uint32_t len;
        size_t size;
        int rc = tn_store_record_check(p, n, r->conf.max_record, &lsn, &type, &pl, &len, &size);
        uint64_t want = tn_store_last_lsn(r->sstore) + 1;
        if (rc != 0 || lsn != want) {
            tn_log_warn("PAIR-LINK",
                        "the active sent a bad record (LSN %" PRIu64 ", expected %" PRIu64
                        "); closing",
                        rc == 0 ? lsn : 0, want);
            link_close(l);
            return;
        }
        uint64_t got;
        if (tn_store_append(r->sstore, type, pl, len, &got) != 0) {
            tn_log_error("PAIR-LINK", "cannot append to this standby's journal; closing the plink");
            link_close(l);
            return;
        }
        last = got;
        p += size;
        n -= size;
    }
    if (last) {
        tn_store_when_durable(r->sstore, last, on_standby_durable, r);
        r->s_flush = true; /* at the end of this read (standby_flush) */
    }
}

/* Inline writes: what this read brought is written, synced and acknowledged now. */
static void
standby_flush(tn_repl *r)
{
    if (!r->s_flush || !r->sstore)
        return;
    r->s_flush = false;
    if (r->store_conf.sync != TN_SYNC_INTERVAL)
        tn_store_flush(r->sstore);
    tn_store_poll(r->sstore);
}

/* ---- frames in ---- */

static void
on_frame(plink *l, uint8_t type, const uint8_t *p, size_t n)
{
    tn_repl *r = l->r;
    rd rr = {p, n, false};
    if (l->served) {
        if (type == F_HELLO && !l->welcomed)
            on_hello(l, p, n);
        else if (type == F_ACK && l->welcomed)
            on_ack(l, &rr);
        else
            link_close(l);
        return;
    }
    switch (type) {
    case F_BEAT:
        if (!l->welcomed)
            link_close(l);
        break;
    case F_WELCOME:
        if (!l->welcomed)
            on_welcome(l, p, n);
        else
            link_close(l);
        break;
    case F_RECORDS:
        if (l->welcomed)
            on_records(l, p, n);
        else
            link_close(l);
        break;
    case F_INSYNC:
    case F_OUTOFSYNC: {
        uint64_t e = rd_u64(&rr);
        if (!rr.bad && l->welcomed && e == r->s_epoch && r->conf.role)
            r->conf.role(r->conf.arg, type == F_INSYNC ? TN_ROLE_STANDBY : TN_ROLE_CATCHING_UP, e);
        break;
    }
    case F_NOTACTIVE:
    default:
        link_close(l);
        break;
    }
    if (l->welcomed && !l->closing)
        r->heard = uv_now(r->conf.loop); /* an active's frame (not a NOTACTIVE) */
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    plink *l = h->data;
    tn_buf *b = l->tls ? &l->cin : &l->in; /* ciphertext first, with TLS */
    size_t want = 64u << 10;
    uint8_t *p = tn_buf_reserve(b, want);
    if (!p) {
        want = b->max - b->len;
        p = want ? tn_buf_reserve(b, want) : NULL;
    }
    *buf = uv_buf_init((char *)p, p ? (unsigned)want : 0);
}

/* TLS: decrypts what arrived into l->in (the handshake too); -1 when the link must close. */
static int
tls_in(plink *l, size_t n)
{
    bool was_ready = tn_tls_ready(l->tls);
    tn_buf_commit(&l->cin, n);
    tn_tls_input(l->tls, l->cin.data, l->cin.len);
    ssize_t r;
    for (;;) {
        size_t want = 64u << 10;
        uint8_t *p = tn_buf_reserve(&l->in, want);
        if (!p) {
            want = l->in.max - l->in.len;
            p = want ? tn_buf_reserve(&l->in, want) : NULL;
        }
        if (!p)
            return -1; /* a frame larger than any may be */
        r = tn_tls_read(l->tls, p, want);
        if (r <= 0)
            break;
        tn_buf_commit(&l->in, (size_t)r);
    }
    l->cin.len = 0; /* all taken (OpenSSL keeps a partial record itself) */
    flush_cout(l);
    if (r == TN_EPROTO) {
        /* Once per 10 s: a standby retries every RETRY_MS. */
        uint64_t now = uv_now(l->r->conf.loop);
        if (!l->r->tls_logged || now - l->r->tls_logged >= 10000) {
            l->r->tls_logged = now;
            tn_log_warn("PAIR-LINK", "TLS with the peer failed: %s; closing", tn_tls_error(l->tls));
        }
        return -1;
    }
    if (r == TN_ECLOSED)
        return -1;
    if (!was_ready && tn_tls_ready(l->tls) && l->pend.len) {
        if (tn_tls_write(l->tls, l->pend.data, l->pend.len) != 0)
            return -1;
        l->pend.len = 0;
        flush_cout(l);
    }
    return 0;
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    plink *l = s->data;
    if (nread < 0) {
        link_close(l);
        return;
    }
    if (nread == 0) {
        if (l->in.len == l->in.max || l->cin.len == l->cin.max)
            link_close(l); /* a frame larger than any may be */
        return;
    }
    if (l->tls) {
        if (tls_in(l, (size_t)nread) != 0) {
            link_close(l);
            return;
        }
    } else {
        tn_buf_commit(&l->in, (size_t)nread);
    }
    size_t off = 0;
    while (!l->closing && l->in.len - off >= FRAME_HDR) {
        uint8_t type = l->in.data[off];
        uint32_t len = get32(l->in.data + off + 1);
        size_t max = type == F_RECORDS ? l->in.max - FRAME_HDR : MAX_CONTROL;
        if (len > max) {
            tn_log_warn("PAIR-LINK", "frame of %u bytes over the limit; closing", len);
            link_close(l);
            return;
        }
        if (l->in.len - off - FRAME_HDR < len)
            break;
        on_frame(l, type, l->in.data + off + FRAME_HDR, len);
        off += FRAME_HDR + (size_t)len;
    }
    standby_flush(l->r);
    if (!l->closing)
        tn_buf_consume(&l->in, off);
}

static void
on_accept(uv_stream_t *server, int status)
{
    tn_repl *r = server->data;
    if (status < 0 || r->freeing)
        return;
    plink *l = link_new(r, true);
    if (uv_accept(server, (uv_stream_t *)&l->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&l->tcp, on_alloc, on_read) != 0) {
        link_close(l);
        return;
    }
    uv_tcp_nodelay(&l->tcp, 1);
}

static void
send_hello(plink *l)
{
    tn_repl *r = l->r;
    if (l->hello_sent)
        return;
    l->hello_sent = true;
    tn_buf b;
    frame_begin(&b, SIZE_MAX);
    add_name(&b, r->node);
    add64(&b, tn_store_last_lsn(r->sstore));
    add_hist(&b, r->hist, r->n_hist);
    send_frame(l, F_HELLO, &b);
}

static void
hello_when_durable(void *arg, int status)
{
    tn_repl *r = arg;
    if (status == 0 && r->up && r->up->connected && !r->up->closing && r->sstore &&
        tn_store_durable_lsn(r->sstore) >= tn_store_last_lsn(r->sstore))
        send_hello(r->up);
}

static void
on_connected(uv_connect_t *req, int status)
{
    plink *l = req->data;
    tn_repl *r = l->r;
    if (status < 0 || l->closing || r->mode != R_STANDBY) {
        if (status < 0 && !r->logged_down) {
            r->logged_down = true;
            tn_log_info("PAIR-LINK", "cannot reach the peer %s:%u (%s); retrying every %u ms",
                        r->peer_host, r->conf.peer_port, uv_strerror(status), RETRY_MS);
        }
        link_close(l);
        return;
    }
    uv_tcp_nodelay(&l->tcp, 1);
    if (uv_read_start((uv_stream_t *)&l->tcp, on_alloc, on_read) != 0) {
        link_close(l);
        return;
    }
    if (l->tls) {
        uint8_t none[1];
        tn_tls_read(l->tls, none, 0); /* the ClientHello */
        flush_cout(l);
    }
    l->connected = true;
    /* The journal's end goes in the HELLO only once it is durable: the active counts it as
     * acknowledged (a record received but not yet synced, then lost in a crash, would count as
     * held here). */
    uint64_t last = tn_store_last_lsn(r->sstore);
    if (tn_store_durable_lsn(r->sstore) < last) {
        tn_store_when_durable(r->sstore, last, hello_when_durable, r);
        r->s_flush = true;
        standby_flush(r);
    } else {
        send_hello(l);
    }
}

static void
standby_connect(tn_repl *r)
{
    if (r->up || r->mode != R_STANDBY || r->freeing)
        return;
    struct sockaddr_storage sa;
    if (uv_ip4_addr(r->peer_host, r->conf.peer_port, (struct sockaddr_in *)&sa) != 0 &&
        uv_ip6_addr(r->peer_host, r->conf.peer_port, (struct sockaddr_in6 *)&sa) != 0)
        return; /* checked in tn_repl_new */
    plink *l = link_new(r, false);
    l->conn.data = l;
    r->up = l;
    if (uv_tcp_connect(&l->conn, &l->tcp, (struct sockaddr *)&sa, on_connected) != 0)
        link_close(l);
}

static void
on_timer(uv_timer_t *t)
{
    tn_repl *r = t->data;
    if (r->mode == R_STANDBY && !r->up)
        standby_connect(r);
    else if (r->mode == R_ACTIVE) {
        check_standby(r);
        maybe_in_sync(r);
        if (r->sb && r->sb->welcomed && !r->sb->closing)
            send_simple(r->sb, F_BEAT, &r->epoch);
    }
}

static void
on_wake(uv_async_t *a)
{
    tn_repl *r = a->data;
    if (r->sstore)
        tn_store_poll(r->sstore);
}

static void
sstore_notify(void *arg)
{
    uv_async_send(arg);
}

/* ---- the interface ---- */

int
tn_repl_new(const tn_repl_conf *conf, tn_repl **out, uint16_t *bound, char *err, size_t errlen)
{
    struct sockaddr_storage sa, peer;
    if (uv_ip4_addr(conf->listen_addr, conf->listen_port, (struct sockaddr_in *)&sa) != 0 &&
        uv_ip6_addr(conf->listen_addr, conf->listen_port, (struct sockaddr_in6 *)&sa) != 0) {
        snprintf(err, errlen, "--pair-listen: %s is not a numeric address", conf->listen_addr);
        return -1;
    }
    if (uv_ip4_addr(conf->peer_host, conf->peer_port, (struct sockaddr_in *)&peer) != 0 &&
        uv_ip6_addr(conf->peer_host, conf->peer_port, (struct sockaddr_in6 *)&peer) != 0) {
        snprintf(err, errlen, "--pair-peer: %s is not a numeric address", conf->peer_host);
        return -1;
    }
    tn_repl *r = tn_xcalloc(1, sizeof *r);
    r->conf = *conf;
    r->node = tn_xstrdup(conf->node);
    r->peer_host = tn_xstrdup(conf->peer_host);
    r->listen_addr = tn_xstrdup(conf->listen_addr);
    r->data_dir = tn_xstrdup(conf->data_dir);
    r->conf.node = r->node;
    r->conf.peer_host = r->peer_host;
    r->conf.listen_addr = r->listen_addr;
    r->conf.data_dir = r->data_dir;
    if (!r->conf.alone_ms)
        r->conf.alone_ms = 2000;
    r->store_conf = *conf->store;
    r->jdir = tn_xstrdup(conf->store->dir);
    r->store_conf.dir = r->jdir;
    r->store_conf.notify = sstore_notify;
    r->store_conf.notify_arg = &r->wake;
    if (hist_load(r, err, errlen) != 0) {
        free(r->hist);
        free(r->node);
        free(r->peer_host);
        free(r->listen_addr);
        free(r->data_dir);
        free(r->jdir);
        free(r);
        return -1;
    }
    uv_tcp_init(conf->loop, &r->server);
    r->server.data = r;
    uv_timer_init(conf->loop, &r->timer);
    r->timer.data = r;
    uv_async_init(conf->loop, &r->wake, on_wake);
    r->wake.data = r;
    uv_prepare_init(conf->loop, &r->prep);
    r->prep.data = r;
    uv_prepare_start(&r->prep, on_prepare);
    r->handles = 4;
    tn_buf_init(&r->tapq, TAP_LIMIT);
    int rc = uv_tcp_bind(&r->server, (struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&r->server, 16, on_accept);
    if (rc != 0) {
        snprintf(err, errlen, "--pair-listen %s:%u: %s", conf->listen_addr, conf->listen_port,
                 uv_strerror(rc));
        tn_repl_free(r);
        return -1;
    }
    struct sockaddr_storage got;
    int len = sizeof got;
    uv_tcp_getsockname(&r->server, (struct sockaddr *)&got, &len);
    if (bound)
        *bound = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                                 : ((struct sockaddr_in *)&got)->sin_port);
    uv_timer_start(&r->timer, on_timer, CHECK_MS, CHECK_MS);
    *out = r;
    return 0;
}

int
tn_repl_standby_start(tn_repl *r, char *err, size_t errlen)
{
    if (!r->sstore && open_sstore(r, 0, err, errlen) != 0)
        return -1;
    r->mode = R_STANDBY;
    standby_connect(r);
    return 0;
}

void
tn_repl_standby_stop(tn_repl *r)
{
    r->mode = R_IDLE;
    if (r->up)
        link_close(r->up);
    tn_store_close(r->sstore); /* everything received is written and synced */
    r->sstore = NULL;
}

int
tn_repl_active_start(tn_repl *r, tn_store *store, tn_lease *lease, uint64_t epoch, char *err,
                     size_t errlen)
{
    r->store = store;
    r->lease = lease;
    r->epoch = epoch;
    r->sync = S_ALONE; /* a grant records no standby: it has to catch up first */
    r->acked = 0;
    r->hist = tn_xrealloc(r->hist, (r->n_hist + 1) * sizeof *r->hist);
    r->hist[r->n_hist++] = (epoch_ent){epoch, tn_store_last_lsn(store) + 1};
    if (hist_save(r) != 0) {
        snprintf(err, errlen, "%s/pair-epochs: cannot write: %s", r->data_dir, strerror(errno));
        return -1;
    }
    tn_store_set_gate(store, gate, r);
    tn_store_set_tap(store, on_tap, r);
    r->mode = R_ACTIVE;
    return 0;
}

void
tn_repl_poll(tn_repl *r)
{
    if (r->mode == R_ACTIVE && r->sb && tn_store_error(r->store)) {
        /* A failed write drops records the standby may have had from the tap, and their LSNs
         * are used again: it starts over from what this journal holds. */
        tn_log_warn("PAIR-LINK", "journal write failed: the standby %s reconnects and catches up",
                    r->sb->name);
        link_close(r->sb);
        return;
    }
    if (r->mode == R_ACTIVE) {
        ship(r);
        maybe_in_sync(r);
    }
}

uint64_t
tn_repl_heard(const tn_repl *r, bool *linked)
{
    if (linked)
        *linked = r->mode == R_STANDBY && r->up && r->up->welcomed && !r->up->closing;
    return r->heard;
}

void
tn_repl_fence(tn_repl *r)
{
    if (r->mode != R_ACTIVE)
        return;
    r->mode = R_FENCED; /* the gate answers 0 from now on */
    if (r->sb)
        link_close(r->sb);
}

void
tn_repl_free(tn_repl *r)
{
    if (!r)
        return;
    r->freeing = true;
    if (r->sb)
        link_close(r->sb);
    if (r->up)
        link_close(r->up);
    tn_store_cursor_close(r->cur);
    r->cur = NULL;
    if (r->store) {
        tn_store_set_gate(r->store, NULL, NULL);
        tn_store_set_tap(r->store, NULL, NULL);
    }
    tn_store_close(r->sstore);
    r->sstore = NULL;
    uv_close((uv_handle_t *)&r->server, on_handle_closed);
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->wake, on_handle_closed);
    uv_close((uv_handle_t *)&r->prep, on_handle_closed);
}
