/*
 * creds.c - AWS credentials and region, resolved like the AWS SDKs do
 * (see include/creds.h).
 *
 * Owns: the current credentials (struct creds_value) and where they came
 * from.  Sources are tried once, at creds_new: environment, then the profile
 * in the shared credentials file and the config file (read with ini_parse),
 * then EC2 instance metadata (IMDSv2).  Only instance-metadata credentials
 * expire; creds_get refreshes them when less than CREDS_REFRESH_S is left.
 *
 * Locking: c->lock protects val, refreshing and next_try.  It is never held
 * during an HTTP call: a refresh marks refreshing, unlocks, fetches, locks
 * and swaps the value in.  Other threads keep using the old value while it
 * is still valid, and wait on c->cond only when it has already expired.
 * After a failed refresh no new attempt starts for CREDS_RETRY_S, so a dead
 * metadata service costs one short timeout, not one per request.
 *
 * Secrets (keys, tokens, the IMDS session token) never reach the log, and
 * copies are wiped before their memory is freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "creds.h"
#include "http.h"
#include "ini.h"
#include "log.h"
#include "s3xml.h"

#define CREDS_REFRESH_S 300      /* refresh when this close to expiry */
#define CREDS_RETRY_S 10         /* after a failed refresh */
#define CREDS_FILE_MAX (1 << 20) /* ~/.aws files are small */
#define IMDS_DEFAULT "http://169.254.169.254"
#define IMDS_DEFAULT_V6 "http://[fd00:ec2::254]"
#define IMDS_BODY_MAX (64 << 10)
#define IMDS_TIMEOUT_S 2

enum creds_src { SRC_ENV, SRC_PROFILE, SRC_IMDS };

struct creds {
	struct http *http;      /* borrowed; NULL: no instance metadata */
	enum creds_src src;     /* fixed after creds_new */
	char source[192];       /* fixed after creds_new */
	char endpoint[256];     /* IMDS base URL without trailing '/' */
	pthread_mutex_t lock;   /* protects val, refreshing, next_try */
	pthread_cond_t cond;    /* broadcast when a refresh ends */
	struct creds_value val;
	int refreshing;         /* a thread is fetching from IMDS */
	time_t next_try;        /* no refresh before this, after a failure */
};

static void wipe(void *p, size_t n)
{
	explicit_bzero(p, n);
}

/* Copy s into out[cap]; -E2BIG when it does not fit. */
static int copy_str(char *out, size_t cap, const char *s)
{
	size_t n = strlen(s);

	if (n >= cap)
		return -E2BIG;
	memcpy(out, s, n + 1);
	return 0;
}

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

/* ------------------------------------------------------------- profiles */

struct prof_key {
	const char *name; /* matched case-insensitively, like botocore */
	char *out;
	size_t cap;
	int found;        /* a non-empty value was read */
};

struct prof_query {
	int is_config;
	const char *profile;
	struct prof_key *keys;
	size_t nkeys;
};

/* Is this the profile's section?  Credentials file: "[NAME]".  Config
 * file: "[profile NAME]", and "[default]" for the default profile. */
static int prof_section(const struct prof_query *q, const char *section, const char *sub)
{
	const char *p;

	if (sub)
		return 0;
	if (!q->is_config)
		return strcmp(section, q->profile) == 0;
	if (strcmp(q->profile, "default") == 0 && strcmp(section, "default") == 0)
		return 1;
	if (strncmp(section, "profile", 7) != 0 || (section[7] != ' ' && section[7] != '\t'))
		return 0;
	for (p = section + 7; *p == ' ' || *p == '\t'; p++)
		;
	return strcmp(p, q->profile) == 0;
}

static int prof_cb(void *arg, const char *section, const char *sub, const char *key,
		   const char *value, int line, struct buf *err)
{
	struct prof_query *q = arg;

	(void)line;
	if (!prof_section(q, section, sub))
		return 0;
	for (size_t i = 0; i < q->nkeys; i++) {
		struct prof_key *k = &q->keys[i];

		if (strcasecmp(key, k->name) != 0)
			continue;
		if (copy_str(k->out, k->cap, value) < 0) {
			/* never quote the value: it may be a secret */
			if (buf_addf(err, "value of '%s' is too long", k->name) < 0) {
				/* the error code alone has to do */
			}
			return -E2BIG;
		}
		k->found = *value != '\0'; /* the last one wins, as in botocore */
	}
	return 0;
}

static int prof_parse(const char *text, size_t len, struct prof_query *q, struct buf *err)
{
	for (size_t i = 0; i < q->nkeys; i++) {
		q->keys[i].found = 0;
		if (q->keys[i].cap)
			q->keys[i].out[0] = '\0';
	}
	return ini_parse(text, len, prof_cb, q, err);
}

int creds_profile_value(const char *text, size_t len, int is_config, const char *profile,
			const char *key, char *out, size_t cap)
{
	struct prof_key k = { .name = key, .out = out, .cap = cap };
	struct prof_query q = { .is_config = is_config, .profile = profile, .keys = &k,
				.nkeys = 1 };
	int rc;

	if (!cap)
		return -EINVAL;
	rc = prof_parse(text, len, &q, NULL);
	if (rc < 0)
		out[0] = '\0';
	return rc < 0 ? rc : k.found;
}

/* The path of the credentials (is_config 0) or config file into path[cap]:
 * $AWS_SHARED_CREDENTIALS_FILE / $AWS_CONFIG_FILE or ~/.aws/..., with a
 * leading "~/" meaning $HOME.  0, or 1 when there is no path (no HOME). */
static int prof_path(int is_config, char *path, size_t cap)
{
	const char *v = env_nonempty(is_config ? "AWS_CONFIG_FILE" : "AWS_SHARED_CREDENTIALS_FILE");
	const char *home = env_nonempty("HOME");
	int n;

	if (!v)
		v = is_config ? "~/.aws/config" : "~/.aws/credentials";
	if (v[0] == '~' && (v[1] == '/' || v[1] == '\0')) {
		if (!home)
			return 1;
		n = snprintf(path, cap, "%s%s", home, v + 1);
	} else {
		n = snprintf(path, cap, "%s", v);
	}
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* Read a whole file into b.  1 when read, 0 when it does not exist. */
static int read_file(const char *path, struct buf *b, struct buf *err)
{
	char chunk[4096];
	ssize_t n;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		rc = -errno;
		goto out;
	}
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		rc = n < 0 ? -errno : buf_add(b, chunk, (size_t)n);
		if (rc < 0)
			goto out;
	}
	rc = 1;
out:
	wipe(chunk, sizeof(chunk));
	if (fd >= 0)
		close(fd);
	if (rc < 0 && err && buf_addf(err, "cannot read '%s': %s", path,
				     rc == -E2BIG ? "file too large" : strerror(-rc)) < 0) {
		/* the error code alone has to do */
	}
	return rc;
}

/* Look the query up in the credentials or config file.  path gets the file
 * name.  1 when the file exists, 0 when it does not, -errno with a message
 * in err ("cannot parse 'PATH': LINE: ..."). */
static int prof_file(struct prof_query *q, char *path, size_t cap, struct buf *err)
{
	struct buf text, msg;
	int rc;

	buf_init(&text, CREDS_FILE_MAX);
	buf_init(&msg, 0);
	rc = prof_path(q->is_config, path, cap);
	if (rc != 0) {
		rc = rc > 0 ? 0 : rc;
		goto out;
	}
	rc = read_file(path, &text, err);
	if (rc <= 0)
		goto out;
	rc = prof_parse(buf_str(&text), text.len, q, &msg);
	if (rc < 0) {
		if (err && buf_addf(err, "cannot parse '%s': %s", path, buf_str(&msg)) < 0) {
			/* the error code alone has to do */
		}
		goto out;
	}
	rc = 1;
out:
	if (text.data)
		wipe(text.data, text.len);
	buf_release(&text);
	buf_release(&msg);
	return rc;
}

static const char *profile_name(void)
{
	const char *p = env_nonempty("AWS_PROFILE");

	return p ? p : "default";
}

/* ------------------------------------------------------------ the chain */

static void set_err(struct buf *err, const char *fmt, ...) PRINTF(2, 3);

static void set_err(struct buf *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	buf_reset(err);
	va_start(ap, fmt);
	if (buf_vaddf(err, fmt, ap) < 0) {
		/* the error code alone has to do */
	}
	va_end(ap);
}

/* 1 found, 0 not set, -errno. */
static int from_env(struct creds *c, struct buf *err)
{
	const char *ak = env_nonempty("AWS_ACCESS_KEY_ID");
	const char *sk = env_nonempty("AWS_SECRET_ACCESS_KEY");
	const char *tok = env_nonempty("AWS_SESSION_TOKEN");

	if (!ak && !sk)
		return 0;
	if (!ak || !sk) {
		set_err(err, "%s is set but %s is not",
			ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
			ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
		return -EINVAL;
	}
	if (copy_str(c->val.access_key, sizeof(c->val.access_key), ak) < 0 ||
	    copy_str(c->val.secret_key, sizeof(c->val.secret_key), sk) < 0 ||
	    copy_str(c->val.session_token, sizeof(c->val.session_token), tok ? tok : "") < 0) {
		set_err(err, "AWS credentials in the environment are too long");
		return -E2BIG;
	}
	c->src = SRC_ENV;
	snprintf(c->source, sizeof(c->source), "environment");
	return 1;
}

/* The credentials file, then the config file.  1 found, 0 not, -errno. */
static int from_profile(struct creds *c, const char *profile, struct buf *err)
{
	struct creds_value *v = &c->val;
	struct prof_key keys[] = {
		{ "aws_access_key_id", v->access_key, sizeof(v->access_key), 0 },
		{ "aws_secret_access_key", v->secret_key, sizeof(v->secret_key), 0 },
		{ "aws_session_token", v->session_token, sizeof(v->session_token), 0 },
	};
	struct prof_query q = { .profile = profile, .keys = keys, .nkeys = ARRAY_SIZE(keys) };
	char path[4096];
	int rc = 0;

	for (q.is_config = 0; q.is_config <= 1; q.is_config++) {
		if (err)
			buf_reset(err);
		rc = prof_file(&q, path, sizeof(path), err);
		if (rc < 0)
			return rc;
		if (rc == 0 || !keys[0].found)
			continue;
		if (!keys[1].found) {
			set_err(err, "profile '%s' in '%s' has aws_access_key_id but no "
				     "aws_secret_access_key", profile, path);
			return -EINVAL;
		}
		c->src = SRC_PROFILE;
		snprintf(c->source, sizeof(c->source), "profile %.180s", profile);
		return 1;
	}
	wipe(v, sizeof(*v));
	return 0;
}

/* ------------------------------------------------------ instance metadata */

/* One IMDS request; the 200 body goes into body.  hdr is one header line.
 * -errno with a message in err otherwise (no secret in it). */
static int imds_call(struct http *http, const char *method, const char *url, const char *hdr,
		     struct buf *body, struct buf *err)
{
	const char *hdrs[1] = { hdr };
	struct http_req req = {
		.method = method, .url = url, .headers = hdrs, .nheaders = 1,
		.body_kind = HTTP_BODY_NONE, .sink_kind = HTTP_SINK_BUF,
		.max_body = IMDS_BODY_MAX, .no_retry = 1, .timeout_s = IMDS_TIMEOUT_S,
		.connect_timeout_ms = 1000,
	};
	struct http_resp resp;
	int rc;

	rc = http_do(http, &req, &resp);
	if (rc < 0) {
		set_err(err, "cannot reach '%s': %s", url,
			resp.errmsg[0] ? resp.errmsg : strerror(-rc));
		goto out;
	}
	if (resp.status != 200) {
		set_err(err, "'%s' answered HTTP %ld", url, resp.status);
		rc = resp.status == 404 ? -ENOENT : resp.status == 401 || resp.status == 403 ?
					      -EACCES : -EIO;
		goto out;
	}
	buf_reset(body);
	rc = buf_add(body, buf_str(&resp.body), resp.body.len);
	if (rc < 0)
		set_err(err, "cannot read the answer of '%s': %s", url, strerror(-rc));
out:
	if (resp.body.data)
		wipe(resp.body.data, resp.body.len);
	http_resp_release(&resp);
	return rc;
}

/* The first line of the role list, checked to be an IAM role name
 * ([A-Za-z0-9+=,.@_-], at most 64) so it is safe in a URL path. */
static int imds_role(const char *list, char *role, size_t cap)
{
	size_t n = strcspn(list, "\r\n");

	if (n == 0 || n > 64 || n >= cap)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char ch = list[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      strchr("+=,.@_-", ch)))
			return -EINVAL;
	}
	memcpy(role, list, n);
	role[n] = '\0';
	return 0;
}

/* The IMDS session token: printable ASCII, no spaces, non-empty. */
static int imds_token_ok(const struct buf *b)
{
	if (b->len == 0 || b->len > 1024)
		return 0;
	for (size_t i = 0; i < b->len; i++)
		if (b->data[i] <= ' ' || b->data[i] > '~')
			return 0;
	return 1;
}

/* IMDSv2: token, role name, role credentials. */
static int imds_fetch(struct http *http, const char *ep, struct creds_value *out, struct buf *err)
{
	struct buf url, hdr, body;
	char role[72];
	int rc;

	buf_init(&url, 4096);
	buf_init(&hdr, 4096);
	buf_init(&body, IMDS_BODY_MAX);
	rc = buf_addf(&url, "%s/latest/api/token", ep);
	if (rc == 0)
		rc = imds_call(http, "PUT", buf_str(&url),
			       "X-aws-ec2-metadata-token-ttl-seconds: 21600", &body, err);
	if (rc < 0)
		goto out;
	if (!imds_token_ok(&body)) {
		set_err(err, "'%s' answered with an invalid token", buf_str(&url));
		rc = -EBADMSG;
		goto out;
	}
	rc = buf_addf(&hdr, "X-aws-ec2-metadata-token: %s", buf_str(&body));
	buf_reset(&url);
	if (rc == 0)
		rc = buf_addf(&url, "%s/latest/meta-data/iam/security-credentials/", ep);
	if (rc == 0)
		rc = imds_call(http, "GET", buf_str(&url), buf_str(&hdr), &body, err);
	if (rc < 0)
		goto out;
	if (imds_role(buf_str(&body), role, sizeof(role)) < 0) {
		set_err(err, "'%s' answered without a valid role name", buf_str(&url));
		rc = -EBADMSG;
		goto out;
	}
	rc = buf_addstr(&url, role);
	if (rc == 0)
		rc = imds_call(http, "GET", buf_str(&url), buf_str(&hdr), &body, err);
	if (rc < 0)
		goto out;
	rc = creds_parse_imds_json(buf_str(&body), body.len, out);
	if (rc < 0)
		set_err(err, "'%s' answered with unusable credentials", buf_str(&url));
out:
	if (hdr.data)
		wipe(hdr.data, hdr.len);
	if (body.data)
		wipe(body.data, body.len);
	buf_release(&url);
	buf_release(&hdr);
	buf_release(&body);
	return rc;
}

static int imds_disabled(void)
{
	const char *v = getenv("AWS_EC2_METADATA_DISABLED");

	return v && strcasecmp(v, "true") == 0;
}

static int imds_endpoint(char *out, size_t cap)
{
	const char *ep = env_nonempty("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	const char *mode = env_nonempty("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
	size_t n;

	if (!ep)
		ep = mode && strcasecmp(mode, "IPv6") == 0 ? IMDS_DEFAULT_V6 : IMDS_DEFAULT;
	n = strlen(ep);
	while (n && ep[n - 1] == '/')
		n--;
	if (n == 0 || n >= cap)
		return -EINVAL;
	memcpy(out, ep, n);
	out[n] = '\0';
	return 0;
}

/* 1 found, 0 not tried (disabled or no http), -errno with reason in err. */
static int from_imds(struct creds *c, struct buf *err)
{
	int rc;

	if (!c->http || imds_disabled())
		return 0;
	rc = imds_endpoint(c->endpoint, sizeof(c->endpoint));
	if (rc < 0) {
		set_err(err, "invalid AWS_EC2_METADATA_SERVICE_ENDPOINT");
		return rc;
	}
	rc = imds_fetch(c->http, c->endpoint, &c->val, err);
	if (rc < 0)
		return rc;
	c->src = SRC_IMDS;
	snprintf(c->source, sizeof(c->source), "instance metadata");
	return 1;
}

/* Resolve the chain into c.  1 found, -errno with err set otherwise. */
static int creds_resolve(struct creds *c, struct buf *err)
{
	const char *profile = profile_name();
	struct buf why;
	int rc;

	buf_init(&why, 0);
	rc = from_env(c, err);
	if (rc == 0)
		rc = from_profile(c, profile, err);
	if (rc == 0) {
		rc = from_imds(c, &why);
		if (rc <= 0) {
			set_err(err, "no AWS credentials found (environment, profile '%s', "
				     "instance metadata%s%s)", profile, rc < 0 ? ": " : "",
				rc < 0 ? buf_str(&why) : "");
			rc = -ENOKEY;
		}
	}
	buf_release(&why);
	return rc;
}

int creds_new(struct creds **out, struct http *http, struct buf *err)
{
	struct creds *c = calloc(1, sizeof(*c));
	int rc;

	*out = NULL;
	if (!c) {
		set_err(err, "out of memory");
		return -ENOMEM;
	}
	c->http = http;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	rc = creds_resolve(c, err);
	if (rc < 0) {
		creds_free(c);
		return rc;
	}
	if (err)
		buf_reset(err);
	log_debug("AWS credentials from %s", c->source);
	*out = c;
	return 0;
}

void creds_free(struct creds *c)
{
	if (!c)
		return;
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	wipe(c, sizeof(*c));
	free(c);
}

const char *creds_source(const struct creds *c)
{
	return c->source;
}

/* Called with c->lock held and refreshing claimed; drops the lock for the
 * fetch.  Returns with the lock held. */
static void creds_refresh_locked(struct creds *c)
{
	struct creds_value fresh;
	struct buf err;
	int rc;

	buf_init(&err, 0);
	c->refreshing = 1;
	pthread_mutex_unlock(&c->lock);
	rc = imds_fetch(c->http, c->endpoint, &fresh, &err);
	pthread_mutex_lock(&c->lock);
	c->refreshing = 0;
	if (rc == 0) {
		c->val = fresh;
		log_debug("refreshed AWS credentials from instance metadata");
	} else {
		c->next_try = time(NULL) + CREDS_RETRY_S;
		log_warn("cannot refresh AWS credentials from instance metadata: %s", buf_str(&err));
	}
	pthread_cond_broadcast(&c->cond);
	wipe(&fresh, sizeof(fresh));
	buf_release(&err);
}

int creds_get(struct creds *c, struct creds_value *out)
{
	time_t now = time(NULL);
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	while (c->src == SRC_IMDS && c->val.expires && c->val.expires - now < CREDS_REFRESH_S) {
		if (!c->refreshing && now >= c->next_try) {
			creds_refresh_locked(c);
			now = time(NULL);
			break;
		}
		if (!c->refreshing || c->val.expires > now)
			break; /* still valid, or a recent refresh failed */
		pthread_cond_wait(&c->cond, &c->lock);
		now = time(NULL);
	}
	if (c->val.expires && c->val.expires <= now)
		rc = -EKEYEXPIRED;
	else
		*out = c->val;
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* ------------------------------------------------------------- region */

int creds_region(char *out, size_t cap)
{
	const char *r = env_nonempty("AWS_REGION");
	struct prof_key key = { .name = "region", .out = out, .cap = cap };
	struct prof_query q = { .is_config = 1, .profile = profile_name(), .keys = &key,
				.nkeys = 1 };
	struct buf err;
	char path[4096];
	int rc;

	if (!cap)
		return -EINVAL;
	if (!r)
		r = env_nonempty("AWS_DEFAULT_REGION");
	if (r)
		return copy_str(out, cap, r) < 0 ? -E2BIG : 1;
	buf_init(&err, 0);
	rc = prof_file(&q, path, sizeof(path), &err);
	if (rc < 0)
		log_error("%s", buf_str(&err));
	buf_release(&err);
	if (rc < 0)
		out[0] = '\0';
	return rc < 0 ? rc : key.found;
}

/* ---------------------------------------------------------- IMDS JSON */

struct json {
	const char *p, *end;
};

static void json_ws(struct json *j)
{
	while (j->p < j->end && *j->p && strchr(" \t\r\n", *j->p))
		j->p++;
}

static int json_hex4(struct json *j, unsigned *out)
{
	unsigned v = 0;

	if (j->end - j->p < 4)
		return -EINVAL;
	for (int i = 0; i < 4; i++) {
		char ch = *j->p++;
		int d = ch >= '0' && ch <= '9'   ? ch - '0'
			: ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
			: ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
						 : -1;

		if (d < 0)
			return -EINVAL;
		v = v << 4 | (unsigned)d;
	}
	*out = v;
	return 0;
}

/* \uXXXX (after the 'u'), with a surrogate pair, as UTF-8; no U+0000. */
static int json_uescape(struct json *j, struct buf *out)
{
	unsigned cp, lo;
	char u[4];
	size_t n;

	if (json_hex4(j, &cp) < 0 || cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff))
		return -EINVAL;
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
			return -EINVAL;
		j->p += 2;
		if (json_hex4(j, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
			return -EINVAL;
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	}
	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | cp >> 6);
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | cp >> 12);
		u[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | cp >> 18);
		u[1] = (char)(0x80 | (cp >> 12 & 0x3f));
		u[2] = (char)(0x80 | (cp >> 6 & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return buf_add(out, u, n);
}

/* A string starting at '"' into out (reset first). */
static int json_string(struct json *j, struct buf *out)
{
	static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
	int rc = 0;

	buf_reset(out);
	if (j->p >= j->end || *j->p != '"')
		return -EINVAL;
	for (j->p++; rc == 0; j->p++) {
		const char *e;

		if (j->p >= j->end || (unsigned char)*j->p < 0x20)
			return -EINVAL;
		if (*j->p == '"')
			break;
		if (*j->p != '\\') {
			rc = buf_addch(out, *j->p);
			continue;
		}
		if (++j->p >= j->end)
			return -EINVAL;
		if (*j->p == 'u') {
			j->p++;
			rc = json_uescape(j, out);
			j->p--;
			continue;
		}
		e = *j->p ? strchr(esc_in, *j->p) : NULL;
		if (!e)
			return -EINVAL;
		rc = buf_addch(out, esc_out[e - esc_in]);
	}
	if (rc < 0)
		return rc;
	j->p++;
	return buf_add(out, "", 0); /* make an empty string a real "" */
}

/* A number, true, false or null: skipped. */
static int json_skip_scalar(struct json *j)
{
	const char *start = j->p;

	while (j->p < j->end && *j->p && (strchr("+-.eE", *j->p) || (*j->p >= '0' && *j->p <= '9') ||
					  (*j->p >= 'a' && *j->p <= 'z')))
		j->p++;
	return j->p > start ? 0 : -EINVAL;
}

struct imds_fields {
	struct buf ak, sk, tok, exp, code;
	int has_ak, has_sk, has_tok, has_exp, has_code;
};

/* Store a member's value when it is one we want. */
static int imds_member(struct imds_fields *f, const char *key, struct json *j)
{
	static const char *const names[] = { "AccessKeyId", "SecretAccessKey", "Token",
					     "Expiration", "Code" };
	struct buf *dst[] = { &f->ak, &f->sk, &f->tok, &f->exp, &f->code };
	int *has[] = { &f->has_ak, &f->has_sk, &f->has_tok, &f->has_exp, &f->has_code };
	struct buf skip;
	int rc;

	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		if (strcmp(key, names[i]) != 0)
			continue;
		if (j->p >= j->end || *j->p != '"')
			return -EINVAL; /* these must be strings */
		*has[i] = 1;
		return json_string(j, dst[i]);
	}
	if (j->p < j->end && *j->p == '"') {
		buf_init(&skip, IMDS_BODY_MAX);
		rc = json_string(j, &skip);
		buf_release(&skip);
		return rc;
	}
	return json_skip_scalar(j); /* objects and arrays are not expected */
}

/* The members of a flat object. */
static int imds_object(struct json *j, struct imds_fields *f)
{
	struct buf key;
	int rc = -EINVAL;

	buf_init(&key, 1024);
	json_ws(j);
	if (j->p >= j->end || *j->p++ != '{')
		goto out;
	json_ws(j);
	if (j->p < j->end && *j->p == '}') {
		j->p++;
		rc = 0;
		goto out;
	}
	for (;;) {
		json_ws(j);
		if ((rc = json_string(j, &key)) < 0)
			goto out;
		json_ws(j);
		rc = -EINVAL;
		if (j->p >= j->end || *j->p++ != ':')
			goto out;
		json_ws(j);
		if ((rc = imds_member(f, buf_str(&key), j)) < 0)
			goto out;
		json_ws(j);
		rc = -EINVAL;
		if (j->p >= j->end)
			goto out;
		if (*j->p == '}')
			break;
		if (*j->p++ != ',')
			goto out;
	}
	j->p++;
	rc = 0;
out:
	buf_release(&key);
	return rc;
}

static int imds_fill(const struct imds_fields *f, struct creds_value *out)
{
	struct timespec ts;

	if (f->has_code && strcmp(buf_str(&f->code), "Success") != 0)
		return -EINVAL;
	if (!f->has_ak || !f->has_sk || !f->has_tok || !f->has_exp || !f->ak.len || !f->sk.len ||
	    !f->tok.len)
		return -EINVAL;
	if (s3_parse_time(buf_str(&f->exp), &ts) < 0 || ts.tv_sec <= 0)
		return -EINVAL;
	if (copy_str(out->access_key, sizeof(out->access_key), buf_str(&f->ak)) < 0 ||
	    copy_str(out->secret_key, sizeof(out->secret_key), buf_str(&f->sk)) < 0 ||
	    copy_str(out->session_token, sizeof(out->session_token), buf_str(&f->tok)) < 0)
		return -EINVAL;
	out->expires = ts.tv_sec;
	return 0;
}

int creds_parse_imds_json(const char *json, size_t len, struct creds_value *out)
{
	struct json j = { json, json ? json + len : NULL };
	struct imds_fields f;
	struct buf *all[] = { &f.ak, &f.sk, &f.tok, &f.exp, &f.code };
	int rc;

	memset(&f, 0, sizeof(f));
	for (size_t i = 0; i < ARRAY_SIZE(all); i++)
		buf_init(all[i], IMDS_BODY_MAX);
	memset(out, 0, sizeof(*out));
	rc = json ? imds_object(&j, &f) : -EINVAL;
	if (rc == 0) {
		json_ws(&j);
		rc = j.p == j.end ? imds_fill(&f, out) : -EINVAL;
	}
	for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
		if (all[i]->data)
			wipe(all[i]->data, all[i]->len);
		buf_release(all[i]);
	}
	if (rc < 0) {
		wipe(out, sizeof(*out));
		rc = -EINVAL;
	}
	return rc;
}
