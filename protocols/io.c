#include "protocols/io.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uthash.h>

void
tn_orefs_add(tn_orefs *r, size_t at, const uint8_t *p, size_t n, void (*release)(void *owner),
             void *owner)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4;
        r->v = tn_xrealloc(r->v, r->cap * sizeof *r->v);
    }
    r->v[r->n++] = (tn_oref){at, p, n, release, owner};
    r->bytes += n;
}

void
tn_orefs_release(tn_orefs *r)
{
    for (size_t i = 0; i < r->n; i++)
        r->v[i].release(r->v[i].owner);
    free(r->v);
    r->v = NULL;
    r->n = r->cap = r->bytes = 0;
}

unsigned
tn_out_pieces(const tn_buf *buf, const tn_orefs *r, size_t skip, tn_piece *v, unsigned max,
              size_t *bytes)
{
    unsigned k = 0;
    size_t pos = 0; /* in buf */
    *bytes = 0;
    for (size_t i = 0; i <= r->n && k < max; i++) {
        size_t end = i < r->n ? r->v[i].at : buf->len;
        size_t len = end - pos; /* buf[pos..end) */
        if (skip >= len) {
            skip -= len;
        } else {
            v[k++] = (tn_piece){buf->data + pos + skip, len - skip};
            *bytes += len - skip;
            skip = 0;
        }
        pos = end;
        if (i == r->n || k == max)
            break;
        const tn_oref *o = &r->v[i];
        if (skip >= o->n) {
            skip -= o->n;
        } else {
            v[k++] = (tn_piece){o->p + skip, o->n - skip};
            *bytes += o->n - skip;
            skip = 0;
        }
    }
    return k;
}

size_t
tn_out_drop(tn_buf *buf, tn_orefs *r, size_t done)
{
    size_t left = done, from_buf = 0, passed = 0, pos = 0;
    /* Walk the stream: buf[pos..at) then reference i, for each i, then the rest of buf. */
    for (; passed <= r->n; passed++) {
        size_t end = passed < r->n ? r->v[passed].at : buf->len;
        if (left < end - pos) {
            from_buf += left;
            left = 0;
            break;
        }
        from_buf += end - pos;
        left -= end - pos;
        pos = end;
        if (passed == r->n || left < r->v[passed].n)
            break; /* stops in (or just before) reference `passed` */
        left -= r->v[passed].n;
    }
    for (size_t i = 0; i < passed; i++) {
        r->bytes -= r->v[i].n;
        r->v[i].release(r->v[i].owner);
    }
    if (passed && passed < r->n)
        memmove(r->v, r->v + passed, (r->n - passed) * sizeof *r->v);
    r->n -= passed;
    for (size_t i = 0; i < r->n; i++)
        r->v[i].at -= from_buf;
    tn_buf_consume(buf, from_buf);
    return left;
}

/* ---- connections per source address ---- */

typedef struct ipcount {
    uint8_t key[17]; /* family byte, then the address (4 or 16 bytes), zero-padded */
    uint32_t n;
    UT_hash_handle hh;
} ipcount;

struct tn_iplimit {
    uint32_t max;
    ipcount *by_ip;
};

tn_iplimit *
tn_iplimit_new(uint32_t max)
{
    if (!max)
        return NULL;
    tn_iplimit *l = tn_xcalloc(1, sizeof *l);
    l->max = max;
    return l;
}

void
tn_iplimit_free(tn_iplimit *l)
{
    if (!l)
        return;
    ipcount *e, *tmp;
    HASH_ITER(hh, l->by_ip, e, tmp)
    {
        HASH_DEL(l->by_ip, e);
        free(e);
    }
    free(l);
}

uint32_t
tn_iplimit_max(const tn_iplimit *l)
{
    return l ? l->max : 0;
}

static bool
ip_key(const struct sockaddr *sa, uint8_t key[17])
{
    memset(key, 0, 17);
    if (sa->sa_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            key[0] = 4;
            memcpy(key + 1, a->s6_addr + 12, 4);
        } else {
            key[0] = 6;
            memcpy(key + 1, a->s6_addr, 16);
        }
        return true;
    }
    return false;
}

bool
tn_iplimit_take(tn_iplimit *l, const struct sockaddr *sa)
{
    uint8_t key[17];
    if (!l || !ip_key(sa, key))
        return true;
    ipcount *e;
    HASH_FIND(hh, l->by_ip, key, sizeof key, e);
    if (!e) {
        e = tn_xcalloc(1, sizeof *e);
        memcpy(e->key, key, sizeof key);
        HASH_ADD(hh, l->by_ip, key, sizeof e->key, e);
    }
    if (e->n >= l->max)
        return false;
    e->n++;
    return true;
}

void
tn_iplimit_give(tn_iplimit *l, const struct sockaddr *sa)
{
    uint8_t key[17];
    if (!l || !ip_key(sa, key))
        return;
    ipcount *e;
    HASH_FIND(hh, l->by_ip, key, sizeof key, e);
    if (e && e->n && --e->n == 0) {
        HASH_DEL(l->by_ip, e);
        free(e);
    }
}
