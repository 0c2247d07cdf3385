/*
 * sigv4.h - AWS Signature Version 4, as pure functions.
 *
 * No I/O, no clock, no globals: every input is a parameter, so each stage is
 * unit-tested against AWS's published examples.  The stages follow the AWS
 * documentation: canonical request -> string to sign -> signing key ->
 * signature -> Authorization header (or presigned query string).
 *
 * Conventions:
 *  - path is the canonical URI exactly as it goes on the wire, already
 *    URI-encoded (use sigv4_uri_encode with keep_slash=1 on an S3 key);
 *    the signer never normalises or re-encodes it (S3 semantics).
 *  - query parameters are given raw (not encoded); the signer encodes them,
 *    sorts them and returns the canonical query, which is also the string to
 *    put on the wire after '?', so what is signed is what is sent.
 *  - headers are the complete set to sign, names in any case, values raw;
 *    the caller includes host, x-amz-date, x-amz-content-sha256 (S3) and
 *    x-amz-security-token (temporary credentials) itself.
 *  - amz_date is "YYYYMMDDTHHMMSSZ" (sigv4_amz_date formats one).
 *  - header values are trimmed and runs of spaces/tabs collapsed to one
 *    space; headers named alike (any case) are combined with ',' in the
 *    order given.  Query parameters are sorted by encoded name, then by
 *    encoded value (so repeated names are allowed).
 *
 * Every int function returns 0 on success or -errno: -ENOMEM, -E2BIG (the
 * output buffer's cap), -EINVAL for input that cannot be signed or sent:
 *    method not an HTTP token; path not starting with '/' or holding a byte
 *    that must be percent-encoded (space, controls, '?', '#', non-ASCII);
 *    header name not a token or value with CR/LF; payload_hash empty or not
 *    [0-9A-Za-z-]; amz_date not YYYYMMDDTHHMMSSZ; region/service/access key
 *    empty or holding '/' or whitespace; secret empty; expires_s not in
 *    1..604800 (S3's limit of 7 days); NULL where an array is needed.
 * Output strings are appended to a caller-owned struct buf; as with buf.h,
 * a failing call releases that buf (no half-built value is left in it).
 * The void hash functions cannot report an OpenSSL failure (only possible
 * on allocation failure): sigv4_sha256_hex and sigv4_signature then write
 * "" (which every signing function rejects with -EINVAL) and
 * sigv4_signing_key writes 32 zero bytes.  The composite functions
 * (string_to_sign, authorization, presign_query) use checked internals and
 * return -ENOMEM instead.
 * Secrets: secret-derived bytes are wiped (OPENSSL_cleanse) before return.
 * Threads: all functions are reentrant; no state, no locks.
 */
#ifndef CDNFS_SIGV4_H
#define CDNFS_SIGV4_H

#include <stddef.h>
#include <time.h>
#include "buf.h"
#include "compat.h"

#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
/* sha256 of the empty string, hex */
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct sigv4_kv {
	const char *name;
	const char *value; /* NULL is treated as "" */
};

struct sigv4_creds {
	const char *access_key;
	const char *secret_key;
	const char *session_token; /* NULL or "" when none */
};

struct sigv4_request {
	const char *method;             /* "GET", "PUT", ... */
	const char *path;               /* encoded canonical URI, starts with '/' */
	const struct sigv4_kv *query;   /* raw query parameters, any order */
	size_t nquery;
	const struct sigv4_kv *headers; /* every header to sign */
	size_t nheaders;
	const char *payload_hash;       /* hex sha256 of the body, or UNSIGNED-PAYLOAD */
};

struct sigv4_scope {
	const char *amz_date; /* YYYYMMDDTHHMMSSZ */
	const char *region;   /* "us-east-1" */
	const char *service;  /* "s3", "cloudfront" */
};

/* Format t (UTC) as YYYYMMDDTHHMMSSZ into out[17]; "" if t's year is
 * outside 1000..9999. */
void sigv4_amz_date(time_t t, char out[17]);

/* Percent-encode s per SigV4: unreserved A-Za-z0-9-._~ kept, everything else
 * %XX upper-case; '/' kept when keep_slash.  Bytes are treated as UTF-8. */
int sigv4_uri_encode(struct buf *out, const char *s, int keep_slash) WUR;

/* Lowercase hex sha256 of data into hex[65]. */
void sigv4_sha256_hex(const void *data, size_t len, char hex[65]);

/* The canonical query string (sorted, encoded, "a=1&b=") */
int sigv4_canonical_query(struct buf *out, const struct sigv4_kv *q, size_t n) WUR;
/* "host;x-amz-date;..." */
int sigv4_signed_headers(struct buf *out, const struct sigv4_kv *h, size_t n) WUR;
/* The whole canonical request. */
int sigv4_canonical_request(struct buf *out, const struct sigv4_request *req) WUR;
/* "AWS4-HMAC-SHA256\n<date>\n<scope>\n<hex(sha256(canonical))>" */
int sigv4_string_to_sign(struct buf *out, const struct sigv4_scope *sc,
			 const char *canonical_request) WUR;
/* The 32-byte signing key for (secret, date YYYYMMDD, region, service).
 * The caller should wipe it after use (it is a secret for that day). */
void sigv4_signing_key(const char *secret, const char *date8, const char *region,
		       const char *service, unsigned char key[32]);
/* hex(HMAC(key, string_to_sign)) into hex[65]. */
void sigv4_signature(const unsigned char key[32], const char *string_to_sign, char hex[65]);

/* Full Authorization header value:
 * "AWS4-HMAC-SHA256 Credential=AK/scope, SignedHeaders=..., Signature=..." */
int sigv4_authorization(struct buf *out, const struct sigv4_request *req,
			const struct sigv4_scope *sc, const struct sigv4_creds *cr) WUR;

/* Presigned URL query: appends the complete canonical query string to send
 * (req->query plus X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date,
 * X-Amz-Expires, X-Amz-SignedHeaders, [X-Amz-Security-Token] and
 * X-Amz-Signature, last; the others sorted among req->query) - everything
 * after '?' in the URL.  X-Amz-Security-Token is added when
 * cr->session_token is non-empty.  req->query must not already hold X-Amz-*
 * auth parameters.  req->payload_hash should be UNSIGNED-PAYLOAD for S3;
 * req->headers usually just host. */
int sigv4_presign_query(struct buf *out, const struct sigv4_request *req,
			const struct sigv4_scope *sc, const struct sigv4_creds *cr,
			long expires_s) WUR;

#endif
