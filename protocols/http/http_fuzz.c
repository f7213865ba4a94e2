/*
 * Fuzz target for the HTTP adapter: arbitrary bytes from one client in chunks (the first byte
 * picks the chunk size), answered by a handler that echoes the path and body. Must never
 * crash, hang or leak.
 */
#include "protocols/http/http.h"

#include "tests/unit/fake_io.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
serve(void *arg, const tn_http_req *req, tn_http_resp *resp)
{
    (void)arg;
    tn_buf_append(resp->body, req->path, strlen(req->path));
    tn_buf_append(resp->body, req->body, req->body_len);
    if (req->header(req, "x-fail"))
        resp->status = 404;
}

static void
drop_output(void *arg)
{
    ((tn_fake_conn *)arg)->out.len = 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t chunk = (size_t)(data[0] % 64) + 1;
    tn_http_conf hc = {.max_head = 2048, .max_body = 4096, .serve = serve};
    tn_http *h = tn_http_new(&hc);
    tn_fake_conn f;
    tn_fake_open(&f, &tn_http_adapter, h, 0);
    tn_fake_feed(&tn_http_adapter, &f, data + 1, size - 1, chunk, drop_output, &f);
    tn_http_adapter.closed(f.a, TN_CLOSE_PEER);
    tn_buf_fini(&f.out);
    tn_http_free(h);
    return 0;
}
