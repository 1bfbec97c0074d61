/* SPDX-License-Identifier: Apache-2.0 */
/*
 * imgfs_unpack_layer: two libarchive readers in a row. Archive A reads the
 * compressed source (gzip or zstd in-process, or none; format raw); every
 * byte it decompresses is hashed (the diffID) and handed, without a copy, to
 * archive B (format tar) through a read callback. After B's end-of-archive, A
 * is drained to EOF so trailing blocks and junk are hashed too.
 */
#include "unpack_i.h"

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SRC_BUF (256 * 1024)
#define DEFAULT_MAX_ENTRIES 10000000ull

static void stream_fail(struct unpack_ctx *u, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void stream_fail(struct unpack_ctx *u, int code, const char *fmt, ...)
{
	va_list ap;

	if (u->stream_err.code)
		return; /* keep the first, root cause */
	u->stream_err.code = code;
	va_start(ap, fmt);
	vsnprintf(u->stream_err.msg, sizeof(u->stream_err.msg), fmt, ap);
	va_end(ap);
}

static la_ssize_t a_read(struct archive *a, void *ctx, const void **buf)
{
	struct unpack_ctx *u = ctx;
	ssize_t n;

	do
		n = u->src->read(u->src->ctx, u->srcbuf, SRC_BUF);
	while (n == -EINTR);
	if (n < 0) {
		stream_fail(u, (int)-n, "read layer: %s", strerror((int)-n));
		archive_set_error(a, (int)-n, "read layer: %s", strerror((int)-n));
		return -1;
	}
	u->compressed += (uint64_t)n;
	*buf = u->srcbuf;
	return n;
}

/* Compressions we do not decompress in-process: refuse by magic rather than
 * hand the compressed bytes to the tar reader. */
static const char *foreign_compression(const unsigned char *p, size_t n)
{
	static const struct {
		const char *name;
		const char *magic;
		size_t len;
	} m[] = {
	    {"xz",
	     "\xfd"
	     "7zXZ\0",
	     6},
	    {"lz4", "\x04\x22\x4d\x18", 4},
	    {"lzip", "LZIP\x01", 5},
	    {"compress", "\x1f\x9d", 2},
	    {"lzop", "\x89LZO", 4},
	    {"bzip2", "BZh", 3},
	};

	if (n >= 263 && !memcmp(p + 257, "ustar", 5))
		return NULL; /* a tar header, whatever its first name */

	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (n >= m[i].len && !memcmp(p, m[i].magic, m[i].len))
			return m[i].name;
	return NULL;
}

static void hist_add(struct unpack_ctx *u, const unsigned char *p, size_t n)
{
	uint64_t at = u->uncompressed - n; /* stream offset of p */

	if (n > UNPACK_HIST) {
		at += n - UNPACK_HIST;
		p += n - UNPACK_HIST;
		n = UNPACK_HIST;
	}
	while (n) {
		size_t o = (size_t)(at % UNPACK_HIST), c = UNPACK_HIST - o;
		if (c > n)
			c = n;
		memcpy(u->hist + o, p, c);
		at += c;
		p += c;
		n -= c;
	}
}

static bool hist_get(struct unpack_ctx *u, uint64_t at, unsigned char *out, size_t n)
{
	if (at + n > u->uncompressed ||
	    (u->uncompressed > UNPACK_HIST && at < u->uncompressed - UNPACK_HIST))
		return false;
	for (size_t i = 0; i < n; i++)
		out[i] = u->hist[(at + i) % UNPACK_HIST];
	return true;
}

static int64_t tar_size(const unsigned char *f)
{
	int64_t v = 0;

	if (f[0] & 0x80) { /* base-256 */
		if (f[0] != 0x80 || f[1] || f[2] || f[3])
			return -1;
		for (int i = 4; i < 12; i++)
			v = (v << 8) | f[i];
		return v < 0 ? -1 : v;
	}
	for (int i = 0; i < 12 && f[i]; i++) {
		if (f[i] == ' ')
			continue;
		if (f[i] < '0' || f[i] > '7' || v > (INT64_MAX >> 3))
			return -1;
		v = v * 8 + (f[i] - '0');
	}
	return v;
}

int unpack_raw_typeflag(struct unpack_ctx *u)
{
	uint64_t at = (uint64_t)archive_read_header_position(u->b);
	unsigned char h[512];

	for (int i = 0; i < 64; i++) {
		int64_t size;

		if (!hist_get(u, at, h, sizeof(h)))
			return -1;
		if (!h[156] || !strchr("xXgLKA", h[156]))
			return h[156];
		size = tar_size(h + 124);
		if (size < 0)
			return -1;
		at += 512 + (((uint64_t)size + 511) & ~511ull);
	}
	return -1;
}

static la_ssize_t b_read(struct archive *b, void *ctx, const void **buf)
{
	struct unpack_ctx *u = ctx;
	const void *blk;
	size_t size = 0;
	la_int64_t off;

	while (!u->a_eof && size == 0) {
		int r = archive_read_data_block(u->a, &blk, &size, &off);
		if (r == ARCHIVE_EOF) {
			u->a_eof = true;
			return 0;
		}
		if (r < ARCHIVE_WARN) {
			stream_fail(u, EIO, "decompress layer: %s", archive_error_string(u->a));
			archive_set_error(b, EIO, "%s", u->stream_err.msg);
			return -1;
		}
	}
	if (u->a_eof)
		return 0;
	if (u->first_block) {
		const char *c;

		u->first_block = false;
		if (archive_filter_code(u->a, 0) == ARCHIVE_FILTER_NONE &&
		    (c = foreign_compression(blk, size))) {
			stream_fail(u, ENOTSUP, "unsupported layer compression (%s)", c);
			archive_set_error(b, ENOTSUP, "%s", u->stream_err.msg);
			return -1;
		}
	}
	u->uncompressed += size;
	if (u->uncompressed > u->max_bytes) {
		if (u->ratio_limited)
			stream_fail(u, EFBIG,
				    "layer exceeds the limit of %llu uncompressed bytes (%u times "
				    "its %llu compressed bytes: max-layer-ratio)",
				    (unsigned long long)u->max_bytes, u->ratio,
				    (unsigned long long)u->opts->compressed_size);
		else
			stream_fail(u, EFBIG,
				    "layer exceeds the limit of %llu uncompressed bytes "
				    "(max-layer-size)",
				    (unsigned long long)u->max_bytes);
		archive_set_error(b, EFBIG, "%s", u->stream_err.msg);
		return -1;
	}
	imgfs_hasher_update(u->hasher, blk, size);
	hist_add(u, blk, size);
	if (u->opts && u->opts->progress)
		u->opts->progress(u->opts->progress_ctx, u->compressed, u->uncompressed);
	*buf = blk;
	return (la_ssize_t)size;
}

/* max_bytes = min(absolute cap, max(ratio x compressed size, floor)). */
static void set_ratio_limit(struct unpack_ctx *u)
{
	const struct imgfs_unpack_opts *o = u->opts;
	uint32_t ratio = o && o->max_ratio ? o->max_ratio : IMGFS_UNPACK_DEFAULT_RATIO;
	uint64_t lim;

	if (!o || !o->compressed_size || ratio == IMGFS_UNPACK_NO_RATIO)
		return;
	lim = o->compressed_size > UINT64_MAX / ratio ? UINT64_MAX : o->compressed_size * ratio;
	if (lim < IMGFS_UNPACK_RATIO_FLOOR)
		lim = IMGFS_UNPACK_RATIO_FLOOR;
	if (lim < u->max_bytes) {
		u->max_bytes = lim;
		u->ratio_limited = true;
		u->ratio = ratio;
	}
}

static int archive_fail(struct unpack_ctx *u, struct archive *ar, const char *what,
			struct imgfs_error *err)
{
	if (u->stream_err.code)
		return imgfs_error_set(err, u->stream_err.code, "%s", u->stream_err.msg);
	return imgfs_error_set(err, EIO, "%s: %s", what,
			       archive_error_string(ar) ? archive_error_string(ar)
							: "unknown error");
}

static int open_streams(struct unpack_ctx *u, struct imgfs_error *err)
{
	struct archive_entry *raw;
	int r;

	u->a = archive_read_new();
	u->b = archive_read_new();
	if (!u->a || !u->b)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	/* ARCHIVE_WARN here means an external program would be used: refuse */
	if (archive_read_support_filter_gzip(u->a) != ARCHIVE_OK)
		return imgfs_error_set(err, ENOTSUP,
				       "gzip decompression is not available in-process");
	if (archive_read_support_filter_zstd(u->a) != ARCHIVE_OK)
		return imgfs_error_set(err, ENOTSUP,
				       "zstd decompression is not available in-process");
	if (archive_read_support_format_raw(u->a) != ARCHIVE_OK ||
	    archive_read_support_format_tar(u->b) != ARCHIVE_OK)
		return imgfs_error_set(err, EIO, "libarchive: %s", archive_error_string(u->a));
	if (archive_read_open(u->a, u, NULL, a_read, NULL) != ARCHIVE_OK)
		return archive_fail(u, u->a, "open layer", err);
	r = archive_read_next_header(u->a, &raw);
	if (r == ARCHIVE_EOF)
		u->a_eof = true;
	else if (r < ARCHIVE_WARN)
		return archive_fail(u, u->a, "open layer", err);
	u->first_block = true;
	if (archive_read_open(u->b, u, NULL, b_read, NULL) != ARCHIVE_OK)
		return archive_fail(u, u->b, "invalid layer", err);
	return 0;
}

static int read_entries(struct unpack_ctx *u, struct imgfs_error *err)
{
	struct archive_entry *ae;

	for (;;) {
		int r = archive_read_next_header(u->b, &ae);

		if (r == ARCHIVE_EOF)
			return 0;
		if (r < ARCHIVE_WARN)
			return archive_fail(u, u->b, "invalid layer", err);
		if (r == ARCHIVE_WARN)
			imgfs_debug("layer: %s", archive_error_string(u->b));
		if (++u->res->entries > u->max_entries)
			return imgfs_error_set(err, EFBIG,
					       "layer exceeds the limit of %llu entries",
					       (unsigned long long)u->max_entries);
		if (unpack_entry(u, ae, err) < 0)
			return -1;
		/* an entry that failed inside the stream (limits, read errors) */
		if (u->stream_err.code)
			return imgfs_error_set(err, u->stream_err.code, "%s", u->stream_err.msg);
	}
}

static int drain(struct unpack_ctx *u, struct imgfs_error *err)
{
	const void *buf;

	while (!u->a_eof) {
		if (b_read(u->b, u, &buf) < 0)
			return imgfs_error_set(err, u->stream_err.code, "%s", u->stream_err.msg);
	}
	return 0;
}

static mode_t read_umask(void)
{
	char line[128];
	unsigned int m = 022;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return 07777; /* unknown: always chmod */
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Umask: %o", &m) == 1)
			break;
	fclose(f);
	return (mode_t)m;
}

static int build_implied(struct unpack_ctx *u, struct imgfs_error *err)
{
	size_t n = 0;

	u->res->implied_dirs = calloc(u->n_implied + 1, sizeof(char *));
	if (!u->res->implied_dirs)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < u->n_implied; i++) {
		struct unpack_set_ent *e = unpack_set_get(&u->set, u->implied[i]);
		if (!e || !(e->flags & UNPACK_IMPLIED))
			continue;
		e->flags &= ~UNPACK_IMPLIED; /* listed once */
		u->res->implied_dirs[n] = strdup(e->key);
		if (!u->res->implied_dirs[n++])
			return imgfs_error_set(err, ENOMEM, "out of memory");
	}
	return 0;
}

static int run(struct unpack_ctx *u, const char *dest, struct imgfs_error *err)
{
	char proc[64], real[PATH_MAX + 1];
	ssize_t n;

	u->root_fd = open(dest, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (u->root_fd < 0)
		return imgfs_error_errno(err, errno, "open %s", dest);
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", u->root_fd);
	n = readlink(proc, real, sizeof(real) - 1);
	if (n < 0)
		return imgfs_error_errno(err, errno, "resolve %s", dest);
	real[n] = '\0';
	u->root_real = strdup(real);
	u->srcbuf = malloc(SRC_BUF);
	u->hist = malloc(UNPACK_HIST);
	u->hasher = imgfs_hasher_new(IMGFS_SHA256);
	if (!u->root_real || !u->srcbuf || !u->hist || !u->hasher)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	if (open_streams(u, err) < 0 || read_entries(u, err) < 0 || drain(u, err) < 0)
		return -1;
	if (unpack_apply_dirfixes(u, err) < 0)
		return -1;
	if (u->root_mode >= 0) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", u->root_fd);
		if (chmod(proc, (mode_t)u->root_mode) < 0)
			return imgfs_error_errno(err, errno, "%s: set the root's mode", dest);
	}
	imgfs_hasher_final(u->hasher, &u->res->diff_id);
	imgfs_hasher_free(u->hasher);
	u->hasher = NULL;
	u->res->uncompressed = u->uncompressed;
	return build_implied(u, err);
}

int imgfs_unpack_layer(const char *dest, struct imgfs_unpack_source *src,
		       const struct imgfs_unpack_opts *opts, struct imgfs_unpack_result *res,
		       struct imgfs_error *err)
{
	struct unpack_ctx u = {
	    .root_fd = -1,
	    .src = src,
	    .opts = opts,
	    .res = res,
	    .is_root = geteuid() == 0,
	    .umask = read_umask(),
	    .root_mode = -1,
	    .lossy = geteuid() != 0 && opts && opts->lossy_unprivileged,
	    .max_bytes = opts && opts->max_bytes ? opts->max_bytes : IMGFS_UNPACK_DEFAULT_MAX_BYTES,
	    .max_entries = opts && opts->max_entries ? opts->max_entries : DEFAULT_MAX_ENTRIES,
	    .max_walk_steps = IMGFS_UNPACK_MAX_WALK_STEPS,
	};
	int r;

	memset(res, 0, sizeof(*res));
	set_ratio_limit(&u);
	r = run(&u, dest, err);
	if (r < 0) {
		imgfs_error_wrap(err, "apply layer to %s", dest);
		imgfs_unpack_result_destroy(res);
	}
	if (u.b)
		archive_read_free(u.b);
	if (u.a)
		archive_read_free(u.a);
	if (u.hasher)
		imgfs_hasher_free(u.hasher);
	if (u.root_fd >= 0)
		close(u.root_fd);
	unpack_set_destroy(&u.set);
	free(u.implied);
	free(u.dirs);
	free(u.srcbuf);
	free(u.hist);
	free(u.root_real);
	return r;
}
