/* SPDX-License-Identifier: Apache-2.0 */
/*
 * unpack internals: the per-layer apply context shared by apply.c (streams
 * and the entry loop), entry.c (one tar entry -> filesystem), resolve.c
 * (in-root resolution, implied parents, the path set) and meta.c (xattrs,
 * times, implied-dir fixups).
 */
#ifndef IMGFS_UNPACK_I_H
#define IMGFS_UNPACK_I_H

#include "unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdbool.h>
#include <time.h>

/* A set of cleaned in-root paths this layer created (files, dirs, links,
 * implied dirs). Whiteouts consult it: a whiteout never hides a name of its
 * own layer. */
#define UNPACK_CREATED 1u
#define UNPACK_IMPLIED 2u
struct unpack_set_ent {
	char *key;	 /* owned; NULL = empty slot */
	uint32_t flags;	 /* UNPACK_* */
	uint32_t dirfix; /* index+1 into unpack_ctx.dirs, 0 = none */
};
struct unpack_set {
	struct unpack_set_ent *ents;
	size_t cap; /* power of two */
	size_t len;
};

/* A directory whose mode and times are applied after the last entry. */
struct unpack_dirfix {
	char *path; /* borrowed from the set */
	mode_t mode;
	struct timespec ts[2];
};

struct unpack_ctx {
	int root_fd;	 /* O_PATH of dest */
	char *root_real; /* dest's absolute path as /proc shows it */
	bool is_root;	 /* euid 0: chown and devices */
	bool lossy;	 /* not root and opts->lossy_unprivileged: skip what needs root */
	mode_t umask;	 /* to skip fchmod when creation already gave the mode */
	int root_mode;	 /* the mode of the layer's root entry ("./"), or -1 */
	uint64_t max_bytes, max_entries;
	uint64_t walk_steps, max_walk_steps; /* path components resolved one by one */
	bool ratio_limited;		     /* max_bytes comes from the compression ratio */
	uint32_t ratio;
	const struct imgfs_unpack_opts *opts;

	/* streams: a = compressed source -> raw, b = tar over a's output */
	struct imgfs_unpack_source *src;
	struct archive *a, *b;
	unsigned char *srcbuf;
	struct imgfs_hasher *hasher;
	uint64_t compressed, uncompressed;
	bool a_eof, first_block;
	unsigned char *hist;	       /* ring of the last UNPACK_HIST stream bytes (raw headers) */
	struct imgfs_error stream_err; /* code != 0 once a stream failed */

	struct unpack_set set;
	char **implied; /* keys of the set, in creation order */
	size_t n_implied, cap_implied;
	struct unpack_dirfix *dirs;
	size_t n_dirs, cap_dirs;
	struct imgfs_unpack_result *res;
};

/* One entry being applied; strings owned by the entry. */
struct unpack_entry {
	struct archive_entry *ae;
	const char *name; /* as in the archive, for messages */
	char *path;	  /* cleaned, "" = the root */
	char *parent;	  /* cleaned parent, "" = the root */
	const char *base; /* last component (points into path) */
};

/* resolve.c */
/* What unpack_resolve_dir does with missing components: create them (as
 * implied directories), create them unless a symlink's target is missing
 * (whiteouts: -2, nothing to hide), or fail with ENOENT. */
enum unpack_walk { UNPACK_WALK_CREATE, UNPACK_WALK_WHITEOUT, UNPACK_WALK_EXISTING };
/* The directory at path (cleaned, from the layer root), resolved in-root:
 * an O_PATH fd (u->root_fd for the root: release with unpack_put_fd) and its
 * depth below the root, -1 with err set (EFBIG past IMGFS_UNPACK_MAX_DEPTH or
 * the layer's resolution budget), or -2 (UNPACK_WALK_WHITEOUT). ename
 * names the entry in messages. */
int unpack_resolve_dir(struct unpack_ctx *u, const char *path, enum unpack_walk mode,
		       const char *ename, size_t *depth, struct imgfs_error *err);
char *unpack_clean_path(const char *name);
int unpack_openat2(int dirfd, const char *path, int flags, uint64_t resolve);
/* The parent directory of e, resolved in-root, missing directories created
 * (and recorded as implied). Returns an O_PATH fd (u->root_fd for the root:
 * release with unpack_put_fd), -1 with err set, or -2 (whiteouts only) when a
 * dangling symlink is in the way (the whiteout is then a no-op). */
int unpack_resolve_parent(struct unpack_ctx *u, struct unpack_entry *e, bool whiteout,
			  struct imgfs_error *err);
void unpack_put_fd(struct unpack_ctx *u, int fd);
struct unpack_set_ent *unpack_set_get(struct unpack_set *s, const char *key);
struct unpack_set_ent *unpack_set_add(struct unpack_set *s, const char *key, uint32_t flags);
void unpack_set_destroy(struct unpack_set *s);
char *unpack_join(const char *parent, const char *base);

/* apply.c */
#define UNPACK_HIST (1u << 20)
/* The raw typeflag of the current entry's own header (past pax/GNU extension
 * headers), or -1 when its bytes are no longer at hand. libarchive reports
 * unknown typeflags as regular files (POSIX); we skip them instead. */
int unpack_raw_typeflag(struct unpack_ctx *u);

/* entry.c */
int unpack_entry(struct unpack_ctx *u, struct archive_entry *ae, struct imgfs_error *err);
int unpack_apply_dirfixes(struct unpack_ctx *u, struct imgfs_error *err);

/* meta.c */
/* Apply the entry's xattrs (overlay ones dropped) to fd, or when fd < 0 to
 * base in dirfd without following. */
int unpack_apply_xattrs(struct unpack_ctx *u, struct unpack_entry *e, int fd, int dirfd,
			const char *base, struct imgfs_error *err);
void unpack_entry_times(struct archive_entry *ae, struct timespec ts[2]);

#endif
