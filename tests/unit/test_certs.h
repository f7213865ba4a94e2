/*
 * Test certificates made in code (OpenSSL), for unit tests and fuzz targets that need TLS:
 * a CA, a server certificate (CN=localhost) and a client certificate (CN=tern-client,O=Tern
 * Tests) signed by it, and a self-signed "rogue" client certificate, written as PEM files into a
 * fresh temporary folder. EC P-256: quick to make.
 */
#ifndef TN_TEST_CERTS_H
#define TN_TEST_CERTS_H

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tn_test_certs {
    char dir[64];
    char ca[96], server_cert[96], server_key[96], client_cert[96], client_key[96];
    char rogue_cert[96], rogue_key[96];
} tn_test_certs;

static EVP_PKEY *
tn_test_key(void)
{
    return EVP_EC_gen("P-256");
}

static X509 *
tn_test_cert(EVP_PKEY *key, const char *cn, const char *org, X509 *issuer, EVP_PKEY *issuer_key,
             bool ca, long serial)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
    X509_set_pubkey(x, key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    if (org)
        X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)org, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    const char *ext[][2] = {
        {"basicConstraints", ca ? "critical,CA:TRUE" : "CA:FALSE"},
        {"subjectAltName", ca ? NULL : "DNS:localhost,IP:127.0.0.1"},
        {"keyUsage", ca ? "critical,keyCertSign,cRLSign" : NULL},
    };
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        if (!ext[i][1])
            continue;
        X509_EXTENSION *e = X509V3_EXT_conf(NULL, &v3, ext[i][0], ext[i][1]);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256());
    return x;
}

static void
tn_test_write(const char *path, X509 *x, EVP_PKEY *k)
{
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    if (x)
        PEM_write_X509(f, x);
    if (k)
        PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
}

/* Makes the certificates; aborts if it cannot. */
static void
tn_test_certs_make(tn_test_certs *c)
{
    snprintf(c->dir, sizeof c->dir, "/tmp/tern-certs-XXXXXX");
    if (!mkdtemp(c->dir))
        abort();
#define TN_P(field, name) snprintf(c->field, sizeof c->field, "%s/" name, c->dir)
    TN_P(ca, "ca.pem");
    TN_P(server_cert, "server.pem");
    TN_P(server_key, "server.key");
    TN_P(client_cert, "client.pem");
    TN_P(client_key, "client.key");
    TN_P(rogue_cert, "rogue.pem");
    TN_P(rogue_key, "rogue.key");
#undef TN_P
    EVP_PKEY *cak = tn_test_key(), *sk = tn_test_key(), *ck = tn_test_key(), *rk = tn_test_key();
    X509 *ca = tn_test_cert(cak, "Tern Test CA", NULL, NULL, NULL, true, 1);
    X509 *s = tn_test_cert(sk, "localhost", NULL, ca, cak, false, 2);
    X509 *cl = tn_test_cert(ck, "tern-client", "Tern Tests", ca, cak, false, 3);
    X509 *r = tn_test_cert(rk, "rogue", NULL, NULL, NULL, false, 4);
    tn_test_write(c->ca, ca, NULL);
    tn_test_write(c->server_cert, s, NULL);
    tn_test_write(c->server_key, NULL, sk);
    tn_test_write(c->client_cert, cl, NULL);
    tn_test_write(c->client_key, NULL, ck);
    tn_test_write(c->rogue_cert, r, NULL);
    tn_test_write(c->rogue_key, NULL, rk);
    X509_free(ca);
    X509_free(s);
    X509_free(cl);
    X509_free(r);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(sk);
    EVP_PKEY_free(ck);
    EVP_PKEY_free(rk);
}

static void
tn_test_certs_remove(tn_test_certs *c)
{
    const char *files[] = {c->ca,         c->server_cert, c->server_key, c->client_cert,
                           c->client_key, c->rogue_cert,  c->rogue_key};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        remove(files[i]);
    remove(c->dir);
}

#endif
