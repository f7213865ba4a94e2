#include "core/store/store.h"

#include "core/base/base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <isa-l/crc.h>

#define PAD8(n) (((n) + 7u) & ~(uint64_t)7u)
#define PROBE_BYTES (64 * 1024)
#define IDLE_SYNC_MS 10 /* sync always: records nobody waits for are synced this soon */

typedef struct waiter {
    uint64_t lsn;
    tn_store_done_cb cb;
    void *arg;
} waiter;

/* A record's body written from where it is (tn_store_append_ref): its bytes come right before
 * byte off of the pending buffer (or of the batch being written). */
typedef struct store_ref {
    uint64_t off;
    const uint8_t *p;
    uint32_t n;
    void (*release)(void *owner);
    void *owner;
} store_ref;

typedef struct ref_list {
    store_ref *v;
    size_t n, cap;
} ref_list;

static void
refs_push(ref_list *l, store_ref r)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->v = tn_xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = r;
}

/* Moves every ref of from to the end of to. */
static void
refs_move(ref_list *to, ref_list *from)
{
    for (size_t i = 0; i < from->n; i++)
        refs_push(to, from->v[i]);
    from->n = 0;
}

/* A batch buffer grown past this by large records is freed once written. */
#define KEEP_BATCH (8u << 20)

/* A segment starts at this offset of the pending buffer, with this LSN. */
typedef struct roll_pt {
    uint64_t off;
    uint64_t lsn;
} roll_pt;

struct tn_store {
    tn_store_conf conf;
    char *dir;
    int dirfd;
    uint64_t *segs; /* first LSN of each segment found at open, ascending */
    size_t n_segs;

    /* Writer thread's (the loop's before start) */
    int fd;
    uint64_t w_seg; /* first LSN of the segment fd writes */
    uint64_t seg_bytes;
    uint64_t zeroed; /* the segment file's size: zeros from seg_bytes to here (zero_ahead) */
    bool no_zeros;   /* zero_ahead failed in this segment (disk full): appends extend it */
    bool unsynced;

    /* Loop thread's */
    uint64_t next_lsn;
    bool replayed;
    uint64_t verified; /* records up to this LSN passed their CRC in an earlier replay pass */
    waiter *w;
    size_t w_head, w_len, w_cap;
    uint64_t app_seg, app_off; /* where the next append lands (app_seg 0: no segment yet) */
    bool roll_req;             /* tn_store_roll(): the next append starts a segment */
    tn_store_pos last_pos;
    uint64_t (*gate)(void *arg); /* tn_store_set_gate */
    void *gate_arg;
    tn_store_tap_cb tap; /* tn_store_set_tap */
    void *tap_arg;
    struct {
        uint64_t seg;
        int fd;
    } rfd[4]; /* segments open for tn_store_read */
    unsigned rfd_next;

    /* Shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tn_buf pending;
    ref_list prefs; /* bodies of pending records, by offset */
    ref_list done;  /* written or dropped: released by the loop in tn_store_poll() */
    uint64_t pending_first, pending_last;
    roll_pt *rolls; /* where in pending a new segment starts, ascending */
    size_t n_rolls, cap_rolls;
    uint64_t durable;
    uint64_t want;           /* highest LSN a tn_store_when_durable() caller waits for */
    uint64_t written;        /* last LSN written (not necessarily synced) */
    uint64_t wr_seg, wr_off; /* what is on disk: segment being written and its length */
    int error;
    bool room;        /* after an error: the writer found room again; the loop resumes in poll */
    bool sync_failed; /* a failed fdatasync: errors are final until a restart */
    uint64_t drop_before; /* delete segments holding only records below this LSN */
    uint64_t total_bytes; /* all segments */
    bool stop;
    bool started;
    pthread_t thread;
    /* The writer's (its thread, or the loop's with inline_writes) */
    tn_buf wbatch;
    ref_list wbrefs;
    uint64_t last_sync;
};

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void
errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void
seg_name(const tn_store *s, uint64_t first, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%020" PRIu64 ".seg", s->dir, first);
}

int
tn_store_open(const tn_store_conf *conf, tn_store **out, char *err, size_t errlen)
{
    if (tn_mkdirs(conf->dir) != 0) {
        errf(err, errlen, "%s: cannot create: %s", conf->dir, strerror(errno));
        return TN_EIO;
    }
    DIR *d = opendir(conf->dir);
    if (!d) {
        errf(err, errlen, "%s: %s", conf->dir, strerror(errno));
        return TN_EIO;
    }
    tn_store *s = tn_xcalloc(1, sizeof *s);
    s->conf = *conf;
    s->dir = tn_xstrdup(conf->dir);
    s->conf.dir = s->dir;
    if (!s->conf.segment_size)
        s->conf.segment_size = 64u << 20;
    if (!s->conf.max_record)
        s->conf.max_record = 16u << 20;
    s->fd = -1;
    s->next_lsn = conf->first_lsn ? conf->first_lsn : 1;
    for (size_t i = 0; i < sizeof s->rfd / sizeof s->rfd[0]; i++)
        s->rfd[i].fd = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        uint64_t first = strtoull(e->d_name, &end, 10);
        if (end == e->d_name + 20 && strcmp(end, ".seg") == 0 && first > 0) {
            s->segs = tn_xrealloc(s->segs, (s->n_segs + 1) * sizeof *s->segs);
            s->segs[s->n_segs++] = first;
        }
    }
    closedir(d);
    if (s->n_segs > 1)
        qsort(s->segs, s->n_segs, sizeof *s->segs, cmp_u64);
    s->dirfd = open(s->dir, O_RDONLY | O_DIRECTORY);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    tn_buf_init(&s->pending, SIZE_MAX);
    *out = s;
    return 0;
}

/* The CRC of a record: everything after the crc field, padding excluded. CRC-32 as zlib's
 * crc32() and gzip compute it (reflected 0xEDB88320), by ISA-L. */
static uint32_t
record_crc(const uint8_t *rec, uint32_t len)
{
    return crc32_gzip_refl(0, rec + 4, TN_STORE_HEADER - 4 + (uint64_t)len);
}

static uint32_t
rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t
rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* A valid record at off in p[0..size) (any LSN), returning its size in *rec_size. The CRC of
 * a record an earlier pass verified is not computed again (the files do not change between
 * passes: nothing is appended before tn_store_start). */
static bool
valid_at(const tn_store *s, const uint8_t *p, uint64_t size, uint64_t off, uint64_t *rec_size)
{
    if (size - off < TN_STORE_HEADER)
        return false;
    uint32_t len = rd32(p + off + 4);
    if (len > s->conf.max_record || size - off - TN_STORE_HEADER < len)
        return false;
    if (rd64(p + off + 8) > s->verified && rd32(p + off) != record_crc(p + off, len))
        return false;
    *rec_size = PAD8((uint64_t)TN_STORE_HEADER + len);
    return true;
}

/* Whether p[off..size) is all zeros: the unused end of a segment (zero_ahead), not damage. */
static bool
zeros_from(const uint8_t *p, uint64_t size, uint64_t off)
{
    for (uint64_t i = off; i < size; i++)
        if (p[i])
            return false;
    return true;
}

/* The offset of the first valid record after off with an LSN above last, or 0: with one,
 * the damage at off is not just a torn tail, unless it is a hole (never_written). */
static uint64_t
valid_after(const tn_store *s, const uint8_t *p, uint64_t size, uint64_t off, uint64_t last)
{
    uint64_t rs;
    for (uint64_t o = (off + 8) & ~(uint64_t)7; o + TN_STORE_HEADER <= size; o += 8)
        if (valid_at(s, p, size, o, &rs) && rd64(p + o + 8) > last)
            return o;
    return 0;
}

/* Whether [off, end) holds a whole 512-byte disk sector of zeros. The last segment's free space
 * is zeros (zero_ahead), and records are written over it in place: the writes of a batch not yet
 * synced may reach the disk in any order when the power goes, leaving a sector of zeros between
 * records that did arrive. None of them was confirmed (a sync covers every earlier write), so
 * such a hole ends the journal like a torn tail. Damage to synced records (bit rot) does not
 * look like that, and still stops the replay. */
static bool
has_hole(const uint8_t *p, uint64_t off, uint64_t end)
{
    for (uint64_t sec = (off + 511) & ~(uint64_t)511; sec + 512 <= end; sec += 512)
        if (zeros_from(p, sec + 512, sec))
            return true;
    return false;
}

int
tn_store_replay(tn_store *s, tn_store_replay_cb cb, void *arg, char *err, size_t errlen)
{
    tn_assert(!s->started);
    s->replayed = true;
    if (s->fd >= 0) { /* an earlier pass kept the last segment open */
        close(s->fd);
        s->fd = -1;
    }
    uint64_t expected = s->n_segs ? s->segs[0] : s->conf.first_lsn ? s->conf.first_lsn : 1;
    bool salvaged = false;
    int rc = 0;
    s->total_bytes = 0;
    for (size_t i = 0; i < s->n_segs && rc == 0; i++) {
        char path[4200];
        seg_name(s, s->segs[i], path, sizeof path);
        bool last_seg = i + 1 == s->n_segs;
        if (s->segs[i] != expected) {
            if (!s->conf.salvage) {
                errf(err, errlen,
                     "%s: journal gap: expected LSN %" PRIu64 ", segment starts at %" PRIu64
                     " (start with salvage to skip)",
                     path, expected, s->segs[i]);
                return TN_EIO;
            }
            tn_log_error("STORE-SALVAGE", "%s: skipping LSNs %" PRIu64 "..%" PRIu64, path, expected,
                         s->segs[i] - 1);
            salvaged = true;
            expected = s->segs[i];
        }
        int fd = open(path, O_RDWR);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            errf(err, errlen, "%s: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            return TN_EIO;
        }
        uint64_t size = (uint64_t)st.st_size, off = 0, file_end = 0;
        const uint8_t *p = NULL;
        if (size > 0) {
            p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                errf(err, errlen, "%s: mmap: %s", path, strerror(errno));
                close(fd);
                return TN_EIO;
            }
        }
        while (off < size && rc == 0) {
            uint64_t rs = 0;
            if (valid_at(s, p, size, off, &rs) && rd64(p + off + 8) == expected) {
                uint32_t len = rd32(p + off + 4);
                uint16_t type;
                memcpy(&type, p + off + 16, 2);
                rc = cb(arg, expected, type, p + off + TN_STORE_HEADER, len);
                expected++;
                off += rs;
                continue;
            }
            /* A bad record at off. Zeros to the end: the segment's unused end (zero_ahead). */
            if (zeros_from(p, size, off)) {
                if (ftruncate(fd, (off_t)off) == 0) /* kept, they would be harmless */
                    file_end = off;
                size = off;
                break;
            }
            uint64_t next = last_seg ? valid_after(s, p, size, off, expected - 1) : 0;
            if (last_seg && (!next || has_hole(p, off, next))) {
                tn_log_warn("STORE-TORN-TAIL",
                            "%s: cutting a torn or corrupt tail of %" PRIu64
                            " bytes at offset %" PRIu64 " (last good LSN %" PRIu64 ")%s",
                            path, size - off, off, expected - 1,
                            next ? ": unsynced writes that reached the disk out of order" : "");
                if (ftruncate(fd, (off_t)off) != 0 || fsync(fd) != 0) {
                    errf(err, errlen, "%s: cannot cut the torn tail: %s", path, strerror(errno));
                    rc = TN_EIO;
                }
                size = off;
                break;
            }
            if (!s->conf.salvage) {
                errf(err, errlen,
                     "%s: corrupt record at offset %" PRIu64 " (expected LSN %" PRIu64
                     ") with valid records after it; refusing to start (salvage skips it)",
                     path, off, expected);
                rc = TN_EIO;
                break;
            }
            tn_log_error("STORE-SALVAGE", "%s: skipping %" PRIu64 " bytes from offset %" PRIu64,
                         path, size - off, off);
            salvaged = true;
            break;
        }
        if (off > size && rc == 0 && ftruncate(fd, (off_t)off) == 0)
            size = off; /* only the last record's padding was cut: put it back */
        s->total_bytes += size;
        if (p)
            munmap((void *)p, st.st_size);
        if (last_seg && rc == 0) {
            s->fd = fd; /* appends continue here */
            s->w_seg = s->segs[i];
            s->seg_bytes = size;
            s->zeroed = file_end > size ? file_end : size;
            s->no_zeros = false;
        } else {
            close(fd);
        }
    }
    s->next_lsn = expected;
    s->durable = s->written = expected - 1;
    if (rc == 0 && !salvaged)
        s->verified = expected - 1;
    s->wr_seg = s->app_seg = s->w_seg;
    s->wr_off = s->app_off = s->seg_bytes;
    return rc;
}

/* Creates the segment whose first record is first, and makes its name durable. */
static int
new_segment(tn_store *s, uint64_t first)
{
    char path[4200];
    seg_name(s, first, path, sizeof path);
    if (s->fd >= 0 && s->zeroed > s->seg_bytes) {
        /* The segment ends with its last record (its zeros go before the next one exists). */
        if (ftruncate(s->fd, (off_t)s->seg_bytes) != 0 || fdatasync(s->fd) != 0)
            return TN_EIO;
        s->zeroed = s->seg_bytes;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return TN_EIO;
    if (s->dirfd >= 0 && fsync(s->dirfd) != 0) {
        close(fd);
        return TN_EIO;
    }
    if (s->fd >= 0) {
        fdatasync(s->fd);
        close(s->fd);
    }
    s->fd = fd;
    s->w_seg = first;
    s->seg_bytes = 0;
    s->zeroed = 0;
    s->no_zeros = false;
    pthread_mutex_lock(&s->mu);
    s->segs = tn_xrealloc(s->segs, (s->n_segs + 1) * sizeof *s->segs);
    s->segs[s->n_segs++] = first;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Deletes the segments whose records all have LSNs below lsn (writer thread). */
static void
drop_segments(tn_store *s, uint64_t lsn)
{
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    while (n + 1 < s->n_segs && s->segs[n + 1] <= lsn)
        n++;
    uint64_t *gone = tn_xmalloc((n ? n : 1) * sizeof *gone);
    memcpy(gone, s->segs, n * sizeof *gone);
    pthread_mutex_unlock(&s->mu);
    size_t done = 0;
    for (; done < n; done++) {
        char path[4200];
        struct stat st;
        seg_name(s, gone[done], path, sizeof path);
        uint64_t size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
        if (unlink(path) != 0)
            break;
        pthread_mutex_lock(&s->mu);
        s->total_bytes -= size < s->total_bytes ? size : s->total_bytes;
        pthread_mutex_unlock(&s->mu);
    }
    if (done && s->dirfd >= 0)
        fsync(s->dirfd);
    pthread_mutex_lock(&s->mu);
    memmove(s->segs, s->segs + done, (s->n_segs - done) * sizeof *s->segs);
    s->n_segs -= done;
    pthread_mutex_unlock(&s->mu);
    if (done)
        tn_log_info("STORE-COMPACTED", "%s: deleted %zu segments below LSN %" PRIu64, s->dir, done,
                    lsn);
    free(gone);
}

static int
write_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return TN_EIO;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* Writes the batch with the bodies its refs point to in place, at off. */
static int
write_batch(int fd, const tn_buf *batch, const ref_list *refs, uint64_t off)
{
    if (refs->n == 0)
        return write_all(fd, batch->data, batch->len, off);
    enum { MAX_IOV = 512 };
    struct iovec iov[MAX_IOV];
    size_t pos = 0, i = 0;
    while (pos < batch->len || i < refs->n) {
        int k = 0;
        size_t bytes = 0;
        while (k + 2 <= MAX_IOV && (pos < batch->len || i < refs->n)) {
            size_t upto = i < refs->n ? (size_t)refs->v[i].off : batch->len;
            if (upto > pos) {
                iov[k++] = (struct iovec){batch->data + pos, upto - pos};
                bytes += upto - pos;
                pos = upto;
            }
            if (i < refs->n) {
                iov[k++] = (struct iovec){(void *)refs->v[i].p, refs->v[i].n};
                bytes += refs->v[i].n;
                i++;
            }
        }
        struct iovec *v = iov;
        while (bytes > 0) {
            ssize_t w = pwritev(fd, v, k, (off_t)off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return TN_EIO;
            bytes -= (size_t)w;
            off += (uint64_t)w;
            while (k > 0 && (size_t)w >= v->iov_len) {
                w -= (ssize_t)v->iov_len;
                v++;
                k--;
            }
            if (k > 0) {
                v->iov_base = (uint8_t *)v->iov_base + w;
                v->iov_len -= (size_t)w;
            }
        }
    }
    return 0;
}

static uint64_t
refs_bytes(const ref_list *l)
{
    uint64_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        n += l->v[i].n;
    return n;
}

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* After a failed write: is there room again? (fallocate a probe, then give it back.) */
static bool
space_again(tn_store *s)
{
    if (s->fd < 0)
        return true;
    if (posix_fallocate(s->fd, (off_t)s->seg_bytes, PROBE_BYTES) != 0)
        return false;
    s->zeroed = s->seg_bytes;
    return ftruncate(s->fd, (off_t)s->seg_bytes) == 0;
}

/* With sync always, the segment being written is kept ZERO_AHEAD bytes longer than its records,
 * in zeros actually written: a record then overwrites blocks the file already has, and its
 * fdatasync flushes only data. An append that grows the file also has the filesystem commit the
 * new size in its journal (ext4 here: 110-130 us per fdatasync instead of 75-85 us, and 155 vs
 * 100 us with a pair's two journals syncing on one disk). One sync in ZERO_AHEAD * 3/4 bytes of
 * records pays for the zeros and the size. Replay and cursors take a header of zeros for the
 * segment's end; a segment is cut to its records when the next one starts. */
#define ZERO_AHEAD (1u << 20)

static void
zero_ahead(tn_store *s)
{
    if (s->conf.sync != TN_SYNC_ALWAYS || s->no_zeros || s->seg_bytes + ZERO_AHEAD / 4 <= s->zeroed)
        return;
    static const uint8_t zeros[64 << 10];
    uint64_t from = s->zeroed > s->seg_bytes ? s->zeroed : s->seg_bytes;
    uint64_t to = s->seg_bytes + ZERO_AHEAD;
    if (to > s->conf.segment_size && s->conf.segment_size > s->seg_bytes)
        to = s->conf.segment_size; /* the segment ends about there */
    if (to <= from)
        return;
    while (from < to) {
        size_t n = to - from < sizeof zeros ? (size_t)(to - from) : sizeof zeros;
        if (write_all(s->fd, zeros, n, from) != 0) {
            /* No room for the zeros: the records go on without them in this segment. */
            s->no_zeros = true;
            if (ftruncate(s->fd, (off_t)s->seg_bytes) == 0)
                from = s->seg_bytes;
            break;
        }
        from += n;
    }
    s->zeroed = from;
}

static void
notify(tn_store *s)
{
    if (!s->conf.inline_writes)
        s->conf.notify(s->conf.notify_arg);
}

/* The writer: takes what is pending, writes it, syncs it, until stopped. once (inline_writes:
 * the caller's thread, from tn_store_flush): returns when nothing is left to do instead of
 * waiting for more. */
static void
write_pending(tn_store *s, bool once)
{
    tn_buf *batch = &s->wbatch;
    ref_list *brefs = &s->wbrefs;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->pending.len == 0 && !s->stop && !s->drop_before) {
            if (s->unsynced && s->conf.sync == TN_SYNC_ALWAYS && s->want > s->durable &&
                !s->error) {
                /* Someone waits for records written without a sync (nobody waited when they
                 * were written): sync them now. */
                uint64_t upto = s->written;
                pthread_mutex_unlock(&s->mu);
                int rc = fdatasync(s->fd) == 0 ? 0 : TN_EIO;
                s->last_sync = now_ms();
                pthread_mutex_lock(&s->mu);
                s->unsynced = false;
                if (rc == 0) {
                    s->durable = upto;
                } else {
                    s->sync_failed = true; /* as below: no resuming */
                    tn_log_error("STORE-WRITE-FAIL", "%s: cannot sync: %s", s->dir,
                                 strerror(errno));
                    s->error = TN_EIO;
                    s->pending.len = 0;
                    s->n_rolls = 0;
                }
                notify(s);
                continue;
            }
            if (once) {
                if (s->error && !s->room && !s->sync_failed && space_again(s))
                    s->room = true; /* the loop resumes appends from tn_store_poll() */
                pthread_mutex_unlock(&s->mu);
                return;
            }
            bool timed = (s->unsynced && s->conf.sync != TN_SYNC_NEVER) || (s->error && !s->room);
            if (!timed) {
                pthread_cond_wait(&s->cv, &s->mu);
                continue;
            }
            uint32_t wait_ms = s->error                           ? 1000
                               : s->conf.sync == TN_SYNC_INTERVAL ? s->conf.interval_ms
                                                                  : IDLE_SYNC_MS;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += wait_ms / 1000;
            ts.tv_nsec += (long)(wait_ms % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            pthread_mutex_unlock(&s->mu);
            uint64_t upto = s->written;
            if (s->unsynced &&
                now_ms() - s->last_sync >=
                    (s->conf.sync == TN_SYNC_INTERVAL ? s->conf.interval_ms : IDLE_SYNC_MS)) {
                bool ok = fdatasync(s->fd) == 0;
                s->last_sync = now_ms();
                pthread_mutex_lock(&s->mu);
                s->unsynced = false;
                if (ok && s->conf.sync == TN_SYNC_ALWAYS && s->durable < upto) {
                    s->durable = upto;
                    notify(s);
                }
                pthread_mutex_unlock(&s->mu);
            }
            bool recovered = s->error && !s->room && !s->sync_failed && space_again(s);
            pthread_mutex_lock(&s->mu);
            if (recovered) {
                s->room = true; /* the loop resumes appends from tn_store_poll() */
                notify(s);
            }
        }
        if (s->drop_before) {
            uint64_t lsn = s->drop_before;
            s->drop_before = 0;
            pthread_mutex_unlock(&s->mu);
            drop_segments(s, lsn);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (s->pending.len == 0 && s->stop) {
            if (s->unsynced && !s->error) {
                /* Written without a sync (nobody waited then): synced before stopping, so
                 * whoever waits now is answered. */
                uint64_t upto = s->written;
                pthread_mutex_unlock(&s->mu);
                bool ok = fdatasync(s->fd) == 0;
                pthread_mutex_lock(&s->mu);
                s->unsynced = false;
                if (ok && s->durable < upto)
                    s->durable = upto;
            }
            break;
        }
        /* Take everything pending (group commit), up to where the next segment starts: a batch
         * is written to one segment. */
        bool roll = false;
        bool need_sync = s->want > s->durable || s->stop;
        if (s->n_rolls && s->rolls[0].off == 0) {
            roll = true;
            memmove(s->rolls, s->rolls + 1, --s->n_rolls * sizeof *s->rolls);
        }
        uint64_t first = s->pending_first, last = s->pending_last;
        if (s->n_rolls) {
            size_t cut = (size_t)s->rolls[0].off;
            last = s->rolls[0].lsn - 1;
            batch->len = 0;
            tn_assert(tn_buf_append(batch, s->pending.data, cut) == 0);
            memmove(s->pending.data, s->pending.data + cut, s->pending.len - cut);
            s->pending.len -= cut;
            s->pending_first = s->rolls[0].lsn;
            for (size_t i = 0; i < s->n_rolls; i++)
                s->rolls[i].off -= cut;
            /* Refs are in offset order; those up to the cut go now (a body that ends its record
             * without padding sits right at the cut, before the next segment's first record). */
            size_t k = 0;
            while (k < s->prefs.n && s->prefs.v[k].off <= cut)
                refs_push(brefs, s->prefs.v[k++]);
            for (size_t i = k; i < s->prefs.n; i++) {
                s->prefs.v[i - k] = s->prefs.v[i];
                s->prefs.v[i - k].off -= cut;
            }
            s->prefs.n -= k;
        } else {
            tn_buf tmp = *batch;
            *batch = s->pending;
            s->pending = tmp;
            s->pending.len = 0;
            ref_list rt = *brefs;
            *brefs = s->prefs;
            s->prefs = rt;
        }
        pthread_mutex_unlock(&s->mu);

        int rc = 0;
        if (s->fd < 0 || roll)
            rc = new_segment(s, first);
        uint64_t batch_bytes = batch->len + refs_bytes(brefs);
        if (rc == 0)
            rc = write_batch(s->fd, batch, brefs, s->seg_bytes);
        bool unsynced = true;
        if (rc == 0) {
            s->seg_bytes += batch_bytes;
            zero_ahead(s);
            if (s->conf.notify_written) {
                /* Readable now (tn_store_cursor_read): a standby gets these records while our
                 * own sync runs. */
                pthread_mutex_lock(&s->mu);
                s->written = last;
                notify(s);
                pthread_mutex_unlock(&s->mu);
            }
            /* sync always, but nobody waits for these records (acks, say): the next sync that
             * someone waits for covers them, or the idle sync IDLE_SYNC_MS later. */
            if (s->conf.sync == TN_SYNC_ALWAYS && need_sync) {
                rc = fdatasync(s->fd) == 0 ? 0 : TN_EIO;
                s->last_sync = now_ms();
                unsynced = false;
                /* What a failed sync left on disk is unknown (and its records stay in the
                 * file, where reusing their LSNs would put two records under one LSN): no
                 * resuming until a restart, whose replay decides what the journal holds. */
                if (rc != 0)
                    s->sync_failed = true;
            }
        }
        if (rc != 0 && s->fd >= 0) {
            /* Nothing half-written stays behind: the journal ends at the last good record. */
            int e = errno;
            if (ftruncate(s->fd, (off_t)s->seg_bytes) != 0)
                (void)0;
            s->zeroed = s->seg_bytes;
            tn_log_error("STORE-WRITE-FAIL",
                         "%s: cannot write records %" PRIu64 "..%" PRIu64 ": %s; persistent "
                         "publishes are refused until it works again",
                         s->dir, first, last, strerror(e));
        }
        uint64_t written = rc == 0 ? batch_bytes : 0;
        batch->len = 0;
        if (batch->cap > KEEP_BATCH)
            tn_buf_reset(batch);
        pthread_mutex_lock(&s->mu);
        refs_move(&s->done, brefs); /* their bodies are written (or failed): release them */
        s->wr_seg = s->w_seg;
        s->wr_off = s->seg_bytes;
        s->unsynced = unsynced;
        if (rc == 0) {
            s->written = last;
            if (s->conf.sync != TN_SYNC_ALWAYS || !s->unsynced)
                s->durable = last;
            s->total_bytes += written;
        } else {
            /* Records after the failed batch must not be written either (they would leave a
             * gap): drop them; their LSNs are handed out again once writing resumes. */
            s->error = TN_EIO;
            s->pending.len = 0;
            refs_move(&s->done, &s->prefs);
            s->n_rolls = 0;
        }
        notify(s);
    }
    pthread_mutex_unlock(&s->mu);
}

static void
writer_done(tn_store *s)
{
    if (s->fd >= 0 && s->zeroed > s->seg_bytes && !s->error &&
        ftruncate(s->fd, (off_t)s->seg_bytes) == 0)
        s->zeroed = s->seg_bytes; /* a clean stop leaves the segment ending with its records */
    if (s->fd >= 0 && s->conf.sync != TN_SYNC_NEVER)
        fdatasync(s->fd);
    tn_buf_fini(&s->wbatch);
    free(s->wbrefs.v);
    s->wbrefs = (ref_list){0};
}

static void *
writer(void *arg)
{
    tn_store *s = arg;
    write_pending(s, false);
    writer_done(s);
    return NULL;
}

void
tn_store_flush(tn_store *s)
{
    tn_assert(s->conf.inline_writes && s->started);
    write_pending(s, true);
}

int
tn_store_start(tn_store *s)
{
    tn_assert(!s->started);
    s->replayed = true;
    s->durable = s->written = s->next_lsn - 1;
    tn_buf_init(&s->wbatch, SIZE_MAX);
    s->last_sync = now_ms();
    if (!s->conf.inline_writes && pthread_create(&s->thread, NULL, writer, s) != 0)
        return TN_EIO;
    s->started = true;
    return 0;
}

/* Appends a record of head[0..hlen) and body[0..blen): the body is copied, or, with release,
 * written from where it is. */
static int
append(tn_store *s, uint16_t type, const void *head, uint32_t hlen, const void *body, uint32_t blen,
       void (*release)(void *owner), void *owner, uint64_t *lsn)
{
    uint64_t len64 = (uint64_t)hlen + blen;
    if (len64 > s->conf.max_record)
        return TN_ETOOBIG;
    uint32_t len = (uint32_t)len64;
    pthread_mutex_lock(&s->mu);
    int err = s->error;
    if (err) {
        pthread_mutex_unlock(&s->mu);
        return err;
    }
    uint64_t size = PAD8((uint64_t)TN_STORE_HEADER + len);
    uint64_t n = s->next_lsn++;
    if (s->app_seg == 0 || ((s->roll_req || s->app_off >= s->conf.segment_size) && s->app_off)) {
        /* This record starts a segment: segments are cut here, on the loop thread, so every
         * record's position is known as soon as it is appended. */
        if (s->n_rolls == s->cap_rolls) {
            s->cap_rolls = s->cap_rolls ? 2 * s->cap_rolls : 4;
            s->rolls = tn_xrealloc(s->rolls, s->cap_rolls * sizeof *s->rolls);
        }
        s->rolls[s->n_rolls++] = (roll_pt){s->pending.len, n};
        s->app_seg = n;
        s->app_off = 0;
    }
    s->roll_req = false;
    s->last_pos = (tn_store_pos){s->app_seg, (uint32_t)s->app_off, (uint32_t)size};
    s->app_off += size;
    uint64_t in_pending = release ? size - blen : size; /* a ref's body is not copied */
    uint8_t *r = tn_buf_reserve(&s->pending, in_pending);
    tn_assert(r);
    uint16_t zero = 0;
    memcpy(r + 4, &len, 4);
    memcpy(r + 8, &n, 8);
    memcpy(r + 16, &type, 2);
    memcpy(r + 18, &zero, 2);
    if (hlen)
        memcpy(r + TN_STORE_HEADER, head, hlen);
    uint32_t crc = crc32_gzip_refl(0, r + 4, TN_STORE_HEADER - 4 + (uint64_t)hlen);
    if (blen)
        crc = crc32_gzip_refl(crc, body, blen);
    memcpy(r, &crc, 4);
    uint8_t *tail = r + TN_STORE_HEADER + hlen; /* the body (unless a ref), then padding */
    if (release) {
        refs_push(&s->prefs,
                  (store_ref){s->pending.len + TN_STORE_HEADER + hlen, body, blen, release, owner});
    } else {
        if (blen)
            memcpy(tail, body, blen);
        tail += blen;
    }
    memset(tail, 0, size - TN_STORE_HEADER - len);
    if (s->tap)
        s->tap(s->tap_arg, n, release ? NULL : r, (size_t)size, &s->last_pos);
    tn_buf_commit(&s->pending, in_pending);
    if (s->pending.len == in_pending)
        s->pending_first = n;
    s->pending_last = n;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    *lsn = n;
    return 0;
}

int
tn_store_append(tn_store *s, uint16_t type, const void *p, uint32_t len, uint64_t *lsn)
{
    return append(s, type, p, len, NULL, 0, NULL, NULL, lsn);
}

int
tn_store_append_ref(tn_store *s, uint16_t type, const void *head, uint32_t hlen, const void *body,
                    uint32_t blen, void (*release)(void *owner), void *owner, uint64_t *lsn)
{
    tn_assert(release);
    return append(s, type, head, hlen, body, blen, release, owner, lsn);
}

void
tn_store_when_durable(tn_store *s, uint64_t lsn, tn_store_done_cb cb, void *arg)
{
    if (s->w_len == s->w_cap) {
        size_t cap = s->w_cap ? s->w_cap * 2 : 64;
        waiter *w = tn_xmalloc(cap * sizeof *w);
        for (size_t i = 0; i < s->w_len; i++)
            w[i] = s->w[(s->w_head + i) % s->w_cap];
        free(s->w);
        s->w = w;
        s->w_cap = cap;
        s->w_head = 0;
    }
    s->w[(s->w_head + s->w_len++) % s->w_cap] = (waiter){lsn, cb, arg};
    pthread_mutex_lock(&s->mu);
    if (lsn > s->want) {
        s->want = lsn;
        if (lsn > s->durable && s->unsynced)
            pthread_cond_signal(&s->cv); /* written without a sync: the writer syncs now */
    }
    pthread_mutex_unlock(&s->mu);
}

/* Releases the bodies the writer is done with (loop thread). */
static void
release_done(tn_store *s)
{
    pthread_mutex_lock(&s->mu);
    ref_list done = s->done;
    s->done = (ref_list){0};
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < done.n; i++)
        done.v[i].release(done.v[i].owner);
    free(done.v);
}

void
tn_store_poll(tn_store *s)
{
    release_done(s);
    pthread_mutex_lock(&s->mu);
    uint64_t durable = s->durable;
    int error = s->error;
    bool resume = error && s->room;
    pthread_mutex_unlock(&s->mu);
    if (s->gate) {
        uint64_t g = s->gate(s->gate_arg);
        if (g < durable)
            durable = g;
    }
    /* In LSN order: durable ones succeed; after a write error, all others fail. */
    while (s->w_len) {
        waiter *w = &s->w[s->w_head];
        int status = 0;
        if (w->lsn > durable) {
            if (!error)
                break;
            status = error;
        }
        waiter done = *w;
        s->w_head = (s->w_head + 1) % s->w_cap;
        s->w_len--;
        done.cb(done.arg, status);
    }
    if (resume) {
        /* Every waiter of a dropped record has been failed above: its LSN may be used again. */
        pthread_mutex_lock(&s->mu);
        s->next_lsn = s->durable + 1;
        s->app_seg = s->wr_seg;
        s->app_off = s->wr_off;
        s->error = 0;
        s->room = false;
        pthread_mutex_unlock(&s->mu);
        tn_log_warn("STORE-RECOVERED", "%s: writing again from LSN %llu", s->dir,
                    (unsigned long long)(durable + 1));
    }
}

uint64_t
tn_store_last_lsn(tn_store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->next_lsn - 1;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void
tn_store_set_tap(tn_store *s, tn_store_tap_cb tap, void *arg)
{
    s->tap = tap;
    s->tap_arg = arg;
}

void
tn_store_set_gate(tn_store *s, uint64_t (*gate)(void *arg), void *arg)
{
    s->gate = gate;
    s->gate_arg = arg;
}

uint64_t
tn_store_written_lsn(tn_store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t w = s->written;
    pthread_mutex_unlock(&s->mu);
    return w;
}

uint64_t
tn_store_durable_lsn(tn_store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t d = s->durable;
    pthread_mutex_unlock(&s->mu);
    if (s->gate) {
        uint64_t g = s->gate(s->gate_arg);
        if (g < d)
            d = g;
    }
    return d;
}

int
tn_store_error(tn_store *s)
{
    pthread_mutex_lock(&s->mu);
    int e = s->error;
    pthread_mutex_unlock(&s->mu);
    return e;
}

void
tn_store_roll(tn_store *s)
{
    s->roll_req = true;
}

void
tn_store_last_pos(tn_store *s, tn_store_pos *pos)
{
    *pos = s->last_pos;
}

/* A read descriptor for the segment starting at seg (a few are kept open). */
static int
read_fd(tn_store *s, uint64_t seg)
{
    const unsigned n = sizeof s->rfd / sizeof s->rfd[0];
    for (unsigned i = 0; i < n; i++)
        if (s->rfd[i].fd >= 0 && s->rfd[i].seg == seg)
            return s->rfd[i].fd;
    char path[4200];
    seg_name(s, seg, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    unsigned i = s->rfd_next++ % n;
    if (s->rfd[i].fd >= 0)
        close(s->rfd[i].fd);
    s->rfd[i].seg = seg;
    s->rfd[i].fd = fd;
    return fd;
}

static int
read_full(int fd, uint8_t *p, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, p + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return TN_ENOENT;
        got += (size_t)r;
    }
    return 0;
}

int
tn_store_read_split(tn_store *s, const tn_store_pos *pos, uint32_t prefix, tn_buf *out,
                    uint16_t *type, tn_store_place_cb place, void *arg)
{
    if (pos->size < TN_STORE_HEADER ||
        pos->size > PAD8((uint64_t)TN_STORE_HEADER + s->conf.max_record))
        return TN_ENOENT;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        bool written = pos->seg < s->wr_seg ||
                       (pos->seg == s->wr_seg && (uint64_t)pos->off + pos->size <= s->wr_off);
        pthread_mutex_unlock(&s->mu);
        if (!written)
            return TN_EAGAIN;
    }
    int fd = read_fd(s, pos->seg);
    if (fd < 0)
        return TN_ENOENT;
    /* The header and the prefix (all of a small record) into out. */
    uint64_t first = pos->size;
    if (place && (uint64_t)TN_STORE_HEADER + prefix < first)
        first = TN_STORE_HEADER + prefix;
    out->len = 0;
    uint8_t *p = tn_buf_reserve(out, first);
    if (!p)
        return TN_ENOMEM;
    if (read_full(fd, p, first, pos->off) != 0)
        return TN_ENOENT;
    uint32_t len = rd32(p + 4);
    if (PAD8((uint64_t)TN_STORE_HEADER + len) != pos->size)
        return TN_ENOENT;
    memcpy(type, p + 16, 2);
    if (first == pos->size) {
        if (rd32(p) != record_crc(p, len))
            return TN_ENOENT;
        memmove(p, p + TN_STORE_HEADER, len);
        out->len = len;
        return 0;
    }
    /* A large record: the rest straight where the caller wants it. */
    uint32_t have = (uint32_t)(first - TN_STORE_HEADER);
    uint32_t crc = crc32_gzip_refl(0, p + 4, first - 4);
    uint32_t want = rd32(p);
    uint8_t *dst = place(arg, p + TN_STORE_HEADER, have, len);
    if (!dst)
        return TN_ENOMEM;
    if (read_full(fd, dst, len - have, pos->off + first) != 0)
        return TN_ENOENT;
    if (crc32_gzip_refl(crc, dst, len - have) != want)
        return TN_ENOENT;
    out->len = 0;
    return 0;
}

int
tn_store_read(tn_store *s, const tn_store_pos *pos, tn_buf *out, uint16_t *type)
{
    return tn_store_read_split(s, pos, 0, out, type, NULL, NULL);
}

void
tn_store_drop_before(tn_store *s, uint64_t lsn)
{
    pthread_mutex_lock(&s->mu);
    s->drop_before = lsn;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

uint64_t
tn_store_first_segment(tn_store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t first = s->n_segs ? s->segs[0] : 0;
    pthread_mutex_unlock(&s->mu);
    return first;
}

uint64_t
tn_store_bytes(tn_store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->total_bytes;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- reading in order (a pair's active shipping its journal) ---- */

struct tn_store_cursor {
    tn_store *s;
    int fd;
    uint64_t seg;  /* the first LSN of fd's segment */
    uint64_t off;  /* of the next record in fd's segment */
    uint64_t next; /* its LSN */
};

/* Opens the segment that starts at first (the cursor has reached its end). */
static int
cursor_segment(tn_store_cursor *c, uint64_t first)
{
    char path[4200];
    seg_name(c->s, first, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return TN_ENOENT;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = fd;
    c->seg = first;
    c->off = 0;
    return 0;
}

int
tn_store_cursor_open(tn_store *s, uint64_t lsn, tn_store_cursor **out)
{
    if (lsn > tn_store_last_lsn(s) + 1)
        return TN_ENOENT;
    /* The segment holding lsn: the newest one that starts at or before it (segments are
     * listed now, not at open: compaction and rolls change them). */
    DIR *d = opendir(s->dir);
    if (!d)
        return TN_EIO;
    uint64_t best = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        uint64_t first = strtoull(e->d_name, &end, 10);
        if (end == e->d_name + 20 && strcmp(end, ".seg") == 0 && first <= lsn && first > best)
            best = first;
    }
    closedir(d);
    tn_store_cursor *c = tn_xcalloc(1, sizeof *c);
    c->s = s;
    c->fd = -1;
    c->next = best;
    if (best == 0) {
        /* No segment at or before lsn: fine only for an empty journal read from its start. */
        if (lsn != tn_store_last_lsn(s) + 1 || tn_store_written_lsn(s) >= lsn) {
            free(c);
            return TN_ENOENT;
        }
        c->next = lsn;
        *out = c;
        return 0;
    }
    if (cursor_segment(c, best) != 0) {
        free(c);
        return TN_ENOENT;
    }
    /* Walk the headers up to lsn, reading the segment a large piece at a time: this runs on the
     * loop thread, and a read per record (a segment holds hundreds of thousands) stalled it for
     * most of a second, long enough for a new active to miss its lease renewals. */
    enum { WALK_CHUNK = 1 << 20 };
    uint8_t *buf = tn_xmalloc(WALK_CHUNK);
    uint64_t base = 0; /* file offset of buf[0] */
    size_t have = 0;
    int rc = 0;
    while (c->next < lsn) {
        if (c->off < base || c->off + TN_STORE_HEADER > base + have) {
            base = c->off;
            ssize_t r = pread(c->fd, buf, WALK_CHUNK, (off_t)base);
            have = r > 0 ? (size_t)r : 0;
            if (have < TN_STORE_HEADER) {
                rc = TN_ENOENT;
                break;
            }
        }
        const uint8_t *h = buf + (c->off - base);
        if (rd64(h + 8) != c->next) {
            rc = TN_ENOENT;
            break;
        }
        c->off += PAD8((uint64_t)TN_STORE_HEADER + rd32(h + 4));
        c->next++;
    }
    free(buf);
    if (rc != 0) {
        tn_store_cursor_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

int
tn_store_cursor_open_at(tn_store *s, const tn_store_pos *pos, uint64_t lsn, tn_store_cursor **out)
{
    tn_store_cursor *c = tn_xcalloc(1, sizeof *c);
    c->s = s;
    c->fd = -1;
    c->next = lsn;
    if (cursor_segment(c, pos->seg) != 0) {
        free(c);
        return TN_ENOENT;
    }
    c->off = pos->off;
    *out = c;
    return 0;
}

void
tn_store_cursor_pos(const tn_store_cursor *c, tn_store_pos *pos)
{
    *pos = (tn_store_pos){c->seg, (uint32_t)c->off, 0};
}

int
tn_store_cursor_read(tn_store_cursor *c, tn_buf *out, size_t max, uint64_t upto, uint64_t *next)
{
    uint64_t written = tn_store_written_lsn(c->s);
    if (upto < written)
        written = upto;
    int n = 0;
    size_t got = 0;
    while (c->next <= written && (got < max || n == 0)) {
        if (c->fd < 0 && cursor_segment(c, c->next) != 0)
            return TN_EIO;
        size_t want = max > got ? max - got : TN_STORE_HEADER;
        if (want < TN_STORE_HEADER)
            want = TN_STORE_HEADER;
        uint8_t *p = tn_buf_reserve(out, want);
        if (!p)
            return TN_ENOMEM;
        ssize_t r = pread(c->fd, p, want, (off_t)c->off);
        if (r < 0)
            return TN_EIO;
        size_t i = 0, len = (size_t)r;
        bool end = false;
        while (i + TN_STORE_HEADER <= len && c->next <= written) {
            if (rd64(p + i + 8) == 0 && rd32(p + i + 4) == 0) {
                end = true; /* zeros: the segment's unused end (zero_ahead) */
                break;
            }
            if (rd64(p + i + 8) != c->next)
                return TN_EIO;
            uint64_t size = PAD8((uint64_t)TN_STORE_HEADER + rd32(p + i + 4));
            if (i + size > len)
                break;
            i += (size_t)size;
            c->next++;
            n++;
        }
        if (i == 0) {
            if (len >= TN_STORE_HEADER && !end) {
                /* One record larger than what was read: read it whole. */
                uint64_t size = PAD8((uint64_t)TN_STORE_HEADER + rd32(p + 4));
                if (size > SIZE_MAX / 2)
                    return TN_EIO;
                p = tn_buf_reserve(out, (size_t)size);
                if (!p)
                    return TN_ENOMEM;
                if (read_full(c->fd, p, (size_t)size, c->off) != 0)
                    return TN_EIO;
                i = (size_t)size;
                c->next++;
                n++;
            } else {
                /* The end of this segment: the next record starts the next one. */
                if (cursor_segment(c, c->next) != 0)
                    return TN_EIO;
                continue;
            }
        }
        tn_buf_commit(out, i);
        c->off += i;
        got += i;
    }
    *next = c->next;
    return n;
}

void
tn_store_cursor_close(tn_store_cursor *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

int
tn_store_wipe(const char *dir, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return 0;
        errf(err, errlen, "%s: %s", dir, strerror(errno));
        return TN_EIO;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        strtoull(e->d_name, &end, 10);
        if (end == e->d_name + 20 && strcmp(end, ".seg") == 0 &&
            unlinkat(dirfd(d), e->d_name, 0) != 0) {
            errf(err, errlen, "%s/%s: %s", dir, e->d_name, strerror(errno));
            rc = TN_EIO;
        }
    }
    if (rc == 0 && fsync(dirfd(d)) != 0) {
        errf(err, errlen, "%s: fsync: %s", dir, strerror(errno));
        rc = TN_EIO;
    }
    closedir(d);
    return rc;
}

int
tn_store_record_check(const uint8_t *p, size_t n, uint32_t max_record, uint64_t *lsn,
                      uint16_t *type, const uint8_t **payload, uint32_t *len, size_t *size)
{
    if (n < TN_STORE_HEADER)
        return TN_EAGAIN;
    uint32_t l = rd32(p + 4);
    if (l > max_record)
        return TN_EPROTO;
    uint64_t sz = PAD8((uint64_t)TN_STORE_HEADER + l);
    if (n < sz)
        return TN_EAGAIN;
    if (rd32(p) != record_crc(p, l))
        return TN_EPROTO;
    *lsn = rd64(p + 8);
    memcpy(type, p + 16, 2);
    *payload = p + TN_STORE_HEADER;
    *len = l;
    *size = (size_t)sz;
    return 0;
}

void
tn_store_close(tn_store *s)
{
    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        if (s->conf.inline_writes) {
            write_pending(s, false); /* stop set: returns once all is written */
            writer_done(s);
        } else {
            pthread_join(s->thread, NULL);
        }
    }
    tn_store_poll(s);
    /* Waiters for records the writer did not get to sync before it stopped: told so (their
     * owners are gone by now; this frees what they left). */
    while (s->w_len) {
        waiter done = s->w[s->w_head];
        s->w_head = (s->w_head + 1) % s->w_cap;
        s->w_len--;
        done.cb(done.arg, TN_ECLOSED);
    }
    refs_move(&s->done, &s->prefs); /* never written (not started) */
    release_done(s);
    free(s->prefs.v);
    if (s->fd >= 0)
        close(s->fd);
    if (s->dirfd >= 0)
        close(s->dirfd);
    for (size_t i = 0; i < sizeof s->rfd / sizeof s->rfd[0]; i++)
        if (s->rfd[i].fd >= 0)
            close(s->rfd[i].fd);
    free(s->rolls);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    tn_buf_fini(&s->pending);
    free(s->w);
    free(s->segs);
    free(s->dir);
    free(s);
}
