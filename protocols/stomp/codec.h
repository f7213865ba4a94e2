/*
 * STOMP codec: bytes <-> frames for STOMP 1.0, 1.1 and 1.2, sans-IO (no sockets, clocks or core
 * calls). Spec: https://stomp.github.io/stomp-specification-1.2.html ("1.2 section x" below).
 *
 * Private to protocols/stomp (the adapter includes it); ternbench and tests may use it.
 *
 * Decoding is streaming: tn_stomp_decode() takes whatever bytes arrived, consumes at most one
 * frame's worth and keeps partial lines and bodies inside the decoder, so the caller never has to
 * hold on to old input. A frame is returned as soon as its NUL arrives; the bytes after it are left
 * for the next call. Header names and values are unescaped into decoder storage; the body is a
 * view into the caller's input when the whole body and its NUL arrived in one call (the common
 * case, no copy) and into decoder storage otherwise (one copy). Memory stays within the limits
 * given at init whatever the input: every buffer is checked before it grows.
 *
 * Encoders append one frame to a bounded tn_buf with no allocation besides the buffer's own
 * growth, and leave the buffer as it was on error.
 */
#ifndef TN_STOMP_CODEC_H
#define TN_STOMP_CODEC_H

#include "core/base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Protocol versions, as negotiated with accept-version / version (1.2 section "Protocol
 * Negotiation"). */
#define TN_STOMP_V10 10
#define TN_STOMP_V11 11
#define TN_STOMP_V12 12

typedef enum {
    /* Client frames: what a server decodes. */
    TN_STOMP_CONNECT = 1,
    TN_STOMP_STOMP, /* CONNECT by another name (1.1+) */
    TN_STOMP_SEND,
    TN_STOMP_SUBSCRIBE,
    TN_STOMP_UNSUBSCRIBE,
    TN_STOMP_ACK,
    TN_STOMP_NACK, /* 1.1+; refusing it in 1.0 is the adapter's job */
    TN_STOMP_BEGIN,
    TN_STOMP_COMMIT,
    TN_STOMP_ABORT,
    TN_STOMP_DISCONNECT,
    /* Server frames: what a client decodes (tests, ternbench). */
    TN_STOMP_CONNECTED,
    TN_STOMP_MESSAGE,
    TN_STOMP_RECEIPT,
    TN_STOMP_ERROR,
} tn_stomp_command;

/* The command as it appears on the wire ("SEND"), or NULL for a value outside the enum. */
const char *tn_stomp_command_name(tn_stomp_command cmd);

/* One header, unescaped. name and value are NUL-terminated (the decoder refuses NUL inside a
 * header, so they are plain C strings); nlen and vlen leave the terminator out. */
typedef struct tn_stomp_hdr {
    const char *name;
    const char *value;
    uint32_t nlen;
    uint32_t vlen;
} tn_stomp_hdr;

/*
 * A decoded frame. Everything is borrowed: headers live in the decoder until its next
 * tn_stomp_decode() or tn_stomp_decoder_fini() call; body lives there too, or in the input passed
 * to the call that returned the frame (then the caller must not reuse that input while using the
 * body). Headers are in wire order, repeats included; tn_stomp_header() gives the first, which is
 * the one that counts (1.2 section "Repeated Header Entries").
 */
typedef struct tn_stomp_frame {
    tn_stomp_command command;
    uint32_t nheaders;
    const tn_stomp_hdr *headers;
    const uint8_t *body; /* never NULL, even when body_len is 0 */
    size_t body_len;
    bool has_content_length; /* body_len came from a content-length header */
} tn_stomp_frame;

/* The first value of header name (a C string), or NULL when the frame has none. */
const char *tn_stomp_header(const tn_stomp_frame *f, const char *name);
/* The same for a name of nlen bytes; *vlen (may be NULL) gets the value's length. */
const char *tn_stomp_header_n(const tn_stomp_frame *f, const char *name, size_t nlen, size_t *vlen);

typedef enum {
    TN_STOMP_ROLE_SERVER = 0, /* decodes client frames: CONNECT .. DISCONNECT */
    TN_STOMP_ROLE_CLIENT = 1, /* decodes server frames: CONNECTED .. ERROR */
} tn_stomp_role;

/* Limits, all in bytes except max_headers, all at least 1. The decoder's memory is at most about
 * max_line + max_header_bytes + max_headers * sizeof(tn_stomp_hdr) + max_body. */
typedef struct tn_stomp_limits {
    uint32_t max_line;         /* a command or header line, line ending excluded */
    uint32_t max_headers;      /* header lines in a frame, repeats included */
    uint32_t max_header_bytes; /* command line, header lines and blank line, line endings
                                  included */
    uint32_t max_body;         /* body bytes, with or without content-length */
    uint32_t big_body;         /* 0, or a content-length from which a body that has not all
                                  arrived goes where the caller says (TN_STOMP_HEAD) */
} tn_stomp_limits;

/* tn_stomp_decode(): the headers of a frame with a big body (see there). */
#define TN_STOMP_HEAD 1

/* Used when tn_stomp_decoder_init() gets NULL limits. */
#define TN_STOMP_DEFAULT_MAX_LINE 8192u
#define TN_STOMP_DEFAULT_MAX_HEADERS 128u
#define TN_STOMP_DEFAULT_MAX_HEADER_BYTES 65536u
#define TN_STOMP_DEFAULT_MAX_BODY 1048576u

typedef struct tn_stomp_decoder {
    /* Read-only for the caller. */
    uint8_t version;     /* TN_STOMP_V10 until tn_stomp_decoder_set_version() */
    uint64_t heartbeats; /* EOLs seen between frames so far (heart-beats, 1.2 section
                            "Heart-beating"); any change means the peer is alive */
    const char *error;   /* after an error: why, in a few words, for the ERROR frame's message
                            header; a constant string */

    /* Private. */
    tn_stomp_role role;
    tn_stomp_limits lim;
    int state;
    int err;    /* sticky: once set, every call returns it */
    int escape; /* escaping mode of the current frame */
    bool has_cl;
    tn_stomp_command cmd;
    uint32_t head_bytes;
    uint32_t nhdrs;
    uint32_t hdrs_cap;
    size_t cl;
    tn_stomp_hdr *hdrs;
    tn_buf line;    /* a line split across calls, at most max_line + 1 bytes (CR) */
    tn_buf head;    /* unescaped names and values, each NUL-terminated */
    tn_buf body;    /* a body split across calls */
    uint8_t *ext;   /* a big body's place, given by the caller (NULL: d->body) */
    size_t ext_got; /* bytes of it written */
    uint8_t big;    /* 0; 1: TN_STOMP_HEAD returned, waiting for body_to(); 2: body_to() called */
} tn_stomp_decoder;

/* lim is copied; NULL means the TN_STOMP_DEFAULT_* values. Allocates nothing. */
void tn_stomp_decoder_init(tn_stomp_decoder *d, tn_stomp_role role, const tn_stomp_limits *lim);
void tn_stomp_decoder_fini(tn_stomp_decoder *d);

/* Header escaping for the frames whose command line is decoded after this call (call it between
 * frames, e.g. right after handling CONNECT): TN_STOMP_V10 none, TN_STOMP_V11 \\ \n \c,
 * TN_STOMP_V12 also \r (1.2 section "Value Encoding"). CONNECT, STOMP and CONNECTED are never
 * unescaped. TN_EINVAL for another version. */
int tn_stomp_decoder_set_version(tn_stomp_decoder *d, uint8_t version);

/*
 * Decodes from p[0..n). Returns:
 *   0           a frame in *f; *used = bytes consumed, the frame's NUL included. Call again with
 *               the rest of the input (if any) before reading more.
 *   TN_EAGAIN   no frame yet; *used = n (all bytes consumed, partial ones kept inside).
 *   TN_ETOOBIG  a limit was exceeded ("line too long", "too many headers", "frame header too
 *               large", "frame too large"), checked before the bytes are stored.
 *   TN_EPROTO   malformed ("unknown command", "header without ':'", "undefined escape sequence",
 *               "bad content-length", "missing NUL after body", ...).
 *   TN_ENOMEM   out of memory.
 * After an error d->error says why and every later call returns the same error: answer with an
 * ERROR frame and close (1.2 section "ERROR"). *used is then unspecified.
 * EOLs before a frame ("\n" or "\r\n", heart-beats and the optional EOLs after a NUL) are counted
 * in d->heartbeats and skipped. Lines may end in LF or CRLF in every version; one CR before the
 * LF is not part of the line. Body: content-length bytes followed by a NUL, or, without
 * content-length, everything up to the first NUL. Whether a command may carry a body or which
 * headers it needs is left to the adapter.
 */
int tn_stomp_decode(tn_stomp_decoder *d, const uint8_t *p, size_t n, size_t *used,
                    tn_stomp_frame *f);
/*
 * Big bodies (limits.big_body set): when a frame's headers end with a content-length of at least
 * big_body and its body and NUL are not all in the input, tn_stomp_decode() returns TN_STOMP_HEAD
 * with *used = the bytes up to the body and *f holding the headers (body NULL, body_len the
 * content-length), so the caller can refuse the frame, or make room for the body and call
 * tn_stomp_decoder_body_to() with where it goes (cl bytes; NULL: inside the decoder, as for
 * other bodies). Until then, calls consume nothing (TN_EAGAIN, *used = 0). The frame is returned
 * as usual once its NUL arrives, with body pointing at that place.
 */
void tn_stomp_decoder_body_to(tn_stomp_decoder *d, uint8_t *dst);
/* Where the next bytes of a body given to tn_stomp_decoder_body_to() go, and how many are still
 * due (*n); NULL when no such body is being read. The caller may read input straight there and
 * pass that same pointer to tn_stomp_decode(), which then copies nothing. */
uint8_t *tn_stomp_decoder_body_room(const tn_stomp_decoder *d, size_t *n);
/* Bytes of the current frame's body held inside the decoder (a body without content-length
 * being gathered), for the caller's memory accounting. */
size_t tn_stomp_decoder_held(const tn_stomp_decoder *d);

/*
 * Encoding, for example a MESSAGE:
 *
 *     tn_stomp_encoder e;
 *     tn_stomp_encode_begin(&e, out, version, TN_STOMP_MESSAGE);
 *     tn_stomp_encode_header(&e, "destination", 11, dest, dest_len);
 *     tn_stomp_encode_header(&e, "message-id", 10, id, id_len);
 *     rc = tn_stomp_encode_end(&e, body, body_len, true);
 *
 * The first error sticks: later calls do nothing and return it, and the buffer is rolled back to
 * where the frame began, so checking tn_stomp_encode_end() alone is enough. Errors: TN_ETOOBIG
 * (out's maximum), TN_EINVAL (bad version or command; an empty name; a NUL in a name or value; a
 * byte the frame's escaping cannot carry: LF anywhere or ':' in a name without escaping, a value
 * ending in CR unless 1.2 escapes it; a body with a NUL and no content-length).
 * Escaping follows the version: none in 1.0 and in CONNECT, STOMP and CONNECTED frames;
 * \\ \n \c in 1.1; and \r in 1.2. Lines end in LF.
 */
typedef struct tn_stomp_encoder {
    tn_buf *out;
    size_t start; /* out->len at begin, for the roll-back */
    int mode;     /* escaping */
    int err;
} tn_stomp_encoder;

int tn_stomp_encode_begin(tn_stomp_encoder *e, tn_buf *out, uint8_t version, tn_stomp_command cmd);
int tn_stomp_encode_header(tn_stomp_encoder *e, const char *name, size_t nlen, const char *value,
                           size_t vlen);
/* Adds content-length (when content_length; do not pass that header yourself then), the blank
 * line, body[0..len) and the NUL. Returns 0 or the sticky error. */
int tn_stomp_encode_end(tn_stomp_encoder *e, const void *body, size_t len, bool content_length);
/* Adds content-length: len and the blank line only: the caller writes the len body bytes next
 * (e.g. by reference, tn_io.out_ref) and then the NUL. */
int tn_stomp_encode_end_head(tn_stomp_encoder *e, size_t len);

/* A whole frame from a header array (e.g. one tn_stomp_decode() returned). */
int tn_stomp_encode_frame(tn_buf *out, uint8_t version, tn_stomp_command cmd,
                          const tn_stomp_hdr *headers, size_t nheaders, const void *body,
                          size_t len, bool content_length);

/* A heart-beat: one LF. */
int tn_stomp_encode_heartbeat(tn_buf *out);

#endif
