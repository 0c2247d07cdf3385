/*
 * tree.c - the in-memory namespace: nodes, their children, paths and keys.
 *
 * Owns every struct node.  A directory's children live in a hash table keyed
 * by name.  All functions run with fs->lock held (see fs.h); none blocks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"
#include "wb.h"

struct fs *g_fs;

double fs_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tree_default_attr(struct fs *fs, struct fattr *a, mode_t type)
{
	memset(a, 0, sizeof(*a));
	if (S_ISDIR(type))
		a->mode = S_IFDIR | (0777 & ~fs->conf.umask);
	else if (S_ISLNK(type))
		a->mode = S_IFLNK | 0777;
	else
		a->mode = S_IFREG | (0666 & ~fs->conf.umask);
	a->uid = fs->conf.uid;
	a->gid = fs->conf.gid;
	clock_gettime(CLOCK_REALTIME, &a->mtime);
}

static struct node *node_new(const char *name, mode_t type)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->name = strdup(name);
	if (!n->name || (S_ISDIR(type) && htab_new(&n->kids) < 0)) {
		free(n->name);
		free(n);
		return NULL;
	}
	return n;
}

int tree_new_root(struct fs *fs)
{
	fs->root = node_new("", S_IFDIR);
	if (!fs->root)
		return -ENOMEM;
	tree_default_attr(fs, &fs->root->a, S_IFDIR);
	fs->root->known = 1;
	return 0;
}

struct node *tree_child(struct node *dir, const char *name)
{
	return dir->kids ? htab_get(dir->kids, name) : NULL;
}

struct node *tree_find(struct fs *fs, const char *path)
{
	struct node *n = path ? fs->root : NULL;
	char comp[256];

	while (n && *path) {
		size_t len;

		while (*path == '/')
			path++;
		if (!*path)
			break;
		len = strcspn(path, "/");
		if (len >= sizeof(comp))
			return NULL;
		memcpy(comp, path, len);
		comp[len] = '\0';
		n = tree_child(n, comp);
		path += len;
	}
	return n;
}

struct node *tree_find_key(struct fs *fs, const char *key)
{
	size_t plen = strlen(fs->conf.prefix);
	struct node *n = NULL;
	struct buf path;

	if (strncmp(key, fs->conf.prefix, plen) != 0)
		return NULL;
	buf_init(&path, 8192);
	if (buf_addch(&path, '/') == 0 && buf_addstr(&path, key + plen) == 0) {
		if (path.len > 1 && path.data[path.len - 1] == '/')
			path.data[--path.len] = '\0'; /* a "dir/" marker: the directory */
		n = tree_find(fs, buf_str(&path));
	}
	buf_release(&path);
	return n;
}

static void node_free(void *p)
{
	struct node *n = p;

	if (!n)
		return;
	if (n->kids)
		htab_free(n->kids, node_free);
	if (n->job)
		wb_node_gone(n->job);
	free(n->name);
	free(n);
}

struct node *tree_add(struct node *dir, const char *name, mode_t type)
{
	struct node *n = tree_child(dir, name);

	if (n) {
		/* a file replaced by a directory of that name, or the reverse */
		if (!!S_ISDIR(type) == !!n->kids)
			return n;
		tree_remove(n);
	}
	n = node_new(name, type);
	if (!n)
		return NULL;
	if (!dir->kids || htab_put(dir->kids, name, n, NULL) < 0) {
		node_free(n);
		return NULL;
	}
	n->parent = dir;
	n->a.mode = type;
	return n;
}

void tree_remove(struct node *n)
{
	if (n->parent)
		htab_del(n->parent->kids, n->name);
	n->parent = NULL;
	node_free(n);
}

int tree_move(struct node *n, struct node *dir, const char *name)
{
	struct node *old = tree_child(dir, name);
	char *nn;

	if (old == n)
		return 0;
	nn = strdup(name);
	if (!nn)
		return -ENOMEM;
	if (old)
		tree_remove(old);
	htab_del(n->parent->kids, n->name);
	free(n->name);
	n->name = nn;
	if (htab_put(dir->kids, n->name, n, NULL) < 0) {
		n->parent = NULL;
		node_free(n);
		return -ENOMEM;
	}
	n->parent = dir;
	/* newer than any listing in flight, which cannot show the new name */
	n->seen = fs_now();
	return 0;
}

static int relpath_rec(const struct node *n, struct buf *out)
{
	int rc;

	if (!n->parent)
		return 0;
	rc = relpath_rec(n->parent, out);
	if (rc == 0 && n->parent->parent)
		rc = buf_addch(out, '/');
	if (rc == 0)
		rc = buf_addstr(out, n->name);
	return rc;
}

int tree_relpath(const struct node *n, struct buf *out)
{
	return relpath_rec(n, out);
}

int tree_key(struct fs *fs, const struct node *n, int marker, struct buf *out)
{
	int rc = buf_addstr(out, fs->conf.prefix);

	if (rc == 0)
		rc = relpath_rec(n, out);
	if (rc == 0 && marker && n->parent)
		rc = buf_addch(out, '/');
	return rc;
}
