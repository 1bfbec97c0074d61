/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metadata in LMDB: the environment, the schema version, JSON records, and
 * the images API. Every change is one write transaction; values are compact
 * JSON text. The format is described in docs/store-format.md.
 */
#include "store_i.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define STORE_MAPSIZE ((size_t)1 << 30) /* 1 GiB of address space; the file grows as needed */
#define STORE_MAXREADERS 1024

int store_mdb_error(struct imgfs_error *err, int rc, const char *fmt, ...)
{
	char what[512];
	va_list ap;
	int code;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	switch (rc) {
	case MDB_NOTFOUND:
		code = ENOENT;
		break;
	case MDB_MAP_FULL:
	case MDB_TXN_FULL:
		code = ENOSPC;
		break;
	case MDB_READERS_FULL:
		code = EAGAIN;
		break;
	case MDB_BAD_VALSIZE:
		code = EINVAL;
		break;
	default:
		code = rc > 0 ? rc : EIO;
	}
	return imgfs_error_set(err, code, "%s: %s", what, mdb_strerror(rc));
}

int store_txn_begin(struct imgfs_store *s, bool write, MDB_txn **txn, struct imgfs_error *err)
{
	int rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, txn);
	if (rc) {
		*txn = NULL;
		return store_mdb_error(err, rc, "store %s: begin %s transaction", s->root,
				       write ? "write" : "read");
	}
	return 0;
}

int store_txn_commit(MDB_txn **txn, struct imgfs_error *err)
{
	int rc = mdb_txn_commit(*txn);
	*txn = NULL;
	if (rc)
		return store_mdb_error(err, rc, "commit metadata transaction");
	return 0;
}

static int key_of(const char *key, MDB_val *k, struct imgfs_error *err)
{
	size_t n = strlen(key);
	/* LMDB's default maximum key size. */
	if (n == 0 || n > 511)
		return imgfs_error_set(err, EINVAL,
				       "metadata key \"%.60s\": length %zu outside 1..511", key, n);
	k->mv_data = (void *)key;
	k->mv_size = n;
	return 0;
}

int store_get_json(MDB_txn *txn, MDB_dbi dbi, const char *key, json_t **out,
		   struct imgfs_error *err)
{
	MDB_val k, v;
	json_error_t je;
	int rc;

	if (key_of(key, &k, err) < 0)
		return -1;
	rc = mdb_get(txn, dbi, &k, &v);
	if (rc == MDB_NOTFOUND)
		return imgfs_error_set(err, ENOENT, "%s: not found", key);
	if (rc)
		return store_mdb_error(err, rc, "read %s", key);
	*out = json_loadb(v.mv_data, v.mv_size, JSON_DECODE_ANY, &je);
	if (!*out)
		return imgfs_error_set(err, EIO, "metadata record %s is corrupt: %s", key, je.text);
	return 0;
}

int store_put_json(MDB_txn *txn, MDB_dbi dbi, const char *key, json_t *v, struct imgfs_error *err)
{
	_cleanup_free_ char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	MDB_val k, val;
	int rc;

	if (key_of(key, &k, err) < 0)
		return -1;
	if (!text)
		return imgfs_error_set(err, ENOMEM, "encode metadata record %s", key);
	val.mv_data = text;
	val.mv_size = strlen(text);
	rc = mdb_put(txn, dbi, &k, &val, 0);
	if (rc)
		return store_mdb_error(err, rc, "write %s", key);
	return 0;
}

int store_del(MDB_txn *txn, MDB_dbi dbi, const char *key, struct imgfs_error *err)
{
	MDB_val k;
	int rc;

	if (key_of(key, &k, err) < 0)
		return -1;
	rc = mdb_del(txn, dbi, &k, NULL);
	if (rc && rc != MDB_NOTFOUND)
		return store_mdb_error(err, rc, "delete %s", key);
	return 0;
}

int store_record_blob(struct imgfs_store *s, const struct imgfs_digest *d, uint64_t size,
		      const char *media_type, struct imgfs_error *err)
{
	_cleanup_txn_ MDB_txn *txn = NULL;
	_cleanup_json_ json_t *rec =
	    json_pack("{s:I,s:s?}", "size", (json_int_t)size, "mediaType", media_type);

	if (!rec)
		return imgfs_error_set(err, ENOMEM, "blob %s: build record", d->str);
	if (store_txn_begin(s, true, &txn, err) < 0 ||
	    store_put_json(txn, s->db_blobs, d->str, rec, err) < 0 ||
	    store_txn_commit(&txn, err) < 0)
		return imgfs_error_wrap(err, "blob %s", d->str);
	return 0;
}

/* ---- environment and schema -------------------------------------------- */

static int info_get_int(MDB_txn *txn, MDB_dbi dbi, const char *key, json_int_t *out, bool *found,
			struct imgfs_error *err)
{
	_cleanup_json_ json_t *v = NULL;

	*found = false;
	if (store_get_json(txn, dbi, key, &v, err) < 0)
		return err->code == ENOENT ? 0 : -1;
	if (!json_is_integer(v))
		return imgfs_error_set(err, EIO, "metadata info \"%s\" is not an integer", key);
	*out = json_integer_value(v);
	*found = true;
	return 0;
}

/*
 * Schema 1 -> 2: rootfs upper dirs were named after the image
 * (uppers/<name escaped>); they are now keyed by name and manifest digest
 * (uppers.c). Move each image's to its key. Runs inside the write
 * transaction that records the new version, so one process migrates and the
 * others wait for it; the moves are idempotent if it dies half-way. Upper
 * dirs of no image are left for gc.
 */
static int migrate_v1(struct imgfs_store *s, MDB_txn *txn, struct imgfs_error *err)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, op = MDB_FIRST;

	if ((rc = mdb_cursor_open(txn, s->db_images, &cur)))
		return store_mdb_error(err, rc, "store %s: migrate to schema 2", s->root);
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		_cleanup_free_ char *name = strndup(k.mv_data, k.mv_size);
		_cleanup_json_ json_t *rec = json_loadb(v.mv_data, v.mv_size, 0, NULL);
		int r;

		op = MDB_NEXT;
		if (name && rec && (r = store_upper_migrate_v1(s, name, rec)) < 0)
			imgfs_warn("store %s: moving the writes of %s: %s", s->root, name,
				   strerror(-r));
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		return store_mdb_error(err, rc, "store %s: migrate to schema 2", s->root);
	return 0;
}

static int meta_init_schema(struct imgfs_store *s, struct imgfs_error *err)
{
	_cleanup_txn_ MDB_txn *txn = NULL;
	json_int_t ver = 0, next = 0;
	bool have_ver, have_next;
	int rc;

	unsigned create = s->read_only ? 0 : MDB_CREATE;

	if (store_txn_begin(s, !s->read_only, &txn, err) < 0)
		return -1;
	if ((rc = mdb_dbi_open(txn, "images", create, &s->db_images)) ||
	    (rc = mdb_dbi_open(txn, "blobs", create, &s->db_blobs)) ||
	    (rc = mdb_dbi_open(txn, "snapshots", create, &s->db_snapshots)) ||
	    (rc = mdb_dbi_open(txn, "info", create, &s->db_info)))
		return store_mdb_error(err, rc, "store %s: open databases", s->root);
	if (info_get_int(txn, s->db_info, "schema", &ver, &have_ver, err) < 0 ||
	    info_get_int(txn, s->db_info, "next_snapshot_id", &next, &have_next, err) < 0)
		return imgfs_error_wrap(err, "store %s", s->root);
	if (have_ver && ver > IMGFS_STORE_SCHEMA_VERSION)
		return imgfs_error_set(
		    err, ENOTSUP,
		    "store %s has schema version %lld, newer than this program's %d; "
		    "use a newer imgfs",
		    s->root, (long long)ver, IMGFS_STORE_SCHEMA_VERSION);
	if (have_ver && ver < 1)
		return imgfs_error_set(err, EIO, "store %s: invalid schema version %lld", s->root,
				       (long long)ver);
	if (s->read_only) {
		/* an older schema is read as it is: migrating needs a writable store
		 * (a schema 1 store's rootfs writes are not found until then) */
		if (!have_ver || !have_next)
			return imgfs_error_set(err, EIO, "store %s: metadata has no schema version",
					       s->root);
		/* committed, not aborted: that keeps the dbi handles */
		return store_txn_commit(&txn, err) < 0 ? imgfs_error_wrap(err, "store %s", s->root)
						       : 0;
	}
	if (have_ver && ver == 1 && migrate_v1(s, txn, err) < 0)
		return -1;
	if (!have_ver || ver < IMGFS_STORE_SCHEMA_VERSION) {
		_cleanup_json_ json_t *v = json_integer(IMGFS_STORE_SCHEMA_VERSION);
		if (store_put_json(txn, s->db_info, "schema", v, err) < 0)
			return imgfs_error_wrap(err, "store %s", s->root);
	}
	if (!have_next) {
		_cleanup_json_ json_t *v = json_integer(1);
		if (store_put_json(txn, s->db_info, "next_snapshot_id", v, err) < 0)
			return imgfs_error_wrap(err, "store %s", s->root);
	}
	return store_txn_commit(&txn, err) < 0 ? imgfs_error_wrap(err, "store %s", s->root) : 0;
}

int store_meta_open(struct imgfs_store *s, struct imgfs_error *err)
{
	_cleanup_free_ char *dir = imgfs_xasprintf("%s/meta", s->root);
	int rc, dead = 0;

	if ((rc = mdb_env_create(&s->env)))
		return store_mdb_error(err, rc, "store %s: create LMDB environment", s->root);
	if ((rc = mdb_env_set_maxdbs(s->env, 8)) ||
	    (rc = mdb_env_set_mapsize(s->env, STORE_MAPSIZE)) ||
	    (rc = mdb_env_set_maxreaders(s->env, STORE_MAXREADERS))) {
		store_meta_close(s);
		return store_mdb_error(err, rc, "store %s: configure LMDB", s->root);
	}
	/* MDB_NOTLS: read transactions are not tied to threads (FUSE workers). */
	if ((rc = mdb_env_open(s->env, dir, MDB_NOTLS | (s->read_only ? MDB_RDONLY : 0), 0600))) {
		store_meta_close(s);
		return store_mdb_error(err, rc, "store %s: open LMDB in %s", s->root, dir);
	}
	/* Clear reader slots left by processes that died. */
	mdb_reader_check(s->env, &dead);
	if (dead)
		imgfs_info("store %s: cleared %d stale LMDB reader slot(s)", s->root, dead);
	if (meta_init_schema(s, err) < 0) {
		store_meta_close(s);
		return -1;
	}
	return 0;
}

void store_meta_close(struct imgfs_store *s)
{
	if (s->env)
		mdb_env_close(s->env);
	s->env = NULL;
}

/* ---- images --------------------------------------------------------------- */

int imgfs_store_put_image(struct imgfs_store *s, const char *name, json_t *rec,
			  struct imgfs_error *err)
{
	_cleanup_txn_ MDB_txn *txn = NULL;

	if (!json_is_object(rec))
		return imgfs_error_set(err, EINVAL, "image %s: record is not a JSON object", name);
	if (store_txn_begin(s, true, &txn, err) < 0 ||
	    store_put_json(txn, s->db_images, name, rec, err) < 0 ||
	    store_txn_commit(&txn, err) < 0)
		return imgfs_error_wrap(err, "store image %s", name);
	return 0;
}

int imgfs_store_get_image(struct imgfs_store *s, const char *name, json_t **rec,
			  struct imgfs_error *err)
{
	_cleanup_txn_ MDB_txn *txn = NULL;

	if (store_txn_begin(s, false, &txn, err) < 0)
		return -1;
	if (store_get_json(txn, s->db_images, name, rec, err) < 0) {
		if (err->code == ENOENT)
			return imgfs_error_set(err, ENOENT, "image %s: not in store", name);
		return imgfs_error_wrap(err, "image %s", name);
	}
	return 0;
}

int imgfs_store_delete_image(struct imgfs_store *s, const char *name, struct imgfs_error *err)
{
	_cleanup_txn_ MDB_txn *txn = NULL;
	MDB_val k;
	int rc;

	if (key_of(name, &k, err) < 0)
		return -1;
	if (store_txn_begin(s, true, &txn, err) < 0)
		return -1;
	rc = mdb_del(txn, s->db_images, &k, NULL);
	if (rc == MDB_NOTFOUND)
		return imgfs_error_set(err, ENOENT, "image %s: not in store", name);
	if (rc)
		return store_mdb_error(err, rc, "delete image %s", name);
	return store_txn_commit(&txn, err) < 0 ? imgfs_error_wrap(err, "delete image %s", name) : 0;
}

int imgfs_store_list_images(struct imgfs_store *s,
			    int (*fn)(void *ctx, const char *name, json_t *rec), void *ctx,
			    struct imgfs_error *err)
{
	_cleanup_txn_ MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	int rc, op = MDB_FIRST, ret = 0;

	if (store_txn_begin(s, false, &txn, err) < 0)
		return -1;
	if ((rc = mdb_cursor_open(txn, s->db_images, &cur)))
		return store_mdb_error(err, rc, "list images");
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		_cleanup_free_ char *name = strndup(k.mv_data, k.mv_size);
		_cleanup_json_ json_t *rec = NULL;
		json_error_t je;

		op = MDB_NEXT;
		if (!name) {
			ret = imgfs_error_set(err, ENOMEM, "list images");
			break;
		}
		rec = json_loadb(v.mv_data, v.mv_size, 0, &je);
		if (!rec) {
			imgfs_warn("image record %s is corrupt (%s); skipped", name, je.text);
			continue;
		}
		if (fn(ctx, name, rec))
			break;
	}
	if (rc && rc != MDB_NOTFOUND && ret == 0)
		ret = store_mdb_error(err, rc, "list images");
	mdb_cursor_close(cur);
	return ret;
}
