// SPDX-License-Identifier: Apache-2.0
/*
 * The virtual tree: image names as nested directories, the files of an image
 * directory, the layers/, snapshots/, pull/ and .imgfs/ directories. Paths are
 * resolved against a catalog of the store's images that is re-listed when
 * the LMDB data file changes, so `imgfs pull` and `imgfs rm` from outside
 * show up without a remount. Nothing here talks to the network.
 */
#include "fs_i.h"

#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

/* ---- the catalog ------------------------------------------------------------ */

static void catalog_free(struct fs_catalog *c)
{
	for (size_t i = 0; i < c->n; i++) {
		struct fs_image *im = &c->images[i];
		for (size_t j = 0; j < im->ncomps; j++)
			free(im->comps[j]);
		free(im->comps);
		free(im->name);
		json_decref(im->rec);
	}
	free(c->images);
	free(c);
}

static bool bad_comp(const char *s)
{
	return !*s || !strcmp(s, ".") || !strcmp(s, "..");
}

/* "docker.io/library/alpine:3.18.3" -> alpine, 3.18.3;
 * "127.0.0.1:5000/lab/app@sha256:<hex>" -> 127.0.0.1:5000, lab, app, @sha256:<hex>;
 * "docker.io/a.b/c:1" -> docker.io, a.b, c, 1 (imgfs_ref_tree_path) */
static int image_comps(const char *name, char ***out, size_t *n)
{
	struct imgfs_error err = {0};
	struct imgfs_ref ref = {0};
	_cleanup_free_ char *path = NULL;
	char **comps, *p, *save = NULL;
	size_t k = 0, max = 1;

	if (imgfs_ref_parse(name, &ref, &err) < 0)
		return -1;
	path = imgfs_ref_tree_path(&ref);
	imgfs_ref_destroy(&ref);
	for (p = path; *p; p++)
		max += *p == '/';
	comps = calloc(max, sizeof(*comps));
	if (!comps)
		return -1;
	for (p = strtok_r(path, "/", &save); p && k < max; p = strtok_r(NULL, "/", &save))
		comps[k++] = imgfs_xstrdup(p);
	*out = comps;
	*n = k;
	for (size_t i = 0; i < k; i++) {
		if (bad_comp(comps[i]))
			return -1; /* the caller frees */
	}
	return 0;
}

struct list_ctx {
	struct fs_image *v;
	size_t n, cap;
};

static int list_one(void *ctx, const char *name, json_t *rec)
{
	struct list_ctx *l = ctx;
	struct fs_image im = {0};

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 32;
		struct fs_image *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return 0;
		l->v = v;
		l->cap = cap;
	}
	if (image_comps(name, &im.comps, &im.ncomps) < 0) {
		imgfs_debug("fs: image %s: name does not map to a path; not shown", name);
		for (size_t j = 0; j < im.ncomps; j++)
			free(im.comps[j]);
		free(im.comps);
		return 0;
	}
	im.name = imgfs_xstrdup(name);
	im.rec = json_incref(rec);
	l->v[l->n++] = im;
	return 0;
}

static struct fs_catalog *catalog_build(struct fs *fs)
{
	struct imgfs_error err = {0};
	struct list_ctx l = {0};
	struct fs_catalog *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	if (imgfs_store_list_images(fs->store, list_one, &l, &err) < 0)
		imgfs_warn("fs: listing images: %s", err.msg);
	c->refs = 1;
	c->images = l.v;
	c->n = l.n;
	clock_gettime(CLOCK_REALTIME, &c->when);
	return c;
}

struct fs_catalog *fs_catalog_get(struct fs *fs)
{
	struct stat st = {0};
	struct fs_catalog *c;
	double now = imgfs_now();

	stat(fs->meta_path, &st);
	pthread_mutex_lock(&fs->cat_lock);
	if (!fs->cat || fs->cat_dirty || now - fs->cat_listed > 2.0 ||
	    st.st_mtim.tv_sec != fs->cat_mtime.tv_sec ||
	    st.st_mtim.tv_nsec != fs->cat_mtime.tv_nsec) {
		struct fs_catalog *fresh = catalog_build(fs);
		if (fresh) {
			if (fs->cat && --fs->cat->refs == 0)
				catalog_free(fs->cat);
			fs->cat = fresh;
			fs->cat_mtime = st.st_mtim;
			fs->cat_listed = now;
			fs->cat_dirty = false;
		}
	}
	c = fs->cat;
	if (c)
		c->refs++;
	pthread_mutex_unlock(&fs->cat_lock);
	return c;
}

void fs_catalog_put(struct fs *fs, struct fs_catalog *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&fs->cat_lock);
	bool last = --c->refs == 0;
	pthread_mutex_unlock(&fs->cat_lock);
	if (last)
		catalog_free(c);
}

void fs_catalog_invalidate(struct fs *fs)
{
	pthread_mutex_lock(&fs->cat_lock);
	fs->cat_dirty = true;
	pthread_mutex_unlock(&fs->cat_lock);
}

void fs_catalog_free_all(struct fs *fs)
{
	if (fs->cat)
		fs_catalog_put(fs, fs->cat);
	fs->cat = NULL;
}

/* ---- record helpers ------------------------------------------------------- */

static const char *rec_str(json_t *rec, const char *obj, const char *key)
{
	json_t *o = obj ? json_object_get(rec, obj) : rec;
	return json_string_value(json_object_get(o, key));
}

static size_t rec_nlayers(json_t *rec)
{
	return json_array_size(json_object_get(rec, "layers"));
}

/* s when it is a valid sha256 digest, else NULL: record digests become path
 * names (blobs/sha256/<hex>, layers/<hex>), so a planted record holding
 * "sha256:../../x" must name nothing. */
static const char *valid_digest(const char *s)
{
	struct imgfs_digest d;
	struct imgfs_error err = {0};

	if (!s || imgfs_digest_parse(&d, s, &err) < 0 || d.alg != IMGFS_SHA256)
		return NULL;
	return s;
}

/* The layer's diffID or chainID, NULL when missing or not a valid digest. */
static const char *rec_layer(json_t *rec, size_t i, const char *key)
{
	return valid_digest(json_string_value(
	    json_object_get(json_array_get(json_object_get(rec, "layers"), i), key)));
}

static const char *hex_of(const char *digest)
{
	const char *c = digest ? strchr(digest, ':') : NULL;
	return c ? c + 1 : "";
}

/* Find an image layer whose diffID (want_chain false) or chainID hex is hex. */
static bool find_layer(struct fs_catalog *c, const char *hex, bool want_chain,
		       const struct fs_image **img, size_t *idx)
{
	for (size_t i = 0; i < c->n; i++) {
		size_t n = rec_nlayers(c->images[i].rec);
		for (size_t j = 0; j < n; j++) {
			const char *d =
			    rec_layer(c->images[i].rec, j, want_chain ? "chainID" : "diffID");
			if (d && !strncmp(d, "sha256:", 7) && !strcmp(d + 7, hex)) {
				*img = &c->images[i];
				*idx = j;
				return true;
			}
		}
	}
	return false;
}

/* ---- classifying a path ----------------------------------------------------- */

enum where_kind {
	W_NONE,
	W_ROOT,
	W_BLOBS,
	W_LAYERS,
	W_SNAPSHOTS,
	W_IMGFS,
	W_PULL_PARTIAL,
	W_PULL_MISSING,
	W_NAMESPACE,
	W_IMAGE
};

struct where {
	enum where_kind kind;
	const struct fs_image *img; /* W_IMAGE */
	char *ref;		    /* W_PULL_MISSING, W_IMAGE under pull/ */
	size_t rest;		    /* index of the first component below the container */
};

static bool looks_like_domain(const char *c)
{
	const char *colon = strchr(c, ':');
	size_t hostlen = colon ? (size_t)(colon - c) : strlen(c);
	if (c[0] == '[')
		return true;
	if (hostlen == 9 && !strncmp(c, "localhost", 9))
		return true;
	return memchr(c, '.', hostlen) != NULL;
}

/* Does the component end a reference (a tag or a digest)? */
static bool completes_ref(const char *comp, bool first)
{
	if (strchr(comp, '@'))
		return true;
	if (!strchr(comp, ':'))
		return false;
	return !(first && looks_like_domain(comp));
}

/* The stored image a reference under pull/ names: exactly its store name.
 * A reference with a digest is answered by that digest only (the tag plays
 * no part, as in docker and containerd), so pull/repo:tag@D never shows what
 * repo:tag holds, and its rootfs/ is not repo:tag's. */
static const struct fs_image *catalog_find_ref(struct fs_catalog *c, const char *refstr)
{
	struct imgfs_error err = {0};
	struct imgfs_ref ref = {0};
	const struct fs_image *found = NULL;
	_cleanup_free_ char *name = NULL;

	if (imgfs_ref_parse(refstr, &ref, &err) < 0)
		return NULL;
	name = imgfs_ref_store_name(&ref);
	for (size_t i = 0; i < c->n && !found; i++) {
		if (!strcmp(c->images[i].name, name))
			found = &c->images[i];
	}
	/* and the record holds that digest (its manifest or the index it was
	 * chosen from), whatever wrote it */
	if (found && ref.has_digest) {
		const char *t = rec_str(found->rec, "target", "digest");
		const char *x = rec_str(found->rec, "index", "digest");
		if ((!t || strcmp(t, ref.digest.str)) && (!x || strcmp(x, ref.digest.str))) {
			imgfs_warn("fs: image %s: its record holds another digest; not shown",
				   name);
			found = NULL;
		}
	}
	imgfs_ref_destroy(&ref);
	return found;
}

static void classify_pull(struct fs_catalog *c, char **comps, size_t n, struct where *w)
{
	size_t len = 0;
	for (size_t k = 1; k < n; k++) {
		len += strlen(comps[k]) + 1;
		if (!completes_ref(comps[k], k == 1))
			continue;
		char *ref = calloc(1, len + 1);
		if (!ref)
			break;
		for (size_t j = 1; j <= k; j++) {
			if (j > 1)
				strcat(ref, "/");
			strcat(ref, comps[j]);
		}
		w->ref = ref;
		w->rest = k + 1;
		w->img = catalog_find_ref(c, ref);
		w->kind = w->img ? W_IMAGE : W_PULL_MISSING;
		return;
	}
	w->kind = W_PULL_PARTIAL;
	w->rest = n;
}

static void classify(struct fs_catalog *c, char **comps, size_t n, struct where *w)
{
	memset(w, 0, sizeof(*w));
	w->rest = 1;
	if (n == 0) {
		w->kind = W_ROOT;
		w->rest = 0;
		return;
	}
	if (!strcmp(comps[0], "blobs")) {
		w->kind = W_BLOBS;
		return;
	}
	if (!strcmp(comps[0], "layers")) {
		w->kind = W_LAYERS;
		return;
	}
	if (!strcmp(comps[0], "snapshots")) {
		w->kind = W_SNAPSHOTS;
		return;
	}
	if (!strcmp(comps[0], ".imgfs")) {
		w->kind = W_IMGFS;
		return;
	}
	if (!strcmp(comps[0], "pull")) {
		classify_pull(c, comps, n, w);
		return;
	}
	/* The image whose path is the longest prefix of comps. */
	bool ns = false;
	for (size_t i = 0; i < c->n; i++) {
		const struct fs_image *im = &c->images[i];
		size_t k = 0, m = im->ncomps < n ? im->ncomps : n;
		while (k < m && !strcmp(im->comps[k], comps[k]))
			k++;
		if (k == im->ncomps && (!w->img || im->ncomps > w->img->ncomps))
			w->img = im;
		else if (k == n && n < im->ncomps)
			ns = true;
	}
	if (w->img) {
		w->kind = W_IMAGE;
		w->rest = w->img->ncomps;
		/* an image dir that is also a namespace prefix of a longer name */
		if (ns && n > w->rest && strcmp(comps[w->rest], "layers") &&
		    strcmp(comps[w->rest], "rootfs"))
			w->img = NULL;
	}
	if (!w->img) {
		w->kind = ns ? W_NAMESPACE : W_NONE;
		w->rest = n;
	}
}

/* ---- resolving ---------------------------------------------------------------- */

void fs_node_destroy(struct fs_node *n)
{
	free(n->content);
	free(n->key_arg);
	free(n->digest);
	free(n->ref);
	free(n->key);
	memset(n, 0, sizeof(*n));
}

static char **split_path(const char *path, size_t *n)
{
	size_t max = 1;
	const char *p, *q;
	char **v;

	for (p = path; *p; p++)
		max += *p == '/';
	v = calloc(max + 1, sizeof(*v));
	if (!v)
		return NULL;
	*n = 0;
	for (p = path; *p; p = q) {
		while (*p == '/')
			p++;
		for (q = p; *q && *q != '/'; q++)
			;
		if (q > p)
			v[(*n)++] = strndup(p, (size_t)(q - p));
	}
	return v;
}

static void free_split(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

/* rootfs/: an overlay of the image's layers with the upper dir of its name
 * at its digest. The key names that dir's inode too: after `imgfs rm` (the
 * writes removed or set aside) a new image of the same name and digest gets
 * a new dir, hence a new backing, never the old overlay and its writes. */
static int resolve_rootfs(struct fs *fs, const struct fs_image *im, struct fs_node *out)
{
	const char *d = rec_str(im->rec, "target", "digest");
	struct imgfs_error err = {0};
	ino_t ino;

	if (!d || imgfs_store_upper_make(fs->store, im->name, d, &ino, &err) < 0) {
		imgfs_warn("fs: rootfs of %s: %s", im->name, d ? err.msg : "no manifest digest");
		return d && err.code ? -err.code : -EIO;
	}
	out->type = FS_NODE_VIEW;
	out->view = FS_VIEW_ROOTFS;
	out->key_arg = imgfs_xstrdup(im->name);
	out->digest = imgfs_xstrdup(d);
	out->upper_ino = ino;
	out->key = imgfs_xasprintf("rootfs:%s@%s#%llu", im->name, d, (unsigned long long)ino);
	return 0;
}

static int resolve_in_image(struct fs *fs, const struct fs_image *im, char **rest, size_t n,
			    struct fs_node *out)
{
	const char *d;
	json_t *rec = im->rec;
	json_int_t pulled = json_integer_value(json_object_get(rec, "pulled"));

	out->mtime = (time_t)pulled;
	out->mtime_ns = 0;
	if (n == 0) {
		out->type = FS_NODE_DIR;
		out->nlink = 4;
		return 0;
	}
	if (n == 1) {
		const char *obj = !strcmp(rest[0], "manifest.json") ? "target"
				  : !strcmp(rest[0], "config.json") ? "config"
				  : !strcmp(rest[0], "index.json")  ? "index"
								    : NULL;
		if (obj) {
			d = valid_digest(rec_str(rec, obj, "digest"));
			if (!d)
				return -ENOENT;
			out->type = FS_NODE_BLOB;
			snprintf(out->blob, sizeof(out->blob), "sha256/%s", d + 7);
			return 0;
		}
		if (!strcmp(rest[0], "digest")) {
			d = rec_str(rec, "target", "digest");
			out->type = FS_NODE_GEN;
			out->content = imgfs_xasprintf("%s\n", d ? d : "");
			out->len = strlen(out->content);
			return 0;
		}
		if (!strcmp(rest[0], "layers")) {
			out->type = FS_NODE_DIR;
			out->nlink = 2;
			return 0;
		}
		if (!strcmp(rest[0], "rootfs"))
			return resolve_rootfs(fs, im, out);
		return -ENOENT;
	}
	if (n == 2 && !strcmp(rest[0], "layers")) {
		char *end;
		unsigned long i = strtoul(rest[1], &end, 10);
		if (*end || !rest[1][0] || (rest[1][0] == '0' && rest[1][1]) ||
		    i >= rec_nlayers(rec))
			return -ENOENT;
		d = rec_layer(rec, i, "chainID");
		if (!d)
			return -ENOENT;
		out->type = FS_NODE_VIEW;
		out->view = FS_VIEW_LAYER;
		out->key_arg = imgfs_xstrdup(d);
		out->key = imgfs_xasprintf("layer:%s", d);
		return 0;
	}
	return -ENOENT;
}

static int resolve_hex_dir(struct fs_catalog *c, char **rest, size_t n, bool chain,
			   struct fs_node *out)
{
	const struct fs_image *im;
	size_t idx;

	if (n == 0) {
		out->type = FS_NODE_DIR;
		out->nlink = 2;
		return 0;
	}
	if (n > 1 || !find_layer(c, rest[0], chain, &im, &idx) ||
	    !rec_layer(im->rec, idx, "chainID"))
		return -ENOENT;
	out->type = FS_NODE_VIEW;
	out->view = chain ? FS_VIEW_SNAPSHOT : FS_VIEW_LAYER;
	out->key_arg = imgfs_xstrdup(rec_layer(im->rec, idx, "chainID"));
	out->key = imgfs_xasprintf("%s:%s", chain ? "snap" : "layer", out->key_arg);
	return 0;
}

static int resolve_where(struct fs *fs, struct fs_catalog *c, char **comps, size_t n, uid_t uid,
			 struct fs_node *out)
{
	struct where w;
	int rc = -ENOENT;

	classify(c, comps, n, &w);
	out->mtime = c->when.tv_sec;
	out->mtime_ns = c->when.tv_nsec;
	out->nlink = 2;
	if (w.kind == W_NONE || w.rest > n)
		goto out;
	char **rest = comps + w.rest;
	size_t nr = n - w.rest;
	switch (w.kind) {
	case W_ROOT:
	case W_NAMESPACE:
	case W_PULL_PARTIAL:
		out->type = FS_NODE_DIR;
		rc = 0;
		break;
	case W_BLOBS:
		if (nr == 0) {
			out->type = FS_NODE_VIEW;
			out->view = FS_VIEW_BLOBS;
			out->key = imgfs_xstrdup("blobs");
			rc = 0;
		}
		break;
	case W_NONE:
		break;
	case W_LAYERS:
		rc = resolve_hex_dir(c, rest, nr, false, out);
		break;
	case W_SNAPSHOTS:
		rc = resolve_hex_dir(c, rest, nr, true, out);
		break;
	case W_IMGFS:
		if (nr == 0) {
			out->type = FS_NODE_DIR;
			rc = 0;
		} else if (nr == 1 && !strcmp(rest[0], "status")) {
			out->type = FS_NODE_GEN;
			out->content = fs_status_text(fs, uid, &out->len);
			out->per_user = true;
			struct timespec now;
			clock_gettime(CLOCK_REALTIME, &now);
			out->mtime = now.tv_sec;
			out->mtime_ns = now.tv_nsec;
			rc = out->content ? 0 : -ENOMEM;
		}
		break;
	case W_PULL_MISSING:
		if (nr == 0) {
			out->type = FS_NODE_PULL;
			out->ref = steal_pointer(&w.ref);
			rc = 0;
		}
		break;
	case W_IMAGE:
		rc = resolve_in_image(fs, w.img, rest, nr, out);
		break;
	}
out:
	free(w.ref);
	return rc;
}

int fs_tree_resolve(struct fs *fs, const char *path, uid_t uid, struct fs_node *out)
{
	struct fs_catalog *c;
	size_t n = 0;
	char **comps;
	int rc;

	memset(out, 0, sizeof(*out));
	comps = split_path(path, &n);
	if (!comps)
		return -ENOMEM;
	c = fs_catalog_get(fs);
	if (!c) {
		free_split(comps, n);
		return -ENOMEM;
	}
	rc = resolve_where(fs, c, comps, n, uid, out);
	fs_catalog_put(fs, c);
	free_split(comps, n);
	if (rc < 0)
		fs_node_destroy(out);
	return rc;
}

/* ---- listing ------------------------------------------------------------------ */

struct dlist {
	struct fs_dirent *v;
	size_t n, cap;
};

static void dl_add(struct dlist *l, const char *name, mode_t type)
{
	for (size_t i = 0; i < l->n; i++) {
		if (!strcmp(l->v[i].name, name))
			return;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct fs_dirent *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n].name = imgfs_xstrdup(name);
	l->v[l->n].type = type;
	l->n++;
}

void fs_dirents_free(struct fs_dirent *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(d[i].name);
	free(d);
}

/* Names one level below comps[0..n) among the images' paths. */
static void list_names(struct fs_catalog *c, char **comps, size_t n, struct dlist *l)
{
	for (size_t i = 0; i < c->n; i++) {
		const struct fs_image *im = &c->images[i];
		size_t k = 0;
		if (im->ncomps <= n)
			continue;
		while (k < n && !strcmp(im->comps[k], comps[k]))
			k++;
		if (k == n)
			dl_add(l, im->comps[n], S_IFDIR);
	}
}

static void list_image(const struct fs_image *im, char **rest, size_t nr, struct dlist *l)
{
	char num[32];

	if (nr == 0) {
		dl_add(l, "manifest.json", S_IFREG);
		dl_add(l, "config.json", S_IFREG);
		if (rec_str(im->rec, "index", "digest"))
			dl_add(l, "index.json", S_IFREG);
		dl_add(l, "digest", S_IFREG);
		dl_add(l, "layers", S_IFDIR);
		dl_add(l, "rootfs", S_IFDIR);
	} else if (nr == 1 && !strcmp(rest[0], "layers")) {
		for (size_t i = 0; i < rec_nlayers(im->rec); i++) {
			snprintf(num, sizeof(num), "%zu", i);
			dl_add(l, num, S_IFDIR);
		}
	}
}

int fs_tree_list(struct fs *fs, const char *path, struct fs_dirent **out, size_t *nout)
{
	struct dlist l = {0};
	struct fs_catalog *c;
	struct where w;
	size_t n = 0;
	char **comps = split_path(path, &n);

	if (!comps)
		return -ENOMEM;
	c = fs_catalog_get(fs);
	if (!c) {
		free_split(comps, n);
		return -ENOMEM;
	}
	classify(c, comps, n, &w);
	switch (w.kind) {
	case W_ROOT:
		if (n == 0) {
			static const char *const reserved[] = {"blobs", "layers", "snapshots",
							       "pull", ".imgfs"};
			for (size_t i = 0; i < 5; i++)
				dl_add(&l, reserved[i], S_IFDIR);
			list_names(c, comps, 0, &l);
		}
		break;
	case W_NAMESPACE:
		list_names(c, comps, n, &l);
		break;
	case W_IMAGE:
		if (w.rest <= n)
			list_image(w.img, comps + w.rest, n - w.rest, &l);
		if (!w.ref)
			list_names(c, comps, n, &l);
		break;
	case W_LAYERS:
	case W_SNAPSHOTS:
		for (size_t i = 0; n == 1 && i < c->n; i++) {
			for (size_t j = 0; j < rec_nlayers(c->images[i].rec); j++) {
				const char *d = rec_layer(
				    c->images[i].rec, j, w.kind == W_LAYERS ? "diffID" : "chainID");
				if (d && !strncmp(d, "sha256:", 7))
					dl_add(&l, hex_of(d), S_IFDIR);
			}
		}
		break;
	case W_IMGFS:
		if (n == 1)
			dl_add(&l, "status", S_IFREG);
		break;
	default:
		break;
	}
	free(w.ref);
	fs_catalog_put(fs, c);
	free_split(comps, n);
	*out = l.v;
	*nout = l.n;
	return 0;
}

/* ---- backings ------------------------------------------------------------------ */

static int open_dir_path(const char *path)
{
	int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

struct fs_hold {
	char digest[IMGFS_DIGEST_MAX];
	int fd;
	struct fs_hold *next;
};

/*
 * Hold the snapshot (gc keeps it while the daemon lives), then find its dir.
 * Once per snapshot, however many backings serve it: an overlay of a chain
 * of n layers serves n snapshots, and the snapshots/ views of one image's
 * chains took n(n+1)/2 fds, each for the daemon's life. backing_lock held.
 */
static int hold_snapshot(struct fs *fs, const struct imgfs_digest *d, char **dir,
			 struct imgfs_error *err)
{
	struct fs_hold *h;

	for (h = fs->holds; h && strcmp(h->digest, d->str); h = h->next)
		;
	if (!h) {
		h = calloc(1, sizeof(*h));
		if (!h)
			return imgfs_error_set(err, ENOMEM, "out of memory");
		if (imgfs_store_snapshot_hold(fs->store, d, &h->fd, err) < 0) {
			free(h);
			return -1;
		}
		snprintf(h->digest, sizeof(h->digest), "%s", d->str);
		h->next = fs->holds;
		fs->holds = h;
	}
	return imgfs_store_snapshot_dir(fs->store, d, dir, err);
}

void fs_tree_holds_release(struct fs *fs)
{
	for (struct fs_hold *h = fs->holds, *next; h; h = next) {
		next = h->next;
		imgfs_store_snapshot_unlock(h->fd);
		free(h);
	}
	fs->holds = NULL;
}

void fs_backing_release(struct fs_backing *b)
{
	if (b->fd >= 0)
		close(b->fd);
	if (b->lockfd >= 0)
		close(b->lockfd);
	b->fd = b->lockfd = -1;
}

/* Snapshot dirs of the chain ending at chain_id, top-most first, each held. */
static int chain_dirs(struct fs *fs, const char *chain_id, char ***dirs, size_t *n)
{
	struct fs_catalog *c = fs_catalog_get(fs);
	struct imgfs_error err = {0};
	const struct fs_image *im;
	struct imgfs_digest d;
	size_t idx;
	int rc = 0;

	if (!c)
		return -ENOMEM;
	if (!find_layer(c, hex_of(chain_id), true, &im, &idx)) {
		fs_catalog_put(fs, c);
		return -ENOENT;
	}
	*dirs = calloc(idx + 2, sizeof(char *));
	*n = idx + 1;
	for (size_t i = 0; *dirs && i <= idx && rc == 0; i++) {
		const char *cid = rec_layer(im->rec, i, "chainID");
		if (!cid || imgfs_digest_parse(&d, cid, &err) < 0 ||
		    hold_snapshot(fs, &d, &(*dirs)[idx - i], &err) < 0) {
			imgfs_warn("fs: snapshot %s: %s", cid ? cid : "?", err.msg);
			rc = err.code ? -err.code : -EIO;
		}
	}
	fs_catalog_put(fs, c);
	if (!*dirs)
		return -ENOMEM;
	return rc;
}

/*
 * One overlay at a time may use an upper dir (two that share one are
 * undefined behaviour): a read-write mount holds its lock file exclusively,
 * read-only mounts shared; `imgfs reset`, rm and gc exclusively, and rm and
 * gc remove the dir only while holding it. So once locked, the dir must
 * still be the one resolved (rm may have removed it meanwhile). Makes
 * upper/ and work/ in it; a new upper/ gets root_mode whatever the umask (the
 * merged root shows the upper dir's mode). 0 or -errno (EBUSY, ENOENT when it
 * went away).
 */
static int lock_upper(struct fs *fs, const struct fs_node *node, const char *base, mode_t root_mode,
		      struct fs_backing *b)
{
	_cleanup_close_ int dfd = open(base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat a, p;

	if (dfd < 0)
		return -errno;
	b->lockfd = openat(dfd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (b->lockfd < 0)
		return -errno;
	if (flock(b->lockfd, (fs->read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK)
			return -errno;
		imgfs_err("fs: rootfs of %s: its upper dir is in use by another imgfs mount of "
			  "this store (one read-write mount, or any number of -o ro mounts, at a "
			  "time)",
			  node->key_arg);
		return -EBUSY;
	}
	if (fstat(dfd, &a) < 0 || a.st_nlink == 0 || a.st_ino != node->upper_ino ||
	    stat(base, &p) < 0 || p.st_ino != a.st_ino || p.st_dev != a.st_dev)
		return -ENOENT; /* removed or set aside: the next lookup makes a new one */
	if (mkdirat(dfd, "upper", 0700) == 0) {
		if (fchmodat(dfd, "upper", root_mode, 0) < 0)
			return -errno;
	} else if (errno != EEXIST) {
		return -errno;
	}
	if (mkdirat(dfd, "work", 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* The mode of the top-most lower's root (what a rootfs/ without writes shows
 * at its root), or 0755. */
static mode_t top_root_mode(char *const *dirs, size_t n)
{
	struct stat st;

	if (n == 0 || stat(dirs[0], &st) < 0)
		return 0755;
	return st.st_mode & 07777;
}

/* Append a copy of dir to the NULL-terminated list dirs of n. 0 or -errno. */
static int append_dir(char ***dirs, size_t *n, const char *dir)
{
	struct imgfs_error err = {0};
	char **more;

	if (imgfs_mkdir_p(dir, 0755, &err) < 0)
		return -err.code;
	more = realloc(*dirs, (*n + 2) * sizeof(char *));
	if (!more)
		return -ENOMEM;
	*dirs = more;
	more[(*n)++] = imgfs_xstrdup(dir);
	more[*n] = NULL;
	return 0;
}

/* Put a copy of dir in front of the NULL-terminated list dirs of n, if it is
 * a directory. 0 or -errno. */
static int prepend_if_dir(char ***dirs, size_t *n, const char *dir)
{
	struct stat st;
	char **more;

	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return 0;
	more = realloc(*dirs, (*n + 2) * sizeof(char *));
	if (!more)
		return -ENOMEM;
	memmove(more + 1, more, *n * sizeof(char *));
	more[0] = imgfs_xstrdup(dir);
	more[++(*n)] = NULL;
	*dirs = more;
	return 0;
}

/* The overlay of the chain ending at chain_top (NULL: none), read-only, or
 * with the upper dir of the rootfs node rootfs (NULL for a snapshot view). */
static int make_overlay(struct fs *fs, const char *chain_top, const struct fs_node *rootfs,
			struct fs_backing *b)
{
	const char *image_name = rootfs ? rootfs->key_arg : NULL;
	struct imgfs_error err = {0};
	char **dirs = NULL;
	size_t n = 0;
	_cleanup_free_ char *base =
	    rootfs ? imgfs_store_upper_dir(fs->store, rootfs->key_arg, rootfs->digest) : NULL;
	_cleanup_free_ char *empty = imgfs_xasprintf("%s/uppers/.empty", fs->root);
	_cleanup_free_ char *upper = imgfs_xasprintf("%s/upper", base ? base : "");
	_cleanup_free_ char *work = imgfs_xasprintf("%s/work", base ? base : "");
	int rc = 0;

	if (rootfs && !base)
		return -EINVAL;
	if (chain_top)
		rc = chain_dirs(fs, chain_top, &dirs, &n);
	if (rc == 0 && n == 0) /* overlay needs a lower dir: an empty one changes nothing */
		rc = append_dir(&dirs, &n, empty);
	if (rc == 0 && rootfs && imgfs_store_is_read_only(fs->store)) {
		/* a store on a read-only file system (-o ro): the writes made before,
		 * if any, as the top-most lower; no upper, no lock (nothing can
		 * write to the store) */
		rc = prepend_if_dir(&dirs, &n, upper);
		image_name = NULL;
	} else if (rc == 0 && rootfs) {
		rc = lock_upper(fs, rootfs, base, top_root_mode(dirs, n), b);
	}
	if (rc == 0) {
		int fd = fs_overlay_detached((const char *const *)dirs, n,
					     image_name ? upper : NULL, image_name ? work : NULL,
					     !image_name || fs->read_only, &err);
		if (fd < 0 && err.code == EINVAL && !image_name && n == 1 &&
		    append_dir(&dirs, &n, empty) == 0) {
			/* older kernels want two lowers without an upper dir. Only
			 * then: a lowest layer of its own changes the order in which
			 * the merged root is listed (overlayfs lists in the lowest
			 * layer's order), and views must list as the kernel overlay
			 * of the same chain does. */
			memset(&err, 0, sizeof(err));
			fd = fs_overlay_detached((const char *const *)dirs, n, NULL, NULL, true,
						 &err);
		}
		if (fd < 0) {
			imgfs_err("fs: %s: %s", b->key, err.msg);
			rc = err.code ? -err.code : -EIO;
		} else {
			b->fd = fd;
		}
	}
	for (size_t i = 0; dirs && i < n; i++)
		free(dirs[i]);
	free(dirs);
	if (rc < 0 && b->lockfd >= 0) {
		close(b->lockfd);
		b->lockfd = -1;
	}
	return rc;
}

static int make_rootfs(struct fs *fs, const struct fs_node *node, struct fs_backing *b)
{
	struct fs_catalog *c = fs_catalog_get(fs);
	const struct fs_image *im = NULL;
	const char *name = node->key_arg, *d;
	_cleanup_free_ char *top = NULL;
	size_t n;

	/* the image still at the digest resolved (a tag may have moved since) */
	for (size_t i = 0; c && i < c->n && !im; i++) {
		d = rec_str(c->images[i].rec, "target", "digest");
		if (!strcmp(c->images[i].name, name) && d && !strcmp(d, node->digest))
			im = &c->images[i];
	}
	n = im ? rec_nlayers(im->rec) : 0;
	if (n && rec_layer(im->rec, n - 1, "chainID"))
		top = imgfs_xstrdup(rec_layer(im->rec, n - 1, "chainID"));
	fs_catalog_put(fs, c);
	if (!im)
		return -ENOENT;
	if (n && !top) {
		imgfs_warn("fs: image %s: its record has no valid chainID: not served", name);
		return -EIO;
	}
	return make_overlay(fs, top, node, b);
}

int fs_tree_make_backing(struct fs *fs, const struct fs_node *node, struct fs_backing *b)
{
	struct imgfs_error err = {0};
	_cleanup_free_ char *dir = NULL;
	struct imgfs_digest d;
	int rc;

	switch (node->view) {
	case FS_VIEW_BLOBS:
		dir = imgfs_xasprintf("%s/blobs", fs->root);
		rc = open_dir_path(dir);
		break;
	case FS_VIEW_LAYER:
		if (imgfs_digest_parse(&d, node->key_arg, &err) < 0 ||
		    hold_snapshot(fs, &d, &dir, &err) < 0) {
			imgfs_warn("fs: layer %s: %s", node->key_arg, err.msg);
			return err.code ? -err.code : -EIO;
		}
		rc = open_dir_path(dir);
		break;
	case FS_VIEW_SNAPSHOT:
		return make_overlay(fs, node->key_arg, NULL, b);
	case FS_VIEW_ROOTFS:
		return make_rootfs(fs, node, b);
	default:
		return -EINVAL;
	}
	if (rc >= 0)
		b->fd = rc;
	return rc < 0 ? rc : 0;
}
