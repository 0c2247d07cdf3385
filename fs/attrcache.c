/*
 * attrcache.c - persistent attribute cache (see attrcache.h).
 *
 * Storage: CACHE_DIR/attrs, one record per line, appended on every put/del:
 *   "P <key-urlenc> <etag> <rsize> <mode-oct> <uid> <gid> <sec> <nsec> <size> <compressed>"
 *   "D <key-urlenc>"
 * Loading replays the log into a hash table; a malformed line (a torn last
 * write after a crash) is skipped.  Open and close rewrite the file compactly
 * (tmp + rename).  The file is 0600 in a 0700 directory.
 *
 * Locking: ac->lock protects the table and the log fd.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attrcache.h"
#include "log.h"
#include "s3xml.h"
#include "sigv4.h"

struct attrcache {
	pthread_mutex_t lock; /* protects tab, fd, appended */
	struct htab *tab;     /* key -> struct ac_entry */
	char *path;
	int fd;               /* append fd of the log */
	size_t appended;      /* records appended since the last compaction */
};

/* A "P" record into key and *e; -EINVAL when malformed. */
static int parse_put(const char *line, struct buf *key, struct ac_entry *e)
{
	char k[4200], etag[S3_ETAG_MAX];
	unsigned long long rsize, sec, size;
	unsigned int mode, uid, gid;
	long nsec;
	int comp;

	if (sscanf(line, "P %4199s %79s %llu %o %u %u %llu %ld %llu %d", k, etag, &rsize, &mode,
		   &uid, &gid, &sec, &nsec, &size, &comp) != 10 ||
	    nsec < 0 || nsec > 999999999 || s3_url_decode(key, k, 0) < 0 || key->len == 0 ||
	    key->len > 1024 || strlen(buf_str(key)) != key->len) /* S3's limit; no NUL */
		return -EINVAL;
	memset(e, 0, sizeof(*e));
	snprintf(e->etag, sizeof(e->etag), "%s", strcmp(etag, "-") ? etag : "");
	e->rsize = rsize;
	e->a = (struct fattr){ (mode_t)mode, (uid_t)uid, (gid_t)gid, { (time_t)sec, nsec }, size };
	e->compressed = comp != 0;
	return 0;
}

static int parse_line(struct attrcache *ac, char *line)
{
	char key[4200];
	struct buf dk;
	struct ac_entry *e, *old = NULL;
	int rc;

	buf_init(&dk, 8192);
	if (line[0] == 'D' && sscanf(line, "D %4199s", key) == 1) {
		if (s3_url_decode(&dk, key, 0) == 0)
			free(htab_del(ac->tab, buf_str(&dk)));
		buf_release(&dk);
		return 0;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		buf_release(&dk);
		return -ENOMEM;
	}
	rc = parse_put(line, &dk, e);
	if (rc == 0)
		rc = htab_put(ac->tab, buf_str(&dk), e, (void **)&old);
	if (rc < 0)
		free(e);
	free(old);
	buf_release(&dk);
	return rc;
}

static int format_put(struct buf *b, const char *key, const struct ac_entry *e)
{
	int rc = buf_addstr(b, "P ");

	if (rc == 0)
		rc = sigv4_uri_encode(b, key, 1);
	if (rc == 0)
		rc = buf_addf(b, " %s %" PRIu64 " %o %u %u %lld %ld %" PRIu64 " %d\n",
			      e->etag[0] ? e->etag : "-", e->rsize, (unsigned)e->a.mode,
			      (unsigned)e->a.uid, (unsigned)e->a.gid, (long long)e->a.mtime.tv_sec,
			      e->a.mtime.tv_nsec, e->a.size, e->compressed);
	return rc;
}

static int dump_one(const char *key, void *val, void *arg)
{
	return format_put(arg, key, val);
}

/* Rewrite the log with one record per live key; reopen the append fd. */
static int compact(struct attrcache *ac)
{
	struct buf b, tmp;
	int fd = -1, rc;

	buf_init(&b, (size_t)1 << 30);
	buf_init(&tmp, 4096);
	rc = htab_foreach(ac->tab, dump_one, &b);
	if (rc == 0)
		rc = buf_addf(&tmp, "%s.tmp", ac->path);
	if (rc < 0)
		goto out;
	fd = open(buf_str(&tmp), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (b.len && write(fd, b.data, b.len) != (ssize_t)b.len) ||
	    rename(buf_str(&tmp), ac->path) < 0) {
		rc = -errno;
		goto out;
	}
	if (ac->fd >= 0)
		close(ac->fd);
	ac->fd = open(ac->path, O_WRONLY | O_APPEND | O_CLOEXEC);
	ac->appended = 0;
out:
	if (fd >= 0)
		close(fd);
	buf_release(&b);
	buf_release(&tmp);
	return rc;
}

static int load(struct attrcache *ac)
{
	FILE *f = fopen(ac->path, "re");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (!f)
		return errno == ENOENT ? 0 : -errno;
	while ((n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		if (parse_line(ac, line) == -ENOMEM)
			break;
	}
	free(line);
	fclose(f);
	return 0;
}

int attrcache_open(struct attrcache **out, const char *cache_dir)
{
	struct attrcache *ac = calloc(1, sizeof(*ac));
	int rc = -ENOMEM;

	*out = NULL;
	if (!ac)
		return -ENOMEM;
	ac->fd = -1;
	pthread_mutex_init(&ac->lock, NULL);
	if (asprintf(&ac->path, "%s/attrs", cache_dir) < 0) {
		ac->path = NULL;
		goto out;
	}
	rc = htab_new(&ac->tab);
	if (rc == 0)
		rc = load(ac);
	if (rc == 0)
		rc = compact(ac);
	if (rc == 0 && ac->fd < 0)
		rc = -errno;
out:
	if (rc < 0) {
		log_error("cannot open the attribute cache in '%s': %s", cache_dir, strerror(-rc));
		attrcache_close(ac);
		return rc;
	}
	*out = ac;
	return 0;
}

void attrcache_close(struct attrcache *ac)
{
	if (!ac)
		return;
	if (ac->tab && ac->fd >= 0 && compact(ac) < 0)
		log_warn("cannot compact '%s'", ac->path);
	if (ac->fd >= 0)
		close(ac->fd);
	htab_free(ac->tab, free);
	pthread_mutex_destroy(&ac->lock);
	free(ac->path);
	free(ac);
}

int attrcache_get(struct attrcache *ac, const char *key, const char *etag, uint64_t rsize,
		  struct ac_entry *out)
{
	struct ac_entry *e;
	int found = 0;

	pthread_mutex_lock(&ac->lock);
	e = htab_get(ac->tab, key);
	if (e && (!etag || (strcmp(e->etag, etag) == 0 && e->rsize == rsize))) {
		*out = *e;
		found = 1;
	}
	pthread_mutex_unlock(&ac->lock);
	return found;
}

static void append(struct attrcache *ac, struct buf *rec)
{
	if (ac->fd >= 0 && rec->len && write(ac->fd, rec->data, rec->len) != (ssize_t)rec->len)
		log_warn("cannot append to '%s': %s", ac->path, strerror(errno));
	if (++ac->appended > 4 * htab_count(ac->tab) + 10000)
		(void)!compact(ac);
}

void attrcache_put(struct attrcache *ac, const char *key, const struct ac_entry *e)
{
	struct ac_entry *c = malloc(sizeof(*c)), *old = NULL;
	struct buf rec;

	if (!c)
		return;
	*c = *e;
	buf_init(&rec, 16384);
	pthread_mutex_lock(&ac->lock);
	if (htab_put(ac->tab, key, c, (void **)&old) < 0) {
		free(c);
	} else if (!old || memcmp(old, c, sizeof(*c)) != 0) {
		if (format_put(&rec, key, c) == 0)
			append(ac, &rec);
	}
	pthread_mutex_unlock(&ac->lock);
	free(old);
	buf_release(&rec);
}

void attrcache_del(struct attrcache *ac, const char *key)
{
	struct ac_entry *old;
	struct buf rec;

	buf_init(&rec, 16384);
	pthread_mutex_lock(&ac->lock);
	old = htab_del(ac->tab, key);
	if (old && buf_addstr(&rec, "D ") == 0 && sigv4_uri_encode(&rec, key, 1) == 0 &&
	    buf_addch(&rec, '\n') == 0)
		append(ac, &rec);
	pthread_mutex_unlock(&ac->lock);
	free(old);
	buf_release(&rec);
}

struct export_ctx {
	const char *prefix;
	size_t plen;
	int (*keep)(const char *key, const struct ac_entry *e, void *arg);
	void *arg;
	struct buf *out;
	size_t count, max;
};

static int export_one(const char *key, void *val, void *arg)
{
	struct export_ctx *x = arg;

	if (strncmp(key, x->prefix, x->plen) != 0 || (x->keep && !x->keep(key, val, x->arg)))
		return 0;
	if (++x->count > x->max)
		return -E2BIG;
	return format_put(x->out, key, val);
}

int attrcache_export(struct attrcache *ac, const char *prefix,
		     int (*keep)(const char *key, const struct ac_entry *e, void *arg), void *arg,
		     size_t max, struct buf *out, size_t *count)
{
	struct export_ctx x = { prefix, strlen(prefix), keep, arg, out, 0, max };
	int rc;

	pthread_mutex_lock(&ac->lock);
	rc = htab_foreach(ac->tab, export_one, &x);
	pthread_mutex_unlock(&ac->lock);
	*count = x.count;
	return rc;
}

int attrcache_import(struct attrcache *ac, const char *prefix, const char *text, size_t len,
		     size_t *merged, size_t *bad)
{
	size_t plen = strlen(prefix);
	const char *p = text, *end = text + len;
	struct buf line, key, rec;
	int rc = 0;

	*merged = *bad = 0;
	buf_init(&line, 16384);
	buf_init(&key, 8192);
	buf_init(&rec, (size_t)1 << 30);
	while (rc == 0 && p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		struct ac_entry e, *c, *old;

		buf_reset(&line);
		buf_reset(&key);
		if (n == 0 || p[0] != 'P' || memchr(p, '\0', n) || buf_add(&line, p, n) < 0 ||
		    parse_put(buf_str(&line), &key, &e) < 0 || strncmp(buf_str(&key), prefix, plen)) {
			if (n && p[0] != '#')
				++*bad;
			p += n + 1;
			continue;
		}
		p += n + 1;
		pthread_mutex_lock(&ac->lock);
		old = htab_get(ac->tab, buf_str(&key));
		if (!old || strcmp(old->etag, e.etag) != 0 || old->rsize != e.rsize) {
			c = malloc(sizeof(*c));
			if (!c || htab_put(ac->tab, buf_str(&key), c, (void **)&old) < 0) {
				free(c);
				rc = -ENOMEM;
			} else {
				*c = e;
				free(old);
				++*merged;
				rc = format_put(&rec, buf_str(&key), c);
			}
		}
		pthread_mutex_unlock(&ac->lock);
	}
	pthread_mutex_lock(&ac->lock);
	if (rec.len)
		append(ac, &rec);
	pthread_mutex_unlock(&ac->lock);
	buf_release(&line);
	buf_release(&key);
	buf_release(&rec);
	return rc;
}
