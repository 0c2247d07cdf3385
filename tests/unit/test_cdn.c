/*
 * test_cdn.c - the CDN queue without a network: journal text, backend
 * bodies and answers, CloudFront's <Invalidation>, configuration checks,
 * and the queue itself (dedupe, journal replay, files and modes) with no
 * dispatcher running.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../cdn/cdn_int.h"
#include "cdn.h"
#include "creds.h"
#include "http.h"
#include "log.h"
#include "s3xml.h"
#include "tap.h"

static void test_journal_text(void)
{
	struct cdn_batch b = { 0 };
	char i0[] = "/a%20b", i1[] = "/d/*", k0[] = "a b", k1[] = "d";
	char *items[] = { i0, i1 };
	struct cdn_tgt tg[] = { { k0, 0 }, { k1, 1 } };
	struct cdn_jstate st;
	struct buf t;

	buf_init(&t, 0);
	snprintf(b.ref, sizeof(b.ref), "cdnfs-h-1-2-3-abc");
	b.kind = CDN_BATCH_PATHS;
	b.items = items;
	b.nitems = 2;
	b.targets = tg;
	b.ntargets = 2;
	b.created = 1700000000;
	ok(buf_addstr(&t, "cdnfs-cdn-journal 1 cloudfront E1 - -\n") == 0 &&
	   cdn_journal_pline(&t, "sp ace/new\nline%", 0) == 0 &&
	   cdn_journal_pline(&t, "dir", 1) == 0 && cdn_journal_bline(&t, &b) == 0,
	   "render journal text");
	ok(strstr(buf_str(&t), "P f sp%20ace/new%0Aline%25\n") != NULL, "escaped key");
	ok(strstr(buf_str(&t), "B cdnfs-h-1-2-3-abc p 2 2 1700000000\nI /a%2520b\nI /d/*\n"
			       "T f a%20b\nT d d\n") != NULL, "batch record");
	is_int(cdn_journal_parse(t.data, t.len, &st), 0, "parse");
	is_str(st.identity, "cloudfront E1 - -", "identity");
	is_int(st.npending, 2, "two pending");
	is_str(st.pending[0].key, "sp ace/new\nline%", "key round trip");
	is_int(st.pending[1].is_dir, 1, "dir flag");
	ok(st.batches && !st.batches->next, "one batch");
	is_str(st.batches->items[0], "/a%20b", "item round trip");
	is_int(st.batches->nwild, 1, "wildcards counted");
	is_str(st.batches->targets[0].key, "a b", "target round trip");
	is_int(st.nbad, 0, "nothing bad");
	cdn_jstate_release(&st);

	/* D removes the batch; a torn last line and garbage are skipped */
	ok(buf_addstr(&t, "D cdnfs-h-1-2-3-abc\nZ what\nP x bad\nP f torn") == 0, "append");
	is_int(cdn_journal_parse(t.data, t.len, &st), 0, "parse with D");
	ok(st.batches == NULL, "D removed the batch");
	is_int(st.npending, 2, "torn line ignored");
	is_int(st.nbad, 2, "two bad lines");
	cdn_jstate_release(&st);

	/* a batch cut short gives its targets back */
	buf_reset(&t);
	ok(buf_addstr(&t, "cdnfs-cdn-journal 1 x\nB r1 p 3 1 0\nI /a\nT f a\nP f z\n") == 0,
	   "short batch");
	is_int(cdn_journal_parse(t.data, t.len, &st), 0, "parse short batch");
	ok(st.batches == NULL, "short batch dropped");
	is_int(st.npending, 2, "its target is pending again, then z");
	is_str(st.pending[0].key, "a", "target back");
	cdn_jstate_release(&st);
	is_int(cdn_journal_parse("", 0, &st), 0, "empty journal");
	ok(!st.identity && !st.npending, "empty journal is empty");
	cdn_jstate_release(&st);
	buf_release(&t);
}

static void test_cloudfront_pure(void)
{
	char i0[] = "/a&b", i1[] = "/d/*";
	char *items[] = { i0, i1 };
	struct buf b;
	char *id, *st;
	const char *inv = "<?xml version=\"1.0\"?>\n<Invalidation xmlns=\"http://cloudfront."
			  "amazonaws.com/doc/2020-05-31/\"><Id>I2J0I21PCUYOIK</Id><Status>"
			  "InProgress</Status><CreateTime>2026-11-25T10:00:00Z</CreateTime>"
			  "<InvalidationBatch><Paths><Quantity>1</Quantity><Items><Path>/a</Path>"
			  "</Items></Paths><CallerReference>r</CallerReference>"
			  "</InvalidationBatch></Invalidation>";
	const char *err = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
			  "<Message>no</Message></Error></ErrorResponse>";

	buf_init(&b, 0);
	is_int(cdn_cloudfront_body(&b, "ref-1", items, 2), 0, "cloudfront body");
	is_str(buf_str(&b), "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InvalidationBatch "
			    "xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\"><Paths>"
			    "<Quantity>2</Quantity><Items><Path>/a&amp;b</Path><Path>/d/*</Path>"
			    "</Items></Paths><CallerReference>ref-1</CallerReference>"
			    "</InvalidationBatch>", "cloudfront body text");
	ok(cdn_cloudfront_body(&b, "r", items, 0) == -EINVAL, "no paths: -EINVAL");
	buf_release(&b);

	is_int(s3xml_parse_invalidation(inv, strlen(inv), &id, &st), 0, "parse invalidation");
	is_str(id, "I2J0I21PCUYOIK", "invalidation id");
	is_str(st, "InProgress", "invalidation status");
	free(id);
	free(st);
	ok(s3xml_parse_invalidation(err, strlen(err), &id, &st) == -EBADMSG && !id && !st,
	   "an error is no invalidation");
	ok(s3xml_parse_invalidation("<Invalidation><Id>x</Id></Invalidation>", 39, &id, &st) ==
		   -EBADMSG, "an invalidation needs a status");

	is_int(cdn_cloudfront_classify(400, "TooManyInvalidationsInProgress"), CDN_BUSY, "busy");
	is_int(cdn_cloudfront_classify(409, "InvalidationBatchAlreadyExists"), CDN_REF_CLASH,
	       "clash");
	is_int(cdn_cloudfront_classify(503, NULL), CDN_RETRY, "503 retry");
	is_int(cdn_cloudfront_classify(429, ""), CDN_RETRY, "429 retry");
	is_int(cdn_cloudfront_classify(400, "Throttling"), CDN_RETRY, "throttling retry");
	is_int(cdn_cloudfront_classify(400, "InvalidArgument"), CDN_INVALID, "invalid argument");
	is_int(cdn_cloudfront_classify(413, "BatchTooLarge"), CDN_INVALID, "batch too large");
	is_int(cdn_cloudfront_classify(403, "AccessDenied"), CDN_DENIED, "access denied");
	is_int(cdn_cloudfront_classify(403, "SignatureDoesNotMatch"), CDN_DENIED, "bad signature");
	is_int(cdn_cloudfront_classify(404, "NoSuchDistribution"), CDN_DENIED, "no distribution");
}

static void judge(const char *json, long status, struct cdn_result *r)
{
	memset(r, 0, sizeof(*r));
	cdn_cloudflare_judge(json, json ? strlen(json) : 0, status, r);
}

static void test_cloudflare_pure(void)
{
	char i0[] = "https://c.example/a%20b", i1[] = "https://c.example/\"q\"";
	char *items[] = { i0, i1 };
	struct cdn_result r;
	struct buf b;

	buf_init(&b, 0);
	is_int(cdn_cloudflare_body(&b, CDN_BATCH_PATHS, items, 2), 0, "files body");
	is_str(buf_str(&b), "{\"files\":[\"https://c.example/a%20b\",\"https://c.example/\\\"q\\\"\"]}",
	       "files body text");
	buf_reset(&b);
	is_int(cdn_cloudflare_body(&b, CDN_BATCH_PREFIXES, items, 1), 0, "prefixes body");
	is_str(buf_str(&b), "{\"prefixes\":[\"https://c.example/a%20b\"]}", "prefixes body text");
	buf_release(&b);

	judge("{\"success\":true,\"errors\":[],\"messages\":[],\"result\":{\"id\":\"9a7806\"}}",
	      200, &r);
	is_int(r.outcome, CDN_OK, "success");
	is_str(r.id, "9a7806", "purge id");
	is_str(r.status, "ok", "status ok");
	judge("{\"success\":false,\"errors\":[{\"code\":10000,\"message\":\"Authentication "
	      "error\"}],\"messages\":[],\"result\":null}", 403, &r);
	is_int(r.outcome, CDN_DENIED, "403 denied");
	is_int(r.err, -EACCES, "403 -EACCES");
	is_str(r.msg, "HTTP 403: 10000 Authentication error", "403 message");
	judge("{\"success\":false,\"errors\":[{\"code\":7003,\"message\":\"Could not route\"}]}",
	      400, &r);
	is_int(r.outcome, CDN_DENIED, "bad zone denied");
	is_int(r.err, -ENOENT, "bad zone -ENOENT");
	judge("{\"success\":false,\"errors\":[{\"code\":971,\"message\":\"Please wait\"}]}", 429,
	      &r);
	is_int(r.outcome, CDN_RETRY, "429 retry");
	judge("{\"success\":false,\"errors\":[{\"code\":1012,\"message\":\"bad \\u00e9 \\\"url\\\"\"}]}",
	      400, &r);
	is_int(r.outcome, CDN_INVALID, "400 invalid");
	is_str(r.msg, "HTTP 400: 1012 bad \xc3\xa9 \"url\"", "escapes decoded");
	judge("<html>bad gateway</html>", 502, &r);
	is_int(r.outcome, CDN_RETRY, "502 html retry");
	judge("{\"success\":true", 200, &r);
	is_int(r.outcome, CDN_RETRY, "truncated 200: cannot tell, retry");
	judge("{\"success\":true,\"result\":{\"id\":\"x\"}} trailing", 200, &r);
	is_int(r.outcome, CDN_RETRY, "trailing garbage: not JSON");
	judge("{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
	      ",\"success\":true}", 200, &r);
	is_int(r.outcome, CDN_RETRY, "nesting too deep: not accepted");
	judge("{\"success\":true,\"errors\":[],\"result\":{\"id\":\"x\",\"n\":[1,2.5e3,null,false]}}",
	      200, &r);
	is_int(r.outcome, CDN_OK, "other values skipped");
	judge(NULL, 500, &r);
	is_int(r.outcome, CDN_RETRY, "empty 500 retry");
	/* found by tests/fuzz/fuzz_status_json: a code past long's range was
	 * converted from double (undefined behaviour) */
	judge("{\"success\":false,\"errors\":[{\"code\":1222222222222222222222222222222222,"
	      "\"message\":\"x\"}]}", 400, &r);
	is_str(r.msg, "HTTP 400 with a body that is not Cloudflare's JSON", "huge code: not JSON");
	judge("{\"success\":false,\"errors\":[{\"code\":1e999,\"message\":\"x\"}]}", 400, &r);
	is_int(r.outcome, CDN_INVALID, "infinite code: judged by the status");
}

/* Found by tests/fuzz/fuzz_status_json: bytes that are not UTF-8 (a message
 * cut mid-character to fit last_error, a key) went into the JSON as they
 * were, which no JSON parser accepts. */
static void test_json_utf8(void)
{
	struct cdn_stats s;
	struct buf b;
	char i0[] = "a\xff\xc3\xa9\xe2\x98", i1[] = "\xed\xa0\x80\xc0\xaf\xf4\x90\x80\x80\x01\"";
	char *items[] = { i0, i1 };

	buf_init(&b, 0);
	is_int(cdn_json_str(&b, "caf\xc3\xa9 \xf0\x9f\x98\x80 \x7f"), 0, "valid UTF-8");
	is_str(buf_str(&b), "\"caf\xc3\xa9 \xf0\x9f\x98\x80 \x7f\"", "valid UTF-8 kept");
	buf_reset(&b);
	is_int(cdn_cloudflare_body(&b, CDN_BATCH_PATHS, items, 2), 0, "body with bad UTF-8");
	is_str(buf_str(&b),
	       "{\"files\":[\"a\\ufffd\xc3\xa9\\ufffd\\ufffd\",\"\\ufffd\\ufffd\\ufffd"
	       "\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\u0001\\\"\"]}",
	       "stray, cut, surrogate, overlong, past U+10FFFF: each byte U+FFFD");
	buf_reset(&b);
	memset(&s, 0, sizeof(s));
	s.provider = CDN_CLOUDFLARE;
	snprintf(s.month, sizeof(s.month), "2026-11");
	snprintf(s.last_error, sizeof(s.last_error), "HTTP 400: 1 caf\xc3");
	is_int(cdn_stats_json_of(&s, &b), 0, "stats with a cut message");
	ok(strstr(buf_str(&b), "\"last_error\":\"HTTP 400: 1 caf\\ufffd\"}") != NULL,
	   "cut character in last_error is U+FFFD");
	buf_release(&b);
}

static void test_endpoint(void)
{
	struct cdn_api api;
	struct buf err;

	buf_init(&err, 0);
	memset(&api, 0, sizeof(api));
	is_int(cdn_api_endpoint(&api, "http://127.0.0.1:8080/base/", &err), 0, "endpoint");
	is_str(api.scheme, "http", "scheme");
	is_str(api.host, "127.0.0.1:8080", "host");
	is_str(api.base_path, "/base", "base path");
	free(api.scheme);
	free(api.host);
	free(api.base_path);
	memset(&api, 0, sizeof(api));
	ok(cdn_api_endpoint(&api, "ftp://x", &err) == -EINVAL, "ftp refused");
	is_str(buf_str(&err), "bad cdn_endpoint 'ftp://x': expected http[s]://host[:port][/path]",
	       "endpoint message");
	ok(cdn_api_endpoint(&api, "https://", &err) == -EINVAL, "no host refused");
	ok(cdn_api_endpoint(&api, "https://h/a?b", &err) == -EINVAL, "query refused");
	buf_release(&err);
}

static int new_err(struct cdn_conf *c, struct http *h, struct creds *cr, const char *want,
		   const char *name)
{
	struct cdn *cdn = NULL;
	struct buf err;
	int rc;

	buf_init(&err, 0);
	rc = cdn_new(&cdn, c, h, cr, &err);
	ok(rc < 0 && !cdn, "%s: refused", name);
	is_str(buf_str(&err), want, "%s: message", name);
	cdn_free(cdn);
	buf_release(&err);
	return rc;
}

static void test_config(struct http *h, struct creds *cr)
{
	struct cdn_conf c = { .provider = CDN_CLOUDFRONT };
	struct cdn *cdn = (struct cdn *)1;
	struct buf err;

	buf_init(&err, 0);
	new_err(&c, h, cr, "cdn=cloudfront needs cdn_distribution_id", "cf no id");
	c.distribution_id = "E1/2";
	new_err(&c, h, cr, "bad cdn_distribution_id 'E1/2': letters and digits expected", "cf bad id");
	c.distribution_id = "E1";
	new_err(&c, h, NULL, "cdn=cloudfront needs AWS credentials", "cf no creds");
	c.endpoint = "localhost";
	new_err(&c, h, cr, "bad cdn_endpoint 'localhost': expected http[s]://host[:port][/path]",
		"cf bad endpoint");
	c.endpoint = NULL;
	c.invalidate_delay = -1;
	new_err(&c, h, cr, "bad invalidate_delay: -1 is negative", "negative delay");
	c = (struct cdn_conf){ .provider = CDN_CLOUDFLARE };
	new_err(&c, h, NULL, "cdn=cloudflare needs cdn_zone_id", "cfl no zone");
	c.zone_id = "z1";
	unsetenv("CLOUDFLARE_API_TOKEN");
	new_err(&c, h, NULL, "cdn=cloudflare needs the CLOUDFLARE_API_TOKEN environment variable",
		"cfl no token");
	setenv("CLOUDFLARE_API_TOKEN", "tok", 1);
	new_err(&c, h, NULL, "cdn=cloudflare needs cdn_domain", "cfl no domain");
	c.domain = "cdn example";
	new_err(&c, h, NULL, "bad cdn_domain 'cdn example': expected a host name like "
			     "cdn.example.com", "cfl bad domain");
	c.domain = "cdn.example.com";
	c.cloudflare_batch = 5000;
	new_err(&c, h, NULL, "bad cloudflare_batch 5000: 1 to 500 URLs a call", "cfl batch");
	c = (struct cdn_conf){ .provider = CDN_NONE };
	is_int(cdn_new(&cdn, &c, h, NULL, &err), 0, "none: ok");
	ok(cdn == NULL, "none: no queue");
	is_int(cdn_purge(NULL, "a", 0), 0, "NULL queue: purge is a no-op");
	is_int(cdn_flush(NULL, 1), 0, "NULL queue: flush is a no-op");
	ok(cdn_stats_json(NULL, &err) == 0 && strcmp(buf_str(&err), "{\"provider\":\"none\"}") == 0,
	   "NULL queue: stats");
	buf_release(&err);
}

static int mode_of(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

/* The queue with no dispatcher: dedupe, journal, replay. */
static void test_queue(struct http *h, const char *dir)
{
	struct cdn_conf c = { .provider = CDN_CLOUDFLARE, .zone_id = "z1",
			      .domain = "cdn.example.com", .journal_dir = dir };
	struct cdn *q = NULL, *q2 = NULL;
	struct cdn_stats st;
	struct buf err, out;
	char path[512];

	buf_init(&err, 0);
	buf_init(&out, 0);
	setenv("CLOUDFLARE_API_TOKEN", "tok", 1);
	is_int(cdn_new(&q, &c, h, NULL, &err), 0, "queue: new");
	ok(cdn_new(&q2, &c, h, NULL, &err) == -EBUSY && !q2, "queue: the journal is locked");
	snprintf(path, sizeof(path), "cdn journal '%s/cdn' is in use by another process", dir);
	is_str(buf_str(&err), path, "queue: lock message");
	ok(cdn_purge(q, "a.css", 0) == 0 && cdn_purge(q, "/a.css", 0) == 0 &&
	   cdn_purge(q, "d/x", 0) == 0 && cdn_purge(q, "d/y/z", 0) == 0, "queue: purges");
	cdn_get_stats(q, &st);
	is_int(st.pending, 3, "queue: dedupe");
	is_int(cdn_purge(q, "d/", 1), 0, "queue: purge dir");
	is_int(cdn_purge(q, "d/w", 0), 0, "queue: purge under the dir");
	cdn_get_stats(q, &st);
	is_int(st.pending, 2, "queue: the dir subsumes d/x, d/y/z, d/w");
	is_int(cdn_purge(q, "", 0), -EINVAL, "queue: empty file path");
	is_int(cdn_last(q, "d/w", &out), 0, "queue: last");
	is_str(buf_str(&out), "cloudflare - queued", "queue: last says queued");
	ok(cdn_last(q, "nothing", &out) == -ENOENT, "queue: last of an unknown path");
	snprintf(path, sizeof(path), "%s/cdn", dir);
	is_int(mode_of(path), 0700, "journal dir 0700");
	snprintf(path, sizeof(path), "%s/cdn/journal", dir);
	is_int(mode_of(path), 0600, "journal file 0600");
	is_int(cdn_flush(q, 0.1), -ESHUTDOWN, "queue: flush without a dispatcher");
	is_int(cdn_shutdown(q, 0), 2, "queue: two purges left");
	cdn_free(q);
	q = NULL;

	is_int(cdn_new(&q, &c, h, NULL, &err), 0, "queue: new again");
	cdn_get_stats(q, &st);
	is_int(st.pending, 2, "queue: replayed");
	buf_reset(&out);
	is_int(cdn_last(q, "d/", &out), 0, "queue: last of the dir");
	is_str(buf_str(&out), "cloudflare - queued", "queue: the dir is queued");
	cdn_free(q);
	q = NULL;

	c.path_prefix = "other"; /* another configuration: still pending paths */
	is_int(cdn_new(&q, &c, h, NULL, &err), 0, "queue: another prefix");
	cdn_get_stats(q, &st);
	is_int(st.pending, 2, "queue: pending paths survive a configuration change");
	cdn_free(q);
	buf_release(&err);
	buf_release(&out);
}

int main(void)
{
	struct http_conf hc = { 0 };
	struct http *h = NULL;
	struct creds *cr = NULL;
	char dir[] = "/tmp/test_cdn.XXXXXX";
	char cmd[128];

	s3xml_init();
	log_init(0, LOGL_ERROR);
	setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 1);
	ok(http_new(&h, &hc) == 0, "http");
	ok(creds_new(&cr, NULL, NULL) == 0, "creds");
	ok(mkdtemp(dir) != NULL, "temp dir");
	test_journal_text();
	test_cloudfront_pure();
	test_cloudflare_pure();
	test_json_utf8();
	test_endpoint();
	test_config(h, cr);
	test_queue(h, dir);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		ok(0, "cleanup");
	creds_free(cr);
	http_free(h);
	return tap_done();
}
