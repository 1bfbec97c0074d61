/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metadata: entry xattrs (overlay ones dropped, so a layer cannot forge
 * opaque/redirect/metacopy markers), entry times, attributes of implied
 * directories copied from the lowers, chainIDs and small helpers.
 */
#include "unpack_i.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

static bool overlay_xattr(const char *name)
{
	return !strncmp(name, "trusted.overlay.", 16) || !strncmp(name, "user.overlay.", 13);
}

int unpack_apply_xattrs(struct unpack_ctx *u, struct unpack_entry *e, int fd, int dirfd,
			const char *base, struct imgfs_error *err)
{
	const char *name;
	const void *val;
	size_t size;
	bool regular = archive_entry_filetype(e->ae) == AE_IFREG;

	if (archive_entry_xattr_reset(e->ae) == 0)
		return 0;
	while (archive_entry_xattr_next(e->ae, &name, &val, &size) == ARCHIVE_OK) {
		int r;

		if (!name || !*name)
			continue;
		if (overlay_xattr(name)) {
			imgfs_debug("entry \"%s\": xattr %s dropped", e->name, name);
			continue;
		}
		if (fd >= 0) {
			r = fsetxattr(fd, name, val, size, 0);
		} else {
			char path[PATH_MAX];
			if (snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dirfd, base) >=
			    (int)sizeof(path))
				return imgfs_error_set(err, ENAMETOOLONG,
						       "entry \"%s\": name too long", e->name);
			r = lsetxattr(path, name, val, size, 0);
		}
		if (r == 0)
			continue;
		if ((errno == EPERM || errno == ENOTSUP) && !regular && !strncmp(name, "user.", 5))
			continue; /* user.* is not allowed on symlinks and devices */
		if (errno == EPERM && u->lossy) {
			imgfs_warn("entry \"%s\": xattr %s skipped (not running as root)", e->name,
				   name);
			continue;
		}
		return imgfs_error_errno(err, errno, "entry \"%s\": set xattr %s", e->name, name);
	}
	return 0;
}

void unpack_entry_times(struct archive_entry *ae, struct timespec ts[2])
{
	ts[1].tv_sec = archive_entry_mtime(ae);
	ts[1].tv_nsec = archive_entry_mtime_nsec(ae);
	if (ts[1].tv_nsec < 0 || ts[1].tv_nsec > 999999999)
		ts[1].tv_nsec = 0;
	if (archive_entry_atime_is_set(ae)) {
		ts[0].tv_sec = archive_entry_atime(ae);
		ts[0].tv_nsec = archive_entry_atime_nsec(ae);
		if (ts[0].tv_nsec < 0 || ts[0].tv_nsec > 999999999)
			ts[0].tv_nsec = 0;
	} else {
		ts[0] = ts[1];
	}
}

/* ---- implied directories ------------------------------------------------- */

static int copy_xattrs(int from, int to, const char *path, struct imgfs_error *err)
{
	char names[65536];
	ssize_t n = flistxattr(from, names, sizeof(names));

	if (n < 0)
		return errno == ENOTSUP ? 0
					: imgfs_error_errno(err, errno, "list xattrs of %s", path);
	for (char *name = names; name < names + n; name += strlen(name) + 1) {
		char val[65536];
		ssize_t vl;

		if (overlay_xattr(name))
			continue;
		vl = fgetxattr(from, name, val, sizeof(val));
		if (vl < 0)
			continue;
		if (fsetxattr(to, name, val, (size_t)vl, 0) < 0 && errno != EPERM)
			return imgfs_error_errno(err, errno, "directory \"%s\": set xattr %s", path,
						 name);
	}
	return 0;
}

/* Copy attributes of the same directory in the top-most lower that has path. */
static int fix_one(int root, const int *lfds, size_t nl, const char *path, struct imgfs_error *err)
{
	_cleanup_close_ int src = -1, dst = -1;
	struct stat st;

	for (size_t i = 0; i < nl && src < 0; i++) {
		src = unpack_openat2(lfds[i], path, O_RDONLY | O_DIRECTORY,
				     RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
		if (src < 0 && errno != ENOENT)
			return 0; /* there, but not a directory: the lower hides nothing */
	}
	if (src < 0)
		return 0;
	dst = unpack_openat2(root, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW,
			     RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
	if (dst < 0)
		return 0; /* replaced later in the layer */
	if (fstat(src, &st) < 0)
		return imgfs_error_errno(err, errno, "stat lower directory %s", path);
	if (geteuid() == 0 && fchown(dst, st.st_uid, st.st_gid) < 0)
		return imgfs_error_errno(err, errno, "directory \"%s\": chown", path);
	if (copy_xattrs(src, dst, path, err) < 0)
		return -1;
	if (fchmod(dst, st.st_mode & 07777) < 0)
		return imgfs_error_errno(err, errno, "directory \"%s\": chmod", path);
	if (futimens(dst, (struct timespec[2]){st.st_atim, st.st_mtim}) < 0)
		return imgfs_error_errno(err, errno, "directory \"%s\": set times", path);
	return 0;
}

int imgfs_unpack_fix_implied(const char *dest, char *const *implied_dirs, const char *const *lowers,
			     struct imgfs_error *err)
{
	_cleanup_close_ int root = -1;
	_cleanup_free_ int *lfds = NULL;
	size_t nl = 0;
	int r = 0;

	if (!implied_dirs || !implied_dirs[0] || !lowers || !lowers[0])
		return 0;
	root = open(dest, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return imgfs_error_errno(err, errno, "open %s", dest);
	while (lowers[nl])
		nl++;
	lfds = calloc(nl, sizeof(*lfds));
	if (!lfds)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < nl; i++) {
		lfds[i] = open(lowers[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (lfds[i] < 0) {
			r = imgfs_error_errno(err, errno, "open lower %s", lowers[i]);
			nl = i;
			goto out;
		}
	}
	for (size_t i = 0; implied_dirs[i] && r == 0; i++)
		r = fix_one(root, lfds, nl, implied_dirs[i], err);
out:
	for (size_t i = 0; i < nl; i++)
		close(lfds[i]);
	return r;
}

/* ---- small helpers ------------------------------------------------------- */

void imgfs_strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

void imgfs_unpack_result_destroy(struct imgfs_unpack_result *res)
{
	if (!res)
		return;
	imgfs_strv_free(res->implied_dirs);
	res->implied_dirs = NULL;
}

void imgfs_chain_id(const struct imgfs_digest *parent, const struct imgfs_digest *diff_id,
		    struct imgfs_digest *out)
{
	char buf[2 * IMGFS_DIGEST_MAX + 2];
	int n;

	if (!parent) {
		struct imgfs_digest d = *diff_id;

		d.hex = NULL;
		*out = d;
		out->hex = out->str + (diff_id->hex - diff_id->str);
		return;
	}
	n = snprintf(buf, sizeof(buf), "%s %s", parent->str, diff_id->str);
	imgfs_digest_buf(IMGFS_SHA256, buf, (size_t)n, out);
}
