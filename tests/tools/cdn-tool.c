/*
 * cdn-tool.c - drive the CDN queue (include/cdn.h) from stdin, so that
 * tests/integration/test_cdn_api.py can test it against tests/fakecdn.py
 * without a mount.
 *
 *   cdn-tool KEY=VALUE...
 *     provider=cloudfront|cloudflare|none distribution_id= zone_id= domain=
 *     endpoint= path_prefix= journal_dir= invalidate_delay= max_delay=
 *     flush_timeout= cloudflare_batch= collapse_min= retry_base= retry_max=
 *     poll_interval= request_timeout= (seconds may be fractional)
 *     log_level=error|warn|info|debug   start=0 (do not start the dispatcher)
 *   AWS credentials come from the environment (CloudFront), the Cloudflare
 *   token from CLOUDFLARE_API_TOKEN.
 *
 * Commands, one a line; each answers one line on stdout:
 *   purge PATH          "ok" or "error: MESSAGE"    (PATH: the rest of the line)
 *   purgedir PATH       the same, a directory ("" or "/" is the root)
 *   flush [SECONDS]     "flushed" or "error: MESSAGE"
 *   last PATH           "PROVIDER ID STATUS" or "none"
 *   stats               the stats JSON
 *   sleep SECONDS       "slept"
 *   exit [SECONDS]      "left N" (cdn_shutdown), then exit 0; EOF does the same
 * A configuration the queue refuses: "cdn-tool: MESSAGE" on stderr, exit 2.
 * Log lines go to stderr.
 *
 * Owns: the http pool, the credentials and the queue, for the whole run.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cdn.h"
#include "creds.h"
#include "http.h"
#include "log.h"
#include "s3xml.h"

struct opts {
	struct cdn_conf conf;
	int start;
	int level;
};

static int set_num(const char *k, const char *v, struct cdn_conf *c)
{
	static const struct {
		const char *name;
		size_t off;
	} durs[] = {
		{ "invalidate_delay", offsetof(struct cdn_conf, invalidate_delay) },
		{ "max_delay", offsetof(struct cdn_conf, max_delay) },
		{ "flush_timeout", offsetof(struct cdn_conf, flush_timeout) },
		{ "retry_base", offsetof(struct cdn_conf, retry_base) },
		{ "retry_max", offsetof(struct cdn_conf, retry_max) },
		{ "poll_interval", offsetof(struct cdn_conf, poll_interval) },
		{ "request_timeout", offsetof(struct cdn_conf, request_timeout) },
	};
	char *end;

	for (size_t i = 0; i < sizeof(durs) / sizeof(durs[0]); i++) {
		if (strcmp(k, durs[i].name) == 0) {
			*(double *)((char *)c + durs[i].off) = strtod(v, &end);
			return *end ? -EINVAL : 0;
		}
	}
	if (strcmp(k, "cloudflare_batch") == 0 || strcmp(k, "collapse_min") == 0) {
		long n = strtol(v, &end, 10);

		if (*end)
			return -EINVAL;
		if (k[1] == 'l')
			c->cloudflare_batch = (int)n;
		else
			c->collapse_min = (int)n;
		return 0;
	}
	return -ENOENT;
}

static int set_opt(struct opts *o, const char *arg)
{
	const char *eq = strchr(arg, '=');
	char k[64];
	const char *v;
	struct cdn_conf *c = &o->conf;
	int rc;

	if (!eq || (size_t)(eq - arg) >= sizeof(k))
		return -EINVAL;
	snprintf(k, sizeof(k), "%.*s", (int)(eq - arg), arg);
	v = eq + 1;
	if (strcmp(k, "provider") == 0)
		return cdn_provider_parse(v, &c->provider);
	if (strcmp(k, "distribution_id") == 0)
		c->distribution_id = v;
	else if (strcmp(k, "zone_id") == 0)
		c->zone_id = v;
	else if (strcmp(k, "domain") == 0)
		c->domain = v;
	else if (strcmp(k, "endpoint") == 0)
		c->endpoint = v;
	else if (strcmp(k, "path_prefix") == 0)
		c->path_prefix = v;
	else if (strcmp(k, "journal_dir") == 0)
		c->journal_dir = v;
	else if (strcmp(k, "start") == 0)
		o->start = strcmp(v, "0") != 0;
	else if (strcmp(k, "log_level") == 0) {
		rc = log_parse_level(v);
		if (rc < 0)
			return rc;
		o->level = rc;
	} else
		return set_num(k, v, c);
	return 0;
}

static void answer_err(int rc)
{
	printf("error: %s\n", strerror(-rc));
}

static double arg_seconds(const char *a, double def)
{
	char *end;
	double d;

	if (!a || !*a)
		return def;
	d = strtod(a, &end);
	return *end ? def : d;
}

/* One command; returns 1 to stop. */
static int command(struct cdn *cdn, char *line)
{
	char *arg = strchr(line, ' ');
	struct buf out;
	int rc;

	if (arg)
		*arg++ = '\0';
	buf_init(&out, 0);
	if (strcmp(line, "purge") == 0 || strcmp(line, "purgedir") == 0) {
		rc = cdn_purge(cdn, arg ? arg : "", line[5] == 'd');
		if (rc < 0)
			answer_err(rc);
		else
			printf("ok\n");
	} else if (strcmp(line, "flush") == 0) {
		rc = cdn_flush(cdn, arg_seconds(arg, 0));
		if (rc < 0)
			answer_err(rc);
		else
			printf("flushed\n");
	} else if (strcmp(line, "last") == 0) {
		rc = cdn_last(cdn, arg ? arg : "", &out);
		printf("%s\n", rc == 0 ? buf_str(&out) : "none");
	} else if (strcmp(line, "stats") == 0) {
		rc = cdn_stats_json(cdn, &out);
		printf("%s\n", rc == 0 ? buf_str(&out) : "{}");
	} else if (strcmp(line, "sleep") == 0) {
		double s = arg_seconds(arg, 0);
		struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };

		nanosleep(&ts, NULL);
		printf("slept\n");
	} else if (strcmp(line, "exit") == 0) {
		printf("left %zu\n", cdn_shutdown(cdn, arg_seconds(arg, -1)));
		buf_release(&out);
		return 1;
	} else {
		printf("error: unknown command '%s'\n", line);
	}
	buf_release(&out);
	return 0;
}

/* The queue's dependencies; creds only for CloudFront. */
static int setup(struct opts *o, struct http **http, struct creds **creds, struct cdn **cdn)
{
	struct http_conf hc = { .max_retries = -1, .timeout_s = 30 };
	struct buf err;
	int rc;

	buf_init(&err, 4096);
	rc = http_new(http, &hc);
	if (rc == 0 && o->conf.provider == CDN_CLOUDFRONT &&
	    creds_new(creds, NULL, &err) < 0) {
		fprintf(stderr, "cdn-tool: note: %s\n", buf_str(&err));
		*creds = NULL;
	}
	if (rc == 0)
		rc = cdn_new(cdn, &o->conf, *http, *creds, &err);
	if (rc < 0)
		fprintf(stderr, "cdn-tool: %s\n", err.len ? buf_str(&err) : strerror(-rc));
	if (rc == 0 && o->start)
		rc = cdn_start(*cdn);
	buf_release(&err);
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o = { .start = 1, .level = LOGL_INFO };
	struct http *http = NULL;
	struct creds *creds = NULL;
	struct cdn *cdn = NULL;
	char *line = NULL;
	size_t cap = 0;
	int rc = 0, stop = 0;

	s3xml_init();
	for (int i = 1; i < argc; i++) {
		if (set_opt(&o, argv[i]) < 0) {
			fprintf(stderr, "cdn-tool: bad argument '%s'\n", argv[i]);
			return 2;
		}
	}
	log_init(0, (enum log_level)o.level);
	if (setup(&o, &http, &creds, &cdn) < 0) {
		rc = 2;
		goto out;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (!stop) {
		ssize_t n = getline(&line, &cap, stdin);

		if (n < 0) {
			printf("left %zu\n", cdn_shutdown(cdn, -1));
			break;
		}
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n)
			stop = command(cdn, line);
	}
out:
	free(line);
	cdn_free(cdn);
	creds_free(creds);
	http_free(http);
	return rc;
}
