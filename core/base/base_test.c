#include "core/base/base.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void
test_strerror(void)
{
    CU_ASSERT_STRING_EQUAL(tn_strerror(0), "success");
    CU_ASSERT_STRING_EQUAL(tn_strerror(TN_EAGAIN), "need more input");
    CU_ASSERT_STRING_EQUAL(tn_strerror(TN_ETOOBIG), "over the configured limit");
    CU_ASSERT_STRING_EQUAL(tn_strerror(12345), "unknown error");
}

static void
test_log_level(void)
{
    tn_log_level l;
    CU_ASSERT_EQUAL(tn_log_parse_level("debug", &l), 0);
    CU_ASSERT_EQUAL(l, TN_LOG_DEBUG);
    CU_ASSERT_EQUAL(tn_log_parse_level("loud", &l), TN_EINVAL);
    tn_log_set_level(TN_LOG_WARN);
    CU_ASSERT_FALSE(tn_log_enabled(TN_LOG_INFO));
    CU_ASSERT_TRUE(tn_log_enabled(TN_LOG_ERROR));
    tn_log_set_level(TN_LOG_INFO);
}

static void
test_buf_limits(void)
{
    tn_buf b;
    tn_buf_init(&b, 10);
    CU_ASSERT_PTR_NULL(b.data); /* nothing allocated until used */
    CU_ASSERT_EQUAL(tn_buf_append(&b, "hello", 5), 0);
    CU_ASSERT_EQUAL(tn_buf_append(&b, "world", 5), 0);
    CU_ASSERT_EQUAL(tn_buf_append(&b, "!", 1), TN_ETOOBIG);
    CU_ASSERT_EQUAL(b.len, 10);
    CU_ASSERT_TRUE(b.cap <= 10);
    tn_buf_consume(&b, 5);
    CU_ASSERT_EQUAL(memcmp(b.data, "world", 5), 0);
    CU_ASSERT_EQUAL(tn_buf_append(&b, "12345", 5), 0);
    CU_ASSERT_PTR_NULL(tn_buf_reserve(&b, 1));
    CU_ASSERT_PTR_NULL(tn_buf_reserve(&b, SIZE_MAX));
    tn_buf_reset(&b);
    CU_ASSERT_EQUAL(b.len, 0);
    CU_ASSERT_PTR_NULL(b.data);
    tn_buf_fini(&b);
}

static void
test_mkdirs(void)
{
    char dir[] = "/tmp/tern-base-test-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    char deep[256];
    snprintf(deep, sizeof deep, "%s/a/b/c", dir);
    CU_ASSERT_EQUAL(tn_mkdirs(deep), 0);
    CU_ASSERT_EQUAL(tn_mkdirs(deep), 0); /* already there: fine */
    struct stat st;
    CU_ASSERT_EQUAL(stat(deep, &st), 0);
    CU_ASSERT_TRUE(S_ISDIR(st.st_mode));
    char file[300];
    snprintf(file, sizeof file, "%s/a/f", dir);
    FILE *f = fopen(file, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fclose(f);
    snprintf(deep, sizeof deep, "%s/a/f/x", dir);
    CU_ASSERT_EQUAL(tn_mkdirs(deep), -1); /* a file in the way */
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

int
main(void)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("base", NULL, NULL);
    CU_add_test(s, "strerror", test_strerror);
    CU_add_test(s, "log_level", test_log_level);
    CU_add_test(s, "buf_limits", test_buf_limits);
    CU_add_test(s, "mkdirs", test_mkdirs);
    return tn_test_run();
}
