/*
 * xattr.c - the user.cdnfs.* extended attributes.
 *
 *   setfattr -n user.cdnfs.flush -v 1 MNT   wait for every pending upload
 *   getfattr -n user.cdnfs.status MNT       JSON: pending work, cache, requests
 *   getfattr -n user.cdnfs.etag PATH        the object's ETag
 *
 * Other attribute names are not stored (S3 has no place for them): set
 * answers ENOTSUP, get ENODATA, list is empty.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "dcache.h"
#include "http.h"
#include "ops.h"
#include "wb.h"

#define XA_FLUSH "user.cdnfs.flush"
#define XA_STATUS "user.cdnfs.status"
#define XA_ETAG "user.cdnfs.etag"

static struct fs *xfs(void)
{
	return fuse_get_context()->private_data;
}

/* Copy a value out the getxattr way: size 0 asks for the length. */
static int give(const char *v, size_t len, char *value, size_t size)
{
	if (size == 0)
		return (int)len;
	if (len > size)
		return -ERANGE;
	memcpy(value, v, len);
	return (int)len;
}

int ops_status_json(struct fs *fs, struct buf *out)
{
	struct http_stats hs;
	struct wb_stats ws;
	struct dcache_stats ds;

	http_get_stats(fs->http, &hs);
	dcache_get_stats(fs->dc, &ds);
	pthread_mutex_lock(&fs->lock);
	wb_get_stats(fs->wb, &ws);
	pthread_mutex_unlock(&fs->lock);
	return buf_addf(out,
			"{\"pending_uploads\":%" PRIu64 ",\"uploaded\":%" PRIu64
			",\"upload_failures\":%" PRIu64 ",\"deleted\":%" PRIu64
			",\"cache\":{\"bytes\":%" PRIu64 ",\"files\":%" PRIu64 ",\"hits\":%" PRIu64
			",\"misses\":%" PRIu64 "},\"requests\":{\"GET\":%" PRIu64
			",\"HEAD\":%" PRIu64 ",\"PUT\":%" PRIu64 ",\"POST\":%" PRIu64
			",\"DELETE\":%" PRIu64 ",\"retries\":%" PRIu64 ",\"failures\":%" PRIu64
			"},\"bytes_up\":%" PRIu64 ",\"bytes_down\":%" PRIu64 "}\n",
			ws.pending, ws.uploaded, ws.failed, ws.deleted, ds.bytes, ds.files, ds.hits,
			ds.misses, hs.get, hs.head, hs.put, hs.post, hs.del, hs.retries, hs.failures,
			hs.bytes_up, hs.bytes_down);
}

int ops_setxattr(const char *path, const char *name, const char *value, size_t size,
		 int flags)
{
	struct fs *fs = xfs();
	struct node *n;
	int rc;

	(void)value;
	(void)size;
	(void)flags;
	if (strcmp(name, XA_FLUSH) != 0)
		return -ENOTSUP;
	pthread_mutex_lock(&fs->lock);
	rc = meta_resolve(fs, path, &n);
	if (rc == 0)
		rc = wb_sync_all(fs->wb);
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

int ops_getxattr(const char *path, const char *name, char *value, size_t size)
{
	struct fs *fs = xfs();
	struct node *n;
	struct buf b;
	int rc;

	buf_init(&b, 1 << 20);
	if (strcmp(name, XA_STATUS) == 0) {
		rc = ops_status_json(fs, &b);
	} else if (strcmp(name, XA_ETAG) == 0) {
		pthread_mutex_lock(&fs->lock);
		rc = meta_resolve(fs, path, &n);
		if (rc == 0 && !n->etag[0])
			rc = -ENODATA;
		if (rc == 0)
			rc = buf_addstr(&b, n->etag);
		pthread_mutex_unlock(&fs->lock);
	} else {
		rc = -ENODATA;
	}
	if (rc == 0)
		rc = give(b.data ? b.data : "", b.len, value, size);
	buf_release(&b);
	return rc;
}

int ops_listxattr(const char *path, char *list, size_t size)
{
	(void)path;
	(void)list;
	(void)size;
	return 0;
}

int ops_removexattr(const char *path, const char *name)
{
	(void)path;
	(void)name;
	return -ENODATA;
}
