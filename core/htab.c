/*
 * htab.c - hash table from C-string keys to borrowed pointers (see include/htab.h).
 *
 * Open addressing with linear probing over a power-of-two array of slots.
 * Each slot caches its key's hash so probing and growing never rehash or
 * strcmp needlessly.  Deletion uses backward shifting (no tombstones), so a
 * probe sequence always ends at the first empty slot.
 *
 * Owns: the slot array and a copy of every key.  Values are the caller's.
 * Invariants: cap is a power of two >= HTAB_MIN_CAP; count <= cap * 3 / 4;
 * slot.key == NULL marks an empty slot; every key sits at or after its home
 * slot (hash & mask) with no empty slot in between (cyclically).
 * Locking: none; the owner serialises access.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "htab.h"

#define HTAB_MIN_CAP 16

struct htab_slot {
	char *key;      /* owned copy; NULL = empty */
	void *val;      /* borrowed */
	uint64_t hash;  /* hash_str(key) */
};

struct htab {
	struct htab_slot *slots;
	size_t cap;   /* power of two */
	size_t count; /* occupied slots */
};

uint64_t hash_str(const char *s)
{
	uint64_t h = 14695981039346656037ULL; /* FNV-1a 64 offset basis */

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL; /* FNV-1a 64 prime */
	}
	return h;
}

int htab_new(struct htab **out)
{
	struct htab *h = NULL;
	int rc = -ENOMEM;

	*out = NULL;
	h = calloc(1, sizeof(*h));
	if (!h)
		goto out;
	h->slots = calloc(HTAB_MIN_CAP, sizeof(*h->slots));
	if (!h->slots)
		goto out;
	h->cap = HTAB_MIN_CAP;
	*out = h;
	h = NULL;
	rc = 0;
out:
	free(h);
	return rc;
}

void htab_free(struct htab *h, void (*free_val)(void *val))
{
	if (!h)
		return;
	for (size_t i = 0; i < h->cap; i++) {
		if (!h->slots[i].key)
			continue;
		free(h->slots[i].key);
		if (free_val)
			free_val(h->slots[i].val);
	}
	free(h->slots);
	free(h);
}

/* Index of key's slot, or of the empty slot where it would go. */
static size_t htab_find(const struct htab *h, const char *key, uint64_t hash)
{
	size_t mask = h->cap - 1, i = (size_t)hash & mask;

	while (h->slots[i].key) {
		if (h->slots[i].hash == hash && strcmp(h->slots[i].key, key) == 0)
			break;
		i = (i + 1) & mask;
	}
	return i;
}

/* Double the slot array, re-placing every entry. */
static int htab_grow(struct htab *h)
{
	struct htab_slot *old = h->slots, *slots;
	size_t old_cap = h->cap, cap, mask, j;

	if (size_mul(old_cap, 2, &cap) || size_mul(cap, sizeof(*slots), &j))
		return -ENOMEM;
	slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	mask = cap - 1;
	for (size_t i = 0; i < old_cap; i++) {
		if (!old[i].key)
			continue;
		for (j = (size_t)old[i].hash & mask; slots[j].key; j = (j + 1) & mask)
			;
		slots[j] = old[i];
	}
	h->slots = slots;
	h->cap = cap;
	free(old);
	return 0;
}

void *htab_get(const struct htab *h, const char *key)
{
	size_t i = htab_find(h, key, hash_str(key));

	return h->slots[i].key ? h->slots[i].val : NULL;
}

int htab_put(struct htab *h, const char *key, void *val, void **old)
{
	uint64_t hash = hash_str(key);
	size_t i = htab_find(h, key, hash);
	char *copy;
	int rc;

	if (old)
		*old = NULL;
	if (h->slots[i].key) {
		if (old)
			*old = h->slots[i].val;
		h->slots[i].val = val;
		return 0;
	}
	/* Keep the load at or below 3/4 so probe sequences stay short. */
	if ((h->count + 1) * 4 > h->cap * 3) {
		rc = htab_grow(h);
		if (rc < 0)
			return rc;
		i = htab_find(h, key, hash);
	}
	copy = strdup(key);
	if (!copy)
		return -ENOMEM;
	h->slots[i].key = copy;
	h->slots[i].val = val;
	h->slots[i].hash = hash;
	h->count++;
	return 0;
}

/* Empty slot i and shift later members of its cluster back so that no
 * lookup stops early at the hole. */
static void htab_remove_at(struct htab *h, size_t i)
{
	size_t mask = h->cap - 1, j = i, home;

	for (;;) {
		h->slots[i].key = NULL;
		for (;;) {
			j = (j + 1) & mask;
			if (!h->slots[j].key)
				return;
			home = (size_t)h->slots[j].hash & mask;
			/* j may move to i unless its home lies cyclically in (i, j]. */
			if (((j - home) & mask) >= ((j - i) & mask))
				break;
		}
		h->slots[i] = h->slots[j];
		i = j;
	}
}

void *htab_del(struct htab *h, const char *key)
{
	size_t i = htab_find(h, key, hash_str(key));
	void *val;

	if (!h->slots[i].key)
		return NULL;
	val = h->slots[i].val;
	free(h->slots[i].key);
	htab_remove_at(h, i);
	h->count--;
	return val;
}

size_t htab_count(const struct htab *h)
{
	return h->count;
}

int htab_foreach(const struct htab *h, int (*fn)(const char *key, void *val, void *arg),
		 void *arg)
{
	int rc;

	for (size_t i = 0; i < h->cap; i++) {
		if (!h->slots[i].key)
			continue;
		rc = fn(h->slots[i].key, h->slots[i].val, arg);
		if (rc)
			return rc;
	}
	return 0;
}
