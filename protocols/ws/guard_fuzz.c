/*
 * Fuzz target for guard.h's follower: the input is what a client sends to a WebSocket port.
 * It is followed whole, then again in pieces cut at points drawn from the input.
 *
 * Checked: no crash; the verdict (unmasked or not, in frames or not) does not depend on where
 * the bytes were cut; once unmasked, it stays so. Failures abort.
 */
#include "protocols/ws/guard.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tn_ws_guard whole, cut;
    tn_ws_guard_init(&whole);
    tn_ws_guard_init(&cut);
    bool ok = tn_ws_guard_feed(&whole, data, size);
    CHECK(ok == !whole.unmasked);
    size_t i = 0, k = 0;
    bool was_unmasked = false;
    while (i < size) {
        size_t len = 1 + data[k++ % size] % 97;
        if (len > size - i)
            len = size - i;
        bool r = tn_ws_guard_feed(&cut, data + i, len);
        CHECK(r == !cut.unmasked);
        CHECK(!was_unmasked || cut.unmasked);
        was_unmasked = cut.unmasked;
        i += len;
    }
    CHECK(cut.unmasked == whole.unmasked);
    CHECK(tn_ws_guard_in_frames(&cut) == tn_ws_guard_in_frames(&whole));
    if (!whole.unmasked)
        CHECK(cut.skip == whole.skip && cut.have == whole.have && cut.state == whole.state);
    return 0;
}
