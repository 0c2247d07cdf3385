/*
 * ini.c - parser for cdnfs.conf and ~/.aws/{config,credentials} (see include/ini.h).
 *
 * One pass over the text, line by line (LF or CRLF; a leading UTF-8 BOM is
 * skipped).  Each line is copied into a scratch buffer, NUL-terminated and
 * cut up in place, so the callback gets C strings that live until it returns.
 * A '#' or ';' starts a comment only as the first non-blank character of a
 * line (or after a section header's ']'): values are verbatim, since URLs
 * and Cache-Control values may contain '#' and ';'.
 *
 * State: the current section and subsection, kept in bufs across lines.
 * No shared state, no locking.
 */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "ini.h"

struct ini_state {
	ini_fn fn;
	void *arg;
	struct buf *err;        /* caller's; written only on failure */
	struct buf section;     /* "" before the first header */
	struct buf subsection;  /* valid when has_sub */
	int has_sub;
	int line;               /* 1-based number of the current line */
	int reported;           /* err holds the message of this failure */
	int header_calls;       /* call fn with key NULL at each section header */
};

static int is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static char *skip_blanks(char *s)
{
	while (is_blank(*s))
		s++;
	return s;
}

/* Trim blanks at both ends, in place. */
static char *trim(char *s)
{
	size_t n;

	s = skip_blanks(s);
	n = strlen(s);
	while (n > 0 && is_blank(s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* Replace err with "LINE: message"; returns rc for the caller to pass on. */
PRINTF(3, 4) static int ini_fail(struct ini_state *st, int rc, const char *fmt, ...)
{
	va_list ap;

	st->reported = 1;
	if (!st->err)
		return rc;
	buf_reset(st->err);
	va_start(ap, fmt);
	if (buf_addf(st->err, "%d: ", st->line) == 0 && buf_vaddf(st->err, fmt, ap) < 0) {
		/* out of memory: the error code alone has to do */
	}
	va_end(ap);
	return rc;
}

/* Parse the quoted subsection starting after the opening '"'; *end is set
 * just past the closing quote.  Only \" and \\ are escapes. */
static int parse_subsection(struct ini_state *st, char *s, char **end)
{
	int rc;

	buf_reset(&st->subsection);
	for (; *s != '"'; s++) {
		if (*s == '\0')
			return ini_fail(st, -EINVAL, "unterminated section header");
		if (*s == '\\') {
			s++;
			if (*s == '\0')
				return ini_fail(st, -EINVAL, "unterminated section header");
			if (*s != '"' && *s != '\\')
				return ini_fail(st, -EINVAL,
						"invalid escape in subsection (only \\\" and \\\\)");
		}
		rc = buf_addch(&st->subsection, *s);
		if (rc < 0)
			return rc;
	}
	/* Make "" a real (empty, non-NULL) subsection. */
	rc = buf_add(&st->subsection, "", 0);
	if (rc < 0)
		return rc;
	*end = s + 1;
	return 0;
}

/* After ']' only blanks or a comment may follow. */
static int check_header_end(struct ini_state *st, char *s)
{
	s = skip_blanks(s);
	if (*s != '\0' && *s != '#' && *s != ';')
		return ini_fail(st, -EINVAL, "unexpected text after section header");
	return 0;
}

/* "[section]" or "[section "subsection"]"; s points after the '['. */
static int parse_header(struct ini_state *st, char *s)
{
	char *name = s, *rest;
	int rc;

	s += strcspn(s, "\"]");
	if (*s == '\0')
		return ini_fail(st, -EINVAL, "unterminated section header");
	st->has_sub = *s == '"';
	rest = s + 1;
	*s = '\0';
	name = trim(name);
	if (*name == '\0')
		return ini_fail(st, -EINVAL, "empty section name");
	buf_reset(&st->section);
	rc = buf_addstr(&st->section, name);
	if (rc < 0)
		return rc;
	if (!st->has_sub)
		return check_header_end(st, rest);
	rc = parse_subsection(st, rest, &rest);
	if (rc < 0)
		return rc;
	rest = skip_blanks(rest);
	if (*rest != ']')
		return ini_fail(st, -EINVAL,
				*rest ? "expected ']' after subsection" :
					"unterminated section header");
	return check_header_end(st, rest + 1);
}

/* Strip one pair of surrounding double quotes; the inside is verbatim. */
static int unquote(struct ini_state *st, char **value)
{
	char *v = *value;
	size_t n = strlen(v);

	if (v[0] != '"')
		return 0;
	if (n < 2 || v[n - 1] != '"')
		return ini_fail(st, -EINVAL, "unterminated quoted value");
	v[n - 1] = '\0';
	*value = v + 1;
	return 0;
}

/* Hand one key to the callback; its message gets the line prefix here. */
static int ini_call(struct ini_state *st, const char *key, const char *value)
{
	struct buf msg;
	int rc;

	buf_init(&msg, 0);
	rc = st->fn(st->arg, buf_str(&st->section),
		    st->has_sub ? buf_str(&st->subsection) : NULL, key, value, st->line, &msg);
	/* The contract says -errno; never let a positive value look like success. */
	if (rc > 0)
		rc = -EINVAL;
	if (rc < 0 && msg.len)
		rc = ini_fail(st, rc, "%s", buf_str(&msg));
	buf_release(&msg);
	return rc;
}

/* "key = value" */
static int parse_pair(struct ini_state *st, char *s)
{
	char *eq = strchr(s, '='), *key, *value;
	int rc;

	if (!eq)
		return ini_fail(st, -EINVAL, "expected 'key = value'");
	*eq = '\0';
	key = trim(s);
	value = trim(eq + 1);
	if (*key == '\0')
		return ini_fail(st, -EINVAL, "empty key");
	rc = unquote(st, &value);
	if (rc < 0)
		return rc;
	return ini_call(st, key, value);
}

static int parse_line(struct ini_state *st, char *s)
{
	int rc;

	s = trim(s);
	if (*s == '\0' || *s == '#' || *s == ';')
		return 0;
	if (*s == '[') {
		rc = parse_header(st, s + 1);
		if (rc == 0 && st->header_calls)
			rc = ini_call(st, NULL, NULL);
		return rc;
	}
	return parse_pair(st, s);
}

int ini_parse(const char *text, size_t len, ini_fn fn, void *arg, struct buf *err)
{
	return ini_parse_ex(text, len, fn, arg, err, 0);
}

int ini_parse_ex(const char *text, size_t len, ini_fn fn, void *arg, struct buf *err,
		 int header_calls)
{
	struct ini_state st = { .fn = fn, .arg = arg, .err = err, .header_calls = header_calls };
	const char *p = text, *end = text + len, *nl;
	struct buf line;
	int rc = 0;

	buf_init(&st.section, 0);
	buf_init(&st.subsection, 0);
	buf_init(&line, 0);
	if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3; /* UTF-8 byte order mark, as Windows editors write */
	while (rc == 0 && p < end) {
		st.line++;
		nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			nl = end;
		buf_reset(&line);
		rc = buf_add(&line, p, (size_t)(nl - p));
		if (rc == 0 && memchr(p, '\0', (size_t)(nl - p)))
			rc = ini_fail(&st, -EINVAL, "unexpected NUL byte");
		if (rc == 0)
			rc = parse_line(&st, line.data);
		p = nl + 1;
	}
	/* Failures without a message of their own (ENOMEM, E2BIG, a silent callback). */
	if (rc < 0 && !st.reported)
		rc = ini_fail(&st, rc, "%s", strerror(-rc));
	buf_release(&line);
	buf_release(&st.subsection);
	buf_release(&st.section);
	return rc;
}
