/*
 * conf tests. With a path argument (ctest conf_example_loads) it only checks that the file loads
 * and sets every field to the built-in default: the shipped conf/tern.conf must not rot.
 */
#include "conf/conf.h"
#include "core/base/base.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Listeners are written positionally here ({proto, address, port, max_message_size}); the
 * TLS and origin fields they leave out are zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static const char *example_path;

/* Loads yaml over the defaults and expects the exact error message; c must stay unchanged. */
static void
expect_error(const char *yaml, const char *want)
{
    tn_conf c;
    char err[512] = "";
    tn_conf_init(&c);
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "t.conf", yaml, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, want);
    if (strcmp(err, want) != 0)
        fprintf(stderr, "\n  yaml: %s\n  got:  %s\n  want: %s\n", yaml, err, want);
    CU_ASSERT_EQUAL(c.n_listeners, 3); /* the defaults: MQTT, STOMP and AMQP */
    CU_ASSERT_EQUAL(c.listeners[0].port, 1883);
    CU_ASSERT_STRING_EQUAL(c.data_dir, "./data");
    CU_ASSERT_STRING_EQUAL(c.log_level, "info");
    CU_ASSERT_EQUAL(c.limits.max_inflight, 100);
    tn_conf_fini(&c);
}

/* Parses url and expects an error containing want. */
static void
expect_url_error(const char *url, const char *want)
{
    tn_conf_listener l = {TN_PROTO_WSS, NULL, 7, 9};
    char err[512] = "";
    CU_ASSERT_EQUAL(tn_conf_parse_listen_url(url, &l, err, sizeof err), TN_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
    if (!strstr(err, want))
        fprintf(stderr, "\n  url: %s\n  got:  %s\n  want: ...%s...\n", url, err, want);
    CU_ASSERT_PTR_NULL(l.address); /* untouched */
    CU_ASSERT_EQUAL(l.port, 7);
    CU_ASSERT_EQUAL(l.max_message_size, 9);
}

static void
expect_url(const char *url, tn_proto proto, const char *address, unsigned port)
{
    tn_conf_listener l;
    char err[256] = "";
    memset(&l, 0xff, sizeof l);
    l.address = NULL;
    CU_ASSERT_EQUAL_FATAL(tn_conf_parse_listen_url(url, &l, err, sizeof err), 0);
    CU_ASSERT_EQUAL(l.proto, proto);
    CU_ASSERT_STRING_EQUAL(l.address, address);
    CU_ASSERT_EQUAL(l.port, port);
    CU_ASSERT_EQUAL(l.max_message_size, 0); /* the global limit */
    tn_conf_listener_fini(&l);
    CU_ASSERT_PTR_NULL(l.address);
}

static bool
is_default(const tn_conf *c)
{
    return c->n_listeners == 3 && c->listeners[0].proto == TN_PROTO_MQTT &&
           strcmp(c->listeners[0].address, "127.0.0.1") == 0 && c->listeners[0].port == 1883 &&
           c->listeners[0].max_message_size == 0 && c->listeners[1].proto == TN_PROTO_STOMP &&
           c->listeners[1].port == 61613 && c->listeners[1].max_message_size == 0 &&
           c->listeners[2].proto == TN_PROTO_AMQP && c->listeners[2].port == 5672 &&
           strcmp(c->data_dir, "./data") == 0 && strcmp(c->log_level, "info") == 0 &&
           c->limits.max_message_size == 104857600 && c->limits.max_incoming_memory == 268435456 &&
           c->limits.max_packet_size == 1048576 && c->limits.max_connections == 100000 &&
           c->limits.max_inflight == 100 && c->limits.max_queued_messages == 1000 &&
           c->limits.max_offline_messages == 1000000 && c->limits.max_output_buffer == 1048576 &&
           c->limits.max_queue_memory == 8388608 && c->limits.max_deliveries == 7 &&
           c->limits.slow_consumer_timeout == 1000 && c->limits.max_topic_levels == 200 &&
           c->limits.close_timeout == 3000 && strcmp(c->store.sync, "always") == 0 &&
           c->store.sync_interval_ms == 100 && c->store.compact_bytes == 64u << 20 &&
           strcmp(c->pair.role, "node") == 0 && !c->pair.listen && !c->pair.peer &&
           !c->pair.witness && !c->pair.zookeeper && c->pair.alone_timeout == 2000 &&
           !c->pair.async && c->pair.lease == 1000 && c->pair.renew == 250;
}

/* Writes text to a new temporary file; returns its path (free it, unlink it). */
static char *
temp_file(const char *text)
{
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *path = tn_xmalloc(strlen(dir) + 32);
    sprintf(path, "%s/conf_test_XXXXXX", dir);
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    size_t n = strlen(text);
    CU_ASSERT_FATAL(write(fd, text, n) == (ssize_t)n);
    close(fd);
    return path;
}

static void
test_defaults(void)
{
    tn_conf c;
    char err[256] = "";
    tn_conf_init(&c);
    CU_ASSERT_TRUE(is_default(&c));
    CU_ASSERT_EQUAL(c.limits.max_message_size, 100u << 20);
    CU_ASSERT_EQUAL(c.limits.max_incoming_memory, 256u << 20);
    CU_ASSERT_EQUAL(c.limits.max_packet_size, 1u << 20);
    CU_ASSERT_EQUAL(c.listeners[0].max_message_size, 0);
    CU_ASSERT_EQUAL(tn_conf_listener_max_message(&c, &c.listeners[0]), 100u << 20);
    CU_ASSERT_EQUAL(tn_conf_listener_max_message(&c, &c.listeners[1]), 100u << 20);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), 0);
    tn_conf_fini(&c);
    CU_ASSERT_PTR_NULL(c.listeners);
    CU_ASSERT_PTR_NULL(c.data_dir);
    tn_conf_fini(&c); /* twice is harmless */
}

static void
test_full_file(void)
{
    const char *yaml = "# every field\n"
                       "listeners:\n"
                       "  - url: mqtt://0.0.0.0:1884\n"
                       "  - url: mqtts://[::]:8883\n"
                       "  - url: \"stomp://[::1]:61613\"\n"
                       "  - url: amqp://10.1.2.3:5672\n"
                       "  - url: amqps://10.1.2.3:5671\n"
                       "  - url: ws://127.0.0.1:8080\n"
                       "    allowed_origins: [https://a.example, \"http://b.example:8000\"]\n"
                       "  - url: wss://127.0.0.1:0\n"
                       "    tls:\n"
                       "      cert: /etc/tern/ws.pem\n"
                       "      ca: /etc/tern/ca.pem\n"
                       "      verify_client: require\n"
                       "      min_version: \"1.3\"\n"
                       "      ciphers: ECDHE+AESGCM\n"
                       "      ciphersuites: TLS_AES_256_GCM_SHA384\n"
                       "  - url: stomps://127.0.0.1:0\n"
                       "    max_message_size: 4294967295\n"
                       "tls:\n"
                       "  cert: /etc/tern/server.pem\n"
                       "  key: /etc/tern/server.key\n"
                       "data_dir: /var/lib/tern\n"
                       "log_level: debug\n"
                       "limits:\n"
                       "  max_message_size: 1\n"
                       "  max_incoming_memory: 65536\n"
                       "  max_packet_size: 2048\n"
                       "  max_connections: 10\n"
                       "  max_inflight: 65535\n"
                       "  max_queued_messages: 5\n"
                       "  max_offline_messages: 6\n"
                       "  max_output_buffer: 4294967295\n";
    tn_conf c;
    char err[256] = "";
    tn_conf_init(&c);
    CU_ASSERT_EQUAL_FATAL(tn_conf_load_string(&c, "t.conf", yaml, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(err, "");
    CU_ASSERT_EQUAL_FATAL(c.n_listeners, 8);
    /* TLS: the listener's own fields over the top-level ones */
    tn_conf_tls t;
    tn_conf_listener_tls(&c, &c.listeners[6], &t);
    CU_ASSERT_STRING_EQUAL(t.cert, "/etc/tern/ws.pem");
    CU_ASSERT_STRING_EQUAL(t.key, "/etc/tern/server.key");
    CU_ASSERT_STRING_EQUAL(t.ca, "/etc/tern/ca.pem");
    CU_ASSERT_STRING_EQUAL(t.verify_client, "require");
    CU_ASSERT_STRING_EQUAL(t.min_version, "1.3");
    CU_ASSERT_STRING_EQUAL(t.ciphers, "ECDHE+AESGCM");
    CU_ASSERT_STRING_EQUAL(t.ciphersuites, "TLS_AES_256_GCM_SHA384");
    tn_conf_listener_tls(&c, &c.listeners[1], &t);
    CU_ASSERT_STRING_EQUAL(t.cert, "/etc/tern/server.pem");
    CU_ASSERT_PTR_NULL(t.ca);
    CU_ASSERT_PTR_NULL(t.verify_client);
    CU_ASSERT_EQUAL_FATAL(c.listeners[5].n_origins, 2);
    CU_ASSERT_STRING_EQUAL(c.listeners[5].origins[1], "http://b.example:8000");
    CU_ASSERT_EQUAL(c.listeners[0].proto, TN_PROTO_MQTT);
    CU_ASSERT_STRING_EQUAL(c.listeners[0].address, "0.0.0.0");
    CU_ASSERT_EQUAL(c.listeners[0].port, 1884);
    CU_ASSERT_EQUAL(c.listeners[1].proto, TN_PROTO_MQTTS);
    CU_ASSERT_STRING_EQUAL(c.listeners[1].address, "::");
    CU_ASSERT_EQUAL(c.listeners[1].port, 8883);
    CU_ASSERT_EQUAL(c.listeners[2].proto, TN_PROTO_STOMP);
    CU_ASSERT_STRING_EQUAL(c.listeners[2].address, "::1");
    CU_ASSERT_EQUAL(c.listeners[3].proto, TN_PROTO_AMQP);
    CU_ASSERT_EQUAL(c.listeners[4].proto, TN_PROTO_AMQPS);
    CU_ASSERT_EQUAL(c.listeners[5].proto, TN_PROTO_WS);
    CU_ASSERT_EQUAL(c.listeners[6].proto, TN_PROTO_WSS);
    CU_ASSERT_EQUAL(c.listeners[6].port, 0);
    CU_ASSERT_EQUAL(c.listeners[7].proto, TN_PROTO_STOMPS);
    CU_ASSERT_EQUAL(c.listeners[7].port, 0); /* port 0 twice on one address is fine */
    CU_ASSERT_EQUAL(c.listeners[6].max_message_size, 0);
    CU_ASSERT_EQUAL(c.listeners[7].max_message_size, 4294967295u);
    CU_ASSERT_STRING_EQUAL(c.data_dir, "/var/lib/tern");
    CU_ASSERT_STRING_EQUAL(c.log_level, "debug");
    CU_ASSERT_EQUAL(c.limits.max_message_size, 1);
    CU_ASSERT_EQUAL(c.limits.max_incoming_memory, 65536);
    CU_ASSERT_EQUAL(c.limits.max_packet_size, 2048);
    CU_ASSERT_EQUAL(c.limits.max_connections, 10);
    CU_ASSERT_EQUAL(c.limits.max_inflight, 65535);
    CU_ASSERT_EQUAL(c.limits.max_queued_messages, 5);
    CU_ASSERT_EQUAL(c.limits.max_offline_messages, 6);
    CU_ASSERT_EQUAL(c.limits.max_output_buffer, 4294967295u);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), 0);
    tn_conf_fini(&c);
}

static void
test_partial_file(void)
{
    tn_conf c;
    char err[256] = "";
    tn_conf_init(&c);
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "a", "log_level: warn\nlimits:\n  max_inflight: 7\n",
                                        err, sizeof err),
                    0);
    CU_ASSERT_STRING_EQUAL(c.log_level, "warn");
    CU_ASSERT_EQUAL(c.limits.max_inflight, 7);
    CU_ASSERT_EQUAL(c.limits.max_queued_messages, 1000); /* kept */
    CU_ASSERT_EQUAL(c.limits.max_packet_size, 1048576);
    CU_ASSERT_STRING_EQUAL(c.data_dir, "./data");
    CU_ASSERT_EQUAL_FATAL(c.n_listeners, 3);
    CU_ASSERT_EQUAL(c.listeners[0].port, 1883);

    /* A second file loads over the first; its listener list replaces the old one. */
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "b", "listeners:\n  - url: stomp://127.0.0.1:61613\n",
                                        err, sizeof err),
                    0);
    CU_ASSERT_EQUAL_FATAL(c.n_listeners, 1);
    CU_ASSERT_EQUAL(c.listeners[0].proto, TN_PROTO_STOMP);
    CU_ASSERT_EQUAL(c.listeners[0].port, 61613);
    CU_ASSERT_STRING_EQUAL(c.log_level, "warn");
    CU_ASSERT_EQUAL(c.limits.max_inflight, 7);

    /* Empty mappings, comments only and an empty string change nothing. */
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "c", "limits: {}\n", err, sizeof err), 0);
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "d", "# nothing\n", err, sizeof err), 0);
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "e", "", err, sizeof err), 0);
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "f", "{}", err, sizeof err), 0);
    CU_ASSERT_EQUAL(c.limits.max_inflight, 7);
    CU_ASSERT_EQUAL(c.listeners[0].port, 61613);
    tn_conf_fini(&c);
}

static void
test_yaml_forms(void)
{
    tn_conf c;
    char err[256] = "";
    tn_conf_init(&c);
    /* Flow style, quotes, anchors and aliases are YAML, so they work. */
    CU_ASSERT_EQUAL(
        tn_conf_load_string(&c, "t",
                            "listeners: [{url: 'mqtt://[::1]:1'}, {url: \"ws://[::1]:2\"}]\n"
                            "data_dir: \"no\"\n"
                            "log_level: 'error'\n"
                            "limits: {max_inflight: &n \"42\", max_queued_messages: *n}\n",
                            err, sizeof err),
        0);
    CU_ASSERT_STRING_EQUAL(err, "");
    CU_ASSERT_EQUAL(c.n_listeners, 2);
    CU_ASSERT_STRING_EQUAL(c.data_dir, "no"); /* a string field keeps "no" as text */
    CU_ASSERT_STRING_EQUAL(c.log_level, "error");
    CU_ASSERT_EQUAL(c.limits.max_inflight, 42);
    CU_ASSERT_EQUAL(c.limits.max_queued_messages, 42);
    tn_conf_fini(&c);
}

static void
test_syntax_errors(void)
{
    expect_error("listeners:\n  - url: mqtt://127.0.0.1:1\n bad: y\n",
                 "t.conf:3:2: did not find expected key (while parsing a block mapping at line 1)");
    expect_error("data_dir: \"x\n",
                 "t.conf:2:1: found unexpected end of stream (while scanning a quoted scalar at "
                 "line 1)");
    expect_error("a: [\n", "t.conf:2:1: did not find expected node content (while parsing a flow "
                           "node at line 2)");
    expect_error("---\ndata_dir: a\n---\ndata_dir: b\n",
                 "t.conf:3:1: only one YAML document is allowed");
    expect_error("\xff", "t.conf: invalid leading UTF-8 octet at byte 0");
    expect_error("listeners:\n  - url: mqtt://127.0.0.1:1\n    ? {a: 1}\n    : 2\n",
                 "t.conf:3:7: a key must be a single value, not a mapping");
}

static void
test_unknown_keys(void)
{
    expect_error("foo: 1\n", "t.conf:1:1: unknown key 'foo'");
    expect_error("data_dir: x\nDataDir: y\n", "t.conf:2:1: unknown key 'DataDir'");
    expect_error("limits:\n  max_inflight: 3\n  max_infligt: 3\n",
                 "t.conf:3:3: limits: unknown key 'max_infligt'");
    expect_error("listeners:\n"
                 "  - url: mqtt://127.0.0.1:1\n"
                 "  - url: mqtt://127.0.0.1:2\n"
                 "    port: 3\n",
                 "t.conf:4:5: listeners[1]: unknown key 'port'");
    expect_error("listeners:\n  - {}\n", "t.conf:2:5: listeners[0]: missing key 'url'");
    expect_error("listeners:\n  - url: mqtt://127.0.0.1:1\n    url: mqtt://127.0.0.1:2\n",
                 "t.conf:3:5: listeners[0]: duplicate key 'url'");
    expect_error("data_dir: a\ndata_dir: b\n", "t.conf:2:1: duplicate key 'data_dir'");
}

static void
test_wrong_types(void)
{
    expect_error("limits:\n  max_inflight: -1\n",
                 "t.conf:2:17: limits.max_inflight: '-1' is not a whole number from 0 to "
                 "4294967295");
    expect_error("limits:\n  max_inflight: abc\n",
                 "t.conf:2:17: limits.max_inflight: 'abc' is not a whole number from 0 to "
                 "4294967295");
    expect_error("limits:\n  max_connections: 1.5\n",
                 "t.conf:2:20: limits.max_connections: '1.5' is not a whole number from 0 to "
                 "4294967295");
    expect_error("limits:\n  max_connections: 0x10\n",
                 "t.conf:2:20: limits.max_connections: '0x10' is not a whole number from 0 to "
                 "4294967295");
    expect_error("limits:\n  max_output_buffer: 4294967296\n",
                 "t.conf:2:22: limits.max_output_buffer: '4294967296' is not a whole number from "
                 "0 to 4294967295");
    expect_error("limits:\n  max_output_buffer:\n",
                 "t.conf:2:21: limits.max_output_buffer: '' is not a whole number from 0 to "
                 "4294967295");
    expect_error("limits:\n  max_inflight:\n    x: 1\n",
                 "t.conf:3:5: limits.max_inflight: expected a single value, found a mapping");
    expect_error("listeners:\n  - url: [1]\n",
                 "t.conf:2:10: listeners[0].url: expected a single value, found a list");
    expect_error("listeners:\n  - mqtt://127.0.0.1:1883\n",
                 "t.conf:2:5: listeners[0]: expected a mapping, found a single value");
    expect_error("listeners:\n", "t.conf:1:11: listeners: expected a list, found a single value");
    expect_error("listeners: []\n", "t.conf:1:12: listeners: the list must not be empty");
    expect_error("log_level: [a]\n",
                 "t.conf:1:12: log_level: expected a single value, found a list");
    expect_error("limits: 5\n", "t.conf:1:9: limits: expected a mapping, found a single value");
    expect_error("- 1\n", "t.conf:1:1: expected a mapping, found a list");
    expect_error("data_dir: \"\"\n", "t.conf:1:11: data_dir: must not be empty");
}

static void
test_bad_listeners(void)
{
    expect_error("listeners:\n  - url: gopher://1.2.3.4:1\n",
                 "t.conf:2:10: listeners[0].url: 'gopher://1.2.3.4:1': unknown scheme 'gopher' "
                 "(expected mqtt, mqtts, stomp, stomps, amqp, amqps, ws, wss, witness, http or "
                 "https)");
    expect_error("listeners:\n  - url: mqtt://localhost:1883\n",
                 "t.conf:2:10: listeners[0].url: 'mqtt://localhost:1883': 'localhost' is not a "
                 "numeric IPv4 address (host names are not resolved; IPv6 goes in brackets)");
    expect_error("listeners:\n  - url: mqtt://[::1]:1\n  - url: mqtt://[fe80::zz]:1883\n",
                 "t.conf:3:10: listeners[1].url: 'mqtt://[fe80::zz]:1883': 'fe80::zz' is not a "
                 "valid IPv6 address");
    expect_error("listeners:\n  - url: mqtt://127.0.0.1\n",
                 "t.conf:2:10: listeners[0].url: 'mqtt://127.0.0.1': missing port, e.g. "
                 "mqtt://127.0.0.1:1883");
    expect_error("listeners:\n  - url: mqtt://127.0.0.1:70000\n",
                 "t.conf:2:10: listeners[0].url: 'mqtt://127.0.0.1:70000': port 70000 is out of "
                 "range 0..65535");
    expect_error("listeners:\n  - url: mqtt://127.0.0.1:abc\n",
                 "t.conf:2:10: listeners[0].url: 'mqtt://127.0.0.1:abc': port 'abc' is not a "
                 "number");
    expect_error("listeners:\n"
                 "  - url: mqtt://127.0.0.1:1883\n"
                 "  - url: mqtt://[::1]:1883\n"
                 "  - url: stomp://127.0.0.1:1883\n",
                 "t.conf:4:10: listeners[2].url: 127.0.0.1:1883 is already used by listeners[0]");
    /* Same address in another spelling. */
    expect_error("listeners: [{url: \"mqtt://[::1]:1\"}, {url: \"ws://[0::0001]:1\"}]\n",
                 "t.conf:1:44: listeners[1].url: [::1]:1 is already used by listeners[0]");
}

static void
test_bad_values(void)
{
    expect_error("log_level: loud\n",
                 "t.conf:1:12: log_level: 'loud' is not one of error, warn, info, debug");
    expect_error("log_level: INFO\n",
                 "t.conf:1:12: log_level: 'INFO' is not one of error, warn, info, debug");
    expect_error("limits:\n  max_inflight: 0\n",
                 "t.conf:2:17: limits.max_inflight: must be at least 1");
    expect_error("limits:\n  max_packet_size: 0\n",
                 "t.conf:2:20: limits.max_packet_size: must be at least 1");
    expect_error("limits:\n  max_offline_messages: 0\n",
                 "t.conf:2:25: limits.max_offline_messages: must be at least 1");
    expect_error("limits:\n  max_inflight: 65536\n",
                 "t.conf:2:17: limits.max_inflight: 65536 is more than 65535 (MQTT Receive "
                 "Maximum is a 16-bit value)");
    expect_error("limits: *a\n", "t.conf:1:9: limits: No anchor found for alias: 'a'");
    /* TLS */
    expect_error("listeners:\n  - url: mqtts://127.0.0.1:0\n",
                 "t.conf:2:10: listeners[0].url: a mqtts:// listener needs a certificate and a key "
                 "(tls.cert and tls.key, or --tls-cert and --tls-key)");
    expect_error("tls: {cert: c, key: k}\nlisteners:\n  - url: wss://127.0.0.1:0\n"
                 "    tls: {verify_client: always}\n",
                 "t.conf:4:26: listeners[0].tls.verify_client: 'always' is not one of none, "
                 "optional, require");
    expect_error("tls: {cert: c, key: k, verify_client: require}\nlisteners:\n"
                 "  - url: amqps://127.0.0.1:0\n",
                 "t.conf:1:39: tls.verify_client: verify_client require needs a CA file (tls.ca "
                 "or --tls-ca)");
    expect_error("tls: {cert: c, key: k, min_version: \"1.1\"}\nlisteners:\n"
                 "  - url: stomps://127.0.0.1:0\n",
                 "t.conf:1:37: tls.min_version: '1.1' is not 1.2 or 1.3");
    expect_error("listeners:\n  - url: mqtt://127.0.0.1:0\n    allowed_origins: [x]\n",
                 "t.conf:3:22: listeners[0].allowed_origins: only ws:// and wss:// listeners "
                 "check an Origin");
    expect_error("tls: {cert: c, pem: k}\n", "t.conf:1:16: tls: unknown key 'pem'");
}

/* limits.max_message_size, limits.max_incoming_memory and a listener's own max_message_size. */
static void
test_message_size(void)
{
    tn_conf c;
    char err[512] = "";
    tn_conf_init(&c);
    CU_ASSERT_EQUAL_FATAL(tn_conf_load_string(&c, "t.conf",
                                              "listeners:\n"
                                              "  - url: mqtt://127.0.0.1:1883\n"
                                              "  - url: stomp://127.0.0.1:61613\n"
                                              "    max_message_size: 1073741824\n"
                                              "  - max_message_size: 1024\n"
                                              "    url: ws://127.0.0.1:8080\n"
                                              "limits:\n"
                                              "  max_message_size: 209715200\n"
                                              "  max_incoming_memory: 536870912\n",
                                              err, sizeof err),
                          0);
    CU_ASSERT_STRING_EQUAL(err, "");
    CU_ASSERT_EQUAL(c.limits.max_message_size, 209715200);
    CU_ASSERT_EQUAL(c.limits.max_incoming_memory, 536870912);
    CU_ASSERT_EQUAL(c.limits.max_packet_size, 1048576); /* kept */
    CU_ASSERT_EQUAL_FATAL(c.n_listeners, 3);
    CU_ASSERT_EQUAL(c.listeners[0].max_message_size, 0);
    CU_ASSERT_EQUAL(c.listeners[1].max_message_size, 1073741824);
    CU_ASSERT_EQUAL(c.listeners[2].max_message_size, 1024);
    CU_ASSERT_EQUAL(tn_conf_listener_max_message(&c, &c.listeners[0]), 209715200);
    CU_ASSERT_EQUAL(tn_conf_listener_max_message(&c, &c.listeners[1]), 1073741824);
    CU_ASSERT_EQUAL(tn_conf_listener_max_message(&c, &c.listeners[2]), 1024);

    /* A later global change reaches the listeners without their own value only. */
    CU_ASSERT_EQUAL(
        tn_conf_load_string(&c, "u.conf", "limits:\n  max_message_size: 5\n", err, sizeof err), 0);
    CU_ASSERT_EQUAL(tn_conf_listener_max_message(&c, &c.listeners[0]), 5);
    CU_ASSERT_EQUAL(tn_conf_listener_max_message(&c, &c.listeners[1]), 1073741824);

    /* --listen replaces them all with listeners using the global limit. */
    tn_conf_listener l;
    CU_ASSERT_EQUAL_FATAL(tn_conf_parse_listen_url("stomp://[::1]:1", &l, err, sizeof err), 0);
    CU_ASSERT_EQUAL(l.max_message_size, 0);
    tn_conf_set_listeners(&c, &l, 1);
    tn_conf_listener_fini(&l);
    CU_ASSERT_EQUAL(c.listeners[0].max_message_size, 0);
    CU_ASSERT_EQUAL(tn_conf_listener_max_message(&c, &c.listeners[0]), 5);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), 0);
    tn_conf_fini(&c);

    /* An old config that raised max_packet_size for large messages still loads. */
    tn_conf_init(&c);
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "old.conf", "limits:\n  max_packet_size: 20971520\n",
                                        err, sizeof err),
                    0);
    CU_ASSERT_EQUAL(c.limits.max_packet_size, 20971520);
    CU_ASSERT_EQUAL(c.limits.max_message_size, 104857600);
    tn_conf_fini(&c);

    expect_error("limits:\n  max_message_size: 0\n",
                 "t.conf:2:21: limits.max_message_size: must be at least 1");
    expect_error("limits:\n  max_message_size: 4294967296\n",
                 "t.conf:2:21: limits.max_message_size: '4294967296' is not a whole number from 0 "
                 "to 4294967295");
    expect_error("limits:\n  max_incoming_memory: 65535\n",
                 "t.conf:2:24: limits.max_incoming_memory: must be at least 65536");
    expect_error("limits:\n  max_incoming_memory: 0\n",
                 "t.conf:2:24: limits.max_incoming_memory: must be at least 65536");
    expect_error("listeners:\n"
                 "  - url: mqtt://127.0.0.1:1\n"
                 "  - url: mqtt://127.0.0.1:2\n"
                 "    max_message_size: 0\n",
                 "t.conf:4:23: listeners[1].max_message_size: must be at least 1");
    expect_error("listeners:\n  - url: mqtt://127.0.0.1:1\n    max_message_size: 1MiB\n",
                 "t.conf:3:23: listeners[0].max_message_size: '1MiB' is not a whole number from 1 "
                 "to 4294967295");
    expect_error("listeners:\n  - url: mqtt://127.0.0.1:1\n    max_message_size: -1\n",
                 "t.conf:3:23: listeners[0].max_message_size: '-1' is not a whole number from 1 "
                 "to 4294967295");
    expect_error("listeners:\n  - max_message_size: 10\n",
                 "t.conf:2:5: listeners[0]: missing key 'url'");
    expect_error("listeners:\n  - url: mqtt://127.0.0.1:1\n    max_message: 10\n",
                 "t.conf:3:5: listeners[0]: unknown key 'max_message'");
}

static void
test_url_parser(void)
{
    expect_url("mqtt://127.0.0.1:1883", TN_PROTO_MQTT, "127.0.0.1", 1883);
    expect_url("mqtts://0.0.0.0:8883", TN_PROTO_MQTTS, "0.0.0.0", 8883);
    expect_url("stomp://[::1]:61613", TN_PROTO_STOMP, "::1", 61613);
    expect_url("stomps://[::]:0", TN_PROTO_STOMPS, "::", 0);
    expect_url("amqp://10.0.0.1:65535", TN_PROTO_AMQP, "10.0.0.1", 65535);
    expect_url("amqps://[2001:db8:0:0::1]:5671", TN_PROTO_AMQPS, "2001:db8::1", 5671);
    expect_url("ws://[::ffff:127.0.0.1]:80", TN_PROTO_WS, "::ffff:127.0.0.1", 80);
    expect_url("WSS://127.0.0.1:00443", TN_PROTO_WSS, "127.0.0.1", 443);
    expect_url("witness://10.0.0.3:7000", TN_PROTO_WITNESS, "10.0.0.3", 7000);
    expect_url("Witness://[::1]:0", TN_PROTO_WITNESS, "::1", 0);

    expect_url_error("127.0.0.1:1883", "missing scheme");
    expect_url_error("", "missing scheme");
    expect_url_error("mqtt:/127.0.0.1:1883", "missing scheme");
    expect_url_error("tcp://127.0.0.1:1883", "unknown scheme 'tcp'");
    expect_url_error("://127.0.0.1:1883", "unknown scheme ''");
    expect_url_error("mqttx://127.0.0.1:1883", "unknown scheme 'mqttx'");
    expect_url_error("mqtt://:1883", "missing address");
    expect_url_error("mqtt://[]:1883", "missing address");
    expect_url_error("mqtt://localhost:1883", "'localhost' is not a numeric IPv4 address");
    expect_url_error("mqtt://256.0.0.1:1883", "'256.0.0.1' is not a numeric IPv4 address");
    expect_url_error("mqtt://1.2.3:1883", "'1.2.3' is not a numeric IPv4 address");
    expect_url_error("mqtt://user@1.2.3.4:1883", "'user@1.2.3.4' is not a numeric IPv4");
    expect_url_error("mqtt://::1:1883", "an IPv6 address must be in brackets");
    expect_url_error("mqtt://[::1:1883", "missing ']'");
    expect_url_error("mqtt://[127.0.0.1]:1883", "'127.0.0.1' is not a valid IPv6 address");
    expect_url_error("mqtt://[fe80::1%eth0]:1883", "is not a valid IPv6 address");
    expect_url_error("mqtt://127.0.0.1", "missing port");
    expect_url_error("mqtt://127.0.0.1:", "missing port");
    expect_url_error("mqtt://[::1]", "missing port, e.g. mqtt://[::1]:1883");
    expect_url_error("mqtt://[::1]x:1", "unexpected 'x:1' after the address");
    expect_url_error("mqtt://127.0.0.1/x", "unexpected '/x' after the address");
    expect_url_error("mqtt://127.0.0.1:65536", "port 65536 is out of range");
    expect_url_error("mqtt://127.0.0.1:99999999999", "port 99999999999 is out of range");
    expect_url("mqtt://127.0.0.1:000065535", TN_PROTO_MQTT, "127.0.0.1", 65535);
    expect_url_error("mqtt://127.0.0.1:-1", "port '-1' is not a number");
    expect_url_error("mqtt://127.0.0.1:+1", "port '+1' is not a number");
    expect_url_error("mqtt://127.0.0.1:1 ", "port '1 ' is not a number");
    expect_url_error("mqtt://127.0.0.1:1x", "port '1x' is not a number");
    expect_url_error("ws://127.0.0.1:80/mqtt", "unexpected '/mqtt' after the port");

    /* err may be NULL or short. */
    tn_conf_listener l = {0};
    char small[8];
    CU_ASSERT_EQUAL(tn_conf_parse_listen_url("x", &l, NULL, 0), TN_EINVAL);
    CU_ASSERT_EQUAL(tn_conf_parse_listen_url("x", &l, small, sizeof small), TN_EINVAL);
    CU_ASSERT_EQUAL(strlen(small), sizeof small - 1);
    tn_conf_listener_fini(&l); /* no address: harmless */
}

static void
test_set_listeners(void)
{
    tn_conf c;
    char err[256] = "";
    char a0[] = "127.0.0.1", a1[] = "::1";
    tn_conf_listener ls[2] = {{TN_PROTO_AMQP, a0, 5672, 0}, {TN_PROTO_WS, a1, 8080, 4096}};
    tn_conf_init(&c);
    tn_conf_set_listeners(&c, ls, 2);
    a0[0] = 'X'; /* copied: the caller's strings are not kept */
    ls[1].port = 1;
    CU_ASSERT_EQUAL_FATAL(c.n_listeners, 2);
    CU_ASSERT_PTR_NOT_EQUAL(c.listeners, ls);
    CU_ASSERT_STRING_EQUAL(c.listeners[0].address, "127.0.0.1");
    CU_ASSERT_EQUAL(c.listeners[0].proto, TN_PROTO_AMQP);
    CU_ASSERT_EQUAL(c.listeners[1].port, 8080);
    CU_ASSERT_EQUAL(c.listeners[0].max_message_size, 0);
    CU_ASSERT_EQUAL(c.listeners[1].max_message_size, 4096);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), 0);

    /* From its own array (the old one is freed after copying). */
    tn_conf_set_listeners(&c, c.listeners + 1, 1);
    CU_ASSERT_EQUAL_FATAL(c.n_listeners, 1);
    CU_ASSERT_STRING_EQUAL(c.listeners[0].address, "::1");
    CU_ASSERT_EQUAL(c.listeners[0].max_message_size, 4096);

    /* From URLs, as ternd --listen does. */
    tn_conf_listener parsed[2];
    CU_ASSERT_EQUAL(tn_conf_parse_listen_url("mqtt://0.0.0.0:1", &parsed[0], err, sizeof err), 0);
    CU_ASSERT_EQUAL(tn_conf_parse_listen_url("mqtt://[::]:1", &parsed[1], err, sizeof err), 0);
    tn_conf_set_listeners(&c, parsed, 2);
    tn_conf_listener_fini(&parsed[0]);
    tn_conf_listener_fini(&parsed[1]);
    CU_ASSERT_STRING_EQUAL(c.listeners[1].address, "::");
    CU_ASSERT_EQUAL(c.listeners[0].max_message_size, 0); /* --listen: the global limit */
    CU_ASSERT_EQUAL(c.listeners[1].max_message_size, 0);
    CU_ASSERT_EQUAL(tn_conf_listener_max_message(&c, &c.listeners[1]), 104857600);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), 0);

    tn_conf_set_listeners(&c, NULL, 0);
    CU_ASSERT_EQUAL(c.n_listeners, 0);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "listeners: at least one listener is required");
    tn_conf_fini(&c);
}

static void
test_validate(void)
{
    tn_conf c;
    char err[256] = "";
    char bad[] = "localhost", v4[] = "127.0.0.1", v6[] = "0:0::1", v6b[] = "::1";
    tn_conf_init(&c);

    tn_conf_set_listeners(&c, (tn_conf_listener[]){{TN_PROTO_MQTT, bad, 1, 0}}, 1);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "listeners[0].url: 'localhost' is not a numeric IP address");

    tn_conf_set_listeners(
        &c,
        (tn_conf_listener[]){{TN_PROTO_MQTT, v4, 1, 0}, {TN_PROTO_MQTT, v6, 1, 0}, {6, v6b, 1, 0}},
        3);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "listeners[2].url: [::1]:1 is already used by listeners[1]");

    tn_conf_set_listeners(&c, (tn_conf_listener[]){{TN_PROTO_MQTT, v4, 0, 0}, {99, v4, 0, 0}}, 2);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "listeners[1].url: unknown protocol 99");

    tn_conf_set_listeners(&c, (tn_conf_listener[]){{TN_PROTO_MQTT, v4, 0, 0}}, 1);
    c.limits.max_output_buffer = 0;
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "limits.max_output_buffer: must be at least 1");
    c.limits.max_output_buffer = 1;
    CU_ASSERT_EQUAL(tn_conf_validate(&c, NULL, 0), 0);

    c.limits.max_message_size = 0;
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "limits.max_message_size: must be at least 1");
    c.limits.max_message_size = 1;
    c.limits.max_incoming_memory = 65535;
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "limits.max_incoming_memory: must be at least 65536");
    c.limits.max_incoming_memory = 65536;
    CU_ASSERT_EQUAL(tn_conf_validate(&c, NULL, 0), 0);

    free(c.data_dir);
    c.data_dir = tn_xstrdup("");
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "data_dir: must not be empty");
    tn_conf_fini(&c);

    CU_ASSERT_STRING_EQUAL(tn_conf_proto_name(TN_PROTO_MQTT), "mqtt");
    CU_ASSERT_STRING_EQUAL(tn_conf_proto_name(TN_PROTO_STOMPS), "stomps");
    CU_ASSERT_STRING_EQUAL(tn_conf_proto_name(TN_PROTO_WSS), "wss");
    CU_ASSERT_STRING_EQUAL(tn_conf_proto_name(TN_PROTO_WITNESS), "witness");
    CU_ASSERT_FALSE(tn_conf_proto_tls(TN_PROTO_WITNESS));
    CU_ASSERT_FALSE(tn_conf_proto_ws(TN_PROTO_WITNESS));
    CU_ASSERT_STRING_EQUAL(tn_conf_proto_name((tn_proto)42), "unknown");
}

static void
test_load_file(void)
{
    tn_conf c;
    char err[512] = "", want[512];
    tn_conf_init(&c);

    CU_ASSERT_EQUAL(tn_conf_load_file(&c, "/nonexistent/tern.conf", err, sizeof err), TN_ENOENT);
    CU_ASSERT_STRING_EQUAL(err, "/nonexistent/tern.conf: No such file or directory");

    char *good = temp_file("log_level: debug\nlisteners:\n  - url: amqp://127.0.0.1:5672\n");
    CU_ASSERT_EQUAL(tn_conf_load_file(&c, good, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(c.log_level, "debug");
    CU_ASSERT_EQUAL(c.listeners[0].proto, TN_PROTO_AMQP);

    char *bad = temp_file("log_level: info\nlimits:\n  max_inflight: lots\n");
    CU_ASSERT_EQUAL(tn_conf_load_file(&c, bad, err, sizeof err), TN_EINVAL);
    snprintf(want, sizeof want,
             "%s:3:17: limits.max_inflight: 'lots' is not a whole number from 0 to 4294967295",
             bad);
    CU_ASSERT_STRING_EQUAL(err, want);
    CU_ASSERT_STRING_EQUAL(c.log_level, "debug"); /* unchanged */

    CU_ASSERT_EQUAL(tn_conf_load_file(&c, "/", err, sizeof err), TN_EIO);
    CU_ASSERT_STRING_EQUAL(err, "/: Is a directory");

    /* Too large: 1 MiB of comment plus one byte. */
    size_t big_len = 1024 * 1024 + 1;
    char *big_text = tn_xmalloc(big_len + 1);
    memset(big_text, ' ', big_len);
    big_text[0] = '#';
    big_text[big_len] = '\0';
    char *big = temp_file(big_text);
    CU_ASSERT_EQUAL(tn_conf_load_file(&c, big, err, sizeof err), TN_EINVAL);
    snprintf(want, sizeof want, "%s: larger than 1048576 bytes", big);
    CU_ASSERT_STRING_EQUAL(err, want);
    big_text[big_len - 1] = '\0'; /* exactly 1 MiB loads */
    unlink(big);
    free(big);
    big = temp_file(big_text);
    CU_ASSERT_EQUAL(tn_conf_load_file(&c, big, err, sizeof err), 0);

    char *empty = temp_file("");
    CU_ASSERT_EQUAL(tn_conf_load_file(&c, empty, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(c.log_level, "debug");

    unlink(good);
    unlink(bad);
    unlink(big);
    unlink(empty);
    free(good);
    free(bad);
    free(big);
    free(empty);
    free(big_text);
    tn_conf_fini(&c);
}

/* The shipped example: loads, and sets every field to its default (loaded over a tn_conf in
 * which every field differs from the default). */
static void
test_example(void)
{
    tn_conf c;
    char err[512] = "";
    tn_conf_init(&c);
    char other[] = "10.0.0.1";
    tn_conf_set_listeners(&c, (tn_conf_listener[]){{TN_PROTO_WS, other, 1, 12345}}, 1);
    free(c.data_dir);
    free(c.log_level);
    c.data_dir = tn_xstrdup("/elsewhere");
    c.log_level = tn_xstrdup("debug");
    c.limits = (tn_conf_limits){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    free(c.store.sync);
    c.store.sync = tn_xstrdup("never");
    c.store.sync_interval_ms = 7;
    c.store.compact_bytes = 9999;
    tn_conf_pair_set(&c.pair.role, "witness");
    c.pair.alone_timeout = 100;
    c.pair.async = true;
    int rv = tn_conf_load_file(&c, example_path, err, sizeof err);
    if (rv != 0)
        fprintf(stderr, "\n%s\n", err);
    CU_ASSERT_EQUAL_FATAL(rv, 0);
    CU_ASSERT_TRUE(is_default(&c));
    tn_conf_fini(&c);
}

static void
test_store_section(void)
{
    tn_conf c;
    char err[512] = "";
    tn_conf_init(&c);
    CU_ASSERT_STRING_EQUAL(c.store.sync, "always");
    CU_ASSERT_EQUAL(c.store.sync_interval_ms, 100);
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "t.conf",
                                        "store:\n  sync: interval\n"
                                        "  sync_interval_ms: 250\n",
                                        err, sizeof err),
                    0);
    CU_ASSERT_STRING_EQUAL(c.store.sync, "interval");
    CU_ASSERT_EQUAL(c.store.sync_interval_ms, 250);
    tn_conf_fini(&c);
    expect_error("store:\n  sync: sometimes\n",
                 "t.conf:2:9: store.sync: 'sometimes' is not one of always, interval, never");
    expect_error("store:\n  sync_interval_ms: 0\n",
                 "t.conf:2:21: store.sync_interval_ms: must be at least 1");
    expect_error("store:\n  fsync: always\n", "t.conf:2:3: store: unknown key 'fsync'");
    expect_error("store:\n  compact_bytes: 100\n",
                 "t.conf:2:18: store.compact_bytes: must be at least 4096");
}

/* tn_conf_parse_host_port: s must parse to host and port. */
static void
expect_host_port(const char *s, const char *host, unsigned port)
{
    char h[INET6_ADDRSTRLEN] = "";
    uint16_t p = 0;
    CU_ASSERT_EQUAL(tn_conf_parse_host_port(s, h, sizeof h, &p), 0);
    CU_ASSERT_STRING_EQUAL(h, host);
    CU_ASSERT_EQUAL(p, port);
}

static void
expect_host_port_error(const char *s)
{
    char h[INET6_ADDRSTRLEN] = "untouched";
    uint16_t p = 7;
    CU_ASSERT_EQUAL(tn_conf_parse_host_port(s, h, sizeof h, &p), TN_EINVAL);
    if (strcmp(h, "untouched") != 0 || p != 7)
        fprintf(stderr, "\n  host_port: %s changed its outputs\n", s);
    CU_ASSERT_STRING_EQUAL(h, "untouched");
    CU_ASSERT_EQUAL(p, 7);
}

static void
test_host_port(void)
{
    expect_host_port("10.0.0.1:7001", "10.0.0.1", 7001);
    expect_host_port("0.0.0.0:1", "0.0.0.0", 1);
    expect_host_port("[::1]:65535", "::1", 65535);
    expect_host_port("[2001:DB8:0:0::1]:7000", "2001:db8::1", 7000); /* canonical */
    expect_host_port("[::ffff:10.0.0.1]:7000", "::ffff:10.0.0.1", 7000);
    expect_host_port("10.0.0.1:0007001", "10.0.0.1", 7001);

    expect_host_port_error("");
    expect_host_port_error("10.0.0.1");
    expect_host_port_error("10.0.0.1:");
    expect_host_port_error(":7001");
    expect_host_port_error("10.0.0.1:0"); /* dialled: a port must be known */
    expect_host_port_error("10.0.0.1:65536");
    expect_host_port_error("10.0.0.1:99999999999");
    expect_host_port_error("10.0.0.1:-1");
    expect_host_port_error("10.0.0.1:+1");
    expect_host_port_error("10.0.0.1:1 ");
    expect_host_port_error(" 10.0.0.1:1");
    expect_host_port_error("10.0.0.1:0x10");
    expect_host_port_error("localhost:7001"); /* names are not resolved */
    expect_host_port_error("10.0.0:7001");
    expect_host_port_error("::1:7001"); /* IPv6 without brackets */
    expect_host_port_error("[::1]");
    expect_host_port_error("[::1]:");
    expect_host_port_error("[::1:7001");
    expect_host_port_error("[]:7001");
    expect_host_port_error("[10.0.0.1]:7001");
    expect_host_port_error("[::1]x:7001");
    expect_host_port_error("[fe80::1%eth0]:7001");
    expect_host_port_error("pair://10.0.0.1:7001");
    expect_host_port_error("10.0.0.1:7001/x");

    /* host too small for the canonical address: refused, not truncated */
    char small[9] = "untouched";
    uint16_t p = 7;
    CU_ASSERT_EQUAL(tn_conf_parse_host_port("10.0.0.1:1", small, sizeof small, &p), 0);
    CU_ASSERT_EQUAL(tn_conf_parse_host_port("10.0.0.10:1", small, sizeof small, &p), TN_EINVAL);
    CU_ASSERT_EQUAL(tn_conf_parse_host_port("10.0.0.1:1", small, 0, &p), TN_EINVAL);
}

/* The pair section: defaults, a node, a witness, overrides, and copies. */
static void
test_pair_section(void)
{
    tn_conf c;
    char err[512] = "";
    tn_conf_init(&c);
    CU_ASSERT_STRING_EQUAL(c.pair.role, "node");
    CU_ASSERT_PTR_NULL(c.pair.listen);
    CU_ASSERT_PTR_NULL(c.pair.peer);
    CU_ASSERT_PTR_NULL(c.pair.witness);
    CU_ASSERT_PTR_NULL(c.pair.zookeeper);
    CU_ASSERT_EQUAL(c.pair.alone_timeout, 2000);
    CU_ASSERT_FALSE(c.pair.async);

    /* Node A of the README's pair. */
    CU_ASSERT_EQUAL_FATAL(tn_conf_load_string(&c, "t.conf",
                                              "listeners:\n"
                                              "  - url: mqtt://0.0.0.0:1883\n"
                                              "pair:\n"
                                              "  role: node\n"
                                              "  listen: 10.0.0.1:7001\n"
                                              "  peer: 10.0.0.2:7001\n"
                                              "  witness: 10.0.0.3:7000\n"
                                              "  alone_timeout: 600000\n"
                                              "  async: true\n",
                                              err, sizeof err),
                          0);
    CU_ASSERT_STRING_EQUAL(err, "");
    CU_ASSERT_STRING_EQUAL(c.pair.role, "node");
    CU_ASSERT_STRING_EQUAL(c.pair.listen, "10.0.0.1:7001");
    CU_ASSERT_STRING_EQUAL(c.pair.peer, "10.0.0.2:7001");
    CU_ASSERT_STRING_EQUAL(c.pair.witness, "10.0.0.3:7000");
    CU_ASSERT_PTR_NULL(c.pair.zookeeper);
    CU_ASSERT_EQUAL(c.pair.alone_timeout, 600000);
    CU_ASSERT_TRUE(c.pair.async);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), 0);

    /* A second file changes only what it names (the loader copies the pair, then applies). */
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "u.conf", "pair: {async: FALSE, alone_timeout: 100}\n",
                                        err, sizeof err),
                    0);
    CU_ASSERT_FALSE(c.pair.async);
    CU_ASSERT_EQUAL(c.pair.alone_timeout, 100);
    CU_ASSERT_STRING_EQUAL(c.pair.peer, "10.0.0.2:7001");
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "v.conf", "pair:\n  async: True\n", err, sizeof err),
                    0);
    CU_ASSERT_TRUE(c.pair.async);
    /* A failed load leaves the pair as it was. */
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "w.conf", "pair:\n  peer: 10.0.0.9:7001\n  async: 1\n",
                                        err, sizeof err),
                    TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(c.pair.peer, "10.0.0.2:7001");
    CU_ASSERT_TRUE(c.pair.async);

    /* Flags over the file, as ternd does: --pair-zookeeper in place of the file's witness. */
    tn_conf_pair_set(&c.pair.zookeeper, "zk1:2181,zk2:2181/tern");
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "pair.zookeeper: a pair has one coordinator: pair.witness or "
                                "pair.zookeeper, not both");
    tn_conf_pair_set(&c.pair.witness, NULL);
    CU_ASSERT_PTR_NULL(c.pair.witness);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), 0);
    tn_conf_pair_set(&c.pair.zookeeper, "zk1:2181,zk2:2181/tern"); /* replaces: no leak */
    tn_conf_fini(&c);
    CU_ASSERT_PTR_NULL(c.pair.role);
    CU_ASSERT_PTR_NULL(c.pair.zookeeper);
    tn_conf_fini(&c); /* twice is harmless */

    /* IPv6 (quoted: a plain YAML value starting with '[' is a list) and ZooKeeper. */
    tn_conf_init(&c);
    CU_ASSERT_EQUAL_FATAL(
        tn_conf_load_string(
            &c, "t.conf",
            "listeners: [{url: \"mqtt://[::]:1883\"}]\n"
            "pair:\n"
            "  listen: \"[2001:db8::1]:7001\"\n"
            "  peer: '[2001:db8::2]:7001'\n"
            "  zookeeper: zk-1.example.com:2181,10.0.0.9:2181,[::1]:2181/tern/prod\n"
            "  async: false\n",
            err, sizeof err),
        0);
    CU_ASSERT_STRING_EQUAL(c.pair.listen, "[2001:db8::1]:7001"); /* as written */
    CU_ASSERT_STRING_EQUAL(c.pair.zookeeper,
                           "zk-1.example.com:2181,10.0.0.9:2181,[::1]:2181/tern/prod");
    CU_ASSERT_PTR_NULL(c.pair.witness);
    CU_ASSERT_FALSE(c.pair.async);
    char host[INET6_ADDRSTRLEN];
    uint16_t port = 0;
    CU_ASSERT_EQUAL(tn_conf_parse_host_port(c.pair.peer, host, sizeof host, &port), 0);
    CU_ASSERT_STRING_EQUAL(host, "2001:db8::2");
    CU_ASSERT_EQUAL(port, 7001);
    tn_conf_fini(&c);

    /* The witness: its one listener is witness://; the node's keys are not needed, and ignored
     * when there. */
    tn_conf_init(&c);
    CU_ASSERT_EQUAL_FATAL(tn_conf_load_string(&c, "t.conf",
                                              "listeners: [{url: \"witness://10.0.0.3:7000\"}]\n"
                                              "pair: {role: witness}\n",
                                              err, sizeof err),
                          0);
    CU_ASSERT_STRING_EQUAL(c.pair.role, "witness");
    CU_ASSERT_EQUAL_FATAL(c.n_listeners, 1);
    CU_ASSERT_EQUAL(c.listeners[0].proto, TN_PROTO_WITNESS);
    CU_ASSERT_STRING_EQUAL(c.listeners[0].address, "10.0.0.3");
    CU_ASSERT_EQUAL(c.listeners[0].port, 7000);
    CU_ASSERT_EQUAL(
        tn_conf_load_string(&c, "t.conf", "pair: {peer: 10.0.0.2:7001}\n", err, sizeof err), 0);
    tn_conf_fini(&c);

    /* --role witness --listen witness://... without a file. */
    tn_conf_init(&c);
    tn_conf_listener l;
    CU_ASSERT_EQUAL(tn_conf_parse_listen_url("witness://[::]:7000", &l, err, sizeof err), 0);
    tn_conf_set_listeners(&c, &l, 1);
    tn_conf_listener_fini(&l);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "listeners[0].url: a witness:// listener is for a witness "
                                "(pair.role witness, --role witness)");
    tn_conf_pair_set(&c.pair.role, "witness");
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), 0);
    tn_conf_pair_set(&c.pair.role, NULL);
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "pair.role: '(null)' is not node or witness");
    tn_conf_fini(&c);

    /* --pair-listen alone */
    tn_conf_init(&c);
    tn_conf_pair_set(&c.pair.listen, "10.0.0.1:7001");
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "pair: missing key 'peer' (--pair-peer): a pair's node needs "
                                "listen, peer, and witness or zookeeper");
    c.pair.alone_timeout = 99;
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "pair.alone_timeout: must be at least 100");
    tn_conf_fini(&c);

    /* The lease and its renewals. */
    tn_conf_init(&c);
    CU_ASSERT_EQUAL(c.pair.lease, 1000);
    CU_ASSERT_EQUAL(c.pair.renew, 250);
    c.pair.lease = 299;
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "pair.lease: 299 is not within 300..60000 (milliseconds)");
    c.pair.lease = 800;
    c.pair.renew = 650;
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), TN_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "pair.renew: 650: renewals must come at least every 50 ms and "
                                "more than 150 ms before the lease (800 ms) ends");
    c.pair.renew = 200;
    CU_ASSERT_EQUAL(tn_conf_validate(&c, err, sizeof err), 0);
    tn_conf_fini(&c);
    tn_conf_init(&c);
    CU_ASSERT_EQUAL(
        tn_conf_load_string(&c, "l.conf", "pair: {lease: 2000, renew: 500}\n", err, sizeof err), 0);
    CU_ASSERT_EQUAL(c.pair.lease, 2000);
    CU_ASSERT_EQUAL(c.pair.renew, 500);
    CU_ASSERT_FALSE(c.pair.rejoin_manual); /* auto, the default */
    tn_conf_fini(&c);
    /* rejoin: auto or manual */
    tn_conf_init(&c);
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "r.conf", "pair: {rejoin: manual}\n", err, sizeof err),
                    0);
    CU_ASSERT_TRUE(c.pair.rejoin_manual);
    tn_conf_fini(&c);
    tn_conf_init(&c);
    CU_ASSERT_NOT_EQUAL(
        tn_conf_load_string(&c, "r.conf", "pair: {rejoin: never}\n", err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "pair.rejoin"));
    tn_conf_fini(&c);
}

static void
test_pair_errors(void)
{
    /* Keys and types */
    expect_error("pair:\n  peers: 10.0.0.2:7001\n", "t.conf:2:3: pair: unknown key 'peers'");
    expect_error("pair: 5\n", "t.conf:1:7: pair: expected a mapping, found a single value");
    expect_error("pair:\n  role: \"\"\n", "t.conf:2:9: pair.role: must not be empty");
    expect_error("pair:\n  listen:\n", "t.conf:2:10: pair.listen: must not be empty");
    /* Unquoted, "[::1]:7001" starts a YAML list: the file must quote it (tern.conf says so). */
    expect_error("pair:\n  listen: [::1]:7001\n",
                 "t.conf:2:12: did not find expected node content (while parsing a flow node at "
                 "line 2)");
    expect_error("pair:\n  listen: [\"::1\"]\n",
                 "t.conf:2:11: pair.listen: expected a single value, found a list");
    expect_error("pair:\n  role: node\n  role: witness\n",
                 "t.conf:3:3: pair: duplicate key 'role'");

    /* role */
    expect_error("pair:\n  role: standby\n",
                 "t.conf:2:9: pair.role: 'standby' is not node or witness");
    expect_error("pair:\n  role: Witness\n",
                 "t.conf:2:9: pair.role: 'Witness' is not node or witness");

    /* alone_timeout */
    expect_error("pair:\n  alone_timeout: 99\n",
                 "t.conf:2:18: pair.alone_timeout: must be at least 100");
    expect_error("pair:\n  alone_timeout: 600001\n",
                 "t.conf:2:18: pair.alone_timeout: 600001 is more than 600000 (ten minutes, in "
                 "milliseconds)");
    expect_error("pair:\n  alone_timeout: 2s\n",
                 "t.conf:2:18: pair.alone_timeout: '2s' is not a whole number from 0 to "
                 "4294967295");
    expect_error("pair:\n  alone_timeout: 4294967296\n",
                 "t.conf:2:18: pair.alone_timeout: '4294967296' is not a whole number from 0 to "
                 "4294967295");

    /* async */
    expect_error("pair:\n  async: yes\n", "t.conf:2:10: pair.async: 'yes' is not true or false");
    expect_error("pair:\n  async: 1\n", "t.conf:2:10: pair.async: '1' is not true or false");
    expect_error("pair:\n  async:\n", "t.conf:2:9: pair.async: '' is not true or false");
    expect_error("pair:\n  async: tRUE\n", "t.conf:2:10: pair.async: 'tRUE' is not true or false");

    /* ADDR:PORT values, checked even when incomplete */
    expect_error("pair:\n  listen: 10.0.0.1\n",
                 "t.conf:2:11: pair.listen: '10.0.0.1': missing port (ADDR:PORT, e.g. "
                 "10.0.0.1:7001)");
    expect_error("pair:\n  peer: node-b:7001\n",
                 "t.conf:2:9: pair.peer: 'node-b:7001': 'node-b' is not a numeric IPv4 address "
                 "(host names are not resolved; IPv6 goes in brackets)");
    expect_error("pair:\n  witness: fe80::3:7000\n",
                 "t.conf:2:12: pair.witness: 'fe80::3:7000': an IPv6 address must be in "
                 "brackets, e.g. [::1]:7001");
    expect_error("pair:\n  witness: \"[fe80::zz]:7000\"\n",
                 "t.conf:2:12: pair.witness: '[fe80::zz]:7000': 'fe80::zz' is not a valid IPv6 "
                 "address");
    expect_error("pair:\n  witness: \"[::1:7000\"\n",
                 "t.conf:2:12: pair.witness: '[::1:7000': missing ']' after the IPv6 address");
    expect_error("pair:\n  listen: \"[::1]7001\"\n",
                 "t.conf:2:11: pair.listen: '[::1]7001': unexpected '7001' after the address");
    expect_error("pair:\n  listen: :7001\n",
                 "t.conf:2:11: pair.listen: ':7001': missing address (ADDR:PORT, e.g. "
                 "10.0.0.1:7001)");
    expect_error("pair:\n  listen: 10.0.0.1:0\n",
                 "t.conf:2:11: pair.listen: '10.0.0.1:0': port '0' is not a number from 1 to "
                 "65535");
    expect_error("pair:\n  listen: 10.0.0.1:65536\n",
                 "t.conf:2:11: pair.listen: '10.0.0.1:65536': port '65536' is not a number from 1 "
                 "to 65535");

    /* zookeeper */
    expect_error("pair:\n  zookeeper: zk1:2181\n",
                 "t.conf:2:14: pair.zookeeper: 'zk1:2181': missing /PATH after the servers, e.g. "
                 "zk1:2181,zk2:2181/tern");
    expect_error("pair:\n  zookeeper: zk1:2181/\n",
                 "t.conf:2:14: pair.zookeeper: 'zk1:2181/': missing /PATH after the servers, e.g. "
                 "zk1:2181,zk2:2181/tern");
    expect_error("pair:\n  zookeeper: zk1:2181/tern/\n",
                 "t.conf:2:14: pair.zookeeper: 'zk1:2181/tern/': '/tern/' is not a ZooKeeper path "
                 "(no empty parts, no trailing /)");
    expect_error("pair:\n  zookeeper: zk1:2181//tern\n",
                 "t.conf:2:14: pair.zookeeper: 'zk1:2181//tern': '//tern' is not a ZooKeeper path "
                 "(no empty parts, no trailing /)");
    expect_error("pair:\n  zookeeper: zk1/tern\n",
                 "t.conf:2:14: pair.zookeeper: 'zk1/tern': server 'zk1' is not HOST:PORT (a name, "
                 "a numeric IPv4 address or an [IPv6] address, and a port 1..65535)");
    expect_error("pair:\n  zookeeper: zk1:2181,,zk2:2181/tern\n",
                 "t.conf:2:14: pair.zookeeper: 'zk1:2181,,zk2:2181/tern': server '' is not "
                 "HOST:PORT (a name, a numeric IPv4 address or an [IPv6] address, and a port "
                 "1..65535)");
    expect_error("pair:\n  zookeeper: zk_1:2181/tern\n",
                 "t.conf:2:14: pair.zookeeper: 'zk_1:2181/tern': server 'zk_1:2181' is not "
                 "HOST:PORT (a name, a numeric IPv4 address or an [IPv6] address, and a port "
                 "1..65535)");
    expect_error("pair:\n  zookeeper: zk1:0/tern\n",
                 "t.conf:2:14: pair.zookeeper: 'zk1:0/tern': server 'zk1:0' is not HOST:PORT (a "
                 "name, a numeric IPv4 address or an [IPv6] address, and a port 1..65535)");
    expect_error("pair:\n  zookeeper: \"[::1]/tern\"\n",
                 "t.conf:2:14: pair.zookeeper: '[::1]/tern': server '[::1]' is not HOST:PORT (a "
                 "name, a numeric IPv4 address or an [IPv6] address, and a port 1..65535)");
    expect_error("pair:\n  zookeeper: \"[::zz]:2181/tern\"\n",
                 "t.conf:2:14: pair.zookeeper: '[::zz]:2181/tern': server '[::zz]:2181' is not "
                 "HOST:PORT (a name, a numeric IPv4 address or an [IPv6] address, and a port "
                 "1..65535)");
    expect_error("pair:\n  zookeeper: /tern\n",
                 "t.conf:2:14: pair.zookeeper: '/tern': server '' is not HOST:PORT (a name, a "
                 "numeric IPv4 address or an [IPv6] address, and a port 1..65535)");

    /* A node's keys go together. */
    expect_error("pair:\n  listen: 10.0.0.1:7001\n  witness: 10.0.0.3:7000\n",
                 "t.conf:2:3: pair: missing key 'peer' (--pair-peer): a pair's node needs listen, "
                 "peer, and witness or zookeeper");
    expect_error("pair:\n  peer: 10.0.0.2:7001\n",
                 "t.conf:2:3: pair: missing key 'listen' (--pair-listen): a pair's node needs "
                 "listen, peer, and witness or zookeeper");
    expect_error("pair:\n  witness: 10.0.0.3:7000\n",
                 "t.conf:2:3: pair: missing key 'listen' (--pair-listen): a pair's node needs "
                 "listen, peer, and witness or zookeeper");
    expect_error("pair: {listen: 10.0.0.1:7001, peer: 10.0.0.2:7001}\n",
                 "t.conf:1:7: pair: missing key 'witness' or 'zookeeper' (--pair-witness, "
                 "--pair-zookeeper): a pair's node needs one to elect the active");
    expect_error("pair:\n  listen: 10.0.0.1:7001\n  peer: 10.0.0.2:7001\n"
                 "  witness: 10.0.0.3:7000\n  zookeeper: zk1:2181/tern\n",
                 "t.conf:5:14: pair.zookeeper: a pair has one coordinator: pair.witness or "
                 "pair.zookeeper, not both");
    expect_error("pair:\n  listen: \"[::1]:7001\"\n  peer: \"[0::0001]:7001\"\n"
                 "  witness: 10.0.0.3:7000\n",
                 "t.conf:3:9: pair.peer: '[0::0001]:7001' is this node's own pair.listen: the "
                 "peer is the other node");

    /* Listeners and roles */
    expect_error("listeners:\n  - url: mqtt://127.0.0.1:1883\n"
                 "  - url: witness://127.0.0.1:7000\n",
                 "t.conf:3:10: listeners[1].url: a witness:// listener is for a witness "
                 "(pair.role witness, --role witness)");
    expect_error("pair: {role: witness}\n",
                 "t.conf: listeners: a witness (pair.role witness) has exactly one listener, "
                 "witness://ADDR:PORT, not 3");
    expect_error("listeners:\n  - url: witness://127.0.0.1:7000\n  - url: witness://[::1]:7000\n"
                 "pair: {role: witness}\n",
                 "t.conf:2:3: listeners: a witness (pair.role witness) has exactly one "
                 "listener, witness://ADDR:PORT, not 2");
    expect_error("listeners:\n  - url: mqtt://127.0.0.1:1883\npair: {role: witness}\n",
                 "t.conf:2:10: listeners[0].url: a witness (pair.role witness) listens on "
                 "witness://ADDR:PORT, not mqtt://");
    expect_error("listeners:\n  - url: witness://127.0.0.1:7000\n"
                 "pair: {role: witness, listen: 10.0.0.1}\n",
                 "t.conf:3:31: pair.listen: '10.0.0.1': missing port (ADDR:PORT, e.g. "
                 "10.0.0.1:7001)");
    expect_error("listeners:\n  - url: witness://localhost:7000\npair: {role: witness}\n",
                 "t.conf:2:10: listeners[0].url: 'witness://localhost:7000': 'localhost' is not a "
                 "numeric IPv4 address (host names are not resolved; IPv6 goes in brackets)");
}

/* The auth section, and Tern's rule for anonymous clients. */
static void
test_auth_section(void)
{
    tn_conf c;
    char err[512];
    bool anon = false;
    tn_conf_init(&c);
    CU_ASSERT_EQUAL(c.auth.allow_anonymous, -1);
    CU_ASSERT_EQUAL(c.auth.fail_delay, 1000);
    CU_ASSERT_EQUAL(tn_conf_anonymous(&c, &anon, err, sizeof err), 0);
    CU_ASSERT_TRUE(anon); /* the default listeners are on loopback */
    tn_conf_fini(&c);
    tn_conf_init(&c);
    CU_ASSERT_EQUAL(
        tn_conf_load_string(&c, "a.conf",
                            "listeners: [{url: \"mqtt://0.0.0.0:1883\"}]\n"
                            "auth: {password_file: /etc/p, acl_file: /etc/a, fail_delay: 250,\n"
                            "       use_identity_as_username: true}\n",
                            err, sizeof err),
        0);
    CU_ASSERT_STRING_EQUAL(c.auth.password_file, "/etc/p");
    CU_ASSERT_STRING_EQUAL(c.auth.acl_file, "/etc/a");
    CU_ASSERT_EQUAL(c.auth.fail_delay, 250);
    CU_ASSERT_TRUE(c.auth.use_identity_as_username);
    CU_ASSERT_EQUAL(tn_conf_anonymous(&c, &anon, err, sizeof err), 0);
    CU_ASSERT_FALSE(anon); /* a password file: anonymous refused */
    free(c.auth.password_file);
    c.auth.password_file = NULL;
    CU_ASSERT_EQUAL(tn_conf_anonymous(&c, &anon, err, sizeof err), TN_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "mqtt://0.0.0.0:1883"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--allow-anonymous true"));
    c.auth.allow_anonymous = 1;
    CU_ASSERT_EQUAL(tn_conf_anonymous(&c, &anon, err, sizeof err), 0);
    CU_ASSERT_TRUE(anon);
    tn_conf_fini(&c);
    /* IPv6 loopback and 127.x count as loopback. */
    tn_conf_init(&c);
    CU_ASSERT_EQUAL(tn_conf_load_string(&c, "b.conf",
                                        "listeners: [{url: \"mqtt://[::1]:1883\"},\n"
                                        "            {url: \"stomp://127.0.0.2:61613\"}]\n",
                                        err, sizeof err),
                    0);
    CU_ASSERT_EQUAL(tn_conf_anonymous(&c, &anon, err, sizeof err), 0);
    CU_ASSERT_TRUE(anon);
    tn_conf_fini(&c);
    /* Bad values */
    tn_conf_init(&c);
    CU_ASSERT_NOT_EQUAL(
        tn_conf_load_string(&c, "c.conf", "auth: {allow_anonymous: maybe}\n", err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "auth.allow_anonymous"));
    tn_conf_fini(&c);
    tn_conf_init(&c);
    CU_ASSERT_NOT_EQUAL(
        tn_conf_load_string(&c, "c.conf", "auth: {fail_delay: 99999}\n", err, sizeof err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "auth.fail_delay"));
    tn_conf_fini(&c);
}

int
main(int argc, char **argv)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("conf", NULL, NULL);
    if (argc > 1) {
        example_path = argv[1];
        CU_add_test(s, "example", test_example);
    } else {
        CU_add_test(s, "defaults", test_defaults);
        CU_add_test(s, "store_section", test_store_section);
        CU_add_test(s, "full_file", test_full_file);
        CU_add_test(s, "partial_file", test_partial_file);
        CU_add_test(s, "yaml_forms", test_yaml_forms);
        CU_add_test(s, "syntax_errors", test_syntax_errors);
        CU_add_test(s, "unknown_keys", test_unknown_keys);
        CU_add_test(s, "wrong_types", test_wrong_types);
        CU_add_test(s, "bad_listeners", test_bad_listeners);
        CU_add_test(s, "bad_values", test_bad_values);
        CU_add_test(s, "message_size", test_message_size);
        CU_add_test(s, "url_parser", test_url_parser);
        CU_add_test(s, "set_listeners", test_set_listeners);
        CU_add_test(s, "validate", test_validate);
        CU_add_test(s, "load_file", test_load_file);
        CU_add_test(s, "host_port", test_host_port);
        CU_add_test(s, "pair_section", test_pair_section);
        CU_add_test(s, "pair_errors", test_pair_errors);
        CU_add_test(s, "auth_section", test_auth_section);
    }
    return tn_test_run();
}
