/*
 * test_creds.c - s3/creds.c: profile files, the IMDS JSON reader, the
 * credential chain through the environment and temporary AWS files, the
 * region order, and IMDSv2 against a fake metadata server on 127.0.0.1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "creds.h"
#include "http.h"
#include "s3xml.h"
#include "tap.h"

#define L(s) s, sizeof(s) - 1

static char tmpdir[256];

/* ------------------------------------------------------------ helpers */

static const char creds_text[] =
	"# written by aws configure\n"
	"[default]\n"
	"aws_access_key_id = AKIDDEFAULT\n"
	"aws_secret_access_key=  secret/default+1  \n"
	"; a comment\n"
	"\n"
	"[dev]\n"
	"\taws_access_key_id=AKIDDEV\r\n"
	"AWS_SECRET_ACCESS_KEY = secretdev\r\n"
	"aws_session_token = tokendev\n"
	"[empty]\n"
	"aws_access_key_id =\n"
	"[twice]\n"
	"aws_access_key_id = first\n"
	"aws_access_key_id = second\n"
	"[profile dev]\n"
	"aws_access_key_id = NOT-IN-A-CREDENTIALS-FILE\n";

static const char config_text[] =
	"[default]\n"
	"region = eu-west-1\n"
	"output = json\n"
	"[profile dev]\n"
	"region = us-west-2\n"
	"s3 =\n"
	"    max_concurrent_requests = 20\n"
	"[dev]\n"
	"region = wrong-section\n"
	"[profile   spaced]\n"
	"region = ap-south-1\n"
	"[profile cfgkeys]\n"
	"aws_access_key_id = AKIDCFG\n"
	"aws_secret_access_key = secretcfg\n";

static int write_file(const char *name, const char *text, char *path, size_t cap)
{
	FILE *f;

	snprintf(path, cap, "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	if (!f)
		return -errno;
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -EIO;
}

/* A clean AWS environment: nothing set, no network for IMDS. */
static void env_reset(void)
{
	static const char *const vars[] = {
		"AWS_ACCESS_KEY_ID",	 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_PROFILE",		 "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
		"AWS_REGION",		 "AWS_DEFAULT_REGION",	  "AWS_EC2_METADATA_SERVICE_ENDPOINT",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
	};

	for (size_t i = 0; i < ARRAY_SIZE(vars); i++)
		unsetenv(vars[i]);
	setenv("HOME", tmpdir, 1); /* no .aws there unless a test makes one */
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
}

/* ------------------------------------------------------------ profiles */

static void test_profile_value(void)
{
	char v[64];
	int rc;

	rc = creds_profile_value(L(creds_text), 0, "default", "aws_access_key_id", v, sizeof(v));
	is_int(rc, 1, "default access key found");
	is_str(v, "AKIDDEFAULT", "default access key");
	rc = creds_profile_value(L(creds_text), 0, "default", "aws_secret_access_key", v,
				 sizeof(v));
	is_str(v, "secret/default+1", "secret trimmed, '/' and '+' kept");
	rc = creds_profile_value(L(creds_text), 0, "default", "aws_session_token", v, sizeof(v));
	is_int(rc, 0, "default has no token");
	is_str(v, "", "absent -> \"\"");
	rc = creds_profile_value(L(creds_text), 0, "dev", "aws_secret_access_key", v, sizeof(v));
	is_int(rc, 1, "dev secret (upper-case key, CRLF)");
	is_str(v, "secretdev", "dev secret");
	rc = creds_profile_value(L(creds_text), 0, "dev", "aws_access_key_id", v, sizeof(v));
	is_str(v, "AKIDDEV", "dev key (tab-indented)");
	rc = creds_profile_value(L(creds_text), 0, "dev", "aws_session_token", v, sizeof(v));
	is_str(v, "tokendev", "dev token");
	rc = creds_profile_value(L(creds_text), 0, "nope", "aws_access_key_id", v, sizeof(v));
	is_int(rc, 0, "missing profile -> 0");
	rc = creds_profile_value(L(creds_text), 0, "empty", "aws_access_key_id", v, sizeof(v));
	is_int(rc, 0, "empty value -> 0");
	rc = creds_profile_value(L(creds_text), 0, "twice", "aws_access_key_id", v, sizeof(v));
	is_str(v, "second", "the last value wins");
	rc = creds_profile_value(L(creds_text), 1, "dev", "aws_access_key_id", v, sizeof(v));
	is_str(v, "NOT-IN-A-CREDENTIALS-FILE", "is_config reads [profile dev]");
	rc = creds_profile_value(L(creds_text), 1, "default", "aws_access_key_id", v, sizeof(v));
	is_str(v, "AKIDDEFAULT", "is_config reads [default]");

	rc = creds_profile_value(L(config_text), 1, "default", "region", v, sizeof(v));
	is_int(rc, 1, "config default region found");
	is_str(v, "eu-west-1", "config default region");
	rc = creds_profile_value(L(config_text), 1, "dev", "region", v, sizeof(v));
	is_str(v, "us-west-2", "config [profile dev], not [dev]");
	rc = creds_profile_value(L(config_text), 1, "spaced", "region", v, sizeof(v));
	is_str(v, "ap-south-1", "config [profile   spaced]");
	rc = creds_profile_value(L(config_text), 0, "dev", "region", v, sizeof(v));
	is_str(v, "wrong-section", "credentials-style lookup reads [dev]");
	rc = creds_profile_value(L(config_text), 1, "dev", "max_concurrent_requests", v,
				 sizeof(v));
	is_int(rc, 1, "nested s3 settings read as plain keys");

	rc = creds_profile_value(L("[default]\nregion = eu-west-1\n"), 1, "default", "region", v,
				 4);
	is_int(rc, -E2BIG, "value longer than cap -> -E2BIG");
	rc = creds_profile_value(L("[default]\naws_access_key_id AKID\n"), 0, "default",
				 "aws_access_key_id", v, sizeof(v));
	is_int(rc, -EINVAL, "line without '=' -> -EINVAL");
	rc = creds_profile_value(L("[default\nregion = x\n"), 1, "default", "region", v, sizeof(v));
	is_int(rc, -EINVAL, "broken header -> -EINVAL");
	rc = creds_profile_value(L(""), 1, "default", "region", v, sizeof(v));
	is_int(rc, 0, "empty text -> 0");
	/* the length bounds the text: the second line is cut off */
	rc = creds_profile_value("[default]\nregion = eu\n[default]\nregion = cut\n", 21, 1,
				 "default", "region", v, sizeof(v));
	is_str(v, "eu", "text need not be NUL-terminated at len");
}

/* ----------------------------------------------------------- IMDS JSON */

static const char imds_good[] =
	"{\n"
	"  \"Code\" : \"Success\",\n"
	"  \"LastUpdated\" : \"2026-11-25T13:46:13Z\",\n"
	"  \"Type\" : \"AWS-HMAC\",\n"
	"  \"AccessKeyId\" : \"ASIAIOSFODNN7EXAMPLE\",\n"
	"  \"SecretAccessKey\" : \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\",\n"
	"  \"Token\" : \"IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ==\",\n"
	"  \"Expiration\" : \"2026-11-25T20:00:00Z\"\n"
	"}\n";

static void test_imds_json(void)
{
	static const struct {
		const char *name, *json;
	} bad[] = {
		{ "empty", "" },
		{ "empty object", "{}" },
		{ "not an object", "[\"AccessKeyId\"]" },
		{ "missing Token",
		  "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
		{ "missing Expiration", "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\"}" },
		{ "missing AccessKeyId",
		  "{\"SecretAccessKey\":\"S\",\"Token\":\"T\",\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
		{ "missing SecretAccessKey",
		  "{\"AccessKeyId\":\"A\",\"Token\":\"T\",\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
		{ "empty AccessKeyId",
		  "{\"AccessKeyId\":\"\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
		  "\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
		{ "Code not Success",
		  "{\"Code\":\"AssumeRoleUnauthorizedAccess\",\"AccessKeyId\":\"A\",\"SecretAccessKey\":"
		  "\"S\",\"Token\":\"T\",\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
		{ "bad Expiration",
		  "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\",\"Expiration\":\"soon\"}" },
		{ "number for a key",
		  "{\"AccessKeyId\":12,\"SecretAccessKey\":\"S\",\"Token\":\"T\","
		  "\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
		{ "nested object",
		  "{\"X\":{\"a\":1},\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
		  "\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
		{ "trailing garbage",
		  "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
		  "\"Expiration\":\"2026-11-25T20:00:00Z\"} x" },
		{ "missing comma",
		  "{\"AccessKeyId\":\"A\" \"SecretAccessKey\":\"S\",\"Token\":\"T\","
		  "\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
		{ "unterminated string", "{\"AccessKeyId\":\"A" },
		{ "unterminated object",
		  "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
		  "\"Expiration\":\"2026-11-25T20:00:00Z\"" },
		{ "raw newline in a string",
		  "{\"AccessKeyId\":\"A\nB\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
		  "\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
		{ "\\u0000",
		  "{\"AccessKeyId\":\"A\\u0000\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
		  "\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
		{ "lone surrogate",
		  "{\"AccessKeyId\":\"\\ud83d\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
		  "\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
		{ "bad escape",
		  "{\"AccessKeyId\":\"\\q\",\"SecretAccessKey\":\"S\",\"Token\":\"T\","
		  "\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
		{ "short \\u",
		  "{\"AccessKeyId\":\"\\u12\"}" },
		{ "access key too long",
		  "{\"AccessKeyId\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
		  "\"SecretAccessKey\":\"S\",\"Token\":\"T\",\"Expiration\":\"2026-11-25T20:00:00Z\"}" },
	};
	struct creds_value v;
	int rc;

	rc = creds_parse_imds_json(L(imds_good), &v);
	is_int(rc, 0, "imds json parses");
	is_str(v.access_key, "ASIAIOSFODNN7EXAMPLE", "imds access key");
	is_str(v.secret_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "imds secret");
	is_str(v.session_token, "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ==",
	       "imds token");
	is_int(v.expires, 1795636800, "imds expiration");

	rc = creds_parse_imds_json(L("{\"AccessKeyId\":\"A\\\"B\\\\C\\/D\\nE\\u00e9\\ud83d\\ude00\","
				     "\"SecretAccessKey\":\"S\\tT\",\"Token\":\"\\u0041\","
				     "\"Expiration\":\"2026-11-25T20:00:00.000+00:00\","
				     "\"Num\":-12.5e3,\"B\":true,\"N\":null}"),
				   &v);
	is_int(rc, 0, "escapes, no Code, scalar members");
	is_str(v.access_key, "A\"B\\C/D\nE\xc3\xa9\xf0\x9f\x98\x80", "escapes decoded");
	is_str(v.secret_key, "S\tT", "\\t decoded");
	is_str(v.session_token, "A", "\\u0041 decoded");

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		memset(&v, 'x', sizeof(v));
		rc = creds_parse_imds_json(bad[i].json, strlen(bad[i].json), &v);
		is_int(rc, -EINVAL, "imds json rejects: %s", bad[i].name);
		ok(v.access_key[0] == 0 && v.secret_key[0] == 0, "rejected: out zeroed (%s)",
		   bad[i].name);
	}
	rc = creds_parse_imds_json(imds_good, sizeof(imds_good) - 10, &v);
	is_int(rc, -EINVAL, "len cuts the object -> -EINVAL");
	rc = creds_parse_imds_json(NULL, 0, &v);
	is_int(rc, -EINVAL, "NULL -> -EINVAL");
}

/* --------------------------------------------------------- the chain */

static void test_env(void)
{
	struct creds *c = NULL;
	struct creds_value v;
	struct buf err;
	int rc;

	buf_init(&err, 0);
	env_reset();
	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "secretenv", 1);
	setenv("AWS_SESSION_TOKEN", "tokenenv", 1);
	rc = creds_new(&c, NULL, &err);
	is_int(rc, 0, "creds from the environment");
	if (c) {
		is_str(creds_source(c), "environment", "source environment");
		rc = creds_get(c, &v);
		is_int(rc, 0, "creds_get");
		is_str(v.access_key, "AKIDENV", "env access key");
		is_str(v.secret_key, "secretenv", "env secret");
		is_str(v.session_token, "tokenenv", "env token");
		is_int(v.expires, 0, "env creds never expire");
	}
	creds_free(c);
	c = NULL;

	unsetenv("AWS_SESSION_TOKEN");
	rc = creds_new(&c, NULL, NULL);
	is_int(rc, 0, "env without token, err NULL");
	if (c && creds_get(c, &v) == 0)
		is_str(v.session_token, "", "no token -> \"\"");
	creds_free(c);
	c = NULL;

	unsetenv("AWS_SECRET_ACCESS_KEY");
	rc = creds_new(&c, NULL, &err);
	is_int(rc, -EINVAL, "key id without secret -> -EINVAL");
	is_str(buf_str(&err), "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
	       "partial env message");
	ok(c == NULL, "no creds on failure");

	env_reset();
	rc = creds_new(&c, NULL, &err);
	is_int(rc, -ENOKEY, "nothing at all -> -ENOKEY");
	is_str(buf_str(&err),
	       "no AWS credentials found (environment, profile 'default', instance metadata)",
	       "nothing found message");
	buf_release(&err);
}

static void test_profiles(void)
{
	char cpath[512], fpath[512], bad[512], dir[512];
	struct creds *c = NULL;
	struct creds_value v;
	struct buf err;
	char msg[1200];
	int rc;

	buf_init(&err, 0);
	env_reset();
	if (write_file("credentials", creds_text, cpath, sizeof(cpath)) < 0 ||
	    write_file("config", config_text, fpath, sizeof(fpath)) < 0 ||
	    write_file("bad", "[default]\naws_access_key_id = A\nthis line is wrong\n", bad,
		       sizeof(bad)) < 0) {
		ok(0, "cannot write temp files");
		return;
	}
	setenv("AWS_SHARED_CREDENTIALS_FILE", cpath, 1);
	setenv("AWS_CONFIG_FILE", fpath, 1);

	rc = creds_new(&c, NULL, &err);
	is_int(rc, 0, "creds from the default profile");
	if (c && creds_get(c, &v) == 0) {
		is_str(creds_source(c), "profile default", "source profile default");
		is_str(v.access_key, "AKIDDEFAULT", "profile access key");
		is_str(v.secret_key, "secret/default+1", "profile secret");
		is_str(v.session_token, "", "profile without token");
	}
	creds_free(c);
	c = NULL;

	setenv("AWS_PROFILE", "dev", 1);
	rc = creds_new(&c, NULL, &err);
	is_int(rc, 0, "creds from AWS_PROFILE=dev");
	if (c && creds_get(c, &v) == 0) {
		is_str(creds_source(c), "profile dev", "source profile dev");
		is_str(v.access_key, "AKIDDEV", "dev key from the credentials file, not config");
		is_str(v.session_token, "tokendev", "dev token");
	}
	creds_free(c);
	c = NULL;

	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "secretenv", 1);
	rc = creds_new(&c, NULL, &err);
	is_int(rc, 0, "env and profile");
	if (c)
		is_str(creds_source(c), "environment", "the environment wins over the profile");
	creds_free(c);
	c = NULL;
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");

	setenv("AWS_PROFILE", "cfgkeys", 1);
	rc = creds_new(&c, NULL, &err);
	is_int(rc, 0, "keys only in the config file");
	if (c && creds_get(c, &v) == 0) {
		is_str(creds_source(c), "profile cfgkeys", "source profile cfgkeys");
		is_str(v.access_key, "AKIDCFG", "config-file key");
	}
	creds_free(c);
	c = NULL;

	setenv("AWS_PROFILE", "nosuch", 1);
	rc = creds_new(&c, NULL, &err);
	is_int(rc, -ENOKEY, "unknown profile -> -ENOKEY");
	is_str(buf_str(&err),
	       "no AWS credentials found (environment, profile 'nosuch', instance metadata)",
	       "unknown profile message");

	setenv("AWS_PROFILE", "empty", 1);
	rc = creds_new(&c, NULL, &err);
	is_int(rc, -ENOKEY, "profile with an empty key id -> -ENOKEY");

	write_file("half", "[half]\naws_access_key_id = AKIDHALF\n", dir, sizeof(dir));
	setenv("AWS_SHARED_CREDENTIALS_FILE", dir, 1);
	setenv("AWS_PROFILE", "half", 1);
	rc = creds_new(&c, NULL, &err);
	is_int(rc, -EINVAL, "key id without secret in a profile -> -EINVAL");
	snprintf(msg, sizeof(msg),
		 "profile 'half' in '%s' has aws_access_key_id but no aws_secret_access_key", dir);
	is_str(buf_str(&err), msg, "half profile message");
	unsetenv("AWS_PROFILE");

	setenv("AWS_SHARED_CREDENTIALS_FILE", bad, 1);
	rc = creds_new(&c, NULL, &err);
	is_int(rc, -EINVAL, "malformed credentials file -> -EINVAL");
	snprintf(msg, sizeof(msg), "cannot parse '%s': 3: expected 'key = value'", bad);
	is_str(buf_str(&err), msg, "malformed file message");

	setenv("AWS_SHARED_CREDENTIALS_FILE", tmpdir, 1);
	rc = creds_new(&c, NULL, &err);
	ok(rc < 0 && c == NULL, "unreadable credentials file (a directory) -> error");
	snprintf(msg, sizeof(msg), "cannot read '%s': %s", tmpdir, strerror(EISDIR));
	is_str(buf_str(&err), msg, "unreadable file message");

	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
	setenv("AWS_CONFIG_FILE", "/nonexistent/config", 1);
	rc = creds_new(&c, NULL, &err);
	is_int(rc, -ENOKEY, "missing files are not an error");

	setenv("AWS_CONFIG_FILE", bad, 1);
	rc = creds_new(&c, NULL, &err);
	is_int(rc, -EINVAL, "malformed config file -> -EINVAL");
	snprintf(msg, sizeof(msg), "cannot parse '%s': 3: expected 'key = value'", bad);
	is_str(buf_str(&err), msg, "malformed config message");

	/* ~ is $HOME, for the default paths and in the variables */
	env_reset();
	snprintf(dir, sizeof(dir), "%s/.aws", tmpdir);
	mkdir(dir, 0700);
	write_file(".aws/credentials", "[default]\naws_access_key_id = AKIDHOME\n"
				       "aws_secret_access_key = s\n", cpath, sizeof(cpath));
	rc = creds_new(&c, NULL, &err);
	is_int(rc, 0, "default path under $HOME");
	if (c && creds_get(c, &v) == 0)
		is_str(v.access_key, "AKIDHOME", "read ~/.aws/credentials");
	creds_free(c);
	c = NULL;
	setenv("AWS_SHARED_CREDENTIALS_FILE", "~/credentials", 1);
	setenv("AWS_PROFILE", "dev", 1);
	rc = creds_new(&c, NULL, &err);
	is_int(rc, 0, "~/ in AWS_SHARED_CREDENTIALS_FILE");
	if (c && creds_get(c, &v) == 0)
		is_str(v.access_key, "AKIDDEV", "read ~/credentials");
	creds_free(c);
	c = NULL;
	unlink(cpath);
	rmdir(dir);
	buf_release(&err);
}

static void test_region(void)
{
	char path[512], r[32];
	int rc;

	env_reset();
	rc = creds_region(r, sizeof(r));
	is_int(rc, 0, "no region anywhere -> 0");
	write_file("config", config_text, path, sizeof(path));
	setenv("AWS_CONFIG_FILE", path, 1);
	rc = creds_region(r, sizeof(r));
	is_int(rc, 1, "region from the config file");
	is_str(r, "eu-west-1", "default profile region");
	setenv("AWS_PROFILE", "dev", 1);
	rc = creds_region(r, sizeof(r));
	is_str(r, "us-west-2", "AWS_PROFILE region");
	setenv("AWS_PROFILE", "cfgkeys", 1);
	rc = creds_region(r, sizeof(r));
	is_int(rc, 0, "profile without region -> 0");
	setenv("AWS_DEFAULT_REGION", "ca-central-1", 1);
	rc = creds_region(r, sizeof(r));
	is_int(rc, 1, "AWS_DEFAULT_REGION");
	is_str(r, "ca-central-1", "AWS_DEFAULT_REGION over the profile");
	setenv("AWS_REGION", "sa-east-1", 1);
	rc = creds_region(r, sizeof(r));
	is_str(r, "sa-east-1", "AWS_REGION over AWS_DEFAULT_REGION");
	rc = creds_region(r, 4);
	is_int(rc, -E2BIG, "cap too small -> -E2BIG");
	unsetenv("AWS_REGION");
	unsetenv("AWS_DEFAULT_REGION");
	write_file("badcfg", "[default]\nregion\n", path, sizeof(path));
	setenv("AWS_CONFIG_FILE", path, 1);
	rc = creds_region(r, sizeof(r));
	is_int(rc, -EINVAL, "malformed config -> -EINVAL");
}

/* ------------------------------------------------- fake metadata server */

struct imds {
	int lfd;
	int port;
	pthread_t thr;
	pthread_mutex_t lock; /* protects everything below */
	int stop;
	int nreq;
	int bad_headers;      /* requests missing the header IMDSv2 needs */
	int role_status;      /* status of the role list */
	int delay_ms;         /* before answering the credentials */
	char json[1024];      /* the role credentials */
};

static void imds_set_json(struct imds *m, const char *key, time_t expires)
{
	struct tm tm;
	char when[32];

	gmtime_r(&expires, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	pthread_mutex_lock(&m->lock);
	snprintf(m->json, sizeof(m->json),
		 "{\"Code\":\"Success\",\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"%s\","
		 "\"SecretAccessKey\":\"sk-%s\",\"Token\":\"tok-%s\",\"Expiration\":\"%s\"}",
		 key, key, key, when);
	pthread_mutex_unlock(&m->lock);
}

/* Read one request head (up to the blank line). */
static int imds_read_head(int fd, char *buf, size_t cap)
{
	size_t n = 0;

	while (n + 1 < cap) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);

		if (r <= 0)
			return -1;
		n += (size_t)r;
		buf[n] = '\0';
		if (strstr(buf, "\r\n\r\n"))
			return 0;
	}
	return -1;
}

static void imds_answer(struct imds *m, int fd, const char *head)
{
	char out[2048];
	const char *body = "";
	int status = 200, n;

	pthread_mutex_lock(&m->lock);
	m->nreq++;
	if (strncmp(head, "PUT /latest/api/token ", 22) == 0) {
		if (!strcasestr(head, "\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n"))
			m->bad_headers++;
		body = "AQAEAFakeSessionToken==";
	} else if (!strcasestr(head, "\r\nX-aws-ec2-metadata-token: AQAEAFakeSessionToken==\r\n")) {
		m->bad_headers++;
		status = 401;
	} else if (strncmp(head, "GET /latest/meta-data/iam/security-credentials/ ", 48) == 0) {
		status = m->role_status;
		body = status == 200 ? "cdnfs-role\nsecond-role\n" : "";
	} else if (strncmp(head, "GET /latest/meta-data/iam/security-credentials/cdnfs-role ",
			   58) == 0) {
		body = m->json;
		if (m->delay_ms) {
			pthread_mutex_unlock(&m->lock);
			usleep((useconds_t)m->delay_ms * 1000);
			pthread_mutex_lock(&m->lock);
		}
	} else {
		status = 404;
	}
	n = snprintf(out, sizeof(out),
		     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s", status,
		     strlen(body), body);
	pthread_mutex_unlock(&m->lock);
	if (write(fd, out, (size_t)n) < 0) {
		/* the client went away */
	}
}

static void *imds_main(void *arg)
{
	struct imds *m = arg;
	char head[4096];

	for (;;) {
		struct pollfd p = { .fd = m->lfd, .events = POLLIN };
		int fd, stop;

		pthread_mutex_lock(&m->lock);
		stop = m->stop;
		pthread_mutex_unlock(&m->lock);
		if (stop)
			break;
		if (poll(&p, 1, 50) <= 0)
			continue;
		fd = accept(m->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		if (imds_read_head(fd, head, sizeof(head)) == 0)
			imds_answer(m, fd, head);
		close(fd);
	}
	return NULL;
}

static int imds_start(struct imds *m)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);

	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	m->role_status = 200;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	m->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (m->lfd < 0 || bind(m->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(m->lfd, 16) < 0 || getsockname(m->lfd, (struct sockaddr *)&a, &alen) < 0)
		return -errno;
	m->port = ntohs(a.sin_port);
	return pthread_create(&m->thr, NULL, imds_main, m) == 0 ? 0 : -EAGAIN;
}

static void imds_stop(struct imds *m)
{
	pthread_mutex_lock(&m->lock);
	m->stop = 1;
	pthread_mutex_unlock(&m->lock);
	pthread_join(m->thr, NULL);
	close(m->lfd);
	pthread_mutex_destroy(&m->lock);
}

static int imds_nreq(struct imds *m)
{
	int n;

	pthread_mutex_lock(&m->lock);
	n = m->nreq;
	pthread_mutex_unlock(&m->lock);
	return n;
}

struct getter {
	struct creds *c;
	int rc;
	char key[128];
};

static void *getter_main(void *arg)
{
	struct getter *g = arg;
	struct creds_value v;

	g->rc = creds_get(g->c, &v);
	if (g->rc == 0)
		snprintf(g->key, sizeof(g->key), "%s", v.access_key);
	return NULL;
}

/* Expired creds, slow IMDS: 8 threads ask at once; one refreshes, the
 * others wait for it; then a failing IMDS gives -EKEYEXPIRED. */
static void test_imds_threads(struct imds *m, struct http *h)
{
	struct getter g[8];
	pthread_t t[8];
	struct creds *c = NULL;
	struct creds_value v;
	time_t now = time(NULL);
	int rc, before, good = 0;

	pthread_mutex_lock(&m->lock);
	m->role_status = 200;
	pthread_mutex_unlock(&m->lock);
	imds_set_json(m, "KEY5", now - 10);
	rc = creds_new(&c, h, NULL);
	is_int(rc, 0, "already expired IMDS creds");
	if (!c)
		return;
	imds_set_json(m, "KEY6", now + 6 * 3600);
	pthread_mutex_lock(&m->lock);
	m->delay_ms = 200;
	pthread_mutex_unlock(&m->lock);
	before = imds_nreq(m);
	for (int i = 0; i < 8; i++) {
		g[i] = (struct getter){ .c = c };
		pthread_create(&t[i], NULL, getter_main, &g[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		good += g[i].rc == 0 && strcmp(g[i].key, "KEY6") == 0;
	}
	is_int(good, 8, "8 threads all got the refreshed key");
	is_int(imds_nreq(m), before + 3, "only one refresh for 8 threads");
	pthread_mutex_lock(&m->lock);
	m->delay_ms = 0;
	pthread_mutex_unlock(&m->lock);
	creds_free(c);
	c = NULL;

	imds_set_json(m, "KEY7", now - 10);
	rc = creds_new(&c, h, NULL);
	pthread_mutex_lock(&m->lock);
	m->role_status = 500;
	pthread_mutex_unlock(&m->lock);
	if (c) {
		memset(&v, 0, sizeof(v));
		rc = creds_get(c, &v);
		is_int(rc, -EKEYEXPIRED, "expired and refresh failed -> -EKEYEXPIRED");
		is_str(v.access_key, "", "out untouched on -EKEYEXPIRED");
	}
	creds_free(c);
	pthread_mutex_lock(&m->lock);
	m->role_status = 200;
	pthread_mutex_unlock(&m->lock);
}

static void test_imds(void)
{
	struct http_conf hc = { .connect_timeout_ms = 1000, .timeout_s = 2, .max_retries = -1 };
	struct http *h = NULL;
	struct creds *c = NULL;
	struct creds_value v;
	struct imds m;
	struct buf err;
	char ep[64], msg[256];
	time_t now = time(NULL);
	int rc;

	buf_init(&err, 0);
	if (imds_start(&m) < 0 || http_new(&h, &hc) < 0) {
		ok(0, "cannot start the fake metadata server");
		return;
	}
	env_reset();
	setenv("NO_PROXY", "127.0.0.1", 1); /* a proxy in the environment must not get these */
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d/", m.port);
	setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", ep, 1);
	imds_set_json(&m, "KEY1", now + 6 * 3600);

	rc = creds_new(&c, h, &err);
	is_int(rc, -ENOKEY, "AWS_EC2_METADATA_DISABLED=true: no IMDS");
	is_int(imds_nreq(&m), 0, "disabled: no request sent");

	unsetenv("AWS_EC2_METADATA_DISABLED");
	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "secretenv", 1);
	rc = creds_new(&c, h, &err);
	is_int(rc, 0, "env creds with IMDS available");
	is_int(imds_nreq(&m), 0, "IMDS not asked when the environment has creds");
	creds_free(c);
	c = NULL;
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");

	rc = creds_new(&c, NULL, &err);
	is_int(rc, -ENOKEY, "http NULL: IMDS unavailable");
	is_int(imds_nreq(&m), 0, "http NULL: no request");

	rc = creds_new(&c, h, &err);
	is_int(rc, 0, "creds from the fake IMDS");
	is_int(imds_nreq(&m), 3, "token, role, credentials: 3 requests");
	pthread_mutex_lock(&m.lock);
	is_int(m.bad_headers, 0, "IMDSv2 headers sent");
	pthread_mutex_unlock(&m.lock);
	if (c) {
		is_str(creds_source(c), "instance metadata", "source instance metadata");
		rc = creds_get(c, &v);
		is_int(rc, 0, "get IMDS creds");
		is_str(v.access_key, "KEY1", "IMDS key");
		is_str(v.secret_key, "sk-KEY1", "IMDS secret");
		is_str(v.session_token, "tok-KEY1", "IMDS token");
		is_int(v.expires, now + 6 * 3600, "IMDS expiry");
		is_int(imds_nreq(&m), 3, "no refresh while far from expiry");
	}
	creds_free(c);
	c = NULL;

	/* expiring within 5 minutes: creds_get refreshes */
	imds_set_json(&m, "KEY2", now + 100);
	rc = creds_new(&c, h, &err);
	is_int(rc, 0, "short-lived IMDS creds");
	imds_set_json(&m, "KEY3", now + 6 * 3600);
	if (c) {
		rc = creds_get(c, &v);
		is_int(rc, 0, "get refreshes");
		is_str(v.access_key, "KEY3", "refreshed key");
		is_int(imds_nreq(&m), 9, "refresh made 3 requests");
	}
	creds_free(c);
	c = NULL;

	/* a failed refresh keeps the old, still valid value and backs off */
	imds_set_json(&m, "KEY4", now + 100);
	rc = creds_new(&c, h, &err);
	is_int(rc, 0, "short-lived IMDS creds again");
	pthread_mutex_lock(&m.lock);
	m.role_status = 500;
	pthread_mutex_unlock(&m.lock);
	if (c) {
		int before = imds_nreq(&m);

		rc = creds_get(c, &v);
		is_int(rc, 0, "failed refresh: old creds still valid");
		is_str(v.access_key, "KEY4", "failed refresh: old key");
		is_int(imds_nreq(&m), before + 2, "failed refresh stopped at the role list");
		rc = creds_get(c, &v);
		is_int(imds_nreq(&m), before + 2, "no new attempt right after a failure");
	}
	creds_free(c);
	c = NULL;

	test_imds_threads(&m, h);

	/* role list 404: no role attached */
	pthread_mutex_lock(&m.lock);
	m.role_status = 404;
	pthread_mutex_unlock(&m.lock);
	rc = creds_new(&c, h, &err);
	is_int(rc, -ENOKEY, "no role -> -ENOKEY");
	snprintf(msg, sizeof(msg),
		 "no AWS credentials found (environment, profile 'default', instance metadata: "
		 "'http://127.0.0.1:%d/latest/meta-data/iam/security-credentials/' answered HTTP 404)",
		 m.port);
	is_str(buf_str(&err), msg, "no role message");
	ok(!strstr(buf_str(&err), "AQAEAFakeSessionToken"), "the IMDS token is not in the message");

	imds_stop(&m);
	/* nothing listens there any more: fails fast */
	rc = creds_new(&c, h, &err);
	is_int(rc, -ENOKEY, "IMDS down -> -ENOKEY");
	ok(strstr(buf_str(&err), "instance metadata: cannot reach") != NULL,
	   "IMDS down message: %s", buf_str(&err));
	http_free(h);
	buf_release(&err);
}

int main(void)
{
	const char *t = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/test_creds.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	s3xml_init();
	test_profile_value();
	test_imds_json();
	test_env();
	test_profiles();
	test_region();
	test_imds();
	{
		static const char *const files[] = { "credentials", "config", "bad", "half",
						     "badcfg" };
		char p[600];

		for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
			snprintf(p, sizeof(p), "%s/%s", tmpdir, files[i]);
			unlink(p);
		}
		rmdir(tmpdir);
	}
	return tap_done();
}
