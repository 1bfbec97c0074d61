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
	size_t front;		     /* sent away: the request starts this far before the payload */
	struct uring_ent *next_done; /* t->lock: answered on another thread */
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
};

struct fs_uring {
	struct fs *fs;
	int devfd;
	size_t payload_size;
	int nthreads;
	struct uring_thread *threads;
	int init_seen; /* atomic: the INIT reply went out */
	int serving;   /* atomic: a request came through a ring */
	int stop;      /* atomic */
	pthread_mutex_t away_lock;
	pthread_cond_t away_cond;
	int away; /* away_lock: requests handed to threads of their own */
};

static __thread struct uring_ent *cur_ent;     /* the ring request this thread handles */
static __thread struct uring_thread *cur_ring; /* the ring this thread serves, if any */

/* ---- a minimal io_uring ------------------------------------------------- */

static int ring_setup(struct ring *r, unsigned entries)
{
	struct io_uring_params p = {.flags = IORING_SETUP_SQE128};
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
	cur_ent = NULL;
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
	sqe = ring_sqe(&e->t->ring);
	if (!sqe) {
		errno = EIO; /* cannot happen: one SQE per entry, and it is free */
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

static void *away_main(void *arg)
{
	struct uring_ent *e = arg;
	struct fs_uring *u = e->t->u;
	const struct fuse_in_header *in = (const struct fuse_in_header *)(e->payload - e->front);

	ent_process(e, (char *)in, in->len);
	pthread_mutex_lock(&u->away_lock);
	if (--u->away == 0)
		pthread_cond_broadcast(&u->away_cond);
	pthread_mutex_unlock(&u->away_lock);
	return NULL;
}

/* A request that may wait long (a lookup under pull/ waits for its pull)
 * goes to a thread of its own, so its ring thread goes on serving. */
static bool send_away(struct uring_ent *e, size_t front)
{
	struct fs_uring *u = e->t->u;
	pthread_attr_t attr;
	pthread_t tid;
	bool ok;

	e->front = front;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&u->away_lock);
	ok = pthread_create(&tid, &attr, away_main, e) == 0;
	if (ok)
		u->away++;
	pthread_mutex_unlock(&u->away_lock);
	pthread_attr_destroy(&attr);
	return ok;
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
	if (in.opcode == FUSE_LOOKUP && fs_lookup_may_wait(u->fs, in.nodeid) &&
	    send_away(e, sizeof(in) + oplen))
		return;
	ent_process(e, buf, in.len);
}

char *fs_uring_buffer(size_t size)
{
	struct uring_ent *e = cur_ent;
	return e && size <= e->t->u->payload_size ? e->payload : NULL;
}

/* ---- threads ---------------------------------------------------------------- */

static void poll_wake(struct uring_thread *t)
{
	struct io_uring_sqe *sqe = ring_sqe(&t->ring);

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
	for (; done; done = done->next_done)
		ent_cmd(done, ring_sqe(&t->ring), URING_CMD_COMMIT_AND_FETCH);
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
				ent_cmd(e, ring_sqe(r), URING_CMD_REGISTER);
			} else {
				rc = cqe->res; /* -ENOTCONN: unmounted; else refused */
				stop = true;
			}
		}
		__atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
		if (stop)
			break;
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
	if (!__atomic_exchange_n(&u->init_seen, 1, __ATOMIC_ACQ_REL)) {
		/* the first reply is INIT's (the kernel sends nothing else
		 * before): ask for io_uring, and start serving it */
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

static ssize_t uring_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	return read(fd, buf, len);
}

static ssize_t uring_splice_receive(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
				    unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
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

void fs_uring_setup(struct fs *fs)
{
	struct fs_uring *u;

	if (!kernel_allows_uring()) {
		imgfs_debug("fs: the kernel has no FUSE over io_uring: using /dev/fuse");
		return;
	}
	u = calloc(1, sizeof(*u));
	if (!u)
		return;
	pthread_mutex_init(&u->away_lock, NULL);
	pthread_cond_init(&u->away_cond, NULL);
	u->fs = fs;
	u->devfd = fuse_session_fd(fs->se);
	/* the kernel wants room for its biggest request: max_pages pages (libfuse
	 * asks for FUSE_MAX_MAX_PAGES, 256) or max_write */
	u->payload_size = (size_t)256 * (size_t)sysconf(_SC_PAGESIZE);
	if (u->payload_size < (1u << 20))
		u->payload_size = 1u << 20;
	u->nthreads = possible_cpus() * FS_URING_THREADS;
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
		if (t->evfd < 0 || ring_setup(&t->ring, 2 * FS_URING_DEPTH + 2) < 0)
			goto fail;
		for (int k = 0; k < FS_URING_DEPTH; k++) {
			struct uring_ent *e = &t->ent[k];
			e->t = t;
			e->hdr = calloc(1, sizeof(*e->hdr));
			/* untouched pages cost nothing until a big request uses them */
			e->area = mmap(NULL, HEADROOM + u->payload_size, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (!e->hdr || e->area == MAP_FAILED) {
				e->area = NULL;
				goto fail;
			}
			e->payload = e->area + HEADROOM;
		}
	}
	const struct fuse_custom_io io = {
	    .writev = uring_writev,
	    .read = uring_read,
	    .splice_receive = uring_splice_receive,
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
	/* requests sent away end soon once the session has (a pull's waiter
	 * sees it and answers EINTR); their replies need the ring threads */
	pthread_mutex_lock(&u->away_lock);
	while (u->away > 0)
		pthread_cond_wait(&u->away_cond, &u->away_lock);
	pthread_mutex_unlock(&u->away_lock);
	__atomic_store_n(&u->stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; u->threads && i < u->nthreads; i++) {
		struct uring_thread *t = &u->threads[i];
		if (t->started) {
			uint64_t one = 1;
			if (write(t->evfd, &one, sizeof(one)) < 0)
				imgfs_warn("fs: io_uring stop: %s", strerror(errno));
			pthread_join(t->tid, NULL);
		}
	}
	for (int i = 0; u->threads && i < u->nthreads; i++) {
		struct uring_thread *t = &u->threads[i];
		ring_free(&t->ring);
		if (t->evfd >= 0)
			close(t->evfd);
		for (int k = 0; k < FS_URING_DEPTH; k++) {
			free(t->ent[k].hdr);
			if (t->ent[k].area)
				munmap(t->ent[k].area, HEADROOM + u->payload_size);
		}
	}
	free(u->threads);
	free(u);
	fs->uring = NULL;
}
