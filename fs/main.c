/*
 * main.c - the cdnfs program: options, start-up checks, the FUSE loop,
 * and an orderly shutdown that uploads everything pending.
 *
 * Start-up does every check that can fail (options, config, cache_dir,
 * mountpoint, credentials, the bucket) before mounting, so a mount either
 * works or fails at once with one clear line and nothing left mounted.
 * Threads are started only after fuse_daemonize has forked.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "attrcache.h"
#include "conf.h"
#include "creds.h"
#include "cdn.h"
#include "dcache.h"
#include "http.h"
#include "log.h"
#include "ops.h"
#include "rules.h"
#include "verify.h"
#include "wb.h"
#include "wq.h"

#define IO_THREADS 32

struct cmdline {
	struct fuse_args fargs;   /* what goes to fuse_new */
	char **names, **values;   /* cdnfs -o options, in order */
	size_t n;
	char *spec;               /* BUCKET[:PREFIX] */
	char *mountpoint;
	int foreground, debug, help, version, print_rules;
	char *explain;
	int nonopts;
	int error;
};

enum { KEY_HELP, KEY_VERSION, KEY_FG, KEY_DEBUG, KEY_PRINT_RULES, KEY_EXPLAIN, KEY_SINGLE };

static const struct fuse_opt cli_opts[] = {
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("-f", KEY_FG),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("debug", KEY_DEBUG),
	FUSE_OPT_KEY("-s", KEY_SINGLE),
	FUSE_OPT_KEY("--print-rules", KEY_PRINT_RULES),
	FUSE_OPT_KEY("--explain=", KEY_EXPLAIN),
	FUSE_OPT_END
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: cdnfs [-f] [-d] [-o opt[,opt...]] BUCKET[:PREFIX] MOUNTPOINT\n"
		"       cdnfs --print-rules [-o config=FILE]\n"
		"       cdnfs --explain=KEY [-o config=FILE]\n"
		"       cdnfs flush MOUNTPOINT     wait until S3 and the CDN have everything\n"
		"       cdnfs status MOUNTPOINT    the status JSON\n"
"       cdnfs verify [-v] [-o opt,...] MOUNTPOINT [PATH...]\n"
"                                  fetch the files' URLs, check their headers\n"
		"       cdnfs --help | --version\n\n"
		"Mount an S3 bucket for CDN-served assets.  Unmount with fusermount3 -u.\n\n"
		"    -f                     stay in the foreground, log to stderr\n"
		"    -d                     FUSE debug output (implies -f)\n"
		"%s"
		"    -o OPT                 any FUSE mount option (fsname, ...)\n\n"
		"Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the AWS profile, or\n"
		"EC2 instance metadata.  See cdnfs(1) and cdnfs.conf(5).\n",
		conf_help());
}

static int keep(struct cmdline *cl, const char *name, const char *value)
{
	char **n = realloc(cl->names, (cl->n + 1) * sizeof(*n));
	char **v;

	if (!n)
		return -1;
	cl->names = n;
	v = realloc(cl->values, (cl->n + 1) * sizeof(*v));
	if (!v)
		return -1;
	cl->values = v;
	cl->names[cl->n] = strdup(name);
	cl->values[cl->n] = value ? strdup(value) : NULL;
	cl->n++;
	return 0;
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *out)
{
	struct cmdline *cl = data;
	char name[64];
	const char *eq;

	(void)out;
	switch (key) {
	case KEY_HELP: cl->help = 1; return 0;
	case KEY_VERSION: cl->version = 1; return 0;
	case KEY_FG: cl->foreground = 1; return 0;
	case KEY_DEBUG: cl->debug = cl->foreground = 1; return 1;
	case KEY_SINGLE: return 1;
	case KEY_PRINT_RULES: cl->print_rules = 1; return 0;
	case KEY_EXPLAIN: cl->explain = strdup(arg + strlen("--explain=")); return 0;
	case FUSE_OPT_KEY_NONOPT:
		if (cl->nonopts == 0)
			cl->spec = strdup(arg);
		else if (cl->nonopts == 1)
			cl->mountpoint = strdup(arg);
		else
			cl->error = 1;
		cl->nonopts++;
		return 0;
	case FUSE_OPT_KEY_OPT:
		eq = strchr(arg, '=');
		snprintf(name, sizeof(name), "%.*s", (int)(eq ? eq - arg : (int)strlen(arg)), arg);
		if (!conf_known(name))
			return 1; /* a FUSE option: fuse_new judges it */
		if (keep(cl, name, eq ? eq + 1 : NULL) < 0)
			return -1;
		/* ro and allow_other are FUSE's too */
		return strcmp(name, "ro") == 0 || strcmp(name, "allow_other") == 0;
	default:
		return 1;
	}
}

static int die(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "cdnfs: ");
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	return 1;
}

/* Options in precedence order: defaults, environment, config file, -o. */
static int configure(struct fs *fs, struct cmdline *cl)
{
	struct buf err;
	const char *config = NULL;
	int rc = 0;

	buf_init(&err, 4096);
	conf_defaults(&fs->conf);
	for (size_t i = 0; i < cl->n; i++)
		if (strcmp(cl->names[i], "config") == 0)
			config = cl->values[i];
	if (!config && access("/etc/cdnfs/cdnfs.conf", F_OK) == 0)
		config = "/etc/cdnfs/cdnfs.conf";
	rc = conf_from_env(&fs->conf, &err);
	if (rc == 0)
		rc = rules_load(&fs->rules, config, conf_file_opt, &fs->conf, &err);
	for (size_t i = 0; rc == 0 && i < cl->n; i++)
		rc = conf_set(&fs->conf, cl->names[i], cl->values[i], &err);
	if (rc == 0 && !cl->spec && getenv("AWS_STORAGE_BUCKET_NAME"))
		cl->spec = strdup(getenv("AWS_STORAGE_BUCKET_NAME"));
	if (rc == 0 && cl->spec)
		rc = conf_set_bucket(&fs->conf, cl->spec, &err);
	if (rc < 0)
		fprintf(stderr, "cdnfs: %s\n", err.len ? buf_str(&err) : strerror(-rc));
	buf_release(&err);
	return rc < 0 ? 1 : 0;
}

static int check_mountpoint(const char *mp)
{
	struct stat st;
	DIR *d;
	struct dirent *de;
	int nonempty = 0;

	if (stat(mp, &st) < 0)
		return die("cannot use mountpoint '%s': %s", mp, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return die("mountpoint '%s' is not a directory%s", mp, "");
	d = opendir(mp);
	if (!d)
		return die("cannot open mountpoint '%s': %s", mp, strerror(errno));
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			nonempty = 1;
	closedir(d);
	if (nonempty)
		return die("mountpoint '%s' is not empty%s", mp, "");
	return 0;
}

static int mkdir_0700(const char *p)
{
	struct stat st;

	if (mkdir(p, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (stat(p, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	return 0;
}

/* cache_dir/BUCKET, 0700, locked against a second mount.  Returns the lock fd. */
static int setup_cache_dir(struct fs *fs)
{
	char *dir = fs->conf.cache_dir, *sub = NULL, *lock = NULL;
	int rc, fd = -1;

	if (!dir) {
		const char *home = getenv("HOME");

		if (getuid() == 0 || !home)
			dir = strdup("/var/cache/cdnfs");
		else if (asprintf(&dir, "%s/.cache/cdnfs", home) < 0)
			dir = NULL;
		if (!dir)
			return -1;
		if (getuid() != 0 && home) {
			char *parent = NULL;

			if (asprintf(&parent, "%s/.cache", home) >= 0) {
				(void)!mkdir(parent, 0700);
				free(parent);
			}
		}
		fs->conf.cache_dir = dir;
	}
	rc = mkdir_0700(dir);
	if (rc < 0) {
		die("cannot use cache_dir '%s': %s", dir, strerror(-rc));
		return -1;
	}
	if (dir[0] != '/') { /* the daemon runs in '/' */
		char *abs = realpath(dir, NULL);

		if (!abs) {
			die("cannot use cache_dir '%s': %s", dir, strerror(errno));
			return -1;
		}
		fs->conf.cache_dir = abs; /* dir was it */
		free(dir);
		dir = abs;
	}
	if (asprintf(&sub, "%s/%s", dir, fs->conf.bucket) < 0)
		return -1;
	rc = mkdir_0700(sub);
	if (rc == 0 && asprintf(&lock, "%s/lock", sub) >= 0)
		fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (rc < 0 || fd < 0)
		die("cannot use cache_dir '%s': %s", sub, strerror(rc < 0 ? -rc : errno));
	else if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		die("cache_dir '%s' is in use by another cdnfs mount%s", sub, "");
		close(fd);
		fd = -1;
	}
	if (fd >= 0) {
		fs->conf.cache_dir = sub;
		free(dir);
		sub = NULL;
	}
	free(sub);
	free(lock);
	return fd;
}

static int connect_s3(struct fs *fs)
{
	struct http_conf hc = { .timeout_s = fs->conf.timeout, .insecure = fs->conf.insecure,
				.ca_file = fs->conf.ca_file };
	struct s3_conf sc = { fs->conf.endpoint, fs->conf.region, fs->conf.bucket,
			      fs->conf.path_style };
	char region[64];
	struct buf err;
	int rc;

	buf_init(&err, 4096);
	rc = http_new(&fs->http, &hc);
	if (rc == 0)
		rc = creds_new(&fs->creds, fs->http, &err);
	if (rc == 0 && !fs->conf.region && creds_region(region, sizeof(region)) == 1)
		sc.region = fs->conf.region = strdup(region);
	if (rc == 0)
		rc = s3_new(&fs->s3, &sc, fs->http, fs->creds);
	if (rc == -EINVAL && err.len == 0)
		(void)!buf_addf(&err, "bad endpoint '%s'", fs->conf.endpoint);
	if (rc == 0)
		rc = s3_check_bucket(fs->s3, &err);
	if (rc < 0)
		fprintf(stderr, "cdnfs: %s\n", err.len ? buf_str(&err) : strerror(-rc));
	if (fs->conf.insecure)
		log_warn("TLS certificate verification is OFF (-o insecure)");
	buf_release(&err);
	return rc < 0 ? 1 : 0;
}

static int setup_cdn(struct fs *fs)
{
	struct fs_conf *c = &fs->conf;
	struct cdn_conf cc = { 0 };
	struct buf err;
	int rc;

	if (!c->cdn || strcmp(c->cdn, "none") == 0)
		return 0;
	rc = cdn_provider_parse(c->cdn, &cc.provider);
	if (rc < 0)
		return rc;
	cc.distribution_id = c->cdn_distribution_id;
	cc.zone_id = c->cdn_zone_id;
	cc.domain = c->cdn_domain;
	cc.endpoint = c->cdn_endpoint;
	cc.path_prefix = c->cdn_path_prefix;
	cc.journal_dir = c->cache_dir;
	cc.invalidate_delay = c->invalidate_delay;
	cc.flush_timeout = c->flush_timeout;
	cc.cloudflare_batch = c->cloudflare_batch;
	cc.request_timeout = (double)c->timeout;
	buf_init(&err, 4096);
	rc = cdn_new(&fs->cdn, &cc, fs->http, fs->creds, &err);
	if (rc < 0)
		fprintf(stderr, "cdnfs: %s\n", err.len ? buf_str(&err) : strerror(-rc));
	buf_release(&err);
	return rc;
}

static int print_rules(struct fs *fs, const char *explain)
{
	struct buf out;
	int rc;

	buf_init(&out, 1 << 20);
	rc = explain ? rules_explain(fs->rules, explain, &out) : rules_print(fs->rules, &out);
	if (rc == 0)
		fputs(buf_str(&out), stdout);
	buf_release(&out);
	return rc < 0;
}

static int add_fuse_opts(struct fs *fs, struct cmdline *cl)
{
	char *fsname = NULL;
	int rc = 0;

	if (asprintf(&fsname, "-ofsname=cdnfs:%s,subtype=cdnfs", fs->conf.bucket) < 0)
		return -1;
	rc |= fuse_opt_add_arg(&cl->fargs, fsname);
	if (fs->conf.allow_other)
		rc |= fuse_opt_add_arg(&cl->fargs, "-odefault_permissions");
	free(fsname);
	return rc;
}

static int start_threads(struct fs *fs)
{
	struct dcache_conf dc = { fs->conf.cache_dir, fs->conf.cache_size, fs->conf.read_chunk,
				  fs->conf.read_ahead };
	/* read-ahead has threads of its own: on the io pool its chunks waited
	 * behind every part of a large upload (a 1 MiB read took 11 s behind
	 * a 64-part one), and a reader cannot fetch a chunk a queued job holds */
	int nreads = fs->conf.read_ahead > 2 ? 2 * fs->conf.read_ahead : 4;
	int rc = wq_new(&fs->io, IO_THREADS, "cdnfs-io");

	if (nreads > 64)
		nreads = 64;
	if (rc == 0)
		rc = wq_new(&fs->reads, nreads, "cdnfs-read");
	if (rc == 0)
		rc = dcache_open(&fs->dc, &dc, fs->s3, fs->reads);
	if (rc == 0)
		rc = wb_start(fs->wb);
	if (rc == 0 && fs->cdn)
		rc = cdn_start(fs->cdn);
	if (rc < 0)
		log_error("cannot start: %s", strerror(-rc));
	return rc;
}

static void teardown(struct fs *fs)
{
	cdn_free(fs->cdn);
	if (fs->wb)
		wb_free(fs->wb);
	wq_free(fs->io);
	wq_free(fs->reads);
	dcache_close(fs->dc);
	attrcache_close(fs->ac);
	if (fs->root)
		tree_remove(fs->root);
	if (fs->tombs)
		htab_free(fs->tombs, free);
	s3_free(fs->s3);
	creds_free(fs->creds);
	http_free(fs->http);
	rules_free(fs->rules);
	conf_release(&fs->conf);
	pthread_mutex_destroy(&fs->lock);
	pthread_cond_destroy(&fs->cond);
}

/* Finish the renames a crash cut short (ops_rename_recover) before the
 * mount, so that a failure is the start's one-line error, and before the
 * fork: the copies' threads end with it. */
static int finish_renames(struct fs *fs)
{
	struct wb_rename *r;
	int rc;

	if (wb_renames(fs->wb, &r) == 0)
		return 0;
	if (wq_new(&fs->io, IO_THREADS, "cdnfs-io") < 0) {
		log_error("cannot finish the renames the last stop cut short: %s",
			  strerror(ENOMEM));
		return -ENOMEM;
	}
	rc = ops_rename_recover(fs);
	wq_free(fs->io);
	fs->io = NULL;
	return rc;
}

static void on_sigusr1(int sig)
{
	(void)sig;
	wb_status_requested = 1;
}

/* Everything between a working configuration and the end of the mount. */
static int run(struct fs *fs, struct cmdline *cl)
{
	struct fuse *fuse = NULL;
	struct fuse_loop_config *lc = NULL;
	int rc = 1, mounted = 0, left;

	if (tree_new_root(fs) < 0 || htab_new(&fs->tombs) < 0 || attrcache_open(&fs->ac, fs->conf.cache_dir) < 0 ||
	    wb_new(&fs->wb, fs) < 0 || wb_recover(fs->wb) < 0 || finish_renames(fs) < 0)
		return 1;
	if (add_fuse_opts(fs, cl) < 0)
		return 1;
	fuse = fuse_new(&cl->fargs, &cdnfs_ops, sizeof(cdnfs_ops), fs);
	if (!fuse)
		return 1; /* fuse_new said why (an unknown option) */
	if (fuse_mount(fuse, cl->mountpoint) < 0)
		goto out;
	mounted = 1;
	if (fuse_daemonize(cl->foreground) < 0)
		goto out;
	if (!cl->foreground)
		log_init(1, (enum log_level)fs->conf.log_level);
	if (start_threads(fs) < 0 || fuse_set_signal_handlers(fuse_get_session(fuse)) < 0)
		goto out;
	signal(SIGUSR1, on_sigusr1);
	log_info("mounted bucket '%s' on '%s'", fs->conf.bucket, cl->mountpoint);
	lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(lc, 64);
	rc = fuse_loop_mt(fuse, lc) < 0; /* > 0: the signal that ended it (clean) */
	fuse_loop_cfg_destroy(lc);
	fuse_remove_signal_handlers(fuse_get_session(fuse));
out:
	if (mounted)
		fuse_unmount(fuse);
	left = wb_shutdown(fs->wb);
	if (left > 0) {
		log_error("%d change%s could not be sent to S3; kept in '%s' for the next mount",
			  left, left == 1 ? "" : "s", fs->conf.cache_dir);
		rc = 1;
	} else {
		aidx_save(fs);
	}
	if (fs->cdn)
		(void)cdn_shutdown(fs->cdn, -1); /* it logs what stays in the journal */
	fuse_destroy(fuse);
	return rc;
}

/* Is path a mounted cdnfs (fuse.cdnfs in the mount table)? */
static int is_cdnfs_mount(const char *path)
{
	char real[4096], line[8192];
	FILE *f;
	int found = 0;

	if (!realpath(path, real) || !(f = fopen("/proc/self/mounts", "re")))
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		char dev[4096], mnt[4096], type[64];

		if (sscanf(line, "%4095s %4095s %63s", dev, mnt, type) == 3 &&
		    strcmp(type, "fuse.cdnfs") == 0 && strcmp(mnt, real) == 0)
			found = 1; /* mount points with spaces are octal-escaped: not matched */
	}
	fclose(f);
	return found;
}

/* cdnfs flush MNT / cdnfs status MNT: the xattrs, for deploy scripts. */
static int subcommand(const char *cmd, const char *mnt)
{
	char buf[65536];
	ssize_t n;

	if (strcmp(cmd, "flush") == 0) {
		if (setxattr(mnt, "user.cdnfs.flush", "1", 1, 0) == 0)
			return 0;
		fprintf(stderr, "cdnfs: flush of '%s' failed: %s\n", mnt, strerror(errno));
		return 1;
	}
	n = getxattr(mnt, "user.cdnfs.status", buf, sizeof(buf) - 1);
	if (n < 0) {
		fprintf(stderr, "cdnfs: cannot read the status of '%s': %s\n", mnt, strerror(errno));
		return 1;
	}
	buf[n] = '\0';
	fputs(buf, stdout);
	return 0;
}

int main(int argc, char *argv[])
{
	struct cmdline cl = { .fargs = FUSE_ARGS_INIT(argc, argv) };
	static struct fs fs_store;
	struct fs *fs = &fs_store;
	int rc = 1, lockfd = -1;

	if (argc == 3 && (strcmp(argv[1], "flush") == 0 || strcmp(argv[1], "status") == 0) &&
	    is_cdnfs_mount(argv[2]))
		return subcommand(argv[1], argv[2]);
	rc = verify_command(argc, argv);
	if (rc >= 0)
		return rc;
	rc = 1;
	g_fs = fs;
	pthread_mutex_init(&fs->lock, NULL);
	pthread_cond_init(&fs->cond, NULL);
	fs->started = fs_now();
	log_init(0, LOGL_INFO);
	if (fuse_opt_parse(&cl.fargs, &cl, cli_opts, opt_proc) < 0 || cl.error) {
		usage(stderr);
		goto out;
	}
	if (cl.help || cl.version) {
		if (cl.help)
			usage(stdout);
		else
			printf("cdnfs %s (libfuse %s)\n", CDNFS_VERSION, fuse_pkgversion());
		rc = 0;
		goto out;
	}
	if (configure(fs, &cl))
		goto out;
	log_set_level((enum log_level)fs->conf.log_level);
	if (cl.print_rules || cl.explain) {
		rc = print_rules(fs, cl.explain);
		goto out;
	}
	if (!fs->conf.bucket || !cl.mountpoint) {
		usage(stderr);
		goto out;
	}
	if (cl.mountpoint[0] != '/') { /* the daemon runs in '/': unmount needs it whole */
		char *abs = realpath(cl.mountpoint, NULL);

		if (abs) {
			free(cl.mountpoint);
			cl.mountpoint = abs;
		}
	}
	fs->conf.mountpoint = strdup(cl.mountpoint);
	if (check_mountpoint(cl.mountpoint) || (lockfd = setup_cache_dir(fs)) < 0 ||
	    connect_s3(fs) || setup_cdn(fs) < 0)
		goto out;
	rc = run(fs, &cl);
out:
	teardown(fs);
	if (lockfd >= 0)
		close(lockfd);
	for (size_t i = 0; i < cl.n; i++) {
		free(cl.names[i]);
		free(cl.values[i]);
	}
	free(cl.names);
	free(cl.values);
	free(cl.spec);
	free(cl.mountpoint);
	free(cl.explain);
	fuse_opt_free_args(&cl.fargs);
	return rc;
}
