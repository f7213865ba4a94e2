/*
 * ternbench's command line: the --help text and getopt_long parsing into tn_bench_opts.
 */
#include "tools/ternbench/ternbench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: ternbench [OPTION]...\n"
    "MQTT 3.1.1, STOMP 1.2 and AMQP 1.0 load generator: many connections on one event loop,\n"
    "batched writes.\n"
    "\n"
    "  -u, --url URL            broker, mqtt://HOST:PORT, stomp://HOST:PORT or amqp://HOST:PORT\n"
    "                           with an IPv4 HOST (default mqtt://127.0.0.1:1883; no scheme\n"
    "                           means mqtt); MQTT also over TLS, mqtts://HOST:PORT, and over\n"
    "                           WebSocket, ws://HOST:PORT[/PATH] or, over TLS,\n"
    "                           wss://HOST:PORT[/PATH] (PATH default /mqtt; subprotocol mqtt,\n"
    "                           one binary frame per write batch, as one SSL_write)\n"
    "      --tls-ca FILE        mqtts://, wss://: verify the broker's certificate against the\n"
    "                           CA certificates in FILE (PEM), and that it names HOST; without\n"
    "                           it nothing is verified (a warning says so)\n"
    "      --tls-cert FILE      mqtts://, wss://: present this client certificate (PEM chain)\n"
    "      --tls-key FILE       ... with this private key (PEM); both or neither\n"
    "      --scenario NAME      pubsub (default): publishers and subscribers, measures\n"
    "                           throughput, loss and latency;\n"
    "                           conns: open --conns idle connections, measure broker memory;\n"
    "                           retained (MQTT): publish --retained retained messages, then\n"
    "                           count what a new subscriber gets\n"
    "\n"
    "pubsub:\n"
    "  -p, --publishers P       publishing connections (default 1)\n"
    "  -s, --subscribers S      subscribing connections (default 1; 0 is allowed)\n"
    "      --topics MODE        shared (default): everyone uses bench/t, so each subscriber\n"
    "                           gets every message (fan-out with S, fan-in with P);\n"
    "                           per-publisher: publisher i publishes to bench/<i>, subscriber\n"
    "                           j subscribes to bench/<j mod P> (pairs when P == S)\n"
    "  -q, --qos Q              MQTT: QoS of publishes and subscriptions, 0, 1 or 2 (default 0)\n"
    "      --size BYTES         payload size, at least 24 (default 64): run id, publisher,\n"
    "                           sequence number, send time, then filler\n"
    "  -n, --count N            messages per publisher (default 100000)\n"
    "  -w, --inflight W         per publisher: unacknowledged QoS 1/2 messages, STOMP SENDs\n"
    "                           without their RECEIPT or AMQP transfers without their\n"
    "                           disposition (default 20); at QoS 0 and with --no-receipt up\n"
    "                           to W*size+64KiB bytes may wait unwritten\n"
    "  -r, --rate R             fixed rate: R messages/s across all publishers, paced every\n"
    "                           millisecond (for latency); default: as fast as windows allow\n"
    "      --clean              MQTT: subscribers use clean sessions (default); STOMP and\n"
    "                           AMQP: non-persistent messages (default)\n"
    "      --persistent         MQTT: subscribers use persistent sessions (clean session 0),\n"
    "                           messages left by an earlier run are counted as stale;\n"
    "                           STOMP: SENDs carry persistent:true (persistent messages);\n"
    "                           AMQP: messages carry a header with durable=true\n"
    "      --discard            MQTT and STOMP: subscribers copy only the first 24 bytes of\n"
    "                           a payload out of the kernel and have it drop the rest unread\n"
    "                           (recv MSG_TRUNC): for large messages, where copying them\n"
    "                           would make ternbench the bottleneck; a message still counts\n"
    "                           (and is acknowledged) when its last byte arrived\n"
    "      --stall K            MQTT: K of the S subscribers (0..K-1) stop reading their socket\n"
    "                           for good at --stall-after: the connection stays open, sends\n"
    "                           nothing (no PINGREQ) and is left out of expected, lost and the\n"
    "                           latencies; the others' p99 per 100 ms window is printed as a\n"
    "                           timeline (K < S; usual: -p 1 -s 4 --stall 1 -r 20000 -n 200000)\n"
    "      --stall-after SECONDS  into the run (default 1.0)\n"
    "\n"
    "pubsub over STOMP (-u stomp://...): CONNECT asks for version 1.2 with heart-beat:0,0,\n"
    "SENDs carry content-length, an ERROR frame fails its connection (its message header is\n"
    "printed); --topics names the destination's last part (bench.t or bench.<i>).\n"
    "      --dest KIND          queue (default): publishers SEND to /queue/bench.t (shared)\n"
    "                           or /queue/bench.<i> (per-publisher) and the subscribers of\n"
    "                           a queue compete: each message is expected once overall;\n"
    "                           topic: /topic/bench.t or /topic/bench.<i>, fanned out to\n"
    "                           every subscriber like MQTT\n"
    "      --ack MODE           subscribers' ack mode: auto (default) or client-individual\n"
    "                           (each MESSAGE is ACKed by its ack header; the subscription\n"
    "                           asks for activemq.prefetchSize W)\n"
    "      --no-receipt         SENDs without receipt header: publishers stream, bounded like\n"
    "                           QoS 0; default: each SEND asks for a RECEIPT and at most W\n"
    "                           wait for one\n"
    "\n"
    "pubsub over AMQP 1.0 (-u amqp://...): each connection opens one session with one link.\n"
    "Publishers attach a sending link to their address and transfer unsettled messages (a\n"
    "header section with durable=true under --persistent, then one data section: the\n"
    "payload), at most W awaiting the broker's disposition and never more than the link\n"
    "credit the broker grants; subscribers attach a receiving link to the address, accept\n"
    "and settle each message (at-least-once). An address is taken for a queue: its\n"
    "subscribers compete and each message is expected once overall. A link the broker\n"
    "refuses fails the set-up with its error condition. SASL ANONYMOUS unless --user.\n"
    "      --address-prefix P   addresses are P followed by bench.t (--topics shared) or\n"
    "                           bench.<i> (per-publisher); default queue:// (ternd).\n"
    "                           RabbitMQ 3.x: /amq/queue/ names a queue declared beforehand\n"
    "                           (only a durable queue writes durable messages to disk);\n"
    "                           /queue/ has the attach declare it (a transient queue)\n"
    "      --credit N           link credit of each receiving link (default 100), topped\n"
    "                           up to N once half of it is used\n"
    "      --user U             SASL PLAIN as U (allowed over plain TCP); default ANONYMOUS\n"
    "      --password P         PLAIN's password (default empty)\n"
    "\n"
    "retained (MQTT): one connection publishes N retained messages (QoS 1, -w in flight) to\n"
    "bench/r/0 .. bench/r/N-1 and waits for every PUBACK; then a new subscriber (clean\n"
    "session) subscribes to bench/r/# at -q Q and counts the distinct messages of this run\n"
    "that arrive with the retain flag set, until all N did or none came for 5 s; then the\n"
    "retained messages are cleared (an empty retained message to each topic, QoS 1).\n"
    "      --retained N         retained messages (default 50000); --size applies\n"
    "\n"
    "conns:\n"
    "      --conns N            idle connections to open (default 1000), at most 500\n"
    "                           connecting at once (STOMP: CONNECT, CONNECTED; AMQP: SASL,\n"
    "                           open)\n"
    "      --hold SECONDS       keep them open this long once all are answered (default 2)\n"
    "      --source-ips RANGE   bind to source addresses round-robin, e.g.\n"
    "                           127.0.0.1-127.0.0.20 (or 127.0.0.1-20): each address adds\n"
    "                           about 28,000 ephemeral ports\n"
    "\n"
    "common:\n"
    "  -d, --duration SECONDS   hard bound for the whole run (default 60)\n"
    "      --client-prefix STR  MQTT client ids and AMQP container ids are STR-p<i>,\n"
    "                           STR-s<j>, STR-c<k> (default ternbench)\n"
    "      --keepalive S        MQTT keepalive in seconds (default 60; 0: none); a PINGREQ\n"
    "                           goes out after S/2 seconds without writes\n"
    "      --broker-pid PID[,PID...]  also report the broker's CPU seconds over the run and\n"
    "                           its RSS (from /proc), summed over up to 16 processes (e.g.\n"
    "                           an Erlang VM, its helpers and epmd; one that ends during the\n"
    "                           run is left out); conns needs it for rss_per_conn_b\n"
    "      --quiet              no progress line on stderr every second\n"
    "  -h, --help               show this help and exit\n"
    "  -V, --version            show the version and exit\n"
    "\n"
    "A run stops by itself: when every expected message arrived (and, at QoS 1/2 or with\n"
    "receipts, every publish was acknowledged), when nothing arrived for 5 s after the\n"
    "publishers finished, or after --duration. SIGINT or SIGTERM stop it early and still\n"
    "report.\n"
    "\n"
    "Output: a table on stdout, then one line 'RESULT key=value ...' with scenario, pubs,\n"
    "subs, topics, qos (-1 for STOMP and AMQP), size, count, sent, expected (sent x matching\n"
    "subscribers; a STOMP queue or AMQP address with subscribers counts once), received, lost\n"
    "(expected - unique received), dup (per publisher and subscriber; across a queue's\n"
    "competing subscribers), reordered (seq lower than the highest seen, per publisher and\n"
    "subscriber), secs (first publish to last receive), msgs_per_sec (received/secs),\n"
    "pub_per_sec (sent/secs), p50_us, p99_us, p999_us, max_us (end-to-end latency, -1\n"
    "without samples), bench_cpu_s, broker_cpu_s and broker_rss_kb (-1 without\n"
    "--broker-pid), then conns, conns_failed, rss_per_conn_b (conns), then proto=stomp,\n"
    "dest, ack, receipts and persistent (0 or 1) (STOMP only), proto=amqp, credit and\n"
    "persistent (AMQP only), then transport (mqtts, ws or wss) and tls_verify (1 with\n"
    "--tls-ca) (not over plain TCP), then pub_block_max_ms (pubsub: the longest a\n"
    "publisher could not send: with --rate, the most a message went out after its scheduled time, "
    "pacing's\n"
    "1 ms included; without, the longest gap between writes while it had messages left),\n"
    "then with --stall: stall, stall_after,\n"
    "stalled_received (the stalled subscribers' deliveries), pre_stall_p99_us (median of the\n"
    "window p99s before the stall), stall_p99_max_us (highest window p99 from the stall on),\n"
    "over_windows and pre_over_windows (windows after and before the stall whose p99\n"
    "exceeds 2 x pre_stall_p99_us, or that got nothing while messages were owed),\n"
    "recover_strict_ms (stall to the end of the last over window; 0 if none, -1 if the run's\n"
    "last window is over: never), recover_ms (the same counting only runs of 3 or more over\n"
    "windows: scheduling noise makes shorter ones), onset_ms (stall to the first such run, -1\n"
    "if none: the stalled socket's buffers delay it), then with --discard: discarded\n"
    "(messages whose payload past the header the kernel dropped unread), then stale, bad,\n"
    "stop.\n"
    "retained: scenario=retained, received = distinct retained messages, lost = N - received,\n"
    "secs from SUBSCRIBE to the last new one, msgs_per_sec over secs, pub_per_sec over the\n"
    "publishing, latencies -1, then retained, publish_secs, cleared, clear_secs, live\n"
    "(messages without the retain flag, not counted), stale, bad, stop (complete or\n"
    "silence-timeout).\n"
    "CPU seconds cover the run (pubsub: publishing to the end; conns: connecting to the end\n"
    "of --hold).\n"
    "\n"
    "Exit status: 0 when the run completed (loss is a measurement), 1 when the set-up failed\n"
    "(cannot connect; CONNACK, SUBACK or CONNECTED refused; an ERROR frame before the\n"
    "subscription's RECEIPT; AMQP: SASL failed, or the connection or a link closed with an\n"
    "error before the link was attached), 2 on bad arguments.\n";

static bool
parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool
parse_double(const char *s, double min, double max, double *out)
{
    char *end;
    if (!s || !*s)
        return false;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !(v >= min && v <= max))
        return false;
    *out = v;
    return true;
}

/* [SCHEME://]HOST:PORT, ws:// and wss:// with an optional /PATH, into o's addr, host, proto,
 * scheme, tls, ws and ws_path. */
static bool
parse_url(const char *url, tn_bench_opts *o)
{
    static const struct {
        const char *name;
        tn_bench_proto proto;
        bool tls, ws;
    } schemes[] = {
        {"mqtt", TN_BENCH_MQTT, false, false},   {"mqtts", TN_BENCH_MQTT, true, false},
        {"ws", TN_BENCH_MQTT, false, true},      {"wss", TN_BENCH_MQTT, true, true},
        {"stomp", TN_BENCH_STOMP, false, false}, {"amqp", TN_BENCH_AMQP, false, false},
    };
    char host[sizeof o->host], hostport[sizeof o->host + 8];
    const char *p = url;
    size_t k = 0; /* no scheme: mqtt */
    const char *sep = strstr(p, "://");
    if (sep) {
        for (k = 0; k < sizeof schemes / sizeof schemes[0]; k++)
            if (strlen(schemes[k].name) == (size_t)(sep - p) &&
                strncmp(p, schemes[k].name, (size_t)(sep - p)) == 0)
                break;
        if (k == sizeof schemes / sizeof schemes[0])
            return false;
        p = sep + 3;
    }
    const char *path = strchr(p, '/');
    size_t hp_len = path ? (size_t)(path - p) : strlen(p);
    if (hp_len >= sizeof hostport || (path && !schemes[k].ws) ||
        (path && strlen(path) >= sizeof o->ws_path))
        return false;
    memcpy(hostport, p, hp_len);
    hostport[hp_len] = '\0';
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host || colon == hostport)
        return false;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    uint64_t port;
    if (!parse_u64(colon + 1, 1, 65535, &port))
        return false;
    memcpy(o->host, host, sizeof host);
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (uv_ip4_addr(host, (int)port, &o->addr) != 0)
        return false;
    o->proto = schemes[k].proto;
    o->scheme = schemes[k].name;
    o->tls = schemes[k].tls;
    o->ws = schemes[k].ws;
    snprintf(o->ws_path, sizeof o->ws_path, "%s", path && path[1] ? path : "/mqtt");
    return true;
}

/* PID[,PID...] into o's broker_pids. */
static bool
parse_pids(const char *s, tn_bench_opts *o)
{
    char one[16];
    uint64_t v;
    o->n_broker_pids = 0;
    while (*s) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (len >= sizeof one || o->n_broker_pids == TN_BENCH_MAX_BROKER_PIDS)
            return false;
        memcpy(one, s, len);
        one[len] = '\0';
        if (!parse_u64(one, 1, 0x7fffffff, &v))
            return false;
        o->broker_pids[o->n_broker_pids++] = (int)v;
        s += len + (comma ? 1 : 0);
        if (comma && !*s)
            return false; /* a trailing comma */
    }
    o->broker_pid = o->n_broker_pids ? o->broker_pids[0] : 0;
    return o->n_broker_pids > 0;
}

/* A.B.C.D, A.B.C.D-E or A.B.C.D-A.B.C.E */
static bool
parse_source_ips(const char *s, uint32_t *first, uint32_t *n)
{
    char a[64];
    struct in_addr lo, hi;
    const char *dash = strchr(s, '-');
    size_t len = dash ? (size_t)(dash - s) : strlen(s);
    if (len >= sizeof a)
        return false;
    memcpy(a, s, len);
    a[len] = '\0';
    if (inet_pton(AF_INET, a, &lo) != 1)
        return false;
    uint32_t l = ntohl(lo.s_addr), h = l;
    if (dash) {
        uint64_t octet;
        if (inet_pton(AF_INET, dash + 1, &hi) == 1)
            h = ntohl(hi.s_addr);
        else if (parse_u64(dash + 1, 0, 255, &octet))
            h = (l & 0xffffff00u) | (uint32_t)octet;
        else
            return false;
    }
    if ((l & 0xffffff00u) != (h & 0xffffff00u) || h < l)
        return false; /* a range in the last octet */
    *first = l;
    *n = h - l + 1;
    return true;
}

int
tn_bench_parse_args(int argc, char **argv, tn_bench_opts *o)
{
    enum {
        OPT_SCENARIO = 256,
        OPT_TOPICS,
        OPT_SIZE,
        OPT_CLEAN,
        OPT_PERSISTENT,
        OPT_PREFIX,
        OPT_KEEPALIVE,
        OPT_BROKER_PID,
        OPT_CONNS,
        OPT_HOLD,
        OPT_SOURCE_IPS,
        OPT_QUIET,
        OPT_DEST,
        OPT_ACK,
        OPT_NO_RECEIPT,
        OPT_STALL,
        OPT_STALL_AFTER,
        OPT_RETAINED,
        OPT_DISCARD,
        OPT_CREDIT,
        OPT_ADDRESS_PREFIX,
        OPT_USER,
        OPT_PASSWORD,
        OPT_TLS_CA,
        OPT_TLS_CERT,
        OPT_TLS_KEY,
    };
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"scenario", required_argument, NULL, OPT_SCENARIO},
        {"publishers", required_argument, NULL, 'p'},
        {"subscribers", required_argument, NULL, 's'},
        {"topics", required_argument, NULL, OPT_TOPICS},
        {"qos", required_argument, NULL, 'q'},
        {"size", required_argument, NULL, OPT_SIZE},
        {"count", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'},
        {"inflight", required_argument, NULL, 'w'},
        {"rate", required_argument, NULL, 'r'},
        {"clean", no_argument, NULL, OPT_CLEAN},
        {"persistent", no_argument, NULL, OPT_PERSISTENT},
        {"client-prefix", required_argument, NULL, OPT_PREFIX},
        {"keepalive", required_argument, NULL, OPT_KEEPALIVE},
        {"broker-pid", required_argument, NULL, OPT_BROKER_PID},
        {"conns", required_argument, NULL, OPT_CONNS},
        {"hold", required_argument, NULL, OPT_HOLD},
        {"source-ips", required_argument, NULL, OPT_SOURCE_IPS},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"dest", required_argument, NULL, OPT_DEST},
        {"ack", required_argument, NULL, OPT_ACK},
        {"no-receipt", no_argument, NULL, OPT_NO_RECEIPT},
        {"stall", required_argument, NULL, OPT_STALL},
        {"stall-after", required_argument, NULL, OPT_STALL_AFTER},
        {"retained", required_argument, NULL, OPT_RETAINED},
        {"discard", no_argument, NULL, OPT_DISCARD},
        {"credit", required_argument, NULL, OPT_CREDIT},
        {"address-prefix", required_argument, NULL, OPT_ADDRESS_PREFIX},
        {"user", required_argument, NULL, OPT_USER},
        {"password", required_argument, NULL, OPT_PASSWORD},
        {"tls-ca", required_argument, NULL, OPT_TLS_CA},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    *o = (tn_bench_opts){
        .scenario = TN_BENCH_PUBSUB,
        .topics = TN_BENCH_SHARED,
        .pubs = 1,
        .subs = 1,
        .size = 64,
        .count = 100000,
        .duration = 60,
        .inflight = 20,
        .dest = TN_BENCH_QUEUE,
        .ack = TN_BENCH_ACK_AUTO,
        .receipts = true,
        .credit = 100,
        .address_prefix = "queue://",
        .prefix = "ternbench",
        .keepalive = 60,
        .conns = 1000,
        .hold = 2,
        .stall_after = 1.0,
        .retained = 50000,
    };
    parse_url("mqtt://127.0.0.1:1883", o);
    /* Options of one protocol given with the other's URL are refused (after the loop: the URL
     * may come last). */
    const char *mqtt_only = NULL, *stomp_only = NULL, *amqp_only = NULL, *tls_only = NULL;
    const char *bad = NULL;
    uint64_t v = 0; /* a failed parse still assigns it before `bad` stops the run */
    int ch;
    optind = 1;
    while (!bad && (ch = getopt_long(argc, argv, "u:p:s:q:n:d:w:r:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'u':
            if (!parse_url(optarg, o))
                bad = "--url wants mqtt://IPV4:PORT, mqtts://IPV4:PORT, ws://IPV4:PORT[/PATH], "
                      "wss://IPV4:PORT[/PATH], stomp://IPV4:PORT or amqp://IPV4:PORT";
            break;
        case OPT_SCENARIO:
            if (strcmp(optarg, "pubsub") == 0)
                o->scenario = TN_BENCH_PUBSUB;
            else if (strcmp(optarg, "conns") == 0)
                o->scenario = TN_BENCH_CONNS;
            else if (strcmp(optarg, "retained") == 0)
                o->scenario = TN_BENCH_RETAINED;
            else
                bad = "--scenario wants pubsub, conns or retained";
            break;
        case 'p':
            if (!parse_u64(optarg, 1, 100000, &v))
                bad = "--publishers wants 1..100000";
            o->pubs = (uint32_t)v;
            break;
        case 's':
            if (!parse_u64(optarg, 0, 1000000, &v))
                bad = "--subscribers wants 0..1000000";
            o->subs = (uint32_t)v;
            break;
        case OPT_TOPICS:
            if (strcmp(optarg, "shared") == 0)
                o->topics = TN_BENCH_SHARED;
            else if (strcmp(optarg, "per-publisher") == 0)
                o->topics = TN_BENCH_PER_PUBLISHER;
            else
                bad = "--topics wants shared or per-publisher";
            break;
        case 'q':
            if (!parse_u64(optarg, 0, 2, &v))
                bad = "--qos wants 0, 1 or 2";
            o->qos = (uint8_t)v;
            mqtt_only = "--qos";
            break;
        case OPT_SIZE:
            if (!parse_u64(optarg, TN_BENCH_HEADER, 16u << 20, &v))
                bad = "--size wants 24..16777216 bytes";
            o->size = (uint32_t)v;
            break;
        case 'n':
            if (!parse_u64(optarg, 1, 1ull << 40, &v))
                bad = "--count wants a positive number";
            o->count = v;
            break;
        case 'd':
            if (!parse_double(optarg, 0.001, 1e7, &o->duration))
                bad = "--duration wants seconds > 0";
            break;
        case 'w':
            if (!parse_u64(optarg, 1, 65534, &v))
                bad = "--inflight wants 1..65534";
            o->inflight = (uint32_t)v;
            break;
        case 'r':
            if (!parse_double(optarg, 0.001, 1e9, &o->rate))
                bad = "--rate wants messages/s > 0";
            break;
        case OPT_CLEAN:
            o->persistent = false;
            break;
        case OPT_PERSISTENT:
            o->persistent = true;
            break;
        case OPT_PREFIX:
            if (strlen(optarg) == 0 || strlen(optarg) > 64)
                bad = "--client-prefix wants 1..64 characters";
            o->prefix = optarg;
            break;
        case OPT_KEEPALIVE:
            if (!parse_u64(optarg, 0, 65535, &v))
                bad = "--keepalive wants 0..65535 seconds";
            o->keepalive = (uint16_t)v;
            mqtt_only = "--keepalive";
            break;
        case OPT_BROKER_PID:
            if (!parse_pids(optarg, o))
                bad = "--broker-pid wants a process id, or up to 16 separated by commas";
            break;
        case OPT_CONNS:
            if (!parse_u64(optarg, 1, 10000000, &v))
                bad = "--conns wants a positive number";
            o->conns = (uint32_t)v;
            break;
        case OPT_HOLD:
            if (!parse_double(optarg, 0, 1e7, &o->hold))
                bad = "--hold wants seconds >= 0";
            break;
        case OPT_SOURCE_IPS:
            if (!parse_source_ips(optarg, &o->src_first, &o->src_n))
                bad = "--source-ips wants A.B.C.D-E or A.B.C.D-A.B.C.E";
            break;
        case OPT_QUIET:
            o->quiet = true;
            break;
        case OPT_DEST:
            if (strcmp(optarg, "queue") == 0)
                o->dest = TN_BENCH_QUEUE;
            else if (strcmp(optarg, "topic") == 0)
                o->dest = TN_BENCH_TOPIC;
            else
                bad = "--dest wants queue or topic";
            stomp_only = "--dest";
            break;
        case OPT_ACK:
            if (strcmp(optarg, "auto") == 0)
                o->ack = TN_BENCH_ACK_AUTO;
            else if (strcmp(optarg, "client-individual") == 0)
                o->ack = TN_BENCH_ACK_CLIENT_INDIVIDUAL;
            else
                bad = "--ack wants auto or client-individual";
            stomp_only = "--ack";
            break;
        case OPT_NO_RECEIPT:
            o->receipts = false;
            stomp_only = "--no-receipt";
            break;
        case OPT_STALL:
            if (!parse_u64(optarg, 0, 999999, &v))
                bad = "--stall wants 0..999999 subscribers";
            o->stall = (uint32_t)v;
            mqtt_only = "--stall";
            break;
        case OPT_STALL_AFTER:
            if (!parse_double(optarg, 0, 1e7, &o->stall_after))
                bad = "--stall-after wants seconds >= 0";
            break;
        case OPT_RETAINED:
            if (!parse_u64(optarg, 1, 100000000, &v))
                bad = "--retained wants 1..100000000";
            o->retained = v;
            break;
        case OPT_DISCARD:
            o->discard = true;
            break;
        case OPT_CREDIT:
            if (!parse_u64(optarg, 1, 1000000, &v))
                bad = "--credit wants 1..1000000";
            o->credit = (uint32_t)v;
            amqp_only = "--credit";
            break;
        case OPT_ADDRESS_PREFIX:
            if (strlen(optarg) > TN_BENCH_MAX_ADDRESS)
                bad = "--address-prefix wants at most 64 characters";
            o->address_prefix = optarg;
            amqp_only = "--address-prefix";
            break;
        case OPT_USER:
            o->user = optarg;
            amqp_only = "--user";
            break;
        case OPT_PASSWORD:
            o->password = optarg;
            amqp_only = "--password";
            break;
        case OPT_TLS_CA:
            o->tls_ca = optarg;
            tls_only = "--tls-ca";
            break;
        case OPT_TLS_CERT:
            o->tls_cert = optarg;
            tls_only = "--tls-cert";
            break;
        case OPT_TLS_KEY:
            o->tls_key = optarg;
            tls_only = "--tls-key";
            break;
        case 'h':
            fputs(usage, stdout);
            return -1;
        case 'V':
            printf("ternbench %s\n", TERN_VERSION);
            return -1;
        default:
            fputs("Try 'ternbench --help'.\n", stderr);
            return 2;
        }
    }
    static char why[96];
    if (!bad && mqtt_only && o->proto != TN_BENCH_MQTT) {
        snprintf(why, sizeof why, "%s is for MQTT; %s", mqtt_only,
                 o->proto == TN_BENCH_STOMP ? "stomp:// uses --ack and receipts"
                                            : "amqp:// uses --credit and dispositions");
        bad = why;
    }
    if (!bad && stomp_only && o->proto != TN_BENCH_STOMP) {
        snprintf(why, sizeof why, "%s is for STOMP: give -u stomp://HOST:PORT", stomp_only);
        bad = why;
    }
    if (!bad && amqp_only && o->proto != TN_BENCH_AMQP) {
        snprintf(why, sizeof why, "%s is for AMQP: give -u amqp://HOST:PORT", amqp_only);
        bad = why;
    }
    if (!bad && tls_only && !o->tls) {
        snprintf(why, sizeof why, "%s is for TLS: give -u mqtts://HOST:PORT or wss://...",
                 tls_only);
        bad = why;
    }
    if (!bad && !o->tls_cert != !o->tls_key)
        bad = "--tls-cert and --tls-key go together";
    if (!bad && (o->tls || o->ws) && o->discard)
        bad = "--discard drops bytes in the kernel: plain mqtt:// only";
    if (!bad && o->password && !o->user)
        bad = "--password wants --user";
    if (!bad && o->stall && (o->scenario != TN_BENCH_PUBSUB || o->stall >= o->subs))
        bad = "--stall K wants the pubsub scenario and K < --subscribers (someone must read)";
    if (!bad && o->discard && (o->scenario != TN_BENCH_PUBSUB || o->stall))
        bad = "--discard is for the pubsub scenario, without --stall";
    if (!bad && o->discard && o->proto == TN_BENCH_AMQP)
        bad = "--discard is for MQTT and STOMP";
    if (!bad && o->scenario == TN_BENCH_RETAINED) {
        if (o->proto != TN_BENCH_MQTT)
            bad = "--scenario retained is for MQTT";
        o->pubs = o->subs = 1;
        o->count = o->retained;
    }
    if (!bad && optind < argc) {
        fprintf(stderr, "ternbench: unexpected argument '%s'\n", argv[optind]);
        bad = "";
    }
    if (bad) {
        if (*bad)
            fprintf(stderr, "ternbench: %s\n", bad);
        fputs("Try 'ternbench --help'.\n", stderr);
        return 2;
    }
    return 0;
}
