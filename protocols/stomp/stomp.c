/* The STOMP adapter: connection state machine, frames to core calls and back (see stomp.h). */
#include "protocols/stomp/stomp.h"

#include "core/base/base.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#define SERVER_NAME "Tern/0.1.0"

/* AUTH: the CONNECT is read, the authenticator has not answered yet (no input is processed);
 * DRAINING: DISCONNECT, RECEIPT due. */
enum { ST_CONNECT, ST_AUTH, ST_OPEN, ST_DRAINING, ST_CLOSING };
enum { ACK_AUTO, ACK_CLIENT, ACK_INDIVIDUAL };
enum { DEST_QUEUE, DEST_TOPIC };

struct tn_stomp {
    tn_broker *b;
    tn_stomp_conf conf;
    uint32_t n_conns; /* open connections */
    uint64_t next_serial;
    tn_buf props; /* scratch: a message's properties */
    tn_buf name;  /* scratch: core names */
    tn_buf reply; /* scratch: a reply-to rewritten */
    tn_buf frame; /* scratch: a RECEIPT being encoded */
};

typedef struct sconn sconn;

/* A subscription: a consumer on a named queue, or a session of its own for a topic. */
typedef struct ssub {
    sconn *c;
    char *id;
    uint32_t num; /* in message-id / ack values */
    int ack;
    int kind;
    bool durable;
    tn_session *s;  /* topic: its session; queue: the queue */
    tn_consumer *k; /* queue: our consumer (topic: the session's) */
    char *prefix;   /* MESSAGE destination for a queue: "/queue/NAME" */
    UT_hash_handle hh;
} ssub;

/* Deliveries taken during a dispatch that must be acked (auto) or dead-lettered after it. */
typedef struct later {
    ssub *sub;
    tn_delivery *d;
    bool dead;
} later;

/* A transaction's work, applied on COMMIT. */
typedef struct txop {
    struct txop *next;
    tn_message *m;    /* SEND: the message */
    tn_session *q;    /* SEND to a queue (NULL: topic) */
    uint32_t sub_num; /* ACK/NACK */
    uint64_t msg_id;
    int kind; /* TX_SEND, TX_ACK, TX_NACK */
} txop;
enum { TX_SEND, TX_ACK, TX_NACK };

/* A SEND body from this size (unless tn_stomp_conf.limits.big_body says otherwise) that has not
 * all arrived goes straight into its message (held once, from the broker's incoming budget). */
#define BIG_BODY 65536
/* Why reads are paused (sconn.pauses). */
enum { PAUSE_FLOW = 1, PAUSE_INTAKE = 2, PAUSE_HELD = 4, PAUSE_AUTH = 8 };
/* big_head(): the frame waits for room. */
#define BIG_WAIT 1

typedef struct stx {
    char *id;
    txop *ops, *tail;
    UT_hash_handle hh;
} stx;

struct sconn {
    tn_stomp *st;
    const tn_io *io;
    void *ioc;
    tn_stomp_decoder dec;
    int state;
    uint8_t version;
    uint64_t serial;
    char *client_id;
    char *user;            /* who the authenticator says it is (for permissions), or NULL */
    tn_auth_job *auth_job; /* ST_AUTH: the authenticator's job, until its done() */
    uint32_t hb_send_ms, hb_recv_ms;   /* negotiated; 0: none */
    uint64_t opened, last_rx, last_tx; /* loop times */
    ssub *subs;
    uint32_t next_sub;
    stx *txs;
    tn_flow flow;
    tn_replies replies; /* RECEIPTs waiting for the journal */
    later *later;
    size_t n_later, cap_later;
    tn_session **temps; /* temporary queues this connection made */
    size_t n_temps;
    uint8_t pauses;   /* PAUSE_*: reads are paused while any is set */
    tn_intake intake; /* what a big body holds of the broker's incoming budget */
    tn_message *big;  /* a big SEND's message, its body arriving straight into it */
    bool big_wait;    /* big_f's body waits for room in the incoming budget */
    tn_stomp_frame big_f;
    char head[8];   /* ST_CONNECT: the first command's bytes so far (leading EOLs skipped) */
    uint8_t n_head; /* bytes in head */
    bool head_ok;   /* the first command can only be CONNECT or STOMP */
    bool admitted;  /* past tn_broker_hold (the CONNECT may be handled) */
    tn_hold *held;  /* tn_broker_hold, until woken */
};

/* ---- output ---- */

static tn_buf *
out(sconn *c)
{
    c->last_tx = c->io->now(c->ioc);
    return c->io->out(c->ioc);
}

static void schedule(sconn *c);
static void big_drop(sconn *c);

/* ERROR with a message header (and receipt-id for the frame's receipt), then close. Returns
 * TN_EPROTO for input() to stop. */
static int
fail(sconn *c, const tn_stomp_frame *f, const char *msg, const char *detail)
{
    tn_log_info("STOMP-ERROR", "%s: %s%s%s; closing", c->io->peer(c->ioc), msg, detail ? ": " : "",
                detail ? detail : "");
    if (c->state != ST_CLOSING) {
        tn_stomp_encoder e;
        tn_stomp_encode_begin(&e, out(c), c->version, TN_STOMP_ERROR);
        tn_stomp_encode_header(&e, "message", 7, msg, strlen(msg));
        const char *r = f ? tn_stomp_header(f, "receipt") : NULL;
        if (r)
            tn_stomp_encode_header(&e, "receipt-id", 10, r, strlen(r));
        /* Before CONNECTED: [1.2 "Protocol Negotiation"]: what we speak. */
        if (c->state == ST_CONNECT || c->state == ST_AUTH)
            tn_stomp_encode_header(&e, "version", 7, "1.0,1.1,1.2", 11);
        tn_stomp_encode_header(&e, "content-type", 12, "text/plain", 10);
        const char *body = detail ? detail : msg;
        tn_stomp_encode_end(&e, body, strlen(body), true);
        big_drop(c);
        c->state = ST_CLOSING;
        c->io->set_deadline(c->ioc, 0);
        c->io->close(c->ioc);
    }
    return TN_EPROTO;
}

/* A RECEIPT the journal allowed out (tn_broker_reply); flags 1: close after it. */
static void
reply_send(tn_replies *r, const uint8_t *p, size_t n, uint32_t flags, int status)
{
    sconn *c = TN_CONTAINER_OF(r, sconn, replies);
    if (status != 0) {
        fail(c, NULL, "the journal cannot be written", "not stored");
    } else if (c->state != ST_CLOSING) {
        if (tn_buf_append(out(c), p, n) != 0) {
            fail(c, NULL, "output buffer full", NULL);
        } else if (flags & 1) {
            c->state = ST_CLOSING;
            c->io->close(c->ioc);
        }
    }
}

/* RECEIPT for f if it asked for one (after what it did is durable). */
static void
receipt(sconn *c, const tn_stomp_frame *f, bool close_after)
{
    const char *r = tn_stomp_header(f, "receipt");
    if (!r) {
        if (close_after) {
            c->state = ST_CLOSING;
            c->io->close(c->ioc);
        }
        return;
    }
    tn_buf *fb = &c->st->frame; /* tn_broker_reply copies what it has to keep */
    fb->len = 0;
    tn_stomp_encoder e;
    tn_stomp_encode_begin(&e, fb, c->version, TN_STOMP_RECEIPT);
    tn_stomp_encode_header(&e, "receipt-id", 10, r, strlen(r));
    if (tn_stomp_encode_end(&e, NULL, 0, false) == 0)
        tn_broker_reply(c->st->b, &c->replies, fb->data, fb->len, close_after ? 1 : 0);
}

/* ---- destinations ---- */

typedef struct dest {
    int kind;
    bool temp;
    const char *name; /* core name, in st->name (NUL-terminated) */
    size_t len;
} dest;

static bool
has_prefix(const char *s, const char *p, size_t *plen)
{
    *plen = strlen(p);
    return strncmp(s, p, *plen) == 0;
}

/* Parses a destination header into nb (a scratch buffer). Temporary ones become
 * "tmp.<conn>.NAME". */
static int
parse_dest_in(sconn *c, const char *v, dest *d, tn_buf *nb)
{
    size_t n;
    const char *rest;
    d->temp = false;
    if (has_prefix(v, "/queue/", &n)) {
        d->kind = DEST_QUEUE;
    } else if (has_prefix(v, "/topic/", &n)) {
        d->kind = DEST_TOPIC;
    } else if (has_prefix(v, "/temp-queue/", &n)) {
        d->kind = DEST_QUEUE;
        d->temp = true;
    } else if (has_prefix(v, "/temp-topic/", &n)) {
        d->kind = DEST_TOPIC;
        d->temp = true;
    } else {
        return TN_EINVAL;
    }
    rest = v + n;
    if (!*rest)
        return TN_EINVAL;
    nb->len = 0;
    if (d->temp) {
        char pre[48];
        int k = snprintf(pre, sizeof pre, "tmp.%" PRIu64 ".", c->serial);
        if (tn_buf_append(nb, pre, (size_t)k) != 0)
            return TN_ETOOBIG;
    }
    if (tn_buf_append(nb, rest, strlen(rest) + 1) != 0)
        return TN_ETOOBIG;
    d->name = (const char *)nb->data;
    d->len = nb->len - 1;
    return 0;
}

static int
parse_dest(sconn *c, const char *v, dest *d)
{
    return parse_dest_in(c, v, d, &c->st->name);
}

static void
temp_add(sconn *c, tn_session *q)
{
    for (size_t i = 0; i < c->n_temps; i++)
        if (c->temps[i] == q)
            return;
    c->temps = tn_xrealloc(c->temps, (c->n_temps + 1) * sizeof *c->temps);
    c->temps[c->n_temps++] = q;
}

/* ---- deliveries ---- */

static void
later_add(sconn *c, ssub *sub, tn_delivery *d, bool dead)
{
    if (c->n_later == c->cap_later) {
        c->cap_later = c->cap_later ? 2 * c->cap_later : 64;
        c->later = tn_xrealloc(c->later, c->cap_later * sizeof *c->later);
    }
    c->later[c->n_later++] = (later){sub, d, dead};
    c->io->wake(c->ioc);
}

static tn_session *
dlq_for(sconn *c, ssub *sub)
{
    size_t n;
    const char *qn = tn_session_queue_name(sub->s, &n);
    if (!qn)
        return NULL;
    tn_buf *nb = &c->st->name;
    nb->len = 0;
    if (tn_buf_append(nb, "DLQ.", 4) || tn_buf_append(nb, qn, n))
        return NULL;
    return tn_broker_queue(c->st->b, (const char *)nb->data, nb->len, true);
}

/* Acks (or dead-letters) what deliver() took for later; before anything that may detach. */
static void
run_later(sconn *c)
{
    /* Acking may deliver more, to this connection too: entries are copied, the list may grow. */
    for (size_t i = 0; i < c->n_later; i++) {
        later l = c->later[i];
        if (l.dead) {
            tn_session *dlq = dlq_for(c, l.sub);
            const tn_message *m = l.d->msg;
            tn_message *copy =
                dlq ? tn_message_new_props(m->name, m->name_len, m->props, m->props_len, m->payload,
                                           m->payload_len, m->qos, false)
                    : NULL;
            if (copy) {
                copy->persistent = m->persistent;
                tn_log_warn("STOMP-DLQ",
                            "message %" PRIu64
                            " delivered %u times without an ack: moved to DLQ.%s",
                            m->id, l.d->count, m->name);
                tn_broker_send(c->st->b, dlq, copy, NULL);
                tn_message_unref(copy);
            }
        }
        tn_session_ack(l.sub->s, l.d);
    }
    c->n_later = 0;
}

static int
put_header(tn_stomp_encoder *e, const char *name, const char *v, size_t vlen)
{
    return tn_stomp_encode_header(e, name, strlen(name), v, vlen);
}

static void
release_message(void *m)
{
    tn_message_unref(m);
}

/* Properties not shown as MESSAGE headers: the core's own (\x01...) and the headers this
 * adapter writes itself (an AMQP message-id is not STOMP's). */
static bool
own_header(const char *k, size_t kl)
{
    static const char *const own[] = {
        "message-id", "subscription", "destination",    "ack",
        "persistent", "redelivered",  "delivery-count", "content-length"};
    if (kl == 0 || k[0] == '\x01')
        return true;
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (strlen(own[i]) == kl && memcmp(own[i], k, kl) == 0)
            return true;
    return false;
}

static int
sub_deliver(void *ctx, tn_delivery *d)
{
    ssub *sub = ctx;
    sconn *c = sub->c;
    if (c->state != ST_OPEN || c->io->out_full(c->ioc))
        return TN_EAGAIN;
    tn_message *m = d->msg;
    uint32_t maxd = c->st->conf.max_deliveries;
    if (d->ack && maxd && d->count > maxd && sub->kind == DEST_QUEUE) {
        later_add(c, sub, d, true);
        return 0;
    }
    tn_stomp_encoder e;
    tn_stomp_encode_begin(&e, out(c), c->version, TN_STOMP_MESSAGE);
    put_header(&e, "subscription", sub->id, strlen(sub->id));
    char mid[48];
    int n = snprintf(mid, sizeof mid, d->ack ? "%" PRIu32 ".%" PRIu64 : "%" PRIu32 ".n%" PRIu64,
                     sub->num, m->id);
    put_header(&e, "message-id", mid, (size_t)n);
    if (sub->kind == DEST_QUEUE) {
        put_header(&e, "destination", sub->prefix, strlen(sub->prefix));
    } else {
        tn_buf *nb = &c->st->name;
        nb->len = 0;
        tn_buf_append(nb, "/topic/", 7);
        tn_buf_append(nb, m->name, m->name_len);
        put_header(&e, "destination", (const char *)nb->data, nb->len);
    }
    if (c->version >= TN_STOMP_V12 && sub->ack != ACK_AUTO)
        put_header(&e, "ack", mid, (size_t)n);
    if (m->persistent)
        put_header(&e, "persistent", "true", 4);
    if (d->count > 1) {
        char cnt[16];
        int k = snprintf(cnt, sizeof cnt, "%" PRIu32, d->count);
        put_header(&e, "redelivered", "true", 4);
        put_header(&e, "delivery-count", cnt, (size_t)k); /* this delivery included */
    }
    size_t off = 0, kl, vl;
    const char *k, *v;
    while (tn_message_prop_next(m, &off, &k, &kl, &v, &vl))
        if (!own_header(k, kl))
            tn_stomp_encode_header(&e, k, kl, v, vl);
    /* A large body goes by reference to the message: one copy however many get it. */
    bool by_ref = c->io->out_ref && m->payload_len >= TN_NET_REF_MIN;
    int rc = by_ref ? tn_stomp_encode_end_head(&e, m->payload_len)
                    : tn_stomp_encode_end(&e, m->payload, m->payload_len, true);
    if (rc == 0 && by_ref) {
        c->io->out_ref(c->ioc, m->payload, m->payload_len, release_message, tn_message_ref(m));
        if (tn_buf_append(out(c), "", 1) != 0) { /* the NUL: cannot fail below out_full */
            fail(c, NULL, "output buffer full", NULL);
            return 0;
        }
    }
    if (rc != 0) {
        /* Cannot be carried (a name the version cannot escape) or no room: log and skip it. */
        if (e.err == TN_ETOOBIG)
            return TN_EAGAIN;
        tn_log_warn("STOMP-SKIP", "%s: message %" PRIu64 " cannot be sent as a STOMP frame",
                    c->io->peer(c->ioc), m->id);
        if (d->ack)
            later_add(c, sub, d, false);
        return 0;
    }
    if (d->ack && sub->ack == ACK_AUTO)
        later_add(c, sub, d, false);
    return 0;
}

static const tn_consumer_ops sub_consumer_ops = {.deliver = sub_deliver};

static void
sub_kick(void *ctx)
{
    /* Another connection took this durable subscription over: it stops here. */
    ssub *sub = ctx;
    run_later(sub->c);
    tn_session_detach(sub->s);
    sub->s = NULL;
    sub->k = NULL;
}

static const tn_session_ops sub_session_ops = {sub_deliver, sub_kick};

static tn_consumer *
sub_consumer(ssub *sub)
{
    if (!sub->s)
        return NULL;
    return sub->kind == DEST_QUEUE ? sub->k : tn_session_consumer(sub->s);
}

/* Detaches a subscription; discard: a durable one is deleted for good. */
static void
sub_free(sconn *c, ssub *sub, bool discard)
{
    HASH_DEL(c->subs, sub);
    if (sub->s) {
        if (sub->kind == DEST_QUEUE) {
            tn_queue_detach(sub->k);
        } else {
            tn_session *s = sub->s;
            tn_session_detach(s);
            if (discard && sub->durable)
                tn_session_discard(s);
        }
    }
    free(sub->id);
    free(sub->prefix);
    free(sub);
}

static ssub *
sub_by_num(sconn *c, uint32_t num)
{
    for (ssub *s = c->subs; s; s = s->hh.next)
        if (s->num == num)
            return s;
    return NULL;
}

/* The connection is closing: its subscriptions stop now, not once its output drains, so a client
 * that stopped reading holds no queue (and no producer waiting on one) while it goes. */
static void
subs_release(sconn *c)
{
    run_later(c);
    ssub *s, *tmp;
    HASH_ITER(hh, c->subs, s, tmp)
    {
        sub_free(c, s, false);
    }
}

/* The first command, checked as its bytes arrive: anything but CONNECT or STOMP is refused at
 * once, without waiting for a frame that may be long or never end. */
static bool
head_plausible(sconn *c, const uint8_t *p, size_t len)
{
    static const char *const cmds[] = {"CONNECT", "STOMP"};
    for (size_t i = 0; i < len && !c->head_ok; i++) {
        if (c->n_head == 0 && (p[i] == '\n' || p[i] == '\r'))
            continue; /* heart-beats before the frame */
        c->head[c->n_head++] = (char)p[i];
        bool any = false;
        for (size_t k = 0; k < 2; k++) {
            size_t cl = strlen(cmds[k]);
            if (c->n_head <= cl && memcmp(c->head, cmds[k], c->n_head) == 0)
                any = true;
            else if (c->n_head == cl + 1 && memcmp(c->head, cmds[k], cl) == 0 &&
                     (c->head[cl] == '\n' || c->head[cl] == '\r'))
                c->head_ok = any = true;
        }
        if (!any)
            return false;
    }
    return true;
}

/* ---- frames ---- */

static void
set_pause(sconn *c, uint8_t why, bool on)
{
    uint8_t old = c->pauses;
    c->pauses = on ? old | why : old & (uint8_t)~why;
    if (!old != !c->pauses)
        c->io->pause(c->ioc, c->pauses != 0);
}

static void
flow_resume(tn_flow *f)
{
    sconn *c = TN_CONTAINER_OF(f, sconn, flow);
    if (c->state != ST_CLOSING) {
        set_pause(c, PAUSE_FLOW, false);
        c->io->wake(c->ioc);
    }
}

/* Room for a big body was granted. */
static void
intake_resume(tn_intake *t)
{
    sconn *c = TN_CONTAINER_OF(t, sconn, intake);
    if (c->state != ST_CLOSING)
        c->io->wake(c->ioc);
}

/* The big body in progress is gone (whole, or the connection is closing). */
static void
big_drop(sconn *c)
{
    tn_message_unref(c->big);
    c->big = NULL;
    c->big_wait = false;
    tn_intake_release(c->st->b, &c->intake);
}

static int
version_pick(const char *accept, uint8_t *v)
{
    if (!accept) {
        *v = TN_STOMP_V10;
        return 0;
    }
    uint8_t best = 0;
    const char *p = accept;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 3 && strncmp(p, "1.0", 3) == 0 && best < TN_STOMP_V10)
            best = TN_STOMP_V10;
        else if (n == 3 && strncmp(p, "1.1", 3) == 0 && best < TN_STOMP_V11)
            best = TN_STOMP_V11;
        else if (n == 3 && strncmp(p, "1.2", 3) == 0)
            best = TN_STOMP_V12;
        p += n + (e ? 1 : 0);
    }
    if (!best)
        return TN_EINVAL;
    *v = best;
    return 0;
}

static uint32_t
hb_field(const char *hb, int which)
{
    if (!hb)
        return 0;
    const char *comma = strchr(hb, ',');
    if (!comma)
        return 0;
    return (uint32_t)strtoul(which ? comma + 1 : hb, NULL, 10);
}

/* The authenticator's answer to a CONNECT (now, or once its job is done): CONNECTED and
 * ST_OPEN, or ERROR and close. user (taken) is who the client is, on 0. f: the CONNECT, or NULL
 * when it is gone (a CONNECT has no receipt header anyway). */
static int
connect_answer(sconn *c, const tn_stomp_frame *f, int rc, char *user)
{
    if (rc != 0) {
        free(user);
        const char *login = f ? tn_stomp_header(f, "login") : NULL;
        tn_log_warn("STOMP-AUTH", "%s: login failed%s%.64s%s", c->io->peer(c->ioc),
                    login ? " for user '"
                    : f   ? " for an anonymous client"
                          : "",
                    login ? login : "", login ? "'" : "");
        return fail(c, f, "not authorized", rc == TN_EINVAL ? "bad login or passcode" : NULL);
    }
    free(c->user);
    c->user = user;
    c->state = ST_OPEN;
    uint8_t v = c->version;
    tn_stomp_encoder e;
    tn_stomp_encode_begin(&e, out(c), v, TN_STOMP_CONNECTED);
    static const char *const names[] = {"1.0", "1.0", "1.1", "1.2"};
    const char *vs = names[v - TN_STOMP_V10 + 1];
    put_header(&e, "version", vs, 3);
    put_header(&e, "server", SERVER_NAME, strlen(SERVER_NAME));
    char buf[64];
    int n = snprintf(buf, sizeof buf, "tern-%" PRIu64, c->serial);
    put_header(&e, "session", buf, (size_t)n);
    if (v >= TN_STOMP_V11) {
        n = snprintf(buf, sizeof buf, "%" PRIu32 ",%" PRIu32, c->hb_send_ms, c->hb_recv_ms);
        put_header(&e, "heart-beat", buf, (size_t)n);
    }
    tn_stomp_encode_end(&e, NULL, 0, false);
    schedule(c);
    return 0;
}

/* The authenticator's job for a CONNECT in ST_AUTH is done: answer it, then read on (the frames
 * the client sent after its CONNECT were kept unread). */
static void
auth_done(void *arg)
{
    sconn *c = arg;
    const tn_auth *au = &c->st->conf.auth;
    tn_auth_job *job = c->auth_job;
    c->auth_job = NULL;
    char *user = NULL;
    int rc = au->finish(au->ctx, job, &user);
    if (c->state != ST_AUTH) { /* closing (its CONNECT deadline passed): nothing to answer */
        free(user);
        return;
    }
    c->last_rx = c->io->now(c->ioc); /* not read meanwhile: its heart-beats could not be heard */
    if (connect_answer(c, NULL, rc, user) != 0)
        return;
    set_pause(c, PAUSE_AUTH, false);
    c->io->wake(c->ioc);
}

static int
on_connect(sconn *c, const tn_stomp_frame *f)
{
    uint8_t v;
    if (version_pick(tn_stomp_header(f, "accept-version"), &v) != 0) {
        c->version = TN_STOMP_V12;
        return fail(c, f, "Supported protocol versions are 1.0,1.1,1.2", NULL);
    }
    c->version = v;
    tn_stomp_decoder_set_version(&c->dec, v);
    if (tn_broker_standby(c->st->b, NULL))
        return fail(c, f, "standby", "this node is a standby: connect to the active");
    const char *cid = tn_stomp_header(f, "client-id");
    if (cid && *cid)
        c->client_id = tn_xstrdup(cid);
    /* Heart-beats (1.1+): we send as often as the client wants to hear from us, and expect to
     * hear from it as often as it promises; never faster than min_heartbeat_ms. Kept for
     * CONNECTED, which may come once the authenticator has answered. */
    const char *hb = v >= TN_STOMP_V11 ? tn_stomp_header(f, "heart-beat") : NULL;
    uint32_t cx = hb_field(hb, 0), cy = hb_field(hb, 1), min = c->st->conf.min_heartbeat_ms;
    c->hb_send_ms = cy ? (cy < min ? min : cy) : 0;
    c->hb_recv_ms = cx ? (cx < min ? min : cx) : 0;
    const tn_auth *au = &c->st->conf.auth;
    const char *login = tn_stomp_header(f, "login");
    if (!au->begin) /* everyone may connect: the name they give is who they are */
        return connect_answer(c, f, 0, login ? tn_xstrdup(login) : NULL);
    const char *pass = tn_stomp_header(f, "passcode");
    tn_auth_req req = {
        .protocol = "stomp",
        .client_id = c->client_id,
        .user = login,
        .password = (const uint8_t *)pass,
        .password_len = pass ? strlen(pass) : 0,
        .cert_subject = tn_io_cert_subject(c->io, c->ioc),
    };
    char *user = NULL;
    int rc = au->begin(au->ctx, &req, &user, &c->auth_job, auth_done, c);
    if (rc != TN_EAGAIN)
        return connect_answer(c, f, rc, user);
    /* Deciding takes time (a password hash, a refusal's delay): the CONNECT is consumed, and
     * nothing after it is read until auth_done(). */
    tn_assert(c->auth_job);
    c->state = ST_AUTH;
    set_pause(c, PAUSE_AUTH, true);
    return 0;
}

/* Builds the message a SEND carries. fill: the body is not here yet; *fill gets where it goes. */
static tn_message *
make_message(sconn *c, const tn_stomp_frame *f, const dest *d, int *err, uint8_t **fill)
{
    tn_stomp *st = c->st;
    tn_buf *pb = &st->props;
    pb->len = 0;
    bool persistent = false;
    for (uint32_t i = 0; i < f->nheaders; i++) {
        const tn_stomp_hdr *h = &f->headers[i];
        if (!strcmp(h->name, "destination") || !strcmp(h->name, "receipt") ||
            !strcmp(h->name, "transaction") || !strcmp(h->name, "content-length"))
            continue;
        if (tn_stomp_header(f, h->name) != h->value)
            continue; /* a repeated header: the first counts */
        if (h->name[0] == '\x01')
            continue; /* the core's own properties cannot be set by a client */
        if (!strcmp(h->name, "persistent")) {
            persistent = !strcmp(h->value, "true");
            continue;
        }
        const char *val = h->value;
        size_t vlen = h->vlen;
        char rewritten[512];
        if (!strcmp(h->name, "reply-to")) {
            dest rd;
            /* /temp-queue/x of this connection is /queue/tmp.N.x to everyone else */
            size_t pl;
            if ((has_prefix(val, "/temp-queue/", &pl) || has_prefix(val, "/temp-topic/", &pl)) &&
                parse_dest_in(c, val, &rd, &st->reply) == 0) {
                int k = snprintf(rewritten, sizeof rewritten, "%s%s",
                                 rd.kind == DEST_QUEUE ? "/queue/" : "/topic/", rd.name);
                if (k > 0 && (size_t)k < sizeof rewritten) {
                    val = rewritten;
                    vlen = (size_t)k;
                }
            }
        }
        if (tn_props_add(pb, h->name, h->nlen, val, vlen) != 0) {
            *err = TN_ETOOBIG;
            return NULL;
        }
    }
    tn_message *m =
        fill ? tn_message_alloc(d->name, d->len, pb->data, pb->len, f->body_len, 1, false, fill)
             : tn_message_new_props(d->name, d->len, pb->data, pb->len, f->body, f->body_len, 1,
                                    false);
    if (!m) {
        *err = TN_ENOMEM;
        return NULL;
    }
    m->persistent = persistent;
    return m;
}

/* Publishes or queues m now (SEND, or a committed transaction's SEND). */
static void
deliver_send(sconn *c, tn_message *m, tn_session *q)
{
    if (q)
        tn_broker_send(c->st->b, q, m, &c->flow);
    else
        tn_broker_publish(c->st->b, m, &c->flow);
}

static stx *
tx_find(sconn *c, const tn_stomp_frame *f, int *rc)
{
    const char *t = tn_stomp_header(f, "transaction");
    *rc = 0;
    if (!t)
        return NULL;
    stx *x = NULL;
    HASH_FIND_STR(c->txs, t, x);
    if (!x)
        *rc = fail(c, f, "unknown transaction", t);
    return x;
}

static void
tx_add(stx *x, txop *op)
{
    op->next = NULL;
    if (x->tail)
        x->tail->next = op;
    else
        x->ops = op;
    x->tail = op;
}

static void
tx_free(sconn *c, stx *x)
{
    HASH_DEL(c->txs, x);
    for (txop *op = x->ops, *next; op; op = next) {
        next = op->next;
        tn_message_unref(op->m);
        free(op);
    }
    free(x->id);
    free(x);
}

static int
too_deep(sconn *c, const tn_stomp_frame *f, const char *dv)
{
    char msg[96];
    snprintf(msg, sizeof msg, "topic name with more than max_topic_levels (%u) levels",
             tn_broker_get_limits(c->st->b)->max_topic_levels);
    return fail(c, f, msg, dv);
}

/* A SEND or SUBSCRIBE the ACL does not allow: an ERROR frame, then the connection closes. */
static int
acl_denied(sconn *c, const tn_stomp_frame *f, const char *what, const char *where)
{
    tn_log_warn("STOMP-ACL-DENIED", "%s: user %s may not %s %s", c->io->peer(c->ioc),
                c->user ? c->user : "(anonymous)", what, where ? where : "?");
    return fail(c, f, "not authorized", where);
}

/* Where a SEND goes: *d, the queue *q (NULL: a topic) and its transaction *x. 0, or fail()'s
 * result. */
static int
send_target(sconn *c, const tn_stomp_frame *f, dest *dp, tn_session **qp, stx **xp)
{
    const char *dv = tn_stomp_header(f, "destination");
    dest d;
    if (!dv)
        return fail(c, f, "SEND without a destination header", NULL);
    if (parse_dest(c, dv, &d) != 0)
        return fail(c, f,
                    "unknown destination (use /queue/, /topic/, /temp-queue/ or /temp-topic/)", dv);
    if (d.kind == DEST_TOPIC && (strchr(d.name, '*') || strchr(d.name, '>')))
        return fail(c, f, "wildcards are for SUBSCRIBE, not SEND", dv);
    if (d.kind == DEST_TOPIC && !tn_broker_levels_ok(c->st->b, d.name))
        return too_deep(c, f, dv);
    /* Temporary destinations belong to a connection: no permission is asked for them. */
    if (!d.temp && strncmp(d.name, "tmp.", 4) != 0 &&
        !tn_broker_may(c->st->b, c->user, c->client_id, d.kind == DEST_QUEUE, d.name, TN_MAY_WRITE,
                       false))
        return acl_denied(c, f, "SEND to", dv);
    tn_session *q = NULL;
    if (d.kind == DEST_QUEUE && !d.temp && strncmp(d.name, "tmp.", 4) == 0) {
        /* Another connection's temporary queue (from a reply-to): only while it exists. */
        q = tn_broker_queue_find(c->st->b, d.name, d.len);
        if (!q)
            return fail(c, f, "the temporary queue no longer exists", dv);
    } else if (d.kind == DEST_QUEUE) {
        q = tn_broker_queue(c->st->b, d.name, d.len, !d.temp);
        if (d.temp)
            temp_add(c, q);
    }
    int rc = 0;
    stx *x = tx_find(c, f, &rc);
    if (rc)
        return rc;
    *dp = d;
    *qp = q;
    *xp = x;
    return 0;
}

/* The headers of a SEND whose big body has not arrived: checked now, before any of the body is
 * read; then, once the incoming budget has room, the body goes straight into its message.
 * BIG_WAIT: not yet (reads pause until intake_resume()). */
static int
big_head(sconn *c, const tn_stomp_frame *f)
{
    if (f->command != TN_STOMP_SEND)
        return fail(c, f, "a body this large is only accepted on SEND",
                    tn_stomp_command_name(f->command));
    dest d;
    tn_session *q;
    stx *x;
    int rc = send_target(c, f, &d, &q, &x);
    if (rc)
        return rc;
    if (c->intake.waiting ||
        (c->intake.held < f->body_len &&
         tn_intake_reserve(c->st->b, &c->intake, f->body_len - c->intake.held) != 0)) {
        c->big_wait = true;
        c->big_f = *f;
        set_pause(c, PAUSE_INTAKE, true);
        return BIG_WAIT;
    }
    c->big_wait = false;
    set_pause(c, PAUSE_INTAKE, false);
    int err = 0;
    uint8_t *dst = NULL;
    c->big = make_message(c, f, &d, &err, &dst);
    if (!c->big)
        return fail(c, f, err == TN_ENOMEM ? "out of memory" : "too many header bytes", NULL);
    tn_stomp_decoder_body_to(&c->dec, dst);
    return 0;
}

static int
on_send(sconn *c, const tn_stomp_frame *f)
{
    dest d;
    tn_session *q;
    stx *x;
    int rc = send_target(c, f, &d, &q, &x);
    if (rc)
        return rc;
    int err = 0;
    tn_message *m;
    if (c->big) { /* its body arrived straight into it: a message like any other now */
        tn_assert(f->body == c->big->payload);
        m = c->big;
        c->big = NULL;
        tn_intake_charge(c->st->b, &c->intake, m); /* charged while it waits in memory */
    } else {
        m = make_message(c, f, &d, &err, NULL);
    }
    if (!m)
        return fail(c, f, err == TN_ENOMEM ? "out of memory" : "too many header bytes", NULL);
    if (x) {
        txop *op = tn_xcalloc(1, sizeof *op);
        op->kind = TX_SEND;
        op->m = m;
        op->q = q;
        tx_add(x, op);
    } else {
        deliver_send(c, m, q);
        tn_message_unref(m);
    }
    receipt(c, f, false);
    return 0;
}

static int
parse_ack_mode(const char *v, int *mode)
{
    if (!v || !strcmp(v, "auto"))
        *mode = ACK_AUTO;
    else if (!strcmp(v, "client"))
        *mode = ACK_CLIENT;
    else if (!strcmp(v, "client-individual"))
        *mode = ACK_INDIVIDUAL;
    else
        return TN_EINVAL;
    return 0;
}

static int
on_subscribe(sconn *c, const tn_stomp_frame *f)
{
    const char *dv = tn_stomp_header(f, "destination");
    const char *id = tn_stomp_header(f, "id");
    if (!dv)
        return fail(c, f, "SUBSCRIBE without a destination header", NULL);
    if (!id) {
        if (c->version >= TN_STOMP_V11)
            return fail(c, f, "SUBSCRIBE without an id header", NULL);
        id = dv; /* 1.0: the destination names the subscription */
    }
    ssub *sub = NULL;
    HASH_FIND_STR(c->subs, id, sub);
    if (sub)
        return fail(c, f, "a subscription with this id exists", id);
    int mode;
    if (parse_ack_mode(tn_stomp_header(f, "ack"), &mode) != 0)
        return fail(c, f, "ack must be auto, client or client-individual", NULL);
    uint32_t prefetch = c->st->conf.prefetch;
    const char *pf = tn_stomp_header(f, "activemq.prefetchSize");
    if (pf) {
        char *end;
        unsigned long v = strtoul(pf, &end, 10);
        if (*end || v == 0 || v > 65535)
            return fail(c, f, "activemq.prefetchSize must be 1 to 65535", pf);
        prefetch = (uint32_t)v;
    }
    dest d;
    if (parse_dest(c, dv, &d) != 0)
        return fail(c, f,
                    "unknown destination (use /queue/, /topic/, /temp-queue/ or /temp-topic/)", dv);
    if (d.kind == DEST_TOPIC && !tn_broker_levels_ok(c->st->b, d.name))
        return too_deep(c, f, dv);
    /* A queue: its owner must be allowed to read it; a topic filter: to read some topic it can
     * match (each message is then checked as it comes). */
    if (!d.temp && !tn_broker_may(c->st->b, c->user, c->client_id, d.kind == DEST_QUEUE, d.name,
                                  TN_MAY_READ, d.kind == DEST_TOPIC))
        return acl_denied(c, f, "SUBSCRIBE to", dv);
    const char *dname = tn_stomp_header(f, "activemq.subscriptionName");
    if (!dname)
        dname = tn_stomp_header(f, "durable-subscription-name");
    if (dname && d.kind == DEST_TOPIC && !c->client_id)
        return fail(c, f, "a durable subscription needs client-id on CONNECT", NULL);
    sub = tn_xcalloc(1, sizeof *sub);
    sub->c = c;
    sub->id = tn_xstrdup(id);
    sub->num = ++c->next_sub;
    sub->ack = mode;
    sub->kind = d.kind;
    tn_broker *b = c->st->b;
    if (d.kind == DEST_QUEUE) {
        tn_session *q = tn_broker_queue(b, d.name, d.len, !d.temp);
        if (d.temp)
            temp_add(c, q);
        size_t pl = strlen(d.temp ? "/temp-queue/" : "/queue/");
        sub->prefix = tn_xmalloc(pl + d.len + 1);
        const char *shown = d.temp ? strchr(d.name + 4, '.') + 1 : d.name;
        snprintf(sub->prefix, pl + d.len + 1, "%s%s", d.temp ? "/temp-queue/" : "/queue/", shown);
        sub->s = q;
        HASH_ADD_KEYPTR(hh, c->subs, sub->id, strlen(sub->id), sub);
        sub->k = tn_queue_attach(tn_session_queue(q), &sub_consumer_ops, sub, prefetch);
    } else {
        char filter[4096];
        if (d.len >= sizeof filter) {
            free(sub->id);
            free(sub);
            return fail(c, f, "topic name too long", NULL);
        }
        memcpy(filter, d.name, d.len + 1);
        char sid[4096 + 128];
        int n;
        if (dname) {
            sub->durable = true;
            n = snprintf(sid, sizeof sid,
                         "\x01"
                         "d:%s:%s",
                         c->client_id, dname);
        } else {
            n = snprintf(sid, sizeof sid,
                         "\x01"
                         "s:%" PRIu64 ":%s",
                         c->serial, id);
        }
        if (n < 0 || (size_t)n >= sizeof sid) {
            free(sub->id);
            free(sub);
            return fail(c, f, "subscription name too long", NULL);
        }
        bool present;
        HASH_ADD_KEYPTR(hh, c->subs, sub->id, strlen(sub->id), sub);
        tn_broker_session_open(b, sid, (size_t)n, !sub->durable, &sub_session_ops, sub, &sub->s,
                               &present);
        tn_session_set_identity(sub->s, c->user, c->client_id);
        if (tn_session_subscribe(sub->s, filter, 1) != 0) {
            sub_free(c, sub, false);
            return fail(c, f, "malformed topic name", dv);
        }
        tn_session_start(sub->s);
        tn_queue_set_credit(tn_session_consumer(sub->s), prefetch);
    }
    receipt(c, f, false);
    return 0;
}

static int
on_unsubscribe(sconn *c, const tn_stomp_frame *f)
{
    const char *id = tn_stomp_header(f, "id");
    if (!id && c->version == TN_STOMP_V10)
        id = tn_stomp_header(f, "destination");
    if (!id)
        return fail(c, f, "UNSUBSCRIBE without an id header", NULL);
    ssub *sub = NULL;
    HASH_FIND_STR(c->subs, id, sub);
    const char *dname = tn_stomp_header(f, "activemq.subscriptionName");
    if (!dname)
        dname = tn_stomp_header(f, "durable-subscription-name");
    if (sub) {
        sub_free(c, sub, dname != NULL);
    } else if (dname && c->client_id) {
        /* ActiveMQ's way to delete a durable subscription nobody is using: any id. Opening
         * its session clean discards what is stored; detaching frees the clean one. */
        char sid[4096 + 128];
        int n = snprintf(sid, sizeof sid,
                         "\x01"
                         "d:%s:%s",
                         c->client_id, dname);
        if (n < 0 || (size_t)n >= sizeof sid)
            return fail(c, f, "subscription name too long", NULL);
        tn_session *s;
        bool present;
        tn_broker_session_open(c->st->b, sid, (size_t)n, true, &sub_session_ops, NULL, &s,
                               &present);
        tn_session_detach(s);
    } else {
        return fail(c, f, "no subscription with this id", id);
    }
    receipt(c, f, false);
    return 0;
}

/* Parses an ack value "SUB.MSG" (or "SUB.nMSG" for a delivery that needs no ack). */
static int
parse_ack_id(const char *v, uint32_t *sub, uint64_t *msg, bool *noack)
{
    char *end;
    if (!v)
        return TN_EINVAL;
    unsigned long s = strtoul(v, &end, 10);
    if (end == v || *end != '.' || s > UINT32_MAX)
        return TN_EINVAL;
    const char *p = end + 1;
    *noack = *p == 'n';
    if (*noack)
        p++;
    unsigned long long m = strtoull(p, &end, 10);
    if (end == p || *end)
        return TN_EINVAL;
    *sub = (uint32_t)s;
    *msg = m;
    return 0;
}

/* Acks (or NACKs) one delivery, or for client mode everything up to it. TN_ENOENT: unknown. */
static int
apply_ack(sconn *c, uint32_t num, uint64_t msg_id, bool nack)
{
    ssub *sub = sub_by_num(c, num);
    tn_consumer *k = sub ? sub_consumer(sub) : NULL;
    if (!k)
        return TN_ENOENT;
    tn_delivery *d = tn_queue_unacked_first(k);
    while (d && d->msg->id != msg_id)
        d = tn_queue_unacked_next(d);
    if (!d)
        return TN_ENOENT;
    run_later(c);
    tn_delivery *first = sub->ack == ACK_CLIENT ? tn_queue_unacked_first(k) : d;
    for (tn_delivery *x = first, *next; x; x = next) {
        next = x == d ? NULL : tn_queue_unacked_next(x);
        if (nack)
            tn_queue_release(x); /* to the head again, redelivered:true */
        else
            tn_session_ack(sub->s, x);
    }
    return 0;
}

static int
on_ack(sconn *c, const tn_stomp_frame *f, bool nack)
{
    if (nack && c->version == TN_STOMP_V10)
        return fail(c, f, "NACK is STOMP 1.1 and later", NULL);
    const char *v = tn_stomp_header(f, c->version >= TN_STOMP_V12 ? "id" : "message-id");
    uint32_t num;
    uint64_t mid;
    bool noack;
    if (parse_ack_id(v, &num, &mid, &noack) != 0)
        return fail(c, f, "ACK of an unknown message", v ? v : "no id header");
    int rc = 0;
    stx *x = tx_find(c, f, &rc);
    if (rc)
        return rc;
    if (!noack) {
        if (x) {
            txop *op = tn_xcalloc(1, sizeof *op);
            op->kind = nack ? TX_NACK : TX_ACK;
            op->sub_num = num;
            op->msg_id = mid;
            tx_add(x, op);
        } else if (apply_ack(c, num, mid, nack) != 0) {
            return fail(c, f, "ACK of an unknown message", v);
        }
    }
    receipt(c, f, false);
    return 0;
}

static int
on_tx(sconn *c, const tn_stomp_frame *f)
{
    const char *t = tn_stomp_header(f, "transaction");
    if (!t)
        return fail(c, f, "missing transaction header", NULL);
    stx *x = NULL;
    HASH_FIND_STR(c->txs, t, x);
    if (f->command == TN_STOMP_BEGIN) {
        if (x)
            return fail(c, f, "transaction already begun", t);
        x = tn_xcalloc(1, sizeof *x);
        x->id = tn_xstrdup(t);
        HASH_ADD_KEYPTR(hh, c->txs, x->id, strlen(x->id), x);
    } else if (!x) {
        return fail(c, f, "unknown transaction", t);
    } else if (f->command == TN_STOMP_COMMIT) {
        for (txop *op = x->ops; op; op = op->next) {
            if (op->kind == TX_SEND)
                deliver_send(c, op->m, op->q);
            else
                apply_ack(c, op->sub_num, op->msg_id, op->kind == TX_NACK); /* gone: ignore */
        }
        tx_free(c, x);
    } else {
        tx_free(c, x); /* ABORT */
    }
    receipt(c, f, false);
    return 0;
}

static int
on_frame(sconn *c, const tn_stomp_frame *f)
{
    if (c->state == ST_CONNECT) {
        if (f->command != TN_STOMP_CONNECT && f->command != TN_STOMP_STOMP)
            return fail(c, f, "the first frame must be CONNECT or STOMP", NULL);
        return on_connect(c, f);
    }
    switch (f->command) {
    case TN_STOMP_SEND:
        return on_send(c, f);
    case TN_STOMP_SUBSCRIBE:
        return on_subscribe(c, f);
    case TN_STOMP_UNSUBSCRIBE:
        return on_unsubscribe(c, f);
    case TN_STOMP_ACK:
        return on_ack(c, f, false);
    case TN_STOMP_NACK:
        return on_ack(c, f, true);
    case TN_STOMP_BEGIN:
    case TN_STOMP_COMMIT:
    case TN_STOMP_ABORT:
        return on_tx(c, f);
    case TN_STOMP_DISCONNECT:
        c->state = ST_DRAINING; /* nothing more is read or delivered */
        receipt(c, f, true);    /* closes, once the RECEIPT (if any) is out */
        subs_release(c);
        return TN_ECLOSED;
    case TN_STOMP_CONNECT:
    case TN_STOMP_STOMP:
        return fail(c, f, "already connected", NULL);
    default:
        return fail(c, f, "not a client frame", tn_stomp_command_name(f->command));
    }
}

/* ---- adapter ---- */

static void
schedule(sconn *c)
{
    if (c->state == ST_CLOSING || c->state == ST_DRAINING)
        return;
    uint64_t at = 0;
    if (c->state == ST_CONNECT || c->state == ST_AUTH) {
        /* However slowly it trickles in, and however long the authenticator takes. */
        at = c->opened + c->st->conf.connect_timeout_ms;
    } else {
        if (c->hb_send_ms)
            at = c->last_tx + c->hb_send_ms;
        if (c->hb_recv_ms) {
            uint64_t r = c->last_rx + 2ull * c->hb_recv_ms; /* grace: twice the interval */
            if (!at || r < at)
                at = r;
        }
    }
    c->io->set_deadline(c->ioc, at);
}

static void *
a_open(void *proto, const tn_io *io, void *ctx)
{
    tn_stomp *st = proto;
    sconn *c = tn_xcalloc(1, sizeof *c);
    c->st = st;
    st->n_conns++;
    c->io = io;
    c->ioc = ctx;
    c->serial = ++st->next_serial;
    c->version = TN_STOMP_V10;
    tn_stomp_decoder_init(&c->dec, TN_STOMP_ROLE_SERVER, &st->conf.limits);
    tn_flow_init(&c->flow, flow_resume);
    c->intake.resume = intake_resume;
    c->replies.send = reply_send;
    c->opened = c->last_rx = c->last_tx = io->now(ctx);
    schedule(c);
    return c;
}

/* The standby has taken over or stopped holding: the CONNECT is handled now. */
static void
held_wake(void *arg)
{
    sconn *c = arg;
    tn_broker_unhold(c->st->b, c->held);
    c->held = NULL;
    c->admitted = true;
    set_pause(c, PAUSE_HELD, false);
    c->io->wake(c->ioc);
}

static ssize_t
a_input(void *a, const uint8_t *p, size_t len)
{
    sconn *c = a;
    run_later(c);
    if (c->state == ST_CLOSING || c->state == ST_DRAINING)
        return (ssize_t)len;
    if (c->state == ST_AUTH)
        return 0; /* nothing after the CONNECT until it is answered: auth_done() wakes us */
    c->last_rx = c->io->now(c->ioc);
    if (c->state == ST_CONNECT && !c->head_ok && !head_plausible(c, p, len)) {
        fail(c, NULL, "the first frame must be CONNECT or STOMP", NULL);
        return (ssize_t)len;
    }
    if (c->state == ST_CONNECT && !c->admitted) {
        /* A standby about to take over holds the client rather than refusing it. */
        if (c->held)
            return 0;
        if ((c->held = tn_broker_hold(c->st->b, held_wake, c)) != NULL) {
            set_pause(c, PAUSE_HELD, true);
            return 0;
        }
        c->admitted = true;
    }
    if (c->intake.waiting)
        return 0; /* intake_resume() wakes us */
    set_pause(c, PAUSE_INTAKE, false);
    if (c->big_wait) {
        int rc = big_head(c, &c->big_f);
        if (rc == BIG_WAIT)
            return 0;
        if (rc != 0) {
            subs_release(c);
            return (ssize_t)len;
        }
    }
    size_t off = 0;
    while (off < len && c->state != ST_CLOSING) {
        if (c->flow.blocked) { /* a queue we send to is full: read no more until it drains */
            set_pause(c, PAUSE_FLOW, true);
            break;
        }
        size_t used = 0;
        tn_stomp_frame f;
        int rc = tn_stomp_decode(&c->dec, p + off, len - off, &used, &f);
        if (rc == TN_STOMP_HEAD) {
            off += used;
            rc = big_head(c, &f);
            if (rc == BIG_WAIT)
                break;
            if (rc != 0) {
                subs_release(c);
                return (ssize_t)len;
            }
            continue;
        }
        if (rc == TN_EAGAIN) {
            off = len;
            /* A big body without content-length, gathered in the decoder: from the budget too;
             * past it, read no more until there is room (the bytes held stay held). */
            size_t held = tn_stomp_decoder_held(&c->dec);
            uint32_t big = c->st->conf.limits.big_body;
            if (held >= big && held > c->intake.held &&
                tn_intake_reserve(c->st->b, &c->intake, held - c->intake.held + big) != 0)
                set_pause(c, PAUSE_INTAKE, true);
            break;
        }
        if (rc != 0) {
            char limit[96];
            const char *detail = NULL;
            if (rc == TN_ETOOBIG && c->dec.error && strcmp(c->dec.error, "frame too large") == 0) {
                /* Refused as soon as content-length says so, before the body: say the limit. */
                snprintf(limit, sizeof limit,
                         "the body is over the %" PRIu32 "-byte limit (max_message_size)",
                         c->st->conf.limits.max_body);
                detail = limit;
            }
            fail(c, NULL, c->dec.error ? c->dec.error : "malformed frame", detail);
            subs_release(c);
            return (ssize_t)len;
        }
        off += used;
        rc = on_frame(c, &f);
        if (!c->big)
            tn_intake_release(c->st->b, &c->intake); /* held for a body now whole */
        run_later(c);
        if (rc != 0) {
            if (c->state == ST_CLOSING)
                subs_release(c);
            return (ssize_t)len;
        }
        if (c->state == ST_AUTH)
            break; /* the rest is offered again once the CONNECT is answered */
    }
    schedule(c);
    return (ssize_t)off;
}

static void
a_drained(void *a)
{
    sconn *c = a;
    for (ssub *s = c->subs; s; s = s->hh.next) {
        tn_consumer *k = sub_consumer(s);
        if (k)
            tn_queue_consumer_ready(k);
    }
}

static void
a_timeout(void *a, uint64_t now)
{
    sconn *c = a;
    if (c->state == ST_CONNECT || c->state == ST_AUTH) {
        if (now < c->opened + c->st->conf.connect_timeout_ms) {
            schedule(c);
            return;
        }
        tn_log_info("STOMP-TIMEOUT", "%s: %s in time, closing", c->io->peer(c->ioc),
                    c->state == ST_AUTH ? "CONNECT not authenticated" : "no CONNECT");
        c->state = ST_CLOSING; /* an authenticator's job is cancelled in a_closed() */
        c->io->close(c->ioc);
        return;
    }
    if (c->pauses)
        c->last_rx = now; /* we do not read it: its heart-beats cannot be heard */
    if (c->hb_recv_ms && now >= c->last_rx + 2ull * c->hb_recv_ms) {
        tn_log_info("STOMP-HEARTBEAT", "%s: nothing received for %" PRIu64 " ms, closing",
                    c->io->peer(c->ioc), now - c->last_rx);
        c->state = ST_CLOSING;
        c->io->close(c->ioc);
        subs_release(c);
        return;
    }
    if (c->hb_send_ms && now >= c->last_tx + c->hb_send_ms)
        tn_stomp_encode_heartbeat(out(c));
    schedule(c);
}

static void
a_closed(void *a, int reason)
{
    (void)reason;
    sconn *c = a;
    c->st->n_conns--;
    tn_broker_unhold(c->st->b, c->held);
    if (c->auth_job) { /* its done() never comes now */
        const tn_auth *au = &c->st->conf.auth;
        au->cancel(au->ctx, c->auth_job);
        c->auth_job = NULL;
    }
    run_later(c);
    c->state = ST_CLOSING;
    big_drop(c);
    tn_replies_cancel(&c->replies);
    ssub *s, *tmp;
    HASH_ITER(hh, c->subs, s, tmp)
    {
        sub_free(c, s, false);
    }
    stx *x, *xtmp;
    HASH_ITER(hh, c->txs, x, xtmp)
    {
        tx_free(c, x);
    }
    for (size_t i = 0; i < c->n_temps; i++)
        if (tn_queue_consumers(tn_session_queue(c->temps[i])) == 0)
            tn_broker_queue_free(c->temps[i]);
    tn_flow_fini(&c->flow);
    tn_stomp_decoder_fini(&c->dec);
    free(c->temps);
    free(c->later);
    free(c->client_id);
    free(c->user);
    free(c);
}

/* The rest of a big SEND body goes straight into its message. */
static uint8_t *
a_read_into(void *a, size_t *len)
{
    sconn *c = a;
    if (!c->big || c->state == ST_CLOSING || c->state == ST_DRAINING)
        return NULL;
    return tn_stomp_decoder_body_room(&c->dec, len);
}

const tn_adapter_ops tn_stomp_adapter = {
    .name = "stomp",
    .open = a_open,
    .input = a_input,
    .drained = a_drained,
    .timeout = a_timeout,
    .closed = a_closed,
    .read_into = a_read_into,
};

tn_stomp *
tn_stomp_new(tn_broker *b, const tn_stomp_conf *conf)
{
    tn_stomp *st = tn_xcalloc(1, sizeof *st);
    st->b = b;
    st->conf = *conf;
    if (!st->conf.limits.big_body)
        st->conf.limits.big_body = BIG_BODY;
    if (!st->conf.prefetch)
        st->conf.prefetch = 1000;
    if (!st->conf.connect_timeout_ms)
        st->conf.connect_timeout_ms = 10000;
    if (!st->conf.min_heartbeat_ms)
        st->conf.min_heartbeat_ms = 100;
    tn_buf_init(&st->props, 65536);
    tn_buf_init(&st->name, 1 << 20);
    tn_buf_init(&st->reply, 1 << 20);
    tn_buf_init(&st->frame, 1 << 20);
    return st;
}

void
tn_stomp_free(tn_stomp *st)
{
    if (!st)
        return;
    tn_buf_fini(&st->props);
    tn_buf_fini(&st->name);
    tn_buf_fini(&st->reply);
    tn_buf_fini(&st->frame);
    free(st);
}

uint32_t
tn_stomp_connections(const tn_stomp *st)
{
    return st->n_conns;
}
