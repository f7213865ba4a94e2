#include "core/message/message.h"

#include "core/base/base.h"

#include <stdlib.h>
#include <string.h>

tn_message *
tn_message_new(const char *name, size_t name_len, const void *payload, size_t payload_len,
               uint8_t qos, bool retain)
{
    if (name_len > UINT32_MAX || payload_len > UINT32_MAX)
        return NULL;
    tn_message *m = malloc(sizeof *m + name_len + 1 + payload_len);
    if (!m)
        return NULL;
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
        free(m);
}

size_t
tn_message_size(const tn_message *m)
{
    return sizeof *m + m->name_len + 1 + m->payload_len;
}
