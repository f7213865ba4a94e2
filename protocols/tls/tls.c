#include "protocols/tls/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tn_tls_ctx {
    SSL_CTX *ssl;
    bool client; /* tn_tls_client_ctx_new */
};

struct tn_tls {
    SSL *ssl;
    tn_buf *cout;     /* ciphertext out: the transport's buffer */
    const uint8_t *p; /* ciphertext in, not yet taken by OpenSSL */
    size_t n;
    char *subject;
    bool ready;
    bool failed;
    bool shut;
    char *err; /* the last failure (allocated then: most connections never fail) */
};

/* ---- one BIO for both directions: reads from the input window, writes to cout ---- */

static BIO_METHOD *bio_method;

static int
bio_write(BIO *b, const char *p, size_t n, size_t *written)
{
    tn_tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (tn_buf_append(t->cout, p, n) != 0)
        return 0; /* over the transport's limit: a hard error, the connection closes */
    *written = n;
    return 1;
}

static int
bio_read(BIO *b, char *p, size_t n, size_t *got)
{
    tn_tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (t->n == 0) {
        BIO_set_retry_read(b);
        return 0;
    }
    size_t k = n < t->n ? n : t->n;
    memcpy(p, t->p, k);
    t->p += k;
    t->n -= k;
    *got = k;
    return 1;
}

static long
bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
    case BIO_CTRL_WPENDING:
        return 0;
    default:
        return 0;
    }
}

static int
bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *
method(void)
{
    /* Made once, on the loop thread that creates the first context (ternd's main). */
    if (!bio_method) {
        bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tern");
        BIO_meth_set_write_ex(bio_method, bio_write);
        BIO_meth_set_read_ex(bio_method, bio_read);
        BIO_meth_set_ctrl(bio_method, bio_ctrl);
        BIO_meth_set_create(bio_method, bio_create);
    }
    return bio_method;
}

/* ---- contexts ---- */

static void
ssl_err(char *err, size_t errlen, const char *what, const char *file)
{
    char e[120] = "unknown error";
    unsigned long code = ERR_peek_last_error();
    if (code)
        ERR_error_string_n(code, e, sizeof e);
    ERR_clear_error();
    if (err)
        snprintf(err, errlen, "%s %s: %s", what, file ? file : "", e);
}

/* The TLS 1.2 cipher list and 1.3 suites both sides take from the config. */
static int
set_ciphers(SSL_CTX *s, const tn_tls_conf *c, char *err, size_t errlen)
{
    if (c->ciphers && SSL_CTX_set_cipher_list(s, c->ciphers) != 1) {
        ssl_err(err, errlen, "no usable TLS 1.2 cipher in", c->ciphers);
        return -1;
    }
    if (c->ciphersuites && SSL_CTX_set_ciphersuites(s, c->ciphersuites) != 1) {
        ssl_err(err, errlen, "no usable TLS 1.3 cipher suite in", c->ciphersuites);
        return -1;
    }
    return 0;
}

tn_tls_ctx *
tn_tls_ctx_new(const tn_tls_conf *c, char *err, size_t errlen)
{
    if (!c->cert_file || !c->key_file) {
        snprintf(err, errlen, "a TLS listener needs a certificate and a key");
        return NULL;
    }
    if (c->verify != TN_TLS_VERIFY_NONE && !c->ca_file) {
        snprintf(err, errlen, "client certificate verification '%s' needs a CA file",
                 tn_tls_verify_name(c->verify));
        return NULL;
    }
    int minv = TLS1_2_VERSION;
    if (c->min_version && strcmp(c->min_version, "1.3") == 0)
        minv = TLS1_3_VERSION;
    else if (c->min_version && strcmp(c->min_version, "1.2") != 0) {
        snprintf(err, errlen, "minimum TLS version '%s': use 1.2 or 1.3", c->min_version);
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX *s = SSL_CTX_new(TLS_server_method());
    if (!s) {
        ssl_err(err, errlen, "cannot make a TLS context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(s, minv);
    /* Record buffers are given back after each record (a storm of new connections must not
     * hold 34 KiB each), except on busy connections (tn_tls_busy): no 16 KiB allocation per
     * record there. No session cache (tickets resume). */
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE);
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
    /* No session tickets. One sent after the handshake crossed the first frame of clients
     * that read and write a TLS connection from two threads at once (stomp.py over Python's
     * ssl lost or corrupted its CONNECT once in about 100 connections); one sent later, on
     * demand, leaves OpenSSL's 16 KiB handshake buffer allocated for good (an idle connection
     * cost 31 KiB instead of 16). A reconnecting TLS 1.3 client does a full handshake. */
    SSL_CTX_set_num_tickets(s, 0);
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(s, c->cert_file) != 1) {
        ssl_err(err, errlen, "cannot read certificate", c->cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(s, c->key_file, SSL_FILETYPE_PEM) != 1) {
        ssl_err(err, errlen, "cannot read private key", c->key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(s) != 1) {
        ssl_err(err, errlen, "the private key does not match the certificate", c->key_file);
        goto fail;
    }
    if (c->ca_file) {
        if (SSL_CTX_load_verify_locations(s, c->ca_file, NULL) != 1) {
            ssl_err(err, errlen, "cannot read CA file", c->ca_file);
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->ca_file);
        if (names)
            SSL_CTX_set_client_CA_list(s, names);
    }
    if (set_ciphers(s, c, err, errlen) != 0)
        goto fail;
    int mode = SSL_VERIFY_NONE;
    if (c->verify == TN_TLS_VERIFY_OPTIONAL)
        mode = SSL_VERIFY_PEER;
    else if (c->verify == TN_TLS_VERIFY_REQUIRE)
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(s, mode, NULL);
    if (c->any_purpose)
        SSL_CTX_set_purpose(s, X509_PURPOSE_ANY);
    tn_tls_ctx *x = tn_xcalloc(1, sizeof *x);
    x->ssl = s;
    method();
    return x;
fail:
    SSL_CTX_free(s);
    return NULL;
}

tn_tls_ctx *
tn_tls_client_ctx_new(const tn_tls_conf *c, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *s = SSL_CTX_new(TLS_client_method());
    if (!s) {
        ssl_err(err, errlen, "cannot make a TLS context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(
        s, c->min_version && strcmp(c->min_version, "1.3") == 0 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE);
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION);
    if (c->cert_file && SSL_CTX_use_certificate_chain_file(s, c->cert_file) != 1) {
        ssl_err(err, errlen, "cannot read certificate", c->cert_file);
        goto fail;
    }
    if (c->key_file && (SSL_CTX_use_PrivateKey_file(s, c->key_file, SSL_FILETYPE_PEM) != 1 ||
                        SSL_CTX_check_private_key(s) != 1)) {
        ssl_err(err, errlen, "cannot use private key", c->key_file);
        goto fail;
    }
    if (c->ca_file && SSL_CTX_load_verify_locations(s, c->ca_file, NULL) != 1) {
        ssl_err(err, errlen, "cannot read CA file", c->ca_file);
        goto fail;
    }
    if (set_ciphers(s, c, err, errlen) != 0)
        goto fail;
    SSL_CTX_set_verify(s, c->ca_file ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (c->any_purpose)
        SSL_CTX_set_purpose(s, X509_PURPOSE_ANY);
    tn_tls_ctx *x = tn_xcalloc(1, sizeof *x);
    x->ssl = s;
    x->client = true;
    method();
    return x;
fail:
    SSL_CTX_free(s);
    return NULL;
}

void
tn_tls_ctx_free(tn_tls_ctx *x)
{
    if (!x)
        return;
    SSL_CTX_free(x->ssl);
    free(x);
}

int
tn_tls_verify_parse(const char *name)
{
    if (!name)
        return -1;
    if (strcmp(name, "none") == 0)
        return TN_TLS_VERIFY_NONE;
    if (strcmp(name, "optional") == 0)
        return TN_TLS_VERIFY_OPTIONAL;
    if (strcmp(name, "require") == 0)
        return TN_TLS_VERIFY_REQUIRE;
    return -1;
}

const char *
tn_tls_verify_name(tn_tls_verify v)
{
    return v == TN_TLS_VERIFY_REQUIRE    ? "require"
           : v == TN_TLS_VERIFY_OPTIONAL ? "optional"
                                         : "none";
}

/* ---- connections ---- */

tn_tls *
tn_tls_new(tn_tls_ctx *x, tn_buf *cout)
{
    tn_tls *t = tn_xcalloc(1, sizeof *t);
    t->cout = cout;
    t->ssl = SSL_new(x->ssl);
    BIO *b = t->ssl ? BIO_new(method()) : NULL;
    if (!b) {
        SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    BIO_set_data(b, t);
    SSL_set_bio(t->ssl, b, b); /* one reference, for both directions */
    if (x->client)
        SSL_set_connect_state(t->ssl);
    else
        SSL_set_accept_state(t->ssl);
    return t;
}

void
tn_tls_free(tn_tls *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    free(t->subject);
    free(t->err);
    free(t);
}

void
tn_tls_input(tn_tls *t, const uint8_t *p, size_t n)
{
    t->p = p;
    t->n = n;
}

static void
set_error(tn_tls *t, int ret)
{
    int e = SSL_get_error(t->ssl, ret);
    unsigned long code = ERR_peek_last_error();
    long vr = SSL_get_verify_result(t->ssl);
    enum { ERRLEN = 160 };
    if (!t->err)
        t->err = tn_xmalloc(ERRLEN);
    if (vr != X509_V_OK)
        snprintf(t->err, ERRLEN, "client certificate: %s", X509_verify_cert_error_string(vr));
    else if (code)
        ERR_error_string_n(code, t->err, ERRLEN);
    else if (e == SSL_ERROR_SYSCALL)
        snprintf(t->err, ERRLEN, "unexpected end of the TLS stream");
    else
        snprintf(t->err, ERRLEN, "TLS error %d", e);
    ERR_clear_error();
    t->failed = true;
}

char *
tn_tls_verified_subject(const struct ssl_st *ssl)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (!peer || SSL_get_verify_result(ssl) != X509_V_OK ||
        SSL_get_verify_mode(ssl) == SSL_VERIFY_NONE)
        return NULL;
    BIO *m = BIO_new(BIO_s_mem());
    if (!m)
        return NULL;
    X509_NAME_print_ex(m, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    char *s;
    long len = BIO_get_mem_data(m, &s);
    char *subject = tn_xmalloc((size_t)len + 1);
    memcpy(subject, s, (size_t)len);
    subject[len] = 0;
    BIO_free(m);
    return subject;
}

static void
handshake_done(tn_tls *t)
{
    t->ready = true;
    t->subject = tn_tls_verified_subject(t->ssl);
}

/* SSL_get_error needs an empty error queue before the call; it almost always is (failures
 * clear it), and emptying an empty one costs more than looking. */
static inline void
clear_errors(void)
{
    if (ERR_peek_error())
        ERR_clear_error();
}

ssize_t
tn_tls_read(tn_tls *t, uint8_t *buf, size_t cap)
{
    if (t->failed)
        return TN_EPROTO;
    if (!t->ready) {
        clear_errors();
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_READ && t->n == 0)
                return 0;
            set_error(t, r);
            return TN_EPROTO;
        }
        handshake_done(t);
    }
    size_t got = 0;
    clear_errors();
    if (SSL_read_ex(t->ssl, buf, cap, &got) == 1)
        return (ssize_t)got;
    int e = SSL_get_error(t->ssl, 0);
    if (e == SSL_ERROR_WANT_READ && t->n == 0)
        return 0;
    if (e == SSL_ERROR_ZERO_RETURN)
        return TN_ECLOSED;
    set_error(t, 0);
    return TN_EPROTO;
}

int
tn_tls_write(tn_tls *t, const void *p, size_t n)
{
    if (!t->ready || t->failed || t->shut)
        return TN_EPROTO;
    const uint8_t *q = p;
    while (n > 0) {
        size_t w = 0;
        clear_errors();
        if (SSL_write_ex(t->ssl, q, n, &w) != 1) {
            set_error(t, 0);
            return TN_EPROTO;
        }
        q += w;
        n -= w;
    }
    return 0;
}

void
tn_tls_shutdown(tn_tls *t)
{
    if (t->shut || !t->ready || t->failed)
        return;
    t->shut = true;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    ERR_clear_error();
}

void
tn_tls_busy(tn_tls *t, bool busy)
{
    /* Only the mode: OpenSSL itself frees the buffers at the next record boundary. (An
     * explicit SSL_free_buffers from here lost a half-received record once in CI.) */
    if (busy)
        SSL_clear_mode(t->ssl, SSL_MODE_RELEASE_BUFFERS);
    else
        SSL_set_mode(t->ssl, SSL_MODE_RELEASE_BUFFERS);
}

bool
tn_tls_ready(const tn_tls *t)
{
    return t->ready;
}

const char *
tn_tls_subject(const tn_tls *t)
{
    return t->subject;
}

const char *
tn_tls_version(const tn_tls *t)
{
    return SSL_get_version(t->ssl);
}

const char *
tn_tls_error(const tn_tls *t)
{
    return t->err ? t->err : "no error";
}
