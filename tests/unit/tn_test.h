/*
 * The shared tail of every CUnit test main(): runs the registered suites verbosely and turns
 * the result into an exit code. CU_basic_run_tests() itself returns success even when tests
 * fail, and the counts must be read before the registry is cleaned up.
 */
#ifndef TN_TEST_H
#define TN_TEST_H

#include <CUnit/Basic.h>

static inline int
tn_test_run(void)
{
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned bad = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return bad ? 1 : 0;
}

#endif
