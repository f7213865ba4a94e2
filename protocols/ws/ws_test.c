/*
 * ws over real loopback sockets: a tn_ws listener on this thread's loop with small test
 * adapters, and a raw RFC 6455 client on a second thread (blocking sockets, hand-made frames).
 */
#include <uv.h>

#include "protocols/ws/ws.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- server side: test adapters that echo, and record which protocol opened ---- */

enum { K_MQTT, K_STOMP, K_AMQP };

typedef struct sconn {
    int kind;
    const tn_io *io;
    void *ioc;
} sconn;

static struct {
    int opened[3];
    int closed;
    size_t ref_len; /* "R": answer "<", a reference of this many bytes, ">" */
} srv;

static uint8_t big[300000];

static void *
open_kind(int kind, const tn_io *io, void *ioc)
{
    sconn *s = calloc(1, sizeof *s);
    s->kind = kind;
    s->io = io;
    s->ioc = ioc;
    srv.opened[kind]++;
    return s;
}
static void *
o_mqtt(void *p, const tn_io *io, void *ioc)
{
    (void)p;
    return open_kind(K_MQTT, io, ioc);
}
static void *
o_stomp(void *p, const tn_io *io, void *ioc)
{
    (void)p;
    return open_kind(K_STOMP, io, ioc);
}
static void *
o_amqp(void *p, const tn_io *io, void *ioc)
{
    (void)p;
    return open_kind(K_AMQP, io, ioc);
}

static void
no_release(void *owner)
{
    (void)owner;
}

/* Echoes whole lines ("...\n"), so the test sees input reassembled across messages; "R\n"
 * answers with a large payload by reference; "Q\n" closes. */
static ssize_t
line_input(sconn *s, const uint8_t *p, size_t len)
{
    const uint8_t *nl = memchr(p, '\n', len);
    if (!nl)
        return 0;
    size_t n = (size_t)(nl - p) + 1;
    if (n == 2 && p[0] == 'R') {
        tn_buf_append(s->io->out(s->ioc), "<", 1);
        s->io->out_ref(s->ioc, big, sizeof big, no_release, NULL);
        tn_buf_append(s->io->out(s->ioc), ">", 1);
    } else if (n == 2 && p[0] == 'Q') {
        tn_buf_append(s->io->out(s->ioc), "bye\n", 4);
        s->io->close(s->ioc);
    } else {
        tn_buf_append(s->io->out(s->ioc), p, n);
    }
    return (ssize_t)n;
}

/* Every whole line, as real adapters take every whole packet they have. */
static ssize_t
t_input(void *a, const uint8_t *p, size_t len)
{
    size_t used = 0;
    ssize_t n;
    while ((n = line_input(a, p + used, len - used)) > 0)
        used += (size_t)n;
    return (ssize_t)used;
}
static void
t_drained(void *a)
{
    (void)a;
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
    (void)reason;
    free(a);
    srv.closed++;
}

static const tn_adapter_ops mqtt_ops = {"mqtt",    o_mqtt,   t_input, t_drained,
                                        t_timeout, t_closed, NULL};
static const tn_adapter_ops stomp_ops = {"stomp",   o_stomp,  t_input, t_drained,
                                         t_timeout, t_closed, NULL};
static const tn_adapter_ops amqp_ops = {"amqp",    o_amqp,   t_input, t_drained,
                                        t_timeout, t_closed, NULL};

/* ---- client side: a raw WebSocket client on its own thread ---- */

typedef struct cli {
    int fd;
    uint8_t buf[1 << 20];
    size_t len;
} cli;

static uint16_t port;

static int
cli_connect(cli *c)
{
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    return connect(c->fd, (struct sockaddr *)&a, sizeof a);
}

static void
cli_send(cli *c, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n) {
        ssize_t w = write(c->fd, q, n);
        if (w <= 0)
            return;
        q += w;
        n -= (size_t)w;
    }
}

/* Reads more into c->buf; false on EOF or after 3 s without data. */
static bool
cli_more(cli *c)
{
    struct pollfd pf = {.fd = c->fd, .events = POLLIN};
    if (poll(&pf, 1, 3000) != 1)
        return false;
    ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
    if (r <= 0)
        return false;
    c->len += (size_t)r;
    return true;
}

static void
cli_consume(cli *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Sends the upgrade (proto may be NULL; origin may be NULL) and returns the status code; the
 * response headers are left in hdrs. */
static int
cli_upgrade(cli *c, const char *proto, const char *origin, char *hdrs, size_t hlen)
{
    char req[512];
    int n =
        snprintf(req, sizeof req,
                 "GET /any/path HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n%s%s%s%s%s%s\r\n",
                 proto ? "Sec-WebSocket-Protocol: " : "", proto ? proto : "", proto ? "\r\n" : "",
                 origin ? "Origin: " : "", origin ? origin : "", origin ? "\r\n" : "");
    cli_send(c, req, (size_t)n);
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (!cli_more(c))
            return -1;
    size_t hl = (size_t)(end - (char *)c->buf) + 4;
    snprintf(hdrs, hlen, "%.*s", (int)hl, c->buf);
    cli_consume(c, hl);
    int status = 0;
    sscanf(hdrs, "HTTP/1.%*d %d", &status);
    return status;
}

/* One masked frame (fin, opcode). masked=false sends an unmasked one (forbidden). */
static void
cli_frame(cli *c, int opcode, bool fin, const void *p, size_t n, bool masked)
{
    uint8_t h[14], mask[4] = {0x11, 0x22, 0x33, 0x44};
    size_t hl = 2;
    h[0] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (n < 126) {
        h[1] = (uint8_t)n;
    } else if (n < 65536) {
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    if (masked) {
        h[1] |= 0x80;
        memcpy(h + hl, mask, 4);
        hl += 4;
    }
    cli_send(c, h, hl);
    uint8_t *body = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        body[i] = ((const uint8_t *)p)[i] ^ (masked ? mask[i % 4] : 0);
    cli_send(c, body, n);
    free(body);
}

/* Reads one frame: its opcode, payload into out (up to cap; *n gets its length). -1 on EOF. */
static int
cli_read_frame(cli *c, uint8_t *out, size_t cap, size_t *n)
{
    for (;;) {
        if (c->len >= 2) {
            size_t hl = 2, len = c->buf[1] & 0x7f;
            if (len == 126 && c->len >= 4) {
                len = (size_t)c->buf[2] << 8 | c->buf[3];
                hl = 4;
            } else if (len == 127 && c->len >= 10) {
                len = 0;
                for (int i = 0; i < 8; i++)
                    len = len << 8 | c->buf[2 + i];
                hl = 10;
            }
            if ((c->buf[1] & 0x7f) < 126 || hl > 2) {
                if (c->len >= hl + len) {
                    int op = c->buf[0] & 0x0f;
                    *n = len;
                    memcpy(out, c->buf + hl, len < cap ? len : cap);
                    cli_consume(c, hl + len);
                    return op;
                }
            }
        }
        if (!cli_more(c))
            return -1;
    }
}

/* Reads binary frames until `want` payload bytes arrived; returns how many did. */
static size_t
cli_read_stream(cli *c, uint8_t *out, size_t want)
{
    size_t got = 0, n;
    static uint8_t f[1 << 20];
    while (got < want) {
        int op = cli_read_frame(c, f, sizeof f, &n);
        if (op != 2)
            break;
        memcpy(out + got, f, n < want - got ? n : want - got);
        got += n;
    }
    return got;
}

/* ---- the test threads ---- */

static uv_loop_t loop;
static tn_ws *ws;
static uv_async_t done_async;
static volatile int client_done;

typedef void (*client_fn)(void);

static void *
client_thread(void *arg)
{
    ((client_fn)arg)();
    client_done = 1;
    uv_async_send(&done_async);
    return NULL;
}

static void
on_done(uv_async_t *a)
{
    (void)a;
}

/* Runs the client function on its thread while this thread runs the loop. */
static void
run_client(client_fn f)
{
    client_done = 0;
    pthread_t th;
    pthread_create(&th, NULL, client_thread, (void *)f);
    while (!client_done)
        uv_run(&loop, UV_RUN_ONCE);
    pthread_join(th, NULL);
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static void
setup(const char *const *origins, size_t n_origins)
{
    memset(&srv, 0, sizeof srv);
    uv_loop_init(&loop);
    uv_async_init(&loop, &done_async, on_done);
    char err[256];
    tn_ws_limits l = {.max_connections = 100,
                      .max_input = 1 << 20,
                      .max_output = 1 << 20,
                      .close_timeout_ms = 1000,
                      .tls_handshake_timeout_ms = 2000};
    ws = tn_ws_new(&loop, &l, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ws);
    tn_ws_listen_conf c = {.address = "127.0.0.1",
                           .mqtt = {&mqtt_ops, NULL},
                           .stomp = {&stomp_ops, NULL},
                           .amqp = {&amqp_ops, NULL},
                           .max_message = 100000,
                           .origins = origins,
                           .n_origins = n_origins};
    CU_ASSERT_EQUAL_FATAL(tn_ws_listen(ws, &c, &port, err, sizeof err), 0);
}

static void
teardown(void)
{
    tn_ws_close(ws);
    uv_close((uv_handle_t *)&done_async, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    tn_ws_free(ws);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
}

/* -- clients -- */

static char hdrs[2048];
static int status;
static uint8_t got[400000];
static size_t got_n;
static int close_code;
static int after_close; /* what followed our answer to the server's close (-1: the end) */

static void
c_subprotocol_echo(void)
{
    static cli c;
    cli_connect(&c);
    status = cli_upgrade(&c, "foo, mqtt", NULL, hdrs, sizeof hdrs);
    /* A line split over three messages, and two lines in one. */
    cli_frame(&c, 2, true, "hel", 3, true);
    cli_frame(&c, 2, true, "lo\nab", 5, true);
    cli_frame(&c, 2, true, "c\n", 2, true);
    got_n = cli_read_stream(&c, got, 10);
    cli_frame(&c, 2, true, "R\n", 2, true);
    got_n += cli_read_stream(&c, got + got_n, sizeof big + 2);
    cli_frame(&c, 2, true, "Q\n", 2, true);
    got_n += cli_read_stream(&c, got + got_n, 4);
    size_t n;
    uint8_t f[16];
    close_code = cli_read_frame(&c, f, sizeof f, &n) == 8 && n >= 2 ? f[0] << 8 | f[1] : -1;
    /* Our answer to the server's close: the server must not answer it with a second close. */
    cli_frame(&c, 8, true, "\x03\xe8", 2, true);
    after_close = cli_read_frame(&c, f, sizeof f, &n);
    close(c.fd);
}

static void
test_subprotocol_stream_and_refs(void)
{
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 13 + i / 977);
    setup(NULL, 0);
    run_client(c_subprotocol_echo);
    CU_ASSERT_EQUAL(status, 101);
    CU_ASSERT_PTR_NOT_NULL(strcasestr(hdrs, "Sec-WebSocket-Protocol: mqtt\r\n"));
    CU_ASSERT_EQUAL(srv.opened[K_MQTT], 1);
    CU_ASSERT_EQUAL_FATAL(got_n, 10 + sizeof big + 2 + 4);
    CU_ASSERT_EQUAL(memcmp(got, "hello\nabc\n<", 11), 0);
    CU_ASSERT_EQUAL(memcmp(got + 11, big, sizeof big), 0);
    CU_ASSERT_EQUAL(memcmp(got + 11 + sizeof big, ">bye\n", 5), 0);
    CU_ASSERT_EQUAL(close_code, 1000); /* the adapter's close, after its output */
    CU_ASSERT_EQUAL(after_close, -1);  /* then the socket's end: no second close frame */
    teardown();
    CU_ASSERT_EQUAL(srv.closed, 1);
}

static const char *sniff_bytes;
static void
c_sniff(void)
{
    static cli c;
    cli_connect(&c);
    status = cli_upgrade(&c, NULL, NULL, hdrs, sizeof hdrs);
    cli_frame(&c, 2, true, sniff_bytes, strlen(sniff_bytes), true);
    got_n = 0;
    size_t n;
    int op = cli_read_frame(&c, got, sizeof got, &n);
    got_n = op == 2 ? n : 0;
    close_code = op == 8 && n >= 2 ? got[0] << 8 | got[1] : op == 2 ? 0 : -1;
    close(c.fd);
}

/* No subprotocol offered: the first bytes choose; anything else is closed. */
static void
test_sniff(void)
{
    static const struct {
        const char *bytes;
        int kind;
    } cases[] = {
        {"\x10 mqtt\n", K_MQTT}, {"\nCONNECT\n", K_STOMP}, {"STOMP\n", K_STOMP}, {"AMQP\n", K_AMQP},
        {"GET\n", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setup(NULL, 0);
        sniff_bytes = cases[i].bytes;
        run_client(c_sniff);
        CU_ASSERT_EQUAL(status, 101);
        CU_ASSERT_PTR_NULL(strcasestr(hdrs, "Sec-WebSocket-Protocol"));
        if (cases[i].kind >= 0) {
            CU_ASSERT_EQUAL(srv.opened[cases[i].kind], 1);
            CU_ASSERT_EQUAL(got_n, strlen(cases[i].bytes)); /* echoed */
        } else {
            CU_ASSERT_EQUAL(srv.opened[K_MQTT] + srv.opened[K_STOMP] + srv.opened[K_AMQP], 0);
            CU_ASSERT_EQUAL(close_code, 1002);
        }
        teardown();
    }
}

static const char *bad_kind;
static void
c_bad(void)
{
    static cli c;
    cli_connect(&c);
    got_n = 0;
    close_code = -1;
    if (strcmp(bad_kind, "http") == 0) {
        const char *req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        cli_send(&c, req, strlen(req));
        while (cli_more(&c))
            ;
        sscanf((char *)c.buf, "HTTP/1.%*d %d", &status);
        close(c.fd);
        return;
    }
    if (strcmp(bad_kind, "unknown") == 0) {
        status = cli_upgrade(&c, "foo, bar", NULL, hdrs, sizeof hdrs);
        close(c.fd);
        return;
    }
    if (strcmp(bad_kind, "origin") == 0) {
        status = cli_upgrade(&c, "mqtt", "https://evil.example", hdrs, sizeof hdrs);
        close(c.fd);
        return;
    }
    if (strcmp(bad_kind, "origin-ok") == 0) {
        status = cli_upgrade(&c, "v12.stomp", "https://app.example", hdrs, sizeof hdrs);
        close(c.fd);
        return;
    }
    status = cli_upgrade(&c, "mqtt", NULL, hdrs, sizeof hdrs);
    static uint8_t large[100000 + 65536 + 10];
    if (strcmp(bad_kind, "text") == 0)
        cli_frame(&c, 1, true, "hi\n", 3, true);
    else if (strcmp(bad_kind, "large") == 0)
        cli_frame(&c, 2, true, large, sizeof large, true);
    size_t n;
    int op;
    while ((op = cli_read_frame(&c, got, sizeof got, &n)) == 2)
        ;
    close_code = op == 8 && n >= 2 ? got[0] << 8 | got[1] : op;
    close(c.fd);
}

static void
test_bad_input(void)
{
    static const char *const allowed[] = {"https://app.example"};
    static const struct {
        const char *kind;
        int status, close_code;
    } cases[] = {
        {"http", 426, 0},      {"unknown", 400, 0}, {"origin", 403, 0},
        {"origin-ok", 101, 0}, {"text", 101, 1003}, {"large", 101, 1009},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setup(allowed, 1);
        bad_kind = cases[i].kind;
        status = 0;
        run_client(c_bad);
        CU_ASSERT_EQUAL(status, cases[i].status);
        if (status != cases[i].status)
            fprintf(stderr, "\n%s: status %d [%.80s]\n", bad_kind, status, hdrs);
        if (cases[i].close_code) {
            CU_ASSERT_EQUAL(close_code, cases[i].close_code);
            if (close_code != cases[i].close_code)
                fprintf(stderr, "\n%s: close %d\n", bad_kind, close_code);
        }
        teardown();
    }
}

int
main(void)
{
    tn_log_set_level(TN_LOG_ERROR);
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("ws", NULL, NULL);
    CU_add_test(s, "subprotocol, byte stream, references", test_subprotocol_stream_and_refs);
    CU_add_test(s, "no subprotocol: first bytes", test_sniff);
    CU_add_test(s, "bad input", test_bad_input);
    return tn_test_run();
}
