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
    bool dispatching;
    tn_consumer *consumers; /* circular order starts at rr */
    tn_consumer *rr;
    tn_flow_wait *waiters;
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

void
tn_queue_set_limits(tn_queue *q, uint32_t high, uint32_t hard)
{
    q->high = high;
    q->hard = hard;
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
    while (q->waiters)
        wait_unlink(q->waiters);
    free(q);
}

bool
tn_queue_is_congested(const tn_queue *q)
{
    return q->high && q->depth >= q->high;
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

/* Next consumer, round robin from q->rr, that can take d; NULL if none. */
static tn_consumer *
pick(tn_queue *q, const tn_delivery *d)
{
    tn_consumer *start = q->rr ? q->rr : q->consumers;
    tn_consumer *c = start;
    do {
        if (can_take(c, d))
            return c;
        c = c->next ? c->next : q->consumers;
    } while (c != start);
    return NULL;
}

static void
dispatch(tn_queue *q)
{
    if (q->dispatching)
        return;
    q->dispatching = true;
    while (q->head && q->consumers) {
        tn_delivery *d = q->head;
        tn_consumer *c = pick(q, d);
        if (!c)
            break;
        LIST_REMOVE(q->head, q->tail, d);
        q->depth--;
        d->count++;
        d->owner = c;
        if (c->ops->deliver(c->ctx, d) != 0) {
            d->count--;
            d->owner = NULL;
            LIST_PREPEND(q->head, q->tail, d);
            q->depth++;
            c->paused = true;
            continue;
        }
        q->rr = c->next;
        if (d->ack) {
            LIST_APPEND(c->ua_head, c->ua_tail, d);
            c->n_unacked++;
            q->inflight++;
        } else {
            delivery_free(d);
        }
    }
    q->dispatching = false;
    if (q->waiters && q->depth <= q->high / 2)
        wake_waiters(q);
}

int
tn_queue_push(tn_queue *q, tn_message *m, uint8_t qos, bool ack, uint8_t flags)
{
    if ((q->hard && q->depth >= q->hard) || (!ack && q->high && q->depth >= q->high)) {
        q->dropped++;
        return TN_ETOOBIG;
    }
    tn_delivery *d = delivery_alloc();
    d->msg = tn_message_ref(m);
    d->owner = NULL;
    d->count = 0;
    d->tag = 0;
    d->qos = qos;
    d->state = 0;
    d->flags = flags;
    d->ack = ack;
    LIST_APPEND(q->head, q->tail, d);
    q->depth++;
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
        LIST_PREPEND(q->head, q->tail, d);
        q->depth++;
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
    LIST_PREPEND(q->head, q->tail, d);
    q->depth++;
    dispatch(q);
}

bool
tn_queue_drop(tn_queue *q, uint64_t msg_id)
{
    for (tn_delivery *d = q->head; d; d = d->next) {
        if (d->msg->id == msg_id) {
            LIST_REMOVE(q->head, q->tail, d);
            q->depth--;
            delivery_free(d);
            return true;
        }
    }
    return false;
}

uint32_t
tn_queue_depth(const tn_queue *q)
{
    return q->depth;
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
