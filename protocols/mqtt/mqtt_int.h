/* Private to protocols/mqtt: the per-connection state shared by the adapter's files. */
#ifndef TN_MQTT_INT_H
#define TN_MQTT_INT_H

#include "protocols/mqtt/codec.h"
#include "protocols/mqtt/mqtt.h"

enum { ST_CONNECT, ST_CONNECTED, ST_CLOSING };

/* Larger PUBLISHes are encoded per delivery: copying dominates them anyway. */
#define FRAME_CACHE_MAX 65536

/* A PUBLISH with at least this much payload that has not all arrived is received straight into
 * its message (held once, from the broker's incoming budget), not gathered in the input; unless
 * tn_mqtt_conf.large_min says otherwise. */
#define LARGE_PUBLISH 65536

/* Why socket reads are paused (mconn.pauses). */
enum {
    PAUSE_DEFERRED = 1, /* deferred is full */
    PAUSE_FLOW = 2,     /* a large PUBLISH waits for flow control */
    PAUSE_INTAKE = 4,   /* a large PUBLISH waits for the incoming budget */
    PAUSE_HELD = 8,     /* a standby about to take over holds the CONNECT (tn_broker_hold) */
    PAUSE_AUTH = 16,    /* the CONNECT waits for the authenticator's answer */
};

/* tn_delivery.state for outgoing QoS 2: PUBREC received, PUBREL sent, PUBCOMP awaited. */
#define DELIVERY_PUBREL 1

/* The last PUBLISH encoded for delivery: a message fanned out to many subscribers at the same
 * QoS is encoded once and copied, with its packet id and DUP flag patched per subscriber. */
typedef struct frame_cache {
    const tn_message *msg;
    uint64_t id; /* with msg: a freed message's address may come back, its id never does */
    uint8_t qos;
    uint8_t version;
    bool retain;
    size_t pid_off; /* where the packet id sits in buf */
    tn_buf buf;
} frame_cache;

struct tn_mqtt {
    tn_broker *broker;
    tn_mqtt_conf conf;
    uint64_t next_anon_id;
    tn_buf scratch; /* name conversions of input; loop thread only */
    tn_buf topic;   /* name conversion for deliveries (which may run while scratch is in use) */
    frame_cache frame;
    uint32_t n_conns; /* open connections (tn_mqtt_connections) */
};

typedef struct mconn mconn;

/* A large PUBLISH arriving straight into its message, and what it holds of the broker's
 * incoming budget. Apart from mconn because few connections ever send one: idle devices must
 * not pay for it. */
typedef struct big_in {
    mconn *c;
    tn_message *msg; /* NULL: none */
    uint8_t *dst;    /* its payload */
    size_t got, need;
    uint16_t pid;
    uint8_t qos;
    tn_intake intake;
} big_in;

struct mconn {
    tn_mqtt *m;
    const tn_io *io;
    void *ioc;
    tn_mqtt_decoder dec;
    tn_session *s;
    tn_message *will;
    tn_flow flow;
    /* Packets read while the flow is blocked, in order, waiting to be handled (see mqtt.c). */
    tn_buf deferred;
    uint8_t pauses; /* PAUSE_*: socket reads are paused while any is set */
    big_in *big;    /* NULL until the first large PUBLISH; then kept until closed */
    uint32_t keepalive_ms;
    uint8_t version;
    uint8_t state;
    bool disconnected;     /* DISCONNECT received: no will [MQTT-3.14.4-3] */
    bool hold;             /* deliveries wait for a SUBACK still waiting for the journal */
    bool admitted;         /* past tn_broker_hold (the CONNECT may be handled) */
    tn_hold *held;         /* tn_broker_hold, until woken */
    tn_auth_job *auth_job; /* the authenticator's answer to come (auth_ready: it came) */
    bool auth_ready;
    char *user;         /* who the client is, for permissions (NULL: anonymous) */
    bool acl_logged;    /* a denied PUBLISH was logged */
    tn_replies replies; /* responses waiting for the journal, oldest first */
};

/* Each returns 0, or a negative TN_E* after logging: the connection is then closed. */
int tn_mqtt__connect(mconn *c, const tn_mqtt_connect *p);
/* The authenticator's answer for c's CONNECT is ready (tn_auth done()). */
void tn_mqtt__auth_done(void *arg);
int tn_mqtt__publish(mconn *c, const tn_mqtt_publish *p);
/* Publishes msg (borrowed), received whole, and confirms it per qos. */
int tn_mqtt__publish_message(mconn *c, tn_message *msg, uint8_t qos, uint16_t pid);
int tn_mqtt__ack(mconn *c, tn_mqtt_type type, uint16_t pid);
int tn_mqtt__subscribe(mconn *c, const tn_mqtt_list *l);
int tn_mqtt__unsubscribe(mconn *c, const tn_mqtt_list *l);
int tn_mqtt__deliver(void *ctx, tn_delivery *d);
void tn_mqtt__kick(void *ctx);

/* Sends a response that confirms something (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK): at once
 * when the journal holds everything appended so far, else once it does, in order with earlier
 * responses. release_hold: resume deliveries held for a SUBACK once it is sent. */
int tn_mqtt__respond(mconn *c, const uint8_t *p, size_t n, bool release_hold);
int tn_mqtt__respond_ack(mconn *c, tn_mqtt_type type, uint16_t pid);
/* Connection going away: waiting responses are dropped. */
void tn_mqtt__tickets_cancel(mconn *c);

/* A topic name or filter past max_topic_levels: logs once, closes (MQTT 3.1.1 has no code for it).
 * Returns TN_EPROTO. */
int tn_mqtt__too_deep(mconn *c, const char *what);
/* A PUBLISH payload of n bytes past max_message: logs, closes (3.1.1 has no code for it either;
 * 5.0 would send DISCONNECT 0x95). Returns TN_ETOOBIG. */
int tn_mqtt__too_big(mconn *c, size_t n);
/* Writes the CONNACK/PUBACK/... output; fails (logged) only when the output buffer is full. */
int tn_mqtt__out_result(mconn *c, int rc);
/* Converts an MQTT name or filter into m->scratch as a NUL-terminated core name. */
const char *tn_mqtt__core_name(tn_mqtt *m, const uint8_t *p, size_t len);

#endif
