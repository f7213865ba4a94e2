/* Fuzz target: any bytes as a config file must give 0 or an error message, never a crash/leak. */
#include "conf/conf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    tn_conf c;
    tn_conf_init(&c);
    char err[256];
    if (tn_conf_load_string(&c, "fuzz", text, err, sizeof err) == 0)
        tn_conf_validate(&c, err, sizeof err);
    tn_conf_fini(&c);
    free(text);
    return 0;
}
