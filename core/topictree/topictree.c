/*
 * topictree: a trie of levels, with a uthash table of children per node.
 *
 * Each node below the root is one level of a filter or name; its entries (subscription values,
 * or the one value stored under an exact name) sit in a small array in the node, in insertion
 * order. The root is no level: every name has at least one level (the name "" is one empty
 * level), so the root never holds entries.
 *
 * Nothing recurses. match and find keep an explicit stack (STACK_INLINE frames on the C stack,
 * then the heap), and the '>' walk and tn_topictree_free climb back up through parent pointers, so
 * a name or filter with tens of thousands of levels cannot overflow the thread's stack. A node
 * left with no entries and no children is freed at once, up to the root, so memory follows the
 * live entries.
 *
 * Allocation failures abort (tn_xmalloc), like the rest of the routing bookkeeping.
 */
#include "core/topictree/topictree.h"
#include "core/topictree/topictree_int.h"

#include "core/base/base.h"

#include <stdlib.h>
#include <string.h>

/* uthash allocates its bucket tables; like the nodes, they abort on out-of-memory. */
#define uthash_malloc(sz) tn_xmalloc(sz)
#define uthash_free(ptr, sz) free(ptr)
#define uthash_fatal(msg) tn_assert_fail(msg, __FILE__, __LINE__)
#include <uthash.h>

struct node {
    UT_hash_handle hh;     /* in parent->children, keyed by key[0..key_len) */
    struct node *parent;   /* NULL for the root */
    struct node *children; /* uthash head; NULL when none */
    struct node *star;     /* the child "*", if any: match takes it without hashing */
    struct node *gt;       /* the child ">", if any */
    void **vals;           /* entries: &one while cap <= 1, else a heap array */
    void *one;
    size_t nvals;
    size_t cap;
    size_t key_len;
    char key[]; /* this level, NUL-terminated */
};

struct tn_topictree {
    struct node *root;
    size_t count; /* entries */
    size_t nodes; /* nodes below the root */
};

/* Splits the first level off s: its length goes in *len. Returns the levels after it, or NULL
 * when it was the last one ("a." is "a" then "", while "a" is just "a"). */
static const char *
level_next(const char *s, size_t *len)
{
    const char *e = strchrnul(s, '.');
    *len = (size_t)(e - s);
    return *e ? e + 1 : NULL;
}

static bool
level_is(const char *p, size_t len, char c)
{
    return len == 1 && p[0] == c;
}

/* [MQTT-4.7.2-1]: a leading wildcard does not match a first level that starts with '$'. */
static bool
is_dollar(const char *p, size_t len)
{
    return len > 0 && p[0] == '$';
}

/* ---- entries ---- */

static void
vals_push(struct node *n, void *v)
{
    if (n->nvals == n->cap) {
        if (n->cap == 0) {
            n->vals = &n->one;
            n->cap = 1;
        } else {
            size_t cap = n->cap * 2;
            void **a;
            if (n->vals == &n->one) {
                a = tn_xmalloc(cap * sizeof *a);
                a[0] = n->one;
            } else {
                a = tn_xrealloc(n->vals, cap * sizeof *a);
            }
            n->vals = a;
            n->cap = cap;
        }
    }
    n->vals[n->nvals++] = v;
}

/* Removes entry i, keeping the others in order, and gives memory back when the array is at most
 * a quarter full. */
static void
vals_remove(struct node *n, size_t i)
{
    tn_assert(i < n->nvals);
    memmove(&n->vals[i], &n->vals[i + 1], (n->nvals - i - 1) * sizeof *n->vals);
    n->nvals--;
    if (n->vals == &n->one || n->nvals > n->cap / 4)
        return;
    if (n->nvals <= 1) {
        n->one = n->nvals ? n->vals[0] : NULL;
        free(n->vals);
        n->vals = &n->one;
        n->cap = 1;
    } else {
        n->cap /= 2;
        n->vals = tn_xrealloc(n->vals, n->cap * sizeof *n->vals);
    }
}

/* ---- nodes ---- */

static struct node *
node_alloc(const char *key, size_t len)
{
    struct node *n = tn_xcalloc(1, sizeof *n + len + 1);
    memcpy(n->key, key, len);
    n->key[len] = '\0';
    n->key_len = len;
    return n;
}

static void
node_free(struct node *n)
{
    if (n->vals != &n->one)
        free(n->vals);
    free(n);
}

static struct node *
child_find(const struct node *n, const char *p, size_t len)
{
    struct node *c;
    HASH_FIND(hh, n->children, p, (unsigned)len, c);
    return c;
}

static struct node *
child_get(tn_topictree *t, struct node *n, const char *p, size_t len)
{
    struct node *c = child_find(n, p, len);
    if (c)
        return c;
    tn_assert(len <= 0xffffffffu); /* uthash keys are unsigned */
    c = node_alloc(p, len);
    c->parent = n;
    HASH_ADD_KEYPTR(hh, n->children, c->key, (unsigned)len, c);
    if (level_is(p, len, '*'))
        n->star = c;
    else if (level_is(p, len, '>'))
        n->gt = c;
    t->nodes++;
    return c;
}

/* The node for exactly this name or filter (wildcards taken literally), or NULL. */
static struct node *
node_find(const tn_topictree *t, const char *name)
{
    struct node *n = t->root;
    const char *rest = name;
    while (n && rest) {
        const char *p = rest;
        size_t len;
        rest = level_next(p, &len);
        n = child_find(n, p, len);
    }
    return n;
}

/* Like node_find, creating the missing nodes. */
static struct node *
node_make(tn_topictree *t, const char *name)
{
    struct node *n = t->root;
    const char *rest = name;
    while (rest) {
        const char *p = rest;
        size_t len;
        rest = level_next(p, &len);
        n = child_get(t, n, p, len);
    }
    return n;
}

/* Frees n and then its ancestors while they hold no entry and no child. */
static void
prune(tn_topictree *t, struct node *n)
{
    while (n != t->root && n->nvals == 0 && !n->children) {
        struct node *p = n->parent;
        HASH_DELETE(hh, p->children, n);
        if (p->star == n)
            p->star = NULL;
        if (p->gt == n)
            p->gt = NULL;
        node_free(n);
        t->nodes--;
        n = p;
    }
}

/* ---- the explicit stack of match and find ---- */

#define STACK_INLINE 16

struct frame {
    const struct node *n;
    const char *rest; /* levels still to match below n; NULL when none */
};

struct stack {
    struct frame *f; /* inl until it overflows */
    size_t len;
    size_t cap;
    struct frame inl[STACK_INLINE];
};

static void
stack_init(struct stack *s)
{
    s->f = s->inl;
    s->len = 0;
    s->cap = STACK_INLINE;
}

static void
stack_fini(struct stack *s)
{
    if (s->f != s->inl)
        free(s->f);
}

static void
stack_push(struct stack *s, const struct node *n, const char *rest)
{
    if (s->len == s->cap) {
        size_t cap = s->cap * 2;
        struct frame *f;
        if (s->f == s->inl) {
            f = tn_xmalloc(cap * sizeof *f);
            memcpy(f, s->inl, sizeof s->inl);
        } else {
            f = tn_xrealloc(s->f, cap * sizeof *f);
        }
        s->f = f;
        s->cap = cap;
    }
    s->f[s->len].n = n;
    s->f[s->len].rest = rest;
    s->len++;
}

/* ---- the full name of a node, for find ---- */

struct namebuf {
    char *p; /* inl, or the heap once a name outgrows it */
    size_t cap;
    char inl[256];
};

static void
namebuf_init(struct namebuf *b)
{
    b->p = b->inl;
    b->cap = sizeof b->inl;
}

static void
namebuf_fini(struct namebuf *b)
{
    if (b->p != b->inl)
        free(b->p);
}

/* Writes n's full name into b by climbing to the root; valid until the next call. */
static const char *
name_of(const tn_topictree *t, const struct node *n, struct namebuf *b)
{
    size_t len = 0; /* each level and its '.', the last '.' standing for the NUL */
    for (const struct node *m = n; m != t->root; m = m->parent)
        len += m->key_len + 1;
    tn_assert(len > 0);
    if (len > b->cap) {
        namebuf_fini(b);
        b->p = tn_xmalloc(len);
        b->cap = len;
    }
    char *end = b->p + len - 1;
    *end = '\0';
    for (const struct node *m = n; m != t->root; m = m->parent) {
        end -= m->key_len;
        memcpy(end, m->key, m->key_len);
        if (m->parent != t->root)
            *--end = '.';
    }
    return b->p;
}

static void
emit(const struct node *n, const char *name, tn_topictree_cb cb, void *arg)
{
    for (size_t i = 0; i < n->nvals; i++)
        cb(arg, name, n->vals[i]);
}

static void
emit_named(const tn_topictree *t, const struct node *n, struct namebuf *b, tn_topictree_cb cb,
           void *arg)
{
    if (n->nvals)
        emit(n, name_of(t, n, b), cb, arg);
}

/* The children of the root that a leading wildcard skips (when dollar is false). */
static bool
skipped(const tn_topictree *t, const struct node *c, bool dollar)
{
    return !dollar && c->parent == t->root && is_dollar(c->key, c->key_len);
}

static const struct node *
first_child(const tn_topictree *t, const struct node *n, bool dollar)
{
    const struct node *c = n->children;
    while (c && skipped(t, c, dollar))
        c = c->hh.next;
    return c;
}

static const struct node *
next_sibling(const tn_topictree *t, const struct node *n, bool dollar)
{
    const struct node *c = n->hh.next;
    while (c && skipped(t, c, dollar))
        c = c->hh.next;
    return c;
}

/* Emits top and everything below it, in pre-order: a '>' at top (zero or more levels), or the
 * whole tree. Unless dollar, the root's '$' children are skipped. */
static void
walk_subtree(const tn_topictree *t, const struct node *top, bool dollar, struct namebuf *b,
             tn_topictree_cb cb, void *arg)
{
    const struct node *n = top;
    for (;;) {
        if (n != t->root)
            emit_named(t, n, b, cb, arg);
        const struct node *c = first_child(t, n, dollar);
        if (c) {
            n = c;
            continue;
        }
        for (;;) {
            if (n == top)
                return;
            const struct node *s = next_sibling(t, n, dollar);
            if (s) {
                n = s;
                break;
            }
            n = n->parent;
        }
    }
}

/* ---- API ---- */

tn_topictree *
tn_topictree_new(void)
{
    tn_topictree *t = tn_xcalloc(1, sizeof *t);
    t->root = node_alloc("", 0);
    return t;
}

void
tn_topictree_free(tn_topictree *t)
{
    if (!t)
        return;
    /* Post-order without recursion: go down to a leaf, free it, go back to its parent. */
    struct node *n = t->root;
    while (n) {
        if (n->children) {
            n = n->children;
            continue;
        }
        struct node *p = n->parent;
        if (p)
            HASH_DELETE(hh, p->children, n);
        node_free(n);
        n = p;
    }
    free(t);
}

bool
tn_topictree_filter_valid(const char *filter)
{
    if (!filter)
        return false;
    const char *rest = filter;
    while (rest) {
        const char *p = rest;
        size_t len;
        rest = level_next(p, &len);
        if (level_is(p, len, '>')) {
            if (rest)
                return false;
        } else if (!level_is(p, len, '*')) {
            if (memchr(p, '*', len) || memchr(p, '>', len))
                return false;
        }
    }
    return true;
}

int
tn_topictree_add(tn_topictree *t, const char *filter, void *value)
{
    if (!tn_topictree_filter_valid(filter))
        return TN_EINVAL;
    vals_push(node_make(t, filter), value);
    t->count++;
    return 0;
}

/* Removes the first (oldest) of the equal entries. A filter that is not valid was never added:
 * TN_ENOENT. */
int
tn_topictree_remove(tn_topictree *t, const char *filter, void *value)
{
    struct node *n = node_find(t, filter);
    if (!n)
        return TN_ENOENT;
    for (size_t i = 0; i < n->nvals; i++) {
        if (n->vals[i] == value) {
            vals_remove(n, i);
            t->count--;
            prune(t, n);
            return 0;
        }
    }
    return TN_ENOENT;
}

/*
 * The hot path, once per published message. No allocation unless more than STACK_INLINE '*'
 * branches are pending at once. At each level of the name, in node n:
 *  - the child ">" matches the rest of the name, whatever it is;
 *  - the child "*" matches this level: its subtree is pushed for later;
 *  - the child spelled like this level is followed in place.
 * A name level spelled "*" or ">" is an ordinary level, already reached through the wildcard
 * children, so it is not looked up again (no double delivery).
 */
void
tn_topictree_match(const tn_topictree *t, const char *name, tn_topictree_cb cb, void *arg)
{
    struct stack s;
    stack_init(&s);
    stack_push(&s, t->root, name);
    while (s.len) {
        s.len--;
        const struct node *n = s.f[s.len].n;
        const char *rest = s.f[s.len].rest;
        while (n) {
            if (!rest) {
                /* The name ends here: n's own filter, and "n.>" for zero more levels. */
                emit(n, NULL, cb, arg);
                if (n->gt)
                    emit(n->gt, NULL, cb, arg);
                break;
            }
            const char *p = rest;
            size_t len;
            rest = level_next(p, &len);
            if (n != t->root || !is_dollar(p, len)) {
                if (n->gt)
                    emit(n->gt, NULL, cb, arg);
                if (n->star)
                    stack_push(&s, n->star, rest);
            }
            if (level_is(p, len, '*') || level_is(p, len, '>'))
                break;
            n = child_find(n, p, len);
        }
    }
    stack_fini(&s);
}

/* put and take expect a tree of exact names (one value per node); mixing them with add on the
 * same name is our bug and asserts. old may be NULL. */
int
tn_topictree_put(tn_topictree *t, const char *name, void *value, void **old)
{
    struct node *n = node_make(t, name);
    tn_assert(n->nvals <= 1);
    void *prev = NULL;
    if (n->nvals) {
        prev = n->vals[0];
        n->vals[0] = value;
    } else {
        vals_push(n, value);
        t->count++;
    }
    if (old)
        *old = prev;
    return 0;
}

int
tn_topictree_take(tn_topictree *t, const char *name, void **old)
{
    struct node *n = node_find(t, name);
    if (old)
        *old = NULL;
    if (!n || !n->nvals)
        return TN_ENOENT;
    tn_assert(n->nvals == 1);
    if (old)
        *old = n->vals[0];
    vals_remove(n, 0);
    t->count--;
    prune(t, n);
    return 0;
}

/* A stored NULL value reads as absent: use take to tell them apart. */
void *
tn_topictree_get(const tn_topictree *t, const char *name)
{
    const struct node *n = node_find(t, name);
    return n && n->nvals ? n->vals[0] : NULL;
}

/* Walks the tree by the filter; stored levels are literal. An invalid filter finds nothing.
 * Allocates only for more than STACK_INLINE pending '*' branches or a name over 255 bytes. */
void
tn_topictree_find(const tn_topictree *t, const char *filter, tn_topictree_cb cb, void *arg)
{
    if (!tn_topictree_filter_valid(filter))
        return;
    struct namebuf b;
    struct stack s;
    namebuf_init(&b);
    stack_init(&s);
    stack_push(&s, t->root, filter);
    while (s.len) {
        s.len--;
        const struct node *n = s.f[s.len].n;
        const char *rest = s.f[s.len].rest;
        while (n) {
            if (!rest) {
                emit_named(t, n, &b, cb, arg);
                break;
            }
            const char *p = rest;
            size_t len;
            rest = level_next(p, &len);
            if (level_is(p, len, '>')) {
                walk_subtree(t, n, false, &b, cb, arg);
                break;
            }
            if (level_is(p, len, '*')) {
                for (const struct node *c = first_child(t, n, false); c;
                     c = next_sibling(t, c, false))
                    stack_push(&s, c, rest);
                break;
            }
            n = child_find(n, p, len);
        }
    }
    stack_fini(&s);
    namebuf_fini(&b);
}

/* Like find(">") with the '$' names; for the owner to release every value before free. */
void
tn_topictree_walk(const tn_topictree *t, tn_topictree_cb cb, void *arg)
{
    struct namebuf b;
    namebuf_init(&b);
    walk_subtree(t, t->root, true, &b, cb, arg);
    namebuf_fini(&b);
}

size_t
tn_topictree_count(const tn_topictree *t)
{
    return t->count;
}

size_t
tn_topictree__nodes(const tn_topictree *t)
{
    return t->nodes;
}
