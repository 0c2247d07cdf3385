/*
 * tap.h - a tiny TAP producer for the C unit tests.
 *
 *   ok(cond, "name %d", i);       one test point
 *   is_str(got, want, "name");    string equality, prints both on failure
 *   is_int(got, want, "name");
 *   return tap_done();            prints the plan; exit status 1 on any failure
 *
 * tests/run-unit counts "ok"/"not ok" lines across all unit binaries.
 */
#ifndef CDNFS_TAP_H
#define CDNFS_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_n, tap_fail;

__attribute__((format(printf, 2, 3), unused)) static int ok(int cond, const char *fmt, ...)
{
	va_list ap;

	tap_n++;
	if (!cond)
		tap_fail++;
	printf("%s %d - ", cond ? "ok" : "not ok", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	return cond;
}

#define is_str(got, want, ...)                                                        \
	do {                                                                          \
		const char *g_ = (got), *w_ = (want);                                \
		if (!ok(g_ && w_ && strcmp(g_, w_) == 0, __VA_ARGS__))                \
			printf("#   got:  '%s'\n#   want: '%s'\n", g_ ? g_ : "(null)", \
			       w_ ? w_ : "(null)");                                   \
	} while (0)

#define is_int(got, want, ...)                                                     \
	do {                                                                       \
		long long g_ = (long long)(got), w_ = (long long)(want);           \
		if (!ok(g_ == w_, __VA_ARGS__))                                    \
			printf("#   got:  %lld\n#   want: %lld\n", g_, w_);        \
	} while (0)

__attribute__((unused)) static int tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_fail ? 1 : 0;
}

#endif
