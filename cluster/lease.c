/*
 * A node's lease: the client side of the witness protocol (cluster.h). With
 * tn_lease_conf.zookeeper set, every call is handed to the ZooKeeper backend (zk.c) instead,
 * and nothing below runs.
 *
 * One TCP connection to the witness at a time. Requests that wait for their answer (ACQUIRE,
 * RENEW) go one at a time: a reply that takes longer than the lease simply lets the lease end
 * locally. RELEASE is not waited for; its reply is skipped. Replies come in request order, so
 * each connection keeps the queue of what it sent, with the send time of each request: the
 * lease is valid until that time + lease_ms - TN_LEASE_MARGIN_MS on uv_hrtime's clock.
 *
 * Once this node stops holding the lease for a reason other than a LOST reply (the local lease
 * end passed, a reply made no sense), it closes its connection: the witness then ends the lease
 * at once, and a reply still in flight can never be taken for one to a later request.
 *
 * Callbacks (granted, lost, done) may call any tn_lease function, tn_lease_free included: the
 * memory stays until libuv has closed the handles, and every path re-checks `freeing` after a
 * callback. No callback is called from or after tn_lease_free (pending set_standby waiters are
 * dropped with it). tn_lease_set_standby on a lease not held calls done(arg, false) before it
 * returns. tn_lease_release does not change `want`: a node that still wants the lease asks for
 * it again at the next tick (and, as the last holder, gets it). tn_lease_holder also names this
 * node after a GRANT, so it never shows a stale holder while this node is active.
 */
#include "cluster/cluster.h"
#include "cluster/cluster_int.h"
#include "core/base/base.h"

#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_QUEUED 8 /* requests sent and not yet answered on one connection */

typedef enum { REQ_ACQUIRE, REQ_RENEW, REQ_RELEASE } req_kind;

typedef struct sent {
    req_kind kind;
    uint64_t epoch;       /* RENEW, RELEASE: the epoch it named */
    uint64_t at;          /* uv_hrtime() when it was written */
    uint64_t standby_seq; /* RENEW: which tn_lease_set_standby value it carried */
} sent;

typedef struct lconn {
    uv_tcp_t tcp; /* first: the handle's address is the conn's */
    uv_connect_t creq;
    tn_lease *l; /* NULL once the lease dropped it (then it only waits for its close) */
    bool connected;
    char in[TN_CLUSTER__LINE_MAX];
    size_t len;
    sent q[MAX_QUEUED];
    unsigned head, count;
} lconn;

typedef struct lwrite {
    uv_write_t req;
    char text[TN_CLUSTER__LINE_MAX];
} lwrite;

/* A tn_lease_set_standby caller waiting for the witness to have synced its value. */
typedef struct waiter {
    uint64_t seq;
    void (*done)(void *arg, bool ok);
    void *arg;
    struct waiter *next;
} waiter;

struct tn_lease {
    tn_zk *zk; /* set: the ZooKeeper backend (zk.c) does everything; only node is used here */
    uv_loop_t *loop;
    char node[TN_CLUSTER__NAME_MAX + 1];
    char *host;
    uint16_t port;
    uint64_t lease_ns, renew_ns;
    uint32_t renew_ms;
    void (*granted)(void *arg, uint64_t epoch);
    void (*lost)(void *arg, uint64_t epoch, const char *why);
    void *arg;

    uv_timer_t tick;   /* every renew_ms while wanted or held: connect, ACQUIRE, RENEW */
    uv_timer_t expiry; /* the local lease end */
    uv_getaddrinfo_t gai;
    bool resolving;
    lconn *conn;
    uint64_t last_attempt; /* uv_hrtime() of the last connection attempt (0: none yet) */
    bool complained;       /* the witness is unreachable, already logged */

    bool want, held;
    uint64_t epoch;
    uint64_t valid_until; /* uv_hrtime() value; meaningful while held */
    char holder[TN_CLUSTER__NAME_MAX + 1];

    char standby[TN_CLUSTER__NAME_MAX + 1]; /* "" for none */
    uint64_t standby_seq;                   /* bumped by each tn_lease_set_standby */
    uint64_t standby_sent;                  /* the newest seq a RENEW carried */
    waiter *waiters;                        /* oldest first */

    int handles; /* tick and expiry until closed */
    bool freeing;
};

static void on_tick(uv_timer_t *t);
static void start_connect(tn_lease *l);

/* ---- connection ---- */

static void
conn_freed(uv_handle_t *h)
{
    free(h); /* the lconn: tcp is its first member */
}

/* Forgets the connection; libuv frees it once its requests have been cancelled. */
static void
conn_drop(tn_lease *l)
{
    lconn *c = l->conn;
    if (c == NULL)
        return;
    l->conn = NULL;
    c->l = NULL;
    uv_close((uv_handle_t *)&c->tcp, conn_freed);
}

static bool
awaiting_reply(const lconn *c)
{
    for (unsigned i = 0; i < c->count; i++)
        if (c->q[(c->head + i) % MAX_QUEUED].kind != REQ_RELEASE)
            return true;
    return false;
}

static void
fail_waiters(tn_lease *l)
{
    while (l->waiters && !l->freeing) {
        waiter *w = l->waiters;
        l->waiters = w->next;
        void (*done)(void *, bool) = w->done;
        void *arg = w->arg;
        free(w);
        done(arg, false);
    }
}

/* The lease is over at this node (not by tn_lease_release): invalid at once, then `lost`. */
static void
lose(tn_lease *l, const char *why)
{
    if (!l->held)
        return;
    l->held = false;
    l->valid_until = 0;
    uv_timer_stop(&l->expiry);
    tn_log_warn("LEASE-LOST", "node=%s epoch=%" PRIu64 ": %s", l->node, l->epoch, why);
    if (l->lost)
        l->lost(l->arg, l->epoch, why);
    fail_waiters(l);
    if (!l->freeing && !l->want)
        uv_timer_stop(&l->tick);
}

/* While held: the local lease end passed (uv_hrtime, not the loop's cached time). */
static bool
check_expiry(tn_lease *l)
{
    if (!l->held || uv_hrtime() < l->valid_until)
        return false;
    conn_drop(l); /* the witness ends the lease at once; no stale reply can arrive */
    lose(l, "lease ended locally without renewal");
    return true;
}

/* The connection failed or misbehaved: drop it, and the lease with it. */
static void
conn_fail(tn_lease *l, const char *why)
{
    conn_drop(l);
    lose(l, why);
}

static void
write_done(uv_write_t *req, int status)
{
    lconn *c = (lconn *)req->handle;
    free(req);
    if (status < 0 && c->l != NULL)
        conn_fail(c->l, "witness connection broke");
}

static void send_line(tn_lease *l, req_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
send_line(tn_lease *l, req_kind kind, const char *fmt, ...)
{
    lconn *c = l->conn;
    tn_assert(c != NULL && c->connected);
    if (c->count == MAX_QUEUED) {
        conn_fail(l, "witness does not answer");
        return;
    }
    lwrite *w = tn_xmalloc(sizeof *w);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(w->text, sizeof w->text, fmt, ap);
    va_end(ap);
    tn_assert(n > 0 && (size_t)n < sizeof w->text);
    sent *s = &c->q[(c->head + c->count) % MAX_QUEUED];
    *s = (sent){.kind = kind, .epoch = l->epoch, .standby_seq = l->standby_seq};
    /* The lease is counted from here: uv_write writes at once when nothing is queued. */
    s->at = uv_hrtime();
    uv_buf_t b = uv_buf_init(w->text, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_done) != 0) {
        free(w);
        conn_fail(l, "witness connection broke");
        return;
    }
    c->count++;
    if (kind == REQ_RENEW)
        l->standby_sent = l->standby_seq;
}

static void
send_renew(tn_lease *l)
{
    send_line(l, REQ_RENEW, "RENEW %s %" PRIu64 " %s\n", l->node, l->epoch,
              l->standby[0] ? l->standby : "-");
}

/* Sends whatever is due now, if nothing is awaiting its reply. */
static void
kick(tn_lease *l)
{
    lconn *c = l->conn;
    if (l->freeing || c == NULL || !c->connected || awaiting_reply(c))
        return;
    if (l->held)
        send_renew(l);
    else if (l->want)
        send_line(l, REQ_ACQUIRE, "ACQUIRE %s\n", l->node);
}

/* ---- replies ---- */

static void
on_expiry(uv_timer_t *t)
{
    tn_lease *l = t->data;
    if (check_expiry(l) || !l->held)
        return;
    /* Early (the loop's clock lags uv_hrtime a little): wait for the rest. */
    uint64_t left = l->valid_until - uv_hrtime();
    uv_timer_start(&l->expiry, on_expiry, (left + 999999) / 1000000, 0);
}

static void
arm_expiry(tn_lease *l)
{
    uint64_t now = uv_hrtime();
    uint64_t left = l->valid_until > now ? l->valid_until - now : 0;
    uv_timer_start(&l->expiry, on_expiry, (left + 999999) / 1000000, 0);
}

static void
on_grant(tn_lease *l, const sent *s, uint64_t epoch, uint64_t lease_ms)
{
    /* Both ends should agree on lease_ms; if not, the shorter one is the truth. */
    uint64_t lease_ns = lease_ms < l->lease_ns / 1000000u ? lease_ms * 1000000u : l->lease_ns;
    uint64_t margin = (uint64_t)TN_LEASE_MARGIN_MS * 1000000u;
    uint64_t until = lease_ns > margin ? s->at + lease_ns - margin : s->at;
    l->epoch = epoch;
    snprintf(l->holder, sizeof l->holder, "%s", l->node);
    if (uv_hrtime() >= until) {
        /* Answered too late to be of use: hand it back by closing the connection. */
        tn_log_warn("LEASE-LATE", "node=%s epoch=%" PRIu64 ": GRANT came after the lease's end",
                    l->node, epoch);
        conn_drop(l);
        return;
    }
    l->held = true;
    l->valid_until = until;
    l->standby[0] = '\0'; /* a grant clears the witness' standby; set it again once in sync */
    l->standby_sent = l->standby_seq;
    arm_expiry(l);
    /* Renewals every renew_ms from now (also when want was dropped while ACQUIRE was out). */
    uv_timer_start(&l->tick, on_tick, l->renew_ms, l->renew_ms);
    if (l->granted)
        l->granted(l->arg, epoch);
}

static void
on_renewed(tn_lease *l, const sent *s)
{
    uint64_t margin = (uint64_t)TN_LEASE_MARGIN_MS * 1000000u;
    uint64_t until = l->lease_ns > margin ? s->at + l->lease_ns - margin : s->at;
    if (until > l->valid_until) {
        l->valid_until = until;
        arm_expiry(l);
    }
    /* The witness has synced this RENEW's standby, and so every earlier value's turn is over. */
    while (l->waiters && l->waiters->seq <= s->standby_seq && !l->freeing) {
        waiter *w = l->waiters;
        l->waiters = w->next;
        void (*done)(void *, bool) = w->done;
        void *arg = w->arg;
        free(w);
        done(arg, true);
    }
}

static void
set_holder(tn_lease *l, const char *name, size_t len)
{
    if (len == 1 && name[0] == '-')
        len = 0;
    memcpy(l->holder, name, len);
    l->holder[len] = '\0';
}

/* One reply line. Returns false when the connection is gone (stop reading it). */
static bool
reply(tn_lease *l, lconn *c, const char *line, size_t len)
{
    const char *f[4];
    size_t fl[4];
    uint64_t epoch = 0, ms = 0;

    if (c->count == 0) {
        conn_fail(l, "unexpected reply from the witness");
        return false;
    }
    sent s = c->q[c->head];
    c->head = (c->head + 1) % MAX_QUEUED;
    c->count--;
    if (check_expiry(l))
        return false;
    if (s.kind == REQ_RELEASE)
        return true; /* best effort: nothing to learn */
    int n = tn_cluster__split(line, len, f, fl, 4);
    bool is_epoch = n >= 2 && tn_cluster__parse_u64(f[1], fl[1], &epoch);
    /* BUSY, BEHIND and LOST name the holder (or "-" before any grant, after a LOST). */
    bool named =
        n == 3 && is_epoch && (tn_cluster__name_ok(f[2], fl[2]) || (fl[2] == 1 && f[2][0] == '-'));
    if (s.kind == REQ_ACQUIRE && n == 3 && is_epoch && fl[0] == 5 &&
        memcmp(f[0], "GRANT", 5) == 0 && tn_cluster__parse_u64(f[2], fl[2], &ms)) {
        if (!l->held)
            on_grant(l, &s, epoch, ms);
    } else if (s.kind == REQ_ACQUIRE && n == 4 && is_epoch && fl[0] == 4 &&
               memcmp(f[0], "BUSY", 4) == 0 && tn_cluster__name_ok(f[2], fl[2]) &&
               tn_cluster__parse_u64(f[3], fl[3], &ms)) {
        /* Not ours now: asked again as soon as that lease can end (then every renew_ms). */
        set_holder(l, f[2], fl[2]);
        if (l->want && !l->held && ms < l->renew_ms)
            uv_timer_start(&l->tick, on_tick, ms + 1, l->renew_ms);
    } else if (s.kind == REQ_ACQUIRE && named && fl[0] == 6 && memcmp(f[0], "BEHIND", 6) == 0) {
        /* Not ours now; asked again at the next tick while wanted. */
        set_holder(l, f[2], fl[2]);
    } else if (s.kind == REQ_RENEW && n == 2 && is_epoch && fl[0] == 2 &&
               memcmp(f[0], "OK", 2) == 0) {
        if (l->held && s.epoch == l->epoch && epoch == l->epoch)
            on_renewed(l, &s);
    } else if (s.kind == REQ_RENEW && named && fl[0] == 4 && memcmp(f[0], "LOST", 4) == 0) {
        set_holder(l, f[2], fl[2]);
        if (l->held && s.epoch == l->epoch)
            lose(l, "the witness answered LOST");
    } else {
        tn_log_warn("LEASE-BAD-REPLY", "node=%s: unexpected witness reply \"%.*s\"", l->node,
                    (int)len, line);
        conn_fail(l, "bad reply from the witness");
        return false;
    }
    if (l->conn != c)
        return false;
    /* A standby set while a request was in flight goes out now, not at the next tick. */
    if (l->held && l->standby_sent != l->standby_seq)
        kick(l);
    return l->conn == c;
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    lconn *c = (lconn *)h;
    *buf = uv_buf_init(c->in + c->len, (unsigned)(sizeof c->in - c->len));
}

static void
on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    lconn *c = (lconn *)st;
    tn_lease *l = c->l;
    if (l == NULL)
        return;
    if (nread < 0) {
        conn_fail(l, "witness connection closed");
        return;
    }
    c->len += (size_t)nread;
    size_t start = 0;
    for (;;) {
        char *nl = memchr(c->in + start, '\n', c->len - start);
        if (nl == NULL)
            break;
        size_t n = (size_t)(nl - (c->in + start));
        if (!reply(l, c, c->in + start, n))
            return;
        start += n + 1;
    }
    memmove(c->in, c->in + start, c->len - start);
    c->len -= start;
    if (c->len == sizeof c->in)
        conn_fail(l, "witness reply too long");
}

static void
on_connect(uv_connect_t *req, int status)
{
    lconn *c = TN_CONTAINER_OF(req, lconn, creq);
    tn_lease *l = c->l;
    if (l == NULL)
        return; /* dropped while connecting */
    if (status == 0)
        status = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (status != 0) {
        if (!l->complained)
            tn_log_warn("LEASE-NO-WITNESS", "node=%s: witness %s port %u: %s", l->node, l->host,
                        (unsigned)l->port, uv_strerror(status));
        l->complained = true;
        conn_drop(l);
        return;
    }
    if (l->complained)
        tn_log_info("LEASE-WITNESS", "node=%s: witness %s port %u reachable again", l->node,
                    l->host, (unsigned)l->port);
    l->complained = false;
    c->connected = true;
    uv_tcp_nodelay(&c->tcp, 1);
    kick(l);
}

static void
connect_to(tn_lease *l, const struct sockaddr *sa)
{
    lconn *c = tn_xcalloc(1, sizeof *c);
    c->l = l;
    uv_tcp_init(l->loop, &c->tcp);
    l->conn = c;
    int r = uv_tcp_connect(&c->creq, &c->tcp, sa, on_connect);
    if (r != 0) {
        if (!l->complained)
            tn_log_warn("LEASE-NO-WITNESS", "node=%s: witness %s port %u: %s", l->node, l->host,
                        (unsigned)l->port, uv_strerror(r));
        l->complained = true;
        conn_drop(l);
    }
}

static void maybe_free(tn_lease *l);

static void
on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    tn_lease *l = req->data;
    l->resolving = false;
    if (l->freeing) {
        uv_freeaddrinfo(res);
        maybe_free(l);
        return;
    }
    if (status != 0 || res == NULL) {
        if (!l->complained)
            tn_log_warn("LEASE-NO-WITNESS", "node=%s: witness %s: %s", l->node, l->host,
                        uv_strerror(status));
        l->complained = true;
    } else if (l->conn == NULL) {
        struct sockaddr_storage ss;
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
        if (ss.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons(l->port);
        else
            ((struct sockaddr_in *)&ss)->sin_port = htons(l->port);
        connect_to(l, (struct sockaddr *)&ss);
    }
    uv_freeaddrinfo(res);
}

/* At most one attempt per renew_ms, however often it is asked for. */
static void
start_connect(tn_lease *l)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } sa;
    uint64_t now = uv_hrtime();

    if (l->conn || l->resolving || l->freeing)
        return;
    if (l->last_attempt != 0 && now - l->last_attempt < l->renew_ns)
        return;
    l->last_attempt = now;
    if (uv_ip4_addr(l->host, l->port, &sa.v4) == 0 || uv_ip6_addr(l->host, l->port, &sa.v6) == 0) {
        connect_to(l, &sa.sa);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    l->gai.data = l;
    int r = uv_getaddrinfo(l->loop, &l->gai, on_resolved, l->host, NULL, &hints);
    if (r != 0) {
        if (!l->complained)
            tn_log_warn("LEASE-NO-WITNESS", "node=%s: witness %s: %s", l->node, l->host,
                        uv_strerror(r));
        l->complained = true;
        return;
    }
    l->resolving = true;
}

static void
on_tick(uv_timer_t *t)
{
    tn_lease *l = t->data;
    if (check_expiry(l) || l->freeing)
        return;
    if (!l->want && !l->held) {
        uv_timer_stop(&l->tick);
        return;
    }
    if (l->conn == NULL)
        start_connect(l);
    else
        kick(l);
}

/* ---- the public calls ---- */

tn_lease *
tn_lease_new(const tn_lease_conf *conf)
{
    if (conf->node == NULL || !tn_cluster__name_ok(conf->node, strlen(conf->node)) ||
        (conf->zookeeper == NULL && (conf->host == NULL || conf->host[0] == '\0')))
        return NULL;
    uint32_t lease_ms = conf->lease_ms ? conf->lease_ms : TN_LEASE_MS;
    uint32_t renew_ms = conf->renew_ms ? conf->renew_ms : TN_LEASE_RENEW_MS;
    /* A lease no longer than the margin would never be valid, and renewals must come well
     * within what is left of it. */
    if (lease_ms <= TN_LEASE_MARGIN_MS || renew_ms >= lease_ms - TN_LEASE_MARGIN_MS)
        return NULL;
    tn_lease *l = tn_xcalloc(1, sizeof *l);
    snprintf(l->node, sizeof l->node, "%s", conf->node);
    if (conf->zookeeper) {
        l->zk = tn_cluster__zk_new(conf, lease_ms, renew_ms, l);
        if (l->zk == NULL) {
            free(l);
            return NULL;
        }
        return l;
    }
    l->loop = conf->loop;
    snprintf(l->node, sizeof l->node, "%s", conf->node);
    l->host = tn_xstrdup(conf->host);
    l->port = conf->port;
    l->lease_ns = (uint64_t)lease_ms * 1000000u;
    l->renew_ms = renew_ms;
    l->renew_ns = (uint64_t)renew_ms * 1000000u;
    l->granted = conf->granted;
    l->lost = conf->lost;
    l->arg = conf->arg;
    uv_timer_init(l->loop, &l->tick);
    uv_timer_init(l->loop, &l->expiry);
    l->tick.data = l;
    l->expiry.data = l;
    l->handles = 2;
    return l;
}

void
tn_lease_want(tn_lease *l, bool want)
{
    if (l->zk) {
        tn_cluster__zk_want(l->zk, want);
        return;
    }
    if (l->freeing)
        return;
    l->want = want;
    if (want) {
        if (!uv_is_active((uv_handle_t *)&l->tick))
            uv_timer_start(&l->tick, on_tick, l->renew_ms, l->renew_ms);
        if (l->conn == NULL)
            start_connect(l);
        else
            kick(l);
    } else if (!l->held) {
        uv_timer_stop(&l->tick);
    }
}

bool
tn_lease_valid(const tn_lease *l)
{
    if (l->zk)
        return tn_cluster__zk_valid(l->zk);
    return l->held && uv_hrtime() < l->valid_until;
}

uint64_t
tn_lease_epoch(const tn_lease *l)
{
    if (l->zk)
        return tn_cluster__zk_epoch(l->zk);
    return l->epoch;
}

const char *
tn_lease_holder(const tn_lease *l)
{
    if (l->zk)
        return tn_cluster__zk_holder(l->zk);
    return l->holder;
}

void
tn_lease_set_standby(tn_lease *l, const char *standby, void (*done)(void *arg, bool ok), void *arg)
{
    tn_assert(standby == NULL ||
              (tn_cluster__name_ok(standby, strlen(standby)) && strcmp(standby, l->node) != 0));
    if (l->zk) {
        tn_cluster__zk_set_standby(l->zk, standby, done, arg);
        return;
    }
    if (l->freeing)
        return;
    if (!l->held) {
        if (done)
            done(arg, false);
        return;
    }
    snprintf(l->standby, sizeof l->standby, "%s", standby ? standby : "");
    l->standby_seq++;
    if (done) {
        waiter *w = tn_xcalloc(1, sizeof *w), **tail = &l->waiters;
        *w = (waiter){.seq = l->standby_seq, .done = done, .arg = arg};
        while (*tail)
            tail = &(*tail)->next;
        *tail = w;
    }
    kick(l); /* at once, or right after the reply in flight (see reply()) */
}

void
tn_lease_release(tn_lease *l)
{
    if (l->zk) {
        tn_cluster__zk_release(l->zk);
        return;
    }
    if (l->freeing || !l->held)
        return;
    /* Not held from here on, so a failing send below does not report the lease `lost`. */
    l->held = false;
    l->valid_until = 0;
    uv_timer_stop(&l->expiry);
    if (l->conn && l->conn->connected)
        send_line(l, REQ_RELEASE, "RELEASE %s %" PRIu64 "\n", l->node, l->epoch);
    if (l->freeing)
        return;
    if (!l->want)
        uv_timer_stop(&l->tick);
    fail_waiters(l);
}

static void
maybe_free(tn_lease *l)
{
    if (l->handles == 0 && !l->resolving) {
        tn_lease *dead = l;
        while (dead->waiters) {
            waiter *w = dead->waiters;
            dead->waiters = w->next;
            free(w);
        }
        free(dead->host);
        free(dead);
    }
}

static void
timer_closed(uv_handle_t *h)
{
    tn_lease *l = h->data;
    l->handles--;
    maybe_free(l);
}

void
tn_lease_free(tn_lease *l)
{
    if (l == NULL || l->freeing)
        return;
    l->freeing = true;
    if (l->zk) {
        tn_cluster__zk_free(l->zk); /* frees l too, once its sessions are closed */
        return;
    }
    l->held = false;
    conn_drop(l);
    if (l->resolving)
        uv_cancel((uv_req_t *)&l->gai); /* its callback still runs, then frees */
    uv_close((uv_handle_t *)&l->tick, timer_closed);
    uv_close((uv_handle_t *)&l->expiry, timer_closed);
}
