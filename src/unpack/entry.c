/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One tar entry -> the layer directory. The parent is resolved in-root for
 * every entry (never cached: a later entry may replace a directory with a
 * symlink, CVE-2025-47290), and the last component is created with *at()
 * calls that never follow it. Directory modes and times are applied after the
 * last entry (unpack_apply_dirfixes), re-resolved the same way.
 */
#include "unpack_i.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define ID_MAX 0xfffffffeLL /* (uid_t)-1 means "unchanged" to chown: refuse it too */

static int entry_err(struct imgfs_error *err, int code, struct unpack_entry *e, const char *what)
{
	return imgfs_error_set(err, code, "entry \"%s\": %s", e->name, what);
}

static int entry_errno(struct imgfs_error *err, int errnum, struct unpack_entry *e,
		       const char *what)
{
	if (errnum == ENAMETOOLONG)
		return imgfs_error_set(err, ENAMETOOLONG, "entry \"%s\": name too long", e->name);
	return imgfs_error_errno(err, errnum, "entry \"%s\": %s", e->name, what);
}

static int check_ids(struct unpack_entry *e, struct imgfs_error *err)
{
	int64_t uid = archive_entry_uid(e->ae), gid = archive_entry_gid(e->ae);

	if (uid < 0 || uid > ID_MAX || gid < 0 || gid > ID_MAX)
		return imgfs_error_set(
		    err, EIO, "entry \"%s\": invalid archive: uid/gid %lld/%lld out of range",
		    e->name, (long long)uid, (long long)gid);
	return 0;
}

/* Remove whatever is at base (recursively for a directory), never following. */
static int remove_existing(int pfd, const char *base)
{
	int r = imgfs_rm_rf_at(pfd, base);

	if (r < 0) {
		errno = -r;
		return -1;
	}
	return 0;
}

static int record_created(struct unpack_ctx *u, struct unpack_entry *e, struct imgfs_error *err)
{
	if (!unpack_set_add(&u->set, e->path, UNPACK_CREATED))
		return entry_err(err, ENOMEM, e, "out of memory");
	return 0;
}

/* Does an inode just made need a chown to get the entry's owner? (Root's
 * are 0:0 already; an unprivileged caller's never are, and the chown fails.) */
static bool needs_chown(struct unpack_ctx *u, struct archive_entry *ae)
{
	if (u->lossy)
		return false;
	return !u->is_root || archive_entry_uid(ae) != 0 || archive_entry_gid(ae) != 0;
}

static int chown_error(struct imgfs_error *err, int errnum, struct unpack_entry *e)
{
	if (errnum == EPERM)
		return imgfs_error_set(err, EPERM,
				       "entry \"%s\": setting its owner %lld:%lld was refused "
				       "(needs CAP_CHOWN: unprivileged unpack is not supported)",
				       e->name, (long long)archive_entry_uid(e->ae),
				       (long long)archive_entry_gid(e->ae));
	return entry_errno(err, errnum, e, "chown");
}

static int set_owner(struct unpack_ctx *u, struct unpack_entry *e, int fd, int pfd,
		     struct imgfs_error *err)
{
	uid_t uid = (uid_t)archive_entry_uid(e->ae);
	gid_t gid = (gid_t)archive_entry_gid(e->ae);
	int r;

	if (!needs_chown(u, e->ae))
		return 0;
	r = fd >= 0 ? fchown(fd, uid, gid) : fchownat(pfd, e->base, uid, gid, AT_SYMLINK_NOFOLLOW);
	if (r < 0)
		return chown_error(err, errno, e);
	return 0;
}

#define SPARSE_BLOCK 4096

static bool all_zero(const unsigned char *p, size_t n)
{
	static const unsigned char zero[SPARSE_BLOCK];

	return n <= sizeof(zero) && !memcmp(p, zero, n);
}

/* pwrite all of buf at off, restarting on EINTR and short writes. */
static int pwrite_all(int fd, const unsigned char *buf, size_t len, off_t off)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = pwrite(fd, buf + done, len - done, off + (off_t)done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += (size_t)n;
	}
	return 0;
}

/*
 * Write one data block at off, skipping every all-zero piece between
 * SPARSE_BLOCK-aligned offsets (the file is new, so what is not written reads
 * as zeros, and whole blocks of it take no space): a layer of zero runs does
 * not fill the disk. The diffID already hashed every byte of the stream.
 * *end is the end of the last byte written.
 */
static int write_sparse(int fd, const unsigned char *buf, size_t len, off_t off, off_t *end)
{
	size_t i = 0, run = 0; /* buf[run..i) is pending, non-zero */

	while (i < len) {
		size_t next = SPARSE_BLOCK - (size_t)((off + (off_t)i) % SPARSE_BLOCK);
		if (next > len - i)
			next = len - i;
		if (all_zero(buf + i, next)) {
			if (i > run && pwrite_all(fd, buf + run, i - run, off + (off_t)run) < 0)
				return -1;
			if (i > run)
				*end = off + (off_t)i;
			run = i + next;
		}
		i += next;
	}
	if (len > run) {
		if (pwrite_all(fd, buf + run, len - run, off + (off_t)run) < 0)
			return -1;
		*end = off + (off_t)len;
	}
	return 0;
}

static int write_data(struct unpack_ctx *u, struct unpack_entry *e, int fd, struct imgfs_error *err)
{
	int64_t size = archive_entry_size(e->ae);
	off_t end = 0;

	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int r = archive_read_data_block(u->b, &buf, &len, &off);

		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN) {
			if (u->stream_err.code)
				return imgfs_error_set(err, u->stream_err.code, "entry \"%s\": %s",
						       e->name, u->stream_err.msg);
			return imgfs_error_set(err, EIO, "entry \"%s\": invalid layer: %s", e->name,
					       archive_error_string(u->b));
		}
		if (write_sparse(fd, buf, len, (off_t)off, &end) < 0)
			return entry_errno(err, errno, e, "write");
	}
	if (size < 0)
		size = 0;
	/* the size, holes included (zero runs and sparse entries end in one) */
	if (end != (off_t)size && ftruncate(fd, size) < 0)
		return entry_errno(err, errno, e, "truncate");
	u->res->disk_bytes += (uint64_t)size;
	return 0;
}

static int make_file(struct unpack_ctx *u, struct unpack_entry *e, int pfd, struct imgfs_error *err)
{
	mode_t mode = archive_entry_perm(e->ae) & 07777;
	struct timespec ts[2];
	_cleanup_close_ int fd = -1;

	for (int tries = 0;; tries++) {
		fd = openat(pfd, e->base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			    mode & 0777);
		if (fd >= 0 || errno != EEXIST || tries)
			break;
		if (remove_existing(pfd, e->base) < 0)
			return entry_errno(err, errno, e, "replace existing");
	}
	if (fd < 0)
		return entry_errno(err, errno, e, "create");
	if (write_data(u, e, fd, err) < 0)
		return -1;
	if (set_owner(u, e, fd, pfd, err) < 0 ||
	    unpack_apply_xattrs(u, e, fd, pfd, e->base, err) < 0)
		return -1;
	/* after chown (which clears setuid) and after writing */
	if (mode != ((mode & 0777) & ~u->umask) && fchmod(fd, mode) < 0)
		return entry_errno(err, errno, e, "chmod");
	unpack_entry_times(e->ae, ts);
	if (futimens(fd, ts) < 0)
		return entry_errno(err, errno, e, "set times");
	return record_created(u, e, err);
}

static int add_dirfix(struct unpack_ctx *u, struct unpack_entry *e, struct imgfs_error *err)
{
	struct unpack_set_ent *se = unpack_set_add(&u->set, e->path, UNPACK_CREATED);
	struct unpack_dirfix *d;

	if (!se)
		return entry_err(err, ENOMEM, e, "out of memory");
	se->flags &= ~UNPACK_IMPLIED; /* explicit now: its own attributes win */
	if (se->dirfix) {
		d = &u->dirs[se->dirfix - 1]; /* duplicate entry: the last one wins */
	} else {
		if (u->n_dirs == u->cap_dirs) {
			size_t ncap = u->cap_dirs ? u->cap_dirs * 2 : 256;
			void *n = realloc(u->dirs, ncap * sizeof(*u->dirs));
			if (!n)
				return entry_err(err, ENOMEM, e, "out of memory");
			u->dirs = n;
			u->cap_dirs = ncap;
		}
		d = &u->dirs[u->n_dirs++];
		d->path = se->key;
		se->dirfix = (uint32_t)u->n_dirs;
	}
	d->mode = archive_entry_perm(e->ae) & 07777;
	unpack_entry_times(e->ae, d->ts);
	return 0;
}

static int make_dir(struct unpack_ctx *u, struct unpack_entry *e, int pfd, struct imgfs_error *err)
{
	if (mkdirat(pfd, e->base, 0700) < 0) {
		struct stat st;

		if (errno != EEXIST)
			return entry_errno(err, errno, e, "mkdir");
		if (fstatat(pfd, e->base, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return entry_errno(err, errno, e, "stat existing");
		if (!S_ISDIR(st.st_mode)) {
			if (remove_existing(pfd, e->base) < 0)
				return entry_errno(err, errno, e, "replace existing");
			if (mkdirat(pfd, e->base, 0700) < 0)
				return entry_errno(err, errno, e, "mkdir");
		}
	}
	if (set_owner(u, e, -1, pfd, err) < 0)
		return -1;
	if (archive_entry_xattr_count(e->ae)) {
		_cleanup_close_ int fd =
		    openat(pfd, e->base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return entry_errno(err, errno, e, "open directory");
		if (unpack_apply_xattrs(u, e, fd, pfd, e->base, err) < 0)
			return -1;
	}
	return add_dirfix(u, e, err);
}

/* Create a non-regular, non-directory inode with fn, replacing what is there. */
static int create_replacing(struct unpack_entry *e, int pfd, const char *target, mode_t type,
			    dev_t dev, struct imgfs_error *err)
{
	for (int tries = 0;; tries++) {
		int r = target ? symlinkat(target, pfd, e->base) : mknodat(pfd, e->base, type, dev);
		if (r == 0)
			return 0;
		if (errno == EPERM && !target)
			return imgfs_error_set(err, EPERM,
					       "entry \"%s\": creating the device node was refused "
					       "(needs CAP_MKNOD)",
					       e->name);
		if (errno != EEXIST || tries)
			return entry_errno(err, errno, e, target ? "symlink" : "mknod");
		if (remove_existing(pfd, e->base) < 0)
			return entry_errno(err, errno, e, "replace existing");
	}
}

static int finish_special(struct unpack_ctx *u, struct unpack_entry *e, int pfd, bool symlink,
			  struct imgfs_error *err)
{
	struct timespec ts[2];

	if (set_owner(u, e, -1, pfd, err) < 0 ||
	    unpack_apply_xattrs(u, e, -1, pfd, e->base, err) < 0)
		return -1;
	if (!symlink &&
	    fchmodat(pfd, e->base, archive_entry_perm(e->ae) & 07777, AT_SYMLINK_NOFOLLOW) < 0)
		return entry_errno(err, errno, e, "chmod");
	unpack_entry_times(e->ae, ts);
	if (utimensat(pfd, e->base, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return entry_errno(err, errno, e, "set times");
	return record_created(u, e, err);
}

static int make_hardlink(struct unpack_ctx *u, struct unpack_entry *e, const char *link, int pfd,
			 struct imgfs_error *err)
{
	struct unpack_entry t = {.ae = e->ae, .name = e->name};
	_cleanup_free_ char *tpath = unpack_clean_path(link);
	int tfd, r = 0;

	if (!tpath)
		return entry_err(err, ENOMEM, e, "out of memory");
	if (!*tpath)
		return entry_err(err, EIO, e, "invalid archive: hardlink to the root directory");
	char *slash = strrchr(tpath, '/');
	t.path = tpath;
	t.parent = slash ? strndup(tpath, (size_t)(slash - tpath)) : strdup("");
	t.base = slash ? slash + 1 : tpath;
	if (!t.parent)
		return entry_err(err, ENOMEM, e, "out of memory");
	size_t tdepth;
	struct imgfs_error terr = {0};
	tfd = unpack_resolve_dir(u, t.parent, UNPACK_WALK_EXISTING, e->name, &tdepth, &terr);
	if (tfd < 0) {
		r = imgfs_error_set(err, terr.code, "hardlink target \"%s\": %s", link, terr.msg);
		goto out;
	}
	for (int tries = 0;; tries++) {
		struct stat a, b;

		if (linkat(tfd, t.base, pfd, e->base, 0) == 0)
			break;
		if (errno == EPERM) {
			r = fstatat(tfd, t.base, &a, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(a.st_mode)
				? imgfs_error_set(
				      err, EPERM,
				      "entry \"%s\": hardlink to directory \"%s\" refused", e->name,
				      link)
				: imgfs_error_errno(err, EPERM, "entry \"%s\": hardlink to \"%s\"",
						    e->name, link);
			goto out;
		}
		if (errno != EEXIST || tries) {
			r = imgfs_error_errno(err, errno, "entry \"%s\": hardlink to \"%s\"",
					      e->name, link);
			goto out;
		}
		/* a link onto its own target is a no-op, not a deletion */
		if (fstatat(tfd, t.base, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
		    fstatat(pfd, e->base, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
		    a.st_ino == b.st_ino)
			break;
		if (remove_existing(pfd, e->base) < 0) {
			r = entry_errno(err, errno, e, "replace existing");
			goto out;
		}
	}
	r = record_created(u, e, err);
out:
	unpack_put_fd(u, tfd);
	free(t.parent);
	return r;
}

static bool is_dev_type(mode_t type)
{
	return type == AE_IFCHR || type == AE_IFBLK;
}

static int create_entry(struct unpack_ctx *u, struct unpack_entry *e, int pfd, mode_t type,
			struct imgfs_error *err)
{
	const char *link = archive_entry_hardlink(e->ae);

	if (link)
		return make_hardlink(u, e, link, pfd, err);
	switch (type) {
	case AE_IFREG:
		return make_file(u, e, pfd, err);
	case AE_IFDIR:
		return make_dir(u, e, pfd, err);
	case AE_IFLNK: {
		const char *target = archive_entry_symlink(e->ae);
		if (!target)
			return entry_err(err, EIO, e, "invalid archive: symlink without a target");
		if (create_replacing(e, pfd, target, 0, 0, err) < 0)
			return -1;
		return finish_special(u, e, pfd, true, err);
	}
	case AE_IFIFO:
	case AE_IFCHR:
	case AE_IFBLK: {
		dev_t dev = is_dev_type(type) ? makedev(archive_entry_rdevmajor(e->ae),
							archive_entry_rdevminor(e->ae))
					      : 0;
		if (create_replacing(e, pfd, NULL, type | 0600, dev, err) < 0)
			return -1;
		return finish_special(u, e, pfd, false, err);
	}
	}
	return 0;
}

/* ---- whiteouts ----------------------------------------------------------- */

static int whiteout(struct unpack_ctx *u, struct unpack_entry *e, struct imgfs_error *err)
{
	const char *wname = e->base + 4;
	_cleanup_free_ char *target = NULL;
	int pfd, r = 0;

	if (!strcmp(e->base, ".wh..wh..opq")) {
		char proc[64];
		/* the overlays imgfs mounts read trusted.*; user.* only for lossy tools */
		const char *xname = u->lossy ? "user.overlay.opaque" : "trusted.overlay.opaque";

		pfd = unpack_resolve_parent(u, e, true, err);
		if (pfd == -2)
			return 0;
		if (pfd < 0)
			return -1;
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
		if (setxattr(proc, xname, "y", 1, 0) < 0)
			r = imgfs_error_errno(err, errno, "entry \"%s\": set %s", e->name, xname);
		unpack_put_fd(u, pfd);
		return r;
	}
	if (!strncmp(e->base, ".wh..wh.", 8))
		return entry_err(err, EIO, e, "invalid archive: unsupported whiteout meta entry");
	if (!*wname || !strcmp(wname, ".") || !strcmp(wname, ".."))
		return entry_err(err, EIO, e, "invalid archive: invalid whiteout name");
	if (check_ids(e, err) < 0)
		return -1;
	target = unpack_join(e->parent, wname);
	if (!target)
		return entry_err(err, ENOMEM, e, "out of memory");
	if (unpack_set_get(&u->set, target)) {
		imgfs_debug("entry \"%s\": whiteout of a name of this layer ignored", e->name);
		return 0;
	}
	pfd = unpack_resolve_parent(u, e, true, err);
	if (pfd == -2)
		return 0; /* parent is a dangling symlink: nothing to hide */
	if (pfd < 0)
		return -1;
	if (remove_existing(pfd, wname) < 0) {
		r = entry_errno(err, errno, e, "remove whited-out path");
	} else if (mknodat(pfd, wname, S_IFCHR, makedev(0, 0)) < 0) {
		r = errno == EPERM ? imgfs_error_set(err, EPERM,
						     "entry \"%s\": creating an overlay whiteout "
						     "(0/0 char device) was refused",
						     e->name)
				   : entry_errno(err, errno, e, "create whiteout");
	} else if (needs_chown(u, e->ae) &&
		   fchownat(pfd, wname, (uid_t)archive_entry_uid(e->ae),
			    (gid_t)archive_entry_gid(e->ae), AT_SYMLINK_NOFOLLOW) < 0) {
		r = chown_error(err, errno, e);
	}
	unpack_put_fd(u, pfd);
	return r;
}

/* ---- dispatch ------------------------------------------------------------ */

static int apply(struct unpack_ctx *u, struct unpack_entry *e, struct imgfs_error *err)
{
	mode_t type = archive_entry_filetype(e->ae);
	int pfd, r;

	for (const char *c = e->path; c < e->base; c = strchr(c, '/') + 1)
		if (!strncmp(c, ".wh.", 4))
			return entry_err(err, EIO, e,
					 "invalid archive: whiteout prefix on a directory name");
	if (!strncmp(e->base, ".wh.", 4))
		return whiteout(u, e, err);
	if (!archive_entry_hardlink(e->ae)) {
		switch (type) {
		case AE_IFREG: {
			int tf = unpack_raw_typeflag(u);
			/* '0', '\0' (old), '7' contiguous, 'S' GNU sparse; -1: unknown, trust it */
			if (tf >= 0 && tf != '0' && tf != '\0' && tf != '7' && tf != 'S') {
				imgfs_warn("entry \"%s\": unknown entry type '%c' skipped", e->name,
					   tf > 32 && tf < 127 ? tf : '?');
				return 0;
			}
			break;
		}
		case AE_IFDIR:
		case AE_IFLNK:
		case AE_IFIFO:
			break;
		case AE_IFCHR:
		case AE_IFBLK:
			if (archive_entry_rdevmajor(e->ae) > 0xfff ||
			    archive_entry_rdevminor(e->ae) > 0xfffff)
				return entry_err(err, EIO, e,
						 "invalid archive: device number out of range");
			if (u->lossy) {
				imgfs_warn("entry \"%s\": device skipped (not running as root)",
					   e->name);
				return 0;
			}
			break;
		case AE_IFSOCK:
			imgfs_warn("entry \"%s\": socket skipped", e->name);
			return 0;
		default:
			imgfs_warn("entry \"%s\": unknown entry type skipped", e->name);
			return 0;
		}
		if (check_ids(e, err) < 0)
			return -1;
	}
	pfd = unpack_resolve_parent(u, e, false, err);
	if (pfd < 0)
		return -1;
	r = create_entry(u, e, pfd, type, err);
	unpack_put_fd(u, pfd);
	return r;
}

int unpack_entry(struct unpack_ctx *u, struct archive_entry *ae, struct imgfs_error *err)
{
	struct unpack_entry e = {.ae = ae, .name = archive_entry_pathname(ae)};
	char *slash;
	int r;

	if (!e.name)
		return imgfs_error_set(err, EIO, "invalid archive: entry without a readable name");
	e.path = unpack_clean_path(e.name);
	if (!e.path)
		return entry_err(err, ENOMEM, &e, "out of memory");
	if (!*e.path) {
		/* the root's own entry gives it its mode (as umoci and containerd);
		 * anything else naming the root is ignored */
		if (archive_entry_filetype(ae) == AE_IFDIR && !archive_entry_hardlink(ae))
			u->root_mode = (int)(archive_entry_perm(ae) & 07777);
		else
			imgfs_debug("entry \"%s\" ignored: resolves to the root", e.name);
		free(e.path);
		return 0;
	}
	slash = strrchr(e.path, '/');
	e.parent = slash ? strndup(e.path, (size_t)(slash - e.path)) : strdup("");
	e.base = slash ? slash + 1 : e.path;
	if (!e.parent) {
		free(e.path);
		return entry_err(err, ENOMEM, &e, "out of memory");
	}
	r = apply(u, &e, err);
	free(e.path);
	free(e.parent);
	return r;
}

/* Modes and times of directories, after every entry: re-resolved in-root,
 * never following the last component, skipped when it is no longer a
 * directory. Reverse order, so children are done before a parent's mode may
 * forbid reaching them. */
int unpack_apply_dirfixes(struct unpack_ctx *u, struct imgfs_error *err)
{
	for (size_t i = u->n_dirs; i-- > 0;) {
		struct unpack_dirfix *d = &u->dirs[i];
		char *slash = strrchr(d->path, '/');
		const char *base = slash ? slash + 1 : d->path;
		int pfd = u->root_fd, fd;

		if (slash) {
			struct imgfs_error derr = {0};
			size_t depth;
			*slash = '\0';
			pfd = unpack_resolve_dir(u, d->path, UNPACK_WALK_EXISTING, d->path, &depth,
						 &derr);
			*slash = '/';
			if (pfd < 0 && u->walk_steps > u->max_walk_steps)
				return imgfs_error_set(err, ELOOP, "%s", derr.msg);
			if (pfd < 0)
				continue;
		}
		fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		unpack_put_fd(u, pfd);
		if (fd < 0)
			continue;
		if (fchmod(fd, d->mode) < 0 || futimens(fd, d->ts) < 0) {
			int r = errno;
			close(fd);
			return imgfs_error_errno(err, r, "directory \"%s\": set mode and times",
						 d->path);
		}
		close(fd);
	}
	return 0;
}
