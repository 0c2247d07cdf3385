/*
 * creds.h - AWS credentials and region, resolved the way the AWS SDKs do.
 *
 * Order: environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN); then the profile AWS_PROFILE (default "default") in
 * AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials) and AWS_CONFIG_FILE
 * (~/.aws/config, where it is "[profile NAME]" except for default); then
 * EC2 instance metadata, IMDSv2: PUT /latest/api/token, then
 * GET /latest/meta-data/iam/security-credentials/ and .../ROLE, at
 * AWS_EC2_METADATA_SERVICE_ENDPOINT (default http://169.254.169.254).
 * IMDS credentials are refreshed by creds_get when they expire within 5 min.
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
	char session_token[2048]; /* "" when none */
	time_t expires;           /* 0: never */
};

/* Resolve the chain now.  http is used for IMDS only and is borrowed (must
 * outlive the creds).  On failure returns -errno with a one-line reason in
 * err (e.g. "no AWS credentials found (environment, profile 'default', instance metadata)"). */
int creds_new(struct creds **out, struct http *http, struct buf *err) WUR;
void creds_free(struct creds *c);
/* Copy the current credentials, refreshing from IMDS when needed. */
int creds_get(struct creds *c, struct creds_value *out) WUR;
/* Where they came from: "environment", "profile NAME", "instance metadata". */
const char *creds_source(const struct creds *c);

/* The region from AWS_REGION, AWS_DEFAULT_REGION, then the profile's config
 * file; into out (cap bytes).  Returns 1 when found, 0 when not, -errno. */
int creds_region(char *out, size_t cap) WUR;

/* --- pure helpers, exposed for unit tests --- */

/* Read the key from the profile in an AWS credentials-file text (section
 * "[NAME]") or config-file text (is_config: "[profile NAME]", or "[default]").
 * Returns 1 and fills out when found, 0 when absent, -errno on a parse error. */
int creds_profile_value(const char *text, size_t len, int is_config, const char *profile,
			const char *key, char *out, size_t cap) WUR;
/* Parse the IMDS role-credentials JSON ({"AccessKeyId":..,"SecretAccessKey":..,
 * "Token":..,"Expiration":"2026-11-25T20:00:00Z"}).  0 or -EINVAL. */
int creds_parse_imds_json(const char *json, size_t len, struct creds_value *out) WUR;

#endif
