/*
 * guard.h: the follower of a client's bytes (request, then frame headers) finds unmasked
 * frames however the bytes are cut, and the socket table sees what recv() reads (the
 * interposed recv of guard.c, over a socketpair).
 */
#include "protocols/ws/guard.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char REQ[] = "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";

/* Appends one frame of n payload bytes (masked unless told) to buf; returns its length. */
static size_t
frame(uint8_t *buf, int opcode, size_t n, int masked)
{
    size_t i = 0;
    buf[i++] = (uint8_t)(0x80 | opcode);
    uint8_t m = masked ? 0x80 : 0;
    if (n < 126) {
        buf[i++] = (uint8_t)(m | n);
    } else if (n < 65536) {
        buf[i++] = m | 126;
        buf[i++] = (uint8_t)(n >> 8);
        buf[i++] = (uint8_t)n;
    } else {
        buf[i++] = m | 127;
        for (int k = 7; k >= 0; k--)
            buf[i++] = (uint8_t)((uint64_t)n >> (8 * k));
    }
    if (masked)
        for (int k = 0; k < 4; k++)
            buf[i++] = (uint8_t)(0x80 | k); /* a key whose bytes look like mask bits */
    memset(buf + i, 0x80, n);               /* payload bytes with the high bit set everywhere */
    return i + n;
}

/* The request and masked frames of every length encoding, then (if bad) an unmasked one. */
static size_t
stream(uint8_t *buf, int bad)
{
    size_t n = sizeof REQ - 1;
    memcpy(buf, REQ, n);
    n += frame(buf + n, 2, 0, 1);
    n += frame(buf + n, 2, 125, 1);
    n += frame(buf + n, 2, 126, 1);
    n += frame(buf + n, 9, 3, 1);
    n += frame(buf + n, 2, 70000, 1);
    n += frame(buf + n, 0, 65535, 1);
    if (bad)
        n += frame(buf + n, 2, 5, 0);
    return n;
}

static uint8_t sbuf[200000];

static void
test_every_cut(void)
{
    for (int bad = 0; bad <= 1; bad++) {
        size_t n = stream(sbuf, bad);
        size_t cuts[] = {1, 2, 3, 7, 64, 4096, n};
        for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
            tn_ws_guard g;
            tn_ws_guard_init(&g);
            bool ok = true;
            for (size_t i = 0; i < n; i += cuts[k]) {
                size_t len = n - i < cuts[k] ? n - i : cuts[k];
                ok = tn_ws_guard_feed(&g, sbuf + i, len);
            }
            CU_ASSERT_EQUAL(ok, !bad);
            CU_ASSERT_EQUAL(g.unmasked, bad);
            CU_ASSERT_TRUE(tn_ws_guard_in_frames(&g));
        }
    }
}

static void
test_request_forms(void)
{
    /* Bare LF line ends (libwebsockets takes them), leading empty lines, and no end yet. */
    static const char *reqs[] = {"GET / HTTP/1.1\nHost: x\n\n", "\r\n\r\nGET / HTTP/1.1\r\n\r\n"};
    for (size_t k = 0; k < 2; k++) {
        tn_ws_guard g;
        tn_ws_guard_init(&g);
        CU_ASSERT_TRUE(tn_ws_guard_feed(&g, (const uint8_t *)reqs[k], strlen(reqs[k])));
        CU_ASSERT_TRUE(tn_ws_guard_in_frames(&g));
        uint8_t f[16];
        CU_ASSERT_FALSE(tn_ws_guard_feed(&g, f, frame(f, 1, 2, 0)));
        CU_ASSERT_FALSE(tn_ws_guard_feed(&g, f, 1)); /* final */
    }
    tn_ws_guard g;
    tn_ws_guard_init(&g);
    const char *part = "GET / HTTP/1.1\r\nHost: x\r\n";
    CU_ASSERT_TRUE(tn_ws_guard_feed(&g, (const uint8_t *)part, strlen(part)));
    CU_ASSERT_FALSE(tn_ws_guard_in_frames(&g));
    /* An unmasked-looking byte pair inside the request is header text, not a frame. */
    CU_ASSERT_TRUE(tn_ws_guard_feed(&g, (const uint8_t *)"X: \x82\x05\r\n", 8));
    CU_ASSERT_FALSE(tn_ws_guard_in_frames(&g));
}

static void
test_table_sees_recv(void)
{
    for (int bad = 0; bad <= 1; bad++) {
        int sv[2];
        CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        int owner;
        tn_ws_guard_watch(sv[0]);
        CU_ASSERT_EQUAL(write(sv[1], REQ, sizeof REQ - 1), (ssize_t)(sizeof REQ - 1));
        uint8_t f[32], in[256];
        size_t n = frame(f, 2, 4, 1);
        if (bad)
            n += frame(f + n, 2, 4, 0);
        CU_ASSERT_EQUAL(write(sv[1], f, n), (ssize_t)n);
        /* What is only peeked at is not followed (libwebsockets peeks on a wss port). */
        CU_ASSERT_TRUE(recv(sv[0], in, sizeof in, MSG_PEEK) > 0);
        CU_ASSERT_FALSE(tn_ws_guard_unmasked(sv[0]));
        size_t got = 0;
        while (got < sizeof REQ - 1 + n) {
            ssize_t r = recv(sv[0], in, 7, 0); /* cut anywhere */
            CU_ASSERT_TRUE_FATAL(r > 0);
            got += (size_t)r;
        }
        CU_ASSERT_EQUAL(tn_ws_guard_unmasked(sv[0]), bad);
        CU_ASSERT_TRUE(tn_ws_guard_arm(sv[0], &owner));
        CU_ASSERT_PTR_EQUAL(tn_ws_guard_take(), bad ? &owner : NULL);
        CU_ASSERT_PTR_NULL(tn_ws_guard_take()); /* once */
        tn_ws_guard_forget(sv[0]);
        CU_ASSERT_FALSE(tn_ws_guard_unmasked(sv[0]));
        close(sv[0]);
        close(sv[1]);
    }
    /* Not a WebSocket stream at arm time: not followed further. */
    int sv[2];
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    tn_ws_guard_watch(sv[0]);
    CU_ASSERT_FALSE(tn_ws_guard_arm(sv[0], &sv));
    CU_ASSERT_FALSE(tn_ws_guard_arm(sv[1], &sv)); /* never watched */
    close(sv[0]);
    close(sv[1]);
}

int
main(void)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("ws_guard", NULL, NULL);
    CU_add_test(s, "unmasked frames found however the bytes are cut", test_every_cut);
    CU_add_test(s, "request forms", test_request_forms);
    CU_add_test(s, "the table sees what recv reads", test_table_sees_recv);
    return tn_test_run();
}
