/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Regression tests for hostile registries and stores (issue 9): header lines
 * parsed within their exact bounds (each line is placed right before a
 * PROT_NONE page, so a read past it faults even without ASan).
 */
#include "fetch/fetch_i.h"
#include "store/store.h"
#include "test.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* A copy of s (n bytes) ending exactly at a guard page. */
static char *guarded(const char *s, size_t n, void **map, size_t *maplen)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = ((n + pg - 1) / pg + 1) * pg;
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED)
		abort();
	if (mprotect(m + len - pg, pg, PROT_NONE) < 0)
		abort();
	*map = m;
	*maplen = len;
	memcpy(m + len - pg - n, s, n);
	return m + len - pg - n;
}

static void feed(struct imgfs_http_headers *h, const char *s, size_t n)
{
	void *map;
	size_t maplen;
	char *line = guarded(s, n, &map, &maplen);

	imgfs_http_header_line(h, line, n);
	munmap(map, maplen);
}

#define FEED(h, lit) feed(h, lit, sizeof(lit) - 1)

static void test_status_line_bounds(void)
{
	struct imgfs_http_headers h = {0};

	FEED(&h, "HTTP/1.1 200 OK\r\n");
	CHECK(h.status == 200);
	/* only white space after the first space: strtol ran past the line */
	FEED(&h, "HTTP/1.1   \r\n");
	CHECK(h.status == 0);
	FEED(&h, "HTTP/1.1 ");
	CHECK(h.status == 0);
	FEED(&h, "HTTP/1.1 20");
	CHECK(h.status == 0);
	FEED(&h, "HTTP/1.1 206");
	CHECK(h.status == 206);
	FEED(&h, "HTTP/1.1 2000 Too long\r\n");
	CHECK(h.status == 0);
	FEED(&h, "HTTP/2 404\r\n");
	CHECK(h.status == 404);
	FEED(&h, "HTTP/");
	CHECK(h.status == 0);
	imgfs_http_headers_reset(&h);
}

static void test_header_values_bounds(void)
{
	struct imgfs_http_headers h = {0};

	FEED(&h, "HTTP/1.1 206 Partial\r\n");
	FEED(&h, "Content-Range: bytes 0-9/10\r\n");
	CHECK_STR(h.content_range, "bytes 0-9/10");
	FEED(&h, "Content-Range:");
	CHECK_STR(h.content_range, "");
	FEED(&h, "Content-Range:   \t");
	CHECK_STR(h.content_range, "");
	FEED(&h, "docker-content-digest:sha256:abc");
	CHECK_STR(h.dcd, "sha256:abc");
	FEED(&h, "Location: /v2/x\r\n");
	CHECK_STR(h.location, "/v2/x");
	FEED(&h, "Retry-After: 12");
	CHECK(h.retry_after == 12);
	FEED(&h, "Retry-After: 99999999999999999999999");
	CHECK(h.retry_after == -1);
	FEED(&h, "Retry-After:");
	CHECK(h.retry_after == -1);
	FEED(&h, "WWW-Authenticate: Bearer realm=\"a\"\r\n");
	FEED(&h, "WWW-Authenticate: Basic");
	CHECK_STR(h.www_auth, "Bearer realm=\"a\", Basic");
	/* a NUL inside a value would silently cut it: the line is ignored */
	feed(&h, "Location: /a\0/b\r\n", 17);
	CHECK_STR(h.location, "/v2/x");
	/* a name that is a prefix of the line, no colon */
	FEED(&h, "Location");
	CHECK_STR(h.location, "/v2/x");
	/* a new response forgets the old headers */
	FEED(&h, "HTTP/1.1 200 OK\r\n");
	CHECK(h.location == NULL && h.content_range == NULL && h.www_auth == NULL);
	CHECK(h.retry_after == -1);
	imgfs_http_headers_reset(&h);
}

/* A tree depth levels deep under dir/name, a file and a symlink out at each
 * 1000th level. */
static int deep_tree(const char *dir, int depth, const char *outside)
{
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);

	for (int i = 0; fd >= 0 && i < depth; i++) {
		int n;
		if (mkdirat(fd, "d", 0755) < 0)
			return -1;
		if (i % 1000 == 0) {
			int f = openat(fd, "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
			if (f < 0 || symlinkat(outside, fd, "out") < 0)
				return -1;
			close(f);
		}
		n = openat(fd, "d", O_PATH | O_DIRECTORY | O_CLOEXEC);
		close(fd);
		fd = n;
	}
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

struct rm_job {
	const char *path;
	int r;
};

static void *rm_thread(void *arg)
{
	struct rm_job *j = arg;
	j->r = imgfs_rm_rf(j->path);
	return NULL;
}

/* 5,000 levels with 64 fds and a 256 KiB stack: the recursive version hit
 * EMFILE at 64 levels here (one fd per level) and needs a frame per level.
 * Symlinks to a directory outside are removed, never followed. */
static void test_rm_rf_deep(void)
{
	char tmpl[] = "/tmp/imgfs-test-rm.XXXXXX";
	char *t = mkdtemp(tmpl);
	struct rlimit old, lim;
	pthread_attr_t attr;
	pthread_t th;
	struct rm_job j = {0};
	struct stat st;

	CHECK(t != NULL);
	if (!t)
		return;
	char *tree = imgfs_xasprintf("%s/tree", t), *outside = imgfs_xasprintf("%s/outside", t);
	char *keep = imgfs_xasprintf("%s/keep", outside);
	CHECK(mkdir(tree, 0755) == 0 && mkdir(outside, 0755) == 0 && mkdir(keep, 0755) == 0);
	CHECK(deep_tree(tree, 5000, outside) == 0);
	getrlimit(RLIMIT_NOFILE, &old);
	lim = old;
	lim.rlim_cur = 64;
	CHECK(setrlimit(RLIMIT_NOFILE, &lim) == 0);
	j.path = tree;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 << 10);
	CHECK(pthread_create(&th, &attr, rm_thread, &j) == 0);
	pthread_join(th, NULL);
	setrlimit(RLIMIT_NOFILE, &old);
	CHECK(j.r == 0);
	CHECK(lstat(tree, &st) < 0 && errno == ENOENT);
	CHECK(stat(keep, &st) == 0 && S_ISDIR(st.st_mode));
	/* a file, a missing name, a symlink to a directory */
	CHECK(imgfs_rm_rf(tree) == 0);
	CHECK(symlinkat(outside, AT_FDCWD, tree) == 0);
	CHECK(imgfs_rm_rf(tree) == 0);
	CHECK(stat(keep, &st) == 0);
	CHECK(imgfs_rm_rf(t) == 0);
	CHECK(lstat(t, &st) < 0);
	free(tree);
	free(outside);
	free(keep);
}

/* Partial ingest data altered between runs (same length) is hashed again on
 * resume: the commit fails with a digest mismatch, nothing is committed, and
 * the next ingest starts from zero and commits the real content. */
static void test_ingest_resume_rehashes(void)
{
	char tmpl[] = "/tmp/imgfs-test-ingest.XXXXXX";
	char *root = mkdtemp(tmpl);
	struct imgfs_store *s = NULL;
	struct imgfs_error err = {0};
	struct imgfs_ingest *w = NULL;
	struct imgfs_digest d;
	static char data[300000];
	int fd;

	CHECK(root != NULL);
	if (!root)
		return;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)(i * 7 + i / 251);
	imgfs_digest_buf(IMGFS_SHA256, data, sizeof(data), &d);
	CHECK(imgfs_store_open(root, &s, &err) == 0);
	CHECK(s && imgfs_ingest_open(s, &d, sizeof(data), &w, &err) == 0 && w);
	if (!w)
		return;
	CHECK(imgfs_ingest_write(w, data, 200000, &err) == 0);
	char *path = imgfs_xstrdup(imgfs_ingest_data_path(w));
	imgfs_ingest_abort(w);
	imgfs_store_close(s);

	/* another user of the store flips bytes the first run hashed */
	fd = open(path, O_WRONLY | O_CLOEXEC);
	CHECK(fd >= 0 && pwrite(fd, "altered", 7, 1000) == 7);
	close(fd);

	CHECK(imgfs_store_open(root, &s, &err) == 0);
	w = NULL;
	CHECK(s && imgfs_ingest_open(s, &d, sizeof(data), &w, &err) == 0 && w);
	if (!w)
		return;
	CHECK(imgfs_ingest_offset(w) == 200000);
	CHECK(imgfs_ingest_write(w, data + 200000, sizeof(data) - 200000, &err) == 0);
	CHECK(imgfs_ingest_commit(w, NULL, &err) < 0 && err.code == EIO);
	CHECK(strstr(err.msg, "digest mismatch") != NULL);
	CHECK(!imgfs_store_has_blob(s, &d, sizeof(data)));

	/* the altered data is gone: a new ingest starts from zero and commits */
	w = NULL;
	memset(&err, 0, sizeof(err));
	CHECK(imgfs_ingest_open(s, &d, sizeof(data), &w, &err) == 0 && w);
	if (w) {
		CHECK(imgfs_ingest_offset(w) == 0);
		CHECK(imgfs_ingest_write(w, data, sizeof(data), &err) == 0);
		CHECK(imgfs_ingest_commit(w, NULL, &err) == 0);
	}
	CHECK(imgfs_store_has_blob(s, &d, sizeof(data)));
	imgfs_store_close(s);
	free(path);
	imgfs_rm_rf(root);
}

int main(void)
{
	RUN(test_status_line_bounds);
	RUN(test_header_values_bounds);
	RUN(test_rm_rf_deep);
	RUN(test_ingest_resume_rehashes);
	TEST_DONE();
}
