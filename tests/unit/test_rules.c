/*
 * test_rules.c - unit tests for fs/rules.c: glob matching, the config file
 * (every setting, ordering and overrides, resets, metadata, every error with
 * FILE:LINE), the built-in rules, Content-Type detection, the compression
 * decision, the headers a PUT sends, --print-rules and --explain.
 * Config files are written into a temporary directory, removed at the end.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../fs/rules.h"
#include "tap.h"

static char tmpdir[] = "/tmp/test_rules.XXXXXX";
static char conf_path[256];
static int nconf;

/* Write text to a fresh file in tmpdir; returns its path (static). */
static const char *write_conf(const char *text)
{
	FILE *f;

	snprintf(conf_path, sizeof(conf_path), "%s/c%d.conf", tmpdir, nconf++);
	f = fopen(conf_path, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
		printf("Bail out! cannot write %s\n", conf_path);
		exit(1);
	}
	return conf_path;
}

/* Load text as a config file; *err gets the message. */
static int load_text(struct rules **r, const char *text, struct buf *err)
{
	return rules_load(r, write_conf(text), NULL, NULL, err);
}

static int contains(const char *hay, const char *needle)
{
	return hay && strstr(hay, needle) != NULL;
}

/* ---------------------------------------------------------------- globs */

static void test_glob(void)
{
	static const struct {
		const char *glob, *path;
		int want;
	} cases[] = {
		{ "static/**", "static/a.css", 1 },
		{ "static/**", "static/x/y/z.js", 1 },
		{ "static/**", "static/", 1 },
		{ "static/**", "static", 0 },
		{ "static/**", "statics/a", 0 },
		{ "static/**", "a/static/b", 0 },
		{ "**/*.html", "index.html", 1 },
		{ "**/*.html", "a/b/index.html", 1 },
		{ "**/*.html", "a/index.htm", 0 },
		{ "**/*.html", "a/b/.html", 1 },
		{ "*.css", "a.css", 1 },
		{ "*.css", "a/b.css", 0 },
		{ "*.css", ".css", 1 },
		{ "*.css", "a.css.map", 0 },
		{ "img/*.png", "img/a.png", 1 },
		{ "img/*.png", "img/sub/a.png", 0 },
		{ "img/*.png", "img/.png", 1 },
		{ "img/*.png", "image/a.png", 0 },
		{ "[a-c]*", "apple", 1 },
		{ "[a-c]*", "cat", 1 },
		{ "[a-c]*", "dog", 0 },
		{ "[a-c]*", "a/b", 0 },
		{ "[!a-c]*", "dog", 1 },
		{ "[^a-c]*", "apple", 0 },
		{ "[]x]", "]", 1 },
		{ "[]x]", "x", 1 },
		{ "[!]]", "]", 0 },
		{ "[a-]", "-", 1 },
		{ "[\\]]", "]", 1 },
		{ "x[/]y", "x/y", 0 },
		{ "x[!a]y", "x/y", 0 },
		{ "file?.txt", "file1.txt", 1 },
		{ "file?.txt", "file12.txt", 0 },
		{ "file?.txt", "file.txt", 0 },
		{ "a?b", "a/b", 0 },
		{ "\\*", "*", 1 },
		{ "\\*", "a", 0 },
		{ "a\\*b", "a*b", 1 },
		{ "a\\*b", "axb", 0 },
		{ "\\?", "?", 1 },
		{ "\\?", "x", 0 },
		{ "\\[a]", "[a]", 1 },
		{ "a/**/b", "a/b", 1 },
		{ "a/**/b", "a/x/b", 1 },
		{ "a/**/b", "a/x/y/b", 1 },
		{ "a/**/b", "a/xb", 0 },
		{ "a/**/b", "ab", 0 },
		{ "**", "anything/at/all", 1 },
		{ "**", "", 1 },
		{ "**.css", "a/b/c.css", 1 },
		{ "a**", "ab/c", 1 },
		{ "***/x", "x", 1 },
		{ "*", "", 1 },
		{ "*", "abc", 1 },
		{ "*", "a/b", 0 },
		{ "*/*", "a/b", 1 },
		{ "*/*", "a/b/c", 0 },
		{ "**/", "a/", 1 },
		{ "**/**/x", "x", 1 },
		{ "**/**/x", "a/b/c/x", 1 },
		{ "Static/**", "static/a", 0 },
		{ "*a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0 },
		{ "**/x/**/y", "x/y", 1 },
		{ "**/x/**/y", "p/x/q/r/y", 1 },
		{ "**/x/**/y", "p/xq/y", 0 },
		{ "d\xc3\xa9j\xc3\xa0/*", "d\xc3\xa9j\xc3\xa0/a", 1 },
		{ "[", "[", 0 },    /* invalid glob: no match */
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		is_int(rules_glob_match(cases[i].glob, cases[i].path), cases[i].want,
		       "glob '%s' %s '%s'", cases[i].glob, cases[i].want ? "matches" : "rejects",
		       cases[i].path);
}

static void test_glob_check(void)
{
	static const struct {
		const char *glob, *why;
	} bad[] = {
		{ "", "empty glob" },
		{ "/static/**", "glob starts with '/' (keys are relative to the mount)" },
		{ "a[bc", "unterminated character class" },
		{ "a[", "unterminated character class" },
		{ "[]", "unterminated character class" },
		{ "[z-a]", "reversed range in character class" },
		{ "a\\", "glob ends with '\\'" },
		{ "[a\\", "unterminated character class" },
	};
	static const char *const good[] = {
		"static/**", "**/*.html", "*.css", "[a-c]*", "file?.txt", "\\*", "[]]", "a/**/b",
	};
	char longglob[RULES_GLOB_MAX + 2];
	const char *why;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		why = NULL;
		is_int(rules_glob_why(bad[i].glob, &why), -EINVAL, "glob '%s' is invalid",
		       bad[i].glob);
		is_str(why, bad[i].why, "reason for '%s'", bad[i].glob);
		is_int(rules_glob_check(bad[i].glob), -EINVAL, "rules_glob_check '%s'", bad[i].glob);
	}
	for (size_t i = 0; i < ARRAY_SIZE(good); i++)
		is_int(rules_glob_check(good[i]), 0, "glob '%s' is valid", good[i]);
	memset(longglob, 'a', sizeof(longglob) - 1);
	longglob[sizeof(longglob) - 1] = '\0';
	is_int(rules_glob_check(longglob), -EINVAL, "a glob over RULES_GLOB_MAX is invalid");
	longglob[RULES_GLOB_MAX] = '\0';
	is_int(rules_glob_check(longglob), 0, "a glob of RULES_GLOB_MAX bytes is valid");
	ok(rules_glob_match(longglob, longglob), "it matches itself");
}

/* ----------------------------------------------------------- built-ins */

static void test_builtin(void)
{
	struct rules *r = NULL;
	struct rule_result rr;
	struct buf err;

	buf_init(&err, 0);
	is_int(rules_load(&r, NULL, NULL, NULL, &err), 0, "built-in rules load");
	ok(r && rules_builtin(r), "they say they are built-in");

	rules_eval(r, "static/css/app.css", &rr);
	is_str(rr.cache_control, "max-age=31536000, public, immutable", "static: Cache-Control");
	is_str(rr.src_cache_control, "static/**", "static: source of Cache-Control");
	is_int(rr.compress, COMPRESS_GZIP, "static: gzip");
	is_str(rr.src_compress, "static/**", "static: source of compress");
	is_str(rr.content_type, "text/css; charset=utf-8", "static: detected type");
	is_str(rr.src_content_type, "detected", "static: type source is 'detected'");
	ok(rr.acl == NULL && rr.signed_url_ttl == 0 && rr.storage_class == NULL,
	   "static: no acl, ttl, storage class");

	rules_eval(r, "media/uploads/cat.jpg", &rr);
	is_str(rr.cache_control, "max-age=86400, public", "media: Cache-Control");
	is_int(rr.compress, COMPRESS_NONE, "media: no compression");
	ok(rr.acl == NULL, "media: no acl");

	rules_eval(r, "private/receipts/r1.pdf", &rr);
	is_str(rr.cache_control, "no-cache, no-store, must-revalidate", "private: Cache-Control");
	is_str(rr.acl, "private", "private: acl private");
	is_int(rr.signed_url_ttl, 3600, "private: signed URLs of 1 hour");
	is_str(rr.src_signed_url_ttl, "private/**", "private: source of the ttl");
	is_str(rr.content_type, "application/pdf", "private: pdf type");

	rules_eval(r, "index.html", &rr);
	ok(rr.cache_control == NULL && rr.src_cache_control == NULL, "other keys: no Cache-Control");
	is_int(rr.compress, COMPRESS_NONE, "other keys: no compression");
	rules_eval(r, "/static/a.js", &rr);
	is_str(rr.cache_control, "max-age=31536000, public, immutable",
	       "a leading '/' is ignored");
	rules_eval(r, "staticfiles/a.js", &rr);
	ok(rr.cache_control == NULL, "staticfiles/ is not static/");
	rules_free(r);

	/* A file with only option sections keeps the built-in rules. */
	r = NULL;
	is_int(load_text(&r, "[s3]\nbucket = b\n[mount]\nro = 1\n", &err), 0,
	       "file without rules loads");
	ok(r && rules_builtin(r), "file without rules: built-in rules");
	rules_eval(r, "media/a.png", &rr);
	is_str(rr.cache_control, "max-age=86400, public", "file without rules: media rule");
	rules_free(r);
	r = NULL;
	is_int(load_text(&r, "", &err), 0, "empty file loads");
	ok(r && rules_builtin(r), "empty file: built-in rules");
	rules_free(r);
	rules_free(NULL);
	buf_release(&err);
}

/* ---------------------------------------------------- order, overrides */

static void test_order(void)
{
	static const char conf[] =
		"# later rules override earlier ones, per setting\n"
		"[rule \"**\"]\n"
		"cache_control = max-age=60\n"
		"storage_class = STANDARD_IA\n"
		"\n"
		"[rule \"static/**\"]\n"
		"cache_control = max-age=31536000, public, immutable\n"
		"compress = br\n"
		"\n"
		"[rule \"static/**/*.html\"]\n"
		"cache_control = no-cache\n"
		"\n"
		"[rule \"**/*.css\"]\n"
		"content_type = text/css\n";
	struct rules *r = NULL;
	struct rule_result rr;
	struct buf err;

	buf_init(&err, 0);
	is_int(load_text(&r, conf, &err), 0, "ordered rules load");
	ok(r && !rules_builtin(r), "file rules replace the built-in ones");

	rules_eval(r, "static/app.css", &rr);
	is_str(rr.cache_control, "max-age=31536000, public, immutable", "static overrides **");
	is_str(rr.src_cache_control, "static/**", "source: static/**");
	is_str(rr.storage_class, "STANDARD_IA", "storage class from ** still applies");
	is_str(rr.src_storage_class, "**", "source of storage class: **");
	is_int(rr.compress, COMPRESS_BR, "br from static/**");
	is_str(rr.content_type, "text/css", "content_type from the last rule, verbatim");
	is_str(rr.src_content_type, "**/*.css", "source of content_type");

	rules_eval(r, "static/a/index.html", &rr);
	is_str(rr.cache_control, "no-cache", "a later, narrower rule overrides");
	is_int(rr.compress, COMPRESS_BR, "and keeps the earlier compress");

	rules_eval(r, "index.html", &rr);
	is_str(rr.cache_control, "max-age=60", "only ** matches index.html");
	is_int(rr.compress, COMPRESS_NONE, "no compression for index.html");
	rules_free(r);

	/* Order matters: a broad rule after a narrow one wins. */
	r = NULL;
	is_int(load_text(&r,
			 "[rule \"static/**\"]\ncache_control = a\n"
			 "[rule \"**\"]\ncache_control = b\n",
			 &err),
	       0, "reversed rules load");
	rules_eval(r, "static/x", &rr);
	is_str(rr.cache_control, "b", "the later broad rule wins");
	rules_free(r);

	/* The same setting twice in a rule: the last one counts. */
	r = NULL;
	is_int(load_text(&r, "[rule \"*\"]\ncache_control = a\ncache_control = b\n", &err), 0,
	       "repeated setting loads");
	rules_eval(r, "x", &rr);
	is_str(rr.cache_control, "b", "the last value of a repeated setting");
	rules_free(r);

	/* The same glob in two places is two rules, in their places. */
	r = NULL;
	is_int(load_text(&r,
			 "[rule \"a/*\"]\ncache_control = one\n"
			 "[rule \"*/x\"]\ncache_control = two\n"
			 "[rule \"a/*\"]\nacl = public-read\n",
			 &err),
	       0, "repeated glob loads");
	rules_eval(r, "a/x", &rr);
	is_str(rr.cache_control, "two", "second rule overrides the first a/*");
	is_str(rr.acl, "public-read", "third rule adds the acl");
	rules_free(r);
	buf_release(&err);
}

/* ------------------------------------------------------- every setting */

static void test_settings(void)
{
	static const char conf[] =
		"[rule \"docs/**\"]\n"
		"Cache-Control = max-age=300\n"
		"CONTENT_TYPE = application/pdf\n"
		"content-disposition = attachment; filename=\"report.pdf\"\n"
		"Compress = GZIP\n"
		"storage-class = glacier_ir\n"
		"ACL = Public-Read\n"
		"sse = AWS:KMS\n"
		"sse_kms_key_id = arn:aws:kms:us-east-1:123456789012:key/abcd\n"
		"signed_url_ttl = 15m\n"
		"meta.Owner = team-a\n"
		"meta.build_id = 42\n";
	struct rules *r = NULL;
	struct rule_result rr;
	struct buf err;

	buf_init(&err, 0);
	is_int(load_text(&r, conf, &err), 0, "every setting loads");
	if (err.len)
		printf("# %s\n", buf_str(&err));
	rules_eval(r, "docs/q3.pdf", &rr);
	is_str(rr.cache_control, "max-age=300", "cache_control (Cache-Control spelling)");
	is_str(rr.content_type, "application/pdf", "content_type (upper case name)");
	is_str(rr.content_disposition, "attachment; filename=\"report.pdf\"",
	       "content_disposition keeps inner quotes");
	is_int(rr.compress, COMPRESS_GZIP, "compress, case-insensitive value");
	is_str(rr.storage_class, "GLACIER_IR", "storage_class canonical upper case");
	is_str(rr.acl, "public-read", "acl canonical lower case");
	is_str(rr.sse, "aws:kms", "sse canonical");
	is_str(rr.sse_kms_key_id, "arn:aws:kms:us-east-1:123456789012:key/abcd", "sse_kms_key_id");
	is_int(rr.signed_url_ttl, 900, "signed_url_ttl 15m");
	is_int(rr.nmeta, 2, "two metadata entries");
	is_str(rr.meta[0].name, "owner", "meta name lowercased");
	is_str(rr.meta[0].value, "team-a", "meta value");
	is_str(rr.meta_header[0], "x-amz-meta-owner", "meta header name");
	is_str(rr.meta[1].name, "build_id", "meta name with '_' kept");
	is_str(rr.meta_header[1], "x-amz-meta-build_id", "meta header with '_'");
	is_str(rr.src_content_disposition, "docs/**", "source of content_disposition");
	is_str(rr.src_sse, "docs/**", "source of sse");
	is_str(rr.src_acl, "docs/**", "source of acl");
	rules_free(r);

	/* Every storage class, acl, sse, compress and ttl form. */
	static const struct {
		const char *setting, *value, *want;
		long ttl;
	} vals[] = {
		{ "storage_class", "STANDARD", "STANDARD", 0 },
		{ "storage_class", "REDUCED_REDUNDANCY", "REDUCED_REDUNDANCY", 0 },
		{ "storage_class", "STANDARD_IA", "STANDARD_IA", 0 },
		{ "storage_class", "ONEZONE_IA", "ONEZONE_IA", 0 },
		{ "storage_class", "INTELLIGENT_TIERING", "INTELLIGENT_TIERING", 0 },
		{ "storage_class", "GLACIER", "GLACIER", 0 },
		{ "storage_class", "DEEP_ARCHIVE", "DEEP_ARCHIVE", 0 },
		{ "storage_class", "GLACIER_IR", "GLACIER_IR", 0 },
		{ "storage_class", "OUTPOSTS", "OUTPOSTS", 0 },
		{ "storage_class", "SNOW", "SNOW", 0 },
		{ "storage_class", "express_onezone", "EXPRESS_ONEZONE", 0 },
		{ "acl", "private", "private", 0 },
		{ "acl", "public-read", "public-read", 0 },
		{ "acl", "public-read-write", "public-read-write", 0 },
		{ "acl", "authenticated-read", "authenticated-read", 0 },
		{ "acl", "aws-exec-read", "aws-exec-read", 0 },
		{ "acl", "bucket-owner-read", "bucket-owner-read", 0 },
		{ "acl", "BUCKET-OWNER-FULL-CONTROL", "bucket-owner-full-control", 0 },
		{ "sse", "aes256", "AES256", 0 },
		{ "sse", "aws:kms", "aws:kms", 0 },
		{ "sse", "aws:kms:dsse", "aws:kms:dsse", 0 },
		{ "signed_url_ttl", "3600", NULL, 3600 },
		{ "signed_url_ttl", "90s", NULL, 90 },
		{ "signed_url_ttl", "5m", NULL, 300 },
		{ "signed_url_ttl", "2H", NULL, 7200 },
		{ "signed_url_ttl", "7d", NULL, 604800 },
		{ "signed_url_ttl", "604800", NULL, 604800 },
		{ "signed_url_ttl", "0", NULL, 0 },
	};
	char text[256];

	for (size_t i = 0; i < ARRAY_SIZE(vals); i++) {
		r = NULL;
		snprintf(text, sizeof(text), "[rule \"*\"]\n%s = %s\n", vals[i].setting,
			 vals[i].value);
		is_int(load_text(&r, text, &err), 0, "%s = %s loads", vals[i].setting,
		       vals[i].value);
		if (!r)
			continue;
		rules_eval(r, "x", &rr);
		if (strcmp(vals[i].setting, "storage_class") == 0)
			is_str(rr.storage_class, vals[i].want, "storage_class %s", vals[i].value);
		else if (strcmp(vals[i].setting, "acl") == 0)
			is_str(rr.acl, vals[i].want, "acl %s", vals[i].value);
		else if (strcmp(vals[i].setting, "sse") == 0)
			is_str(rr.sse, vals[i].want, "sse %s", vals[i].value);
		else
			is_int(rr.signed_url_ttl, vals[i].ttl, "signed_url_ttl %s", vals[i].value);
		rules_free(r);
	}
	static const struct {
		const char *value;
		enum compress_kind want;
	} comp[] = { { "none", COMPRESS_NONE }, { "gzip", COMPRESS_GZIP }, { "br", COMPRESS_BR },
		     { "Br", COMPRESS_BR } };
	for (size_t i = 0; i < ARRAY_SIZE(comp); i++) {
		r = NULL;
		snprintf(text, sizeof(text), "[rule \"*\"]\ncompress = %s\n", comp[i].value);
		is_int(load_text(&r, text, &err), 0, "compress = %s loads", comp[i].value);
		if (!r)
			continue;
		rules_eval(r, "x", &rr);
		is_int(rr.compress, comp[i].want, "compress %s", comp[i].value);
		rules_free(r);
	}
	buf_release(&err);
}

/* An empty value resets a setting to its default. */
static void test_reset(void)
{
	static const char conf[] =
		"[rule \"**\"]\n"
		"cache_control = max-age=60\n"
		"content_type = text/plain\n"
		"content_disposition = attachment\n"
		"compress = gzip\n"
		"storage_class = GLACIER\n"
		"acl = public-read\n"
		"sse = AES256\n"
		"sse_kms_key_id = k\n"
		"signed_url_ttl = 1h\n"
		"meta.a = 1\n"
		"meta.b = 2\n"
		"[rule \"keep/**\"]\n"
		"cache_control = \"\"\n"
		"content_type = \"\"\n"
		"content_disposition =\n"
		"compress = \"\"\n"
		"storage_class = \"\"\n"
		"acl = \"\"\n"
		"sse = \"\"\n"
		"sse_kms_key_id = \"\"\n"
		"signed_url_ttl = \"\"\n"
		"meta.a = \"\"\n";
	struct rules *r = NULL;
	struct rule_result rr;
	struct buf err;

	buf_init(&err, 0);
	is_int(load_text(&r, conf, &err), 0, "reset config loads");
	rules_eval(r, "keep/a.html", &rr);
	ok(rr.cache_control == NULL, "cache_control reset");
	is_str(rr.src_cache_control, "keep/**", "the resetting rule is the source");
	is_str(rr.content_type, "text/html; charset=utf-8", "content_type reset: detected again");
	is_str(rr.src_content_type, "detected", "content_type source: detected");
	ok(rr.content_disposition == NULL, "content_disposition reset");
	is_int(rr.compress, COMPRESS_NONE, "compress reset");
	ok(rr.storage_class == NULL, "storage_class reset");
	ok(rr.acl == NULL, "acl reset");
	ok(rr.sse == NULL && rr.sse_kms_key_id == NULL, "sse reset");
	is_int(rr.signed_url_ttl, 0, "signed_url_ttl reset");
	is_int(rr.nmeta, 1, "meta.a removed, meta.b kept");
	is_str(rr.meta[0].name, "b", "meta.b remains");
	rules_eval(r, "other.html", &rr);
	is_str(rr.content_type, "text/plain", "elsewhere the first rule applies");
	is_int(rr.nmeta, 2, "elsewhere both metadata");
	rules_free(r);
	buf_release(&err);
}

static void test_meta_merge(void)
{
	static const char conf[] =
		"[rule \"**\"]\n"
		"meta.team = web\n"
		"meta.tier = 1\n"
		"[rule \"img/**\"]\n"
		"meta.tier = 2\n"
		"meta.kind = image\n";
	struct rules *r = NULL;
	struct rule_result rr, copy;
	struct buf err;

	buf_init(&err, 0);
	is_int(load_text(&r, conf, &err), 0, "meta config loads");
	rules_eval(r, "img/a.png", &rr);
	is_int(rr.nmeta, 3, "three merged names");
	is_str(rr.meta[0].name, "team", "first-appearance order: team");
	is_str(rr.meta[1].name, "tier", "then tier");
	is_str(rr.meta[1].value, "2", "tier overridden by the later rule");
	is_str(rr.meta[2].name, "kind", "then kind");
	copy = rr; /* rule_result holds no pointer into itself */
	is_str(copy.meta_header[2], "x-amz-meta-kind", "a copy stays valid");
	rules_eval(r, "a.css", &rr);
	is_int(rr.nmeta, 2, "two names elsewhere");
	is_str(rr.meta[1].value, "1", "tier 1 elsewhere");
	rules_free(r);

	/* RULES_META_MAX distinct names, then one too many. */
	struct buf text;
	int rc = 0;

	buf_init(&text, 0);
	rc = buf_addstr(&text, "[rule \"*\"]\n");
	for (int i = 0; i < RULES_META_MAX && rc == 0; i++)
		rc = buf_addf(&text, "meta.m%d = %d\n", i, i);
	r = NULL;
	is_int(rc == 0 ? load_text(&r, buf_str(&text), &err) : rc, 0,
	       "%d metadata names load", RULES_META_MAX);
	rules_eval(r, "x", &rr);
	is_int(rr.nmeta, RULES_META_MAX, "all of them apply");
	rules_free(r);
	r = NULL;
	if (buf_addstr(&text, "meta.extra = 1\n") == 0)
		is_int(load_text(&r, buf_str(&text), &err), -EINVAL, "one more is an error");
	ok(contains(buf_str(&err), "more than 32 metadata names"), "too many names: '%s'",
	   buf_str(&err));
	ok(r == NULL, "no rules on error");
	buf_release(&text);
	buf_release(&err);
}

/* --------------------------------------------------------------- errors */

static void test_errors(void)
{
	static const struct {
		const char *text;
		int line;
		const char *msg;
	} cases[] = {
		{ "[rule \"*\"]\nfoo = 1\n", 2, "unknown setting 'foo' in [rule \"*\"]" },
		{ "[rule \"a/**\"]\ncache_control = x\n\nmeta = 1\n", 4,
		  "unknown setting 'meta' in [rule \"a/**\"]" },
		{ "[rule \"*\"]\ncache_controls = x\n", 2,
		  "unknown setting 'cache_controls' in [rule \"*\"]" },
		{ "[bogus]\nx = 1\n", 2, "unknown section [bogus]" },
		{ "[s3 \"x\"]\nbucket = 1\n", 2, "unknown section [s3 \"x\"]" },
		{ "x = 1\n", 1, "setting 'x' outside a section" },
		{ "[rule]\ncache_control = x\n", 1, "[rule] needs a glob, as in [rule \"static/**\"]" },
		{ "[rule \"\"]\ncache_control = x\n", 1, "bad glob \"\": empty glob" },
		{ "[rule \"a[b\"]\ncache_control = x\n", 1,
		  "bad glob \"a[b\": unterminated character class" },
		{ "[rule \"/static/**\"]\ncache_control = x\n", 1,
		  "bad glob \"/static/**\": glob starts with '/' (keys are relative to the mount)" },
		{ "[rule \"[z-a]\"]\nacl = private\n", 1,
		  "bad glob \"[z-a]\": reversed range in character class" },
		{ "[rule \"*\"]\nstorage_class = COLD\n", 2,
		  "unknown storage_class 'COLD' (STANDARD, REDUCED_REDUNDANCY, STANDARD_IA, "
		  "ONEZONE_IA, INTELLIGENT_TIERING, GLACIER, DEEP_ARCHIVE, GLACIER_IR, OUTPOSTS, "
		  "SNOW or EXPRESS_ONEZONE)" },
		{ "[rule \"*\"]\ncompress = zstd\n", 2, "bad compress value 'zstd' (none, gzip or br)" },
		{ "[rule \"*\"]\ncompress = gzipgzip\n", 2,
		  "bad compress value 'gzipgzip' (none, gzip or br)" },
		{ "[rule \"*\"]\nacl = public\n", 2,
		  "unknown acl 'public' (private, public-read, public-read-write, "
		  "authenticated-read, aws-exec-read, bucket-owner-read or "
		  "bucket-owner-full-control)" },
		{ "[rule \"*\"]\nsse = kms\n", 2, "unknown sse 'kms' (AES256, aws:kms or aws:kms:dsse)" },
		{ "[rule \"*\"]\nsigned_url_ttl = 1w\n", 2,
		  "bad signed_url_ttl '1w' (seconds, or a number with s, m, h or d)" },
		{ "[rule \"*\"]\nsigned_url_ttl = -5\n", 2,
		  "bad signed_url_ttl '-5' (seconds, or a number with s, m, h or d)" },
		{ "[rule \"*\"]\nsigned_url_ttl = 1hh\n", 2,
		  "bad signed_url_ttl '1hh' (seconds, or a number with s, m, h or d)" },
		{ "[rule \"*\"]\nsigned_url_ttl = 1 h\n", 2,
		  "bad signed_url_ttl '1 h' (seconds, or a number with s, m, h or d)" },
		{ "[rule \"*\"]\nsigned_url_ttl = 8d\n", 2,
		  "signed_url_ttl '8d' is longer than 7 days, the limit of a presigned URL" },
		{ "[rule \"*\"]\nsigned_url_ttl = 604801\n", 2,
		  "signed_url_ttl '604801' is longer than 7 days, the limit of a presigned URL" },
		{ "[rule \"*\"]\nsigned_url_ttl = 99999999999999999999999\n", 2,
		  "signed_url_ttl '99999999999999999999999' is longer than 7 days, the limit of a "
		  "presigned URL" },
		{ "[rule \"*\"]\ncache_control = max-age=1\rX-Evil: 1\n", 2,
		  "control character in cache_control value" },
		{ "[rule \"*\"]\ncache_control = a\tb\n", 2, "control character in cache_control value" },
		{ "[rule \"*\"]\ncontent_disposition = attachment; filename=\"caf\xc3\xa9.pdf\"\n", 2,
		  "non-ASCII byte in content_disposition value (HTTP headers must be ASCII: "
		  "percent-encode it, as in filename*=UTF-8''...)" },
		{ "[rule \"*\"]\nmeta.note = a\x7f\n", 2, "control character in meta.note value" },
		{ "[rule \"*\"]\nsse_kms_key_id = k\x01\n", 2,
		  "control character in sse_kms_key_id value" },
		{ "[rule \"*\"]\ncontent_type = css\n", 2,
		  "bad content_type 'css' (expected TYPE/SUBTYPE)" },
		{ "[rule \"*\"]\ncontent_type = /css\n", 2,
		  "bad content_type '/css' (expected TYPE/SUBTYPE)" },
		{ "[rule \"*\"]\ncontent_type = text/\n", 2,
		  "bad content_type 'text/' (expected TYPE/SUBTYPE)" },
		{ "[rule \"*\"]\ncontent_type = charset=a/b\n", 1 + 1,
		  "bad content_type 'charset=a/b' (expected TYPE/SUBTYPE)" },
		{ "[rule \"*\"]\nmeta. = 1\n", 2, "bad metadata name 'meta.' (letters, digits, '-' and '_')" },
		{ "[rule \"*\"]\nmeta.a.b = 1\n", 2,
		  "bad metadata name 'meta.a.b' (letters, digits, '-' and '_')" },
		{ "[rule \"*\"]\nmeta.a b = 1\n", 2,
		  "bad metadata name 'meta.a b' (letters, digits, '-' and '_')" },
		{ "[rule \"*\"]\nmeta.Mode = 644\n", 2,
		  "metadata name 'meta.mode' is reserved for the file attributes cdnfs stores "
		  "itself" },
		{ "[rule \"*\"]\nmeta.uid = 0\n", 2,
		  "metadata name 'meta.uid' is reserved for the file attributes cdnfs stores itself" },
		{ "[rule \"*\"]\nmeta.cdnfs-size = 1\n", 2,
		  "metadata name 'meta.cdnfs-size' is reserved for the file attributes cdnfs stores "
		  "itself" },
		{ "[rule \"*\"]\nno equals sign\n", 2, "expected 'key = value'" },
		{ "[rule \"*\"\ncache_control = x\n", 1, "unterminated section header" },
	};
	struct rules *r;
	struct buf err, want;
	const char *path;

	buf_init(&err, 0);
	buf_init(&want, 0);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		r = (struct rules *)&err; /* must be reset to NULL */
		path = write_conf(cases[i].text);
		buf_reset(&want);
		if (buf_addf(&want, "%s:%d: %s", path, cases[i].line, cases[i].msg) < 0)
			break;
		is_int(rules_load(&r, path, NULL, NULL, &err), -EINVAL, "error %zu fails", i);
		is_str(buf_str(&err), buf_str(&want), "error %zu message", i);
		ok(r == NULL, "error %zu: *out is NULL", i);
	}
	/* err may be NULL */
	r = NULL;
	is_int(rules_load(&r, write_conf("[rule \"*\"]\nx = 1\n"), NULL, NULL, NULL), -EINVAL,
	       "errors without an err buffer");
	/* A missing file. */
	buf_reset(&want);
	if (buf_addf(&want, "cannot read '%s/absent.conf': No such file or directory", tmpdir) == 0) {
		char absent[300];

		snprintf(absent, sizeof(absent), "%s/absent.conf", tmpdir);
		is_int(rules_load(&r, absent, NULL, NULL, &err), -ENOENT, "missing file: -ENOENT");
		is_str(buf_str(&err), buf_str(&want), "missing file message");
	}
	is_int(rules_load(&r, tmpdir, NULL, NULL, &err), -EISDIR, "a directory: -EISDIR");
	buf_release(&want);
	buf_release(&err);
}

/* ------------------------------------------------------ option sections */

struct opt_log {
	struct buf seen;
	int reject_line;
};

static int opt_cb(void *arg, const char *section, const char *key, const char *value,
		  struct buf *err)
{
	struct opt_log *log = arg;

	if (strcmp(key, "bad") == 0) {
		if (buf_addf(err, "bad option '%s'", value) < 0)
			return -ENOMEM;
		return -EINVAL;
	}
	if (buf_addf(&log->seen, "%s.%s=%s;", section, key, value) < 0)
		return -ENOMEM;
	return 0;
}

static void test_opt_sections(void)
{
	static const char conf[] =
		"[s3]\n"
		"bucket = assets\n"
		"endpoint = http://127.0.0.1:9000/?x=1#y\n"
		"[CDN]\n"
		"provider = cloudfront\n"
		"[rule \"static/**\"]\n"
		"cache_control = max-age=1\n"
		"[mount]\n"
		"Cache-Size = 1G\n";
	struct opt_log log = { .reject_line = 0 };
	struct rules *r = NULL;
	struct rule_result rr;
	struct buf err;
	const char *path;

	buf_init(&log.seen, 0);
	buf_init(&err, 0);
	is_int(rules_load(&r, write_conf(conf), opt_cb, &log, &err), 0, "options + rules load");
	is_str(buf_str(&log.seen),
	       "s3.bucket=assets;s3.endpoint=http://127.0.0.1:9000/?x=1#y;cdn.provider=cloudfront;"
	       "mount.Cache-Size=1G;",
	       "every option key reaches the callback, section lowercased, key as written");
	ok(r && !rules_builtin(r), "the rule counts");
	rules_eval(r, "static/a", &rr);
	is_str(rr.cache_control, "max-age=1", "rule after an option section");
	rules_free(r);

	r = NULL;
	path = write_conf("[s3]\nbucket = b\n\n[cdn]\nbad = yes\n");
	is_int(rules_load(&r, path, opt_cb, &log, &err), -EINVAL, "callback rejection fails");
	{
		char want[300];

		snprintf(want, sizeof(want), "%s:5: bad option 'yes'", path);
		is_str(buf_str(&err), want, "rejection prefixed with FILE:LINE");
	}
	/* Without a callback, option sections are accepted and ignored. */
	r = NULL;
	is_int(rules_load(&r, write_conf("[s3]\nbad = 1\n"), NULL, NULL, &err), 0,
	       "no callback: option sections ignored");
	rules_free(r);
	buf_release(&log.seen);
	buf_release(&err);
}

/* ---------------------------------------------------------- MIME types */

static void test_mime(void)
{
	static const struct {
		const char *name, *type;
	} cases[] = {
		{ "a.css", "text/css; charset=utf-8" },
		{ "a.js", "text/javascript; charset=utf-8" },
		{ "a.mjs", "text/javascript; charset=utf-8" },
		{ "a.js.map", "application/json; charset=utf-8" },
		{ "a.json", "application/json; charset=utf-8" },
		{ "site.webmanifest", "application/manifest+json; charset=utf-8" },
		{ "a.svg", "image/svg+xml" },
		{ "a.png", "image/png" },
		{ "a.jpg", "image/jpeg" },
		{ "a.jpeg", "image/jpeg" },
		{ "a.gif", "image/gif" },
		{ "a.webp", "image/webp" },
		{ "a.avif", "image/avif" },
		{ "favicon.ico", "image/vnd.microsoft.icon" },
		{ "f.woff", "font/woff" },
		{ "f.woff2", "font/woff2" },
		{ "f.ttf", "font/ttf" },
		{ "f.otf", "font/otf" },
		{ "f.eot", "application/vnd.ms-fontobject" },
		{ "index.html", "text/html; charset=utf-8" },
		{ "index.htm", "text/html; charset=utf-8" },
		{ "robots.txt", "text/plain; charset=utf-8" },
		{ "sitemap.xml", "application/xml; charset=utf-8" },
		{ "feed.rss", "application/rss+xml; charset=utf-8" },
		{ "doc.pdf", "application/pdf" },
		{ "v.mp4", "video/mp4" },
		{ "v.webm", "video/webm" },
		{ "s.mp3", "audio/mpeg" },
		{ "m.wasm", "application/wasm" },
		{ "a.zip", "application/zip" },
		{ "a.css.gz", "application/gzip" },
		{ "a.css.br", "application/x-brotli" },
		{ "d.csv", "text/csv; charset=utf-8" },
		{ "README.md", "text/markdown; charset=utf-8" },
		{ "r.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document" },
		{ "STATIC/APP.CSS", "text/css; charset=utf-8" },
		{ "Photo.JPG", "image/jpeg" },
		{ "static/css/app.3f2a1b.css", "text/css; charset=utf-8" },
		{ "noext", "application/octet-stream" },
		{ ".htaccess", "application/octet-stream" },
		{ "dir/.hidden", "application/octet-stream" },
		{ "trailing.", "application/octet-stream" },
		{ "a.v1/file", "application/octet-stream" },
		{ "a.unknownextension123", "application/octet-stream" },
		{ "x.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "application/octet-stream" },
		{ "", "application/octet-stream" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		is_str(rules_mime_type(cases[i].name), cases[i].type, "type of '%s'", cases[i].name);
	ok(rules_mime_type("a.css") == rules_mime_type("b.CSS"), "results are static");
}

static void *mime_thread(void *arg)
{
	const char **out = arg;

	*out = rules_mime_type("pkg.deb");
	return NULL;
}

/* Extensions only /etc/mime.types knows, looked up from several threads at
 * once (the table is read once under pthread_once). */
static void test_mime_system(void)
{
	pthread_t th[4];
	const char *got[4] = { NULL };
	int started = 0;

	if (access("/etc/mime.types", R_OK) != 0) {
		ok(1, "# SKIP no /etc/mime.types");
		return;
	}
	for (int i = 0; i < 4; i++)
		if (pthread_create(&th[i], NULL, mime_thread, &got[i]) == 0)
			started++;
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	is_int(started, 4, "four threads");
	for (int i = 0; i < started; i++)
		is_str(got[i], "application/vnd.debian.binary-package", "thread %d: .deb", i);
	is_str(rules_mime_type("a.ODT"), "application/vnd.oasis.opendocument.text",
	       ".odt from mime.types, case-insensitive");
	/* text/ types from mime.types get the charset too */
	is_str(rules_mime_type("main.c"), "text/x-csrc; charset=utf-8", "text/ gets charset");
}

/* ---------------------------------------------------------- compression */

static void test_should_compress(void)
{
	static const struct {
		const char *type;
		int want;
	} types[] = {
		{ "text/css; charset=utf-8", 1 },
		{ "text/html", 1 },
		{ "text/plain; charset=utf-8", 1 },
		{ "text/javascript; charset=utf-8", 1 },
		{ "application/javascript", 1 },
		{ "application/json; charset=utf-8", 1 },
		{ "application/manifest+json; charset=utf-8", 1 },
		{ "application/ld+json", 1 },
		{ "application/xml", 1 },
		{ "application/rss+xml", 1 },
		{ "image/svg+xml", 1 },
		{ "IMAGE/SVG+XML", 1 },
		{ "application/wasm", 1 },
		{ "font/ttf", 1 },
		{ "font/otf", 1 },
		{ "application/vnd.ms-fontobject", 1 },
		{ "image/vnd.microsoft.icon", 1 },
		{ "image/x-icon", 1 },
		{ "image/png", 0 },
		{ "image/jpeg", 0 },
		{ "image/gif", 0 },
		{ "image/webp", 0 },
		{ "image/avif", 0 },
		{ "font/woff", 0 },
		{ "font/woff2", 0 },
		{ "application/zip", 0 },
		{ "application/gzip", 0 },
		{ "application/x-brotli", 0 },
		{ "video/mp4", 0 },
		{ "video/webm", 0 },
		{ "audio/mpeg", 0 },
		{ "application/pdf", 0 },
		{ "application/octet-stream", 0 },
		{ "", 0 },
	};
	struct rule_result rr;

	memset(&rr, 0, sizeof(rr));
	rr.compress = COMPRESS_GZIP;
	for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
		rr.content_type = types[i].type;
		is_int(rules_should_compress(&rr, 4096), types[i].want, "compress '%s': %d",
		       types[i].type, types[i].want);
	}
	rr.content_type = "text/css";
	is_int(RULES_COMPRESS_MIN, 1024, "the threshold is 1024 bytes");
	is_int(rules_should_compress(&rr, RULES_COMPRESS_MIN - 1), 0, "1023 bytes: stored as is");
	is_int(rules_should_compress(&rr, RULES_COMPRESS_MIN), 1, "1024 bytes: compressed");
	is_int(rules_should_compress(&rr, 0), 0, "empty: stored as is");
	rr.compress = COMPRESS_BR;
	is_int(rules_should_compress(&rr, 1 << 20), 1, "brotli too");
	rr.compress = COMPRESS_NONE;
	is_int(rules_should_compress(&rr, 1 << 20), 0, "compress none: never");
	is_int(rules_should_compress(NULL, 1 << 20), 0, "NULL result: never");
}

/* -------------------------------------------------------------- headers */

/* "name: value\n" for each header. */
static const char *hdr_str(const struct sigv4_kv *kv, size_t n, struct buf *b)
{
	buf_reset(b);
	for (size_t i = 0; i < n; i++)
		if (buf_addf(b, "%s: %s\n", kv[i].name, kv[i].value ? kv[i].value : "") < 0)
			return "(oom)";
	return buf_str(b);
}

static void test_headers(void)
{
	static const char conf[] =
		"[rule \"**\"]\n"
		"cache_control = max-age=60\n"
		"content_disposition = inline\n"
		"storage_class = STANDARD_IA\n"
		"acl = bucket-owner-full-control\n"
		"sse = aws:kms\n"
		"sse_kms_key_id = key-1\n"
		"meta.owner = web\n"
		"[rule \"std/**\"]\n"
		"storage_class = STANDARD\n"
		"acl = private\n"
		"sse = AES256\n"
		"[rule \"none/**\"]\n"
		"cache_control =\n"
		"content_disposition =\n"
		"storage_class =\n"
		"acl =\n"
		"sse =\n"
		"meta.owner =\n";
	struct sigv4_kv kv[RULES_HEADERS_MAX + 1];
	struct rules *r = NULL;
	struct rule_result rr;
	struct buf err, s;
	size_t n;

	buf_init(&err, 0);
	buf_init(&s, 0);
	is_int(load_text(&r, conf, &err), 0, "header config loads");
	rules_eval(r, "a/app.css", &rr);
	n = 0;
	is_int(rules_headers(&rr, "gzip", kv, &n, ARRAY_SIZE(kv)), 0, "headers fit");
	is_str(hdr_str(kv, n, &s),
	       "Content-Type: text/css; charset=utf-8\n"
	       "Cache-Control: max-age=60\n"
	       "Content-Disposition: inline\n"
	       "Content-Encoding: gzip\n"
	       "x-amz-storage-class: STANDARD_IA\n"
	       "x-amz-acl: bucket-owner-full-control\n"
	       "x-amz-server-side-encryption: aws:kms\n"
	       "x-amz-server-side-encryption-aws-kms-key-id: key-1\n"
	       "x-amz-meta-owner: web\n",
	       "every header, in order");

	rules_eval(r, "std/a.png", &rr);
	n = 1; /* appends after what is there */
	kv[0] = (struct sigv4_kv){ "x-first", "1" };
	is_int(rules_headers(&rr, NULL, kv, &n, ARRAY_SIZE(kv)), 0, "std headers");
	is_str(hdr_str(kv, n, &s),
	       "x-first: 1\n"
	       "Content-Type: image/png\n"
	       "Cache-Control: max-age=60\n"
	       "Content-Disposition: inline\n"
	       "x-amz-server-side-encryption: AES256\n"
	       "x-amz-meta-owner: web\n",
	       "STANDARD and private send nothing; the KMS key only with aws:kms");

	rules_eval(r, "none/x.bin", &rr);
	n = 0;
	is_int(rules_headers(&rr, "", kv, &n, ARRAY_SIZE(kv)), 0, "reset headers");
	is_str(hdr_str(kv, n, &s), "Content-Type: application/octet-stream\n",
	       "only Content-Type when everything is reset; \"\" encoding is none");

	rules_eval(r, "a/app.css", &rr);
	n = 0;
	is_int(rules_headers(&rr, "br", kv, &n, 8), -E2BIG, "nine headers do not fit in 8");
	is_int(n, 0, "nothing appended on -E2BIG");
	n = 5;
	is_int(rules_headers(&rr, "br", kv, &n, 4), -E2BIG, "*n past cap: -E2BIG");
	n = 0;
	is_int(rules_headers(&rr, "br", kv, &n, 9), 0, "exactly nine fit in 9");
	is_int(n, 9, "nine headers");
	rules_free(r);

	/* The built-in private rule: no x-amz-acl. */
	r = NULL;
	is_int(rules_load(&r, NULL, NULL, NULL, &err), 0, "built-ins");
	rules_eval(r, "private/r.pdf", &rr);
	n = 0;
	is_int(rules_headers(&rr, NULL, kv, &n, ARRAY_SIZE(kv)), 0, "private headers");
	is_str(hdr_str(kv, n, &s),
	       "Content-Type: application/pdf\n"
	       "Cache-Control: no-cache, no-store, must-revalidate\n",
	       "built-in private: Cache-Control only, no x-amz-acl");
	rules_free(r);
	buf_release(&s);
	buf_release(&err);
}

/* ---------------------------------------------------------- print/explain */

static void test_print(void)
{
	static const char conf[] =
		"[s3]\nbucket = b\n"
		"[rule \"static/**\"]\n"
		"meta.Team = web\n"
		"signed_url_ttl = 7200\n"
		"cache_control = max-age=31536000, public, immutable\n"
		"compress = gzip\n"
		"[rule \"a \\\"quoted\\\" \\\\ glob\"]\n"
		"content_disposition = \"  padded  \"\n"
		"cache_control = \"\"\n"
		"sse = aes256\n"
		"sse_kms_key_id = \"\"quoted\"\"\n"
		"signed_url_ttl = 90\n"
		"storage_class = glacier\n"
		"acl = private\n"
		"content_type = text/plain\n";
	struct rules *r = NULL, *r2 = NULL;
	struct buf out, out2, err;
	const char *p1, *p2;

	buf_init(&out, 0);
	buf_init(&out2, 0);
	buf_init(&err, 0);
	is_int(rules_load(&r, NULL, NULL, NULL, &err), 0, "built-ins for print");
	is_int(rules_print(r, &out), 0, "print built-ins");
	is_str(buf_str(&out),
	       "# cdnfs rules: built-in (no configuration file)\n"
	       "# Every rule whose glob matches a key applies, in this order; a later rule's "
	       "setting overrides an earlier one's.\n"
	       "\n[rule \"static/**\"]\n"
	       "\tcache_control = max-age=31536000, public, immutable\n"
	       "\tcompress = gzip\n"
	       "\n[rule \"media/**\"]\n"
	       "\tcache_control = max-age=86400, public\n"
	       "\n[rule \"private/**\"]\n"
	       "\tcache_control = no-cache, no-store, must-revalidate\n"
	       "\tacl = private\n"
	       "\tsigned_url_ttl = 1h\n",
	       "built-in rules printed as INI");
	rules_free(r);

	r = NULL;
	is_int(load_text(&r, conf, &err), 0, "print config loads");
	if (err.len)
		printf("# %s\n", buf_str(&err));
	buf_reset(&out);
	is_int(rules_print(r, &out), 0, "print file rules");
	ok(contains(buf_str(&out), "# cdnfs rules from '"), "says which file");
	ok(contains(buf_str(&out), "[rule \"static/**\"]\n\t# "), "names FILE:LINE");
	ok(contains(buf_str(&out), "\tcache_control = max-age=31536000, public, immutable\n"
				   "\tcompress = gzip\n"
				   "\tsigned_url_ttl = 2h\n"
				   "\tmeta.team = web\n"),
	   "canonical order, ttl in hours, meta lowercased");
	ok(contains(buf_str(&out), "[rule \"a \\\"quoted\\\" \\\\ glob\"]"), "glob escaped");
	ok(contains(buf_str(&out), "\tcache_control = \"\"\n"), "reset printed as \"\"");
	ok(contains(buf_str(&out), "\tcontent_disposition = \"  padded  \"\n"), "padding quoted");
	ok(contains(buf_str(&out), "\tsse_kms_key_id = \"\"quoted\"\"\n"), "quotes kept");
	ok(contains(buf_str(&out), "\tsigned_url_ttl = 90\n"), "90 seconds as seconds");
	ok(contains(buf_str(&out), "\tstorage_class = GLACIER\n\tacl = private\n\tsse = AES256\n"),
	   "canonical values");

	/* Round trip: the printed rules load back to the same rules. */
	is_int(load_text(&r2, buf_str(&out), &err), 0, "printed rules load back");
	if (err.len)
		printf("# %s\n", buf_str(&err));
	is_int(r2 ? rules_print(r2, &out2) : -1, 0, "print again");
	p1 = strstr(buf_str(&out), "\n[rule");
	p2 = strstr(buf_str(&out2), "\n[rule");
	ok(p1 && p2, "both printouts have rules");
	/* Line comments differ (the line numbers); compare without them. */
	{
		struct buf a, b;
		const char *srcs[2] = { p1, p2 };
		struct buf *dst[2] = { &a, &b };

		buf_init(&a, 0);
		buf_init(&b, 0);
		for (int k = 0; k < 2; k++) {
			for (const char *l = srcs[k]; l && *l;) {
				const char *nl = strchr(l, '\n');
				size_t len = nl ? (size_t)(nl - l) + 1 : strlen(l);

				if (strncmp(l, "\t# ", 3) != 0 && buf_add(dst[k], l, len) < 0)
					break;
				l += len;
			}
		}
		is_str(buf_str(&b), buf_str(&a), "round trip gives the same rules");
		buf_release(&a);
		buf_release(&b);
	}
	rules_free(r2);
	rules_free(r);

	/* A file with only options: built-ins, naming the file. */
	r = NULL;
	is_int(load_text(&r, "[s3]\nbucket = b\n", &err), 0, "options-only file");
	buf_reset(&out);
	is_int(rules_print(r, &out), 0, "print");
	ok(contains(buf_str(&out), "has no [rule] section)\n"), "says built-in because of FILE");
	rules_free(r);
	buf_release(&out);
	buf_release(&out2);
	buf_release(&err);
}

static void test_explain(void)
{
	static const char conf[] =
		"[rule \"static/**\"]\n"
		"cache_control = max-age=31536000, public, immutable\n"
		"compress = gzip\n"
		"\n"
		"[rule \"**/*.png\"]\n"
		"storage_class = STANDARD_IA\n"
		"acl = public-read\n"
		"meta.kind = image\n"
		"[rule \"docs/**\"]\n"
		"content_type = application/pdf\n"
		"content_disposition = attachment\n"
		"sse = aws:kms\n"
		"sse_kms_key_id = k1\n"
		"signed_url_ttl = 10m\n";
	struct rules *r = NULL;
	struct buf out, err, want;
	const char *path;

	buf_init(&out, 0);
	buf_init(&err, 0);
	buf_init(&want, 0);
	is_int(rules_load(&r, NULL, NULL, NULL, &err), 0, "built-ins for explain");
	is_int(rules_explain(r, "static/css/app.css", &out), 0, "explain a static css");
	is_str(buf_str(&out),
	       "Key: static/css/app.css\n"
	       "Cache-Control: max-age=31536000, public, immutable    (built-in rule \"static/**\")\n"
	       "Content-Type: text/css; charset=utf-8    (detected from .css)\n"
	       "Compression: gzip when the body is 1024 bytes or more (Content-Encoding: gzip)"
	       "    (built-in rule \"static/**\")\n"
	       "Storage class: STANDARD (no x-amz-storage-class header)    (default)\n"
	       "ACL: none (no x-amz-acl header: the bucket's default)    (default)\n"
	       "Signed URL TTL: none    (default)\n"
	       "Encryption: the bucket's default (no x-amz-server-side-encryption header)    "
	       "(default)\n",
	       "explain static/css/app.css, whole output");
	buf_reset(&out);
	is_int(rules_explain(r, "private/a.zzqq", &out), 0, "explain private");
	ok(contains(buf_str(&out), "ACL: private (no x-amz-acl header: objects are private by "
				   "default, and buckets with ACLs disabled reject one)    "
				   "(built-in rule \"private/**\")\n"),
	   "private acl explained");
	ok(contains(buf_str(&out), "Signed URL TTL: 3600 seconds    (built-in rule \"private/**\")\n"),
	   "ttl explained");
	ok(contains(buf_str(&out), "Content-Type: application/octet-stream    (default: unknown "
				   "extension)\n"),
	   "unknown extension explained");
	buf_reset(&out);
	is_int(rules_explain(r, "static/img/a.png", &out), 0, "explain a static png");
	ok(contains(buf_str(&out), "Compression: none (compress = gzip, but image/png is not a "
				   "compressible type)    (built-in rule \"static/**\")\n"),
	   "png not compressed, explained");
	buf_reset(&out);
	is_int(rules_explain(r, "Makefile", &out), 0, "explain a file without extension");
	ok(contains(buf_str(&out),
		    "Content-Type: application/octet-stream    (default: no extension)\n"),
	   "no extension explained");
	rules_free(r);

	r = NULL;
	path = write_conf(conf);
	is_int(rules_load(&r, path, NULL, NULL, &err), 0, "explain config loads");
	buf_reset(&out);
	is_int(rules_explain(r, "static/logo.png", &out), 0, "explain static/logo.png");
	if (buf_addf(&want, "Cache-Control: max-age=31536000, public, immutable    (rule "
			    "\"static/**\", %s:2)\n",
		     path) == 0)
		ok(contains(buf_str(&out), buf_str(&want)), "Cache-Control with FILE:LINE");
	buf_reset(&want);
	if (buf_addf(&want, "Storage class: STANDARD_IA (x-amz-storage-class: STANDARD_IA)    "
			    "(rule \"**/*.png\", %s:6)\n",
		     path) == 0)
		ok(contains(buf_str(&out), buf_str(&want)), "storage class line");
	buf_reset(&want);
	if (buf_addf(&want, "ACL: public-read (x-amz-acl: public-read)    (rule \"**/*.png\", %s:7)\n",
		     path) == 0)
		ok(contains(buf_str(&out), buf_str(&want)), "acl line");
	buf_reset(&want);
	if (buf_addf(&want, "x-amz-meta-kind: image    (rule \"**/*.png\", %s:8)\n", path) == 0)
		ok(contains(buf_str(&out), buf_str(&want)), "meta line");
	buf_reset(&want);
	if (buf_addf(&want, "Compression: none (compress = gzip, but image/png is not a "
			    "compressible type)    (rule \"static/**\", %s:3)\n",
		     path) == 0)
		ok(contains(buf_str(&out), buf_str(&want)), "compress line");

	buf_reset(&out);
	is_int(rules_explain(r, "docs/q.txt", &out), 0, "explain docs/q.txt");
	buf_reset(&want);
	if (buf_addf(&want, "Content-Type: application/pdf    (rule \"docs/**\", %s:10)\n"
			    "Content-Disposition: attachment    (rule \"docs/**\", %s:11)\n",
		     path, path) == 0)
		ok(contains(buf_str(&out), buf_str(&want)), "content type and disposition");
	buf_reset(&want);
	if (buf_addf(&want, "Encryption: aws:kms (x-amz-server-side-encryption: aws:kms)    "
			    "(rule \"docs/**\", %s:12)\n"
			    "KMS key: k1 (x-amz-server-side-encryption-aws-kms-key-id)    "
			    "(rule \"docs/**\", %s:13)\n",
		     path, path) == 0)
		ok(contains(buf_str(&out), buf_str(&want)), "encryption lines");
	buf_reset(&want);
	if (buf_addf(&want, "Signed URL TTL: 600 seconds    (rule \"docs/**\", %s:14)\n", path) == 0)
		ok(contains(buf_str(&out), buf_str(&want)), "ttl line");
	ok(contains(buf_str(&out), "Cache-Control: (none)    (default)\n"), "no Cache-Control");
	ok(contains(buf_str(&out), "Compression: none    (default)\n"), "no compression");
	ok(contains(buf_str(&out), "Key: docs/q.txt\n"), "key line");
	rules_free(r);
	buf_release(&want);
	buf_release(&out);
	buf_release(&err);
}

/* Glob matching stays linear on hostile patterns and keys. */
static void test_glob_speed(void)
{
	char key[1025], glob[200];
	size_t n = 0;

	memset(key, 'a', 1024);
	key[1024] = '\0';
	for (int i = 0; i < 40 && n + 3 < sizeof(glob); i++) {
		glob[n++] = '*';
		glob[n++] = '*';
		glob[n++] = 'a';
	}
	glob[n++] = 'b';
	glob[n] = '\0';
	for (int i = 0; i < 200; i++)
		if (rules_glob_match(glob, key))
			break;
	ok(!rules_glob_match(glob, key), "200 hostile matches finish (no backtracking)");
}

static void cleanup(void)
{
	char p[300];

	for (int i = 0; i < nconf; i++) {
		snprintf(p, sizeof(p), "%s/c%d.conf", tmpdir, i);
		unlink(p);
	}
	rmdir(tmpdir);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		printf("Bail out! mkdtemp\n");
		return 1;
	}
	test_glob();
	test_glob_check();
	test_glob_speed();
	test_builtin();
	test_order();
	test_settings();
	test_reset();
	test_meta_merge();
	test_errors();
	test_opt_sections();
	test_mime();
	test_mime_system();
	test_should_compress();
	test_headers();
	test_print();
	test_explain();
	cleanup();
	return tap_done();
}
