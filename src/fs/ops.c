// SPDX-License-Identifier: Apache-2.0
/*
 * FUSE low-level operations that read: lookup, getattr, readlink, open/read,
 * directories, xattrs, statfs. Virtual nodes are answered from the tree;
 * passthrough nodes by fd-relative calls on their O_PATH fd (as libfuse's
 * passthrough_ll does; pinned for the request, fdcache.c), reads copied from the backing file
 * through a per-thread buffer (see fs_op_read). Workers return 0 or -errno; each handler sends
 * exactly one reply.
 */
#include "fs_i.h"
#include "ops_i.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>

/* ---- attributes ------------------------------------------------------------- */

double fs_attr_timeout(const struct fs_inode *in)
{
	if (in->kind == FS_VIRT)
		return FS_TIMEOUT_VIRTUAL;
	return in->view->immutable ? FS_TIMEOUT_IMMUTABLE : FS_TIMEOUT_ROOTFS;
}

static void virt_stat(const char *path, const struct fs_node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = strcmp(path, "/") ? fs_path_ino(path) : 1;
	st->st_mtim.tv_sec = st->st_ctim.tv_sec = st->st_atim.tv_sec = n->mtime;
	st->st_mtim.tv_nsec = st->st_ctim.tv_nsec = st->st_atim.tv_nsec = n->mtime_ns;
	st->st_blksize = 4096;
	if (n->type == FS_NODE_GEN) {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)n->len;
		st->st_blocks = (blkcnt_t)((n->len + 511) / 512);
	} else {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = n->nlink ? n->nlink : 2;
	}
}

/*
 * blobs/ shows the store's blob files as they are (0444): a layer blob is a
 * tarball whose files keep their own modes only once unpacked, so reading it
 * would give anyone the image's etc/shadow. Unless -o blobs=all, a blob that
 * is not a JSON document (manifest, index, config: what manifest.json,
 * config.json and index.json show, readable by all) is shown 0400, root's
 * only, and the kernel (default_permissions) refuses others with EACCES. A
 * blob with no record is treated as a layer.
 */
static bool blob_is_document(struct fs *fs, int fd)
{
	char proc[64], path[PATH_MAX], digest[IMGFS_DIGEST_MAX + 8];
	struct imgfs_error err = {0};
	struct imgfs_digest d;
	_cleanup_free_ char *mt = NULL;
	const char *hex, *alg;
	ssize_t n;
	size_t ml;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, path, sizeof(path) - 1);
	if (n < 0)
		return false;
	path[n] = '\0';
	hex = strrchr(path, '/');
	if (!hex || hex == path)
		return false;
	for (alg = hex - 1; alg > path && alg[-1] != '/'; alg--)
		;
	if (snprintf(digest, sizeof(digest), "%.*s:%s", (int)(hex - alg), alg, hex + 1) >=
		(int)sizeof(digest) ||
	    imgfs_digest_parse(&d, digest, &err) < 0)
		return false;
	mt = imgfs_store_blob_media_type(fs->store, &d);
	ml = mt ? strlen(mt) : 0;
	return ml >= 4 && !strcmp(mt + ml - 4, "json");
}

void fs_pass_attr(struct fs *fs, struct fs_inode *in, struct stat *st)
{
	struct fs_pin pin;
	bool doc;

	if (fs->blobs_all || !S_ISREG(st->st_mode) || strcmp(in->view->b->key, "blobs") ||
	    !(st->st_mode & 077))
		return;
	doc = fs_pin_get(fs, in, &pin) == 0 && blob_is_document(fs, pin.fd);
	fs_pin_put(&pin);
	if (!doc)
		st->st_mode &= ~(mode_t)077;
}

/* nlink of a virtual directory: 2 + its subdirectories. */
static nlink_t virt_nlink(struct fs *fs, const char *path)
{
	struct fs_dirent *d = NULL;
	size_t n = 0, dirs = 0;

	if (fs_tree_list(fs, path, &d, &n) < 0)
		return 2;
	for (size_t i = 0; i < n; i++)
		dirs += d[i].type == S_IFDIR;
	fs_dirents_free(d, n);
	return 2 + dirs;
}

int fs_do_getattr(struct fs *fs, struct fs_inode *in, uid_t uid, struct stat *st)
{
	struct fs_node n;
	int rc;

	if (in->kind == FS_PASS) {
		rc = fs_inode_stat(fs, in, st);
		if (rc < 0)
			return rc;
		fs_pass_attr(fs, in, st);
		return 0;
	}
	rc = fs_tree_resolve(fs, in->path, uid, &n);
	if (rc < 0)
		return rc;
	if (n.type != FS_NODE_DIR && n.type != FS_NODE_GEN) {
		fs_node_destroy(&n);
		return -ESTALE;
	}
	if (n.type == FS_NODE_DIR)
		n.nlink = virt_nlink(fs, in->path);
	virt_stat(in->path, &n, st);
	fs_node_destroy(&n);
	return 0;
}

/* ---- lookup -------------------------------------------------------------------- */

/* Once per mount: lookups fail with EMFILE, and the log should say why. */
static void warn_out_of_fds(struct fs *fs)
{
	static int warned;
	struct rlimit rl = {0};
	size_t inodes;

	if (__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
		return;
	getrlimit(RLIMIT_NOFILE, &rl);
	pthread_mutex_lock(&fs->inode_lock);
	inodes = fs->hcount;
	pthread_mutex_unlock(&fs->inode_lock);
	imgfs_warn("fs: out of open files (limit %llu, %zu inodes, at most %lu fds kept for them): "
		   "requests fail with EMFILE meanwhile; raise the daemon's RLIMIT_NOFILE "
		   "(LimitNOFILE=, or the hard limit of the shell)",
		   (unsigned long long)rl.rlim_cur, inodes, fs->fd_max);
}

/* Fill e for a passthrough child of parent named name. */
int fs_do_lookup_pass(struct fs *fs, struct fs_inode *parent, const char *name,
		      struct fuse_entry_param *e)
{
	_cleanup_pin_ struct fs_pin pin = {0};
	struct fs_inode *in;
	int fd, rc;

	rc = fs_pin_get(fs, parent, &pin);
	if (rc < 0)
		return rc;
	fd = openat(pin.fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		if (rc == -EMFILE)
			warn_out_of_fds(fs);
		return rc;
	}
	rc = fs_inode_pass(fs, parent->view, parent, name, fd, &e->attr, &in);
	if (rc < 0)
		return rc;
	fs_pass_attr(fs, in, &e->attr);
	e->ino = fs_inode_id(fs, in);
	e->attr_timeout = e->entry_timeout = fs_attr_timeout(in);
	return 0;
}

static int view_make(struct fs *fs, void *ctx, struct fs_backing *b)
{
	return fs_tree_make_backing(fs, ctx, b);
}

static int lookup_view(struct fs *fs, const char *path, const struct fs_node *n,
		       struct fuse_entry_param *e)
{
	bool rootfs = n->view == FS_VIEW_ROOTFS;
	struct fs_view *v;
	struct fs_inode *in;
	int err = 0, fd, rc;

	v = fs_view_get(fs, path, n->key, !rootfs, rootfs && !fs->read_only, view_make, (void *)n,
			&err);
	if (!v)
		return -err;
	fd = openat(v->b->fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = fs_inode_pass(fs, v, NULL, ".", fd, &e->attr, &in);
	if (rc < 0)
		return rc;
	e->ino = fs_inode_id(fs, in);
	e->attr_timeout = fs_attr_timeout(in);
	e->entry_timeout = FS_TIMEOUT_VIRTUAL; /* the name may come to mean another image */
	return 0;
}

static int lookup_blob(struct fs *fs, const struct fs_node *n, struct fuse_entry_param *e)
{
	struct fs_node bn = {.type = FS_NODE_VIEW, .view = FS_VIEW_BLOBS, .key = "blobs"};
	struct fs_view *v;
	struct fs_inode *in;
	int err = 0, fd, rc;

	v = fs_view_get(fs, "/blobs", "blobs", true, false, view_make, &bn, &err);
	if (!v)
		return -err;
	fd = openat(v->b->fd, n->blob, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = fs_inode_pass(fs, v, NULL, n->blob, fd, &e->attr, &in);
	if (rc < 0)
		return rc;
	fs_pass_attr(fs, in, &e->attr);
	e->ino = fs_inode_id(fs, in);
	e->attr_timeout = FS_TIMEOUT_IMMUTABLE;
	e->entry_timeout = FS_TIMEOUT_VIRTUAL;
	return 0;
}

/* The entry for a resolved virtual node (n is the caller's), as uid sees it. */
static int lookup_node(struct fs *fs, const char *path, uid_t uid, struct fs_node *n,
		       struct fuse_entry_param *e)
{
	struct fs_inode *in;

	switch (n->type) {
	case FS_NODE_VIEW:
		return lookup_view(fs, path, n, e);
	case FS_NODE_BLOB:
		return lookup_blob(fs, n, e);
	case FS_NODE_PULL:
		/* pulled under a name the ref does not find (should not happen) */
		return -ENOENT;
	default:
		in = n->per_user ? fs_inode_virt_user(fs, path, uid) : fs_inode_virt(fs, path);
		if (!in)
			return -ENOMEM;
		if (n->type == FS_NODE_DIR)
			n->nlink = virt_nlink(fs, path);
		virt_stat(path, n, &e->attr);
		e->ino = fs_inode_id(fs, in);
		e->attr_timeout = e->entry_timeout = FS_TIMEOUT_VIRTUAL;
		if (n->type == FS_NODE_GEN)
			e->attr_timeout = 0; /* sizes change (status) */
		/* each user's path walk looks it up again, reaching its own inode */
		if (n->per_user)
			e->entry_timeout = 0;
		return 0;
	}
}

#define LOOKUP_DEFERRED 1 /* answered later (fs_lookup_pulled) */

/* 0, -errno, or LOOKUP_DEFERRED: a complete reference under pull/ that is
 * not in the store waits for its pull without holding this thread. */
static int lookup_virt(struct fs *fs, fuse_req_t req, struct fs_inode *parent, const char *name,
		       struct fuse_entry_param *e)
{
	_cleanup_free_ char *path = NULL;
	struct fs_node n;
	int rc;

	if (strchr(name, '/') || strlen(name) > 1024)
		return -ENOENT;
	path = imgfs_xasprintf("%s/%s", strcmp(parent->path, "/") ? parent->path : "", name);
	rc = fs_tree_resolve(fs, path, fs_req_uid(req), &n);
	if (rc < 0)
		return rc;
	if (n.type == FS_NODE_PULL) {
		_cleanup_free_ char *ref = steal_pointer(&n.ref);
		fs_node_destroy(&n);
		rc = fs_pull_defer(fs, ref, path, req);
		return rc == 0 ? LOOKUP_DEFERRED : rc;
	}
	rc = lookup_node(fs, path, fs_req_uid(req), &n, e);
	fs_node_destroy(&n);
	return rc;
}

static void reply_entry(struct fs *fs, fuse_req_t req, const struct fuse_entry_param *e)
{
	/* the caller is gone (an interrupted lookup): the kernel never
	 * counts this lookup, so neither do we */
	if (fuse_reply_entry(req, e) == -ENOENT && e->ino)
		fs_inode_forget(fs, fs_inode_get(fs, e->ino), 1);
}

void fs_lookup_pulled(struct fs *fs, fuse_req_t req, const char *path, int err)
{
	struct fuse_entry_param e = {0};
	uid_t uid = fs_req_uid(req);
	struct fs_node n;
	int rc = -err;

	if (rc == 0)
		rc = fs_tree_resolve(fs, path, uid, &n);
	if (rc == 0) {
		rc = lookup_node(fs, path, uid, &n, &e);
		fs_node_destroy(&n);
	}
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_entry(fs, req, &e);
}

static void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *p = fs_inode_get(fs, parent);
	struct fuse_entry_param e = {0};
	int rc;

	fs_raise_read_ahead(fs);
	if (p->kind == FS_PASS)
		rc = fs_do_lookup_pass(fs, p, name, &e);
	else
		rc = lookup_virt(fs, req, p, name, &e);
	if (rc == LOOKUP_DEFERRED)
		return;
	if (rc == -ENOENT && p->kind == FS_PASS && p->view->immutable) {
		/* a negative entry the kernel may keep: immutable content */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = FS_TIMEOUT_IMMUTABLE;
		fuse_reply_entry(req, &e);
		return;
	}
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_entry(fs, req, &e);
}

static void fs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct fs *fs = fuse_req_userdata(req);
	fs_inode_forget(fs, fs_inode_get(fs, ino), nlookup);
	fuse_reply_none(req);
}

static void fs_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct fs *fs = fuse_req_userdata(req);
	for (size_t i = 0; i < count; i++)
		fs_inode_forget(fs, fs_inode_get(fs, forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

static void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);
	struct stat st;
	int rc;

	fs_raise_read_ahead(fs);
	rc = fs_do_getattr(fs, in, fs_virt_uid(req, in), &st);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(
		    req, &st, in->kind == FS_VIRT && S_ISREG(st.st_mode) ? 0 : fs_attr_timeout(in));
}

static void fs_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);
	_cleanup_pin_ struct fs_pin pin = {0};
	char buf[PATH_MAX + 1];
	ssize_t n;
	int rc;

	if (in->kind != FS_PASS) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	rc = fs_pin_get(fs, in, &pin);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	n = readlinkat(pin.fd, "", buf, sizeof(buf));
	if (n < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	if ((size_t)n >= sizeof(buf)) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	buf[n] = '\0';
	fuse_reply_readlink(req, buf);
}

/* ---- files ------------------------------------------------------------------------ */

struct fs_genfile {
	char *buf;
	size_t len;
};

/* in pinned */
int fs_proc_path(const struct fs_inode *in, char *buf, size_t len)
{
	return snprintf(buf, len, "/proc/self/fd/%d", in->fd) < (int)len ? 0 : -ENAMETOOLONG;
}

static void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);
	bool wr = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
	struct fs_pin pin;
	char path[64];
	int fd;

	if (fs->no_open) {
		/* the kernel then opens without us (handle 0) and keeps the page cache */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (in->kind == FS_VIRT) {
		struct fs_node n;
		struct fs_genfile *g;
		int rc;
		if (wr) {
			fuse_reply_err(req, EROFS);
			return;
		}
		rc = fs_tree_resolve(fs, in->path, fs_virt_uid(req, in), &n);
		if (rc == 0 && n.type != FS_NODE_GEN) {
			fs_node_destroy(&n);
			rc = -EISDIR;
		}
		g = rc == 0 ? calloc(1, sizeof(*g)) : NULL;
		if (rc == 0 && !g)
			rc = -ENOMEM;
		if (rc < 0) {
			fuse_reply_err(req, -rc);
			return;
		}
		g->buf = steal_pointer(&n.content);
		g->len = n.len;
		fs_node_destroy(&n);
		fi->fh = (uint64_t)(uintptr_t)g;
		fi->direct_io = 1; /* generated: the size may differ from the last getattr */
		fuse_reply_open(req, fi);
		return;
	}
	if (wr && !in->view->writable) {
		fuse_reply_err(req, EROFS);
		return;
	}
	fd = fs_pin_get(fs, in, &pin);
	if (fd == 0) {
		fs_proc_path(in, path, sizeof(path));
		fd = open(path, (fi->flags & ~(O_NOFOLLOW | O_CREAT | O_EXCL)) | O_CLOEXEC);
		if (fd < 0)
			fd = -errno;
		fs_pin_put(&pin);
	}
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	fi->fh = (uint64_t)fd;
	/* file data changes only through this mount: the page cache stays valid */
	fi->keep_cache = 1;
	if ((fi->flags & O_ACCMODE) == O_RDONLY)
		fi->noflush = 1;
	if (fuse_reply_open(req, fi) == -ENOENT)
		close(fd); /* interrupted: no release will come */
}

/* A READ buffer of at least size for this thread, kept until it exits. */
static pthread_key_t read_buffer_key;
static pthread_once_t read_buffer_once = PTHREAD_ONCE_INIT;
struct read_buffer {
	size_t size;
	char mem[];
};

static void read_buffer_key_init(void)
{
	pthread_key_create(&read_buffer_key, free);
}

static char *read_buffer(size_t size)
{
	struct read_buffer *b;

	pthread_once(&read_buffer_once, read_buffer_key_init);
	b = pthread_getspecific(read_buffer_key);
	if (b && b->size >= size)
		return b->mem;
	free(b);
	b = malloc(sizeof(*b) + size);
	pthread_setspecific(read_buffer_key, b);
	if (!b)
		return NULL;
	b->size = size;
	return b->mem;
}

static void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);

	if (in->kind == FS_VIRT) {
		struct fs_genfile *g = (struct fs_genfile *)(uintptr_t)fi->fh, tmp = {0};
		struct fs_node n;
		if (!g) {
			/* no open: generate for this read */
			int rc = fs_tree_resolve(fs, in->path, fs_virt_uid(req, in), &n);
			if (rc == 0 && n.type != FS_NODE_GEN) {
				fs_node_destroy(&n);
				rc = -EISDIR;
			}
			if (rc < 0) {
				fuse_reply_err(req, -rc);
				return;
			}
			tmp.buf = steal_pointer(&n.content);
			tmp.len = n.len;
			fs_node_destroy(&n);
			g = &tmp;
		}
		if (off < 0 || (size_t)off >= g->len)
			size = 0;
		else if (size > g->len - (size_t)off)
			size = g->len - (size_t)off;
		fuse_reply_buf(req, size ? g->buf + off : NULL, size);
		free(tmp.buf);
		return;
	}
	if (off == 0)
		fs_ra_read(fs, in);
	/* no open (no-open support): the inode's read fd, opened at the first READ
	 * and kept while the fd budget allows, so a READ costs no open and close
	 * of the file and its overlay backing file, and the backing file's
	 * read-ahead state lives across READs. An overlay fd opened before a
	 * copy-up reads the copied-up file, so rootfs files written later read
	 * right. */
	_cleanup_pin_ struct fs_pin pin = {0};
	int fd = (int)fi->fh;
	if (!fd) {
		fd = fs_pin_get(fs, in, &pin);
		if (fd == 0)
			fd = fs_inode_rfd(fs, in);
	}
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	/* copied through a buffer kept per thread: with READs of up to 1 MiB
	 * (FS_READ_AHEAD_KB) this is faster here than libfuse's splice, whose
	 * pipe cannot hold 1 MiB and a header, and whose fallback allocates a
	 * buffer per READ */
	char *mem = fs_uring_buffer(size);
	if (!mem)
		mem = read_buffer(size);
	ssize_t n = mem ? pread(fd, mem, size, off) : -1;
	if (n < 0)
		fuse_reply_err(req, mem ? errno : ENOMEM);
	else
		fuse_reply_buf(req, mem, (size_t)n);
}

static void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);

	if (!fi->fh) {
		/* opened without us */
	} else if (in->kind == FS_VIRT) {
		struct fs_genfile *g = (struct fs_genfile *)(uintptr_t)fi->fh;
		free(g->buf);
		free(g);
	} else {
		close((int)fi->fh);
	}
	fuse_reply_err(req, 0);
}

/* ---- directories ------------------------------------------------------------------ */

struct fs_dir {
	enum fs_kind kind;
	/* FS_PASS */
	DIR *dp;
	struct dirent *entry;
	off_t offset;
	/* FS_VIRT */
	struct fs_dirent *ents;
	size_t n;
};

static void dir_free(struct fs_dir *d)
{
	if (d->dp)
		closedir(d->dp);
	fs_dirents_free(d->ents, d->n);
	free(d);
}

static int dir_open(struct fs *fs, struct fs_inode *in, struct fs_dir **out)
{
	struct fs_dir *d = calloc(1, sizeof(*d));
	int rc = 0, fd;

	if (!d)
		return -ENOMEM;
	d->kind = in->kind;
	if (in->kind == FS_VIRT) {
		rc = fs_tree_list(fs, in->path, &d->ents, &d->n);
	} else {
		struct fs_pin pin;
		rc = fs_pin_get(fs, in, &pin);
		fd = rc < 0 ? -1 : openat(pin.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		fs_pin_put(&pin);
		d->dp = fd >= 0 ? fdopendir(fd) : NULL;
		if (!d->dp && rc == 0) {
			rc = -errno;
			if (fd >= 0)
				close(fd);
		}
	}
	if (rc < 0) {
		free(d);
		return rc;
	}
	*out = d;
	return 0;
}

static void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);
	struct fs_dir *d;
	int rc;

	if (fs->no_opendir) {
		/* readdir comes with handle 0; the kernel caches listings
		 * (virtual directories change their mtime when they change) */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	rc = dir_open(fs, in, &d);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	if (in->kind == FS_PASS) {
		/* directories change only through this mount, and the kernel
		 * drops its cached listing when they do */
		fi->cache_readdir = 1;
		fi->keep_cache = 1;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	if (fuse_reply_open(req, fi) == -ENOENT)
		dir_free(d);
}

/* Add one entry; false when the buffer is full. */
static bool add_entry(fuse_req_t req, struct fs *fs, struct fs_inode *dir, char *buf, size_t size,
		      size_t *pos, const char *name, const struct stat *st, off_t next, bool plus,
		      struct fs_ra *ra)
{
	size_t left = size - *pos, used;

	if (!plus) {
		used = fuse_add_direntry(req, buf + *pos, left, name, st, next);
	} else {
		struct fuse_entry_param e = {0};
		bool dot = !strcmp(name, ".") || !strcmp(name, "..");
		e.attr = *st;
		if (!dot && dir->kind == FS_PASS) {
			if (fs_do_lookup_pass(fs, dir, name, &e) < 0) {
				memset(&e, 0, sizeof(e));
				e.attr = *st;
			}
		}
		used = fuse_add_direntry_plus(req, buf + *pos, left, name, &e, next);
		if (used > left && e.ino)
			fs_inode_forget(fs, fs_inode_get(fs, e.ino), 1);
		else if (ra && e.ino)
			fs_ra_add(fs, ra, &e.attr, fs_inode_get(fs, e.ino));
	}
	if (used > left)
		return false;
	*pos += used;
	return true;
}

static void readdir_fill(fuse_req_t req, struct fs *fs, struct fs_inode *in, struct fs_dir *d,
			 size_t size, off_t off, bool plus)
{
	_cleanup_free_ char *buf = calloc(1, size);
	size_t pos = 0;
	struct stat st;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (d->kind == FS_VIRT) {
		/* offsets: 1 ".", 2 "..", 3.. the entries */
		for (off_t i = off; i < (off_t)d->n + 2; i++) {
			memset(&st, 0, sizeof(st));
			const char *name = i == 0 ? "." : i == 1 ? ".." : d->ents[i - 2].name;
			st.st_mode = i < 2 ? S_IFDIR : d->ents[i - 2].type;
			st.st_ino = fs_path_ino(name);
			if (!add_entry(req, fs, in, buf, size, &pos, name, &st, i + 1, plus, NULL))
				break;
		}
		fuse_reply_buf(req, buf, pos);
		return;
	}
	struct fs_ra *ra = plus ? fs_ra_listing(fs, in, off) : NULL;
	if (off != d->offset) {
		seekdir(d->dp, off);
		d->entry = NULL;
		d->offset = off;
	}
	for (;;) {
		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				if (errno && pos == 0) {
					fuse_reply_err(req, errno);
					fs_ra_put(fs, ra);
					return;
				}
				break;
			}
		}
		memset(&st, 0, sizeof(st));
		st.st_ino = d->entry->d_ino;
		st.st_mode = (mode_t)d->entry->d_type << 12;
		if (!add_entry(req, fs, in, buf, size, &pos, d->entry->d_name, &st, d->entry->d_off,
			       plus, ra))
			break;
		d->offset = d->entry->d_off;
		d->entry = NULL;
	}
	if (ra) {
		fs_ra_listed(fs, ra);
		fs_ra_put(fs, ra);
	}
	fuse_reply_buf(req, buf, pos);
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, bool plus)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;
	int rc;

	if (d) {
		readdir_fill(req, fs, in, d, size, off, plus);
		return;
	}
	/* no opendir: a handle for this call only */
	rc = dir_open(fs, in, &d);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	if (d->dp && off) {
		seekdir(d->dp, off);
		d->offset = off;
	}
	readdir_fill(req, fs, in, d, size, off, plus);
	dir_free(d);
}

static void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

static void fs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			      struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

static void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;
	if (d)
		dir_free(d);
	fuse_reply_err(req, 0);
}

/* ---- xattrs, statfs ---------------------------------------------------------------- */

/* Read an xattr value (name) or the name list (name NULL) of a passthrough
 * inode into a buffer of size, and send the one reply: the size when size is 0,
 * else the bytes. */
static void reply_xattr(fuse_req_t req, struct fs_inode *in, const char *name, size_t size)
{
	_cleanup_pin_ struct fs_pin pin = {0};
	_cleanup_free_ char *value = NULL;
	char path[64];
	ssize_t n;
	int rc = fs_pin_get(fuse_req_userdata(req), in, &pin);

	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fs_proc_path(in, path, sizeof(path));
	if (size) {
		value = malloc(size);
		if (!value) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	n = name ? getxattr(path, name, value, size) : listxattr(path, value, size);
	if (n < 0)
		fuse_reply_err(req, errno);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, value, (size_t)n);
}

static void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);

	if (in->kind != FS_PASS) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	reply_xattr(req, in, name, size);
}

static void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);

	if (in->kind != FS_PASS) {
		if (size == 0)
			fuse_reply_xattr(req, 0);
		else
			fuse_reply_buf(req, NULL, 0);
		return;
	}
	reply_xattr(req, in, NULL, size);
}

static void fs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fuse_req_userdata(req);
	struct fs_inode *in = fs_inode_get(fs, ino);
	_cleanup_pin_ struct fs_pin pin = {0};
	struct statvfs sv;
	int rc;

	if (in->kind == FS_PASS) {
		rc = fs_pin_get(fs, in, &pin);
		if (rc < 0) {
			fuse_reply_err(req, -rc);
			return;
		}
		rc = fstatvfs(pin.fd, &sv);
	} else
		rc = statvfs(fs->root, &sv);
	if (rc < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

static void fs_op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;
	unsigned want[] = {FUSE_CAP_SPLICE_WRITE,   FUSE_CAP_SPLICE_MOVE,     FUSE_CAP_SPLICE_READ,
			   FUSE_CAP_CACHE_SYMLINKS, FUSE_CAP_PARALLEL_DIROPS, FUSE_CAP_ASYNC_READ};

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		if (conn->capable & want[i])
			conn->want |= want[i];
	}
	/* POSIX ACLs: the kernel checks them itself (from the xattrs it asks us
	 * for, cached), as it checks mode bits (default_permissions). It then
	 * sends creation modes unmasked with the caller's umask (DONT_MASK),
	 * which the filesystem underneath applies only where the parent has no
	 * default ACL: creations run with the caller's umask (caller.c). */
	if ((conn->capable & FUSE_CAP_POSIX_ACL) && (conn->capable & FUSE_CAP_DONT_MASK))
		conn->want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
	else
		imgfs_warn("fs: the kernel does not offer POSIX ACLs to FUSE: ACLs in the "
			   "images and set in rootfs/ are not enforced");
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	/* READDIRPLUS for every chunk of a listing, not only the first: in auto
	 * mode the kernel asks for the rest of a big directory with READDIR and
	 * then sends a LOOKUP per entry when they are stat'ed (971 LOOKUPs in a
	 * cold walk of the bench image) */
	conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	/* O_TRUNC as a SETATTR: without OPEN the kernel would take an atomic
	 * truncate as done (files kept their bytes; blobs opened O_TRUNC
	 * "succeeded"); this way rootfs files are truncated and read-only ones
	 * answer EROFS at open(2) */
	conn->want &= ~(unsigned)FUSE_CAP_ATOMIC_O_TRUNC;
	/* bigger write requests: fewer round trips (libfuse caps it to its buffer) */
	conn->max_write = 1u << 20;
	fs->parallel_dirops = conn->want & FUSE_CAP_PARALLEL_DIROPS;
	fs->no_open = conn->capable & FUSE_CAP_NO_OPEN_SUPPORT;
	fs->no_opendir = conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT;
	imgfs_debug("fs: kernel FUSE protocol %u.%u, capable 0x%x", conn->proto_major,
		    conn->proto_minor, conn->capable);
}

const struct fuse_lowlevel_ops fs_ops = {
    .init = fs_op_init,
    .lookup = fs_op_lookup,
    .forget = fs_op_forget,
    .forget_multi = fs_op_forget_multi,
    .getattr = fs_op_getattr,
    .readlink = fs_op_readlink,
    .open = fs_op_open,
    .read = fs_op_read,
    .release = fs_op_release,
    .opendir = fs_op_opendir,
    .readdir = fs_op_readdir,
    .readdirplus = fs_op_readdirplus,
    .releasedir = fs_op_releasedir,
    .getxattr = fs_op_getxattr,
    .listxattr = fs_op_listxattr,
    .statfs = fs_op_statfs,
    .setattr = fs_op_setattr,
    .mknod = fs_op_mknod,
    .mkdir = fs_op_mkdir,
    .symlink = fs_op_symlink,
    .link = fs_op_link,
    .unlink = fs_op_unlink,
    .rmdir = fs_op_rmdir,
    .rename = fs_op_rename,
    .create = fs_op_create,
    .write_buf = fs_op_write_buf,
    .flush = fs_op_flush,
    .fsync = fs_op_fsync,
    .fsyncdir = fs_op_fsyncdir,
    .setxattr = fs_op_setxattr,
    .removexattr = fs_op_removexattr,
    .fallocate = fs_op_fallocate,
};
