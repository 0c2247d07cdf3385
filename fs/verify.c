/*
 * verify.c - `cdnfs verify MOUNTPOINT [PATH...]`: after a deploy, fetch every
 * file of a mount over its public URL and check what a browser would get.
 *
 * The mount is asked (through its xattrs, like `cdnfs flush`) to flush and
 * for each file's URL (user.cdnfs.url: the CDN URL with cdn_domain, else the
 * S3 object URL; presigned for rules with signed_url_ttl); the expected
 * headers come from the rules, loaded here the way --explain loads them
 * (-o config=FILE, else /etc/cdnfs/cdnfs.conf, else the built-in rules), so
 * the same config as the mount's must be named.  Per file:
 *  - a public file: HEAD answers 200 with the rule's Cache-Control and
 *    Content-Type (unless set by hand: x-amz-meta-cdnfs-manual), a
 *    Content-Encoding only where the rule compresses (and one where
 *    compressing would have paid), the file's size;
 *  - a file whose rule signs URLs (private): the URL without its signature
 *    answers 401/403, the presigned GET 200/206 with the same header checks;
 *  - an https URL is fetched with certificate verification (ca_file=) and
 *    without following redirects, so a redirect to http is a problem;
 *  - the CDN's cache header (X-Cache, CF-Cache-Status) is reported.
 *
 * Owns: the list of files (struct item, one per file, sorted by path) and a
 * private http pool.  Worker threads take items by index under v->lock; an
 * item is written only by the thread that took it, and read by the main
 * thread after every worker was joined, so results need no lock.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "compress.h"
#include "conf.h"
#include "http.h"
#include "log.h"
#include "rules.h"
#include "verify.h"

#define VERIFY_PARALLEL 8
#define VERIFY_MAX_OPTS 32
#define VERIFY_URL_MAX 16384
#define VERIFY_CACHE_KINDS 8

struct item {
	char *rel;            /* path inside the mount, no leading '/' */
	char *abs;            /* the same path through the mount */
	uint64_t size;        /* st_size: the original bytes */
	struct buf out;       /* problem lines */
	int problems;
	const char *cache_hdr; /* "X-Cache", "CF-Cache-Status" or NULL */
	char cache[128];       /* its value */
};

struct verify {
	struct fs_conf conf;
	struct rules *rules;
	struct http *http;
	const char *mnt;
	char real[PATH_MAX];  /* realpath of mnt */
	const char *opts[VERIFY_MAX_OPTS]; /* -o lists, as given */
	size_t nopts;
	int verbose;
	struct item *items;
	size_t n, cap, next;  /* next: the first item no worker took yet */
	int errors;           /* operands that could not be walked */
	pthread_mutex_t lock;
};

static void problem(struct item *it, const char *fmt, ...) PRINTF(2, 3);

static void problem(struct item *it, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = buf_addf(&it->out, "verify: '%s': ", it->rel);
	rc = rc ?: buf_vaddf(&it->out, fmt, ap);
	rc = rc ?: buf_addch(&it->out, '\n');
	va_end(ap);
	if (rc < 0) /* out of memory: still counted, printed as a bare line */
		buf_init(&it->out, 1 << 20);
	it->problems++;
}

/* Is path a mounted cdnfs (fuse.cdnfs in the mount table)? */
static int is_cdnfs_mount(const char *path)
{
	char real[PATH_MAX], line[8192];
	FILE *f;
	int found = 0;

	if (!realpath(path, real) || !(f = fopen("/proc/self/mounts", "re")))
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		char dev[4096], mnt[4096], type[64];

		if (sscanf(line, "%4095s %4095s %63s", dev, mnt, type) == 3 &&
		    strcmp(type, "fuse.cdnfs") == 0 && strcmp(mnt, real) == 0)
			found = 1;
	}
	fclose(f);
	return found;
}

/* ------------------------------------------------------------ options --- */

/* Apply one -o list ("a=1,b"); only_config: just the config= option. */
static int apply_opts(struct verify *v, const char *list, int only_config, struct buf *err)
{
	char *copy = strdup(list), *rest = copy, *o;
	int rc = copy ? 0 : -ENOMEM;

	while (rc == 0 && (o = strsep(&rest, ","))) {
		char *eq = strchr(o, '=');

		if (eq)
			*eq++ = '\0';
		if (only_config != (strcmp(o, "config") == 0))
			continue;
		rc = conf_set(&v->conf, o, eq, err);
	}
	free(copy);
	return rc;
}

/* Defaults, environment, config file, -o: the mount's precedence. */
static int configure(struct verify *v)
{
	struct buf err;
	const char *config;
	int rc = 0;

	buf_init(&err, 4096);
	conf_defaults(&v->conf);
	v->conf.parallel = VERIFY_PARALLEL;
	for (size_t i = 0; rc == 0 && i < v->nopts; i++)
		rc = apply_opts(v, v->opts[i], 1, &err);
	config = v->conf.config;
	if (!config && access("/etc/cdnfs/cdnfs.conf", F_OK) == 0)
		config = "/etc/cdnfs/cdnfs.conf";
	rc = rc ?: conf_from_env(&v->conf, &err);
	rc = rc ?: rules_load(&v->rules, config, conf_file_opt, &v->conf, &err);
	for (size_t i = 0; rc == 0 && i < v->nopts; i++)
		rc = apply_opts(v, v->opts[i], 0, &err);
	if (rc < 0)
		fprintf(stderr, "cdnfs: verify: %s\n", err.len ? buf_str(&err) : strerror(-rc));
	buf_release(&err);
	return rc;
}

/* ---------------------------------------------------------- the files --- */

static int add_item(struct verify *v, const char *rel, const char *abs, uint64_t size)
{
	struct item *it;

	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 256, bytes;

		if (size_mul(cap, sizeof(*it), &bytes) < 0)
			return -ENOMEM;
		it = realloc(v->items, bytes);
		if (!it)
			return -ENOMEM;
		v->items = it;
		v->cap = cap;
	}
	it = &v->items[v->n];
	memset(it, 0, sizeof(*it));
	buf_init(&it->out, 1 << 20);
	it->rel = strdup(rel);
	it->abs = strdup(abs);
	it->size = size;
	v->n++;
	return it->rel && it->abs ? 0 : -ENOMEM;
}

static int walk(struct verify *v, const char *abs, const char *rel);

/* One directory entry: a file to check, a directory to walk, else nothing
 * (symlinks are not fetched: their objects are not web assets). */
static int walk_entry(struct verify *v, const char *abs, const char *rel)
{
	struct stat st;

	if (lstat(abs, &st) < 0) {
		fprintf(stderr, "cdnfs: verify: cannot stat '%s': %s\n", abs, strerror(errno));
		v->errors++;
		return 0;
	}
	if (S_ISDIR(st.st_mode))
		return walk(v, abs, rel);
	if (S_ISREG(st.st_mode))
		return add_item(v, rel, abs, (uint64_t)st.st_size);
	return 0;
}

static int walk(struct verify *v, const char *abs, const char *rel)
{
	DIR *d = opendir(abs);
	struct dirent *de;
	char *cabs = NULL, *crel = NULL;
	int rc = 0;

	if (!d) {
		fprintf(stderr, "cdnfs: verify: cannot list '%s': %s\n", abs, strerror(errno));
		v->errors++;
		return 0;
	}
	while (rc == 0 && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (asprintf(&cabs, "%s/%s", abs, de->d_name) < 0 ||
		    asprintf(&crel, "%s%s%s", rel, *rel ? "/" : "", de->d_name) < 0) {
			rc = -ENOMEM;
			break;
		}
		rc = walk_entry(v, cabs, crel);
		free(cabs);
		free(crel);
		cabs = crel = NULL;
	}
	free(cabs);
	closedir(d);
	return rc;
}

/* An operand: relative to the mount point, or an absolute path inside it. */
static int add_operand(struct verify *v, const char *arg)
{
	char real[PATH_MAX], *abs = NULL;
	size_t ml = strlen(v->real);
	const char *rel;
	int rc;

	if (arg[0] == '/') {
		if (!realpath(arg, real) || strncmp(real, v->real, ml) != 0 ||
		    (real[ml] != '/' && real[ml] != '\0')) {
			fprintf(stderr, "cdnfs: verify: '%s' is not a path inside '%s'\n", arg,
				v->mnt);
			v->errors++;
			return 0;
		}
		rel = real + ml;
	} else {
		rel = arg;
	}
	while (*rel == '/' || strncmp(rel, "./", 2) == 0)
		rel += *rel == '/' ? 1 : 2;
	if (asprintf(&abs, "%s%s%s", v->real, *rel ? "/" : "", rel) < 0)
		return -ENOMEM;
	rc = walk_entry(v, abs, rel);
	free(abs);
	return rc;
}

static int by_rel(const void *a, const void *b)
{
	return strcmp(((const struct item *)a)->rel, ((const struct item *)b)->rel);
}

/* ---------------------------------------------------------- the checks --- */

/* GET or HEAD url, nothing kept but an error body; range asks for byte 0. */
static int fetch(struct verify *v, const char *method, const char *url, int range,
		 struct http_resp *resp)
{
	static const char *const hdrs[] = { "Range: bytes=0-0" };
	struct http_req req = {
		.method = method,
		.url = url,
		.headers = hdrs,
		.nheaders = range ? 1 : 0,
		.sink_kind = HTTP_SINK_DISCARD,
		.max_body = 1 << 20,
	};

	return http_do(v->http, &req, resp);
}

/* The URL without its query (a presigned URL's signature is a credential). */
static const char *shown(const char *url, char *out, size_t size)
{
	snprintf(out, size, "%.*s", (int)strcspn(url, "?"), url);
	return out;
}

static void check_value(struct item *it, const struct http_resp *resp, const char *header,
			const char *want, int nocase)
{
	const char *manual = http_resp_header(resp, "x-amz-meta-cdnfs-manual");
	char lower[64];
	const char *got;
	size_t i;

	for (i = 0; header[i] && i + 1 < sizeof(lower); i++)
		lower[i] = (char)(header[i] >= 'A' && header[i] <= 'Z' ? header[i] + 32 : header[i]);
	lower[i] = '\0';
	got = http_resp_header(resp, lower);
	if (conf_in_list(manual, header)) /* set by hand (user.cdnfs.*): not the rule's */
		return;
	if (got && want && (nocase ? strcasecmp(got, want) : strcmp(got, want)) == 0)
		return;
	if (!got && !want)
		return;
	if (!got)
		problem(it, "%s is missing, rule says '%s'", header, want);
	else if (!want)
		problem(it, "%s is '%s', rule says none", header, got);
	else
		problem(it, "%s is '%s', rule says '%s'", header, got, want);
}

/* 1 when storing the file compressed with kind would have paid (the upload's
 * own test: at most 95%), 0 when not, -errno when it cannot be read. */
static int compress_pays(const struct item *it, enum compress_kind kind)
{
	uint64_t zlen = 0;
	int fd = open(it->abs, O_RDONLY | O_CLOEXEC), z = -1, rc;

	if (fd < 0)
		return -errno;
	z = memfd_create("cdnfs-verify", MFD_CLOEXEC);
	rc = z < 0 ? -errno : compress_fd(kind, fd, z, &zlen);
	if (rc == 0)
		rc = zlen * 100 <= it->size * 95;
	if (z >= 0)
		close(z);
	close(fd);
	return rc;
}

static void check_encoding(struct item *it, const struct rule_result *rr,
			   const struct http_resp *resp)
{
	const char *got = http_resp_header(resp, "content-encoding");
	const char *want = rules_should_compress(rr, it->size) ? compress_encoding(rr->compress)
							       : NULL;
	int pays;

	if (got && *got) {
		if (!want)
			problem(it, "Content-Encoding is '%s', rule says none", got);
		else if (strcasecmp(got, want) != 0)
			problem(it, "Content-Encoding is '%s', rule says '%s'", got, want);
		return;
	}
	if (!want)
		return;
	pays = compress_pays(it, rr->compress);
	if (pays < 0)
		problem(it, "cannot read it through the mount: %s", strerror(-pays));
	else if (pays)
		problem(it, "Content-Encoding is missing, rule says '%s'", want);
}

/* The size the object stands for: its own, or x-amz-meta-cdnfs-size when
 * stored compressed; from Content-Range's total for a ranged answer. */
static void check_size(struct item *it, const struct http_resp *resp)
{
	const char *enc = http_resp_header(resp, "content-encoding");
	const char *v = http_resp_header(resp, "content-length");
	const char *cr = http_resp_header(resp, "content-range");
	char *end;
	uint64_t size;

	if (enc && *enc)
		v = http_resp_header(resp, "x-amz-meta-cdnfs-size");
	else if (resp->status == 206)
		v = cr && strchr(cr, '/') ? strchr(cr, '/') + 1 : NULL;
	if (!v || !*v)
		return; /* a CDN may answer chunked, or drop x-amz-meta-* */
	size = strtoull(v, &end, 10);
	if (*end == '\0' && size != it->size)
		problem(it, "the object has %" PRIu64 " bytes, the file %" PRIu64, size, it->size);
}

static void check_answer(struct item *it, const struct rule_result *rr,
			 const struct http_resp *resp)
{
	static const char *const cache_hdrs[][2] = { { "x-cache", "X-Cache" },
						     { "cf-cache-status", "CF-Cache-Status" } };

	check_value(it, resp, "Cache-Control", rr->cache_control, 0);
	check_value(it, resp, "Content-Type", rr->content_type, 1);
	check_encoding(it, rr, resp);
	check_size(it, resp);
	for (size_t i = 0; i < ARRAY_SIZE(cache_hdrs) && !it->cache_hdr; i++) {
		const char *c = http_resp_header(resp, cache_hdrs[i][0]);

		if (c) {
			it->cache_hdr = cache_hdrs[i][1];
			snprintf(it->cache, sizeof(it->cache), "%s", c);
		}
	}
}

/* Fetch url expecting one of two statuses; 0 with resp filled when it
 * answered as expected, else the problem is recorded and -1 returned. */
static int expect(struct verify *v, struct item *it, const char *method, const char *url,
		  int range, long ok1, long ok2, struct http_resp *resp)
{
	char u[VERIFY_URL_MAX];
	const char *loc;
	int rc = fetch(v, method, url, range, resp);

	if (rc < 0) {
		problem(it, "cannot fetch '%s': %s", shown(url, u, sizeof(u)),
			resp->errmsg[0] ? resp->errmsg : strerror(-rc));
		return -1;
	}
	if (resp->status == ok1 || resp->status == ok2)
		return 0;
	loc = http_resp_header(resp, "location");
	if (loc)
		problem(it, "HTTP %ld redirect to '%s' from '%s', expected %ld", resp->status, loc,
			shown(url, u, sizeof(u)), ok1);
	else
		problem(it, "HTTP %ld from '%s', expected %ld", resp->status,
			shown(url, u, sizeof(u)), ok1);
	return -1;
}

/* A private file: unreadable without the signature, readable with it. */
static void check_private(struct verify *v, struct item *it, const struct rule_result *rr,
			  const char *url)
{
	char plain[VERIFY_URL_MAX];
	struct http_resp resp;
	int rc;

	shown(url, plain, sizeof(plain));
	rc = fetch(v, "HEAD", plain, 0, &resp);
	if (rc < 0) { /* the signed URL has the same host: one line is enough */
		problem(it, "cannot fetch '%s': %s", plain,
			resp.errmsg[0] ? resp.errmsg : strerror(-rc));
		http_resp_release(&resp);
		return;
	}
	if (resp.status >= 200 && resp.status < 400)
		problem(it, "publicly readable: HTTP %ld from '%s' without a signature, "
			    "expected 403", resp.status, plain);
	else if (resp.status != 401 && resp.status != 403)
		problem(it, "HTTP %ld from '%s' without a signature, expected 403", resp.status,
			plain);
	http_resp_release(&resp);
	if (!strchr(url, '?'))
		problem(it, "its URL '%s' is not signed, rule says signed_url_ttl %ld", url,
			rr->signed_url_ttl);
	else if (expect(v, it, "GET", url, it->size > 0, 200, it->size > 0 ? 206 : 200,
			&resp) == 0)
		check_answer(it, rr, &resp);
	http_resp_release(&resp);
}

static void check_one(struct verify *v, struct item *it)
{
	char *url = malloc(VERIFY_URL_MAX);
	struct rule_result rr;
	struct http_resp resp;
	ssize_t n;

	if (!url) {
		problem(it, "out of memory");
		return;
	}
	n = getxattr(it->abs, "user.cdnfs.url", url, VERIFY_URL_MAX - 1);
	if (n < 0) {
		problem(it, "cannot get its URL (user.cdnfs.url): %s", strerror(errno));
		goto out;
	}
	url[n] = '\0';
	rules_eval(v->rules, it->rel, &rr);
	if (rr.signed_url_ttl > 0) {
		check_private(v, it, &rr, url);
	} else {
		if (expect(v, it, "HEAD", url, 0, 200, 200, &resp) == 0)
			check_answer(it, &rr, &resp);
		http_resp_release(&resp);
	}
out:
	free(url);
}

static void *worker(void *arg)
{
	struct verify *v = arg;

	for (;;) {
		struct item *it = NULL;

		pthread_mutex_lock(&v->lock);
		if (v->next < v->n)
			it = &v->items[v->next++];
		pthread_mutex_unlock(&v->lock);
		if (!it)
			return NULL;
		check_one(v, it);
	}
}

static int run_checks(struct verify *v)
{
	struct http_conf hc = { .timeout_s = v->conf.timeout, .insecure = v->conf.insecure,
				.ca_file = v->conf.ca_file, .max_handles = v->conf.parallel };
	size_t nt = (size_t)v->conf.parallel < v->n ? (size_t)v->conf.parallel : v->n;
	pthread_t *t = calloc(nt ? nt : 1, sizeof(*t));
	size_t started = 0;
	int rc = t ? http_new(&v->http, &hc) : -ENOMEM;

	for (; rc == 0 && started < nt; started++)
		rc = -pthread_create(&t[started], NULL, worker, v);
	if (rc < 0 && started == 0 && v->http)
		worker(v); /* no thread at all: do the work here */
	for (size_t i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	free(t);
	return v->http ? 0 : rc;
}

/* ---------------------------------------------------------- reporting --- */

/* Problem lines in path order, CDN cache statuses, the summary.  Returns the
 * number of problems. */
static int report(struct verify *v)
{
	const char *hdr = NULL, *kinds[VERIFY_CACHE_KINDS];
	size_t counts[VERIFY_CACHE_KINDS] = { 0 }, nk = 0, ok = 0, other = 0;
	int problems = v->errors;

	for (size_t i = 0; i < v->n; i++) {
		struct item *it = &v->items[i];
		size_t k;

		fputs(buf_str(&it->out), stdout);
		problems += it->problems;
		ok += it->problems == 0;
		if (it->problems == 0 && v->verbose)
			printf("verify: '%s': ok%s%s%s%s\n", it->rel, it->cache_hdr ? " (" : "",
			       it->cache_hdr ? it->cache_hdr : "", it->cache_hdr ? ": " : "",
			       it->cache_hdr ? it->cache : "");
		if (!it->cache_hdr)
			continue;
		hdr = it->cache_hdr;
		for (k = 0; k < nk && strcmp(kinds[k], it->cache) != 0; k++)
			;
		if (k == nk && nk < VERIFY_CACHE_KINDS)
			kinds[nk++] = it->cache;
		if (k < nk)
			counts[k]++;
		else
			other++;
	}
	if (hdr) {
		printf("verify: CDN cache (%s):", hdr);
		for (size_t k = 0; k < nk; k++)
			printf("%s %zu '%s'", k ? "," : "", counts[k], kinds[k]);
		if (other)
			printf(", %zu other", other);
		putchar('\n');
	}
	printf("verify: %zu checked, %zu ok, %d problem%s\n", v->n, ok, problems,
	       problems == 1 ? "" : "s");
	return problems;
}

/* ------------------------------------------------------- command line --- */

/* Options and operands: -v, -o LIST / -oLIST, --; *first: the first
 * operand's index (the mount point).  -1 on a usage error. */
static int parse_args(struct verify *v, int argc, char **argv, int *first)
{
	int i, dashdash = 0;

	*first = -1;
	for (i = 2; i < argc; i++) {
		const char *a = argv[i];

		if (!dashdash && strcmp(a, "--") == 0) {
			dashdash = 1;
		} else if (!dashdash && strcmp(a, "-v") == 0) {
			v->verbose = 1;
		} else if (!dashdash && strncmp(a, "-o", 2) == 0) {
			if (!a[2] && i + 1 >= argc)
				return -1;
			if (v->nopts == VERIFY_MAX_OPTS)
				return -1;
			v->opts[v->nopts++] = a[2] ? a + 2 : argv[++i];
		} else if (!dashdash && a[0] == '-' && a[1]) {
			return -1;
		} else if (*first < 0) {
			*first = i;
		}
	}
	return *first < 0 ? -1 : 0;
}

static int collect(struct verify *v, int argc, char **argv, int first)
{
	int rc = 0, operands = 0, dashdash = 0;

	for (int i = first + 1; rc == 0 && i < argc; i++) {
		if (!dashdash && strcmp(argv[i], "--") == 0) {
			dashdash = 1;
		} else if (!dashdash && strcmp(argv[i], "-v") == 0) {
			continue;
		} else if (!dashdash && strncmp(argv[i], "-o", 2) == 0) {
			i += argv[i][2] ? 0 : 1;
		} else {
			operands++;
			rc = add_operand(v, argv[i]);
		}
	}
	if (rc == 0 && operands == 0)
		rc = walk(v, v->real, "");
	if (rc == 0 && v->n > 1)
		qsort(v->items, v->n, sizeof(*v->items), by_rel);
	return rc;
}

static void verify_release(struct verify *v)
{
	for (size_t i = 0; i < v->n; i++) {
		free(v->items[i].rel);
		free(v->items[i].abs);
		buf_release(&v->items[i].out);
	}
	free(v->items);
	http_free(v->http);
	rules_free(v->rules);
	conf_release(&v->conf);
	pthread_mutex_destroy(&v->lock);
}

static int verify_run(struct verify *v, int argc, char **argv, int first)
{
	int rc;

	log_init(0, LOGL_WARN);
	if (configure(v) < 0)
		return 2;
	log_set_level((enum log_level)v->conf.log_level);
	if (!realpath(v->mnt, v->real)) {
		fprintf(stderr, "cdnfs: verify: cannot use '%s': %s\n", v->mnt, strerror(errno));
		return 2;
	}
	/* what was written must be in S3 (and purged from the CDN) first */
	if (setxattr(v->real, "user.cdnfs.flush", "1", 1, 0) < 0) {
		fprintf(stderr, "cdnfs: verify: flush of '%s' failed: %s\n", v->mnt,
			strerror(errno));
		return 2;
	}
	rc = collect(v, argc, argv, first);
	rc = rc ?: run_checks(v);
	if (rc < 0) {
		fprintf(stderr, "cdnfs: verify: %s\n", strerror(-rc));
		return 2;
	}
	fflush(stderr);
	return report(v) ? 1 : 0;
}

int verify_command(int argc, char **argv)
{
	struct verify v;
	int first, rc;

	if (argc < 3 || strcmp(argv[1], "verify") != 0)
		return -1;
	memset(&v, 0, sizeof(v));
	if (parse_args(&v, argc, argv, &first) < 0 || !is_cdnfs_mount(argv[first])) {
		if (first >= 0 && is_cdnfs_mount(argv[first])) {
			fprintf(stderr, "usage: cdnfs verify [-v] [-o OPT[,OPT...]] MOUNTPOINT "
					"[PATH...]\n");
			return 2;
		}
		return -1;
	}
	pthread_mutex_init(&v.lock, NULL);
	v.mnt = argv[first];
	rc = verify_run(&v, argc, argv, first);
	verify_release(&v);
	return rc;
}
