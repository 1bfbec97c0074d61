// SPDX-License-Identifier: Apache-2.0
/*
 * Layer apply (src/unpack): the input is a layer (tar, gzip or zstd) applied
 * into a fresh empty root on top of one lower layer, as root. After every
 * input, everything outside the root must be exactly as it was: a sandbox
 *
 *   <O>/hostfile            a host file (its link count is checked)
 *   <O>/box/victim/{hello,secret}  sentinels beside the root
 *   <O>/box/dest-evil/      a sibling sharing the root's prefix
 *   <O>/box/lower/          the lower layer (etc/, etc/passwd)
 *   <O>/box/dest/           the root, made anew for each input
 *
 * is walked (type, mode, owner, size, mtime, link count, content, symlink
 * target, xattrs of every entry but dest/) and compared with its state
 * before the first input, and the link counts of /etc/passwd and
 * /etc/shadow must not change. Device nodes a layer makes can never be
 * opened, so a bug that opened one could not reach a real disk: the sandbox
 * is a nodev bind mount in the harness's own mount namespace; where that
 * cannot be set up, CAP_MKNOD is dropped instead (whiteouts, 0/0 char
 * devices, need none) and device entries fail.
 */
#include "fuzz.h"
#include "unpack/unpack.h"

#include <dirent.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>

static char sandbox[PATH_MAX], box[PATH_MAX], dest[PATH_MAX], lower[PATH_MAX];
static char *before;
static nlink_t host_links[2];
static const char *const host_files[2] = {"/etc/passwd", "/etc/shadow"};

struct strbuf {
	char *p;
	size_t len, cap;
};

static void sb_add(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(struct strbuf *b, const char *fmt, ...)
{
	va_list ap;
	char *s;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	size_t n = strlen(s);
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			abort();
	}
	memcpy(b->p + b->len, s, n + 1);
	b->len += n;
	free(s);
}

static void path_join(char *out, const char *dir, const char *name)
{
	if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
		abort();
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void snap_xattrs(struct strbuf *b, const char *path)
{
	char names[4096], val[4096];
	ssize_t n = llistxattr(path, names, sizeof(names));
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(names + i) + 1) {
		ssize_t v = lgetxattr(path, names + i, val, sizeof(val));
		struct imgfs_digest d;
		imgfs_digest_buf(IMGFS_SHA256, val, v > 0 ? (size_t)v : 0, &d);
		sb_add(b, " xattr %s=%s", names + i, d.hex);
	}
}

static void snap_one(struct strbuf *b, const char *path)
{
	struct stat st;
	char target[PATH_MAX];
	bool is_box = !strcmp(path, box);

	if (lstat(path, &st) < 0) {
		sb_add(b, "%s missing\n", path);
		return;
	}
	sb_add(b, "%s type=%o mode=%o uid=%u gid=%u nlink=%lu size=%lld", path,
	       (unsigned)(st.st_mode & S_IFMT), (unsigned)(st.st_mode & 07777), st.st_uid,
	       st.st_gid, (unsigned long)st.st_nlink, (long long)st.st_size);
	if (!is_box) /* dest/ is made and removed in it for each input */
		sb_add(b, " mtime=%lld.%09ld", (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
	if (S_ISLNK(st.st_mode)) {
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		sb_add(b, " -> %s", target);
	} else if (S_ISREG(st.st_mode)) {
		char *data = NULL;
		size_t len = 0;
		struct imgfs_error err;
		struct imgfs_digest d;
		if (imgfs_read_file(path, 1 << 20, &data, &len, &err) == 0) {
			imgfs_digest_buf(IMGFS_SHA256, data, len, &d);
			sb_add(b, " sha256=%s", d.hex);
			free(data);
		}
	}
	snap_xattrs(b, path);
	sb_add(b, "\n");
	if (!S_ISDIR(st.st_mode))
		return;
	DIR *d = opendir(path);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0;
	if (!d) {
		sb_add(b, "%s unreadable\n", path);
		return;
	}
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		names = realloc(names, (n + 1) * sizeof(*names));
		if (!names)
			abort();
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		char child[PATH_MAX];
		path_join(child, path, names[i]);
		if (strcmp(child, dest))
			snap_one(b, child);
		free(names[i]);
	}
	free(names);
}

static char *snapshot(void)
{
	struct strbuf b = {0};
	snap_one(&b, sandbox);
	return b.p;
}

static void put_file(const char *dir, const char *name, const char *data, mode_t mode)
{
	char path[PATH_MAX];
	path_join(path, dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0 || write(fd, data, strlen(data)) != (ssize_t)strlen(data) || fchmod(fd, mode))
		abort();
	close(fd);
}

static void mkdir_in(const char *dir, const char *name, mode_t mode, char *out)
{
	char path[PATH_MAX];
	if (!out)
		out = path;
	path_join(out, dir, name);
	if (mkdir(out, mode) < 0 || chmod(out, mode) < 0)
		abort();
}

static void drop_mknod(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct c[2];
	if (syscall(SYS_capget, &h, c) < 0)
		abort();
	c[CAP_MKNOD / 32].effective &= ~(1u << (CAP_MKNOD % 32));
	c[CAP_MKNOD / 32].permitted &= ~(1u << (CAP_MKNOD % 32));
	c[CAP_MKNOD / 32].inheritable &= ~(1u << (CAP_MKNOD % 32));
	if (syscall(SYS_capset, &h, c) < 0)
		abort();
}

/* Make the sandbox a nodev mount seen by this process only. */
static bool sandbox_nodev(void)
{
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount(sandbox, sandbox, NULL, MS_BIND, NULL) < 0)
		return false;
	if (mount(NULL, sandbox, NULL, MS_REMOUNT | MS_BIND | MS_NODEV | MS_NOSUID, NULL) < 0) {
		umount2(sandbox, MNT_DETACH);
		return false;
	}
	return true;
}

static void cleanup(void)
{
	if (!sandbox[0])
		return;
	umount2(sandbox, MNT_DETACH);
	imgfs_rm_rf(sandbox);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");
	struct stat st;

	fuzz_quiet();
	umask(022);
	snprintf(sandbox, sizeof(sandbox), "%s/imgfs-fuzz-apply-XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(sandbox))
		abort();
	if (!sandbox_nodev())
		drop_mknod();
	atexit(cleanup);
	put_file(sandbox, "hostfile", "a host file\n", 0644);
	mkdir_in(sandbox, "box", 0755, box);
	char victim[PATH_MAX], etc[PATH_MAX];
	mkdir_in(box, "victim", 0755, victim);
	put_file(victim, "hello", "hello\n", 0644);
	put_file(victim, "secret", "secret\n", 0400);
	mkdir_in(box, "dest-evil", 0755, NULL);
	mkdir_in(box, "lower", 0755, lower);
	mkdir_in(lower, "etc", 0750, etc);
	put_file(etc, "passwd", "root:x:0:0::/root:/bin/sh\n", 0644);
	mkdir_in(box, "dest", 0755, dest);
	before = snapshot();
	for (int i = 0; i < 2; i++)
		host_links[i] = stat(host_files[i], &st) == 0 ? st.st_nlink : 0;
	return 0;
}

struct input {
	const uint8_t *p;
	size_t len, off;
};

static ssize_t input_read(void *ctx, void *buf, size_t len)
{
	struct input *in = ctx;
	if (len > in->len - in->off)
		len = in->len - in->off;
	if (len > 4096) /* several reads: the stream is not handed over whole */
		len = 4096;
	memcpy(buf, in->p + in->off, len);
	in->off += len;
	return (ssize_t)len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = {data, size, 0};
	struct imgfs_unpack_source src = {.read = input_read, .ctx = &in};
	const char *const lowers[] = {lower, NULL};
	/* bounded so that one input stays fast */
	struct imgfs_unpack_opts opts = {
	    .lowers = lowers, .max_bytes = 8u << 20, .max_entries = 10000};
	struct imgfs_unpack_result res;
	struct imgfs_error err;
	struct stat st;

	if (mkdir(dest, 0755) < 0 && errno != EEXIST)
		abort();
	if (imgfs_unpack_layer(dest, &src, &opts, &res, &err) == 0) {
		(void)imgfs_unpack_fix_implied(dest, res.implied_dirs, lowers, &err);
		imgfs_unpack_result_destroy(&res);
	} else if (getenv("IMGFS_REPLAY_VERBOSE")) {
		fprintf(stderr, "  %s\n", err.msg);
	}
	FUZZ_CHECK(lstat(dest, &st) == 0 && S_ISDIR(st.st_mode));
	char *after = snapshot();
	if (strcmp(before, after)) {
		fprintf(stderr, "outside the root changed:\n--- before\n%s--- after\n%s", before,
			after);
		abort();
	}
	free(after);
	for (int i = 0; i < 2; i++)
		FUZZ_CHECK((stat(host_files[i], &st) == 0 ? st.st_nlink : 0) == host_links[i]);
	FUZZ_CHECK(imgfs_rm_rf(dest) == 0);
	return 0;
}
