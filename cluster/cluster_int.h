/*
 * cluster_int.h: what witness.c and lease.c share, private to cluster/ (the tn_cluster__ names
 * are not used outside this folder).
 */
#ifndef TN_CLUSTER_INT_H
#define TN_CLUSTER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest witness protocol line, its "\n" included. */
#define TN_CLUSTER__LINE_MAX 256
/* Room for any reply tn_witness_handle writes ("BUSY <u64> <64-char name>\n" is the longest). */
#define TN_CLUSTER__REPLY_MAX 128
#define TN_CLUSTER__NAME_MAX 64

/* True for a node name: 1-64 characters of [A-Za-z0-9._:-] (s need not be terminated). */
bool tn_cluster__name_ok(const char *s, size_t len);
/* Parses a decimal u64 of 1-20 digits, nothing else (no sign, no spaces); false on overflow. */
bool tn_cluster__parse_u64(const char *s, size_t len, uint64_t *out);
/* Splits line[0..len) at single spaces into at most max fields (pointers into line, lengths);
 * returns the field count, or -1 when a field is empty (leading, trailing or double space) or
 * there are more than max. */
int tn_cluster__split(const char *line, size_t len, const char **f, size_t *flen, int max);

/* The ZooKeeper backend of tn_lease (zk.c): lease.c hands every call over to it when
 * tn_lease_conf.zookeeper is set, after its own checks of the conf. shell is lease.c's
 * tn_lease, freed together with the backend once its sessions are closed. */
struct tn_lease_conf;
typedef struct tn_zk tn_zk;
tn_zk *tn_cluster__zk_new(const struct tn_lease_conf *conf, uint32_t lease_ms, uint32_t renew_ms,
                          void *shell);
void tn_cluster__zk_want(tn_zk *z, bool want);
bool tn_cluster__zk_valid(const tn_zk *z);
uint64_t tn_cluster__zk_epoch(const tn_zk *z);
const char *tn_cluster__zk_holder(const tn_zk *z);
void tn_cluster__zk_set_standby(tn_zk *z, const char *standby, void (*done)(void *arg, bool ok),
                                void *arg);
void tn_cluster__zk_release(tn_zk *z);
void tn_cluster__zk_free(tn_zk *z);

#endif
