/*
 * http.c - HTTP over a pool of reusable libcurl easy handles (include/http.h).
 *
 * Owns: the handle pool (each handle keeps its own live connection, so a
 * thread that takes a handle usually gets a warm keep-alive connection), the
 * program's one retry loop, the status->errno table and request counters.
 *
 * Pool invariant: every handle is either in free[] or lent to exactly one
 * http_do call; nlive counts both.  Protected by http->lock; a thread never
 * holds the lock while curl runs.
 *
 * Retries: attempt 0..max_retries; between attempts a full-jitter backoff
 * min(8 s, base * 2^attempt).  The sign callback runs on every attempt so
 * each carries a fresh date and signature.  A body read from an fd is
 * re-read from its offset; a body sunk to an fd is re-written from its offset.
 * A sunk body is checked by the caller's sink_check before its first byte is
 * written (status, Content-Range ...) and after its last (a digest); an
 * answer that fails a check is treated as a broken transfer and retried.
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "log.h"

#define HTTP_MAX_BACKOFF_MS 8000

struct conn {
	CURL *easy;
	char errbuf[CURL_ERROR_SIZE];
};

struct http {
	struct http_conf conf;
	char *ca_file;        /* conf.ca_file, owned */
	pthread_mutex_t lock; /* protects free, nfree, nlive */
	pthread_cond_t cond;  /* signalled when a handle is returned */
	struct conn **free;
	int nfree, nlive;
	_Atomic uint64_t n_get, n_head, n_put, n_post, n_del, n_other;
	_Atomic uint64_t n_retries, n_failures, bytes_up, bytes_down;
};

/* State of one attempt, shared with the curl callbacks. */
struct xfer {
	const struct http_req *req;
	struct http_resp *resp;
	CURL *easy;
	uint64_t body_sent;
	size_t max_body;
	int sink_err; /* -errno from a failed pwrite, or -E2BIG */
	int checked;  /* req->sink_check ran on the head of this answer */
	int bad;      /* -errno from req->sink_check: retried */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int http_new(struct http **out, const struct http_conf *conf)
{
	struct http *h = calloc(1, sizeof(*h));

	*out = NULL;
	if (!h)
		return -ENOMEM;
	pthread_once(&curl_once, curl_init_once);
	h->conf = *conf;
	if (!h->conf.connect_timeout_ms)
		h->conf.connect_timeout_ms = 5000;
	if (!h->conf.timeout_s)
		h->conf.timeout_s = 30;
	if (h->conf.max_retries == 0)
		h->conf.max_retries = 5;
	if (h->conf.max_retries < 0)
		h->conf.max_retries = 0;
	if (!h->conf.retry_base_ms)
		h->conf.retry_base_ms = 100;
	if (h->conf.max_handles <= 0)
		h->conf.max_handles = 64;
	h->free = calloc((size_t)h->conf.max_handles, sizeof(*h->free));
	h->ca_file = conf->ca_file ? strdup(conf->ca_file) : NULL;
	h->conf.ca_file = h->ca_file;
	if (!h->free || (conf->ca_file && !h->ca_file)) {
		free(h->free);
		free(h->ca_file);
		free(h);
		return -ENOMEM;
	}
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	*out = h;
	return 0;
}

void http_free(struct http *h)
{
	if (!h)
		return;
	for (int i = 0; i < h->nfree; i++) {
		curl_easy_cleanup(h->free[i]->easy);
		free(h->free[i]);
	}
	free(h->free);
	free(h->ca_file);
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->cond);
	free(h);
}

static struct conn *conn_take(struct http *h)
{
	struct conn *c = NULL;

	pthread_mutex_lock(&h->lock);
	while (h->nfree == 0 && h->nlive >= h->conf.max_handles)
		pthread_cond_wait(&h->cond, &h->lock);
	if (h->nfree > 0) {
		c = h->free[--h->nfree];
	} else {
		h->nlive++;
	}
	pthread_mutex_unlock(&h->lock);
	if (c)
		return c;
	c = calloc(1, sizeof(*c));
	if (c)
		c->easy = curl_easy_init();
	if (!c || !c->easy) {
		free(c);
		pthread_mutex_lock(&h->lock);
		h->nlive--;
		pthread_cond_signal(&h->cond);
		pthread_mutex_unlock(&h->lock);
		return NULL;
	}
	return c;
}

/* Return a handle to the pool; a handle whose transfer failed is closed so a
 * broken connection is never reused. */
static void conn_give(struct http *h, struct conn *c, int broken)
{
	if (broken) {
		curl_easy_cleanup(c->easy);
		c->easy = curl_easy_init();
		if (!c->easy) {
			free(c);
			pthread_mutex_lock(&h->lock);
			h->nlive--;
			pthread_cond_signal(&h->cond);
			pthread_mutex_unlock(&h->lock);
			return;
		}
	}
	pthread_mutex_lock(&h->lock);
	h->free[h->nfree++] = c;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

static size_t read_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	const struct http_req *req = x->req;
	size_t want = size * nmemb;
	uint64_t left = req->body_len - x->body_sent;
	ssize_t n;

	if (want > left)
		want = (size_t)left;
	if (want == 0)
		return 0;
	if (req->body_kind == HTTP_BODY_MEM) {
		memcpy(ptr, (const char *)req->mem + x->body_sent, want);
		n = (ssize_t)want;
	} else {
		do
			n = pread(req->body_fd, ptr, want, (off_t)(req->body_off + x->body_sent));
		while (n < 0 && errno == EINTR);
		if (n <= 0) /* the staged file shrank or failed: abort, never send garbage */
			return CURL_READFUNC_ABORT;
	}
	x->body_sent += (uint64_t)n;
	return (size_t)n;
}

static int seek_cb(void *arg, curl_off_t offset, int origin)
{
	struct xfer *x = arg;

	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > x->req->body_len)
		return CURL_SEEKFUNC_CANTSEEK;
	x->body_sent = (uint64_t)offset;
	return CURL_SEEKFUNC_OK;
}

static int status_is_2xx(CURL *easy)
{
	long code = 0;

	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
	return code >= 200 && code < 300;
}

/* The caller's check of a sunk answer's head, once per attempt. */
static int sink_head_ok(struct xfer *x)
{
	int rc;

	if (x->checked || !x->req->sink_check)
		return 1;
	x->checked = 1;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->resp->status);
	rc = x->req->sink_check(x->req->sink_check_arg, x->resp, 0);
	if (rc < 0)
		x->bad = rc;
	return rc >= 0;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb;

	if (x->req->sink_kind == HTTP_SINK_FD && status_is_2xx(x->easy)) {
		size_t done = 0;

		if (!sink_head_ok(x))
			return 0;

		while (done < n) {
			ssize_t w = pwrite(x->req->sink_fd, ptr + done, n - done,
					   (off_t)(x->req->sink_off + x->resp->sink_written));
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				x->sink_err = w < 0 ? -errno : -EIO;
				return 0;
			}
			done += (size_t)w;
			x->resp->sink_written += (uint64_t)w;
		}
		return n;
	}
	if (x->req->sink_kind == HTTP_SINK_DISCARD && status_is_2xx(x->easy))
		return n;
	if (x->resp->body.len + n > x->max_body) {
		x->sink_err = -E2BIG;
		return 0;
	}
	if (buf_add(&x->resp->body, ptr, n) < 0) {
		x->sink_err = -ENOMEM;
		return 0;
	}
	return n;
}

/* Keep headers as "name\0value\0" pairs; a new status line starts afresh
 * (100 Continue, redirects). */
static size_t header_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb, nl, vs, ve;
	char *colon;
	struct buf *hb = &x->resp->hdrs;

	if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
		buf_reset(hb);
		return n;
	}
	colon = memchr(ptr, ':', n);
	if (!colon)
		return n;
	nl = (size_t)(colon - ptr);
	vs = nl + 1;
	while (vs < n && (ptr[vs] == ' ' || ptr[vs] == '\t'))
		vs++;
	ve = n;
	while (ve > vs && (ptr[ve - 1] == '\r' || ptr[ve - 1] == '\n' || ptr[ve - 1] == ' '))
		ve--;
	for (size_t i = 0; i < nl; i++) {
		char c = ptr[i];

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (buf_addch(hb, c) < 0)
			return 0;
	}
	if (buf_addch(hb, '\0') < 0 || buf_add(hb, ptr + vs, ve - vs) < 0 ||
	    buf_addch(hb, '\0') < 0)
		return 0;
	return n;
}

const char *http_resp_header(const struct http_resp *resp, const char *name)
{
	const char *p = resp->hdrs.data, *end = p ? p + resp->hdrs.len : NULL;

	while (p && p < end) {
		const char *v = p + strlen(p) + 1;

		if (v >= end)
			break;
		if (strcmp(p, name) == 0)
			return v;
		p = v + strlen(v) + 1;
	}
	return NULL;
}

void http_resp_headers_prefix(const struct http_resp *resp, const char *prefix,
			      void (*fn)(void *arg, const char *name, const char *value),
			      void *arg)
{
	const char *p = resp->hdrs.data, *end = p ? p + resp->hdrs.len : NULL;
	size_t pl = strlen(prefix);

	while (p && p < end) {
		const char *v = p + strlen(p) + 1;

		if (v >= end)
			break;
		if (strncmp(p, prefix, pl) == 0)
			fn(arg, p, v);
		p = v + strlen(v) + 1;
	}
}

void http_resp_release(struct http_resp *resp)
{
	buf_release(&resp->body);
	buf_release(&resp->hdrs);
}

int http_status_errno(long status)
{
	if (status >= 200 && status < 400)
		return 0;
	switch (status) {
	case 400: return -EINVAL;
	case 401:
	case 403: return -EACCES;
	case 404: return -ENOENT;
	case 405: return -EPERM;
	case 409: return -EBUSY;
	case 411:
	case 413: return -EFBIG;
	case 412: return -ESTALE;
	case 416: return -EINVAL;
	case 429: return -EAGAIN;
	default: return status >= 500 ? -EIO : -EINVAL;
	}
}

static int curl_errno(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT: return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT: return -ETIMEDOUT;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY: return -EHOSTUNREACH;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE: return -EPROTO;
	case CURLE_OUT_OF_MEMORY: return -ENOMEM;
	default: return -EIO;
	}
}

static int curl_retryable(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_WEIRD_SERVER_REPLY:
		return 1;
	default:
		return 0;
	}
}

static int status_retryable(const struct http_resp *resp)
{
	switch (resp->status) {
	case 429: case 500: case 502: case 503: case 504:
		return 1;
	case 400:
		return resp->body.data && strstr(resp->body.data, "<Code>RequestTimeout</Code>");
	default:
		return 0;
	}
}

static void count_method(struct http *h, const char *m)
{
	if (strcmp(m, "GET") == 0)
		atomic_fetch_add(&h->n_get, 1);
	else if (strcmp(m, "HEAD") == 0)
		atomic_fetch_add(&h->n_head, 1);
	else if (strcmp(m, "PUT") == 0)
		atomic_fetch_add(&h->n_put, 1);
	else if (strcmp(m, "POST") == 0)
		atomic_fetch_add(&h->n_post, 1);
	else if (strcmp(m, "DELETE") == 0)
		atomic_fetch_add(&h->n_del, 1);
	else
		atomic_fetch_add(&h->n_other, 1);
}

/* Build the header list for one attempt: fixed headers, signed headers. */
static int build_headers(const struct http_req *req, struct curl_slist **out)
{
	struct curl_slist *l = NULL, *t;
	struct buf sig;
	int rc = 0;

	buf_init(&sig, 64 << 10);
	for (size_t i = 0; i < req->nheaders; i++) {
		t = curl_slist_append(l, req->headers[i]);
		if (!t) {
			rc = -ENOMEM;
			goto out;
		}
		l = t;
	}
	if (req->sign) {
		rc = req->sign(req->sign_arg, &sig);
		if (rc < 0)
			goto out;
		for (char *line = sig.data; line && *line;) {
			char *nl = strchr(line, '\n');

			if (nl)
				*nl = '\0';
			t = curl_slist_append(l, line);
			if (!t) {
				rc = -ENOMEM;
				goto out;
			}
			l = t;
			line = nl ? nl + 1 : line + strlen(line);
		}
	}
	/* No "Expect: 100-continue": it costs a round trip per PUT. */
	t = curl_slist_append(l, "Expect:");
	if (!t)
		rc = -ENOMEM;
	else
		l = t;
out:
	buf_release(&sig);
	if (rc < 0) {
		curl_slist_free_all(l);
		l = NULL;
	}
	*out = l;
	return rc;
}

static void setup_easy(struct http *h, CURL *e, struct xfer *x, struct curl_slist *hl,
		       char *errbuf)
{
	const struct http_req *req = x->req;
	long timeout_s = req->timeout_s > 0 ? req->timeout_s : h->conf.timeout_s;

	curl_easy_reset(e);
	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms > 0
							       ? req->connect_timeout_ms
							       : h->conf.connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, timeout_s);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	if (h->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_file);
	if (h->conf.insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	if (strcmp(req->method, "HEAD") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else if (strcmp(req->method, "PUT") == 0 || strcmp(req->method, "POST") == 0) {
		curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_len);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
		curl_easy_setopt(e, CURLOPT_READDATA, x);
		curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_cb);
		curl_easy_setopt(e, CURLOPT_SEEKDATA, x);
		if (strcmp(req->method, "POST") == 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "POST");
	} else if (strcmp(req->method, "GET") != 0) {
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
	}
}

static void backoff_sleep(const struct http *h, int attempt)
{
	long cap = h->conf.retry_base_ms << (attempt < 10 ? attempt : 10);
	unsigned int seed = (unsigned int)(time(NULL) ^ (uintptr_t)&cap ^ (unsigned)attempt);
	long ms;
	struct timespec ts;

	if (cap > HTTP_MAX_BACKOFF_MS)
		cap = HTTP_MAX_BACKOFF_MS;
	ms = cap / 2 + rand_r(&seed) % (cap / 2 + 1); /* jitter in [cap/2, cap] */
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* One attempt.  Returns 0 with resp->status set, or -errno (transport). */
static int attempt_once(struct http *h, struct conn *c, const struct http_req *req,
			struct http_resp *resp, int *retry)
{
	struct curl_slist *hl = NULL;
	struct xfer x = { .req = req, .resp = resp, .easy = c->easy };
	CURLcode cc;
	int rc;

	x.max_body = req->max_body ? req->max_body : (16u << 20);
	*retry = 0;
	buf_reset(&resp->body);
	buf_reset(&resp->hdrs);
	resp->sink_written = 0;
	resp->status = 0;
	rc = build_headers(req, &hl);
	if (rc < 0)
		return rc;
	c->errbuf[0] = '\0';
	setup_easy(h, c->easy, &x, hl, c->errbuf);
	count_method(h, req->method);
	cc = curl_easy_perform(c->easy);
	curl_slist_free_all(hl);
	if (cc == CURLE_OK && req->sink_kind == HTTP_SINK_FD && req->sink_check &&
	    status_is_2xx(c->easy) && sink_head_ok(&x)) {
		int r = req->sink_check(req->sink_check_arg, resp, 1);

		if (r < 0)
			x.bad = r;
	}
	if (x.bad) {
		snprintf(resp->errmsg, sizeof(resp->errmsg), "damaged answer: %s",
			 strerror(-x.bad));
		resp->status = 0;
		*retry = 1;
		return -EIO;
	}
	if (x.sink_err) {
		snprintf(resp->errmsg, sizeof(resp->errmsg), "%s", strerror(-x.sink_err));
		return x.sink_err;
	}
	if (cc != CURLE_OK) {
		snprintf(resp->errmsg, sizeof(resp->errmsg), "%s",
			 c->errbuf[0] ? c->errbuf : curl_easy_strerror(cc));
		*retry = curl_retryable(cc);
		return curl_errno(cc);
	}
	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &resp->status);
	atomic_fetch_add(&h->bytes_up, x.body_sent);
	atomic_fetch_add(&h->bytes_down, resp->sink_written + resp->body.len);
	*retry = status_is_2xx(c->easy) ? 0 : status_retryable(resp);
	return 0;
}

int http_do(struct http *h, const struct http_req *req, struct http_resp *resp)
{
	struct conn *c = NULL;
	int rc = -EIO, retry = 0, max = req->no_retry ? 0 : h->conf.max_retries;

	memset(resp, 0, sizeof(*resp));
	buf_init(&resp->body, req->max_body ? req->max_body : (16u << 20));
	buf_init(&resp->hdrs, 1 << 20);
	for (int attempt = 0; attempt <= max; attempt++) {
		if (attempt > 0) {
			atomic_fetch_add(&h->n_retries, 1);
			log_debug("retrying %s %s (attempt %d): %s", req->method, req->url,
				  attempt + 1,
				  resp->status ? "server error" : resp->errmsg);
			backoff_sleep(h, attempt);
		}
		c = conn_take(h);
		if (!c) {
			rc = -ENOMEM;
			break;
		}
		resp->attempts = attempt + 1;
		rc = attempt_once(h, c, req, resp, &retry);
		conn_give(h, c, rc < 0);
		if (!retry)
			break;
	}
	if (rc < 0 || resp->status >= 500 || resp->status == 0)
		atomic_fetch_add(&h->n_failures, 1);
	return rc;
}

void http_get_stats(struct http *h, struct http_stats *out)
{
	out->get = atomic_load(&h->n_get);
	out->head = atomic_load(&h->n_head);
	out->put = atomic_load(&h->n_put);
	out->post = atomic_load(&h->n_post);
	out->del = atomic_load(&h->n_del);
	out->other = atomic_load(&h->n_other);
	out->retries = atomic_load(&h->n_retries);
	out->failures = atomic_load(&h->n_failures);
	out->bytes_up = atomic_load(&h->bytes_up);
	out->bytes_down = atomic_load(&h->bytes_down);
}
