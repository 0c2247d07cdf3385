/*
 * rename.c - renaming a directory: every key under it, in parallel.
 *
 * S3 has no directories, so `mv a b` of a directory is a copy and a delete
 * of every object under "a/".  Staged files under the directory that are not
 * uploaded yet simply follow the rename (their upload goes to the new name:
 * a build directory renamed into place costs one PUT per file); metadata
 * changes and deletes pending under it finish first.  Each object S3 has is
 * copied server-side with the headers its new path's rules give, in
 * parallel on the io queue, and only when every copy succeeded are the old
 * keys deleted, so a failure part-way leaves the old tree whole.
 *
 * Locking: entered with fs->lock held; the requests run without it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attrcache.h"
#include "cdn.h"
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
	pthread_mutex_lock(&it->fs->lock);
	wb_key_end(it->fs->wb, it->del ? it->src : it->dst);
	pthread_mutex_unlock(&it->fs->lock);
	pthread_mutex_lock(&it->batch->lock);
	if (--it->batch->left == 0)
		pthread_cond_signal(&it->batch->cond);
	pthread_mutex_unlock(&it->batch->lock);
}

/* Check in every key the rename writes or reads: each source (copied, then
 * deleted: a header set on it meanwhile would be lost) and each copy's
 * destination, all at once when none has a write on its way (waiting while
 * holding some could deadlock with another rename doing the same).  The
 * copies check their destinations out, the deletes their sources; check_out
 * gives the sources back when the deletes do not run.  Unlocked. */
static void check_in(struct fs *fs, struct mv_item *v, size_t nv, struct mv_item *c, size_t nc)
{
	size_t i, k;

	pthread_mutex_lock(&fs->lock);
	for (;;) {
		for (i = 0; i < nv && !wb_key_busy(fs->wb, v[i].src, 0); i++)
			;
		for (k = 0; i == nv && k < nc && !wb_key_busy(fs->wb, c[k].dst, 0); k++)
			;
		if (i == nv && k == nc)
			break;
		wb_key_wait(fs->wb, i < nv ? v[i].src : c[k].dst, 0);
	}
	for (i = 0; i < nv; i++)
		wb_key_begin(fs->wb, v[i].src, "directory rename's copy and delete");
	for (k = 0; k < nc; k++)
		wb_key_begin(fs->wb, c[k].dst, "directory rename's copy");
	pthread_mutex_unlock(&fs->lock);
}

static void check_out(struct fs *fs, struct mv_item *v, size_t nv)
{
	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; i < nv; i++)
		wb_key_end(fs->wb, v[i].src);
	pthread_mutex_unlock(&fs->lock);
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

/* A job under prefix that must finish before a directory rename: one that
 * is running or waits for a request of its key still on its way, or a
 * metadata change or delete (only staged uploads can simply follow the
 * rename). */
struct blocker_ctx {
	const char *prefix;
	size_t plen;
	struct wb_job *found;
};

static int blocker_cb(struct wb_job *j, void *arg)
{
	struct blocker_ctx *bc = arg;

	if (strncmp(j->key, bc->prefix, bc->plen) != 0)
		return 0;
	/* a staged copy still being filled from its object: that object must
	 * stay until the copy is done */
	if (wb_in_flight(j) || j->kind != WB_PUT || j->filling) {
		bc->found = j;
		return 1;
	}
	return 0;
}

static int put_keys_cb(struct wb_job *j, void *arg)
{
	struct blocker_ctx *bc = arg;

	if (strncmp(j->key, bc->prefix, bc->plen) == 0 && j->kind == WB_PUT)
		return htab_put((struct htab *)bc->found, j->key, j, NULL) < 0;
	return 0;
}

/* Give every staged job under n the key of its node's new path. Locked. */
static int rekey_subtree(struct fs *fs, struct node *n);

static int rekey_cb(const char *k, void *v, void *arg)
{
	(void)k;
	return rekey_subtree(arg, v) < 0;
}

static int rekey_subtree(struct fs *fs, struct node *n)
{
	struct buf key;
	int rc = 0;

	if (n->job) {
		buf_init(&key, 8192);
		rc = tree_key(fs, n, n->kids != NULL, &key);
		if (rc == 0 && strcmp(n->job->key, buf_str(&key)) != 0)
			rc = wb_rekey(fs->wb, n->job, buf_str(&key));
		buf_release(&key);
	}
	if (rc == 0 && n->kids && htab_foreach(n->kids, rekey_cb, fs))
		rc = -ENOMEM;
	return rc;
}

/* Wait until only not-running staged uploads remain under prefix. Locked;
 * drops the lock while waiting.  Returns 1 when it waited (start again). */
static int settle_jobs(struct fs *fs, const char *prefix, int *rc)
{
	struct blocker_ctx bc = { prefix, strlen(prefix), NULL };

	wb_foreach(fs->wb, blocker_cb, &bc);
	if (!bc.found)
		return wb_key_wait(fs->wb, prefix, 1); /* an upload under a name
							 * it was renamed from */
	if (bc.found->filling) /* stage_for_write broadcasts when it is done */
		pthread_cond_wait(&fs->cond, &fs->lock);
	else if (wb_in_flight(bc.found))
		wb_wait_idle(fs->wb, wb_in_flight(bc.found));
	else
		*rc = wb_sync(fs->wb, bc.found);
	return 1;
}

/* settle_jobs would wait.  Locked; does not drop the lock. */
static int unsettled(struct fs *fs, const char *prefix)
{
	struct blocker_ctx bc = { prefix, strlen(prefix), NULL };

	wb_foreach(fs->wb, blocker_cb, &bc);
	return bc.found || wb_key_busy(fs->wb, prefix, 1);
}

static int check_dst(struct fs *fs, const char *to)
{
	struct node *dir, *dst;
	const char *name;
	int rc = meta_resolve_parent(fs, to, &dir, &name);

	if (rc < 0)
		return rc;
	dst = tree_child(dir, name);
	if (dst && !dst->kids)
		return -ENOTDIR;
	if (dst && htab_count(dst->kids) > 0)
		return -ENOTEMPTY;
	return 0;
}

/* The remote half: copy what S3 has (except keys whose staged data will be
 * uploaded under the new name anyway), then delete the old keys.  -errno
 * when a copy failed (nothing deleted); once every copy is in, the keys
 * whose DELETE failed are returned in *left (the caller queues them on the
 * write-back, which retries).  Unlocked. */
static int move_remote(struct fs *fs, const char *sk, const char *dk, struct htab *staged,
		       char ***left, size_t *nleft)
{
	struct mv_item *v = NULL, *copies = NULL;
	size_t nv = 0, nc = 0;
	int rc = list_all(fs, sk, dk, &v, &nv);

	*left = NULL;
	*nleft = 0;
	if (rc == 0 && nv) {
		copies = calloc(nv, sizeof(*copies));
		rc = copies ? 0 : -ENOMEM;
	}
	for (size_t i = 0; rc == 0 && i < nv; i++)
		if (!htab_get(staged, v[i].src))
			copies[nc++] = v[i];
	if (rc == 0) {
		check_in(fs, v, nv, copies, nc);
		rc = run_all(fs, copies, nc, 0);
		if (rc == 0) {
			(void)run_all(fs, v, nv, 1);
			for (size_t i = 0; i < nv; i++) {
				char **nl;

				if (v[i].rc == 0)
					continue;
				if (!(nl = reallocarray(*left, *nleft + 1, sizeof(*nl)))) {
					log_error("cannot keep the delete of '%s' for later", v[i].src);
					continue;
				}
				*left = nl;
				(*left)[(*nleft)++] = v[i].src;
				v[i].src = NULL;
			}
		} else {
			check_out(fs, v, nv);
		}
	}
	for (size_t i = 0; i < nv; i++) {
		free(v[i].src);
		free(v[i].dst);
	}
	free(v);
	free(copies);
	return rc;
}

void ops_delete_later(struct fs *fs, const char *from, const char *const *keys, size_t n)
{
	if (n)
		log_warn("'%s' is renamed, but %zu object%s under its old name could not be "
			 "deleted yet (the first: '%s'): retried in the background", from, n,
			 n == 1 ? "" : "s", keys[0]);
	for (size_t i = 0; i < n; i++) {
		struct wb_job *j = wb_find(fs->wb, keys[i]);

		/* an upload still queued under the old key (the rename could not
		 * move its node) replaces the object anyway */
		if (!(j && j->kind == WB_PUT) && wb_delete(fs->wb, keys[i]) < 0)
			log_error("cannot queue the delete of '%s'", keys[i]);
	}
}

static void free_keys(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void ops_rename_purge(struct fs *fs, const char *from, const char *to, int is_dir, int start)
{
	if (start)
		cdn_hold(fs->cdn, 1);
	/* both names: the old one goes, the new one may have been cached */
	if (cdn_purge(fs->cdn, from + 1, is_dir) < 0 || cdn_purge(fs->cdn, to + 1, is_dir) < 0)
		log_error("cannot queue the CDN purge of '%s'", from);
	if (!start)
		cdn_hold(fs->cdn, 0);
}

int ops_rename_dir(struct fs *fs, const char *from, const char *to)
{
	struct node *n, *dir;
	struct buf sk, dk;
	struct htab *staged = NULL;
	struct blocker_ctx bc;
	uint64_t rseq = 0;
	char **left = NULL;
	size_t nleft = 0;
	int rc = 0, frozen = 0, journaled = 0;

	if (strncmp(to, from, strlen(from)) == 0 && to[strlen(from)] == '/')
		return -EINVAL; /* into itself */
	buf_init(&sk, 8192);
	buf_init(&dk, 8192);
	rc = meta_resolve(fs, from, &n) ?: check_dst(fs, to);
	if (rc == 0 && !(n = tree_find(fs, from))) /* check_dst may list */
		rc = -ENOENT;
	rc = rc ?: tree_key(fs, n, 1, &sk);
	rc = rc ?: buf_addf(&dk, "%s%s/", fs->conf.prefix, to + 1);
	/* under the old name, and under the new one: DELETEs of a directory
	 * removed a moment ago (rm -r dst; mv src dst) must not run after the
	 * copies */
	for (;;) {
		while (rc == 0 && (settle_jobs(fs, buf_str(&sk), &rc) ||
				   settle_jobs(fs, buf_str(&dk), &rc)))
			;
		/* these may drop the lock (a listing): settled again below
		 * without dropping it, up to the freeze */
		rc = rc ?: meta_resolve(fs, from, &n) ?: check_dst(fs, to);
		if (rc < 0 || (!unsettled(fs, buf_str(&sk)) && !unsettled(fs, buf_str(&dk))))
			break;
	}
	rc = rc ?: htab_new(&staged);
	/* the staged uploads under the old name go up under the new one: none
	 * may start before they have it */
	if (rc == 0 && (rc = wb_freeze(fs->wb, buf_str(&sk))) == 0) {
		frozen = 1;
		if ((rc = wb_freeze(fs->wb, buf_str(&dk))) == 0)
			frozen = 2;
	}
	if (rc < 0)
		goto out;
	bc = (struct blocker_ctx){ buf_str(&sk), sk.len, (struct wb_job *)staged };
	wb_foreach(fs->wb, put_keys_cb, &bc);
	/* a crash from here on is finished by the next mount */
	if ((rc = wb_rename_begin(fs->wb, buf_str(&sk), buf_str(&dk), 1, NULL, &rseq)) < 0)
		goto out;
	journaled = 1;
	ops_rename_purge(fs, from, to, 1, 1);
	pthread_mutex_unlock(&fs->lock);
	rc = move_remote(fs, buf_str(&sk), buf_str(&dk), staged, &left, &nleft);
	pthread_mutex_lock(&fs->lock);
	ops_rename_purge(fs, from, to, 1, 0); /* some copies or deletes may have gone */
	if (rc < 0) {
		log_error("cannot rename '%s' to '%s': %s", buf_str(&sk), buf_str(&dk),
			  strerror(-rc));
		goto out;
	}
	meta_deleted(fs, buf_str(&sk)); /* everything under the old name */
	/* the replaced empty directory's marker, still queued (frozen): sent
	 * after the copies, it would put its mode over the moved one's */
	wb_cancel_queued(fs->wb, buf_str(&dk));
	/* the tree as it is now (ops_renamed_node): a walk that lists could
	 * prune the old name, which S3 no longer has */
	n = tree_find(fs, from);
	rc = ops_renamed_node(fs, n && n->kids ? n : NULL, to, S_IFDIR, &dir, &n);
	if (rc == 0 && n) {
		rc = rekey_subtree(fs, n);
		mark_unlisted(n); /* relist below the new name */
	}
out:
	/* after the rekey: a DELETE queued for an old key cancels what is
	 * queued under it, which must have moved to the new name first */
	ops_delete_later(fs, from, (const char *const *)left, nleft);
	free_keys(left, nleft);
	/* done (the staged jobs journaled under the new name), or failed */
	if (journaled)
		wb_rename_end(fs->wb, rseq);
	if (frozen > 0)
		wb_thaw(fs->wb, buf_str(&sk));
	if (frozen > 1)
		wb_thaw(fs->wb, buf_str(&dk));
	if (staged)
		htab_free(staged, NULL);
	buf_release(&sk);
	buf_release(&dk);
	return rc;
}

/* The staged jobs under dst (moved there by wb_recover) by their key under
 * src: move_remote copies none of those. */
struct staged_ctx {
	const char *src, *dst;
	size_t dlen;
	struct htab *out;
};

static int staged_cb(struct wb_job *j, void *arg)
{
	struct staged_ctx *sc = arg;
	char *k;
	int rc;

	if (j->kind != WB_PUT || strncmp(j->key, sc->dst, sc->dlen) != 0)
		return 0;
	if (asprintf(&k, "%s%s", sc->src, j->key + sc->dlen) < 0)
		return 1;
	rc = htab_put(sc->out, k, j, NULL) < 0;
	free(k);
	return rc;
}

/* Finish one rename the last stop cut short.  Unlocked. */
static int recover_rename(struct fs *fs, const struct wb_rename *r)
{
	char etag[S3_ETAG_MAX];
	uint64_t rsize;
	int comp, rc;
	struct htab *staged = NULL;
	struct staged_ctx sc = { r->from, r->to, strlen(r->to), NULL };
	char **left = NULL;
	size_t nleft = 0;

	if (!r->dir) {
		struct fattr a = r->a;

		rc = wb_server_copy(fs->wb, r->from, r->to, &a, etag, &rsize, &comp);
		if (rc == -ENOENT)
			return 0; /* copied and deleted before the crash */
		if (rc < 0)
			return rc;
		attrcache_del(fs->ac, r->from);
		attrcache_del(fs->ac, r->to); /* what it showed was replaced */
		if (s3_delete(fs->s3, r->from) < 0) {
			pthread_mutex_lock(&fs->lock);
			ops_delete_later(fs, r->from, (const char *const *)&r->from, 1);
			pthread_mutex_unlock(&fs->lock);
		}
		return 0;
	}
	if ((rc = htab_new(&staged)) < 0)
		return rc;
	sc.out = staged;
	pthread_mutex_lock(&fs->lock);
	if (wb_foreach(fs->wb, staged_cb, &sc))
		rc = -ENOMEM;
	pthread_mutex_unlock(&fs->lock);
	/* copies what is still under the old name (again, for what was copied
	 * before the crash: the same bytes), then deletes it */
	rc = rc ?: move_remote(fs, r->from, r->to, staged, &left, &nleft);
	htab_free(staged, NULL);
	pthread_mutex_lock(&fs->lock);
	ops_delete_later(fs, r->from, (const char *const *)left, nleft);
	pthread_mutex_unlock(&fs->lock);
	free_keys(left, nleft);
	return rc;
}

int ops_rename_recover(struct fs *fs)
{
	struct wb_rename *r;
	size_t n = wb_renames(fs->wb, &r);
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++) {
		log_info("finishing the rename of '%s' to '%s' that the last stop cut short",
			 r[i].from, r[i].to);
		/* keep: a job it moved is not journaled under the new name */
		rc = r[i].keep ? -EIO : recover_rename(fs, &r[i]);
		if (rc < 0) {
			log_error("cannot finish the rename of '%s' to '%s' that the last stop "
				  "cut short: %s (kept in the journal for the next mount)",
				  r[i].from, r[i].to, strerror(-rc));
			break;
		}
		pthread_mutex_lock(&fs->lock);
		wb_rename_end(fs->wb, r[i].seq);
		pthread_mutex_unlock(&fs->lock);
	}
	wb_renames_done(fs->wb);
	return rc;
}
