#include "core/queue/queue.h"

#include "core/base/base.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>

/* A consumer that records what it was given. */
typedef struct {
    tn_delivery *got[64];
    uint32_t count[64]; /* d->count when offered (no-ack deliveries are freed after) */
    int n;
    bool refuse; /* answer TN_EAGAIN */
} sink;

static int
sink_deliver(void *ctx, tn_delivery *d)
{
    sink *s = ctx;
    if (s->refuse)
        return TN_EAGAIN;
    tn_assert(s->n < 64);
    s->count[s->n] = d->count;
    s->got[s->n++] = d;
    return 0;
}

static const tn_consumer_ops sink_ops = {.deliver = sink_deliver};

static tn_message *
msg(const char *payload)
{
    return tn_message_new("q", 1, payload, strlen(payload), 1, false);
}

static bool
payload_is(const tn_delivery *d, const char *p)
{
    return d->msg->payload_len == strlen(p) && memcmp(d->msg->payload, p, strlen(p)) == 0;
}

static void
push(tn_queue *q, const char *p, bool ack)
{
    tn_message *m = msg(p);
    CU_ASSERT_EQUAL(tn_queue_push(q, m, ack ? 1 : 0, ack, 0), 0);
    tn_message_unref(m);
}

static void
test_fifo_and_credit(void)
{
    tn_queue *q = tn_queue_new(100, 0);
    push(q, "a", true);
    push(q, "b", true);
    push(q, "c", true);
    CU_ASSERT_EQUAL(tn_queue_depth(q), 3);
    sink s = {0};
    tn_consumer *c = tn_queue_attach(q, &sink_ops, &s, 2);
    CU_ASSERT_EQUAL(s.n, 2); /* credit 2 */
    CU_ASSERT_TRUE(payload_is(s.got[0], "a"));
    CU_ASSERT_TRUE(payload_is(s.got[1], "b"));
    CU_ASSERT_EQUAL(s.got[0]->count, 1);
    CU_ASSERT_EQUAL(tn_queue_inflight(q), 2);
    CU_ASSERT_EQUAL(tn_queue_depth(q), 1);
    tn_queue_ack(s.got[0]);
    CU_ASSERT_EQUAL(s.n, 3);
    CU_ASSERT_TRUE(payload_is(s.got[2], "c"));
    CU_ASSERT_PTR_EQUAL(tn_queue_unacked_first(c), s.got[1]);
    CU_ASSERT_PTR_EQUAL(tn_queue_unacked_next(s.got[1]), s.got[2]);
    tn_queue_ack(s.got[1]);
    tn_queue_ack(s.got[2]);
    CU_ASSERT_EQUAL(tn_queue_inflight(q), 0);
    tn_queue_detach(c);
    tn_queue_free(q);
}

static void
test_no_ack_deliveries_need_no_credit(void)
{
    tn_queue *q = tn_queue_new(100, 0);
    sink s = {0};
    tn_consumer *c = tn_queue_attach(q, &sink_ops, &s, 0);
    push(q, "x", false);
    push(q, "y", false);
    CU_ASSERT_EQUAL(s.n, 2);
    CU_ASSERT_EQUAL(tn_queue_inflight(q), 0);
    CU_ASSERT_EQUAL(tn_queue_depth(q), 0);
    tn_queue_detach(c);
    tn_queue_free(q);
}

static void
test_competing_consumers_round_robin(void)
{
    tn_queue *q = tn_queue_new(100, 0);
    sink s1 = {0}, s2 = {0};
    tn_consumer *c1 = tn_queue_attach(q, &sink_ops, &s1, 10);
    tn_consumer *c2 = tn_queue_attach(q, &sink_ops, &s2, 10);
    for (int i = 0; i < 6; i++)
        push(q, "m", true);
    CU_ASSERT_EQUAL(s1.n, 3);
    CU_ASSERT_EQUAL(s2.n, 3);
    CU_ASSERT_EQUAL(tn_queue_consumers(q), 2);
    tn_queue_detach(c1); /* its 3 unacked go back, then to c2 */
    CU_ASSERT_EQUAL(s2.n, 6);
    CU_ASSERT_EQUAL(s2.got[3]->count, 2); /* redelivered */
    for (int i = 0; i < 6; i++)
        tn_queue_ack(s2.got[i]);
    tn_queue_detach(c2);
    tn_queue_free(q);
}

static void
test_detach_requeues_in_order_keeping_tags(void)
{
    tn_queue *q = tn_queue_new(100, 0);
    sink s = {0};
    tn_consumer *c = tn_queue_attach(q, &sink_ops, &s, 10);
    push(q, "1", true);
    push(q, "2", true);
    push(q, "3", true);
    s.got[0]->tag = 11;
    s.got[1]->tag = 12;
    s.got[1]->state = 7;
    tn_queue_ack(s.got[2]);
    tn_queue_detach(c);
    CU_ASSERT_EQUAL(tn_queue_depth(q), 2);
    push(q, "4", true);
    sink t = {0};
    c = tn_queue_attach(q, &sink_ops, &t, 10);
    CU_ASSERT_EQUAL(t.n, 3);
    CU_ASSERT_TRUE(payload_is(t.got[0], "1"));
    CU_ASSERT_EQUAL(t.got[0]->tag, 11);
    CU_ASSERT_EQUAL(t.got[0]->count, 2);
    CU_ASSERT_TRUE(payload_is(t.got[1], "2"));
    CU_ASSERT_EQUAL(t.got[1]->state, 7);
    CU_ASSERT_TRUE(payload_is(t.got[2], "4"));
    CU_ASSERT_EQUAL(t.got[2]->count, 1);
    tn_queue_detach(c);
    tn_queue_free(q); /* frees queued deliveries: ASan checks */
}

static void
test_release_redelivers_first(void)
{
    tn_queue *q = tn_queue_new(100, 0);
    sink s = {0};
    tn_consumer *c = tn_queue_attach(q, &sink_ops, &s, 1);
    push(q, "a", true);
    push(q, "b", true);
    CU_ASSERT_EQUAL(s.n, 1);
    tn_queue_release(s.got[0]);
    CU_ASSERT_EQUAL(s.n, 2);
    CU_ASSERT_TRUE(payload_is(s.got[1], "a"));
    CU_ASSERT_EQUAL(s.got[1]->count, 2);
    tn_queue_ack(s.got[1]);
    CU_ASSERT_TRUE(payload_is(s.got[2], "b"));
    tn_queue_ack(s.got[2]);
    tn_queue_detach(c);
    tn_queue_free(q);
}

static void
test_paused_consumer(void)
{
    tn_queue *q = tn_queue_new(100, 0);
    sink s = {.refuse = true};
    tn_consumer *c = tn_queue_attach(q, &sink_ops, &s, 10);
    push(q, "a", false);
    CU_ASSERT_EQUAL(s.n, 0);
    CU_ASSERT_EQUAL(tn_queue_depth(q), 1);
    s.refuse = false;
    push(q, "b", false); /* still paused until ready */
    CU_ASSERT_EQUAL(s.n, 0);
    tn_queue_consumer_ready(c);
    CU_ASSERT_EQUAL(s.n, 2);
    CU_ASSERT_EQUAL(s.count[0], 1); /* a refusal is not a delivery */
    tn_queue_detach(c);
    tn_queue_free(q);
}

static int resumed;
static void
on_resume(tn_flow *f)
{
    (void)f;
    resumed++;
}

static void
test_limits_and_flow(void)
{
    tn_queue *q = tn_queue_new(4, 6);
    tn_flow f;
    tn_flow_init(&f, on_resume);
    resumed = 0;
    for (int i = 0; i < 4; i++)
        push(q, "m", true);
    CU_ASSERT_TRUE(tn_queue_is_congested(q));
    CU_ASSERT_EQUAL(tn_queue_behind(q), 1);
    tn_message *m = msg("zero");
    /* Congestion never drops (the broker decides); only the hard limit does. */
    CU_ASSERT_EQUAL(tn_queue_push(q, m, 0, false, 0), 0);
    CU_ASSERT_EQUAL(tn_queue_push(q, m, 1, true, 0), 0);          /* accepted past high */
    CU_ASSERT_EQUAL(tn_queue_push(q, m, 1, true, 0), TN_ETOOBIG); /* hard */
    CU_ASSERT_EQUAL(tn_queue_dropped(q), 1);
    tn_message_unref(m);
    tn_queue_wait(q, &f);
    tn_queue_wait(q, &f); /* once per queue */
    CU_ASSERT_EQUAL(f.blocked, 1);
    sink s = {0};
    tn_consumer *c = tn_queue_attach(q, &sink_ops, &s, 3); /* depth 6 -> 3: > high/2 */
    CU_ASSERT_EQUAL(resumed, 0);
    CU_ASSERT_EQUAL(tn_queue_behind(q), 1);
    tn_queue_ack(s.got[0]); /* depth 2 = high/2: resumed, the episode is over */
    CU_ASSERT_EQUAL(resumed, 1);
    CU_ASSERT_EQUAL(f.blocked, 0);
    CU_ASSERT_EQUAL(tn_queue_behind(q), 0);
    tn_queue_detach(c);
    CU_ASSERT_EQUAL(tn_queue_depth(q), 4);  /* its unacked ones came back: a new episode */
    CU_ASSERT_EQUAL(tn_queue_behind(q), 0); /* requeues do not start one, pushes do */
    push(q, "m", true);
    CU_ASSERT_EQUAL(tn_queue_behind(q), 2);
    tn_queue_free(q);
}

/* Every event that removes a producer's reason to wait resumes it [issue 19]. */
static void
test_every_way_out_resumes_producers(void)
{
    tn_flow f;
    tn_flow_init(&f, on_resume);

    /* The queue is freed (a clean session goes away). */
    tn_queue *q = tn_queue_new(2, 0);
    push(q, "a", true);
    push(q, "b", true);
    tn_queue_wait(q, &f);
    CU_ASSERT_EQUAL(f.blocked, 1);
    resumed = 0;
    tn_queue_free(q);
    CU_ASSERT_EQUAL(f.blocked, 0);
    CU_ASSERT_EQUAL(resumed, 1);

    /* Limits raised past the depth. */
    q = tn_queue_new(2, 0);
    push(q, "a", true);
    push(q, "b", true);
    tn_queue_wait(q, &f);
    resumed = 0;
    tn_queue_set_limits(q, 100, 0);
    CU_ASSERT_EQUAL(resumed, 1);
    CU_ASSERT_EQUAL(tn_queue_behind(q), 0);
    /* ... and lowered again: nobody is resumed twice, nobody waits without congestion. */
    tn_queue_set_limits(q, 2, 0);
    tn_queue_wait(q, &f);
    CU_ASSERT_EQUAL(f.blocked, 1);

    /* Woken on purpose (the consumer went offline or is slow), still congested. */
    resumed = 0;
    tn_queue_wake(q);
    CU_ASSERT_EQUAL(resumed, 1);
    CU_ASSERT_EQUAL(f.blocked, 0);
    CU_ASSERT_TRUE(tn_queue_is_congested(q));

    /* Emptied by drops (journal replay acks, purges). */
    tn_queue_wait(q, &f);
    resumed = 0;
    CU_ASSERT_TRUE(tn_queue_drop(q, tn_queue_first(q)->msg->id));
    CU_ASSERT_EQUAL(resumed, 1);
    CU_ASSERT_EQUAL(f.blocked, 0);
    tn_queue_free(q);

    /* A producer waiting on two queues resumes only once both let it go. */
    tn_queue *q1 = tn_queue_new(1, 0), *q2 = tn_queue_new(1, 0);
    push(q1, "a", true);
    push(q2, "b", true);
    tn_queue_wait(q1, &f);
    tn_queue_wait(q2, &f);
    resumed = 0;
    tn_queue_free(q1);
    CU_ASSERT_EQUAL(resumed, 0);
    CU_ASSERT_EQUAL(f.blocked, 1);
    tn_queue_wake(q2);
    CU_ASSERT_EQUAL(resumed, 1);
    tn_queue_free(q2);
    tn_flow_fini(&f);
}

static void
test_flow_fini_and_free_with_waiters(void)
{
    tn_queue *q1 = tn_queue_new(1, 0), *q2 = tn_queue_new(1, 0);
    push(q1, "a", true);
    push(q2, "b", true);
    tn_flow f, g;
    tn_flow_init(&f, on_resume);
    tn_flow_init(&g, on_resume);
    tn_queue_wait(q1, &f);
    tn_queue_wait(q2, &f);
    tn_queue_wait(q1, &g);
    CU_ASSERT_EQUAL(f.blocked, 2);
    tn_flow_fini(&f);
    CU_ASSERT_EQUAL(f.blocked, 0);
    resumed = 0;
    tn_queue_free(q1); /* g has nothing left to wait for: resumed */
    CU_ASSERT_EQUAL(g.blocked, 0);
    CU_ASSERT_EQUAL(resumed, 1);
    tn_queue_free(q2);
}

/* A pager over an array of messages "0".."N-1" (id i+1); `busy` answers TN_EAGAIN. */
typedef struct {
    tn_message *m[512];
    int loads;
    bool busy;
} disk;

static int
disk_load(void *ctx, const tn_paged *p, tn_message **out)
{
    disk *d = ctx;
    if (d->busy)
        return TN_EAGAIN;
    d->loads++;
    if (p->seg == 999)
        return TN_ENOENT; /* gone from disk */
    *out = tn_message_ref(d->m[p->id - 1]);
    return 0;
}

static const tn_pager_ops disk_ops = {disk_load};

static void
test_paging_keeps_order_and_memory_bound(void)
{
    disk dk = {0};
    char buf[16];
    for (int i = 0; i < 512; i++) {
        snprintf(buf, sizeof buf, "%d", i);
        dk.m[i] = msg(buf);
        dk.m[i]->id = (uint64_t)i + 1;
    }
    tn_queue *q = tn_queue_new(0, 400);
    uint64_t per = sizeof(tn_delivery) + tn_message_size(dk.m[0]);
    tn_queue_set_pager(q, &disk_ops, &dk, 10 * per);
    for (int i = 0; i < 400; i++) {
        tn_paged p = {.id = (uint64_t)i + 1, .seg = 1, .off = 0, .size = 100, .qos = 1};
        /* half given in memory, half to be loaded */
        CU_ASSERT_EQUAL(tn_queue_push_ref(q, i % 2 ? dk.m[i] : NULL, &p), 0);
    }
    tn_paged extra = {.id = 401, .seg = 1, .size = 100, .qos = 1};
    CU_ASSERT_EQUAL(tn_queue_push_ref(q, dk.m[400], &extra), TN_ETOOBIG); /* hard limit */
    CU_ASSERT_EQUAL(tn_queue_depth(q), 400);
    CU_ASSERT_TRUE(tn_queue_paged(q) >= 388); /* only ~10 in memory */
    CU_ASSERT_EQUAL(tn_queue_paged_bytes(q), tn_queue_paged(q) * 100ull);
    /* Replay acks: drop a paged one in the middle and the first paged one. */
    uint32_t paged = tn_queue_paged(q);
    CU_ASSERT_TRUE(tn_queue_drop(q, 200));
    CU_ASSERT_TRUE(tn_queue_drop(q, 400 - paged + 1));
    CU_ASSERT_FALSE(tn_queue_drop(q, 200));
    CU_ASSERT_EQUAL(tn_queue_paged(q), paged - 2);
    /* Nothing is loaded without a consumer. */
    int loads = dk.loads;
    sink s = {0};
    dk.busy = true;
    tn_consumer *c = tn_queue_attach(q, &sink_ops, &s, 64);
    int expect = 1, taken = 0;
    while (taken < 398) {
        CU_ASSERT_FATAL(s.n > 0 || dk.busy);
        if (s.n == 0) { /* the disk was busy: retry */
            dk.busy = false;
            tn_queue_refill(q);
            continue;
        }
        for (int i = 0; i < s.n; i++, expect++, taken++) {
            if (expect == 200 || expect == (int)(400 - paged + 1))
                expect++;
            CU_ASSERT_EQUAL(s.got[i]->msg->id, (uint64_t)expect);
        }
        int n = s.n;
        s.n = 0;
        for (int i = 0; i < n; i++)
            tn_queue_ack(s.got[i]);
        CU_ASSERT_TRUE(tn_queue_depth(q) + tn_queue_inflight(q) == 398u - (unsigned)taken);
    }
    CU_ASSERT_TRUE(dk.loads > loads);
    CU_ASSERT_EQUAL(tn_queue_paged(q), 0);
    CU_ASSERT_EQUAL(tn_queue_depth(q), 0);
    /* A reference whose record is gone is dropped, the rest go on. */
    tn_paged gone = {.id = 1, .seg = 999, .size = 100, .qos = 1};
    tn_paged ok = {.id = 2, .seg = 1, .size = 100, .qos = 1};
    tn_queue_set_credit(c, 0);
    for (int i = 0; i < 12; i++)
        tn_queue_push_ref(q, dk.m[2], &ok); /* fill memory */
    tn_queue_push_ref(q, NULL, &gone);
    tn_queue_push_ref(q, NULL, &ok);
    CU_ASSERT_EQUAL(tn_queue_paged(q), 4);
    tn_queue_set_credit(c, 64);
    CU_ASSERT_EQUAL(s.n, 13);
    tn_queue_detach(c);
    tn_queue_free(q);
    for (int i = 0; i < 512; i++)
        tn_message_unref(dk.m[i]);
}

int
main(void)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("queue", NULL, NULL);
    CU_add_test(s, "fifo_and_credit", test_fifo_and_credit);
    CU_add_test(s, "no_ack_no_credit", test_no_ack_deliveries_need_no_credit);
    CU_add_test(s, "competing_consumers", test_competing_consumers_round_robin);
    CU_add_test(s, "detach_requeues_in_order", test_detach_requeues_in_order_keeping_tags);
    CU_add_test(s, "release_redelivers_first", test_release_redelivers_first);
    CU_add_test(s, "paused_consumer", test_paused_consumer);
    CU_add_test(s, "limits_and_flow", test_limits_and_flow);
    CU_add_test(s, "flow_fini_and_free", test_flow_fini_and_free_with_waiters);
    CU_add_test(s, "every_way_out_resumes", test_every_way_out_resumes_producers);
    CU_add_test(s, "paging", test_paging_keeps_order_and_memory_bound);
    return tn_test_run();
}
