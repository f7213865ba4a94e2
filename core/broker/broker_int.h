/* Private to core/broker: the structures broker.c and persist.c share. */
#ifndef TN_BROKER_INT_H
#define TN_BROKER_INT_H

#include "core/broker/broker.h"
#include "core/base/base.h"
#include "core/store/store.h"
#include "core/topictree/topictree.h"

#include <uthash.h>

typedef struct tn_sub {
    char *filter; /* canonical; also the key in the session's table */
    uint8_t qos;
    tn_session *s;
    UT_hash_handle hh;
} tn_sub;

/*
 * A client's session costs its connection little until something can be delivered to it: the
 * queue (and its consumer) is made on first need (tn_broker__session_queue: a subscription, a
 * queued message, a named queue, a protocol asking for it), so a client that only connects, or
 * only publishes, keeps no queue. Ten thousand idle devices are common; deliveries are not.
 */
struct tn_session {
    tn_broker *b;
    size_t id_len;
    tn_queue *queue;       /* NULL until first needed */
    tn_consumer *consumer; /* NULL while detached, before start, or while queue is NULL */
    const tn_session_ops *ops;
    void *ctx;
    tn_sub *subs;
    uint64_t *rx_ids; /* bitmaps of 65536 ids, allocated on first use, freed when empty */
    uint64_t *tx_ids;
    uint32_t rx_count, tx_count;
    uint64_t mark; /* publish routing: last message id that matched, and its best QoS */
    uint8_t mark_qos;
    bool clean;
    bool warned_full; /* logged a drop since the last attach */
    bool attached;    /* a connection owns it (consumer is set once started) */
    bool started;     /* tn_session_start() since the attach: a new queue gets the consumer */
    bool is_queue;    /* a named queue (tn_broker_queue): consumers attach to its queue */
    bool slow;        /* a slow consumer: QoS 0 to it is dropped, QoS 0 producers don't wait */
    bool on_behind;
    /* Congestion episode being timed (the queue's tn_queue_behind number), while on b->behind. */
    uint32_t behind_ep;
    uint64_t behind_start; /* loop ms the episode started */
    uint64_t behind_since; /* loop ms the current measuring window started */
    uint64_t behind_taken; /* tn_queue_taken at the window's start */
    uint64_t slow_dropped; /* QoS 0 dropped in this slow episode */
    tn_session *bnext, *bprev;
    char *who; /* tn_session_set_identity: "USER\0CLIENT-ID\0" (NULL: anonymous, id) */
    UT_hash_handle hh;
    char id[]; /* id_len bytes and a NUL (one allocation with the session) */
};

/* Named queues are sessions whose id is this prefix and the name (client ids cannot start
 * with \x01: protocols refuse them). */
#define TN_QUEUE_PREFIX "\x01q:"
#define TN_QUEUE_PREFIX_LEN 3

/* A session matched by the message being routed, with its best granted QoS. */
typedef struct route {
    tn_session *s;
} route;

struct tn_broker {
    tn_broker_limits limits;
    tn_store *store;         /* NULL: nothing is durable */
    uint64_t lsn;            /* last record this broker appended */
    uint64_t logged_msg;     /* id of the last message written as a MSG record */
    tn_store_pos logged_pos; /* where that record is; seg 0 when its append failed */
    tn_buf rec;              /* record encoding scratch */
    tn_buf page;             /* records read back (paging) */
    bool refill_wanted;      /* a paged read found its record not written yet: retry */
    uint64_t durable_known;  /* the store's durable LSN as last read (replies) */
    bool replaying;
    uint64_t since_ckpt; /* journal bytes appended since the last checkpoint */
    uint64_t ckpt_size;  /* bytes the last checkpoint took */
    uint64_t ckpt_retry; /* since_ckpt at which to consider a skipped checkpoint again */
    tn_session *sessions;
    tn_session *behind;     /* attached sessions in a congestion episode (slow consumers timed) */
    uint64_t now;           /* loop ms, from the last tn_broker_tick */
    tn_topictree *subs;     /* filter -> tn_sub */
    tn_topictree *retained; /* name -> tn_message */
    uint64_t seq;
    uint64_t serial; /* tn_broker_serial */
    route *routes;   /* scratch, reused by every publish */
    size_t n_routes, cap_routes;
    tn_broker_stats stats;
    tn_intake *intake_head, *intake_tail; /* holders and waiters, oldest first */
    uint64_t intake_used;                 /* arriving and charged bytes */
    tn_message_owner large_owner;         /* the owner of charged messages */
    uint64_t intake_seq;
    bool standby;             /* tn_broker_set_standby */
    char *active_host;        /* the active's address, when standby and known */
    const struct tn_acl *acl; /* tn_broker_set_acl (NULL: everything allowed) */
    uint64_t hold_until;      /* tn_broker_set_hold */
    tn_hold *holds;           /* held connections, waiting for a wake */
};

struct tn_hold {
    tn_hold *next, *prev;
    void (*wake)(void *arg);
    void *arg;
    bool woken;
};

/* Record types of the journal (core/store). Payloads: s = u16 length + bytes, u8/u64 little
 * endian. */
enum {
    REC_SESSION_PUT = 1, /* s id: a persistent session exists */
    REC_SESSION_DEL = 2, /* s id */
    REC_SUB_PUT = 3,     /* s id, s filter, u8 qos */
    REC_SUB_DEL = 4,     /* s id, s filter */
    REC_MSG = 5,         /* u64 msg id, u8 qos, u8 retain, s name, rest payload */
    REC_ENQ = 6,         /* s id, u64 msg id, u8 qos, u8 flags, pos: queued for a persistent
                            session; pos (u64 seg, u32 off, u32 size) is where its MSG record
                            is, which may be in a segment older than the last checkpoint */
    REC_ACK = 7,         /* s id, u64 msg id: that delivery is done */
    REC_RETAIN_PUT = 8,  /* s name, u64 msg id, pos */
    REC_RETAIN_DEL = 9,  /* s name */
    REC_RX_MARK = 10,    /* s id, u16 packet id: QoS 2 received, not released */
    REC_RX_REL = 11,     /* s id, u16 packet id */
    REC_CKPT_BEGIN = 12, /* (empty): a checkpoint starts; it restates all live state */
    REC_CKPT_END = 13,   /* u64 LSN of its BEGIN: complete; everything before BEGIN is dead
                            except the MSG records that ENQ records point to */
    REC_STATE = 14,      /* s id, u64 msg id, u8 state: the protocol's state of an unacked
                            delivery (MQTT: PUBREC received, so PUBREL is re-sent, not PUBLISH) */
};

/* Journal hooks: each a no-op without a store or while replaying. */
void tn_broker__log_session(tn_broker *b, tn_session *s, bool put);
void tn_broker__log_sub(tn_broker *b, tn_session *s, const char *filter, uint8_t qos, bool put);
/* Journals m (once) and its queueing; fills *where with the reference a paged queue keeps.
 * False when the message could not be appended (it then stays in memory only). */
bool tn_broker__log_enq(tn_broker *b, tn_session *s, tn_message *m, uint8_t qos, uint8_t flags,
                        tn_paged *where);
void tn_broker__log_state(tn_broker *b, tn_session *s, uint64_t msg_id, uint8_t state);
/* Reads a paged message back: the tn_pager_ops.load of persistent sessions' queues. */
int tn_broker__load(void *ctx, const tn_paged *p, tn_message **out);
void tn_broker__log_ack(tn_broker *b, tn_session *s, uint64_t msg_id);
void tn_broker__log_retain(tn_broker *b, tn_message *m, bool put);
void tn_broker__log_rx(tn_broker *b, tn_session *s, uint16_t pid, bool mark);

/* broker.c internals persist.c uses to rebuild state. */
tn_session *tn_broker__session_find(tn_broker *b, const char *id, size_t len);
tn_session *tn_broker__session_create(tn_broker *b, const char *id, size_t len, bool clean);
/* s's queue, made now if it has none yet (with its pager and limits, and the consumer when
 * the session is started). */
tn_queue *tn_broker__session_queue(tn_session *s);
void tn_broker__session_free(tn_session *s, bool log);

/* tn_paged.flags: a non-persistent message paged to the journal (never enqueued there). */
#define TN_PAGED_VOLATILE 0x02
/* Non-persistent messages from this size queued for a persistent session or a durable queue
 * are paged to the journal too (not pinned in memory), but not kept across a restart. */
#define TN_VOLATILE_PAGE_MIN (1u << 20)
/* Writes m's MSG record for such a message (no ENQ: replay never restores it); *where for the
 * queue. false when it could not be written. */
bool tn_broker__log_volatile(tn_broker *b, tn_message *m, uint8_t qos, uint8_t flags,
                             tn_paged *where);
/* Charges a large message read back from the journal to the incoming budget without waiting
 * (its consumer asked for it): arrivals wait while it is in memory. */
void tn_broker__charge(tn_broker *b, tn_message *m);

#endif
