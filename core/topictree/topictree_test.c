#include "core/topictree/topictree.h"
#include "core/topictree/topictree_int.h"

#include "core/base/base.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V(k) ((void *)(intptr_t)(k))

/* ---- collecting callbacks as one sorted string ---- */

struct got {
    char **v;
    size_t n;
    size_t cap;
    size_t named; /* callbacks that got a name */
};

static void
got_add(struct got *g, char *s)
{
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 16;
        g->v = tn_xrealloc(g->v, g->cap * sizeof *g->v);
    }
    g->v[g->n++] = s;
}

/* "value" for match, "name=value" for find. */
static void
got_cb(void *arg, const char *name, void *value)
{
    struct got *g = arg;
    char *s;
    if (name) {
        g->named++;
        CU_ASSERT(asprintf(&s, "%s=%ld", name, (long)(intptr_t)value) > 0);
    } else {
        CU_ASSERT(asprintf(&s, "%ld", (long)(intptr_t)value) > 0);
    }
    got_add(g, s);
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts, joins with ' ' and frees the items: a new string. */
static char *
got_str(struct got *g)
{
    if (g->n)
        qsort(g->v, g->n, sizeof *g->v, cmp_str);
    size_t len = 1;
    for (size_t i = 0; i < g->n; i++)
        len += strlen(g->v[i]) + 1;
    char *s = tn_xmalloc(len);
    s[0] = '\0';
    char *p = s;
    for (size_t i = 0; i < g->n; i++) {
        p += sprintf(p, "%s%s", i ? " " : "", g->v[i]);
        free(g->v[i]);
    }
    free(g->v);
    memset(g, 0, sizeof *g);
    return s;
}

static char last[4096];

static const char *
keep(char *s)
{
    snprintf(last, sizeof last, "%s", s);
    free(s);
    return last;
}

/* What match calls back, as sorted values. */
static const char *
M(const tn_topictree *t, const char *name)
{
    struct got g = {0};
    tn_topictree_match(t, name, got_cb, &g);
    CU_ASSERT_EQUAL(g.named, 0);
    return keep(got_str(&g));
}

/* What find calls back, as sorted name=value. */
static const char *
F(const tn_topictree *t, const char *filter)
{
    struct got g = {0};
    tn_topictree_find(t, filter, got_cb, &g);
    CU_ASSERT_EQUAL(g.named, g.n);
    return keep(got_str(&g));
}

static void
count_cb(void *arg, const char *name, void *value)
{
    (*(size_t *)arg)++;
}

static void
add_ok(tn_topictree *t, const char *filter, long v)
{
    CU_ASSERT_EQUAL(tn_topictree_add(t, filter, V(v)), 0);
}

static void
put_ok(tn_topictree *t, const char *name, long v)
{
    void *old = V(-1);
    CU_ASSERT_EQUAL(tn_topictree_put(t, name, V(v), &old), 0);
    CU_ASSERT_PTR_NULL(old);
}

/* ---- tests ---- */

static void
test_filter_valid(void)
{
    const char *good[] = {"a",    "a.b", "*",  ">",  "a.*", "a.>",    "*.b.>",  "",
                          "a..b", ".",   "a.", ".a", "*.*", "$SYS.>", "a.$.b$", "a.b.c.d"};
    const char *bad[] = {"a*b", "a.>.b", ">.a", "a.b>", "a.*b", "**", ">>", "*>", "a.>.", "$SYS*"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        CU_ASSERT_TRUE(tn_topictree_filter_valid(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CU_ASSERT_FALSE(tn_topictree_filter_valid(bad[i]));
    CU_ASSERT_FALSE(tn_topictree_filter_valid(NULL));
}

static void
test_exact(void)
{
    tn_topictree *t = tn_topictree_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(tn_topictree_count(t), 0);
    CU_ASSERT_STRING_EQUAL(M(t, "a"), "");
    add_ok(t, "a.b", 1);
    add_ok(t, "a", 2);
    add_ok(t, "a.b.c", 3);
    CU_ASSERT_EQUAL(tn_topictree_count(t), 3);
    CU_ASSERT_STRING_EQUAL(M(t, "a.b"), "1");
    CU_ASSERT_STRING_EQUAL(M(t, "a"), "2");
    CU_ASSERT_STRING_EQUAL(M(t, "a.b.c"), "3");
    CU_ASSERT_STRING_EQUAL(M(t, "a.c"), "");
    CU_ASSERT_STRING_EQUAL(M(t, "b"), "");
    CU_ASSERT_STRING_EQUAL(M(t, "a.b.c.d"), "");
    CU_ASSERT_STRING_EQUAL(M(t, "ab"), "");
    tn_topictree_free(t);
    tn_topictree_free(NULL);
}

static void
test_star(void)
{
    tn_topictree *t = tn_topictree_new();
    add_ok(t, "a.*", 1);
    add_ok(t, "*.b", 2);
    add_ok(t, "*", 3);
    add_ok(t, "*.*", 4);
    add_ok(t, "a.*.c", 5);
    CU_ASSERT_STRING_EQUAL(M(t, "a.b"), "1 2 4");
    CU_ASSERT_STRING_EQUAL(M(t, "a"), "3");
    CU_ASSERT_STRING_EQUAL(M(t, "x.b"), "2 4");
    CU_ASSERT_STRING_EQUAL(M(t, "a."), "1 4");
    CU_ASSERT_STRING_EQUAL(M(t, "a.x.c"), "5");
    CU_ASSERT_STRING_EQUAL(M(t, "a.b.c.d"), "");
    /* A name level spelled "*" is an ordinary level: matched once, not twice. */
    CU_ASSERT_STRING_EQUAL(M(t, "a.*"), "1 4");
    tn_topictree_free(t);
}

static void
test_gt(void)
{
    tn_topictree *t = tn_topictree_new();
    add_ok(t, "a.>", 1);
    add_ok(t, ">", 2);
    add_ok(t, "a.b.>", 3);
    add_ok(t, "*.>", 4);
    CU_ASSERT_STRING_EQUAL(M(t, "a"), "1 2 4"); /* "a.>" matches "a" [MQTT-4.7.1-2] */
    CU_ASSERT_STRING_EQUAL(M(t, "a.b"), "1 2 3 4");
    CU_ASSERT_STRING_EQUAL(M(t, "a.b.c.d"), "1 2 3 4");
    CU_ASSERT_STRING_EQUAL(M(t, "b"), "2 4");
    CU_ASSERT_STRING_EQUAL(M(t, ""), "2 4");
    CU_ASSERT_STRING_EQUAL(M(t, "ab.c"), "2 4");
    CU_ASSERT_STRING_EQUAL(M(t, "a.>"), "1 2 4");
    tn_topictree_free(t);
}

static void
test_dollar(void)
{
    tn_topictree *t = tn_topictree_new();
    add_ok(t, ">", 1);
    add_ok(t, "*", 2);
    add_ok(t, "*.x", 3);
    add_ok(t, "$SYS.>", 4);
    add_ok(t, "$SYS.*", 5);
    add_ok(t, "$SYS.x", 6);
    add_ok(t, "a.*", 7);
    add_ok(t, "*.>", 8);
    /* [MQTT-4.7.2-1] */
    CU_ASSERT_STRING_EQUAL(M(t, "$SYS.x"), "4 5 6");
    CU_ASSERT_STRING_EQUAL(M(t, "$SYS"), "4");
    CU_ASSERT_STRING_EQUAL(M(t, "$"), "");
    CU_ASSERT_STRING_EQUAL(M(t, "a.$b"), "1 7 8");
    CU_ASSERT_STRING_EQUAL(M(t, "x"), "1 2 8");
    CU_ASSERT_STRING_EQUAL(M(t, "x.x"), "1 3 8");
    CU_ASSERT_STRING_EQUAL(M(t, "S.x"), "1 3 8");
    tn_topictree_free(t);
}

static void
test_empty_levels(void)
{
    tn_topictree *t = tn_topictree_new();
    add_ok(t, "a..b", 1);
    add_ok(t, ".a", 2);
    add_ok(t, "a.", 3);
    add_ok(t, "a.*.b", 4);
    add_ok(t, "*.a", 5);
    add_ok(t, "a.*", 6);
    add_ok(t, "", 7);
    add_ok(t, ".", 8);
    CU_ASSERT_STRING_EQUAL(M(t, "a..b"), "1 4");
    CU_ASSERT_STRING_EQUAL(M(t, ".a"), "2 5");
    CU_ASSERT_STRING_EQUAL(M(t, "a."), "3 6");
    CU_ASSERT_STRING_EQUAL(M(t, ""), "7");
    CU_ASSERT_STRING_EQUAL(M(t, "."), "8");
    CU_ASSERT_STRING_EQUAL(M(t, "a"), "");
    CU_ASSERT_STRING_EQUAL(M(t, "a.b"), "6");
    tn_topictree_free(t);
}

static void
test_duplicates_remove(void)
{
    tn_topictree *t = tn_topictree_new();
    add_ok(t, "a.b", 1);
    add_ok(t, "a.b", 1);
    add_ok(t, "a.b", 2);
    CU_ASSERT_EQUAL(tn_topictree_count(t), 3);
    CU_ASSERT_STRING_EQUAL(M(t, "a.b"), "1 1 2");
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.b", V(1)), 0);
    CU_ASSERT_STRING_EQUAL(M(t, "a.b"), "1 2");
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.b", V(1)), 0);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.b", V(1)), TN_ENOENT);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.c", V(2)), TN_ENOENT);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a", V(2)), TN_ENOENT); /* an inner node, no entry */
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.b.c", V(2)), TN_ENOENT);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.*", V(2)), TN_ENOENT);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a*b", V(2)), TN_ENOENT);
    CU_ASSERT_EQUAL(tn_topictree_add(t, "a*b", V(3)), TN_EINVAL);
    CU_ASSERT_EQUAL(tn_topictree_add(t, "a.>.b", V(3)), TN_EINVAL);
    CU_ASSERT_EQUAL(tn_topictree_add(t, "a.b>", V(3)), TN_EINVAL);
    CU_ASSERT_EQUAL(tn_topictree_count(t), 1);
    CU_ASSERT_STRING_EQUAL(M(t, "a.b"), "2");
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.b", V(2)), 0);
    CU_ASSERT_EQUAL(tn_topictree_count(t), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 0);
    CU_ASSERT_STRING_EQUAL(M(t, "a.b"), "");
    tn_topictree_free(t);
}

struct seen {
    void *v[128];
    size_t n;
};

static void
seen_cb(void *arg, const char *name, void *value)
{
    struct seen *s = arg;
    if (s->n < sizeof s->v / sizeof *s->v)
        s->v[s->n] = value;
    s->n++;
}

/* Entries of one filter grow past the inline slot and shrink back, keeping insertion order. */
static void
test_many_values(void)
{
    tn_topictree *t = tn_topictree_new();
    struct seen g = {{0}, 0};
    for (long i = 1; i <= 100; i++)
        add_ok(t, "q", i);
    tn_topictree_match(t, "q", seen_cb, &g);
    CU_ASSERT_EQUAL_FATAL(g.n, 100);
    for (size_t i = 0; i < 100; i++)
        CU_ASSERT_PTR_EQUAL(g.v[i], V(i + 1));
    for (long i = 1; i <= 100; i += 2)
        CU_ASSERT_EQUAL(tn_topictree_remove(t, "q", V(i)), 0);
    g.n = 0;
    tn_topictree_match(t, "q", seen_cb, &g);
    CU_ASSERT_EQUAL_FATAL(g.n, 50);
    for (size_t i = 0; i < 50; i++)
        CU_ASSERT_PTR_EQUAL(g.v[i], V(2 * i + 2));
    for (long i = 2; i < 100; i += 2)
        CU_ASSERT_EQUAL(tn_topictree_remove(t, "q", V(i)), 0);
    CU_ASSERT_STRING_EQUAL(M(t, "q"), "100");
    add_ok(t, "q", 7);
    CU_ASSERT_STRING_EQUAL(M(t, "q"), "100 7");
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "q", V(100)), 0);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "q", V(7)), 0);
    CU_ASSERT_EQUAL(tn_topictree_count(t), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 0);
    tn_topictree_free(t);
}

static void
test_prune(void)
{
    tn_topictree *t = tn_topictree_new();
    add_ok(t, "a.b.c", 1);
    add_ok(t, "a.b.d", 2);
    add_ok(t, "a.*", 3);
    add_ok(t, "x.>", 4);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 7); /* a b c d * x > */
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.b.c", V(1)), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 6);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.b.d", V(2)), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 4); /* b went with d */
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.*", V(3)), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 2);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "x.>", V(4)), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 0);
    CU_ASSERT_EQUAL(tn_topictree_count(t), 0);
    /* The freed "*" and ">" are not reached through stale shortcuts (ASan would say). */
    CU_ASSERT_STRING_EQUAL(M(t, "a.b"), "");
    CU_ASSERT_STRING_EQUAL(M(t, "x.y"), "");
    add_ok(t, "a.b", 5);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 2);
    CU_ASSERT_STRING_EQUAL(M(t, "a.b"), "5");
    CU_ASSERT_STRING_EQUAL(M(t, "a.c"), "");
    add_ok(t, "*", 6);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "*", V(6)), 0);
    add_ok(t, "a.>", 7);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.>", V(7)), 0);
    CU_ASSERT_STRING_EQUAL(M(t, "a"), "");
    CU_ASSERT_STRING_EQUAL(M(t, "a.b"), "5");
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 2);
    /* An inner node with an entry stays when its children go. */
    add_ok(t, "a.b.c", 8);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.b.c", V(8)), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 2);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "a.b", V(5)), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 0);
    tn_topictree_free(t);
}

static void
test_retained(void)
{
    tn_topictree *t = tn_topictree_new();
    void *old = V(-1);
    CU_ASSERT_EQUAL(tn_topictree_put(t, "a.b", V(1), &old), 0);
    CU_ASSERT_PTR_NULL(old);
    CU_ASSERT_EQUAL(tn_topictree_put(t, "a.b", V(2), &old), 0);
    CU_ASSERT_PTR_EQUAL(old, V(1));
    CU_ASSERT_EQUAL(tn_topictree_count(t), 1);
    CU_ASSERT_PTR_EQUAL(tn_topictree_get(t, "a.b"), V(2));
    CU_ASSERT_PTR_NULL(tn_topictree_get(t, "a"));
    CU_ASSERT_PTR_NULL(tn_topictree_get(t, "a.b.c"));
    put_ok(t, "a", 3);
    put_ok(t, "a.c", 4);
    put_ok(t, "$SYS.x", 5);
    put_ok(t, "$SYS", 6);
    put_ok(t, "b..c", 7);
    put_ok(t, ".x", 8);
    put_ok(t, "a.b.c", 9);
    put_ok(t, "a.", 10);
    CU_ASSERT_EQUAL(tn_topictree_count(t), 9);

    CU_ASSERT_STRING_EQUAL(F(t, "a.b"), "a.b=2");
    CU_ASSERT_STRING_EQUAL(F(t, "a.*"), "a.=10 a.b=2 a.c=4");
    CU_ASSERT_STRING_EQUAL(F(t, "a.>"), "a.=10 a.b.c=9 a.b=2 a.c=4 a=3");
    CU_ASSERT_STRING_EQUAL(F(t, ">"), ".x=8 a.=10 a.b.c=9 a.b=2 a.c=4 a=3 b..c=7");
    CU_ASSERT_STRING_EQUAL(F(t, "*"), "a=3");
    CU_ASSERT_STRING_EQUAL(F(t, "*.>"), ".x=8 a.=10 a.b.c=9 a.b=2 a.c=4 a=3 b..c=7");
    CU_ASSERT_STRING_EQUAL(F(t, "$SYS.>"), "$SYS.x=5 $SYS=6");
    CU_ASSERT_STRING_EQUAL(F(t, "$SYS.*"), "$SYS.x=5");
    CU_ASSERT_STRING_EQUAL(F(t, "$SYS"), "$SYS=6");
    CU_ASSERT_STRING_EQUAL(F(t, "*.x"), ".x=8");
    CU_ASSERT_STRING_EQUAL(F(t, "b.*.c"), "b..c=7");
    CU_ASSERT_STRING_EQUAL(F(t, "*.*.*"), "a.b.c=9 b..c=7");
    CU_ASSERT_STRING_EQUAL(F(t, "a*"), ""); /* invalid filter */
    CU_ASSERT_STRING_EQUAL(F(t, "zz.>"), "");
    CU_ASSERT_STRING_EQUAL(F(t, "b"), "");

    CU_ASSERT_EQUAL(tn_topictree_take(t, "a.b", &old), 0);
    CU_ASSERT_PTR_EQUAL(old, V(2));
    CU_ASSERT_EQUAL(tn_topictree_take(t, "a.b", &old), TN_ENOENT);
    CU_ASSERT_PTR_NULL(old);
    CU_ASSERT_EQUAL(tn_topictree_take(t, "b", &old), TN_ENOENT);
    CU_ASSERT_EQUAL(tn_topictree_take(t, "b.", &old), TN_ENOENT);
    CU_ASSERT_PTR_NULL(tn_topictree_get(t, "a.b"));
    CU_ASSERT_PTR_EQUAL(tn_topictree_get(t, "a.b.c"), V(9));
    CU_ASSERT_STRING_EQUAL(F(t, "a.>"), "a.=10 a.b.c=9 a.c=4 a=3");

    /* walk gives every stored name, '$' ones too. */
    struct got g = {0};
    tn_topictree_walk(t, got_cb, &g);
    CU_ASSERT_EQUAL(g.named, g.n);
    CU_ASSERT_STRING_EQUAL(keep(got_str(&g)),
                           "$SYS.x=5 $SYS=6 .x=8 a.=10 a.b.c=9 a.c=4 a=3 b..c=7");

    /* A stored NULL reads as absent through get, but take sees it. */
    CU_ASSERT_EQUAL(tn_topictree_put(t, "n", NULL, NULL), 0);
    CU_ASSERT_PTR_NULL(tn_topictree_get(t, "n"));
    CU_ASSERT_STRING_EQUAL(F(t, "n"), "n=0");
    CU_ASSERT_EQUAL(tn_topictree_take(t, "n", &old), 0);
    CU_ASSERT_EQUAL(tn_topictree_take(t, "n", NULL), TN_ENOENT);

    const char *all[] = {"a", "a.c", "$SYS.x", "$SYS", "b..c", ".x", "a.b.c", "a."};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        CU_ASSERT_EQUAL(tn_topictree_take(t, all[i], NULL), 0);
    CU_ASSERT_EQUAL(tn_topictree_count(t), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 0);
    CU_ASSERT_STRING_EQUAL(F(t, ">"), "");
    tn_topictree_walk(t, got_cb, &g);
    CU_ASSERT_EQUAL(g.n, 0);
    put_ok(t, "a.b", 11);
    CU_ASSERT_STRING_EQUAL(F(t, ">"), "a.b=11");
    CU_ASSERT_EQUAL(tn_topictree_take(t, "a.b", NULL), 0);
    tn_topictree_free(t);
}

/* Names and filters far deeper than the inline stack and name buffer. */
static void
test_deep(void)
{
    enum { LEVELS = 20000, STARS = 40 };
    char *deep = tn_xmalloc(2 * LEVELS);
    for (size_t i = 0; i < LEVELS; i++) {
        deep[2 * i] = 'l';
        deep[2 * i + 1] = '.';
    }
    deep[2 * LEVELS - 1] = '\0';

    tn_topictree *t = tn_topictree_new();
    put_ok(t, deep, 1);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), LEVELS);
    CU_ASSERT_PTR_EQUAL(tn_topictree_get(t, deep), V(1));
    struct got g = {0};
    tn_topictree_find(t, ">", got_cb, &g);
    CU_ASSERT_EQUAL_FATAL(g.n, 1);
    CU_ASSERT_EQUAL(strlen(g.v[0]), strlen(deep) + 2);
    CU_ASSERT_EQUAL(strncmp(g.v[0], deep, strlen(deep)), 0);
    free(got_str(&g));
    size_t n = 0;
    tn_topictree_find(t, deep, count_cb, &n);
    CU_ASSERT_EQUAL(n, 1);
    n = 0;
    tn_topictree_walk(t, count_cb, &n);
    CU_ASSERT_EQUAL(n, 1);
    for (long i = 0; i < 100; i++) {
        char name[16];
        snprintf(name, sizeof name, "k%ld", i);
        put_ok(t, name, i);
    }
    n = 0;
    tn_topictree_find(t, "*", count_cb, &n); /* 100 pending branches */
    CU_ASSERT_EQUAL(n, 100);
    tn_topictree_free(t); /* with a value still in: frees nodes, not values */

    /* Filters x^d.*^(STARS-d): matching x^STARS keeps STARS '*' branches pending at once. */
    t = tn_topictree_new();
    char f[2 * STARS];
    for (int d = 0; d <= STARS; d++) {
        for (int i = 0; i < STARS; i++) {
            f[2 * i] = i < d ? 'x' : '*';
            f[2 * i + 1] = '.';
        }
        f[2 * STARS - 1] = '\0';
        add_ok(t, f, d);
    }
    add_ok(t, ">", 100);
    for (int i = 0; i < STARS; i++)
        f[2 * i] = 'x';
    n = 0;
    tn_topictree_match(t, f, count_cb, &n);
    CU_ASSERT_EQUAL(n, STARS + 2);
    n = 0;
    tn_topictree_match(t, deep, count_cb, &n);
    CU_ASSERT_EQUAL(n, 1);
    tn_topictree_free(t);
    free(deep);
}

/* ---- randomized, against a brute-force reference ---- */

static uint64_t rng;

static uint32_t
rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32) % n;
}

static const char *small_alphabet[] = {"a", "b", "", "$x", "ab"};
/* Enough levels for nodes of more than LINEAR_MAX children, so tables grow and shrink. */
static const char *wide_alphabet[] = {"a",  "b",  "",   "$x", "ab", "c0", "c1", "c2", "c3", "c4",
                                      "c5", "c6", "c7", "c8", "c9", "d0", "d1", "d2", "d3", "d4",
                                      "d5", "d6", "d7", "d8", "d9", "e0", "e1", "e2", "e3", "e4"};
static const char **alphabet = small_alphabet;
static uint32_t NALPHA = sizeof small_alphabet / sizeof *small_alphabet;
#define MAXLV 6

static void
use_alphabet(bool wide)
{
    alphabet = wide ? wide_alphabet : small_alphabet;
    NALPHA = wide ? sizeof wide_alphabet / sizeof *wide_alphabet
                  : sizeof small_alphabet / sizeof *small_alphabet;
}

static void
gen_name(char *out)
{
    int levels = 1 + (int)rnd(4);
    out[0] = '\0';
    for (int i = 0; i < levels; i++) {
        if (i)
            strcat(out, ".");
        strcat(out, alphabet[rnd(NALPHA)]);
    }
}

static void
gen_filter(char *out)
{
    int levels = 1 + (int)rnd(4);
    out[0] = '\0';
    for (int i = 0; i < levels; i++) {
        if (i)
            strcat(out, ".");
        uint32_t r = rnd(NALPHA + 3);
        if (i == levels - 1 && r >= NALPHA + 1)
            strcat(out, ">");
        else if (r >= NALPHA)
            strcat(out, "*");
        else
            strcat(out, alphabet[r]);
    }
}

static int
split(const char *s, const char **p, size_t *len)
{
    int n = 0;
    for (;;) {
        tn_assert(n < MAXLV);
        const char *e = strchr(s, '.');
        p[n] = s;
        len[n] = e ? (size_t)(e - s) : strlen(s);
        n++;
        if (!e)
            return n;
        s = e + 1;
    }
}

/* The header's rules, level by level. */
static bool
ref_match(const char *filter, const char *name)
{
    const char *fp[MAXLV], *np[MAXLV];
    size_t fl[MAXLV], nl[MAXLV];
    int fc = split(filter, fp, fl);
    int nc = split(name, np, nl);
    bool dollar = nl[0] > 0 && np[0][0] == '$';
    for (int i = 0; i < fc; i++) {
        bool gt = fl[i] == 1 && fp[i][0] == '>';
        bool star = fl[i] == 1 && fp[i][0] == '*';
        if (i == 0 && dollar && (gt || star))
            return false;
        if (gt)
            return true;
        if (i >= nc)
            return false;
        if (!star && (fl[i] != nl[i] || memcmp(fp[i], np[i], fl[i]) != 0))
            return false;
    }
    return fc == nc;
}

enum { NFILTERS = 400, NPROBES = 3000 };

static size_t
check_match(const tn_topictree *t, char (*filters)[32], const bool *live)
{
    size_t bad = 0;
    for (int k = 0; k < NPROBES; k++) {
        char name[32];
        gen_name(name);
        struct got g = {0}, r = {0};
        tn_topictree_match(t, name, got_cb, &g);
        for (int i = 0; i < NFILTERS; i++)
            if (live[i] && ref_match(filters[i], name))
                got_cb(&r, NULL, V(i));
        char *a = got_str(&g), *b = got_str(&r);
        if (strcmp(a, b) != 0 && bad++ == 0)
            fprintf(stderr, "\nmatch %s: tree [%s], reference [%s]\n", name, a, b);
        free(a);
        free(b);
    }
    return bad;
}

static void
random_match(bool wide)
{
    static char filters[NFILTERS][32];
    static bool live[NFILTERS];
    rng = 0x9e3779b97f4a7c15u;
    use_alphabet(wide);
    tn_topictree *t = tn_topictree_new();
    for (int i = 0; i < NFILTERS; i++) {
        gen_filter(filters[i]);
        CU_ASSERT_EQUAL(tn_topictree_add(t, filters[i], V(i)), 0);
        live[i] = true;
    }
    CU_ASSERT_EQUAL(tn_topictree_count(t), NFILTERS);
    CU_ASSERT_EQUAL(check_match(t, filters, live), 0);

    size_t left = NFILTERS;
    for (int i = 0; i < NFILTERS; i++) {
        if (rnd(2)) {
            CU_ASSERT_EQUAL(tn_topictree_remove(t, filters[i], V(i)), 0);
            CU_ASSERT_EQUAL(tn_topictree_remove(t, filters[i], V(i)), TN_ENOENT);
            live[i] = false;
            left--;
        }
    }
    CU_ASSERT_EQUAL(tn_topictree_count(t), left);
    CU_ASSERT_EQUAL(check_match(t, filters, live), 0);

    for (int i = 0; i < NFILTERS; i++)
        if (live[i])
            CU_ASSERT_EQUAL(tn_topictree_remove(t, filters[i], V(i)), 0);
    CU_ASSERT_EQUAL(tn_topictree_count(t), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 0);
    tn_topictree_free(t);
    use_alphabet(false);
}

static void
test_random_match(void)
{
    random_match(false);
}

static void
test_random_match_wide(void)
{
    random_match(true);
}

enum { NNAMES = 400 };

struct ref_store {
    char names[NNAMES][32];
    long vals[NNAMES];
    bool live[NNAMES];
};

static int
ref_find_name(const struct ref_store *rs, const char *name)
{
    for (int i = 0; i < NNAMES; i++)
        if (rs->live[i] && strcmp(rs->names[i], name) == 0)
            return i;
    return -1;
}

static size_t
check_find(const tn_topictree *t, const struct ref_store *rs)
{
    size_t bad = 0;
    for (int k = 0; k < NPROBES; k++) {
        char filter[32];
        gen_filter(filter);
        struct got g = {0}, r = {0};
        tn_topictree_find(t, filter, got_cb, &g);
        for (int i = 0; i < NNAMES; i++)
            if (rs->live[i] && ref_match(filter, rs->names[i]))
                got_cb(&r, rs->names[i], V(rs->vals[i]));
        char *a = got_str(&g), *b = got_str(&r);
        if (strcmp(a, b) != 0 && bad++ == 0)
            fprintf(stderr, "\nfind %s: tree [%s], reference [%s]\n", filter, a, b);
        free(a);
        free(b);
    }
    for (int i = 0; i < NNAMES; i++)
        if (rs->live[i] && tn_topictree_get(t, rs->names[i]) != V(rs->vals[i]))
            bad++;
    struct got g = {0}, r = {0};
    tn_topictree_walk(t, got_cb, &g);
    for (int i = 0; i < NNAMES; i++)
        if (rs->live[i])
            got_cb(&r, rs->names[i], V(rs->vals[i]));
    char *a = got_str(&g), *b = got_str(&r);
    if (strcmp(a, b) != 0)
        bad++;
    free(a);
    free(b);
    return bad;
}

static void
random_find(bool wide)
{
    static struct ref_store rs;
    memset(&rs, 0, sizeof rs);
    rng = 0x243f6a8885a308d3u;
    use_alphabet(wide);
    tn_topictree *t = tn_topictree_new();
    size_t stored = 0;
    for (int i = 0; i < NNAMES; i++) {
        char name[32];
        gen_name(name);
        int j = ref_find_name(&rs, name);
        void *old = V(-1);
        CU_ASSERT_EQUAL(tn_topictree_put(t, name, V(i + 1), &old), 0);
        if (j >= 0) {
            CU_ASSERT_PTR_EQUAL(old, V(rs.vals[j]));
            rs.vals[j] = i + 1;
        } else {
            CU_ASSERT_PTR_NULL(old);
            strcpy(rs.names[i], name);
            rs.vals[i] = i + 1;
            rs.live[i] = true;
            stored++;
        }
    }
    CU_ASSERT_EQUAL(tn_topictree_count(t), stored);
    CU_ASSERT_EQUAL(check_find(t, &rs), 0);

    for (int i = 0; i < NNAMES; i++) {
        if (rs.live[i] && rnd(2)) {
            void *old = NULL;
            CU_ASSERT_EQUAL(tn_topictree_take(t, rs.names[i], &old), 0);
            CU_ASSERT_PTR_EQUAL(old, V(rs.vals[i]));
            CU_ASSERT_EQUAL(tn_topictree_take(t, rs.names[i], &old), TN_ENOENT);
            rs.live[i] = false;
            stored--;
        }
    }
    CU_ASSERT_EQUAL(tn_topictree_count(t), stored);
    CU_ASSERT_EQUAL(check_find(t, &rs), 0);

    for (int i = 0; i < NNAMES; i++)
        if (rs.live[i])
            CU_ASSERT_EQUAL(tn_topictree_take(t, rs.names[i], NULL), 0);
    CU_ASSERT_EQUAL(tn_topictree_count(t), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 0);
    tn_topictree_free(t);
    use_alphabet(false);
}

static void
test_random_find(void)
{
    random_find(false);
}

static void
test_random_find_wide(void)
{
    random_find(true);
}

static void
test_levels(void)
{
    CU_ASSERT_EQUAL(tn_topictree_levels(""), 1);
    CU_ASSERT_EQUAL(tn_topictree_levels("a"), 1);
    CU_ASSERT_EQUAL(tn_topictree_levels("a.b"), 2);
    CU_ASSERT_EQUAL(tn_topictree_levels("a."), 2);
    CU_ASSERT_EQUAL(tn_topictree_levels(".a"), 2);
    CU_ASSERT_EQUAL(tn_topictree_levels("."), 2);
    CU_ASSERT_EQUAL(tn_topictree_levels("a..b"), 3);
    CU_ASSERT_EQUAL(tn_topictree_levels("*.>"), 2);
    CU_ASSERT_EQUAL(tn_topictree_levels("$SYS.broker.clients.>"), 4);
}

enum { NKIDS = 1000 };

/* Match of "p.<i>" when i's filter is in, with "p.*" (value -1) and "p.>" (value -2) in. */
static void
check_kid(const tn_topictree *t, long i, bool in)
{
    char name[32], want[32];
    snprintf(name, sizeof name, "p.%ld", i);
    snprintf(want, sizeof want, in ? "-1 -2 %ld" : "-1 -2", i);
    CU_ASSERT_STRING_EQUAL(M(t, name), want);
}

/* A node's children cross from inline to array to table while they are added, and back while
 * they are removed, with match and remove right at every step. */
static void
test_many_children(void)
{
    tn_topictree *t = tn_topictree_new();
    char f[32];
    add_ok(t, "p.*", -1);
    add_ok(t, "p.>", -2);
    CU_ASSERT(tn_topictree__kid_slots(t, "p") == 2);
    for (long i = 0; i < NKIDS; i++) {
        snprintf(f, sizeof f, "p.%ld", i);
        add_ok(t, f, i);
        size_t slots = tn_topictree__kid_slots(t, "p");
        size_t kids = (size_t)i + 3;
        CU_ASSERT(slots >= kids);
        CU_ASSERT(kids <= 8 ? slots <= 8 : (slots >= 16 && slots <= 4 * kids));
        if (i < 40 || i % 97 == 0)
            for (long j = 0; j <= i + 1; j++)
                check_kid(t, j, j <= i);
    }
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), NKIDS + 3);
    CU_ASSERT_STRING_EQUAL(M(t, "p"), "-2");
    CU_ASSERT_STRING_EQUAL(M(t, "p.*"), "-1 -2");
    CU_ASSERT_STRING_EQUAL(M(t, "p.x"), "-1 -2");
    CU_ASSERT_STRING_EQUAL(M(t, "p.1.2"), "-2");

    /* Remove every other one first, then the rest from the top: the table shrinks, its runs
     * close up (backward shift), and it turns back into an array and then one inline child. */
    for (long i = 0; i < NKIDS; i += 2) {
        snprintf(f, sizeof f, "p.%ld", i);
        CU_ASSERT_EQUAL(tn_topictree_remove(t, f, V(i)), 0);
        CU_ASSERT_EQUAL(tn_topictree_remove(t, f, V(i)), TN_ENOENT);
    }
    for (long j = 0; j < NKIDS; j++)
        check_kid(t, j, j % 2);
    CU_ASSERT(tn_topictree__kid_slots(t, "p") <= 4 * (NKIDS / 2 + 2));
    for (long i = NKIDS - 1; i >= 1; i -= 2) {
        snprintf(f, sizeof f, "p.%ld", i);
        CU_ASSERT_EQUAL(tn_topictree_remove(t, f, V(i)), 0);
        size_t kids = (size_t)i / 2 + 2;
        size_t slots = tn_topictree__kid_slots(t, "p");
        CU_ASSERT(slots >= kids && slots <= 4 * kids + 8);
        if (i < 60 || i % 101 == 0)
            for (long j = 0; j <= i + 2; j++)
                check_kid(t, j, j % 2 && j < i);
    }
    size_t slots = tn_topictree__kid_slots(t, "p"); /* "*" and ">" in an array */
    CU_ASSERT(slots >= 2 && slots <= 4);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "p.*", V(-1)), 0);
    CU_ASSERT(tn_topictree__kid_slots(t, "p") == 1);
    CU_ASSERT_STRING_EQUAL(M(t, "p.x"), "-2");
    CU_ASSERT_EQUAL(tn_topictree_remove(t, "p.>", V(-2)), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 0);
    CU_ASSERT_EQUAL(tn_topictree_count(t), 0);

    /* Free with big tables still in (ASan and valgrind check that all goes). */
    for (long i = 0; i < NKIDS; i++) {
        snprintf(f, sizeof f, "%ld.x.%ld", i % 50, i);
        add_ok(t, f, i);
    }
    CU_ASSERT(tn_topictree__kid_slots(t, "") == 0);
    CU_ASSERT(tn_topictree__kid_slots(t, "7.x") >= 20);
    CU_ASSERT_STRING_EQUAL(M(t, "7.x.507"), "507");
    tn_topictree_free(t);
}

/* Stored names under a node of many children: get, find, walk and the '$' rule through tables. */
static void
test_many_children_find(void)
{
    tn_topictree *t = tn_topictree_new();
    char name[32];
    for (long i = 0; i < NKIDS; i++) {
        snprintf(name, sizeof name, i % 10 ? "%ld.v" : "$%ld.v", i);
        put_ok(t, name, i);
    }
    CU_ASSERT(tn_topictree__kid_slots(t, "") == 0);
    for (long i = 0; i < NKIDS; i++) {
        snprintf(name, sizeof name, i % 10 ? "%ld.v" : "$%ld.v", i);
        CU_ASSERT_PTR_EQUAL(tn_topictree_get(t, name), V(i));
    }
    size_t n = 0;
    tn_topictree_find(t, "*.v", count_cb, &n);
    CU_ASSERT_EQUAL(n, NKIDS - NKIDS / 10);
    n = 0;
    tn_topictree_find(t, ">", count_cb, &n);
    CU_ASSERT_EQUAL(n, NKIDS - NKIDS / 10);
    n = 0;
    tn_topictree_walk(t, count_cb, &n);
    CU_ASSERT_EQUAL(n, NKIDS);
    CU_ASSERT_STRING_EQUAL(F(t, "$30.*"), "$30.v=30");
    CU_ASSERT_STRING_EQUAL(F(t, "31.>"), "31.v=31");
    for (long i = 0; i < NKIDS; i++) {
        if (i % 3 == 0)
            continue;
        snprintf(name, sizeof name, i % 10 ? "%ld.v" : "$%ld.v", i);
        CU_ASSERT_EQUAL(tn_topictree_take(t, name, NULL), 0);
    }
    n = 0;
    tn_topictree_walk(t, count_cb, &n);
    CU_ASSERT_EQUAL(n, (NKIDS + 2) / 3);
    n = 0;
    tn_topictree_find(t, "*.>", count_cb, &n);
    CU_ASSERT_EQUAL(n, (NKIDS + 2) / 3 - (NKIDS + 29) / 30);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 2 * ((NKIDS + 2) / 3));
    tn_topictree_free(t);
}

/* One child per node, tens of thousands deep: add, match, remove, and two chains that part. */
static void
test_deep_chain(void)
{
    enum { LEVELS = 30000 };
    char *deep = tn_xmalloc(2 * LEVELS);
    for (size_t i = 0; i < LEVELS; i++) {
        deep[2 * i] = 'd';
        deep[2 * i + 1] = '.';
    }
    deep[2 * LEVELS - 1] = '\0';
    CU_ASSERT_EQUAL(tn_topictree_levels(deep), LEVELS);

    tn_topictree *t = tn_topictree_new();
    add_ok(t, deep, 1);
    deep[2 * LEVELS - 2] = '*';
    add_ok(t, deep, 2);
    deep[2 * LEVELS - 2] = '>';
    add_ok(t, deep, 3);
    deep[2 * LEVELS - 2] = 'd';
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), LEVELS + 2);
    CU_ASSERT_EQUAL(tn_topictree__kid_slots(t, "d"), 1);
    CU_ASSERT_STRING_EQUAL(M(t, deep), "1 2 3");
    deep[2 * LEVELS - 2] = 'e';
    CU_ASSERT_STRING_EQUAL(M(t, deep), "2 3");
    deep[2 * LEVELS - 3] = '\0'; /* one level less: only "....d.>" */
    CU_ASSERT_STRING_EQUAL(M(t, deep), "3");
    deep[2 * LEVELS - 3] = '.';
    deep[2 * LEVELS - 2] = 'd';
    deep[2 * LEVELS - 2] = '*';
    CU_ASSERT_EQUAL(tn_topictree_remove(t, deep, V(2)), 0);
    deep[2 * LEVELS - 2] = '>';
    CU_ASSERT_EQUAL(tn_topictree_remove(t, deep, V(3)), 0);
    deep[2 * LEVELS - 2] = 'd';
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), LEVELS);
    CU_ASSERT_EQUAL(tn_topictree_remove(t, deep, V(1)), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 0);

    /* Two stored chains sharing their first half. */
    put_ok(t, deep, 4);
    deep[LEVELS] = 'e'; /* level LEVELS / 2 + 1, when LEVELS is even */
    put_ok(t, deep, 5);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), LEVELS + LEVELS / 2);
    size_t n = 0;
    tn_topictree_find(t, ">", count_cb, &n);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(tn_topictree_take(t, deep, NULL), 0);
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), LEVELS);
    deep[LEVELS] = 'd';
    CU_ASSERT_PTR_EQUAL(tn_topictree_get(t, deep), V(4));
    tn_topictree_free(t); /* a deep chain still in */
    free(deep);
}

static size_t
heap_used(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd; /* small chunks and mmapped ones (large tables) */
}

/* mallinfo2 counts glibc's heap only: not ASan's or valgrind's allocator, which replace it. */
static bool
heap_counted(void)
{
    size_t before = heap_used();
    char *p = tn_xmalloc(4096);
    p[0] = 1;
    bool counted = heap_used() >= before + 4096;
    free(p);
    return counted;
}

/* Heap growth per level, beyond the level's own bytes: at most 256 (issue: it was ~750). */
static void
check_per_level(const char *what, size_t before, size_t nodes, size_t key_bytes)
{
    size_t grew = heap_used() - before;
    double per = (double)(grew - key_bytes) / (double)nodes;
    if (per > 256)
        fprintf(stderr, "\n%s: %.1f bytes per level\n", what, per);
    CU_ASSERT(per <= 256);
}

static void
test_memory(void)
{
    if (TN_SANITIZED || !heap_counted())
        return;
    char name[64];

    /* (a) one node of 100,000 children, as 100,000 clients' subscriptions. */
    size_t before = heap_used();
    tn_topictree *t = tn_topictree_new();
    size_t keys = strlen("bench") + strlen("client7") + strlen("sub");
    for (long i = 0; i < 100000; i++) {
        int len = snprintf(name, sizeof name, "bench.client7.sub.%ld", i);
        keys += (size_t)len - strlen("bench.client7.sub.");
        add_ok(t, name, i);
    }
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 100003);
    check_per_level("100k children", before, 100003, keys);
    tn_topictree_free(t);
    CU_ASSERT(heap_used() < before + 64 * 1024); /* the rest: glibc's per-thread caches */

    /* (b) a chain of 30,000 levels. */
    enum { LEVELS = 30000 };
    char *deep = tn_xmalloc(2 * LEVELS);
    for (size_t i = 0; i < LEVELS; i++) {
        deep[2 * i] = 'l';
        deep[2 * i + 1] = '.';
    }
    deep[2 * LEVELS - 1] = '\0';
    before = heap_used();
    t = tn_topictree_new();
    put_ok(t, deep, 1);
    check_per_level("chain", before, LEVELS, LEVELS);
    tn_topictree_free(t);
    CU_ASSERT(heap_used() < before + 64 * 1024);
    free(deep);

    /* (c) 50,000 retained names of four levels. */
    before = heap_used();
    t = tn_topictree_new();
    keys = strlen("sensors") + strlen("building");
    for (long i = 0; i < 50000; i++) {
        int len = snprintf(name, sizeof name, "sensors.building.%ld.temp", i);
        keys += (size_t)len - strlen("sensors.building..");
        put_ok(t, name, i);
    }
    CU_ASSERT_EQUAL(tn_topictree__nodes(t), 100002);
    check_per_level("retained", before, 100002, keys);
    tn_topictree_free(t);
    CU_ASSERT(heap_used() < before + 64 * 1024);
}

int
main(void)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("topictree", NULL, NULL);
    CU_add_test(s, "filter_valid", test_filter_valid);
    CU_add_test(s, "exact", test_exact);
    CU_add_test(s, "star", test_star);
    CU_add_test(s, "gt", test_gt);
    CU_add_test(s, "dollar", test_dollar);
    CU_add_test(s, "empty_levels", test_empty_levels);
    CU_add_test(s, "duplicates_remove", test_duplicates_remove);
    CU_add_test(s, "many_values", test_many_values);
    CU_add_test(s, "prune", test_prune);
    CU_add_test(s, "retained", test_retained);
    CU_add_test(s, "deep", test_deep);
    CU_add_test(s, "random_match", test_random_match);
    CU_add_test(s, "random_find", test_random_find);
    CU_add_test(s, "random_match_wide", test_random_match_wide);
    CU_add_test(s, "random_find_wide", test_random_find_wide);
    CU_add_test(s, "levels", test_levels);
    CU_add_test(s, "many_children", test_many_children);
    CU_add_test(s, "many_children_find", test_many_children_find);
    CU_add_test(s, "deep_chain", test_deep_chain);
    CU_add_test(s, "memory", test_memory);
    return tn_test_run();
}
