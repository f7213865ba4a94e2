/* ternctl: Tern's administration tool; main dispatches to one subcommand (ternctl.h). */
#include "tools/ternctl/ternctl.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"passwd", tn_ctl_passwd, "add, change or delete a user in a password file"},
    {"status", tn_ctl_status, "the broker's overview (version, role, connections, totals)"},
    {"queues", tn_ctl_queues, "the named queues with their depth and consumers"},
};

const char *tn_ctl_url = "http://127.0.0.1:8161";
bool tn_ctl_json;

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void
usage(FILE *f)
{
    fputs("Usage: ternctl [--url URL] [--json] [--help | --version] COMMAND [ARG]...\n"
          "Tern administration tool.\n"
          "\n"
          "  --url URL   the broker's HTTP listener (default http://127.0.0.1:8161)\n"
          "  --json      the API's JSON as it comes, instead of tables\n"
          "\n"
          "Commands:\n",
          f);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fputs("\n"
          "`ternctl COMMAND --help` describes a command.\n",
          f);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"url", required_argument, NULL, 'u'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    int ch;

    /* '+': stop at the command's name; its options are its own. */
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'u':
            tn_ctl_url = optarg;
            break;
        case 'j':
            tn_ctl_json = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("ternctl %s\n", TERN_VERSION);
            return 0;
        default:
            if (optopt)
                fprintf(stderr, "ternctl: unknown option -%c\n", optopt);
            else
                fprintf(stderr, "ternctl: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        fputs("ternctl: a command is needed\n", stderr);
        usage(stderr);
        return 2;
    }
    const char *name = argv[optind];
    if (strcmp(name, "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(name, commands[i].name) == 0) {
            int sub_argc = argc - optind;
            char **sub_argv = argv + optind;
            optind = 0; /* glibc: start afresh on the command's own argv */
            return commands[i].run(sub_argc, sub_argv);
        }
    }
    fprintf(stderr, "ternctl: unknown command \"%s\"\n", name);
    usage(stderr);
    return 2;
}
