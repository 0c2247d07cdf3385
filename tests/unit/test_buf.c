/*
 * test_buf.c - unit tests for core/buf.c: appends, the NUL invariant, the
 * hard cap (a failed append releases the buffer), reset, detach.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "tap.h"

static void test_empty(void)
{
	struct buf b;
	size_t len = 99;
	char *s;

	buf_init(&b, 0);
	is_int(b.max, BUF_DEFAULT_MAX, "max 0 means the default cap");
	is_str(buf_str(&b), "", "empty buffer reads as \"\"");
	ok(b.data == NULL && b.len == 0, "nothing allocated before the first append");
	s = buf_detach(&b, &len);
	ok(s && *s == '\0' && len == 0, "detach of an empty buffer gives an allocated \"\"");
	free(s);
	buf_release(&b);
	buf_release(&b);
	ok(b.data == NULL, "release twice is harmless");
}

static void test_appends(void)
{
	struct buf b;
	int rc;

	buf_init(&b, 0);
	rc = buf_addstr(&b, "hello");
	rc = rc ? rc : buf_addch(&b, ',');
	rc = rc ? rc : buf_addf(&b, " %s %d", "world", 42);
	rc = rc ? rc : buf_add(&b, "!!", 1);
	is_int(rc, 0, "appends succeed");
	is_str(buf_str(&b), "hello, world 42!", "contents");
	is_int(b.len, 16, "length");
	ok(b.data[b.len] == '\0', "NUL-terminated");
	rc = buf_add(&b, "", 0);
	is_int(rc, 0, "empty append");
	is_int(b.len, 16, "empty append keeps the length");
	buf_reset(&b);
	ok(b.len == 0 && b.data && b.data[0] == '\0', "reset keeps the allocation, empties it");
	rc = buf_add(&b, "a\0b", 3);
	ok(rc == 0 && b.len == 3 && memcmp(b.data, "a\0b", 4) == 0, "binary data with NUL");
	buf_release(&b);
}

static void test_growth(void)
{
	struct buf b;
	int rc = 0;

	buf_init(&b, 0);
	for (int i = 0; i < 100000 && rc == 0; i++)
		rc = buf_addf(&b, "%05d\n", i % 100000);
	is_int(rc, 0, "100000 formatted appends");
	is_int(b.len, 600000, "length after growth");
	ok(memcmp(b.data + 6 * 99999, "99999\n", 6) == 0, "last line intact");
	ok(b.cap > b.len && b.data[b.len] == '\0', "invariant len < cap, NUL");
	buf_release(&b);
}

static void test_cap(void)
{
	struct buf b;
	char big[300];
	size_t len;
	char *s;
	int rc;

	memset(big, 'x', sizeof(big));
	buf_init(&b, 10);
	rc = buf_add(&b, big, 10);
	is_int(rc, 0, "append up to the cap exactly");
	rc = buf_addch(&b, 'y');
	is_int(rc, -E2BIG, "one byte past the cap is -E2BIG");
	ok(b.data == NULL && b.len == 0, "a failed append releases the buffer");
	rc = buf_addf(&b, "%s", "0123456789A");
	is_int(rc, -E2BIG, "addf past the cap is -E2BIG");
	rc = buf_addstr(&b, "abc");
	is_int(rc, 0, "the buffer is usable again after a failure");
	s = buf_detach(&b, &len);
	ok(s && strcmp(s, "abc") == 0 && len == 3, "detach hands over the string");
	ok(b.data == NULL && b.len == 0 && b.cap == 0, "detach empties the buffer");
	free(s);

	buf_init(&b, 200);
	rc = buf_add(&b, big, 150);
	rc = rc ? rc : buf_add(&b, big, 50);
	ok(rc == 0 && b.len == 200, "growth near the cap clamps to max");
	buf_release(&b);
}

int main(void)
{
	test_empty();
	test_appends();
	test_growth();
	test_cap();
	return tap_done();
}
