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
put_str(tn_buf *r, const char *s, size_t n)
{
    tn_assert(n <= UINT16_MAX);
    put_u16(r, (uint16_t)n);
    put_bytes(r, s, n);
}

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
    if (tn_store_append(b->store, type, b->rec.data, (uint32_t)b->rec.len, &lsn) == 0)
        b->lsn = lsn;
    else
        b->lsn = UINT64_MAX; /* never durable: the waiter gets the store's error */
    b->rec.len = 0;
}

void
tn_broker__log_session(tn_broker *b, tn_session *s, bool put)
{
    if (!active(b))
        return;
    put_str(&b->rec, s->id, s->id_len);
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
log_msg(tn_broker *b, tn_message *m)
{
    if (b->logged_msg == m->id)
        return;
    b->logged_msg = m->id;
    put_u64(&b->rec, m->id);
    put_u8(&b->rec, m->qos);
    put_u8(&b->rec, m->retain);
    put_str(&b->rec, m->name, m->name_len);
    put_bytes(&b->rec, m->payload, m->payload_len);
    append(b, REC_MSG);
}

void
tn_broker__log_enq(tn_broker *b, tn_session *s, tn_message *m, uint8_t qos)
{
    if (!active(b))
        return;
    log_msg(b, m);
    put_str(&b->rec, s->id, s->id_len);
    put_u64(&b->rec, m->id);
    put_u8(&b->rec, qos);
    append(b, REC_ENQ);
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
    if (put)
        log_msg(b, m);
    put_str(&b->rec, m->name, m->name_len);
    if (put)
        put_u64(&b->rec, m->id);
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

/* ---- replay ---- */

typedef struct msg_entry {
    uint64_t id;
    tn_message *m;
    UT_hash_handle hh;
} msg_entry;

typedef struct replay {
    tn_broker *b;
    msg_entry *msgs; /* messages by id while replaying; holds one reference each */
    uint64_t records;
    char *err;
    size_t errlen;
} replay;

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

/* A string field: pointer into the record and its length. */
static const char *
get_str(reader *r, size_t *n)
{
    *n = get_u16(r);
    return (const char *)take(r, *n);
}

static tn_message *
find_msg(replay *rp, uint64_t id)
{
    msg_entry *e = NULL;
    HASH_FIND(hh, rp->msgs, &id, sizeof id, e);
    return e ? e->m : NULL;
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

static int
apply(void *arg, uint64_t lsn, uint16_t type, const uint8_t *p, uint32_t len)
{
    replay *rp = arg;
    tn_broker *b = rp->b;
    reader r = {p, p + len, false};
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
    case REC_SESSION_PUT:
        if (id && !s)
            tn_broker__session_create(b, id, id_len, false);
        break;
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
        uint64_t mid = get_u64(&r);
        uint8_t qos = get_u8(&r), retain = get_u8(&r);
        size_t n;
        const char *name = get_str(&r, &n);
        if (r.bad || qos > 2)
            break;
        tn_message *m = tn_message_new(name, n, r.p, (size_t)(r.end - r.p), qos, retain != 0);
        if (!m)
            return TN_ENOMEM;
        m->id = mid;
        m->persistent = true;
        if (mid > b->seq)
            b->seq = mid;
        msg_entry *e = tn_xcalloc(1, sizeof *e);
        e->id = mid;
        e->m = m;
        HASH_ADD(hh, rp->msgs, id, sizeof e->id, e);
        break;
    }
    case REC_ENQ: {
        uint64_t mid = get_u64(&r);
        uint8_t qos = get_u8(&r);
        tn_message *m = find_msg(rp, mid);
        if (s && m && !r.bad && qos > 0 && qos <= 2)
            tn_queue_push(s->queue, m, qos, true, 0);
        break;
    }
    case REC_ACK: {
        uint64_t mid = get_u64(&r);
        if (s && !r.bad)
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
            tn_message *m = find_msg(rp, get_u64(&r));
            if (m && !r.bad)
                tn_topictree_put(b->retained, key, tn_message_ref(m), &old);
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
    int rc = tn_store_replay(b->store, apply, &rp, err, errlen);
    b->replaying = false;
    msg_entry *e, *tmp;
    HASH_ITER(hh, rp.msgs, e, tmp)
    {
        HASH_DEL(rp.msgs, e);
        tn_message_unref(e->m); /* queues and the retained tree hold their own references */
        free(e);
    }
    b->rec.len = 0;
    if (rc == 0)
        tn_log_info("STORE-RECOVERED", "%" PRIu64 " journal records: %u sessions, %zu retained",
                    rp.records, b->stats.sessions, tn_topictree_count(b->retained));
    return rc;
}
