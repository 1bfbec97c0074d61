/* SPDX-License-Identifier: Apache-2.0 */
/* Resolving an image (index -> platform -> manifest -> config), recording it,
 * and the registry as a pull source. */
#include "pull_i.h"

#include <string.h>
#include <time.h>

#define MAX_INDEX_DEPTH 4

json_t *pull_descriptor_json(const char *media_type, const struct imgfs_digest *d, uint64_t size)
{
	return json_pack("{s:s, s:s, s:I}", "mediaType", media_type ? media_type : "", "digest",
			 d->str, "size", (json_int_t)size);
}

/* Fetch the manifest named by desc_digest (size known) or reference. */
static int fetch_doc(struct pull_source *src, const char *reference,
		     const struct imgfs_descriptor *desc, struct imgfs_fetched *out,
		     enum imgfs_doc_kind *kind, char **mt, struct imgfs_error *err)
{
	if (src->get_manifest(src->ctx, reference, out, err) < 0)
		return -1;
	if (desc && (out->len != desc->size || !imgfs_digest_equal(&out->digest, &desc->digest)))
		return imgfs_error_set(
		    err, EIO,
		    "manifest %s: the index says %llu bytes, got %zu bytes with digest %s",
		    desc->digest.str, (unsigned long long)desc->size, out->len, out->digest.str);
	if (imgfs_oci_classify(out->data, out->len, out->content_type, kind, mt, err) < 0)
		return imgfs_error_wrap(err, "%s", out->digest.str);
	return 0;
}

static int want_platform(const struct imgfs_pull_opts *opts, struct imgfs_platform *want,
			 struct imgfs_error *err)
{
	if (opts && opts->platform)
		return imgfs_platform_parse(opts->platform, want, err);
	imgfs_platform_host(want);
	return 0;
}

static bool platform_matches(const struct imgfs_platform *want, const struct imgfs_platform *have)
{
	if (!have->os || !have->architecture)
		return true;
	if (strcmp(want->os, have->os) || strcmp(want->architecture, have->architecture))
		return false;
	return !want->variant || !have->variant || !strcmp(want->variant, have->variant);
}

static json_t *build_record(const char *name, const json_t *index_desc,
			    const struct imgfs_fetched *mf, const char *manifest_mt,
			    const struct imgfs_manifest *m, const struct imgfs_config *c,
			    const struct imgfs_digest *chain_ids, const char *platform)
{
	json_t *layers = json_array();
	uint64_t total = mf->len + m->config.size;
	json_t *rec;

	for (size_t i = 0; i < m->n_layers; i++) {
		json_t *l = pull_descriptor_json(m->layers[i].media_type, &m->layers[i].digest,
						 m->layers[i].size);
		json_object_set_new(l, "diffID", json_string(c->diff_ids[i].str));
		json_object_set_new(l, "chainID", json_string(chain_ids[i].str));
		json_array_append_new(layers, l);
		total += m->layers[i].size;
	}
	rec =
	    json_pack("{s:s, s:o, s:o, s:s, s:o, s:I, s:I}", "name", name, "target",
		      pull_descriptor_json(manifest_mt, &mf->digest, mf->len), "config",
		      pull_descriptor_json(m->config.media_type, &m->config.digest, m->config.size),
		      "platform", platform, "layers", layers, "size", (json_int_t)total, "pulled",
		      (json_int_t)time(NULL));
	json_object_set_new(rec, "index", index_desc ? json_deep_copy(index_desc) : json_null());
	json_object_set_new(rec, "created", c->created ? json_string(c->created) : json_null());
	return rec;
}

static int get_config(struct imgfs_store *s, struct pull_source *src,
		      const struct imgfs_descriptor *d, struct imgfs_config **out,
		      struct imgfs_error *err)
{
	struct imgfs_fetched f = {0};
	int rc;

	if (d->size > IMGFS_MAX_CONFIG_SIZE)
		return imgfs_error_set(err, EIO, "config %s: %llu bytes, more than the limit of %u",
				       d->digest.str, (unsigned long long)d->size,
				       IMGFS_MAX_CONFIG_SIZE);
	if (imgfs_store_has_blob(s, &d->digest, d->size))
		rc = imgfs_store_read_blob(s, &d->digest, IMGFS_MAX_CONFIG_SIZE, &f.data, &f.len,
					   err);
	else
		rc = src->get_blob_mem(src->ctx, &d->digest, d->size, &f, err);
	if (rc == 0)
		rc = imgfs_oci_parse_config(f.data, f.len, out, err);
	if (rc == 0)
		rc = imgfs_store_put_blob(s, &d->digest, d->media_type, f.data, f.len, err);
	imgfs_fetched_destroy(&f);
	if (rc < 0)
		return imgfs_error_wrap(err, "config %s", d->digest.str);
	return 0;
}

/* opts->max_size bounds the image's compressed size from its manifest alone,
 * before the config or any layer is fetched. */
static int check_size(const struct imgfs_fetched *mf, const struct imgfs_manifest *m,
		      const struct imgfs_pull_opts *opts, struct imgfs_error *err)
{
	uint64_t total = mf->len;

	if (!opts || !opts->max_size)
		return 0;
	/* sizes are the manifest's word: saturate rather than wrap */
	for (size_t i = 0; i <= m->n_layers; i++) {
		uint64_t sz = i < m->n_layers ? m->layers[i].size : m->config.size;
		total = sz > UINT64_MAX - total ? UINT64_MAX : total + sz;
	}
	if (total <= opts->max_size)
		return 0;
	return imgfs_error_set(err, EFBIG,
			       "manifest %s: the image is %llu bytes compressed, more than the "
			       "%llu bytes this pull may bring in",
			       mf->digest.str, (unsigned long long)total,
			       (unsigned long long)opts->max_size);
}

/* From the top document down to one image manifest. On return *mf holds the
 * manifest's bytes and *index_desc (or NULL) the first index's descriptor. */
static int resolve_manifest(struct imgfs_store *s, struct pull_source *src, const char *reference,
			    const struct imgfs_platform *want, struct imgfs_fetched *mf, char **mt,
			    json_t **index_desc, struct imgfs_error *err)
{
	const struct imgfs_descriptor *desc = NULL;
	struct imgfs_index *idx = NULL;
	struct imgfs_descriptor chosen = {0};
	enum imgfs_doc_kind kind;
	int depth = 0;

	*index_desc = NULL;
	for (;;) {
		size_t pick;
		if (fetch_doc(src, desc ? desc->digest.str : reference, desc, mf, &kind, mt, err) <
		    0)
			goto fail;
		if (imgfs_store_put_blob(s, &mf->digest, *mt, mf->data, mf->len, err) < 0)
			goto fail;
		if (kind == IMGFS_DOC_MANIFEST)
			break;
		if (++depth > MAX_INDEX_DEPTH) {
			imgfs_error_set(err, EIO, "indexes nested more than %d deep",
					MAX_INDEX_DEPTH);
			goto fail;
		}
		if (!*index_desc)
			*index_desc = pull_descriptor_json(*mt, &mf->digest, mf->len);
		if (imgfs_oci_parse_index(mf->data, mf->len, &idx, err) < 0 ||
		    imgfs_platform_select(idx, want, &pick, err) < 0) {
			imgfs_error_wrap(err, "index %s", mf->digest.str);
			goto fail;
		}
		imgfs_descriptor_destroy(&chosen);
		chosen = idx->manifests[pick];
		memset(&idx->manifests[pick], 0, sizeof(idx->manifests[pick]));
		imgfs_index_free(idx);
		idx = NULL;
		desc = &chosen;
		imgfs_fetched_destroy(mf);
		free(*mt);
		*mt = NULL;
	}
	imgfs_descriptor_destroy(&chosen);
	return 0;
fail:
	imgfs_index_free(idx);
	imgfs_descriptor_destroy(&chosen);
	json_decref(*index_desc);
	*index_desc = NULL;
	return -1;
}

int pull_image(struct imgfs_store *s, struct pull_source *src, const char *name,
	       const char *reference, const struct imgfs_pull_opts *opts, json_t **record,
	       struct imgfs_error *err)
{
	struct imgfs_platform want = {0};
	struct imgfs_fetched mf = {0};
	struct imgfs_manifest *m = NULL;
	struct imgfs_config *c = NULL;
	struct imgfs_digest *chain_ids = NULL;
	json_t *index_desc = NULL, *rec = NULL;
	_cleanup_free_ char *mt = NULL;
	_cleanup_free_ char *plat = NULL;
	int rc = -1;

	if (want_platform(opts, &want, err) < 0)
		return -1;
	if (resolve_manifest(s, src, reference, &want, &mf, &mt, &index_desc, err) < 0)
		goto out;
	if (imgfs_oci_parse_manifest(mf.data, mf.len, &m, err) < 0) {
		imgfs_error_wrap(err, "manifest %s", mf.digest.str);
		goto out;
	}
	if (check_size(&mf, m, opts, err) < 0 || get_config(s, src, &m->config, &c, err) < 0)
		goto out;
	if (c->n_diff_ids != m->n_layers) {
		imgfs_error_set(err, EIO,
				"manifest %s has %zu layers but its config lists %zu diff_ids",
				mf.digest.str, m->n_layers, c->n_diff_ids);
		goto out;
	}
	if (!platform_matches(&want, &c->platform)) {
		_cleanup_free_ char *have = imgfs_platform_string(&c->platform);
		_cleanup_free_ char *w = imgfs_platform_string(&want);
		if (opts && opts->platform) {
			imgfs_error_set(err, ENOENT, "image is for %s, not the requested %s", have,
					w);
			goto out;
		}
		imgfs_warn("%s: image is for %s, this host is %s", name, have, w);
	}
	plat = imgfs_platform_string(c->platform.os ? &c->platform : &want);
	chain_ids = calloc(m->n_layers ? m->n_layers : 1, sizeof(*chain_ids));
	if (!chain_ids) {
		imgfs_error_set(err, ENOMEM, "out of memory");
		goto out;
	}
	if (pull_layers(s, src, name, m, c, chain_ids, opts, err) < 0)
		goto out;
	rec = build_record(name, index_desc, &mf, mt, m, c, chain_ids, plat);
	if (imgfs_store_put_image(s, name, rec, err) < 0)
		goto out;
	if (record)
		*record = json_incref(rec);
	rc = 0;
out:
	json_decref(rec);
	json_decref(index_desc);
	free(chain_ids);
	imgfs_config_free(c);
	imgfs_manifest_free(m);
	imgfs_fetched_destroy(&mf);
	imgfs_platform_destroy(&want);
	return rc;
}

/* ---- the registry as a source -------------------------------------------- */

struct registry_src {
	struct imgfs_registry *r;
	const char *path;
};

static int reg_get_manifest(void *ctx, const char *reference, struct imgfs_fetched *out,
			    struct imgfs_error *err)
{
	struct registry_src *rs = ctx;
	return imgfs_registry_get_manifest(rs->r, rs->path, reference, IMGFS_MAX_MANIFEST_SIZE, out,
					   err);
}

static int reg_get_blob_mem(void *ctx, const struct imgfs_digest *d, uint64_t size,
			    struct imgfs_fetched *out, struct imgfs_error *err)
{
	struct registry_src *rs = ctx;
	return imgfs_registry_get_blob_mem(rs->r, rs->path, d, size, out, err);
}

static int reg_get_blob(void *ctx, const struct imgfs_digest *d, uint64_t offset,
			imgfs_sink_fn sink, void *sink_ctx, bool *restarted, const char **served_by,
			struct imgfs_error *err)
{
	struct registry_src *rs = ctx;
	return imgfs_registry_get_blob(rs->r, rs->path, d, offset, sink, sink_ctx, restarted,
				       served_by, err);
}

/* Everything rec needs is in the store: its documents, layer blobs and snapshots. */
static bool record_complete(struct imgfs_store *s, json_t *rec)
{
	static const char *keys[] = {"target", "config", "index"};
	struct imgfs_error e;
	struct imgfs_digest d;
	json_t *l;
	size_t i;

	for (i = 0; i < 3; i++) {
		json_t *desc = json_object_get(rec, keys[i]);
		if (!json_is_object(desc))
			continue;
		if (imgfs_digest_parse(&d, json_string_value(json_object_get(desc, "digest")), &e) <
			0 ||
		    !imgfs_store_has_blob(s, &d, UINT64_MAX))
			return false;
	}
	json_array_foreach(json_object_get(rec, "layers"), i, l)
	{
		char *dir = NULL;
		if (imgfs_digest_parse(&d, json_string_value(json_object_get(l, "digest")), &e) <
			0 ||
		    !imgfs_store_has_blob(s, &d, UINT64_MAX) ||
		    imgfs_digest_parse(&d, json_string_value(json_object_get(l, "chainID")), &e) <
			0 ||
		    imgfs_store_snapshot_dir(s, &d, &dir, &e) < 0)
			return false;
		free(dir);
	}
	return true;
}

/*
 * A re-pull of a tag already in the store: one HEAD tells whether the tag still
 * names what we have (Docker Hub does not count a HEAD as a pull). True with
 * *record set when nothing needs fetching; false to pull normally (no record,
 * another platform asked for, no digest header, any error).
 */
static bool up_to_date(struct imgfs_store *s, struct imgfs_registry *r, const struct imgfs_ref *ref,
		       const char *name, const struct imgfs_pull_opts *opts, json_t **record)
{
	struct imgfs_platform want = {0};
	struct imgfs_error e = {0};
	struct imgfs_digest head;
	json_t *rec = NULL, *index;
	const char *have, *plat;
	bool ok = false;

	if (ref->has_digest || imgfs_store_get_image(s, name, &rec, &e) < 0)
		return false;
	index = json_object_get(rec, "index");
	have = json_string_value(json_object_get(
	    json_is_object(index) ? index : json_object_get(rec, "target"), "digest"));
	if (json_is_object(index) || (opts && opts->platform)) {
		/* the same index also holds other platforms than the one we have */
		_cleanup_free_ char *w = NULL;
		if (want_platform(opts, &want, &e) < 0)
			goto out;
		w = imgfs_platform_string(&want);
		plat = json_string_value(json_object_get(rec, "platform"));
		if (!plat || strcmp(w, plat))
			goto out;
	}
	if (!have || imgfs_registry_head_manifest(r, ref->path, ref->tag, &head, &e) < 0 ||
	    strcmp(head.str, have) || !record_complete(s, rec))
		goto out;
	ok = true;
	*record = json_incref(rec);
out:
	if (!ok)
		imgfs_debug("%s: full pull (%s)", name,
			    e.code ? e.msg : "the tag moved or content is missing");
	imgfs_platform_destroy(&want);
	json_decref(rec);
	return ok;
}

struct find_digest {
	const char *repo; /* "<domain>/<path>" */
	const char *digest;
	char *name;
	json_t *rec;
};

/* An image of the same repository whose manifest (or index) is the digest. */
static int find_by_digest(void *ctx, const char *name, json_t *rec);

/*
 * A pull by digest of content the store already holds under another name of
 * the same repository (repo:tag whose manifest, or whose index for this
 * platform, is the digest): record it under the digest's name without asking
 * the registry. The content is the digest's whatever name found it: every
 * blob in the store was verified. True with *record set when done.
 */
static bool adopt_local(struct imgfs_store *s, const struct imgfs_ref *ref, const char *name,
			const struct imgfs_pull_opts *opts, json_t **record)
{
	_cleanup_free_ char *repo = imgfs_xasprintf("%s/%s", ref->domain, ref->path);
	struct find_digest f = {.repo = repo, .digest = ref->digest.str};
	struct imgfs_platform want = {0};
	struct imgfs_error e = {0};
	const char *t, *plat;
	json_t *copy = NULL;
	bool ok = false;

	if (!ref->has_digest || imgfs_store_list_images(s, find_by_digest, &f, &e) < 0 || !f.name)
		goto out;
	t = json_string_value(json_object_get(json_object_get(f.rec, "target"), "digest"));
	if (!t || strcmp(t, ref->digest.str)) {
		/* found by its index: only for the same platform */
		_cleanup_free_ char *w = NULL;
		if (want_platform(opts, &want, &e) < 0)
			goto out;
		w = imgfs_platform_string(&want);
		plat = json_string_value(json_object_get(f.rec, "platform"));
		if (!plat || strcmp(w, plat))
			goto out;
	}
	if (!record_complete(s, f.rec) || !(copy = json_deep_copy(f.rec)))
		goto out;
	json_object_set_new(copy, "name", json_string(name));
	if (t && !strcmp(t, ref->digest.str)) /* as a pull of the manifest itself records it */
		json_object_set_new(copy, "index", json_null());
	json_object_set_new(copy, "pulled", json_integer((json_int_t)time(NULL)));
	if (imgfs_store_put_image(s, name, copy, &e) < 0)
		goto out;
	imgfs_debug("%s: recorded from %s, already in the store", name, f.name);
	*record = json_incref(copy);
	ok = true;
out:
	imgfs_platform_destroy(&want);
	json_decref(copy);
	json_decref(f.rec);
	free(f.name);
	return ok;
}

/* Progress for an image found up to date: every layer already present. */
static void report_present(const struct imgfs_pull_opts *opts, const char *name, json_t *rec)
{
	json_t *layers = json_object_get(rec, "layers"), *l;
	struct imgfs_pull_layer_progress *p;
	size_t i, n = json_array_size(layers);

	if (!opts || !opts->progress || !(p = calloc(n ? n : 1, sizeof(*p))))
		return;
	json_array_foreach(layers, i, l)
	{
		p[i].digest = json_string_value(json_object_get(l, "digest"));
		p[i].size = (uint64_t)json_integer_value(json_object_get(l, "size"));
		p[i].downloaded = p[i].extracted = p[i].size;
		p[i].state = IMGFS_LAYER_EXISTS;
	}
	opts->progress(opts->progress_ctx,
		       &(struct imgfs_pull_progress){
			   .name = name, .n_layers = n, .layers = p, .finished = true});
	free(p);
}

int imgfs_pull(struct imgfs_store *s, const char *refstr, const struct imgfs_pull_opts *opts,
	       json_t **record, struct imgfs_error *err)
{
	struct imgfs_fetch_config defcfg;
	const struct imgfs_fetch_config *cfg = opts && opts->fetch ? opts->fetch : NULL;
	struct imgfs_ref ref = {0};
	struct imgfs_registry *r = NULL;
	struct registry_src rs;
	struct pull_source src;
	_cleanup_free_ char *canonical = NULL;
	_cleanup_free_ char *name = NULL;
	int rc;

	if (imgfs_ref_parse(refstr, &ref, err) < 0)
		return -1;
	canonical = imgfs_ref_string(&ref);
	name = imgfs_ref_store_name(&ref);
	if (!cfg) {
		imgfs_fetch_config_init(&defcfg);
		cfg = &defcfg;
	}
	rc = imgfs_registry_new(&ref, cfg, &r, err);
	if (rc == 0)
		rc = imgfs_store_lock_shared(s, err);
	if (rc == 0) {
		json_t *rec = NULL;
		bool offline = opts && opts->offline;
		if ((!offline && up_to_date(s, r, &ref, name, opts, &rec)) ||
		    adopt_local(s, &ref, name, opts, &rec)) {
			report_present(opts, name, rec);
			if (record)
				*record = rec;
			else
				json_decref(rec);
			imgfs_store_unlock(s);
			goto done;
		}
		if (offline) {
			rc = imgfs_error_set(err, ENOENT, "the store has no image %s", name);
			imgfs_store_unlock(s);
			goto done;
		}
		rs = (struct registry_src){.r = r, .path = ref.path};
		src = (struct pull_source){.get_manifest = reg_get_manifest,
					   .get_blob_mem = reg_get_blob_mem,
					   .get_blob = reg_get_blob,
					   .ctx = &rs,
					   .max_downloads = cfg->max_concurrent_downloads};
		rc = pull_image(s, &src, name, ref.has_digest ? ref.digest.str : ref.tag, opts,
				record, err);
		imgfs_store_unlock(s);
	}
done:
	imgfs_registry_free(r);
	imgfs_ref_destroy(&ref);
	if (rc < 0)
		return imgfs_error_wrap(err, "pull %s", canonical);
	return 0;
}

/* ---- lookup --------------------------------------------------------------- */

static int find_by_digest(void *ctx, const char *name, json_t *rec)
{
	struct find_digest *f = ctx;
	const char *t =
	    json_string_value(json_object_get(json_object_get(rec, "target"), "digest"));
	const char *i = json_string_value(json_object_get(json_object_get(rec, "index"), "digest"));
	size_t rl = strlen(f->repo);

	if (strncmp(name, f->repo, rl) || (name[rl] != ':' && name[rl] != '@'))
		return 0;
	if ((t && !strcmp(t, f->digest)) || (i && !strcmp(i, f->digest))) {
		f->name = imgfs_xstrdup(name);
		f->rec = json_incref(rec);
		return 1;
	}
	return 0;
}

int imgfs_pull_lookup(struct imgfs_store *s, const char *refstr, char **name, json_t **record,
		      struct imgfs_error *err)
{
	struct imgfs_ref ref = {0};
	struct find_digest f = {0};
	json_t *rec = NULL;
	char *n;

	if (imgfs_ref_parse(refstr, &ref, err) < 0)
		return -1;
	n = imgfs_ref_store_name(&ref);
	if (imgfs_store_get_image(s, n, &rec, err) == 0)
		goto found;
	if (err->code != ENOENT)
		goto fail;
	if (ref.has_digest) {
		_cleanup_free_ char *repo = imgfs_xasprintf("%s/%s", ref.domain, ref.path);
		f.repo = repo;
		f.digest = ref.digest.str;
		if (imgfs_store_list_images(s, find_by_digest, &f, err) < 0)
			goto fail;
		if (f.name) {
			free(n);
			n = f.name;
			rec = f.rec;
			goto found;
		}
	}
	imgfs_error_set(err, ENOENT, "no image %s in the store", n);
fail:
	free(n);
	imgfs_ref_destroy(&ref);
	return -1;
found:
	imgfs_ref_destroy(&ref);
	*name = n;
	if (record)
		*record = rec;
	else
		json_decref(rec);
	return 0;
}
