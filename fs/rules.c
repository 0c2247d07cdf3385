/*
 * rules.c - cdnfs.conf and the per-key header rules (see fs/rules.h).
 *
 * Owns: a struct rules, i.e. the rules in file order (each with its glob
 * compiled to tokens and the settings it sets), the table of meta.NAME names
 * of the whole file, and a pool of every string they point to, freed
 * together by rules_free.  The built-in rules are loaded through the same
 * code as the file's, so they are validated the same way.
 *
 * Globs are compiled to a token list and matched as an NFA (a set of active
 * token positions advanced one key byte at a time), so matching is
 * O(len(glob) * len(key)) whatever the stars: no backtracking blow-up on a
 * key a user chose.  Epsilon moves only go forward, so one ascending pass
 * computes the closure.
 *
 * Evaluation walks every rule in order; each matching rule overwrites the
 * settings it sets (and records itself as their source, for --explain).
 * A setting set to "" records the rule but no value: back to the default.
 *
 * The system MIME table (/etc/mime.types) is read on first use under
 * pthread_once and kept for the life of the process (never freed).
 *
 * Locking: none.  A struct rules is immutable after rules_load; the MIME
 * table is immutable after its pthread_once.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ini.h"
#include "rules.h"

#define CONF_MAX ((size_t)1 << 20)        /* a config file is small */
#define MIME_TYPES_PATH "/etc/mime.types"
#define MIME_TYPES_MAX ((size_t)4 << 20)
#define EXT_MAX 32                        /* longer "extensions" are not ones */
#define META_NAME_MAX 128
#define VALUE_MAX 4096                    /* one header value */
#define CHARSET "; charset=utf-8"

/* ------------------------------------------------------------------ globs */

enum gkind { G_LIT, G_ANY, G_CLASS, G_STAR, G_DSTAR, G_SKIP };

/* One glob token.  G_SKIP (from a leading "**" "/") consumes nothing and
 * moves to the next token (the DSTAR of "any run ending in '/'") or past
 * the three tokens (zero segments). */
struct gtok {
	unsigned char kind;
	unsigned char c;        /* G_LIT */
	unsigned char neg;      /* G_CLASS */
	unsigned char set[32];  /* G_CLASS: bitmap of bytes */
};

struct glob {
	struct gtok *t;
	size_t n;  /* <= strlen(glob) <= RULES_GLOB_MAX */
};

#define SKIP_LEN 3 /* G_SKIP, G_DSTAR, G_LIT '/' */

/* One byte of a class, '\' escaping the next. */
static int class_byte(const char *g, size_t *j, unsigned *c, const char **why)
{
	if (g[*j] == '\\')
		(*j)++;
	if (g[*j] == '\0') {
		*why = "unterminated character class";
		return -EINVAL;
	}
	*c = (unsigned char)g[*j];
	(*j)++;
	return 0;
}

/* "[...]" starting at g[*i] == '['; *i is left after the ']'. */
static int class_parse(const char *g, size_t *i, struct gtok *t, const char **why)
{
	size_t j = *i + 1;
	unsigned lo, hi, c;

	t->kind = G_CLASS;
	if (g[j] == '!' || g[j] == '^') {
		t->neg = 1;
		j++;
	}
	for (int first = 1; first || g[j] != ']'; first = 0) {
		if (class_byte(g, &j, &lo, why) < 0)
			return -EINVAL;
		hi = lo;
		if (g[j] == '-' && g[j + 1] != ']' && g[j + 1] != '\0') {
			j++;
			if (class_byte(g, &j, &hi, why) < 0)
				return -EINVAL;
			if (hi < lo) {
				*why = "reversed range in character class";
				return -EINVAL;
			}
		}
		for (c = lo; c <= hi; c++)
			t->set[c >> 3] |= (unsigned char)(1u << (c & 7));
	}
	*i = j + 1;
	return 0;
}

/* A run of stars at g[*i]; *n tokens used so far. */
static void glob_stars(const char *g, size_t *i, struct gtok *t, size_t *n, int seg_start)
{
	size_t stars = 0;

	while (g[*i] == '*') {
		(*i)++;
		stars++;
	}
	if (stars == 1) {
		t[(*n)++].kind = G_STAR;
	} else if (seg_start && g[*i] == '/') {
		/* "**" "/" as a whole segment: zero or more segments */
		t[*n].kind = G_SKIP;
		t[*n + 1].kind = G_DSTAR;
		t[*n + 2].kind = G_LIT;
		t[*n + 2].c = '/';
		*n += SKIP_LEN;
		(*i)++;
	} else {
		t[(*n)++].kind = G_DSTAR;
	}
}

static int glob_first_check(const char *g, size_t len, const char **why)
{
	if (len == 0)
		*why = "empty glob";
	else if (len > RULES_GLOB_MAX)
		*why = "glob longer than 1024 bytes";
	else if (g[0] == '/')
		*why = "glob starts with '/' (keys are relative to the mount)";
	else
		return 0;
	return -EINVAL;
}

/* One token at g[*i]: *n tokens used so far; *seg_start: at a segment start. */
static int glob_token(const char *g, size_t *i, struct gtok *t, size_t *n, int *seg_start,
		      const char **why)
{
	unsigned char c = (unsigned char)g[*i];

	if (c == '*') {
		glob_stars(g, i, t, n, *seg_start);
		*seg_start = t[*n - 1].kind == G_LIT; /* after a "**" "/" */
		return 0;
	}
	*seg_start = 0;
	if (c == '[')
		return class_parse(g, i, &t[(*n)++], why);
	if (c == '?') {
		t[(*n)++].kind = G_ANY;
		(*i)++;
		return 0;
	}
	if (c == '\\') {
		c = (unsigned char)g[++(*i)];
		if (c == '\0') {
			*why = "glob ends with '\\'";
			return -EINVAL;
		}
	}
	t[*n].kind = G_LIT;
	t[(*n)++].c = c;
	(*i)++;
	*seg_start = c == '/';
	return 0;
}

/* Compile g; on failure *why says why. */
static int glob_compile(const char *g, struct glob *out, const char **why)
{
	size_t len = strlen(g), i = 0, n = 0;
	struct gtok *t = NULL;
	int rc, seg_start = 1;

	out->t = NULL;
	out->n = 0;
	rc = glob_first_check(g, len, why);
	if (rc < 0)
		goto out;
	t = calloc(len, sizeof(*t)); /* never more tokens than bytes */
	if (!t) {
		*why = "out of memory";
		rc = -ENOMEM;
		goto out;
	}
	while (g[i] && rc == 0)
		rc = glob_token(g, &i, t, &n, &seg_start, why);
	if (rc < 0)
		goto out;
	out->t = t;
	out->n = n;
	t = NULL;
out:
	free(t);
	return rc;
}

/* Epsilon moves, forward only, so one ascending pass suffices. */
static void glob_closure(const struct glob *g, unsigned char *s)
{
	for (size_t i = 0; i < g->n; i++) {
		if (!s[i])
			continue;
		if (g->t[i].kind == G_STAR || g->t[i].kind == G_DSTAR)
			s[i + 1] = 1;
		else if (g->t[i].kind == G_SKIP)
			s[i + 1] = s[i + SKIP_LEN] = 1;
	}
}

/* Whether token t consumes byte c and moves on. */
static int gtok_eat(const struct gtok *t, unsigned char c)
{
	switch (t->kind) {
	case G_LIT:
		return c == t->c;
	case G_ANY:
		return c != '/';
	case G_CLASS:
		return c != '/' && (((t->set[c >> 3] >> (c & 7)) & 1) ^ t->neg);
	default:
		return 0;
	}
}

static int glob_run(const struct glob *g, const char *path)
{
	unsigned char a[RULES_GLOB_MAX + 1], b[RULES_GLOB_MAX + 1];
	unsigned char *cur = a, *next = b, *tmp;
	int alive;

	memset(cur, 0, g->n + 1);
	cur[0] = 1;
	glob_closure(g, cur);
	for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
		alive = 0;
		memset(next, 0, g->n + 1);
		for (size_t i = 0; i < g->n; i++) {
			if (!cur[i])
				continue;
			if (g->t[i].kind == G_DSTAR || (g->t[i].kind == G_STAR && *p != '/'))
				alive = next[i] = 1;
			else if (gtok_eat(&g->t[i], *p))
				alive = next[i + 1] = 1;
		}
		if (!alive)
			return 0;
		glob_closure(g, next);
		tmp = cur;
		cur = next;
		next = tmp;
	}
	return cur[g->n];
}

int rules_glob_why(const char *glob, const char **why)
{
	struct glob g;
	const char *dummy;
	int rc;

	rc = glob_compile(glob, &g, why ? why : &dummy);
	free(g.t);
	return rc;
}

int rules_glob_check(const char *glob)
{
	return rules_glob_why(glob, NULL);
}

int rules_glob_match(const char *glob, const char *path)
{
	struct glob g;
	const char *why;
	int m = 0;

	if (glob_compile(glob, &g, &why) == 0)
		m = glob_run(&g, path);
	free(g.t);
	return m;
}

/* ------------------------------------------------------------ the rules */

enum setting {
	S_CACHE, S_CTYPE, S_CDISP, S_COMPRESS, S_CLASS, S_ACL, S_SSE, S_KMS, S_TTL, S_N
};

/* Canonical names, also the order --print-rules writes them in. */
static const char *const setting_names[S_N] = {
	"cache_control", "content_type", "content_disposition", "compress", "storage_class",
	"acl", "sse", "sse_kms_key_id", "signed_url_ttl",
};

static const char *const storage_classes[] = {
	"STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
	"GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "OUTPOSTS", "SNOW", "EXPRESS_ONEZONE",
};

static const char *const acls[] = {
	"private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
	"bucket-owner-read", "bucket-owner-full-control",
};

static const char *const sses[] = { "AES256", "aws:kms", "aws:kms:dsse" };

/* The rules used when the file names none (rules.h), from the seed's
 * StaticStorage, MediaStorage and PrivateMediaStorage. */
static const struct {
	const char *glob, *key, *value;
} builtin_rules[] = {
	{ "static/**", "cache_control", "max-age=31536000, public, immutable" },
	{ "static/**", "compress", "gzip" },
	{ "media/**", "cache_control", "max-age=86400, public" },
	{ "private/**", "cache_control", "no-cache, no-store, must-revalidate" },
	{ "private/**", "acl", "private" },
	{ "private/**", "signed_url_ttl", "3600" },
};

struct rule_meta {
	size_t name;        /* index into rules.meta_name */
	const char *value;  /* NULL: reset (no such header) */
	int line;
};

struct rule {
	const char *glob;
	struct glob g;
	int line;                  /* of its first setting */
	unsigned set;              /* bit per enum setting it sets */
	const char *val[S_N];      /* string settings; NULL: reset to default */
	int line_of[S_N];
	enum compress_kind compress;
	long ttl;
	struct rule_meta *meta;
	size_t nmeta, capmeta;
};

struct rules {
	char *file;                                /* NULL: no file */
	int builtin;                               /* the built-in rules apply */
	struct rule *v;
	size_t n, cap;
	const char *meta_name[RULES_META_MAX];     /* lowercase NAME */
	const char *meta_header[RULES_META_MAX];   /* "x-amz-meta-NAME" */
	size_t nnames;
	char **pool;                               /* every string above */
	size_t npool, cappool;
};

/* Grow *v (elements of size sz) to hold one more than n; -ENOMEM. */
static int grow(void *v, size_t n, size_t *cap, size_t sz)
{
	void *p, **vp = v;
	size_t ncap, bytes;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap : 4;
	if (size_mul(ncap, 2, &ncap) < 0 || size_mul(ncap, sz, &bytes) < 0)
		return -ENOMEM;
	p = realloc(*vp, bytes);
	if (!p)
		return -ENOMEM;
	*vp = p;
	*cap = ncap;
	return 0;
}

/* A copy of s (n bytes) owned by the rules, or NULL on ENOMEM. */
static const char *pool_dup(struct rules *rs, const char *s, size_t n)
{
	char *p;

	if (grow(&rs->pool, rs->npool, &rs->cappool, sizeof(*rs->pool)) < 0)
		return NULL;
	p = strndup(s, n);
	if (p)
		rs->pool[rs->npool++] = p;
	return p;
}

void rules_free(struct rules *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++) {
		free(r->v[i].g.t);
		free(r->v[i].meta);
	}
	free(r->v);
	for (size_t i = 0; i < r->npool; i++)
		free(r->pool[i]);
	free(r->pool);
	free(r->file);
	free(r);
}

int rules_builtin(const struct rules *r)
{
	return r->builtin;
}

/* ------------------------------------------------------------- loading */

struct loader {
	struct rules *rs;
	rules_opt_fn opt;
	void *arg;
	int in_rule;   /* the last rule is the one being filled */
};

PRINTF(2, 3) static int fail(struct buf *err, const char *fmt, ...)
{
	va_list ap;

	buf_reset(err);
	va_start(ap, fmt);
	if (buf_vaddf(err, fmt, ap) < 0) {
		/* out of memory: the error code alone has to do */
	}
	va_end(ap);
	return -EINVAL;
}

/* Header values go on the wire as they are: no control characters (header
 * injection) and ASCII only (S3 rejects or mangles anything else). */
static int check_value(const char *what, const char *v, struct buf *err)
{
	const unsigned char *p;

	if (strlen(v) > VALUE_MAX)
		return fail(err, "%s value longer than %d bytes", what, VALUE_MAX);
	for (p = (const unsigned char *)v; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return fail(err, "control character in %s value", what);
		if (*p >= 0x80)
			return fail(err, "non-ASCII byte in %s value (HTTP headers must be "
					 "ASCII: percent-encode it, as in filename*=UTF-8''...)",
				    what);
	}
	return 0;
}

/* The canonical spelling of v in table (case-insensitive), or NULL. */
static const char *lookup(const char *const *table, size_t n, const char *v)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(table[i], v) == 0)
			return table[i];
	return NULL;
}

/* "3600", "90s", "15m", "1h", "7d" -> seconds. */
static int parse_ttl(const char *v, long *out)
{
	long n = 0, mult = 1;
	const char *p = v;

	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		n = n * 10 + (*p - '0');
		if (n > RULES_TTL_MAX)
			return -ERANGE;
	}
	switch (tolower((unsigned char)*p)) {
	case '\0': break;
	case 's': mult = 1; break;
	case 'm': mult = 60; break;
	case 'h': mult = 3600; break;
	case 'd': mult = 86400; break;
	default: return -EINVAL;
	}
	if (*p && p[1])
		return -EINVAL;
	if (n > RULES_TTL_MAX / mult)
		return -ERANGE;
	*out = n * mult;
	return 0;
}

static int parse_compress(const char *value, enum compress_kind *out, struct buf *err)
{
	char low[8];
	size_t i, len = strlen(value);
	int rc = -EINVAL;

	if (len < sizeof(low)) {
		for (i = 0; i <= len; i++)
			low[i] = (char)tolower((unsigned char)value[i]);
		rc = compress_parse(low);
	}
	if (rc < 0)
		return fail(err, "bad compress value '%s' (none, gzip or br)", value);
	*out = (enum compress_kind)rc;
	return 0;
}

/* storage_class, acl, sse: the canonical spelling into *val. */
static int parse_enum(int id, const char *value, const char **val, struct buf *err)
{
	if (id == S_CLASS) {
		*val = lookup(storage_classes, ARRAY_SIZE(storage_classes), value);
		if (!*val)
			return fail(err, "unknown storage_class '%s' (STANDARD, "
					 "REDUCED_REDUNDANCY, STANDARD_IA, ONEZONE_IA, "
					 "INTELLIGENT_TIERING, GLACIER, DEEP_ARCHIVE, GLACIER_IR, "
					 "OUTPOSTS, SNOW or EXPRESS_ONEZONE)",
				    value);
	} else if (id == S_ACL) {
		*val = lookup(acls, ARRAY_SIZE(acls), value);
		if (!*val)
			return fail(err, "unknown acl '%s' (private, public-read, "
					 "public-read-write, authenticated-read, aws-exec-read, "
					 "bucket-owner-read or bucket-owner-full-control)",
				    value);
	} else {
		*val = lookup(sses, ARRAY_SIZE(sses), value);
		if (!*val)
			return fail(err, "unknown sse '%s' (AES256, aws:kms or aws:kms:dsse)",
				    value);
	}
	return 0;
}

/* A free-form header value (Cache-Control, Content-Type, ...). */
static int parse_string(struct rules *rs, int id, const char *value, const char **val,
			struct buf *err)
{
	const char *slash = strchr(value, '/');
	int rc;

	rc = check_value(setting_names[id], value, err);
	if (rc < 0)
		return rc;
	if (id == S_CTYPE && (!slash || slash == value || !slash[1] ||
			      strcspn(value, " ;=") < (size_t)(slash - value)))
		return fail(err, "bad content_type '%s' (expected TYPE/SUBTYPE)", value);
	*val = pool_dup(rs, value, strlen(value));
	return *val ? 0 : -ENOMEM;
}

static int parse_ttl_value(const char *value, long *ttl, struct buf *err)
{
	int rc = parse_ttl(value, ttl);

	if (rc == -ERANGE)
		return fail(err, "signed_url_ttl '%s' is longer than 7 days, the limit of a "
				 "presigned URL",
			    value);
	if (rc < 0)
		return fail(err, "bad signed_url_ttl '%s' (seconds, or a number with s, m, h "
				 "or d)",
			    value);
	return 0;
}

/* Set setting id of r; "" resets it to the default. */
static int rule_set(struct rules *rs, struct rule *r, int id, const char *value, int line,
		    struct buf *err)
{
	const char *v = NULL;
	int rc = 0;

	if (id == S_COMPRESS)
		r->compress = COMPRESS_NONE;
	if (id == S_TTL)
		r->ttl = 0;
	if (*value == '\0')
		rc = 0; /* reset: no value */
	else if (id == S_COMPRESS)
		rc = parse_compress(value, &r->compress, err);
	else if (id == S_TTL)
		rc = parse_ttl_value(value, &r->ttl, err);
	else if (id == S_CLASS || id == S_ACL || id == S_SSE)
		rc = parse_enum(id, value, &v, err);
	else
		rc = parse_string(rs, id, value, &v, err);
	if (rc < 0)
		return rc;
	r->val[id] = v;
	r->set |= 1u << id;
	r->line_of[id] = line;
	return 0;
}

/* The index of meta name (lowercase) in rs, added if new. */
static int meta_index(struct rules *rs, const char *name, size_t *idx, struct buf *err)
{
	struct buf hdr;
	int rc;

	for (*idx = 0; *idx < rs->nnames; (*idx)++)
		if (strcmp(rs->meta_name[*idx], name) == 0)
			return 0;
	if (rs->nnames == RULES_META_MAX)
		return fail(err, "more than %d metadata names", RULES_META_MAX);
	buf_init(&hdr, 0);
	rc = buf_addf(&hdr, "x-amz-meta-%s", name);
	if (rc == 0) {
		rs->meta_name[*idx] = pool_dup(rs, name, strlen(name));
		rs->meta_header[*idx] = pool_dup(rs, hdr.data, hdr.len);
		rc = rs->meta_name[*idx] && rs->meta_header[*idx] ? 0 : -ENOMEM;
	}
	if (rc == 0)
		rs->nnames++;
	buf_release(&hdr);
	return rc;
}

#define META_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"

/* Names fs/meta.c and fs/wb.c write on every upload (s3fs's POSIX
 * attributes, cdnfs-*): a rule may not send them a second time. */
static int meta_reserved(const char *lname)
{
	static const char *const names[] = { "mode", "uid", "gid", "mtime" };

	return strncmp(lname, "cdnfs-", 6) == 0 || lookup(names, ARRAY_SIZE(names), lname);
}

/* meta.NAME = VALUE; "" removes the header. */
static int rule_meta(struct rules *rs, struct rule *r, const char *name, const char *value,
		     int line, struct buf *err)
{
	char lname[META_NAME_MAX + 1], what[META_NAME_MAX + 8];
	size_t len = strlen(name), idx, i;
	const char *v = NULL;
	int rc;

	if (len == 0 || len > META_NAME_MAX || strspn(name, META_CHARS) != len)
		return fail(err, "bad metadata name 'meta.%s' (letters, digits, '-' and '_')",
			    name);
	for (i = 0; i <= len; i++)
		lname[i] = (char)tolower((unsigned char)name[i]);
	if (meta_reserved(lname))
		return fail(err, "metadata name 'meta.%s' is reserved for the file attributes "
				 "cdnfs stores itself",
			    lname);
	snprintf(what, sizeof(what), "meta.%s", lname);
	rc = *value ? check_value(what, value, err) : 0;
	if (rc == 0)
		rc = meta_index(rs, lname, &idx, err);
	if (rc == 0 && *value && !(v = pool_dup(rs, value, strlen(value))))
		rc = -ENOMEM;
	for (i = 0; rc == 0 && i < r->nmeta; i++) {
		if (r->meta[i].name == idx)
			break;
	}
	if (rc == 0 && i == r->nmeta) {
		rc = grow(&r->meta, r->nmeta, &r->capmeta, sizeof(*r->meta));
		if (rc == 0)
			r->nmeta++;
	}
	if (rc == 0)
		r->meta[i] = (struct rule_meta){ .name = idx, .value = v, .line = line };
	return rc;
}

/* Canonical setting id of a key ("Cache-Control" -> S_CACHE), or -1. */
static int setting_id(const char *key)
{
	char name[32];
	size_t len = strlen(key);

	if (len >= sizeof(name))
		return -1;
	for (size_t i = 0; i <= len; i++)
		name[i] = key[i] == '-' ? '_' : (char)tolower((unsigned char)key[i]);
	for (int i = 0; i < S_N; i++)
		if (strcmp(name, setting_names[i]) == 0)
			return i;
	return -1;
}

/* Start a rule for glob at the end of the list. */
static int rule_new(struct rules *rs, const char *glob, int line, struct buf *err)
{
	struct rule *r;
	const char *why = NULL;
	int rc;

	rc = grow(&rs->v, rs->n, &rs->cap, sizeof(*rs->v));
	if (rc < 0)
		return rc;
	r = &rs->v[rs->n];
	memset(r, 0, sizeof(*r));
	rc = glob_compile(glob, &r->g, &why);
	if (rc == -EINVAL)
		return fail(err, "bad glob \"%s\": %s", glob, why);
	if (rc < 0)
		return rc;
	r->glob = pool_dup(rs, glob, strlen(glob));
	if (!r->glob) {
		free(r->g.t);
		return -ENOMEM;
	}
	r->line = line;
	rs->n++;
	return 0;
}

/* A [rule "glob"] header: the glob is checked (and reported) on its line. */
static int rule_start(struct loader *ld, const char *glob, int line, struct buf *err)
{
	int rc = rule_new(ld->rs, glob, line, err);

	if (rc == 0)
		ld->in_rule = 1;
	return rc;
}

/* key = value inside [rule "glob"]. */
static int rule_key(struct loader *ld, const char *glob, const char *key, const char *value,
		    int line, struct buf *err)
{
	struct rules *rs = ld->rs;
	int rc, id;

	if (!ld->in_rule || strcmp(rs->v[rs->n - 1].glob, glob) != 0) {
		rc = rule_new(rs, glob, line, err);
		if (rc < 0)
			return rc;
		ld->in_rule = 1;
	}
	if (strncasecmp(key, "meta.", 5) == 0)
		return rule_meta(rs, &rs->v[rs->n - 1], key + 5, value, line, err);
	id = setting_id(key);
	if (id < 0)
		return fail(err, "unknown setting '%s' in [rule \"%s\"]", key, glob);
	return rule_set(rs, &rs->v[rs->n - 1], id, value, line, err);
}

/* ini_fn: every key of the file. */
static int load_key(void *arg, const char *section, const char *sub, const char *key,
		    const char *value, int line, struct buf *err)
{
	static const char *const opt_sections[] = { "s3", "cdn", "mount" };
	struct loader *ld = arg;
	const char *canon;

	if (strcasecmp(section, "rule") == 0) {
		if (!sub)
			return fail(err, "[rule] needs a glob, as in [rule \"static/**\"]");
		if (!key) { /* the header itself: a rule starts here */
			ld->in_rule = 0;
			return rule_start(ld, sub, line, err);
		}
		return rule_key(ld, sub, key, value, line, err);
	}
	ld->in_rule = 0;
	if (!key)
		return 0; /* other headers are checked with their first key */
	if (*section == '\0')
		return fail(err, "setting '%s' outside a section", key);
	canon = lookup(opt_sections, ARRAY_SIZE(opt_sections), section);
	if (!canon || sub)
		return fail(err, "unknown section [%s%s%s%s]", section, sub ? " \"" : "",
			    sub ? sub : "", sub ? "\"" : "");
	if (!ld->opt)
		return 0;
	return ld->opt(ld->arg, canon, key, value, err);
}

static int load_builtin(struct loader *ld, struct buf *err)
{
	int rc = 0;

	ld->rs->builtin = 1;
	ld->in_rule = 0;
	for (size_t i = 0; i < ARRAY_SIZE(builtin_rules) && rc == 0; i++)
		rc = rule_key(ld, builtin_rules[i].glob, builtin_rules[i].key,
			      builtin_rules[i].value, (int)i + 1, err);
	return rc;
}

/* The whole file into text (capped at CONF_MAX). */
static int read_file(const char *file, struct buf *text, struct buf *err)
{
	char chunk[4096];
	ssize_t got;
	int fd, rc = 0;

	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	for (;;) {
		got = read(fd, chunk, sizeof(chunk));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			rc = got < 0 ? -errno : 0;
			break;
		}
		rc = buf_add(text, chunk, (size_t)got);
		if (rc < 0)
			break;
	}
out:
	if (fd >= 0)
		close(fd);
	if (rc == -E2BIG)
		return fail(err, "cannot read '%s': larger than %zu bytes", file, CONF_MAX);
	if (rc < 0) {
		fail(err, "cannot read '%s': %s", file, strerror(-rc));
		return rc;
	}
	return 0;
}

/* Replace err (may be NULL) with prefix + msg (or rc's text). */
static void set_err(struct buf *err, const char *prefix, const struct buf *msg, int rc)
{
	if (!err)
		return;
	buf_reset(err);
	if (buf_addf(err, "%s%s", prefix, msg->len ? buf_str(msg) : strerror(-rc)) < 0) {
		/* out of memory: the error code alone has to do */
	}
}

int rules_load(struct rules **out, const char *file, rules_opt_fn opt, void *arg,
	       struct buf *err)
{
	struct loader ld = { .opt = opt, .arg = arg };
	struct buf text, msg, prefix;
	int rc = -ENOMEM;

	*out = NULL;
	buf_init(&text, CONF_MAX);
	buf_init(&msg, 0);
	buf_init(&prefix, 0);
	ld.rs = calloc(1, sizeof(*ld.rs));
	if (!ld.rs || (file && !(ld.rs->file = strdup(file))))
		goto out;
	if (file) {
		rc = read_file(file, &text, &msg);
		if (rc < 0)
			goto out;
		rc = buf_addf(&prefix, "%s:", file);
		if (rc == 0)
			rc = ini_parse_ex(buf_str(&text), text.len, load_key, &ld, &msg, 1);
		if (rc < 0)
			goto out;
		buf_reset(&prefix);
	}
	rc = ld.rs->n ? 0 : load_builtin(&ld, &msg);
	if (rc < 0 && buf_addstr(&prefix, "built-in rules: ") < 0)
		rc = -ENOMEM;
	if (rc < 0)
		goto out;
	*out = ld.rs;
	ld.rs = NULL;
out:
	if (rc < 0)
		set_err(err, buf_str(&prefix), &msg, rc);
	rules_free(ld.rs);
	buf_release(&prefix);
	buf_release(&msg);
	buf_release(&text);
	return rc;
}

/* ------------------------------------------------------------ MIME types */

enum mime_from { MIME_BUILTIN, MIME_SYSTEM, MIME_DEFAULT };

/* The web formats a CDN serves, with the types browsers expect (RFC 9239
 * text/javascript; image/vnd.microsoft.icon as Python's mimetypes, so
 * objects match what django-storages wrote).  Sorted by extension. */
static const struct mime_ent {
	const char *ext, *type;
} web_types[] = {
	{ "7z", "application/x-7z-compressed" },
	{ "aac", "audio/aac" },
	{ "apng", "image/apng" },
	{ "atom", "application/atom+xml; charset=utf-8" },
	{ "avif", "image/avif" },
	{ "bmp", "image/bmp" },
	{ "br", "application/x-brotli" },
	{ "bz2", "application/x-bzip2" },
	{ "css", "text/css; charset=utf-8" },
	{ "csv", "text/csv; charset=utf-8" },
	{ "doc", "application/msword" },
	{ "docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document" },
	{ "eot", "application/vnd.ms-fontobject" },
	{ "epub", "application/epub+zip" },
	{ "flac", "audio/flac" },
	{ "gif", "image/gif" },
	{ "gz", "application/gzip" },
	{ "heic", "image/heic" },
	{ "htm", "text/html; charset=utf-8" },
	{ "html", "text/html; charset=utf-8" },
	{ "ico", "image/vnd.microsoft.icon" },
	{ "ics", "text/calendar; charset=utf-8" },
	{ "jpeg", "image/jpeg" },
	{ "jpg", "image/jpeg" },
	{ "js", "text/javascript; charset=utf-8" },
	{ "json", "application/json; charset=utf-8" },
	{ "jsonld", "application/ld+json; charset=utf-8" },
	{ "jxl", "image/jxl" },
	{ "m4a", "audio/mp4" },
	{ "m4v", "video/mp4" },
	{ "map", "application/json; charset=utf-8" },
	{ "md", "text/markdown; charset=utf-8" },
	{ "mjs", "text/javascript; charset=utf-8" },
	{ "mov", "video/quicktime" },
	{ "mp3", "audio/mpeg" },
	{ "mp4", "video/mp4" },
	{ "oga", "audio/ogg" },
	{ "ogg", "audio/ogg" },
	{ "ogv", "video/ogg" },
	{ "opus", "audio/ogg" },
	{ "otf", "font/otf" },
	{ "pdf", "application/pdf" },
	{ "png", "image/png" },
	{ "ppt", "application/vnd.ms-powerpoint" },
	{ "pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation" },
	{ "rss", "application/rss+xml; charset=utf-8" },
	{ "rtf", "application/rtf" },
	{ "svg", "image/svg+xml" },
	{ "tar", "application/x-tar" },
	{ "tif", "image/tiff" },
	{ "tiff", "image/tiff" },
	{ "ts", "video/mp2t" },
	{ "tsv", "text/tab-separated-values; charset=utf-8" },
	{ "ttf", "font/ttf" },
	{ "txt", "text/plain; charset=utf-8" },
	{ "vtt", "text/vtt; charset=utf-8" },
	{ "wasm", "application/wasm" },
	{ "wav", "audio/wav" },
	{ "weba", "audio/webm" },
	{ "webm", "video/webm" },
	{ "webmanifest", "application/manifest+json; charset=utf-8" },
	{ "webp", "image/webp" },
	{ "woff", "font/woff" },
	{ "woff2", "font/woff2" },
	{ "xhtml", "application/xhtml+xml; charset=utf-8" },
	{ "xls", "application/vnd.ms-excel" },
	{ "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" },
	{ "xml", "application/xml; charset=utf-8" },
	{ "xz", "application/x-xz" },
	{ "yaml", "application/yaml; charset=utf-8" },
	{ "yml", "application/yaml; charset=utf-8" },
	{ "zip", "application/zip" },
	{ "zst", "application/zstd" },
};

/* /etc/mime.types, sorted by extension; built once, never freed. */
struct sys_ent {
	struct mime_ent e; /* first: ent_cmp applies */
	size_t pos;        /* line order: the first line listing an extension wins */
};

static struct {
	struct sys_ent *v;
	size_t n;
} sys_types;
static pthread_once_t sys_types_once = PTHREAD_ONCE_INIT;

/* Types whose text encoding matters to a browser. */
static int wants_charset(const char *type)
{
	size_t n = strlen(type);

	if (strncasecmp(type, "text/", 5) == 0)
		return 1;
	if (strncasecmp(type, "application/", 12) != 0)
		return 0;
	type += 12;
	n -= 12;
	return strcasecmp(type, "json") == 0 || strcasecmp(type, "javascript") == 0 ||
	       strcasecmp(type, "xml") == 0 || (n > 5 && strcasecmp(type + n - 5, "+json") == 0) ||
	       (n > 4 && strcasecmp(type + n - 4, "+xml") == 0);
}

static int ent_cmp(const void *a, const void *b)
{
	const struct mime_ent *x = a, *y = b;

	return strcmp(x->ext, y->ext);
}

static int ent_cmp_pos(const void *a, const void *b)
{
	const struct sys_ent *x = a, *y = b;
	int d = strcmp(x->e.ext, y->e.ext);

	return d ? d : (x->pos > y->pos) - (x->pos < y->pos);
}

/* The next blank-separated word of *p (cut in place), or NULL. */
static char *next_word(char **p)
{
	char *w = *p + strspn(*p, " \t\r"), *end;

	if (*w == '\0' || *w == '#')
		return NULL;
	end = w + strcspn(w, " \t\r");
	*p = end + (*end != '\0');
	*end = '\0';
	return w;
}

/* Add the extensions of one "type ext ext ..." line (cut up in place). */
static int sys_types_line(char *line, size_t *cap)
{
	char *type, *ext, *full = NULL;
	struct buf b;
	int rc = 0;

	type = next_word(&line);
	if (!type || !strchr(type, '/'))
		return 0;
	buf_init(&b, 0);
	while (rc == 0 && (ext = next_word(&line))) {
		for (char *p = ext; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		if (!full && (buf_addf(&b, "%s%s", type, wants_charset(type) ? CHARSET : "") < 0 ||
			      !(full = buf_detach(&b, NULL))))
			rc = -ENOMEM;
		if (rc == 0)
			rc = grow(&sys_types.v, sys_types.n, cap, sizeof(*sys_types.v));
		if (rc == 0 && !(ext = strdup(ext)))
			rc = -ENOMEM;
		if (rc == 0) {
			sys_types.v[sys_types.n] = (struct sys_ent){ { ext, full }, sys_types.n };
			sys_types.n++;
		}
	}
	/* full belongs to the table once an entry points at it */
	if (full && (sys_types.n == 0 || sys_types.v[sys_types.n - 1].e.type != full))
		free(full);
	buf_release(&b);
	return rc;
}

static void sys_types_load(void)
{
	struct buf text, err;
	size_t cap = 0;
	char *line, *nl;

	buf_init(&text, MIME_TYPES_MAX);
	buf_init(&err, 0);
	if (read_file(MIME_TYPES_PATH, &text, &err) == 0 && text.data) {
		for (line = text.data; line; line = nl) {
			nl = strchr(line, '\n');
			if (nl)
				*nl++ = '\0';
			if (sys_types_line(line, &cap) < 0)
				break;
		}
	}
	/* An extension listed twice keeps both; lookups take the first. */
	if (sys_types.n)
		qsort(sys_types.v, sys_types.n, sizeof(*sys_types.v), ent_cmp_pos);
	buf_release(&err);
	buf_release(&text);
}

/* The extension of name, lowercased into ext; 0 when it has none. */
static int name_ext(const char *name, char ext[EXT_MAX + 1], const char **orig)
{
	const char *base = strrchr(name, '/'), *dot;
	size_t len;

	base = base ? base + 1 : name;
	dot = strrchr(base, '.');
	if (!dot || dot == base || !dot[1])
		return 0;
	len = strlen(dot + 1);
	if (len > EXT_MAX)
		return 0;
	for (size_t i = 0; i <= len; i++)
		ext[i] = (char)tolower((unsigned char)dot[1 + i]);
	if (orig)
		*orig = dot + 1;
	return 1;
}

static const char *mime_lookup(const char *name, enum mime_from *from, const char **ext_orig)
{
	char ext[EXT_MAX + 1];
	struct mime_ent key = { .ext = ext };
	const struct mime_ent *web;
	const struct sys_ent *sys = NULL;

	*from = MIME_DEFAULT;
	if (!name_ext(name, ext, ext_orig))
		return "application/octet-stream";
	web = bsearch(&key, web_types, ARRAY_SIZE(web_types), sizeof(*web_types), ent_cmp);
	*from = MIME_BUILTIN;
	if (web)
		return web->type;
	if (pthread_once(&sys_types_once, sys_types_load) == 0 && sys_types.n)
		sys = bsearch(&key, sys_types.v, sys_types.n, sizeof(*sys_types.v), ent_cmp);
	while (sys && sys > sys_types.v && strcmp(sys[-1].e.ext, ext) == 0)
		sys--; /* the first line that lists it */
	*from = sys ? MIME_SYSTEM : MIME_DEFAULT;
	return sys ? sys->e.type : "application/octet-stream";
}

const char *rules_mime_type(const char *name)
{
	enum mime_from from;

	return mime_lookup(name, &from, NULL);
}

/* ------------------------------------------------------------ evaluation */

/* Which rule last set each setting for one key. */
struct eval {
	const struct rule *by[S_N];
	const char *val[S_N];
	int line[S_N];
	enum compress_kind compress;
	long ttl;
	const char *mval[RULES_META_MAX];
	const struct rule *mby[RULES_META_MAX];
	int mline[RULES_META_MAX];
};

static void eval_rule(const struct rule *r, struct eval *ev)
{
	for (int s = 0; s < S_N; s++) {
		if (!(r->set & (1u << s)))
			continue;
		ev->by[s] = r;
		ev->val[s] = r->val[s];
		ev->line[s] = r->line_of[s];
	}
	if (r->set & (1u << S_COMPRESS))
		ev->compress = r->compress;
	if (r->set & (1u << S_TTL))
		ev->ttl = r->ttl;
	for (size_t i = 0; i < r->nmeta; i++) {
		ev->mval[r->meta[i].name] = r->meta[i].value;
		ev->mby[r->meta[i].name] = r;
		ev->mline[r->meta[i].name] = r->meta[i].line;
	}
}

static const char *eval_key(const struct rules *rs, const char *key, struct eval *ev)
{
	memset(ev, 0, sizeof(*ev));
	while (*key == '/')
		key++;
	for (size_t i = 0; i < rs->n; i++)
		if (glob_run(&rs->v[i].g, key))
			eval_rule(&rs->v[i], ev);
	return key;
}

static const char *src_of(const struct eval *ev, int s)
{
	return ev->by[s] ? ev->by[s]->glob : NULL;
}

void rules_eval(const struct rules *r, const char *key, struct rule_result *out)
{
	struct eval ev;

	key = eval_key(r, key, &ev);
	memset(out, 0, sizeof(*out));
	out->cache_control = ev.val[S_CACHE];
	out->content_type = ev.val[S_CTYPE];
	out->content_disposition = ev.val[S_CDISP];
	out->compress = ev.compress;
	out->storage_class = ev.val[S_CLASS];
	out->acl = ev.val[S_ACL];
	out->sse = ev.val[S_SSE];
	out->sse_kms_key_id = ev.val[S_KMS];
	out->signed_url_ttl = ev.ttl;
	out->src_cache_control = src_of(&ev, S_CACHE);
	out->src_content_type = src_of(&ev, S_CTYPE);
	out->src_content_disposition = src_of(&ev, S_CDISP);
	out->src_compress = src_of(&ev, S_COMPRESS);
	out->src_storage_class = src_of(&ev, S_CLASS);
	out->src_acl = src_of(&ev, S_ACL);
	out->src_sse = src_of(&ev, S_SSE);
	out->src_signed_url_ttl = src_of(&ev, S_TTL);
	if (!out->content_type) {
		out->content_type = rules_mime_type(key);
		out->src_content_type = "detected";
	}
	for (size_t i = 0; i < r->nnames; i++) {
		if (!ev.mval[i])
			continue;
		out->meta[out->nmeta] = (struct sigv4_kv){ r->meta_name[i], ev.mval[i] };
		out->meta_header[out->nmeta++] = r->meta_header[i];
	}
}

/* --------------------------------------------------------- compression */

/* Types worth compressing besides text/ and the +json, +xml suffixes:
 * CloudFront's and Cloudflare's lists, minus what is already compressed. */
static const char *const compressible_types[] = {
	"application/javascript", "application/x-javascript", "application/ecmascript",
	"application/json", "application/xml", "application/wasm", "application/yaml",
	"application/x-yaml", "application/toml", "application/x-ndjson", "application/rtf",
	"application/x-tar", "application/x-sh", "application/graphql", "application/sql",
	"application/vnd.ms-fontobject", "application/x-font-ttf", "application/x-font-otf",
	"application/x-font-opentype", "font/ttf", "font/otf", "font/collection", "font/eot",
	"image/x-icon", "image/vnd.microsoft.icon", "image/bmp", "image/x-ms-bmp",
};

static int type_compressible(const char *ct)
{
	char t[128];
	size_t n = strcspn(ct, "; \t");

	if (n == 0 || n >= sizeof(t))
		return 0;
	for (size_t i = 0; i < n; i++)
		t[i] = (char)tolower((unsigned char)ct[i]);
	t[n] = '\0';
	if (strncmp(t, "text/", 5) == 0)
		return 1;
	if ((n > 5 && strcmp(t + n - 5, "+json") == 0) || (n > 4 && strcmp(t + n - 4, "+xml") == 0))
		return 1;
	return lookup(compressible_types, ARRAY_SIZE(compressible_types), t) != NULL;
}

int rules_should_compress(const struct rule_result *rr, uint64_t size)
{
	return rr && rr->compress != COMPRESS_NONE && size >= RULES_COMPRESS_MIN &&
	       rr->content_type && type_compressible(rr->content_type);
}

/* ------------------------------------------------------------- headers */

static int is_kms(const char *sse)
{
	return sse && strncmp(sse, "aws:kms", 7) == 0;
}

static int sends_class(const char *sc)
{
	return sc && strcmp(sc, "STANDARD") != 0;
}

static int sends_acl(const char *acl)
{
	return acl && strcmp(acl, "private") != 0;
}

int rules_headers(const struct rule_result *rr, const char *content_encoding,
		  struct sigv4_kv *kv, size_t *n, size_t cap)
{
	struct sigv4_kv h[RULES_HEADERS_MAX];
	size_t k = 0;

	if (content_encoding && !*content_encoding)
		content_encoding = NULL;
	h[k++] = (struct sigv4_kv){ "Content-Type", rr->content_type };
#define ADD_IF(cond, name, value)                                   \
	do {                                                        \
		if (cond)                                           \
			h[k++] = (struct sigv4_kv){ (name), (value) }; \
	} while (0)
	ADD_IF(rr->cache_control, "Cache-Control", rr->cache_control);
	ADD_IF(rr->content_disposition, "Content-Disposition", rr->content_disposition);
	ADD_IF(content_encoding, "Content-Encoding", content_encoding);
	ADD_IF(sends_class(rr->storage_class), "x-amz-storage-class", rr->storage_class);
	ADD_IF(sends_acl(rr->acl), "x-amz-acl", rr->acl);
	ADD_IF(rr->sse, "x-amz-server-side-encryption", rr->sse);
	ADD_IF(is_kms(rr->sse) && rr->sse_kms_key_id,
	       "x-amz-server-side-encryption-aws-kms-key-id", rr->sse_kms_key_id);
#undef ADD_IF
	for (size_t i = 0; i < rr->nmeta && i < RULES_META_MAX; i++)
		h[k++] = (struct sigv4_kv){ rr->meta_header[i], rr->meta[i].value };
	if (*n > cap || cap - *n < k)
		return -E2BIG;
	memcpy(kv + *n, h, k * sizeof(*h));
	*n += k;
	return 0;
}

/* ------------------------------------------------------ --print-rules */

/* "1d", "2h", "5m" when exact, else seconds. */
static int add_ttl(struct buf *out, long ttl)
{
	if (ttl && ttl % 86400 == 0)
		return buf_addf(out, "%ldd", ttl / 86400);
	if (ttl && ttl % 3600 == 0)
		return buf_addf(out, "%ldh", ttl / 3600);
	if (ttl && ttl % 60 == 0)
		return buf_addf(out, "%ldm", ttl / 60);
	return buf_addf(out, "%ld", ttl);
}

/* "name = value", quoted when the INI parser would otherwise change it. */
static int print_setting(struct buf *out, const char *name, const char *v)
{
	size_t n = v ? strlen(v) : 0;
	int quote = n == 0 || v[0] == '"' || isspace((unsigned char)v[0]) ||
		    isspace((unsigned char)v[n - 1]);

	return buf_addf(out, "\t%s = %s%s%s\n", name, quote ? "\"" : "", v ? v : "",
			quote ? "\"" : "");
}

static int print_header(const struct rules *rs, const struct rule *r, struct buf *out)
{
	int rc = buf_addstr(out, "\n[rule \"");

	for (const char *p = r->glob; rc == 0 && *p; p++) {
		if (*p == '"' || *p == '\\')
			rc = buf_addch(out, '\\');
		if (rc == 0)
			rc = buf_addch(out, *p);
	}
	if (rc == 0)
		rc = buf_addstr(out, "\"]\n");
	if (rc == 0 && !rs->builtin)
		rc = buf_addf(out, "\t# %s:%d\n", rs->file, r->line);
	return rc;
}

static int print_rule(const struct rules *rs, const struct rule *r, struct buf *out)
{
	struct buf ttl;
	int rc = print_header(rs, r, out);

	buf_init(&ttl, 0);
	for (int s = 0; rc == 0 && s < S_N; s++) {
		if (!(r->set & (1u << s)))
			continue;
		if (s == S_COMPRESS)
			rc = print_setting(out, setting_names[s], compress_name(r->compress));
		else if (s == S_TTL && (rc = add_ttl(&ttl, r->ttl)) == 0)
			rc = print_setting(out, setting_names[s], buf_str(&ttl));
		else if (s != S_TTL)
			rc = print_setting(out, setting_names[s], r->val[s]);
	}
	for (size_t i = 0; rc == 0 && i < r->nmeta; i++) {
		buf_reset(&ttl);
		rc = buf_addf(&ttl, "meta.%s", rs->meta_name[r->meta[i].name]);
		if (rc == 0)
			rc = print_setting(out, buf_str(&ttl), r->meta[i].value);
	}
	buf_release(&ttl);
	return rc;
}

int rules_print(const struct rules *r, struct buf *out)
{
	int rc;

	if (!r->builtin)
		rc = buf_addf(out, "# cdnfs rules from '%s'\n", r->file);
	else if (r->file)
		rc = buf_addf(out, "# cdnfs rules: built-in ('%s' has no [rule] section)\n",
			      r->file);
	else
		rc = buf_addstr(out, "# cdnfs rules: built-in (no configuration file)\n");
	if (rc == 0)
		rc = buf_addstr(out, "# Every rule whose glob matches a key applies, in this "
				     "order; a later rule's setting overrides an earlier one's.\n");
	for (size_t i = 0; rc == 0 && i < r->n; i++)
		rc = print_rule(r, &r->v[i], out);
	return rc;
}

/* ----------------------------------------------------------- --explain */

/* One "Label: value    (source)" line. */
PRINTF(5, 6)
static int explain_line(struct buf *out, const struct rules *rs, const struct rule *by, int line,
			const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = buf_vaddf(out, fmt, ap);
	va_end(ap);
	if (rc < 0)
		return rc;
	if (!by)
		return buf_addstr(out, "    (default)\n");
	if (rs->builtin)
		return buf_addf(out, "    (built-in rule \"%s\")\n", by->glob);
	return buf_addf(out, "    (rule \"%s\", %s:%d)\n", by->glob, rs->file, line);
}

static int explain_type(const struct rules *rs, const struct eval *ev, const char *key,
			struct buf *out)
{
	const char *ext = NULL, *type;
	enum mime_from from;

	if (ev->val[S_CTYPE])
		return explain_line(out, rs, ev->by[S_CTYPE], ev->line[S_CTYPE],
				    "Content-Type: %s", ev->val[S_CTYPE]);
	type = mime_lookup(key, &from, &ext);
	if (from == MIME_BUILTIN)
		return buf_addf(out, "Content-Type: %s    (detected from .%s)\n", type, ext);
	if (from == MIME_SYSTEM)
		return buf_addf(out, "Content-Type: %s    (detected from .%s, %s)\n", type, ext,
				MIME_TYPES_PATH);
	return buf_addf(out, "Content-Type: %s    (default: %s)\n", type,
			ext ? "unknown extension" : "no extension");
}

static int explain_compress(const struct rules *rs, const struct eval *ev,
			    const struct rule_result *rr, struct buf *out)
{
	const struct rule *by = ev->by[S_COMPRESS];
	int line = ev->line[S_COMPRESS];
	const char *name = compress_name(rr->compress);

	if (rr->compress == COMPRESS_NONE)
		return explain_line(out, rs, by, line, "Compression: none");
	if (!type_compressible(rr->content_type))
		return explain_line(out, rs, by, line,
				    "Compression: none (compress = %s, but %s is not a "
				    "compressible type)",
				    name, rr->content_type);
	return explain_line(out, rs, by, line,
			    "Compression: %s when the body is %d bytes or more "
			    "(Content-Encoding: %s)",
			    name, RULES_COMPRESS_MIN, compress_encoding(rr->compress));
}

static int explain_access(const struct rules *rs, const struct eval *ev,
			  const struct rule_result *rr, struct buf *out)
{
	const struct rule *by = ev->by[S_CLASS];
	const char *sc = rr->storage_class ? rr->storage_class : "STANDARD";
	int rc;

	if (sends_class(sc))
		rc = explain_line(out, rs, by, ev->line[S_CLASS],
				  "Storage class: %s (x-amz-storage-class: %s)", sc, sc);
	else
		rc = explain_line(out, rs, by, ev->line[S_CLASS],
				  "Storage class: STANDARD (no x-amz-storage-class header)");
	by = ev->by[S_ACL];
	if (rc == 0 && !rr->acl)
		rc = explain_line(out, rs, by, ev->line[S_ACL],
				  "ACL: none (no x-amz-acl header: the bucket's default)");
	else if (rc == 0 && !sends_acl(rr->acl))
		rc = explain_line(out, rs, by, ev->line[S_ACL],
				  "ACL: private (no x-amz-acl header: objects are private by "
				  "default, and buckets with ACLs disabled reject one)");
	else if (rc == 0)
		rc = explain_line(out, rs, by, ev->line[S_ACL], "ACL: %s (x-amz-acl: %s)",
				  rr->acl, rr->acl);
	by = ev->by[S_TTL];
	if (rc == 0 && rr->signed_url_ttl)
		rc = explain_line(out, rs, by, ev->line[S_TTL], "Signed URL TTL: %ld seconds",
				  rr->signed_url_ttl);
	else if (rc == 0)
		rc = explain_line(out, rs, by, ev->line[S_TTL], "Signed URL TTL: none");
	return rc;
}

static int explain_sse(const struct rules *rs, const struct eval *ev,
		       const struct rule_result *rr, struct buf *out)
{
	int rc;

	if (!rr->sse)
		rc = explain_line(out, rs, ev->by[S_SSE], ev->line[S_SSE],
				  "Encryption: the bucket's default (no "
				  "x-amz-server-side-encryption header)");
	else
		rc = explain_line(out, rs, ev->by[S_SSE], ev->line[S_SSE],
				  "Encryption: %s (x-amz-server-side-encryption: %s)", rr->sse,
				  rr->sse);
	if (rc == 0 && rr->sse_kms_key_id)
		rc = explain_line(out, rs, ev->by[S_KMS], ev->line[S_KMS],
				  is_kms(rr->sse) ? "KMS key: %s "
						    "(x-amz-server-side-encryption-aws-kms-key-id)" :
						    "KMS key: %s (not sent: sse is not aws:kms)",
				  rr->sse_kms_key_id);
	return rc;
}

int rules_explain(const struct rules *r, const char *key, struct buf *out)
{
	struct rule_result rr;
	struct eval ev;
	int rc;

	rules_eval(r, key, &rr);
	key = eval_key(r, key, &ev);
	rc = buf_addf(out, "Key: %s\n", key);
	if (rc == 0)
		rc = explain_line(out, r, ev.by[S_CACHE], ev.line[S_CACHE], "Cache-Control: %s",
				  rr.cache_control ? rr.cache_control : "(none)");
	if (rc == 0)
		rc = explain_type(r, &ev, key, out);
	if (rc == 0 && ev.by[S_CDISP])
		rc = explain_line(out, r, ev.by[S_CDISP], ev.line[S_CDISP],
				  "Content-Disposition: %s",
				  rr.content_disposition ? rr.content_disposition : "(none)");
	if (rc == 0)
		rc = explain_compress(r, &ev, &rr, out);
	if (rc == 0)
		rc = explain_access(r, &ev, &rr, out);
	if (rc == 0)
		rc = explain_sse(r, &ev, &rr, out);
	for (size_t i = 0; rc == 0 && i < r->nnames; i++) {
		if (ev.mval[i])
			rc = explain_line(out, r, ev.mby[i], ev.mline[i], "%s: %s",
					  r->meta_header[i], ev.mval[i]);
	}
	return rc;
}
