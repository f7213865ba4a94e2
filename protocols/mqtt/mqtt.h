/*
 * mqtt: the MQTT 3.1.1 adapter: the per-connection session state machine between the codec
 * (codec.h) and the broker core. Sans-IO: it reads bytes handed to it by net and writes bytes
 * into the connection's output buffer through tn_io.
 *
 * Names: MQTT topic levels are separated by '/', core names by '.'; the two characters swap, and
 * in filters '+' is '*' and '#' is '>' (ActiveMQ's mapping: MQTT "a/b" is STOMP "/topic/a.b").
 */
#ifndef TN_MQTT_H
#define TN_MQTT_H

#include "core/broker/broker.h"
#include "protocols/io.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tn_mqtt_conf {
    uint32_t max_message;        /* largest PUBLISH payload accepted, bytes (at most the
                                    protocol's 256 MiB less the headers) */
    uint32_t max_packet;         /* largest other packet (CONNECT with its will, SUBSCRIBE) */
    uint32_t large_min;          /* a PUBLISH payload from this size that has not all arrived is
                                    read straight into its message (0: 64 KiB) */
    uint32_t connect_timeout_ms; /* time allowed between accept and CONNECT */
    tn_auth auth;                /* begin == NULL: everyone is allowed */
} tn_mqtt_conf;

typedef struct tn_mqtt tn_mqtt;

tn_mqtt *tn_mqtt_new(tn_broker *b, const tn_mqtt_conf *conf);
void tn_mqtt_free(tn_mqtt *m);

/* Plug into tn_net_listen(..., &tn_mqtt_adapter, m, ...). */
extern const tn_adapter_ops tn_mqtt_adapter;

/* Name mapping, writing len bytes to dst (same length): MQTT topic or filter -> core, and
 * core name -> MQTT topic. */
void tn_mqtt_to_core(const uint8_t *src, size_t len, char *dst);
void tn_mqtt_from_core(const char *src, size_t len, uint8_t *dst);

/* Connections open on m now. */
uint32_t tn_mqtt_connections(const tn_mqtt *m);

#endif
