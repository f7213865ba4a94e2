/*
 * amqp: the AMQP 1.0 adapter. The server side of qpid-proton-c's pn_connection_driver, fed by
 * the same net layer as MQTT and STOMP (no proton reactor or proactor: our libuv loop owns the
 * socket; proton only sees bytes, and its clock is ticked through tn_io deadlines). Sans-IO:
 * bytes in through tn_adapter_ops.input, frames out into the connection's output buffer.
 *
 * Addresses (one naming with STOMP and MQTT; ActiveMQ's):
 *   queue://NAME, /queue/NAME   the core's named queue NAME (STOMP /queue/NAME)
 *   topic://NAME, /topic/NAME   the core topic NAME ('.' separated; '*' and '>' wildcards on
 *                               receiving links), so MQTT "a/b" is topic://a.b
 *   NAME                        a queue, unless the terminus has the capability "topic" (or
 *                               "temporary-topic"), as Qpid JMS sends it
 * Dynamic sources and targets get a temporary queue "tmp.N.M" (or topic://tmp.N.M for the
 * capability temporary-topic), deleted when their link or connection goes; a link to a tmp.
 * name that does not exist is refused with amqp:not-found. A receiving link with a durable
 * source (durable != none) on a topic is a durable subscription, the persistent core session
 * "\x01d:CONTAINER:LINK" (the same as STOMP's client-id + activemq.subscriptionName); one with
 * the capability "shared" is a shared subscription, a queue subscribed to the topic whose
 * receivers compete.
 *
 * Messages: see README ("Message properties"). Bodies travel as they were sent between AMQP
 * clients; a data or string body is the core payload the other protocols see.
 */
#ifndef TN_AMQP_H
#define TN_AMQP_H

#include "core/broker/broker.h"
#include "protocols/io.h"

#include <stdint.h>

typedef struct tn_amqp_conf {
    uint32_t max_message;        /* largest message (a delivery's bytes), advertised on attach */
    uint32_t max_frame;          /* max-frame-size announced in our open (0: 128 KiB) */
    uint32_t idle_timeout_ms;    /* a connection silent this long is closed; announced in our
                                    open (0: 60 s) */
    uint32_t credit;             /* link credit kept open to a client sending (0: 1000) */
    uint32_t prefetch;           /* unsettled deliveries per receiving client link (0: 1000) */
    uint32_t max_deliveries;     /* a queue message delivered this often without being accepted
                                    goes to DLQ.<queue> (0: never) */
    uint32_t max_links;          /* links per connection (0: 1024) */
    uint32_t connect_timeout_ms; /* time allowed from accept to the AMQP open (0: 10 s) */
    tn_auth auth;                /* SASL PLAIN and ANONYMOUS (begin == NULL: everyone) */
    uint16_t port; /* this listener's port: a standby's redirect names it (0: not named) */
} tn_amqp_conf;

typedef struct tn_amqp tn_amqp;

tn_amqp *tn_amqp_new(tn_broker *b, const tn_amqp_conf *conf);
void tn_amqp_free(tn_amqp *a);

/* Plug into tn_net_listen(..., &tn_amqp_adapter, a, ...). */
extern const tn_adapter_ops tn_amqp_adapter;

/* Connections open on a now. */
uint32_t tn_amqp_connections(const tn_amqp *a);

#endif
