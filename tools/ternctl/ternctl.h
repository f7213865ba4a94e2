/*
 * ternctl: the administration tool. Private header shared by its files:
 *
 *   ternctl.c  main: global options and the table of subcommands
 *   passwd.c   `ternctl passwd`: add, change or delete a user in a password file
 *   api.c      `ternctl status`, `ternctl queues`: the broker's HTTP admin API
 *
 * A subcommand is a function taking its own argc/argv (argv[0] is the subcommand's name) that
 * parses them with getopt_long and returns the process's exit status: 0, 1 for a failure, 2
 * for a usage error. It writes errors to stderr as "ternctl NAME: what went wrong".
 */
#ifndef TN_CTL_H
#define TN_CTL_H

#include <stdbool.h>

int tn_ctl_passwd(int argc, char **argv);
/* api.c: clients of the broker's HTTP admin API at tn_ctl_url (--url), raw JSON with --json. */
int tn_ctl_status(int argc, char **argv);
int tn_ctl_queues(int argc, char **argv);
extern const char *tn_ctl_url;
extern bool tn_ctl_json;

#endif
