/*
 * conf: defaults, the YAML loader and validation.
 *
 * Loading runs in three steps, each able to say where in the file the problem is:
 *  1. libyaml alone walks the events, so a syntax error is reported at libyaml's own position
 *     (libcyaml only reports the position of the last good node), and a second document is refused.
 *  2. libcyaml loads the file into file_conf, checking keys and structure against the schema.
 *     Its error log goes through capture_log() into a buffer; cyaml_message() turns the message
 *     and backtrace into "FILE:LINE:COL: listeners[1]: unknown key 'port'".
 *  3. apply() converts strings (URLs, numbers) into a copy of the tn_conf and check() validates
 *     the copy. Their errors name a field path ("limits.max_inflight"), which locate() finds in
 *     the file with another libyaml walk. Only then does the copy replace the caller's tn_conf.
 *
 * Numbers are read as strings and parsed here: libcyaml's UINT uses strtoull(..., 0), which
 * takes "1.5" as 1 and "010" as 8.
 */
#include "conf/conf.h"
#include "core/base/base.h"

#include <arpa/inet.h>
#include <cyaml/cyaml.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define CONF_MAX_FILE (1024 * 1024) /* a larger config file is a mistake, not a config */
#define CONF_PATH_LEN 128           /* "listeners[12].url"; longer paths are never looked up */
#define CONF_MAX_DEPTH 32           /* our schema is 3 deep; deeper nodes are not tracked */
#define CONF_MAX_TRACE 16           /* backtrace entries kept from libcyaml */

static const char *const proto_names[] = {"mqtt", "mqtts", "stomp",   "stomps", "amqp", "amqps",
                                          "ws",   "wss",   "witness", "http",   "https"};
#define N_PROTOS (sizeof proto_names / sizeof proto_names[0])
/* A scheme added to tn_proto without its name here would parse as another one. */
_Static_assert(N_PROTOS == TN_PROTO_HTTPS + 1, "proto_names must name every tn_proto");

static const tn_conf_limits default_limits = {
    .max_message_size = 104857600,
    .max_incoming_memory = 268435456,
    .max_packet_size = 1048576,
    .max_connections = 100000,
    .metrics_max_destinations = 1000,
    .max_inflight = 100,
    .max_queued_messages = 1000,
    .max_offline_messages = 1000000,
    .max_output_buffer = 1048576,
    .max_queue_memory = 8388608,
    .max_deliveries = 7,
    .slow_consumer_timeout = 1000,
    .max_topic_levels = 200,
    .close_timeout = 3000,
    .amqp_max_frame_size = 131072,
    .amqp_idle_timeout = 60000,
    .tls_handshake_timeout = 10000,
};

/* ---- the file as libcyaml loads it: strings only, NULL where the key is absent ---- */

typedef struct file_tls {
    char *cert;
    char *key;
    char *ca;
    char *verify_client;
    char *min_version;
    char *ciphers;
    char *ciphersuites;
} file_tls;

typedef struct file_listener {
    char *url;
    char *max_message_size;
    file_tls *tls;
    char **origins;
    unsigned n_origins;
} file_listener;

typedef struct file_limits {
    char *max_message_size;
    char *max_incoming_memory;
    char *max_packet_size;
    char *max_connections;
    char *max_connections_per_ip;
    char *metrics_max_destinations;
    char *max_inflight;
    char *max_queued_messages;
    char *max_offline_messages;
    char *max_output_buffer;
    char *max_queue_memory;
    char *max_deliveries;
    char *slow_consumer_timeout;
    char *max_topic_levels;
    char *close_timeout;
    char *amqp_max_frame_size;
    char *amqp_idle_timeout;
    char *tls_handshake_timeout;
} file_limits;

typedef struct file_store {
    char *sync;
    char *sync_interval_ms;
    char *compact_bytes;
} file_store;

typedef struct file_pair {
    char *role;
    char *listen;
    char *peer;
    char *witness;
    char *zookeeper;
    char *alone_timeout;
    char *async;
    char *lease;
    char *renew;
    char *rejoin;
} file_pair;

typedef struct file_auth {
    char *password_file;
    char *acl_file;
    char *allow_anonymous;
    char *fail_delay;
    char *use_identity_as_username;
} file_auth;

typedef struct file_conf {
    file_listener *listeners;
    unsigned n_listeners;
    char *data_dir;
    char *log_level;
    file_limits *limits;
    file_store *store;
    file_tls *tls;
    file_pair *pair;
    file_auth *auth;
} file_conf;

/* One row per limit: its key, where it lives in both structs, its smallest and largest sane
 * values. */
static const struct {
    const char *name;
    size_t conf_off;
    size_t file_off;
    uint32_t min;
    uint32_t max;
    const char *why_max; /* NULL when max is UINT32_MAX */
} limit_fields[] = {
#define LIMIT(name, min, max, why)                                                                 \
    {                                                                                              \
#name, offsetof(tn_conf_limits, name), offsetof(file_limits, name), min, max, why          \
    }
    LIMIT(max_message_size, 1, UINT32_MAX, NULL),
    /* Less could not hold the first bytes of even one message in progress. */
    LIMIT(max_incoming_memory, 65536, UINT32_MAX, NULL),
    LIMIT(max_packet_size, 1, UINT32_MAX, NULL),
    LIMIT(max_connections, 1, UINT32_MAX, NULL),
    LIMIT(max_connections_per_ip, 0, UINT32_MAX, NULL), /* 0: no limit */
    LIMIT(metrics_max_destinations, 0, UINT32_MAX, NULL),
    LIMIT(max_inflight, 1, 65535, "MQTT Receive Maximum is a 16-bit value"),
    LIMIT(max_queued_messages, 1, UINT32_MAX, NULL),
    LIMIT(max_offline_messages, 1, UINT32_MAX, NULL),
    LIMIT(max_output_buffer, 1, UINT32_MAX, NULL),
    LIMIT(max_queue_memory, 1, UINT32_MAX, NULL),
    LIMIT(max_deliveries, 1, UINT32_MAX, NULL),
    LIMIT(slow_consumer_timeout, 1, 86400000, "one day, in milliseconds"),
    LIMIT(max_topic_levels, 1, 65535, "an MQTT topic is at most 65535 bytes"),
    LIMIT(close_timeout, 1, 86400000, "one day, in milliseconds"),
    LIMIT(amqp_max_frame_size, 512, UINT32_MAX, NULL), /* AMQP's smallest max-frame-size */
    LIMIT(amqp_idle_timeout, 1, 86400000, "one day, in milliseconds"),
    LIMIT(tls_handshake_timeout, 1, 3600000, "one hour, in milliseconds"),
#undef LIMIT
};
#define N_LIMITS (sizeof limit_fields / sizeof limit_fields[0])

#define OPT_STRING(key, type, member)                                                              \
    CYAML_FIELD_STRING_PTR(key, CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, type, member, 0,         \
                           CYAML_UNLIMITED)

static const cyaml_schema_field_t tls_fields[] = {
    OPT_STRING("cert", file_tls, cert),
    OPT_STRING("key", file_tls, key),
    OPT_STRING("ca", file_tls, ca),
    OPT_STRING("verify_client", file_tls, verify_client),
    OPT_STRING("min_version", file_tls, min_version),
    OPT_STRING("ciphers", file_tls, ciphers),
    OPT_STRING("ciphersuites", file_tls, ciphersuites),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t origin_schema = {
    CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 1, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t listener_fields[] = {
    CYAML_FIELD_STRING_PTR("url", CYAML_FLAG_POINTER, file_listener, url, 0, CYAML_UNLIMITED),
    OPT_STRING("max_message_size", file_listener, max_message_size),
    CYAML_FIELD_MAPPING_PTR("tls", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, file_listener, tls,
                            tls_fields),
    CYAML_FIELD_SEQUENCE_COUNT("allowed_origins", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL,
                               file_listener, origins, n_origins, &origin_schema, 0,
                               CYAML_UNLIMITED),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t listener_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, file_listener, listener_fields),
};

static const cyaml_schema_field_t limits_fields[] = {
    OPT_STRING("max_message_size", file_limits, max_message_size),
    OPT_STRING("max_incoming_memory", file_limits, max_incoming_memory),
    OPT_STRING("max_packet_size", file_limits, max_packet_size),
    OPT_STRING("max_connections", file_limits, max_connections),
    OPT_STRING("max_connections_per_ip", file_limits, max_connections_per_ip),
    OPT_STRING("metrics_max_destinations", file_limits, metrics_max_destinations),
    OPT_STRING("max_inflight", file_limits, max_inflight),
    OPT_STRING("max_queued_messages", file_limits, max_queued_messages),
    OPT_STRING("max_offline_messages", file_limits, max_offline_messages),
    OPT_STRING("max_output_buffer", file_limits, max_output_buffer),
    OPT_STRING("max_queue_memory", file_limits, max_queue_memory),
    OPT_STRING("max_deliveries", file_limits, max_deliveries),
    OPT_STRING("slow_consumer_timeout", file_limits, slow_consumer_timeout),
    OPT_STRING("max_topic_levels", file_limits, max_topic_levels),
    OPT_STRING("close_timeout", file_limits, close_timeout),
    OPT_STRING("amqp_max_frame_size", file_limits, amqp_max_frame_size),
    OPT_STRING("amqp_idle_timeout", file_limits, amqp_idle_timeout),
    OPT_STRING("tls_handshake_timeout", file_limits, tls_handshake_timeout),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t store_fields[] = {
    OPT_STRING("sync", file_store, sync),
    OPT_STRING("sync_interval_ms", file_store, sync_interval_ms),
    OPT_STRING("compact_bytes", file_store, compact_bytes),
    CYAML_FIELD_END,
};

/* An empty role or address is refused by the schema ("must not be empty"), as data_dir is. */
#define OPT_NONEMPTY(key, type, member)                                                            \
    CYAML_FIELD_STRING_PTR(key, CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, type, member, 1,         \
                           CYAML_UNLIMITED)

static const cyaml_schema_field_t pair_fields[] = {
    OPT_NONEMPTY("role", file_pair, role),
    OPT_NONEMPTY("listen", file_pair, listen),
    OPT_NONEMPTY("peer", file_pair, peer),
    OPT_NONEMPTY("witness", file_pair, witness),
    OPT_NONEMPTY("zookeeper", file_pair, zookeeper),
    OPT_STRING("alone_timeout", file_pair, alone_timeout),
    OPT_STRING("async", file_pair, async),
    OPT_STRING("lease", file_pair, lease),
    OPT_STRING("renew", file_pair, renew),
    OPT_STRING("rejoin", file_pair, rejoin),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t auth_fields[] = {
    OPT_NONEMPTY("password_file", file_auth, password_file),
    OPT_NONEMPTY("acl_file", file_auth, acl_file),
    OPT_STRING("allow_anonymous", file_auth, allow_anonymous),
    OPT_STRING("fail_delay", file_auth, fail_delay),
    OPT_STRING("use_identity_as_username", file_auth, use_identity_as_username),
    CYAML_FIELD_END,
};

static const cyaml_schema_field_t conf_fields[] = {
    /* At least one entry: an empty list would leave the broker deaf. */
    CYAML_FIELD_SEQUENCE_COUNT("listeners", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, file_conf,
                               listeners, n_listeners, &listener_schema, 1, CYAML_UNLIMITED),
    CYAML_FIELD_STRING_PTR("data_dir", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, file_conf,
                           data_dir, 1, CYAML_UNLIMITED),
    OPT_STRING("log_level", file_conf, log_level),
    CYAML_FIELD_MAPPING_PTR("tls", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, file_conf, tls,
                            tls_fields),
    CYAML_FIELD_MAPPING_PTR("limits", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, file_conf, limits,
                            limits_fields),
    CYAML_FIELD_MAPPING_PTR("store", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, file_conf, store,
                            store_fields),
    CYAML_FIELD_MAPPING_PTR("pair", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, file_conf, pair,
                            pair_fields),
    CYAML_FIELD_MAPPING_PTR("auth", CYAML_FLAG_POINTER | CYAML_FLAG_OPTIONAL, file_conf, auth,
                            auth_fields),
    CYAML_FIELD_END,
};

static const cyaml_schema_value_t conf_schema = {
    CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, file_conf, conf_fields),
};

/* ---- small helpers ---- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *
dup_or_null(const char *s)
{
    return s ? tn_xstrdup(s) : NULL;
}

/* The tn_conf_tls fields, for walking them together. */
#define TLS_FIELDS(X)                                                                              \
    X(cert) X(key) X(ca) X(verify_client) X(min_version) X(ciphers) X(ciphersuites)

static void
tls_fini(tn_conf_tls *t)
{
#define FREE_F(f) free(t->f);
    TLS_FIELDS(FREE_F)
#undef FREE_F
    memset(t, 0, sizeof *t);
}

static void
tls_copy(tn_conf_tls *dst, const tn_conf_tls *src)
{
#define COPY_F(f) dst->f = dup_or_null(src->f);
    TLS_FIELDS(COPY_F)
#undef COPY_F
}

void
tn_conf_tls_set(char **field, const char *v)
{
    free(*field);
    *field = dup_or_null(v);
}

void
tn_conf_listener_tls(const tn_conf *c, const tn_conf_listener *l, tn_conf_tls *out)
{
#define MERGE_F(f) out->f = l->tls.f ? l->tls.f : c->tls.f;
    TLS_FIELDS(MERGE_F)
#undef MERGE_F
}

/* The tn_conf_pair strings, for walking them together. */
#define PAIR_STRINGS(X) X(role) X(listen) X(peer) X(witness) X(zookeeper)

static void
pair_fini(tn_conf_pair *p)
{
#define FREE_F(f) free(p->f);
    PAIR_STRINGS(FREE_F)
#undef FREE_F
    memset(p, 0, sizeof *p);
}

static void
pair_copy(tn_conf_pair *dst, const tn_conf_pair *src)
{
    *dst = *src;
#define COPY_F(f) dst->f = dup_or_null(src->f);
    PAIR_STRINGS(COPY_F)
#undef COPY_F
}

/* 127.0.0.0/8 or ::1 (and ::ffff:127.x.x.x). */
static bool
loopback(const char *addr)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, addr, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, addr, &a6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&a6))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    return false;
}

int
tn_conf_anonymous(const tn_conf *c, bool *allowed, char *err, size_t errlen)
{
    if (c->auth.allow_anonymous >= 0) {
        *allowed = c->auth.allow_anonymous == 1;
        return 0;
    }
    if (c->auth.password_file) {
        *allowed = false;
        return 0;
    }
    for (size_t i = 0; i < c->n_listeners; i++) {
        const tn_conf_listener *l = &c->listeners[i];
        if (l->proto == TN_PROTO_WITNESS || loopback(l->address))
            continue;
        seterr(err, errlen,
               "%s://%s%s%s:%u is not on a loopback address and there is no password file: "
               "anyone could connect. Give --password-file FILE (auth.password_file), or "
               "--allow-anonymous true (auth.allow_anonymous) to allow it",
               tn_conf_proto_name(l->proto), strchr(l->address, ':') ? "[" : "", l->address,
               strchr(l->address, ':') ? "]" : "", l->port);
        return TN_EINVAL;
    }
    *allowed = true;
    return 0;
}

void
tn_conf_pair_set(char **field, const char *v)
{
    free(*field);
    *field = dup_or_null(v);
}

bool
tn_conf_proto_tls(tn_proto p)
{
    return p == TN_PROTO_MQTTS || p == TN_PROTO_STOMPS || p == TN_PROTO_AMQPS ||
           p == TN_PROTO_WSS || p == TN_PROTO_HTTPS;
}

bool
tn_conf_proto_ws(tn_proto p)
{
    return p == TN_PROTO_WS || p == TN_PROTO_WSS;
}

static void
free_origins(char **o, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(o[i]);
    free(o);
}

static void
free_listeners(tn_conf_listener *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(l[i].address);
        tls_fini(&l[i].tls);
        free_origins(l[i].origins, l[i].n_origins);
    }
    free(l);
}

static tn_conf_listener *
copy_listeners(const tn_conf_listener *l, size_t n)
{
    if (n == 0)
        return NULL;
    tn_conf_listener *out = tn_xcalloc(n, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        out[i] = l[i];
        out[i].address = dup_or_null(l[i].address);
        tls_copy(&out[i].tls, &l[i].tls);
        out[i].origins = l[i].n_origins ? tn_xcalloc(l[i].n_origins, sizeof(char *)) : NULL;
        for (size_t j = 0; j < l[i].n_origins; j++)
            out[i].origins[j] = tn_xstrdup(l[i].origins[j]);
    }
    return out;
}

static void
conf_copy(tn_conf *dst, const tn_conf *src)
{
    dst->listeners = copy_listeners(src->listeners, src->n_listeners);
    dst->n_listeners = src->n_listeners;
    dst->data_dir = src->data_dir ? tn_xstrdup(src->data_dir) : NULL;
    dst->log_level = src->log_level ? tn_xstrdup(src->log_level) : NULL;
    dst->limits = src->limits;
    dst->store.sync = src->store.sync ? tn_xstrdup(src->store.sync) : NULL;
    dst->store.sync_interval_ms = src->store.sync_interval_ms;
    dst->store.compact_bytes = src->store.compact_bytes;
    tls_copy(&dst->tls, &src->tls);
    pair_copy(&dst->pair, &src->pair);
    dst->auth = src->auth;
    dst->auth.password_file = dup_or_null(src->auth.password_file);
    dst->auth.acl_file = dup_or_null(src->auth.acl_file);
}

static void
replace_string(char **dst, const char *src)
{
    free(*dst);
    *dst = tn_xstrdup(src);
}

/* Writes "addr:port" or "[addr]:port". */
static void
format_hostport(char *buf, size_t len, const tn_conf_listener *l)
{
    const char *a = l->address ? l->address : "?";
    if (strchr(a, ':'))
        snprintf(buf, len, "[%s]:%u", a, (unsigned)l->port);
    else
        snprintf(buf, len, "%s:%u", a, (unsigned)l->port);
}

/* Parses a decimal number 0..UINT32_MAX: digits only, no sign, no spaces, no suffix. */
static int
parse_u32(const char *s, uint32_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return TN_EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return TN_EINVAL;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX)
            return TN_EINVAL;
    }
    *out = (uint32_t)v;
    return 0;
}

/* Parses a YAML 1.2 boolean: true, True, TRUE, false, False or FALSE. YAML 1.1's yes/no/on/off
 * are refused rather than guessed at, as parse_u32 refuses "0x10": the value must mean one
 * thing to every reader. */
static int
parse_bool(const char *s, bool *out)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
        *out = true;
    else if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
        *out = false;
    else
        return TN_EINVAL;
    return 0;
}

/* Parses a port 1..65535: decimal digits only (0 is refused: a pair's ports are dialled, and a
 * port picked at random could not be). */
static int
parse_port(const char *s, uint16_t *out)
{
    uint32_t v;
    if (parse_u32(s, &v) != 0 || v == 0 || v > 65535)
        return TN_EINVAL;
    *out = (uint16_t)v;
    return 0;
}

/* tn_conf_parse_host_port(), with what is wrong in why (may be NULL) for validation's
 * messages. */
static int
host_port(const char *s, char *host, size_t hostlen, uint16_t *port, char *why, size_t whylen)
{
    const char *a = s, *after;
    size_t alen;
    int family;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close) {
            seterr(why, whylen, "missing ']' after the IPv6 address");
            return TN_EINVAL;
        }
        a = s + 1;
        alen = (size_t)(close - a);
        after = close + 1;
        family = AF_INET6;
    } else {
        alen = strcspn(s, ":");
        after = s + alen;
        family = AF_INET;
        if (*after == ':' && strchr(after + 1, ':')) {
            seterr(why, whylen, "an IPv6 address must be in brackets, e.g. [::1]:7001");
            return TN_EINVAL;
        }
    }
    if (alen == 0) {
        seterr(why, whylen, "missing address (ADDR:PORT, e.g. 10.0.0.1:7001)");
        return TN_EINVAL;
    }
    char addr[INET6_ADDRSTRLEN];
    unsigned char bin[sizeof(struct in6_addr)];
    bool ok = alen < sizeof addr;
    if (ok) {
        memcpy(addr, a, alen);
        addr[alen] = '\0';
        ok = inet_pton(family, addr, bin) == 1;
    }
    if (!ok) {
        if (family == AF_INET6)
            seterr(why, whylen, "'%.*s' is not a valid IPv6 address", (int)alen, a);
        else
            seterr(why, whylen,
                   "'%.*s' is not a numeric IPv4 address (host names are not resolved; IPv6 "
                   "goes in brackets)",
                   (int)alen, a);
        return TN_EINVAL;
    }
    if (*after != ':' || after[1] == '\0') {
        if (*after == '\0' || *after == ':')
            seterr(why, whylen, "missing port (ADDR:PORT, e.g. 10.0.0.1:7001)");
        else
            seterr(why, whylen, "unexpected '%s' after the address", after);
        return TN_EINVAL;
    }
    uint16_t p;
    if (parse_port(after + 1, &p) != 0) {
        seterr(why, whylen, "port '%s' is not a number from 1 to 65535", after + 1);
        return TN_EINVAL;
    }
    /* The canonical form, so "::0001" and "::1" compare equal. */
    if (!inet_ntop(family, bin, addr, sizeof addr) || strlen(addr) >= hostlen) {
        seterr(why, whylen, "the address does not fit in %zu bytes", hostlen);
        return TN_EINVAL;
    }
    strcpy(host, addr);
    *port = p;
    return 0;
}

int
tn_conf_parse_host_port(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    return host_port(s, host, hostlen, port, NULL, 0);
}

/* Checks "HOST:PORT[,HOST:PORT...]/PATH", the connect string ZooKeeper clients take (PATH is the
 * chroot under which the pair keeps its nodes). Unlike our own addresses, HOST may be a name:
 * ZooKeeper clients resolve them, and ensembles are usually named. */
static int
check_zookeeper(const char *s, char *why, size_t whylen)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash[1] == '\0') {
        seterr(why, whylen, "missing /PATH after the servers, e.g. zk1:2181,zk2:2181/tern");
        return TN_EINVAL;
    }
    /* ZooKeeper refuses empty path components and a trailing slash. */
    if (strstr(slash, "//") || slash[strlen(slash) - 1] == '/') {
        seterr(why, whylen, "'%s' is not a ZooKeeper path (no empty parts, no trailing /)", slash);
        return TN_EINVAL;
    }
    for (const char *e = s; e <= slash;) {
        size_t n = strcspn(e, ",/");
        const char *colon = NULL;
        for (size_t i = 0; i < n; i++) /* the last ':' of the entry: IPv6 has more */
            if (e[i] == ':')
                colon = e + i;
        bool ok = colon && colon > e;
        if (ok && *e == '[') {
            char h[INET6_ADDRSTRLEN];
            unsigned char bin[sizeof(struct in6_addr)];
            size_t hlen = (size_t)(colon - e);
            ok = hlen >= 3 && colon[-1] == ']' && hlen - 2 < sizeof h;
            if (ok) {
                memcpy(h, e + 1, hlen - 2);
                h[hlen - 2] = '\0';
                ok = inet_pton(AF_INET6, h, bin) == 1;
            }
        } else if (ok) {
            /* A DNS name or a numeric IPv4 address: letters, digits, '-' and '.'. */
            for (const char *c = e; c < colon && ok; c++)
                ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                     (*c >= '0' && *c <= '9') || *c == '-' || *c == '.';
        }
        char portbuf[8];
        size_t plen = ok ? (size_t)(e + n - colon - 1) : 0;
        uint16_t port;
        if (ok) {
            ok = plen > 0 && plen < sizeof portbuf;
            if (ok) {
                memcpy(portbuf, colon + 1, plen);
                portbuf[plen] = '\0';
                ok = parse_port(portbuf, &port) == 0;
            }
        }
        if (!ok) {
            seterr(why, whylen,
                   "server '%.*s' is not HOST:PORT (a name, a numeric IPv4 address or an "
                   "[IPv6] address, and a port 1..65535)",
                   (int)n, e);
            return TN_EINVAL;
        }
        e += n + 1;
    }
    return 0;
}

/* ---- defaults, listeners ---- */

const char *
tn_conf_proto_name(tn_proto p)
{
    return (unsigned)p < N_PROTOS ? proto_names[p] : "unknown";
}

void
tn_conf_init(tn_conf *c)
{
    static const tn_conf_listener def[] = {
        {.proto = TN_PROTO_MQTT, .address = "127.0.0.1", .port = 1883},
        {.proto = TN_PROTO_STOMP, .address = "127.0.0.1", .port = 61613},
        {.proto = TN_PROTO_AMQP, .address = "127.0.0.1", .port = 5672},
    };
    memset(c, 0, sizeof *c);
    c->listeners = copy_listeners(def, 3);
    c->n_listeners = 3;
    c->data_dir = tn_xstrdup("./data");
    c->log_level = tn_xstrdup("info");
    c->limits = default_limits;
    c->store.sync = tn_xstrdup("always");
    c->store.sync_interval_ms = 100;
    c->store.compact_bytes = 64u << 20;
    c->pair.role = tn_xstrdup("node");
    c->pair.alone_timeout = 2000;
    c->pair.lease = 1000;
    c->pair.renew = 250;
    c->auth.allow_anonymous = -1;
    c->auth.fail_delay = 1000;
}

void
tn_conf_fini(tn_conf *c)
{
    free_listeners(c->listeners, c->n_listeners);
    free(c->data_dir);
    free(c->log_level);
    free(c->store.sync);
    tls_fini(&c->tls);
    pair_fini(&c->pair);
    free(c->auth.password_file);
    free(c->auth.acl_file);
    memset(c, 0, sizeof *c);
}

void
tn_conf_listener_fini(tn_conf_listener *l)
{
    free(l->address);
    l->address = NULL;
    tls_fini(&l->tls);
    free_origins(l->origins, l->n_origins);
    l->origins = NULL;
    l->n_origins = 0;
}

uint32_t
tn_conf_listener_max_message(const tn_conf *c, const tn_conf_listener *l)
{
    return l->max_message_size ? l->max_message_size : c->limits.max_message_size;
}

void
tn_conf_set_listeners(tn_conf *c, const tn_conf_listener *l, size_t n)
{
    /* Copy first: l may point into c->listeners. */
    tn_conf_listener *copy = copy_listeners(l, n);
    free_listeners(c->listeners, c->n_listeners);
    c->listeners = copy;
    c->n_listeners = n;
}

int
tn_conf_parse_listen_url(const char *url, tn_conf_listener *l, char *err, size_t errlen)
{
    const char *sep = strstr(url, "://");
    if (!sep) {
        seterr(err, errlen, "'%s': missing scheme, e.g. mqtt://127.0.0.1:1883", url);
        return TN_EINVAL;
    }
    size_t slen = (size_t)(sep - url);
    size_t proto = N_PROTOS;
    for (size_t i = 0; i < N_PROTOS; i++) {
        if (strlen(proto_names[i]) == slen && strncasecmp(url, proto_names[i], slen) == 0)
            proto = i;
    }
    if (proto == N_PROTOS) {
        seterr(err, errlen,
               "'%s': unknown scheme '%.*s' (expected mqtt, mqtts, stomp, stomps, amqp, amqps, "
               "ws, wss, witness, http or https)",
               url, (int)slen, url);
        return TN_EINVAL;
    }

    /* The address: "[v6]" or a v4 address up to the port's colon. */
    const char *host = sep + 3, *rest;
    size_t hlen;
    int family;
    if (*host == '[') {
        const char *close = strchr(host, ']');
        if (!close) {
            seterr(err, errlen, "'%s': missing ']' after the IPv6 address", url);
            return TN_EINVAL;
        }
        host++;
        hlen = (size_t)(close - host);
        rest = close + 1;
        family = AF_INET6;
    } else {
        hlen = strcspn(host, ":/");
        rest = host + hlen;
        family = AF_INET;
        if (*rest == ':' && strchr(rest + 1, ':')) {
            seterr(err, errlen, "'%s': an IPv6 address must be in brackets, e.g. mqtt://[::1]:1883",
                   url);
            return TN_EINVAL;
        }
    }
    if (hlen == 0) {
        seterr(err, errlen, "'%s': missing address", url);
        return TN_EINVAL;
    }
    char addr[INET6_ADDRSTRLEN];
    unsigned char bin[sizeof(struct in6_addr)];
    bool ok = hlen < sizeof addr;
    if (ok) {
        memcpy(addr, host, hlen);
        addr[hlen] = '\0';
        ok = inet_pton(family, addr, bin) == 1;
    }
    if (!ok) {
        if (family == AF_INET6)
            seterr(err, errlen, "'%s': '%.*s' is not a valid IPv6 address", url, (int)hlen, host);
        else
            seterr(err, errlen,
                   "'%s': '%.*s' is not a numeric IPv4 address (host names are not resolved; "
                   "IPv6 goes in brackets)",
                   url, (int)hlen, host);
        return TN_EINVAL;
    }

    /* The port: required, decimal, nothing after it. */
    if (*rest != ':' || rest[1] == '\0') {
        if (*rest == '\0' || *rest == ':')
            seterr(err, errlen, "'%s': missing port, e.g. %s://%s%s%s:1883", url,
                   proto_names[proto], family == AF_INET6 ? "[" : "", addr,
                   family == AF_INET6 ? "]" : "");
        else
            seterr(err, errlen, "'%s': unexpected '%s' after the address", url, rest);
        return TN_EINVAL;
    }
    const char *p = rest + 1;
    size_t ndig = strspn(p, "0123456789");
    if (p[ndig] == '/' && ndig > 0) {
        seterr(err, errlen, "'%s': unexpected '%s' after the port (paths are not supported)", url,
               p + ndig);
        return TN_EINVAL;
    }
    if (ndig == 0 || p[ndig] != '\0') {
        seterr(err, errlen, "'%s': port '%s' is not a number", url, p);
        return TN_EINVAL;
    }
    uint32_t port = 0;
    for (size_t i = 0; i < ndig && port <= 65535; i++)
        port = port * 10 + (uint32_t)(p[i] - '0');
    if (port > 65535) {
        seterr(err, errlen, "'%s': port %s is out of range 0..65535", url, p);
        return TN_EINVAL;
    }

    /* Store the canonical form so "::0001" and "::1" compare equal. */
    if (!inet_ntop(family, bin, addr, sizeof addr)) {
        seterr(err, errlen, "'%s': %s", url, strerror(errno));
        return TN_EINVAL;
    }
    *l = (tn_conf_listener){
        .proto = (tn_proto)proto, .address = tn_xstrdup(addr), .port = (uint16_t)port};
    return 0;
}

/* ---- validation ---- */

/* The pair section, and which listeners go with which role. */
static int
check_pair(const tn_conf *c, char *path, size_t pathlen, char *what, size_t whatlen)
{
    const tn_conf_pair *p = &c->pair;
    char why[384];

    if (!p->role || (strcmp(p->role, "node") != 0 && strcmp(p->role, "witness") != 0)) {
        seterr(path, pathlen, "pair.role");
        seterr(what, whatlen, "'%s' is not node or witness", p->role ? p->role : "(null)");
        return TN_EINVAL;
    }
    bool witness_role = strcmp(p->role, "witness") == 0;
    seterr(path, pathlen, "pair.alone_timeout");
    if (p->alone_timeout < 100) {
        seterr(what, whatlen, "must be at least 100");
        return TN_EINVAL;
    }
    if (p->alone_timeout > 600000) {
        seterr(what, whatlen, "%u is more than 600000 (ten minutes, in milliseconds)",
               (unsigned)p->alone_timeout);
        return TN_EINVAL;
    }

    seterr(path, pathlen, "pair.lease");
    if (p->lease < 300 || p->lease > 60000) {
        seterr(what, whatlen, "%u is not within 300..60000 (milliseconds)", (unsigned)p->lease);
        return TN_EINVAL;
    }
    seterr(path, pathlen, "pair.renew");
    if (p->renew < 50 || p->renew + 150 >= p->lease) {
        seterr(what, whatlen,
               "%u: renewals must come at least every 50 ms and more than 150 ms before the "
               "lease (%u ms) ends",
               (unsigned)p->renew, (unsigned)p->lease);
        return TN_EINVAL;
    }

    /* Checked wherever set, even on a witness (which does not use them): a typo is a typo. */
    const struct {
        const char *key;
        const char *v;
    } addrs[] = {{"listen", p->listen}, {"peer", p->peer}, {"witness", p->witness}};
    char host[INET6_ADDRSTRLEN], peer_host[INET6_ADDRSTRLEN];
    uint16_t port = 0, peer_port = 0;
    for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
        if (addrs[i].v && host_port(addrs[i].v, host, sizeof host, &port, why, sizeof why) != 0) {
            seterr(path, pathlen, "pair.%s", addrs[i].key);
            seterr(what, whatlen, "'%s': %s", addrs[i].v, why);
            return TN_EINVAL;
        }
    }
    if (p->zookeeper && check_zookeeper(p->zookeeper, why, sizeof why) != 0) {
        seterr(path, pathlen, "pair.zookeeper");
        seterr(what, whatlen, "'%s': %s", p->zookeeper, why);
        return TN_EINVAL;
    }

    if (witness_role) {
        /* ternd runs only the witness then: any other listener would silently not listen. */
        if (c->n_listeners != 1) {
            seterr(path, pathlen, "listeners");
            seterr(what, whatlen,
                   "a witness (pair.role witness) has exactly one listener, "
                   "witness://ADDR:PORT, not %zu",
                   c->n_listeners);
            return TN_EINVAL;
        }
        if (c->listeners[0].proto != TN_PROTO_WITNESS) {
            seterr(path, pathlen, "listeners[0].url");
            seterr(what, whatlen,
                   "a witness (pair.role witness) listens on witness://ADDR:PORT, not %s://",
                   tn_conf_proto_name(c->listeners[0].proto));
            return TN_EINVAL;
        }
        return 0;
    }
    for (size_t i = 0; i < c->n_listeners; i++) {
        if (c->listeners[i].proto == TN_PROTO_WITNESS) {
            seterr(path, pathlen, "listeners[%zu].url", i);
            seterr(what, whatlen,
                   "a witness:// listener is for a witness (pair.role witness, --role witness)");
            return TN_EINVAL;
        }
    }
    if (!p->listen && !p->peer && !p->witness && !p->zookeeper)
        return 0; /* a single broker */
    seterr(path, pathlen, "pair");
    if (!p->listen || !p->peer) {
        seterr(what, whatlen,
               "missing key '%s' (--pair-%s): a pair's node needs listen, peer, and witness or "
               "zookeeper",
               p->listen ? "peer" : "listen", p->listen ? "peer" : "listen");
        return TN_EINVAL;
    }
    if (!p->witness && !p->zookeeper) {
        seterr(what, whatlen,
               "missing key 'witness' or 'zookeeper' (--pair-witness, --pair-zookeeper): a "
               "pair's node needs one to elect the active");
        return TN_EINVAL;
    }
    if (p->witness && p->zookeeper) {
        seterr(path, pathlen, "pair.zookeeper");
        seterr(what, whatlen,
               "a pair has one coordinator: pair.witness or pair.zookeeper, not both");
        return TN_EINVAL;
    }
    /* Both parsed above. A node that names itself as its peer would wait for itself forever. */
    host_port(p->listen, host, sizeof host, &port, NULL, 0);
    host_port(p->peer, peer_host, sizeof peer_host, &peer_port, NULL, 0);
    if (port == peer_port && strcmp(host, peer_host) == 0) {
        seterr(path, pathlen, "pair.peer");
        seterr(what, whatlen, "'%s' is this node's own pair.listen: the peer is the other node",
               p->peer);
        return TN_EINVAL;
    }
    return 0;
}

/* Checks c; on error writes the field's path and what is wrong, separately, so the loader can
 * find the field in the file. */
static int
check(const tn_conf *c, char *path, size_t pathlen, char *what, size_t whatlen)
{
    char hp[INET6_ADDRSTRLEN + 16];

    if (c->n_listeners == 0) {
        seterr(path, pathlen, "listeners");
        seterr(what, whatlen, "at least one listener is required");
        return TN_EINVAL;
    }
    for (size_t i = 0; i < c->n_listeners; i++) {
        const tn_conf_listener *l = &c->listeners[i];
        unsigned char bin[sizeof(struct in6_addr)];
        seterr(path, pathlen, "listeners[%zu].url", i);
        if ((unsigned)l->proto >= N_PROTOS) {
            seterr(what, whatlen, "unknown protocol %d", (int)l->proto);
            return TN_EINVAL;
        }
        if (!l->address || (inet_pton(AF_INET, l->address, bin) != 1 &&
                            inet_pton(AF_INET6, l->address, bin) != 1)) {
            seterr(what, whatlen, "'%s' is not a numeric IP address",
                   l->address ? l->address : "(null)");
            return TN_EINVAL;
        }
        tn_conf_tls t;
        tn_conf_listener_tls(c, l, &t);
        /* Errors name the field where the value was set: the listener's own, or the top-level
         * one (which the --tls-* flags set too). */
#define TLS_PATH(f)                                                                                \
    (l->tls.f ? seterr(path, pathlen, "listeners[%zu].tls." #f, i)                                 \
              : seterr(path, pathlen, "tls." #f))
        if (tn_conf_proto_tls(l->proto) && (!t.cert || !t.key)) {
            seterr(what, whatlen,
                   "a %s:// listener needs a certificate and a key (tls.cert and tls.key, or "
                   "--tls-cert and --tls-key)",
                   proto_names[l->proto]);
            return TN_EINVAL;
        }
        if (t.verify_client && strcmp(t.verify_client, "none") != 0 &&
            strcmp(t.verify_client, "optional") != 0 && strcmp(t.verify_client, "require") != 0) {
            TLS_PATH(verify_client);
            seterr(what, whatlen, "'%s' is not one of none, optional, require", t.verify_client);
            return TN_EINVAL;
        }
        if (tn_conf_proto_tls(l->proto) && t.verify_client &&
            strcmp(t.verify_client, "none") != 0 && !t.ca) {
            TLS_PATH(verify_client);
            seterr(what, whatlen, "verify_client %s needs a CA file (tls.ca or --tls-ca)",
                   t.verify_client);
            return TN_EINVAL;
        }
        if (t.min_version && strcmp(t.min_version, "1.2") != 0 &&
            strcmp(t.min_version, "1.3") != 0) {
            TLS_PATH(min_version);
            seterr(what, whatlen, "'%s' is not 1.2 or 1.3", t.min_version);
            return TN_EINVAL;
        }
#undef TLS_PATH
        if (l->n_origins && !tn_conf_proto_ws(l->proto)) {
            seterr(path, pathlen, "listeners[%zu].allowed_origins", i);
            seterr(what, whatlen, "only ws:// and wss:// listeners check an Origin");
            return TN_EINVAL;
        }
        if (l->port == 0)
            continue; /* each gets its own free port */
        for (size_t j = 0; j < i; j++) {
            const tn_conf_listener *o = &c->listeners[j];
            unsigned char obin[sizeof(struct in6_addr)];
            bool same =
                o->port == l->port &&
                ((inet_pton(AF_INET, l->address, bin) == 1 &&
                  inet_pton(AF_INET, o->address, obin) == 1 && memcmp(bin, obin, 4) == 0) ||
                 (inet_pton(AF_INET6, l->address, bin) == 1 &&
                  inet_pton(AF_INET6, o->address, obin) == 1 && memcmp(bin, obin, 16) == 0));
            if (same) {
                format_hostport(hp, sizeof hp, l);
                seterr(what, whatlen, "%s is already used by listeners[%zu]", hp, j);
                return TN_EINVAL;
            }
        }
    }
    if (!c->data_dir || !*c->data_dir) {
        seterr(path, pathlen, "data_dir");
        seterr(what, whatlen, "must not be empty");
        return TN_EINVAL;
    }
    tn_log_level level;
    if (!c->log_level || tn_log_parse_level(c->log_level, &level) != 0) {
        seterr(path, pathlen, "log_level");
        seterr(what, whatlen, "'%s' is not one of error, warn, info, debug",
               c->log_level ? c->log_level : "(null)");
        return TN_EINVAL;
    }
    if (!c->store.sync ||
        (strcmp(c->store.sync, "always") != 0 && strcmp(c->store.sync, "interval") != 0 &&
         strcmp(c->store.sync, "never") != 0)) {
        seterr(path, pathlen, "store.sync");
        seterr(what, whatlen, "'%s' is not one of always, interval, never",
               c->store.sync ? c->store.sync : "(null)");
        return TN_EINVAL;
    }
    if (c->store.compact_bytes < 4096) {
        seterr(path, pathlen, "store.compact_bytes");
        seterr(what, whatlen, "must be at least 4096");
        return TN_EINVAL;
    }
    if (c->store.sync_interval_ms == 0) {
        seterr(path, pathlen, "store.sync_interval_ms");
        seterr(what, whatlen, "must be at least 1");
        return TN_EINVAL;
    }
    for (size_t i = 0; i < N_LIMITS; i++) {
        uint32_t v = *(const uint32_t *)((const char *)&c->limits + limit_fields[i].conf_off);
        seterr(path, pathlen, "limits.%s", limit_fields[i].name);
        if (v < limit_fields[i].min) {
            seterr(what, whatlen, "must be at least %u", (unsigned)limit_fields[i].min);
            return TN_EINVAL;
        }
        if (v > limit_fields[i].max) {
            seterr(what, whatlen, "%u is more than %u (%s)", (unsigned)v,
                   (unsigned)limit_fields[i].max, limit_fields[i].why_max);
            return TN_EINVAL;
        }
    }
    return check_pair(c, path, pathlen, what, whatlen);
}

int
tn_conf_validate(const tn_conf *c, char *err, size_t errlen)
{
    char path[CONF_PATH_LEN], what[512];
    int rv = check(c, path, sizeof path, what, sizeof what);
    if (rv != 0)
        seterr(err, errlen, "%s: %s", path, what);
    return rv;
}

/* ---- finding things in the YAML text ---- */

/* What locate() looks for: the nth node whose path is path, as a key or as a value. */
typedef struct locate {
    const char *path; /* e.g. "listeners[1].url", "" for the document */
    bool key;         /* the key's position, not its value's */
    int nth;          /* which occurrence, from 1 (duplicate keys) */
    int seen;
    size_t line, col; /* 1-based; 0 = not found */
} locate;

/* One open mapping or sequence while walking. */
typedef struct frame {
    bool map;
    bool want_key;             /* mapping: the next node is a key */
    size_t index;              /* sequence: index of the next entry */
    char path[CONF_PATH_LEN];  /* this collection's own path */
    char child[CONF_PATH_LEN]; /* mapping: path of the value after the current key */
} frame;

typedef struct walk {
    frame stack[CONF_MAX_DEPTH];
    size_t depth; /* frames in use */
    size_t deep;  /* collections open beyond CONF_MAX_DEPTH, not tracked */
    locate *loc;
} walk;

/* Joins a path and a component; an over-long result becomes "?", which is never looked up. */
static void
join_path(char *out, const char *parent, const char *key)
{
    int n = snprintf(out, CONF_PATH_LEN, "%s%s%s", parent, *parent ? "." : "", key);
    if (n < 0 || n >= CONF_PATH_LEN)
        strcpy(out, "?");
}

/* Tracks the path of one node; returns false for a list or mapping used as a mapping key, which
 * libcyaml reports only as "Internal error". */
static bool
walk_node(walk *w, const yaml_event_t *ev)
{
    bool collection = ev->type == YAML_SEQUENCE_START_EVENT || ev->type == YAML_MAPPING_START_EVENT;
    if (w->deep > 0 || w->depth == CONF_MAX_DEPTH) {
        w->deep += collection;
        return true;
    }
    frame *top = w->depth > 0 ? &w->stack[w->depth - 1] : NULL;
    char path[CONF_PATH_LEN];
    bool is_key = false;
    if (!top) {
        path[0] = '\0';
    } else if (top->map && top->want_key) {
        is_key = true;
        top->want_key = false;
        join_path(path, top->path,
                  ev->type == YAML_SCALAR_EVENT ? (const char *)ev->data.scalar.value : "?");
        strcpy(top->child, path);
    } else if (top->map) {
        top->want_key = true;
        strcpy(path, top->child);
    } else {
        int n = snprintf(path, sizeof path, "%s[%zu]", top->path, top->index++);
        if (n < 0 || (size_t)n >= sizeof path)
            strcpy(path, "?");
    }

    locate *loc = w->loc;
    if (loc && loc->line == 0 && is_key == loc->key && strcmp(path, loc->path) == 0 &&
        ++loc->seen == loc->nth) {
        loc->line = ev->start_mark.line + 1;
        loc->col = ev->start_mark.column + 1;
    }

    if (collection) {
        frame *f = &w->stack[w->depth++];
        f->map = ev->type == YAML_MAPPING_START_EVENT;
        f->want_key = f->map;
        f->index = 0;
        strcpy(f->path, path);
        f->child[0] = '\0';
    }
    return !(is_key && collection);
}

static void
walk_end(walk *w)
{
    if (w->deep > 0)
        w->deep--;
    else if (w->depth > 0)
        w->depth--;
}

/* Walks the YAML text with libyaml. Reports a syntax error, or a second document, as
 * "NAME:LINE:COL: problem"; fills loc (if not NULL) on the way. */
static int
scan(const char *name, const uint8_t *yaml, size_t len, locate *loc, char *err, size_t errlen)
{
    yaml_parser_t p;
    yaml_event_t ev;
    walk *w = tn_xcalloc(1, sizeof *w);
    int rv = 0, docs = 0;
    bool done = false;

    w->loc = loc;
    if (!yaml_parser_initialize(&p))
        tn_assert_fail("out of memory", __FILE__, __LINE__);
    yaml_parser_set_input_string(&p, yaml, len);
    while (!done) {
        if (!yaml_parser_parse(&p, &ev)) {
            const char *problem = p.problem ? p.problem : "out of memory";
            if (p.error == YAML_READER_ERROR)
                seterr(err, errlen, "%s: %s at byte %zu", name, problem, p.problem_offset);
            else if (p.context)
                seterr(err, errlen, "%s:%zu:%zu: %s (%s at line %zu)", name,
                       p.problem_mark.line + 1, p.problem_mark.column + 1, problem, p.context,
                       p.context_mark.line + 1);
            else
                seterr(err, errlen, "%s:%zu:%zu: %s", name, p.problem_mark.line + 1,
                       p.problem_mark.column + 1, problem);
            rv = TN_EINVAL;
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) {
                seterr(err, errlen, "%s:%zu:%zu: only one YAML document is allowed", name,
                       ev.start_mark.line + 1, ev.start_mark.column + 1);
                rv = TN_EINVAL;
                done = true;
            }
            break;
        case YAML_SCALAR_EVENT:
        case YAML_ALIAS_EVENT:
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (!walk_node(w, &ev)) {
                seterr(err, errlen, "%s:%zu:%zu: a key must be a single value, not a %s", name,
                       ev.start_mark.line + 1, ev.start_mark.column + 1,
                       ev.type == YAML_MAPPING_START_EVENT ? "mapping" : "list");
                rv = TN_EINVAL;
                done = true;
            }
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            walk_end(w);
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    free(w);
    return rv;
}

/* Writes "NAME:LINE:COL: PATH: WHAT" with the position of path in the file if it is there,
 * else at (line, col) if known, else "NAME: PATH: WHAT". */
static void
located_error(const char *name, const uint8_t *yaml, size_t len, locate *loc, size_t line,
              size_t col, const char *path, const char *what, char *err, size_t errlen)
{
    if (scan(name, yaml, len, loc, NULL, 0) == 0 && loc->line > 0) {
        line = loc->line;
        col = loc->col;
    }
    const char *sep = *path ? ": " : "";
    if (line > 0)
        seterr(err, errlen, "%s:%zu:%zu: %s%s%s", name, line, col, path, sep, what);
    else
        seterr(err, errlen, "%s: %s%s%s", name, path, sep, what);
}

/* ---- libcyaml's errors ---- */

/* libcyaml logs an error as "Load: what\n", then "Load: Backtrace:\n" and one line per open
 * node, innermost first: "  in mapping field 'url' (line: 2, column: 10)\n",
 * "  in sequence entry '1' (line: 2, column: 5)\n" (counted from 1), "  in mapping (...)\n". */
typedef struct log_capture {
    char buf[2048];
    size_t len;
} log_capture;

static void
capture_log(cyaml_log_t level, void *ctx, const char *fmt, va_list ap)
{
    log_capture *lc = ctx;
    if (level < CYAML_LOG_ERROR || lc->len + 1 >= sizeof lc->buf)
        return;
    int n = vsnprintf(lc->buf + lc->len, sizeof lc->buf - lc->len, fmt, ap);
    if (n > 0)
        lc->len += (size_t)n < sizeof lc->buf - lc->len ? (size_t)n : sizeof lc->buf - lc->len - 1;
}

typedef struct trace {
    char field[CONF_PATH_LEN]; /* mapping field; "" for a sequence entry or a bare mapping */
    unsigned entry;            /* sequence entry from 1; 0 = none */
    size_t line, col;
} trace;

/* Builds the path from the outermost backtrace entry to entry `inner` (0 = innermost). */
static void
trace_path(char *out, const trace *t, size_t n, size_t inner)
{
    out[0] = '\0';
    for (size_t i = n; i-- > inner;) {
        char tmp[CONF_PATH_LEN];
        if (t[i].field[0]) {
            join_path(tmp, out, t[i].field);
        } else if (t[i].entry > 0) {
            int k = snprintf(tmp, sizeof tmp, "%s[%u]", out, t[i].entry - 1);
            if (k < 0 || (size_t)k >= sizeof tmp)
                strcpy(tmp, "?");
        } else {
            continue;
        }
        strcpy(out, tmp);
    }
}

static const char *
kind_name(const char *k)
{
    if (strncmp(k, "SEQUENCE", 8) == 0)
        return "a list";
    if (strncmp(k, "MAPPING", 7) == 0)
        return "a mapping";
    if (strcmp(k, "ALIAS") == 0)
        return "an alias";
    return "a single value";
}

static void
cyaml_message(const char *name, const uint8_t *yaml, size_t len, const char *log, cyaml_err_t e,
              char *err, size_t errlen)
{
    char msg[512] = "", arg[CONF_PATH_LEN] = "", what[640], path[CONF_PATH_LEN];
    trace t[CONF_MAX_TRACE];
    size_t nt = 0;

    /* Split the log into the message and the backtrace. */
    for (const char *line = log; *line;) {
        size_t n = strcspn(line, "\n");
        char l[512];
        snprintf(l, sizeof l, "%.*s", (int)n, line);
        line += n + (line[n] == '\n');
        trace *tr = nt < CONF_MAX_TRACE ? &t[nt] : NULL;
        if (strncmp(l, "Load: ", 6) == 0 && strcmp(l, "Load: Backtrace:") != 0 && !msg[0]) {
            snprintf(msg, sizeof msg, "%s", l + 6);
        } else if (tr && sscanf(l, "  in mapping field '%127[^']' (line: %zu, column: %zu)",
                                tr->field, &tr->line, &tr->col) == 3) {
            tr->entry = 0;
            nt++;
        } else if (tr && sscanf(l, "  in sequence entry '%u' (line: %zu, column: %zu)", &tr->entry,
                                &tr->line, &tr->col) == 3) {
            tr->field[0] = '\0';
            nt++;
        } else if (tr &&
                   sscanf(l, "  in mapping (line: %zu, column: %zu)", &tr->line, &tr->col) == 2) {
            tr->field[0] = '\0';
            tr->entry = 0;
            nt++;
        }
    }
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '.' || msg[n - 1] == ' ' || msg[n - 1] == ':'))
        msg[--n] = '\0';
    if (!msg[0])
        snprintf(msg, sizeof msg, "%s", cyaml_strerror(e));

    /* Key errors: libcyaml's innermost entry is the mapping, possibly naming the previous field;
     * the path shown is the mapping's and the position is the offending key's. */
    locate loc = {.path = path, .nth = 1};
    size_t inner = 0;
    char k1[64], k2[64];
    if (sscanf(msg, "Unexpected key: %127[^\n]", arg) == 1 ||
        sscanf(msg, "Mapping field already seen: %127[^\n]", arg) == 1) {
        bool dup = msg[0] == 'M';
        inner = nt > 0 && t[0].field[0] ? 1 : 0;
        trace_path(path, t, nt, inner);
        snprintf(what, sizeof what, "%s key '%s'", dup ? "duplicate" : "unknown", arg);
        char keypath[CONF_PATH_LEN];
        join_path(keypath, path, arg);
        locate kl = {.path = keypath, .key = true, .nth = dup ? 2 : 1};
        located_error(name, yaml, len, &kl, nt ? t[0].line : 0, nt ? t[0].col : 0, path, what, err,
                      errlen);
        return;
    }
    if (sscanf(msg, "Missing required mapping field: %127[^\n]", arg) == 1) {
        inner = nt > 0 && t[0].field[0] ? 1 : 0;
        snprintf(what, sizeof what, "missing key '%s'", arg);
    } else if (sscanf(msg, "Expecting %63s got event: %63s", k1, k2) == 2) {
        k1[strcspn(k1, ",")] = '\0';
        snprintf(what, sizeof what, "expected %s, found %s", kind_name(k1), kind_name(k2));
    } else if (strncmp(msg, "Insufficient entries", 20) == 0) {
        snprintf(what, sizeof what, "the list must not be empty");
    } else if (strncmp(msg, "STRING length < ", 16) == 0) {
        snprintf(what, sizeof what, "must not be empty");
    } else {
        snprintf(what, sizeof what, "%s", msg);
    }
    trace_path(path, t, nt, inner);
    located_error(name, yaml, len, &loc, nt ? t[inner < nt ? inner : 0].line : 0,
                  nt ? t[inner < nt ? inner : 0].col : 0, path, what, err, errlen);
}

/* ---- loading ---- */

/* The fields the file sets replace t's. */
static void
apply_tls(tn_conf_tls *t, const file_tls *f)
{
#define APPLY_F(fld)                                                                               \
    if (f->fld)                                                                                    \
        tn_conf_tls_set(&t->fld, f->fld);
    TLS_FIELDS(APPLY_F)
#undef APPLY_F
}

/* Converts the loaded strings into n. On error fills path and what. */
static int
apply(tn_conf *n, const file_conf *f, char *path, size_t pathlen, char *what, size_t whatlen)
{
    if (f->listeners) {
        tn_conf_listener *ls = tn_xcalloc(f->n_listeners, sizeof *ls);
        for (unsigned i = 0; i < f->n_listeners; i++) {
            if (tn_conf_parse_listen_url(f->listeners[i].url, &ls[i], what, whatlen) != 0) {
                seterr(path, pathlen, "listeners[%u].url", i);
                free_listeners(ls, i);
                return TN_EINVAL;
            }
            const file_listener *fl = &f->listeners[i];
            if (fl->tls)
                apply_tls(&ls[i].tls, fl->tls);
            if (fl->n_origins) {
                ls[i].origins = tn_xcalloc(fl->n_origins, sizeof(char *));
                for (unsigned j = 0; j < fl->n_origins; j++)
                    ls[i].origins[j] = tn_xstrdup(fl->origins[j]);
                ls[i].n_origins = fl->n_origins;
            }
            /* 0 in the struct means "not set", so the file may not say 0. */
            const char *s = f->listeners[i].max_message_size;
            if (!s)
                continue;
            bool number = parse_u32(s, &ls[i].max_message_size) == 0;
            if (!number || ls[i].max_message_size == 0) {
                seterr(path, pathlen, "listeners[%u].max_message_size", i);
                if (number)
                    seterr(what, whatlen, "must be at least 1");
                else
                    seterr(what, whatlen, "'%s' is not a whole number from 1 to %u", s,
                           (unsigned)UINT32_MAX);
                free_listeners(ls, i + 1);
                return TN_EINVAL;
            }
        }
        free_listeners(n->listeners, n->n_listeners);
        n->listeners = ls;
        n->n_listeners = f->n_listeners;
    }
    if (f->tls)
        apply_tls(&n->tls, f->tls);
    if (f->data_dir)
        replace_string(&n->data_dir, f->data_dir);
    if (f->log_level)
        replace_string(&n->log_level, f->log_level);
    if (f->store && f->store->sync)
        replace_string(&n->store.sync, f->store->sync);
    if (f->store && f->store->sync_interval_ms &&
        parse_u32(f->store->sync_interval_ms, &n->store.sync_interval_ms) != 0) {
        seterr(path, pathlen, "store.sync_interval_ms");
        seterr(what, whatlen, "'%s' is not a whole number from 0 to %u", f->store->sync_interval_ms,
               (unsigned)UINT32_MAX);
        return TN_EINVAL;
    }
    if (f->store && f->store->compact_bytes &&
        parse_u32(f->store->compact_bytes, &n->store.compact_bytes) != 0) {
        seterr(path, pathlen, "store.compact_bytes");
        seterr(what, whatlen, "'%s' is not a whole number from 0 to %u", f->store->compact_bytes,
               (unsigned)UINT32_MAX);
        return TN_EINVAL;
    }
    for (size_t i = 0; f->limits && i < N_LIMITS; i++) {
        const char *s = *(char *const *)((const char *)f->limits + limit_fields[i].file_off);
        if (!s)
            continue;
        if (parse_u32(s, (uint32_t *)((char *)&n->limits + limit_fields[i].conf_off)) != 0) {
            seterr(path, pathlen, "limits.%s", limit_fields[i].name);
            seterr(what, whatlen, "'%s' is not a whole number from 0 to %u", s,
                   (unsigned)UINT32_MAX);
            return TN_EINVAL;
        }
    }
    const file_auth *fa = f->auth;
    if (fa && fa->password_file)
        tn_conf_pair_set(&n->auth.password_file, fa->password_file);
    if (fa && fa->acl_file)
        tn_conf_pair_set(&n->auth.acl_file, fa->acl_file);
    if (fa && fa->allow_anonymous) {
        bool b;
        if (parse_bool(fa->allow_anonymous, &b) != 0) {
            seterr(path, pathlen, "auth.allow_anonymous");
            seterr(what, whatlen, "'%s' is not true or false", fa->allow_anonymous);
            return TN_EINVAL;
        }
        n->auth.allow_anonymous = b;
    }
    if (fa && fa->use_identity_as_username &&
        parse_bool(fa->use_identity_as_username, &n->auth.use_identity_as_username) != 0) {
        seterr(path, pathlen, "auth.use_identity_as_username");
        seterr(what, whatlen, "'%s' is not true or false", fa->use_identity_as_username);
        return TN_EINVAL;
    }
    if (fa && fa->fail_delay &&
        (parse_u32(fa->fail_delay, &n->auth.fail_delay) != 0 || n->auth.fail_delay > 60000)) {
        seterr(path, pathlen, "auth.fail_delay");
        seterr(what, whatlen, "'%s' is not a number of milliseconds from 0 to 60000",
               fa->fail_delay);
        return TN_EINVAL;
    }
    const file_pair *fp = f->pair;
    if (fp) {
#define APPLY_F(fld)                                                                               \
    if (fp->fld)                                                                                   \
        tn_conf_pair_set(&n->pair.fld, fp->fld);
        PAIR_STRINGS(APPLY_F)
#undef APPLY_F
    }
    if (fp && fp->alone_timeout && parse_u32(fp->alone_timeout, &n->pair.alone_timeout) != 0) {
        seterr(path, pathlen, "pair.alone_timeout");
        seterr(what, whatlen, "'%s' is not a whole number from 0 to %u", fp->alone_timeout,
               (unsigned)UINT32_MAX);
        return TN_EINVAL;
    }
    if (fp && fp->lease && parse_u32(fp->lease, &n->pair.lease) != 0) {
        seterr(path, pathlen, "pair.lease");
        seterr(what, whatlen, "'%s' is not a whole number", fp->lease);
        return TN_EINVAL;
    }
    if (fp && fp->renew && parse_u32(fp->renew, &n->pair.renew) != 0) {
        seterr(path, pathlen, "pair.renew");
        seterr(what, whatlen, "'%s' is not a whole number", fp->renew);
        return TN_EINVAL;
    }
    if (fp && fp->async && parse_bool(fp->async, &n->pair.async) != 0) {
        seterr(path, pathlen, "pair.async");
        seterr(what, whatlen, "'%s' is not true or false", fp->async);
        return TN_EINVAL;
    }
    if (fp && fp->rejoin) {
        if (strcmp(fp->rejoin, "auto") != 0 && strcmp(fp->rejoin, "manual") != 0) {
            seterr(path, pathlen, "pair.rejoin");
            seterr(what, whatlen, "'%s' is not auto or manual", fp->rejoin);
            return TN_EINVAL;
        }
        n->pair.rejoin_manual = strcmp(fp->rejoin, "manual") == 0;
    }
    return 0;
}

static int
load(tn_conf *c, const char *name, const uint8_t *yaml, size_t len, char *err, size_t errlen)
{
    log_capture *lc = tn_xcalloc(1, sizeof *lc);
    const cyaml_config_t cfg = {
        .log_fn = capture_log,
        .log_ctx = lc,
        .mem_fn = cyaml_mem,
        .log_level = CYAML_LOG_ERROR,
        .flags = CYAML_CFG_DEFAULT, /* unknown keys are errors */
    };
    file_conf *f = NULL;
    tn_conf n = {0};
    char path[CONF_PATH_LEN], what[512];
    int rv = scan(name, yaml, len, NULL, err, errlen);
    if (rv != 0)
        goto out;

    cyaml_err_t e = cyaml_load_data(yaml, len, &cfg, &conf_schema, (cyaml_data_t **)&f, NULL);
    if (e != CYAML_OK) {
        cyaml_message(name, yaml, len, lc->buf, e, err, errlen);
        rv = TN_EINVAL;
        goto out;
    }

    /* f is NULL for a file without keys: then only validate. */
    conf_copy(&n, c);
    if ((f && apply(&n, f, path, sizeof path, what, sizeof what) != 0) ||
        check(&n, path, sizeof path, what, sizeof what) != 0) {
        locate loc = {.path = path, .nth = 1};
        located_error(name, yaml, len, &loc, 0, 0, path, what, err, errlen);
        rv = TN_EINVAL;
        goto out;
    }
    tn_conf_fini(c);
    *c = n;
    memset(&n, 0, sizeof n);

out:
    tn_conf_fini(&n);
    if (f)
        cyaml_free(&cfg, &conf_schema, f, 0);
    free(lc);
    return rv;
}

int
tn_conf_load_string(tn_conf *c, const char *name, const char *yaml, char *err, size_t errlen)
{
    return load(c, name, (const uint8_t *)yaml, strlen(yaml), err, errlen);
}

int
tn_conf_load_file(tn_conf *c, const char *path, char *err, size_t errlen)
{
    tn_buf b;
    int rv = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        seterr(err, errlen, "%s: %s", path, strerror(errno));
        return errno == ENOENT ? TN_ENOENT : TN_EIO;
    }
    /* One byte over the maximum tells a file that is too large. */
    tn_buf_init(&b, CONF_MAX_FILE + 1);
    for (;;) {
        size_t want = b.max - b.len < 4096 ? b.max - b.len : 4096;
        if (want == 0)
            break;
        uint8_t *p = tn_buf_reserve(&b, want);
        if (!p) {
            seterr(err, errlen, "%s: %s", path, tn_strerror(TN_ENOMEM));
            rv = TN_ENOMEM;
            goto out;
        }
        size_t got = fread(p, 1, want, fp);
        tn_buf_commit(&b, got);
        if (got < want) {
            if (ferror(fp)) {
                seterr(err, errlen, "%s: %s", path, strerror(errno));
                rv = TN_EIO;
                goto out;
            }
            break;
        }
    }
    if (b.len > CONF_MAX_FILE) {
        seterr(err, errlen, "%s: larger than %d bytes", path, CONF_MAX_FILE);
        rv = TN_EINVAL;
        goto out;
    }
    rv = load(c, path, b.data ? b.data : (const uint8_t *)"", b.len, err, errlen);
out:
    tn_buf_fini(&b);
    fclose(fp);
    return rv;
}
