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
 * Threads: every function is thread-safe (an internal mutex protects the
 * index; never held across network or file I/O).
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
	uint64_t max_bytes;     /* cache_size */
	uint64_t chunk;         /* fetch unit, e.g. 4 MiB */
	int read_ahead;         /* chunks fetched ahead of a sequential reader */
};

int dcache_open(struct dcache **out, const struct dcache_conf *conf, struct s3 *s3,
		struct wq *io) WUR;
/* Write sidecars, free memory (cache files stay). */
void dcache_close(struct dcache *dc);

/* A reference to the cached copy of key at (etag, size).  A copy of another
 * version is discarded.  compressed: the object is stored with
 * Content-Encoding (gzip/br) and size is the DECODED size; it is fetched whole
 * and decoded.  Never fails for lack of data: data is fetched on read. */
int dcache_get(struct dcache *dc, const char *key, const char *etag, uint64_t size,
	       int compressed, struct dc_file **out) WUR;
void dcache_put(struct dc_file *f);

/* Read up to len bytes at off, fetching what is missing.  Returns bytes read
 * (0 at EOF) or -errno (-EIO for a failed fetch, -ESTALE when the object
 * changed in S3 meanwhile: If-Match failed). */
ssize_t dcache_read(struct dc_file *f, char *buf, size_t len, uint64_t off) WUR;
/* Fetch the whole object; then dcache_path gives a complete copy. */
int dcache_fill(struct dc_file *f) WUR;
/* Path of the cache file (valid while referenced). */
const char *dcache_path(const struct dc_file *f);

/* Take a just-uploaded staged file as the complete cached copy of (key,
 * etag, size): renamed into the cache, no copy.  On failure the staged file
 * is left where it was. */
int dcache_adopt(struct dcache *dc, const char *key, const char *etag, uint64_t size,
		 const char *staged_path) WUR;
/* Drop whatever is cached for key. */
void dcache_forget(struct dcache *dc, const char *key);

struct dcache_stats {
	uint64_t bytes, files, hits, misses, fetched_bytes, evicted_files;
};
void dcache_get_stats(struct dcache *dc, struct dcache_stats *out);

#endif
