/*
 * --discard: subscribers that do not copy large payloads out of the kernel.
 *
 * At 1 MiB a message, a subscriber's read(2) copies as many bytes as the broker's write(2) did,
 * so ternbench's one thread spends as much CPU per delivery as the broker: with 16 subscribers
 * it, not the broker, sets the rate. With --discard a subscriber looks at the start of each
 * PUBLISH or MESSAGE; once the first TN_BENCH_HEADER payload bytes (run id, publisher, sequence,
 * send time) are in, and the rest is not, it decodes a copy of what it has, shortened to those
 * bytes (MQTT: remaining length; STOMP: content-length, rewritten with as many digits), with the
 * protocol's own decoder, and drops the rest of the message in the kernel: recv(2) with
 * MSG_TRUNC on a TCP socket discards the bytes without copying them (tcp(7)). The message is
 * handled (acknowledged, counted, its latency taken) once its last byte is dropped, as if it had
 * been read whole then. Messages that arrive whole in one read, and those whose head is cut by
 * a read, are decoded as usual.
 */
#include "tools/ternbench/ternbench.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static uint8_t *
skip_buf(tn_bench_conn *c)
{
    if (!c->skip_buf)
        c->skip_buf = tn_xmalloc(TN_BENCH_SKIP_BUF);
    return c->skip_buf;
}

/* MQTT variable byte integer at p[0..n): value and length, or 0 when incomplete or bad. */
static size_t
varint(const uint8_t *p, size_t n, uint32_t *v)
{
    uint32_t x = 0;
    for (size_t i = 0; i < 4 && i < n; i++) {
        x |= (uint32_t)(p[i] & 127) << (7 * i);
        if (!(p[i] & 128)) {
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

bool
tn_bench_skip_mqtt(tn_bench_conn *c, const uint8_t *p, size_t n)
{
    if (n < 2 || (p[0] >> 4) != TN_MQTT_PUBLISH)
        return false;
    uint32_t rl;
    size_t vl = varint(p + 1, n - 1, &rl);
    if (!vl || 1 + vl + (uint64_t)rl <= n)
        return false;   /* header cut, or the whole packet is here */
    size_t at = 1 + vl; /* variable header: topic length, topic, packet id at QoS 1/2 */
    if (n < at + 2)
        return false;
    size_t var = 2 + ((size_t)p[at] << 8 | p[at + 1]) + (((p[0] >> 1) & 3) ? 2 : 0);
    size_t keep = var + TN_BENCH_HEADER; /* the remaining length of the shortened copy */
    if (rl < keep || n < at + keep || 1 + 4 + keep > TN_BENCH_SKIP_BUF)
        return false;
    uint8_t *s = skip_buf(c);
    size_t len = 0;
    s[len++] = p[0];
    for (size_t k = keep;; k >>= 7) {
        s[len++] = (uint8_t)((k & 127) | (k >= 128 ? 128 : 0));
        if (k < 128)
            break;
    }
    memcpy(s + len, p + at, keep);
    len += keep;
    size_t used;
    if (tn_mqtt_decode(&c->dec, s, len, &used, &c->skip_pkt) != 0 || used != len)
        return false; /* let the real decode say what is wrong */
    c->skip = 1 + vl + (uint64_t)rl - n;
    c->skip_pending = true;
    c->b->discarded++;
    return true;
}

/* Index of the blank line ending the frame head that starts at p (after the command line),
 * pointing behind it, or 0 when it is not in p[0..n). */
static size_t
head_end(const uint8_t *p, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        if (p[i] != '\n')
            continue;
        if (p[i - 1] == '\n')
            return i + 1;
        if (p[i - 1] == '\r' && i >= 2 && p[i - 2] == '\n')
            return i + 1;
    }
    return 0;
}

int
tn_bench_skip_stomp(tn_bench_conn *c, const uint8_t *p, size_t n)
{
    static const char cmd[] = "MESSAGE";
    /* What is here is small: worth keeping for the next read (no copy of a whole message). */
    int wait = n < TN_BENCH_SKIP_BUF - TN_BENCH_HEADER - 1 ? TN_BENCH_SKIP_WAIT : TN_BENCH_SKIP_NO;
    if (!c->stomp_between)
        return TN_BENCH_SKIP_NO;
    if (n < sizeof cmd)
        return memcmp(p, cmd, n) == 0 ? wait : TN_BENCH_SKIP_NO;
    if (memcmp(p, cmd, sizeof cmd - 1) != 0 || (p[7] != '\n' && p[7] != '\r'))
        return TN_BENCH_SKIP_NO;
    size_t lim =
        n < TN_BENCH_SKIP_BUF - TN_BENCH_HEADER - 1 ? n : TN_BENCH_SKIP_BUF - TN_BENCH_HEADER - 1;
    size_t head = head_end(p, lim);
    if (!head)
        return wait; /* the head is not all here (or too large: NO) */
    /* The first content-length header counts (1.2 "Repeated Header Entries"). */
    size_t cl_at = 0, cl_len = 0;
    uint64_t cl = 0;
    for (size_t i = 0; i + 16 <= head; i++) {
        if (p[i] != '\n' || memcmp(p + i + 1, "content-length:", 15) != 0)
            continue;
        cl_at = i + 16;
        while (cl_at + cl_len < head && p[cl_at + cl_len] >= '0' && p[cl_at + cl_len] <= '9') {
            cl = cl * 10 + (uint64_t)(p[cl_at + cl_len] - '0');
            if (++cl_len > 18)
                return TN_BENCH_SKIP_NO;
        }
        break;
    }
    if (!cl_len || cl < TN_BENCH_HEADER || head + cl + 1 <= n)
        return TN_BENCH_SKIP_NO; /* no length, too short, or all here */
    if (n < head + TN_BENCH_HEADER)
        return wait; /* the payload's head not yet */
    /* The head with content-length rewritten to TN_BENCH_HEADER in cl_len digits (leading
     * zeros are digits), the first TN_BENCH_HEADER body bytes, the NUL. */
    uint8_t *s = skip_buf(c);
    memcpy(s, p, head);
    uint64_t v = TN_BENCH_HEADER;
    for (size_t k = cl_len; k-- > 0; v /= 10)
        s[cl_at + k] = (uint8_t)('0' + v % 10);
    memcpy(s + head, p + head, TN_BENCH_HEADER);
    s[head + TN_BENCH_HEADER] = '\0';
    size_t len = head + TN_BENCH_HEADER + 1, used;
    if (tn_stomp_decode(&c->sdec, s, len, &used, &c->skip_frame) != 0 || used != len) {
        /* Not expected: the same bytes, shortened. The decoder keeps its error (sticky) and
         * the next real decode reports it. */
        return TN_BENCH_SKIP_NO;
    }
    c->skip = head + cl + 1 - n; /* the rest of the body and its NUL */
    c->skip_pending = true;
    c->b->discarded++;
    return TN_BENCH_SKIP_YES;
}

size_t
tn_bench_skip_take(tn_bench_conn *c, size_t n)
{
    size_t k = c->skip < n ? (size_t)c->skip : n;
    c->skip -= k;
    return k;
}

void
tn_bench_skip_drain(tn_bench_conn *c)
{
    int fd;
    if (!c->skip || uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return;
    while (c->skip) {
        size_t want = c->skip < (1u << 30) ? (size_t)c->skip : (1u << 30);
        /* MSG_TRUNC on TCP: the bytes are dropped, the buffer is not written. The system call
         * itself: a sanitizer's recv() wrapper would take the return value as bytes written. */
        ssize_t r =
            syscall(SYS_recvfrom, fd, c->b->rbuf, want, MSG_TRUNC | MSG_DONTWAIT, NULL, NULL);
        if (r > 0) {
            c->skip -= (uint64_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        return; /* EAGAIN: later; EOF or an error: libuv's next read reports it */
    }
}

bool
tn_bench_skip_done(const tn_bench_conn *c)
{
    return c->skip_pending && c->skip == 0;
}
