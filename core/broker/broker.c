#include "core/broker/broker.h"

#include "core/broker/broker_int.h"

#include "core/auth/auth.h"

#include "core/base/base.h"
#include "core/topictree/topictree.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

static void
session_deliver_limits(tn_session *s)
{
    const tn_broker_limits *l = &s->b->limits;
    if (!s->queue) /* set when it is made */
        return;
    if (s->is_queue) /* producers wait past max_offline; persistent messages page */
        tn_queue_set_limits(s->queue, l->max_offline, 0);
    else if (s->attached)
        tn_queue_set_limits(s->queue, l->max_queued, 0);
    else
        tn_queue_set_limits(s->queue, l->max_queued, l->max_offline);
}

/* ---- slow consumers ---- */

static void
behind_add(tn_session *s, uint32_t ep)
{
    tn_broker *b = s->b;
    s->behind_ep = ep;
    s->behind_start = s->behind_since = b->now;
    s->behind_taken = tn_queue_taken(s->queue);
    if (s->on_behind)
        return;
    s->on_behind = true;
    s->bprev = NULL;
    s->bnext = b->behind;
    if (b->behind)
        b->behind->bprev = s;
    b->behind = s;
}

/* Ends s's congestion episode: it caught up (or left); a slow consumer says how much it lost. */
static void
behind_end(tn_session *s, const char *how)
{
    tn_broker *b = s->b;
    if (!s->on_behind)
        return;
    if (s->bprev)
        s->bprev->bnext = s->bnext;
    else
        b->behind = s->bnext;
    if (s->bnext)
        s->bnext->bprev = s->bprev;
    s->on_behind = false;
    s->bnext = s->bprev = NULL;
    if (s->slow) {
        s->slow = false;
        b->stats.slow_now--;
        if (s->attached)
            session_deliver_limits(s); /* no longer bounded like an offline session */
        tn_log_info("SUB-SLOW-END",
                    "%s: %s after %" PRIu64 " ms as a slow consumer; %" PRIu64
                    " QoS 0 messages to it were dropped",
                    s->id, how, b->now - s->behind_start, s->slow_dropped);
    }
}

/* Whether s's current congestion episode (if any) is the one being timed; ends it if not. */
static bool
behind_current(tn_session *s)
{
    if (!s->on_behind)
        return false;
    if (tn_queue_behind(s->queue) == s->behind_ep)
        return true;
    behind_end(s, "caught up");
    return false;
}

static void
become_slow(tn_session *s)
{
    tn_broker *b = s->b;
    s->slow = true;
    s->slow_dropped = 0;
    b->stats.slow_episodes++;
    b->stats.slow_now++;
    bool pages = !s->clean && b->store;
    tn_log_warn("SUB-QOS0-DROP",
                "%s: subscriber %u messages behind for %" PRIu64 " ms, taking %" PRIu64
                " in the last %" PRIu64 " ms: a slow consumer; QoS 0 messages to it are dropped%s "
                "until it catches up",
                s->id, tn_queue_depth(s->queue), b->now - s->behind_start,
                tn_queue_taken(s->queue) - s->behind_taken, b->now - s->behind_since,
                pages ? " and persistent ones paged to the journal" : "");
    /* A persistent session pages what it cannot take to the journal, as if offline, up to
     * max_offline_messages: nobody waits on it. */
    if (pages)
        tn_queue_set_limits(s->queue, b->limits.max_queued, b->limits.max_offline);
    /* Nobody waits on a slow consumer for QoS 0, nor for persistent messages to a persistent
     * session; those waiting for anything else wait again on their next push. */
    tn_queue_wake(s->queue);
}

/*
 * A subscriber behind is timed in windows of slow_consumer_ms: one that took fewer than half of
 * max_queued deliveries in a whole window (so it could not have caught up in it) is a slow
 * consumer; one that took more is reading as fast as it can and paces its producers, and a new
 * window starts. Deliveries leave the queue in bursts (each time the connection's output buffer
 * has drained by a quarter), so what counts is the window's total, not the time since the last.
 */
static void release_holds(tn_broker *b);

void
tn_broker_tick(tn_broker *b, uint64_t now_ms)
{
    b->now = now_ms;
    if (b->holds && b->hold_until <= now_ms)
        release_holds(b);
    uint32_t limit = b->limits.slow_consumer_ms;
    uint64_t enough = b->limits.max_queued / 2 ? b->limits.max_queued / 2 : 1;
    for (tn_session *s = b->behind, *next; s; s = next) {
        next = s->bnext;
        if (!behind_current(s) || s->slow || !limit || now_ms - s->behind_since < limit)
            continue;
        uint64_t taken = tn_queue_taken(s->queue);
        if (taken - s->behind_taken < enough) {
            become_slow(s);
        } else {
            s->behind_since = now_ms;
            s->behind_taken = taken;
        }
    }
}

bool
tn_broker_levels_ok(const tn_broker *b, const char *name)
{
    uint32_t max = b->limits.max_topic_levels;
    if (!max)
        return true;
    uint32_t levels = 1;
    for (const char *p = name; (p = strchr(p, '.')); p++)
        if (++levels > max)
            return false;
    return true;
}

tn_broker *
tn_broker_new(const tn_broker_limits *limits)
{
    tn_broker *b = tn_xcalloc(1, sizeof *b);
    b->limits = *limits;
    b->subs = tn_topictree_new();
    b->retained = tn_topictree_new();
    tn_buf_init(&b->rec, (size_t)1 << 30);
    tn_buf_init(&b->page, (size_t)1 << 30);
    return b;
}

/* Every held connection asks again (from its own wake, later). */
static void
release_holds(tn_broker *b)
{
    tn_hold *h = b->holds;
    b->holds = NULL;
    while (h) {
        tn_hold *next = h->next;
        h->next = h->prev = NULL;
        h->woken = true;
        h->wake(h->arg);
        h = next;
    }
}

void
tn_broker_set_standby(tn_broker *b, bool standby, const char *active_host)
{
    b->standby = standby;
    free(b->active_host);
    b->active_host = standby && active_host ? tn_xstrdup(active_host) : NULL;
    if (!standby) {
        b->hold_until = 0;
        release_holds(b);
    }
}

void
tn_broker_set_hold(tn_broker *b, uint64_t until_ms)
{
    b->hold_until = until_ms;
    if (!until_ms || (b->now && until_ms <= b->now))
        release_holds(b);
}

tn_hold *
tn_broker_hold(tn_broker *b, void (*wake)(void *arg), void *arg)
{
    if (!b->standby || !b->hold_until || b->hold_until <= b->now)
        return NULL;
    tn_hold *h = tn_xcalloc(1, sizeof *h);
    h->wake = wake;
    h->arg = arg;
    h->next = b->holds;
    if (b->holds)
        b->holds->prev = h;
    b->holds = h;
    return h;
}

void
tn_broker_unhold(tn_broker *b, tn_hold *h)
{
    if (!h)
        return;
    if (!h->woken) {
        if (h->prev)
            h->prev->next = h->next;
        else
            b->holds = h->next;
        if (h->next)
            h->next->prev = h->prev;
    }
    free(h);
}

bool
tn_broker_standby(const tn_broker *b, const char **active_host)
{
    if (active_host)
        *active_host = b->active_host;
    return b->standby;
}

/* Frees s; log: the session is gone for good (journal it), not just the broker shutting down. */
static void
session_free(tn_session *s, bool log)
{
    tn_broker *b = s->b;
    if (log && !s->clean)
        tn_broker__log_session(b, s, false);
    behind_end(s, "left");
    tn_sub *sub, *tmp;
    HASH_ITER(hh, s->subs, sub, tmp)
    {
        tn_topictree_remove(b->subs, sub->filter, sub);
        HASH_DEL(s->subs, sub);
        free(sub->filter);
        free(sub);
    }
    HASH_DEL(b->sessions, s);
    b->stats.sessions--;
    tn_queue_free(s->queue);
    free(s->who);
    free(s->rx_ids);
    free(s->tx_ids);
    free(s);
}

static void
free_retained(void *arg, const char *name, void *value)
{
    (void)arg;
    (void)name;
    tn_message_unref(value); /* the tree itself is freed right after the walk */
}

void
tn_broker_free(tn_broker *b)
{
    if (!b)
        return;
    tn_session *s, *tmp;
    HASH_ITER(hh, b->sessions, s, tmp)
    {
        tn_assert(!s->attached);
        session_free(s, false);
    }
    free(b->active_host);
    tn_topictree_walk(b->retained, free_retained, NULL);
    tn_topictree_free(b->retained);
    tn_topictree_free(b->subs);
    free(b->routes);
    tn_buf_fini(&b->rec);
    tn_buf_fini(&b->page);
    free(b);
}

void
tn_broker_get_stats(const tn_broker *b, tn_broker_stats *out)
{
    *out = b->stats;
    out->retained = (uint32_t)tn_topictree_count(b->retained);
    out->paged = 0;
    for (const tn_session *s = b->sessions; s; s = s->hh.next)
        if (s->queue)
            out->paged += tn_queue_paged(s->queue);
}

const tn_broker_limits *
tn_broker_get_limits(const tn_broker *b)
{
    return &b->limits;
}

tn_session *
tn_broker__session_find(tn_broker *b, const char *id, size_t len)
{
    tn_session *s = NULL;
    HASH_FIND(hh, b->sessions, id, len, s);
    return s;
}

tn_session *
tn_broker_session_find(tn_broker *b, const char *id, size_t len)
{
    return tn_broker__session_find(b, id, len);
}

bool
tn_session_attached(const tn_session *s)
{
    return s->attached;
}

const char *
tn_session_filter(const tn_session *s)
{
    return s->subs ? s->subs->filter : NULL;
}

uint64_t
tn_broker_serial(tn_broker *b)
{
    return ++b->serial;
}

static int
session_deliver(void *ctx, tn_delivery *d)
{
    tn_session *s = ctx;
    return s->ops->deliver(s->ctx, d);
}

static const tn_consumer_ops session_consumer_ops = {.deliver = session_deliver};

int
tn_broker_session_open(tn_broker *b, const char *client_id, size_t len, bool clean,
                       const tn_session_ops *ops, void *ctx, tn_session **out, bool *present)
{
    tn_session *s = tn_broker__session_find(b, client_id, len);
    if (s && s->attached) {
        /* Takeover: the owner detaches (which frees a clean session), so look again after. */
        s->ops->kick(s->ctx);
        s = tn_broker__session_find(b, client_id, len);
        tn_assert(!s || !s->attached);
    }
    if (s && clean) {
        session_free(s, true);
        s = NULL;
    }
    *present = s != NULL;
    if (!s)
        s = tn_broker__session_create(b, client_id, len, clean);
    s->clean = clean;
    s->ops = ops;
    s->ctx = ctx;
    s->warned_full = false;
    s->attached = true;
    session_deliver_limits(s);
    *out = s;
    return 0;
}

static const tn_pager_ops pager_ops = {tn_broker__load};

tn_session *
tn_broker__session_create(tn_broker *b, const char *id, size_t len, bool clean)
{
    tn_session *s = tn_xcalloc(1, sizeof *s + len + 1);
    s->b = b;
    memcpy(s->id, id, len);
    s->id[len] = '\0';
    s->id_len = len;
    s->clean = clean;
    s->is_queue =
        len >= TN_QUEUE_PREFIX_LEN && memcmp(id, TN_QUEUE_PREFIX, TN_QUEUE_PREFIX_LEN) == 0;
    if (s->is_queue) /* a named queue exists to hold messages */
        tn_broker__session_queue(s);
    HASH_ADD_KEYPTR(hh, b->sessions, s->id, s->id_len, s);
    b->stats.sessions++;
    if (!clean)
        tn_broker__log_session(b, s, true);
    return s;
}

tn_queue *
tn_broker__session_queue(tn_session *s)
{
    if (s->queue)
        return s->queue;
    tn_broker *b = s->b;
    s->queue = tn_queue_new(b->limits.max_queued, b->limits.max_offline);
    session_deliver_limits(s);
    /* clean cannot change while the session lives: a clean open replaces a stored session. */
    if (b->store && !s->clean)
        tn_queue_set_pager(s->queue, &pager_ops, b, b->limits.max_queue_memory);
    if (s->started)
        s->consumer = tn_queue_attach(s->queue, &session_consumer_ops, s, b->limits.max_inflight);
    return s->queue;
}

void
tn_broker__session_free(tn_session *s, bool log)
{
    session_free(s, log);
}

void
tn_session_start(tn_session *s)
{
    tn_assert(s->attached && !s->started);
    s->started = true;
    if (s->queue)
        s->consumer =
            tn_queue_attach(s->queue, &session_consumer_ops, s, s->b->limits.max_inflight);
}

void
tn_session_detach(tn_session *s)
{
    tn_assert(s->attached);
    if (s->consumer)
        tn_queue_detach(s->consumer);
    s->consumer = NULL;
    s->started = false;
    s->attached = false;
    s->ops = NULL;
    s->ctx = NULL;
    behind_end(s, "left");
    if (s->clean) {
        session_free(s, false); /* resumes the producers that waited on it */
        return;
    }
    if (s->queue) {
        session_deliver_limits(s);
        tn_queue_wake(s->queue); /* producers never wait on an offline session */
    }
}

void
tn_session_discard(tn_session *s)
{
    tn_assert(!s->attached);
    session_free(s, true);
}

void
tn_session_ack(tn_session *s, tn_delivery *d)
{
    if (!s->clean && d->msg->persistent)
        tn_broker__log_ack(s->b, s, d->msg->id);
    tn_queue_ack(d);
}

static bool
bit_test(const uint64_t *map, uint16_t id)
{
    return map && (map[id >> 6] >> (id & 63)) & 1;
}

static void
bit_set(uint64_t **map, uint16_t id)
{
    if (!*map)
        *map = tn_xcalloc(65536 / 64, sizeof **map);
    (*map)[id >> 6] |= (uint64_t)1 << (id & 63);
}

static void
bit_clear(uint64_t **map, uint32_t *count, uint16_t id)
{
    (*map)[id >> 6] &= ~((uint64_t)1 << (id & 63));
    if (--*count == 0) {
        free(*map);
        *map = NULL;
    }
}

bool
tn_session_rx_mark(tn_session *s, uint16_t id)
{
    if (bit_test(s->rx_ids, id))
        return false;
    bit_set(&s->rx_ids, id);
    s->rx_count++;
    if (!s->clean)
        tn_broker__log_rx(s->b, s, id, true);
    return true;
}

bool
tn_session_rx_release(tn_session *s, uint16_t id)
{
    if (!bit_test(s->rx_ids, id))
        return false;
    bit_clear(&s->rx_ids, &s->rx_count, id);
    if (!s->clean)
        tn_broker__log_rx(s->b, s, id, false);
    return true;
}

uint16_t
tn_session_tx_alloc(tn_session *s, uint64_t msg_id)
{
    if (s->tx_count >= 65535)
        return 0;
    uint16_t id = (uint16_t)(msg_id % 65535 + 1);
    while (bit_test(s->tx_ids, id))
        id = id == 65535 ? 1 : id + 1;
    bit_set(&s->tx_ids, id);
    s->tx_count++;
    return id;
}

void
tn_session_set_state(tn_session *s, tn_delivery *d, uint8_t state)
{
    d->state = state;
    if (!s->clean)
        tn_broker__log_state(s->b, s, d->msg->id, state);
}

void
tn_session_tx_free(tn_session *s, uint16_t id)
{
    if (bit_test(s->tx_ids, id))
        bit_clear(&s->tx_ids, &s->tx_count, id);
}

tn_consumer *
tn_session_consumer(tn_session *s)
{
    return s->consumer;
}

const char *
tn_session_id(const tn_session *s)
{
    return s->id;
}

/* How a delivery enters a session's queue. */
enum {
    PUSH_LIVE,     /* a published message: QoS 0 dropped for a slow consumer */
    PUSH_RETAINED, /* retained, on SUBSCRIBE: never dropped for congestion */
};

/* Queues one delivery of m to s; logs drops once per attach. TN_ETOOBIG when dropped. */
static int
session_push(tn_session *s, tn_message *m, uint8_t qos, uint8_t flags, tn_flow *producer, int how)
{
    tn_broker *b = s->b;
    if (!s->attached && !s->is_queue && qos == 0)
        return 0; /* QoS 0 is not queued for offline clients */
    if (s->slow)
        behind_current(s); /* ends the slow episode if it caught up since the last look */
    if (qos == 0 && s->slow && how == PUSH_LIVE) {
        s->slow_dropped++;
        b->stats.dropped_qos0++;
        return TN_ETOOBIG;
    }
    tn_queue *q = tn_broker__session_queue(s);
    int rc;
    tn_paged where;
    /* Persistent messages to a persistent session or durable queue are journaled first, so a
     * queue past its memory limit can keep just where they are; large non-persistent ones are
     * written too (not enqueued: they do not survive a restart), so a queue of them does not pin
     * them all in memory. */
    bool pages = qos > 0 && !s->clean && b->store &&
                 (m->persistent || m->payload_len >= TN_VOLATILE_PAGE_MIN);
    if (!pages) {
        rc = tn_queue_push(q, m, qos, qos > 0, flags);
    } else if (tn_queue_is_full(q)) {
        rc = tn_queue_push(q, m, qos, true, flags); /* refused and counted */
    } else if (m->persistent ? tn_broker__log_enq(b, s, m, qos, flags, &where)
                             : tn_broker__log_volatile(b, m, qos, flags, &where)) {
        rc = tn_queue_push_ref(q, m, &where);
    } else {
        rc = tn_queue_push(q, m, qos, true, flags); /* not on disk: memory only */
    }
    if (rc == 0) {
        b->stats.delivered++;
        if (!s->attached && !s->is_queue)
            return 0; /* offline: nobody waits, max_offline bounds it */
        uint32_t ep = tn_queue_behind(q);
        if (ep && !s->is_queue && (!s->on_behind || s->behind_ep != ep))
            behind_add(s, ep); /* a new congestion episode: time it */
        /* A slow consumer makes nobody wait for what it can drop (QoS 0) or page to the journal
         * (persistent or large messages to a persistent session); clean sessions' QoS 1/2 still
         * wait. */
        bool spill = s->slow && (qos == 0 || pages);
        if (producer && !spill)
            tn_queue_wait(q, producer);
        return 0;
    }
    if (qos == 0)
        b->stats.dropped_qos0++;
    else
        b->stats.dropped_offline++;
    if (!s->warned_full) {
        s->warned_full = true;
        tn_log_warn("SUB-OFFLINE-FULL",
                    "%s: %s session holds %u messages (max_offline_messages), dropping new ones "
                    "until it catches up",
                    s->id, s->attached ? "slow" : "offline", tn_queue_depth(q));
    }
    return TN_ETOOBIG;
}

/* ---- permissions ---- */

/* name (a topic or filter in this core's form) in MQTT's form, the ACL's: '.' and '/' swap,
 * '*' is '+' and '>' is '#'. In buf when it fits, else allocated (*heap set: free it). */
static const char *
acl_name(const char *name, char *buf, size_t cap, char **heap)
{
    size_t n = strlen(name);
    char *out = buf;
    *heap = NULL;
    if (n + 1 > cap)
        out = *heap = tn_xmalloc(n + 1);
    for (size_t i = 0; i <= n; i++) {
        char ch = name[i];
        out[i] = ch == '.' ? '/' : ch == '/' ? '.' : ch == '*' ? '+' : ch == '>' ? '#' : ch;
    }
    return out;
}

void
tn_broker_set_acl(tn_broker *b, const struct tn_acl *acl)
{
    b->acl = acl;
}

const struct tn_acl *
tn_broker_acl(const tn_broker *b)
{
    return b->acl;
}

void
tn_session_set_identity(tn_session *s, const char *user, const char *client_id)
{
    char *who = NULL;
    size_t n = 0;
    if (user || client_id) {
        size_t u = user ? strlen(user) : 0, c = client_id ? strlen(client_id) : 0;
        n = u + c + 3;
        who = tn_xmalloc(n);
        who[0] = user ? 'u' : '-';
        memcpy(who + 1, user ? user : "", u + 1);
        memcpy(who + 2 + u, client_id ? client_id : "", c + 1);
    }
    size_t old = 0;
    if (s->who) {
        size_t u = strlen(s->who + 1);
        old = u + strlen(s->who + 2 + u) + 3;
    }
    bool same = n == old && (n == 0 || memcmp(who, s->who, n) == 0);
    free(s->who);
    s->who = who;
    /* A persistent session keeps its owner across restarts (its SESSION_PUT record). */
    if (!same && !s->clean && !s->b->replaying)
        tn_broker__log_session(s->b, s, true);
}

/* s's user (NULL: anonymous) and client id. */
static void
identity(const tn_session *s, const char **user, const char **client_id)
{
    if (!s->who) {
        *user = NULL;
        *client_id = s->id;
        return;
    }
    *user = s->who[0] == 'u' ? s->who + 1 : NULL;
    const char *c = s->who + 2 + strlen(s->who + 1);
    *client_id = *c ? c : s->id;
}

bool
tn_broker_may(const tn_broker *b, const char *user, const char *client_id, bool queue,
              const char *name, int access, bool filter)
{
    if (!b->acl)
        return true;
    char buf[512], *heap;
    const char *n = acl_name(name, buf, sizeof buf, &heap);
    tn_acl_kind kind = queue ? TN_ACL_QUEUE : TN_ACL_TOPIC;
    bool ok = filter ? tn_acl_filter_readable(b->acl, user, client_id, kind, n)
                     : tn_acl_allows(b->acl, user, client_id, kind, n,
                                     access == TN_MAY_WRITE ? TN_ACL_WRITE : TN_ACL_READ);
    free(heap);
    return ok;
}

/* Whether s's owner may read topic `mqtt_name` (already in MQTT's form). */
static bool
session_reads(const tn_session *s, const char *mqtt_name)
{
    const char *user, *client_id;
    identity(s, &user, &client_id);
    return tn_acl_allows(s->b->acl, user, client_id, TN_ACL_TOPIC, mqtt_name, TN_ACL_READ);
}

typedef struct retained_ctx {
    tn_session *s;
    uint8_t qos;
} retained_ctx;

static void
push_retained(void *arg, const char *name, void *value)
{
    (void)name;
    retained_ctx *rc = arg;
    tn_message *m = value;
    if (rc->s->b->acl) {
        char buf[512], *heap;
        bool ok = session_reads(rc->s, acl_name(m->name, buf, sizeof buf, &heap));
        free(heap);
        if (!ok)
            return;
    }
    uint8_t qos = m->qos < rc->qos ? m->qos : rc->qos;
    session_push(rc->s, m, qos, TN_DELIVERY_RETAINED, NULL, PUSH_RETAINED);
}

int
tn_session_subscribe(tn_session *s, const char *filter, uint8_t qos)
{
    if (!tn_topictree_filter_valid(filter) || qos > 2)
        return TN_EINVAL;
    if (!tn_broker_levels_ok(s->b, filter))
        return TN_ETOOBIG;
    tn_sub *sub = NULL;
    HASH_FIND_STR(s->subs, filter, sub);
    if (sub) {
        sub->qos = qos;
    } else {
        sub = tn_xcalloc(1, sizeof *sub);
        sub->filter = tn_xstrdup(filter);
        sub->qos = qos;
        sub->s = s;
        int rc = tn_topictree_add(s->b->subs, sub->filter, sub);
        if (rc != 0) {
            free(sub->filter);
            free(sub);
            return rc;
        }
        HASH_ADD_KEYPTR(hh, s->subs, sub->filter, strlen(sub->filter), sub);
        tn_broker__session_queue(s); /* deliveries may come from now on */
    }
    if (!s->clean)
        tn_broker__log_sub(s->b, s, filter, qos, true);
    /* Retained messages are sent on every SUBSCRIBE, also when it replaces one [MQTT-3.8.4-3];
     * not when replaying one: the journal has what they queued. */
    if (s->b->replaying)
        return 0;
    retained_ctx rc = {s, qos};
    tn_topictree_find(s->b->retained, filter, push_retained, &rc);
    return 0;
}

int
tn_session_unsubscribe(tn_session *s, const char *filter)
{
    tn_sub *sub = NULL;
    HASH_FIND_STR(s->subs, filter, sub);
    if (!sub)
        return TN_ENOENT;
    if (!s->clean)
        tn_broker__log_sub(s->b, s, filter, 0, false);
    tn_topictree_remove(s->b->subs, sub->filter, sub);
    HASH_DEL(s->subs, sub);
    free(sub->filter);
    free(sub);
    return 0;
}

static void
collect_route(void *arg, const char *name, void *value)
{
    (void)name;
    tn_broker *b = arg;
    tn_sub *sub = value;
    tn_session *s = sub->s;
    if (s->mark == b->seq) {
        if (sub->qos > s->mark_qos)
            s->mark_qos = sub->qos;
        return;
    }
    s->mark = b->seq;
    s->mark_qos = sub->qos;
    if (b->n_routes == b->cap_routes) {
        b->cap_routes = b->cap_routes ? b->cap_routes * 2 : 16;
        b->routes = tn_xrealloc(b->routes, b->cap_routes * sizeof *b->routes);
    }
    b->routes[b->n_routes++].s = s;
}

static void
retain(tn_broker *b, tn_message *m)
{
    void *old = NULL;
    if (m->payload_len == 0) {
        tn_topictree_take(b->retained, m->name, &old);
        if (old)
            tn_broker__log_retain(b, m, false);
    } else {
        tn_message_uncharge(m); /* retained memory is not the incoming budget's */
        tn_topictree_put(b->retained, m->name, tn_message_ref(m), &old);
        tn_broker__log_retain(b, m, true);
    }
    tn_message_unref(old);
}

static tn_session *
queue_get(tn_broker *b, const char *name, size_t len, bool create, bool durable)
{
    char stack[256];
    size_t n = TN_QUEUE_PREFIX_LEN + len;
    char *id = n <= sizeof stack ? stack : tn_xmalloc(n);
    memcpy(id, TN_QUEUE_PREFIX, TN_QUEUE_PREFIX_LEN);
    memcpy(id + TN_QUEUE_PREFIX_LEN, name, len);
    tn_session *s = tn_broker__session_find(b, id, n);
    if (!s && create)
        s = tn_broker__session_create(b, id, n, !durable);
    if (id != stack)
        free(id);
    return s;
}

tn_session *
tn_broker_queue(tn_broker *b, const char *name, size_t len, bool durable)
{
    return queue_get(b, name, len, true, durable);
}

tn_session *
tn_broker_queue_find(tn_broker *b, const char *name, size_t len)
{
    return queue_get(b, name, len, false, false);
}

const char *
tn_session_queue_name(const tn_session *s, size_t *len)
{
    if (!s->is_queue)
        return NULL;
    *len = s->id_len - TN_QUEUE_PREFIX_LEN;
    return s->id + TN_QUEUE_PREFIX_LEN;
}

int
tn_broker_send(tn_broker *b, tn_session *q, tn_message *m, tn_flow *producer)
{
    m->id = ++b->seq;
    b->stats.published++;
    uint8_t qos = m->qos ? m->qos : 1; /* on a queue, every delivery is acknowledged */
    return session_push(q, m, qos, 0, producer, PUSH_LIVE);
}

void
tn_broker_queue_free(tn_session *q)
{
    tn_assert(q->is_queue && tn_queue_consumers(tn_broker__session_queue(q)) == 0);
    session_free(q, true);
}

tn_queue *
tn_session_queue(tn_session *s)
{
    return tn_broker__session_queue(s);
}

int
tn_broker_publish(tn_broker *b, tn_message *m, tn_flow *producer)
{
    if (!tn_broker_levels_ok(b, m->name))
        return TN_ETOOBIG;
    m->id = ++b->seq;
    b->stats.published++;
    if (m->retain)
        retain(b, m);
    b->n_routes = 0;
    tn_topictree_match(b->subs, m->name, collect_route, b);
    /* With permissions, each subscriber's owner must be allowed to read the topic (checked on
     * every message: a right removed by a reload stops deliveries at once). */
    char buf[512], *heap = NULL;
    const char *mqtt_name = b->acl ? acl_name(m->name, buf, sizeof buf, &heap) : NULL;
    /* Without %c patterns the answer depends on the user alone: asked once per user in a row
     * (a fan-out to many clients of one user, or to anonymous ones, asks once). */
    bool per_user = mqtt_name && !tn_acl_uses_client_id(b->acl);
    const char *last_user = NULL;
    int last = -1; /* -1: nothing asked yet */
    /* Delivering may run protocol code; routes is stable because publishing is not re-entered
     * from a delivery callback. */
    for (size_t i = 0; i < b->n_routes; i++) {
        tn_session *s = b->routes[i].s;
        if (mqtt_name) {
            bool ok;
            const char *user, *client_id;
            identity(s, &user, &client_id);
            if (per_user && last >= 0 &&
                (user == last_user || (user && last_user && strcmp(user, last_user) == 0))) {
                ok = last;
            } else {
                ok = tn_acl_allows(b->acl, user, client_id, TN_ACL_TOPIC, mqtt_name, TN_ACL_READ);
                last_user = user;
                last = ok;
            }
            if (!ok)
                continue;
        }
        uint8_t qos = s->mark_qos < m->qos ? s->mark_qos : m->qos;
        session_push(s, m, qos, 0, producer, PUSH_LIVE);
    }
    free(heap);
    b->n_routes = 0;
    return 0;
}

void
tn_broker_walk_queues(tn_broker *b,
                      void (*cb)(void *arg, const char *name, size_t len, tn_queue *q), void *arg)
{
    tn_session *s, *tmp;
    HASH_ITER(hh, b->sessions, s, tmp)
    {
        if (s->is_queue)
            cb(arg, s->id + TN_QUEUE_PREFIX_LEN, s->id_len - TN_QUEUE_PREFIX_LEN,
               tn_broker__session_queue(s));
    }
}
