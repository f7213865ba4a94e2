/*
 * The witness: the lease's state machine (sans-IO), its durable state file, and the server that
 * runs the state machine over TCP on a libuv loop. The protocol and the rules are in cluster.h.
 *
 * Everything here runs on the loop thread; the fsync of the state file is done synchronously on
 * it, which is fine for a process that serves two nodes and writes only on a grant or a change
 * of standby.
 */
#include "cluster/cluster.h"
#include "cluster/cluster_int.h"
#include "core/base/base.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STATE_FILE "witness.state"
#define STATE_MAGIC "tern-witness 1"
/* A client that sends requests without reading the replies is cut off past this much unsent
 * output, so the witness' memory stays bounded. */
#define MAX_UNSENT 65536

/* ---- shared helpers ---- */

bool
tn_cluster__name_ok(const char *s, size_t len)
{
    if (len == 0 || len > TN_CLUSTER__NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    /* "-" alone stands for "none" in RENEW and in the state file. */
    return !(len == 1 && s[0] == '-');
}

bool
tn_cluster__parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

int
tn_cluster__split(const char *line, size_t len, const char **f, size_t *flen, int max)
{
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && line[i] != ' ')
            continue;
        if (i == start || n == max)
            return -1;
        f[n] = line + start;
        flen[n] = i - start;
        n++;
        start = i + 1;
    }
    return n;
}

/* ---- the state machine ---- */

static bool
field_is(const char *f, size_t flen, const char *word)
{
    return flen == strlen(word) && memcmp(f, word, flen) == 0;
}

static bool
name_eq(const char *name, const char *f, size_t flen)
{
    return strlen(name) == flen && memcmp(name, f, flen) == 0;
}

static void
set_name(char *dst, const char *f, size_t flen)
{
    memcpy(dst, f, flen);
    dst[flen] = '\0';
}

static int
bad(char *reply, size_t reply_len, const char *why)
{
    snprintf(reply, reply_len, "ERR %s\n", why);
    return -1;
}

int
tn_witness_handle(tn_witness_state *st, uint32_t lease_ms, uint64_t conn, uint64_t now_ns,
                  const char *line, size_t len, char *reply, size_t reply_len, bool *changed)
{
    const char *f[5];
    size_t fl[5];
    uint64_t epoch = 0;

    tn_assert(conn != 0 && reply_len >= TN_CLUSTER__REPLY_MAX);
    *changed = false;
    /* Lazily: nothing else ends a lease by time in the state machine. */
    if (st->live && now_ns >= st->expires) {
        st->live = false;
        st->conn = 0;
    }
    if (len >= TN_CLUSTER__LINE_MAX)
        return bad(reply, reply_len, "line too long");
    int n = tn_cluster__split(line, len, f, fl, 5);
    if (n < 1)
        return bad(reply, reply_len, "malformed line");
    const char *holder = st->holder[0] ? st->holder : "-";

    if (field_is(f[0], fl[0], "ACQUIRE")) {
        if (n != 2)
            return bad(reply, reply_len, "ACQUIRE takes <node>");
        if (!tn_cluster__name_ok(f[1], fl[1]))
            return bad(reply, reply_len, "bad node name");
        if (st->live) {
            /* With the time left: the asker comes back as the lease ends, not a renewal
             * period later (a frozen active is replaced sooner). */
            uint64_t left_ms = (st->expires - now_ns + 999999) / 1000000;
            snprintf(reply, reply_len, "BUSY %" PRIu64 " %s %" PRIu64 "\n", st->epoch, holder,
                     left_ms);
            return 0;
        }
        if (st->holder[0] != '\0' && !name_eq(st->holder, f[1], fl[1]) &&
            !name_eq(st->standby, f[1], fl[1])) {
            snprintf(reply, reply_len, "BEHIND %" PRIu64 " %s\n", st->epoch, holder);
            return 0;
        }
        /* A u64 epoch incremented once per grant does not wrap in practice; refusing beats
         * wrapping to 0, which would break "strictly increasing". */
        if (st->epoch == UINT64_MAX)
            return bad(reply, reply_len, "epoch exhausted");
        st->epoch++;
        set_name(st->holder, f[1], fl[1]);
        st->standby[0] = '\0'; /* the other node must catch up with the new active first */
        st->live = true;
        st->expires = now_ns + (uint64_t)lease_ms * 1000000u;
        st->conn = conn;
        *changed = true;
        snprintf(reply, reply_len, "GRANT %" PRIu64 " %" PRIu32 "\n", st->epoch, lease_ms);
        return 0;
    }
    if (field_is(f[0], fl[0], "RENEW")) {
        if (n != 4)
            return bad(reply, reply_len, "RENEW takes <node> <epoch> <standby>");
        if (!tn_cluster__name_ok(f[1], fl[1]))
            return bad(reply, reply_len, "bad node name");
        if (!tn_cluster__parse_u64(f[2], fl[2], &epoch))
            return bad(reply, reply_len, "bad epoch");
        bool none = field_is(f[3], fl[3], "-");
        if (!none && !tn_cluster__name_ok(f[3], fl[3]))
            return bad(reply, reply_len, "bad standby name");
        if (!none && fl[3] == fl[1] && memcmp(f[3], f[1], fl[1]) == 0)
            return bad(reply, reply_len, "a node cannot be its own standby");
        if (!st->live || epoch != st->epoch || !name_eq(st->holder, f[1], fl[1])) {
            snprintf(reply, reply_len, "LOST %" PRIu64 " %s\n", st->epoch, holder);
            return 0;
        }
        st->expires = now_ns + (uint64_t)lease_ms * 1000000u;
        st->conn = conn;
        if (none ? st->standby[0] != '\0' : !name_eq(st->standby, f[3], fl[3])) {
            if (none)
                st->standby[0] = '\0';
            else
                set_name(st->standby, f[3], fl[3]);
            *changed = true;
        }
        snprintf(reply, reply_len, "OK %" PRIu64 "\n", st->epoch);
        return 0;
    }
    if (field_is(f[0], fl[0], "RELEASE")) {
        if (n != 3)
            return bad(reply, reply_len, "RELEASE takes <node> <epoch>");
        if (!tn_cluster__name_ok(f[1], fl[1]))
            return bad(reply, reply_len, "bad node name");
        if (!tn_cluster__parse_u64(f[2], fl[2], &epoch))
            return bad(reply, reply_len, "bad epoch");
        if (st->live && epoch == st->epoch && name_eq(st->holder, f[1], fl[1])) {
            st->live = false;
            st->conn = 0;
        }
        snprintf(reply, reply_len, "OK %" PRIu64 "\n", st->epoch);
        return 0;
    }
    return bad(reply, reply_len, "unknown request");
}

void
tn_witness_conn_closed(tn_witness_state *st, uint64_t conn)
{
    if (st->live && st->conn == conn) {
        st->live = false;
        st->conn = 0;
    }
}

/* ---- the state file ---- */

/* One line: "tern-witness 1 <epoch> <holder|-> <standby|->\n". The magic and version let a
 * later format be told apart; the strict parse makes any damage an error, never a reset. */
int
tn_witness_state_save(const tn_witness_state *st, const char *dir, char *err, size_t errlen)
{
    char path[4096], tmp[4096], text[256];
    int fd = -1, rc = -1;

    int pn = snprintf(path, sizeof path, "%s/%s", dir, STATE_FILE);
    int tn = snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, STATE_FILE);
    if (pn < 0 || (size_t)pn >= sizeof path || tn < 0 || (size_t)tn >= sizeof tmp) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -1;
    }
    int len = snprintf(text, sizeof text, "%s %" PRIu64 " %s %s\n", STATE_MAGIC, st->epoch,
                       st->holder[0] ? st->holder : "-", st->standby[0] ? st->standby : "-");
    tn_assert(len > 0 && (size_t)len < sizeof text);

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    for (int off = 0; off < len;) {
        ssize_t w = write(fd, text + off, (size_t)(len - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errlen, "%s: %s", tmp, w < 0 ? strerror(errno) : "short write");
            goto out;
        }
        off += (int)w;
    }
    if (fsync(fd) != 0) {
        snprintf(err, errlen, "%s: fsync: %s", tmp, strerror(errno));
        goto out;
    }
    int cr = close(fd);
    fd = -1;
    if (cr != 0) {
        snprintf(err, errlen, "%s: close: %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename %s: %s", path, strerror(errno));
        goto out;
    }
    /* The rename is durable only once the folder's entry is. */
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        snprintf(err, errlen, "%s: fsync: %s", dir, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

int
tn_witness_state_load(tn_witness_state *st, const char *dir, char *err, size_t errlen)
{
    char path[4096], text[TN_CLUSTER__LINE_MAX + 1];
    const char *f[6];
    size_t fl[6];
    uint64_t epoch = 0;
    size_t len = 0;
    int rc = -1;

    memset(st, 0, sizeof *st);
    int pn = snprintf(path, sizeof path, "%s/%s", dir, STATE_FILE);
    if (pn < 0 || (size_t)pn >= sizeof path) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 0; /* a new witness: nothing granted yet */
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    for (;;) {
        ssize_t r = read(fd, text + len, sizeof text - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len == sizeof text)
            break; /* longer than any state: corrupt, below */
    }
    if (len == 0 || len == sizeof text || text[len - 1] != '\n')
        goto corrupt;
    int n = tn_cluster__split(text, len - 1, f, fl, 6);
    if (n != 5 || !field_is(f[0], fl[0], "tern-witness") || !field_is(f[1], fl[1], "1") ||
        !tn_cluster__parse_u64(f[2], fl[2], &epoch))
        goto corrupt;
    bool no_holder = field_is(f[3], fl[3], "-"), no_standby = field_is(f[4], fl[4], "-");
    if ((!no_holder && !tn_cluster__name_ok(f[3], fl[3])) ||
        (!no_standby && !tn_cluster__name_ok(f[4], fl[4])))
        goto corrupt;
    /* What save can write: a holder exactly when something was granted, a standby only with a
     * holder. */
    if (no_holder != (epoch == 0) || (no_holder && !no_standby))
        goto corrupt;
    st->epoch = epoch;
    if (!no_holder)
        set_name(st->holder, f[3], fl[3]);
    if (!no_standby)
        set_name(st->standby, f[4], fl[4]);
    rc = 0;
    goto out;
corrupt:
    /* Never reset: a witness that forgot its epoch could grant an epoch already used. */
    snprintf(err, errlen,
             "%s: corrupt witness state, not loaded (restore it, or write one whose epoch is "
             "above any node's: a new epoch must never repeat an old one)",
             path);
out:
    close(fd);
    return rc;
}

/* ---- the server ---- */

typedef struct wconn {
    uv_tcp_t tcp; /* first: the handle's address is the conn's */
    tn_witness *w;
    uint64_t id;
    char in[TN_CLUSTER__LINE_MAX]; /* a partial line; reads go straight in, so it never grows */
    size_t len;
    unsigned writes; /* replies handed to uv_write and not yet completed */
    bool closing;    /* no more requests: closed once the replies are written */
    struct wconn *prev, *next;
} wconn;

typedef struct wwrite {
    uv_write_t req;
    char text[TN_CLUSTER__REPLY_MAX];
} wwrite;

struct tn_witness {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t timer; /* fires when the live lease would expire, to log WITNESS-LOST */
    tn_witness_state st;
    uint32_t lease_ms;
    char *dir;
    uint64_t next_id;
    wconn *conns;
    int handles; /* open handles (listener, timer, connections): freed at 0 once closing */
    bool closing;
};

static void
maybe_free(tn_witness *w)
{
    if (w->closing && w->handles == 0) {
        free(w->dir);
        free(w);
    }
}

static void
handle_closed(uv_handle_t *h)
{
    tn_witness *w = h->data;
    w->handles--;
    maybe_free(w);
}

static void
conn_freed(uv_handle_t *h)
{
    wconn *c = (wconn *)h;
    tn_witness *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
    w->handles--;
    maybe_free(w);
}

/* Ends the live lease if its time is up (checked lazily and from the timer). */
static void
expire(tn_witness *w, uint64_t now)
{
    if (w->st.live && now >= w->st.expires) {
        tn_log_info("WITNESS-LOST", "lease of node=%s epoch=%" PRIu64 " expired", w->st.holder,
                    w->st.epoch);
        w->st.live = false;
        w->st.conn = 0;
    }
}

static void on_timer(uv_timer_t *t);

static void
arm_timer(tn_witness *w)
{
    if (!w->st.live) {
        uv_timer_stop(&w->timer);
        return;
    }
    uint64_t now = uv_hrtime();
    /* Rounded up; the loop's clock may lag uv_hrtime a little, and a timer that fires early
     * only re-arms itself. */
    uint64_t ms = w->st.expires > now ? (w->st.expires - now + 999999) / 1000000 : 0;
    uv_timer_start(&w->timer, on_timer, ms, 0);
}

static void
on_timer(uv_timer_t *t)
{
    tn_witness *w = t->data;
    expire(w, uv_hrtime());
    arm_timer(w);
}

static void
conn_close(wconn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, conn_freed);
}

/* No more requests from c. by_peer: the node closed it (or its process is gone): then the
 * lease ends now if c is the holder's connection (cluster.h). A connection the witness drops
 * itself (a bad request, replies not read, its state not saved) leaves the lease to its
 * expiry: the holder may not know yet, and counts on it until its own clock says otherwise. */
static void
conn_end(wconn *c, bool by_peer)
{
    tn_witness *w = c->w;
    if (c->closing)
        return;
    c->closing = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (by_peer) {
        if (w->st.live && w->st.conn == c->id)
            tn_log_info("WITNESS-LOST",
                        "lease of node=%s epoch=%" PRIu64 " ended: connection closed", w->st.holder,
                        w->st.epoch);
        tn_witness_conn_closed(&w->st, c->id);
    }
    arm_timer(w);
    if (c->writes == 0)
        conn_close(c);
}

static void
write_done(uv_write_t *req, int status)
{
    wwrite *ww = (wwrite *)req;
    wconn *c = (wconn *)req->handle;
    free(ww);
    c->writes--;
    if (status < 0 && !c->closing)
        conn_end(c, true); /* the node reset the connection */
    else if (c->closing && c->writes == 0)
        conn_close(c);
}

static void
send_reply(wconn *c, const char *text)
{
    size_t len = strlen(text);
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > MAX_UNSENT) {
        tn_log_warn("WITNESS-SLOW", "connection %" PRIu64 ": replies not read, closing", c->id);
        conn_end(c, false);
        return;
    }
    wwrite *ww = tn_xmalloc(sizeof *ww);
    tn_assert(len < sizeof ww->text);
    memcpy(ww->text, text, len);
    uv_buf_t b = uv_buf_init(ww->text, (unsigned)len);
    if (uv_write(&ww->req, (uv_stream_t *)&c->tcp, &b, 1, write_done) != 0) {
        free(ww);
        conn_end(c, true);
        return;
    }
    c->writes++;
}

/* One request: handled, persisted if it changed the durable state, then answered. */
static void
request(wconn *c, const char *line, size_t len)
{
    tn_witness *w = c->w;
    char reply[TN_CLUSTER__REPLY_MAX], err[512];
    bool changed = false;
    uint64_t now = uv_hrtime();

    expire(w, now); /* first, so an expiry found by this request is logged */
    tn_witness_state before = w->st;
    int rc = tn_witness_handle(&w->st, w->lease_ms, c->id, now, line, len, reply, sizeof reply,
                               &changed);
    if (changed && tn_witness_state_save(&w->st, w->dir, err, sizeof err) != 0) {
        /* Nothing may be answered that the disk does not hold: undo, refuse, and drop the
         * connection (the asker retries on a new one). */
        tn_log_error("WITNESS-SAVE-FAIL", "%s", err);
        w->st = before;
        snprintf(reply, sizeof reply, "ERR state not saved\n");
        rc = -1;
        changed = false;
    } else if (rc < 0) {
        tn_log_warn("WITNESS-BAD-REQUEST", "connection %" PRIu64 ": %.*s, closing", c->id,
                    (int)(strlen(reply) - 1), reply);
    } else if (w->st.epoch != before.epoch) {
        tn_log_info("WITNESS-GRANT", "granted node=%s epoch=%" PRIu64, w->st.holder, w->st.epoch);
    } else if (changed) {
        tn_log_info("WITNESS-SYNC", "node=%s epoch=%" PRIu64 " standby=%s", w->st.holder,
                    w->st.epoch, w->st.standby[0] ? w->st.standby : "-");
    } else if (before.live && !w->st.live) {
        tn_log_info("WITNESS-LOST", "lease of node=%s epoch=%" PRIu64 " released", w->st.holder,
                    w->st.epoch);
    }
    arm_timer(w);
    send_reply(c, reply);
    if (rc < 0)
        conn_end(c, false);
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    wconn *c = (wconn *)h;
    /* Reads go into the line buffer itself: a line never needs more than its room. */
    *buf = uv_buf_init(c->in + c->len, (unsigned)(sizeof c->in - c->len));
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    wconn *c = (wconn *)s;
    if (nread < 0) {
        conn_end(c, true);
        return;
    }
    c->len += (size_t)nread;
    size_t start = 0;
    while (!c->closing) {
        char *nl = memchr(c->in + start, '\n', c->len - start);
        if (nl == NULL)
            break;
        size_t n = (size_t)(nl - (c->in + start));
        request(c, c->in + start, n);
        start += n + 1;
    }
    if (c->closing)
        return;
    memmove(c->in, c->in + start, c->len - start);
    c->len -= start;
    if (c->len == sizeof c->in) {
        /* 256 bytes and no "\n": the state machine answers "ERR line too long". */
        request(c, c->in, c->len);
    }
}

static void
on_connection(uv_stream_t *server, int status)
{
    tn_witness *w = server->data;
    if (status < 0) {
        tn_log_warn("WITNESS-ACCEPT-FAIL", "%s", uv_strerror(status));
        return;
    }
    wconn *c = tn_xcalloc(1, sizeof *c);
    c->w = w;
    c->id = ++w->next_id;
    uv_tcp_init(w->loop, &c->tcp);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->handles++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        c->closing = true;
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
}

int
tn_witness_open(uv_loop_t *loop, const char *addr, uint16_t port, const char *dir,
                uint32_t lease_ms, tn_witness **out, uint16_t *bound, char *err, size_t errlen)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
        struct sockaddr_storage ss;
    } sa;
    int r, namelen = sizeof sa;

    *out = NULL;
    if (lease_ms == 0)
        lease_ms = TN_LEASE_MS;
    if (uv_ip4_addr(addr, port, &sa.v4) != 0 && uv_ip6_addr(addr, port, &sa.v6) != 0) {
        snprintf(err, errlen, "witness: %s is not a numeric IPv4 or IPv6 address", addr);
        return TN_EINVAL;
    }
    if (tn_mkdirs(dir) != 0) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return TN_EIO;
    }
    tn_witness *w = tn_xcalloc(1, sizeof *w);
    w->loop = loop;
    w->lease_ms = lease_ms;
    w->dir = tn_xstrdup(dir);
    if (tn_witness_state_load(&w->st, dir, err, errlen) != 0) {
        free(w->dir);
        free(w);
        return TN_EIO;
    }
    uv_tcp_init(loop, &w->listener);
    uv_timer_init(loop, &w->timer);
    w->listener.data = w;
    w->timer.data = w;
    w->handles = 2;
    /* A restarted witness cannot know when the last holder last renewed, so that holder's lease
     * counts as live for one more lease_ms, as if renewed now: a restart never shortens a lease
     * the holder may still be counting on. The holder's RENEW (on any connection) keeps it. */
    if (w->st.holder[0] != '\0') {
        w->st.live = true;
        w->st.expires = uv_hrtime() + (uint64_t)lease_ms * 1000000u;
        w->st.conn = 0;
        arm_timer(w);
    }
    if ((r = uv_tcp_bind(&w->listener, &sa.sa, 0)) != 0 ||
        (r = uv_listen((uv_stream_t *)&w->listener, 16, on_connection)) != 0 ||
        (r = uv_tcp_getsockname(&w->listener, &sa.sa, &namelen)) != 0) {
        snprintf(err, errlen, "witness: listen on %s port %u: %s", addr, (unsigned)port,
                 uv_strerror(r));
        tn_witness_close(w);
        return TN_EIO;
    }
    if (bound)
        *bound = ntohs(sa.sa.sa_family == AF_INET6 ? sa.v6.sin6_port : sa.v4.sin_port);
    *out = w;
    return 0;
}

void
tn_witness_close(tn_witness *w)
{
    if (w == NULL || w->closing)
        return;
    w->closing = true;
    uv_close((uv_handle_t *)&w->listener, handle_closed);
    uv_close((uv_handle_t *)&w->timer, handle_closed);
    for (wconn *c = w->conns; c; c = c->next) {
        c->closing = true;
        conn_close(c);
    }
}
