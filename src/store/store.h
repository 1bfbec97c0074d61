/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store: the content store (blobs/, ingest/), snapshot directories, metadata
 * in LMDB, garbage collection, and the OCI/Docker JSON model.
 *
 * On-disk layout (version in IMGFS_STORE_SCHEMA_VERSION; history in
 * docs/store-format.md):
 *
 *   <root>/blobs/<alg>/<hex>         verified content, read-only files (0444)
 *   <root>/ingest/<alg>-<hex>/data   a download in progress (resumable)
 *   <root>/ingest/<alg>-<hex>/lock   flock: one writer per blob across processes
 *   <root>/snapshots/<id>/fs         one unpacked layer, keyed by chainID in LMDB
 *   <root>/snapshots/tmp-*           unpacks in progress (removed by gc)
 *   <root>/locks/                    flock files (gc.lock, chain-<hex>.lock)
 *   <root>/meta/                     the LMDB environment (data.mdb, lock.mdb)
 *   <root>/uppers/<key>/             an image's rootfs writes (upper/, work/, lock)
 *
 * Concurrency: all functions are thread-safe. Several processes may use one
 * store: LMDB serialises metadata writes; blob ingest and snapshot unpack take
 * per-key flocks; gc takes gc.lock exclusively while pulls hold it shared.
 */
#ifndef IMGFS_STORE_H
#define IMGFS_STORE_H

#include "../util/util.h"

#include <jansson.h>

#define IMGFS_STORE_SCHEMA_VERSION 2
#define IMGFS_DEFAULT_STORE "/var/lib/imgfs"

/* ---- media types ------------------------------------------------------- */

#define IMGFS_MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define IMGFS_MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define IMGFS_MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define IMGFS_MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define IMGFS_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define IMGFS_MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
#define IMGFS_MT_DOCKER_SCHEMA1 "application/vnd.docker.distribution.manifest.v1+json"
#define IMGFS_MT_DOCKER_SCHEMA1_SIGNED "application/vnd.docker.distribution.manifest.v1+prettyjws"

/* Limits on documents read whole into memory. */
#define IMGFS_MAX_MANIFEST_SIZE (4u << 20)
#define IMGFS_MAX_CONFIG_SIZE (8u << 20)

/* ---- the OCI / Docker model (oci.c) ------------------------------------ */

struct imgfs_platform {
	char *os;	    /* "linux" */
	char *architecture; /* normalised: "amd64", "arm64", "arm", "386", ... */
	char *variant;	    /* "v8", "v7", ... or NULL */
	char *os_version;   /* or NULL */
};
void imgfs_platform_destroy(struct imgfs_platform *p);
/* "linux/arm64/v8" (no trailing variant when NULL); caller frees. */
char *imgfs_platform_string(const struct imgfs_platform *p);

struct imgfs_descriptor {
	char *media_type;
	struct imgfs_digest digest;
	uint64_t size;
	bool has_platform;
	struct imgfs_platform platform; /* index entries only */
	char *ref_name;			/* annotation org.opencontainers.image.ref.name, or NULL */
	bool is_attestation;		/* vnd.docker.reference.type=attestation-manifest */
};
void imgfs_descriptor_destroy(struct imgfs_descriptor *d);

enum imgfs_doc_kind { IMGFS_DOC_INDEX = 1, IMGFS_DOC_MANIFEST = 2 };

/*
 * Classify a fetched document from its bytes and the Content-Type the
 * registry sent (may be NULL; parameters ignored). Refuses schema1 with a
 * clear message (ENOTSUP), malformed JSON (EIO), documents whose mediaType
 * contradicts the Content-Type or whose shape is ambiguous (both
 * "manifests" and "layers"), and unknown types. On success *media_type is the
 * document's media type (caller frees).
 */
int imgfs_oci_classify(const char *buf, size_t len, const char *content_type,
		       enum imgfs_doc_kind *kind, char **media_type, struct imgfs_error *err);

struct imgfs_index {
	char *media_type;
	size_t n_manifests;
	struct imgfs_descriptor
	    *manifests; /* entries with unknown media types are kept; callers skip them */
};
int imgfs_oci_parse_index(const char *buf, size_t len, struct imgfs_index **out,
			  struct imgfs_error *err);
void imgfs_index_free(struct imgfs_index *idx);

struct imgfs_manifest {
	char *media_type;
	struct imgfs_descriptor config;
	size_t n_layers;
	struct imgfs_descriptor *layers;
};
/* Validates schemaVersion 2, descriptor digests and sizes (non-negative, fit
 * in int64), layer media types (tar, tar+gzip, tar+zstd in OCI and Docker
 * spellings; foreign/nondistributable refused with ENOTSUP). */
int imgfs_oci_parse_manifest(const char *buf, size_t len, struct imgfs_manifest **out,
			     struct imgfs_error *err);
void imgfs_manifest_free(struct imgfs_manifest *m);

struct imgfs_config {
	struct imgfs_platform platform; /* os, architecture, variant from the config */
	char *created;			/* RFC 3339 or NULL */
	size_t n_diff_ids;
	struct imgfs_digest *diff_ids;
};
/* Validates rootfs.type == "layers" and every diff_id. */
int imgfs_oci_parse_config(const char *buf, size_t len, struct imgfs_config **out,
			   struct imgfs_error *err);
void imgfs_config_free(struct imgfs_config *c);

/* ---- opening ------------------------------------------------------------ */

struct imgfs_store;

/* Open (creating if needed) the store at root. Refuses a store whose schema
 * version is newer than this program's. The root is made (or tightened to)
 * 0700: nothing in a store is for other users. */
int imgfs_store_open(const char *root, struct imgfs_store **out, struct imgfs_error *err);

enum imgfs_store_how {
	IMGFS_STORE_CREATE,   /* create what is missing (pull, import, mount) */
	IMGFS_STORE_EXISTING, /* ENOENT naming the path unless a store is there (rm, gc) */
	/* an existing store, only read: LMDB opened MDB_RDONLY, nothing created,
	 * works on a read-only file system (images, inspect, mount -o ro) */
	IMGFS_STORE_READ,
};
int imgfs_store_open_how(const char *root, enum imgfs_store_how how, struct imgfs_store **out,
			 struct imgfs_error *err);
/* Opened with IMGFS_STORE_READ. */
bool imgfs_store_is_read_only(const struct imgfs_store *s);
void imgfs_store_close(struct imgfs_store *s);
const char *imgfs_store_root(const struct imgfs_store *s);

/* Shared (pull) or exclusive (gc) hold on the store's gc.lock. 0 or -1. */
int imgfs_store_lock_shared(struct imgfs_store *s, struct imgfs_error *err);
int imgfs_store_lock_exclusive(struct imgfs_store *s, struct imgfs_error *err);
void imgfs_store_unlock(struct imgfs_store *s);

/* ---- blobs (blobs.c) ----------------------------------------------------- */

/* "<root>/blobs/<alg>/<hex>"; caller frees. */
char *imgfs_store_blob_path(const struct imgfs_store *s, const struct imgfs_digest *d);
/* True when the blob is committed (and, if size != UINT64_MAX, has that size). */
bool imgfs_store_has_blob(struct imgfs_store *s, const struct imgfs_digest *d, uint64_t size);
/* The media type recorded when d was committed, or NULL (none, not in the
 * store, or an error). Caller frees. */
char *imgfs_store_blob_media_type(struct imgfs_store *s, const struct imgfs_digest *d);
/* Read a committed blob into memory (at most max bytes). Caller frees *buf. */
int imgfs_store_read_blob(struct imgfs_store *s, const struct imgfs_digest *d, size_t max,
			  char **buf, size_t *len, struct imgfs_error *err);
/* Store a small blob held in memory (manifests, configs). Verifies digest and
 * size first (EIO naming the digest on mismatch), writes atomically, records
 * the media type. A blob already present is left as is. */
int imgfs_store_put_blob(struct imgfs_store *s, const struct imgfs_digest *d,
			 const char *media_type, const void *data, size_t len,
			 struct imgfs_error *err);

/*
 * Ingest: a download of one blob in progress. Open takes the blob's flock
 * (waiting if another thread or process holds it). If the blob is already
 * committed when the lock is obtained, *out is NULL and 0 is returned.
 * Existing partial data is kept: imgfs_ingest_offset() says how much, and the
 * hash state is rebuilt by reading it back.
 */
struct imgfs_ingest;
int imgfs_ingest_open(struct imgfs_store *s, const struct imgfs_digest *expected,
		      uint64_t expected_size, struct imgfs_ingest **out, struct imgfs_error *err);
uint64_t imgfs_ingest_offset(const struct imgfs_ingest *w);
/* Path of the data file being written (for a reader that follows it). */
const char *imgfs_ingest_data_path(const struct imgfs_ingest *w);
/* Append; EIO if the total would exceed the expected size. */
int imgfs_ingest_write(struct imgfs_ingest *w, const void *buf, size_t len,
		       struct imgfs_error *err);
/* Discard the data written so far (the server ignored Range). */
int imgfs_ingest_reset(struct imgfs_ingest *w, struct imgfs_error *err);
/* Check size and digest, fsync, rename into blobs/, record size and media
 * type. On mismatch: EIO naming expected and actual digest; the ingest data is
 * deleted. Frees w in every case. */
int imgfs_ingest_commit(struct imgfs_ingest *w, const char *media_type, struct imgfs_error *err);
/* Release the lock, keep partial data for a later resume. Frees w. */
void imgfs_ingest_abort(struct imgfs_ingest *w);

/* ---- snapshots (snapshots.c) ------------------------------------------- */

/*
 * A snapshot is one unpacked layer, keyed by its chainID. Its metadata record
 * (JSON) is {"id": n, "parent": "<chainID>"|null, "diffID": "...", "size": bytes,
 * "created": unix-seconds}; its directory is <root>/snapshots/<id>/fs.
 */

/* Take the chain's flock (serialises unpacking one chainID across processes).
 * Returns an fd to pass to imgfs_store_snapshot_unlock. */
int imgfs_store_snapshot_lock(struct imgfs_store *s, const struct imgfs_digest *chain_id,
			      int *lockfd, struct imgfs_error *err);
void imgfs_store_snapshot_unlock(int lockfd);
/* Mark the chain's snapshot as in use (a mounted view serves from it): a
 * shared flock on <root>/locks/chain-<hex>.use, held until lockfd is passed to
 * imgfs_store_snapshot_unlock. gc keeps every snapshot whose .use lock it
 * cannot take exclusively (and its parents). A file apart from the unpack
 * lock, so a hold that lasts as long as a mount never blocks an unpack. Waits
 * while a gc is deciding about the snapshot; take it before
 * imgfs_store_snapshot_dir. */
int imgfs_store_snapshot_hold(struct imgfs_store *s, const struct imgfs_digest *chain_id,
			      int *lockfd, struct imgfs_error *err);
/* Directory of a committed snapshot ("<root>/snapshots/<id>/fs"); ENOENT when
 * there is none. Caller frees *dir. */
int imgfs_store_snapshot_dir(struct imgfs_store *s, const struct imgfs_digest *chain_id, char **dir,
			     struct imgfs_error *err);
/* Make a fresh empty directory to unpack into: <root>/snapshots/tmp-XXXXXX/fs.
 * Caller frees *dir. */
int imgfs_store_snapshot_prepare(struct imgfs_store *s, char **dir, struct imgfs_error *err);
/* Remove a prepared directory (its tmp-XXXXXX parent) after a failure. */
void imgfs_store_snapshot_discard(struct imgfs_store *s, const char *dir);
/* Commit a prepared directory as chain_id: syncfs, allocate an id, rename
 * tmp-XXXXXX to <id>, write the record, all or nothing. parent may be NULL.
 * On success *final_dir (if not NULL) is the committed fs directory. */
int imgfs_store_snapshot_commit(struct imgfs_store *s, const char *dir,
				const struct imgfs_digest *chain_id,
				const struct imgfs_digest *parent,
				const struct imgfs_digest *diff_id, uint64_t size, char **final_dir,
				struct imgfs_error *err);

/* ---- images (meta.c) ---------------------------------------------------- */

/*
 * An image record (JSON object, documented in docs/store-format.md):
 * {
 *   "name": "docker.io/library/alpine:3.18.3",
 *   "target": {"mediaType":..., "digest":..., "size":...},   the manifest
 *   "index": {"mediaType":..., "digest":..., "size":...},    when chosen from an index
 *   "config": {"mediaType":..., "digest":..., "size":...},
 *   "platform": "linux/amd64",
 *   "layers": [{"mediaType","digest","size","diffID","chainID"}, ...],
 *   "size": total bytes of manifest, config and layer blobs,
 *   "created": "<config created>", "pulled": unix-seconds
 * }
 */
/* Store rec under name (replaces). Takes no ownership of rec. */
int imgfs_store_put_image(struct imgfs_store *s, const char *name, json_t *rec,
			  struct imgfs_error *err);
/* ENOENT when absent. Caller json_decref()s *rec. */
int imgfs_store_get_image(struct imgfs_store *s, const char *name, json_t **rec,
			  struct imgfs_error *err);
int imgfs_store_delete_image(struct imgfs_store *s, const char *name, struct imgfs_error *err);
/* Call fn for each image in name order; stop when fn returns non-zero. rec is
 * borrowed for the call. */
int imgfs_store_list_images(struct imgfs_store *s,
			    int (*fn)(void *ctx, const char *name, json_t *rec), void *ctx,
			    struct imgfs_error *err);

/* ---- rootfs upper directories (uppers.c) -------------------------------- */

/*
 * The writes made in an image's rootfs/ belong to one image name at one
 * manifest digest: <root>/uppers/<alg>-<hex>-<sha256 of the name, hex>/ holds
 * upper/ and work/ (overlayfs), lock (flock: a read-write mount holds it
 * exclusively, read-only mounts shared; reset, rm and gc exclusively) and
 * image (the name and digest, for people). A tag that moves to new content
 * gets a new directory; the old one stays until gc.
 */
/* The directory of name at manifest digest ("sha256:…"); NULL when digest
 * is not a valid digest. Caller frees. */
char *imgfs_store_upper_dir(const struct imgfs_store *s, const char *name, const char *digest);
/* Make that directory if absent (0700; a read-only store: *ino 0, nothing made).
 * *ino is its inode number: it changes
 * whenever rm or gc removed or set aside the writes, so a mount can tell its
 * overlay is no longer this image's. */
int imgfs_store_upper_make(struct imgfs_store *s, const char *name, const char *digest, ino_t *ino,
			   struct imgfs_error *err);
/* Discard the writes (empty upper/ and work/). A mount that is going away
 * drops its lock a moment after umount returns: wait up to wait_ms for it,
 * then EBUSY. 0 also when there are none. */
int imgfs_store_upper_reset(struct imgfs_store *s, const char *name, const char *digest,
			    int wait_ms, struct imgfs_error *err);
/* For an image whose record is gone: delete its writes, waiting up to
 * wait_ms for a mount that holds them; when one still does, set them aside
 * (*kept true) where no later image finds them, for gc to remove once that
 * mount has ended. 0 also when there are none. */
int imgfs_store_upper_remove(struct imgfs_store *s, const char *name, const char *digest,
			     int wait_ms, bool *kept, struct imgfs_error *err);

/* ---- garbage collection (gc.c) ----------------------------------------- */

struct imgfs_gc_report {
	uint64_t blobs_removed, blob_bytes;
	uint64_t snapshots_removed, snapshot_bytes;
	uint64_t ingests_removed, tmp_removed;
	uint64_t ingest_bytes, tmp_bytes;     /* partial downloads, abandoned unpacks */
	uint64_t snapshots_in_use;	      /* unreferenced but kept: a mount holds them */
	uint64_t uppers_removed, upper_bytes; /* rootfs writes of images no record names */
	uint64_t uppers_in_use;		      /* such writes kept: a mount serves them */
};
/* Remove blobs and snapshots no image references (snapshots a mount holds,
 * see imgfs_store_snapshot_hold, and their parents are kept and logged),
 * rootfs writes (uppers/) of no image record's name and digest unless a
 * mount serves them, abandoned ingests and tmp dirs. Takes the exclusive gc lock. fn (may be NULL)
 * is told of each item removed ("blob sha256:…", "snapshot sha256:…"). */
int imgfs_store_gc(struct imgfs_store *s, void (*fn)(void *ctx, const char *what, uint64_t bytes),
		   void *ctx, struct imgfs_gc_report *rep, struct imgfs_error *err);

#endif
