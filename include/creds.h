/*
 * creds.h - AWS credentials and region, resolved the way the AWS SDKs do.
 *
 * Order: environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN); then the profile AWS_PROFILE (default "default") in
 * AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials) and AWS_CONFIG_FILE
 * (~/.aws/config, where it is "[profile NAME]" except for default); then
 * EC2 instance metadata, IMDSv2: PUT /latest/api/token, then
 * GET /latest/meta-data/iam/security-credentials/ and .../ROLE, at
 * AWS_EC2_METADATA_SERVICE_ENDPOINT (default http://169.254.169.254, or
 * http://[fd00:ec2::254] when AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6).
 * IMDS is tried only when the environment and the profile give nothing,
 * never when AWS_EC2_METADATA_DISABLED=true or http is NULL; each IMDS
 * request is a single attempt with a 2 s stall timeout.
 * IMDS credentials are refreshed by creds_get when they expire within 5 min.
 *
 * Files: "~/" is $HOME; a missing file is not an error, an unreadable or
 * malformed one is ("cannot parse '/root/.aws/credentials': 3: expected
 * 'key = value'").  Keys are matched case-insensitively; the credentials
 * file wins over the config file (which may also hold keys); an empty value
 * counts as absent.  role_arn, credential_process, sso_* are not supported.
 *
 * Secrets never go to the log.
 *
 * Threads: creds_get is thread-safe.
 */
#ifndef CDNFS_CREDS_H
#define CDNFS_CREDS_H

#include <time.h>
#include "buf.h"
#include "compat.h"

struct http;
struct creds;

/* A copy of the current credentials, owned by the caller. */
struct creds_value {
	char access_key[128];
	char secret_key[128];
	char session_token[4096]; /* "" when none (STS tokens have no fixed size) */
	time_t expires;           /* 0: never */
};

/* Resolve the chain now.  http is used for IMDS only and is borrowed (must
 * outlive the creds); NULL means no instance metadata.  On failure returns
 * -errno with a one-line reason in err (reset first; err may be NULL):
 * -ENOKEY "no AWS credentials found (environment, profile 'default', instance
 * metadata[: why IMDS failed])"; -EINVAL for AWS_ACCESS_KEY_ID without
 * AWS_SECRET_ACCESS_KEY (or the reverse) or a profile with a key id but no
 * secret; a file error as above. */
int creds_new(struct creds **out, struct http *http, struct buf *err) WUR;
void creds_free(struct creds *c);
/* Copy the current credentials, refreshing from IMDS when needed (at most
 * one thread fetches; the others keep the old value while it is valid).
 * A failed refresh is retried no sooner than 10 s later and logged as a
 * warning.  0, or -EKEYEXPIRED when the credentials have expired and could
 * not be refreshed (out is then untouched). */
int creds_get(struct creds *c, struct creds_value *out) WUR;
/* Where they came from: "environment", "profile NAME", "instance metadata". */
const char *creds_source(const struct creds *c);

/* The region from AWS_REGION, AWS_DEFAULT_REGION, then the profile's config
 * file ("region" key); into out (cap bytes).  Returns 1 when found, 0 when
 * not, -errno (-E2BIG when cap is too small; a file error is logged). */
int creds_region(char *out, size_t cap) WUR;

/* --- pure helpers, exposed for unit tests --- */

/* Read the key from the profile in an AWS credentials-file text (section
 * "[NAME]") or config-file text (is_config: "[profile NAME]", or "[default]").
 * Returns 1 and fills out when found (non-empty; the last one wins), 0 when
 * absent or empty, -errno on a parse error (-EINVAL) or a value too long
 * for cap (-E2BIG). */
int creds_profile_value(const char *text, size_t len, int is_config, const char *profile,
			const char *key, char *out, size_t cap) WUR;
/* Parse the IMDS role-credentials JSON ({"AccessKeyId":..,"SecretAccessKey":..,
 * "Token":..,"Expiration":"2026-11-25T20:00:00Z"}).  All four are required
 * and must be strings; "Code", when present, must be "Success"; other members
 * (scalars only) are ignored; escapes including \uXXXX are decoded.
 * 0 or -EINVAL (out is then zeroed). */
int creds_parse_imds_json(const char *json, size_t len, struct creds_value *out) WUR;

#endif
