// SPDX-License-Identifier: Apache-2.0
/*
 * FUSE over io_uring (Linux >= 6.14, with the fuse module's enable_uring
 * set). Through /dev/fuse every request costs the daemon a read(2) and a
 * writev(2), and wakes whichever worker thread waits, on either CPU; a
 * wake-up across CPUs is the dearest part of a round trip on this kind of
 * machine. Over io_uring the kernel queues each request on the ring of the
 * CPU it was made on, a thread pinned to that CPU takes it, and the reply
 * goes back with the wait for the next request in one io_uring_enter(2).
 *
 * libfuse 3.14 predates this transport, so it is grafted on: FUSE_INIT's
 * reply gets the FUSE_OVER_IO_URING flag on its way out (a custom writev);
 * each ring thread registers FS_URING_DEPTH entries (a header buffer and a
 * payload buffer each) per CPU queue; a request that arrives in an entry is
 * laid out as libfuse reads it from /dev/fuse (header, op header, payload;
 * the headers are copied in front of the payload, so nothing big moves) and
 * handed to fuse_session_process_buf(); its reply comes back through the
 * same custom writev, which copies it into the entry (READ replies are
 * pread into the entry's payload directly: fs_uring_buffer) and queues the
 * COMMIT_AND_FETCH. Replies to requests that came through /dev/fuse
 * (FORGET and INTERRUPT always do) and notifications go to /dev/fuse.
 *
 * An entry stays the kernel's request until its reply: a LOOKUP that waits
 * for a pull (pull.c answers it later, from another thread) would take its
 * ring thread's only entry, and a few of them every entry of the mount. So
 * such an entry is set aside (fs_uring_defer) and its thread registers
 * another; when the reply comes the set-aside entry is committed and fetches
 * again, so a thread ends with as many entries as it ever had lookups
 * waiting at once (bounded by FS_MAX_PULL_WAITERS).
 *
 * But the kernel gives a request that found no ready entry (queued on the
 * CPU's queue) only to an entry committing a reply, never to one being
 * registered: a burst of lookups under pull/ would stay queued behind the
 * set-aside entries until some other request came and went on that CPU.
 * So each set-aside is followed by a poke: a thread pinned to the queue's
 * CPU statfs()es the mount, and the STATFS's commit takes the next queued
 * request (which, if it waits for a pull too, brings the next poke). A
 * thread per poke: a STATFS may itself be queued, and the next poke must
 * not wait for it.
 *
 * Used when the kernel offers it; `-o no_uring` keeps to /dev/fuse.
 */
#include "fs_i.h"

#include <linux/fuse.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>

/* The io_uring part of the FUSE protocol (7.42; not in Debian 12's headers) */
#define URING_INIT_FLAG (1ULL << 41) /* FUSE_OVER_IO_URING */
#define URING_CMD_REGISTER 1
#define URING_CMD_COMMIT_AND_FETCH 2
struct uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};
struct uring_req_header {
	char in_out[128]; /* fuse_in_header, then fuse_out_header */
	char op_in[128];  /* the op's own header */
	struct uring_ent_in_out ent;
};
struct uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

#define FS_URING_THREADS 2 /* per CPU queue: one waiting for the disk leaves another */
#define FS_URING_DEPTH 1   /* entries per thread */
#define HEADROOM 4096	   /* in front of the payload: the request's headers */
#define POLL_TAG 1	   /* user_data of the stop eventfd's poll */
/* SQEs queued before an io_uring_enter: commits of replies made on other
 * threads come in bunches (a pull ending answers all its lookups) */
#define FS_URING_SQ 64

struct ring {
	int fd;
	unsigned entries;
	unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_cqe *cqes;
	char *sqes; /* 128-byte SQEs (IORING_SETUP_SQE128) */
	void *sq_map, *sqe_map;
	size_t sq_map_size, sqe_map_size;
};

struct uring_ent {
	struct uring_thread *t;
	struct uring_req_header *hdr;
	char *area; /* HEADROOM + payload */
	char *payload;
	uint64_t commit_id;
	uint64_t unique;
	struct iovec iov[2];
	bool deferred;		      /* u->defer_lock: set aside, waiting for its reply */
	struct uring_ent *next_defer; /* u->defer_lock: u->deferred */
	struct uring_ent *next_done;  /* t->lock: answered on another thread */
	struct uring_ent *next_extra; /* t->extra */
};

struct uring_thread {
	struct fs_uring *u;
	int qid;
	pthread_t tid;
	bool started;
	struct ring ring;
	int evfd; /* wakes the thread: a reply made elsewhere, or stop */
	pthread_mutex_t lock;
	struct uring_ent *done; /* lock: replies made on other threads, to commit */
	struct uring_ent ent[FS_URING_DEPTH];
	struct uring_ent *extra; /* entries registered in place of set-aside ones (this thread) */
	bool poke; /* a poke is due once the new entries are submitted (this thread) */
	int nents; /* registered entries (this thread) */
	int naway; /* u->defer_lock: of them, set aside */
};

/* A request on one CPU's queue after a set-aside. */
struct uring_poke {
	struct fs_uring *u;
	int qid;
};

struct fs_uring {
	struct fs *fs;
	char *mountpoint; /* statfs()ed by the pokes */
	int nqueues;
	pthread_mutex_t poke_lock;
	pthread_cond_t poke_cond;
	int pokes; /* poke_lock: poke threads running */
	int devfd;
	size_t payload_size;
	int nthreads;
	struct uring_thread *threads;
	int serving; /* atomic: a request came through a ring */
	int stop;    /* atomic */
	pthread_mutex_t defer_lock;
	struct uring_ent *deferred; /* defer_lock: set aside, waiting for their replies */
};

static __thread struct uring_ent *cur_ent;     /* the ring request this thread handles */
static __thread struct uring_thread *cur_ring; /* the ring this thread serves, if any */

/* ---- a minimal io_uring ------------------------------------------------- */

static int ring_setup(struct ring *r, unsigned entries)
{
	/* a completion per registered entry may come at once: room for as
	 * many as lookups may wait for pulls (the kernel keeps any more) */
	struct io_uring_params p = {.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE,
				    .cq_entries = 2 * FS_MAX_PULL_WAITERS};
	void *cq;

	r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
	if (r->fd < 0)
		return -errno;
	r->entries = p.sq_entries;
	r->sq_map_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
		close(r->fd);
		return -ENOSYS; /* every kernel with FUSE over io_uring has it */
	}
	if (cq_size > r->sq_map_size)
		r->sq_map_size = cq_size;
	r->sq_map = mmap(NULL, r->sq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
			 r->fd, IORING_OFF_SQ_RING);
	if (r->sq_map == MAP_FAILED) {
		close(r->fd);
		return -errno;
	}
	r->sqe_map_size = p.sq_entries * 128;
	r->sqe_map = mmap(NULL, r->sqe_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
			  r->fd, IORING_OFF_SQES);
	if (r->sqe_map == MAP_FAILED) {
		munmap(r->sq_map, r->sq_map_size);
		close(r->fd);
		return -errno;
	}
	char *sq = r->sq_map;
	cq = r->sq_map;
	r->sq_head = (unsigned *)(sq + p.sq_off.head);
	r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + p.sq_off.array);
	r->cq_head = (unsigned *)((char *)cq + p.cq_off.head);
	r->cq_tail = (unsigned *)((char *)cq + p.cq_off.tail);
	r->cq_mask = (unsigned *)((char *)cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)((char *)cq + p.cq_off.cqes);
	r->sqes = r->sqe_map;
	return 0;
}

static void ring_free(struct ring *r)
{
	if (r->fd < 0)
		return;
	munmap(r->sqe_map, r->sqe_map_size);
	munmap(r->sq_map, r->sq_map_size);
	close(r->fd);
	r->fd = -1;
}

/* The next free SQE, zeroed; only the ring's own thread fills SQEs. */
static struct io_uring_sqe *ring_sqe(struct ring *r)
{
	unsigned tail = *r->sq_tail;
	unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
	struct io_uring_sqe *sqe;

	if (tail - head >= r->entries)
		return NULL;
	sqe = (struct io_uring_sqe *)(r->sqes + (size_t)(tail & *r->sq_mask) * 128);
	memset(sqe, 0, 128);
	r->sq_array[tail & *r->sq_mask] = tail & *r->sq_mask;
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
	return sqe;
}

/* Submit what is queued and, if wait, wait for at least one completion. */
static int ring_enter(struct ring *r, bool wait)
{
	unsigned pending = *r->sq_tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
	long n = syscall(__NR_io_uring_enter, r->fd, pending, wait ? 1 : 0,
			 wait ? IORING_ENTER_GETEVENTS : 0, NULL, 0);
	return n < 0 ? -errno : 0;
}

/* ring_sqe, submitting what is queued first if the queue is full (many
 * replies made on other threads commit at once). NULL if it stays full. */
static struct io_uring_sqe *ring_sqe_flush(struct ring *r)
{
	struct io_uring_sqe *sqe = ring_sqe(r);

	for (int i = 0; !sqe && i < 100; i++) {
		ring_enter(r, false);
		sqe = ring_sqe(r);
	}
	return sqe;
}

/* ---- entries -------------------------------------------------------------- */

static void ent_cmd(struct uring_ent *e, struct io_uring_sqe *sqe, unsigned op)
{
	struct uring_cmd_req *cmd = (struct uring_cmd_req *)sqe->cmd;

	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = e->t->u->devfd;
	sqe->cmd_op = op;
	sqe->user_data = (uint64_t)(uintptr_t)e;
	cmd->qid = (uint16_t)e->t->qid;
	cmd->commit_id = op == URING_CMD_COMMIT_AND_FETCH ? e->commit_id : 0;
	if (op == URING_CMD_REGISTER) {
		e->iov[0] = (struct iovec){e->hdr, sizeof(*e->hdr)};
		e->iov[1] = (struct iovec){e->payload, e->t->u->payload_size};
		sqe->addr = (uint64_t)(uintptr_t)e->iov;
		sqe->len = 2;
	}
}

/* Copy a reply into its entry and queue its commit, sent with the next
 * io_uring_enter of the entry's thread: queued here on that thread, else
 * handed to it through its eventfd. */
static ssize_t ent_reply(struct uring_ent *e, const struct iovec *iov, int count)
{
	struct fuse_out_header *oh = (struct fuse_out_header *)e->hdr->in_out;
	size_t len = 0, total = iov[0].iov_len;
	struct io_uring_sqe *sqe;

	*oh = *(const struct fuse_out_header *)iov[0].iov_base;
	if (cur_ent == e)
		cur_ent = NULL;
	for (int i = 1; i < count; i++) {
		total += iov[i].iov_len;
		if (len + iov[i].iov_len > e->t->u->payload_size) {
			oh->error = -EIO;
			len = 0;
			break;
		}
		if (iov[i].iov_base != e->payload + len)
			memcpy(e->payload + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	if (oh->error)
		len = 0;
	oh->len = (uint32_t)(sizeof(*oh) + len);
	e->hdr->ent.payload_sz = (uint32_t)len;
	if (cur_ring != e->t) {
		/* answered on a thread of its own: the ring's thread commits it */
		uint64_t one = 1;
		pthread_mutex_lock(&e->t->lock);
		e->next_done = e->t->done;
		e->t->done = e;
		pthread_mutex_unlock(&e->t->lock);
		if (write(e->t->evfd, &one, sizeof(one)) < 0)
			imgfs_warn("fs: io_uring wake-up: %s", strerror(errno));
		return (ssize_t)total;
	}
	sqe = ring_sqe_flush(&e->t->ring);
	if (!sqe) {
		errno = EIO;
		return -1;
	}
	ent_cmd(e, sqe, URING_CMD_COMMIT_AND_FETCH);
	return (ssize_t)total;
}

static void ent_process(struct uring_ent *e, char *buf, size_t len)
{
	struct fuse_buf fb = {.mem = buf, .size = len};

	cur_ent = e;
	fuse_session_process_buf(e->t->u->fs->se, &fb);
	if (cur_ent == e) {
		/* no reply (libfuse answers all but FORGETs, which do not come
		 * this way): give the entry back all the same */
		struct fuse_out_header out = {.error = -EIO, .unique = e->unique};
		struct iovec iov = {&out, sizeof(out)};
		ent_reply(e, &iov, 1);
	}
}

void fs_uring_defer(void)
{
	struct uring_ent *e = cur_ent;
	struct fs_uring *u;

	if (!e)
		return;
	u = e->t->u;
	pthread_mutex_lock(&u->defer_lock);
	e->deferred = true;
	e->next_defer = u->deferred;
	u->deferred = e;
	e->t->naway++;
	pthread_mutex_unlock(&u->defer_lock);
	cur_ent = NULL;
}

/* The set-aside entry of request unique, taken off the list; or NULL. */
static struct uring_ent *take_deferred(struct fs_uring *u, uint64_t unique)
{
	struct uring_ent *e = NULL;

	pthread_mutex_lock(&u->defer_lock);
	for (struct uring_ent **pp = &u->deferred; *pp; pp = &(*pp)->next_defer) {
		if ((*pp)->unique == unique) {
			e = *pp;
			*pp = e->next_defer;
			e->deferred = false;
			e->t->naway--;
			break;
		}
	}
	pthread_mutex_unlock(&u->defer_lock);
	return e;
}

static int ent_init(struct uring_ent *e, struct uring_thread *t)
{
	e->t = t;
	e->hdr = calloc(1, sizeof(*e->hdr));
	/* untouched pages cost nothing until a big request uses them */
	e->area = mmap(NULL, HEADROOM + t->u->payload_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!e->hdr || e->area == MAP_FAILED) {
		e->area = NULL;
		return -1;
	}
	e->payload = e->area + HEADROOM;
	return 0;
}

static void ent_destroy(struct uring_ent *e)
{
	free(e->hdr);
	if (e->area)
		munmap(e->area, HEADROOM + e->t->u->payload_size);
}

/* After a request of t's was set aside: keep FS_URING_DEPTH entries ready
 * on t by registering a new one (on t's thread: only it fills SQEs). */
static void ent_replace(struct uring_thread *t)
{
	struct fs_uring *u = t->u;
	struct uring_ent *e;
	struct io_uring_sqe *sqe;
	int ready;

	pthread_mutex_lock(&u->defer_lock);
	ready = t->nents - t->naway;
	pthread_mutex_unlock(&u->defer_lock);
	if (ready >= FS_URING_DEPTH)
		return;
	e = calloc(1, sizeof(*e));
	if (!e || ent_init(e, t) < 0 || !(sqe = ring_sqe_flush(&t->ring))) {
		imgfs_warn("fs: io_uring queue %d: no new entry (%s): requests wait for the "
			   "lookups waiting for pulls",
			   t->qid, strerror(errno ? errno : ENOMEM));
		if (e)
			ent_destroy(e);
		free(e);
		return;
	}
	e->next_extra = t->extra;
	t->extra = e;
	t->nents++;
	ent_cmd(e, sqe, URING_CMD_REGISTER);
	t->poke = true;
}

static void *poke_main(void *arg)
{
	struct uring_poke *pk = arg;
	struct fs_uring *u = pk->u;
	cpu_set_t cpus;
	struct statfs sf;

	CPU_ZERO(&cpus);
	CPU_SET(pk->qid, &cpus);
	/* the request goes to this CPU's queue; answered at once by an entry
	 * that then takes a queued request */
	if (sched_setaffinity(0, sizeof(cpus), &cpus) == 0 && statfs(u->mountpoint, &sf) < 0)
		imgfs_debug("fs: io_uring poke of queue %d: %s", pk->qid, strerror(errno));
	free(pk);
	pthread_mutex_lock(&u->poke_lock);
	if (--u->pokes == 0)
		pthread_cond_broadcast(&u->poke_cond);
	pthread_mutex_unlock(&u->poke_lock);
	return NULL;
}

/* New entries of t's are submitted: make a request on their queue. */
static void poke(struct uring_thread *t)
{
	struct fs_uring *u = t->u;
	struct uring_poke *pk = malloc(sizeof(*pk));
	pthread_attr_t attr;
	pthread_t tid;

	t->poke = false;
	if (!pk)
		return;
	pk->u = u;
	pk->qid = t->qid;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	pthread_mutex_lock(&u->poke_lock);
	if (pthread_create(&tid, &attr, poke_main, pk) == 0)
		u->pokes++;
	else
		free(pk);
	pthread_mutex_unlock(&u->poke_lock);
	pthread_attr_destroy(&attr);
}

/* A request arrived in e: lay it out as /dev/fuse gives it, and handle it. */
static void ent_handle(struct uring_ent *e)
{
	struct fs_uring *u = e->t->u;
	struct fuse_in_header in;
	uint32_t psz = e->hdr->ent.payload_sz;
	size_t oplen;

	if (!__atomic_exchange_n(&u->serving, 1, __ATOMIC_RELAXED))
		imgfs_info("fs: FUSE over io_uring: serving (%d queues, %d threads each)",
			   u->nthreads / FS_URING_THREADS, FS_URING_THREADS);
	memcpy(&in, e->hdr->in_out, sizeof(in));
	e->commit_id = e->hdr->ent.commit_id;
	e->unique = in.unique;
	cur_ent = e;
	if (in.len < sizeof(in) + psz || psz > u->payload_size ||
	    (oplen = in.len - sizeof(in) - psz) > sizeof(e->hdr->op_in)) {
		imgfs_err("fs: io_uring request %llu (opcode %u) has a bad length",
			  (unsigned long long)in.unique, in.opcode);
		struct fuse_out_header out = {.error = -EIO, .unique = in.unique};
		struct iovec iov = {&out, sizeof(out)};
		ent_reply(e, &iov, 1);
		return;
	}
	char *buf = e->payload - sizeof(in) - oplen;
	memcpy(buf, &in, sizeof(in));
	memcpy(buf + sizeof(in), e->hdr->op_in, oplen);
	cur_ent = NULL;
	ent_process(e, buf, in.len);
	pthread_mutex_lock(&u->defer_lock);
	bool away = e->deferred;
	pthread_mutex_unlock(&u->defer_lock);
	if (away)
		ent_replace(e->t);
}

char *fs_uring_buffer(size_t size)
{
	struct uring_ent *e = cur_ent;
	return e && size <= e->t->u->payload_size ? e->payload : NULL;
}

/* ---- threads ---------------------------------------------------------------- */

static void poll_wake(struct uring_thread *t)
{
	struct io_uring_sqe *sqe = ring_sqe_flush(&t->ring);

	if (!sqe) {
		imgfs_err("fs: io_uring queue %d: its submission queue stays full", t->qid);
		return;
	}
	sqe->opcode = IORING_OP_POLL_ADD;
	sqe->fd = t->evfd;
	sqe->poll32_events = POLLIN;
	sqe->user_data = POLL_TAG;
}

/* The eventfd rang: commit what other threads answered; true to stop. */
static bool woken(struct uring_thread *t)
{
	uint64_t n;
	struct uring_ent *done;

	if (read(t->evfd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		imgfs_warn("fs: io_uring wake-up: %s", strerror(errno));
	pthread_mutex_lock(&t->lock);
	done = t->done;
	t->done = NULL;
	pthread_mutex_unlock(&t->lock);
	for (; done; done = done->next_done) {
		struct io_uring_sqe *sqe = ring_sqe_flush(&t->ring);
		if (!sqe) {
			imgfs_err("fs: io_uring queue %d: cannot commit a reply", t->qid);
			break;
		}
		ent_cmd(done, sqe, URING_CMD_COMMIT_AND_FETCH);
	}
	if (__atomic_load_n(&t->u->stop, __ATOMIC_ACQUIRE))
		return true;
	poll_wake(t);
	return false;
}

static void *uring_thread_main(void *arg)
{
	struct uring_thread *t = arg;
	struct fs_uring *u = t->u;
	struct ring *r = &t->ring;
	cpu_set_t cpus;
	int rc = 0;

	cur_ring = t;
	CPU_ZERO(&cpus);
	CPU_SET(t->qid, &cpus);
	sched_setaffinity(0, sizeof(cpus), &cpus); /* best effort: the queue is this CPU's */

	poll_wake(t);
	for (int i = 0; i < FS_URING_DEPTH; i++)
		ent_cmd(&t->ent[i], ring_sqe(r), URING_CMD_REGISTER);
	for (;;) {
		rc = ring_enter(r, true);
		if (rc == -EINTR)
			continue;
		if (rc < 0)
			break;
		unsigned head = *r->cq_head, tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
		bool stop = false;
		for (; head != tail; head++) {
			struct io_uring_cqe *cqe = &r->cqes[head & *r->cq_mask];
			struct uring_ent *e = (struct uring_ent *)(uintptr_t)cqe->user_data;
			if (cqe->user_data == POLL_TAG) {
				stop = woken(t);
			} else if (cqe->res == 0) {
				ent_handle(e);
			} else if (cqe->res == -EAGAIN || cqe->res == -EINTR) {
				struct io_uring_sqe *sqe = ring_sqe_flush(r);
				if (sqe)
					ent_cmd(e, sqe, URING_CMD_REGISTER);
			} else {
				rc = cqe->res; /* -ENOTCONN: unmounted; else refused */
				stop = true;
			}
		}
		__atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
		if (stop)
			break;
		if (t->poke && ring_enter(r, false) == 0)
			poke(t);
	}
	ring_enter(r, false); /* the commits of replies made meanwhile */
	if (rc < 0 && rc != -ENOTCONN && !__atomic_load_n(&u->fs->exiting, __ATOMIC_ACQUIRE))
		imgfs_warn("fs: FUSE over io_uring, queue %d: %s (a thread of it ended)", t->qid,
			   strerror(-rc));
	return NULL;
}

static ssize_t uring_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct fs_uring *u = ((struct fs *)userdata)->uring;
	const struct fuse_out_header *out = iov[0].iov_base;
	struct uring_ent *e = cur_ent;

	if (!u)
		return writev(fd, iov, count);
	if (e && out->unique == e->unique)
		return ent_reply(e, iov, count);
	/* a reply made later, maybe on another thread */
	if ((e = take_deferred(u, out->unique)))
		return ent_reply(e, iov, count);
	if (fs_init_reply(u->fs, iov, count)) {
		/* ask for io_uring, and start serving it */
		struct fuse_init_out *init =
		    count >= 2 && !out->error && iov[1].iov_len >= sizeof(*init) ? iov[1].iov_base
										 : NULL;
		bool ask = init && (init->flags & FUSE_INIT_EXT);
		if (ask)
			init->flags2 |= (uint32_t)(URING_INIT_FLAG >> 32);
		ssize_t n = writev(fd, iov, count);
		if (n >= 0 && ask) {
			for (int i = 0; i < u->nthreads; i++) {
				struct uring_thread *t = &u->threads[i];
				t->started =
				    pthread_create(&t->tid, NULL, uring_thread_main, t) == 0;
			}
		}
		return n;
	}
	return writev(fd, iov, count);
}

#define ENABLE_URING "/sys/module/fuse/parameters/enable_uring"

/* Whether the kernel lets this connection use io_uring. Its switch (off by
 * default) only allows it: a connection uses io_uring when its daemon asks
 * at INIT, as this one does, so turning it on changes nothing for other FUSE
 * filesystems; a kernel without CONFIG_FUSE_IO_URING has no switch. */
static bool kernel_allows_uring(void)
{
	char c = 'N';
	FILE *f = fopen(ENABLE_URING, "re");

	if (!f)
		return false;
	if (fread(&c, 1, 1, f) != 1)
		c = 'N';
	fclose(f);
	if (c == 'Y' || c == '1')
		return true;
	f = fopen(ENABLE_URING, "we");
	if (!f)
		return false;
	bool ok = fputs("Y", f) >= 0;
	ok = fclose(f) == 0 && ok;
	if (ok)
		imgfs_info("fs: turned on the kernel's FUSE over io_uring (" ENABLE_URING
			   "; -o no_uring leaves it off)");
	return ok;
}

/* The kernel has a queue per possible CPU, numbered by CPU, and uses the
 * rings once every queue has an entry. */
static int possible_cpus(void)
{
	char buf[256];
	FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
	int max = -1;

	if (f && fgets(buf, sizeof(buf), f)) {
		for (char *p = buf; *p;) {
			char *end;
			long n = strtol(p, &end, 10);
			if (end == p)
				break;
			if (n > max)
				max = (int)n;
			p = *end ? end + 1 : end; /* past '-', ',' or '\n' */
		}
	}
	if (f)
		fclose(f);
	return max >= 0 ? max + 1 : get_nprocs_conf();
}

void fs_uring_setup(struct fs *fs, const char *mountpoint)
{
	struct fs_uring *u;

	if (!kernel_allows_uring()) {
		imgfs_debug("fs: the kernel has no FUSE over io_uring: using /dev/fuse");
		return;
	}
	u = calloc(1, sizeof(*u));
	if (!u)
		return;
	pthread_mutex_init(&u->defer_lock, NULL);
	pthread_mutex_init(&u->poke_lock, NULL);
	pthread_cond_init(&u->poke_cond, NULL);
	u->fs = fs;
	u->mountpoint = realpath(mountpoint, NULL);
	if (!u->mountpoint)
		goto fail;
	u->devfd = fuse_session_fd(fs->se);
	/* the kernel wants room for its biggest request: max_pages pages (libfuse
	 * asks for FUSE_MAX_MAX_PAGES, 256) or max_write */
	u->payload_size = (size_t)256 * (size_t)sysconf(_SC_PAGESIZE);
	if (u->payload_size < (1u << 20))
		u->payload_size = 1u << 20;
	u->nqueues = possible_cpus();
	if (u->nqueues < 1 || u->nqueues > 4096)
		goto fail;
	u->nthreads = u->nqueues * FS_URING_THREADS;
	u->threads = calloc((size_t)u->nthreads, sizeof(*u->threads));
	if (!u->threads)
		goto fail;
	for (int i = 0; i < u->nthreads; i++) {
		u->threads[i].ring.fd = -1;
		u->threads[i].evfd = -1;
		pthread_mutex_init(&u->threads[i].lock, NULL);
	}
	for (int i = 0; i < u->nthreads; i++) {
		struct uring_thread *t = &u->threads[i];
		t->u = u;
		t->qid = i / FS_URING_THREADS;
		t->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (t->evfd < 0 || ring_setup(&t->ring, FS_URING_SQ) < 0)
			goto fail;
		for (int k = 0; k < FS_URING_DEPTH; k++) {
			if (ent_init(&t->ent[k], t) < 0)
				goto fail;
			t->nents++;
		}
	}
	const struct fuse_custom_io io = {
	    .writev = uring_writev,
	    .read = fs_dev_read,
	    .splice_receive = fs_dev_splice_receive,
	};
	fs->uring = u;
	if (fuse_session_custom_io(fs->se, &io, u->devfd) == 0)
		return;
fail:
	imgfs_warn("fs: FUSE over io_uring not set up (%s); using /dev/fuse", strerror(errno));
	fs->uring = u;
	fs_uring_stop(fs);
}

void fs_uring_stop(struct fs *fs)
{
	struct fs_uring *u = fs->uring;

	if (!u)
		return;
	/* lookups still waiting for pulls are not answered: the connection
	 * is gone */
	__atomic_store_n(&u->stop, 1, __ATOMIC_RELEASE);
	/* a poke's STATFS is answered, or fails now that the mount is gone */
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 2;
	pthread_mutex_lock(&u->poke_lock);
	while (u->pokes > 0 && pthread_cond_timedwait(&u->poke_cond, &u->poke_lock, &until) == 0)
		;
	int pokes = u->pokes;
	pthread_mutex_unlock(&u->poke_lock);
	for (int i = 0; u->threads && i < u->nthreads; i++) {
		struct uring_thread *t = &u->threads[i];
		if (t->started) {
			uint64_t one = 1;
			if (write(t->evfd, &one, sizeof(one)) < 0)
				imgfs_warn("fs: io_uring stop: %s", strerror(errno));
			pthread_join(t->tid, NULL);
		}
	}
	pthread_mutex_lock(&u->defer_lock);
	bool deferred = u->deferred;
	pthread_mutex_unlock(&u->defer_lock);
	if (pokes || deferred) {
		/* a poke, or a pull answering a lookup, may still use them: the
		 * process ends soon (with pulls running, at once) */
		imgfs_debug("fs: io_uring: %d pokes, %s lookups waiting: state kept", pokes,
			    deferred ? "some" : "no");
		return;
	}
	free(u->mountpoint);
	for (int i = 0; u->threads && i < u->nthreads; i++) {
		struct uring_thread *t = &u->threads[i];
		ring_free(&t->ring);
		if (t->evfd >= 0)
			close(t->evfd);
		for (int k = 0; k < FS_URING_DEPTH; k++) {
			if (t->ent[k].t)
				ent_destroy(&t->ent[k]);
		}
		while (t->extra) {
			struct uring_ent *e = t->extra;
			t->extra = e->next_extra;
			ent_destroy(e);
			free(e);
		}
	}
	free(u->threads);
	free(u);
	fs->uring = NULL;
}
