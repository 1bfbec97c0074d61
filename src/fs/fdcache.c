// SPDX-License-Identifier: Apache-2.0
/*
 * The fd budget. A passthrough inode is served through an O_PATH fd of its
 * backing file (and an O_RDONLY fd once it is read), but the kernel may
 * remember any number of inodes, and one fd each ran the daemon out of fds:
 * then every lookup by every user failed with EMFILE. So inodes keep at most
 * fs->fd_max fds; beyond that the clock algorithm (a second chance for the
 * used ones) closes those of inodes not used lately, and a request on such an
 * inode opens it again by the name it was looked up by: openat in its parent
 * (itself opened again the same way if need be, down from the nearest
 * ancestor that has an fd, or the view's root), checking that the name still
 * leads to the same st_dev/st_ino (ESTALE if not). Names in rootfs/ change
 * only through the mount, and renames and unlinks keep them true (inode.c);
 * an inode whose name is gone keeps its fds until it is forgotten.
 *
 * File handles (open_by_handle_at) would need no names, but overlayfs cannot
 * encode them for the detached mounts rootfs/ and snapshots/ are served from
 * (EOPNOTSUPP on Linux 6.18, with or without nfs_export=on), so one way
 * serves every view.
 *
 * A request pins the inode's fds (fd_users) while it uses them; the budget
 * closes only fds of unpinned inodes, marked FD_EVICTING by a compare-and-swap
 * of fd_users from 0, so a pin taken meanwhile sees the mark and waits for
 * fd_lock. A pin of an inode whose fd is open is an atomic add and a load.
 */
#include "fs_i.h"

#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>

#define FD_EVICTING (1u << 31)
#define FD_SCAN_MAX 64 /* ring entries the clock hand passes per check */

/* ---- the ring (fd_lock held) ------------------------------------------------ */

static void ring_insert(struct fs *fs, struct fs_inode *in)
{
	struct fs_inode *h = fs->fd_hand;

	if (!h) {
		in->fd_prev = in->fd_next = in;
		fs->fd_hand = in;
		return;
	}
	/* just behind the hand: the last it comes to */
	in->fd_next = h;
	in->fd_prev = h->fd_prev;
	h->fd_prev->fd_next = in;
	h->fd_prev = in;
}

static void ring_remove(struct fs *fs, struct fs_inode *in)
{
	if (!in->fd_next)
		return;
	if (in->fd_next == in) {
		fs->fd_hand = NULL;
	} else {
		in->fd_prev->fd_next = in->fd_next;
		in->fd_next->fd_prev = in->fd_prev;
		if (fs->fd_hand == in)
			fs->fd_hand = in->fd_next;
	}
	in->fd_prev = in->fd_next = NULL;
}

struct closing {
	int fds[2 * 16];
	size_t n;
};

static void close_all(struct closing *c)
{
	for (size_t i = 0; i < c->n; i++)
		close(c->fds[i]);
}

/* Close the fds of unpinned inodes not used lately until the budget holds
 * (or the hand went FD_SCAN_MAX steps); the fds go to c, closed unlocked. */
static void budget_locked(struct fs *fs, struct closing *c)
{
	for (int steps = 0; fs->fd_open > fs->fd_max && fs->fd_hand && steps < FD_SCAN_MAX &&
			    c->n + 2 <= sizeof(c->fds) / sizeof(c->fds[0]);
	     steps++) {
		struct fs_inode *in = fs->fd_hand;
		unsigned zero = 0;

		fs->fd_hand = in->fd_next;
		if (__atomic_exchange_n(&in->fd_used, false, __ATOMIC_RELAXED))
			continue; /* a second chance */
		if (!__atomic_compare_exchange_n(&in->fd_users, &zero, FD_EVICTING, false,
						 __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			continue; /* in use */
		if (!fs->fd_evicted) {
			fs->fd_evicted = true;
			imgfs_info("fs: the kernel remembers more files than the daemon keeps fds "
				   "for (%lu): the least recently used are closed and opened again "
				   "by name when needed (logged once)",
				   fs->fd_max);
		}
		c->fds[c->n++] = in->fd;
		fs->fd_open--;
		if (in->rfd >= 0) {
			c->fds[c->n++] = in->rfd;
			fs->fd_open--;
		}
		__atomic_store_n(&in->fd, -1, __ATOMIC_RELAXED);
		__atomic_store_n(&in->rfd, -1, __ATOMIC_RELAXED);
		ring_remove(fs, in);
		__atomic_fetch_and(&in->fd_users, ~FD_EVICTING, __ATOMIC_RELEASE);
	}
}

/* Give in (pinned, or not shared yet) fd as its O_PATH fd (rfd: read fd),
 * unless it got one meanwhile; the fd it has now either way. */
static int install(struct fs *fs, struct fs_inode *in, int fd, bool rfd)
{
	struct closing c = {.n = 0};
	int *slot = rfd ? &in->rfd : &in->fd, cur;

	pthread_mutex_lock(&fs->fd_lock);
	cur = *slot;
	if (cur < 0) {
		__atomic_store_n(slot, fd, __ATOMIC_RELEASE);
		fs->fd_open++;
		if (!rfd && !in->fd_keep)
			ring_insert(fs, in);
		__atomic_store_n(&in->fd_used, true, __ATOMIC_RELAXED);
		budget_locked(fs, &c);
		cur = fd;
		fd = -1;
	}
	pthread_mutex_unlock(&fs->fd_lock);
	if (fd >= 0)
		close(fd); /* another got there first */
	close_all(&c);
	return cur;
}

void fs_fd_init(struct fs *fs)
{
	struct rlimit rl;
	rlim_t lim = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;

	pthread_mutex_init(&fs->fd_lock, NULL);
	/* the rest of the limit is for requests' own fds, pulls and the store */
	fs->fd_max = lim / 4 < FS_FD_MAX ? (unsigned long)(lim / 4) : FS_FD_MAX;
	if (fs->fd_max < 16)
		fs->fd_max = 16;
}

void fs_fd_add(struct fs *fs, struct fs_inode *in, int fd)
{
	install(fs, in, fd, false);
}

void fs_fd_keep(struct fs *fs, struct fs_inode *in)
{
	pthread_mutex_lock(&fs->fd_lock);
	ring_remove(fs, in);
	in->fd_keep = true;
	pthread_mutex_unlock(&fs->fd_lock);
}

void fs_fd_drop(struct fs *fs, struct fs_inode *in)
{
	int fd, rfd;

	pthread_mutex_lock(&fs->fd_lock);
	fd = in->fd;
	rfd = in->rfd;
	in->fd = in->rfd = -1;
	fs->fd_open -= (fd >= 0) + (rfd >= 0);
	ring_remove(fs, in);
	pthread_mutex_unlock(&fs->fd_lock);
	if (fd >= 0)
		close(fd);
	if (rfd >= 0)
		close(rfd);
}

/* ---- opening again by name ---------------------------------------------------- */

struct hop {
	struct fs_inode *in;
	char *name;
};

/* Pin in's ancestor a if its fd is open: its fd, else -1 (not pinned). */
static int try_pin(struct fs_inode *a)
{
	unsigned u = __atomic_add_fetch(&a->fd_users, 1, __ATOMIC_ACQ_REL);
	int fd = __atomic_load_n(&a->fd, __ATOMIC_ACQUIRE);

	if (!(u & FD_EVICTING) && fd >= 0)
		return fd;
	__atomic_sub_fetch(&a->fd_users, 1, __ATOMIC_RELEASE);
	return -1;
}

/* The names from in up to the nearest ancestor with an open fd (pinned in
 * *base, its fd in *basefd), or up to the view's root (*base NULL). Each hop
 * but in, and *base, holds a ref. */
static int chain(struct fs *fs, struct fs_inode *in, struct hop **out, size_t *nout,
		 struct fs_inode **base, int *basefd)
{
	struct hop *hops = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	*base = NULL;
	*basefd = in->view->b->fd;
	pthread_mutex_lock(&fs->inode_lock);
	for (struct fs_inode *cur = in; cur; cur = cur->parent) {
		if (cur != in) {
			int fd = try_pin(cur);
			cur->refs++;
			if (fd >= 0) {
				*base = cur;
				*basefd = fd;
				break;
			}
		}
		if (n == cap) {
			struct hop *more = realloc(hops, (cap = cap ? cap * 2 : 8) * sizeof(*more));
			if (!more) {
				if (cur != in)
					cur->refs--;
				rc = -ENOMEM;
				break;
			}
			hops = more;
		}
		hops[n].in = cur;
		hops[n].name = strdup(cur->name);
		if (!hops[n++].name) {
			rc = -ENOMEM;
			break;
		}
	}
	pthread_mutex_unlock(&fs->inode_lock);
	*out = hops;
	*nout = n;
	return rc;
}

/* Open hop (the child of the one dirfd is the fd of) by its name. fd or -errno. */
static int open_hop(int dirfd, const struct hop *h)
{
	struct stat st;
	int fd = openat(dirfd, h->name, O_PATH | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR ? -ESTALE : -errno;
	if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	if (st.st_dev != h->in->dev || st.st_ino != h->in->ino) {
		close(fd);
		return -ESTALE;
	}
	return fd;
}

/* Open pinned in again by name, and the ancestors on the way. fd or -errno. */
static int reopen_once(struct fs *fs, struct fs_inode *in)
{
	struct fs_inode *base, *held;
	struct hop *hops;
	size_t n, i;
	int dirfd, rc;

	rc = chain(fs, in, &hops, &n, &base, &dirfd);
	held = base; /* pinned: whose fd dirfd is */
	for (i = n; rc == 0 && i-- > 0;) {
		struct fs_inode *h = hops[i].in;
		int fd = open_hop(dirfd, &hops[i]);
		if (fd < 0) {
			rc = fd;
			break;
		}
		if (h != in)
			__atomic_add_fetch(&h->fd_users, 1, __ATOMIC_ACQ_REL);
		dirfd = install(fs, h, fd, false);
		if (held)
			__atomic_sub_fetch(&held->fd_users, 1, __ATOMIC_RELEASE);
		held = h != in ? h : NULL;
	}
	if (held)
		__atomic_sub_fetch(&held->fd_users, 1, __ATOMIC_RELEASE);
	for (i = 0; i < n; i++) {
		free(hops[i].name);
		if (hops[i].in != in)
			fs_inode_unref(fs, hops[i].in);
	}
	if (base)
		fs_inode_unref(fs, base);
	free(hops);
	return rc < 0 ? rc : dirfd;
}

static int reopen(struct fs *fs, struct fs_inode *in)
{
	for (int attempt = 0;; attempt++) {
		unsigned long gen = __atomic_load_n(&fs->names_gen, __ATOMIC_ACQUIRE);
		int fd = reopen_once(fs, in);
		if (fd >= 0)
			return fd;
		/* opened meanwhile by another request, before a rename moved it */
		pthread_mutex_lock(&fs->fd_lock);
		int cur = in->fd;
		pthread_mutex_unlock(&fs->fd_lock);
		if (cur >= 0)
			return cur;
		/* a rename meanwhile may have moved the name read */
		if (attempt == 2 || gen == __atomic_load_n(&fs->names_gen, __ATOMIC_ACQUIRE)) {
			if (fd == -ESTALE)
				imgfs_debug("fs: inode %llu: its name no longer leads to it",
					    (unsigned long long)in->ino);
			return fd;
		}
	}
}

int fs_pin_get(struct fs *fs, struct fs_inode *in, struct fs_pin *pin)
{
	unsigned u = __atomic_add_fetch(&in->fd_users, 1, __ATOMIC_ACQ_REL);
	int fd = __atomic_load_n(&in->fd, __ATOMIC_ACQUIRE);

	pin->fs = fs;
	pin->in = in;
	pin->fd = fd;
	if (!(u & FD_EVICTING) && fd >= 0) {
		__atomic_store_n(&in->fd_used, true, __ATOMIC_RELAXED);
		return 0;
	}
	/* closed, or being closed: that ends before fd_lock is ours */
	pthread_mutex_lock(&fs->fd_lock);
	fd = in->fd;
	pthread_mutex_unlock(&fs->fd_lock);
	if (fd < 0)
		fd = reopen(fs, in);
	if (fd < 0) {
		__atomic_sub_fetch(&in->fd_users, 1, __ATOMIC_RELEASE);
		pin->in = NULL;
		pin->fd = -1;
		return fd;
	}
	__atomic_store_n(&in->fd_used, true, __ATOMIC_RELAXED);
	pin->fd = fd;
	return 0;
}

void fs_pin_put(struct fs_pin *pin)
{
	if (pin->in)
		__atomic_sub_fetch(&pin->in->fd_users, 1, __ATOMIC_RELEASE);
	pin->in = NULL;
}

int fs_inode_stat(struct fs *fs, struct fs_inode *in, struct stat *st)
{
	struct fs_pin pin = {0};
	struct fs_inode *p;
	char *name;
	int fd = try_pin(in), rc;

	if (fd >= 0) {
		__atomic_store_n(&in->fd_used, true, __ATOMIC_RELAXED);
		rc = fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
		__atomic_sub_fetch(&in->fd_users, 1, __ATOMIC_RELEASE);
		return rc;
	}
	/* closed by the budget: a stat by name costs less than opening it again
	 * (and closing another inode's fd for it) */
	pthread_mutex_lock(&fs->inode_lock);
	p = in->parent;
	name = strdup(in->name);
	if (p)
		p->refs++;
	pthread_mutex_unlock(&fs->inode_lock);
	rc = !name ? -ENOMEM : p ? fs_pin_get(fs, p, &pin) : 0;
	if (rc == 0) {
		fd = p ? pin.fd : in->view->b->fd;
		rc = fstatat(fd, name, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
		if (rc == 0 && (st->st_dev != in->dev || st->st_ino != in->ino))
			rc = -ESTALE;
		fs_pin_put(&pin);
	}
	free(name);
	if (p)
		fs_inode_unref(fs, p);
	if (rc == 0)
		return 0;
	/* renamed meanwhile, or another error: open it again, which knows */
	rc = fs_pin_get(fs, in, &pin);
	if (rc < 0)
		return rc;
	rc = fstatat(pin.fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	fs_pin_put(&pin);
	return rc;
}

int fs_inode_rfd(struct fs *fs, struct fs_inode *in)
{
	int fd = __atomic_load_n(&in->rfd, __ATOMIC_ACQUIRE);
	char path[64];

	if (fd >= 0)
		return fd;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", in->fd);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return install(fs, in, fd, true);
}
