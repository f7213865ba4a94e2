/*
 * A fake tn_io for protocol adapter tests and fuzz targets: output goes to a buffer, closing,
 * pausing, waking and deadlines are only recorded, the clock is tn_fake_now. No sockets.
 */
#ifndef TN_FAKE_IO_H
#define TN_FAKE_IO_H

#include "protocols/io.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct tn_fake_conn {
    tn_buf out;
    size_t full_at; /* out_full() once out holds more than this (0: never) */
    bool closed;
    bool paused;
    int woken; /* wake() calls not yet handled by the test */
    uint64_t deadline;
    void *a;                  /* the adapter's state for this connection */
    const char *cert_subject; /* what cert_subject() answers (NULL: no client certificate) */
} tn_fake_conn;

static uint64_t tn_fake_now = 1000;

static inline tn_buf *
tn_fake_out(void *ctx)
{
    return &((tn_fake_conn *)ctx)->out;
}
static inline bool
tn_fake_full(void *ctx)
{
    tn_fake_conn *f = ctx;
    return f->full_at && f->out.len > f->full_at;
}
static inline void
tn_fake_close(void *ctx)
{
    ((tn_fake_conn *)ctx)->closed = true;
}
static inline void
tn_fake_pause(void *ctx, bool p)
{
    ((tn_fake_conn *)ctx)->paused = p;
}
static inline void
tn_fake_wake(void *ctx)
{
    ((tn_fake_conn *)ctx)->woken++;
}
static inline void
tn_fake_deadline(void *ctx, uint64_t at)
{
    ((tn_fake_conn *)ctx)->deadline = at;
}
static inline uint64_t
tn_fake_clock(void *ctx)
{
    (void)ctx;
    return tn_fake_now;
}
static inline const char *
tn_fake_peer(void *ctx)
{
    (void)ctx;
    return "fake:1";
}

/* Payloads by reference are copied at once, so tests see the exact byte stream. */
static inline void
tn_fake_out_ref(void *ctx, const uint8_t *p, size_t n, void (*release)(void *owner), void *owner)
{
    tn_buf_append(tn_fake_out(ctx), p, n);
    release(owner);
}

static inline const char *
tn_fake_cert_subject(void *ctx)
{
    return ((tn_fake_conn *)ctx)->cert_subject;
}

static const tn_io tn_fake_io = {
    .out = tn_fake_out,
    .out_full = tn_fake_full,
    .close = tn_fake_close,
    .pause = tn_fake_pause,
    .wake = tn_fake_wake,
    .set_deadline = tn_fake_deadline,
    .now = tn_fake_clock,
    .peer = tn_fake_peer,
    .out_ref = tn_fake_out_ref,
    .cert_subject = tn_fake_cert_subject,
};

/* Opens a fake connection on ops/proto: out bounded by 64 KiB, full past full_at. */
static inline void
tn_fake_open(tn_fake_conn *f, const tn_adapter_ops *ops, void *proto, size_t full_at)
{
    memset(f, 0, sizeof *f);
    tn_buf_init(&f->out, 1 << 16);
    f->full_at = full_at;
    f->a = ops->open(proto, &tn_fake_io, f);
}

/* Feeds data to f's adapter in chunks of `chunk` bytes, as net does: the unconsumed tail is kept
 * and offered again with the next chunk, and wake() requests get up to 4 more input() calls.
 * after(arg) runs after each chunk (to clear outputs, run other connections' deferred work).
 * Stops once the adapter closes f. */
static inline void
tn_fake_feed(const tn_adapter_ops *ops, tn_fake_conn *f, const uint8_t *data, size_t size,
             size_t chunk, void (*after)(void *arg), void *arg)
{
    tn_buf in;
    tn_buf_init(&in, 1 << 20);
    for (size_t off = 0; off < size && !f->closed;) {
        size_t n = size - off < chunk ? size - off : chunk;
        tn_buf_append(&in, data + off, n);
        off += n;
        for (int round = 0; round < 4 && !f->closed; round++) {
            ssize_t used = ops->input(f->a, in.data, in.len);
            if (used < 0)
                break;
            tn_buf_consume(&in, (size_t)used);
            if (!f->woken)
                break;
            f->woken = 0;
        }
        if (after)
            after(arg);
    }
    tn_buf_fini(&in);
}

#endif
