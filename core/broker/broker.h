/*
 * broker: the routing core that every protocol shares: client sessions, topic subscriptions,
 * retained messages and publishing.
 *
 * A session is a client's state that may outlive its connection (MQTT clean session 0): its
 * subscriptions and a private tn_queue of deliveries. While a connection is attached, the queue
 * offers deliveries to it through tn_session_ops.deliver, with up to max_inflight unacked; the
 * connection acks them with tn_queue_ack(). While detached, a persistent session keeps queueing
 * QoS 1/2 deliveries (up to max_offline) and drops QoS 0 ones.
 *
 * Publishing routes a message through the topic tree to every matching session exactly once, at
 * the highest QoS granted by its matching subscriptions [MQTT-3.3.5-1], capped by the publish
 * QoS. A producer whose messages fill an attached subscriber's queue past max_queued is asked to
 * wait (tn_flow), so a subscriber that is briefly behind slows its producers instead of losing
 * messages. One that stays behind longer than slow_consumer_ms is a slow consumer: QoS 0
 * deliveries to it are dropped (counted, logged once per episode) and QoS 0 producers no longer
 * wait on it, until it catches up; QoS 1/2 producers still wait (nothing is dropped at QoS 1/2
 * while the subscriber is connected). Producers never wait on an offline session.
 *
 * Names are canonical ('.' separated; see core/topictree). Thread: the loop thread only.
 */
#ifndef TN_BROKER_H
#define TN_BROKER_H

#include "core/message/message.h"
#include "core/queue/queue.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tn_broker tn_broker;
struct tn_store;
typedef struct tn_session tn_session;

typedef struct tn_broker_limits {
    uint32_t max_inflight; /* unacked QoS 1/2 deliveries per attached session */
    uint32_t max_queued;   /* queued deliveries per session before producers wait / QoS 0 drops */
    uint32_t max_offline;  /* queued deliveries per detached session; more are dropped (logged) */
    uint64_t max_queue_memory; /* bytes of queued deliveries a persistent session keeps in memory
                                  with a store; past it they are paged (read back from the
                                  journal as its client catches up). 0: no paging */
    uint64_t compact_bytes;    /* journal bytes written before a checkpoint rewrites the live state
                                  and deletes older segments (0: 64 MiB) */
    uint32_t slow_consumer_ms; /* a subscriber behind (max_queued reached, not yet back to half)
                                  for this long is a slow consumer: QoS 0 to it is dropped and
                                  producers stop waiting on it (0: never; needs tn_broker_tick) */
    uint32_t max_topic_levels; /* topic names and filters with more levels are refused (0: any) */
    uint64_t max_incoming;     /* bytes held by large messages arriving and waiting in memory,
                                  broker-wide (0: any); see tn_intake */
} tn_broker_limits;

typedef struct tn_broker_stats {
    uint64_t published;       /* messages accepted by tn_broker_publish */
    uint64_t delivered;       /* deliveries queued to sessions */
    uint64_t dropped_qos0;    /* QoS 0 deliveries dropped for slow consumers */
    uint64_t slow_episodes;   /* times a subscriber became a slow consumer */
    uint32_t slow_now;        /* subscribers that are slow consumers now */
    uint64_t dropped_offline; /* QoS 1/2 deliveries dropped for full offline sessions */
    uint32_t sessions;
    uint32_t retained;
    uint64_t paged; /* queued deliveries held on disk only (read back as clients catch up) */
    uint64_t incoming_bytes;   /* held by large messages arriving or waiting (tn_intake) */
    uint32_t incoming_waiting; /* connections waiting for room to receive a large message */
} tn_broker_stats;

typedef struct tn_session_ops {
    /* Same contract as tn_consumer_ops.deliver. */
    int (*deliver)(void *ctx, tn_delivery *d);
    /* Another connection is taking this session over: the owner must call tn_session_detach()
     * before returning, then close its connection. */
    void (*kick)(void *ctx);
} tn_session_ops;

tn_broker *tn_broker_new(const tn_broker_limits *limits);

/*
 * Durability (core/store). attach before anything else happens; recover then replays the
 * journal into the broker (sessions, subscriptions, queued QoS 1/2 messages of persistent
 * sessions, retained messages). From then on every change to that state is appended to the
 * journal, and tn_broker_lsn() tells the last record appended: a protocol confirms a publish
 * (PUBACK, PUBREC) only once the store says that LSN is durable.
 */
void tn_broker_attach_store(tn_broker *b, struct tn_store *store);
int tn_broker_recover(tn_broker *b, char *err, size_t errlen);
uint64_t tn_broker_lsn(const tn_broker *b);
/*
 * Replies that confirm what the broker journaled (MQTT PUBACK, STOMP RECEIPT, ...): each
 * connection has a tn_replies, a FIFO of answers; tn_broker_reply() hands an answer to
 * r->send at once when everything journaled so far is durable (or there is no store), else
 * once it is, in order. status is 0, or the store's error (the answer must not be sent then).
 * flags are the caller's, passed back. A closing connection calls tn_replies_cancel().
 */
typedef struct tn_replies tn_replies;
struct tn_replies {
    struct tn_reply *head, *tail;
    void (*send)(tn_replies *r, const uint8_t *p, size_t n, uint32_t flags, int status);
};
void tn_broker_reply(tn_broker *b, tn_replies *r, const uint8_t *p, size_t n, uint32_t flags);
void tn_replies_cancel(tn_replies *r);

/* Housekeeping at a safe point (not inside a broker call): once compact_bytes have been written
 * since the last checkpoint (and twice the last checkpoint's size), writes a checkpoint of the
 * live state and has the store delete the segments it makes dead. */
void tn_broker_maintain(tn_broker *b);
struct tn_store *tn_broker_store(const tn_broker *b);
/* Housekeeping on a timer (every 100 ms or so) with the loop's clock in milliseconds: declares
 * subscribers that stayed behind for slow_consumer_ms slow consumers (and resumes the producers
 * that waited on them). */
void tn_broker_tick(tn_broker *b, uint64_t now_ms);
/* Whether a canonical topic name or filter is within max_topic_levels. */
bool tn_broker_levels_ok(const tn_broker *b, const char *name);
/* A pair's standby, or an active that lost its lease, serves no client: every adapter refuses
 * new connections (MQTT CONNACK 3 "server unavailable", a STOMP ERROR "standby", an AMQP close
 * with amqp:connection:redirect naming the active where known). active_host: the active's
 * address (copied; NULL: unknown). */
void tn_broker_set_standby(tn_broker *b, bool standby, const char *active_host);
/* True while standby; *active_host (if asked) gets the active's address or NULL. */
bool tn_broker_standby(const tn_broker *b, const char **active_host);
/* A standby about to take over (its active has gone silent: the lease may come here within
 * the lease's time) holds new clients until until_ms (loop time) instead of sending them away,
 * so that they are served as soon as this node is active rather than bouncing to a dead node
 * (0: hold no more). Holds end when the node stops being a standby, when set_hold says so, or
 * at tn_broker_tick past until_ms. */
void tn_broker_set_hold(tn_broker *b, uint64_t until_ms);
/* A connection that has not said who it is yet asks whether to wait: NULL when it goes on
 * now (no standby, or a standby not about to take over: it is refused as usual); otherwise a
 * hold, and wake(arg) is called once, later (never from inside this call), when the client
 * should ask again (the hold is then over: free it with tn_broker_unhold). */
typedef struct tn_hold tn_hold;
tn_hold *tn_broker_hold(tn_broker *b, void (*wake)(void *arg), void *arg);
/* Frees h (woken or not: a connection closed while held). NULL is ignored. */
void tn_broker_unhold(tn_broker *b, tn_hold *h);
/* Permissions (core/auth's ACL, over MQTT-style names: a topic `a.b` here is `a/b` there, a
 * queue `orders.eu` is `orders/eu`). With one set, a message published to a topic reaches only
 * the subscribers whose identity (tn_session_set_identity) may read it, retained messages on a
 * SUBSCRIBE too; the adapters check writes and subscriptions themselves (tn_broker_may). NULL:
 * everything is allowed. The owner keeps acl alive while set (a reload sets the new one). */
struct tn_acl;
void tn_broker_set_acl(tn_broker *b, const struct tn_acl *acl);
const struct tn_acl *tn_broker_acl(const tn_broker *b);
/* Who is behind s (copied): user (NULL: anonymous) and the client id `%c` stands for (NULL:
 * the session's own id). */
void tn_session_set_identity(tn_session *s, const char *user, const char *client_id);
enum { TN_MAY_READ = 1, TN_MAY_WRITE = 2 };
/* Whether user/client_id may read or write (TN_MAY_*) the topic (queue: false) named `name` in
 * this core's form, or, with filter, subscribe to the filter (read: some name it can match is
 * readable). True without an ACL. */
bool tn_broker_may(const tn_broker *b, const char *user, const char *client_id, bool queue,
                   const char *name, int access, bool filter);
/* Calls cb for every named queue (STOMP /queue/, AMQP queue://, durable subscriptions kept as
 * queues), in no particular order: its name in this core's form and its queue. */
void tn_broker_walk_queues(tn_broker *b,
                           void (*cb)(void *arg, const char *name, size_t len, tn_queue *q),
                           void *arg);
/* Frees every session (all must be detached), subscription and retained message. */
void tn_broker_free(tn_broker *b);
void tn_broker_get_stats(const tn_broker *b, tn_broker_stats *out);
const tn_broker_limits *tn_broker_get_limits(const tn_broker *b);

/*
 * Memory for large messages: a connection receiving one reserves its bytes from one
 * broker-wide budget (max_incoming) before it holds them; once whole, the message keeps its
 * payload charged until it is freed (delivered to every subscriber) or stored as retained, so
 * large messages arriving and waiting in memory stay within the budget. A reservation that does
 * not fit waits, oldest first: the connection stops reading (only it; small messages and acks
 * of others flow on) until resume() says the bytes are its own. One message larger than the
 * whole budget gets through alone; a holder may grow (a STOMP body of unknown length) by
 * reserving more, and the oldest holder always may, so holders never wait for each other.
 */
typedef struct tn_intake tn_intake;
struct tn_intake {
    uint64_t held;          /* bytes granted */
    uint64_t want;          /* bytes asked for while waiting */
    uint64_t seq;           /* when it began (0: holds nothing, waits for nothing) */
    bool waiting;           /* in the queue: resume() comes once want is granted */
    tn_intake *prev, *next; /* in the broker's list of holders and waiters, by seq */
    void (*resume)(tn_intake *t);
};
/* Reserves n more bytes for t. Returns 0 when granted now (t->held grew by n), TN_EAGAIN when t
 * must wait: resume(t) is called once they are (not from inside this call). */
int tn_intake_reserve(tn_broker *b, tn_intake *t, uint64_t n);
/* Gives back everything t holds and leaves the queue; waiters that now fit are granted, oldest
 * first (their resume() runs inside this call). Harmless when t holds nothing. */
void tn_intake_release(tn_broker *b, tn_intake *t);
/* The message t was receiving is whole: its payload stays charged to the budget until the
 * message is freed (it waits in memory for its subscribers), the rest t holds is given back,
 * as by tn_intake_release(). A retained message is uncharged when stored. */
void tn_intake_charge(tn_broker *b, tn_intake *t, tn_message *m);

/*
 * Opens the session for client_id (any bytes, len given) for the connection ops/ctx.
 * An attached session with the same id is kicked first (takeover [MQTT-3.1.4-2]).
 * clean: a stored session is discarded first, and this one is discarded on detach.
 * *present: true when a stored session was resumed [MQTT-3.2.2-2].
 * Nothing is delivered until tn_session_start(), so the protocol can answer (CONNACK) first.
 */
int tn_broker_session_open(tn_broker *b, const char *client_id, size_t len, bool clean,
                           const tn_session_ops *ops, void *ctx, tn_session **out, bool *present);
/* Starts deliveries: queued and unacked deliveries of a resumed session come first, in order. */
void tn_session_start(tn_session *s);
/* Detaches the connection. A clean session is freed here (s is invalid after); a persistent one
 * keeps its subscriptions, and its unacked deliveries return to its queue. */
void tn_session_detach(tn_session *s);
/* Discards a detached persistent session for good. */
void tn_session_discard(tn_session *s);

/* Exactly-once receipt (MQTT QoS 2 method B): remembers ids of messages received but not yet
 * released, across reconnects of a persistent session. mark returns false when the id was
 * already marked (a duplicate to acknowledge but not publish again); release returns whether it
 * was marked. */
bool tn_session_rx_mark(tn_session *s, uint16_t id);
bool tn_session_rx_release(tn_session *s, uint16_t id);
/* Outgoing packet ids: a free id in 1..65535 not used by another unacked delivery, or 0 when all
 * are in use; free gives one back. The id tried first is derived from the message id, so a
 * delivery replayed after a restart gets the packet id it had before (MQTT requires the original
 * id when re-sending [MQTT-4.4.0-1]; a QoS 2 receiver relies on it to drop the duplicate). */
uint16_t tn_session_tx_alloc(tn_session *s, uint64_t msg_id);
void tn_session_tx_free(tn_session *s, uint16_t id);

/* Acknowledges a delivery this session's connection took (journals it for a persistent
 * session): use this, not tn_queue_ack(), for session deliveries. */
void tn_session_ack(tn_session *s, tn_delivery *d);

/* Sets an unacked delivery's protocol state (tn_delivery.state) and journals it for a persistent
 * session, so a restart resumes it (MQTT: PUBREC received, re-send PUBREL not PUBLISH). The
 * protocol waits for tn_broker_lsn() to be durable before acting on it. */
void tn_session_set_state(tn_session *s, tn_delivery *d, uint8_t state);

/* The attached consumer (for tn_queue_unacked_first/next); NULL before start and detached. */
tn_consumer *tn_session_consumer(tn_session *s);
const char *tn_session_id(const tn_session *s);

/*
 * Adds or replaces the subscription for filter (canonical) with the granted qos
 * [MQTT-3.8.4-3], then queues the retained messages matching it with TN_DELIVERY_RETAINED: all
 * of them, past max_queued (they go out as the subscriber reads, and its producers wait
 * meanwhile). TN_EINVAL for a malformed filter, TN_ETOOBIG past max_topic_levels.
 */
int tn_session_subscribe(tn_session *s, const char *filter, uint8_t qos);
/* TN_ENOENT when the session has no such subscription. */
int tn_session_unsubscribe(tn_session *s, const char *filter);

/*
 * Publishes m (borrowed; the broker takes its own references) to every matching session, and
 * stores or clears it as the retained message of its name when m->retain is set (an empty
 * payload clears [MQTT-3.3.1-10]). Sets m->id. If producer is given and a subscriber's queue is
 * congested, the producer is made to wait (producer->blocked > 0). TN_ETOOBIG (nothing done)
 * when the name has more than max_topic_levels levels.
 */
int tn_broker_publish(tn_broker *b, tn_message *m, tn_flow *producer);

/*
 * Named queues (STOMP /queue/NAME; AMQP later): point-to-point, each message to one of the
 * consumers attached (tn_queue_attach on tn_session_queue(); ack with tn_session_ack). A queue
 * is a session without a connection: created on first use, durable ones journaled (they and
 * their persistent messages survive restarts), temporary ones (durable false) are not.
 * Internal session ids start with '\x01'; client ids that do are refused by the protocols.
 */
tn_session *tn_broker_queue(tn_broker *b, const char *name, size_t len, bool durable);
/* The queue named so, or NULL if there is none (nothing is created). */
tn_session *tn_broker_queue_find(tn_broker *b, const char *name, size_t len);
/* The queue's name (not NUL-terminated), or NULL if s is not a named queue. */
const char *tn_session_queue_name(const tn_session *s, size_t *len);
/* Sends m (borrowed) to queue q: journaled when m->persistent. The producer waits while the
 * queue holds max_offline_messages. TN_ETOOBIG if dropped. */
int tn_broker_send(tn_broker *b, tn_session *q, tn_message *m, tn_flow *producer);
/* Deletes a queue without consumers (temporary queues when their connection closes). */
void tn_broker_queue_free(tn_session *q);
tn_queue *tn_session_queue(tn_session *s);
/* The session with this id (a client id, or an internal one such as a durable subscription's),
 * or NULL. Nothing is created. */
tn_session *tn_broker_session_find(tn_broker *b, const char *id, size_t len);
/* Whether a connection has the session (tn_broker_session_open, not yet detached). */
bool tn_session_attached(const tn_session *s);
/* The filter of one of s's subscriptions (the only one, for the single-filter sessions STOMP
 * and AMQP make for topic subscriptions), or NULL if it has none. */
const char *tn_session_filter(const tn_session *s);
/* A number no other call returns in this process (connection serials, temporary names). */
uint64_t tn_broker_serial(tn_broker *b);
/* Whether an id is reserved for the broker's own sessions. */
static inline bool
tn_broker_id_reserved(const char *id, size_t len)
{
    return len > 0 && id[0] == '\x01';
}

#endif
