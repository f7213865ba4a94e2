/* tls: a server tn_tls against an OpenSSL client, both in memory. */
#include "protocols/tls/tls.h"
#include "tests/unit/test_certs.h"

#include <CUnit/Basic.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

static tn_test_certs certs;

typedef struct pair {
    tn_tls_ctx *sctx;
    tn_tls *s;
    tn_buf sout;   /* server ciphertext out */
    tn_buf plain;  /* plaintext the server decrypted */
    ssize_t s_end; /* the server's last non-data result (0, TN_ECLOSED, TN_EPROTO) */
    SSL_CTX *cctx;
    SSL *c;
    BIO *c_in, *c_out; /* the client's network side */
} pair;

static tn_tls_ctx *
server_ctx(tn_tls_verify v, const char *ca)
{
    char err[200];
    tn_tls_conf c = {
        .cert_file = certs.server_cert, .key_file = certs.server_key, .ca_file = ca, .verify = v};
    tn_tls_ctx *x = tn_tls_ctx_new(&c, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    return x;
}

static void
pair_open(pair *p, tn_tls_verify v, const char *client_cert, const char *client_key, int max_v)
{
    memset(p, 0, sizeof *p);
    p->sctx = server_ctx(v, v == TN_TLS_VERIFY_NONE ? NULL : certs.ca);
    tn_buf_init(&p->sout, 1 << 24);
    tn_buf_init(&p->plain, 1 << 24);
    p->s = tn_tls_new(p->sctx, &p->sout);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p->s);
    p->cctx = SSL_CTX_new(TLS_client_method());
    if (max_v)
        SSL_CTX_set_max_proto_version(p->cctx, max_v);
    SSL_CTX_load_verify_locations(p->cctx, certs.ca, NULL);
    SSL_CTX_set_verify(p->cctx, SSL_VERIFY_PEER, NULL);
    if (client_cert) {
        CU_ASSERT_EQUAL(SSL_CTX_use_certificate_file(p->cctx, client_cert, SSL_FILETYPE_PEM), 1);
        CU_ASSERT_EQUAL(SSL_CTX_use_PrivateKey_file(p->cctx, client_key, SSL_FILETYPE_PEM), 1);
    }
    p->c = SSL_new(p->cctx);
    p->c_in = BIO_new(BIO_s_mem());
    p->c_out = BIO_new(BIO_s_mem());
    SSL_set_bio(p->c, p->c_in, p->c_out);
    SSL_set_connect_state(p->c);
    SSL_set_tlsext_host_name(p->c, "localhost");
}

static void
pair_close(pair *p)
{
    tn_tls_free(p->s);
    tn_tls_ctx_free(p->sctx);
    tn_buf_fini(&p->sout);
    tn_buf_fini(&p->plain);
    SSL_free(p->c);
    SSL_CTX_free(p->cctx);
    ERR_clear_error();
}

/* Moves bytes both ways until neither side has anything to say. */
static void
pump(pair *p)
{
    for (int round = 0; round < 50; round++) {
        bool moved = false;
        if (!SSL_is_init_finished(p->c))
            SSL_do_handshake(p->c);
        char buf[65536];
        int n;
        while ((n = BIO_read(p->c_out, buf, sizeof buf)) > 0) {
            moved = true;
            tn_tls_input(p->s, (const uint8_t *)buf, (size_t)n);
            uint8_t pb[16384];
            ssize_t r;
            while ((r = tn_tls_read(p->s, pb, sizeof pb)) > 0)
                tn_buf_append(&p->plain, pb, (size_t)r);
            p->s_end = r;
        }
        if (p->sout.len) {
            moved = true;
            BIO_write(p->c_in, p->sout.data, (int)p->sout.len);
            p->sout.len = 0;
        }
        if (!moved)
            break;
    }
}

/* What the client can read now. */
static size_t
client_read(pair *p, uint8_t *buf, size_t cap)
{
    size_t got = 0, n;
    while (got < cap && SSL_read_ex(p->c, buf + got, cap - got, &n) == 1)
        got += n;
    return got;
}

static void
test_handshake_and_data(void)
{
    pair p;
    pair_open(&p, TN_TLS_VERIFY_NONE, NULL, NULL, 0);
    pump(&p);
    CU_ASSERT_TRUE(tn_tls_ready(p.s));
    CU_ASSERT_TRUE(SSL_is_init_finished(p.c));
    CU_ASSERT_STRING_EQUAL(tn_tls_version(p.s), "TLSv1.3");
    CU_ASSERT_PTR_NULL(tn_tls_subject(p.s));
    /* client -> server */
    CU_ASSERT_EQUAL(SSL_write(p.c, "hello", 5), 5);
    pump(&p);
    CU_ASSERT_EQUAL(p.plain.len, 5);
    CU_ASSERT_EQUAL(memcmp(p.plain.data, "hello", 5), 0);
    /* server -> client, 1 MiB: many records */
    static uint8_t big[1 << 20], back[1 << 20];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    CU_ASSERT_EQUAL(tn_tls_write(p.s, big, sizeof big), 0);
    pump(&p);
    CU_ASSERT_EQUAL(client_read(&p, back, sizeof back), sizeof back);
    CU_ASSERT_EQUAL(memcmp(big, back, sizeof big), 0);
    pair_close(&p);
}

/* TLS 1.2 works too (the minimum). */
static void
test_tls12(void)
{
    pair p;
    pair_open(&p, TN_TLS_VERIFY_NONE, NULL, NULL, TLS1_2_VERSION);
    pump(&p);
    CU_ASSERT_TRUE(tn_tls_ready(p.s));
    CU_ASSERT_STRING_EQUAL(tn_tls_version(p.s), "TLSv1.2");
    CU_ASSERT_EQUAL(SSL_write(p.c, "x", 1), 1);
    pump(&p);
    CU_ASSERT_EQUAL(p.plain.len, 1);
    pair_close(&p);
}

/* Ciphertext split at every byte still decrypts (records span reads). */
static void
test_split_input(void)
{
    pair p;
    pair_open(&p, TN_TLS_VERIFY_NONE, NULL, NULL, 0);
    pump(&p);
    CU_ASSERT_EQUAL(SSL_write(p.c, "split records", 13), 13);
    char buf[4096];
    int n = BIO_read(p.c_out, buf, sizeof buf);
    CU_ASSERT_TRUE_FATAL(n > 13);
    for (int i = 0; i < n; i++) {
        tn_tls_input(p.s, (const uint8_t *)buf + i, 1);
        uint8_t pb[64];
        ssize_t r;
        while ((r = tn_tls_read(p.s, pb, sizeof pb)) > 0)
            tn_buf_append(&p.plain, pb, (size_t)r);
        CU_ASSERT_EQUAL(r, 0);
    }
    CU_ASSERT_EQUAL(p.plain.len, 13);
    pair_close(&p);
}

static void
test_require_with_cert(void)
{
    pair p;
    pair_open(&p, TN_TLS_VERIFY_REQUIRE, certs.client_cert, certs.client_key, 0);
    pump(&p);
    CU_ASSERT_TRUE_FATAL(tn_tls_ready(p.s));
    CU_ASSERT_PTR_NOT_NULL_FATAL(tn_tls_subject(p.s));
    CU_ASSERT_STRING_EQUAL(tn_tls_subject(p.s), "O=Tern Tests,CN=tern-client");
    pair_close(&p);
}

/* require: no certificate, or one the CA never signed, is refused in the handshake. */
static void
test_require_refuses(void)
{
    const char *cert[] = {NULL, certs.rogue_cert};
    const char *key[] = {NULL, certs.rogue_key};
    for (int i = 0; i < 2; i++) {
        pair p;
        pair_open(&p, TN_TLS_VERIFY_REQUIRE, cert[i], key[i], 0);
        pump(&p);
        CU_ASSERT_FALSE(tn_tls_ready(p.s));
        CU_ASSERT_EQUAL(p.s_end, TN_EPROTO);
        CU_ASSERT_PTR_NULL(tn_tls_subject(p.s));
        /* The client learns it from the alert (TLS 1.3: on its first read). */
        uint8_t b[16];
        CU_ASSERT_EQUAL(client_read(&p, b, sizeof b), 0);
        CU_ASSERT_TRUE(SSL_get_error(p.c, 0) == SSL_ERROR_SSL ||
                       SSL_get_shutdown(p.c) & SSL_RECEIVED_SHUTDOWN);
        pair_close(&p);
    }
}

/* optional: no certificate is fine (no subject); a rogue one is refused. */
static void
test_optional(void)
{
    pair p;
    pair_open(&p, TN_TLS_VERIFY_OPTIONAL, NULL, NULL, 0);
    pump(&p);
    CU_ASSERT_TRUE(tn_tls_ready(p.s));
    CU_ASSERT_PTR_NULL(tn_tls_subject(p.s));
    pair_close(&p);
    pair_open(&p, TN_TLS_VERIFY_OPTIONAL, certs.rogue_cert, certs.rogue_key, 0);
    pump(&p);
    CU_ASSERT_EQUAL(p.s_end, TN_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(tn_tls_error(p.s), "certificate"));
    pair_close(&p);
    pair_open(&p, TN_TLS_VERIFY_OPTIONAL, certs.client_cert, certs.client_key, 0);
    pump(&p);
    CU_ASSERT_PTR_NOT_NULL(tn_tls_subject(p.s));
    pair_close(&p);
}

static void
test_garbage_and_close(void)
{
    pair p;
    pair_open(&p, TN_TLS_VERIFY_NONE, NULL, NULL, 0);
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    tn_tls_input(p.s, (const uint8_t *)http, strlen(http));
    uint8_t b[64];
    CU_ASSERT_EQUAL(tn_tls_read(p.s, b, sizeof b), TN_EPROTO);
    CU_ASSERT_STRING_NOT_EQUAL(tn_tls_error(p.s), "no error");
    CU_ASSERT_EQUAL(tn_tls_read(p.s, b, sizeof b), TN_EPROTO); /* stays failed */
    CU_ASSERT_EQUAL(tn_tls_write(p.s, "x", 1), TN_EPROTO);
    pair_close(&p);

    pair_open(&p, TN_TLS_VERIFY_NONE, NULL, NULL, 0);
    pump(&p);
    SSL_shutdown(p.c);
    pump(&p);
    CU_ASSERT_EQUAL(p.s_end, TN_ECLOSED);
    pair_close(&p);

    /* Our close_notify reaches the client. */
    pair_open(&p, TN_TLS_VERIFY_NONE, NULL, NULL, 0);
    pump(&p);
    tn_tls_shutdown(p.s);
    pump(&p);
    CU_ASSERT_EQUAL(client_read(&p, b, sizeof b), 0);
    CU_ASSERT_EQUAL(SSL_get_error(p.c, 0), SSL_ERROR_ZERO_RETURN);
    pair_close(&p);
}

static void
test_ctx_errors(void)
{
    char err[200];
    tn_tls_conf c = {.cert_file = "/nonexistent.pem", .key_file = certs.server_key};
    CU_ASSERT_PTR_NULL(tn_tls_ctx_new(&c, err, sizeof err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent.pem"));
    c.cert_file = certs.server_cert;
    c.key_file = certs.client_key; /* not the certificate's key */
    CU_ASSERT_PTR_NULL(tn_tls_ctx_new(&c, err, sizeof err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "private key"));
    c.key_file = certs.server_key;
    c.verify = TN_TLS_VERIFY_REQUIRE;
    CU_ASSERT_PTR_NULL(tn_tls_ctx_new(&c, err, sizeof err));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "CA"));
    c.verify = TN_TLS_VERIFY_NONE;
    c.min_version = "1.1";
    CU_ASSERT_PTR_NULL(tn_tls_ctx_new(&c, err, sizeof err));
    c.min_version = "1.3";
    c.ciphers = "NO-SUCH-CIPHER";
    CU_ASSERT_PTR_NULL(tn_tls_ctx_new(&c, err, sizeof err));
    c.ciphers = NULL;
    tn_tls_ctx *x = tn_tls_ctx_new(&c, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL(x);
    tn_tls_ctx_free(x);
    CU_ASSERT_EQUAL(tn_tls_verify_parse("require"), TN_TLS_VERIFY_REQUIRE);
    CU_ASSERT_EQUAL(tn_tls_verify_parse("optional"), TN_TLS_VERIFY_OPTIONAL);
    CU_ASSERT_EQUAL(tn_tls_verify_parse("none"), TN_TLS_VERIFY_NONE);
    CU_ASSERT_EQUAL(tn_tls_verify_parse("yes"), -1);
    ERR_clear_error();
}

/* min_version 1.3 refuses a TLS 1.2 client. */
static void
test_min_version(void)
{
    pair p;
    pair_open(&p, TN_TLS_VERIFY_NONE, NULL, NULL, TLS1_2_VERSION);
    tn_tls_ctx_free(p.sctx);
    tn_tls_free(p.s);
    char err[200];
    tn_tls_conf c = {
        .cert_file = certs.server_cert, .key_file = certs.server_key, .min_version = "1.3"};
    p.sctx = tn_tls_ctx_new(&c, err, sizeof err);
    p.s = tn_tls_new(p.sctx, &p.sout);
    pump(&p);
    CU_ASSERT_FALSE(tn_tls_ready(p.s));
    CU_ASSERT_EQUAL(p.s_end, TN_EPROTO);
    pair_close(&p);
}

/* Both ends tn_tls: a client context (a pair's standby) against a server requiring client
 * certificates; and a client that trusts another CA refuses the server. */
static bool
tn_pump(tn_tls *a, tn_buf *aout, tn_tls *b, tn_buf *bout, tn_buf *bplain)
{
    bool failed = false;
    for (int round = 0; round < 50; round++) {
        uint8_t buf[16384];
        ssize_t r;
        bool moved = aout->len || bout->len;
        if (aout->len) {
            tn_buf tmp;
            tn_buf_init(&tmp, SIZE_MAX);
            tn_buf_append(&tmp, aout->data, aout->len);
            aout->len = 0;
            tn_tls_input(b, tmp.data, tmp.len);
            while ((r = tn_tls_read(b, buf, sizeof buf)) > 0)
                tn_buf_append(bplain, buf, (size_t)r);
            failed |= r == TN_EPROTO;
            tn_buf_fini(&tmp);
        }
        if (bout->len) {
            tn_buf tmp;
            tn_buf_init(&tmp, SIZE_MAX);
            tn_buf_append(&tmp, bout->data, bout->len);
            bout->len = 0;
            tn_tls_input(a, tmp.data, tmp.len);
            while ((r = tn_tls_read(a, buf, sizeof buf)) > 0)
                ;
            failed |= r == TN_EPROTO;
            tn_buf_fini(&tmp);
        }
        if (!moved)
            break;
    }
    return !failed;
}

static void
test_client_ctx(void)
{
    char err[200];
    tn_tls_conf cc = {
        .cert_file = certs.client_cert, .key_file = certs.client_key, .ca_file = certs.ca};
    tn_tls_ctx *cx = tn_tls_client_ctx_new(&cc, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cx);
    tn_tls_ctx *sx = server_ctx(TN_TLS_VERIFY_REQUIRE, certs.ca);
    tn_buf cout, sout, splain;
    tn_buf_init(&cout, 1 << 20);
    tn_buf_init(&sout, 1 << 20);
    tn_buf_init(&splain, 1 << 20);
    tn_tls *c = tn_tls_new(cx, &cout), *sv = tn_tls_new(sx, &sout);
    uint8_t buf[64];
    CU_ASSERT_EQUAL(tn_tls_read(c, buf, sizeof buf), 0); /* the ClientHello */
    CU_ASSERT_TRUE(cout.len > 0);
    CU_ASSERT_TRUE(tn_pump(c, &cout, sv, &sout, &splain));
    CU_ASSERT_TRUE(tn_tls_ready(c));
    CU_ASSERT_TRUE(tn_tls_ready(sv));
    CU_ASSERT_PTR_NOT_NULL(tn_tls_subject(sv)); /* the server verified the client */
    CU_ASSERT_EQUAL(tn_tls_write(c, "records", 7), 0);
    CU_ASSERT_TRUE(tn_pump(c, &cout, sv, &sout, &splain));
    CU_ASSERT_EQUAL(splain.len, 7);
    tn_tls_free(c);
    tn_tls_free(sv);
    tn_tls_ctx_free(cx);
    /* A client that trusts only a rogue certificate as its CA refuses the server. */
    cout.len = sout.len = splain.len = 0;
    tn_tls_conf rc = {.ca_file = certs.rogue_cert};
    cx = tn_tls_client_ctx_new(&rc, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cx);
    tn_tls_ctx *sx2 = server_ctx(TN_TLS_VERIFY_NONE, NULL);
    c = tn_tls_new(cx, &cout);
    sv = tn_tls_new(sx2, &sout);
    CU_ASSERT_EQUAL(tn_tls_read(c, buf, sizeof buf), 0);
    CU_ASSERT_FALSE(tn_pump(c, &cout, sv, &sout, &splain));
    CU_ASSERT_FALSE(tn_tls_ready(c));
    tn_tls_free(c);
    tn_tls_free(sv);
    tn_tls_ctx_free(cx);
    tn_tls_ctx_free(sx);
    tn_tls_ctx_free(sx2);
    tn_buf_fini(&cout);
    tn_buf_fini(&sout);
    tn_buf_fini(&splain);
    ERR_clear_error();
}

int
main(void)
{
    tn_test_certs_make(&certs);
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("tls", NULL, NULL);
    CU_add_test(s, "handshake and data both ways", test_handshake_and_data);
    CU_add_test(s, "TLS 1.2", test_tls12);
    CU_add_test(s, "records split across inputs", test_split_input);
    CU_add_test(s, "require: client certificate subject", test_require_with_cert);
    CU_add_test(s, "require: refused without a CA-signed certificate", test_require_refuses);
    CU_add_test(s, "optional", test_optional);
    CU_add_test(s, "garbage, close_notify both ways", test_garbage_and_close);
    CU_add_test(s, "context errors", test_ctx_errors);
    CU_add_test(s, "minimum version", test_min_version);
    CU_add_test(s, "client context against a tn_tls server", test_client_ctx);
    CU_basic_set_mode(CU_BRM_NORMAL);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    tn_test_certs_remove(&certs);
    return failed ? 1 : 0;
}
