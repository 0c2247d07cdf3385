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

struct ofile {
	int fd;               /* staged data, or -1 */
	struct wb_job *job;   /* referenced while open */
	struct dc_file *dc;   /* cached remote object, or NULL */
	int writable;
	int dirty;
	char *lazy;           /* opened for write, nothing written yet: the path */
	int keep_cache;       /* same version as the last open: keep page cache */
};

#define LOCK(fs) pthread_mutex_lock(&(fs)->lock)
#define UNLOCK(fs) pthread_mutex_unlock(&(fs)->lock)

static struct fs *ctx_fs(void)
{
	return fuse_get_context()->private_data;
}

/* Resolve path and wait until no upload of it is running. Locked. */
static int resolve_idle(struct fs *fs, const char *path, struct node **out)
{
	for (;;) {
		int rc = meta_resolve(fs, path, out);

		if (rc < 0 || !(*out)->job || !(*out)->job->running)
			return rc;
		wb_wait_idle(fs->wb, (*out)->job);
	}
}

/* A name a new file, directory or rename target may take: within S3's key
 * length, and not the attribute index's reserved name. */
static int check_key_len(struct fs *fs, const char *path)
{
	if (aidx_reserved(fs, path))
		return -EPERM;
	return strlen(fs->conf.prefix) + strlen(path) + 1 > S3_KEY_MAX ? -ENAMETOOLONG : 0;
}

static int node_key(struct fs *fs, const struct node *n, struct buf *key)
{
	buf_init(key, 8192);
	return tree_key(fs, n, n->kids != NULL, key);
}

/* --- attributes and directories ----------------------------------------------- */

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct node *n;
	int rc;

	(void)fi;
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
	rc = check_key_len(fs, path) ?: meta_resolve_parent(fs, path, &dir, &name);
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

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct node *n;
	int rc;

	(void)fi;
	if (fs->conf.ro)
		return -EROFS;
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

	(void)fi;
	if (fs->conf.ro)
		return -EROFS;
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

	(void)fi;
	if (fs->conf.ro)
		return -EROFS;
	if (tv && tv[1].tv_nsec == UTIME_OMIT)
		return 0; /* atime is not kept */
	if (!tv || tv[1].tv_nsec == UTIME_NOW)
		clock_gettime(CLOCK_REALTIME, &t);
	else
		t = tv[1];
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

	if (of)
		of->fd = -1;
	return of;
}

/* Copy the cached remote object into the job's data file. Unlocked. */
static int fill_from_remote(struct fs *fs, const char *key, const char *etag, uint64_t size,
			    int compressed, const char *data)
{
	struct dc_file *dc = NULL;
	int in = -1, out = -1, rc;

	rc = dcache_get(fs->dc, key, etag, size, compressed, &dc);
	rc = rc ?: dcache_fill(dc);
	if (rc < 0)
		goto out;
	in = open(dcache_path(dc), O_RDONLY | O_CLOEXEC);
	out = open(data, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (in < 0 || out < 0) {
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
	if (out >= 0)
		close(out);
	if (dc)
		dcache_put(dc);
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

	if (j && j->kind == WB_PUT && j->data) {
		*out = j;
		return 0;
	}
	need_copy = !trunc && n->remote && size > 0;
	snprintf(etag, sizeof(etag), "%s", n->etag);
	rc = node_key(fs, n, &key) ?: wb_put(fs->wb, n, buf_str(&key), 1, &j);
	if (rc == 0 && need_copy) {
		j->writers++; /* not due while we copy */
		wb_ref(j);
		UNLOCK(fs);
		rc = fill_from_remote(fs, buf_str(&key), etag, size, compressed, j->data);
		LOCK(fs);
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
	int rc = resolve_idle(fs, path, &n);

	return rc < 0 ? rc : open_write_node(fs, path, n, flags, of);
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
		of->lazy = strdup(path);
		of->writable = 1;
		return of->lazy ? 0 : -ENOMEM;
	}
	return open_write_now(fs, path, flags, of);
}

/* The first write to a lazily opened file stages it. Unlocked. */
static int materialize(struct fs *fs, struct ofile *of)
{
	int rc;

	if (!of->lazy)
		return 0;
	LOCK(fs);
	rc = of->lazy ? open_write_now(fs, of->lazy, 0, of) : 0;
	if (rc == 0) {
		free(of->lazy);
		of->lazy = NULL;
	}
	UNLOCK(fs);
	return rc;
}

static int open_read(struct fs *fs, const char *path, struct ofile *of)
{
	struct node *n;
	struct buf key;
	char etag[S3_ETAG_MAX];
	uint64_t size;
	int compressed, rc;

	rc = meta_resolve(fs, path, &n);
	if (rc == 0 && n->kids)
		rc = -EISDIR;
	if (rc < 0)
		return rc;
	if (n->job && n->job->kind == WB_PUT && n->job->data) {
		of->fd = open(n->job->data, O_RDONLY | O_CLOEXEC);
		if (of->fd < 0)
			return -errno;
		of->job = n->job;
		wb_ref(n->job);
		return 0;
	}
	snprintf(etag, sizeof(etag), "%s", n->etag);
	size = n->a.size;
	compressed = n->compressed;
	/* the kernel may keep its page cache when the object did not change */
	of->keep_cache = n->kc_hash == hash_str(etag);
	n->kc_hash = hash_str(etag);
	log_debug("open '%s': etag %s, %llu bytes%s", path, etag, (unsigned long long)size,
		  of->keep_cache ? ", kernel cache kept" : "");
	rc = node_key(fs, n, &key);
	if (rc == 0) {
		UNLOCK(fs);
		rc = dcache_get(fs->dc, buf_str(&key), etag, size, compressed, &of->dc);
		LOCK(fs);
	}
	buf_release(&key);
	return rc;
}

static void ofile_free(struct fs *fs, struct ofile *of)
{
	free(of->lazy);
	if (of->fd >= 0)
		close(of->fd);
	if (of->dc)
		dcache_put(of->dc);
	if (of->job) {
		LOCK(fs);
		wb_unref(fs->wb, of->job);
		UNLOCK(fs);
	}
	free(of);
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
	UNLOCK(fs);
	if (rc < 0) {
		ofile_free(fs, of);
		return rc;
	}
	fi->fh = (uint64_t)(uintptr_t)of;
	fi->keep_cache = (unsigned)of->keep_cache;
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
	rc = check_key_len(fs, path) ?: meta_resolve_parent(fs, path, &dir, &name);
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
	UNLOCK(fs);
	if (rc < 0) {
		ofile_free(fs, of);
		return rc;
	}
	fi->fh = (uint64_t)(uintptr_t)of;
	return 0;
}

static int op_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	struct ofile *of = (struct ofile *)(uintptr_t)fi->fh;
	ssize_t n;

	(void)path;
	if (of->lazy && materialize(ctx_fs(), of) < 0)
		return -EIO;
	if (of->fd >= 0) {
		n = pread(of->fd, buf, size, off);
		return n < 0 ? -errno : (int)n;
	}
	n = dcache_read(of->dc, buf, size, (uint64_t)off);
	return (int)n;
}

static int op_write(const char *path, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *fs = ctx_fs();
	struct ofile *of = (struct ofile *)(uintptr_t)fi->fh;
	ssize_t n;

	(void)path;
	if (!of->writable)
		return -EBADF;
	if (of->lazy) {
		int rc = materialize(fs, of);

		if (rc < 0)
			return rc;
	}
	n = pwrite(of->fd, buf, size, off);
	if (n < 0) {
		int err = -errno;

		LOCK(fs); /* the staged copy now misses bytes the writer meant */
		wb_write_failed(fs->wb, of->job, err);
		UNLOCK(fs);
		return err;
	}
	LOCK(fs);
	of->dirty = 1;
	of->job->gen++;
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
	if (of && of->lazy)
		rc = size == 0 ? 0 : materialize(fs, of);
	if (rc < 0)
		return rc;
	if (of && of->lazy) { /* truncated to 0 before any write: no download */
		LOCK(fs);
		rc = open_write_now(fs, of->lazy, O_TRUNC, of);
		if (rc == 0) {
			free(of->lazy);
			of->lazy = NULL;
		}
		UNLOCK(fs);
		if (rc < 0)
			return rc;
	}
	if (!of || !of->writable) {
		LOCK(fs);
		rc = open_write_now(fs, path, size == 0 ? O_TRUNC : 0, &tmp);
		UNLOCK(fs);
		of = &tmp;
	}
	if (rc == 0 && ftruncate(of->fd, size) < 0)
		rc = -errno;
	LOCK(fs);
	if (rc == 0 && of->job) {
		if (size == 0)
			of->job->werr = 0; /* whatever failed before is gone */
		wb_truncated(fs->wb, of->job, (uint64_t)size);
		if (of->job->node) {
			of->job->node->a.size = (uint64_t)size;
			clock_gettime(CLOCK_REALTIME, &of->job->node->a.mtime);
		}
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
	if (of->writable && !of->lazy) {
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
		if (of->writable && of->job->gen != of->job->gen_done)
			wb_touch(fs->wb, of->job); /* journal it now: it must survive */
		if (of->job->writers > 1)
			log_debug("fsync of '%s' with other writers open", path);
		rc = wb_sync(fs->wb, of->job); /* runs even with writers open */
	} else if (meta_resolve(fs, path, &n) == 0 && n->job) {
		rc = wb_sync(fs->wb, n->job);
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
		wb_journal_now(fs->wb, of->job);
		UNLOCK(fs);
	}
	return rc;
}

/* --- rename ---------------------------------------------------------------------- */

/* Rename an uploaded file with no staged data: server-side copy with the
 * destination's headers, then delete.  Locked; drops the lock for the
 * requests; the caller re-resolves. */
static int rename_remote(struct fs *fs, const char *from, const char *to)
{
	struct node *n, *dir, *old_parent;
	struct wb_job *dj;
	const char *name;
	struct buf fk, tk;
	struct fattr a;
	char etag[S3_ETAG_MAX];
	uint64_t rsize = 0;
	int compressed = 0, rc;

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
		rc = -EAGAIN; /* the lock was dropped: start again */
		goto out;
	}
	/* and any other write of either key (a job's upload under a name it
	 * was renamed from): none starts until these are back */
	if (wb_key_wait(fs->wb, buf_str(&tk), 0) || wb_key_wait(fs->wb, buf_str(&fk), 0)) {
		rc = -EAGAIN;
		goto out;
	}
	wb_key_begin(fs->wb, buf_str(&tk), "rename's copy");
	wb_key_begin(fs->wb, buf_str(&fk), "rename's delete");
	if (dj)
		wb_ref(dj);
	UNLOCK(fs);
	rc = wb_server_copy(fs->wb, buf_str(&fk), buf_str(&tk), &a, etag, &rsize, &compressed);
	if (rc == 0)
		rc = s3_delete(fs->s3, buf_str(&fk));
	LOCK(fs);
	wb_key_end(fs->wb, buf_str(&tk));
	wb_key_end(fs->wb, buf_str(&fk));
	if (dj) {
		if (rc == 0 && !dj->cancelled && dj->kind == WB_DELETE)
			wb_cancel(fs->wb, dj);
		wb_unref(fs->wb, dj);
	}
	if (rc < 0) {
		log_error("cannot rename '%s' to '%s': %s", buf_str(&fk), buf_str(&tk),
			  strerror(-rc));
		goto out;
	}
	attrcache_del(fs->ac, buf_str(&fk));
	meta_deleted(fs, buf_str(&fk));
	dcache_forget(fs->dc, buf_str(&fk));
	/* both names: the old one is gone, the new one may have been cached */
	if (cdn_purge(fs->cdn, from + 1, 0) < 0 || cdn_purge(fs->cdn, to + 1, 0) < 0)
		log_error("cannot queue the CDN purge of '%s'", from);
	if (meta_resolve(fs, from, &n) < 0 || meta_resolve_parent(fs, to, &dir, &name) < 0)
		goto out; /* changed meanwhile: the next listing tells */
	if (tree_child(dir, name) && tree_child(dir, name)->job)
		wb_cancel(fs->wb, tree_child(dir, name)->job);
	if (n->job)
		wb_cancel(fs->wb, n->job); /* a pending chmod: applied by the copy */
	old_parent = n->parent;
	rc = tree_move(n, dir, name);
	if (rc == 0 && old_parent != dir && wb_keep_dir(fs->wb, old_parent) < 0)
		log_warn("cannot keep the directory of '%s'", from);
	if (rc == 0) {
		struct ac_entry e;

		memset(&e, 0, sizeof(e));
		snprintf(n->etag, sizeof(n->etag), "%s", etag);
		n->rsize = rsize;
		n->compressed = (unsigned)compressed;
		n->remote = 1;
		snprintf(e.etag, sizeof(e.etag), "%s", etag);
		e.rsize = rsize;
		e.a = n->a;
		e.compressed = compressed;
		attrcache_put(fs->ac, buf_str(&tk), &e);
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
		return -EAGAIN; /* the lock was dropped: start again */
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
		rc = check_key_len(fs, to) ?: meta_resolve(fs, from, &n);
		if (rc == 0)
			rc = meta_resolve_parent(fs, to, &dir, &name);
		if (rc == 0 && (flags & RENAME_NOREPLACE) && tree_child(dir, name))
			rc = -EEXIST;
		if (rc == 0 && strcmp(from, to) == 0)
			break;
		if (rc == 0 && n->kids)
			rc = ops_rename_dir(fs, from, to);
		else if (rc == 0)
			rc = rename_file(fs, from, to);
		if (rc != -EAGAIN)
			break;
	}
	UNLOCK(fs);
	return rc;
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
	rc = check_key_len(fs, path) ?: meta_resolve_parent(fs, path, &dir, &name);
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
	rc = open_write(fs, path, O_TRUNC, &of);
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

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct fs *fs = ctx_fs();
	double t = fs->conf.stat_ttl < 1.0 ? fs->conf.stat_ttl : 1.0;

	conn->max_write = 1 << 20;
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
	.write = op_write,
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
