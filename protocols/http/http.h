/*
 * http: a small HTTP/1.1 server adapter (sans-IO, on protocols/io.h like the messaging
 * adapters, so it runs on ternd's loop over TCP or TLS through net): one request at a time per
 * connection, answered by a handler the owner gives; for the broker's own management endpoints
 * (Prometheus metrics), not a general web server.
 *
 * Requests: a request line and headers of at most max_head bytes (else 431), GET, HEAD, POST
 * and DELETE, a body only with Content-Length up to max_body (else 413; chunked: 411). Each
 * response carries Content-Length; connections stay open between requests (HTTP/1.1 keep-alive;
 * HTTP/1.0 and "Connection: close" close after the response). A connection that sends no
 * complete request within idle_ms is closed. Bad requests get 400 and the connection closes.
 *
 * Thread: the loop thread only.
 */
#ifndef TN_HTTP_H
#define TN_HTTP_H

#include "protocols/io.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A request, valid during the handler call only. */
typedef struct tn_http_req {
    const char *method; /* "GET", "HEAD", "POST", "DELETE" */
    const char *path;   /* the target without the query, percent-encoded as sent */
    const char *query;  /* after '?', or "" */
    const uint8_t *body;
    size_t body_len;
    const char *peer;
    /* The value of header name (case-insensitive), or NULL. */
    const char *(*header)(const struct tn_http_req *req, const char *name);
    const void *priv;
} tn_http_req;

/* What the handler fills: status (default 200), content type (default text/plain), body. */
typedef struct tn_http_resp {
    int status;
    const char *content_type;
    tn_buf *body;
} tn_http_resp;

typedef struct tn_http_conf {
    uint32_t max_head; /* default 16384 */
    uint32_t max_body; /* default 65536 */
    uint32_t idle_ms;  /* default 30000 */
    void (*serve)(void *arg, const tn_http_req *req, tn_http_resp *resp);
    void *arg;
} tn_http_conf;

typedef struct tn_http tn_http;

tn_http *tn_http_new(const tn_http_conf *conf);
void tn_http_free(tn_http *h);

/* The adapter net drives (open()'s proto argument: the tn_http). */
extern const tn_adapter_ops tn_http_adapter;

/* The reason phrase of status ("Not Found"). */
const char *tn_http_reason(int status);

#endif
