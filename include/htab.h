/*
 * htab.h - a hash table from C-string keys to pointers.
 *
 * Keys are copied on insert and freed by the table; values are borrowed
 * pointers the caller owns (htab_free can release them with a callback).
 * Grows automatically; no shrinking.
 *
 * Threads: no internal locking; the owner's lock protects it.
 */
#ifndef CDNFS_HTAB_H
#define CDNFS_HTAB_H

#include <stddef.h>
#include <stdint.h>
#include "compat.h"

struct htab;

/* FNV-1a 64-bit of a NUL-terminated string. */
uint64_t hash_str(const char *s);

int htab_new(struct htab **out) WUR;
/* Free the table and its keys; free_val (may be NULL) is called on each value. */
void htab_free(struct htab *h, void (*free_val)(void *val));

/* The value stored under key, or NULL. */
void *htab_get(const struct htab *h, const char *key);
/* Insert or replace.  *old (if old != NULL) receives the replaced value or
 * NULL.  0 on success, -ENOMEM. */
int htab_put(struct htab *h, const char *key, void *val, void **old) WUR;
/* Remove key; returns its value or NULL if absent. */
void *htab_del(struct htab *h, const char *key);
size_t htab_count(const struct htab *h);

/* Call fn on every entry in unspecified order; stops early and returns fn's
 * value when fn returns non-zero.  fn must not insert or delete. */
int htab_foreach(const struct htab *h, int (*fn)(const char *key, void *val, void *arg),
		 void *arg);

#endif
