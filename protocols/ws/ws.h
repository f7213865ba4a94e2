/*
 * ws: WebSocket listeners (ws://, and wss:// over TLS) through libwebsockets on ternd's own
 * libuv loop. One listener serves every protocol; the subprotocol the client offers picks the
 * adapter: `mqtt` and `mqttv3.1` (MQTT), `v10.stomp`, `v11.stomp`, `v12.stomp` (STOMP), `amqp`
 * and `AMQPWSB10` (AMQP 1.0). A client that offers none gets the protocol its first bytes show
 * (an MQTT CONNECT, a STOMP CONNECT or STOMP frame, the AMQP header); an offer of only unknown
 * subprotocols is refused in the handshake. Any path is accepted.
 *
 * Both directions are byte streams: the adapters see the payloads of the WebSocket messages in
 * order, whatever their boundaries (a packet may span messages, a message may hold several),
 * and their output leaves in binary messages of up to 256 KiB. The largest incoming message is
 * the listener's max_message (plus protocol framing); a larger one, a text message for MQTT or
 * AMQP, or a frame the RFC forbids (unmasked, ...) closes the connection. A plain HTTP request
 * gets 426 Upgrade Required; an upgrade from an Origin not in the allow-list gets 403.
 *
 * Adapters talk to their connection through tn_io (protocols/io.h), as over TCP: output is
 * bounded (out_full at max_output), input can be paused, deadlines run from a 250 ms sweep.
 *
 * Thread: the loop thread only.
 */
#ifndef TN_WS_H
#define TN_WS_H

#include "protocols/io.h"
#include "protocols/tls/tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct uv_loop_s;

typedef struct tn_ws_adapter {
    const tn_adapter_ops *ops;
    void *proto; /* its open() argument; NULL ops: this protocol is not served */
} tn_ws_adapter;

typedef struct tn_ws_listen_conf {
    const char *address; /* numeric IPv4 or IPv6 */
    uint16_t port;       /* 0: a free port */
    tn_ws_adapter mqtt, stomp, amqp;
    uint32_t max_message;       /* largest incoming WebSocket message payload */
    const char *const *origins; /* allowed Origin values; none: any (and none) */
    size_t n_origins;
    const tn_tls_conf *tls; /* wss: certificate, key, CA, verification; NULL: ws */
} tn_ws_listen_conf;

typedef struct tn_ws_limits {
    uint32_t max_connections;          /* WebSocket connections at once */
    uint32_t max_input;                /* unparsed input kept per connection */
    uint32_t max_output;               /* pending output above which out_full() is true */
    uint32_t close_timeout_ms;         /* a closing connection's output is given up after it */
    uint32_t tls_handshake_timeout_ms; /* wss: a handshake not done by then is closed (whole
                                          seconds, rounded up: libwebsockets' resolution) */
    tn_iplimit *per_ip; /* connections per source address (shared with net; NULL: no limit) */
} tn_ws_limits;

typedef struct tn_ws tn_ws;

/* Makes the libwebsockets context on loop. NULL with err filled if libwebsockets cannot run on
 * libuv (Debian: the libwebsockets-evlib-uv package is missing). */
tn_ws *tn_ws_new(struct uv_loop_s *loop, const tn_ws_limits *limits, char *err, size_t errlen);
/* Opens a listener; *bound gets its port. TN_EIO with err filled on failure (address in use, a
 * certificate that cannot be read, ...). */
int tn_ws_listen(tn_ws *w, const tn_ws_listen_conf *c, uint16_t *bound, char *err, size_t errlen);
/* Closes every connection now (closed() with TN_CLOSE_SHUTDOWN, before this returns) and starts
 * closing the listeners; the loop then runs until libwebsockets' handles are closed. */
void tn_ws_close(tn_ws *w);
/* Closes every connection at once, without flushing (see tn_net_drop_all); listeners stay. */
void tn_ws_drop_all(tn_ws *w);
/* After the loop has stopped: finishes libwebsockets' teardown (runs the loop once more) and
 * frees w. */
void tn_ws_free(tn_ws *w);
uint32_t tn_ws_connections(const tn_ws *w);

#endif
