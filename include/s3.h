/*
 * s3.h - the bucket API: the S3 requests cdnfs makes, signed and retried.
 *
 * Each call is one logical S3 request (retries are inside http_do).  Keys
 * are raw UTF-8 object keys (the mounted PREFIX already applied by the
 * caller); encoding for the URL and the signature happens here.
 *
 * Errors: -errno from s3_error_errno (the S3 <Code> and HTTP status), or a
 * transport error from http_do.  Every failure is logged once here at debug
 * level with the key; callers decide what the user sees.
 *
 * Threads: every function is thread-safe; calls run in parallel.
 */
#ifndef CDNFS_S3_H
#define CDNFS_S3_H

#include <stdint.h>
#include <time.h>
#include "buf.h"
#include "compat.h"
#include "s3xml.h"
#include "sigv4.h"

struct http;
struct creds;
struct s3;

struct s3_conf {
	const char *endpoint;   /* "https://s3.REGION.amazonaws.com" when NULL */
	const char *region;     /* "us-east-1" when NULL */
	const char *bucket;
	int path_style;         /* -1: auto (virtual-hosted on AWS hosts, path style elsewhere) */
};

#define S3_ETAG_MAX 80

/* What a HEAD or GET tells about an object. */
struct s3_obj {
	uint64_t size;               /* Content-Length of the whole object */
	char etag[S3_ETAG_MAX];      /* unquoted */
	struct timespec mtime;       /* Last-Modified */
	char *content_type;
	char *content_encoding;
	char *cache_control;
	char *content_disposition;
	char *storage_class;
	struct sigv4_kv *meta;       /* x-amz-meta-NAME, name without the prefix, lowercase */
	size_t nmeta;
};
void s3_obj_release(struct s3_obj *o);
/* Value of x-amz-meta-NAME, or NULL. */
const char *s3_obj_meta(const struct s3_obj *o, const char *name);

int s3_new(struct s3 **out, const struct s3_conf *conf, struct http *http,
	   struct creds *creds) WUR;
void s3_free(struct s3 *s);
const char *s3_bucket(const struct s3 *s);

/* Check at mount time that the bucket answers with these credentials.  On
 * failure returns -errno and a one-line reason in err. */
int s3_check_bucket(struct s3 *s, struct buf *err) WUR;

/* ListObjectsV2 of prefix (may be ""), with delimiter (NULL for a recursive
 * listing), continuing at token (NULL first), max_keys (0: 1000). */
int s3_list(struct s3 *s, const char *prefix, const char *delimiter, const char *token,
	    int max_keys, struct s3_list_page *out) WUR;

/* HeadObject.  -ENOENT when absent.  out is released by the caller. */
int s3_head(struct s3 *s, const char *key, struct s3_obj *out) WUR;
/* hex md5 of fd[off, off+len) (a single-part upload's ETag) into out[33]. */
int s3_md5_hex(int fd, uint64_t off, uint64_t len, char out[33]) WUR;

struct s3_get_req {
	uint64_t off, len;           /* len 0: to the end */
	int ranged;                  /* send a Range header */
	const char *if_match;        /* etag or NULL: 412 -> -ESTALE */
	const char *if_none_match;   /* etag or NULL: 304 -> returns 1 */
	int fd;                      /* body written here from fd_off */
	uint64_t fd_off;
};
/* GetObject into an fd.  Returns 0, 1 (not modified), or -errno.  hdrs (may
 * be NULL) receives the object's headers; *got the body bytes written.
 * A body shorter than announced is -EIO. */
int s3_get(struct s3 *s, const char *key, const struct s3_get_req *req, struct s3_obj *hdrs,
	   uint64_t *got) WUR;

/* Headers a write sends: Cache-Control, Content-Type, x-amz-meta-..., as
 * name/value pairs (names as they go on the wire). */
struct s3_hdrs {
	const struct sigv4_kv *h;
	size_t n;
};

/* PutObject of len bytes read from fd at off (fd -1 and len 0 for an empty
 * object).  Sends Content-MD5.  etag_out may be NULL. */
int s3_put(struct s3 *s, const char *key, const struct s3_hdrs *hdrs, int fd, uint64_t off,
	   uint64_t len, char etag_out[S3_ETAG_MAX]) WUR;
/* DeleteObject (absent keys are not an error, as in S3). */
int s3_delete(struct s3 *s, const char *key) WUR;
/* CopyObject src -> dst.  hdrs NULL: COPY metadata; else REPLACE with hdrs.
 * An error inside a 200 answer is detected. */
int s3_copy(struct s3 *s, const char *src, const char *dst, const struct s3_hdrs *hdrs,
	    char etag_out[S3_ETAG_MAX]) WUR;

/* Multipart upload. */
int s3_mpu_create(struct s3 *s, const char *key, const struct s3_hdrs *hdrs,
		  char **upload_id) WUR;
int s3_mpu_part(struct s3 *s, const char *key, const char *upload_id, int partno, int fd,
		uint64_t off, uint64_t len, char etag_out[S3_ETAG_MAX]) WUR;
int s3_mpu_part_copy(struct s3 *s, const char *src, const char *key, const char *upload_id,
		     int partno, uint64_t off, uint64_t len, char etag_out[S3_ETAG_MAX]) WUR;
int s3_mpu_complete(struct s3 *s, const char *key, const char *upload_id,
		    const char *const *etags, size_t nparts, char etag_out[S3_ETAG_MAX]) WUR;
int s3_mpu_abort(struct s3 *s, const char *key, const char *upload_id) WUR;
/* Abort every multipart upload of key but keep ("" for none) initiated at
 * or after since (server clock): the orphans of a create whose answer was
 * lost, or of a crash during one.  0, or -errno when some are left. */
int s3_mpu_abort_since(struct s3 *s, const char *key, const char *keep, time_t since) WUR;

/* A presigned GET URL for key valid ttl seconds, appended to out. */
int s3_presign_get(struct s3 *s, const char *key, long ttl, struct buf *out) WUR;
/* The plain (unsigned) object URL, appended to out. */
int s3_object_url(struct s3 *s, const char *key, struct buf *out) WUR;

#endif
