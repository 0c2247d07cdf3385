/*
 * cdn.h - CDN invalidation: a journaled queue that dedupes, batches,
 * debounces and retries purges, in front of one backend per provider
 * (Amazon CloudFront, Cloudflare).
 *
 * What the caller does: cdn_purge() a path whenever what the CDN may have
 * cached for it became wrong.  cdn_purge never touches the network: it adds
 * the path to the pending set (deduplicated; a pending directory purge
 * covers every path under it) and appends it to the journal.  One
 * dispatcher thread sends the pending set once it has been quiet for
 * invalidate_delay (at most max_delay after the first pending path), as few
 * requests as the provider's limits allow, and retries failures with
 * exponential backoff and jitter.  A CloudFront batch keeps its
 * CallerReference across retries and restarts, so a retry never creates a
 * second invalidation.
 *
 * Paths.  key_path is the path inside the mount, i.e. the S3 key with the
 * mount's own prefix (BUCKET:PREFIX) removed: "css/site.css".  Leading '/'
 * are ignored; a directory is given with is_dir (a trailing '/' is
 * ignored; "" is the root of the mount).  The path the CDN serves is
 *     "/" + path_prefix + "/" + key_path     (no path_prefix: "/" + key_path)
 * with path_prefix stripped of leading and trailing '/'.  So: distribution
 * whose origin is the bucket root and a mount of BUCKET:static/ ->
 * cdn_path_prefix=static; origin path /static and the same mount -> none.
 *   CloudFront: that path, URL-encoded as CloudFront asks (non-ASCII,
 *     controls, space and RFC 1738's unsafe characters " # % < > [ \ ] ^ `
 *     { | } ~, plus '?'); nothing else is encoded.  A directory is the
 *     wildcard "/dir/\*".  A name holding '*' is invalidated with a wildcard
 *     ending just before its first '*' ("/img/a*b.png" -> "/img/a*"), as
 *     CloudFront only accepts '*' last.  Paths over 4000 characters become
 *     a wildcard of their first 3999.
 *   Cloudflare: files are purged as "https://" + cdn_domain + path
 *     (cdn_domain may carry its own "http://"), the path percent-encoded
 *     per RFC 3986 (everything but A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * + , ;
 *     = : @ /); a directory is the prefix purge cdn_domain + "/dir/".
 *
 * Batching.  CloudFront: one CreateInvalidation per round, at most 3000
 * paths and 15 wildcards (the in-progress maximums per distribution, minus
 * this process's invalidations still InProgress); files of one directory
 * collapse into one "/dir/\*" when there are at least collapse_min of them
 * (never at the root of the mount), largest directories first, within the
 * wildcard budget.  Cloudflare: URL lists of cloudflare_batch URLs per
 * call, prefix purges (at most 30 per call) only for directory purges.
 *
 * Failures.  429, 5xx, timeouts, CloudFront throttling: retried with
 * exponential backoff and jitter (Retry-After honoured).
 * TooManyInvalidationsInProgress: the batch waits while this process's
 * InProgress invalidations are polled with GetInvalidation, then is resent
 * with the same CallerReference.  401/403/404 (bad credentials or token,
 * wrong distribution or zone): logged as an error with the provider's
 * message, kept in the journal and retried every retry_max.  A request the
 * provider rejects as malformed (400 InvalidArgument, BatchTooLarge ...) is
 * split in halves to isolate the bad path, which is dropped with an error.
 *
 * Journal: journal_dir/cdn/ (0700), files 0600: "journal" (pending paths,
 * in-flight batches with their CallerReference), "month" (paths sent this
 * calendar month, UTC - CloudFront bills past 1000 a month), "lock" (one
 * process at a time).  Replayed by cdn_new: pending paths are pending
 * again, batches are resent as they were.
 *
 * Threads: every function is thread-safe.  cdn_purge, cdn_get_stats and
 * cdn_stats_json never block on the network; cdn_last may (one
 * GetInvalidation); cdn_flush and cdn_shutdown wait.
 * Secrets (the Cloudflare token, AWS keys) never reach the log.
 */
#ifndef CDNFS_CDN_H
#define CDNFS_CDN_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "buf.h"
#include "compat.h"

struct http;
struct creds;
struct cdn;

enum cdn_provider {
	CDN_NONE = 0,
	CDN_CLOUDFRONT,
	CDN_CLOUDFLARE,
};

/* Options, as the mount options name them.  Zero means the default.  cdn_new
 * copies what it keeps: conf and its strings may go once it returns. */
struct cdn_conf {
	enum cdn_provider provider;  /* cdn=cloudfront|cloudflare|none */
	const char *distribution_id; /* cdn_distribution_id: required by CloudFront */
	const char *zone_id;         /* cdn_zone_id: required by Cloudflare */
	const char *domain;          /* cdn_domain: required by Cloudflare ("cdn.example.com") */
	const char *endpoint;        /* cdn_endpoint: API base URL; default
				      * https://cloudfront.amazonaws.com or
				      * https://api.cloudflare.com */
	const char *path_prefix;     /* cdn_path_prefix (see the top of this file) */
	const char *journal_dir;     /* the mount's cache_dir; NULL: no journal (tests) */
	double invalidate_delay;     /* s of quiet before sending: 2 */
	double max_delay;            /* s after the first pending path at most: 30 */
	double flush_timeout;        /* s cdn_shutdown waits when given a negative timeout: 10 */
	int cloudflare_batch;        /* URLs per Cloudflare call, 1..500: 100 (500 on
				      * Enterprise plans; 30 was the old limit) */
	int collapse_min;            /* CloudFront: files of a directory that become
				      * "/dir/\*": 2; negative: never collapse */
	double retry_base;           /* s, first backoff: 1 */
	double retry_max;            /* s, longest backoff (and the retry period after
				      * 401/403/404): 300 */
	double poll_interval;        /* s between GetInvalidation polls while waiting: 10 */
	double request_timeout;      /* s without progress that abort a request: 30 */
};

/* "cloudfront", "cloudflare", "none" (or "") -> provider; -EINVAL otherwise. */
int cdn_provider_parse(const char *s, enum cdn_provider *out) WUR;
const char *cdn_provider_name(enum cdn_provider p);

/* Validate conf, open and replay the journal; no thread is started (call
 * cdn_start after fork).  http and creds are borrowed and must outlive the
 * cdn; creds is needed by CloudFront only (may be NULL for Cloudflare).
 * The Cloudflare token is read from CLOUDFLARE_API_TOKEN, never from an
 * option.  On failure returns -errno with a one-line reason in err
 * (reset first): "cdn=cloudfront needs cdn_distribution_id", "cdn=cloudflare
 * needs cdn_zone_id", "cdn=cloudflare needs the CLOUDFLARE_API_TOKEN
 * environment variable", "cdn=cloudflare needs cdn_domain", "bad
 * cdn_endpoint 'x': ...", "cdn journal '/c/cdn' is in use by another
 * process" ...  With provider CDN_NONE: returns 0 and *out = NULL; every
 * function below accepts a NULL cdn and does nothing. */
int cdn_new(struct cdn **out, const struct cdn_conf *conf, struct http *http,
	    struct creds *creds, struct buf *err) WUR;
/* Start the dispatcher thread.  0 or -errno. */
int cdn_start(struct cdn *cdn) WUR;

/* Queue a purge of key_path (a directory and everything under it when
 * is_dir).  Never blocks on the network.  0, -EINVAL (an empty file path),
 * -ENOMEM; a journal write failure is logged once and not returned. */
int cdn_purge(struct cdn *cdn, const char *key_path, int is_dir) WUR;

/* Hold (on 1) or release (on 0) the sending of what is pending while a
 * change the purges are about is on its way: a rename queues its purges
 * before its requests (so a crash during them loses no purge, the journal
 * has them) and again after; holds keep the first ones from going out
 * meanwhile.  Holds nest and delay a purge by max_delay at most; a flush
 * sends at once anyway. */
void cdn_hold(struct cdn *cdn, int on);

/* Send what is pending now (no debounce) and wait until nothing is pending
 * or in flight (accepted by the provider; CloudFront invalidations may
 * still be InProgress).  timeout in seconds (<= 0: flush_timeout).
 * The head batch, if waiting for a retry, is tried again at once.
 * 0 (a path the provider rejected as invalid was dropped and logged: still
 * 0); -ETIMEDOUT; -EACCES/-ENOENT when the provider rejected the
 * credentials, distribution or zone meanwhile (the purges stay queued);
 * -ESHUTDOWN when purges are queued but the dispatcher is not running
 * (before cdn_start, after cdn_shutdown). */
int cdn_flush(struct cdn *cdn, double timeout) WUR;

/* The last invalidation covering key_path (a directory when it ends with
 * '/'), appended to out as "PROVIDER ID STATUS": "cloudfront I2J0I21PCUYOIK
 * InProgress", "cloudflare 9a7806061c88ada191ed06f989cc3dac ok"; when not
 * sent yet, ID is "-" and STATUS "queued" or "sending".  A CloudFront
 * status other than Completed is refreshed with GetInvalidation first.
 * 0, -ENOENT when this process knows of none, -ENOMEM. */
int cdn_last(struct cdn *cdn, const char *key_path, struct buf *out) WUR;

struct cdn_stats {
	enum cdn_provider provider;
	uint64_t pending;        /* paths queued, not in a batch yet */
	uint64_t in_flight;      /* batches built and not yet accepted */
	uint64_t in_flight_paths;
	uint64_t in_progress;    /* CloudFront invalidations accepted, not known Completed */
	uint64_t requests;       /* purge/invalidation requests sent, retries included */
	uint64_t batches;        /* batches accepted */
	uint64_t paths_sent;     /* paths (wildcards, prefixes, URLs) accepted since start */
	uint64_t failures;       /* failed requests */
	uint64_t dropped;        /* paths the provider rejected as invalid */
	char month[8];           /* "2026-11" (UTC) */
	uint64_t month_paths;    /* paths accepted this month, persisted in the journal dir */
	char last_error[256];    /* "" when the last request succeeded */
};

/* Counters; never blocks on the network.  A NULL cdn gives zeros. */
void cdn_get_stats(struct cdn *cdn, struct cdn_stats *out);
/* The stats as one JSON object appended to out: {"provider":"cloudfront",
 * "pending":0,"in_flight":0,"in_flight_paths":0,"in_progress":1,
 * "requests":1,"batches":1,"paths_sent":2,"failures":0,"dropped":0,
 * "month":"2026-11","month_paths":2,"last_error":""}; a NULL cdn gives
 * {"provider":"none"}.  0 or -ENOMEM/-E2BIG. */
int cdn_stats_json(struct cdn *cdn, struct buf *out) WUR;

/* Send what is pending without debounce and wait up to timeout seconds
 * (negative: flush_timeout) for it to be accepted, then stop the
 * dispatcher (a request under way finishes or times out first) and compact
 * the journal.  Returns the number of paths left in the journal (0 when
 * everything was delivered).  Purges queued afterwards are journaled only.
 * Idempotent. */
size_t cdn_shutdown(struct cdn *cdn, double timeout);
/* cdn_shutdown(cdn, 0) if needed, then free.  NULL is fine. */
void cdn_free(struct cdn *cdn);

/* --- pure functions, exposed for the unit tests -------------------------- */

/* The provider path of a target, appended to out without any trailing '*':
 * CloudFront "/static/a%20b.css", "/static/img/" (directory);
 * Cloudflare "/static/a%20b.css" (the URL path).  *wild is set when the
 * path is a prefix: a directory, or (CloudFront) a name cut at its '*' or
 * past 4000 characters.  prefix is path_prefix as given.  0, -EINVAL (an
 * empty file path), -ENOMEM/-E2BIG. */
int cdn_encode_path(struct buf *out, enum cdn_provider p, const char *prefix, const char *key,
		    int is_dir, int *wild) WUR;

struct cdn_target {
	const char *key;  /* key_path as given to cdn_purge */
	int is_dir;
};

enum cdn_batch_kind {
	CDN_BATCH_PATHS = 0, /* CloudFront paths (files and "/dir/\*"), Cloudflare "files" URLs */
	CDN_BATCH_PREFIXES,  /* Cloudflare "prefixes" */
};

struct cdn_plan_conf {
	enum cdn_provider provider;
	const char *path_prefix;
	const char *domain;  /* Cloudflare: "cdn.example.com" or "http://host:port" */
	size_t max_paths;    /* CloudFront: paths (files + wildcards) per request;
			      * Cloudflare: URLs per call */
	size_t max_wild;     /* CloudFront: wildcards per request; Cloudflare: prefixes per call */
	size_t collapse_min; /* CloudFront: files in one directory that become one
			      * wildcard; < 2: never */
	size_t max_batches;  /* stop after this many batches (0: as many as needed) */
};

struct cdn_batch_plan {
	enum cdn_batch_kind kind;
	char **items;        /* what goes on the wire: "/a/b.css", "/a/\*",
			      * "https://cdn.example.com/a/b.css", "cdn.example.com/a/" */
	size_t nitems;
	size_t nwild;        /* CloudFront items ending in '*' */
};

struct cdn_plan {
	struct cdn_batch_plan *batches;
	size_t nbatches;
	long *assign;        /* per target: index of the batch covering it, -1 when
			      * left for a later round (limits) */
	size_t nleft;        /* targets with assign -1 */
};

/* Plan requests for targets[0..n): dedupe; a directory covers what is
 * under it; CloudFront collapses files into directory wildcards (see the
 * top of this file); chunk by the limits.  Deterministic (sorted output).
 * Targets that cannot be encoded (empty file path) are skipped with
 * assign -1 and not counted in nleft.  0, -EINVAL (max_paths 0, Cloudflare
 * with max_wild 0 or without a domain), -ENOMEM.  CloudFront with max_wild
 * 0 plans no wildcard (directories wait).  Release with cdn_plan_release,
 * also on failure. */
int cdn_plan_make(const struct cdn_plan_conf *pc, const struct cdn_target *targets, size_t n,
		  struct cdn_plan *out) WUR;
void cdn_plan_release(struct cdn_plan *p);

/* A CallerReference unique across processes and hosts:
 * "cdnfs-HOST-PID-SECONDS-COUNTER-RANDOM" (RANDOM: 128 bits from
 * RAND_bytes, hex; HOST cut to 32 characters of [A-Za-z0-9.-]).
 * cap >= 128.  0, -EINVAL (cap), -EIO (no randomness). */
int cdn_caller_ref(char *out, size_t cap) WUR;

#endif
