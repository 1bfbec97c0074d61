// SPDX-License-Identifier: Apache-2.0
/*
 * Detached kernel overlayfs mounts with the new mount API: fsopen("overlay"),
 * fsconfig, fsmount -> a mount fd that is never move_mount()ed anywhere. The
 * mount appears in no mount table, and goes away with the last fd that
 * refers into it (so with the daemon). Everything is served fd-relative.
 */
#include "fs_i.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>

/* The kernel's fs_context log ("e overlay: ...") explains a refusal. */
static void read_fc_log(int fsfd, char *buf, size_t len)
{
	char line[512];
	ssize_t n;

	buf[0] = '\0';
	while ((n = read(fsfd, line, sizeof(line) - 1)) > 0) {
		line[n] = '\0';
		if (buf[0])
			strncat(buf, "; ", len - strlen(buf) - 1);
		strncat(buf, line, len - strlen(buf) - 1);
	}
}

static int config_lowers(int fsfd, const char *const *lowers, size_t n, struct imgfs_error *err)
{
	size_t total = 1, i;
	char *joined;

	for (i = 0; i < n; i++) {
		if (fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir+", lowers[i], 0) < 0)
			break;
	}
	if (i == n)
		return 0;
	if (i > 0 || errno != EINVAL)
		return imgfs_error_errno(err, errno, "overlay: lowerdir+ %s", lowers[i]);
	/* Kernels before 6.8: one lowerdir string, top-most first. */
	for (i = 0; i < n; i++)
		total += strlen(lowers[i]) + 1;
	joined = calloc(1, total);
	if (!joined)
		return imgfs_error_set(err, ENOMEM, "overlay: out of memory");
	for (i = 0; i < n; i++) {
		if (i)
			strcat(joined, ":");
		strcat(joined, lowers[i]);
	}
	int rc = fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir", joined, 0);
	free(joined);
	if (rc < 0)
		return imgfs_error_errno(err, errno, "overlay: lowerdir of %zu layers", n);
	return 0;
}

int fs_overlay_detached(const char *const *lowers, size_t n, const char *upper, const char *work,
			bool rdonly, struct imgfs_error *err)
{
	_cleanup_close_ int fsfd = -1;
	char why[1024];
	int mfd;

	fsfd = fsopen("overlay", FSOPEN_CLOEXEC);
	if (fsfd < 0)
		return imgfs_error_errno(err, errno, "overlay: fsopen");
	if (config_lowers(fsfd, lowers, n, err) < 0)
		return -1;
	if (upper && (fsconfig(fsfd, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0 ||
		      fsconfig(fsfd, FSCONFIG_SET_STRING, "workdir", work, 0) < 0))
		return imgfs_error_errno(err, errno, "overlay: upperdir %s", upper);
	if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		int e = errno;
		read_fc_log(fsfd, why, sizeof(why));
		return imgfs_error_errno(err, e, "overlay of %zu layers%s%s", n, why[0] ? ": " : "",
					 why);
	}
	mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, rdonly ? MOUNT_ATTR_RDONLY : 0);
	if (mfd < 0)
		return imgfs_error_errno(err, errno, "overlay: fsmount");
	return mfd;
}
