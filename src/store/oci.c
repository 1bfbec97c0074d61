/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI / Docker schema2 JSON model: classify a fetched document, parse
 * indexes, manifests and image configs. Every document is untrusted: JSON is
 * loaded with duplicate keys refused, trailing bytes refused and nesting
 * bounded before jansson sees it; every field is type-checked; sizes are
 * non-negative integers that fit in int64 (jansson refuses larger integers).
 */
#include "store.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Image documents are shallow; configs nest a few levels. */
#define OCI_MAX_DEPTH 64

static void oci_json_decrefp(json_t **j)
{
	if (*j)
		json_decref(*j);
}
#define _cleanup_json_ __attribute__((cleanup(oci_json_decrefp)))

/* ---- loading ---------------------------------------------------------------- */

/* Refuse nesting deeper than OCI_MAX_DEPTH without recursion. */
static int check_depth(const char *buf, size_t len, struct imgfs_error *err)
{
	int depth = 0;
	bool in_str = false;

	for (size_t i = 0; i < len; i++) {
		char c = buf[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = false;
			continue;
		}
		if (c == '"') {
			in_str = true;
		} else if (c == '{' || c == '[') {
			if (++depth > OCI_MAX_DEPTH)
				return imgfs_error_set(
				    err, EIO, "malformed JSON: nested deeper than %d levels",
				    OCI_MAX_DEPTH);
		} else if (c == '}' || c == ']') {
			depth--;
		}
	}
	return 0;
}

static int load_doc(const char *buf, size_t len, size_t max, json_t **out, struct imgfs_error *err)
{
	json_error_t je;
	json_t *j;

	if (len == 0)
		return imgfs_error_set(err, EIO, "malformed JSON: empty document");
	if (len > max)
		return imgfs_error_set(err, EIO, "document of %zu bytes exceeds the limit of %zu",
				       len, max);
	if (check_depth(buf, len, err) < 0)
		return -1;
	/* Without JSON_DISABLE_EOF_CHECK jansson refuses trailing non-space bytes. */
	j = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
	if (!j)
		return imgfs_error_set(err, EIO, "malformed JSON at line %d column %d: %s", je.line,
				       je.column, je.text);
	if (!json_is_object(j)) {
		json_decref(j);
		return imgfs_error_set(err, EIO, "document is not a JSON object");
	}
	*out = j;
	return 0;
}

/* Optional string member: NULL when absent, -1 when present but not a string. */
static int opt_string(json_t *obj, const char *key, const char **out, const char *what,
		      struct imgfs_error *err)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v)
		return 0;
	if (!json_is_string(v))
		return imgfs_error_set(err, EIO, "%s: \"%s\" must be a string", what, key);
	*out = json_string_value(v);
	return 0;
}

static char *dup_or_null(const char *s)
{
	return s ? imgfs_xstrdup(s) : NULL;
}

static int check_schema_version(json_t *root, struct imgfs_error *err)
{
	json_t *v = json_object_get(root, "schemaVersion");
	if (!v)
		return imgfs_error_set(err, EIO, "missing schemaVersion");
	if (!json_is_integer(v))
		return imgfs_error_set(err, EIO, "schemaVersion must be an integer");
	if (json_integer_value(v) != 2)
		return imgfs_error_set(err, EIO, "unsupported schemaVersion %lld, expected 2",
				       (long long)json_integer_value(v));
	return 0;
}

/* ---- media types ------------------------------------------------------------ */

static bool is_index_type(const char *mt)
{
	return !strcmp(mt, IMGFS_MT_OCI_INDEX) || !strcmp(mt, IMGFS_MT_DOCKER_LIST);
}

static bool is_manifest_type(const char *mt)
{
	return !strcmp(mt, IMGFS_MT_OCI_MANIFEST) || !strcmp(mt, IMGFS_MT_DOCKER_MANIFEST);
}

static bool is_schema1_type(const char *mt)
{
	return !strcmp(mt, IMGFS_MT_DOCKER_SCHEMA1) || !strcmp(mt, IMGFS_MT_DOCKER_SCHEMA1_SIGNED);
}

static bool is_config_type(const char *mt)
{
	return !strcmp(mt, IMGFS_MT_OCI_CONFIG) || !strcmp(mt, IMGFS_MT_DOCKER_CONFIG);
}

static const char *const layer_types[] = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
};

static bool is_layer_type(const char *mt)
{
	for (size_t i = 0; i < sizeof(layer_types) / sizeof(layer_types[0]); i++)
		if (!strcmp(mt, layer_types[i]))
			return true;
	return false;
}

static bool is_foreign_type(const char *mt)
{
	return !strncmp(mt, "application/vnd.oci.image.layer.nondistributable.", 49) ||
	       !strcmp(mt, "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip");
}

/* Copy the Content-Type's media type (parameters and spaces dropped, lowercased). */
static void content_type_base(const char *ct, char *out, size_t outlen)
{
	size_t n = 0;

	out[0] = '\0';
	if (!ct)
		return;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	for (; *ct && *ct != ';' && n + 1 < outlen; ct++)
		out[n++] = (char)((*ct >= 'A' && *ct <= 'Z') ? *ct - 'A' + 'a' : *ct);
	while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == '\t'))
		n--;
	out[n] = '\0';
}

/* ---- classify ----------------------------------------------------------------- */

static bool looks_schema1(json_t *root, const char *body_mt, const char *ct)
{
	json_t *sv = json_object_get(root, "schemaVersion");
	if ((body_mt && is_schema1_type(body_mt)) || is_schema1_type(ct))
		return true;
	return json_is_integer(sv) && json_integer_value(sv) == 1 &&
	       (json_object_get(root, "fsLayers") || json_object_get(root, "signatures"));
}

/* The kind the shape says: 0 none, -1 ambiguous. */
static int shape_kind(json_t *root)
{
	bool idx = json_object_get(root, "manifests") != NULL;
	bool man = json_object_get(root, "layers") || json_object_get(root, "config");
	if (idx && man)
		return -1;
	return idx ? IMGFS_DOC_INDEX : man ? IMGFS_DOC_MANIFEST : 0;
}

static const char *kind_name(int kind)
{
	return kind == IMGFS_DOC_INDEX ? "index" : "manifest";
}

static int kind_of_type(const char *mt)
{
	return is_index_type(mt) ? IMGFS_DOC_INDEX : is_manifest_type(mt) ? IMGFS_DOC_MANIFEST : 0;
}

int imgfs_oci_classify(const char *buf, size_t len, const char *content_type,
		       enum imgfs_doc_kind *kind, char **media_type, struct imgfs_error *err)
{
	_cleanup_json_ json_t *root = NULL;
	char ct[256];
	const char *body_mt, *mt;
	int shape, ct_kind, k;

	content_type_base(content_type, ct, sizeof(ct));
	if (is_schema1_type(ct))
		return imgfs_error_set(err, ENOTSUP,
				       "schema1 manifests are not supported (Content-Type %s)", ct);
	if (load_doc(buf, len, IMGFS_MAX_MANIFEST_SIZE, &root, err) < 0)
		return -1;
	if (opt_string(root, "mediaType", &body_mt, "document", err) < 0)
		return -1;
	if (looks_schema1(root, body_mt, ct))
		return imgfs_error_set(err, ENOTSUP, "schema1 manifests are not supported");
	shape = shape_kind(root);
	if (shape < 0)
		return imgfs_error_set(
		    err, EIO,
		    "ambiguous document: it has both \"manifests\" and \"layers\"/\"config\"");
	ct_kind = kind_of_type(ct);
	if (body_mt && !kind_of_type(body_mt))
		return imgfs_error_set(err, ENOTSUP, "unsupported media type %s", body_mt);
	/* A generic Content-Type (application/json, octet-stream) says nothing. */
	if (body_mt && ct_kind && strcmp(body_mt, ct))
		return imgfs_error_set(
		    err, EIO, "document mediaType %s contradicts Content-Type %s", body_mt, ct);
	mt = body_mt ? body_mt : ct_kind ? ct : NULL;
	if (!mt && !shape)
		return imgfs_error_set(
		    err, EIO,
		    "unknown document type: no mediaType and neither \"manifests\" "
		    "nor \"layers\"");
	if (!mt)
		mt = shape == IMGFS_DOC_INDEX ? IMGFS_MT_OCI_INDEX : IMGFS_MT_OCI_MANIFEST;
	k = kind_of_type(mt);
	if (shape && shape != k)
		return imgfs_error_set(err, EIO, "expected %s but found %s (mediaType %s)",
				       kind_name(k), kind_name(shape), mt);
	*kind = (enum imgfs_doc_kind)k;
	*media_type = imgfs_xstrdup(mt);
	return 0;
}

/* ---- descriptors and platforms ---------------------------------------------- */

void imgfs_platform_destroy(struct imgfs_platform *p)
{
	if (!p)
		return;
	free(p->os);
	free(p->architecture);
	free(p->variant);
	free(p->os_version);
	memset(p, 0, sizeof(*p));
}

char *imgfs_platform_string(const struct imgfs_platform *p)
{
	const char *os = p->os ? p->os : "unknown";
	const char *arch = p->architecture ? p->architecture : "unknown";
	if (p->variant && *p->variant)
		return imgfs_xasprintf("%s/%s/%s", os, arch, p->variant);
	return imgfs_xasprintf("%s/%s", os, arch);
}

void imgfs_descriptor_destroy(struct imgfs_descriptor *d)
{
	if (!d)
		return;
	free(d->media_type);
	imgfs_platform_destroy(&d->platform);
	free(d->ref_name);
	memset(d, 0, sizeof(*d));
}

/* Normalise architecture names the way containerd does. */
static void normalise_arch(struct imgfs_platform *p)
{
	static const struct {
		const char *from, *to, *variant;
	} map[] = {
	    {"x86_64", "amd64", NULL}, {"x86-64", "amd64", NULL}, {"aarch64", "arm64", NULL},
	    {"i386", "386", NULL},     {"armhf", "arm", "v7"},	  {"armel", "arm", "v6"},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (strcmp(p->architecture, map[i].from))
			continue;
		free(p->architecture);
		p->architecture = imgfs_xstrdup(map[i].to);
		if (map[i].variant && !p->variant)
			p->variant = imgfs_xstrdup(map[i].variant);
		return;
	}
}

static int parse_platform(json_t *pj, struct imgfs_platform *p, const char *what,
			  struct imgfs_error *err)
{
	const char *os, *arch, *variant, *osv;

	if (!json_is_object(pj))
		return imgfs_error_set(err, EIO, "%s: \"platform\" must be an object", what);
	if (opt_string(pj, "os", &os, what, err) < 0 ||
	    opt_string(pj, "architecture", &arch, what, err) < 0 ||
	    opt_string(pj, "variant", &variant, what, err) < 0 ||
	    opt_string(pj, "os.version", &osv, what, err) < 0)
		return -1;
	if (!os || !arch || !*os || !*arch)
		return imgfs_error_set(err, EIO, "%s: platform needs \"os\" and \"architecture\"",
				       what);
	p->os = imgfs_xstrdup(os);
	p->architecture = imgfs_xstrdup(arch);
	p->variant = variant && *variant ? imgfs_xstrdup(variant) : NULL;
	p->os_version = osv && *osv ? imgfs_xstrdup(osv) : NULL;
	normalise_arch(p);
	return 0;
}

static int parse_size(json_t *v, uint64_t *out, const char *what, struct imgfs_error *err)
{
	if (!v)
		return imgfs_error_set(err, EIO, "%s: missing \"size\"", what);
	/* jansson refuses integers beyond int64 at parse time, so a json integer fits. */
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return imgfs_error_set(err, EIO, "%s: \"size\" must be a non-negative integer",
				       what);
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int parse_annotations(json_t *dj, struct imgfs_descriptor *d, const char *what,
			     struct imgfs_error *err)
{
	json_t *ann = json_object_get(dj, "annotations");
	const char *ref, *type;

	if (!ann)
		return 0;
	if (!json_is_object(ann))
		return imgfs_error_set(err, EIO, "%s: \"annotations\" must be an object", what);
	if (opt_string(ann, "org.opencontainers.image.ref.name", &ref, what, err) < 0 ||
	    opt_string(ann, "vnd.docker.reference.type", &type, what, err) < 0)
		return -1;
	d->ref_name = dup_or_null(ref);
	d->is_attestation = type && !strcmp(type, "attestation-manifest");
	return 0;
}

/* Parse dj into d (zeroed by the caller); with_platform for index entries. */
static int parse_descriptor(json_t *dj, struct imgfs_descriptor *d, bool with_platform,
			    const char *what, struct imgfs_error *err)
{
	const char *mt, *dg;
	json_t *pj;

	if (!json_is_object(dj))
		return imgfs_error_set(err, EIO, "%s: descriptor must be an object", what);
	if (opt_string(dj, "mediaType", &mt, what, err) < 0 ||
	    opt_string(dj, "digest", &dg, what, err) < 0)
		return -1;
	if (!mt)
		return imgfs_error_set(err, EIO, "%s: missing \"mediaType\"", what);
	if (!dg)
		return imgfs_error_set(err, EIO, "%s: missing \"digest\"", what);
	if (imgfs_digest_parse(&d->digest, dg, err) < 0)
		return imgfs_error_wrap(err, "%s", what);
	if (parse_size(json_object_get(dj, "size"), &d->size, what, err) < 0)
		return -1;
	d->media_type = imgfs_xstrdup(mt);
	if (!with_platform)
		return 0;
	pj = json_object_get(dj, "platform");
	if (pj && !json_is_null(pj)) {
		if (parse_platform(pj, &d->platform, what, err) < 0)
			return -1;
		d->has_platform = true;
	}
	return parse_annotations(dj, d, what, err);
}

/* ---- index -------------------------------------------------------------------- */

void imgfs_index_free(struct imgfs_index *idx)
{
	if (!idx)
		return;
	for (size_t i = 0; i < idx->n_manifests; i++)
		imgfs_descriptor_destroy(&idx->manifests[i]);
	free(idx->manifests);
	free(idx->media_type);
	free(idx);
}

int imgfs_oci_parse_index(const char *buf, size_t len, struct imgfs_index **out,
			  struct imgfs_error *err)
{
	_cleanup_json_ json_t *root = NULL;
	struct imgfs_index *idx;
	const char *mt;
	json_t *arr;
	size_t n, bytes;

	if (load_doc(buf, len, IMGFS_MAX_MANIFEST_SIZE, &root, err) < 0 ||
	    opt_string(root, "mediaType", &mt, "index", err) < 0)
		return imgfs_error_wrap(err, "index");
	if (mt && is_schema1_type(mt))
		return imgfs_error_set(err, ENOTSUP, "index: schema1 manifests are not supported");
	if (mt && !is_index_type(mt))
		return imgfs_error_set(err, EIO, "index: expected index but found mediaType %s",
				       mt);
	if (shape_kind(root) != IMGFS_DOC_INDEX)
		return imgfs_error_set(err, EIO,
				       shape_kind(root) < 0
					   ? "index: ambiguous document: it has both "
					     "\"manifests\" and \"layers\"/\"config\""
					   : "index: missing \"manifests\"");
	if (check_schema_version(root, err) < 0)
		return imgfs_error_wrap(err, "index");
	arr = json_object_get(root, "manifests");
	if (!json_is_array(arr))
		return imgfs_error_set(err, EIO, "index: \"manifests\" must be an array");
	n = json_array_size(arr);
	if (imgfs_mul_overflow(n ? n : 1, sizeof(struct imgfs_descriptor), &bytes))
		return imgfs_error_set(err, EIO, "index: too many manifests");
	idx = calloc(1, sizeof(*idx));
	if (!idx || !(idx->manifests = calloc(1, bytes))) {
		free(idx);
		return imgfs_error_set(err, ENOMEM, "index: out of memory for %zu manifests", n);
	}
	idx->media_type = imgfs_xstrdup(mt ? mt : IMGFS_MT_OCI_INDEX);
	for (size_t i = 0; i < n; i++) {
		char what[64];
		snprintf(what, sizeof(what), "index: manifests[%zu]", i);
		idx->n_manifests = i + 1;
		if (parse_descriptor(json_array_get(arr, i), &idx->manifests[i], true, what, err) <
		    0) {
			imgfs_index_free(idx);
			return -1;
		}
	}
	*out = idx;
	return 0;
}

/* ---- manifest ------------------------------------------------------------------ */

void imgfs_manifest_free(struct imgfs_manifest *m)
{
	if (!m)
		return;
	imgfs_descriptor_destroy(&m->config);
	for (size_t i = 0; i < m->n_layers; i++)
		imgfs_descriptor_destroy(&m->layers[i]);
	free(m->layers);
	free(m->media_type);
	free(m);
}

static int check_layer_type(const struct imgfs_descriptor *d, size_t i, struct imgfs_error *err)
{
	if (is_layer_type(d->media_type))
		return 0;
	if (is_foreign_type(d->media_type))
		return imgfs_error_set(err, ENOTSUP,
				       "manifest: layer %zu (%s): foreign layers are not supported",
				       i, d->media_type);
	return imgfs_error_set(err, ENOTSUP, "manifest: layer %zu: unsupported layer media type %s",
			       i, d->media_type);
}

static int manifest_head(json_t *root, const char **mt, struct imgfs_error *err)
{
	if (opt_string(root, "mediaType", mt, "manifest", err) < 0)
		return -1;
	if (*mt && is_schema1_type(*mt))
		return imgfs_error_set(err, ENOTSUP,
				       "manifest: schema1 manifests are not supported");
	if (*mt && is_index_type(*mt))
		return imgfs_error_set(err, EIO, "manifest: expected manifest but found index (%s)",
				       *mt);
	if (*mt && !is_manifest_type(*mt))
		return imgfs_error_set(err, ENOTSUP, "manifest: unsupported media type %s", *mt);
	if (shape_kind(root) < 0)
		return imgfs_error_set(
		    err, EIO,
		    "manifest: ambiguous document: it has both \"manifests\" and "
		    "\"layers\"/\"config\"");
	if (check_schema_version(root, err) < 0)
		return imgfs_error_wrap(err, "manifest");
	return 0;
}

static int manifest_config(json_t *root, struct imgfs_manifest *m, struct imgfs_error *err)
{
	json_t *cj = json_object_get(root, "config");

	if (!cj)
		return imgfs_error_set(err, EIO, "manifest: missing \"config\"");
	if (parse_descriptor(cj, &m->config, false, "manifest: config", err) < 0)
		return -1;
	if (!is_config_type(m->config.media_type))
		return imgfs_error_set(err, ENOTSUP,
				       "manifest: config media type %s is not an image config "
				       "(an artifact such as a chart or signature?); not supported",
				       m->config.media_type);
	return 0;
}

int imgfs_oci_parse_manifest(const char *buf, size_t len, struct imgfs_manifest **out,
			     struct imgfs_error *err)
{
	_cleanup_json_ json_t *root = NULL;
	struct imgfs_manifest *m;
	const char *mt;
	json_t *arr;
	size_t n, bytes;

	if (load_doc(buf, len, IMGFS_MAX_MANIFEST_SIZE, &root, err) < 0)
		return imgfs_error_wrap(err, "manifest");
	if (manifest_head(root, &mt, err) < 0)
		return -1;
	arr = json_object_get(root, "layers");
	if (!json_is_array(arr))
		return imgfs_error_set(err, EIO, "manifest: \"layers\" must be an array");
	n = json_array_size(arr);
	if (imgfs_mul_overflow(n ? n : 1, sizeof(struct imgfs_descriptor), &bytes))
		return imgfs_error_set(err, EIO, "manifest: too many layers");
	m = calloc(1, sizeof(*m));
	if (!m || !(m->layers = calloc(1, bytes))) {
		free(m);
		return imgfs_error_set(err, ENOMEM, "manifest: out of memory for %zu layers", n);
	}
	m->media_type = imgfs_xstrdup(mt ? mt : IMGFS_MT_OCI_MANIFEST);
	if (manifest_config(root, m, err) < 0) {
		imgfs_manifest_free(m);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		char what[64];
		snprintf(what, sizeof(what), "manifest: layer %zu", i);
		m->n_layers = i + 1;
		if (parse_descriptor(json_array_get(arr, i), &m->layers[i], false, what, err) < 0 ||
		    check_layer_type(&m->layers[i], i, err) < 0) {
			imgfs_manifest_free(m);
			return -1;
		}
	}
	*out = m;
	return 0;
}

/* ---- config -------------------------------------------------------------------- */

void imgfs_config_free(struct imgfs_config *c)
{
	if (!c)
		return;
	imgfs_platform_destroy(&c->platform);
	free(c->created);
	free(c->diff_ids);
	free(c);
}

static int config_rootfs(json_t *root, struct imgfs_config *c, struct imgfs_error *err)
{
	json_t *rootfs = json_object_get(root, "rootfs"), *ids, *v;
	const char *type;
	size_t n, bytes, i;

	if (!json_is_object(rootfs))
		return imgfs_error_set(err, EIO, "config: missing \"rootfs\" object");
	if (opt_string(rootfs, "type", &type, "config: rootfs", err) < 0)
		return -1;
	if (!type || strcmp(type, "layers"))
		return imgfs_error_set(err, EIO,
				       "config: rootfs.type is \"%s\", expected \"layers\"",
				       type ? type : "(missing)");
	ids = json_object_get(rootfs, "diff_ids");
	if (!json_is_array(ids))
		return imgfs_error_set(err, EIO, "config: rootfs.diff_ids must be an array");
	n = json_array_size(ids);
	if (imgfs_mul_overflow(n ? n : 1, sizeof(struct imgfs_digest), &bytes) ||
	    !(c->diff_ids = calloc(1, bytes)))
		return imgfs_error_set(err, ENOMEM, "config: out of memory for %zu diff_ids", n);
	json_array_foreach(ids, i, v)
	{
		if (!json_is_string(v))
			return imgfs_error_set(err, EIO,
					       "config: rootfs.diff_ids[%zu] must be a string", i);
		if (imgfs_digest_parse(&c->diff_ids[i], json_string_value(v), err) < 0)
			return imgfs_error_wrap(err, "config: rootfs.diff_ids[%zu]", i);
		c->n_diff_ids = i + 1;
	}
	return 0;
}

int imgfs_oci_parse_config(const char *buf, size_t len, struct imgfs_config **out,
			   struct imgfs_error *err)
{
	_cleanup_json_ json_t *root = NULL;
	struct imgfs_config *c;
	const char *os, *arch, *variant, *osv, *created;

	if (load_doc(buf, len, IMGFS_MAX_CONFIG_SIZE, &root, err) < 0)
		return imgfs_error_wrap(err, "config");
	if (opt_string(root, "os", &os, "config", err) < 0 ||
	    opt_string(root, "architecture", &arch, "config", err) < 0 ||
	    opt_string(root, "variant", &variant, "config", err) < 0 ||
	    opt_string(root, "os.version", &osv, "config", err) < 0 ||
	    opt_string(root, "created", &created, "config", err) < 0)
		return -1;
	c = imgfs_xmalloc(sizeof(*c));
	if (config_rootfs(root, c, err) < 0) {
		imgfs_config_free(c);
		return -1;
	}
	c->platform.os = dup_or_null(os && *os ? os : NULL);
	c->platform.architecture = dup_or_null(arch && *arch ? arch : NULL);
	c->platform.variant = dup_or_null(variant && *variant ? variant : NULL);
	c->platform.os_version = dup_or_null(osv && *osv ? osv : NULL);
	if (c->platform.architecture)
		normalise_arch(&c->platform);
	c->created = dup_or_null(created);
	*out = c;
	return 0;
}
