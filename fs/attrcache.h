/*
 * attrcache.h - the persistent attribute cache.
 *
 * A listing tells key, ETag, size and Last-Modified but not the POSIX
 * metadata (x-amz-meta-mode/uid/gid/mtime) nor the original size of an
 * object stored compressed; those cost a HEAD.  This cache remembers them per
 * key, valid only while the object's ETag and stored size are unchanged, and
 * survives remounts (an append-only log in cache_dir, compacted on open and
 * close), so `ls -l` of objects seen before costs a LIST and nothing more.
 *
 * Threads: thread-safe (internal mutex; the log append is one write(2)).
 */
#ifndef CDNFS_ATTRCACHE_H
#define CDNFS_ATTRCACHE_H

#include "fs.h"

struct ac_entry {
	char etag[S3_ETAG_MAX];
	uint64_t rsize;       /* stored size */
	struct fattr a;       /* a.size is the logical size */
	int compressed;
};

struct attrcache;

int attrcache_open(struct attrcache **out, const char *cache_dir) WUR;
void attrcache_close(struct attrcache *ac);
/* 1 and *out filled when key is cached with this etag and rsize; else 0. */
/* The entry of key when it is for (etag, rsize); etag NULL: whatever it is
 * for (the last version this cache saw).  1 found, 0 not. */
int attrcache_get(struct attrcache *ac, const char *key, const char *etag, uint64_t rsize,
		  struct ac_entry *out);
void attrcache_put(struct attrcache *ac, const char *key, const struct ac_entry *e);
void attrcache_del(struct attrcache *ac, const char *key);

/* The shared attribute index (attrindex.c) travels in this cache's own
 * record format.  Export appends a "P" record for every entry whose key
 * starts with prefix and that keep (may be NULL; called with the cache's
 * lock held, so it must not call back into the cache) accepts; more than max
 * records is -E2BIG.  Import merges the "P" records of text whose keys start
 * with prefix (an entry for the version already cached is left alone);
 * *merged counts the entries taken, *bad the malformed or foreign lines. */
int attrcache_export(struct attrcache *ac, const char *prefix,
		     int (*keep)(const char *key, const struct ac_entry *e, void *arg), void *arg,
		     size_t max, struct buf *out, size_t *count) WUR;
int attrcache_import(struct attrcache *ac, const char *prefix, const char *text, size_t len,
		     size_t *merged, size_t *bad) WUR;

#endif
