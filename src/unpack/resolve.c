/* SPDX-License-Identifier: Apache-2.0 */
/*
 * In-root resolution of entry parents with openat2(RESOLVE_IN_ROOT), creation
 * of implied parent directories (following in-root symlinks of this layer's
 * own dir, as containerd's RootPath + mkparent do), and the set of paths the
 * layer created. Nothing resolved here outlives one entry.
 */
#include "unpack_i.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RESOLVE_FLAGS (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
#define MAX_SYMLINK_HOPS 40

/* Lexical clean: drop "/" and "." components, ".." pops (clamped at the root). */
char *unpack_clean_path(const char *name)
{
	size_t o = 0;
	char *out = malloc(strlen(name) + 1);
	const char *p = name;

	if (!out)
		return NULL;
	while (*p) {
		const char *s;
		size_t l;

		while (*p == '/')
			p++;
		s = p;
		while (*p && *p != '/')
			p++;
		l = (size_t)(p - s);
		if (l == 0 || (l == 1 && s[0] == '.'))
			continue;
		if (l == 2 && s[0] == '.' && s[1] == '.') {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--;
			continue;
		}
		if (o)
			out[o++] = '/';
		memcpy(out + o, s, l);
		o += l;
	}
	out[o] = '\0';
	return out;
}

char *unpack_join(const char *parent, const char *base)
{
	if (!*parent)
		return strdup(base);
	return imgfs_xasprintf("%s/%s", parent, base);
}

int unpack_openat2(int dirfd, const char *path, int flags, uint64_t resolve)
{
	struct open_how how = {.flags = (uint64_t)flags | O_CLOEXEC, .resolve = resolve};

	if (!*path)
		path = ".";
	for (int i = 0; i < 1000; i++) {
		long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		if (errno != EAGAIN)
			return -1;
	}
	return -1;
}

void unpack_put_fd(struct unpack_ctx *u, int fd)
{
	if (fd >= 0 && fd != u->root_fd)
		close(fd);
}

/* ---- path set ------------------------------------------------------------ */

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h ^ (h >> 29);
}

struct unpack_set_ent *unpack_set_get(struct unpack_set *s, const char *key)
{
	if (!s->cap)
		return NULL;
	for (size_t i = hash_str(key) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (!s->ents[i].key)
			return NULL;
		if (!strcmp(s->ents[i].key, key))
			return &s->ents[i];
	}
}

static int set_grow(struct unpack_set *s)
{
	size_t ncap = s->cap ? s->cap * 2 : 1024;
	struct unpack_set_ent *n = calloc(ncap, sizeof(*n));

	if (!n)
		return -1;
	for (size_t i = 0; i < s->cap; i++) {
		size_t j;

		if (!s->ents[i].key)
			continue;
		for (j = hash_str(s->ents[i].key) & (ncap - 1); n[j].key; j = (j + 1) & (ncap - 1))
			;
		n[j] = s->ents[i];
	}
	free(s->ents);
	s->ents = n;
	s->cap = ncap;
	return 0;
}

/* Add key (copied) or OR flags into an existing entry. NULL on ENOMEM.
 * Pointers returned earlier are invalidated when the table grows. */
struct unpack_set_ent *unpack_set_add(struct unpack_set *s, const char *key, uint32_t flags)
{
	struct unpack_set_ent *e = unpack_set_get(s, key);
	size_t i;

	if (e) {
		e->flags |= flags;
		return e;
	}
	if ((s->len + 1) * 2 > s->cap && set_grow(s) < 0)
		return NULL;
	for (i = hash_str(key) & (s->cap - 1); s->ents[i].key; i = (i + 1) & (s->cap - 1))
		;
	s->ents[i].key = strdup(key);
	if (!s->ents[i].key)
		return NULL;
	s->ents[i].flags = flags;
	s->ents[i].dirfix = 0;
	s->len++;
	return &s->ents[i];
}

void unpack_set_destroy(struct unpack_set *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->ents[i].key);
	free(s->ents);
	s->ents = NULL;
	s->cap = s->len = 0;
}

/* ---- implied parents ----------------------------------------------------- */

/* fd's path relative to the root ("" for the root), from /proc. */
static char *fd_relpath(struct unpack_ctx *u, int fd)
{
	char proc[64], buf[PATH_MAX + 1];
	size_t rl = strlen(u->root_real);
	ssize_t n;

	if (fd == u->root_fd)
		return strdup("");
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, buf, sizeof(buf) - 1);
	if (n < 0)
		return NULL;
	buf[n] = '\0';
	if (strncmp(buf, u->root_real, rl))
		return NULL;
	if (rl == 1) /* root_real == "/" */
		return strdup(buf + 1);
	if (buf[rl] == '\0')
		return strdup("");
	if (buf[rl] != '/')
		return NULL;
	return strdup(buf + rl + 1);
}

static int record_implied(struct unpack_ctx *u, int pfd, const char *comp, const char *lexical)
{
	_cleanup_free_ char *rel = fd_relpath(u, pfd);
	_cleanup_free_ char *path = rel ? unpack_join(rel, comp) : strdup(lexical);
	struct unpack_set_ent *e;

	if (!path)
		return -1;
	e = unpack_set_add(&u->set, path, UNPACK_CREATED | UNPACK_IMPLIED);
	if (!e)
		return -1;
	if (u->n_implied == u->cap_implied) {
		size_t ncap = u->cap_implied ? u->cap_implied * 2 : 64;
		void *n = realloc(u->implied, ncap * sizeof(*u->implied));
		if (!n)
			return -1;
		u->implied = n;
		u->cap_implied = ncap;
	}
	/* keep the key: set entries move when the table grows, keys do not */
	u->implied[u->n_implied++] = e->key;
	return 0;
}

/* Walk path prefix by prefix from the root, creating missing directories.
 * A dangling in-root symlink on the way is followed: its target (re-rooted)
 * is created, as containerd's RootPath + mkparent do. */
static int make_parents(struct unpack_ctx *u, struct unpack_entry *e, bool whiteout,
			struct imgfs_error *err)
{
	_cleanup_free_ char *path = strdup(e->parent);
	int hops = 0;

	if (!path)
		return imgfs_error_set(err, ENOMEM, "entry \"%s\": out of memory", e->name);
restart:
	for (size_t end = 0, start = 0;; start = end) {
		int pfd, fd;
		char saved;

		while (path[start] == '/')
			start++;
		if (!path[start])
			return 0;
		end = start;
		while (path[end] && path[end] != '/')
			end++;
		saved = path[end];
		path[end] = '\0';
		fd = unpack_openat2(u->root_fd, path, O_PATH | O_DIRECTORY, RESOLVE_FLAGS);
		if (fd >= 0) {
			close(fd);
			path[end] = saved;
			if (!saved)
				return 0;
			continue;
		}
		if (errno == ENOTDIR)
			return imgfs_error_errno(err, ENOTDIR, "entry \"%s\": parent %s", e->name,
						 path);
		if (errno != ENOENT)
			return imgfs_error_errno(err, errno, "entry \"%s\": resolve %s", e->name,
						 path);
		/* prefix up to start resolves (or is the root); path[start..] is missing */
		pfd = u->root_fd;
		if (start) {
			path[start - 1] = '\0';
			pfd = unpack_openat2(u->root_fd, path, O_PATH | O_DIRECTORY, RESOLVE_FLAGS);
			path[start - 1] = '/';
		}
		if (pfd < 0)
			return imgfs_error_errno(err, errno, "entry \"%s\": resolve parent of %s",
						 e->name, path);
		if (mkdirat(pfd, path + start, 0755) == 0) {
			int r = record_implied(u, pfd, path + start, path);
			unpack_put_fd(u, pfd);
			if (r < 0)
				return imgfs_error_set(err, ENOMEM, "entry \"%s\": out of memory",
						       e->name);
			path[end] = saved;
			if (!saved)
				return 0;
			continue;
		}
		if (errno != EEXIST) {
			int r = errno;
			unpack_put_fd(u, pfd);
			return imgfs_error_errno(err, r, "entry \"%s\": create parent %s", e->name,
						 path);
		}
		/* EEXIST after ENOENT: a dangling symlink. Follow it in-root. */
		char target[PATH_MAX];
		ssize_t n = readlinkat(pfd, path + start, target, sizeof(target) - 1);
		unpack_put_fd(u, pfd);
		if (n < 0)
			return imgfs_error_errno(err, errno, "entry \"%s\": parent %s", e->name,
						 path);
		target[n] = '\0';
		if (whiteout)
			return -2;
		if (++hops > MAX_SYMLINK_HOPS)
			return imgfs_error_set(err, ELOOP, "entry \"%s\": too many symlinks in %s",
					       e->name, e->parent);
		char *rest = saved ? path + end + 1 : "";
		char *np;
		if (target[0] == '/')
			np = imgfs_xasprintf("%s/%s", target, rest);
		else {
			path[start] = '\0';
			np = imgfs_xasprintf("%s%s/%s", path, target, rest);
		}
		free(path);
		path = np;
		goto restart;
	}
}

int unpack_resolve_parent(struct unpack_ctx *u, struct unpack_entry *e, bool whiteout,
			  struct imgfs_error *err)
{
	int fd, r;

	if (!*e->parent)
		return u->root_fd;
	fd = unpack_openat2(u->root_fd, e->parent, O_PATH | O_DIRECTORY, RESOLVE_FLAGS);
	if (fd >= 0)
		return fd;
	if (errno == ENOTDIR)
		return imgfs_error_set(err, ENOTDIR,
				       "entry \"%s\": a parent of it is not a directory", e->name);
	if (errno == ENAMETOOLONG)
		return imgfs_error_set(err, ENAMETOOLONG, "entry \"%s\": name too long", e->name);
	if (errno != ENOENT)
		return imgfs_error_errno(err, errno, "entry \"%s\": resolve parent", e->name);
	r = make_parents(u, e, whiteout, err);
	if (r < 0)
		return r;
	fd = unpack_openat2(u->root_fd, e->parent, O_PATH | O_DIRECTORY, RESOLVE_FLAGS);
	if (fd < 0)
		return imgfs_error_errno(err, errno,
					 "entry \"%s\": resolve parent after creating it", e->name);
	return fd;
}
