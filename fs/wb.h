/*
 * wb.h - write-back: every change this mount makes reaches S3 through here.
 *
 * A job is one pending change to one S3 key:
 *   WB_PUT     upload the staged data (a file, a symlink's target, or an empty
 *              directory marker "dir/") with the headers its rules give;
 *   WB_META    rewrite the metadata of an object already in S3 (chmod, chown,
 *              utimens on an uploaded file): CopyObject onto itself, REPLACE;
 *   WB_DELETE  delete the object.
 * There is at most one job per key (the job table).  A job becomes due
 * writeback_delay seconds after its last change, so cp -p's and rsync's
 * chmod/utimens/rename after close fold into the one PUT, and a collectstatic
 * delete-then-save of a file becomes one PUT and no DELETE.  Due jobs run on
 * `parallel` upload workers.
 *
 * States of a job: pending (in the table, not running), running (inflight;
 * changes meanwhile bump gen and the job runs again), done (removed).
 * Operations that must not race an upload of the same key (rename, unlink,
 * reopening for write) wait for the running attempt with wb_wait_idle.
 * Every write of a key is checked in while it is on its way (wb_key_*):
 * no job starts while its key has one, and the writes outside the job
 * table (renames, header changes) wait for the key first.
 *
 * Journal: each job is a file STAGING/SEQ.job (with its data in
 * STAGING/SEQ.data) rewritten atomically on every change, removed when done.
 * A new mount of the same cache_dir replays them (wb_recover), so a closed
 * file or a pending delete survives kill -9.
 *
 * Locking: all functions are called with fs->lock held unless marked
 * "unlocked"; the workers take it themselves and never hold it over I/O.
 */
#ifndef CDNFS_WB_H
#define CDNFS_WB_H

#include <stdint.h>
#include "fs.h"

enum wb_kind { WB_PUT = 1, WB_META = 2, WB_DELETE = 3 };

struct wb_job {
	char *key;            /* the S3 key ("dir/" for a marker) */
	enum wb_kind kind;
	uint64_t seq;         /* journal file name */
	char *data;           /* STAGING/SEQ.data (WB_PUT of a file or symlink), else NULL */
	struct fattr a;       /* metadata to send */
	uint64_t gen;         /* bumped by every change */
	uint64_t gen_done;    /* gen of the last finished attempt */
	int last_err;         /* -errno of the last attempt, 0 when it succeeded */
	double due;           /* monotonic time it may start */
	int running;
	int writers;          /* open write handles: not due while > 0 */
	int existed;          /* an older object was at key (overwrite) */
	int tries;
	int refs;             /* table + open files */
	int cancelled;        /* removed from the table while referenced */
	struct node *node;    /* the node it belongs to, NULL for deletes */
	struct wb_job *after; /* the replaced job of the key, while it may still run */
	char *sent_key;       /* the key checked in at dispatch, until the worker takes it */
	char up_etag[S3_ETAG_MAX]; /* an upload done while writers were open (fsync) */
	uint64_t up_rsize;
	int up_compressed;
	int werr;             /* -errno of a failed write to the staged copy: that
			       * copy is incomplete and is never uploaded (nor
			       * journaled) until truncated to 0 or removed */
	uint64_t wend;        /* end of the last write (sequential writers) */
	struct timespec wmtime; /* the mtime that write gave the file */
	int nonseq;           /* not written sequentially from 0: no streaming */
	struct wb_stream *stream; /* parts sent while the file is written */
	int journaled;        /* SEQ.job exists: rewritten in place */
	int jx;               /* ... or it is the xattr JOB_XATTR of SEQ.data */
	int jfile;            /* a SEQ.job file may exist (unlinked when jx takes over) */
	int syncing;          /* callers waiting in wb_sync: a change keeps it due */
	int filling;          /* the staged copy is being filled from S3 (ops.c) */
	int derived;          /* a DELETE job_run queued for an upload's old name:
			       * a flush that synced the upload waits for it too */
	size_t jlen;          /* its length */
	uint64_t jsum;        /* hash of its text: an unchanged entry is not rewritten */
};

struct wb;

int wb_new(struct wb **out, struct fs *fs) WUR;
/* Start the dispatcher and workers (after fork: FUSE init). Unlocked. */
int wb_start(struct wb *wb) WUR;
/* Run everything now, wait for it, stop the threads (unmount).  Unlocked.
 * Returns the number of jobs that failed (left in the journal). */
int wb_shutdown(struct wb *wb);
void wb_free(struct wb *wb);

/* Replay the journal into the tree (at mount, before FUSE starts).  Unlocked. */
int wb_recover(struct wb *wb) WUR;

/* A rename on its way: journaled (STAGING/SEQ.ren) before its first request
 * and ended after its last, so that the mount after a crash finishes it
 * (ops_rename_recover).  from and to are keys (a directory's: its "dir/"
 * prefixes); a is what a file's copy carries (NULL for a directory).
 * -errno when the entry cannot be written: the rename must not start.
 * Locked. */
int wb_rename_begin(struct wb *wb, const char *from, const char *to, int dir,
		    const struct fattr *a, uint64_t *seq) WUR;
void wb_rename_end(struct wb *wb, uint64_t seq);

/* A rename the last stop cut short, as wb_recover found it.  The jobs it
 * read are already what the rename makes of them: those queued when it
 * began on a key it replaces (or a file's chmod, which its copy carries)
 * are dropped, those under a directory's old name moved to its new one. */
struct wb_rename {
	uint64_t seq;
	char *from, *to;
	int dir;
	struct fattr a;
	uint64_t drop[2]; /* the jobs dropped (0: none) */
	int keep;       /* a job it moved could not be journaled again: not
			 * finished, the mount fails and the entry stays */
};
/* The renames to roll forward (journal order); wb_renames_done frees them. */
size_t wb_renames(struct wb *wb, struct wb_rename **out);
void wb_renames_done(struct wb *wb);

/* A write to j's staged copy failed with err (ENOSPC, EIO): drop its journal
 * entry and hold it back; close, fsync and flush report err.  Locked. */
void wb_write_failed(struct wb *wb, struct wb_job *j, int err);

/* n bytes were written at off to j's staged copy (open for writing).  A
 * sequential writer's full parts start going up as a multipart upload
 * before close.  Locked. */
void wb_written(struct wb *wb, struct wb_job *j, uint64_t off, uint64_t n);
/* j's staged copy was truncated to size (0: a sequential writer may start
 * again); a streaming upload in progress is given up.  Locked. */
void wb_truncated(struct wb *wb, struct wb_job *j, uint64_t size);

/* The job for key, or NULL. */
struct wb_job *wb_find(struct wb *wb, const char *key);
/* New PUT job for node n at key; creates an empty data file when with_data.
 * Replaces a pending DELETE/META of the same key (existed carried over). */
int wb_put(struct wb *wb, struct node *n, const char *key, int with_data,
	   struct wb_job **out) WUR;
/* META job for an uploaded node (or fold into its pending PUT). */
int wb_meta(struct wb *wb, struct node *n, const char *key) WUR;
/* DELETE job for key (cancels a pending PUT/META of it). */
int wb_delete(struct wb *wb, const char *key) WUR;
/* A writer closed j: the job becomes due (or completes at once when an
 * fsync already uploaded exactly this version). */
void wb_close_writer(struct wb *wb, struct wb_job *j);
/* A writer count taken without a close to follow (an open that failed, a
 * copy in from S3 done) is given back: the job may be due now. */
void wb_drop_writer(struct wb *wb, struct wb_job *j);
/* close() returned: journal j as it stands, even with writers open; -errno
 * when the entry cannot be written (close() must say so).  Locked. */
int wb_journal_now(struct wb *wb, struct wb_job *j) WUR;
/* A change happened: bump gen, push due, rewrite the journal. */
void wb_touch(struct wb *wb, struct wb_job *j);
/* Drop the job (file removed before upload): data and journal deleted. */
void wb_cancel(struct wb *wb, struct wb_job *j);
/* Cancel the job of key unless it is on its way: what a request that
 * replaced the key (a rename's copy) made obsolete.  Locked. */
void wb_cancel_queued(struct wb *wb, const char *key);
/* Move a pending job to another key (rename before upload). */
int wb_rekey(struct wb *wb, struct wb_job *j, const char *key) WUR;
/* Wait until no attempt of j is running.  May drop fs->lock. */
void wb_wait_idle(struct wb *wb, struct wb_job *j);
/* Make j due now and wait until an attempt covering its current gen
 * finished; returns its result (0 or -EIO).  May drop fs->lock. */
int wb_sync(struct wb *wb, struct wb_job *j) WUR;
/* wb_sync for every job (user.cdnfs.flush).  May drop fs->lock. */
int wb_sync_all(struct wb *wb) WUR;
/* dir lost its last entry: if S3 knows it only through its children, give it
 * a marker so it stays (a directory made here is removed by rmdir only). */
int wb_keep_dir(struct wb *wb, struct node *dir) WUR;
/* The request of j's key on its way now: j itself, or the replaced job j
 * waits for (its after); NULL if none.  Locked. */
struct wb_job *wb_in_flight(struct wb_job *j);
/* Writes on their way, by key (locked, all of them).  At most one write of
 * a key is on its way: the dispatcher starts no job whose key is busy, and
 * any other writer (a rename's copies and deletes, a header set by xattr)
 * waits for the key, then checks in before it drops the lock.
 * wb_key_busy: a write of key (prefix: of any key under it) is on its way.
 * wb_key_wait: if so, wait until none is (drops the lock) and return 1
 * (the caller starts again), else 0.
 * wb_key_begin: check in a write (what: "rename's copy", ...); a second one
 * of a key logs a line starting "BUG:" (the tests fail on it).
 * wb_key_end: it came back; wakes whoever waits for the key. */
int wb_key_busy(struct wb *wb, const char *key, int prefix);
int wb_key_wait(struct wb *wb, const char *key, int prefix);
void wb_key_begin(struct wb *wb, const char *key, const char *what);
void wb_key_end(struct wb *wb, const char *key);
/* No job under prefix starts until wb_thaw (a directory rename copying the
 * objects under it).  -ENOMEM.  Locked. */
int wb_freeze(struct wb *wb, const char *prefix) WUR;
void wb_thaw(struct wb *wb, const char *prefix);
/* Call fn on every job until it returns non-zero (returned); fn must not
 * add or remove jobs. */
int wb_foreach(struct wb *wb, int (*fn)(struct wb_job *j, void *arg), void *arg);
/* References held by open files. */
void wb_ref(struct wb_job *j);
void wb_unref(struct wb *wb, struct wb_job *j);
/* The node holding j went away (tree.c). */
void wb_node_gone(struct wb_job *j);

/* Server-side copy src -> dst with dst's rule headers and POSIX metadata a
 * (NULL: keep the object's); src == dst rewrites metadata in place.
 * Unlocked (no fs->lock held). */
int wb_server_copy(struct wb *wb, const char *src, const char *dst, const struct fattr *a,
		   char etag[S3_ETAG_MAX], uint64_t *rsize, int *compressed) WUR;

/* Rewrite key's metadata in place with header name set to value by hand
 * (user.cdnfs.cache_control ...; "" removes it) and remembered as set by
 * hand (x-amz-meta-cdnfs-manual), so later rewrites keep it; the object's
 * other headers are kept.  Unlocked. */
int wb_set_header(struct wb *wb, const char *key, const struct fattr *a, const char *name,
		  const char *value, char etag[S3_ETAG_MAX]) WUR;

/* Set by SIGUSR1: the dispatcher logs the status JSON (within a second). */
#include <signal.h>
extern volatile sig_atomic_t wb_status_requested;

struct wb_stats {
	uint64_t pending, running, bytes_pending, uploaded, failed, deleted;
};
void wb_get_stats(struct wb *wb, struct wb_stats *out);

#endif
