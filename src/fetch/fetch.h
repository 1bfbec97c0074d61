/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fetch: image references, platform matching, and the registry client
 * (libcurl): resolve a reference, fetch manifests and blobs, the Bearer token
 * flow. It knows HTTP; it does not know the store's layout (blobs are handed
 * to a sink callback).
 */
#ifndef IMGFS_FETCH_H
#define IMGFS_FETCH_H

#include "../store/store.h"
#include "../util/util.h"

/* ---- references (ref.c) -------------------------------------------------- */

/*
 * A parsed, normalised reference, with Docker's rules:
 *   alpine                      -> docker.io/library/alpine:latest
 *   user/app                    -> docker.io/user/app:latest
 *   index.docker.io/alpine      -> docker.io/library/alpine:latest
 *   host:port/path/name:tag, localhost/name, [::1]:5000/name
 *   name@sha256:<hex>, name:tag@sha256:<hex> (the digest wins for resolution)
 */
struct imgfs_ref {
	char *domain; /* "docker.io", "127.0.0.1:5000" */
	char *path;   /* "library/alpine" */
	char *tag;    /* "3.18.3", or NULL when only a digest was given */
	bool has_digest;
	struct imgfs_digest digest;
};
/* EINVAL with a message saying what is wrong ("repository name must be
 * lowercase", "invalid tag", "invalid reference format", ...). A reference
 * with neither tag nor digest gets tag "latest". */
int imgfs_ref_parse(const char *s, struct imgfs_ref *ref, struct imgfs_error *err);
void imgfs_ref_destroy(struct imgfs_ref *ref);
/* Canonical name: "docker.io/library/alpine:3.18.3", "host/x@sha256:…",
 * "host/x:tag@sha256:…". Caller frees. */
char *imgfs_ref_string(const struct imgfs_ref *ref);
/* The name an image is stored under: "<domain>/<path>@<digest>" when a
 * digest was given (with or without a tag: the tag plays no part, so a pinned
 * reference never records or changes a tag), otherwise
 * "<domain>/<path>:<tag>". Caller frees. */
char *imgfs_ref_store_name(const struct imgfs_ref *ref);
/* Familiar name: docker.io/library/ and docker.io/ dropped ("alpine:3.18.3"),
 * except that docker.io/ stays when the path's first component would read as
 * a registry domain ("docker.io/a.b/c:1", not "a.b/c:1"). Caller frees. */
char *imgfs_ref_familiar(const struct imgfs_ref *ref);
/* The directory an image shows at on a mount, below its root: the familiar
 * repository, then the tag or "@<digest>" as the last component
 * ("alpine/3.18.3", "docker.io/a.b/c/latest", "127.0.0.1:5000/lab/app/@sha256:…").
 * Uses the tag when there is one: call it on a parsed store name. Caller frees. */
char *imgfs_ref_tree_path(const struct imgfs_ref *ref);
/* The host to contact: docker.io -> registry-1.docker.io. Caller frees. */
char *imgfs_ref_api_host(const struct imgfs_ref *ref);

/* ---- platforms (platform.c) ---------------------------------------------- */

/* Parse "os/arch[/variant]" and normalise (aarch64 -> arm64, x86_64 ->
 * amd64, armhf -> arm/v7, arm64 -> variant v8, arm with no variant -> v7). */
int imgfs_platform_parse(const char *s, struct imgfs_platform *p, struct imgfs_error *err);
/* Normalise in place (the same rules). */
void imgfs_platform_normalize(struct imgfs_platform *p);
/* The host's platform (uname; arm variant from /proc/cpuinfo). */
void imgfs_platform_host(struct imgfs_platform *p);
/*
 * Choose the manifest for want from an index, with containerd's rules: exact
 * os/architecture/variant first; arm v7 accepts v6 then v5 as fallbacks, v6
 * accepts v5; amd64 accepts lower v-levels; attestation entries and unknown
 * media types are never chosen; among equals the first in index order wins.
 * ENOENT with a message listing the platforms offered when none matches.
 */
int imgfs_platform_select(const struct imgfs_index *idx, const struct imgfs_platform *want,
			  size_t *chosen, struct imgfs_error *err);

/* ---- registry client (registry.c, auth.c) ------------------------------ */

/* Per-registry settings ("registries": {"ghcr.io": {"mirrors": [...]}}). */
struct imgfs_fetch_host {
	char *host;	/* "ghcr.io", "docker.io", "127.0.0.1:5000" */
	char **mirrors; /* NULL-terminated endpoint URLs ("https://m.local[:port][/prefix]") */
};

struct imgfs_fetch_config {
	int max_concurrent_downloads;	/* default 3 */
	char **insecure_registries;	/* NULL-terminated; hosts, host:port, CIDRs; may be NULL */
	const char *ca_dir;		/* certs.d root, default /etc/imgfs/certs.d */
	char **registry_mirrors;	/* NULL-terminated; mirrors of docker.io; may be NULL */
	struct imgfs_fetch_host *hosts; /* per-registry mirrors */
	size_t n_hosts;
	int max_attempts;      /* tries per request and endpoint (default 5) */
	int max_retry_after;   /* Retry-After is honoured up to this many seconds (default 60) */
	long stall_speed;      /* bytes/s below which a transfer is stalled (default 1024) */
	int stall_time;	       /* ... for this many seconds (default 30) */
	int connect_time;      /* seconds to connect (default 30) */
	const char *auth_file; /* credentials file; NULL: the docker/podman search */
	/* no credentials of any kind: no auth file, credential helper or login,
	 * no certs.d client certificate (the filesystem's pulls for other users
	 * than root, -o pull=all); CA files still apply */
	bool anonymous;
	/* Layer unpack limits (imgfs_unpack_opts): uncompressed bytes per layer
	 * (default 64 GiB), and times the layer blob's size (default 100, 0 =
	 * no ratio limit; never below IMGFS_UNPACK_RATIO_FLOOR). */
	uint64_t max_layer_size;
	unsigned max_layer_ratio;
	char *owned_; /* internal: storage owned by imgfs_fetch_config_load */
};
void imgfs_fetch_config_init(struct imgfs_fetch_config *cfg);
/*
 * Read path (Docker daemon.json keys: max-concurrent-downloads,
 * insecure-registries, registry-mirrors; plus "registries": {host:
 * {"mirrors": [...]}}, "max-download-attempts", "max-retry-after",
 * "stall-timeout", "stall-speed", "connect-timeout", "certs-dir", "auth-file",
 * "max-layer-size-mib", "max-layer-ratio") into cfg, which
 * must have been initialised. A missing file is fine unless must_exist.
 * EINVAL naming the file and key on a bad value. Free with _destroy.
 */
int imgfs_fetch_config_load(struct imgfs_fetch_config *cfg, const char *path, bool must_exist,
			    struct imgfs_error *err);
void imgfs_fetch_config_destroy(struct imgfs_fetch_config *cfg);

/* ---- credentials (creds.c) ----------------------------------------------- */

/* Credentials for a registry host, as docker/podman/skopeo find them. Secrets
 * are wiped on destroy; never log them. */
struct imgfs_creds {
	char *username;
	char *password;
	char *identity_token; /* an OAuth2 refresh token (docker login's identitytoken) */
	char *source;	      /* where they came from ("/root/.docker/config.json",
				 "docker-credential-pass"), for messages */
};
void imgfs_creds_destroy(struct imgfs_creds *c);
/*
 * Look up host ("ghcr.io", "127.0.0.1:5000"; docker.io and its aliases match
 * "https://index.docker.io/v1/") in: auth_file if given, else
 * $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json,
 * ~/.docker/config.json (the first file that has an entry wins; credHelpers
 * and credsStore run docker-credential-<name> get). 1 found, 0 none, -1 error.
 */
int imgfs_creds_lookup(const char *host, const char *auth_file, struct imgfs_creds *out,
		       struct imgfs_error *err);
/* The file `imgfs login` writes: auth_file, else $REGISTRY_AUTH_FILE, else
 * ${XDG_RUNTIME_DIR}/containers/auth.json when XDG_RUNTIME_DIR is set, else
 * ~/.docker/config.json. Caller frees. */
char *imgfs_creds_default_file(const char *auth_file);
/* Add/replace (user, password) for host in file (0600, atomic rename, other
 * keys kept), or remove host's entry (ENOENT when there is none). */
int imgfs_creds_store(const char *file, const char *host, const char *user, const char *password,
		      struct imgfs_error *err);
int imgfs_creds_erase(const char *file, const char *host, struct imgfs_error *err);
/* An auths key or login argument as the host it names, lowercased
 * ("https://index.docker.io/v1/" -> "docker.io", "https://ghcr.io/" -> "ghcr.io").
 * Caller frees. */
char *imgfs_creds_normalize_key(const char *key);

/* One registry host, shared by the threads of a pull (thread-safe). */
struct imgfs_registry;
int imgfs_registry_new(const struct imgfs_ref *ref, const struct imgfs_fetch_config *cfg,
		       struct imgfs_registry **out, struct imgfs_error *err);
void imgfs_registry_free(struct imgfs_registry *r);

struct imgfs_fetched {
	char *data; /* NUL-terminated, len bytes */
	size_t len;
	char *content_type;	    /* as sent, parameters stripped; may be NULL */
	struct imgfs_digest digest; /* computed from the bytes (algorithm of the request) */
};
void imgfs_fetched_destroy(struct imgfs_fetched *f);

/*
 * GET /v2/<path>/manifests/<reference> (reference: a tag or "sha256:…") with
 * the Accept header for OCI and Docker schema2 manifests and indexes. Bodies
 * over max bytes are refused before they are read whole. When reference is a
 * digest the bytes must hash to it; when the registry sends
 * Docker-Content-Digest it must match the bytes. Errors: ENOENT (unknown
 * repository, tag or digest), EACCES (denied), EIO (digest/format),
 * ETIMEDOUT/ECONNREFUSED/EHOSTUNREACH (network), each message naming the URL's
 * repository and reference.
 */
int imgfs_registry_get_manifest(struct imgfs_registry *r, const char *path, const char *reference,
				size_t max, struct imgfs_fetched *out, struct imgfs_error *err);

/* HEAD /v2/<path>/manifests/<tag>: the digest the registry would serve, from its
 * Docker-Content-Digest header (no body is read, and Docker Hub does not count a
 * HEAD as a pull). ENODATA when the registry sends no (valid) digest header; the
 * same errors as imgfs_registry_get_manifest otherwise. */
int imgfs_registry_head_manifest(struct imgfs_registry *r, const char *path, const char *tag,
				 struct imgfs_digest *digest, struct imgfs_error *err);

/* GET a small blob (config) into memory; its size must equal expected_size
 * (refused before reading when larger) and its bytes must hash to d. */
int imgfs_registry_get_blob_mem(struct imgfs_registry *r, const char *path,
				const struct imgfs_digest *d, uint64_t expected_size,
				struct imgfs_fetched *out, struct imgfs_error *err);

/*
 * Stream a blob to sink, starting at offset (sent as Range when > 0). If the
 * server ignores the Range (200), *restarted is set to true before the first
 * byte is passed to sink, and the sink receives the whole blob from 0 (the
 * caller must discard what it had). A sink returning non-zero aborts the
 * transfer (its error is kept in err by the sink). No hashing here: the store's
 * ingest does it. Follows redirects (Authorization is not sent to another host).
 */
typedef int (*imgfs_sink_fn)(void *ctx, const void *buf, size_t len, struct imgfs_error *err);
/* *served_by (may be NULL) is set to the host that served the bytes (a mirror
 * or the registry), "host[:port] (mirror)" for mirrors; valid while r lives. */
int imgfs_registry_get_blob(struct imgfs_registry *r, const char *path,
			    const struct imgfs_digest *d, uint64_t offset, imgfs_sink_fn sink,
			    void *ctx, bool *restarted, const char **served_by,
			    struct imgfs_error *err);

#endif
