/*
 * net: libuv TCP listeners and connections. Protocol adapters plug in through tn_adapter_ops and
 * talk back through tn_io, so they never see a socket (and unit tests drive them with a fake
 * tn_io).
 *
 * Reads go into one loop-wide buffer; only the unparsed tail of a partial packet is kept per
 * connection. Output is appended to a per-connection bounded buffer and written once per loop
 * turn (from a uv_prepare handle, so everything produced during the turn leaves in one write).
 * A connection whose pending output passes `max_output` is reported as full (tn_io.out_full) so
 * its adapter stops taking deliveries; when it drains below three quarters, the adapter's drained()
 * runs (a quarter of the limit per refill: a slow reader sees deliveries move often, in batches).
 * Input keeps being read while output is full (a client blocked on its own send must still get
 * its acks through); output past twice the limit fails to append, and the adapter closes.
 *
 * Thread: the loop thread only.
 */
#ifndef TN_NET_H
#define TN_NET_H

#include "core/base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct uv_loop_s;

/* What an adapter may ask of its connection: one shared table of functions, each taking the
 * connection's ctx (given to open()). Valid from open() until closed() returns. */
typedef struct tn_io {
    /* The output buffer: append encoded bytes; they are written at the end of this loop turn. */
    tn_buf *(*out)(void *ctx);
    /* True when pending output is over the limit: stop producing optional output. */
    bool (*out_full)(void *ctx);
    /* Close after writing what is already in out (at most close_timeout_ms, then without it). No
     * further input is given; closed() follows. */
    void (*close)(void *ctx);
    /* Stop (true) or resume (false) reading input; unparsed input is kept and offered again. */
    void (*pause)(void *ctx, bool paused);
    /* Calls the adapter's input() again this loop turn (with any unparsed input, possibly none),
     * e.g. to process work the adapter deferred. Never re-entrant: it happens later. */
    void (*wake)(void *ctx);
    /* Calls the adapter's timeout() at or after at_ms (loop time); 0 cancels. */
    void (*set_deadline)(void *ctx, uint64_t at_ms);
    /* Loop time in milliseconds. */
    uint64_t (*now)(void *ctx);
    /* "ADDR:PORT" of the peer, for logs. */
    const char *(*peer)(void *ctx);
    /* Writes p[0..n) next, after what is in out so far and before what is appended after, from
     * where it is (a large payload, shared by many connections): release(owner) is called once
     * it is written or dropped, and p must stay valid until then (the caller holds a reference
     * for it). The bytes count as pending output (out_full). May be NULL: then append a copy. */
    void (*out_ref)(void *ctx, const uint8_t *p, size_t n, void (*release)(void *owner),
                    void *owner);
} tn_io;

/* Authenticator, shared by every protocol (MQTT CONNECT, STOMP CONNECT login/passcode, AMQP SASL
 * PLAIN and ANONYMOUS): decides whether a client may connect. Called on the loop thread; must not
 * block. Returns 0 to allow, TN_EDENIED to refuse (not authorized) or TN_EINVAL for bad
 * credentials. client_id, user and password may be NULL when absent. */
typedef struct tn_auth {
    int (*check)(void *ctx, const char *client_id, const char *user, const uint8_t *password,
                 size_t password_len);
    void *ctx;
} tn_auth;

/* Payloads from this size on are written by reference (tn_io.out_ref), not copied: below it a
 * copy costs less than the bookkeeping. */
#define TN_NET_REF_MIN 65536

/* Reasons given to closed() */
#define TN_CLOSE_LOCAL 0             /* the adapter asked for it (tn_io.close) */
#define TN_CLOSE_PEER TN_EIO         /* the peer closed or the socket failed */
#define TN_CLOSE_SHUTDOWN TN_ECLOSED /* the broker is shutting down */

typedef struct tn_adapter_ops {
    const char *name; /* "mqtt" */
    /* A new connection: returns the adapter's state for it, or NULL to refuse it. io and ctx
     * are how the adapter talks back to this connection. */
    void *(*open)(void *proto, const tn_io *io, void *ctx);
    /* Input bytes: returns how many were consumed (the rest is offered again with more bytes
     * appended), or a negative TN_E* to close the connection at once (the adapter has already
     * queued any error reply and logged). An adapter that pauses itself returns early. */
    ssize_t (*input)(void *a, const uint8_t *p, size_t len);
    /* Output drained below three quarters of the limit after out_full() was true. */
    void (*drained)(void *a);
    /* The deadline set with tn_io.set_deadline has passed. */
    void (*timeout)(void *a, uint64_t now);
    /* The connection is gone (reason: TN_CLOSE_*); free the state. Called exactly once. */
    void (*closed)(void *a, int reason);
    /* Optional: where the next input bytes belong, when the adapter knows (the rest of a large
     * message's body, *len bytes at most): the socket is read straight there, and input() then
     * gets p pointing at them, in place (no copy needed). NULL: the usual read buffer. */
    uint8_t *(*read_into)(void *a, size_t *len);
} tn_adapter_ops;

typedef struct tn_net_limits {
    uint32_t max_connections;
    uint32_t max_input;        /* largest unparsed input kept per connection (bytes) */
    uint32_t max_output;       /* pending output above which out_full() is true (bytes) */
    uint32_t close_timeout_ms; /* a closing connection whose output is not written by then is
                                  closed without it (0: waits for the client however long) */
} tn_net_limits;

typedef struct tn_net tn_net;

tn_net *tn_net_new(struct uv_loop_s *loop, const tn_net_limits *limits);
/*
 * Listens on address:port (numeric IPv4/IPv6) for connections handled by ops with proto as its
 * open() argument. port 0 picks a free port; *bound gets the actual port.
 */
int tn_net_listen(tn_net *n, const char *address, uint16_t port, const tn_adapter_ops *ops,
                  void *proto, uint16_t *bound);
/* Stops listening and closes every connection (closed() with TN_CLOSE_SHUTDOWN); done() is
 * called once every handle is closed, after which tn_net_free() may be called. */
void tn_net_close(tn_net *n, void (*done)(void *arg), void *arg);
void tn_net_free(tn_net *n);
uint32_t tn_net_connections(const tn_net *n);

#endif
