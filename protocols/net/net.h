/*
 * net: libuv TCP listeners and connections, in plain text or TLS. Protocol adapters plug in
 * through tn_adapter_ops and talk back through tn_io (protocols/io.h), so they never see a socket.
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
#include "protocols/io.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct uv_loop_s;

typedef struct tn_net_limits {
    uint32_t max_connections;
    uint32_t max_input;        /* largest unparsed input kept per connection (bytes) */
    uint32_t max_output;       /* pending output above which out_full() is true (bytes) */
    uint32_t close_timeout_ms; /* a closing connection whose output is not written by then is
                                  closed without it (0: waits for the client however long) */
    uint32_t tls_handshake_timeout_ms; /* a TLS handshake not done by then is closed */
    tn_iplimit *per_ip; /* connections per source address (shared with ws; NULL: no limit) */
} tn_net_limits;

struct tn_tls_ctx;

typedef struct tn_net tn_net;

tn_net *tn_net_new(struct uv_loop_s *loop, const tn_net_limits *limits);
/*
 * Listens on address:port (numeric IPv4/IPv6) for connections handled by ops with proto as its
 * open() argument. port 0 picks a free port; *bound gets the actual port. With tls (not owned;
 * it must outlive n), connections speak TLS: the adapter sees plaintext once the handshake is
 * done; a handshake that fails or is not done within tls_handshake_timeout_ms closes the
 * connection (NET-TLS-FAIL, NET-TLS-TIMEOUT).
 */
int tn_net_listen(tn_net *n, const char *address, uint16_t port, const tn_adapter_ops *ops,
                  void *proto, struct tn_tls_ctx *tls, uint16_t *bound);
/* Stops listening and closes every connection (closed() with TN_CLOSE_SHUTDOWN); done() is
 * called once every handle is closed, after which tn_net_free() may be called. */
void tn_net_close(tn_net *n, void (*done)(void *arg), void *arg);
void tn_net_free(tn_net *n);
/* Closes every connection now, without flushing (a pair's active that lost its lease: what
 * its clients were waiting for will never be confirmed here); the listeners stay open. */
void tn_net_drop_all(tn_net *n);
uint32_t tn_net_connections(const tn_net *n);
uint64_t tn_net_tls_handshakes(const tn_net *n); /* completed since tn_net_new */

#endif
