/*
 * dcache-test.c - drives fs/dcache.c against a real S3 server, for
 * tests/integration/test_dcache.py (which puts the objects, runs this and
 * checks what it prints).
 *
 *   dcache-test [-c CHUNK] [-m MAX_BYTES] [-r READ_AHEAD] [-t IO_THREADS]
 *               DIR BUCKET COMMAND...
 *
 * S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY come from the
 * environment (path-style requests); DCACHE_TEST_DEBUG=1 logs at debug level.
 * The commands run in order on one open cache (VER is "ETAG SIZE COMP",
 * COMP 1 for an object stored with Content-Encoding, SIZE its decoded size):
 *   read KEY VER           sequential 128 KiB reads -> "read KEY SHA256 NBYTES"
 *   pread KEY VER OFF LEN  one read                 -> "pread KEY OFF SHA256 NBYTES"
 *   conc KEY VER N         N threads with their own handles read the whole
 *                          object at once, even ones forwards, odd ones
 *                          backwards                -> "conc KEY SHA256" per thread
 *   fill KEY VER           dcache_fill, then hash the file at dcache_path
 *                                                   -> "fill KEY SHA256 NBYTES"
 *   hold KEY VER           keep a handle until the end -> "hold KEY PATH"
 *   hread N OFF LEN        read through the Nth held handle (from 0)
 *                                                   -> "hread N OFF SHA256 NBYTES"
 *   unhold                 put every held handle    -> "unhold N"
 *   adopt KEY ETAG SIZE PATH                        -> "adopt KEY 0"
 *   forget KEY                                      -> "forget KEY"
 *   lazy                   adopted files whose sidecar waits -> "lazy N"
 *   synclazy               dcache_sync_lazy         -> "synclazy"
 *   crash                  _exit(0) now: no close, as a kill -9 would
 *   stats  -> "stats bytes=B files=F hits=H misses=M fetched=X evicted=E gets=G"
 * A failed command prints "err COMMAND KEY -ERRNO" and the run goes on; at the
 * end the cache is closed and "final ..." (the stats line) is printed.  Exit
 * status 0 unless the setup failed or the command line is wrong (2).
 */
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "creds.h"
#include "dcache.h"
#include "http.h"
#include "log.h"
#include "s3.h"
#include "wq.h"

#define READ_BLOCK ((size_t)128 << 10)
#define MAX_HELD 64
#define MAX_THREADS 32

struct ctx {
	struct dcache *dc;
	struct http *http;
	struct dc_file *held[MAX_HELD];
	int nheld;
};

struct ver {
	const char *key, *etag;
	uint64_t size;
	int comp;
};

struct reader {
	struct ctx *c;
	const struct ver *v;
	int backwards;
	pthread_barrier_t *start;
	char sha[65];
	int rc;
};

static uint64_t num(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 0);

	if (*s == '\0' || *end != '\0') {
		fprintf(stderr, "dcache-test: bad number '%s'\n", s);
		exit(2);
	}
	return v;
}

static void hex_digest(EVP_MD_CTX *md, char out[65])
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	EVP_DigestFinal_ex(md, d, &n);
	for (unsigned int i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void sha_mem(const char *p, size_t n, char out[65])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	EVP_DigestUpdate(md, p, n);
	hex_digest(md, out);
	EVP_MD_CTX_free(md);
}

static struct ver parse_ver(char **a)
{
	struct ver v = { a[0], a[1], num(a[2]), (int)num(a[3]) };

	return v;
}

/* Read the whole object through f into a buffer of v->size bytes. */
static int read_all(struct dc_file *f, const struct ver *v, int backwards, char *buf)
{
	uint64_t nblk = (v->size + READ_BLOCK - 1) / READ_BLOCK;

	for (uint64_t k = 0; k < nblk; k++) {
		uint64_t b = backwards ? nblk - 1 - k : k, off = b * READ_BLOCK;
		size_t want = v->size - off < READ_BLOCK ? (size_t)(v->size - off) : READ_BLOCK;
		ssize_t n = dcache_read(f, buf + off, READ_BLOCK, off);

		if (n < 0)
			return (int)n;
		if ((size_t)n != want)
			return -EIO;
	}
	/* at EOF a read returns 0 */
	return dcache_read(f, buf, READ_BLOCK, v->size) == 0 ? 0 : -EIO;
}

static int get_and_read(struct ctx *c, const struct ver *v, int backwards, char sha[65])
{
	struct dc_file *f = NULL;
	char *buf = malloc(v->size + 1);
	int rc = buf ? 0 : -ENOMEM;

	if (rc == 0)
		rc = dcache_get(c->dc, v->key, v->etag, v->size, v->comp, &f);
	if (rc == 0)
		rc = read_all(f, v, backwards, buf);
	if (rc == 0)
		sha_mem(buf, v->size, sha);
	dcache_put(f);
	free(buf);
	return rc;
}

static int cmd_read(struct ctx *c, char **a)
{
	struct ver v = parse_ver(a);
	char sha[65];
	int rc = get_and_read(c, &v, 0, sha);

	if (rc == 0)
		printf("read %s %s %llu\n", v.key, sha, (unsigned long long)v.size);
	return rc;
}

static int cmd_pread(struct ctx *c, char **a)
{
	struct ver v = parse_ver(a);
	uint64_t off = num(a[4]), len = num(a[5]);
	struct dc_file *f = NULL;
	char *buf = malloc(len + 1), sha[65];
	ssize_t n = buf ? 0 : -ENOMEM;

	if (n == 0)
		n = dcache_get(c->dc, v.key, v.etag, v.size, v.comp, &f);
	if (n == 0)
		n = dcache_read(f, buf, len, off);
	if (n >= 0) {
		sha_mem(buf, (size_t)n, sha);
		printf("pread %s %llu %s %zd\n", v.key, (unsigned long long)off, sha, n);
	}
	dcache_put(f);
	free(buf);
	return n < 0 ? (int)n : 0;
}

static void *reader_main(void *p)
{
	struct reader *r = p;

	pthread_barrier_wait(r->start);
	r->rc = get_and_read(r->c, r->v, r->backwards, r->sha);
	return NULL;
}

static int cmd_conc(struct ctx *c, char **a)
{
	struct ver v = parse_ver(a);
	int n = (int)num(a[4]), rc = 0;
	struct reader r[MAX_THREADS];
	pthread_t t[MAX_THREADS];
	pthread_barrier_t start;

	if (n < 1 || n > MAX_THREADS)
		return -EINVAL;
	pthread_barrier_init(&start, NULL, (unsigned)n);
	for (int i = 0; i < n; i++) {
		r[i] = (struct reader){ .c = c, .v = &v, .backwards = i % 2, .start = &start };
		if (pthread_create(&t[i], NULL, reader_main, &r[i]) != 0)
			abort(); /* the barrier would never open */
	}
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		if (r[i].rc < 0)
			rc = r[i].rc;
		else
			printf("conc %s %s\n", v.key, r[i].sha);
	}
	pthread_barrier_destroy(&start);
	return rc;
}

static int sha_file(const char *path, char out[65], uint64_t *len)
{
	FILE *fp = fopen(path, "rb");
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	char buf[65536];
	size_t n;

	*len = 0;
	if (!fp || !md) {
		EVP_MD_CTX_free(md);
		if (fp)
			fclose(fp);
		return -EIO;
	}
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	while ((n = fread(buf, 1, sizeof(buf), fp)) > 0) {
		EVP_DigestUpdate(md, buf, n);
		*len += n;
	}
	fclose(fp);
	hex_digest(md, out);
	EVP_MD_CTX_free(md);
	return 0;
}

static int cmd_fill(struct ctx *c, char **a)
{
	struct ver v = parse_ver(a);
	struct dc_file *f = NULL;
	uint64_t len = 0;
	char sha[65];
	int rc = dcache_get(c->dc, v.key, v.etag, v.size, v.comp, &f);

	if (rc == 0)
		rc = dcache_fill(f);
	if (rc == 0)
		rc = sha_file(dcache_path(f), sha, &len);
	if (rc == 0)
		printf("fill %s %s %llu\n", v.key, sha, (unsigned long long)len);
	dcache_put(f);
	return rc;
}

static int cmd_hold(struct ctx *c, char **a)
{
	struct ver v = parse_ver(a);
	struct dc_file *f = NULL;
	int rc = c->nheld < MAX_HELD ? 0 : -EMFILE;

	if (rc == 0)
		rc = dcache_get(c->dc, v.key, v.etag, v.size, v.comp, &f);
	if (rc == 0) {
		c->held[c->nheld++] = f;
		printf("hold %s %s\n", v.key, dcache_path(f));
	}
	return rc;
}

static int cmd_hread(struct ctx *c, char **a)
{
	uint64_t i = num(a[0]), off = num(a[1]), len = num(a[2]);
	char *buf, sha[65];
	ssize_t n;

	if (i >= (uint64_t)c->nheld)
		return -EBADF;
	buf = malloc(len + 1);
	if (!buf)
		return -ENOMEM;
	n = dcache_read(c->held[i], buf, len, off);
	if (n >= 0) {
		sha_mem(buf, (size_t)n, sha);
		printf("hread %llu %llu %s %zd\n", (unsigned long long)i, (unsigned long long)off,
		       sha, n);
	}
	free(buf);
	return n < 0 ? (int)n : 0;
}

static void unhold(struct ctx *c)
{
	for (int i = 0; i < c->nheld; i++)
		dcache_put(c->held[i]);
	c->nheld = 0;
}

static int cmd_unhold(struct ctx *c, char **a)
{
	(void)a;
	printf("unhold %d\n", c->nheld);
	unhold(c);
	return 0;
}

static int cmd_adopt(struct ctx *c, char **a)
{
	int rc = dcache_adopt(c->dc, a[0], a[1], num(a[2]), a[3], NULL);

	if (rc == 0)
		printf("adopt %s 0\n", a[0]);
	return rc;
}

/* adoptx KEY ETAG SIZE PATH XATTR: adopt, the cache to remove XATTR later */
static int cmd_adoptx(struct ctx *c, char **a)
{
	static char name[256];
	int rc;

	snprintf(name, sizeof(name), "%s", a[4]); /* must outlive the entry */
	rc = dcache_adopt(c->dc, a[0], a[1], num(a[2]), a[3], name);
	if (rc == 0)
		printf("adopt %s 0\n", a[0]);
	return rc;
}

static int cmd_forget(struct ctx *c, char **a)
{
	dcache_forget(c->dc, a[0]);
	printf("forget %s\n", a[0]);
	return 0;
}

static int cmd_lazy(struct ctx *c, char **a)
{
	(void)a;
	printf("lazy %llu\n", (unsigned long long)dcache_lazy_count(c->dc));
	return 0;
}

static int cmd_synclazy(struct ctx *c, char **a)
{
	(void)a;
	dcache_sync_lazy(c->dc);
	printf("synclazy\n");
	return 0;
}

static int cmd_crash(struct ctx *c, char **a)
{
	(void)c;
	(void)a;
	fflush(stdout);
	_exit(0);
}

static void print_stats(struct ctx *c, struct dcache *dc, const char *label)
{
	struct dcache_stats st;
	struct http_stats hs;

	dcache_get_stats(dc, &st);
	http_get_stats(c->http, &hs);
	printf("%s bytes=%llu files=%llu hits=%llu misses=%llu fetched=%llu evicted=%llu "
	       "gets=%llu\n",
	       label, (unsigned long long)st.bytes, (unsigned long long)st.files,
	       (unsigned long long)st.hits, (unsigned long long)st.misses,
	       (unsigned long long)st.fetched_bytes, (unsigned long long)st.evicted_files,
	       (unsigned long long)hs.get);
}

static int cmd_stats(struct ctx *c, char **a)
{
	(void)a;
	print_stats(c, c->dc, "stats");
	return 0;
}

struct cmd {
	const char *name;
	int nargs;
	int (*fn)(struct ctx *c, char **args);
};

static const struct cmd cmds[] = {
	{ "read", 4, cmd_read },   { "pread", 6, cmd_pread }, { "conc", 5, cmd_conc },
	{ "fill", 4, cmd_fill },   { "hold", 4, cmd_hold },   { "hread", 3, cmd_hread },
	{ "unhold", 0, cmd_unhold },
	{ "adopt", 4, cmd_adopt }, { "adoptx", 5, cmd_adoptx }, { "forget", 1, cmd_forget }, { "stats", 0, cmd_stats },
	{ "lazy", 0, cmd_lazy },   { "synclazy", 0, cmd_synclazy }, { "crash", 0, cmd_crash },
};

static const struct cmd *find_cmd(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++)
		if (strcmp(cmds[i].name, name) == 0)
			return &cmds[i];
	return NULL;
}

/* Check the whole command list before running anything. */
static int check_cmds(int argc, char **argv)
{
	for (int i = 0; i < argc;) {
		const struct cmd *cmd = find_cmd(argv[i]);

		if (!cmd || i + 1 + cmd->nargs > argc) {
			fprintf(stderr, "dcache-test: bad command at '%s'\n", argv[i]);
			return -EINVAL;
		}
		i += 1 + cmd->nargs;
	}
	return 0;
}

static void run_cmds(struct ctx *c, int argc, char **argv)
{
	for (int i = 0; i < argc;) {
		const struct cmd *cmd = find_cmd(argv[i]);
		int rc = cmd->fn(c, argv + i + 1);

		if (rc < 0)
			printf("err %s %s %d\n", cmd->name, cmd->nargs ? argv[i + 1] : "-", rc);
		fflush(stdout);
		i += 1 + cmd->nargs;
	}
}

struct setup {
	struct http *http;
	struct creds *creds;
	struct s3 *s3;
	struct wq *io;
};

static int setup(struct setup *s, const char *bucket, int nthreads)
{
	struct http_conf hc = { 0 };
	struct s3_conf sc = { .endpoint = getenv("S3_ENDPOINT"), .bucket = bucket, .path_style = 1 };
	struct buf err;
	int rc;

	buf_init(&err, 0);
	if (!sc.endpoint) {
		fprintf(stderr, "dcache-test: S3_ENDPOINT is not set\n");
		return -EINVAL;
	}
	rc = http_new(&s->http, &hc);
	if (rc == 0 && (rc = creds_new(&s->creds, s->http, &err)) < 0)
		fprintf(stderr, "dcache-test: %s\n", buf_str(&err));
	if (rc == 0)
		rc = s3_new(&s->s3, &sc, s->http, s->creds);
	if (rc == 0)
		rc = wq_new(&s->io, nthreads, "dcio");
	buf_release(&err);
	return rc;
}

static void teardown(struct setup *s)
{
	wq_free(s->io);
	s3_free(s->s3);
	creds_free(s->creds);
	http_free(s->http);
}

static void usage(void)
{
	fprintf(stderr, "usage: dcache-test [-c CHUNK] [-m MAX_BYTES] [-r READ_AHEAD] "
			"[-t IO_THREADS] DIR BUCKET COMMAND...\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct dcache_conf conf = { .max_bytes = 0, .chunk = 1 << 20, .read_ahead = 4 };
	struct setup s = { 0 };
	struct ctx c = { 0 };
	int opt, nthreads = 4, rc;

	while ((opt = getopt(argc, argv, "c:m:r:t:")) != -1) {
		switch (opt) {
		case 'c': conf.chunk = num(optarg); break;
		case 'm': conf.max_bytes = num(optarg); break;
		case 'r': conf.read_ahead = (int)num(optarg); break;
		case 't': nthreads = (int)num(optarg); break;
		default: usage();
		}
	}
	if (argc - optind < 2 || check_cmds(argc - optind - 2, argv + optind + 2) < 0)
		usage();
	if (getenv("DCACHE_TEST_DEBUG"))
		log_set_level(LOGL_DEBUG);
	conf.dir = argv[optind];
	rc = setup(&s, argv[optind + 1], nthreads);
	if (rc == 0)
		rc = dcache_open(&c.dc, &conf, s.s3, s.io);
	if (rc < 0) {
		fprintf(stderr, "dcache-test: setup failed: %s\n", strerror(-rc));
		teardown(&s);
		return 1;
	}
	c.http = s.http;
	run_cmds(&c, argc - optind - 2, argv + optind + 2);
	unhold(&c);
	print_stats(&c, c.dc, "final");
	dcache_close(c.dc);
	teardown(&s);
	return 0;
}
