/*
 * Fuzz target for the broker's journal records (persist.c): the input is a list of records,
 * each u8 type (1..15) + u8 length + that many payload bytes, appended to a fresh journal with
 * valid CRCs, so the record parser sees arbitrary well-framed contents: bad lengths inside,
 * unknown sessions, positions pointing anywhere. The broker must recover, and every recovered
 * session must drain (reading paged messages back) without crashing, hanging or leaking.
 */
#include "core/broker/broker.h"

#include "core/base/base.h"
#include "core/store/store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
nop(void *arg)
{
    (void)arg;
}

static int
skip(void *arg, uint64_t lsn, uint16_t type, const uint8_t *p, uint32_t len)
{
    (void)arg;
    (void)lsn;
    (void)type;
    (void)p;
    (void)len;
    return 0;
}

static int
take_all(void *ctx, tn_delivery *d)
{
    (void)d;
    ++*(int *)ctx;
    return 0;
}

static const tn_consumer_ops drain_ops = {.deliver = take_all};

static int
refuse(void *ctx, tn_delivery *d)
{
    (void)ctx;
    (void)d;
    return TN_EAGAIN;
}

static void
kick(void *ctx)
{
    (void)ctx;
}

static const tn_session_ops session_ops = {refuse, kick};

static tn_store *
open_store(const char *dir)
{
    tn_store_conf c = {.dir = dir, .sync = TN_SYNC_NEVER, .max_record = 4096, .notify = nop};
    tn_store *st = NULL;
    char err[256];
    if (tn_store_open(&c, &st, err, sizeof err) != 0)
        return NULL;
    return st;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tn_log_set_level(TN_LOG_ERROR);
    char dir[] = "/tmp/tern-replay-fuzz-XXXXXX";
    if (!mkdtemp(dir))
        return 0;
    tn_store *st = open_store(dir);
    char err[256];
    if (st && tn_store_replay(st, skip, NULL, err, sizeof err) == 0 && tn_store_start(st) == 0) {
        uint64_t lsn;
        for (size_t off = 0; off + 2 <= size;) {
            uint16_t type = (uint16_t)(data[off] % 16);
            size_t len = data[off + 1];
            off += 2;
            if (len > size - off)
                len = size - off;
            tn_store_append(st, type, data + off, (uint32_t)len, &lsn);
            off += len;
        }
    }
    tn_store_close(st);

    tn_broker_limits bl = {.max_inflight = 4,
                           .max_queued = 8,
                           .max_offline = 64,
                           .max_queue_memory = 512,
                           .compact_bytes = 4096};
    tn_broker *b = tn_broker_new(&bl);
    st = open_store(dir);
    if (st) {
        tn_broker_attach_store(b, st);
        if (tn_broker_recover(b, err, sizeof err) == 0 && tn_store_start(st) == 0) {
            /* Drain every named queue the journal made (their names are in the records). */
            for (size_t off = 0; off + 2 <= size;) {
                size_t len = data[off + 1];
                off += 2;
                if (len > size - off)
                    len = size - off;
                if (len > 2) {
                    size_t n = data[off] | (size_t)data[off + 1] << 8;
                    if (n <= len - 2 && n > 3 && memcmp(data + off + 2, "\x01q:", 3) == 0) {
                        tn_session *q =
                            tn_broker_queue_find(b, (const char *)data + off + 5, n - 3);
                        if (q) {
                            int got = 0;
                            tn_consumer *k =
                                tn_queue_attach(tn_session_queue(q), &drain_ops, &got, 64);
                            tn_queue_detach(k);
                        }
                    }
                }
                off += len;
            }
            /* And resume every session the records name, then let it go again. */
            for (size_t off = 0; off + 2 <= size;) {
                size_t len = data[off + 1];
                off += 2;
                if (len > size - off)
                    len = size - off;
                if (len > 2) {
                    size_t n = data[off] | (size_t)data[off + 1] << 8;
                    if (n <= len - 2 && n > 0 && data[off + 2] != 1) {
                        tn_session *s;
                        bool present;
                        tn_broker_session_open(b, (const char *)data + off + 2, n, false,
                                               &session_ops, NULL, &s, &present);
                        tn_session_start(s);
                        tn_session_detach(s);
                    }
                }
                off += len;
            }
            tn_broker_maintain(b);
        }
    }
    tn_store_close(st);
    tn_broker_free(b);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 0;
    return 0;
}
