/*
 * topictree_int: module-private hooks, for topictree_test.c only.
 */
#ifndef TN_TOPICTREE_INT_H
#define TN_TOPICTREE_INT_H

#include "core/topictree/topictree.h"

#include <stddef.h>

/* Number of nodes below the root. Zero once every entry is removed: empty nodes are pruned. */
size_t tn_topictree__nodes(const tn_topictree *t);

#endif
