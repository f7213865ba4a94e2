/*
 * auth: who a client is (a password file) and what it may do (an ACL file), both in Mosquitto's
 * formats so that an operator moving from Mosquitto keeps the files mosquitto_passwd wrote.
 *
 * Both objects are loaded once, are immutable afterwards and are freed by their owner; nothing
 * here touches the event loop. Reloading means loading a new object and swapping the pointer.
 * Errors: 0 or a negative TN_E* code (core/base/base.h), with a one-line message in err (size
 * errlen; err may be NULL) of the form "FILE:LINE: what is wrong" or "FILE: what is wrong".
 */
#ifndef TN_AUTH_H
#define TN_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Files larger than this are refused (TN_ETOOBIG). */
#define TN_AUTH_MAX_FILE (64u * 1024 * 1024)

/*
 * Password file, as mosquitto_passwd (Mosquitto 2.0) writes it: one "NAME:HASH" line per user,
 * where HASH is
 *   $7$ITERATIONS$SALT$HASH  PBKDF2-HMAC-SHA512 (SALT and HASH in base64, standard alphabet
 *                            with padding; HASH is 64 bytes), or
 *   $6$SALT$HASH             SHA-512 over the password's bytes followed by the salt's (this is
 *                            not crypt(3)'s $6$).
 * Blank lines and lines starting with '#' are ignored; lines may end with "\r\n". Any other line
 * that does not parse, and a name given twice, refuse the whole file.
 */
typedef struct tn_users tn_users;

/* What tn_users_make_line() uses unless told otherwise (mosquitto_passwd 2.0 uses 101). */
#define TN_USERS_DEFAULT_ITERATIONS 10000u
/* Salt length of the lines we make (mosquitto_passwd's). */
#define TN_USERS_SALT_LEN 12
/* Room enough for any line tn_users_make_line() writes, apart from the name and its ':'. */
#define TN_USERS_HASH_MAX 160

/* Loads path into *out (a new object: free it with tn_users_free()). Returns 0, TN_ENOENT (no
 * such file), TN_EIO (cannot read it), TN_ETOOBIG (larger than TN_AUTH_MAX_FILE), TN_ENOMEM or
 * TN_EINVAL (a bad line; err names it). *out is NULL on error. */
int tn_users_load(const char *path, tn_users **out, char *err, size_t errlen);
/* The same from memory (tests, fuzzing): text need not end with '\0' and may hold any byte
 * (a NUL inside a line is a bad line); name is used in messages. */
int tn_users_parse(const char *name, const char *text, size_t len, tn_users **out, char *err,
                   size_t errlen);
/* NULL is a no-op. */
void tn_users_free(tn_users *u);
/* Users in the file. */
size_t tn_users_count(const tn_users *u);

/*
 * 0 when pw (len bytes, any bytes) is name's password; TN_EDENIED otherwise, including when
 * there is no such user, or u or name is NULL. The comparison is constant-time; an unknown
 * user costs one PBKDF2 with the iteration count most lines of the file use (the default when
 * none has $7$), so a wrong name cannot be told from a wrong password by the answer nor, for a
 * file of $7$ lines with one iteration count, by the time taken.
 * As with Mosquitto, $7$ cannot tell a password from itself followed by zero bytes (HMAC pads
 * its key with zeros).
 * Thread: safe from any number of threads at once on the same u (the libuv thread pool); it
 * takes a few milliseconds (10,000 iterations), so keep it off the loop thread. Logs nothing.
 */
int tn_users_check(const tn_users *u, const char *name, const uint8_t *pw, size_t len);

/*
 * Writes "NAME:$7$ITERATIONS$SALT$HASH" (no newline) into out, with a fresh random salt of
 * TN_USERS_SALT_LEN bytes (RAND_bytes); iterations 0 means TN_USERS_DEFAULT_ITERATIONS.
 * Returns 0, TN_EINVAL (a name that is empty, starts with '#', space or tab, or holds ':' or a
 * control character; iterations above INT_MAX), TN_ETOOBIG (outlen is too small; out then holds
 * an empty string) or TN_EIO (no randomness or a failed hash).
 */
int tn_users_make_line(const char *name, const uint8_t *pw, size_t len, unsigned iterations,
                       char *out, size_t outlen);
/* Whether tn_users_make_line() accepts name (same rules). */
bool tn_users_name_is_valid(const char *name);

/*
 * ACL file, as Mosquitto's acl_file (mosquitto.conf(5)), with two extensions:
 *   user NAME                          the lines that follow apply to NAME (rest of the line)
 *   topic [read|write|readwrite|deny] FILTER
 *                                      before any `user` line: anonymous clients only; after
 *                                      one: that user. No access word means readwrite; FILTER
 *                                      is the rest of the line and may hold spaces.
 *   pattern [read|write|readwrite|deny] FILTER
 *                                      every client, wherever the line stands, with a level's
 *                                      "%c" replaced by the client id and "%u" by the user name.
 *                                      A pattern holding %u never matches an anonymous client;
 *                                      none matches when the id or name substituted is empty
 *                                      or holds '+', '#' or '/'.
 *   queue [read|write|readwrite|deny] FILTER
 *                                      (Tern) as `topic`, for named queues. Queue names are
 *                                      matched in MQTT form, '/' between levels: the caller
 *                                      checks the queue "orders.eu" as "orders/eu".
 *   admin                              (Tern) under a `user` line: that user is an
 *                                      administrator.
 * '#' lines and blank lines are ignored; an unknown keyword or a bad filter refuses the file.
 *
 * Semantics (Mosquitto 2.0's): access is denied unless a rule grants it; a matching `deny` rule
 * (the user's or a pattern) wins over every grant. Filters match as MQTT subscriptions do: '+'
 * one level, '#' the rest including the parent level ("a/#" matches "a"), and a wildcard in the
 * first level never matches a name starting with '$'.
 *
 * No ACL loaded is a NULL tn_acl: every function below then allows everything (including
 * tn_acl_is_admin(), so an admin API must decide itself whether it needs an ACL to be loaded).
 * Thread: the checks only read the object; they take no locks and allocate nothing.
 */
typedef struct tn_acl tn_acl;

enum { TN_ACL_READ = 1, TN_ACL_WRITE = 2 };
typedef enum { TN_ACL_TOPIC = 0, TN_ACL_QUEUE = 1 } tn_acl_kind;

/* As tn_users_load() and tn_users_parse(). */
int tn_acl_load(const char *path, tn_acl **out, char *err, size_t errlen);
int tn_acl_parse(const char *name, const char *text, size_t len, tn_acl **out, char *err,
                 size_t errlen);
/* NULL is a no-op. */
void tn_acl_free(tn_acl *a);

/*
 * Whether the client (user NULL when anonymous; client_id may be NULL, then no %c pattern
 * matches) may have access (TN_ACL_READ, TN_ACL_WRITE or both) to the concrete name (no
 * wildcards: a name holding '+' or '#', or an empty one, is refused) of that kind.
 * Always true when a is NULL.
 */
bool tn_acl_allows(const tn_acl *a, const char *user, const char *client_id, tn_acl_kind kind,
                   const char *name, int access);

/*
 * Whether the subscription filter could match some name the client may read: for a filter
 * without wildcards, whether that name is readable (deny rules included); otherwise, whether
 * some rule granting read has a filter that some name matches together with this one ('$'
 * names included) and no deny rule matches every name the filter can (a deny that covers
 * part of it is left to the delivery: tn_acl_allows() on each message). The answer is for
 * SUBACK. False for an invalid filter. Always true when a is NULL.
 */
bool tn_acl_filter_readable(const tn_acl *a, const char *user, const char *client_id,
                            tn_acl_kind kind, const char *filter);

/* Whether some pattern uses %c: otherwise every answer for a user is the same whatever the
 * client id (a caller may reuse it across that user's clients). */
bool tn_acl_uses_client_id(const tn_acl *a);

/* Whether user (NULL: anonymous, never one) has an `admin` line. Always true when a is NULL. */
bool tn_acl_is_admin(const tn_acl *a, const char *user);

/* Whether filter is a valid MQTT-style filter ('+' and '#' whole levels, '#' last, not empty). */
bool tn_acl_filter_is_valid(const char *filter);

#endif
