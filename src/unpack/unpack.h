/* SPDX-License-Identifier: Apache-2.0 */
/*
 * unpack: apply a layer (a tar stream, gzip/zstd/uncompressed) into its own
 * snapshot directory in overlay form, compute diffIDs and chainIDs, and mount
 * kernel overlayfs over a chain of snapshots.
 *
 * Security model: libarchive only reads the tar. Every filesystem change is
 * made here with *at() calls on a parent directory resolved inside the
 * layer's root with openat2(RESOLVE_IN_ROOT) ("clamp" policy, as containerd
 * and umoci: ".." at the root stays at the root, absolute symlinks are
 * re-rooted). Metadata changes never follow symlinks. No resolved path is
 * cached across entries.
 */
#ifndef IMGFS_UNPACK_H
#define IMGFS_UNPACK_H

#include "../util/util.h"

#include <sys/types.h>

/* Where compressed layer bytes come from. read returns bytes read (> 0), 0 at
 * end of stream, or -errno (the source's own error text, if any, goes to
 * its own state; the unpacker reports "read layer: <strerror>"). */
struct imgfs_unpack_source {
	ssize_t (*read)(void *ctx, void *buf, size_t len);
	void *ctx;
};

/* Directories nest at most this deep in a layer (an entry's parent is at
 * most this many levels below the layer root, however symlinks chain). */
#define IMGFS_UNPACK_MAX_DEPTH 1024
/* Path components a layer may resolve one at a time (parents that are
 * missing or reached through symlinks), against CPU exhaustion. */
#define IMGFS_UNPACK_MAX_WALK_STEPS (2ull << 20)

#define IMGFS_UNPACK_DEFAULT_MAX_BYTES (64ull << 30)
#define IMGFS_UNPACK_DEFAULT_RATIO 100u
#define IMGFS_UNPACK_NO_RATIO UINT32_MAX
#define IMGFS_UNPACK_RATIO_FLOOR (64ull << 20)

struct imgfs_unpack_opts {
	/* Lower layers' directories, top-most first, NULL-terminated (may be NULL).
	 * Only read, to give implied parent directories the attributes of the
	 * same directory below (as containerd does). */
	const char *const *lowers;
	uint64_t max_bytes;   /* uncompressed bytes per layer; 0 = default (64 GiB) */
	uint64_t max_entries; /* tar entries per layer; 0 = default (10 million) */
	/* The blob's size from its descriptor (0 = unknown): the uncompressed
	 * bytes are also capped at max_ratio times it, but never below
	 * IMGFS_UNPACK_RATIO_FLOOR. max_ratio 0 = default (100),
	 * IMGFS_UNPACK_NO_RATIO = no ratio limit. */
	uint64_t compressed_size;
	uint32_t max_ratio;
	/* Without root, skip what cannot be made exactly (owners, devices,
	 * root-only xattrs; opaque dirs get user.overlay.opaque), each warned.
	 * Only for tools that study the unpacker unprivileged: a tree made so is
	 * not the image, and the store never commits one. Without it, anything
	 * that cannot be recreated exactly fails the layer. */
	bool lossy_unprivileged;
	/* Called with the number of compressed bytes consumed so far, may be NULL. */
	void (*progress)(void *ctx, uint64_t compressed, uint64_t uncompressed);
	void *progress_ctx;
};

struct imgfs_unpack_result {
	struct imgfs_digest diff_id; /* sha256 of every decompressed byte to EOF */
	uint64_t uncompressed;	     /* bytes */
	uint64_t entries;
	uint64_t disk_bytes; /* sum of regular file sizes written */
	/* Directories this layer created implicitly (parents with no tar entry),
	 * relative to dest, NULL-terminated; free with imgfs_strv_free. */
	char **implied_dirs;
};

/*
 * Apply one layer into dest, an existing empty directory. OCI whiteouts become
 * overlay whiteouts (".wh.x" -> 0/0 char device x; ".wh..wh..opq" ->
 * trusted.overlay.opaque=y on its directory); a whiteout of a name created
 * earlier in the same layer is ignored (whiteouts only apply to lower layers).
 * trusted.overlay.* and user.overlay.* xattrs in the layer are dropped.
 * Owners, devices, whiteouts and xattrs are made exactly or the layer fails
 * (an unprivileged caller fails on the first entry it cannot make, naming what
 * was refused), unless lossy_unprivileged. On error dest is left for the caller to remove; err
 * names the entry and the cause.
 */
int imgfs_unpack_layer(const char *dest, struct imgfs_unpack_source *src,
		       const struct imgfs_unpack_opts *opts, struct imgfs_unpack_result *res,
		       struct imgfs_error *err);
void imgfs_unpack_result_destroy(struct imgfs_unpack_result *res);

/* Give implied directories (from a result) the mode, owner, times and xattrs
 * of the same directory in the top-most lower that has one. Call once the
 * lowers are complete. */
int imgfs_unpack_fix_implied(const char *dest, char *const *implied_dirs, const char *const *lowers,
			     struct imgfs_error *err);

void imgfs_strv_free(char **v);

/* chainID(L0) = diffID(L0); chainID(L0..n) = sha256(chainID(L0..n-1) + " " + diffID(Ln)).
 * parent may be NULL. */
void imgfs_chain_id(const struct imgfs_digest *parent, const struct imgfs_digest *diff_id,
		    struct imgfs_digest *out);

/* ---- overlay (overlay.c) ------------------------------------------------- */

/* Mount kernel overlayfs at target. lowers top-most first (NULL-terminated,
 * at least one). upper/work NULL for a read-only mount. Uses the new mount API
 * (lowerdir+) when available so long chains are not limited by page size. */
int imgfs_overlay_mount(const char *const *lowers, const char *upper, const char *work,
			const char *target, struct imgfs_error *err);

#endif
