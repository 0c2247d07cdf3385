/*
 * compress.h - gzip and brotli, file to file, streaming.
 *
 * Works on file descriptors so a staged upload of any size is compressed with
 * bounded memory.  Reads in_fd from its current offset to EOF; writes out_fd
 * from its current offset.
 *
 * Threads: no shared state; call from any thread.
 */
#ifndef CDNFS_COMPRESS_H
#define CDNFS_COMPRESS_H

#include <stdint.h>
#include "compat.h"

enum compress_kind {
	COMPRESS_NONE = 0,
	COMPRESS_GZIP = 1,
	COMPRESS_BR = 2,
};

/* "none"/"gzip"/"br" -> kind; -EINVAL otherwise. */
int compress_parse(const char *s) WUR;
/* kind -> "none"/"gzip"/"br". */
const char *compress_name(enum compress_kind kind);
/* kind -> the Content-Encoding value ("gzip", "br"), NULL for none. */
const char *compress_encoding(enum compress_kind kind);
/* Content-Encoding value -> kind, -EINVAL for unknown ones. */
int compress_from_encoding(const char *enc) WUR;

/* Compress in_fd into out_fd.  *out_len receives bytes written.
 * 0 or -errno (-EIO for a codec failure). */
int compress_fd(enum compress_kind kind, int in_fd, int out_fd, uint64_t *out_len) WUR;
/* Decompress in_fd into out_fd, failing with -EFBIG past max_out bytes and
 * -EBADMSG on corrupt input. */
int decompress_fd(enum compress_kind kind, int in_fd, int out_fd, uint64_t max_out,
		  uint64_t *out_len) WUR;

#endif
