/*
 * message: a refcounted, immutable message shared by every delivery.
 *
 * One allocation holds the struct, the canonical destination name and the payload. A message is
 * immutable once created; each holder (a queue entry, a retained slot, an in-flight delivery)
 * holds one reference. Refcounts change only on the loop thread.
 */
#ifndef TN_MESSAGE_H
#define TN_MESSAGE_H

#include "core/base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tn_message;
/* Who is told when a message is freed (a budget its bytes are charged to; see tn_message.owner). */
typedef struct tn_message_owner {
    void (*freed)(struct tn_message_owner *o, const struct tn_message *m);
} tn_message_owner;

typedef struct tn_message {
    uint32_t refs;
    uint8_t qos;     /* QoS the publisher sent it with (0, 1, 2) */
    bool retain;     /* published as retained */
    bool persistent; /* must survive a restart (the store, issue 5) */
    bool small;      /* private: allocated from the small-block free list */
    uint32_t name_len;
    uint32_t payload_len;
    uint32_t props_len;
    uint64_t id;      /* broker-wide sequence number, set by the broker on publish */
    const char *name; /* canonical core name ('.' separated), NUL-terminated */
    const uint8_t *payload;
    const uint8_t *props;    /* properties (headers), see tn_props_add; props_len bytes */
    tn_message_owner *owner; /* NULL, or told once when the message is freed or uncharged */
} tn_message;

/*
 * Properties: what protocols carry besides name and payload (STOMP headers, AMQP properties,
 * MQTT 5 properties), as (key, value) byte strings, each u16 length-prefixed, in the order
 * added. Keys are the core's names for them, listed in README ("Message properties"): the
 * standard ones (content-type, correlation-id, reply-to, expires, priority) and any user key.
 */
/* Appends one property to a properties buffer being built. TN_ETOOBIG past 65535 bytes. */
int tn_props_add(tn_buf *b, const char *key, size_t klen, const char *val, size_t vlen);
/* Iterates m's properties: *off starts at 0; false at the end. */
bool tn_message_prop_next(const tn_message *m, size_t *off, const char **key, size_t *klen,
                          const char **val, size_t *vlen);
/* The value of property key, or NULL. */
const char *tn_message_prop(const tn_message *m, const char *key, size_t *vlen);

/* A new message with one reference, owned by the caller. name need not be NUL-terminated.
 * Returns NULL when out of memory. */
tn_message *tn_message_new(const char *name, size_t name_len, const void *payload,
                           size_t payload_len, uint8_t qos, bool retain);
/* The same with properties (props as built by tn_props_add; copied). */
tn_message *tn_message_new_props(const char *name, size_t name_len, const void *props,
                                 size_t props_len, const void *payload, size_t payload_len,
                                 uint8_t qos, bool retain);
/* A message whose payload_len bytes of payload the caller writes through *payload before anyone
 * else sees it (a large message filled as it arrives, held once). NULL when out of memory. */
tn_message *tn_message_alloc(const char *name, size_t name_len, const void *props, size_t props_len,
                             size_t payload_len, uint8_t qos, bool retain, uint8_t **payload);
/* Another reference to m (returns m). */
tn_message *tn_message_ref(tn_message *m);
/* Drops one reference; frees at zero. NULL is a no-op. */
void tn_message_unref(tn_message *m);
/* Tells m's owner (if any) now rather than when m is freed, and forgets it: m's memory is
 * accounted elsewhere from now on (a retained message). */
void tn_message_uncharge(tn_message *m);
/* Bytes this message holds in memory (for limits and statistics). */
size_t tn_message_size(const tn_message *m);

#endif
