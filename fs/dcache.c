/*
 * dcache.c - the read-side local disk cache of object data (see fs/dcache.h).
 *
 * Layout.  DIR/data/XX/NAME with NAME = HASH or HASH.GEN: HASH is the sha256
 * hex of the key, XX its first two digits.  NAME.meta is the sidecar, a text
 * file replaced atomically through NAME.meta.tmp:
 *     cdnfs-dcache 1 / etag E / size N / chunk N / compressed 0|1 /
 *     present HEX (bit i of byte i/8: chunk i is in the file) / key KEY
 * one per line, key last (it runs to the end of the file).  GEN > 0 only
 * when a new copy of a key had to be made while the old one was still open
 * (see Versions).  Compressed objects are downloaded into an unlinked temp
 * file in DIR/data, then decoded into the cache file.  dcache_open rebuilds
 * the index from the sidecars; a data file without a valid sidecar (or whose
 * size cannot hold the chunks its sidecar claims) is deleted, and so are
 * orphaned sidecars and temp files.
 *
 * Owns: struct dc_entry, one per cache file, and the struct dc_file handles.
 *
 * Entry states:
 *   idle     in the index, refs 0, fd -1: may be evicted or reset in place
 *   opening  one thread (re)creates, opens or adopts the file outside the
 *            lock; dcache_get of the same key waits on dc->cond
 *   open     refs > 0, fd open, shared by every handle and fetch job
 *   doomed   off the index, on dc->doomed: the file is unlinked and the
 *            entry freed when refs drops to 0 (forget, eviction, versions)
 * Chunk states (two bitmaps): missing -> inflight (exactly one thread
 * fetches it: the reader that claimed it or a read-ahead job) -> present.
 * A failed fetch goes back to missing and leaves its error in e->err for the
 * readers that were waiting for it.  Compressed objects use chunk 0 as the
 * claim for the whole object, whose fetch sets every chunk present.
 *
 * Versions.  The version is (etag, size, compressed); compressed is ignored
 * for a complete copy (dcache_adopt does not know it; a complete file is
 * never fetched again).  dcache_get of another version: if nobody holds the
 * entry it is reset in place (bitmap cleared; the opener deletes the old
 * sidecar and truncates the file); if somebody does, the old entry is
 * doomed (its holders keep reading their old copy) and a new entry is made
 * under the first name HASH[.GEN] no doomed entry of that key uses.
 *
 * Invariants: a chunk bit is set only after its bytes were written to the
 * file, and sidecars are written from a snapshot taken after that, so a
 * sidecar never claims data that is not in the file (no fsync: after a
 * power cut the data may be lost while a sidecar survived).  dc->st.bytes is
 * the sum of e->bytes over indexed entries; e->bytes is the size of the
 * chunks present.  Idle entries are evicted (taken off the index) in the
 * same critical section that makes the total exceed max_bytes, and unlinked
 * right after; open entries are never evicted, so the total exceeds
 * max_bytes only while open files hold more than that.
 *
 * Locking: dc->lock protects the index, both lists, the stats, dc->jobs,
 * every mutable field of every entry (refs, fd, bitmaps, version, flags,
 * meta sequence numbers, atime) and the handles' next_off.  It is never
 * held across network or file I/O: a thread marks what it works on
 * (opening, an inflight bit, meta_busy), unlocks, does the I/O, relocks and
 * publishes with a broadcast on dc->cond.  Whoever touches an entry outside
 * the lock holds a reference, so entries are freed only at refs 0.  key,
 * hash, gen, path and meta never change; the version changes only at refs 0
 * (so a reference holder may read etag, size, compressed, fd unlocked).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "compress.h"
#include "dcache.h"
#include "htab.h"
#include "log.h"
#include "s3.h"
#include "wq.h"

#define DC_HASH_LEN 64
#define DC_META_MAGIC "cdnfs-dcache 1"
#define DC_MAX_GEN 1000           /* copies of one key open at once, at most */
#define DC_META_MAX ((size_t)64 << 20)
#define DC_SIZE_MAX ((uint64_t)5 << 40) /* S3's largest object */

struct dc_entry {
	struct dc_entry *prev, *next; /* dc->lru when indexed, dc->doomed when doomed */
	struct dc_entry *victim;      /* eviction batch (the evicting thread only) */
	char hash[DC_HASH_LEN + 1];
	int gen;                      /* file name suffix; 0: none */
	char *key, *path, *meta;
	char etag[S3_ETAG_MAX];
	uint64_t size;                /* decoded size */
	int compressed;
	uint64_t nchunks;
	unsigned char *present, *inflight; /* bitmaps of nchunks bits */
	uint64_t bytes;               /* bytes of the chunks present */
	int refs;                     /* handles + read-ahead jobs + adopt */
	int fd;                       /* open while refs > 0 (after opening) */
	int opening;
	int trunc;                    /* the file holds another version */
	int doomed;
	int err;                      /* the last failed fetch, for its waiters */
	int meta_busy;                /* a thread is writing the sidecar */
	int meta_lazy;                /* adopted: the sidecar waits (dcache_sync_lazy) */
	const char *strip;            /* adopted: an xattr to remove with the sidecar */
	uint64_t meta_seq, meta_saved; /* bitmap/version changes; written up to */
	struct timespec atime;        /* last use, for the LRU order at open */
};

struct dc_list {
	struct dc_entry *head, *tail; /* LRU: least recently used at head */
};

struct dcache {
	struct dcache_conf conf;      /* dir points to our own copy */
	char *dir, *data;             /* DIR and DIR/data */
	struct s3 *s3;                /* borrowed */
	struct wq *io;                /* borrowed; NULL: no read-ahead */
	pthread_mutex_t lock;         /* see the top comment */
	pthread_cond_t cond;          /* opening ended, a fetch ended, a job ended */
	struct htab *index;           /* HASH -> entry */
	struct dc_list lru, doomed;
	int jobs;                     /* read-ahead jobs queued or running */
	uint64_t lazy;                /* entries with meta_lazy set */
	struct dcache_stats st;       /* files is computed on demand */
};

struct dc_file {
	struct dcache *dc;
	struct dc_entry *e;
	uint64_t next_off;            /* end of the last read (dc->lock) */
};

struct dc_job {
	struct dcache *dc;
	struct dc_entry *e;           /* holds a reference */
	uint64_t chunk;               /* claimed: its inflight bit is ours */
};

/* --- small helpers --------------------------------------------------------- */

static int bit_get(const unsigned char *map, uint64_t i)
{
	return (map[i / 8] >> (i % 8)) & 1;
}

static void bit_set(unsigned char *map, uint64_t i)
{
	map[i / 8] |= (unsigned char)(1u << (i % 8));
}

static void bit_clr(unsigned char *map, uint64_t i)
{
	map[i / 8] &= (unsigned char)~(1u << (i % 8));
}

static size_t map_bytes(uint64_t nchunks)
{
	return (size_t)((nchunks + 7) / 8);
}

static uint64_t chunk_len(const struct dcache *dc, const struct dc_entry *e, uint64_t i)
{
	uint64_t off = i * dc->conf.chunk;

	return e->size - off < dc->conf.chunk ? e->size - off : dc->conf.chunk;
}

static int key_hash(const char *key, char out[DC_HASH_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (EVP_Digest(key, strlen(key), md, &n, EVP_sha256(), NULL) != 1 || n != 32)
		return -EIO;
	for (unsigned int i = 0; i < n; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[DC_HASH_LEN] = '\0';
	return 0;
}

static int is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/* mkdir with exactly 0700 whatever the umask; an existing one is fine. */
static int mkdir_private(const char *path)
{
	if (mkdir(path, 0700) == 0)
		return chmod(path, 0700) < 0 ? -errno : 0;
	return errno == EEXIST ? 0 : -errno;
}

static int unlink_quiet(const char *path)
{
	if (unlink(path) < 0 && errno != ENOENT) {
		log_warn("cannot remove '%s': %s", path, strerror(errno));
		return -errno;
	}
	return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static ssize_t pread_full(int fd, char *p, size_t n, uint64_t off)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = pread(fd, p + done, n - done, (off_t)(off + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO; /* the cache file is shorter than its sidecar said */
		done += (size_t)r;
	}
	return (ssize_t)done;
}

/* --- lists ----------------------------------------------------------------- */

static void list_append(struct dc_list *l, struct dc_entry *e)
{
	e->next = NULL;
	e->prev = l->tail;
	if (l->tail)
		l->tail->next = e;
	else
		l->head = e;
	l->tail = e;
}

static void list_remove(struct dc_list *l, struct dc_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		l->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		l->tail = e->prev;
	e->prev = e->next = NULL;
}

/* Most recently used now (dc->lock held, e indexed). */
static void lru_touch(struct dcache *dc, struct dc_entry *e)
{
	clock_gettime(CLOCK_REALTIME, &e->atime);
	if (!e->doomed) {
		list_remove(&dc->lru, e);
		list_append(&dc->lru, e);
	}
}

/* --- entries --------------------------------------------------------------- */

static void entry_free(struct dc_entry *e)
{
	if (!e)
		return;
	if (e->fd >= 0)
		close(e->fd);
	free(e->key);
	free(e->path);
	free(e->meta);
	free(e->present);
	free(e->inflight);
	free(e);
}

/* A new entry without a version; key may be NULL (set by the caller). */
static int entry_new(struct dcache *dc, const char *hash, int gen, const char *key,
		     struct dc_entry **out)
{
	struct dc_entry *e = calloc(1, sizeof(*e));
	int rc = -ENOMEM;

	*out = NULL;
	if (!e)
		goto out;
	e->fd = -1;
	e->gen = gen;
	memcpy(e->hash, hash, DC_HASH_LEN + 1);
	if (key && !(e->key = strdup(key)))
		goto out;
	if ((gen ? asprintf(&e->path, "%s/%.2s/%s.%d", dc->data, hash, hash, gen)
		 : asprintf(&e->path, "%s/%.2s/%s", dc->data, hash, hash)) < 0) {
		e->path = NULL;
		goto out;
	}
	if (asprintf(&e->meta, "%s.meta", e->path) < 0) {
		e->meta = NULL;
		goto out;
	}
	*out = e;
	e = NULL;
	rc = 0;
out:
	entry_free(e);
	return rc;
}

/* Set or clear meta_lazy, keeping the count.  dc->lock held (or no other
 * thread yet). */
static void entry_lazy(struct dcache *dc, struct dc_entry *e, int lazy)
{
	if (e->meta_lazy == lazy)
		return;
	e->meta_lazy = lazy;
	if (lazy)
		dc->lazy++;
	else
		dc->lazy--;
}

/* Take (etag, size, compressed) with an empty bitmap.  e->bytes becomes 0:
 * the caller fixes dc->st.bytes. */
static int entry_set_version(struct dcache *dc, struct dc_entry *e, const char *etag,
			     uint64_t size, int compressed)
{
	uint64_t n = size ? (size - 1) / dc->conf.chunk + 1 : 0;
	unsigned char *p, *f;

	if (strlen(etag) >= sizeof(e->etag))
		return -EINVAL;
	p = calloc(1, map_bytes(n) + 1);
	f = calloc(1, map_bytes(n) + 1);
	if (!p || !f) {
		free(p);
		free(f);
		return -ENOMEM;
	}
	free(e->present);
	free(e->inflight);
	e->present = p;
	e->inflight = f;
	e->nchunks = n;
	e->size = size;
	e->compressed = !!compressed;
	snprintf(e->etag, sizeof(e->etag), "%s", etag);
	e->bytes = 0;
	e->meta_seq++;
	entry_lazy(dc, e, 0); /* a fetched version records its chunks as they come */
	return 0;
}

static int entry_complete(const struct dc_entry *e)
{
	for (uint64_t i = 0; i < e->nchunks; i++)
		if (!bit_get(e->present, i))
			return 0;
	return 1;
}

static void entry_mark_all(struct dcache *dc, struct dc_entry *e)
{
	for (uint64_t i = 0; i < e->nchunks; i++)
		bit_set(e->present, i);
	if (!e->doomed)
		dc->st.bytes += e->size - e->bytes;
	e->bytes = e->size;
	e->meta_seq++;
}

static int same_version(const struct dc_entry *e, const char *etag, uint64_t size,
			int compressed)
{
	if (strcmp(e->etag, etag) != 0 || e->size != size)
		return 0;
	return e->compressed == !!compressed || entry_complete(e);
}

/* --- index (dc->lock held) --------------------------------------------------- */

static int index_add(struct dcache *dc, struct dc_entry *e)
{
	int rc = htab_put(dc->index, e->hash, e, NULL);

	if (rc == 0) {
		list_append(&dc->lru, e);
		dc->st.bytes += e->bytes;
	}
	return rc;
}

/* Off the index onto the doomed list. */
static void entry_doom(struct dcache *dc, struct dc_entry *e)
{
	htab_del(dc->index, e->hash);
	list_remove(&dc->lru, e);
	dc->st.bytes -= e->bytes;
	entry_lazy(dc, e, 0);
	e->doomed = 1;
	list_append(&dc->doomed, e);
}

/* The first file name suffix no doomed copy of hash uses. */
static int free_gen(struct dcache *dc, const char *hash)
{
	for (int gen = 0; gen < DC_MAX_GEN; gen++) {
		const struct dc_entry *d = dc->doomed.head;

		while (d && !(d->gen == gen && strcmp(d->hash, hash) == 0))
			d = d->next;
		if (!d)
			return gen;
	}
	return -EMFILE;
}

static int entry_create_locked(struct dcache *dc, const char *hash, const char *key,
			       const char *etag, uint64_t size, int compressed,
			       struct dc_entry **out)
{
	struct dc_entry *e = NULL;
	int gen = free_gen(dc, hash);
	int rc = gen;

	if (rc < 0)
		goto out;
	rc = entry_new(dc, hash, gen, key, &e);
	if (rc == 0)
		rc = entry_set_version(dc, e, etag, size, compressed);
	if (rc == 0)
		rc = index_add(dc, e);
	if (rc < 0)
		goto out;
	e->trunc = 1; /* a leftover file of that name is not ours */
	*out = e;
	e = NULL;
out:
	entry_free(e);
	return rc;
}

/* The indexed entry for (key, version), waiting for an opening one; an
 * entry of another version is reset in place when idle, else doomed.
 * excl: the caller replaces the file, so an entry in use is doomed even when
 * its version matches.  dc->lock held. */
static int lookup_locked(struct dcache *dc, const char *hash, const char *key, const char *etag,
			 uint64_t size, int compressed, int excl, struct dc_entry **out)
{
	struct dc_entry *e;
	int rc;

	while ((e = htab_get(dc->index, hash)) && e->opening)
		pthread_cond_wait(&dc->cond, &dc->lock);
	if (e && !excl && same_version(e, etag, size, compressed)) {
		*out = e;
		return 0;
	}
	if (e && e->refs == 0) {
		uint64_t old = e->bytes;

		rc = entry_set_version(dc, e, etag, size, compressed);
		if (rc == 0) {
			dc->st.bytes -= old;
			e->trunc = 1;
			*out = e;
		}
		return rc;
	}
	if (e)
		entry_doom(dc, e);
	return entry_create_locked(dc, hash, key, etag, size, compressed, out);
}

/* --- sidecars ---------------------------------------------------------------- */

static int meta_format(const struct dcache *dc, const struct dc_entry *e, struct buf *b)
{
	static const char hex[] = "0123456789abcdef";
	int rc;

	rc = buf_addf(b, DC_META_MAGIC "\netag %s\nsize %llu\nchunk %llu\ncompressed %d\npresent ",
		      e->etag, (unsigned long long)e->size, (unsigned long long)dc->conf.chunk,
		      e->compressed);
	for (size_t i = 0; rc == 0 && i < map_bytes(e->nchunks); i++) {
		char two[2] = { hex[e->present[i] >> 4], hex[e->present[i] & 15] };

		rc = buf_add(b, two, 2);
	}
	if (rc == 0)
		rc = buf_addf(b, "\nkey %s\n", e->key);
	return rc;
}

/* Write text to e->meta atomically (tmp + rename).  No lock held. */
static int meta_write(const struct dc_entry *e, const char *text, size_t len)
{
	char *tmp = NULL;
	int fd = -1, rc = -ENOMEM;

	if (asprintf(&tmp, "%s.tmp", e->meta) < 0) {
		tmp = NULL;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	rc = fd < 0 || fchmod(fd, 0600) < 0 ? -errno : 0;
	if (rc == 0)
		rc = write_all(fd, text, len);
	if (fd >= 0 && close(fd) < 0 && rc == 0)
		rc = -errno;
	fd = -1;
	if (rc == 0 && rename(tmp, e->meta) < 0)
		rc = -errno;
	if (rc < 0) {
		log_warn("cannot write cache sidecar '%s': %s", e->meta, strerror(-rc));
		if (tmp)
			(void)unlink(tmp);
	}
out:
	free(tmp);
	return rc;
}

/* Bring the sidecar up to date.  Caller holds a reference.  One writer per
 * entry at a time; a caller finding one busy leaves the work to it (the
 * writer loops until nothing changed during its write). */
static void meta_sync(struct dcache *dc, struct dc_entry *e)
{
	struct buf text;
	uint64_t seq;
	const char *strip;
	int rc;

	buf_init(&text, DC_META_MAX);
	pthread_mutex_lock(&dc->lock);
	/* No sidecar for a file not (yet) holding this version: opening/trunc. */
	while (!e->meta_busy && !e->doomed && !e->opening && !e->trunc && !e->meta_lazy &&
	       e->meta_seq != e->meta_saved) {
		seq = e->meta_seq;
		buf_reset(&text);
		if (meta_format(dc, e, &text) < 0)
			break;
		e->meta_busy = 1;
		strip = e->strip;
		e->strip = NULL;
		pthread_mutex_unlock(&dc->lock);
		/* the staged file's journal entry, off the upload's path: in the
		 * cache directory it is no journal, only a block of disk */
		if (strip && removexattr(e->path, strip) < 0 && errno != ENODATA)
			log_debug("cannot remove '%s' from '%s': %s", strip, e->path,
				  strerror(errno));
		rc = meta_write(e, buf_str(&text), text.len);
		pthread_mutex_lock(&dc->lock);
		e->meta_busy = 0;
		if (rc < 0)
			break;
		e->meta_saved = seq;
	}
	pthread_mutex_unlock(&dc->lock);
	buf_release(&text);
}

/* --- releasing and evicting ---------------------------------------------------- */

/* Unlink the files of a doomed entry nobody holds, then free it. */
static void entry_unlink_free(struct dcache *dc, struct dc_entry *e)
{
	(void)unlink_quiet(e->path);
	(void)unlink_quiet(e->meta);
	pthread_mutex_lock(&dc->lock);
	list_remove(&dc->doomed, e);
	pthread_mutex_unlock(&dc->lock);
	entry_free(e);
}

/* Take idle entries off the index, least recently used first, until the
 * total is under 90% of max_bytes; the caller unlinks them (evict_unlink)
 * after unlocking.  Done in the same critical section that added the bytes,
 * so the total never shows more than max_bytes but for open files. */
static struct dc_entry *evict_pick_locked(struct dcache *dc)
{
	struct dc_entry *e, *next, *victims = NULL;
	uint64_t max = dc->conf.max_bytes, target = max - max / 10;

	if (!max || dc->st.bytes <= max)
		return NULL;
	for (e = dc->lru.head; e && dc->st.bytes > target; e = next) {
		next = e->next;
		if (e->refs || e->opening)
			continue;
		entry_doom(dc, e);
		e->victim = victims;
		victims = e;
		dc->st.evicted_files++;
	}
	return victims;
}

static void evict_unlink(struct dcache *dc, struct dc_entry *victims)
{
	struct dc_entry *e, *next;

	for (e = victims; e; e = next) {
		next = e->victim;
		log_debug("evicting '%s' from the cache", e->key);
		entry_unlink_free(dc, e);
	}
}

/* Drop a reference; the last one closes the file (recording the access time
 * for the LRU order of the next mount), unlinks a doomed entry and makes
 * room if the cache is over its size. */
static void entry_release(struct dcache *dc, struct dc_entry *e)
{
	const struct timespec ts[2] = { { 0, UTIME_NOW }, { 0, UTIME_OMIT } };
	struct dc_entry *victims = NULL;
	int fd = -1, drop = 0;

	meta_sync(dc, e);
	pthread_mutex_lock(&dc->lock);
	if (--e->refs == 0) {
		fd = e->fd;
		e->fd = -1;
		drop = e->doomed;
		lru_touch(dc, e);
		victims = evict_pick_locked(dc); /* may take e itself */
	}
	pthread_mutex_unlock(&dc->lock);
	if (fd >= 0) {
		if (!drop)
			(void)futimens(fd, ts); /* LRU hint only */
		close(fd);
	}
	if (drop)
		entry_unlink_free(dc, e);
	evict_unlink(dc, victims);
}

/* --- opening ------------------------------------------------------------------ */

/* The directory DIR/data/XX of an entry, created 0700 when missing. */
static int subdir_make(struct dcache *dc, const struct dc_entry *e)
{
	char *sub = NULL;
	int rc;

	if (asprintf(&sub, "%s/%.2s", dc->data, e->hash) < 0)
		return -ENOMEM;
	rc = mkdir_private(sub);
	free(sub);
	return rc;
}

/* Open the data file read-write, 0600 whatever the umask.  fd or -errno. */
static int open_data(struct dcache *dc, const struct dc_entry *e, int trunc)
{
	int flags = O_RDWR | O_CREAT | O_CLOEXEC | (trunc ? O_TRUNC : 0);
	int fd = open(e->path, flags, 0600), rc = 0;

	if (fd < 0 && errno == ENOENT && (rc = subdir_make(dc, e)) == 0)
		fd = open(e->path, flags, 0600);
	if (rc == 0 && (fd < 0 || fchmod(fd, 0600) < 0))
		rc = -errno;
	if (rc < 0 && fd >= 0)
		close(fd);
	return rc < 0 ? rc : fd;
}

/* Open (and for a new version first truncate) the file of an entry this
 * thread marked opening; publish the fd.  No lock held on entry. */
static int entry_open(struct dcache *dc, struct dc_entry *e, int trunc)
{
	int fd;

	if (trunc) {
		(void)unlink_quiet(e->meta); /* before the data: never a stale claim */
		/* a new inode, never the old one truncated: it may be an adopted
		 * staged file that a handle still reads through its own fd */
		(void)unlink_quiet(e->path);
	}
	fd = open_data(dc, e, trunc);
	if (fd < 0)
		log_warn("cannot open cache file '%s': %s", e->path, strerror(-fd));
	pthread_mutex_lock(&dc->lock);
	e->opening = 0;
	if (fd >= 0) {
		e->fd = fd;
		e->trunc = 0;
	}
	pthread_cond_broadcast(&dc->cond);
	pthread_mutex_unlock(&dc->lock);
	return fd < 0 ? fd : 0;
}

int dcache_other_version_held(struct dcache *dc, const char *key, const char *etag)
{
	char hash[DC_HASH_LEN + 1];
	const struct dc_entry *e;
	int held = 0;

	if (key_hash(key, hash) < 0)
		return 0;
	pthread_mutex_lock(&dc->lock);
	e = htab_get(dc->index, hash);
	held = e && e->refs > 0 && strcmp(e->etag, etag ? etag : "") != 0;
	for (e = dc->doomed.head; e && !held; e = e->next)
		held = e->refs > 0 && strcmp(e->hash, hash) == 0 &&
		       strcmp(e->etag, etag ? etag : "") != 0;
	pthread_mutex_unlock(&dc->lock);
	return held;
}

int dcache_get(struct dcache *dc, const char *key, const char *etag, uint64_t size,
	       int compressed, struct dc_file **out)
{
	char hash[DC_HASH_LEN + 1];
	struct dc_file *f = NULL;
	struct dc_entry *e = NULL;
	int rc, need_open = 0, trunc = 0;

	*out = NULL;
	rc = key_hash(key, hash);
	if (rc < 0)
		goto out;
	rc = -ENOMEM;
	f = calloc(1, sizeof(*f));
	if (!f)
		goto out;
	pthread_mutex_lock(&dc->lock);
	rc = lookup_locked(dc, hash, key, etag ? etag : "", size, compressed, 0, &e);
	if (rc == 0) {
		e->refs++;
		lru_touch(dc, e);
		if (e->fd < 0) {
			e->opening = need_open = 1;
			trunc = e->trunc;
		}
	}
	pthread_mutex_unlock(&dc->lock);
	if (rc == 0 && need_open && (rc = entry_open(dc, e, trunc)) < 0)
		entry_release(dc, e);
	if (rc < 0)
		goto out;
	f->dc = dc;
	f->e = e;
	*out = f;
	f = NULL;
out:
	free(f);
	return rc;
}

void dcache_put(struct dc_file *f)
{
	if (!f)
		return;
	entry_release(f->dc, f->e);
	free(f);
}

const char *dcache_path(const struct dc_file *f)
{
	return f->e->path;
}

/* --- fetching ---------------------------------------------------------------- */

/* GET chunk i (the whole object when it is one chunk) into the cache file. */
static int fetch_chunk(struct dcache *dc, struct dc_entry *e, uint64_t i, uint64_t *got)
{
	struct s3_get_req req = {
		.off = i * dc->conf.chunk,
		.len = chunk_len(dc, e, i),
		.ranged = e->nchunks > 1,
		.if_match = e->etag[0] ? e->etag : NULL,
		.fd = e->fd,
		.fd_off = i * dc->conf.chunk,
	};
	int rc = s3_get(dc->s3, e->key, &req, NULL, got);

	if (rc == 1 || (rc == 0 && *got != req.len))
		rc = -EIO; /* 304 without If-None-Match, or a short body */
	return rc;
}

/* An unlinked temp file in DIR/data (same file system as the cache). */
static int tmp_open(struct dcache *dc)
{
	char *name = NULL;
	int fd, rc;

	if (asprintf(&name, "%s/tmp.XXXXXX", dc->data) < 0)
		return -ENOMEM;
	fd = mkostemp(name, O_CLOEXEC);
	rc = fd < 0 ? -errno : 0;
	if (fd >= 0)
		(void)unlink(name);
	free(name);
	return rc < 0 ? rc : fd;
}

/* Decode the downloaded body (tmp) into the cache file: exactly e->size bytes. */
static int decode_into(struct dc_entry *e, int tmp, const char *encoding)
{
	int kind = compress_from_encoding(encoding);
	uint64_t n = 0;
	int rc;

	if (kind < 0) {
		log_warn("cannot decode '%s': unknown Content-Encoding '%s'", e->key, encoding);
		return -EIO;
	}
	if (lseek(tmp, 0, SEEK_SET) < 0 || lseek(e->fd, 0, SEEK_SET) < 0)
		return -errno;
	rc = decompress_fd(kind, tmp, e->fd, e->size + 1, &n);
	if (rc == 0 && n != e->size)
		rc = -EFBIG;
	if (rc == -EFBIG || rc == -EBADMSG) {
		log_warn("cannot decode '%s': %s data of %llu bytes, expected %llu", e->key,
			 rc == -EBADMSG ? "corrupt" : "wrong size", (unsigned long long)n,
			 (unsigned long long)e->size);
		rc = -EIO;
	}
	if (rc == 0 && ftruncate(e->fd, (off_t)e->size) < 0)
		rc = -errno;
	return rc;
}

/* GET a compressed object whole and decode it into the cache file.  The
 * file offset of e->fd is used only here (everything else is pread/pwrite),
 * and only by the thread that claimed the object. */
static int fetch_whole(struct dcache *dc, struct dc_entry *e, uint64_t *got)
{
	struct s3_get_req req = { .if_match = e->etag[0] ? e->etag : NULL };
	struct s3_obj obj;
	int rc;

	memset(&obj, 0, sizeof(obj));
	req.fd = tmp_open(dc);
	if (req.fd < 0)
		return req.fd;
	rc = s3_get(dc->s3, e->key, &req, &obj, got);
	if (rc == 1)
		rc = -EIO;
	if (rc == 0)
		rc = decode_into(e, req.fd, obj.content_encoding);
	s3_obj_release(&obj);
	close(req.fd);
	return rc;
}

/* Record the end of a fetch of chunk i that this thread claimed; returns
 * the entries evicted to make room, for evict_unlink. */
static struct dc_entry *fetch_publish(struct dcache *dc, struct dc_entry *e, uint64_t i,
				      int rc, uint64_t got)
{
	struct dc_entry *victims;

	pthread_mutex_lock(&dc->lock);
	dc->st.fetched_bytes += got;
	bit_clr(e->inflight, i);
	if (rc < 0) {
		e->err = rc;
	} else if (e->compressed) {
		entry_mark_all(dc, e);
	} else if (!bit_get(e->present, i)) {
		uint64_t n = chunk_len(dc, e, i);

		bit_set(e->present, i);
		e->bytes += n;
		if (!e->doomed)
			dc->st.bytes += n;
		e->meta_seq++;
	}
	victims = evict_pick_locked(dc);
	pthread_cond_broadcast(&dc->cond);
	pthread_mutex_unlock(&dc->lock);
	return victims;
}

/* Fetch chunk i, claimed by this thread (inflight bit set); then record it,
 * write the sidecar and make room.  Caller holds a reference. */
static int fetch_claimed(struct dcache *dc, struct dc_entry *e, uint64_t i)
{
	uint64_t got = 0, off = i * dc->conf.chunk;
	struct dc_entry *victims;
	int rc = e->compressed ? fetch_whole(dc, e, &got) : fetch_chunk(dc, e, i, &got);

	if (rc == -ESTALE)
		log_debug("'%s' changed in S3 (etag no longer '%s')", e->key, e->etag);
	else if (rc < 0 && e->compressed)
		log_warn("cannot fetch '%s': %s", e->key, strerror(-rc));
	else if (rc < 0)
		log_warn("cannot fetch '%s' bytes %llu-%llu: %s", e->key, (unsigned long long)off,
			 (unsigned long long)(off + chunk_len(dc, e, i)), strerror(-rc));
	victims = fetch_publish(dc, e, i, rc, got);
	if (rc == 0)
		meta_sync(dc, e);
	evict_unlink(dc, victims);
	return rc;
}

/* Make chunk i present: fetch it here unless another thread already is, in
 * which case wait for that fetch and share its outcome.  *waited is set
 * when the data was not there. */
static int chunk_ensure(struct dc_file *f, uint64_t i, int *missed)
{
	struct dcache *dc = f->dc;
	struct dc_entry *e = f->e;
	int waited = 0, claimed = 0, rc = 0;

	pthread_mutex_lock(&dc->lock);
	while (!bit_get(e->present, i)) {
		if (!bit_get(e->inflight, i)) {
			if (waited) {
				rc = e->err ? e->err : -EIO; /* the fetch we waited for failed */
			} else {
				bit_set(e->inflight, i);
				claimed = 1;
			}
			break;
		}
		waited = 1;
		pthread_cond_wait(&dc->cond, &dc->lock);
	}
	pthread_mutex_unlock(&dc->lock);
	if (waited || claimed)
		*missed = 1;
	if (claimed)
		rc = fetch_claimed(dc, e, i);
	return rc;
}

static void job_done(struct dcache *dc)
{
	pthread_mutex_lock(&dc->lock);
	dc->jobs--;
	pthread_cond_broadcast(&dc->cond);
	pthread_mutex_unlock(&dc->lock);
}

static void readahead_job(void *arg)
{
	struct dc_job *j = arg;
	struct dcache *dc = j->dc;

	(void)fetch_claimed(dc, j->e, j->chunk); /* logged there; readers retry */
	entry_release(dc, j->e);
	free(j);
	job_done(dc);
}

/* Queue a fetch of claimed chunk i holding a reference; undo on failure. */
static void readahead_push(struct dcache *dc, struct dc_entry *e, uint64_t i)
{
	struct dc_job *j = malloc(sizeof(*j));
	int rc = -ENOMEM;

	if (j) {
		*j = (struct dc_job){ .dc = dc, .e = e, .chunk = i };
		rc = wq_push(dc->io, readahead_job, j);
	}
	if (rc == 0)
		return;
	free(j);
	pthread_mutex_lock(&dc->lock);
	bit_clr(e->inflight, i);
	pthread_cond_broadcast(&dc->cond);
	pthread_mutex_unlock(&dc->lock);
	entry_release(dc, e);
	job_done(dc);
}

/* Fetch, in parallel on the io queue, the missing chunks among the
 * read_ahead ones after chunk last. */
static void read_ahead(struct dc_file *f, uint64_t last)
{
	struct dcache *dc = f->dc;
	struct dc_entry *e = f->e;
	uint64_t n = (uint64_t)(dc->conf.read_ahead > 0 ? dc->conf.read_ahead : 0);

	if (!dc->io || e->compressed)
		return;
	for (uint64_t i = last + 1; i < e->nchunks && i <= last + n; i++) {
		int claimed = 0;

		pthread_mutex_lock(&dc->lock);
		if (!bit_get(e->present, i) && !bit_get(e->inflight, i)) {
			bit_set(e->inflight, i);
			e->refs++;
			dc->jobs++;
			claimed = 1;
		}
		pthread_mutex_unlock(&dc->lock);
		if (claimed)
			readahead_push(dc, e, i);
	}
}

ssize_t dcache_read(struct dc_file *f, char *buf, size_t len, uint64_t off)
{
	struct dcache *dc = f->dc;
	struct dc_entry *e = f->e;
	uint64_t end, first, last;
	int seq, missed = 0, rc = 0;

	if (off >= e->size || len == 0)
		return 0;
	end = off + (len < e->size - off ? len : e->size - off);
	first = e->compressed ? 0 : off / dc->conf.chunk;
	last = e->compressed ? 0 : (end - 1) / dc->conf.chunk;
	pthread_mutex_lock(&dc->lock);
	seq = off == 0 || off == f->next_off;
	f->next_off = end;
	pthread_mutex_unlock(&dc->lock);
	if (seq) /* queued first, so it runs while this thread fetches */
		read_ahead(f, last);
	for (uint64_t i = first; i <= last && rc == 0; i++)
		rc = chunk_ensure(f, i, &missed);
	pthread_mutex_lock(&dc->lock);
	if (missed)
		dc->st.misses++;
	else
		dc->st.hits++;
	pthread_mutex_unlock(&dc->lock);
	if (rc == -ENOENT)
		return -EIO; /* the object is gone from S3: not "no such file" */
	if (rc < 0)
		return rc;
	return pread_full(e->fd, buf, (size_t)(end - off), off);
}

int dcache_fill(struct dc_file *f)
{
	int missed = 0, rc = 0;

	if (f->e->compressed)
		return f->e->nchunks ? chunk_ensure(f, 0, &missed) : 0;
	for (uint64_t i = 0; i < f->e->nchunks && rc == 0; i++) {
		read_ahead(f, i);
		rc = chunk_ensure(f, i, &missed);
	}
	return rc;
}

/* --- adopt, forget, stats ---------------------------------------------------- */

/* Move the staged file into place for an entry this thread marked opening. */
static int adopt_file(struct dcache *dc, struct dc_entry *e, const char *staged)
{
	int rc = unlink_quiet(e->meta); /* the old version's claims go first */

	/* (staged files are 0600 already; the subdirectories are made at
	 * open, so one is only missing when removed behind our back) */
	if (rc == 0 && rename(staged, e->path) < 0) {
		rc = -errno;
		if (rc == -ENOENT && subdir_make(dc, e) == 0 && rename(staged, e->path) == 0)
			rc = 0;
	}
	if (rc < 0)
		log_warn("cannot move '%s' into the cache as '%s': %s", staged, e->path,
			 strerror(-rc));
	return rc;
}

int dcache_adopt(struct dcache *dc, const char *key, const char *etag, uint64_t size,
		 const char *staged_path, const char *strip_xattr)
{
	char hash[DC_HASH_LEN + 1];
	struct dc_entry *e = NULL;
	int rc = key_hash(key, hash);

	if (rc < 0)
		return rc;
	pthread_mutex_lock(&dc->lock);
	rc = lookup_locked(dc, hash, key, etag ? etag : "", size, 0, 1, &e);
	if (rc == 0) {
		e->refs++;
		e->opening = 1;
		lru_touch(dc, e);
	}
	pthread_mutex_unlock(&dc->lock);
	if (rc < 0)
		return rc;
	rc = adopt_file(dc, e, staged_path);
	pthread_mutex_lock(&dc->lock);
	if (rc == 0) {
		e->trunc = 0;
		e->strip = strip_xattr;
		entry_mark_all(dc, e);
		/* the sidecar later (dcache_sync_lazy): a file per upload is
		 * the main cost of a tree of small files (bench/ANALYSIS.md) */
		if (!e->doomed)
			entry_lazy(dc, e, 1);
	} else if (!e->doomed) {
		entry_doom(dc, e); /* whatever was cached for key is stale now */
	}
	e->opening = 0;
	pthread_cond_broadcast(&dc->cond);
	pthread_mutex_unlock(&dc->lock);
	entry_release(dc, e); /* may evict */
	return rc;
}

uint64_t dcache_lazy_count(struct dcache *dc)
{
	uint64_t n;

	pthread_mutex_lock(&dc->lock);
	n = dc->lazy;
	pthread_mutex_unlock(&dc->lock);
	return n;
}

void dcache_sync_lazy(struct dcache *dc)
{
	struct dc_entry *batch[64];
	size_t n;

	do {
		n = 0;
		pthread_mutex_lock(&dc->lock);
		for (struct dc_entry *e = dc->lru.head; e && n < ARRAY_SIZE(batch); e = e->next) {
			if (!e->meta_lazy || e->opening)
				continue;
			entry_lazy(dc, e, 0);
			e->refs++;
			batch[n++] = e;
		}
		pthread_mutex_unlock(&dc->lock);
		for (size_t i = 0; i < n; i++)
			entry_release(dc, batch[i]); /* writes the sidecar */
	} while (n == ARRAY_SIZE(batch));
}

void dcache_forget(struct dcache *dc, const char *key)
{
	char hash[DC_HASH_LEN + 1];
	struct dc_entry *e;
	int drop = 0;

	if (key_hash(key, hash) < 0)
		return;
	pthread_mutex_lock(&dc->lock);
	e = htab_get(dc->index, hash);
	if (e) {
		entry_doom(dc, e);
		drop = e->refs == 0;
	}
	pthread_mutex_unlock(&dc->lock);
	if (drop)
		entry_unlink_free(dc, e);
}

void dcache_get_stats(struct dcache *dc, struct dcache_stats *out)
{
	pthread_mutex_lock(&dc->lock);
	*out = dc->st;
	out->files = htab_count(dc->index);
	pthread_mutex_unlock(&dc->lock);
}

/* --- the scan at open ------------------------------------------------------ */

/* Split "name value\n" at *p; value NUL-terminated in place. */
static char *meta_field(char **p, const char *name)
{
	size_t n = strlen(name);
	char *v, *nl;

	if (strncmp(*p, name, n) != 0 || (*p)[n] != ' ')
		return NULL;
	v = *p + n + 1;
	nl = strchr(v, '\n');
	if (!nl)
		return NULL;
	*nl = '\0';
	*p = nl + 1;
	return v;
}

/* The last line, "key KEY\n": KEY runs to the end (keys may hold '\n'). */
static char *meta_key(char *p)
{
	size_t n;

	if (strncmp(p, "key ", 4) != 0)
		return NULL;
	p += 4;
	n = strlen(p);
	if (n == 0 || p[n - 1] != '\n')
		return NULL;
	p[n - 1] = '\0';
	return p;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno || *end ? -EINVAL : 0;
}

/* Bit i of a bitmap written by meta_format (byte b as two hex digits). */
static int hex_bit(const char *hex, uint64_t i)
{
	char c = hex[2 * (i / 8) + (i % 8 < 4)];
	int v = c >= 'a' ? c - 'a' + 10 : c - '0';

	return (v >> (i % 4)) & 1;
}

/* Load the bitmap, written with chunk size chunk, into e (sized for the
 * current chunk size).  Of a copy made with another chunk size only a
 * complete one is kept. */
static int meta_bitmap(struct dcache *dc, struct dc_entry *e, const char *hex, uint64_t chunk)
{
	uint64_t n = e->size ? (e->size - 1) / chunk + 1 : 0;
	size_t len = strlen(hex);

	if (len != 2 * map_bytes(n) || !is_hex(hex, len))
		return -EINVAL;
	for (uint64_t i = 0; chunk != dc->conf.chunk && i < n; i++)
		if (!hex_bit(hex, i))
			return -EINVAL;
	for (uint64_t i = 0; i < e->nchunks; i++) {
		if (hex_bit(hex, chunk == dc->conf.chunk ? i : 0)) {
			bit_set(e->present, i);
			e->bytes += chunk_len(dc, e, i);
		}
	}
	return 0;
}

/* Parse a sidecar's text into e (a fresh entry of the right hash). */
static int meta_parse(struct dcache *dc, struct dc_entry *e, char *text)
{
	char *p = text, *etag, *present, *key, hash[DC_HASH_LEN + 1];
	uint64_t size, chunk, comp;
	int rc = -EINVAL;

	if (strncmp(p, DC_META_MAGIC "\n", sizeof(DC_META_MAGIC)) != 0)
		return rc;
	p += sizeof(DC_META_MAGIC);
	etag = meta_field(&p, "etag");
	if (parse_u64(meta_field(&p, "size"), &size) < 0 ||
	    parse_u64(meta_field(&p, "chunk"), &chunk) < 0 || chunk == 0 ||
	    parse_u64(meta_field(&p, "compressed"), &comp) < 0 || comp > 1)
		return rc;
	present = meta_field(&p, "present");
	key = meta_key(p);
	/* the bitmap's length must match the size before anything is sized
	 * by it: a damaged size costs a refetch, never the mount */
	if (!etag || !present || size > DC_SIZE_MAX ||
	    strlen(present) != 2 * map_bytes(size ? (size - 1) / chunk + 1 : 0) ||
	    !key || key_hash(key, hash) < 0 || strcmp(hash, e->hash) != 0 ||
	    !(e->key = strdup(key)))
		return rc;
	rc = entry_set_version(dc, e, etag, size, (int)comp);
	if (rc == 0)
		rc = meta_bitmap(dc, e, present, chunk);
	e->meta_saved = e->meta_seq; /* what is on disk */
	return rc;
}

static int read_text(const char *path, char **out)
{
	struct buf b;
	char tmp[8192];
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;
	ssize_t n;

	*out = NULL;
	if (fd < 0)
		return -errno;
	buf_init(&b, DC_META_MAX);
	while (rc == 0 && (n = read(fd, tmp, sizeof(tmp))) != 0) {
		if (n < 0)
			rc = errno == EINTR ? 0 : -errno;
		else
			rc = buf_add(&b, tmp, (size_t)n);
	}
	close(fd);
	if (rc == 0 && !(*out = buf_detach(&b, NULL)))
		rc = -ENOMEM;
	buf_release(&b);
	return rc;
}

static int ts_cmp(const struct timespec *a, const struct timespec *b)
{
	if (a->tv_sec != b->tv_sec)
		return a->tv_sec < b->tv_sec ? -1 : 1;
	if (a->tv_nsec != b->tv_nsec)
		return a->tv_nsec < b->tv_nsec ? -1 : 1;
	return 0;
}

/* The data file must hold every chunk the sidecar claims.  Its last use is
 * the later of atime (set at the last close) and mtime. */
static int data_check(struct dcache *dc, struct dc_entry *e)
{
	struct stat st;
	uint64_t need = 0;

	if (stat(e->path, &st) < 0 || !S_ISREG(st.st_mode))
		return -EINVAL;
	for (uint64_t i = 0; i < e->nchunks; i++)
		if (bit_get(e->present, i))
			need = i * dc->conf.chunk + chunk_len(dc, e, i);
	e->atime = ts_cmp(&st.st_atim, &st.st_mtim) > 0 ? st.st_atim : st.st_mtim;
	return (uint64_t)st.st_size >= need ? 0 : -EINVAL;
}

struct dc_scan {
	struct dc_entry **v;      /* entries found, for the LRU order */
	size_t n, cap;
};

static int scan_keep(struct dc_scan *s, struct dc_entry *e)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		struct dc_entry **v = reallocarray(s->v, cap, sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = e;
	return 0;
}

/* Load the data file HASH[.GEN] and its sidecar; delete both when invalid
 * or when another copy of the key was loaded already. */
static int scan_file(struct dcache *dc, struct dc_scan *s, const char *hash, int gen)
{
	struct dc_entry *e = NULL;
	char *text = NULL;
	int rc = entry_new(dc, hash, gen, NULL, &e);

	if (rc < 0)
		return rc;
	rc = read_text(e->meta, &text);
	if (rc == 0)
		rc = meta_parse(dc, e, text);
	if (rc == 0)
		rc = data_check(dc, e);
	if (rc == 0 && htab_get(dc->index, hash))
		rc = -EEXIST;
	if (rc == -ENOMEM)
		goto out;
	if (rc < 0) {
		log_debug("dropping cache file '%s': no valid sidecar", e->path);
		(void)unlink_quiet(e->path);
		(void)unlink_quiet(e->meta);
		rc = 0;
		goto out;
	}
	rc = htab_put(dc->index, e->hash, e, NULL);
	if (rc == 0 && (rc = scan_keep(s, e)) < 0)
		htab_del(dc->index, e->hash);
	if (rc == 0)
		e = NULL;
out:
	free(text);
	entry_free(e);
	return rc;
}

/* "HASH" or "HASH.GEN" under directory xx -> hash, gen; -EINVAL otherwise. */
static int parse_name(const char *xx, const char *name, char *hash, int *gen)
{
	const char *dot = name + DC_HASH_LEN;
	uint64_t g = 0;

	if (strlen(name) < DC_HASH_LEN || !is_hex(name, DC_HASH_LEN) ||
	    strncmp(name, xx, 2) != 0)
		return -EINVAL;
	if (*dot && (*dot != '.' || parse_u64(dot + 1, &g) < 0 || g == 0 || g >= DC_MAX_GEN))
		return -EINVAL;
	memcpy(hash, name, DC_HASH_LEN);
	hash[DC_HASH_LEN] = '\0';
	*gen = (int)g;
	return 0;
}

static int has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);

	return n >= m && strcmp(s + n - m, suf) == 0;
}

/* One file of DIR/data/XX. */
static int scan_name(struct dcache *dc, struct dc_scan *s, const char *sub, const char *xx,
		     const char *name)
{
	char hash[DC_HASH_LEN + 1], *path = NULL;
	struct stat st;
	int gen, rc = 0;

	if (asprintf(&path, "%s/%s", sub, name) < 0)
		return -ENOMEM;
	if (has_suffix(name, ".tmp")) {
		(void)unlink_quiet(path); /* a sidecar write cut short */
	} else if (has_suffix(name, ".meta")) {
		size_t dot = strlen(path) - strlen(".meta");

		path[dot] = '\0'; /* the data file's name */
		if (stat(path, &st) < 0 && errno == ENOENT) {
			path[dot] = '.';
			(void)unlink_quiet(path); /* orphaned sidecar */
		}
	} else if (parse_name(xx, name, hash, &gen) == 0) {
		rc = scan_file(dc, s, hash, gen);
	}
	free(path);
	return rc;
}

static int scan_sub(struct dcache *dc, struct dc_scan *s, const char *xx)
{
	struct dirent *de;
	char *sub = NULL;
	DIR *d = NULL;
	int rc = 0;

	if (asprintf(&sub, "%s/%s", dc->data, xx) < 0)
		return -ENOMEM;
	d = opendir(sub);
	if (!d) {
		log_warn("cannot read cache directory '%s': %s", sub, strerror(errno));
		goto out;
	}
	/* Entries are only deleted from d while reading it, which readdir allows. */
	while (rc == 0 && (de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			rc = scan_name(dc, s, sub, xx, de->d_name);
	closedir(d);
out:
	free(sub);
	return rc;
}

static int by_atime(const void *a, const void *b)
{
	const struct dc_entry *x = *(struct dc_entry *const *)a;
	const struct dc_entry *y = *(struct dc_entry *const *)b;

	return ts_cmp(&x->atime, &y->atime);
}

/* Rebuild the index from DIR/data; LRU order from the files' times. */
static int scan(struct dcache *dc)
{
	struct dc_scan s = { 0 };
	struct dirent *de;
	DIR *d = opendir(dc->data);
	int rc = 0;

	if (!d)
		return -errno;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, "tmp.", 4) == 0) {
			(void)unlinkat(dirfd(d), de->d_name, 0);
		} else if (strlen(de->d_name) == 2 && is_hex(de->d_name, 2)) {
			rc = scan_sub(dc, &s, de->d_name);
		}
	}
	closedir(d);
	if (s.n)
		qsort(s.v, s.n, sizeof(*s.v), by_atime);
	for (size_t i = 0; i < s.n; i++) {
		list_append(&dc->lru, s.v[i]);
		dc->st.bytes += s.v[i]->bytes;
	}
	free(s.v);
	return rc;
}

/* --- open and close ---------------------------------------------------------- */

static void entry_list_free(struct dc_list *l, int unlink_files)
{
	struct dc_entry *e, *next;

	for (e = l->head; e; e = next) {
		next = e->next;
		if (e->refs)
			log_warn("cache file '%s' still referenced at close", e->path);
		if (unlink_files) {
			(void)unlink_quiet(e->path);
			(void)unlink_quiet(e->meta);
		}
		entry_free(e);
	}
	l->head = l->tail = NULL;
}

static void dcache_destroy(struct dcache *dc)
{
	if (!dc)
		return;
	htab_free(dc->index, NULL);
	entry_list_free(&dc->lru, 0);
	entry_list_free(&dc->doomed, 1);
	pthread_cond_destroy(&dc->cond);
	pthread_mutex_destroy(&dc->lock);
	free(dc->dir);
	free(dc->data);
	free(dc);
}

int dcache_open(struct dcache **out, const struct dcache_conf *conf, struct s3 *s3,
		struct wq *io)
{
	struct dcache *dc = NULL;
	struct dc_entry *victims;
	int rc = -EINVAL;

	*out = NULL;
	if (!conf->dir || !*conf->dir || conf->chunk == 0)
		return rc;
	rc = -ENOMEM;
	dc = calloc(1, sizeof(*dc));
	if (!dc)
		return rc;
	pthread_mutex_init(&dc->lock, NULL);
	pthread_cond_init(&dc->cond, NULL);
	dc->conf = *conf;
	dc->s3 = s3;
	dc->io = io;
	dc->dir = strdup(conf->dir);
	dc->conf.dir = dc->dir;
	if (!dc->dir || htab_new(&dc->index) < 0)
		goto out;
	if (asprintf(&dc->data, "%s/data", dc->dir) < 0) {
		dc->data = NULL;
		goto out;
	}
	rc = mkdir_private(dc->dir);
	if (rc == 0)
		rc = mkdir_private(dc->data);
	/* the 256 subdirectories now, not one by one during a deploy */
	for (int i = 0; rc == 0 && i < 256; i++) {
		char *sub = NULL;

		if (asprintf(&sub, "%s/%02x", dc->data, i) < 0)
			rc = -ENOMEM;
		else
			rc = mkdir_private(sub);
		free(sub);
	}
	if (rc == 0)
		rc = scan(dc);
	if (rc < 0) {
		log_error("cannot open the cache in '%s': %s", dc->dir, strerror(-rc));
		goto out;
	}
	pthread_mutex_lock(&dc->lock);
	victims = evict_pick_locked(dc); /* cache_size may be smaller than last time */
	pthread_mutex_unlock(&dc->lock);
	evict_unlink(dc, victims);
	*out = dc;
	dc = NULL;
out:
	dcache_destroy(dc);
	return rc;
}

void dcache_close(struct dcache *dc)
{
	struct dc_entry *e;

	if (!dc)
		return;
	pthread_mutex_lock(&dc->lock);
	while (dc->jobs)
		pthread_cond_wait(&dc->cond, &dc->lock);
	pthread_mutex_unlock(&dc->lock);
	/* Sidecars are written as chunks arrive; this retries failed writes
	 * and writes those of adopted files not written yet. */
	for (e = dc->lru.head; e; e = e->next) {
		entry_lazy(dc, e, 0);
		meta_sync(dc, e);
	}
	dcache_destroy(dc);
}
