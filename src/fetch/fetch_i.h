/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fetch internals shared by registry.c and auth.c, and reachable by the unit
 * tests: the registry object, the WWW-Authenticate parser, the token cache,
 * and the small checks on response headers.
 */
#ifndef IMGFS_FETCH_I_H
#define IMGFS_FETCH_I_H

#include "fetch.h"

#include <curl/curl.h>
#include <pthread.h>

#define IMGFS_USER_AGENT "imgfs/0.1"
#define IMGFS_MAX_REDIRECTS 10
#define IMGFS_MAX_TOKEN_RESPONSE (1u << 20)
#define IMGFS_MAX_ERROR_BODY 4096
#define IMGFS_MAX_AUTH_HEADER (64u << 10)
#define IMGFS_FETCH_ATTEMPTS 3

/* ---- response headers (registry.c) -------------------------------------- */

/* The headers the client keeps of one HTTP response. */
struct imgfs_http_headers {
	long status; /* from the status line, 0 when it has no valid 3-digit code */
	char *content_type;
	char *dcd; /* Docker-Content-Digest */
	char *content_range;
	char *content_encoding;
	char *location;
	char *www_auth;	  /* every WWW-Authenticate line, joined with ", " */
	long retry_after; /* seconds, -1 when absent or not a number */
};
/* Free the values and start over (status 0, retry_after -1). */
void imgfs_http_headers_reset(struct imgfs_http_headers *h);
/* Take one header line as libcurl's CURLOPT_HEADERFUNCTION hands it: exactly
 * n bytes, not NUL-terminated, CRLF included, any byte possible. Reads only
 * line[0..n). A status line ("HTTP/...") resets h and returns true; a value
 * holding a NUL byte is ignored. */
bool imgfs_http_header_line(struct imgfs_http_headers *h, const char *line, size_t n);

/* ---- WWW-Authenticate (auth.c) ------------------------------------------ */

struct imgfs_auth_param {
	char *key; /* lowercased */
	char *value;
};

struct imgfs_auth_challenge {
	char *scheme; /* as sent; compare case-insensitively */
	size_t n_params;
	struct imgfs_auth_param *params;
};

/* Parse one or more challenges (RFC 7235: 1#challenge; several header lines
 * joined with ", "). EINVAL on malformed input (unterminated quote, missing
 * scheme, bad parameter). */
int imgfs_auth_parse(const char *header, struct imgfs_auth_challenge **out, size_t *n,
		     struct imgfs_error *err);
void imgfs_auth_challenges_free(struct imgfs_auth_challenge *c, size_t n);
/* Value of a parameter (key compared case-insensitively), or NULL. */
const char *imgfs_auth_param(const struct imgfs_auth_challenge *c, const char *key);

enum imgfs_auth_scheme { IMGFS_AUTH_NONE = 0, IMGFS_AUTH_BASIC, IMGFS_AUTH_BEARER };

/* What to do about a 401: the chosen scheme (Bearer preferred over Basic) and,
 * for Bearer, realm/service/scope (caller frees; scope NULL when the challenge
 * named none). EINVAL: "no realm specified for token auth challenge",
 * "failed to find supported auth scheme", or a parse error. */
struct imgfs_auth_plan {
	enum imgfs_auth_scheme scheme;
	char *realm;
	char *service;
	char *scope;
	char *error; /* the challenge's error="…" parameter, if any */
};
int imgfs_auth_plan_from_header(const char *header, struct imgfs_auth_plan *plan,
				struct imgfs_error *err);
void imgfs_auth_plan_destroy(struct imgfs_auth_plan *plan);

/* Parse a token endpoint's JSON answer: "token" wins over "access_token";
 * expires_in <= 0 or absent means 60 s. The token must be printable ASCII
 * (it goes into a header). EACCES when there is none. */
int imgfs_auth_parse_token_response(const char *body, size_t len, char **token, long *expires_in,
				    struct imgfs_error *err);

/* ---- the registry object ------------------------------------------------ */

struct imgfs_token {
	struct imgfs_token *next;
	char *key;   /* "<endpoint host>|repository:<path>:pull" */
	char *token; /* the Authorization header's value ("Bearer …", "Basic …"); never logged */
	double expiry; /* imgfs_now() seconds */
};

/* One place to send requests: a mirror or the upstream registry. */
struct imgfs_endpoint {
	char *host;	 /* "127.0.0.1:5000", "mirror.local" (messages, credentials, certs.d) */
	char *label;	 /* host, with " (mirror)" for mirrors: what users see as a blob's source */
	char *https;	 /* "https://host[/prefix]" */
	char *http;	 /* "http://host[/prefix]", or NULL when plain HTTP is not allowed */
	bool mirror;	 /* false: the upstream registry (tried last) */
	bool insecure;	 /* TLS unverified, http allowed (insecure-registries, loopback) */
	bool http_only;	 /* a mirror configured as http:// */
	char *ca_dir;	 /* <certs.d>/<host>, when it exists */
	char *cert_file; /* client certificate from ca_dir (*.cert with a matching *.key) */
	char *key_file;
	/* guarded by the registry's lock: */
	bool use_http;	 /* an insecure host that does not speak TLS */
	bool down;	 /* a mirror that refused connections: skipped for this registry's life */
	bool creds_done; /* creds looked up (creds_found says whether there are any) */
	bool creds_found;
	struct imgfs_creds creds;
};

struct imgfs_registry {
	char *host;   /* the upstream API host, "registry-1.docker.io", "127.0.0.1:5000" */
	char *domain; /* the reference's domain, "docker.io" */
	struct imgfs_endpoint *eps; /* mirrors in order, then upstream */
	size_t n_eps;
	char *auth_file; /* from the config, or NULL */
	bool anonymous;	 /* the config's: never any credentials */
	int max_attempts, max_retry_after, stall_time, connect_time;
	long stall_speed;
	CURLSH *share; /* DNS, connections, TLS sessions; locked by share_locks */
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t lock; /* guards tokens and the endpoints' mutable fields */
	struct imgfs_token *tokens;
};

/* Is host (host or host:port, IPv6 in brackets) insecure by default
 * (localhost, 127.0.0.0/8, ::1) or listed in list (host, host:port, or a
 * CIDR such as 10.0.0.0/8 or fd00::/8 matching an IP address host)? */
bool imgfs_registry_host_insecure(const char *hostport, char *const *list);

/* Token cache (auth.c). get returns a copy (caller frees) or NULL. */
char *imgfs_token_get(struct imgfs_registry *r, const char *key);
void imgfs_token_put(struct imgfs_registry *r, const char *key, const char *token, long expires_in);
void imgfs_token_drop(struct imgfs_registry *r, const char *key);
void imgfs_tokens_free(struct imgfs_registry *r);

/* The credentials for ep (looked up once, then cached). Returns a borrowed
 * pointer valid for the registry's life, or NULL when there are none; -1
 * with err on a lookup error (a broken auth file, a failing helper). */
int imgfs_endpoint_creds(struct imgfs_registry *r, struct imgfs_endpoint *ep,
			 const struct imgfs_creds **out, struct imgfs_error *err);

/* Answer a 401 for plan on ep: for Bearer, GET realm?service=…&scope=…
 * (with Basic credentials when there are some, or POST an identity token);
 * for Basic, the credentials themselves. Caches the Authorization value
 * under key; *authz is a copy for the caller ("Bearer …" / "Basic …"). */
int imgfs_auth_fetch_token(struct imgfs_registry *r, struct imgfs_endpoint *ep,
			   const struct imgfs_auth_plan *plan, const char *key, const char *path,
			   char **authz, struct imgfs_error *err);

/* Apply the endpoint's transport policy (TLS, certs.d, stall timeout,
 * share, user agent) to an easy handle. errbuf (CURL_ERROR_SIZE) gets
 * curl's detailed message. */
void imgfs_endpoint_setup_easy(struct imgfs_registry *r, struct imgfs_endpoint *ep, CURL *c,
			       char *errbuf);

/* Map a curl error to an errno and a message naming host (and, for TLS,
 * why verification failed). Returns -1. */
int imgfs_curl_error(struct imgfs_error *err, CURL *c, CURLcode rc, const char *what,
		     const char *host, const char *errbuf);

/* ---- header checks (registry.c) ------------------------------------------ */

/*
 * Digest the bytes of a manifest and check them: against want (a digest
 * reference; may be NULL) and against the Docker-Content-Digest header (may be
 * NULL), each hashed with its own algorithm. out gets the digest with want's
 * algorithm (sha256 when want is NULL). EIO naming both digests on mismatch,
 * EIO on an unparsable header.
 */
int imgfs_fetch_check_digest(const char *data, size_t len, const struct imgfs_digest *want,
			     const char *header_digest, struct imgfs_digest *out,
			     struct imgfs_error *err);

/* Parse "bytes N-M/T" (T may be "*"); 0 or -1. */
int imgfs_parse_content_range(const char *v, uint64_t *start, uint64_t *end);

/* "application/vnd.oci.image.index.v1+json; charset=utf-8" -> without the
 * parameters and surrounding spaces; caller frees. */
char *imgfs_media_type_strip(const char *ct);

#endif
