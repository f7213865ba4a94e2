#include "core/message/message.h"

#include "core/base/base.h"

#include <stdlib.h>
#include <string.h>

/*
 * Small messages (most MQTT traffic) come from a per-thread free list of fixed-size blocks, so
 * publishing allocates nothing once warm. Sanitizer builds use malloc for every message, so a
 * use after free is still caught.
 */
#define SMALL_BLOCK 256
#define SMALL_KEEP 4096 /* blocks kept free at most (1 MiB) */
#define USE_FREE_LIST (!TN_SANITIZED)

typedef struct free_block {
    struct free_block *next;
} free_block;

static _Thread_local free_block *free_small;
static _Thread_local unsigned n_free_small;

static void *
block_alloc(size_t size, bool *small)
{
    *small = USE_FREE_LIST && size <= SMALL_BLOCK;
    if (!*small)
        return malloc(size);
    free_block *b = free_small;
    if (b) {
        free_small = b->next;
        n_free_small--;
        return b;
    }
    return malloc(SMALL_BLOCK);
}

static void
block_free(void *p, bool small)
{
    if (small && n_free_small < SMALL_KEEP) {
        free_block *b = p;
        b->next = free_small;
        free_small = b;
        n_free_small++;
        return;
    }
    free(p);
}

tn_message *
tn_message_new(const char *name, size_t name_len, const void *payload, size_t payload_len,
               uint8_t qos, bool retain)
{
    if (name_len > UINT32_MAX || payload_len > UINT32_MAX)
        return NULL;
    bool small;
    tn_message *m = block_alloc(sizeof *m + name_len + 1 + payload_len, &small);
    if (!m)
        return NULL;
    m->small = small;
    char *n = (char *)(m + 1);
    memcpy(n, name, name_len);
    n[name_len] = '\0';
    uint8_t *p = (uint8_t *)n + name_len + 1;
    if (payload_len)
        memcpy(p, payload, payload_len);
    m->refs = 1;
    m->qos = qos;
    m->retain = retain;
    m->persistent = false;
    m->name_len = (uint32_t)name_len;
    m->payload_len = (uint32_t)payload_len;
    m->id = 0;
    m->name = n;
    m->payload = p;
    return m;
}

tn_message *
tn_message_ref(tn_message *m)
{
    tn_assert(m->refs > 0);
    m->refs++;
    return m;
}

void
tn_message_unref(tn_message *m)
{
    if (!m)
        return;
    tn_assert(m->refs > 0);
    if (--m->refs == 0)
        block_free(m, m->small);
}

size_t
tn_message_size(const tn_message *m)
{
    return sizeof *m + m->name_len + 1 + m->payload_len;
}
