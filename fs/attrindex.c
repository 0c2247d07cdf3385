/*
 * attrindex.c - the bucket's shared attribute index.
 *
 * A listing gives names, sizes, ETags and Last-Modified, not the POSIX
 * metadata (x-amz-meta-mode/uid/gid/mtime) nor the original size of an
 * object stored compressed: a mount whose attribute cache never saw an
 * object must HEAD it.  So that a new machine (a fresh CI runner, another
 * app server, an empty cache_dir) does not HEAD every object, a mount that
 * changed something writes at unmount the entries of its attribute cache for
 * the keys under its prefix into one object, PREFIX.cdnfs-attrs (gzip, the
 * attribute cache's own record format).  A mount whose listing of the mount
 * root shows that object with an ETag not merged yet GETs it once and merges
 * it into its attribute cache, before the listing's entries are looked up.
 *
 * The index is only a cache: an entry is keyed by the object's version (ETag
 * and stored size), as in the local attribute cache, so a stale, partial or
 * hostile index can cost HEADs but never give an object another version's
 * attributes.  Before writing, the mount merges the index in S3 (another
 * mount's entries survive); entries the tree knows to be gone or replaced
 * are left out, and so are keys under a rule with signed_url_ttl (private
 * files: the index must not reveal their names).  The name is hidden from
 * the mount and cannot be created through it.  -o attr_index=0: none of it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attrcache.h"
#include "compress.h"
#include "fs.h"
#include "log.h"
#include "rules.h"

#define AIDX_NAME ".cdnfs-attrs"
#define AIDX_MAX_ENTRIES 1000000
#define AIDX_MAX_BYTES ((uint64_t)256 << 20) /* decompressed */
#define AIDX_HEADER "# cdnfs attribute index 1\n"

int aidx_reserved(const struct fs *fs, const char *path)
{
	return fs->conf.attr_index && strcmp(path, "/" AIDX_NAME) == 0;
}

static int index_key(const struct fs *fs, struct buf *out)
{
	buf_init(out, 8192);
	return buf_addf(out, "%s%s", fs->conf.prefix, AIDX_NAME);
}

int aidx_is_key(const struct fs *fs, const char *key)
{
	size_t plen = strlen(fs->conf.prefix);

	return fs->conf.attr_index && strncmp(key, fs->conf.prefix, plen) == 0 &&
	       strcmp(key + plen, AIDX_NAME) == 0;
}

static int tmpfile_fd(const struct fs *fs)
{
	int fd = open(fs->conf.cache_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	return fd < 0 ? -errno : fd;
}

/* The whole of fd (from offset 0) into out, at most max bytes. */
static int slurp(int fd, uint64_t max, struct buf *out)
{
	char chunk[65536];
	ssize_t n;

	if (lseek(fd, 0, SEEK_SET) < 0)
		return -errno;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
		if (out->len + (size_t)n > max)
			return -EFBIG;
		if (buf_add(out, chunk, (size_t)n) < 0)
			return -ENOMEM;
	}
	return n < 0 ? -errno : 0;
}

/* GET the index (If-None-Match etag when not NULL) and merge it.  Returns 1
 * when merged (*etag_out its ETag, *rsize_out its size), 0 when absent or
 * not modified, -errno on failure.  Unlocked. */
static int fetch_merge(struct fs *fs, const char *key, const char *etag, char *etag_out,
		       uint64_t *rsize_out)
{
	struct s3_get_req req = { .if_none_match = etag };
	struct s3_obj o;
	struct buf text;
	uint64_t got = 0, plain = 0;
	size_t merged = 0, bad = 0;
	int fd, zfd = -1, rc, kind;

	memset(&o, 0, sizeof(o));
	buf_init(&text, (size_t)AIDX_MAX_BYTES + 1);
	fd = tmpfile_fd(fs);
	if (fd < 0)
		return fd;
	req.fd = fd;
	rc = s3_get(fs->s3, key, &req, &o, &got);
	if (rc == 1 || rc == -ENOENT) {
		rc = 0;
		goto out;
	}
	if (rc < 0)
		goto out;
	kind = o.content_encoding ? compress_from_encoding(o.content_encoding) : COMPRESS_NONE;
	if (kind < 0) {
		rc = -EBADMSG;
		goto out;
	}
	if (kind != COMPRESS_NONE) {
		zfd = tmpfile_fd(fs);
		rc = zfd < 0 ? zfd : 0;
		if (rc == 0 && lseek(fd, 0, SEEK_SET) < 0)
			rc = -errno;
		rc = rc ?: decompress_fd((enum compress_kind)kind, fd, zfd, AIDX_MAX_BYTES, &plain);
		rc = rc ?: slurp(zfd, AIDX_MAX_BYTES, &text);
	} else {
		rc = slurp(fd, AIDX_MAX_BYTES, &text);
	}
	if (rc == 0 && (text.len < strlen(AIDX_HEADER) ||
			memcmp(text.data, AIDX_HEADER, strlen(AIDX_HEADER)) != 0))
		rc = -EBADMSG;
	rc = rc ?: attrcache_import(fs->ac, fs->conf.prefix, text.data, text.len, &merged, &bad);
	if (rc == 0) {
		snprintf(etag_out, S3_ETAG_MAX, "%s", o.etag);
		*rsize_out = o.size;
		log_debug("attribute index '%s': %zu entries merged, %zu lines ignored", key,
			  merged, bad);
		if (bad)
			log_warn("attribute index '%s': %zu malformed or foreign lines ignored", key,
				 bad);
		rc = 1;
	}
out:
	if (rc < 0)
		log_warn("attribute index '%s' not used: %s", key,
			 rc == -EBADMSG ? "not an index cdnfs wrote" : strerror(-rc));
	s3_obj_release(&o);
	buf_release(&text);
	close(fd);
	if (zfd >= 0)
		close(zfd);
	return rc;
}

/* Remember that the index of this ETag and size is merged: a pseudo-entry
 * of the attribute cache under the index's own key. */
static void remember(struct fs *fs, const char *key, const char *etag, uint64_t rsize)
{
	struct ac_entry e;

	memset(&e, 0, sizeof(e));
	snprintf(e.etag, sizeof(e.etag), "%s", etag);
	e.rsize = rsize;
	e.a.mode = S_IFREG | 0600;
	attrcache_put(fs->ac, key, &e);
}

void aidx_listed(struct fs *fs, const struct s3_list_page *pages, size_t npages)
{
	struct buf key;
	struct ac_entry seen;
	char etag[S3_ETAG_MAX];
	uint64_t rsize = 0;

	if (!fs->conf.attr_index || index_key(fs, &key) < 0)
		return;
	for (size_t i = 0; i < npages; i++) {
		for (size_t j = 0; j < pages[i].nentries; j++) {
			const struct s3_entry *e = &pages[i].entries[j];

			if (!e->key || strcmp(e->key, buf_str(&key)) != 0)
				continue;
			if (!e->etag || attrcache_get(fs->ac, buf_str(&key), e->etag, e->size, &seen))
				goto out; /* merged before */
			if (fetch_merge(fs, buf_str(&key), NULL, etag, &rsize) == 1)
				remember(fs, buf_str(&key), etag, rsize);
			goto out;
		}
	}
out:
	buf_release(&key);
}

struct keep_ctx {
	struct fs *fs;
	size_t plen;
	size_t private_keys, gone;
};

/* Entries worth sharing: not the index itself, not a private key, not an
 * object the tree knows to be gone or to have another version now. */
static int keep(const char *key, const struct ac_entry *e, void *arg)
{
	struct keep_ctx *k = arg;
	struct rule_result rr;
	struct node *n;
	int ok = 1;

	if (aidx_is_key(k->fs, key))
		return 0;
	rules_eval(k->fs->rules, key + k->plen, &rr);
	if (rr.signed_url_ttl > 0) {
		k->private_keys++;
		return 0;
	}
	n = tree_find_key(k->fs, key);
	if (n) {
		if (n->remote && n->known && !n->job && strcmp(n->etag, e->etag) != 0)
			ok = 0;
	} else {
		/* the parent directory: the key without its last segment
		 * (a marker "d/" too); the mount's prefix is the root */
		char *parent = strdup(key), *slash;
		struct node *dir = NULL;

		if (parent) {
			size_t len = strlen(parent);

			if (len > k->plen && parent[len - 1] == '/')
				parent[len - 1] = '\0';
			slash = strrchr(parent + k->plen, '/');
			*(slash ? slash + 1 : parent + k->plen) = '\0';
			dir = tree_find_key(k->fs, parent);
			free(parent);
		}
		if (dir && dir->kids && dir->listed > 0)
			ok = 0; /* listed, and not there: deleted */
	}
	if (!ok)
		k->gone++;
	return ok;
}

void aidx_save(struct fs *fs)
{
	struct buf key, text;
	struct ac_entry last;
	struct keep_ctx kc = { .fs = fs, .plen = strlen(fs->conf.prefix) };
	char etag[S3_ETAG_MAX] = "", new_etag[S3_ETAG_MAX];
	struct sigv4_kv h[8];
	struct s3_hdrs hdrs = { h, 0 };
	struct rule_result rr;
	uint64_t rsize = 0, zlen = 0;
	size_t count = 0;
	int fd = -1, zfd = -1, rc;

	pthread_mutex_lock(&fs->lock);
	rc = fs->conf.attr_index && !fs->conf.ro && fs->aidx_dirty;
	pthread_mutex_unlock(&fs->lock);
	if (!rc || index_key(fs, &key) < 0)
		return;
	/* merge what other mounts wrote since we last merged */
	if (attrcache_get(fs->ac, buf_str(&key), NULL, 0, &last))
		snprintf(etag, sizeof(etag), "%s", last.etag);
	if (fetch_merge(fs, buf_str(&key), etag[0] ? etag : NULL, new_etag, &rsize) == 1)
		remember(fs, buf_str(&key), new_etag, rsize);
	buf_init(&text, (size_t)AIDX_MAX_BYTES);
	rc = buf_addstr(&text, AIDX_HEADER);
	pthread_mutex_lock(&fs->lock);
	fs->aidx_dirty = 0; /* changes from now on make it dirty again */
	rc = rc ?: attrcache_export(fs->ac, fs->conf.prefix, keep, &kc, AIDX_MAX_ENTRIES, &text,
				    &count);
	pthread_mutex_unlock(&fs->lock);
	if (rc == -E2BIG) {
		log_warn("attribute index not written: more than %d objects under the mount",
			 AIDX_MAX_ENTRIES);
		rc = 0;
		goto out;
	}
	fd = rc < 0 ? rc : tmpfile_fd(fs);
	rc = fd < 0 ? fd : 0;
	if (rc == 0 && write(fd, text.data, text.len) != (ssize_t)text.len)
		rc = -EIO;
	if (rc == 0 && lseek(fd, 0, SEEK_SET) < 0)
		rc = -errno;
	zfd = rc < 0 ? rc : tmpfile_fd(fs);
	rc = zfd < 0 ? zfd : 0;
	rc = rc ?: compress_fd(COMPRESS_GZIP, fd, zfd, &zlen);
	if (rc < 0)
		goto out;
	rules_eval(fs->rules, AIDX_NAME, &rr);
	h[hdrs.n++] = (struct sigv4_kv){ "Cache-Control", "no-store" };
	h[hdrs.n++] = (struct sigv4_kv){ "Content-Encoding", "gzip" };
	h[hdrs.n++] = (struct sigv4_kv){ "Content-Type", "text/plain; charset=utf-8" };
	if (rr.sse)
		h[hdrs.n++] = (struct sigv4_kv){ "x-amz-server-side-encryption", rr.sse };
	if (rr.sse && rr.sse_kms_key_id)
		h[hdrs.n++] = (struct sigv4_kv){ "x-amz-server-side-encryption-aws-kms-key-id",
						 rr.sse_kms_key_id };
	rc = s3_put(fs->s3, buf_str(&key), &hdrs, zfd, 0, zlen, new_etag);
	if (rc == 0) {
		remember(fs, buf_str(&key), new_etag, zlen);
		log_info("attribute index '%s' written: %zu entries (%zu private, %zu gone "
			 "left out), %llu bytes", buf_str(&key), count, kc.private_keys, kc.gone,
			 (unsigned long long)zlen);
	}
out:
	if (rc < 0) {
		log_warn("attribute index '%s' not written: %s", buf_str(&key), strerror(-rc));
		pthread_mutex_lock(&fs->lock);
		fs->aidx_dirty = 1; /* try again later, or at unmount */
		pthread_mutex_unlock(&fs->lock);
	}
	if (fd >= 0)
		close(fd);
	if (zfd >= 0)
		close(zfd);
	buf_release(&text);
	buf_release(&key);
}
