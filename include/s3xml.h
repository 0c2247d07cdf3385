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

/* Limits every parser applies: bodies over 64 MiB, elements nested deeper
 * than 64 levels, and any document with a DOCTYPE are -EBADMSG.  Leading
 * whitespace is skipped (S3 sends spaces while a copy or a multipart
 * completion runs).  Elements are matched by local name, any namespace. */

/* Initialise libxml2 once (not thread-safe itself). */
void s3xml_init(void);

struct s3_entry {
	char *key;            /* decoded (the listing is requested with encoding-type=url) */
	char *etag;           /* without quotes; "" when the listing has none */
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
	size_t nskipped;      /* keys/prefixes dropped: undecodable (bad %XX, or NUL) */
};

/* Parse a ListObjectsV2 result (root <ListBucketResult>).  Keys/prefixes are
 * URL-decoded when the body says <EncodingType>url</EncodingType>, with '+'
 * read as a space (AWS encodes a space as '+', RGW as %20; both encode '+'
 * as %2B).  A key or prefix that does not decode (bad escape, or %00) is
 * left out and counted in nskipped.  Contents needs Key and Size; ETag,
 * LastModified (must parse when present) and StorageClass are optional.
 * More than 100000 Contents or CommonPrefixes, or IsTruncated true without a
 * NextContinuationToken (a page that cannot be continued) is -EBADMSG.
 * 0 or -EBADMSG / -ENOMEM.
 * out is zeroed first; release with s3xml_list_release even on failure. */
int s3xml_parse_list(const char *xml, size_t len, struct s3_list_page *out) WUR;
void s3xml_list_release(struct s3_list_page *p);

/* <Error><Code>..</Code><Message>..</Message></Error>, as the root or as a
 * child of the root (<ErrorResponse><Error>, other AWS services).  *code and
 * *message are malloc'd ("" when absent or empty - RGW sends <Message/>);
 * message may be NULL when not wanted.  0 when an Error element was found,
 * -EBADMSG otherwise (-ENOMEM). */
int s3xml_parse_error(const char *xml, size_t len, char **code, char **message) WUR;

/* <InitiateMultipartUploadResult><UploadId> (non-empty), malloc'd.
 * 0 or -EBADMSG. */
int s3xml_parse_upload_id(const char *xml, size_t len, char **upload_id) WUR;

/* One in-progress multipart upload of a ListMultipartUploadsResult. */
struct s3_upload {
	char *upload_id;
	struct timespec initiated;  /* 0 when absent */
};

/* ListMultipartUploadsResult (asked without encoding-type): the uploads
 * whose Key is exactly key, malloc'd into *out (*n of them; NULL, 0 when
 * none).  0, -EBADMSG or -ENOMEM; release with s3xml_uploads_release. */
int s3xml_parse_uploads(const char *xml, size_t len, const char *key, struct s3_upload **out,
			size_t *n) WUR;
void s3xml_uploads_release(struct s3_upload *u, size_t n);

/* CopyObjectResult / CompleteMultipartUploadResult / CopyPartResult: these
 * can carry an <Error> under HTTP 200.  Returns 0 and sets *etag (unquoted,
 * malloc'd) on success; returns -EIO and sets *err_code (malloc'd, "" when
 * the Error has no Code) when the body is an Error; -EBADMSG when neither
 * (including a result without an ETag). */
int s3xml_parse_result_etag(const char *xml, size_t len, char **etag, char **err_code) WUR;

/* Append <CompleteMultipartUpload><Part><PartNumber>i+1</PartNumber>
 * <ETag>"e"</ETag>... to out.  etags[i] is the ETag of part i+1, quoted or
 * not (quotes are added when missing; &<> escaped).  -EINVAL when nparts is 0
 * or over 10000 or an etag is NULL/""; -ENOMEM/-E2BIG (out released). */
int s3xml_build_complete(struct buf *out, const char *const *etags, size_t nparts) WUR;

/* S3 error code (may be NULL) and HTTP status -> -errno:
 * NoSuchKey/NoSuchBucket/NoSuchUpload -> -ENOENT, AccessDenied/
 * SignatureDoesNotMatch/InvalidAccessKeyId/AllAccessDisabled -> -EACCES,
 * KeyTooLongError -> -ENAMETOOLONG, EntityTooLarge -> -EFBIG,
 * InvalidRange -> -EINVAL (callers treat as EOF), SlowDown/ServiceUnavailable/
 * RequestTimeout -> -EAGAIN, RequestTimeTooSkewed/ExpiredToken/InvalidToken/
 * TokenRefreshRequired/AccountProblem -> -EACCES, PreconditionFailed -> -ESTALE,
 * InternalError -> -EIO, QuotaExceeded -> -EDQUOT, NotImplemented -> -EOPNOTSUPP,
 * MethodNotAllowed -> -EPERM; else by status like http_status_errno: 2xx/3xx 0
 * (but -EIO when code is non-NULL, even "": an Error inside a 200), 400/416 -EINVAL,
 * 401/403 -EACCES, 404 -ENOENT, 405 -EPERM, 409 -EBUSY, 411/413 -EFBIG,
 * 412 -ESTALE, 429 -EAGAIN, other 4xx -EINVAL, 5xx and anything else -EIO. */
int s3_error_errno(const char *code, long status);

/* Parse "2009-10-12T17:50:30.000Z" (any number of fraction digits; "Z",
 * "+HH:MM" or "+HHMM") or "Wed, 12 Oct 2009 17:50:30 GMT" ("UTC" too);
 * surrounding whitespace ignored; years from 1970.  0 or -EINVAL. */
int s3_parse_time(const char *s, struct timespec *out) WUR;

/* Decode %XX (and '+' as space when plus_space), appending to out.  -EINVAL
 * on a bad escape or an embedded NUL (%00); on any failure out is released
 * (as a failed buf append does). */
int s3_url_decode(struct buf *out, const char *s, int plus_space) WUR;

/* CloudFront <Invalidation> (the body of CreateInvalidation's 201 and of
 * GetInvalidation's 200): Id and Status ("InProgress", "Completed"), both
 * required and non-empty, malloc'd into *id and *status (NULL on failure).
 * Other children (CreateTime, InvalidationBatch) are ignored.
 * 0, -EBADMSG or -ENOMEM.  CloudFront errors (<ErrorResponse><Error>) are
 * read with s3xml_parse_error. */
int s3xml_parse_invalidation(const char *xml, size_t len, char **id, char **status) WUR;

#endif
