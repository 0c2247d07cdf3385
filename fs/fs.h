/*
 * fs.h - the state of one mount, shared by the fs/ files.
 *
 * The namespace is a tree of nodes mirroring the bucket under the mounted
 * prefix.  A node is what a user sees: a file, directory or symlink, with
 * the attributes it reports.  Nodes come from listings (and HEADs), and from
 * this mount's own changes, which are write-back jobs (wb.c) until S3 has
 * them.
 *
 * Locking: fs->lock protects the tree (every node field), the job table and
 * every job field not marked otherwise.  It is never held across network
 * calls, cache-file I/O or calls into libfuse (house rule 10); code that
 * needs the network copies what it needs, unlocks, works, relocks and
 * re-validates (generation counters tell whether something changed).
 */
#ifndef CDNFS_FS_H
#define CDNFS_FS_H

#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "buf.h"
#include "compat.h"
#include "htab.h"
#include "s3.h"

struct http;
struct creds;
struct wq;
struct dcache;
struct attrcache;
struct wb_job;
struct rules;
struct cdn;

/* Options (fs/conf.c). */
struct fs_conf {
	char *bucket;
	char *prefix;          /* "" or "some/prefix/" */
	char *mountpoint;
	char *endpoint;
	char *region;
	int path_style;        /* -1 auto */
	char *cache_dir;
	uint64_t cache_size;
	double stat_ttl;
	double writeback_delay;
	int parallel;          /* upload workers */
	uint64_t multipart_size;
	uint64_t copy_threshold;  /* server-side copies above this use UploadPartCopy */
	uint64_t read_chunk;
	int read_ahead;        /* chunks */
	long timeout;
	int ro;
	int allow_other;
	int insecure;
	char *ca_file;         /* PEM CA bundle for TLS (AWS_CA_BUNDLE) */
	int foreground;
	int log_level;
	char *config;
	uid_t uid;
	gid_t gid;
	mode_t umask;
	/* CDN (cdn/): see include/cdn.h */
	char *cdn;             /* cloudfront | cloudflare | none */
	char *cdn_distribution_id;
	char *cdn_zone_id;
	char *cdn_domain;
	char *cdn_endpoint;
	char *cdn_path_prefix;
	double invalidate_delay;
	double flush_timeout;
	int cloudflare_batch;
	int attr_index;         /* share attributes through PREFIX.cdnfs-attrs (1) */
	double attr_index_every; /* a long-lived mount rewrites it this often (600) */
	int xattr_journal;      /* a staged file's journal entry in its xattr (1) */
};

struct fattr {
	mode_t mode;             /* with type bits */
	uid_t uid;
	gid_t gid;
	struct timespec mtime;
	uint64_t size;           /* what stat reports */
};

struct node {
	char *name;              /* "" for the root */
	struct node *parent;
	struct htab *kids;       /* directories: name -> struct node */
	struct fattr a;
	char etag[S3_ETAG_MAX];  /* of the remote object; "" when none */
	uint64_t rsize;          /* stored size in S3 (compressed size if compressed) */
	unsigned remote : 1;     /* an object (file, symlink, or dir marker) is in S3 */
	unsigned known : 1;      /* a, beyond size and Last-Modified, is known */
	unsigned compressed : 1; /* stored with Content-Encoding by cdnfs */
	unsigned local : 1;      /* created here and not yet listed (keep on relist) */
	double listed;           /* dirs: when the listing completed (monotonic), 0 never */
	double seen;             /* when S3 last confirmed this node (monotonic) */
	int listing;             /* dirs: a listing is running */
	int pins;                /* threads that use it across a lock drop: never pruned */
	int listed_big;          /* dirs: too big for a recursive listing */
	struct wb_job *job;      /* pending write-back for this key, or NULL */
	uint64_t kc_hash;        /* hash of the ETag the kernel's page cache holds, 0 none */
	uint64_t cgen;           /* bumped by every change of the data through this mount */
};

struct fs {
	struct fs_conf conf;
	struct http *http;
	struct creds *creds;
	struct s3 *s3;
	struct dcache *dc;
	struct attrcache *ac;
	struct wq *io;           /* HEADs, multipart parts, a directory rename's copies */
	struct wq *reads;        /* read-ahead: never queued behind an upload's parts */
	struct rules *rules;
	struct cdn *cdn;         /* NULL: no CDN */

	pthread_mutex_t lock;    /* see the top of this file */
	pthread_cond_t cond;     /* broadcast when a listing or an upload finishes */
	struct node *root;
	struct wb *wb;
	double started;
	int aidx_dirty;          /* this mount changed objects: write the index (fs->lock) */
	uint64_t cgen;           /* bumped with every node's cgen (fs->lock; read atomically) */
	/* Listings in flight, and keys (or "dir/" prefixes) deleted while one
	 * was: a listing that began before a delete must not bring the key
	 * back (meta.c).  Cleared when no listing is in flight. */
	int listings;
	struct htab *tombs;      /* key -> (double *) when deleted */
	double tombs_lost;       /* when a tombstone could not be stored (ENOMEM) */
};

/* The one instance (FUSE's private_data). */
extern struct fs *g_fs;

/* Monotonic seconds. */
double fs_now(void);

/* --- tree.c: the namespace; all called with fs->lock held ------------------- */

/* Key (or "dir/" prefix: everything under it) was deleted from S3 just now:
 * listings in flight must not bring it back.  Locked. */
void meta_deleted(struct fs *fs, const char *key);

/* Split path "/a/b/c" and walk; NULL when a component is not in the tree. */
struct node *tree_find(struct fs *fs, const char *path);
/* The node of an S3 key under the mount's prefix (a "dir/" marker's key
 * gives the directory), or NULL. */
struct node *tree_find_key(struct fs *fs, const char *key);
/* Child of dir by name, or NULL. */
struct node *tree_child(struct node *dir, const char *name);
/* Create (or return the existing) child; NULL on ENOMEM. */
struct node *tree_add(struct node *dir, const char *name, mode_t type);
/* Unlink node from its parent and free it and its subtree. */
void tree_remove(struct node *n);
/* Move n under dir with name (replacing any child of that name). */
int tree_move(struct node *n, struct node *dir, const char *name) WUR;
/* The node's path relative to the mount, "a/b/c" ("" for root), into out. */
int tree_relpath(const struct node *n, struct buf *out) WUR;
/* The S3 key: prefix + relpath (+ '/' for a dir marker when marker). */
int tree_key(struct fs *fs, const struct node *n, int marker, struct buf *out) WUR;
/* Default attributes for a new node of type. */
void tree_default_attr(struct fs *fs, struct fattr *a, mode_t type);
int tree_new_root(struct fs *fs) WUR;

/* --- attrindex.c: the shared attribute index, PREFIX.cdnfs-attrs ----------- */

/* Is path (in the mount) the index's reserved name? */
int aidx_reserved(const struct fs *fs, const char *path);
/* Is key the index object? */
int aidx_is_key(const struct fs *fs, const char *key);
/* A listing of the mount root: merge the index it shows, once per ETag.
 * Unlocked (network). */
void aidx_listed(struct fs *fs, const struct s3_list_page *pages, size_t npages);
/* Write the index when this mount changed objects since the last write
 * (merging the one in S3 first): at unmount after write-back, and from the
 * write-back dispatcher every attr_index_every seconds of a long-lived
 * mount once its queue has been quiet for a while.  Unlocked. */
void aidx_save(struct fs *fs);

/* --- meta.c: keep the tree current with S3 ---------------------------------- */

/* Resolve path to a node, listing directories as needed.  With fs->lock
 * held; may drop and retake it.  *out is valid until the lock is dropped.
 * -ENOENT when absent. */
int meta_resolve(struct fs *fs, const char *path, struct node **out) WUR;
/* Resolve the parent directory of path; *name points into path (the last
 * component, checked to be <= 255 bytes). */
int meta_resolve_parent(struct fs *fs, const char *path, struct node **dir,
			const char **name) WUR;
/* Make sure dir is listed and fresh, and that every child's attributes are
 * known (HEADs in parallel for unknown ones).  Lock held; may drop it. */
int meta_ensure_listed(struct fs *fs, struct node *dir, int with_attrs) WUR;
/* HEAD, in parallel, every child of dir whose attributes are unknown. */
int meta_ensure_attrs(struct fs *fs, struct node *dir) WUR;
/* Attributes of n as struct stat. */
void meta_stat(struct fs *fs, const struct node *n, struct stat *st);
/* POSIX attributes from a HEAD's headers (s3fs's x-amz-meta-*), defaults
 * where absent; *compressed (may be NULL) tells a cdnfs-compressed object. */
void meta_obj_attr(struct fs *fs, const struct s3_obj *o, mode_t type, struct fattr *a,
		   int *compressed);
/* Apply object metadata (mode/uid/gid/mtime/orig size) from a HEAD. */
void meta_apply_head(struct fs *fs, struct node *n, const struct s3_obj *o);
/* The headers describing a's POSIX metadata, for uploads. */
int meta_posix_headers(const struct fattr *a, struct buf *storage, struct sigv4_kv *kv,
		       size_t *nkv, size_t cap) WUR;

#endif
