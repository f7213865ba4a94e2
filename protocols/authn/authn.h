/*
 * authn: the authenticator every adapter asks (protocols/io.h's tn_auth): users from a password
 * file (core/auth, Mosquitto's format), anonymous clients allowed or not, the TLS client
 * certificate's CN as the user name on request. Password hashes run on libuv's thread pool, so
 * a login never stalls other clients' traffic; a refusal is answered after fail_delay_ms, also
 * without blocking the loop. tn_authn_reload() (SIGHUP) rereads the files: clients already
 * connected keep their identity; new logins use the new files at once.
 *
 * Thread: the loop thread only (the hashes run elsewhere, on an immutable copy of the users).
 */
#ifndef TN_AUTHN_H
#define TN_AUTHN_H

#include "core/auth/auth.h"
#include "protocols/io.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct tn_authn tn_authn;

typedef struct tn_authn_conf {
    uv_loop_t *loop;
    const char *password_file; /* NULL: no users; every client is anonymous */
    const char *acl_file;      /* NULL: no ACL (everything allowed) */
    bool allow_anonymous;      /* clients without a user name (and, without a password file,
                                  every client) may connect */
    uint32_t fail_delay_ms;    /* a refused login is answered this much later */
    bool identity_as_username; /* the verified client certificate's CN is the user name (no
                                  password asked); no certificate: refused */
} tn_authn_conf;

/* Loads the files (err: "FILE:LINE: what is wrong"). */
int tn_authn_new(const tn_authn_conf *conf, tn_authn **out, char *err, size_t errlen);
/* Rereads both files; on failure the old ones stay in force. */
int tn_authn_reload(tn_authn *a, char *err, size_t errlen);
/* Jobs still running are dropped (their done() never comes); free after every connection is
 * gone. */
void tn_authn_free(tn_authn *a);
/* The tn_auth adapters are given. */
tn_auth tn_authn_iface(tn_authn *a);
/* The ACL in force (NULL: none): valid until the next reload. */
const tn_acl *tn_authn_acl(const tn_authn *a);
/* Users in the password file (0 without one). */
size_t tn_authn_users(const tn_authn *a);

#endif
