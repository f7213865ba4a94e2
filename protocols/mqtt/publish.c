/* PUBLISH both ways, and the acks of QoS 1 (PUBACK) and QoS 2 (PUBREC, PUBREL, PUBCOMP). */
#include "protocols/mqtt/mqtt_int.h"

#include <string.h>

static int
publish_now(mconn *c, tn_message *msg, uint8_t qos, uint16_t pid)
{
    msg->persistent = qos > 0; /* kept by persistent sessions' journal */
    if (tn_broker_may(c->m->broker, c->user, tn_session_id(c->s), false, msg->name, TN_MAY_WRITE,
                      false)) {
        tn_broker_publish(c->m->broker, msg, &c->flow);
    } else if (!c->acl_logged) {
        /* Acknowledged and dropped, as Mosquitto does; said once per connection. */
        c->acl_logged = true;
        tn_log_warn("MQTT-ACL-DENIED",
                    "%s: user %s may not publish to %s: acknowledged and dropped (further "
                    "denials on this connection are not logged)",
                    c->io->peer(c->ioc), c->user ? c->user : "(anonymous)", msg->name);
    }
    /* Confirmed only once the journal holds what the message became [issue 5]. */
    if (qos == 1)
        return tn_mqtt__respond_ack(c, TN_MQTT_PUBACK, pid);
    if (qos == 2)
        return tn_mqtt__respond_ack(c, TN_MQTT_PUBREC, pid);
    return 0;
}

int
tn_mqtt__publish(mconn *c, const tn_mqtt_publish *p)
{
    tn_mqtt *m = c->m;
    const char *name = tn_mqtt__core_name(m, p->topic.p, p->topic.len);
    if (!tn_broker_levels_ok(m->broker, name))
        return tn_mqtt__too_deep(c, "PUBLISH topic");
    if (p->payload.len > m->conf.max_message)
        return tn_mqtt__too_big(c, p->payload.len);
    if (p->qos == 2 && !tn_session_rx_mark(c->s, p->pid)) {
        /* A re-sent QoS 2 message we already published: acknowledge only [MQTT-4.3.3-2]. */
        return tn_mqtt__respond_ack(c, TN_MQTT_PUBREC, p->pid);
    }
    tn_message *msg =
        tn_message_new(name, p->topic.len, p->payload.p, p->payload.len, p->qos, p->retain);
    if (!msg) {
        tn_log_error("MQTT-NOMEM", "%s: out of memory for a %u byte message, closing",
                     c->io->peer(c->ioc), p->payload.len);
        return TN_ENOMEM;
    }
    int rc = publish_now(c, msg, p->qos, p->pid);
    tn_message_unref(msg);
    return rc;
}

int
tn_mqtt__publish_message(mconn *c, tn_message *msg, uint8_t qos, uint16_t pid)
{
    if (qos == 2 && !tn_session_rx_mark(c->s, pid))
        return tn_mqtt__respond_ack(c, TN_MQTT_PUBREC, pid); /* [MQTT-4.3.3-2] */
    return publish_now(c, msg, qos, pid);
}

/* The unacked delivery with packet id pid; acks mostly come in order, so the first is usual. */
static tn_delivery *
find_unacked(mconn *c, uint16_t pid)
{
    tn_consumer *con = tn_session_consumer(c->s);
    if (!con)
        return NULL;
    for (tn_delivery *d = tn_queue_unacked_first(con); d; d = tn_queue_unacked_next(d))
        if (d->tag == pid)
            return d;
    return NULL;
}

static void
finish(mconn *c, tn_delivery *d)
{
    tn_session_tx_free(c->s, d->tag);
    tn_session_ack(c->s, d);
}

int
tn_mqtt__ack(mconn *c, tn_mqtt_type type, uint16_t pid)
{
    tn_buf *out = c->io->out(c->ioc);
    tn_delivery *d;
    switch (type) {
    case TN_MQTT_PUBACK:
        d = find_unacked(c, pid);
        if (d && d->qos == 1)
            finish(c, d);
        else
            tn_log_debug("MQTT-ACK-UNKNOWN", "%s: PUBACK for unknown id %u", c->io->peer(c->ioc),
                         pid);
        return 0;
    case TN_MQTT_PUBREC:
        d = find_unacked(c, pid);
        if (d && d->qos == 2 && d->state != DELIVERY_PUBREL) {
            /* From now on we re-send PUBREL, never PUBLISH, also after a restart: the PUBREL
             * waits until the journal says so, for the receiver forgets the id on PUBREL. */
            tn_session_set_state(c->s, d, DELIVERY_PUBREL);
            return tn_mqtt__respond_ack(c, TN_MQTT_PUBREL, pid);
        }
        return tn_mqtt__out_result(c, tn_mqtt_encode_ack(out, c->version, TN_MQTT_PUBREL, pid, 0));
    case TN_MQTT_PUBCOMP:
        d = find_unacked(c, pid);
        if (d && d->qos == 2 && d->state == DELIVERY_PUBREL)
            finish(c, d);
        return 0;
    case TN_MQTT_PUBREL:
        tn_session_rx_release(c->s, pid); /* the id may be used for a new message now */
        return tn_mqtt__respond_ack(c, TN_MQTT_PUBCOMP, pid);
    default:
        return TN_EINVAL;
    }
}

static void
release_message(void *m)
{
    tn_message_unref(m);
}

int
tn_mqtt__deliver(void *ctx, tn_delivery *d)
{
    mconn *c = ctx;
    if (c->state != ST_CONNECTED || c->hold || c->io->out_full(c->ioc))
        return TN_EAGAIN;
    tn_buf *out = c->io->out(c->ioc);
    if (d->qos > 0 && d->tag == 0) {
        d->tag = tn_session_tx_alloc(c->s, d->msg->id);
        if (d->tag == 0)
            return TN_EAGAIN; /* all 65535 ids in flight: cannot happen with max_inflight */
    }
    if (d->state == DELIVERY_PUBREL)
        return tn_mqtt_encode_ack(out, c->version, TN_MQTT_PUBREL, d->tag, 0) == 0 ? 0 : TN_EAGAIN;
    tn_mqtt *m = c->m;
    const tn_message *msg = d->msg;
    bool retain = (d->flags & TN_DELIVERY_RETAINED) != 0; /* [MQTT-3.3.1-8] [MQTT-3.3.1-9] */
    frame_cache *fc = &m->frame;
    if (fc->msg != msg || fc->id != msg->id || fc->qos != d->qos || fc->retain != retain ||
        fc->version != c->version) {
        m->topic.len = 0;
        uint8_t *topic = tn_buf_reserve(&m->topic, msg->name_len + 1);
        tn_assert(topic);
        tn_mqtt_from_core(msg->name, msg->name_len, topic);
        tn_mqtt_publish p = {
            .qos = d->qos,
            .retain = retain,
            .topic = {topic, msg->name_len},
            .pid = 1, /* patched per delivery */
            .payload = {msg->payload, msg->payload_len},
        };
        fc->msg = NULL;
        fc->buf.len = 0;
        if (tn_mqtt_encode_publish(&fc->buf, c->version, &p) != 0) {
            /* Too big to cache: the head straight into the output, the payload by reference
             * to the message (one copy in memory however many subscribers get it). */
            p.pid = d->tag;
            p.dup = d->qos > 0 && d->count > 1;
            if (!c->io->out_ref || msg->payload_len < TN_NET_REF_MIN)
                return tn_mqtt_encode_publish(out, c->version, &p) == 0 ? 0 : TN_EAGAIN;
            if (tn_mqtt_encode_publish_head(out, c->version, &p) != 0)
                return TN_EAGAIN;
            c->io->out_ref(c->ioc, msg->payload, msg->payload_len, release_message,
                           tn_message_ref(d->msg));
            return 0;
        }
        fc->msg = msg;
        fc->id = msg->id;
        fc->qos = d->qos;
        fc->retain = retain;
        fc->version = c->version;
        fc->pid_off = fc->buf.len - msg->payload_len - 2;
    }
    uint8_t *dst = tn_buf_reserve(out, fc->buf.len);
    if (!dst)
        return TN_EAGAIN;
    memcpy(dst, fc->buf.data, fc->buf.len);
    if (d->qos > 0) {
        dst[fc->pid_off] = (uint8_t)(d->tag >> 8);
        dst[fc->pid_off + 1] = (uint8_t)d->tag;
        if (d->count > 1)
            dst[0] |= 0x08; /* DUP: re-sent [MQTT-3.3.1-1] */
    }
    tn_buf_commit(out, fc->buf.len);
    return 0;
}
