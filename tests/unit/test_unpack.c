/* SPDX-License-Identifier: Apache-2.0 */
/*
 * unpack unit tests: chainIDs, name cleaning, and a layer built here with
 * libarchive's writer holding every entry type, applied with
 * imgfs_unpack_layer and checked with lstat/lgetxattr/readlink.
 */
#include "test.h"
#include "unpack/unpack_i.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

/* chainID vectors. The expected values were computed once with coreutils:
 *   printf '' | sha256sum   -> e3b0c442...b855 (diffID of layer 0)
 *   printf a  | sha256sum   -> ca978112...48bb (diffID of layer 1)
 *   printf '%s' 'sha256:e3b0...b855 sha256:ca97...48bb' | sha256sum -> 54310b28...16fc
 * (the OCI image-spec rule: ChainID(L0|L1) = sha256(ChainID(L0) + " " + DiffID(L1))). */
static void test_chain_id(void)
{
	struct imgfs_digest d0, d1, c0, c1, c2;
	struct imgfs_error err;

	CHECK(imgfs_digest_parse(
		  &d0, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		  &err) == 0);
	CHECK(imgfs_digest_parse(
		  &d1, "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
		  &err) == 0);
	imgfs_chain_id(NULL, &d0, &c0);
	CHECK_STR(c0.str, d0.str);
	CHECK_STR(c0.hex, d0.hex);
	CHECK(c0.hex == c0.str + 7);
	imgfs_chain_id(&c0, &d1, &c1);
	CHECK_STR(c1.str,
		  "sha256:54310b28337ccdbb5477f2808753d5b0e7c87d84187cee28a330a3e71f6c16fc");
	/* order matters */
	imgfs_chain_id(&d1, &d0, &c2);
	CHECK(strcmp(c2.str, c1.str) != 0);
}

static void test_clean_path(void)
{
	static const char *const v[][2] = {
	    {"/etc/passwd", "etc/passwd"},
	    {"../../x", "x"},
	    {"a/../../x", "x"},
	    {"./a//b/./c/", "a/b/c"},
	    {"..", ""},
	    {"/", ""},
	    {"", ""},
	    {"a/b/..", "a"},
	    {".wh..wh..opq", ".wh..wh..opq"},
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char *c = unpack_clean_path(v[i][0]);
		CHECK_STR(c, v[i][1]);
		free(c);
	}
}

/* ---- an in-memory layer -------------------------------------------------- */

struct buf {
	unsigned char *p;
	size_t len, cap, off;
};

static int buf_open(struct archive *a, void *ctx)
{
	return ARCHIVE_OK;
}
static la_ssize_t buf_write(struct archive *a, void *ctx, const void *data, size_t n)
{
	struct buf *b = ctx;

	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	return (la_ssize_t)n;
}
static ssize_t buf_read(void *ctx, void *out, size_t n)
{
	struct buf *b = ctx;

	if (n > b->len - b->off)
		n = b->len - b->off;
	if (n > 1000) /* small reads: exercise the streaming */
		n = 1000;
	memcpy(out, b->p + b->off, n);
	b->off += n;
	return (ssize_t)n;
}

static void add(struct archive *a, const char *name, mode_t type, mode_t perm, const char *data,
		const char *link, bool hard)
{
	struct archive_entry *e = archive_entry_new();

	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, perm);
	archive_entry_set_mtime(e, 1600000000, 123456789);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	if (type == AE_IFCHR)
		archive_entry_set_rdev(e, makedev(1, 3));
	if (link && hard)
		archive_entry_set_hardlink(e, link);
	else if (link)
		archive_entry_set_symlink(e, link);
	if (!strcmp(name, "file")) {
		archive_entry_xattr_add_entry(e, "user.test", "v", 1);
		archive_entry_xattr_add_entry(e, "trusted.overlay.opaque", "y", 1);
		archive_entry_xattr_add_entry(e, "user.overlay.redirect", "/x", 2);
		archive_entry_set_uid(e, 1234);
		archive_entry_set_gid(e, 5678);
	}
	archive_entry_set_size(e, data ? (la_int64_t)strlen(data) : 0);
	archive_write_header(a, e);
	if (data)
		archive_write_data(a, data, strlen(data));
	archive_entry_free(e);
}

static void build_layer(struct buf *b, bool gzip)
{
	struct archive *a = archive_write_new();

	archive_write_set_format_pax_restricted(a);
	if (gzip)
		archive_write_add_filter_gzip(a);
	archive_write_set_bytes_in_last_block(a, 1); /* no padding after the gzip member */
	archive_write_open(a, b, buf_open, buf_write, NULL);
	add(a, "dir/", AE_IFDIR, 0750, NULL, NULL, false);
	add(a, "file", AE_IFREG, 04755, "hello", NULL, false);
	add(a, "dir/sym", AE_IFLNK, 0777, NULL, "../file", false);
	add(a, "dir/hard", AE_IFREG, 0644, NULL, "file", true);
	add(a, "fifo", AE_IFIFO, 0640, NULL, NULL, false);
	add(a, "null", AE_IFCHR, 0666, NULL, NULL, false);
	add(a, "implied/deep/f", AE_IFREG, 0600, "x", NULL, false);
	add(a, ".wh.gone", AE_IFREG, 0644, NULL, NULL, false);
	add(a, "dir/.wh..wh..opq", AE_IFREG, 0644, NULL, NULL, false);
	add(a, "file2", AE_IFREG, 0644, "2", NULL, false);
	add(a, ".wh.file2", AE_IFREG, 0644, NULL, NULL, false); /* same layer: ignored */
	archive_write_close(a);
	archive_write_free(a);
}

static void test_apply_layer(void)
{
	char tmpl[] = "/tmp/test-unpack-XXXXXX", path[256], target[64];
	struct buf raw = {0}, gz = {0};
	struct imgfs_unpack_result res;
	struct imgfs_error err;
	struct imgfs_digest want;
	struct stat st, st2;
	char x[16];
	bool root = geteuid() == 0;

	build_layer(&raw, false);
	build_layer(&gz, true);
	CHECK(gz.len < raw.len && gz.p[0] == 0x1f);
	imgfs_digest_buf(IMGFS_SHA256, raw.p, raw.len, &want);
	CHECK(mkdtemp(tmpl) != NULL);
	struct imgfs_unpack_source src = {.read = buf_read, .ctx = &gz};
	if (imgfs_unpack_layer(tmpl, &src, NULL, &res, &err) < 0) {
		fprintf(stderr, "unpack: %s\n", err.msg);
		CHECK(0);
		return;
	}
	CHECK_STR(res.diff_id.str, want.str);
	CHECK(res.uncompressed == raw.len);
	CHECK(res.entries == 11);
#define P(n) (snprintf(path, sizeof(path), "%s/%s", tmpl, n), path)
	CHECK(lstat(P("dir"), &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0750);
	CHECK(st.st_mtim.tv_sec == 1600000000); /* ustar header: whole seconds */
	CHECK(lstat(P("file"), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 5);
	CHECK((st.st_mode & 07777) == 04755);
	CHECK(st.st_mtim.tv_sec == 1600000000 && st.st_mtim.tv_nsec == 123456789); /* pax */
	if (root)
		CHECK(st.st_uid == 1234 && st.st_gid == 5678);
	CHECK(lgetxattr(P("file"), "user.test", x, sizeof(x)) == 1 && x[0] == 'v');
	CHECK(lgetxattr(P("file"), "trusted.overlay.opaque", x, sizeof(x)) < 0);
	CHECK(lgetxattr(P("file"), "user.overlay.redirect", x, sizeof(x)) < 0);
	CHECK(lstat(P("dir/hard"), &st2) == 0 && st2.st_ino == st.st_ino && st.st_nlink == 2);
	ssize_t n = readlink(P("dir/sym"), target, sizeof(target) - 1);
	CHECK(n == 7 && !memcmp(target, "../file", 7));
	CHECK(lstat(P("fifo"), &st) == 0 && S_ISFIFO(st.st_mode) && (st.st_mode & 0777) == 0640);
	if (root)
		CHECK(lstat(P("null"), &st) == 0 && S_ISCHR(st.st_mode) &&
		      st.st_rdev == makedev(1, 3));
	else
		CHECK(lstat(P("null"), &st) < 0);
	/* whiteouts in overlay form */
	CHECK(lstat(P("gone"), &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
	CHECK(lstat(P(".wh.gone"), &st) < 0);
	CHECK(lgetxattr(P("dir"), root ? "trusted.overlay.opaque" : "user.overlay.opaque", x,
			sizeof(x)) == 1 &&
	      x[0] == 'y');
	CHECK(lstat(P("dir/.wh..wh..opq"), &st) < 0);
	CHECK(lstat(P("file2"), &st) == 0 && S_ISREG(st.st_mode));
	/* implied parents, recorded */
	CHECK(lstat(P("implied/deep"), &st) == 0 && S_ISDIR(st.st_mode) &&
	      (st.st_mode & 0777) == 0755);
	CHECK(res.implied_dirs && res.implied_dirs[0] && res.implied_dirs[1] &&
	      !res.implied_dirs[2]);
	if (res.implied_dirs && res.implied_dirs[0] && res.implied_dirs[1]) {
		CHECK_STR(res.implied_dirs[0], "implied");
		CHECK_STR(res.implied_dirs[1], "implied/deep");
	}
	imgfs_unpack_result_destroy(&res);
	CHECK(imgfs_rm_rf(tmpl) == 0);
	free(raw.p);
	free(gz.p);
#undef P
}

static void test_bad_layers(void)
{
	char tmpl[] = "/tmp/test-unpack-XXXXXX";
	struct imgfs_unpack_result res;
	struct imgfs_error err;
	struct buf b = {0};
	struct archive *a = archive_write_new();
	struct archive_entry *e = archive_entry_new();

	/* a layer with a uid past 2^32-2 must fail, not wrap to root */
	archive_write_set_format_pax(a);
	archive_write_open(a, &b, buf_open, buf_write, NULL);
	archive_entry_set_pathname(e, "u");
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_uid(e, 4294967296LL);
	archive_write_header(a, e);
	archive_write_close(a);
	archive_write_free(a);
	archive_entry_free(e);
	CHECK(mkdtemp(tmpl) != NULL);
	struct imgfs_unpack_source src = {.read = buf_read, .ctx = &b};
	CHECK(imgfs_unpack_layer(tmpl, &src, NULL, &res, &err) < 0);
	CHECK(strstr(err.msg, "out of range") != NULL);
	/* garbage is not a tar */
	memset(b.p, 'z', b.len);
	b.off = 0;
	CHECK(imgfs_unpack_layer(tmpl, &src, NULL, &res, &err) < 0 && err.code == EIO);
	CHECK(imgfs_rm_rf(tmpl) == 0);
	free(b.p);
}

int main(void)
{
	imgfs_log_set_level(IMGFS_LOG_ERR);
	RUN(test_chain_id);
	RUN(test_clean_path);
	RUN(test_apply_layer);
	RUN(test_bad_layers);
	TEST_DONE();
}
