/*
 * cloudfront.c - the CloudFront backend: CreateInvalidation and
 * GetInvalidation (API version 2020-05-31), signed with SigV4 for service
 * "cloudfront" in us-east-1 (CloudFront's one signing region).
 *
 *   POST /2020-05-31/distribution/ID/invalidation      201 <Invalidation>
 *   GET  /2020-05-31/distribution/ID/invalidation/INV  200 <Invalidation>
 *   errors: <ErrorResponse><Error><Code>..</Code><Message>..</Message>
 *
 * Each call is one attempt (http no_retry): the retry policy - backoff,
 * waiting for in-progress invalidations, the same CallerReference - is the
 * queue's (cdn.c), which keeps it across restarts.  The signature is made
 * afresh by the http sign callback.  The payload is signed (its sha256 is
 * in the canonical request), as for every AWS service but S3.
 *
 * Owns nothing between calls; no locks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cdn_int.h"
#include "creds.h"
#include "http.h"
#include "log.h"
#include "s3xml.h"
#include "sigv4.h"

#define CF_PREFIX "/2020-05-31/distribution/"
#define CF_XMLNS "http://cloudfront.amazonaws.com/doc/2020-05-31/"
#define CF_REGION "us-east-1"
#define CF_SERVICE "cloudfront"
#define CF_CTYPE "application/xml"

struct cf_call {
	const struct cdn_api *api;
	const char *method;
	struct buf path;        /* canonical URI, as sent */
	struct buf body;
	char payload_hash[65];
};

static int xml_esc(struct buf *out, const char *s)
{
	int rc = 0;

	for (; *s && rc == 0; s++) {
		if (*s == '&')
			rc = buf_addstr(out, "&amp;");
		else if (*s == '<')
			rc = buf_addstr(out, "&lt;");
		else if (*s == '>')
			rc = buf_addstr(out, "&gt;");
		else
			rc = buf_addch(out, *s);
	}
	return rc;
}

/* The members in the order of the API model (botocore sends them so). */
int cdn_cloudfront_body(struct buf *out, const char *ref, char *const *items, size_t n)
{
	int rc;

	if (!n || !ref || !*ref)
		return -EINVAL;
	rc = buf_addf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
			   "<InvalidationBatch xmlns=\"%s\"><Paths><Quantity>%zu</Quantity><Items>",
		      CF_XMLNS, n);
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = buf_addstr(out, "<Path>");
		if (rc == 0)
			rc = xml_esc(out, items[i]);
		if (rc == 0)
			rc = buf_addstr(out, "</Path>");
	}
	if (rc == 0)
		rc = buf_addstr(out, "</Items></Paths><CallerReference>");
	if (rc == 0)
		rc = xml_esc(out, ref);
	if (rc == 0)
		rc = buf_addstr(out, "</CallerReference></InvalidationBatch>");
	return rc;
}

static int code_in(const char *code, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(code, *list) == 0)
			return 1;
	return 0;
}

enum cdn_outcome cdn_cloudfront_classify(long status, const char *code)
{
	static const char *const retry[] = { "Throttling", "ThrottlingException",
					     "RequestLimitExceeded", "ServiceUnavailable",
					     "InternalError", "InternalFailure", NULL };
	static const char *const invalid[] = { "InvalidArgument", "MissingBody",
					       "InconsistentQuantities", "BatchTooLarge",
					       "MalformedInput", "MalformedXML",
					       "InvalidRelativePath", NULL };

	if (!code)
		code = "";
	if (strcmp(code, "TooManyInvalidationsInProgress") == 0)
		return CDN_BUSY;
	if (strcmp(code, "InvalidationBatchAlreadyExists") == 0)
		return CDN_REF_CLASH;
	if (status == 429 || status >= 500 || code_in(code, retry))
		return CDN_RETRY;
	if (status == 413 || code_in(code, invalid))
		return CDN_INVALID;
	return CDN_DENIED; /* 401, 403, 404 and the unknown: keep and retry slowly */
}

/* Runs before the attempt: date, token, Authorization. */
static int cf_sign(void *arg, struct buf *out)
{
	struct cf_call *c = arg;
	struct creds_value cv;
	struct sigv4_kv h[4];
	struct sigv4_request req;
	struct sigv4_scope sc;
	struct sigv4_creds cr;
	char date[17];
	struct buf auth;
	size_t n = 0;
	int rc;

	if (!c->api->creds)
		return -EKEYEXPIRED;
	rc = creds_get(c->api->creds, &cv);
	if (rc < 0)
		return rc;
	sigv4_amz_date(time(NULL), date);
	if (c->body.len)
		h[n++] = (struct sigv4_kv){ "content-type", CF_CTYPE };
	h[n++] = (struct sigv4_kv){ "host", c->api->host };
	h[n++] = (struct sigv4_kv){ "x-amz-date", date };
	if (cv.session_token[0])
		h[n++] = (struct sigv4_kv){ "x-amz-security-token", cv.session_token };
	req = (struct sigv4_request){ c->method, buf_str(&c->path), NULL, 0, h, n,
				      c->payload_hash };
	sc = (struct sigv4_scope){ date, CF_REGION, CF_SERVICE };
	cr = (struct sigv4_creds){ cv.access_key, cv.secret_key, cv.session_token };
	buf_init(&auth, 8 << 10);
	rc = sigv4_authorization(&auth, &req, &sc, &cr);
	if (rc == 0)
		rc = buf_addf(out, "x-amz-date: %s\nAuthorization: %s\n", date, buf_str(&auth));
	if (rc == 0 && cv.session_token[0])
		rc = buf_addf(out, "x-amz-security-token: %s\n", cv.session_token);
	buf_release(&auth);
	explicit_bzero(&cv, sizeof(cv));
	return rc;
}

static int call_init(struct cf_call *c, const struct cdn_api *api, const char *method,
		     const char *inv_id)
{
	int rc;

	memset(c, 0, sizeof(*c));
	c->api = api;
	c->method = method;
	buf_init(&c->path, 8192);
	buf_init(&c->body, 0);
	rc = buf_addf(&c->path, "%s" CF_PREFIX, api->base_path);
	if (rc == 0)
		rc = sigv4_uri_encode(&c->path, api->id, 0);
	if (rc == 0)
		rc = buf_addstr(&c->path, "/invalidation");
	if (rc == 0 && inv_id) {
		rc = buf_addch(&c->path, '/');
		if (rc == 0)
			rc = sigv4_uri_encode(&c->path, inv_id, 0);
	}
	return rc;
}

static void call_release(struct cf_call *c)
{
	buf_release(&c->path);
	buf_release(&c->body);
}

static int call_do(struct cf_call *c, struct http_resp *resp)
{
	const char *hdrs[2];
	struct buf url, host;
	struct http_req hr = { 0 };
	size_t nh = 0;
	int rc;

	buf_init(&url, 16384);
	buf_init(&host, 1024);
	sigv4_sha256_hex(c->body.data ? c->body.data : "", c->body.len, c->payload_hash);
	rc = buf_addf(&url, "%s://%s%s", c->api->scheme, c->api->host, buf_str(&c->path));
	if (rc == 0)
		rc = buf_addf(&host, "Host: %s", c->api->host);
	if (rc < 0) {
		memset(resp, 0, sizeof(*resp));
		goto out;
	}
	hdrs[nh++] = buf_str(&host);
	if (c->body.len)
		hdrs[nh++] = "Content-Type: " CF_CTYPE;
	hr.method = c->method;
	hr.url = buf_str(&url);
	hr.headers = hdrs;
	hr.nheaders = nh;
	hr.sign = cf_sign;
	hr.sign_arg = c;
	hr.body_kind = c->body.len ? HTTP_BODY_MEM : HTTP_BODY_NONE;
	hr.mem = c->body.data;
	hr.body_len = c->body.len;
	hr.max_body = 1 << 20;
	hr.no_retry = 1;
	hr.timeout_s = c->api->timeout_s;
	rc = http_do(c->api->http, &hr, resp);
out:
	buf_release(&url);
	buf_release(&host);
	return rc;
}

/* A transport or signing failure: no answer. */
static void judge_local(int rc, const struct http_resp *resp, struct cdn_result *res)
{
	if (rc == -EKEYEXPIRED || rc == -EACCES || rc == -ENOKEY) {
		res->outcome = CDN_DENIED;
		res->err = -EACCES;
		snprintf(res->msg, sizeof(res->msg), "no usable AWS credentials: %s",
			 strerror(-rc));
		return;
	}
	res->outcome = CDN_RETRY;
	res->err = rc;
	snprintf(res->msg, sizeof(res->msg), "%s",
		 resp->errmsg[0] ? resp->errmsg : strerror(-rc));
}

static double retry_after(const struct http_resp *resp)
{
	const char *v = http_resp_header(resp, "retry-after");
	char *end;
	double s;

	if (!v)
		return 0;
	s = strtod(v, &end);
	return end != v && s > 0 && s < 86400 ? s : 0;
}

/* Drop a trailing period: the message is followed by "; ..." in logs. */
static void trim_msg(char *m)
{
	size_t n = strlen(m);

	while (n && (m[n - 1] == '.' || m[n - 1] == ' '))
		m[--n] = '\0';
}

/* An error answer: <ErrorResponse><Error><Code>/<Message>. */
static void judge_error(const struct http_resp *resp, struct cdn_result *res)
{
	char *code = NULL, *msg = NULL;

	if (!resp->body.len ||
	    s3xml_parse_error(resp->body.data, resp->body.len, &code, &msg) < 0)
		code = msg = NULL;
	res->outcome = cdn_cloudfront_classify(resp->status, code);
	res->retry_after = retry_after(resp);
	res->err = res->outcome == CDN_DENIED ? (resp->status == 404 ? -ENOENT : -EACCES)
					      : http_status_errno(resp->status);
	if (res->err == 0)
		res->err = -EIO;
	snprintf(res->msg, sizeof(res->msg), "HTTP %ld%s%s%s%s", resp->status,
		 code && *code ? " " : "", code ? code : "", msg && *msg ? ": " : "",
		 msg ? msg : "");
	trim_msg(res->msg);
	free(code);
	free(msg);
}

/* A 2xx with an <Invalidation>: its Id and Status.  For a create whose
 * body cannot be read, the invalidation exists all the same: the Id comes
 * from Location. */
static void judge_ok(const struct http_resp *resp, int created, struct cdn_result *res)
{
	char *id = NULL, *st = NULL;
	const char *loc = http_resp_header(resp, "location"), *slash;

	if (s3xml_parse_invalidation(resp->body.data, resp->body.len, &id, &st) == 0) {
		res->outcome = CDN_OK;
		snprintf(res->id, sizeof(res->id), "%s", id);
		snprintf(res->status, sizeof(res->status), "%s", st);
	} else if (created) {
		slash = loc ? strrchr(loc, '/') : NULL;
		res->outcome = CDN_OK;
		snprintf(res->id, sizeof(res->id), "%s", slash && slash[1] ? slash + 1 : "-");
		snprintf(res->status, sizeof(res->status), "InProgress");
	} else {
		res->outcome = CDN_RETRY;
		res->err = -EBADMSG;
		snprintf(res->msg, sizeof(res->msg), "HTTP %ld with an unreadable body",
			 resp->status);
	}
	free(id);
	free(st);
}

static void judge(int rc, const struct http_resp *resp, int created, struct cdn_result *res)
{
	res->http_status = resp->status;
	if (rc < 0)
		judge_local(rc, resp, res);
	else if (resp->status >= 200 && resp->status < 300)
		judge_ok(resp, created, res);
	else
		judge_error(resp, res);
}

int cdn_cloudfront_send(const struct cdn_api *api, const struct cdn_batch *b,
			struct cdn_result *res)
{
	struct cf_call c;
	struct http_resp resp;
	int rc;

	memset(res, 0, sizeof(*res));
	memset(&resp, 0, sizeof(resp));
	rc = call_init(&c, api, "POST", NULL);
	if (rc == 0)
		rc = cdn_cloudfront_body(&c.body, b->ref, b->items, b->nitems);
	if (rc == 0)
		rc = call_do(&c, &resp);
	if (rc == -ENOMEM || rc == -E2BIG) {
		res->outcome = CDN_RETRY;
		res->err = rc;
		snprintf(res->msg, sizeof(res->msg), "%s", strerror(-rc));
	} else {
		judge(rc, &resp, 1, res);
	}
	http_resp_release(&resp);
	call_release(&c);
	return rc == -ENOMEM ? rc : 0;
}

int cdn_cloudfront_get(const struct cdn_api *api, const char *id, struct cdn_result *res)
{
	struct cf_call c;
	struct http_resp resp;
	int rc;

	memset(res, 0, sizeof(*res));
	memset(&resp, 0, sizeof(resp));
	rc = call_init(&c, api, "GET", id);
	if (rc == 0)
		rc = call_do(&c, &resp);
	if (rc == -ENOMEM || rc == -E2BIG) {
		res->outcome = CDN_RETRY;
		res->err = rc;
		snprintf(res->msg, sizeof(res->msg), "%s", strerror(-rc));
	} else {
		judge(rc, &resp, 0, res);
	}
	http_resp_release(&resp);
	call_release(&c);
	return rc == -ENOMEM ? rc : 0;
}
