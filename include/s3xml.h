/*
 * s3xml.h - S3 XML bodies, parsed and built with libxml2.
 *
 * The only module that includes libxml2.  Parsers never trust the input:
 * sizes and counts are capped, entity expansion and network access are off,
 * and any surprise is -EBADMSG, never a crash.
 *
 * Threads: reentrant (call s3xml_init once before threads start).
 */
#ifndef CDNFS_S3XML_H
#define CDNFS_S3XML_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "buf.h"
#include "compat.h"

/* Initialise libxml2 once (not thread-safe itself). */
void s3xml_init(void);

struct s3_entry {
	char *key;            /* decoded (the listing is requested with encoding-type=url) */
	char *etag;           /* without quotes */
	uint64_t size;
	struct timespec mtime; /* LastModified */
	char *storage_class;  /* may be NULL */
};

struct s3_list_page {
	struct s3_entry *entries;
	size_t nentries;
	char **prefixes;      /* CommonPrefixes, decoded */
	size_t nprefixes;
	int truncated;        /* IsTruncated */
	char *next_token;     /* NextContinuationToken, NULL when none */
};

/* Parse a ListObjectsV2 result.  Keys/prefixes are URL-decoded when the body
 * says <EncodingType>url</EncodingType>.  0 or -EBADMSG / -ENOMEM.
 * out is zeroed first; release with s3xml_list_release even on failure. */
int s3xml_parse_list(const char *xml, size_t len, struct s3_list_page *out) WUR;
void s3xml_list_release(struct s3_list_page *p);

/* <Error><Code>..</Code><Message>..</Message></Error>.  *code and *message are
 * malloc'd (message may be "" - RGW sends <Message/>).  0 when an Error
 * element was found, -EBADMSG otherwise. */
int s3xml_parse_error(const char *xml, size_t len, char **code, char **message) WUR;

/* <InitiateMultipartUploadResult><UploadId>. 0 or -EBADMSG. */
int s3xml_parse_upload_id(const char *xml, size_t len, char **upload_id) WUR;

/* CopyObjectResult / CompleteMultipartUploadResult / CopyPartResult: these
 * can carry an <Error> under HTTP 200.  Returns 0 and sets *etag (unquoted)
 * on success; returns -EIO and sets *err_code when the body is an Error;
 * -EBADMSG when neither. */
int s3xml_parse_result_etag(const char *xml, size_t len, char **etag, char **err_code) WUR;

/* <CompleteMultipartUpload><Part><PartNumber>i+1</PartNumber><ETag>"e"</ETag>... */
int s3xml_build_complete(struct buf *out, const char *const *etags, size_t nparts) WUR;

/* S3 error code (may be NULL) and HTTP status -> -errno:
 * NoSuchKey/NoSuchBucket/NoSuchUpload -> -ENOENT, AccessDenied/
 * SignatureDoesNotMatch/InvalidAccessKeyId/AllAccessDisabled -> -EACCES,
 * KeyTooLongError -> -ENAMETOOLONG, EntityTooLarge -> -EFBIG,
 * InvalidRange -> -EINVAL (callers treat as EOF), SlowDown/ServiceUnavailable -> -EAGAIN,
 * RequestTimeTooSkewed -> -ETIMEDOUT?  no: -EACCES, PreconditionFailed -> -ESTALE,
 * else http_status_errno-like by status (4xx -EINVAL/-EACCES/-ENOENT, 5xx -EIO). */
int s3_error_errno(const char *code, long status);

/* Parse "2009-10-12T17:50:30.000Z" or "Wed, 12 Oct 2009 17:50:30 GMT".
 * 0 or -EINVAL. */
int s3_parse_time(const char *s, struct timespec *out) WUR;

/* Decode %XX (and '+' as space when plus_space) into out.  -EINVAL on a bad escape
 * or an embedded NUL. */
int s3_url_decode(struct buf *out, const char *s, int plus_space) WUR;

#endif
