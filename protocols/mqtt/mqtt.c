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
    if (!m->conf.large_min)
        m->conf.large_min = LARGE_PUBLISH;
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
tn_mqtt__too_big(mconn *c, size_t n)
{
    tn_log_warn("MQTT-TOO-BIG",
                "%s: PUBLISH with a %zu byte payload, over max_message_size (%u), closing",
                c->io->peer(c->ioc), n, c->m->conf.max_message);
    close_now(c);
    return TN_ETOOBIG;
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

/* Room for a large PUBLISH was granted: go on reading it. */
static void
intake_resume(tn_intake *t)
{
    mconn *c = TN_CONTAINER_OF(t, big_in, intake)->c;
    if (c->state != ST_CLOSING)
        c->io->wake(c->ioc);
}

/* The decoder takes packets up to the largest PUBLISH (payload, topic, packet id and the
 * fixed header); other packets are held to max_packet by the adapter. */
static uint32_t
decoder_limit(const tn_mqtt_conf *conf)
{
    uint64_t l = (uint64_t)conf->max_message + 65535 + 2 + 2 + 5;
    if (l < conf->max_packet)
        l = conf->max_packet;
    return l > 268435455u + 5 ? 268435455u + 5 : (uint32_t)l;
}

static void *
mqtt_open(void *proto, const tn_io *io, void *ioc)
{
    tn_mqtt *m = proto;
    mconn *c = tn_xcalloc(1, sizeof *c);
    c->m = m;
    m->n_conns++;
    c->replies.send = reply_send;
    c->io = io;
    c->ioc = ioc;
    c->state = ST_CONNECT;
    tn_mqtt_decoder_init(&c->dec, TN_MQTT_ROLE_SERVER, decoder_limit(&m->conf));
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
    if (c->big) {
        tn_message_unref(c->big->msg);
        c->big->msg = NULL;
        tn_intake_release(c->m->broker, &c->big->intake);
    }
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
        tn_log_warn("MQTT-TOO-BIG",
                    "%s: packet larger than the largest PUBLISH (%u bytes), closing", peer,
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

/* Sets or clears one reason to stop reading. While reads are paused for the broker's sake, the
 * client cannot be heard: its keep-alive is not timed until they resume. */
static void
set_pause(mconn *c, uint8_t why, bool on)
{
    uint8_t old = c->pauses;
    c->pauses = on ? old | why : old & (uint8_t)~why;
    if (!old == !c->pauses)
        return;
    c->io->pause(c->ioc, c->pauses != 0);
    if (c->state != ST_CONNECTED)
        return;
    if (c->pauses)
        c->io->set_deadline(c->ioc, 0);
    else if (c->keepalive_ms)
        c->io->set_deadline(c->ioc, c->io->now(c->ioc) + c->keepalive_ms);
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
    if (c->deferred.len == 0)
        set_pause(c, PAUSE_DEFERRED, false);
    return rc;
}

/* Copies the next bytes of a large PUBLISH into its message; publishes it once whole. Returns the
 * bytes taken, or a negative TN_E* (closed). */
static ssize_t
big_feed(mconn *c, const uint8_t *p, size_t len)
{
    size_t take = c->big->need - c->big->got;
    if (take > len)
        take = len;
    if (p != c->big->dst + c->big->got) /* else net read it in place (mqtt_read_into) */
        memcpy(c->big->dst + c->big->got, p, take);
    c->big->got += take;
    if (c->keepalive_ms && !c->pauses)
        c->io->set_deadline(c->ioc, c->io->now(c->ioc) + c->keepalive_ms);
    if (c->big->got < c->big->need)
        return (ssize_t)take;
    tn_message *msg = c->big->msg;
    c->big->msg = NULL;
    /* Whole: no longer arriving; its payload stays charged to the budget while it waits in
     * memory for its subscribers. */
    tn_intake_charge(c->m->broker, &c->big->intake, msg);
    int rc = tn_mqtt__publish_message(c, msg, c->big->qos, c->big->pid);
    tn_message_unref(msg);
    if (rc < 0) {
        if (c->state != ST_CLOSING)
            close_now(c);
        return rc;
    }
    return (ssize_t)take;
}

/* Reads the fixed header's remaining length: the packet's whole size in *size, or false while
 * the fixed header is incomplete (or malformed: the decoder says so). */
static bool
peek_size(const uint8_t *p, size_t len, size_t *size)
{
    uint32_t v = 0;
    for (size_t i = 1; i < len && i <= 4; i++) {
        v |= (uint32_t)(p[i] & 0x7f) << (7 * (i - 1));
        if (!(p[i] & 0x80)) {
            *size = 1 + i + v;
            return true;
        }
    }
    return false;
}

enum { BIG_LATER = 1 };

/* A packet other than PUBLISH over max_packet: logs, closes. */
static int
too_big_packet(mconn *c, size_t size)
{
    tn_log_warn("MQTT-TOO-BIG", "%s: packet of %zu bytes, over max_packet_size (%u), closing",
                c->io->peer(c->ioc), size, c->m->conf.max_packet);
    close_now(c);
    return TN_ETOOBIG;
}

/*
 * A PUBLISH at p that has not all arrived: when it is large, starts receiving it straight into
 * its message (*used = its headers) and returns 0. BIG_LATER: read on as usual for now (a small
 * one waits to be whole in the input; a large one's head is not all here yet, or it waits for
 * flow control or for room in the incoming budget, with reads paused). Negative: closed.
 */
static int
big_begin(mconn *c, const uint8_t *p, size_t len, size_t *used)
{
    tn_mqtt_packet pkt;
    size_t hu = 0;
    int rc = tn_mqtt_decode_publish_head(&c->dec, p, len, &hu, &pkt);
    if (rc == TN_EAGAIN)
        return BIG_LATER;
    if (rc != 0)
        return decode_error(c, rc);
    const tn_mqtt_publish *pub = &pkt.u.publish;
    if (pub->payload.len > c->m->conf.max_message)
        return tn_mqtt__too_big(c, pub->payload.len); /* before reading the payload */
    if (pub->payload.len < c->m->conf.large_min)
        return BIG_LATER;
    if (c->flow.blocked || c->deferred.len) {
        /* Not taken in before the packets ahead of it are; flow_resume() wakes us. */
        set_pause(c, PAUSE_FLOW, true);
        return BIG_LATER;
    }
    set_pause(c, PAUSE_FLOW, false);
    tn_mqtt *m = c->m;
    if (!c->big) {
        c->big = tn_xcalloc(1, sizeof *c->big);
        c->big->c = c;
        c->big->intake.resume = intake_resume;
    }
    if (c->big->intake.waiting)
        return BIG_LATER;
    if (c->big->intake.held < pub->payload.len) {
        if (tn_intake_reserve(m->broker, &c->big->intake, pub->payload.len - c->big->intake.held) !=
            0) {
            set_pause(c, PAUSE_INTAKE, true); /* intake_resume() wakes us */
            return BIG_LATER;
        }
    }
    set_pause(c, PAUSE_INTAKE, false);
    const char *name = tn_mqtt__core_name(m, pub->topic.p, pub->topic.len);
    if (!tn_broker_levels_ok(m->broker, name))
        return tn_mqtt__too_deep(c, "PUBLISH topic");
    uint8_t *dst;
    tn_message *msg = tn_message_alloc(name, pub->topic.len, NULL, 0, pub->payload.len, pub->qos,
                                       pub->retain, &dst);
    if (!msg) {
        tn_log_error("MQTT-NOMEM", "%s: out of memory for a %u byte message, closing",
                     c->io->peer(c->ioc), pub->payload.len);
        close_now(c);
        return TN_ENOMEM;
    }
    c->big->msg = msg;
    c->big->dst = dst;
    c->big->got = 0;
    c->big->need = pub->payload.len;
    c->big->pid = pub->pid;
    c->big->qos = pub->qos;
    *used = hu;
    return 0;
}

void
tn_mqtt__auth_done(void *arg)
{
    mconn *c = arg;
    c->auth_ready = true;
    set_pause(c, PAUSE_AUTH, false);
    c->io->wake(c->ioc);
}

/* The standby has taken over or stopped holding: the CONNECT is handled now. */
static void
held_wake(void *arg)
{
    mconn *c = arg;
    tn_broker_unhold(c->m->broker, c->held);
    c->held = NULL;
    c->admitted = true;
    set_pause(c, PAUSE_HELD, false);
    c->io->wake(c->ioc);
}

static ssize_t
mqtt_input(void *a, const uint8_t *p, size_t len)
{
    mconn *c = a;
    if (!c->admitted) {
        /* A standby about to take over holds the client rather than refusing it. */
        if (c->held)
            return 0;
        if ((c->held = tn_broker_hold(c->m->broker, held_wake, c)) != NULL) {
            set_pause(c, PAUSE_HELD, true);
            return 0;
        }
        c->admitted = true;
    }
    if (c->deferred.len && !c->flow.blocked) {
        int rc = run_deferred(c);
        if (rc < 0)
            return rc;
    }
    if ((c->pauses & PAUSE_FLOW) && !c->flow.blocked && !c->deferred.len)
        set_pause(c, PAUSE_FLOW, false);
    size_t off = 0;
    bool got = false;
    if (c->big && c->big->msg) {
        ssize_t n = big_feed(c, p, len);
        if (n < 0)
            return n;
        off = (size_t)n;
    }
    while (off < len && c->state != ST_CLOSING) {
        size_t used = 0;
        tn_mqtt_packet pkt;
        if (c->state == ST_CONNECT && check_first_byte(c, p[off]) != 0)
            return TN_EPROTO;
        int rc = tn_mqtt_decode(&c->dec, p + off, len - off, &used, &pkt);
        if (rc == TN_EAGAIN) {
            /* Not all here: a large PUBLISH is taken in straight into its message; any other
             * packet waits in the input, which must not grow past max_packet for it. */
            size_t size;
            if (c->state == ST_CONNECTED && p[off] >> 4 == TN_MQTT_PUBLISH) {
                rc = big_begin(c, p + off, len - off, &used);
                if (rc < 0)
                    return rc;
                if (rc == 0) {
                    off += used;
                    ssize_t n = big_feed(c, p + off, len - off);
                    if (n < 0)
                        return n;
                    off += (size_t)n;
                    continue;
                }
            } else if (peek_size(p + off, len - off, &size) && size > c->m->conf.max_packet) {
                return too_big_packet(c, size);
            }
            break;
        }
        if (rc < 0)
            return decode_error(c, rc);
        if (pkt.type != TN_MQTT_PUBLISH && pkt.size > c->m->conf.max_packet)
            return too_big_packet(c, pkt.size);
        got = true;
        if ((c->flow.blocked || c->deferred.len) && !urgent(pkt.type)) {
            /* A subscriber is too far behind: keep this packet for later, in order. */
            if (tn_buf_append(&c->deferred, p + off, used) != 0) {
                set_pause(c, PAUSE_DEFERRED, true); /* and stop reading until it drains */
                break;
            }
            off += used;
            continue;
        }
        off += used;
        rc = handle(c, &pkt);
        if (rc == TN_EAGAIN) {
            /* A CONNECT waiting for the authenticator: handled again, whole, once the answer
             * is here (tn_mqtt__auth_done); nothing after it is read meanwhile. */
            off -= used;
            tn_mqtt_decoder_unconnect(&c->dec); /* decoded again: not a second CONNECT */
            set_pause(c, PAUSE_AUTH, true);
            break;
        }
        if (rc < 0) {
            if (c->state != ST_CLOSING)
                close_now(c);
            return rc;
        }
    }
    if (c->state == ST_CLOSING)
        return (ssize_t)len;
    if (got && c->state == ST_CONNECTED && c->keepalive_ms && !c->pauses)
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
    c->m->n_conns--;
    tn_broker_unhold(c->m->broker, c->held);
    if (c->auth_job)
        c->m->conf.auth.cancel(c->m->conf.auth.ctx, c->auth_job);
    free(c->user);
    if (c->s)
        tn_session_detach(c->s);
    c->s = NULL;
    if (c->big) {
        tn_message_unref(c->big->msg);
        tn_intake_release(c->m->broker, &c->big->intake);
        free(c->big);
    }
    /* The will goes out on any close not preceded by DISCONNECT [MQTT-3.1.2-8], except when the
     * broker itself is shutting down. */
    if (c->will && reason != TN_CLOSE_SHUTDOWN)
        if (tn_broker_may(c->m->broker, c->user, c->s ? tn_session_id(c->s) : NULL, false,
                          c->will->name, TN_MAY_WRITE, false))
            tn_broker_publish(c->m->broker, c->will, NULL);
    tn_message_unref(c->will);
    tn_mqtt__tickets_cancel(c);
    tn_flow_fini(&c->flow);
    tn_buf_fini(&c->deferred);
    free(c);
}

/* The rest of a large PUBLISH's payload goes straight into its message. */
static uint8_t *
mqtt_read_into(void *a, size_t *len)
{
    mconn *c = a;
    if (!c->big || !c->big->msg || c->state == ST_CLOSING)
        return NULL;
    *len = c->big->need - c->big->got;
    return c->big->dst + c->big->got;
}

const tn_adapter_ops tn_mqtt_adapter = {
    .name = "mqtt",
    .open = mqtt_open,
    .input = mqtt_input,
    .drained = mqtt_drained,
    .timeout = mqtt_timeout,
    .closed = mqtt_closed,
    .read_into = mqtt_read_into,
};

uint32_t
tn_mqtt_connections(const tn_mqtt *m)
{
    return m->n_conns;
}
