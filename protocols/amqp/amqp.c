/* The AMQP 1.0 adapter: proton's connection driver on tn_io, links to core queues and topics
 * (see amqp.h). */
#include "protocols/amqp/amqp.h"

#include "core/base/base.h"
#include "protocols/amqp/codec.h"

#include <inttypes.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/sasl.h>
#include <proton/sasl_plugin.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PRODUCT "Tern"
#define DEFAULT_MAX_FRAME (128u * 1024)

/* The property holding what AMQP receivers get back verbatim: a body-kind byte, then the
 * message-annotations, properties and application-properties sections as they came. Keys
 * starting with \x01 are the core's own: no protocol shows them as headers. */
#define AMQP_KEY                                                                                   \
    "\x01"                                                                                         \
    "amqp"
#define AMQP_KEY_LEN 5

enum { DEST_QUEUE, DEST_TOPIC };
enum { LATER_ACK, LATER_DEAD };
/* What waits for the authenticator's job (aconn.auth_wait). */
enum { AUTH_NONE, AUTH_SASL, AUTH_OPEN };

struct tn_amqp {
    tn_broker *b;
    tn_amqp_conf conf;
    uint32_t n_conns; /* open connections */
    tn_buf props;     /* scratch: a message's core properties */
    tn_buf enc;       /* scratch: a message being encoded */
    tn_buf rx;        /* scratch: a whole delivery received in one go */
    tn_buf ann;       /* scratch: merged message annotations */
};

typedef struct aconn aconn;

typedef struct alink {
    aconn *c;
    pn_link_t *l;
    struct alink *next, *prev;
    bool sender; /* ours sends: the client receives */
    bool dead;   /* closed on our side; freed once no reply waits on it */
    bool presettled;
    bool starved; /* deliver() said TN_EAGAIN: offer again when there is room */
    bool durable, shared, lookup;
    int kind;
    char *name;       /* core name: the queue, or the topic or filter */
    char *address;    /* shown in the attach / to */
    tn_session *q;    /* target queue (client sends to a queue) */
    tn_session *s;    /* sending: the queue consumed, or the topic subscription's session */
    tn_consumer *k;   /* sending on a queue: our consumer */
    tn_session *temp; /* a dynamic node this link made (deleted with it) */
    char *sid;        /* lookup: the subscription asked about */
    uint32_t pending; /* dispositions waiting for the journal */
    tn_buf part;      /* a delivery arriving in several transfers */
    tn_message *big;  /* a large message whose body arrives straight into it */
    uint8_t *big_dst; /* its payload */
    size_t big_got;   /* payload bytes so far */
    size_t big_extra; /* bytes after the payload (a footer) */
    bool big_wait;    /* waits for room in the incoming budget */
    bool big_drop;    /* refused: the rest of the delivery is read and dropped */
    uint64_t tag;
    uint64_t *refused; /* undeliverable-here: message ids not to offer it again */
    size_t n_refused;
} alink;

typedef struct later {
    alink *lk;
    tn_delivery *d;
    int what;
} later;

struct aconn {
    tn_amqp *a;
    const tn_io *io;
    void *ioc;
    pn_connection_driver_t d;
    uint64_t serial;
    uint64_t opened_at;
    uint64_t last_rx; /* loop time input last arrived */
    bool open;        /* the client's open arrived */
    bool closing;     /* io->close() called */
    bool pumping;     /* inside pump() */
    bool woken;       /* io->wake() asked for, input() not yet run */
    bool authed;      /* SASL outcome ok (or no SASL layer, checked at open) */
    bool refused;     /* SASL outcome failed: nothing after the sasl-init goes to proton */
    bool logged;      /* the connection's error was logged */
    bool got_input;
    bool admitted; /* past tn_broker_hold (proton may see the input) */
    tn_hold *held; /* tn_broker_hold, until woken */
    /* The frame scanner (scan()): where the input stands, before proton sees it. */
    uint8_t sc_phase; /* SC_* */
    uint8_t sc_have;  /* bytes of sc_buf gathered */
    uint8_t sc_inits; /* sasl-init frames seen */
    bool sc_opened;   /* the open went by */
    bool sc_cut;      /* a SASL frame: stop at its end (the outcome may have to wait) */
    uint8_t sc_buf[11];
    uint32_t sc_skip; /* bytes of the current frame's body still to pass */ /* any byte arrived */
    char *container;
    char *user;            /* who the authenticator says it is (for permissions; proton keeps the
                              pointer as the SASL user name), or NULL: anonymous */
    tn_auth_job *auth_job; /* the authenticator is deciding: no input is processed meanwhile */
    uint8_t auth_wait;     /* AUTH_*: what auth_done() continues */
    alink *links;
    uint32_t n_links;
    uint32_t n_dyn;
    uint64_t next_tick;
    tn_flow flow;
    tn_replies replies;
    tn_intake intake;
    later *later;
    size_t n_later, cap_later;
};

static void pump(aconn *c);
static void link_release(alink *lk, bool closed);
static void link_unlink_free(alink *lk);
static void on_transfer(aconn *c, alink *lk, pn_delivery_t *pd);

static void
poke(aconn *c)
{
    if (!c->woken && !c->pumping && !c->closing) {
        c->woken = true;
        c->io->wake(c->ioc);
    }
}

static const char *
peer(aconn *c)
{
    return c->io->peer(c->ioc);
}

static uint64_t
epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- errors ---- */

static void link_fail(alink *lk, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Closes the link with an error condition (logged once, here). */
static void
link_fail(alink *lk, const char *cond, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tn_log_info("AMQP-LINK-ERROR", "%s: link '%s': %s: %s; detaching", peer(lk->c),
                pn_link_name(lk->l), cond, msg);
    pn_condition_set_name(pn_link_condition(lk->l), cond);
    pn_condition_set_description(pn_link_condition(lk->l), msg);
    if (pn_link_state(lk->l) & PN_LOCAL_UNINIT) {
        /* Refused: attach with no node on our side, then detach with the error. */
        pn_link_t *l = lk->l;
        if (lk->sender) {
            pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
            pn_terminus_set_type(pn_link_source(l), PN_UNSPECIFIED);
        } else {
            pn_terminus_copy(pn_link_source(l), pn_link_remote_source(l));
            pn_terminus_set_type(pn_link_target(l), PN_UNSPECIFIED);
        }
        pn_link_open(l);
    }
    pn_link_close(lk->l);
    link_release(lk, false);
}

static void
conn_fail(aconn *c, const char *cond, const char *msg)
{
    pn_condition_t *pc = pn_connection_condition(c->d.connection);
    if (!pn_condition_is_set(pc)) {
        pn_condition_set_name(pc, cond);
        pn_condition_set_description(pc, msg);
    }
    if (!c->logged) {
        c->logged = true;
        tn_log_info("AMQP-ERROR", "%s: %s: %s; closing", peer(c), cond, msg);
    }
    pn_connection_close(c->d.connection);
}

/* ---- SASL: PLAIN and ANONYMOUS, checked by the shared authenticator ---- */

static void auth_done(void *arg);

/* Asks the authenticator about what the client presented (user NULL: anonymous). Returns 0 (with
 * *who, malloc'd or NULL), TN_EDENIED or TN_EINVAL when decided at once; or TN_EAGAIN: reads
 * are paused and auth_done() continues with what c->auth_wait says. Without an authenticator
 * everyone may connect, as the name they give. */
static int
auth_begin(aconn *c, const char *user, const uint8_t *pw, size_t pwlen, char **who)
{
    const tn_auth *au = &c->a->conf.auth;
    *who = NULL;
    if (!au->begin) {
        *who = user ? tn_xstrdup(user) : NULL;
        return 0;
    }
    tn_auth_req req = {
        .protocol = "amqp",
        .client_id = c->container,
        .user = user,
        .password = pw,
        .password_len = pwlen,
        .cert_subject = tn_io_cert_subject(c->io, c->ioc),
    };
    int rc = au->begin(au->ctx, &req, who, &c->auth_job, auth_done, c);
    if (rc == TN_EAGAIN) {
        tn_assert(c->auth_job);
        c->io->pause(c->ioc, true);
    }
    return rc;
}

/* The SASL outcome: proton writes it with the next pump. who (taken): the user, on rc 0. */
static void
sasl_outcome(aconn *c, pn_transport_t *t, int rc, char *who)
{
    if (rc == 0) {
        free(c->user);
        c->user = who;
        c->authed = true;
        pnx_sasl_set_succeeded(t, c->user ? c->user : "anonymous", NULL); /* keeps the pointer */
    } else {
        free(who);
        c->refused = true;
        const char *mech = pnx_sasl_get_selected_mechanism(t);
        tn_log_info("AMQP-AUTH", "%s: SASL %s refused (amqp:unauthorized-access%s); closing",
                    peer(c), mech ? mech : "",
                    rc == TN_EINVAL ? ": bad user name or password" : "");
        c->logged = true; /* proton's transport error that follows is this one */
        pnx_sasl_set_failed(t);
    }
    pnx_sasl_set_desired_state(t, SASL_POSTED_OUTCOME);
}

static void open_answer(aconn *c, int rc, char *who);

/* The authenticator's job is done: the SASL outcome or the open's answer goes out, and input
 * is read again (what came after the sasl-init or the open was kept). */
static void
auth_done(void *arg)
{
    aconn *c = arg;
    const tn_auth *au = &c->a->conf.auth;
    tn_auth_job *job = c->auth_job;
    uint8_t wait = c->auth_wait;
    c->auth_job = NULL;
    c->auth_wait = AUTH_NONE;
    char *who = NULL;
    int rc = au->finish(au->ctx, job, &who);
    if (c->closing) { /* closing anyway (the connect deadline passed): nothing to answer */
        free(who);
        return;
    }
    c->last_rx = c->io->now(c->ioc); /* not read meanwhile: its frames could not be heard */
    if (wait == AUTH_SASL)
        sasl_outcome(c, c->d.transport, rc, who);
    else
        open_answer(c, rc, who);
    c->io->pause(c->ioc, false);
    poke(c); /* input() pumps: proton writes the answer and reads on */
}

static const char *
sasl_list(pn_transport_t *t)
{
    (void)t;
    return "PLAIN ANONYMOUS";
}

static bool
sasl_init_server(pn_transport_t *t)
{
    pnx_sasl_set_desired_state(t, SASL_POSTED_MECHANISMS);
    return true;
}

static bool
sasl_false(pn_transport_t *t)
{
    (void)t;
    return false;
}

static void
sasl_nop(pn_transport_t *t)
{
    (void)t;
}

/* A sasl-init. scan() gave proton nothing after it: when the authenticator takes time, no
 * outcome is set (proton waits for it, in SASL_POSTED_MECHANISMS) until auth_done(). */
static void
sasl_process_init(pn_transport_t *t, const char *mech, const pn_bytes_t *recv)
{
    aconn *c = pnx_sasl_get_context(t);
    int rc = TN_EINVAL; /* a sasl-init without a mechanism (malformed), or another one */
    char *who = NULL;
    if (!mech)
        mech = "";
    if (!strcmp(mech, "ANONYMOUS")) {
        rc = auth_begin(c, NULL, NULL, 0, &who);
    } else if (!strcmp(mech, "PLAIN") && recv && recv->start && recv->size) {
        /* authzid NUL authcid NUL passwd (RFC 4616) */
        const char *p = recv->start, *end = recv->start + recv->size;
        const char *u = memchr(p, 0, recv->size);
        const char *pw = u ? memchr(u + 1, 0, (size_t)(end - u - 1)) : NULL;
        if (u && pw && pw > u + 1) {
            size_t ulen = (size_t)(pw - u - 1);
            char *name = tn_xmalloc(ulen + 1);
            memcpy(name, u + 1, ulen);
            name[ulen] = '\0';
            rc = auth_begin(c, name, (const uint8_t *)pw + 1, (size_t)(end - pw - 1), &who);
            free(name); /* begin() copied it */
        }
    }
    if (rc == TN_EAGAIN) {
        c->auth_wait = AUTH_SASL;
        return;
    }
    sasl_outcome(c, t, rc, who);
}

static void
sasl_bytes_nop(pn_transport_t *t, const pn_bytes_t *recv)
{
    (void)t;
    (void)recv;
}

static bool
sasl_mechs_nop(pn_transport_t *t, const char *mechs)
{
    (void)t;
    (void)mechs;
    return false;
}

static ssize_t
sasl_max_enc(pn_transport_t *t)
{
    (void)t;
    return 0;
}

static ssize_t
sasl_code(pn_transport_t *t, pn_bytes_t in, pn_bytes_t *out)
{
    (void)t;
    (void)in;
    (void)out;
    return 0;
}

static const pnx_sasl_implementation sasl_impl = {
    .free = sasl_nop,
    .list_mechanisms = sasl_list,
    .init_server = sasl_init_server,
    .init_client = sasl_false,
    .prepare_write = sasl_nop,
    .process_init = sasl_process_init,
    .process_response = sasl_bytes_nop,
    .process_mechanisms = sasl_mechs_nop,
    .process_challenge = sasl_bytes_nop,
    .process_outcome = sasl_bytes_nop,
    .can_encrypt = sasl_false,
    .max_encrypt_size = sasl_max_enc,
    .encode = sasl_code,
    .decode = sasl_code,
};

/* ---- addresses ---- */

typedef struct caps {
    bool queue, topic, temp_queue, temp_topic, shared, global;
} caps;

static void
caps_one(caps *cp, const char *s, size_t n)
{
#define CAP(lit, f)                                                                                \
    if (n == sizeof(lit) - 1 && memcmp(s, lit, n) == 0)                                            \
    cp->f = true
    CAP("queue", queue);
    CAP("topic", topic);
    CAP("temporary-queue", temp_queue);
    CAP("temporary-topic", temp_topic);
    CAP("shared", shared);
    CAP("global", global);
#undef CAP
}

/* Capabilities come as one symbol or an array (or list) of them. */
static caps
caps_of(pn_terminus_t *t)
{
    caps cp = {0};
    pn_data_t *d = pn_terminus_capabilities(t);
    if (!d)
        return cp;
    pn_data_rewind(d);
    if (!pn_data_next(d))
        return cp;
    pn_type_t ty = pn_data_type(d);
    if (ty == PN_SYMBOL || ty == PN_STRING) {
        pn_bytes_t b = ty == PN_SYMBOL ? pn_data_get_symbol(d) : pn_data_get_string(d);
        caps_one(&cp, b.start, b.size);
    } else if ((ty == PN_ARRAY || ty == PN_LIST) && pn_data_enter(d)) {
        while (pn_data_next(d)) {
            pn_type_t et = pn_data_type(d);
            if (et == PN_SYMBOL || et == PN_STRING) {
                pn_bytes_t b = et == PN_SYMBOL ? pn_data_get_symbol(d) : pn_data_get_string(d);
                caps_one(&cp, b.start, b.size);
            }
        }
        pn_data_exit(d);
    }
    pn_data_rewind(d);
    return cp;
}

typedef struct adest {
    int kind;
    const char *name; /* core name (points into the address) */
} adest;

static bool
strip(const char *s, const char *prefix, const char **rest)
{
    size_t n = strlen(prefix);
    if (strncmp(s, prefix, n) != 0)
        return false;
    *rest = s + n;
    return true;
}

/* An attach the ACL does not allow: refused with amqp:unauthorized-access (the connection goes
 * on). */
static void
acl_denied(aconn *c, alink *lk, const char *what, const char *addr)
{
    tn_log_warn("AMQP-ACL-DENIED", "%s: user %s may not %s %s", peer(c),
                c->user ? c->user : "(anonymous)", what, addr);
    link_fail(lk, "amqp:unauthorized-access", "not authorized to %s %s", what, addr);
}

/* An address and its terminus' capabilities -> kind and core name. TN_EINVAL: no such node. */
static int
parse_addr(const char *addr, const caps *cp, adest *d)
{
    const char *rest;
    if (strip(addr, "queue://", &rest) || strip(addr, "/queue/", &rest)) {
        d->kind = DEST_QUEUE;
    } else if (strip(addr, "topic://", &rest) || strip(addr, "/topic/", &rest)) {
        d->kind = DEST_TOPIC;
    } else if (strstr(addr, "://")) {
        return TN_EINVAL;
    } else {
        rest = addr;
        d->kind = (cp->topic || cp->temp_topic) && !cp->queue ? DEST_TOPIC : DEST_QUEUE;
    }
    if (!*rest)
        return TN_EINVAL;
    d->name = rest;
    return 0;
}

/* A reply-to property in the form STOMP shows (/queue/q, /topic/t), from AMQP's address. */
static int
prop_reply_to(tn_buf *pb, const char *p, size_t n)
{
    char tmp[1024], out[1100];
    caps none = {0};
    adest d;
    int k = -1;
    if (n < sizeof tmp) {
        memcpy(tmp, p, n);
        tmp[n] = '\0';
        if (parse_addr(tmp, &none, &d) == 0)
            k = snprintf(out, sizeof out, "%s%s", d.kind == DEST_QUEUE ? "/queue/" : "/topic/",
                         d.name);
    }
    if (k > 0 && (size_t)k < sizeof out)
        return tn_props_add(pb, "reply-to", 8, out, (size_t)k);
    return tn_props_add(pb, "reply-to", 8, p, n); /* not one of ours: as it is */
}

/* ---- messages in ---- */

/* Appends the AMQP_KEY property: the body kind, then the sections a and b (either may be
 * empty). TN_ETOOBIG past a property's 64 KiB. */
static int
raw_prop(tn_buf *pb, uint8_t kind, tn_amqp_span a, tn_amqp_span b)
{
    size_t n = 1 + a.n + b.n;
    if (n > 65535)
        return TN_ETOOBIG;
    uint16_t kl = AMQP_KEY_LEN, vl = (uint16_t)n;
    if (tn_buf_append(pb, &kl, 2) || tn_buf_append(pb, AMQP_KEY, AMQP_KEY_LEN) ||
        tn_buf_append(pb, &vl, 2) || tn_buf_append(pb, &kind, 1) ||
        (a.n && tn_buf_append(pb, a.p, a.n)) || (b.n && tn_buf_append(pb, b.p, b.n)))
        return TN_ETOOBIG;
    return 0;
}

static int
prop_span(tn_buf *pb, const char *k, tn_amqp_span v)
{
    if (!v.p)
        return 0;
    return tn_props_add(pb, k, strlen(k), (const char *)v.p, v.n);
}

static int
prop_text(tn_buf *pb, const char *k, const char *v, size_t n)
{
    return tn_props_add(pb, k, strlen(k), v, n);
}

static int
prop_u64(tn_buf *pb, const char *k, uint64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%" PRIu64, v);
    return prop_text(pb, k, t, (size_t)n);
}

static int
prop_value(tn_buf *pb, const char *k, const tn_amqp_value *v)
{
    char t[256];
    if (!v->code || v->code == 0x40)
        return 0;
    int n = tn_amqp_value_text(v, t, sizeof t);
    if (n < 0)
        return 0; /* not shown to the text protocols */
    return prop_text(pb, k, t, (size_t)n);
}

/* The core properties of a decoded message: the standard ones and the application properties as
 * text for the other protocols, and the raw sections for AMQP receivers. */
static int
message_props(tn_buf *pb, const tn_amqp_msg *am, const char **why)
{
    int rc = 0;
    pb->len = 0;
    rc |= prop_value(pb, "message-id", &am->message_id);
    rc |= prop_span(pb, "user-id", am->user_id);
    rc |= prop_span(pb, "subject", am->subject);
    if (am->reply_to.p)
        rc |= prop_reply_to(pb, (const char *)am->reply_to.p, am->reply_to.n);
    rc |= prop_value(pb, "correlation-id", &am->correlation_id);
    rc |= prop_span(pb, "content-type", am->content_type);
    rc |= prop_span(pb, "content-encoding", am->content_encoding);
    if (am->has_absolute_expiry_time && am->absolute_expiry_time > 0)
        rc |= prop_u64(pb, "expires", (uint64_t)am->absolute_expiry_time);
    else if (am->has_ttl && am->ttl > 0)
        rc |= prop_u64(pb, "expires", epoch_ms() + am->ttl);
    if (am->has_creation_time && am->creation_time > 0)
        rc |= prop_u64(pb, "timestamp", (uint64_t)am->creation_time);
    rc |= prop_span(pb, "JMSXGroupID", am->group_id);
    if (am->has_group_sequence)
        rc |= prop_u64(pb, "JMSXGroupSeq", am->group_sequence);
    if (am->priority != 4)
        rc |= prop_u64(pb, "priority", am->priority);
    tn_amqp_map_iter it;
    if (tn_amqp_map_begin(am->application_properties, &it) != 0) {
        *why = "application-properties is not a map";
        return TN_EPROTO;
    }
    tn_amqp_value k, v;
    int more;
    while ((more = tn_amqp_map_next(&it, &k, &v)) == 1) {
        if (k.code != 0xa1 && k.code != 0xb1) {
            *why = "application-properties keys must be strings";
            return TN_EPROTO;
        }
        if (k.data.n == 0 || k.data.p[0] == '\x01')
            continue; /* never the core's own */
        char t[4096];
        int n = tn_amqp_value_text(&v, t, sizeof t);
        if (n >= 0)
            rc |= tn_props_add(pb, (const char *)k.data.p, k.data.n, t, (size_t)n);
    }
    if (more < 0) {
        *why = "malformed application-properties";
        return TN_EPROTO;
    }
    /* What an AMQP receiver gets verbatim. */
    if (!rc)
        rc = raw_prop(pb, (uint8_t)am->body_kind, am->bare_head, (tn_amqp_span){0});
    return rc ? TN_ETOOBIG : 0;
}

/* ---- messages out ---- */

static bool
key_is(const char *k, size_t kl, const char *lit)
{
    return strlen(lit) == kl && memcmp(k, lit, kl) == 0;
}

static uint64_t
num_of(const char *v, size_t n, bool *ok)
{
    uint64_t x = 0;
    *ok = n > 0 && n <= 19;
    for (size_t i = 0; i < n && *ok; i++) {
        if (v[i] < '0' || v[i] > '9')
            *ok = false;
        else
            x = x * 10 + (uint64_t)(v[i] - '0');
    }
    return x;
}

static tn_amqp_span
sp(const char *p, size_t n)
{
    return (tn_amqp_span){(const uint8_t *)p, n};
}

/* The properties and application-properties sections of a message that did not come from AMQP,
 * made from its core properties, appended to e; *kind: the body kind it is sent with. */
static int
encode_bare(tn_buf *e, int dest_kind, const tn_message *m, int *kind)
{
    int rc = 0;
    size_t vl;
    const char *v;
    bool ok;
    tn_amqp_props_out po = {0};
    size_t off = 0, kl;
    const char *k;
    char to[1024], rt[1024];
    int tl = snprintf(to, sizeof to, "%s://%.*s", dest_kind == DEST_QUEUE ? "queue" : "topic",
                      (int)m->name_len, m->name);
    if (tl > 0 && (size_t)tl < sizeof to)
        po.to = sp(to, (size_t)tl);
    while (tn_message_prop_next(m, &off, &k, &kl, &v, &vl)) {
        if (key_is(k, kl, "message-id")) {
            po.message_id = sp(v, vl);
        } else if (key_is(k, kl, "user-id")) {
            po.user_id = sp(v, vl);
        } else if (key_is(k, kl, "subject")) {
            po.subject = sp(v, vl);
        } else if (key_is(k, kl, "reply-to")) {
            const char *rest = NULL;
            char tmp[1024];
            if (vl < sizeof tmp) {
                memcpy(tmp, v, vl);
                tmp[vl] = '\0';
                int n = -1;
                if (strip(tmp, "/queue/", &rest))
                    n = snprintf(rt, sizeof rt, "queue://%s", rest);
                else if (strip(tmp, "/topic/", &rest))
                    n = snprintf(rt, sizeof rt, "topic://%s", rest);
                po.reply_to = n > 0 && (size_t)n < sizeof rt ? sp(rt, (size_t)n) : sp(v, vl);
            } else {
                po.reply_to = sp(v, vl);
            }
        } else if (key_is(k, kl, "correlation-id")) {
            po.correlation_id = sp(v, vl);
        } else if (key_is(k, kl, "content-type")) {
            po.content_type = sp(v, vl);
        } else if (key_is(k, kl, "content-encoding")) {
            po.content_encoding = sp(v, vl);
        } else if (key_is(k, kl, "expires")) {
            uint64_t x = num_of(v, vl, &ok);
            if (ok)
                po.absolute_expiry_time = (int64_t)x;
        } else if (key_is(k, kl, "timestamp")) {
            uint64_t x = num_of(v, vl, &ok);
            if (ok)
                po.creation_time = (int64_t)x;
        } else if (key_is(k, kl, "JMSXGroupID")) {
            po.group_id = sp(v, vl);
        } else if (key_is(k, kl, "JMSXGroupSeq")) {
            uint64_t x = num_of(v, vl, &ok);
            if (ok && x <= UINT32_MAX) {
                po.has_group_sequence = true;
                po.group_sequence = (uint32_t)x;
            }
        }
    }
    rc |= tn_amqp_put_properties(e, &po);
    tn_amqp_map_out mo;
    rc |= tn_amqp_map_open(e, TN_AMQP_APPLICATION_PROPERTIES, &mo);
    off = 0;
    while (!rc && tn_message_prop_next(m, &off, &k, &kl, &v, &vl)) {
        static const char *const std[] = {"message-id",       "user-id",        "subject",
                                          "reply-to",         "correlation-id", "content-type",
                                          "content-encoding", "expires",        "timestamp",
                                          "JMSXGroupID",      "JMSXGroupSeq",   "priority"};
        bool skip = kl == 0 || k[0] == '\x01';
        for (size_t i = 0; i < sizeof std / sizeof std[0] && !skip; i++)
            skip = key_is(k, kl, std[i]);
        if (!skip)
            rc |= tn_amqp_map_put_str(e, &mo, k, kl, v, vl);
    }
    rc |= tn_amqp_map_close(e, &mo);
    /* STOMP text bodies are strings to AMQP (JMS TextMessage). */
    v = tn_message_prop(m, "content-type", &vl);
    if (v && vl >= 5 && memcmp(v, "text/", 5) == 0)
        *kind = TN_AMQP_BODY_STRING;
    return rc;
}

/* The head of an amqp-value of a str32 (0xb1) or vbin32 (0xb0) whose bytes, m's payload, are
 * sent after it (*tail). */
static int
value_head(tn_buf *e, uint8_t code, const tn_message *m, tn_amqp_span *tail)
{
    uint32_t n = m->payload_len;
    uint8_t h[8] = {0x00,
                    0x53,
                    TN_AMQP_VALUE,
                    code,
                    (uint8_t)(n >> 24),
                    (uint8_t)(n >> 16),
                    (uint8_t)(n >> 8),
                    (uint8_t)n};
    *tail = (tn_amqp_span){m->payload, m->payload_len};
    return tn_buf_append(e, h, sizeof h);
}

/* Encodes the message a delivery carries into a->enc: a header for this delivery, then the
 * sections the sender sent (an AMQP message) or ones made from the core properties. When the
 * payload is large, only the head is encoded and *tail gets the payload to send after it. */
static int
encode_out(aconn *c, alink *lk, const tn_delivery *d, tn_amqp_span *tail)
{
    tn_amqp *a = c->a;
    const tn_message *m = d->msg;
    tn_buf *e = &a->enc;
    e->len = 0;
    tail->p = NULL;
    tail->n = 0;
    uint8_t priority = 4;
    uint32_t ttl = 0;
    size_t vl;
    const char *v = tn_message_prop(m, "priority", &vl);
    bool ok;
    if (v) {
        uint64_t x = num_of(v, vl, &ok);
        if (ok && x <= 255)
            priority = (uint8_t)x;
    }
    v = tn_message_prop(m, "expires", &vl);
    if (v) {
        uint64_t x = num_of(v, vl, &ok), now = epoch_ms();
        if (ok && x > now)
            ttl = x - now > UINT32_MAX ? UINT32_MAX : (uint32_t)(x - now);
        else if (ok && x)
            ttl = 1; /* already expired: as short as can be said */
    }
    uint32_t count = d->count > 0 ? d->count - 1 : 0;
    /* first-acquirer is left out (false, its default): it is only a hint, and a shorter
     * header is cheaper on both sides */
    int rc = tn_amqp_put_header(e, m->persistent, priority, ttl, false, count, false);
    const char *raw = tn_message_prop(m, AMQP_KEY, &vl);
    int kind = TN_AMQP_BODY_DATA;
    if (raw && vl >= 1) {
        kind = (uint8_t)raw[0];
        rc |= tn_buf_append(e, raw + 1, vl - 1);
    } else {
        rc |= encode_bare(e, lk->kind, m, &kind);
    }
    if (rc)
        return TN_ETOOBIG;
    if (kind == TN_AMQP_BODY_STRING && m->payload_len >= TN_NET_REF_MIN)
        return value_head(e, 0xb1, m, tail);
    if (kind == TN_AMQP_BODY_STRING)
        return tn_amqp_put_string_value(e, (const char *)m->payload, m->payload_len);
    if (kind == TN_AMQP_BODY_BINARY) /* re-encoded, so it is as sent (head + payload if large) */
        return m->payload_len >= TN_NET_REF_MIN
                   ? value_head(e, 0xb0, m, tail)
                   : tn_amqp_put_binary_value(e, m->payload, m->payload_len);
    if (kind == TN_AMQP_BODY_OTHER) {
        if (m->payload_len >= TN_NET_REF_MIN) {
            *tail = (tn_amqp_span){m->payload, m->payload_len};
            return 0;
        }
        return tn_buf_append(e, m->payload, m->payload_len);
    }
    if (m->payload_len >= TN_NET_REF_MIN) {
        *tail = (tn_amqp_span){m->payload, m->payload_len};
        return tn_amqp_put_data_head(e, m->payload_len);
    }
    return tn_amqp_put_data(e, m->payload, m->payload_len);
}

/* ---- deferred acks ---- */

static void
later_add(aconn *c, alink *lk, tn_delivery *d, int what)
{
    if (c->n_later == c->cap_later) {
        c->cap_later = c->cap_later ? 2 * c->cap_later : 64;
        c->later = tn_xrealloc(c->later, c->cap_later * sizeof *c->later);
    }
    c->later[c->n_later++] = (later){lk, d, what};
    poke(c);
}

/* A copy of a queue's message goes to DLQ.<queue>. */
static void
dead_letter(aconn *c, alink *lk, tn_delivery *d, const char *why)
{
    size_t n;
    const char *qn = lk->s ? tn_session_queue_name(lk->s, &n) : NULL;
    const tn_message *m = d->msg;
    if (!qn || (n > 0 && qn[0] == '\x01')) {
        tn_log_warn("AMQP-DROP", "message %" PRIu64 " to %s %s: dropped (a topic has no DLQ)",
                    m->id, m->name, why);
        return;
    }
    char stack[512];
    char *name = n + 4 <= sizeof stack ? stack : tn_xmalloc(n + 4);
    memcpy(name, "DLQ.", 4);
    memcpy(name + 4, qn, n);
    tn_session *dlq = tn_broker_queue(c->a->b, name, n + 4, true);
    if (name != stack)
        free(name);
    tn_message *copy = tn_message_new_props(m->name, m->name_len, m->props, m->props_len,
                                            m->payload, m->payload_len, m->qos, false);
    if (!copy)
        return;
    copy->persistent = m->persistent;
    tn_log_warn("AMQP-DLQ", "message %" PRIu64 " %s: moved to DLQ.%.*s", m->id, why, (int)n, qn);
    tn_broker_send(c->a->b, dlq, copy, NULL);
    tn_message_unref(copy);
}

static void
run_later(aconn *c)
{
    for (size_t i = 0; i < c->n_later; i++) {
        later l = c->later[i];
        if (l.what == LATER_DEAD)
            dead_letter(c, l.lk, l.d, "delivered more than max_deliveries times");
        tn_session_ack(l.lk->s, l.d);
    }
    c->n_later = 0;
}

/* ---- sending to clients ---- */

static bool
out_room(aconn *c, alink *lk)
{
    return !c->io->out_full(c->ioc) &&
           pn_session_outgoing_bytes(pn_link_session(lk->l)) < 4u * 1024 * 1024;
}

static int
link_deliver(void *ctx, tn_delivery *d)
{
    alink *lk = ctx;
    aconn *c = lk->c;
    if (c->closing || lk->dead || pn_link_credit(lk->l) <= 0 || !out_room(c, lk)) {
        lk->starved = true;
        return TN_EAGAIN;
    }
    uint32_t maxd = c->a->conf.max_deliveries;
    if (d->ack && maxd && d->count > maxd && lk->kind == DEST_QUEUE) {
        later_add(c, lk, d, LATER_DEAD);
        return 0;
    }
    tn_amqp_span tail;
    if (encode_out(c, lk, d, &tail) != 0) {
        tn_log_warn("AMQP-SKIP", "%s: message %" PRIu64 " cannot be encoded for AMQP; skipped",
                    peer(c), d->msg->id);
        if (d->ack)
            later_add(c, lk, d, LATER_ACK);
        return 0;
    }
    uint64_t tag = ++lk->tag;
    pn_delivery_t *pd = pn_delivery(lk->l, pn_dtag((const char *)&tag, sizeof tag));
    pn_link_send(lk->l, (const char *)c->a->enc.data, c->a->enc.len);
    if (tail.n)
        pn_link_send(lk->l, (const char *)tail.p, tail.n);
    pn_link_advance(lk->l);
    if (lk->presettled) {
        pn_delivery_settle(pd);
        if (d->ack)
            later_add(c, lk, d, LATER_ACK);
    } else if (d->ack) {
        pn_delivery_set_context(pd, d);
    }
    poke(c);
    return 0;
}

static bool
link_refuses(void *ctx, const tn_delivery *d)
{
    alink *lk = ctx;
    for (size_t i = 0; i < lk->n_refused; i++)
        if (lk->refused[i] == d->msg->id)
            return true;
    return false;
}

static const tn_consumer_ops link_consumer_ops = {link_deliver, link_refuses};

static void
link_kick(void *ctx)
{
    /* Another connection took this durable subscription over: this link ends. */
    alink *lk = ctx;
    run_later(lk->c);
    tn_session_detach(lk->s);
    lk->s = NULL;
    link_fail(lk, "amqp:link:stolen", "the subscription was taken over by another link");
    poke(lk->c);
}

static const tn_session_ops link_session_ops = {link_deliver, link_kick};

static tn_consumer *
link_consumer(alink *lk)
{
    if (!lk->s)
        return NULL;
    return lk->k ? lk->k : tn_session_consumer(lk->s);
}

/* Offers deliveries again to links that stopped for want of credit or room. */
static void
feed(aconn *c)
{
    for (alink *lk = c->links; lk; lk = lk->next) {
        if (!lk->sender && lk->big_wait && !lk->dead && !c->intake.waiting) {
            pn_delivery_t *pd = pn_link_current(lk->l);
            if (pd)
                on_transfer(c, lk, pd); /* the budget has room now */
            continue;
        }
        if (!lk->sender || !lk->starved || lk->dead)
            continue;
        tn_consumer *k = link_consumer(lk);
        if (k && pn_link_credit(lk->l) > 0 && out_room(c, lk)) {
            lk->starved = false;
            tn_queue_consumer_ready(k);
        }
    }
}

/* ---- receiving from clients ---- */

static void
grant(aconn *c, alink *lk)
{
    uint32_t w = c->a->conf.credit;
    int cr = pn_link_credit(lk->l);
    if (!c->flow.blocked && !lk->dead && cr < (int)(w / 2))
        pn_link_flow(lk->l, (int)w - (cr > 0 ? cr : 0));
}

static void
flow_resume(tn_flow *f)
{
    aconn *c = TN_CONTAINER_OF(f, aconn, flow);
    if (c->closing)
        return;
    for (alink *lk = c->links; lk; lk = lk->next)
        if (!lk->sender)
            grant(c, lk);
    poke(c);
}

static void
intake_resume(tn_intake *t)
{
    aconn *c = TN_CONTAINER_OF(t, aconn, intake);
    if (!c->closing) {
        c->io->pause(c->ioc, false);
        poke(c);
    }
}

/* The journal has what a delivery brought: accept and settle it. */
static void
reply_send(tn_replies *r, const uint8_t *p, size_t n, uint32_t flags, int status)
{
    (void)flags;
    aconn *c = TN_CONTAINER_OF(r, aconn, replies);
    pn_delivery_t *pd;
    tn_assert(n == sizeof pd);
    memcpy(&pd, p, sizeof pd);
    alink *lk = pn_link_get_context(pn_delivery_link(pd));
    if (status != 0) {
        conn_fail(c, "amqp:internal-error", "the journal cannot be written");
    } else {
        pn_delivery_update(pd, PN_ACCEPTED);
        pn_delivery_settle(pd);
    }
    if (lk)
        lk->pending--; /* a dead link is freed by the next pump */
    poke(c);
}

/* Settles an incoming delivery with an outcome now (not waiting for the journal). */
static void
settle_in(pn_delivery_t *pd, uint64_t outcome, const char *cond, const char *desc)
{
    if (cond) {
        pn_condition_t *pc = pn_disposition_condition(pn_delivery_local(pd));
        pn_condition_set_name(pc, cond);
        pn_condition_set_description(pc, desc);
    }
    pn_delivery_update(pd, outcome);
    pn_delivery_settle(pd);
}

/* Routes a message that arrived whole and settles (or, once journaled, accepts) its delivery. */
static void
route(aconn *c, alink *lk, pn_delivery_t *pd, tn_message *m)
{
    tn_amqp *a = c->a;
    int rc =
        lk->q ? tn_broker_send(a->b, lk->q, m, &c->flow) : tn_broker_publish(a->b, m, &c->flow);
    tn_message_unref(m);
    if (pn_delivery_settled(pd)) {
        pn_delivery_settle(pd);
    } else if (rc == TN_ETOOBIG) {
        settle_in(pd, PN_REJECTED, "amqp:resource-limit-exceeded",
                  lk->q ? "the queue is full" : "topic name with too many levels");
    } else {
        lk->pending++;
        tn_broker_reply(a->b, &c->replies, (const uint8_t *)&pd, sizeof pd, 0);
    }
}

/* The core properties of a message's head (p[0..n)), in a->props: 0, TN_EPROTO (the link is
 * closed), or another error (the delivery is refused). */
static int
head_props(aconn *c, alink *lk, pn_delivery_t *pd, const uint8_t *p, size_t n, tn_amqp_msg *am)
{
    const char *why = "malformed message";
    int rc = tn_amqp_msg_decode(p, n, am, &why);
    if (rc == 0)
        rc = message_props(&c->a->props, am, &why);
    if (rc == TN_EPROTO) {
        link_fail(lk, "amqp:decode-error", "%s", why);
    } else if (rc != 0 && !pn_delivery_settled(pd)) {
        settle_in(pd, PN_REJECTED, "amqp:resource-limit-exceeded", "properties over 64 KiB");
    }
    return rc;
}

/* A whole message arrived on a link the client sends on. */
static void
on_message(aconn *c, alink *lk, pn_delivery_t *pd, const uint8_t *p, size_t n)
{
    tn_amqp *a = c->a;
    tn_amqp_msg am;
    if (head_props(c, lk, pd, p, n, &am) != 0)
        return;
    tn_message *m = tn_message_new_props(lk->name, strlen(lk->name), a->props.data, a->props.len,
                                         am.content.p, am.content.n, 1, false);
    if (!m) {
        if (!pn_delivery_settled(pd))
            settle_in(pd, PN_RELEASED, NULL, NULL);
        return;
    }
    m->persistent = am.durable;
    if (n >= TN_NET_REF_MIN)
        tn_intake_charge(a->b, &c->intake, m); /* held while it waits in memory */
    route(c, lk, pd, m);
}

/*
 * A large message arriving in several transfers whose body is one data section: once the
 * sections before it and the data section's size are here, the message is made and the rest of
 * its body is received straight into it (held once, as MQTT and STOMP do), from the broker's
 * incoming budget. Returns 1 when it was started (or waits for the budget: lk->big_wait), 0 when
 * the message is not of that shape or not far enough yet (gathered as usual).
 */
static int
big_begin(aconn *c, alink *lk, pn_delivery_t *pd)
{
    tn_amqp *a = c->a;
    const uint8_t *p = lk->part.data;
    size_t n = lk->part.len, off = 0;
    while (off < n) {
        /* a section: 0x00, descriptor, value; the body's data section starts the payload */
        if (off + 3 <= n && p[off] == 0x00 && p[off + 1] == 0x53 && p[off + 2] == TN_AMQP_DATA)
            break;
        tn_amqp_value v;
        size_t used;
        if (tn_amqp_value_decode(p + off, n - off, &v, &used) != 0)
            return 0; /* not all here yet (or malformed: found when whole) */
        off += used;
    }
    if (off + 8 > n || p[off + 3] != 0xb0)
        return 0;
    uint32_t len = (uint32_t)p[off + 4] << 24 | (uint32_t)p[off + 5] << 16 |
                   (uint32_t)p[off + 6] << 8 | p[off + 7];
    size_t at = off + 8; /* the payload's first byte */
    if (len < TN_NET_REF_MIN || len > a->conf.max_message)
        return 0;
    if (c->intake.waiting ||
        (c->intake.held < len && tn_intake_reserve(a->b, &c->intake, len - c->intake.held) != 0)) {
        lk->big_wait = true;
        c->io->pause(c->ioc, true);
        return 1;
    }
    lk->big_wait = false;
    c->io->pause(c->ioc, false);
    tn_amqp_msg am;
    if (head_props(c, lk, pd, p, off, &am) != 0) {
        lk->big_drop = true; /* refused: the rest is read and dropped */
        return 1;
    }
    uint8_t *dst;
    tn_message *m = tn_message_alloc(lk->name, strlen(lk->name), a->props.data, a->props.len, len,
                                     1, false, &dst);
    if (!m) {
        link_fail(lk, "amqp:resource-limit-exceeded", "out of memory");
        return 1;
    }
    m->persistent = am.durable;
    size_t have = n - at < len ? n - at : len;
    memcpy(dst, p + at, have);
    lk->big = m;
    lk->big_dst = dst;
    lk->big_got = have;
    lk->big_extra = n - at - have; /* bytes after the payload: a footer */
    lk->part.len = 0;
    tn_buf_reset(&lk->part);
    return 1;
}

/* The rest of a large message, straight into it; then it goes as any other. */
static void
big_feed(aconn *c, alink *lk, pn_delivery_t *pd)
{
    tn_amqp *a = c->a;
    for (;;) {
        size_t pend = pn_delivery_pending(pd);
        if (!pend)
            break;
        ssize_t got;
        if (lk->big && lk->big_got < lk->big->payload_len) {
            size_t want = lk->big->payload_len - lk->big_got;
            got = pn_link_recv(lk->l, (char *)lk->big_dst + lk->big_got, pend < want ? pend : want);
            if (got > 0)
                lk->big_got += (size_t)got;
        } else {
            char sink[4096]; /* a footer (dropped, as every footer), or a refused message */
            got = pn_link_recv(lk->l, sink, sizeof sink);
            if (got > 0 && !lk->big_drop)
                lk->big_extra += (size_t)got;
        }
        if (got <= 0)
            break;
    }
    if (pn_delivery_partial(pd))
        return;
    pn_link_advance(lk->l);
    tn_message *m = lk->big;
    bool whole = m && lk->big_got == m->payload_len && lk->big_extra <= 1024;
    lk->big = NULL;
    lk->big_drop = false;
    if (!m) {
        /* refused in big_begin: already settled */
    } else if (!whole) {
        tn_message_unref(m);
        if (!pn_delivery_settled(pd))
            settle_in(pd, PN_REJECTED, "amqp:not-implemented",
                      "a large message must have one data section as its body");
        else
            pn_delivery_settle(pd);
    } else {
        tn_intake_charge(a->b, &c->intake, m); /* held while it waits in memory */
        route(c, lk, pd, m);
    }
    tn_intake_release(a->b, &c->intake);
}

static void
on_transfer(aconn *c, alink *lk, pn_delivery_t *pd)
{
    tn_amqp *a = c->a;
    if (pn_link_credit(lk->l) < 0) {
        /* Sent without credit: producer flow control would mean nothing, and a full queue
         * would grow without bound. [AMQP 2.6.7] */
        link_fail(lk, "amqp:link:transfer-limit-exceeded",
                  "a transfer without link credit (the destination is full: wait for credit)");
        return;
    }
    if (pn_delivery_aborted(pd)) {
        lk->part.len = 0;
        tn_buf_reset(&lk->part);
        tn_message_unref(lk->big);
        lk->big = NULL;
        lk->big_wait = lk->big_drop = false;
        tn_intake_release(a->b, &c->intake);
        pn_link_advance(lk->l); /* before settling: proton asserts a settled delivery is off
                                   its work list */
        pn_delivery_settle(pd);
        return;
    }
    if (!pn_delivery_readable(pd))
        return;
    if (lk->big || lk->big_drop) {
        big_feed(c, lk, pd);
        if (!lk->dead)
            grant(c, lk);
        return;
    }
    size_t pend = pn_delivery_pending(pd);
    size_t have = lk->part.len;
    if (have + pend > a->conf.max_message + 65536u) {
        link_fail(lk, "amqp:link:message-size-exceeded",
                  "a message over the %" PRIu32 "-byte limit (max_message_size)",
                  a->conf.max_message);
        return;
    }
    if (pn_delivery_partial(pd) || have) {
        if (lk->big_wait) {
            if (big_begin(c, lk, pd) == 1) {
                if (lk->big || lk->big_drop)
                    big_feed(c, lk, pd);
                return;
            }
        }
        /* Gathered as it comes, from the broker's budget for large messages. */
        if (have + pend >= 65536 && c->intake.held < have + pend &&
            tn_intake_reserve(a->b, &c->intake, have + pend - c->intake.held + 65536) != 0)
            c->io->pause(c->ioc, true);
        uint8_t *dst = tn_buf_reserve(&lk->part, pend);
        if (!dst) {
            link_fail(lk, "amqp:resource-limit-exceeded", "out of memory");
            return;
        }
        ssize_t got = pn_link_recv(lk->l, (char *)dst, pend);
        if (got > 0)
            tn_buf_commit(&lk->part, (size_t)got);
        if (pn_delivery_partial(pd)) {
            if (big_begin(c, lk, pd) == 1 && (lk->big || lk->big_drop))
                big_feed(c, lk, pd);
            return;
        }
        pn_link_advance(lk->l);
        on_message(c, lk, pd, lk->part.data, lk->part.len);
        lk->part.len = 0;
        if (lk->part.cap > (1u << 20))
            tn_buf_reset(&lk->part);
        if (!c->intake.waiting)
            tn_intake_release(a->b, &c->intake);
    } else {
        a->rx.len = 0;
        uint8_t *dst = tn_buf_reserve(&a->rx, pend ? pend : 1);
        if (!dst) {
            link_fail(lk, "amqp:resource-limit-exceeded", "out of memory");
            return;
        }
        ssize_t got = pn_link_recv(lk->l, (char *)dst, pend);
        pn_link_advance(lk->l);
        on_message(c, lk, pd, dst, got > 0 ? (size_t)got : 0);
        if (a->rx.cap > (4u << 20))
            tn_buf_reset(&a->rx);
    }
    if (!lk->dead)
        grant(c, lk);
}

/* ---- dispositions of what we sent ---- */

static void
annotate(aconn *c, alink *lk, tn_delivery *d, pn_data_t *ann)
{
    if (!ann || pn_data_size(ann) == 0)
        return;
    char stack[4096];
    pn_data_rewind(ann);
    ssize_t n = pn_data_encode(ann, stack, sizeof stack);
    if (n <= 0)
        return;
    tn_message *m = d->msg;
    size_t vl = 0;
    const char *raw = tn_message_prop(m, AMQP_KEY, &vl);
    const uint8_t *bare;
    size_t bare_n;
    uint8_t kind;
    if (raw && vl >= 1) {
        kind = (uint8_t)raw[0];
        bare = (const uint8_t *)raw + 1;
        bare_n = vl - 1;
    } else {
        /* From MQTT or STOMP: the sections it would be sent with, annotations added */
        tn_buf *g = &c->a->enc;
        g->len = 0;
        int k = TN_AMQP_BODY_DATA;
        if (encode_bare(g, lk->kind, m, &k) != 0)
            return;
        kind = (uint8_t)k;
        bare = g->data;
        bare_n = g->len;
    }
    tn_amqp_msg old = {0};
    if (bare_n && tn_amqp_msg_decode(bare, bare_n, &old, NULL) != 0)
        return;
    tn_buf *ab = &c->a->ann;
    ab->len = 0;
    if (tn_amqp_annotations_merge(ab, old.message_annotations,
                                  (tn_amqp_span){(const uint8_t *)stack, (size_t)n}) != 0)
        return;
    /* The new raw property: kind, merged annotations, then the rest as it was. */
    tn_buf *pb = &c->a->props;
    pb->len = 0;
    size_t off = 0, kl;
    const char *k, *v;
    while (tn_message_prop_next(m, &off, &k, &kl, &v, &vl))
        if (!key_is(k, kl, AMQP_KEY))
            tn_props_add(pb, k, kl, v, vl);
    const uint8_t *rest = old.properties.p               ? old.properties.p
                          : old.application_properties.p ? old.application_properties.p
                                                         : NULL;
    size_t rest_n = 0;
    if (rest)
        rest_n = (size_t)(bare + bare_n - rest);
    if (raw_prop(pb, kind, (tn_amqp_span){ab->data, ab->len}, (tn_amqp_span){rest, rest_n}) != 0)
        return;
    tn_message *nm = tn_message_new_props(m->name, m->name_len, pb->data, pb->len, m->payload,
                                          m->payload_len, m->qos, false);
    if (!nm)
        return;
    nm->persistent = m->persistent;
    nm->id = m->id; /* the same message: the journal knows it by its id */
    d->msg = nm;
    tn_message_unref(m);
}

static void
refuse_add(alink *lk, uint64_t id)
{
    if (lk->n_refused == 4096) { /* bounded: forget the oldest */
        memmove(lk->refused, lk->refused + 1, 4095 * sizeof *lk->refused);
        lk->n_refused--;
    }
    lk->refused = tn_xrealloc(lk->refused, (lk->n_refused + 1) * sizeof *lk->refused);
    lk->refused[lk->n_refused++] = id;
}

static void outcome(aconn *c, alink *lk, tn_delivery *d, uint64_t st, pn_disposition_t *rd);

static void
on_disposition(aconn *c, alink *lk, pn_delivery_t *pd)
{
    tn_delivery *d = pn_delivery_get_context(pd);
    uint64_t st = pn_delivery_remote_state(pd);
    bool terminal = st == PN_ACCEPTED || st == PN_REJECTED || st == PN_RELEASED ||
                    st == PN_MODIFIED || pn_delivery_settled(pd);
    if (!terminal)
        return;
    pn_delivery_set_context(pd, NULL);
    if (d && lk->s)
        outcome(c, lk, d, st, pn_delivery_remote(pd));
    pn_delivery_settle(pd);
}

/* What the client said of delivery d: st, with the details in rd. */
static void
outcome(aconn *c, alink *lk, tn_delivery *d, uint64_t st, pn_disposition_t *rd)
{
    run_later(c);
    if (st == PN_REJECTED) {
        dead_letter(c, lk, d, "rejected");
        tn_session_ack(lk->s, d);
    } else if (st == PN_RELEASED) {
        d->count--; /* not a delivery attempt */
        tn_queue_release(d);
    } else if (st == PN_MODIFIED) {
        annotate(c, lk, d, pn_disposition_annotations(rd));
        if (pn_disposition_is_undeliverable(rd))
            refuse_add(lk, d->msg->id);
        uint32_t maxd = c->a->conf.max_deliveries;
        if (!pn_disposition_is_failed(rd)) {
            d->count--;
            tn_queue_release(d);
        } else if (maxd && d->count >= maxd && lk->kind == DEST_QUEUE) {
            dead_letter(c, lk, d, "failed max_deliveries times");
            tn_session_ack(lk->s, d);
        } else {
            tn_queue_release(d);
        }
    } else {
        tn_session_ack(lk->s, d); /* accepted, or settled with no outcome */
    }
}

/* ---- links ---- */

static alink *
link_new(aconn *c, pn_link_t *l)
{
    alink *lk = tn_xcalloc(1, sizeof *lk);
    lk->c = c;
    lk->l = l;
    lk->sender = pn_link_is_sender(l);
    tn_buf_init(&lk->part, (size_t)c->a->conf.max_message + 65536u);
    lk->next = c->links;
    if (c->links)
        c->links->prev = lk;
    c->links = lk;
    c->n_links++;
    pn_link_set_context(l, lk);
    return lk;
}

/* Sessions for topic subscriptions and names of dynamic nodes. */
static int
make_sid(char *buf, size_t cap, const char *kind, const char *a, const char *b)
{
    int n = snprintf(buf, cap, "\x01%s:%s:%s", kind, a, b);
    return n > 0 && (size_t)n < cap ? n : -1;
}

/* The shared subscription's queue name for a link name ("sub", "sub|2", "sub|global", ...). */
static int
shared_name(aconn *c, const char *link, bool global, char *buf, size_t cap)
{
    const char *bar = strchr(link, '|');
    size_t n = bar ? (size_t)(bar - link) : strlen(link);
    if (bar && strncmp(bar, "|global", 7) == 0)
        global = true;
    int k = snprintf(buf, cap, "\x01sub:%s:%.*s", global ? "" : (c->container ? c->container : ""),
                     (int)n, link);
    return k > 0 && (size_t)k < cap ? k : -1;
}

/* Ends a link on our side: consumers detach, temporary nodes go. closed: the client closed it
 * for good (a durable subscription is deleted). */
static void
link_release(alink *lk, bool closed)
{
    aconn *c = lk->c;
    if (!lk->dead) {
        lk->dead = true;
        run_later(c);
        for (pn_delivery_t *pd = pn_unsettled_head(lk->l); pd; pd = pn_unsettled_next(pd))
            if (lk->sender)
                pn_delivery_set_context(pd, NULL);
        if (lk->k) {
            tn_queue_detach(lk->k);
            lk->k = NULL;
            if (lk->shared && lk->s && tn_queue_consumers(tn_session_queue(lk->s)) == 0) {
                size_t n;
                const char *qn = tn_session_queue_name(lk->s, &n);
                tn_session *q = tn_broker_queue_find(c->a->b, qn, n);
                /* A shared subscription's queue goes with its last receiver when it is not
                 * durable, or when that receiver closes it for good. */
                if (q && (closed || !lk->durable))
                    tn_broker_queue_free(q);
            }
        } else if (lk->s) {
            tn_session *s = lk->s;
            tn_session_detach(s);
            if (closed && lk->durable)
                tn_session_discard(s);
        } else if (lk->lookup && closed && lk->sid) {
            tn_session *s = tn_broker_session_find(c->a->b, lk->sid, strlen(lk->sid));
            size_t qn;
            bool shared = s && tn_session_queue_name(s, &qn);
            if (s && !shared && !tn_session_attached(s))
                tn_session_discard(s);
            else if (shared && tn_queue_consumers(tn_session_queue(s)) == 0)
                tn_broker_queue_free(s);
        }
        lk->s = NULL;
        if (lk->temp && tn_queue_consumers(tn_session_queue(lk->temp)) == 0)
            tn_broker_queue_free(lk->temp);
        lk->temp = NULL;
        tn_message_unref(lk->big);
        lk->big = NULL;
        tn_intake_release(c->a->b, &c->intake);
    }
}

/* Frees the links that ended, once no reply waits on them (after the events that may still
 * name them). */
static void
reap(aconn *c, bool all)
{
    for (alink *lk = c->links, *next; lk; lk = next) {
        next = lk->next;
        if (!lk->dead || (lk->pending && !all))
            continue;
        link_unlink_free(lk);
    }
}

static void
link_unlink_free(alink *lk)
{
    aconn *c = lk->c;
    if (lk->prev)
        lk->prev->next = lk->next;
    else
        c->links = lk->next;
    if (lk->next)
        lk->next->prev = lk->prev;
    c->n_links--;
    pn_link_set_context(lk->l, NULL);
    if ((pn_link_state(lk->l) & (PN_LOCAL_CLOSED | PN_REMOTE_CLOSED)) ==
        (PN_LOCAL_CLOSED | PN_REMOTE_CLOSED))
        pn_link_free(lk->l);
    tn_buf_fini(&lk->part);
    free(lk->name);
    free(lk->address);
    free(lk->sid);
    free(lk->refused);
    free(lk);
}

static void
set_caps(pn_terminus_t *t, const char *const *syms, size_t n)
{
    pn_data_t *d = pn_terminus_capabilities(t);
    pn_data_clear(d);
    pn_data_put_array(d, false, PN_SYMBOL);
    pn_data_enter(d);
    for (size_t i = 0; i < n; i++)
        pn_data_put_symbol(d, pn_bytes(strlen(syms[i]), syms[i]));
    pn_data_exit(d);
}

/* A dynamic node's address, in dyn: a temporary queue "tmp.<serial>.<n>" (made now, deleted
 * with the link), or topic://tmp.<serial>.<n> for the capability temporary-topic. */
static const char *
dyn_node(aconn *c, alink *lk, const caps *cp, char *dyn, size_t cap)
{
    if (cp->temp_topic) {
        snprintf(dyn, cap, "topic://tmp.%" PRIu64 ".%" PRIu32, c->serial, ++c->n_dyn);
    } else {
        snprintf(dyn, cap, "tmp.%" PRIu64 ".%" PRIu32, c->serial, ++c->n_dyn);
        lk->temp = tn_broker_queue(c->a->b, dyn, strlen(dyn), false);
    }
    return dyn;
}

/* The client sends on this link (our receiver). */
static void
open_receiver(aconn *c, alink *lk)
{
    pn_link_t *l = lk->l;
    pn_terminus_t *rt = pn_link_remote_target(l);
    caps cp = caps_of(rt);
    char dyn[64];
    const char *addr = pn_terminus_get_address(rt);
    if (pn_terminus_is_dynamic(rt)) {
        addr = dyn_node(c, lk, &cp, dyn, sizeof dyn);
    }
    if (pn_terminus_get_type(rt) != PN_TARGET || !addr) {
        link_fail(lk, "amqp:not-implemented",
                  "a target address is needed (the anonymous relay is not offered)");
        return;
    }
    adest d;
    if (parse_addr(addr, &cp, &d) != 0) {
        link_fail(lk, "amqp:not-found", "no such address: %s", addr);
        return;
    }
    tn_broker *b = c->a->b;
    if (!lk->temp && strncmp(d.name, "tmp.", 4) != 0 &&
        !tn_broker_may(b, c->user, c->container, d.kind == DEST_QUEUE, d.name, TN_MAY_WRITE,
                       false)) {
        acl_denied(c, lk, "send to", addr);
        return;
    }
    if (d.kind == DEST_TOPIC) {
        if (strchr(d.name, '*') || strchr(d.name, '>')) {
            link_fail(lk, "amqp:not-found", "wildcards are for receiving, not sending: %s", addr);
            return;
        }
        if (!tn_broker_levels_ok(b, d.name)) {
            link_fail(lk, "amqp:resource-limit-exceeded",
                      "topic name with more than max_topic_levels levels: %s", addr);
            return;
        }
    } else if (lk->temp) {
        lk->q = lk->temp;
    } else if (strncmp(d.name, "tmp.", 4) == 0) {
        lk->q = tn_broker_queue_find(b, d.name, strlen(d.name));
        if (!lk->q) {
            link_fail(lk, "amqp:not-found", "the temporary queue no longer exists: %s", addr);
            return;
        }
    } else {
        lk->q = tn_broker_queue(b, d.name, strlen(d.name), true);
    }
    lk->kind = d.kind;
    lk->name = tn_xstrdup(d.name);
    pn_terminus_copy(pn_link_target(l), rt);
    if (pn_terminus_is_dynamic(rt)) {
        pn_terminus_set_address(pn_link_target(l), dyn);
        pn_terminus_set_dynamic(pn_link_target(l), true);
    }
    pn_link_set_rcv_settle_mode(l, PN_RCV_FIRST);
    pn_link_set_snd_settle_mode(l, pn_link_remote_snd_settle_mode(l));
    pn_link_set_max_message_size(l, c->a->conf.max_message);
    pn_terminus_copy(pn_link_source(l), pn_link_remote_source(l));
    pn_link_open(l);
    grant(c, lk);
}

/* Qpid JMS deletes a durable subscription by attaching with its name and no source: answer with
 * the stored source, or none (then not-found). */
static void
open_lookup(aconn *c, alink *lk)
{
    pn_link_t *l = lk->l;
    char sid[1024];
    const char *name = pn_link_name(l);
    int n = make_sid(sid, sizeof sid, "d", c->container ? c->container : "", name);
    tn_broker *b = c->a->b;
    tn_session *s = n > 0 ? tn_broker_session_find(b, sid, (size_t)n) : NULL;
    bool shared = false;
    if (!s) {
        char qn[1024];
        int k = shared_name(c, name, false, qn, sizeof qn);
        s = k > 0 ? tn_broker_queue_find(b, qn, (size_t)k) : NULL;
        if (!s && k > 0 && (k = shared_name(c, name, true, qn, sizeof qn)) > 0)
            s = tn_broker_queue_find(b, qn, (size_t)k);
        if (s) {
            shared = true;
            snprintf(sid, sizeof sid, "%s", tn_session_id(s));
        }
    }
    const char *filter = s ? tn_session_filter(s) : NULL;
    pn_link_set_snd_settle_mode(l, pn_link_remote_snd_settle_mode(l));
    if (!filter) {
        link_fail(lk, "amqp:not-found", "no subscription named '%s'", name);
        return;
    }
    pn_terminus_t *src = pn_link_source(l);
    char addr[1100];
    snprintf(addr, sizeof addr, "topic://%s", filter);
    pn_terminus_set_type(src, PN_SOURCE);
    pn_terminus_set_address(src, addr);
    pn_terminus_set_durability(src, PN_DELIVERIES);
    pn_terminus_set_expiry_policy(src, PN_EXPIRE_NEVER);
    static const char *const topic_caps[] = {"topic"};
    static const char *const shared_caps[] = {"topic", "shared"};
    set_caps(src, shared ? shared_caps : topic_caps, shared ? 2 : 1);
    lk->lookup = true;
    lk->sid = tn_xstrdup(sid);
    pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
    pn_link_open(l);
}

/* The client receives on this link (our sender). */
static void
open_sender(aconn *c, alink *lk)
{
    pn_link_t *l = lk->l;
    pn_terminus_t *rs = pn_link_remote_source(l);
    if (pn_terminus_get_type(rs) != PN_SOURCE) {
        open_lookup(c, lk);
        return;
    }
    caps cp = caps_of(rs);
    const char *addr = pn_terminus_get_address(rs);
    char dyn[64];
    if (pn_terminus_is_dynamic(rs)) {
        addr = dyn_node(c, lk, &cp, dyn, sizeof dyn);
    }
    if (!addr) {
        link_fail(lk, "amqp:not-found", "a source address is needed");
        return;
    }
    adest d;
    if (parse_addr(addr, &cp, &d) != 0) {
        link_fail(lk, "amqp:not-found", "no such address: %s", addr);
        return;
    }
    tn_broker *b = c->a->b;
    tn_amqp_conf *conf = &c->a->conf;
    lk->kind = d.kind;
    lk->name = tn_xstrdup(d.name);
    lk->presettled = pn_link_remote_snd_settle_mode(l) == PN_SND_SETTLED;
    lk->durable = pn_terminus_get_durability(rs) != PN_NONDURABLE;
    lk->shared = cp.shared && d.kind == DEST_TOPIC;
    if (d.kind == DEST_TOPIC && !tn_broker_levels_ok(b, d.name)) {
        link_fail(lk, "amqp:resource-limit-exceeded",
                  "topic name with more than max_topic_levels levels: %s", addr);
        return;
    }
    /* A queue: its reader must be allowed to read it; a topic filter: some topic it matches
     * (each message is then checked as it comes). */
    if (!lk->temp && strncmp(d.name, "tmp.", 4) != 0 &&
        !tn_broker_may(b, c->user, c->container, d.kind == DEST_QUEUE, d.name, TN_MAY_READ,
                       d.kind == DEST_TOPIC)) {
        acl_denied(c, lk, "receive from", addr);
        return;
    }
    if (d.kind == DEST_QUEUE) {
        tn_session *q;
        if (lk->temp) {
            q = lk->temp;
        } else if (strncmp(d.name, "tmp.", 4) == 0) {
            q = tn_broker_queue_find(b, d.name, strlen(d.name));
            if (!q) {
                link_fail(lk, "amqp:not-found", "the temporary queue no longer exists: %s", addr);
                return;
            }
        } else {
            q = tn_broker_queue(b, d.name, strlen(d.name), true);
        }
        lk->s = q;
    } else if (lk->shared) {
        char qn[1024];
        int k = shared_name(c, pn_link_name(l), cp.global || !c->container, qn, sizeof qn);
        if (k < 0) {
            link_fail(lk, "amqp:resource-limit-exceeded", "subscription name too long");
            return;
        }
        tn_session *q = tn_broker_queue(b, qn, (size_t)k, lk->durable);
        tn_session_set_identity(q, c->user, c->container);
        const char *old = tn_session_filter(q);
        if (old && strcmp(old, d.name) != 0 && tn_queue_consumers(tn_session_queue(q)) == 0)
            tn_session_unsubscribe(q, old);
        if (tn_session_subscribe(q, d.name, 1) != 0) {
            if (tn_queue_consumers(tn_session_queue(q)) == 0 && !old)
                tn_broker_queue_free(q);
            link_fail(lk, "amqp:not-found", "malformed topic name: %s", addr);
            return;
        }
        lk->s = q;
    } else {
        char sid[1024];
        char num[32];
        int n;
        if (lk->durable) {
            n = make_sid(sid, sizeof sid, "d", c->container ? c->container : "", pn_link_name(l));
        } else {
            snprintf(num, sizeof num, "%" PRIu64 "-%" PRIu32, c->serial, ++c->n_dyn);
            n = make_sid(sid, sizeof sid, "a", num, "");
        }
        if (n < 0) {
            link_fail(lk, "amqp:resource-limit-exceeded", "subscription name too long");
            return;
        }
        bool present;
        tn_session *s;
        tn_broker_session_open(b, sid, (size_t)n, !lk->durable, &link_session_ops, lk, &s,
                               &present);
        tn_session_set_identity(s, c->user, c->container);
        lk->s = s;
        const char *old = tn_session_filter(s);
        if (old && strcmp(old, d.name) != 0)
            tn_session_unsubscribe(s, old); /* the same name for another topic: a new one */
        if (tn_session_subscribe(s, d.name, 1) != 0) {
            tn_session_detach(s);
            lk->s = NULL;
            link_fail(lk, "amqp:not-found", "malformed topic name: %s", addr);
            return;
        }
    }
    /* Our source: theirs, less any filter (selectors are not supported: the client sees none
     * was applied), with the address it got. */
    pn_terminus_t *src = pn_link_source(l);
    pn_terminus_copy(src, rs);
    pn_data_clear(pn_terminus_filter(src));
    if (pn_terminus_is_dynamic(rs))
        pn_terminus_set_address(src, dyn);
    pn_terminus_set_distribution_mode(src, d.kind == DEST_QUEUE || lk->shared ? PN_DIST_MODE_MOVE
                                                                              : PN_DIST_MODE_COPY);
    pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
    pn_link_set_snd_settle_mode(l, pn_link_remote_snd_settle_mode(l));
    pn_link_open(l);
    if (d.kind == DEST_QUEUE || lk->shared) {
        lk->k = tn_queue_attach(tn_session_queue(lk->s), &link_consumer_ops, lk, conf->prefetch);
    } else {
        tn_session_start(lk->s);
        tn_queue_set_credit(tn_session_consumer(lk->s), conf->prefetch);
    }
}

static void
on_link_open(aconn *c, pn_link_t *l)
{
    alink *lk = link_new(c, l);
    if (c->n_links > c->a->conf.max_links) {
        link_fail(lk, "amqp:resource-limit-exceeded", "more than %u links on one connection",
                  c->a->conf.max_links);
        return;
    }
    if (lk->sender)
        open_sender(c, lk);
    else
        open_receiver(c, lk);
}

/* ---- events ---- */

/* The client's open is answered with ours. */
static void
open_accept(aconn *c)
{
    pn_connection_t *pc = c->d.connection;
    pn_connection_set_container(pc, "tern");
    pn_data_t *oc = pn_connection_offered_capabilities(pc);
    pn_data_put_array(oc, false, PN_SYMBOL);
    pn_data_enter(oc);
    pn_data_put_symbol(oc, pn_bytes(11, "SHARED-SUBS"));
    pn_data_exit(oc);
    pn_data_t *pr = pn_connection_properties(pc);
    pn_data_put_map(pr);
    pn_data_enter(pr);
    pn_data_put_symbol(pr, pn_bytes(7, "product"));
    pn_data_put_string(pr, pn_bytes(strlen(PRODUCT), PRODUCT));
    pn_data_put_symbol(pr, pn_bytes(7, "version"));
    pn_data_put_string(pr, pn_bytes(strlen(TERN_VERSION), TERN_VERSION));
    pn_data_exit(pr);
    pn_connection_open(pc);
}

/* The authenticator's answer for a client that skipped SASL. who (taken): the user, on 0. */
static void
open_answer(aconn *c, int rc, char *who)
{
    if (rc != 0) {
        free(who);
        pn_connection_open(c->d.connection);
        conn_fail(c, "amqp:unauthorized-access", "anonymous clients are not allowed");
        return;
    }
    free(c->user);
    c->user = who;
    c->authed = true;
    open_accept(c);
}

static void
on_event(aconn *c, pn_event_t *e)
{
    switch (pn_event_type(e)) {
    case PN_CONNECTION_REMOTE_OPEN: {
        pn_connection_t *pc = pn_event_connection(e);
        const char *cid = pn_connection_remote_container(pc);
        free(c->container);
        c->container = cid ? tn_xstrdup(cid) : NULL;
        c->open = true;
        const char *active = NULL;
        if (tn_broker_standby(c->a->b, &active)) {
            /* A pair's standby: the client is sent to the active ([AMQP 1.0 2.8.15]
             * amqp:connection:redirect, its info map naming the host), then closed. */
            pn_connection_open(pc);
            pn_condition_t *cond = pn_connection_condition(pc);
            pn_condition_set_name(cond, "amqp:connection:redirect");
            pn_condition_set_description(cond, "this node is a standby: connect to the active");
            if (active) {
                pn_data_t *info = pn_condition_info(cond);
                pn_data_put_map(info);
                pn_data_enter(info);
                pn_data_put_symbol(info, pn_bytes(8, "hostname"));
                pn_data_put_string(info, pn_bytes(strlen(active), active));
                pn_data_put_symbol(info, pn_bytes(12, "network-host"));
                pn_data_put_string(info, pn_bytes(strlen(active), active));
                if (c->a->conf.port) {
                    pn_data_put_symbol(info, pn_bytes(4, "port"));
                    pn_data_put_int(info, c->a->conf.port);
                }
                pn_data_exit(info);
            }
            conn_fail(c, "amqp:connection:redirect", "this node is a standby");
            break;
        }
        if (!c->authed) {
            /* No SASL layer: checked as anonymous. Taking time, the events after this one wait
             * (pump()) until auth_done() answers. */
            char *who;
            int rc = auth_begin(c, NULL, NULL, 0, &who);
            if (rc == TN_EAGAIN)
                c->auth_wait = AUTH_OPEN;
            else
                open_answer(c, rc, who);
            break;
        }
        open_accept(c);
        break;
    }
    case PN_CONNECTION_REMOTE_CLOSE:
        pn_connection_close(pn_event_connection(e));
        break;
    case PN_SESSION_REMOTE_OPEN: {
        pn_session_t *s = pn_event_session(e);
        /* proton announces capacity / max-frame-size as the session's incoming window, and
         * renews it only when it closes or link credit changes: a window smaller than the
         * largest message stalls a multi-frame message until the client's next round trip.
         * What proton holds is bounded anyway: every transfer is taken out of it at once, and
         * reads stop while a large message waits for room in the incoming budget. */
        uint32_t mf = c->a->conf.max_frame;
        pn_session_set_incoming_capacity(s, (size_t)c->a->conf.max_message + (size_t)mf * 64);
        pn_session_open(s);
        break;
    }
    case PN_SESSION_REMOTE_CLOSE: {
        pn_session_t *s = pn_event_session(e);
        for (alink *lk = c->links, *next; lk; lk = next) {
            next = lk->next;
            if (pn_link_session(lk->l) == s && !lk->dead)
                link_release(lk, false); /* an ended session detaches its links */
        }
        pn_session_close(s);
        break;
    }
    case PN_LINK_REMOTE_OPEN: {
        pn_link_t *l = pn_event_link(e);
        /* None on a connection we refused or closed (a client's attach pipelined after its
         * open is seen after the open's answer). */
        if (!c->authed || (pn_connection_state(c->d.connection) & PN_LOCAL_CLOSED))
            break;
        if (!pn_link_get_context(l) && (pn_link_state(l) & PN_LOCAL_UNINIT))
            on_link_open(c, l);
        break;
    }
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH: {
        pn_link_t *l = pn_event_link(e);
        bool closed = pn_event_type(e) == PN_LINK_REMOTE_CLOSE;
        alink *lk = pn_link_get_context(l);
        if (lk && !lk->dead)
            link_release(lk, closed);
        if (closed)
            pn_link_close(l);
        else
            pn_link_detach(l);
        break;
    }
    case PN_LINK_FLOW: {
        pn_link_t *l = pn_event_link(e);
        alink *lk = pn_link_get_context(l);
        if (!lk || lk->dead || !lk->sender)
            break;
        tn_consumer *k = link_consumer(lk);
        if (k && pn_link_credit(l) > 0 && out_room(c, lk)) {
            lk->starved = false;
            tn_queue_consumer_ready(k);
        }
        if (pn_link_get_drain(l) && pn_link_credit(l) > 0)
            pn_link_drained(l); /* all there was went: the rest of the credit is used up */
        break;
    }
    case PN_DELIVERY: {
        pn_delivery_t *pd = pn_event_delivery(e);
        pn_link_t *l = pn_delivery_link(pd);
        alink *lk = pn_link_get_context(l);
        if (pn_link_is_receiver(l)) {
            if (!lk || lk->dead) {
                if (!pn_delivery_partial(pd)) { /* the link is going: drop what arrives on it */
                    if (pn_link_current(l) == pd)
                        pn_link_advance(l); /* first: see on_transfer */
                    pn_delivery_settle(pd);
                }
                break;
            }
            on_transfer(c, lk, pd);
        } else if (pn_delivery_updated(pd) || pn_delivery_settled(pd)) {
            if (lk && !lk->dead)
                on_disposition(c, lk, pd);
            else if (!pn_delivery_local_state(pd))
                pn_delivery_settle(pd);
        }
        break;
    }
    case PN_TRANSPORT_ERROR: {
        pn_condition_t *tc = pn_transport_condition(pn_event_transport(e));
        if (!c->logged) {
            c->logged = true;
            tn_log_info("AMQP-ERROR", "%s: %s: %s; closing", peer(c),
                        pn_condition_get_name(tc) ? pn_condition_get_name(tc) : "error",
                        pn_condition_get_description(tc) ? pn_condition_get_description(tc) : "");
        }
        break;
    }
    default:
        break;
    }
}

/* Runs proton's events and moves its output to the connection, until there is nothing left;
 * then sets the next deadline (proton's idle timeouts, our open timeout). While the
 * authenticator decides about an open, the events after it wait in proton's collector. */
static void
pump(aconn *c)
{
    if (c->pumping || c->closing)
        return;
    c->pumping = true;
    uint64_t now = c->io->now(c->ioc);
    c->next_tick = (uint64_t)pn_transport_tick(c->d.transport, (int64_t)now);
    for (;;) {
        pn_event_t *e;
        while (!c->auth_job && (e = pn_connection_driver_next_event(&c->d)))
            on_event(c, e);
        run_later(c);
        feed(c);
        reap(c, false);
        if (!c->auth_job && pn_connection_driver_has_event(&c->d))
            continue;
        pn_bytes_t wb = pn_connection_driver_write_buffer(&c->d);
        if (!wb.size && pn_connection_driver_read_closed(&c->d) &&
            !pn_connection_driver_write_closed(&c->d)) {
            /* proton stopped reading (malformed input; the socket's end never gets here: net
             * calls closed() for it) and has nothing more to say. Say why in a close, once;
             * then done. */
            pn_connection_t *pc = c->d.connection;
            if (c->open && !(pn_connection_state(pc) & PN_LOCAL_CLOSED)) {
                pn_condition_t *tc = pn_transport_condition(c->d.transport);
                const char *name = pn_condition_get_name(tc);
                const char *desc = pn_condition_get_description(tc);
                conn_fail(c, name ? name : "amqp:decode-error", desc ? desc : "malformed frame");
                continue;
            }
            pn_connection_driver_write_close(&c->d);
        }
        if (!wb.size)
            break;
        if (c->io->out_full(c->ioc))
            break; /* the rest once drained() */
        tn_buf *ob = c->io->out(c->ioc);
        size_t room = ob->max > ob->len ? ob->max - ob->len : 0;
        size_t n = wb.size < room ? wb.size : room;
        if (n == 0)
            break;
        tn_buf_append(ob, wb.start, n);
        pn_connection_driver_write_done(&c->d, n);
    }
    uint64_t at = c->next_tick;
    /* Loop time is in whole milliseconds: one more keeps the close from coming a fraction
     * of a millisecond before the announced idle-time-out has really passed. */
    uint64_t idle = c->last_rx + c->a->conf.idle_timeout_ms + 1;
    if (!at || idle < at)
        at = idle;
    if (!c->open || c->auth_job) {
        uint64_t ct = c->opened_at + c->a->conf.connect_timeout_ms;
        if (!at || ct < at)
            at = ct;
    }
    c->io->set_deadline(c->ioc, at);
    c->pumping = false;
    if (pn_connection_driver_write_closed(&c->d) ||
        (pn_connection_driver_finished(&c->d) && !pn_connection_driver_write_buffer(&c->d).size)) {
        c->closing = true;
        c->io->close(c->ioc);
    }
}

/* ---- a frame scanner in front of proton ---- */

enum { SC_HEADER, SC_SASL, SC_AMQP, SC_OFF };

/*
 * proton 0.37 processes a sasl-init wherever it comes, after the SASL exchange too, and each one
 * leaks a copy of its mechanism name: a client could grow ternd's memory without bound. Input
 * is walked frame by frame (headers only) before proton sees it: a second sasl-init, or a SASL
 * frame in the AMQP phase, ends the connection with a framing error. Anything else odd is left
 * for proton to refuse (SC_OFF). Returns how many of p[0..n) may go to proton; fewer: *why says
 * why the rest must not, or (no *why) a SASL frame ends there: proton takes it alone, for the
 * authenticator may keep its outcome waiting, and nothing after it may reach proton until then
 * (proton would read an AMQP header pipelined after the sasl-init as a SASL frame).
 */
static size_t
scan(aconn *c, const uint8_t *p, size_t n, const char **why)
{
    size_t i = 0;
    while (i < n && c->sc_phase != SC_OFF) {
        tn_assert(c->sc_have < sizeof c->sc_buf);
        if (c->sc_skip) {
            size_t k = n - i < c->sc_skip ? n - i : c->sc_skip;
            c->sc_skip -= (uint32_t)k;
            i += k;
            if (!c->sc_skip && c->sc_cut) {
                c->sc_cut = false;
                return i;
            }
            continue;
        }
        c->sc_buf[c->sc_have++] = p[i++];
        if (c->sc_have < 8)
            continue;
        const uint8_t *b = c->sc_buf;
        bool header = memcmp(b, "AMQP", 4) == 0;
        if (c->sc_phase == SC_HEADER || (header && c->sc_have == 8)) {
            /* a protocol header: SASL's (id 3) first, or AMQP's (id 0) */
            c->sc_phase = !header                                 ? SC_OFF
                          : b[4] == 3 && c->sc_phase == SC_HEADER ? SC_SASL
                          : b[4] == 0                             ? SC_AMQP
                                                                  : SC_OFF;
            c->sc_have = 0;
            continue;
        }
        uint32_t size = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        uint8_t doff = b[4], type = b[5];
        if (size < 8) {
            c->sc_phase = SC_OFF;
            break;
        }
        if (type == 1 && c->sc_phase == SC_AMQP) {
            *why = "a SASL frame after the SASL exchange";
            c->sc_phase = SC_OFF;
            return i >= 8 ? i - 8 : 0;
        }
        if (doff == 2 && size >= 11 && c->sc_have < 11 && (type == 1 || !c->sc_opened))
            continue; /* the performative's descriptor too */
        if (c->sc_phase == SC_AMQP && !c->sc_opened && size > 8) {
            if (c->sc_have < 11 || b[8] != 0x00 || b[9] != 0x53 || b[10] != 0x10) {
                *why = "the first frame must be an open";
                c->sc_phase = SC_OFF;
                return i >= c->sc_have ? i - c->sc_have : 0;
            }
            c->sc_opened = true;
        }
        if (c->sc_have == 11 && b[8] == 0x00 && b[9] == 0x53 && b[10] == 0x41 &&
            ++c->sc_inits > 1) {
            *why = "a second sasl-init";
            c->sc_phase = SC_OFF;
            return i >= 11 ? i - 11 : 0;
        }
        c->sc_skip = size - c->sc_have;
        c->sc_have = 0;
        if (c->sc_phase == SC_SASL) {
            if (!c->sc_skip)
                return i;
            c->sc_cut = true;
        }
    }
    return n;
}

/* ---- adapter ---- */

static void *
a_open(void *proto, const tn_io *io, void *ctx)
{
    tn_amqp *a = proto;
    aconn *c = tn_xcalloc(1, sizeof *c);
    c->a = a;
    a->n_conns++;
    c->io = io;
    c->ioc = ctx;
    c->serial = tn_broker_serial(a->b);
    c->opened_at = c->last_rx = io->now(ctx);
    tn_flow_init(&c->flow, flow_resume);
    c->intake.resume = intake_resume;
    c->replies.send = reply_send;
    if (pn_connection_driver_init(&c->d, NULL, NULL) != 0) {
        free(c);
        return NULL;
    }
    pn_transport_t *t = c->d.transport;
    pn_transport_set_server(t);
    pn_transport_set_max_frame(t, a->conf.max_frame);
    pn_transport_set_channel_max(t, 255);
    /* proton announces half its timeout (so that peers send twice as often as needed) and
     * closes at the whole of it: ours is announced as it is and enforced by us (a_timeout). */
    pn_transport_set_idle_timeout(t, 2 * a->conf.idle_timeout_ms);
    pn_transport_require_auth(t, false); /* a client may skip SASL: checked as anonymous */
    pn_sasl_t *sasl = pn_sasl(t);
    pn_sasl_set_allow_insecure_mechs(sasl, true);
    pnx_sasl_set_implementation(t, &sasl_impl, c);
    pump(c);
    return c;
}

/* The standby has taken over or stopped holding: proton sees the input now. */
static void
held_wake(void *arg)
{
    aconn *c = arg;
    tn_broker_unhold(c->a->b, c->held);
    c->held = NULL;
    c->admitted = true;
    c->io->pause(c->ioc, false);
    c->io->wake(c->ioc);
}

static ssize_t
a_input(void *a, const uint8_t *p, size_t len)
{
    aconn *c = a;
    c->woken = false;
    if (c->closing)
        return (ssize_t)len;
    if (c->auth_job)
        return 0; /* nothing more until the authenticator answers: auth_done() wakes us */
    if (len)
        c->last_rx = c->io->now(c->ioc);
    if (!c->got_input && len >= 5 && memcmp(p, "AMQP\x02", 5) == 0) {
        /* TLS on a plain listener: proton would close without a word; [AMQP 2.2] wants a
         * header we support back first. */
        tn_log_info("AMQP-ERROR", "%s: a TLS protocol header on a plain listener; closing",
                    peer(c));
        tn_buf_append(c->io->out(c->ioc), "AMQP\x03\x01\x00\x00", 8);
        c->closing = true;
        c->io->close(c->ioc);
        return (ssize_t)len;
    }
    if (!c->admitted && len) {
        /* A standby about to take over holds the client rather than refusing it. */
        if (c->held)
            return 0;
        if ((c->held = tn_broker_hold(c->a->b, held_wake, c)) != NULL) {
            c->io->pause(c->ioc, true);
            return 0;
        }
        c->admitted = true;
    }
    c->got_input |= len > 0;
    size_t off = 0;
    while (off < len && !c->intake.waiting && !c->closing && !c->auth_job) {
        if (c->refused) {
            /* proton would read what a client pipelined after its sasl-init (an AMQP header,
             * an open, attaches) before it writes the failed outcome and stops: dropped. */
            off = len;
            pump(c); /* the outcome goes out */
            break;
        }
        pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->d);
        if (!rb.size) {
            if (pn_connection_driver_read_closed(&c->d))
                off = len;
            break;
        }
        size_t n = len - off < rb.size ? len - off : rb.size;
        const char *why = NULL;
        size_t ok = scan(c, p + off, n, &why);
        if (ok) {
            memcpy(rb.start, p + off, ok);
            pn_connection_driver_read_done(&c->d, ok);
        }
        off += ok;
        if (why) {
            if (!c->logged) {
                c->logged = true;
                tn_log_info("AMQP-ERROR", "%s: amqp:connection:framing-error: %s; closing", peer(c),
                            why);
            }
            pn_connection_driver_errorf(&c->d, "amqp:connection:framing-error", "%s", why);
            pn_connection_driver_close(&c->d); /* proton writes its close with the error */
            pump(c);
            return (ssize_t)len;
        }
        pump(c);
    }
    if (!off)
        pump(c); /* woken: work to do without input */
    return (ssize_t)off;
}

static void
a_drained(void *a)
{
    aconn *c = a;
    pump(c);
}

static void
a_timeout(void *a, uint64_t now)
{
    aconn *c = a;
    if ((!c->open || c->auth_job) && now >= c->opened_at + c->a->conf.connect_timeout_ms) {
        tn_log_info("AMQP-TIMEOUT", "%s: %s in time, closing", peer(c),
                    c->auth_job ? "not authenticated" : "no AMQP open");
        c->closing = true; /* an authenticator's job is cancelled in a_closed() */
        c->io->close(c->ioc);
        return;
    }
    if (c->intake.waiting || c->auth_job)
        c->last_rx = now; /* we do not read it: its frames cannot be heard */
    if (now > c->last_rx + c->a->conf.idle_timeout_ms) {
        char msg[96];
        snprintf(msg, sizeof msg, "idle-time-out: nothing received for %" PRIu64 " ms",
                 now - c->last_rx);
        conn_fail(c, "amqp:resource-limit-exceeded", msg);
    }
    pump(c);
}

static void
a_closed(void *a, int reason)
{
    (void)reason;
    aconn *c = a;
    c->a->n_conns--;
    tn_broker_unhold(c->a->b, c->held);
    c->held = NULL;
    if (c->auth_job) { /* its done() never comes now */
        const tn_auth *au = &c->a->conf.auth;
        au->cancel(au->ctx, c->auth_job);
        c->auth_job = NULL;
    }
    c->closing = true;
    run_later(c);
    tn_replies_cancel(&c->replies);
    for (alink *lk = c->links; lk; lk = lk->next)
        link_release(lk, false);
    reap(c, true);
    tn_intake_release(c->a->b, &c->intake);
    tn_flow_fini(&c->flow);
    pn_connection_driver_destroy(&c->d);
    free(c->later);
    free(c->container);
    free(c->user);
    free(c);
}

const tn_adapter_ops tn_amqp_adapter = {
    .name = "amqp",
    .open = a_open,
    .input = a_input,
    .drained = a_drained,
    .timeout = a_timeout,
    .closed = a_closed,
};

tn_amqp *
tn_amqp_new(tn_broker *b, const tn_amqp_conf *conf)
{
    tn_amqp *a = tn_xcalloc(1, sizeof *a);
    a->b = b;
    a->conf = *conf;
    if (!a->conf.max_frame)
        a->conf.max_frame = DEFAULT_MAX_FRAME;
    if (a->conf.max_frame < 512)
        a->conf.max_frame = 512; /* AMQP's minimum */
    if (!a->conf.idle_timeout_ms)
        a->conf.idle_timeout_ms = 60000;
    if (!a->conf.credit)
        a->conf.credit = 1000;
    if (!a->conf.prefetch)
        a->conf.prefetch = 1000;
    if (!a->conf.max_links)
        a->conf.max_links = 1024;
    if (!a->conf.connect_timeout_ms)
        a->conf.connect_timeout_ms = 10000;
    if (!a->conf.max_message)
        a->conf.max_message = 100u << 20;
    tn_buf_init(&a->props, 65536 + 16);
    tn_buf_init(&a->enc, 2 * 65536 + 4096 + TN_NET_REF_MIN);
    tn_buf_init(&a->rx, (size_t)a->conf.max_message + 65536u);
    tn_buf_init(&a->ann, 65536);
    return a;
}

void
tn_amqp_free(tn_amqp *a)
{
    if (!a)
        return;
    tn_buf_fini(&a->props);
    tn_buf_fini(&a->enc);
    tn_buf_fini(&a->rx);
    tn_buf_fini(&a->ann);
    free(a);
}

uint32_t
tn_amqp_connections(const tn_amqp *a)
{
    return a->n_conns;
}
