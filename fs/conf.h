/*
 * conf.h - mount options: defaults, parsing, help.
 *
 * The same setter serves -o options, the config file's [s3]/[mount]/[cdn]
 * sections and environment variables, so every option means the same
 * wherever it is given.  Precedence: -o > config file > environment >
 * defaults.
 */
#ifndef CDNFS_CONF_H
#define CDNFS_CONF_H

#include "fs.h"

void conf_defaults(struct fs_conf *c);
void conf_release(struct fs_conf *c);
/* Is name one of cdnfs's options (as opposed to a FUSE one)? */
int conf_known(const char *name);
/* Set option name (value may be NULL for flags).  0, or -EINVAL with a
 * one-line message in err ("bad value 'x' for cache_size: ..."). */
int conf_set(struct fs_conf *c, const char *name, const char *value, struct buf *err) WUR;
/* rules_load's option callback (arg: struct fs_conf *): the config file's
 * [s3], [mount] and [cdn] keys are -o options; in [cdn], "provider" is cdn=
 * and "distribution_id" is cdn_distribution_id=. */
int conf_file_opt(void *arg, const char *section, const char *key, const char *value,
		  struct buf *err) WUR;
/* Is name in the comma-separated list (case-insensitive)? */
int conf_in_list(const char *list, const char *name);
/* Environment variables (AWS_S3_ENDPOINT_URL, AWS_S3_REGION_NAME ...). */
int conf_from_env(struct fs_conf *c, struct buf *err) WUR;
/* "BUCKET[:PREFIX]" -> bucket, prefix ("" or "a/b/"). */
int conf_set_bucket(struct fs_conf *c, const char *spec, struct buf *err) WUR;
/* Parse "512M", "2G", "100k", "1048576" (binary multiples). */
int conf_parse_size(const char *s, uint64_t *out) WUR;
/* Parse "60", "1.5", "2m", "1h". */
int conf_parse_duration(const char *s, double *out) WUR;
/* The option list for --help. */
const char *conf_help(void);

#endif
