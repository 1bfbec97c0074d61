// SPDX-License-Identifier: Apache-2.0
/*
 * The OCI/Docker model (src/store/oci.c): a registry's manifest, index or
 * config bytes through classify (with no Content-Type and with each one a
 * registry may send), parse_index (then platform selection), parse_manifest
 * and parse_config. Whatever parses must hold what the model promises.
 */
#include "fetch/fetch.h"
#include "fuzz.h"

static const char *const content_types[] = {
    NULL,
    IMGFS_MT_OCI_INDEX,
    IMGFS_MT_OCI_MANIFEST,
    IMGFS_MT_DOCKER_LIST,
    IMGFS_MT_DOCKER_MANIFEST,
    IMGFS_MT_DOCKER_SCHEMA1_SIGNED,
    "application/json; charset=utf-8",
    "text/plain",
};

static const char *const wants[] = {"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v5",
				    "windows/amd64"};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

static void check_descriptor(const struct imgfs_descriptor *d)
{
	struct imgfs_digest again;
	struct imgfs_error err;
	FUZZ_CHECK(imgfs_digest_parse(&again, d->digest.str, &err) == 0);
	FUZZ_CHECK(d->size <= INT64_MAX);
}

static void select_platforms(const struct imgfs_index *idx)
{
	for (size_t i = 0; i < sizeof(wants) / sizeof(wants[0]); i++) {
		struct imgfs_platform p;
		struct imgfs_error err;
		size_t chosen;
		FUZZ_CHECK(imgfs_platform_parse(wants[i], &p, &err) == 0);
		if (imgfs_platform_select(idx, &p, &chosen, &err) == 0)
			FUZZ_CHECK(chosen < idx->n_manifests);
		imgfs_platform_destroy(&p);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct imgfs_error err;
	struct imgfs_index *idx;
	struct imgfs_manifest *m;
	struct imgfs_config *c;

	for (size_t i = 0; i < sizeof(content_types) / sizeof(content_types[0]); i++) {
		enum imgfs_doc_kind kind;
		char *mt = NULL;
		if (imgfs_oci_classify(buf, size, content_types[i], &kind, &mt, &err) == 0) {
			FUZZ_CHECK(kind == IMGFS_DOC_INDEX || kind == IMGFS_DOC_MANIFEST);
			FUZZ_CHECK(mt != NULL);
			free(mt);
		}
	}
	if (imgfs_oci_parse_index(buf, size, &idx, &err) == 0) {
		for (size_t i = 0; i < idx->n_manifests; i++)
			check_descriptor(&idx->manifests[i]);
		select_platforms(idx);
		imgfs_index_free(idx);
	}
	if (imgfs_oci_parse_manifest(buf, size, &m, &err) == 0) {
		check_descriptor(&m->config);
		for (size_t i = 0; i < m->n_layers; i++)
			check_descriptor(&m->layers[i]);
		imgfs_manifest_free(m);
	}
	if (imgfs_oci_parse_config(buf, size, &c, &err) == 0) {
		struct imgfs_digest again;
		for (size_t i = 0; i < c->n_diff_ids; i++)
			FUZZ_CHECK(imgfs_digest_parse(&again, c->diff_ids[i].str, &err) == 0);
		imgfs_config_free(c);
	}
	return 0;
}
