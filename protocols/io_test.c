/* io: the output stream of a buffer with references interleaved (tn_out_pieces, tn_out_drop). */
#include "protocols/io.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <string.h>

static int released;
static void
on_release(void *owner)
{
    (void)owner;
    released++;
}

/* "ab" [REF1] "cd" [REF2] "e": the stream is "abXYZcdUVe". */
static void
make(tn_buf *b, tn_orefs *r)
{
    memset(r, 0, sizeof *r);
    tn_buf_init(b, 1024);
    tn_buf_append(b, "ab", 2);
    tn_orefs_add(r, b->len, (const uint8_t *)"XYZ", 3, on_release, NULL);
    tn_buf_append(b, "cd", 2);
    tn_orefs_add(r, b->len, (const uint8_t *)"UV", 2, on_release, NULL);
    tn_buf_append(b, "e", 1);
}

static void
stream_from(const tn_buf *b, const tn_orefs *r, size_t skip, char *out)
{
    tn_piece v[16];
    size_t bytes, n = 0;
    unsigned k = tn_out_pieces(b, r, skip, v, 16, &bytes);
    for (unsigned i = 0; i < k; i++) {
        memcpy(out + n, v[i].p, v[i].n);
        n += v[i].n;
    }
    out[n] = 0;
    CU_ASSERT_EQUAL(bytes, n);
}

static void
test_pieces(void)
{
    tn_buf b;
    tn_orefs r;
    make(&b, &r);
    char s[32];
    for (size_t skip = 0; skip <= 10; skip++) {
        stream_from(&b, &r, skip, s);
        CU_ASSERT_STRING_EQUAL(s, &"abXYZcdUVe"[skip]);
    }
    tn_piece v[2];
    size_t bytes;
    CU_ASSERT_EQUAL(tn_out_pieces(&b, &r, 0, v, 2, &bytes), 2); /* at most max pieces */
    CU_ASSERT_EQUAL(bytes, 5);
    released = 0;
    tn_orefs_release(&r);
    CU_ASSERT_EQUAL(released, 2);
    tn_buf_fini(&b);
}

/* Dropping any prefix leaves the rest of the stream, releasing references passed whole. */
static void
test_drop(void)
{
    static const int want_released[] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2};
    for (size_t done = 0; done <= 10; done++) {
        tn_buf b;
        tn_orefs r;
        make(&b, &r);
        released = 0;
        size_t cursor = tn_out_drop(&b, &r, done);
        char s[32];
        stream_from(&b, &r, cursor, s);
        CU_ASSERT_STRING_EQUAL(s, &"abXYZcdUVe"[done]);
        CU_ASSERT_EQUAL(released, want_released[done]);
        tn_orefs_release(&r);
        tn_buf_fini(&b);
    }
}

int
main(void)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("io", NULL, NULL);
    CU_add_test(s, "pieces", test_pieces);
    CU_add_test(s, "drop", test_drop);
    return tn_test_run();
}
