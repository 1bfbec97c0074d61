/* SPDX-License-Identifier: Apache-2.0 */
/* Private to the puller: where content comes from, and the layer pipeline. */
#ifndef IMGFS_PULL_I_H
#define IMGFS_PULL_I_H

#include "pull.h"
#include "../unpack/unpack.h"

/* A source of manifests and blobs: a registry or a local OCI layout. */
struct pull_source {
	/* reference: a tag or a digest string. */
	int (*get_manifest)(void *ctx, const char *reference, struct imgfs_fetched *out,
			    struct imgfs_error *err);
	int (*get_blob_mem)(void *ctx, const struct imgfs_digest *d, uint64_t size,
			    struct imgfs_fetched *out, struct imgfs_error *err);
	/* *served_by: the host that served the bytes, if the source knows (may stay NULL). */
	int (*get_blob)(void *ctx, const struct imgfs_digest *d, uint64_t offset,
			imgfs_sink_fn sink, void *sink_ctx, bool *restarted, const char **served_by,
			struct imgfs_error *err);
	void *ctx;
	int max_downloads; /* concurrent blob downloads */
};

/*
 * Pull the image whose manifest is reachable from `reference` at src and
 * record it under name. index_hint: a manifest or index already fetched
 * (NULL to fetch it).
 */
int pull_image(struct imgfs_store *s, struct pull_source *src, const char *name,
	       const char *reference, const struct imgfs_pull_opts *opts, json_t **record,
	       struct imgfs_error *err);

/* Fetch and unpack every layer of m that the store lacks; fills chain_ids. */
int pull_layers(struct imgfs_store *s, struct pull_source *src, const char *name,
		const struct imgfs_manifest *m, const struct imgfs_config *c,
		struct imgfs_digest *chain_ids, const struct imgfs_pull_opts *opts,
		struct imgfs_error *err);

json_t *pull_descriptor_json(const char *media_type, const struct imgfs_digest *d, uint64_t size);

#endif
