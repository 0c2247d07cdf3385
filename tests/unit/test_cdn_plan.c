/*
 * test_cdn_plan.c - the pure half of the CDN queue: provider path encoding
 * (cdn_encode_path) and batch planning (cdn_plan_make).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdn.h"
#include "tap.h"

static char *enc(enum cdn_provider p, const char *prefix, const char *key, int is_dir,
		 int *wild)
{
	static char out[8192];
	struct buf b;
	int w = -1, rc;

	buf_init(&b, 0);
	rc = cdn_encode_path(&b, p, prefix, key, is_dir, &w);
	snprintf(out, sizeof(out), "%s", rc == 0 ? buf_str(&b) : "ERR");
	if (wild)
		*wild = w;
	buf_release(&b);
	return out;
}

static void test_encode_cloudfront(void)
{
	enum cdn_provider cf = CDN_CLOUDFRONT;
	int w;
	struct buf b;

	is_str(enc(cf, NULL, "css/site.css", 0, &w), "/css/site.css", "cf plain");
	is_int(w, 0, "cf plain is no wildcard");
	is_str(enc(cf, "", "/a b.css", 0, NULL), "/a%20b.css", "cf space, leading slash");
	is_str(enc(cf, NULL, "\xc3\xa9t\xc3\xa9.png", 0, NULL), "/%C3%A9t%C3%A9.png", "cf unicode");
	is_str(enc(cf, NULL, "~user/x", 0, &w), "/%7Euser/x", "cf tilde starting a segment encoded");
	is_int(w, 0, "cf tilde starting a segment: no wildcard");
	is_str(enc(cf, NULL, "js/runtime~main.1a2b.js", 0, &w), "/js/runtime",
	       "cf tilde inside the last segment cuts");
	is_int(w, 1, "cf tilde inside the last segment makes a wildcard");
	is_str(enc(cf, NULL, "a~b/c.js", 0, &w), "/a%7Eb/c.js", "cf tilde in a directory encoded");
	is_int(w, 0, "cf tilde in a directory: no wildcard");
	is_str(enc(cf, "v1~beta", "app/main.js", 0, &w), "/v1%7Ebeta/app/main.js",
	       "cf tilde in the path prefix encoded");
	is_int(w, 0, "cf tilde in the path prefix: no wildcard");
	is_str(enc(cf, NULL, "q?x#y%z", 0, NULL), "/q%3Fx%23y%25z", "cf ? # %%");
	is_str(enc(cf, NULL, "[a]{b}|c\\d^e`f<g>h\"i", 0, NULL),
	       "/%5Ba%5D%7Bb%7D%7Cc%5Cd%5Ee%60f%3Cg%3Eh%22i", "cf unsafe set");
	is_str(enc(cf, NULL, "a&b'c(d)e+f,g;h=i:j@k$l!m", 0, NULL), "/a&b'c(d)e+f,g;h=i:j@k$l!m",
	       "cf safe punctuation kept");
	is_str(enc(cf, NULL, "tab\there\x7f", 0, NULL), "/tab%09here%7F", "cf controls");
	is_str(enc(cf, NULL, "img/a*b.png", 0, &w), "/img/a", "cf star cuts");
	is_int(w, 1, "cf star makes a wildcard");
	is_str(enc(cf, NULL, "img/", 1, &w), "/img/", "cf dir");
	is_int(w, 1, "cf dir is a wildcard");
	is_str(enc(cf, NULL, "", 1, &w), "/", "cf root dir");
	is_str(enc(cf, "/static/", "", 1, NULL), "/static/", "cf root dir with prefix");
	is_str(enc(cf, "static", "a.css", 0, NULL), "/static/a.css", "cf prefix no slashes");
	is_str(enc(cf, "//static//", "//a.css", 0, NULL), "/static/a.css", "cf prefix slashes");
	is_str(enc(cf, "my site", "a", 0, NULL), "/my%20site/a", "cf prefix encoded");
	is_str(enc(cf, NULL, "", 0, NULL), "ERR", "cf empty file path");
	is_str(enc(cf, NULL, "///", 0, NULL), "ERR", "cf slashes only");
	is_str(enc(cf, NULL, "a//b", 0, NULL), "/a//b", "cf double slash kept");

	/* longer than 4000: a wildcard of 3999 characters, never inside %XX */
	{
		char *k = malloc(5001), *u = malloc(2 * 1400 + 1);
		const char *got;
		size_t n, last;

		memset(k, 'a', 5000);
		k[5000] = '\0';
		got = enc(cf, NULL, k, 0, &w);
		is_int(strlen(got), 3999, "cf long path cut to 3999");
		is_int(w, 1, "cf long path becomes a wildcard");
		for (int i = 0; i < 1400; i++)
			memcpy(u + 2 * i, "\xc3\xa9", 2);
		u[2800] = '\0';
		got = enc(cf, NULL, u, 0, &w);
		n = strlen(got);
		last = (size_t)(strrchr(got, '%') - got);
		ok(n <= 3999 && n >= 3997, "cf long encoded path cut near 3999 (%zu)", n);
		is_int(last, n - 3, "cf long path ends on a whole %%XX");
		free(k);
		free(u);
	}
	buf_init(&b, 0);
	ok(cdn_encode_path(&b, cf, NULL, "", 0, &w) == -EINVAL, "cf empty file is -EINVAL");
	buf_release(&b);
}

static void test_encode_cloudflare(void)
{
	enum cdn_provider fl = CDN_CLOUDFLARE;
	int w;

	is_str(enc(fl, NULL, "a b.css", 0, &w), "/a%20b.css", "cfl space");
	is_int(w, 0, "cfl file");
	is_str(enc(fl, NULL, "~u/x", 0, NULL), "/~u/x", "cfl tilde kept (unreserved)");
	is_str(enc(fl, NULL, "a*b.png", 0, &w), "/a*b.png", "cfl star kept");
	is_int(w, 0, "cfl star is no wildcard");
	is_str(enc(fl, NULL, "\xe6\x97\xa5.txt", 0, NULL), "/%E6%97%A5.txt", "cfl unicode");
	is_str(enc(fl, NULL, "q?x#y%z[1]", 0, NULL), "/q%3Fx%23y%25z%5B1%5D", "cfl gen-delims");
	is_str(enc(fl, NULL, "a+b=c&d;e,f:g@h", 0, NULL), "/a+b=c&d;e,f:g@h", "cfl sub-delims");
	is_str(enc(fl, "static", "dir", 1, &w), "/static/dir/", "cfl dir");
	is_int(w, 1, "cfl dir is a prefix");
	{
		/* a prefix has at most 31 separators: a deeper directory is cut
		 * back to the first 31 (a broader prefix); a file is not */
		char deep[400] = "", want[400] = "/";
		size_t seps = 0;

		for (int i = 0; i < 40; i++)
			snprintf(deep + strlen(deep), sizeof(deep) - strlen(deep), "%sd%d",
				 i ? "/" : "", i);
		for (int i = 0; i < 30; i++)
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "d%d/", i);
		is_str(enc(fl, NULL, deep, 1, &w), want, "cfl 40-level dir cut to 31 separators");
		is_int(w, 1, "cfl cut dir is a prefix");
		for (const char *c = enc(fl, NULL, deep, 0, NULL); *c; c++)
			seps += *c == '/';
		is_int((long)seps, 40, "cfl deep file is not cut");
		is_str(enc(fl, "p/q", "d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/e0/e1/e2/e3/e4/e5/e6/e7/e8/e9/"
			   "f0/f1/f2/f3/f4/f5/f6/f7/f8", 1, NULL),
		       "/p/q/d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/e0/e1/e2/e3/e4/e5/e6/e7/e8/e9/f0/f1/f2/f3/"
		       "f4/f5/f6/f7/", "cfl path_prefix counts");
		is_str(enc(fl, NULL, "d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/e0/e1/e2/e3/e4/e5/e6/e7/e8/e9/"
			   "f0/f1/f2/f3/f4/f5/f6/f7/f8/f9", 1, NULL),
		       "/d0/d1/d2/d3/d4/d5/d6/d7/d8/d9/e0/e1/e2/e3/e4/e5/e6/e7/e8/e9/f0/f1/f2/f3/f4/"
		       "f5/f6/f7/f8/f9/", "cfl 30-level dir (31 separators) kept");
	}
}

static struct cdn_target *targets(size_t n)
{
	return calloc(n, sizeof(struct cdn_target));
}

static int has_item(const struct cdn_batch_plan *b, const char *s)
{
	for (size_t i = 0; i < b->nitems; i++)
		if (strcmp(b->items[i], s) == 0)
			return 1;
	return 0;
}

/* 2000 files in 40 directories of 50. */
static char **many_keys(void)
{
	char **k = calloc(2000, sizeof(*k));

	for (int i = 0; i < 2000; i++)
		if (asprintf(&k[i], "static/d%02d/f%03d.css", i % 40, i / 40) < 0)
			abort();
	return k;
}

static void free_keys(char **k, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(k[i]);
	free(k);
}

static void test_cf_2000(void)
{
	struct cdn_plan_conf pc = { CDN_CLOUDFRONT, NULL, NULL, 3000, 15, 2, 0 };
	char **k = many_keys();
	struct cdn_target *t = targets(2000);
	struct cdn_plan p;
	size_t assigned = 0;

	for (int i = 0; i < 2000; i++)
		t[i] = (struct cdn_target){ k[i], 0 };
	is_int(cdn_plan_make(&pc, t, 2000, &p), 0, "cf 2000: plan");
	is_int(p.nbatches, 1, "cf 2000 files in 40 dirs: one request");
	is_int(p.batches[0].nwild, 15, "cf 2000: 15 wildcards (the limit)");
	is_int(p.batches[0].nitems, 15 + 25 * 50, "cf 2000: 15 wildcards + 1250 files");
	ok(has_item(&p.batches[0], "/static/d00/*") && has_item(&p.batches[0], "/static/d14/*") &&
	   !has_item(&p.batches[0], "/static/d15/*"), "cf 2000: wildcards d00..d14 (ties by name)");
	ok(has_item(&p.batches[0], "/static/d39/f049.css") &&
	   !has_item(&p.batches[0], "/static/d00/f000.css"), "cf 2000: files of the others");
	for (int i = 0; i < 2000; i++)
		assigned += p.assign[i] == 0;
	is_int(assigned, 2000, "cf 2000: every file covered");
	is_int(p.nleft, 0, "cf 2000: nothing left");
	cdn_plan_release(&p);

	pc.collapse_min = 0;
	is_int(cdn_plan_make(&pc, t, 2000, &p), 0, "cf 2000 no collapse: plan");
	is_int(p.nbatches, 1, "cf 2000 no collapse: one request");
	is_int(p.batches[0].nitems, 2000, "cf 2000 no collapse: 2000 paths");
	is_int(p.batches[0].nwild, 0, "cf 2000 no collapse: no wildcard");
	cdn_plan_release(&p);

	pc.collapse_min = 51; /* no directory has that many */
	is_int(cdn_plan_make(&pc, t, 2000, &p), 0, "cf collapse_min 51: plan");
	is_int(p.batches[0].nwild, 0, "cf collapse_min 51: no wildcard");
	cdn_plan_release(&p);
	free(t);
	free_keys(k, 2000);
}

static void test_cf_limits(void)
{
	struct cdn_plan_conf pc = { CDN_CLOUDFRONT, "", NULL, 3000, 15, 0, 0 };
	struct cdn_target *t = targets(5000);
	char **k = calloc(5000, sizeof(*k));
	struct cdn_plan p;

	for (int i = 0; i < 5000; i++) {
		if (asprintf(&k[i], "f%04d", i) < 0)
			abort();
		t[i] = (struct cdn_target){ k[i], 0 };
	}
	is_int(cdn_plan_make(&pc, t, 5000, &p), 0, "cf 5000: plan");
	is_int(p.nbatches, 2, "cf 5000 files: two requests");
	is_int(p.batches[0].nitems, 3000, "cf 5000: first has 3000");
	is_int(p.batches[1].nitems, 2000, "cf 5000: second has 2000");
	cdn_plan_release(&p);
	pc.max_batches = 1;
	is_int(cdn_plan_make(&pc, t, 5000, &p), 0, "cf 5000 one round: plan");
	is_int(p.nbatches, 1, "cf 5000 one round: one request");
	is_int(p.nleft, 2000, "cf 5000 one round: 2000 left");
	is_int(p.assign[4999], -1, "cf 5000 one round: the last is left");
	cdn_plan_release(&p);
	free(t);
	free_keys(k, 5000);

	/* 20 directory purges, 15 wildcards per request */
	t = targets(20);
	k = calloc(20, sizeof(*k));
	for (int i = 0; i < 20; i++) {
		if (asprintf(&k[i], "d%02d", i) < 0)
			abort();
		t[i] = (struct cdn_target){ k[i], 1 };
	}
	pc.max_batches = 0;
	is_int(cdn_plan_make(&pc, t, 20, &p), 0, "cf 20 dirs: plan");
	is_int(p.nbatches, 2, "cf 20 dirs: two requests");
	is_int(p.batches[0].nwild, 15, "cf 20 dirs: 15 wildcards first");
	is_int(p.batches[1].nwild, 5, "cf 20 dirs: 5 next");
	cdn_plan_release(&p);
	pc.max_wild = 0;
	is_int(cdn_plan_make(&pc, t, 20, &p), 0, "cf no wildcard budget: plan");
	is_int(p.nbatches, 0, "cf no wildcard budget: nothing sent");
	is_int(p.nleft, 20, "cf no wildcard budget: all left");
	cdn_plan_release(&p);
	free(t);
	free_keys(k, 20);
}

static void test_cf_dedupe_subsume(void)
{
	struct cdn_plan_conf pc = { CDN_CLOUDFRONT, "static", NULL, 3000, 15, 2, 0 };
	struct cdn_target t[] = {
		{ "a.css", 0 }, { "/a.css", 0 }, { "a.css", 0 }, { "d/x", 0 }, { "d/y/z", 0 },
		{ "d", 1 },     { "d/y/", 1 },   { "e", 0 },     { "", 0 },
	};
	struct cdn_plan p;

	is_int(cdn_plan_make(&pc, t, 9, &p), 0, "cf dedupe: plan");
	is_int(p.nbatches, 1, "cf dedupe: one request");
	is_int(p.batches[0].nitems, 3, "cf dedupe: three paths");
	ok(has_item(&p.batches[0], "/static/a.css") && has_item(&p.batches[0], "/static/d/*") &&
	   has_item(&p.batches[0], "/static/e"), "cf dedupe: a.css, d/*, e");
	is_int(p.assign[4], 0, "cf dedupe: d/y/z covered by d/*");
	is_int(p.assign[8], -1, "cf dedupe: the empty path is skipped");
	is_int(p.nleft, 0, "cf dedupe: the skipped one is not 'left'");
	cdn_plan_release(&p);
}

static void test_cf_collapse_rules(void)
{
	struct cdn_plan_conf pc = { CDN_CLOUDFRONT, NULL, NULL, 3000, 15, 2, 0 };
	struct cdn_target root[] = { { "a", 0 }, { "b", 0 }, { "c", 0 } };
	struct cdn_target sub[] = { { "a/b", 1 }, { "a/x", 0 }, { "a/y", 0 } };
	struct cdn_target star[] = { { "img/a*b.png", 0 }, { "img/c.png", 0 } };
	struct cdn_plan p;

	is_int(cdn_plan_make(&pc, root, 3, &p), 0, "cf root: plan");
	is_int(p.batches[0].nwild, 0, "cf: files at the mount root never collapse to /*");
	is_int(p.batches[0].nitems, 3, "cf root: three paths");
	cdn_plan_release(&p);
	is_int(cdn_plan_make(&pc, sub, 3, &p), 0, "cf subsume: plan");
	is_int(p.batches[0].nitems, 1, "cf: a collapsed /a/* subsumes /a/b/*");
	is_str(p.batches[0].items[0], "/a/*", "cf collapsed item");
	is_int(p.assign[0], 0, "cf subsumed dir assigned");
	cdn_plan_release(&p);
	pc.collapse_min = 0;
	is_int(cdn_plan_make(&pc, star, 2, &p), 0, "cf star: plan");
	is_int(p.batches[0].nitems, 2, "cf star: two paths");
	ok(has_item(&p.batches[0], "/img/a*") && has_item(&p.batches[0], "/img/c.png"),
	   "cf star: /img/a* and /img/c.png");
	is_int(p.batches[0].nwild, 1, "cf star: counts as a wildcard");
	cdn_plan_release(&p);
}

static void test_cloudflare(void)
{
	struct cdn_plan_conf pc = { CDN_CLOUDFLARE, "", "cdn.example.com", 100, 30, 2, 0 };
	char **k = many_keys();
	struct cdn_target *t = targets(2035);
	char **dirs = calloc(35, sizeof(*dirs));
	struct cdn_plan p;
	size_t urls = 0, all = 1;

	for (int i = 0; i < 2000; i++)
		t[i] = (struct cdn_target){ k[i], 0 };
	is_int(cdn_plan_make(&pc, t, 2000, &p), 0, "cfl 2000: plan");
	is_int(p.nbatches, 20, "cfl 2000 URLs by 100: 20 calls (ceil)");
	for (size_t b = 0; b < p.nbatches; b++) {
		urls += p.batches[b].nitems;
		all = all && p.batches[b].kind == CDN_BATCH_PATHS && p.batches[b].nitems == 100;
	}
	is_int(urls, 2000, "cfl 2000: every URL once");
	ok(all, "cfl 2000: full URL batches, no prefix purge (URL lists preferred)");
	is_str(p.batches[0].items[0], "https://cdn.example.com/static/d00/f000.css",
	       "cfl full URL");
	cdn_plan_release(&p);

	pc.max_paths = 30;
	is_int(cdn_plan_make(&pc, t, 2000, &p), 0, "cfl batch 30: plan");
	is_int(p.nbatches, 67, "cfl 2000 URLs by 30: 67 calls");
	cdn_plan_release(&p);
	pc.max_paths = 100;

	for (int i = 0; i < 35; i++) {
		if (asprintf(&dirs[i], "dir%02d", i) < 0)
			abort();
		t[2000 + i] = (struct cdn_target){ dirs[i], 1 };
	}
	t[0] = (struct cdn_target){ "dir00/x.css", 0 };
	is_int(cdn_plan_make(&pc, t, 2035, &p), 0, "cfl dirs: plan");
	is_int(p.nbatches, 20 + 2, "cfl 35 prefixes: two prefix calls (30 a call)");
	is_int(p.batches[20].kind, CDN_BATCH_PREFIXES, "cfl prefixes after URLs");
	is_int(p.batches[20].nitems, 30, "cfl 30 prefixes");
	is_str(p.batches[20].items[0], "cdn.example.com/dir00/", "cfl prefix form");
	is_int(p.assign[0], 20, "cfl a file under a purged dir goes with the prefix");
	cdn_plan_release(&p);

	pc.domain = "http://127.0.0.1:8080";
	{
		struct cdn_target two[] = { { "a b", 0 }, { "d", 1 } };

		is_int(cdn_plan_make(&pc, two, 2, &p), 0, "cfl http domain: plan");
		is_str(p.batches[0].items[0], "http://127.0.0.1:8080/a%20b", "cfl http URL");
		is_str(p.batches[1].items[0], "127.0.0.1:8080/d/", "cfl prefix has no scheme");
		cdn_plan_release(&p);
	}
	pc.domain = NULL;
	ok(cdn_plan_make(&pc, t, 1, &p) == -EINVAL, "cfl without a domain: -EINVAL");
	cdn_plan_release(&p);
	pc.domain = "cdn.example.com";
	pc.max_paths = 0;
	ok(cdn_plan_make(&pc, t, 1, &p) == -EINVAL, "max_paths 0: -EINVAL");
	cdn_plan_release(&p);
	free(t);
	free_keys(k, 2000);
	free_keys(dirs, 35);
}

static void test_deterministic(void)
{
	struct cdn_plan_conf pc = { CDN_CLOUDFRONT, NULL, NULL, 3000, 15, 2, 0 };
	struct cdn_target a[] = { { "x/1", 0 }, { "y/2", 0 }, { "x/3", 0 }, { "z", 1 } };
	struct cdn_target b[] = { { "z", 1 }, { "x/3", 0 }, { "y/2", 0 }, { "x/1", 0 } };
	struct cdn_plan pa, pb;
	int same = 1;

	is_int(cdn_plan_make(&pc, a, 4, &pa), 0, "order a");
	is_int(cdn_plan_make(&pc, b, 4, &pb), 0, "order b");
	same = pa.nbatches == 1 && pb.nbatches == 1 &&
	       pa.batches[0].nitems == pb.batches[0].nitems;
	for (size_t i = 0; same && i < pa.batches[0].nitems; i++)
		same = strcmp(pa.batches[0].items[i], pb.batches[0].items[i]) == 0;
	ok(same, "the plan does not depend on the input order");
	is_str(pa.batches[0].items[0], "/x/*", "sorted: wildcards first");
	cdn_plan_release(&pa);
	cdn_plan_release(&pb);
}

static void test_caller_ref(void)
{
	char a[128], b[128], small[16];

	is_int(cdn_caller_ref(a, sizeof(a)), 0, "caller ref");
	is_int(cdn_caller_ref(b, sizeof(b)), 0, "caller ref again");
	ok(strncmp(a, "cdnfs-", 6) == 0, "caller ref prefix: %s", a);
	ok(strcmp(a, b) != 0, "caller refs differ");
	ok(strlen(a) < 128 && strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					"0123456789.-") == strlen(a),
	   "caller ref characters");
	ok(cdn_caller_ref(small, sizeof(small)) == -EINVAL, "caller ref needs room");
}

int main(void)
{
	test_encode_cloudfront();
	test_encode_cloudflare();
	test_cf_2000();
	test_cf_limits();
	test_cf_dedupe_subsume();
	test_cf_collapse_rules();
	test_cloudflare();
	test_deterministic();
	test_caller_ref();
	return tap_done();
}
