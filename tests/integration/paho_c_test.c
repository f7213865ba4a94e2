/*
 * paho_c_test: the broker seen by Eclipse Paho C (MQTTClient API, MQTT 3.1.1).
 *
 * Usage: paho_c_test tcp://127.0.0.1:PORT
 *
 * Two clients: "sub" subscribes to one topic per QoS, "pub" publishes N_MSG messages at QoS 0,
 * 1 and 2, each series followed by an "end" marker on the same topic; sub must receive exactly
 * the N_MSG messages, in order, at that QoS, and then the marker. Then a retained message is
 * set, received by a late subscriber with the retained flag, and cleared. Exit status 0 when
 * every check passed; otherwise 1, with the failed check on stderr. Every wait is bounded.
 *
 * The clients use MQTTClient_setCallbacks: Paho's receive thread files every message into the
 * client's inbox and counts completed publishes, and the main thread waits on the inbox's
 * condition variable. (Waiting with MQTTClient_waitForCompletion after each publish costs a
 * 100 ms poll per message in Paho C 1.3.)
 *
 * Run by test_paho_c.py, which starts the broker.
 *
 * paho_c_test --failover URI URI...: connects with those serverURIs (a pair's standby first,
 * say: it answers CONNACK 3 and Paho moves on to the next), publishes one QoS 1 message and
 * prints the URI it is connected to. Run by test_pair.py.
 */
#include <MQTTClient.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N_MSG 1000
#define WAIT_S 30      /* one series, one acknowledgement, one retained message */
#define INFLIGHT 100   /* publishes in flight per client */
#define INBOX_MAX 2048 /* messages kept per client; more is a failure */
#define TOPIC_PREFIX "paho-c/"

struct received {
    char topic[64];
    char payload[32];
    int len; /* the real payload length, even if longer than payload[] */
    int qos;
    int retained;
};

/* What Paho's thread reports about one client; every field under lock. */
struct inbox {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int n;         /* messages in msgs[] */
    int overflow;  /* messages that did not fit */
    int completed; /* publishes whose QoS flow completed (deliveryComplete) */
    int lost;      /* connectionLost was called */
    struct received msgs[INBOX_MAX];
};

struct client {
    const char *name;
    MQTTClient handle;
    struct inbox inbox;
};

static void
fail(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "paho_c_test: FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Paho callbacks: run on Paho's receive thread. */

static int
on_message(void *ctx, char *topic, int topic_len, MQTTClient_message *m)
{
    struct inbox *in = ctx;

    pthread_mutex_lock(&in->lock);
    if (in->n < INBOX_MAX) {
        struct received *r = &in->msgs[in->n++];
        int copy = m->payloadlen < (int)sizeof(r->payload) - 1 ? m->payloadlen
                                                               : (int)sizeof(r->payload) - 1;

        snprintf(r->topic, sizeof(r->topic), "%.*s", topic_len > 0 ? topic_len : 63, topic);
        memcpy(r->payload, m->payload, (size_t)copy);
        r->payload[copy] = '\0';
        r->len = m->payloadlen;
        r->qos = m->qos;
        r->retained = m->retained;
    } else {
        in->overflow++;
    }
    pthread_cond_broadcast(&in->cond);
    pthread_mutex_unlock(&in->lock);
    MQTTClient_freeMessage(&m);
    MQTTClient_free(topic);
    return 1; /* consumed */
}

static void
on_delivered(void *ctx, MQTTClient_deliveryToken token)
{
    struct inbox *in = ctx;

    pthread_mutex_lock(&in->lock);
    in->completed++;
    pthread_cond_broadcast(&in->cond);
    pthread_mutex_unlock(&in->lock);
}

static void
on_lost(void *ctx, char *cause)
{
    struct inbox *in = ctx;

    pthread_mutex_lock(&in->lock);
    in->lost = 1;
    pthread_cond_broadcast(&in->cond);
    pthread_mutex_unlock(&in->lock);
}

/* Wait until *field >= want, the connection is lost, or WAIT_S pass. Returns 0 if reached. */
static int
inbox_wait(struct inbox *in, const int *field, int want)
{
    struct timespec deadline;
    int rc = 0;
    int ret;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_S;
    pthread_mutex_lock(&in->lock);
    while (*field < want && !in->lost && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&in->cond, &in->lock, &deadline);
    ret = *field >= want ? 0 : -1;
    pthread_mutex_unlock(&in->lock);
    return ret;
}

static void
inbox_clear(struct inbox *in)
{
    pthread_mutex_lock(&in->lock);
    in->n = 0;
    in->overflow = 0;
    pthread_mutex_unlock(&in->lock);
}

/* Create and connect a clean-session client. On failure c->handle may be set: close it. */
static int
client_open(struct client *c, const char *uri, const char *name)
{
    MQTTClient_connectOptions opts = MQTTClient_connectOptions_initializer;
    char id[64];
    int rc;

    c->name = name;
    c->handle = NULL;
    pthread_mutex_init(&c->inbox.lock, NULL);
    pthread_cond_init(&c->inbox.cond, NULL);
    snprintf(id, sizeof(id), "paho-c-%s-%ld", name, (long)getpid());
    rc = MQTTClient_create(&c->handle, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL);
    if (rc != MQTTCLIENT_SUCCESS) {
        fail("%s: MQTTClient_create: %d", name, rc);
        return -1;
    }
    rc = MQTTClient_setCallbacks(c->handle, &c->inbox, on_lost, on_message, on_delivered);
    if (rc != MQTTCLIENT_SUCCESS) {
        fail("%s: MQTTClient_setCallbacks: %d", name, rc);
        return -1;
    }
    opts.keepAliveInterval = 20;
    opts.cleansession = 1;
    opts.reliable = 0; /* more than one publish in flight */
    opts.maxInflightMessages = INFLIGHT;
    opts.MQTTVersion = MQTTVERSION_3_1_1;
    rc = MQTTClient_connect(c->handle, &opts);
    if (rc != MQTTCLIENT_SUCCESS) {
        fail("%s: connect to %s: %d", name, uri, rc);
        return -1;
    }
    return 0;
}

static void
client_close(struct client *c)
{
    if (c->handle == NULL)
        return;
    if (MQTTClient_isConnected(c->handle))
        MQTTClient_disconnect(c->handle, 1000);
    MQTTClient_destroy(&c->handle);
    pthread_cond_destroy(&c->inbox.cond);
    pthread_mutex_destroy(&c->inbox.lock);
}

/* Publish; when the in-flight window is full, wait for a completion and try again. */
static int
publish(struct client *c, const char *topic, const char *payload, int qos, int retained)
{
    for (int tries = 0; tries < 100; tries++) {
        MQTTClient_deliveryToken token = 0;
        int completed;
        int rc;

        pthread_mutex_lock(&c->inbox.lock);
        completed = c->inbox.completed;
        pthread_mutex_unlock(&c->inbox.lock);
        rc = MQTTClient_publish(c->handle, topic, (int)strlen(payload), payload, qos, retained,
                                &token);
        if (rc == MQTTCLIENT_SUCCESS)
            return 0;
        if (rc != MQTTCLIENT_MAX_MESSAGES_INFLIGHT) {
            fail("%s: publish %s qos %d: %d", c->name, topic, qos, rc);
            return -1;
        }
        if (inbox_wait(&c->inbox, &c->inbox.completed, completed + 1) != 0)
            break;
    }
    fail("%s: publish %s qos %d: window stays full", c->name, topic, qos);
    return -1;
}

/* Wait until all QoS 1/2 publishes so far (`want` in total) have completed. */
static int
publish_wait(struct client *c, int want)
{
    if (inbox_wait(&c->inbox, &c->inbox.completed, want) != 0) {
        fail("%s: %d of %d publishes completed within %d s", c->name, c->inbox.completed, want,
             WAIT_S);
        return -1;
    }
    return 0;
}

static int
subscribe(struct client *c, int count, char **topics, const int *want_qos)
{
    int granted[8];
    int rc;

    memcpy(granted, want_qos, sizeof(int) * (size_t)count);
    rc = MQTTClient_subscribeMany(c->handle, count, topics, granted);
    if (rc != MQTTCLIENT_SUCCESS) {
        fail("%s: subscribe: %d", c->name, rc);
        return -1;
    }
    for (int i = 0; i < count; i++) {
        if (granted[i] != want_qos[i]) {
            fail("%s: subscribe %s: granted %d, want %d", c->name, topics[i], granted[i],
                 want_qos[i]);
            return -1;
        }
    }
    return 0;
}

/* Publish N_MSG numbered messages and an "end" marker at qos; expect exactly them back. */
static int
series(struct client *pub, struct client *sub, const char *topic, int qos, int *acked)
{
    struct inbox *in = &sub->inbox;
    char payload[32];

    inbox_clear(in);
    for (int i = 0; i < N_MSG; i++) {
        snprintf(payload, sizeof(payload), "%d", i);
        if (publish(pub, topic, payload, qos, 0) != 0)
            return -1;
    }
    if (publish(pub, topic, "end", qos, 0) != 0)
        return -1;
    if (qos > 0) {
        *acked += N_MSG + 1;
        if (publish_wait(pub, *acked) != 0)
            return -1;
    }
    if (inbox_wait(in, &in->n, N_MSG + 1) != 0) {
        fail("%s: %d of %d messages within %d s", topic, in->n, N_MSG + 1, WAIT_S);
        return -1;
    }
    /* Paho's thread only appends; entries below n are stable. */
    for (int i = 0; i <= N_MSG; i++) {
        const struct received *r = &in->msgs[i];

        if (i < N_MSG)
            snprintf(payload, sizeof(payload), "%d", i);
        else
            snprintf(payload, sizeof(payload), "end");
        if (strcmp(r->topic, topic) != 0 || r->qos != qos || r->retained ||
            r->len != (int)strlen(payload) || strcmp(r->payload, payload) != 0) {
            fail("%s: message %d: topic %s qos %d retained %d payload '%s', want qos %d "
                 "retained 0 payload '%s'",
                 topic, i, r->topic, r->qos, r->retained, r->payload, qos, payload);
            return -1;
        }
    }
    printf("paho_c_test: %s: %d messages in order at QoS %d\n", topic, N_MSG, qos);
    return 0;
}

/* A retained message reaches a later subscriber with the retained flag; an empty retained
 * message clears it, so the next subscriber only sees a live marker. */
static int
retained(const char *uri, struct client *pub, int *acked)
{
    static struct client late;
    static struct client later;
    char *topic = TOPIC_PREFIX "retained";
    char *both[2] = {TOPIC_PREFIX "retained", TOPIC_PREFIX "end"};
    const int qos1[2] = {1, 1};
    const struct received *r;
    int ret = -1;

    if (publish(pub, topic, "kept", 1, 1) != 0 || publish_wait(pub, ++*acked) != 0)
        goto out;
    if (client_open(&late, uri, "late") != 0 || subscribe(&late, 1, &topic, qos1) != 0)
        goto out;
    if (inbox_wait(&late.inbox, &late.inbox.n, 1) != 0) {
        fail("late: no retained message within %d s", WAIT_S);
        goto out;
    }
    r = &late.inbox.msgs[0];
    if (strcmp(r->topic, topic) != 0 || !r->retained || r->qos != 1 ||
        strcmp(r->payload, "kept") != 0) {
        fail("late: got %s qos %d retained %d '%s', want %s qos 1 retained 1 'kept'", r->topic,
             r->qos, r->retained, r->payload, topic);
        goto out;
    }

    if (publish(pub, topic, "", 1, 1) != 0 || publish_wait(pub, ++*acked) != 0)
        goto out;
    if (client_open(&later, uri, "later") != 0 || subscribe(&later, 2, both, qos1) != 0)
        goto out;
    if (publish(pub, both[1], "end", 1, 0) != 0 || publish_wait(pub, ++*acked) != 0)
        goto out;
    if (inbox_wait(&later.inbox, &later.inbox.n, 1) != 0) {
        fail("later: no marker within %d s", WAIT_S);
        goto out;
    }
    r = &later.inbox.msgs[0];
    if (strcmp(r->topic, both[1]) != 0) {
        fail("later: got %s retained %d before the marker: not cleared", r->topic, r->retained);
        goto out;
    }
    printf("paho_c_test: retained message set, delivered with the flag, cleared\n");
    ret = 0;
out:
    client_close(&later);
    client_close(&late);
    return ret;
}

/* The --failover mode: Paho C's serverURIs, as a client of an active/standby pair sets them. */
static int
failover(int n, char **uris)
{
    MQTTClient h = NULL;
    MQTTClient_connectOptions opts = MQTTClient_connectOptions_initializer;
    MQTTClient_message m = MQTTClient_message_initializer;
    MQTTClient_deliveryToken tok;
    char id[64];
    int rc;

    snprintf(id, sizeof(id), "paho-c-failover-%ld", (long)getpid());
    rc = MQTTClient_create(&h, uris[0], id, MQTTCLIENT_PERSISTENCE_NONE, NULL);
    if (rc != MQTTCLIENT_SUCCESS) {
        fail("MQTTClient_create: %d", rc);
        return 1;
    }
    opts.serverURIs = uris;
    opts.serverURIcount = n;
    opts.cleansession = 1;
    opts.MQTTVersion = MQTTVERSION_3_1_1;
    opts.connectTimeout = 5;
    rc = MQTTClient_connect(h, &opts);
    if (rc != MQTTCLIENT_SUCCESS) {
        fail("connect with %d serverURIs: %d", n, rc);
        MQTTClient_destroy(&h);
        return 1;
    }
    m.payload = "failover";
    m.payloadlen = 8;
    m.qos = 1;
    rc = MQTTClient_publishMessage(h, TOPIC_PREFIX "failover", &m, &tok);
    if (rc == MQTTCLIENT_SUCCESS)
        rc = MQTTClient_waitForCompletion(h, tok, WAIT_S * 1000);
    if (rc != MQTTCLIENT_SUCCESS) {
        fail("publish: %d", rc);
    } else {
        printf("connected: %s\n", opts.returned.serverURI ? opts.returned.serverURI : "?");
    }
    MQTTClient_disconnect(h, 1000);
    MQTTClient_destroy(&h);
    return rc == MQTTCLIENT_SUCCESS ? 0 : 1;
}

int
main(int argc, char **argv)
{
    /* Static: the inboxes are large. */
    static struct client pub;
    static struct client sub;
    char *topics[3] = {TOPIC_PREFIX "q0", TOPIC_PREFIX "q1", TOPIC_PREFIX "q2"};
    const int qos[3] = {0, 1, 2};
    int acked = 0;
    int ret = 1;

    if (argc >= 3 && strcmp(argv[1], "--failover") == 0)
        return failover(argc - 2, argv + 2);
    if (argc != 2) {
        fprintf(stderr, "usage: %s tcp://HOST:PORT | --failover URI URI...\n", argv[0]);
        return 2;
    }
    if (client_open(&sub, argv[1], "sub") != 0 || client_open(&pub, argv[1], "pub") != 0)
        goto out;
    if (subscribe(&sub, 3, topics, qos) != 0)
        goto out;
    for (int q = 0; q <= 2; q++) {
        if (series(&pub, &sub, topics[q], q, &acked) != 0)
            goto out;
    }
    if (retained(argv[1], &pub, &acked) != 0)
        goto out;
    if (sub.inbox.overflow || sub.inbox.lost || pub.inbox.lost) {
        fail("overflow %d, connection lost: sub %d pub %d", sub.inbox.overflow, sub.inbox.lost,
             pub.inbox.lost);
        goto out;
    }
    ret = 0;
    printf("paho_c_test: OK\n");
out:
    client_close(&pub);
    client_close(&sub);
    return ret;
}
