/*
 * rename.c - renaming a directory: every key under it, in parallel.
 *
 * S3 has no directories, so `mv a b` of a directory is a copy and a delete
 * of every object under "a/".  Pending local changes under the directory are
 * uploaded first (so the listing has everything), then each object is copied
 * server-side with the headers its new path's rules give, in parallel on
 * the io queue, and only when every copy succeeded are the old keys
 * deleted, so a failure part-way leaves the old tree whole.
 *
 * Locking: entered with fs->lock held; the requests run without it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ops.h"
#include "wb.h"
#include "wq.h"

struct mv_item {
	struct fs *fs;
	char *src, *dst;
	int rc;
	int del; /* second phase: delete src */
	struct mv_batch *batch;
};

struct mv_batch {
	pthread_mutex_t lock; /* protects left */
	pthread_cond_t cond;
	int left;
};

static void mv_run(void *arg)
{
	struct mv_item *it = arg;
	char etag[S3_ETAG_MAX];
	uint64_t rsize;
	int comp;

	if (it->del)
		it->rc = s3_delete(it->fs->s3, it->src);
	else
		it->rc = wb_server_copy(it->fs->wb, it->src, it->dst, NULL, etag, &rsize, &comp);
	pthread_mutex_lock(&it->batch->lock);
	if (--it->batch->left == 0)
		pthread_cond_signal(&it->batch->cond);
	pthread_mutex_unlock(&it->batch->lock);
}

/* Run every item (copy or delete phase) in parallel; first error or 0. */
static int run_all(struct fs *fs, struct mv_item *v, size_t n, int del)
{
	struct mv_batch b = { .left = (int)n };
	int rc = 0;

	pthread_mutex_init(&b.lock, NULL);
	pthread_cond_init(&b.cond, NULL);
	for (size_t i = 0; i < n; i++) {
		v[i].del = del;
		v[i].batch = &b;
		if (wq_push(fs->io, mv_run, &v[i]) < 0)
			mv_run(&v[i]);
	}
	pthread_mutex_lock(&b.lock);
	while (b.left > 0)
		pthread_cond_wait(&b.cond, &b.lock);
	pthread_mutex_unlock(&b.lock);
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = v[i].rc;
	pthread_mutex_destroy(&b.lock);
	pthread_cond_destroy(&b.cond);
	return rc;
}

/* Every key under prefix (recursive listing, all pages).  Unlocked. */
static int list_all(struct fs *fs, const char *src, const char *dst, struct mv_item **out,
		    size_t *nout)
{
	struct s3_list_page p;
	struct mv_item *v = NULL;
	size_t n = 0, slen = strlen(src);
	char *token = NULL;
	int rc;

	do {
		rc = s3_list(fs->s3, src, NULL, token, 1000, &p);
		free(token);
		token = NULL;
		for (size_t i = 0; rc == 0 && i < p.nentries; i++) {
			struct mv_item *nv = realloc(v, (n + 1) * sizeof(*v));

			if (!nv) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
			memset(&v[n], 0, sizeof(v[n]));
			v[n].fs = fs;
			v[n].src = strdup(p.entries[i].key);
			if (!v[n].src || asprintf(&v[n].dst, "%s%s", dst, v[n].src + slen) < 0) {
				free(v[n].src);
				rc = -ENOMEM;
				break;
			}
			n++;
		}
		if (rc == 0 && p.truncated && p.next_token)
			token = strdup(p.next_token);
		s3xml_list_release(&p);
	} while (rc == 0 && token);
	*out = v;
	*nout = n;
	return rc;
}

static void mark_unlisted(struct node *d);

static int unlisted_cb(const char *k, void *v, void *arg)
{
	(void)k;
	(void)arg;
	mark_unlisted(v);
	return 0;
}

static void mark_unlisted(struct node *d)
{
	if (!d->kids)
		return;
	d->listed = 0;
	htab_foreach(d->kids, unlisted_cb, NULL);
}

int ops_rename_dir(struct fs *fs, const char *from, const char *to)
{
	struct node *n, *dir, *dst;
	struct buf sk, dk;
	struct mv_item *v = NULL;
	size_t nv = 0;
	const char *name;
	int rc;

	if (strncmp(to, from, strlen(from)) == 0 && to[strlen(from)] == '/')
		return -EINVAL; /* into itself */
	buf_init(&sk, 8192);
	buf_init(&dk, 8192);
	rc = wb_sync_all(fs->wb); /* everything pending goes up first */
	rc = rc ?: meta_resolve(fs, from, &n);
	rc = rc ?: meta_resolve_parent(fs, to, &dir, &name);
	if (rc < 0)
		goto out;
	dst = tree_child(dir, name);
	if (dst && !dst->kids)
		rc = -ENOTDIR;
	else if (dst && htab_count(dst->kids) > 0)
		rc = -ENOTEMPTY;
	rc = rc ?: tree_key(fs, n, 1, &sk);
	rc = rc ?: buf_addf(&dk, "%s%s/", fs->conf.prefix, to + 1);
	if (rc < 0)
		goto out;
	pthread_mutex_unlock(&fs->lock);
	rc = list_all(fs, buf_str(&sk), buf_str(&dk), &v, &nv);
	rc = rc ?: run_all(fs, v, nv, 0);
	if (rc == 0)
		rc = run_all(fs, v, nv, 1);
	pthread_mutex_lock(&fs->lock);
	if (rc < 0) {
		log_error("cannot rename '%s' to '%s': %s", buf_str(&sk), buf_str(&dk),
			  strerror(-rc));
		goto out;
	}
	if (meta_resolve(fs, from, &n) == 0 && meta_resolve_parent(fs, to, &dir, &name) == 0 &&
	    tree_move(n, dir, name) == 0)
		mark_unlisted(n); /* relist below the new name */
out:
	for (size_t i = 0; i < nv; i++) {
		free(v[i].src);
		free(v[i].dst);
	}
	free(v);
	buf_release(&sk);
	buf_release(&dk);
	return rc;
}
