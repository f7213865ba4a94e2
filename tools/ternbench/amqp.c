/*
 * AMQP 1.0 for ternbench: one client connection driven by qpid-proton's connection driver
 * (proton/connection_driver.h) on ternbench's own loop, without proton's proactor. conns.c owns
 * the socket, the reads and the batched writes; this file feeds the bytes read to the driver,
 * handles its events and moves its output to c->out, which the loop turn's flush writes. Spec:
 * OASIS AMQP 1.0 (sections quoted below as "part.section").
 *
 *   connect     SASL ANONYMOUS (or PLAIN with --user), open (container id STR-p<i>/-s<j>/-c<k>,
 *               hostname from --url), begin; a publisher attaches one sending link to its
 *               address, a subscriber one receiving link and grants it --credit: ready once the
 *               broker's attach names the terminus (a refused link is attached with a null one
 *               and detached with the error, 2.6.3)
 *   publisher   transfers unsettled (snd-settle-mode unsettled, rcv-settle-mode first), at most
 *               --inflight awaiting their disposition and never past the link credit; the
 *               delivery tag is a packet id from pubsub.c's window, so "in flight" is counted as
 *               for MQTT QoS 1; the disposition (accepted, settled) frees it (a rejected,
 *               released or modified message is counted as bad: it is not sent again)
 *   subscriber  each transfer is accepted and settled (at-least-once); the credit is topped up
 *               to --credit once half of it is used
 *   close       close frame; the broker's close finishes the driver, then the socket closes
 *
 * The message is encoded by hand, once per publisher: an optional header section with
 * durable=true (--persistent) and one data section holding the payload (3.2). A transfer is
 * then two pn_link_send() calls (the sections' head, the payload pubsub.c has just patched) and
 * pn_link_advance(): no pn_message, no allocation per message but proton's own (its deliveries
 * and their buffers are pooled). A received message is walked section by section (brokers add
 * a header and message annotations) to the data section's bytes.
 */
#include "tools/ternbench/ternbench.h"

#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Section descriptors (3.2) and the format codes used here (1.6). */
#define HEADER_SECTION 0x70
#define DATA_SECTION 0x75
#define PUMP_ROUNDS 64 /* events then output, repeated while output comes out */

struct tn_bench_amqp {
    pn_connection_driver_t d;
    pn_link_t *link;  /* NULL for an idle connection (conns scenario) */
    uint64_t now_ns;  /* the read being handled; 0: read the clock when needed */
    uint8_t head[16]; /* publisher: header section and the data section's head */
    size_t head_len;
    uint8_t *rx; /* subscriber: one received message */
    size_t rx_max;
};

static uint64_t
now_of(tn_bench_amqp *a)
{
    return a->now_ns ? a->now_ns : tn_bench_now_ns();
}

/* "name: description" of a condition, or `none` when it is not set. */
static const char *
condition_text(pn_condition_t *cond, const char *none, char *buf, size_t size)
{
    if (!cond || !pn_condition_is_set(cond))
        return none;
    const char *name = pn_condition_get_name(cond);
    const char *desc = pn_condition_get_description(cond);
    snprintf(buf, size, "%s%s%s", name ? name : "(no condition name)", desc ? ": " : "",
             desc ? desc : "");
    return buf;
}

/* ---- decoding what a broker sends (1.2 "Type Encodings") ---- */

/* Bytes of the encoded value at p[0..n) (constructor included), or 0 when it does not fit. */
static size_t
value_size(const uint8_t *p, size_t n, int depth)
{
    if (n == 0 || depth > 16)
        return 0;
    uint8_t code = p[0];
    if (code == 0x00) { /* described: descriptor, then the value */
        size_t d = value_size(p + 1, n - 1, depth + 1);
        if (d == 0)
            return 0;
        size_t v = value_size(p + 1 + d, n - 1 - d, depth + 1);
        return v ? 1 + d + v : 0;
    }
    size_t need;
    switch (code >> 4) { /* the width subcategory (1.2: fixed, variable, compound, array) */
    case 0x4:
        need = 1;
        break;
    case 0x5:
        need = 2;
        break;
    case 0x6:
        need = 3;
        break;
    case 0x7:
        need = 5;
        break;
    case 0x8:
        need = 9;
        break;
    case 0x9:
        need = 17;
        break;
    case 0xa:
    case 0xc:
    case 0xe:
        if (n < 2)
            return 0;
        need = 2 + (size_t)p[1];
        break;
    case 0xb:
    case 0xd:
    case 0xf:
        if (n < 5)
            return 0;
        need = 5 + ((size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4]);
        break;
    default:
        return 0;
    }
    return need <= n ? need : 0;
}

/* The section code of the descriptor at p[0..n) (a small or full ulong; a symbolic descriptor
 * gives 0 except amqp:data:binary); *used: the descriptor's bytes. -1 when malformed. */
static int
section_code(const uint8_t *p, size_t n, size_t *used)
{
    static const char data_sym[] = "amqp:data:binary";
    size_t d = value_size(p, n, 0);
    if (d == 0)
        return -1;
    *used = d;
    if (p[0] == 0x53 && d == 2)
        return p[1];
    if (p[0] == 0x80 && d == 9)
        return memcmp(p + 1, "\0\0\0\0\0\0\0", 7) == 0 ? p[8] : 0;
    if ((p[0] == 0xa3 && d == 2 + sizeof data_sym - 1 &&
         memcmp(p + 2, data_sym, sizeof data_sym - 1) == 0) ||
        (p[0] == 0xb3 && d == 5 + sizeof data_sym - 1 &&
         memcmp(p + 5, data_sym, sizeof data_sym - 1) == 0))
        return DATA_SECTION;
    return 0;
}

/* The first data section's binary in message m[0..n); false when there is none. */
static bool
find_data(const uint8_t *m, size_t n, const uint8_t **body, size_t *len)
{
    size_t off = 0;
    while (off < n) {
        if (m[off] != 0x00)
            return false; /* every section is a described type */
        size_t dlen;
        int code = section_code(m + off + 1, n - off - 1, &dlen);
        if (code < 0)
            return false;
        const uint8_t *v = m + off + 1 + dlen;
        size_t left = n - off - 1 - dlen;
        size_t vlen = value_size(v, left, 0);
        if (vlen == 0)
            return false;
        if (code == DATA_SECTION) {
            if (v[0] == 0xa0) {
                *body = v + 2;
                *len = vlen - 2;
                return true;
            }
            if (v[0] == 0xb0) {
                *body = v + 5;
                *len = vlen - 5;
                return true;
            }
            return false;
        }
        off += 1 + dlen + vlen;
    }
    return false;
}

/* ---- events ---- */

static void
link_ready(tn_bench_conn *c, pn_link_t *l)
{
    /* A refused link is attached with a null terminus and detached right after (2.6.3): wait
     * for the detach and its error. */
    pn_terminus_t *t = pn_link_is_sender(l) ? pn_link_remote_target(l) : pn_link_remote_source(l);
    if (pn_terminus_get_type(t) == PN_UNSPECIFIED)
        return;
    if (c->state == TN_BENCH_CS_CONNACK)
        tn_bench_conn_ready(c);
}

/* A transfer to subscriber c: accept it, settle it, count it. */
static void
on_transfer(tn_bench_conn *c, pn_delivery_t *dv)
{
    tn_bench_amqp *a = c->amqp;
    pn_link_t *l = pn_delivery_link(dv);
    if (pn_delivery_aborted(dv)) { /* 2.6.12: the sender gave up on it */
        pn_delivery_settle(dv);
        tn_bench_bad(c, "aborted transfer");
        return;
    }
    if (!pn_delivery_readable(dv) || pn_delivery_partial(dv))
        return; /* the rest of a multi-frame message is still to come */
    size_t n = pn_delivery_pending(dv);
    bool fits = n <= a->rx_max;
    if (fits) {
        ssize_t got = pn_link_recv(l, (char *)a->rx, n);
        n = got > 0 ? (size_t)got : 0;
    } else {
        char scrap[4096];
        while (pn_link_recv(l, scrap, sizeof scrap) > 0)
            ;
    }
    pn_link_advance(l);
    if (c->state == TN_BENCH_CS_CLOSING)
        return; /* the run is over: left unsettled, the broker keeps it */
    pn_delivery_update(dv, PN_ACCEPTED);
    pn_delivery_settle(dv);
    int credit = pn_link_credit(l);
    uint32_t want = c->b->o.credit;
    if (credit <= (int)(want / 2))
        pn_link_flow(l, (int)want - credit);
    const uint8_t *body;
    size_t len;
    if (!fits)
        tn_bench_bad(c, "message larger than --size + 64 KiB");
    else if (!find_data(a->rx, n, &body, &len))
        tn_bench_bad(c, "message without a data section ternbench can read");
    else
        tn_bench_on_payload(c, body, len, now_of(a));
}

/* The broker's disposition of publisher c's transfer. */
static void
on_disposition(tn_bench_conn *c, pn_delivery_t *dv)
{
    uint64_t state = pn_delivery_remote_state(dv);
    if (state == 0 && !pn_delivery_settled(dv))
        return; /* no outcome yet */
    pn_delivery_tag_t tag = pn_delivery_tag(dv);
    uint16_t id = 0;
    if (tag.size == 2)
        id = (uint16_t)((uint8_t)tag.start[0] << 8 | (uint8_t)tag.start[1]);
    pn_delivery_settle(dv);
    if (state != PN_ACCEPTED && state != 0) {
        tn_bench_bad(c, state == PN_REJECTED   ? "message rejected by the broker"
                        : state == PN_RELEASED ? "message released by the broker"
                                               : "message modified (not taken) by the broker");
    }
    tn_bench_on_receipt(c, id, now_of(c->amqp));
}

/* An error from the broker (or the transport) while c is not closing: fail it. attach: an end
 * of the link or session, which during the set-up names the address it was refused. */
static void
remote_error(tn_bench_conn *c, const char *what, pn_condition_t *cond, bool attach)
{
    char buf[400];
    if (c->state == TN_BENCH_CS_CLOSING)
        return;
    const char *why = condition_text(cond, "no error condition given", buf, sizeof buf);
    if (attach && c->state == TN_BENCH_CS_CONNACK && c->amqp->link) {
        pn_terminus_t *t = pn_link_is_sender(c->amqp->link) ? pn_link_target(c->amqp->link)
                                                            : pn_link_source(c->amqp->link);
        const char *addr = pn_terminus_get_address(t);
        tn_bench_conn_fail(c, "%s (%s, attaching to address %s)", what, why, addr ? addr : "?");
        return;
    }
    tn_bench_conn_fail(c, "%s (%s)", what, why);
}

static void
on_event(tn_bench_conn *c, pn_event_t *e)
{
    tn_bench_amqp *a = c->amqp;
    switch (pn_event_type(e)) {
    case PN_CONNECTION_REMOTE_OPEN:
        if (c->role == TN_BENCH_IDLE && c->state == TN_BENCH_CS_CONNACK)
            tn_bench_conn_ready(c);
        return;
    case PN_LINK_REMOTE_OPEN:
        if (pn_event_link(e) == a->link)
            link_ready(c, a->link);
        return;
    case PN_DELIVERY: {
        pn_delivery_t *dv = pn_event_delivery(e);
        if (pn_delivery_link(dv) != a->link)
            return;
        if (c->role == TN_BENCH_SUB)
            on_transfer(c, dv);
        else if (pn_delivery_updated(dv) || pn_delivery_settled(dv))
            on_disposition(c, dv);
        return;
    }
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH:
        remote_error(c, "link closed by the broker", pn_link_remote_condition(pn_event_link(e)),
                     true);
        return;
    case PN_SESSION_REMOTE_CLOSE:
        remote_error(c, "session ended by the broker",
                     pn_session_remote_condition(pn_event_session(e)), true);
        return;
    case PN_CONNECTION_REMOTE_CLOSE:
        remote_error(c, "connection closed by the broker",
                     pn_connection_remote_condition(pn_event_connection(e)), false);
        return;
    case PN_TRANSPORT_ERROR:
        remote_error(c, "transport error", pn_transport_condition(pn_event_transport(e)), false);
        return;
    case PN_TRANSPORT_CLOSED:
        remote_error(c, "connection closed", pn_transport_condition(pn_event_transport(e)), false);
        return;
    default:
        return;
    }
}

/* Events, then output into c->out, again while output comes out (writing can raise events).
 * The caller flushes c->out or marks c dirty. */
static void
pump(tn_bench_conn *c)
{
    tn_bench_amqp *a = c->amqp;
    bool wrote = false;
    for (int round = 0; round < PUMP_ROUNDS && tn_bench_conn_is_active(c); round++) {
        pn_event_t *e;
        while (tn_bench_conn_is_active(c) && (e = pn_connection_driver_next_event(&a->d)))
            on_event(c, e);
        if (!tn_bench_conn_is_active(c))
            return;
        pn_bytes_t out = pn_connection_driver_write_buffer(&a->d);
        if (out.size == 0)
            break;
        if (tn_buf_append(&c->out, out.start, out.size) != 0) {
            tn_bench_conn_fail(c, "output buffer full (%zu bytes)", c->out.len);
            return;
        }
        pn_connection_driver_write_done(&a->d, out.size);
        wrote = true;
    }
    if (c->state == TN_BENCH_CS_CLOSING && pn_connection_driver_finished(&a->d)) {
        /* Both closes are through: write what is left (the close frame), then close. */
        c->close_when_written = true;
        if (!wrote && !c->writing && c->out.len == 0)
            tn_bench_conn_abort(c);
    }
}

/* pump(), then the output waits for this loop turn's flush. */
static void
pump_out(tn_bench_conn *c)
{
    pump(c);
    if (c->out.len && tn_bench_conn_is_active(c))
        tn_bench_conn_dirty(c);
}

/* ---- the connection ---- */

int
tn_bench_amqp_connect(tn_bench_conn *c)
{
    tn_bench *b = c->b;
    const tn_bench_opts *o = &b->o;
    tn_bench_amqp *a = tn_xcalloc(1, sizeof *a);
    if (pn_connection_driver_init(&a->d, NULL, NULL) != 0) {
        free(a);
        return TN_ENOMEM;
    }
    c->amqp = a;
    pn_connection_t *conn = a->d.connection;
    pn_transport_t *t = a->d.transport;

    char id[96];
    static const char roles[] = {'p', 's', 'c'};
    snprintf(id, sizeof id, "%s-%c%u", o->prefix, roles[c->role], c->id);
    pn_connection_set_container(conn, id);
    pn_connection_set_hostname(conn, o->host);
    /* 5.3: the client side of proton's own SASL does ANONYMOUS and PLAIN; PLAIN over plain TCP
     * must be allowed explicitly. */
    pn_sasl_t *sasl = pn_sasl(t);
    if (o->user) {
        pn_connection_set_user(conn, o->user);
        pn_connection_set_password(conn, o->password ? o->password : "");
        pn_sasl_allowed_mechs(sasl, "PLAIN");
        pn_sasl_set_allow_insecure_mechs(sasl, true);
    } else {
        pn_sasl_allowed_mechs(sasl, "ANONYMOUS");
    }
    pn_connection_open(conn);

    if (c->role != TN_BENCH_IDLE) {
        pn_session_t *ssn = pn_session(conn);
        pn_session_open(ssn);
        char addr[sizeof c->topic];
        if (c->role == TN_BENCH_PUB) {
            a->link = pn_sender(ssn, id);
            pn_terminus_set_address(pn_link_target(a->link), c->topic);
            /* The data section's head: 0xa0 vbin8 or 0xb0 vbin32 (1.6.19). */
            static const uint8_t durable[] = {0x00, 0x53, HEADER_SECTION, 0xc0, 0x02, 0x01, 0x41};
            size_t n = 0;
            if (o->persistent) {
                memcpy(a->head, durable, sizeof durable);
                n = sizeof durable;
            }
            a->head[n++] = 0x00;
            a->head[n++] = 0x53;
            a->head[n++] = DATA_SECTION;
            if (o->size <= 255) {
                a->head[n++] = 0xa0;
                a->head[n++] = (uint8_t)o->size;
            } else {
                a->head[n++] = 0xb0;
                a->head[n++] = (uint8_t)(o->size >> 24);
                a->head[n++] = (uint8_t)(o->size >> 16);
                a->head[n++] = (uint8_t)(o->size >> 8);
                a->head[n++] = (uint8_t)o->size;
            }
            a->head_len = n;
        } else {
            a->link = pn_receiver(ssn, id);
            tn_bench_sub_filter(c, addr, sizeof addr);
            pn_terminus_set_address(pn_link_source(a->link), addr);
            a->rx_max = (size_t)o->size + 65536;
            a->rx = tn_xmalloc(a->rx_max);
        }
        pn_link_set_snd_settle_mode(a->link, PN_SND_UNSETTLED);
        pn_link_set_rcv_settle_mode(a->link, PN_RCV_FIRST);
        pn_link_open(a->link);
        if (c->role == TN_BENCH_SUB)
            pn_link_flow(a->link, (int)o->credit);
    }
    pump_out(c);
    return 0;
}

void
tn_bench_amqp_fini(tn_bench_conn *c)
{
    tn_bench_amqp *a = c->amqp;
    if (!a)
        return;
    pn_connection_driver_destroy(&a->d);
    free(a->rx);
    free(a);
    c->amqp = NULL;
}

int
tn_bench_amqp_send(tn_bench_conn *c, uint16_t tag, const uint8_t *body, size_t len)
{
    tn_bench_amqp *a = c->amqp;
    if (!a || pn_link_credit(a->link) <= 0)
        return TN_EAGAIN;
    char t[2] = {(char)(tag >> 8), (char)tag};
    pn_delivery(a->link, pn_dtag(t, sizeof t));
    pn_link_send(a->link, (const char *)a->head, a->head_len);
    pn_link_send(a->link, (const char *)body, len);
    pn_link_advance(a->link);
    tn_bench_conn_dirty(c);
    return 0;
}

size_t
tn_bench_amqp_input(tn_bench_conn *c, const uint8_t *p, size_t len, uint64_t now_ns)
{
    tn_bench_amqp *a = c->amqp;
    size_t off = 0;
    a->now_ns = now_ns;
    while (off < len && tn_bench_conn_is_active(c)) {
        /* (pn_connection_driver_read_buffer_sized gave 0 bytes with room left in 0.37.) */
        pn_rwbytes_t in = pn_connection_driver_read_buffer(&a->d);
        if (in.size == 0) {
            if (!pn_connection_driver_read_closed(&a->d))
                tn_bench_conn_fail(c, "proton takes no more input");
            break; /* read side closed: the close is being handled */
        }
        size_t n = in.size < len - off ? in.size : len - off;
        memcpy(in.start, p + off, n);
        pn_connection_driver_read_done(&a->d, n);
        off += n;
        pump_out(c);
    }
    a->now_ns = 0;
    return len;
}

void
tn_bench_amqp_read_error(tn_bench_conn *c, int status)
{
    tn_bench_amqp *a = c->amqp;
    const char *what = status == UV_EOF ? "closed by the broker" : uv_strerror(status);
    if (a && c->state != TN_BENCH_CS_CLOSING) {
        pn_connection_driver_read_close(&a->d);
        pump(c); /* a transport error carrying the reason fails c */
    }
    if (c->state == TN_BENCH_CS_CLOSING && status == UV_EOF)
        tn_bench_conn_abort(c); /* the broker closed first: the run is over anyway */
    else
        tn_bench_conn_fail(c, "%s", what);
}

void
tn_bench_amqp_output(tn_bench_conn *c)
{
    if (c->amqp)
        pump(c);
}

void
tn_bench_amqp_close(tn_bench_conn *c)
{
    tn_bench_amqp *a = c->amqp;
    pn_connection_close(a->d.connection);
    pump_out(c);
}

void
tn_bench_amqp_tick(tn_bench_conn *c, uint64_t now_ms)
{
    tn_bench_amqp *a = c->amqp;
    if (!a || !tn_bench_conn_is_active(c) ||
        pn_transport_get_remote_idle_timeout(a->d.transport) == 0)
        return;
    pn_transport_tick(a->d.transport, (int64_t)now_ms);
    pump_out(c);
}
