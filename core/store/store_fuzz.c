/* Fuzz target: any bytes as the journal's only segment must replay, be cut back, or be refused
 * with a message; never crash, hang or leak. */
#include "core/store/store.h"

#include "core/base/base.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
count(void *arg, uint64_t lsn, uint16_t type, const uint8_t *p, uint32_t len)
{
    (void)lsn;
    (void)type;
    (void)p;
    (void)len;
    ++*(int *)arg;
    return 0;
}

static void
nop(void *arg)
{
    (void)arg;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tn_log_set_level(TN_LOG_ERROR);
    char dir[] = "/tmp/tern-store-fuzz-XXXXXX";
    if (!mkdtemp(dir))
        return 0;
    char seg[128];
    snprintf(seg, sizeof seg, "%s/%020d.seg", dir, 1);
    int fd = open(seg, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        (void)!write(fd, data, size);
        close(fd);
    }
    for (int salvage = 0; salvage < 2; salvage++) {
        tn_store_conf c = {.dir = dir,
                           .sync = TN_SYNC_NEVER,
                           .max_record = 4096,
                           .salvage = salvage,
                           .notify = nop};
        tn_store *s = NULL;
        char err[256];
        if (tn_store_open(&c, &s, err, sizeof err) != 0)
            break;
        int n = 0;
        tn_store_replay(s, count, &n, err, sizeof err);
        tn_store_close(s);
    }
    unlink(seg);
    rmdir(dir);
    return 0;
}
