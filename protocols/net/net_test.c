/* net over real loopback sockets, in one process and one loop, with small test adapters. */
#include "protocols/net/net.h"
#include "protocols/tls/tls.h"

#include "tests/unit/test_certs.h"
#include "tests/unit/tn_test.h"

#include <openssl/ssl.h>

#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* ---- server side: a test adapter ---- */

typedef enum {
    MODE_ECHO,
    MODE_BYE,
    MODE_SLOW,
    MODE_FANOUT,
    MODE_FLOOD,
    MODE_REFS,
    MODE_INTO,
    MODE_STREAM
} mode;

typedef struct sconn {
    const tn_io *io;
    void *ioc;
    struct sconn *next;
} sconn;

static struct {
    mode mode;
    int opened, closed, closed_peer, closed_local, closed_shutdown;
    sconn *all;
} srv;

static uint8_t big_payload[24 << 20]; /* more than loopback's socket buffers take at once */
/* MODE_STREAM: STREAM_TOTAL bytes of big_payload, appended as long as out_full() allows and
 * resumed from drained(), as an adapter with a large message to send does. */
#define STREAM_TOTAL (8u << 20)
static size_t streamed;
static void
stream_more(const tn_io *io, void *ioc)
{
    while (streamed < STREAM_TOTAL && !io->out_full(ioc)) {
        size_t n = STREAM_TOTAL - streamed < 16384 ? STREAM_TOTAL - streamed : 16384;
        if (tn_buf_append(io->out(ioc), big_payload + streamed, n) != 0)
            return; /* the buffer itself is full: only drained() can resume */
        streamed += n;
    }
}
static int released;
/* MODE_INTO: input after the first byte belongs in into_buf (as a large body would). */
static uint8_t into_buf[4 << 20];
static size_t into_got, into_in_place;
static void
on_release(void *owner)
{
    (void)owner;
    released++;
}

static void *
t_open(void *proto, const tn_io *io, void *ioc)
{
    (void)proto;
    sconn *s = calloc(1, sizeof *s);
    s->io = io;
    s->ioc = ioc;
    s->next = srv.all;
    srv.all = s;
    srv.opened++;
    return s;
}

static ssize_t
t_input(void *a, const uint8_t *p, size_t len)
{
    sconn *s = a;
    if (len == 0)
        return 0;
    switch (srv.mode) {
    case MODE_ECHO:
        tn_buf_append(s->io->out(s->ioc), p, len);
        return (ssize_t)len;
    case MODE_BYE:
        tn_buf_append(s->io->out(s->ioc), "ok", 2);
        s->io->close(s->ioc);
        return (ssize_t)len;
    case MODE_SLOW: /* one byte per call; asks to be called again for the rest */
        tn_buf_append(s->io->out(s->ioc), p, 1);
        if (len > 1)
            s->io->wake(s->ioc);
        return 1;
    case MODE_FANOUT:
        /* Every byte goes to every connection, one byte per call: the rest is handled from the
         * wake list while other connections are put on the output list (a regression test for
         * the lists being relinked while walked). */
        for (sconn *o = srv.all; o; o = o->next) {
            tn_buf_append(o->io->out(o->ioc), p, 1);
            if (len > 1)
                o->io->wake(o->ioc); /* wakes connections further down the list too */
        }
        return 1;
    case MODE_REFS: { /* "<", a 24 MiB payload by reference, ">", a small one, "." */
        tn_buf *o = s->io->out(s->ioc);
        tn_buf_append(o, "<", 1);
        s->io->out_ref(s->ioc, big_payload, sizeof big_payload, on_release, NULL);
        tn_buf_append(o, ">", 1);
        s->io->out_ref(s->ioc, (const uint8_t *)"ab", 2, on_release, NULL);
        tn_buf_append(o, ".", 1);
        return (ssize_t)len;
    }
    case MODE_INTO: {
        size_t take = len < sizeof into_buf - into_got ? len : sizeof into_buf - into_got;
        if (p == into_buf + into_got)
            into_in_place += take; /* net read it there */
        else
            memcpy(into_buf + into_got, p, take);
        into_got += take;
        if (into_got == sizeof into_buf)
            tn_buf_append(s->io->out(s->ioc), "done", 4);
        return (ssize_t)len;
    }
    case MODE_STREAM:
        streamed = 0;
        stream_more(s->io, s->ioc);
        return (ssize_t)len;
    case MODE_FLOOD: { /* as much output as the buffer takes, then close: never drained */
        static const uint8_t zeros[65536];
        while (tn_buf_append(s->io->out(s->ioc), zeros, sizeof zeros) == 0)
            ;
        s->io->close(s->ioc);
        return (ssize_t)len;
    }
    }
    return -1;
}

static void
t_drained(void *a)
{
    sconn *s = a;
    if (srv.mode == MODE_STREAM)
        stream_more(s->io, s->ioc);
}

static void
t_timeout(void *a, uint64_t now)
{
    (void)a;
    (void)now;
}

static void
t_closed(void *a, int reason)
{
    sconn *s = a;
    for (sconn **pp = &srv.all; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    free(s);
    srv.closed++;
    if (reason == TN_CLOSE_PEER)
        srv.closed_peer++;
    else if (reason == TN_CLOSE_LOCAL)
        srv.closed_local++;
    else if (reason == TN_CLOSE_SHUTDOWN)
        srv.closed_shutdown++;
}

static uint8_t *
t_read_into(void *a, size_t *len)
{
    (void)a;
    if (srv.mode != MODE_INTO || into_got == 0 || into_got == sizeof into_buf)
        return NULL;
    *len = sizeof into_buf - into_got;
    return into_buf + into_got;
}

static const tn_adapter_ops test_ops = {"test",    t_open,   t_input,    t_drained,
                                        t_timeout, t_closed, t_read_into};

/* ---- client side ---- */

typedef struct client {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    char got[4096];
    size_t n;
    size_t total; /* bytes read, all of them */
    uint32_t sum; /* of every byte read, position-weighted (order matters) */
    bool eof;
    bool no_read; /* never reads: the server's output backs up */
    const char *send;
} client;

static uv_loop_t loop;
static tn_net *net;
static uint16_t port;

static void
c_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)h;
    static char buf[65536];
    (void)sz;
    *b = uv_buf_init(buf, sizeof buf);
}

static void
c_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    client *c = (client *)s;
    if (n < 0) {
        c->eof = true;
        uv_read_stop(s);
        return;
    }
    for (ssize_t i = 0; i < n; i++)
        c->sum = c->sum * 31 + (uint8_t)b->base[i];
    c->total += (size_t)n;
    if (c->n + (size_t)n <= sizeof c->got) {
        memcpy(c->got + c->n, b->base, (size_t)n);
        c->n += (size_t)n;
    }
}

static void
c_written(uv_write_t *w, int status)
{
    (void)w;
    CU_ASSERT_EQUAL(status, 0);
}

static void
c_connected(uv_connect_t *r, int status)
{
    client *c = r->data;
    CU_ASSERT_EQUAL_FATAL(status, 0);
    if (!c->no_read)
        uv_read_start((uv_stream_t *)&c->tcp, c_alloc, c_read);
    if (c->send) {
        uv_buf_t b = uv_buf_init((char *)c->send, (unsigned)strlen(c->send));
        uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, c_written);
    }
}

static void
c_start(client *c, const char *send)
{
    memset(c, 0, sizeof *c);
    c->send = send;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_tcp_init(&loop, &c->tcp);
    c->creq.data = c;
    uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&a, c_connected);
}

static void
c_close(client *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, NULL);
}

/* Runs the loop until cond() holds; a timer bounds the wait (fails the test). */
static bool timed_out;
static void
on_timeout(uv_timer_t *t)
{
    (void)t;
    timed_out = true;
}
static void
run_until(bool (*cond)(void *), void *arg)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    timed_out = false;
    uv_timer_start(&t, on_timeout, 5000, 0);
    while (!cond(arg) && !timed_out)
        uv_run(&loop, UV_RUN_ONCE);
    CU_ASSERT_FALSE(timed_out);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static bool
got_n(void *arg)
{
    client *c = arg;
    return c->n >= strlen(c->send) || c->eof;
}
static bool
got_n4(void *arg)
{
    client *c = arg;
    return c->n >= 4 || c->eof;
}
static bool
got_eof(void *arg)
{
    return ((client *)arg)->eof;
}
static bool
all_closed(void *arg)
{
    (void)arg;
    return srv.closed == srv.opened;
}

static int
setup_limits(const tn_net_limits *l)
{
    memset(&srv, 0, sizeof srv);
    uv_loop_init(&loop);
    net = tn_net_new(&loop, l);
    return tn_net_listen(net, "127.0.0.1", 0, &test_ops, NULL, NULL, &port);
}

static int
setup(int max_conns)
{
    tn_net_limits l = {
        .max_connections = (uint32_t)max_conns, .max_input = 1024, .max_output = 4096};
    return setup_limits(&l);
}

static bool net_done;
static void
on_done(void *arg)
{
    (void)arg;
    net_done = true;
}
static bool
is_done(void *arg)
{
    (void)arg;
    return net_done;
}

static void
teardown(void)
{
    net_done = false;
    tn_net_close(net, on_done, NULL);
    run_until(is_done, NULL);
    tn_net_free(net);
}

/* teardown(), then the loop must end with every handle closed. */
static void
teardown_all(void)
{
    teardown();
    uv_run(&loop, UV_RUN_DEFAULT);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
}

static void
test_echo_and_peer_close(void)
{
    CU_ASSERT_EQUAL_FATAL(setup(10), 0);
    CU_ASSERT_NOT_EQUAL(port, 0);
    srv.mode = MODE_ECHO;
    client c;
    c_start(&c, "hello hello hello");
    run_until(got_n, &c);
    CU_ASSERT_EQUAL(c.n, 17);
    CU_ASSERT_EQUAL(memcmp(c.got, "hello hello hello", 17), 0);
    c_close(&c);
    run_until(all_closed, NULL);
    CU_ASSERT_EQUAL(srv.closed_peer, 1);
    teardown_all();
}

static void
test_close_after_flush(void)
{
    CU_ASSERT_EQUAL_FATAL(setup(10), 0);
    srv.mode = MODE_BYE;
    client c;
    c_start(&c, "bye");
    run_until(got_eof, &c);
    CU_ASSERT_EQUAL(c.n, 2); /* the last bytes arrive before the close */
    CU_ASSERT_EQUAL(memcmp(c.got, "ok", 2), 0);
    run_until(all_closed, NULL);
    CU_ASSERT_EQUAL(srv.closed_local, 1);
    c_close(&c);
    teardown_all();
}

static void
test_wake_refeeds_unparsed_input(void)
{
    CU_ASSERT_EQUAL_FATAL(setup(10), 0);
    srv.mode = MODE_SLOW;
    client c;
    c_start(&c, "abcdefghij");
    run_until(got_n, &c);
    CU_ASSERT_EQUAL(c.n, 10);
    CU_ASSERT_EQUAL(memcmp(c.got, "abcdefghij", 10), 0);
    c_close(&c);
    run_until(all_closed, NULL);
    teardown_all();
}

typedef struct many {
    client c[16];
    size_t want;
} many;
static bool
many_got(void *arg)
{
    many *m = arg;
    for (int i = 0; i < 16; i++)
        if (m->c[i].n < m->want)
            return false;
    return true;
}
static bool
opened_1(void *arg)
{
    (void)arg;
    return srv.opened == 1;
}
static bool
opened_16(void *arg)
{
    (void)arg;
    return srv.opened == 16;
}

static void
test_fanout_with_wakeups(void)
{
    CU_ASSERT_EQUAL_FATAL(setup(100), 0);
    srv.mode = MODE_FANOUT;
    static many m;
    memset(&m, 0, sizeof m);
    for (int i = 0; i < 16; i++)
        c_start(&m.c[i], NULL);
    run_until(opened_16, NULL);
    /* every client sends four bytes; every client must get all 64 */
    for (int i = 0; i < 16; i++) {
        m.c[i].send = "wxyz";
        uv_buf_t b = uv_buf_init("wxyz", 4);
        uv_write(&m.c[i].wreq, (uv_stream_t *)&m.c[i].tcp, &b, 1, c_written);
    }
    m.want = 64;
    run_until(many_got, &m);
    for (int i = 0; i < 16; i++) {
        CU_ASSERT_EQUAL(m.c[i].n, 64);
        c_close(&m.c[i]);
    }
    run_until(all_closed, NULL);
    teardown_all();
}

static void
test_max_connections_and_shutdown(void)
{
    CU_ASSERT_EQUAL_FATAL(setup(1), 0);
    srv.mode = MODE_ECHO;
    client a, b;
    c_start(&a, "a");
    run_until(got_n, &a);
    c_start(&b, "b");
    run_until(got_eof, &b); /* refused: closed at once */
    CU_ASSERT_EQUAL(b.n, 0);
    CU_ASSERT_EQUAL(srv.opened, 1);
    c_close(&b);
    teardown(); /* a is still open: closed with the shutdown reason */
    CU_ASSERT_EQUAL(srv.closed_shutdown, 1);
    c_close(&a);
    uv_run(&loop, UV_RUN_DEFAULT);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
}

static bool
got_refs(void *arg)
{
    client *c = arg;
    return c->total >= sizeof big_payload + 5 || c->eof;
}

/* [issue 12] Payloads by reference go out in stream order between the buffered bytes, whole,
 * however slowly the client reads (a 24 MiB one takes many writes), and each is released once. */
static void
test_out_ref_in_order(void)
{
    for (size_t i = 0; i < sizeof big_payload; i++)
        big_payload[i] = (uint8_t)(i * 7 + i / 4096);
    CU_ASSERT_EQUAL_FATAL(setup(10), 0);
    srv.mode = MODE_REFS;
    released = 0;
    client c;
    c_start(&c, "x");
    c.no_read = true; /* the server's direct write comes up short: the rest goes async */
    run_until(opened_1, NULL);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    for (int i = 0; i < 3; i++) /* let the server write what the kernel takes */
        uv_run(&loop, UV_RUN_NOWAIT);
    uv_read_start((uv_stream_t *)&c.tcp, c_alloc, c_read);
    run_until(got_refs, &c);
    CU_ASSERT_EQUAL(c.total, sizeof big_payload + 5);
    uint32_t want = 0;
    want = want * 31 + '<';
    for (size_t i = 0; i < sizeof big_payload; i++)
        want = want * 31 + big_payload[i];
    want = want * 31 + '>';
    want = want * 31 + 'a';
    want = want * 31 + 'b';
    want = want * 31 + '.';
    CU_ASSERT_EQUAL(c.sum, want);
    CU_ASSERT_EQUAL(released, 2);
    uv_close((uv_handle_t *)&t, NULL);
    /* A reference still unwritten when the connection goes is released too. */
    c.no_read = false;
    c_close(&c);
    run_until(all_closed, NULL);
    teardown_all();
}

/* [issue 12] An adapter that knows where the next bytes belong (a large body) has them read
 * straight there: they arrive in place, in order, and input() need not copy them. */
static void
test_read_into_in_place(void)
{
    static char data[(4 << 20) + 1];
    for (size_t i = 0; i < sizeof data - 1; i++)
        data[i] = (char)('a' + (i * 7 + i / 1000) % 26);
    CU_ASSERT_EQUAL_FATAL(setup(10), 0);
    srv.mode = MODE_INTO;
    into_got = into_in_place = 0;
    client c;
    c_start(&c, data);
    run_until(got_n4, &c);
    CU_ASSERT_EQUAL(c.n, 4);
    CU_ASSERT_EQUAL(memcmp(c.got, "done", 4), 0);
    CU_ASSERT_EQUAL(memcmp(into_buf, data, sizeof into_buf), 0);
    CU_ASSERT_TRUE(into_in_place > sizeof into_buf / 2); /* most of it: no copy */
    c_close(&c);
    run_until(all_closed, NULL);
    teardown_all();
}

/* [issue 19] A connection closing with output its client never reads is closed without it after
 * close_timeout_ms, instead of holding its buffer for as long as the client stays. */
static void
test_close_timeout_gives_up_unread_output(void)
{
    tn_net_limits l = {.max_connections = 10,
                       .max_input = 1024,
                       .max_output = 16 << 20, /* 32 MiB may wait: more than the kernel takes */
                       .close_timeout_ms = 300};
    CU_ASSERT_EQUAL_FATAL(setup_limits(&l), 0);
    srv.mode = MODE_FLOOD;
    client c;
    c_start(&c, "x");
    c.no_read = true; /* before the connect callback runs */
    run_until(opened_1, NULL);
    uint64_t start = uv_now(&loop);
    int rcv = 4096;
    uv_recv_buffer_size((uv_handle_t *)&c.tcp, &rcv);
    run_until(all_closed, NULL); /* closed by the timeout, within run_until's 5 s */
    CU_ASSERT_EQUAL(srv.closed_local, 1);
    CU_ASSERT_TRUE(uv_now(&loop) - start >= 250); /* gave it its time first */
    c_close(&c);
    teardown_all();
}

/* ---- TLS: a client doing TLS over memory BIOs on the same loop ---- */

static tn_test_certs certs;
static tn_tls_ctx *server_tls;

typedef struct tclient {
    uv_tcp_t tcp;
    uv_connect_t creq;
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *in, *out;
    const char *send; /* plaintext to send once the handshake is done */
    bool sent;
    size_t total;
    uint32_t sum;
    char got[64];
    size_t n;
    bool eof;
} tclient;

static void
tc_written(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

/* Ciphertext the client's SSL produced -> socket. */
static void
tc_flush(tclient *c)
{
    int k;
    char buf[16384];
    while ((k = BIO_read(c->out, buf, sizeof buf)) > 0) {
        uv_write_t *w = malloc(sizeof *w + (size_t)k);
        memcpy(w + 1, buf, (size_t)k);
        uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)k);
        uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, tc_written);
    }
}

static void
tc_pump(tclient *c)
{
    if (!SSL_is_init_finished(c->ssl))
        SSL_do_handshake(c->ssl);
    if (SSL_is_init_finished(c->ssl) && c->send && !c->sent) {
        SSL_write(c->ssl, c->send, (int)strlen(c->send));
        c->sent = true;
    }
    static char buf[65536];
    int r;
    while ((r = SSL_read(c->ssl, buf, sizeof buf)) > 0) {
        for (int i = 0; i < r; i++)
            c->sum = c->sum * 31 + (uint8_t)buf[i];
        if (c->n + (size_t)r <= sizeof c->got) {
            memcpy(c->got + c->n, buf, (size_t)r);
            c->n += (size_t)r;
        }
        c->total += (size_t)r;
    }
    if (SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN)
        c->eof = true;
    tc_flush(c);
}

static void
tc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    tclient *c = (tclient *)s;
    if (n < 0) {
        c->eof = true;
        uv_read_stop(s);
        return;
    }
    BIO_write(c->in, b->base, (int)n);
    tc_pump(c);
}

static void
tc_connected(uv_connect_t *r, int status)
{
    tclient *c = r->data;
    CU_ASSERT_EQUAL_FATAL(status, 0);
    uv_read_start((uv_stream_t *)&c->tcp, c_alloc, tc_read);
    tc_pump(c);
}

static void
tc_start(tclient *c, const char *send)
{
    memset(c, 0, sizeof *c);
    c->send = send;
    c->ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(c->ctx, certs.ca, NULL);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    c->ssl = SSL_new(c->ctx);
    c->in = BIO_new(BIO_s_mem());
    c->out = BIO_new(BIO_s_mem());
    SSL_set_bio(c->ssl, c->in, c->out);
    SSL_set_connect_state(c->ssl);
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_tcp_init(&loop, &c->tcp);
    c->creq.data = c;
    uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&a, tc_connected);
}

static void
tc_close(tclient *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, NULL);
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
}

static int
setup_tls_out(uint32_t handshake_ms, uint32_t max_output)
{
    memset(&srv, 0, sizeof srv);
    char err[200];
    tn_tls_conf tc = {.cert_file = certs.server_cert, .key_file = certs.server_key};
    server_tls = tn_tls_ctx_new(&tc, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(server_tls);
    tn_net_limits l = {.max_connections = 10,
                       .max_input = 1024,
                       .max_output = max_output,
                       .close_timeout_ms = 3000,
                       .tls_handshake_timeout_ms = handshake_ms};
    uv_loop_init(&loop);
    net = tn_net_new(&loop, &l);
    return tn_net_listen(net, "127.0.0.1", 0, &test_ops, NULL, server_tls, &port);
}

static int
setup_tls(uint32_t handshake_ms)
{
    return setup_tls_out(handshake_ms, 4096);
}

static bool
tc_got_stream(void *arg)
{
    tclient *c = arg;
    return c->total >= STREAM_TOTAL || c->eof;
}

/* [issue 14] A large output appended as flow control allows (an AMQP transfer of a 4 MiB
 * message) is encrypted a piece at a time: what is encrypted leaves the output buffer, so it
 * never fills with sent bytes and the stream does not stall. */
static void
test_tls_large_stream(void)
{
    for (size_t i = 0; i < sizeof big_payload; i++)
        big_payload[i] = (uint8_t)(i * 7 + i / 4096);
    CU_ASSERT_EQUAL_FATAL(setup_tls_out(5000, 1 << 20), 0);
    srv.mode = MODE_STREAM;
    tclient c;
    tc_start(&c, "x");
    run_until(tc_got_stream, &c);
    CU_ASSERT_EQUAL(c.total, STREAM_TOTAL);
    uint32_t want = 0;
    for (size_t i = 0; i < STREAM_TOTAL; i++)
        want = want * 31 + big_payload[i];
    CU_ASSERT_EQUAL(c.sum, want);
    tc_close(&c);
    run_until(all_closed, NULL);
    teardown_all();
    tn_tls_ctx_free(server_tls);
}

static bool
tc_got_refs(void *arg)
{
    tclient *c = arg;
    return c->total >= sizeof big_payload + 5 || c->eof;
}
static bool
tc_got_eof(void *arg)
{
    return ((tclient *)arg)->eof;
}

/* Over TLS, payloads by reference are encrypted in stream order, a piece at a time. */
static void
test_tls_refs_in_order(void)
{
    for (size_t i = 0; i < sizeof big_payload; i++)
        big_payload[i] = (uint8_t)(i * 7 + i / 4096);
    CU_ASSERT_EQUAL_FATAL(setup_tls(5000), 0);
    srv.mode = MODE_REFS;
    released = 0;
    tclient c;
    tc_start(&c, "x");
    run_until(tc_got_refs, &c);
    CU_ASSERT_EQUAL(c.total, sizeof big_payload + 5);
    uint32_t want = 0;
    want = want * 31 + '<';
    for (size_t i = 0; i < sizeof big_payload; i++)
        want = want * 31 + big_payload[i];
    want = want * 31 + '>';
    want = want * 31 + 'a';
    want = want * 31 + 'b';
    want = want * 31 + '.';
    CU_ASSERT_EQUAL(c.sum, want);
    CU_ASSERT_EQUAL(released, 2);
    tc_close(&c);
    run_until(all_closed, NULL);
    teardown_all();
    tn_tls_ctx_free(server_tls);
}

/* The adapter's last bytes, then close_notify, then the close. */
static void
test_tls_close_after_flush(void)
{
    CU_ASSERT_EQUAL_FATAL(setup_tls(5000), 0);
    srv.mode = MODE_BYE;
    tclient c;
    tc_start(&c, "bye");
    run_until(tc_got_eof, &c);
    CU_ASSERT_EQUAL(c.n, 2);
    CU_ASSERT_EQUAL(memcmp(c.got, "ok", 2), 0);
    CU_ASSERT_TRUE(SSL_get_shutdown(c.ssl) & SSL_RECEIVED_SHUTDOWN); /* close_notify came */
    run_until(all_closed, NULL);
    CU_ASSERT_EQUAL(srv.closed_local, 1);
    tc_close(&c);
    teardown_all();
    tn_tls_ctx_free(server_tls);
}

static bool
tc_ready(void *arg)
{
    return SSL_is_init_finished(((tclient *)arg)->ssl);
}
static bool
tc_got_hello(void *arg)
{
    tclient *c = arg;
    return c->n >= 5 || c->eof;
}
static void
wait_timer_cb(uv_timer_t *t)
{
    *(bool *)t->data = true;
}
/* Runs the loop for ms milliseconds (sweeps happen meanwhile). */
static void
run_for(uint64_t ms)
{
    bool done = false;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &done;
    uv_timer_start(&t, wait_timer_cb, ms, 0);
    while (!done)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* A record that arrives in two parts with sweeps between them (the idle connection's buffers
 * are managed meanwhile) is decrypted whole. */
static void
test_tls_record_across_sweeps(void)
{
    CU_ASSERT_EQUAL_FATAL(setup_tls(5000), 0);
    srv.mode = MODE_ECHO;
    tclient c;
    tc_start(&c, NULL);
    run_until(tc_ready, &c);
    run_for(600); /* the connection goes idle */
    SSL_write(c.ssl, "hello", 5);
    char rec[256];
    int k = BIO_read(c.out, rec, sizeof rec);
    CU_ASSERT_TRUE_FATAL(k > 10);
    static uv_write_t w1, w2;
    uv_buf_t b1 = uv_buf_init(rec, 8), b2 = uv_buf_init(rec + 8, (unsigned)k - 8);
    uv_write(&w1, (uv_stream_t *)&c.tcp, &b1, 1, NULL);
    run_for(600); /* half a record waits through two sweeps */
    uv_write(&w2, (uv_stream_t *)&c.tcp, &b2, 1, NULL);
    run_until(tc_got_hello, &c);
    CU_ASSERT_EQUAL(c.n, 5);
    CU_ASSERT_EQUAL(memcmp(c.got, "hello", 5), 0);
    tc_close(&c);
    run_until(all_closed, NULL);
    teardown_all();
    tn_tls_ctx_free(server_tls);
}

/* A client that never finishes the handshake is closed at the deadline; one that sends plain
 * text is closed at once. The adapter sees neither's bytes. */
static void
test_tls_deadline_and_garbage(void)
{
    CU_ASSERT_EQUAL_FATAL(setup_tls(300), 0);
    srv.mode = MODE_ECHO;
    client silent;
    c_start(&silent, NULL);
    run_until(opened_1, NULL);
    uint64_t start = uv_now(&loop);
    run_until(got_eof, &silent);
    CU_ASSERT_TRUE(uv_now(&loop) - start >= 200);
    CU_ASSERT_EQUAL(silent.n, 0);
    client plain;
    c_start(&plain, "hello hello hello\r\n\r\n");
    run_until(got_eof, &plain);
    CU_ASSERT_TRUE(plain.n == 0 || (uint8_t)plain.got[0] == 0x15); /* an alert, never an echo */
    run_until(all_closed, NULL);
    CU_ASSERT_EQUAL(srv.closed_local, 2);
    c_close(&silent);
    c_close(&plain);
    teardown_all();
    tn_tls_ctx_free(server_tls);
}

int
main(void)
{
    tn_log_set_level(TN_LOG_ERROR);
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("net", NULL, NULL);
    CU_add_test(s, "echo_and_peer_close", test_echo_and_peer_close);
    CU_add_test(s, "close_after_flush", test_close_after_flush);
    CU_add_test(s, "wake_refeeds_input", test_wake_refeeds_unparsed_input);
    CU_add_test(s, "fanout_with_wakeups", test_fanout_with_wakeups);
    CU_add_test(s, "max_connections_and_shutdown", test_max_connections_and_shutdown);
    CU_add_test(s, "close_timeout", test_close_timeout_gives_up_unread_output);
    CU_add_test(s, "out_ref_in_order", test_out_ref_in_order);
    CU_add_test(s, "read_into_in_place", test_read_into_in_place);
    tn_test_certs_make(&certs);
    CU_add_test(s, "tls_refs_in_order", test_tls_refs_in_order);
    CU_add_test(s, "tls_close_after_flush", test_tls_close_after_flush);
    CU_add_test(s, "tls_large_stream", test_tls_large_stream);
    CU_add_test(s, "tls_record_across_sweeps", test_tls_record_across_sweeps);
    CU_add_test(s, "tls_deadline_and_garbage", test_tls_deadline_and_garbage);
    int rc = tn_test_run();
    tn_test_certs_remove(&certs);
    return rc;
}
