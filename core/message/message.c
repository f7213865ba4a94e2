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
    return tn_message_new_props(name, name_len, NULL, 0, payload, payload_len, qos, retain);
}

tn_message *
tn_message_new_props(const char *name, size_t name_len, const void *props, size_t props_len,
                     const void *payload, size_t payload_len, uint8_t qos, bool retain)
{
    uint8_t *p;
    tn_message *m =
        tn_message_alloc(name, name_len, props, props_len, payload_len, qos, retain, &p);
    if (m && payload_len)
        memcpy(p, payload, payload_len);
    return m;
}

tn_message *
tn_message_alloc(const char *name, size_t name_len, const void *props, size_t props_len,
                 size_t payload_len, uint8_t qos, bool retain, uint8_t **payload)
{
    if (name_len > UINT32_MAX || payload_len > UINT32_MAX || props_len > UINT16_MAX)
        return NULL;
    bool small;
    tn_message *m = block_alloc(sizeof *m + name_len + 1 + props_len + payload_len, &small);
    if (!m)
        return NULL;
    m->small = small;
    char *n = (char *)(m + 1);
    memcpy(n, name, name_len);
    n[name_len] = '\0';
    uint8_t *pr = (uint8_t *)n + name_len + 1;
    if (props_len)
        memcpy(pr, props, props_len);
    m->props = pr;
    m->props_len = (uint32_t)props_len;
    uint8_t *p = pr + props_len;
    *payload = p;
    m->refs = 1;
    m->qos = qos;
    m->retain = retain;
    m->persistent = false;
    m->name_len = (uint32_t)name_len;
    m->payload_len = (uint32_t)payload_len;
    m->id = 0;
    m->owner = NULL;
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
    if (--m->refs == 0) {
        if (m->owner)
            tn_message_uncharge(m);
        block_free(m, m->small);
    }
}

void
tn_message_uncharge(tn_message *m)
{
    tn_message_owner *o = m->owner;
    if (o) {
        m->owner = NULL;
        o->freed(o, m);
    }
}

size_t
tn_message_size(const tn_message *m)
{
    return sizeof *m + m->name_len + 1 + m->props_len + m->payload_len;
}

int
tn_props_add(tn_buf *b, const char *key, size_t klen, const char *val, size_t vlen)
{
    if (klen > UINT16_MAX || vlen > UINT16_MAX || b->len + 4 + klen + vlen > UINT16_MAX)
        return TN_ETOOBIG;
    uint16_t k = (uint16_t)klen, v = (uint16_t)vlen;
    if (tn_buf_append(b, &k, 2) || tn_buf_append(b, key, klen) || tn_buf_append(b, &v, 2) ||
        tn_buf_append(b, val, vlen))
        return TN_ETOOBIG;
    return 0;
}

bool
tn_message_prop_next(const tn_message *m, size_t *off, const char **key, size_t *klen,
                     const char **val, size_t *vlen)
{
    uint16_t n;
    if (*off + 2 > m->props_len)
        return false;
    memcpy(&n, m->props + *off, 2);
    if (*off + 2 + n + 2 > m->props_len)
        return false;
    *key = (const char *)m->props + *off + 2;
    *klen = n;
    *off += 2 + (size_t)n;
    memcpy(&n, m->props + *off, 2);
    if (*off + 2 + n > m->props_len)
        return false;
    *val = (const char *)m->props + *off + 2;
    *vlen = n;
    *off += 2 + (size_t)n;
    return true;
}

const char *
tn_message_prop(const tn_message *m, const char *key, size_t *vlen)
{
    size_t off = 0, kl, vl, want = strlen(key);
    const char *k, *v;
    while (tn_message_prop_next(m, &off, &k, &kl, &v, &vl))
        if (kl == want && memcmp(k, key, kl) == 0) {
            if (vlen)
                *vlen = vl;
            return v;
        }
    return NULL;
}
