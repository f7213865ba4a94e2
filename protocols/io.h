/*
 * io: the connection interface protocol adapters see. Every transport (net: TCP, TLS over TCP;
 * ws: WebSocket and WebSocket over TLS) offers a tn_io to the adapter of each of its connections
 * and drives it through its tn_adapter_ops, so one adapter runs unchanged over all of them and
 * none of them includes a transport. Unit tests drive adapters with a fake tn_io
 * (tests/unit/fake_io.h).
 *
 * Thread: the loop thread only.
 */
#ifndef TN_IO_H
#define TN_IO_H

#include "core/base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
    /* The subject of the client certificate the TLS handshake verified against the CA
     * ("CN=dev-1,O=Acme", RFC 2253 order), or NULL: no TLS, no certificate, or not verified.
     * May be NULL (no TLS on this transport). */
    const char *(*cert_subject)(void *ctx);
} tn_io;

/* What a client presents when it connects; any field may be NULL (absent). */
typedef struct tn_auth_req {
    const char *protocol;  /* "mqtt", "stomp", "amqp" */
    const char *client_id; /* MQTT client id, STOMP client-id, AMQP container id */
    const char *user;
    const uint8_t *password;
    size_t password_len;
    const char *cert_subject; /* the verified TLS client certificate's subject (tn_io) */
} tn_auth_req;

/* Authenticator, shared by every protocol (MQTT CONNECT, STOMP CONNECT login/passcode, AMQP SASL
 * PLAIN and ANONYMOUS): decides whether a client may connect, and who it is. Deciding may take
 * time (a password hash runs on libuv's thread pool; a refusal is answered after a delay), so it
 * is a job. Loop thread only.
 *
 * begin() starts deciding req (its strings are copied). Returns 0 (allowed), TN_EDENIED (not
 * authorized: an anonymous client where none is allowed) or TN_EINVAL (bad user name or
 * password) when decided at once, with *user set as finish() sets it on 0; or TN_EAGAIN: the
 * answer comes later, *job is set, and done(arg) is called once, on the loop thread, never from
 * inside begin(); then finish() gives the answer (same codes), frees the job and, when allowed,
 * sets *user to the client's user name for permissions (malloc'd, the caller frees it; NULL for
 * an anonymous client). cancel() drops a job whose answer was not taken with finish() (the
 * connection closed): done() is then never called, if it had not been. */
typedef struct tn_auth_job tn_auth_job;
typedef struct tn_auth {
    int (*begin)(void *ctx, const tn_auth_req *req, char **user, tn_auth_job **job,
                 void (*done)(void *arg), void *arg);
    int (*finish)(void *ctx, tn_auth_job *job, char **user);
    void (*cancel)(void *ctx, tn_auth_job *job);
    void *ctx;
} tn_auth;

/* The verified client certificate's subject on io's connection, or NULL. */
static inline const char *
tn_io_cert_subject(const tn_io *io, void *ctx)
{
    return io->cert_subject ? io->cert_subject(ctx) : NULL;
}

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

/* Output that mixes copied bytes with payloads written from where they are (tn_io.out_ref):
 * the transport's output buffer, and the references that go out before byte `at` of it, in
 * stream order. Shared by the transports (net, ws). */
typedef struct tn_oref {
    size_t at;
    const uint8_t *p;
    size_t n;
    void (*release)(void *owner); /* once written or dropped */
    void *owner;
} tn_oref;

typedef struct tn_orefs {
    tn_oref *v;
    size_t n, cap;
    size_t bytes; /* their n, summed */
} tn_orefs;

/* A piece of the output stream. */
typedef struct tn_piece {
    const uint8_t *p;
    size_t n;
} tn_piece;

/* Adds a reference before byte `at` of the buffer (its current end). */
void tn_orefs_add(tn_orefs *r, size_t at, const uint8_t *p, size_t n, void (*release)(void *owner),
                  void *owner);
/* Releases every reference and empties r. */
void tn_orefs_release(tn_orefs *r);
/* The pieces of buf and r from stream byte `skip` on (at most max pieces); returns how many,
 * and the bytes they cover in *bytes. */
unsigned tn_out_pieces(const tn_buf *buf, const tn_orefs *r, size_t skip, tn_piece *v, unsigned max,
                       size_t *bytes);
/* The first `done` bytes of the stream are written (or encrypted): drops them from buf,
 * releases the references passed whole, and returns how many bytes of the first remaining
 * reference they include (the new cursor). */
size_t tn_out_drop(tn_buf *buf, tn_orefs *r, size_t done);

/* Connections open per source address, for limits.max_connections_per_ip: one count shared by
 * the transports (net and ws), so a client cannot get round it with another scheme. An IPv4
 * address mapped into IPv6 counts as the IPv4 one. */
struct sockaddr;
typedef struct tn_iplimit tn_iplimit;
tn_iplimit *tn_iplimit_new(uint32_t max); /* max 0: no limit (NULL, which every call takes) */
void tn_iplimit_free(tn_iplimit *l);
/* Counts a connection from sa: false (not counted: refuse it) when its address has max open. */
bool tn_iplimit_take(tn_iplimit *l, const struct sockaddr *sa);
/* A counted connection from sa closed. */
void tn_iplimit_give(tn_iplimit *l, const struct sockaddr *sa);
uint32_t tn_iplimit_max(const tn_iplimit *l);

#endif
