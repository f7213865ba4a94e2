/* cluster/repl.c's pure parts, for its unit test and fuzz target (module-private). */
#ifndef TN_CLUSTER_REPL_INT_H
#define TN_CLUSTER_REPL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One entry of an epoch history: the epoch and the LSN of its first record. */
typedef struct epoch_ent {
    uint64_t epoch, first;
} epoch_ent;

/* Where a standby whose journal ends at `last` with history h[0..n) continues from, given the
 * active's history ha[0..na), its last written LSN and its oldest LSN on disk: last + 1, or
 * (*reset set) the oldest LSN, when the standby must copy the journal anew. */
uint64_t tn_repl__start_for(const epoch_ent *ha, size_t na, uint64_t written, uint64_t oldest,
                            uint64_t last, const epoch_ent *h, size_t n, bool *reset);

/* A HELLO / WELCOME payload (cluster.h); 0, or -1 when malformed (trailing bytes included).
 * *hist is a new array (NULL when empty or on error). */
int tn_repl__parse_hello(const uint8_t *p, size_t len, char name[65], uint64_t *last,
                         epoch_ent **hist, size_t *n);
int tn_repl__parse_welcome(const uint8_t *p, size_t len, char name[65], uint64_t *epoch,
                           bool *reset, uint64_t *start, epoch_ent **hist, size_t *n);

#endif
