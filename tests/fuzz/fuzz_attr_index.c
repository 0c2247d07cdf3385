/*
 * fuzz_attr_index.c - libFuzzer target for the shared attribute index's
 * reader (attrcache_import in fs/attrcache.c): the text of PREFIX.cdnfs-attrs
 * comes from the bucket, where anyone with write access may put anything.
 *
 * Input: the first line is the mount prefix, the rest the index text (passed
 * with its exact length).  A fresh attribute cache per input, in a directory
 * made once.  Checked: import answers 0 (or -ENOMEM), never takes more
 * entries than the text has lines, takes none outside the prefix; exporting
 * what was taken and importing that again takes nothing new and finds no
 * malformed line (what the writer writes, the reader reads back).
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "attrcache.h"
#include "buf.h"
#include "fuzz.h"

static char dir[] = "/tmp/cdnfs-fuzz-aidx-XXXXXX";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	if (!mkdtemp(dir))
		abort();
	return 0;
}

static size_t count_lines(const uint8_t *p, size_t n)
{
	size_t lines = n > 0;

	for (size_t i = 0; i + 1 < n; i++)
		lines += p[i] == '\n';
	return lines;
}

static int outside(const char *key, const struct ac_entry *e, void *arg)
{
	(void)e;
	return strncmp(key, arg, strlen(arg)) != 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *prefix = fuzz_take_line(&data, &size);
	char path[64];
	struct attrcache *ac = NULL;
	struct buf out;
	size_t merged = 0, bad = 0, n = 0, m2 = 0, b2 = 0;
	int rc;

	snprintf(path, sizeof(path), "%s/attrs", dir);
	unlink(path);
	if (!prefix || attrcache_open(&ac, dir) < 0)
		goto out;
	rc = attrcache_import(ac, prefix, (const char *)data, size, &merged, &bad);
	FUZZ_CHECK(rc == 0 || rc == -ENOMEM);
	FUZZ_CHECK(merged + bad <= count_lines(data, size));
	/* nothing outside the prefix was taken */
	buf_init(&out, (size_t)64 << 20);
	FUZZ_CHECK(attrcache_export(ac, "", outside, prefix, 1u << 30, &out, &n) == 0);
	FUZZ_CHECK(n == 0 && out.len == 0);
	/* the records written back read back, and add nothing */
	FUZZ_CHECK(attrcache_export(ac, prefix, NULL, NULL, 1u << 30, &out, &n) == 0);
	if (rc == 0)
		FUZZ_CHECK(n <= merged);
	rc = attrcache_import(ac, prefix, out.data ? out.data : "", out.len, &m2, &b2);
	FUZZ_CHECK(rc == 0 || rc == -ENOMEM);
	FUZZ_CHECK(m2 == 0 && b2 == 0);
	buf_release(&out);
out:
	attrcache_close(ac);
	free(prefix);
	return 0;
}
