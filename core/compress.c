/*
 * compress.c - gzip (zlib) and brotli, streamed file descriptor to file
 * descriptor (see include/compress.h).
 *
 * Every call allocates one input and one output buffer of COMPRESS_CHUNK
 * bytes plus the codec's own state (gzip: one deflate state per thread,
 * kept for the thread's next file), so memory is bounded whatever the file
 * size.  read(2)/write(2) are retried on EINTR and short counts.
 * Decoding is strict: truncated input, bytes after the end of a brotli
 * stream, and anything the codec rejects are -EBADMSG.  A gzip file may hold
 * several members back to back (RFC 1952, as gunzip accepts); they are
 * decoded one after the other.
 * No shared state, no locking (the deflate state is thread-specific).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <brotli/decode.h>
#include <brotli/encode.h>
#include <zlib.h>

#include "compress.h"

#define COMPRESS_CHUNK ((size_t)64 << 10)
/* zlib's level 9 costs 2-3x the CPU of level 6 for well under 1% on css/js;
 * on a busy deploy that CPU is taken from the uploads (bench/ANALYSIS.md). */
#define GZIP_LEVEL 6
#define GZIP_WBITS (15 + 16) /* 32 KiB window, gzip wrapper */
#define GZIP_MEMLEVEL 8
#define BR_QUALITY 9      /* 10-11 cost several times the CPU for ~2% */
#define BR_LGWIN 22       /* 4 MiB window */

/* The streams' state shared by every codec loop. */
struct zio {
	int in_fd, out_fd;
	unsigned char *in, *out; /* COMPRESS_CHUNK bytes each */
	uint64_t total;          /* bytes written to out_fd */
	uint64_t max;            /* cap on total */
};

static const char *const kind_names[] = { "none", "gzip", "br" };

int compress_parse(const char *s)
{
	for (size_t i = 0; i < ARRAY_SIZE(kind_names); i++)
		if (strcmp(s, kind_names[i]) == 0)
			return (int)i;
	return -EINVAL;
}

const char *compress_name(enum compress_kind kind)
{
	if ((unsigned)kind < ARRAY_SIZE(kind_names))
		return kind_names[kind];
	return "none";
}

const char *compress_encoding(enum compress_kind kind)
{
	switch (kind) {
	case COMPRESS_GZIP:
		return "gzip";
	case COMPRESS_BR:
		return "br";
	default:
		return NULL;
	}
}

int compress_from_encoding(const char *enc)
{
	/* Content-Encoding tokens are case-insensitive (RFC 9110 8.4.1). */
	if (!enc || !*enc || strcasecmp(enc, "identity") == 0)
		return COMPRESS_NONE;
	if (strcasecmp(enc, "gzip") == 0 || strcasecmp(enc, "x-gzip") == 0)
		return COMPRESS_GZIP;
	if (strcasecmp(enc, "br") == 0)
		return COMPRESS_BR;
	return -EINVAL;
}

/* Read up to n bytes; fewer only at end of file.  Bytes read or -errno. */
static ssize_t read_full(int fd, unsigned char *p, size_t n)
{
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		r = read(fd, p + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Write n bytes of z->out, enforcing the output cap. */
static int emit(struct zio *z, size_t n)
{
	if (n > z->max - z->total)
		return -EFBIG;
	z->total += n;
	return write_all(z->out_fd, z->out, n);
}

static ssize_t fill(struct zio *z)
{
	return read_full(z->in_fd, z->in, COMPRESS_CHUNK);
}

/* COMPRESS_NONE: a plain copy (still bounded by max). */
static int copy_stream(struct zio *z)
{
	ssize_t n;
	int rc = 0;

	while (rc == 0 && (n = read_full(z->in_fd, z->out, COMPRESS_CHUNK)) != 0)
		rc = n < 0 ? (int)n : emit(z, (size_t)n);
	return rc;
}

static int gz_err(int zrc)
{
	switch (zrc) {
	case Z_MEM_ERROR:
		return -ENOMEM;
	case Z_DATA_ERROR:
	case Z_NEED_DICT:
		return -EBADMSG;
	default:
		return -EIO;
	}
}

/* One deflate state per thread, reset between files: zlib's ~270 KiB state
 * allocated and freed per file cost more than small files' compression
 * (glibc hands the arena back to the kernel each time).  Freed when the
 * thread exits. */
static pthread_key_t gz_key;
static pthread_once_t gz_once = PTHREAD_ONCE_INIT;
static int gz_key_ok;

static void gz_state_free(void *p)
{
	deflateEnd(p);
	free(p);
}

static void gz_key_init(void)
{
	gz_key_ok = pthread_key_create(&gz_key, gz_state_free) == 0;
}

/* This thread's deflate state, reset for a new stream; NULL on failure
 * (*zrc says why).  *owned is set when the caller must free it. */
static z_stream *gz_state(int *zrc, int *owned)
{
	z_stream *zs;

	pthread_once(&gz_once, gz_key_init);
	*owned = 0;
	zs = gz_key_ok ? pthread_getspecific(gz_key) : NULL;
	if (zs) {
		*zrc = deflateReset(zs);
		return *zrc == Z_OK ? zs : NULL;
	}
	zs = calloc(1, sizeof(*zs));
	if (!zs) {
		*zrc = Z_MEM_ERROR;
		return NULL;
	}
	*zrc = deflateInit2(zs, GZIP_LEVEL, Z_DEFLATED, GZIP_WBITS, GZIP_MEMLEVEL,
			    Z_DEFAULT_STRATEGY);
	if (*zrc != Z_OK) {
		free(zs);
		return NULL;
	}
	if (!gz_key_ok || pthread_setspecific(gz_key, zs) != 0)
		*owned = 1;
	return zs;
}

static int gz_compress(struct zio *z)
{
	z_stream *zs;
	int zrc = Z_OK, flush = Z_NO_FLUSH, rc, owned;
	ssize_t n;

	zs = gz_state(&rc, &owned);
	if (!zs)
		return gz_err(rc);
	rc = 0;
	while (rc == 0 && zrc != Z_STREAM_END) {
		n = fill(z);
		if (n < 0) {
			rc = (int)n;
			break;
		}
		flush = (size_t)n < COMPRESS_CHUNK ? Z_FINISH : Z_NO_FLUSH;
		zs->next_in = z->in;
		zs->avail_in = (uInt)n;
		do {
			zs->next_out = z->out;
			zs->avail_out = (uInt)COMPRESS_CHUNK;
			zrc = deflate(zs, flush);
			if (zrc == Z_STREAM_ERROR) {
				rc = -EIO;
				break;
			}
			rc = emit(z, COMPRESS_CHUNK - zs->avail_out);
		} while (rc == 0 && zs->avail_out == 0);
	}
	if (owned)
		gz_state_free(zs);
	return rc;
}

static int gz_inflate_chunk(struct zio *z, z_stream *zs, int *ended)
{
	int zrc, rc = 0;

	do {
		if (*ended && inflateReset(zs) != Z_OK)
			return -EIO;
		zs->next_out = z->out;
		zs->avail_out = (uInt)COMPRESS_CHUNK;
		zrc = inflate(zs, Z_NO_FLUSH);
		/* Z_BUF_ERROR means "no progress": fine when input ran out. */
		if (zrc == Z_BUF_ERROR && zs->avail_in > 0)
			return -EIO;
		if (zrc != Z_OK && zrc != Z_STREAM_END && zrc != Z_BUF_ERROR)
			return gz_err(zrc);
		*ended = zrc == Z_STREAM_END;
		rc = emit(z, COMPRESS_CHUNK - zs->avail_out);
	} while (rc == 0 && (zs->avail_in > 0 || (zs->avail_out == 0 && !*ended)));
	return rc;
}

static int gz_decompress(struct zio *z)
{
	z_stream zs;
	int ended = 0, rc;
	ssize_t n;

	memset(&zs, 0, sizeof(zs));
	rc = inflateInit2(&zs, GZIP_WBITS);
	if (rc != Z_OK)
		return gz_err(rc);
	rc = 0;
	while (rc == 0) {
		n = fill(z);
		if (n <= 0) {
			/* Input ends: fine only right after a complete member. */
			rc = n < 0 ? (int)n : ended ? 0 : -EBADMSG;
			break;
		}
		zs.next_in = z->in;
		zs.avail_in = (uInt)n;
		rc = gz_inflate_chunk(z, &zs, &ended);
	}
	inflateEnd(&zs);
	return rc;
}

static int br_compress_loop(struct zio *z, BrotliEncoderState *enc)
{
	const uint8_t *next_in = NULL;
	size_t avail_in = 0, avail_out;
	uint8_t *next_out;
	int eof = 0, rc = 0;
	ssize_t n;

	while (rc == 0 && !BrotliEncoderIsFinished(enc)) {
		if (avail_in == 0 && !eof) {
			n = fill(z);
			if (n < 0)
				return (int)n;
			eof = (size_t)n < COMPRESS_CHUNK;
			next_in = z->in;
			avail_in = (size_t)n;
		}
		next_out = z->out;
		avail_out = COMPRESS_CHUNK;
		if (!BrotliEncoderCompressStream(enc,
						 eof ? BROTLI_OPERATION_FINISH :
						       BROTLI_OPERATION_PROCESS,
						 &avail_in, &next_in, &avail_out, &next_out, NULL))
			return -EIO;
		rc = emit(z, COMPRESS_CHUNK - avail_out);
	}
	return rc;
}

static int br_compress(struct zio *z)
{
	BrotliEncoderState *enc = BrotliEncoderCreateInstance(NULL, NULL, NULL);
	int rc;

	if (!enc)
		return -ENOMEM;
	if (!BrotliEncoderSetParameter(enc, BROTLI_PARAM_QUALITY, BR_QUALITY) ||
	    !BrotliEncoderSetParameter(enc, BROTLI_PARAM_LGWIN, BR_LGWIN))
		rc = -EIO;
	else
		rc = br_compress_loop(z, enc);
	BrotliEncoderDestroyInstance(enc);
	return rc;
}

static int br_err(BrotliDecoderState *dec)
{
	BrotliDecoderErrorCode code = BrotliDecoderGetErrorCode(dec);

	/* The allocation failures are the codes -21 .. -30. */
	if (code <= BROTLI_DECODER_ERROR_ALLOC_CONTEXT_MODES &&
	    code >= BROTLI_DECODER_ERROR_ALLOC_BLOCK_TYPE_TREES)
		return -ENOMEM;
	return -EBADMSG;
}

/* After the brotli stream ended, any further input byte is corruption. */
static int br_check_trailer(struct zio *z, size_t avail_in)
{
	ssize_t n;

	if (avail_in > 0)
		return -EBADMSG;
	n = fill(z);
	if (n < 0)
		return (int)n;
	return n > 0 ? -EBADMSG : 0;
}

static int br_decompress_loop(struct zio *z, BrotliDecoderState *dec)
{
	BrotliDecoderResult res = BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT;
	const uint8_t *next_in = NULL;
	size_t avail_in = 0, avail_out;
	uint8_t *next_out;
	int rc = 0;
	ssize_t n;

	while (rc == 0 && res != BROTLI_DECODER_RESULT_SUCCESS) {
		if (res == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT) {
			n = fill(z);
			if (n <= 0)
				return n < 0 ? (int)n : -EBADMSG; /* truncated */
			next_in = z->in;
			avail_in = (size_t)n;
		}
		next_out = z->out;
		avail_out = COMPRESS_CHUNK;
		res = BrotliDecoderDecompressStream(dec, &avail_in, &next_in, &avail_out,
						    &next_out, NULL);
		if (res == BROTLI_DECODER_RESULT_ERROR)
			return br_err(dec);
		rc = emit(z, COMPRESS_CHUNK - avail_out);
	}
	return rc ? rc : br_check_trailer(z, avail_in);
}

static int br_decompress(struct zio *z)
{
	BrotliDecoderState *dec = BrotliDecoderCreateInstance(NULL, NULL, NULL);
	int rc;

	if (!dec)
		return -ENOMEM;
	rc = br_decompress_loop(z, dec);
	BrotliDecoderDestroyInstance(dec);
	return rc;
}

/* Set up buffers, run the codec function, report the output length. */
static int run(int (*codec)(struct zio *), int in_fd, int out_fd, uint64_t max,
	       uint64_t *out_len)
{
	struct zio z = { .in_fd = in_fd, .out_fd = out_fd, .max = max };
	int rc = -ENOMEM;

	if (out_len)
		*out_len = 0;
	z.in = malloc(COMPRESS_CHUNK);
	z.out = malloc(COMPRESS_CHUNK);
	if (!z.in || !z.out)
		goto out;
	rc = codec(&z);
	if (out_len)
		*out_len = z.total;
out:
	free(z.in);
	free(z.out);
	return rc;
}

int compress_fd(enum compress_kind kind, int in_fd, int out_fd, uint64_t *out_len)
{
	switch (kind) {
	case COMPRESS_NONE:
		return run(copy_stream, in_fd, out_fd, UINT64_MAX, out_len);
	case COMPRESS_GZIP:
		return run(gz_compress, in_fd, out_fd, UINT64_MAX, out_len);
	case COMPRESS_BR:
		return run(br_compress, in_fd, out_fd, UINT64_MAX, out_len);
	default:
		return -EINVAL;
	}
}

int decompress_fd(enum compress_kind kind, int in_fd, int out_fd, uint64_t max_out,
		  uint64_t *out_len)
{
	switch (kind) {
	case COMPRESS_NONE:
		return run(copy_stream, in_fd, out_fd, max_out, out_len);
	case COMPRESS_GZIP:
		return run(gz_decompress, in_fd, out_fd, max_out, out_len);
	case COMPRESS_BR:
		return run(br_decompress, in_fd, out_fd, max_out, out_len);
	default:
		return -EINVAL;
	}
}
