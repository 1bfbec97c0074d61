/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kernel overlayfs over a chain of snapshot directories, with the new mount
 * API: one "lowerdir+" per layer (kernel >= 6.8), so long chains are not
 * limited by the page-sized option string; a classic "lowerdir=a:b:c" mount
 * string otherwise. Raw syscalls: glibc's <sys/mount.h> and <linux/mount.h>
 * do not mix.
 */
#include "unpack_i.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int sys_fsopen(const char *fs, unsigned int flags)
{
	return (int)syscall(SYS_fsopen, fs, flags);
}
static int sys_fsconfig(int fd, unsigned int cmd, const char *key, const void *val, int aux)
{
	return (int)syscall(SYS_fsconfig, fd, cmd, key, val, aux);
}
static int sys_fsmount(int fd, unsigned int flags, unsigned int attrs)
{
	return (int)syscall(SYS_fsmount, fd, flags, attrs);
}
static int sys_move_mount(int from, const char *fp, int to, const char *tp, unsigned int flags)
{
	return (int)syscall(SYS_move_mount, from, fp, to, tp, flags);
}

/* overlayfs needs two lowers without an upper: one layer is a read-only bind. */
static int bind_ro(const char *src, const char *target, struct imgfs_error *err)
{
	struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY};
	_cleanup_close_ int fd =
	    (int)syscall(SYS_open_tree, AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);

	if (fd < 0)
		return imgfs_error_errno(err, errno, "bind %s: open_tree", src);
	if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof(attr)) < 0)
		return imgfs_error_errno(err, errno, "bind %s: read-only", src);
	if (sys_move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return imgfs_error_errno(err, errno, "bind %s on %s", src, target);
	return 0;
}

/* The kernel's own explanation, queued on the fs context ("e overlay: ..."). */
static void fs_context_msg(int fd, char *buf, size_t len)
{
	ssize_t n;

	buf[0] = '\0';
	while ((n = read(fd, buf, len - 1)) > 0) {
		buf[n] = '\0';
		if (buf[0] == 'e')
			return;
	}
	buf[0] = '\0';
}

/* Append s to out, escaping ':' ',' '\\' when escape; false when it does not fit. */
static bool append(char *out, size_t cap, size_t *pos, const char *s, bool escape)
{
	for (; *s; s++) {
		if (escape && strchr(":,\\", *s)) {
			if (*pos + 1 >= cap)
				return false;
			out[(*pos)++] = '\\';
		}
		if (*pos + 1 >= cap)
			return false;
		out[(*pos)++] = *s;
	}
	out[*pos] = '\0';
	return true;
}

static int classic_mount(const char *const *lowers, const char *upper, const char *work,
			 const char *target, struct imgfs_error *err)
{
	size_t cap = (size_t)sysconf(_SC_PAGESIZE), pos = 0;
	_cleanup_free_ char *opts = malloc(cap);
	bool ok;

	if (!opts)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	ok = append(opts, cap, &pos, "lowerdir=", false);
	for (size_t i = 0; ok && lowers[i]; i++)
		ok = (!i || append(opts, cap, &pos, ":", false)) &&
		     append(opts, cap, &pos, lowers[i], true);
	if (ok && upper)
		ok = append(opts, cap, &pos, ",upperdir=", false) &&
		     append(opts, cap, &pos, upper, true) &&
		     append(opts, cap, &pos, ",workdir=", false) &&
		     append(opts, cap, &pos, work, true);
	if (!ok)
		return imgfs_error_set(err, E2BIG, "overlay on %s: options longer than a page",
				       target);
	if (syscall(SYS_mount, "overlay", target, "overlay", 0UL, opts) < 0)
		return imgfs_error_errno(err, errno, "mount overlay on %s", target);
	return 0;
}

int imgfs_overlay_mount(const char *const *lowers, const char *upper, const char *work,
			const char *target, struct imgfs_error *err)
{
	_cleanup_close_ int fs = -1, mnt = -1;
	char msg[512];

	if (!lowers || !lowers[0])
		return imgfs_error_set(err, EINVAL, "overlay on %s: no lower directory", target);
	if (!upper != !work)
		return imgfs_error_set(err, EINVAL, "overlay on %s: upper and work go together",
				       target);
	if (!upper && !lowers[1])
		return bind_ro(lowers[0], target, err);
	fs = sys_fsopen("overlay", FSOPEN_CLOEXEC);
	if (fs < 0) {
		if (errno == ENOSYS)
			return classic_mount(lowers, upper, work, target, err);
		return imgfs_error_errno(err, errno, "overlay on %s: fsopen", target);
	}
	for (size_t i = 0; lowers[i]; i++) {
		if (sys_fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir+", lowers[i], 0) == 0)
			continue;
		if (errno == EINVAL && i == 0)
			return classic_mount(lowers, upper, work, target, err);
		fs_context_msg(fs, msg, sizeof(msg));
		return imgfs_error_errno(err, errno, "overlay on %s: lower %s%s%s", target,
					 lowers[i], *msg ? ": " : "", msg);
	}
	if (upper && (sys_fsconfig(fs, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0 ||
		      sys_fsconfig(fs, FSCONFIG_SET_STRING, "workdir", work, 0) < 0)) {
		int r = errno;
		fs_context_msg(fs, msg, sizeof(msg));
		return imgfs_error_errno(err, r, "overlay on %s: upper %s%s%s", target, upper,
					 *msg ? ": " : "", msg);
	}
	if (sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		int r = errno;
		fs_context_msg(fs, msg, sizeof(msg));
		return imgfs_error_errno(err, r, "overlay on %s%s%s", target, *msg ? ": " : "",
					 msg);
	}
	mnt = sys_fsmount(fs, FSMOUNT_CLOEXEC, upper ? 0 : MOUNT_ATTR_RDONLY);
	if (mnt < 0)
		return imgfs_error_errno(err, errno, "overlay on %s: fsmount", target);
	if (sys_move_mount(mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return imgfs_error_errno(err, errno, "overlay on %s: move_mount", target);
	return 0;
}
