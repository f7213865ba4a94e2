/* `ternctl status` and `ternctl queues`: GET the broker's admin API (plain HTTP/1.1 over TCP,
 * one request per connection) and print a table, or the JSON with --json. */
#include "tools/ternctl/ternctl.h"

#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* GET path from tn_ctl_url: the body in *body (malloc'd) and the status; -1 with a message on
 * stderr when there is no answer. */
static int
http_get(const char *cmd, const char *path, char **body, int *status)
{
    const char *u = tn_ctl_url;
    if (strncmp(u, "http://", 7) != 0) {
        fprintf(stderr, "ternctl %s: --url %s: expected http://HOST:PORT\n", cmd, u);
        return -1;
    }
    char host[256], port[16] = "80";
    const char *hp = u + 7;
    size_t hl = strcspn(hp, "/");
    if (hl == 0 || hl >= sizeof host) {
        fprintf(stderr, "ternctl %s: --url %s: no host\n", cmd, u);
        return -1;
    }
    memcpy(host, hp, hl);
    host[hl] = '\0';
    char *colon = host[0] == '[' ? strstr(host, "]:") : strrchr(host, ':');
    if (colon) {
        if (host[0] == '[')
            colon++;
        snprintf(port, sizeof port, "%s", colon + 1);
        *colon = '\0';
    }
    char *h = host;
    if (h[0] == '[') {
        h++;
        h[strcspn(h, "]")] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(h, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "ternctl %s: %s: %s\n", cmd, u, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0)
            continue;
        struct timeval tv = {10, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        fprintf(stderr, "ternctl %s: cannot connect to %s: %s\n", cmd, u, strerror(errno));
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nAccept: "
                     "application/json\r\n\r\n",
                     path, host);
    if (write(fd, req, (size_t)n) != n) {
        fprintf(stderr, "ternctl %s: %s: %s\n", cmd, u, strerror(errno));
        close(fd);
        return -1;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", status) != 1) {
        fprintf(stderr, "ternctl %s: %s: no HTTP answer\n", cmd, u);
        free(buf);
        return -1;
    }
    *body = strdup(sep + 4);
    free(buf);
    return 0;
}

/* The JSON at path, or NULL (said on stderr): an HTTP error's message is shown. */
static json_t *
api_get(const char *cmd, const char *path)
{
    char *body = NULL;
    int status = 0;
    if (http_get(cmd, path, &body, &status) != 0)
        return NULL;
    json_error_t err;
    json_t *j = json_loads(body, 0, &err);
    if (status != 200) {
        const char *msg = j ? json_string_value(json_object_get(j, "error")) : NULL;
        fprintf(stderr, "ternctl %s: %s%s: HTTP %d: %s\n", cmd, tn_ctl_url, path, status,
                msg ? msg : body);
        json_decref(j);
        free(body);
        return NULL;
    }
    if (!j)
        fprintf(stderr, "ternctl %s: %s%s: not JSON: %s\n", cmd, tn_ctl_url, path, err.text);
    else if (tn_ctl_json)
        fputs(body, stdout);
    free(body);
    return j;
}

static bool
help_only(int argc, char **argv, const char *usage)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(usage, stdout);
        return true;
    }
    return false;
}

int
tn_ctl_status(int argc, char **argv)
{
    if (help_only(argc, argv, "Usage: ternctl [--url URL] [--json] status\n"))
        return 0;
    if (argc > 1) {
        fprintf(stderr, "ternctl status: takes no arguments\n");
        return 2;
    }
    json_t *j = api_get("status", "/api/v1/overview");
    if (!j)
        return 1;
    if (!tn_ctl_json) {
        json_t *c = json_object_get(j, "connections");
        printf("version      %s\n", json_string_value(json_object_get(j, "version")));
        printf("role         %s (epoch %lld)\n", json_string_value(json_object_get(j, "role")),
               (long long)json_integer_value(json_object_get(j, "epoch")));
        printf("uptime       %lld s\n",
               (long long)json_integer_value(json_object_get(j, "uptime_seconds")));
        printf("connections  mqtt %lld, stomp %lld, amqp %lld\n",
               (long long)json_integer_value(json_object_get(c, "mqtt")),
               (long long)json_integer_value(json_object_get(c, "stomp")),
               (long long)json_integer_value(json_object_get(c, "amqp")));
        printf("published    %lld\n",
               (long long)json_integer_value(json_object_get(j, "messages_published")));
        printf("sessions     %lld\n",
               (long long)json_integer_value(json_object_get(j, "sessions")));
        printf("queues       %lld\n", (long long)json_integer_value(json_object_get(j, "queues")));
    }
    json_decref(j);
    return 0;
}

int
tn_ctl_queues(int argc, char **argv)
{
    if (help_only(argc, argv, "Usage: ternctl [--url URL] [--json] queues\n"))
        return 0;
    if (argc > 1) {
        fprintf(stderr, "ternctl queues: takes no arguments\n");
        return 2;
    }
    json_t *j = api_get("queues", "/api/v1/queues");
    if (!j)
        return 1;
    if (!tn_ctl_json) {
        printf("%-40s %10s %10s %10s\n", "QUEUE", "MESSAGES", "CONSUMERS", "PAGED");
        size_t i;
        json_t *q;
        json_array_foreach(j, i, q)
        {
            printf("%-40s %10lld %10lld %10lld\n", json_string_value(json_object_get(q, "name")),
                   (long long)json_integer_value(json_object_get(q, "messages")),
                   (long long)json_integer_value(json_object_get(q, "consumers")),
                   (long long)json_integer_value(json_object_get(q, "paged")));
        }
    }
    json_decref(j);
    return 0;
}
