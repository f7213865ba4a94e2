/*
 * topictree: a trie of levels, each node with a compact set of children.
 *
 * Each node below the root is one level of a filter or name; its entries (subscription values,
 * or the one value stored under an exact name) sit in the node, in insertion order. The root is
 * no level: every name has at least one level (the name "" is one empty level), so the root never
 * holds entries.
 *
 * Memory follows the shape of the tree, because most nodes have one child or none:
 *  - a node is 64 bytes (on 64-bit targets) and its level's bytes, in one allocation, with one
 *    entry inline;
 *  - its children are one inline pointer, then a small array (up to LINEAR_MAX, scanned), then
 *    an open-addressing table of child pointers with linear probing (more than LINEAR_MAX). A
 *    child caches the hash of its level, so a table grows, shrinks and deletes (backward shift,
 *    no tombstones) without hashing strings again, and a probe compares hashes before bytes.
 * The children "*" and ">" are also kept in star and gt, so match takes them without a lookup.
 * The order of children is unspecified: it changes as they come and go.
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

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Children kept in a scanned array; one more turns the array into a table. */
#define LINEAR_MAX 8
/* A table's smallest size. A table doubles before it is more than 3/4 full and halves when at
 * most 1/4 full, so probes stay short and a shrunken table is still half empty. */
#define TABLE_MIN 16

/*
 * kcap says how the children are kept: 0 or 1, in kids.one (NULL when none); 2 to LINEAR_MAX, in
 * kids.arr[0..nkids), no NULLs; above, kids.arr is a table of kcap slots (a power of two), NULL
 * where free. Likewise vcap for entries: 0 or 1, in vals.one; above, vals.arr[0..nvals).
 */
struct node {
    struct node *parent; /* NULL for the root */
    struct node *star;   /* the child "*", if any */
    struct node *gt;     /* the child ">", if any */
    union {
        struct node *one;
        struct node **arr;
    } kids;
    union {
        void *one;
        void **arr;
    } vals;
    uint32_t nkids;
    uint32_t kcap;
    uint32_t nvals;
    uint32_t vcap;
    uint32_t hash;    /* level_hash(key, key_len), for the parent's table */
    uint32_t key_len; /* bytes of this level */
    char key[];       /* this level, NUL-terminated */
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

/* Seeds the level hash once per process, so clients cannot choose topic levels that collide in
 * a node's table (every level hashed to one slot would make each lookup a scan of them all). */
static uint32_t hash_seed = 2166136261u;

__attribute__((constructor)) static void
hash_seed_init(void)
{
    uint32_t r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r)
        hash_seed ^= r;
}

/* FNV-1a from a random seed, then murmur3's finalizer so that the low bits (the table index)
 * depend on every byte. */
static uint32_t
level_hash(const char *p, size_t len)
{
    uint32_t h = hash_seed;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static bool
key_is(const struct node *c, const char *p, size_t len)
{
    return c->key_len == len &&
           (len == 0 || (c->key[0] == p[0] && memcmp(c->key + 1, p + 1, len - 1) == 0));
}

/* ---- entries ---- */

/* The entries, n->nvals of them. */
static void *const *
vals_of(const struct node *n)
{
    return n->vcap <= 1 ? &n->vals.one : n->vals.arr;
}

static void
vals_push(struct node *n, void *v)
{
    tn_assert(n->nvals < UINT32_MAX);
    if (n->vcap <= 1) {
        if (n->nvals == 0) {
            n->vals.one = v;
            n->vcap = 1;
            n->nvals = 1;
            return;
        }
        void **a = tn_xmalloc(2 * sizeof *a);
        a[0] = n->vals.one;
        n->vals.arr = a;
        n->vcap = 2;
    } else if (n->nvals == n->vcap) {
        tn_assert(n->vcap <= UINT32_MAX / 2);
        n->vcap *= 2;
        n->vals.arr = tn_xrealloc(n->vals.arr, n->vcap * sizeof *n->vals.arr);
    }
    n->vals.arr[n->nvals++] = v;
}

/* Removes entry i, keeping the others in order. An array goes back inline at one entry, and
 * halves when at most a quarter full. */
static void
vals_remove(struct node *n, size_t i)
{
    tn_assert(i < n->nvals);
    if (n->vcap <= 1) {
        n->vals.one = NULL;
        n->nvals = 0;
        return;
    }
    void **a = n->vals.arr;
    memmove(&a[i], &a[i + 1], (n->nvals - i - 1) * sizeof *a);
    n->nvals--;
    if (n->nvals <= 1) {
        n->vals.one = n->nvals ? a[0] : NULL;
        n->vcap = 1;
        free(a);
    } else if (n->nvals <= n->vcap / 4) {
        n->vcap /= 2;
        n->vals.arr = tn_xrealloc(a, n->vcap * sizeof *a);
    }
}

/* ---- children ---- */

static bool
kids_in_table(const struct node *n)
{
    return n->kcap > LINEAR_MAX;
}

/* The children as *len slots; in a table, or an inline slot with no child, some are NULL. */
static struct node *const *
kids_slots(const struct node *n, size_t *len)
{
    if (n->kcap <= 1) {
        *len = 1;
        return &n->kids.one;
    }
    *len = kids_in_table(n) ? n->kcap : n->nkids;
    return n->kids.arr;
}

/* Where c is among n's slots; c must be there. */
static size_t
kids_index(const struct node *n, const struct node *c)
{
    size_t i = 0;
    if (n->kcap <= 1)
        return 0;
    if (!kids_in_table(n)) {
        while (n->kids.arr[i] != c)
            i++;
        tn_assert(i < n->nkids);
        return i;
    }
    size_t mask = n->kcap - 1;
    for (i = c->hash & mask; n->kids.arr[i] != c;)
        i = (i + 1) & mask;
    return i;
}

/* Puts c in a table of mask + 1 slots that has room and does not hold c. */
static void
table_put(struct node **tab, size_t mask, struct node *c)
{
    size_t i = c->hash & mask;
    while (tab[i])
        i = (i + 1) & mask;
    tab[i] = c;
}

/* Removes slot i by backward shift: each entry after it in the run moves back into the hole
 * unless that would put it before its home slot. Lookups then need no tombstones. */
static void
table_del(struct node **tab, size_t mask, size_t i)
{
    for (size_t j = (i + 1) & mask; tab[j]; j = (j + 1) & mask) {
        size_t home = tab[j]->hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            tab[i] = tab[j];
            i = j;
        }
    }
    tab[i] = NULL;
}

/* Moves the children into a new container for cap (inline, array or table, as kcap says). */
static void
kids_resize(struct node *n, uint32_t cap)
{
    tn_assert(cap > LINEAR_MAX || n->nkids <= cap);
    size_t len;
    struct node *const *old = kids_slots(n, &len);
    struct node **a = cap > LINEAR_MAX ? tn_xcalloc(cap, sizeof *a) : tn_xmalloc(cap * sizeof *a);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (!old[i])
            continue;
        if (cap > LINEAR_MAX)
            table_put(a, cap - 1, old[i]);
        else
            a[k++] = old[i];
    }
    if (n->kcap > 1)
        free(n->kids.arr);
    n->kids.arr = a;
    n->kcap = cap;
}

static void
kids_add(struct node *n, struct node *c)
{
    tn_assert(n->nkids < UINT32_MAX / 2);
    if (n->kcap <= 1 && n->nkids == 0) {
        n->kids.one = c;
        n->kcap = 1;
    } else if (!kids_in_table(n)) {
        if (n->nkids == n->kcap)
            kids_resize(n, n->kcap < LINEAR_MAX ? n->kcap * 2 : TABLE_MIN);
        if (kids_in_table(n))
            table_put(n->kids.arr, n->kcap - 1, c);
        else
            n->kids.arr[n->nkids] = c;
    } else {
        if (((size_t)n->nkids + 1) * 4 > (size_t)n->kcap * 3) {
            tn_assert(n->kcap <= UINT32_MAX / 2);
            kids_resize(n, n->kcap * 2);
        }
        table_put(n->kids.arr, n->kcap - 1, c);
    }
    n->nkids++;
}

/* Removes the child c. A table halves when at most a quarter full (and becomes an array at
 * TABLE_MIN), an array halves likewise and goes back inline at one child. */
static void
kids_del(struct node *n, struct node *c)
{
    size_t i = kids_index(n, c);
    if (n->kcap <= 1) {
        n->kids.one = NULL;
    } else if (kids_in_table(n)) {
        table_del(n->kids.arr, n->kcap - 1, i);
    } else {
        n->kids.arr[i] = n->kids.arr[n->nkids - 1];
    }
    n->nkids--;
    if (n->kcap <= 1)
        return;
    if (kids_in_table(n)) {
        if (n->nkids <= n->kcap / 4)
            kids_resize(n, n->kcap / 2 > LINEAR_MAX ? n->kcap / 2 : LINEAR_MAX);
    } else if (n->nkids <= 1) {
        struct node **a = n->kids.arr;
        n->kids.one = n->nkids ? a[0] : NULL;
        n->kcap = 1;
        free(a);
    } else if (n->nkids <= n->kcap / 4) {
        kids_resize(n, n->kcap / 2);
    }
}

/* ---- nodes ---- */

static struct node *
node_alloc(const char *key, size_t len)
{
    tn_assert(len < UINT32_MAX);
    struct node *n = tn_xcalloc(1, sizeof *n + len + 1);
    memcpy(n->key, key, len);
    n->key[len] = '\0';
    n->key_len = (uint32_t)len;
    n->hash = level_hash(key, len);
    return n;
}

static void
node_free(struct node *n)
{
    if (n->vcap > 1)
        free(n->vals.arr);
    if (n->kcap > 1)
        free(n->kids.arr);
    free(n);
}

/* The hot path of match: one call per level of the published name. */
static struct node *
child_find(const struct node *n, const char *p, size_t len)
{
    if (n->kcap <= 1) {
        struct node *c = n->kids.one;
        return c && key_is(c, p, len) ? c : NULL;
    }
    struct node *const *a = n->kids.arr;
    if (!kids_in_table(n)) {
        for (uint32_t i = 0; i < n->nkids; i++)
            if (key_is(a[i], p, len))
                return a[i];
        return NULL;
    }
    uint32_t h = level_hash(p, len);
    size_t mask = n->kcap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct node *c = a[i];
        if (!c)
            return NULL;
        if (c->hash == h && key_is(c, p, len))
            return c;
    }
}

static struct node *
child_get(tn_topictree *t, struct node *n, const char *p, size_t len)
{
    struct node *c = child_find(n, p, len);
    if (c)
        return c;
    c = node_alloc(p, len);
    c->parent = n;
    kids_add(n, c);
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
    while (n != t->root && n->nvals == 0 && n->nkids == 0) {
        struct node *p = n->parent;
        kids_del(p, n);
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
    void *const *v = vals_of(n);
    for (size_t i = 0; i < n->nvals; i++)
        cb(arg, name, v[i]);
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

/* The first child of n in slot i or after it, or NULL. */
static struct node *
child_from(const tn_topictree *t, const struct node *n, size_t i, bool dollar)
{
    size_t len;
    struct node *const *s = kids_slots(n, &len);
    for (; i < len; i++)
        if (s[i] && !skipped(t, s[i], dollar))
            return s[i];
    return NULL;
}

static struct node *
first_child(const tn_topictree *t, const struct node *n, bool dollar)
{
    return child_from(t, n, 0, dollar);
}

/* The sibling after n (in its parent's slots), found again from n's cached hash. */
static struct node *
next_sibling(const tn_topictree *t, const struct node *n, bool dollar)
{
    return child_from(t, n->parent, kids_index(n->parent, n) + 1, dollar);
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
    /* Post-order without recursion: go down to a leaf, free it and clear its slot in the parent,
     * go on with its next sibling or else back to the parent, whose slots are then all clear. The
     * parents' containers are not reshaped meanwhile (no backward shift that could move a sibling
     * behind the scan), and each is scanned about twice: linear time. */
    struct node *n = t->root;
    for (;;) {
        struct node *c = first_child(t, n, true);
        if (c) {
            n = c;
            continue;
        }
        struct node *p = n->parent;
        if (!p) {
            node_free(n);
            break;
        }
        size_t i = kids_index(p, n);
        if (p->kcap <= 1)
            p->kids.one = NULL;
        else
            p->kids.arr[i] = NULL;
        node_free(n);
        c = child_from(t, p, i + 1, true);
        n = c ? c : p;
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
    void *const *v = vals_of(n);
    for (size_t i = 0; i < n->nvals; i++) {
        if (v[i] == value) {
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
        tn_assert(n->vcap <= 1);
        prev = n->vals.one;
        n->vals.one = value;
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
        *old = vals_of(n)[0];
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
    return n && n->nvals ? vals_of(n)[0] : NULL;
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
                size_t nk;
                struct node *const *k = kids_slots(n, &nk);
                for (size_t i = 0; i < nk; i++)
                    if (k[i] && !skipped(t, k[i], false))
                        stack_push(&s, k[i], rest);
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
tn_topictree_levels(const char *name)
{
    size_t n = 1;
    for (const char *p = strchr(name, '.'); p; p = strchr(p + 1, '.'))
        n++;
    return n;
}

size_t
tn_topictree__nodes(const tn_topictree *t)
{
    return t->nodes;
}

size_t
tn_topictree__kid_slots(const tn_topictree *t, const char *name)
{
    const struct node *n = node_find(t, name);
    return n ? (n->kcap ? n->kcap : 1) : 0;
}
