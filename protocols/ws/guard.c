/* The masking check libwebsockets 4.1 does not make: see guard.h.
 *
 * How ws sees the bytes libwebsockets reads: libwebsockets reads a ws:// socket with recv()
 * and a wss:// one with SSL_read() (lib/core-net/output.c, lib/tls/openssl/openssl-ssl.c).
 * This file defines both; a program that links it (ternd) resolves libwebsockets' calls to
 * them (the executable comes first in the dynamic symbol lookup), and they call the real ones
 * (dlsym RTLD_NEXT) and show what was read to the follower of that socket, if it has one.
 * Every other socket costs one comparison: nothing else in ternd calls recv() or SSL_read()
 * (libuv reads with read(), protocols/tls with SSL_read_ex()). The table is the loop
 * thread's: a call on any other thread (a test's client) only passes through.
 */
#include "protocols/ws/guard.h"

#include <dlfcn.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core/base/base.h"

enum {
    G_START,   /* before the request line (empty lines skipped) */
    G_HTTP,    /* in the request's header lines */
    G_HDR,     /* collecting a frame header */
    G_PAYLOAD, /* skipping a frame's payload */
    G_DONE,    /* an unmasked frame was seen */
};

void
tn_ws_guard_init(tn_ws_guard *g)
{
    memset(g, 0, sizeof *g);
    g->state = G_START;
}

bool
tn_ws_guard_in_frames(const tn_ws_guard *g)
{
    return g->state >= G_HDR;
}

static void
frame_start(tn_ws_guard *g)
{
    g->state = G_HDR;
    g->have = 0;
    g->need = 2;
}

bool
tn_ws_guard_feed(tn_ws_guard *g, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        switch (g->state) {
        case G_START:
        case G_HTTP: {
            /* Lines end with LF; a CR before it is not counted (libwebsockets takes a bare
             * LF too). The request ends with its first empty line. */
            uint8_t c = p[i++];
            if (c == '\n') {
                if (g->state == G_HTTP && g->line == 0)
                    frame_start(g);
                g->line = 0;
            } else if (c != '\r') {
                g->state = G_HTTP;
                if (g->line < UINT32_MAX)
                    g->line++;
            }
            break;
        }
        case G_HDR:
            g->hdr[g->have++] = p[i++];
            if (g->have == 2) {
                if (!(g->hdr[1] & 0x80)) {
                    g->unmasked = true;
                    g->state = G_DONE;
                    return false;
                }
                uint8_t len7 = g->hdr[1] & 0x7f;
                g->need = (uint8_t)(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4);
            }
            if (g->have == g->need) {
                uint64_t len = g->hdr[1] & 0x7f;
                if (len >= 126) {
                    int bytes = len == 126 ? 2 : 8;
                    len = 0;
                    for (int k = 0; k < bytes; k++)
                        len = len << 8 | g->hdr[2 + k];
                }
                g->skip = len;
                if (len)
                    g->state = G_PAYLOAD;
                else
                    frame_start(g);
            }
            break;
        case G_PAYLOAD: {
            size_t take = n - i;
            if (take > g->skip)
                take = (size_t)g->skip;
            i += take;
            g->skip -= take;
            if (!g->skip)
                frame_start(g);
            break;
        }
        default: /* G_DONE */
            return false;
        }
    }
    return !g->unmasked;
}

/* ---- the sockets followed ---- */

typedef struct watched {
    tn_ws_guard g;
    void *owner;   /* set once the handshake is done */
    bool reported; /* returned by tn_ws_guard_take */
} watched;

static watched **tab; /* by fd */
static size_t tab_len;
static size_t n_watched; /* read by any thread (atomic), written by the loop thread */
static pthread_t loop_thread;
static int *pending; /* fds that sent an unmasked frame, not yet taken */
static size_t n_pending, pending_cap;

static watched *
lookup(int fd)
{
    return fd >= 0 && (size_t)fd < tab_len ? tab[fd] : NULL;
}

void
tn_ws_guard_watch(int fd)
{
    if (fd < 0)
        return;
    if (!__atomic_load_n(&n_watched, __ATOMIC_RELAXED))
        loop_thread = pthread_self();
    if ((size_t)fd >= tab_len) {
        size_t len = tab_len ? tab_len : 256;
        while (len <= (size_t)fd)
            len *= 2;
        tab = tn_xrealloc(tab, len * sizeof *tab);
        memset(tab + tab_len, 0, (len - tab_len) * sizeof *tab);
        tab_len = len;
    }
    if (!tab[fd]) {
        tab[fd] = tn_xcalloc(1, sizeof *tab[fd]);
        __atomic_store_n(&n_watched, n_watched + 1, __ATOMIC_RELEASE);
    }
    memset(tab[fd], 0, sizeof *tab[fd]);
    tn_ws_guard_init(&tab[fd]->g);
}

void
tn_ws_guard_forget(int fd)
{
    watched *w = lookup(fd);
    if (!w)
        return;
    free(w);
    tab[fd] = NULL;
    __atomic_store_n(&n_watched, n_watched - 1, __ATOMIC_RELEASE);
    if (n_watched == 0) {
        /* Nothing followed: give the tables back (a broker whose WebSocket clients are gone,
         * and a clean exit). */
        free(tab);
        tab = NULL;
        tab_len = 0;
        free(pending);
        pending = NULL;
        n_pending = pending_cap = 0;
    }
}

static void
push_pending(int fd)
{
    if (n_pending == pending_cap) {
        pending_cap = pending_cap ? pending_cap * 2 : 16;
        pending = tn_xrealloc(pending, pending_cap * sizeof *pending);
    }
    pending[n_pending++] = fd;
}

bool
tn_ws_guard_arm(int fd, void *owner)
{
    watched *w = lookup(fd);
    if (!w)
        return false;
    if (!tn_ws_guard_in_frames(&w->g)) {
        tn_ws_guard_forget(fd);
        return false;
    }
    w->owner = owner;
    if (w->g.unmasked)
        push_pending(fd);
    return true;
}

bool
tn_ws_guard_unmasked(int fd)
{
    watched *w = lookup(fd);
    return w && w->g.unmasked;
}

void *
tn_ws_guard_take(void)
{
    while (n_pending) {
        watched *w = lookup(pending[--n_pending]);
        if (w && w->owner && w->g.unmasked && !w->reported) {
            w->reported = true;
            return w->owner;
        }
    }
    return NULL;
}

static void
saw(int fd, const void *p, size_t n)
{
    if (!__atomic_load_n(&n_watched, __ATOMIC_ACQUIRE) ||
        !pthread_equal(pthread_self(), loop_thread))
        return;
    watched *w = lookup(fd);
    if (!w || w->g.unmasked)
        return;
    if (!tn_ws_guard_feed(&w->g, p, n) && w->owner)
        push_pending(fd);
}

/* ---- what libwebsockets calls ---- */

typedef ssize_t (*recv_fn)(int, void *, size_t, int);
typedef int (*ssl_read_fn)(SSL *, void *, int);

static void *
real(void **slot, const char *name)
{
    void *f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!f) {
        f = dlsym(RTLD_NEXT, name);
        if (!f)
            abort(); /* no libc or libssl behind us: nothing can work */
        __atomic_store_n(slot, f, __ATOMIC_RELEASE);
    }
    return f;
}

ssize_t
recv(int fd, void *buf, size_t len, int flags)
{
    static void *fn;
    ssize_t n = ((recv_fn)real(&fn, "recv"))(fd, buf, len, flags);
    if (n > 0 && !(flags & MSG_PEEK))
        saw(fd, buf, (size_t)n);
    return n;
}

int
SSL_read(SSL *ssl, void *buf, int num)
{
    static void *fn;
    int n = ((ssl_read_fn)real(&fn, "SSL_read"))(ssl, buf, num);
    if (n > 0 && __atomic_load_n(&n_watched, __ATOMIC_RELAXED))
        saw(SSL_get_fd(ssl), buf, (size_t)n);
    return n;
}
