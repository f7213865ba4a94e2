/* Fuzz target for the AMQP adapter (placeholder). */
#include "protocols/amqp/amqp.h"

#include "tests/unit/fake_io.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)data;
    (void)size;
    return 0;
}
