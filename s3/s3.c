/*
 * s3.c - the bucket API (include/s3.h): builds, signs and sends S3 requests.
 *
 * Owns: the parsed endpoint (scheme, host, base URL) and borrowed pointers to
 * the shared http pool and credentials.  Immutable after s3_new, so no lock.
 *
 * Every request goes through one path: call_init -> (add query / headers)
 * -> call_send, which builds the URL from the canonical query (what is
 * signed is exactly what is sent) and signs afresh on every attempt via
 * sign_cb.  Bodies are sent with UNSIGNED-PAYLOAD plus a signed Content-MD5,
 * so a file is read once for its digest and once for sending, never held in
 * memory.
 *
 * GET answers are checked before they reach the caller's file (status,
 * Content-Range, Content-Length, ETag against If-Match) and after (the MD5
 * of a whole object whose ETag is one); a damaged answer is retried by
 * http_do like a broken transfer, then -EIO.  A retried
 * CreateMultipartUpload aborts the uploads its lost answers may have made.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "creds.h"
#include "http.h"
#include "log.h"
#include "s3.h"

#define CALL_MAX_Q 8
#define CALL_MAX_H 48
/* Seconds the server's clock may be behind ours when telling the uploads a
 * retried CreateMultipartUpload made from older ones. */
#define MPU_CLOCK_SLACK 60

struct s3 {
	struct http *http;
	struct creds *creds;
	char *bucket;
	char *region;
	char *scheme;  /* "http" or "https" */
	char *host;    /* host[:port] as signed and sent */
	int path_style;
	/* the last transport error's text ("SSL certificate problem: ..."),
	 * for the one-line start-up error; racy by design, read only there */
	char last_err[256];
};

struct s3_call {
	struct s3 *s;
	const char *method;
	const char *key;            /* for messages */
	struct buf path;            /* encoded canonical URI */
	struct sigv4_kv q[CALL_MAX_Q];
	size_t nq;
	struct sigv4_kv h[CALL_MAX_H];
	size_t nh;
	char *lines[CALL_MAX_H];    /* "Name: value" for http */
	const char *payload_hash;
	struct buf url;
};

static char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int parse_endpoint(struct s3 *s, const char *ep)
{
	const char *p = strstr(ep, "://");
	size_t hl;

	if (!p)
		return -EINVAL;
	s->scheme = strndup(ep, (size_t)(p - ep));
	p += 3;
	hl = strcspn(p, "/");
	if (hl == 0 || (p[hl] == '/' && p[hl + 1] != '\0'))
		return -EINVAL; /* endpoints carry no path */
	s->host = strndup(p, hl);
	if (!s->scheme || !s->host)
		return -ENOMEM;
	if (strcmp(s->scheme, "http") != 0 && strcmp(s->scheme, "https") != 0)
		return -EINVAL;
	return 0;
}

int s3_new(struct s3 **out, const struct s3_conf *conf, struct http *http, struct creds *creds)
{
	struct s3 *s = calloc(1, sizeof(*s));
	char def_ep[256];
	int rc = -ENOMEM;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->http = http;
	s->creds = creds;
	s->bucket = xstrdup(conf->bucket);
	s->region = xstrdup(conf->region ? conf->region : "us-east-1");
	if (!s->bucket || !s->region)
		goto out;
	snprintf(def_ep, sizeof(def_ep), "https://s3.%s.amazonaws.com", s->region);
	rc = parse_endpoint(s, conf->endpoint ? conf->endpoint : def_ep);
	if (rc < 0)
		goto out;
	s->path_style = conf->path_style;
	if (s->path_style < 0) /* virtual-hosted on AWS, path style for custom endpoints */
		s->path_style = !strstr(s->host, "amazonaws.com") || strchr(s->bucket, '.');
	if (!s->path_style) {
		char *vh = NULL;

		if (asprintf(&vh, "%s.%s", s->bucket, s->host) < 0) {
			rc = -ENOMEM;
			goto out;
		}
		free(s->host);
		s->host = vh;
	}
	*out = s;
	s = NULL;
	rc = 0;
out:
	s3_free(s);
	return rc;
}

void s3_free(struct s3 *s)
{
	if (!s)
		return;
	free(s->bucket);
	free(s->region);
	free(s->scheme);
	free(s->host);
	free(s);
}

const char *s3_bucket(const struct s3 *s)
{
	return s->bucket;
}

/* --- one request --------------------------------------------------------- */

static int call_init(struct s3_call *c, struct s3 *s, const char *method, const char *key)
{
	int rc;

	memset(c, 0, sizeof(*c));
	c->s = s;
	c->method = method;
	c->key = key ? key : "";
	c->payload_hash = SIGV4_EMPTY_SHA256;
	buf_init(&c->path, 16 << 10);
	buf_init(&c->url, 32 << 10);
	rc = buf_addch(&c->path, '/');
	if (rc == 0 && s->path_style) {
		rc = sigv4_uri_encode(&c->path, s->bucket, 0);
		if (rc == 0 && key)
			rc = buf_addch(&c->path, '/');
	}
	if (rc == 0 && key)
		rc = sigv4_uri_encode(&c->path, key, 1);
	return rc;
}

static void call_release(struct s3_call *c)
{
	buf_release(&c->path);
	buf_release(&c->url);
	for (size_t i = 0; i < c->nh; i++)
		free(c->lines[i]);
}

static void call_query(struct s3_call *c, const char *name, const char *value)
{
	if (c->nq < CALL_MAX_Q)
		c->q[c->nq++] = (struct sigv4_kv){ name, value ? value : "" };
}

/* Add a signed header; name and value must outlive the call. */
static int call_header(struct s3_call *c, const char *name, const char *value)
{
	if (c->nh >= CALL_MAX_H)
		return -E2BIG;
	if (asprintf(&c->lines[c->nh], "%s: %s", name, value) < 0) {
		c->lines[c->nh] = NULL;
		return -ENOMEM;
	}
	c->h[c->nh++] = (struct sigv4_kv){ name, value };
	return 0;
}

static int call_headers(struct s3_call *c, const struct s3_hdrs *hdrs)
{
	int rc = 0;

	for (size_t i = 0; hdrs && i < hdrs->n && rc == 0; i++)
		rc = call_header(c, hdrs->h[i].name, hdrs->h[i].value);
	return rc;
}

/* Runs before every attempt: date, payload hash, token, Authorization. */
static int sign_cb(void *arg, struct buf *out)
{
	struct s3_call *c = arg;
	struct creds_value cv;
	struct sigv4_kv h[CALL_MAX_H + 3];
	char date[17];
	struct sigv4_request req;
	struct sigv4_scope sc;
	struct sigv4_creds cr;
	struct buf auth;
	size_t n = 0;
	int rc;

	rc = creds_get(c->s->creds, &cv);
	if (rc < 0)
		return rc;
	sigv4_amz_date(time(NULL), date);
	for (size_t i = 0; i < c->nh; i++)
		h[n++] = c->h[i];
	h[n++] = (struct sigv4_kv){ "x-amz-date", date };
	h[n++] = (struct sigv4_kv){ "x-amz-content-sha256", c->payload_hash };
	if (cv.session_token[0])
		h[n++] = (struct sigv4_kv){ "x-amz-security-token", cv.session_token };
	req = (struct sigv4_request){ c->method, buf_str(&c->path), c->q, c->nq, h, n,
				      c->payload_hash };
	sc = (struct sigv4_scope){ date, c->s->region, "s3" };
	cr = (struct sigv4_creds){ cv.access_key, cv.secret_key, cv.session_token };
	buf_init(&auth, 8 << 10);
	rc = sigv4_authorization(&auth, &req, &sc, &cr);
	if (rc == 0)
		rc = buf_addf(out, "x-amz-date: %s\nx-amz-content-sha256: %s\nAuthorization: %s\n",
			      date, c->payload_hash, buf_str(&auth));
	if (rc == 0 && cv.session_token[0])
		rc = buf_addf(out, "x-amz-security-token: %s\n", cv.session_token);
	buf_release(&auth);
	explicit_bzero(&cv, sizeof(cv));
	return rc;
}

/* Build the URL, send with retries.  hr carries body and sink settings. */
static int call_send(struct s3_call *c, struct http_req *hr, struct http_resp *resp)
{
	int rc;

	rc = call_header(c, "host", c->s->host);
	if (rc == 0)
		rc = buf_addf(&c->url, "%s://%s%s", c->s->scheme, c->s->host, buf_str(&c->path));
	if (rc == 0 && c->nq) {
		rc = buf_addch(&c->url, '?');
		if (rc == 0)
			rc = sigv4_canonical_query(&c->url, c->q, c->nq);
	}
	if (rc < 0) {
		memset(resp, 0, sizeof(*resp));
		return rc;
	}
	hr->method = c->method;
	hr->url = buf_str(&c->url);
	hr->headers = (const char *const *)c->lines;
	hr->nheaders = c->nh;
	hr->sign = sign_cb;
	hr->sign_arg = c;
	return http_do(c->s->http, hr, resp);
}

/* Map an answer to 0 or -errno; log failures at debug level. */
static int call_result(struct s3_call *c, int rc, const struct http_resp *resp)
{
	char *code = NULL, *msg = NULL;

	if (rc < 0) {
		log_debug("%s '%s': %s", c->method, c->key, resp->errmsg);
		snprintf(c->s->last_err, sizeof(c->s->last_err), "%s", resp->errmsg);
		return rc;
	}
	if (resp->status >= 200 && resp->status < 300)
		return 0;
	if (resp->body.len && s3xml_parse_error(resp->body.data, resp->body.len, &code, &msg) < 0)
		code = msg = NULL;
	rc = s3_error_errno(code, resp->status);
	log_debug("%s '%s': HTTP %ld %s %s", c->method, c->key, resp->status, code ? code : "",
		  msg ? msg : "");
	free(code);
	free(msg);
	return rc;
}

/* --- object headers ------------------------------------------------------ */

static void add_meta(void *arg, const char *name, const char *value)
{
	struct s3_obj *o = arg;
	struct sigv4_kv *m = realloc(o->meta, (o->nmeta + 1) * sizeof(*m));

	if (!m)
		return;
	o->meta = m;
	m[o->nmeta].name = strdup(name + strlen("x-amz-meta-"));
	m[o->nmeta].value = strdup(value);
	if (!m[o->nmeta].name || !m[o->nmeta].value) {
		free((char *)m[o->nmeta].name);
		free((char *)m[o->nmeta].value);
		return;
	}
	o->nmeta++;
}

static void obj_from_resp(struct s3_obj *o, const struct http_resp *resp)
{
	const char *v;

	memset(o, 0, sizeof(*o));
	v = http_resp_header(resp, "content-range"); /* "bytes a-b/TOTAL" */
	if (v && strchr(v, '/'))
		o->size = strtoull(strchr(v, '/') + 1, NULL, 10);
	else if ((v = http_resp_header(resp, "content-length")))
		o->size = strtoull(v, NULL, 10);
	if ((v = http_resp_header(resp, "etag"))) {
		if (*v == '"')
			v++;
		snprintf(o->etag, sizeof(o->etag), "%.*s", (int)strcspn(v, "\""), v);
	}
	if ((v = http_resp_header(resp, "last-modified")) && s3_parse_time(v, &o->mtime) < 0)
		o->mtime.tv_sec = 0;
	o->content_type = xstrdup(http_resp_header(resp, "content-type"));
	o->content_encoding = xstrdup(http_resp_header(resp, "content-encoding"));
	o->cache_control = xstrdup(http_resp_header(resp, "cache-control"));
	o->content_disposition = xstrdup(http_resp_header(resp, "content-disposition"));
	o->storage_class = xstrdup(http_resp_header(resp, "x-amz-storage-class"));
	http_resp_headers_prefix(resp, "x-amz-meta-", add_meta, o);
}

void s3_obj_release(struct s3_obj *o)
{
	free(o->content_type);
	free(o->content_encoding);
	free(o->cache_control);
	free(o->content_disposition);
	free(o->storage_class);
	for (size_t i = 0; i < o->nmeta; i++) {
		free((char *)o->meta[i].name);
		free((char *)o->meta[i].value);
	}
	free(o->meta);
	memset(o, 0, sizeof(*o));
}

const char *s3_obj_meta(const struct s3_obj *o, const char *name)
{
	for (size_t i = 0; i < o->nmeta; i++)
		if (strcasecmp(o->meta[i].name, name) == 0)
			return o->meta[i].value;
	return NULL;
}

/* --- requests ------------------------------------------------------------ */

int s3_check_bucket(struct s3 *s, struct buf *err)
{
	struct s3_list_page page;
	int rc = s3_list(s, "", "/", NULL, 1, &page);

	s3xml_list_release(&page);
	if (rc == 0)
		return 0;
	switch (rc) {
	case -ENOENT:
		rc = buf_addf(err, "bucket '%s' does not exist", s->bucket) ?: rc;
		break;
	case -EACCES:
		rc = buf_addf(err, "access to bucket '%s' denied (check the credentials)",
			      s->bucket) ?: rc;
		break;
	default:
		rc = buf_addf(err, "cannot reach bucket '%s' at %s://%s: %s", s->bucket,
			      s->scheme, s->host,
			      s->last_err[0] ? s->last_err : strerror(-rc)) ?: rc;
	}
	return rc;
}

int s3_list(struct s3 *s, const char *prefix, const char *delimiter, const char *token,
	    int max_keys, struct s3_list_page *out)
{
	struct s3_call c;
	struct http_req hr = { 0 };
	struct http_resp resp;
	char mk[16];
	int rc;

	memset(out, 0, sizeof(*out));
	rc = call_init(&c, s, "GET", NULL);
	if (rc < 0)
		goto out_nosend;
	snprintf(mk, sizeof(mk), "%d", max_keys > 0 ? max_keys : 1000);
	call_query(&c, "list-type", "2");
	call_query(&c, "encoding-type", "url");
	call_query(&c, "max-keys", mk);
	if (prefix && *prefix)
		call_query(&c, "prefix", prefix);
	if (delimiter)
		call_query(&c, "delimiter", delimiter);
	if (token)
		call_query(&c, "continuation-token", token);
	c.key = prefix;
	rc = call_send(&c, &hr, &resp);
	rc = call_result(&c, rc, &resp);
	if (rc == 0)
		rc = s3xml_parse_list(resp.body.data, resp.body.len, out);
	http_resp_release(&resp);
out_nosend:
	call_release(&c);
	return rc;
}

int s3_head(struct s3 *s, const char *key, struct s3_obj *out)
{
	struct s3_call c;
	struct http_req hr = { 0 };
	struct http_resp resp;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = call_init(&c, s, "HEAD", key);
	if (rc == 0) {
		rc = call_send(&c, &hr, &resp);
		rc = call_result(&c, rc, &resp);
		if (rc == 0)
			obj_from_resp(out, &resp);
		http_resp_release(&resp);
	}
	call_release(&c);
	return rc;
}

/* md5(fd[off, off+len)) into md. */
static int md5_fd(int fd, uint64_t off, uint64_t len, unsigned char md[16])
{
	unsigned char chunk[65536];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int rc = 0;

	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_md5(), NULL)) {
		rc = -ENOMEM;
		goto out;
	}
	while (len > 0) {
		size_t want = len > sizeof(chunk) ? sizeof(chunk) : (size_t)len;
		ssize_t n = pread(fd, chunk, want, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO; /* the file shrank under us */
			goto out;
		}
		EVP_DigestUpdate(ctx, chunk, (size_t)n);
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	EVP_DigestFinal_ex(ctx, md, NULL);
out:
	EVP_MD_CTX_free(ctx);
	return rc;
}

/* What a GET must get back, checked before its body reaches the file and
 * after (http_req.sink_check): a damaged answer is retried, never cached. */
struct get_check {
	const struct s3_get_req *g;
	const char *key;
};

/* "bytes A-B/T" -> a, b, t. */
static int parse_content_range(const char *v, uint64_t *a, uint64_t *b, uint64_t *t)
{
	unsigned long long x, y, z;
	int n = 0;

	if (!v || sscanf(v, "bytes %llu-%llu/%llu%n", &x, &y, &z, &n) < 3 || v[n] ||
	    x > y || y >= z)
		return -EBADMSG;
	*a = x;
	*b = y;
	*t = z;
	return 0;
}

/* The head: status, Content-Range and Content-Length of the range asked
 * for, and the ETag asked for (If-Match). */
static int get_check_head(const struct get_check *k, const struct http_resp *resp)
{
	const struct s3_get_req *g = k->g;
	const char *cl = http_resp_header(resp, "content-length");
	const char *et = http_resp_header(resp, "etag");
	uint64_t a = 0, b = 0, t = 0, n = 0;
	int rc = 0;

	if (g->ranged && resp->status == 206) {
		rc = parse_content_range(http_resp_header(resp, "content-range"), &a, &b, &t);
		if (rc == 0 && g->len && g->off + g->len < t)
			t = g->off + g->len; /* the end asked for, unless past the object's */
		if (rc == 0 && (a != g->off || b != t - 1))
			rc = -EBADMSG; /* another range than the one asked for */
		n = b - a + 1;
	} else if (resp->status == 200 && (!g->ranged || g->off == 0)) {
		n = cl ? strtoull(cl, NULL, 10) : 0;
		if (g->ranged && g->len && n > g->len)
			rc = -EBADMSG; /* the whole object, not the range */
	} else {
		rc = -EBADMSG;
	}
	if (rc == 0 && cl && strtoull(cl, NULL, 10) != n)
		rc = -EBADMSG;
	if (rc == 0 && g->if_match && et) {
		size_t il = strlen(g->if_match);

		et += *et == '"';
		if (strncmp(et, g->if_match, il) != 0 || (et[il] && et[il] != '"'))
			rc = -EBADMSG; /* If-Match ignored: another version */
	}
	if (rc < 0)
		log_warn("GET '%s': answer does not match the request (HTTP %ld, %s)", k->key,
			 resp->status, http_resp_header(resp, "content-range") ?: "no range");
	return rc;
}

/* A plain MD5 ETag (32 hex digits: single-part upload, no SSE-KMS/SSE-C)
 * into md; 0 when the ETag is something else. */
static int etag_md5(const struct http_resp *resp, unsigned char md[16])
{
	const char *et = http_resp_header(resp, "etag");
	const char *sse = http_resp_header(resp, "x-amz-server-side-encryption");

	if (!et || (sse && strcmp(sse, "AES256") != 0) ||
	    http_resp_header(resp, "x-amz-server-side-encryption-customer-algorithm"))
		return 0;
	et += *et == '"';
	if (strspn(et, "0123456789abcdefABCDEF") != 32 || (et[32] && et[32] != '"'))
		return 0;
	for (int i = 0; i < 16; i++) {
		unsigned int v;

		if (sscanf(et + 2 * i, "%2x", &v) != 1)
			return 0;
		md[i] = (unsigned char)v;
	}
	return 1;
}

/* After the body: the MD5 of a whole object whose ETag is one. */
static int get_check_body(const struct get_check *k, const struct http_resp *resp)
{
	unsigned char want[16], got[16];
	int rc;

	if (resp->status != 200 || k->g->ranged || !etag_md5(resp, want))
		return 0;
	rc = md5_fd(k->g->fd, k->g->fd_off, resp->sink_written, got);
	if (rc == 0 && memcmp(want, got, sizeof(got)) != 0) {
		log_warn("GET '%s': body does not match its ETag (md5): damaged on the way",
			 k->key);
		rc = -EBADMSG;
	}
	return rc;
}

static int get_check_cb(void *arg, const struct http_resp *resp, int done)
{
	return done ? get_check_body(arg, resp) : get_check_head(arg, resp);
}

int s3_get(struct s3 *s, const char *key, const struct s3_get_req *g, struct s3_obj *hdrs,
	   uint64_t *got)
{
	struct s3_call c;
	struct http_req hr = { 0 };
	struct http_resp resp;
	struct get_check chk = { g, key };
	char range[64], inm[S3_ETAG_MAX + 3], im[S3_ETAG_MAX + 3];
	int rc;

	*got = 0;
	rc = call_init(&c, s, "GET", key);
	if (rc < 0)
		goto out;
	if (g->ranged) {
		if (g->len)
			snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)g->off,
				 (unsigned long long)(g->off + g->len - 1));
		else
			snprintf(range, sizeof(range), "bytes=%llu-", (unsigned long long)g->off);
		rc = call_header(&c, "range", range);
	}
	if (rc == 0 && g->if_none_match) {
		snprintf(inm, sizeof(inm), "\"%s\"", g->if_none_match);
		rc = call_header(&c, "if-none-match", inm);
	}
	if (rc == 0 && g->if_match) {
		snprintf(im, sizeof(im), "\"%s\"", g->if_match);
		rc = call_header(&c, "if-match", im);
	}
	if (rc < 0)
		goto out;
	hr.sink_kind = HTTP_SINK_FD;
	hr.sink_fd = g->fd;
	hr.sink_off = g->fd_off;
	hr.sink_check = get_check_cb;
	hr.sink_check_arg = &chk;
	rc = call_send(&c, &hr, &resp);
	if (rc == 0 && resp.status == 304) {
		rc = 1;
	} else {
		rc = call_result(&c, rc, &resp);
		if (rc == 0) {
			const char *cl = http_resp_header(&resp, "content-length");

			*got = resp.sink_written;
			if (cl && strtoull(cl, NULL, 10) != resp.sink_written) {
				log_debug("GET '%s': short body", key);
				rc = -EIO;
			}
		}
		if (rc == -EINVAL && resp.status == 416)
			rc = 0; /* range past the end: nothing to read */
	}
	if (rc >= 0 && hdrs)
		obj_from_resp(hdrs, &resp);
	http_resp_release(&resp);
out:
	call_release(&c);
	return rc;
}

int s3_md5_hex(int fd, uint64_t off, uint64_t len, char out[33])
{
	unsigned char md[16];
	int rc = md5_fd(fd, off, len, md);

	for (int i = 0; rc == 0 && i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return rc;
}

/* base64(md5(fd[off, off+len))) into out[25]. */
static int md5_fd_b64(int fd, uint64_t off, uint64_t len, char out[25])
{
	unsigned char md[16];
	int rc = md5_fd(fd, off, len, md);

	if (rc == 0)
		EVP_EncodeBlock((unsigned char *)out, md, 16);
	return rc;
}

static void etag_from(const struct http_resp *resp, char etag_out[S3_ETAG_MAX])
{
	const char *v = http_resp_header(resp, "etag");

	if (!etag_out)
		return;
	etag_out[0] = '\0';
	if (!v)
		return;
	if (*v == '"')
		v++;
	snprintf(etag_out, S3_ETAG_MAX, "%.*s", (int)strcspn(v, "\""), v);
}

/* Send a body from fd (PUT object or part). */
static int send_body(struct s3_call *c, int fd, uint64_t off, uint64_t len,
		     char etag_out[S3_ETAG_MAX])
{
	struct http_req hr = { 0 };
	struct http_resp resp;
	char md5[25];
	int rc = 0;

	md5[0] = '\0';
	if (len > 0)
		rc = md5_fd_b64(fd, off, len, md5);
	else
		snprintf(md5, sizeof(md5), "1B2M2Y8AsgTpgAmY7PhCfg==");
	if (rc == 0)
		rc = call_header(c, "content-md5", md5);
	if (rc < 0)
		return rc;
	c->payload_hash = len ? SIGV4_UNSIGNED_PAYLOAD : SIGV4_EMPTY_SHA256;
	if (len) {
		hr.body_kind = HTTP_BODY_FD;
		hr.body_fd = fd;
		hr.body_off = off;
	}
	hr.body_len = len;
	rc = call_send(c, &hr, &resp);
	rc = call_result(c, rc, &resp);
	if (rc == 0)
		etag_from(&resp, etag_out);
	http_resp_release(&resp);
	return rc;
}

int s3_put(struct s3 *s, const char *key, const struct s3_hdrs *hdrs, int fd, uint64_t off,
	   uint64_t len, char etag_out[S3_ETAG_MAX])
{
	struct s3_call c;
	int rc = call_init(&c, s, "PUT", key);

	if (rc == 0)
		rc = call_headers(&c, hdrs);
	if (rc == 0)
		rc = send_body(&c, fd, off, len, etag_out);
	call_release(&c);
	return rc;
}

/* Requests with no body whose answer may be an XML result. */
static int simple_call(struct s3_call *c, struct http_resp *resp)
{
	struct http_req hr = { 0 };
	int rc = call_send(c, &hr, resp);

	return call_result(c, rc, resp);
}

int s3_delete(struct s3 *s, const char *key)
{
	struct s3_call c;
	struct http_resp resp;
	int rc = call_init(&c, s, "DELETE", key);

	if (rc == 0) {
		rc = simple_call(&c, &resp);
		http_resp_release(&resp);
		if (rc == -ENOENT)
			rc = 0;
	}
	call_release(&c);
	return rc;
}

/* "bucket/encoded-key" for x-amz-copy-source. */
static int copy_source(struct s3 *s, const char *src, struct buf *out)
{
	int rc = buf_addch(out, '/');

	if (rc == 0)
		rc = sigv4_uri_encode(out, s->bucket, 0);
	if (rc == 0)
		rc = buf_addch(out, '/');
	if (rc == 0)
		rc = sigv4_uri_encode(out, src, 1);
	return rc;
}

/* A result body that may hide an error under HTTP 200. */
static int result_etag(struct s3_call *c, const struct http_resp *resp,
		       char etag_out[S3_ETAG_MAX])
{
	char *etag = NULL, *code = NULL;
	int rc = s3xml_parse_result_etag(resp->body.data, resp->body.len, &etag, &code);

	if (rc == -EIO) {
		log_debug("%s '%s': error in a 200 answer: %s", c->method, c->key,
			  code ? code : "?");
		rc = s3_error_errno(code, 500);
		if (rc == 0)
			rc = -EIO;
	}
	if (rc == 0 && etag_out)
		snprintf(etag_out, S3_ETAG_MAX, "%s", etag ? etag : "");
	free(etag);
	free(code);
	return rc;
}

int s3_copy(struct s3 *s, const char *src, const char *dst, const struct s3_hdrs *hdrs,
	    char etag_out[S3_ETAG_MAX])
{
	struct s3_call c;
	struct http_resp resp;
	struct buf cs;
	int rc;

	buf_init(&cs, 8 << 10);
	rc = call_init(&c, s, "PUT", dst);
	if (rc == 0)
		rc = copy_source(s, src, &cs);
	if (rc == 0)
		rc = call_header(&c, "x-amz-copy-source", buf_str(&cs));
	if (rc == 0)
		rc = call_header(&c, "x-amz-metadata-directive", hdrs ? "REPLACE" : "COPY");
	if (rc == 0)
		rc = call_headers(&c, hdrs);
	if (rc == 0) {
		rc = simple_call(&c, &resp);
		if (rc == 0)
			rc = result_etag(&c, &resp, etag_out);
		http_resp_release(&resp);
	}
	call_release(&c);
	buf_release(&cs);
	return rc;
}

int s3_mpu_abort_since(struct s3 *s, const char *key, const char *keep, time_t since)
{
	struct s3_call c;
	struct http_resp resp;
	struct s3_upload *u = NULL;
	size_t n = 0;
	int rc = call_init(&c, s, "GET", NULL);

	call_query(&c, "uploads", "");
	call_query(&c, "prefix", key);
	c.key = key;
	if (rc == 0) {
		rc = simple_call(&c, &resp);
		if (rc == 0)
			rc = s3xml_parse_uploads(resp.body.data, resp.body.len, key, &u, &n);
		http_resp_release(&resp);
	}
	call_release(&c);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(u[i].upload_id, keep) == 0 || u[i].initiated.tv_sec < since)
			continue;
		if (s3_mpu_abort(s, key, u[i].upload_id) < 0) {
			log_warn("cannot abort the orphaned multipart upload of '%s'", key);
			rc = rc ?: -EIO;
		} else {
			log_info("aborted an orphaned multipart upload of '%s'", key);
		}
	}
	if (rc < 0)
		log_warn("cannot list the multipart uploads of '%s': %s", key, strerror(-rc));
	s3xml_uploads_release(u, n);
	return rc;
}

int s3_mpu_create(struct s3 *s, const char *key, const struct s3_hdrs *hdrs, char **upload_id)
{
	struct s3_call c;
	struct http_resp resp;
	time_t start = time(NULL) - MPU_CLOCK_SLACK;
	int rc;

	*upload_id = NULL;
	rc = call_init(&c, s, "POST", key);
	call_query(&c, "uploads", "");
	if (rc == 0)
		rc = call_headers(&c, hdrs);
	if (rc == 0) {
		rc = simple_call(&c, &resp);
		if (rc == 0)
			rc = s3xml_parse_upload_id(resp.body.data, resp.body.len, upload_id);
		if (resp.attempts > 1 || (rc < 0 && resp.status == 0))
			if (s3_mpu_abort_since(s, key, *upload_id ? *upload_id : "", start) < 0)
				log_debug("orphans of '%s' may be left", key); /* logged */
		http_resp_release(&resp);
	}
	call_release(&c);
	return rc;
}

int s3_mpu_part(struct s3 *s, const char *key, const char *upload_id, int partno, int fd,
		uint64_t off, uint64_t len, char etag_out[S3_ETAG_MAX])
{
	struct s3_call c;
	char pn[16];
	int rc = call_init(&c, s, "PUT", key);

	snprintf(pn, sizeof(pn), "%d", partno);
	call_query(&c, "partNumber", pn);
	call_query(&c, "uploadId", upload_id);
	if (rc == 0)
		rc = send_body(&c, fd, off, len, etag_out);
	call_release(&c);
	return rc;
}

int s3_mpu_part_copy(struct s3 *s, const char *src, const char *key, const char *upload_id,
		     int partno, uint64_t off, uint64_t len, char etag_out[S3_ETAG_MAX])
{
	struct s3_call c;
	struct http_resp resp;
	struct buf cs;
	char pn[16], range[64];
	int rc;

	buf_init(&cs, 8 << 10);
	rc = call_init(&c, s, "PUT", key);
	snprintf(pn, sizeof(pn), "%d", partno);
	snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)off,
		 (unsigned long long)(off + len - 1));
	call_query(&c, "partNumber", pn);
	call_query(&c, "uploadId", upload_id);
	if (rc == 0)
		rc = copy_source(s, src, &cs);
	if (rc == 0)
		rc = call_header(&c, "x-amz-copy-source", buf_str(&cs));
	if (rc == 0)
		rc = call_header(&c, "x-amz-copy-source-range", range);
	if (rc == 0) {
		rc = simple_call(&c, &resp);
		if (rc == 0)
			rc = result_etag(&c, &resp, etag_out);
		http_resp_release(&resp);
	}
	call_release(&c);
	buf_release(&cs);
	return rc;
}

/* The ETag S3 gives a multipart object: md5 of the parts' binary md5s,
 * "-" and the part count.  Computed when a server leaves it out. */
static int multipart_etag(const char *const *etags, size_t n, char out[S3_ETAG_MAX])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[16], part[16];
	int rc = 0;

	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_md5(), NULL)) {
		EVP_MD_CTX_free(ctx);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		const char *e = etags[i] + (etags[i][0] == '"');

		for (int b = 0; b < 16 && rc == 0; b++) {
			unsigned int v;

			if (sscanf(e + 2 * b, "%2x", &v) != 1)
				rc = -EBADMSG; /* a part ETag that is no md5 */
			part[b] = (unsigned char)v;
		}
		EVP_DigestUpdate(ctx, part, sizeof(part));
	}
	EVP_DigestFinal_ex(ctx, md, NULL);
	EVP_MD_CTX_free(ctx);
	if (rc < 0)
		return rc;
	for (int b = 0; b < 16; b++)
		snprintf(out + 2 * b, 3, "%02x", md[b]);
	snprintf(out + 32, S3_ETAG_MAX - 32, "-%zu", n);
	return 0;
}

int s3_mpu_complete(struct s3 *s, const char *key, const char *upload_id,
		    const char *const *etags, size_t nparts, char etag_out[S3_ETAG_MAX])
{
	struct s3_call c;
	struct http_req hr = { 0 };
	struct http_resp resp;
	struct buf body;
	char hash[65];
	int rc;

	buf_init(&body, 16 << 20);
	rc = call_init(&c, s, "POST", key);
	call_query(&c, "uploadId", upload_id);
	if (rc == 0)
		rc = s3xml_build_complete(&body, etags, nparts);
	if (rc < 0)
		goto out;
	sigv4_sha256_hex(body.data, body.len, hash);
	c.payload_hash = hash;
	hr.body_kind = HTTP_BODY_MEM;
	hr.mem = body.data;
	hr.body_len = body.len;
	rc = call_send(&c, &hr, &resp);
	rc = call_result(&c, rc, &resp);
	if (rc == 0)
		rc = result_etag(&c, &resp, etag_out);
	http_resp_release(&resp);
	if (rc == 0 && etag_out && !etag_out[0]) /* RGW answers <ETag/> */
		rc = multipart_etag(etags, nparts, etag_out);
out:
	call_release(&c);
	buf_release(&body);
	return rc;
}

int s3_mpu_abort(struct s3 *s, const char *key, const char *upload_id)
{
	struct s3_call c;
	struct http_resp resp;
	int rc = call_init(&c, s, "DELETE", key);

	call_query(&c, "uploadId", upload_id);
	if (rc == 0) {
		rc = simple_call(&c, &resp);
		http_resp_release(&resp);
	}
	call_release(&c);
	return rc;
}

int s3_object_url(struct s3 *s, const char *key, struct buf *out)
{
	struct s3_call c;
	int rc = call_init(&c, s, "GET", key);

	if (rc == 0)
		rc = buf_addf(out, "%s://%s%s", s->scheme, s->host, buf_str(&c.path));
	call_release(&c);
	return rc;
}

int s3_presign_get(struct s3 *s, const char *key, long ttl, struct buf *out)
{
	struct s3_call c;
	struct creds_value cv;
	struct sigv4_kv h[1] = { { "host", s->host } };
	struct sigv4_request req;
	struct sigv4_scope sc;
	struct sigv4_creds cr;
	char date[17];
	int rc = call_init(&c, s, "GET", key);

	if (rc == 0)
		rc = creds_get(s->creds, &cv);
	if (rc < 0)
		goto out;
	sigv4_amz_date(time(NULL), date);
	req = (struct sigv4_request){ "GET", buf_str(&c.path), NULL, 0, h, 1,
				      SIGV4_UNSIGNED_PAYLOAD };
	sc = (struct sigv4_scope){ date, s->region, "s3" };
	cr = (struct sigv4_creds){ cv.access_key, cv.secret_key, cv.session_token };
	rc = buf_addf(out, "%s://%s%s?", s->scheme, s->host, buf_str(&c.path));
	if (rc == 0)
		rc = sigv4_presign_query(out, &req, &sc, &cr, ttl);
	explicit_bzero(&cv, sizeof(cv));
out:
	call_release(&c);
	return rc;
}
