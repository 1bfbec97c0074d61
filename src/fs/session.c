// SPDX-License-Identifier: Apache-2.0
/*
 * The daemon: mount, daemonize, serve multi-threaded until unmounted or
 * signalled, then let the process's exit take the detached overlay mounts
 * with it.
 */
#include "fs_i.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <syslog.h>

static void fuse_log_to_imgfs(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char msg[1024];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	imgfs_log(level <= FUSE_LOG_ERR	      ? IMGFS_LOG_ERR
		  : level == FUSE_LOG_WARNING ? IMGFS_LOG_WARN
		  : level <= FUSE_LOG_INFO    ? IMGFS_LOG_INFO
					      : IMGFS_LOG_DEBUG,
		  "fuse: %s", msg);
}

/* Lift the soft limit on open files to the hard one, as passthrough_hp does:
 * headroom for requests and pulls. Not beyond it: inodes keep at most a
 * budget of fds (fdcache.c), and the hard limit is the administrator's
 * (LimitNOFILE=, ulimit -Hn). */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			imgfs_warn("fs: raising the open file limit: %s", strerror(errno));
	}
}

/*
 * The kernel reads a FUSE file ahead in READs of at most the mount's
 * read_ahead_kb: 128 KiB, the most INIT can ask for. A large file then costs
 * a round trip per 128 KiB; 1 MiB makes a cold tar of the bench image ~6%
 * faster (docs/benchmarks.md). It can only be raised in sysfs, and only once
 * INIT is answered (the INIT reply lowers it again), so the path is found
 * here and written at the first request after INIT. Best effort.
 */
#define FS_READ_AHEAD_KB "1024"

static void find_read_ahead(struct fs *fs, const char *mountpoint)
{
	_cleanup_free_ char *real = realpath(mountpoint, NULL);
	char line[4096], dev[32] = "";
	FILE *f;

	if (!real || !(f = fopen("/proc/self/mountinfo", "re")))
		return;
	/* "id parent MAJ:MIN root mount-point ... - fuse.imgfs ...": the bdi is
	 * named after the superblock's device; a stat of the mount point would
	 * wait for INIT */
	while (fgets(line, sizeof(line), f)) {
		char mdev[32], mpoint[sizeof(line)];
		if (sscanf(line, "%*s %*s %31s %*s %4095s", mdev, mpoint) == 2 &&
		    !strcmp(mpoint, real) && strstr(line, " - fuse.imgfs "))
			snprintf(dev, sizeof(dev), "%s", mdev);
	}
	fclose(f);
	if (dev[0])
		snprintf(fs->bdi_read_ahead, sizeof(fs->bdi_read_ahead),
			 "/sys/class/bdi/%s/read_ahead_kb", dev);
}

void fs_raise_read_ahead(struct fs *fs)
{
	int expect = 0, fd;

	if (__atomic_load_n(&fs->bdi_read_ahead_set, __ATOMIC_RELAXED) || !fs->bdi_read_ahead[0] ||
	    !__atomic_compare_exchange_n(&fs->bdi_read_ahead_set, &expect, 1, false,
					 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return;
	fd = open(fs->bdi_read_ahead, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || imgfs_write_all(fd, FS_READ_AHEAD_KB, strlen(FS_READ_AHEAD_KB)) < 0)
		imgfs_debug("fs: %s: %s", fs->bdi_read_ahead, strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* Open the store (created if missing); with -o ro, a store that cannot be
 * written is opened read-only. */
static int open_store(const struct imgfs_fs_opts *opts, const char *dir, struct imgfs_store **s,
		      struct imgfs_error *err)
{
	if (imgfs_store_open(dir, s, err) == 0)
		return 0;
	if (!opts->read_only || (err->code != EROFS && err->code != EACCES))
		return -1;
	memset(err, 0, sizeof(*err));
	return imgfs_store_open_how(dir, IMGFS_STORE_READ, s, err);
}

/*
 * libfuse before 3.17 never puts FUSE_PARALLEL_DIROPS into the INIT reply,
 * whatever the filesystem wants (libfuse commit c9905341), so the kernel
 * takes a mutex per directory around every LOOKUP and READDIR: one lookup
 * waiting for a pull under pull/ held every other lookup in that directory,
 * and its waiters sat in state D where no signal reaches them. The flag is
 * added here, on the reply's way out, when fs_op_init asked for it.
 */
bool fs_init_reply(struct fs *fs, struct iovec *iov, int count)
{
	const struct fuse_out_header *out = iov[0].iov_base;
	struct fuse_init_out *init;

	if (__atomic_load_n(&fs->init_replied, __ATOMIC_ACQUIRE) ||
	    __atomic_exchange_n(&fs->init_replied, 1, __ATOMIC_ACQ_REL))
		return false;
	if (count < 2 || out->error || iov[1].iov_len < sizeof(*init))
		return true;
	init = iov[1].iov_base;
	if (fs->parallel_dirops)
		init->flags |= FUSE_PARALLEL_DIROPS;
	imgfs_debug("fs: INIT reply flags 0x%x 0x%x", init->flags, init->flags2);
	return true;
}

static ssize_t dev_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	fs_init_reply(userdata, iov, count);
	return writev(fd, iov, count);
}

ssize_t fs_dev_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	return read(fd, buf, len);
}

ssize_t fs_dev_splice_receive(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			      unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

static ssize_t dev_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			       unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

/* Over /dev/fuse (no io_uring): libfuse's own I/O, but for the INIT reply. */
static void dev_io_setup(struct fs *fs)
{
	const struct fuse_custom_io io = {
	    .writev = dev_writev,
	    .read = fs_dev_read,
	    .splice_receive = fs_dev_splice_receive,
	    .splice_send = dev_splice_send,
	};
	int rc = fuse_session_custom_io(fs->se, &io, fuse_session_fd(fs->se));

	if (rc < 0)
		imgfs_warn("fs: /dev/fuse I/O: %s (lookups in one directory run one at a time)",
			   strerror(-rc));
}

static int fs_init(struct fs *fs, const struct imgfs_fs_opts *opts, struct imgfs_error *err)
{
	raise_nofile();
	fs_fd_init(fs);
	if (open_store(opts, opts->store_dir, &fs->store, err) < 0)
		return -1;
	fs->root = imgfs_store_root(fs->store);
	fs->fetch = opts->fetch;
	if (opts->fetch)
		fs->fetch_anon = *opts->fetch;
	else
		imgfs_fetch_config_init(&fs->fetch_anon);
	fs->fetch_anon.anonymous = true;
	fs->fetch_anon.auth_file = NULL;
	fs->fetch_anon.owned_ = NULL; /* borrowed: opts->fetch frees it */
	fs->pull_policy = opts->pull;
	fs->pull_creds_shared = opts->pull_creds_shared;
	fs->pull_max_size = opts->pull_max_size;
	fs->pull_max_per_user = opts->pull_max_per_user;
	fs->owner = geteuid();
	fs->read_only = opts->read_only;
	fs->blobs_all = opts->blobs_all;
	fs->debug = opts->debug;
	fs->meta_path = imgfs_xasprintf("%s/meta/data.mdb", fs->root);
	pthread_mutex_init(&fs->backing_lock, NULL);
	pthread_mutex_init(&fs->cat_lock, NULL);
	pthread_mutex_init(&fs->pull_lock, NULL);
	if (fs_inodes_init(fs) < 0)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	if (fs_ra_start(fs) < 0)
		return imgfs_error_set(err, EAGAIN, "could not start the read-ahead threads");
	return 0;
}

static void fs_free(struct fs *fs)
{
	fs_ra_stop(fs);
	fs_inodes_free(fs);
	fs_tree_holds_release(fs);
	fs_catalog_free_all(fs);
	for (size_t i = 0; i < FS_MAX_FAILURES; i++) {
		free(fs->failures[i].ref);
		free(fs->failures[i].msg);
		fs_uids_destroy(&fs->failures[i].uids);
	}
	free(fs->meta_path);
	free(fs);
}

static struct fuse_session *session_new(struct fs *fs, const struct imgfs_fs_opts *opts,
					struct imgfs_error *err)
{
	_cleanup_free_ char *o =
	    imgfs_xasprintf("fsname=imgfs,subtype=imgfs,default_permissions%s%s",
			    opts->allow_other ? ",allow_other" : "", opts->read_only ? ",ro" : "");
	char *argv[] = {"imgfs", "-o", o, opts->debug ? "-d" : NULL, NULL};
	struct fuse_args args = FUSE_ARGS_INIT(opts->debug ? 4 : 3, argv);
	struct fuse_session *se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), fs);

	fuse_opt_free_args(&args);

	if (!se)
		imgfs_error_set(err, EINVAL, "mount %s: could not create the FUSE session",
				opts->mountpoint);
	return se;
}

/* An imgfs mount at dir in this namespace's mount table (a live one, or one
 * whose daemon died). */
static bool imgfs_mounted_at(const char *dir)
{
	char line[4096], mpoint[4096];
	bool found = false;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = sscanf(line, "%*s %*s %*s %*s %4095s", mpoint) == 1 &&
			!strcmp(mpoint, dir) && strstr(line, " - fuse.imgfs ");
	fclose(f);
	return found;
}

static int dead_mount_error(const char *dir, struct imgfs_error *err)
{
	return imgfs_error_set(err, ENOTCONN, "a dead imgfs mount is at %s: run umount -l %s", dir,
			       dir);
}

/*
 * The mount point, checked before anything is mounted: a directory, not a
 * dead FUSE mount (its daemon killed: stat gives ENOTCONN or ECONNABORTED, and mounting over
 * it would stack a second mount on the corpse), and not hiding the store
 * (the daemon would wait on its own mount for ever). Both paths made
 * absolute: the daemon runs in / once detached.
 */
static int check_paths(const char *mountpoint, const char *store, char **mnt_abs, char **store_abs,
		       struct imgfs_error *err)
{
	struct statfs sf;
	struct stat st;
	size_t ml;

	/* statfs, not only stat: the kernel answers a stat of a dead mount's
	 * root from its attribute cache for a while, a statfs always asks */
	if (stat(mountpoint, &st) < 0 || statfs(mountpoint, &sf) < 0) {
		/* ENOTCONN; ECONNABORTED when the connection was aborted mid-request */
		if (errno == ENOTCONN || errno == ECONNABORTED)
			return dead_mount_error(mountpoint, err);
		return imgfs_error_errno(err, errno, "mount point %s", mountpoint);
	}
	if (!S_ISDIR(st.st_mode))
		return imgfs_error_set(err, ENOTDIR, "mount point %s: not a directory", mountpoint);
	*mnt_abs = realpath(mountpoint, NULL);
	if (!*mnt_abs)
		return imgfs_error_errno(err, errno, "mount point %s", mountpoint);
	*store_abs = realpath(store, NULL);
	if (!*store_abs && errno == ENOENT) { /* not created yet: where it would be */
		char cwd[PATH_MAX];
		if (store[0] != '/' && !getcwd(cwd, sizeof(cwd)))
			return imgfs_error_errno(err, errno, "store %s", store);
		*store_abs =
		    store[0] == '/' ? imgfs_xstrdup(store) : imgfs_xasprintf("%s/%s", cwd, store);
	}
	if (!*store_abs)
		return imgfs_error_errno(err, errno, "store %s", store);
	ml = strlen(*mnt_abs);
	if (!strcmp(*mnt_abs, "/") ||
	    (!strncmp(*store_abs, *mnt_abs, ml) && ((*store_abs)[ml] == '/' || !(*store_abs)[ml])))
		return imgfs_error_set(err, EINVAL,
				       "mount %s: the store %s is at or below the mount point, "
				       "which would hide it; mount elsewhere",
				       mountpoint, *store_abs);
	return 0;
}

int imgfs_fs_main(const struct imgfs_fs_opts *in_opts, struct imgfs_error *err)
{
	struct fs *fs;
	struct imgfs_fs_opts o = *in_opts;
	const struct imgfs_fs_opts *opts = &o;
	_cleanup_free_ char *mnt_abs = NULL;
	_cleanup_free_ char *store_abs = NULL;
	struct fuse_loop_config *cfg;
	struct imgfs_store *probe;
	int rc;

	if (check_paths(o.mountpoint, o.store_dir, &mnt_abs, &store_abs, err) < 0)
		return -1;
	/* open the store once here so its errors reach the terminal; LMDB must
	 * not cross the fork of daemonizing, so the daemon opens it again (by
	 * its absolute path: the daemon's working directory is /) */
	if (open_store(opts, store_abs, &probe, err) < 0)
		return -1;
	free(store_abs);
	store_abs = imgfs_xstrdup(imgfs_store_root(probe));
	imgfs_store_close(probe);
	o.mountpoint = mnt_abs;
	o.store_dir = store_abs;
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	fuse_set_log_func(fuse_log_to_imgfs);
	if (opts->debug)
		imgfs_log_set_level(IMGFS_LOG_DEBUG);
	fs->se = session_new(fs, opts, err);
	if (!fs->se) {
		free(fs);
		return -1;
	}
	if (fuse_set_signal_handlers(fs->se) != 0) {
		fuse_session_destroy(fs->se);
		free(fs);
		return imgfs_error_set(err, EIO, "mount %s: could not set signal handlers",
				       opts->mountpoint);
	}
	if (fuse_session_mount(fs->se, opts->mountpoint) != 0) {
		fuse_remove_signal_handlers(fs->se);
		fuse_session_destroy(fs->se);
		free(fs);
		if (imgfs_mounted_at(opts->mountpoint))
			return imgfs_error_set(err, EBUSY,
					       "mount %s: the FUSE mount failed; an imgfs mount "
					       "is already there (if its daemon is dead: run "
					       "umount -l %s)",
					       opts->mountpoint, opts->mountpoint);
		return imgfs_error_set(err, EIO, "mount %s: the FUSE mount failed (see above)",
				       opts->mountpoint);
	}
	if (!opts->foreground) {
		imgfs_log_use_syslog("imgfs");
		if (fuse_daemonize(0) != 0) {
			fuse_session_unmount(fs->se);
			return imgfs_error_set(err, EIO, "mount %s: could not daemonize",
					       opts->mountpoint);
		}
	}
	if (fs_init(fs, opts, err) < 0) {
		imgfs_err("mount %s: %s", opts->mountpoint, err->msg);
		fuse_session_unmount(fs->se);
		return -1;
	}
	find_read_ahead(fs, opts->mountpoint);
	imgfs_info("imgfs: serving store %s at %s", fs->root, opts->mountpoint);
	if (!opts->no_uring)
		fs_uring_setup(fs, opts->mountpoint);
	if (!fs->uring)
		dev_io_setup(fs);
	cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	fuse_loop_cfg_set_max_threads(cfg, 64);
	fuse_loop_cfg_set_idle_threads(cfg, 8);
	rc = fuse_session_loop_mt(fs->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	__atomic_store_n(&fs->exiting, true, __ATOMIC_RELEASE);
	fs_pull_abandon(fs); /* while the rings still carry replies */
	fs_ra_stop(fs);	     /* its threads talk to the session */
	fuse_session_unmount(fs->se);
	fs_uring_stop(fs);
	fuse_remove_signal_handlers(fs->se);
	imgfs_info("imgfs: %s unmounted", opts->mountpoint);
	/* Pull workers may still be running on the store: then the process
	 * ends here, without tearing down what they use (partial downloads stay
	 * in ingest/ and resume on the next pull). The kernel drops the detached
	 * overlay mounts with the last fd either way. */
	pthread_mutex_lock(&fs->pull_lock);
	size_t busy = fs->pulls_running;
	pthread_mutex_unlock(&fs->pull_lock);
	if (busy) {
		imgfs_info("imgfs: exiting with %zu pulls in progress", busy);
		_exit(rc < 0 ? 1 : 0);
	}
	fuse_session_destroy(fs->se);
	imgfs_store_close(fs->store);
	fs_free(fs);
	return rc < 0 ? imgfs_error_set(err, -rc, "mount %s: %s", opts->mountpoint, strerror(-rc))
		      : 0;
}
