/*
 * cdn.c - the purge queue, its journal and its dispatcher thread
 * (include/cdn.h).  Backends: cloudfront.c, cloudflare.c; planning:
 * plan.c; journal text and files: journal.c.
 *
 * States of a purge:
 *   pending   in cdn->pending ("f"/"d" + key), journaled by a P line;
 *   in flight part of a batch in cdn->inflight (FIFO), journaled in a
 *             snapshot with its reference; only the head is sent;
 *   accepted  the batch moves to cdn->hist (newest first, capped) and a D
 *             line is appended; a CloudFront one counts against the
 *             in-progress budget until a poll sees it Completed.
 * Invariants: a key is pending at most once, and never under a pending
 * directory; a journaled batch never changes (a split, an expansion or a
 * new reference makes new batches and a new snapshot); pending paths are
 * planned only when nothing is in flight, so batches go out in order.
 *
 * Threads and locks: callers (cdn_purge, cdn_flush, cdn_last, stats) and
 * the dispatcher.  cdn->lock protects the fields marked (L) and is never
 * held across network calls or file I/O.  cdn->jlock protects the journal
 * fd (J) and serialises journal I/O: appends from cdn_purge, snapshots from
 * the dispatcher (and from cdn_new/cdn_shutdown when it is not running).
 * Lock order: jlock, then lock.
 */
#include <errno.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cdn_int.h"
#include "htab.h"
#include "log.h"

#define HIST_MAX 64           /* accepted batches kept for cdn_last and the budget */
#define HIST_MAX_ITEMS 20000
#define POLL_MAX 64           /* GetInvalidation calls per poll round */
#define IDLE_WAKE 3600.0
#define DENY_RELOG 3600.0     /* s: a rejection that lasts is logged again */
#define JSYNC_EVERY 0.5       /* s: journal fdatasyncs at most this often */
#define CF_ASSUME_DONE 1200   /* s: an invalidation not seen complete by then is counted done */

struct cdn {
	struct cdn_api api;      /* immutable after cdn_new, like the fields up to lock */
	char *prefix;            /* path_prefix as given ("" when none) */
	char *domain;            /* Cloudflare: "host" or "scheme://host", normalised */
	char *url_base;          /* Cloudflare: "https://host" */
	char *host_only;         /* Cloudflare: "host" */
	char *dir;               /* journal_dir/cdn, NULL without a journal */
	char *identity;
	double delay, max_delay, flush_timeout, retry_base, retry_max, poll_interval;
	size_t cfl_batch, collapse_min;
	int lockfd;

	pthread_mutex_t lock;
	pthread_cond_t wake;     /* the dispatcher has something to do */
	pthread_cond_t done;     /* progress or failure, for cdn_flush/cdn_shutdown */
	struct htab *pending;    /* (L) "f"/"d" + key -> (void *)1 */
	size_t npending;         /* (L) */
	double first_pending;    /* (L) monotonic, when pending became non-empty */
	double last_change;      /* (L) of the last cdn_purge */
	struct cdn_batch *inflight, *hist; /* (L) */
	size_t ninflight, nhist, hist_items; /* (L) */
	int flushers, draining, stop, started; /* (L) */
	int holds;               /* (L) cdn_hold: planning waits for max_delay */
	int blocked;             /* (L) CloudFront: waiting for in-progress invalidations */
	double poll_at;          /* (L) */
	double plan_after;       /* (L) a failed plan is not retried before this */
	unsigned get_denied;     /* (L) GetInvalidation answers 401/403/404 seen */
	uint64_t deny_gen;       /* (L) bumped by every 401/403/404 */
	int deny_err;            /* (L) */
	unsigned int seed;       /* (L) backoff jitter */
	struct cdn_stats st;     /* (L) counters, month, last_error */
	char logged[384];        /* (L) the last error logged, not to repeat it */
	double logged_at;        /* (L) when; repeated after DENY_RELOG seconds */
	pthread_t thread;

	pthread_mutex_t jlock;
	int jfd;                 /* (J) journal, O_APPEND; -1 none */
	int jwarned;             /* (J) a write failure was logged */
	int jdirty;              /* (J) appended since the last fdatasync or snapshot */
	double jsync_last;       /* the dispatcher's last fdatasync (its own) */
	int jerr;                /* (J) result of the last snapshot */
	int jopen;               /* (J) cdn_new is done: snapshot failures are warnings */
	int shut;                /* (L) cdn_shutdown ran */
};

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait on cv until the monotonic time until (or a signal). */
static int wait_until(pthread_cond_t *cv, pthread_mutex_t *m, double until)
{
	struct timespec ts;
	double s = (double)(time_t)until; /* until > 0: truncation is floor */

	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((until - s) * 1e9);
	if (ts.tv_nsec >= 1000000000L)
		ts.tv_nsec = 999999999L;
	return pthread_cond_timedwait(cv, m, &ts);
}

/* libm-free helpers (the program does not link -lm). */
static double dmin(double a, double b)
{
	return a < b ? a : b;
}

static const char *pname(const struct cdn *cdn)
{
	return cdn_provider_name(cdn->api.provider);
}

int cdn_provider_parse(const char *s, enum cdn_provider *out)
{
	if (!s || !*s || strcmp(s, "none") == 0)
		*out = CDN_NONE;
	else if (strcmp(s, "cloudfront") == 0)
		*out = CDN_CLOUDFRONT;
	else if (strcmp(s, "cloudflare") == 0)
		*out = CDN_CLOUDFLARE;
	else
		return -EINVAL;
	return 0;
}

const char *cdn_provider_name(enum cdn_provider p)
{
	return p == CDN_CLOUDFRONT ? "cloudfront" : p == CDN_CLOUDFLARE ? "cloudflare" : "none";
}

static void set_err(struct buf *err, const char *fmt, ...) PRINTF(2, 3);
static void set_err(struct buf *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	buf_reset(err);
	va_start(ap, fmt);
	if (buf_vaddf(err, fmt, ap) < 0)
		buf_release(err);
	va_end(ap);
}

/* ------------------------------------------------------------ configuration */

int cdn_api_endpoint(struct cdn_api *api, const char *url, struct buf *err)
{
	const char *p = strstr(url, "://"), *slash;
	size_t hl, bl;

	if (!p || (strncmp(url, "http", 4) != 0) ||
	    ((size_t)(p - url) != 4 && ((size_t)(p - url) != 5 || url[4] != 's')))
		goto bad;
	slash = strchr(p + 3, '/');
	hl = slash ? (size_t)(slash - p - 3) : strlen(p + 3);
	bl = slash ? strlen(slash) : 0;
	while (bl && slash[bl - 1] == '/')
		bl--;
	if (!hl || strcspn(p + 3, " \t?#@") < hl || (slash && strcspn(slash, " \t\r\n?#") < bl))
		goto bad;
	api->scheme = strndup(url, (size_t)(p - url));
	api->host = strndup(p + 3, hl);
	api->base_path = strndup(slash ? slash : "", bl);
	if (!api->scheme || !api->host || !api->base_path)
		return -ENOMEM;
	return 0;
bad:
	set_err(err, "bad cdn_endpoint '%s': expected http[s]://host[:port][/path]", url);
	return -EINVAL;
}

static int id_ok(const char *s)
{
	size_t n = strlen(s);

	return n && n <= 128 && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					  "0123456789_-") == n;
}

/* cdn_domain: "host[:port]" or "http[s]://host[:port]", a trailing '/' ok. */
static int set_domain(struct cdn *cdn, const char *d, struct buf *err)
{
	const char *host = strstr(d, "://");
	size_t n = strlen(d), hl;
	int https = 1;

	while (n && d[n - 1] == '/')
		n--;
	if (host && (size_t)(host - d) == 4 && strncmp(d, "http", 4) == 0)
		https = 0;
	else if (host && ((size_t)(host - d) != 5 || strncmp(d, "https", 5) != 0))
		n = 0; /* another scheme */
	host = host ? host + 3 : d;
	if (n < (size_t)(host - d))
		n = (size_t)(host - d);
	hl = n - (size_t)(host - d);
	if (!n || !hl || hl > 253 || strspn(host, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
					   "qrstuvwxyz0123456789.-:[]") < hl) {
		set_err(err, "bad cdn_domain '%s': expected a host name like cdn.example.com", d);
		return -EINVAL;
	}
	cdn->host_only = strndup(host, hl);
	if (!cdn->host_only || asprintf(&cdn->url_base, "%s://%s", https ? "https" : "http",
					cdn->host_only) < 0) {
		cdn->url_base = NULL;
		return -ENOMEM;
	}
	cdn->domain = https ? strdup(cdn->host_only) : strdup(cdn->url_base);
	return cdn->domain ? 0 : -ENOMEM;
}

/* Durations: 0 means the default, negative is an error. */
static int dur(double v, double def, const char *name, double *out, struct buf *err)
{
	if (!(v >= 0)) { /* negative or NaN */
		set_err(err, "bad %s: %g is negative", name, v);
		return -EINVAL;
	}
	*out = v > 0 ? v : def;
	return 0;
}

static int check_numbers(struct cdn *cdn, const struct cdn_conf *c, struct buf *err)
{
	double rt;
	int rc = 0;

	if (c->cloudflare_batch < 0 || c->cloudflare_batch > 500) {
		set_err(err, "bad cloudflare_batch %d: 1 to 500 URLs a call", c->cloudflare_batch);
		return -EINVAL;
	}
	cdn->cfl_batch = c->cloudflare_batch ? (size_t)c->cloudflare_batch : 100;
	cdn->collapse_min = c->collapse_min < 0 ? 0 : c->collapse_min ? (size_t)c->collapse_min : 2;
	rc = dur(c->invalidate_delay, 2, "invalidate_delay", &cdn->delay, err);
	if (rc == 0)
		rc = dur(c->max_delay, 30, "max_delay", &cdn->max_delay, err);
	if (rc == 0)
		rc = dur(c->flush_timeout, 10, "flush_timeout", &cdn->flush_timeout, err);
	if (rc == 0)
		rc = dur(c->retry_base, 1, "retry_base", &cdn->retry_base, err);
	if (rc == 0)
		rc = dur(c->retry_max, 300, "retry_max", &cdn->retry_max, err);
	if (rc == 0)
		rc = dur(c->poll_interval, 10, "poll_interval", &cdn->poll_interval, err);
	if (rc == 0)
		rc = dur(c->request_timeout, 30, "request_timeout", &rt, err);
	if (rc == 0 && cdn->max_delay < cdn->delay)
		cdn->max_delay = cdn->delay;
	if (rc == 0 && cdn->retry_max < cdn->retry_base)
		cdn->retry_max = cdn->retry_base;
	cdn->api.timeout_s = rc == 0 ? (long)rt + (rt > (double)(long)rt) : 30;
	return rc;
}

/* The provider's required options; the token from the environment. */
static int check_provider(struct cdn *cdn, const struct cdn_conf *c, struct buf *err)
{
	const char *tok = getenv("CLOUDFLARE_API_TOKEN");

	if (c->provider == CDN_CLOUDFRONT) {
		if (!c->distribution_id || !*c->distribution_id) {
			set_err(err, "cdn=cloudfront needs cdn_distribution_id");
			return -EINVAL;
		}
		if (!id_ok(c->distribution_id)) {
			set_err(err, "bad cdn_distribution_id '%s': letters and digits expected",
				c->distribution_id);
			return -EINVAL;
		}
		if (!cdn->api.creds) {
			set_err(err, "cdn=cloudfront needs AWS credentials");
			return -ENOKEY;
		}
		cdn->api.id = strdup(c->distribution_id);
		return cdn->api.id ? 0 : -ENOMEM;
	}
	if (!c->zone_id || !*c->zone_id) {
		set_err(err, "cdn=cloudflare needs cdn_zone_id");
		return -EINVAL;
	}
	if (!id_ok(c->zone_id)) {
		set_err(err, "bad cdn_zone_id '%s': letters and digits expected", c->zone_id);
		return -EINVAL;
	}
	if (!tok || !*tok) {
		set_err(err, "cdn=cloudflare needs the CLOUDFLARE_API_TOKEN environment variable");
		return -ENOKEY;
	}
	if (strcspn(tok, "\r\n") != strlen(tok)) {
		set_err(err, "bad CLOUDFLARE_API_TOKEN: it holds a line break");
		return -EINVAL;
	}
	if (!c->domain || !*c->domain) {
		set_err(err, "cdn=cloudflare needs cdn_domain");
		return -EINVAL;
	}
	cdn->api.id = strdup(c->zone_id);
	cdn->api.token = strdup(tok);
	if (!cdn->api.id || !cdn->api.token)
		return -ENOMEM;
	return set_domain(cdn, c->domain, err);
}

/* "cloudfront E123 /static" - what the journaled batches were built for. */
static int make_identity(struct cdn *cdn)
{
	struct buf b;
	int rc;

	buf_init(&b, 16384);
	rc = buf_addf(&b, "%s %s ", pname(cdn), cdn->api.id);
	if (rc == 0)
		rc = cdn_journal_esc(&b, cdn->domain ? cdn->domain : "-");
	if (rc == 0)
		rc = buf_addch(&b, ' ');
	if (rc == 0)
		rc = cdn_journal_esc(&b, *cdn->prefix ? cdn->prefix : "-");
	if (rc == 0)
		cdn->identity = buf_detach(&b, NULL);
	buf_release(&b);
	return rc < 0 ? rc : cdn->identity ? 0 : -ENOMEM;
}

static int configure(struct cdn *cdn, const struct cdn_conf *c, struct buf *err)
{
	const char *ep = c->endpoint && *c->endpoint ? c->endpoint
			 : c->provider == CDN_CLOUDFRONT ? "https://cloudfront.amazonaws.com"
							 : "https://api.cloudflare.com";
	int rc;

	if (c->provider != CDN_CLOUDFRONT && c->provider != CDN_CLOUDFLARE) {
		set_err(err, "bad cdn provider %d", (int)c->provider);
		return -EINVAL;
	}
	cdn->api.provider = c->provider;
	rc = check_provider(cdn, c, err);
	if (rc == 0)
		rc = check_numbers(cdn, c, err);
	if (rc == 0)
		rc = cdn_api_endpoint(&cdn->api, ep, err);
	if (rc == 0 && !(cdn->prefix = strdup(c->path_prefix ? c->path_prefix : "")))
		rc = -ENOMEM;
	if (rc == 0)
		rc = make_identity(cdn);
	if (rc == 0 && c->journal_dir && asprintf(&cdn->dir, "%s/cdn", c->journal_dir) < 0) {
		cdn->dir = NULL;
		rc = -ENOMEM;
	}
	return rc;
}

/* ------------------------------------------------------------------ queue */

/* "f"/"d" + key without leading '/' (nor trailing '/' for a directory). */
static char *hkey(const char *key, int is_dir)
{
	size_t n;
	char *h;

	while (*key == '/')
		key++;
	n = strlen(key);
	while (is_dir && n && key[n - 1] == '/')
		n--;
	if (!is_dir && !n)
		return NULL;
	h = malloc(n + 2);
	if (!h)
		return NULL;
	h[0] = is_dir ? 'd' : 'f';
	memcpy(h + 1, key, n);
	h[n + 1] = '\0';
	return h;
}

/* Is h ("f..."/"d...") pending itself or under a pending directory? */
static int pending_covers(const struct cdn *cdn, const char *h)
{
	size_t n = strlen(h);
	char *d;
	int hit;

	if (htab_get(cdn->pending, h) || htab_get(cdn->pending, "d"))
		return 1;
	d = strdup(h);
	if (!d)
		return 0;
	d[0] = 'd';
	hit = 0;
	for (size_t i = 1; i < n && !hit; i++) {
		if (d[i] != '/')
			continue;
		d[i] = '\0';
		hit = htab_get(cdn->pending, d) != NULL;
		d[i] = '/';
	}
	free(d);
	return hit;
}

struct under {
	const char *dir;  /* "" for the root */
	size_t n;
	char **keys;
	size_t nkeys, cap;
	int rc;
};

static int collect_under(const char *key, void *val, void *arg)
{
	struct under *u = arg;

	(void)val;
	if (u->n && (strncmp(key + 1, u->dir, u->n) != 0 || key[1 + u->n] != '/'))
		return 0;
	if (u->nkeys == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 16;
		char **k = realloc(u->keys, cap * sizeof(*k));

		if (!k) {
			u->rc = -ENOMEM;
			return 1;
		}
		u->keys = k;
		u->cap = cap;
	}
	u->keys[u->nkeys] = strdup(key);
	if (!u->keys[u->nkeys]) {
		u->rc = -ENOMEM;
		return 1;
	}
	u->nkeys++;
	return 0;
}

/* A new pending directory h subsumes what is pending under it. */
static int drop_under(struct cdn *cdn, const char *h)
{
	struct under u = { .dir = h + 1, .n = strlen(h + 1) };

	htab_foreach(cdn->pending, collect_under, &u);
	for (size_t i = 0; i < u.nkeys; i++) {
		if (u.rc == 0 && htab_del(cdn->pending, u.keys[i]))
			cdn->npending--;
		free(u.keys[i]);
	}
	free(u.keys);
	return u.rc;
}

/* Add h to pending.  1 added, 0 already covered, -ENOMEM. */
static int enqueue_locked(struct cdn *cdn, const char *h, double now)
{
	int rc;

	if (pending_covers(cdn, h))
		return 0;
	if (h[0] == 'd') {
		rc = drop_under(cdn, h);
		if (rc < 0)
			return rc;
	}
	rc = htab_put(cdn->pending, h, (void *)1, NULL);
	if (rc < 0)
		return rc;
	if (cdn->npending++ == 0)
		cdn->first_pending = now;
	return 1;
}

static void journal_warn(struct cdn *cdn, int rc)
{
	if (cdn->jwarned)
		return;
	cdn->jwarned = 1;
	log_warn("cannot write the cdn journal in '%s': %s; purges are kept in memory only",
		 cdn->dir, strerror(-rc));
}

/* Append text to the journal (jlock held). */
static void journal_append(struct cdn *cdn, const char *text, size_t len)
{
	int rc;

	if (!cdn->dir)
		return;
	rc = cdn_journal_append(cdn->jfd, text, len);
	if (rc < 0)
		journal_warn(cdn, rc);
	else
		cdn->jdirty = 1;
}

/* The dispatcher, before it sleeps: the lines appended since the last
 * snapshot reach the disk (lock held, dropped meanwhile), at most once per
 * JSYNC_EVERY (an rm -r queues a purge per file).  The fd stays valid:
 * only this thread replaces it while the dispatcher runs. */
static void journal_sync(struct cdn *cdn, double *wake)
{
	double now = mono();
	int fd = -1;

	if (now < cdn->jsync_last + JSYNC_EVERY) {
		*wake = dmin(*wake, cdn->jsync_last + JSYNC_EVERY);
		return;
	}
	pthread_mutex_unlock(&cdn->lock);
	pthread_mutex_lock(&cdn->jlock);
	if (cdn->jdirty)
		fd = cdn->jfd;
	cdn->jdirty = 0;
	pthread_mutex_unlock(&cdn->jlock);
	if (fd >= 0 && fdatasync(fd) < 0)
		log_debug("cdn journal: fdatasync: %s", strerror(errno));
	if (fd >= 0)
		cdn->jsync_last = now;
	pthread_mutex_lock(&cdn->lock);
}

int cdn_purge(struct cdn *cdn, const char *key_path, int is_dir)
{
	struct buf line;
	char *h;
	int rc;

	if (!cdn)
		return 0;
	if (!key_path)
		return -EINVAL;
	if (!is_dir && !key_path[strspn(key_path, "/")])
		return -EINVAL;
	h = hkey(key_path, is_dir);
	if (!h)
		return -ENOMEM;
	/* jlock first (the lock order), held until the line is written: a
	 * snapshot taken in between would hold the key already, and the line
	 * appended after it would journal it twice */
	buf_init(&line, 0);
	pthread_mutex_lock(&cdn->jlock);
	pthread_mutex_lock(&cdn->lock);
	rc = enqueue_locked(cdn, h, mono());
	cdn->last_change = mono();
	pthread_cond_signal(&cdn->wake);
	pthread_mutex_unlock(&cdn->lock);
	if (rc > 0 && cdn->dir && cdn_journal_pline(&line, h + 1, is_dir) == 0)
		journal_append(cdn, line.data, line.len);
	pthread_mutex_unlock(&cdn->jlock);
	buf_release(&line);
	free(h);
	return rc < 0 ? rc : 0;
}

void cdn_hold(struct cdn *cdn, int on)
{
	if (!cdn)
		return;
	pthread_mutex_lock(&cdn->lock);
	cdn->holds += on ? 1 : -1;
	if (!cdn->holds)
		pthread_cond_signal(&cdn->wake);
	pthread_mutex_unlock(&cdn->lock);
}

/* ---------------------------------------------------------------- journal */

static int render_p(const char *key, void *val, void *arg)
{
	(void)val;
	return cdn_journal_pline(arg, key + 1, key[0] == 'd') < 0;
}

/* The whole state as journal text (lock held). */
static int render(struct cdn *cdn, struct buf *out)
{
	int rc = buf_addstr(out, "cdnfs-cdn-journal 1 ");

	if (rc == 0)
		rc = buf_addf(out, "%s\n", cdn->identity);
	if (rc == 0 && htab_foreach(cdn->pending, render_p, out))
		rc = -ENOMEM;
	for (struct cdn_batch *b = cdn->inflight; b && rc == 0; b = b->next)
		rc = cdn_journal_bline(out, b);
	return rc;
}

/* Change the state with mutate (under lock) and write the result as the
 * new journal, atomically with respect to cdn_purge's appends: a purge
 * that lands after the snapshot's rendering appends to the new file. */
static int journal_commit(struct cdn *cdn, int (*mutate)(struct cdn *, void *), void *arg)
{
	struct buf text;
	int rc = 0, fd = -1;

	buf_init(&text, (size_t)512 << 20);
	pthread_mutex_lock(&cdn->jlock);
	pthread_mutex_lock(&cdn->lock);
	if (mutate)
		rc = mutate(cdn, arg);
	if (rc >= 0 && cdn->dir && render(cdn, &text) < 0)
		rc = -ENOMEM;
	pthread_mutex_unlock(&cdn->lock);
	if (rc >= 0 && cdn->dir) {
		int wr = cdn_journal_write(cdn->dir, text.data ? text.data : "", text.len, &fd);

		cdn->jerr = wr;
		if (wr < 0 && cdn->jopen) {
			journal_warn(cdn, wr);
		} else if (wr == 0) {
			if (cdn->jfd >= 0)
				close(cdn->jfd);
			cdn->jfd = fd;
			cdn->jdirty = 0; /* the snapshot was fsynced */
		}
	}
	pthread_mutex_unlock(&cdn->jlock);
	buf_release(&text);
	return rc;
}

/* ------------------------------------------------------------------ plans */

/* Completed, gone (404), or unknowable (GetInvalidation denied). */
static int is_completed(const struct cdn_batch *b)
{
	return strcmp(b->status, "Completed") == 0 || strcmp(b->status, "NotFound") == 0 ||
	       strcmp(b->status, "Unknown") == 0;
}

/* CloudFront paths and wildcards of this process still InProgress. */
static size_t in_progress(const struct cdn *cdn, size_t *files, size_t *wild)
{
	size_t n = 0;

	*files = *wild = 0;
	if (cdn->api.provider != CDN_CLOUDFRONT)
		return 0;
	time_t old = time(NULL) - CF_ASSUME_DONE;

	for (const struct cdn_batch *b = cdn->hist; b; b = b->next) {
		/* done, an id we never learnt, or older than any invalidation takes */
		if (is_completed(b) || strcmp(b->id, "-") == 0 || b->created < old)
			continue;
		n++;
		*files += b->nitems - b->nwild;
		*wild += b->nwild;
	}
	return n;
}

static void plan_conf(const struct cdn *cdn, struct cdn_plan_conf *pc)
{
	size_t files, wild, ip = in_progress(cdn, &files, &wild);

	*pc = (struct cdn_plan_conf){ cdn->api.provider, cdn->prefix, cdn->domain, 0, 0,
				      cdn->collapse_min, 0 };
	if (cdn->api.provider == CDN_CLOUDFLARE) {
		pc->max_paths = cdn->cfl_batch;
		pc->max_wild = cdn->cfl_batch < CDN_CFL_MAX_PREFIXES ? cdn->cfl_batch
								       : CDN_CFL_MAX_PREFIXES;
		return;
	}
	(void)ip;
	pc->max_paths = files >= CDN_CF_MAX_PATHS ? 0 : CDN_CF_MAX_PATHS - files;
	pc->max_wild = wild >= CDN_CF_MAX_WILD ? 0 : CDN_CF_MAX_WILD - wild;
	pc->max_batches = 1;
}

static void inflight_append(struct cdn *cdn, struct cdn_batch *b)
{
	struct cdn_batch **pp = &cdn->inflight;

	while (*pp)
		pp = &(*pp)->next;
	b->next = NULL;
	*pp = b;
	cdn->ninflight++;
}

/* A batch from a plan's batch bi (items are taken from the plan). */
static int batch_from_plan(struct cdn_plan *plan, size_t bi, char **hk, size_t n,
			   struct cdn_batch **out)
{
	struct cdn_batch_plan *pb = &plan->batches[bi];
	struct cdn_batch *b = calloc(1, sizeof(*b));
	size_t nt = 0;
	int rc;

	*out = NULL;
	if (!b)
		return -ENOMEM;
	rc = cdn_caller_ref(b->ref, sizeof(b->ref));
	for (size_t i = 0; i < n; i++)
		nt += plan->assign[i] == (long)bi;
	b->targets = calloc(nt ? nt : 1, sizeof(*b->targets));
	if (rc == 0 && !b->targets)
		rc = -ENOMEM;
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (plan->assign[i] != (long)bi)
			continue;
		b->targets[b->ntargets].is_dir = hk[i][0] == 'd';
		b->targets[b->ntargets].key = strdup(hk[i] + 1);
		if (!b->targets[b->ntargets++].key)
			rc = -ENOMEM;
	}
	if (rc < 0) {
		cdn_batch_free(b);
		return rc;
	}
	b->kind = pb->kind;
	b->items = pb->items;
	b->nitems = pb->nitems;
	b->nwild = pb->nwild;
	b->created = time(NULL);
	pb->items = NULL;
	pb->nitems = 0;
	*out = b;
	return 0;
}

struct keys {
	char **k;
	size_t n, cap;
	int rc;
};

static int collect_keys(const char *key, void *val, void *arg)
{
	struct keys *ks = arg;

	(void)val;
	if (ks->n == ks->cap) {
		size_t cap = ks->cap ? ks->cap * 2 : 64;
		char **k = realloc(ks->k, cap * sizeof(*k));

		if (!k) {
			ks->rc = -ENOMEM;
			return 1;
		}
		ks->k = k;
		ks->cap = cap;
	}
	if (!(ks->k[ks->n] = strdup(key))) {
		ks->rc = -ENOMEM;
		return 1;
	}
	ks->n++;
	return 0;
}

/* Plan the pending set into in-flight batches (a journal_commit mutator;
 * lock held).  *(size_t *)arg: batches made. */
static int mk_batches(struct cdn *cdn, void *arg)
{
	struct keys ks = { 0 };
	struct cdn_target *t = NULL;
	struct cdn_plan plan;
	struct cdn_plan_conf pc;
	size_t *made = arg, m = 0;
	int rc = 0;

	memset(&plan, 0, sizeof(plan));
	*made = 0;
	if (cdn->ninflight || !cdn->npending)
		return 0;
	plan_conf(cdn, &pc);
	if (pc.max_paths)
		htab_foreach(cdn->pending, collect_keys, &ks);
	rc = ks.rc;
	if (rc == 0 && ks.n && !(t = calloc(ks.n, sizeof(*t))))
		rc = -ENOMEM;
	for (size_t i = 0; rc == 0 && i < ks.n; i++)
		t[i] = (struct cdn_target){ ks.k[i] + 1, ks.k[i][0] == 'd' };
	if (rc == 0 && ks.n)
		rc = cdn_plan_make(&pc, t, ks.n, &plan);
	for (; rc == 0 && m < plan.nbatches; m++) {
		struct cdn_batch *b;

		rc = batch_from_plan(&plan, m, ks.k, ks.n, &b);
		if (rc == 0)
			inflight_append(cdn, b);
	}
	for (size_t i = 0; i < ks.n; i++) {
		if (plan.assign && plan.assign[i] >= 0 && (size_t)plan.assign[i] < m &&
		    htab_del(cdn->pending, ks.k[i]))
			cdn->npending--;
		free(ks.k[i]);
	}
	if (cdn->npending && cdn->api.provider == CDN_CLOUDFRONT && (plan.nleft || !ks.n)) {
		cdn->blocked = 1;
		cdn->poll_at = mono();
	}
	*made = m;
	cdn_plan_release(&plan);
	free(ks.k);
	free(t);
	return rc;
}

/* ---------------------------------------------------------------- sending */

/* Full jitter in [cap/2, cap], cap = base * 2^(attempts-1) <= retry_max;
 * at least Retry-After (up to an hour).  Lock held (seed). */
static double backoff(struct cdn *cdn, int attempts, double retry_after)
{
	double cap = cdn->retry_base, d;

	for (int i = 1; i < attempts && cap < cdn->retry_max; i++)
		cap *= 2;
	if (cap > cdn->retry_max)
		cap = cdn->retry_max;
	d = cap / 2 + cap / 2 * ((double)rand_r(&cdn->seed) / RAND_MAX);
	if (retry_after > d)
		d = retry_after < 3600 ? retry_after : 3600;
	return d;
}

static const char *noun(const struct cdn *cdn, const struct cdn_batch *b)
{
	if (cdn->api.provider == CDN_CLOUDFRONT)
		return b->nitems == 1 ? "path" : "paths";
	if (b->kind == CDN_BATCH_PREFIXES)
		return b->nitems == 1 ? "prefix" : "prefixes";
	return b->nitems == 1 ? "URL" : "URLs";
}

static void hist_push(struct cdn *cdn, struct cdn_batch *b)
{
	b->next = cdn->hist;
	cdn->hist = b;
	cdn->nhist++;
	cdn->hist_items += b->nitems;
	while (cdn->nhist > HIST_MAX || (cdn->hist_items > HIST_MAX_ITEMS && cdn->nhist > 1)) {
		struct cdn_batch **pp = &cdn->hist;

		while ((*pp)->next)
			pp = &(*pp)->next;
		cdn->nhist--;
		cdn->hist_items -= (*pp)->nitems;
		cdn_batch_free(*pp);
		*pp = NULL;
	}
}

/* What the dispatcher does once the lock is released. */
enum { AFTER_DONE = 1, AFTER_MONTH = 2, AFTER_SPLIT = 4, AFTER_NEWREF = 8, AFTER_EXPAND = 16 };

struct after {
	int act;
	char ref[CDN_REF_MAX];
	char month[8];
	uint64_t month_paths;
};

static void month_count(struct cdn *cdn, size_t n, struct after *af)
{
	time_t now = time(NULL);
	struct tm tm;
	char cur[16];

	gmtime_r(&now, &tm);
	strftime(cur, sizeof(cur), "%Y-%m", &tm);
	if (strcmp(cdn->st.month, cur) != 0) {
		snprintf(cdn->st.month, sizeof(cdn->st.month), "%.7s", cur);
		cdn->st.month_paths = 0;
	}
	cdn->st.month_paths += n;
	memcpy(af->month, cdn->st.month, sizeof(af->month));
	af->month_paths = cdn->st.month_paths;
	af->act |= AFTER_MONTH;
}

/* Accepted: the head batch moves to the history. */
static void on_ok(struct cdn *cdn, struct cdn_batch *b, const struct cdn_result *res,
		  struct after *af)
{
	cdn->inflight = b->next;
	cdn->ninflight--;
	snprintf(b->id, sizeof(b->id), "%s", res->id);
	snprintf(b->status, sizeof(b->status), "%s", res->status);
	if (cdn->api.provider == CDN_CLOUDFRONT)
		log_info("cloudfront invalidation %s (%s) created for %zu %s%s", b->id, b->status,
			 b->nitems, noun(cdn, b), b->attempts ? " after retries" : "");
	else
		log_info("cloudflare purge %s done for %zu %s%s", b->id, b->nitems, noun(cdn, b),
			 b->attempts ? " after retries" : "");
	cdn->st.batches++;
	cdn->st.paths_sent += b->nitems;
	cdn->st.last_error[0] = '\0';
	cdn->logged[0] = '\0';
	cdn->blocked = 0;
	month_count(cdn, b->nitems, af);
	snprintf(af->ref, sizeof(af->ref), "%s", b->ref);
	af->act |= AFTER_DONE;
	hist_push(cdn, b);
}

static void on_retry(struct cdn *cdn, struct cdn_batch *b, const struct cdn_result *res,
		     double now)
{
	double d = backoff(cdn, b->attempts, res->retry_after);

	b->next_try = now + d;
	if (b->attempts == 1 || b->attempts % 10 == 0)
		log_warn("cannot send the %s purge of %zu %s (attempt %d): %s; retrying in %.1f s",
			 pname(cdn), b->nitems, noun(cdn, b), b->attempts, res->msg, d);
}

static void on_busy(struct cdn *cdn, struct cdn_batch *b, const struct cdn_result *res,
		    double now)
{
	size_t f, w, ip = in_progress(cdn, &f, &w);
	double d = backoff(cdn, b->attempts, res->retry_after);

	if (ip && d < 3 * cdn->poll_interval)
		d = 3 * cdn->poll_interval; /* a poll that sees one complete sends it at once */
	b->next_try = now + d;
	cdn->blocked = 1;
	cdn->poll_at = now;
	if (b->attempts == 1)
		log_info("cloudfront distribution '%s' has too many invalidations in progress "
			 "(%zu of ours); waiting for them to complete", cdn->api.id, ip);
}

/* Paths left: pending plus the targets of in-flight batches (lock held). */
static size_t left_locked(const struct cdn *cdn)
{
	size_t n = cdn->npending;

	for (const struct cdn_batch *b = cdn->inflight; b; b = b->next)
		n += b->ntargets ? b->ntargets : b->nitems;
	return n;
}

static void on_denied(struct cdn *cdn, struct cdn_batch *b, const struct cdn_result *res,
		      double now)
{
	double d = cdn->retry_max * (0.75 + 0.25 * ((double)rand_r(&cdn->seed) / RAND_MAX));

	b->next_try = now + d;
	cdn->deny_gen++;
	cdn->deny_err = res->err ? res->err : -EACCES;
	if (strcmp(cdn->logged, res->msg) != 0 || now - cdn->logged_at >= DENY_RELOG) {
		snprintf(cdn->logged, sizeof(cdn->logged), "%s", res->msg);
		cdn->logged_at = now;
		log_error("%s rejected the purge of %zu %s for %s '%s': %s; kept in the journal "
			  "'%s' with %zu more queued, retrying every %.0f s", pname(cdn), b->nitems,
			  noun(cdn, b), cdn->api.provider == CDN_CLOUDFRONT ? "distribution" : "zone",
			  cdn->api.id, res->msg, cdn->dir ? cdn->dir : "(none)",
			  left_locked(cdn) - (b->ntargets ? b->ntargets : b->nitems),
			  cdn->retry_max);
	}
}

static int is_own_path(const struct cdn *cdn, const struct cdn_batch *b, const char *item,
			const struct cdn_tgt *t);

/* Rejected as malformed: split it; a lone path that stands for other
 * targets (a wildcard made of a directory's files, a directory purge
 * with files under it) gives way to their own paths; a lone path of its
 * own is dropped. */
static void on_invalid(struct cdn *cdn, struct cdn_batch *b, const struct cdn_result *res,
		       struct after *af)
{
	if (b->nitems > 1) {
		log_warn("%s rejected a purge of %zu %s: %s; splitting it to find the bad one",
			 pname(cdn), b->nitems, noun(cdn, b), res->msg);
		af->act |= AFTER_SPLIT;
		return;
	}
	for (size_t i = 0; i < b->ntargets; i++) {
		if (is_own_path(cdn, b, b->items[0], &b->targets[i]))
			continue;
		log_warn("%s rejected the purge of '%s': %s; purging the %zu %s it stands for "
			 "on their own", pname(cdn), b->items[0], res->msg, b->ntargets,
			 b->ntargets == 1 ? "name" : "names");
		af->act |= AFTER_EXPAND;
		return;
	}
	log_error("%s rejected the purge of '%s': %s; dropped", pname(cdn), b->items[0], res->msg);
	cdn->inflight = b->next;
	cdn->ninflight--;
	cdn->st.dropped += b->nitems;
	snprintf(af->ref, sizeof(af->ref), "%s", b->ref);
	af->act |= AFTER_DONE;
	cdn_batch_free(b);
}

/* The answer for the head batch b (lock held). */
static void handle(struct cdn *cdn, struct cdn_batch *b, const struct cdn_result *res,
		   struct after *af)
{
	double now = mono();

	if (res->outcome != CDN_OK) {
		b->attempts++;
		cdn->st.failures++;
		snprintf(cdn->st.last_error, sizeof(cdn->st.last_error), "%.255s", res->msg);
	}
	switch (res->outcome) {
	case CDN_OK:
		on_ok(cdn, b, res, af);
		break;
	case CDN_RETRY:
		on_retry(cdn, b, res, now);
		break;
	case CDN_BUSY:
		on_busy(cdn, b, res, now);
		break;
	case CDN_DENIED:
		on_denied(cdn, b, res, now);
		break;
	case CDN_INVALID:
		on_invalid(cdn, b, res, af);
		break;
	case CDN_REF_CLASH:
		log_warn("cloudfront caller reference '%s' was used for other paths; "
			 "sending with a new one", b->ref);
		af->act |= AFTER_NEWREF;
		break;
	}
	pthread_cond_broadcast(&cdn->done);
}

/* The path part of a sent item (what cdn_encode_path made) and whether it
 * is a prefix; NULL when the item is not ours. */
static const char *item_path(const struct cdn *cdn, const struct cdn_batch *b, const char *item,
			     size_t *plen, int *wild)
{
	size_t n = strlen(item), bl;
	const char *base;

	if (cdn->api.provider == CDN_CLOUDFRONT) {
		*wild = n && item[n - 1] == '*';
		*plen = n - (size_t)*wild;
		return item;
	}
	base = b->kind == CDN_BATCH_PREFIXES ? cdn->host_only : cdn->url_base;
	bl = strlen(base);
	if (strncmp(item, base, bl) != 0)
		return NULL;
	*wild = b->kind == CDN_BATCH_PREFIXES;
	*plen = n - bl;
	return item + bl;
}

/* Does batch b purge the encoded path p (a prefix when pwild)? */
static int batch_covers(const struct cdn *cdn, const struct cdn_batch *b, const char *p,
			int pwild)
{
	size_t pl = strlen(p);

	for (size_t i = 0; i < b->nitems; i++) {
		size_t il;
		int iwild;
		const char *ip = item_path(cdn, b, b->items[i], &il, &iwild);

		if (!ip)
			continue;
		if (iwild && pl >= il && memcmp(p, ip, il) == 0)
			return 1;
		if (!iwild && !pwild && pl == il && memcmp(p, ip, il) == 0)
			return 1;
	}
	return 0;
}

/* A copy of items[from..to) of b with a new reference, no targets yet. */
static struct cdn_batch *batch_slice(const struct cdn *cdn, const struct cdn_batch *b,
				     size_t from, size_t to)
{
	struct cdn_batch *s = calloc(1, sizeof(*s));

	if (!s || cdn_caller_ref(s->ref, sizeof(s->ref)) < 0 ||
	    !(s->items = calloc(to - from, sizeof(*s->items))) ||
	    !(s->targets = calloc(b->ntargets + 1, sizeof(*s->targets)))) {
		cdn_batch_free(s);
		return NULL;
	}
	s->kind = b->kind;
	s->created = b->created;
	s->attempts = b->attempts;
	for (size_t i = from; i < to; i++) {
		size_t n = strlen(b->items[i]);

		if (!(s->items[s->nitems] = strdup(b->items[i]))) {
			cdn_batch_free(s);
			return NULL;
		}
		s->nitems++;
		s->nwild += cdn->api.provider == CDN_CLOUDFRONT && n && b->items[i][n - 1] == '*';
	}
	return s;
}

/* Give target t to the half that purges it. */
static int split_target(const struct cdn *cdn, const struct cdn_tgt *t, struct cdn_batch *h[2])
{
	struct buf p;
	int wild = 0, k, rc;

	buf_init(&p, 0);
	rc = cdn_encode_path(&p, cdn->api.provider, cdn->prefix, t->key, t->is_dir, &wild);
	k = rc == 0 && !batch_covers(cdn, h[0], buf_str(&p), wild) ? 1 : 0;
	buf_release(&p);
	h[k]->targets[h[k]->ntargets].is_dir = t->is_dir;
	h[k]->targets[h[k]->ntargets].key = strdup(t->key);
	return h[k]->targets[h[k]->ntargets++].key ? 0 : -ENOMEM;
}

/* journal_commit mutator: the head batch becomes its two halves. */
static int split_head(struct cdn *cdn, void *arg)
{
	struct cdn_batch *b = cdn->inflight, *h[2];
	int rc = 0;

	(void)arg;
	if (!b || b->nitems < 2)
		return 0;
	h[0] = batch_slice(cdn, b, 0, b->nitems / 2);
	h[1] = batch_slice(cdn, b, b->nitems / 2, b->nitems);
	if (!h[0] || !h[1])
		rc = -ENOMEM;
	for (size_t i = 0; i < b->ntargets && rc == 0; i++)
		rc = split_target(cdn, &b->targets[i], h);
	if (rc < 0) {
		cdn_batch_free(h[0]);
		cdn_batch_free(h[1]);
		b->next_try = mono() + backoff(cdn, b->attempts, 0);
		return rc;
	}
	h[0]->next = h[1];
	h[1]->next = b->next;
	cdn->inflight = h[0];
	cdn->ninflight++;
	cdn_batch_free(b);
	return 0;
}

/* Is item (of batch b) target t's own path, as a plan of t alone makes it?
 * An encoding failure counts as yes: such a target has no path to send. */
static int is_own_path(const struct cdn *cdn, const struct cdn_batch *b, const char *item,
		       const struct cdn_tgt *t)
{
	struct buf p;
	size_t il;
	int wild = 0, iwild, own;
	const char *ip = item_path(cdn, b, item, &il, &iwild);

	buf_init(&p, 0);
	own = cdn_encode_path(&p, cdn->api.provider, cdn->prefix, t->key, t->is_dir, &wild) < 0 ||
	      (ip && wild == iwild && p.len == il && memcmp(buf_str(&p), ip, il) == 0);
	buf_release(&p);
	return own;
}

/* journal_commit mutator: the head batch, one path the provider rejected
 * as malformed, becomes the batches of its targets planned without
 * wildcards made of files; the targets whose own path was the rejected
 * one are dropped.  *(size_t *)arg: targets dropped. */
static int expand_head(struct cdn *cdn, void *arg)
{
	struct cdn_batch *b = cdn->inflight, *first = NULL, **tail = &first;
	struct cdn_plan_conf pc;
	struct cdn_target *t = NULL;
	struct cdn_plan plan;
	size_t *dropped = arg, n = 0, nb = 0;
	char **hk = NULL;
	int rc = 0;

	memset(&plan, 0, sizeof(plan));
	*dropped = 0;
	if (!b || b->nitems != 1)
		return 0;
	if (b->ntargets && (!(hk = calloc(b->ntargets, sizeof(*hk))) ||
			    !(t = calloc(b->ntargets, sizeof(*t)))))
		rc = -ENOMEM;
	for (size_t i = 0; i < b->ntargets && rc == 0; i++) {
		const struct cdn_tgt *g = &b->targets[i];
		size_t kl = strlen(g->key);

		if (is_own_path(cdn, b, b->items[0], g)) {
			log_error("%s rejected the purge of '%s%s': dropped", pname(cdn), g->key,
				  g->is_dir ? "/" : "");
			(*dropped)++;
			continue;
		}
		if (!(hk[n] = malloc(kl + 2))) {
			rc = -ENOMEM;
			break;
		}
		hk[n][0] = g->is_dir ? 'd' : 'f';
		memcpy(hk[n] + 1, g->key, kl + 1);
		t[n] = (struct cdn_target){ hk[n] + 1, g->is_dir };
		n++;
	}
	plan_conf(cdn, &pc);
	pc.collapse_min = 0; /* no wildcards made of files */
	pc.max_batches = 0;
	if (cdn->api.provider == CDN_CLOUDFRONT) { /* the in-progress budget: on_busy */
		pc.max_paths = CDN_CF_MAX_PATHS;
		pc.max_wild = CDN_CF_MAX_WILD;
	}
	if (rc == 0 && n)
		rc = cdn_plan_make(&pc, t, n, &plan);
	if (rc == 0 && plan.nleft)
		rc = -ENOSPC; /* cannot happen without a batch limit: keep the batch */
	for (size_t m = 0; rc == 0 && m < plan.nbatches; m++, nb++) {
		rc = batch_from_plan(&plan, m, hk, n, tail);
		if (rc == 0) {
			(*tail)->attempts = b->attempts;
			tail = &(*tail)->next;
		}
	}
	if (rc == 0) {
		*tail = b->next;
		cdn->inflight = first ? first : b->next;
		cdn->ninflight = cdn->ninflight - 1 + nb;
		cdn->st.dropped += *dropped;
		cdn_batch_free(b);
	} else {
		while (first) {
			struct cdn_batch *x = first;

			first = x->next;
			cdn_batch_free(x);
		}
		*dropped = 0;
		b->next_try = mono() + backoff(cdn, b->attempts, 0);
	}
	cdn_plan_release(&plan);
	for (size_t i = 0; i < n; i++)
		free(hk[i]);
	free(hk);
	free(t);
	return rc;
}

/* journal_commit mutator: a fresh CallerReference for the head batch. */
static int newref_head(struct cdn *cdn, void *arg)
{
	(void)arg;
	if (!cdn->inflight)
		return 0;
	cdn->inflight->next_try = mono();
	return cdn_caller_ref(cdn->inflight->ref, sizeof(cdn->inflight->ref));
}

/* Journal work decided under the lock, done without it. */
static void do_after(struct cdn *cdn, const struct after *af)
{
	char line[CDN_REF_MAX + 4];
	int n, rc;

	if (af->act & AFTER_DONE) {
		n = snprintf(line, sizeof(line), "D %s\n", af->ref);
		pthread_mutex_lock(&cdn->jlock);
		journal_append(cdn, line, (size_t)n);
		pthread_mutex_unlock(&cdn->jlock);
	}
	if ((af->act & AFTER_MONTH) && cdn->dir) {
		rc = cdn_month_write(cdn->dir, af->month, af->month_paths);
		if (rc < 0)
			log_debug("cannot write '%s/month': %s", cdn->dir, strerror(-rc));
	}
	if (af->act & AFTER_SPLIT)
		(void)journal_commit(cdn, split_head, NULL);
	if (af->act & AFTER_NEWREF)
		(void)journal_commit(cdn, newref_head, NULL);
	if (af->act & AFTER_EXPAND) {
		size_t dropped;

		(void)journal_commit(cdn, expand_head, &dropped);
	}
}

/* Send the head batch (lock held on entry and return). */
static void send_head(struct cdn *cdn)
{
	struct cdn_batch *b = cdn->inflight;
	struct cdn_result res;
	struct after af = { 0 };
	int rc;

	b->sending = 1;
	cdn->st.requests++;
	pthread_mutex_unlock(&cdn->lock);
	if (cdn->api.provider == CDN_CLOUDFRONT)
		rc = cdn_cloudfront_send(&cdn->api, b, &res);
	else
		rc = cdn_cloudflare_send(&cdn->api, b, &res);
	if (rc < 0)
		log_debug("cdn request: %s", strerror(-rc));
	pthread_mutex_lock(&cdn->lock);
	b->sending = 0;
	handle(cdn, b, &res, &af);
	if (af.act) {
		pthread_mutex_unlock(&cdn->lock);
		do_after(cdn, &af);
		pthread_mutex_lock(&cdn->lock);
	}
}

/* Set the status of accepted batch id (lock held); 1 when it became
 * Completed. */
static int set_status(struct cdn *cdn, const char *id, const struct cdn_result *res)
{
	for (struct cdn_batch *b = cdn->hist; b; b = b->next) {
		int was;

		if (strcmp(b->id, id) != 0)
			continue;
		was = is_completed(b);
		if (res->outcome == CDN_OK)
			snprintf(b->status, sizeof(b->status), "%s", res->status);
		else if (res->outcome == CDN_DENIED)
			snprintf(b->status, sizeof(b->status), "%s",
				 res->err == -ENOENT ? "NotFound" : "Unknown");
		return !was && is_completed(b);
	}
	return 0;
}

/* GetInvalidation for our InProgress invalidations (lock held on entry and
 * return); a completion unblocks the queue. */
static void poll_progress(struct cdn *cdn)
{
	char (*ids)[CDN_REF_MAX] = calloc(POLL_MAX, sizeof(*ids));
	struct cdn_result *res = calloc(POLL_MAX, sizeof(*res));
	size_t n = 0, f, w, completed = 0;

	cdn->poll_at = mono() + cdn->poll_interval;
	for (struct cdn_batch *b = cdn->hist; ids && res && b && n < POLL_MAX; b = b->next)
		if (!is_completed(b) && strcmp(b->id, "-") != 0)
			memcpy(ids[n++], b->id, CDN_REF_MAX);
	pthread_mutex_unlock(&cdn->lock);
	for (size_t i = 0; i < n; i++)
		if (cdn_cloudfront_get(&cdn->api, ids[i], &res[i]) < 0)
			res[i].outcome = CDN_RETRY;
	pthread_mutex_lock(&cdn->lock);
	for (size_t i = 0; i < n; i++) {
		completed += (size_t)set_status(cdn, ids[i], &res[i]);
		if (res[i].outcome == CDN_DENIED && !cdn->get_denied++)
			log_warn("cannot poll cloudfront invalidation %s: %s; waiting without "
				 "GetInvalidation", ids[i], res[i].msg);
	}
	if (completed || !in_progress(cdn, &f, &w)) {
		cdn->blocked = 0;
		if (cdn->inflight && !cdn->inflight->sending)
			cdn->inflight->next_try = mono();
	}
	if (n)
		log_debug("polled %zu cloudfront invalidations: %zu completed", n, completed);
	free(ids);
	free(res);
}

/* Turn the pending set into batches (lock held on entry and return). */
static void plan_round(struct cdn *cdn)
{
	size_t made = 0;
	int rc;

	pthread_mutex_unlock(&cdn->lock);
	rc = journal_commit(cdn, mk_batches, &made);
	pthread_mutex_lock(&cdn->lock);
	if (rc < 0)
		log_warn("cannot plan the %s purges: %s", pname(cdn), strerror(-rc));
	if ((rc < 0 || !made) && !cdn->blocked && cdn->npending) /* not even when flushing */
		cdn->plan_after = mono() + (cdn->delay > 1 ? cdn->delay : 1);
}

enum act { A_WAIT, A_SEND, A_POLL, A_PLAN };

/* What the dispatcher does now, or until when it sleeps (lock held). */
static enum act next_action(struct cdn *cdn, double now, double *wake)
{
	size_t f, w;
	int ip = cdn->blocked && in_progress(cdn, &f, &w) > 0;
	double due;

	*wake = now + IDLE_WAKE;
	if (ip) {
		if (cdn->poll_at <= now)
			return A_POLL;
		*wake = dmin(*wake, cdn->poll_at);
	}
	if (cdn->inflight) {
		if (cdn->inflight->next_try <= now)
			return A_SEND;
		*wake = dmin(*wake, cdn->inflight->next_try);
		return A_WAIT;
	}
	if (!cdn->npending || ip)
		return A_WAIT;
	if (now < cdn->plan_after) {
		*wake = dmin(*wake, cdn->plan_after);
		return A_WAIT;
	}
	cdn->blocked = 0;
	due = cdn->first_pending + cdn->max_delay;
	if (!cdn->holds)
		due = dmin(cdn->last_change + cdn->delay, due);
	if (cdn->flushers || cdn->draining || due <= now)
		return A_PLAN;
	*wake = dmin(*wake, due);
	return A_WAIT;
}

static void *dispatcher(void *arg)
{
	struct cdn *cdn = arg;

	pthread_mutex_lock(&cdn->lock);
	while (!cdn->stop) {
		double wake, w2;

		switch (next_action(cdn, mono(), &wake)) {
		case A_SEND:
			send_head(cdn);
			break;
		case A_POLL:
			poll_progress(cdn);
			break;
		case A_PLAN:
			plan_round(cdn);
			break;
		default:
			journal_sync(cdn, &wake);
			if (!cdn->stop && next_action(cdn, mono(), &w2) == A_WAIT)
				wait_until(&cdn->wake, &cdn->lock, dmin(wake, w2));
		}
	}
	pthread_mutex_unlock(&cdn->lock);
	return NULL;
}

int cdn_start(struct cdn *cdn)
{
	sigset_t all, old;
	int rc = 0;

	if (!cdn)
		return 0;
	pthread_mutex_lock(&cdn->lock);
	if (cdn->stop) {
		rc = -ESHUTDOWN;
	} else if (!cdn->started) {
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		rc = -pthread_create(&cdn->thread, NULL, dispatcher, cdn);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (rc == 0) {
			cdn->started = 1;
			pthread_setname_np(cdn->thread, "cdnfs-cdn");
		}
	}
	pthread_mutex_unlock(&cdn->lock);
	return rc;
}

/* ------------------------------------------------------------ the callers */

/* Send now: no debounce, the head retried at once (lock held). */
static void hurry(struct cdn *cdn)
{
	if (cdn->inflight && !cdn->inflight->sending)
		cdn->inflight->next_try = mono();
	if (cdn->blocked)
		cdn->poll_at = mono();
	pthread_cond_signal(&cdn->wake);
}

int cdn_flush(struct cdn *cdn, double timeout)
{
	uint64_t gen;
	double deadline;
	int rc = 0;

	if (!cdn)
		return 0;
	pthread_mutex_lock(&cdn->lock);
	if (!cdn->started || cdn->stop) {
		rc = cdn->npending || cdn->ninflight ? -ESHUTDOWN : 0;
		pthread_mutex_unlock(&cdn->lock);
		return rc;
	}
	deadline = mono() + (timeout > 0 ? timeout : cdn->flush_timeout);
	gen = cdn->deny_gen;
	cdn->flushers++;
	hurry(cdn);
	while (cdn->npending || cdn->ninflight) {
		if (cdn->deny_gen != gen) {
			rc = cdn->deny_err;
			break;
		}
		if (wait_until(&cdn->done, &cdn->lock, deadline) == ETIMEDOUT &&
		    mono() >= deadline) {
			rc = -ETIMEDOUT;
			break;
		}
	}
	cdn->flushers--;
	pthread_mutex_unlock(&cdn->lock);
	return rc;
}

/* Where key stands (lock held): 0 found (id/status filled, *refresh when
 * a CloudFront status should be asked again), -ENOENT. */
static int last_locked(struct cdn *cdn, const char *h, const char *p, int wild, char *id,
		       char *status, int *refresh)
{
	*refresh = 0;
	if (pending_covers(cdn, h)) {
		snprintf(id, CDN_REF_MAX, "-");
		snprintf(status, 32, "queued");
		return 0;
	}
	for (struct cdn_batch *b = cdn->inflight; b; b = b->next) {
		if (batch_covers(cdn, b, p, wild)) {
			snprintf(id, CDN_REF_MAX, "-");
			snprintf(status, 32, "%s", b->attempts ? "retrying" : "sending");
			return 0;
		}
	}
	for (struct cdn_batch *b = cdn->hist; b; b = b->next) {
		if (batch_covers(cdn, b, p, wild)) {
			snprintf(id, CDN_REF_MAX, "%s", b->id);
			snprintf(status, 32, "%s", b->status);
			*refresh = cdn->api.provider == CDN_CLOUDFRONT && !is_completed(b) &&
				   strcmp(b->id, "-") != 0;
			return 0;
		}
	}
	return -ENOENT;
}

int cdn_last(struct cdn *cdn, const char *key_path, struct buf *out)
{
	char id[CDN_REF_MAX], status[32], *h = NULL;
	struct cdn_result res;
	struct buf p;
	size_t kl;
	int wild = 0, is_dir, refresh = 0, rc;

	if (!cdn || !key_path)
		return -ENOENT;
	key_path += strspn(key_path, "/");
	kl = strlen(key_path);
	is_dir = !kl || key_path[kl - 1] == '/';
	buf_init(&p, 0);
	h = hkey(key_path, is_dir);
	rc = h ? cdn_encode_path(&p, cdn->api.provider, cdn->prefix, key_path, is_dir, &wild)
	       : -ENOMEM;
	if (rc == 0) {
		pthread_mutex_lock(&cdn->lock);
		rc = last_locked(cdn, h, buf_str(&p), wild, id, status, &refresh);
		pthread_mutex_unlock(&cdn->lock);
	}
	if (rc == 0 && refresh && cdn_cloudfront_get(&cdn->api, id, &res) == 0 &&
	    (res.outcome == CDN_OK || res.outcome == CDN_DENIED)) {
		pthread_mutex_lock(&cdn->lock);
		(void)set_status(cdn, id, &res);
		if (res.outcome == CDN_OK)
			snprintf(status, sizeof(status), "%s", res.status);
		pthread_mutex_unlock(&cdn->lock);
	}
	if (rc == 0)
		rc = buf_addf(out, "%s %s %s", pname(cdn), id, status);
	buf_release(&p);
	free(h);
	return rc;
}

void cdn_get_stats(struct cdn *cdn, struct cdn_stats *out)
{
	size_t f, w;

	memset(out, 0, sizeof(*out));
	if (!cdn)
		return;
	pthread_mutex_lock(&cdn->lock);
	*out = cdn->st;
	out->provider = cdn->api.provider;
	out->pending = cdn->npending;
	out->in_flight = cdn->ninflight;
	for (const struct cdn_batch *b = cdn->inflight; b; b = b->next)
		out->in_flight_paths += b->nitems;
	out->in_progress = in_progress(cdn, &f, &w);
	pthread_mutex_unlock(&cdn->lock);
}

/* Length of the valid UTF-8 sequence at s (1-4), 0 when it is not one: a
 * stray continuation byte, a cut sequence, an overlong form, a surrogate,
 * or past U+10FFFF (RFC 3629). */
static size_t utf8_len(const unsigned char *s)
{
	size_t n = s[0] < 0x80 ? 1 : s[0] >= 0xc2 && s[0] <= 0xdf ? 2
				 : s[0] >= 0xe0 && s[0] <= 0xef ? 3
				 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;
	unsigned lo = 0x80, hi = 0xbf;

	if (s[0] == 0xe0)
		lo = 0xa0; /* overlong */
	else if (s[0] == 0xed)
		hi = 0x9f; /* surrogates */
	else if (s[0] == 0xf0)
		lo = 0x90; /* overlong */
	else if (s[0] == 0xf4)
		hi = 0x8f; /* past U+10FFFF */
	for (size_t i = 1; i < n; i++)
		if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xbf))
			return 0;
	return n;
}

/* The bytes are anybody's (a provider's error message, cut to fit a
 * buffer, perhaps mid-character; a key): the output must be valid JSON
 * whatever they are, so invalid UTF-8 becomes U+FFFD. */
int cdn_json_str(struct buf *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	int rc = buf_addch(out, '"');

	while (*p && rc == 0) {
		size_t n = utf8_len(p);

		if (*p == '"' || *p == '\\')
			rc = buf_addf(out, "\\%c", *p);
		else if (*p < 0x20)
			rc = buf_addf(out, "\\u%04x", *p);
		else if (n == 0)
			rc = buf_addstr(out, "\\ufffd");
		else
			rc = buf_add(out, p, n);
		p += n ? n : 1;
	}
	return rc ? rc : buf_addch(out, '"');
}

int cdn_stats_json_of(const struct cdn_stats *s, struct buf *out)
{
	int rc;

	rc = buf_addf(out, "{\"provider\":\"%s\",\"pending\":%llu,\"in_flight\":%llu,"
			   "\"in_flight_paths\":%llu,\"in_progress\":%llu,\"requests\":%llu,"
			   "\"batches\":%llu,\"paths_sent\":%llu,\"failures\":%llu,"
			   "\"dropped\":%llu,\"month\":",
		      cdn_provider_name(s->provider), (unsigned long long)s->pending,
		      (unsigned long long)s->in_flight, (unsigned long long)s->in_flight_paths,
		      (unsigned long long)s->in_progress, (unsigned long long)s->requests,
		      (unsigned long long)s->batches, (unsigned long long)s->paths_sent,
		      (unsigned long long)s->failures, (unsigned long long)s->dropped);
	if (rc == 0)
		rc = cdn_json_str(out, s->month);
	if (rc == 0)
		rc = buf_addf(out, ",\"month_paths\":%llu,\"last_error\":",
			      (unsigned long long)s->month_paths);
	if (rc == 0)
		rc = cdn_json_str(out, s->last_error);
	return rc ? rc : buf_addch(out, '}');
}

int cdn_stats_json(struct cdn *cdn, struct buf *out)
{
	struct cdn_stats s;

	if (!cdn)
		return buf_addstr(out, "{\"provider\":\"none\"}");
	cdn_get_stats(cdn, &s);
	return cdn_stats_json_of(&s, out);
}

/* ----------------------------------------------------------- life cycle */

size_t cdn_shutdown(struct cdn *cdn, double timeout)
{
	double deadline;
	size_t left;
	int join = 0;

	if (!cdn)
		return 0;
	pthread_mutex_lock(&cdn->lock);
	if (cdn->shut) {
		left = left_locked(cdn);
		pthread_mutex_unlock(&cdn->lock);
		return left;
	}
	cdn->shut = 1;
	if (cdn->started && !cdn->stop) {
		deadline = mono() + (timeout >= 0 ? timeout : cdn->flush_timeout);
		cdn->draining = 1;
		hurry(cdn);
		while ((cdn->npending || cdn->ninflight) &&
		       !(wait_until(&cdn->done, &cdn->lock, deadline) == ETIMEDOUT &&
			 mono() >= deadline))
			;
		join = 1;
	}
	cdn->stop = 1;
	pthread_cond_broadcast(&cdn->wake);
	pthread_cond_broadcast(&cdn->done);
	pthread_mutex_unlock(&cdn->lock);
	if (join)
		pthread_join(cdn->thread, NULL);
	(void)journal_commit(cdn, NULL, NULL); /* compact */
	pthread_mutex_lock(&cdn->lock);
	left = left_locked(cdn);
	if (join && left)
		log_warn("%zu %s purge%s not delivered; kept in '%s' for the next mount", left,
			 pname(cdn), left == 1 ? "" : "s", cdn->dir ? cdn->dir : "(no journal)");
	cdn->started = 0;
	pthread_mutex_unlock(&cdn->lock);
	return left;
}

static void batches_free(struct cdn_batch *b)
{
	while (b) {
		struct cdn_batch *n = b->next;

		cdn_batch_free(b);
		b = n;
	}
}

void cdn_free(struct cdn *cdn)
{
	if (!cdn)
		return;
	if (cdn->started || cdn->jopen)
		(void)cdn_shutdown(cdn, 0);
	htab_free(cdn->pending, NULL);
	batches_free(cdn->inflight);
	batches_free(cdn->hist);
	if (cdn->api.token) {
		explicit_bzero(cdn->api.token, strlen(cdn->api.token));
		free(cdn->api.token);
	}
	free(cdn->api.scheme);
	free(cdn->api.host);
	free(cdn->api.base_path);
	free(cdn->api.id);
	free(cdn->prefix);
	free(cdn->domain);
	free(cdn->url_base);
	free(cdn->host_only);
	free(cdn->dir);
	free(cdn->identity);
	if (cdn->jfd >= 0)
		close(cdn->jfd);
	if (cdn->lockfd >= 0)
		close(cdn->lockfd);
	pthread_mutex_destroy(&cdn->lock);
	pthread_mutex_destroy(&cdn->jlock);
	pthread_cond_destroy(&cdn->wake);
	pthread_cond_destroy(&cdn->done);
	free(cdn);
}

static int cdn_alloc(struct cdn **out)
{
	struct cdn *cdn = calloc(1, sizeof(*cdn));
	pthread_condattr_t ca;
	unsigned int seed = 0;

	*out = NULL;
	if (!cdn)
		return -ENOMEM;
	cdn->jfd = cdn->lockfd = -1;
	pthread_mutex_init(&cdn->lock, NULL);
	pthread_mutex_init(&cdn->jlock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&cdn->wake, &ca);
	pthread_cond_init(&cdn->done, &ca);
	pthread_condattr_destroy(&ca);
	if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1)
		seed = (unsigned int)time(NULL) ^ (unsigned int)getpid();
	cdn->seed = seed;
	*out = cdn;
	if (htab_new(&cdn->pending) < 0)
		return -ENOMEM;
	return 0;
}

/* Journaled state back into the queue (lock held).  A batch built for
 * another configuration goes back to pending paths. */
static int replay(struct cdn *cdn, struct cdn_jstate *st, size_t *np, size_t *nb, size_t *nr)
{
	int same = st->identity && strcmp(st->identity, cdn->identity) == 0, rc = 0;
	double now = mono();

	*np = *nb = *nr = 0;
	for (size_t i = 0; i < st->npending && rc >= 0; i++) {
		char *h = hkey(st->pending[i].key, st->pending[i].is_dir);

		rc = h ? enqueue_locked(cdn, h, now) : 0;
		*np += rc > 0;
		free(h);
	}
	while (st->batches && rc >= 0) {
		struct cdn_batch *b = st->batches;

		st->batches = b->next;
		if (same) {
			if (cdn->api.provider != CDN_CLOUDFRONT)
				b->nwild = 0;
			inflight_append(cdn, b);
			(*nb)++;
			continue;
		}
		for (size_t i = 0; i < b->ntargets && rc >= 0; i++) {
			char *h = hkey(b->targets[i].key, b->targets[i].is_dir);

			rc = h ? enqueue_locked(cdn, h, now) : 0;
			*nr += rc > 0;
			free(h);
		}
		cdn_batch_free(b);
	}
	cdn->last_change = now;
	return rc < 0 ? rc : 0;
}

/* Lock, read and replay the journal, then write a fresh snapshot. */
static int journal_open(struct cdn *cdn, struct buf *err)
{
	struct cdn_jstate st;
	struct buf text;
	size_t np = 0, nb = 0, nr = 0;
	char m[8];
	uint64_t mp;
	int rc;

	memset(&st, 0, sizeof(st));
	if (!cdn->dir)
		return 0;
	rc = cdn_journal_lock(cdn->dir, &cdn->lockfd, err);
	if (rc < 0)
		return rc;
	buf_init(&text, (size_t)512 << 20);
	rc = cdn_journal_read(cdn->dir, &text);
	if (rc < 0)
		set_err(err, "cannot read the cdn journal '%s/journal': %s", cdn->dir,
			strerror(-rc));
	if (rc == 0)
		rc = cdn_journal_parse(text.data ? text.data : "", text.len, &st);
	if (rc == 0 && st.nbad)
		log_warn("cdn journal '%s/journal': %zu unreadable lines skipped", cdn->dir, st.nbad);
	if (rc == 0) {
		pthread_mutex_lock(&cdn->lock);
		rc = replay(cdn, &st, &np, &nb, &nr);
		pthread_mutex_unlock(&cdn->lock);
	}
	if (rc == 0 && cdn_month_read(cdn->dir, m, &mp) == 0 && m[0]) {
		memcpy(cdn->st.month, m, sizeof(m));
		cdn->st.month_paths = mp;
	}
	if (rc == 0)
		rc = journal_commit(cdn, NULL, NULL);
	if (rc == 0 && cdn->jerr < 0) {
		rc = cdn->jerr;
		set_err(err, "cannot write the cdn journal in '%s': %s", cdn->dir, strerror(-rc));
	}
	pthread_mutex_lock(&cdn->jlock);
	cdn->jopen = rc == 0;
	pthread_mutex_unlock(&cdn->jlock);
	if (rc == 0 && (np || nb))
		log_info("%s: %zu pending purge%s and %zu batch%s to resend from '%s'", pname(cdn),
			 np, np == 1 ? "" : "s", nb, nb == 1 ? "" : "es", cdn->dir);
	if (rc == 0 && nr)
		log_warn("%s: %zu journaled purges were planned for another cdn configuration; "
			 "queued again", pname(cdn), nr);
	cdn_jstate_release(&st);
	buf_release(&text);
	return rc;
}

int cdn_new(struct cdn **out, const struct cdn_conf *conf, struct http *http,
	    struct creds *creds, struct buf *err)
{
	struct cdn *cdn = NULL;
	int rc;

	*out = NULL;
	if (err)
		buf_reset(err);
	if (!conf || conf->provider == CDN_NONE)
		return 0;
	rc = cdn_alloc(&cdn);
	if (rc == 0) {
		cdn->api.http = http;
		cdn->api.creds = creds;
		rc = configure(cdn, conf, err);
	}
	if (rc == 0)
		rc = journal_open(cdn, err);
	if (rc < 0) {
		if (err && !err->len)
			set_err(err, "cannot set up the cdn: %s", strerror(-rc));
		cdn_free(cdn);
		return rc;
	}
	*out = cdn;
	return 0;
}
