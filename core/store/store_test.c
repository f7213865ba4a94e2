#include "core/store/store.h"

#include "core/base/base.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The writer thread's notify() writes a byte to a pipe; tests wait on it (never sleep). */
static int wake[2];

static void
notify(void *arg)
{
    (void)arg;
    (void)!write(wake[1], "x", 1);
}

static bool
wait_notify(int ms)
{
    struct pollfd p = {.fd = wake[0], .events = POLLIN};
    if (poll(&p, 1, ms) != 1)
        return false;
    char buf[256];
    (void)!read(wake[0], buf, sizeof buf);
    return true;
}

static char dir[128];

static void
fresh_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/tern-store-test-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
}

static void
rm_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

static tn_store *
open_store(uint64_t seg_size, bool salvage, tn_sync_policy sync, char *err)
{
    tn_store_conf c = {.dir = dir,
                       .sync = sync,
                       .interval_ms = 5,
                       .segment_size = seg_size,
                       .max_record = 1 << 20,
                       .salvage = salvage,
                       .notify = notify};
    tn_store *s = NULL;
    CU_ASSERT_EQUAL_FATAL(tn_store_open(&c, &s, err, 256), 0);
    return s;
}

/* Replay collects records here. */
typedef struct seen {
    uint64_t first, last;
    int n;
    bool ok; /* payloads as written by put() */
} seen;

static int
collect(void *arg, uint64_t lsn, uint16_t type, const uint8_t *p, uint32_t len)
{
    seen *s = arg;
    if (s->n == 0)
        s->first = lsn;
    s->last = lsn;
    s->n++;
    /* put() writes type = lsn % 7, len = lsn % 50, bytes = (lsn + i) & 0xff */
    if (type != lsn % 7 || len != lsn % 50)
        s->ok = false;
    for (uint32_t i = 0; i < len; i++)
        if (p[i] != (uint8_t)(lsn + i))
            s->ok = false;
    return 0;
}

/* collect() for records 1..150 as put() writes them, then the 300,000-byte record 151. */
static int
collect_upto_150(void *arg, uint64_t lsn, uint16_t type, const uint8_t *p, uint32_t len)
{
    if (lsn <= 150)
        return collect(arg, lsn, type, p, len);
    seen *s = arg;
    s->last = lsn;
    s->n++;
    if (type != 9 || len != 300000 || p[0] != 0xab || p[len - 1] != 0xab)
        s->ok = false;
    return 0;
}

/* Appends the record replay's collect() expects for the next LSN. */
static int
try_put(tn_store *s, uint64_t *lsn)
{
    uint64_t want = tn_store_last_lsn(s) + 1;
    uint8_t buf[64];
    for (uint32_t i = 0; i < want % 50; i++)
        buf[i] = (uint8_t)(want + i);
    int rc = tn_store_append(s, (uint16_t)(want % 7), buf, (uint32_t)(want % 50), lsn);
    if (rc == 0)
        CU_ASSERT_EQUAL(*lsn, want);
    return rc;
}

static uint64_t
put(tn_store *s)
{
    uint64_t lsn = 0;
    CU_ASSERT_EQUAL(try_put(s, &lsn), 0);
    return lsn;
}

static int durable_calls, durable_status;
static uint64_t durable_seen;
static void
on_durable(void *arg, int status)
{
    durable_calls++;
    durable_status = status;
    durable_seen = (uint64_t)(uintptr_t)arg;
}

/* Appends n records and waits until the last is durable. */
static void
put_n_durable(tn_store *s, int n)
{
    uint64_t last = 0;
    for (int i = 0; i < n; i++)
        last = put(s);
    durable_calls = 0;
    tn_store_when_durable(s, last, on_durable, (void *)(uintptr_t)last);
    for (int i = 0; i < 100 && durable_calls == 0; i++) {
        wait_notify(1000);
        tn_store_poll(s);
    }
    CU_ASSERT_EQUAL(durable_calls, 1);
    CU_ASSERT_EQUAL(durable_status, 0);
    CU_ASSERT_EQUAL(durable_seen, last);
    CU_ASSERT_TRUE(tn_store_durable_lsn(s) >= last);
}

static seen
replay(tn_store *s, int expect_rc)
{
    seen sn = {.ok = true};
    char err[256] = "";
    CU_ASSERT_EQUAL(tn_store_replay(s, collect, &sn, err, sizeof err), expect_rc);
    return sn;
}

static int
count_segments(void)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, ".seg") != NULL;
    closedir(d);
    return n;
}

/* Path of the newest (or oldest) segment. */
static void
segment_path(bool newest, char *out, size_t n)
{
    char best[300] = "";
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strstr(e->d_name, ".seg"))
            continue;
        if (!best[0] || (newest ? strcmp(e->d_name, best) > 0 : strcmp(e->d_name, best) < 0))
            snprintf(best, sizeof best, "%s", e->d_name);
    }
    closedir(d);
    snprintf(out, n, "%s/%s", dir, best);
}

static long
file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static void
flip_byte(const char *p, long off)
{
    int fd = open(p, O_RDWR);
    uint8_t b;
    CU_ASSERT_EQUAL(pread(fd, &b, 1, off), 1);
    b ^= 0x5a;
    CU_ASSERT_EQUAL(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static void
test_round_trip_and_continue(void)
{
    char err[256];
    fresh_dir();
    tn_store *s = open_store(0, false, TN_SYNC_ALWAYS, err);
    seen sn = replay(s, 0);
    CU_ASSERT_EQUAL(sn.n, 0);
    CU_ASSERT_EQUAL(tn_store_start(s), 0);
    put_n_durable(s, 1000);
    tn_store_close(s);

    s = open_store(0, false, TN_SYNC_ALWAYS, err);
    sn = replay(s, 0);
    CU_ASSERT_EQUAL(sn.n, 1000);
    CU_ASSERT_EQUAL(sn.first, 1);
    CU_ASSERT_EQUAL(sn.last, 1000);
    CU_ASSERT_TRUE(sn.ok);
    CU_ASSERT_EQUAL(tn_store_start(s), 0);
    put_n_durable(s, 10); /* continues at 1001 in the same segment */
    tn_store_close(s);
    CU_ASSERT_EQUAL(count_segments(), 1);
    s = open_store(0, false, TN_SYNC_ALWAYS, err);
    sn = replay(s, 0);
    CU_ASSERT_EQUAL(sn.last, 1010);
    CU_ASSERT_TRUE(sn.ok);
    tn_store_close(s);
    rm_dir();
}

static void
test_segments_roll_over(void)
{
    char err[256];
    fresh_dir();
    tn_store *s = open_store(4096, false, TN_SYNC_ALWAYS, err);
    replay(s, 0);
    tn_store_start(s);
    for (int i = 0; i < 20; i++)
        put_n_durable(s, 50); /* 20 batches of ~2 KB: several segments */
    tn_store_close(s);
    CU_ASSERT_TRUE(count_segments() > 3);
    s = open_store(4096, false, TN_SYNC_ALWAYS, err);
    seen sn = replay(s, 0);
    CU_ASSERT_EQUAL(sn.n, 1000);
    CU_ASSERT_TRUE(sn.ok);
    tn_store_close(s);
    rm_dir();
}

static void
test_torn_tail_is_cut(void)
{
    char err[256], seg[512];
    fresh_dir();
    tn_store *s = open_store(0, false, TN_SYNC_ALWAYS, err);
    replay(s, 0);
    tn_store_start(s);
    put_n_durable(s, 100);
    tn_store_close(s);
    segment_path(true, seg, sizeof seg);
    long size = file_size(seg);
    CU_ASSERT_EQUAL(truncate(seg, size - 10), 0); /* the last record is cut short */
    s = open_store(0, false, TN_SYNC_ALWAYS, err);
    seen sn = replay(s, 0);
    CU_ASSERT_EQUAL(sn.n, 99);
    CU_ASSERT_TRUE(sn.ok);
    CU_ASSERT_TRUE(file_size(seg) < size - 10); /* cut back to the last good record */
    tn_store_start(s);
    put_n_durable(s, 1); /* LSN 100 again, cleanly */
    tn_store_close(s);
    s = open_store(0, false, TN_SYNC_ALWAYS, err);
    sn = replay(s, 0);
    CU_ASSERT_EQUAL(sn.n, 100);
    CU_ASSERT_TRUE(sn.ok);
    tn_store_close(s);

    /* A flipped byte in the last record: a corrupt tail, also cut. */
    segment_path(true, seg, sizeof seg);
    flip_byte(seg, file_size(seg) - 16); /* inside the last record (24 bytes) */
    s = open_store(0, false, TN_SYNC_ALWAYS, err);
    sn = replay(s, 0);
    CU_ASSERT_EQUAL(sn.n, 99);
    tn_store_close(s);

    /* Zeros after the end (a preallocated or half-synced tail): cut, nothing lost. */
    long good = file_size(seg);
    CU_ASSERT_EQUAL(truncate(seg, good + 4096), 0);
    s = open_store(0, false, TN_SYNC_ALWAYS, err);
    sn = replay(s, 0);
    CU_ASSERT_EQUAL(sn.n, 99);
    CU_ASSERT_EQUAL(file_size(seg), good);
    tn_store_close(s);
    rm_dir();
}

static void
test_corruption_in_the_middle_stops_unless_salvage(void)
{
    char err[256], seg[512];
    fresh_dir();
    tn_store *s = open_store(4096, false, TN_SYNC_ALWAYS, err);
    replay(s, 0);
    tn_store_start(s);
    for (int i = 0; i < 10; i++)
        put_n_durable(s, 50);
    tn_store_close(s);
    /* A byte in the oldest segment: corruption with valid records after it. */
    segment_path(false, seg, sizeof seg);
    flip_byte(seg, 30);
    s = open_store(4096, false, TN_SYNC_ALWAYS, err);
    seen sn = {.ok = true};
    CU_ASSERT_EQUAL(tn_store_replay(s, collect, &sn, err, sizeof err), TN_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "corrupt record at offset"));
    CU_ASSERT_EQUAL(sn.last, 1); /* stopped at the damage (record 2) */
    tn_store_close(s);
    s = open_store(4096, true, TN_SYNC_ALWAYS, err); /* salvage: skip the damaged part */
    sn = replay(s, 0);
    CU_ASSERT_TRUE(sn.n > 0 && sn.n < 500);
    CU_ASSERT_EQUAL(sn.last, 500);
    CU_ASSERT_TRUE(sn.ok);
    tn_store_close(s);
    rm_dir();

    /* In the last segment, with valid records after the bad one: also refused. */
    fresh_dir();
    s = open_store(0, false, TN_SYNC_ALWAYS, err);
    replay(s, 0);
    tn_store_start(s);
    put_n_durable(s, 100);
    tn_store_close(s);
    segment_path(true, seg, sizeof seg);
    flip_byte(seg, 100);
    s = open_store(0, false, TN_SYNC_ALWAYS, err);
    replay(s, TN_EIO);
    tn_store_close(s);
    rm_dir();
}

static void
test_policies_and_limits(void)
{
    char err[256];
    tn_sync_policy pol[] = {TN_SYNC_INTERVAL, TN_SYNC_NEVER};
    for (int i = 0; i < 2; i++) {
        fresh_dir();
        tn_store *s = open_store(0, false, pol[i], err);
        replay(s, 0);
        tn_store_start(s);
        put_n_durable(s, 200);
        uint64_t lsn;
        static uint8_t big[(1 << 20) + 1];
        CU_ASSERT_EQUAL(tn_store_append(s, 1, big, sizeof big, &lsn), TN_ETOOBIG);
        tn_store_close(s);
        s = open_store(0, false, pol[i], err);
        seen sn = replay(s, 0);
        CU_ASSERT_EQUAL(sn.n, 200);
        tn_store_close(s);
        rm_dir();
    }
}

/* A full disk, simulated with RLIMIT_FSIZE: appends fail with an error, waiters are told, what
 * is stored stays intact, and writing resumes once there is room again. */
static void
test_write_failure_and_recovery(void)
{
    char err[256];
    fresh_dir();
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    tn_store *s = open_store(0, false, TN_SYNC_ALWAYS, err);
    replay(s, 0);
    tn_store_start(s);
    put_n_durable(s, 10);
    uint64_t good = tn_store_durable_lsn(s);
    lim = old;
    lim.rlim_cur = 4096;
    setrlimit(RLIMIT_FSIZE, &lim);
    uint64_t last = 0, lsn;
    for (int i = 0; i < 200; i++) /* some may already be refused: the writer fails early */
        if (try_put(s, &lsn) == 0)
            last = lsn;
    CU_ASSERT_TRUE(last > good);
    durable_calls = 0;
    tn_store_when_durable(s, last, on_durable, NULL);
    for (int i = 0; i < 100 && durable_calls == 0; i++) {
        wait_notify(1000);
        tn_store_poll(s);
    }
    CU_ASSERT_EQUAL(durable_calls, 1);
    CU_ASSERT_EQUAL(durable_status, TN_EIO);
    CU_ASSERT_EQUAL(tn_store_error(s), TN_EIO);
    CU_ASSERT_EQUAL(tn_store_append(s, 1, "x", 1, &lsn), TN_EIO);
    setrlimit(RLIMIT_FSIZE, &old); /* room again */
    for (int i = 0; i < 10 && tn_store_error(s); i++) {
        wait_notify(2000);
        tn_store_poll(s);
    }
    CU_ASSERT_EQUAL(tn_store_error(s), 0);
    CU_ASSERT_EQUAL(tn_store_last_lsn(s), tn_store_durable_lsn(s)); /* dropped LSNs reused */
    put_n_durable(s, 10);
    tn_store_close(s);
    s = open_store(0, false, TN_SYNC_ALWAYS, err);
    seen sn = replay(s, 0);
    CU_ASSERT_TRUE(sn.last >= good + 10); /* nothing stored was damaged, no gap */
    CU_ASSERT_TRUE(sn.ok);
    tn_store_close(s);
    rm_dir();
}

/* Every record can be read back at the position its append reported: before it is written
 * (EAGAIN), across segment rolls, after a reopen, and never where nothing valid lies. */
static void
test_read_back_by_position(void)
{
    char err[256];
    fresh_dir();
    tn_store *s = open_store(4096, false, TN_SYNC_ALWAYS, err);
    replay(s, 0);
    tn_store_start(s);
    enum { N = 300 };
    tn_store_pos pos[N + 1];
    uint64_t lsn = 0;
    for (int i = 1; i <= N; i++) {
        lsn = put(s);
        tn_store_last_pos(s, &pos[i]);
        if (i == 150)
            tn_store_roll(s);
    }
    tn_buf out;
    tn_buf_init(&out, 1 << 20);
    uint16_t type;
    int rc = tn_store_read(s, &pos[N], &out, &type);
    CU_ASSERT_TRUE(rc == TN_EAGAIN || rc == 0); /* the writer may already have it on disk */
    put_n_durable(s, 1);
    CU_ASSERT_TRUE(pos[N].seg > pos[1].seg); /* it rolled over */
    CU_ASSERT_EQUAL(pos[151].off, 0);        /* roll: 151 starts a segment */
    CU_ASSERT_EQUAL(pos[151].seg, 151);
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t i = 1; i <= N; i++) {
            CU_ASSERT_EQUAL_FATAL(tn_store_read(s, &pos[i], &out, &type), 0);
            CU_ASSERT_EQUAL(type, i % 7);
            CU_ASSERT_EQUAL(out.len, i % 50);
            for (uint32_t j = 0; j < out.len; j++)
                CU_ASSERT_EQUAL(out.data[j], (uint8_t)(i + j));
        }
        tn_store_pos bad = pos[10];
        bad.off += 8; /* the middle of a record */
        CU_ASSERT_EQUAL(tn_store_read(s, &bad, &out, &type), TN_ENOENT);
        bad = pos[10];
        bad.seg = pos[1].seg + 1; /* no segment starts there */
        CU_ASSERT_EQUAL(tn_store_read(s, &bad, &out, &type), TN_ENOENT);
        tn_store_close(s);
        s = open_store(4096, false, TN_SYNC_ALWAYS, err);
        seen sn = replay(s, 0);
        CU_ASSERT_EQUAL(sn.last, lsn + 1);
        tn_store_start(s);
    }
    tn_store_close(s);
    tn_buf_fini(&out);
    rm_dir();
}

/* sync always: records nobody waits for are written at once but synced lazily: by the next
 * sync someone waits for, or by the idle sync soon after. */
static void
test_unwaited_records_are_synced_soon(void)
{
    char err[256];
    fresh_dir();
    tn_store *s = open_store(0, false, TN_SYNC_ALWAYS, err);
    replay(s, 0);
    tn_store_start(s);
    uint64_t last = 0;
    for (int i = 0; i < 5; i++)
        last = put(s);
    for (int i = 0; i < 100 && tn_store_durable_lsn(s) < last; i++)
        wait_notify(100);
    CU_ASSERT_EQUAL(tn_store_durable_lsn(s), last);
    put_n_durable(s, 3); /* and a waiter still gets its sync */
    tn_store_close(s);
    rm_dir();
}

/* Close answers every waiter, also for records the writer had not synced yet: synced at stop. */
static void
test_close_answers_waiters(void)
{
    char err[256];
    fresh_dir();
    tn_store *s = open_store(0, false, TN_SYNC_ALWAYS, err);
    replay(s, 0);
    tn_store_start(s);
    uint64_t last = 0;
    for (int i = 0; i < 5; i++)
        last = put(s);
    durable_calls = 0;
    durable_status = -1;
    tn_store_when_durable(s, last, on_durable, (void *)(uintptr_t)last);
    tn_store_close(s);
    CU_ASSERT_EQUAL(durable_calls, 1);
    CU_ASSERT_EQUAL(durable_status, 0);
    rm_dir();
}

/* Records whose bodies are written from where they are (tn_store_append_ref), mixed with copied
 * ones, across segment boundaries: they replay as written, and each body is released once,
 * after it is written (ASan catches a write from a released body). */
static int refs_released;

static void
ref_release(void *owner)
{
    refs_released++;
    free(owner);
}

/* Then 4092 bytes: records without padding, 4 to a segment, so segments start right after a
 * body written by reference. */
static uint32_t
ref_len(uint64_t lsn)
{
    return lsn <= 60 ? (uint32_t)(lsn * 997 % 6000) : 4092;
}

static int
collect_refs(void *arg, uint64_t lsn, uint16_t type, const uint8_t *p, uint32_t len)
{
    seen *s = arg;
    s->n++;
    s->last = lsn;
    if (type != 3 || len != ref_len(lsn))
        s->ok = false;
    for (uint32_t i = 0; i < len; i++)
        if (p[i] != (uint8_t)(lsn + i))
            s->ok = false;
    return 0;
}

static void
test_append_ref(void)
{
    char err[256];
    fresh_dir();
    tn_store *s = open_store(16384, false, TN_SYNC_ALWAYS, err);
    CU_ASSERT_EQUAL(tn_store_start(s), 0);
    refs_released = 0;
    int n_refs = 0;
    uint64_t last = 0;
    for (uint64_t lsn = 1; lsn <= 100; lsn++) {
        uint32_t len = ref_len(lsn);
        uint8_t *buf = malloc(len + 1);
        for (uint32_t i = 0; i < len; i++)
            buf[i] = (uint8_t)(lsn + i);
        uint32_t head = len < 7 ? len : 7;
        if (lsn % 3 != 0 || lsn > 60) {
            CU_ASSERT_EQUAL(tn_store_append_ref(s, 3, buf, head, buf + head, len - head,
                                                ref_release, buf, &last),
                            0);
            n_refs++;
        } else {
            CU_ASSERT_EQUAL(tn_store_append(s, 3, buf, len, &last), 0);
            free(buf);
        }
        CU_ASSERT_EQUAL(last, lsn);
        if (lsn % 20 == 0) { /* some batches hold several records and rolls */
            durable_calls = 0;
            tn_store_when_durable(s, last, on_durable, (void *)(uintptr_t)last);
            for (int i = 0; i < 100 && durable_calls == 0; i++) {
                wait_notify(1000);
                tn_store_poll(s);
            }
            CU_ASSERT_EQUAL(durable_calls, 1);
        }
    }
    CU_ASSERT_EQUAL(refs_released, n_refs);
    /* A record over max_record is refused and its body not released. */
    static uint8_t big[8];
    CU_ASSERT_EQUAL(tn_store_append_ref(s, 3, big, 8, big, 1u << 20, ref_release, NULL, &last),
                    TN_ETOOBIG);
    tn_store_close(s);
    CU_ASSERT_EQUAL(refs_released, n_refs);
    s = open_store(16384, false, TN_SYNC_ALWAYS, err);
    seen sn = {.ok = true};
    CU_ASSERT_EQUAL(tn_store_replay(s, collect_refs, &sn, err, sizeof err), 0);
    CU_ASSERT_EQUAL(sn.n, 100);
    CU_ASSERT_EQUAL(sn.last, 100);
    CU_ASSERT_TRUE(sn.ok);
    tn_store_close(s);
    rm_dir();
}

static uint64_t gate_at;
static uint64_t
gate(void *arg)
{
    (void)arg;
    return gate_at;
}

/* What a pair does: a cursor ships the active's records, as they are written, into a second
 * journal (the standby's) that starts where the first one's oldest segment starts; a gate
 * holds the active's confirmations until the copy has them. */
static void
test_cursor_mirror_gate(void)
{
    char err[256], dir2[sizeof dir];
    fresh_dir();
    snprintf(dir2, sizeof dir2, "%s", dir);
    fresh_dir(); /* dir: the active's; dir2: the standby's */
    tn_store_conf c = {.dir = dir,
                       .sync = TN_SYNC_ALWAYS,
                       .segment_size = 4096,
                       .max_record = 1 << 20,
                       .notify = notify,
                       .notify_written = true};
    tn_store *a = NULL;
    CU_ASSERT_EQUAL_FATAL(tn_store_open(&c, &a, err, sizeof err), 0);
    replay(a, 0);
    CU_ASSERT_EQUAL_FATAL(tn_store_start(a), 0);
    tn_store_cursor *cur = NULL;
    CU_ASSERT_EQUAL_FATAL(tn_store_cursor_open(a, 1, &cur), 0); /* empty, from its start */
    put_n_durable(a, 150);                                      /* several segments */
    /* One record larger than a read, between small ones. */
    static uint8_t big[300000];
    memset(big, 0xab, sizeof big);
    uint64_t big_lsn;
    CU_ASSERT_EQUAL(tn_store_append(a, 9, big, sizeof big, &big_lsn), 0);
    CU_ASSERT_EQUAL(big_lsn, 151);
    durable_calls = 0;
    tn_store_when_durable(a, 151, on_durable, (void *)(uintptr_t)151);
    while (tn_store_durable_lsn(a) < 151 && wait_notify(2000))
        ;
    /* The gate: nothing is confirmed past it, however durable. */
    gate_at = 100;
    tn_store_set_gate(a, gate, NULL);
    CU_ASSERT_EQUAL(tn_store_durable_lsn(a), 100);
    tn_store_poll(a);
    CU_ASSERT_EQUAL(durable_calls, 0);

    /* The copy starts where the active's oldest segment starts. */
    c.dir = dir2;
    c.notify_written = false;
    c.first_lsn = 1;
    tn_store *b = NULL;
    CU_ASSERT_EQUAL_FATAL(tn_store_open(&c, &b, err, sizeof err), 0);
    replay(b, 0);
    CU_ASSERT_EQUAL_FATAL(tn_store_start(b), 0);
    tn_buf buf;
    tn_buf_init(&buf, 4u << 20);
    uint64_t next = 0;
    int total = 0;
    while (total < 151) {
        buf.len = 0;
        int n = tn_store_cursor_read(cur, &buf, 1000, UINT64_MAX, &next);
        CU_ASSERT_TRUE_FATAL(n > 0);
        total += n;
        size_t off = 0;
        while (off < buf.len) {
            uint64_t lsn, got;
            uint16_t type;
            const uint8_t *pl;
            uint32_t len;
            size_t size;
            CU_ASSERT_EQUAL_FATAL(tn_store_record_check(buf.data + off, buf.len - off, 1 << 20,
                                                        &lsn, &type, &pl, &len, &size),
                                  0);
            CU_ASSERT_EQUAL_FATAL(tn_store_append(b, type, pl, len, &got), 0);
            CU_ASSERT_EQUAL(got, lsn);
            off += size;
        }
    }
    CU_ASSERT_EQUAL(next, 152);
    CU_ASSERT_EQUAL(tn_store_cursor_read(cur, &buf, 1000, UINT64_MAX, &next),
                    0); /* nothing more yet */
    /* A corrupt record is refused. */
    buf.data[30] ^= 1;
    {
        uint64_t lsn;
        uint16_t type;
        const uint8_t *pl;
        uint32_t len;
        size_t size;
        CU_ASSERT_EQUAL(
            tn_store_record_check(buf.data, buf.len, 1 << 20, &lsn, &type, &pl, &len, &size),
            TN_EPROTO);
        CU_ASSERT_EQUAL(tn_store_record_check(buf.data, 10, 1 << 20, &lsn, &type, &pl, &len, &size),
                        TN_EAGAIN);
    }
    /* The copy has it: the gate opens. */
    gate_at = UINT64_MAX;
    tn_store_poll(a);
    CU_ASSERT_EQUAL(durable_calls, 1);
    tn_store_cursor_close(cur);
    /* A cursor from the middle; one past the end is refused. */
    CU_ASSERT_EQUAL(tn_store_cursor_open(a, 77, &cur), 0);
    buf.len = 0;
    CU_ASSERT_TRUE(tn_store_cursor_read(cur, &buf, 1, UINT64_MAX, &next) == 1);
    CU_ASSERT_EQUAL(next, 78);
    tn_store_cursor_close(cur);
    CU_ASSERT_EQUAL(tn_store_cursor_open(a, 153, &cur), TN_ENOENT);
    tn_buf_fini(&buf);
    tn_store_close(a);
    tn_store_close(b);

    rm_dir(); /* the active's */
    /* The copy replays as the original: same LSNs, same payloads. */
    snprintf(dir, sizeof dir, "%s", dir2);
    c.dir = dir2;
    CU_ASSERT_EQUAL_FATAL(tn_store_open(&c, &b, err, sizeof err), 0);
    seen sn = {.ok = true};
    CU_ASSERT_EQUAL(tn_store_replay(b, collect_upto_150, &sn, err, sizeof err), 0);
    CU_ASSERT_EQUAL(sn.first, 1);
    CU_ASSERT_EQUAL(sn.last, 151);
    CU_ASSERT_TRUE(sn.ok);
    tn_store_close(b);
    /* Wiped, it starts again empty, at the LSN it is told. */
    CU_ASSERT_EQUAL(tn_store_wipe(dir2, err, sizeof err), 0);
    CU_ASSERT_EQUAL(count_segments(), 0);
    c.first_lsn = 500;
    CU_ASSERT_EQUAL_FATAL(tn_store_open(&c, &b, err, sizeof err), 0);
    replay(b, 0);
    CU_ASSERT_EQUAL(tn_store_last_lsn(b), 499);
    tn_store_close(b);
    rm_dir();
}

/* With sync always the segment being written runs ahead of its records in zeros (one
 * fdatasync then flushes data only); a process killed then leaves them on disk: replay ends the
 * segment at its last record, silently, and appends go on from there. A clean close leaves no
 * zeros. */
static void
test_zeros_ahead_of_the_records(void)
{
    char err[256], seg[512];
    fresh_dir();
    pid_t pid = fork();
    CU_ASSERT_TRUE_FATAL(pid >= 0);
    if (pid == 0) {
        tn_store *s = open_store(0, false, TN_SYNC_ALWAYS, err);
        replay(s, 0);
        tn_store_start(s);
        put_n_durable(s, 100);
        segment_path(true, seg, sizeof seg);
        _exit(file_size(seg) >= (1 << 20) ? 0 : 3); /* killed: no close */
    }
    int st = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    segment_path(true, seg, sizeof seg);
    CU_ASSERT_TRUE(file_size(seg) >= 1 << 20);
    tn_store *s = open_store(0, false, TN_SYNC_ALWAYS, err);
    seen sn = replay(s, 0);
    CU_ASSERT_EQUAL(sn.n, 100);
    CU_ASSERT_TRUE(sn.ok);
    CU_ASSERT_TRUE(file_size(seg) < 1 << 16); /* the records only */
    tn_store_start(s);
    put_n_durable(s, 10);
    CU_ASSERT_TRUE(file_size(seg) >= 1 << 20);
    tn_store_close(s);
    long closed = file_size(seg);
    CU_ASSERT_TRUE(closed < 1 << 16);
    s = open_store(0, false, TN_SYNC_ALWAYS, err);
    sn = replay(s, 0);
    CU_ASSERT_EQUAL(sn.n, 110);
    CU_ASSERT_EQUAL(file_size(seg), closed);
    tn_store_close(s);
    rm_dir();
}

/* A sector of zeros amid the last segment's records, valid records after it: writes that
 * reached the disk out of order when the power went (none of them confirmed): the journal ends
 * there. The same place damaged with anything but a whole zero sector still stops the replay. */
static void
test_hole_in_the_last_segment(void)
{
    char err[256], seg[512];
    fresh_dir();
    tn_store *s = open_store(0, false, TN_SYNC_ALWAYS, err);
    replay(s, 0);
    tn_store_start(s);
    put_n_durable(s, 200);
    tn_store_close(s);
    segment_path(true, seg, sizeof seg);
    long size = file_size(seg);
    CU_ASSERT_TRUE_FATAL(size > 8192);
    /* Garbage at the middle: corruption, refused. */
    flip_byte(seg, size / 2);
    s = open_store(0, false, TN_SYNC_ALWAYS, err);
    replay(s, TN_EIO);
    tn_store_close(s);
    /* A zero sector there (and zeros after the end, as zero_ahead leaves them): cut. */
    flip_byte(seg, size / 2);
    int fd = open(seg, O_RDWR);
    static const uint8_t zeros[512];
    long hole = (size / 2) & ~511L;
    CU_ASSERT_EQUAL(pwrite(fd, zeros, 512, hole), 512);
    CU_ASSERT_EQUAL(ftruncate(fd, size + 65536), 0);
    close(fd);
    s = open_store(0, false, TN_SYNC_ALWAYS, err);
    seen sn = replay(s, 0);
    CU_ASSERT_TRUE(sn.ok);
    CU_ASSERT_TRUE(sn.n > 50 && sn.n < 150);
    CU_ASSERT_TRUE(file_size(seg) <= hole);
    tn_store_start(s);
    put_n_durable(s, 1);
    tn_store_close(s);
    rm_dir();
}

/* inline_writes (a pair's standby): no writer thread; tn_store_flush() writes and syncs on the
 * caller's thread, then tn_store_poll() answers the waiters. The journal is the same. */
static void
test_inline_writes(void)
{
    char err[256];
    fresh_dir();
    tn_store_conf c = {.dir = dir,
                       .sync = TN_SYNC_ALWAYS,
                       .max_record = 1 << 20,
                       .segment_size = 64 << 10,
                       .notify = notify,
                       .inline_writes = true};
    tn_store *s = NULL;
    CU_ASSERT_EQUAL_FATAL(tn_store_open(&c, &s, err, sizeof err), 0);
    replay(s, 0);
    CU_ASSERT_EQUAL(tn_store_start(s), 0);
    for (int round = 0; round < 50; round++) {
        uint64_t last = 0;
        for (int i = 0; i < 40; i++)
            last = put(s);
        durable_calls = 0;
        tn_store_when_durable(s, last, on_durable, (void *)(uintptr_t)last);
        tn_store_poll(s);
        CU_ASSERT_EQUAL(durable_calls, 0); /* nothing written until flushed */
        tn_store_flush(s);
        tn_store_poll(s);
        CU_ASSERT_EQUAL(durable_calls, 1);
        CU_ASSERT_EQUAL(durable_seen, last);
        CU_ASSERT_EQUAL(tn_store_durable_lsn(s), last);
    }
    put(s); /* not flushed: close writes it */
    tn_store_close(s);
    CU_ASSERT_TRUE(count_segments() > 1); /* rolled on the way */
    s = open_store(64 << 10, false, TN_SYNC_ALWAYS, err);
    seen sn = replay(s, 0);
    CU_ASSERT_EQUAL(sn.n, 50 * 40 + 1);
    CU_ASSERT_TRUE(sn.ok);
    tn_store_close(s);
    rm_dir();
}

int
main(void)
{
    tn_log_set_level(TN_LOG_ERROR);
    if (pipe(wake) != 0)
        return 1;
    fcntl(wake[0], F_SETFL, O_NONBLOCK);
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("store", NULL, NULL);
    CU_add_test(s, "round_trip_and_continue", test_round_trip_and_continue);
    CU_add_test(s, "segments_roll_over", test_segments_roll_over);
    CU_add_test(s, "torn_tail_is_cut", test_torn_tail_is_cut);
    CU_add_test(s, "corruption_in_middle", test_corruption_in_the_middle_stops_unless_salvage);
    CU_add_test(s, "policies_and_limits", test_policies_and_limits);
    CU_add_test(s, "write_failure_and_recovery", test_write_failure_and_recovery);
    CU_add_test(s, "read_back_by_position", test_read_back_by_position);
    CU_add_test(s, "unwaited_records_synced_soon", test_unwaited_records_are_synced_soon);
    CU_add_test(s, "close_answers_waiters", test_close_answers_waiters);
    CU_add_test(s, "append_ref", test_append_ref);
    CU_add_test(s, "cursor_mirror_gate", test_cursor_mirror_gate);
    CU_add_test(s, "zeros_ahead", test_zeros_ahead_of_the_records);
    CU_add_test(s, "hole_in_last_segment", test_hole_in_the_last_segment);
    CU_add_test(s, "inline_writes", test_inline_writes);
    return tn_test_run();
}
