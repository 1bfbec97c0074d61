// SPDX-License-Identifier: Apache-2.0
/*
 * The inode table. A FUSE node id is the address of its struct fs_inode (the
 * root is id 1). Passthrough inodes are keyed by (view, st_dev, st_ino) of the
 * backing inode, virtual ones by their path, so a file keeps its node id (and
 * st_ino) while mounted. Lookup counts follow the kernel's forget semantics;
 * a passthrough inode also lives while inodes below it name it their parent
 * (refs), since they are opened again through it (fdcache.c).
 */
#include "fs_i.h"

#include <string.h>

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* A stable inode number for a virtual path (FNV-1a, top bit set so it stays
 * clear of most backing inode numbers). */
uint64_t fs_path_ino(const char *path)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (const unsigned char *p = (const unsigned char *)path; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	return h | (1ULL << 63);
}

static uint64_t hash_pass(const struct fs_view *v, dev_t dev, ino_t ino)
{
	return mix64((uint64_t)(uintptr_t)v ^ mix64((uint64_t)dev) ^ mix64((uint64_t)ino * 31));
}

static uint64_t inode_hash(const struct fs_inode *in)
{
	return in->kind == FS_PASS ? hash_pass(in->view, in->dev, in->ino) : in->vino;
}

int fs_inodes_init(struct fs *fs)
{
	pthread_mutex_init(&fs->inode_lock, NULL);
	fs->hsize = 1024;
	fs->htab = calloc(fs->hsize, sizeof(*fs->htab));
	if (!fs->htab)
		return -ENOMEM;
	fs->root_inode.kind = FS_VIRT;
	fs->root_inode.path = imgfs_xstrdup("/");
	fs->root_inode.vino = 1;
	fs->root_inode.fd = -1;
	fs->root_inode.rfd = -1;
	fs->root_inode.nlookup = 1;
	return 0;
}

struct fs_inode *fs_inode_get(struct fs *fs, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return &fs->root_inode;
	return (struct fs_inode *)(uintptr_t)ino;
}

fuse_ino_t fs_inode_id(struct fs *fs, struct fs_inode *in)
{
	return in == &fs->root_inode ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)in;
}

/* inode_lock held. */
static void table_grow(struct fs *fs)
{
	size_t nsize = fs->hsize * 2;
	struct fs_inode **n = calloc(nsize, sizeof(*n));
	if (!n)
		return; /* keep the longer chains */
	for (size_t i = 0; i < fs->hsize; i++) {
		struct fs_inode *in = fs->htab[i], *next;
		for (; in; in = next) {
			next = in->hnext;
			size_t b = inode_hash(in) & (nsize - 1);
			in->hnext = n[b];
			n[b] = in;
		}
	}
	free(fs->htab);
	fs->htab = n;
	fs->hsize = nsize;
}

/* inode_lock held. */
static void table_insert(struct fs *fs, struct fs_inode *in)
{
	if (fs->hcount + 1 > fs->hsize)
		table_grow(fs);
	size_t b = inode_hash(in) & (fs->hsize - 1);
	in->hnext = fs->htab[b];
	fs->htab[b] = in;
	fs->hcount++;
}

/* inode_lock held. */
static struct fs_inode *find_pass_locked(struct fs *fs, const struct fs_view *view, dev_t dev,
					 ino_t ino)
{
	struct fs_inode *in = fs->htab[hash_pass(view, dev, ino) & (fs->hsize - 1)];

	while (in && !(in->kind == FS_PASS && in->view == view && in->dev == dev && in->ino == ino))
		in = in->hnext;
	return in;
}

int fs_inode_pass(struct fs *fs, struct fs_view *view, struct fs_inode *parent, const char *name,
		  int fd, struct stat *st, struct fs_inode **out)
{
	struct fs_inode *in, *fresh;

	if (fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	fresh = calloc(1, sizeof(*fresh));
	if (fresh)
		fresh->name = strdup(name);
	if (!fresh || !fresh->name) {
		free(fresh);
		close(fd);
		return -ENOMEM;
	}
	pthread_mutex_lock(&fs->inode_lock);
	in = find_pass_locked(fs, view, st->st_dev, st->st_ino);
	if (in) {
		in->nlookup++;
		pthread_mutex_unlock(&fs->inode_lock);
		free(fresh->name);
		free(fresh);
		/* the kernel holds it now, so it lives on: its fd, if the budget closed it */
		if (__atomic_load_n(&in->fd, __ATOMIC_ACQUIRE) < 0)
			fs_fd_add(fs, in, fd);
		else
			close(fd);
		*out = in;
		return 0;
	}
	fresh->kind = FS_PASS;
	fresh->view = view;
	fresh->fd = -1;
	fresh->rfd = -1;
	fresh->dev = st->st_dev;
	fresh->ino = st->st_ino;
	fresh->type = st->st_mode & S_IFMT;
	fresh->nlookup = 1;
	fresh->parent = parent;
	if (parent)
		parent->refs++;
	table_insert(fs, fresh);
	pthread_mutex_unlock(&fs->inode_lock);
	/* unlocked: the fds the budget closes for it are closed here (a request
	 * finding it meanwhile opens it by name, and this fd is closed) */
	fs_fd_add(fs, fresh, fd);
	*out = fresh;
	return 0;
}

static struct fs_inode *inode_virt(struct fs *fs, const char *path, bool per_user, uid_t uid)
{
	uint64_t h = per_user ? fs_path_ino(path) ^ mix64((uint64_t)uid + 1) : fs_path_ino(path);
	struct fs_inode *in;

	if (!strcmp(path, "/")) {
		pthread_mutex_lock(&fs->inode_lock);
		fs->root_inode.nlookup++;
		pthread_mutex_unlock(&fs->inode_lock);
		return &fs->root_inode;
	}
	pthread_mutex_lock(&fs->inode_lock);
	for (in = fs->htab[h & (fs->hsize - 1)]; in; in = in->hnext) {
		if (in->kind == FS_VIRT && in->vino == h && !strcmp(in->path, path) &&
		    in->per_user == per_user && in->uid == uid)
			break;
	}
	if (!in) {
		in = calloc(1, sizeof(*in));
		if (in)
			in->path = strdup(path);
		if (!in || !in->path) {
			free(in);
			pthread_mutex_unlock(&fs->inode_lock);
			return NULL;
		}
		in->kind = FS_VIRT;
		in->vino = h;
		in->per_user = per_user;
		in->uid = uid;
		in->fd = -1;
		in->rfd = -1;
		table_insert(fs, in);
	}
	in->nlookup++;
	pthread_mutex_unlock(&fs->inode_lock);
	return in;
}

struct fs_inode *fs_inode_virt(struct fs *fs, const char *path)
{
	return inode_virt(fs, path, false, 0);
}

struct fs_inode *fs_inode_virt_user(struct fs *fs, const char *path, uid_t uid)
{
	return inode_virt(fs, path, true, uid);
}

/* Close an inode's fds and free it. */
static void inode_destroy(struct fs *fs, struct fs_inode *in)
{
	if (in->kind == FS_PASS)
		fs_fd_drop(fs, in);
	free(in->name);
	free(in->path);
	free(in);
}

/* inode_lock held. */
static void table_remove(struct fs *fs, struct fs_inode *in)
{
	for (struct fs_inode **pp = &fs->htab[inode_hash(in) & (fs->hsize - 1)]; *pp;
	     pp = &(*pp)->hnext) {
		if (*pp == in) {
			*pp = in->hnext;
			fs->hcount--;
			break;
		}
	}
}

/* Out of the table if nothing keeps in any more: true when the caller is to
 * free it (the read-ahead thread frees it if it is using it). inode_lock held. */
static bool release_locked(struct fs *fs, struct fs_inode *in)
{
	if (in == &fs->root_inode || in->nlookup || in->refs)
		return false;
	table_remove(fs, in);
	return true;
}

void fs_inode_free(struct fs *fs, struct fs_inode *in)
{
	/* up the parents a loop, not a recursion: trees may be deep */
	while (in) {
		struct fs_inode *p = in->parent;
		bool free_p;
		inode_destroy(fs, in);
		if (!p)
			break;
		pthread_mutex_lock(&fs->inode_lock);
		p->refs--;
		free_p = release_locked(fs, p);
		pthread_mutex_unlock(&fs->inode_lock);
		in = free_p && !fs_ra_forget(fs, p) ? p : NULL;
	}
}

void fs_inode_unref(struct fs *fs, struct fs_inode *in)
{
	bool dead;

	pthread_mutex_lock(&fs->inode_lock);
	in->refs--;
	dead = release_locked(fs, in);
	pthread_mutex_unlock(&fs->inode_lock);
	if (dead && !fs_ra_forget(fs, in))
		fs_inode_free(fs, in);
}

void fs_inode_forget(struct fs *fs, struct fs_inode *in, uint64_t n)
{
	bool dead;

	pthread_mutex_lock(&fs->inode_lock);
	if (n > in->nlookup)
		n = in->nlookup;
	in->nlookup -= n;
	dead = release_locked(fs, in);
	pthread_mutex_unlock(&fs->inode_lock);
	if (dead && !fs_ra_forget(fs, in))
		fs_inode_free(fs, in);
}

void fs_inodes_free(struct fs *fs)
{
	for (size_t i = 0; i < fs->hsize; i++) {
		for (struct fs_inode *in = fs->htab[i], *next; in; in = next) {
			next = in->hnext;
			fs_ra_forget(fs, in);
			inode_destroy(fs, in);
		}
	}
	free(fs->htab);
	fs->htab = NULL;
	free(fs->root_inode.path);
	fs->root_inode.path = NULL;
	for (struct fs_view *v = fs->views, *next; v; v = next) {
		next = v->next;
		free(v->vpath);
		free(v);
	}
	fs->views = NULL;
	for (struct fs_backing *b = fs->backings, *next; b; b = next) {
		next = b->next;
		fs_backing_release(b);
		free(b->key);
		free(b);
	}
	fs->backings = NULL;
}

/* ---- names that change ------------------------------------------------------ */

struct fs_inode *fs_inode_at(struct fs *fs, struct fs_pin *parent, const char *name,
			     struct fs_pin *pin)
{
	struct fs_view *view = parent->in->view;
	struct fs_inode *in;
	struct stat st;

	if (fstatat(parent->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return NULL;
	pthread_mutex_lock(&fs->inode_lock);
	in = find_pass_locked(fs, view, st.st_dev, st.st_ino);
	if (in)
		in->refs++;
	pthread_mutex_unlock(&fs->inode_lock);
	if (in && fs_pin_get(fs, in, pin) < 0) {
		fs_inode_unref(fs, in);
		return NULL;
	}
	return in;
}

void fs_inode_put(struct fs *fs, struct fs_inode *in, struct fs_pin *pin)
{
	if (!in)
		return;
	fs_pin_put(pin);
	fs_inode_unref(fs, in);
}

/* Whether in is opened again by parent/name. inode_lock held. */
static bool named_locked(const struct fs_inode *in, const struct fs_inode *parent, const char *name)
{
	return in->parent == parent && !strcmp(in->name, name);
}

void fs_inode_moved(struct fs *fs, struct fs_inode *in, struct fs_inode *parent, const char *name,
		    struct fs_inode *newparent, const char *newname)
{
	char *copy = strdup(newname), *old = NULL;
	bool named;

	pthread_mutex_lock(&fs->inode_lock);
	named = named_locked(in, parent, name);
	if (named && copy) {
		old = in->name;
		in->name = steal_pointer(&copy);
		newparent->refs++;
		in->parent = newparent;
		__atomic_add_fetch(&fs->names_gen, 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&fs->inode_lock);
	if (old)
		fs_inode_unref(fs, parent); /* alive: the kernel holds it for the rename */
	else if (named)
		fs_fd_keep(fs, in); /* out of memory: its fds rather than a wrong name */
	free(copy);
	free(old);
}

void fs_inode_unnamed(struct fs *fs, struct fs_inode *in, struct fs_inode *parent, const char *name)
{
	bool named;

	pthread_mutex_lock(&fs->inode_lock);
	named = named_locked(in, parent, name);
	if (named)
		__atomic_add_fetch(&fs->names_gen, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&fs->inode_lock);
	/* its name is gone (other hard links may be left, but which is not
	 * known): it keeps its fds until the kernel forgets it */
	if (named)
		fs_fd_keep(fs, in);
}

/* ---- views and backings --------------------------------------------------- */

struct fs_view *fs_view_get(struct fs *fs, const char *vpath, const char *key, bool immutable,
			    bool writable,
			    int (*make)(struct fs *fs, void *ctx, struct fs_backing *b), void *ctx,
			    int *errp)
{
	struct fs_backing *b;
	struct fs_view *v;
	int rc;

	pthread_mutex_lock(&fs->backing_lock);
	for (v = fs->views; v; v = v->next) {
		if (!strcmp(v->vpath, vpath) && !strcmp(v->b->key, key))
			goto out;
	}
	for (b = fs->backings; b; b = b->next) {
		if (!strcmp(b->key, key))
			break;
	}
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b) {
			*errp = ENOMEM;
			goto out;
		}
		b->fd = -1;
		b->lockfd = -1;
		b->key = imgfs_xstrdup(key);
		rc = make(fs, ctx, b);
		if (rc < 0) {
			free(b->key);
			free(b);
			*errp = -rc;
			v = NULL;
			goto out;
		}
		b->next = fs->backings;
		fs->backings = b;
	}
	v = calloc(1, sizeof(*v));
	if (!v) {
		*errp = ENOMEM;
		goto out;
	}
	v->vpath = imgfs_xstrdup(vpath);
	v->b = b;
	v->immutable = immutable;
	v->writable = writable;
	v->next = fs->views;
	fs->views = v;
out:
	pthread_mutex_unlock(&fs->backing_lock);
	return v;
}
