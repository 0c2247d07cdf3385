/*
 * wb.c - write-back jobs, their journal and the upload workers (see wb.h).
 *
 * Owns: the job table (key -> job), the staging directory CACHE/staging,
 * the dispatcher thread and the upload work queue.
 *
 * Life of a job: created pending (wb_put/wb_meta/wb_delete), changed any
 * number of times (wb_touch: gen++, due pushed back), picked by the
 * dispatcher when due and no writer has it open (running = 1), run by a
 * worker without the lock, then either finished (gen unchanged: removed from
 * the table, node updated, journal removed, staged data adopted by the read
 * cache) or left pending (changed meanwhile, or failed: retried with
 * backoff, the error kept for fsync).
 *
 * Locking: fs->lock protects the table and every job field; wb->cond (with
 * fs->lock) wakes the dispatcher.  Workers hold a reference while running.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "attrcache.h"
#include "cdn.h"
#include "compress.h"
#include "conf.h"
#include "dcache.h"
#include "http.h"
#include "log.h"
#include "ops.h"
#include "rules.h"
#include "s3xml.h"
#include "wb.h"
#include "wq.h"

#define WB_MAX_BACKOFF 300.0
#define PROGRESS_EVERY 10.0
/* files up to this size are compressed into memory (a memfd), not a file */
#define ZMEM_MAX ((uint64_t)1 << 20)
/* A long-lived mount shares its attribute index every attr_index_every
 * seconds at most, once the write-back queue has been empty for AIDX_QUIET
 * (or half the interval, when that is shorter) (attrindex.c). */
#define AIDX_QUIET 30.0
/* The read-cache sidecars of uploaded files are written once the queue has
 * been empty this long (dcache_sync_lazy). */
#define LAZY_QUIET 2.0
/* Jobs that fall due within this long of each other start together: one
 * pass over the table per tick, not per file, while a tree is copied in
 * (an fsync, a flush or a job that is due at once still wakes it). */
#define DISPATCH_TICK 0.01
#define WB_RELEASE_WAIT 2
#define WB_COPY_PART ((uint64_t)512 << 20)
/* The journal entry of a job with staged data lives in this extended
 * attribute of its SEQ.data (xattr_journal=1): one file per upload, not
 * two.  Jobs without data, and file systems without user xattrs, use
 * SEQ.job files.  Either way the text is the same. */
#define JOB_XATTR "user.cdnfs.job"

struct wb {
	struct fs *fs;
	struct htab *jobs;     /* key -> job; fs->lock */
	char *dir;             /* CACHE/staging */
	uint64_t next_seq;
	struct wq *workers;
	pthread_t dispatcher;
	pthread_cond_t cond;   /* with fs->lock: wakes the dispatcher */
	int started, stop;
	double next_wake;
	int aidx_queued;        /* an index write is queued or running (fs->lock) */
	int lazy_queued;        /* a dcache_sync_lazy is queued or running (fs->lock) */
	uint64_t n_uploaded, n_failed, n_deleted;
	int xattr;              /* journal in xattrs (conf, until ENOTSUP) */
	struct htab *busy;      /* key -> what: the writes on their way (fs->lock) */
	char **frozen;          /* prefixes whose jobs wait (directory renames) */
	int nfrozen;
	struct wb_rename *renames; /* cut short by the last stop (wb_recover), by seq */
	size_t nrenames;
	struct moved *moved;    /* jobs wb_recover moved under a rename's new name */
	size_t nmoved;
};

/* A job a recovered rename moved: journaled again once the staging
 * directory has been read (a rewrite may create a SEQ.job that the reading
 * would then find a second time). */
struct moved {
	char *key;
	uint64_t seq;
	size_t ren; /* index in renames */
};

static void stream_kill(struct wb *wb, struct wb_job *j);

static void job_free(struct wb_job *j)
{
	free(j->sent_key);
	if (j->stream)
		stream_kill(g_fs->wb, j);
	if (j->after && --j->after->refs == 0)
		job_free(j->after);
	free(j->key);
	free(j->data);
	free(j);
}

void wb_ref(struct wb_job *j)
{
	j->refs++;
}

void wb_unref(struct wb *wb, struct wb_job *j)
{
	(void)wb;
	if (--j->refs == 0)
		job_free(j);
}

void wb_node_gone(struct wb_job *j)
{
	j->node = NULL;
}

struct wb_job *wb_find(struct wb *wb, const char *key)
{
	struct wb_job *j = htab_get(wb->jobs, key);

	return j && !j->cancelled ? j : NULL;
}

/* --- journal ---------------------------------------------------------------- */

static int job_path(struct wb *wb, uint64_t seq, const char *ext, struct buf *out)
{
	return buf_addf(out, "%s/%" PRIu64 ".%s", wb->dir, seq, ext);
}

static const char *kind_name(enum wb_kind k)
{
	return k == WB_PUT ? "put" : k == WB_META ? "meta" : "delete";
}

static uint64_t fnv1a(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;

	while (n--)
		h = (h ^ (unsigned char)*p++) * 1099511628211ULL;
	return h;
}

/* Rewrite an existing job file in place: no new inode per change (the cost
 * of a tree of small files is inode allocation, bench/ANALYSIS.md).  A
 * write(2) this small cannot be torn by the death of the process; a longer
 * old text past "end" is ignored by the reader and truncated here. */
static int journal_rewrite(struct wb_job *j, const char *path, const struct buf *b)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (pwrite(fd, b->data, b->len, 0) != (ssize_t)b->len)
		rc = errno ? -errno : -EIO;
	else if (b->len < j->jlen && ftruncate(fd, (off_t)b->len) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* A new job file appears whole or not at all (tmp + rename). */
static int journal_create(const char *path, const char *tmp, const struct buf *b)
{
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), rc = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, b->data, b->len) != (ssize_t)b->len)
		rc = errno ? -errno : -EIO;
	close(fd);
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0)
		unlink(tmp);
	return rc;
}

/* Record the job in its journal file.  Called with the lock held: a small
 * local write, the price of never losing a closed file.  Skipped when the
 * text is what the file already holds (a close or touch that only moved the
 * due time). */
static int journal_write(struct wb *wb, struct wb_job *j)
{
	struct buf b, path, tmp;
	uint64_t sum;
	int rc;

	buf_init(&b, 16384);
	buf_init(&path, 4096);
	buf_init(&tmp, 4096);
	rc = buf_addf(&b, "cdnfs-job 1\nkind %s\nkey ", kind_name(j->kind));
	rc = rc ?: sigv4_uri_encode(&b, j->key, 1);
	rc = rc ?: buf_addf(&b, "\ndata %d\nattr %o %u %u %lld %ld %" PRIu64 "\nexisted %d\nend\n",
			    j->data != NULL, (unsigned)j->a.mode, (unsigned)j->a.uid,
			    (unsigned)j->a.gid, (long long)j->a.mtime.tv_sec, j->a.mtime.tv_nsec,
			    j->a.size, j->existed);
	rc = rc ?: job_path(wb, j->seq, "job", &path);
	if (rc < 0 || j->werr)
		goto out;
	sum = fnv1a(b.data, b.len);
	if (j->journaled && j->jsum == sum && j->jlen == b.len)
		goto out;
	if (j->data && (j->jx || (!j->journaled && wb->xattr))) {
		/* setxattr replaces the whole value at once */
		rc = setxattr(j->data, JOB_XATTR, b.data, b.len, 0) < 0 ? -errno : 0;
		if (rc == 0) {
			j->jx = 1;
			if (j->jfile && unlink(buf_str(&path)) == 0)
				j->jfile = 0; /* it would win over the xattr */
			goto done;
		}
		if (rc == -ENOTSUP && wb->xattr) {
			wb->xattr = 0;
			log_info("'%s' has no user extended attributes: the journal uses a "
				 "file per upload", wb->dir);
		}
		j->jx = 0; /* a SEQ.job file now; it wins over the xattr */
		j->journaled = 0;
	}
	rc = j->journaled ? journal_rewrite(j, buf_str(&path), &b) : -ENOENT;
	if (rc == -ENOENT) {
		rc = job_path(wb, j->seq, "tmp", &tmp);
		rc = rc ?: journal_create(buf_str(&path), buf_str(&tmp), &b);
		j->jfile |= rc == 0;
	}
	if (rc < 0) {
		log_error("cannot write the journal entry for '%s': %s", j->key, strerror(-rc));
		j->journaled = 0;
		goto out;
	}
done:
	j->journaled = 1;
	j->jlen = b.len;
	j->jsum = sum;
out:
	buf_release(&b);
	buf_release(&path);
	buf_release(&tmp);
	return j->werr ? 0 : rc; /* a werr is the writer's to report */
}

static void journal_remove(struct wb *wb, uint64_t seq, int with_data)
{
	struct buf p;

	buf_init(&p, 4096);
	if (job_path(wb, seq, "job", &p) == 0)
		unlink(buf_str(&p));
	buf_reset(&p);
	if (job_path(wb, seq, "data", &p) == 0) {
		if (with_data)
			unlink(buf_str(&p));
		else /* the data file lives on (read cache, or held back); its
		      * entry may be an xattr also with xattr_journal=0 (written
		      * by an earlier mount) */
			(void)removexattr(buf_str(&p), JOB_XATTR);
	}
	buf_release(&p);
}

/* A rename is journaled as SEQ.ren from before its first request until its
 * last (and the rekey of what was staged under it) is done:
 *   cdnfs-rename 1 / from KEY / to KEY / dir 0|1 / attr ... / drop N N / end
 * (KEY URI-encoded; a directory's are its "dir/" prefixes; attr is what a
 * file's copy carries; drop the numbers of the jobs it makes obsolete, 0
 * for none).  The mount after a crash rolls it forward. */
int wb_rename_begin(struct wb *wb, const char *from, const char *to, int dir,
		    const struct fattr *a, uint64_t *seq)
{
	struct fattr none = { 0 };
	struct buf b, path, tmp;
	struct wb_job *jt = wb_find(wb, to), *jf = dir ? NULL : wb_find(wb, from);
	int rc;

	if (!a)
		a = &none;
	*seq = wb->next_seq++;
	buf_init(&b, 16384);
	buf_init(&path, 4096);
	buf_init(&tmp, 4096);
	rc = buf_addstr(&b, "cdnfs-rename 1\nfrom ");
	rc = rc ?: sigv4_uri_encode(&b, from, 1);
	rc = rc ?: buf_addstr(&b, "\nto ");
	rc = rc ?: sigv4_uri_encode(&b, to, 1);
	/* the jobs queued now that the copy replaces (to's upload or marker)
	 * or carries (from's chmod): the next mount drops them, by number (a
	 * job moved under to keeps its own) */
	rc = rc ?: buf_addf(&b, "\ndir %d\nattr %o %u %u %lld %ld %" PRIu64 "\ndrop %" PRIu64
			    " %" PRIu64 "\nend\n", dir != 0, (unsigned)a->mode, (unsigned)a->uid,
			    (unsigned)a->gid, (long long)a->mtime.tv_sec, a->mtime.tv_nsec, a->size,
			    jt ? jt->seq : 0, jf ? jf->seq : 0);
	rc = rc ?: job_path(wb, *seq, "ren", &path);
	rc = rc ?: job_path(wb, *seq, "tmp", &tmp);
	rc = rc ?: journal_create(buf_str(&path), buf_str(&tmp), &b);
	if (rc < 0)
		log_error("cannot journal the rename of '%s' to '%s': %s", from, to,
			  strerror(-rc));
	buf_release(&b);
	buf_release(&path);
	buf_release(&tmp);
	return rc;
}

void wb_rename_end(struct wb *wb, uint64_t seq)
{
	struct buf p;

	buf_init(&p, 4096);
	if (job_path(wb, seq, "ren", &p) == 0 && unlink(buf_str(&p)) < 0 && errno != ENOENT)
		log_warn("cannot remove '%s': %s", buf_str(&p), strerror(errno));
	buf_release(&p);
}

/* A multipart upload is journaled as staging/m.PID.N (the URI-encoded key
 * and the upload id, a line each) from its creation until it is completed
 * or aborted, so that the mount after a crash aborts it: S3 would keep an
 * unfinished upload's parts (and bill them) forever.  Written as z.m.* and
 * renamed, like a job file; drop_orphans removes a leftover z.* file.
 * Returns the path in *path (empty when it could not be written). */
static void mpu_journal_add(struct wb *wb, const char *key, const char *uid, struct buf *path)
{
	static unsigned long counter;
	unsigned long n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
	struct buf b, tmp;
	int fd = -1, rc;

	buf_init(&b, 8192);
	buf_init(&tmp, 4096);
	rc = sigv4_uri_encode(&b, key, 1);
	rc = rc ?: buf_addf(&b, "\n%s\n", uid ? uid : "-");
	rc = rc ?: buf_addf(path, "%s/m.%ld.%lu", wb->dir, (long)getpid(), n);
	rc = rc ?: buf_addf(&tmp, "%s/z.m.%ld.%lu", wb->dir, (long)getpid(), n);
	if (rc == 0)
		fd = open(buf_str(&tmp), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (rc < 0 || fd < 0 || write(fd, b.data, b.len) != (ssize_t)b.len ||
	    rename(buf_str(&tmp), buf_str(path)) < 0) {
		log_warn("cannot journal the multipart upload of '%s'", key);
		if (fd >= 0)
			unlink(buf_str(&tmp));
		buf_reset(path);
	}
	if (fd >= 0)
		close(fd);
	buf_release(&b);
	buf_release(&tmp);
}

/* The upload journaled at path (by mpu_journal_add with no id, before the
 * create) got its id.  The text only grows, so an overwrite in place can
 * not leave a shorter, damaged entry. */
static void mpu_journal_set(const struct buf *path, const char *key, const char *uid)
{
	struct buf b;
	int fd = path->len ? open(buf_str(path), O_WRONLY | O_CLOEXEC) : -1;

	buf_init(&b, 8192);
	if (fd >= 0 && (sigv4_uri_encode(&b, key, 1) < 0 || buf_addf(&b, "\n%s\n", uid) < 0 ||
			pwrite(fd, b.data, b.len, 0) != (ssize_t)b.len))
		log_warn("cannot journal the multipart upload of '%s'", key);
	if (fd >= 0)
		close(fd);
	buf_release(&b);
}

/* Abort the upload journaled in staging/NAME; the entry goes once S3 has
 * no such upload any more.  An entry with no id ("-": the process died
 * during the create) aborts the key's uploads begun since the entry was
 * written. */
static void mpu_abort_one(struct wb *wb, const char *name)
{
	struct buf path, key;
	char text[8192], *nl, *uid;
	ssize_t n = -1;
	int fd, rc = -EINVAL;

	buf_init(&path, 4096);
	buf_init(&key, 4096);
	fd = buf_addf(&path, "%s/%s", wb->dir, name) == 0
		     ? open(buf_str(&path), O_RDONLY | O_CLOEXEC) : -1;
	if (fd >= 0) {
		n = read(fd, text, sizeof(text) - 1);
		close(fd);
	}
	if (n > 0) {
		text[n] = '\0';
		nl = strchr(text, '\n');
		uid = nl ? nl + 1 : NULL;
		if (uid && (nl = strchr(uid, '\n')) && nl > uid) {
			struct stat sb;

			*nl = '\0';
			*strchr(text, '\n') = '\0';
			rc = s3_url_decode(&key, text, 0);
			if (rc == 0 && strcmp(uid, "-") == 0)
				rc = stat(buf_str(&path), &sb) < 0 ? -errno
					: s3_mpu_abort_since(wb->fs->s3, buf_str(&key), "",
							     sb.st_mtime - 60);
			else if (rc == 0)
				rc = s3_mpu_abort(wb->fs->s3, buf_str(&key), uid);
		}
	}
	if (rc == 0 || rc == -ENOENT || rc == -EINVAL) {
		if (rc == 0)
			log_info("aborted the multipart upload of '%s' left by the last stop",
				 buf_str(&key));
		unlink(buf_str(&path));
	} else {
		log_warn("cannot abort the multipart upload of '%s' left by the last stop: %s",
			 buf_str(&key), strerror(-rc));
	}
	buf_release(&path);
	buf_release(&key);
}

static void mpu_recover(struct wb *wb)
{
	DIR *d = opendir(wb->dir);
	struct dirent *de;

	while (d && (de = readdir(d)))
		if (strncmp(de->d_name, "m.", 2) == 0)
			mpu_abort_one(wb, de->d_name);
	if (d)
		closedir(d);
}

/* --- table ------------------------------------------------------------------ */

static void wake(struct wb *wb, double due)
{
	if (due < wb->next_wake)
		pthread_cond_signal(&wb->cond);
}

struct wb_job *wb_in_flight(struct wb_job *j)
{
	return j->running ? j : j->after && j->after->running ? j->after : NULL;
}

/* --- keys in flight ------------------------------------------------------------ */

/* Every write of a key (a job's request, a rename's copy or delete, a header
 * set by xattr) is checked in here, under fs->lock, before it goes out, and
 * out when it came back.  The dispatcher starts no job whose key has a
 * write on its way, and the other writers wait for the key (wb_key_wait)
 * before they check in: so at most one write per key is on its way, and the
 * one S3 keeps is the one sent last.  A second check-in is a bug of this
 * program's: it is logged (the tests fail on "BUG:") and the write goes on. */
static int busy_under_cb(const char *k, void *v, void *arg)
{
	(void)v;
	return strncmp(k, arg, strlen(arg)) == 0;
}

int wb_key_busy(struct wb *wb, const char *key, int prefix)
{
	if (!prefix)
		return htab_get(wb->busy, key) != NULL;
	return htab_foreach(wb->busy, busy_under_cb, (void *)key);
}

int wb_key_wait(struct wb *wb, const char *key, int prefix)
{
	int waited = 0;

	while (wb_key_busy(wb, key, prefix)) {
		pthread_cond_wait(&wb->fs->cond, &wb->fs->lock); /* wb_key_end broadcasts */
		waited = 1;
	}
	return waited;
}

struct busy {
	const char *what; /* of the first */
	int n;            /* more than 1 only after a "BUG:" */
};

void wb_key_begin(struct wb *wb, const char *key, const char *what)
{
	struct busy *b = htab_get(wb->busy, key);

	if (b) {
		log_error("BUG: %s of '%s' sent while a %s of it is on its way", what, key,
			  b->what);
		b->n++;
		return;
	}
	b = malloc(sizeof(*b));
	if (!b || htab_put(wb->busy, key, b, NULL) < 0) {
		free(b);
		log_warn("cannot track the %s of '%s': out of memory", what, key);
		return;
	}
	b->what = what;
	b->n = 1;
}

void wb_key_end(struct wb *wb, const char *key)
{
	struct busy *b = htab_get(wb->busy, key);
	struct wb_job *j;

	if (b && --b->n == 0)
		free(htab_del(wb->busy, key));
	j = htab_get(wb->jobs, key);
	if (j && !j->running)
		pthread_cond_signal(&wb->cond); /* it may start now */
	pthread_cond_broadcast(&wb->fs->cond);
}

int wb_freeze(struct wb *wb, const char *prefix)
{
	char *p = strdup(prefix), **nf = p ? realloc(wb->frozen, (wb->nfrozen + 1) * sizeof(p)) : NULL;

	if (!nf) {
		free(p);
		return -ENOMEM;
	}
	wb->frozen = nf;
	wb->frozen[wb->nfrozen++] = p;
	return 0;
}

void wb_thaw(struct wb *wb, const char *prefix)
{
	for (int i = 0; i < wb->nfrozen; i++) {
		if (strcmp(wb->frozen[i], prefix) != 0)
			continue;
		free(wb->frozen[i]);
		wb->frozen[i] = wb->frozen[--wb->nfrozen];
		pthread_cond_signal(&wb->cond);
		return;
	}
}

static int frozen(const struct wb *wb, const char *key)
{
	for (int i = 0; i < wb->nfrozen; i++)
		if (strncmp(key, wb->frozen[i], strlen(wb->frozen[i])) == 0)
			return 1;
	return 0;
}

/* j takes old's place in the table.  If old is being sent right now (a
 * DELETE of a file that is being created again), j must not start before
 * it ends, or S3 could see the PUT before the DELETE; nor if old itself was
 * still waiting for such a request (a file created again and rewritten
 * while the DELETE is in flight). */
static void supersede(struct wb *wb, struct wb_job *j, struct wb_job *old)
{
	struct wb_job *prev = wb_in_flight(old);

	if (prev) {
		if (j->after)
			wb_unref(wb, j->after);
		j->after = prev;
		wb_ref(prev); /* its end wakes the dispatcher (wb_key_end) */
	}
	wb_cancel(wb, old);
}

static int job_new(struct wb *wb, const char *key, enum wb_kind kind, struct wb_job **out)
{
	struct wb_job *j = calloc(1, sizeof(*j)), *old = NULL;

	*out = NULL;
	if (!j || !(j->key = strdup(key))) {
		free(j);
		return -ENOMEM;
	}
	j->kind = kind;
	j->seq = wb->next_seq++;
	j->gen = 1;
	j->refs = 1;
	j->nonseq = 1; /* until an O_TRUNC open says the writer starts at 0 */
	j->due = fs_now() + wb->fs->conf.writeback_delay;
	old = htab_get(wb->jobs, key);
	if (old) { /* replaces the pending job of the key */
		j->existed = old->existed || old->kind != WB_PUT;
		supersede(wb, j, old);
	}
	if (htab_put(wb->jobs, key, j, NULL) < 0) {
		job_free(j);
		return -ENOMEM;
	}
	*out = j;
	return 0;
}

int wb_put(struct wb *wb, struct node *n, const char *key, int with_data, struct wb_job **out)
{
	struct wb_job *j;
	struct buf p;
	int rc, fd;

	rc = job_new(wb, key, WB_PUT, &j);
	if (rc < 0)
		return rc;
	j->existed |= n->remote;
	j->node = n;
	j->a = n->a;
	n->job = j;
	if (with_data) {
		buf_init(&p, 4096);
		rc = job_path(wb, j->seq, "data", &p);
		fd = rc == 0 ? open(buf_str(&p), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)
			     : -1;
		if (fd < 0) {
			rc = rc ?: -errno;
			buf_release(&p);
			wb_cancel(wb, j);
			return rc;
		}
		close(fd);
		j->data = buf_detach(&p, NULL);
	}
	if (out)
		*out = j;
	return 0;
}

int wb_meta(struct wb *wb, struct node *n, const char *key)
{
	struct wb_job *j = n->job;
	int rc;

	if (j) { /* folds into whatever is pending */
		j->a = n->a;
		wb_touch(wb, j);
		return 0;
	}
	rc = job_new(wb, key, WB_META, &j);
	if (rc < 0)
		return rc;
	j->existed = 1;
	j->node = n;
	j->a = n->a;
	n->job = j;
	journal_write(wb, j);
	wake(wb, j->due);
	return 0;
}

int wb_delete(struct wb *wb, const char *key)
{
	struct wb_job *j;
	int rc = job_new(wb, key, WB_DELETE, &j);

	if (rc < 0)
		return rc;
	j->existed = 1;
	journal_write(wb, j);
	wake(wb, j->due);
	return 0;
}

void wb_touch(struct wb *wb, struct wb_job *j)
{
	double due = fs_now() + wb->fs->conf.writeback_delay;

	j->gen++;
	if (j->node)
		j->a = j->node->a;
	if (due > j->due && !j->syncing) /* an fsync waiting keeps it due now */
		j->due = due;
	if (j->writers == 0)
		journal_write(wb, j);
	wake(wb, j->due);
}

int wb_journal_now(struct wb *wb, struct wb_job *j)
{
	if (j->node)
		j->a = j->node->a;
	return journal_write(wb, j);
}

void wb_cancel(struct wb *wb, struct wb_job *j)
{
	if (htab_get(wb->jobs, j->key) == j)
		htab_del(wb->jobs, j->key);
	j->cancelled = 1;
	if (j->stream)
		stream_kill(wb, j);
	if (j->node)
		j->node->job = NULL;
	j->node = NULL;
	journal_remove(wb, j->seq, j->data != NULL);
	wb_unref(wb, j);
}

void wb_cancel_queued(struct wb *wb, const char *key)
{
	struct wb_job *j = wb_find(wb, key);

	if (j && !wb_in_flight(j))
		wb_cancel(wb, j);
}

int wb_rekey(struct wb *wb, struct wb_job *j, const char *key)
{
	char *nk = strdup(key);
	struct wb_job *old;

	if (!nk)
		return -ENOMEM;
	old = htab_get(wb->jobs, key);
	if (old && old != j) {
		j->existed = old->existed || old->kind != WB_PUT;
		supersede(wb, j, old);
	}
	if (j->stream)
		stream_kill(wb, j); /* started under the old name */
	htab_del(wb->jobs, j->key);
	free(j->key);
	j->key = nk;
	if (htab_put(wb->jobs, j->key, j, NULL) < 0)
		return -ENOMEM;
	wb_touch(wb, j);
	/* wb_touch journals only a closed file; an entry already there (closed,
	 * then opened again) must not go on naming the old key: the rename's
	 * DELETE of that key, journaled after it, would win at a replay */
	if (j->writers > 0 && j->journaled)
		(void)journal_write(wb, j);
	return 0;
}

void wb_wait_idle(struct wb *wb, struct wb_job *j)
{
	wb_ref(j);
	while (j->running)
		pthread_cond_wait(&wb->fs->cond, &wb->fs->lock);
	wb_unref(wb, j);
}

void wb_write_failed(struct wb *wb, struct wb_job *j, int err)
{
	if (j->werr)
		return;
	j->werr = err;
	if (j->stream)
		stream_kill(wb, j);
	log_error("cannot write '%s' to the cache directory: %s; it is not uploaded "
		  "until rewritten", j->key, strerror(-err));
	if (j->journaled)
		journal_remove(wb, j->seq, 0);
	j->journaled = 0;
	pthread_cond_broadcast(&wb->fs->cond);
}

int wb_sync(struct wb *wb, struct wb_job *j)
{
	uint64_t gen = j->gen;
	int rc, tries = j->tries, again = j->last_err != 0;

	if (j->werr)
		return j->werr;
	wb_ref(j);
	if (j->due != 0) { /* else whoever made it 0 has woken the dispatcher */
		j->due = 0;
		pthread_cond_signal(&wb->cond);
	}
	j->syncing++;
	/* a job whose last attempt failed is tried once more now, not answered
	 * with that old error (the fault may have cleared) */
	while (!j->cancelled && htab_get(wb->jobs, j->key) == j && !j->werr &&
	       (j->running || j->gen_done < gen || (again && j->tries == tries)))
		pthread_cond_wait(&wb->fs->cond, &wb->fs->lock);
	j->syncing--;
	rc = j->werr ? j->werr : j->gen_done >= gen && j->last_err ? -EIO : 0;
	wb_unref(wb, j);
	return rc;
}

struct each_ctx {
	int (*fn)(struct wb_job *j, void *arg);
	void *arg;
};

static int each_cb(const char *k, void *v, void *arg)
{
	struct each_ctx *ec = arg;

	(void)k;
	return ec->fn(v, ec->arg);
}

int wb_foreach(struct wb *wb, int (*fn)(struct wb_job *j, void *arg), void *arg)
{
	struct each_ctx ec = { fn, arg };

	return htab_foreach(wb->jobs, each_cb, &ec);
}

struct snap_ctx {
	struct wb_job **v;
	size_t n, cap;
	uint64_t from; /* snap_derived_cb: jobs queued at this seq or later */
};

static int snap_cb(const char *k, void *val, void *arg)
{
	struct snap_ctx *sc = arg;

	(void)k;
	if (sc->n == sc->cap) {
		size_t nc = sc->cap ? sc->cap * 2 : 64;
		struct wb_job **v = realloc(sc->v, nc * sizeof(*v));

		if (!v)
			return 1;
		sc->v = v;
		sc->cap = nc;
	}
	sc->v[sc->n++] = val;
	wb_ref(val);
	return 0;
}

/* The kernel delivers RELEASE after close() has returned: a deploy script's
 * flush right after its last close must still find those files closed.
 * Wait a little (WB_RELEASE_WAIT) for open writers to go away.  Locked. */
static void wait_writers(struct wb *wb, struct snap_ctx *sc)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += WB_RELEASE_WAIT;
	for (size_t i = 0; i < sc->n; i++)
		while (sc->v[i]->writers > 0 && !sc->v[i]->cancelled &&
		       pthread_cond_timedwait(&wb->fs->cond, &wb->fs->lock, &ts) == 0)
			;
}

/* snap_cb for the DELETEs job_run derived from the last round's uploads */
static int snap_derived_cb(const char *k, void *val, void *arg)
{
	struct snap_ctx *sc = arg;
	struct wb_job *j = val;

	return j->derived && j->seq >= sc->from ? snap_cb(k, val, arg) : 0;
}

int wb_sync_all(struct wb *wb)
{
	struct snap_ctx sc = { 0 };
	uint64_t from = wb->next_seq;
	int rc = 0;

	htab_foreach(wb->jobs, snap_cb, &sc);
	wait_writers(wb, &sc);
	/* an upload rekeyed on its way queues its old name's DELETE when it
	 * ends: the next round waits for those (bounded: a round's DELETEs
	 * derive nothing) */
	for (int round = 0; sc.n > 0 && round < 3; round++) {
		for (size_t i = 0; i < sc.n; i++)
			if (sc.v[i]->writers == 0)
				sc.v[i]->due = 0; /* never a file still open: not done */
		pthread_cond_signal(&wb->cond);
		for (size_t i = 0; i < sc.n; i++) {
			int r = sc.v[i]->writers ? 0 : wb_sync(wb, sc.v[i]);

			if (r < 0)
				rc = r;
			wb_unref(wb, sc.v[i]);
		}
		sc.n = 0;
		sc.from = from;
		from = wb->next_seq;
		htab_foreach(wb->jobs, snap_derived_cb, &sc);
	}
	for (size_t i = 0; i < sc.n; i++)
		wb_unref(wb, sc.v[i]);
	free(sc.v);
	return rc;
}

/* --- running a job (unlocked) -------------------------------------------------- */

struct snapshot {
	enum wb_kind kind;
	int existed;
	char *key;
	char *data;
	struct fattr a;
	uint64_t gen;
	int is_marker;
	/* results */
	char etag[S3_ETAG_MAX];
	uint64_t rsize;
	int compressed;
	const struct sigv4_kv *override; /* one header set by hand (xattr), or NULL */
	struct wb_stream *stream;        /* parts already sent, or NULL */
	int unchanged;                   /* S3 had these bytes already: no purge */
	int jx;                          /* the journal entry is data's xattr */
};

static int add_hdr(struct sigv4_kv *kv, size_t *n, size_t cap, const char *name,
		   const char *value)
{
	if (*n >= cap)
		return -E2BIG;
	kv[(*n)++] = (struct sigv4_kv){ name, value };
	return 0;
}

/* The headers of an upload of snapshot s: rules, POSIX metadata, encoding. */
/* Replace header name in kv (or add it); value NULL removes it. */
static int set_hdr(struct sigv4_kv *kv, size_t *n, size_t cap, const char *name,
		   const char *value)
{
	for (size_t i = 0; i < *n; i++)
		if (strcasecmp(kv[i].name, name) == 0) {
			if (value) {
				kv[i].value = value;
			} else {
				kv[i] = kv[*n - 1];
				(*n)--;
			}
			return 0;
		}
	if (!value)
		return 0;
	if (*n >= cap)
		return -E2BIG;
	kv[(*n)++] = (struct sigv4_kv){ name, value };
	return 0;
}

static int build_headers(struct wb *wb, struct snapshot *s, const char *encoding,
			 const char *orig_size, struct buf *st, struct sigv4_kv *kv, size_t *n,
			 size_t cap)
{
	struct rule_result rr;
	size_t plen = strlen(wb->fs->conf.prefix);
	int rc = 0;

	*n = 0;
	if (s->is_marker) {
		rc = add_hdr(kv, n, cap, "content-type", "application/x-directory");
	} else if (S_ISLNK(s->a.mode)) {
		rc = add_hdr(kv, n, cap, "content-type", "application/octet-stream");
	} else {
		rules_eval(wb->fs->rules, s->key + plen, &rr);
		rc = rules_headers(&rr, encoding, kv, n, cap);
		if (rc == 0 && orig_size)
			rc = add_hdr(kv, n, cap, "x-amz-meta-cdnfs-size", orig_size);
	}
	if (rc == 0)
		rc = meta_posix_headers(&s->a, st, kv, n, cap);
	if (rc == 0 && s->override)
		rc = set_hdr(kv, n, cap, s->override->name,
			     s->override->value && *s->override->value ? s->override->value
								      : NULL);
	return rc;
}

/* Compress into DIR/SEQ.z when the rule asks and it pays; *zfd = -1 if not. */
static int maybe_compress(struct wb *wb, struct snapshot *s, int fd, uint64_t size, int *zfd,
			  uint64_t *zlen, enum compress_kind *kind)
{
	struct rule_result rr;
	char tmpl[4200];
	int z;

	*zfd = -1;
	*kind = COMPRESS_NONE;
	if (s->is_marker || S_ISLNK(s->a.mode))
		return 0;
	rules_eval(wb->fs->rules, s->key + strlen(wb->fs->conf.prefix), &rr);
	if (!rules_should_compress(&rr, size))
		return 0;
	/* the compressed body of a small file in memory: a file in cache_dir
	 * costs an inode allocation per upload, the main cost of a tree of
	 * small files on some file systems (bench/ANALYSIS.md) */
	z = size <= ZMEM_MAX ? memfd_create("cdnfs-z", MFD_CLOEXEC) : -1;
	if (z < 0) {
		snprintf(tmpl, sizeof(tmpl), "%s/z.XXXXXX", wb->dir);
		z = mkostemp(tmpl, O_CLOEXEC);
		if (z < 0)
			return -errno;
		unlink(tmpl);
	}
	if (lseek(fd, 0, SEEK_SET) < 0 || compress_fd(rr.compress, fd, z, zlen) < 0) {
		close(z);
		return -EIO;
	}
	if (*zlen * 100 > size * 95) { /* does not pay: store as is */
		close(z);
		return 0;
	}
	*zfd = z;
	*kind = rr.compress;
	return 0;
}

struct part {
	struct wb *wb;
	const char *key, *upload_id;
	int partno, fd, rc;
	uint64_t off, len;
	char etag[S3_ETAG_MAX];
	pthread_mutex_t *lock;
	pthread_cond_t *cond;
	int *left;
};

static void part_run(void *arg)
{
	struct part *p = arg;

	p->rc = s3_mpu_part(p->wb->fs->s3, p->key, p->upload_id, p->partno, p->fd, p->off, p->len,
			    p->etag);
	pthread_mutex_lock(p->lock);
	if (--*p->left == 0)
		pthread_cond_signal(p->cond);
	pthread_mutex_unlock(p->lock);
}

static int upload_multipart(struct wb *wb, const char *key, const struct s3_hdrs *h, int fd,
			    uint64_t len, char etag[S3_ETAG_MAX])
{
	uint64_t psize = wb->fs->conf.multipart_size;
	size_t nparts = (size_t)((len + psize - 1) / psize);
	struct part *parts = calloc(nparts, sizeof(*parts));
	const char **etags = calloc(nparts, sizeof(*etags));
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
	char *uid = NULL;
	int rc, left = (int)nparts;
	struct buf mj;

	buf_init(&mj, 4096);
	if (parts && etags)
		mpu_journal_add(wb, key, NULL, &mj); /* before: a crash in the create */
	rc = parts && etags ? s3_mpu_create(wb->fs->s3, key, h, &uid) : -ENOMEM;
	if (rc < 0) {
		if (mj.len) /* s3_mpu_create cleaned up after itself */
			unlink(buf_str(&mj));
		goto out;
	}
	mpu_journal_set(&mj, key, uid);
	for (size_t i = 0; i < nparts; i++) {
		parts[i] = (struct part){ wb, key, uid, (int)i + 1, fd, 0, i * psize,
					  i + 1 < nparts ? psize : len - i * psize, "",
					  &lock, &cond, &left };
		if (wq_push(wb->fs->io, part_run, &parts[i]) < 0)
			part_run(&parts[i]);
	}
	pthread_mutex_lock(&lock);
	while (left > 0)
		pthread_cond_wait(&cond, &lock);
	pthread_mutex_unlock(&lock);
	for (size_t i = 0; i < nparts && rc == 0; i++) {
		rc = parts[i].rc;
		etags[i] = parts[i].etag;
	}
	if (rc == 0)
		rc = s3_mpu_complete(wb->fs->s3, key, uid, etags, nparts, etag);
	if (rc < 0 && s3_mpu_abort(wb->fs->s3, key, uid) < 0)
		log_warn("cannot abort the multipart upload of '%s'", key);
	else if (mj.len) /* completed or aborted: nothing left to clean */
		unlink(buf_str(&mj));
out:
	buf_release(&mj);
	free(uid);
	free(parts);
	free(etags);
	return rc;
}

static int run_meta(struct wb *wb, struct snapshot *s);

/* --- streaming: a large file's parts sent while it is being written ----------
 *
 * A writer that starts at 0 (new file, O_TRUNC) and writes sequentially gets
 * its full parts uploaded as it goes: CreateMultipartUpload once the file
 * passes multipart_size, then each part of multipart_size as soon as the
 * bytes after it exist, at most STREAM_INFLIGHT at a time, on the io pool.
 * At the upload after close only the rest goes up, then Complete.  Anything
 * that breaks the picture (a write elsewhere, truncate, rename, a failed
 * write, compression wanted) kills the stream: the upload is aborted when
 * its running parts end and the file goes up the ordinary way.  The upload
 * id is journaled (mpu_journal_add) until completed or aborted, so a crash
 * leaves nothing behind: the next mount aborts it (mpu_recover).  Fields are under
 * fs->lock; tasks read key/data/upload_id unlocked (set before they start). */

#define STREAM_INFLIGHT 4

struct wb_stream {
	struct wb_job *job;   /* the job it belongs to, NULL once detached */
	char *key, *data;     /* copies: the job may change or go */
	char *upload_id;      /* NULL until created */
	char *mpu_path;       /* its mpu_journal_add entry, or NULL */
	struct fattr a0;      /* the metadata sent at create (no mtime) */
	struct timespec wmtime; /* the last write's mtime, at the upload */
	uint64_t sent;        /* [0, sent) is queued or uploaded */
	size_t nparts, cap;
	char (*etags)[S3_ETAG_MAX];
	int inflight, creating, dead, failed;
};

struct stream_task {
	struct wb *wb;
	struct wb_stream *st;
	int partno;
	uint64_t off, len;
};

static void stream_free(struct wb_stream *st)
{
	free(st->key);
	free(st->data);
	free(st->upload_id);
	free(st->mpu_path);
	free(st->etags);
	free(st);
}

static void stream_pump(struct wb *wb, struct wb_job *j);

static int stream_create(struct wb *wb, struct wb_stream *st)
{
	struct sigv4_kv kv[RULES_HEADERS_MAX + 8];
	struct s3_hdrs h = { kv, 0 };
	struct snapshot s = { .kind = WB_PUT, .key = st->key, .a = st->a0 };
	struct buf b, mj;
	char *uid = NULL;
	int rc;

	buf_init(&b, 4096);
	rc = build_headers(wb, &s, NULL, NULL, &b, kv, &h.n, ARRAY_SIZE(kv));
	/* no mtime: it is not known yet.  When the file ends up with the mtime
	 * of its last write, the object's LastModified stands for it (no extra
	 * request); a mode, owner or mtime set later costs one metadata copy */
	for (size_t i = 0; rc == 0 && i < h.n; i++)
		if (strcmp(kv[i].name, "x-amz-meta-mtime") == 0 ||
		    strcmp(kv[i].name, "x-amz-meta-cdnfs-mtime") == 0)
			kv[i--] = kv[--h.n];
	buf_init(&mj, 4096);
	if (rc == 0)
		mpu_journal_add(wb, st->key, NULL, &mj); /* a crash must not leave parts */
	rc = rc ?: s3_mpu_create(wb->fs->s3, st->key, &h, &uid);
	buf_release(&b); /* after the create: the header values live in it */
	if (rc < 0) {
		if (mj.len)
			unlink(buf_str(&mj));
		buf_release(&mj);
		return rc;
	}
	mpu_journal_set(&mj, st->key, uid);
	st->upload_id = uid; /* before any other task of this stream starts */
	st->mpu_path = mj.len ? buf_detach(&mj, NULL) : NULL;
	buf_release(&mj);
	return 0;
}

static void stream_part_run(void *arg)
{
	struct stream_task *t = arg;
	struct wb *wb = t->wb;
	struct wb_stream *st = t->st;
	struct fs *fs = wb->fs;
	char etag[S3_ETAG_MAX] = "";
	int rc = 0, fd = -1, skip, create;

	pthread_mutex_lock(&fs->lock);
	skip = st->dead || st->failed;
	create = !st->upload_id;
	pthread_mutex_unlock(&fs->lock);
	if (!skip && create)
		rc = stream_create(wb, st);
	if (!skip && rc == 0) {
		fd = open(st->data, O_RDONLY | O_CLOEXEC);
		rc = fd < 0 ? -errno
			    : s3_mpu_part(fs->s3, st->key, st->upload_id, t->partno, fd, t->off,
					  t->len, etag);
	}
	if (fd >= 0)
		close(fd);
	pthread_mutex_lock(&fs->lock);
	if (rc < 0 && !st->failed) {
		st->failed = rc;
		log_warn("streaming upload of '%s' stopped: %s (it goes up after close)", st->key,
			 strerror(-rc));
	}
	if (rc == 0 && !skip)
		memcpy(st->etags[t->partno - 1], etag, S3_ETAG_MAX);
	if (create)
		st->creating = 0;
	st->inflight--;
	pthread_cond_broadcast(&fs->cond);
	if (st->job && !st->dead)
		stream_pump(wb, st->job);
	pthread_mutex_unlock(&fs->lock);
	free(t);
}

/* Queue part nparts+1 = [sent, sent+len).  Locked. */
static int stream_queue(struct wb *wb, struct wb_stream *st, uint64_t len)
{
	struct stream_task *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	if (st->nparts == st->cap) {
		size_t nc = st->cap ? st->cap * 2 : 16;
		char (*e)[S3_ETAG_MAX] = nc < 10000 ? realloc(st->etags, nc * S3_ETAG_MAX) : NULL;

		if (!e) {
			free(t);
			return -ENOMEM;
		}
		st->etags = e;
		st->cap = nc;
	}
	*t = (struct stream_task){ wb, st, (int)st->nparts + 1, st->sent, len };
	if (wq_push(wb->fs->io, stream_part_run, t) < 0) {
		free(t);
		return -ENOMEM;
	}
	st->etags[st->nparts][0] = '\0';
	st->nparts++;
	st->sent += len;
	st->inflight++;
	if (!st->upload_id)
		st->creating = 1; /* this first task creates the upload */
	return 0;
}

static void stream_pump(struct wb *wb, struct wb_job *j)
{
	struct wb_stream *st = j->stream;
	uint64_t psize = wb->fs->conf.multipart_size;

	while (st && !st->dead && !st->failed && !st->creating &&
	       st->inflight < STREAM_INFLIGHT && j->wend > st->sent + psize) {
		if (stream_queue(wb, st, psize) < 0 || !st->upload_id)
			break; /* the create comes first; the rest follows it */
	}
}

static void stream_abort_run(void *arg)
{
	struct wb_stream *st = arg;
	struct fs *fs = g_fs;

	pthread_mutex_lock(&fs->lock);
	while (st->inflight > 0)
		pthread_cond_wait(&fs->cond, &fs->lock);
	pthread_mutex_unlock(&fs->lock);
	if (st->upload_id && s3_mpu_abort(fs->s3, st->key, st->upload_id) < 0)
		log_warn("cannot abort the multipart upload of '%s' (the next mount tries again)",
			 st->key);
	else if (st->upload_id && st->mpu_path)
		unlink(st->mpu_path);
	stream_free(st);
}

/* Give up j's stream: aborted once its running parts end.  Locked. */
static void stream_kill(struct wb *wb, struct wb_job *j)
{
	struct wb_stream *st = j->stream;

	j->stream = NULL;
	if (!st)
		return;
	st->dead = 1;
	st->job = NULL;
	if (!wb || wq_push(wb->fs->io, stream_abort_run, st) < 0)
		log_warn("cannot abort the multipart upload of '%s' now", st->key);
}

/* Start a stream for j when it may have one.  Locked. */
static void stream_start(struct wb *wb, struct wb_job *j)
{
	struct fs *fs = wb->fs;
	struct wb_stream *st;
	struct rule_result rr;
	size_t plen = strlen(fs->conf.prefix);

	if (!j->data || j->kind != WB_PUT || !j->node || !S_ISREG(j->node->a.mode) ||
	    strncmp(j->key, fs->conf.prefix, plen) != 0)
		return;
	rules_eval(fs->rules, j->key + plen, &rr);
	if (rules_should_compress(&rr, j->wend)) {
		j->nonseq = 1; /* compressed after close: parts of the original are no use */
		return;
	}
	st = calloc(1, sizeof(*st));
	if (!st || !(st->key = strdup(j->key)) || !(st->data = strdup(j->data))) {
		if (st)
			stream_free(st);
		return;
	}
	st->job = j;
	st->a0 = j->node->a;
	j->stream = st;
}

void wb_written(struct wb *wb, struct wb_job *j, uint64_t off, uint64_t n)
{
	if (off != j->wend)
		j->nonseq = 1;
	j->wend = off + n;
	if (j->nonseq || j->werr) {
		if (j->stream)
			stream_kill(wb, j);
		return;
	}
	if (!j->stream && j->wend > wb->fs->conf.multipart_size)
		stream_start(wb, j);
	stream_pump(wb, j);
}

void wb_truncated(struct wb *wb, struct wb_job *j, uint64_t size)
{
	if (j->stream)
		stream_kill(wb, j);
	j->wend = 0;
	j->nonseq = size != 0;
}

/* The upload after close of a streamed file: wait for the parts in flight,
 * send the rest, complete, then set the final metadata (the create carried
 * the attributes of that time; mtime has moved since).  1 when the stream is
 * no use (the caller uploads the ordinary way), 0 or -errno.  Unlocked. */
static int run_stream(struct wb *wb, struct snapshot *s, int fd, uint64_t len)
{
	struct fs *fs = wb->fs;
	struct wb_stream *st = s->stream;
	uint64_t psize = fs->conf.multipart_size;
	size_t nrest, total;
	struct part *parts = NULL;
	const char **ev = NULL;
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
	int rc = 0, left;

	pthread_mutex_lock(&fs->lock);
	while (st->inflight > 0)
		pthread_cond_wait(&fs->cond, &fs->lock);
	if (st->failed || !st->upload_id || st->sent > len || strcmp(st->key, s->key) != 0)
		rc = 1;
	pthread_mutex_unlock(&fs->lock);
	if (rc)
		goto out;
	nrest = (size_t)((len - st->sent + psize - 1) / psize);
	total = st->nparts + nrest;
	parts = calloc(nrest ? nrest : 1, sizeof(*parts));
	ev = calloc(total, sizeof(*ev));
	if (!parts || !ev || total > 10000) {
		rc = -ENOMEM;
		goto out;
	}
	left = (int)nrest;
	for (size_t i = 0; i < nrest; i++) {
		uint64_t off = st->sent + i * psize;

		parts[i] = (struct part){ wb, s->key, st->upload_id, (int)(st->nparts + i) + 1, fd,
					  0, off, len - off < psize ? len - off : psize, "",
					  &lock, &cond, &left };
		if (wq_push(fs->io, part_run, &parts[i]) < 0)
			part_run(&parts[i]);
	}
	pthread_mutex_lock(&lock);
	while (left > 0)
		pthread_cond_wait(&cond, &lock);
	pthread_mutex_unlock(&lock);
	for (size_t i = 0; i < st->nparts; i++)
		ev[i] = st->etags[i];
	for (size_t i = 0; i < nrest && rc == 0; i++) {
		rc = parts[i].rc;
		ev[st->nparts + i] = parts[i].etag;
	}
	rc = rc ?: s3_mpu_complete(fs->s3, s->key, st->upload_id, ev, total, s->etag);
	if (rc == 0) {
		if (st->mpu_path)
			unlink(st->mpu_path);
		free(st->upload_id);
		st->upload_id = NULL; /* nothing left to abort */
		s->rsize = len;
		s->compressed = 0;
		if (s->a.mode != st->a0.mode || s->a.uid != st->a0.uid ||
		    s->a.gid != st->a0.gid || s->a.mtime.tv_sec != st->wmtime.tv_sec ||
		    s->a.mtime.tv_nsec != st->wmtime.tv_nsec)
			rc = run_meta(wb, s); /* cp -p, chmod: set what the create lacked */
	}
out:
	free(parts);
	free(ev);
	pthread_mutex_lock(&fs->lock);
	s->stream = NULL;
	st->dead = 1;
	if (wq_push(fs->io, stream_abort_run, st) < 0) /* aborts if still open, frees */
		log_warn("cannot abort the multipart upload of '%s' now", st->key);
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

/* The stream is no use for this upload (compressed, or a header set by
 * hand): abort it.  Unlocked. */
static void stream_drop(struct wb *wb, struct snapshot *s)
{
	struct wb_stream *st = s->stream;

	pthread_mutex_lock(&wb->fs->lock);
	s->stream = NULL;
	st->dead = 1;
	if (wq_push(wb->fs->io, stream_abort_run, st) < 0)
		log_warn("cannot abort the multipart upload of '%s' now", st->key);
	pthread_mutex_unlock(&wb->fs->lock);
}

/* Does the object already hold what header h says?  Content headers and
 * the POSIX metadata but the mtime; storage class STANDARD is not echoed. */
static int same_headers(const struct s3_obj *o, const struct s3_hdrs *h)
{
	for (size_t i = 0; i < h->n; i++) {
		const char *name = h->h[i].name, *want = h->h[i].value, *have = NULL;

		if (strcasecmp(name, "content-type") == 0)
			have = o->content_type;
		else if (strcasecmp(name, "cache-control") == 0)
			have = o->cache_control;
		else if (strcasecmp(name, "content-encoding") == 0)
			have = o->content_encoding;
		else if (strcasecmp(name, "content-disposition") == 0)
			have = o->content_disposition;
		else if (strcasecmp(name, "x-amz-storage-class") == 0)
			have = o->storage_class ? o->storage_class : "STANDARD";
		else if (strncasecmp(name, "x-amz-meta-", 11) == 0 &&
			 strcasecmp(name + 11, "mtime") != 0 &&
			 strcasecmp(name + 11, "cdnfs-mtime") != 0)
			have = s3_obj_meta(o, name + 11);
		else
			continue;
		if (!have || strcmp(have, want) != 0)
			return 0;
	}
	return 1;
}

/* An overwrite with the very bytes and headers S3 already has (Django's
 * ManifestStaticFilesStorage saves every processed file again on a re-run):
 * one HEAD instead of the PUT, and no CDN purge.  Only the new mtime is not
 * stored in S3 (README).  1 when S3 has it, with s->etag set.  Unlocked. */
static int already_there(struct wb *wb, struct snapshot *s, const struct s3_hdrs *h, int fd,
			 uint64_t len)
{
	struct s3_obj o;
	struct ac_entry e;
	char md5[33];
	int same;

	if (!s->existed || s->override || S_ISLNK(s->a.mode) || s3_md5_hex(fd, 0, len, md5) < 0)
		return 0;
	/* the HEAD only when the bytes are those of the last version this
	 * cache saw: a changed file costs its PUT alone */
	if (!attrcache_get(wb->fs->ac, s->key, NULL, 0, &e) || strcmp(e.etag, md5) != 0)
		return 0;
	memset(&o, 0, sizeof(o));
	if (s3_head(wb->fs->s3, s->key, &o) < 0)
		return 0;
	same = o.size == len && strcmp(o.etag, md5) == 0 && same_headers(&o, h);
	if (same)
		snprintf(s->etag, sizeof(s->etag), "%s", o.etag);
	s3_obj_release(&o);
	return same;
}

static int run_put(struct wb *wb, struct snapshot *s)
{
	struct sigv4_kv kv[RULES_HEADERS_MAX + 8];
	struct s3_hdrs h = { kv, 0 };
	struct buf st;
	struct stat sb;
	int fd = -1, zfd = -1, rc = 0;
	uint64_t zlen = 0, len = 0;
	enum compress_kind ck = COMPRESS_NONE;
	char osize[32];

	buf_init(&st, 4096);
	if (s->data) {
		fd = open(s->data, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &sb) < 0) {
			rc = -errno;
			goto out;
		}
		len = (uint64_t)sb.st_size;
		rc = maybe_compress(wb, s, fd, len, &zfd, &zlen, &ck);
	}
	if (s->stream && rc == 0 && zfd < 0 && !s->override) {
		int r = run_stream(wb, s, fd, len); /* disposes of the stream */

		if (r != 1) {
			rc = r;
			goto out;
		}
	} else if (s->stream) {
		stream_drop(wb, s);
	}
	snprintf(osize, sizeof(osize), "%" PRIu64, len);
	rc = rc ?: build_headers(wb, s, compress_encoding(ck), zfd >= 0 ? osize : NULL, &st, kv,
				 &h.n, ARRAY_SIZE(kv));
	if (rc < 0)
		goto out;
	s->compressed = zfd >= 0;
	s->rsize = zfd >= 0 ? zlen : len;
	if (s->rsize > wb->fs->conf.multipart_size)
		rc = upload_multipart(wb, s->key, &h, zfd >= 0 ? zfd : fd, s->rsize, s->etag);
	else if (fd >= 0 && already_there(wb, s, &h, zfd >= 0 ? zfd : fd, s->rsize))
		s->unchanged = 1;
	else
		rc = s3_put(wb->fs->s3, s->key, &h, zfd >= 0 ? zfd : fd, 0, s->rsize, s->etag);
out:
	if (fd >= 0)
		close(fd);
	if (zfd >= 0)
		close(zfd);
	buf_release(&st);
	return rc;
}

/* UploadPartCopy for objects above copy_threshold (CopyObject refuses more
 * than 5 GiB): parts of WB_COPY_PART (10,000 of them reach S3's 5 TiB), or
 * of multipart_size when the threshold was set below that. */
static int copy_multipart(struct wb *wb, const char *src, const char *dst,
			  const struct s3_hdrs *h, uint64_t size, char etag[S3_ETAG_MAX])
{
	const struct fs_conf *c = &wb->fs->conf;
	uint64_t psize = c->copy_threshold < WB_COPY_PART ? c->multipart_size : WB_COPY_PART;
	size_t nparts = (size_t)((size + psize - 1) / psize);
	char (*etags)[S3_ETAG_MAX] = calloc(nparts, S3_ETAG_MAX);
	const char **ev = calloc(nparts, sizeof(*ev));
	char *uid = NULL;
	int rc = etags && ev ? s3_mpu_create(wb->fs->s3, dst, h, &uid) : -ENOMEM;

	for (size_t i = 0; rc == 0 && i < nparts; i++) {
		uint64_t off = i * psize;
		uint64_t len = size - off < psize ? size - off : psize;

		rc = s3_mpu_part_copy(wb->fs->s3, src, dst, uid, (int)i + 1, off, len, etags[i]);
		ev[i] = etags[i];
	}
	if (rc == 0)
		rc = s3_mpu_complete(wb->fs->s3, dst, uid, ev, nparts, etag);
	if (rc < 0 && uid && s3_mpu_abort(wb->fs->s3, dst, uid) < 0)
		log_warn("cannot abort the multipart copy to '%s'", dst);
	free(uid);
	free(etags);
	free(ev);
	return rc;
}

/* Does dst's rule want another encoding than the object has?  A server-side
 * copy cannot change the body, so a rename from media/ to static/ (gzip) or
 * back must download and upload again. */
static int needs_recode(struct wb *wb, const struct snapshot *s, const char *enc,
			const struct s3_obj *o)
{
	struct rule_result rr;
	int have = enc ? compress_from_encoding(enc) : COMPRESS_NONE;
	int want;
	uint64_t size = o->size;

	if (s->is_marker || S_ISLNK(s->a.mode))
		return 0;
	if (enc && s3_obj_meta(o, "cdnfs-size"))
		size = strtoull(s3_obj_meta(o, "cdnfs-size"), NULL, 10);
	rules_eval(wb->fs->rules, s->key + strlen(wb->fs->conf.prefix), &rr);
	want = rules_should_compress(&rr, size) ? (int)rr.compress : COMPRESS_NONE;
	if (have < 0)
		return 0; /* an encoding cdnfs did not make: leave it alone */
	return want != have && (have != COMPRESS_NONE || want != COMPRESS_NONE);
}

/* Download src whole (decoded), then upload it as a new object s->key with
 * its rules.  Unlocked. */
static int recode_copy(struct wb *wb, const char *src, struct snapshot *s,
		       const struct s3_obj *o, int encoded)
{
	char raw[4200], dec[4200];
	struct s3_get_req g = { 0 };
	uint64_t got = 0, dlen = 0;
	int rfd = -1, dfd = -1, rc;

	snprintf(raw, sizeof(raw), "%s/r.XXXXXX", wb->dir);
	snprintf(dec, sizeof(dec), "%s/r.XXXXXX", wb->dir);
	rfd = mkostemp(raw, O_CLOEXEC);
	if (rfd < 0)
		return -errno;
	unlink(raw);
	g.fd = rfd;
	rc = s3_get(wb->fs->s3, src, &g, NULL, &got);
	if (rc == 0 && encoded) {
		dfd = mkostemp(dec, O_CLOEXEC);
		rc = dfd < 0 ? -errno : 0;
		if (rc == 0 && (lseek(rfd, 0, SEEK_SET) < 0 ||
				decompress_fd(compress_from_encoding(o->content_encoding), rfd, dfd,
					      UINT64_MAX, &dlen) < 0))
			rc = -EIO;
	} else if (rc == 0) {
		snprintf(dec, sizeof(dec), "/proc/self/fd/%d", rfd);
	}
	if (rc == 0) {
		s->data = dec;
		rc = run_put(wb, s);
		s->data = NULL;
	}
	if (dfd >= 0) {
		unlink(dec);
		close(dfd);
	}
	close(rfd);
	return rc;
}

/* Copy src to dst in S3 (src == dst: rewrite the metadata in place), with
 * every header dst's rules give, the POSIX metadata a (NULL: the object's
 * own), and the encoding the object has.  Objects over 5 GiB are copied by
 * parts.  Unlocked. */
static int server_copy(struct wb *wb, const char *src, const char *dst, const struct fattr *a,
		       const struct sigv4_kv *override, char etag[S3_ETAG_MAX], uint64_t *rsize,
		       int *compressed);

static const char *const posix_meta[] = { "mode", "uid", "gid", "mtime", "cdnfs-mtime",
					  "cdnfs-manual" };

/* The object's own headers, the base a metadata rewrite starts from, so a
 * chmod never loses a Content-Type or x-amz-meta-* another tool set. */
static int object_headers(const struct s3_obj *o, struct buf *st, struct sigv4_kv *kv,
			  size_t *n, size_t cap)
{
	int rc = 0;

	if (o->content_type)
		rc = set_hdr(kv, n, cap, "Content-Type", o->content_type);
	if (rc == 0 && o->cache_control)
		rc = set_hdr(kv, n, cap, "Cache-Control", o->cache_control);
	if (rc == 0 && o->content_disposition)
		rc = set_hdr(kv, n, cap, "Content-Disposition", o->content_disposition);
	if (rc == 0 && o->content_encoding)
		rc = set_hdr(kv, n, cap, "Content-Encoding", o->content_encoding);
	if (rc == 0 && o->storage_class && strcmp(o->storage_class, "STANDARD") != 0)
		rc = set_hdr(kv, n, cap, "x-amz-storage-class", o->storage_class);
	for (size_t i = 0; rc == 0 && i < o->nmeta; i++) {
		size_t off = st->len;
		int skip = 0;

		for (size_t k = 0; k < ARRAY_SIZE(posix_meta); k++)
			skip |= strcasecmp(o->meta[i].name, posix_meta[k]) == 0;
		if (skip)
			continue;
		rc = buf_addf(st, "x-amz-meta-%s%c", o->meta[i].name, 0);
		if (rc == 0) /* st was sized up front: pointers stay valid */
			rc = set_hdr(kv, n, cap, st->data + off, o->meta[i].value);
	}
	return rc;
}

/* Headers of a server-side copy or metadata rewrite: the object's own, then
 * what dst's rules set (Content-Type only when a rule names it, or the name
 * changed), except headers set by hand (user.cdnfs.cache_control ...:
 * remembered in x-amz-meta-cdnfs-manual), then the POSIX metadata, then a
 * header being set by hand now. */
static int copy_headers(struct wb *wb, struct snapshot *s, const struct s3_obj *o, int same_key,
			struct buf *st, struct sigv4_kv *kv, size_t *n, size_t cap)
{
	struct sigv4_kv rk[RULES_HEADERS_MAX];
	struct rule_result rr;
	const char *manual = s3_obj_meta(o, "cdnfs-manual");
	size_t rn = 0;
	int rc;

	*n = 0;
	rc = object_headers(o, st, kv, n, cap);
	if (rc == 0 && !s->is_marker && !S_ISLNK(s->a.mode)) {
		rules_eval(wb->fs->rules, s->key + strlen(wb->fs->conf.prefix), &rr);
		rc = rules_headers(&rr, NULL, rk, &rn, ARRAY_SIZE(rk));
	}
	for (size_t i = 0; rc == 0 && i < rn; i++) {
		if (conf_in_list(manual, rk[i].name))
			continue;
		if (strcasecmp(rk[i].name, "Content-Type") == 0 && same_key && o->content_type &&
		    rr.src_content_type && strncmp(rr.src_content_type, "detected", 8) == 0)
			continue;
		rc = set_hdr(kv, n, cap, rk[i].name, rk[i].value);
	}
	rc = rc ?: meta_posix_headers(&s->a, st, kv, n, cap);
	if (rc == 0 && s->override) {
		size_t off = st->len;

		rc = set_hdr(kv, n, cap, s->override->name,
			     *s->override->value ? s->override->value : NULL);
		if (conf_in_list(manual, s->override->name))
			rc = rc ?: buf_addf(st, "%s%c", manual, 0);
		else
			rc = rc ?: buf_addf(st, "%s%s%s%c", manual ? manual : "",
					    manual ? "," : "", s->override->name, 0);
		rc = rc ?: set_hdr(kv, n, cap, "x-amz-meta-cdnfs-manual", st->data + off);
	} else if (rc == 0 && manual) {
		rc = set_hdr(kv, n, cap, "x-amz-meta-cdnfs-manual", manual);
	}
	return rc;
}

int wb_server_copy(struct wb *wb, const char *src, const char *dst, const struct fattr *a,
		   char etag[S3_ETAG_MAX], uint64_t *rsize, int *compressed)
{
	return server_copy(wb, src, dst, a, NULL, etag, rsize, compressed);
}

int wb_set_header(struct wb *wb, const char *key, const struct fattr *a, const char *name,
		  const char *value, char etag[S3_ETAG_MAX])
{
	struct sigv4_kv ov = { name, value };
	uint64_t rsize;
	int comp;

	return server_copy(wb, key, key, a, &ov, etag, &rsize, &comp);
}

static int server_copy(struct wb *wb, const char *src, const char *dst, const struct fattr *a,
		       const struct sigv4_kv *override, char etag[S3_ETAG_MAX], uint64_t *rsize,
		       int *compressed)
{
	struct s3_obj o;
	struct sigv4_kv kv[RULES_HEADERS_MAX + 8];
	struct s3_hdrs h = { kv, 0 };
	struct snapshot s = { 0 };
	struct buf st;
	const char *enc, *osize;
	int rc = s3_head(wb->fs->s3, src, &o);

	/* copy_headers keeps pointers into st: reserve it all up front */
	buf_init(&st, 65536);
	if (rc == 0 && (buf_add(&st, "", 0) < 0 || buf_reserve(&st, 60000) < 0))
		rc = -ENOMEM;
	if (rc < 0)
		goto out;
	s.key = (char *)dst;
	s.override = override;
	s.is_marker = dst[0] && dst[strlen(dst) - 1] == '/';
	if (a)
		s.a = *a;
	else
		meta_obj_attr(wb->fs, &o, s.is_marker ? S_IFDIR : S_IFREG, &s.a, NULL);
	enc = o.content_encoding;
	osize = enc ? s3_obj_meta(&o, "cdnfs-size") : NULL;
	if (needs_recode(wb, &s, osize ? enc : NULL, &o)) {
		rc = recode_copy(wb, src, &s, &o, osize != NULL);
		snprintf(etag, S3_ETAG_MAX, "%s", s.etag);
		*rsize = s.rsize;
		*compressed = s.compressed;
		goto out;
	}
	rc = copy_headers(wb, &s, &o, strcmp(src, dst) == 0, &st, kv, &h.n, ARRAY_SIZE(kv));
	if (rc == 0 && o.size > wb->fs->conf.copy_threshold)
		rc = copy_multipart(wb, src, dst, &h, o.size, etag);
	else if (rc == 0)
		rc = s3_copy(wb->fs->s3, src, dst, &h, etag);
	*rsize = o.size;
	*compressed = osize != NULL;
out:
	s3_obj_release(&o);
	buf_release(&st);
	return rc;
}

static int run_meta(struct wb *wb, struct snapshot *s)
{
	return wb_server_copy(wb, s->key, s->key, &s->a, s->etag, &s->rsize, &s->compressed);
}

static double backoff(int tries)
{
	double d = 1.0;

	for (int i = 1; i < tries && d < WB_MAX_BACKOFF; i++)
		d *= 2;
	return d < WB_MAX_BACKOFF ? d : WB_MAX_BACKOFF;
}

/* Update the tree and caches after a successful attempt. Locked. */
static void finish(struct wb *wb, struct wb_job *j, struct snapshot *s)
{
	struct node *n = j->node;
	struct ac_entry e;

	wb->fs->aidx_dirty = 1;
	if (s->kind == WB_DELETE) {
		attrcache_del(wb->fs->ac, s->key);
		meta_deleted(wb->fs, s->key); /* a listing in flight may still show it */
		wb->n_deleted++;
	} else {
		log_debug("'%s' is in S3: etag %s, %llu bytes", s->key, s->etag,
			  (unsigned long long)s->a.size);
		memset(&e, 0, sizeof(e));
		snprintf(e.etag, sizeof(e.etag), "%s", s->etag);
		e.rsize = s->rsize;
		e.a = s->a;
		e.compressed = s->compressed;
		attrcache_put(wb->fs->ac, s->key, &e);
		if (n) {
			n->remote = 1;
			n->known = 1;
			n->compressed = (unsigned)s->compressed;
			n->rsize = s->rsize;
			snprintf(n->etag, sizeof(n->etag), "%s", s->etag);
			n->seen = fs_now();
			n->job = NULL;
		}
		wb->n_uploaded++;
	}
	htab_del(wb->jobs, j->key);
	j->node = NULL;
	j->cancelled = 1;
}

/* What the CDN may hold for the key became wrong: an overwrite (only now
 * that the new object is durable, or the edge would fetch the old one
 * again), a metadata change, a delete.  New keys purge nothing. */
static void purge(struct wb *wb, const struct snapshot *s)
{
	struct fs *fs = wb->fs;
	size_t plen = strlen(fs->conf.prefix);

	if (!fs->cdn || s->is_marker || strncmp(s->key, fs->conf.prefix, plen) != 0)
		return;
	if (s->kind == WB_PUT && (!s->existed || s->unchanged))
		return;
	if (cdn_purge(fs->cdn, s->key + plen, 0) < 0)
		log_error("cannot queue the CDN purge of '%s'", s->key);
}

/* After finish(): the staged data becomes the cached copy, the journal
 * entry goes, the CDN is told.  Local file operations only. */
static void complete_files(struct wb *wb, struct wb_job *j, const struct snapshot *s)
{
	struct fs *fs = wb->fs;

	/* A SEQ.job entry goes first: a crash between the two leaves a data
	 * file with no entry (dropped by the next mount), never an entry whose
	 * data the read cache has taken (retried by the next mount forever).
	 * An entry in the data file's xattr leaves staging with the file, in
	 * one rename or unlink (recovery reads staging only); the read cache
	 * removes the attribute later, off the upload's path.  (A crash before
	 * that rename uploads the file again, as it did before.) */
	if (!s->jx)
		journal_remove(wb, j->seq, 0);
	if (s->data && (!S_ISREG(s->a.mode) ||
			dcache_adopt(fs->dc, s->key, s->etag, s->a.size, s->data,
				     s->jx ? JOB_XATTR : NULL) < 0))
		unlink(s->data);
	if (s->kind == WB_DELETE)
		dcache_forget(fs->dc, s->key);
}

void wb_drop_writer(struct wb *wb, struct wb_job *j)
{
	j->writers--;
	wake(wb, j->due);
}

void wb_close_writer(struct wb *wb, struct wb_job *j)
{
	struct snapshot s = { 0 };

	j->writers--;
	pthread_cond_broadcast(&wb->fs->cond); /* a flush may wait for this */
	if (j->writers > 0 || j->running || j->cancelled || j->gen_done != j->gen ||
	    j->last_err || j->werr || !j->up_etag[0]) {
		wb_touch(wb, j);
		return;
	}
	/* S3 already has exactly this version (an fsync uploaded it) */
	s.kind = j->kind;
	s.existed = j->existed;
	s.key = j->key;
	s.data = j->data;
	s.a = j->a;
	s.is_marker = 0;
	s.jx = j->jx;
	snprintf(s.etag, sizeof(s.etag), "%s", j->up_etag);
	s.rsize = j->up_rsize;
	s.compressed = j->up_compressed;
	finish(wb, j, &s);
	purge(wb, &s);
	complete_files(wb, j, &s);
	wb_unref(wb, j); /* the table's reference */
}

/* An implicit directory (one S3 shows only through its children) that
 * became empty gets a marker, so that it stays.  Every directory made
 * through cdnfs has a marker from its mkdir on (README "What differs").
 * Locked. */
int wb_keep_dir(struct wb *wb, struct node *dir)
{
	struct buf key;
	struct wb_job *j;
	int rc;

	if (!dir || !dir->parent || dir->remote || dir->job || !dir->kids ||
	    htab_count(dir->kids) > 0)
		return 0;
	buf_init(&key, 8192);
	rc = tree_key(wb->fs, dir, 1, &key);
	rc = rc ?: wb_put(wb, dir, buf_str(&key), 0, &j);
	if (rc == 0)
		wb_touch(wb, j);
	buf_release(&key);
	return rc;
}

/* An upload that was rekeyed while it ran (renamed on its way) left its bytes,
 * or may have (a failed PUT), under its old name: queue that key's DELETE,
 * marked derived so that a wb_sync_all under way waits for it too.  Locked. */
static void delete_old_name(struct wb *wb, const char *key)
{
	struct wb_job *d;

	if (htab_get(wb->jobs, key))
		return; /* a job of the key (a new file there) replaces the object */
	if (wb_delete(wb, key) < 0) {
		log_error("cannot queue the delete of '%s'", key);
		return;
	}
	if ((d = htab_get(wb->jobs, key)))
		d->derived = 1;
}

static void job_run(void *arg)
{
	struct wb_job *j = arg;
	struct wb *wb;
	struct fs *fs = g_fs;
	struct snapshot s = { 0 };
	int rc, done = 0;

	pthread_mutex_lock(&fs->lock);
	wb = fs->wb;
	s.kind = j->kind;
	s.existed = j->existed;
	s.key = j->sent_key; /* checked in by the dispatcher: j->key may have
			      * changed since (a rename) */
	j->sent_key = NULL;
	s.data = j->data ? strdup(j->data) : NULL;
	s.a = j->a;
	s.gen = j->gen;
	s.is_marker = s.key && s.key[0] && s.key[strlen(s.key) - 1] == '/';
	if (s.kind == WB_PUT && j->stream) { /* the upload takes it over */
		s.stream = j->stream;
		s.stream->job = NULL;
		s.stream->wmtime = j->wmtime;
		j->stream = NULL;
	}
	pthread_mutex_unlock(&fs->lock);

	if (!s.key || (j->data && !s.data)) {
		rc = -ENOMEM;
	} else if (s.kind == WB_DELETE) {
		rc = s3_delete(fs->s3, s.key);
	} else if (s.kind == WB_META) {
		rc = run_meta(wb, &s);
	} else {
		rc = run_put(wb, &s);
	}

	pthread_mutex_lock(&fs->lock);
	if (s.key)
		wb_key_end(wb, s.key);
	j->running = 0;
	j->tries++;
	j->gen_done = s.gen;
	j->last_err = rc;
	if (rc == -ENOENT && s.kind == WB_META && !j->cancelled && strcmp(j->key, s.key) == 0) {
		/* the object is gone (another client deleted it, or a rename
		 * that a crash cut short did): nothing is left to change, and
		 * trying again would fail forever */
		log_warn("'%s' is no longer in S3: its metadata change is dropped", s.key);
		j->last_err = 0;
		wb_cancel(wb, j);
	} else if (rc < 0) {
		if (s.kind == WB_PUT && !j->cancelled) {
			/* a PUT that failed may have been applied all the same (a
			 * timeout or a 5xx after the body went out): the key may hold
			 * an object, which an unlink or rename before the next try
			 * must delete (a DELETE of no object costs one request) */
			if (strcmp(j->key, s.key) != 0) {
				delete_old_name(wb, s.key);
			} else if (!j->existed) {
				j->existed = 1;
				if (j->journaled)
					journal_write(wb, j);
			}
		}
		j->due = fs_now() + backoff(j->tries);
		wb->n_failed++;
		log_error("cannot %s '%s': %s (retrying in %.0f s)",
			  s.kind == WB_DELETE ? "delete" : "upload", s.key, strerror(-rc),
			  backoff(j->tries));
	} else if (j->gen == s.gen && !j->cancelled && strcmp(j->key, s.key) == 0 &&
		   j->writers > 0) {
		/* fsync of a file still open: S3 has this version, but the
		 * writer may go on; the job completes when it closes */
		snprintf(j->up_etag, sizeof(j->up_etag), "%s", s.etag);
		j->up_rsize = s.rsize;
		j->up_compressed = s.compressed;
		j->due = fs_now() + fs->conf.writeback_delay;
	} else if (j->gen == s.gen && !j->cancelled && strcmp(j->key, s.key) == 0) {
		finish(wb, j, &s);
		purge(wb, &s); /* queued before waiters (a flush) wake up */
		s.jx = j->jx;
		done = 1;
	} else if (!j->cancelled && strcmp(j->key, s.key) == 0 && s.kind == WB_PUT) {
		/* changed while uploading: the key has an object now (an unlink
		 * or rename before the next upload must delete it, and the next
		 * upload is an overwrite) */
		log_debug("'%s' changed while it was uploaded: again later", s.key);
		if (!j->existed) {
			j->existed = 1;
			if (j->journaled)
				journal_write(wb, j);
		}
	} else if (!j->cancelled && strcmp(j->key, s.key) != 0 && s.kind == WB_PUT) {
		/* renamed while uploading: the old name must go */
		delete_old_name(wb, s.key);
	}
	pthread_cond_broadcast(&fs->cond);
	if (strcmp(j->key, s.key) != 0)
		pthread_cond_signal(&wb->cond); /* renamed meanwhile: a job of its new
						 * key may wait for it (one of s.key
						 * was woken by wb_key_end) */
	else if (!done)
		wake(wb, j->due); /* again, now or after a backoff */
	pthread_mutex_unlock(&fs->lock);

	if (done)
		complete_files(wb, j, &s);
	pthread_mutex_lock(&fs->lock);
	j->refs -= done ? 2 : 1; /* the worker's, and the table's when done */
	if (j->refs == 0)
		job_free(j);
	pthread_mutex_unlock(&fs->lock);
	free(s.key);
	free(s.data);
}

/* --- dispatcher ------------------------------------------------------------------ */

struct pick_ctx {
	struct wb *wb;
	double now, next;
	struct wb_job *ready[256];
	int n;
};

static int pick_cb(const char *k, void *v, void *arg)
{
	struct wb_job *j = v;
	struct pick_ctx *pc = arg;

	(void)k;
	if (j->running || j->werr || (j->writers > 0 && j->due > 0)) /* due 0: an fsync */
		return 0;
	if (j->after && j->after->running)
		return 0; /* the job it replaced is still being sent */
	if (j->due <= pc->now) {
		/* looked up for due jobs only: the others are most of the
		 * table during a copy of a tree */
		if (wb_key_busy(pc->wb, j->key, 0) || frozen(pc->wb, j->key))
			return 0; /* woken by wb_key_end, wb_thaw */
		if (pc->n == (int)ARRAY_SIZE(pc->ready))
			return 1;
		pc->ready[pc->n++] = j;
	} else if (j->due < pc->next) {
		pc->next = j->due;
	}
	return 0;
}

volatile sig_atomic_t wb_status_requested;

struct progress_ctx {
	uint64_t files, bytes, running, failing;
};

static int progress_cb(const char *k, void *v, void *arg)
{
	struct wb_job *j = v;
	struct progress_ctx *pc = arg;

	(void)k;
	pc->files++;
	pc->bytes += j->kind == WB_PUT ? j->a.size : 0;
	pc->running += j->running != 0;
	pc->failing += j->last_err != 0;
	return 0;
}

/* One summary line per PROGRESS_EVERY while uploads are pending, so a long
 * deploy shows it is moving; and the status JSON on SIGUSR1.  Locked; drops
 * the lock to log the status, and then returns 1. */
static int progress(struct wb *wb, double *last, uint64_t *last_up)
{
	struct fs *fs = wb->fs;
	struct progress_ctx pc = { 0 };
	struct http_stats hs;
	double now = fs_now();
	struct buf json;

	if (wb_status_requested) {
		wb_status_requested = 0;
		pthread_mutex_unlock(&fs->lock);
		buf_init(&json, 1 << 20);
		if (ops_status_json(fs, &json) == 0)
			log_info("status: %s", buf_str(&json));
		buf_release(&json);
		pthread_mutex_lock(&fs->lock);
		return 1; /* a signal meanwhile (a stop, a job that may start) was
			   * not waited for: look again */
	}
	if (now - *last < PROGRESS_EVERY)
		return 0;
	htab_foreach(wb->jobs, progress_cb, &pc);
	http_get_stats(fs->http, &hs);
	if (pc.files)
		log_info("pending: %" PRIu64 " change%s (%.1f MB), %" PRIu64 " uploading, %.1f MB/s, "
			 "%" PRIu64 " failing",
			 pc.files, pc.files == 1 ? "" : "s", (double)pc.bytes / 1e6, pc.running,
			 (double)(hs.bytes_up - *last_up) / 1e6 / (now - *last), pc.failing);
	*last = now;
	*last_up = hs.bytes_up;
	return 0;
}

/* The periodic write of the attribute index, on an upload worker. */
static void aidx_job(void *arg)
{
	struct wb *wb = arg;

	aidx_save(wb->fs);
	pthread_mutex_lock(&wb->fs->lock);
	wb->aidx_queued = 0;
	pthread_mutex_unlock(&wb->fs->lock);
}

/* The read cache's deferred sidecars, on an upload worker. */
static void lazy_job(void *arg)
{
	struct wb *wb = arg;

	dcache_sync_lazy(wb->fs->dc);
	pthread_mutex_lock(&wb->fs->lock);
	wb->lazy_queued = 0;
	pthread_mutex_unlock(&wb->fs->lock);
}

static void *dispatch_main(void *arg)
{
	struct wb *wb = arg;
	struct fs *fs = wb->fs;
	double last_progress = fs_now(), last_index = fs_now(), busy = fs_now();
	uint64_t last_up = 0;

	pthread_mutex_lock(&fs->lock);
	while (!wb->stop) {
		struct pick_ctx pc = { .wb = wb, .now = fs_now(), .next = fs_now() + 1.0 };
		struct timespec ts;
		double wakeat;

		if (progress(wb, &last_progress, &last_up))
			continue;
		if (htab_count(wb->jobs) > 0)
			busy = pc.now;
		else if (fs->aidx_dirty && !wb->aidx_queued &&
			 pc.now - last_index >= fs->conf.attr_index_every &&
			 pc.now - busy >= (fs->conf.attr_index_every / 2 < AIDX_QUIET ?
					   fs->conf.attr_index_every / 2 : AIDX_QUIET)) {
			/* on an upload worker, not here: uploads that arrive
			 * meanwhile must not wait for it (wq_free at shutdown
			 * waits for it, before the unmount's own write) */
			last_index = pc.now;
			wb->aidx_queued = wq_push(wb->workers, aidx_job, wb) == 0;
		}
		if (htab_count(wb->jobs) == 0 && !wb->lazy_queued && pc.now - busy >= LAZY_QUIET &&
		    dcache_lazy_count(fs->dc) > 0)
			wb->lazy_queued = wq_push(wb->workers, lazy_job, wb) == 0;
		htab_foreach(wb->jobs, pick_cb, &pc);
		for (int i = 0; i < pc.n; i++) {
			struct wb_job *j = pc.ready[i];

			j->sent_key = strdup(j->key);
			if (!j->sent_key)
				continue; /* tried again at the next pass */
			j->running = 1;
			wb_key_begin(wb, j->sent_key, kind_name(j->kind));
			wb_ref(j);
			if (wq_push(wb->workers, job_run, j) < 0) {
				j->running = 0;
				wb_key_end(wb, j->sent_key);
				free(j->sent_key);
				j->sent_key = NULL;
				wb_unref(wb, j);
			}
		}
		if (pc.n == (int)ARRAY_SIZE(pc.ready))
			continue;
		if (pc.next < pc.now + DISPATCH_TICK)
			pc.next = pc.now + DISPATCH_TICK;
		wb->next_wake = pc.next;
		clock_gettime(CLOCK_REALTIME, &ts);
		wakeat = (double)ts.tv_sec + ts.tv_nsec / 1e9 + (pc.next - fs_now());
		ts.tv_sec = (time_t)wakeat;
		ts.tv_nsec = (long)((wakeat - (double)ts.tv_sec) * 1e9);
		pthread_cond_timedwait(&wb->cond, &fs->lock, &ts);
	}
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

/* --- lifecycle -------------------------------------------------------------------- */

/* The staging directory, made anew at each mount while it is empty, in a
 * block group of its own.  On an ext4 without a journal, allocating an inode
 * steps over each inode of its group freed in the last minute (five while
 * its inode table block is dirty: ext4's recently_deleted()), so after a
 * cache was deleted (a cold-cache run, a cleared cache, evictions) every
 * upload into the same group paid for all of them: 37 % of cdnfs's CPU for
 * a 2,000-file cp -a.  ext4 places a new
 * directory under a "top" directory (chattr +T) like one at the root, in a
 * group with few directories, from a start given by the name's hash (a new
 * random name each time), most likely away from that churn.  Elsewhere the
 * flag calls fail and change nothing. */
static int staging_make(const char *dir)
{
	char *tmp = NULL, *parent = strdup(dir), *slash = parent ? strrchr(parent, '/') : NULL;
	int fd = -1, flags;

	if (slash && slash != parent) {
		*slash = '\0';
		fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (fd >= 0) {
		DIR *d;
		struct dirent *de;

		if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && !(flags & FS_TOPDIR_FL)) {
			flags |= FS_TOPDIR_FL;
			(void)ioctl(fd, FS_IOC_SETFLAGS, &flags);
		}
		/* a crash between the mkdir and the rename below left one (the
		 * cache directory's lock is ours: no other mount makes them) */
		d = fdopendir(dup(fd));
		while (d && (de = readdir(d)))
			if (strncmp(de->d_name, "staging.new.", 12) == 0)
				(void)unlinkat(fd, de->d_name, AT_REMOVEDIR);
		if (d)
			closedir(d);
		close(fd);
	}
	free(parent);
	(void)rmdir(dir); /* only when empty: pending work stays where it is */
	if (asprintf(&tmp, "%s.new.XXXXXX", dir) >= 0) {
		if (mkdtemp(tmp) && rename(tmp, dir) < 0)
			(void)rmdir(tmp);
		free(tmp);
	}
	return mkdir(dir, 0700) < 0 && errno != EEXIST ? -errno : 0;
}

int wb_new(struct wb **out, struct fs *fs)
{
	struct wb *wb = calloc(1, sizeof(*wb));
	int rc = -ENOMEM;

	*out = NULL;
	if (!wb)
		return -ENOMEM;
	wb->fs = fs;
	wb->next_seq = 1;
	wb->xattr = fs->conf.xattr_journal;
	pthread_cond_init(&wb->cond, NULL);
	if (asprintf(&wb->dir, "%s/staging", fs->conf.cache_dir) < 0) {
		wb->dir = NULL;
		goto out;
	}
	rc = staging_make(wb->dir);
	if (rc < 0) {
		log_error("cannot create '%s': %s", wb->dir, strerror(-rc));
		goto out;
	}
	rc = htab_new(&wb->jobs) ?: htab_new(&wb->busy);
out:
	if (rc < 0) {
		wb_free(wb);
		return rc;
	}
	*out = wb;
	return 0;
}

int wb_start(struct wb *wb)
{
	int rc = wq_new(&wb->workers, wb->fs->conf.parallel, "cdnfs-up");

	if (rc < 0)
		return rc;
	if (pthread_create(&wb->dispatcher, NULL, dispatch_main, wb) != 0)
		return -EAGAIN;
	wb->started = 1;
	return 0;
}

int wb_shutdown(struct wb *wb)
{
	struct fs *fs = wb->fs;
	int left;

	if (!wb->started)
		return 0;
	pthread_mutex_lock(&fs->lock);
	if (wb_sync_all(wb) < 0)
		log_error("some uploads failed; they stay in the journal for the next mount");
	wb->stop = 1;
	pthread_cond_signal(&wb->cond);
	pthread_mutex_unlock(&fs->lock);
	pthread_join(wb->dispatcher, NULL);
	wq_free(wb->workers);
	wb->workers = NULL;
	wb->started = 0;
	pthread_mutex_lock(&fs->lock);
	left = (int)htab_count(wb->jobs);
	pthread_mutex_unlock(&fs->lock);
	return left;
}

static void job_drop(void *v)
{
	struct wb_job *j = v;

	if (j->node)
		j->node->job = NULL;
	if (--j->refs == 0)
		job_free(j);
}

void wb_free(struct wb *wb)
{
	if (!wb)
		return;
	if (wb->jobs)
		htab_free(wb->jobs, job_drop);
	if (wb->busy)
		htab_free(wb->busy, free);
	for (int i = 0; i < wb->nfrozen; i++)
		free(wb->frozen[i]);
	free(wb->frozen);
	wb_renames_done(wb);
	pthread_cond_destroy(&wb->cond);
	free(wb->dir);
	free(wb);
}

void wb_get_stats(struct wb *wb, struct wb_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->pending = htab_count(wb->jobs);
	out->uploaded = wb->n_uploaded;
	out->failed = wb->n_failed;
	out->deleted = wb->n_deleted;
}

/* --- recovery ---------------------------------------------------------------------- */

static int parse_job(struct wb *wb, uint64_t seq, char *text, struct wb_job **out)
{
	char *end;
	char kind[16], key[4200];
	int data = 0, existed = 0;
	unsigned mode, uid, gid;
	long long sec;
	long nsec;
	unsigned long long size;
	struct buf k;
	struct wb_job *j;
	const char *p;

	*out = NULL;
	/* an entry cut short (a disk fault, a power cut) lacks its end line:
	 * it must not parse with the fields it lost (existed 0: no purge) */
	if (!(end = strstr(text, "\nend\n")))
		return -EINVAL;
	end[1] = '\0'; /* a longer older text may follow (journal_rewrite) */
	if (strncmp(text, "cdnfs-job 1\n", 12) != 0 || !(p = strstr(text, "kind ")) ||
	    sscanf(p, "kind %15s", kind) != 1 || !(p = strstr(text, "\nkey ")) ||
	    sscanf(p, "\nkey %4199s", key) != 1 || !(p = strstr(text, "\ndata ")) ||
	    sscanf(p, "\ndata %d", &data) != 1 || !(p = strstr(text, "\nattr ")) ||
	    sscanf(p, "\nattr %o %u %u %lld %ld %llu", &mode, &uid, &gid, &sec, &nsec, &size) != 6 ||
	    !(p = strstr(text, "\nexisted ")) ||
	    (strcmp(kind, "put") != 0 && strcmp(kind, "meta") != 0 && strcmp(kind, "delete") != 0))
		return -EINVAL;
	existed = strtol(p + 9, NULL, 10) != 0;
	buf_init(&k, 8192);
	if (s3_url_decode(&k, key, 0) < 0 || !(j = calloc(1, sizeof(*j)))) {
		buf_release(&k);
		return -EINVAL;
	}
	j->key = buf_detach(&k, NULL);
	j->kind = strcmp(kind, "put") == 0 ? WB_PUT : strcmp(kind, "meta") == 0 ? WB_META
										  : WB_DELETE;
	j->seq = seq;
	j->a = (struct fattr){ (mode_t)mode, (uid_t)uid, (gid_t)gid, { (time_t)sec, nsec },
			       size };
	j->existed = existed;
	j->gen = 1;
	j->refs = 1;
	j->journaled = 1; /* jsum 0: the next write rewrites it */
	j->jlen = strlen(text);
	if (data && asprintf(&j->data, "%s/%" PRIu64 ".data", wb->dir, seq) < 0)
		j->data = NULL;
	*out = j;
	return 0;
}

/* A SEQ.ren entry (wb_rename_begin) into r; -EINVAL when damaged. */
static int parse_rename(uint64_t seq, char *text, struct wb_rename *r)
{
	char from[4200], to[4200];
	unsigned mode, uid, gid;
	long long sec;
	long nsec;
	unsigned long long size, d0, d1;
	int dir;
	char *end, *p;
	struct buf f, t;

	if (!(end = strstr(text, "\nend\n")))
		return -EINVAL;
	end[1] = '\0';
	if (strncmp(text, "cdnfs-rename 1\n", 15) != 0 || !(p = strstr(text, "\nfrom ")) ||
	    sscanf(p, "\nfrom %4199s", from) != 1 || !(p = strstr(text, "\nto ")) ||
	    sscanf(p, "\nto %4199s", to) != 1 || !(p = strstr(text, "\ndir ")) ||
	    sscanf(p, "\ndir %d", &dir) != 1 || !(p = strstr(text, "\nattr ")) ||
	    sscanf(p, "\nattr %o %u %u %lld %ld %llu", &mode, &uid, &gid, &sec, &nsec, &size) != 6 ||
	    !(p = strstr(text, "\ndrop ")) || sscanf(p, "\ndrop %llu %llu", &d0, &d1) != 2)
		return -EINVAL;
	buf_init(&f, 8192);
	buf_init(&t, 8192);
	if (s3_url_decode(&f, from, 0) < 0 || s3_url_decode(&t, to, 0) < 0 || f.len == 0 ||
	    t.len == 0) {
		buf_release(&f);
		buf_release(&t);
		return -EINVAL;
	}
	memset(r, 0, sizeof(*r));
	r->seq = seq;
	r->from = buf_detach(&f, NULL);
	r->to = buf_detach(&t, NULL);
	r->dir = dir != 0;
	r->a = (struct fattr){ (mode_t)mode, (uid_t)uid, (gid_t)gid, { (time_t)sec, nsec },
			       size };
	r->drop[0] = d0;
	r->drop[1] = d1;
	return 0;
}

static int rename_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct wb_rename *)a)->seq, y = ((const struct wb_rename *)b)->seq;

	return x < y ? -1 : x > y;
}

/* Read every SEQ.ren into wb->renames, in journal order. */
static void recover_renames(struct wb *wb, DIR *d)
{
	struct dirent *de;

	rewinddir(d);
	while ((de = readdir(d))) {
		const char *dot = strrchr(de->d_name, '.');
		char text[16384];
		struct wb_rename r, *nv;
		ssize_t n = -1;
		int fd;

		if (!dot || strcmp(dot, ".ren") != 0 || de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			n = read(fd, text, sizeof(text) - 1);
			close(fd);
		}
		if (n > 0)
			text[n] = '\0';
		if (n <= 0 || parse_rename(strtoull(de->d_name, NULL, 10), text, &r) < 0) {
			log_warn("journal entry '%s/%s' is damaged: ignored (the rename it "
				 "records is not finished)", wb->dir, de->d_name);
			continue;
		}
		nv = realloc(wb->renames, (wb->nrenames + 1) * sizeof(*nv));
		if (!nv) {
			log_error("cannot recover the rename of '%s': out of memory", r.from);
			free(r.from);
			free(r.to);
			continue;
		}
		wb->renames = nv;
		wb->renames[wb->nrenames++] = r;
	}
	if (wb->nrenames)
		qsort(wb->renames, wb->nrenames, sizeof(*wb->renames), rename_cmp);
}

/* What the renames a crash cut short (rolled forward by the mount) make of
 * a recovered job: 1 when it is dropped, being one the rename's copy
 * replaces (to's upload) or carries (from's chmod); else 0, with a key
 * under a directory's old name moved under its new one, as the rename
 * would have done (journaled by moved_journal). */
static int rename_apply(struct wb *wb, struct wb_job *j)
{
	for (size_t i = 0; i < wb->nrenames; i++) {
		struct wb_rename *r = &wb->renames[i];
		size_t fl = strlen(r->from);
		struct moved *nv;
		char *nk;

		if (j->seq == r->drop[0] || j->seq == r->drop[1])
			return 1;
		/* a DELETE newer than the rename is one of its own (an old key
		 * whose DELETE failed, left to the write-back): it stays on the
		 * old key, never on the copy */
		if (!r->dir || strncmp(j->key, r->from, fl) != 0 ||
		    (j->kind == WB_DELETE && j->seq > r->seq))
			continue;
		nv = realloc(wb->moved, (wb->nmoved + 1) * sizeof(*nv));
		if (!nv || asprintf(&nk, "%s%s", r->to, j->key + fl) < 0) {
			if (nv)
				wb->moved = nv;
			r->keep = 1; /* not finished: the next mount tries again */
			continue;
		}
		wb->moved = nv;
		free(j->key);
		j->key = nk;
		wb->moved[wb->nmoved++] = (struct moved){ strdup(nk), j->seq, i };
	}
	return 0;
}

/* Journal the jobs rename_apply moved, under their new keys (those still
 * in the table: a newer entry of a key may have replaced one). Locked. */
static void moved_journal(struct wb *wb)
{
	for (size_t i = 0; i < wb->nmoved; i++) {
		struct moved *mv = &wb->moved[i];
		struct wb_job *j = mv->key ? htab_get(wb->jobs, mv->key) : NULL;

		if (!mv->key)
			wb->renames[mv->ren].keep = 1;
		else if (j && j->seq == mv->seq && (j->jsum = 0, journal_write(wb, j) < 0))
			wb->renames[mv->ren].keep = 1;
		free(mv->key);
	}
	free(wb->moved);
	wb->moved = NULL;
	wb->nmoved = 0;
}

size_t wb_renames(struct wb *wb, struct wb_rename **out)
{
	*out = wb->renames;
	return wb->nrenames;
}

void wb_renames_done(struct wb *wb)
{
	for (size_t i = 0; i < wb->nrenames; i++) {
		free(wb->renames[i].from);
		free(wb->renames[i].to);
	}
	free(wb->renames);
	wb->renames = NULL;
	wb->nrenames = 0;
}

/* Give a recovered PUT/META job a node in the tree. Locked. */
static void attach_node(struct wb *wb, struct wb_job *j)
{
	struct fs *fs = wb->fs;
	const char *rel = j->key + strlen(fs->conf.prefix);
	struct node *d = fs->root, *n = NULL;
	char comp[256];
	int marker = rel[0] && rel[strlen(rel) - 1] == '/';

	while (*rel) {
		size_t len = strcspn(rel, "/");

		if (len == 0 || len > 255)
			return;
		memcpy(comp, rel, len);
		comp[len] = '\0';
		rel += len;
		if (*rel == '/')
			rel++;
		if (*rel || marker) {
			n = tree_add(d, comp, S_IFDIR);
			if (n && !n->known && !n->job)
				tree_default_attr(fs, &n->a, S_IFDIR);
		} else {
			n = tree_add(d, comp, j->a.mode & S_IFMT);
		}
		if (!n)
			return;
		d = n;
	}
	if (n) {
		n->a = j->a;
		n->known = 1;
		n->job = j;
		j->node = n;
	}
}

/* The journal text of job seq: SEQ.job, else the xattr of SEQ.data.  Length
 * (> 0), 0 when there is none, -errno. */
static ssize_t job_text(struct wb *wb, uint64_t seq, char *text, size_t size, int *jx)
{
	struct buf path;
	ssize_t n = -1;
	int fd, rc;

	buf_init(&path, 4096);
	*jx = 0;
	rc = job_path(wb, seq, "job", &path);
	fd = rc == 0 ? open(buf_str(&path), O_RDONLY | O_CLOEXEC) : -1;
	if (fd >= 0) {
		n = read(fd, text, size - 1);
		close(fd);
	} else if (rc == 0 && errno == ENOENT) {
		buf_reset(&path);
		rc = job_path(wb, seq, "data", &path);
		n = rc == 0 ? getxattr(buf_str(&path), JOB_XATTR, text, size - 1) : -1;
		if (n < 0 && (errno == ENODATA || errno == ENOTSUP || errno == ENOENT))
			n = 0;
		*jx = n > 0;
	}
	buf_release(&path);
	if (n > 0)
		text[n] = '\0';
	return n < 0 ? -EIO : n;
}

static int recover_one(struct wb *wb, const char *name)
{
	char text[16384];
	uint64_t seq = strtoull(name, NULL, 10);
	struct wb_job *j = NULL, *old;
	ssize_t n;
	int rc, jx;

	n = job_text(wb, seq, text, sizeof(text), &jx);
	if (n == 0 && strstr(name, ".job"))
		log_warn("journal entry '%s/%s' is empty: ignored (any data of it stays "
			 "there as %" PRIu64 ".data, not uploaded)", wb->dir, name, seq);
	if (n <= 0)
		return n == 0 ? 0 : -EIO;
	rc = parse_job(wb, seq, text, &j);
	if (rc == 0) {
		j->jx = jx;
		j->jfile = !jx;
	}
	if (rc < 0) {
		log_warn("journal entry '%s/%s' is damaged: ignored (any data of it stays "
			 "there as %" PRIu64 ".data, not uploaded)", wb->dir, name, seq);
		return rc;
	}
	if (j->data && access(j->data, F_OK) != 0) { /* not uploadable: drop it */
		log_warn("dropping the journal entry of '%s': its data is gone", j->key);
		journal_remove(wb, seq, 0);
		job_free(j);
		return 0;
	}
	if (rename_apply(wb, j)) {
		journal_remove(wb, seq, j->data != NULL);
		job_free(j);
		return 0;
	}
	old = htab_get(wb->jobs, j->key);
	if (old && old->seq > seq) { /* a newer entry for the key wins */
		journal_remove(wb, seq, j->data != NULL);
		job_free(j);
		return 0;
	}
	if (old)
		wb_cancel(wb, old);
	if (htab_put(wb->jobs, j->key, j, NULL) < 0) {
		job_free(j);
		return -ENOMEM;
	}
	if (j->kind == WB_PUT && strncmp(j->key, wb->fs->conf.prefix,
					 strlen(wb->fs->conf.prefix)) == 0)
		attach_node(wb, j);
	return 1;
}

/* Data files with no journal entry belong to files that were never closed:
 * drop them (never upload half-written data); likewise leftover temp files. */
/* Does SEQ.job exist for the file NAME (SEQ.something)? */
static int has_job_file(struct wb *wb, const char *name)
{
	struct buf p;
	int rc;

	buf_init(&p, 4096);
	rc = job_path(wb, strtoull(name, NULL, 10), "job", &p) == 0 && access(buf_str(&p), F_OK) == 0;
	buf_release(&p);
	return rc;
}

static void drop_orphans(struct wb *wb, DIR *d)
{
	struct dirent *de;

	rewinddir(d);
	while ((de = readdir(d))) {
		const char *dot = strrchr(de->d_name, '.');
		struct buf p;
		int orphan = 0;

		if (!dot || de->d_name[0] < '0' || de->d_name[0] > '9') {
			if (strncmp(de->d_name, "z.", 2) == 0)
				unlinkat(dirfd(d), de->d_name, 0);
			continue;
		}
		buf_init(&p, 4096);
		if (strcmp(dot, ".tmp") == 0)
			orphan = 1;
		else if (strcmp(dot, ".data") == 0 && !has_job_file(wb, de->d_name) &&
			 job_path(wb, strtoull(de->d_name, NULL, 10), "data", &p) == 0)
			orphan = getxattr(buf_str(&p), JOB_XATTR, NULL, 0) < 0;
		buf_release(&p);
		if (orphan) {
			log_info("dropping '%s/%s': never closed before the last stop", wb->dir,
				 de->d_name);
			unlinkat(dirfd(d), de->d_name, 0);
		}
	}
}

int wb_recover(struct wb *wb)
{
	DIR *d = opendir(wb->dir);
	struct dirent *de;
	int count = 0;

	if (!d)
		return -errno;
	pthread_mutex_lock(&wb->fs->lock);
	recover_renames(wb, d); /* first: they move or drop the jobs */
	rewinddir(d);
	while ((de = readdir(d))) {
		const char *dot = strrchr(de->d_name, '.');
		uint64_t seq;

		if (!dot || de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		/* every name in staging, an entry that does not parse too: a new
		 * file given its number would reopen its data and be shadowed by
		 * its SEQ.job (lost after the next crash) */
		seq = strtoull(de->d_name, NULL, 10);
		if (seq >= wb->next_seq)
			wb->next_seq = seq + 1;
		/* SEQ.job, or SEQ.data holding its entry in an xattr (not
		 * both: a SEQ.job wins, and is found under its own name) */
		if ((strcmp(dot, ".job") == 0 || (strcmp(dot, ".data") == 0 && !has_job_file(wb, de->d_name))) &&
		    recover_one(wb, de->d_name) > 0)
			count++;
	}
	moved_journal(wb);
	drop_orphans(wb, d);
	closedir(d);
	pthread_mutex_unlock(&wb->fs->lock);
	mpu_recover(wb);
	if (count)
		log_info("recovered %d pending change%s from the journal", count,
			 count == 1 ? "" : "s");
	return count;
}
