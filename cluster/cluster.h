/*
 * cluster: an active/standby pair of ternd nodes (issue 15).
 *
 * Two parts, both on ternd's libuv loop:
 *
 * 1. The coordinator: a lease with epochs. The embedded one is the witness, a small server
 *    (`ternd --role witness`, tn_witness) that grants the lease to one node at a time; each node
 *    talks to it through tn_lease. Where ZooKeeper runs already, tn_lease gets the same lease,
 *    under the same rules, from it instead (tn_lease_conf.zookeeper; znodes and timing in zk.c).
 *
 * 2. Replication (tn_repl): the active streams its journal records to the standby, which
 *    appends them to its own journal and acknowledges what is durable there; the active's
 *    confirmations wait for that acknowledgement.
 *
 * ---- the witness protocol ----
 *
 * TCP, text lines ending in "\n" (at most 256 bytes; a longer line, or one that does not parse,
 * gets "ERR <reason>" and the connection is closed). Fields are separated by one space. Node
 * names are 1-64 characters of [A-Za-z0-9._:-]. Every request gets exactly one reply, in order.
 * Epochs are decimal u64; 0 means "none yet".
 *
 *   ACQUIRE <node>                  ask for the active role
 *     -> GRANT <epoch> <lease_ms>   granted: <node> is active at the new <epoch>, which is the
 *                                   stored epoch + 1, synced to the witness' disk before this
 *                                   reply; the lease runs lease_ms from the witness' receipt
 *     -> BUSY <epoch> <holder> <ms> another node holds a lease that has not expired; it ends
 *                                   in at most <ms> (unless renewed): ask again then
 *     -> BEHIND <epoch> <holder>    the lease is free but <node> is recorded out of sync (it
 *                                   may lack confirmed messages): never promoted. <holder> is
 *                                   the last holder, the only node that may take it now
 *   RENEW <node> <epoch> <standby>  the holder extends its lease and records which node is
 *                                   its in-sync standby: a node name, or "-" for none (the
 *                                   active goes on alone)
 *     -> OK <epoch>                 extended (lease_ms from receipt); the standby recorded,
 *                                   and if it changed, synced to disk before this reply
 *     -> LOST <epoch> <holder>      <node> does not hold the lease at <epoch> (expired and
 *                                   granted again, or a newer epoch): it must fence
 *   RELEASE <node> <epoch>          the holder gives the lease up (clean shutdown)
 *     -> OK <epoch>                 (also when it was not the holder: nothing changes then)
 *
 * The witness keeps {epoch, last holder, in-sync standby} in DIR/witness.state (written to a
 * temporary file, fsynced, renamed, the folder fsynced). Rules:
 *   - ACQUIRE is granted when no lease is live (never granted, expired, released, or its
 *     holder's connection closed: see below), and either nothing was ever granted, or the
 *     asker is the last holder, or the asker is the recorded in-sync standby. A grant sets
 *     last holder = asker, in-sync standby = none (the other node has to catch up with the new
 *     active and be recorded in sync again by it), and epoch = epoch + 1.
 *   - A lease is live from a GRANT or OK until lease_ms after the witness received the request
 *     (witness clock: CLOCK_MONOTONIC / uv_hrtime).
 *   - When the connection on which the holder's live lease was granted or last renewed closes
 *     (EOF or reset: the holder's process exited, or it closed the connection itself, which a
 *     node does only after it has stopped confirming), the lease ends at once. So a killed
 *     active is replaced in milliseconds; a frozen or cut-off one when its lease expires.
 *
 * The node side (tn_lease) counts its lease from when it SENT the request that was answered
 * GRANT or OK, and treats it as over at send time + lease_ms - TN_LEASE_MARGIN_MS, on its own
 * monotonic clock (uv_hrtime, never the loop's cached time): the witness' lease starts later
 * (at receipt), so the node always stops first. Clocks never have to agree; only durations are
 * compared.
 */
#ifndef TN_CLUSTER_H
#define TN_CLUSTER_H

#include "core/store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define TN_LEASE_MS 1000       /* default lease length */
#define TN_LEASE_RENEW_MS 250  /* default renewal period */
#define TN_LEASE_MARGIN_MS 150 /* the node stops this long before its lease could end */

/* ---- the witness' state machine, sans-IO (witness.c; tested and fuzzed without sockets) ---- */

typedef struct tn_witness_state {
    uint64_t epoch;
    char holder[65];  /* last holder ("" before the first grant) */
    char standby[65]; /* its in-sync standby ("" for none) */
    bool live;        /* a lease is live */
    uint64_t expires; /* when it ends (ns, monotonic) */
    uint64_t conn;    /* the connection it was granted or last renewed on (0: none) */
} tn_witness_state;

/* Handles one request line (without its "\n") received at now_ns on connection conn (a
 * nonzero id), writing the reply line (with its "\n") into reply. *changed is set when the
 * durable part (epoch, holder, standby) changed: the caller must persist the state before it
 * sends the reply. Returns 0, or -1 for a bad request (the reply is then "ERR ...\n" and the
 * connection is to be closed). */
int tn_witness_handle(tn_witness_state *st, uint32_t lease_ms, uint64_t conn, uint64_t now_ns,
                      const char *line, size_t len, char *reply, size_t reply_len, bool *changed);
/* Connection conn closed: ends the lease if it is the holder's. */
void tn_witness_conn_closed(tn_witness_state *st, uint64_t conn);
/* Persists / loads {epoch, holder, standby} in DIR/witness.state (load: zeroes when the file
 * does not exist yet). Return 0 or -1 with err set. */
int tn_witness_state_save(const tn_witness_state *st, const char *dir, char *err, size_t errlen);
int tn_witness_state_load(tn_witness_state *st, const char *dir, char *err, size_t errlen);

/* ---- the witness server (`ternd --role witness`) ---- */

typedef struct tn_witness tn_witness;
/* Listens on addr:port (port 0: any; *bound gets the port) with state in dir (created if
 * missing). Logs WITNESS-GRANT, WITNESS-LOST (a lease ended: expiry or its connection closed)
 * and WITNESS-SYNC (the in-sync standby changed) at info. */
int tn_witness_open(uv_loop_t *loop, const char *addr, uint16_t port, const char *dir,
                    uint32_t lease_ms, tn_witness **out, uint16_t *bound, char *err, size_t errlen);
void tn_witness_close(tn_witness *w); /* closes its handles; free after the loop has run them */

/* ---- a node's lease (lease.c) ---- */

typedef struct tn_lease tn_lease;

typedef struct tn_lease_conf {
    uv_loop_t *loop;
    const char *node; /* this node's name (copied) */
    const char *host; /* the witness (numeric IPv4/IPv6 address or a name; copied) */
    uint16_t port;
    /* "HOST:PORT[,HOST:PORT...]/PATH": the lease comes from ZooKeeper instead of the witness
     * (zk.c says how; host and port are then unused; copied). */
    const char *zookeeper;
    uint32_t lease_ms; /* 0: TN_LEASE_MS; must match the witness' */
    uint32_t renew_ms; /* 0: TN_LEASE_RENEW_MS */
    /* This node is active from now on, at epoch (a GRANT). */
    void (*granted)(void *arg, uint64_t epoch);
    /* This node is no longer active at epoch (LOST, the local lease end passed without a
     * renewal, or the witness connection broke while active): fence at once. Called once per
     * granted epoch, and before the local lease end has passed by more than a loop turn. */
    void (*lost)(void *arg, uint64_t epoch, const char *why);
    void *arg;
} tn_lease_conf;

tn_lease *tn_lease_new(const tn_lease_conf *conf);
/* While want is true (and the lease is not held), ACQUIRE every renew_ms (reconnecting to the
 * witness as needed, at most every renew_ms). */
void tn_lease_want(tn_lease *l, bool want);
/* True while this node holds the lease by its own clock (uv_hrtime: valid across a process
 * freeze, unlike the loop's cached time). Check before releasing any confirmation. */
bool tn_lease_valid(const tn_lease *l);
uint64_t tn_lease_epoch(const tn_lease *l); /* the epoch held (or last held), 0 if never */
/* What the last BUSY/BEHIND/LOST reply named as holder ("" if none yet). */
const char *tn_lease_holder(const tn_lease *l);
/* While active: records with the witness which node is the in-sync standby (NULL: none, the
 * active goes on alone); done(arg, true) once an OK to a RENEW carrying this value arrived
 * (the witness has synced it), done(arg, false) if the lease was lost first (done may be
 * NULL). The RENEW goes out at once, not at the next period; later renewals carry the latest
 * value. */
void tn_lease_set_standby(tn_lease *l, const char *standby, void (*done)(void *arg, bool ok),
                          void *arg);
/* Gives the lease up (RELEASE, best effort, not waited for). */
void tn_lease_release(tn_lease *l);
/* Closes the connection and timers; frees itself once libuv has closed its handles. */
void tn_lease_free(tn_lease *l);

/* ---- replication (repl.c) ----
 *
 * Both nodes listen on their replication port (--pair-listen); a standby connects to its peer's
 * (--pair-peer). Frames: u8 type, u32 length (little-endian), payload (at most the largest
 * journal record plus 64 KiB):
 *
 *   HELLO    standby -> node    u16 name length, name, u64 last LSN, u32 n, n x (u64 epoch,
 *                               u64 first LSN): its journal's end and its epoch history
 *   WELCOME  active -> standby  u16 name length, name, u64 epoch, u8 mode (0: records follow
 *                               from u64 lsn; 1: reset: drop the journal, it starts anew at
 *                               u64 lsn), u32 n, n x (u64 epoch, u64 first LSN): the history
 *   NOTACTIVE node -> standby   this node is not active (the standby retries)
 *   RECORDS  active -> standby  whole journal records (core/store's format, CRC included)
 *   ACK      standby -> active  u64: every record up to it is durable on the standby
 *   INSYNC   active -> standby  u64 epoch: the witness records this standby in sync
 *   OUTOFSYNC active -> standby u64 epoch: the active went on alone (the standby is behind)
 *   BEAT     active -> standby  u64 epoch, every 100 ms: the active is alive (a standby that
 *                               hears nothing for a while holds new clients: tn_repl_heard)
 *
 * Where a standby's journal starts again: the active finds the epoch of the standby's last
 * record in its own history; if that epoch ends at or after the standby's last LSN there, and
 * the active still has the next record, records follow from there; otherwise (the standby
 * holds records of a superseded epoch that were never confirmed, or its next record was
 * compacted away) the standby resets and copies the active's journal from its oldest segment.
 *
 * Confirmations on the active (the store's gate): none while the lease is not valid; up to the
 * standby's ACK while the standby is recorded (or being recorded) in sync; up to what is
 * durable here while it goes on alone (the witness records no in-sync standby first). A standby
 * whose ACKs are overdue by alone_ms (or whose link is down that long) is dropped: the active
 * records "no standby" with the witness, logs PAIR-ALONE, and confirms alone from then on. A
 * standby that has caught up (nothing left to send, everything acknowledged) is recorded in
 * sync again (PAIR-SYNC).
 */

typedef struct tn_repl tn_repl;

typedef struct tn_repl_conf {
    uv_loop_t *loop;
    const char *node;        /* this node's name */
    const char *listen_addr; /* --pair-listen */
    uint16_t listen_port;
    const char *peer_host; /* --pair-peer */
    uint16_t peer_port;
    const char *data_dir; /* the node's data folder: DIR/journal, DIR/pair-epochs */
    uint32_t alone_ms;    /* 0: 2000 */
    bool async;           /* confirm without waiting for the standby (README: trade-off) */
    uint32_t max_record;  /* the journal's largest record */
    tn_store_conf *store; /* the journal's settings (the standby opens it with these) */
    /* TLS on the link (both or neither; borrowed): the node accepting a standby is the server
     * and asks for its certificate when given a CA; the standby is the client. */
    struct tn_tls_ctx *tls_server;
    struct tn_tls_ctx *tls_client;
    /* The standby's role changed: TN_ROLE_CATCHING_UP or TN_ROLE_STANDBY at the active's epoch. */
    void (*role)(void *arg, int role, uint64_t epoch);
    void *arg;
} tn_repl_conf;

enum { TN_ROLE_NONE, TN_ROLE_CATCHING_UP, TN_ROLE_STANDBY, TN_ROLE_ACTIVE, TN_ROLE_FENCED };

/* Opens the replication port. */
int tn_repl_new(const tn_repl_conf *conf, tn_repl **out, uint16_t *bound, char *err, size_t errlen);
/* Standby: opens the journal (conf->store), follows the active at peer. */
int tn_repl_standby_start(tn_repl *r, char *err, size_t errlen);
/* Standby promoted: stops following, closes the journal (everything received is synced). */
void tn_repl_standby_stop(tn_repl *r);
/* Active at epoch with store (opened, recovered and started by the caller) and lease: records
 * the epoch in the history, gates the store's confirmations, ships records to a standby. */
int tn_repl_active_start(tn_repl *r, struct tn_store *store, tn_lease *lease, uint64_t epoch,
                         char *err, size_t errlen);
/* The store wrote records (call from its notify, on the loop). */
void tn_repl_poll(tn_repl *r);
/* The lease is lost: nothing is confirmed any more (the gate stays shut). */
void tn_repl_fence(tn_repl *r);
/* Standby: the loop time it last heard from its active (any frame; the active sends one at
 * least every 100 ms), and whether the link to it is up now. 0 before it ever did. */
uint64_t tn_repl_heard(const tn_repl *r, bool *linked);
/* Closes everything (the standby's journal too); frees itself once libuv is done. */
void tn_repl_free(tn_repl *r);

#endif
