/*
 * store: the append-only journal that makes messages survive kill -9 and restart.
 *
 * The journal is a folder of segment files, DIR/NNNNNNNNNNNNNNNNNNNN.seg, named by the log
 * sequence number (LSN) of their first record. Each record is self-describing, so the same bytes
 * can be replayed at start and shipped to a standby:
 *
 *     u32 crc     CRC-32 (as zlib and gzip) of everything after this field, padding excluded
 *     u32 len     payload bytes
 *     u64 lsn     1, 2, 3, ... with no gaps across segments
 *     u16 type    the record's meaning, owned by the caller (the broker)
 *     u16 zero    reserved
 *     payload, then zero padding to a multiple of 8 bytes
 *
 * Threads: appends are encoded on the loop thread into a pending buffer; a writer thread takes
 * everything pending in one batch, writes it, syncs it per the policy (group commit: records
 * arriving during a sync ride the next one), publishes the durable LSN and calls notify(), which
 * must wake the loop (uv_async_send). The loop then calls tn_store_poll(), which runs the
 * tn_store_when_durable() callbacks that are due, in LSN order. The loop never blocks on disk.
 *
 * Recovery: tn_store_replay() walks every record in order before tn_store_start(). A torn or
 * corrupt tail of the last segment (a record cut short, a bad CRC with nothing valid after it) is
 * cut off, synced, and logged with the number of bytes dropped. A bad record with valid records
 * after it, or in an older segment, is corruption in the middle: replay fails with a message
 * naming the file and offset, unless salvage is set (then the rest of that segment is skipped
 * and logged).
 */
#ifndef TN_STORE_H
#define TN_STORE_H

#include "core/base/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tn_store tn_store;

typedef enum {
    TN_SYNC_ALWAYS = 0, /* fdatasync before a record counts as durable (the default) */
    TN_SYNC_INTERVAL,   /* durable once written; synced every interval_ms */
    TN_SYNC_NEVER,      /* durable once written (survives kill -9, not power loss) */
} tn_sync_policy;

#define TN_STORE_HEADER 20 /* bytes before the payload */

typedef struct tn_store_conf {
    const char *dir; /* the journal folder; created if missing */
    tn_sync_policy sync;
    uint32_t interval_ms;  /* TN_SYNC_INTERVAL */
    uint64_t segment_size; /* start a new segment past this many bytes */
    uint32_t max_record;   /* largest payload accepted */
    bool salvage;          /* skip corruption in the middle instead of refusing to start */
    /* Called from the writer thread when records became durable or writing failed (and, with
     * notify_written, also when records were written, before they are synced: a pair's active
     * ships them to its standby while its own sync runs). */
    void (*notify)(void *arg);
    void *notify_arg;
    bool notify_written;
    /* The LSN of the first record of an empty journal (0: 1). A standby that copies a
     * compacted journal starts where its active's oldest segment starts. */
    uint64_t first_lsn;
    /* No writer thread: tn_store_flush() writes and syncs what is pending on the caller's
     * thread, and notify is not called (the caller polls after flushing). A pair's standby,
     * which serves no client, writes what its active sends this way and acknowledges it
     * without two thread hand-offs. */
    bool inline_writes;
} tn_store_conf;

/* Opens (creating) the folder. No thread runs yet. err gets a one-line reason on failure. */
int tn_store_open(const tn_store_conf *conf, tn_store **out, char *err, size_t errlen);

/* Calls cb for every record in LSN order; cb returning non-zero stops the replay with that
 * result. Repairs a torn tail as described above. Call before tn_store_start(), once or more
 * (a caller may scan first, then apply). */
typedef int (*tn_store_replay_cb)(void *arg, uint64_t lsn, uint16_t type, const uint8_t *p,
                                  uint32_t len);
int tn_store_replay(tn_store *s, tn_store_replay_cb cb, void *arg, char *err, size_t errlen);

/* Starts the writer thread; appends are accepted from now on. */
int tn_store_start(tn_store *s);

/* Appends one record (loop thread). Returns its LSN in *lsn, TN_ETOOBIG over max_record, or the
 * sticky write error (TN_EIO) once writing has failed. */
int tn_store_append(tn_store *s, uint16_t type, const void *p, uint32_t len, uint64_t *lsn);
/* The same for a record of head[0..hlen) then body[0..blen), the body written from where it is,
 * not copied (a large message's payload: written once, held once): body must stay valid and
 * unchanged until release(owner) is called, on the loop thread from tn_store_poll() (or
 * tn_store_close()), once it is written or dropped after a write error. On failure (the
 * returns of tn_store_append) release is not called. */
int tn_store_append_ref(tn_store *s, uint16_t type, const void *head, uint32_t hlen,
                        const void *body, uint32_t blen, void (*release)(void *owner), void *owner,
                        uint64_t *lsn);

/* Calls cb(arg, 0) on the loop thread, from tn_store_poll(), once every record up to lsn is
 * durable; cb(arg, TN_EIO) if writing failed first. Callbacks run in LSN order. */
typedef void (*tn_store_done_cb)(void *arg, int status);
void tn_store_when_durable(tn_store *s, uint64_t lsn, tn_store_done_cb cb, void *arg);

/* A pair's active: callbacks run only up to gate(arg) as well as up to what is durable here
 * (the standby's acknowledged LSN, or none while the lease is not held; NULL: no gate). The
 * gate is asked on every tn_store_poll(), which its owner calls when the gate moves. */
void tn_store_set_gate(tn_store *s, uint64_t (*gate)(void *arg), void *arg);

/* inline_writes: writes and syncs (per the policy) everything appended so far, on this thread;
 * tn_store_poll() then runs the callbacks that became due. */
void tn_store_flush(tn_store *s);

/* Runs the callbacks that became due (loop thread, after notify). After a write error, every
 * record not yet durable is failed (cb with TN_EIO) and appends return TN_EIO; once the writer
 * finds room again, the next poll resumes appends, reusing the failed records' LSNs. */
void tn_store_poll(tn_store *s);

uint64_t tn_store_last_lsn(tn_store *s);    /* last appended (or replayed) */
uint64_t tn_store_written_lsn(tn_store *s); /* last written to its segment (maybe not synced) */
uint64_t tn_store_durable_lsn(tn_store *s); /* last durable (and within the gate, if any) */
int tn_store_error(tn_store *s);            /* 0, or the sticky write error */

/* Where a record lies: the first LSN of its segment, its offset there and its padded size.
 * last_pos: the record the last successful tn_store_append() made (loop thread). */
typedef struct tn_store_pos {
    uint64_t seg;
    uint32_t off;
    uint32_t size;
} tn_store_pos;
void tn_store_last_pos(tn_store *s, tn_store_pos *pos);

/* Reads the record at pos back (loop thread; before start too, e.g. while replaying): its
 * payload into out (out->len = its length) and its type. TN_EAGAIN while it is not written yet
 * (retry after a later poll); TN_ENOENT if no valid record is there (its segment was deleted, or
 * its append failed and the position was reused). Callers check the payload is what they
 * expect. */
int tn_store_read(tn_store *s, const tn_store_pos *pos, tn_buf *out, uint16_t *type);
/* The same for a large record, held once: reads its first prefix payload bytes (all of a record
 * no longer than that, which is then returned as by tn_store_read) into out, then
 * place(arg, p, n, len) gets those n bytes and the payload's whole length, and returns where the
 * other len - n bytes go (NULL: TN_ENOMEM); they are read straight there and out is left empty.
 * The CRC covers all of it: on TN_ENOENT whatever place() made must be discarded. */
typedef uint8_t *(*tn_store_place_cb)(void *arg, const uint8_t *p, uint32_t n, uint32_t len);
int tn_store_read_split(tn_store *s, const tn_store_pos *pos, uint32_t prefix, tn_buf *out,
                        uint16_t *type, tn_store_place_cb place, void *arg);

/* Compaction, driven by the caller, which knows what is live: roll makes the next batch start a
 * new segment; drop_before asks the writer thread to delete every segment whose records all
 * have LSNs below lsn (the caller has rewritten what still matters above it, and it is durable).
 * bytes: the journal's size on disk. */
void tn_store_roll(tn_store *s);
void tn_store_drop_before(tn_store *s, uint64_t lsn);
uint64_t tn_store_bytes(tn_store *s);
/* The first LSN of the oldest segment (0 when there is none). */
uint64_t tn_store_first_segment(tn_store *s);

/* Reading the journal in order from any LSN, as records are written (a pair's active ships
 * them to its standby this way, both to catch a standby up and to follow the tail): whole
 * records in the format above, CRC included, read from the segment files (loop thread). */
typedef struct tn_store_cursor tn_store_cursor;
/* A cursor at lsn: TN_ENOENT when lsn is below the oldest segment (compacted away) or above
 * the last LSN + 1. */
int tn_store_cursor_open(tn_store *s, uint64_t lsn, tn_store_cursor **out);
/* A cursor at the record lsn, which starts at pos (or, when pos is the end of its segment, at
 * the start of the next one): positions a tap (below) was given. */
int tn_store_cursor_open_at(tn_store *s, const tn_store_pos *pos, uint64_t lsn,
                            tn_store_cursor **out);
/* Appends the next whole records, up to those written (tn_store_written_lsn) and to upto, to
 * out: about max bytes (at least one record when one is due, however large). Returns how many
 * (0: none written yet), or TN_EIO when the files do not hold what they should (a segment
 * gone, a record out of sequence). *next: the LSN the next read starts at, *pos where. */
int tn_store_cursor_read(tn_store_cursor *c, tn_buf *out, size_t max, uint64_t upto,
                         uint64_t *next);
void tn_store_cursor_pos(const tn_store_cursor *c, tn_store_pos *pos);
void tn_store_cursor_close(tn_store_cursor *c);

/* A pair's active: tap(arg, lsn, rec, size, pos) runs on the loop thread for every record as it
 * is appended, before it is written: rec is its whole encoded form (header, CRC, payload,
 * padding: size bytes), or NULL for a record whose body is written by reference (not in
 * memory as one piece); pos is where it will lie. It runs under the store's lock: it may only
 * copy, never call the store. The standby gets small records at once this way, not after the
 * active's own write and sync. NULL: none. */
typedef void (*tn_store_tap_cb)(void *arg, uint64_t lsn, const uint8_t *rec, size_t size,
                                const tn_store_pos *pos);
void tn_store_set_tap(tn_store *s, tn_store_tap_cb tap, void *arg);

/* Deletes every segment of the (closed) journal in dir: a standby whose journal diverged from
 * its active's (records of a superseded epoch) copies the active's anew. */
int tn_store_wipe(const char *dir, char *err, size_t errlen);

/* Checks one record in the format above (a standby's received record): its length fits n and
 * max_record, its CRC holds. Gives its LSN, type, payload and padded size. */
int tn_store_record_check(const uint8_t *p, size_t n, uint32_t max_record, uint64_t *lsn,
                          uint16_t *type, const uint8_t **payload, uint32_t *len, size_t *size);

/* Writes and syncs what is pending, stops the thread, runs due callbacks, frees everything. */
void tn_store_close(tn_store *s);

#endif
