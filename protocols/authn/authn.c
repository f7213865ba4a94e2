/* The authenticator adapters ask (see authn.h). */
#include "protocols/authn/authn.h"

#include "core/base/base.h"

#include <stdlib.h>
#include <string.h>

/* The users a job checks against: kept alive by the jobs still hashing after a reload. */
typedef struct users_ref {
    tn_users *u;
    unsigned refs;
} users_ref;

struct tn_authn {
    tn_authn_conf conf;
    char *pw_file, *acl_file;
    users_ref *users; /* NULL: no password file */
    tn_acl *acl;
    tn_auth_job *jobs; /* not yet answered (done() to come) */
};

struct tn_auth_job {
    tn_authn *a; /* NULL once the authenticator is freed */
    uv_work_t work;
    uv_timer_t timer;
    users_ref *users;
    char *user;
    uint8_t *pw;
    size_t pw_len;
    int result;
    bool hashing;   /* queued on the thread pool */
    bool timing;    /* the timer runs (the delay of a refusal) */
    bool cancelled; /* the connection is gone: free once the pool and timer are done */
    void (*done)(void *arg);
    void *arg;
    tn_auth_job *next, *prev;
};

static void
users_unref(users_ref *r)
{
    if (r && --r->refs == 0) {
        tn_users_free(r->u);
        free(r);
    }
}

static void
job_unlink(tn_auth_job *j)
{
    if (!j->a)
        return;
    if (j->prev)
        j->prev->next = j->next;
    else
        j->a->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->next = j->prev = NULL;
}

static void
job_free(tn_auth_job *j)
{
    users_unref(j->users);
    if (j->pw) {
        memset(j->pw, 0, j->pw_len); /* not left lying in freed memory */
        free(j->pw);
    }
    free(j->user);
    free(j);
}

static void
timer_closed(uv_handle_t *h)
{
    job_free(h->data);
}

/* The answer is ready (and its delay, if any, is over): tell the connection. */
static void
answer(tn_auth_job *j)
{
    job_unlink(j);
    j->a = NULL;
    j->done(j->arg);
}

static void
on_delay(uv_timer_t *t)
{
    tn_auth_job *j = t->data;
    j->timing = false;
    answer(j);
}

/* Answers now when allowed, or after the refusal delay. Loop thread. */
static void
settle(tn_auth_job *j)
{
    uint32_t delay = j->a ? j->a->conf.fail_delay_ms : 0;
    if (j->result != 0 && delay) {
        j->timing = true;
        uv_timer_start(&j->timer, on_delay, delay, 0);
        return;
    }
    answer(j);
}

static void
hash_work(uv_work_t *w)
{
    tn_auth_job *j = w->data;
    j->result = tn_users_check(j->users->u, j->user, j->pw, j->pw_len) == 0 ? 0 : TN_EINVAL;
}

static void
hash_done(uv_work_t *w, int status)
{
    tn_auth_job *j = w->data;
    j->hashing = false;
    if (j->cancelled) {
        uv_close((uv_handle_t *)&j->timer, timer_closed);
        return;
    }
    if (status != 0)
        j->result = TN_EINVAL;
    settle(j);
}

/* The CN of an RFC 2253 subject ("CN=dev-1,O=Acme"), unescaped; NULL when there is none. */
static char *
subject_cn(const char *s)
{
    for (const char *p = s; p && *p;) {
        if ((p == s || p[-1] == ',') && (p[0] == 'C' || p[0] == 'c') &&
            (p[1] == 'N' || p[1] == 'n') && p[2] == '=') {
            p += 3;
            char *out = tn_xmalloc(strlen(p) + 1);
            size_t n = 0;
            for (; *p && *p != ','; p++) {
                if (*p == '\\' && p[1])
                    p++;
                out[n++] = *p;
            }
            out[n] = '\0';
            if (n)
                return out;
            free(out);
            return NULL;
        }
        /* The next attribute: after an unescaped comma. */
        while (*p && *p != ',') {
            if (*p == '\\' && p[1])
                p++;
            p++;
        }
        if (*p == ',')
            p++;
    }
    return NULL;
}

static tn_auth_job *
job_new(tn_authn *a, void (*done)(void *), void *arg)
{
    tn_auth_job *j = tn_xcalloc(1, sizeof *j);
    j->a = a;
    j->done = done;
    j->arg = arg;
    j->work.data = j;
    uv_timer_init(a->conf.loop, &j->timer);
    j->timer.data = j;
    j->next = a->jobs;
    if (a->jobs)
        a->jobs->prev = j;
    a->jobs = j;
    return j;
}

/* A refusal, answered after the delay. */
static int
refuse(tn_authn *a, int why, tn_auth_job **job, void (*done)(void *), void *arg)
{
    if (!a->conf.fail_delay_ms)
        return why;
    tn_auth_job *j = job_new(a, done, arg);
    j->result = why;
    settle(j);
    *job = j;
    return TN_EAGAIN;
}

static int
a_begin(void *ctx, const tn_auth_req *req, char **user, tn_auth_job **job, void (*done)(void *arg),
        void *arg)
{
    tn_authn *a = ctx;
    *user = NULL;
    *job = NULL;
    if (a->conf.identity_as_username) {
        /* The certificate is the credential: no certificate, no entry. */
        char *cn = req->cert_subject ? subject_cn(req->cert_subject) : NULL;
        if (!cn)
            return refuse(a, TN_EDENIED, job, done, arg);
        *user = cn;
        return 0;
    }
    if (!req->user) {
        if (a->conf.allow_anonymous)
            return 0;
        return refuse(a, TN_EDENIED, job, done, arg);
    }
    if (!a->users) {
        /* No password file: a user name is taken as given where anonymous clients are allowed
         * (as Mosquitto does), and nobody gets in where they are not. */
        if (!a->conf.allow_anonymous)
            return refuse(a, TN_EDENIED, job, done, arg);
        *user = tn_xstrdup(req->user);
        return 0;
    }
    tn_auth_job *j = job_new(a, done, arg);
    j->users = a->users;
    j->users->refs++;
    j->user = tn_xstrdup(req->user);
    j->pw_len = req->password ? req->password_len : 0;
    j->pw = tn_xmalloc(j->pw_len + 1);
    if (j->pw_len)
        memcpy(j->pw, req->password, j->pw_len);
    if (uv_queue_work(a->conf.loop, &j->work, hash_work, hash_done) != 0) {
        j->result = TN_EINVAL;
        settle(j);
    } else {
        j->hashing = true;
    }
    *job = j;
    return TN_EAGAIN;
}

static int
a_finish(void *ctx, tn_auth_job *j, char **user)
{
    (void)ctx;
    int rc = j->result;
    *user = NULL;
    if (rc == 0) {
        *user = j->user;
        j->user = NULL;
    }
    uv_close((uv_handle_t *)&j->timer, timer_closed);
    return rc;
}

static void
a_cancel(void *ctx, tn_auth_job *j)
{
    (void)ctx;
    job_unlink(j);
    j->a = NULL;
    j->cancelled = true;
    if (j->timing) {
        uv_timer_stop(&j->timer);
        j->timing = false;
    }
    if (!j->hashing)
        uv_close((uv_handle_t *)&j->timer, timer_closed);
    /* else hash_done closes it */
}

static int
load(tn_authn *a, users_ref **users, tn_acl **acl, char *err, size_t errlen)
{
    *users = NULL;
    *acl = NULL;
    if (a->pw_file) {
        tn_users *u = NULL;
        if (tn_users_load(a->pw_file, &u, err, errlen) != 0)
            return -1;
        *users = tn_xcalloc(1, sizeof **users);
        (*users)->u = u;
        (*users)->refs = 1;
    }
    if (a->acl_file && tn_acl_load(a->acl_file, acl, err, errlen) != 0) {
        users_unref(*users);
        *users = NULL;
        return -1;
    }
    return 0;
}

int
tn_authn_new(const tn_authn_conf *conf, tn_authn **out, char *err, size_t errlen)
{
    tn_authn *a = tn_xcalloc(1, sizeof *a);
    a->conf = *conf;
    a->pw_file = conf->password_file ? tn_xstrdup(conf->password_file) : NULL;
    a->acl_file = conf->acl_file ? tn_xstrdup(conf->acl_file) : NULL;
    a->conf.password_file = a->pw_file;
    a->conf.acl_file = a->acl_file;
    if (load(a, &a->users, &a->acl, err, errlen) != 0) {
        free(a->pw_file);
        free(a->acl_file);
        free(a);
        return -1;
    }
    *out = a;
    return 0;
}

int
tn_authn_reload(tn_authn *a, char *err, size_t errlen)
{
    users_ref *users;
    tn_acl *acl;
    if (load(a, &users, &acl, err, errlen) != 0)
        return -1;
    users_unref(a->users); /* jobs hashing against the old users keep them until done */
    tn_acl_free(a->acl);
    a->users = users;
    a->acl = acl;
    return 0;
}

void
tn_authn_free(tn_authn *a)
{
    if (!a)
        return;
    while (a->jobs)
        a_cancel(a, a->jobs);
    users_unref(a->users);
    tn_acl_free(a->acl);
    free(a->pw_file);
    free(a->acl_file);
    free(a);
}

tn_auth
tn_authn_iface(tn_authn *a)
{
    return (tn_auth){.begin = a_begin, .finish = a_finish, .cancel = a_cancel, .ctx = a};
}

const tn_acl *
tn_authn_acl(const tn_authn *a)
{
    return a->acl;
}

size_t
tn_authn_users(const tn_authn *a)
{
    return a->users ? tn_users_count(a->users->u) : 0;
}
