/*
 * conf: Tern's configuration: defaults, loading a YAML file (libcyaml, schema-checked, errors
 * with FILE:LINE:COLUMN), command-line overrides, and validation.
 *
 * Example file: conf/tern.conf. Every field is optional; a missing field keeps its default.
 */
#ifndef TN_CONF_H
#define TN_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    TN_PROTO_MQTT = 0, /* mqtt://  */
    TN_PROTO_MQTTS,    /* mqtts:// */
    TN_PROTO_STOMP,    /* stomp:// */
    TN_PROTO_STOMPS,   /* stomps:// */
    TN_PROTO_AMQP,     /* amqp://  */
    TN_PROTO_AMQPS,    /* amqps:// */
    TN_PROTO_WS,       /* ws://    */
    TN_PROTO_WSS,      /* wss://   */
    TN_PROTO_WITNESS,  /* witness://: a pair's witness (pair.role witness), not for clients */
    TN_PROTO_HTTP,     /* http://: the management endpoints (GET /metrics) */
    TN_PROTO_HTTPS,    /* https:// (new schemes go last, so the values above never move) */
} tn_proto;

/* TLS settings: the top-level `tls` (and the --tls-* flags) apply to every TLS listener (mqtts,
 * stomps, amqps, wss); a listener's own `tls` overrides them field by field. NULL: not set. */
typedef struct tn_conf_tls {
    char *cert;          /* PEM certificate chain, the server's first */
    char *key;           /* PEM private key */
    char *ca;            /* PEM CA certificates that sign client certificates */
    char *verify_client; /* "none" (default), "optional" or "require" */
    char *min_version;   /* "1.2" (default) or "1.3" */
    char *ciphers;       /* TLS 1.2 cipher list, OpenSSL syntax (default: OpenSSL's) */
    char *ciphersuites;  /* TLS 1.3 cipher suites, OpenSSL syntax (default: OpenSSL's) */
} tn_conf_tls;

typedef struct tn_conf_listener {
    tn_proto proto;
    char *address;             /* numeric IPv4 or IPv6 address, e.g. "127.0.0.1", "::1" */
    uint16_t port;             /* 0 = pick a free port (tests) */
    uint32_t max_message_size; /* limits.max_message_size for this listener only; 0 = unset, use
                                  the global one (tn_conf_listener_max_message()) */
    tn_conf_tls tls;           /* this listener's own TLS settings (tn_conf_listener_tls()) */
    char **origins;            /* ws/wss: allowed Origin header values ("https://app.example.com");
                                  none: any origin. A client that sends none is allowed. */
    size_t n_origins;
} tn_conf_listener;

typedef struct tn_conf_limits {
    uint32_t max_message_size;         /* largest message body (MQTT PUBLISH payload, STOMP SEND
                                          body, ...) accepted on any protocol, in bytes; larger ones
                                          are refused as soon as their length is known. Default
                                          100 MiB. MQTT cannot carry more than 256 MiB whatever
                                          this says. A listener may set its own. */
    uint32_t max_incoming_memory;      /* bytes held, broker-wide, by messages still arriving; past
                                          it, connections in the middle of a large message are not
                                          read until it frees. Default 256 MiB, at least 64 KiB */
    uint32_t max_packet_size;          /* largest MQTT packet other than PUBLISH (CONNECT with its
                                          will, SUBSCRIBE, ...) and largest STOMP frame apart from
                                          a SEND's body, in bytes; default 1 MiB. Before
                                          max_message_size it also bounded messages: an old config
                                          that raised it for large messages still loads, and now
                                          only allows larger control packets. */
    uint32_t max_connections;          /* default 100000 */
    uint32_t max_connections_per_ip;   /* from one source address, over every listener; 0 (the
                                          default): no limit */
    uint32_t metrics_max_destinations; /* per-queue series in GET /metrics at most (1000) */
    uint32_t max_inflight;             /* QoS 1/2 messages in flight to one client, default 100 */
    uint32_t max_queued_messages;      /* per-subscriber queue length before producers are slowed
                                          (QoS 1/2) or QoS 0 messages are dropped, default 1000 */
    uint32_t max_offline_messages;     /* per offline persistent session, default 1000000 */
    uint32_t max_output_buffer;        /* bytes waiting to be written to one connection before
                                          delivery to it pauses, default 1 MiB */
    uint32_t max_queue_memory;         /* bytes of queued messages a persistent session keeps in
                                          memory; the rest are read back from the journal, 8 MiB */
    uint32_t max_deliveries;           /* deliveries of a queued message without an ack before it
                                          moves to DLQ.<queue>, default 7 (ActiveMQ's 6
                                          redeliveries) */
    uint32_t slow_consumer_timeout;    /* ms a subscriber may stay behind (max_queued_messages
                                          reached) before it is a slow consumer: QoS 0 to it is
                                          dropped, producers stop waiting on it; default 1000 */
    uint32_t max_topic_levels;         /* levels in a topic name or filter, default 200 */
    uint32_t close_timeout;            /* ms a closing connection may take to flush its output
                                          before it is closed without flushing, default 3000 */
    uint32_t amqp_max_frame_size;      /* AMQP max-frame-size announced in our open, bytes (at
                                          least 512), default 128 KiB */
    uint32_t amqp_idle_timeout;        /* ms: an AMQP connection silent this long is closed; it is
                                          announced as our idle-time-out, default 60000 */
    uint32_t tls_handshake_timeout; /* ms a TLS handshake (TLS listeners, wss) may take before the
                                       connection is closed, default 10000 */
} tn_conf_limits;

typedef struct tn_conf_store {
    char *sync;                /* "always" (default), "interval" or "never" */
    uint32_t sync_interval_ms; /* with "interval": fdatasync at least this often, default 100 */
    uint32_t compact_bytes;    /* journal bytes between checkpoints (compaction), default 64 MiB */
} tn_conf_store;

/* An active/standby pair (README, "Active/standby pair"); the --role and --pair-* flags set the
 * same fields (tn_conf_pair_set() for the strings). NULL: not set. A node with none of listen,
 * peer, witness, zookeeper set is not in a pair. ADDR:PORT values are kept as written and read
 * with tn_conf_parse_host_port(). */
typedef struct tn_conf_pair {
    char *role;             /* "node" (default) or "witness" */
    char *listen;           /* ADDR:PORT: this node's replication port */
    char *peer;             /* ADDR:PORT: the other node's replication port */
    char *witness;          /* ADDR:PORT: the witness (a witness:// listener) */
    char *zookeeper;        /* HOST:PORT[,HOST:PORT...]/PATH, instead of a witness */
    uint32_t alone_timeout; /* ms an active waits for a standby that stays behind before it
                               goes on alone; 100..600000, default 2000 */
    bool async;             /* confirm without waiting for the standby; default false */
    uint32_t lease;         /* ms a lease lasts (the witness grants it; nodes hold it no longer):
                               300..60000, default 1000 */
    uint32_t renew;         /* ms between renewals (and between a standby's requests): at
                               least 50 and below lease - 150, default 250 */
    bool rejoin_manual;     /* rejoin: manual: a fenced node stays fenced until restarted;
                               auto (default): it restarts itself in place and rejoins */
} tn_conf_pair;

/* Users and permissions (README, Users and permissions). */
typedef struct tn_conf_auth {
    char *password_file;           /* Mosquitto's format (ternctl passwd, mosquitto_passwd) */
    char *acl_file;                /* Mosquitto's acl_file format, plus queue and admin lines */
    int allow_anonymous;           /* -1 (unset: Tern's rule, tn_conf_anonymous()), 0 or 1 */
    uint32_t fail_delay;           /* ms before a refused login is answered; default 1000 */
    bool use_identity_as_username; /* the TLS client certificate's CN is the user name */
} tn_conf_auth;

typedef struct tn_conf {
    tn_conf_listener *listeners;
    size_t n_listeners;
    char *data_dir;  /* default "./data" */
    char *log_level; /* "error", "warn", "info" (default), "debug" */
    tn_conf_limits limits;
    tn_conf_store store;
    tn_conf_tls tls; /* defaults for every TLS listener (--tls-cert, --tls-key, ...) */
    tn_conf_pair pair;
    tn_conf_auth auth;
} tn_conf;

/* Fills c with the built-in defaults: MQTT, STOMP and AMQP on 127.0.0.1, data in ./data, info
 * logs, not in a pair (pair.role "node"). */
void tn_conf_init(tn_conf *c);
void tn_conf_fini(tn_conf *c);

/* Loads path over the current values, then runs tn_conf_validate() on the result. A `listeners:`
 * list replaces all current listeners; other fields not in the file keep their values.
 * On error c is unchanged and err (size errlen; may be NULL) gets one line:
 * "FILE:LINE:COL: what is wrong", or "FILE: what is wrong" where no position is known.
 * Returns 0, TN_ENOENT (no such file), TN_EIO (cannot read it), TN_ENOMEM or TN_EINVAL (bad
 * contents, larger than 1 MiB). */
int tn_conf_load_file(tn_conf *c, const char *path, char *err, size_t errlen);
/* The same from a string (unit tests); name is used in messages. */
int tn_conf_load_string(tn_conf *c, const char *name, const char *yaml, char *err, size_t errlen);

/* Parses "mqtt://127.0.0.1:1883", "mqtt://[::1]:1883" into l (address allocated, in canonical
 * form without brackets; free it with tn_conf_listener_fini()), with max_message_size 0 (the
 * global limit). The port is required; host names and paths are rejected. TN_EINVAL with a
 * message in err otherwise (l untouched). */
int tn_conf_parse_listen_url(const char *url, tn_conf_listener *l, char *err, size_t errlen);
/* Frees l->address (from tn_conf_parse_listen_url) and sets it to NULL. */
void tn_conf_listener_fini(tn_conf_listener *l);
/* Replaces all listeners by those given (used by --listen; copies). */
void tn_conf_set_listeners(tn_conf *c, const tn_conf_listener *l, size_t n);

/* The largest message accepted on listener l (one of c's): its own max_message_size if set,
 * else c->limits.max_message_size. */
uint32_t tn_conf_listener_max_message(const tn_conf *c, const tn_conf_listener *l);

/* Checks the whole configuration (at least one listener, valid addresses, no duplicate
 * address:port except port 0, known log level, non-empty data_dir, every limit at least 1,
 * max_inflight at most 65535, max_incoming_memory at least 65536, and the pair: role node or
 * witness; a witness has exactly one listener, a witness:// one, which no node may have; a
 * node with any of pair.listen/peer/witness/zookeeper needs listen, peer and exactly one of
 * witness or zookeeper, well formed; alone_timeout 100..600000). TN_EINVAL with
 * "FIELD: what is wrong" in err. A listener's max_message_size of 0 means unset; a file that
 * sets it to 0 is refused by the loader. */
int tn_conf_validate(const tn_conf *c, char *err, size_t errlen);

const char *tn_conf_proto_name(tn_proto p); /* "mqtt", "mqtts", ..., "witness" */
bool tn_conf_proto_tls(tn_proto p);         /* mqtts, stomps, amqps, wss */
bool tn_conf_proto_ws(tn_proto p);          /* ws, wss */

/* Listener l's TLS settings: its own, else c's top-level ones, field by field (pointers into c
 * and l, not copies). */
void tn_conf_listener_tls(const tn_conf *c, const tn_conf_listener *l, tn_conf_tls *out);
/* Sets one field of a tn_conf_tls (a copy of v), e.g. from --tls-cert. */
void tn_conf_tls_set(char **field, const char *v);

/* Sets one string field of c->pair (a copy of v; NULL unsets it), e.g.
 * tn_conf_pair_set(&c->pair.peer, optarg) for --pair-peer, so flags override the file. */
/* Whether anonymous clients may connect, by Tern's rule: as auth.allow_anonymous says when
 * set; otherwise not with a password file, and without one only while every client listener is
 * on a loopback address. TN_EINVAL (err says which listener) when a listener on another address
 * has neither a password file nor allow_anonymous true: ternd refuses to start. */
int tn_conf_anonymous(const tn_conf *c, bool *allowed, char *err, size_t errlen);
void tn_conf_pair_set(char **field, const char *v);

/* Parses "ADDR:PORT" strictly: ADDR a numeric IPv4 address or an IPv6 address in brackets
 * ("[::1]:7001"), PORT 1..65535 in decimal, nothing else. host (size hostlen; INET6_ADDRSTRLEN,
 * 46, is always enough) gets the address in canonical form without brackets, ready for
 * inet_pton/uv_ip*_addr. Returns 0, or TN_EINVAL (host and port untouched). */
int tn_conf_parse_host_port(const char *s, char *host, size_t hostlen, uint16_t *port);

#endif
