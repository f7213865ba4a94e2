/*
 * topictree: the wildcard index over canonical '.'-separated names.
 *
 * Canonical names and filters use '.' between levels (MQTT "a/b" is "a.b"). In a filter, a level
 * that is exactly "*" matches exactly one level, and a last level that is exactly ">" matches
 * zero or more trailing levels (so "a.>" matches "a", "a.b" and "a.b.c", as MQTT's "a/#" must
 * [MQTT-4.7.1-2]). Empty levels are levels ("a..b" has three). A filter whose first level is "*"
 * or ">" does not match a name whose first level starts with '$' [MQTT-4.7.2-1].
 *
 * One tree serves two uses:
 *  - subscriptions: tn_topictree_add(filter, value) many values per filter;
 *    tn_topictree_match(name) calls back every value whose filter matches the name;
 *  - retained messages: tn_topictree_put(name, value) one value per exact name;
 *    tn_topictree_find(filter) calls back every stored name matching the filter.
 * Use a tree for one or the other, not both. Values are opaque and never freed by the tree.
 * Nodes left empty by a remove are freed, so memory follows the live entries.
 * Thread: single owner (the loop thread).
 */
#ifndef TN_TOPICTREE_H
#define TN_TOPICTREE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tn_topictree tn_topictree;

tn_topictree *tn_topictree_new(void);
/* Frees the tree and its nodes (not the values). NULL is a no-op. */
void tn_topictree_free(tn_topictree *t);

/* True when filter is well-formed: "*" and ">" only as whole levels, ">" only last. */
bool tn_topictree_filter_valid(const char *filter);

/* Subscriptions. add: TN_EINVAL for a bad filter; the same (filter, value) may be added twice
 * and is then matched twice. remove: removes one (filter, value) entry; TN_ENOENT if absent
 * (also for a bad filter, which was never added). */
int tn_topictree_add(tn_topictree *t, const char *filter, void *value);
int tn_topictree_remove(tn_topictree *t, const char *filter, void *value);
typedef void (*tn_topictree_cb)(void *arg, const char *name, void *value);
/* Calls cb(arg, NULL, value) for every entry whose filter matches name (no wildcards in name;
 * a level spelled "*" or ">" would be an ordinary level). Entries of one filter come in the order
 * they were added. Does not allocate unless more than 16 '*' branches are pending at once.
 * cb must not modify the tree. */
void tn_topictree_match(const tn_topictree *t, const char *name, tn_topictree_cb cb, void *arg);

/* Exact names. put: stores value under name, returns the value it replaced in *old (NULL when
 * none). take: removes and returns it in *old; TN_ENOENT (and *old = NULL) if absent. get: the
 * value or NULL (a stored NULL reads as absent). old may be NULL. */
int tn_topictree_put(tn_topictree *t, const char *name, void *value, void **old);
int tn_topictree_take(tn_topictree *t, const char *name, void **old);
void *tn_topictree_get(const tn_topictree *t, const char *name);
/* Calls cb(arg, name, value) for every stored name matching filter; name is the full stored name,
 * valid during the call. A bad filter finds nothing. cb must not modify the tree. */
void tn_topictree_find(const tn_topictree *t, const char *filter, tn_topictree_cb cb, void *arg);

/* Calls cb(arg, name, value) for every stored name, '$' names included (exact-name use only).
 * cb must not modify the tree. (Added by the lead for freeing retained messages.) */
void tn_topictree_walk(const tn_topictree *t, tn_topictree_cb cb, void *arg);

/* Number of entries (subscription entries or stored names). */
size_t tn_topictree_count(const tn_topictree *t);

/* Number of '.'-separated levels of a canonical name or filter: "" is 1, "a.b" is 2, "a." is 2.
 * For limits on depth; needs no tree. name must not be NULL. */
size_t tn_topictree_levels(const char *name);

#endif
