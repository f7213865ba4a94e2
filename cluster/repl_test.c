/*
 * repl.c's pure parts: where a returning standby continues (or copies anew), and the parsing
 * of HELLO and WELCOME payloads.
 */
#include "cluster/repl_int.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

static void
test_start_for(void)
{
    /* The active: epoch 1 from LSN 1, epoch 3 from LSN 101 (it took over from a node that was
     * active in epoch 2 without ever confirming: epoch 2 is not in its history). */
    const epoch_ent ha[] = {{1, 1}, {3, 101}};
    bool reset;
    /* An empty standby, all of the journal still on disk: from 1. */
    CU_ASSERT_EQUAL(tn_repl__start_for(ha, 2, 150, 1, 0, NULL, 0, &reset), 1);
    CU_ASSERT_FALSE(reset);
    /* An empty standby, the journal compacted up to 40: copied anew from 40. */
    CU_ASSERT_EQUAL(tn_repl__start_for(ha, 2, 150, 40, 0, NULL, 0, &reset), 40);
    CU_ASSERT_TRUE(reset);
    /* A standby that followed epoch 1 up to 90: continues at 91. */
    const epoch_ent h1[] = {{1, 1}};
    CU_ASSERT_EQUAL(tn_repl__start_for(ha, 2, 150, 1, 90, h1, 1, &reset), 91);
    CU_ASSERT_FALSE(reset);
    /* ... up to 100, the end of epoch 1 here: 101. */
    CU_ASSERT_EQUAL(tn_repl__start_for(ha, 2, 150, 1, 100, h1, 1, &reset), 101);
    CU_ASSERT_FALSE(reset);
    /* The old active of epoch 1 wrote up to 105 (never confirmed past 100): diverged. */
    CU_ASSERT_EQUAL(tn_repl__start_for(ha, 2, 150, 1, 105, h1, 1, &reset), 1);
    CU_ASSERT_TRUE(reset);
    /* A node that was active in epoch 2 (not on the active's history): diverged. */
    const epoch_ent h2[] = {{1, 1}, {2, 95}};
    CU_ASSERT_EQUAL(tn_repl__start_for(ha, 2, 150, 1, 97, h2, 2, &reset), 1);
    CU_ASSERT_TRUE(reset);
    /* ... but its records before epoch 2 began are fine when it wrote none in epoch 2. */
    CU_ASSERT_EQUAL(tn_repl__start_for(ha, 2, 150, 1, 94, h2, 2, &reset), 95);
    CU_ASSERT_FALSE(reset);
    /* A standby in the current epoch, up to what is written, and past it (impossible: reset). */
    const epoch_ent h3[] = {{1, 1}, {3, 101}};
    CU_ASSERT_EQUAL(tn_repl__start_for(ha, 2, 150, 1, 150, h3, 2, &reset), 151);
    CU_ASSERT_FALSE(reset);
    CU_ASSERT_EQUAL(tn_repl__start_for(ha, 2, 150, 1, 151, h3, 2, &reset), 1);
    CU_ASSERT_TRUE(reset);
    /* The same epoch number starting elsewhere (another witness): reset. */
    const epoch_ent h4[] = {{1, 2}};
    CU_ASSERT_EQUAL(tn_repl__start_for(ha, 2, 150, 1, 50, h4, 1, &reset), 1);
    CU_ASSERT_TRUE(reset);
    /* Its next record compacted away: reset to the oldest. */
    CU_ASSERT_EQUAL(tn_repl__start_for(ha, 2, 150, 60, 50, h1, 1, &reset), 60);
    CU_ASSERT_TRUE(reset);
}

static size_t
put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return 8;
}

static size_t
hello(uint8_t *p, const char *name, uint64_t last, const epoch_ent *h, uint32_t n)
{
    size_t i = 0, len = strlen(name);
    p[i++] = (uint8_t)len;
    p[i++] = 0;
    memcpy(p + i, name, len);
    i += len;
    i += put_u64(p + i, last);
    memcpy(p + i, &n, 4); /* little-endian machine */
    i += 4;
    for (uint32_t k = 0; k < n; k++) {
        i += put_u64(p + i, h[k].epoch);
        i += put_u64(p + i, h[k].first);
    }
    return i;
}

static void
test_parse(void)
{
    uint8_t buf[256];
    const epoch_ent h[] = {{1, 1}, {4, 70}};
    size_t n = hello(buf, "node-1", 99, h, 2);
    char name[65];
    uint64_t last;
    epoch_ent *got;
    size_t ng;
    CU_ASSERT_EQUAL(tn_repl__parse_hello(buf, n, name, &last, &got, &ng), 0);
    CU_ASSERT_STRING_EQUAL(name, "node-1");
    CU_ASSERT_EQUAL(last, 99);
    CU_ASSERT_EQUAL_FATAL(ng, 2);
    CU_ASSERT_EQUAL(got[1].epoch, 4);
    CU_ASSERT_EQUAL(got[1].first, 70);
    free(got);
    /* Short, trailing bytes, a bad name, epochs not increasing, a huge count: refused. */
    for (size_t cut = 0; cut < n; cut++)
        CU_ASSERT_EQUAL(tn_repl__parse_hello(buf, cut, name, &last, &got, &ng), -1);
    CU_ASSERT_EQUAL(tn_repl__parse_hello(buf, n + 1, name, &last, &got, &ng), -1);
    n = hello(buf, "bad name", 1, NULL, 0);
    CU_ASSERT_EQUAL(tn_repl__parse_hello(buf, n, name, &last, &got, &ng), -1);
    const epoch_ent down[] = {{4, 1}, {2, 70}};
    n = hello(buf, "a", 1, down, 2);
    CU_ASSERT_EQUAL(tn_repl__parse_hello(buf, n, name, &last, &got, &ng), -1);
    n = hello(buf, "a", 1, NULL, 0);
    buf[n - 1] = 0xff; /* count 0xff000000 */
    CU_ASSERT_EQUAL(tn_repl__parse_hello(buf, n, name, &last, &got, &ng), -1);
    CU_ASSERT_PTR_NULL(got);
    /* WELCOME: name, epoch, mode, start, history. */
    size_t i = 0;
    buf[i++] = 1;
    buf[i++] = 0;
    buf[i++] = 'x';
    i += put_u64(buf + i, 7);
    buf[i++] = 1;
    i += put_u64(buf + i, 40);
    memset(buf + i, 0, 4);
    i += 4;
    uint64_t epoch, start;
    bool reset;
    CU_ASSERT_EQUAL(tn_repl__parse_welcome(buf, i, name, &epoch, &reset, &start, &got, &ng), 0);
    CU_ASSERT_EQUAL(epoch, 7);
    CU_ASSERT_TRUE(reset);
    CU_ASSERT_EQUAL(start, 40);
    CU_ASSERT_EQUAL(ng, 0);
    buf[11] = 2; /* no such mode */
    CU_ASSERT_EQUAL(tn_repl__parse_welcome(buf, i, name, &epoch, &reset, &start, &got, &ng), -1);
}

int
main(void)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("repl", NULL, NULL);
    CU_add_test(s, "where a standby continues", test_start_for);
    CU_add_test(s, "HELLO and WELCOME", test_parse);
    return tn_test_run();
}
