// SPDX-License-Identifier: Apache-2.0
/*
 * FUSE operations that change things. Only rootfs/ of a read-write mount is
 * writable; everything else answers EROFS. Each change is made fd-relative on
 * the image's overlay mount (through the inodes' pinned fds, fdcache.c), so
 * kernel overlayfs does copy-up and whiteouts; renames and unlinks also move
 * the names inodes are opened again by (fs_inode_moved, fs_inode_unnamed).
 * Creations and xattr changes (ACLs) are made as the caller (caller.c), so the
 * overlay gives them the owner, group, mode and ACL a kernel overlay mount
 * would; the kernel itself checks permissions and ACLs (FUSE_CAP_POSIX_ACL).
 */
#include "ops_i.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

/* The inode if it may be written, its fd pinned in *pin, else NULL with *err set. */
static struct fs_inode *writable(fuse_req_t req, fuse_ino_t ino, struct fs_pin *pin, int *err)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);
	int rc;

	if (in->kind != FS_PASS || !in->view->writable) {
		*err = EROFS;
		return NULL;
	}
	rc = fs_pin_get(fs, in, pin);
	if (rc < 0) {
		*err = -rc;
		return NULL;
	}
	return in;
}

static void reply_entry_of(fuse_req_t req, struct fs_inode *parent, const char *name)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fuse_entry_param e = {0};
	int rc = fs_do_lookup_pass(fs, parent, name, &e);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

static void make_node(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev,
		      const char *link)
{
	_cleanup_pin_ struct fs_pin pin = {0};
	struct fs_caller c;
	struct fs_inode *p;
	int err = 0, rc;

	p = writable(req, parent, &pin, &err);
	if (p)
		err = -fs_caller_enter(req, !link, &c);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	if (link)
		rc = symlinkat(link, p->fd, name);
	else if (S_ISDIR(mode))
		rc = mkdirat(p->fd, name, mode & 07777 & ~c.mask);
	else
		rc = mknodat(p->fd, name, mode & ~c.mask, rdev);
	fs_caller_leave(&c);
	if (rc < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	reply_entry_of(req, p, name);
}

void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	make_node(req, parent, name, mode, rdev, NULL);
}

void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	make_node(req, parent, name, S_IFDIR | mode, 0, NULL);
}

void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	make_node(req, parent, name, S_IFLNK | 0777, 0, link);
}

void fs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino), *p;
	_cleanup_pin_ struct fs_pin pin = {0}, ipin = {0};
	int err = 0, rc;

	p = writable(req, parent, &pin, &err);
	if (p && (in->kind != FS_PASS || in->view != p->view))
		err = EXDEV;
	if (!err && (rc = fs_pin_get(fs, in, &ipin)) < 0)
		err = -rc;
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	if (linkat(in->fd, "", p->fd, name, AT_EMPTY_PATH) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	reply_entry_of(req, p, name);
}

static void remove_entry(fuse_req_t req, fuse_ino_t parent, const char *name, int flags)
{
	struct fs *fs = fuse_req_userdata(req);
	_cleanup_pin_ struct fs_pin pin = {0};
	struct fs_pin vpin = {0};
	struct fs_inode *p, *victim;
	int err = 0;

	p = writable(req, parent, &pin, &err);
	if (!p) {
		fuse_reply_err(req, err);
		return;
	}
	victim = fs_inode_at(fs, &pin, name, &vpin);
	if (unlinkat(p->fd, name, flags) < 0)
		err = errno;
	else if (victim)
		fs_inode_unnamed(fs, victim, p, name);
	fs_inode_put(fs, victim, &vpin);
	fuse_reply_err(req, err);
}

void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_entry(req, parent, name, 0);
}

void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_entry(req, parent, name, AT_REMOVEDIR);
}

void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		  const char *newname, unsigned int flags)
{
	struct fs *fs = fuse_req_userdata(req);
	_cleanup_pin_ struct fs_pin pin = {0}, npin = {0};
	struct fs_pin spin = {0}, dpin = {0};
	struct fs_inode *p, *np = NULL, *src, *dst;
	int err = 0;

	p = writable(req, parent, &pin, &err);
	if (p)
		np = writable(req, newparent, &npin, &err);
	if (p && np && p->view->b != np->view->b)
		err = EXDEV;
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	/* the inodes whose names this moves or removes, open while they lead there */
	src = fs_inode_at(fs, &pin, name, &spin);
	dst = fs_inode_at(fs, &npin, newname, &dpin);
	if (renameat2(p->fd, name, np->fd, newname, flags) < 0) {
		err = errno;
	} else if (src != dst || !src) {
		if (src)
			fs_inode_moved(fs, src, p, name, np, newname);
		if (dst && (flags & RENAME_EXCHANGE))
			fs_inode_moved(fs, dst, np, newname, p, name);
		else if (dst)
			fs_inode_unnamed(fs, dst, np, newname);
	}
	fs_inode_put(fs, src, &spin);
	fs_inode_put(fs, dst, &dpin);
	fuse_reply_err(req, err);
}

void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		  struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fuse_entry_param e = {0};
	_cleanup_pin_ struct fs_pin pin = {0};
	struct fs_caller c;
	struct fs_inode *p;
	int err = 0, fd, rc;

	p = writable(req, parent, &pin, &err);
	if (p)
		err = -fs_caller_enter(req, true, &c);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	/* CREATE comes for a name the kernel found missing (it holds the
	 * directory's lock): make a new file or fail, never open what is there */
	fd = openat(p->fd, name, fi->flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		    mode & ~c.mask);
	fs_caller_leave(&c);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	rc = fs_do_lookup_pass(fs, p, name, &e);
	if (rc < 0) {
		close(fd);
		fuse_reply_err(req, -rc);
		return;
	}
	if (fs->no_open) {
		/* like every other file: no handle, each request opens its own */
		close(fd);
		fd = -1;
		fi->fh = 0;
	} else {
		fi->fh = (uint64_t)fd;
	}
	fi->keep_cache = 1;
	if (fuse_reply_create(req, &e, fi) == -ENOENT && fd >= 0)
		close(fd);
}

void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		   struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	_cleanup_pin_ struct fs_pin pin = {0};
	struct fs_inode *in;
	struct stat st;
	char path[64];
	int err = 0, rc;

	in = writable(req, ino, &pin, &err);
	if (!in) {
		fuse_reply_err(req, err);
		return;
	}
	if (fi && !fi->fh)
		fi = NULL; /* opened without us */
	fs_proc_path(in, path, sizeof(path));
	if (to_set & FUSE_SET_ATTR_MODE) {
		rc = fi ? fchmod((int)fi->fh, attr->st_mode & 07777)
			: chmod(path, attr->st_mode & 07777);
		if (rc < 0)
			goto fail;
	}
	if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;
		if (fchownat(in->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			goto fail;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		rc = fi ? ftruncate((int)fi->fh, attr->st_size) : truncate(path, attr->st_size);
		if (rc < 0)
			goto fail;
	}
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec tv[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};
		if (to_set & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		if (fi)
			rc = futimens((int)fi->fh, tv);
		else if (in->type == S_IFLNK)
			rc = utimensat(in->fd, "", tv, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
		else
			rc = utimensat(AT_FDCWD, path, tv, 0);
		if (rc < 0)
			goto fail;
	}
	rc = fs_do_getattr(fs, in, fs_virt_uid(req, in), &st);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fuse_reply_attr(req, &st, fs_attr_timeout(in));
	return;
fail:
	fuse_reply_err(req, errno);
}

/* The file handle, or (opened without us) a new fd for this request in *tmp.
 * in pinned. */
static int handle_fd(struct fs_inode *in, struct fuse_file_info *fi, int flags, int *tmp)
{
	char path[64];

	if (fi && fi->fh)
		return (int)fi->fh;
	fs_proc_path(in, path, sizeof(path));
	*tmp = open(path, flags | O_CLOEXEC);
	return *tmp < 0 ? -errno : *tmp;
}

void fs_op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf, off_t off,
		     struct fuse_file_info *fi)
{
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in_buf));
	_cleanup_pin_ struct fs_pin pin = {0};
	_cleanup_close_ int tmp = -1;
	struct fs_inode *in;
	ssize_t n;
	int err = 0, fd;

	in = writable(req, ino, &pin, &err);
	if (!in) {
		fuse_reply_err(req, err);
		return;
	}
	fd = handle_fd(in, fi, O_WRONLY, &tmp);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = fd;
	out.buf[0].pos = off;
	n = fuse_buf_copy(&out, in_buf, 0);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/* Nothing to do at close(2): data goes straight to the backing file
	 * and each handle is closed at release. ENOSYS makes the kernel stop
	 * sending FLUSH at every close for good. */
	fuse_reply_err(req, ENOSYS);
}

void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);
	_cleanup_pin_ struct fs_pin pin = {0};
	_cleanup_close_ int tmp = -1;
	int fd, rc = 0;

	if (in->kind == FS_PASS) {
		fd = fi && fi->fh ? (int)fi->fh : fs_pin_get(fs, in, &pin);
		if (fd >= 0)
			fd = handle_fd(in, fi, O_RDONLY, &tmp);
		if (fd < 0) {
			fuse_reply_err(req, -fd);
			return;
		}
		rc = datasync ? fdatasync(fd) : fsync(fd);
	}
	fuse_reply_err(req, rc < 0 ? errno : 0);
}

void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);
	_cleanup_pin_ struct fs_pin pin = {0};
	int fd, err = 0;

	if (in->kind == FS_PASS) {
		err = -fs_pin_get(fs, in, &pin);
		fd = err ? -1 : openat(pin.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (!err && (fd < 0 || (datasync ? fdatasync(fd) : fsync(fd)) < 0))
			err = errno;
		if (fd >= 0)
			close(fd);
	}
	fuse_reply_err(req, err);
}

void fs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		    size_t size, int flags)
{
	_cleanup_pin_ struct fs_pin pin = {0};
	struct fs_caller c;
	struct fs_inode *in;
	char path[64];
	int err = 0;

	in = writable(req, ino, &pin, &err);
	if (in)
		err = -fs_caller_enter(req, false, &c);
	if (!err) {
		fs_proc_path(in, path, sizeof(path));
		if (setxattr(path, name, value, size, flags) < 0)
			err = errno;
		fs_caller_leave(&c);
	}
	fuse_reply_err(req, err);
}

void fs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	_cleanup_pin_ struct fs_pin pin = {0};
	struct fs_caller c;
	struct fs_inode *in;
	char path[64];
	int err = 0;

	in = writable(req, ino, &pin, &err);
	if (in)
		err = -fs_caller_enter(req, false, &c);
	if (!err) {
		fs_proc_path(in, path, sizeof(path));
		if (removexattr(path, name) < 0)
			err = errno;
		fs_caller_leave(&c);
	}
	fuse_reply_err(req, err);
}

void fs_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		     struct fuse_file_info *fi)
{
	_cleanup_pin_ struct fs_pin pin = {0};
	_cleanup_close_ int tmp = -1;
	struct fs_inode *in;
	int err = 0, fd;

	in = writable(req, ino, &pin, &err);
	if (in) {
		fd = handle_fd(in, fi, O_WRONLY, &tmp);
		if (fd < 0)
			err = -fd;
		else if (fallocate(fd, mode, offset, length) < 0)
			err = errno;
	}
	fuse_reply_err(req, err);
}
