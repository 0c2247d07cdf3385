// rules.h - the configuration file and the per-path header rules.
//
// cdnfs.conf is INI (core/ini.c): [s3], [cdn], [mount] sections with the same
// names as the -o options, and [rule "GLOB"] sections.  Every rule whose glob
// matches an object key (the path inside the mount, without the mounted
// PREFIX) applies, in file order; a later rule's value overrides an earlier
// one's for the same setting (like .gitattributes).
//
//   [rule "static/**"]
//   cache_control = max-age=31536000, public, immutable
//   compress = gzip
//
// Settings of a rule (names case-insensitive, '-' and '_' alike):
//   cache_control, content_type, content_disposition   header values
//   compress        none | gzip | br
//   storage_class   STANDARD REDUCED_REDUNDANCY STANDARD_IA ONEZONE_IA
//                   INTELLIGENT_TIERING GLACIER DEEP_ARCHIVE GLACIER_IR
//                   OUTPOSTS SNOW EXPRESS_ONEZONE
//   acl             private public-read public-read-write authenticated-read
//                   aws-exec-read bucket-owner-read bucket-owner-full-control
//                   ("private" sends no x-amz-acl: buckets with ACLs
//                   disabled, the default since 2023, reject any ACL)
//   sse             AES256 | aws:kms | aws:kms:dsse;  sse_kms_key_id
//   signed_url_ttl  seconds, or N with s/m/h/d; at most 7 days
//   meta.NAME       x-amz-meta-NAME (NAME: letters, digits, '-', '_'; lowercased;
//                   not mode, uid, gid, mtime or cdnfs-*, which cdnfs writes)
// Enumerated values are case-insensitive.  An empty value ("") resets the
// setting to its default for the keys this rule matches.  Header values must
// be printable ASCII (no control characters: no header injection).
//
// Threads: a struct rules is immutable after rules_load; read it from any
// thread.
#ifndef CDNFS_RULES_H
#define CDNFS_RULES_H

#include <stdint.h>
#include "buf.h"
#include "compat.h"
#include "compress.h"
#include "sigv4.h"

struct rules;

/* Defaults and limits. */
#define RULES_COMPRESS_MIN 1024    /* smaller bodies are stored as they are: the
				      gzip/brotli framing and the CDN's own
				      per-object cost outweigh the saving */
#define RULES_META_MAX 32          /* distinct meta.NAME names in one file */
#define RULES_GLOB_MAX 1024        /* bytes in a glob (S3 keys are <= 1024) */
#define RULES_TTL_MAX 604800L      /* 7 days: the SigV4 presigned URL limit */

/* The effective settings for one key, filled by rules_eval.  Strings point
 * into the rules (or static tables) and live as long as the rules; the
 * struct holds no pointer into itself, so it may be copied. */
struct rule_result {
	const char *cache_control;        /* NULL: none */
	const char *content_type;         /* always set: rule, else detected */
	const char *content_disposition;  /* NULL: none */
	enum compress_kind compress;      /* what the rule asks; see rules_should_compress */
	const char *storage_class;        /* NULL or "STANDARD": no header sent */
	const char *acl;                  /* NULL or "private": no x-amz-acl header */
	const char *sse;                  /* NULL, "AES256", "aws:kms", "aws:kms:dsse" */
	const char *sse_kms_key_id;       /* sent only with an aws:kms* sse */
	long signed_url_ttl;              /* seconds; 0: none */
	/* meta.NAME = VALUE pairs (names without the prefix, lowercase), merged
	 * over the matching rules by name, in order of first appearance in the
	 * file; meta_header[i] is "x-amz-meta-" NAME for meta[i]. */
	struct sigv4_kv meta[RULES_META_MAX];
	const char *meta_header[RULES_META_MAX];
	size_t nmeta;
	/* For --explain: the glob of the rule that set each, "detected" for a
	 * Content-Type from the extension, NULL for a default. */
	const char *src_cache_control, *src_content_type, *src_compress, *src_storage_class,
		*src_acl, *src_content_disposition, *src_sse, *src_signed_url_ttl;
};

/* Options from the config file, other than rules: called for every key of
 * the [s3], [cdn] and [mount] sections so the caller (fs/conf.c) applies them
 * with the same parser as -o options.  section is the lowercase section name
 * ("s3", "cdn", "mount"); key and value are as written (trimmed, unquoted).
 * Return 0, or -EINVAL after writing a message (without file and line:
 * rules_load adds "FILE:LINE: ") into err. */
typedef int (*rules_opt_fn)(void *arg, const char *section, const char *key,
			    const char *value, struct buf *err);

// Load rules from file (NULL: built-in rules only); opt (may be NULL: those
// sections are then accepted and ignored) gets the other sections' keys.
// A missing file is an error (-ENOENT, "cannot read 'FILE': ..."): the caller
// decides whether a default path may be absent.
// Errors: -EINVAL etc. with err (may be NULL) replaced by
// "FILE:LINE: message" (syntax, unknown section or setting, bad glob, bad
// storage class, compress value, acl, sse, ttl, metadata name, a header
// value with a control character or a non-ASCII byte).
// When the file names no rule, the built-in rules apply:
//   static/**  cache_control "max-age=31536000, public, immutable", compress gzip
//   media/**   cache_control "max-age=86400, public"
//   private/** cache_control "no-cache, no-store, must-revalidate", acl private,
//              signed_url_ttl 3600
// (a [rule] header with no setting under it does not count: the INI parser
// reports keys, not headers).  rules_free(NULL) is a no-op.
int rules_load(struct rules **out, const char *file, rules_opt_fn opt, void *arg,
	       struct buf *err) WUR;
void rules_free(struct rules *r);
/* 1 when the built-in rules are in effect. */
int rules_builtin(const struct rules *r);

// Match a glob against a whole key, byte by byte, case-sensitively:
//   *      any run of bytes without '/'
//   **     any run of bytes, '/' included: "static/**" matches every key
//          under static/ ("static/" too), not "static" nor "statics/x"
//   **/    as a whole segment: zero or more whole segments, so "**/*.html"
//          matches "index.html" and "a/b/index.html"
//   ?      one byte other than '/'
//   [...]  one byte (never '/') of a class: ranges "a-z", negation "[!...]"
//          or "[^...]", ']' first is literal, '\' escapes
//   \c     the byte c literally ("\*" a star)
// Globs are anchored at both ends: "*.css" matches top-level keys only.
// 1 match, 0 no match (or an invalid glob).
int rules_glob_match(const char *glob, const char *path);
/* Validate a glob: 0 or -EINVAL (empty, longer than RULES_GLOB_MAX, leading
 * '/', unterminated class, reversed range, trailing '\').  why (may be NULL)
 * receives a static reason. */
int rules_glob_check(const char *glob) WUR;
int rules_glob_why(const char *glob, const char **why) WUR;

/* The settings for key (path inside the mount, no leading '/'; leading
 * slashes are ignored).  Never fails. */
void rules_eval(const struct rules *r, const char *key, struct rule_result *out);

// Content-Type for a name from its extension (after the last '.' of the last
// segment, case-insensitive; dotfiles have none): the built-in web table
// first, then /etc/mime.types (read once, thread-safe), else
// "application/octet-stream".  text/*, application/json, *+json, XML and
// JavaScript types get "; charset=utf-8"; images (SVG too) do not.
// ".gz" is application/gzip and ".br" application/x-brotli (no registered
// type exists): a pre-compressed file is stored as the file it is, never
// with a Content-Encoding.  The result is static.
const char *rules_mime_type(const char *name);

// Whether a body of this type and size should be stored compressed with
// rr->compress: not COMPRESS_NONE, size >= RULES_COMPRESS_MIN, and a
// compressible type (text/*, JavaScript, JSON and *+json, XML and *+xml,
// SVG, wasm, ttf/otf/eot fonts, ICO/BMP images).  Already-compressed
// formats (PNG, JPEG, GIF, WebP, AVIF, WOFF, WOFF2, zip, gzip, brotli,
// audio, video, PDF, ...) and unknown types never are.  1 yes, 0 no.
int rules_should_compress(const struct rule_result *rr, uint64_t size);

/* The HTTP headers a PUT of key sends, in this order: Content-Type,
 * Cache-Control, Content-Disposition, Content-Encoding (content_encoding,
 * when not NULL or ""), x-amz-storage-class (unless STANDARD),
 * x-amz-acl (unless private), x-amz-server-side-encryption and
 * -aws-kms-key-id (the key only with aws:kms*), x-amz-meta-NAME.  Appended
 * to kv at *n (cap entries in all), *n updated.  The strings are the rules',
 * static, or content_encoding itself.  -E2BIG (nothing appended) when they
 * do not fit; RULES_HEADERS_MAX entries always do. */
#define RULES_HEADERS_MAX (9 + RULES_META_MAX)
int rules_headers(const struct rule_result *rr, const char *content_encoding,
		  struct sigv4_kv *kv, size_t *n, size_t cap) WUR;

/* Append the effective rules (for --print-rules) to out, as INI that loads
 * back to the same rules: a comment saying whether they are built-in or
 * from which file, then one [rule "GLOB"] block per rule, in order. */
int rules_print(const struct rules *r, struct buf *out) WUR;
/* Append what a write of key would send and which rule set each (for
 * --explain KEY), one "Label: value    (source)" line per setting, source
 * being 'rule "GLOB", FILE:LINE', 'built-in rule "GLOB"',
 * "detected from .EXT" or "default". */
int rules_explain(const struct rules *r, const char *key, struct buf *out) WUR;

#endif
