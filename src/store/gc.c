/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Garbage collection, under the exclusive gc lock (pulls hold it shared, so
 * none runs meanwhile): mark what image records reference, sweep the rest.
 *
 * Roots: every image record's target, index, config and layers[].digest
 * (blobs) and layers[].chainID (snapshots, with their parents), and every
 * snapshot a mounted imgfs holds (imgfs_store_snapshot_hold: its .use lock
 * cannot be taken exclusively), with its parents. Swept:
 * unreferenced blob files and "blobs" records, unreferenced snapshot records
 * and directories, snapshot directories without records, tmp-* directories
 * and ingests whose lock nobody holds.
 */
#include "store_i.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

/* A set of strings: a sorted array after set_seal(). */
struct strset {
	char **v;
	size_t n, cap;
};

static void set_add(struct strset *s, const char *str)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		if (!s->v)
			abort(); /* our own metadata, not untrusted input */
	}
	s->v[s->n++] = imgfs_xstrdup(str);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void set_seal(struct strset *s)
{
	if (s->n)
		qsort(s->v, s->n, sizeof(*s->v), cmp_str);
}

static bool set_has(const struct strset *s, const char *str)
{
	return s->n && bsearch(&str, s->v, s->n, sizeof(*s->v), cmp_str) != NULL;
}

static void set_free(struct strset *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
}

struct gc {
	struct imgfs_store *s;
	struct strset blobs;  /* referenced blob digests */
	struct strset chains; /* referenced chainIDs (closed over parents) */
	struct strset ids;    /* ids (as text) of kept snapshots */
	struct strset uppers; /* keys of the upper dirs image records name */
	int *held;	      /* exclusive .use locks of snapshots being removed */
	size_t nheld;
	void (*fn)(void *ctx, const char *what, uint64_t bytes);
	void *ctx;
	struct imgfs_gc_report *rep;
};

static void report(struct gc *g, uint64_t bytes, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(struct gc *g, uint64_t bytes, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	if (!g->fn)
		return;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	g->fn(g->ctx, what, bytes);
}

static void mark_desc(struct gc *g, json_t *desc)
{
	json_t *d = json_object_get(desc, "digest");
	if (json_is_string(d))
		set_add(&g->blobs, json_string_value(d));
}

static void mark_image(struct gc *g, json_t *rec)
{
	json_t *layers = json_object_get(rec, "layers"), *l, *c;
	size_t i;

	mark_desc(g, json_object_get(rec, "target"));
	mark_desc(g, json_object_get(rec, "index"));
	mark_desc(g, json_object_get(rec, "config"));
	json_array_foreach(layers, i, l)
	{
		mark_desc(g, l);
		c = json_object_get(l, "chainID");
		if (json_is_string(c))
			set_add(&g->chains, json_string_value(c));
	}
}

struct snapinfo {
	struct strset keys;
	json_t *map; /* chainID -> record */
};

/*
 * A snapshot no image references may still be served by a mounted imgfs,
 * which holds its .use lock shared. Keep those (mark_parents keeps their
 * parents). Hold the others' locks exclusively until gc ends, so no mount
 * starts to use a snapshot between this decision and its removal.
 */
static void keep_in_use(struct gc *g, struct snapinfo *si)
{
	size_t nroots = g->chains.n;

	set_seal(&g->chains);
	g->held = calloc(si->keys.n ? si->keys.n : 1, sizeof(*g->held));
	if (!g->held)
		abort(); /* as set_add */
	for (size_t i = 0; i < si->keys.n; i++) {
		const char *chain = si->keys.v[i];
		_cleanup_free_ char *path = NULL;
		_cleanup_close_ int fd = -1;
		struct imgfs_digest cd;
		struct imgfs_error e = {0};

		/* a stored key becomes a path: only a valid digest does */
		if (set_has(&g->chains, chain) || imgfs_digest_parse(&cd, chain, &e) < 0)
			continue;
		path = imgfs_xasprintf("%s/locks/chain-%s.use", g->s->root, cd.hex);
		fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue; /* never held */
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			unlink(path); /* a late holder re-checks the inode */
			g->held[g->nheld++] = steal_fd(&fd);
			continue;
		}
		imgfs_warn("gc: kept snapshot %s: in use by a mounted imgfs", chain);
		g->rep->snapshots_in_use++;
		set_add(&g->chains, chain);
	}
	if (g->chains.n == nroots)
		return;
	set_seal(&g->chains);
}

/* Walk a cursor over dbi calling fn(key, value-json). */
static int each_record(struct imgfs_store *s, MDB_txn *txn, MDB_dbi dbi,
		       void (*fn)(void *, const char *, json_t *), void *ctx,
		       struct imgfs_error *err)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, op = MDB_FIRST;

	if ((rc = mdb_cursor_open(txn, dbi, &cur)))
		return store_mdb_error(err, rc, "gc: open cursor");
	while ((rc = mdb_cursor_get(cur, &k, &v, op)) == 0) {
		_cleanup_free_ char *key = strndup(k.mv_data, k.mv_size);
		_cleanup_json_ json_t *val =
		    json_loadb(v.mv_data, v.mv_size, JSON_DECODE_ANY, NULL);
		op = MDB_NEXT;
		if (key)
			fn(ctx, key, val);
	}
	mdb_cursor_close(cur);
	if (rc != MDB_NOTFOUND)
		return store_mdb_error(err, rc, "gc: read records");
	return 0;
}

static void image_cb(void *ctx, const char *key, json_t *rec)
{
	struct gc *g = ctx;

	if (json_is_object(rec)) {
		_cleanup_free_ char *upper = store_upper_key(
		    key,
		    json_string_value(json_object_get(json_object_get(rec, "target"), "digest")));
		mark_image(g, rec);
		if (upper)
			set_add(&g->uppers, upper);
	} else
		imgfs_warn("gc: image record %s is corrupt; it protects nothing", key);
}

static void snap_cb(void *ctx, const char *key, json_t *rec)
{
	struct snapinfo *si = ctx;
	set_add(&si->keys, key);
	if (rec)
		json_object_set(si->map, key, rec);
}

/* Close g->chains over parents, then record the ids of kept snapshots. */
static void mark_parents(struct gc *g, struct snapinfo *si)
{
	for (size_t i = 0; i < g->chains.n; i++) { /* the set grows while we walk it */
		json_t *rec = json_object_get(si->map, g->chains.v[i]);
		json_t *p = json_object_get(rec, "parent");
		bool dup = false;
		if (!json_is_string(p))
			continue;
		for (size_t j = 0; j < g->chains.n && !dup; j++)
			dup = !strcmp(g->chains.v[j], json_string_value(p));
		if (!dup)
			set_add(&g->chains, json_string_value(p));
	}
	set_seal(&g->chains);
	for (size_t i = 0; i < si->keys.n; i++) {
		json_t *id = json_object_get(json_object_get(si->map, si->keys.v[i]), "id");
		if (set_has(&g->chains, si->keys.v[i]) && json_is_integer(id)) {
			char buf[32];
			snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(id));
			set_add(&g->ids, buf);
		}
	}
	set_seal(&g->ids);
}

/* Delete unreferenced records (blobs and snapshots) in one transaction and
 * the snapshot dirs of deleted snapshot records. */
static int sweep_records(struct gc *g, struct snapinfo *si, struct strset *blob_keys,
			 struct imgfs_error *err)
{
	struct imgfs_store *s = g->s;
	_cleanup_txn_ MDB_txn *txn = NULL;

	if (store_txn_begin(s, true, &txn, err) < 0)
		return -1;
	for (size_t i = 0; i < blob_keys->n; i++)
		if (!set_has(&g->blobs, blob_keys->v[i]) &&
		    store_del(txn, s->db_blobs, blob_keys->v[i], err) < 0)
			return -1;
	for (size_t i = 0; i < si->keys.n; i++)
		if (!set_has(&g->chains, si->keys.v[i]) &&
		    store_del(txn, s->db_snapshots, si->keys.v[i], err) < 0)
			return -1;
	return store_txn_commit(&txn, err);
}

static void blob_key_cb(void *ctx, const char *key, json_t *rec)
{
	set_add(ctx, key);
}

static int gc_mark(struct gc *g, struct snapinfo *si, struct strset *blob_keys,
		   struct imgfs_error *err)
{
	_cleanup_txn_ MDB_txn *txn = NULL;

	if (store_txn_begin(g->s, false, &txn, err) < 0)
		return -1;
	if (each_record(g->s, txn, g->s->db_images, image_cb, g, err) < 0 ||
	    each_record(g->s, txn, g->s->db_snapshots, snap_cb, si, err) < 0 ||
	    each_record(g->s, txn, g->s->db_blobs, blob_key_cb, blob_keys, err) < 0)
		return -1;
	set_seal(&g->blobs);
	set_seal(&g->uppers);
	keep_in_use(g, si);
	mark_parents(g, si);
	return 0;
}

static void sweep_blob_dir(struct gc *g, enum imgfs_digest_alg alg)
{
	_cleanup_free_ char *dir =
	    imgfs_xasprintf("%s/blobs/%s", g->s->root, imgfs_digest_alg_name(alg));
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		_cleanup_free_ char *ds =
		    imgfs_xasprintf("%s:%s", imgfs_digest_alg_name(alg), de->d_name);
		struct imgfs_digest dg;
		struct imgfs_error e;
		struct stat st;

		if (de->d_name[0] == '.' || set_has(&g->blobs, ds))
			continue;
		if (imgfs_digest_parse(&dg, ds, &e) < 0 || dg.alg != alg) {
			imgfs_warn("gc: %s/%s is not a blob; left alone", dir, de->d_name);
			continue;
		}
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) < 0) {
			imgfs_warn("gc: remove blob %s: %s", ds, strerror(errno));
			continue;
		}
		g->rep->blobs_removed++;
		g->rep->blob_bytes += (uint64_t)st.st_size;
		report(g, (uint64_t)st.st_size, "blob %s", ds);
	}
	closedir(d);
}

/* Try to take the flock on name (a file or dir) below dirfd without waiting:
 * true if nobody holds it. */
static bool unused(int dirfd, const char *name, bool is_dir)
{
	_cleanup_close_ int fd = openat(
	    dirfd, name, (is_dir ? O_RDONLY | O_DIRECTORY : O_RDWR) | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT;
	return flock(fd, LOCK_EX | LOCK_NB) == 0; /* released when fd closes, after removal */
}

static bool is_number(const char *s)
{
	if (!*s || *s == '0')
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static void sweep_snapshot_dirs(struct gc *g, struct snapinfo *si)
{
	_cleanup_free_ char *dir = imgfs_xasprintf("%s/snapshots", g->s->root);
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		const char *n = de->d_name;
		bool tmp = !strncmp(n, "tmp-", 4);
		uint64_t bytes;
		int r;

		if (!tmp && (!is_number(n) || set_has(&g->ids, n)))
			continue;
		if (tmp && !unused(dirfd(d), n, true))
			continue;
		bytes = store_du_at(dirfd(d), n);
		r = imgfs_rm_rf_at(dirfd(d), n);
		if (r < 0) {
			imgfs_warn("gc: remove %s/%s: %s", dir, n, strerror(-r));
			continue;
		}
		if (tmp) {
			g->rep->tmp_removed++;
			g->rep->tmp_bytes += bytes;
			report(g, bytes, "unpack in progress %s (abandoned)", n);
			continue;
		}
		g->rep->snapshots_removed++;
		g->rep->snapshot_bytes += bytes;
		/* Name the chainID when a (now deleted) record had this id. */
		const char *chain = NULL;
		for (size_t i = 0; i < si->keys.n && !chain; i++) {
			json_t *id = json_object_get(json_object_get(si->map, si->keys.v[i]), "id");
			char buf[32];
			snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(id));
			if (json_is_integer(id) && !strcmp(buf, n))
				chain = si->keys.v[i];
		}
		if (chain)
			report(g, bytes, "snapshot %s", chain);
		else
			report(g, bytes, "snapshot directory %s (no record)", n);
	}
	closedir(d);
}

/* The image an upper dir held the writes of, from its "image" file. */
static void upper_owner(int dirfd, const char *n, char *out, size_t size)
{
	_cleanup_close_ int fd = openat(dirfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_close_ int ifd =
	    fd < 0 ? -1 : openat(fd, "image", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t r = ifd < 0 ? -1 : read(ifd, out, size - 1);
	char *nl;

	out[r > 0 ? r : 0] = '\0';
	if ((nl = strchr(out, '\n')))
		*nl = ' ';
	if ((nl = strchr(out, '\n')))
		*nl = '\0';
}

/* Upper dirs (rootfs writes) no image record names, unless a mount serves
 * them: writes belong to one image name at one digest. */
static void sweep_uppers(struct gc *g)
{
	_cleanup_free_ char *dir = imgfs_xasprintf("%s/uppers", g->s->root);
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		const char *n = de->d_name;
		struct imgfs_error e = {0};
		char owner[600];
		struct stat st;
		uint64_t bytes;
		bool kept = false;

		if (n[0] == '.' || set_has(&g->uppers, n) ||
		    fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
			continue;
		upper_owner(dirfd(d), n, owner, sizeof(owner));
		bytes = store_du_at(dirfd(d), n);
		if (store_upper_discard(g->s, n, 0, false, &kept, &e) < 0) {
			imgfs_warn("gc: %s", e.msg);
			continue;
		}
		if (kept) {
			imgfs_warn("gc: kept the rootfs writes of %s (uppers/%s): in use by a "
				   "mounted imgfs",
				   owner[0] ? owner : "a removed image", n);
			g->rep->uppers_in_use++;
			continue;
		}
		g->rep->uppers_removed++;
		g->rep->upper_bytes += bytes;
		report(g, bytes, "rootfs writes of %s (uppers/%s)", owner[0] ? owner : "?", n);
	}
	closedir(d);
}

static void sweep_ingest(struct gc *g)
{
	_cleanup_free_ char *dir = imgfs_xasprintf("%s/ingest", g->s->root);
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		const char *n = de->d_name;
		_cleanup_close_ int sub = -1;
		_cleanup_close_ int lk = -1;
		uint64_t bytes;

		if (!strcmp(n, ".") || !strcmp(n, ".."))
			continue;
		if (!strncmp(n, "put-", 4)) {
			if (unused(dirfd(d), n, false))
				unlinkat(dirfd(d), n, 0);
			continue;
		}
		sub = openat(dirfd(d), n, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (sub < 0)
			continue;
		/* Hold the ingest's lock while removing it; a writer that
		 * waits on it re-checks the inode and starts over. */
		lk = openat(sub, "lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (lk >= 0 && flock(lk, LOCK_EX | LOCK_NB) < 0)
			continue;
		bytes = store_du_at(dirfd(d), n);
		if (imgfs_rm_rf_at(dirfd(d), n) < 0)
			continue;
		g->rep->ingests_removed++;
		g->rep->ingest_bytes += bytes;
		report(g, bytes, "ingest %s", n);
	}
	closedir(d);
}

int imgfs_store_gc(struct imgfs_store *s, void (*fn)(void *ctx, const char *what, uint64_t bytes),
		   void *ctx, struct imgfs_gc_report *rep, struct imgfs_error *err)
{
	struct imgfs_gc_report local = {0};
	struct gc g = {.s = s, .fn = fn, .ctx = ctx, .rep = rep ? rep : &local};
	struct snapinfo si = {.map = json_object()};
	struct strset blob_keys = {0};
	int r;

	memset(g.rep, 0, sizeof(*g.rep));
	if (imgfs_store_lock_exclusive(s, err) < 0)
		return imgfs_error_wrap(err, "gc");
	r = gc_mark(&g, &si, &blob_keys, err);
	if (r == 0) {
		set_seal(&blob_keys);
		r = sweep_records(&g, &si, &blob_keys, err);
	}
	if (r == 0) {
		sweep_blob_dir(&g, IMGFS_SHA256);
		sweep_blob_dir(&g, IMGFS_SHA512);
		sweep_snapshot_dirs(&g, &si);
		sweep_uppers(&g);
		sweep_ingest(&g);
	}
	for (size_t i = 0; i < g.nheld; i++)
		close(g.held[i]);
	free(g.held);
	imgfs_store_unlock(s);
	set_free(&g.blobs);
	set_free(&g.chains);
	set_free(&g.ids);
	set_free(&g.uppers);
	set_free(&si.keys);
	set_free(&blob_keys);
	json_decref(si.map);
	return r < 0 ? imgfs_error_wrap(err, "gc") : 0;
}
