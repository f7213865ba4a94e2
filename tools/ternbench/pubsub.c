/*
 * The pubsub scenario's two roles.
 *
 * Publishers encode messages into their output buffer as far as their window allows: at QoS 1
 * and 2, --inflight unacknowledged messages, each holding a packet id until PUBACK (QoS 1) or
 * PUBCOMP (QoS 2, after PUBREC -> PUBREL); STOMP SENDs with receipts the same way, the packet id
 * serving as receipt id until its RECEIPT, and AMQP transfers the same way, the packet id serving
 * as delivery tag until the transfer's disposition; at QoS 0 and for STOMP without receipts,
 * bytes not yet taken by the kernel. The payload carries the run id, publisher, sequence number
 * and send time, in every protocol.
 *
 * Subscribers acknowledge what QoS asks (PUBACK; PUBREC, then PUBCOMP on PUBREL; stomp.c ACKs
 * for client-individual) and record per (publisher, subscriber) stream: duplicates (a bitmap of
 * sequence numbers), reordering (lower than the highest seen) and the end-to-end latency. The
 * subscribers of a STOMP queue (and of an AMQP address, always taken for a queue) compete for
 * its messages, so they share the duplicate bitmaps: a message counts once whichever
 * subscriber got it, and as a duplicate if a second one did.
 */
#include "tools/ternbench/ternbench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void
bit_clear(uint64_t *m, uint64_t i)
{
    m[i >> 6] &= ~(1ull << (i & 63));
}

/* Publisher i's topic, destination or address: MQTT bench/t or bench/<i>, STOMP
 * /queue/bench.t, /topic/bench.<i>, ..., AMQP queue://bench.t (--address-prefix, then bench.t or
 * bench.<i>). Returns its length. */
static int
dest_name(const tn_bench_opts *o, uint32_t i, char *buf, size_t size)
{
    const char *prefix = "bench/", *prefix2 = "";
    if (o->proto == TN_BENCH_STOMP)
        prefix = o->dest == TN_BENCH_QUEUE ? "/queue/bench." : "/topic/bench.";
    if (o->proto == TN_BENCH_AMQP) {
        prefix = o->address_prefix;
        prefix2 = "bench.";
    }
    if (o->topics == TN_BENCH_SHARED)
        return snprintf(buf, size, "%s%st", prefix, prefix2);
    return snprintf(buf, size, "%s%s%u", prefix, prefix2, i);
}

tn_mqtt_bytes
tn_bench_sub_filter(tn_bench_conn *c, char *buf, size_t size)
{
    int n = c->b->o.scenario == TN_BENCH_RETAINED
                ? snprintf(buf, size, "bench/r/#")
                : dest_name(&c->b->o, c->id % c->b->o.pubs, buf, size);
    return (tn_mqtt_bytes){(const uint8_t *)buf, (uint32_t)n};
}

int
tn_bench_pubsub_init(tn_bench *b)
{
    const tn_bench_opts *o = &b->o;
    bool shared = o->topics == TN_BENCH_SHARED;
    bool stomp = o->proto == TN_BENCH_STOMP, amqp = o->proto == TN_BENCH_AMQP;
    b->acked_pubs = stomp ? o->receipts : amqp || o->qos > 0; /* AMQP: always unsettled */
    b->competing = (stomp && o->dest == TN_BENCH_QUEUE) || amqp;
    for (uint32_t j = 0; j < o->stall && j < o->subs; j++)
        b->subs[j].stalls = true;

    for (uint32_t i = 0; i < o->pubs; i++) {
        tn_bench_conn *c = &b->pubs[i];
        int n = dest_name(o, i, c->topic, sizeof c->topic);
        tn_assert(n > 0 && (size_t)n < sizeof c->topic);
        c->topic_len = (uint16_t)n;
        c->fanout = shared ? o->subs : o->subs / o->pubs + (i < o->subs % o->pubs ? 1 : 0);
        for (uint32_t j = 0; j < o->stall && j < o->subs; j++)
            if (shared || j % o->pubs == i)
                c->fanout--; /* a stalling subscriber: never expected */
        if (b->competing)
            c->fanout = c->fanout > 0; /* one of the queue's consumers gets it */
        if (b->acked_pubs) {
            c->pid_busy = tn_xcalloc(PID_WORDS, sizeof(uint64_t));
            if (o->proto == TN_BENCH_MQTT)
                c->pid_rel = tn_xcalloc(PID_WORDS, sizeof(uint64_t));
        }
    }

    uint64_t per_sub = shared ? o->pubs : 1;
    uint64_t n_streams = (uint64_t)o->subs * per_sub;
    /* Duplicate bitmaps: one per stream, or one per publisher when a queue's subscribers
     * compete, so that a message counts once whichever of them got it (reordering stays per
     * stream: a queue keeps order per consumer, not across them). */
    uint64_t n_maps = b->competing ? (o->subs ? o->pubs : 0) : n_streams;
    uint64_t words = (o->count + 63) / 64;
    b->streams = tn_xcalloc(n_streams ? n_streams : 1, sizeof *b->streams);
    b->track_dups = n_maps == 0; /* no subscriber: nothing can be duplicated */
    if (n_maps && n_maps * words * 8 <= TN_BENCH_MAX_SEEN) {
        /* calloc of a large block maps zero pages lazily: untouched streams cost nothing. */
        b->seen_bits = calloc(n_maps * words, sizeof(uint64_t));
        b->track_dups = b->seen_bits != NULL;
    }
    if (!b->track_dups && n_maps)
        fprintf(stderr,
                "ternbench: %llu streams x %llu messages is too many to track duplicates; "
                "dup=-1 and lost counts every delivery\n",
                (unsigned long long)n_maps, (unsigned long long)o->count);
    for (uint32_t j = 0; j < o->subs; j++) {
        tn_bench_conn *c = &b->subs[j];
        c->streams = &b->streams[j * per_sub];
        c->stream_pub = shared ? 0 : j % o->pubs;
        for (uint64_t k = 0; k < per_sub && b->track_dups; k++) {
            uint64_t map = j * per_sub + k;
            if (b->competing)
                map = shared ? k : c->stream_pub;
            c->streams[k].seen = b->seen_bits + map * words;
        }
    }

    b->payload = tn_xmalloc(o->size);
    for (uint32_t i = 0; i < o->size; i++)
        b->payload[i] = (uint8_t)('a' + i % 26);
    size_t window = (size_t)o->inflight * o->size + 65536;
    b->qos0_window = window < TN_BENCH_MAX_OUT / 2 ? window : TN_BENCH_MAX_OUT / 2;
    b->hist = tn_xcalloc(1, sizeof *b->hist);
    return 0;
}

void
tn_bench_pubsub_fini(tn_bench *b)
{
    free(b->streams);
    free(b->seen_bits);
    free(b->payload);
    free(b->hist);
    b->streams = NULL;
    b->seen_bits = NULL;
    b->payload = NULL;
    b->hist = NULL;
}

void
tn_bench_bad(tn_bench_conn *c, const char *what)
{
    tn_bench *b = c->b;
    b->bad++;
    if (b->errors_logged++ < 5)
        tn_log_warn("BENCH-BAD-PACKET", "%s %u: %s",
                    c->role == TN_BENCH_PUB ? "publisher" : "subscriber", c->id, what);
}

bool
tn_bench_pub_is_sent(const tn_bench_conn *c)
{
    return c->sent >= c->b->o.count || c->state == TN_BENCH_CS_FAILED;
}

bool
tn_bench_pub_is_done(const tn_bench_conn *c)
{
    return tn_bench_pub_is_sent(c) && (c->inflight == 0 || c->state == TN_BENCH_CS_FAILED);
}

/* Encodes one message for publisher c with packet (or receipt) id pid, 0 for none. */
static int
encode_message(tn_bench_conn *c, uint16_t pid)
{
    tn_bench *b = c->b;
    if (b->o.proto == TN_BENCH_STOMP)
        return tn_bench_stomp_send(c, pid, b->payload, b->o.size);
    if (b->o.proto == TN_BENCH_AMQP)
        return tn_bench_amqp_send(c, pid, b->payload, b->o.size);
    tn_mqtt_publish p = {
        .qos = b->o.qos,
        .topic = {(const uint8_t *)c->topic, c->topic_len},
        .pid = pid,
        .payload = {b->payload, b->o.size},
    };
    return tn_mqtt_encode_publish(&c->out, TN_MQTT_V311, &p);
}

/* Encodes publisher c's next message; false when its output buffer is full (AMQP: when its
 * link has no credit). */
static bool
publish_one(tn_bench_conn *c, uint64_t now_ns)
{
    tn_bench *b = c->b;
    uint16_t pid = 0;
    if (b->acked_pubs) {
        /* inflight < 65535, so a free id exists. */
        pid = c->next_pid;
        while (pid == 0 || bit_get(c->pid_busy, pid))
            pid++;
        c->next_pid = (uint16_t)(pid + 1);
    }
    uint32_t head[2] = {b->run_id, c->id};
    uint64_t tail[2] = {c->sent, now_ns};
    memcpy(b->payload, head, sizeof head);
    memcpy(b->payload + sizeof head, tail, sizeof tail);
    if (encode_message(c, pid) != 0)
        return false;
    tn_bench_pub_paced(c, c->sent, now_ns);
    if (b->acked_pubs) {
        bit_set(c->pid_busy, pid);
        c->inflight++;
    }
    c->sent++;
    b->sent++;
    b->expected += c->fanout;
    return true;
}

void
tn_bench_pub_fill(tn_bench_conn *c, uint64_t due, uint64_t now_ns)
{
    tn_bench *b = c->b;
    if (c->state != TN_BENCH_CS_READY)
        return;
    uint64_t end = due < b->o.count ? due : b->o.count;
    if (c->sent >= end)
        return;
    size_t before = c->out.len;
    if (!b->acked_pubs) {
        /* Bytes libuv could not hand to the kernel yet: the socket is the window. */
        size_t queued = c->writing ? uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) : 0;
        while (c->sent < end && queued + c->out.len < b->qos0_window && publish_one(c, now_ns))
            ;
    } else {
        while (c->sent < end && c->inflight < b->o.inflight && publish_one(c, now_ns))
            ;
    }
    if (c->out.len != before)
        tn_bench_conn_dirty(c);
}

static void
acked(tn_bench_conn *c, uint64_t now_ns)
{
    tn_bench *b = c->b;
    c->inflight--;
    c->acked++;
    b->acked++;
    b->t_last_ack = now_ns;
    b->t_last_progress = now_ns;
}

void
tn_bench_on_receipt(tn_bench_conn *c, uint16_t id, uint64_t now_ns)
{
    if (c->role != TN_BENCH_PUB || !c->pid_busy || id == 0 || !bit_get(c->pid_busy, id)) {
        tn_bench_bad(c, c->b->o.proto == TN_BENCH_AMQP
                            ? "disposition for a delivery tag not in flight"
                            : "RECEIPT for a receipt id not in flight");
        return;
    }
    bit_clear(c->pid_busy, id);
    acked(c, now_ns);
}

static void
on_ack(tn_bench_conn *c, const tn_mqtt_packet *pkt, uint64_t now_ns)
{
    uint16_t pid = pkt->u.ack.pid;
    if (c->role != TN_BENCH_PUB || !c->pid_busy || !bit_get(c->pid_busy, pid)) {
        tn_bench_bad(c, "acknowledgement for a packet id not in flight");
        return;
    }
    bool rel = bit_get(c->pid_rel, pid);
    /* The retained scenario publishes at QoS 1 whatever the subscription's QoS. */
    uint8_t qos = c->b->o.scenario == TN_BENCH_RETAINED ? 1 : c->b->o.qos;
    switch (pkt->type) {
    case TN_MQTT_PUBACK:
        if (qos != 1) {
            tn_bench_bad(c, "PUBACK for a QoS 2 message");
            return;
        }
        bit_clear(c->pid_busy, pid);
        acked(c, now_ns);
        return;
    case TN_MQTT_PUBREC:
        if (qos != 2) {
            tn_bench_bad(c, "PUBREC for a QoS 1 message");
            return;
        }
        /* A repeated PUBREC gets a repeated PUBREL. */
        bit_set(c->pid_rel, pid);
        if (tn_mqtt_encode_ack(&c->out, TN_MQTT_V311, TN_MQTT_PUBREL, pid, 0) != 0) {
            tn_bench_bad(c, "output buffer full");
            return;
        }
        tn_bench_conn_dirty(c);
        c->b->t_last_progress = now_ns;
        return;
    case TN_MQTT_PUBCOMP:
        if (!rel) {
            tn_bench_bad(c, "PUBCOMP before PUBREL");
            return;
        }
        bit_clear(c->pid_busy, pid);
        bit_clear(c->pid_rel, pid);
        acked(c, now_ns);
        return;
    default:
        return;
    }
}

static void
on_message(tn_bench_conn *c, const tn_mqtt_publish *m, uint64_t now_ns)
{
    if (m->qos) {
        tn_mqtt_type t = m->qos == 1 ? TN_MQTT_PUBACK : TN_MQTT_PUBREC;
        if (tn_mqtt_encode_ack(&c->out, TN_MQTT_V311, t, m->pid, 0) != 0)
            tn_bench_bad(c, "output buffer full");
        tn_bench_conn_dirty(c);
    }
    if (m->qos == 2) {
        /* Exactly once: until PUBREL, a PUBLISH with the same id is the same message. */
        if (!c->qos2_held)
            c->qos2_held = tn_xcalloc(PID_WORDS, sizeof(uint64_t));
        if (bit_get(c->qos2_held, m->pid))
            return;
        bit_set(c->qos2_held, m->pid);
    }
    if (c->b->o.scenario == TN_BENCH_RETAINED)
        tn_bench_retained_on_message(c, m, now_ns);
    else
        tn_bench_on_payload(c, m->payload.p, m->payload.len, now_ns);
}

void
tn_bench_on_payload(tn_bench_conn *c, const uint8_t *p, size_t len, uint64_t now_ns)
{
    tn_bench *b = c->b;
    if (len < TN_BENCH_HEADER) {
        tn_bench_bad(c, "payload shorter than the ternbench header");
        return;
    }
    uint32_t head[2];
    uint64_t tail[2];
    memcpy(head, p, sizeof head);
    memcpy(tail, p + sizeof head, sizeof tail);
    uint32_t pub = head[1];
    uint64_t seq = tail[0], sent_ns = tail[1];
    if (head[0] != b->run_id) {
        b->stale++; /* queued for a persistent session by an earlier run */
        return;
    }
    if (pub >= b->o.pubs || seq >= b->o.count) {
        tn_bench_bad(c, "publisher or sequence number out of range");
        return;
    }
    if (c->stalls) {
        b->stalled_received++;
        return;
    }
    tn_bench_stream *s;
    if (b->o.topics == TN_BENCH_SHARED) {
        s = &c->streams[pub];
    } else if (pub == c->stream_pub) {
        s = &c->streams[0];
    } else {
        tn_bench_bad(c, "message from a publisher it did not subscribe to");
        return;
    }
    b->received++;
    b->t_last_rx = now_ns;
    b->t_last_progress = now_ns;
    if (s->seen) {
        uint64_t bit = 1ull << (seq & 63);
        if (s->seen[seq >> 6] & bit) {
            b->dup++;
            return;
        }
        s->seen[seq >> 6] |= bit;
    }
    b->unique++;
    if (seq + 1 < s->top)
        b->reordered++;
    else
        s->top = seq + 1;
    uint64_t lat = now_ns > sent_ns ? now_ns - sent_ns : 0;
    tn_bench_hist_add(b->hist, lat);
    if (b->o.stall)
        tn_bench_stall_sample(b, lat, now_ns);
}

static void
on_pubrel(tn_bench_conn *c, uint16_t pid)
{
    if (c->qos2_held)
        bit_clear(c->qos2_held, pid);
    /* Answered even for an unknown id. */
    if (tn_mqtt_encode_ack(&c->out, TN_MQTT_V311, TN_MQTT_PUBCOMP, pid, 0) != 0)
        tn_bench_bad(c, "output buffer full");
    tn_bench_conn_dirty(c);
}

void
tn_bench_on_packet(tn_bench_conn *c, const tn_mqtt_packet *pkt, uint64_t now_ns)
{
    switch (pkt->type) {
    case TN_MQTT_PUBLISH:
        if (c->role == TN_BENCH_SUB)
            on_message(c, &pkt->u.publish, now_ns);
        else
            tn_bench_bad(c, "PUBLISH to a connection that did not subscribe");
        return;
    case TN_MQTT_PUBREL:
        on_pubrel(c, pkt->u.ack.pid);
        return;
    default:
        on_ack(c, pkt, now_ns);
        return;
    }
}
