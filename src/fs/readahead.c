// SPDX-License-Identifier: Apache-2.0
/*
 * Read-ahead. A program that goes through a tree (tar, cp -r, diff -r,
 * sha256sum *, find, du) waits per file or directory twice through imgfs: for
 * the disk, and for the FUSE round trips around it; through the kernel overlay
 * it waits for the disk alone. So the daemon has the backing filesystem read
 * ahead what such a program asks for next, in readdir order (the order those
 * programs go in), and the disk works while the round trips go on:
 *
 * - the first READ of a file reads ahead the files listed after it, up to
 *   RA_FILES entries or RA_BYTES ahead (the head of each, RA_FILE_MAX), and
 *   warms the subdirectories among them;
 * - listing a directory, or going down into one, warms the entries and inodes
 *   of the subdirectories listed next (walk-ahead), and while files are being
 *   read (a READ in the last RA_READING_SECS) reads ahead its files too.
 *
 * A walk never reads file data ahead, only metadata. For content that cannot
 * change, the heads read ahead are also stored in the kernel's page cache for
 * the mount (store_file), so those files are read without any request.
 *
 * READDIRPLUS records a listing per passthrough directory: the inodes of its
 * regular files and subdirectories in order. A listed inode points back at
 * its entry (the last listing it was in), and its forget clears the entry, so
 * the threads only ever open inodes that are alive, through their own O_PATH
 * fd: whatever a name has come to mean since (a fifo, a device) is never
 * opened. A job pins its inodes while it works unlocked; a forget meanwhile
 * leaves the free to the job, and it pins their fds (fdcache.c) while it uses
 * them. The fd opened for a file is kept as its read fd (fs_inode.rfd, in the
 * fd budget), so its first READ does not open it again. One thread serves
 * files, one subdirectories, so warming a big directory never holds up the
 * files about to be read. Listings are refcounted: the directory inode, each
 * inode that points at one, each queued job.
 */
#include "fs_i.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>

#define RA_FILES 32		 /* files read ahead of the one being read */
#define RA_BYTES (32 << 20)	 /* bytes read ahead of it */
#define RA_FILE_MAX (4 << 20)	 /* per file: its head; the rest streams */
#define RA_MAX_ENTRIES (1 << 16) /* files remembered per listing */
#define RA_DIR_MAX 4096		 /* entries warmed per directory */
#define RA_READING_SECS 1.0	 /* a READ this recent: a listing is read next */

struct fs_ra_ent {
	struct fs_inode *in; /* NULL once forgotten or listed again elsewhere */
	off_t size;
	bool dir;
};

struct fs_ra {
	int refs;		/* ra_lock */
	struct fs_ra_ent *ents; /* ra_lock */
	size_t n, cap;		/* ra_lock */
	size_t next;		/* ra_lock: entries before it are read ahead or passed */
	size_t dnext;		/* ra_lock: the same for the walk-ahead of subdirectories */
	size_t pos;		/* ra_lock: 1 + the last entry READ: behind it, nothing to do */
};

struct fs_ra_job {
	struct fs_ra *ra;
	size_t from, to;
	bool dirs; /* the subdirectories, else the files */
	struct fs_ra_job *next;
};

/* ra_lock held. */
static void ra_put_locked(struct fs_ra *ra)
{
	if (!ra || --ra->refs > 0)
		return;
	free(ra->ents);
	free(ra);
}

void fs_ra_put(struct fs *fs, struct fs_ra *ra)
{
	if (!ra)
		return;
	pthread_mutex_lock(&fs->ra_lock);
	ra_put_locked(ra);
	pthread_mutex_unlock(&fs->ra_lock);
}

/* Forget where in was listed. ra_lock held. */
static void unlist_locked(struct fs_inode *in)
{
	if (in->ra && in->ra->ents[in->ra_idx].in == in)
		in->ra->ents[in->ra_idx].in = NULL;
}

void fs_ra_add(struct fs *fs, struct fs_ra *ra, const struct stat *st, struct fs_inode *child)
{
	if (!(S_ISREG(st->st_mode) && st->st_size > 0) && !S_ISDIR(st->st_mode))
		return;
	pthread_mutex_lock(&fs->ra_lock);
	if (ra->n == ra->cap) {
		size_t cap = ra->cap ? ra->cap * 2 : 64;
		struct fs_ra_ent *e =
		    ra->n < RA_MAX_ENTRIES ? realloc(ra->ents, cap * sizeof(*e)) : NULL;
		if (!e)
			goto out;
		ra->ents = e;
		ra->cap = cap;
	}
	unlist_locked(child);
	ra->ents[ra->n].in = child;
	ra->ents[ra->n].size = S_ISREG(st->st_mode) ? st->st_size : 0;
	ra->ents[ra->n].dir = S_ISDIR(st->st_mode);
	if (child->ra != ra) {
		ra_put_locked(child->ra);
		child->ra = ra;
		ra->refs++;
	}
	child->ra_idx = ra->n++;
out:
	pthread_mutex_unlock(&fs->ra_lock);
}

bool fs_ra_forget(struct fs *fs, struct fs_inode *in)
{
	bool pinned;

	pthread_mutex_lock(&fs->ra_lock);
	unlist_locked(in);
	ra_put_locked(in->listing);
	ra_put_locked(in->ra);
	in->listing = in->ra = NULL;
	pinned = in->ra_pins > 0;
	in->ra_forgotten = pinned;
	pthread_mutex_unlock(&fs->ra_lock);
	return pinned;
}

static double coarse_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Queue read-ahead of the entries of ra from first on (dirs: only the
 * subdirectories), unless it is far enough ahead already. ra_lock held. */
static void queue_locked(struct fs *fs, struct fs_ra *ra, size_t from, size_t to, bool dirs)
{
	struct fs_ra_job *job = malloc(sizeof(*job));

	if (!job)
		return;
	*job = (struct fs_ra_job){.ra = ra, .from = from, .to = to, .dirs = dirs};
	ra->refs++;
	*fs->ra_tail[dirs] = job;
	fs->ra_tail[dirs] = &job->next;
	pthread_cond_signal(&fs->ra_cond[dirs]);
}

static void ahead_locked(struct fs *fs, struct fs_ra *ra, size_t first, bool dirs)
{
	size_t *cur = dirs ? &ra->dnext : &ra->next;
	size_t ahead = 0, to;
	off_t bytes = 0;

	if (fs->ra_stop)
		return;
	if (*cur < first)
		*cur = first; /* what lies behind is read already */
	for (to = first; to < ra->n && ahead < RA_FILES && bytes < RA_BYTES; to++) {
		if (dirs && !ra->ents[to].dir)
			continue;
		if (to == *cur && ahead >= RA_FILES / 2)
			return; /* still far enough ahead: wake nobody */
		ahead++;
		bytes += ra->ents[to].size < RA_FILE_MAX ? ra->ents[to].size : RA_FILE_MAX;
	}
	if (to <= *cur)
		return;
	/* files first: they are read next; subdirectories after them */
	if (!dirs)
		queue_locked(fs, ra, *cur, to, false);
	queue_locked(fs, ra, *cur, to, true);
	*cur = to;
}

/* Files are being read (a tar, a diff -r going down the tree): read ahead
 * files and subdirectories; else (a find, an ls -R) only subdirectories. */
static bool reading_locked(struct fs *fs)
{
	return coarse_now() - fs->ra_last_read < RA_READING_SECS;
}

void fs_ra_read(struct fs *fs, struct fs_inode *in)
{
	double now = coarse_now();

	pthread_mutex_lock(&fs->ra_lock);
	fs->ra_last_read = now;
	if (in->ra) {
		if (in->ra->pos < in->ra_idx + 1)
			in->ra->pos = in->ra_idx + 1;
		ahead_locked(fs, in->ra, in->ra_idx + 1, false);
	}
	pthread_mutex_unlock(&fs->ra_lock);
}

void fs_ra_listed(struct fs *fs, struct fs_ra *ra)
{
	pthread_mutex_lock(&fs->ra_lock);
	ahead_locked(fs, ra, 0, !reading_locked(fs));
	pthread_mutex_unlock(&fs->ra_lock);
}

struct fs_ra *fs_ra_listing(struct fs *fs, struct fs_inode *dir, off_t off)
{
	struct fs_ra *ra;

	pthread_mutex_lock(&fs->ra_lock);
	ra = dir->listing;
	if (!ra || off == 0) {
		/* a listing from the start: record it afresh */
		ra = calloc(1, sizeof(*ra));
		if (!ra) {
			pthread_mutex_unlock(&fs->ra_lock);
			return NULL;
		}
		ra->refs = 1;
		ra_put_locked(dir->listing);
		dir->listing = ra;
		/* going down into dir: what its parent listed after it is next */
		if (dir->ra)
			ahead_locked(fs, dir->ra, dir->ra_idx + 1, !reading_locked(fs));
	}
	ra->refs++;
	pthread_mutex_unlock(&fs->ra_lock);
	return ra;
}

/* A directory about to be listed: read its entries and inodes into the
 * caches now, so its READDIRPLUS finds them there. */
static void warm_dir(struct fs *fs, struct fs_inode *in)
{
	struct fs_pin pin;
	int fd = fs_pin_get(fs, in, &pin) < 0
		     ? -1
		     : openat(pin.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dp = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	struct stat st;
	int n = 0;

	fs_pin_put(&pin);

	if (!dp) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(dp)) && n++ < RA_DIR_MAX) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			fstatat(dirfd(dp), de->d_name, &st, AT_SYMLINK_NOFOLLOW);
	}
	closedir(dp);
}

struct ra_item {
	struct fs_inode *in;
	off_t size;
	bool dir;
	int fd;		   /* the file's read fd, or -1 */
	struct fs_pin pin; /* while fd is used */
};

/* Read ahead the head of a pinned file: open its read fd, keep it for the
 * READs to come at once (as the first READ would have), and ask for the
 * file's first bytes. Through the inode's own O_PATH fd, so it is the file
 * that was listed, whatever has its name now. The fds stay pinned until the
 * job is done with them (fs_pin_put). */
static void read_ahead_file(struct fs *fs, struct ra_item *it)
{
	it->fd = -1;
	if (fs_pin_get(fs, it->in, &it->pin) < 0)
		return;
	it->fd = fs_inode_rfd(fs, it->in);
	if (it->fd >= 0)
		readahead(it->fd, 0, (size_t)(it->size < RA_FILE_MAX ? it->size : RA_FILE_MAX));
}

/*
 * Content that cannot change (layers/, snapshots/, blobs/, and rootfs/ of a
 * read-only mount): hand the head of the file to the kernel's page cache for
 * it (FUSE_NOTIFY_STORE), so reading it costs no READ at all. Never for a
 * writable rootfs/: a store racing a write through the mount could leave
 * the old bytes in the page cache.
 */
static void store_file(struct fs *fs, const struct ra_item *it, char *buf)
{
	size_t want = (size_t)(it->size < RA_FILE_MAX ? it->size : RA_FILE_MAX);
	ssize_t n = pread(it->fd, buf, want, 0);

	if (n <= 0)
		return;
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT((size_t)n);
	bv.buf[0].mem = buf;
	/* -ENOENT: the kernel has forgotten the inode meanwhile */
	fuse_lowlevel_notify_store(fs->se, fs_inode_id(fs, it->in), 0, &bv, 0);
}

/* One job: pin the entries' inodes (so they outlive a forget), read them
 * ahead unlocked, unpin, and free the ones forgotten meanwhile. ra_lock
 * held; dropped meanwhile. */
static void run_job(struct fs *fs, const struct fs_ra_job *job, char *buf)
{
	struct ra_item items[RA_FILES];
	size_t n = 0;

	for (size_t i = job->from > job->ra->pos ? job->from : job->ra->pos;
	     i < job->to && n < RA_FILES; i++) {
		struct fs_inode *in = job->ra->ents[i].in;
		if (!in || job->dirs != (in->type == S_IFDIR) || in->listing || in->ra_done ||
		    __atomic_load_n(&in->rfd, __ATOMIC_ACQUIRE) >= 0)
			continue; /* gone, not asked for, or read, listed or warmed already */
		in->ra_done = true;
		in->ra_pins++;
		items[n++] = (struct ra_item){
		    .in = in, .size = job->ra->ents[i].size, .dir = in->type == S_IFDIR, .fd = -1};
	}
	pthread_mutex_unlock(&fs->ra_lock);
	for (size_t k = 0; k < n && !__atomic_load_n(&fs->ra_stop, __ATOMIC_RELAXED); k++) {
		if (items[k].dir)
			warm_dir(fs, items[k].in);
		else
			read_ahead_file(fs, &items[k]);
	}
	/* then, the reads under way, the stores */
	for (size_t k = 0; k < n && buf && !__atomic_load_n(&fs->ra_stop, __ATOMIC_RELAXED); k++) {
		if (items[k].fd >= 0 && (items[k].in->view->immutable || fs->read_only))
			store_file(fs, &items[k], buf);
	}
	for (size_t k = 0; k < n; k++)
		fs_pin_put(&items[k].pin);
	pthread_mutex_lock(&fs->ra_lock);
	for (size_t k = 0; k < n; k++) {
		struct fs_inode *in = items[k].in;
		items[k].in = --in->ra_pins == 0 && in->ra_forgotten ? in : NULL;
	}
	pthread_mutex_unlock(&fs->ra_lock);
	for (size_t k = 0; k < n; k++) {
		if (items[k].in)
			fs_inode_free(fs, items[k].in);
	}
	pthread_mutex_lock(&fs->ra_lock);
}

/* One thread per queue, so warming a big directory never holds up the files
 * about to be read: thread q serves queue q (0 files, 1 subdirectories). */
static void ra_serve(struct fs *fs, int q)
{
	char *buf = q == 0 ? malloc(RA_FILE_MAX) : NULL; /* for store_file */

	pthread_mutex_lock(&fs->ra_lock);
	for (;;) {
		struct fs_ra_job *job = fs->ra_jobs[q];
		if (fs->ra_stop)
			break;
		if (!job) {
			pthread_cond_wait(&fs->ra_cond[q], &fs->ra_lock);
			continue;
		}
		fs->ra_jobs[q] = job->next;
		if (!job->next)
			fs->ra_tail[q] = &fs->ra_jobs[q];
		run_job(fs, job, buf);
		ra_put_locked(job->ra);
		free(job);
	}
	pthread_mutex_unlock(&fs->ra_lock);
	free(buf);
}

static void *ra_files_thread(void *arg)
{
	ra_serve(arg, 0);
	return NULL;
}

static void *ra_dirs_thread(void *arg)
{
	ra_serve(arg, 1);
	return NULL;
}

int fs_ra_start(struct fs *fs)
{
	pthread_mutex_init(&fs->ra_lock, NULL);
	for (int q = 0; q < 2; q++) {
		pthread_cond_init(&fs->ra_cond[q], NULL);
		fs->ra_tail[q] = &fs->ra_jobs[q];
	}
	if (pthread_create(&fs->ra_threads[0], NULL, ra_files_thread, fs) != 0)
		return -1;
	fs->ra_nthreads = 1;
	if (pthread_create(&fs->ra_threads[1], NULL, ra_dirs_thread, fs) != 0)
		return -1;
	fs->ra_nthreads = 2;
	return 0;
}

void fs_ra_stop(struct fs *fs)
{
	pthread_mutex_lock(&fs->ra_lock);
	fs->ra_stop = true;
	pthread_cond_broadcast(&fs->ra_cond[0]);
	pthread_cond_broadcast(&fs->ra_cond[1]);
	pthread_mutex_unlock(&fs->ra_lock);
	for (; fs->ra_nthreads > 0; fs->ra_nthreads--)
		pthread_join(fs->ra_threads[fs->ra_nthreads - 1], NULL);
	/* jobs left queued */
	for (int q = 0; q < 2; q++) {
		while (fs->ra_jobs[q]) {
			struct fs_ra_job *job = fs->ra_jobs[q];
			fs->ra_jobs[q] = job->next;
			ra_put_locked(job->ra);
			free(job);
		}
	}
}
