/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fs: the FUSE filesystem. Shows the store's images as a tree (see imgfs(5)),
 * passes rootfs/, layers/ and snapshots/ through to snapshot directories and
 * detached kernel overlayfs mounts, and pulls images on lookup under pull/.
 */
#ifndef IMGFS_FS_H
#define IMGFS_FS_H

#include "../pull/pull.h"

/* Who may make the mount pull (-o pull=): see mount.fuse.imgfs(8). */
enum imgfs_fs_pull_policy {
	IMGFS_FS_PULL_ROOT = 0, /* root only; other users get what the store has */
	IMGFS_FS_PULL_ALL,	/* everyone; other users anonymously unless pull_creds_shared */
	IMGFS_FS_PULL_NONE,	/* nobody: pull/ shows the store only */
};
#define IMGFS_FS_PULL_MAX_SIZE_DEFAULT (4ULL << 30) /* -o pull_max_size= */
#define IMGFS_FS_PULL_MAX_PER_USER_DEFAULT 4	    /* -o pull_max_per_user= */

struct imgfs_fs_opts {
	const char *mountpoint;
	const char *store_dir;
	const struct imgfs_fetch_config *fetch; /* borrowed for the daemon's life; may be NULL */
	bool foreground;			/* else daemonize and log to syslog */
	bool read_only;				/* -o ro: rootfs/ is read-only too */
	bool allow_other;
	bool blobs_all; /* -o blobs=all: blobs/ shows layer blobs to all users (default root) */
	bool debug;	/* libfuse's request trace, debug logging */
	bool no_uring;	/* -o no_uring: /dev/fuse only, never FUSE over io_uring */
	enum imgfs_fs_pull_policy pull;
	bool pull_creds_shared;	    /* -o pull_creds=shared: other users pull with ours */
	uint64_t pull_max_size;	    /* other users' pulls: largest image, 0 = no limit */
	unsigned pull_max_per_user; /* other users' pulls running at once, per uid, 0 = no limit */
};

/* Mount and serve until unmounted or signalled (SIGTERM, SIGINT, SIGHUP).
 * Returns 0 after a clean unmount, -1 with err filled when mounting failed. */
int imgfs_fs_main(const struct imgfs_fs_opts *opts, struct imgfs_error *err);

#endif
