/*
 * buf.h - a growable byte buffer with a hard cap.
 *
 * The contents are always NUL-terminated (data[len] == 0) once anything was
 * added, so a buffer of text can be used as a C string.  Every buffer has a
 * cap (max): an append that would grow past it fails with -E2BIG, and any
 * failed append releases the buffer (like curl's dynbuf), so callers can
 * propagate the error without cleaning up a half-built value.
 *
 * Threads: a buffer is owned by one thread at a time; no locking inside.
 */
#ifndef CDNFS_BUF_H
#define CDNFS_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include "compat.h"

#define BUF_DEFAULT_MAX ((size_t)64 << 20) /* 64 MiB */

struct buf {
	char *data;  /* NULL until the first append */
	size_t len;  /* bytes used, not counting the terminating NUL */
	size_t cap;  /* bytes allocated */
	size_t max;  /* hard cap on len */
};

/* Initialise an empty buffer; max == 0 means BUF_DEFAULT_MAX. Never fails. */
void buf_init(struct buf *b, size_t max);
/* Free the memory; the buffer is empty (and reusable) afterwards. */
void buf_release(struct buf *b);
/* Forget the contents but keep the allocation. */
void buf_reset(struct buf *b);

/* Appends: 0 on success; -ENOMEM or -E2BIG on failure (buffer released). */
int buf_add(struct buf *b, const void *p, size_t n) WUR;
int buf_addstr(struct buf *b, const char *s) WUR;
int buf_addch(struct buf *b, char c) WUR;
int buf_addf(struct buf *b, const char *fmt, ...) PRINTF(2, 3) WUR;
int buf_vaddf(struct buf *b, const char *fmt, va_list ap) PRINTF(2, 0) WUR;

/* Make room for n more bytes without changing the contents, so pointers into
 * data stay valid over appends totalling at most n bytes.  0, -ENOMEM, -E2BIG
 * (buffer released on failure). */
int buf_reserve(struct buf *b, size_t n) WUR;

/* The contents as a C string; "" for an empty buffer (never NULL). */
const char *buf_str(const struct buf *b);

/* Hand the allocation to the caller (free() it); the buffer becomes empty.
 * Returns a NUL-terminated string ("" allocated if empty), NULL on ENOMEM. */
char *buf_detach(struct buf *b, size_t *len);

#endif
