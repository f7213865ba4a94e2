#include "core/queue/queue.h"

#include "core/base/base.h"

#include <stdlib.h>

/* One node per (queue, waiting producer), linked in both the queue's and the producer's list. */
typedef struct tn_flow_wait {
    tn_queue *q;
    tn_flow *f;
    struct tn_flow_wait *qnext, *qprev;
    struct tn_flow_wait *fnext, *fprev;
} tn_flow_wait;

struct tn_consumer {
    tn_queue *q;
    const tn_consumer_ops *ops;
    void *ctx;
    uint32_t credit;
    uint32_t n_unacked;
    bool paused;
    tn_delivery *ua_head, *ua_tail; /* unacked, in delivery order */
    tn_consumer *next, *prev;
};

struct tn_queue {
    tn_delivery *head, *tail; /* queued, in order */
    uint32_t depth;
    uint32_t inflight;
    uint32_t high, hard;
    uint32_t n_consumers;
    uint64_t dropped;
    uint64_t taken;    /* deliveries consumers took, ever */
    uint32_t episodes; /* times the queue reached `high` after having drained */
    bool behind;       /* reached `high` and not yet drained to `high / 2` */
    bool dispatching;
    tn_consumer *consumers; /* circular order starts at rr */
    tn_consumer *rr;
    tn_flow_wait *waiters;
    /* Paging */
    const tn_pager_ops *pager;
    void *pager_ctx;
    uint64_t mem_limit, mem; /* bytes of queued in-memory deliveries */
    tn_paged *pg;            /* ring of paged references, after every in-memory one */
    size_t pg_head, pg_len, pg_cap;
    uint32_t n_paged; /* live references in the ring (pg_len counts dropped ones too) */
    uint64_t paged_bytes;
    bool refilling;
};

/* Doubly-linked list helpers over (head, tail, next, prev). */
#define LIST_APPEND(head, tail, n)                                                                 \
    do {                                                                                           \
        (n)->next = NULL;                                                                          \
        (n)->prev = (tail);                                                                        \
        if (tail)                                                                                  \
            (tail)->next = (n);                                                                    \
        else                                                                                       \
            (head) = (n);                                                                          \
        (tail) = (n);                                                                              \
    } while (0)
#define LIST_PREPEND(head, tail, n)                                                                \
    do {                                                                                           \
        (n)->prev = NULL;                                                                          \
        (n)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (n);                                                                    \
        else                                                                                       \
            (tail) = (n);                                                                          \
        (head) = (n);                                                                              \
    } while (0)
#define LIST_REMOVE(head, tail, n)                                                                 \
    do {                                                                                           \
        if ((n)->prev)                                                                             \
            (n)->prev->next = (n)->next;                                                           \
        else                                                                                       \
            (head) = (n)->next;                                                                    \
        if ((n)->next)                                                                             \
            (n)->next->prev = (n)->prev;                                                           \
        else                                                                                       \
            (tail) = (n)->prev;                                                                    \
        (n)->next = (n)->prev = NULL;                                                              \
    } while (0)

static uint64_t
mem_of(const tn_delivery *d)
{
    return sizeof *d + tn_message_size(d->msg);
}

/* The queued (in-memory) list, with its byte count. */
static void
queued_append(tn_queue *q, tn_delivery *d)
{
    LIST_APPEND(q->head, q->tail, d);
    q->depth++;
    q->mem += mem_of(d);
}

static void
queued_prepend(tn_queue *q, tn_delivery *d)
{
    LIST_PREPEND(q->head, q->tail, d);
    q->depth++;
    q->mem += mem_of(d);
}

/* Back where it was: after `before` (NULL: at the head). */
static void
queued_insert_after(tn_queue *q, tn_delivery *before, tn_delivery *d)
{
    if (!before) {
        queued_prepend(q, d);
        return;
    }
    d->prev = before;
    d->next = before->next;
    if (before->next)
        before->next->prev = d;
    else
        q->tail = d;
    before->next = d;
    q->depth++;
    q->mem += mem_of(d);
}

static void
queued_remove(tn_queue *q, tn_delivery *d)
{
    LIST_REMOVE(q->head, q->tail, d);
    q->depth--;
    q->mem -= mem_of(d);
}

/* Deliveries come from a per-thread free list, so routing a message allocates nothing once warm;
 * sanitizer builds use malloc for each, so use after free is still caught. */
#define DELIVERY_KEEP 16384
#define USE_FREE_LIST (!TN_SANITIZED)

static _Thread_local tn_delivery *free_deliveries;
static _Thread_local unsigned n_free_deliveries;

static tn_delivery *
delivery_alloc(void)
{
    tn_delivery *d = free_deliveries;
    if (USE_FREE_LIST && d) {
        free_deliveries = d->next;
        n_free_deliveries--;
        return d;
    }
    return tn_xmalloc(sizeof *d);
}

static void
delivery_free(tn_delivery *d)
{
    tn_message_unref(d->msg);
    if (USE_FREE_LIST && n_free_deliveries < DELIVERY_KEEP) {
        d->next = free_deliveries;
        free_deliveries = d;
        n_free_deliveries++;
        return;
    }
    free(d);
}

void
tn_flow_init(tn_flow *f, void (*resume)(tn_flow *f))
{
    f->blocked = 0;
    f->resume = resume;
    f->waits = NULL;
}

static void
wait_unlink(tn_flow_wait *w)
{
    if (w->qprev)
        w->qprev->qnext = w->qnext;
    else
        w->q->waiters = w->qnext;
    if (w->qnext)
        w->qnext->qprev = w->qprev;
    if (w->fprev)
        w->fprev->fnext = w->fnext;
    else
        w->f->waits = w->fnext;
    if (w->fnext)
        w->fnext->fprev = w->fprev;
    w->f->blocked--;
    free(w);
}

void
tn_flow_fini(tn_flow *f)
{
    while (f->waits)
        wait_unlink(f->waits);
}

/* Wakes every producer waiting on q; called when q has drained, outside any dispatch. */
static void
wake_waiters(tn_queue *q)
{
    while (q->waiters) {
        tn_flow *f = q->waiters->f;
        wait_unlink(q->waiters);
        if (f->blocked == 0 && f->resume)
            f->resume(f);
    }
}

tn_queue *
tn_queue_new(uint32_t high, uint32_t hard)
{
    tn_queue *q = tn_xcalloc(1, sizeof *q);
    q->high = high;
    q->hard = hard;
    return q;
}

static uint32_t total(const tn_queue *q);

/* After anything that shrinks the queue or raises its limits: ends a congestion episode once the
 * queue is down to half of `high`, and resumes the producers that waited for it. */
static void
check_drained(tn_queue *q)
{
    if (q->dispatching || total(q) > q->high / 2)
        return;
    q->behind = false;
    if (q->waiters)
        wake_waiters(q);
}

/* A push that brings the queue to `high` starts a congestion episode. */
static void
check_congested(tn_queue *q)
{
    if (!q->behind && q->high && total(q) >= q->high) {
        q->behind = true;
        q->episodes++;
    }
}

void
tn_queue_set_limits(tn_queue *q, uint32_t high, uint32_t hard)
{
    q->high = high;
    q->hard = hard;
    if (!high)
        q->behind = false;
    check_drained(q);
}

void
tn_queue_wake(tn_queue *q)
{
    wake_waiters(q);
}

uint64_t
tn_queue_taken(const tn_queue *q)
{
    return q->taken;
}

uint32_t
tn_queue_behind(const tn_queue *q)
{
    return q->behind ? q->episodes : 0;
}

void
tn_queue_free(tn_queue *q)
{
    if (!q)
        return;
    while (q->consumers) {
        tn_consumer *c = q->consumers;
        while (c->ua_head) {
            tn_delivery *d = c->ua_head;
            LIST_REMOVE(c->ua_head, c->ua_tail, d);
            delivery_free(d);
        }
        q->consumers = c->next;
        free(c);
    }
    while (q->head) {
        tn_delivery *d = q->head;
        LIST_REMOVE(q->head, q->tail, d);
        delivery_free(d);
    }
    /* Producers waiting on this queue have nothing to wait for any more. */
    wake_waiters(q);
    free(q->pg);
    free(q);
}

static uint32_t
total(const tn_queue *q)
{
    return q->depth + q->n_paged;
}

bool
tn_queue_is_congested(const tn_queue *q)
{
    return q->high && total(q) >= q->high;
}

/* ---- paging ---- */

static tn_paged *
pg_at(tn_queue *q, size_t i)
{
    return &q->pg[(q->pg_head + i) % q->pg_cap];
}

static void
pg_push(tn_queue *q, const tn_paged *p)
{
    tn_assert(p->id != 0);
    if (q->pg_len == q->pg_cap) {
        size_t cap = q->pg_cap ? q->pg_cap * 2 : 64;
        tn_paged *n = tn_xmalloc(cap * sizeof *n);
        for (size_t i = 0; i < q->pg_len; i++)
            n[i] = *pg_at(q, i);
        free(q->pg);
        q->pg = n;
        q->pg_cap = cap;
        q->pg_head = 0;
    }
    *pg_at(q, q->pg_len++) = *p;
    q->n_paged++;
    q->paged_bytes += p->size;
}

/* Pops the head reference (dropped ones are skipped); the ring is freed once empty. */
static void
pg_pop(tn_queue *q)
{
    tn_paged *p = pg_at(q, 0);
    if (p->id) {
        q->n_paged--;
        q->paged_bytes -= p->size;
    }
    q->pg_head = (q->pg_head + 1) % q->pg_cap;
    q->pg_len--;
    while (q->pg_len && pg_at(q, 0)->id == 0) {
        q->pg_head = (q->pg_head + 1) % q->pg_cap;
        q->pg_len--;
    }
    if (q->pg_len == 0) {
        free(q->pg);
        q->pg = NULL;
        q->pg_cap = q->pg_head = 0;
    }
}

static tn_delivery *
delivery_new(tn_message *m, uint8_t qos, bool ack, uint8_t flags)
{
    tn_delivery *d = delivery_alloc();
    d->msg = m;
    d->owner = NULL;
    d->count = 0;
    d->tag = 0;
    d->qos = qos;
    d->state = 0;
    d->flags = flags;
    d->ack = ack;
    return d;
}

/* Moves paged references into memory while there is room; stops at TN_EAGAIN. */
static void
refill(tn_queue *q)
{
    if (q->refilling)
        return;
    q->refilling = true;
    while (q->n_paged && q->mem < q->mem_limit) {
        tn_paged p = *pg_at(q, 0);
        tn_message *m = NULL;
        int rc = q->pager->load(q->pager_ctx, &p, &m);
        if (rc == TN_EAGAIN)
            break;
        pg_pop(q);
        if (rc == 0)
            queued_append(q, delivery_new(m, (uint8_t)p.qos, true, (uint8_t)p.flags));
    }
    q->refilling = false;
}

void
tn_queue_set_pager(tn_queue *q, const tn_pager_ops *ops, void *ctx, uint64_t mem_limit)
{
    q->pager = ops;
    q->pager_ctx = ctx;
    q->mem_limit = mem_limit;
}

uint32_t
tn_queue_paged(const tn_queue *q)
{
    return q->n_paged;
}

uint64_t
tn_queue_paged_bytes(const tn_queue *q)
{
    return q->paged_bytes;
}

void
tn_queue_paged_walk(tn_queue *q, void (*cb)(void *arg, tn_paged *p), void *arg)
{
    for (size_t i = 0; i < q->pg_len; i++) {
        tn_paged *p = pg_at(q, i);
        if (p->id) {
            uint32_t before = p->size;
            cb(arg, p);
            q->paged_bytes += (uint64_t)p->size - before;
        }
    }
}

bool
tn_queue_is_full(const tn_queue *q)
{
    return q->hard && total(q) >= q->hard;
}

void
tn_queue_wait(tn_queue *q, tn_flow *f)
{
    if (!tn_queue_is_congested(q))
        return;
    for (tn_flow_wait *w = f->waits; w; w = w->fnext)
        if (w->q == q)
            return;
    tn_flow_wait *w = tn_xcalloc(1, sizeof *w);
    w->q = q;
    w->f = f;
    w->qnext = q->waiters;
    if (q->waiters)
        q->waiters->qprev = w;
    q->waiters = w;
    w->fnext = f->waits;
    if (f->waits)
        f->waits->fprev = w;
    f->waits = w;
    f->blocked++;
}

static bool
can_take(const tn_consumer *c, const tn_delivery *d)
{
    return !c->paused && (!d->ack || c->n_unacked < c->credit);
}

/* Next consumer, round robin from q->rr, that can take d; NULL if none. *refused: one could
 * but refuses d. */
static tn_consumer *
pick(tn_queue *q, const tn_delivery *d, bool *refused)
{
    tn_consumer *start = q->rr ? q->rr : q->consumers;
    tn_consumer *c = start;
    do {
        if (can_take(c, d)) {
            if (!c->ops->refuses || !c->ops->refuses(c->ctx, d))
                return c;
            *refused = true;
        }
        c = c->next ? c->next : q->consumers;
    } while (c != start);
    return NULL;
}

/* Deliveries looked at behind one that consumers refuse, per dispatch round. */
#define REFUSED_SCAN 64

static void
dispatch(tn_queue *q)
{
    if (q->dispatching)
        return;
    q->dispatching = true;
    while (q->consumers) {
        if (q->n_paged && q->mem < q->mem_limit / 2)
            refill(q);
        if (!q->head)
            break;
        tn_delivery *d = q->head;
        bool refused = false;
        tn_consumer *c = pick(q, d, &refused);
        for (int i = 0; !c && refused && d->next && i < REFUSED_SCAN; i++) {
            d = d->next; /* refused by whoever could take it: offer what is behind it */
            refused = false;
            c = pick(q, d, &refused);
        }
        if (!c)
            break;
        tn_delivery *before = d->prev;
        queued_remove(q, d);
        d->count++;
        d->owner = c;
        if (c->ops->deliver(c->ctx, d) != 0) {
            d->count--;
            d->owner = NULL;
            queued_insert_after(q, before, d);
            c->paused = true;
            continue;
        }
        q->rr = c->next;
        q->taken++;
        if (d->ack) {
            LIST_APPEND(c->ua_head, c->ua_tail, d);
            c->n_unacked++;
            q->inflight++;
        } else {
            delivery_free(d);
        }
    }
    q->dispatching = false;
    check_drained(q);
}

int
tn_queue_push(tn_queue *q, tn_message *m, uint8_t qos, bool ack, uint8_t flags)
{
    if (q->hard && total(q) >= q->hard) {
        q->dropped++;
        return TN_ETOOBIG;
    }
    queued_append(q, delivery_new(tn_message_ref(m), qos, ack, flags));
    check_congested(q);
    dispatch(q);
    return 0;
}

void
tn_queue_refill(tn_queue *q)
{
    if (q->consumers)
        dispatch(q);
}

int
tn_queue_push_ref(tn_queue *q, tn_message *m, const tn_paged *where)
{
    if (q->hard && total(q) >= q->hard) {
        q->dropped++;
        return TN_ETOOBIG;
    }
    uint64_t size = m ? sizeof(tn_delivery) + tn_message_size(m) : where->size;
    bool fits = q->n_paged == 0 && (!q->mem_limit || q->mem + size <= q->mem_limit);
    if (fits && m)
        tn_message_ref(m);
    else if (fits && q->pager->load(q->pager_ctx, where, &m) != 0)
        m = NULL; /* not readable now: keep the reference */
    if (fits && m) {
        queued_append(q, delivery_new(m, (uint8_t)where->qos, true, (uint8_t)where->flags));
    } else {
        pg_push(q, where);
    }
    check_congested(q);
    dispatch(q);
    return 0;
}

tn_consumer *
tn_queue_attach(tn_queue *q, const tn_consumer_ops *ops, void *ctx, uint32_t credit)
{
    tn_consumer *c = tn_xcalloc(1, sizeof *c);
    c->q = q;
    c->ops = ops;
    c->ctx = ctx;
    c->credit = credit;
    c->next = q->consumers;
    if (q->consumers)
        q->consumers->prev = c;
    q->consumers = c;
    q->n_consumers++;
    dispatch(q);
    return c;
}

/* Puts c's unacked deliveries back at the head of q, in their delivery order. */
static void
requeue_unacked(tn_consumer *c)
{
    tn_queue *q = c->q;
    while (c->ua_tail) {
        tn_delivery *d = c->ua_tail;
        LIST_REMOVE(c->ua_head, c->ua_tail, d);
        d->owner = NULL;
        queued_prepend(q, d);
        q->inflight--;
    }
    c->n_unacked = 0;
}

void
tn_queue_detach(tn_consumer *c)
{
    tn_queue *q = c->q;
    tn_assert(!q->dispatching);
    requeue_unacked(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        q->consumers = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (q->rr == c)
        q->rr = c->next;
    q->n_consumers--;
    free(c);
    dispatch(q);
}

void
tn_queue_set_credit(tn_consumer *c, uint32_t credit)
{
    c->credit = credit;
    dispatch(c->q);
}

void
tn_queue_consumer_ready(tn_consumer *c)
{
    c->paused = false;
    dispatch(c->q);
}

tn_delivery *
tn_queue_first(tn_queue *q)
{
    return q->head;
}

tn_delivery *
tn_queue_unacked_first(tn_consumer *c)
{
    return c->ua_head;
}

tn_delivery *
tn_queue_unacked_next(tn_delivery *d)
{
    return d->next;
}

static void
unlink_unacked(tn_delivery *d)
{
    tn_consumer *c = d->owner;
    tn_assert(c && d->ack);
    LIST_REMOVE(c->ua_head, c->ua_tail, d);
    c->n_unacked--;
    c->q->inflight--;
    d->owner = NULL;
}

void
tn_queue_ack(tn_delivery *d)
{
    tn_queue *q = d->owner->q;
    unlink_unacked(d);
    delivery_free(d);
    dispatch(q);
}

void
tn_queue_release(tn_delivery *d)
{
    tn_queue *q = d->owner->q;
    unlink_unacked(d);
    queued_prepend(q, d);
    dispatch(q);
}

bool
tn_queue_drop(tn_queue *q, uint64_t msg_id)
{
    for (tn_delivery *d = q->head; d; d = d->next) {
        if (d->msg->id == msg_id) {
            queued_remove(q, d);
            delivery_free(d);
            check_drained(q);
            return true;
        }
    }
    for (size_t i = 0; i < q->pg_len; i++) {
        tn_paged *p = pg_at(q, i);
        if (p->id != msg_id)
            continue;
        if (i == 0) {
            pg_pop(q);
        } else {
            p->id = 0;
            q->n_paged--;
            q->paged_bytes -= p->size;
        }
        check_drained(q);
        return true;
    }
    return false;
}

uint32_t
tn_queue_depth(const tn_queue *q)
{
    return total(q);
}

uint32_t
tn_queue_inflight(const tn_queue *q)
{
    return q->inflight;
}

uint64_t
tn_queue_dropped(const tn_queue *q)
{
    return q->dropped;
}

uint32_t
tn_queue_consumers(const tn_queue *q)
{
    return q->n_consumers;
}
