/*
 * The retained scenario: does a new subscriber get every retained message its filter matches,
 * and how fast?
 *
 *   1. publish  one connection publishes --retained N messages, retained, QoS 1, to
 *               bench/r/0 .. bench/r/N-1 (--inflight unacknowledged at most) and waits for
 *               every PUBACK;
 *   2. receive  a new connection (clean session) subscribes to bench/r/# at --qos and counts
 *               the distinct messages of this run that arrive with the retain flag set, until
 *               all N did or none arrived for 5 s (TN_BENCH_SILENCE_NS); then it disconnects;
 *   3. clear    the publisher sends an empty retained message (QoS 1) to each of the N topics,
 *               which deletes them [MQTT-3.3.1-10], so that a rerun starts clean, and waits for
 *               the PUBACKs.
 *
 * Payloads carry the usual header (run id, publisher 0, sequence = topic number, time), so a
 * retained message left by an earlier, interrupted run counts as stale, not as received.
 * secs runs from the SUBSCRIBE to the last new retained message.
 */
#include "tools/ternbench/ternbench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { STEP_PUBLISH = 1, STEP_SUBSCRIBE, STEP_RECEIVE, STEP_CLEAR };

void
tn_bench_retained_init(tn_bench *b)
{
    const tn_bench_opts *o = &b->o;
    tn_bench_conn *p = &b->pubs[0];
    p->pid_busy = tn_xcalloc(PID_WORDS, sizeof(uint64_t));
    p->pid_rel = tn_xcalloc(PID_WORDS, sizeof(uint64_t));
    b->acked_pubs = true;
    b->payload = tn_xmalloc(o->size);
    for (uint32_t i = 0; i < o->size; i++)
        b->payload[i] = (uint8_t)('a' + i % 26);
    b->ret_seen = tn_xcalloc((o->retained + 63) / 64, sizeof(uint64_t));
    b->expected = o->retained;
}

void
tn_bench_retained_fini(tn_bench *b)
{
    free(b->ret_seen);
    free(b->payload);
    b->ret_seen = NULL;
    b->payload = NULL;
}

/* Encodes the retained message (or, clearing, the empty one) of topic bench/r/<i>; false when
 * the output buffer is full. */
static bool
publish_one(tn_bench_conn *c, uint64_t i, bool clear, uint64_t now_ns)
{
    tn_bench *b = c->b;
    char topic[32];
    int n = snprintf(topic, sizeof topic, "bench/r/%llu", (unsigned long long)i);
    uint16_t pid = c->next_pid; /* inflight < 65535, so a free id exists */
    while (pid == 0 || bit_get(c->pid_busy, pid))
        pid++;
    if (!clear) {
        uint32_t head[2] = {b->run_id, 0};
        uint64_t tail[2] = {i, now_ns};
        memcpy(b->payload, head, sizeof head);
        memcpy(b->payload + sizeof head, tail, sizeof tail);
    }
    tn_mqtt_publish p = {
        .qos = 1,
        .retain = true,
        .topic = {(const uint8_t *)topic, (uint32_t)n},
        .pid = pid,
        .payload = {b->payload, clear ? 0 : b->o.size},
    };
    if (tn_mqtt_encode_publish(&c->out, TN_MQTT_V311, &p) != 0)
        return false;
    c->next_pid = (uint16_t)(pid + 1);
    bit_set(c->pid_busy, pid);
    c->inflight++;
    c->sent++;
    if (!clear)
        b->sent++;
    return true;
}

/* Publishes up to message end (exclusive) of the publisher's 2N: the N retained ones, then the
 * N empty ones. */
static void
fill(tn_bench_conn *c, uint64_t end, uint64_t now_ns)
{
    uint64_t n = c->b->o.retained;
    size_t before = c->out.len;
    while (c->sent < end && c->inflight < c->b->o.inflight &&
           publish_one(c, c->sent % n, c->sent >= n, now_ns))
        ;
    if (c->out.len != before)
        tn_bench_conn_dirty(c);
}

void
tn_bench_retained_start(tn_bench *b)
{
    b->ret_step = STEP_PUBLISH;
}

void
tn_bench_retained_subscribed(tn_bench *b)
{
    b->phase = TN_BENCH_RUN;
    b->ret_step = STEP_RECEIVE;
}

static void
begin_clear(tn_bench *b, uint64_t now_ns)
{
    b->ret_step = STEP_CLEAR;
    b->t_clear_begin = now_ns;
    tn_bench_conn_close(&b->subs[0]);
}

void
tn_bench_retained_prepare(tn_bench *b, uint64_t now_ns)
{
    tn_bench_conn *p = &b->pubs[0];
    uint64_t n = b->o.retained;
    if (b->phase == TN_BENCH_DONE)
        return;
    if (p->state == TN_BENCH_CS_FAILED) {
        tn_bench_finish(b, "publishers-lost");
        return;
    }
    switch (b->ret_step) {
    case STEP_PUBLISH:
        fill(p, n, now_ns);
        if (p->acked < n)
            return;
        b->t_published = now_ns;
        b->ret_step = STEP_SUBSCRIBE;
        tn_bench_setup_group(b, TN_BENCH_SETUP_SUBS, 0, 1);
        return;
    case STEP_RECEIVE:
        if (b->unique >= n || b->subs[0].state == TN_BENCH_CS_FAILED)
            begin_clear(b, now_ns);
        return;
    case STEP_CLEAR:
        fill(p, 2 * n, now_ns);
        if (p->acked < 2 * n)
            return;
        b->t_cleared = now_ns;
        tn_bench_finish(b, b->unique >= n ? "complete" : "silence-timeout");
        return;
    default:
        return;
    }
}

void
tn_bench_retained_tick(tn_bench *b, uint64_t now_ns)
{
    if (b->ret_step != STEP_RECEIVE || b->phase == TN_BENCH_DONE)
        return;
    uint64_t last = b->t_last_rx > b->t_subscribe ? b->t_last_rx : b->t_subscribe;
    if (now_ns - last >= TN_BENCH_SILENCE_NS)
        begin_clear(b, now_ns);
}

void
tn_bench_retained_on_message(tn_bench_conn *c, const tn_mqtt_publish *m, uint64_t now_ns)
{
    tn_bench *b = c->b;
    if (!m->retain) {
        b->ret_live++; /* nothing publishes meanwhile: another client's message */
        return;
    }
    b->received++;
    b->t_last_rx = now_ns;
    if (m->payload.len < TN_BENCH_HEADER) {
        tn_bench_bad(c, "retained payload shorter than the ternbench header");
        return;
    }
    uint32_t head[2];
    uint64_t seq;
    memcpy(head, m->payload.p, sizeof head);
    memcpy(&seq, m->payload.p + sizeof head, sizeof seq);
    if (head[0] != b->run_id) {
        b->stale++; /* left by an earlier run that did not clear it */
        return;
    }
    if (seq >= b->o.retained) {
        tn_bench_bad(c, "retained sequence number out of range");
        return;
    }
    if (bit_get(b->ret_seen, seq)) {
        b->dup++;
        return;
    }
    bit_set(b->ret_seen, seq);
    b->unique++;
    b->t_received = now_ns;
    b->t_last_progress = now_ns;
}

static double
secs_between(uint64_t from, uint64_t to)
{
    return from && to > from ? (double)(to - from) / 1e9 : 0;
}

void
tn_bench_retained_report(tn_bench *b)
{
    const tn_bench_opts *o = &b->o;
    const tn_bench_conn *p = &b->pubs[0];
    uint64_t n = o->retained;
    uint64_t cleared = p->acked > n ? p->acked - n : 0;
    uint64_t lost = n > b->unique ? n - b->unique : 0;
    double pub_secs = secs_between(b->t_start, b->t_published);
    double rx_secs = secs_between(b->t_subscribe, b->t_received);
    double clear_secs = secs_between(b->t_clear_begin, b->t_cleared);
    double rx_rate = rx_secs > 0 ? (double)b->unique / rx_secs : 0;
    double pub_rate = pub_secs > 0 ? (double)n / pub_secs : 0;

    printf("ternbench retained: %llu retained messages of %u B to bench/r/<i> at QoS 1, then a "
           "new subscriber (clean session) to bench/r/# at QoS %u\n",
           (unsigned long long)n, o->size, o->qos);
    if (b->t_published)
        printf("  published          %llu in %.3f s (%.0f/s), %u in flight\n",
               (unsigned long long)n, pub_secs, pub_rate, o->inflight);
    else
        printf("  published          %llu of %llu, %llu acknowledged (not finished)\n",
               (unsigned long long)b->sent, (unsigned long long)n,
               (unsigned long long)(p->acked < n ? p->acked : n));
    printf("  received           %llu distinct retained messages in %.3f s (%.0f/s)\n",
           (unsigned long long)b->unique, rx_secs, rx_rate);
    printf("  lost               %llu\n", (unsigned long long)lost);
    printf("  duplicates         %llu\n", (unsigned long long)b->dup);
    if (b->ret_live)
        printf("  without retain     %llu (not counted)\n", (unsigned long long)b->ret_live);
    if (b->stale || b->bad)
        printf("  stale / bad        %llu / %llu\n", (unsigned long long)b->stale,
               (unsigned long long)b->bad);
    if (b->lost)
        printf("  connections lost   %u\n", b->lost);
    if (b->t_cleared)
        printf("  cleared            %llu in %.3f s\n", (unsigned long long)cleared, clear_secs);
    else
        printf("  cleared            %llu of %llu (not finished: rerun starts unclean)\n",
               (unsigned long long)cleared, (unsigned long long)n);
    printf("  cpu (s)            ternbench %.2f  broker %.2f\n", b->cpu_self, b->cpu_broker);
    if (o->broker_pid)
        printf("  broker rss         %ld kB\n", b->rss_kb);
    printf("  stopped            %s\n", b->stop_reason ? b->stop_reason : "?");

    printf("RESULT scenario=retained pubs=1 subs=1 topics=retained qos=%u size=%u count=%llu "
           "sent=%llu expected=%llu received=%llu lost=%llu dup=%llu reordered=0 secs=%.3f "
           "msgs_per_sec=%.0f pub_per_sec=%.0f p50_us=-1 p99_us=-1 p999_us=-1 max_us=-1 "
           "bench_cpu_s=%.2f broker_cpu_s=%.2f broker_rss_kb=%ld retained=%llu publish_secs=%.3f "
           "cleared=%llu clear_secs=%.3f live=%llu stale=%llu bad=%llu stop=%s\n",
           o->qos, o->size, (unsigned long long)n, (unsigned long long)b->sent,
           (unsigned long long)n, (unsigned long long)b->unique, (unsigned long long)lost,
           (unsigned long long)b->dup, rx_secs, rx_rate, pub_rate, b->cpu_self, b->cpu_broker,
           b->rss_kb, (unsigned long long)n, pub_secs, (unsigned long long)cleared, clear_secs,
           (unsigned long long)b->ret_live, (unsigned long long)b->stale,
           (unsigned long long)b->bad, b->stop_reason ? b->stop_reason : "?");
    fflush(stdout);
}
