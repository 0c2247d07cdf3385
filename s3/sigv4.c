/*
 * sigv4.c - AWS Signature Version 4 (see include/sigv4.h).
 *
 * Purpose: the signer as a chain of pure stages, each callable and tested on
 * its own: canonical query / headers -> canonical request -> string to sign
 * -> signing key -> signature -> Authorization value or presigned query.
 * SHA-256 and HMAC come from OpenSSL 3's one-shot, non-deprecated
 * EVP_Digest() and HMAC().
 *
 * Owns: nothing that outlives a call.  Temporaries (sorted views of the
 * headers, the encoded query pairs, the intermediate strings) are freed
 * before return.  Secret-derived bytes - "AWS4" + secret and every step of
 * the key chain - are wiped with OPENSSL_cleanse before they are freed or go
 * out of scope.  The secret is never logged or copied into an output.
 *
 * Invariants: a public function that fails releases the caller's output buf
 * (buf.h's rule), so callers never see half a value.  What is signed is what
 * is sent: the canonical query returned here is the wire query, and paths
 * are never re-encoded or normalised (S3 semantics).
 *
 * Locking: none; no globals.  Every function is reentrant.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sigv4.h"

#define SIGV4_ALGO "AWS4-HMAC-SHA256"
#define SIGV4_TERM "aws4_request"
#define SIGV4_MAX_EXPIRES 604800L /* S3 refuses presigned URLs valid > 7 days */

/* ---- bytes and hashes ---------------------------------------------------- */

static const char hex_lower[] = "0123456789abcdef";
static const char hex_upper[] = "0123456789ABCDEF";

static void to_hex(const unsigned char *p, size_t n, char *out)
{
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = hex_lower[p[i] >> 4];
		out[2 * i + 1] = hex_lower[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static int sha256_raw(const void *data, size_t len, unsigned char md[32])
{
	unsigned int mdlen = 0;

	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
		return -ENOMEM;
	return 0;
}

static int hmac_raw(const void *key, size_t keylen, const void *msg, size_t msglen,
		    unsigned char md[32])
{
	unsigned int mdlen = 0;

	if (keylen > INT_MAX)
		return -EINVAL;
	if (!HMAC(EVP_sha256(), key, (int)keylen, msg, msglen, md, &mdlen) || mdlen != 32)
		return -ENOMEM;
	return 0;
}

static int hmac_str(const unsigned char key[32], const char *msg, unsigned char md[32])
{
	return hmac_raw(key, 32, msg, strlen(msg), md);
}

void sigv4_sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char md[32];

	if (sha256_raw(data, len, md) < 0) {
		hex[0] = '\0';
		return;
	}
	to_hex(md, sizeof(md), hex);
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date8), region), service),
 * "aws4_request").  "AWS4" + secret is built in one exact allocation so no
 * realloc leaves a stray copy of the secret behind. */
static int derive_key(const char *secret, const char *date8, const char *region,
		      const char *service, unsigned char key[32])
{
	size_t slen = strlen(secret), klen;
	unsigned char t[32];
	char *k0 = NULL;
	int rc;

	rc = size_add(slen, 4, &klen);
	if (rc < 0)
		goto out;
	k0 = malloc(klen);
	if (!k0) {
		rc = -ENOMEM;
		goto out;
	}
	memcpy(k0, "AWS4", 4);
	memcpy(k0 + 4, secret, slen);
	rc = hmac_raw(k0, klen, date8, strlen(date8), t);
	if (rc == 0)
		rc = hmac_str(t, region, key);
	if (rc == 0)
		rc = hmac_str(key, service, t);
	if (rc == 0)
		rc = hmac_str(t, SIGV4_TERM, key);
out:
	if (k0)
		OPENSSL_cleanse(k0, klen);
	free(k0);
	OPENSSL_cleanse(t, sizeof(t));
	if (rc < 0)
		OPENSSL_cleanse(key, 32);
	return rc;
}

void sigv4_signing_key(const char *secret, const char *date8, const char *region,
		       const char *service, unsigned char key[32])
{
	if (derive_key(secret, date8, region, service, key) < 0)
		memset(key, 0, 32);
}

static int signature_hex(const unsigned char key[32], const char *sts, char hex[65])
{
	unsigned char md[32];
	int rc = hmac_str(key, sts, md);

	if (rc == 0)
		to_hex(md, sizeof(md), hex);
	else
		hex[0] = '\0';
	return rc;
}

void sigv4_signature(const unsigned char key[32], const char *string_to_sign, char hex[65])
{
	if (signature_hex(key, string_to_sign, hex) < 0)
		hex[0] = '\0';
}

void sigv4_amz_date(time_t t, char out[17])
{
	struct tm tm;

	if (!gmtime_r(&t, &tm) || tm.tm_year < 1000 - 1900 || tm.tm_year > 9999 - 1900 ||
	    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
		out[0] = '\0';
}

/* ---- validation ---------------------------------------------------------- */

/* RFC 9110 token character (method and header names). */
static int is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int is_token(const char *s)
{
	if (!s || !*s)
		return 0;
	for (; *s; s++)
		if (!is_tchar((unsigned char)*s))
			return 0;
	return 1;
}

/* The path goes on the wire as is, so every byte must be one that needs no
 * encoding there: printable ASCII other than space, '?' and '#'. */
static int path_ok(const char *p)
{
	if (!p || *p != '/')
		return 0;
	for (; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#')
			return 0;
	}
	return 1;
}

static int payload_hash_ok(const char *p)
{
	if (!p || !*p)
		return 0;
	for (; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
		      (c >= 'A' && c <= 'Z') || c == '-'))
			return 0;
	}
	return 1;
}

/* A credential-scope part: non-empty, no '/', no whitespace or controls. */
static int scope_part_ok(const char *s)
{
	if (!s || !*s)
		return 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= 0x20 || c == 0x7f || c == '/' || c == ',')
			return 0;
	}
	return 1;
}

static int amz_date_ok(const char *d)
{
	static const char shape[] = "99999999T999999Z";
	size_t i;

	if (!d || strlen(d) != sizeof(shape) - 1)
		return 0;
	for (i = 0; i < sizeof(shape) - 1; i++) {
		if (shape[i] == '9' ? (d[i] < '0' || d[i] > '9') : d[i] != shape[i])
			return 0;
	}
	return 1;
}

static int scope_ok(const struct sigv4_scope *sc)
{
	return sc && amz_date_ok(sc->amz_date) && scope_part_ok(sc->region) &&
	       scope_part_ok(sc->service);
}

static int creds_ok(const struct sigv4_creds *cr)
{
	return cr && scope_part_ok(cr->access_key) && cr->secret_key && *cr->secret_key;
}

/* ---- encoding and the query ---------------------------------------------- */

static int is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

int sigv4_uri_encode(struct buf *out, const char *s, int keep_slash)
{
	const char *run = s, *p;
	char esc[3] = { '%', 0, 0 };
	int rc = 0;

	if (!s) {
		buf_release(out);
		return -EINVAL;
	}
	for (p = s; *p && rc == 0; p++) {
		unsigned char c = (unsigned char)*p;

		if (is_unreserved(c) || (keep_slash && c == '/'))
			continue;
		esc[1] = hex_upper[c >> 4];
		esc[2] = hex_upper[c & 15];
		rc = buf_add(out, run, (size_t)(p - run));
		if (rc == 0)
			rc = buf_add(out, esc, sizeof(esc));
		run = p + 1;
	}
	if (rc == 0)
		rc = buf_add(out, run, (size_t)(p - run));
	return rc;
}

struct qpair {
	char *name;  /* encoded */
	char *value; /* encoded */
};

static int qpair_cmp(const void *a, const void *b)
{
	const struct qpair *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->value, y->value);
}

static void qpairs_free(struct qpair *v, size_t n)
{
	size_t i;

	for (i = 0; v && i < n; i++) {
		free(v[i].name);
		free(v[i].value);
	}
	free(v);
}

static int encode_detach(const char *s, size_t max, char **out)
{
	struct buf b;
	int rc;

	buf_init(&b, max);
	rc = sigv4_uri_encode(&b, s, 0);
	if (rc < 0)
		return rc;
	*out = buf_detach(&b, NULL);
	return *out ? 0 : -ENOMEM;
}

/* Encode every pair into a fresh array (zeroed, so a partial one frees). */
static int qpairs_encode(const struct sigv4_kv *q, size_t n, size_t max, struct qpair **out)
{
	struct qpair *v;
	size_t i;
	int rc = 0;

	*out = NULL;
	if (n == 0)
		return 0;
	if (!q)
		return -EINVAL;
	v = calloc(n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (i = 0; i < n && rc == 0; i++) {
		rc = q[i].name ? encode_detach(q[i].name, max, &v[i].name) : -EINVAL;
		if (rc == 0)
			rc = encode_detach(q[i].value ? q[i].value : "", max, &v[i].value);
	}
	if (rc < 0) {
		qpairs_free(v, n);
		return rc;
	}
	*out = v;
	return 0;
}

int sigv4_canonical_query(struct buf *out, const struct sigv4_kv *q, size_t n)
{
	struct qpair *v = NULL;
	size_t i;
	int rc;

	rc = qpairs_encode(q, n, out->max, &v);
	if (rc < 0)
		goto out;
	if (n > 1)
		qsort(v, n, sizeof(*v), qpair_cmp);
	for (i = 0; i < n && rc == 0; i++) {
		if (i > 0)
			rc = buf_addch(out, '&');
		if (rc == 0)
			rc = buf_addf(out, "%s=%s", v[i].name, v[i].value);
	}
out:
	qpairs_free(v, n);
	if (rc < 0)
		buf_release(out);
	return rc;
}

/* ---- headers ------------------------------------------------------------- */

struct href {
	const char *name;
	const char *value; /* never NULL */
	size_t pos;        /* input position: keeps duplicates in given order */
};

static int ascii_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int name_cmp(const char *a, const char *b)
{
	while (*a && ascii_lower((unsigned char)*a) == ascii_lower((unsigned char)*b)) {
		a++;
		b++;
	}
	return ascii_lower((unsigned char)*a) - ascii_lower((unsigned char)*b);
}

static int href_cmp(const void *a, const void *b)
{
	const struct href *x = a, *y = b;
	int c = name_cmp(x->name, y->name);

	if (c)
		return c;
	return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Validate the headers and return them sorted by lowercase name, stably. */
static int headers_sort(const struct sigv4_kv *h, size_t n, struct href **out)
{
	struct href *v;
	size_t i;

	*out = NULL;
	if (n == 0)
		return 0;
	if (!h)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (!is_token(h[i].name) || (h[i].value && strpbrk(h[i].value, "\r\n")))
			return -EINVAL;
	}
	v = calloc(n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		v[i].name = h[i].name;
		v[i].value = h[i].value ? h[i].value : "";
		v[i].pos = i;
	}
	qsort(v, n, sizeof(*v), href_cmp);
	*out = v;
	return 0;
}

static int add_lower(struct buf *out, const char *s)
{
	int rc = 0;

	for (; *s && rc == 0; s++)
		rc = buf_addch(out, (char)ascii_lower((unsigned char)*s));
	return rc;
}

/* Trimall: drop leading/trailing blanks, collapse inner runs to one space. */
static int add_trimmed(struct buf *out, const char *v)
{
	const char *start;
	int rc = 0, first = 1;

	while (rc == 0) {
		while (*v == ' ' || *v == '\t')
			v++;
		if (!*v)
			break;
		start = v;
		while (*v && *v != ' ' && *v != '\t')
			v++;
		if (!first)
			rc = buf_addch(out, ' ');
		if (rc == 0)
			rc = buf_add(out, start, (size_t)(v - start));
		first = 0;
	}
	return rc;
}

/* "a;b;c" from sorted headers, each name once. */
static int add_signed_names(struct buf *out, const struct href *v, size_t n)
{
	size_t i;
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		if (i > 0 && name_cmp(v[i - 1].name, v[i].name) == 0)
			continue;
		if (i > 0)
			rc = buf_addch(out, ';');
		if (rc == 0)
			rc = add_lower(out, v[i].name);
	}
	return rc;
}

/* "name:v1,v2\n" per distinct name, from sorted headers. */
static int add_canonical_headers(struct buf *out, const struct href *v, size_t n)
{
	size_t i;
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		int same = i > 0 && name_cmp(v[i - 1].name, v[i].name) == 0;

		if (same) {
			rc = buf_addch(out, ',');
		} else {
			if (i > 0)
				rc = buf_addch(out, '\n');
			if (rc == 0)
				rc = add_lower(out, v[i].name);
			if (rc == 0)
				rc = buf_addch(out, ':');
		}
		if (rc == 0)
			rc = add_trimmed(out, v[i].value);
	}
	if (rc == 0 && n > 0)
		rc = buf_addch(out, '\n');
	return rc;
}

int sigv4_signed_headers(struct buf *out, const struct sigv4_kv *h, size_t n)
{
	struct href *v = NULL;
	int rc;

	rc = headers_sort(h, n, &v);
	if (rc == 0)
		rc = add_signed_names(out, v, n);
	free(v);
	if (rc < 0)
		buf_release(out);
	return rc;
}

/* ---- canonical request, string to sign ----------------------------------- */

static int request_ok(const struct sigv4_request *req)
{
	return req && is_token(req->method) && path_ok(req->path) &&
	       payload_hash_ok(req->payload_hash);
}

int sigv4_canonical_request(struct buf *out, const struct sigv4_request *req)
{
	struct href *v = NULL;
	int rc = -EINVAL;

	if (!request_ok(req))
		goto out;
	rc = headers_sort(req->headers, req->nheaders, &v);
	if (rc < 0)
		goto out;
	rc = buf_addf(out, "%s\n%s\n", req->method, req->path);
	if (rc == 0)
		rc = sigv4_canonical_query(out, req->query, req->nquery);
	if (rc == 0)
		rc = buf_addch(out, '\n');
	if (rc == 0)
		rc = add_canonical_headers(out, v, req->nheaders);
	if (rc == 0)
		rc = buf_addch(out, '\n');
	if (rc == 0)
		rc = add_signed_names(out, v, req->nheaders);
	if (rc == 0)
		rc = buf_addf(out, "\n%s", req->payload_hash);
out:
	free(v);
	if (rc < 0)
		buf_release(out);
	return rc;
}

int sigv4_string_to_sign(struct buf *out, const struct sigv4_scope *sc,
			 const char *canonical_request)
{
	unsigned char md[32];
	char hex[65];
	int rc = -EINVAL;

	if (!scope_ok(sc) || !canonical_request)
		goto out;
	rc = sha256_raw(canonical_request, strlen(canonical_request), md);
	if (rc < 0)
		goto out;
	to_hex(md, sizeof(md), hex);
	rc = buf_addf(out, SIGV4_ALGO "\n%s\n%.8s/%s/%s/" SIGV4_TERM "\n%s", sc->amz_date,
		      sc->amz_date, sc->region, sc->service, hex);
out:
	if (rc < 0)
		buf_release(out);
	return rc;
}

/* ---- whole signatures ---------------------------------------------------- */

/* Canonical request -> string to sign -> key -> hex signature. */
static int sign_request(const struct sigv4_request *req, const struct sigv4_scope *sc,
			const struct sigv4_creds *cr, char sig[65])
{
	struct buf creq, sts;
	unsigned char key[32];
	char date8[9];
	int rc;

	buf_init(&creq, 0);
	buf_init(&sts, 0);
	sig[0] = '\0';
	rc = sigv4_canonical_request(&creq, req);
	if (rc == 0)
		rc = sigv4_string_to_sign(&sts, sc, buf_str(&creq));
	if (rc < 0)
		goto out;
	memcpy(date8, sc->amz_date, 8);
	date8[8] = '\0';
	rc = derive_key(cr->secret_key, date8, sc->region, sc->service, key);
	if (rc == 0)
		rc = signature_hex(key, buf_str(&sts), sig);
	OPENSSL_cleanse(key, sizeof(key));
out:
	buf_release(&creq);
	buf_release(&sts);
	return rc;
}

int sigv4_authorization(struct buf *out, const struct sigv4_request *req,
			const struct sigv4_scope *sc, const struct sigv4_creds *cr)
{
	char sig[65];
	int rc = -EINVAL;

	if (!creds_ok(cr) || !scope_ok(sc) || !request_ok(req))
		goto out;
	rc = sign_request(req, sc, cr, sig);
	if (rc < 0)
		goto out;
	rc = buf_addf(out, SIGV4_ALGO " Credential=%s/%.8s/%s/%s/" SIGV4_TERM ", SignedHeaders=",
		      cr->access_key, sc->amz_date, sc->region, sc->service);
	if (rc == 0)
		rc = sigv4_signed_headers(out, req->headers, req->nheaders);
	if (rc == 0)
		rc = buf_addf(out, ", Signature=%s", sig);
out:
	if (rc < 0)
		buf_release(out);
	return rc;
}

/* The presign parameters' own strings, owned by the caller of presign_params. */
struct presign_strs {
	struct buf credential;
	struct buf signed_headers;
	char expires[24];
};

static int is_auth_param(const char *name)
{
	static const char *const names[] = {
		"X-Amz-Algorithm",     "X-Amz-Credential",     "X-Amz-Date",      "X-Amz-Expires",
		"X-Amz-SignedHeaders", "X-Amz-Security-Token", "X-Amz-Signature",
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(names); i++)
		if (strcmp(name, names[i]) == 0)
			return 1;
	return 0;
}

/* req->query plus the X-Amz-* parameters, in a new array *out of *nout. */
static int presign_params(const struct sigv4_request *req, const struct sigv4_scope *sc,
			  const struct sigv4_creds *cr, struct presign_strs *s,
			  struct sigv4_kv **out, size_t *nout)
{
	struct sigv4_kv *q;
	size_t i, n = 0, sz = 0;
	int rc;

	if (req->nquery && !req->query)
		return -EINVAL;
	for (i = 0; i < req->nquery; i++)
		if (!req->query[i].name || is_auth_param(req->query[i].name))
			return -EINVAL;
	if (size_add(req->nquery, 6, &n) || size_mul(n, sizeof(*q), &sz))
		return -EOVERFLOW;
	rc = buf_addf(&s->credential, "%s/%.8s/%s/%s/" SIGV4_TERM, cr->access_key,
		      sc->amz_date, sc->region, sc->service);
	if (rc == 0)
		rc = sigv4_signed_headers(&s->signed_headers, req->headers, req->nheaders);
	if (rc < 0)
		return rc;
	q = malloc(sz);
	if (!q)
		return -ENOMEM;
	if (req->nquery)
		memcpy(q, req->query, req->nquery * sizeof(*q));
	n = req->nquery;
	q[n++] = (struct sigv4_kv){ "X-Amz-Algorithm", SIGV4_ALGO };
	q[n++] = (struct sigv4_kv){ "X-Amz-Credential", buf_str(&s->credential) };
	q[n++] = (struct sigv4_kv){ "X-Amz-Date", sc->amz_date };
	q[n++] = (struct sigv4_kv){ "X-Amz-Expires", s->expires };
	q[n++] = (struct sigv4_kv){ "X-Amz-SignedHeaders", buf_str(&s->signed_headers) };
	if (cr->session_token && *cr->session_token)
		q[n++] = (struct sigv4_kv){ "X-Amz-Security-Token", cr->session_token };
	*out = q;
	*nout = n;
	return 0;
}

int sigv4_presign_query(struct buf *out, const struct sigv4_request *req,
			const struct sigv4_scope *sc, const struct sigv4_creds *cr,
			long expires_s)
{
	struct presign_strs s;
	struct sigv4_request r2;
	struct sigv4_kv *q = NULL;
	size_t nq = 0;
	char sig[65];
	int rc = -EINVAL;

	buf_init(&s.credential, 0);
	buf_init(&s.signed_headers, 0);
	if (!creds_ok(cr) || !scope_ok(sc) || !request_ok(req) || expires_s < 1 ||
	    expires_s > SIGV4_MAX_EXPIRES)
		goto out;
	snprintf(s.expires, sizeof(s.expires), "%ld", expires_s);
	rc = presign_params(req, sc, cr, &s, &q, &nq);
	if (rc < 0)
		goto out;
	r2 = *req;
	r2.query = q;
	r2.nquery = nq;
	rc = sign_request(&r2, sc, cr, sig);
	if (rc == 0)
		rc = sigv4_canonical_query(out, q, nq);
	if (rc == 0)
		rc = buf_addf(out, "&X-Amz-Signature=%s", sig);
out:
	free(q);
	buf_release(&s.credential);
	buf_release(&s.signed_headers);
	if (rc < 0)
		buf_release(out);
	return rc;
}
