/*
 * Fuzz target for what a replication peer sends before any record: HELLO and WELCOME payloads
 * (repl_int.h), and the catch-up decision taken from a parsed HELLO against a fixed history.
 *
 * Checked: no crash or leak; a parsed history has strictly increasing epochs; the decision is
 * last + 1 only for a standby whose end lies within the active's history, else a reset to the
 * oldest LSN. Failures abort.
 */
#include "cluster/repl_int.h"

#include <stdlib.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char name[65];
    uint64_t last, epoch, start;
    bool reset;
    epoch_ent *h;
    size_t n;
    if (tn_repl__parse_hello(data, size, name, &last, &h, &n) == 0) {
        for (size_t i = 1; i < n; i++)
            CHECK(h[i].epoch > h[i - 1].epoch && h[i].first >= h[i - 1].first);
        const epoch_ent ha[] = {{1, 1}, {3, 101}, {9, 5000}};
        uint64_t s = tn_repl__start_for(ha, 3, 6000, 20, last, h, n, &reset);
        CHECK(reset ? s == 20 : (s == last + 1 && last <= 6000 && last + 1 >= 20));
        free(h);
    }
    if (tn_repl__parse_welcome(data, size, name, &epoch, &reset, &start, &h, &n) == 0) {
        CHECK(start != 0);
        free(h);
    }
    return 0;
}
