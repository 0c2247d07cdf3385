/*
 * http.h - HTTP requests over a pool of reusable libcurl handles.
 *
 * The only module that includes <curl/curl.h>.  It owns:
 *  - a pool of easy handles, so connections stay alive and are reused;
 *  - the one retry loop of the program: exponential backoff with full jitter
 *    on connection errors, timeouts, 429, 500, 502, 503, 504 and S3's
 *    400 RequestTimeout; never on other 4xx.  The request is re-signed on
 *    every attempt through the sign callback;
 *  - the one HTTP-status-to-errno table (http_status_errno);
 *  - request counters by method.
 *
 * Calls are synchronous: a thread calls http_do and blocks; concurrency
 * comes from calling it from several threads (the pool hands each its own
 * handle and connection).
 *
 * Threads: every function is thread-safe.
 */
#ifndef CDNFS_HTTP_H
#define CDNFS_HTTP_H

#include <stdint.h>
#include <stddef.h>
#include "buf.h"
#include "compat.h"

struct http;
struct http_resp;

struct http_conf {
	long connect_timeout_ms; /* 0: 5000 */
	long timeout_s;          /* no byte moved for this long aborts an attempt; 0: 30 */
	int max_retries;         /* retries after the first attempt; <0: none, 0: default 5 */
	long retry_base_ms;      /* first backoff; 0: 100 */
	int insecure;            /* skip TLS verification (logged loudly by the caller) */
	const char *ca_file;     /* PEM CA bundle to verify TLS peers with (copied); NULL: the system's */
	int max_handles;         /* pool size; 0: 64 */
};

enum http_body_kind {
	HTTP_BODY_NONE = 0,
	HTTP_BODY_MEM,  /* mem, len */
	HTTP_BODY_FD,   /* pread from fd at off, len bytes */
};

enum http_sink_kind {
	HTTP_SINK_BUF = 0, /* response body into resp->body (capped by max_body) */
	HTTP_SINK_FD,      /* a 2xx body is pwritten to fd from off; others into resp->body */
	HTTP_SINK_DISCARD,
};

/* Called before every attempt: append any headers that depend on the time
 * of sending (x-amz-date, Authorization ...) to out as "Name: value\n"
 * lines.  Returns 0 or -errno (which aborts the request). */
typedef int (*http_sign_fn)(void *arg, struct buf *out);

struct http_req {
	const char *method;          /* "GET", "HEAD", "PUT", "POST", "DELETE" */
	const char *url;             /* full URL: scheme://host[:port]/path[?query] */
	const char *const *headers;  /* "Name: value" lines, fixed for every attempt */
	size_t nheaders;
	http_sign_fn sign;           /* may be NULL */
	void *sign_arg;

	enum http_body_kind body_kind;
	const void *mem;
	int body_fd;
	uint64_t body_off;
	uint64_t body_len;

	enum http_sink_kind sink_kind;
	int sink_fd;
	uint64_t sink_off;
	size_t max_body;             /* cap for resp->body; 0: 16 MiB */

	/* HTTP_SINK_FD: checks of a 2xx answer, called with done 0 once its
	 * status and headers are in (before its first body byte is written),
	 * then with done 1 after the whole body was (resp->sink_written
	 * bytes).  A -errno from it fails the attempt and the attempt is
	 * retried like a broken transfer.  May be NULL. */
	int (*sink_check)(void *arg, const struct http_resp *resp, int done);
	void *sink_check_arg;

	int no_retry;                /* a single attempt */
	long timeout_s;              /* override conf timeout_s for this request if > 0 */
	long connect_timeout_ms;     /* override conf connect_timeout_ms if > 0 */
};

struct http_resp {
	long status;                 /* 0 when no answer was received */
	struct buf body;             /* see sink_kind; always initialised by http_do */
	struct buf hdrs;             /* response headers: "name\0value\0" pairs, names lowercase */
	uint64_t sink_written;       /* bytes written to sink_fd */
	int attempts;
	char errmsg[256];            /* transport error text when status == 0 */
};

int http_new(struct http **out, const struct http_conf *conf) WUR;
void http_free(struct http *h);

/* Perform req with retries.  Returns 0 when an HTTP answer arrived (check
 * resp->status; the last attempt's answer when retries ran out), or -errno
 * when none did: -ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH, -EIO ...
 * resp is initialised by this call; release it with http_resp_release
 * whatever the return value. */
int http_do(struct http *h, const struct http_req *req, struct http_resp *resp) WUR;
void http_resp_release(struct http_resp *resp);

/* Value of the response header name (lowercase), or NULL. */
const char *http_resp_header(const struct http_resp *resp, const char *name);
/* Call fn for every response header whose name starts with prefix. */
void http_resp_headers_prefix(const struct http_resp *resp, const char *prefix,
			      void (*fn)(void *arg, const char *name, const char *value),
			      void *arg);

/* HTTP status -> -errno: 2xx/3xx 0, 400 -EINVAL, 401/403 -EACCES, 404 -ENOENT,
 * 405 -EPERM, 409 -EBUSY, 411/413 -EFBIG, 412 -ESTALE, 416 -ERANGE? (-EINVAL),
 * 429 -EAGAIN, 5xx -EIO. */
int http_status_errno(long status);

/* Counters since start. */
struct http_stats {
	uint64_t get, head, put, post, del, other;
	uint64_t retries, failures;
	uint64_t bytes_up, bytes_down;
};
void http_get_stats(struct http *h, struct http_stats *out);

#endif
