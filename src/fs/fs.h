/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fs: the FUSE filesystem. Shows the store's images as a tree (see imgfs(5)),
 * passes rootfs/, layers/ and snapshots/ through to snapshot directories and
 * detached kernel overlayfs mounts, and pulls images on lookup under pull/.
 */
#ifndef IMGFS_FS_H
#define IMGFS_FS_H

#include "../pull/pull.h"

struct imgfs_fs_opts {
	const char *mountpoint;
	const char *store_dir;
	const struct imgfs_fetch_config *fetch; /* borrowed for the daemon's life; may be NULL */
	bool foreground;			/* else daemonize and log to syslog */
	bool read_only;				/* -o ro: rootfs/ is read-only too */
	bool allow_other;
	bool debug;    /* libfuse's request trace, debug logging */
	bool no_uring; /* -o no_uring: /dev/fuse only, never FUSE over io_uring */
};

/* Mount and serve until unmounted or signalled (SIGTERM, SIGINT, SIGHUP).
 * Returns 0 after a clean unmount, -1 with err filled when mounting failed. */
int imgfs_fs_main(const struct imgfs_fs_opts *opts, struct imgfs_error *err);

#endif
