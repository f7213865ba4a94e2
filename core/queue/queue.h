/*
 * queue: a FIFO of deliveries with competing consumers, credit (a window of unacked deliveries
 * per consumer), acks, redelivery with a delivery count, and producer flow control.
 *
 * A delivery holds one reference to its message. Deliveries that need an ack (ack = true) stay
 * with the consumer that took them until tn_queue_ack() or tn_queue_release(); when a consumer
 * detaches, its unacked deliveries go back to the head of the queue in their original order,
 * keeping their tag and state so a protocol can resume them (MQTT re-sends with the same packet
 * identifier [MQTT-4.4.0-1]).
 *
 * Limits: past `high` queued deliveries the queue is congested: deliveries are still accepted
 * and producers are asked to wait (tn_queue_wait); they are resumed when the queue falls to
 * `high / 2`, and also whenever the reason to wait goes away otherwise (the queue is freed, its
 * limits change, tn_queue_wake). From reaching `high` until falling to `high / 2` the queue is
 * "behind" (one congestion episode, tn_queue_behind): the owner decides how long that may last
 * (core/broker: slow consumers). Past `hard` (0 = none) pushes are refused (TN_ETOOBIG): the
 * caller decides whether that is a drop to log or an error to report.
 *
 * Thread: the loop thread only. Callbacks are never called re-entrantly from inside another
 * callback of the same queue.
 */
#ifndef TN_QUEUE_H
#define TN_QUEUE_H

#include "core/message/message.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct tn_queue tn_queue;
typedef struct tn_consumer tn_consumer;

/* Delivery flags */
#define TN_DELIVERY_RETAINED 0x01 /* comes from the retained store (MQTT retain flag = 1) */

typedef struct tn_delivery {
    tn_message *msg; /* one reference, owned by the delivery */
    struct tn_delivery *next;
    struct tn_delivery *prev;
    tn_consumer *owner; /* consumer holding it unacked, or NULL while queued */
    uint32_t count;     /* times delivered so far (0 before the first delivery) */
    uint16_t tag;       /* protocol's id for it (MQTT packet id); kept across requeues */
    uint8_t qos;        /* QoS of this delivery */
    uint8_t state;      /* protocol's scratch state (MQTT: PUBREC received); kept */
    uint8_t flags;      /* TN_DELIVERY_* */
    bool ack;           /* needs an ack before it is released */
} tn_delivery;

typedef struct tn_consumer_ops {
    /* Offers d to the consumer. Return 0 if taken (d is now the consumer's until acked or, for
     * a delivery with ack == false, released by the queue right after this call); TN_EAGAIN if
     * the consumer cannot take anything now: the queue stops offering to it until
     * tn_queue_consumer_ready(). Must not ack, release or detach from inside the call. */
    int (*deliver)(void *ctx, tn_delivery *d);
    /* Optional: true when this consumer must not be offered d (AMQP undeliverable-here). The
     * queue offers d to another consumer, and this one the deliveries behind d (up to 64 of
     * them are looked at per dispatch), so a refused delivery blocks no consumer. */
    bool (*refuses)(void *ctx, const tn_delivery *d);
} tn_consumer_ops;

/*
 * Paging: a queue given a pager keeps at most mem_limit bytes of queued deliveries in memory.
 * Past that, a delivery whose message is already on disk is kept as a tn_paged reference only
 * (24 bytes); references are loaded back through the pager, in order, as consumers take what is
 * in memory. The queue does not interpret seg/off/size: they are the owner's (a store
 * position).
 */
typedef struct tn_paged {
    uint64_t id; /* message id (0: dropped while paged) */
    uint64_t seg;
    uint32_t off;
    uint32_t size : 28;
    uint32_t qos : 2;
    uint32_t flags : 2; /* TN_DELIVERY_* */
} tn_paged;

typedef struct tn_pager_ops {
    /* Loads the message p refers to: 0 and a new reference in *out; TN_EAGAIN to be asked again
     * after tn_queue_refill(); anything else drops the reference (the owner logs why). */
    int (*load)(void *ctx, const tn_paged *p, tn_message **out);
} tn_pager_ops;

/* Producer flow control: a producer embeds a tn_flow. While `blocked` > 0 the producer should
 * stop reading new messages; `resume` is called when it drops back to 0. */
typedef struct tn_flow {
    uint32_t blocked;
    void (*resume)(struct tn_flow *f);
    struct tn_flow_wait *waits; /* private: one node per queue waited on */
} tn_flow;

void tn_flow_init(tn_flow *f, void (*resume)(tn_flow *f));
/* Stops waiting on every queue (the producer goes away). Does not call resume. */
void tn_flow_fini(tn_flow *f);

tn_queue *tn_queue_new(uint32_t high, uint32_t hard);
/* Frees the queue, its queued deliveries, and detaches remaining consumers (their unacked
 * deliveries are freed too). Waiting producers are resumed (their resume is called when they wait
 * on nothing else). */
void tn_queue_free(tn_queue *q);
/* New limits; producers waiting on q are resumed if q is no longer congested under them. */
void tn_queue_set_limits(tn_queue *q, uint32_t high, uint32_t hard);
/* Resumes every producer waiting on q now, congested or not (q goes offline, its consumer is
 * declared slow): they may wait again on their next push. */
void tn_queue_wake(tn_queue *q);
/* The current congestion episode's number (1, 2, ...; it changes with every new episode) while q
 * is behind: it reached `high` and has not yet fallen to `high / 2`; 0 when it is not behind. */
uint32_t tn_queue_behind(const tn_queue *q);
/* Deliveries taken by consumers since the queue was made (how fast it drains). */
uint64_t tn_queue_taken(const tn_queue *q);

/*
 * Appends a delivery of m (a new reference is taken) and dispatches.
 * Returns 0, or TN_ETOOBIG when the delivery was dropped: the queue is at `hard`. Congestion
 * (`high`) never drops: the caller makes its producer wait, or drops by its own rule first.
 */
int tn_queue_push(tn_queue *q, tn_message *m, uint8_t qos, bool ack, uint8_t flags);
/* Sets the pager and the in-memory limit (bytes of queued deliveries; 0: no paging). */
void tn_queue_set_pager(tn_queue *q, const tn_pager_ops *ops, void *ctx, uint64_t mem_limit);
/*
 * As tn_queue_push (with ack), for a message whose record is at where: the delivery is paged
 * (only the reference kept) when the queue is past its memory limit or already has paged
 * deliveries (order is kept). m may be NULL: then it is loaded through the pager if it is to
 * be kept in memory. The hard limit counts paged deliveries too.
 */
int tn_queue_push_ref(tn_queue *q, tn_message *m, const tn_paged *where);
/* Loads paged deliveries while there is room in memory and a consumer (after TN_EAGAIN). */
void tn_queue_refill(tn_queue *q);
/* Paged deliveries and the bytes of their records. */
uint32_t tn_queue_paged(const tn_queue *q);
uint64_t tn_queue_paged_bytes(const tn_queue *q);
/* Calls cb for every paged reference in order; cb may change seg/off/size (relocation). */
void tn_queue_paged_walk(tn_queue *q, void (*cb)(void *arg, tn_paged *p), void *arg);

/* True while the queue holds `high` or more queued (not in flight) deliveries. */
bool tn_queue_is_congested(const tn_queue *q);
/* True when the hard limit is reached: a push would be refused. */
bool tn_queue_is_full(const tn_queue *q);
/* If the queue is congested, makes f wait until it drains (at most once per queue). */
void tn_queue_wait(tn_queue *q, tn_flow *f);

/* Consumers. credit = how many deliveries with ack it may hold unacked (0 = none). */
tn_consumer *tn_queue_attach(tn_queue *q, const tn_consumer_ops *ops, void *ctx, uint32_t credit);
/* Detaches c; its unacked deliveries return to the queue head in order, count kept. */
void tn_queue_detach(tn_consumer *c);
void tn_queue_set_credit(tn_consumer *c, uint32_t credit);
/* The consumer can take deliveries again after returning TN_EAGAIN. */
void tn_queue_consumer_ready(tn_consumer *c);
/* Walks c's unacked deliveries in delivery order (for protocols that must find one by tag). */
tn_delivery *tn_queue_unacked_first(tn_consumer *c);
tn_delivery *tn_queue_unacked_next(tn_delivery *d);

/* Walks the queued (not in flight) deliveries in order (journal checkpoints). */
tn_delivery *tn_queue_first(tn_queue *q);

/* Acknowledges d (taken by a consumer): frees it and opens one credit. */
void tn_queue_ack(tn_delivery *d);
/* Gives d back: it goes to the head of the queue, to be delivered again (count kept). */
void tn_queue_release(tn_delivery *d);

/* Removes the first queued (not in flight, paged included) delivery of the message with this
 * id; false if none. Searches from the head, where acknowledged messages usually are (journal
 * replay). */
bool tn_queue_drop(tn_queue *q, uint64_t msg_id);

/* Queued (not in flight, paged included) deliveries, unacked deliveries, and drops so far. */
uint32_t tn_queue_depth(const tn_queue *q);
uint32_t tn_queue_inflight(const tn_queue *q);
uint64_t tn_queue_dropped(const tn_queue *q);
uint32_t tn_queue_consumers(const tn_queue *q);

#endif
