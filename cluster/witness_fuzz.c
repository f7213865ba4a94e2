/*
 * Fuzz target for the witness' state machine. The input is a sequence of lines split on "\n";
 * the first byte of each line steers the run and the rest is the request:
 *   bits 0-1: the connection it comes on (1-4)
 *   bits 2-4: how far the clock moves first, in steps of 250 ms (lease 1000 ms)
 *   bit 7:    that connection closes first (tn_witness_conn_closed)
 * Invariants (failures abort): the epoch never decreases, and changes only by a GRANT, to
 * exactly the old epoch + 1, after which the asker holds a live lease on its connection with no
 * standby; replies are one line that fits; ERR exactly when -1 is returned; `changed` exactly
 * when the durable part changed; a live lease has a holder and a connection; an OK to RENEW
 * goes only to the live holder.
 */
#include "cluster/cluster.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define LEASE_MS 1000
#define REPLY_LEN 128

static bool
starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The node a request names (its second field), terminated, or "" when there is none. */
static void
asker(const char *line, size_t len, char *out, size_t outlen)
{
    const char *sp = memchr(line, ' ', len);
    out[0] = '\0';
    if (sp == NULL)
        return;
    size_t start = (size_t)(sp + 1 - line), end = start;
    while (end < len && line[end] != ' ')
        end++;
    if (end - start < outlen) {
        memcpy(out, line + start, end - start);
        out[end - start] = '\0';
    }
}

static void
one(tn_witness_state *st, uint64_t conn, uint64_t now, const char *line, size_t len)
{
    char reply[REPLY_LEN], who[300];
    bool changed = true;
    tn_witness_state before = *st;

    memset(reply, 0x55, sizeof reply);
    int rc = tn_witness_handle(st, LEASE_MS, conn, now, line, len, reply, sizeof reply, &changed);
    size_t rlen = strnlen(reply, sizeof reply);
    CHECK(rlen > 0 && rlen < sizeof reply);
    CHECK(reply[rlen - 1] == '\n' && memchr(reply, '\n', rlen) == reply + rlen - 1);
    CHECK((rc == -1) == starts(reply, "ERR "));
    CHECK(rc == 0 || rc == -1);

    bool durable = st->epoch != before.epoch || strcmp(st->holder, before.holder) != 0 ||
                   strcmp(st->standby, before.standby) != 0;
    CHECK(changed == durable);
    CHECK(st->epoch >= before.epoch);
    CHECK(st->holder[sizeof st->holder - 1] == '\0' && st->standby[sizeof st->standby - 1] == 0);
    if (st->live)
        CHECK(st->holder[0] != '\0' && st->conn != 0 && st->expires > now);
    CHECK(st->epoch == 0 ? st->holder[0] == '\0' : st->holder[0] != '\0');
    if (st->standby[0])
        CHECK(strcmp(st->standby, st->holder) != 0);

    asker(line, len, who, sizeof who);
    if (starts(reply, "GRANT ")) {
        CHECK(st->epoch == before.epoch + 1);
        CHECK(strcmp(st->holder, who) == 0 && st->standby[0] == '\0');
        CHECK(st->live && st->conn == conn);
        /* Only a free lease is granted, and only to whom the rules allow. */
        CHECK(!before.live || now >= before.expires);
        CHECK(before.holder[0] == '\0' || strcmp(before.holder, who) == 0 ||
              strcmp(before.standby, who) == 0);
    } else {
        CHECK(st->epoch == before.epoch);
        if (strcmp(st->holder, before.holder) != 0)
            abort();
    }
    if (starts(reply, "OK ") && starts(line, "RENEW "))
        CHECK(st->live && strcmp(st->holder, who) == 0 && st->conn == conn);
    if (starts(reply, "BUSY "))
        CHECK(st->live);
    if (starts(reply, "BEHIND "))
        CHECK(!st->live);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tn_witness_state st;
    uint64_t now = 1;
    size_t start = 0;

    memset(&st, 0, sizeof st);
    while (start < size) {
        const uint8_t *nl = memchr(data + start, '\n', size - start);
        size_t end = nl ? (size_t)(nl - data) : size;
        if (end > start) {
            uint8_t ctl = data[start];
            uint64_t conn = 1 + (ctl & 3u);
            now += (uint64_t)((ctl >> 2) & 7u) * 250u * 1000000u;
            if (ctl & 0x80u) {
                bool was = st.live && st.conn == conn;
                tn_witness_conn_closed(&st, conn);
                if (was)
                    CHECK(!st.live);
            }
            /* An exact-size copy, so a read past the line's end is caught. */
            size_t len = end - start - 1;
            char *line = malloc(len ? len : 1);
            CHECK(line != NULL);
            memcpy(line, data + start + 1, len);
            one(&st, conn, now, line, len);
            free(line);
        }
        start = end + 1;
    }
    return 0;
}
