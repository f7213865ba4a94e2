/*
 * A node's lease from ZooKeeper: the same tn_lease calls and guarantees as the witness backend
 * (cluster.h), for sites that already run a ZooKeeper ensemble. lease.c hands every tn_lease
 * call here when tn_lease_conf.zookeeper is set.
 *
 * ---- znodes, under PATH of "HOST:PORT[,HOST:PORT...]/PATH" (created as needed, open ACL) ----
 *
 *   PATH/nodes/<node>#<seq>   EPHEMERAL|SEQUENCE, data <node>: made by each ZooKeeper session
 *                             of a node; it exists exactly as long as that session does ('#'
 *                             is never in a node name, so the name is what precedes it)
 *   PATH/state                "<epoch> <holder> <standby> <holder's znode>", "-" for none
 *                             ("0 - - -" before the first grant); only ever changed by a set
 *                             that names the version read (compare-and-set)
 *
 * ---- the witness' rules, with ZooKeeper doing the witness' part ----
 *
 * A grant (ACQUIRE): read PATH/state (version v); if it names a holder's znode, that lease is
 * live while the znode exists (its session is alive: the witness' "holder's connection"), and
 * this node is told BUSY (it watches the znode and asks again the moment it goes). Otherwise the
 * witness' rule: granted only if nothing was ever granted, or this node is the last holder, or
 * the recorded in-sync standby (else BEHIND); the grant is one set of PATH/state at version v to
 * "<epoch+1> <node> - <own znode>". Why two nodes never both win: the set succeeds only if the
 * state is still the one read, so grants are totally ordered and each epoch is granted once;
 * the holder's znode was made before its grant (a session makes its znode first), so a state
 * naming it was written after the znode existed, and this session, having seen that state,
 * sees the znode unless it was deleted (ZooKeeper gives a session an in-order, never-going-
 * back view); an ephemeral znode is deleted only when its session ends, and sequence names
 * are never reused.
 *
 * The standby (RENEW's third field): a set at the version of our last read or write that
 * still names our epoch and znode; done(true) once ZooKeeper answered it. A version
 * mismatch means someone else changed the state: this node has lost the lease.
 *
 * ---- timing: why the node always stops first ----
 *
 * ZooKeeper ends a session (deleting its ephemeral znode) no earlier than the session timeout
 * after the last request or ping it received from the client (the server rounds expiry up to a
 * tick, never down). So, like the witness backend, the lease is counted from when a request
 * was *sent* (here: handed to the client, earlier still) and answered: it is valid until that
 * time + the session timeout - TN_LEASE_MARGIN_MS on uv_hrtime's clock. While held, PATH/state
 * is read every renew_ms (any answered request proves the session alive, and the read checks
 * the epoch and holder again). The session timeout asked for is lease_ms; ZooKeeper clamps it
 * to [2, 20] x its tickTime (a 1 s lease needs tickTime <= 500 ms; the default 2000 ms gives a
 * 4 s session), so the timeout the server agreed to (zoo_recv_timeout) is the one counted: a
 * longer one only makes failover slower, never unsafe, and it is logged.
 * On top of that, the simplest safe rule: the moment the client reports it lost its connection
 * (ZOO_CONNECTING_STATE) or its session (expired, auth failed), the lease is over at once.
 * Failover is slower than with the witness after a kill: ZooKeeper does not end a session
 * when its TCP connection closes, only when the timeout passes (or the client closes it).
 *
 * Whenever this node stops holding the lease (lost, released, granted too late), it closes its
 * session: its znode goes at once (if the server is reachable), which hands the role over
 * like closing the witness connection, and it can never be mistaken for a live holder again.
 * A node that still wants the lease starts a new session (a new znode) at the next tick.
 *
 * ---- threads ----
 *
 * Debian ships the multithreaded C client (libzookeeper_mt): it calls completions and
 * watchers on its own threads, and its single-threaded variant, which could be driven by
 * uv_poll, is not packaged. So each completion or watch is copied into an event, queued
 * under a mutex, and the loop woken with uv_async_send: every tn_lease callback runs on the
 * loop, as with the witness. zookeeper_init (it resolves the host names) and zookeeper_close
 * (it waits for the server to confirm the close) block, so they run in libuv's thread pool.
 * A session's memory is kept until its close has returned (after which the client calls
 * nothing more) and its queued events are handled.
 */
#include "cluster/cluster.h"
#include "cluster/cluster_int.h"
#include "core/base/base.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zookeeper/zookeeper.h>

#define STATE_MAX 256 /* PATH/state's data */
#define DATA_MAX 1024 /* any answer kept: PATH/state, or a created znode's path (PATH <= 512) */
#define ZNODE_MAX 96  /* a node's znode name: <node>#<10 digits> */

typedef enum {
    R_SETUP,   /* a persistent create of PATH, its parents, PATH/nodes, PATH/state */
    R_MINE,    /* the session's ephemeral znode */
    R_ACQ,     /* acquiring: PATH/state read */
    R_LIVE,    /* acquiring: does the holder's znode exist (watched) */
    R_GRANT,   /* acquiring: the versioned set */
    R_RENEW,   /* held: PATH/state read */
    R_STANDBY, /* held: the versioned set of the standby */
    R_WATCH    /* a watcher call (session state, or the holder's znode changed) */
} req_kind;

typedef struct zsess zsess;

/* One request and its answer, or one watcher call: made on the loop (or on the client's thread
 * for R_WATCH), filled by the client's thread, handled on the loop. */
typedef struct zreq {
    struct zreq *next;  /* in the lease's queue */
    struct zreq *onext; /* in the session's list of unanswered requests */
    zsess *s;
    req_kind kind;
    uint64_t at;    /* uv_hrtime() when handed to the client */
    uint64_t epoch; /* R_GRANT: the epoch it sets; R_RENEW, R_STANDBY: the epoch held */
    uint64_t seq;   /* R_STANDBY: the tn_lease_set_standby value it carries */
    int rc;
    int type, state; /* R_WATCH */
    int32_t version; /* the znode's version in the answer (-1: none) */
    char data[DATA_MAX];
    size_t len;
} zreq;

struct zsess {
    tn_zk *z; /* never changes: the client's threads reach the queue through it */
    zhandle_t *zh;
    uv_work_t work; /* zookeeper_init, then zookeeper_close */
    bool init_done; /* zookeeper_init has returned */
    bool dropped;   /* the lease let go of it: its events are ignored, it is being closed */
    bool closed;    /* zookeeper_close has returned (or init failed): nothing more is queued */
    bool connected, setup_sent, ready;
    uint64_t timeout_ns; /* the session timeout the server agreed to */
    char mine[DATA_MAX]; /* its ephemeral znode's path */
    int pending;         /* its events in the queue (under the lease's mutex) */
    zreq *outstanding;   /* asked and not answered yet (freed with it if never answered) */
};

/* A tn_lease_set_standby caller waiting for ZooKeeper to have taken its value. */
typedef struct waiter {
    uint64_t seq;
    void (*done)(void *arg, bool ok);
    void *arg;
    struct waiter *next;
} waiter;

struct tn_zk {
    uv_loop_t *loop;
    void *shell; /* lease.c's tn_lease, freed with this */
    char node[TN_CLUSTER__NAME_MAX + 1];
    char *hosts; /* the connect string without PATH */
    char *path;  /* "/PATH" */
    char *state_path, *nodes_path;
    uint32_t lease_ms, renew_ms;
    uint64_t renew_ns;
    void (*granted)(void *arg, uint64_t epoch);
    void (*lost)(void *arg, uint64_t epoch, const char *why);
    void *arg;

    uv_timer_t tick;   /* every renew_ms while wanted or held */
    uv_timer_t expiry; /* the local lease end */
    uv_async_t wake;   /* the client's threads queued events */
    uv_mutex_t mu;     /* guards head/tail and each session's pending */
    zreq *head, **tail;

    zsess *sess;           /* the current session (NULL: none) */
    int sessions;          /* sessions not freed yet, the current one included */
    uint64_t last_attempt; /* uv_hrtime() of the last session start */
    bool complained;       /* ZooKeeper is unreachable, already logged */
    bool timeout_logged;

    bool want, held;
    bool acquiring, renewing, writing; /* one of each in flight at a time */
    uint64_t epoch;
    uint64_t valid_until; /* uv_hrtime() value; meaningful while held */
    int32_t version;      /* PATH/state's version as of our last read or write while held */
    char holder[TN_CLUSTER__NAME_MAX + 1];

    /* What the acquiring read found, for the steps after it. */
    uint64_t acq_epoch;
    int32_t acq_version;
    char acq_holder[TN_CLUSTER__NAME_MAX + 1], acq_standby[TN_CLUSTER__NAME_MAX + 1];
    char acq_znode[ZNODE_MAX];

    char standby[TN_CLUSTER__NAME_MAX + 1]; /* "" for none */
    uint64_t standby_seq, standby_sent;
    waiter *waiters; /* oldest first */

    int handles; /* tick, expiry, wake until closed */
    bool wake_closing;
    bool freeing;
};

static void on_tick(uv_timer_t *t);
static void kick(tn_zk *z);

/* ---- the client's threads: copy, queue, wake the loop ---- */

static void
push(zreq *r)
{
    tn_zk *z = r->s->z;
    r->next = NULL;
    uv_mutex_lock(&z->mu);
    *z->tail = r;
    z->tail = &r->next;
    r->s->pending++;
    uv_mutex_unlock(&z->mu);
    uv_async_send(&z->wake);
}

static void
copy_data(zreq *r, const char *value, size_t len)
{
    if (value == NULL)
        len = 0;
    if (len > sizeof r->data - 1)
        len = sizeof r->data - 1; /* longer than anything we write: then fails to parse */
    memcpy(r->data, value ? value : "", len);
    r->data[len] = '\0';
    r->len = len;
}

static void
done_string(int rc, const char *value, const void *data)
{
    zreq *r = (zreq *)data;
    r->rc = rc;
    if (rc == ZOK)
        copy_data(r, value, value ? strlen(value) : 0);
    push(r);
}

static void
done_data(int rc, const char *value, int len, const struct Stat *st, const void *data)
{
    zreq *r = (zreq *)data;
    r->rc = rc;
    if (rc == ZOK) {
        copy_data(r, value, len > 0 ? (size_t)len : 0);
        r->version = st ? st->version : -1;
    }
    push(r);
}

static void
done_stat(int rc, const struct Stat *st, const void *data)
{
    zreq *r = (zreq *)data;
    r->rc = rc;
    if (rc == ZOK)
        r->version = st ? st->version : -1;
    push(r);
}

static void
on_watch(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh;
    (void)path;
    zreq *r = tn_xcalloc(1, sizeof *r);
    r->s = ctx;
    r->kind = R_WATCH;
    r->type = type;
    r->state = state;
    push(r);
}

/* ---- sessions (on the loop) ---- */

static void maybe_finish(tn_zk *z);

static void
sess_maybe_free(zsess *s)
{
    tn_zk *z = s->z;
    uv_mutex_lock(&z->mu);
    int pending = s->pending;
    uv_mutex_unlock(&z->mu);
    if (!s->closed || pending != 0)
        return;
    while (s->outstanding) { /* never answered: the client dropped them at close */
        zreq *r = s->outstanding;
        s->outstanding = r->onext;
        free(r);
    }
    free(s);
    z->sessions--;
    maybe_finish(z);
}

static void
close_work(uv_work_t *w)
{
    zsess *s = TN_CONTAINER_OF(w, zsess, work);
    zookeeper_close(s->zh); /* ends the session on the server: our znode goes with it */
}

static void
close_done(uv_work_t *w, int status)
{
    (void)status;
    zsess *s = TN_CONTAINER_OF(w, zsess, work);
    s->zh = NULL;
    s->closed = true;
    sess_maybe_free(s);
}

static void
sess_close(zsess *s)
{
    if (s->zh == NULL) {
        s->closed = true;
        sess_maybe_free(s);
        return;
    }
    uv_queue_work(s->z->loop, &s->work, close_work, close_done);
}

/* Lets go of the current session; it is closed (in the pool) as soon as its init is done. */
static void
drop_session(tn_zk *z)
{
    zsess *s = z->sess;
    if (s == NULL)
        return;
    z->sess = NULL;
    z->acquiring = z->renewing = z->writing = false;
    s->dropped = true;
    if (s->init_done)
        sess_close(s);
}

static void
init_work(uv_work_t *w)
{
    zsess *s = TN_CONTAINER_OF(w, zsess, work);
    s->zh = zookeeper_init(s->z->hosts, on_watch, (int)s->z->lease_ms, NULL, s, 0);
}

static void advance(zsess *s);

static void
init_done(uv_work_t *w, int status)
{
    (void)status;
    zsess *s = TN_CONTAINER_OF(w, zsess, work);
    tn_zk *z = s->z;
    s->init_done = true;
    if (s->zh == NULL) {
        if (!z->complained && !z->freeing)
            tn_log_warn("LEASE-NO-ZOOKEEPER", "node=%s: ZooKeeper %s: cannot start a session",
                        z->node, z->hosts);
        z->complained = true;
        if (z->sess == s)
            z->sess = NULL;
        s->dropped = true;
    }
    if (s->dropped)
        sess_close(s);
    else
        advance(s);
}

static void
start_session(tn_zk *z)
{
    uint64_t now = uv_hrtime();
    if (z->sess || z->freeing)
        return;
    if (z->last_attempt != 0 && now - z->last_attempt < z->renew_ns)
        return;
    z->last_attempt = now;
    zsess *s = tn_xcalloc(1, sizeof *s);
    s->z = z;
    z->sess = s;
    z->sessions++;
    uv_queue_work(z->loop, &s->work, init_work, init_done);
}

/* ---- requests ---- */

static zreq *
req_new(zsess *s, req_kind kind)
{
    zreq *r = tn_xcalloc(1, sizeof *r);
    r->s = s;
    r->kind = kind;
    r->version = -1;
    r->onext = s->outstanding;
    s->outstanding = r;
    r->at = uv_hrtime(); /* the lease is counted from no later than the send */
    return r;
}

static void
req_forget(zreq *r)
{
    zreq **p = &r->s->outstanding;
    while (*p && *p != r)
        p = &(*p)->onext;
    if (*p)
        *p = r->onext;
}

static void lose(tn_zk *z, const char *why);

/* The session failed (or answered nonsense): drop it, and the lease with it. */
static void
sess_fail(tn_zk *z, const char *what, int rc)
{
    char why[160];
    snprintf(why, sizeof why, "ZooKeeper: %s: %s", what, zerror(rc));
    if (z->held) {
        lose(z, why); /* drops the session */
        return;
    }
    if (!z->complained)
        tn_log_warn("LEASE-NO-ZOOKEEPER", "node=%s: %s", z->node, why);
    z->complained = true;
    drop_session(z);
}

/* A request the client refused outright (not connected, closing): as if it failed. */
static bool
submitted(tn_zk *z, zreq *r, int rc, const char *what)
{
    if (rc == ZOK)
        return true;
    req_forget(r);
    free(r);
    sess_fail(z, what, rc);
    return false;
}

static void
create(zsess *s, req_kind kind, const char *path, const char *value, int mode)
{
    zreq *r = req_new(s, kind);
    int rc = zoo_acreate(s->zh, path, value, value ? (int)strlen(value) : -1, &ZOO_OPEN_ACL_UNSAFE,
                         mode, done_string, r);
    submitted(s->z, r, rc, "create");
}

/* Connected for the first time: makes PATH and its parents, PATH/nodes, PATH/state, then this
 * session's znode. Sent at once: the server handles a session's requests in order. */
static void
advance(zsess *s)
{
    tn_zk *z = s->z;
    if (s->dropped || !s->init_done || !s->connected || s->setup_sent)
        return;
    s->setup_sent = true;
    int ms = zoo_recv_timeout(s->zh);
    s->timeout_ns = (uint64_t)(ms > 0 ? ms : 0) * 1000000u;
    if ((uint32_t)ms != z->lease_ms && !z->timeout_logged) {
        tn_log_warn("LEASE-ZK-TIMEOUT",
                    "node=%s: ZooKeeper agreed to a %d ms session timeout, not %u ms (its "
                    "tickTime x 2..20): the lease is counted with it",
                    z->node, ms, (unsigned)z->lease_ms);
        z->timeout_logged = true;
    }
    char p[1024];
    for (const char *slash = strchr(z->path + 1, '/');; slash = strchr(slash + 1, '/')) {
        size_t n = slash ? (size_t)(slash - z->path) : strlen(z->path);
        snprintf(p, sizeof p, "%.*s", (int)n, z->path);
        create(s, R_SETUP, p, NULL, ZOO_PERSISTENT);
        if (slash == NULL || z->sess != s)
            break;
    }
    if (z->sess == s)
        create(s, R_SETUP, z->nodes_path, NULL, ZOO_PERSISTENT);
    if (z->sess == s)
        create(s, R_SETUP, z->state_path, "0 - - -", ZOO_PERSISTENT);
    snprintf(p, sizeof p, "%s/%s#", z->nodes_path, z->node);
    if (z->sess == s)
        create(s, R_MINE, p, z->node, ZOO_EPHEMERAL_SEQUENTIAL);
}

/* Parses "<epoch> <holder> <standby> <znode>" ("-" for none). */
static bool
parse_state(const char *d, size_t len, uint64_t *epoch, char *holder, char *standby, char *znode)
{
    const char *f[4];
    size_t fl[4];
    if (tn_cluster__split(d, len, f, fl, 4) != 4 || !tn_cluster__parse_u64(f[0], fl[0], epoch))
        return false;
    char *out[2] = {holder, standby};
    for (int i = 0; i < 2; i++) {
        bool none = fl[i + 1] == 1 && f[i + 1][0] == '-';
        if (!none && !tn_cluster__name_ok(f[i + 1], fl[i + 1]))
            return false;
        size_t n = none ? 0 : fl[i + 1];
        memcpy(out[i], f[i + 1], n);
        out[i][n] = '\0';
    }
    if (fl[3] >= ZNODE_MAX || memchr(f[3], '/', fl[3]))
        return false;
    bool none = fl[3] == 1 && f[3][0] == '-';
    memcpy(znode, f[3], none ? 0 : fl[3]);
    znode[none ? 0 : fl[3]] = '\0';
    return true;
}

static const char *
base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The state this node writes while holding the lease at epoch. */
static void
format_state(tn_zk *z, uint64_t epoch, const char *standby, char *out, size_t len)
{
    /* Precisions bound each part (a node name is at most 64 characters, a znode's own name
     * shorter than ZNODE_MAX): the state always fits. */
    int n = snprintf(out, len, "%" PRIu64 " %.64s %.64s %.*s", epoch, z->node,
                     standby[0] ? standby : "-", (int)(ZNODE_MAX - 1), base_name(z->sess->mine));
    tn_assert(n > 0 && (size_t)n < len);
}

/* ---- the lease ---- */

static void
fail_waiters(tn_zk *z)
{
    while (z->waiters && !z->freeing) {
        waiter *w = z->waiters;
        z->waiters = w->next;
        void (*done)(void *, bool) = w->done;
        void *arg = w->arg;
        free(w);
        done(arg, false);
    }
}

/* The lease is over at this node (not by tn_lease_release): invalid at once, the session
 * closed (the znode goes, so the role is handed over at once), then `lost`. */
static void
lose(tn_zk *z, const char *why)
{
    if (!z->held)
        return;
    z->held = false;
    z->valid_until = 0;
    uv_timer_stop(&z->expiry);
    drop_session(z);
    tn_log_warn("LEASE-LOST", "node=%s epoch=%" PRIu64 ": %s", z->node, z->epoch, why);
    if (z->lost)
        z->lost(z->arg, z->epoch, why);
    fail_waiters(z);
    if (!z->freeing && !z->want)
        uv_timer_stop(&z->tick);
}

static bool
check_expiry(tn_zk *z)
{
    if (!z->held || uv_hrtime() < z->valid_until)
        return false;
    lose(z, "lease ended locally without renewal");
    return true;
}

static void
on_expiry(uv_timer_t *t)
{
    tn_zk *z = t->data;
    if (check_expiry(z) || !z->held)
        return;
    /* Early (the loop's clock lags uv_hrtime a little): wait for the rest. */
    uint64_t left = z->valid_until - uv_hrtime();
    uv_timer_start(&z->expiry, on_expiry, (left + 999999) / 1000000, 0);
}

static void
extend(tn_zk *z, const zreq *r)
{
    uint64_t margin = (uint64_t)TN_LEASE_MARGIN_MS * 1000000u;
    uint64_t t = r->s->timeout_ns;
    uint64_t until = t > margin ? r->at + t - margin : r->at;
    if (until > z->valid_until) {
        z->valid_until = until;
        uint64_t now = uv_hrtime();
        uint64_t left = until > now ? until - now : 0;
        uv_timer_start(&z->expiry, on_expiry, (left + 999999) / 1000000, 0);
    }
}

static void
acquire_start(tn_zk *z)
{
    zsess *s = z->sess;
    z->acquiring = true;
    zreq *r = req_new(s, R_ACQ);
    if (!submitted(z, r, zoo_aget(s->zh, z->state_path, 0, done_data, r), "read state"))
        return;
}

static void
renew(tn_zk *z)
{
    zsess *s = z->sess;
    z->renewing = true;
    zreq *r = req_new(s, R_RENEW);
    r->epoch = z->epoch;
    submitted(z, r, zoo_aget(s->zh, z->state_path, 0, done_data, r), "read state");
}

static void
write_standby(tn_zk *z)
{
    zsess *s = z->sess;
    char st[STATE_MAX];
    format_state(z, z->epoch, z->standby, st, sizeof st);
    z->writing = true;
    z->standby_sent = z->standby_seq;
    zreq *r = req_new(s, R_STANDBY);
    r->epoch = z->epoch;
    r->seq = z->standby_seq;
    submitted(z, r, zoo_aset(s->zh, z->state_path, st, (int)strlen(st), z->version, done_stat, r),
              "write state");
}

/* Sends whatever is due now. */
static void
kick(tn_zk *z)
{
    zsess *s = z->sess;
    if (z->freeing || s == NULL || !s->ready || !s->connected)
        return;
    if (z->held) {
        if (!z->writing && z->standby_sent != z->standby_seq)
            write_standby(z);
    } else if (z->want && !z->acquiring) {
        acquire_start(z);
    }
}

/* The acquiring read found no live lease: the witness' rule, then the versioned set. */
static void
decide(tn_zk *z)
{
    zsess *s = z->sess;
    if (z->acq_holder[0] && strcmp(z->acq_holder, z->node) != 0 &&
        strcmp(z->acq_standby, z->node) != 0) {
        snprintf(z->holder, sizeof z->holder, "%s", z->acq_holder); /* BEHIND */
        z->acquiring = false;
        return;
    }
    if (z->acq_epoch == UINT64_MAX) { /* never wraps back to 0: refused, as by the witness */
        z->acquiring = false;
        return;
    }
    char st[STATE_MAX];
    format_state(z, z->acq_epoch + 1, "", st, sizeof st);
    zreq *r = req_new(s, R_GRANT);
    r->epoch = z->acq_epoch + 1;
    submitted(z, r,
              zoo_aset(s->zh, z->state_path, st, (int)strlen(st), z->acq_version, done_stat, r),
              "write state");
}

static void
on_grant(tn_zk *z, const zreq *r)
{
    uint64_t margin = (uint64_t)TN_LEASE_MARGIN_MS * 1000000u;
    uint64_t t = r->s->timeout_ns;
    uint64_t until = t > margin ? r->at + t - margin : r->at;
    z->epoch = r->epoch;
    z->version = r->version;
    snprintf(z->holder, sizeof z->holder, "%s", z->node);
    if (uv_hrtime() >= until) {
        /* Answered too late to be of use: hand it back by closing the session. */
        tn_log_warn("LEASE-LATE", "node=%s epoch=%" PRIu64 ": grant came after the lease's end",
                    z->node, z->epoch);
        drop_session(z);
        return;
    }
    z->held = true;
    z->valid_until = 0;
    extend(z, r);
    z->standby[0] = '\0'; /* a grant clears the standby; set it again once in sync */
    z->standby_sent = z->standby_seq;
    uv_timer_start(&z->tick, on_tick, z->renew_ms, z->renew_ms);
    if (z->granted)
        z->granted(z->arg, z->epoch);
}

static void
complete_waiters(tn_zk *z, uint64_t seq)
{
    while (z->waiters && z->waiters->seq <= seq && !z->freeing) {
        waiter *w = z->waiters;
        z->waiters = w->next;
        void (*done)(void *, bool) = w->done;
        void *arg = w->arg;
        free(w);
        done(arg, true);
    }
}

static void
on_session_event(tn_zk *z, zsess *s, int state)
{
    if (state == ZOO_CONNECTED_STATE) {
        s->connected = true;
        if (z->complained)
            tn_log_info("LEASE-ZOOKEEPER", "node=%s: ZooKeeper %s reachable again", z->node,
                        z->hosts);
        z->complained = false;
        advance(s);
        kick(z);
    } else if (state == ZOO_CONNECTING_STATE || state == ZOO_ASSOCIATING_STATE) {
        /* The session may live on, but this node cannot know for how long: stop now. */
        s->connected = false;
        if (z->held)
            lose(z, "disconnected from ZooKeeper");
    } else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) {
        s->connected = false;
        sess_fail(z, "session ended",
                  state == ZOO_EXPIRED_SESSION_STATE ? ZSESSIONEXPIRED : ZAUTHFAILED);
    }
}

/* One event from the client, on the loop. */
static void
handle(tn_zk *z, zreq *r)
{
    zsess *s = r->s;
    if (z->freeing || s->dropped || z->sess != s)
        return;
    bool ok = r->rc == ZOK;
    uint64_t e = 0;
    char h[TN_CLUSTER__NAME_MAX + 1], sb[TN_CLUSTER__NAME_MAX + 1], zn[ZNODE_MAX];
    switch (r->kind) {
    case R_WATCH:
        if (r->type == ZOO_SESSION_EVENT)
            on_session_event(z, s, r->state);
        else
            kick(z); /* the holder's znode changed: ask again now, not at the next tick */
        return;
    case R_SETUP:
        if (!ok && r->rc != ZNODEEXISTS)
            sess_fail(z, "cannot create the pair's znodes", r->rc);
        return;
    case R_MINE:
        if (!ok) {
            sess_fail(z, "cannot create this node's znode", r->rc);
            return;
        }
        snprintf(s->mine, sizeof s->mine, "%s", r->data);
        s->ready = true;
        tn_log_info("LEASE-ZOOKEEPER", "node=%s: session with ZooKeeper %s (timeout %u ms), %s",
                    z->node, z->hosts, (unsigned)(s->timeout_ns / 1000000u), s->mine);
        kick(z);
        return;
    case R_ACQ:
        if (!ok) {
            z->acquiring = false;
            sess_fail(z, "cannot read the pair's state", r->rc);
            return;
        }
        if (!parse_state(r->data, r->len, &z->acq_epoch, z->acq_holder, z->acq_standby,
                         z->acq_znode)) {
            /* Never overwritten: whoever wrote it is not a node of ours. */
            tn_log_warn("LEASE-BAD-STATE", "node=%s: %s holds \"%s\", not a pair's state", z->node,
                        z->state_path, r->data);
            z->acquiring = false;
            return;
        }
        z->acq_version = r->version;
        if (z->acq_znode[0] == '\0' || strcmp(z->acq_znode, base_name(s->mine)) == 0) {
            decide(z); /* no holder's session, or our own (which holds nothing now) */
        } else {
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", z->nodes_path, z->acq_znode);
            zreq *q = req_new(s, R_LIVE);
            submitted(z, q, zoo_awexists(s->zh, p, on_watch, s, done_stat, q), "exists");
        }
        return;
    case R_LIVE:
        if (ok) { /* BUSY: the watch asks again the moment that session ends */
            snprintf(z->holder, sizeof z->holder, "%s", z->acq_holder);
            z->acquiring = false;
        } else if (r->rc == ZNONODE) {
            decide(z);
        } else {
            z->acquiring = false;
            sess_fail(z, "cannot check the holder's znode", r->rc);
        }
        return;
    case R_GRANT:
        z->acquiring = false;
        if (ok) {
            if (!z->held)
                on_grant(z, r);
        } else if (r->rc == ZBADVERSION) {
            kick(z); /* someone else wrote first: read again */
        } else {
            sess_fail(z, "cannot write the pair's state", r->rc);
        }
        return;
    case R_RENEW:
        z->renewing = false;
        if (!z->held || r->epoch != z->epoch)
            return;
        if (!ok) {
            sess_fail(z, "cannot read the pair's state", r->rc);
            return;
        }
        if (!parse_state(r->data, r->len, &e, h, sb, zn) || e != z->epoch ||
            strcmp(h, z->node) != 0 || strcmp(zn, base_name(s->mine)) != 0) {
            if (parse_state(r->data, r->len, &e, h, sb, zn))
                snprintf(z->holder, sizeof z->holder, "%s", h);
            lose(z, "a newer epoch in ZooKeeper");
            return;
        }
        z->version = r->version;
        extend(z, r);
        return;
    case R_STANDBY:
        z->writing = false;
        if (!z->held || r->epoch != z->epoch)
            return;
        if (!ok) {
            sess_fail(z,
                      r->rc == ZBADVERSION ? "the pair's state changed under the holder"
                                           : "cannot write the pair's state",
                      r->rc);
            return;
        }
        z->version = r->version;
        extend(z, r);
        complete_waiters(z, r->seq);
        if (z->held && !z->freeing)
            kick(z); /* a standby set meanwhile goes out now */
        return;
    }
}

static void
on_wake(uv_async_t *a)
{
    tn_zk *z = a->data;
    for (;;) {
        uv_mutex_lock(&z->mu);
        zreq *r = z->head;
        if (r) {
            z->head = r->next;
            if (z->head == NULL)
                z->tail = &z->head;
            r->s->pending--;
        }
        uv_mutex_unlock(&z->mu);
        if (r == NULL)
            return;
        zsess *s = r->s;
        if (r->kind != R_WATCH)
            req_forget(r);
        handle(z, r);
        free(r);
        sess_maybe_free(s);
    }
}

static void
on_tick(uv_timer_t *t)
{
    tn_zk *z = t->data;
    if (check_expiry(z) || z->freeing)
        return;
    if (!z->want && !z->held) {
        uv_timer_stop(&z->tick);
        return;
    }
    if (z->sess == NULL)
        start_session(z);
    else if (z->held && !z->renewing && z->sess->ready && z->sess->connected)
        renew(z);
    else
        kick(z);
}

/* ---- the calls lease.c hands over ---- */

tn_zk *
tn_cluster__zk_new(const tn_lease_conf *conf, uint32_t lease_ms, uint32_t renew_ms, void *shell)
{
    const char *slash = strchr(conf->zookeeper, '/');
    size_t plen = slash ? strlen(slash) : 0;
    if (slash == NULL || slash == conf->zookeeper || plen < 2 || slash[plen - 1] == '/' ||
        strstr(slash, "//") || plen > 512)
        return NULL;
    /* Its own log lines go to stderr from its threads; ours say what matters. */
    zoo_set_debug_level((ZooLogLevel)0);
    tn_zk *z = tn_xcalloc(1, sizeof *z);
    z->loop = conf->loop;
    z->shell = shell;
    snprintf(z->node, sizeof z->node, "%s", conf->node);
    z->hosts = tn_xstrdup(conf->zookeeper);
    z->hosts[slash - conf->zookeeper] = '\0';
    z->path = tn_xstrdup(slash);
    size_t n = plen + sizeof "/nodes";
    z->state_path = tn_xmalloc(n);
    z->nodes_path = tn_xmalloc(n);
    snprintf(z->state_path, n, "%s/state", z->path);
    snprintf(z->nodes_path, n, "%s/nodes", z->path);
    z->lease_ms = lease_ms;
    z->renew_ms = renew_ms;
    z->renew_ns = (uint64_t)renew_ms * 1000000u;
    z->granted = conf->granted;
    z->lost = conf->lost;
    z->arg = conf->arg;
    z->tail = &z->head;
    uv_mutex_init(&z->mu);
    uv_timer_init(z->loop, &z->tick);
    uv_timer_init(z->loop, &z->expiry);
    uv_async_init(z->loop, &z->wake, on_wake);
    z->tick.data = z->expiry.data = z->wake.data = z;
    z->handles = 3;
    return z;
}

void
tn_cluster__zk_want(tn_zk *z, bool want)
{
    if (z->freeing)
        return;
    z->want = want;
    if (want) {
        if (!uv_is_active((uv_handle_t *)&z->tick))
            uv_timer_start(&z->tick, on_tick, z->renew_ms, z->renew_ms);
        if (z->sess == NULL)
            start_session(z);
        else
            kick(z);
    } else if (!z->held) {
        uv_timer_stop(&z->tick);
    }
}

bool
tn_cluster__zk_valid(const tn_zk *z)
{
    return z->held && uv_hrtime() < z->valid_until;
}

uint64_t
tn_cluster__zk_epoch(const tn_zk *z)
{
    return z->epoch;
}

const char *
tn_cluster__zk_holder(const tn_zk *z)
{
    return z->holder;
}

void
tn_cluster__zk_set_standby(tn_zk *z, const char *standby, void (*done)(void *arg, bool ok),
                           void *arg)
{
    if (z->freeing)
        return;
    if (!z->held) {
        if (done)
            done(arg, false);
        return;
    }
    snprintf(z->standby, sizeof z->standby, "%s", standby ? standby : "");
    z->standby_seq++;
    if (done) {
        waiter *w = tn_xcalloc(1, sizeof *w), **tail = &z->waiters;
        *w = (waiter){.seq = z->standby_seq, .done = done, .arg = arg};
        while (*tail)
            tail = &(*tail)->next;
        *tail = w;
    }
    kick(z); /* at once, or right after the write in flight (see handle()) */
}

void
tn_cluster__zk_release(tn_zk *z)
{
    if (z->freeing || !z->held)
        return;
    z->held = false;
    z->valid_until = 0;
    uv_timer_stop(&z->expiry);
    drop_session(z); /* the znode goes with the session: the role is free at once */
    if (!z->want)
        uv_timer_stop(&z->tick);
    fail_waiters(z);
}

static void
handle_closed(uv_handle_t *h)
{
    tn_zk *z = h->data;
    z->handles--;
    maybe_finish(z);
}

/* Once freed and every session closed: the wake handle (the client's threads are gone), then
 * the memory. */
static void
maybe_finish(tn_zk *z)
{
    if (!z->freeing)
        return;
    if (z->sessions == 0 && !z->wake_closing) {
        z->wake_closing = true;
        uv_close((uv_handle_t *)&z->wake, handle_closed);
    }
    if (z->handles != 0)
        return;
    while (z->waiters) {
        waiter *w = z->waiters;
        z->waiters = w->next;
        free(w);
    }
    uv_mutex_destroy(&z->mu);
    free(z->hosts);
    free(z->path);
    free(z->state_path);
    free(z->nodes_path);
    free(z->shell);
    free(z);
}

void
tn_cluster__zk_free(tn_zk *z)
{
    if (z->freeing)
        return;
    z->freeing = true;
    z->held = false;
    drop_session(z);
    uv_close((uv_handle_t *)&z->tick, handle_closed);
    uv_close((uv_handle_t *)&z->expiry, handle_closed);
    maybe_finish(z);
}
