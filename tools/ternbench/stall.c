/*
 * --stall K: subscribers 0..K-1 stop reading their socket for good at --stall-after seconds into
 * the run (uv_read_stop; the connection stays open and sends nothing, not even PINGREQ). What a
 * broker must then show: the other subscribers' latency back to normal soon, and publishers
 * never held up for long. So this file measures
 *
 *   - the healthy subscribers' end-to-end latency per 100 ms window of receive time (p99, max,
 *     and the messages they still owed when the window closed), printed as a timeline;
 *   - a window is over when its p99 exceeds 2 x the median p99 of the windows before the
 *     stall, or when it received nothing while messages were owed;
 *   - recover_strict_ms: from the stall to the end of the last over window from the stall on;
 *     0 if none, -1 if the run's last window is over (never back) or nothing was measured
 *     before the stall;
 *   - recover_ms: the same, counting only runs of at least HELD_WINDOWS consecutive over
 *     windows. On a shared 2-core machine a scheduling pause of a few ms puts 1% of a 100 ms
 *     window's messages late: one or two windows in a row went over 2 x a p99 of some 200 us
 *     every few seconds, stall or not; a broker that holds the others up does so for longer.
 *     over_windows and pre_over_windows count the over windows after and before the stall
 *     (the latter is the noise of the run);
 *   - onset_ms: from the stall to the start of the first such run (-1: none). A stalled
 *     subscriber's socket buffers (a few MB on loopback) take seconds of messages before its
 *     broker sees anything: recover_ms - onset_ms is how long the others were held up;
 *   - pub_block_max_ms, with or without --stall: the longest a publisher could not send. With
 *     --rate, the most a message was encoded after its scheduled time (the pacing timer's
 *     1 ms included); without, the longest gap between writes the kernel took some bytes of,
 *     while the publisher had messages left. A publisher still blocked when the run ends
 *     counts up to the end.
 *
 * The stalled subscribers' deliveries (before the stall, and whatever a read had already
 * taken) count as stalled_received only: publishers' fanout leaves them out, so they are
 * never expected and never lost, and their latencies stay out of the histogram.
 */
#include "tools/ternbench/ternbench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* recover_ms ignores shorter runs of over windows (see above). */
#define HELD_WINDOWS 3

void
tn_bench_stall_init(tn_bench *b)
{
    if (b->o.stall == 0)
        return;
    /* A window per 100 ms of --duration, plus the partial ones at both ends. */
    b->max_windows = (uint32_t)(b->o.duration * 1e9 / (double)TN_BENCH_WINDOW_NS) + 2;
    b->windows = tn_xcalloc(b->max_windows, sizeof *b->windows);
    b->win_hist = tn_xcalloc(1, sizeof *b->win_hist);
}

void
tn_bench_stall_fini(tn_bench *b)
{
    free(b->windows);
    free(b->win_hist);
    b->windows = NULL;
    b->win_hist = NULL;
}

/* Closes the open window (its end may be later than now: the run's last, partial one). */
static void
close_window(tn_bench *b)
{
    tn_bench_window *w = &b->windows[b->win_cur];
    w->n = b->win_hist->n;
    w->p99_ns = tn_bench_hist_percentile(b->win_hist, 99);
    w->max_ns = b->win_hist->max;
    w->outstanding = b->expected > b->unique ? b->expected - b->unique : 0;
    b->n_windows = b->win_cur + 1;
    memset(b->win_hist, 0, sizeof *b->win_hist);
    if (b->win_cur + 1 < b->max_windows)
        b->win_cur++;
}

/* Closes every window that ended by now_ns. */
static void
close_due(tn_bench *b, uint64_t now_ns)
{
    uint64_t idx = (now_ns - b->t_start) / TN_BENCH_WINDOW_NS;
    while (b->win_cur < idx && b->win_cur + 1 < b->max_windows)
        close_window(b);
}

static void
on_window(uv_timer_t *t)
{
    close_due(t->data, tn_bench_now_ns());
}

static void
on_stall(uv_timer_t *t)
{
    tn_bench *b = t->data;
    b->t_stall = tn_bench_now_ns();
    for (uint32_t j = 0; j < b->o.subs; j++) {
        tn_bench_conn *c = &b->subs[j];
        if (!c->stalls)
            continue;
        c->stalled = true;
        if (tn_bench_conn_is_active(c))
            uv_read_stop((uv_stream_t *)&c->tcp);
    }
    if (!b->o.quiet)
        fprintf(stderr, "ternbench: %u subscriber%s stopped reading\n", b->o.stall,
                b->o.stall == 1 ? "" : "s");
}

void
tn_bench_stall_start(tn_bench *b)
{
    for (uint32_t i = 0; i < b->o.pubs; i++)
        b->pubs[i].last_write_ns = b->t_start;
    if (b->o.stall == 0)
        return;
    uv_timer_init(&b->loop, &b->stall_timer);
    b->stall_timer.data = b;
    uv_timer_start(&b->stall_timer, on_stall, (uint64_t)(b->o.stall_after * 1000 + 0.5), 0);
    /* Windows also close on the next sample past them; the timer closes empty ones. */
    uv_timer_init(&b->loop, &b->window_timer);
    b->window_timer.data = b;
    uv_timer_start(&b->window_timer, on_window, 10, 10);
}

/* Publisher c's scheduled send time of message seq under --rate. */
static uint64_t
scheduled_ns(const tn_bench_conn *c, uint64_t seq)
{
    const tn_bench *b = c->b;
    double per_pub = b->o.rate / b->o.pubs;
    return b->t_start + (uint64_t)((double)seq * 1e9 / per_pub);
}

void
tn_bench_stall_stop(tn_bench *b)
{
    for (uint32_t i = 0; i < b->o.pubs; i++) {
        tn_bench_conn *c = &b->pubs[i];
        if (b->t_start == 0 || c->sent >= b->o.count || c->state == TN_BENCH_CS_FAILED)
            continue;
        /* Still blocked (or behind) when the run ended. */
        uint64_t since = b->o.rate > 0 ? scheduled_ns(c, c->sent) : c->last_write_ns;
        if (since && b->t_end > since && b->t_end - since > c->block_max_ns)
            c->block_max_ns = b->t_end - since;
    }
    if (b->o.stall == 0)
        return;
    uv_timer_stop(&b->stall_timer);
    uv_timer_stop(&b->window_timer);
    if (b->t_start) {
        close_due(b, b->t_end);
        close_window(b);
    }
}

void
tn_bench_stall_sample(tn_bench *b, uint64_t lat_ns, uint64_t now_ns)
{
    close_due(b, now_ns);
    tn_bench_hist_add(b->win_hist, lat_ns);
}

void
tn_bench_pub_wrote(tn_bench_conn *c)
{
    tn_bench *b = c->b;
    if (c->role != TN_BENCH_PUB || b->phase != TN_BENCH_RUN || b->o.rate > 0 ||
        c->last_write_ns == 0)
        return;
    uint64_t now_ns = tn_bench_now_ns();
    if (now_ns > c->last_write_ns && now_ns - c->last_write_ns > c->block_max_ns)
        c->block_max_ns = now_ns - c->last_write_ns;
    /* Everything encoded and written: from here on it has nothing to send. */
    bool all_out = c->sent >= b->o.count && !c->writing && c->out.len == 0;
    c->last_write_ns = all_out ? 0 : now_ns;
}

void
tn_bench_pub_paced(tn_bench_conn *c, uint64_t seq, uint64_t now_ns)
{
    if (c->b->o.rate <= 0)
        return;
    uint64_t due = scheduled_ns(c, seq);
    if (now_ns > due && now_ns - due > c->block_max_ns)
        c->block_max_ns = now_ns - due;
}

double
tn_bench_pub_block_max_ms(const tn_bench *b)
{
    uint64_t m = 0;
    for (uint32_t i = 0; i < b->o.pubs; i++)
        if (b->pubs[i].block_max_ns > m)
            m = b->pubs[i].block_max_ns;
    return (double)m / 1e6;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The figures of the timeline: see the comment at the top. */
typedef struct stall_summary {
    uint32_t stall_win;       /* the window the stall falls in */
    uint64_t base_ns;         /* median p99 of the windows before it; 0: none */
    uint64_t peak_ns;         /* highest window p99 from stall_win on */
    uint32_t over, pre_over;  /* over windows from stall_win on, and before it */
    double recover_ms;        /* -1: never; short runs of over windows ignored */
    double recover_strict_ms; /* -1: never */
    double onset_ms;          /* -1: no run of HELD_WINDOWS over windows */
} stall_summary;

static bool
window_is_over(const tn_bench *b, uint32_t w, uint64_t base_ns)
{
    if (w >= b->n_windows)
        return false;
    const tn_bench_window *x = &b->windows[w];
    return x->n ? x->p99_ns > 2 * base_ns : x->outstanding > 0;
}

/* Stall to the end of window last (-1: none, 0), or -1 when last is the run's last window. */
static double
recovery(const tn_bench *b, int64_t last)
{
    if (last < 0)
        return 0;
    if ((uint64_t)last + 1 >= b->n_windows)
        return -1;
    uint64_t end = b->t_start + ((uint64_t)last + 1) * TN_BENCH_WINDOW_NS;
    return end > b->t_stall ? (double)(end - b->t_stall) / 1e6 : 0;
}

static stall_summary
summarize(const tn_bench *b)
{
    stall_summary s = {.recover_ms = -1, .recover_strict_ms = -1, .onset_ms = -1};
    if (b->t_stall == 0 || b->n_windows == 0)
        return s;
    s.stall_win = (uint32_t)((b->t_stall - b->t_start) / TN_BENCH_WINDOW_NS);
    uint64_t *p99 = tn_xcalloc(s.stall_win + 1, sizeof *p99);
    uint32_t n = 0;
    for (uint32_t w = 0; w < s.stall_win && w < b->n_windows; w++)
        if (b->windows[w].n)
            p99[n++] = b->windows[w].p99_ns;
    if (n) {
        qsort(p99, n, sizeof *p99, cmp_u64);
        s.base_ns = n % 2 ? p99[n / 2] : (p99[n / 2 - 1] + p99[n / 2]) / 2;
    }
    free(p99);
    if (s.base_ns == 0 || s.stall_win >= b->n_windows)
        return s; /* nothing to compare with, or nothing after the stall */
    for (uint32_t w = 0; w < s.stall_win; w++)
        s.pre_over += window_is_over(b, w, s.base_ns);
    int64_t last_over = -1, last_held = -1;
    uint32_t run = 0; /* over windows in a row, ending at w */
    for (uint32_t w = s.stall_win; w < b->n_windows; w++) {
        if (b->windows[w].p99_ns > s.peak_ns)
            s.peak_ns = b->windows[w].p99_ns;
        if (!window_is_over(b, w, s.base_ns)) {
            run = 0;
            continue;
        }
        s.over++;
        last_over = w;
        if (++run < HELD_WINDOWS)
            continue;
        if (last_held < 0) {
            uint64_t start = b->t_start + (w + 1ull - run) * TN_BENCH_WINDOW_NS;
            s.onset_ms = start > b->t_stall ? (double)(start - b->t_stall) / 1e6 : 0;
        }
        last_held = w;
    }
    s.recover_strict_ms = recovery(b, last_over);
    s.recover_ms = recovery(b, last_held);
    return s;
}

void
tn_bench_stall_print(tn_bench *b)
{
    if (b->o.stall == 0)
        return;
    stall_summary s = summarize(b);
    if (b->t_stall == 0) {
        printf("  stall              never happened: the run ended before --stall-after\n");
        return;
    }
    printf("  stall              %u of %u subscribers stopped reading at %.0f ms; they got %llu "
           "messages (not counted above)\n",
           b->o.stall, b->o.subs, (double)(b->t_stall - b->t_start) / 1e6,
           (unsigned long long)b->stalled_received);
    printf("  timeline           the other subscribers' latency per %llu ms of receive time; "
           "over: p99 > 2 x %.1f us (median before the stall), or nothing received while owed\n",
           (unsigned long long)(TN_BENCH_WINDOW_NS / 1000000), (double)s.base_ns / 1000.0);
    printf("  %8s %9s %11s %11s %9s\n", "t_ms", "msgs", "p99_us", "max_us", "owed");
    for (uint32_t w = 0; w < b->n_windows; w++) {
        const tn_bench_window *x = &b->windows[w];
        bool after = w >= s.stall_win;
        printf("  %8llu %9llu %11.1f %11.1f %9llu%s%s\n",
               (unsigned long long)((w + 1ull) * (TN_BENCH_WINDOW_NS / 1000000)),
               (unsigned long long)x->n, (double)x->p99_ns / 1000.0, (double)x->max_ns / 1000.0,
               (unsigned long long)x->outstanding, w == s.stall_win ? "  stall" : "",
               s.base_ns && window_is_over(b, w, s.base_ns)
                   ? (after ? "  over" : "  over (before the stall)")
                   : "");
    }
    printf("  over windows       %u after the stall, %u before it (noise)\n", s.over, s.pre_over);
    if (s.base_ns == 0) {
        printf("  recovered          unknown: nothing received before the stall\n");
        return;
    }
    if (s.onset_ms >= 0)
        printf("  held up from       %.0f ms after the stall\n", s.onset_ms);
    if (s.recover_ms < 0)
        printf("  recovered          never");
    else
        printf("  recovered          %.0f ms after the stall", s.recover_ms);
    if (s.recover_strict_ms < 0)
        printf(" (runs of under %d over windows ignored; counting them: never)\n", HELD_WINDOWS);
    else
        printf(" (runs of under %d over windows ignored; counting them: %.0f ms)\n", HELD_WINDOWS,
               s.recover_strict_ms);
}

void
tn_bench_stall_result(tn_bench *b)
{
    if (b->o.stall == 0)
        return;
    stall_summary s = summarize(b);
    printf(" stall=%u stall_after=%.3f stalled_received=%llu pre_stall_p99_us=%.1f "
           "stall_p99_max_us=%.1f over_windows=%u pre_over_windows=%u onset_ms=%.0f "
           "recover_ms=%.0f recover_strict_ms=%.0f",
           b->o.stall, b->o.stall_after, (unsigned long long)b->stalled_received,
           (double)s.base_ns / 1000.0, (double)s.peak_ns / 1000.0, s.over, s.pre_over, s.onset_ms,
           s.recover_ms, s.recover_strict_ms);
}
