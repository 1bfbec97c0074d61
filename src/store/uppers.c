/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The directories that hold the writes made in an image's rootfs/ (its
 * overlay upper and work dirs). They belong to one image name at one
 * manifest digest, so a tag that moves to new content starts clean, and they
 * go with the image: `imgfs rm` removes them, gc removes those no image
 * record names. The directory name is fixed-length (never ENAMETOOLONG) and
 * derived, not escaped: <alg>-<manifest hex>-<sha256 of the name, hex>.
 */
#include "store_i.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#define UPPER_LOCK_POLL_MS 20

char *store_upper_key(const char *name, const char *digest)
{
	struct imgfs_error e;
	struct imgfs_digest d, n;

	if (!name || imgfs_digest_parse(&d, digest, &e) < 0)
		return NULL;
	imgfs_digest_buf(IMGFS_SHA256, name, strlen(name), &n);
	return imgfs_xasprintf("%s-%s-%s", imgfs_digest_alg_name(d.alg), d.hex, n.hex);
}

char *imgfs_store_upper_dir(const struct imgfs_store *s, const char *name, const char *digest)
{
	_cleanup_free_ char *key = store_upper_key(name, digest);
	return key ? imgfs_xasprintf("%s/uppers/%s", s->root, key) : NULL;
}

/* "<name>\n<digest>\n" in <dir>/image: for people reading uppers/, and for
 * gc's messages. Never used to find anything. */
int store_upper_write_info(int dirfd, const char *name, const char *digest)
{
	_cleanup_free_ char *text = imgfs_xasprintf("%s\n%s\n", name, digest);
	_cleanup_close_ int fd =
	    openat(dirfd, "image", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0 || imgfs_write_all(fd, text, strlen(text)) < 0)
		return -errno;
	return 0;
}

int imgfs_store_upper_make(struct imgfs_store *s, const char *name, const char *digest, ino_t *ino,
			   struct imgfs_error *err)
{
	_cleanup_free_ char *dir = imgfs_store_upper_dir(s, name, digest);
	_cleanup_free_ char *parent = imgfs_xasprintf("%s/uppers", s->root);
	_cleanup_close_ int fd = -1;
	struct stat st;

	if (!dir)
		return imgfs_error_set(err, EINVAL, "image %s: invalid manifest digest", name);
	if (lstat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
		*ino = st.st_ino;
		return 0;
	}
	if (s->read_only) { /* never written, and nothing can be now */
		*ino = 0;
		return 0;
	}
	if (imgfs_mkdir_p(parent, 0700, err) < 0)
		return -1;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return imgfs_error_errno(err, errno, "image %s: make %s", name, dir);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return imgfs_error_errno(err, errno, "image %s: open %s", name, dir);
	store_upper_write_info(fd, name, digest);
	*ino = st.st_ino;
	return 0;
}

/* Take <dirfd>/lock exclusively, retrying for up to wait_ms while someone
 * holds it (a mount that is going away drops it a moment after umount
 * returns). The fd, or -EWOULDBLOCK, or -errno. */
static int lock_wait(int dirfd, int wait_ms)
{
	_cleanup_close_ int fd =
	    openat(dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	int waited = 0;

	if (fd < 0)
		return -errno;
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK || waited >= wait_ms)
			return -errno;
		nanosleep(&(struct timespec){0, UPPER_LOCK_POLL_MS * 1000000L}, NULL);
		waited += UPPER_LOCK_POLL_MS;
	}
	return steal_fd(&fd);
}

int imgfs_store_upper_reset(struct imgfs_store *s, const char *name, const char *digest,
			    int wait_ms, struct imgfs_error *err)
{
	_cleanup_free_ char *dir = imgfs_store_upper_dir(s, name, digest);
	_cleanup_close_ int dfd = -1;
	_cleanup_close_ int lfd = -1;
	int rc;

	if (!dir)
		return imgfs_error_set(err, EINVAL, "reset %s: invalid manifest digest", name);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0) {
		if (errno == ENOENT)
			return 0; /* never written */
		return imgfs_error_errno(err, errno, "reset %s: %s", name, dir);
	}
	lfd = lock_wait(dfd, wait_ms);
	if (lfd == -EWOULDBLOCK)
		return imgfs_error_set(
		    err, EBUSY,
		    "reset %s: its rootfs is in use by a mounted imgfs; unmount it first", name);
	if (lfd < 0)
		return imgfs_error_errno(err, -lfd, "reset %s: lock %s/lock", name, dir);
	rc = imgfs_rm_rf_at(dfd, "upper");
	if (rc == 0 || rc == -ENOENT)
		rc = imgfs_rm_rf_at(dfd, "work");
	if (rc < 0 && rc != -ENOENT)
		return imgfs_error_errno(err, -rc, "reset %s: removing %s/upper", name, dir);
	return 0;
}

int store_upper_discard(struct imgfs_store *s, const char *key, int wait_ms, bool set_aside,
			bool *kept, struct imgfs_error *err)
{
	_cleanup_free_ char *parent = imgfs_xasprintf("%s/uppers", s->root);
	_cleanup_close_ int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int dfd = -1;
	_cleanup_close_ int lfd = -1;
	char aside[64];
	int rc;

	*kept = false;
	if (pfd < 0 && errno == ENOENT)
		return 0;
	if (pfd < 0)
		return imgfs_error_errno(err, errno, "open %s", parent);
	dfd = openat(pfd, key, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0 && errno == ENOENT)
		return 0;
	if (dfd < 0)
		return imgfs_error_errno(err, errno, "open %s/%s", parent, key);
	lfd = lock_wait(dfd, wait_ms);
	if (lfd >= 0) {
		/* holding the lock: a mount that takes it after us finds the
		 * directory gone (it re-checks) */
		rc = imgfs_rm_rf_at(pfd, key);
		if (rc < 0 && rc != -ENOENT)
			return imgfs_error_errno(err, -rc, "remove %s/%s", parent, key);
		return 0;
	}
	if (lfd != -EWOULDBLOCK)
		return imgfs_error_errno(err, -lfd, "lock %s/%s/lock", parent, key);
	*kept = true;
	if (!set_aside)
		return 0;
	/* A mount serves these writes: set them aside, out of reach of a later
	 * image of the same name and digest, for gc to remove once unused. */
	for (int i = 0; i < 100; i++) {
		snprintf(aside, sizeof(aside), "removed-%08lx%04x", (unsigned long)time(NULL),
			 (unsigned)(random() & 0xffff));
		if (renameat2(pfd, key, pfd, aside, RENAME_NOREPLACE) == 0)
			return 0;
		if (errno != EEXIST)
			return imgfs_error_errno(err, errno, "set aside %s/%s", parent, key);
	}
	return imgfs_error_set(err, EEXIST, "set aside %s/%s: no free name", parent, key);
}

int imgfs_store_upper_remove(struct imgfs_store *s, const char *name, const char *digest,
			     int wait_ms, bool *kept, struct imgfs_error *err)
{
	_cleanup_free_ char *key = store_upper_key(name, digest);

	*kept = false;
	if (!key)
		return imgfs_error_set(err, EINVAL, "image %s: invalid manifest digest", name);
	return store_upper_discard(s, key, wait_ms, true, kept, err) < 0
		   ? imgfs_error_wrap(err, "the writes of image %s", name)
		   : 0;
}

/* ---- schema 1 -> 2 ---------------------------------------------------------- */

/* Schema 1 named an image's upper dir after the image, every byte outside
 * [A-Za-z0-9._-] as %XX (too long for long references). */
static char *v1_upper_name(const char *name)
{
	static const char hex[] = "0123456789ABCDEF";
	char *esc = calloc(1, strlen(name) * 3 + 4), *o = esc;

	if (!esc)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-') {
			*o++ = (char)*p;
		} else {
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		}
	}
	if (!strcmp(esc, ".") || !strcmp(esc, "..")) {
		memmove(esc + 3, esc + 1, strlen(esc));
		memcpy(esc, "%2E", 3);
	}
	return esc;
}

int store_upper_migrate_v1(struct imgfs_store *s, const char *name, json_t *rec)
{
	const char *digest =
	    json_string_value(json_object_get(json_object_get(rec, "target"), "digest"));
	_cleanup_free_ char *parent = imgfs_xasprintf("%s/uppers", s->root);
	_cleanup_free_ char *old = v1_upper_name(name);
	_cleanup_free_ char *key = store_upper_key(name, digest);
	_cleanup_close_ int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int dfd = -1;

	if (pfd < 0 || !old || !key || strlen(old) > 255)
		return 0; /* no uppers at all, or none this name could have had */
	if (renameat2(pfd, old, pfd, key, RENAME_NOREPLACE) < 0)
		return errno == ENOENT ? 0 : -errno;
	dfd = openat(pfd, key, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd >= 0)
		store_upper_write_info(dfd, name, digest);
	imgfs_info("store %s: the writes of %s moved to uppers/%s", s->root, name, key);
	return 0;
}
