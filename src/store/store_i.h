/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store internals shared by store.c, meta.c, blobs.c, snapshots.c and gc.c:
 * the store object, LMDB helpers (transactions that abort unless committed,
 * JSON records) and flock helpers.
 */
#ifndef IMGFS_STORE_I_H
#define IMGFS_STORE_I_H

#include "store.h"

#include <lmdb.h>
#include <pthread.h>

/* A prepared snapshot directory (snapshots/tmp-XXXXXX) held by this process:
 * the flock on its directory fd tells gc it is in use. */
struct store_tmp {
	struct store_tmp *next;
	char *path; /* "<root>/snapshots/tmp-XXXXXX" */
	int fd;	    /* O_DIRECTORY, flock(LOCK_EX) held */
};

struct imgfs_store {
	char *root;	/* immutable after open */
	bool read_only; /* opened with IMGFS_STORE_READ: LMDB read-only, nothing created */
	MDB_env *env;
	MDB_dbi db_images, db_blobs, db_snapshots, db_info; /* immutable after open */

	/*
	 * gc.lock: gc_rw orders threads of this process (readers = pulls,
	 * writer = gc); gc_fd carries the flock for other processes. gc_mu
	 * guards gc_shared and gc_excl.
	 */
	pthread_rwlock_t gc_rw;
	pthread_mutex_t gc_mu;
	int gc_fd;
	unsigned gc_shared;
	bool gc_excl;

	pthread_mutex_t tmp_mu; /* guards tmps */
	struct store_tmp *tmps;
};

/* ---- LMDB (meta.c) ------------------------------------------------------ */

/* Translate an LMDB return code into err: "<what>: <mdb_strerror>". */
int store_mdb_error(struct imgfs_error *err, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline void store_txn_abortp(MDB_txn **t)
{
	if (*t)
		mdb_txn_abort(*t);
}
/* A transaction aborted at scope exit unless committed (set to NULL). */
#define _cleanup_txn_ __attribute__((cleanup(store_txn_abortp)))

static inline void store_json_decrefp(json_t **j)
{
	if (*j)
		json_decref(*j);
}
#define _cleanup_json_ __attribute__((cleanup(store_json_decrefp)))

int store_txn_begin(struct imgfs_store *s, bool write, MDB_txn **txn, struct imgfs_error *err);
/* Commit and set *txn to NULL (the txn is gone either way). */
int store_txn_commit(MDB_txn **txn, struct imgfs_error *err);

/* Read the JSON value under key; ENOENT when absent, EIO when unparsable. */
int store_get_json(MDB_txn *txn, MDB_dbi dbi, const char *key, json_t **out,
		   struct imgfs_error *err);
/* Store v under key as compact JSON text. */
int store_put_json(MDB_txn *txn, MDB_dbi dbi, const char *key, json_t *v, struct imgfs_error *err);
/* Delete key; absent is not an error. */
int store_del(MDB_txn *txn, MDB_dbi dbi, const char *key, struct imgfs_error *err);

/* Record {size, mediaType} for a committed blob in "blobs". */
int store_record_blob(struct imgfs_store *s, const struct imgfs_digest *d, uint64_t size,
		      const char *media_type, struct imgfs_error *err);

/* Open LMDB in <root>/meta and check or initialise the schema version. */
int store_meta_open(struct imgfs_store *s, struct imgfs_error *err);
void store_meta_close(struct imgfs_store *s);

/* ---- files and locks (store.c) ----------------------------------------- */

/* Open (creating) path and take flock(op) on it, waiting (EINTR retried).
 * When check_inode, retry if the file was unlinked or replaced while we
 * waited (lock files that gc or a committer may remove). Returns fd or -1. */
int store_lock_path(const char *path, int op, bool check_inode, struct imgfs_error *err);
/* fsync a directory by path. 0 or -errno. */
int store_fsync_dir(const char *path);
/* Disk usage of a tree in bytes (st_blocks, hardlinks counted once), not following symlinks. */
uint64_t store_du_at(int dirfd, const char *name);

/* ---- rootfs upper directories (uppers.c) ------------------------------- */

/* The directory name below uppers/ for name at manifest digest:
 * "<alg>-<hex>-<sha256(name) hex>"; NULL when digest is invalid. Caller frees. */
char *store_upper_key(const char *name, const char *digest);
/* Write <dirfd>/image ("<name>\n<digest>\n"). 0 or -errno. */
int store_upper_write_info(int dirfd, const char *name, const char *digest);
/* Remove uppers/<key> holding its lock (waiting up to wait_ms); when a mount
 * holds it, set *kept and, if set_aside, rename it to uppers/removed-*. 0
 * when removed, kept or absent. */
int store_upper_discard(struct imgfs_store *s, const char *key, int wait_ms, bool set_aside,
			bool *kept, struct imgfs_error *err);
/* Schema 1 -> 2: move an image's upper dir from its escaped name to its key.
 * 0 or -errno. */
int store_upper_migrate_v1(struct imgfs_store *s, const char *name, json_t *rec);

/* ---- snapshots (snapshots.c) ------------------------------------------- */

/* True if a tmp-* dir of this process is being prepared (fd held). */
void store_tmps_free(struct imgfs_store *s);

#endif
