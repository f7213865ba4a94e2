/* CONNECT: client id rules, authentication, will, session open/resume, CONNACK. */
#include "protocols/mqtt/mqtt_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const tn_session_ops session_ops = {tn_mqtt__deliver, tn_mqtt__kick};

static int
refuse(mconn *c, uint8_t version, uint8_t rc, const char *why)
{
    tn_log_info("MQTT-CONNECT-REFUSED", "%s: %s (CONNACK %u), closing", c->io->peer(c->ioc), why,
                rc);
    tn_mqtt_encode_connack(c->io->out(c->ioc), version, false, rc);
    c->state = ST_CLOSING;
    c->io->set_deadline(c->ioc, 0);
    c->io->close(c->ioc);
    return 0;
}

/* A NUL-terminated copy of a string field, or NULL when absent. */
static char *
dup_field(bool present, tn_mqtt_bytes b)
{
    if (!present)
        return NULL;
    char *s = tn_xmalloc(b.len + 1);
    memcpy(s, b.p, b.len);
    s[b.len] = '\0';
    return s;
}

int
tn_mqtt__connect(mconn *c, const tn_mqtt_connect *p)
{
    tn_mqtt *m = c->m;
    if (p->version == TN_MQTT_V5) /* until MQTT 5 lands, answer as a 3.1.1 server must */
        return refuse(c, TN_MQTT_V311, TN_MQTT_CONNACK_BAD_VERSION, "MQTT 5 is not supported yet");
    c->version = p->version;
    if (tn_broker_standby(m->broker, NULL))
        return refuse(c, p->version, TN_MQTT_CONNACK_UNAVAILABLE,
                      "this node is a standby (connect to the active)");

    char idbuf[32];
    const char *id = (const char *)p->client_id.p;
    size_t id_len = p->client_id.len;
    if (id_len == 0) {
        /* [MQTT-3.1.3-7] [MQTT-3.1.3-8]: an empty id is allowed only with a clean session; 3.1
         * did not allow it at all. */
        if (!p->clean || p->version == TN_MQTT_V31)
            return refuse(c, p->version, TN_MQTT_CONNACK_ID_REJECTED,
                          "empty client id without clean session");
        id_len = (size_t)snprintf(idbuf, sizeof idbuf, "tern-%llx",
                                  (unsigned long long)++m->next_anon_id);
        id = idbuf;
    } else if (p->version == TN_MQTT_V31 && id_len > 23) {
        return refuse(c, p->version, TN_MQTT_CONNACK_ID_REJECTED, "MQTT 3.1 client id over 23");
    } else if (tn_broker_id_reserved(id, id_len)) {
        return refuse(c, p->version, TN_MQTT_CONNACK_ID_REJECTED,
                      "client id starts with U+0001 (reserved for queues)");
    }

    if (m->conf.auth.begin) {
        /* Deciding may take a while (a password hash off the loop, a refusal's delay): the
         * CONNECT is then handled again, whole, once the answer is here (mqtt_input). */
        const tn_auth *au = &m->conf.auth;
        char *who = NULL;
        int rc;
        if (c->auth_job) {
            if (!c->auth_ready)
                return TN_EAGAIN;
            rc = au->finish(au->ctx, c->auth_job, &who);
            c->auth_job = NULL;
            c->auth_ready = false;
        } else {
            char *cid = dup_field(true, (tn_mqtt_bytes){(const uint8_t *)id, (uint32_t)id_len});
            char *user = dup_field(p->has_username, p->username);
            tn_auth_req req = {
                .protocol = "mqtt",
                .client_id = cid,
                .user = user,
                .password = p->has_password ? p->password.p : NULL,
                .password_len = p->has_password ? p->password.len : 0,
                .cert_subject = tn_io_cert_subject(c->io, c->ioc),
            };
            rc = au->begin(au->ctx, &req, &who, &c->auth_job, tn_mqtt__auth_done, c);
            free(cid);
            free(user);
            if (rc == TN_EAGAIN)
                return TN_EAGAIN;
        }
        if (rc != 0) {
            /* [MQTT-3.2.2-5]: CONNACK 4 for a wrong user name or password, 5 for a client not
             * allowed in (an anonymous one where none may connect). */
            char who_s[160];
            snprintf(who_s, sizeof who_s, "login failed for %s%.*s%s (client id %.*s)",
                     p->has_username ? "user '" : "an anonymous client",
                     p->has_username ? (int)(p->username.len > 64 ? 64 : p->username.len) : 0,
                     p->has_username ? (const char *)p->username.p : "", p->has_username ? "'" : "",
                     (int)(id_len > 64 ? 64 : id_len), id);
            tn_log_warn("MQTT-AUTH-FAIL", "%s: %s", c->io->peer(c->ioc), who_s);
            if (rc == TN_EINVAL)
                return refuse(c, p->version, TN_MQTT_CONNACK_BAD_CREDENTIALS,
                              "bad user name or password");
            return refuse(c, p->version, TN_MQTT_CONNACK_NOT_AUTHORIZED, "not authorized");
        }
        free(c->user);
        c->user = who;
    }

    if (p->will) {
        const char *name = tn_mqtt__core_name(m, p->will_topic.p, p->will_topic.len);
        if (!tn_broker_levels_ok(m->broker, name))
            return tn_mqtt__too_deep(c, "will topic");
        char idz[256] = "";
        if (tn_broker_acl(m->broker))
            snprintf(idz, sizeof idz, "%.*s", (int)(id_len < 255 ? id_len : 255), id);
        if (!tn_broker_may(m->broker, c->user, idz, false, name, TN_MAY_WRITE, false)) {
            tn_log_warn("MQTT-ACL-DENIED", "%s: user %s may not publish its will to %s",
                        c->io->peer(c->ioc), c->user ? c->user : "(anonymous)", name);
            return refuse(c, p->version, TN_MQTT_CONNACK_NOT_AUTHORIZED, "will not allowed");
        }
        c->will = tn_message_new(name, p->will_topic.len, p->will_payload.p, p->will_payload.len,
                                 p->will_qos, p->will_retain);
        if (!c->will)
            return refuse(c, p->version, TN_MQTT_CONNACK_UNAVAILABLE, "out of memory");
    }

    bool present = false;
    tn_broker_session_open(m->broker, id, id_len, p->clean, &session_ops, c, &c->s, &present);
    tn_session_set_identity(c->s, c->user, NULL); /* whose permissions its deliveries follow */
    c->state = ST_CONNECTED;
    c->keepalive_ms = (uint32_t)p->keepalive * 1500u; /* 1.5 x keepalive [MQTT-3.1.2-24] */
    c->io->set_deadline(c->ioc, c->keepalive_ms ? c->io->now(c->ioc) + c->keepalive_ms : 0);
    /* 3.1 has no session present flag; 3.1.1 sets it when a stored session resumed. */
    int rc = tn_mqtt_encode_connack(c->io->out(c->ioc), c->version,
                                    present && c->version == TN_MQTT_V311, 0);
    if (rc != 0)
        return tn_mqtt__out_result(c, rc);
    tn_log_debug("MQTT-CONNECT", "%s: client %s connected (clean %d, keepalive %u, present %d)",
                 c->io->peer(c->ioc), tn_session_id(c->s), p->clean, p->keepalive, present);
    tn_session_start(c->s); /* resumed deliveries go out after CONNACK */
    return 0;
}
