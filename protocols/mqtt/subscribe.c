/* SUBSCRIBE and UNSUBSCRIBE. */
#include "protocols/mqtt/mqtt_int.h"

#include "core/topictree/topictree.h"

#include <stdlib.h>

/* The granted QoS for one SUBSCRIBE entry, or TN_MQTT_SUBACK_FAILURE for a bad filter. */
static uint8_t
grant(mconn *c, tn_mqtt_bytes f, uint8_t opts)
{
    if (!tn_mqtt_filter_valid(f.p, f.len))
        return TN_MQTT_SUBACK_FAILURE;
    /* '*' or '>' inside an MQTT level would read as wildcards in the core ('a*b' can't be
     * mapped): refuse those filters rather than match the wrong topics. */
    const char *name = tn_mqtt__core_name(c->m, f.p, f.len);
    if (!tn_topictree_filter_valid(name))
        return TN_MQTT_SUBACK_FAILURE;
    /* Refused only when nothing it can match may be read; otherwise granted, and each message
     * is checked as it comes (the broker delivers only what its owner may read). */
    if (!tn_broker_may(c->m->broker, c->user, tn_session_id(c->s), false, name, TN_MAY_READ,
                       true)) {
        tn_log_info("MQTT-ACL-DENIED", "%s: user %s may not read anything %s matches: SUBACK 0x80",
                    c->io->peer(c->ioc), c->user ? c->user : "(anonymous)", name);
        return TN_MQTT_SUBACK_FAILURE;
    }
    return opts & 3;
}

int
tn_mqtt__subscribe(mconn *c, const tn_mqtt_list *l)
{
    uint8_t stack_rcs[64];
    uint8_t *rcs = l->count <= 64 ? stack_rcs : tn_xmalloc(l->count);
    tn_mqtt_list_iter it;
    tn_mqtt_bytes f;
    uint8_t opts;
    uint32_t i = 0;
    tn_mqtt_list_begin(l, &it);
    while (tn_mqtt_list_next(&it, TN_MQTT_SUBSCRIBE, &f, &opts) && i < l->count) {
        if (!tn_broker_levels_ok(c->m->broker, tn_mqtt__core_name(c->m, f.p, f.len))) {
            if (rcs != stack_rcs)
                free(rcs);
            return tn_mqtt__too_deep(c, "SUBSCRIBE filter");
        }
        rcs[i++] = grant(c, f, opts);
    }
    /* Deliveries (the retained messages these subscriptions bring) wait until the SUBACK is
     * out, and the SUBACK waits until the journal holds the subscriptions. */
    c->hold = true;
    i = 0;
    tn_mqtt_list_begin(l, &it);
    while (tn_mqtt_list_next(&it, TN_MQTT_SUBSCRIBE, &f, &opts) && i < l->count) {
        if (rcs[i++] != TN_MQTT_SUBACK_FAILURE)
            tn_session_subscribe(c->s, tn_mqtt__core_name(c->m, f.p, f.len), opts & 3);
    }
    tn_buf ack;
    tn_buf_init(&ack, (size_t)l->count + 16);
    int rc = tn_mqtt_encode_suback(&ack, c->version, l->pid, rcs, i);
    if (rc == 0)
        rc = tn_mqtt__respond(c, ack.data, ack.len, true);
    tn_buf_fini(&ack);
    if (rcs != stack_rcs)
        free(rcs);
    return rc;
}

int
tn_mqtt__unsubscribe(mconn *c, const tn_mqtt_list *l)
{
    tn_mqtt_list_iter it;
    tn_mqtt_bytes f;
    uint8_t opts;
    tn_mqtt_list_begin(l, &it);
    while (tn_mqtt_list_next(&it, TN_MQTT_UNSUBSCRIBE, &f, &opts))
        tn_session_unsubscribe(c->s, tn_mqtt__core_name(c->m, f.p, f.len)); /* absent is fine */
    return tn_mqtt__respond_ack(c, TN_MQTT_UNSUBACK, l->pid);
}
