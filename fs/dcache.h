/*
 * dcache.h - the local disk cache of object data, for reads.
 *
 * One cache file per object version under DIR/data/, named by a hash of the
 * key, with a small sidecar recording the ETag, size and which chunks are
 * present, so the cache survives a remount and a changed object (other ETag
 * or size) is never served from a stale copy.  Reads fetch only the missing
 * chunks (ranged GETs; one fetch per chunk however many readers wait for it)
 * and read ahead in parallel on the io work queue.  Objects stored
 * compressed are fetched whole and decoded into the cache file.
 * LRU eviction of files nobody has open keeps the total under max_bytes.
 *
 * Files are created 0600 in directories 0700.
 *
 * Layout: DIR/data/XX/HASH (HASH the sha256 hex of the key, XX its first two
 * digits) and the sidecar DIR/data/XX/HASH.meta.  When a new version of a
 * key is wanted while a reader still has the old copy open, the old copy is
 * "doomed" (its readers keep reading it; it is deleted with its last
 * reference) and the new one is made as HASH.1 (.2 ...).  dcache_open
 * rebuilds the index from the sidecars and deletes data files without a
 * valid one, orphaned sidecars and temp files.
 *
 * Size: files open (referenced) are never evicted, so the cache can exceed
 * max_bytes while they hold more than that; it is brought back under 90% of
 * max_bytes as they are closed.
 *
 * Threads: every function is thread-safe (an internal mutex protects the
 * index; never held across network or file I/O).  dcache_read and
 * dcache_fill block waiting for read-ahead jobs of the io queue, so they
 * must not run as jobs of that same queue.
 */
#ifndef CDNFS_DCACHE_H
#define CDNFS_DCACHE_H

#include <stdint.h>
#include "compat.h"

struct s3;
struct wq;
struct dcache;
struct dc_file;

struct dcache_conf {
	const char *dir;        /* cache_dir; data goes in dir/data */
	uint64_t max_bytes;     /* cache_size; 0: no limit */
	uint64_t chunk;         /* fetch unit, e.g. 4 MiB (> 0) */
	int read_ahead;         /* chunks fetched ahead of a sequential reader */
};

/* Open (creating DIR and DIR/data when missing) and rebuild the index.  s3
 * and io are borrowed and must outlive the cache; io may be NULL (no
 * read-ahead). */
int dcache_open(struct dcache **out, const struct dcache_conf *conf, struct s3 *s3,
		struct wq *io) WUR;
/* Wait for the read-ahead jobs still running, write sidecars, free memory
 * (cache files stay).  Every dc_file must have been put. */
void dcache_close(struct dcache *dc);

/* A reference to the cached copy of key at (etag, size).  A copy of another
 * version is discarded.  compressed: the object is stored with
 * Content-Encoding (gzip/br) and size is the DECODED size; it is fetched whole
 * and decoded.  Never fails for lack of data: data is fetched on read.
 * etag NULL is "" (no If-Match on fetches).  A complete copy matches
 * whatever compressed says (dcache_adopt does not know it).
 * Each call returns a new handle (its own sequential-read tracking); put it
 * with dcache_put. */
int dcache_get(struct dcache *dc, const char *key, const char *etag, uint64_t size,
	       int compressed, struct dc_file **out) WUR;

/* Is a copy of key of a version other than etag held open (by a handle
 * opened before the object changed)?  Its reader fills the kernel's page
 * cache of the file, which a handle on etag would share: that one must
 * bypass it (direct_io). */
int dcache_other_version_held(struct dcache *dc, const char *key, const char *etag);
void dcache_put(struct dc_file *f);

/* Read up to len bytes at off, fetching what is missing.  Returns bytes read
 * (0 at EOF) or -errno (-EIO for a failed fetch, -ESTALE when the object
 * changed in S3 meanwhile: If-Match failed).  A read at 0 or where the last
 * read through this handle ended is sequential: the missing chunks among
 * the read_ahead ones after it are queued on io before this read waits.
 * Readers waiting for a chunk another thread fetches get that fetch's
 * error when it fails. */
ssize_t dcache_read(struct dc_file *f, char *buf, size_t len, uint64_t off) WUR;
/* Fetch the whole object; then dcache_path gives a complete copy. */
int dcache_fill(struct dc_file *f) WUR;
/* Path of the cache file (valid while referenced). */
const char *dcache_path(const struct dc_file *f);

/* Take a just-uploaded staged file as the complete cached copy of (key,
 * etag, size): renamed into the cache, no copy.  On failure the staged file
 * is left where it was (and whatever was cached for key is dropped).
 * Readers of an older copy keep it (see Layout).  strip_xattr: an extended
 * attribute the staged file carries (the upload's journal entry) that the
 * cache removes when it writes the sidecar, or NULL; a string constant. */
int dcache_adopt(struct dcache *dc, const char *key, const char *etag, uint64_t size,
		 const char *staged_path, const char *strip_xattr) WUR;
/* Drop whatever is cached for key (a copy in use: when its last reference
 * goes). */
void dcache_forget(struct dcache *dc, const char *key);
/* dcache_adopt leaves the sidecar of the adopted file for later: these
 * write them (the write-back layer calls this once its queue is quiet;
 * dcache_close writes the rest).  Until then a crash loses those files from
 * the cache, never data.  Unlocked. */
void dcache_sync_lazy(struct dcache *dc);
uint64_t dcache_lazy_count(struct dcache *dc);

/* bytes: chunks present in the indexed files (doomed copies not counted);
 * files: indexed files; hits/misses: dcache_read calls served from the disk
 * alone / that fetched or waited for a fetch; fetched_bytes: body bytes
 * received (compressed objects as stored); evicted_files: LRU evictions. */
struct dcache_stats {
	uint64_t bytes, files, hits, misses, fetched_bytes, evicted_files;
};
void dcache_get_stats(struct dcache *dc, struct dcache_stats *out);

#endif
