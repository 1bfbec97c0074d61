/* SPDX-License-Identifier: Apache-2.0 */
/* Private to ops.c and write.c: shared helpers and the write handlers. */
#ifndef IMGFS_FS_OPS_I_H
#define IMGFS_FS_OPS_I_H

#include "fs_i.h"

double fs_attr_timeout(const struct fs_inode *in);
int fs_do_getattr(struct fs *fs, struct fs_inode *in, uid_t uid, struct stat *st);
int fs_do_lookup_pass(struct fs *fs, struct fs_inode *parent, const char *name,
		      struct fuse_entry_param *e);
/* "/proc/self/fd/<fd>" for an inode's O_PATH fd. */
int fs_proc_path(const struct fs_inode *in, char *buf, size_t len);

/* caller.c: make one change in rootfs/ as the caller of req (its fsuid, fsgid,
 * supplementary groups and, with_umask, its umask); leave puts the daemon's
 * back and keeps errno. enter: 0 or -errno (nothing to leave then). A umask
 * that could not be taken is left in mask, for the caller to apply. */
struct fs_caller {
	bool ids_set, umask_set;
	mode_t old_umask;
	mode_t mask;
};
int fs_caller_enter(fuse_req_t req, bool with_umask, struct fs_caller *c);
void fs_caller_leave(struct fs_caller *c);

void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		   struct fuse_file_info *fi);
void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void fs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char *name);
void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		  const char *newname, unsigned int flags);
void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		  struct fuse_file_info *fi);
void fs_op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf, off_t off,
		     struct fuse_file_info *fi);
void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void fs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		    size_t size, int flags);
void fs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
void fs_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		     struct fuse_file_info *fi);

#endif
