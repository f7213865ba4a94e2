/* protocols/ws/guard.h: the masking check libwebsockets 4.1 does not make (module-private).
 *
 * RFC 6455 5.1: a server MUST close the connection on a client frame that is not masked.
 * libwebsockets 4.1.6 (Debian 12) reads the mask bit, then takes the frame either way, and has
 * no call that shows the bit (upstream refuses unmasked frames since 2026-07, in no release
 * yet). So ws follows, per WebSocket socket, the very bytes libwebsockets reads (its recv()
 * on ws:// and SSL_read() on wss://, which guard.c sees first: see there): the HTTP request up
 * to its empty line, then each frame's header, skipping payloads by their length. The first
 * unmasked frame marks the socket; ws refuses what it carries and closes with 1002.
 *
 * The follower (tn_ws_guard) is sans-IO and fuzzed; the table of sockets is keyed by fd.
 */
#ifndef TERN_PROTOCOLS_WS_GUARD_H
#define TERN_PROTOCOLS_WS_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One direction of one connection: client to server. */
typedef struct tn_ws_guard {
    uint64_t skip;   /* payload bytes of the current frame still to come */
    uint32_t line;   /* HTTP: characters on the current header line (CR not counted) */
    uint8_t state;   /* G_* in guard.c */
    uint8_t have;    /* frame header bytes collected */
    uint8_t need;    /* frame header bytes this header has */
    uint8_t hdr[14]; /* the frame header so far */
    bool unmasked;   /* an unmasked frame was seen (final: nothing more is followed) */
} tn_ws_guard;

void tn_ws_guard_init(tn_ws_guard *g);

/* Follows n bytes the client sent, in order. Returns false once an unmasked frame has been
 * seen (this call or an earlier one). */
bool tn_ws_guard_feed(tn_ws_guard *g, const uint8_t *p, size_t n);

/* True once the HTTP request has ended: what follows is read as frames. */
bool tn_ws_guard_in_frames(const tn_ws_guard *g);

/* ---- the sockets followed (the loop thread only) ---- */

/* Start following fd (a socket libwebsockets has just accepted), from its first byte. */
void tn_ws_guard_watch(int fd);
/* Stop following fd. */
void tn_ws_guard_forget(int fd);
/* The handshake is done: `owner` is told of (tn_ws_guard_take) when fd sends an unmasked
 * frame. Returns false (and forgets fd) when what was followed cannot be frames (the request
 * did not end where a WebSocket stream starts, or fd was not followed). */
bool tn_ws_guard_arm(int fd, void *owner);
/* True when fd has sent an unmasked frame. */
bool tn_ws_guard_unmasked(int fd);
/* The owner of one armed socket that has sent an unmasked frame since the last call, or NULL
 * when there is none; each is returned once. */
void *tn_ws_guard_take(void);

#endif
