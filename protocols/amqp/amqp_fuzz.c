/*
 * Fuzz target for the AMQP adapter as a whole (proton's connection driver and everything on the
 * broker behind it): arbitrary bytes from one client, in chunks, against a broker with small
 * limits (a 512-byte max-frame-size, 8 KiB messages, credit 4, two deliveries before the DLQ).
 * The first input byte picks the chunk size (bits 0-2) and whether the stream is fed as it is
 * or after a valid protocol header (bit 3: the fuzzer then reaches the performatives at once).
 * Every chunk is 40 ms after the last, so idle timeouts (1 s) and open timeouts run. The seeds
 * are real clients' byte streams (python-qpid-proton: SASL, attach, transfers, dispositions).
 * Must never crash, hang or leak.
 */
#include "protocols/amqp/amqp.h"

#include "tests/unit/fake_io.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
feed(tn_fake_conn *f, const uint8_t *p, size_t n)
{
    if (f->closed)
        return;
    tn_amqp_adapter.input(f->a, p, n);
    for (int i = 0; i < 64 && f->woken && !f->closed; i++) {
        f->woken = 0;
        tn_amqp_adapter.input(f->a, NULL, 0);
    }
    f->out.len = 0; /* what the client would read */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const size_t chunks[] = {1, 3, 8, 64, 512, 4096, 65536, 1 << 20};
    size_t chunk = chunks[data[0] & 7];
    bool header = data[0] & 8;
    data++;
    size--;
    tn_log_set_level(TN_LOG_ERROR);
    tn_broker_limits bl = {.max_inflight = 4,
                           .max_queued = 8,
                           .max_offline = 16,
                           .max_topic_levels = 8,
                           .max_incoming = 1 << 16};
    tn_broker *b = tn_broker_new(&bl);
    tn_amqp_conf ac = {.max_message = 8192,
                       .max_frame = 512,
                       .idle_timeout_ms = 1000,
                       .credit = 4,
                       .prefetch = 4,
                       .max_deliveries = 2,
                       .max_links = 8,
                       .connect_timeout_ms = 500};
    tn_amqp *am = tn_amqp_new(b, &ac);
    tn_fake_conn f;
    memset(&f, 0, sizeof f);
    tn_buf_init(&f.out, 1 << 20);
    tn_fake_now = 1000;
    f.a = tn_amqp_adapter.open(am, &tn_fake_io, &f);
    if (header)
        feed(&f, (const uint8_t *)"AMQP\x00\x01\x00\x00", 8);
    for (size_t off = 0; off < size && !f.closed; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        feed(&f, data + off, n);
        tn_fake_now += 40;
        if (f.deadline && tn_fake_now >= f.deadline && !f.closed) {
            tn_amqp_adapter.timeout(f.a, tn_fake_now);
            feed(&f, NULL, 0);
        }
    }
    tn_amqp_adapter.closed(f.a, f.closed ? TN_CLOSE_LOCAL : TN_CLOSE_PEER);
    tn_buf_fini(&f.out);
    tn_amqp_free(am);
    tn_broker_free(b);
    return 0;
}
