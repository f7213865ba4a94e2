/*
 * topictree_int: module-private hooks, for topictree_test.c only.
 */
#ifndef TN_TOPICTREE_INT_H
#define TN_TOPICTREE_INT_H

#include "core/topictree/topictree.h"

#include <stddef.h>

/* Number of nodes below the root. Zero once every entry is removed: empty nodes are pruned. */
size_t tn_topictree__nodes(const tn_topictree *t);

/* How the children of the node for exactly name are kept: 0 (no such node), 1 (inline, one child
 * at most), 2..8 (an array of that capacity) or the slots of a hash table (16 or more). */
size_t tn_topictree__kid_slots(const tn_topictree *t, const char *name);

#endif
