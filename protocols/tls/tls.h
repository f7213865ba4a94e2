/*
 * tls: TLS (OpenSSL) as a sans-IO filter between a socket and an adapter: ciphertext in,
 * plaintext out, and the reverse. The transport (net) reads the socket, hands the bytes to
 * tn_tls_input()/tn_tls_read(), and writes what lands in its ciphertext buffer; nothing here
 * touches a socket, so the unit tests run a client and a server in memory.
 *
 * Memory: OpenSSL's record buffers are released after each record unless the transport says
 * the connection is busy (tn_tls_busy), and no server-side session cache is kept (resumption
 * uses stateless tickets), so an idle TLS connection keeps only its SSL object and its keys.
 *
 * Thread: each tn_tls on one thread; a tn_tls_ctx may be shared (read-only after creation).
 */
#ifndef TN_TLS_H
#define TN_TLS_H

#include "core/base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef enum {
    TN_TLS_VERIFY_NONE = 0, /* no client certificate asked for */
    TN_TLS_VERIFY_OPTIONAL, /* asked for; one that is sent must be signed by the CA */
    TN_TLS_VERIFY_REQUIRE,  /* a client without a certificate signed by the CA is refused */
} tn_tls_verify;

typedef struct tn_tls_conf {
    const char *cert_file; /* PEM certificate chain (server's first) */
    const char *key_file;  /* PEM private key */
    const char *ca_file;   /* PEM CA certificates for client certificates (NULL: none) */
    tn_tls_verify verify;
    const char *min_version;  /* "1.2" (default, NULL) or "1.3" */
    const char *ciphers;      /* TLS 1.2 cipher list, OpenSSL syntax (NULL: OpenSSL's default) */
    const char *ciphersuites; /* TLS 1.3 suites, OpenSSL syntax (NULL: OpenSSL's default) */
    /* The peer's certificate need not be marked for its side's use (a pair's nodes show each
     * other the server certificate they give clients). */
    bool any_purpose;
} tn_tls_conf;

typedef struct tn_tls_ctx tn_tls_ctx;
typedef struct tn_tls tn_tls;

/* Loads the certificate, key and CA and checks they belong together. NULL with one line in err
 * ("cannot read certificate FILE: reason", ...) on failure. */
tn_tls_ctx *tn_tls_ctx_new(const tn_tls_conf *c, char *err, size_t errlen);
/* A client context (a pair's standby connecting to its active): the certificate and key, if
 * given, are presented to the server; with ca_file the server's certificate must be signed by
 * that CA (the chain is checked, not the name: a pair's nodes are known by their CA). verify
 * is not used. Connections made from it (tn_tls_new) start the handshake on their first
 * tn_tls_read(), which writes the ClientHello to cout. */
tn_tls_ctx *tn_tls_client_ctx_new(const tn_tls_conf *c, char *err, size_t errlen);
void tn_tls_ctx_free(tn_tls_ctx *x);

/* "none", "optional", "require" <-> tn_tls_verify; -1 for an unknown name. */
int tn_tls_verify_parse(const char *name);
const char *tn_tls_verify_name(tn_tls_verify v);

/* A connection (server side, or client side from a client context); its output (handshake, records,
 * alerts) is appended to cout, which must stay valid for the tn_tls's life (the transport's
 * ciphertext buffer). */
tn_tls *tn_tls_new(tn_tls_ctx *x, tn_buf *cout);
void tn_tls_free(tn_tls *t);

/* Ciphertext p[0..n) arrived. p must stay valid until tn_tls_read() returns 0 or an error; it is
 * not copied unless a record is split across two arrivals (OpenSSL keeps the partial record). */
void tn_tls_input(tn_tls *t, const uint8_t *p, size_t n);
/* Runs the handshake as far as the input allows, then decrypts into buf[0..cap): returns the
 * plaintext bytes (> 0; call again), 0 when all input is used (wait for more),
 * TN_ECLOSED when the peer sent close_notify, or TN_EPROTO on a failed handshake or a bad
 * record (the alert is in cout; tn_tls_error() says why). */
ssize_t tn_tls_read(tn_tls *t, uint8_t *buf, size_t cap);
/* Encrypts p[0..n) into cout; 0, or TN_EPROTO (not ready: handshake unfinished or failed). */
int tn_tls_write(tn_tls *t, const void *p, size_t n);
/* Appends close_notify to cout (once). */
void tn_tls_shutdown(tn_tls *t);
/* Whether the connection has been busy lately: busy ones keep OpenSSL's record buffers (about
 * 34 KiB) between records; others (the default) give them back after each record. */
void tn_tls_busy(tn_tls *t, bool busy);

bool tn_tls_ready(const tn_tls *t); /* the handshake is done */
/* The verified client certificate's subject in RFC 2253 form ("CN=dev-1,O=Acme"), or NULL. */
const char *tn_tls_subject(const tn_tls *t);
const char *tn_tls_version(const tn_tls *t); /* "TLSv1.3", ... */
const char *tn_tls_error(const tn_tls *t);   /* the last failure, for logs */

struct ssl_st;
/* The subject (RFC 2253) of the client certificate an OpenSSL connection verified against its
 * CA, allocated (free it), or NULL: none, not verified, or verification off. For transports
 * that hold their own SSL (libwebsockets' wss). */
char *tn_tls_verified_subject(const struct ssl_st *ssl);

#endif
