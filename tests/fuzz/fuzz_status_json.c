/*
 * fuzz_status_json.c - libFuzzer target for the JSON that cdnfs writes: the
 * CDN part of the user.cdnfs.status xattr (cdn_stats_json_of, whose
 * strings are a provider's error message, cut to fit, and the month), and
 * the Cloudflare purge body (cdn_cloudflare_body, whose strings come from
 * keys).  The rest of user.cdnfs.status (fs/xattr.c ops_status_json) is
 * fixed keys and integers around cdn_stats_json.
 *
 * Every output goes through the strict RFC 8259 validator below (UTF-8
 * checked to RFC 3629: no overlong forms, surrogates or stray bytes; no raw
 * control characters; escapes and surrogate pairs well-formed; numbers by
 * the grammar; nothing after the value) and aborts when it is not valid
 * JSON.  Strings that were valid UTF-8 must decode back to themselves.
 *
 * Input: byte 0 picks the mode.  0: stats (counters from the next bytes,
 * then the month line, the rest the last error).  1: Cloudflare body
 * (lines are the items).  2: a Cloudflare API answer through
 * cdn_cloudflare_judge (a JSON reader), whose message then becomes the
 * last error as cdn.c records it ("%.255s").
 */
#include <errno.h>

#include "cdn_int.h"
#include "fuzz.h"

#define MAX_STRINGS 256

/* The validator's state; decoded strings are kept for comparison. */
struct jv {
	const unsigned char *p, *end;
	int depth;
	struct buf str[MAX_STRINGS];
	size_t nstr;
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	return 0;
}

/* Code point of the UTF-8 sequence at p (length *n), -1 when invalid. */
static long utf8_decode(const unsigned char *p, const unsigned char *end, size_t *n)
{
	static const long min[] = { 0, 0, 0x80, 0x800, 0x10000 };
	long cp;
	size_t len = p[0] < 0x80 ? 1 : (p[0] & 0xe0) == 0xc0 ? 2 : (p[0] & 0xf0) == 0xe0 ? 3
		   : (p[0] & 0xf8) == 0xf0 ? 4 : 0;

	if (!len || (size_t)(end - p) < len)
		return -1;
	cp = len == 1 ? p[0] : p[0] & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return -1;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*n = len;
	return cp;
}

static int utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
	size_t n;

	while (p < end) {
		if (utf8_decode(p, end, &n) < 0)
			return 0;
		p += n;
	}
	return 1;
}

static void ws(struct jv *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static long hex4(struct jv *j)
{
	long v = 0;

	if (j->end - j->p < 4)
		return -1;
	for (int i = 0; i < 4; i++, j->p++) {
		int c = *j->p;
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;

		if (d < 0)
			return -1;
		v = v << 4 | d;
	}
	return v;
}

static void put_cp(struct buf *b, long cp)
{
	char u[4];
	size_t n;

	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | cp >> 6);
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | cp >> 12);
		u[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | cp >> 18);
		u[1] = (char)(0x80 | (cp >> 12 & 0x3f));
		u[2] = (char)(0x80 | (cp >> 6 & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	if (buf_add(b, u, n) < 0)
		abort();
}

/* \uXXXX (the "\u" already read), a surrogate pair as one code point. */
static long escape_u(struct jv *j)
{
	long cp = hex4(j), lo;

	if (cp < 0 || (cp >= 0xdc00 && cp <= 0xdfff))
		return -1;
	if (cp < 0xd800 || cp > 0xdbff)
		return cp;
	if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
		return -1;
	j->p += 2;
	lo = hex4(j);
	if (lo < 0xdc00 || lo > 0xdfff)
		return -1;
	return 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
}

static int string(struct jv *j)
{
	static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
	struct buf *b;
	size_t n;
	long cp;

	FUZZ_CHECK(j->nstr < MAX_STRINGS);
	b = &j->str[j->nstr++];
	buf_init(b, 0);
	j->p++; /* the opening quote */
	while (j->p < j->end && *j->p != '"') {
		if (*j->p < 0x20)
			return -1;
		if (*j->p == '\\') {
			const char *e;

			if (++j->p >= j->end)
				return -1;
			if (*j->p == 'u') {
				j->p++;
				if ((cp = escape_u(j)) < 0)
					return -1;
				put_cp(b, cp);
				continue;
			}
			e = memchr(esc_in, *j->p, sizeof(esc_in) - 1);
			if (!e || *j->p == 0)
				return -1;
			put_cp(b, esc_out[e - esc_in]);
			j->p++;
			continue;
		}
		if ((cp = utf8_decode(j->p, j->end, &n)) < 0)
			return -1;
		put_cp(b, cp);
		j->p += n;
	}
	if (j->p >= j->end)
		return -1;
	j->p++;
	return 0;
}

static int digits(struct jv *j)
{
	const unsigned char *s = j->p;

	while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
		j->p++;
	return j->p > s ? 0 : -1;
}

static int number(struct jv *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p < j->end && *j->p == '0')
		j->p++;
	else if (j->p >= j->end || *j->p < '1' || *j->p > '9' || digits(j) < 0)
		return -1;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (digits(j) < 0)
			return -1;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (digits(j) < 0)
			return -1;
	}
	return 0;
}

static int value(struct jv *j);

/* Object or array: open is '{' or '['. */
static int compound(struct jv *j, unsigned char open)
{
	unsigned char close = open == '{' ? '}' : ']';

	if (++j->depth > 64)
		return -1;
	j->p++;
	ws(j);
	if (j->p < j->end && *j->p == close) {
		j->p++;
		j->depth--;
		return 0;
	}
	for (;;) {
		ws(j);
		if (open == '{') {
			if (j->p >= j->end || *j->p != '"' || string(j) < 0)
				return -1;
			ws(j);
			if (j->p >= j->end || *j->p++ != ':')
				return -1;
		}
		if (value(j) < 0)
			return -1;
		ws(j);
		if (j->p >= j->end)
			return -1;
		if (*j->p == close)
			break;
		if (*j->p++ != ',')
			return -1;
	}
	j->p++;
	j->depth--;
	return 0;
}

static int literal(struct jv *j, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
		return -1;
	j->p += n;
	return 0;
}

static int value(struct jv *j)
{
	ws(j);
	if (j->p >= j->end)
		return -1;
	switch (*j->p) {
	case '{':
	case '[': return compound(j, *j->p);
	case '"': return string(j);
	case 't': return literal(j, "true");
	case 'f': return literal(j, "false");
	case 'n': return literal(j, "null");
	default: return number(j);
	}
}

static void jv_release(struct jv *j)
{
	for (size_t i = 0; i < j->nstr; i++)
		buf_release(&j->str[i]);
	j->nstr = 0;
}

/* Abort unless text is one valid JSON value; strings kept in j. */
static void must_be_json(const struct buf *text, struct jv *j)
{
	int rc;

	memset(j, 0, sizeof(*j));
	j->p = (const unsigned char *)buf_str(text);
	j->end = j->p + text->len;
	rc = value(j);
	ws(j);
	if (rc < 0 || j->p != j->end) {
		fprintf(stderr, "invalid JSON at offset %zu: %s\n",
			(size_t)(j->p - (const unsigned char *)buf_str(text)), buf_str(text));
		FUZZ_CHECK(!"output is valid JSON");
	}
}

/* A string that was valid UTF-8 decodes back to itself. */
static void same_string(const struct buf *decoded, const char *orig)
{
	if (utf8_valid(orig))
		FUZZ_CHECK(decoded->len == strlen(orig) &&
			   memcmp(buf_str(decoded), orig, decoded->len) == 0);
}

static void check_stats(const struct cdn_stats *s)
{
	struct buf out;
	struct jv j;

	buf_init(&out, 0);
	FUZZ_CHECK(cdn_stats_json_of(s, &out) == 0);
	must_be_json(&out, &j);
	/* ... "month": M, "month_paths": N, "last_error": E } */
	FUZZ_CHECK(j.nstr == 16);
	same_string(&j.str[12], s->month);
	same_string(&j.str[15], s->last_error);
	jv_release(&j);
	buf_release(&out);
}

static void fuzz_stats(const uint8_t *data, size_t size)
{
	struct cdn_stats s;
	uint64_t *counters[] = { &s.pending, &s.in_flight, &s.in_flight_paths, &s.in_progress,
				 &s.requests, &s.batches, &s.paths_sent, &s.failures,
				 &s.dropped, &s.month_paths };
	char *month;

	memset(&s, 0, sizeof(s));
	s.provider = size ? (enum cdn_provider)(data[0] % 3) : CDN_NONE;
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]) && size; i++) {
		/* a few bytes each, spread over the range by a shift */
		*counters[i] = (uint64_t)data[0] << (data[0] % 57);
		data++;
		size--;
	}
	month = fuzz_take_line(&data, &size);
	if (!month)
		return;
	snprintf(s.month, sizeof(s.month), "%.7s", month);
	snprintf(s.last_error, sizeof(s.last_error), "%.*s", (int)(size > 255 ? 255 : size),
		 (const char *)data);
	check_stats(&s);
	free(month);
}

static void fuzz_cloudflare_body(const uint8_t *data, size_t size)
{
	char *items[64];
	size_t n = 0;
	struct buf out;
	struct jv j;
	enum cdn_batch_kind kind;
	int rc;

	if (!size)
		return;
	kind = data[0] & 1 ? CDN_BATCH_PREFIXES : CDN_BATCH_PATHS;
	data++;
	size--;
	while (size && n < 64)
		items[n++] = fuzz_take_line(&data, &size);
	for (size_t i = 0; i < n; i++)
		if (!items[i])
			goto out;
	buf_init(&out, 0);
	rc = cdn_cloudflare_body(&out, kind, items, n);
	FUZZ_CHECK(n ? rc == 0 : rc == -EINVAL);
	if (rc == 0) {
		must_be_json(&out, &j);
		FUZZ_CHECK(j.nstr == n + 1);
		for (size_t i = 0; i < n; i++)
			same_string(&j.str[i + 1], items[i]);
		jv_release(&j);
	}
	buf_release(&out);
out:
	for (size_t i = 0; i < n; i++)
		free(items[i]);
}

static void fuzz_judge(const uint8_t *data, size_t size)
{
	static const long statuses[] = { 200, 400, 403, 404, 429, 500, 503, 0 };
	struct cdn_result res;
	struct cdn_stats s;
	long status;

	if (!size)
		return;
	status = statuses[data[0] % 8];
	memset(&res, 0x5a, sizeof(res));
	cdn_cloudflare_judge((const char *)data + 1, size - 1, status, &res);
	FUZZ_CHECK(res.outcome >= CDN_OK && res.outcome <= CDN_REF_CLASH);
	FUZZ_CHECK(res.outcome != CDN_OK || status / 100 == 2);
	/* what it fills: the id on success, the message otherwise */
	if (res.outcome == CDN_OK)
		FUZZ_CHECK(memchr(res.id, 0, sizeof(res.id)) != NULL);
	else
		FUZZ_CHECK(memchr(res.msg, 0, sizeof(res.msg)) != NULL);
	if (res.outcome == CDN_OK)
		return;
	memset(&s, 0, sizeof(s));
	s.provider = CDN_CLOUDFLARE;
	snprintf(s.last_error, sizeof(s.last_error), "%.255s", res.msg); /* as cdn.c does */
	check_stats(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0: fuzz_stats(data + 1, size - 1); break;
	case 1: fuzz_cloudflare_body(data + 1, size - 1); break;
	default: fuzz_judge(data + 1, size - 1); break;
	}
	return 0;
}
