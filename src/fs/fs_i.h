/* SPDX-License-Identifier: Apache-2.0 */
/* Private to the filesystem: the daemon state, inodes, the virtual tree, pulls. */
#ifndef IMGFS_FS_I_H
#define IMGFS_FS_I_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include "fs.h"

#include <pthread.h>
#include <sys/stat.h>
#include <sys/uio.h>

/* Timeouts (seconds) the kernel may cache entries and attributes for. */
#define FS_TIMEOUT_IMMUTABLE 86400.0 /* blobs, layers, snapshots */
/* rootfs/ changes only through this mount (reset is refused while it is in
 * use), and the kernel updates its caches on every change it sends us */
#define FS_TIMEOUT_ROOTFS 86400.0
#define FS_TIMEOUT_VIRTUAL 1.0 /* image names: `imgfs pull`/`rm` from outside */

/* ---- backings and views (inode.c) ---------------------------------------- */

/*
 * A backing: a directory the daemon serves from, opened once and shared: the
 * store's blobs/ dir, one snapshot dir, or a detached overlay mount (never
 * attached anywhere: it lives as long as this fd and the inode fds inside it).
 * Backings live until the daemon exits.
 */
struct fs_backing {
	char *key;  /* "blobs", "layer:<hex>", "snap:<hex>", "rootfs:<name>@<digest>#<upper ino>" */
	int fd;	    /* O_PATH fd of the root */
	int lockfd; /* rootfs: shared flock on the upper dir's lock file, else -1 */
	struct fs_backing *next; /* fs->backing_lock */
};

/*
 * A view: one backing shown at one virtual path. Inodes are keyed by view, so
 * a directory reached by two virtual paths (alpine/3.18/layers/0 and
 * layers/<diffID>) is two FUSE directories and the kernel never sees one
 * directory with two parents.
 */
struct fs_view {
	char *vpath;
	struct fs_backing *b;
	bool immutable;	      /* long timeouts, keep_cache */
	bool writable;	      /* rootfs/ of a read-write mount */
	struct fs_view *next; /* fs->backing_lock */
};

enum fs_kind { FS_VIRT = 1, FS_PASS = 2 };

struct fs_inode {
	enum fs_kind kind;
	uint64_t nlookup;	/* fs->inode_lock */
	unsigned refs;		/* fs->inode_lock: inodes naming this one their parent, and
				 * reopens walking through it; freed when both are 0 */
	struct fs_inode *hnext; /* fs->inode_lock */
	/* FS_PASS */
	struct fs_view *view; /* immutable */
	dev_t dev;	      /* immutable */
	ino_t ino;	      /* immutable */
	mode_t type;	      /* immutable: S_IFMT bits */
	/* The name it is opened again by once the fd budget closed its fds: name in
	 * parent, or (parent NULL) a path below the view's backing root. */
	struct fs_inode *parent; /* fs->inode_lock (a ref: parent->refs) */
	char *name;		 /* fs->inode_lock */
	/* fds (fdcache.c). fd, and rfd once opened, are closed together by the
	 * fd budget, only while fd_users is 0: take them with fs_pin_get. */
	int fd;			  /* atomic: O_PATH|O_NOFOLLOW, or -1 */
	int rfd;		  /* atomic: O_RDONLY for READs, or -1 */
	unsigned fd_users;	  /* atomic: pins (and FD_EVICTING while closing) */
	bool fd_used;		  /* atomic: used since the budget's clock hand passed */
	bool fd_keep;		  /* fs->fd_lock: its name is gone: never closed */
	struct fs_inode *fd_prev; /* fs->fd_lock: the ring of closable fds */
	struct fs_inode *fd_next; /* fs->fd_lock */
	/* read-ahead (readahead.c), fs->ra_lock */
	struct fs_ra *listing; /* a directory: its last listing */
	struct fs_ra *ra;      /* the listing it was last listed in */
	size_t ra_idx;	       /* and its place there */
	unsigned ra_pins;      /* the read-ahead thread is opening it */
	bool ra_forgotten;     /* forgotten while pinned: the thread frees it */
	bool ra_done;	       /* read ahead once already */
	/* FS_VIRT (immutable after creation) */
	char *path; /* "/alpine/3.18.3/layers" */
	uint64_t vino;
	/* a file whose content depends on the reader (.imgfs/status): one inode
	 * per uid, so the kernel's page cache of one never holds another's */
	bool per_user;
	uid_t uid;
};

/* fdcache.c: the fd budget: a quarter of the open-file limit, at most this */
#define FS_FD_MAX 4096
struct fs_pin {
	struct fs *fs;
	struct fs_inode *in; /* NULL: nothing pinned */
	int fd;		     /* in->fd */
};
void fs_fd_init(struct fs *fs);
/* Pin a passthrough inode's fds for a request: its O_PATH fd is opened again
 * (by its name) if the budget closed it, and in->fd (pin->fd) and in->rfd stay
 * open until fs_pin_put. 0 or -errno (ESTALE: the name leads elsewhere now). */
int fs_pin_get(struct fs *fs, struct fs_inode *in, struct fs_pin *pin);
void fs_pin_put(struct fs_pin *pin);
#define _cleanup_pin_ __attribute__((cleanup(fs_pin_put)))
/* fstatat of a passthrough inode (unpinned): by its name in its parent when
 * the budget closed its fd. 0 or -errno. */
int fs_inode_stat(struct fs *fs, struct fs_inode *in, struct stat *st);
/* A pinned inode's O_RDONLY fd for READs, opened at the first and kept. fd or -errno. */
int fs_inode_rfd(struct fs *fs, struct fs_inode *in);
/* Count a fresh inode's fd (in not shared yet) in the budget. */
void fs_fd_add(struct fs *fs, struct fs_inode *in, int fd);
/* A pinned inode lost its name: keep its fds until it is freed. */
void fs_fd_keep(struct fs *fs, struct fs_inode *in);
/* An inode being freed: close its fds. */
void fs_fd_drop(struct fs *fs, struct fs_inode *in);

/* ---- the catalog of images (tree.c) -------------------------------------- */

struct fs_image {
	char *name;   /* store name "docker.io/library/alpine:3.18.3" */
	char **comps; /* tree path components: "alpine", "3.18.3" */
	size_t ncomps;
	json_t *rec;
};

/* An immutable snapshot of the store's image list; refcounted. */
struct fs_catalog {
	int refs; /* fs->cat_lock */
	size_t n;
	struct fs_image *images;
	struct timespec when;
};

/* ---- the daemon ------------------------------------------------------------ */

#define FS_RA_THREADS 2 /* read-ahead threads: files, subdirectories (readahead.c) */

struct fs_pull;

/* The uids a status entry belongs to: who started or joined the pull (a
 * user sees only entries with its uid in them; root sees all). */
struct fs_uids {
	uid_t *v;
	size_t n;
};

struct fs_failure {
	time_t when;
	char *ref;
	int code;
	char *msg;
	struct fs_uids uids; /* the first started the pull */
	size_t seq;	     /* order of recording; 0 with ref NULL: a free slot */
};
#define FS_MAX_FAILURES 20
/* a user's failures replace its own oldest beyond this, not other users' */
#define FS_MAX_FAILURES_PER_USER 5

struct fs {
	struct imgfs_store *store;
	const char *root; /* the store's root */
	const struct imgfs_fetch_config *fetch;
	/* pull policy (-o pull=, pull_creds=, pull_max_size=, pull_max_per_user=) */
	enum imgfs_fs_pull_policy pull_policy;
	bool pull_creds_shared;
	uint64_t pull_max_size;
	unsigned pull_max_per_user;
	uid_t owner; /* the daemon's uid: pulls as root does */
	/* *fetch with anonymous set, for other users' pulls: a shallow copy
	 * (borrows fetch's storage, never destroyed) */
	struct imgfs_fetch_config fetch_anon;
	/* The fd budget (fdcache.c): the O_PATH and read fds inodes keep, at most
	 * fd_max (set at init from the open-file limit); beyond it the least
	 * recently used are closed and opened again by name when needed. */
	pthread_mutex_t fd_lock;
	unsigned long fd_open;	  /* fd_lock: fds kept by inodes */
	unsigned long fd_max;	  /* set at init */
	struct fs_inode *fd_hand; /* fd_lock: the clock hand in the ring */
	bool fd_evicted;	  /* fd_lock: logged that the budget closes fds */
	unsigned long names_gen;  /* atomic: a rename or unlink changed a name */
	bool read_only;
	bool blobs_all; /* -o blobs=all: layer blobs readable by all, not root only */
	bool debug;
	/* the kernel can do without OPEN/OPENDIR (FUSE_CAP_NO_OPEN*_SUPPORT): we
	 * answer them ENOSYS, it stops sending them, and file handles are 0 */
	bool no_open, no_opendir;
	struct fuse_session *se;
	char *meta_path; /* <root>/meta/data.mdb: its mtime tells when to re-list */

	pthread_mutex_t inode_lock;
	struct fs_inode root_inode;
	struct fs_inode **htab; /* inode_lock */
	size_t hsize, hcount;

	pthread_mutex_t backing_lock;
	struct fs_backing *backings;
	struct fs_view *views;
	/* backing_lock: the snapshots backings serve, each held once for the
	 * daemon's life (imgfs_store_snapshot_hold: gc keeps them) */
	struct fs_hold *holds;

	pthread_mutex_t cat_lock;
	struct fs_catalog *cat;	   /* cat_lock */
	struct timespec cat_mtime; /* cat_lock: data.mdb mtime when listed */
	double cat_listed;	   /* cat_lock: imgfs_now() when listed */
	bool cat_dirty;		   /* cat_lock: a pull finished */

	pthread_mutex_t pull_lock;
	struct fs_pull *pulls;			     /* pull_lock */
	struct fs_failure failures[FS_MAX_FAILURES]; /* pull_lock */
	size_t n_failures;			     /* pull_lock, total ever */
	size_t pulls_running;			     /* pull_lock */
	size_t pull_waiters; /* pull_lock: lookups by others than root waiting for pulls */

	/* the kernel's read-ahead for this mount: raised at the first request
	 * after INIT (session.c) */
	char bdi_read_ahead[96]; /* /sys/class/bdi/<dev>/read_ahead_kb, or "" */
	int bdi_read_ahead_set;	 /* atomic */

	pthread_mutex_t ra_lock; /* readahead.c */
	pthread_cond_t ra_cond[2];
	struct fs_ra_job *ra_jobs[2], **ra_tail[2]; /* ra_lock: files, subdirectories */
	bool ra_stop;				    /* ra_lock */
	double ra_last_read;			    /* ra_lock: when the last first READ came */
	int ra_nthreads;
	pthread_t ra_threads[FS_RA_THREADS];

	struct fs_uring *uring; /* uring.c: FUSE over io_uring, or NULL */
	/* atomic: the session loop has ended (libfuse clears its own flag then,
	 * and lookups waiting for a pull outside its workers must still see it) */
	bool exiting;
	/* the kernel may run lookups and readdirs of one directory in
	 * parallel: set at INIT, written into its reply (fs_init_reply) */
	bool parallel_dirops;
	int init_replied; /* atomic: the INIT reply went out */
};

/* session.c: the reply about to be written is INIT's (the first one; the
 * kernel sends nothing else before it): complete its flags. true if it was. */
bool fs_init_reply(struct fs *fs, struct iovec *iov, int count);
/* libfuse's own reads of /dev/fuse, for the custom I/O of both transports */
ssize_t fs_dev_read(int fd, void *buf, size_t len, void *userdata);
ssize_t fs_dev_splice_receive(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			      unsigned int flags, void *userdata);

/* uring.c: FUSE over io_uring when the kernel offers it. Setup before the
 * session loop (else, or if it fails, /dev/fuse is used); stop after the
 * unmount. fs_uring_buffer: where a READ reply being built on this thread is
 * best put (the ring entry's payload), or NULL. */
void fs_uring_setup(struct fs *fs, const char *mountpoint);
void fs_uring_stop(struct fs *fs);
char *fs_uring_buffer(size_t size);
/* The uid a request is made by (0 without a request). */
static inline uid_t fs_req_uid(fuse_req_t req)
{
	return req ? fuse_req_ctx(req)->uid : 0;
}

/* Whose view a request on virtual inode in gets: the inode's owner for a
 * per-user file (who holds its fd chose to share it), else the caller. */
static inline uid_t fs_virt_uid(fuse_req_t req, const struct fs_inode *in)
{
	return in->per_user ? in->uid : fs_req_uid(req);
}

/* uring.c: the request this thread handles will be answered later, maybe
 * on another thread (a LOOKUP waiting for a pull): its ring entry is set
 * aside and replaced. Nothing over /dev/fuse. */
void fs_uring_defer(void);
/* ops.c: the pull a LOOKUP of path waited for ended (err: 0 or an errno):
 * answer req. Called by the pull's worker. */
void fs_lookup_pulled(struct fs *fs, fuse_req_t req, const char *path, int err);

/* inode.c */
int fs_inodes_init(struct fs *fs);
struct fs_inode *fs_inode_get(struct fs *fs, fuse_ino_t ino);
fuse_ino_t fs_inode_id(struct fs *fs, struct fs_inode *in);
/* Find or create the passthrough inode for fd (takes ownership of fd in every
 * case) in view, named name in parent (parent NULL: name is a path below the
 * view's backing root), and count one lookup. 0 or -errno; *st filled. */
int fs_inode_pass(struct fs *fs, struct fs_view *view, struct fs_inode *parent, const char *name,
		  int fd, struct stat *st, struct fs_inode **out);
/* Find or create the virtual inode for path, counting one lookup. */
struct fs_inode *fs_inode_virt(struct fs *fs, const char *path);
/* The same for uid's own inode of a per-user file (fs_node.per_user). */
struct fs_inode *fs_inode_virt_user(struct fs *fs, const char *path, uid_t uid);
void fs_inode_forget(struct fs *fs, struct fs_inode *in, uint64_t n);
/* Free an inode out of the table (its fds closed), then its parent if this
 * was the last thing keeping it. */
void fs_inode_free(struct fs *fs, struct fs_inode *in);
/* Drop a ref (fs_inode.refs) taken under inode_lock. */
void fs_inode_unref(struct fs *fs, struct fs_inode *in);
/* At exit: free every inode, view and backing. */
void fs_inodes_free(struct fs *fs);
/*
 * Names in a writable view change by renames and unlinks through the mount;
 * inodes are opened again by name (fdcache.c), so these keep the names true.
 * fs_inode_at: before name in parent (pinned) goes away or moves, the inode
 * it names if the table has one, with its fd pinned in *pin (open while the
 * name still leads to it), else NULL. After the change succeeded:
 * fs_inode_moved (a rename took it from parent/name to newparent/newname) or
 * fs_inode_unnamed (parent/name was removed or replaced); then fs_inode_put.
 */
struct fs_inode *fs_inode_at(struct fs *fs, struct fs_pin *parent, const char *name,
			     struct fs_pin *pin);
void fs_inode_moved(struct fs *fs, struct fs_inode *in, struct fs_inode *parent, const char *name,
		    struct fs_inode *newparent, const char *newname);
void fs_inode_unnamed(struct fs *fs, struct fs_inode *in, struct fs_inode *parent,
		      const char *name);
void fs_inode_put(struct fs *fs, struct fs_inode *in, struct fs_pin *pin);
uint64_t fs_path_ino(const char *path);
/* The view for vpath over the backing named key, made with make() on first use. */
struct fs_view *fs_view_get(struct fs *fs, const char *vpath, const char *key, bool immutable,
			    bool writable,
			    int (*make)(struct fs *fs, void *ctx, struct fs_backing *b), void *ctx,
			    int *errp);

/* overlay.c: a detached overlay mount (lowers top-most first). O_PATH-like fd or -errno. */
int fs_overlay_detached(const char *const *lowers, size_t n, const char *upper, const char *work,
			bool rdonly, struct imgfs_error *err);

/* tree.c */
struct fs_catalog *fs_catalog_get(struct fs *fs);
void fs_catalog_put(struct fs *fs, struct fs_catalog *c);
void fs_catalog_invalidate(struct fs *fs);
void fs_catalog_free_all(struct fs *fs);

enum fs_node_type {
	FS_NODE_DIR = 1, /* a virtual directory */
	FS_NODE_GEN,	 /* a virtual file with generated content */
	FS_NODE_BLOB,	 /* a blob file (manifest.json, config.json, index.json) */
	FS_NODE_VIEW,	 /* the root of a passthrough view */
	FS_NODE_PULL,	 /* a complete reference under pull/ not in the store yet */
};
enum fs_view_kind { FS_VIEW_BLOBS = 1, FS_VIEW_LAYER, FS_VIEW_SNAPSHOT, FS_VIEW_ROOTFS };

struct fs_node {
	enum fs_node_type type;
	/* GEN: content (caller frees) */
	char *content;
	size_t len;
	/* BLOB: "sha256/<hex>" below the blobs dir */
	char blob[IMGFS_DIGEST_MAX + 8];
	/* VIEW */
	enum fs_view_kind view;
	char *key;	 /* the backing's key */
	char *key_arg;	 /* layer, snapshot: chainID; rootfs: image name */
	char *digest;	 /* rootfs: the manifest digest */
	ino_t upper_ino; /* rootfs: inode of its upper dir's directory when resolved */
	/* PULL */
	char *ref;
	/* GEN: the content depends on who asks (.imgfs/status) */
	bool per_user;
	/* attributes for DIR/GEN */
	time_t mtime;
	long mtime_ns; /* changes whenever a directory's listing may have: the kernel keeps listings
			*/
	nlink_t nlink;
};
void fs_node_destroy(struct fs_node *n);
/* Resolve a virtual path for a request by uid (what .imgfs/status shows
 * depends on it). 0 or -errno (ENOENT). */
int fs_tree_resolve(struct fs *fs, const char *path, uid_t uid, struct fs_node *out);

struct fs_dirent {
	char *name;
	mode_t type; /* S_IFDIR, S_IFREG */
};
/* The entries of a virtual directory (without . and ..). */
int fs_tree_list(struct fs *fs, const char *path, struct fs_dirent **out, size_t *n);
void fs_dirents_free(struct fs_dirent *d, size_t n);

/* Close a backing's fds. */
void fs_backing_release(struct fs_backing *b);
/* At exit, after the backings: drop the snapshot holds. */
void fs_tree_holds_release(struct fs *fs);
/* Open the backing of a view node (in b->fd); used through fs_view_get. */
int fs_tree_make_backing(struct fs *fs, const struct fs_node *node, struct fs_backing *b);

/* policy.c: who may pull, and with whose credentials (-o pull=...) */
enum fs_pull_class {
	FS_PULL_OWNER = 1, /* root's pulls: the mounter's credentials, no size limit */
	FS_PULL_SHARED,	   /* another user's, with the mounter's credentials (pull_creds=shared) */
	FS_PULL_ANON,	   /* another user's, without any credentials */
	FS_PULL_LOCAL,	   /* who may not pull: a digest from the store only, never the network */
};
/* root or the daemon's own uid */
bool fs_uid_privileged(const struct fs *fs, uid_t uid);
/* May uid make the mount pull, and as what? 0 with *cls set, or -EACCES with
 * the reason in why (never any network traffic; a reference with a digest
 * may still be recorded from the store, FS_PULL_LOCAL). */
int fs_pull_policy(const struct fs *fs, uid_t uid, enum fs_pull_class *cls, char *why,
		   size_t whylen);
/* The options a pull of class cls runs with (fetch config, size limit). */
void fs_pull_class_opts(const struct fs *fs, enum fs_pull_class cls, struct imgfs_pull_opts *po);
/* uid lists of status entries (pull_lock) */
bool fs_uids_has(const struct fs_uids *u, uid_t uid);
void fs_uids_add(struct fs_uids *u, uid_t uid); /* best effort: memory */
void fs_uids_destroy(struct fs_uids *u);

/* pull.c */
/* Pull ref (shared with concurrent callers of the same class), if the caller
 * of req may (policy.c), for a LOOKUP of path: 0 when req will be answered
 * when the pull ends (fs_lookup_pulled, EFBIG over pull_max_size), or with
 * EINTR if interrupted (the pull goes on); -errno to answer now: EACCES
 * refused by the policy, EAGAIN over the caller's pull_max_per_user or with
 * FS_MAX_PULL_WAITERS lookups by users other than root waiting already, or
 * FS_MAX_PULL_WAITERS_PER_USER by the caller. */
#define FS_MAX_PULL_WAITERS 1024
#define FS_MAX_PULL_WAITERS_PER_USER 256
int fs_pull_defer(struct fs *fs, const char *ref, const char *path, fuse_req_t req);
/* The session has ended (fs->exiting set): answer every waiting lookup
 * EINTR now; the pulls go on until the process ends. */
void fs_pull_abandon(struct fs *fs);
/* .imgfs/status as uid sees it: root (and the daemon's uid) every entry,
 * another user only the pulls and failures it started or joined. */
char *fs_status_text(struct fs *fs, uid_t uid, size_t *len);

/* readahead.c: directory read-ahead */
struct fs_ra;
int fs_ra_start(struct fs *fs);
void fs_ra_stop(struct fs *fs);
/* The listing READDIRPLUS of dir at off records into (a new one from offset
 * 0); NULL if none can be made. Put it with fs_ra_put. */
struct fs_ra *fs_ra_listing(struct fs *fs, struct fs_inode *dir, off_t off);
/* Record child (attributes st), listed next: regular files and directories. */
void fs_ra_add(struct fs *fs, struct fs_ra *ra, const struct stat *st, struct fs_inode *child);
void fs_ra_put(struct fs *fs, struct fs_ra *ra);
/* A READDIRPLUS chunk was recorded into ra: read ahead if files are being read. */
void fs_ra_listed(struct fs *fs, struct fs_ra *ra);
/* The first READ of in: read ahead the files listed after it. */
void fs_ra_read(struct fs *fs, struct fs_inode *in);
/* in is forgotten: drop its listings. true when the read-ahead thread is
 * using it and will free it (fs_inode_free) when done. */
bool fs_ra_forget(struct fs *fs, struct fs_inode *in);

/* session.c: raise the kernel's read-ahead for the mount, once, after INIT */
void fs_raise_read_ahead(struct fs *fs);

/* ops.c */
extern const struct fuse_lowlevel_ops fs_ops;
/* The attributes shown for passthrough inode in, given its real ones in st:
 * blobs/ hides layer blobs from other users. */
void fs_pass_attr(struct fs *fs, struct fs_inode *in, struct stat *st);

#endif
