/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Snapshot directories: one unpacked layer per chainID, in
 * <root>/snapshots/<id>/fs with the id allocated in LMDB. Unpacks happen in
 * snapshots/tmp-XXXXXX (flocked by this process while in use, so gc can tell
 * live ones from abandoned ones) and are committed with a rename plus one
 * write transaction, undone if the transaction fails.
 */
#include "store_i.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

int imgfs_store_snapshot_lock(struct imgfs_store *s, const struct imgfs_digest *chain_id,
			      int *lockfd, struct imgfs_error *err)
{
	_cleanup_free_ char *path =
	    imgfs_xasprintf("%s/locks/chain-%s.lock", s->root, chain_id->hex);
	int fd = store_lock_path(path, LOCK_EX, false, err);

	if (fd < 0)
		return imgfs_error_wrap(err, "snapshot %s", chain_id->str);
	*lockfd = fd;
	return 0;
}

int imgfs_store_snapshot_hold(struct imgfs_store *s, const struct imgfs_digest *chain_id,
			      int *lockfd, struct imgfs_error *err)
{
	_cleanup_free_ char *path =
	    imgfs_xasprintf("%s/locks/chain-%s.use", s->root, chain_id->hex);
	int fd;

	if (s->read_only) { /* no gc can run on it: nothing to hold against */
		*lockfd = -1;
		return 0;
	}
	/* gc unlinks the file of a snapshot it removes: check the inode */
	fd = store_lock_path(path, LOCK_SH, true, err);

	if (fd < 0)
		return imgfs_error_wrap(err, "snapshot %s: hold", chain_id->str);
	*lockfd = fd;
	return 0;
}

void imgfs_store_snapshot_unlock(int lockfd)
{
	if (lockfd >= 0)
		close(lockfd);
}

static char *snapshot_fs_dir(const struct imgfs_store *s, json_int_t id)
{
	return imgfs_xasprintf("%s/snapshots/%lld/fs", s->root, (long long)id);
}

static int record_id(const json_t *rec, json_int_t *id)
{
	json_t *v = json_object_get(rec, "id");
	if (!json_is_integer(v) || json_integer_value(v) < 1)
		return -1;
	*id = json_integer_value(v);
	return 0;
}

int imgfs_store_snapshot_dir(struct imgfs_store *s, const struct imgfs_digest *chain_id, char **dir,
			     struct imgfs_error *err)
{
	_cleanup_txn_ MDB_txn *txn = NULL;
	_cleanup_json_ json_t *rec = NULL;
	_cleanup_free_ char *path = NULL;
	json_int_t id;
	struct stat st;

	if (store_txn_begin(s, false, &txn, err) < 0)
		return -1;
	if (store_get_json(txn, s->db_snapshots, chain_id->str, &rec, err) < 0) {
		if (err->code == ENOENT)
			return imgfs_error_set(err, ENOENT, "snapshot %s: not in store",
					       chain_id->str);
		return imgfs_error_wrap(err, "snapshot %s", chain_id->str);
	}
	if (record_id(rec, &id) < 0)
		return imgfs_error_set(err, EIO, "snapshot %s: record has no valid id",
				       chain_id->str);
	path = snapshot_fs_dir(s, id);
	if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		return imgfs_error_set(err, ENOENT,
				       "snapshot %s: recorded as %lld but %s is missing",
				       chain_id->str, (long long)id, path);
	*dir = steal_pointer(&path);
	return 0;
}

/* ---- tmp dirs held by this process ----------------------------------------- */

static void tmp_add(struct imgfs_store *s, struct store_tmp *t)
{
	pthread_mutex_lock(&s->tmp_mu);
	t->next = s->tmps;
	s->tmps = t;
	pthread_mutex_unlock(&s->tmp_mu);
}

/* Forget the tmp dir (releasing its flock). */
static void tmp_release(struct imgfs_store *s, const char *path)
{
	struct store_tmp *found = NULL;

	pthread_mutex_lock(&s->tmp_mu);
	for (struct store_tmp **pp = &s->tmps; *pp; pp = &(*pp)->next) {
		if (!strcmp((*pp)->path, path)) {
			found = *pp;
			*pp = found->next;
			break;
		}
	}
	pthread_mutex_unlock(&s->tmp_mu);
	if (found) {
		close(found->fd);
		free(found->path);
		free(found);
	}
}

void store_tmps_free(struct imgfs_store *s)
{
	struct store_tmp *t = s->tmps, *next;
	for (; t; t = next) {
		next = t->next;
		close(t->fd);
		free(t->path);
		free(t);
	}
	s->tmps = NULL;
}

int imgfs_store_snapshot_prepare(struct imgfs_store *s, char **dir, struct imgfs_error *err)
{
	_cleanup_free_ char *tmp = imgfs_xasprintf("%s/snapshots/tmp-XXXXXX", s->root);
	_cleanup_free_ char *fs = NULL;
	struct store_tmp *t;
	int fd;

	if (!mkdtemp(tmp))
		return imgfs_error_errno(err, errno, "snapshot: create %s", tmp);
	fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	/* 0755 whatever the umask (a layer's root entry, if it has one, sets its own
	 * mode when unpacked): the puller's umask must not decide who may read layers/ */
	if (fd < 0 || flock(fd, LOCK_EX) < 0 || mkdirat(fd, "fs", 0755) < 0 ||
	    fchmodat(fd, "fs", 0755, 0) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		imgfs_rm_rf(tmp);
		return imgfs_error_errno(err, e, "snapshot: prepare %s", tmp);
	}
	t = imgfs_xmalloc(sizeof(*t));
	t->fd = fd;
	t->path = imgfs_xstrdup(tmp);
	tmp_add(s, t);
	fs = imgfs_xasprintf("%s/fs", tmp);
	*dir = steal_pointer(&fs);
	return 0;
}

/* From ".../snapshots/tmp-XXXXXX/fs" to ".../snapshots/tmp-XXXXXX", checking
 * that dir is one that prepare made. */
static char *tmp_of(const struct imgfs_store *s, const char *dir)
{
	_cleanup_free_ char *prefix = imgfs_xasprintf("%s/snapshots/tmp-", s->root);
	size_t pl = strlen(prefix), dl = strlen(dir);
	const char *slash;

	if (dl <= pl + 3 || strncmp(dir, prefix, pl) || strcmp(dir + dl - 3, "/fs"))
		return NULL;
	slash = strchr(dir + pl, '/');
	if (!slash || slash != dir + dl - 3)
		return NULL;
	return strndup(dir, (size_t)(slash - dir));
}

void imgfs_store_snapshot_discard(struct imgfs_store *s, const char *dir)
{
	_cleanup_free_ char *tmp = tmp_of(s, dir);
	int r;

	if (!tmp) {
		imgfs_warn("snapshot discard: %s is not a prepared snapshot directory; left alone",
			   dir);
		return;
	}
	r = imgfs_rm_rf(tmp);
	if (r < 0)
		imgfs_warn("snapshot discard: remove %s: %s", tmp, strerror(-r));
	tmp_release(s, tmp);
}

static json_t *snapshot_record(json_int_t id, const struct imgfs_digest *parent,
			       const struct imgfs_digest *diff_id, uint64_t size)
{
	return json_pack("{s:I,s:s?,s:s?,s:I,s:I}", "id", id, "parent", parent ? parent->str : NULL,
			 "diffID", diff_id ? diff_id->str : NULL, "size", (json_int_t)size,
			 "created", (json_int_t)time(NULL));
}

/* Rename tmp to snapshots/<id>, skipping ids whose directory exists (left by
 * a crash between rename and commit). */
static int rename_to_id(struct imgfs_store *s, const char *tmp, json_int_t *id, char **final,
			struct imgfs_error *err)
{
	for (int tries = 0; tries < 1000; tries++, (*id)++) {
		_cleanup_free_ char *path =
		    imgfs_xasprintf("%s/snapshots/%lld", s->root, (long long)*id);
		if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0) {
			*final = steal_pointer(&path);
			return 0;
		}
		if (errno != EEXIST)
			return imgfs_error_errno(err, errno, "rename %s to %s", tmp, path);
	}
	return imgfs_error_set(err, EIO, "snapshots: no free id near %lld", (long long)*id);
}

static int commit_txn(struct imgfs_store *s, MDB_txn **txn, const char *tmp,
		      const struct imgfs_digest *chain_id, const struct imgfs_digest *parent,
		      const struct imgfs_digest *diff_id, uint64_t size, json_int_t *id_out,
		      struct imgfs_error *err)
{
	_cleanup_json_ json_t *next = NULL, *rec = NULL, *nv = NULL;
	_cleanup_free_ char *final = NULL;
	_cleanup_free_ char *snapdir = imgfs_xasprintf("%s/snapshots", s->root);
	json_int_t id;
	int r;

	if (store_get_json(*txn, s->db_info, "next_snapshot_id", &next, err) < 0)
		return -1;
	if (!json_is_integer(next) || json_integer_value(next) < 1)
		return imgfs_error_set(err, EIO, "metadata info next_snapshot_id is invalid");
	id = json_integer_value(next);
	if (rename_to_id(s, tmp, &id, &final, err) < 0)
		return -1;
	rec = snapshot_record(id, parent, diff_id, size);
	nv = json_integer(id + 1);
	r = !rec || !nv ? imgfs_error_set(err, ENOMEM, "build snapshot record") : 0;
	if (r == 0 && (r = store_fsync_dir(snapdir)) < 0)
		r = imgfs_error_errno(err, -r, "fsync %s", snapdir);
	if (r == 0)
		r = store_put_json(*txn, s->db_snapshots, chain_id->str, rec, err);
	if (r == 0)
		r = store_put_json(*txn, s->db_info, "next_snapshot_id", nv, err);
	if (r == 0)
		r = store_txn_commit(txn, err);
	if (r < 0) {
		/* All or nothing: put the directory back where it was. */
		if (rename(final, tmp) < 0)
			imgfs_warn("snapshot %s: undo rename %s: %s (gc will remove it)",
				   chain_id->str, final, strerror(errno));
		return -1;
	}
	*id_out = id;
	return 0;
}

int imgfs_store_snapshot_commit(struct imgfs_store *s, const char *dir,
				const struct imgfs_digest *chain_id,
				const struct imgfs_digest *parent,
				const struct imgfs_digest *diff_id, uint64_t size, char **final_dir,
				struct imgfs_error *err)
{
	_cleanup_free_ char *tmp = tmp_of(s, dir);
	_cleanup_txn_ MDB_txn *txn = NULL;
	_cleanup_json_ json_t *existing = NULL;
	_cleanup_close_ int fd = -1;
	json_int_t id = 0;

	if (!tmp)
		return imgfs_error_set(err, EINVAL,
				       "snapshot %s: %s is not a prepared snapshot directory",
				       chain_id->str, dir);
	fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return imgfs_error_errno(err, errno, "snapshot %s: open %s", chain_id->str, tmp);
	/* The unpacked files must be on disk before the rename makes them live. */
	if (syncfs(fd) < 0)
		return imgfs_error_errno(err, errno, "snapshot %s: syncfs %s", chain_id->str, tmp);
	if (store_txn_begin(s, true, &txn, err) < 0)
		return imgfs_error_wrap(err, "snapshot %s", chain_id->str);
	if (store_get_json(txn, s->db_snapshots, chain_id->str, &existing, err) == 0) {
		/* Committed by someone else meanwhile: theirs wins. */
		mdb_txn_abort(steal_pointer(&txn));
		imgfs_store_snapshot_discard(s, dir);
		if (record_id(existing, &id) < 0)
			return imgfs_error_set(err, EIO, "snapshot %s: record has no valid id",
					       chain_id->str);
		if (final_dir)
			*final_dir = snapshot_fs_dir(s, id);
		return 0;
	} else if (err->code != ENOENT) {
		return imgfs_error_wrap(err, "snapshot %s", chain_id->str);
	}
	if (commit_txn(s, &txn, tmp, chain_id, parent, diff_id, size, &id, err) < 0)
		return imgfs_error_wrap(err, "snapshot %s: commit", chain_id->str);
	tmp_release(s, tmp);
	if (final_dir)
		*final_dir = snapshot_fs_dir(s, id);
	return 0;
}
