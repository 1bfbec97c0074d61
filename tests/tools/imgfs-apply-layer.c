/* SPDX-License-Identifier: Apache-2.0 */
/*
 * imgfs-apply-layer DEST LAYER.tar[.gz|.zst] [--lower DIR]...
 * imgfs-apply-layer --overlay-mount TARGET LOWER... (top-most first, read-only)
 *
 * Apply one layer into DEST (which must exist) with imgfs_unpack_layer, give
 * implied directories the attributes of the lowers (top-most first), print the
 * diffID. Errors go to stderr, exit status 1. The layer file's size is the
 * compressed size the ratio limit applies to. Hidden knobs for tests:
 * IMGFS_UNPACK_MAX_BYTES, IMGFS_UNPACK_MAX_ENTRIES, IMGFS_UNPACK_MAX_RATIO
 * (0 = no ratio limit); unprivileged, owners and devices are skipped
 * (warned) unless IMGFS_UNPACK_EXACT=1.
 */
#include "unpack/unpack.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

static ssize_t fd_read(void *ctx, void *buf, size_t len)
{
	ssize_t n = read(*(int *)ctx, buf, len);

	return n < 0 ? -errno : n;
}

static uint64_t env_u64(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? strtoull(v, NULL, 10) : 0;
}

int main(int argc, char **argv)
{
	struct imgfs_error err = {0};
	struct imgfs_unpack_result res;
	struct imgfs_unpack_opts opts = {0};
	_cleanup_free_ const char **lowers = calloc((size_t)argc, sizeof(char *));
	size_t nl = 0;
	int fd;

	if (argc >= 4 && !strcmp(argv[1], "--overlay-mount")) {
		if (imgfs_overlay_mount((const char *const *)argv + 3, NULL, NULL, argv[2], &err) <
		    0) {
			fprintf(stderr, "%s: %s\n", argv[0], err.msg);
			return 1;
		}
		return 0;
	}
	if (argc < 3 || !lowers) {
		fprintf(stderr, "usage: %s DEST LAYER [--lower DIR]...\n", argv[0]);
		return 1;
	}
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--lower") && i + 1 < argc) {
			lowers[nl++] = argv[++i];
		} else {
			fprintf(stderr, "%s: unknown argument %s\n", argv[0], argv[i]);
			return 1;
		}
	}
	opts.lowers = nl ? lowers : NULL;
	opts.max_bytes = env_u64("IMGFS_UNPACK_MAX_BYTES");
	opts.max_entries = env_u64("IMGFS_UNPACK_MAX_ENTRIES");
	/* hostile.py studies containment unprivileged too, where owners and
	 * devices cannot be made (imgfs itself refuses such an unpack);
	 * IMGFS_UNPACK_EXACT=1 unpacks as imgfs does */
	opts.lossy_unprivileged = geteuid() != 0 && !getenv("IMGFS_UNPACK_EXACT");
	fd = open(argv[2], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "%s: open %s: %s\n", argv[0], argv[2], strerror(errno));
		return 1;
	}
	struct stat st;
	if (fstat(fd, &st) == 0)
		opts.compressed_size = (uint64_t)st.st_size;
	if (getenv("IMGFS_UNPACK_MAX_RATIO"))
		opts.max_ratio = env_u64("IMGFS_UNPACK_MAX_RATIO")
				     ? (uint32_t)env_u64("IMGFS_UNPACK_MAX_RATIO")
				     : IMGFS_UNPACK_NO_RATIO;
	struct imgfs_unpack_source src = {.read = fd_read, .ctx = &fd};
	if (imgfs_unpack_layer(argv[1], &src, &opts, &res, &err) < 0) {
		fprintf(stderr, "%s: %s (%s)\n", argv[0], err.msg, strerror(err.code));
		return 1;
	}
	close(fd);
	if (nl && imgfs_unpack_fix_implied(argv[1], res.implied_dirs, lowers, &err) < 0) {
		fprintf(stderr, "%s: %s (%s)\n", argv[0], err.msg, strerror(err.code));
		imgfs_unpack_result_destroy(&res);
		return 1;
	}
	printf("%s\n", res.diff_id.str);
	imgfs_unpack_result_destroy(&res);
	return 0;
}
