/*
 * tn_lease's ZooKeeper backend (zk.c) against a real ZooKeeper server (Debian's zookeeper
 * package, a Java program) that this test starts on a free loopback port, with a temporary data
 * folder and tickTime 200 ms so the 1 s lease's session timeout is allowed (ZooKeeper takes
 * 2..20 ticks). Skipped, with exit 0, only when no ZooKeeper server is installed.
 *
 * Every wait is for an event, bounded by a timer; the server is killed at exit whatever
 * happens (and, through PR_SET_PDEATHSIG, if this process dies first). Each test uses its own
 * PATH, so each starts with no history.
 */
#include "cluster/cluster.h"
#include "core/base/base.h"

#include "tests/unit/tn_test.h"

#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#define JAVA "/usr/bin/java"
#define ZK_JAR "/usr/share/java/zookeeper.jar"

static uv_loop_t loop;
static char dir[64];
static uint16_t zk_port;
static pid_t zk_pid;

/* ---- the ZooKeeper server ---- */

static uint16_t
free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

static void
zk_stop(void)
{
    if (zk_pid <= 0)
        return;
    /* Killed outright, like a crash: every client connection is reset at once. */
    kill(zk_pid, SIGKILL);
    waitpid(zk_pid, NULL, 0);
    zk_pid = 0;
}

static void
quiet_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh;
    (void)type;
    (void)state;
    (void)path;
    (void)ctx;
}

/* Starts the server (same data folder and port each time) and waits until a client gets a
 * session from it (the four-letter "ruok" is disabled by default since 3.5). */
static bool
zk_start(void)
{
    char cfg[128], data[128], log[128], hosts[64];
    snprintf(cfg, sizeof cfg, "%s/zoo.cfg", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(log, sizeof log, "%s/server.log", dir);
    FILE *f = fopen(cfg, "w");
    if (f == NULL)
        return false;
    /* Loopback only; no admin HTTP server (it would take port 8080). */
    fprintf(f,
            "tickTime=200\ndataDir=%s\nclientPort=%u\nclientPortAddress=127.0.0.1\n"
            "admin.enableServer=false\n",
            data, (unsigned)zk_port);
    fclose(f);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(JAVA, "java", "-Xmx128m", "-XX:+UseSerialGC", "-cp", ZK_JAR,
              "org.apache.zookeeper.server.ZooKeeperServerMain", cfg, (char *)NULL);
        _exit(127);
    }
    zk_pid = pid;
    snprintf(hosts, sizeof hosts, "127.0.0.1:%u", (unsigned)zk_port);
    uint64_t end = uv_hrtime() + 60000000000ull; /* a JVM on a busy machine (ASan builds) */
    while (uv_hrtime() < end && waitpid(zk_pid, NULL, WNOHANG) == 0) {
        zhandle_t *zh = zookeeper_init(hosts, quiet_watcher, 4000, NULL, NULL, 0);
        bool up = false;
        for (int i = 0; zh && i < 20 && !up; i++) {
            usleep(50000);
            up = zoo_state(zh) == ZOO_CONNECTED_STATE;
        }
        if (zh)
            zookeeper_close(zh);
        if (up)
            return true;
    }
    fprintf(stderr, "ZooKeeper did not start: see %s\n", log);
    return false;
}

/* ---- waiting ---- */

static bool timed_out;
static void
on_timeout(uv_timer_t *t)
{
    (void)t;
    timed_out = true;
}

/* Runs the loop until cond(arg) holds, for at most ms; returns whether it held. */
static bool
run_until(bool (*cond)(void *), void *arg, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    timed_out = false;
    uv_timer_start(&t, on_timeout, ms, 0);
    while (!cond(arg) && !timed_out)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return cond(arg);
}

static bool
never(void *arg)
{
    (void)arg;
    return false;
}

/* Lets closing sessions and handles finish: nothing may be left open. */
static void
drain(void)
{
    uint64_t end = uv_hrtime() + 10000000000ull;
    while (uv_loop_alive(&loop) && uv_hrtime() < end)
        uv_run(&loop, UV_RUN_ONCE);
    CU_ASSERT_FALSE(uv_loop_alive(&loop));
}

/* ---- a node ---- */

typedef struct node {
    tn_lease *l;
    int granted, lost;
    uint64_t granted_epoch, lost_epoch;
    uint64_t granted_at, lost_at; /* uv_hrtime() */
} node;

static void
on_granted(void *arg, uint64_t epoch)
{
    node *n = arg;
    n->granted++;
    n->granted_epoch = epoch;
    n->granted_at = uv_hrtime();
    CU_ASSERT_TRUE(tn_lease_valid(n->l));
    CU_ASSERT_EQUAL(tn_lease_epoch(n->l), epoch);
}

static void
on_lost(void *arg, uint64_t epoch, const char *why)
{
    (void)why;
    node *n = arg;
    n->lost++;
    n->lost_epoch = epoch;
    n->lost_at = uv_hrtime();
    CU_ASSERT_FALSE(tn_lease_valid(n->l)); /* invalid before anyone is told */
}

static char path[64]; /* this test's PATH */

static void
node_start(node *n, const char *name)
{
    char zk[128];
    snprintf(zk, sizeof zk, "127.0.0.1:%u%s", (unsigned)zk_port, path);
    memset(n, 0, sizeof *n);
    tn_lease_conf c = {.loop = &loop,
                       .node = name,
                       .zookeeper = zk,
                       .granted = on_granted,
                       .lost = on_lost,
                       .arg = n};
    n->l = tn_lease_new(&c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(n->l);
    tn_lease_want(n->l, true);
}

static void
node_free(node *n)
{
    tn_lease_free(n->l);
    n->l = NULL;
}

static bool
is_granted(void *arg)
{
    return ((node *)arg)->granted > 0;
}

static bool
is_lost(void *arg)
{
    return ((node *)arg)->lost > 0;
}

static const char *want_holder;
static bool
knows_holder(void *arg)
{
    return strcmp(tn_lease_holder(((node *)arg)->l), want_holder) == 0;
}

typedef struct done_rec {
    int calls;
    bool ok;
} done_rec;

static void
on_done(void *arg, bool ok)
{
    done_rec *d = arg;
    d->calls++;
    d->ok = ok;
}

static bool
is_done(void *arg)
{
    return ((done_rec *)arg)->calls > 0;
}

static void
new_path(const char *name)
{
    snprintf(path, sizeof path, "/tern-zk-test-%d/%s", (int)getpid(), name);
}

/* ---- tests ---- */

/* First grant, BUSY, the standby recorded, and a freed holder's role handed to it at once. */
static void
test_grant_busy_and_handover(void)
{
    node a, b, c;
    new_path("handover");
    node_start(&a, "a");
    CU_ASSERT_TRUE_FATAL(run_until(is_granted, &a, 10000));
    CU_ASSERT_EQUAL(a.granted_epoch, 1);
    CU_ASSERT_STRING_EQUAL(tn_lease_holder(a.l), "a");

    node_start(&b, "b");
    want_holder = "a";
    CU_ASSERT_TRUE(run_until(knows_holder, &b, 5000)); /* BUSY: a's session is alive */
    run_until(never, NULL, 1500); /* well past a lease: a renews, b stays out */
    CU_ASSERT_EQUAL(b.granted, 0);
    CU_ASSERT_TRUE(tn_lease_valid(a.l));
    CU_ASSERT_EQUAL(a.lost, 0);

    done_rec d = {0};
    tn_lease_set_standby(a.l, "b", on_done, &d);
    CU_ASSERT_TRUE(run_until(is_done, &d, 5000));
    CU_ASSERT_TRUE(d.ok);

    /* Freeing closes a's session: its znode goes, b's watch fires, b is the recorded standby. */
    uint64_t t0 = uv_hrtime();
    node_free(&a);
    CU_ASSERT_TRUE_FATAL(run_until(is_granted, &b, 5000));
    CU_ASSERT_EQUAL(b.granted_epoch, 2);
    fprintf(stderr, "  (handover after a clean close: %.0f ms)\n",
            (double)(b.granted_at - t0) / 1e6);
    CU_ASSERT(b.granted_at - t0 < 500000000ull);

    /* c, while b holds: BUSY too. */
    node_start(&c, "c");
    want_holder = "b";
    CU_ASSERT_TRUE(run_until(knows_holder, &c, 5000));
    CU_ASSERT_EQUAL(c.granted, 0);

    /* set_standby on a lease not held: done(false) at once. */
    d = (done_rec){0};
    tn_lease_set_standby(c.l, "b", on_done, &d);
    CU_ASSERT_EQUAL(d.calls, 1);
    CU_ASSERT_FALSE(d.ok);
    node_free(&b);
    node_free(&c);
    drain();
}

/* A node that is neither the last holder nor the recorded standby never gets the role; the
 * last holder, back with a new session, does. */
static void
test_behind_refused(void)
{
    node a, c;
    new_path("behind");
    node_start(&a, "a");
    CU_ASSERT_TRUE_FATAL(run_until(is_granted, &a, 10000));
    CU_ASSERT_EQUAL(a.granted_epoch, 1);
    node_free(&a); /* no standby recorded */

    node_start(&c, "c");
    want_holder = "a";
    CU_ASSERT_TRUE(run_until(knows_holder, &c, 5000)); /* BEHIND */
    run_until(never, NULL, 1500);
    CU_ASSERT_EQUAL(c.granted, 0);

    node_start(&a, "a");
    CU_ASSERT_TRUE(run_until(is_granted, &a, 5000));
    CU_ASSERT_EQUAL(a.granted_epoch, 2);
    node_free(&a);
    node_free(&c);
    drain();
}

/* A holder whose loop stalls past its lease finds it invalid on waking, loses it, and the
 * standby takes over (the client's own thread kept the session alive meanwhile: only the
 * local clock ended the lease). */
static void
test_stalled_holder(void)
{
    node a, b;
    new_path("stall");
    node_start(&a, "a");
    CU_ASSERT_TRUE_FATAL(run_until(is_granted, &a, 10000));
    node_start(&b, "b");
    want_holder = "a";
    CU_ASSERT_TRUE(run_until(knows_holder, &b, 5000));
    done_rec d = {0};
    tn_lease_set_standby(a.l, "b", on_done, &d);
    CU_ASSERT_TRUE(run_until(is_done, &d, 5000));
    CU_ASSERT_TRUE(d.ok);

    usleep((TN_LEASE_MS - TN_LEASE_MARGIN_MS + 100) * 1000); /* the fault under test */
    CU_ASSERT_FALSE(tn_lease_valid(a.l));
    CU_ASSERT_TRUE(run_until(is_lost, &a, 1000));
    CU_ASSERT_TRUE(run_until(is_granted, &b, 5000));
    CU_ASSERT_EQUAL(b.granted_epoch, 2);
    node_free(&a);
    node_free(&b);
    drain();
}

/* The server stops: the holder's lease ends at once (disconnect). Restarted, it still has the
 * epoch: the next grant is epoch 2, after the old session has expired. */
static void
test_server_restart(void)
{
    node a;
    new_path("restart");
    node_start(&a, "a");
    CU_ASSERT_TRUE_FATAL(run_until(is_granted, &a, 10000));
    CU_ASSERT_EQUAL(a.granted_epoch, 1);

    uint64_t t0 = uv_hrtime();
    zk_stop();
    CU_ASSERT_TRUE(run_until(is_lost, &a, 2000));
    CU_ASSERT_FALSE(tn_lease_valid(a.l));
    fprintf(stderr, "  (lease lost %.0f ms after the server was killed)\n",
            (double)(a.lost_at - t0) / 1e6);
    CU_ASSERT(a.lost_at - t0 < 300000000ull);

    CU_ASSERT_TRUE_FATAL(zk_start());
    a.granted = 0;
    CU_ASSERT_TRUE(run_until(is_granted, &a, 15000)); /* a still wants it */
    CU_ASSERT_EQUAL(a.granted_epoch, 2);
    node_free(&a);
    drain();
}

static void
test_bad_conf(void)
{
    tn_lease_conf c = {.loop = &loop, .node = "a"};
    const char *bad[] = {"127.0.0.1:1", "127.0.0.1:1/", "/x", "127.0.0.1:1/x/", "h:1/a//b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c.zookeeper = bad[i];
        CU_ASSERT_PTR_NULL(tn_lease_new(&c));
    }
    c.zookeeper = "127.0.0.1:1/x";
    tn_lease *l = tn_lease_new(&c);
    CU_ASSERT_PTR_NOT_NULL(l);
    CU_ASSERT_FALSE(tn_lease_valid(l));
    CU_ASSERT_EQUAL(tn_lease_epoch(l), 0);
    CU_ASSERT_STRING_EQUAL(tn_lease_holder(l), "");
    tn_lease_free(l);
    drain();
}

static int
suite_init(void)
{
    snprintf(dir, sizeof dir, "/tmp/tn-zk-test-XXXXXX");
    if (mkdtemp(dir) == NULL || (zk_port = free_port()) == 0 || !zk_start())
        return -1;
    return uv_loop_init(&loop);
}

static int
suite_clean(void)
{
    zk_stop();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return uv_loop_close(&loop) == 0 ? 0 : -1;
}

int
main(void)
{
    if (access(JAVA, X_OK) != 0 || access(ZK_JAR, R_OK) != 0) {
        printf("zk_test: SKIPPED: no ZooKeeper server installed (%s, %s; Debian package "
               "zookeeper, installed by tools/deps)\n",
               JAVA, ZK_JAR);
        return 0;
    }
    atexit(zk_stop);
    tn_log_set_level(TN_LOG_ERROR);
    zoo_set_debug_level((ZooLogLevel)0);
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("zk", suite_init, suite_clean);
    CU_add_test(s, "bad_conf", test_bad_conf);
    CU_add_test(s, "grant_busy_and_handover", test_grant_busy_and_handover);
    CU_add_test(s, "behind_refused", test_behind_refused);
    CU_add_test(s, "stalled_holder", test_stalled_holder);
    CU_add_test(s, "server_restart", test_server_restart);
    return tn_test_run();
}
