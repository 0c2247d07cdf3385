/*
 * meta.c - keeps the tree current with S3: listings, HEADs, freshness.
 *
 * A directory is "fresh" for stat_ttl seconds after its listing completed;
 * lookups inside a fresh directory are answered from the tree, positive or
 * negative, with no request.  The first listing of a directory is recursive
 * (no delimiter) and, if the whole subtree fits in RECURSIVE_PAGES pages,
 * primes every directory below it at once: a tree of a few thousand files
 * costs a handful of LISTs.  A bigger subtree falls back to a delimiter
 * listing of just that directory (and remembers it is big).
 *
 * Listing merge rules: an entry whose key has a pending job keeps its local
 * state; a pending DELETE hides the key; nodes absent from a completed
 * listing are removed unless pinned (a pending job below them).  A listing
 * is a picture of the moment it started (`start`): a node this mount changed
 * after that (an upload finished, a rename; node->seen > start) keeps its
 * state and is not pruned, and a key deleted after that (fs->tombs) is not
 * brought back.  Otherwise a listing sent just before an upload finished
 * would point the node at the old object again, and the read cache would
 * still hold the old bytes.
 *
 * Attributes: a listing gives size, ETag and Last-Modified; the POSIX
 * metadata comes from the attribute cache (same ETag and size) or, for
 * objects never seen, from HEADs sent in parallel for the whole directory.
 *
 * Locking: called with fs->lock held; network work drops it (the dir's
 * `listing` flag keeps concurrent listers of one directory to one request,
 * the others wait on fs->cond).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attrcache.h"
#include "fs.h"
#include "log.h"
#include "wb.h"
#include "wq.h"

#define RECURSIVE_PAGES 5
#define LIST_MAX_PAGES 100000
#define LIST_MAX_EMPTY 16 /* consecutive truncated pages without a name */
#define HEAD_MAX_PARALLEL 16

/* Listing results gathered without the lock. */
struct listing {
	struct s3_list_page *pages;
	size_t npages;
	int recursive;
	int complete;
};

static void listing_release(struct listing *l)
{
	for (size_t i = 0; i < l->npages; i++)
		s3xml_list_release(&l->pages[i]);
	free(l->pages);
	memset(l, 0, sizeof(*l));
}

/* The last name of a page in listing order (keys and prefixes are each
 * sorted), or NULL for a page without any. */
static const char *page_high(const struct s3_list_page *p)
{
	const char *k = p->nentries ? p->entries[p->nentries - 1].key : NULL;
	const char *c = p->nprefixes ? p->prefixes[p->nprefixes - 1] : NULL;

	if (!k || (c && strcmp(c, k) > 0))
		return c;
	return k;
}

/* A truncated page must move the listing on: its names come after the
 * previous page's (S3 lists in key order), and a server may send a few
 * empty pages but not an endless run of them.  A server that answers the
 * same page (same or new token) forever would otherwise keep us listing. */
static int page_progress(const struct s3_list_page *p, const char **high, int *empty,
			 const char *prefix)
{
	const char *h = page_high(p);

	if (!h) {
		if (++*empty <= LIST_MAX_EMPTY)
			return 0;
	} else if (!*high || strcmp(h, *high) > 0) {
		*high = h;
		*empty = 0;
		return 0;
	}
	log_warn("listing of '%s' does not advance (the server repeats a page): stopped",
		 prefix);
	return -EIO;
}

/* Fetch up to max_pages pages (0: all).  Unlocked. */
static int fetch_listing(struct fs *fs, const char *prefix, int recursive, int max_pages,
			 struct listing *l)
{
	char *token = NULL;
	const char *high = NULL;
	int rc = 0, empty = 0;

	memset(l, 0, sizeof(*l));
	l->recursive = recursive;
	for (;;) {
		struct s3_list_page *p;

		if (max_pages && (int)l->npages >= max_pages)
			break;
		p = realloc(l->pages, (l->npages + 1) * sizeof(*p));
		if (!p) {
			rc = -ENOMEM;
			break;
		}
		l->pages = p;
		rc = s3_list(fs->s3, prefix, recursive ? NULL : "/", token, 1000,
			     &l->pages[l->npages]);
		l->npages++;
		if (rc < 0)
			break;
		p = &l->pages[l->npages - 1];
		if (!p->truncated || !p->next_token) {
			l->complete = 1;
			break;
		}
		if (l->npages > LIST_MAX_PAGES) { /* a listing that never ends */
			log_warn("listing of '%s' exceeds %d pages: stopped", prefix,
				 LIST_MAX_PAGES);
			rc = -EIO;
			break;
		}
		rc = page_progress(p, &high, &empty, prefix);
		if (rc < 0)
			break;
		token = p->next_token;
	}
	return rc;
}

static int valid_name(const char *s, size_t len)
{
	if (len == 0 || len > 255)
		return 0;
	if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
		return 0;
	return memchr(s, '/', len) == NULL && memchr(s, '\0', len) == NULL;
}

/* Apply a cached or HEAD-derived entry to a file node. */
static void apply_known(struct node *n, const struct ac_entry *e)
{
	n->a = e->a;
	n->compressed = (unsigned)e->compressed;
	n->known = 1;
}

/* A "dir/" marker object: its metadata (s3fs keeps mode/uid/gid/mtime of
 * directories there) from the attribute cache, else a HEAD later. */
static void merge_marker(struct fs *fs, struct node *n, const struct s3_entry *e,
			 const char *fullkey)
{
	struct ac_entry ce;
	const char *etag = e->etag ? e->etag : "";

	if (n->job)
		return;
	if (n->remote && n->known && strcmp(n->etag, etag) == 0)
		return;
	n->remote = 1;
	n->rsize = e->size;
	snprintf(n->etag, sizeof(n->etag), "%s", etag);
	if (attrcache_get(fs->ac, fullkey, etag, e->size, &ce)) {
		apply_known(n, &ce);
		n->a.mode = (n->a.mode & ~S_IFMT) | S_IFDIR;
	} else {
		tree_default_attr(fs, &n->a, S_IFDIR);
		n->a.mtime = e->mtime;
		n->known = 0;
	}
}

/* Every segment of rel is a file name ("x/" markers end in one '/'), so a
 * key like "a//b" or "a/../b" adds nothing at all, not even "a". */
static int valid_rel(const char *rel)
{
	for (const char *p = rel;;) {
		size_t len = strcspn(p, "/");

		if (!valid_name(p, len))
			return 0;
		if (p[len] == '\0' || p[len + 1] == '\0')
			return 1;
		p += len + 1;
	}
}

void meta_deleted(struct fs *fs, const char *key)
{
	double *t;
	void *old = NULL;

	if (fs->listings == 0)
		return; /* no listing in flight can show it */
	t = malloc(sizeof(*t));
	if (!t || htab_put(fs->tombs, key, t, &old) < 0) {
		/* no memory: the listings in flight are dropped instead */
		free(t);
		fs->tombs_lost = fs_now();
		return;
	}
	free(old);
	*t = fs_now();
}

/* Was key (or a "dir/" prefix of it) deleted after a listing that began at
 * start?  Locked. */
static int tombstoned(struct fs *fs, const char *key, double start)
{
	double *t;
	char *k;
	int hit = 0;

	if (htab_count(fs->tombs) == 0)
		return 0;
	t = htab_get(fs->tombs, key);
	if (t && *t >= start)
		return 1;
	k = strdup(key); /* each "dir/" prefix in turn, cut in place */
	for (char *s = k ? strchr(k, '/') : NULL; s && !hit; s = strchr(s + 1, '/')) {
		char c = s[1];

		s[1] = '\0';
		t = htab_get(fs->tombs, k);
		hit = t && *t >= start;
		s[1] = c;
	}
	free(k);
	return hit;
}

/* Merge one object entry at rel path (relative to dir, may contain '/'). */
static void merge_entry(struct fs *fs, struct node *dir, const char *rel,
			const struct s3_entry *e, const char *fullkey, double now)
{
	struct node *d = dir, *n;
	struct wb_job *j;
	const char *p = rel;
	char comp[256];

	if (!valid_rel(rel)) {
		log_debug("skipping key '%s': not a valid file name", fullkey);
		return;
	}
	for (;;) {
		size_t len = strcspn(p, "/");

		if (!valid_name(p, len)) {
			log_debug("skipping key '%s': not a valid file name", fullkey);
			return;
		}
		memcpy(comp, p, len);
		comp[len] = '\0';
		if (p[len] == '/') { /* a directory on the way, or a marker "x/" */
			int newer;

			n = tree_add(d, comp, S_IFDIR);
			if (!n)
				return;
			if (!n->known)
				tree_default_attr(fs, &n->a, S_IFDIR);
			newer = n->seen > now; /* changed here after the listing began */
			if (!newer)
				n->seen = now;
			if (p[len + 1] == '\0') { /* marker object */
				if (!newer && !tombstoned(fs, fullkey, now))
					merge_marker(fs, n, e, fullkey);
				return;
			}
			d = n;
			p += len + 1;
			continue;
		}
		break;
	}
	n = tree_child(d, comp);
	if (n && n->kids) { /* both "x" and "x/" exist: the directory wins */
		log_debug("key '%s' hidden by a directory of the same name", fullkey);
		return;
	}
	j = wb_find(fs->wb, fullkey);
	if (j && (j->kind != WB_META || n)) { /* local state wins; a DELETE hides the key */
		if (n && j->kind != WB_DELETE && n->seen < now)
			n->seen = now;
		return;
	}
	if (n && n->seen > now)
		return; /* this mount changed it after the listing began */
	if (tombstoned(fs, fullkey, now))
		return; /* deleted after the listing began */
	if (!n && !(n = tree_add(d, comp, S_IFREG)))
		return;
	if (j) { /* a metadata change recovered from the journal */
		n->job = j;
		j->node = n;
		n->a = j->a;
		n->known = 1;
	}
	n->seen = now;
	n->remote = 1;
	if (n->job)
		return;
	if (strcmp(n->etag, e->etag ? e->etag : "") != 0 || n->rsize != e->size || !n->known) {
		struct ac_entry ce;

		if (n->etag[0] && strcmp(n->etag, e->etag ? e->etag : "") != 0)
			log_debug("'%s' changed in S3: etag %s -> %s", fullkey, n->etag,
				  e->etag ? e->etag : "");

		snprintf(n->etag, sizeof(n->etag), "%s", e->etag ? e->etag : "");
		n->rsize = e->size;
		if (attrcache_get(fs->ac, fullkey, n->etag, e->size, &ce)) {
			apply_known(n, &ce);
		} else {
			tree_default_attr(fs, &n->a, S_IFREG);
			n->a.size = e->size;
			n->a.mtime = e->mtime;
			n->known = 0;
			n->compressed = 0;
		}
	}
}

static int pinned(struct node *n);

static int pinned_cb(const char *k, void *v, void *arg)
{
	(void)k;
	(void)arg;
	return pinned(v);
}

static int pinned(struct node *n)
{
	if (n->job || n->pins)
		return 1;
	return n->kids ? htab_foreach(n->kids, pinned_cb, NULL) : 0;
}

struct prune_ctx {
	double start;
	int recursive;
	double now;
	struct node *victims[256];
	int nv;
};

static int prune_cb(const char *k, void *v, void *arg)
{
	struct node *n = v;
	struct prune_ctx *pc = arg;

	(void)k;
	if (n->seen < pc->start && !pinned(n)) {
		if (pc->nv < (int)ARRAY_SIZE(pc->victims))
			pc->victims[pc->nv++] = n;
		return 0;
	}
	if (n->kids && pc->recursive && n->seen <= pc->start) {
		/* (a directory moved here after the listing began is not in it) */
		n->listed = pc->now;
		htab_foreach(n->kids, prune_cb, pc); /* victims collected across levels */
	}
	return 0;
}

/* Remove what the completed listing did not show; mark dirs listed. */
static void prune(struct node *dir, double start, int recursive)
{
	struct prune_ctx pc = { .start = start, .recursive = recursive, .now = fs_now() };

	do {
		pc.nv = 0;
		htab_foreach(dir->kids, prune_cb, &pc);
		for (int i = 0; i < pc.nv; i++)
			tree_remove(pc.victims[i]);
	} while (pc.nv == (int)ARRAY_SIZE(pc.victims));
	dir->listed = pc.now;
}

static void merge_listing(struct fs *fs, struct node *dir, const char *prefix,
			  const struct listing *l, double start)
{
	size_t plen = strlen(prefix);

	for (size_t i = 0; i < l->npages; i++) {
		const struct s3_list_page *p = &l->pages[i];

		for (size_t j = 0; j < p->nentries; j++) {
			const char *k = p->entries[j].key;

			if (!k || strncmp(k, prefix, plen) != 0)
				continue;
			if (k[plen] == '\0') { /* the directory's own marker */
				dir->remote = 1;
				continue;
			}
			if (aidx_is_key(fs, k))
				continue; /* the attribute index: not a file of the mount */
			merge_entry(fs, dir, k + plen, &p->entries[j], k, start);
		}
		for (size_t j = 0; j < p->nprefixes; j++) {
			const char *k = p->prefixes[j];
			size_t kl = k ? strlen(k) : 0;
			struct node *n;

			if (kl <= plen + 1 || strncmp(k, prefix, plen) != 0 || k[kl - 1] != '/')
				continue;
			if (!valid_name(k + plen, kl - plen - 1)) {
				log_debug("skipping prefix '%s': not a valid file name", k);
				continue;
			}
			{
				char name[256];

				memcpy(name, k + plen, kl - plen - 1);
				name[kl - plen - 1] = '\0';
				n = tree_child(dir, name);
				if (n && !n->kids && n->job)
					continue; /* a local file shadows a remote prefix */
				n = tree_add(dir, name, S_IFDIR);
			}
			if (n) {
				if (!n->known && !n->remote)
					tree_default_attr(fs, &n->a, S_IFDIR);
				if (n->seen < start)
					n->seen = start;
			}
		}
	}
	prune(dir, start, l->recursive);
}

/* No listing in flight: no tombstone is needed any more. */
static void tombs_clear(struct fs *fs)
{
	struct htab *fresh_tombs;

	if (htab_count(fs->tombs) == 0 || htab_new(&fresh_tombs) < 0)
		return; /* (kept: harmless, only listings older than them skip keys) */
	htab_free(fs->tombs, free);
	fs->tombs = fresh_tombs;
}

/* One listing of dir, lock dropped meanwhile. */
static int list_dir(struct fs *fs, struct node *dir)
{
	struct buf prefix;
	struct listing l;
	double start = fs_now();
	int rc, recursive = !dir->listed_big;

	buf_init(&prefix, 8192);
	rc = tree_key(fs, dir, 1, &prefix);
	if (rc < 0)
		return rc;
	dir->listing = 1;
	dir->pins++; /* another listing may not show it: dir stays meanwhile */
	fs->listings++;
	pthread_mutex_unlock(&fs->lock);
	rc = fetch_listing(fs, buf_str(&prefix), recursive, recursive ? RECURSIVE_PAGES : 0, &l);
	if (rc == 0 && recursive && !l.complete) {
		listing_release(&l);
		recursive = 0;
		rc = fetch_listing(fs, buf_str(&prefix), 0, 0, &l);
	}
	if (rc == 0 && dir == fs->root)
		aidx_listed(fs, l.pages, l.npages);
	pthread_mutex_lock(&fs->lock);
	dir->pins--;
	dir->listing = 0;
	if (!recursive)
		dir->listed_big = 1;
	/* the dir may have been removed while unlocked: callers re-resolve */
	if (rc == 0 && dir->kids && fs->tombs_lost < start)
		merge_listing(fs, dir, buf_str(&prefix), &l, start);
	/* (else: a delete it may show could not be remembered; the dir stays
	 * stale, and the caller's walk lists it again) */
	if (--fs->listings == 0)
		tombs_clear(fs);
	pthread_cond_broadcast(&fs->cond);
	listing_release(&l);
	buf_release(&prefix);
	if (rc < 0)
		log_warn("cannot list '%s': %s", buf_str(&prefix), strerror(-rc));
	return rc;
}

static int fresh(struct fs *fs, const struct node *dir)
{
	return dir->listed > 0 && fs_now() - dir->listed < fs->conf.stat_ttl;
}

/* --- HEADs ----------------------------------------------------------------- */

struct head_job {
	struct fs *fs;
	char *key;
	char etag[S3_ETAG_MAX];
	struct s3_obj obj;
	int rc;
	struct head_batch *batch;
};

struct head_batch {
	pthread_mutex_t lock; /* protects left */
	pthread_cond_t cond;
	int left;
};

static void head_run(void *arg)
{
	struct head_job *hj = arg;

	hj->rc = s3_head(hj->fs->s3, hj->key, &hj->obj);
	pthread_mutex_lock(&hj->batch->lock);
	if (--hj->batch->left == 0)
		pthread_cond_signal(&hj->batch->cond);
	pthread_mutex_unlock(&hj->batch->lock);
}

struct collect_ctx {
	struct fs *fs;
	struct head_job *jobs;
	size_t n, cap;
	int err;
};

static int collect_cb(const char *name, void *v, void *arg)
{
	struct node *n = v;
	struct collect_ctx *cc = arg;
	struct buf key;

	(void)name;
	if (n->known || !n->remote || n->job)
		return 0;
	if (cc->n == cc->cap) {
		size_t nc = cc->cap ? cc->cap * 2 : 64;
		struct head_job *j = realloc(cc->jobs, nc * sizeof(*j));

		if (!j) {
			cc->err = -ENOMEM;
			return 1;
		}
		cc->jobs = j;
		cc->cap = nc;
	}
	buf_init(&key, 8192);
	if (tree_key(cc->fs, n, n->kids != NULL, &key) < 0) {
		cc->err = -ENOMEM;
		return 1;
	}
	memset(&cc->jobs[cc->n], 0, sizeof(cc->jobs[0]));
	cc->jobs[cc->n].fs = cc->fs;
	cc->jobs[cc->n].key = buf_detach(&key, NULL);
	snprintf(cc->jobs[cc->n].etag, S3_ETAG_MAX, "%s", n->etag);
	cc->n++;
	return 0;
}

/* Apply HEAD results to the children of dir that still match. */
static void apply_heads(struct fs *fs, struct node *dir, struct collect_ctx *cc)
{
	for (size_t i = 0; i < cc->n; i++) {
		struct head_job *hj = &cc->jobs[i];
		struct node *n;

		if (hj->rc < 0)
			continue;
		n = tree_find_key(fs, hj->key);
		if (n && n->parent == dir && !n->job && strcmp(n->etag, hj->obj.etag) == 0)
			meta_apply_head(fs, n, &hj->obj);
	}
}

int meta_ensure_attrs(struct fs *fs, struct node *dir)
{
	struct collect_ctx cc = { .fs = fs };
	struct head_batch hb = { .left = 0 };
	int rc = 0;

	htab_foreach(dir->kids, collect_cb, &cc);
	if (cc.err || cc.n == 0) {
		rc = cc.err;
		goto out;
	}
	pthread_mutex_init(&hb.lock, NULL);
	pthread_cond_init(&hb.cond, NULL);
	hb.left = (int)cc.n;
	dir->pins++;
	pthread_mutex_unlock(&fs->lock);
	for (size_t i = 0; i < cc.n; i++) {
		cc.jobs[i].batch = &hb;
		if (wq_push(fs->io, head_run, &cc.jobs[i]) < 0)
			head_run(&cc.jobs[i]); /* run inline rather than lose it */
	}
	pthread_mutex_lock(&hb.lock);
	while (hb.left > 0)
		pthread_cond_wait(&hb.cond, &hb.lock);
	pthread_mutex_unlock(&hb.lock);
	pthread_mutex_lock(&fs->lock);
	dir->pins--;
	apply_heads(fs, dir, &cc);
	pthread_mutex_destroy(&hb.lock);
	pthread_cond_destroy(&hb.cond);
out:
	for (size_t i = 0; i < cc.n; i++) {
		free(cc.jobs[i].key);
		s3_obj_release(&cc.jobs[i].obj);
	}
	free(cc.jobs);
	return rc;
}

/* --- public ----------------------------------------------------------------- */

int meta_ensure_listed(struct fs *fs, struct node *dir, int with_attrs)
{
	int rc = 0;

	while (dir->listing) {
		dir->pins++;
		pthread_cond_wait(&fs->cond, &fs->lock);
		dir->pins--;
	}
	if (!fresh(fs, dir))
		rc = list_dir(fs, dir);
	if (rc == 0 && with_attrs && dir->kids)
		rc = meta_ensure_attrs(fs, dir);
	return rc;
}

/* One walk of path; *again when a listing dropped the lock.  A directory
 * listed since t0 (by this resolve) counts as fresh, so a stat_ttl shorter
 * than a listing (stat_ttl=0: always list) cannot make the walk loop. */
static int resolve_once(struct fs *fs, const char *path, double t0, struct node **out,
			int *again)
{
	struct node *n = fs->root;
	const char *p = path;
	char comp[256];

	*again = 0;
	while (*p) {
		size_t len;
		struct node *c;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		len = strcspn(p, "/");
		if (len > 255)
			return -ENAMETOOLONG;
		if (!n->kids)
			return -ENOTDIR;
		memcpy(comp, p, len);
		comp[len] = '\0';
		c = tree_child(n, comp);
		if (!fresh(fs, n) && n->listed < t0 && !(c && c->job)) {
			int rc = meta_ensure_listed(fs, n, 0);

			if (rc < 0)
				return rc;
			*again = 1; /* the lock was dropped: walk again */
			return 0;
		}
		if (!c)
			return -ENOENT;
		n = c;
		p += len;
	}
	*out = n;
	return 0;
}

int meta_resolve(struct fs *fs, const char *path, struct node **out)
{
	double t0 = fs_now();
	int again, rc;

	if (!path) /* libfuse's name for a removed node */
		return -ESTALE;
	for (int i = 0; i < 64; i++) {
		rc = resolve_once(fs, path, t0, out, &again);
		if (rc < 0 || !again)
			break;
	}
	if (rc == 0 && again)
		rc = -EIO;
	if (rc == 0 && (*out)->parent && !(*out)->known && !(*out)->job && (*out)->remote) {
		struct node *parent = (*out)->parent;

		rc = meta_ensure_attrs(fs, parent);
		if (rc == 0) {
			*out = tree_find(fs, path);
			if (!*out)
				rc = -ENOENT;
		}
	}
	return rc;
}

/* Split "/a/b/c" into parent path "/a/b" (in parent) and name "c". */
static int split(const char *path, struct buf *parent, const char **name)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return -EINVAL;
	*name = slash + 1;
	if (strlen(*name) > 255)
		return -ENAMETOOLONG;
	if (slash == path)
		return buf_addch(parent, '/');
	return buf_add(parent, path, (size_t)(slash - path));
}

int meta_resolve_parent(struct fs *fs, const char *path, struct node **dir, const char **name)
{
	struct buf pp;
	int rc;

	buf_init(&pp, 8192);
	rc = split(path, &pp, name);
	if (rc == 0)
		rc = meta_resolve(fs, buf_str(&pp), dir);
	if (rc == 0 && !(*dir)->kids)
		rc = -ENOTDIR;
	buf_release(&pp);
	return rc;
}

void meta_stat(struct fs *fs, const struct node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = n->a.mode;
	st->st_nlink = n->kids ? 2 : 1;
	st->st_uid = n->a.uid;
	st->st_gid = n->a.gid;
	st->st_size = (off_t)(n->kids ? 0 : n->a.size);
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((n->a.size + 511) / 512);
	st->st_mtim = n->a.mtime;
	st->st_ctim = n->a.mtime;
	st->st_atim = n->a.mtime;
	(void)fs;
}

/* s3fs writes mode in decimal with type bits; accept octal ("0644") too. */
static int parse_mode(const char *v, mode_t type, mode_t *out)
{
	char *end;
	unsigned long m = strtoul(v, &end, v[0] == '0' && v[1] ? 8 : 10);

	if (*end || end == v)
		return -EINVAL;
	if ((m & S_IFMT) == 0)
		m |= type;
	*out = (mode_t)m;
	return 0;
}

static void parse_mtime(const char *v, struct timespec *ts)
{
	char *end;
	long long s = strtoll(v, &end, 10);
	long ns = 0;

	if (end == v)
		return;
	if (*end == '.') {
		const char *f = end + 1;
		int digits = 0;

		while (*f >= '0' && *f <= '9' && digits < 9) {
			ns = ns * 10 + (*f - '0');
			f++;
			digits++;
		}
		while (digits++ < 9)
			ns *= 10;
	}
	ts->tv_sec = (time_t)s;
	ts->tv_nsec = ns;
}

void meta_obj_attr(struct fs *fs, const struct s3_obj *o, mode_t type, struct fattr *a,
		   int *compressed)
{
	const char *v;
	int comp = 0;

	tree_default_attr(fs, a, type);
	a->size = o->size;
	a->mtime = o->mtime;
	if ((v = s3_obj_meta(o, "mode")) && parse_mode(v, type, &a->mode) < 0)
		a->mode = type | (S_ISDIR(type) ? 0755 : 0644);
	if (!S_ISDIR(type) && S_ISDIR(a->mode))
		a->mode = (a->mode & ~S_IFMT) | S_IFREG;
	if (S_ISDIR(type))
		a->mode = (a->mode & ~S_IFMT) | S_IFDIR;
	if ((v = s3_obj_meta(o, "uid")))
		a->uid = (uid_t)strtoul(v, NULL, 10);
	if ((v = s3_obj_meta(o, "gid")))
		a->gid = (gid_t)strtoul(v, NULL, 10);
	if ((v = s3_obj_meta(o, "cdnfs-mtime")) || (v = s3_obj_meta(o, "mtime")))
		parse_mtime(v, &a->mtime);
	if ((v = s3_obj_meta(o, "cdnfs-size")) && o->content_encoding) {
		a->size = strtoull(v, NULL, 10);
		comp = 1;
	}
	if (compressed)
		*compressed = comp;
}

void meta_apply_head(struct fs *fs, struct node *n, const struct s3_obj *o)
{
	struct ac_entry e;
	struct buf key;

	memset(&e, 0, sizeof(e));
	meta_obj_attr(fs, o, n->kids ? S_IFDIR : S_IFREG, &e.a, &e.compressed);
	snprintf(e.etag, sizeof(e.etag), "%s", o->etag);
	e.rsize = o->size;
	apply_known(n, &e);
	n->rsize = o->size;
	snprintf(n->etag, sizeof(n->etag), "%s", o->etag);
	buf_init(&key, 8192);
	if (tree_key(fs, n, n->kids != NULL, &key) == 0)
		attrcache_put(fs->ac, buf_str(&key), &e);
	buf_release(&key);
}

int meta_posix_headers(const struct fattr *a, struct buf *st, struct sigv4_kv *kv, size_t *nkv,
		       size_t cap)
{
	static const char *const names[] = { "x-amz-meta-mode", "x-amz-meta-uid",
					     "x-amz-meta-gid", "x-amz-meta-mtime",
					     "x-amz-meta-cdnfs-mtime" };
	size_t offs[ARRAY_SIZE(names)];
	int rc;

	if (*nkv + ARRAY_SIZE(names) > cap)
		return -E2BIG;
	/* s3fs's representation (decimal st_mode with type bits, whole seconds),
	 * plus the nanoseconds rsync compares in a header of our own */
	offs[0] = st->len;
	rc = buf_addf(st, "%u%c", (unsigned)a->mode, 0);
	offs[1] = st->len;
	rc = rc ?: buf_addf(st, "%u%c", (unsigned)a->uid, 0);
	offs[2] = st->len;
	rc = rc ?: buf_addf(st, "%u%c", (unsigned)a->gid, 0);
	offs[3] = st->len;
	rc = rc ?: buf_addf(st, "%lld%c", (long long)a->mtime.tv_sec, 0);
	offs[4] = st->len;
	rc = rc ?: buf_addf(st, "%lld.%09ld%c", (long long)a->mtime.tv_sec, a->mtime.tv_nsec, 0);
	if (rc < 0)
		return rc;
	/* pointers only after the last append (the buffer may have moved) */
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		kv[(*nkv)++] = (struct sigv4_kv){ names[i], st->data + offs[i] };
	return 0;
}
