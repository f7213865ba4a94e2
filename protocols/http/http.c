/* A small HTTP/1.1 server adapter (see http.h). */
#include "protocols/http/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADERS 64

struct tn_http {
    tn_http_conf conf;
};

typedef struct hdr {
    const char *name, *value;
} hdr;

typedef struct hconn {
    tn_http *h;
    const tn_io *io;
    void *ioc;
    bool closing;
    /* the request being answered (pointers into a NUL-terminated copy of its head) */
    char *head;
    hdr hdrs[MAX_HEADERS];
    unsigned n_hdrs;
} hconn;

const char *
tn_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

tn_http *
tn_http_new(const tn_http_conf *conf)
{
    tn_http *h = tn_xcalloc(1, sizeof *h);
    h->conf = *conf;
    if (!h->conf.max_head)
        h->conf.max_head = 16384;
    if (!h->conf.max_body)
        h->conf.max_body = 65536;
    if (!h->conf.idle_ms)
        h->conf.idle_ms = 30000;
    return h;
}

void
tn_http_free(tn_http *h)
{
    free(h);
}

static void *
h_open(void *proto, const tn_io *io, void *ioc)
{
    hconn *c = tn_xcalloc(1, sizeof *c);
    c->h = proto;
    c->io = io;
    c->ioc = ioc;
    io->set_deadline(ioc, io->now(ioc) + c->h->conf.idle_ms);
    return c;
}

static void
respond(hconn *c, int status, const char *type, const uint8_t *body, size_t len, bool head_only,
        bool close)
{
    char line[512];
    int n = snprintf(line, sizeof line,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s\r\n",
                     status, tn_http_reason(status), type ? type : "text/plain; charset=utf-8", len,
                     close ? "Connection: close\r\n" : "");
    tn_buf *out = c->io->out(c->ioc);
    tn_buf_append(out, line, (size_t)n);
    if (!head_only && len)
        tn_buf_append(out, body, len);
    if (close) {
        c->closing = true;
        c->io->set_deadline(c->ioc, 0);
        c->io->close(c->ioc);
    } else {
        c->io->set_deadline(c->ioc, c->io->now(c->ioc) + c->h->conf.idle_ms);
    }
}

static void
fail(hconn *c, int status, const char *why)
{
    tn_log_info("HTTP-ERROR", "%s: %d %s (%s); closing", c->io->peer(c->ioc), status,
                tn_http_reason(status), why);
    char body[256];
    int n = snprintf(body, sizeof body, "%d %s: %s\n", status, tn_http_reason(status), why);
    respond(c, status, NULL, (const uint8_t *)body, (size_t)n, false, true);
}

static const char *
req_header(const tn_http_req *req, const char *name)
{
    const hconn *c = req->priv;
    for (unsigned i = 0; i < c->n_hdrs; i++)
        if (strcasecmp(c->hdrs[i].name, name) == 0)
            return c->hdrs[i].value;
    return NULL;
}

/* Where the head ends ("\r\n\r\n"; a bare "\n\n" too): its length with the blank line, or 0. */
static size_t
head_end(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (p[i] == '\n' && p[i + 1] == '\n')
            return i + 2;
        if (p[i] == '\n' && p[i + 1] == '\r' && i + 2 < len && p[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static char *
trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

/* Parses the head in c->head: the request line into *method, *target, *version, the headers
 * into c->hdrs. False on anything malformed. */
static bool
parse_head(hconn *c, char **method, char **target, char **version)
{
    char *save = NULL;
    char *line = strtok_r(c->head, "\n", &save);
    if (!line)
        return false;
    line = trim(line);
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strchr(sp2 + 1, ' '))
        return false;
    *sp1 = *sp2 = '\0';
    *method = line;
    *target = sp1 + 1;
    *version = sp2 + 1;
    if ((*target)[0] != '/' || strncmp(*version, "HTTP/1.", 7) != 0 || !(*version)[7] ||
        (*version)[8])
        return false;
    for (const char *p = line; *p; p++)
        if (*p < 'A' || *p > 'Z')
            return false;
    c->n_hdrs = 0;
    char *h;
    while ((h = strtok_r(NULL, "\n", &save)) != NULL) {
        h = trim(h);
        if (!*h)
            continue;
        char *colon = strchr(h, ':');
        if (!colon || colon == h || c->n_hdrs == MAX_HEADERS)
            return false;
        *colon = '\0';
        for (const char *p = h; *p; p++)
            if (*p <= ' ' || *p >= 127)
                return false;
        c->hdrs[c->n_hdrs++] = (hdr){h, trim(colon + 1)};
    }
    return true;
}

static ssize_t
h_input(void *a, const uint8_t *p, size_t len)
{
    hconn *c = a;
    size_t off = 0;
    while (!c->closing && off < len) {
        if (p[off] == '\r' || p[off] == '\n') { /* blank lines between requests */
            off++;
            continue;
        }
        const uint8_t *q = p + off;
        size_t n = len - off;
        if (n > 0 && q[0] != '\r' && q[0] != '\n' && (q[0] < 'A' || q[0] > 'Z')) {
            fail(c, 400, "not an HTTP request");
            return (ssize_t)len;
        }
        size_t hl = head_end(q, n < c->h->conf.max_head ? n : c->h->conf.max_head);
        if (!hl) {
            if (n >= c->h->conf.max_head) {
                fail(c, 431, "request head too large");
                return (ssize_t)len;
            }
            break; /* wait for the rest */
        }
        free(c->head);
        c->head = tn_xmalloc(hl + 1);
        memcpy(c->head, q, hl);
        c->head[hl] = '\0';
        if (memchr(q, 0, hl)) {
            fail(c, 400, "NUL in the request head");
            return (ssize_t)len;
        }
        char *method, *target, *version;
        if (!parse_head(c, &method, &target, &version)) {
            fail(c, 400, "malformed request head");
            return (ssize_t)len;
        }
        tn_http_req req = {.method = method, .peer = c->io->peer(c->ioc), .priv = c};
        req.header = req_header;
        if (req_header(&req, "Transfer-Encoding")) {
            fail(c, 411, "chunked bodies are not taken: give Content-Length");
            return (ssize_t)len;
        }
        const char *cl = req_header(&req, "Content-Length");
        size_t body = 0;
        if (cl) {
            char *end;
            unsigned long long v = strtoull(cl, &end, 10);
            if (*end || end == cl || v > c->h->conf.max_body) {
                fail(c, v > c->h->conf.max_body ? 413 : 400, "bad Content-Length");
                return (ssize_t)len;
            }
            body = (size_t)v;
        }
        if (n - hl < body)
            break; /* the body is not all here yet */
        char *qm = strchr(target, '?');
        if (qm)
            *qm = '\0';
        req.path = target;
        req.query = qm ? qm + 1 : "";
        req.body = q + hl;
        req.body_len = body;
        const char *conn = req_header(&req, "Connection");
        bool close = strcmp(version, "HTTP/1.0") == 0 ? !(conn && !strcasecmp(conn, "keep-alive"))
                                                      : (conn && !strcasecmp(conn, "close"));
        off += hl + body;
        bool known = !strcmp(method, "GET") || !strcmp(method, "HEAD") || !strcmp(method, "POST") ||
                     !strcmp(method, "DELETE");
        if (!known) {
            respond(c, 405, NULL, (const uint8_t *)"method not allowed\n", 19, false, close);
            continue;
        }
        tn_buf out;
        tn_buf_init(&out, (size_t)1 << 30);
        tn_http_resp resp = {.status = 200, .body = &out};
        c->h->conf.serve(c->h->conf.arg, &req, &resp);
        respond(c, resp.status, resp.content_type, out.data, out.len, !strcmp(method, "HEAD"),
                close);
        tn_buf_fini(&out);
    }
    free(c->head);
    c->head = NULL;
    return (ssize_t)off;
}

static void
h_drained(void *a)
{
    (void)a;
}

static void
h_timeout(void *a, uint64_t now)
{
    (void)now;
    hconn *c = a;
    if (c->closing)
        return;
    c->closing = true;
    c->io->close(c->ioc);
}

static void
h_closed(void *a, int reason)
{
    (void)reason;
    hconn *c = a;
    free(c->head);
    free(c);
}

const tn_adapter_ops tn_http_adapter = {
    .name = "http",
    .open = h_open,
    .input = h_input,
    .drained = h_drained,
    .timeout = h_timeout,
    .closed = h_closed,
};
