/*
 * ternctl passwd [--iterations N] [--delete] FILE NAME
 *
 * Adds NAME to a password file (mosquitto_passwd's format, core/auth/auth.h) or changes its
 * password, or removes it. The file is checked with the broker's own parser before anything
 * changes, then rewritten whole through a temporary file and rename(2), so a reader sees the
 * old file or the new one, never half of one; every other line is kept byte for byte. The
 * password never comes from the command line (other users can read it in ps): from the
 * terminal without echo, typed twice, or from the first line of standard input.
 * There is no lock: two ternctl run at once on the same file may lose one's change.
 */
#include "tools/ternctl/ternctl.h"

#include "core/auth/auth.h"
#include "core/base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <libgen.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#define ME "ternctl passwd"
/* MQTT cannot carry a longer password [MQTT-3.1.3.5]. */
#define PASSWORD_MAX 65535

static const char usage[] =
    "Usage: ternctl passwd [--iterations N] [--delete] FILE NAME\n"
    "Adds user NAME to the password file FILE, or changes NAME's password; creates FILE (mode\n"
    "0600) if it is missing. The format is mosquitto_passwd's: Mosquitto reads the file too.\n"
    "The password is asked twice on the terminal or, when standard input is not a terminal,\n"
    "read from its first line. It is never taken from the command line.\n"
    "\n"
    "  -i, --iterations N  PBKDF2-HMAC-SHA512 iterations (default 10000)\n"
    "  -d, --delete        remove NAME from FILE instead\n"
    "  -h, --help          print this help\n";

/* ---- the password ---- */

static struct termios saved_tty;
static volatile sig_atomic_t tty_changed;

static void
restore_tty(void)
{
    if (tty_changed) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tty);
        tty_changed = 0;
    }
}

/* A signal while echo is off: echo back on, then die of the signal as we would have. */
static void
on_signal(int sig)
{
    restore_tty();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* One line from stdin without its "\n" or "\r\n", in a new buffer; NULL at end of input. */
static char *
read_line(size_t *len)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    size_t l = (size_t)n;
    if (l > 0 && line[l - 1] == '\n')
        l--;
    if (l > 0 && line[l - 1] == '\r')
        l--;
    line[l] = '\0';
    *len = l;
    return line;
}

static void
forget(char *s, size_t len)
{
    if (s != NULL) {
        explicit_bzero(s, len);
        free(s);
    }
}

/* Asks for the password on the terminal (stdin), without echo. */
static char *
prompt(const char *what, size_t *len)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP};
    struct sigaction sa, old[5];
    struct termios t;
    char *line;

    if (tcgetattr(STDIN_FILENO, &saved_tty) != 0) {
        fprintf(stderr, ME ": terminal: %s\n", strerror(errno));
        return NULL;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 5; i++)
        sigaction(sigs[i], &sa, &old[i]);
    t = saved_tty;
    t.c_lflag &= ~(tcflag_t)ECHO;
    t.c_lflag |= ECHONL;
    /* Echo off before the prompt: TCSAFLUSH drops what was typed before it, not after. */
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) == 0)
        tty_changed = 1;
    fputs(what, stderr);
    fflush(stderr);
    line = read_line(len);
    restore_tty();
    for (int i = 0; i < 5; i++)
        sigaction(sigs[i], &old[i], NULL);
    if (line == NULL)
        fputs("\n", stderr);
    return line;
}

/* The new password: a new buffer (forget() it), or NULL after saying why. */
static char *
get_password(size_t *len)
{
    char *pw, *again;
    size_t alen;

    if (isatty(STDIN_FILENO)) {
        if ((pw = prompt("Password: ", len)) == NULL) {
            fputs(ME ": no password given\n", stderr);
            return NULL;
        }
        if ((again = prompt("Password again: ", &alen)) == NULL) {
            fputs(ME ": no password given\n", stderr);
            forget(pw, *len);
            return NULL;
        }
        bool same = alen == *len && memcmp(pw, again, alen) == 0;
        forget(again, alen);
        if (!same) {
            fputs(ME ": the passwords do not match\n", stderr);
            forget(pw, *len);
            return NULL;
        }
    } else if ((pw = read_line(len)) == NULL) {
        fputs(ME ": no password on standard input\n", stderr);
        return NULL;
    }
    if (*len == 0) {
        fputs(ME ": empty password\n", stderr);
        forget(pw, *len);
        return NULL;
    }
    if (*len > PASSWORD_MAX) {
        fprintf(stderr, ME ": password longer than %d bytes\n", PASSWORD_MAX);
        forget(pw, *len);
        return NULL;
    }
    return pw;
}

/* ---- the file ---- */

/* Reads all of path into a new NUL-terminated buffer; *exists false (and 0) if it is missing.
 * 0 or -1 after saying why. */
static int
read_all(const char *path, char **text, size_t *len, bool *exists, struct stat *st)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;

    *text = NULL;
    *len = 0;
    *exists = f != NULL;
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        fprintf(stderr, ME ": %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), st) != 0) {
        fprintf(stderr, ME ": %s: %s\n", path, strerror(errno));
        fclose(f);
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        fprintf(stderr, ME ": %s: not a regular file\n", path);
        fclose(f);
        return -1;
    }
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > TN_AUTH_MAX_FILE) {
                fprintf(stderr, ME ": %s: larger than %u bytes\n", path, TN_AUTH_MAX_FILE);
                goto fail;
            }
            cap = cap ? cap * 2 : 4096;
            buf = tn_xrealloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (r == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, ME ": %s: read error\n", path);
        goto fail;
    }
    fclose(f);
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
fail:
    free(buf);
    fclose(f);
    return -1;
}

/* Whether the line (without its end) is the entry for name. */
static bool
is_user_line(const char *line, size_t n, const char *name)
{
    size_t nl = strlen(name);
    return n > nl && line[nl] == ':' && memcmp(line, name, nl) == 0 && line[0] != '#';
}

/* Writes data to path through a temporary file in the same folder and rename(2). The new file
 * gets the old one's mode and owner (if we may), or mode 0600. 0 or -1 after saying why. */
static int
write_atomic(const char *path, const char *data, size_t len, bool existed, const struct stat *st)
{
    char target[PATH_MAX], tmp[PATH_MAX + 8], dir[PATH_MAX];
    struct stat lst;
    int fd = -1, rc = -1;

    /* Through a symbolic link: replace the file it names, not the link. */
    if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode)) {
        if (realpath(path, target) == NULL) {
            fprintf(stderr, ME ": %s: %s\n", path, strerror(errno));
            return -1;
        }
    } else if (snprintf(target, sizeof target, "%s", path) >= (int)sizeof target) {
        fprintf(stderr, ME ": %s: path too long\n", path);
        return -1;
    }
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", target);
    snprintf(dir, sizeof dir, "%s", target);
    fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
    if (fd < 0) {
        fprintf(stderr, ME ": %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    if (existed) {
        if (fchmod(fd, st->st_mode & 07777) != 0) {
            fprintf(stderr, ME ": %s: chmod: %s\n", tmp, strerror(errno));
            goto out;
        }
        if ((st->st_uid != geteuid() || st->st_gid != getegid()) &&
            fchown(fd, st->st_uid, st->st_gid) != 0)
            fprintf(stderr,
                    ME ": warning: %s: cannot keep its owner (%s); it now belongs to "
                       "this user\n",
                    path, strerror(errno));
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fprintf(stderr, ME ": %s: %s\n", tmp, w < 0 ? strerror(errno) : "short write");
            goto out;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        fprintf(stderr, ME ": %s: fsync: %s\n", tmp, strerror(errno));
        goto out;
    }
    int cr = close(fd);
    fd = -1;
    if (cr != 0) {
        fprintf(stderr, ME ": %s: close: %s\n", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, target) != 0) {
        fprintf(stderr, ME ": rename %s to %s: %s\n", tmp, target, strerror(errno));
        goto out;
    }
    tmp[0] = '\0';
    /* The rename is durable once the folder's entry is. */
    fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        fprintf(stderr, ME ": %s: fsync: %s\n", dir, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (tmp[0] != '\0')
        unlink(tmp);
    return rc;
}

/* ---- the command ---- */

int
tn_ctl_passwd(int argc, char **argv)
{
    static const struct option opts[] = {
        {"iterations", required_argument, NULL, 'i'},
        {"delete", no_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    unsigned long iterations = TN_USERS_DEFAULT_ITERATIONS;
    bool del = false, given_iterations = false, exists;
    char *text = NULL, *pw = NULL, *out = NULL, line[TN_USERS_HASH_MAX + 1024], err[512];
    size_t len = 0, pwlen = 0, olen = 0;
    struct stat st;
    tn_users *users = NULL;
    int ch, ret = 1;

    memset(&st, 0, sizeof st);
    line[0] = '\0';
    opterr = 0; /* our own messages, prefixed "ternctl passwd" */
    while ((ch = getopt_long(argc, argv, ":i:dh", opts, NULL)) != -1) {
        switch (ch) {
        case 'i': {
            char *end;
            errno = 0;
            iterations = strtoul(optarg, &end, 10);
            if (optarg[0] < '0' || optarg[0] > '9' || *end != '\0' || errno != 0 ||
                iterations == 0 || iterations > INT_MAX) {
                fprintf(stderr, ME ": --iterations %s: expected 1 to %d\n", optarg, INT_MAX);
                return 2;
            }
            given_iterations = true;
            break;
        }
        case 'd':
            del = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        case ':':
            fprintf(stderr, ME ": %s needs a value\n", argv[optind - 1]);
            fputs(usage, stderr);
            return 2;
        default:
            if (optopt)
                fprintf(stderr, ME ": unknown option -%c\n", optopt);
            else
                fprintf(stderr, ME ": unknown option %s\n", argv[optind - 1]);
            fputs(usage, stderr);
            return 2;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, ME ": expected FILE and NAME\n");
        fputs(usage, stderr);
        return 2;
    }
    if (del && given_iterations) {
        fprintf(stderr, ME ": --iterations makes no sense with --delete\n");
        return 2;
    }
    const char *path = argv[optind], *name = argv[optind + 1];
    if (!tn_users_name_is_valid(name)) {
        fprintf(stderr,
                ME ": invalid user name \"%s\" (empty, starting with '#', a space or a tab, or "
                   "holding ':' or a control character)\n",
                name);
        return 2;
    }
    if (strlen(name) > sizeof line - TN_USERS_HASH_MAX - 1) {
        fprintf(stderr, ME ": user name longer than %zu bytes\n",
                sizeof line - TN_USERS_HASH_MAX - 1);
        return 2;
    }

    /* The file as it is: it must load before we touch it. */
    if (read_all(path, &text, &len, &exists, &st) != 0)
        goto out;
    if (!exists && del) {
        fprintf(stderr, ME ": %s: %s\n", path, strerror(ENOENT));
        goto out;
    }
    if (exists && tn_users_parse(path, text, len, &users, err, sizeof err) != 0) {
        fprintf(stderr, ME ": %s; the file is left as it is\n", err);
        goto out;
    }
    tn_users_free(users);
    users = NULL;

    if (!del) {
        if ((pw = get_password(&pwlen)) == NULL)
            goto out;
        int rc = tn_users_make_line(name, (const uint8_t *)pw, pwlen, (unsigned)iterations, line,
                                    sizeof line);
        if (rc != 0) {
            fprintf(stderr, ME ": cannot hash the password: %s\n", tn_strerror(rc));
            goto out;
        }
    }

    /* The new contents: every line as it was, but name's. */
    out = tn_xmalloc(len + strlen(line) + 2);
    bool found = false;
    const char *p = text ? text : "", *end = p + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *next = nl ? nl + 1 : end;
        size_t n = (size_t)((nl ? nl : end) - p);
        size_t content = n > 0 && p[n - 1] == '\r' ? n - 1 : n;
        if (!found && is_user_line(p, content, name)) {
            found = true;
            if (!del) { /* in place, with the line's own end */
                size_t ll = strlen(line);
                memcpy(out + olen, line, ll);
                olen += ll;
                memcpy(out + olen, p + content, (size_t)(next - p) - content);
                olen += (size_t)(next - p) - content;
            }
        } else {
            memcpy(out + olen, p, (size_t)(next - p));
            olen += (size_t)(next - p);
        }
        p = next;
    }
    if (del && !found) {
        fprintf(stderr, ME ": %s: no user \"%s\"\n", path, name);
        goto out;
    }
    if (!del && !found) {
        if (olen > 0 && out[olen - 1] != '\n')
            out[olen++] = '\n';
        size_t ll = strlen(line);
        memcpy(out + olen, line, ll);
        olen += ll;
        out[olen++] = '\n';
    }
    if (write_atomic(path, out, olen, exists, &st) != 0)
        goto out;
    ret = 0;
out:
    explicit_bzero(line, sizeof line);
    forget(pw, pwlen);
    free(out);
    free(text);
    return ret;
}
