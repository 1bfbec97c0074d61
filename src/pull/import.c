/* SPDX-License-Identifier: Apache-2.0 */
/* A local OCI image layout (what `skopeo copy … oci:DIR` writes) as a pull
 * source: the same verification and unpack path as a registry pull. */
#include "pull_i.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

struct layout_src {
	const char *dir;
};

static char *layout_blob_path(const struct layout_src *ls, const struct imgfs_digest *d)
{
	return imgfs_xasprintf("%s/blobs/%s/%s", ls->dir, imgfs_digest_alg_name(d->alg), d->hex);
}

static int read_verified(const struct layout_src *ls, const struct imgfs_digest *d, size_t max,
			 struct imgfs_fetched *out, struct imgfs_error *err)
{
	_cleanup_free_ char *path = layout_blob_path(ls, d);
	memset(out, 0, sizeof(*out));
	if (imgfs_read_file(path, max, &out->data, &out->len, err) < 0)
		return -1;
	imgfs_digest_buf(d->alg, out->data, out->len, &out->digest);
	if (!imgfs_digest_equal(&out->digest, d)) {
		imgfs_fetched_destroy(out);
		return imgfs_error_set(err, EIO, "%s: digest mismatch: content is %s", path,
				       out->digest.str);
	}
	return 0;
}

static int layout_get_manifest(void *ctx, const char *reference, struct imgfs_fetched *out,
			       struct imgfs_error *err)
{
	struct imgfs_digest d;
	if (imgfs_digest_parse(&d, reference, err) < 0)
		return -1;
	return read_verified(ctx, &d, IMGFS_MAX_MANIFEST_SIZE, out, err);
}

static int layout_get_blob_mem(void *ctx, const struct imgfs_digest *d, uint64_t size,
			       struct imgfs_fetched *out, struct imgfs_error *err)
{
	if (read_verified(ctx, d, size, out, err) < 0)
		return -1;
	if (out->len != size) {
		imgfs_fetched_destroy(out);
		return imgfs_error_set(err, EIO, "blob %s: %zu bytes, the manifest says %llu",
				       d->str, out->len, (unsigned long long)size);
	}
	return 0;
}

static int layout_get_blob(void *ctx, const struct imgfs_digest *d, uint64_t offset,
			   imgfs_sink_fn sink, void *sink_ctx, bool *restarted,
			   const char **served_by, struct imgfs_error *err)
{
	_cleanup_free_ char *path = layout_blob_path(ctx, d);
	_cleanup_free_ char *buf = malloc(1 << 20);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (!buf)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	if (fd < 0)
		return imgfs_error_errno(err, errno, "open %s", path);
	*restarted = false;
	*served_by = "local layout";
	for (;;) {
		n = pread(fd, buf, 1 << 20, (off_t)offset);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return imgfs_error_errno(err, errno, "read %s", path);
		if (n == 0)
			return 0;
		if (sink(sink_ctx, buf, (size_t)n, err) < 0)
			return -1;
		offset += (uint64_t)n;
	}
}

/* The name for an index.json entry: its ref.name annotation when that is a
 * whole reference, else base_name:<tag>. */
static char *entry_name(const struct imgfs_descriptor *d, const char *base_name,
			struct imgfs_error *err)
{
	struct imgfs_ref ref = {0};
	char *full, *name;

	if (!d->ref_name) {
		imgfs_error_set(err, EINVAL,
				"index.json entry %s has no org.opencontainers.image.ref.name",
				d->digest.str);
		return NULL;
	}
	if (strchr(d->ref_name, '/') || strchr(d->ref_name, ':'))
		full = imgfs_xstrdup(d->ref_name);
	else if (base_name)
		full = imgfs_xasprintf("%s:%s", base_name, d->ref_name);
	else {
		imgfs_error_set(
		    err, EINVAL,
		    "index.json entry %s is named only \"%s\": give a repository with --name",
		    d->digest.str, d->ref_name);
		return NULL;
	}
	if (imgfs_ref_parse(full, &ref, err) < 0) {
		imgfs_error_wrap(err, "index.json entry %s", d->digest.str);
		free(full);
		return NULL;
	}
	free(full);
	/* a name that pins a digest must pin this entry's: the record is stored
	 * under that digest, and answers every lookup of it */
	if (ref.has_digest && !imgfs_digest_equal(&ref.digest, &d->digest)) {
		imgfs_error_set(
		    err, EINVAL,
		    "index.json entry %s is named \"%.300s\", which pins another digest",
		    d->digest.str, d->ref_name);
		imgfs_ref_destroy(&ref);
		return NULL;
	}
	name = imgfs_ref_store_name(&ref);
	imgfs_ref_destroy(&ref);
	return name;
}

int imgfs_import_layout(struct imgfs_store *s, const char *dir, const char *base_name,
			const struct imgfs_pull_opts *opts,
			void (*fn)(void *ctx, const char *name, json_t *record), void *ctx,
			struct imgfs_error *err)
{
	struct layout_src ls = {.dir = dir};
	struct pull_source src = {.get_manifest = layout_get_manifest,
				  .get_blob_mem = layout_get_blob_mem,
				  .get_blob = layout_get_blob,
				  .ctx = &ls,
				  .max_downloads = 2};
	_cleanup_free_ char *path = imgfs_xasprintf("%s/oci-layout", dir);
	_cleanup_free_ char *buf = NULL;
	struct imgfs_index *idx = NULL;
	size_t len, imported = 0;
	int rc = 0;

	if (access(path, R_OK) < 0)
		return imgfs_error_errno(err, errno,
					 "%s is not an OCI image layout (no oci-layout file)", dir);
	free(path);
	path = imgfs_xasprintf("%s/index.json", dir);
	if (imgfs_read_file(path, IMGFS_MAX_MANIFEST_SIZE, &buf, &len, err) < 0 ||
	    imgfs_oci_parse_index(buf, len, &idx, err) < 0)
		return imgfs_error_wrap(err, "import %s", dir);
	if (imgfs_store_lock_shared(s, err) < 0) {
		imgfs_index_free(idx);
		return -1;
	}
	for (size_t i = 0; rc == 0 && i < idx->n_manifests; i++) {
		const struct imgfs_descriptor *d = &idx->manifests[i];
		json_t *rec = NULL;
		char *name = entry_name(d, base_name, err);
		if (!name) {
			rc = -1;
			break;
		}
		rc = pull_image(s, &src, name, d->digest.str, opts, &rec, err);
		if (rc < 0)
			imgfs_error_wrap(err, "%s", name);
		else if (fn)
			fn(ctx, name, rec);
		json_decref(rec);
		free(name);
		imported++;
	}
	imgfs_store_unlock(s);
	imgfs_index_free(idx);
	if (rc == 0 && imported == 0)
		return imgfs_error_set(err, ENOENT, "import %s: index.json lists no images", dir);
	return rc < 0 ? imgfs_error_wrap(err, "import %s", dir) : 0;
}
