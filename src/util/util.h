/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util: cleanup helpers, the error object, logging, digests and small file
 * helpers shared by every module. Includes nothing else from the project.
 */
#ifndef IMGFS_UTIL_H
#define IMGFS_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

/* ---- cleanup ----------------------------------------------------------- */

static inline void imgfs_freep(void *p)
{
	free(*(void **)p);
}
static inline void imgfs_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}
#define _cleanup_free_ __attribute__((cleanup(imgfs_freep)))
#define _cleanup_close_ __attribute__((cleanup(imgfs_closep)))

/* Return *pp and set it to NULL, so a cleanup attribute does not free it. */
static inline void *imgfs_steal(void *pp)
{
	void **p = pp;
	void *v = *p;
	*p = NULL;
	return v;
}
#define steal_pointer(pp) imgfs_steal(pp)
static inline int steal_fd(int *fd)
{
	int v = *fd;
	*fd = -1;
	return v;
}

/* Allocation that fails by returning NULL (callers report ENOMEM); for sizes
 * computed from untrusted input use the checked variants. */
void *imgfs_xmalloc(size_t n); /* aborts on OOM: only for small fixed sizes */
char *imgfs_xstrdup(const char *s);
char *imgfs_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int imgfs_mul_overflow(size_t a, size_t b, size_t *out);

/* ---- errors ------------------------------------------------------------ */

/*
 * The error object: functions outside the FUSE request path return 0 on
 * success or -1 with *err filled. code is an errno value that says what kind
 * of failure it is (ENOENT: no such image/tag/blob; EACCES: denied; EIO:
 * digest, size or format error; ETIMEDOUT, EHOSTUNREACH, ECONNREFUSED:
 * network; EINVAL: bad input from the user). msg is human-readable and grows
 * context as the error climbs: "pull docker.io/library/alpine:3.18: layer
 * sha256:ab12…: HTTP 401 Unauthorized".
 */
struct imgfs_error {
	int code;
	char msg[2048];
};

/* Set err (overwrites). Returns -1 so callers can `return imgfs_error_set(...)`. */
int imgfs_error_set(struct imgfs_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like imgfs_error_set, appending ": strerror(errnum)". */
int imgfs_error_errno(struct imgfs_error *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix context: msg becomes "<context>: <msg>". Returns -1. */
int imgfs_error_wrap(struct imgfs_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void imgfs_error_clear(struct imgfs_error *err)
{
	err->code = 0;
	err->msg[0] = '\0';
}

/* ---- logging ----------------------------------------------------------- */

enum imgfs_log_level {
	IMGFS_LOG_ERR = 3,
	IMGFS_LOG_WARN = 4,
	IMGFS_LOG_INFO = 6,
	IMGFS_LOG_DEBUG = 7
};

/* Log to stderr (default) or syslog (after imgfs_log_use_syslog). Messages
 * above the configured level are dropped. Never pass credentials. */
void imgfs_log(enum imgfs_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void imgfs_log_set_level(enum imgfs_log_level level);
void imgfs_log_use_syslog(const char *ident);
#define imgfs_err(...) imgfs_log(IMGFS_LOG_ERR, __VA_ARGS__)
#define imgfs_warn(...) imgfs_log(IMGFS_LOG_WARN, __VA_ARGS__)
#define imgfs_info(...) imgfs_log(IMGFS_LOG_INFO, __VA_ARGS__)
#define imgfs_debug(...) imgfs_log(IMGFS_LOG_DEBUG, __VA_ARGS__)

/* ---- digests ----------------------------------------------------------- */

enum imgfs_digest_alg { IMGFS_SHA256 = 0, IMGFS_SHA512 = 1 };

/* A validated digest: "sha256:<64 lowercase hex>" or "sha512:<128 lowercase hex>". */
#define IMGFS_DIGEST_MAX 136 /* "sha512:" + 128 + NUL */
struct imgfs_digest {
	enum imgfs_digest_alg alg;
	char str[IMGFS_DIGEST_MAX]; /* full "alg:hex" */
	const char *hex;	    /* points into str */
};

/* Parse and validate s (grammar, known algorithm, exact lowercase hex length).
 * EINVAL with a message naming s when it is not a valid digest; ENOTSUP for
 * grammar-valid digests of other algorithms. */
int imgfs_digest_parse(struct imgfs_digest *d, const char *s, struct imgfs_error *err);
bool imgfs_digest_equal(const struct imgfs_digest *a, const struct imgfs_digest *b);
const char *imgfs_digest_alg_name(enum imgfs_digest_alg alg);

/* Incremental hashing (OpenSSL EVP underneath). The state can be saved and
 * restored only as a whole (no serialisation yet). */
struct imgfs_hasher;
struct imgfs_hasher *imgfs_hasher_new(enum imgfs_digest_alg alg);
void imgfs_hasher_update(struct imgfs_hasher *h, const void *buf, size_t len);
/* Finish and write the digest into out. The hasher can not be updated after. */
void imgfs_hasher_final(struct imgfs_hasher *h, struct imgfs_digest *out);
void imgfs_hasher_free(struct imgfs_hasher *h);
/* One-shot digest of a buffer. */
void imgfs_digest_buf(enum imgfs_digest_alg alg, const void *buf, size_t len,
		      struct imgfs_digest *out);

/* ---- files --------------------------------------------------------------- */

/* Read a whole file (at most max bytes; EFBIG beyond) into a NUL-terminated
 * buffer owned by the caller. */
int imgfs_read_file(const char *path, size_t max, char **out, size_t *len, struct imgfs_error *err);
/* Write data to path atomically: temp file in the same dir, fsync, rename. */
int imgfs_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
			    struct imgfs_error *err);
/* mkdir -p with mode for created components. */
int imgfs_mkdir_p(const char *path, mode_t mode, struct imgfs_error *err);
/* rm -rf below dirfd/name without following symlinks (fd based). 0 or -errno. */
int imgfs_rm_rf_at(int dirfd, const char *name);
int imgfs_rm_rf(const char *path);
/* Write all of buf (restarting on EINTR/short writes). 0 or -errno. */
int imgfs_write_all(int fd, const void *buf, size_t len);

/* ---- capabilities (caps.c) ------------------------------------------------ */

/* The calling thread has cap in its effective set (capget). */
bool imgfs_cap_effective(int cap);
/* How many of caps[0..n) are not effective; their names, comma-separated, in
 * buf ("CAP_CHOWN, CAP_MKNOD"). */
size_t imgfs_caps_missing(const int *caps, size_t n, char *buf, size_t len);
/* The capabilities an exact layer unpack needs (and a mount's overlays). */
extern const int imgfs_unpack_caps[];
extern const size_t imgfs_unpack_ncaps;

/* Human-readable size ("12.3 MB"); buf of at least 32 bytes. */
const char *imgfs_human_size(uint64_t bytes, char *buf, size_t buflen);
/* Monotonic seconds. */
double imgfs_now(void);

#endif
