/*
 * Replays a fuzz corpus without libFuzzer: runs LLVMFuzzerTestOneInput over every file named on
 * the command line and every regular file in the directories named there (not recursive, dot
 * files skipped). A crash ends the process; otherwise it exits 0 after replaying at least one
 * input, and 1 when an argument cannot be read or nothing was replayed (a wrong corpus path
 * should not pass silently).
 *
 * Each input is copied into a buffer of exactly its size, so AddressSanitizer sees a read past
 * the end the same way libFuzzer would.
 */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, as with libFuzzer. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static int
replay_file(const char *path, unsigned long *count)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data = NULL;
    size_t len = 0, cap = 0;
    int rc = -1;

    if (f == NULL) {
        perror(path);
        return -1;
    }
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *p = realloc(data, cap);
            if (p == NULL)
                goto out;
            data = p;
        }
        size_t n = fread(data + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        perror(path);
        goto out;
    }
    /* Exact-size copy: no slack after the last byte. */
    uint8_t *exact = malloc(len ? len : 1);
    if (exact == NULL)
        goto out;
    if (len)
        memcpy(exact, data, len);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    (*count)++;
    rc = 0;
out:
    free(data);
    fclose(f);
    return rc;
}

static int
replay_dir(const char *path, unsigned long *count)
{
    DIR *dir = opendir(path);
    struct dirent *e;
    int rc = 0;

    if (dir == NULL) {
        perror(path);
        return -1;
    }
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        size_t n = strlen(path) + 1 + strlen(e->d_name) + 1;
        char *file = malloc(n);
        struct stat st;
        if (file == NULL) {
            rc = -1;
            break;
        }
        snprintf(file, n, "%s/%s", path, e->d_name);
        if (stat(file, &st) == 0 && S_ISREG(st.st_mode) && replay_file(file, count) != 0)
            rc = -1;
        free(file);
    }
    closedir(dir);
    return rc;
}

int
main(int argc, char **argv)
{
    unsigned long count = 0;
    int bad = 0;

    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            bad = 1;
        } else if (S_ISDIR(st.st_mode)) {
            bad |= replay_dir(argv[i], &count) != 0;
        } else {
            bad |= replay_file(argv[i], &count) != 0;
        }
    }
    printf("replayed %lu inputs\n", count);
    if (count == 0) {
        fprintf(stderr, "no inputs replayed\n");
        return 1;
    }
    return bad ? 1 : 0;
}
