/*
 * Fuzz target for the TLS filter (tls.c over OpenSSL): the input is what a client sends to a
 * TLS listener, before and after the handshake. It is fed to a fresh server connection in
 * pieces cut at points drawn from the input, reading after each piece as net.c does.
 *
 * Checked: no crash or leak; once a read fails the connection stays failed and writes are
 * refused; nothing is written to the peer past the ciphertext buffer's limit; a connection that
 * is not ready never yields plaintext. Failures abort.
 */
#include "protocols/tls/tls.h"
#include "tests/unit/test_certs.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static tn_tls_ctx *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
init(void)
{
    tn_test_certs certs;
    tn_test_certs_make(&certs);
    char err[200];
    tn_tls_conf c = {.cert_file = certs.server_cert,
                     .key_file = certs.server_key,
                     .ca_file = certs.ca,
                     .verify = TN_TLS_VERIFY_OPTIONAL};
    ctx = tn_tls_ctx_new(&c, err, sizeof err);
    CHECK(ctx);
    tn_test_certs_remove(&certs);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx)
        init();
    tn_buf out;
    tn_buf_init(&out, 1 << 20);
    tn_tls *t = tn_tls_new(ctx, &out);
    CHECK(t);
    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < size && i < 64; i++)
        seed = (seed ^ data[i]) * 16777619u;
    size_t at = 0;
    bool failed = false;
    while (at < size) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 8) % 700;
        if (n > size - at)
            n = size - at;
        uint8_t *piece = malloc(n); /* its own allocation: a pointer kept past the read shows */
        memcpy(piece, data + at, n);
        tn_tls_input(t, piece, n);
        for (;;) {
            uint8_t buf[4096];
            ssize_t r = tn_tls_read(t, buf, sizeof buf);
            if (r > 0) {
                CHECK(!failed && tn_tls_ready(t));
                continue;
            }
            if (r == TN_EPROTO) {
                failed = true;
                CHECK(tn_tls_write(t, "x", 1) == TN_EPROTO);
            }
            CHECK(r == 0 || r == TN_EPROTO || r == TN_ECLOSED);
            break;
        }
        free(piece);
        CHECK(out.len <= out.max);
        out.len = 0; /* "written" */
        at += n;
        if (failed)
            break;
    }
    tn_tls_shutdown(t);
    tn_tls_free(t);
    tn_buf_fini(&out);
    return 0;
}
