/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Opening a store (directory layout, LMDB), the gc lock, and the flock and
 * file helpers the other store files share.
 */
#include "store_i.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* uppers/.empty: the lower of an overlay that needs one more (made here, so a
 * store on a read-only file system has it too) */
static const char *const store_dirs[] = {"blobs",  "blobs/sha256", "blobs/sha512",
					 "ingest", "snapshots",	   "locks",
					 "meta",   "uppers",	   "uppers/.empty"};

int store_lock_path(const char *path, int op, bool check_inode, struct imgfs_error *err)
{
	for (int attempt = 0; attempt < 100; attempt++) {
		_cleanup_close_ int fd =
		    open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		struct stat a, b;

		if (fd < 0)
			return imgfs_error_errno(err, errno, "open lock %s", path);
		while (flock(fd, op) < 0) {
			if (errno != EINTR)
				return imgfs_error_errno(err, errno, "lock %s", path);
		}
		if (!check_inode)
			return steal_fd(&fd);
		/* The holder before us may have removed the file (committed
		 * blob, gc): then our lock protects nothing; try again. */
		if (fstat(fd, &a) == 0 && a.st_nlink > 0 && stat(path, &b) == 0 &&
		    a.st_ino == b.st_ino && a.st_dev == b.st_dev)
			return steal_fd(&fd);
	}
	return imgfs_error_set(err, EAGAIN, "lock %s: the lock file keeps being replaced", path);
}

int store_fsync_dir(const char *path)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		return -errno;
	return 0;
}

struct du_state {
	uint64_t bytes;
	size_t n, cap;
	ino_t *seen; /* inodes with nlink > 1 already counted */
};

static bool du_seen(struct du_state *st, ino_t ino)
{
	for (size_t i = 0; i < st->n; i++)
		if (st->seen[i] == ino)
			return true;
	if (st->n == st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 64;
		ino_t *p = realloc(st->seen, cap * sizeof(*p));
		if (!p)
			return false; /* count it again rather than fail */
		st->seen = p;
		st->cap = cap;
	}
	st->seen[st->n++] = ino;
	return false;
}

static void du_walk(int dirfd, const char *name, struct du_state *st, int depth)
{
	struct stat sb;
	struct dirent *de;
	DIR *d;
	int fd;

	if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	if (!S_ISDIR(sb.st_mode) && sb.st_nlink > 1 && du_seen(st, sb.st_ino))
		return;
	st->bytes += (uint64_t)sb.st_blocks * 512;
	if (!S_ISDIR(sb.st_mode) || depth > 4096)
		return;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			du_walk(fd, de->d_name, st, depth + 1);
	closedir(d);
}

uint64_t store_du_at(int dirfd, const char *name)
{
	struct du_state st = {0};
	du_walk(dirfd, name, &st, 0);
	free(st.seen);
	return st.bytes;
}

/* ---- open / close ------------------------------------------------------- */

/* The store's root is 0700 (as containerd's /var/lib/containerd): layer
 * blobs and unpacked layers hold files their images give to root only
 * (etc/shadow), and uppers/ holds world-writable dirs of live rootfs/
 * trees. Nothing under it is for other users; the mount decides what they
 * see (docs/security.md). Created 0700 whatever the umask; an existing root
 * more open than that is tightened, and said so once. */
static int secure_root(const char *root, bool may_fix, struct imgfs_error *err)
{
	_cleanup_close_ int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		return imgfs_error_errno(err, errno, "store %s", root);
	if (!(st.st_mode & 077))
		return 0;
	if (may_fix && fchmod(fd, st.st_mode & 07700) == 0) {
		imgfs_warn("store %s: mode was %04o, now %04o: the store is for its owner only",
			   root, (unsigned)(st.st_mode & 07777), (unsigned)(st.st_mode & 07700));
		return 0;
	}
	imgfs_warn("store %s: mode %04o lets other users read it (should be 0700): %s", root,
		   (unsigned)(st.st_mode & 07777), may_fix ? strerror(errno) : "read-only");
	return 0;
}

/* An existing directory that is not a store (no blobs/ or meta/) and not
 * empty: --store /tmp or $HOME by mistake, which the store's 0700 (and its
 * layout) must not be applied to. */
static bool foreign_dir(const char *root)
{
	DIR *d = opendir(root);
	struct dirent *de;
	bool store = false, other = false;

	if (!d)
		return false; /* the next steps say why */
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (!strcmp(de->d_name, "blobs") || !strcmp(de->d_name, "meta"))
			store = true;
		else
			other = true;
	}
	closedir(d);
	return other && !store;
}

static int make_layout(const char *root, struct imgfs_error *err)
{
	struct stat st;
	_cleanup_free_ char *parent = imgfs_xstrdup(root);
	char *slash = strrchr(parent, '/');

	/* parents as mkdir -p makes them; the root itself 0700 */
	while (slash && slash > parent && slash[1] == '\0') {
		*slash = '\0';
		slash = strrchr(parent, '/');
	}
	if (slash && slash > parent) {
		*slash = '\0';
		if (imgfs_mkdir_p(parent, 0755, err) < 0)
			return imgfs_error_wrap(err, "create store");
	}
	if (mkdir(root, 0700) < 0) {
		if (errno != EEXIST)
			return imgfs_error_errno(err, errno, "create store %s", root);
		if (foreign_dir(root))
			return imgfs_error_set(
			    err, EEXIST,
			    "store %s: a directory that is neither empty nor an "
			    "imgfs store (a mistyped --store?); not made into one",
			    root);
	}
	if (secure_root(root, true, err) < 0)
		return -1;
	for (size_t i = 0; i < sizeof(store_dirs) / sizeof(store_dirs[0]); i++) {
		_cleanup_free_ char *p = imgfs_xasprintf("%s/%s", root, store_dirs[i]);
		mode_t mode = !strcmp(store_dirs[i], "meta") || !strcmp(store_dirs[i], "locks") ||
				      !strcmp(store_dirs[i], "uppers")
				  ? 0700
				  : 0755;
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return imgfs_error_errno(err, errno, "create store directory %s", p);
		if (lstat(p, &st) < 0)
			return imgfs_error_errno(err, errno, "store directory %s", p);
		if (!S_ISDIR(st.st_mode))
			return imgfs_error_set(err, ENOTDIR, "store %s: %s is not a directory",
					       root, p);
	}
	return 0;
}

/* A store that must already exist (commands that only read, rm, gc): never
 * create one at a mistyped path. */
static int check_existing(const char *root, struct imgfs_error *err)
{
	_cleanup_free_ char *data = imgfs_xasprintf("%s/meta/data.mdb", root);
	struct stat st;

	if (stat(root, &st) < 0) {
		if (errno == ENOENT)
			return imgfs_error_set(err, ENOENT,
					       "store %s does not exist (--store, $IMGFS_STORE; "
					       "`imgfs pull` creates it)",
					       root);
		return imgfs_error_errno(err, errno, "store %s", root);
	}
	if (!S_ISDIR(st.st_mode))
		return imgfs_error_set(err, ENOTDIR, "store %s: not a directory", root);
	if (stat(data, &st) < 0) {
		if (errno == ENOENT)
			return imgfs_error_set(err, ENOENT,
					       "%s is not an imgfs store (no meta/data.mdb)", root);
		return imgfs_error_errno(err, errno, "store %s", root);
	}
	return 0;
}

int imgfs_store_open_how(const char *root, enum imgfs_store_how how, struct imgfs_store **out,
			 struct imgfs_error *err)
{
	struct imgfs_store *s;
	_cleanup_free_ char *gc_path = NULL;
	bool rdonly = how == IMGFS_STORE_READ;

	if (!root || !*root)
		return imgfs_error_set(err, EINVAL, "store: empty path");
	if (how != IMGFS_STORE_CREATE && check_existing(root, err) < 0)
		return -1;
	if (rdonly ? secure_root(root, access(root, W_OK) == 0, err) < 0
		   : make_layout(root, err) < 0)
		return -1;
	s = imgfs_xmalloc(sizeof(*s));
	s->read_only = rdonly;
	s->root = realpath(root, NULL);
	if (!s->root) {
		free(s);
		return imgfs_error_errno(err, errno, "store %s", root);
	}
	s->gc_fd = -1;
	pthread_rwlock_init(&s->gc_rw, NULL);
	pthread_mutex_init(&s->gc_mu, NULL);
	pthread_mutex_init(&s->tmp_mu, NULL);
	gc_path = imgfs_xasprintf("%s/locks/gc.lock", s->root);
	s->gc_fd = rdonly ? open(gc_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
			  : open(gc_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (s->gc_fd < 0 && !(rdonly && errno == ENOENT)) {
		imgfs_error_errno(err, errno, "store %s: open %s", s->root, gc_path);
		imgfs_store_close(s);
		return -1;
	}
	if (store_meta_open(s, err) < 0) {
		imgfs_store_close(s);
		return -1;
	}
	*out = s;
	return 0;
}

int imgfs_store_open(const char *root, struct imgfs_store **out, struct imgfs_error *err)
{
	return imgfs_store_open_how(root, IMGFS_STORE_CREATE, out, err);
}

bool imgfs_store_is_read_only(const struct imgfs_store *s)
{
	return s->read_only;
}

void imgfs_store_close(struct imgfs_store *s)
{
	if (!s)
		return;
	store_meta_close(s);
	store_tmps_free(s);
	if (s->gc_fd >= 0)
		close(s->gc_fd);
	pthread_rwlock_destroy(&s->gc_rw);
	pthread_mutex_destroy(&s->gc_mu);
	pthread_mutex_destroy(&s->tmp_mu);
	free(s->root);
	free(s);
}

const char *imgfs_store_root(const struct imgfs_store *s)
{
	return s->root;
}

/* ---- gc.lock ------------------------------------------------------------ */

static int flock_retry(int fd, int op)
{
	while (flock(fd, op) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

int imgfs_store_lock_shared(struct imgfs_store *s, struct imgfs_error *err)
{
	int r = 0;

	pthread_rwlock_rdlock(&s->gc_rw);
	pthread_mutex_lock(&s->gc_mu);
	if (s->gc_shared == 0)
		r = flock_retry(s->gc_fd, LOCK_SH);
	if (r == 0)
		s->gc_shared++;
	pthread_mutex_unlock(&s->gc_mu);
	if (r < 0) {
		pthread_rwlock_unlock(&s->gc_rw);
		return imgfs_error_errno(err, -r, "store %s: shared lock on gc.lock", s->root);
	}
	return 0;
}

int imgfs_store_lock_exclusive(struct imgfs_store *s, struct imgfs_error *err)
{
	int r;

	pthread_rwlock_wrlock(&s->gc_rw);
	pthread_mutex_lock(&s->gc_mu);
	r = flock_retry(s->gc_fd, LOCK_EX);
	if (r == 0)
		s->gc_excl = true;
	pthread_mutex_unlock(&s->gc_mu);
	if (r < 0) {
		pthread_rwlock_unlock(&s->gc_rw);
		return imgfs_error_errno(err, -r, "store %s: exclusive lock on gc.lock", s->root);
	}
	return 0;
}

void imgfs_store_unlock(struct imgfs_store *s)
{
	pthread_mutex_lock(&s->gc_mu);
	if (s->gc_excl) {
		s->gc_excl = false;
		flock(s->gc_fd, LOCK_UN);
	} else if (s->gc_shared > 0 && --s->gc_shared == 0) {
		flock(s->gc_fd, LOCK_UN);
	}
	pthread_mutex_unlock(&s->gc_mu);
	pthread_rwlock_unlock(&s->gc_rw);
}
