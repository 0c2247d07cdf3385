/*
 * journal.c - the CDN journal: its text (render, parse) and its files in
 * journal_dir/cdn/ (lock, snapshot, append, month counter).  The format is
 * described in cdn_int.h.
 *
 * Owns no state: cdn.c holds the fds and serialises writers (cdn->jlock).
 * Durability: a snapshot is fsynced before it replaces the journal, and
 * the directory after; appended lines reach the page cache at once (a
 * crash of the process loses nothing) and the disk at the next snapshot or
 * when cdn.c's dispatcher next goes to sleep (an fdatasync).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cdn_int.h"

#define JOURNAL_MAGIC "cdnfs-cdn-journal 1"
#define JOURNAL_MAX ((size_t)256 << 20)

void cdn_tgts_free(struct cdn_tgt *t, size_t n)
{
	for (size_t i = 0; t && i < n; i++)
		free(t[i].key);
	free(t);
}

void cdn_batch_free(struct cdn_batch *b)
{
	if (!b)
		return;
	for (size_t i = 0; b->items && i < b->nitems; i++)
		free(b->items[i]);
	free(b->items);
	cdn_tgts_free(b->targets, b->ntargets);
	free(b);
}

/* ------------------------------------------------------------------ text */

int cdn_journal_esc(struct buf *out, const char *s)
{
	int rc = 0;

	for (; *s && rc == 0; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= 0x20 || c == 0x7f || c == '%')
			rc = buf_addf(out, "%%%02X", c);
		else
			rc = buf_addch(out, (char)c);
	}
	return rc;
}

static int hexv(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* malloc'd unescaped copy of s[0..n), NULL on a bad escape or ENOMEM. */
static char *unesc(const char *s, size_t n)
{
	char *o = malloc(n + 1);
	size_t j = 0;

	if (!o)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '%') {
			o[j++] = s[i];
			continue;
		}
		if (i + 2 >= n || hexv(s[i + 1]) < 0 || hexv(s[i + 2]) < 0 ||
		    (hexv(s[i + 1]) == 0 && hexv(s[i + 2]) == 0)) {
			free(o);
			return NULL;
		}
		o[j++] = (char)(hexv(s[i + 1]) * 16 + hexv(s[i + 2]));
		i += 2;
	}
	o[j] = '\0';
	return o;
}

int cdn_journal_pline(struct buf *out, const char *key, int is_dir)
{
	int rc = buf_addstr(out, is_dir ? "P d " : "P f ");

	if (rc == 0)
		rc = cdn_journal_esc(out, key);
	if (rc == 0)
		rc = buf_addch(out, '\n');
	return rc;
}

int cdn_journal_bline(struct buf *out, const struct cdn_batch *b)
{
	int rc = buf_addf(out, "B %s %c %zu %zu %lld\n", b->ref,
			  b->kind == CDN_BATCH_PREFIXES ? 'x' : 'p', b->nitems, b->ntargets,
			  (long long)b->created);

	for (size_t i = 0; i < b->nitems && rc == 0; i++) {
		rc = buf_addstr(out, "I ");
		if (rc == 0)
			rc = cdn_journal_esc(out, b->items[i]);
		if (rc == 0)
			rc = buf_addch(out, '\n');
	}
	for (size_t i = 0; i < b->ntargets && rc == 0; i++) {
		rc = buf_addstr(out, b->targets[i].is_dir ? "T d " : "T f ");
		if (rc == 0)
			rc = cdn_journal_esc(out, b->targets[i].key);
		if (rc == 0)
			rc = buf_addch(out, '\n');
	}
	return rc;
}

/* One line, split: kind letter, first field, rest. */
struct jline {
	const char *s;   /* the line, without '\n' */
	size_t n;
};

static int add_pending(struct cdn_jstate *st, const char *field, size_t n, int is_dir)
{
	char *key;

	if (st->npending == st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 64;
		struct cdn_tgt *p = realloc(st->pending, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		st->pending = p;
		st->cap = cap;
	}
	key = unesc(field, n);
	if (!key)
		return -EBADMSG;
	st->pending[st->npending++] = (struct cdn_tgt){ key, is_dir };
	return 0;
}

/* "f KEY" / "d KEY" after the record letter. */
static int parse_tgt(const struct jline *l, int *is_dir, const char **key, size_t *kn)
{
	if (l->n < 4 || l->s[1] != ' ' || (l->s[2] != 'f' && l->s[2] != 'd') || l->s[3] != ' ')
		return -EBADMSG;
	*is_dir = l->s[2] == 'd';
	*key = l->s + 4;
	*kn = l->n - 4;
	return 0;
}

/* "B REF K NITEMS NTARGETS CREATED" -> a new empty batch with room for
 * *ni items and *nt targets. */
static int parse_bhead(const struct jline *l, struct cdn_batch **out, size_t *want_i,
		       size_t *want_t)
{
	char ref[CDN_REF_MAX], kind, line[512];
	size_t ni, nt;
	long long created;
	struct cdn_batch *b;

	*out = NULL;
	if (l->n >= sizeof(line))
		return -EBADMSG;
	memcpy(line, l->s, l->n);
	line[l->n] = '\0';
	if (sscanf(line, "B %127s %c %zu %zu %lld", ref, &kind, &ni, &nt, &created) != 5 ||
	    (kind != 'p' && kind != 'x') || ni == 0 || ni > 100000 || nt > 10000000)
		return -EBADMSG;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	snprintf(b->ref, sizeof(b->ref), "%s", ref);
	b->kind = kind == 'x' ? CDN_BATCH_PREFIXES : CDN_BATCH_PATHS;
	b->created = (time_t)created;
	b->items = calloc(ni, sizeof(*b->items));
	b->targets = calloc(nt ? nt : 1, sizeof(*b->targets));
	if (!b->items || !b->targets) {
		cdn_batch_free(b);
		return -ENOMEM;
	}
	*want_i = ni;
	*want_t = nt;
	*out = b;
	return 0;
}

struct jparse {
	struct cdn_jstate *st;
	struct cdn_batch *cur;       /* the batch whose I/T lines are being read */
	struct cdn_batch **tail;
	size_t want_i, want_t;
};

/* A batch whose lines stopped early: what it covered goes back to pending. */
static int batch_abandon(struct jparse *jp)
{
	struct cdn_batch *b = jp->cur;
	int rc = 0;

	jp->cur = NULL;
	if (!b)
		return 0;
	jp->st->nbad++;
	for (size_t i = 0; i < b->ntargets && rc == 0; i++) {
		struct cdn_tgt *t = &b->targets[i];
		struct buf e;

		buf_init(&e, 0);
		rc = cdn_journal_esc(&e, t->key);
		if (rc == 0)
			rc = add_pending(jp->st, buf_str(&e), e.len, t->is_dir);
		buf_release(&e);
	}
	cdn_batch_free(b);
	return rc == -EBADMSG ? 0 : rc;
}

static int batch_line(struct jparse *jp, const struct jline *l)
{
	struct cdn_batch *b = jp->cur;
	const char *key;
	size_t kn;
	int is_dir;

	if (!b) {
		jp->st->nbad++;
		return 0;
	}
	if (l->s[0] == 'I') {
		if (l->n < 3 || l->s[1] != ' ' || b->nitems >= jp->want_i)
			return batch_abandon(jp);
		b->items[b->nitems] = unesc(l->s + 2, l->n - 2);
		if (!b->items[b->nitems])
			return batch_abandon(jp);
		b->nitems++;
	} else {
		if (parse_tgt(l, &is_dir, &key, &kn) < 0 || b->ntargets >= jp->want_t)
			return batch_abandon(jp);
		b->targets[b->ntargets].key = unesc(key, kn);
		if (!b->targets[b->ntargets].key)
			return batch_abandon(jp);
		b->targets[b->ntargets++].is_dir = is_dir;
	}
	if (b->nitems == jp->want_i && b->ntargets == jp->want_t) {
		for (size_t i = 0; i < b->nitems; i++) {
			size_t il = strlen(b->items[i]);

			b->nwild += il && b->items[i][il - 1] == '*';
		}
		*jp->tail = b;
		jp->tail = &b->next;
		jp->cur = NULL;
	}
	return 0;
}

/* "D REF": batch REF is done. */
static void batch_done(struct jparse *jp, const struct jline *l)
{
	struct cdn_batch **pp = &jp->st->batches;

	if (l->n < 3 || l->s[1] != ' ') {
		jp->st->nbad++;
		return;
	}
	for (; *pp; pp = &(*pp)->next) {
		struct cdn_batch *b = *pp;

		if (strlen(b->ref) == l->n - 2 && memcmp(b->ref, l->s + 2, l->n - 2) == 0) {
			*pp = b->next;
			if (jp->tail == &b->next)
				jp->tail = pp;
			cdn_batch_free(b);
			return;
		}
	}
}

static int parse_line(struct jparse *jp, const struct jline *l)
{
	const char *key;
	size_t kn;
	int is_dir, rc = 0;

	if (l->n && (l->s[0] == 'I' || l->s[0] == 'T'))
		return batch_line(jp, l);
	rc = batch_abandon(jp);
	if (rc < 0 || !l->n)
		return rc;
	switch (l->s[0]) {
	case 'P':
		if (parse_tgt(l, &is_dir, &key, &kn) < 0 ||
		    add_pending(jp->st, key, kn, is_dir) == -EBADMSG)
			jp->st->nbad++;
		break;
	case 'B':
		rc = parse_bhead(l, &jp->cur, &jp->want_i, &jp->want_t);
		if (rc == -EBADMSG) {
			jp->st->nbad++;
			rc = 0;
		}
		break;
	case 'D':
		batch_done(jp, l);
		break;
	default:
		jp->st->nbad++;
	}
	return rc;
}

int cdn_journal_parse(const char *text, size_t len, struct cdn_jstate *st)
{
	struct jparse jp = { .st = st };
	size_t ml = strlen(JOURNAL_MAGIC);
	int rc = 0;

	memset(st, 0, sizeof(*st));
	jp.tail = &st->batches;
	for (size_t off = 0; off < len && rc == 0;) {
		const char *nl = memchr(text + off, '\n', len - off);
		struct jline l = { text + off, nl ? (size_t)(nl - text - off) : 0 };

		if (!nl)
			break; /* a torn last append */
		if (off == 0 && l.n >= ml && memcmp(l.s, JOURNAL_MAGIC, ml) == 0) {
			st->identity = strndup(l.s + ml + (l.n > ml), l.n - ml - (l.n > ml));
			rc = st->identity ? 0 : -ENOMEM;
		} else {
			rc = parse_line(&jp, &l);
		}
		off += l.n + 1;
	}
	if (rc == 0)
		rc = batch_abandon(&jp);
	cdn_batch_free(jp.cur);
	return rc;
}

void cdn_jstate_release(struct cdn_jstate *st)
{
	free(st->identity);
	cdn_tgts_free(st->pending, st->npending);
	while (st->batches) {
		struct cdn_batch *b = st->batches;

		st->batches = b->next;
		cdn_batch_free(b);
	}
	memset(st, 0, sizeof(*st));
}

/* ----------------------------------------------------------------- files */

/* A one-line message into err (a failed append leaves err empty, which
 * callers report as strerror). */
static void set_err(struct buf *err, const char *fmt, ...) PRINTF(2, 3);
static void set_err(struct buf *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	buf_reset(err);
	va_start(ap, fmt);
	if (buf_vaddf(err, fmt, ap) < 0)
		buf_release(err);
	va_end(ap);
}

static char *jpath(const char *dir, const char *name)
{
	char *p = NULL;

	return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

static int mkdir_0700(const char *dir)
{
	return mkdir(dir, 0700) == 0 || errno == EEXIST ? 0 : -errno;
}

int cdn_journal_lock(const char *dir, int *fd, struct buf *err)
{
	char *lp = NULL;
	struct stat st;
	int rc = 0;

	*fd = -1;
	rc = mkdir_0700(dir);
	if (rc == -ENOENT) {
		/* the journal dir itself is missing (a tool, a test): one level up */
		char *parent = strdup(dir), *slash = parent ? strrchr(parent, '/') : NULL;

		if (slash && slash != parent) {
			*slash = '\0';
			(void)mkdir_0700(parent);
		}
		free(parent);
		rc = mkdir_0700(dir);
	}
	if (rc == 0 && stat(dir, &st) < 0)
		rc = -errno;
	else if (rc == 0 && !S_ISDIR(st.st_mode))
		rc = -ENOTDIR;
	else if (rc == 0 && chmod(dir, 0700) < 0 && errno != EPERM)
		rc = -errno;
	if (rc < 0) {
		set_err(err, "cannot use the cdn journal '%s': %s", dir, strerror(-rc));
		return rc;
	}
	lp = jpath(dir, "lock");
	if (!lp)
		return -ENOMEM;
	*fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (*fd < 0) {
		rc = -errno;
		set_err(err, "cannot open '%s': %s", lp, strerror(-rc));
	} else if (flock(*fd, LOCK_EX | LOCK_NB) < 0) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		set_err(err, "cdn journal '%s' is in use by another process", dir);
		close(*fd);
		*fd = -1;
	}
	free(lp);
	return rc;
}

static int read_all(const char *path, struct buf *out, size_t max)
{
	char chunk[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : 0;
			break;
		}
		if (out->len + (size_t)n > max) {
			rc = -EFBIG;
			break;
		}
		rc = buf_add(out, chunk, (size_t)n);
		if (rc < 0)
			break;
	}
	close(fd);
	return rc;
}

int cdn_journal_read(const char *dir, struct buf *text)
{
	char *p = jpath(dir, "journal");
	int rc = p ? read_all(p, text, JOURNAL_MAX) : -ENOMEM;

	free(p);
	return rc;
}

static int write_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = write(fd, s, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

int cdn_journal_append(int fd, const char *text, size_t len)
{
	return fd < 0 ? -EBADF : write_all(fd, text, len);
}

/* Write name via name.tmp: write, [fsync], rename, [fsync dir]. */
static int replace_file(const char *dir, const char *name, const char *text, size_t len,
			int sync)
{
	char *tmp = NULL, *dst = jpath(dir, name);
	int fd = -1, rc = 0;

	if (!dst || asprintf(&tmp, "%s.tmp", dst) < 0) {
		tmp = NULL;
		rc = -ENOMEM;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	rc = write_all(fd, text, len);
	if (rc == 0 && sync && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	fd = -1;
	if (rc == 0 && rename(tmp, dst) < 0)
		rc = -errno;
	if (rc == 0 && sync) {
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (dfd >= 0) {
			(void)fsync(dfd);
			close(dfd);
		}
	}
out:
	if (rc < 0 && tmp)
		unlink(tmp);
	free(tmp);
	free(dst);
	return rc;
}

int cdn_journal_write(const char *dir, const char *text, size_t len, int *fd)
{
	char *p = jpath(dir, "journal");
	int rc = p ? replace_file(dir, "journal", text, len, 1) : -ENOMEM;

	*fd = -1;
	if (rc == 0) {
		*fd = open(p, O_WRONLY | O_APPEND | O_CLOEXEC);
		if (*fd < 0)
			rc = -errno;
	}
	free(p);
	return rc;
}

int cdn_month_read(const char *dir, char month[8], uint64_t *count)
{
	char *p = jpath(dir, "month");
	struct buf b;
	char m[8];
	uint64_t n;
	int rc;

	month[0] = '\0';
	*count = 0;
	buf_init(&b, 4096);
	rc = p ? read_all(p, &b, 4096) : -ENOMEM;
	if (rc == 0 && b.len && sscanf(buf_str(&b), "%7s %" SCNu64, m, &n) == 2 &&
	    strlen(m) == 7 && m[4] == '-') {
		memcpy(month, m, 8);
		*count = n;
	}
	buf_release(&b);
	free(p);
	return rc;
}

int cdn_month_write(const char *dir, const char *month, uint64_t count)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "%s %" PRIu64 "\n", month, count);

	return replace_file(dir, "month", line, (size_t)n, 0);
}
