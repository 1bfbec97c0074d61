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

#define RESOLVE_NOSYM (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS)
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

/* ---- resolution and implied parents ----------------------------------- */

/* Non-empty components of path ("a//b/" has 2). */
static size_t count_components(const char *path)
{
	size_t n = 0;

	for (const char *p = path; *p; p++)
		n += *p != '/' && (p == path || p[-1] == '/');
	return n;
}

static int record_implied(struct unpack_ctx *u, const char *path)
{
	struct unpack_set_ent *e = unpack_set_add(&u->set, path, UNPACK_CREATED | UNPACK_IMPLIED);

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

/* The limit first: entry names can be long enough to push it out of err. */
static int depth_fail(struct imgfs_error *err, const char *ename)
{
	return imgfs_error_set(
	    err, EFBIG, "layer exceeds the limit of %d directory levels at entry \"%.100s%s\"",
	    IMGFS_UNPACK_MAX_DEPTH, ename, strlen(ename) > 100 ? "..." : "");
}

/* State of one component-by-component walk (see walk()). */
struct walk {
	struct unpack_ctx *u;
	enum unpack_walk mode;
	const char *ename; /* the entry, for messages */
	struct imgfs_error *err;
	int fd;	      /* current directory (O_PATH), u->root_fd at the root */
	size_t depth; /* of fd below the root */
	char *cur;    /* fd's path from the root, physical ("" = the root) */
	size_t curlen, curcap;
};

static int walk_fail(struct walk *w, int code, const char *what, const char *name)
{
	if (code == ENAMETOOLONG)
		return imgfs_error_set(w->err, ENAMETOOLONG, "entry \"%s\": name too long",
				       w->ename);
	if (code == ENOTDIR)
		return imgfs_error_set(w->err, ENOTDIR,
				       "entry \"%s\": a parent of it is not a directory", w->ename);
	return imgfs_error_errno(w->err, code, "entry \"%s\": %s %s", w->ename, what, name);
}

static int walk_push(struct walk *w, int nfd, const char *c, size_t cl)
{
	if (w->curlen + cl + 2 > w->curcap) {
		size_t ncap = (w->curlen + cl + 2) * 2;
		char *n = realloc(w->cur, ncap);
		if (!n) {
			close(nfd);
			return imgfs_error_set(w->err, ENOMEM, "entry \"%s\": out of memory",
					       w->ename);
		}
		w->cur = n;
		w->curcap = ncap;
	}
	if (w->curlen)
		w->cur[w->curlen++] = '/';
	memcpy(w->cur + w->curlen, c, cl);
	w->curlen += cl;
	w->cur[w->curlen] = '\0';
	unpack_put_fd(w->u, w->fd);
	w->fd = nfd;
	w->depth++;
	return 0;
}

/* A missing component c of the current directory: create it (recorded as
 * implied) unless resolving only. */
static int walk_create(struct walk *w, const char *c, size_t cl)
{
	int nfd, r;

	if (w->mode == UNPACK_WALK_EXISTING)
		return walk_fail(w, ENOENT, "resolve", c);
	if (w->depth + 1 > IMGFS_UNPACK_MAX_DEPTH)
		return depth_fail(w->err, w->ename);
	if (mkdirat(w->fd, c, 0755) < 0)
		return walk_fail(w, errno, "create parent", c);
	nfd = openat(w->fd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (nfd < 0)
		return walk_fail(w, errno, "open parent", c);
	if ((r = walk_push(w, nfd, c, cl)) < 0)
		return r;
	if (record_implied(w->u, w->cur) < 0)
		return imgfs_error_set(w->err, ENOMEM, "entry \"%s\": out of memory", w->ename);
	return 0;
}

/*
 * Resolve path (cleaned, from the layer root) one component at a time,
 * keeping the directory fd: O(components) syscalls, never a re-walk from the
 * root per prefix. In-root symlinks are followed as RESOLVE_IN_ROOT would
 * (absolute targets from the layer root, ".." clamped at it, at most
 * MAX_SYMLINK_HOPS); the physical depth is known at every step, so no
 * directory is created deeper than IMGFS_UNPACK_MAX_DEPTH however symlinks chain.
 * Every step is charged to the layer's budget (u->walk_steps).
 * Returns 0 with w->fd the directory, -1 with w->err set, or -2 (whiteouts)
 * when a component of a symlink's target is missing (a dangling symlink).
 */
static int walk(struct walk *w, const char *path)
{
	_cleanup_free_ char *p = strdup(path);
	size_t from_target = 0; /* how many of the next components came from a target */
	int hops = 0;
	char *s;

	if (!p)
		return imgfs_error_set(w->err, ENOMEM, "entry \"%s\": out of memory", w->ename);
	s = p;
	for (;;) {
		char *c, target[PATH_MAX];
		size_t cl;
		int nfd;
		ssize_t n;
		bool in_target;

		while (*s == '/')
			s++;
		if (!*s)
			return 0;
		c = s;
		while (*s && *s != '/')
			s++;
		cl = (size_t)(s - c);
		if (*s)
			*s++ = '\0';
		in_target = from_target > 0;
		if (from_target)
			from_target--;
		if (++w->u->walk_steps > w->u->max_walk_steps)
			return imgfs_error_set(
			    w->err, EFBIG,
			    "layer exceeds the limit of %llu path components resolved one by one "
			    "(missing parents, symlinks) at entry \"%.100s%s\"",
			    (unsigned long long)w->u->max_walk_steps, w->ename,
			    strlen(w->ename) > 100 ? "..." : "");
		if (cl == 1 && c[0] == '.')
			continue;
		if (cl == 2 && c[0] == '.' && c[1] == '.') {
			if (!w->depth)
				continue; /* clamped at the root */
			nfd = openat(w->fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
			if (nfd < 0)
				return walk_fail(w, errno, "resolve", "..");
			unpack_put_fd(w->u, w->fd);
			w->fd = nfd;
			w->depth--;
			while (w->curlen && w->cur[w->curlen - 1] != '/')
				w->curlen--;
			if (w->curlen)
				w->curlen--;
			w->cur[w->curlen] = '\0';
			continue;
		}
		nfd = openat(w->fd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd >= 0) {
			int r;
			if (w->depth + 1 > IMGFS_UNPACK_MAX_DEPTH) {
				close(nfd);
				return depth_fail(w->err, w->ename);
			}
			if ((r = walk_push(w, nfd, c, cl)) < 0)
				return r;
			continue;
		}
		if (errno == ENOENT) {
			int r;
			if (in_target && w->mode == UNPACK_WALK_WHITEOUT)
				return -2; /* a dangling symlink: nothing below it to hide */
			if ((r = walk_create(w, c, cl)) < 0)
				return r;
			continue;
		}
		if (errno != ENOTDIR && errno != ELOOP)
			return walk_fail(w, errno, "resolve", c);
		/* a symlink, or not a directory */
		n = readlinkat(w->fd, c, target, sizeof(target) - 1);
		if (n < 0)
			return walk_fail(w, errno == EINVAL ? ENOTDIR : errno, "resolve", c);
		target[n] = '\0';
		if (++hops > MAX_SYMLINK_HOPS)
			return imgfs_error_set(
			    w->err, ELOOP, "entry \"%s\": too many symlinks in its path", w->ename);
		if (target[0] == '/') {
			unpack_put_fd(w->u, w->fd);
			w->fd = w->u->root_fd;
			w->depth = 0;
			w->curlen = 0;
			w->cur[0] = '\0';
		}
		/* continue with target, then the rest */
		char *np = imgfs_xasprintf("%s/%s", target, s);
		from_target += count_components(target);
		free(p);
		p = s = np;
	}
}

int unpack_resolve_dir(struct unpack_ctx *u, const char *path, enum unpack_walk mode,
		       const char *ename, size_t *depth, struct imgfs_error *err)
{
	size_t ncomp = count_components(path);
	int fd, r;

	if (!*path) {
		*depth = 0;
		return u->root_fd;
	}
	if (strlen(path) >= PATH_MAX)
		return imgfs_error_set(err, ENAMETOOLONG, "entry \"%s\": name too long", ename);
	if (ncomp > IMGFS_UNPACK_MAX_DEPTH)
		return depth_fail(err, ename);
	/* fast path: no symlink on the way, so the depth is the component count */
	fd = unpack_openat2(u->root_fd, path, O_PATH | O_DIRECTORY, RESOLVE_NOSYM);
	if (fd >= 0) {
		*depth = ncomp;
		return fd;
	}
	if (errno == ENOTDIR)
		return imgfs_error_set(err, ENOTDIR,
				       "entry \"%s\": a parent of it is not a directory", ename);
	if (errno == ENAMETOOLONG)
		return imgfs_error_set(err, ENAMETOOLONG, "entry \"%s\": name too long", ename);
	if (errno != ENOENT && errno != ELOOP)
		return imgfs_error_errno(err, errno, "entry \"%s\": resolve parent", ename);
	if (errno == ENOENT && mode != UNPACK_WALK_EXISTING) {
		/* the common case of one missing level: its parent is there */
		const char *slash = strrchr(path, '/');
		_cleanup_free_ char *pp = slash ? strndup(path, (size_t)(slash - path)) : NULL;
		int pfd = !slash ? u->root_fd
			  : pp ? unpack_openat2(u->root_fd, pp, O_PATH | O_DIRECTORY, RESOLVE_NOSYM)
			       : -1;
		if (pfd >= 0) {
			const char *base = slash ? slash + 1 : path;
			r = mkdirat(pfd, base, 0755);
			if (r == 0) {
				fd = openat(pfd, base,
					    O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				unpack_put_fd(u, pfd);
				if (fd < 0)
					return imgfs_error_errno(err, errno,
								 "entry \"%s\": open parent %s",
								 ename, path);
				if (record_implied(u, path) < 0) {
					close(fd);
					return imgfs_error_set(
					    err, ENOMEM, "entry \"%s\": out of memory", ename);
				}
				*depth = ncomp;
				return fd;
			}
			unpack_put_fd(u, pfd);
			if (errno == ENAMETOOLONG)
				return imgfs_error_set(err, ENAMETOOLONG,
						       "entry \"%s\": name too long", ename);
			/* EEXIST: a dangling symlink; anything else: the walk says */
		}
	}
	struct walk w = {.u = u,
			 .mode = mode,
			 .ename = ename,
			 .err = err,
			 .fd = u->root_fd,
			 .cur = calloc(1, 64),
			 .curcap = 64};
	if (!w.cur)
		return imgfs_error_set(err, ENOMEM, "entry \"%s\": out of memory", ename);
	r = walk(&w, path);
	free(w.cur);
	if (r < 0) {
		unpack_put_fd(u, w.fd);
		return r;
	}
	*depth = w.depth;
	return w.fd;
}

int unpack_resolve_parent(struct unpack_ctx *u, struct unpack_entry *e, bool whiteout,
			  struct imgfs_error *err)
{
	size_t depth;

	return unpack_resolve_dir(u, e->parent,
				  whiteout ? UNPACK_WALK_WHITEOUT : UNPACK_WALK_CREATE, e->name,
				  &depth, err);
}
