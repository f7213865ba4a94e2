/*
 * Measurements: the latency histogram, and CPU and memory of this process and of the broker.
 */
#include "tools/ternbench/ternbench.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Values below 2^8 have a bucket each; from there every power of two [2^k, 2^(k+1)) has HALF
 * buckets of width 2^(k-7), so index = HALF * shift + (v >> shift) with v >> shift in
 * [HALF, 2 * HALF). 2^64 - 1 lands in the last bucket, HALF * 56 + 255. */
#define HALF 128

static unsigned
bucket_of(uint64_t v)
{
    if (v < 2 * HALF)
        return (unsigned)v;
    unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - 7;
    return HALF * shift + (unsigned)(v >> shift);
}

/* The largest value that falls in bucket i. */
static uint64_t
bucket_top(unsigned i)
{
    if (i < 2 * HALF)
        return i;
    unsigned shift = i / HALF - 1;
    uint64_t m = i - HALF * shift;
    return ((m + 1) << shift) - 1;
}

void
tn_bench_hist_add(tn_bench_hist *h, uint64_t v)
{
    unsigned i = bucket_of(v);
    tn_assert(i < TN_BENCH_HIST_BUCKETS);
    h->counts[i]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

uint64_t
tn_bench_hist_percentile(const tn_bench_hist *h, double pct)
{
    if (h->n == 0)
        return 0;
    /* The smallest value with at least pct% of the samples at or below it. */
    uint64_t rank = (uint64_t)(pct / 100.0 * (double)h->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > h->n)
        rank = h->n;
    uint64_t seen = 0;
    for (unsigned i = 0; i < TN_BENCH_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t top = bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

uint64_t
tn_bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double
tn_bench_self_cpu(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Reads a small /proc file into buf; false when it cannot. */
static bool
read_proc(int pid, const char *name, char *buf, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", pid, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

double
tn_bench_proc_cpu(int pid)
{
    char buf[2048];
    unsigned long long ut, st;
    if (pid <= 0 || !read_proc(pid, "stat", buf, sizeof buf))
        return -1;
    /* The command name may hold spaces and parentheses: fields start after the last ')'.
     * Then: state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
     * stime (fields 3 to 15 of proc(5)). */
    const char *p = strrchr(buf, ')');
    if (!p ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

long
tn_bench_proc_rss_kb(int pid)
{
    char buf[8192];
    long kb;
    if (pid <= 0 || !read_proc(pid, "status", buf, sizeof buf))
        return -1;
    const char *p = strstr(buf, "\nVmRSS:");
    if (!p || sscanf(p + 7, " %ld", &kb) != 1)
        return -1;
    return kb;
}

void
tn_bench_broker_cpu(const tn_bench_opts *o, double *cpu)
{
    for (uint32_t i = 0; i < o->n_broker_pids; i++)
        cpu[i] = tn_bench_proc_cpu(o->broker_pids[i]);
}

double
tn_bench_broker_cpu_since(const tn_bench_opts *o, const double *cpu0)
{
    double sum = -1;
    for (uint32_t i = 0; i < o->n_broker_pids; i++) {
        double cpu = tn_bench_proc_cpu(o->broker_pids[i]);
        if (cpu >= 0 && cpu0[i] >= 0)
            sum = (sum < 0 ? 0 : sum) + cpu - cpu0[i];
    }
    return sum;
}

long
tn_bench_broker_rss_kb(const tn_bench_opts *o)
{
    long sum = -1;
    for (uint32_t i = 0; i < o->n_broker_pids; i++) {
        long kb = tn_bench_proc_rss_kb(o->broker_pids[i]);
        if (kb >= 0)
            sum = (sum < 0 ? 0 : sum) + kb;
    }
    return sum;
}
