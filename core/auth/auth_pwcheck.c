/*
 * auth_pwcheck FILE NAME: checks the first line of stdin as NAME's password in FILE with
 * tn_users_check(), for tools/ternctl's test. Exits 0 when it is right, 1 when it is not, 2 when
 * FILE does not load. A test helper: never installed.
 */
#include "core/auth/auth.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
main(int argc, char **argv)
{
    char err[512];
    tn_users *u = NULL;
    char *line = NULL;
    size_t cap = 0;

    if (argc != 3) {
        fprintf(stderr, "usage: auth_pwcheck FILE NAME < password\n");
        return 2;
    }
    if (tn_users_load(argv[1], &u, err, sizeof err) != 0) {
        fprintf(stderr, "auth_pwcheck: %s\n", err);
        return 2;
    }
    ssize_t n = getline(&line, &cap, stdin);
    size_t len = n > 0 ? (size_t)n : 0;
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    int rc = tn_users_check(u, argv[2], (const uint8_t *)(line ? line : ""), len) == 0 ? 0 : 1;
    free(line);
    tn_users_free(u);
    return rc;
}
