/*
 * auth: the ACL file (Mosquitto's acl_file, with `queue` and `admin`; see auth.h) and the
 * checks made on the delivery path.
 *
 * Each rule's filter is split into levels once, at load. A check walks the name (or the
 * subscription filter) against those levels in place: %c and %u are compared piece by piece,
 * never substituted into a new string, so a check allocates nothing. Rules are kept apart by
 * kind (topic, queue) and by deny or grant, so a check reads only the lists that can answer it:
 * the denies first (any match refuses), then the grants.
 */
#include "core/auth/auth.h"
#include "core/auth/auth_int.h"

#include "core/base/base.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

enum { L_LIT, L_PLUS, L_HASH, L_TMPL }; /* a template holds %c or %u (patterns only) */
enum { SUB_C = 1, SUB_U = 2 };

struct level {
    const char *s; /* into the rule's copy of the filter */
    uint32_t len;
    uint8_t type;
};

struct rule {
    struct level *lv; /* one allocation: the levels, then the filter's text */
    uint32_t n;
    uint8_t access; /* TN_ACL_READ | TN_ACL_WRITE; 0 for deny */
    uint8_t subst;  /* SUB_C | SUB_U: what the filter needs substituted */
};

struct rules {
    struct rule *v;
    size_t n, cap;
};

/* The rules of one section (anonymous, one user, the patterns). */
struct set {
    struct rules deny[2], grant[2]; /* by tn_acl_kind */
};

struct acl_user {
    UT_hash_handle hh;
    char *name;
    bool admin;
    struct set set;
};

struct tn_acl {
    struct set anon;
    struct set patterns;
    struct acl_user *users;
};

/* Who is asking: the substitutions a pattern may use. */
struct who {
    const char *user, *cid;
    size_t ulen, clen;
    bool user_ok, cid_ok; /* usable for %u, %c */
};

/* ---- matching ---- */

/* Whether template level l, with %c and %u substituted, equals s (n bytes). */
static bool
tmpl_eq(const struct level *l, const char *s, size_t n, const struct who *w)
{
    size_t j = 0;
    for (uint32_t i = 0; i < l->len;) {
        if (l->s[i] == '%' && i + 1 < l->len && (l->s[i + 1] == 'c' || l->s[i + 1] == 'u')) {
            const char *sub = l->s[i + 1] == 'c' ? w->cid : w->user;
            size_t sl = l->s[i + 1] == 'c' ? w->clen : w->ulen;
            if (n - j < sl || memcmp(s + j, sub, sl) != 0)
                return false;
            j += sl;
            i += 2;
        } else {
            if (j >= n || s[j] != l->s[i])
                return false;
            j++;
            i++;
        }
    }
    return j == n;
}

/* Whether level l (substituted) is a name level starting with '$'. */
static bool
level_is_dollar(const struct level *l, const struct who *w)
{
    if (l->type == L_LIT)
        return l->len > 0 && l->s[0] == '$';
    if (l->type != L_TMPL)
        return false;
    if (l->len >= 2 && l->s[0] == '%' && l->s[1] == 'c')
        return w->cid[0] == '$';
    if (l->len >= 2 && l->s[0] == '%' && l->s[1] == 'u')
        return w->user[0] == '$';
    return l->s[0] == '$';
}

static bool
subst_ok(const struct rule *r, const struct who *w)
{
    return (!(r->subst & SUB_C) || w->cid_ok) && (!(r->subst & SUB_U) || w->user_ok);
}

/* Whether rule level l (not '#') takes the name level p (n bytes, no wildcard), level i: '+'
 * any but a first level starting with '$' [MQTT-4.7.2-1], a literal itself, a template itself
 * substituted. */
static bool
level_takes(const struct level *l, const char *p, size_t n, uint32_t i, const struct who *w)
{
    if (l->type == L_PLUS)
        return !(i == 0 && n > 0 && p[0] == '$');
    if (l->type == L_LIT)
        return n == l->len && memcmp(p, l->s, n) == 0;
    return tmpl_eq(l, p, n, w);
}

/* Whether the rule's filter matches the concrete name. [MQTT-4.7.1-1..3], [MQTT-4.7.2-1] */
static bool
rule_matches(const struct rule *r, const char *name, const struct who *w)
{
    const char *p = name;
    bool more = true; /* p still has a level */

    if (!subst_ok(r, w))
        return false;
    for (uint32_t i = 0; i < r->n; i++) {
        const struct level *l = &r->lv[i];
        if (l->type == L_HASH) /* the rest, including the parent level */
            return !(i == 0 && name[0] == '$');
        if (!more)
            return false;
        const char *e = strchrnul(p, '/');
        if (!level_takes(l, p, (size_t)(e - p), i, w))
            return false;
        if (*e == '/')
            p = e + 1;
        else
            more = false;
    }
    return !more;
}

/*
 * Whether some name matches both the rule's filter and the subscription filter f (valid). Both
 * are walked level by level: two literals must be equal; '+' takes any one level; a '#' on
 * either side takes whatever the other still has, including nothing (its parent level). A
 * wildcard in the first level cannot meet a literal '$' first level: no name would match both.
 */
static bool
rule_intersects(const struct rule *r, const char *f, const struct who *w)
{
    const char *p = f;
    bool more = true; /* f still has a level */

    if (!subst_ok(r, w))
        return false;
    for (uint32_t i = 0;; i++) {
        bool rend = i == r->n;
        const char *e = p;
        size_t n = 0;
        if (!more && rend)
            return true;
        if (more) {
            e = strchrnul(p, '/');
            n = (size_t)(e - p);
        }
        bool fhash = more && n == 1 && p[0] == '#';
        bool fplus = more && n == 1 && p[0] == '+';
        /* A '#' meeting the end of the other side makes the name the levels so far, which is
         * no name when that is one empty level: "/#" and "+" only share "". */
        if (fhash)
            return !(i == 0 && !rend && level_is_dollar(&r->lv[0], w)) &&
                   !(i == 1 && rend && f[0] == '/');
        if (!rend && r->lv[i].type == L_HASH)
            return !(i == 0 && more && n > 0 && p[0] == '$') &&
                   !(i == 1 && !more && r->lv[0].type == L_LIT && r->lv[0].len == 0);
        if (!more || rend)
            return false;
        const struct level *l = &r->lv[i];
        if (fplus ? i == 0 && level_is_dollar(l, w) : !level_takes(l, p, n, i, w))
            return false;
        if (*e == '/')
            p = e + 1;
        else
            more = false;
    }
}

static bool
any_matches(const struct rules *rs, const char *name, const struct who *w)
{
    for (size_t i = 0; i < rs->n; i++)
        if (rule_matches(&rs->v[i], name, w))
            return true;
    return false;
}

/* Clears from *need the access bits the matching grants give; true once none is left. */
static bool
grants(const struct rules *rs, const char *name, const struct who *w, int *need)
{
    for (size_t i = 0; i < rs->n; i++) {
        const struct rule *r = &rs->v[i];
        if ((r->access & *need) && rule_matches(r, name, w)) {
            *need &= ~r->access;
            if (*need == 0)
                return true;
        }
    }
    return false;
}

static bool
subst_usable(const char *s)
{
    return s != NULL && s[0] != '\0' && strpbrk(s, "+#/") == NULL;
}

/* The user's section (anonymous when user is NULL; NULL for a user the file does not name),
 * and w filled for the patterns. */
static const struct set *
lookup(const tn_acl *a, const char *user, const char *client_id, struct who *w)
{
    const struct acl_user *u = NULL;

    memset(w, 0, sizeof *w);
    if (a->patterns.deny[0].n + a->patterns.grant[0].n + a->patterns.deny[1].n +
            a->patterns.grant[1].n >
        0) {
        w->user_ok = subst_usable(user);
        w->cid_ok = subst_usable(client_id);
        w->user = w->user_ok ? user : "";
        w->cid = w->cid_ok ? client_id : "";
        w->ulen = strlen(w->user);
        w->clen = strlen(w->cid);
    }
    if (user == NULL)
        return &a->anon;
    HASH_FIND_STR(a->users, user, u);
    return u ? &u->set : NULL;
}

bool
tn_acl_allows(const tn_acl *a, const char *user, const char *client_id, tn_acl_kind kind,
              const char *name, int access)
{
    struct who w;
    int need = access;

    if (a == NULL)
        return true;
    if ((kind != TN_ACL_TOPIC && kind != TN_ACL_QUEUE) || access <= 0 ||
        (access & ~(TN_ACL_READ | TN_ACL_WRITE)) || name == NULL || name[0] == '\0' ||
        strpbrk(name, "+#") != NULL)
        return false;
    const struct set *s = lookup(a, user, client_id, &w);
    if ((s && any_matches(&s->deny[kind], name, &w)) ||
        any_matches(&a->patterns.deny[kind], name, &w))
        return false;
    return (s && grants(&s->grant[kind], name, &w, &need)) ||
           grants(&a->patterns.grant[kind], name, &w, &need);
}

/*
 * Whether every name the subscription filter f (valid) matches is matched by the rule's filter
 * too (a deny rule that leaves nothing of f readable). Walked level by level: a '#' in the rule
 * takes the rest; a '+' in the rule takes any one level of f but a '#'; a literal in the rule
 * only the same literal. The first level's '$' rule holds on both sides.
 */
static bool
rule_covers(const struct rule *r, const char *f, const struct who *w)
{
    const char *p = f;
    bool more = true; /* f still has a level */

    if (!subst_ok(r, w))
        return false;
    for (uint32_t i = 0;; i++) {
        if (i < r->n && r->lv[i].type == L_HASH)
            return !(i == 0 && more && p[0] == '$');
        if (!more || i == r->n)
            return !more && i == r->n;
        const char *e = strchrnul(p, '/');
        size_t n = (size_t)(e - p);
        bool fhash = n == 1 && p[0] == '#', fplus = n == 1 && p[0] == '+';
        const struct level *l = &r->lv[i];
        if (fhash)
            return false; /* only a '#' (above) takes every depth */
        if (fplus ? l->type != L_PLUS : !level_takes(l, p, n, i, w))
            return false;
        if (*e == '/')
            p = e + 1;
        else
            more = false;
    }
}

static bool
any_covers(const struct rules *rs, const char *filter, const struct who *w)
{
    for (size_t i = 0; i < rs->n; i++)
        if (rule_covers(&rs->v[i], filter, w))
            return true;
    return false;
}

static bool
any_readable(const struct rules *rs, const char *filter, const struct who *w)
{
    for (size_t i = 0; i < rs->n; i++)
        if ((rs->v[i].access & TN_ACL_READ) && rule_intersects(&rs->v[i], filter, w))
            return true;
    return false;
}

bool
tn_acl_filter_readable(const tn_acl *a, const char *user, const char *client_id, tn_acl_kind kind,
                       const char *filter)
{
    struct who w;

    if (a == NULL)
        return true;
    if ((kind != TN_ACL_TOPIC && kind != TN_ACL_QUEUE) || !tn_acl_filter_is_valid(filter))
        return false;
    /* A filter without wildcards is one name: readable exactly when that name is. */
    if (strpbrk(filter, "+#") == NULL)
        return tn_acl_allows(a, user, client_id, kind, filter, TN_ACL_READ);
    const struct set *s = lookup(a, user, client_id, &w);
    /* Nothing left when a deny rule covers all the filter can match. */
    if ((s && any_covers(&s->deny[kind], filter, &w)) ||
        any_covers(&a->patterns.deny[kind], filter, &w))
        return false;
    return (s && any_readable(&s->grant[kind], filter, &w)) ||
           any_readable(&a->patterns.grant[kind], filter, &w);
}

bool
tn_acl_uses_client_id(const tn_acl *a)
{
    if (a == NULL)
        return false;
    for (int k = 0; k < 2; k++) {
        const struct rules *sets[2] = {&a->patterns.deny[k], &a->patterns.grant[k]};
        for (int j = 0; j < 2; j++)
            for (size_t i = 0; i < sets[j]->n; i++)
                if (sets[j]->v[i].subst & SUB_C)
                    return true;
    }
    return false;
}

bool
tn_acl_is_admin(const tn_acl *a, const char *user)
{
    const struct acl_user *u = NULL;

    if (a == NULL)
        return true;
    if (user == NULL)
        return false;
    HASH_FIND_STR(a->users, user, u);
    return u != NULL && u->admin;
}

/* ---- filters ---- */

/* Whether s (n bytes) is a valid filter. [MQTT-4.7.1-2], [MQTT-4.7.1-3] */
static bool
filter_valid(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '#')
            return (i == 0 || s[i - 1] == '/') && i + 1 == n;
        if (s[i] == '+' && ((i > 0 && s[i - 1] != '/') || (i + 1 < n && s[i + 1] != '/')))
            return false;
        if (s[i] == '\0')
            return false;
    }
    return true;
}

bool
tn_acl_filter_is_valid(const char *filter)
{
    return filter != NULL && filter_valid(filter, strlen(filter));
}

/* ---- loading ---- */

static void
free_set(struct set *s)
{
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < s->deny[k].n; i++)
            free(s->deny[k].v[i].lv);
        for (size_t i = 0; i < s->grant[k].n; i++)
            free(s->grant[k].v[i].lv);
        free(s->deny[k].v);
        free(s->grant[k].v);
    }
}

void
tn_acl_free(tn_acl *a)
{
    struct acl_user *u, *tmp;

    if (a == NULL)
        return;
    free_set(&a->anon);
    free_set(&a->patterns);
    HASH_ITER(hh, a->users, u, tmp)
    {
        HASH_DEL(a->users, u);
        free_set(&u->set);
        free(u->name);
        free(u);
    }
    free(a);
}

/* Builds r from filter f (n bytes, valid); %c and %u are substituted in patterns only. */
static int
rule_init(struct rule *r, const char *f, size_t n, int access, bool pattern)
{
    uint32_t levels = 1;
    for (size_t i = 0; i < n; i++)
        levels += f[i] == '/';
    struct level *lv = malloc(levels * sizeof *lv + n + 1);
    if (lv == NULL)
        return TN_ENOMEM;
    char *text = (char *)(lv + levels);
    memcpy(text, f, n);
    text[n] = '\0';

    r->lv = lv;
    r->n = levels;
    r->access = (uint8_t)access;
    r->subst = 0;
    const char *p = text;
    for (uint32_t i = 0; i < levels; i++) {
        const char *e = strchrnul(p, '/');
        struct level *l = &lv[i];
        l->s = p;
        l->len = (uint32_t)(e - p);
        if (l->len == 1 && p[0] == '+') {
            l->type = L_PLUS;
        } else if (l->len == 1 && p[0] == '#') {
            l->type = L_HASH;
        } else {
            l->type = L_LIT;
            for (uint32_t j = 0; pattern && j + 1 < l->len; j++) {
                if (p[j] == '%' && (p[j + 1] == 'c' || p[j + 1] == 'u')) {
                    l->type = L_TMPL;
                    r->subst |= p[j + 1] == 'c' ? SUB_C : SUB_U;
                    j++;
                }
            }
        }
        p = e + 1;
    }
    return 0;
}

static int
rules_add(struct rules *rs, const char *f, size_t n, int access, bool pattern)
{
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? rs->cap * 2 : 4;
        struct rule *v = realloc(rs->v, cap * sizeof *v);
        if (v == NULL)
            return TN_ENOMEM;
        rs->v = v;
        rs->cap = cap;
    }
    int rc = rule_init(&rs->v[rs->n], f, n, access, pattern);
    if (rc == 0)
        rs->n++;
    return rc;
}

static bool
is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Whether [p, end) starts with word followed by a space or the end; moves p past it. */
static bool
take_word(const char **p, const char *end, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(end - *p) < n || memcmp(*p, word, n) != 0 || (*p + n < end && !is_space((*p)[n])))
        return false;
    *p += n;
    while (*p < end && is_space(**p))
        ++*p;
    return true;
}

int
tn_acl_parse(const char *name, const char *text, size_t len, tn_acl **out, char *err, size_t errlen)
{
    tn_acl *a = calloc(1, sizeof *a);
    struct acl_user *cur = NULL; /* the last `user` line's, NULL before any */
    tn_auth__lines it;
    const char *line;
    size_t n;
    int rc = TN_EINVAL;

    *out = NULL;
    if (a == NULL) {
        tn_auth__err(err, errlen, "%s: out of memory", name);
        return TN_ENOMEM;
    }
    tn_auth__lines_init(&it, text, len);
    while (tn_auth__lines_next(&it, &line, &n)) {
        const char *p = line, *end = line + n;
        while (p < end && is_space(*p))
            p++;
        while (end > p && is_space(end[-1]))
            end--;
        if (p == end || *p == '#')
            continue;
        if (memchr(p, '\0', (size_t)(end - p)) != NULL) {
            tn_auth__err(err, errlen, "%s:%u: NUL byte in the line", name, it.lineno);
            goto out;
        }
        int kind = -1;
        bool pattern = false;
        if (take_word(&p, end, "topic")) {
            kind = TN_ACL_TOPIC;
        } else if (take_word(&p, end, "queue")) {
            kind = TN_ACL_QUEUE;
        } else if (take_word(&p, end, "pattern")) {
            kind = TN_ACL_TOPIC;
            pattern = true;
        } else if (take_word(&p, end, "user")) {
            if (p == end) {
                tn_auth__err(err, errlen, "%s:%u: `user` needs a name", name, it.lineno);
                goto out;
            }
            size_t ul = (size_t)(end - p);
            HASH_FIND(hh, a->users, p, ul, cur);
            if (cur == NULL) {
                cur = calloc(1, sizeof *cur);
                if (cur == NULL || (cur->name = strndup(p, ul)) == NULL) {
                    free(cur);
                    tn_auth__err(err, errlen, "%s: out of memory", name);
                    rc = TN_ENOMEM;
                    goto out;
                }
                HASH_ADD_KEYPTR(hh, a->users, cur->name, ul, cur);
            }
            continue;
        } else if (take_word(&p, end, "admin")) {
            if (p != end || cur == NULL) {
                tn_auth__err(err, errlen, "%s:%u: `admin` takes nothing and follows a `user` line",
                             name, it.lineno);
                goto out;
            }
            cur->admin = true;
            continue;
        } else {
            const char *w = p;
            while (p < end && !is_space(*p))
                p++;
            tn_auth__err(err, errlen,
                         "%s:%u: unknown keyword \"%.*s\" (expected topic, pattern, queue, user "
                         "or admin)",
                         name, it.lineno, (int)(p - w > 32 ? 32 : p - w), w);
            goto out;
        }

        int access = TN_ACL_READ | TN_ACL_WRITE;
        bool named = true;
        if (take_word(&p, end, "read"))
            access = TN_ACL_READ;
        else if (take_word(&p, end, "write"))
            access = TN_ACL_WRITE;
        else if (take_word(&p, end, "readwrite"))
            access = TN_ACL_READ | TN_ACL_WRITE;
        else if (take_word(&p, end, "deny"))
            access = 0;
        else
            named = false;
        if (p == end) {
            tn_auth__err(err, errlen, "%s:%u: missing filter%s", name, it.lineno,
                         named ? " after the access" : "");
            goto out;
        }
        if (!filter_valid(p, (size_t)(end - p))) {
            tn_auth__err(err, errlen,
                         "%s:%u: invalid filter (+ and # must be whole levels, # the last)", name,
                         it.lineno);
            goto out;
        }
        struct set *s = pattern ? &a->patterns : cur ? &cur->set : &a->anon;
        struct rules *rs = access ? &s->grant[kind] : &s->deny[kind];
        if (rules_add(rs, p, (size_t)(end - p), access, pattern) != 0) {
            tn_auth__err(err, errlen, "%s: out of memory", name);
            rc = TN_ENOMEM;
            goto out;
        }
    }
    *out = a;
    a = NULL;
    rc = 0;
out:
    tn_acl_free(a);
    return rc;
}

int
tn_acl_load(const char *path, tn_acl **out, char *err, size_t errlen)
{
    char *text;
    size_t len;
    int rc = tn_auth__read_file(path, &text, &len, err, errlen);

    *out = NULL;
    if (rc != 0)
        return rc;
    rc = tn_acl_parse(path, text, len, out, err, errlen);
    free(text);
    return rc;
}
