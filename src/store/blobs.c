/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The content store: committed blobs (blobs/<alg>/<hex>, read-only) and
 * ingests (ingest/<alg>-<hex>/{lock,data}) that are hashed as they stream and
 * renamed into blobs/ only after their size and digest are checked. Nothing
 * unverified is ever written under blobs/.
 */
#include "store_i.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

/*
 * The ingest's running hash (OpenSSL's low-level SHA256_CTX/SHA512_CTX,
 * deprecated API confined to this section). A resumed ingest hashes the data
 * on disk again from its first byte: a saved hash state would vouch for bytes
 * it never saw (the data file altered between runs would then be committed
 * under a digest it does not have). Reading local data again is cheap next to
 * downloading it.
 */
struct ihash {
	enum imgfs_digest_alg alg;
	union {
		SHA256_CTX s256;
		SHA512_CTX s512;
	} u;
};

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static void ihash_init(struct ihash *h, enum imgfs_digest_alg alg)
{
	memset(h, 0, sizeof(*h));
	h->alg = alg;
	if (alg == IMGFS_SHA256)
		SHA256_Init(&h->u.s256);
	else
		SHA512_Init(&h->u.s512);
}

static void ihash_update(struct ihash *h, const void *buf, size_t len)
{
	if (h->alg == IMGFS_SHA256)
		SHA256_Update(&h->u.s256, buf, len);
	else
		SHA512_Update(&h->u.s512, buf, len);
}

static void ihash_final(struct ihash *h, struct imgfs_digest *out)
{
	unsigned char md[SHA512_DIGEST_LENGTH];
	unsigned int n = h->alg == IMGFS_SHA256 ? SHA256_DIGEST_LENGTH : SHA512_DIGEST_LENGTH;
	size_t off;
	if (h->alg == IMGFS_SHA256)
		SHA256_Final(md, &h->u.s256);
	else
		SHA512_Final(md, &h->u.s512);
	off = (size_t)snprintf(out->str, sizeof(out->str), "%s:", imgfs_digest_alg_name(h->alg));
	for (unsigned int i = 0; i < n; i++)
		snprintf(out->str + off + 2 * i, 3, "%02x", md[i]);
	out->alg = h->alg;
	out->hex = out->str + off;
}
#pragma GCC diagnostic pop

struct imgfs_ingest {
	struct imgfs_store *s;
	struct imgfs_digest expected;
	uint64_t expected_size;
	char *dir;	 /* <root>/ingest/<alg>-<hex> */
	char *lock_path; /* dir/lock */
	char *data_path; /* dir/data */
	int lockfd;	 /* flock(LOCK_EX) held while w lives */
	int datafd;
	char *state_path; /* dir/hashstate: left by older versions, removed */
	uint64_t offset;
	struct ihash h;
};

char *imgfs_store_blob_path(const struct imgfs_store *s, const struct imgfs_digest *d)
{
	return imgfs_xasprintf("%s/blobs/%s/%s", s->root, imgfs_digest_alg_name(d->alg), d->hex);
}

static char *blob_dir(const struct imgfs_store *s, const struct imgfs_digest *d)
{
	return imgfs_xasprintf("%s/blobs/%s", s->root, imgfs_digest_alg_name(d->alg));
}

/* 1: present (size in *size), 0: absent, -1: error in err. */
static int blob_stat(struct imgfs_store *s, const struct imgfs_digest *d, uint64_t *size,
		     struct imgfs_error *err)
{
	_cleanup_free_ char *path = imgfs_store_blob_path(s, d);
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return imgfs_error_errno(err, errno, "blob %s", d->str);
	}
	if (!S_ISREG(st.st_mode))
		return imgfs_error_set(err, EIO, "blob %s: %s is not a regular file", d->str, path);
	*size = (uint64_t)st.st_size;
	return 1;
}

bool imgfs_store_has_blob(struct imgfs_store *s, const struct imgfs_digest *d, uint64_t size)
{
	struct imgfs_error err;
	uint64_t have = 0;

	if (blob_stat(s, d, &have, &err) != 1)
		return false;
	return size == UINT64_MAX || size == have;
}

int imgfs_store_read_blob(struct imgfs_store *s, const struct imgfs_digest *d, size_t max,
			  char **buf, size_t *len, struct imgfs_error *err)
{
	_cleanup_free_ char *path = imgfs_store_blob_path(s, d);
	_cleanup_free_ char *data = NULL;
	struct imgfs_digest got;
	size_t n = 0;

	if (access(path, F_OK) < 0 && errno == ENOENT)
		return imgfs_error_set(err, ENOENT, "blob %s: not in store", d->str);
	if (imgfs_read_file(path, max, &data, &n, err) < 0)
		return imgfs_error_wrap(err, "blob %s", d->str);
	/* Blobs read whole are small (documents); check them again. */
	imgfs_digest_buf(d->alg, data, n, &got);
	if (!imgfs_digest_equal(&got, d))
		return imgfs_error_set(err, EIO, "blob %s: digest mismatch in store: got %s",
				       d->str, got.str);
	*buf = steal_pointer(&data);
	if (len)
		*len = n;
	return 0;
}

/* Does "blobs" hold a record for d? */
static bool blob_has_record(struct imgfs_store *s, const struct imgfs_digest *d)
{
	_cleanup_txn_ MDB_txn *txn = NULL;
	_cleanup_json_ json_t *rec = NULL;
	struct imgfs_error err;

	if (store_txn_begin(s, false, &txn, &err) < 0)
		return false;
	return store_get_json(txn, s->db_blobs, d->str, &rec, &err) == 0;
}

char *imgfs_store_blob_media_type(struct imgfs_store *s, const struct imgfs_digest *d)
{
	_cleanup_txn_ MDB_txn *txn = NULL;
	_cleanup_json_ json_t *rec = NULL;
	struct imgfs_error err;
	const char *mt;

	if (store_txn_begin(s, false, &txn, &err) < 0 ||
	    store_get_json(txn, s->db_blobs, d->str, &rec, &err) < 0)
		return NULL;
	mt = json_string_value(json_object_get(rec, "mediaType"));
	return mt ? imgfs_xstrdup(mt) : NULL;
}

/* Rename a verified, fsync'd file into blobs/ and make that durable. */
static int blob_install(struct imgfs_store *s, const char *from, const struct imgfs_digest *d,
			struct imgfs_error *err)
{
	_cleanup_free_ char *path = imgfs_store_blob_path(s, d);
	_cleanup_free_ char *dir = blob_dir(s, d);
	int r;

	if (rename(from, path) < 0)
		return imgfs_error_errno(err, errno, "blob %s: rename into %s", d->str, dir);
	r = store_fsync_dir(dir);
	if (r < 0)
		return imgfs_error_errno(err, -r, "blob %s: fsync %s", d->str, dir);
	return 0;
}

int imgfs_store_put_blob(struct imgfs_store *s, const struct imgfs_digest *d,
			 const char *media_type, const void *data, size_t len,
			 struct imgfs_error *err)
{
	_cleanup_free_ char *tmp = imgfs_xasprintf("%s/ingest/put-XXXXXX", s->root);
	_cleanup_close_ int fd = -1;
	struct imgfs_digest got;
	uint64_t have;
	int r;

	imgfs_digest_buf(d->alg, data, len, &got);
	if (!imgfs_digest_equal(&got, d))
		return imgfs_error_set(err, EIO, "blob %s: digest mismatch: got %s", d->str,
				       got.str);
	r = blob_stat(s, d, &have, err);
	if (r < 0)
		return -1;
	if (r == 1) {
		/* Present (verified when it was committed); adopt it if its record is missing. */
		if (have != len)
			return imgfs_error_set(err, EIO,
					       "blob %s: store holds %llu bytes, expected %zu",
					       d->str, (unsigned long long)have, len);
		if (!blob_has_record(s, d))
			return store_record_blob(s, d, len, media_type, err);
		return 0;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return imgfs_error_errno(err, errno, "blob %s: create %s", d->str, tmp);
	/* Held while we write so gc leaves the file alone. */
	flock(fd, LOCK_EX);
	r = imgfs_write_all(fd, data, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && fchmod(fd, 0444) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return imgfs_error_errno(err, -r, "blob %s: write %s", d->str, tmp);
	}
	if (blob_install(s, tmp, d, err) < 0) {
		unlink(tmp);
		return -1;
	}
	return store_record_blob(s, d, len, media_type, err);
}

/* ---- ingest --------------------------------------------------------------- */

static void ingest_free(struct imgfs_ingest *w)
{
	if (w->datafd >= 0)
		close(w->datafd);
	if (w->lockfd >= 0)
		close(w->lockfd); /* releases the flock */
	explicit_bzero(&w->h, sizeof(w->h));
	free(w->state_path);
	free(w->dir);
	free(w->lock_path);
	free(w->data_path);
	free(w);
}

/* Remove the ingest dir while still holding its lock (waiters re-check the
 * lock file's inode and start over). */
static void ingest_remove(struct imgfs_ingest *w)
{
	unlink(w->state_path);
	unlink(w->data_path);
	unlink(w->lock_path);
	rmdir(w->dir);
}

/* Hash the data on disk from w->offset on. */
static int ingest_rehash(struct imgfs_ingest *w, struct imgfs_error *err)
{
	char *buf = imgfs_xmalloc(1 << 20);
	ssize_t n;

	if (lseek(w->datafd, (off_t)w->offset, SEEK_SET) < 0) {
		free(buf);
		return imgfs_error_errno(err, errno, "seek %s", w->data_path);
	}
	while ((n = read(w->datafd, buf, 1 << 20)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			return imgfs_error_errno(err, errno, "read %s", w->data_path);
		}
		ihash_update(&w->h, buf, (size_t)n);
		w->offset += (uint64_t)n;
	}
	free(buf);
	return 0;
}

static int ingest_truncate(struct imgfs_ingest *w, struct imgfs_error *err)
{
	if (ftruncate(w->datafd, 0) < 0 || lseek(w->datafd, 0, SEEK_SET) < 0)
		return imgfs_error_errno(err, errno, "truncate %s", w->data_path);
	ihash_init(&w->h, w->expected.alg);
	w->offset = 0;
	return 0;
}

static int ingest_open_data(struct imgfs_ingest *w, struct imgfs_error *err)
{
	w->datafd = open(w->data_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (w->datafd < 0)
		return imgfs_error_errno(err, errno, "open %s", w->data_path);
	ihash_init(&w->h, w->expected.alg);
	w->offset = 0;
	unlink(w->state_path); /* a saved state is never trusted (see struct ihash) */
	if (ingest_rehash(w, err) < 0)
		return -1;
	if (w->offset > 0)
		imgfs_debug("ingest %s: resuming at %llu bytes, all of them hashed again", w->dir,
			    (unsigned long long)w->offset);
	if (w->offset > w->expected_size) {
		imgfs_warn(
		    "ingest %s: %llu bytes on disk, more than the expected %llu; starting over",
		    w->dir, (unsigned long long)w->offset, (unsigned long long)w->expected_size);
		return ingest_truncate(w, err);
	}
	return 0;
}

int imgfs_ingest_open(struct imgfs_store *s, const struct imgfs_digest *expected,
		      uint64_t expected_size, struct imgfs_ingest **out, struct imgfs_error *err)
{
	struct imgfs_ingest *w;
	uint64_t have;
	int r;

	*out = NULL;
	if (expected_size > INT64_MAX)
		return imgfs_error_set(err, EINVAL, "blob %s: size %llu too large", expected->str,
				       (unsigned long long)expected_size);
	w = imgfs_xmalloc(sizeof(*w));
	w->s = s;
	w->expected = *expected;
	w->expected.hex = w->expected.str + (expected->hex - expected->str);
	w->expected_size = expected_size;
	w->lockfd = w->datafd = -1;
	w->dir = imgfs_xasprintf("%s/ingest/%s-%s", s->root, imgfs_digest_alg_name(expected->alg),
				 expected->hex);
	w->lock_path = imgfs_xasprintf("%s/lock", w->dir);
	w->data_path = imgfs_xasprintf("%s/data", w->dir);
	w->state_path = imgfs_xasprintf("%s/hashstate", w->dir);

	for (int attempt = 0; w->lockfd < 0 && attempt < 100; attempt++) {
		if (mkdir(w->dir, 0700) < 0 && errno != EEXIST) {
			r = errno;
			ingest_free(w);
			return imgfs_error_errno(err, r, "blob %s: create ingest dir",
						 expected->str);
		}
		w->lockfd = store_lock_path(w->lock_path, LOCK_EX, true, err);
		if (w->lockfd < 0 && err->code != ENOENT) {
			ingest_free(w);
			return imgfs_error_wrap(err, "blob %s", expected->str);
		}
		/* ENOENT: the dir went away between mkdir and open; again. */
	}
	if (w->lockfd < 0) {
		ingest_free(w);
		return imgfs_error_wrap(err, "blob %s", expected->str);
	}
	r = blob_stat(s, expected, &have, err);
	if (r == 1 && have != expected_size)
		r = imgfs_error_set(err, EIO, "blob %s: store holds %llu bytes, expected %llu",
				    expected->str, (unsigned long long)have,
				    (unsigned long long)expected_size);
	if (r == 1) {
		ingest_remove(w); /* a stale partial download of content we have */
		ingest_free(w);
		return 0;
	}
	if (r < 0 || ingest_open_data(w, err) < 0) {
		ingest_free(w);
		return imgfs_error_wrap(err, "blob %s: ingest", expected->str);
	}
	*out = w;
	return 0;
}

uint64_t imgfs_ingest_offset(const struct imgfs_ingest *w)
{
	return w->offset;
}

const char *imgfs_ingest_data_path(const struct imgfs_ingest *w)
{
	return w->data_path;
}

int imgfs_ingest_write(struct imgfs_ingest *w, const void *buf, size_t len, struct imgfs_error *err)
{
	int r;

	if (len > w->expected_size - w->offset)
		return imgfs_error_set(err, EIO, "blob %s: more data than the expected %llu bytes",
				       w->expected.str, (unsigned long long)w->expected_size);
	if (lseek(w->datafd, (off_t)w->offset, SEEK_SET) < 0)
		return imgfs_error_errno(err, errno, "blob %s: seek %s", w->expected.str,
					 w->data_path);
	r = imgfs_write_all(w->datafd, buf, len);
	if (r < 0) {
		/* Keep the file consistent with the hash state. */
		if (ftruncate(w->datafd, (off_t)w->offset) < 0)
			imgfs_warn("truncate %s: %s", w->data_path, strerror(errno));
		return imgfs_error_errno(err, -r, "blob %s: write %s", w->expected.str,
					 w->data_path);
	}
	ihash_update(&w->h, buf, len);
	w->offset += len;
	return 0;
}

int imgfs_ingest_reset(struct imgfs_ingest *w, struct imgfs_error *err)
{
	if (ingest_truncate(w, err) < 0)
		return imgfs_error_wrap(err, "blob %s", w->expected.str);
	return 0;
}

static int ingest_verify(struct imgfs_ingest *w, struct imgfs_error *err)
{
	struct imgfs_digest got;

	if (w->offset != w->expected_size)
		/* Short: keep the data, a later open resumes from it. */
		return imgfs_error_set(err, EIO,
				       "blob %s: size mismatch: got %llu bytes, expected %llu",
				       w->expected.str, (unsigned long long)w->offset,
				       (unsigned long long)w->expected_size);
	ihash_final(&w->h, &got);
	if (!imgfs_digest_equal(&got, &w->expected)) {
		unlink(w->state_path);
		unlink(w->data_path);
		return imgfs_error_set(err, EIO, "blob %s: digest mismatch: got %s",
				       w->expected.str, got.str);
	}
	return 0;
}

int imgfs_ingest_commit(struct imgfs_ingest *w, const char *media_type, struct imgfs_error *err)
{
	int r = ingest_verify(w, err);

	if (r == 0 && (fsync(w->datafd) < 0 || fchmod(w->datafd, 0444) < 0))
		r = imgfs_error_errno(err, errno, "blob %s: fsync %s", w->expected.str,
				      w->data_path);
	if (r == 0)
		r = blob_install(w->s, w->data_path, &w->expected, err);
	if (r == 0)
		r = store_record_blob(w->s, &w->expected, w->expected_size, media_type, err);
	if (r == 0)
		ingest_remove(w);
	ingest_free(w);
	return r;
}

void imgfs_ingest_abort(struct imgfs_ingest *w)
{
	if (!w)
		return;
	ingest_free(w);
}
