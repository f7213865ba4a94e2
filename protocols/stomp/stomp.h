/*
 * stomp: the STOMP 1.0, 1.1 and 1.2 adapter: connections between the codec (codec.h) and the
 * broker core. Sans-IO like the MQTT adapter: bytes in through tn_adapter_ops.input, frames out
 * into the connection's output buffer through tn_io.
 *
 * Destinations (ActiveMQ's names):
 *   /queue/NAME       a named queue of the core (tn_broker_queue): competing consumers
 *   /topic/NAME       a core topic: NAME is a core name ('.' separated, '*' one level and '>'
 *                     the rest in SUBSCRIBE), so MQTT "a/b" is /topic/a.b
 *   /temp-queue/NAME  a queue private to the connection (core queue "tmp.<conn>.NAME"), deleted
 *   /temp-topic/NAME  when it closes; a reply-to naming one is rewritten to its /queue/ or
 *                     /topic/ form so another connection can answer
 * A durable topic subscription (client-id on CONNECT and activemq.subscriptionName on
 * SUBSCRIBE) is a persistent core session "\x01d:CLIENT:NAME"; every other topic subscription
 * a clean one. SEND headers other than destination, receipt, transaction, content-length and
 * persistent become message properties, and come back as MESSAGE headers on every protocol that
 * has headers.
 */
#ifndef TN_STOMP_H
#define TN_STOMP_H

#include "core/broker/broker.h"
#include "protocols/io.h"
#include "protocols/stomp/codec.h"

#include <stdint.h>

typedef struct tn_stomp_conf {
    tn_stomp_limits limits;      /* frame limits (codec) */
    uint32_t connect_timeout_ms; /* time allowed between accept and CONNECT */
    uint32_t prefetch;           /* unacked messages per subscription without
                                    activemq.prefetchSize */
    uint32_t max_deliveries;     /* a message delivered this often and not acked goes to
                                    DLQ.<queue> (0: never) */
    uint32_t min_heartbeat_ms;   /* heart-beat intervals asked for below this are raised to it */
    tn_auth auth;                /* CONNECT login/passcode (begin == NULL: everyone) */
} tn_stomp_conf;

typedef struct tn_stomp tn_stomp;

tn_stomp *tn_stomp_new(tn_broker *b, const tn_stomp_conf *conf);
void tn_stomp_free(tn_stomp *st);

/* Plug into tn_net_listen(..., &tn_stomp_adapter, st, ...). */
extern const tn_adapter_ops tn_stomp_adapter;

/* Connections open on st now. */
uint32_t tn_stomp_connections(const tn_stomp *st);

#endif
