/*
 * compat.h - attributes and small helpers every module uses.
 *
 * WUR marks a fallible function whose result must be checked (house rule 5).
 */
#ifndef CDNFS_COMPAT_H
#define CDNFS_COMPAT_H

#include <stddef.h>
#include <stdint.h>

#define WUR __attribute__((warn_unused_result))
#define PRINTF(a, b) __attribute__((format(printf, a, b)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Overflow-checked size arithmetic: return 0 on success, -EOVERFLOW on overflow. */
static inline int size_add(size_t a, size_t b, size_t *out)
{
	return __builtin_add_overflow(a, b, out) ? -75 /* EOVERFLOW */ : 0;
}

static inline int size_mul(size_t a, size_t b, size_t *out)
{
	return __builtin_mul_overflow(a, b, out) ? -75 /* EOVERFLOW */ : 0;
}

#endif
