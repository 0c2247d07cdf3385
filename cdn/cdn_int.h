/*
 * cdn_int.h - what the cdn/ files share: the batch, the provider backend
 * interface, the journal format.  Not a contract for other directories
 * (tests/unit/test_cdn*.c include it for the pure helpers).
 *
 * Files: cdn.c (queue, dispatcher, public API), plan.c (pure planning and
 * path encoding), journal.c (journal text and files), cloudfront.c and
 * cloudflare.c (one backend each: build, sign, send, classify).
 */
#ifndef CDNFS_CDN_INT_H
#define CDNFS_CDN_INT_H

#include <stddef.h>
#include <time.h>
#include "buf.h"
#include "cdn.h"
#include "compat.h"

#define CDN_REF_MAX 128
#define CDN_CF_MAX_PATHS 3000 /* individual paths in progress per distribution */
#define CDN_CF_MAX_WILD 15    /* wildcard paths in progress per distribution */
#define CDN_CFL_MAX_PREFIXES 30
#define CDN_CFL_MAX_SEPARATORS 31 /* "Path separators are limited to 31 for a prefix" */

/* A key path to purge, owned. */
struct cdn_tgt {
	char *key;
	int is_dir;
};

/* One request's worth of purges.  Built from the pending set, journaled
 * before it is sent, kept unchanged (same ref, same items) until the
 * provider accepts it: in the in-flight list, then in the history. */
struct cdn_batch {
	struct cdn_batch *next;
	char ref[CDN_REF_MAX];      /* CloudFront CallerReference; a local id for Cloudflare */
	enum cdn_batch_kind kind;
	char **items;               /* as sent */
	size_t nitems, nwild;
	struct cdn_tgt *targets;    /* the key paths it covers (to requeue or split) */
	size_t ntargets;
	time_t created;             /* wall clock */
	/* in flight (protected by cdn->lock) */
	int attempts;
	double next_try;            /* monotonic */
	int sending;
	/* accepted */
	char id[CDN_REF_MAX];       /* CloudFront invalidation id / Cloudflare purge id */
	char status[32];            /* "InProgress", "Completed", "ok" */
};

void cdn_batch_free(struct cdn_batch *b);
void cdn_tgts_free(struct cdn_tgt *t, size_t n);

/* --- backends ------------------------------------------------------------ */

enum cdn_outcome {
	CDN_OK = 0,    /* accepted */
	CDN_RETRY,     /* transient (transport, 429, 5xx, throttling): back off */
	CDN_BUSY,      /* CloudFront TooManyInvalidationsInProgress */
	CDN_DENIED,    /* credentials, token, distribution or zone: keep, retry slowly */
	CDN_INVALID,   /* the content was rejected: split the batch, drop a lone path */
	CDN_REF_CLASH, /* CloudFront InvalidationBatchAlreadyExists: new reference */
};

struct cdn_result {
	enum cdn_outcome outcome;
	long http_status;           /* 0: no answer */
	double retry_after;         /* s, from Retry-After; 0 none */
	int err;                    /* -errno for the outcome (DENIED: -EACCES or -ENOENT) */
	char id[CDN_REF_MAX];
	char status[32];
	char msg[384];              /* for logs: "HTTP 403 AccessDenied: ..." */
};

/* Everything a backend needs; immutable after cdn_new. */
struct cdn_api {
	enum cdn_provider provider;
	struct http *http;          /* borrowed */
	struct creds *creds;        /* borrowed; CloudFront */
	char *scheme;               /* of the endpoint: "https" */
	char *host;                 /* host[:port] of the endpoint, as signed and sent */
	char *base_path;            /* "" or "/proxy" (no trailing '/') */
	char *id;                   /* distribution id / zone id */
	char *token;                /* Cloudflare API token (secret; wiped at free) */
	long timeout_s;
};

/* Parse an endpoint URL "http[s]://host[:port][/base]" into api->scheme,
 * host, base_path.  0, -EINVAL with a reason in err, -ENOMEM. */
int cdn_api_endpoint(struct cdn_api *api, const char *url, struct buf *err) WUR;

/* CreateInvalidation of b (b->ref as CallerReference).  res is always
 * filled; returns 0, or -ENOMEM (res says RETRY). */
int cdn_cloudfront_send(const struct cdn_api *api, const struct cdn_batch *b,
			struct cdn_result *res) WUR;
/* GetInvalidation id: res->status on OK. */
int cdn_cloudfront_get(const struct cdn_api *api, const char *id, struct cdn_result *res) WUR;
/* POST purge_cache with b's files or prefixes. */
int cdn_cloudflare_send(const struct cdn_api *api, const struct cdn_batch *b,
			struct cdn_result *res) WUR;

/* s as a quoted JSON string appended to out: '"' and '\\' escaped, control
 * bytes as \u00XX, each byte of invalid UTF-8 (a stray or cut sequence, an
 * overlong form, a surrogate) as \ufffd, so the result is always valid
 * JSON.  0 or -ENOMEM/-E2BIG. */
int cdn_json_str(struct buf *out, const char *s) WUR;
/* cdn_stats_json's object for s (pure, for tests and tests/fuzz). */
int cdn_stats_json_of(const struct cdn_stats *s, struct buf *out) WUR;

/* Pure pieces of the backends, for tests. */
int cdn_cloudfront_body(struct buf *out, const char *ref, char *const *items, size_t n) WUR;
/* Outcome of a CloudFront error answer (code may be NULL or ""). */
enum cdn_outcome cdn_cloudfront_classify(long status, const char *code);
int cdn_cloudflare_body(struct buf *out, enum cdn_batch_kind kind, char *const *items,
			size_t n) WUR;
/* Read a Cloudflare answer {"success":..,"errors":[{"code":..,"message":..}],
 * "result":{"id":..}} given its HTTP status into res (outcome, id, msg).
 * A body that is not such JSON is judged by the status alone. */
void cdn_cloudflare_judge(const char *json, size_t len, long status, struct cdn_result *res);

/* --- journal ------------------------------------------------------------- */

/*
 * Text format, one record a line; fields separated by one space; strings
 * escaped with %XX for bytes <= 0x20, 0x7f and '%':
 *   cdnfs-cdn-journal 1 IDENTITY
 *   P f|d KEY                         a pending purge
 *   B REF p|x NITEMS NTARGETS CREATED  a batch (p: paths/files, x: prefixes),
 *   I ITEM                              followed by its items
 *   T f|d KEY                           and its targets
 *   D REF                             batch REF was accepted or dropped
 * A snapshot (header, P, B/I/T) is written to journal.tmp, fsynced and
 * renamed over journal; P and D lines are appended in between.  A last
 * line without '\n' (torn append) is ignored.  IDENTITY names the
 * provider, id, domain and path prefix the batches were built for; when it
 * changes, batches go back to pending paths.
 */
struct cdn_jstate {
	char *identity;             /* NULL when the text had no header */
	struct cdn_tgt *pending;    /* in journal order, duplicates possible */
	size_t npending, cap;
	struct cdn_batch *batches;  /* not accepted, in journal order */
	size_t nbad;                /* lines that did not parse */
};

int cdn_journal_parse(const char *text, size_t len, struct cdn_jstate *st) WUR;
void cdn_jstate_release(struct cdn_jstate *st);
/* Escape s as a journal field. */
int cdn_journal_esc(struct buf *out, const char *s) WUR;
/* "P f KEY\n" */
int cdn_journal_pline(struct buf *out, const char *key, int is_dir) WUR;
/* "B ...\n" with its I and T lines. */
int cdn_journal_bline(struct buf *out, const struct cdn_batch *b) WUR;

/* Files (dir is journal_dir/cdn). */
int cdn_journal_lock(const char *dir, int *fd, struct buf *err) WUR;
int cdn_journal_read(const char *dir, struct buf *text) WUR;
/* Replace the journal with text (tmp, fsync, rename) and return a new
 * append fd in *fd (the old one is closed by the caller). */
int cdn_journal_write(const char *dir, const char *text, size_t len, int *fd) WUR;
int cdn_journal_append(int fd, const char *text, size_t len) WUR;
/* The month counter: "YYYY-MM N\n". */
int cdn_month_read(const char *dir, char month[8], uint64_t *count) WUR;
int cdn_month_write(const char *dir, const char *month, uint64_t count) WUR;

#endif
