/*
 * ops.c - the FUSE operations: translate, delegate, return.
 *
 * Each handler takes fs->lock, resolves the path (meta.c), changes the tree
 * and queues write-back jobs (wb.c), and drops the lock for any I/O.  Open
 * files are struct ofile (fi->fh): a staged file being written or a pending
 * upload being read (fd of its data), or a cached remote object (dc).
 *
 * Node pointers are only valid while the lock is held without a break:
 * anything that may drop the lock (listing, waiting for an upload) is
 * followed by resolving the path again.
 */
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "attrcache.h"
#include "cdn.h"
#include "dcache.h"
#include "log.h"
#include "ops.h"
#include "wb.h"

#define S3_KEY_MAX 1024
/* The lock was dropped to wait: resolve the path again.  Not an errno, so
 * an S3 answer that maps to EAGAIN (throttling) is never taken for it;
 * it never leaves the op that loops on it. */
#define RESOLVE_AGAIN (-100000)

/* One version of an object in S3, as a handle reads it from the read
 * cache or copies it in. */
struct version {
	char *key;
	char etag[S3_ETAG_MAX];
	uint64_t size;
	int compressed;       /* stored with Content-Encoding */
};

struct ofile {
	int fd;               /* staged data (or an orphan copy), or -1 */
	struct wb_job *job;   /* referenced while open */
	struct dc_file *dc;   /* cached remote object, or NULL */
	int writable;
	int dirty;
	int lazy;             /* opened for write, nothing written yet */
	int orphan;           /* fd is a private copy: the name went before the first write */
	int keep_cache;       /* same version as the last open: keep page cache */
	int direct_io;        /* bypass the page cache (another version is open) */
	struct version v;     /* the version dc holds; lazy: the one to read or copy in
			       * (etag "" once it reads another handle's staged copy) */
	struct stat st;       /* at open: for a handle whose name is gone */
	uint64_t cgen;        /* read-only: the node's cgen the data read reflects */
	uint64_t seen;        /* read-only: fs->cgen when that was last checked */
	pthread_rwlock_t rw;  /* read-only: fd, dc, job, etag, cgen (follow_latest) */
};

#define LOCK(fs) pthread_mutex_lock(&(fs)->lock)
#define UNLOCK(fs) pthread_mutex_unlock(&(fs)->lock)

static struct fs *ctx_fs(void)
{
	return fuse_get_context()->private_data;
}

/* Resolve path and wait until no upload of it is running and no handle is
 * copying its object in. Locked. */
static int resolve_idle(struct fs *fs, const char *path, struct node **out)
{
	for (;;) {
		int rc = meta_resolve(fs, path, out);
		struct wb_job *j = rc == 0 ? (*out)->job : NULL;

		if (!j || (!j->running && !j->filling))
			return rc;
		if (j->filling) /* a handle copies the object in (stage_for_write) */
			pthread_cond_wait(&fs->cond, &fs->lock);
		else
			wb_wait_idle(fs->wb, j);
	}
}

/* Is s well-formed UTF-8 (no overlong forms, surrogates or code points
 * past U+10FFFF)?  S3 keys are UTF-8: anything else could never go up. */
static int utf8_ok(const unsigned char *s)
{
	while (*s) {
		unsigned c = *s++, n, min, cp;

		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, min = 0x80, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, min = 0x800, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, min = 0x10000, cp = c & 0x07;
		else
			return 0;
		for (; n; n--, s++) {
			if ((*s & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (*s & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
	}
	return 1;
}

/* May a new file, directory (is_dir: its marker key) or rename target take
 * path?  -EPERM for the attribute index's reserved name, -EILSEQ for a name
 * that is not UTF-8, -ENAMETOOLONG for a key past S3's 1,024 bytes. */
static int check_key_len(struct fs *fs, const char *path, int is_dir)
{
	size_t len = strlen(fs->conf.prefix) + strlen(path) - 1 + (is_dir ? 1 : 0);

	if (aidx_reserved(fs, path))
		return -EPERM;
	if (!utf8_ok((const unsigned char *)path))
		return -EILSEQ;
	return len > S3_KEY_MAX ? -ENAMETOOLONG : 0;
}

static int node_key(struct fs *fs, const struct node *n, struct buf *key)
{
	buf_init(key, 8192);
	return tree_key(fs, n, n->kids != NULL, key);
}

/* n's version in S3 into *v, which the caller releases with version_put or
 * hands to version_move.  Locked. */
static int version_of(struct fs *fs, struct node *n, struct version *v)
{
	struct buf key;
	int rc = node_key(fs, n, &key);

	v->key = NULL;
	if (rc == 0 && !(v->key = strdup(buf_str(&key))))
		rc = -ENOMEM;
	buf_release(&key);
	if (rc < 0)
		return rc;
	snprintf(v->etag, sizeof(v->etag), "%s", n->etag);
	v->size = n->a.size;
	v->compressed = n->compressed;
	return 0;
}

/* *dst becomes *src (which gives up its key). */
static void version_move(struct version *dst, struct version *src)
{
	free(dst->key);
	*dst = *src;
	src->key = NULL;
}

static void version_put(struct version *v)
{
	free(v->key);
	v->key = NULL;
}

/* A read-cache handle on version v.  Unlocked (it may download). */
static int version_open(struct fs *fs, const struct version *v, struct dc_file **dc)
{
	return dcache_get(fs->dc, v->key, v->etag, v->size, v->compressed, dc);
}

/* --- attributes and directories ----------------------------------------------- */

/* GETATTR through the handle of a file whose name is gone (libfuse passes
 * no path once it was unlinked or another file renamed over it; the kernel
 * sends the handle on a read near the end of the file): the attributes it
 * was opened with, its current size, no links.  Without a handle (fstat)
 * libfuse answers ESTALE before calling us. */
static int handle_stat(struct fuse_file_info *fi, struct stat *st)
{
	struct ofile *of = fi ? (struct ofile *)(uintptr_t)fi->fh : NULL;
	struct stat sb;

	if (!of)
		return -ESTALE;
	pthread_rwlock_rdlock(&of->rw); /* fd: follow_latest may switch it */
	*st = of->st;
	if (of->fd >= 0 && fstat(of->fd, &sb) == 0) {
		st->st_size = sb.st_size;
		st->st_blocks = (blkcnt_t)((sb.st_size + 511) / 512);
	}
	pthread_rwlock_unlock(&of->rw);
	st->st_nlink = 0;
	return 0;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct node *n;
	int rc;

	if (!path)
		return handle_stat(fi, st);
	LOCK(fs);
	rc = meta_resolve(fs, path, &n);
	if (rc == 0)
		meta_stat(fs, n, st);
	UNLOCK(fs);
	return rc;
}

struct dirent_copy {
	char *name;
	struct stat st;
};

struct readdir_ctx {
	struct fs *fs;
	struct dirent_copy *v;
	size_t n, cap;
};

static int copy_cb(const char *name, void *val, void *arg)
{
	struct readdir_ctx *rc = arg;

	if (rc->n == rc->cap) {
		size_t nc = rc->cap ? rc->cap * 2 : 64;
		struct dirent_copy *v = realloc(rc->v, nc * sizeof(*v));

		if (!v)
			return 1;
		rc->v = v;
		rc->cap = nc;
	}
	rc->v[rc->n].name = strdup(name);
	if (!rc->v[rc->n].name)
		return 1;
	meta_stat(rc->fs, val, &rc->v[rc->n].st);
	rc->n++;
	return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct fs *fs = ctx_fs();
	struct readdir_ctx c = { .fs = fs };
	struct stat dst;
	struct node *n;
	int rc;

	(void)off;
	(void)fi;
	(void)flags;
	LOCK(fs);
	rc = meta_resolve(fs, path, &n);
	if (rc == 0 && !n->kids)
		rc = -ENOTDIR;
	if (rc == 0)
		rc = meta_ensure_listed(fs, n, 1);
	if (rc == 0)
		rc = meta_resolve(fs, path, &n); /* the lock may have been dropped */
	if (rc == 0 && n->kids) {
		meta_stat(fs, n, &dst);
		if (htab_foreach(n->kids, copy_cb, &c))
			rc = -ENOMEM;
	}
	UNLOCK(fs);
	if (rc == 0) {
		filler(buf, ".", NULL, 0, 0);
		filler(buf, "..", NULL, 0, 0);
		for (size_t i = 0; i < c.n; i++)
			if (filler(buf, c.v[i].name, &c.v[i].st, 0, FUSE_FILL_DIR_PLUS))
				break;
	}
	for (size_t i = 0; i < c.n; i++)
		free(c.v[i].name);
	free(c.v);
	return rc;
}

static int op_mkdir(const char *path, mode_t mode)
{
	struct fs *fs = ctx_fs();
	struct fuse_context *fc = fuse_get_context();
	struct node *dir, *n;
	const char *name;
	struct buf key;
	struct wb_job *j;
	int rc;

	if (fs->conf.ro)
		return -EROFS;
	buf_init(&key, 8192);
	LOCK(fs);
	rc = check_key_len(fs, path, 1) ?: meta_resolve_parent(fs, path, &dir, &name);
	if (rc == 0 && tree_child(dir, name))
		rc = -EEXIST;
	if (rc < 0)
		goto out;
	n = tree_add(dir, name, S_IFDIR);
	if (!n) {
		rc = -ENOMEM;
		goto out;
	}
	tree_default_attr(fs, &n->a, S_IFDIR);
	n->a.mode = S_IFDIR | (mode & 07777);
	n->a.uid = fc->uid;
	n->a.gid = fc->gid;
	n->known = 1;
	n->listed = fs_now(); /* nothing can be under a name that did not exist */
	rc = node_key(fs, n, &key) ?: wb_put(fs->wb, n, buf_str(&key), 0, &j);
	if (rc < 0)
		tree_remove(n);
	else
		wb_touch(fs->wb, j);
out:
	UNLOCK(fs);
	buf_release(&key);
	return rc;
}

/* Does n's key hold an object in S3: listed, overwritten by its job, or
 * uploaded by an fsync while the file stays open?  Locked. */
static int key_has_object(const struct node *n)
{
	const struct wb_job *j = n->job;

	return n->remote || (j && (j->existed || j->up_etag[0]));
}

/* Queue the removal of what n has in S3 (and drop its pending job). Locked. */
static int remove_remote(struct fs *fs, struct node *n)
{
	struct wb_job *j = n->job;
	struct buf key;
	int rc = 0, existed = key_has_object(n);

	rc = node_key(fs, n, &key);
	if (rc == 0) {
		if (j)
			wb_ref(j);
		/* the DELETE replaces j and so waits for what j waited for (a
		 * request of the key still on its way) */
		if (existed)
			rc = wb_delete(fs->wb, buf_str(&key));
		if (j) {
			if (!j->cancelled)
				wb_cancel(fs->wb, j);
			wb_unref(fs->wb, j);
		}
	}
	buf_release(&key);
	return rc;
}

static int op_rmdir(const char *path)
{
	struct fs *fs = ctx_fs();
	struct node *n;
	int rc;

	if (fs->conf.ro)
		return -EROFS;
	LOCK(fs);
	rc = meta_resolve(fs, path, &n);
	if (rc == 0 && !n->kids)
		rc = -ENOTDIR;
	if (rc == 0 && !n->parent)
		rc = -EBUSY;
	if (rc == 0)
		rc = meta_ensure_listed(fs, n, 0);
	if (rc == 0)
		rc = resolve_idle(fs, path, &n);
	if (rc == 0 && htab_count(n->kids) > 0)
		rc = -ENOTEMPTY;
	if (rc == 0)
		rc = remove_remote(fs, n);
	if (rc == 0) {
		struct node *parent = n->parent;

		tree_remove(n);
		if (wb_keep_dir(fs->wb, parent) < 0)
			log_warn("cannot keep the directory of '%s'", path);
	}
	UNLOCK(fs);
	return rc;
}

static int op_unlink(const char *path)
{
	struct fs *fs = ctx_fs();
	struct node *n;
	struct buf key;
	int rc;

	if (fs->conf.ro)
		return -EROFS;
	buf_init(&key, 8192);
	LOCK(fs);
	rc = resolve_idle(fs, path, &n);
	if (rc == 0 && n->kids)
		rc = -EISDIR;
	if (rc == 0)
		rc = tree_key(fs, n, 0, &key) ?: remove_remote(fs, n);
	if (rc == 0) {
		struct node *parent = n->parent;

		tree_remove(n);
		if (wb_keep_dir(fs->wb, parent) < 0)
			log_warn("cannot keep the directory of '%s'", path);
	}
	UNLOCK(fs);
	if (rc == 0)
		dcache_forget(fs->dc, buf_str(&key));
	buf_release(&key);
	return rc;
}

/* --- metadata changes ------------------------------------------------------------ */

/* After n's attributes changed: fold into a pending job, or queue one. */
static int attrs_changed(struct fs *fs, struct node *n)
{
	struct buf key;
	struct wb_job *j;
	int rc;

	if (n->job) {
		wb_touch(fs->wb, n->job);
		return 0;
	}
	if (!n->parent)
		return 0; /* the root has no object */
	rc = node_key(fs, n, &key);
	if (rc == 0 && n->remote)
		rc = wb_meta(fs->wb, n, buf_str(&key));
	else if (rc == 0) { /* an implicit directory: give it a marker */
		rc = wb_put(fs->wb, n, buf_str(&key), 0, &j);
		if (rc == 0)
			wb_touch(fs->wb, j);
	}
	buf_release(&key);
	return rc;
}

/* Set n's mode bits (07777): 1 when they changed, 0 when not, or -errno.
 * Locked. */
static int node_chmod(struct fs *fs, struct node *n, mode_t mode)
{
	if ((n->a.mode & 07777) == (mode & 07777))
		return 0;
	n->a.mode = (n->a.mode & S_IFMT) | (mode & 07777);
	return attrs_changed(fs, n) ?: 1;
}

/* The handle of a change whose name is gone (see handle_stat): its
 * attributes change for fstat, nothing goes to S3.  NULL: no handle. */
static struct stat *gone_attrs(struct fuse_file_info *fi)
{
	struct ofile *of = fi ? (struct ofile *)(uintptr_t)fi->fh : NULL;

	return of ? &of->st : NULL;
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct node *n;
	int rc;

	if (fs->conf.ro)
		return -EROFS;
	if (!path) {
		struct stat *st = gone_attrs(fi);

		if (st)
			st->st_mode = (st->st_mode & S_IFMT) | (mode & 07777);
		return 0;
	}
	LOCK(fs);
	rc = meta_resolve(fs, path, &n);
	if (rc == 0)
		rc = node_chmod(fs, n, mode);
	UNLOCK(fs);
	return rc < 0 ? rc : 0;
}

/* Is the caller in group gid (primary or supplementary)?  For the setgid
 * rule of a mode set through an ACL; read from /proc only when needed. */
static int caller_in_group(const struct fuse_context *fc, gid_t gid)
{
	gid_t list[64];
	int n;

	if (fc->gid == gid)
		return 1;
	n = fuse_getgroups((int)ARRAY_SIZE(list), list);
	for (int i = 0; i < n && i < (int)ARRAY_SIZE(list); i++)
		if (list[i] == gid)
			return 1;
	return 0;
}

int ops_set_perms(const char *path, mode_t perms)
{
	struct fs *fs = ctx_fs();
	struct fuse_context *fc = fuse_get_context();
	struct node *n;
	mode_t mode;
	int rc;

	if (fs->conf.ro)
		return -EROFS;
	LOCK(fs);
	rc = meta_resolve(fs, path, &n);
	if (rc == 0 && fc->uid != 0 && fc->uid != n->a.uid)
		rc = -EPERM;
	if (rc == 0) {
		mode = (n->a.mode & 07000) | (perms & 0777);
		if ((mode & S_ISGID) && fc->uid != 0 && !caller_in_group(fc, n->a.gid))
			mode &= ~(mode_t)S_ISGID; /* as ext4: in_group_or_capable */
		rc = node_chmod(fs, n, mode);
	}
	UNLOCK(fs);
	/* the kernel does not drop its copy of the mode after an ACL it passed
	 * through (it would after a chmod): ls -l would show the old one */
	if (rc > 0)
		(void)fuse_invalidate_path(fc->fuse, path);
	return rc < 0 ? rc : 0;
}

static int op_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct node *n;
	int rc;

	if (fs->conf.ro)
		return -EROFS;
	if (!path) {
		struct stat *st = gone_attrs(fi);

		if (st && uid != (uid_t)-1)
			st->st_uid = uid;
		if (st && gid != (gid_t)-1)
			st->st_gid = gid;
		return 0;
	}
	LOCK(fs);
	rc = meta_resolve(fs, path, &n);
	if (rc == 0) {
		uid_t nu = uid == (uid_t)-1 ? n->a.uid : uid;
		gid_t ng = gid == (gid_t)-1 ? n->a.gid : gid;

		if (nu != n->a.uid || ng != n->a.gid) {
			n->a.uid = nu;
			n->a.gid = ng;
			rc = attrs_changed(fs, n);
		}
	}
	UNLOCK(fs);
	return rc;
}

static int op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct timespec t;
	struct node *n;
	int rc;

	if (fs->conf.ro)
		return -EROFS;
	if (tv && tv[1].tv_nsec == UTIME_OMIT)
		return 0; /* atime is not kept */
	if (!tv || tv[1].tv_nsec == UTIME_NOW)
		clock_gettime(CLOCK_REALTIME, &t);
	else
		t = tv[1];
	if (!path) {
		struct stat *st = gone_attrs(fi);

		if (st)
			st->st_mtim = t;
		return 0;
	}
	LOCK(fs);
	rc = meta_resolve(fs, path, &n);
	if (rc == 0 && (n->a.mtime.tv_sec != t.tv_sec || n->a.mtime.tv_nsec != t.tv_nsec)) {
		n->a.mtime = t;
		rc = attrs_changed(fs, n);
	}
	UNLOCK(fs);
	return rc;
}

/* --- files ------------------------------------------------------------------------ */

static struct ofile *ofile_new(void)
{
	struct ofile *of = calloc(1, sizeof(*of));
	pthread_rwlockattr_t ra;
	int rc;

	if (!of)
		return NULL;
	/* a switch (a write lock) must not wait behind a stream of reads */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	rc = pthread_rwlock_init(&of->rw, &ra);
	pthread_rwlockattr_destroy(&ra);
	if (rc != 0) {
		free(of);
		return NULL;
	}
	if (of)
		of->fd = -1;
	return of;
}

/* The data of n changed through this mount (a write, a truncate): readers
 * that opened an older version look again (follow_latest).  Locked. */
static void content_changed(struct fs *fs, struct node *n)
{
	__atomic_store_n(&fs->cgen, fs->cgen + 1, __ATOMIC_RELEASE);
	if (n) /* unique: a node made anew never matches an old handle's */
		n->cgen = fs->cgen;
}

/* Copy the cached remote object into the file out (at its offset 0, which
 * is its position). Unlocked. */
static int fill_fd_from_remote(struct fs *fs, const char *key, const char *etag, uint64_t size,
			       int compressed, int out)
{
	struct dc_file *dc = NULL;
	int in = -1, rc;

	rc = dcache_get(fs->dc, key, etag, size, compressed, &dc);
	rc = rc ?: dcache_fill(dc);
	if (rc < 0)
		goto out;
	in = open(dcache_path(dc), O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		rc = -errno;
		goto out;
	}
	for (uint64_t done = 0; done < size;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, size - done, 0);

		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			goto out;
		}
		done += (uint64_t)n;
	}
out:
	if (in >= 0)
		close(in);
	if (dc)
		dcache_put(dc);
	return rc;
}

/* The same into the job's data file. Unlocked. */
static int fill_from_remote(struct fs *fs, const char *key, const char *etag, uint64_t size,
			    int compressed, const char *data)
{
	int out = open(data, O_WRONLY | O_TRUNC | O_CLOEXEC), rc;

	if (out < 0)
		return -errno;
	rc = fill_fd_from_remote(fs, key, etag, size, compressed, out);
	close(out);
	return rc;
}

/* Make n writable: a PUT job with its data staged.  Locked; may drop the
 * lock (copying a remote object), so the caller re-resolves afterwards. */
static int stage_for_write(struct fs *fs, const char *path, struct node *n, int trunc,
			   struct wb_job **out)
{
	struct buf key;
	char etag[S3_ETAG_MAX];
	uint64_t size = n->a.size;
	int compressed = n->compressed, rc, need_copy;
	struct wb_job *j = n->job;

	if (j && j->kind == WB_PUT && j->data && j->filling) {
		/* another handle copies the object in: wait, then start again */
		pthread_cond_wait(&fs->cond, &fs->lock);
		return RESOLVE_AGAIN;
	}
	if (j && j->kind == WB_PUT && j->data) {
		*out = j;
		return 0;
	}
	need_copy = !trunc && n->remote && size > 0;
	snprintf(etag, sizeof(etag), "%s", n->etag);
	rc = node_key(fs, n, &key) ?: wb_put(fs->wb, n, buf_str(&key), 1, &j);
	if (rc == 0 && need_copy) {
		j->writers++; /* not due while we copy */
		j->filling = 1; /* nor read in place of the object (follow_latest) */
		wb_ref(j);
		UNLOCK(fs);
		rc = fill_from_remote(fs, buf_str(&key), etag, size, compressed, j->data);
		LOCK(fs);
		j->filling = 0;
		pthread_cond_broadcast(&fs->cond);
		wb_drop_writer(fs->wb, j);
		if (rc < 0 && !j->cancelled) {
			log_error("cannot fetch '%s' for writing: %s", buf_str(&key), strerror(-rc));
			wb_cancel(fs->wb, j);
		}
		if (rc == 0 && (j->cancelled || !j->node))
			rc = -ENOENT; /* removed meanwhile */
		wb_unref(fs->wb, j);
	}
	if (rc == 0 && trunc && j->node)
		j->node->a.size = 0;
	buf_release(&key);
	(void)path;
	*out = j;
	return rc;
}

/* Size of a staged file, or -1 when it cannot be read (then truncate). */
static off_t staged_size(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 ? st.st_size : -1;
}

static int open_write_node(struct fs *fs, const char *path, struct node *n, int flags,
			   struct ofile *of)
{
	struct wb_job *j = NULL;
	int rc = n->kids ? -EISDIR : 0;

	if (rc == 0)
		rc = stage_for_write(fs, path, n, (flags & O_TRUNC) != 0, &j);
	if (rc < 0)
		return rc;
	/* O_TRUNC only when there is something to cut: ext4 flushes a file
	 * truncated to 0 at its close (auto_da_alloc), a disk write per file
	 * while a new file's staged copy is always empty */
	of->fd = open(j->data, O_RDWR | O_CLOEXEC);
	if (of->fd < 0)
		return -errno;
	if (flags & O_TRUNC) {
		if (staged_size(of->fd) != 0 && ftruncate(of->fd, 0) < 0) {
			rc = -errno;
			close(of->fd);
			of->fd = -1;
			return rc;
		}
		if (j->node)
			j->node->a.size = 0;
		of->dirty = 1;
		j->gen++;
		j->werr = 0; /* whatever failed before is gone */
		wb_truncated(fs->wb, j, 0);
		content_changed(fs, j->node);
	}
	of->job = j;
	of->writable = 1;
	wb_ref(j);
	j->writers++;
	return 0;
}

static int open_write_now(struct fs *fs, const char *path, int flags, struct ofile *of)
{
	struct node *n;
	int rc;

	do {
		rc = resolve_idle(fs, path, &n);
		rc = rc ?: open_write_node(fs, path, n, flags, of);
	} while (rc == RESOLVE_AGAIN);
	return rc;
}

/* Open for writing.  An uploaded file opened without O_TRUNC is staged only
 * at its first write, so an open that writes nothing (touch, an editor that
 * only looks) costs no download and no upload.  Locked. */
static int open_write(struct fs *fs, const char *path, int flags, struct ofile *of)
{
	struct node *n;
	int rc = meta_resolve(fs, path, &n);

	if (rc < 0)
		return rc;
	if (n->kids)
		return -EISDIR;
	if (!(flags & O_TRUNC) && !(n->job && n->job->kind == WB_PUT && n->job->data) &&
	    n->remote && n->a.size > 0) {
		rc = version_of(fs, n, &of->v);
		if (rc < 0)
			return rc;
		of->cgen = n->cgen;
		of->seen = fs->cgen;
		meta_stat(fs, n, &of->st);
		of->lazy = 1;
		of->writable = 1;
		return 0;
	}
	return open_write_now(fs, path, flags, of);
}

/* Close, put and unref what a handle read from before it switched.
 * Unlocked. */
static void let_go(struct fs *fs, int fd, struct dc_file *dc, struct wb_job *j)
{
	if (fd >= 0)
		close(fd);
	if (dc)
		dcache_put(dc);
	if (j) {
		LOCK(fs);
		wb_unref(fs->wb, j);
		UNLOCK(fs);
	}
}

/* A private copy for a lazy handle whose name is gone (unlinked, or another
 * file renamed over it), into *fd: what it reads (the staged copy src when
 * src >= 0, else the version of->v; empty when trunc), never
 * uploaded, as an unlinked file's data on a local disk.  Fails when that
 * version is neither in the read cache nor in S3 any more.  Unlocked. */
static int orphan_copy(struct fs *fs, struct ofile *of, int trunc, int src, int *fd)
{
	int rc = 0;

	*fd = open(fs->conf.cache_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (*fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) { /* no O_TMPFILE */
		char *t = NULL;

		if (asprintf(&t, "%s/orphan.XXXXXX", fs->conf.cache_dir) < 0)
			return -ENOMEM;
		*fd = mkostemp(t, O_CLOEXEC);
		if (*fd >= 0)
			unlink(t);
		free(t);
	}
	if (*fd < 0)
		return -errno;
	if (!trunc && src >= 0) { /* it read another handle's staged copy */
		loff_t in = 0;
		ssize_t n;

		while ((n = copy_file_range(src, &in, *fd, NULL, 1 << 30, 0)) > 0)
			;
		rc = n < 0 ? -errno : 0;
	} else if (!trunc) {
		rc = fill_fd_from_remote(fs, of->v.key, of->v.etag, of->v.size, of->v.compressed,
					 *fd);
	}
	if (rc < 0) {
		log_error("cannot copy '%s' for a handle whose name is gone: %s", of->v.key,
			  strerror(-rc));
		close(*fd);
		*fd = -1;
	}
	return rc;
}

/* The first write (or truncate: trunc, to 0) through a lazy handle stages
 * the file under path, the name it has now (libfuse follows renames), or
 * makes it a private copy when path is NULL (the name is gone).  What its
 * reads used until then (a read-cache handle, another writer's staged
 * copy) is let go.  The handle's write lock keeps its other requests out
 * meanwhile.  Unlocked. */
static int materialize(struct fs *fs, struct ofile *of, const char *path, int trunc)
{
	struct dc_file *old_dc = NULL;
	struct wb_job *old_job = NULL;
	int old_fd = -1, fd, rc = 0;

	pthread_rwlock_wrlock(&of->rw);
	if (!of->lazy)
		goto out;
	old_fd = of->fd;
	old_job = of->job;
	old_dc = of->dc;
	of->fd = -1;
	of->job = NULL;
	of->dc = NULL;
	if (!path) {
		rc = orphan_copy(fs, of, trunc, old_fd, &fd);
		if (rc == 0) {
			of->fd = fd;
			of->orphan = 1;
		}
	} else {
		LOCK(fs);
		rc = open_write_now(fs, path, trunc ? O_TRUNC : 0, of);
		UNLOCK(fs);
	}
	if (rc < 0) { /* as it was */
		of->fd = old_fd;
		of->job = old_job;
		of->dc = old_dc;
		old_fd = -1;
		old_job = NULL;
		old_dc = NULL;
	} else {
		of->lazy = 0;
	}
out:
	pthread_rwlock_unlock(&of->rw);
	let_go(fs, old_fd, old_dc, old_job);
	return rc;
}

static int open_read(struct fs *fs, const char *path, struct ofile *of)
{
	struct version v;
	struct node *n;
	int rc;

	rc = meta_resolve(fs, path, &n);
	if (rc == 0 && n->kids)
		rc = -EISDIR;
	if (rc < 0)
		return rc;
	of->cgen = n->cgen;
	of->seen = fs->cgen;
	meta_stat(fs, n, &of->st); /* now: the lock may be dropped below */
	/* staged data, unless it is still being copied from S3 for a writer
	 * (then the object is what the file holds) */
	if (n->job && n->job->kind == WB_PUT && n->job->data && !n->job->filling) {
		of->fd = open(n->job->data, O_RDONLY | O_CLOEXEC);
		if (of->fd < 0)
			return -errno;
		of->job = n->job;
		wb_ref(n->job);
		return 0;
	}
	rc = version_of(fs, n, &v);
	if (rc < 0)
		return rc;
	/* the kernel may keep its page cache when the object did not change;
	 * while a handle on another version is open (and fills that cache
	 * with its bytes) this one bypasses it, and the next open after
	 * drops it */
	of->direct_io = dcache_other_version_held(fs->dc, v.key, v.etag);
	of->keep_cache = !of->direct_io && n->kc_hash == hash_str(v.etag);
	n->kc_hash = of->direct_io ? 0 : hash_str(v.etag);
	log_debug("open '%s': etag %s, %llu bytes%s", path, v.etag, (unsigned long long)v.size,
		  of->keep_cache ? ", kernel cache kept" : "");
	UNLOCK(fs);
	rc = version_open(fs, &v, &of->dc);
	LOCK(fs);
	version_move(&of->v, &v);
	return rc;
}

static void ofile_free(struct fs *fs, struct ofile *of)
{
	version_put(&of->v);
	if (of->fd >= 0)
		close(of->fd);
	if (of->dc)
		dcache_put(of->dc);
	if (of->job) {
		LOCK(fs);
		wb_unref(fs->wb, of->job);
		UNLOCK(fs);
	}
	pthread_rwlock_destroy(&of->rw);
	free(of);
}

/* The attributes a handle keeps for when its name is gone, unless its open
 * took them already. Locked. */
static void snap_attrs(struct fs *fs, const char *path, struct ofile *of)
{
	struct node *n = of->st.st_mode ? NULL : tree_find(fs, path);

	if (n)
		meta_stat(fs, n, &of->st);
	if (!of->st.st_mode) /* gone meanwhile: a type the kernel expects */
		of->st.st_mode = S_IFREG | 0644;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct ofile *of = ofile_new();
	int acc = fi->flags & O_ACCMODE, rc;

	if (!of)
		return -ENOMEM;
	if ((acc != O_RDONLY || (fi->flags & O_TRUNC)) && fs->conf.ro) {
		free(of);
		return -EROFS;
	}
	LOCK(fs);
	if (acc != O_RDONLY || (fi->flags & O_TRUNC))
		rc = open_write(fs, path, fi->flags, of);
	else
		rc = open_read(fs, path, of);
	if (rc < 0 && of->job && of->writable)
		wb_drop_writer(fs->wb, of->job);
	if (rc == 0)
		snap_attrs(fs, path, of);
	UNLOCK(fs);
	if (rc < 0) {
		ofile_free(fs, of);
		return rc;
	}
	fi->fh = (uint64_t)(uintptr_t)of;
	fi->keep_cache = (unsigned)of->keep_cache;
	fi->direct_io = (unsigned)of->direct_io;
	return 0;
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct fuse_context *fc = fuse_get_context();
	struct ofile *of;
	struct node *dir, *n;
	const char *name;
	int rc;

	if (fs->conf.ro)
		return -EROFS;
	of = ofile_new();
	if (!of)
		return -ENOMEM;
	LOCK(fs);
	rc = check_key_len(fs, path, 0) ?: meta_resolve_parent(fs, path, &dir, &name);
	n = rc == 0 ? tree_child(dir, name) : NULL;
	if (n) { /* exists: O_EXCL says no, else it is an open with O_TRUNC semantics */
		rc = (fi->flags & O_EXCL) ? -EEXIST : n->kids ? -EISDIR : 0;
		if (rc == 0)
			rc = open_write(fs, path, fi->flags | O_TRUNC, of);
		goto out;
	}
	if (rc < 0)
		goto out;
	n = tree_add(dir, name, S_IFREG);
	if (!n) {
		rc = -ENOMEM;
		goto out;
	}
	tree_default_attr(fs, &n->a, S_IFREG);
	n->a.mode = S_IFREG | (mode & 07777);
	n->a.uid = fc->uid;
	n->a.gid = fc->gid;
	n->known = 1;
	/* this node, not a fresh lookup: with stat_ttl=0 a lookup lists the
	 * directory again, and that drops a name with no object and no job */
	rc = open_write_node(fs, path, n, O_RDWR | O_TRUNC, of);
	if (rc < 0 && (n = tree_find(fs, path)) && !n->job)
		tree_remove(n);
out:
	if (rc < 0 && of->job && of->writable)
		wb_drop_writer(fs->wb, of->job);
	if (rc == 0)
		snap_attrs(fs, path, of);
	UNLOCK(fs);
	if (rc < 0) {
		ofile_free(fs, of);
		return rc;
	}
	fi->fh = (uint64_t)(uintptr_t)of;
	return 0;
}

/* A read-only handle reads what the file holds now, as on a local disk:
 * when another handle of this mount changed the data since (fs->cgen moved,
 * and the node's cgen is not the one the handle reflects), it switches to
 * the staged copy, or to the version in S3 once that copy went up.  A
 * handle whose name is gone (path NULL) keeps what it has.  Unlocked; the
 * handle's write lock keeps its reads out while it switches. */
static void follow_latest(struct fs *fs, struct ofile *of, const char *path)
{
	struct wb_job *j = NULL, *old_job = NULL;
	struct dc_file *dc = NULL, *old_dc = NULL;
	struct version v = { 0 };
	struct node *n;
	uint64_t cgen = 0, gen;
	int fd = -1, old_fd = -1, rc = 0;

	/* of->seen moves only once the handle is where it should be: a switch
	 * that could not be made now is tried again at the next read */
	pthread_rwlock_wrlock(&of->rw);
	if (of->writable && !of->lazy) { /* a write made it its own meanwhile */
		pthread_rwlock_unlock(&of->rw);
		return;
	}
	LOCK(fs);
	gen = fs->cgen;
	n = path ? tree_find(fs, path) : NULL;
	if (!n || n->kids || n->cgen == of->cgen) {
		of->seen = gen;
		UNLOCK(fs);
		goto out;
	}
	if (n->job && n->job->kind == WB_PUT && n->job->data) {
		if (!n->job->filling && n->job == of->job) { /* reads that file already */
			of->cgen = n->cgen;
			of->seen = gen;
		}
		if (n->job->filling || n->job == of->job) {
			UNLOCK(fs);
			goto out;
		}
		j = n->job;
		fd = open(j->data, O_RDONLY | O_CLOEXEC);
		if (fd >= 0)
			wb_ref(j);
		cgen = n->cgen;
		UNLOCK(fs);
		if (fd < 0)
			goto out;
	} else if (!n->remote) { /* no data of its own yet: nothing else to read */
		of->cgen = n->cgen;
		of->seen = gen;
		UNLOCK(fs);
		goto out;
	} else {
		cgen = n->cgen;
		rc = version_of(fs, n, &v);
		UNLOCK(fs);
		if (rc == 0)
			rc = version_open(fs, &v, &dc);
		if (rc < 0)
			goto out;
	}
	old_fd = of->fd;
	old_dc = of->dc;
	old_job = of->job;
	of->fd = fd;
	of->dc = dc;
	of->job = j;
	of->cgen = cgen;
	of->seen = gen;
	if (v.key) /* a lazy handle's orphan copy wants this version */
		version_move(&of->v, &v);
	else
		of->v.etag[0] = '\0';
out:
	pthread_rwlock_unlock(&of->rw);
	version_put(&v);
	let_go(fs, old_fd, old_dc, old_job);
}

/* The first read through a lazy handle: a read-cache handle on the version
 * it opened, under the key it has now (path: renamed since, the old key is
 * gone from S3).  Unlocked. */
static void lazy_reader(struct fs *fs, struct ofile *of, const char *path)
{
	struct version v;
	struct node *n;
	int rc = 0;

	pthread_rwlock_wrlock(&of->rw);
	if (of->lazy && !of->dc && of->fd < 0) {
		LOCK(fs);
		n = path ? tree_find(fs, path) : NULL;
		if (n && !n->kids && n->remote && n->cgen == of->cgen && version_of(fs, n, &v) == 0)
			version_move(&of->v, &v);
		UNLOCK(fs);
		rc = version_open(fs, &of->v, &of->dc);
	}
	pthread_rwlock_unlock(&of->rw);
	if (rc < 0)
		log_error("cannot read '%s': %s", of->v.key, strerror(-rc));
}

static int op_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct ofile *of = (struct ofile *)(uintptr_t)fi->fh;
	ssize_t n;

	/* a lazy handle reads like a read-only one: no copy, no upload */
	if (of->lazy && !of->dc && of->fd < 0)
		lazy_reader(fs, of, path);
	if ((!of->writable || of->lazy) &&
	    __atomic_load_n(&fs->cgen, __ATOMIC_ACQUIRE) != of->seen)
		follow_latest(fs, of, path);
	pthread_rwlock_rdlock(&of->rw);
	if (of->fd >= 0) {
		n = pread(of->fd, buf, size, off);
		if (n < 0)
			n = -errno;
	} else if (of->dc) {
		n = dcache_read(of->dc, buf, size, (uint64_t)off);
	} else {
		n = -EIO; /* lazy_reader failed (logged) */
	}
	pthread_rwlock_unlock(&of->rw);
	return (int)n;
}

/* libfuse calls write_buf, never write, once it exists.  The request's
 * bytes come in memory, or (FUSE_CAP_SPLICE_READ, on by default with
 * write_buf) in a pipe the request was spliced into: spliced on into the
 * staged file, never copied through this process. */
static int op_write_buf(const char *path, struct fuse_bufvec *buf, off_t off,
			struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct ofile *of = (struct ofile *)(uintptr_t)fi->fh;
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(fuse_buf_size(buf));
	ssize_t n;

	if (!of->writable)
		return -EBADF;
	if (of->lazy) {
		int rc = materialize(fs, of, path, 0);

		if (rc < 0)
			return rc;
	}
	pthread_rwlock_rdlock(&of->rw); /* of->fd is set (materialize) under it */
	dst.buf[0].flags = (enum fuse_buf_flags)(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
	dst.buf[0].fd = of->fd;
	dst.buf[0].pos = off;
	n = fuse_buf_copy(&dst, buf, FUSE_BUF_SPLICE_MOVE);
	pthread_rwlock_unlock(&of->rw);
	if (of->orphan)
		return (int)n;
	if (n < 0) {
		LOCK(fs); /* the staged copy now misses bytes the writer meant */
		wb_write_failed(fs->wb, of->job, (int)n);
		UNLOCK(fs);
		return (int)n;
	}
	LOCK(fs);
	of->dirty = 1;
	of->job->gen++;
	content_changed(fs, of->job->node);
	if (of->job->node) {
		struct node *nd = of->job->node;

		if ((uint64_t)off + (uint64_t)n > nd->a.size)
			nd->a.size = (uint64_t)off + (uint64_t)n;
		clock_gettime(CLOCK_REALTIME, &nd->a.mtime);
		of->job->wmtime = nd->a.mtime;
	}
	wb_written(fs->wb, of->job, (uint64_t)off, (uint64_t)n);
	UNLOCK(fs);
	return (int)n;
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct ofile *of = fi ? (struct ofile *)(uintptr_t)fi->fh : NULL;
	struct ofile tmp = { .fd = -1 };
	int rc = 0;

	if (fs->conf.ro)
		return -EROFS;
	if (of && of->lazy) /* to 0 before any write: nothing to download */
		rc = materialize(fs, of, path, size == 0);
	if (rc < 0)
		return rc;
	if (of && of->orphan)
		return ftruncate(of->fd, size) < 0 ? -errno : 0;
	if (!path && (!of || !of->writable))
		return -ESTALE;
	if (!of || !of->writable) {
		LOCK(fs);
		rc = open_write_now(fs, path, size == 0 ? O_TRUNC : 0, &tmp);
		UNLOCK(fs);
		of = &tmp;
	}
	if (of != &tmp)
		pthread_rwlock_rdlock(&of->rw);
	if (rc == 0 && ftruncate(of->fd, size) < 0)
		rc = -errno;
	if (of != &tmp)
		pthread_rwlock_unlock(&of->rw);
	LOCK(fs);
	if (rc == 0 && of->job) {
		if (size == 0)
			of->job->werr = 0; /* whatever failed before is gone */
		wb_truncated(fs->wb, of->job, (uint64_t)size);
		if (of->job->node) {
			of->job->node->a.size = (uint64_t)size;
			clock_gettime(CLOCK_REALTIME, &of->job->node->a.mtime);
		}
		content_changed(fs, of->job->node);
		of->dirty = 1;
		if (of == &tmp)
			of->job->writers--;
		wb_touch(fs->wb, of->job);
	} else if (of == &tmp && of->job) {
		wb_drop_writer(fs->wb, of->job);
	}
	if (of == &tmp && tmp.job)
		wb_unref(fs->wb, tmp.job);
	UNLOCK(fs);
	if (tmp.fd >= 0)
		close(tmp.fd);
	return rc;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct ofile *of = (struct ofile *)(uintptr_t)fi->fh;

	(void)path;
	if (of->writable && !of->lazy && of->job) {
		struct stat sb;
		int have;

		/* the size under the lock: another handle may have truncated
		 * and rewritten the file a moment ago (the kernel sends this
		 * RELEASE after close() returned, so the next writer may have
		 * come first), and a size read before that would be stale */
		LOCK(fs);
		have = fstat(of->fd, &sb) == 0;
		if (have && of->job->node)
			of->job->node->a.size = (uint64_t)sb.st_size;
		/* even an untouched open-for-write of a new file journals it */
		wb_close_writer(fs->wb, of->job);
		UNLOCK(fs);
	}
	ofile_free(fs, of);
	return 0;
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct ofile *of = fi ? (struct ofile *)(uintptr_t)fi->fh : NULL;
	struct node *n;
	int rc = 0;

	(void)datasync;
	LOCK(fs);
	if (of && of->job) {
		if (of->writable && !of->lazy && of->job->gen != of->job->gen_done)
			wb_touch(fs->wb, of->job); /* journal it now: it must survive */
		if (of->job->writers > 1)
			log_debug("fsync of '%s' with other writers open", path ? path : "(gone)");
		rc = wb_sync(fs->wb, of->job); /* runs even with writers open */
	} else if (path && resolve_idle(fs, path, &n) == 0 && n->job) {
		rc = wb_sync(fs->wb, n->job); /* not while half copied in */
	}
	UNLOCK(fs);
	return rc;
}

/* Uploads happen after close; fsync is the barrier.  close() reports only a
 * failed write to the staged copy (ENOSPC): that file will not be uploaded.
 * Every other close journals the file (see below). */
static int op_flush(const char *path, struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct ofile *of = (struct ofile *)(uintptr_t)fi->fh;
	struct stat sb;
	int rc = 0;

	(void)path;
	if (of && of->writable && !of->lazy && of->job) {
		int have;

		LOCK(fs); /* the size under the lock (op_release) */
		have = fstat(of->fd, &sb) == 0;
		rc = of->job->werr;
		if (have && of->job->node)
			of->job->node->a.size = (uint64_t)sb.st_size;
		/* close() returns after FLUSH, the kernel sends RELEASE later
		 * without waiting: journal now, or a kill -9 in between would
		 * lose a file whose close() had returned */
		rc = rc ?: wb_journal_now(fs->wb, of->job);
		UNLOCK(fs);
	}
	return rc;
}

/* --- rename ---------------------------------------------------------------------- */

static int moved_cb(const char *k, void *v, void *arg);

/* n and everything under it now read from other keys: open handles on them
 * look again (follow_latest), since the old keys are gone from S3 (a part
 * not read yet would be a GET of a deleted object).  Locked. */
static void data_moved(struct fs *fs, struct node *n)
{
	n->cgen = fs->cgen;
	if (n->kids)
		htab_foreach(n->kids, moved_cb, fs);
}

static int moved_cb(const char *k, void *v, void *arg)
{
	(void)k;
	data_moved(arg, v);
	return 0;
}

/* After S3 has done a rename: n (from's node, or NULL when it is gone)
 * moved to the path to, or a new node there of type with default
 * attributes; *out is NULL when to's directory is gone (the next listing
 * tells).  A node left at to is replaced.  Handles open on what moved read
 * the rest from the new keys.  Looks the tree up without a listing: the
 * lock is never dropped.  Locked. */
int ops_renamed_node(struct fs *fs, struct node *n, const char *to, mode_t type,
		     struct node **dir, struct node **out)
{
	const char *name = strrchr(to, '/') + 1;
	struct node *d, *old;
	char *pp = strndup(to, name - to > 1 ? (size_t)(name - to - 1) : 1);

	*out = NULL;
	if (!pp)
		return -ENOMEM;
	d = tree_find(fs, pp);
	free(pp);
	*dir = d;
	if (!d || !d->kids)
		return 0;
	if (n) {
		int rc = tree_move(n, d, name);

		if (rc == 0) {
			*out = n;
			content_changed(fs, NULL);
			data_moved(fs, n);
		}
		return rc;
	}
	if ((old = tree_child(d, name)))
		tree_remove(old);
	if (!(*out = tree_add(d, name, type)))
		return -ENOMEM;
	(*out)->seen = fs_now(); /* newer than any listing in flight */
	tree_default_attr(fs, &(*out)->a, type);
	content_changed(fs, *out);
	return 0;
}

/* Rename an uploaded file with no staged data: server-side copy with the
 * destination's headers, then delete.  Locked; drops the lock for the
 * requests; the caller re-resolves. */
static int rename_remote(struct fs *fs, const char *from, const char *to)
{
	struct node *n, *dir, *old_parent;
	struct wb_job *dj;
	struct buf fk, tk;
	struct fattr a;
	char etag[S3_ETAG_MAX];
	uint64_t rsize = 0, rseq;
	int compressed = 0, rc, del_rc;

	buf_init(&fk, 8192);
	buf_init(&tk, 8192);
	rc = resolve_idle(fs, from, &n);
	rc = rc ?: tree_key(fs, n, 0, &fk);
	if (rc == 0) {
		a = n->a;
		rc = buf_addstr(&tk, fs->conf.prefix) ?: buf_addstr(&tk, to + 1);
	}
	if (rc < 0)
		goto out;
	/* a pending DELETE of the destination (unlinked a moment ago) must
	 * neither run during the copy nor after it; nor one on its way that a
	 * later job of the key waits for (its after) */
	dj = wb_find(fs->wb, buf_str(&tk));
	if (dj && wb_in_flight(dj)) {
		wb_wait_idle(fs->wb, wb_in_flight(dj));
		rc = RESOLVE_AGAIN;
		goto out;
	}
	/* and any other write of either key (a job's upload under a name it
	 * was renamed from): none starts until these are back */
	if (wb_key_wait(fs->wb, buf_str(&tk), 0) || wb_key_wait(fs->wb, buf_str(&fk), 0)) {
		rc = RESOLVE_AGAIN;
		goto out;
	}
	/* journaled first: a crash from here on is finished by the next mount,
	 * which drops what was queued for either key before it (to's upload
	 * would go over the copy, from's chmod is in a) */
	if ((rc = wb_rename_begin(fs->wb, buf_str(&fk), buf_str(&tk), 0, &a, &rseq)) < 0)
		goto out;
	wb_key_begin(fs->wb, buf_str(&tk), "rename's copy");
	wb_key_begin(fs->wb, buf_str(&fk), "rename's delete");
	if (dj)
		wb_ref(dj);
	ops_rename_purge(fs, from, to, 0, 1);
	UNLOCK(fs);
	rc = wb_server_copy(fs->wb, buf_str(&fk), buf_str(&tk), &a, etag, &rsize, &compressed);
	/* the copy is in: a DELETE that fails goes to the write-back below */
	del_rc = rc == 0 ? s3_delete(fs->s3, buf_str(&fk)) : 0;
	LOCK(fs);
	ops_rename_purge(fs, from, to, 0, 0); /* the copy may have replaced to */
	if (rc == 0) {
		/* what was queued for either key (to's upload, from's chmod) must
		 * never go out now: cancelled before the keys are free, since the
		 * tree walk below may drop the lock (a listing once stat_ttl has
		 * run out) and the dispatcher would start it over the copy */
		wb_cancel_queued(fs->wb, buf_str(&tk));
		wb_cancel_queued(fs->wb, buf_str(&fk));
		if (del_rc < 0) {
			const char *k = buf_str(&fk);

			ops_delete_later(fs, k, &k, 1);
		}
	}
	/* done, or failed with from whole (what was queued for to stands) */
	wb_rename_end(fs->wb, rseq);
	wb_key_end(fs->wb, buf_str(&tk));
	wb_key_end(fs->wb, buf_str(&fk));
	if (dj)
		wb_unref(fs->wb, dj);
	if (rc < 0) {
		log_error("cannot rename '%s' to '%s': %s", buf_str(&fk), buf_str(&tk),
			  strerror(-rc));
		goto out;
	}
	attrcache_del(fs->ac, buf_str(&fk));
	meta_deleted(fs, buf_str(&fk));
	dcache_forget(fs->dc, buf_str(&fk));
	{
		struct ac_entry e;

		memset(&e, 0, sizeof(e));
		snprintf(e.etag, sizeof(e.etag), "%s", etag);
		e.rsize = rsize;
		e.a = a;
		e.compressed = compressed;
		attrcache_put(fs->ac, buf_str(&tk), &e);
	}
	/* the tree as it is now: a walk by meta_resolve could list (drop the
	 * lock, and prune from's node: S3 no longer has it), and the new name
	 * would keep what it showed before, or nothing, until stat_ttl */
	n = tree_find(fs, from);
	if (n && n->kids)
		n = NULL;
	if (n && n->job)
		wb_cancel(fs->wb, n->job); /* a pending chmod: applied by the copy */
	old_parent = n ? n->parent : NULL;
	rc = ops_renamed_node(fs, n, to, S_IFREG, &dir, &n);
	if (rc == 0 && n) {
		if (old_parent && old_parent != dir && wb_keep_dir(fs->wb, old_parent) < 0)
			log_warn("cannot keep the directory of '%s'", from);
		snprintf(n->etag, sizeof(n->etag), "%s", etag);
		n->a = a; /* what the copy carried */
		n->known = 1;
		n->rsize = rsize;
		n->compressed = (unsigned)compressed;
		n->remote = 1;
	}
out:
	buf_release(&fk);
	buf_release(&tk);
	return rc;
}

/* Rename a file whose data is staged: all local, one PUT later. Locked. */
static int rename_staged(struct fs *fs, struct node *n, struct node *dir, const char *name)
{
	struct node *dst = tree_child(dir, name), *old_parent;
	struct buf oldkey, newkey;
	int rc, dst_existed, old_remote = key_has_object(n);

	if (dst && dst->job && dst->job->running) {
		wb_wait_idle(fs->wb, dst->job);
		return RESOLVE_AGAIN;
	}
	/* read dst before tree_move frees it */
	dst_existed = dst != NULL && key_has_object(dst);
	buf_init(&oldkey, 8192);
	buf_init(&newkey, 8192);
	old_parent = n->parent;
	rc = tree_key(fs, n, 0, &oldkey);
	rc = rc ?: tree_move(n, dir, name);
	rc = rc ?: tree_key(fs, n, 0, &newkey);
	if (rc == 0 && old_parent != dir && wb_keep_dir(fs->wb, old_parent) < 0)
		log_warn("cannot keep the directory of '%s'", buf_str(&oldkey));
	if (rc < 0)
		goto out;
	n->remote = 0;
	n->job->existed = dst_existed;
	n->job->up_etag[0] = '\0'; /* (that upload was of the old name) */
	rc = wb_rekey(fs->wb, n->job, buf_str(&newkey));
	if (rc == 0 && old_remote)
		rc = wb_delete(fs->wb, buf_str(&oldkey));
out:
	buf_release(&oldkey);
	buf_release(&newkey);
	return rc;
}

static int rename_file(struct fs *fs, const char *from, const char *to)
{
	struct node *n, *dir, *dst;
	const char *name;
	int rc = resolve_idle(fs, from, &n);

	rc = rc ?: meta_resolve_parent(fs, to, &dir, &name);
	if (rc < 0)
		return rc;
	/* that walk may have dropped the lock (a listing): from's node may be
	 * gone, or its upload may have started, which must not be renamed
	 * under it */
	n = tree_find(fs, from);
	if (!n || (n->job && (n->job->running || n->job->filling)))
		return RESOLVE_AGAIN;
	dst = tree_child(dir, name);
	if (dst && dst->kids)
		return -EISDIR;
	if (n->job && n->job->kind == WB_PUT)
		return rename_staged(fs, n, dir, name);
	if (!n->remote)
		return -ENOENT;
	return rename_remote(fs, from, to);
}

static int op_rename(const char *from, const char *to, unsigned int flags)
{
	struct fs *fs = ctx_fs();
	struct node *n, *dir;
	const char *name;
	int rc;

	if (fs->conf.ro)
		return -EROFS;
	if (flags & RENAME_EXCHANGE)
		return -EINVAL;
	LOCK(fs);
	for (int tries = 0; tries < 16; tries++) {
		rc = meta_resolve(fs, from, &n);
		rc = rc ?: check_key_len(fs, to, n->kids != NULL);
		if (rc == 0)
			rc = meta_resolve_parent(fs, to, &dir, &name);
		if (rc == 0 && !(n = tree_find(fs, from))) /* listed away meanwhile */
			rc = RESOLVE_AGAIN;
		if (rc == 0 && (flags & RENAME_NOREPLACE) && tree_child(dir, name))
			rc = -EEXIST;
		if (rc == 0 && strcmp(from, to) == 0)
			break;
		if (rc == 0 && n->kids)
			rc = ops_rename_dir(fs, from, to);
		else if (rc == 0)
			rc = rename_file(fs, from, to);
		if (rc != RESOLVE_AGAIN)
			break;
	}
	UNLOCK(fs);
	return rc == RESOLVE_AGAIN ? -EAGAIN : rc; /* kept busy 16 times */
}

/* --- symlinks, misc ---------------------------------------------------------------- */

static int op_symlink(const char *target, const char *path)
{
	struct fs *fs = ctx_fs();
	struct fuse_context *fc = fuse_get_context();
	struct ofile of = { .fd = -1 };
	struct node *dir, *n;
	const char *name;
	size_t tl = strlen(target);
	int rc;

	if (fs->conf.ro)
		return -EROFS;
	LOCK(fs);
	rc = check_key_len(fs, path, 0) ?: meta_resolve_parent(fs, path, &dir, &name);
	if (rc == 0 && tree_child(dir, name))
		rc = -EEXIST;
	if (rc < 0)
		goto out;
	n = tree_add(dir, name, S_IFLNK);
	if (!n) {
		rc = -ENOMEM;
		goto out;
	}
	tree_default_attr(fs, &n->a, S_IFLNK);
	n->a.uid = fc->uid;
	n->a.gid = fc->gid;
	n->a.size = tl;
	n->known = 1;
	/* this node, not a fresh lookup (see op_create) */
	rc = open_write_node(fs, path, n, O_TRUNC, &of);
	if (rc == 0 && pwrite(of.fd, target, tl, 0) != (ssize_t)tl)
		rc = -EIO;
	if (of.job) {
		wb_drop_writer(fs->wb, of.job);
		if (of.job->node)
			of.job->node->a.size = tl;
		if (rc == 0)
			wb_touch(fs->wb, of.job);
		wb_unref(fs->wb, of.job);
	}
	if (rc < 0 && (n = tree_find(fs, path)))
		(void)!remove_remote(fs, n), tree_remove(n);
out:
	UNLOCK(fs);
	if (of.fd >= 0)
		close(of.fd);
	return rc;
}

static int op_readlink(const char *path, char *buf, size_t size)
{
	struct fs *fs = ctx_fs();
	struct ofile *of;
	struct fuse_file_info fi = { .flags = O_RDONLY };
	struct node *n;
	int rc, n_read;

	LOCK(fs);
	rc = meta_resolve(fs, path, &n);
	if (rc == 0 && !S_ISLNK(n->a.mode))
		rc = -EINVAL;
	UNLOCK(fs);
	if (rc < 0 || size == 0)
		return rc;
	rc = op_open(path, &fi);
	if (rc < 0)
		return rc;
	of = (struct ofile *)(uintptr_t)fi.fh;
	n_read = op_read(path, buf, size - 1, 0, &fi);
	ofile_free(fs, of);
	if (n_read < 0)
		return n_read;
	buf[n_read] = '\0';
	return 0;
}

static int op_statfs(const char *path, struct statvfs *sv)
{
	(void)path;
	memset(sv, 0, sizeof(*sv));
	sv->f_bsize = 4096;
	sv->f_frsize = 4096;
	sv->f_blocks = (fsblkcnt_t)1 << 40; /* S3 has no size limit: say 4 PiB */
	sv->f_bfree = sv->f_blocks;
	sv->f_bavail = sv->f_blocks;
	sv->f_files = (fsfilcnt_t)1 << 32;
	sv->f_ffree = sv->f_files;
	sv->f_favail = sv->f_files;
	sv->f_namemax = 255;
	return 0;
}

static int op_link(const char *from, const char *to)
{
	(void)from;
	(void)to;
	return -EPERM; /* S3 has no hard links */
}

static int op_mknod(const char *path, mode_t mode, dev_t dev)
{
	(void)path;
	(void)mode;
	(void)dev;
	return -EPERM;
}

static int op_access(const char *path, int mask)
{
	struct fs *fs = ctx_fs();
	struct node *n;
	int rc;

	LOCK(fs);
	rc = meta_resolve(fs, path, &n);
	UNLOCK(fs);
	if (rc == 0 && (mask & W_OK) && fs->conf.ro)
		rc = -EROFS;
	return rc;
}

/* The largest write the kernel sends in one request: 1 MiB, or less so that
 * a request and its header fit the largest pipe an unprivileged process may
 * have (/proc/sys/fs/pipe-max-size, 1 MiB by default).  libfuse moves a
 * write's bytes from the kernel to the staged file by splice only through
 * such a pipe; with 1 MiB writes (a 1 MiB + 4 KiB pipe, rounded to 2 MiB)
 * it read every write into memory and copied it out again, which cost a
 * 1 GiB write 3.9 CPU-s of cdnfs against 2.2 (bench/ANALYSIS.md). */
static unsigned max_write(void)
{
	unsigned long pipe_max = 0;
	FILE *f = fopen("/proc/sys/fs/pipe-max-size", "re");

	if (f) {
		if (fscanf(f, "%lu", &pipe_max) != 1)
			pipe_max = 0;
		fclose(f);
	}
	if (pipe_max >= (2u << 20) || pipe_max < (256u << 10))
		return 1u << 20; /* room enough, or splice is out of reach anyway */
	return (unsigned)(pipe_max - 4096); /* the header's page (libfuse) */
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct fs *fs = ctx_fs();
	double t = fs->conf.stat_ttl < 1.0 ? fs->conf.stat_ttl : 1.0;

	conn->max_write = max_write();
	conn->max_readahead = 1 << 20;
	cfg->entry_timeout = t;
	cfg->attr_timeout = t;
	cfg->negative_timeout = t;
	cfg->use_ino = 0;
	cfg->nullpath_ok = 0;
	cfg->hard_remove = 1;
	return fs;
}

const struct fuse_operations cdnfs_ops = {
	.init = op_init,
	.write_buf = op_write_buf,
	.getattr = op_getattr,
	.readdir = op_readdir,
	.mkdir = op_mkdir,
	.rmdir = op_rmdir,
	.unlink = op_unlink,
	.rename = op_rename,
	.chmod = op_chmod,
	.chown = op_chown,
	.utimens = op_utimens,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.truncate = op_truncate,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.symlink = op_symlink,
	.readlink = op_readlink,
	.statfs = op_statfs,
	.link = op_link,
	.mknod = op_mknod,
	.access = op_access,
	.setxattr = ops_setxattr,
	.getxattr = ops_getxattr,
	.listxattr = ops_listxattr,
	.removexattr = ops_removexattr,
};
