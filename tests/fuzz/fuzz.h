/*
 * fuzz.h - what the libFuzzer targets in tests/fuzz/ share: the entry points'
 * prototypes (the warnings want them), a quiet log, and a way to take a
 * NUL-terminated string out of the input.
 *
 * Every target must be deterministic and keep no state between inputs
 * (besides what LLVMFuzzerInitialize sets up once), and abort() on a broken
 * invariant: libFuzzer then saves the input as a crash.
 */
#ifndef CDNFS_FUZZ_H
#define CDNFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Fail the input: print why, then abort so libFuzzer keeps it. */
#define FUZZ_CHECK(cond)                                                           \
	do {                                                                       \
		if (!(cond)) {                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,      \
				__LINE__, #cond);                                  \
			abort();                                                   \
		}                                                                  \
	} while (0)

/* Only errors from the library (malformed input is expected, not news). */
static inline void fuzz_quiet(void)
{
	log_set_level(LOGL_ERROR);
}

/* A malloc'd NUL-terminated copy of data[0..size) (NULL when out of
 * memory, which the targets treat as "skip this input"). */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s) {
		memcpy(s, data, size);
		s[size] = '\0';
	}
	return s;
}

/* Split off the input up to the first '\n' (or all of it) as a string;
 * *data and *size advance past it and the newline. */
static inline char *fuzz_take_line(const uint8_t **data, size_t *size)
{
	const uint8_t *nl = memchr(*data, '\n', *size);
	size_t n = nl ? (size_t)(nl - *data) : *size;
	char *s = fuzz_strndup(*data, n);

	*data += nl ? n + 1 : n;
	*size -= nl ? n + 1 : n;
	return s;
}

#endif
