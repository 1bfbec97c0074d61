// SPDX-License-Identifier: Apache-2.0
/*
 * Changes in rootfs/ made as the caller, so that the overlay underneath
 * gives them exactly the semantics a kernel overlay mount of the same layers
 * would: the new entry's owner and group (the group of a set-group-ID
 * directory included), default ACLs inherited instead of the umask, the
 * set-group-ID bit of a new file dropped for a caller outside the group, the
 * overlay's own permission checks, and the set-group-ID bit cleared when a
 * caller outside the group sets an ACL.
 *
 * The daemon runs as root. For the one system call that makes the change the
 * thread takes the caller's fsuid, fsgid and supplementary groups (setfsuid
 * and setfsgid are per thread; so is the raw setgroups system call, unlike
 * glibc's setgroups(), which changes every thread of the process) and, for
 * creations, the caller's umask: the kernel sends modes unmasked with the
 * umask beside them (FUSE_CAP_DONT_MASK, which FUSE_CAP_POSIX_ACL needs),
 * and the filesystem applies the umask only where the parent directory has
 * no default ACL. The umask lives in the fs_struct that threads share, so
 * the thread unshares it (CLONE_FS) before each change: free when it is
 * already its own; when a thread it started since shares it (a pull, a new
 * worker), that one keeps the old copy and never sees the caller's umask.
 * With an fsuid other than 0 the thread has none of root's file
 * capabilities (CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, ...); they come
 * back with fsuid 0 afterwards.
 */
#include "ops_i.h"

#include <limits.h>
#include <sched.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_once_t caller_once = PTHREAD_ONCE_INIT;
static bool daemon_root; /* it may take on other ids */
static uid_t daemon_uid;
static gid_t daemon_gid;
static gid_t *daemon_groups; /* its supplementary groups, put back after each change */
static int daemon_ngroups;

static void caller_init(void)
{
	int n;

	daemon_uid = geteuid();
	daemon_gid = getegid();
	daemon_root = daemon_uid == 0;
	n = getgroups(0, NULL);
	if (n > 0) {
		daemon_groups = calloc((size_t)n, sizeof(gid_t));
		if (daemon_groups)
			n = getgroups(n, daemon_groups);
	}
	daemon_ngroups = daemon_groups && n > 0 ? n : 0;
	if (!daemon_root)
		imgfs_warn("fs: not running as root: new files in rootfs/ belong to uid %u",
			   (unsigned)daemon_uid);
}

static int set_groups(int n, const gid_t *list)
{
	/* not glibc's setgroups(): that one changes every thread */
	return syscall(SYS_setgroups, (size_t)n, list) < 0 ? -errno : 0;
}

/* This thread's ids back to the daemon's. Cannot fail for root; if it did,
 * the thread would go on serving every user with one caller's ids. */
static void ids_restore(void)
{
	setfsuid(daemon_uid);
	setfsgid(daemon_gid);
	if ((uid_t)setfsuid((uid_t)-1) != daemon_uid || (gid_t)setfsgid((gid_t)-1) != daemon_gid ||
	    set_groups(daemon_ngroups, daemon_groups) < 0) {
		imgfs_err("fs: could not take back the daemon's ids after a change as a caller");
		abort();
	}
}

/* The caller's supplementary groups (from /proc: FUSE does not send them),
 * or none if they cannot be read (its pid is not in our pid namespace). */
static int caller_ids(fuse_req_t req, const struct fuse_ctx *ctx)
{
	gid_t small[64], *list = small;
	_cleanup_free_ gid_t *big = NULL;
	int n, size = 64, rc;

	n = fuse_req_getgroups(req, size, small);
	if (n > size && n <= NGROUPS_MAX) {
		size = n;
		big = calloc((size_t)size, sizeof(gid_t));
		if (!big)
			return -ENOMEM;
		list = big;
		n = fuse_req_getgroups(req, size, big);
	}
	if (n < 0 || n > size)
		n = 0; /* unknown, or changed while read: none */
	rc = set_groups(n, list);
	if (rc < 0)
		return rc;
	setfsgid(ctx->gid);
	setfsuid(ctx->uid);
	if ((uid_t)setfsuid((uid_t)-1) != ctx->uid || (gid_t)setfsgid((gid_t)-1) != ctx->gid)
		return -EPERM;
	return 0;
}

int fs_caller_enter(fuse_req_t req, bool with_umask, struct fs_caller *c)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	int rc;

	pthread_once(&caller_once, caller_init);
	memset(c, 0, sizeof(*c));
	if (with_umask) {
		if (unshare(CLONE_FS) == 0) {
			c->old_umask = umask(ctx->umask & 0777);
			c->umask_set = true;
		} else {
			/* no umask of our own: apply it here (ignores default ACLs) */
			c->mask = ctx->umask & 0777;
		}
	}
	/* root with group 0: the daemon's own ids are the caller's */
	if (daemon_root && (ctx->uid != 0 || ctx->gid != 0)) {
		c->ids_set = true;
		rc = caller_ids(req, ctx);
		if (rc < 0) {
			imgfs_warn("fs: taking on uid %u gid %u: %s", (unsigned)ctx->uid,
				   (unsigned)ctx->gid, strerror(-rc));
			fs_caller_leave(c);
			return rc;
		}
	}
	return 0;
}

void fs_caller_leave(struct fs_caller *c)
{
	int saved = errno;

	if (c->ids_set)
		ids_restore();
	if (c->umask_set)
		umask(c->old_umask);
	c->ids_set = c->umask_set = false;
	errno = saved;
}
