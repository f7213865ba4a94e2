/*
 * The broker's journal: what a persistent session, its queued QoS 1/2 messages and the retained
 * messages become on disk, and how a restart rebuilds them (see the REC_* list in
 * broker_int.h). A message is written once (REC_MSG) however many persistent sessions queue it;
 * each queueing and each acknowledgement is a small record of its own, so acks are never lost
 * (unlike a snapshot) and an offline session costs no memory beyond its queue.
 */
#include "core/broker/broker_int.h"

#include "core/base/base.h"
#include "core/topictree/topictree.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
put_bytes(tn_buf *r, const void *p, size_t n)
{
    tn_assert(tn_buf_append(r, p, n) == 0);
}

static void
put_u8(tn_buf *r, uint8_t v)
{
    put_bytes(r, &v, 1);
}

static void
put_u16(tn_buf *r, uint16_t v)
{
    put_bytes(r, &v, 2);
}

static void
put_u64(tn_buf *r, uint64_t v)
{
    put_bytes(r, &v, 8);
}

static void
put_u32(tn_buf *r, uint32_t v)
{
    put_bytes(r, &v, 4);
}

static void
put_pos(tn_buf *r, const tn_store_pos *p)
{
    put_u64(r, p->seg);
    put_u32(r, p->off);
    put_u32(r, p->size);
}

static void
put_str(tn_buf *r, const char *s, size_t n)
{
    tn_assert(n <= UINT16_MAX);
    put_u16(r, (uint16_t)n);
    put_bytes(r, s, n);
}

/* ---- reading records ---- */

typedef struct reader {
    const uint8_t *p, *end;
    bool bad;
} reader;

static const uint8_t *
take(reader *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

static uint8_t
get_u8(reader *r)
{
    const uint8_t *p = take(r, 1);
    return p ? *p : 0;
}

static uint16_t
get_u16(reader *r)
{
    uint16_t v = 0;
    const uint8_t *p = take(r, 2);
    if (p)
        memcpy(&v, p, 2);
    return v;
}

static uint64_t
get_u64(reader *r)
{
    uint64_t v = 0;
    const uint8_t *p = take(r, 8);
    if (p)
        memcpy(&v, p, 8);
    return v;
}

static uint32_t
get_u32(reader *r)
{
    uint32_t v = 0;
    const uint8_t *p = take(r, 4);
    if (p)
        memcpy(&v, p, 4);
    return v;
}

/* A record position, as a paged reference of message id (qos and flags left 0). */
static tn_paged
get_ref(reader *r, uint64_t id)
{
    tn_paged p = {.id = id};
    p.seg = get_u64(r);
    p.off = get_u32(r);
    uint32_t size = get_u32(r);
    if (size >= (1u << 28))
        r->bad = true;
    p.size = size & ((1u << 28) - 1);
    return p;
}

/* A string field: pointer into the record and its length. */
static const char *
get_str(reader *r, size_t *n)
{
    *n = get_u16(r);
    return (const char *)take(r, *n);
}

/* The retain byte of a MSG record also says a message is not persistent (a large one paged
 * to the journal all the same, never enqueued there: it does not survive a restart). */
#define MSG_VOLATILE 2

/* A MSG record's message: u64 id, u8 qos, u8 retain, s name, s properties, rest payload.
 * TN_EINVAL when malformed, TN_ENOMEM. */
static int
msg_decode(reader *r, tn_message **out)
{
    uint64_t id = get_u64(r);
    uint8_t qos = get_u8(r), retain = get_u8(r);
    size_t n, pn;
    const char *name = get_str(r, &n);
    const char *props = get_str(r, &pn);
    if (r->bad || qos > 2)
        return TN_EINVAL;
    tn_message *m = tn_message_new_props(name, n, props, pn, r->p, (size_t)(r->end - r->p), qos,
                                         (retain & 1) != 0);
    if (!m)
        return TN_ENOMEM;
    m->id = id;
    m->persistent = !(retain & MSG_VOLATILE);
    *out = m;
    return 0;
}

/* Payloads from this size on are journaled by reference to the message (tn_store_append_ref). */
#define LARGE_PAYLOAD 65536
/* Scratch buffers grown past this by a large record are freed after it. */
#define KEEP_SCRATCH (1u << 20)

static bool
active(tn_broker *b)
{
    return b->store && !b->replaying;
}

/* Appends b->rec as one record. A failing store (disk full) is reported by the protocol when it
 * waits for the LSN; the in-memory state goes on regardless. */
static void
append(tn_broker *b, uint16_t type)
{
    uint64_t lsn;
    b->since_ckpt += TN_STORE_HEADER + b->rec.len;
    if (tn_store_append(b->store, type, b->rec.data, (uint32_t)b->rec.len, &lsn) == 0)
        b->lsn = lsn;
    else
        b->lsn = UINT64_MAX; /* never durable: the waiter gets the store's error */
    b->rec.len = 0;
    if (b->rec.cap > KEEP_SCRATCH)
        tn_buf_reset(&b->rec);
}

static bool
appended(tn_broker *b)
{
    return b->lsn != UINT64_MAX;
}

/* s's id and, for a SESSION_PUT, who owns it (tn_session_set_identity: its deliveries follow
 * that user's permissions, also while it is offline after a restart). */
static void
put_session(tn_broker *b, const tn_session *s, bool put)
{
    put_str(&b->rec, s->id, s->id_len);
    if (put && s->who) {
        size_t u = strlen(s->who + 1), c = strlen(s->who + 2 + u);
        if (u + c + 3 <= 65535) /* a string field's limit (an id and a name can exceed it) */
            put_str(&b->rec, s->who, u + c + 3);
    }
}

void
tn_broker__log_session(tn_broker *b, tn_session *s, bool put)
{
    if (!active(b))
        return;
    put_session(b, s, put);
    append(b, put ? REC_SESSION_PUT : REC_SESSION_DEL);
}

void
tn_broker__log_sub(tn_broker *b, tn_session *s, const char *filter, uint8_t qos, bool put)
{
    if (!active(b))
        return;
    put_str(&b->rec, s->id, s->id_len);
    put_str(&b->rec, filter, strlen(filter));
    if (put)
        put_u8(&b->rec, qos);
    append(b, put ? REC_SUB_PUT : REC_SUB_DEL);
}

static void
release_message(void *m)
{
    tn_message_unref(m);
}

/* Writes m's MSG record unless it was the last one written; b->logged_pos tells where. */
static void
log_msg(tn_broker *b, tn_message *m)
{
    if (b->logged_msg == m->id)
        return;
    b->logged_msg = m->id;
    put_u64(&b->rec, m->id);
    put_u8(&b->rec, m->qos);
    put_u8(&b->rec, (uint8_t)(m->retain | (m->persistent ? 0 : MSG_VOLATILE)));
    put_str(&b->rec, m->name, m->name_len);
    put_str(&b->rec, (const char *)m->props, m->props_len);
    if (m->payload_len >= LARGE_PAYLOAD) {
        /* Written from the message itself, not copied: it is held once (the store keeps a
         * reference until the record is written). */
        uint64_t lsn;
        b->since_ckpt += TN_STORE_HEADER + b->rec.len + m->payload_len;
        if (tn_store_append_ref(b->store, REC_MSG, b->rec.data, (uint32_t)b->rec.len, m->payload,
                                m->payload_len, release_message, tn_message_ref(m), &lsn) == 0) {
            b->lsn = lsn;
        } else {
            tn_message_unref(m);
            b->lsn = UINT64_MAX;
        }
        b->rec.len = 0;
    } else {
        put_bytes(&b->rec, m->payload, m->payload_len);
        append(b, REC_MSG);
    }
    if (appended(b))
        tn_store_last_pos(b->store, &b->logged_pos);
    else
        b->logged_pos = (tn_store_pos){0, 0, 0};
}

static void
log_enq_at(tn_broker *b, tn_session *s, uint64_t msg_id, uint8_t qos, uint8_t flags,
           const tn_store_pos *pos)
{
    put_str(&b->rec, s->id, s->id_len);
    put_u64(&b->rec, msg_id);
    put_u8(&b->rec, qos);
    put_u8(&b->rec, flags);
    put_pos(&b->rec, pos);
    append(b, REC_ENQ);
}

bool
tn_broker__log_enq(tn_broker *b, tn_session *s, tn_message *m, uint8_t qos, uint8_t flags,
                   tn_paged *where)
{
    if (!active(b))
        return false;
    log_msg(b, m);
    tn_store_pos pos = b->logged_pos;
    log_enq_at(b, s, m->id, qos, flags, &pos);
    *where = (tn_paged){
        .id = m->id, .seg = pos.seg, .off = pos.off, .size = pos.size, .qos = qos, .flags = flags};
    return pos.seg != 0;
}

bool
tn_broker__log_volatile(tn_broker *b, tn_message *m, uint8_t qos, uint8_t flags, tn_paged *where)
{
    if (!active(b))
        return false;
    log_msg(b, m);
    tn_store_pos pos = b->logged_pos;
    *where = (tn_paged){.id = m->id,
                        .seg = pos.seg,
                        .off = pos.off,
                        .size = pos.size,
                        .qos = qos,
                        .flags = flags | TN_PAGED_VOLATILE};
    return pos.seg != 0;
}

void
tn_broker__log_state(tn_broker *b, tn_session *s, uint64_t msg_id, uint8_t state)
{
    if (!active(b))
        return;
    put_str(&b->rec, s->id, s->id_len);
    put_u64(&b->rec, msg_id);
    put_u8(&b->rec, state);
    append(b, REC_STATE);
}

void
tn_broker__log_ack(tn_broker *b, tn_session *s, uint64_t msg_id)
{
    if (!active(b))
        return;
    put_str(&b->rec, s->id, s->id_len);
    put_u64(&b->rec, msg_id);
    append(b, REC_ACK);
}

void
tn_broker__log_retain(tn_broker *b, tn_message *m, bool put)
{
    if (!active(b))
        return;
    tn_store_pos pos = {0, 0, 0};
    if (put) {
        log_msg(b, m);
        pos = b->logged_pos;
    }
    put_str(&b->rec, m->name, m->name_len);
    if (put) {
        put_u64(&b->rec, m->id);
        put_pos(&b->rec, &pos);
    }
    append(b, put ? REC_RETAIN_PUT : REC_RETAIN_DEL);
}

void
tn_broker__log_rx(tn_broker *b, tn_session *s, uint16_t pid, bool mark)
{
    if (!active(b))
        return;
    put_str(&b->rec, s->id, s->id_len);
    put_u16(&b->rec, pid);
    append(b, mark ? REC_RX_MARK : REC_RX_REL);
}

void
tn_broker_attach_store(tn_broker *b, tn_store *store)
{
    b->store = store;
}

uint64_t
tn_broker_lsn(const tn_broker *b)
{
    return b->lsn;
}

tn_store *
tn_broker_store(const tn_broker *b)
{
    return b->store;
}

/* ---- replies ---- */

typedef struct tn_reply {
    tn_replies *r; /* NULL once cancelled */
    struct tn_reply *next;
    uint32_t flags;
    uint32_t len;
    uint8_t data[];
} tn_reply;

static void
reply_done(void *arg, int status)
{
    tn_reply *t = arg;
    tn_replies *r = t->r;
    if (r) {
        tn_assert(r->head == t); /* the store completes in LSN order */
        r->head = t->next;
        if (!r->head)
            r->tail = NULL;
        r->send(r, t->data, t->len, t->flags, status);
    }
    free(t);
}

void
tn_broker_reply(tn_broker *b, tn_replies *r, const uint8_t *p, size_t n, uint32_t flags)
{
    uint64_t lsn = b->lsn;
    /* Most replies confirm nothing new (clean sessions, QoS 0): known durable without asking
     * the store, whose answer takes its lock. */
    if (b->store && !r->head && lsn > b->durable_known)
        b->durable_known = tn_store_durable_lsn(b->store);
    if (!b->store || (!r->head && lsn <= b->durable_known)) {
        r->send(r, p, n, flags, 0);
        return;
    }
    tn_reply *t = tn_xmalloc(sizeof *t + n);
    t->r = r;
    t->next = NULL;
    t->flags = flags;
    t->len = (uint32_t)n;
    memcpy(t->data, p, n);
    if (r->tail)
        r->tail->next = t;
    else
        r->head = t;
    r->tail = t;
    tn_store_when_durable(b->store, lsn, reply_done, t);
}

void
tn_replies_cancel(tn_replies *r)
{
    for (tn_reply *t = r->head; t; t = t->next)
        t->r = NULL; /* freed by reply_done when the store gets to them */
    r->head = r->tail = NULL;
}

/* ---- paging ---- */

/* A large MSG record read back straight into its message (tn_store_read_split). */
typedef struct placing {
    tn_message *m;
    bool bad;
} placing;

static uint8_t *
place_msg(void *arg, const uint8_t *p, uint32_t n, uint32_t len)
{
    placing *pl = arg;
    reader r = {p, p + n, false};
    uint64_t id = get_u64(&r);
    uint8_t qos = get_u8(&r), retain = get_u8(&r);
    size_t nl, pn;
    const char *name = get_str(&r, &nl);
    const char *props = get_str(&r, &pn);
    if (r.bad || qos > 2) {
        pl->bad = true; /* the prefix holds the whole head whenever the record is sound */
        return NULL;
    }
    size_t head = (size_t)(r.p - p), have = n - head;
    uint8_t *payload;
    pl->m = tn_message_alloc(name, nl, props, pn, len - head, qos, (retain & 1) != 0, &payload);
    if (!pl->m)
        return NULL;
    pl->m->id = id;
    pl->m->persistent = !(retain & MSG_VOLATILE);
    memcpy(payload, r.p, have);
    return payload + have;
}

/* Reads before the payload of a MSG record: id, qos, retain, name and properties at most. */
#define MSG_HEAD_MAX (8 + 1 + 1 + 2 + 65535 + 2 + 65535)

int
tn_broker__load(void *ctx, const tn_paged *p, tn_message **out)
{
    tn_broker *b = ctx;
    tn_store_pos pos = {p->seg, p->off, p->size};
    uint16_t type = 0;
    placing pl = {NULL, false};
    int rc = tn_store_read_split(b->store, &pos, MSG_HEAD_MAX, &b->page, &type, place_msg, &pl);
    if (rc == TN_EAGAIN) {
        b->refill_wanted = true;
        return rc;
    }
    if (rc == TN_ENOMEM && !pl.bad) {
        tn_message_unref(pl.m);
        return TN_EAGAIN;
    }
    tn_message *m = pl.m; /* a large one, read straight into it */
    if (m && rc == 0)
        tn_broker__charge(b, m);
    if (rc == 0 && !m && type == REC_MSG) {
        reader r = {b->page.data, b->page.data + b->page.len, false};
        if ((rc = msg_decode(&r, &m)) == TN_ENOMEM)
            return TN_EAGAIN;
    }
    if (b->page.cap > KEEP_SCRATCH)
        tn_buf_reset(&b->page);
    if (rc != 0 || type != REC_MSG || !m || m->id != p->id) {
        tn_message_unref(m);
        tn_log_error("STORE-PAGE-LOST",
                     "message %" PRIu64
                     " is not in the journal where it was stored (segment %" PRIu64
                     ", offset %u); it is dropped from its queue",
                     p->id, p->seg, p->off);
        return TN_ENOENT;
    }
    *out = m;
    return 0;
}

/* ---- checkpoints ---- */

typedef struct id_entry {
    uint64_t id;
    tn_store_pos pos;
    UT_hash_handle hh;
} id_entry;

static void
free_ids(id_entry **h)
{
    id_entry *e, *tmp;
    HASH_ITER(hh, *h, e, tmp)
    {
        HASH_DEL(*h, e);
        free(e);
    }
}

static id_entry *
add_id(id_entry **h, uint64_t id, const tn_store_pos *pos)
{
    id_entry *e = tn_xcalloc(1, sizeof *e);
    e->id = id;
    e->pos = *pos;
    HASH_ADD(hh, *h, id, sizeof e->id, e);
    return e;
}

/* Writes m's MSG record unless this checkpoint already has; returns where it is. */
static tn_store_pos
ckpt_msg(tn_broker *b, id_entry **written, tn_message *m)
{
    id_entry *e = NULL;
    HASH_FIND(hh, *written, &m->id, sizeof m->id, e);
    if (e)
        return e->pos;
    b->logged_msg = 0;
    log_msg(b, m);
    return add_id(written, m->id, &b->logged_pos)->pos;
}

static void
ckpt_delivery(tn_broker *b, id_entry **written, tn_session *s, tn_delivery *d)
{
    if (!d->ack || !d->msg->persistent)
        return; /* a non-persistent message does not outlive a restart */
    tn_store_pos pos = ckpt_msg(b, written, d->msg);
    log_enq_at(b, s, d->msg->id, d->qos, d->flags, &pos);
    if (d->state)
        tn_broker__log_state(b, s, d->msg->id, d->state);
}

typedef struct ckpt_ctx {
    tn_broker *b;
    tn_session *s;
    id_entry **written;
    id_entry *moved;   /* paged messages copied forward by this checkpoint */
    uint64_t relocate; /* copy paged messages in segments up to this one (0: none) */
    uint64_t oldest;   /* the oldest segment a paged message is in */
    uint64_t paged;    /* bytes of paged messages */
} ckpt_ctx;

/* Pass 1 over paged references: the oldest segment they pin, and their bytes. */
static void
measure_paged(void *arg, tn_paged *p)
{
    ckpt_ctx *c = arg;
    if (p->seg < c->oldest)
        c->oldest = p->seg;
    c->paged += p->size;
}

/* Copies a paged message's record to the head of the journal so its old segment can go. */
static void
relocate(ckpt_ctx *c, tn_paged *p)
{
    tn_broker *b = c->b;
    id_entry *e = NULL;
    HASH_FIND(hh, c->moved, &p->id, sizeof p->id, e);
    if (!e) {
        tn_store_pos pos = {p->seg, p->off, p->size};
        uint16_t type = 0;
        placing pl = {NULL, false};
        int rc = tn_store_read_split(b->store, &pos, MSG_HEAD_MAX, &b->page, &type, place_msg, &pl);
        if (rc != 0 || type != REC_MSG) {
            tn_message_unref(pl.m);
            return; /* left where it is; loading it reports the loss */
        }
        if (pl.m) {
            /* A large one: read into a message and written again from it, held once. */
            b->logged_msg = 0;
            log_msg(b, pl.m);
            tn_message_unref(pl.m);
            if (!appended(b))
                return;
            pos = b->logged_pos;
        } else {
            put_bytes(&b->rec, b->page.data, b->page.len);
            append(b, REC_MSG);
            if (!appended(b))
                return;
            tn_store_last_pos(b->store, &pos);
        }
        e = add_id(&c->moved, p->id, &pos);
    }
    p->seg = e->pos.seg;
    p->off = e->pos.off;
    p->size = e->pos.size;
}

static void
ckpt_paged(void *arg, tn_paged *p)
{
    ckpt_ctx *c = arg;
    if (p->seg <= c->relocate)
        relocate(c, p);
    tn_store_pos pos = {p->seg, p->off, p->size};
    if (!(p->flags & TN_PAGED_VOLATILE)) /* kept on disk, but not across a restart */
        log_enq_at(c->b, c->s, p->id, (uint8_t)p->qos, (uint8_t)p->flags, &pos);
    if (p->seg < c->oldest)
        c->oldest = p->seg;
}

static void
ckpt_retained(void *arg, const char *name, void *value)
{
    (void)name;
    ckpt_ctx *c = arg;
    tn_message *m = value;
    tn_store_pos pos = ckpt_msg(c->b, c->written, m);
    put_str(&c->b->rec, m->name, m->name_len);
    put_u64(&c->b->rec, m->id);
    put_pos(&c->b->rec, &pos);
    append(c->b, REC_RETAIN_PUT);
}

typedef struct drop_ticket {
    tn_store *store;
    uint64_t before;
} drop_ticket;

/* The checkpoint is durable: what came before it is dead, but for the segments paged messages
 * are in. A failed one deletes nothing; the next checkpoint tries again. */
static void
ckpt_done(void *arg, int status)
{
    drop_ticket *t = arg;
    if (status == 0)
        tn_store_drop_before(t->store, t->before);
    free(t);
}

static uint64_t
compact_limit(const tn_broker *b)
{
    return b->limits.compact_bytes ? b->limits.compact_bytes : (uint64_t)64 << 20;
}

/*
 * Paged messages stay where they are, pinning their segments, until the journal holds more
 * than twice what is live: then the oldest pinned segment's are copied forward, one segment per
 * checkpoint, so disk use stays proportional without rewriting a deep queue each time. A
 * checkpoint that could delete nothing (the oldest segment is pinned, nothing to copy) is
 * skipped: it would only add to the journal.
 */
static bool
checkpoint_plan(tn_broker *b, ckpt_ctx *cc)
{
    tn_session *s, *tmp;
    HASH_ITER(hh, b->sessions, s, tmp)
    {
        if (!s->clean && s->queue)
            tn_queue_paged_walk(s->queue, measure_paged, cc);
    }
    if (cc->oldest == UINT64_MAX)
        return true;
    if (tn_store_bytes(b->store) > 2 * (cc->paged + b->ckpt_size) + compact_limit(b)) {
        cc->relocate = cc->oldest;
        return true;
    }
    return cc->oldest > tn_store_first_segment(b->store);
}

static void
checkpoint(tn_broker *b)
{
    uint64_t start = b->since_ckpt;
    id_entry *written = NULL;
    ckpt_ctx cc = {.b = b, .written = &written, .oldest = UINT64_MAX};
    if (!checkpoint_plan(b, &cc)) {
        b->ckpt_retry = b->since_ckpt + compact_limit(b);
        return;
    }
    tn_session *s, *tmp;
    tn_store_roll(b->store);
    append(b, REC_CKPT_BEGIN);
    uint64_t begin = b->lsn;
    cc.oldest = UINT64_MAX;
    HASH_ITER(hh, b->sessions, s, tmp)
    {
        if (s->clean)
            continue;
        put_session(b, s, true);
        append(b, REC_SESSION_PUT);
        tn_sub *sub, *stmp;
        HASH_ITER(hh, s->subs, sub, stmp)
        {
            put_str(&b->rec, s->id, s->id_len);
            put_str(&b->rec, sub->filter, strlen(sub->filter));
            put_u8(&b->rec, sub->qos);
            append(b, REC_SUB_PUT);
        }
        for (uint32_t id = 1; s->rx_ids && id <= 65535; id++) {
            if ((s->rx_ids[id >> 6] >> (id & 63)) & 1) {
                put_str(&b->rec, s->id, s->id_len);
                put_u16(&b->rec, (uint16_t)id);
                append(b, REC_RX_MARK);
            }
        }
        /* In the order they will be offered again: in flight first, then queued, then paged. */
        if (s->consumer)
            for (tn_delivery *d = tn_queue_unacked_first(s->consumer); d;
                 d = tn_queue_unacked_next(d))
                ckpt_delivery(b, &written, s, d);
        if (!s->queue)
            continue; /* nothing was ever queued */
        for (tn_delivery *d = tn_queue_first(s->queue); d; d = d->next)
            ckpt_delivery(b, &written, s, d);
        cc.s = s;
        tn_queue_paged_walk(s->queue, ckpt_paged, &cc);
    }
    tn_topictree_walk(b->retained, ckpt_retained, &cc);
    put_u64(&b->rec, begin);
    append(b, REC_CKPT_END);
    free_ids(&written);
    free_ids(&cc.moved);
    b->logged_msg = 0;
    b->ckpt_size = b->since_ckpt - start;
    b->since_ckpt = 0;
    b->ckpt_retry = 0;
    if (b->lsn == UINT64_MAX)
        return; /* the store is failing: try again later */
    drop_ticket *t = tn_xmalloc(sizeof *t);
    t->store = b->store;
    t->before = cc.oldest < begin ? cc.oldest : begin;
    tn_store_when_durable(b->store, b->lsn, ckpt_done, t);
    tn_log_info("STORE-CHECKPOINT",
                "checkpoint of %" PRIu64 " bytes at LSN %" PRIu64
                "; paged messages keep LSN %" PRIu64 " on",
                b->ckpt_size, begin, t->before);
}

void
tn_broker_maintain(tn_broker *b)
{
    if (!b->store || b->replaying)
        return;
    if (b->refill_wanted) { /* paged reads that found their record not yet written */
        b->refill_wanted = false;
        tn_session *s, *tmp;
        HASH_ITER(hh, b->sessions, s, tmp)
        {
            /* Sessions and named queues alike (a queue's consumers are not its session's):
             * tn_queue_refill() does nothing without consumers. */
            if (s->queue && tn_queue_paged(s->queue))
                tn_queue_refill(s->queue);
        }
    }
    if (tn_store_error(b->store))
        return;
    uint64_t limit = compact_limit(b);
    if (b->since_ckpt >= limit && b->since_ckpt >= 2 * b->ckpt_size &&
        b->since_ckpt >= b->ckpt_retry)
        checkpoint(b);
}

/* ---- replay ---- */

typedef struct replay {
    tn_broker *b;
    uint64_t from;       /* apply records from this LSN (the last complete checkpoint) */
    uint64_t until;      /* and below this one (an incomplete checkpoint), 0: no limit */
    uint64_t open_begin; /* scan: a BEGIN not yet ended */
    tn_message *last;    /* the last MSG record's message (one reference): the ENQ records
                            right after it share it; others are read back by position */
    uint64_t records;
    char *err;
    size_t errlen;
} replay;

/* The message an ENQ or RETAIN_PUT record refers to: the one just replayed, or read back. */
static tn_message *
msg_at(replay *rp, const tn_paged *ref)
{
    if (rp->last && rp->last->id == ref->id)
        return tn_message_ref(rp->last);
    tn_message *m = NULL;
    return tn_broker__load(rp->b, ref, &m) == 0 ? m : NULL;
}

/* A NUL-terminated copy of a string field in the broker's scratch (filters, names). */
static const char *
cstr(tn_broker *b, const char *p, size_t n)
{
    b->rec.len = 0;
    put_bytes(&b->rec, p, n);
    put_u8(&b->rec, 0);
    return (const char *)b->rec.data;
}

/* First pass: where the last complete checkpoint begins, and whether one was cut short. */
static int
scan(void *arg, uint64_t lsn, uint16_t type, const uint8_t *p, uint32_t len)
{
    replay *rp = arg;
    if (type == REC_CKPT_BEGIN) {
        rp->open_begin = lsn;
    } else if (type == REC_CKPT_END && len >= 8) {
        uint64_t begin;
        memcpy(&begin, p, 8);
        if (begin == rp->open_begin) {
            rp->from = begin;
            rp->open_begin = 0;
        }
    }
    return 0;
}

static int
apply(void *arg, uint64_t lsn, uint16_t type, const uint8_t *p, uint32_t len)
{
    replay *rp = arg;
    tn_broker *b = rp->b;
    reader r = {p, p + len, false};
    if (lsn < rp->from || (rp->until && lsn >= rp->until) || type == REC_CKPT_BEGIN ||
        type == REC_CKPT_END) {
        b->lsn = lsn;
        return 0;
    }
    size_t id_len = 0;
    const char *id = NULL;
    tn_session *s = NULL;
    rp->records++;
    b->lsn = lsn;
    if (type != REC_MSG && type != REC_RETAIN_PUT && type != REC_RETAIN_DEL) {
        id = get_str(&r, &id_len);
        if (id)
            s = tn_broker__session_find(b, id, id_len);
    }
    switch (type) {
    case REC_SESSION_PUT: {
        if (id && !s)
            s = tn_broker__session_create(b, id, id_len, false);
        size_t wn = 0;
        const char *who = r.p < r.end ? get_str(&r, &wn) : NULL;
        if (s && who && wn >= 3 && who[wn - 1] == 0 && memchr(who + 1, 0, wn - 2)) {
            free(s->who);
            s->who = tn_xmalloc(wn);
            memcpy(s->who, who, wn);
        }
        break;
    }
    case REC_SESSION_DEL:
        if (s)
            tn_broker__session_free(s, false);
        break;
    case REC_SUB_PUT:
    case REC_SUB_DEL: {
        size_t n;
        const char *f = get_str(&r, &n);
        uint8_t qos = type == REC_SUB_PUT ? get_u8(&r) : 0;
        if (s && f && !r.bad) {
            const char *filter = cstr(b, f, n);
            char copy[65536 + 1];
            memcpy(copy, filter, n + 1); /* subscribe may use the scratch */
            if (type == REC_SUB_PUT)
                tn_session_subscribe(s, copy, qos);
            else
                tn_session_unsubscribe(s, copy);
        }
        break;
    }
    case REC_MSG: {
        tn_message *m = NULL;
        int mrc = msg_decode(&r, &m);
        if (mrc == TN_ENOMEM)
            return mrc;
        if (mrc != 0)
            break;
        if (m->id > b->seq)
            b->seq = m->id;
        tn_message_unref(rp->last);
        rp->last = m;
        break;
    }
    case REC_ENQ: {
        uint64_t mid = get_u64(&r);
        uint8_t qos = get_u8(&r), flags = get_u8(&r);
        tn_paged ref = get_ref(&r, mid);
        if (!s || r.bad || mid == 0 || qos == 0 || qos > 2 || flags > 3)
            break; /* message ids start at 1 (0 marks a dropped paged reference) */
        ref.qos = qos & 3;
        ref.flags = flags & 3;
        tn_message *m = rp->last && rp->last->id == mid ? rp->last : NULL;
        /* in memory, or paged past the limit */
        tn_queue_push_ref(tn_broker__session_queue(s), m, &ref);
        break;
    }
    case REC_STATE: {
        uint64_t mid = get_u64(&r);
        uint8_t state = get_u8(&r);
        for (tn_delivery *d = s && s->queue && !r.bad ? tn_queue_first(s->queue) : NULL; d;
             d = d->next)
            if (d->msg->id == mid) {
                d->state = state;
                break;
            }
        break;
    }
    case REC_ACK: {
        uint64_t mid = get_u64(&r);
        if (s && s->queue && !r.bad)
            tn_queue_drop(s->queue, mid);
        break;
    }
    case REC_RETAIN_PUT:
    case REC_RETAIN_DEL: {
        size_t n;
        const char *name = get_str(&r, &n);
        if (r.bad || !name)
            break;
        const char *key = cstr(b, name, n);
        void *old = NULL;
        if (type == REC_RETAIN_PUT) {
            uint64_t mid = get_u64(&r);
            tn_paged ref = get_ref(&r, mid);
            tn_message *m = r.bad ? NULL : msg_at(rp, &ref); /* reads into b->page, not rec */
            if (m)
                tn_topictree_put(b->retained, key, m, &old);
        } else {
            tn_topictree_take(b->retained, key, &old);
        }
        tn_message_unref(old);
        break;
    }
    case REC_RX_MARK:
    case REC_RX_REL: {
        uint16_t pid = get_u16(&r);
        if (s && !r.bad) {
            if (type == REC_RX_MARK)
                tn_session_rx_mark(s, pid);
            else
                tn_session_rx_release(s, pid);
        }
        break;
    }
    default:
        break; /* a newer record type: skip */
    }
    if (r.bad)
        tn_log_warn("STORE-BAD-RECORD",
                    "journal record %" PRIu64 " (type %u) is malformed; skipped", lsn, type);
    return 0;
}

int
tn_broker_recover(tn_broker *b, char *err, size_t errlen)
{
    if (!b->store)
        return 0;
    replay rp = {.b = b, .err = err, .errlen = errlen};
    b->replaying = true;
    int rc = tn_store_replay(b->store, scan, &rp, err, errlen);
    rp.until = rp.open_begin; /* a checkpoint cut short by a crash: its records are ignored */
    if (rc == 0)
        rc = tn_store_replay(b->store, apply, &rp, err, errlen);
    b->since_ckpt = tn_store_bytes(b->store);
    b->replaying = false;
    tn_message_unref(rp.last); /* queues and the retained tree hold their own references */
    b->rec.len = 0;
    if (rc == 0)
        tn_log_info("STORE-RECOVERED", "%" PRIu64 " journal records: %u sessions, %zu retained",
                    rp.records, b->stats.sessions, tn_topictree_count(b->retained));
    return rc;
}
