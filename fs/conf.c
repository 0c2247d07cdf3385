/*
 * conf.c - mount options (see conf.h).  One table names every option, its
 * kind and where it goes; --help is written from the same list.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"

enum opt_kind { K_STR, K_FLAG, K_SIZE, K_DUR, K_INT, K_LEVEL, K_OCT };

struct opt {
	const char *name;
	enum opt_kind kind;
	size_t off;
	const char *help;
};

#define O(f) offsetof(struct fs_conf, f)

static const struct opt opts[] = {
	{ "endpoint", K_STR, O(endpoint), "S3 endpoint URL (default: AWS for the region)" },
	{ "region", K_STR, O(region), "AWS region (default: AWS_REGION, profile, us-east-1)" },
	{ "path_style", K_FLAG, O(path_style), "path-style addressing (default for custom endpoints)" },
	{ "cache_dir", K_STR, O(cache_dir), "local cache and journal (default ~/.cache/cdnfs)" },
	{ "cache_size", K_SIZE, O(cache_size), "read cache limit, e.g. 512M, 2G (default 1G)" },
	{ "stat_ttl", K_DUR, O(stat_ttl), "seconds listings and attributes are trusted (60)" },
	{ "writeback_delay", K_DUR, O(writeback_delay), "settle time after close before upload (1)" },
	{ "parallel", K_INT, O(parallel), "concurrent uploads (16)" },
	{ "multipart_size", K_SIZE, O(multipart_size), "multipart part size (8M)" },
	{ "copy_threshold", K_SIZE, O(copy_threshold), "renames above this copy in parts (5G)" },
	{ "read_chunk", K_SIZE, O(read_chunk), "ranged GET size for reads (8M)" },
	{ "read_ahead", K_INT, O(read_ahead), "chunks fetched ahead of a sequential reader (8)" },
	{ "timeout", K_INT, O(timeout), "seconds without progress before a request is retried (30)" },
	{ "log_level", K_LEVEL, O(log_level), "error, warn, info or debug (info)" },
	{ "config", K_STR, O(config), "config file (default /etc/cdnfs/cdnfs.conf if present)" },
	{ "insecure", K_FLAG, O(insecure), "do not verify TLS certificates (logged loudly)" },
	{ "ca_file", K_STR, O(ca_file), "PEM CA bundle to verify TLS with (AWS_CA_BUNDLE)" },
	{ "uid", K_INT, O(uid), "owner of objects without x-amz-meta-uid (mounting user)" },
	{ "gid", K_INT, O(gid), "group of objects without x-amz-meta-gid" },
	{ "umask", K_OCT, O(umask), "umask for objects without x-amz-meta-mode (022)" },
	{ "ro", K_FLAG, O(ro), "read-only mount" },
	{ "allow_other", K_FLAG, O(allow_other), "let other users in (implies default_permissions)" },
	{ "cdn", K_STR, O(cdn), "cloudfront, cloudflare or none: purge the CDN on changes (none)" },
	{ "cdn_distribution_id", K_STR, O(cdn_distribution_id), "CloudFront distribution id" },
	{ "cdn_zone_id", K_STR, O(cdn_zone_id), "Cloudflare zone id" },
	{ "cdn_domain", K_STR, O(cdn_domain), "the CDN's host name (public URLs, Cloudflare purges)" },
	{ "cdn_endpoint", K_STR, O(cdn_endpoint), "CDN API base URL (tests, proxies)" },
	{ "cdn_path_prefix", K_STR, O(cdn_path_prefix), "path the CDN serves the mount under" },
	{ "invalidate_delay", K_DUR, O(invalidate_delay), "quiet seconds before purges go out (2)" },
	{ "flush_timeout", K_DUR, O(flush_timeout), "seconds unmount waits for purges (10)" },
	{ "cloudflare_batch", K_INT, O(cloudflare_batch), "URLs per Cloudflare purge call (100)" },
	{ "attr_index", K_FLAG, O(attr_index), "share attributes through PREFIX.cdnfs-attrs (1; 0 off)" },
	{ "attr_index_every", K_DUR, O(attr_index_every), "seconds between index writes of a long mount (600)" },
	{ "xattr_journal", K_FLAG, O(xattr_journal), "journal a staged file in its own xattr (1; 0: a file)" },
};

void conf_defaults(struct fs_conf *c)
{
	memset(c, 0, sizeof(*c));
	c->path_style = -1;
	c->cache_size = (uint64_t)1 << 30;
	c->stat_ttl = 60;
	c->writeback_delay = 1.0;
	c->parallel = 16;
	c->attr_index = 1;
	c->attr_index_every = 600.0;
	c->xattr_journal = 1;
	c->multipart_size = (uint64_t)8 << 20;
	c->copy_threshold = (uint64_t)5 << 30;
	c->read_chunk = (uint64_t)8 << 20;
	c->read_ahead = 8;
	c->timeout = 30;
	c->log_level = LOGL_INFO;
	c->uid = getuid();
	c->gid = getgid();
	c->umask = 022;
	c->invalidate_delay = 2;
	c->flush_timeout = 10;
	c->cloudflare_batch = 100;
}

void conf_release(struct fs_conf *c)
{
	for (size_t i = 0; i < ARRAY_SIZE(opts); i++)
		if (opts[i].kind == K_STR) {
			char **p = (char **)((char *)c + opts[i].off);

			free(*p);
			*p = NULL;
		}
	free(c->bucket);
	free(c->prefix);
	free(c->mountpoint);
	c->bucket = c->prefix = c->mountpoint = NULL;
}

int conf_parse_size(const char *s, uint64_t *out)
{
	char *end;
	double v;
	uint64_t mult = 1;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno || v < 0)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': mult = 1ULL << 10; end++; break;
	case 'm': case 'M': mult = 1ULL << 20; end++; break;
	case 'g': case 'G': mult = 1ULL << 30; end++; break;
	case 't': case 'T': mult = 1ULL << 40; end++; break;
	default: break;
	}
	if (mult > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
		end += strlen(end);
	if (*end || v * (double)mult > 1.8e19)
		return -EINVAL;
	*out = (uint64_t)(v * (double)mult);
	return 0;
}

int conf_parse_duration(const char *s, double *out)
{
	char *end;
	double v, mult = 1;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno || v < 0 || !isfinite(v))
		return -EINVAL;
	if (*end == 's')
		end++;
	else if (*end == 'm')
		mult = 60, end++;
	else if (*end == 'h')
		mult = 3600, end++;
	if (*end)
		return -EINVAL;
	*out = v * mult;
	return 0;
}

static int parse_bool(const char *v)
{
	if (!v || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on"))
		return 1;
	if (!strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off"))
		return 0;
	return -1;
}

static const struct opt *find(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(opts); i++)
		if (strcmp(opts[i].name, name) == 0)
			return &opts[i];
	return NULL;
}

int conf_known(const char *name)
{
	return find(name) != NULL;
}

static int set_value(struct fs_conf *c, const struct opt *o, const char *v)
{
	void *p = (char *)c + o->off;
	char *end;
	long l;
	int b;

	switch (o->kind) {
	case K_STR:
		if (!v || !*v)
			return -EINVAL;
		free(*(char **)p);
		*(char **)p = strdup(v);
		return *(char **)p ? 0 : -ENOMEM;
	case K_FLAG:
		b = parse_bool(v);
		if (b < 0)
			return -EINVAL;
		*(int *)p = b;
		return 0;
	case K_SIZE:
		return v ? conf_parse_size(v, p) : -EINVAL;
	case K_DUR:
		return v ? conf_parse_duration(v, p) : -EINVAL;
	case K_LEVEL:
		l = v ? log_parse_level(v) : -EINVAL;
		if (l < 0)
			return -EINVAL;
		*(int *)p = (int)l;
		return 0;
	case K_INT:
	case K_OCT:
		if (!v)
			return -EINVAL;
		errno = 0;
		l = strtol(v, &end, o->kind == K_OCT ? 8 : 10);
		if (*end || end == v || errno || l < 0 || l > 1L << 31)
			return -EINVAL;
		if (o->off == O(timeout))
			*(long *)p = l;
		else if (o->off == O(uid))
			*(uid_t *)p = (uid_t)l;
		else if (o->off == O(gid))
			*(gid_t *)p = (gid_t)l;
		else if (o->off == O(umask))
			*(mode_t *)p = (mode_t)(l & 0777);
		else
			*(int *)p = (int)l;
		return 0;
	}
	return -EINVAL;
}

/* Sanity bounds that a bad value would break later, far from its cause. */
static const char *check_bounds(const struct fs_conf *c, const struct opt *o)
{
	if (o->off == O(parallel) && (c->parallel < 1 || c->parallel > 256))
		return "must be 1 to 256";
	if (o->off == O(attr_index_every) && c->attr_index_every < 1)
		return "must be at least 1 second";
	if (o->off == O(multipart_size) &&
	    (c->multipart_size < (5ULL << 20) || c->multipart_size > (5ULL << 30)))
		return "must be 5M to 5G (S3's part size limits)";
	if (o->off == O(copy_threshold) &&
	    (c->copy_threshold < (5ULL << 20) || c->copy_threshold > (5ULL << 30)))
		return "must be 5M to 5G (CopyObject's limit is 5G)";
	if (o->off == O(read_chunk) && (c->read_chunk < 65536 || c->read_chunk > (1ULL << 30)))
		return "must be 64K to 1G";
	if (o->off == O(read_ahead) && c->read_ahead > 64)
		return "must be 0 to 64";
	if (o->off == O(timeout) && c->timeout < 1)
		return "must be at least 1";
	if (o->off == O(cache_size) && c->cache_size < (1ULL << 20))
		return "must be at least 1M";
	if (o->off == O(cloudflare_batch) && (c->cloudflare_batch < 1 || c->cloudflare_batch > 500))
		return "must be 1 to 500";
	if (o->off == O(cdn) && strcmp(c->cdn, "cloudfront") && strcmp(c->cdn, "cloudflare") &&
	    strcmp(c->cdn, "none"))
		return "must be cloudfront, cloudflare or none";
	return NULL;
}

int conf_set(struct fs_conf *c, const char *name, const char *value, struct buf *err)
{
	const struct opt *o = find(name);
	const char *why;
	int rc;

	if (!o) {
		(void)!buf_addf(err, "unknown option '%s'", name);
		return -EINVAL;
	}
	rc = set_value(c, o, value);
	if (rc == -ENOMEM)
		return rc;
	why = rc < 0 ? "not a valid value" : check_bounds(c, o);
	if (why) {
		(void)!buf_addf(err, "bad value '%s' for %s: %s", value ? value : "", name, why);
		return -EINVAL;
	}
	return 0;
}

int conf_set_bucket(struct fs_conf *c, const char *spec, struct buf *err)
{
	const char *colon = strchr(spec, ':');
	size_t bl = colon ? (size_t)(colon - spec) : strlen(spec);
	const char *p = colon ? colon + 1 : "";
	size_t pl;

	if (bl < 3 || bl > 63 || strspn(spec, "abcdefghijklmnopqrstuvwxyz0123456789.-_") < bl) {
		(void)!buf_addf(err, "'%.*s' is not a valid bucket name", (int)bl, spec);
		return -EINVAL;
	}
	while (*p == '/')
		p++;
	pl = strlen(p);
	while (pl && p[pl - 1] == '/')
		pl--;
	free(c->bucket);
	free(c->prefix);
	c->bucket = strndup(spec, bl);
	if (pl == 0)
		c->prefix = strdup("");
	else if (asprintf(&c->prefix, "%.*s/", (int)pl, p) < 0)
		c->prefix = NULL;
	return c->bucket && c->prefix ? 0 : -ENOMEM;
}

static int env_true(const char *name)
{
	const char *v = getenv(name);

	return v && (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") ||
		     !strcasecmp(v, "on"));
}

/* The seed's deployment modes: USE_CDN with CDN_DISTRIBUTION_ID is
 * CloudFront, with CLOUDFLARE_ZONE_ID Cloudflare. */
static int cdn_from_env(struct fs_conf *c, struct buf *err)
{
	const char *prov = NULL;

	if (!env_true("USE_CDN") || c->cdn)
		return 0;
	if (getenv("CDN_DISTRIBUTION_ID") && *getenv("CDN_DISTRIBUTION_ID"))
		prov = "cloudfront";
	else if (getenv("CLOUDFLARE_ZONE_ID") && *getenv("CLOUDFLARE_ZONE_ID"))
		prov = "cloudflare";
	if (!prov) {
		(void)!buf_addstr(err, "USE_CDN=true needs CDN_DISTRIBUTION_ID (CloudFront) or "
				       "CLOUDFLARE_ZONE_ID (Cloudflare)");
		return -EINVAL;
	}
	return conf_set(c, "cdn", prov, err);
}

int conf_from_env(struct fs_conf *c, struct buf *err)
{
	static const char *const map[][2] = {
		{ "AWS_S3_ENDPOINT_URL", "endpoint" },
		{ "AWS_S3_REGION_NAME", "region" },
		{ "AWS_CA_BUNDLE", "ca_file" },
		{ "CDN_DISTRIBUTION_ID", "cdn_distribution_id" },
		{ "CLOUDFLARE_ZONE_ID", "cdn_zone_id" },
		{ "CDN_DOMAIN", "cdn_domain" },
	};
	int rc = 0;

	if (env_true("AWS_S3_USE_ACCELERATE") && !c->endpoint)
		rc = conf_set(c, "endpoint", "https://s3-accelerate.amazonaws.com", err);

	for (size_t i = 0; i < ARRAY_SIZE(map) && rc == 0; i++) {
		const char *v = getenv(map[i][0]);
		const struct opt *o = find(map[i][1]);

		if (v && *v && !*(char **)((char *)c + o->off))
			rc = conf_set(c, map[i][1], v, err);
	}
	return rc ?: cdn_from_env(c, err);
}

const char *conf_help(void)
{
	static char text[8192];
	size_t off = 0;

	if (text[0])
		return text;
	for (size_t i = 0; i < ARRAY_SIZE(opts) && off < sizeof(text); i++) {
		char name[64];

		snprintf(name, sizeof(name), "%s%s", opts[i].name,
			 opts[i].kind == K_FLAG ? "" : "=...");
		off += (size_t)snprintf(text + off, sizeof(text) - off, "    -o %-20s %s\n", name,
					opts[i].help);
	}
	return text;
}

int conf_file_opt(void *arg, const char *section, const char *key, const char *value,
		  struct buf *err)
{
	char name[96];

	if (strcmp(section, "cdn") == 0 && strcmp(key, "provider") == 0)
		key = "cdn";
	else if (strcmp(section, "cdn") == 0 && !conf_known(key) &&
		 snprintf(name, sizeof(name), "cdn_%s", key) < (int)sizeof(name) &&
		 conf_known(name))
		key = name;
	return conf_set(arg, key, value, err);
}

int conf_in_list(const char *list, const char *name)
{
	size_t nl = strlen(name);

	for (const char *p = list; p && *p;) {
		size_t l = strcspn(p, ",");

		if (l == nl && strncasecmp(p, name, nl) == 0)
			return 1;
		p += l + (p[l] == ',');
	}
	return 0;
}
