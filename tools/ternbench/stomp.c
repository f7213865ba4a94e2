/*
 * STOMP 1.2 for ternbench: the frames of one client connection. conns.c owns the socket, the
 * reads and the batched writes, pubsub.c the windows and the bookkeeping; this file turns them
 * into frames and back, with protocols/stomp/codec.h in the client role. Spec:
 * https://stomp.github.io/stomp-specification-1.2.html (sections quoted below).
 *
 *   CONNECT    accept-version:1.2, host, heart-beat:0,0     -> CONNECTED, version:1.2
 *   SUBSCRIBE  id:0, destination, ack, receipt:sub           -> RECEIPT receipt-id:sub: ready
 *              (client-individual: activemq.prefetchSize = --inflight, ActiveMQ's name for
 *              the unacknowledged messages it may push; other brokers ignore it)
 *   SEND       destination, receipt:<id>, persistent:true    -> RECEIPT receipt-id:<id>
 *              (--persistent), content-length (the payload is binary)
 *   MESSAGE    -> ACK id:<its ack header> under client-individual ("ACK": 1.2 acknowledges by
 *              the MESSAGE's ack header, not by message-id as 1.1 did)
 *   ERROR      in any state fails the connection, quoting its message header
 *   DISCONNECT receipt:bye                                   -> RECEIPT: close (the graceful
 *              shutdown of "DISCONNECT": the broker has then read every ACK sent before)
 *
 * Heart-beats are off: runs are short, busy and bounded by --duration, and a missed beat would
 * only add a failure mode that measures nothing. A SEND's receipt id is the packet id pubsub.c
 * takes from the publisher's window for MQTT, so "in flight" is counted the same way for both
 * protocols: sent and not yet confirmed.
 */
#include "tools/ternbench/ternbench.h"

#include <stdio.h>
#include <string.h>

#define SUB_RECEIPT "sub"
#define BYE_RECEIPT "bye"

void
tn_bench_stomp_init(tn_bench_conn *c)
{
    /* MESSAGE bodies are our payloads; ERROR bodies (a stack trace at worst) fit in 64 KiB. */
    uint32_t size = c->b->o.size;
    tn_stomp_limits lim = {
        .max_line = TN_STOMP_DEFAULT_MAX_LINE,
        .max_headers = TN_STOMP_DEFAULT_MAX_HEADERS,
        .max_header_bytes = TN_STOMP_DEFAULT_MAX_HEADER_BYTES,
        .max_body = size < 65536 ? 65536 : size,
    };
    tn_stomp_decoder_init(&c->sdec, TN_STOMP_ROLE_CLIENT, &lim);
    c->stomp_between = true;
}

void
tn_bench_stomp_fini(tn_bench_conn *c)
{
    tn_stomp_decoder_fini(&c->sdec);
}

/* Writes v in decimal to buf (at least 20 bytes); returns the length. */
static size_t
put_u64(char *buf, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

static void
header(tn_stomp_encoder *e, const char *name, const char *value)
{
    tn_stomp_encode_header(e, name, strlen(name), value, strlen(value));
}

int
tn_bench_stomp_connect(tn_bench_conn *c)
{
    tn_stomp_encoder e;
    /* CONNECT is never escaped; the version only has to be one the encoder knows. */
    tn_stomp_encode_begin(&e, &c->out, TN_STOMP_V12, TN_STOMP_CONNECT);
    header(&e, "accept-version", "1.2");
    header(&e, "host", c->b->o.host);
    header(&e, "heart-beat", "0,0");
    return tn_stomp_encode_end(&e, NULL, 0, false);
}

int
tn_bench_stomp_disconnect(tn_bench_conn *c)
{
    tn_stomp_encoder e;
    tn_stomp_encode_begin(&e, &c->out, TN_STOMP_V12, TN_STOMP_DISCONNECT);
    header(&e, "receipt", BYE_RECEIPT);
    return tn_stomp_encode_end(&e, NULL, 0, false);
}

int
tn_bench_stomp_send(tn_bench_conn *c, uint16_t receipt, const uint8_t *body, size_t len)
{
    tn_stomp_encoder e;
    char id[20];
    tn_stomp_encode_begin(&e, &c->out, TN_STOMP_V12, TN_STOMP_SEND);
    tn_stomp_encode_header(&e, "destination", 11, c->topic, c->topic_len);
    if (receipt)
        tn_stomp_encode_header(&e, "receipt", 7, id, put_u64(id, receipt));
    if (c->b->o.persistent)
        tn_stomp_encode_header(&e, "persistent", 10, "true", 4);
    return tn_stomp_encode_end(&e, body, len, true);
}

static void
send_subscribe(tn_bench_conn *c)
{
    const tn_bench_opts *o = &c->b->o;
    char dest[32], prefetch[20];
    tn_mqtt_bytes d = tn_bench_sub_filter(c, dest, sizeof dest);
    bool individual = o->ack == TN_BENCH_ACK_CLIENT_INDIVIDUAL;
    tn_stomp_encoder e;
    tn_stomp_encode_begin(&e, &c->out, TN_STOMP_V12, TN_STOMP_SUBSCRIBE);
    header(&e, "id", "0");
    tn_stomp_encode_header(&e, "destination", 11, (const char *)d.p, d.len);
    header(&e, "ack", individual ? "client-individual" : "auto");
    if (individual)
        tn_stomp_encode_header(&e, "activemq.prefetchSize", 21, prefetch,
                               put_u64(prefetch, o->inflight));
    header(&e, "receipt", SUB_RECEIPT);
    if (tn_stomp_encode_end(&e, NULL, 0, false) != 0) {
        tn_bench_conn_fail(c, "cannot encode SUBSCRIBE");
        return;
    }
    c->state = TN_BENCH_CS_SUBACK;
    tn_bench_conn_dirty(c);
}

/* ERROR ends the connection ("ERROR": the server closes it after sending one). Its message
 * header is the short reason; the body's first line often adds the detail (ActiveMQ puts its
 * exception there). */
static void
on_error_frame(tn_bench_conn *c, const tn_stomp_frame *f)
{
    const char *msg = tn_stomp_header(f, "message");
    const char *rid = tn_stomp_header(f, "receipt-id");
    char detail[160];
    size_t n = 0;
    for (; n < f->body_len && n < sizeof detail - 1; n++) {
        uint8_t ch = f->body[n];
        if (ch == '\n' || ch == '\r' || ch == '\0')
            break;
        detail[n] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    detail[n] = '\0';
    if (msg && strstr(detail, msg))
        detail[0] = '\0'; /* it only repeats the message */
    tn_bench_conn_fail(
        c, "ERROR frame from the broker: %s%s%s%s%s", msg ? msg : "(no message header)",
        detail[0] ? " (" : "", detail, detail[0] ? ")" : "",
        rid ? (strcmp(rid, SUB_RECEIPT) == 0 ? ", answering SUBSCRIBE" : ", answering a SEND")
            : "");
}

static void
on_connected(tn_bench_conn *c, const tn_stomp_frame *f)
{
    if (f->command != TN_STOMP_CONNECTED) {
        tn_bench_conn_fail(c, "expected CONNECTED, got %s", tn_stomp_command_name(f->command));
        return;
    }
    /* "Protocol Negotiation": no version header means 1.0. */
    const char *v = tn_stomp_header(f, "version");
    if (!v || strcmp(v, "1.2") != 0) {
        tn_bench_conn_fail(c, "the broker answered with STOMP %s; ternbench speaks 1.2 only",
                           v ? v : "1.0 (no version header)");
        return;
    }
    /* Header escaping of the frames after CONNECTED ("Value Encoding"). */
    tn_stomp_decoder_set_version(&c->sdec, TN_STOMP_V12);
    if (c->role == TN_BENCH_SUB)
        send_subscribe(c);
    else
        tn_bench_conn_ready(c);
}

static void
on_message(tn_bench_conn *c, const tn_stomp_frame *f, uint64_t now_ns)
{
    if (c->role != TN_BENCH_SUB) {
        tn_bench_bad(c, "MESSAGE to a connection that did not subscribe");
        return;
    }
    if (c->b->o.ack == TN_BENCH_ACK_CLIENT_INDIVIDUAL) {
        size_t len;
        const char *id = tn_stomp_header_n(f, "ack", 3, &len);
        if (!id) {
            tn_bench_bad(c, "MESSAGE without an ack header under client-individual");
        } else {
            tn_stomp_encoder e;
            tn_stomp_encode_begin(&e, &c->out, TN_STOMP_V12, TN_STOMP_ACK);
            tn_stomp_encode_header(&e, "id", 2, id, len);
            if (tn_stomp_encode_end(&e, NULL, 0, false) != 0)
                tn_bench_bad(c, "cannot encode ACK (output buffer full?)");
            tn_bench_conn_dirty(c);
        }
    }
    tn_bench_on_payload(c, f->body, f->body_len, now_ns);
}

static void
on_receipt(tn_bench_conn *c, const tn_stomp_frame *f, uint64_t now_ns)
{
    size_t len;
    const char *rid = tn_stomp_header_n(f, "receipt-id", 10, &len);
    uint32_t id = 0;
    for (size_t i = 0; rid && i < len && id <= 65535; i++)
        id = rid[i] >= '0' && rid[i] <= '9' ? id * 10 + (uint32_t)(rid[i] - '0') : 65536;
    if (!rid || len == 0 || id == 0 || id > 65535) {
        tn_bench_bad(c, "RECEIPT without a receipt-id ternbench sent");
        return;
    }
    tn_bench_on_receipt(c, (uint16_t)id, now_ns);
}

static void
on_frame(tn_bench_conn *c, const tn_stomp_frame *f, uint64_t now_ns)
{
    if (f->command == TN_STOMP_ERROR) {
        on_error_frame(c, f);
        return;
    }
    switch (c->state) {
    case TN_BENCH_CS_CONNACK:
        on_connected(c, f);
        return;
    case TN_BENCH_CS_SUBACK:
        if (f->command == TN_STOMP_RECEIPT) {
            const char *rid = tn_stomp_header(f, "receipt-id");
            if (rid && strcmp(rid, SUB_RECEIPT) == 0) {
                tn_bench_conn_ready(c);
                return;
            }
        }
        break; /* a queue may hand out what an earlier run left before the RECEIPT */
    case TN_BENCH_CS_READY:
        break;
    case TN_BENCH_CS_CLOSING:
        if (f->command == TN_STOMP_RECEIPT) {
            const char *rid = tn_stomp_header(f, "receipt-id");
            if (rid && strcmp(rid, BYE_RECEIPT) == 0)
                tn_bench_conn_abort(c);
        }
        return; /* the run is over: the rest is ignored */
    default:
        return;
    }
    switch (f->command) {
    case TN_STOMP_MESSAGE:
        on_message(c, f, now_ns);
        return;
    case TN_STOMP_RECEIPT:
        on_receipt(c, f, now_ns);
        return;
    default:
        tn_bench_bad(c,
                     f->command == TN_STOMP_CONNECTED ? "a second CONNECTED" : "unexpected frame");
        return;
    }
}

/* --discard: the MESSAGE pending since its head came in is over: handle it as if read now. */
void
tn_bench_stomp_pending(tn_bench_conn *c, uint64_t now_ns)
{
    c->skip_pending = false;
    on_frame(c, &c->skip_frame, now_ns);
}

size_t
tn_bench_stomp_input(tn_bench_conn *c, const uint8_t *p, size_t len, uint64_t now_ns)
{
    size_t off = 0;
    bool discard = c->b->o.discard && c->role == TN_BENCH_SUB && c->state == TN_BENCH_CS_READY;
    while (off < len) {
        tn_stomp_frame f;
        size_t used;
        if (c->skip) { /* bytes of a MESSAGE being dropped that came in before we knew */
            off += tn_bench_skip_take(c, len - off);
            if (tn_bench_skip_done(c)) {
                tn_bench_stomp_pending(c, now_ns);
                if (!tn_bench_conn_is_active(c))
                    return len;
            }
            continue;
        }
        if (discard && c->stomp_between) {
            /* EOLs between frames (heart-beats, the optional ones after a NUL) are ours to
             * skip here: the decoder would keep a lone one as a partial frame. */
            while (off < len &&
                   (p[off] == '\n' || (p[off] == '\r' && off + 1 < len && p[off + 1] == '\n')))
                off += p[off] == '\r' ? 2 : 1;
            if (off == len)
                break;
            if (p[off] == '\r' && off + 1 == len)
                return off; /* the rest of a CRLF: next read */
            int skip = tn_bench_skip_stomp(c, p + off, len - off);
            if (skip == TN_BENCH_SKIP_WAIT)
                return off;
            if (skip == TN_BENCH_SKIP_YES) {
                off = len;
                break;
            }
        }
        int rc = tn_stomp_decode(&c->sdec, p + off, len - off, &used, &f);
        if (rc == TN_EAGAIN) {
            c->stomp_between = false;
            return len; /* all taken; the decoder keeps the partial frame */
        }
        if (rc != 0) {
            tn_bench_conn_fail(c, "bad frame from the broker: %s",
                               c->sdec.error ? c->sdec.error : tn_strerror(rc));
            return len;
        }
        c->stomp_between = true;
        off += used;
        on_frame(c, &f, now_ns);
        if (!tn_bench_conn_is_active(c))
            return len;
    }
    if (c->skip) {
        tn_bench_skip_drain(c);
        if (tn_bench_skip_done(c))
            tn_bench_stomp_pending(c, tn_bench_now_ns());
    }
    return len;
}
