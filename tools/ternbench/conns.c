/*
 * One client connection: TCP connect (optionally from a chosen source address), then for MQTT
 * CONNECT, CONNACK, SUBSCRIBE/SUBACK for subscribers, then packets go to pubsub.c; STOMP's
 * frames are stomp.c's, AMQP's bytes go to amqp.c's proton driver. Reads land in one buffer
 * shared by all connections; only the start of an MQTT packet cut by the read is copied to the
 * connection's own buffer (the STOMP decoder and proton keep partial frames themselves). Writes
 * are batched: encoders append to c->out (amqp.c moves proton's output there when the
 * connection is flushed) and the uv_prepare callback flushes every dirty connection with one
 * uv_write. mqtts://, ws:// and wss:// put xport.c between the socket and the MQTT reader and
 * writer (c->x); over plain TCP c->x is NULL and the path is the one above.
 */
#include "tools/ternbench/ternbench.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

void
tn_bench_conn_init(tn_bench *b, tn_bench_conn *c, tn_bench_role role, uint32_t id)
{
    memset(c, 0, sizeof *c);
    c->b = b;
    c->role = role;
    c->id = id;
    c->next_pid = 1;
    tn_buf_init(&c->out, TN_BENCH_MAX_OUT);
    tn_buf_init(&c->wbuf, TN_BENCH_MAX_OUT);
    /* Room for the largest packet we accept plus one read. */
    uint32_t max_packet = b->o.size + 1024 < 65536 ? 65536 : b->o.size + 1024;
    tn_buf_init(&c->in, (size_t)max_packet + TN_BENCH_READ_SIZE);
    tn_mqtt_decoder_init(&c->dec, TN_MQTT_ROLE_CLIENT, max_packet);
    c->dec.version = TN_MQTT_V311;
    if (b->o.proto == TN_BENCH_STOMP)
        tn_bench_stomp_init(c);
}

void
tn_bench_conn_fini(tn_bench_conn *c)
{
    tn_assert(!c->open);
    tn_buf_fini(&c->out);
    tn_buf_fini(&c->wbuf);
    tn_buf_fini(&c->in);
    if (c->b->o.proto == TN_BENCH_STOMP)
        tn_bench_stomp_fini(c);
    tn_bench_amqp_fini(c);
    tn_bench_x_free(c);
    free(c->pid_busy);
    free(c->pid_rel);
    free(c->qos2_held);
    free(c->skip_buf);
    c->pid_busy = c->pid_rel = c->qos2_held = NULL;
    c->skip_buf = NULL;
}

bool
tn_bench_conn_is_active(const tn_bench_conn *c)
{
    return c->open && !uv_is_closing((const uv_handle_t *)&c->tcp);
}

static void
on_close(uv_handle_t *h)
{
    tn_bench_conn *c = h->data;
    c->open = false;
    c->writing = false;
    /* Give the memory back now: the conns scenario closes tens of thousands. */
    tn_buf_reset(&c->out);
    tn_buf_reset(&c->wbuf);
    tn_buf_reset(&c->in);
    if (c->b->o.proto == TN_BENCH_STOMP)
        tn_bench_stomp_fini(c); /* its buffers; it decodes nothing more */
    tn_bench_amqp_fini(c);
    tn_bench_x_free(c);
    tn_bench_on_closed(c);
}

void
tn_bench_conn_abort(tn_bench_conn *c)
{
    if (!tn_bench_conn_is_active(c))
        return;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

void
tn_bench_conn_fail(tn_bench_conn *c, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    if (c->state == TN_BENCH_CS_FAILED)
        return;
    bool closing = c->state == TN_BENCH_CS_CLOSING;
    c->state = TN_BENCH_CS_FAILED;
    tn_bench_conn_abort(c);
    if (closing)
        return; /* we were leaving anyway */
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    tn_bench_on_fail(c, why);
}

void
tn_bench_conn_dirty(tn_bench_conn *c)
{
    if (c->dirty)
        return;
    c->dirty = true;
    c->b->dirty[c->b->n_dirty++] = c;
}

static void
on_write(uv_write_t *req, int status)
{
    tn_bench_conn *c = req->data;
    c->writing = false;
    c->wbuf.len = 0;
    if (status == UV_ECANCELED)
        return; /* closing */
    if (status < 0) {
        tn_bench_conn_fail(c, "write: %s", uv_strerror(status));
        return;
    }
    tn_bench_pub_wrote(c);
    if (c->out.len || (c->x && tn_bench_x_pending(c)))
        tn_bench_conn_dirty(c);
    else if (c->state == TN_BENCH_CS_CLOSING && c->close_when_written)
        tn_bench_conn_abort(c); /* STOMP waits for its DISCONNECT's RECEIPT */
}

void
tn_bench_conn_flush(tn_bench_conn *c)
{
    c->dirty = false;
    if (!tn_bench_conn_is_active(c))
        return;
    if (c->b->o.proto == TN_BENCH_AMQP) {
        tn_bench_amqp_output(c); /* what this turn's sends, accepts and credit produced */
        if (!tn_bench_conn_is_active(c))
            return;
    }
    /* A transport turns c->out into wire bytes (in c->out) right before they are written. */
    if (c->x && !c->writing && tn_bench_x_wrap(c) != 0)
        return;
    if (c->writing || c->out.len == 0)
        return;
    c->last_tx_ms = uv_now(&c->b->loop);
    /* Straight to the kernel when it takes everything: no request, no callback next turn. */
    uv_buf_t ub = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &ub, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        tn_bench_conn_fail(c, "write: %s", uv_strerror(n));
        return;
    }
    if ((size_t)n == c->out.len) {
        c->out.len = 0;
        tn_bench_pub_wrote(c);
        if (c->state == TN_BENCH_CS_CLOSING && c->close_when_written)
            tn_bench_conn_abort(c);
        return;
    }
    /* The rest goes through libuv; encoders keep appending to the other buffer meanwhile. */
    tn_buf t = c->wbuf;
    c->wbuf = c->out;
    c->out = t;
    ub = uv_buf_init((char *)c->wbuf.data + n, (unsigned)(c->wbuf.len - (size_t)n));
    c->write_req.data = c;
    c->writing = true;
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &ub, 1, on_write);
    if (rc != 0) {
        c->writing = false;
        c->wbuf.len = 0;
        tn_bench_conn_fail(c, "write: %s", uv_strerror(rc));
        return;
    }
    if (n > 0)
        tn_bench_pub_wrote(c);
}

void
tn_bench_conn_close(tn_bench_conn *c)
{
    if (!tn_bench_conn_is_active(c))
        return;
    tn_bench_proto proto = c->b->o.proto;
    if (c->state < TN_BENCH_CS_CONNACK || c->state == TN_BENCH_CS_FAILED ||
        (proto != TN_BENCH_MQTT && c->state == TN_BENCH_CS_CONNACK)) {
        tn_bench_conn_abort(c);
        return;
    }
    if (c->state == TN_BENCH_CS_CLOSING)
        return;
    c->state = TN_BENCH_CS_CLOSING;
    if (proto == TN_BENCH_AMQP) {
        tn_bench_amqp_close(c); /* closes the handle once the broker's close is in */
        return;
    }
    c->close_when_written = proto == TN_BENCH_MQTT; /* STOMP: on its DISCONNECT's RECEIPT */
    int rc = proto == TN_BENCH_STOMP ? tn_bench_stomp_disconnect(c)
                                     : tn_mqtt_encode_simple(&c->out, TN_MQTT_DISCONNECT);
    if (rc != 0) {
        tn_bench_conn_abort(c);
        return;
    }
    tn_bench_conn_dirty(c);
}

void
tn_bench_conn_keepalive(tn_bench_conn *c, uint64_t now_ms)
{
    if (c->b->o.proto == TN_BENCH_AMQP) {
        tn_bench_amqp_tick(c, now_ms);
        return;
    }
    uint64_t ka = c->b->o.keepalive;
    if (ka == 0 || c->b->o.proto != TN_BENCH_MQTT || c->state != TN_BENCH_CS_READY || c->stalled ||
        !tn_bench_conn_is_active(c))
        return;
    if (c->writing || c->out.len || now_ms - c->last_tx_ms < ka * 500)
        return;
    if (tn_mqtt_encode_simple(&c->out, TN_MQTT_PINGREQ) == 0)
        tn_bench_conn_dirty(c);
}

/* ---- reading ---- */

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    tn_bench_conn *c = h->data;
    /* --discard: what is left of a message is dropped, not read (on_read handles the message
     * once it is over, even when this leaves nothing to read). */
    tn_bench_skip_drain(c);
    if (c->in.len == 0 || c->x) { /* a transport's bytes are decrypted or deframed first */
        *buf = uv_buf_init((char *)c->b->rbuf, sizeof c->b->rbuf);
        return;
    }
    /* A packet is cut: read straight behind its start. */
    uint8_t *p = tn_buf_reserve(&c->in, TN_BENCH_READ_SIZE);
    *buf = uv_buf_init((char *)p, p ? TN_BENCH_READ_SIZE : 0); /* NULL: read_cb gets ENOBUFS */
}

void
tn_bench_conn_ready(tn_bench_conn *c)
{
    c->state = TN_BENCH_CS_READY;
    c->ready = true;
    tn_bench_on_ready(c);
}

static void
send_subscribe(tn_bench_conn *c)
{
    char topic[32];
    tn_mqtt_bytes filter = tn_bench_sub_filter(c, topic, sizeof topic);
    uint8_t opts = c->b->o.qos;
    if (tn_mqtt_encode_subscribe(&c->out, TN_MQTT_V311, 1, &filter, &opts, 1) != 0) {
        tn_bench_conn_fail(c, "cannot encode SUBSCRIBE");
        return;
    }
    c->state = TN_BENCH_CS_SUBACK;
    c->b->t_subscribe = tn_bench_now_ns();
    tn_bench_conn_dirty(c);
}

static void
on_connack(tn_bench_conn *c, const tn_mqtt_packet *pkt)
{
    if (pkt->type != TN_MQTT_CONNACK) {
        tn_bench_conn_fail(c, "expected CONNACK, got packet type %d", (int)pkt->type);
        return;
    }
    if (pkt->u.connack.rc != TN_MQTT_CONNACK_ACCEPTED) {
        tn_bench_conn_fail(c, "CONNACK refused the connection (return code %u)", pkt->u.connack.rc);
        return;
    }
    if (c->role == TN_BENCH_SUB) {
        send_subscribe(c);
        return;
    }
    tn_bench_conn_ready(c);
}

static void
on_suback(tn_bench_conn *c, const tn_mqtt_packet *pkt)
{
    tn_mqtt_list_iter it;
    tn_mqtt_bytes filter;
    uint8_t rc = TN_MQTT_SUBACK_FAILURE;
    if (pkt->u.list.pid != 1) {
        tn_bench_conn_fail(c, "SUBACK for unknown packet id %u", pkt->u.list.pid);
        return;
    }
    if (tn_mqtt_list_begin(&pkt->u.list, &it))
        tn_mqtt_list_next(&it, TN_MQTT_SUBACK, &filter, &rc);
    if (rc == TN_MQTT_SUBACK_FAILURE) {
        tn_bench_conn_fail(c, "SUBACK refused the subscription");
        return;
    }
    if (rc != c->b->o.qos && c->b->errors_logged++ < 5)
        tn_log_warn("BENCH-SUB-QOS", "subscriber %u: asked for QoS %u, granted %u", c->id,
                    c->b->o.qos, rc);
    tn_bench_conn_ready(c);
}

static void
on_packet(tn_bench_conn *c, const tn_mqtt_packet *pkt, uint64_t now_ns)
{
    switch (c->state) {
    case TN_BENCH_CS_CONNACK:
        on_connack(c, pkt);
        return;
    case TN_BENCH_CS_SUBACK:
        if (pkt->type == TN_MQTT_SUBACK) {
            on_suback(c, pkt);
            return;
        }
        break; /* a persistent session may get its queued messages first */
    case TN_BENCH_CS_READY:
        break;
    default:
        return; /* closing: ignore */
    }
    switch (pkt->type) {
    case TN_MQTT_PINGRESP:
        return;
    case TN_MQTT_PUBLISH:
    case TN_MQTT_PUBACK:
    case TN_MQTT_PUBREC:
    case TN_MQTT_PUBREL:
    case TN_MQTT_PUBCOMP:
        tn_bench_on_packet(c, pkt, now_ns);
        return;
    default:
        c->b->bad++;
        if (c->b->errors_logged++ < 5)
            tn_log_warn("BENCH-UNEXPECTED", "connection %u: unexpected packet type %d", c->id,
                        (int)pkt->type);
    }
}

/* --discard: the message pending since its head came in is over: handle it as if read now. */
void
tn_bench_mqtt_pending(tn_bench_conn *c, uint64_t now_ns)
{
    c->skip_pending = false;
    on_packet(c, &c->skip_pkt, now_ns);
}

/* Decodes the MQTT packets in p[0..len) and acts on them: p is c->in's data (shared false, the
 * read went behind a cut packet's start) or another buffer, whose uncut rest is then kept in
 * c->in. */
static inline void
mqtt_input(tn_bench_conn *c, const uint8_t *p, size_t len, bool shared, uint64_t now)
{
    size_t off = 0;
    bool discard = c->b->o.discard && c->role == TN_BENCH_SUB && c->state == TN_BENCH_CS_READY;
    while (off < len) {
        tn_mqtt_packet pkt;
        size_t used;
        if (c->skip) { /* bytes of a message being dropped that came in before we knew */
            off += tn_bench_skip_take(c, len - off);
            if (tn_bench_skip_done(c)) {
                tn_bench_mqtt_pending(c, now);
                if (!tn_bench_conn_is_active(c))
                    return;
            }
            continue;
        }
        if (discard && tn_bench_skip_mqtt(c, p + off, len - off)) {
            off = len;
            break;
        }
        int rc = tn_mqtt_decode(&c->dec, p + off, len - off, &used, &pkt);
        if (rc == TN_EAGAIN)
            break;
        if (rc != 0) {
            tn_bench_conn_fail(c, "bad packet from the broker: %s",
                               c->dec.error ? c->dec.error : tn_strerror(rc));
            return;
        }
        on_packet(c, &pkt, now);
        off += used;
        if (!tn_bench_conn_is_active(c))
            return;
    }
    if (!shared) {
        tn_buf_consume(&c->in, off);
    } else if (off < len && tn_buf_append(&c->in, p + off, len - off) != 0) {
        tn_bench_conn_fail(c, "out of memory for a partial packet");
        return;
    }
    if (c->skip) {
        tn_bench_skip_drain(c);
        if (tn_bench_skip_done(c))
            tn_bench_mqtt_pending(c, tn_bench_now_ns());
    }
}

void
tn_bench_mqtt_stream(tn_bench_conn *c, const uint8_t *p, size_t len, uint64_t now_ns)
{
    if (c->in.len == 0) {
        mqtt_input(c, p, len, true, now_ns);
        return;
    }
    if (tn_buf_append(&c->in, p, len) != 0) {
        tn_bench_conn_fail(c, "packet larger than %zu bytes", c->in.max - TN_BENCH_READ_SIZE);
        return;
    }
    mqtt_input(c, c->in.data, c->in.len, false, now_ns);
}

static void
on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    tn_bench_conn *c = s->data;
    if (c->b->o.proto == TN_BENCH_AMQP) {
        if (n > 0)
            tn_bench_amqp_input(c, (const uint8_t *)buf->base, (size_t)n, tn_bench_now_ns());
        else if (n < 0)
            tn_bench_amqp_read_error(c, (int)n);
        return;
    }
    if (c->x) { /* TLS or WebSocket: decrypted, deframed, then mqtt_input */
        if (n > 0)
            tn_bench_x_input(c, (uint8_t *)buf->base, (size_t)n);
        else if (n < 0)
            tn_bench_conn_fail(c, "%s", n == UV_EOF ? "closed by the broker" : uv_strerror((int)n));
        return;
    }
    if (tn_bench_skip_done(c)) { /* its last bytes went in on_alloc */
        if (c->b->o.proto == TN_BENCH_STOMP)
            tn_bench_stomp_pending(c, tn_bench_now_ns());
        else
            tn_bench_mqtt_pending(c, tn_bench_now_ns());
        if (!tn_bench_conn_is_active(c))
            return;
    }
    if (n == 0)
        return;
    if (n < 0) {
        if (n == UV_ENOBUFS)
            tn_bench_conn_fail(c, "packet larger than %zu bytes", c->in.max);
        else
            tn_bench_conn_fail(c, "%s", n == UV_EOF ? "closed by the broker" : uv_strerror((int)n));
        return;
    }
    bool shared = (uint8_t *)buf->base == c->b->rbuf;
    const uint8_t *p;
    size_t len, off = 0;
    if (shared) {
        p = c->b->rbuf;
        len = (size_t)n;
    } else {
        tn_buf_commit(&c->in, (size_t)n);
        p = c->in.data;
        len = c->in.len;
    }
    /* One clock read per read: the packets in it arrived together. */
    uint64_t now = tn_bench_now_ns();
    if (c->b->o.proto == TN_BENCH_STOMP) {
        /* Takes it all (c->in stays empty) but, under --discard, a MESSAGE's start. */
        off = tn_bench_stomp_input(c, p, len, now);
        if (!tn_bench_conn_is_active(c))
            return;
        if (!shared)
            tn_buf_consume(&c->in, off);
        else if (off < len && tn_buf_append(&c->in, p + off, len - off) != 0)
            tn_bench_conn_fail(c, "out of memory for a partial frame");
        return;
    }
    mqtt_input(c, p, len, shared, now);
}

static void
on_connect(uv_connect_t *req, int status)
{
    tn_bench_conn *c = req->data;
    if (status == UV_ECANCELED)
        return;
    if (status < 0) {
        tn_bench_conn_fail(c, "connect to %s://%s:%u: %s", c->b->o.scheme, c->b->o.host,
                           ntohs(c->b->o.addr.sin_port), uv_strerror(status));
        return;
    }
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc != 0) {
        tn_bench_conn_fail(c, "read: %s", uv_strerror(rc));
        return;
    }
    if (c->b->o.tls || c->b->o.ws) {
        tn_bench_x_start(c); /* then tn_bench_conn_session(), once the transport is up */
        return;
    }
    tn_bench_conn_session(c);
}

void
tn_bench_conn_session(tn_bench_conn *c)
{
    tn_bench *b = c->b;
    if (b->o.proto == TN_BENCH_AMQP) {
        c->state = TN_BENCH_CS_CONNACK; /* until the open (idle) or the link's attach */
        if (tn_bench_amqp_connect(c) != 0)
            tn_bench_conn_fail(c, "cannot set up the AMQP connection (out of memory)");
        return;
    }
    if (b->o.proto == TN_BENCH_STOMP) {
        if (tn_bench_stomp_connect(c) != 0) {
            tn_bench_conn_fail(c, "cannot encode CONNECT");
            return;
        }
        c->state = TN_BENCH_CS_CONNACK;
        tn_bench_conn_dirty(c);
        return;
    }
    char id[96];
    static const char roles[] = {'p', 's', 'c'};
    int len = snprintf(id, sizeof id, "%s-%c%u", b->o.prefix, roles[c->role], c->id);
    tn_mqtt_connect cn = {
        .version = TN_MQTT_V311,
        .clean = c->role == TN_BENCH_SUB ? !b->o.persistent : true,
        .keepalive = b->o.keepalive,
        .client_id = {(const uint8_t *)id, (uint32_t)len},
    };
    if (tn_mqtt_encode_connect(&c->out, &cn) != 0) {
        tn_bench_conn_fail(c, "cannot encode CONNECT");
        return;
    }
    c->state = TN_BENCH_CS_CONNACK;
    tn_bench_conn_dirty(c);
}

void
tn_bench_conn_start(tn_bench_conn *c)
{
    tn_bench *b = c->b;
    int rc = uv_tcp_init_ex(&b->loop, &c->tcp, AF_INET);
    if (rc != 0) {
        c->state = TN_BENCH_CS_FAILED;
        tn_bench_on_fail(c, uv_strerror(rc));
        return;
    }
    c->open = true;
    c->tcp.data = c;
    c->connect_req.data = c;
    c->state = TN_BENCH_CS_CONNECTING;
    b->n_open++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (b->o.src_n) {
        /* Without IP_BIND_ADDRESS_NO_PORT, bind() picks the port before the destination is
         * known, which caps each source address at the ephemeral range once more. */
        uv_os_fd_t fd;
        int one = 1;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(b->o.src_first + b->src_next++ % b->o.src_n);
        rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&src, 0);
        if (rc != 0) {
            tn_bench_conn_fail(c, "bind: %s", uv_strerror(rc));
            return;
        }
    }
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&b->o.addr, on_connect);
    if (rc != 0)
        tn_bench_conn_fail(c, "connect: %s", uv_strerror(rc));
}
