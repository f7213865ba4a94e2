/*
 * Fuzz target for the STOMP adapter as a whole: arbitrary bytes from one client, in arbitrary
 * chunks, against a broker with small limits and a second client subscribed to a queue and to
 * every topic with client acks it never sends (so prefetch, redelivery and dead-letter paths
 * run). The first input byte picks options: bit 0 prepends a CONNECT (bit 1: version 1.2, else
 * 1.0), bits 2-4 the chunk size. Must never crash, hang or leak.
 */
#include "protocols/stomp/stomp.h"

#include "tests/unit/fake_io.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef tn_fake_conn fio;

static void
open_conn(tn_stomp *st, fio *f)
{
    tn_fake_open(f, &tn_stomp_adapter, st, 4096);
}

static void
feed(fio *f, const char *s, size_t n)
{
    tn_stomp_adapter.input(f->a, (const uint8_t *)s, n);
}

/* The broker's clock: each chunk is 40 ms later, so the never-reading subscriber becomes a slow
 * consumer (slow_consumer_ms 100) and catches up again as the input goes on. */
static tn_broker *fz_broker;
static uint64_t fz_now;

/* After each chunk: the subscriber runs its deferred acks, and both outputs are dropped. */
static void
after_chunk(void *arg)
{
    fio **c = arg;
    tn_broker_tick(fz_broker, fz_now += 40);
    if (c[1]->woken) {
        c[1]->woken = 0;
        tn_stomp_adapter.input(c[1]->a, NULL, 0);
    }
    c[0]->out.len = 0;
    c[1]->out.len = 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    tn_log_set_level(TN_LOG_ERROR);
    uint8_t opt = data[0];
    data++;
    size--;
    tn_broker_limits bl = {.max_inflight = 3,
                           .max_queued = 4,
                           .max_offline = 8,
                           .slow_consumer_ms = 100,
                           .max_topic_levels = 6,
                           .max_incoming = 1500};
    tn_broker *b = tn_broker_new(&bl);
    fz_broker = b;
    fz_now = 1000;
    tn_broker_tick(b, fz_now);
    /* Bodies from 100 bytes take the big path (straight into the message, from a 1500 byte
     * budget, so some wait). */
    tn_stomp_conf sc = {.limits = {256, 8, 1024, 1024, 100}, .prefetch = 2, .max_deliveries = 2};
    tn_stomp *st = tn_stomp_new(b, &sc);

    fio sub, cl;
    open_conn(st, &sub);
    static const char hello[] =
        "CONNECT\naccept-version:1.2\n\n\0"
        "SUBSCRIBE\nid:1\ndestination:/queue/q\nack:client\n\n\0"
        "SUBSCRIBE\nid:2\ndestination:/topic/>\nack:client-individual\n\n\0";
    feed(&sub, hello, sizeof hello - 1);

    open_conn(st, &cl);
    if (opt & 1) {
        static const char c12[] = "CONNECT\naccept-version:1.2\nclient-id:fz\n\n\0";
        static const char c10[] = "CONNECT\n\n\0";
        if (opt & 2)
            feed(&cl, c12, sizeof c12 - 1);
        else
            feed(&cl, c10, sizeof c10 - 1);
    }
    fio *both[2] = {&cl, &sub};
    tn_fake_feed(&tn_stomp_adapter, &cl, data, size, (size_t)1 << ((opt >> 2) & 7), after_chunk,
                 both);
    tn_stomp_adapter.closed(cl.a, TN_CLOSE_PEER);
    tn_stomp_adapter.closed(sub.a, TN_CLOSE_PEER);
    tn_buf_fini(&cl.out);
    tn_buf_fini(&sub.out);
    tn_stomp_free(st);
    tn_broker_free(b);
    return 0;
}
