/* The HTTP adapter through a fake tn_io: requests in pieces, pipelined, bad ones. */
#include "protocols/http/http.h"

#include "tests/unit/fake_io.h"
#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <string.h>

static int served;

static void
serve(void *arg, const tn_http_req *req, tn_http_resp *resp)
{
    (void)arg;
    served++;
    if (strcmp(req->path, "/missing") == 0) {
        resp->status = 404;
        tn_buf_append(resp->body, "no\n", 3);
        return;
    }
    const char *ua = req->header(req, "user-agent");
    char line[256];
    int n = snprintf(line, sizeof line, "%s %s ?%s ua=%s body=%.*s", req->method, req->path,
                     req->query, ua ? ua : "-", (int)req->body_len, (const char *)req->body);
    resp->content_type = "text/x-test";
    tn_buf_append(resp->body, line, (size_t)n);
}

static tn_http *h;
static tn_fake_conn f;

static void
open_conn(void)
{
    tn_http_conf hc = {.max_head = 256, .max_body = 64, .serve = serve};
    h = tn_http_new(&hc);
    tn_fake_open(&f, &tn_http_adapter, h, 0);
    served = 0;
}

static void
close_conn(void)
{
    tn_http_adapter.closed(f.a, TN_CLOSE_PEER);
    tn_buf_fini(&f.out);
    tn_http_free(h);
}

static void
feed(const char *s, size_t chunk)
{
    tn_fake_feed(&tn_http_adapter, &f, (const uint8_t *)s, strlen(s), chunk, NULL, NULL);
}

static bool
out_has(const char *s)
{
    return memmem(f.out.data, f.out.len, s, strlen(s)) != NULL;
}

static void
test_get_and_keep_alive(void)
{
    open_conn();
    feed("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\n"
         "POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
         "HEAD /h HTTP/1.1\r\n\r\n",
         7);
    CU_ASSERT_EQUAL(served, 3);
    CU_ASSERT_TRUE(out_has("HTTP/1.1 200 OK\r\nContent-Type: text/x-test\r\n"));
    CU_ASSERT_TRUE(out_has("GET /metrics ?x=1 ua=t body="));
    CU_ASSERT_TRUE(out_has("POST /p ? ua=- body=hello"));
    CU_ASSERT_FALSE(out_has("HEAD /h")); /* HEAD: the headers only */
    CU_ASSERT_FALSE(f.closed);
    f.out.len = 0;
    feed("GET /missing HTTP/1.0\r\n\r\n", 100);
    CU_ASSERT_TRUE(out_has("HTTP/1.1 404 Not Found\r\n"));
    CU_ASSERT_TRUE(out_has("Connection: close\r\n"));
    CU_ASSERT_TRUE(f.closed); /* HTTP/1.0 */
    close_conn();
}

static void
test_bad_requests(void)
{
    static const struct {
        const char *in;
        const char *status;
    } cases[] = {
        {"\x16\x03\x01 tls", "400"},
        {"GET / HTTP/2.0\r\n\r\n", "400"},
        {"GET nopath HTTP/1.1\r\n\r\n", "400"},
        {"GET / HTTP/1.1\r\nno colon\r\n\r\n", "400"},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "411"},
        {"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n", "413"},
        {"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", "400"},
        {"PATCH / HTTP/1.1\r\n\r\n", "405"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        open_conn();
        feed(cases[i].in, 100);
        char want[32];
        snprintf(want, sizeof want, "HTTP/1.1 %s ", cases[i].status);
        CU_ASSERT_TRUE(out_has(want));
        if (!out_has(want))
            fprintf(stderr, "\ncase %zu: %.*s\n", i, (int)f.out.len, (const char *)f.out.data);
        CU_ASSERT_EQUAL(served, 0);
        close_conn();
    }
    /* A head past max_head: 431, closed. */
    open_conn();
    char big[400];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "GET /", 5);
    feed(big, 50);
    CU_ASSERT_TRUE(out_has("HTTP/1.1 431 "));
    CU_ASSERT_TRUE(f.closed);
    close_conn();
}

static void
test_idle_timeout(void)
{
    open_conn();
    feed("GET / HTT", 100);
    CU_ASSERT_EQUAL(served, 0);
    CU_ASSERT_TRUE(f.deadline > 0);
    tn_http_adapter.timeout(f.a, f.deadline);
    CU_ASSERT_TRUE(f.closed);
    close_conn();
}

int
main(void)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("http", NULL, NULL);
    CU_add_test(s, "get_and_keep_alive", test_get_and_keep_alive);
    CU_add_test(s, "bad_requests", test_bad_requests);
    CU_add_test(s, "idle_timeout", test_idle_timeout);
    return tn_test_run();
}
