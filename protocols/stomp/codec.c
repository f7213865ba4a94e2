/*
 * STOMP codec: bytes <-> frames for STOMP 1.0, 1.1 and 1.2.
 *
 * The decoder is a small state machine fed arbitrary chunks. Lines are found with memchr and
 * handled straight from the input when they arrived whole; only a line cut by the end of a chunk
 * is copied into d->line first. Each limit is checked against the bytes seen so far, as if they
 * came one at a time, so the same input gives the same frames and the same error however it is
 * cut (the fuzz target checks this).
 * Section names without a version are from the STOMP 1.2 specification.
 */
#include "protocols/stomp/codec.h"

#include <stdlib.h>
#include <string.h>

/* Longest command, "UNSUBSCRIBE". A longer command line cannot be valid, so it fails as soon as
 * it is that long, whatever max_line says. */
#define CMD_MAX 11u
/* A body buffer grown past this by one large frame is freed before the next frame, so a
 * connection that saw one big message does not keep its memory. */
#define KEEP_BODY 65536u

enum {
    ST_IDLE,    /* between frames: EOLs are heart-beats */
    ST_IDLE_CR, /* between frames after a CR */
    ST_COMMAND, /* in the command line */
    ST_HEADER,  /* in a header line, or the blank line */
    ST_BODY,    /* in the body */
    ST_NUL,     /* after a content-length body: its NUL */
};

/* Escaping modes, for decoding and encoding (section "Value Encoding"). */
enum {
    ESC_NONE = 0, /* 1.0; CONNECT, STOMP and CONNECTED in every version */
    ESC_11 = 1,   /* \\ \n \c */
    ESC_12 = 2,   /* \\ \n \c \r */
};

static const char *const command_names[] = {
    [TN_STOMP_CONNECT] = "CONNECT",
    [TN_STOMP_STOMP] = "STOMP",
    [TN_STOMP_SEND] = "SEND",
    [TN_STOMP_SUBSCRIBE] = "SUBSCRIBE",
    [TN_STOMP_UNSUBSCRIBE] = "UNSUBSCRIBE",
    [TN_STOMP_ACK] = "ACK",
    [TN_STOMP_NACK] = "NACK",
    [TN_STOMP_BEGIN] = "BEGIN",
    [TN_STOMP_COMMIT] = "COMMIT",
    [TN_STOMP_ABORT] = "ABORT",
    [TN_STOMP_DISCONNECT] = "DISCONNECT",
    [TN_STOMP_CONNECTED] = "CONNECTED",
    [TN_STOMP_MESSAGE] = "MESSAGE",
    [TN_STOMP_RECEIPT] = "RECEIPT",
    [TN_STOMP_ERROR] = "ERROR",
};

const char *
tn_stomp_command_name(tn_stomp_command cmd)
{
    if (cmd < TN_STOMP_CONNECT || cmd > TN_STOMP_ERROR)
        return NULL;
    return command_names[cmd];
}

static bool
version_ok(unsigned v)
{
    return v == TN_STOMP_V10 || v == TN_STOMP_V11 || v == TN_STOMP_V12;
}

static bool
never_escaped(tn_stomp_command cmd)
{
    return cmd == TN_STOMP_CONNECT || cmd == TN_STOMP_STOMP || cmd == TN_STOMP_CONNECTED;
}

static int
escape_mode(unsigned version, tn_stomp_command cmd)
{
    if (version == TN_STOMP_V10 || never_escaped(cmd))
        return ESC_NONE;
    return version == TN_STOMP_V11 ? ESC_11 : ESC_12;
}

/* The command this role may receive, or 0. Commands are case-sensitive. */
static tn_stomp_command
lookup_command(tn_stomp_role role, const uint8_t *s, size_t n)
{
    tn_stomp_command lo = TN_STOMP_CONNECT, hi = TN_STOMP_DISCONNECT;

    if (role == TN_STOMP_ROLE_CLIENT)
        lo = TN_STOMP_CONNECTED, hi = TN_STOMP_ERROR;
    for (tn_stomp_command c = lo; c <= hi; c++) {
        const char *name = command_names[c];
        if (name[0] == s[0] && strlen(name) == n && memcmp(name, s, n) == 0)
            return c;
    }
    return 0;
}

const char *
tn_stomp_header_n(const tn_stomp_frame *f, const char *name, size_t nlen, size_t *vlen)
{
    for (uint32_t i = 0; i < f->nheaders; i++) {
        const tn_stomp_hdr *h = &f->headers[i];
        if (h->nlen == nlen && memcmp(h->name, name, nlen) == 0) {
            if (vlen)
                *vlen = h->vlen;
            return h->value;
        }
    }
    return NULL;
}

const char *
tn_stomp_header(const tn_stomp_frame *f, const char *name)
{
    return tn_stomp_header_n(f, name, strlen(name), NULL);
}

/* --- Decoder --- */

void
tn_stomp_decoder_init(tn_stomp_decoder *d, tn_stomp_role role, const tn_stomp_limits *lim)
{
    static const tn_stomp_limits defaults = {
        .max_line = TN_STOMP_DEFAULT_MAX_LINE,
        .max_headers = TN_STOMP_DEFAULT_MAX_HEADERS,
        .max_header_bytes = TN_STOMP_DEFAULT_MAX_HEADER_BYTES,
        .max_body = TN_STOMP_DEFAULT_MAX_BODY,
    };

    memset(d, 0, sizeof *d);
    d->version = TN_STOMP_V10;
    d->role = role;
    d->lim = lim ? *lim : defaults;
    tn_assert(d->lim.max_line > 0 && d->lim.max_headers > 0 && d->lim.max_header_bytes > 0 &&
              d->lim.max_body > 0);
    d->state = ST_IDLE;
    tn_buf_init(&d->line, (size_t)d->lim.max_line + 1);
    /* Stored names and values are never longer than their raw lines (the ':' and the LF pay
     * for the two NULs), so the head fits in max_header_bytes. */
    tn_buf_init(&d->head, d->lim.max_header_bytes);
    tn_buf_init(&d->body, d->lim.max_body);
}

void
tn_stomp_decoder_fini(tn_stomp_decoder *d)
{
    tn_buf_fini(&d->line);
    tn_buf_fini(&d->head);
    tn_buf_fini(&d->body);
    free(d->hdrs);
    d->hdrs = NULL;
    d->hdrs_cap = 0;
}

int
tn_stomp_decoder_set_version(tn_stomp_decoder *d, uint8_t version)
{
    if (!version_ok(version))
        return TN_EINVAL;
    d->version = version;
    return 0;
}

static int
fail(tn_stomp_decoder *d, int err, const char *why)
{
    d->err = err;
    d->error = why;
    return err;
}

/* Starts a frame: the previous frame's storage is no longer borrowed by anyone (the caller made
 * a new call), so it is reused. */
static void
begin_frame(tn_stomp_decoder *d)
{
    d->head_bytes = 0;
    d->nhdrs = 0;
    d->has_cl = false;
    d->cl = 0;
    d->head.len = 0;
    d->body.len = 0;
    d->ext = NULL;
    d->ext_got = 0;
    d->big = 0;
    if (d->body.cap > KEEP_BODY)
        tn_buf_reset(&d->body);
}

/*
 * Finds the end of the current line. Returns 0 with the line, its CR LF or LF stripped, in
 * (*line, *len) and *off past its LF; TN_EAGAIN when the input ends first (the partial line is
 * kept and *off = n); or an error. A line is refused as soon as it cannot end within max_line
 * (or, for the command line, the longest command) or within what max_header_bytes leaves.
 */
static int
next_line(tn_stomp_decoder *d, const uint8_t *p, size_t n, size_t *off, const uint8_t **line,
          size_t *len)
{
    bool cmd = d->state == ST_COMMAND;
    size_t max_line = d->lim.max_line;
    const char *line_why = "line too long";
    int line_err = TN_ETOOBIG;

    if (cmd && max_line > CMD_MAX) {
        max_line = CMD_MAX;
        line_why = "unknown command";
        line_err = TN_EPROTO;
    }
    /* Bytes before the LF: the line fails when there are line_stop of them (max_line and a CR
     * fit), the head when there are head_stop (it could not take the LF too). */
    size_t line_stop = max_line + 2;
    size_t head_stop = (size_t)d->lim.max_header_bytes - d->head_bytes;
    size_t stop = line_stop <= head_stop ? line_stop : head_stop;
    size_t have = d->line.len; /* < stop, or an error would have been returned */
    const uint8_t *s = p + *off;
    size_t avail = n - *off;
    size_t window = avail < stop - have ? avail : stop - have;
    const uint8_t *lf = memchr(s, '\n', window);

    if (lf == NULL) {
        if (have + avail >= stop) {
            if (line_stop <= head_stop)
                return fail(d, line_err, line_why);
            return fail(d, TN_ETOOBIG, "frame header too large");
        }
        if (tn_buf_append(&d->line, s, avail) != 0)
            return fail(d, TN_ENOMEM, "out of memory");
        *off = n;
        return TN_EAGAIN;
    }
    size_t k = (size_t)(lf - s);
    if (have > 0) {
        if (tn_buf_append(&d->line, s, k) != 0)
            return fail(d, TN_ENOMEM, "out of memory");
        *line = d->line.data;
        *len = have + k;
        d->line.len = 0; /* the bytes stay until the next append, after this line is handled */
    } else {
        *line = s;
        *len = k;
    }
    d->head_bytes += (uint32_t)(have + k + 1);
    *off += k + 1;
    if (*len > 0 && (*line)[*len - 1] == '\r')
        (*len)--;
    if (*len > max_line)
        return fail(d, line_err, line_why);
    return 0;
}

/* Copies s[0..n) to out, unescaping it in 1.1 and 1.2 (section "Value Encoding"); returns the
 * length written, or -1 for an undefined escape, which is a fatal protocol error. */
static ptrdiff_t
unescape(int mode, const uint8_t *s, size_t n, uint8_t *out)
{
    const uint8_t *bs = mode == ESC_NONE ? NULL : memchr(s, '\\', n);
    if (bs == NULL) {
        if (n > 0)
            memcpy(out, s, n);
        return (ptrdiff_t)n;
    }
    size_t i = (size_t)(bs - s);
    memcpy(out, s, i);
    uint8_t *w = out + i;
    while (i < n) {
        uint8_t c = s[i++];
        if (c != '\\') {
            *w++ = c;
            continue;
        }
        if (i == n)
            return -1; /* a lone backslash at the end */
        switch (s[i++]) {
        case '\\':
            *w++ = '\\';
            break;
        case 'n':
            *w++ = '\n';
            break;
        case 'c':
            *w++ = ':';
            break;
        case 'r':
            if (mode != ESC_12)
                return -1;
            *w++ = '\r';
            break;
        default:
            return -1;
        }
    }
    return w - out;
}

/* Digits only: no sign, no spaces. Larger than max_body is refused here, before any of the body
 * is read (section "Size Limits"). */
static int
parse_content_length(tn_stomp_decoder *d, const char *s, size_t n)
{
    uint64_t v = 0;

    if (n == 0)
        return fail(d, TN_EPROTO, "bad content-length");
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return fail(d, TN_EPROTO, "bad content-length");
        unsigned digit = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return fail(d, TN_EPROTO, "bad content-length"); /* overflow */
        v = v * 10 + digit;
    }
    if (v > d->lim.max_body)
        return fail(d, TN_ETOOBIG, "frame too large");
    d->has_cl = true;
    d->cl = (size_t)v;
    return 0;
}

static int
on_command(tn_stomp_decoder *d, const uint8_t *s, size_t n)
{
    tn_stomp_command cmd = n > 0 ? lookup_command(d->role, s, n) : 0;

    if (cmd == 0)
        return fail(d, TN_EPROTO, "unknown command");
    d->cmd = cmd;
    d->escape = escape_mode(d->version, cmd);
    d->state = ST_HEADER;
    return 0;
}

static int
on_header(tn_stomp_decoder *d, const uint8_t *s, size_t n)
{
    if (n == 0) {
        d->state = ST_BODY; /* the blank line */
        return 0;
    }
    if (memchr(s, '\0', n))
        return fail(d, TN_EPROTO, "NUL in a header");
    const uint8_t *colon = memchr(s, ':', n);
    if (colon == NULL)
        return fail(d, TN_EPROTO, "header without ':'");
    if (colon == s)
        return fail(d, TN_EPROTO, "empty header name");
    if (d->nhdrs == d->lim.max_headers)
        return fail(d, TN_ETOOBIG, "too many headers");

    size_t nraw = (size_t)(colon - s), vraw = n - nraw - 1;
    /* n + 1 bytes: both parts, two NULs instead of ':'; escapes only shrink. */
    uint8_t *w = tn_buf_reserve(&d->head, n + 1);
    if (w == NULL)
        return fail(d, TN_ENOMEM, "out of memory");
    ptrdiff_t nlen = unescape(d->escape, s, nraw, w);
    if (nlen < 0)
        return fail(d, TN_EPROTO, "undefined escape sequence");
    w[nlen] = '\0';
    ptrdiff_t vlen = unescape(d->escape, colon + 1, vraw, w + nlen + 1);
    if (vlen < 0)
        return fail(d, TN_EPROTO, "undefined escape sequence");
    w[nlen + 1 + vlen] = '\0';
    tn_buf_commit(&d->head, (size_t)(nlen + 1 + vlen + 1));

    if (d->nhdrs == d->hdrs_cap) {
        uint32_t cap = d->hdrs_cap ? d->hdrs_cap * 2 : 16;
        if (cap > d->lim.max_headers)
            cap = d->lim.max_headers;
        d->hdrs = tn_xrealloc(d->hdrs, cap * sizeof *d->hdrs);
        d->hdrs_cap = cap;
    }
    /* Pointers are set when the frame is complete: d->head may move until then. */
    d->hdrs[d->nhdrs++] = (tn_stomp_hdr){NULL, NULL, (uint32_t)nlen, (uint32_t)vlen};

    /* Only the first content-length counts (section "Repeated Header Entries"). */
    if (!d->has_cl && nlen == 14 && memcmp(w, "content-length", 14) == 0)
        return parse_content_length(d, (const char *)w + nlen + 1, (size_t)vlen);
    return 0;
}

/* Points the headers into d->head and fills f with them. */
static void
frame_headers(tn_stomp_decoder *d, tn_stomp_frame *f)
{
    const char *s = (const char *)d->head.data;

    for (uint32_t i = 0; i < d->nhdrs; i++) {
        tn_stomp_hdr *h = &d->hdrs[i];
        h->name = s;
        s += h->nlen + 1;
        h->value = s;
        s += h->vlen + 1;
    }
    f->command = d->cmd;
    f->nheaders = d->nhdrs;
    f->headers = d->hdrs;
    f->has_content_length = d->has_cl;
}

static int
frame_done(tn_stomp_decoder *d, const uint8_t *body, size_t len, tn_stomp_frame *f)
{
    frame_headers(d, f);
    f->body = len > 0 ? body : (const uint8_t *)"";
    f->body_len = len;
    f->has_content_length = d->has_cl;
    d->state = ST_IDLE;
    return 0;
}

/* Body of content-length bytes; then ST_NUL checks the NUL after it. Straight from the input
 * when the body and its NUL are all there, else through d->body. */
static int
body_fixed(tn_stomp_decoder *d, const uint8_t *p, size_t n, size_t *off, tn_stomp_frame *f)
{
    const uint8_t *s = p + *off;
    size_t avail = n - *off;
    if (d->ext) {
        size_t take = d->cl - d->ext_got;
        take = avail < take ? avail : take;
        if (s != d->ext + d->ext_got) /* else read in place (tn_stomp_decoder_body_room) */
            memcpy(d->ext + d->ext_got, s, take);
        d->ext_got += take;
        *off += take;
        if (d->ext_got == d->cl)
            d->state = ST_NUL;
        return TN_EAGAIN;
    }
    size_t need = d->cl - d->body.len;

    if (d->body.len == 0 && avail > need) {
        if (s[need] != '\0')
            return fail(d, TN_EPROTO, "missing NUL after body");
        *off += need + 1;
        return frame_done(d, s, need, f);
    }
    size_t take = avail < need ? avail : need;
    if (tn_buf_append(&d->body, s, take) != 0)
        return fail(d, TN_ENOMEM, "out of memory");
    *off += take;
    if (d->body.len == d->cl)
        d->state = ST_NUL;
    return TN_EAGAIN;
}

/* Body up to the first NUL, at most max_body bytes. */
static int
body_to_nul(tn_stomp_decoder *d, const uint8_t *p, size_t n, size_t *off, tn_stomp_frame *f)
{
    const uint8_t *s = p + *off;
    size_t avail = n - *off;
    size_t room = d->lim.max_body - d->body.len;
    size_t window = avail < room + 1 ? avail : room + 1;
    const uint8_t *nul = memchr(s, '\0', window);

    if (nul == NULL) {
        if (avail > room)
            return fail(d, TN_ETOOBIG, "frame too large");
        if (tn_buf_append(&d->body, s, avail) != 0)
            return fail(d, TN_ENOMEM, "out of memory");
        *off = n;
        return TN_EAGAIN;
    }
    size_t k = (size_t)(nul - s);
    *off += k + 1;
    if (d->body.len == 0)
        return frame_done(d, s, k, f);
    if (tn_buf_append(&d->body, s, k) != 0)
        return fail(d, TN_ENOMEM, "out of memory");
    return frame_done(d, d->body.data, d->body.len, f);
}

int
tn_stomp_decode(tn_stomp_decoder *d, const uint8_t *p, size_t n, size_t *used, tn_stomp_frame *f)
{
    size_t off = 0;
    int rc = TN_EAGAIN;

    if (d->err) {
        rc = d->err;
        goto out;
    }
    while (off < n) {
        switch (d->state) {
        case ST_IDLE:
            /* Heart-beats, and the EOLs a frame may end with (section "Augmented BNF"). */
            if (p[off] == '\n') {
                d->heartbeats++;
                off++;
            } else if (p[off] == '\r') {
                d->state = ST_IDLE_CR;
                off++;
            } else {
                begin_frame(d);
                d->state = ST_COMMAND;
            }
            break;
        case ST_IDLE_CR:
            if (p[off] != '\n') {
                rc = fail(d, TN_EPROTO, "CR without LF");
                goto out;
            }
            d->heartbeats++;
            off++;
            d->state = ST_IDLE;
            break;
        case ST_COMMAND:
        case ST_HEADER: {
            const uint8_t *line = NULL;
            size_t len = 0;
            rc = next_line(d, p, n, &off, &line, &len);
            if (rc != 0)
                goto out;
            rc = d->state == ST_COMMAND ? on_command(d, line, len) : on_header(d, line, len);
            if (rc != 0)
                goto out;
            break;
        }
        case ST_BODY:
            if (d->big == 1) { /* waiting for tn_stomp_decoder_body_to() */
                rc = TN_EAGAIN;
                goto out;
            }
            if (d->big == 0 && d->has_cl && d->lim.big_body && d->cl >= d->lim.big_body &&
                d->body.len == 0) {
                if (n - off <= d->cl) {
                    d->big = 1;
                    frame_headers(d, f);
                    f->body = NULL;
                    f->body_len = d->cl;
                    rc = TN_STOMP_HEAD;
                    goto out;
                }
            }
            rc = d->has_cl ? body_fixed(d, p, n, &off, f) : body_to_nul(d, p, n, &off, f);
            if (rc != TN_EAGAIN)
                goto out;
            break;
        case ST_NUL:
            if (p[off] != '\0') {
                rc = fail(d, TN_EPROTO, "missing NUL after body");
                goto out;
            }
            off++;
            rc = d->ext ? frame_done(d, d->ext, d->cl, f)
                        : frame_done(d, d->body.data, d->body.len, f);
            goto out;
        }
    }
    rc = TN_EAGAIN;
out:
    *used = off;
    return rc;
}

void
tn_stomp_decoder_body_to(tn_stomp_decoder *d, uint8_t *dst)
{
    tn_assert(d->big == 1 && d->state == ST_BODY && !d->ext);
    d->ext = dst; /* NULL: the body is gathered in d->body like a small one */
    d->ext_got = 0;
    d->big = 2;
}

uint8_t *
tn_stomp_decoder_body_room(const tn_stomp_decoder *d, size_t *n)
{
    if (!d->ext || d->state != ST_BODY || d->err)
        return NULL;
    *n = d->cl - d->ext_got;
    return d->ext + d->ext_got;
}

size_t
tn_stomp_decoder_held(const tn_stomp_decoder *d)
{
    return d->state == ST_BODY || d->state == ST_NUL ? d->body.len : 0;
}

/* --- Encoder --- */

/* Bytes a header part may need to escape or refuse. */
enum { C_NONE, C_NUL, C_LF, C_CR, C_COLON, C_BSLASH };

static const uint8_t byte_class[256] = {
    ['\0'] = C_NUL, ['\n'] = C_LF, ['\r'] = C_CR, [':'] = C_COLON, ['\\'] = C_BSLASH,
};

/* Size of s[0..n) escaped for mode, or SIZE_MAX when it cannot be written. A name never ends
 * its line (':' follows); a value does, so a CR at its end would read as part of a CRLF. */
static size_t
escaped_size(int mode, const char *s, size_t n, bool name)
{
    size_t extra = 0;

    for (size_t i = 0; i < n; i++) {
        switch (byte_class[(uint8_t)s[i]]) {
        case C_NONE:
            break;
        case C_NUL:
            return SIZE_MAX;
        case C_LF:
            if (mode == ESC_NONE)
                return SIZE_MAX;
            extra++;
            break;
        case C_CR:
            if (mode == ESC_12)
                extra++;
            else if (!name && i + 1 == n)
                return SIZE_MAX;
            break;
        case C_COLON:
            if (mode != ESC_NONE)
                extra++;
            else if (name)
                return SIZE_MAX;
            break;
        case C_BSLASH:
            if (mode != ESC_NONE)
                extra++;
            break;
        }
    }
    return n + extra;
}

static uint8_t *
put_escaped(uint8_t *w, int mode, const char *s, size_t n, size_t size)
{
    if (size == n) {
        if (n > 0)
            memcpy(w, s, n);
        return w + n;
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        switch (byte_class[c]) {
        case C_LF:
            *w++ = '\\', *w++ = 'n';
            break;
        case C_CR:
            if (mode == ESC_12)
                *w++ = '\\', *w++ = 'r';
            else
                *w++ = c;
            break;
        case C_COLON:
            *w++ = '\\', *w++ = 'c';
            break;
        case C_BSLASH:
            *w++ = '\\', *w++ = '\\';
            break;
        default:
            *w++ = c;
            break;
        }
    }
    return w;
}

static int
enc_fail(tn_stomp_encoder *e, int err)
{
    e->err = err;
    if (e->out)
        e->out->len = e->start;
    return err;
}

int
tn_stomp_encode_begin(tn_stomp_encoder *e, tn_buf *out, uint8_t version, tn_stomp_command cmd)
{
    const char *name = tn_stomp_command_name(cmd);

    e->out = out;
    e->start = out->len;
    e->err = 0;
    if (name == NULL || !version_ok(version))
        return enc_fail(e, TN_EINVAL);
    e->mode = escape_mode(version, cmd);
    size_t n = strlen(name);
    uint8_t *w = tn_buf_reserve(out, n + 1);
    if (w == NULL)
        return enc_fail(e, TN_ETOOBIG);
    memcpy(w, name, n);
    w[n] = '\n';
    tn_buf_commit(out, n + 1);
    return 0;
}

int
tn_stomp_encode_header(tn_stomp_encoder *e, const char *name, size_t nlen, const char *value,
                       size_t vlen)
{
    if (e->err)
        return e->err;
    size_t ns = nlen > 0 ? escaped_size(e->mode, name, nlen, true) : SIZE_MAX;
    size_t vs = escaped_size(e->mode, value, vlen, false);
    if (ns == SIZE_MAX || vs == SIZE_MAX)
        return enc_fail(e, TN_EINVAL);
    size_t total = ns + 1 + vs + 1;
    uint8_t *w = tn_buf_reserve(e->out, total);
    if (w == NULL)
        return enc_fail(e, TN_ETOOBIG);
    w = put_escaped(w, e->mode, name, nlen, ns);
    *w++ = ':';
    w = put_escaped(w, e->mode, value, vlen, vs);
    *w = '\n';
    tn_buf_commit(e->out, total);
    return 0;
}

static int encode_end(tn_stomp_encoder *e, const void *body, size_t len, bool content_length,
                      bool head_only);

int
tn_stomp_encode_end(tn_stomp_encoder *e, const void *body, size_t len, bool content_length)
{
    return encode_end(e, body, len, content_length, false);
}

int
tn_stomp_encode_end_head(tn_stomp_encoder *e, size_t len)
{
    return encode_end(e, NULL, len, true, true);
}

static int
encode_end(tn_stomp_encoder *e, const void *body, size_t len, bool content_length, bool head_only)
{
    static const char cl_name[] = "content-length:";
    char digits[20];
    size_t nd = 0;

    if (e->err)
        return e->err;
    if (!content_length && len > 0 && memchr(body, '\0', len))
        return enc_fail(e, TN_EINVAL);
    if (content_length) {
        size_t v = len;
        do {
            digits[sizeof digits - ++nd] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
    }
    size_t head = content_length ? sizeof cl_name - 1 + nd + 1 : 0;
    if (len > SIZE_MAX - head - 2)
        return enc_fail(e, TN_ETOOBIG);
    size_t total = head + 1 + (head_only ? 0 : len + 1);
    uint8_t *w = tn_buf_reserve(e->out, total);
    if (w == NULL)
        return enc_fail(e, TN_ETOOBIG);
    if (content_length) {
        memcpy(w, cl_name, sizeof cl_name - 1);
        w += sizeof cl_name - 1;
        memcpy(w, digits + sizeof digits - nd, nd);
        w += nd;
        *w++ = '\n';
    }
    *w++ = '\n';
    if (!head_only) {
        if (len > 0)
            memcpy(w, body, len);
        w[len] = '\0';
    }
    tn_buf_commit(e->out, total);
    return 0;
}

int
tn_stomp_encode_frame(tn_buf *out, uint8_t version, tn_stomp_command cmd,
                      const tn_stomp_hdr *headers, size_t nheaders, const void *body, size_t len,
                      bool content_length)
{
    tn_stomp_encoder e;

    tn_stomp_encode_begin(&e, out, version, cmd);
    for (size_t i = 0; i < nheaders; i++)
        tn_stomp_encode_header(&e, headers[i].name, headers[i].nlen, headers[i].value,
                               headers[i].vlen);
    return tn_stomp_encode_end(&e, body, len, content_length);
}

int
tn_stomp_encode_heartbeat(tn_buf *out)
{
    return tn_buf_append(out, "\n", 1);
}
