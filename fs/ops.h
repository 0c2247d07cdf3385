/*
 * ops.h - the FUSE operation table and the handlers that live outside ops.c.
 */
#ifndef CDNFS_OPS_H
#define CDNFS_OPS_H

#include <fuse.h>
#include "fs.h"

extern const struct fuse_operations cdnfs_ops;

/* rename.c: rename a directory and everything under it (fs->lock held;
 * drops it for the requests). */
int ops_rename_dir(struct fs *fs, const char *from, const char *to) WUR;
/* A rename's copies are in S3 but the DELETEs of these old keys failed:
 * they go to the write-back (journaled, retried; a flush reports them while
 * they fail), with one warning naming from.  Call after what was queued
 * under the old keys moved to the new ones.  Locked. */
void ops_delete_later(struct fs *fs, const char *from, const char *const *keys, size_t n);
/* Finish the renames the last stop cut short (wb_recover read them), before
 * the mount: copy what is still under the old name, delete it (fs->io runs
 * the copies).  -errno when one fails (it stays journaled; the mount must
 * not go on).  Unlocked. */
int ops_rename_recover(struct fs *fs) WUR;
/* After S3 has done a rename: n (from's node, or NULL when a listing
 * removed it) moved to the path to, or a new node of type there; *out NULL
 * when to's directory is gone.  Never drops the lock.  Locked. */
int ops_renamed_node(struct fs *fs, struct node *n, const char *to, mode_t type,
		     struct node **dir, struct node **out) WUR;
/* The CDN purges of a rename of from to to (directories when is_dir):
 * call with start 1 before its requests (queued, journaled and held), with
 * start 0 after them whatever they did (queued again in case the first
 * ones went out meanwhile; the hold ends). */
void ops_rename_purge(struct fs *fs, const char *from, const char *to, int is_dir, int start);

/* ops.c: set the permission bits of path to perms (0777), as an access
 * ACL that says no more than the mode does: the owner or root only; the
 * setgid bit goes for a caller outside the file's group (primary or
 * supplementary groups). */
int ops_set_perms(const char *path, mode_t perms);

/* xattr.c: user.cdnfs.* attributes. */
int ops_setxattr(const char *path, const char *name, const char *value, size_t size,
		 int flags);
int ops_getxattr(const char *path, const char *name, char *value, size_t size);
int ops_listxattr(const char *path, char *list, size_t size);
int ops_removexattr(const char *path, const char *name);
/* The status JSON (user.cdnfs.status, SIGUSR1). */
int ops_status_json(struct fs *fs, struct buf *out) WUR;

#endif
