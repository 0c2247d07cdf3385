/*
 * s3load.c - the benchmark's W0: how fast the S3 server itself goes for a
 * tight client, the ceiling the filesystems are judged against.
 *
 * It uses the project's own client (build/libcdnfs.a): the libcurl pool with
 * keep-alive connections (include/http.h), SigV4 signing and the bucket API
 * (include/s3.h), so the figures are what cdnfs's S3 layer can get out of
 * the server with nothing of the filesystem in the way.
 *
 *   s3load -e ENDPOINT -b BUCKET -c CONC -p PHASES [-n N] [-s SIZE] [-k PREFIX]
 *          [-d DIR]
 *
 * PHASES is a comma-separated list run in order in one process (so the
 * connections stay alive between them): put, head, get (N objects of SIZE
 * bytes under PREFIX/NNNNNN), tree (PUT every regular file under DIR as
 * PREFIX/relative/path), mpu (one object of N parts of SIZE bytes, the
 * parts sent CONC at a time, as cdnfs uploads a large file).  Credentials from the environment (AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY), as cdnfs takes them.  One JSON line per phase on
 * stdout: {"phase":..,"conc":..,"n":..,"bytes":..,"seconds":..,"errors":..}.
 *
 * Owns: N worker threads per phase; an atomic next-index counter hands out
 * the work, so there is no lock.  The PUT body is one memfd shared by all
 * threads (pread at offset 0); GET bodies go to /dev/null.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "creds.h"
#include "http.h"
#include "log.h"
#include "s3.h"

#define MAX_CONC 256
#define MAX_TREE 1000000

struct load {
	struct s3 *s3;
	const char *prefix;
	const char *phase;
	size_t n;
	uint64_t size;
	int body_fd;      /* memfd of size bytes */
	char *upload_id;  /* mpu */
	char (*etags)[S3_ETAG_MAX]; /* mpu: one per part */
	char **files;     /* tree: absolute paths */
	char **keys;      /* tree: object keys */
	uint64_t *sizes;  /* tree: file sizes */
	atomic_size_t next;
	atomic_uint_fast64_t bytes;
	atomic_size_t errors;
};

/* The tree being collected by nftw (nftw has no user argument). */
static struct load *tree_load;
static size_t tree_cap;
static const char *tree_root;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int key_of(const struct load *l, size_t i, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/%06zu", l->prefix, i);

	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static int one_small(struct load *l, size_t i)
{
	char key[1024];
	struct s3_obj o = { 0 };
	struct s3_get_req g = { 0 };
	uint64_t got = 0;
	int rc = key_of(l, i, key, sizeof(key));

	if (rc < 0)
		return rc;
	if (strcmp(l->phase, "put") == 0) {
		rc = s3_put(l->s3, key, NULL, l->body_fd, 0, l->size, NULL);
		got = l->size;
	} else if (strcmp(l->phase, "head") == 0) {
		rc = s3_head(l->s3, key, &o);
		s3_obj_release(&o);
	} else {
		/* a body of its own per thread: s3_get reads it back to check
		 * the MD5 against the ETag, as every cdnfs GET does */
		static _Thread_local int body = -1;

		if (body < 0 && (body = memfd_create("s3load-get", MFD_CLOEXEC)) < 0)
			return -errno;
		g.fd = body;
		rc = s3_get(l->s3, key, &g, NULL, &got);
	}
	if (rc >= 0)
		atomic_fetch_add(&l->bytes, got);
	return rc < 0 ? rc : 0;
}

static int one_tree(struct load *l, size_t i)
{
	int fd = open(l->files[i], O_RDONLY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return -errno;
	rc = s3_put(l->s3, l->keys[i], NULL, fd, 0, l->sizes[i], NULL);
	close(fd);
	if (rc >= 0)
		atomic_fetch_add(&l->bytes, l->sizes[i]);
	return rc < 0 ? rc : 0;
}

static int one_part(struct load *l, size_t i)
{
	char key[1024];
	int rc = key_of(l, 0, key, sizeof(key));

	if (rc == 0)
		rc = s3_mpu_part(l->s3, key, l->upload_id, (int)i + 1, l->body_fd, 0, l->size,
				 l->etags[i]);
	if (rc >= 0)
		atomic_fetch_add(&l->bytes, l->size);
	return rc < 0 ? rc : 0;
}

static void *worker(void *arg)
{
	struct load *l = arg;
	int tree = strcmp(l->phase, "tree") == 0, mpu = strcmp(l->phase, "mpu") == 0;
	size_t i;

	while ((i = atomic_fetch_add(&l->next, 1)) < l->n) {
		int rc = tree ? one_tree(l, i) : mpu ? one_part(l, i) : one_small(l, i);

		if (rc < 0 && atomic_fetch_add(&l->errors, 1) < 5)
			fprintf(stderr, "s3load: %s #%zu: %s\n", l->phase, i, strerror(-rc));
	}
	return NULL;
}

static int add_file(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	struct load *l = tree_load;
	size_t rl = strlen(tree_root);

	(void)ftw;
	if (type != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	if (l->n == tree_cap) {
		size_t cap = tree_cap ? tree_cap * 2 : 4096;
		char **f = realloc(l->files, cap * sizeof(*f));
		char **k = f ? realloc(l->keys, cap * sizeof(*k)) : NULL;
		uint64_t *s = k ? realloc(l->sizes, cap * sizeof(*s)) : NULL;

		if (f)
			l->files = f;
		if (k)
			l->keys = k;
		if (!s || cap > MAX_TREE)
			return -1;
		l->sizes = s;
		tree_cap = cap;
	}
	l->files[l->n] = strdup(path);
	if (asprintf(&l->keys[l->n], "%s/%s", l->prefix, path + rl + 1) < 0)
		l->keys[l->n] = NULL;
	l->sizes[l->n] = (uint64_t)st->st_size;
	if (!l->files[l->n] || !l->keys[l->n])
		return -1;
	l->n++;
	return 0;
}

/* The mpu phase: create, the parts in parallel (the workers), complete. */
static int mpu_begin(struct load *l)
{
	char key[1024];
	int rc = key_of(l, 0, key, sizeof(key));

	l->etags = calloc(l->n, sizeof(*l->etags));
	if (!l->etags)
		return -ENOMEM;
	return rc ? rc : s3_mpu_create(l->s3, key, NULL, &l->upload_id);
}

static int mpu_end(struct load *l)
{
	const char **tags = calloc(l->n, sizeof(*tags));
	char key[1024], etag[S3_ETAG_MAX];
	int rc = tags ? key_of(l, 0, key, sizeof(key)) : -ENOMEM;

	for (size_t i = 0; rc == 0 && i < l->n; i++)
		tags[i] = l->etags[i];
	if (rc == 0 && atomic_load(&l->errors) == 0)
		rc = s3_mpu_complete(l->s3, key, l->upload_id, tags, l->n, etag);
	else if (rc == 0)
		rc = s3_mpu_abort(l->s3, key, l->upload_id);
	free(tags);
	free(l->etags);
	free(l->upload_id);
	l->etags = NULL;
	l->upload_id = NULL;
	return rc;
}

static int run_phase(struct load *l, int conc)
{
	pthread_t th[MAX_CONC];
	int started = 0, rc = 0, mpu = strcmp(l->phase, "mpu") == 0;
	double t0, t1;

	atomic_store(&l->next, 0);
	atomic_store(&l->bytes, 0);
	atomic_store(&l->errors, 0);
	t0 = now();
	if (mpu && (rc = mpu_begin(l)) < 0)
		return rc;
	for (; started < conc; started++)
		if ((rc = -pthread_create(&th[started], NULL, worker, l)) < 0)
			break;
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (mpu) {
		int r = mpu_end(l);

		rc = rc ? rc : r;
	}
	t1 = now();
	if (rc < 0)
		return rc;
	printf("{\"phase\":\"%s\",\"conc\":%d,\"n\":%zu,\"bytes\":%" PRIu64
	       ",\"seconds\":%.6f,\"errors\":%zu}\n",
	       l->phase, conc, l->n, (uint64_t)atomic_load(&l->bytes), t1 - t0,
	       (size_t)atomic_load(&l->errors));
	fflush(stdout);
	return atomic_load(&l->errors) ? -EIO : 0;
}

static int make_body(uint64_t size)
{
	int fd = memfd_create("s3load-body", MFD_CLOEXEC);
	char block[65536];
	uint64_t x = 0x9e3779b97f4a7c15ull;

	if (fd < 0)
		return -errno;
	for (uint64_t off = 0; off < size; off += sizeof(block)) {
		size_t n = size - off < sizeof(block) ? (size_t)(size - off) : sizeof(block);

		for (size_t i = 0; i < n; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			block[i] = (char)x;
		}
		if (pwrite(fd, block, n, (off_t)off) != (ssize_t)n) {
			close(fd);
			return -EIO;
		}
	}
	return fd;
}

struct args {
	const char *endpoint, *bucket, *phases, *prefix, *dir;
	int conc;
	size_t n;
	uint64_t size;
};

static int parse_args(int argc, char **argv, struct args *a)
{
	int c;

	while ((c = getopt(argc, argv, "e:b:c:p:n:s:k:d:")) != -1) {
		switch (c) {
		case 'e': a->endpoint = optarg; break;
		case 'b': a->bucket = optarg; break;
		case 'c': a->conc = (int)strtol(optarg, NULL, 10); break;
		case 'p': a->phases = optarg; break;
		case 'n': a->n = strtoull(optarg, NULL, 10); break;
		case 's': a->size = strtoull(optarg, NULL, 10); break;
		case 'k': a->prefix = optarg; break;
		case 'd': a->dir = optarg; break;
		default: return -EINVAL;
		}
	}
	if (!a->endpoint || !a->bucket || !a->phases || a->conc < 1 || a->conc > MAX_CONC)
		return -EINVAL;
	return 0;
}

static int run_all(struct load *l, const struct args *a)
{
	char *phases = strdup(a->phases), *save = NULL, *p;
	int rc = phases ? 0 : -ENOMEM;

	for (p = phases ? strtok_r(phases, ",", &save) : NULL; p && rc == 0;
	     p = strtok_r(NULL, ",", &save)) {
		l->phase = p;
		if (strcmp(p, "tree") == 0) {
			tree_load = l;
			tree_root = a->dir;
			l->n = 0;
			if (!a->dir || nftw(a->dir, add_file, 64, FTW_PHYS) != 0)
				rc = -EINVAL;
		} else if (strcmp(p, "put") && strcmp(p, "head") && strcmp(p, "get") &&
			   strcmp(p, "mpu")) {
			rc = -EINVAL;
		} else {
			l->n = a->n;
		}
		if (rc == 0)
			rc = run_phase(l, a->conc);
	}
	free(phases);
	return rc;
}

int main(int argc, char **argv)
{
	struct args a = { .prefix = "w0", .n = 100, .size = 1024 };
	struct http_conf hc = { .max_handles = MAX_CONC };
	struct http *http = NULL;
	struct creds *creds = NULL;
	struct load l = { .body_fd = -1 };
	struct buf err;
	int rc;

	buf_init(&err, 4096);
	log_init(0, LOGL_WARN);
	rc = parse_args(argc, argv, &a);
	if (rc < 0)
		fprintf(stderr, "usage: s3load -e ENDPOINT -b BUCKET -c CONC -p put,head,get,mpu|tree "
				"[-n N] [-s SIZE] [-k PREFIX] [-d DIR]\n");
	struct s3_conf sc = { a.endpoint, "us-east-1", a.bucket, 1 };

	if (rc == 0)
		rc = http_new(&http, &hc);
	if (rc == 0)
		rc = creds_new(&creds, NULL, &err);
	if (rc == 0)
		rc = s3_new(&l.s3, &sc, http, creds);
	if (rc == 0 && (l.body_fd = make_body(a.size)) < 0)
		rc = l.body_fd;
	l.prefix = a.prefix;
	l.size = a.size;
	if (rc == 0)
		rc = run_all(&l, &a);
	if (rc < 0 && err.len)
		fprintf(stderr, "s3load: %s\n", buf_str(&err));
	else if (rc < 0)
		fprintf(stderr, "s3load: %s\n", strerror(-rc));
	for (size_t i = 0; l.files && i < l.n; i++) {
		free(l.files[i]);
		free(l.keys[i]);
	}
	free(l.files);
	free(l.keys);
	free(l.sizes);
	if (l.body_fd >= 0)
		close(l.body_fd);
	s3_free(l.s3);
	creds_free(creds);
	http_free(http);
	buf_release(&err);
	return rc < 0 ? 1 : 0;
}
