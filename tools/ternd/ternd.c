/* ternd: the Tern broker daemon. */
#include "cluster/cluster.h"
#include "conf/conf.h"
#include "core/base/base.h"
#include "core/broker/broker.h"
#include "core/store/store.h"
#include "protocols/amqp/amqp.h"
#include "protocols/authn/authn.h"
#include "protocols/http/http.h"

#include <jansson.h>
#include "protocols/mqtt/mqtt.h"
#include "protocols/stomp/stomp.h"
#include "protocols/net/net.h"
#include "protocols/tls/tls.h"
#include "protocols/ws/ws.h"

#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

static const char usage[] =
    "Usage: ternd [OPTION]...\n"
    "Tern message broker: MQTT 3.1.1, STOMP 1.0-1.2 and AMQP 1.0 on one event loop.\n"
    "\n"
    "  -c, --config FILE      read FILE (YAML; see conf/tern.conf); without it the built-in\n"
    "                         defaults apply: MQTT on 127.0.0.1:1883, data in ./data\n"
    "  -l, --listen URL       listen on URL, e.g. mqtt://127.0.0.1:1883, mqtt://[::1]:1883,\n"
    "                         stomp://127.0.0.1:61613 or amqp://127.0.0.1:5672;\n"
    "                         repeatable; replaces the config's listeners; port 0 picks a free\n"
    "                         port (the TERN-READY log line tells which)\n"
    "                         TLS: mqtts://, stomps://, amqps:// (and wss://, WebSocket)\n"
    "                         http://ADDR:PORT (https:// with TLS): GET /metrics (Prometheus)\n"
    "  -d, --data DIR         keep data in DIR (created if missing)\n"
    "      --tls-cert FILE    PEM certificate chain for every TLS listener\n"
    "      --tls-key FILE     its PEM private key\n"
    "      --tls-ca FILE      PEM CA certificates that sign client certificates\n"
    "      --tls-verify-client none|optional|require\n"
    "                         ask TLS clients for a certificate signed by --tls-ca: not at all\n"
    "                         (none, the default), optional, or required in the handshake\n"
    "      --log-level LEVEL  error, warn, info or debug\n"
    "      --password-file FILE  users and their password hashes, Mosquitto's format\n"
    "                         (ternctl passwd, mosquitto_passwd); SIGHUP rereads it\n"
    "      --acl-file FILE    who may read and write which destination (Mosquitto's\n"
    "                         acl_file format); SIGHUP rereads it\n"
    "      --allow-anonymous true|false\n"
    "                         clients without a user name: by default allowed only while\n"
    "                         there is no password file and every listener is on loopback\n"
    "\n"
    "An active/standby pair (README, Active/standby pair):\n"
    "      --role node|witness\n"
    "                         node (the default) serves clients; witness grants the pair's\n"
    "                         lease: ternd --role witness --listen witness://ADDR:PORT --data DIR\n"
    "      --pair-listen ADDR:PORT     this node's replication port\n"
    "      --pair-peer ADDR:PORT       the other node's replication port\n"
    "      --pair-witness ADDR:PORT    the witness\n"
    "      --pair-zookeeper HOST:PORT[,HOST:PORT...]/PATH\n"
    "                         ZooKeeper instead of a witness (znodes under PATH)\n"
    "      --pair-alone-timeout MS     an active whose standby stays behind this long goes\n"
    "                         on alone (default 2000)\n"
    "      --pair-async       confirm without waiting for the standby (README: the trade-off)\n"
    "      --pair-lease MS    how long a lease lasts (default 1000; the witness grants it)\n"
    "      --pair-renew MS    how often it is renewed or asked for (default 250)\n"
    "      --pair-rejoin auto|manual\n"
    "                         a node that lost its lease (fenced) restarts itself in place\n"
    "                         and rejoins as the standby (auto, the default), or waits to be\n"
    "                         restarted (manual)\n"
    "  -h, --help             show this help and exit\n"
    "  -V, --version          show the version and exit\n"
    "\n"
    "SIGINT or SIGTERM shut the broker down cleanly.\n";

typedef struct ternd {
    uv_loop_t loop;
    uv_signal_t sigint, sigterm, sighup;
    tn_authn *authn;       /* users, anonymous rules (the adapters' tn_auth) */
    tn_iplimit *per_ip;    /* limits.max_connections_per_ip, shared by net and ws */
    tn_http *http;         /* http:// and https:// listeners: GET /metrics */
    uint32_t max_series;   /* per-queue series in GET /metrics at most */
    bool api_closed;       /* a password file: the admin API waits for its Basic auth */
    uint64_t started_ms;   /* loop time ternd started */
    uv_async_t store_wake; /* the journal's writer thread says records became durable */
    uv_timer_t tick;       /* broker housekeeping (slow consumers) */
    tn_net *net;
    tn_ws *ws; /* WebSocket listeners (libwebsockets), made with the first one */
    tn_store *store;
    tn_broker *broker;
    tn_mqtt **mqtt; /* one adapter per listener */
    tn_stomp **stomp;
    tn_amqp **amqp;
    tn_tls_ctx **tls; /* one per TLS listener */
    size_t n_mqtt, n_stomp, n_amqp, n_tls;
    uint64_t last_hs, last_hs_at; /* TLS handshakes as last counted, and when they changed */
    uint64_t trimmed_hs;          /* TLS handshakes at the last malloc_trim */
    bool stopping;
    /* A pair's node (--pair-*): the journal is the standby's (repl) until the lease is ours. */
    bool paired;
    tn_repl *repl;
    tn_lease *lease;
    tn_store_conf sc;
    char node[65];
    char peer_host[64];
    int role;
    uint64_t role_epoch;
    uint32_t hold_ms;   /* a standby whose active went silent holds clients this long at most */
    bool holding;       /* update_hold: new clients are held */
    bool rejoin_manual; /* --pair-rejoin manual */
    uint16_t *ports;    /* each listener's port, as bound */
    size_t n_ports;
    bool reexec;           /* fenced: once stopped, run ternd again in place (rejoin) */
    uint64_t active_since; /* loop time this run became active (0: never) */
    uint32_t lease_ms;
    tn_witness *witness;     /* --role witness */
    tn_tls_ctx *pair_tls[2]; /* the replication link's server and client sides */
} ternd;

/* The largest journal record: a message as large as any listener takes, with its name and
 * properties (each at most 64 KiB). */
static uint32_t
max_record(const tn_conf *c)
{
    uint64_t m = c->limits.max_message_size;
    for (size_t i = 0; i < c->n_listeners; i++) {
        uint32_t l = tn_conf_listener_max_message(c, &c->listeners[i]);
        m = l > m ? l : m;
    }
    m += 2 * 65536 + 4096;
    return m > UINT32_MAX ? UINT32_MAX : (uint32_t)m;
}

static void
store_notify(void *arg)
{
    uv_async_send(arg); /* from the writer thread; coalesces */
}

static void
on_store_wake(uv_async_t *h)
{
    ternd *t = h->data;
    if (t->store) {
        tn_store_poll(t->store);
        if (t->repl)
            tn_repl_poll(t->repl);     /* written records go to the standby */
        tn_broker_maintain(t->broker); /* a safe point: no broker call is running */
    }
}

/* ---- a pair's node ---- */

static const char *const role_names[] = {"none", "catching-up", "standby", "active", "fenced"};

static void
set_role(ternd *t, int role, uint64_t epoch)
{
    if (role == t->role && epoch == t->role_epoch)
        return;
    t->role = role;
    t->role_epoch = epoch;
    tn_log_info("TERN-ROLE", "%s epoch=%" PRIu64, role_names[role], epoch);
}

static void
on_repl_role(void *arg, int role, uint64_t epoch)
{
    ternd *t = arg;
    if (t->role != TN_ROLE_ACTIVE && t->role != TN_ROLE_FENCED)
        set_role(t, role, epoch);
}

static void on_signal(uv_signal_t *h, int signum);
static void stop_node(ternd *t);

/* Client connections open now: MQTT, STOMP, AMQP (over every transport). */
static void
connections_by_protocol(const ternd *t, uint32_t by[3])
{
    by[0] = by[1] = by[2] = 0;
    for (size_t i = 0; i < t->n_mqtt; i++)
        by[0] += tn_mqtt_connections(t->mqtt[i]);
    for (size_t i = 0; i < t->n_stomp; i++)
        by[1] += tn_stomp_connections(t->stomp[i]);
    for (size_t i = 0; i < t->n_amqp; i++)
        by[2] += tn_amqp_connections(t->amqp[i]);
}

static void
count_queue(void *arg, const char *name, size_t len, tn_queue *q)
{
    (void)name;
    (void)len;
    (void)q;
    ++*(size_t *)arg;
}

/* ---- GET /metrics: the Prometheus text format ---- */

static void
metric(tn_buf *o, const char *name, const char *type, const char *help)
{
    char line[512];
    int n = snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    tn_buf_append(o, line, (size_t)n);
}

static void __attribute__((format(printf, 2, 3))) put(tn_buf *o, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        tn_buf_append(o, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* A label value: backslash, double quote and newline escaped. */
static void
put_label(tn_buf *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '\\' || ch == '"')
            tn_buf_append(o, "\\", 1);
        if (ch == '\n')
            tn_buf_append(o, "\\n", 2);
        else
            tn_buf_append(o, &ch, 1);
    }
}

typedef struct qwalk {
    tn_buf *o;
    int which; /* 0 messages, 1 consumers, 2 paged */
    uint32_t left;
} qwalk;

static void
queue_series(void *arg, const char *name, size_t len, tn_queue *q)
{
    qwalk *w = arg;
    if (!w->left)
        return;
    w->left--;
    static const char *const names[] = {"tern_queue_messages", "tern_queue_consumers",
                                        "tern_queue_paged_messages"};
    uint64_t v = w->which == 0   ? (uint64_t)tn_queue_depth(q) + tn_queue_inflight(q)
                 : w->which == 1 ? tn_queue_consumers(q)
                                 : tn_queue_paged(q);
    put(w->o, "%s{queue=\"", names[w->which]);
    put_label(w->o, name, len);
    put(w->o, "\"} %" PRIu64 "\n", v);
}

/* process_* metrics, as the Prometheus client libraries name them. */
static void
process_metrics(tn_buf *o)
{
    long page = sysconf(_SC_PAGESIZE), hz = sysconf(_SC_CLK_TCK);
    unsigned long long vsz = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &vsz, &rss) != 2)
            vsz = rss = 0;
        fclose(f);
    }
    unsigned long long ut = 0, st = 0, start = 0;
    f = fopen("/proc/self/stat", "r");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        const char *p = strrchr(buf, ')'); /* after the command name, which may hold spaces */
        if (p && sscanf(p + 2,
                        "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                        "%*d %*d %llu",
                        &ut, &st, &start) != 3)
            ut = st = start = 0;
    }
    unsigned long long btime = 0;
    f = fopen("/proc/stat", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "btime %llu", &btime) == 1)
                break;
        fclose(f);
    }
    unsigned fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            fds += e->d_name[0] != '.';
        closedir(d);
    }
    struct rlimit rl;
    metric(o, "process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.");
    put(o, "process_cpu_seconds_total %.2f\n", (double)(ut + st) / (double)hz);
    metric(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    put(o, "process_resident_memory_bytes %llu\n", rss * (unsigned long long)page);
    metric(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    put(o, "process_virtual_memory_bytes %llu\n", vsz * (unsigned long long)page);
    metric(o, "process_open_fds", "gauge", "Number of open file descriptors.");
    put(o, "process_open_fds %u\n", fds ? fds - 1 : 0); /* less the one reading the folder */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        metric(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        put(o, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
    metric(o, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
    put(o, "process_start_time_seconds %.2f\n", (double)btime + (double)start / (double)hz);
}

/* ---- the JSON admin API (read-only so far) ---- */

static void
json_reply(tn_http_resp *resp, int status, json_t *j)
{
    resp->status = status;
    resp->content_type = "application/json";
    char *text = json_dumps(j, JSON_COMPACT);
    if (text) {
        tn_buf_append(resp->body, text, strlen(text));
        tn_buf_append(resp->body, "\n", 1);
        free(text);
    }
    json_decref(j);
}

static void
json_error(tn_http_resp *resp, int status, const char *msg)
{
    json_reply(resp, status, json_pack("{s:s, s:i}", "error", msg, "status", status));
}

static void
queue_json(void *arg, const char *name, size_t len, tn_queue *q)
{
    json_t *a = arg;
    json_array_append_new(a, json_pack("{s:s%, s:I, s:I, s:I, s:I}", "name", name, len, "messages",
                                       (json_int_t)tn_queue_depth(q) + tn_queue_inflight(q),
                                       "consumers", (json_int_t)tn_queue_consumers(q), "paged",
                                       (json_int_t)tn_queue_paged(q), "dequeued",
                                       (json_int_t)tn_queue_taken(q)));
}

static void
serve_api(ternd *t, const tn_http_req *req, tn_http_resp *resp)
{
    if (t->api_closed) {
        json_error(resp, 403,
                   "the admin API is open only without a password file for now (HTTP Basic "
                   "for admin users is not there yet)");
        return;
    }
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        json_error(resp, 405, "only GET so far");
        return;
    }
    if (strcmp(req->path, "/api/v1/overview") == 0) {
        uint32_t by[3];
        connections_by_protocol(t, by);
        tn_broker_stats bs;
        tn_broker_get_stats(t->broker, &bs);
        size_t queues = 0;
        tn_broker_walk_queues(t->broker, count_queue, &queues);
        uint64_t up = (uv_now(&t->loop) - t->started_ms) / 1000;
        json_reply(resp, 200,
                   json_pack("{s:s, s:I, s:s, s:I, s:{s:i, s:i, s:i}, s:I, s:I, s:i, s:i, s:I}",
                             "version", TERN_VERSION, "uptime_seconds", (json_int_t)up, "role",
                             t->paired ? role_names[t->role] : "single", "epoch",
                             (json_int_t)t->role_epoch, "connections", "mqtt", by[0], "stomp",
                             by[1], "amqp", by[2], "messages_published", (json_int_t)bs.published,
                             "deliveries", (json_int_t)bs.delivered, "sessions", bs.sessions,
                             "retained", bs.retained, "queues", (json_int_t)queues));
        return;
    }
    if (strcmp(req->path, "/api/v1/queues") == 0) {
        json_t *ql = json_array();
        tn_broker_walk_queues(t->broker, queue_json, ql);
        json_reply(resp, 200, ql);
        return;
    }
    json_error(resp, 404, "no such route");
}

static void
serve_http(void *arg, const tn_http_req *req, tn_http_resp *resp)
{
    ternd *t = arg;
    tn_buf *o = resp->body;
    if (strncmp(req->path, "/api/", 5) == 0) {
        serve_api(t, req, resp);
        return;
    }
    if (strcmp(req->path, "/metrics") != 0) {
        resp->status = 404;
        static const char nf[] = "not found: this listener serves GET /metrics and /api/v1/\n";
        tn_buf_append(o, nf, sizeof nf - 1);
        return;
    }
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        resp->status = 405;
        tn_buf_append(o, "GET /metrics\n", 13);
        return;
    }
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    metric(o, "tern_build_info", "gauge", "ternd's version (the value is always 1).");
    put(o, "tern_build_info{version=\"%s\"} 1\n", TERN_VERSION);
    uint32_t by[3];
    connections_by_protocol(t, by);
    metric(o, "tern_connections", "gauge",
           "Client connections open now, by protocol (over TCP, TLS and WebSocket).");
    put(o, "tern_connections{protocol=\"mqtt\"} %u\n", by[0]);
    put(o, "tern_connections{protocol=\"stomp\"} %u\n", by[1]);
    put(o, "tern_connections{protocol=\"amqp\"} %u\n", by[2]);
    tn_broker_stats bs;
    tn_broker_get_stats(t->broker, &bs);
    metric(o, "tern_messages_published_total", "counter",
           "Messages accepted, on topics and queues, from every protocol.");
    put(o, "tern_messages_published_total %" PRIu64 "\n", bs.published);
    metric(o, "tern_deliveries_total", "counter", "Deliveries queued to subscribers.");
    put(o, "tern_deliveries_total %" PRIu64 "\n", bs.delivered);
    metric(o, "tern_dropped_qos0_total", "counter", "QoS 0 deliveries dropped for slow consumers.");
    put(o, "tern_dropped_qos0_total %" PRIu64 "\n", bs.dropped_qos0);
    metric(o, "tern_dropped_offline_total", "counter",
           "QoS 1/2 deliveries dropped for full offline sessions.");
    put(o, "tern_dropped_offline_total %" PRIu64 "\n", bs.dropped_offline);
    metric(o, "tern_sessions", "gauge", "Sessions, persistent ones and queues included.");
    put(o, "tern_sessions %u\n", bs.sessions);
    metric(o, "tern_retained_messages", "gauge", "Retained messages.");
    put(o, "tern_retained_messages %u\n", bs.retained);
    metric(o, "tern_slow_consumers", "gauge", "Subscribers that are slow consumers now.");
    put(o, "tern_slow_consumers %u\n", bs.slow_now);
    static const char *const qm[][3] = {
        {"tern_queue_messages", "gauge",
         "Messages on a named queue, waiting or delivered and not yet acknowledged."},
        {"tern_queue_consumers", "gauge", "Consumers attached to a named queue."},
        {"tern_queue_paged_messages", "gauge",
         "Messages on a named queue held in the journal only (paged out of memory)."},
    };
    for (int k = 0; k < 3; k++) {
        metric(o, qm[k][0], qm[k][1], qm[k][2]);
        qwalk w = {o, k, t->max_series};
        tn_broker_walk_queues(t->broker, queue_series, &w);
    }
    if (t->store) {
        metric(o, "tern_journal_bytes", "gauge", "Bytes of the journal's segments on disk.");
        put(o, "tern_journal_bytes %" PRIu64 "\n", tn_store_bytes(t->store));
        metric(o, "tern_journal_last_lsn", "gauge", "The journal's last record number.");
        put(o, "tern_journal_last_lsn %" PRIu64 "\n", tn_store_last_lsn(t->store));
    }
    if (t->paired) {
        metric(o, "tern_pair_role", "gauge",
               "This node's role in its pair (1 for the role it has now).");
        for (int r = TN_ROLE_CATCHING_UP; r <= TN_ROLE_FENCED; r++)
            put(o, "tern_pair_role{role=\"%s\"} %d\n", role_names[r], t->role == r);
        metric(o, "tern_pair_epoch", "gauge", "The epoch of this node's role.");
        put(o, "tern_pair_epoch %" PRIu64 "\n", t->role_epoch);
    }
    process_metrics(o);
}

/* The lease is ours: what the standby received is this node's journal; recovered into the
 * broker, it serves clients and confirms alone until its standby has caught up. */
static void
on_granted(void *arg, uint64_t epoch)
{
    ternd *t = arg;
    char err[512];
    if (t->role == TN_ROLE_FENCED || t->role == TN_ROLE_ACTIVE) {
        /* Not wanted any more (fenced: only a restart rejoins), or a grant already in use. */
        tn_lease_release(t->lease);
        return;
    }
    tn_repl_standby_stop(t->repl);
    bool ok = tn_store_open(&t->sc, &t->store, err, sizeof err) == 0;
    if (ok) {
        tn_broker_attach_store(t->broker, t->store);
        ok = tn_broker_recover(t->broker, err, sizeof err) == 0 && tn_store_start(t->store) == 0 &&
             tn_repl_active_start(t->repl, t->store, t->lease, epoch, err, sizeof err) == 0;
    }
    if (!ok) {
        tn_log_error("TERN-STORE", "cannot become active: %s", err);
        tn_lease_release(t->lease);
        stop_node(t);
        return;
    }
    tn_broker_set_standby(t->broker, false, NULL);
    t->active_since = uv_now(&t->loop);
    set_role(t, TN_ROLE_ACTIVE, epoch);
}

/* A node fenced soon after it became active (within two leases and a second: a journal too
 * long to replay within the lease, say) would be granted the role again after rejoining and
 * fenced again, round and round: after REJOIN_MAX such fences in a row (TERN_REJOINS, kept
 * across exec) it stays fenced and says so. Being fenced after serving a while (a freeze, a
 * cut) is a failure like any other and starts the count again. */
#define REJOIN_MAX 3

/* Fenced: stops as on SIGTERM (its journal closed cleanly), then main() runs ternd again with
 * the same arguments, in the same process: it starts as a standby and catches up from the
 * active, as a restarted node does. */
static void
rejoin(ternd *t)
{
    if (t->stopping)
        return; /* asked to stop (SIGTERM) first: no next run */
    unsigned n = 0;
    const char *env = getenv("TERN_REJOINS");
    if (env)
        n = (unsigned)strtoul(env, NULL, 10);
    uint64_t now = uv_now(&t->loop);
    bool quick = t->active_since && now - t->active_since < 2 * (uint64_t)t->lease_ms + 1000;
    n = quick ? n + 1 : 0;
    if (n >= REJOIN_MAX) {
        tn_log_error("TERN-REJOIN",
                     "fenced %u times in a row within %u ms of becoming active: staying fenced "
                     "(refusing clients, confirming nothing); restart this node once the cause "
                     "is found (a journal too long to replay within --pair-lease?)",
                     n, 2 * t->lease_ms + 1000);
        return;
    }
    char v[32];
    snprintf(v, sizeof v, "%u", n);
    setenv("TERN_REJOINS", v, 1);
    char *ports = tn_xcalloc(t->n_ports + 1, 6);
    for (size_t i = 0, len = 0; i < t->n_ports; i++)
        len += (size_t)sprintf(ports + len, "%s%u", i ? "," : "", t->ports[i]);
    setenv("TERN_REJOIN_PORTS", ports, 1);
    free(ports);
    tn_log_info("TERN-REJOIN", "stopping, then starting again in place as the standby");
    t->reexec = true;
    stop_node(t);
}

/* The lease is gone (expired during a freeze, a newer epoch, the witness unreachable): nothing
 * is confirmed from now on, and new clients are refused as on a standby. */
static void
on_lost(void *arg, uint64_t epoch, const char *why)
{
    ternd *t = arg;
    tn_lease_want(t->lease, false); /* a fenced node never asks again: a restart rejoins */
    tn_repl_fence(t->repl);
    tn_broker_set_standby(t->broker, true, t->peer_host);
    /* Its clients go at once: they reconnect to the new active (what they sent here and was
     * not confirmed, they send again). */
    tn_net_drop_all(t->net);
    if (t->ws)
        tn_ws_drop_all(t->ws);
    tn_log_warn("TERN-FENCED",
                "lease lost at epoch %" PRIu64 " (%s): confirming nothing more, clients "
                "closed; %s",
                epoch, why,
                t->rejoin_manual ? "restart this node to rejoin as the standby"
                                 : "restarting in place to rejoin as the standby");
    set_role(t, TN_ROLE_FENCED, epoch);
    if (!t->rejoin_manual)
        rejoin(t);
}

/* DIR/node-id: this node's name for the pair, made once (a node with a new data folder is a
 * new node: never taken for the standby the witness recorded in sync). */
static int
node_id(const char *dir, char *out, size_t len)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/node-id", dir);
    FILE *f = fopen(path, "r");
    if (f) {
        bool ok = fgets(out, (int)len, f) != NULL;
        fclose(f);
        out[strcspn(out, "\r\n")] = 0;
        return ok && out[0] ? 0 : -1;
    }
    unsigned char rnd[8];
    if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0)
        return -1;
    snprintf(out, len, "node-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
             rnd[4], rnd[5], rnd[6], rnd[7]);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0)
        return -1;
    bool ok = dprintf(fd, "%s\n", out) > 0 && fsync(fd) == 0;
    close(fd);
    return ok ? 0 : -1;
}

static void
witness_signal(uv_signal_t *h, int signum)
{
    ternd *t = h->data;
    tn_log_info("TERN-STOP", "signal %d: shutting down", signum);
    tn_witness_close(t->witness);
    uv_close((uv_handle_t *)&t->sigint, NULL);
    uv_close((uv_handle_t *)&t->sigterm, NULL);
}

/* ternd --role witness --listen witness://ADDR:PORT --data DIR (the config's checked: one
 * witness:// listener). */
static int
run_witness(const char *host, uint16_t port, const char *dir, uint32_t lease_ms)
{
    ternd t = {0};
    uv_loop_init(&t.loop);
    char err[512];
    uint16_t bound = 0;
    if (tn_witness_open(&t.loop, host, port, dir, lease_ms, &t.witness, &bound, err, sizeof err) !=
        0) {
        tn_log_error("TERN-WITNESS", "%s", err);
        uv_loop_close(&t.loop);
        return 1;
    }
    uv_signal_init(&t.loop, &t.sigint);
    uv_signal_init(&t.loop, &t.sigterm);
    t.sigint.data = t.sigterm.data = &t;
    uv_signal_start(&t.sigint, witness_signal, SIGINT);
    uv_signal_start(&t.sigterm, witness_signal, SIGTERM);
    bool v6 = strchr(host, ':') != NULL;
    tn_log_info("TERN-READY", "listening on witness://%s%s%s:%u", v6 ? "[" : "", host,
                v6 ? "]" : "", bound);
    tn_log_info("TERN-START", "ternd %s started as the witness, data in %s", TERN_VERSION, dir);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    uv_loop_close(&t.loop);
    tn_log_info("TERN-STOPPED", "ternd stopped");
    return 0;
}

/* After a burst of TLS handshakes: their transient buffers (OpenSSL's record buffers and
 * handshake messages, the connections' first input and output) are free by now but lie
 * between the connections' lasting state, where free() cannot give pages back. Once the
 * burst has been over for a second (the sweeps have freed the idle buffers), malloc_trim
 * returns those pages: about 0.7 KiB per new TLS connection. */
static void
trim_after_handshakes(ternd *t, uint64_t now)
{
#ifdef __GLIBC__
    uint64_t hs = tn_net_tls_handshakes(t->net);
    if (hs != t->last_hs) {
        t->last_hs = hs;
        t->last_hs_at = now;
    } else if (hs - t->trimmed_hs >= 256 && now - t->last_hs_at >= 1000) {
        malloc_trim(0);
        t->trimmed_hs = hs;
    }
#else
    (void)t;
    (void)now;
#endif
}

/* A standby in sync whose active has gone silent (no frame for three of its 100 ms beats, or
 * the link down) may be granted the lease within the lease's time: until then it holds new
 * clients instead of sending them back to a node that is dead or frozen, and serves them the
 * moment it is active (or refuses them as usual once the hold ends). */
static void
update_hold(ternd *t, uint64_t now)
{
    bool linked = false;
    uint64_t heard = tn_repl_heard(t->repl, &linked);
    uint64_t until = 0;
    if (t->role == TN_ROLE_STANDBY && heard && (!linked || now - heard >= 350))
        until = heard + t->hold_ms;
    if (until <= now)
        until = 0;
    if (until && !t->holding)
        tn_log_info("PAIR-HOLD",
                    "the active has been silent for %" PRIu64
                    " ms (link %s): new clients wait until this node is active, %" PRIu64
                    " ms at most",
                    now - heard, linked ? "up" : "down", until - now);
    else if (!until && t->holding && t->role == TN_ROLE_STANDBY)
        tn_log_info("PAIR-HOLD", "over (%s): new clients are sent to the active again",
                    linked && now - heard < 350 ? "the active is heard again" : "no lease came");
    t->holding = until != 0;
    tn_broker_set_hold(t->broker, until);
}

static void
on_tick(uv_timer_t *h)
{
    ternd *t = h->data;
    uint64_t now = uv_now(&t->loop);
    if (t->repl && t->role != TN_ROLE_ACTIVE)
        update_hold(t, now);
    tn_broker_tick(t->broker, now);
    trim_after_handshakes(t, now);
}

/* Every connection is closed: flush and close the journal, then let the loop end. */
static void
net_closed(void *arg)
{
    ternd *t = arg;
    tn_repl_free(t->repl); /* before the store it gates */
    t->repl = NULL;
    tn_lease_free(t->lease);
    t->lease = NULL;
    tn_store_close(t->store);
    t->store = NULL;
    uv_close((uv_handle_t *)&t->store_wake, NULL);
    uv_close((uv_handle_t *)&t->tick, NULL);
}

static void
signal_closed(uv_handle_t *h)
{
    (void)h;
}

static void stop_node(ternd *t);

/* SIGHUP: the password and ACL files are read again; connected clients keep who they are. */
static void
on_sighup(uv_signal_t *h, int signum)
{
    (void)signum;
    ternd *t = h->data;
    char err[512];
    if (!t->authn)
        return;
    if (tn_authn_reload(t->authn, err, sizeof err) != 0) {
        tn_log_error("AUTH-RELOAD", "%s: keeping the files read before", err);
    } else {
        /* The new permissions apply at once: to the next subscribe or publish, and to the next
         * message on every existing subscription. */
        tn_broker_set_acl(t->broker, tn_authn_acl(t->authn));
        tn_log_info("AUTH-RELOAD", "%zu users; the files are read again", tn_authn_users(t->authn));
    }
}

static void
on_signal(uv_signal_t *h, int signum)
{
    ternd *t = h->data;
    if (t->stopping) {
        if (t->reexec) { /* stopping to rejoin: stop for good instead, as asked */
            t->reexec = false;
            tn_log_info("TERN-STOP", "signal %d: shutting down (not rejoining)", signum);
            uv_close((uv_handle_t *)&t->sigint, signal_closed);
            uv_close((uv_handle_t *)&t->sigterm, signal_closed);
        }
        return;
    }
    tn_log_info("TERN-STOP", "signal %d: shutting down", signum);
    stop_node(t);
}

/* Closes every connection, then the journal; the loop ends once all is closed. */
static void
stop_node(ternd *t)
{
    if (t->stopping)
        return;
    t->stopping = true;
    if (t->lease && t->role == TN_ROLE_ACTIVE) {
        /* Confirm nothing more, then hand the role over at once (not at the lease's end). */
        tn_repl_fence(t->repl);
        tn_lease_release(t->lease);
    }
    if (t->lease)
        tn_lease_want(t->lease, false);
    if (t->ws)
        tn_ws_close(t->ws);
    tn_net_close(t->net, net_closed, t);
    if (t->reexec) {
        /* Rejoining: a SIGTERM meanwhile still stops the node (on_signal); they are closed
         * just before the next run starts. */
        uv_unref((uv_handle_t *)&t->sigint);
        uv_unref((uv_handle_t *)&t->sigterm);
        uv_close((uv_handle_t *)&t->sighup, signal_closed);
        return;
    }
    uv_close((uv_handle_t *)&t->sigint, signal_closed);
    uv_close((uv_handle_t *)&t->sigterm, signal_closed);
    uv_close((uv_handle_t *)&t->sighup, signal_closed);
}

/* Whether --flag's value v is a or b (else says so on stderr). */
static bool
one_of(const char *flag, const char *v, const char *a, const char *b)
{
    if (strcmp(v, a) == 0 || strcmp(v, b) == 0)
        return true;
    fprintf(stderr, "ternd: --%s %s: expected %s or %s\n", flag, v, a, b);
    return false;
}

int
main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a write to a reset peer must not kill the broker */
#ifdef __GLIBC__
    /* Messages of 64 KiB to a few MiB come and go by the thousand per second. glibc's defaults
     * map each of them fresh (or trim the heap under them), so every one was paid for again in
     * page faults and zeroed pages: 160 faults per 1 MiB message, a third of ternd's time.
     * Up to 4 MiB they come from the heap, which keeps up to 64 MiB free before giving memory
     * back; larger ones (up to 100 MiB) are still mapped and returned as soon as freed. */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
    enum {
        OPT_LOG_LEVEL = 256,
        OPT_TLS_CERT,
        OPT_TLS_KEY,
        OPT_TLS_CA,
        OPT_TLS_VERIFY,
        OPT_ROLE,
        OPT_PAIR_LISTEN,
        OPT_PAIR_PEER,
        OPT_PAIR_WITNESS,
        OPT_PAIR_ZK,
        OPT_PAIR_ALONE,
        OPT_PAIR_ASYNC,
        OPT_PAIR_LEASE,
        OPT_PAIR_RENEW,
        OPT_PAIR_REJOIN,
        OPT_PASSWORD_FILE,
        OPT_ACL_FILE,
        OPT_ALLOW_ANON,
    };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"data", required_argument, NULL, 'd'},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"tls-ca", required_argument, NULL, OPT_TLS_CA},
        {"tls-verify-client", required_argument, NULL, OPT_TLS_VERIFY},
        {"role", required_argument, NULL, OPT_ROLE},
        {"pair-listen", required_argument, NULL, OPT_PAIR_LISTEN},
        {"pair-peer", required_argument, NULL, OPT_PAIR_PEER},
        {"pair-witness", required_argument, NULL, OPT_PAIR_WITNESS},
        {"pair-zookeeper", required_argument, NULL, OPT_PAIR_ZK},
        {"pair-alone-timeout", required_argument, NULL, OPT_PAIR_ALONE},
        {"pair-async", no_argument, NULL, OPT_PAIR_ASYNC},
        {"pair-lease", required_argument, NULL, OPT_PAIR_LEASE},
        {"pair-renew", required_argument, NULL, OPT_PAIR_RENEW},
        {"pair-rejoin", required_argument, NULL, OPT_PAIR_REJOIN},
        {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},
        {"acl-file", required_argument, NULL, OPT_ACL_FILE},
        {"allow-anonymous", required_argument, NULL, OPT_ALLOW_ANON},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *data = NULL, *level = NULL;
    const char *tls_cert = NULL, *tls_key = NULL, *tls_ca = NULL, *tls_verify = NULL;
    const char *role = NULL;
    const char *pair_listen = NULL, *pair_peer = NULL, *pair_witness = NULL, *pair_zk = NULL;
    uint32_t pair_alone_ms = 0, pair_lease_ms = 0, pair_renew_ms = 0;
    const char *pair_rejoin = NULL;
    const char *password_file = NULL, *acl_file = NULL;
    int allow_anon = -1;
    bool pair_async = false;
    tn_conf_listener *listen = NULL;
    size_t n_listen = 0;
    char err[512];
    int ret = 1;
    tn_conf conf;
    tn_conf_init(&conf);

    int ch;
    while ((ch = getopt_long(argc, argv, "c:l:d:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config = optarg;
            break;
        case 'l':
            listen = tn_xrealloc(listen, (n_listen + 1) * sizeof *listen);
            if (tn_conf_parse_listen_url(optarg, &listen[n_listen], err, sizeof err) != 0) {
                fprintf(stderr, "ternd: --listen %s: %s\n", optarg, err);
                goto out;
            }
            n_listen++;
            break;
        case 'd':
            data = optarg;
            break;
        case OPT_LOG_LEVEL:
            level = optarg;
            break;
        case OPT_TLS_CERT:
            tls_cert = optarg;
            break;
        case OPT_TLS_KEY:
            tls_key = optarg;
            break;
        case OPT_TLS_CA:
            tls_ca = optarg;
            break;
        case OPT_TLS_VERIFY:
            if (tn_tls_verify_parse(optarg) < 0) {
                fprintf(stderr,
                        "ternd: --tls-verify-client %s: expected none, optional or require\n",
                        optarg);
                ret = 2;
                goto out;
            }
            tls_verify = optarg;
            break;
        case OPT_ROLE:
            if (!one_of("role", optarg, "node", "witness")) {
                ret = 2;
                goto out;
            }
            role = optarg;
            break;
        case OPT_PAIR_LISTEN:
            pair_listen = optarg;
            break;
        case OPT_PAIR_PEER:
            pair_peer = optarg;
            break;
        case OPT_PAIR_WITNESS:
            pair_witness = optarg;
            break;
        case OPT_PAIR_ZK:
            pair_zk = optarg;
            break;
        case OPT_PAIR_ALONE: {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end || end == optarg || v < 100 || v > 600000) {
                fprintf(stderr, "ternd: --pair-alone-timeout %s: expected 100..600000 ms\n",
                        optarg);
                ret = 2;
                goto out;
            }
            pair_alone_ms = (uint32_t)v;
            break;
        }
        case OPT_PAIR_ASYNC:
            pair_async = true;
            break;
        case OPT_PAIR_LEASE:
        case OPT_PAIR_RENEW: {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end || end == optarg || v > 600000) {
                fprintf(stderr, "ternd: --%s %s: expected milliseconds\n",
                        ch == OPT_PAIR_LEASE ? "pair-lease" : "pair-renew", optarg);
                ret = 2;
                goto out;
            }
            *(ch == OPT_PAIR_LEASE ? &pair_lease_ms : &pair_renew_ms) = (uint32_t)v;
            break;
        }
        case OPT_PASSWORD_FILE:
            password_file = optarg;
            break;
        case OPT_ACL_FILE:
            acl_file = optarg;
            break;
        case OPT_ALLOW_ANON:
            if (!one_of("allow-anonymous", optarg, "true", "false")) {
                ret = 2;
                goto out;
            }
            allow_anon = strcmp(optarg, "true") == 0;
            break;
        case OPT_PAIR_REJOIN:
            if (!one_of("pair-rejoin", optarg, "auto", "manual")) {
                ret = 2;
                goto out;
            }
            pair_rejoin = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            ret = 0;
            goto out;
        case 'V':
            printf("ternd %s\n", TERN_VERSION);
            ret = 0;
            goto out;
        default:
            fputs("Try 'ternd --help'.\n", stderr);
            ret = 2;
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ternd: unexpected argument '%s'\nTry 'ternd --help'.\n", argv[optind]);
        ret = 2;
        goto out;
    }
    if (config && tn_conf_load_file(&conf, config, err, sizeof err) != 0) {
        fprintf(stderr, "ternd: %s\n", err);
        goto out;
    }
    if (n_listen)
        tn_conf_set_listeners(&conf, listen, n_listen);
    if (data) {
        free(conf.data_dir);
        conf.data_dir = tn_xstrdup(data);
    }
    if (level) {
        free(conf.log_level);
        conf.log_level = tn_xstrdup(level);
    }
    /* The --tls-* flags set the top-level TLS settings, which every TLS listener uses where its
     * own config says nothing. */
    if (tls_cert)
        tn_conf_tls_set(&conf.tls.cert, tls_cert);
    if (tls_key)
        tn_conf_tls_set(&conf.tls.key, tls_key);
    if (tls_ca)
        tn_conf_tls_set(&conf.tls.ca, tls_ca);
    if (tls_verify)
        tn_conf_tls_set(&conf.tls.verify_client, tls_verify);
    /* The --pair-* flags over the config's pair: section. */
    if (role)
        tn_conf_pair_set(&conf.pair.role, role);
    if (pair_listen)
        tn_conf_pair_set(&conf.pair.listen, pair_listen);
    if (pair_peer)
        tn_conf_pair_set(&conf.pair.peer, pair_peer);
    if (pair_witness) {
        tn_conf_pair_set(&conf.pair.witness, pair_witness);
        tn_conf_pair_set(&conf.pair.zookeeper, NULL);
    }
    if (pair_zk) {
        tn_conf_pair_set(&conf.pair.zookeeper, pair_zk);
        tn_conf_pair_set(&conf.pair.witness, NULL);
    }
    if (pair_alone_ms)
        conf.pair.alone_timeout = pair_alone_ms;
    if (pair_async)
        conf.pair.async = true;
    if (pair_lease_ms)
        conf.pair.lease = pair_lease_ms;
    if (pair_renew_ms)
        conf.pair.renew = pair_renew_ms;
    if (pair_rejoin)
        conf.pair.rejoin_manual = strcmp(pair_rejoin, "manual") == 0;
    if (password_file)
        tn_conf_pair_set(&conf.auth.password_file, password_file);
    if (acl_file)
        tn_conf_pair_set(&conf.auth.acl_file, acl_file);
    if (allow_anon >= 0)
        conf.auth.allow_anonymous = allow_anon;
    if (tn_conf_validate(&conf, err, sizeof err) != 0) {
        fprintf(stderr, "ternd: %s\n", err);
        goto out;
    }
    tn_log_level lvl = TN_LOG_INFO;
    tn_log_parse_level(conf.log_level, &lvl);
    tn_log_set_level(lvl);
    if (strcmp(conf.pair.role, "witness") == 0) {
        ret = run_witness(conf.listeners[0].address, conf.listeners[0].port, conf.data_dir,
                          conf.pair.lease);
        goto out;
    }
    char pl_host[64] = "", pp_host[64] = "", pw_host[64] = "";
    uint16_t pl_port = 0, pp_port = 0, pw_port = 0;
    bool paired = conf.pair.listen != NULL;
    /* Checked by tn_conf_validate: these parse. */
    if (paired &&
        (tn_conf_parse_host_port(conf.pair.listen, pl_host, sizeof pl_host, &pl_port) != 0 ||
         tn_conf_parse_host_port(conf.pair.peer, pp_host, sizeof pp_host, &pp_port) != 0 ||
         (conf.pair.witness &&
          tn_conf_parse_host_port(conf.pair.witness, pw_host, sizeof pw_host, &pw_port) != 0))) {
        fprintf(stderr, "ternd: pair addresses: expected ADDR:PORT\n");
        ret = 2;
        goto out;
    }
    uint32_t pair_alone = conf.pair.alone_timeout;
    bool pair_is_async = conf.pair.async;
    bool anonymous = false;
    if (tn_conf_anonymous(&conf, &anonymous, err, sizeof err) != 0) {
        tn_log_error("TERN-AUTH", "%s", err);
        goto out;
    }
    if (tn_mkdirs(conf.data_dir) != 0) {
        tn_log_error("TERN-DATA-DIR", "cannot create data folder %s: %s", conf.data_dir,
                     strerror(errno));
        goto out;
    }

    /* One descriptor per connection: take all the kernel allows us, and say when it is less
     * than max_connections needs. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)conf.limits.max_connections + 64)
            tn_log_warn("TERN-FD-LIMIT",
                        "open file limit %llu allows fewer than max_connections %u connections "
                        "(raise it with ulimit -n or LimitNOFILE=)",
                        (unsigned long long)rl.rlim_cur, conf.limits.max_connections);
    }

    ternd t = {0};
    t.mqtt = tn_xcalloc(conf.n_listeners, sizeof *t.mqtt);
    t.stomp = tn_xcalloc(conf.n_listeners, sizeof *t.stomp);
    t.amqp = tn_xcalloc(conf.n_listeners, sizeof *t.amqp);
    t.tls = tn_xcalloc(conf.n_listeners, sizeof *t.tls);
    t.ports = tn_xcalloc(conf.n_listeners, sizeof *t.ports);
    t.n_ports = conf.n_listeners;
    uv_loop_init(&t.loop);
    tn_broker_limits bl = {
        .max_inflight = conf.limits.max_inflight,
        .max_queued = conf.limits.max_queued_messages,
        .max_offline = conf.limits.max_offline_messages,
        .max_queue_memory = conf.limits.max_queue_memory,
        .compact_bytes = conf.store.compact_bytes,
        .slow_consumer_ms = conf.limits.slow_consumer_timeout,
        .max_topic_levels = conf.limits.max_topic_levels,
        .max_incoming = conf.limits.max_incoming_memory,
    };
    tn_broker *broker = tn_broker_new(&bl);
    t.broker = broker;
    t.max_series = conf.limits.metrics_max_destinations;
    t.api_closed = conf.auth.password_file != NULL;
    t.started_ms = uv_now(&t.loop);
    tn_authn_conf auc = {.loop = &t.loop,
                         .password_file = conf.auth.password_file,
                         .acl_file = conf.auth.acl_file,
                         .allow_anonymous = anonymous,
                         .fail_delay_ms = conf.auth.fail_delay,
                         .identity_as_username = conf.auth.use_identity_as_username};
    bool auth_ok = tn_authn_new(&auc, &t.authn, err, sizeof err) == 0;
    if (!auth_ok)
        tn_log_error("TERN-AUTH", "%s", err);
    else
        tn_log_info("TERN-AUTH", "%zu users%s%s; anonymous clients %s; %s%s%s",
                    tn_authn_users(t.authn), conf.auth.password_file ? " from " : "",
                    conf.auth.password_file ? conf.auth.password_file : " (no password file)",
                    anonymous ? "allowed" : "refused",
                    conf.auth.use_identity_as_username
                        ? "the client certificate's CN is the user name; "
                        : "",
                    conf.auth.acl_file ? "ACL from " : "no ACL",
                    conf.auth.acl_file ? conf.auth.acl_file : "");
    tn_auth auth = auth_ok ? tn_authn_iface(t.authn) : (tn_auth){0};
    if (auth_ok)
        tn_broker_set_acl(broker, tn_authn_acl(t.authn));

    /* The journal: replayed before any listener opens. */
    char jdir[4200];
    snprintf(jdir, sizeof jdir, "%s/journal", conf.data_dir);
    uv_async_init(&t.loop, &t.store_wake, on_store_wake);
    t.store_wake.data = &t;
    tn_sync_policy sync = strcmp(conf.store.sync, "never") == 0      ? TN_SYNC_NEVER
                          : strcmp(conf.store.sync, "interval") == 0 ? TN_SYNC_INTERVAL
                                                                     : TN_SYNC_ALWAYS;
    tn_store_conf sc = {.dir = jdir,
                        .sync = sync,
                        .interval_ms = conf.store.sync_interval_ms,
                        .max_record = max_record(&conf),
                        .notify = store_notify,
                        .notify_arg = &t.store_wake,
                        .notify_written = paired};
    t.sc = sc;
    t.sc.dir = jdir;
    bool store_ok = true;
    if (paired) {
        /* A pair's node starts as a standby: no client is served and the journal is followed
         * from the active, until the witness grants this node the lease. */
        t.paired = true;
        snprintf(t.peer_host, sizeof t.peer_host, "%s", pp_host);
        tn_broker_set_standby(broker, true, pp_host);
        if (node_id(conf.data_dir, t.node, sizeof t.node) != 0) {
            tn_log_error("TERN-PAIR", "%s/node-id: cannot read or make this node's name",
                         conf.data_dir);
            store_ok = false;
        }
    } else {
        store_ok = tn_store_open(&sc, &t.store, err, sizeof err) == 0;
        if (store_ok) {
            tn_broker_attach_store(broker, t.store);
            store_ok =
                tn_broker_recover(broker, err, sizeof err) == 0 && tn_store_start(t.store) == 0;
        }
        if (!store_ok)
            tn_log_error("TERN-STORE", "cannot use the journal: %s", err);
    }
    tn_net_limits nl = {
        .max_connections = conf.limits.max_connections,
        /* Large messages arrive straight into their message (held once, budgeted); input kept
         * per connection is the rest: packets and frames up to max_packet_size, and the
         * headers of a large one (an MQTT topic or STOMP headers, up to 64 KiB). */
        .max_input = conf.limits.max_packet_size + 2 * 65536 + 8,
        .max_output = conf.limits.max_output_buffer,
        .close_timeout_ms = conf.limits.close_timeout,
        .tls_handshake_timeout_ms = conf.limits.tls_handshake_timeout,
        .per_ip = t.per_ip = tn_iplimit_new(conf.limits.max_connections_per_ip),
    };
    t.net = tn_net_new(&t.loop, &nl);
    /* Slow consumers are declared within a tenth of slow_consumer_timeout (at most 100 ms). */
    uint64_t tick_ms = conf.limits.slow_consumer_timeout / 10;
    tick_ms = tick_ms < 10 ? 10 : tick_ms > 100 ? 100 : tick_ms;
    if (paired && tick_ms > 50)
        tick_ms = 50; /* a standby notices a silent active within 50 ms (update_hold) */
    uv_timer_init(&t.loop, &t.tick);
    t.tick.data = &t;
    uv_timer_start(&t.tick, on_tick, tick_ms, tick_ms);
    uv_unref((uv_handle_t *)&t.tick);
    tn_broker_tick(broker, uv_now(&t.loop));
    /* Signals first: a script may send SIGTERM as soon as it sees TERN-READY. */
    uv_signal_init(&t.loop, &t.sigint);
    uv_signal_init(&t.loop, &t.sigterm);
    t.sigint.data = t.sigterm.data = &t;
    uv_signal_start(&t.sigint, on_signal, SIGINT);
    uv_signal_start(&t.sigterm, on_signal, SIGTERM);
    uv_signal_init(&t.loop, &t.sighup);
    t.sighup.data = &t;
    uv_signal_start(&t.sighup, on_sighup, SIGHUP);
    /* A node that restarted itself in place (rejoin) had these blocked from the moment it
     * decided to: one sent meanwhile is pending and shuts this run down now, as asked. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    sigprocmask(SIG_UNBLOCK, &stop_signals, NULL);
    bool ok = store_ok && auth_ok;
    /* Rejoining in place: listeners asked to pick any port (0) take the ones the last run
     * had, so clients and scripts still find this node. */
    const char *prev_ports = getenv("TERN_REJOIN_PORTS");
    for (size_t i = 0; i < conf.n_listeners && ok; i++) {
        tn_conf_listener *l = &conf.listeners[i];
        const char *scheme = tn_conf_proto_name(l->proto);
        unsigned prev = 0;
        int used = 0;
        if (prev_ports && sscanf(prev_ports, "%u%n", &prev, &used) == 1) {
            prev_ports += used + (prev_ports[used] == ',');
            if (l->port == 0 && prev > 0 && prev <= 65535)
                l->port = (uint16_t)prev;
        }
        /* mqtts is mqtt over TLS, and so on. */
        tn_proto base = l->proto == TN_PROTO_MQTTS    ? TN_PROTO_MQTT
                        : l->proto == TN_PROTO_STOMPS ? TN_PROTO_STOMP
                        : l->proto == TN_PROTO_AMQPS  ? TN_PROTO_AMQP
                                                      : l->proto;
        if (base == TN_PROTO_HTTPS)
            base = TN_PROTO_HTTP;
        const tn_adapter_ops *ops = base == TN_PROTO_MQTT    ? &tn_mqtt_adapter
                                    : base == TN_PROTO_STOMP ? &tn_stomp_adapter
                                    : base == TN_PROTO_AMQP  ? &tn_amqp_adapter
                                    : base == TN_PROTO_HTTP  ? &tn_http_adapter
                                                             : NULL;
        tn_tls_ctx *tls = NULL;
        tn_conf_tls lt;
        tn_conf_listener_tls(&conf, l, &lt);
        tn_tls_conf tc = {.cert_file = lt.cert,
                          .key_file = lt.key,
                          .ca_file = lt.ca,
                          .verify = lt.verify_client ? tn_tls_verify_parse(lt.verify_client)
                                                     : TN_TLS_VERIFY_NONE,
                          .min_version = lt.min_version,
                          .ciphers = lt.ciphers,
                          .ciphersuites = lt.ciphersuites};
        if (tn_conf_proto_tls(l->proto)) {
            /* Loaded here for wss too: a bad certificate is reported the same way. */
            tls = t.tls[t.n_tls++] = tn_tls_ctx_new(&tc, err, sizeof err);
            if (!tls) {
                tn_log_error("TERN-TLS", "%s listener: %s", scheme, err);
                ok = false;
                break;
            }
        }
        /* One adapter instance per listener: each has its own message size limit. A WebSocket
         * listener has one of each. */
        uint32_t max_message = tn_conf_listener_max_message(&conf, l);
        void *proto = NULL;
        bool ws = tn_conf_proto_ws(l->proto);
        tn_ws_listen_conf wc = {.address = l->address,
                                .port = l->port,
                                .max_message = max_message,
                                .origins = (const char *const *)l->origins,
                                .n_origins = l->n_origins,
                                .tls = l->proto == TN_PROTO_WSS ? &tc : NULL};
        if (base == TN_PROTO_HTTP) {
            if (!t.http) {
                tn_http_conf hc = {.serve = serve_http, .arg = &t};
                t.http = tn_http_new(&hc);
            }
            proto = t.http;
        }
        if (base == TN_PROTO_MQTT || ws) {
            tn_mqtt_conf mc = {.max_message = max_message,
                               .max_packet = conf.limits.max_packet_size,
                               .connect_timeout_ms = 10000,
                               .auth = auth};
            proto = t.mqtt[t.n_mqtt++] = tn_mqtt_new(broker, &mc);
            wc.mqtt = (tn_ws_adapter){&tn_mqtt_adapter, proto};
        }
        if (base == TN_PROTO_STOMP || ws) {
            tn_stomp_conf stc = {
                .limits = {.max_line = 8192,
                           .max_headers = 128,
                           .max_header_bytes = 65536,
                           .max_body = max_message},
                .connect_timeout_ms = 10000,
                .max_deliveries = conf.limits.max_deliveries,
                .auth = auth,
            };
            proto = t.stomp[t.n_stomp++] = tn_stomp_new(broker, &stc);
            wc.stomp = (tn_ws_adapter){&tn_stomp_adapter, proto};
        }
        if (base == TN_PROTO_AMQP || ws) {
            tn_amqp_conf ac = {
                .max_message = max_message,
                .max_frame = conf.limits.amqp_max_frame_size,
                .idle_timeout_ms = conf.limits.amqp_idle_timeout,
                .max_deliveries = conf.limits.max_deliveries,
                /* A standby's redirect names this port: a pair's nodes listen alike. */
                .port = l->port,
                .auth = auth,
            };
            proto = t.amqp[t.n_amqp++] = tn_amqp_new(broker, &ac);
            wc.amqp = (tn_ws_adapter){&tn_amqp_adapter, proto};
        }
        uint16_t port = 0;
        if (ws) {
            tn_ws_limits wl = {.max_connections = nl.max_connections,
                               .max_input = nl.max_input,
                               .max_output = nl.max_output,
                               .close_timeout_ms = nl.close_timeout_ms,
                               .tls_handshake_timeout_ms = nl.tls_handshake_timeout_ms,
                               .per_ip = nl.per_ip};
            if (!t.ws && !(t.ws = tn_ws_new(&t.loop, &wl, err, sizeof err))) {
                tn_log_error("TERN-WS", "%s", err);
                ok = false;
                break;
            }
            if (tn_ws_listen(t.ws, &wc, &port, err, sizeof err) != 0) {
                tn_log_error("NET-LISTEN-FAIL", "%s listener: %s", scheme, err);
                ok = false;
                break;
            }
        } else if (!ops) {
            tn_log_error("TERN-LISTEN-PROTO", "%s:// listeners are not supported", scheme);
            ok = false;
            break;
        } else if (tn_net_listen(t.net, l->address, l->port, ops, proto, tls, &port) != 0) {
            ok = false;
            break;
        }
        bool v6 = strchr(l->address, ':') != NULL;
        tn_log_info("TERN-READY", "listening on %s://%s%s%s:%u", scheme, v6 ? "[" : "", l->address,
                    v6 ? "]" : "", port);
        t.ports[i] = port;
    }
    if (ok && paired && conf.tls.cert && conf.tls.key) {
        /* The replication link is TLS when the node has a certificate: with a CA, each node
         * must show one signed by it (the same CA as client certificates). */
        tn_tls_conf pt = {.cert_file = conf.tls.cert,
                          .key_file = conf.tls.key,
                          .ca_file = conf.tls.ca,
                          .verify = conf.tls.ca ? TN_TLS_VERIFY_REQUIRE : TN_TLS_VERIFY_NONE,
                          .min_version = conf.tls.min_version,
                          .ciphers = conf.tls.ciphers,
                          .ciphersuites = conf.tls.ciphersuites,
                          .any_purpose = true};
        if (!(t.pair_tls[0] = tn_tls_ctx_new(&pt, err, sizeof err)) ||
            !(t.pair_tls[1] = tn_tls_client_ctx_new(&pt, err, sizeof err))) {
            tn_log_error("TERN-TLS", "pair link: %s", err);
            ok = false;
        }
    }
    if (ok && paired) {
        tn_repl_conf rc = {.loop = &t.loop,
                           .tls_server = t.pair_tls[0],
                           .tls_client = t.pair_tls[1],
                           .node = t.node,
                           .listen_addr = pl_host,
                           .listen_port = pl_port,
                           .peer_host = pp_host,
                           .peer_port = pp_port,
                           .data_dir = conf.data_dir,
                           .alone_ms = pair_alone,
                           .async = pair_is_async,
                           .max_record = sc.max_record,
                           .store = &t.sc,
                           .role = on_repl_role,
                           .arg = &t};
        uint16_t rport = 0;
        if (tn_repl_new(&rc, &t.repl, &rport, err, sizeof err) != 0 ||
            tn_repl_standby_start(t.repl, err, sizeof err) != 0) {
            tn_log_error("TERN-PAIR", "%s", err);
            ok = false;
        } else {
            bool v6 = strchr(pl_host, ':') != NULL;
            tn_log_info("TERN-READY", "listening on pair://%s%s%s:%u%s", v6 ? "[" : "", pl_host,
                        v6 ? "]" : "", rport, t.pair_tls[0] ? " (TLS)" : "");
            t.hold_ms = conf.pair.lease + conf.pair.renew + 250;
            t.rejoin_manual = conf.pair.rejoin_manual;
            t.lease_ms = conf.pair.lease;
            tn_lease_conf lc = {.loop = &t.loop,
                                .lease_ms = conf.pair.lease,
                                .renew_ms = conf.pair.renew,
                                .node = t.node,
                                .host = pw_host,
                                .port = pw_port,
                                .zookeeper = conf.pair.zookeeper,
                                .granted = on_granted,
                                .lost = on_lost,
                                .arg = &t};
            if (conf.pair.zookeeper)
                tn_log_info("TERN-PAIR", "coordinator: ZooKeeper %s", conf.pair.zookeeper);
            else
                tn_log_info("TERN-PAIR", "coordinator: witness %s", conf.pair.witness);
            t.lease = tn_lease_new(&lc);
            if (t.lease == NULL) { /* tn_conf_validate checked what tn_lease_new does */
                tn_log_error("TERN-PAIR", "bad coordinator settings");
                ok = false;
            } else {
                tn_lease_want(t.lease, true);
            }
        }
    }
    if (ok) {
        tn_log_info("TERN-START", "ternd %s started, data in %s%s%s", TERN_VERSION, conf.data_dir,
                    paired ? ", pair node " : "", paired ? t.node : "");
    } else {
        t.stopping = true;
        if (t.ws)
            tn_ws_close(t.ws);
        tn_net_close(t.net, net_closed, &t);
        uv_close((uv_handle_t *)&t.sigint, signal_closed);
        uv_close((uv_handle_t *)&t.sigterm, signal_closed);
        uv_close((uv_handle_t *)&t.sighup, signal_closed);
    }
    uv_run(&t.loop, UV_RUN_DEFAULT);
    if (t.reexec) {
        /* From here a SIGTERM or SIGINT waits, pending, for the next run, which takes it once
         * its own handlers are in place (across exec the mask and pending signals stay). */
        sigset_t held;
        sigemptyset(&held);
        sigaddset(&held, SIGINT);
        sigaddset(&held, SIGTERM);
        sigprocmask(SIG_BLOCK, &held, NULL);
        uv_close((uv_handle_t *)&t.sigint, signal_closed);
        uv_close((uv_handle_t *)&t.sigterm, signal_closed);
        uv_run(&t.loop, UV_RUN_DEFAULT);
    }
    tn_ws_free(t.ws);
    tn_net_free(t.net);
    for (size_t i = 0; i < t.n_mqtt; i++)
        tn_mqtt_free(t.mqtt[i]);
    for (size_t i = 0; i < t.n_stomp; i++)
        tn_stomp_free(t.stomp[i]);
    for (size_t i = 0; i < t.n_amqp; i++)
        tn_amqp_free(t.amqp[i]);
    free(t.mqtt);
    free(t.stomp);
    free(t.amqp);
    for (size_t i = 0; i < t.n_tls; i++)
        tn_tls_ctx_free(t.tls[i]);
    free(t.tls);
    free(t.ports);
    tn_tls_ctx_free(t.pair_tls[0]);
    tn_tls_ctx_free(t.pair_tls[1]);
    tn_authn_free(t.authn);
    tn_iplimit_free(t.per_ip);
    tn_http_free(t.http);
    uv_run(&t.loop, UV_RUN_DEFAULT); /* the authenticator's handles close */
    tn_broker_free(broker);
    if (uv_loop_close(&t.loop) != 0)
        tn_log_warn("TERN-LEAK", "event loop closed with open handles");
    if (ok)
        tn_log_info("TERN-STOPPED", "ternd stopped");
    ret = ok ? 0 : 1;
    if (t.reexec && ok) {
        /* Rejoin (fenced): the same program and arguments, in this process. */
        fflush(NULL);
        execv("/proc/self/exe", argv);
        tn_log_error("TERN-REJOIN", "cannot start again (%s): restart this node", strerror(errno));
        ret = 1;
    }
out:
    for (size_t i = 0; i < n_listen; i++)
        tn_conf_listener_fini(&listen[i]);
    free(listen);
    tn_conf_fini(&conf);
    return ret;
}
