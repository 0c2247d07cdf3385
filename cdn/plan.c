/*
 * plan.c - pure functions: the provider path of a key (cdn_encode_path),
 * the batches for a set of targets (cdn_plan_make), CallerReferences.
 *
 * Planning works on encoded paths, never on keys, so that what dedupes and
 * what covers what is decided on exactly what the provider will see:
 *  1. every target becomes an item: its encoded path P and whether it is a
 *     prefix ("wild": a directory, or a CloudFront name cut at '*');
 *  2. items are sorted by P, a wild one before a file with the same P.  All
 *     paths starting with a prefix P then sit in one run right after the
 *     wild item P, so one forward pass finds, for every item, the wild item
 *     that covers it (the first one: covered wild items never cover);
 *  3. uncovered items ("roots") go into batches under the limits:
 *     CloudFront: wildcards first, then directories of files collapsed
 *     into one wildcard (largest first, never the mount root), then files;
 *     Cloudflare: URL lists, then prefix lists.
 * Owns nothing between calls; no locks, no I/O (except RAND_bytes and
 * gethostname in cdn_caller_ref).
 */
#include <errno.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cdn_int.h"
#include "htab.h"

#define CF_MAX_PATH_LEN 4000

/* --------------------------------------------------------------- encoding */

/* CloudFront: encode non-ASCII, controls, space, RFC 1738's unsafe set and
 * '?'; nothing else (it would not match what it cached). */
static int cf_keep(unsigned char c)
{
	return c > 0x20 && c < 0x7f && !strchr("\"#%<>?[\\]^`{|}~", c);
}

/* Cloudflare: RFC 3986 pchar plus '/'. */
static int cfl_keep(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("-._~!$&'()*+,;=:@/", c));
}

/* Append s[0..n) encoded; CloudFront stops at '*' and sets *cut.  It also
 * stops at a '~' that follows another character of the key's last
 * segment (webpack's "runtime~main.js" becomes "runtime*"; key 0: the
 * path_prefix, never cut there): CloudFront refuses a
 * raw '~', and its encoded form has been reported not to invalidate what
 * viewers cached under '~' (aws/aws-sdk#525); a '~' that starts a segment
 * ("/~user/") is sent encoded, as the guide says, rather than widen the
 * purge to the whole directory. */
static int enc_bytes(struct buf *out, enum cdn_provider p, const char *s, size_t n, int key,
		     int *cut)
{
	static const char hex[] = "0123456789ABCDEF";
	int rc = 0;

	for (size_t i = 0; i < n && rc == 0; i++) {
		unsigned char c = (unsigned char)s[i];

		if (p == CDN_CLOUDFRONT &&
		    (c == '*' || (key && c == '~' && i > 0 && s[i - 1] != '/' &&
				  !memchr(s + i, '/', n - i)))) {
			*cut = 1;
			break;
		}
		if (p == CDN_CLOUDFRONT ? cf_keep(c) : cfl_keep(c)) {
			rc = buf_addch(out, (char)c);
		} else {
			char e[3] = { '%', hex[c >> 4], hex[c & 15] };

			rc = buf_add(out, e, 3);
		}
	}
	return rc;
}

/* Cut a CloudFront path longer than 4000 characters (with its '*') to a
 * wildcard of its first 3999, never inside a %XX. */
static void cf_cut_long(struct buf *out, size_t start, int *wild)
{
	size_t len = out->len - start, cut;

	if (len + (*wild ? 1 : 0) <= CF_MAX_PATH_LEN)
		return;
	cut = start + CF_MAX_PATH_LEN - 1;
	if (out->data[cut - 1] == '%')
		cut -= 1;
	else if (out->data[cut - 2] == '%')
		cut -= 2;
	out->len = cut;
	out->data[cut] = '\0';
	*wild = 1;
}

/* Cut a Cloudflare prefix with more than CDN_CFL_MAX_SEPARATORS '/' (its
 * documented limit) after the last one it may have: a broader prefix
 * purges a little more and loses nothing. */
static void cfl_cut_deep(struct buf *out, size_t start)
{
	size_t seps = 0;

	for (size_t i = start; i < out->len; i++) {
		if (out->data[i] == '/' && ++seps == CDN_CFL_MAX_SEPARATORS) {
			out->len = i + 1;
			out->data[out->len] = '\0';
			return;
		}
	}
}

int cdn_encode_path(struct buf *out, enum cdn_provider p, const char *prefix, const char *key,
		    int is_dir, int *wild)
{
	size_t start = out->len, pl, kl;
	int cut = 0, rc;

	*wild = 0;
	while (prefix && *prefix == '/')
		prefix++;
	pl = prefix ? strlen(prefix) : 0;
	while (pl && prefix[pl - 1] == '/')
		pl--;
	while (*key == '/')
		key++;
	kl = strlen(key);
	while (is_dir && kl && key[kl - 1] == '/')
		kl--;
	if (!is_dir && !kl)
		return -EINVAL;
	rc = buf_addch(out, '/');
	if (rc == 0 && pl) {
		rc = enc_bytes(out, p, prefix, pl, 0, &cut);
		if (rc == 0 && !cut)
			rc = buf_addch(out, '/');
	}
	if (rc == 0 && kl && !cut) {
		rc = enc_bytes(out, p, key, kl, 1, &cut);
		if (rc == 0 && is_dir && !cut)
			rc = buf_addch(out, '/');
	}
	if (rc < 0)
		return rc;
	*wild = is_dir || cut;
	if (p == CDN_CLOUDFRONT)
		cf_cut_long(out, start, wild);
	else if (*wild)
		cfl_cut_deep(out, start);
	return 0;
}

/* ---------------------------------------------------------------- planning */

struct item {
	char *p;       /* encoded path, no '*' */
	int wild;
	long cover;    /* the root item covering this one, -1 when a root */
	long batch;    /* for roots: assigned batch, -1 none yet */
};

struct planner {
	const struct cdn_plan_conf *pc;
	struct item *it;      /* unique items, sorted */
	size_t nit;
	long *tu;             /* per target: its item, -1 when not encodable */
	char *root;           /* encoded mount root ("/" or "/static/") */
	struct cdn_plan *out;
	size_t bcap;
};

struct ent {
	char *p;
	int wild;
	size_t target;
};

static int item_cmp(const char *pa, int wa, const char *pb, int wb)
{
	int c = strcmp(pa, pb);

	return c ? c : wb - wa;
}

static int ent_cmp(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;

	return item_cmp(x->p, x->wild, y->p, y->wild);
}

static int starts(const char *s, const char *pre)
{
	return strncmp(s, pre, strlen(pre)) == 0;
}

/* Steps 1-2: encode, sort, merge duplicates into pl->it; pl->tu. */
static int build_items(struct planner *pl, const struct cdn_target *t, size_t n)
{
	struct ent *e = calloc(n ? n : 1, sizeof(*e));
	struct buf b;
	size_t ne = 0;
	int rc = e ? 0 : -ENOMEM;

	buf_init(&b, 0);
	for (size_t i = 0; i < n && rc == 0; i++) {
		int wild, r;

		pl->tu[i] = -1;
		buf_reset(&b);
		r = cdn_encode_path(&b, pl->pc->provider, pl->pc->path_prefix, t[i].key,
				    t[i].is_dir, &wild);
		if (r == -EINVAL)
			continue;
		rc = r;
		if (rc == 0 && !(e[ne].p = strdup(buf_str(&b))))
			rc = -ENOMEM;
		if (rc == 0) {
			e[ne].wild = wild;
			e[ne++].target = i;
		}
	}
	if (rc == 0) {
		qsort(e, ne, sizeof(*e), ent_cmp);
		pl->it = calloc(ne ? ne : 1, sizeof(*pl->it));
		rc = pl->it ? 0 : -ENOMEM;
	}
	for (size_t i = 0; i < ne; i++) {
		if (rc == 0 && (pl->nit == 0 || item_cmp(pl->it[pl->nit - 1].p,
							 pl->it[pl->nit - 1].wild, e[i].p,
							 e[i].wild) != 0)) {
			pl->it[pl->nit] = (struct item){ e[i].p, e[i].wild, -1, -1 };
			pl->nit++;
			e[i].p = NULL;
		}
		if (rc == 0)
			pl->tu[e[i].target] = (long)pl->nit - 1;
		free(e[i].p);
	}
	free(e);
	buf_release(&b);
	return rc;
}

/* Step 2b: the first wild item whose P starts an item covers it. */
static void find_covers(struct planner *pl)
{
	long cur = -1;

	for (size_t i = 0; i < pl->nit; i++) {
		struct item *u = &pl->it[i];

		if (cur >= 0 && starts(u->p, pl->it[cur].p)) {
			u->cover = cur;
		} else if (u->wild) {
			cur = (long)i;
		}
	}
}

/* A new empty batch; returns its index or -ENOMEM. */
static long batch_new(struct planner *pl, enum cdn_batch_kind kind)
{
	struct cdn_plan *o = pl->out;

	if (o->nbatches == pl->bcap) {
		size_t cap = pl->bcap ? pl->bcap * 2 : 4;
		struct cdn_batch_plan *nb = realloc(o->batches, cap * sizeof(*nb));

		if (!nb)
			return -ENOMEM;
		o->batches = nb;
		pl->bcap = cap;
	}
	o->batches[o->nbatches] = (struct cdn_batch_plan){ .kind = kind };
	return (long)o->nbatches++;
}

/* Render p (wild or not) the way the provider takes it and add it. */
static int batch_add(struct planner *pl, long bi, const char *p, int wild)
{
	struct cdn_batch_plan *b = &pl->out->batches[bi];
	const char *dom = pl->pc->domain, *host = dom ? strstr(dom, "://") : NULL;
	char **ni = realloc(b->items, (b->nitems + 1) * sizeof(*ni));
	char *s = NULL;
	int r;

	if (!ni)
		return -ENOMEM;
	b->items = ni;
	if (pl->pc->provider == CDN_CLOUDFRONT)
		r = asprintf(&s, "%s%s", p, wild ? "*" : "");
	else if (b->kind == CDN_BATCH_PREFIXES)
		r = asprintf(&s, "%s%s", host ? host + 3 : dom, p);
	else
		r = asprintf(&s, "%s%s%s", host ? "" : "https://", dom, p);
	if (r < 0)
		return -ENOMEM;
	b->items[b->nitems++] = s;
	if (wild && pl->pc->provider == CDN_CLOUDFRONT)
		b->nwild++;
	return 0;
}

/* Fill up to max items of one kind (wild or files) into Cloudflare batches. */
static int cfl_chunks(struct planner *pl, int wild, size_t max, enum cdn_batch_kind kind)
{
	long bi = -1;
	int rc = 0;

	for (size_t i = 0; i < pl->nit && rc == 0; i++) {
		struct item *u = &pl->it[i];

		if (u->cover >= 0 || u->wild != wild)
			continue;
		if (bi < 0 || pl->out->batches[bi].nitems >= max) {
			if (pl->pc->max_batches && pl->out->nbatches >= pl->pc->max_batches)
				break;
			bi = batch_new(pl, kind);
			if (bi < 0)
				return (int)bi;
		}
		u->batch = bi;
		rc = batch_add(pl, bi, u->p, 0);
	}
	return rc;
}

/* A wildcard chosen for the CloudFront batch being built. */
struct pick {
	char *p;       /* borrowed from an item, or owned (a collapsed directory) */
	long item;     /* the explicit wild item, -1 for a collapsed directory */
};

struct cfb {
	struct pick *w;
	size_t nw, max_wild;
	char **gname;  /* directories of files: encoded parent, owned */
	size_t *gcount, *gorder, ng;
};

static int covered_by_pick(const struct cfb *c, const char *p)
{
	for (size_t i = 0; i < c->nw; i++)
		if (starts(p, c->w[i].p))
			return 1;
	return 0;
}

static int is_root_file(const struct item *u)
{
	return u->cover < 0 && !u->wild && u->batch < 0;
}

/* Count unassigned root files per parent directory (not the mount root). */
static int count_groups(struct planner *pl, struct cfb *c)
{
	struct htab *h = NULL;
	struct buf b;
	int rc = htab_new(&h);

	buf_init(&b, 0);
	c->gname = calloc(pl->nit + 1, sizeof(*c->gname));
	c->gcount = calloc(pl->nit + 1, sizeof(*c->gcount));
	c->gorder = calloc(pl->nit + 1, sizeof(*c->gorder));
	if (rc == 0 && (!c->gname || !c->gcount || !c->gorder))
		rc = -ENOMEM;
	for (size_t i = 0; i < pl->nit && rc == 0; i++) {
		const struct item *u = &pl->it[i];
		const char *slash = strrchr(u->p, '/');
		void *v;

		if (!is_root_file(u) || !slash)
			continue;
		buf_reset(&b);
		rc = buf_add(&b, u->p, (size_t)(slash - u->p) + 1);
		if (rc < 0 || strcmp(buf_str(&b), pl->root) == 0)
			continue;
		v = htab_get(h, buf_str(&b));
		if (v) {
			c->gcount[(uintptr_t)v - 1]++;
			continue;
		}
		c->gname[c->ng] = strdup(buf_str(&b));
		if (!c->gname[c->ng])
			rc = -ENOMEM;
		if (rc == 0)
			rc = htab_put(h, buf_str(&b), (void *)(uintptr_t)(c->ng + 1), NULL);
		if (rc == 0)
			c->gcount[c->ng++] = 1;
	}
	htab_free(h, NULL);
	buf_release(&b);
	return rc;
}

static int group_cmp(const void *a, const void *b, void *arg)
{
	const struct cfb *c = arg;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	if (c->gcount[x] != c->gcount[y])
		return c->gcount[x] > c->gcount[y] ? -1 : 1;
	return strcmp(c->gname[x], c->gname[y]);
}

/* Step 3b: collapse the largest directories into wildcards while the
 * batch has wildcard room; a directory subsumes picks under it. */
static void collapse(struct planner *pl, struct cfb *c, size_t max_paths)
{
	size_t nc = 0;

	for (size_t g = 0; g < c->ng; g++)
		if (c->gcount[g] >= pl->pc->collapse_min)
			c->gorder[nc++] = g;
	qsort_r(c->gorder, nc, sizeof(*c->gorder), group_cmp, c);
	for (size_t k = 0; k < nc && c->nw < c->max_wild && c->nw < max_paths; k++) {
		size_t g = c->gorder[k], keep = 0;

		if (covered_by_pick(c, c->gname[g]))
			continue;
		for (size_t i = 0; i < c->nw; i++) {
			if (!starts(c->w[i].p, c->gname[g]))
				c->w[keep++] = c->w[i];
			else if (c->w[i].item < 0)
				free(c->w[i].p);
		}
		c->nw = keep;
		c->w[c->nw++] = (struct pick){ c->gname[g], -1 };
		c->gname[g] = NULL;
	}
}

static int pick_cmp(const void *a, const void *b)
{
	return strcmp(((const struct pick *)a)->p, ((const struct pick *)b)->p);
}

/* Step 3c: files that fit (or are covered), then render the batch. */
static int cf_fill(struct planner *pl, struct cfb *c, long bi)
{
	size_t nf = 0, max = pl->pc->max_paths;
	int rc = 0;

	qsort(c->w, c->nw, sizeof(*c->w), pick_cmp);
	for (size_t i = 0; i < c->nw && rc == 0; i++) {
		if (c->w[i].item >= 0)
			pl->it[c->w[i].item].batch = bi;
		rc = batch_add(pl, bi, c->w[i].p, 1);
	}
	for (size_t i = 0; i < pl->nit && rc == 0; i++) {
		struct item *u = &pl->it[i];

		if (u->cover >= 0 || u->batch >= 0)
			continue;
		if (covered_by_pick(c, u->p)) {
			u->batch = bi;
		} else if (!u->wild && c->nw + nf < max) {
			u->batch = bi;
			nf++;
			rc = batch_add(pl, bi, u->p, 0);
		}
	}
	return rc;
}

static void cfb_release(struct cfb *c)
{
	for (size_t i = 0; c->w && i < c->nw; i++)
		if (c->w[i].item < 0)
			free(c->w[i].p);
	for (size_t g = 0; c->gname && g < c->ng; g++)
		free(c->gname[g]);
	free(c->w);
	free(c->gname);
	free(c->gcount);
	free(c->gorder);
	memset(c, 0, sizeof(*c));
}

/* One CloudFront batch from what is left; *placed tells whether anything
 * went in (nothing fits: the batch is taken back). */
static int cf_batch(struct planner *pl, int *placed)
{
	struct cfb c = { .max_wild = pl->pc->max_wild };
	size_t max = pl->pc->max_paths;
	long bi;
	int rc = 0;

	*placed = 0;
	c.w = calloc(c.max_wild + 1, sizeof(*c.w));
	if (!c.w)
		return -ENOMEM;
	for (size_t i = 0; i < pl->nit && c.nw < c.max_wild && c.nw < max; i++) {
		struct item *u = &pl->it[i];

		if (u->cover < 0 && u->wild && u->batch < 0)
			c.w[c.nw++] = (struct pick){ u->p, (long)i };
	}
	if (pl->pc->collapse_min >= 2) {
		rc = count_groups(pl, &c);
		if (rc == 0)
			collapse(pl, &c, max);
	}
	bi = rc == 0 ? batch_new(pl, CDN_BATCH_PATHS) : rc;
	if (bi < 0) {
		cfb_release(&c);
		return (int)bi;
	}
	rc = cf_fill(pl, &c, bi);
	*placed = pl->out->batches[bi].nitems > 0;
	if (rc == 0 && !*placed) {
		free(pl->out->batches[bi].items);
		pl->out->nbatches--;
	}
	cfb_release(&c);
	return rc;
}

static int has_unassigned_root(const struct planner *pl)
{
	for (size_t i = 0; i < pl->nit; i++)
		if (pl->it[i].cover < 0 && pl->it[i].batch < 0)
			return 1;
	return 0;
}

static int plan_batches(struct planner *pl)
{
	int rc = 0, placed = 1;

	if (pl->pc->provider == CDN_CLOUDFLARE) {
		rc = cfl_chunks(pl, 0, pl->pc->max_paths, CDN_BATCH_PATHS);
		if (rc == 0)
			rc = cfl_chunks(pl, 1, pl->pc->max_wild, CDN_BATCH_PREFIXES);
		return rc;
	}
	while (rc == 0 && placed && has_unassigned_root(pl) &&
	       (!pl->pc->max_batches || pl->out->nbatches < pl->pc->max_batches))
		rc = cf_batch(pl, &placed);
	return rc;
}

/* Step 4: every target gets the batch of its root item. */
static void assign_targets(struct planner *pl, size_t n)
{
	struct cdn_plan *o = pl->out;

	for (size_t i = 0; i < n; i++) {
		const struct item *u;

		o->assign[i] = -1;
		if (pl->tu[i] < 0)
			continue;
		u = &pl->it[pl->tu[i]];
		if (u->cover >= 0 && u->batch < 0)
			u = &pl->it[u->cover];
		o->assign[i] = u->batch;
		if (u->batch < 0)
			o->nleft++;
	}
}

int cdn_plan_make(const struct cdn_plan_conf *pc, const struct cdn_target *targets, size_t n,
		  struct cdn_plan *out)
{
	struct planner pl = { .pc = pc, .out = out };
	struct buf root;
	int wild, rc;

	memset(out, 0, sizeof(*out));
	buf_init(&root, 0);
	if (!pc->max_paths || (pc->provider == CDN_CLOUDFLARE && !pc->max_wild) ||
	    (pc->provider != CDN_CLOUDFRONT && pc->provider != CDN_CLOUDFLARE) ||
	    (pc->provider == CDN_CLOUDFLARE && (!pc->domain || !*pc->domain)))
		return -EINVAL;
	out->assign = calloc(n ? n : 1, sizeof(*out->assign));
	pl.tu = calloc(n ? n : 1, sizeof(*pl.tu));
	rc = out->assign && pl.tu ? 0 : -ENOMEM;
	if (rc == 0)
		rc = cdn_encode_path(&root, pc->provider, pc->path_prefix, "", 1, &wild);
	pl.root = root.data;
	if (rc == 0)
		rc = build_items(&pl, targets, n);
	if (rc == 0) {
		find_covers(&pl);
		rc = plan_batches(&pl);
	}
	if (rc == 0)
		assign_targets(&pl, n);
	for (size_t i = 0; i < pl.nit; i++)
		free(pl.it[i].p);
	free(pl.it);
	free(pl.tu);
	buf_release(&root);
	return rc;
}

void cdn_plan_release(struct cdn_plan *p)
{
	if (!p)
		return;
	for (size_t b = 0; b < p->nbatches; b++) {
		for (size_t i = 0; i < p->batches[b].nitems; i++)
			free(p->batches[b].items[i]);
		free(p->batches[b].items);
	}
	free(p->batches);
	free(p->assign);
	memset(p, 0, sizeof(*p));
}

/* ------------------------------------------------------- CallerReference */

static atomic_uint_fast64_t ref_counter;

int cdn_caller_ref(char *out, size_t cap)
{
	unsigned char rnd[16];
	char host[65] = "", hex[33];
	size_t j = 0;

	if (cap < CDN_REF_MAX)
		return -EINVAL;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -EIO;
	if (gethostname(host, sizeof(host) - 1) < 0)
		host[0] = '\0';
	for (size_t i = 0; host[i] && j < 32; i++) {
		char c = host[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '-')
			host[j++] = c;
	}
	host[j] = '\0';
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
	snprintf(out, cap, "cdnfs-%s-%ld-%lld-%llu-%s", j ? host : "host", (long)getpid(),
		 (long long)time(NULL),
		 (unsigned long long)atomic_fetch_add(&ref_counter, 1) + 1, hex);
	return 0;
}
