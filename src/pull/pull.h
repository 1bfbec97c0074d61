/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pull: the puller. Resolves a reference (at a registry, or in a local OCI
 * image layout), fetches what the store lacks, verifies every byte, unpacks
 * each layer into its snapshot directory while it downloads, and records the
 * image. The CLI and the filesystem both ask it; neither talks HTTP.
 *
 * Pipeline per layer: download -> hash (digest, in the store's ingest) ->
 * file; a second thread follows the file as it grows -> decompress -> hash
 * (diffID) -> extract into a temporary snapshot dir. Snapshots are committed
 * in layer order once the blob digest and the diffID are verified; the image
 * record is written last. A failure commits nothing unverified and no image.
 */
#ifndef IMGFS_PULL_H
#define IMGFS_PULL_H

#include "../fetch/fetch.h"
#include "../store/store.h"

enum imgfs_layer_state {
	IMGFS_LAYER_WAITING,
	IMGFS_LAYER_DOWNLOADING,
	IMGFS_LAYER_EXTRACTING, /* download finished, extraction catching up */
	IMGFS_LAYER_DONE,
	IMGFS_LAYER_EXISTS, /* already in the store */
	IMGFS_LAYER_FAILED,
};

struct imgfs_pull_layer_progress {
	const char *digest;  /* "sha256:…" */
	uint64_t size;	     /* compressed */
	uint64_t downloaded; /* bytes in the store so far */
	uint64_t extracted;  /* compressed bytes consumed by the unpacker */
	enum imgfs_layer_state state;
	const char *source; /* the host that served the blob, once downloaded; else NULL */
};

struct imgfs_pull_progress {
	const char *name; /* canonical reference */
	size_t n_layers;
	const struct imgfs_pull_layer_progress *layers;
	bool finished;
};

struct imgfs_pull_opts {
	const char *platform;			/* "os/arch[/variant]", NULL for the host's */
	const struct imgfs_fetch_config *fetch; /* NULL for defaults */
	/* Called from the pulling thread, at most every ~100 ms and once at the
	 * end; may be NULL. */
	void (*progress)(void *ctx, const struct imgfs_pull_progress *p);
	void *progress_ctx;
	/* 0, or the most compressed bytes the image may have (its manifest,
	 * config and layers as the manifest gives their sizes): EFBIG before
	 * any blob is fetched when it has more */
	uint64_t max_size;
	/* never ask a registry: only record a digest the store already holds
	 * under another name of the repository; ENOENT otherwise */
	bool offline;
};

/* Pull ref into the store. On success *record (may be NULL) is the stored
 * image record (caller json_decref()s it). */
int imgfs_pull(struct imgfs_store *s, const char *ref, const struct imgfs_pull_opts *opts,
	       json_t **record, struct imgfs_error *err);

/* Import every image named in an OCI image layout's index.json
 * (org.opencontainers.image.ref.name annotations). base_name, if not NULL, is
 * the repository used for entries that carry only a tag. fn (may be NULL) is
 * told each name imported. */
int imgfs_import_layout(struct imgfs_store *s, const char *dir, const char *base_name,
			const struct imgfs_pull_opts *opts,
			void (*fn)(void *ctx, const char *name, json_t *record), void *ctx,
			struct imgfs_error *err);

/* Resolve a user's reference to a stored image name: exact canonical name
 * first, then a digest match. Caller frees *name. ENOENT when absent. */
int imgfs_pull_lookup(struct imgfs_store *s, const char *ref, char **name, json_t **record,
		      struct imgfs_error *err);

#endif
