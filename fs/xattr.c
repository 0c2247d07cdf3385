/*
 * xattr.c - the user.cdnfs.* extended attributes: the deploy-script API.
 *
 *   set user.cdnfs.flush (any path)       wait for every pending upload and purge
 *   set user.cdnfs.invalidate PATH        purge PATH (a directory: all under it)
 *   get user.cdnfs.invalidation PATH      the last invalidation covering PATH
 *   get user.cdnfs.status (any path)      JSON: pending work, requests, cache, CDN
 *   get user.cdnfs.url PATH               public URL (presigned when the rule says)
 *   get user.cdnfs.etag PATH              the object's ETag
 *   get/set user.cdnfs.cache_control, .content_type, .storage_class PATH
 *                                         the object's header; setting rewrites
 *                                         the object's metadata in place and purges
 *
 * Other names are not stored (S3 has no place for them): set answers
 * ENOTSUP, get ENODATA, list shows the user.cdnfs.* names of a file.  The
 * one exception: a POSIX access ACL that says no more than the mode bits
 * (owner, group, other: what cp -a and tar set) is applied as the mode, as
 * ext4 does, so cp -a needs no chmod after it.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "attrcache.h"
#include "cdn.h"
#include "dcache.h"
#include "http.h"
#include "log.h"
#include "ops.h"
#include "rules.h"
#include "wb.h"

#define XA "user.cdnfs."
#define XA_MAX_VALUE 4096

struct hdr_attr {
	const char *xattr;   /* after "user.cdnfs." */
	const char *header;  /* the HTTP header it maps to */
};

static const struct hdr_attr hdr_attrs[] = {
	{ "cache_control", "Cache-Control" },
	{ "content_type", "Content-Type" },
	{ "storage_class", "x-amz-storage-class" },
};

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

static const struct hdr_attr *find_hdr(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(hdr_attrs); i++)
		if (strcmp(name, hdr_attrs[i].xattr) == 0)
			return &hdr_attrs[i];
	return NULL;
}

int ops_status_json(struct fs *fs, struct buf *out)
{
	struct http_stats hs;
	struct wb_stats ws;
	struct dcache_stats ds;
	int rc;

	http_get_stats(fs->http, &hs);
	dcache_get_stats(fs->dc, &ds);
	pthread_mutex_lock(&fs->lock);
	wb_get_stats(fs->wb, &ws);
	pthread_mutex_unlock(&fs->lock);
	rc = buf_addf(out,
		      "{\"pending_uploads\":%" PRIu64 ",\"uploaded\":%" PRIu64
		      ",\"upload_failures\":%" PRIu64 ",\"deleted\":%" PRIu64
		      ",\"cache\":{\"bytes\":%" PRIu64 ",\"files\":%" PRIu64 ",\"hits\":%" PRIu64
		      ",\"misses\":%" PRIu64 "},\"requests\":{\"GET\":%" PRIu64 ",\"HEAD\":%" PRIu64
		      ",\"PUT\":%" PRIu64 ",\"POST\":%" PRIu64 ",\"DELETE\":%" PRIu64
		      ",\"retries\":%" PRIu64 ",\"failures\":%" PRIu64 "},\"bytes_up\":%" PRIu64
		      ",\"bytes_down\":%" PRIu64 ",\"cdn\":",
		      ws.pending, ws.uploaded, ws.failed, ws.deleted, ds.bytes, ds.files, ds.hits,
		      ds.misses, hs.get, hs.head, hs.put, hs.post, hs.del, hs.retries, hs.failures,
		      hs.bytes_up, hs.bytes_down);
	rc = rc ?: cdn_stats_json(fs->cdn, out);
	return rc ?: buf_addstr(out, "}\n");
}

/* Resolve path; copy out its key and attributes. */
static int lookup(struct fs *fs, const char *path, struct buf *key, struct fattr *a,
		  int *is_dir, int *remote)
{
	struct node *n;
	int rc;

	pthread_mutex_lock(&fs->lock);
	rc = meta_resolve(fs, path, &n);
	if (rc == 0) {
		*is_dir = n->kids != NULL;
		*remote = n->remote;
		if (a)
			*a = n->a;
		rc = tree_key(fs, n, n->kids != NULL && n->parent, key);
	}
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

static int set_invalidate(struct fs *fs, const char *path)
{
	struct buf key;
	int is_dir, remote, rc;

	if (!fs->cdn)
		return -ENOTSUP;
	buf_init(&key, 8192);
	rc = lookup(fs, path, &key, NULL, &is_dir, &remote);
	if (rc == 0)
		rc = cdn_purge(fs->cdn, path + 1, is_dir);
	buf_release(&key);
	return rc;
}

static int set_flush(struct fs *fs, const char *path)
{
	struct node *n;
	int rc;

	pthread_mutex_lock(&fs->lock);
	rc = meta_resolve(fs, path, &n);
	if (rc == 0)
		rc = wb_sync_all(fs->wb);
	pthread_mutex_unlock(&fs->lock);
	if (rc == 0 && fs->cdn)
		rc = cdn_flush(fs->cdn, 0);
	return rc;
}

/* Rewrite one header of an uploaded object, then purge it. */
static int set_header(struct fs *fs, const char *path, const struct hdr_attr *h,
		      const char *value, size_t size)
{
	char v[XA_MAX_VALUE], etag[S3_ETAG_MAX];
	struct buf key;
	struct fattr a;
	struct node *n;
	int rc;

	if (size >= sizeof(v))
		return -E2BIG;
	memcpy(v, value, size);
	v[size] = '\0';
	for (size_t i = 0; i < size; i++)
		if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
			return -EINVAL; /* no header injection */
	buf_init(&key, 8192);
	pthread_mutex_lock(&fs->lock);
	for (int tries = 0;; tries++) {
		buf_reset(&key);
		rc = meta_resolve(fs, path, &n);
		if (rc == 0 && n->kids)
			rc = -EISDIR;
		if (rc < 0)
			break;
		/* a change of the file still to go up (new bytes, a chmod) goes
		 * first: sent after the header, a new upload would replace it
		 * with the rule's.  Then look again: the lock was dropped */
		if (n->job && tries < 3) {
			rc = wb_sync(fs->wb, n->job);
			if (rc < 0)
				break;
			continue;
		}
		if (!n->remote) {
			rc = -EAGAIN; /* not uploaded yet: flush first */
			break;
		}
		a = n->a;
		rc = tree_key(fs, n, 0, &key);
		/* no other write of the key on its way meanwhile: a chmod's
		 * copy started before this one would land after it, with the
		 * old header; once one was waited for, look again */
		if (rc < 0 || !wb_key_wait(fs->wb, buf_str(&key), 0))
			break;
	}
	if (rc == 0) {
		wb_key_begin(fs->wb, buf_str(&key), "header change");
		pthread_mutex_unlock(&fs->lock);
		/* the purge is journaled before the copy and held until it is
		 * answered (as a rename's): a crash after S3 applied the copy
		 * still purges; a failed copy costs one needless purge */
		cdn_hold(fs->cdn, 1);
		if (cdn_purge(fs->cdn, path + 1, 0) < 0)
			log_error("cannot queue the CDN purge of '%s'", path + 1);
		rc = wb_set_header(fs->wb, buf_str(&key), &a, h->header, v, etag);
		cdn_hold(fs->cdn, 0);
		pthread_mutex_lock(&fs->lock);
		wb_key_end(fs->wb, buf_str(&key));
	}
	pthread_mutex_unlock(&fs->lock);
	if (rc == 0) {
		pthread_mutex_lock(&fs->lock);
		if (meta_resolve(fs, path, &n) == 0 && !n->job)
			snprintf(n->etag, sizeof(n->etag), "%s", etag);
		pthread_mutex_unlock(&fs->lock);
	}
	buf_release(&key);
	return rc;
}

/* system.posix_acl_access in the kernel's xattr form: a little-endian u32
 * version 2, then entries of u16 tag, u16 perm, u32 id.  Only the three
 * entries the mode holds are taken (tags below); more is ENOTSUP. */
#define ACL_XATTR "system.posix_acl_access"
#define ACL_USER_OBJ 0x01
#define ACL_GROUP_OBJ 0x04
#define ACL_OTHER 0x20

static int set_acl_access(const char *path, const char *value, size_t size)
{
	uint32_t version;
	mode_t perms = 0;
	unsigned seen = 0;

	if (size < 4 || (size - 4) % 8 != 0)
		return -EINVAL;
	memcpy(&version, value, 4);
	if (le32toh(version) != 2)
		return -EINVAL;
	for (size_t off = 4; off < size; off += 8) {
		uint16_t tag, perm;

		memcpy(&tag, value + off, 2);
		memcpy(&perm, value + off + 2, 2);
		tag = le16toh(tag);
		perm = le16toh(perm) & 7;
		if ((tag != ACL_USER_OBJ && tag != ACL_GROUP_OBJ && tag != ACL_OTHER) ||
		    (seen & tag))
			return -ENOTSUP; /* named users or groups, a mask */
		seen |= tag;
		perms |= (mode_t)perm << (tag == ACL_USER_OBJ ? 6 : tag == ACL_GROUP_OBJ ? 3 : 0);
	}
	if (seen != (ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_OTHER))
		return -EINVAL;
	return ops_set_perms(path, perms);
}

int ops_setxattr(const char *path, const char *name, const char *value, size_t size,
		 int flags)
{
	struct fs *fs = xfs();
	const struct hdr_attr *h;

	(void)flags;
	if (strcmp(name, ACL_XATTR) == 0)
		return set_acl_access(path, value, size);
	if (strncmp(name, XA, strlen(XA)) != 0)
		return -ENOTSUP;
	name += strlen(XA);
	if (strcmp(name, "flush") == 0)
		return set_flush(fs, path);
	if (strcmp(name, "invalidate") == 0)
		return set_invalidate(fs, path);
	h = find_hdr(name);
	if (h && fs->conf.ro)
		return -EROFS;
	if (h)
		return set_header(fs, path, h, value, size);
	return -ENOTSUP;
}

/* The public URL: through the CDN when it has a domain, else S3; presigned
 * for rules with signed_url_ttl (private media). */
static int get_url(struct fs *fs, const char *path, struct buf *out)
{
	struct rule_result rr;
	struct buf key;
	int is_dir, remote, rc;

	buf_init(&key, 8192);
	rc = lookup(fs, path, &key, NULL, &is_dir, &remote);
	if (rc == 0 && is_dir)
		rc = -EISDIR;
	if (rc < 0)
		goto out;
	rules_eval(fs->rules, path + 1, &rr);
	if (rr.signed_url_ttl > 0) {
		rc = s3_presign_get(fs->s3, buf_str(&key), rr.signed_url_ttl, out);
	} else if (fs->conf.cdn_domain) {
		const char *d = fs->conf.cdn_domain;
		const char *pp = fs->conf.cdn_path_prefix;

		rc = buf_addf(out, "%s%s/", strstr(d, "://") ? "" : "https://", d);
		while (rc == 0 && pp && *pp == '/')
			pp++;
		if (rc == 0 && pp && *pp)
			rc = sigv4_uri_encode(out, pp, 1) ?: buf_addch(out, '/');
		rc = rc ?: sigv4_uri_encode(out, path + 1, 1);
	} else {
		rc = s3_object_url(fs->s3, buf_str(&key), out);
	}
out:
	buf_release(&key);
	return rc;
}

static int get_header(struct fs *fs, const char *path, const struct hdr_attr *h,
		      struct buf *out)
{
	struct buf key;
	struct s3_obj o;
	const char *v = NULL;
	int is_dir, remote, rc;

	buf_init(&key, 8192);
	rc = lookup(fs, path, &key, NULL, &is_dir, &remote);
	if (rc == 0 && !remote)
		rc = -ENODATA; /* not in S3 yet */
	if (rc == 0)
		rc = s3_head(fs->s3, buf_str(&key), &o);
	if (rc == 0) {
		if (strcmp(h->xattr, "cache_control") == 0)
			v = o.cache_control;
		else if (strcmp(h->xattr, "content_type") == 0)
			v = o.content_type;
		else
			v = o.storage_class ? o.storage_class : "STANDARD";
		rc = v ? buf_addstr(out, v) : -ENODATA;
		s3_obj_release(&o);
	}
	buf_release(&key);
	return rc;
}

static int get_simple(struct fs *fs, const char *path, const char *name, struct buf *b)
{
	struct node *n;
	int rc;

	pthread_mutex_lock(&fs->lock);
	rc = meta_resolve(fs, path, &n);
	if (rc == 0 && strcmp(name, "etag") == 0)
		rc = n->etag[0] ? buf_addstr(b, n->etag) : -ENODATA;
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

static int get_invalidation(struct fs *fs, const char *path, struct buf *b)
{
	struct buf key, p;
	int is_dir, remote, rc;

	if (!fs->cdn)
		return -ENODATA;
	buf_init(&key, 8192);
	buf_init(&p, 8192);
	rc = lookup(fs, path, &key, NULL, &is_dir, &remote);
	rc = rc ?: buf_addstr(&p, path + 1);
	if (rc == 0 && is_dir && p.len)
		rc = buf_addch(&p, '/');
	rc = rc ?: cdn_last(fs->cdn, buf_str(&p), b);
	buf_release(&key);
	buf_release(&p);
	return rc == -ENOENT ? -ENODATA : rc;
}

int ops_getxattr(const char *path, const char *name, char *value, size_t size)
{
	struct fs *fs = xfs();
	const struct hdr_attr *h;
	struct buf b;
	int rc;

	if (strncmp(name, XA, strlen(XA)) != 0)
		return -ENODATA;
	name += strlen(XA);
	buf_init(&b, 1 << 20);
	if (strcmp(name, "status") == 0)
		rc = ops_status_json(fs, &b);
	else if (strcmp(name, "url") == 0)
		rc = get_url(fs, path, &b);
	else if (strcmp(name, "invalidation") == 0)
		rc = get_invalidation(fs, path, &b);
	else if ((h = find_hdr(name)))
		rc = get_header(fs, path, h, &b);
	else if (strcmp(name, "etag") == 0)
		rc = get_simple(fs, path, name, &b);
	else
		rc = -ENODATA;
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
	return 0; /* the user.cdnfs.* names are computed, not stored: not listed */
}

int ops_removexattr(const char *path, const char *name)
{
	(void)path;
	(void)name;
	return -ENODATA;
}
