/*
 * test_compress.c - unit tests for core/compress.c: gzip and brotli round
 * trips (empty, 1 byte, chunk boundaries, 1 MiB random, 5 MiB text), output
 * checked with independent one-shot decoders, pipes as input, corrupt and
 * truncated input (-EBADMSG), the output cap (-EFBIG), and the name helpers.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <brotli/decode.h>
#include <zlib.h>

#include "compress.h"
#include "tap.h"

#define MIB ((size_t)1 << 20)

/* An unlinked temporary file holding n bytes, offset 0. */
static int tmp_fd(const void *data, size_t n)
{
	char path[] = "/tmp/cdnfs-test-XXXXXX";
	int fd = mkstemp(path);

	if (fd < 0)
		return -1;
	unlink(path);
	if (n && write(fd, data, n) != (ssize_t)n) {
		close(fd);
		return -1;
	}
	lseek(fd, 0, SEEK_SET);
	return fd;
}

/* The whole contents of fd (malloc'd), its size in *n. */
static unsigned char *slurp(int fd, size_t *n)
{
	struct stat st;
	unsigned char *p;

	*n = 0;
	if (fstat(fd, &st) < 0)
		return NULL;
	p = malloc((size_t)st.st_size + 1);
	if (p && pread(fd, p, (size_t)st.st_size, 0) != st.st_size) {
		free(p);
		return NULL;
	}
	*n = (size_t)st.st_size;
	return p;
}

static unsigned char *random_bytes(size_t n)
{
	unsigned char *p = malloc(n);
	uint64_t x = 0x9e3779b97f4a7c15ULL;

	for (size_t i = 0; p && i < n; i++) {
		x ^= x << 13; /* xorshift64 */
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char)x;
	}
	return p;
}

static unsigned char *text_bytes(size_t n)
{
	unsigned char *p = malloc(n + 128);
	size_t off = 0;

	for (unsigned i = 0; p && off < n; i++)
		off += (size_t)snprintf((char *)p + off, 128,
					".rule-%u { color: #%06x; margin: %upx; }\n", i,
					(i * 2654435761u) & 0xffffff, i % 97);
	return p;
}

/* Decode with zlib's one-shot path (not the code under test). */
static int gunzip_oneshot(const unsigned char *c, size_t clen, unsigned char *out,
			  size_t cap, size_t *olen)
{
	z_stream zs;
	int zrc;

	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 15 + 16) != Z_OK)
		return -1;
	zs.next_in = (unsigned char *)c;
	zs.avail_in = (uInt)clen;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	zrc = inflate(&zs, Z_FINISH);
	*olen = cap - zs.avail_out;
	inflateEnd(&zs);
	return zrc == Z_STREAM_END && zs.avail_in == 0 ? 0 : -1;
}

static int independent_decode(enum compress_kind kind, const unsigned char *c, size_t clen,
			      const unsigned char *want, size_t n)
{
	unsigned char *out = malloc(n + 1);
	size_t olen = n + 1;
	int rc = -1;

	if (!out)
		return -1;
	if (kind == COMPRESS_GZIP)
		rc = gunzip_oneshot(c, clen, out, n + 1, &olen);
	else if (BrotliDecoderDecompress(clen, c, &olen, out) == BROTLI_DECODER_RESULT_SUCCESS)
		rc = 0;
	if (rc == 0 && (olen != n || (n && memcmp(out, want, n) != 0)))
		rc = -1;
	free(out);
	return rc;
}

/* Compress data into a temp file; returns its fd at offset 0 or -1. */
static int compress_to_fd(enum compress_kind kind, const void *data, size_t n, uint64_t *clen)
{
	int in = tmp_fd(data, n), c = tmp_fd(NULL, 0), rc = -1;

	if (in >= 0 && c >= 0)
		rc = compress_fd(kind, in, c, clen);
	if (in >= 0)
		close(in);
	if (rc < 0) {
		if (c >= 0)
			close(c);
		return -1;
	}
	lseek(c, 0, SEEK_SET);
	return c;
}

/* Decompress the bytes c[0..clen) with the code under test. */
static int decompress_buf(enum compress_kind kind, const void *c, size_t clen, uint64_t max,
			  unsigned char **out, size_t *olen)
{
	int in = tmp_fd(c, clen), o = tmp_fd(NULL, 0), rc = -EIO;
	uint64_t len = 0;

	*out = NULL;
	if (in >= 0 && o >= 0)
		rc = decompress_fd(kind, in, o, max, &len);
	if (rc == 0) {
		*out = slurp(o, olen);
		rc = *out && *olen == len ? 0 : -EIO;
	}
	if (in >= 0)
		close(in);
	if (o >= 0)
		close(o);
	return rc;
}

static void round_trip(enum compress_kind kind, const unsigned char *data, size_t n,
		       const char *what)
{
	const char *name = compress_name(kind);
	uint64_t clen = 0;
	unsigned char *c = NULL, *out = NULL;
	size_t csize = 0, olen = 0;
	int fd = compress_to_fd(kind, data, n, &clen), rc = -1;

	ok(fd >= 0, "%s: compress %s", name, what);
	if (fd >= 0)
		c = slurp(fd, &csize);
	ok(c && csize == clen, "%s: %s: out_len matches the bytes written", name, what);
	if (c && kind == COMPRESS_GZIP)
		ok(csize >= 18 && c[0] == 0x1f && c[1] == 0x8b && c[2] == 8,
		   "gzip: %s: gzip header", what);
	ok(c && independent_decode(kind, c, csize, data, n) == 0,
	   "%s: %s: an independent one-shot decoder reads it", name, what);
	if (c)
		rc = decompress_buf(kind, c, csize, UINT64_MAX, &out, &olen);
	ok(rc == 0 && olen == n && (n == 0 || memcmp(out, data, n) == 0),
	   "%s: %s: round trip", name, what);
	printf("# %s: %s: %zu -> %zu bytes\n", name, what, n, csize);
	free(out);
	free(c);
	if (fd >= 0)
		close(fd);
}

static void test_round_trips(void)
{
	unsigned char *rnd = random_bytes(MIB), *txt = text_bytes(5 * MIB);
	enum compress_kind kinds[] = { COMPRESS_GZIP, COMPRESS_BR, COMPRESS_NONE };

	if (!rnd || !txt) {
		ok(0, "allocate test data");
		goto out;
	}
	for (size_t k = 0; k < ARRAY_SIZE(kinds); k++) {
		if (kinds[k] == COMPRESS_NONE) {
			/* A copy: only the round trip applies. */
			unsigned char *o = NULL;
			size_t olen = 0;
			int rc = decompress_buf(COMPRESS_NONE, txt, 1000, UINT64_MAX, &o, &olen);

			ok(rc == 0 && olen == 1000 && memcmp(o, txt, 1000) == 0, "none: copies");
			free(o);
			continue;
		}
		round_trip(kinds[k], rnd, 0, "empty");
		round_trip(kinds[k], (const unsigned char *)"x", 1, "1 byte");
		round_trip(kinds[k], rnd, 64 << 10, "64 KiB (one chunk exactly)");
		round_trip(kinds[k], rnd, (64 << 10) + 1, "64 KiB + 1");
		round_trip(kinds[k], rnd, MIB, "1 MiB random");
		round_trip(kinds[k], txt, 5 * MIB, "5 MiB text");
	}
out:
	free(rnd);
	free(txt);
}

/* Two gzip members back to back decode to the concatenation (RFC 1952). */
static void test_gzip_members(void)
{
	uint64_t l1 = 0, l2 = 0;
	int a = compress_to_fd(COMPRESS_GZIP, "hello, ", 7, &l1);
	int b = compress_to_fd(COMPRESS_GZIP, "world", 5, &l2);
	unsigned char *ca = NULL, *cb = NULL, *both = NULL, *out = NULL;
	size_t na = 0, nb = 0, olen = 0;
	int rc = -1;

	if (a >= 0 && b >= 0) {
		ca = slurp(a, &na);
		cb = slurp(b, &nb);
		both = malloc(na + nb + 4);
	}
	if (ca && cb && both) {
		memcpy(both, ca, na);
		memcpy(both + na, cb, nb);
		rc = decompress_buf(COMPRESS_GZIP, both, na + nb, UINT64_MAX, &out, &olen);
	}
	ok(rc == 0 && olen == 12 && memcmp(out, "hello, world", 12) == 0,
	   "gzip: two members decode to the concatenation");
	free(out);
	out = NULL;
	if (both) {
		memcpy(both + na, "junk", 4);
		rc = decompress_buf(COMPRESS_GZIP, both, na + 4, UINT64_MAX, &out, &olen);
		is_int(rc, -EBADMSG, "gzip: trailing garbage is -EBADMSG");
	}
	free(out);
	free(ca);
	free(cb);
	free(both);
	if (a >= 0)
		close(a);
	if (b >= 0)
		close(b);
}

/* Empty, foreign, truncated and corrupted input: all -EBADMSG. */
static void check_corrupt(enum compress_kind kind, const unsigned char *c, size_t clen,
			  unsigned char *bad)
{
	const char *name = compress_name(kind);
	size_t cuts[] = { 0, 1, 2, 10, clen / 2, clen - 1 };
	unsigned char *out = NULL;
	size_t olen = 0;
	int rc;

	rc = decompress_buf(kind, "this is not compressed data at all", 34, UINT64_MAX, &out,
			    &olen);
	is_int(rc, -EBADMSG, "%s: plain text input is -EBADMSG", name);
	free(out);
	for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
		rc = decompress_buf(kind, c, cuts[i], UINT64_MAX, &out, &olen);
		is_int(rc, -EBADMSG, "%s: truncated to %zu of %zu bytes is -EBADMSG", name,
		       cuts[i], clen);
		free(out);
	}
	memcpy(bad, c, clen);
	for (size_t i = clen / 3; i < clen / 3 + 16; i++)
		bad[i] ^= 0x5a;
	rc = decompress_buf(kind, bad, clen, UINT64_MAX, &out, &olen);
	is_int(rc, -EBADMSG, "%s: corrupt input is -EBADMSG", name);
	free(out);
	memcpy(bad, c, clen);
	bad[clen - 1] ^= 0xff; /* gzip: the length trailer; br: the last block */
	rc = decompress_buf(kind, bad, clen, UINT64_MAX, &out, &olen);
	is_int(rc, -EBADMSG, "%s: corrupt last byte is -EBADMSG", name);
	free(out);
}

/* The output cap: n bytes of output against max_out around n. */
static void check_max_out(enum compress_kind kind, const unsigned char *c, size_t clen,
			  size_t n)
{
	const char *name = compress_name(kind);
	unsigned char *out = NULL;
	size_t olen = 0;
	int rc;

	rc = decompress_buf(kind, c, clen, n - 1, &out, &olen);
	is_int(rc, -EFBIG, "%s: output one byte over max_out is -EFBIG", name);
	free(out);
	rc = decompress_buf(kind, c, clen, n, &out, &olen);
	ok(rc == 0 && olen == n, "%s: output exactly max_out is fine", name);
	free(out);
	rc = decompress_buf(kind, c, clen, 0, &out, &olen);
	is_int(rc, -EFBIG, "%s: max_out 0 is -EFBIG for non-empty output", name);
	free(out);
}

static void test_bad_input(enum compress_kind kind, const unsigned char *txt, size_t n)
{
	unsigned char *c = NULL, *bad = NULL;
	size_t clen = 0;
	uint64_t len = 0;
	int fd = compress_to_fd(kind, txt, n, &len);

	if (fd >= 0)
		c = slurp(fd, &clen);
	bad = c ? malloc(clen) : NULL;
	ok(bad != NULL, "%s: set up bad-input tests", compress_name(kind));
	if (bad) {
		check_corrupt(kind, c, clen, bad);
		check_max_out(kind, c, clen, n);
	}
	free(c);
	free(bad);
	if (fd >= 0)
		close(fd);
}

static void test_bad_inputs(void)
{
	unsigned char *txt = text_bytes(300000);

	test_bad_input(COMPRESS_GZIP, txt, 300000);
	test_bad_input(COMPRESS_BR, txt, 300000);
	free(txt);
	{
		unsigned char *o = NULL;
		size_t olen = 0;
		int rc = decompress_buf(COMPRESS_NONE, "abcdef", 6, 5, &o, &olen);

		is_int(rc, -EFBIG, "none: copy over max_out is -EFBIG");
		free(o);
	}
}

struct feeder {
	int fd;
	const unsigned char *data;
	size_t n;
};

/* Write into a pipe in small, odd-sized pieces so the reader sees short reads. */
static void *feed(void *p)
{
	struct feeder *f = p;
	size_t off = 0, step;

	while (off < f->n) {
		step = f->n - off < 777 ? f->n - off : 777;
		if (write(f->fd, f->data + off, step) != (ssize_t)step)
			break;
		off += step;
	}
	close(f->fd);
	return NULL;
}

static void test_pipe_input(enum compress_kind kind)
{
	unsigned char *txt = text_bytes(200000), *c = NULL;
	struct feeder f = { -1, txt, 200000 };
	int p[2] = { -1, -1 }, out = tmp_fd(NULL, 0), rc = -1;
	size_t clen = 0;
	uint64_t len = 0;
	pthread_t t;

	if (txt && out >= 0 && pipe(p) == 0) {
		f.fd = p[1];
		if (pthread_create(&t, NULL, feed, &f) == 0) {
			rc = compress_fd(kind, p[0], out, &len);
			pthread_join(t, NULL);
		}
		close(p[0]);
	}
	if (rc == 0)
		c = slurp(out, &clen);
	ok(rc == 0 && c && clen == len && independent_decode(kind, c, clen, txt, 200000) == 0,
	   "%s: compress from a pipe with short reads", compress_name(kind));
	free(c);
	free(txt);
	if (out >= 0)
		close(out);
}

static void test_names(void)
{
	uint64_t len = 0;

	is_int(compress_parse("none"), COMPRESS_NONE, "parse none");
	is_int(compress_parse("gzip"), COMPRESS_GZIP, "parse gzip");
	is_int(compress_parse("br"), COMPRESS_BR, "parse br");
	is_int(compress_parse("brotli"), -EINVAL, "parse brotli is -EINVAL");
	is_int(compress_parse(""), -EINVAL, "parse \"\" is -EINVAL");
	is_str(compress_name(COMPRESS_NONE), "none", "name none");
	is_str(compress_name(COMPRESS_GZIP), "gzip", "name gzip");
	is_str(compress_name(COMPRESS_BR), "br", "name br");
	ok(compress_encoding(COMPRESS_NONE) == NULL, "no Content-Encoding for none");
	is_str(compress_encoding(COMPRESS_GZIP), "gzip", "Content-Encoding gzip");
	is_str(compress_encoding(COMPRESS_BR), "br", "Content-Encoding br");
	is_int(compress_from_encoding("gzip"), COMPRESS_GZIP, "encoding gzip");
	is_int(compress_from_encoding("GZip"), COMPRESS_GZIP, "encoding is case-insensitive");
	is_int(compress_from_encoding("x-gzip"), COMPRESS_GZIP, "encoding x-gzip");
	is_int(compress_from_encoding("br"), COMPRESS_BR, "encoding br");
	is_int(compress_from_encoding("identity"), COMPRESS_NONE, "encoding identity");
	is_int(compress_from_encoding(""), COMPRESS_NONE, "empty encoding");
	is_int(compress_from_encoding(NULL), COMPRESS_NONE, "absent encoding");
	is_int(compress_from_encoding("deflate"), -EINVAL, "encoding deflate is -EINVAL");
	is_int(compress_from_encoding("gzip, br"), -EINVAL, "stacked encodings are -EINVAL");
	is_int(compress_fd((enum compress_kind)7, 0, 1, &len), -EINVAL, "unknown kind");
	is_int(decompress_fd((enum compress_kind)7, 0, 1, 1, &len), -EINVAL,
	       "unknown kind (decompress)");
	is_int(compress_fd(COMPRESS_GZIP, -1, 1, &len), -EBADF, "bad input fd is -EBADF");
}

int main(void)
{
	test_names();
	test_round_trips();
	test_gzip_members();
	test_bad_inputs();
	test_pipe_input(COMPRESS_GZIP);
	test_pipe_input(COMPRESS_BR);
	return tap_done();
}
