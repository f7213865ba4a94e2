#include "core/broker/broker.h"

#include "core/base/base.h"
#include "core/store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <string.h>

/* A fake connection: records deliveries, can refuse, acks on demand. */
typedef struct fake {
    tn_session *s;
    tn_delivery *got[256];
    char payload[256][16];
    uint8_t qos[256];
    uint8_t flags[256];
    int n;
    int kicked;
    bool refuse;
} fake;

static int
fake_deliver(void *ctx, tn_delivery *d)
{
    fake *f = ctx;
    if (f->refuse)
        return TN_EAGAIN;
    tn_assert(f->n < 256);
    size_t n = d->msg->payload_len < 15 ? d->msg->payload_len : 15;
    memcpy(f->payload[f->n], d->msg->payload, n);
    f->payload[f->n][n] = '\0';
    f->qos[f->n] = d->qos;
    f->flags[f->n] = d->flags;
    f->got[f->n++] = d->ack ? d : NULL; /* no-ack deliveries are freed after the call */
    return 0;
}

static void
fake_kick(void *ctx)
{
    fake *f = ctx;
    f->kicked++;
    tn_session_detach(f->s);
    f->s = NULL;
}

static const tn_session_ops fake_ops = {fake_deliver, fake_kick};
static const tn_broker_limits limits = {.max_inflight = 10, .max_queued = 100, .max_offline = 5};

static void
open_session(tn_broker *b, fake *f, const char *id, bool clean, bool *present)
{
    bool p;
    CU_ASSERT_EQUAL(tn_broker_session_open(b, id, strlen(id), clean, &fake_ops, f, &f->s, &p), 0);
    if (present)
        *present = p;
    tn_session_start(f->s);
}

static void
publish(tn_broker *b, const char *name, const char *payload, uint8_t qos, bool retain)
{
    tn_message *m = tn_message_new(name, strlen(name), payload, strlen(payload), qos, retain);
    m->persistent = qos > 0; /* as MQTT publishes */
    CU_ASSERT_EQUAL(tn_broker_publish(b, m, NULL), 0);
    tn_message_unref(m);
}

static void
ack_all(fake *f)
{
    for (int i = 0; i < f->n; i++)
        if (f->got[i]) {
            tn_session_ack(f->s, f->got[i]);
            f->got[i] = NULL;
        }
}

static void
test_route_and_qos(void)
{
    tn_broker *b = tn_broker_new(&limits);
    fake a = {0};
    open_session(b, &a, "a", true, NULL);
    CU_ASSERT_EQUAL(tn_session_subscribe(a.s, "x.*", 1), 0);
    publish(b, "x.y", "one", 2, false); /* capped at the granted QoS 1 */
    publish(b, "x.y.z", "no", 1, false);
    publish(b, "x.y", "zero", 0, false);
    CU_ASSERT_EQUAL(a.n, 2);
    CU_ASSERT_STRING_EQUAL(a.payload[0], "one");
    CU_ASSERT_EQUAL(a.qos[0], 1);
    CU_ASSERT_EQUAL(a.qos[1], 0);
    ack_all(&a);
    CU_ASSERT_EQUAL(tn_session_unsubscribe(a.s, "x.*"), 0);
    CU_ASSERT_EQUAL(tn_session_unsubscribe(a.s, "x.*"), TN_ENOENT);
    publish(b, "x.y", "gone", 1, false);
    CU_ASSERT_EQUAL(a.n, 2);
    CU_ASSERT_EQUAL(tn_session_subscribe(a.s, "a.>.b", 1), TN_EINVAL);
    tn_session_detach(a.s);
    tn_broker_free(b);
}

static void
test_overlapping_once_at_highest_qos(void)
{
    tn_broker *b = tn_broker_new(&limits);
    fake a = {0};
    open_session(b, &a, "a", true, NULL);
    tn_session_subscribe(a.s, "s.>", 0);
    tn_session_subscribe(a.s, "s.*", 2);
    tn_session_subscribe(a.s, "s.t", 1);
    publish(b, "s.t", "m", 2, false);
    CU_ASSERT_EQUAL(a.n, 1); /* [MQTT-3.3.5-1] */
    CU_ASSERT_EQUAL(a.qos[0], 2);
    ack_all(&a);
    tn_session_subscribe(a.s, "s.*", 0); /* replaces, does not add [MQTT-3.8.4-3] */
    publish(b, "s.t", "m2", 2, false);
    CU_ASSERT_EQUAL(a.n, 2);
    CU_ASSERT_EQUAL(a.qos[1], 1);
    ack_all(&a);
    tn_session_detach(a.s);
    tn_broker_free(b);
}

static void
test_retained(void)
{
    tn_broker *b = tn_broker_new(&limits);
    publish(b, "r.a", "A", 1, true);
    publish(b, "r.b", "B", 0, true);
    publish(b, "r.b", "B2", 1, true); /* replaces */
    publish(b, "$SYS.x", "S", 1, true);
    tn_broker_stats st;
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.retained, 3);
    fake a = {0};
    open_session(b, &a, "a", true, NULL);
    tn_session_subscribe(a.s, ">", 2); /* '$' topics are not matched by a leading wildcard */
    CU_ASSERT_EQUAL(a.n, 2);
    CU_ASSERT_EQUAL(a.flags[0] & TN_DELIVERY_RETAINED, TN_DELIVERY_RETAINED);
    ack_all(&a);
    publish(b, "r.a", "", 1, true); /* clears, and is delivered as normal */
    CU_ASSERT_EQUAL(a.n, 3);
    CU_ASSERT_EQUAL(a.flags[2], 0); /* live delivery: retain flag off [MQTT-3.3.1-9] */
    ack_all(&a);
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.retained, 2);
    fake c = {0};
    open_session(b, &c, "c", true, NULL);
    tn_session_subscribe(c.s, "r.a", 1);
    CU_ASSERT_EQUAL(c.n, 0);
    tn_session_detach(c.s);
    tn_session_detach(a.s);
    tn_broker_free(b); /* frees retained: ASan checks */
}

static void
test_persistent_session_offline_queue(void)
{
    tn_broker *b = tn_broker_new(&limits);
    fake a = {0};
    bool present = true;
    open_session(b, &a, "p", false, &present);
    CU_ASSERT_FALSE(present);
    tn_session_subscribe(a.s, "t", 2);
    publish(b, "t", "inflight", 1, false);
    CU_ASSERT_EQUAL(a.n, 1);
    a.got[0]->tag = 42;
    tn_session_detach(a.s); /* unacked returns to the queue */
    for (int i = 0; i < 6; i++)
        publish(b, "t", "off", 1, false); /* max_offline 5: 1 + 4 kept, 2 dropped */
    publish(b, "t", "q0", 0, false);      /* QoS 0 is not kept offline */
    tn_broker_stats st;
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.dropped_offline, 2);
    fake a2 = {0};
    open_session(b, &a2, "p", false, &present);
    CU_ASSERT_TRUE(present);
    CU_ASSERT_EQUAL(a2.n, 5);
    CU_ASSERT_STRING_EQUAL(a2.payload[0], "inflight");
    CU_ASSERT_EQUAL(a2.got[0]->tag, 42);
    CU_ASSERT_EQUAL(a2.got[0]->count, 2);
    ack_all(&a2);
    tn_session_detach(a2.s);
    /* clean = true discards the stored session */
    fake a3 = {0};
    open_session(b, &a3, "p", true, &present);
    CU_ASSERT_FALSE(present);
    publish(b, "t", "x", 1, false);
    CU_ASSERT_EQUAL(a3.n, 0); /* no subscription any more */
    tn_session_detach(a3.s);
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.sessions, 0);
    tn_broker_free(b);
}

static void
test_takeover(void)
{
    tn_broker *b = tn_broker_new(&limits);
    fake a = {0}, a2 = {0};
    open_session(b, &a, "same", false, NULL);
    tn_session_subscribe(a.s, "t", 1);
    bool present = false;
    open_session(b, &a2, "same", false, &present);
    CU_ASSERT_EQUAL(a.kicked, 1);
    CU_ASSERT_TRUE(present);
    publish(b, "t", "m", 1, false);
    CU_ASSERT_EQUAL(a.n, 0);
    CU_ASSERT_EQUAL(a2.n, 1);
    ack_all(&a2);
    tn_session_detach(a2.s);
    tn_broker_free(b); /* frees the detached persistent session */
}

static int resumed;
static void
on_resume(tn_flow *f)
{
    (void)f;
    resumed++;
}

static void
publish_from(tn_broker *b, tn_flow *f, const char *name, const char *payload, uint8_t qos)
{
    tn_message *m = tn_message_new(name, strlen(name), payload, strlen(payload), qos, false);
    m->persistent = qos > 0;
    CU_ASSERT_EQUAL(tn_broker_publish(b, m, f), 0);
    tn_message_unref(m);
}

static void
test_slow_subscriber_slows_producer(void)
{
    tn_broker_limits l = {
        .max_inflight = 2, .max_queued = 4, .max_offline = 100, .slow_consumer_ms = 1000};
    tn_broker *b = tn_broker_new(&l);
    tn_broker_tick(b, 5000);
    fake a = {0};
    open_session(b, &a, "slow", true, NULL);
    tn_session_subscribe(a.s, "t", 1);
    tn_flow f;
    tn_flow_init(&f, on_resume);
    resumed = 0;
    for (int i = 0; i < 6; i++)
        publish_from(b, &f, "t", "m", 1);
    CU_ASSERT_EQUAL(a.n, 2); /* window */
    CU_ASSERT_TRUE(f.blocked > 0);
    /* Briefly behind: QoS 0 is queued too (its producers wait), never dropped. */
    for (int i = 0; i < 6; i++)
        publish(b, "t", "zero", 0, false);
    tn_broker_stats st;
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.dropped_qos0, 0);
    tn_broker_tick(b, 5999); /* not yet a slow consumer */
    CU_ASSERT_EQUAL(resumed, 0);
    while (resumed == 0 && a.n < 12) {
        int n = a.n;
        ack_all(&a);
        CU_ASSERT_FATAL(a.n > n);
    }
    CU_ASSERT_EQUAL(resumed, 1);
    CU_ASSERT_EQUAL(f.blocked, 0);
    ack_all(&a);
    ack_all(&a);
    CU_ASSERT_EQUAL(a.n, 12); /* every one of them, QoS 0 included */
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.slow_episodes, 0);
    tn_flow_fini(&f);
    tn_session_detach(a.s);
    tn_broker_free(b);
}

/* A subscriber behind for longer than slow_consumer_ms: QoS 0 to it is dropped and its QoS 0
 * producers stop waiting, while QoS 1 producers still wait; it recovers once it catches up. */
static void
test_slow_consumer_episode(void)
{
    tn_broker_limits l = {
        .max_inflight = 2, .max_queued = 4, .max_offline = 100, .slow_consumer_ms = 1000};
    tn_broker *b = tn_broker_new(&l);
    tn_broker_tick(b, 10000);
    fake a = {0}, fast = {0};
    open_session(b, &a, "stalled", true, NULL);
    open_session(b, &fast, "fast", true, NULL);
    tn_session_subscribe(a.s, "t", 0);
    tn_session_subscribe(fast.s, "t", 0);
    a.refuse = true; /* stops reading: every delivery to it waits */
    tn_flow f;
    tn_flow_init(&f, on_resume);
    resumed = 0;
    for (int i = 0; i < 4; i++)
        publish_from(b, &f, "t", "q0", 0);
    CU_ASSERT_TRUE(f.blocked > 0); /* behind: the QoS 0 producer waits */
    tn_broker_tick(b, 10500);
    CU_ASSERT_TRUE(f.blocked > 0);
    tn_broker_tick(b, 11000); /* behind for 1000 ms: slow */
    CU_ASSERT_EQUAL(resumed, 1);
    CU_ASSERT_EQUAL(f.blocked, 0);
    tn_broker_stats st;
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.slow_episodes, 1);
    CU_ASSERT_EQUAL(st.slow_now, 1);
    for (int i = 0; i < 10; i++)
        publish_from(b, &f, "t", "q0", 0);
    CU_ASSERT_EQUAL(f.blocked, 0); /* nobody waits on a slow consumer for QoS 0 */
    CU_ASSERT_EQUAL(fast.n, 14);   /* the others get everything */
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.dropped_qos0, 10);
    /* QoS 1 to a slow consumer is queued, and its producer waits: nothing lost at QoS 1. */
    publish_from(b, &f, "t", "q1", 1);
    CU_ASSERT_EQUAL(f.blocked, 0); /* subscribed at QoS 0: a QoS 0 delivery, dropped */
    tn_session_subscribe(a.s, "t", 1);
    CU_ASSERT_EQUAL(fast.n, 15);
    publish_from(b, &f, "t", "q1", 1);
    CU_ASSERT_EQUAL(f.blocked, 1);
    /* It catches up: the episode ends, QoS 0 flows again. */
    a.refuse = false;
    tn_queue_consumer_ready(tn_session_consumer(a.s));
    CU_ASSERT_EQUAL(a.n, 5); /* 4 queued QoS 0 + the QoS 1 one */
    CU_ASSERT_EQUAL(resumed, 2);
    tn_broker_tick(b, 11100);
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.slow_now, 0);
    publish_from(b, &f, "t", "again", 0);
    CU_ASSERT_EQUAL(a.n, 6);
    CU_ASSERT_STRING_EQUAL(a.payload[5], "again");
    ack_all(&a);
    ack_all(&fast);
    tn_flow_fini(&f);
    tn_session_detach(a.s);
    tn_session_detach(fast.s);
    tn_broker_free(b);
}

/* A subscriber that reads, however slowly, is timed by what it drains: half of max_queued per
 * slow_consumer_ms keeps it a healthy one that paces its producers; less makes it slow. */
static void
test_slow_consumer_is_judged_by_its_pace(void)
{
    tn_broker_limits l = {
        .max_inflight = 2, .max_queued = 4, .max_offline = 100, .slow_consumer_ms = 1000};
    tn_broker *b = tn_broker_new(&l);
    uint64_t now = 50000;
    tn_broker_tick(b, now);
    fake a = {0};
    open_session(b, &a, "steady", true, NULL);
    tn_session_subscribe(a.s, "t", 1);
    tn_flow f;
    tn_flow_init(&f, on_resume);
    for (int i = 0; i < 40; i++)
        publish_from(b, NULL, "t", "m", 1);
    publish_from(b, &f, "t", "m", 1);
    CU_ASSERT_EQUAL(f.blocked, 1);
    int acked = 0;
    for (int w = 0; w < 5; w++) { /* two acks (two more taken) per window: enough */
        for (int k = 0; k < 2; k++)
            tn_session_ack(a.s, a.got[acked++]);
        now += 1000;
        tn_broker_tick(b, now);
        CU_ASSERT_EQUAL(f.blocked, 1); /* still paced by it, not slow */
    }
    tn_broker_stats st;
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.slow_episodes, 0);
    tn_session_ack(a.s, a.got[acked++]); /* one in a window: it cannot catch up */
    now += 1000;
    tn_broker_tick(b, now);
    CU_ASSERT_EQUAL(f.blocked, 0);
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.slow_episodes, 1);
    tn_flow_fini(&f);
    tn_session_detach(a.s);
    tn_broker_free(b);
}

/* Whatever way a stalled subscriber goes, its producers resume at once [issue 19]. */
static void
test_producers_resume_when_subscriber_leaves(void)
{
    tn_broker_limits l = {.max_inflight = 2, .max_queued = 4, .max_offline = 100};
    for (int persistent = 0; persistent < 2; persistent++) {
        tn_broker *b = tn_broker_new(&l);
        fake a = {0};
        open_session(b, &a, "stalled", !persistent, NULL);
        tn_session_subscribe(a.s, "t", 1);
        a.refuse = true;
        tn_flow f;
        tn_flow_init(&f, on_resume);
        resumed = 0;
        for (int i = 0; i < 6; i++)
            publish_from(b, &f, "t", "m", 1);
        CU_ASSERT_EQUAL(f.blocked, 1);
        tn_session_detach(a.s); /* DISCONNECT, FIN, RST, keep-alive: all end here */
        CU_ASSERT_EQUAL(resumed, 1);
        CU_ASSERT_EQUAL(f.blocked, 0);
        /* An offline persistent session keeps queueing without making anyone wait. */
        for (int i = 0; i < 20; i++)
            publish_from(b, &f, "t", "m", 1);
        CU_ASSERT_EQUAL(f.blocked, 0);
        tn_flow_fini(&f);
        tn_broker_free(b);
    }
}

/* Retained messages on SUBSCRIBE: all of them, past max_queued, at QoS 0 and 1. */
static void
test_retained_past_queue_limit(void)
{
    tn_broker_limits l = {
        .max_inflight = 10, .max_queued = 4, .max_offline = 100, .slow_consumer_ms = 1000};
    tn_broker *b = tn_broker_new(&l);
    char name[32];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "s.%d", i);
        publish(b, name, "r", 1, true);
    }
    for (int qos = 0; qos < 2; qos++) {
        fake a = {0};
        open_session(b, &a, "late", true, NULL);
        a.refuse = true;
        CU_ASSERT_EQUAL(tn_session_subscribe(a.s, "s.>", (uint8_t)qos), 0);
        a.refuse = false;
        for (int round = 0; round < 100 && a.n < 50; round++) {
            tn_queue_consumer_ready(tn_session_consumer(a.s));
            ack_all(&a);
        }
        CU_ASSERT_EQUAL(a.n, 50);
        CU_ASSERT_EQUAL(a.flags[49], TN_DELIVERY_RETAINED);
        ack_all(&a);
        tn_session_detach(a.s);
    }
    tn_broker_stats st;
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.dropped_qos0, 0);
    tn_broker_free(b);
}

static void
test_max_topic_levels(void)
{
    tn_broker_limits l = {
        .max_inflight = 10, .max_queued = 4, .max_offline = 100, .max_topic_levels = 3};
    tn_broker *b = tn_broker_new(&l);
    CU_ASSERT_TRUE(tn_broker_levels_ok(b, "a.b.c"));
    CU_ASSERT_FALSE(tn_broker_levels_ok(b, "a.b.c.d"));
    CU_ASSERT_FALSE(tn_broker_levels_ok(b, "a.b.."));
    fake a = {0};
    open_session(b, &a, "deep", true, NULL);
    CU_ASSERT_EQUAL(tn_session_subscribe(a.s, "a.*.>", 0), 0);
    CU_ASSERT_EQUAL(tn_session_subscribe(a.s, "a.*.*.>", 0), TN_ETOOBIG);
    tn_message *m = tn_message_new("a.b.c.d", 7, "x", 1, 0, true);
    CU_ASSERT_EQUAL(tn_broker_publish(b, m, NULL), TN_ETOOBIG);
    tn_message_unref(m);
    tn_broker_stats st;
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.retained, 0);
    CU_ASSERT_EQUAL(st.published, 0);
    publish(b, "a.b.c", "ok", 0, false);
    CU_ASSERT_EQUAL(a.n, 1);
    tn_session_detach(a.s);
    tn_broker_free(b);
}

static void
test_packet_ids(void)
{
    tn_broker *b = tn_broker_new(&limits);
    fake a = {0};
    open_session(b, &a, "ids", true, NULL);
    CU_ASSERT_TRUE(tn_session_rx_mark(a.s, 7));
    CU_ASSERT_FALSE(tn_session_rx_mark(a.s, 7));
    CU_ASSERT_TRUE(tn_session_rx_release(a.s, 7));
    CU_ASSERT_FALSE(tn_session_rx_release(a.s, 7));
    CU_ASSERT_EQUAL(tn_session_tx_alloc(a.s, 41), 42);         /* derived from the message id */
    CU_ASSERT_EQUAL(tn_session_tx_alloc(a.s, 41 + 65535), 43); /* taken: the next free one */
    for (int i = 0; i < 65533; i++)
        CU_ASSERT_NOT_EQUAL_FATAL(tn_session_tx_alloc(a.s, (uint64_t)i), 0);
    CU_ASSERT_EQUAL(tn_session_tx_alloc(a.s, 7), 0); /* all in use */
    tn_session_tx_free(a.s, 500);
    CU_ASSERT_EQUAL(tn_session_tx_alloc(a.s, 9), 500);
    tn_session_detach(a.s);
    tn_broker_free(b);
}

/* ---- durability: the broker's journal, replayed into a new broker ---- */

static int notify_pipe[2] = {-1, -1};

static void
nop_notify(void *arg)
{
    (void)arg;
    if (notify_pipe[1] >= 0)
        (void)!write(notify_pipe[1], "x", 1);
}

/* Waits (bounded) until everything the broker appended is durable, then runs the callbacks. */
static void
settle(tn_broker *b, tn_store *st)
{
    char buf[64];
    for (int i = 0; i < 1000 && tn_store_durable_lsn(st) < tn_broker_lsn(b); i++) {
        struct pollfd p = {.fd = notify_pipe[0], .events = POLLIN};
        if (poll(&p, 1, 100) == 1)
            (void)!read(notify_pipe[0], buf, sizeof buf);
    }
    CU_ASSERT_TRUE(tn_store_durable_lsn(st) >= tn_broker_lsn(b));
    tn_store_poll(st);
}

static tn_store *
store_open(const char *dir)
{
    tn_store_conf c = {.dir = dir, .sync = TN_SYNC_NEVER, .notify = nop_notify};
    tn_store *st = NULL;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(tn_store_open(&c, &st, err, sizeof err), 0);
    return st;
}

static tn_broker *
recovered_with(const char *dir, tn_store **st, const tn_broker_limits *l)
{
    tn_broker *b = tn_broker_new(l);
    *st = store_open(dir);
    tn_broker_attach_store(b, *st);
    char err[256];
    CU_ASSERT_EQUAL_FATAL(tn_broker_recover(b, err, sizeof err), 0);
    CU_ASSERT_EQUAL_FATAL(tn_store_start(*st), 0);
    return b;
}

static tn_broker *
recovered(const char *dir, tn_store **st)
{
    return recovered_with(dir, st, &limits);
}

/* The end of a test with a journal: closes it, frees the broker, removes the folder. */
static void
finish(tn_broker *b, tn_store *st, const char *dir)
{
    tn_store_close(st);
    tn_broker_free(b);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

static int
segments(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strstr(e->d_name, ".seg") != NULL;
    if (d)
        closedir(d);
    return n;
}

/* Checkpoints keep the journal proportional to live data and replay to the same state. */
static void
test_journal_compaction(void)
{
    char dir[] = "/tmp/tern-broker-ckpt-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    tn_broker_limits l = limits;
    l.compact_bytes = 16384;
    tn_store *st;
    tn_broker *b = recovered_with(dir, &st, &l);
    fake a = {0};
    open_session(b, &a, "c", false, NULL);
    tn_session_subscribe(a.s, "k", 1);
    publish(b, "ret", "R", 1, true);
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < 10; i++)
            publish(b, "k", "payload payload payload", 1, false);
        ack_all(&a); /* the fake holds at most 256 */
        a.n = 0;
        settle(b, st);
        tn_broker_maintain(b);
        settle(b, st); /* the checkpoint is durable: older segments go */
    }
    for (int i = 0; i < 5; i++)
        publish(b, "k", "left", 1, false); /* 5 unacked at the end */
    settle(b, st);
    /* The writer deletes dead segments on its own time and says so: wait for it (bounded). */
    char buf[64];
    for (int i = 0; i < 100 && segments(dir) > 3; i++) {
        struct pollfd p = {.fd = notify_pipe[0], .events = POLLIN};
        if (poll(&p, 1, 100) == 1)
            (void)!read(notify_pipe[0], buf, sizeof buf);
    }
    CU_ASSERT_TRUE(segments(dir) <= 3);
    CU_ASSERT_TRUE(tn_store_bytes(st) < 4 * 16384); /* not 1,000 messages' worth */
    tn_session_detach(a.s);
    tn_store_close(st);
    tn_broker_free(b);

    b = recovered_with(dir, &st, &l);
    fake a2 = {0};
    bool present = false;
    open_session(b, &a2, "c", false, &present);
    CU_ASSERT_TRUE(present);
    CU_ASSERT_EQUAL(a2.n, 5);
    for (int i = 0; i < a2.n; i++)
        CU_ASSERT_STRING_EQUAL(a2.payload[i], "left");
    ack_all(&a2);
    tn_session_detach(a2.s);
    fake r = {0};
    open_session(b, &r, "r", true, NULL);
    tn_session_subscribe(r.s, "ret", 1);
    CU_ASSERT_EQUAL(r.n, 1);
    ack_all(&r);
    tn_session_detach(r.s);
    finish(b, st, dir);
}

static void
test_journal_replay(void)
{
    char dir[] = "/tmp/tern-broker-test-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    tn_store *st;
    tn_broker *b = recovered(dir, &st);
    fake a = {0}, c = {0};
    open_session(b, &a, "keep", false, NULL);
    tn_session_subscribe(a.s, "j.*", 2);
    tn_session_subscribe(a.s, "gone", 1);
    tn_session_unsubscribe(a.s, "gone");
    open_session(b, &c, "clean", true, NULL); /* clean sessions are not journaled */
    tn_session_subscribe(c.s, "j.*", 1);
    publish(b, "j.1", "one", 1, false);
    publish(b, "j.2", "two", 2, false);
    publish(b, "j.3", "three", 0, false); /* QoS 0: not journaled */
    CU_ASSERT_EQUAL(a.n, 3);
    tn_session_ack(a.s, a.got[0]); /* "one" is done; "two" stays unacked */
    tn_session_detach(a.s);
    publish(b, "j.4", "four", 1, false); /* queued while offline */
    publish(b, "r.x", "kept", 1, true);
    publish(b, "r.y", "soon gone", 1, true);
    publish(b, "r.y", "", 1, true);
    CU_ASSERT_TRUE(tn_session_rx_mark(c.s, 9)); /* clean: not journaled */
    tn_session_detach(c.s);
    tn_store_close(st);
    tn_broker_free(b);

    b = recovered(dir, &st);
    tn_broker_stats stats;
    tn_broker_get_stats(b, &stats);
    CU_ASSERT_EQUAL(stats.sessions, 1);
    CU_ASSERT_EQUAL(stats.retained, 1);
    fake a2 = {0};
    bool present = false;
    open_session(b, &a2, "keep", false, &present);
    CU_ASSERT_TRUE(present);
    CU_ASSERT_EQUAL(a2.n, 2); /* "two" (unacked), then "four", in order */
    CU_ASSERT_STRING_EQUAL(a2.payload[0], "two");
    CU_ASSERT_EQUAL(a2.qos[0], 2);
    CU_ASSERT_STRING_EQUAL(a2.payload[1], "four");
    ack_all(&a2);
    publish(b, "j.5", "five", 1, false); /* the subscription came back */
    CU_ASSERT_EQUAL(a2.n, 3);
    publish(b, "gone", "x", 1, false); /* the unsubscribed one did not */
    CU_ASSERT_EQUAL(a2.n, 3);
    ack_all(&a2);
    tn_session_detach(a2.s);
    fake r = {0};
    open_session(b, &r, "r", true, NULL);
    tn_session_subscribe(r.s, "r.*", 1);
    CU_ASSERT_EQUAL(r.n, 1);
    CU_ASSERT_STRING_EQUAL(r.payload[0], "kept");
    ack_all(&r);
    tn_session_detach(r.s);
    /* A persistent session reopened clean is gone for good, also after a restart. */
    fake a3 = {0};
    open_session(b, &a3, "keep", true, &present);
    tn_session_detach(a3.s);
    tn_store_close(st);
    tn_broker_free(b);

    b = recovered(dir, &st);
    tn_broker_get_stats(b, &stats);
    CU_ASSERT_EQUAL(stats.sessions, 0);
    finish(b, st, dir);
}

/* A session gets its queue (and its connection's consumer) only when something may be delivered
 * to it: an idle client, or one that only publishes, keeps none. */
static void
test_queue_on_first_need(void)
{
    tn_broker *b = tn_broker_new(&limits);
    publish(b, "r", "kept", 1, true);
    fake a = {0};
    open_session(b, &a, "idle", true, NULL);
    CU_ASSERT_PTR_NULL(tn_session_consumer(a.s));
    publish(b, "x", "nobody", 1, false);
    CU_ASSERT_PTR_NULL(tn_session_consumer(a.s));
    /* Packet ids work without a queue (a publisher's QoS 2 receipts). */
    CU_ASSERT_TRUE(tn_session_rx_mark(a.s, 7));
    CU_ASSERT_TRUE(tn_session_rx_release(a.s, 7));
    /* The first subscription makes it, attached to the started connection: retained first. */
    CU_ASSERT_EQUAL(tn_session_subscribe(a.s, "r", 1), 0);
    CU_ASSERT_PTR_NOT_NULL(tn_session_consumer(a.s));
    CU_ASSERT_EQUAL(a.n, 1);
    CU_ASSERT_STRING_EQUAL(a.payload[0], "kept");
    CU_ASSERT_EQUAL(a.flags[0], TN_DELIVERY_RETAINED);
    publish(b, "r", "live", 1, false);
    CU_ASSERT_EQUAL(a.n, 2);
    ack_all(&a);
    /* Subscribed before start: the consumer comes with start, deliveries after it. */
    fake c = {0};
    bool present;
    CU_ASSERT_EQUAL(tn_broker_session_open(b, "early", 5, true, &fake_ops, &c, &c.s, &present), 0);
    CU_ASSERT_EQUAL(tn_session_subscribe(c.s, "r", 1), 0);
    CU_ASSERT_PTR_NULL(tn_session_consumer(c.s));
    CU_ASSERT_EQUAL(c.n, 0);
    tn_session_start(c.s);
    CU_ASSERT_PTR_NOT_NULL(tn_session_consumer(c.s));
    CU_ASSERT_EQUAL(c.n, 1);
    ack_all(&c);
    /* A protocol asking for the queue gets one (and the consumer, once started). */
    fake d = {0};
    open_session(b, &d, "asks", true, NULL);
    CU_ASSERT_PTR_NOT_NULL(tn_session_queue(d.s));
    CU_ASSERT_PTR_NOT_NULL(tn_session_consumer(d.s));
    tn_broker_stats st;
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.sessions, 3);
    CU_ASSERT_EQUAL(st.paged, 0);
    tn_session_detach(a.s);
    tn_session_detach(c.s);
    tn_session_detach(d.s);
    tn_broker_free(b);
}

/* Persistent sessions without a queue are journaled, checkpointed and recovered like others;
 * one recovered without a queue gets it when a message comes for it, also while offline. */
static void
test_queueless_persistent_sessions(void)
{
    char dir[] = "/tmp/tern-broker-lazy-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    tn_broker_limits l = limits;
    l.compact_bytes = 4096;
    tn_store *st;
    tn_broker *b = recovered_with(dir, &st, &l);
    fake idle = {0}, pub = {0}, sub = {0};
    open_session(b, &idle, "idle", false, NULL);
    open_session(b, &pub, "pub", false, NULL);
    CU_ASSERT_TRUE(tn_session_rx_mark(pub.s, 3)); /* QoS 2 received, not released */
    open_session(b, &sub, "sub", false, NULL);
    tn_session_subscribe(sub.s, "t", 1);
    CU_ASSERT_PTR_NULL(tn_session_consumer(idle.s));
    CU_ASSERT_PTR_NULL(tn_session_consumer(pub.s));
    tn_session_detach(idle.s);
    tn_session_detach(pub.s);
    /* Enough journal for checkpoints, which walk every session, queue or not. */
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 10; i++)
            publish(b, "t", "payload payload payload", 1, false);
        ack_all(&sub);
        sub.n = 0;
        settle(b, st);
        tn_broker_maintain(b);
        settle(b, st);
    }
    tn_session_detach(sub.s);
    publish(b, "t", "offline", 1, false);
    settle(b, st);
    tn_store_close(st);
    tn_broker_free(b);

    b = recovered_with(dir, &st, &l);
    tn_broker_stats stats;
    tn_broker_get_stats(b, &stats);
    CU_ASSERT_EQUAL(stats.sessions, 3);
    fake idle2 = {0}, pub2 = {0}, sub2 = {0};
    bool present = false;
    open_session(b, &idle2, "idle", false, &present);
    CU_ASSERT_TRUE(present);
    CU_ASSERT_PTR_NULL(tn_session_consumer(idle2.s));
    open_session(b, &pub2, "pub", false, &present);
    CU_ASSERT_TRUE(present);
    CU_ASSERT_FALSE(tn_session_rx_mark(pub2.s, 3)); /* still marked: a duplicate */
    open_session(b, &sub2, "sub", false, &present);
    CU_ASSERT_TRUE(present);
    CU_ASSERT_EQUAL(sub2.n, 1);
    CU_ASSERT_STRING_EQUAL(sub2.payload[0], "offline");
    ack_all(&sub2);
    /* The idle one subscribes after the restart, goes offline: its new queue keeps QoS 1. */
    tn_session_subscribe(idle2.s, "late", 1);
    tn_session_detach(idle2.s);
    publish(b, "late", "queued", 1, false);
    settle(b, st);
    tn_session_detach(pub2.s);
    tn_session_detach(sub2.s);
    tn_store_close(st);
    tn_broker_free(b);

    b = recovered_with(dir, &st, &l);
    fake idle3 = {0};
    open_session(b, &idle3, "idle", false, &present);
    CU_ASSERT_TRUE(present);
    CU_ASSERT_EQUAL(idle3.n, 1);
    CU_ASSERT_STRING_EQUAL(idle3.payload[0], "queued");
    ack_all(&idle3);
    tn_session_detach(idle3.s);
    finish(b, st, dir);
}

/* Takes and acks what f's session offers, in rounds, until it offers nothing or limit were
 * taken; payloads must be "N", "N+1", ... from *next on. Returns how many. */
static int
drain_in_order(tn_broker *b, tn_store *st, fake *f, int *next, int limit)
{
    int total = 0;
    for (int rounds = 0; rounds < 100000 && total < limit; rounds++) {
        settle(b, st);
        tn_broker_maintain(b); /* retries paged reads that were not on disk yet */
        if (f->n == 0)
            break;
        int n = f->n;
        tn_delivery *got[256];
        for (int i = 0; i < n; i++) {
            char want[16];
            snprintf(want, sizeof want, "%d", (*next)++);
            CU_ASSERT_STRING_EQUAL(f->payload[i], want);
            got[i] = f->got[i];
        }
        f->n = 0; /* acking makes room: new deliveries land from got[0] again */
        for (int i = 0; i < n; i++)
            tn_session_ack(f->s, got[i]);
        total += n;
    }
    return total;
}

/* A deep offline queue keeps only max_queue_memory in memory, the rest stays in the journal and
 * comes back in order, across a restart and across checkpoints that move it forward. */
static void
test_paging_deep_queue(void)
{
    char dir[] = "/tmp/tern-broker-page-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    tn_broker_limits l = limits;
    l.max_offline = 100000;
    l.max_queue_memory = 8192; /* a few dozen messages */
    l.compact_bytes = 16384;
    tn_store *st;
    tn_broker *b = recovered_with(dir, &st, &l);
    fake a = {0}, noise = {0};
    open_session(b, &a, "deep", false, NULL);
    tn_session_subscribe(a.s, "d", 1);
    tn_session_detach(a.s);
    open_session(b, &noise, "noise", false, NULL);
    tn_session_subscribe(noise.s, "n", 1);
    enum { N = 3000 };
    char p[16];
    for (int i = 0; i < N; i++) {
        snprintf(p, sizeof p, "%d", i);
        publish(b, "d", p, 1, false);
    }
    settle(b, st);
    uint64_t one_copy = tn_store_bytes(st);
    tn_broker_stats stats;
    tn_broker_get_stats(b, &stats);
    CU_ASSERT_TRUE(stats.paged > N - 100); /* only a few dozen in memory */
    /* Much more traffic than the deep queue holds, acked at once: checkpoints run, and the
     * segments the deep queue pins are copied forward when they are mostly dead. */
    int next_noise = 0;
    for (int round = 0; round < 1000; round++) {
        for (int i = 0; i < 10; i++) {
            snprintf(p, sizeof p, "%d", round * 10 + i);
            publish(b, "n", p, 1, false);
        }
        CU_ASSERT_EQUAL(drain_in_order(b, st, &noise, &next_noise, 1 << 30), 10);
        tn_broker_maintain(b);
        settle(b, st);
    }
    tn_session_detach(noise.s);
    char buf[64];
    for (int i = 0; i < 50 && tn_store_bytes(st) > 3 * one_copy + 4 * 16384; i++) {
        struct pollfd pf = {.fd = notify_pipe[0], .events = POLLIN};
        if (poll(&pf, 1, 100) == 1)
            (void)!read(notify_pipe[0], buf, sizeof buf);
    }
    CU_ASSERT_TRUE(tn_store_bytes(st) <= 3 * one_copy + 4 * 16384); /* proportional to live */
    tn_store_close(st);
    tn_broker_free(b);

    /* Restart: the deep queue comes back paged, and drains in order. */
    b = recovered_with(dir, &st, &l);
    tn_broker_get_stats(b, &stats);
    CU_ASSERT_TRUE(stats.paged > N - 100);
    fake a2 = {0};
    bool present = false;
    open_session(b, &a2, "deep", false, &present);
    CU_ASSERT_TRUE(present);
    int next = 0;
    /* Half now, then more published behind the paged ones, then the rest. */
    CU_ASSERT_TRUE(drain_in_order(b, st, &a2, &next, N / 2) >= N / 2);
    for (int i = N; i < N + 100; i++) {
        snprintf(p, sizeof p, "%d", i);
        publish(b, "d", p, 1, false);
    }
    int rest = drain_in_order(b, st, &a2, &next, 1 << 30);
    CU_ASSERT_EQUAL(next, N + 100);
    CU_ASSERT_TRUE(rest > 0);
    tn_session_detach(a2.s);
    finish(b, st, dir);
}

/* A persistent session that is a slow consumer pages persistent messages to the journal, as if
 * offline, so its QoS 1 producers stop waiting too; nothing is lost when it catches up. */
static void
test_slow_persistent_session_pages(void)
{
    char dir[] = "/tmp/tern-broker-slow-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    tn_broker_limits l = limits;
    l.max_queued = 4;
    l.max_inflight = 2;
    l.max_offline = 1000;
    l.max_queue_memory = 1024;
    l.slow_consumer_ms = 1000;
    tn_store *st;
    tn_broker *b = recovered_with(dir, &st, &l);
    tn_broker_tick(b, 1000);
    fake a = {0};
    open_session(b, &a, "durable", false, NULL);
    tn_session_subscribe(a.s, "d", 1);
    a.refuse = true;
    tn_flow f;
    tn_flow_init(&f, on_resume);
    resumed = 0;
    char p[16];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%d", i);
        publish_from(b, &f, "d", p, 1);
    }
    CU_ASSERT_EQUAL(f.blocked, 1);
    tn_broker_tick(b, 2000);
    CU_ASSERT_EQUAL(f.blocked, 0); /* a slow consumer: nobody waits */
    CU_ASSERT_EQUAL(resumed, 1);
    for (int i = 4; i < 200; i++) {
        snprintf(p, sizeof p, "%d", i);
        publish_from(b, &f, "d", p, 1);
        CU_ASSERT_EQUAL(f.blocked, 0);
    }
    settle(b, st);
    tn_broker_stats stats;
    tn_broker_get_stats(b, &stats);
    CU_ASSERT_TRUE(stats.paged > 100); /* on disk, not in memory */
    CU_ASSERT_EQUAL(stats.dropped_offline, 0);
    a.refuse = false;
    tn_queue_consumer_ready(tn_session_consumer(a.s));
    int next = 0;
    drain_in_order(b, st, &a, &next, 1 << 30);
    CU_ASSERT_EQUAL(next, 200);
    tn_broker_tick(b, 2100);
    tn_broker_get_stats(b, &stats);
    CU_ASSERT_EQUAL(stats.slow_now, 0); /* caught up */
    tn_flow_fini(&f);
    tn_session_detach(a.s);
    finish(b, st, dir);
}

/* The protocol's state of an unacked delivery and its packet id survive a restart. */
static void
test_delivery_state_survives_restart(void)
{
    char dir[] = "/tmp/tern-broker-state-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    tn_store *st;
    tn_broker *b = recovered(dir, &st);
    fake a = {0};
    open_session(b, &a, "q2", false, NULL);
    tn_session_subscribe(a.s, "x", 2);
    publish(b, "x", "first", 2, false);
    publish(b, "x", "second", 2, false);
    CU_ASSERT_EQUAL_FATAL(a.n, 2);
    uint16_t pid = tn_session_tx_alloc(a.s, a.got[0]->msg->id);
    tn_session_set_state(a.s, a.got[0], 1); /* "PUBREC received" */
    tn_session_detach(a.s);
    settle(b, st);
    tn_store_close(st);
    tn_broker_free(b);

    b = recovered(dir, &st);
    fake a2 = {0};
    open_session(b, &a2, "q2", false, NULL);
    CU_ASSERT_EQUAL_FATAL(a2.n, 2);
    CU_ASSERT_STRING_EQUAL(a2.payload[0], "first");
    CU_ASSERT_EQUAL(a2.got[0]->state, 1);
    CU_ASSERT_EQUAL(a2.got[1]->state, 0);
    CU_ASSERT_EQUAL(tn_session_tx_alloc(a2.s, a2.got[0]->msg->id), pid);
    tn_session_detach(a2.s);
    finish(b, st, dir);
}

static int
consumer_deliver(void *ctx, tn_delivery *d)
{
    return fake_deliver(ctx, d);
}
static const tn_consumer_ops consumer_ops = {.deliver = consumer_deliver};

static void
send_to(tn_broker *b, tn_session *q, const char *payload, bool persistent)
{
    tn_message *m = tn_message_new("q", 1, payload, strlen(payload), 1, false);
    m->persistent = persistent;
    CU_ASSERT_EQUAL(tn_broker_send(b, q, m, NULL), 0);
    tn_message_unref(m);
}

/* Named queues: competing consumers, and only persistent messages survive a restart. */
/* A named queue makes its producers wait once it holds max_offline_messages, consumers or not,
 * and lets them go as it drains; it is never dropped into. */
static void
test_named_queue_producer_flow(void)
{
    tn_broker_limits l = {.max_inflight = 2, .max_queued = 4, .max_offline = 6};
    tn_broker *b = tn_broker_new(&l);
    tn_session *q = tn_broker_queue(b, "work", 4, false);
    tn_flow f;
    tn_flow_init(&f, on_resume);
    resumed = 0;
    for (int i = 0; i < 6; i++) {
        tn_message *m = tn_message_new("work", 4, "j", 1, 1, false);
        CU_ASSERT_EQUAL(tn_broker_send(b, q, m, &f), 0);
        tn_message_unref(m);
    }
    CU_ASSERT_EQUAL(f.blocked, 1);
    fake c = {0};
    tn_consumer *k = tn_queue_attach(tn_session_queue(q), &consumer_ops, &c, 10);
    CU_ASSERT_EQUAL(c.n, 6);
    CU_ASSERT_EQUAL(resumed, 1);
    CU_ASSERT_EQUAL(f.blocked, 0);
    for (int i = 0; i < 6; i++)
        tn_session_ack(q, c.got[i]);
    tn_queue_detach(k);
    tn_flow_fini(&f);
    tn_broker_queue_free(q);
    tn_broker_free(b);
}

static void
test_named_queues(void)
{
    char dir[] = "/tmp/tern-broker-queue-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    tn_store *st;
    tn_broker *b = recovered(dir, &st);
    tn_session *q = tn_broker_queue(b, "orders", 6, true);
    CU_ASSERT_PTR_EQUAL(tn_broker_queue(b, "orders", 6, true), q);
    size_t n;
    const char *name = tn_session_queue_name(q, &n);
    CU_ASSERT_TRUE(n == 6 && memcmp(name, "orders", 6) == 0);
    fake c1 = {0}, c2 = {0};
    tn_consumer *k1 = tn_queue_attach(tn_session_queue(q), &consumer_ops, &c1, 10);
    tn_consumer *k2 = tn_queue_attach(tn_session_queue(q), &consumer_ops, &c2, 10);
    send_to(b, q, "a", true);
    send_to(b, q, "b", true);
    CU_ASSERT_EQUAL(c1.n + c2.n, 2);
    CU_ASSERT_EQUAL_FATAL(c1.n, 1); /* one each: competing consumers */
    fake *got_a = strcmp(c1.payload[0], "a") == 0 ? &c1 : &c2;
    tn_session_ack(q, got_a->got[0]);
    tn_queue_detach(k1);
    tn_queue_detach(k2);       /* "b", unacked, goes back to the queue */
    send_to(b, q, "c", false); /* not journaled */
    send_to(b, q, "d", true);
    tn_session *t = tn_broker_queue(b, "tmp", 3, false);
    send_to(b, t, "x", true); /* a temporary queue is not journaled either */
    tn_broker_queue_free(t);
    settle(b, st);
    tn_store_close(st);
    tn_broker_free(b);

    b = recovered(dir, &st);
    tn_broker_stats stats;
    tn_broker_get_stats(b, &stats);
    CU_ASSERT_EQUAL(stats.sessions, 1); /* the durable queue only */
    q = tn_broker_queue(b, "orders", 6, true);
    fake c3 = {0};
    tn_consumer *k3 = tn_queue_attach(tn_session_queue(q), &consumer_ops, &c3, 10);
    CU_ASSERT_EQUAL_FATAL(c3.n, 2);
    CU_ASSERT_STRING_EQUAL(c3.payload[0], "b");
    CU_ASSERT_STRING_EQUAL(c3.payload[1], "d");
    tn_session_ack(q, c3.got[0]);
    tn_session_ack(q, c3.got[1]);
    tn_queue_detach(k3);
    finish(b, st, dir);
}

/* The incoming budget: fits are granted at once, the rest wait oldest first, the oldest holder
 * always moves (even past the budget, and when it grows), and a release wakes waiters in order. */
typedef struct intake_rec {
    tn_intake t;
    int resumed;
} intake_rec;

static int resume_order[8], n_resumed;

static void
intake_resumed(tn_intake *t)
{
    intake_rec *r = TN_CONTAINER_OF(t, intake_rec, t);
    r->resumed++;
    if (n_resumed < 8)
        resume_order[n_resumed++] = (int)t->seq;
}

static void
test_intake_budget(void)
{
    tn_broker_limits l = {
        .max_inflight = 10, .max_queued = 10, .max_offline = 10, .max_incoming = 100};
    tn_broker *b = tn_broker_new(&l);
    intake_rec r[5] = {0};
    for (int i = 0; i < 5; i++)
        r[i].t.resume = intake_resumed;
    n_resumed = 0;
    CU_ASSERT_EQUAL(tn_intake_reserve(b, &r[0].t, 60), 0);
    CU_ASSERT_EQUAL(tn_intake_reserve(b, &r[1].t, 30), 0);
    /* 60 + 30 + 20 > 100: waits; then a small one that would fit waits behind it (FIFO). */
    CU_ASSERT_EQUAL(tn_intake_reserve(b, &r[2].t, 20), TN_EAGAIN);
    CU_ASSERT_EQUAL(tn_intake_reserve(b, &r[3].t, 5), TN_EAGAIN);
    tn_broker_stats st;
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.incoming_bytes, 90);
    CU_ASSERT_EQUAL(st.incoming_waiting, 2);
    /* The oldest holder grows past the budget: granted, it must finish for anyone to move. */
    CU_ASSERT_EQUAL(tn_intake_reserve(b, &r[0].t, 50), 0);
    CU_ASSERT_EQUAL(r[0].t.held, 110);
    /* A younger holder growing past the budget waits. */
    CU_ASSERT_EQUAL(tn_intake_reserve(b, &r[1].t, 10), TN_EAGAIN);
    tn_intake_release(b, &r[0].t); /* 0 + 30 used: r1 (+10), r2 (20), r3 (5) all fit */
    CU_ASSERT_EQUAL(n_resumed, 3);
    CU_ASSERT_EQUAL(r[1].resumed, 1);
    CU_ASSERT_EQUAL(r[2].resumed, 1);
    CU_ASSERT_EQUAL(r[3].resumed, 1);
    CU_ASSERT(resume_order[0] < resume_order[1] && resume_order[1] < resume_order[2]);
    CU_ASSERT_EQUAL(r[1].t.held, 40);
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.incoming_bytes, 65);
    CU_ASSERT_EQUAL(st.incoming_waiting, 0);
    /* One message larger than the whole budget still goes through once it is the oldest. */
    CU_ASSERT_EQUAL(tn_intake_reserve(b, &r[4].t, 500), TN_EAGAIN);
    tn_intake_release(b, &r[1].t);
    tn_intake_release(b, &r[2].t);
    CU_ASSERT_EQUAL(r[4].resumed, 0);
    tn_intake_release(b, &r[3].t); /* a waiter leaving: harmless */
    CU_ASSERT_EQUAL(r[4].resumed, 1);
    CU_ASSERT_EQUAL(r[4].t.held, 500);
    /* A waiter that goes away (its connection closed) frees its place in the queue. */
    CU_ASSERT_EQUAL(tn_intake_reserve(b, &r[0].t, 10), TN_EAGAIN);
    CU_ASSERT_EQUAL(tn_intake_reserve(b, &r[1].t, 10), TN_EAGAIN);
    tn_intake_release(b, &r[0].t);
    CU_ASSERT_EQUAL(r[1].resumed, 1); /* not yet: r4 still holds 500 */
    tn_intake_release(b, &r[4].t);
    CU_ASSERT_EQUAL(r[1].resumed, 2);
    tn_intake_release(b, &r[1].t);
    tn_intake_release(b, &r[1].t); /* twice: harmless */
    /* A whole message keeps its payload charged until it is freed. */
    CU_ASSERT_EQUAL(tn_intake_reserve(b, &r[0].t, 60), 0);
    uint8_t *dst;
    tn_message *m = tn_message_alloc("big", 3, NULL, 0, 50, 1, false, &dst);
    tn_intake_charge(b, &r[0].t, m);
    CU_ASSERT_EQUAL(r[0].t.held, 0);
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.incoming_bytes, 50);
    CU_ASSERT_EQUAL(tn_intake_reserve(b, &r[1].t, 60), TN_EAGAIN);
    tn_message_ref(m);
    tn_message_unref(m);
    CU_ASSERT_EQUAL(r[1].resumed, 2);
    tn_message_unref(m); /* freed: its 50 bytes are given back */
    CU_ASSERT_EQUAL(r[1].resumed, 3);
    tn_intake_release(b, &r[1].t);
    tn_broker_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.incoming_bytes, 0);
    CU_ASSERT_EQUAL(st.incoming_waiting, 0);
    tn_broker_free(b);
}

/* A named queue's consumer whose next message is paged and not yet on disk when it asks for it
 * gets it once the journal has written it (the retry after the store's poll covers named queues,
 * whose consumers are not a session's). It stalled: the last messages of a run waited for the
 * next consumer. */
static void
test_named_queue_paged_retry(void)
{
    char dir[] = "/tmp/tern-broker-qpage-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    tn_broker_limits l = limits;
    l.max_offline = 1000;
    l.max_queue_memory = 400; /* two or three messages in memory, the rest paged */
    tn_store *st;
    tn_broker *b = recovered_with(dir, &st, &l);
    tn_session *q = tn_broker_queue(b, "pq", 2, true);
    fake c = {0};
    tn_consumer *k = tn_queue_attach(tn_session_queue(q), &consumer_ops, &c, 1);
    enum { N = 40 };
    char p[16];
    for (int i = 0; i < N; i++) {
        snprintf(p, sizeof p, "%d", i);
        send_to(b, q, p, true);
    }
    int got = 0, stalls = 0;
    for (int round = 0; round < 1000 && got < N; round++) {
        if (c.n == 0) { /* nothing in hand: what the journal wrote meanwhile may be loaded */
            stalls++;
            settle(b, st);
            tn_broker_maintain(b);
            continue;
        }
        CU_ASSERT_EQUAL(atoi(c.payload[0]), got);
        tn_delivery *d = c.got[0];
        c.n = 0;
        got++;
        tn_session_ack(q, d); /* at once: the next may not be written yet */
    }
    CU_ASSERT_EQUAL(got, N);
    tn_queue_detach(k);
    settle(b, st);
    finish(b, st, dir);
}

/* Large non-persistent messages to a durable queue are paged to the journal past its memory
 * limit like persistent ones, delivered in order, and, not being persistent, gone after a
 * restart, also when a checkpoint ran while they were paged. */
static void
test_large_volatile_paged(void)
{
    char dir[] = "/tmp/tern-broker-vol-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    tn_broker_limits l = limits;
    l.max_offline = 100;
    l.max_queue_memory = 1 << 20;
    l.compact_bytes = 4 << 20; /* a checkpoint comes due */
    tn_store *st;
    tn_broker *b = recovered_with(dir, &st, &l);
    tn_session *q = tn_broker_queue(b, "vq", 2, true);
    size_t n = (size_t)3 << 19; /* 1.5 MiB */
    char *body = malloc(n);
    for (int i = 0; i < 4; i++) {
        memset(body, 'a' + i, n);
        tn_message *m = tn_message_new("vq", 2, body, n, 1, false);
        m->persistent = false;
        CU_ASSERT_EQUAL(tn_broker_send(b, q, m, NULL), 0);
        tn_message_unref(m);
    }
    send_to(b, q, "p", true); /* and a small persistent one behind them */
    settle(b, st);
    tn_broker_stats stats;
    tn_broker_get_stats(b, &stats);
    CU_ASSERT_EQUAL(stats.paged, 5); /* none kept in memory */
    tn_broker_maintain(b);           /* the checkpoint: the paged ones are not enqueued in it */
    settle(b, st);
    tn_broker_maintain(b);
    fake c = {0};
    tn_consumer *k = tn_queue_attach(tn_session_queue(q), &consumer_ops, &c, 10);
    for (int r = 0; r < 100 && c.n < 5; r++) {
        settle(b, st);
        tn_broker_maintain(b);
    }
    CU_ASSERT_EQUAL_FATAL(c.n, 5);
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(c.got[i]->msg->payload_len, n);
        CU_ASSERT_EQUAL(c.got[i]->msg->payload[0], 'a' + i);
        CU_ASSERT_FALSE(c.got[i]->msg->persistent);
    }
    CU_ASSERT_STRING_EQUAL(c.payload[4], "p");
    tn_session_ack(q, c.got[0]);
    tn_session_ack(q, c.got[1]); /* the others stay unacked */
    tn_queue_detach(k);          /* they go back to the queue */
    settle(b, st);
    tn_store_close(st);
    tn_broker_free(b);

    /* After a restart only the persistent one is left. */
    b = recovered_with(dir, &st, &l);
    q = tn_broker_queue(b, "vq", 2, true);
    fake c2 = {0};
    k = tn_queue_attach(tn_session_queue(q), &consumer_ops, &c2, 10);
    for (int r = 0; r < 100 && c2.n == 0; r++) {
        settle(b, st);
        tn_broker_maintain(b);
    }
    CU_ASSERT_EQUAL_FATAL(c2.n, 1);
    CU_ASSERT_STRING_EQUAL(c2.payload[0], "p");
    tn_session_ack(q, c2.got[0]);
    tn_queue_detach(k);
    settle(b, st);
    free(body);
    finish(b, st, dir);
}

int
main(void)
{
    tn_log_set_level(getenv("TN_TEST_LOG") ? TN_LOG_INFO : TN_LOG_ERROR);
    if (pipe(notify_pipe) != 0)
        return 1;
    fcntl(notify_pipe[0], F_SETFL, O_NONBLOCK);
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("broker", NULL, NULL);
    CU_add_test(s, "route_and_qos", test_route_and_qos);
    CU_add_test(s, "paging_deep_queue", test_paging_deep_queue);
    CU_add_test(s, "named_queues", test_named_queues);
    CU_add_test(s, "delivery_state_survives_restart", test_delivery_state_survives_restart);
    CU_add_test(s, "overlapping_once", test_overlapping_once_at_highest_qos);
    CU_add_test(s, "retained", test_retained);
    CU_add_test(s, "persistent_offline_queue", test_persistent_session_offline_queue);
    CU_add_test(s, "takeover", test_takeover);
    CU_add_test(s, "slow_subscriber", test_slow_subscriber_slows_producer);
    CU_add_test(s, "slow_consumer_episode", test_slow_consumer_episode);
    CU_add_test(s, "slow_consumer_pace", test_slow_consumer_is_judged_by_its_pace);
    CU_add_test(s, "named_queue_producer_flow", test_named_queue_producer_flow);
    CU_add_test(s, "producers_resume_on_leave", test_producers_resume_when_subscriber_leaves);
    CU_add_test(s, "retained_past_queue_limit", test_retained_past_queue_limit);
    CU_add_test(s, "max_topic_levels", test_max_topic_levels);
    CU_add_test(s, "slow_persistent_pages", test_slow_persistent_session_pages);
    CU_add_test(s, "packet_ids", test_packet_ids);
    CU_add_test(s, "journal_replay", test_journal_replay);
    CU_add_test(s, "journal_compaction", test_journal_compaction);
    CU_add_test(s, "intake_budget", test_intake_budget);
    CU_add_test(s, "named_queue_paged_retry", test_named_queue_paged_retry);
    CU_add_test(s, "large_volatile_paged", test_large_volatile_paged);
    CU_add_test(s, "queue_on_first_need", test_queue_on_first_need);
    CU_add_test(s, "queueless_persistent_sessions", test_queueless_persistent_sessions);
    return tn_test_run();
}
