#include "protocols/io.h"

#include <stdlib.h>
#include <string.h>

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
