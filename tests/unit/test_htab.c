/*
 * test_htab.c - unit tests for core/htab.c: FNV-1a vectors, insert, replace,
 * delete (backward shift keeps every other key reachable), 100k keys, foreach.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "htab.h"
#include "tap.h"

#define N 100000

static void test_hash(void)
{
	/* Published FNV-1a 64-bit test vectors. */
	ok(hash_str("") == 0xcbf29ce484222325ULL, "fnv1a64 of \"\"");
	ok(hash_str("a") == 0xaf63dc4c8601ec8cULL, "fnv1a64 of \"a\"");
	ok(hash_str("foobar") == 0x85944171f73967e8ULL, "fnv1a64 of \"foobar\"");
}

static void key_of(char *k, size_t n, int i)
{
	snprintf(k, n, "static/img/%d.png", i);
}

static int sum_fn(const char *key, void *val, void *arg)
{
	long *acc = arg;

	acc[0] += (long)(intptr_t)val;
	acc[1]++;
	if (strncmp(key, "static/img/", 11) != 0)
		acc[2]++;
	return 0;
}

static int stop_fn(const char *key, void *val, void *arg)
{
	(void)key;
	(void)val;
	return ++*(int *)arg == 3 ? 7 : 0;
}

static char val_a[] = "A", val_a2[] = "A2", val_empty[] = "empty";

static void test_basic(void)
{
	struct htab *h = NULL;
	void *old = (void *)1;
	int rc;

	rc = htab_new(&h);
	ok(rc == 0 && h, "htab_new");
	ok(htab_get(h, "a") == NULL, "get on empty table");
	ok(htab_del(h, "a") == NULL, "del on empty table");
	rc = htab_put(h, "a", val_a, &old);
	ok(rc == 0 && old == NULL, "insert reports no old value");
	rc = htab_put(h, "a", val_a2, &old);
	ok(rc == 0 && old && strcmp(old, "A") == 0, "replace reports the old value");
	is_int(htab_count(h), 1, "replace keeps the count");
	is_str(htab_get(h, "a"), "A2", "get after replace");
	rc = htab_put(h, "", val_empty, NULL);
	is_int(rc, 0, "empty string is a key");
	is_str(htab_get(h, ""), "empty", "get the empty key");
	is_str(htab_del(h, "a"), "A2", "del returns the value");
	ok(htab_get(h, "a") == NULL && htab_count(h) == 1, "gone after del");
	htab_free(h, NULL);
	htab_free(NULL, NULL);
	ok(1, "htab_free(NULL) is harmless");
}

/* Insert N keys, replace the even ones, delete every third one. */
static void fill_many(struct htab *h)
{
	char k[64];
	int rc = 0, bad = 0;

	for (int i = 0; i < N && rc == 0; i++) {
		key_of(k, sizeof(k), i);
		rc = htab_put(h, k, (void *)(intptr_t)(i + 1), NULL);
	}
	is_int(rc, 0, "insert %d keys", N);
	is_int(htab_count(h), N, "count after inserts");
	for (int i = 0; i < N; i++) {
		key_of(k, sizeof(k), i);
		bad += htab_get(h, k) != (void *)(intptr_t)(i + 1);
	}
	is_int(bad, 0, "every key found with its value");
	for (int i = 0; i < N && rc == 0; i += 2) {
		void *old = NULL;

		key_of(k, sizeof(k), i);
		rc = htab_put(h, k, (void *)(intptr_t)-(i + 1), &old);
		bad += old != (void *)(intptr_t)(i + 1);
	}
	ok(rc == 0 && bad == 0, "replace every even key");
	for (int i = 0; i < N; i += 3) {
		key_of(k, sizeof(k), i);
		bad += htab_del(h, k) == NULL;
	}
	is_int(bad, 0, "delete every third key");
	is_int(htab_count(h), N - (N + 2) / 3, "count after deletes");
}

/* Check what fill_many left; returns the sum of the surviving values. */
static long check_many(const struct htab *h)
{
	char k[64];
	long want = 0;
	int bad = 0;

	for (int i = 0; i < N; i++) {
		void *v;

		key_of(k, sizeof(k), i);
		v = htab_get(h, k);
		if (i % 3 == 0) {
			bad += v != NULL;
		} else {
			long w = i % 2 ? i + 1 : -(i + 1);

			bad += v != (void *)(intptr_t)w;
			want += w;
		}
	}
	is_int(bad, 0, "survivors keep their values, deleted keys are gone");
	return want;
}

static void test_many(void)
{
	struct htab *h = NULL;
	char k[64];
	long acc[3] = { 0, 0, 0 }, want;
	int rc = htab_new(&h), stop = 0;

	if (rc < 0) {
		ok(0, "htab_new");
		return;
	}
	fill_many(h);
	want = check_many(h);
	rc = htab_foreach(h, sum_fn, acc);
	ok(rc == 0 && acc[0] == want && acc[1] == (long)htab_count(h) && acc[2] == 0,
	   "foreach visits every entry once");
	rc = htab_foreach(h, stop_fn, &stop);
	ok(rc == 7 && stop == 3, "foreach stops at the first non-zero return");
	for (int i = 0; i < N; i++) {
		key_of(k, sizeof(k), i);
		(void)htab_del(h, k);
	}
	is_int(htab_count(h), 0, "delete everything");
	acc[1] = 0;
	rc = htab_foreach(h, sum_fn, acc);
	ok(rc == 0 && acc[1] == 0, "foreach over an emptied table");
	htab_free(h, NULL);
}

/* Random puts and deletes over few keys in a small table, checked against a
 * plain array: exercises wrap-around and backward shifting. */
static void test_random(void)
{
	struct htab *h = NULL;
	intptr_t model[40] = { 0 };
	char k[16];
	int rc = htab_new(&h), bad = 0;
	unsigned seed = 12345;
	size_t live = 0;

	for (int step = 0; step < 200000 && rc == 0; step++) {
		int i;

		seed = seed * 1103515245u + 12345u;
		i = (int)((seed >> 16) % 40);
		snprintf(k, sizeof(k), "%d", i);
		if ((seed >> 8) & 1) {
			rc = htab_put(h, k, (void *)(intptr_t)(step + 1), NULL);
			live += model[i] == 0;
			model[i] = step + 1;
		} else {
			bad += htab_del(h, k) != (void *)model[i];
			live -= model[i] != 0;
			model[i] = 0;
		}
		bad += htab_count(h) != live;
	}
	for (int i = 0; i < 40; i++) {
		snprintf(k, sizeof(k), "%d", i);
		bad += htab_get(h, k) != (void *)model[i];
	}
	ok(rc == 0 && bad == 0, "200000 random puts/deletes match a model");
	htab_free(h, NULL);
}

static int freed;

static void count_free(void *v)
{
	freed++;
	free(v);
}

static void test_free_val(void)
{
	struct htab *h = NULL;
	int rc = htab_new(&h);
	char k[16];

	for (int i = 0; i < 50 && rc == 0; i++) {
		char *v = malloc(8);

		snprintf(k, sizeof(k), "k%d", i);
		rc = v ? htab_put(h, k, v, NULL) : -ENOMEM;
		if (rc)
			free(v);
	}
	is_int(rc, 0, "insert 50 allocated values");
	htab_free(h, count_free);
	is_int(freed, 50, "htab_free calls free_val on each value");
}

int main(void)
{
	test_hash();
	test_basic();
	test_many();
	test_random();
	test_free_val();
	return tap_done();
}
