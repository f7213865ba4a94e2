/* The budget of bytes held by messages still arriving (tn_intake, see broker.h). */
#include "core/broker/broker_int.h"

static void
unlink_intake(tn_broker *b, tn_intake *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        b->intake_head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        b->intake_tail = t->prev;
    t->prev = t->next = NULL;
}

/* Whether n more bytes fit for t: within the budget with nobody older waiting; or t is the
 * oldest holder (it grows: holders never wait for each other); or nothing at all is held (one
 * message larger than the budget). */
static bool
fits(const tn_broker *b, const tn_intake *t, uint64_t n)
{
    if (b->limits.max_incoming == 0)
        return true;
    if (t == b->intake_head && (t->held > 0 || b->intake_used == 0))
        return true;
    if (b->intake_used + n > b->limits.max_incoming)
        return false;
    for (const tn_intake *x = b->intake_head; x && x != t; x = x->next)
        if (x->waiting)
            return false;
    return true;
}

static void
grant(tn_broker *b, tn_intake *t, uint64_t n)
{
    b->intake_used += n;
    t->held += n;
    b->stats.incoming_bytes = b->intake_used;
}

int
tn_intake_reserve(tn_broker *b, tn_intake *t, uint64_t n)
{
    tn_assert(!t->waiting);
    if (t->seq == 0) {
        t->seq = ++b->intake_seq;
        t->prev = b->intake_tail;
        t->next = NULL;
        if (b->intake_tail)
            b->intake_tail->next = t;
        else
            b->intake_head = t;
        b->intake_tail = t;
    }
    if (fits(b, t, n)) {
        grant(b, t, n);
        return 0;
    }
    t->waiting = true;
    t->want = n;
    b->stats.incoming_waiting++;
    return TN_EAGAIN;
}

/* Grants waiters that fit now, strictly oldest first: a large waiter is not overtaken by smaller
 * later ones. */
static void
grant_waiters(tn_broker *b)
{
    for (tn_intake *x = b->intake_head, *next; x; x = next) {
        next = x->next;
        if (!x->waiting)
            continue;
        if (!fits(b, x, x->want))
            break;
        x->waiting = false;
        b->stats.incoming_waiting--;
        grant(b, x, x->want);
        x->want = 0;
        x->resume(x);
    }
}

static void
give_back(tn_broker *b, uint64_t n)
{
    tn_assert(b->intake_used >= n);
    b->intake_used -= n;
    b->stats.incoming_bytes = b->intake_used;
}

static void
leave(tn_broker *b, tn_intake *t, uint64_t keep)
{
    if (t->seq == 0)
        return;
    give_back(b, t->held - keep);
    if (t->waiting)
        b->stats.incoming_waiting--;
    unlink_intake(b, t);
    t->held = t->want = t->seq = 0;
    t->waiting = false;
    grant_waiters(b);
}

void
tn_intake_release(tn_broker *b, tn_intake *t)
{
    leave(b, t, 0);
}

static void
charged_freed(tn_message_owner *o, const tn_message *m)
{
    tn_broker *b = TN_CONTAINER_OF(o, tn_broker, large_owner);
    give_back(b, m->payload_len);
    grant_waiters(b);
}

void
tn_intake_charge(tn_broker *b, tn_intake *t, tn_message *m)
{
    uint64_t keep = m->payload_len;
    if (t->seq == 0 || t->held < keep || m->owner) {
        tn_intake_release(b, t);
        return;
    }
    b->large_owner.freed = charged_freed;
    m->owner = &b->large_owner;
    leave(b, t, keep);
}

void
tn_broker__charge(tn_broker *b, tn_message *m)
{
    if (m->owner)
        return;
    b->large_owner.freed = charged_freed;
    m->owner = &b->large_owner;
    b->intake_used += m->payload_len;
    b->stats.incoming_bytes = b->intake_used;
}
