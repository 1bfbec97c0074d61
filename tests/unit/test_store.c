/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The store on a real filesystem and a real LMDB: open/reopen and schema
 * checks, images, blobs and ingests (verified commit, corruption, overflow,
 * resume, two writers), snapshots, gc, and two processes at once.
 */
#include "store/store.h"
#include "test.h"

#include <dirent.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define HA "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HB "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define HC "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

static char *new_root(void)
{
	char tmpl[] = "/tmp/imgfs-test-store-XXXXXX";
	if (!mkdtemp(tmpl))
		abort();
	return imgfs_xasprintf("%s/store", tmpl);
}

static void remove_root(char *root)
{
	char *parent = imgfs_xstrdup(root);
	*strrchr(parent, '/') = '\0';
	imgfs_rm_rf(parent);
	free(parent);
	free(root);
}

static struct imgfs_store *open_store(const char *root)
{
	struct imgfs_store *s = NULL;
	struct imgfs_error err = {0};
	if (imgfs_store_open(root, &s, &err) < 0)
		fprintf(stderr, "open %s: %s\n", root, err.msg);
	return s;
}

/* Does a/b (or a when b is NULL) exist? */
static bool exists(const char *a, const char *b)
{
	char *p = b ? imgfs_xasprintf("%s/%s", a, b) : imgfs_xstrdup(a);
	struct stat st;
	bool r = lstat(p, &st) == 0;
	free(p);
	return r;
}

static int count_entries(const char *root, const char *sub)
{
	char *p = imgfs_xasprintf("%s/%s", root, sub);
	DIR *d = opendir(p);
	struct dirent *de;
	int n = 0;
	while (d && (de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	if (d)
		closedir(d);
	free(p);
	return n;
}

static json_t *image_rec(const char *manifest, const char *config, const char *layer,
			 const char *chain)
{
	return json_pack("{s:s,s:{s:s,s:s,s:i},s:{s:s,s:s,s:i},s:s,s:[{s:s,s:s,s:i,s:s,s:s}],s:i}",
			 "name", "x", "target", "mediaType", IMGFS_MT_OCI_MANIFEST, "digest",
			 manifest, "size", 1, "config", "mediaType", IMGFS_MT_OCI_CONFIG, "digest",
			 config, "size", 1, "platform", "linux/amd64", "layers", "mediaType",
			 "application/vnd.oci.image.layer.v1.tar", "digest", layer, "size", 1,
			 "diffID", layer, "chainID", chain, "pulled", 1);
}

/* ---- open ------------------------------------------------------------------ */

static void test_open_layout(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	const char *dirs[] = {"blobs/sha256", "blobs/sha512", "ingest",
			      "snapshots",    "locks",	      "meta"};
	json_t *rec = NULL;
	struct imgfs_error err;

	CHECK(s != NULL);
	if (!s)
		return;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		CHECK(exists(root, dirs[i]));
	CHECK(exists(root, "meta/data.mdb"));
	CHECK(strstr(imgfs_store_root(s), "/store") != NULL);
	rec = image_rec(HA, HB, HC, HC);
	CHECK(imgfs_store_put_image(s, "docker.io/library/alpine:3.18", rec, &err) == 0);
	json_decref(rec);
	imgfs_store_close(s);

	/* Reopen: the record survived. */
	s = open_store(root);
	CHECK(s != NULL);
	rec = NULL;
	CHECK(s && imgfs_store_get_image(s, "docker.io/library/alpine:3.18", &rec, &err) == 0);
	CHECK(rec && json_is_object(json_object_get(rec, "target")));
	json_decref(rec);
	imgfs_store_close(s);
	remove_root(root);
}

/* Write info.schema = version straight into a closed store's LMDB. */
static void set_schema(const char *root, const char *version)
{
	char *meta = imgfs_xasprintf("%s/meta", root);
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {6, "schema"}, v = {strlen(version), (void *)version};

	CHECK(mdb_env_create(&env) == 0);
	mdb_env_set_maxdbs(env, 8);
	CHECK(mdb_env_open(env, meta, 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
	CHECK(mdb_dbi_open(txn, "info", 0, &dbi) == 0);
	CHECK(mdb_put(txn, dbi, &k, &v, 0) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
	free(meta);
}

static void test_newer_schema_refused(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err = {0};

	CHECK(s != NULL);
	imgfs_store_close(s);
	/* Pretend a newer imgfs wrote this store. */
	set_schema(root, "3");

	s = NULL;
	CHECK(imgfs_store_open(root, &s, &err) == -1);
	CHECK(s == NULL);
	CHECK(err.code == ENOTSUP);
	CHECK(strstr(err.msg, "schema version 3") && strstr(err.msg, "newer"));
	remove_root(root);
}

/* Schema 1 named upper dirs after the image; opening migrates each image's
 * to its key (name and digest), leaves the others for gc, and is done once. */
static void test_schema1_uppers_migrated(void)
{
	const char *name = "127.0.0.1:5000/lab/app:v1";
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err = {0};
	struct imgfs_gc_report rep;
	json_t *rec = image_rec(HA, HB, HC, HC);
	char *key, *old, *orphan;

	CHECK(s && imgfs_store_put_image(s, name, rec, &err) == 0);
	key = s ? imgfs_store_upper_dir(s, name, HA) : NULL;
	json_decref(rec);
	imgfs_store_close(s);
	set_schema(root, "1");
	old = imgfs_xasprintf("%s/uppers/127.0.0.1%%3A5000%%2Flab%%2Fapp%%3Av1/upper", root);
	orphan = imgfs_xasprintf("%s/uppers/127.0.0.1%%3A5000%%2Fgone%%3Av1/upper", root);
	CHECK(imgfs_mkdir_p(old, 0755, &err) == 0 && imgfs_mkdir_p(orphan, 0755, &err) == 0);
	{
		char *w = imgfs_xasprintf("%s/written", old);
		CHECK(imgfs_write_file_atomic(w, "w", 1, 0644, &err) == 0);
		free(w);
	}

	s = open_store(root);
	CHECK(s != NULL);
	CHECK(key && exists(key, "upper/written"));
	CHECK(key && exists(key, "image"));
	CHECK(!exists(old, NULL));
	CHECK(exists(orphan, NULL));
	CHECK(strlen(strrchr(key, '/') + 1) == 7 + 64 + 1 + 64);
	/* gc: the image's writes stay, the orphan's go */
	CHECK(s && imgfs_store_gc(s, NULL, NULL, &rep, &err) == 0);
	CHECK(rep.uppers_removed == 1);
	CHECK(key && exists(key, "upper/written"));
	CHECK(!exists(orphan, NULL));
	imgfs_store_close(s);
	/* a second open changes nothing */
	s = open_store(root);
	CHECK(s != NULL && key && exists(key, "upper/written"));
	imgfs_store_close(s);
	free(key);
	free(old);
	free(orphan);
	remove_root(root);
}

/* Writes belong to one name at one digest: another digest of the name has
 * another dir; rm removes them, or sets them aside while a mount holds
 * them; gc keeps what a mount holds; reset waits for a holder that goes away. */
static void test_uppers(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err = {0};
	struct imgfs_gc_report rep;
	char *a, *b, *lock;
	ino_t ino, ino2;
	bool kept;
	int fd;

	CHECK(s != NULL);
	if (!s)
		return;
	a = imgfs_store_upper_dir(s, "r/x:v1", HA);
	b = imgfs_store_upper_dir(s, "r/x:v1", HB);
	CHECK(a && b && strcmp(a, b) != 0);
	CHECK(imgfs_store_upper_dir(s, "r/x:v1", "sha256:../../etc") == NULL);
	CHECK(imgfs_store_upper_make(s, "r/x:v1", HA, &ino, &err) == 0);
	CHECK(imgfs_store_upper_make(s, "r/x:v1", HA, &ino2, &err) == 0 && ino == ino2);
	{
		char *d = imgfs_xasprintf("%s/upper/d", a);
		CHECK(imgfs_mkdir_p(d, 0755, &err) == 0);
		free(d);
	}

	/* a holder that lets go within the wait: reset goes through */
	lock = imgfs_xasprintf("%s/lock", a);
	fd = open(lock, O_RDWR | O_CREAT, 0600);
	CHECK(fd >= 0 && flock(fd, LOCK_SH) == 0);
	CHECK(imgfs_store_upper_reset(s, "r/x:v1", HA, 0, &err) < 0 && err.code == EBUSY);
	{
		pid_t pid = fork();
		if (pid == 0) {
			usleep(100 * 1000);
			_exit(0);
		}
		close(fd); /* the child's copy goes at its exit */
		CHECK(imgfs_store_upper_reset(s, "r/x:v1", HA, 2000, &err) == 0);
		waitpid(pid, NULL, 0);
	}
	CHECK(!exists(a, "upper/d"));

	/* rm with a holder: set aside, and no longer at its name */
	fd = open(lock, O_RDWR);
	CHECK(fd >= 0 && flock(fd, LOCK_SH) == 0);
	CHECK(imgfs_store_upper_remove(s, "r/x:v1", HA, 0, &kept, &err) == 0 && kept);
	CHECK(!exists(a, NULL));
	CHECK(imgfs_store_upper_make(s, "r/x:v1", HA, &ino2, &err) == 0 && ino2 != ino);
	/* gc keeps what is held, removes the rest (no image names either) */
	CHECK(imgfs_store_gc(s, NULL, NULL, &rep, &err) == 0);
	CHECK(rep.uppers_in_use == 1 && rep.uppers_removed == 1);
	CHECK(count_entries(root, "uppers") == 1);
	close(fd);
	CHECK(imgfs_store_gc(s, NULL, NULL, &rep, &err) == 0);
	CHECK(rep.uppers_in_use == 0 && rep.uppers_removed == 1);
	CHECK(count_entries(root, "uppers") == 0);
	/* rm without a holder deletes; without a dir there is nothing to do */
	CHECK(imgfs_store_upper_make(s, "r/x:v1", HB, &ino, &err) == 0);
	CHECK(imgfs_store_upper_remove(s, "r/x:v1", HB, 0, &kept, &err) == 0 && !kept);
	CHECK(!exists(b, NULL));
	CHECK(imgfs_store_upper_remove(s, "r/x:v1", HB, 0, &kept, &err) == 0 && !kept);
	CHECK(imgfs_store_upper_reset(s, "r/x:v1", HB, 0, &err) == 0);
	imgfs_store_close(s);
	free(a);
	free(b);
	free(lock);
	remove_root(root);
}

/* ---- images ----------------------------------------------------------------- */

struct list_ctx {
	int n;
	char names[8][64];
};

static int list_cb(void *ctx, const char *name, json_t *rec)
{
	struct list_ctx *c = ctx;
	if (c->n < 8)
		snprintf(c->names[c->n], sizeof(c->names[0]), "%s", name);
	c->n++;
	CHECK(json_is_object(rec));
	return 0;
}

static int stop_cb(void *ctx, const char *name, json_t *rec)
{
	(*(int *)ctx)++;
	return 1;
}

static void test_images(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err = {0};
	struct list_ctx lc = {0};
	json_t *rec = image_rec(HA, HB, HC, HC), *got = NULL;
	int stopped = 0;

	CHECK(s != NULL);
	if (!s)
		return;
	CHECK(imgfs_store_put_image(s, "docker.io/library/b:1", rec, &err) == 0);
	CHECK(imgfs_store_put_image(s, "docker.io/library/a:1", rec, &err) == 0);
	CHECK(imgfs_store_put_image(s, "ghcr.io/org/c@sha256:aa", rec, &err) == 0);
	/* Replacing an image keeps one record. */
	json_object_set_new(rec, "platform", json_string("linux/arm64"));
	CHECK(imgfs_store_put_image(s, "docker.io/library/b:1", rec, &err) == 0);
	CHECK(imgfs_store_get_image(s, "docker.io/library/b:1", &got, &err) == 0);
	CHECK(got && json_equal(got, rec));
	json_decref(got);

	CHECK(imgfs_store_list_images(s, list_cb, &lc, &err) == 0);
	CHECK(lc.n == 3);
	CHECK_STR(lc.names[0], "docker.io/library/a:1");
	CHECK_STR(lc.names[1], "docker.io/library/b:1");
	CHECK_STR(lc.names[2], "ghcr.io/org/c@sha256:aa");
	CHECK(imgfs_store_list_images(s, stop_cb, &stopped, &err) == 0);
	CHECK(stopped == 1);

	CHECK(imgfs_store_delete_image(s, "docker.io/library/a:1", &err) == 0);
	got = NULL;
	CHECK(imgfs_store_get_image(s, "docker.io/library/a:1", &got, &err) == -1 &&
	      err.code == ENOENT);
	CHECK(strstr(err.msg, "docker.io/library/a:1") != NULL);
	CHECK(imgfs_store_delete_image(s, "docker.io/library/a:1", &err) == -1 &&
	      err.code == ENOENT);
	/* Not an object; an over-long key. */
	got = json_integer(1);
	CHECK(imgfs_store_put_image(s, "x", got, &err) == -1 && err.code == EINVAL);
	json_decref(got);
	char longname[600];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	CHECK(imgfs_store_put_image(s, longname, rec, &err) == -1 && err.code == EINVAL);
	json_decref(rec);
	imgfs_store_close(s);
	remove_root(root);
}

/* ---- blobs ------------------------------------------------------------------ */

static void test_put_blob(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err = {0};
	struct imgfs_digest d, other;
	const char *doc = "{\"hello\":\"world\"}";
	char *buf = NULL, *path;
	size_t len = 0;
	struct stat st;

	CHECK(s != NULL);
	if (!s)
		return;
	imgfs_digest_buf(IMGFS_SHA256, doc, strlen(doc), &d);
	imgfs_digest_buf(IMGFS_SHA256, "other", 5, &other);
	CHECK(!imgfs_store_has_blob(s, &d, UINT64_MAX));
	/* Wrong bytes for the digest: refused, nothing written. */
	CHECK(imgfs_store_put_blob(s, &other, IMGFS_MT_OCI_CONFIG, doc, strlen(doc), &err) == -1);
	CHECK(err.code == EIO && strstr(err.msg, other.str) && strstr(err.msg, "digest mismatch"));
	CHECK(count_entries(root, "blobs/sha256") == 0);
	CHECK(count_entries(root, "ingest") == 0);

	CHECK(imgfs_store_put_blob(s, &d, IMGFS_MT_OCI_CONFIG, doc, strlen(doc), &err) == 0);
	CHECK(imgfs_store_has_blob(s, &d, UINT64_MAX));
	CHECK(imgfs_store_has_blob(s, &d, strlen(doc)));
	CHECK(!imgfs_store_has_blob(s, &d, strlen(doc) + 1));
	path = imgfs_store_blob_path(s, &d);
	CHECK(strstr(path, "/blobs/sha256/") && strstr(path, d.hex));
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0444);
	CHECK(imgfs_store_read_blob(s, &d, 1024, &buf, &len, &err) == 0);
	CHECK(buf && len == strlen(doc) && !memcmp(buf, doc, len));
	free(buf);
	/* Over the caller's limit. */
	CHECK(imgfs_store_read_blob(s, &d, 4, &buf, &len, &err) == -1 && err.code == EFBIG);
	CHECK(imgfs_store_read_blob(s, &other, 1024, &buf, &len, &err) == -1 && err.code == ENOENT);
	/* Present already: left as is. */
	CHECK(imgfs_store_put_blob(s, &d, IMGFS_MT_OCI_CONFIG, doc, strlen(doc), &err) == 0);
	CHECK(count_entries(root, "ingest") == 0);
	free(path);
	imgfs_store_close(s);
	remove_root(root);
}

static void fill(char *buf, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245 + 12345;
		buf[i] = (char)(seed >> 16);
	}
}

static void test_ingest_commit(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err = {0};
	struct imgfs_ingest *w = NULL;
	struct imgfs_digest d;
	static char data[300000];
	char *path, *buf = NULL;
	size_t len;

	CHECK(s != NULL);
	if (!s)
		return;
	fill(data, sizeof(data), 1);
	imgfs_digest_buf(IMGFS_SHA256, data, sizeof(data), &d);
	CHECK(imgfs_ingest_open(s, &d, sizeof(data), &w, &err) == 0 && w);
	if (!w)
		return;
	CHECK(imgfs_ingest_offset(w) == 0);
	CHECK(strstr(imgfs_ingest_data_path(w), "/ingest/sha256-") != NULL);
	for (size_t off = 0; off < sizeof(data); off += 7000) {
		size_t n = sizeof(data) - off < 7000 ? sizeof(data) - off : 7000;
		CHECK(imgfs_ingest_write(w, data + off, n, &err) == 0);
	}
	CHECK(imgfs_ingest_offset(w) == sizeof(data));
	/* Not visible before commit. */
	CHECK(!imgfs_store_has_blob(s, &d, UINT64_MAX));
	CHECK(imgfs_ingest_commit(w, "application/vnd.oci.image.layer.v1.tar", &err) == 0);
	CHECK(imgfs_store_has_blob(s, &d, sizeof(data)));
	path = imgfs_store_blob_path(s, &d);
	CHECK(imgfs_read_file(path, sizeof(data), &buf, &len, &err) == 0);
	CHECK(buf && len == sizeof(data) && !memcmp(buf, data, len));
	free(buf);
	free(path);
	CHECK(count_entries(root, "ingest") == 0);
	/* Opening again: the blob is there, nothing to do. */
	w = (struct imgfs_ingest *)1;
	CHECK(imgfs_ingest_open(s, &d, sizeof(data), &w, &err) == 0 && w == NULL);
	/* Same digest, different size: an error, not a silent success. */
	CHECK(imgfs_ingest_open(s, &d, sizeof(data) + 1, &w, &err) == -1 && err.code == EIO);
	imgfs_store_close(s);
	remove_root(root);
}

static void test_ingest_sha512(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err = {0};
	struct imgfs_ingest *w = NULL;
	struct imgfs_digest d;

	CHECK(s != NULL);
	if (!s)
		return;
	imgfs_digest_buf(IMGFS_SHA512, "abc", 3, &d);
	CHECK(imgfs_ingest_open(s, &d, 3, &w, &err) == 0 && w);
	CHECK(w && imgfs_ingest_write(w, "abc", 3, &err) == 0);
	CHECK(w && imgfs_ingest_commit(w, NULL, &err) == 0);
	CHECK(imgfs_store_has_blob(s, &d, 3));
	CHECK(count_entries(root, "blobs/sha512") == 1);
	imgfs_store_close(s);
	remove_root(root);
}

static void test_ingest_corrupt(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err = {0};
	struct imgfs_ingest *w = NULL;
	struct imgfs_digest d;
	char good[1000], bad[1000];

	CHECK(s != NULL);
	if (!s)
		return;
	fill(good, sizeof(good), 2);
	memcpy(bad, good, sizeof(bad));
	bad[500] ^= 1;
	imgfs_digest_buf(IMGFS_SHA256, good, sizeof(good), &d);
	CHECK(imgfs_ingest_open(s, &d, sizeof(good), &w, &err) == 0 && w);
	if (!w)
		return;
	CHECK(imgfs_ingest_write(w, bad, sizeof(bad), &err) == 0);
	CHECK(imgfs_ingest_commit(w, NULL, &err) == -1);
	CHECK(err.code == EIO);
	CHECK(strstr(err.msg, d.str) && strstr(err.msg, "digest mismatch: got sha256:"));
	/* Nothing in blobs/, and the bad data is gone. */
	CHECK(count_entries(root, "blobs/sha256") == 0);
	CHECK(!imgfs_store_has_blob(s, &d, UINT64_MAX));
	w = NULL;
	CHECK(imgfs_ingest_open(s, &d, sizeof(good), &w, &err) == 0 && w);
	CHECK(w && imgfs_ingest_offset(w) == 0);
	imgfs_ingest_abort(w);
	imgfs_store_close(s);
	remove_root(root);
}

static void test_ingest_overflow_and_short(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err = {0};
	struct imgfs_ingest *w = NULL;
	struct imgfs_digest d;
	char data[100];

	CHECK(s != NULL);
	if (!s)
		return;
	fill(data, sizeof(data), 3);
	imgfs_digest_buf(IMGFS_SHA256, data, 60, &d);
	CHECK(imgfs_ingest_open(s, &d, 60, &w, &err) == 0 && w);
	if (!w)
		return;
	CHECK(imgfs_ingest_write(w, data, 50, &err) == 0);
	/* 50 + 11 > 60: refused, and nothing of it is kept. */
	CHECK(imgfs_ingest_write(w, data + 50, 11, &err) == -1 && err.code == EIO);
	CHECK(strstr(err.msg, "60 bytes") != NULL);
	CHECK(imgfs_ingest_offset(w) == 50);
	/* Commit while short: a size error; the data stays for a resume. */
	CHECK(imgfs_ingest_commit(w, NULL, &err) == -1 && err.code == EIO);
	CHECK(strstr(err.msg, "size mismatch") != NULL);
	CHECK(count_entries(root, "blobs/sha256") == 0);
	w = NULL;
	CHECK(imgfs_ingest_open(s, &d, 60, &w, &err) == 0 && w);
	CHECK(w && imgfs_ingest_offset(w) == 50);
	CHECK(w && imgfs_ingest_write(w, data + 50, 10, &err) == 0);
	CHECK(w && imgfs_ingest_commit(w, NULL, &err) == 0);
	CHECK(imgfs_store_has_blob(s, &d, 60));
	/* A size that can not exist. */
	CHECK(imgfs_ingest_open(s, &d, UINT64_MAX, &w, &err) == -1 && err.code == EINVAL);
	imgfs_store_close(s);
	remove_root(root);
}

static void test_ingest_resume_and_reset(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err = {0};
	struct imgfs_ingest *w = NULL;
	struct imgfs_digest d;
	static char data[200000];

	CHECK(s != NULL);
	if (!s)
		return;
	fill(data, sizeof(data), 4);
	imgfs_digest_buf(IMGFS_SHA256, data, sizeof(data), &d);
	CHECK(imgfs_ingest_open(s, &d, sizeof(data), &w, &err) == 0 && w);
	if (!w)
		return;
	CHECK(imgfs_ingest_write(w, data, 123457, &err) == 0);
	imgfs_ingest_abort(w);
	imgfs_store_close(s);

	/* Another "process" (a fresh handle) resumes at the offset; the hash
	 * state rebuilt from the file gives the right digest at the end. */
	s = open_store(root);
	w = NULL;
	CHECK(s && imgfs_ingest_open(s, &d, sizeof(data), &w, &err) == 0 && w);
	if (!w)
		return;
	CHECK(imgfs_ingest_offset(w) == 123457);
	CHECK(imgfs_ingest_write(w, data + 123457, 1000, &err) == 0);
	/* The server ignored Range: start over. */
	CHECK(imgfs_ingest_reset(w, &err) == 0);
	CHECK(imgfs_ingest_offset(w) == 0);
	CHECK(imgfs_ingest_write(w, data, sizeof(data), &err) == 0);
	CHECK(imgfs_ingest_commit(w, NULL, &err) == 0);
	CHECK(imgfs_store_has_blob(s, &d, sizeof(data)));
	imgfs_store_close(s);
	remove_root(root);
}

struct two_writers {
	struct imgfs_store *s;
	struct imgfs_digest d;
	char data[4096];
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool a_open;
	double a_commit_time, b_open_time;
	bool b_got_null;
	int a_rc, b_rc;
};

static void *writer_a(void *arg)
{
	struct two_writers *t = arg;
	struct imgfs_ingest *w = NULL;
	struct imgfs_error err;

	t->a_rc = imgfs_ingest_open(t->s, &t->d, sizeof(t->data), &w, &err);
	pthread_mutex_lock(&t->mu);
	t->a_open = true;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	if (t->a_rc < 0 || !w)
		return NULL;
	usleep(300000); /* B must be waiting on the lock meanwhile */
	t->a_rc |= imgfs_ingest_write(w, t->data, sizeof(t->data), &err);
	t->a_commit_time = imgfs_now();
	t->a_rc |= imgfs_ingest_commit(w, NULL, &err);
	return NULL;
}

static void *writer_b(void *arg)
{
	struct two_writers *t = arg;
	struct imgfs_ingest *w = NULL;
	struct imgfs_error err;

	pthread_mutex_lock(&t->mu);
	while (!t->a_open)
		pthread_cond_wait(&t->cv, &t->mu);
	pthread_mutex_unlock(&t->mu);
	t->b_rc = imgfs_ingest_open(t->s, &t->d, sizeof(t->data), &w, &err);
	t->b_open_time = imgfs_now();
	t->b_got_null = w == NULL;
	imgfs_ingest_abort(w);
	return NULL;
}

static void test_ingest_two_threads(void)
{
	char *root = new_root();
	struct two_writers *t = imgfs_xmalloc(sizeof(*t));
	pthread_t a, b;

	t->s = open_store(root);
	CHECK(t->s != NULL);
	if (!t->s)
		return;
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	fill(t->data, sizeof(t->data), 5);
	imgfs_digest_buf(IMGFS_SHA256, t->data, sizeof(t->data), &t->d);
	pthread_create(&a, NULL, writer_a, t);
	pthread_create(&b, NULL, writer_b, t);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	CHECK(t->a_rc == 0 && t->b_rc == 0);
	/* B got the lock only after A committed, and then found the blob. */
	CHECK(t->b_open_time >= t->a_commit_time);
	CHECK(t->b_got_null);
	CHECK(imgfs_store_has_blob(t->s, &t->d, sizeof(t->data)));
	CHECK(count_entries(root, "ingest") == 0);
	imgfs_store_close(t->s);
	free(t);
	remove_root(root);
}

/* ---- snapshots -------------------------------------------------------------- */

static void touch(const char *dir, const char *name, const char *content)
{
	char *p = imgfs_xasprintf("%s/%s", dir, name);
	struct imgfs_error err;
	CHECK(imgfs_write_file_atomic(p, content, strlen(content), 0644, &err) == 0);
	free(p);
}

static void digest_of(const char *s, struct imgfs_digest *d)
{
	imgfs_digest_buf(IMGFS_SHA256, s, strlen(s), d);
}

static void test_snapshots(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err = {0};
	struct imgfs_digest c1, c2, diff;
	char *dir = NULL, *final = NULL, *again = NULL, *looked = NULL, *dir2 = NULL,
	     *final2 = NULL;
	char *lockname;
	int lk = -1;

	CHECK(s != NULL);
	if (!s)
		return;
	digest_of("chain1", &c1);
	digest_of("chain2", &c2);
	digest_of("diff", &diff);
	CHECK(imgfs_store_snapshot_dir(s, &c1, &looked, &err) == -1 && err.code == ENOENT);
	CHECK(imgfs_store_snapshot_lock(s, &c1, &lk, &err) == 0 && lk >= 0);
	lockname = imgfs_xasprintf("locks/chain-%s.lock", c1.hex);
	CHECK(exists(root, lockname));
	free(lockname);
	CHECK(imgfs_store_snapshot_prepare(s, &dir, &err) == 0 && dir);
	if (!dir)
		return;
	CHECK(strstr(dir, "/snapshots/tmp-") && !strcmp(dir + strlen(dir) - 3, "/fs"));
	touch(dir, "hello", "world");
	CHECK(imgfs_store_snapshot_commit(s, dir, &c1, NULL, &diff, 5, &final, &err) == 0);
	imgfs_store_snapshot_unlock(lk);
	CHECK(final && exists(final, "hello"));
	CHECK(final && !strstr(final, "tmp-"));
	CHECK(imgfs_store_snapshot_dir(s, &c1, &looked, &err) == 0);
	CHECK_STR(looked, final);
	CHECK(count_entries(root, "snapshots") == 1);

	/* Second unpack of the same chain: ours is discarded, theirs returned. */
	CHECK(imgfs_store_snapshot_prepare(s, &dir2, &err) == 0);
	touch(dir2, "other", "x");
	CHECK(imgfs_store_snapshot_commit(s, dir2, &c1, NULL, &diff, 1, &again, &err) == 0);
	CHECK_STR(again, final);
	CHECK(count_entries(root, "snapshots") == 1);
	CHECK(again && !exists(again, "other"));

	/* A child gets the next id. */
	free(dir2);
	dir2 = NULL;
	CHECK(imgfs_store_snapshot_prepare(s, &dir2, &err) == 0);
	CHECK(imgfs_store_snapshot_commit(s, dir2, &c2, &c1, &diff, 0, &final2, &err) == 0);
	CHECK(final2 && strcmp(final2, final));
	CHECK(count_entries(root, "snapshots") == 2);

	/* Not a prepared dir: refused, nothing touched. */
	CHECK(imgfs_store_snapshot_commit(s, final, &c2, NULL, &diff, 0, NULL, &err) == -1 &&
	      err.code == EINVAL);
	/* Discard removes the whole tmp dir. */
	free(dir);
	dir = NULL;
	CHECK(imgfs_store_snapshot_prepare(s, &dir, &err) == 0);
	imgfs_store_snapshot_discard(s, dir);
	CHECK(count_entries(root, "snapshots") == 2);

	free(dir);
	free(dir2);
	free(final);
	free(final2);
	free(again);
	free(looked);
	imgfs_store_close(s);

	/* Ids persist across reopen: a new snapshot does not reuse one. */
	s = open_store(root);
	dir = final = NULL;
	digest_of("chain3", &c2);
	CHECK(s && imgfs_store_snapshot_prepare(s, &dir, &err) == 0);
	CHECK(s && imgfs_store_snapshot_commit(s, dir, &c2, NULL, &diff, 0, &final, &err) == 0);
	CHECK(count_entries(root, "snapshots") == 3);
	free(dir);
	free(final);
	imgfs_store_close(s);
	remove_root(root);
}

struct chain_lock_test {
	struct imgfs_store *s;
	struct imgfs_digest chain;
	double unlocked_at, got_at;
};

static void *chain_locker(void *arg)
{
	struct chain_lock_test *t = arg;
	struct imgfs_error err;
	int fd = -1;
	if (imgfs_store_snapshot_lock(t->s, &t->chain, &fd, &err) == 0) {
		t->got_at = imgfs_now();
		imgfs_store_snapshot_unlock(fd);
	}
	return NULL;
}

static void test_chain_lock_threads(void)
{
	char *root = new_root();
	struct chain_lock_test t = {.s = open_store(root)};
	struct imgfs_error err;
	pthread_t th;
	int fd = -1;

	CHECK(t.s != NULL);
	if (!t.s)
		return;
	digest_of("chain", &t.chain);
	CHECK(imgfs_store_snapshot_lock(t.s, &t.chain, &fd, &err) == 0);
	pthread_create(&th, NULL, chain_locker, &t);
	usleep(200000);
	t.unlocked_at = imgfs_now();
	imgfs_store_snapshot_unlock(fd);
	pthread_join(th, NULL);
	CHECK(t.got_at > 0 && t.got_at >= t.unlocked_at);
	imgfs_store_close(t.s);
	remove_root(root);
}

/* ---- gc ---------------------------------------------------------------------- */

static int gc_seen;
static void gc_cb(void *ctx, const char *what, uint64_t bytes)
{
	gc_seen++;
}

static void put(struct imgfs_store *s, const char *content, struct imgfs_digest *d)
{
	struct imgfs_error err;
	digest_of(content, d);
	CHECK(imgfs_store_put_blob(s, d, NULL, content, strlen(content), &err) == 0);
}

static void commit_snap(struct imgfs_store *s, const struct imgfs_digest *chain,
			const struct imgfs_digest *parent, char **final)
{
	struct imgfs_error err;
	char *dir = NULL;
	CHECK(imgfs_store_snapshot_prepare(s, &dir, &err) == 0);
	touch(dir, "f", "0123456789");
	CHECK(imgfs_store_snapshot_commit(s, dir, chain, parent, chain, 10, final, &err) == 0);
	free(dir);
}

static void test_gc(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err = {0};
	struct imgfs_gc_report rep;
	struct imgfs_digest m, c, l, junk, c1, c2, c3;
	struct imgfs_ingest *w = NULL;
	char *f1 = NULL, *f2 = NULL, *f3 = NULL, *live = NULL, *stale;
	json_t *rec;

	CHECK(s != NULL);
	if (!s)
		return;
	put(s, "manifest", &m);
	put(s, "config", &c);
	put(s, "layer", &l);
	put(s, "junk", &junk);
	digest_of("c1", &c1);
	digest_of("c2", &c2);
	digest_of("c3", &c3);
	commit_snap(s, &c1, NULL, &f1);
	commit_snap(s, &c2, &c1, &f2);
	commit_snap(s, &c3, NULL, &f3);
	/* The image references c2 only: its parent c1 must be kept too. */
	rec = image_rec(m.str, c.str, l.str, c2.str);
	CHECK(imgfs_store_put_image(s, "img:1", rec, &err) == 0);
	json_decref(rec);
	/* An abandoned ingest, an abandoned unpack, a live unpack. */
	digest_of("partial", &junk);
	CHECK(imgfs_ingest_open(s, &junk, 100, &w, &err) == 0 && w);
	CHECK(w && imgfs_ingest_write(w, "part", 4, &err) == 0);
	imgfs_ingest_abort(w);
	stale = imgfs_xasprintf("%s/snapshots/tmp-crashed", root);
	CHECK(mkdir(stale, 0755) == 0);
	CHECK(imgfs_store_snapshot_prepare(s, &live, &err) == 0);

	gc_seen = 0;
	CHECK(imgfs_store_gc(s, gc_cb, NULL, &rep, &err) == 0);
	CHECK(rep.blobs_removed == 1);
	CHECK(rep.blob_bytes == 4);
	CHECK(rep.snapshots_removed == 1);
	CHECK(rep.snapshot_bytes > 0);
	CHECK(rep.ingests_removed == 1);
	CHECK(rep.tmp_removed == 1);
	CHECK(gc_seen == 4);
	CHECK(imgfs_store_has_blob(s, &m, UINT64_MAX) && imgfs_store_has_blob(s, &c, UINT64_MAX) &&
	      imgfs_store_has_blob(s, &l, UINT64_MAX));
	digest_of("junk", &junk);
	CHECK(!imgfs_store_has_blob(s, &junk, UINT64_MAX));
	CHECK(f1 && exists(f1, "f") && f2 && exists(f2, "f"));
	CHECK(f3 && !exists(f3, NULL));
	char *d3 = NULL;
	CHECK(imgfs_store_snapshot_dir(s, &c3, &d3, &err) == -1 && err.code == ENOENT);
	CHECK(imgfs_store_snapshot_dir(s, &c1, &d3, &err) == 0);
	CHECK_STR(d3, f1);
	free(d3);
	CHECK(imgfs_store_snapshot_dir(s, &c2, &d3, &err) == 0);
	CHECK_STR(d3, f2);
	free(d3);
	CHECK(!exists(stale, NULL));
	CHECK(live && exists(live, NULL));
	CHECK(count_entries(root, "ingest") == 0);

	/* Delete the image: everything goes but the live unpack. */
	CHECK(imgfs_store_delete_image(s, "img:1", &err) == 0);
	CHECK(imgfs_store_gc(s, NULL, NULL, &rep, &err) == 0);
	CHECK(rep.blobs_removed == 3 && rep.snapshots_removed == 2 && rep.tmp_removed == 0);
	CHECK(count_entries(root, "blobs/sha256") == 0);
	CHECK(count_entries(root, "snapshots") == 1);
	imgfs_store_snapshot_discard(s, live);
	CHECK(count_entries(root, "snapshots") == 0);

	free(f1);
	free(f2);
	free(f3);
	free(live);
	free(stale);
	imgfs_store_close(s);
	remove_root(root);
}

/* ---- two processes -------------------------------------------------------------- */

/* Both processes download the same 2 MB blob: one writes it, the other waits
 * and finds it committed (or resumes the first one's data). */
static int ingest_big(struct imgfs_store *s)
{
	static char data[2 << 20];
	struct imgfs_ingest *w = NULL;
	struct imgfs_error err;
	struct imgfs_digest d;

	fill(data, sizeof(data), 99);
	imgfs_digest_buf(IMGFS_SHA256, data, sizeof(data), &d);
	if (imgfs_ingest_open(s, &d, sizeof(data), &w, &err) < 0)
		return -1;
	if (!w)
		return 0;
	for (size_t off = imgfs_ingest_offset(w); off < sizeof(data); off += 65536) {
		usleep(1000);
		if (imgfs_ingest_write(w, data + off, 65536, &err) < 0) {
			imgfs_ingest_abort(w);
			return -1;
		}
	}
	return imgfs_ingest_commit(w, NULL, &err);
}

static int worker(const char *root, const char *prefix, int n)
{
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err;
	struct imgfs_digest shared, own;
	int bad = 0;

	if (!s)
		return 1;
	bad += ingest_big(s) < 0;
	for (int i = 0; i < n; i++) {
		char name[64], content[64];
		json_t *rec;
		snprintf(name, sizeof(name), "%s-%03d", prefix, i);
		snprintf(content, sizeof(content), "%s blob %d", prefix, i);
		digest_of(content, &own);
		digest_of("shared blob", &shared);
		rec = image_rec(own.str, shared.str, own.str, own.str);
		if (imgfs_store_lock_shared(s, &err) < 0)
			bad++;
		if (imgfs_store_put_blob(s, &own, NULL, content, strlen(content), &err) < 0 ||
		    imgfs_store_put_blob(s, &shared, NULL, "shared blob", 11, &err) < 0 ||
		    imgfs_store_put_image(s, name, rec, &err) < 0) {
			fprintf(stderr, "%s: %s\n", name, err.msg);
			bad++;
		}
		imgfs_store_unlock(s);
		json_decref(rec);
	}
	imgfs_store_close(s);
	return bad ? 1 : 0;
}

static int count_cb(void *ctx, const char *name, json_t *rec)
{
	json_t *t = json_object_get(json_object_get(rec, "target"), "digest");
	if (json_is_string(t))
		(*(int *)ctx)++;
	return 0;
}

static void test_two_processes(void)
{
	char *root = new_root();
	struct imgfs_store *s = open_store(root);
	struct imgfs_error err;
	struct imgfs_gc_report rep;
	int status = -1, n = 0, r;
	pid_t pid;

	CHECK(s != NULL);
	imgfs_store_close(s); /* never share an LMDB handle across fork */
	pid = fork();
	if (pid == 0)
		_exit(worker(root, "child", 150));
	r = worker(root, "parent", 150);
	CHECK(r == 0);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	s = open_store(root);
	CHECK(s && imgfs_store_list_images(s, count_cb, &n, &err) == 0);
	CHECK(n == 300);
	/* The shared 2 MB blob is referenced by no image: gc takes it. */
	CHECK(count_entries(root, "blobs/sha256") == 302);
	CHECK(count_entries(root, "ingest") == 0);
	/* Everything is referenced: gc removes nothing. */
	CHECK(s && imgfs_store_gc(s, NULL, NULL, &rep, &err) == 0);
	CHECK(rep.blobs_removed == 1 && rep.blob_bytes == 2 << 20);
	CHECK(count_entries(root, "blobs/sha256") == 301);
	imgfs_store_close(s);
	remove_root(root);
}

int main(void)
{
	RUN(test_open_layout);
	RUN(test_newer_schema_refused);
	RUN(test_schema1_uppers_migrated);
	RUN(test_uppers);
	RUN(test_images);
	RUN(test_put_blob);
	RUN(test_ingest_commit);
	RUN(test_ingest_sha512);
	RUN(test_ingest_corrupt);
	RUN(test_ingest_overflow_and_short);
	RUN(test_ingest_resume_and_reset);
	RUN(test_ingest_two_threads);
	RUN(test_snapshots);
	RUN(test_chain_lock_threads);
	RUN(test_gc);
	RUN(test_two_processes);
	TEST_DONE();
}
