#include "core/message/message.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <string.h>

static void
test_new_ref_unref(void)
{
    tn_message *m = tn_message_new("a.b.xyz", 3, "hello", 5, 1, true);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_STRING_EQUAL(m->name, "a.b");
    CU_ASSERT_EQUAL(m->name_len, 3);
    CU_ASSERT_EQUAL(m->payload_len, 5);
    CU_ASSERT_EQUAL(memcmp(m->payload, "hello", 5), 0);
    CU_ASSERT_EQUAL(m->qos, 1);
    CU_ASSERT_TRUE(m->retain);
    CU_ASSERT_EQUAL(m->refs, 1);
    CU_ASSERT_PTR_EQUAL(tn_message_ref(m), m);
    CU_ASSERT_EQUAL(m->refs, 2);
    tn_message_unref(m);
    CU_ASSERT_EQUAL(m->refs, 1);
    CU_ASSERT_TRUE(tn_message_size(m) >= sizeof *m + 4 + 5);
    tn_message_unref(m); /* freed: ASan reports a leak otherwise */
    tn_message_unref(NULL);
}

static void
test_empty_payload(void)
{
    tn_message *m = tn_message_new("t", 1, NULL, 0, 0, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->payload_len, 0);
    tn_message_unref(m);
}

int
main(void)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("message", NULL, NULL);
    CU_add_test(s, "new_ref_unref", test_new_ref_unref);
    CU_add_test(s, "empty_payload", test_empty_payload);
    return tn_test_run();
}
