/*
 * cloudflare.c - the Cloudflare backend: POST /client/v4/zones/ZONE/purge_cache
 * with {"files":[URL...]} or {"prefixes":["host/dir/"...]}, authorised by
 * "Authorization: Bearer TOKEN" (an API token with Cache Purge permission).
 * The answer is {"success":bool,"errors":[{"code":N,"message":".."}],
 * "messages":[],"result":{"id":".."}}.
 *
 * Limits (developers.cloudflare.com/cache/how-to/purge-cache): at most 100
 * URLs per call on every plan (500 on Enterprise; 30 before 2024), at
 * most 30 prefixes per call; purge calls are rate limited per account
 * (Free: 5 a minute in a bucket of 25), answered 429 with code 971 and
 * maybe Retry-After.  Prefix purges (every plan since 2024; at most 31
 * '/' per prefix, cut in cdn_encode_path) are used for directory purges
 * only: a prefix purges everything that starts with it.
 *
 * The JSON reader below is small and strict: depth-capped, length-capped,
 * the whole document must parse.  The token never reaches the log or an
 * error message, and its header copy is wiped after the call.
 * Owns nothing between calls; no locks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdn_int.h"
#include "http.h"
#include "log.h"

#define J_MAX_DEPTH 32
#define J_MAX_LEN (1u << 20)

/* ------------------------------------------------------------ JSON reader */

struct jcur {
	const char *p, *end;
	int depth;
};

static void j_ws(struct jcur *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int j_hex4(const char *p, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char ch = p[i];

		v <<= 4;
		if (ch >= '0' && ch <= '9')
			v |= (unsigned)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			v |= (unsigned)(ch - 'a' + 10);
		else if (ch >= 'A' && ch <= 'F')
			v |= (unsigned)(ch - 'A' + 10);
		else
			return -EBADMSG;
	}
	*out = v;
	return 0;
}

/* Append code point u as UTF-8 (surrogates are replaced by '?'). */
static int j_utf8(struct buf *out, unsigned u)
{
	char b[4];
	size_t n;

	if (u >= 0xd800 && u <= 0xdfff)
		u = '?';
	if (u < 0x80) {
		b[0] = (char)u;
		n = 1;
	} else if (u < 0x800) {
		b[0] = (char)(0xc0 | (u >> 6));
		b[1] = (char)(0x80 | (u & 0x3f));
		n = 2;
	} else {
		b[0] = (char)(0xe0 | (u >> 12));
		b[1] = (char)(0x80 | ((u >> 6) & 0x3f));
		b[2] = (char)(0x80 | (u & 0x3f));
		n = 3;
	}
	return out ? buf_add(out, b, n) : 0;
}

/* A string; its decoded value appended to out (NULL: skipped). */
static int j_str(struct jcur *c, struct buf *out)
{
	static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
	int rc = 0;

	if (c->p >= c->end || *c->p != '"')
		return -EBADMSG;
	for (c->p++; rc == 0; c->p++) {
		const char *e;
		unsigned u;

		if (c->p >= c->end || (unsigned char)*c->p < 0x20)
			return -EBADMSG;
		if (*c->p == '"') {
			c->p++;
			return 0;
		}
		if (*c->p != '\\') {
			rc = out ? buf_addch(out, *c->p) : 0;
			continue;
		}
		if (++c->p >= c->end)
			return -EBADMSG;
		if (*c->p == 'u') {
			if (c->end - c->p < 5 || j_hex4(c->p + 1, &u) < 0)
				return -EBADMSG;
			c->p += 4;
			rc = j_utf8(out, u);
		} else if ((e = memchr(esc_in, *c->p, sizeof(esc_in) - 1))) {
			rc = out ? buf_addch(out, esc_out[e - esc_in]) : 0;
		} else {
			return -EBADMSG;
		}
	}
	return rc;
}

static int j_lit(struct jcur *c, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
		return -EBADMSG;
	c->p += n;
	return 0;
}

static int j_num(struct jcur *c, long *out)
{
	char tmp[64], *end;
	size_t n = 0;
	double d;

	while (c->p + n < c->end && n < sizeof(tmp) - 1 && c->p[n] &&
	       strchr("+-.eE0123456789", c->p[n]))
		n++;
	if (!n || n == sizeof(tmp) - 1)
		return -EBADMSG;
	memcpy(tmp, c->p, n);
	tmp[n] = '\0';
	d = strtod(tmp, &end);
	/* converting a double outside long's range (or NaN) is undefined */
	if (end != tmp + n || !(d > -9e18 && d < 9e18))
		return -EBADMSG;
	*out = (long)d;
	c->p += n;
	return 0;
}

static int j_skip(struct jcur *c);

/* Walk an object (open == '{') or array, calling fn for each member/element
 * with the cursor on its value; fn must consume the value.  key is the
 * member name ("" for array elements). */
static int j_each(struct jcur *c, char open, int (*fn)(struct jcur *, const char *key, void *),
		  void *arg)
{
	char close = open == '{' ? '}' : ']';
	struct buf key;
	int rc = 0, first = 1;

	if (c->p >= c->end || *c->p != open || ++c->depth > J_MAX_DEPTH)
		return -EBADMSG;
	buf_init(&key, 4096);
	for (c->p++;;) {
		j_ws(c);
		if (c->p < c->end && *c->p == close && first) {
			c->p++;
			break;
		}
		buf_reset(&key);
		if (open == '{') {
			rc = j_str(c, &key);
			j_ws(c);
			if (rc == 0 && (c->p >= c->end || *c->p++ != ':'))
				rc = -EBADMSG;
			j_ws(c);
		}
		if (rc == 0)
			rc = fn ? fn(c, buf_str(&key), arg) : j_skip(c);
		j_ws(c);
		if (rc < 0 || c->p >= c->end || (*c->p != ',' && *c->p != close)) {
			rc = rc < 0 ? rc : -EBADMSG;
			break;
		}
		first = 0;
		if (*c->p++ == close)
			break;
	}
	buf_release(&key);
	c->depth--;
	return rc;
}

static int j_skip(struct jcur *c)
{
	long n;

	j_ws(c);
	if (c->p >= c->end)
		return -EBADMSG;
	switch (*c->p) {
	case '{':
	case '[':
		return j_each(c, *c->p, NULL, NULL);
	case '"':
		return j_str(c, NULL);
	case 't':
		return j_lit(c, "true");
	case 'f':
		return j_lit(c, "false");
	case 'n':
		return j_lit(c, "null");
	default:
		return j_num(c, &n);
	}
}

/* -------------------------------------------------------------- answers */

struct answer {
	int success;       /* 1 true, 0 false or absent */
	long code;         /* of the first error, 0 none */
	int nerr;
	struct buf msg;    /* of the first error */
	struct buf id;     /* result.id */
};

static int ans_error(struct jcur *c, const char *key, void *arg)
{
	struct answer *a = arg;

	if (a->nerr == 0 && strcmp(key, "code") == 0 && c->p < c->end && *c->p != '"')
		return j_num(c, &a->code);
	if (a->nerr == 0 && strcmp(key, "message") == 0 && c->p < c->end && *c->p == '"')
		return j_str(c, &a->msg);
	return j_skip(c);
}

static int ans_errors(struct jcur *c, const char *key, void *arg)
{
	struct answer *a = arg;
	int rc;

	(void)key;
	if (c->p >= c->end || *c->p != '{')
		return j_skip(c);
	rc = j_each(c, '{', ans_error, a);
	a->nerr++;
	return rc;
}

static int ans_result(struct jcur *c, const char *key, void *arg)
{
	struct answer *a = arg;

	if (strcmp(key, "id") == 0 && c->p < c->end && *c->p == '"') {
		buf_reset(&a->id);
		return j_str(c, &a->id);
	}
	return j_skip(c);
}

static int ans_root(struct jcur *c, const char *key, void *arg)
{
	struct answer *a = arg;

	if (strcmp(key, "success") == 0) {
		if (j_lit(c, "true") == 0) {
			a->success = 1;
			return 0;
		}
		return j_skip(c);
	}
	if (strcmp(key, "errors") == 0 && c->p < c->end && *c->p == '[')
		return j_each(c, '[', ans_errors, a);
	if (strcmp(key, "result") == 0 && c->p < c->end && *c->p == '{')
		return j_each(c, '{', ans_result, a);
	return j_skip(c);
}

static enum cdn_outcome classify(long status, long code)
{
	static const long denied[] = { 10000, 10001, 9103, 9106, 9109, 6003, 6111, 7000, 7003 };

	if (status == 429 || status >= 500 || code == 971)
		return CDN_RETRY;
	for (size_t i = 0; i < ARRAY_SIZE(denied); i++)
		if (code == denied[i])
			return CDN_DENIED;
	if (status == 401 || status == 403 || status == 404)
		return CDN_DENIED;
	if (status == 400 || status == 413 || (status >= 200 && status < 300 && code))
		return CDN_INVALID;
	if (status >= 200 && status < 300)
		return CDN_RETRY; /* no readable answer: we cannot tell */
	return CDN_DENIED;
}

/* Drop a trailing period: the message is followed by "; ..." in logs. */
static void trim_msg(char *m)
{
	size_t n = strlen(m);

	while (n && (m[n - 1] == '.' || m[n - 1] == ' '))
		m[--n] = '\0';
}

void cdn_cloudflare_judge(const char *json, size_t len, long status, struct cdn_result *res)
{
	struct answer a = { 0 };
	struct jcur c = { json, json ? json + len : NULL, 0 };
	int parsed = 0;

	buf_init(&a.msg, 4096);
	buf_init(&a.id, 1024);
	res->http_status = status;
	if (json && len && len <= J_MAX_LEN) {
		j_ws(&c);
		parsed = c.p < c.end && *c.p == '{' && j_each(&c, '{', ans_root, &a) == 0;
		j_ws(&c);
		parsed = parsed && c.p == c.end;
	}
	if (parsed && status >= 200 && status < 300 && a.success) {
		res->outcome = CDN_OK;
		snprintf(res->id, sizeof(res->id), "%s", a.id.len ? buf_str(&a.id) : "-");
		snprintf(res->status, sizeof(res->status), "ok");
	} else {
		res->outcome = classify(status, parsed ? a.code : 0);
		res->err = res->outcome != CDN_DENIED ? http_status_errno(status)
			   : status == 404 || a.code == 7003 || a.code == 7000 ? -ENOENT
										: -EACCES;
		if (res->err == 0)
			res->err = -EIO;
		if (parsed && (a.code || a.msg.len))
			snprintf(res->msg, sizeof(res->msg), "HTTP %ld: %ld %s", status, a.code,
				 buf_str(&a.msg));
		else
			snprintf(res->msg, sizeof(res->msg), "HTTP %ld%s", status,
				 len ? " with a body that is not Cloudflare's JSON" : "");
		trim_msg(res->msg);
	}
	buf_release(&a.msg);
	buf_release(&a.id);
}

/* --------------------------------------------------------------- request */

int cdn_cloudflare_body(struct buf *out, enum cdn_batch_kind kind, char *const *items, size_t n)
{
	int rc;

	if (!n)
		return -EINVAL;
	rc = buf_addstr(out, kind == CDN_BATCH_PREFIXES ? "{\"prefixes\":[" : "{\"files\":[");
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (i)
			rc = buf_addch(out, ',');
		if (rc == 0)
			rc = cdn_json_str(out, items[i]);
	}
	return rc ? rc : buf_addstr(out, "]}");
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

static void judge_local(int rc, const struct http_resp *resp, struct cdn_result *res)
{
	res->outcome = CDN_RETRY;
	res->err = rc;
	snprintf(res->msg, sizeof(res->msg), "%s",
		 resp->errmsg[0] ? resp->errmsg : strerror(-rc));
}

int cdn_cloudflare_send(const struct cdn_api *api, const struct cdn_batch *b,
			struct cdn_result *res)
{
	struct buf url, auth, body;
	struct http_resp resp;
	struct http_req hr = { 0 };
	const char *hdrs[2];
	int rc;

	memset(res, 0, sizeof(*res));
	memset(&resp, 0, sizeof(resp));
	buf_init(&url, 16384);
	buf_init(&auth, 8192);
	buf_init(&body, 0);
	rc = buf_addf(&url, "%s://%s%s/client/v4/zones/%s/purge_cache", api->scheme, api->host,
		      api->base_path, api->id);
	if (rc == 0)
		rc = buf_addf(&auth, "Authorization: Bearer %s", api->token ? api->token : "");
	if (rc == 0)
		rc = cdn_cloudflare_body(&body, b->kind, b->items, b->nitems);
	if (rc == 0) {
		hdrs[0] = buf_str(&auth);
		hdrs[1] = "Content-Type: application/json";
		hr = (struct http_req){ .method = "POST", .url = buf_str(&url), .headers = hdrs,
					.nheaders = 2, .body_kind = HTTP_BODY_MEM,
					.mem = body.data, .body_len = body.len,
					.max_body = 1 << 20, .no_retry = 1,
					.timeout_s = api->timeout_s };
		rc = http_do(api->http, &hr, &resp);
	}
	if (rc < 0) {
		judge_local(rc, &resp, res);
	} else {
		cdn_cloudflare_judge(resp.body.data, resp.body.len, resp.status, res);
		res->retry_after = retry_after(&resp);
	}
	if (auth.data)
		explicit_bzero(auth.data, auth.len);
	buf_release(&auth);
	buf_release(&url);
	buf_release(&body);
	http_resp_release(&resp);
	return rc == -ENOMEM ? rc : 0;
}
