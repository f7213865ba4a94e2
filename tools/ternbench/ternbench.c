/*
 * ternbench: MQTT 3.1.1 (over TCP, TLS, WebSocket or both), STOMP 1.2 and AMQP 1.0 load
 * generator for Tern (and any other MQTT, STOMP or AMQP 1.0 broker).
 *
 * This file: the scenarios' phases (set-up, run or hold, close), the timers that end a run,
 * and the report. See ternbench.h for the other files.
 */
#include "tools/ternbench/ternbench.h"

#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* ---- the run ---- */

static void
handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void
close_handle(uv_handle_t *h)
{
    if (h->type != UV_UNKNOWN_HANDLE && !uv_is_closing(h))
        uv_close(h, handle_closed);
}

/* All connections closed after finish(): close the rest so uv_run returns. */
static void
close_loop_handles(tn_bench *b)
{
    close_handle((uv_handle_t *)&b->prepare);
    close_handle((uv_handle_t *)&b->linger);
}

static void
on_linger(uv_timer_t *t)
{
    tn_bench *b = t->data;
    for (uint32_t i = 0; i < b->n_conns; i++)
        tn_bench_conn_abort(&b->conns[i]);
}

/* Writes what every dirty connection has encoded. Flushing can fail a connection, which can
 * finish the run and dirty more (even re-enter here): walk by index and re-read the count. */
static void
flush_dirty(tn_bench *b)
{
    for (uint32_t i = 0; i < b->n_dirty; i++)
        tn_bench_conn_flush(b->dirty[i]);
    b->n_dirty = 0;
}

static double
secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

/* Ends the run: measures, then closes every connection (DISCONNECT first). */
void
tn_bench_finish(tn_bench *b, const char *reason)
{
    if (b->phase == TN_BENCH_DONE)
        return;
    bool measured = b->t_start != 0;
    if (b->phase == TN_BENCH_SETUP_IDLE) {
        /* conns, stopped while connecting: report what was answered so far */
        b->t_connected = tn_bench_now_ns();
        b->opened = b->setup_ok;
        b->failed = b->setup_failed;
    }
    b->phase = TN_BENCH_DONE;
    b->stop_reason = reason;
    b->t_end = tn_bench_now_ns();
    if (measured) {
        b->cpu_self = tn_bench_self_cpu() - b->cpu0_self;
        b->cpu_broker = tn_bench_broker_cpu_since(&b->o, b->cpu0_broker);
        b->rss_kb = tn_bench_broker_rss_kb(&b->o);
        if (b->o.scenario == TN_BENCH_PUBSUB)
            tn_bench_stall_stop(b);
    }
    close_handle((uv_handle_t *)&b->spin);
    close_handle((uv_handle_t *)&b->stall_timer);
    close_handle((uv_handle_t *)&b->window_timer);
    close_handle((uv_handle_t *)&b->tick);
    close_handle((uv_handle_t *)&b->pace);
    close_handle((uv_handle_t *)&b->stop);
    close_handle((uv_handle_t *)&b->hold);
    close_handle((uv_handle_t *)&b->sigint);
    close_handle((uv_handle_t *)&b->sigterm);
    for (uint32_t i = 0; i < b->n_conns; i++)
        tn_bench_conn_close(&b->conns[i]);
    flush_dirty(b); /* the DISCONNECTs, now: nothing else may wake the loop */
    if (b->n_open == 0) {
        close_loop_handles(b);
        return;
    }
    uv_timer_init(&b->loop, &b->linger);
    b->linger.data = b;
    uv_timer_start(&b->linger, on_linger, TN_BENCH_LINGER_MS, 0);
}

static void
mark_start(tn_bench *b)
{
    b->t_start = tn_bench_now_ns();
    b->t_last_progress = b->t_start;
    b->last_report_ns = b->t_start;
    b->cpu0_self = tn_bench_self_cpu();
    tn_bench_broker_cpu(&b->o, b->cpu0_broker);
}

static void
on_pace(uv_timer_t *t)
{
    tn_bench *b = t->data;
    uint64_t now = tn_bench_now_ns();
    double per_pub = b->o.rate / b->o.pubs;
    /* Publisher i owes the messages due since the start, the first one at once. */
    uint64_t due = (uint64_t)(secs(now - b->t_start) * per_pub) + 1;
    for (uint32_t i = 0; i < b->o.pubs; i++)
        tn_bench_pub_fill(&b->pubs[i], due, now);
}

static void
start_run(tn_bench *b)
{
    b->phase = TN_BENCH_RUN;
    mark_start(b);
    if (b->o.scenario == TN_BENCH_RETAINED) {
        tn_bench_retained_start(b);
        return;
    }
    tn_bench_stall_start(b);
    if (b->o.rate > 0) {
        uv_timer_init(&b->loop, &b->pace);
        b->pace.data = b;
        uv_timer_start(&b->pace, on_pace, 0, 1);
    }
    /* Without --rate, the prepare callback fills the publishers every turn. */
}

static void setup_pump(tn_bench *b);

static void
on_hold_over(uv_timer_t *t)
{
    tn_bench_finish(t->data, "hold-over");
}

void
tn_bench_setup_group(tn_bench *b, tn_bench_phase phase, uint32_t begin, uint32_t end)
{
    b->phase = phase;
    b->setup_begin = b->setup_next = begin;
    b->setup_end = end;
    b->setup_ok = b->setup_failed = b->setup_inflight = 0;
    setup_pump(b);
}

/* The current set-up group is answered: next phase. */
static void
setup_advance(tn_bench *b)
{
    switch (b->phase) {
    case TN_BENCH_SETUP_SUBS:
        if (b->o.scenario == TN_BENCH_RETAINED) {
            tn_bench_retained_subscribed(b); /* publishing is over: now the subscriber */
            return;
        }
        tn_bench_setup_group(b, TN_BENCH_SETUP_PUBS, b->o.subs, b->o.subs + b->o.pubs);
        return;
    case TN_BENCH_SETUP_PUBS:
        start_run(b);
        return;
    case TN_BENCH_SETUP_IDLE:
        b->t_connected = tn_bench_now_ns();
        b->opened = b->setup_ok;
        b->failed = b->setup_failed;
        if (b->opened == 0) {
            fprintf(stderr, "ternbench: no connection could be opened\n");
            b->exit_code = 1;
            tn_bench_finish(b, "setup-failed");
            return;
        }
        b->phase = TN_BENCH_HOLD;
        uv_timer_start(&b->hold, on_hold_over, (uint64_t)(b->o.hold * 1000 + 0.5), 0);
        return;
    default:
        return;
    }
}

static void
setup_pump(tn_bench *b)
{
    if (b->pumping)
        return;
    b->pumping = true;
    while (b->phase < TN_BENCH_RUN && b->setup_next < b->setup_end &&
           b->setup_inflight < TN_BENCH_MAX_CONNECTING) {
        tn_bench_conn *c = &b->conns[b->setup_next++];
        b->setup_inflight++;
        tn_bench_conn_start(c);
    }
    b->pumping = false;
    if (b->phase < TN_BENCH_RUN && b->setup_ok + b->setup_failed == b->setup_end - b->setup_begin)
        setup_advance(b);
}

void
tn_bench_on_ready(tn_bench_conn *c)
{
    tn_bench *b = c->b;
    if (b->phase >= TN_BENCH_RUN)
        return;
    b->setup_inflight--;
    b->setup_ok++;
    setup_pump(b);
}

void
tn_bench_on_fail(tn_bench_conn *c, const char *why)
{
    tn_bench *b = c->b;
    static const char *roles[] = {"publisher", "subscriber", "connection"};
    if (b->phase == TN_BENCH_DONE)
        return;
    if (!c->ready) {
        if (b->o.scenario == TN_BENCH_PUBSUB) {
            fprintf(stderr, "ternbench: %s %u: %s\n", roles[c->role], c->id, why);
            b->exit_code = 1;
            tn_bench_finish(b, "setup-failed");
            return;
        }
        if (b->errors_logged++ < 5)
            fprintf(stderr, "ternbench: connection %u: %s\n", c->id, why);
        b->setup_inflight--;
        b->setup_failed++;
        setup_pump(b);
        return;
    }
    b->lost++;
    if (b->errors_logged++ < 5)
        fprintf(stderr, "ternbench: %s %u lost: %s\n", roles[c->role], c->id, why);
}

void
tn_bench_on_closed(tn_bench_conn *c)
{
    tn_bench *b = c->b;
    b->n_open--;
    if (b->phase == TN_BENCH_DONE && b->n_open == 0)
        close_loop_handles(b);
}

static void
on_spin(uv_idle_t *h)
{
    (void)h;
}

/* Once per loop turn, right before the loop polls: publishers refill their windows, then every
 * dirty connection writes what this turn encoded (timers, reads and acks alike). Flushing here
 * rather than after the poll keeps a --rate tick's messages from waiting out the next poll. */
static void
on_prepare(uv_prepare_t *h)
{
    tn_bench *b = h->data;
    if (b->o.scenario == TN_BENCH_RETAINED) {
        tn_bench_retained_prepare(b, tn_bench_now_ns());
        flush_dirty(b);
        return;
    }
    bool fill = b->phase == TN_BENCH_RUN && b->o.rate == 0;
    if (fill) {
        uint64_t now = tn_bench_now_ns();
        for (uint32_t i = 0; i < b->o.pubs; i++)
            tn_bench_pub_fill(&b->pubs[i], UINT64_MAX, now);
    }
    flush_dirty(b);
    if (b->phase != TN_BENCH_RUN)
        return;
    /* A QoS 0 (or receipt-less STOMP) publisher whose bytes all went to the kernel gets no
     * callback to wake it up: keep the loop turning (poll without blocking) while one can write
     * more. QoS 1/2 publishers wake on acks (STOMP: receipts), a blocked QoS 0 one on its write
     * callback. */
    bool spin = false;
    for (uint32_t i = 0; i < b->o.pubs && fill && !b->acked_pubs && !spin; i++) {
        tn_bench_conn *c = &b->pubs[i];
        spin = c->state == TN_BENCH_CS_READY && !c->writing && !tn_bench_pub_is_sent(c);
    }
    if (spin)
        uv_idle_start(&b->spin, on_spin);
    else
        uv_idle_stop(&b->spin);
    uint32_t failed = 0;
    for (uint32_t i = 0; i < b->o.pubs; i++) {
        if (!tn_bench_pub_is_done(&b->pubs[i]))
            return;
        failed += b->pubs[i].state == TN_BENCH_CS_FAILED;
    }
    if (failed == b->o.pubs)
        tn_bench_finish(b, "publishers-lost");
    else if (b->unique >= b->expected)
        tn_bench_finish(b, "complete");
}

static bool
pubs_sent(tn_bench *b)
{
    for (uint32_t i = 0; i < b->o.pubs; i++)
        if (!tn_bench_pub_is_sent(&b->pubs[i]))
            return false;
    return true;
}

/* Every 200 ms: keepalive, the drain timeout, and a progress line every second. */
static void
on_tick(uv_timer_t *t)
{
    tn_bench *b = t->data;
    uint64_t now = tn_bench_now_ns();
    uint64_t now_ms = uv_now(&b->loop);
    for (uint32_t i = 0; i < b->n_conns; i++)
        tn_bench_conn_keepalive(&b->conns[i], now_ms);
    if (b->o.scenario == TN_BENCH_RETAINED) {
        tn_bench_retained_tick(b, now);
        if (b->phase == TN_BENCH_DONE)
            return;
    } else if (b->phase == TN_BENCH_RUN && pubs_sent(b)) {
        if (b->t_pubs_sent == 0)
            b->t_pubs_sent = now;
        uint64_t last = b->t_last_progress > b->t_pubs_sent ? b->t_last_progress : b->t_pubs_sent;
        if (now - last >= TN_BENCH_DRAIN_NS) {
            tn_bench_finish(b, "drain-timeout");
            return;
        }
    }
    if (b->o.quiet || now - b->last_report_ns < 1000000000u)
        return;
    double dt = secs(now - b->last_report_ns);
    double since = b->t_start ? secs(now - b->t_start) : 0;
    if (b->o.scenario == TN_BENCH_CONNS) {
        fprintf(stderr, "ternbench: %6.1fs open %u failed %u lost %u\n", since,
                b->phase == TN_BENCH_HOLD ? b->opened : b->setup_ok,
                b->phase == TN_BENCH_HOLD ? b->failed : b->setup_failed, b->lost);
    } else if (b->phase == TN_BENCH_RUN) {
        fprintf(stderr,
                "ternbench: %6.1fs sent %llu (%.0f/s) received %llu of %llu (%.0f/s) "
                "acked %llu\n",
                since, (unsigned long long)b->sent, (double)(b->sent - b->last_report_sent) / dt,
                (unsigned long long)b->received, (unsigned long long)b->expected,
                (double)(b->received - b->last_report_received) / dt, (unsigned long long)b->acked);
    } else {
        fprintf(stderr, "ternbench: connecting: %u of %u\n", b->setup_ok,
                b->setup_end - b->setup_begin);
    }
    b->last_report_ns = now;
    b->last_report_sent = b->sent;
    b->last_report_received = b->received;
}

static void
on_stop(uv_timer_t *t)
{
    tn_bench *b = t->data;
    if (b->phase == TN_BENCH_SETUP_SUBS || b->phase == TN_BENCH_SETUP_PUBS) {
        fprintf(stderr,
                "ternbench: set-up not finished after --duration %.1f s: %u of %u %s "
                "answered\n",
                b->o.duration, b->setup_ok, b->setup_end - b->setup_begin,
                b->phase == TN_BENCH_SETUP_SUBS ? "subscribers" : "publishers");
        b->exit_code = 1;
        tn_bench_finish(b, "setup-failed");
        return;
    }
    tn_bench_finish(b, "duration");
}

static void
on_signal(uv_signal_t *h, int signum)
{
    tn_bench_finish(h->data, "interrupted");
}

/* ---- report ---- */

static void
fmt_us(char *buf, size_t size, const tn_bench_hist *h, double pct)
{
    if (!h || h->n == 0) {
        snprintf(buf, size, "-1");
        return;
    }
    uint64_t ns = pct > 100 ? h->max : tn_bench_hist_percentile(h, pct);
    snprintf(buf, size, "%.1f", (double)ns / 1000.0);
}

static void
report(tn_bench *b)
{
    const tn_bench_opts *o = &b->o;
    bool conns = o->scenario == TN_BENCH_CONNS;
    char p50[32], p99[32], p999[32], pmax[32];
    fmt_us(p50, sizeof p50, b->hist, 50);
    fmt_us(p99, sizeof p99, b->hist, 99);
    fmt_us(p999, sizeof p999, b->hist, 99.9);
    fmt_us(pmax, sizeof pmax, b->hist, 101);

    /* pubsub: first publish to last receive (or last ack, or the end without either). */
    uint64_t last = b->t_last_rx > b->t_last_ack ? b->t_last_rx : b->t_last_ack;
    if (last == 0)
        last = b->t_end;
    if (conns)
        last = b->t_connected ? b->t_connected : b->t_end;
    double elapsed = b->t_start && last > b->t_start ? secs(last - b->t_start) : 0;
    uint64_t lost = b->expected > b->unique ? b->expected - b->unique : 0;
    long long dup = b->track_dups ? (long long)b->dup : -1;
    double rx_rate = elapsed > 0 ? (double)b->received / elapsed : 0;
    double tx_rate = elapsed > 0 ? (double)b->sent / elapsed : 0;
    double conn_rate = elapsed > 0 ? (double)b->opened / elapsed : 0;
    long rss_per_conn = -1;
    if (conns && b->rss0_kb >= 0 && b->rss_kb >= 0 && b->opened)
        rss_per_conn = (long)((b->rss_kb - b->rss0_kb) * 1024 / (long)b->opened);
    const char *topics = o->topics == TN_BENCH_SHARED ? "shared" : "per-publisher";
    bool stomp = o->proto == TN_BENCH_STOMP, amqp = o->proto == TN_BENCH_AMQP;
    const char *dest = o->dest == TN_BENCH_QUEUE ? "queue" : "topic";
    const char *ack = o->ack == TN_BENCH_ACK_AUTO ? "auto" : "client-individual";

    if (conns) {
        printf("ternbench conns: %u connections to %s://%s:%u, held %.1f s\n", o->conns, o->scheme,
               inet_ntoa(o->addr.sin_addr), ntohs(o->addr.sin_port), o->hold);
        printf("  opened             %u (%.0f/s over %.3f s)\n", b->opened, conn_rate, elapsed);
        printf("  failed             %u\n", b->failed);
        printf("  lost while held    %u\n", b->lost);
        if (o->broker_pid)
            printf("  broker rss         %ld kB before, %ld kB after: %ld bytes/connection\n",
                   b->rss0_kb, b->rss_kb, rss_per_conn);
    } else if (stomp) {
        char window[48] = "no receipts";
        if (o->receipts)
            snprintf(window, sizeof window, "receipts, %u in flight", o->inflight);
        printf("ternbench pubsub over STOMP 1.2: %u publishers -> %u subscribers, %s%s %s, "
               "ack %s, %s%s, %u-byte payload, %llu messages/publisher%s\n",
               o->pubs, o->subs, o->dest == TN_BENCH_QUEUE ? "/queue/" : "/topic/",
               o->topics == TN_BENCH_SHARED ? "bench.t" : "bench.<i>",
               b->competing ? "(competing consumers)" : "(fan-out)", ack, window,
               o->persistent ? ", persistent" : "", o->size, (unsigned long long)o->count,
               o->rate > 0 ? " (fixed rate)" : "");
    } else if (amqp) {
        printf("ternbench pubsub over AMQP 1.0: %u senders -> %u receivers, address %s%s "
               "(competing receivers), unsettled, %u in flight, credit %u%s, %u-byte payload, "
               "%llu messages/publisher%s\n",
               o->pubs, o->subs, o->address_prefix,
               o->topics == TN_BENCH_SHARED ? "bench.t" : "bench.<i>", o->inflight, o->credit,
               o->persistent ? ", durable" : "", o->size, (unsigned long long)o->count,
               o->rate > 0 ? " (fixed rate)" : "");
    } else {
        printf("ternbench pubsub%s%s: %u publishers -> %u subscribers, topics %s, QoS %u, "
               "%u-byte payload, %llu messages/publisher%s\n",
               o->tls || o->ws ? " over " : "", o->tls || o->ws ? o->scheme : "", o->pubs, o->subs,
               topics, o->qos, o->size, (unsigned long long)o->count,
               o->rate > 0 ? " (fixed rate)" : "");
    }
    if (!conns) {
        printf("  sent               %llu (%.0f/s)\n", (unsigned long long)b->sent, tx_rate);
        printf("  expected           %llu\n", (unsigned long long)b->expected);
        printf("  received           %llu (%.0f/s)\n", (unsigned long long)b->received, rx_rate);
        printf("  lost               %llu\n", (unsigned long long)lost);
        printf("  duplicates         %lld\n", dup);
        printf("  reordered          %llu\n", (unsigned long long)b->reordered);
        if (b->stale || b->bad)
            printf("  stale / bad        %llu / %llu\n", (unsigned long long)b->stale,
                   (unsigned long long)b->bad);
        if (b->lost)
            printf("  connections lost   %u\n", b->lost);
        printf("  elapsed            %.3f s\n", elapsed);
        printf("  latency (us)       p50 %s  p99 %s  p99.9 %s  max %s\n", p50, p99, p999, pmax);
        printf("  publisher blocked  %.1f ms at most (%s)\n", tn_bench_pub_block_max_ms(b),
               o->rate > 0 ? "longest behind schedule" : "longest gap between writes");
        tn_bench_stall_print(b);
    }
    printf("  cpu (s)            ternbench %.2f  broker %.2f\n", b->cpu_self, b->cpu_broker);
    if (o->broker_pid && !conns)
        printf("  broker rss         %ld kB\n", b->rss_kb);
    printf("  stopped            %s\n", b->stop_reason ? b->stop_reason : "?");

    printf("RESULT scenario=%s pubs=%u subs=%u topics=%s qos=%d size=%u count=%llu sent=%llu "
           "expected=%llu received=%llu lost=%llu dup=%lld reordered=%llu secs=%.3f "
           "msgs_per_sec=%.0f pub_per_sec=%.0f p50_us=%s p99_us=%s p999_us=%s max_us=%s "
           "bench_cpu_s=%.2f broker_cpu_s=%.2f broker_rss_kb=%ld",
           conns ? "conns" : "pubsub", conns ? 0 : o->pubs, conns ? 0 : o->subs, topics,
           stomp || amqp ? -1 : (int)o->qos, o->size, (unsigned long long)o->count,
           (unsigned long long)b->sent, (unsigned long long)b->expected,
           (unsigned long long)b->received, (unsigned long long)lost, dup,
           (unsigned long long)b->reordered, elapsed, rx_rate, tx_rate, p50, p99, p999, pmax,
           b->cpu_self, b->cpu_broker, b->rss_kb);
    if (conns)
        printf(" conns=%u conns_failed=%u conns_lost=%u conns_per_sec=%.0f rss_per_conn_b=%ld",
               b->opened, b->failed, b->lost, conn_rate, rss_per_conn);
    if (stomp)
        printf(" proto=stomp dest=%s ack=%s receipts=%d persistent=%d", dest, ack, o->receipts,
               o->persistent);
    if (amqp)
        printf(" proto=amqp credit=%u persistent=%d", o->credit, o->persistent);
    if (o->tls || o->ws)
        printf(" transport=%s tls_verify=%d", o->scheme, o->tls_ca != NULL);
    if (!conns) {
        printf(" pub_block_max_ms=%.1f", tn_bench_pub_block_max_ms(b));
        tn_bench_stall_result(b);
    }
    if (o->discard)
        printf(" discarded=%llu", (unsigned long long)b->discarded);
    printf(" stale=%llu bad=%llu stop=%s\n", (unsigned long long)b->stale,
           (unsigned long long)b->bad, b->stop_reason ? b->stop_reason : "?");
    fflush(stdout);
}

/* ---- main ---- */

static void
raise_nofile(const tn_bench_opts *o)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    uint64_t need = (o->scenario == TN_BENCH_CONNS ? o->conns : (uint64_t)o->pubs + o->subs) + 100;
    if (need > rl.rlim_cur)
        fprintf(stderr,
                "ternbench: %llu connections need about %llu file descriptors but the limit is "
                "%llu (hard limit); connections past it will fail. Raise it with ulimit -Hn "
                "or LimitNOFILE.\n",
                (unsigned long long)(need - 100), (unsigned long long)need,
                (unsigned long long)rl.rlim_cur);
}

int
main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    tn_bench *b = tn_xcalloc(1, sizeof *b);
    int ret = tn_bench_parse_args(argc, argv, &b->o);
    if (ret != 0) {
        free(b);
        return ret < 0 ? 0 : ret;
    }
    tn_bench_opts *o = &b->o;
    bool conns = o->scenario == TN_BENCH_CONNS;
    if (tn_bench_x_init(o) != 0) {
        free(b);
        return 1;
    }
    raise_nofile(o);
    tn_log_set_level(TN_LOG_WARN);

    uv_loop_init(&b->loop);
    uint64_t seed = tn_bench_now_ns() ^ ((uint64_t)getpid() << 32);
    b->run_id = (uint32_t)(seed ^ seed >> 29) | 1;
    b->n_conns = conns ? o->conns : o->subs + o->pubs;
    b->conns = tn_xcalloc(b->n_conns, sizeof *b->conns);
    b->dirty = tn_xcalloc(b->n_conns, sizeof *b->dirty);
    b->rss0_kb = b->rss_kb = -1;
    b->cpu_broker = -1;
    if (conns) {
        for (uint32_t i = 0; i < o->conns; i++)
            tn_bench_conn_init(b, &b->conns[i], TN_BENCH_IDLE, i);
    } else {
        b->subs = b->conns;
        b->pubs = b->conns + o->subs;
        for (uint32_t j = 0; j < o->subs; j++)
            tn_bench_conn_init(b, &b->subs[j], TN_BENCH_SUB, j);
        for (uint32_t i = 0; i < o->pubs; i++)
            tn_bench_conn_init(b, &b->pubs[i], TN_BENCH_PUB, i);
        if (o->scenario == TN_BENCH_RETAINED) {
            tn_bench_retained_init(b);
        } else {
            tn_bench_pubsub_init(b);
            tn_bench_stall_init(b);
        }
    }
    for (uint32_t i = 0; i < o->n_broker_pids; i++)
        if (tn_bench_proc_cpu(o->broker_pids[i]) < 0)
            fprintf(stderr,
                    "ternbench: cannot read /proc/%d/stat; it is left out of the broker "
                    "figures (-1 without any)\n",
                    o->broker_pids[i]);
    if (conns && !o->broker_pid)
        fprintf(stderr, "ternbench: without --broker-pid, rss_per_conn_b is -1\n");

    uv_prepare_init(&b->loop, &b->prepare);
    b->prepare.data = b;
    uv_prepare_start(&b->prepare, on_prepare);
    uv_idle_init(&b->loop, &b->spin);
    uv_timer_init(&b->loop, &b->tick);
    b->tick.data = b;
    uv_timer_start(&b->tick, on_tick, 200, 200);
    uv_timer_init(&b->loop, &b->stop);
    b->stop.data = b;
    uv_timer_start(&b->stop, on_stop, (uint64_t)(o->duration * 1000 + 0.5), 0);
    uv_timer_init(&b->loop, &b->hold);
    b->hold.data = b;
    uv_signal_init(&b->loop, &b->sigint);
    uv_signal_init(&b->loop, &b->sigterm);
    b->sigint.data = b->sigterm.data = b;
    uv_signal_start(&b->sigint, on_signal, SIGINT);
    uv_signal_start(&b->sigterm, on_signal, SIGTERM);
    b->last_report_ns = tn_bench_now_ns();

    if (conns) {
        b->rss0_kb = tn_bench_broker_rss_kb(o);
        mark_start(b);
        tn_bench_setup_group(b, TN_BENCH_SETUP_IDLE, 0, o->conns);
    } else if (o->scenario == TN_BENCH_RETAINED) {
        tn_bench_setup_group(b, TN_BENCH_SETUP_PUBS, o->subs, o->subs + o->pubs);
    } else if (o->subs) {
        tn_bench_setup_group(b, TN_BENCH_SETUP_SUBS, 0, o->subs);
    } else {
        tn_bench_setup_group(b, TN_BENCH_SETUP_PUBS, 0, o->pubs);
    }
    uv_run(&b->loop, UV_RUN_DEFAULT);

    if (b->exit_code == 0 && o->scenario == TN_BENCH_RETAINED)
        tn_bench_retained_report(b);
    else if (b->exit_code == 0)
        report(b);
    ret = b->exit_code;
    for (uint32_t i = 0; i < b->n_conns; i++)
        tn_bench_conn_fini(&b->conns[i]);
    if (o->scenario == TN_BENCH_RETAINED)
        tn_bench_retained_fini(b);
    else if (!conns)
        tn_bench_pubsub_fini(b);
    tn_bench_stall_fini(b);
    if (uv_loop_close(&b->loop) != 0)
        fprintf(stderr, "ternbench: event loop closed with open handles\n");
    tn_bench_x_fini();
    free(b->conns);
    free(b->dirty);
    free(b);
    return ret;
}
