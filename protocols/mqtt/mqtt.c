/* The MQTT adapter's connection lifecycle: input loop, keepalive, close, flow control. */
#include "protocols/mqtt/mqtt_int.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

tn_mqtt *
tn_mqtt_new(tn_broker *b, const tn_mqtt_conf *conf)
{
    tn_mqtt *m = tn_xcalloc(1, sizeof *m);
    m->broker = b;
    m->conf = *conf;
    tn_buf_init(&m->scratch, 65536 + 1);
    tn_buf_init(&m->topic, 65536 + 1);
    tn_buf_init(&m->frame.buf, FRAME_CACHE_MAX);
    return m;
}

void
tn_mqtt_free(tn_mqtt *m)
{
    if (!m)
        return;
    tn_buf_fini(&m->scratch);
    tn_buf_fini(&m->topic);
    tn_buf_fini(&m->frame.buf);
    free(m);
}

void
tn_mqtt_to_core(const uint8_t *src, size_t len, char *dst)
{
    for (size_t i = 0; i < len; i++) {
        switch (src[i]) {
        case '/':
            dst[i] = '.';
            break;
        case '.':
            dst[i] = '/';
            break;
        case '+':
            dst[i] = '*';
            break;
        case '#':
            dst[i] = '>';
            break;
        default:
            dst[i] = (char)src[i];
        }
    }
}

void
tn_mqtt_from_core(const char *src, size_t len, uint8_t *dst)
{
    for (size_t i = 0; i < len; i++) {
        char ch = src[i];
        dst[i] = (uint8_t)(ch == '.' ? '/' : ch == '/' ? '.' : ch);
    }
}

const char *
tn_mqtt__core_name(tn_mqtt *m, const uint8_t *p, size_t len)
{
    m->scratch.len = 0;
    char *dst = (char *)tn_buf_reserve(&m->scratch, len + 1);
    tn_assert(dst); /* MQTT strings are at most 65535 bytes */
    tn_mqtt_to_core(p, len, dst);
    dst[len] = '\0';
    return dst;
}

static void close_now(mconn *c);

int
tn_mqtt__too_deep(mconn *c, const char *what)
{
    tn_log_warn("MQTT-TOPIC-LEVELS", "%s: %s with more than max_topic_levels (%u) levels, closing",
                c->io->peer(c->ioc), what, tn_broker_get_limits(c->m->broker)->max_topic_levels);
    close_now(c);
    return TN_EPROTO;
}

int
tn_mqtt__out_result(mconn *c, int rc)
{
    if (rc != 0)
        tn_log_warn("MQTT-OUT-FULL",
                    "%s: output buffer full (the client reads too slowly), closing",
                    c->io->peer(c->ioc));
    return rc;
}

static void
release(mconn *c)
{
    c->hold = false;
    if (c->s && tn_session_consumer(c->s))
        tn_queue_consumer_ready(tn_session_consumer(c->s));
}

/* A reply the journal allowed out (tn_broker_reply): flags 1 = release the hold after it. */
static void
reply_send(tn_replies *r, const uint8_t *p, size_t n, uint32_t flags, int status)
{
    mconn *c = TN_CONTAINER_OF(r, mconn, replies);
    if (status != 0) {
        tn_log_warn("MQTT-STORE-FAIL",
                    "%s: the journal cannot be written; closing without confirming",
                    c->io->peer(c->ioc));
        close_now(c);
        return;
    }
    if (c->state == ST_CLOSING)
        return;
    if (tn_buf_append(c->io->out(c->ioc), p, n) != 0) {
        tn_mqtt__out_result(c, TN_ETOOBIG);
        close_now(c);
        return;
    }
    if (flags & 1)
        release(c);
}

int
tn_mqtt__respond(mconn *c, const uint8_t *p, size_t n, bool release_hold)
{
    tn_broker_reply(c->m->broker, &c->replies, p, n, release_hold ? 1 : 0);
    return c->state == ST_CLOSING ? TN_ETOOBIG : 0;
}

int
tn_mqtt__respond_ack(mconn *c, tn_mqtt_type type, uint16_t pid)
{
    uint8_t buf[8];
    tn_buf b = {buf, 0, sizeof buf, sizeof buf};
    tn_assert(tn_mqtt_encode_ack(&b, c->version, type, pid, 0) == 0);
    return tn_mqtt__respond(c, b.data, b.len, false);
}

void
tn_mqtt__tickets_cancel(mconn *c)
{
    tn_replies_cancel(&c->replies);
}

static void
flow_resume(tn_flow *f)
{
    mconn *c = TN_CONTAINER_OF(f, mconn, flow);
    if (c->state != ST_CLOSING)
        c->io->wake(c->ioc);
}

static void *
mqtt_open(void *proto, const tn_io *io, void *ioc)
{
    tn_mqtt *m = proto;
    mconn *c = tn_xcalloc(1, sizeof *c);
    c->m = m;
    c->replies.send = reply_send;
    c->io = io;
    c->ioc = ioc;
    c->state = ST_CONNECT;
    tn_mqtt_decoder_init(&c->dec, TN_MQTT_ROLE_SERVER, m->conf.max_packet);
    tn_flow_init(&c->flow, flow_resume);
    tn_buf_init(&c->deferred, (size_t)m->conf.max_packet * 2 + 65536);
    io->set_deadline(ioc, io->now(ioc) + m->conf.connect_timeout_ms);
    return c;
}

/* Stops the session at once, while what was already written drains: a client that does not read
 * must not hold its session (and the producers waiting on its queue) while the socket closes.
 * Deliveries in the output buffer that it never acknowledges are delivered again later. */
static void
close_now(mconn *c)
{
    c->state = ST_CLOSING;
    c->io->set_deadline(c->ioc, 0);
    c->io->close(c->ioc);
    if (c->s)
        tn_session_detach(c->s);
    c->s = NULL;
}

/* A decode error: answer with CONNACK where the spec gives a code, log once, close. */
static int
decode_error(mconn *c, int rc)
{
    const char *peer = c->io->peer(c->ioc);
    if (rc == TN_ETOOBIG) {
        tn_log_warn("MQTT-TOO-BIG", "%s: packet larger than max_packet_size %u, closing", peer,
                    c->dec.max_packet);
    } else {
        tn_log_warn("MQTT-PROTOCOL", "%s: %s, closing", peer,
                    c->dec.error ? c->dec.error : "malformed packet");
        if (c->state == ST_CONNECT && c->dec.connack_rc >= 0)
            tn_mqtt_encode_connack(c->io->out(c->ioc), TN_MQTT_V311, false,
                                   (uint8_t)c->dec.connack_rc);
    }
    close_now(c);
    return rc;
}

static int
protocol_violation(mconn *c, const char *what)
{
    tn_log_warn("MQTT-PROTOCOL", "%s: %s, closing", c->io->peer(c->ioc), what);
    close_now(c);
    return TN_EPROTO;
}

/* [MQTT-3.1.0-1]: the first packet is CONNECT, which is 0x10 exactly [MQTT-2.2.2-2]; anything
 * else closes the connection as soon as its first byte is read, not once it has all arrived. */
static int
check_first_byte(mconn *c, uint8_t b)
{
    if (b == 0x10)
        return 0;
    tn_log_warn("MQTT-PROTOCOL",
                "%s: first packet is not CONNECT (byte 0x%02x) [MQTT-3.1.0-1], closing",
                c->io->peer(c->ioc), b);
    close_now(c);
    return TN_EPROTO;
}

static int
handle(mconn *c, const tn_mqtt_packet *pkt)
{
    if (c->state == ST_CONNECT && pkt->type != TN_MQTT_CONNECT)
        return protocol_violation(c, "first packet is not CONNECT [MQTT-3.1.0-1]");
    switch (pkt->type) {
    case TN_MQTT_CONNECT:
        if (c->state != ST_CONNECT)
            return protocol_violation(c, "second CONNECT [MQTT-3.1.0-2]");
        return tn_mqtt__connect(c, &pkt->u.connect);
    case TN_MQTT_PUBLISH:
        return tn_mqtt__publish(c, &pkt->u.publish);
    case TN_MQTT_PUBACK:
    case TN_MQTT_PUBREC:
    case TN_MQTT_PUBREL:
    case TN_MQTT_PUBCOMP:
        return tn_mqtt__ack(c, pkt->type, pkt->u.ack.pid);
    case TN_MQTT_SUBSCRIBE:
        return tn_mqtt__subscribe(c, &pkt->u.list);
    case TN_MQTT_UNSUBSCRIBE:
        return tn_mqtt__unsubscribe(c, &pkt->u.list);
    case TN_MQTT_PINGREQ:
        return tn_mqtt__out_result(c, tn_mqtt_encode_simple(c->io->out(c->ioc), TN_MQTT_PINGRESP));
    case TN_MQTT_DISCONNECT:
        c->disconnected = true;
        tn_message_unref(c->will); /* [MQTT-3.14.4-3] */
        c->will = NULL;
        close_now(c);
        return 0;
    default:
        return protocol_violation(c, "unexpected packet type");
    }
}

/* Packets that may be handled while PUBLISHes wait for flow control: they only release
 * deliveries to this client (acks) or keep it alive. Handling them out of order with the waiting
 * PUBLISHes is allowed (the flows are independent), and necessary: a client that publishes and
 * subscribes must get its acks through, or it and its subscribers would wait for each other. */
static bool
urgent(tn_mqtt_type t)
{
    return t == TN_MQTT_PUBACK || t == TN_MQTT_PUBREC || t == TN_MQTT_PUBCOMP ||
           t == TN_MQTT_PINGREQ;
}

/* Handles deferred packets in order until done or blocked again. */
static int
run_deferred(mconn *c)
{
    size_t off = 0;
    int rc = 0;
    while (off < c->deferred.len && !c->flow.blocked && c->state != ST_CLOSING) {
        size_t used = 0;
        tn_mqtt_packet pkt;
        rc = tn_mqtt_decode(&c->dec, c->deferred.data + off, c->deferred.len - off, &used, &pkt);
        tn_assert(rc == 0); /* decoded once already */
        off += used;
        rc = handle(c, &pkt);
        if (rc < 0) {
            if (c->state != ST_CLOSING)
                close_now(c);
            break;
        }
    }
    if (c->state == ST_CLOSING) {
        tn_buf_reset(&c->deferred);
        return rc;
    }
    tn_buf_consume(&c->deferred, off);
    if (c->deferred.len == 0)
        tn_buf_reset(&c->deferred);
    if (c->paused && c->deferred.len == 0) {
        c->paused = false;
        c->io->pause(c->ioc, false);
    }
    return rc;
}

static ssize_t
mqtt_input(void *a, const uint8_t *p, size_t len)
{
    mconn *c = a;
    if (c->deferred.len && !c->flow.blocked) {
        int rc = run_deferred(c);
        if (rc < 0)
            return rc;
    }
    size_t off = 0;
    bool got = false;
    while (off < len && c->state != ST_CLOSING) {
        size_t used = 0;
        tn_mqtt_packet pkt;
        if (c->state == ST_CONNECT && check_first_byte(c, p[off]) != 0)
            return TN_EPROTO;
        int rc = tn_mqtt_decode(&c->dec, p + off, len - off, &used, &pkt);
        if (rc == TN_EAGAIN)
            break;
        if (rc < 0)
            return decode_error(c, rc);
        got = true;
        if ((c->flow.blocked || c->deferred.len) && !urgent(pkt.type)) {
            /* A subscriber is too far behind: keep this packet for later, in order. */
            if (tn_buf_append(&c->deferred, p + off, used) != 0) {
                c->paused = true; /* and stop reading until it drains */
                c->io->pause(c->ioc, true);
                break;
            }
            off += used;
            continue;
        }
        off += used;
        rc = handle(c, &pkt);
        if (rc < 0) {
            if (c->state != ST_CLOSING)
                close_now(c);
            return rc;
        }
    }
    if (c->state == ST_CLOSING)
        return (ssize_t)len;
    if (got && c->state == ST_CONNECTED && c->keepalive_ms)
        c->io->set_deadline(c->ioc, c->io->now(c->ioc) + c->keepalive_ms);
    return (ssize_t)off;
}

static void
mqtt_drained(void *a)
{
    mconn *c = a;
    if (c->s && tn_session_consumer(c->s))
        tn_queue_consumer_ready(tn_session_consumer(c->s));
}

static void
mqtt_timeout(void *a, uint64_t now)
{
    (void)now;
    mconn *c = a;
    if (c->state == ST_CONNECT)
        tn_log_info("MQTT-CONNECT-TIMEOUT", "%s: no CONNECT within %u ms, closing",
                    c->io->peer(c->ioc), c->m->conf.connect_timeout_ms);
    else
        tn_log_info("MQTT-KEEPALIVE", "%s: client %s silent for 1.5 x keepalive, closing",
                    c->io->peer(c->ioc), c->s ? tn_session_id(c->s) : "?");
    close_now(c);
}

void
tn_mqtt__kick(void *ctx)
{
    mconn *c = ctx;
    tn_log_info("MQTT-TAKEOVER", "%s: client id %s connected again elsewhere, closing this one",
                c->io->peer(c->ioc), tn_session_id(c->s));
    tn_session_detach(c->s);
    c->s = NULL;
    close_now(c);
}

static void
mqtt_closed(void *a, int reason)
{
    mconn *c = a;
    if (c->s)
        tn_session_detach(c->s);
    c->s = NULL;
    /* The will goes out on any close not preceded by DISCONNECT [MQTT-3.1.2-8], except when the
     * broker itself is shutting down. */
    if (c->will && reason != TN_CLOSE_SHUTDOWN)
        tn_broker_publish(c->m->broker, c->will, NULL);
    tn_message_unref(c->will);
    tn_mqtt__tickets_cancel(c);
    tn_flow_fini(&c->flow);
    tn_buf_fini(&c->deferred);
    free(c);
}

const tn_adapter_ops tn_mqtt_adapter = {
    .name = "mqtt",
    .open = mqtt_open,
    .input = mqtt_input,
    .drained = mqtt_drained,
    .timeout = mqtt_timeout,
    .closed = mqtt_closed,
};
