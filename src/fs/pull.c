// SPDX-License-Identifier: Apache-2.0
/*
 * Pulls started by lookups under pull/: one worker thread per reference and
 * credential class (policy.c), shared by every lookup of that reference and
 * class while it runs, so another user's lookup never joins a pull made with
 * credentials it may not use; progress and the last failures for
 * .imgfs/status, each with the uids it belongs to.
 *
 * A lookup that needs a pull holds no thread while it waits: its request is
 * put on the pull's list of waiters and answered by the pull's worker when
 * the pull ends, or with EINTR by libfuse's INTERRUPT handler (the caller
 * got a signal). So any number of waiting lookups leave every request
 * thread (and every io_uring entry, uring.c) free for the other requests.
 */
#include "fs_i.h"

#include <string.h>
#include <time.h>

struct fs_pull_layer {
	char digest[IMGFS_DIGEST_MAX];
	uint64_t size, downloaded, extracted;
	enum imgfs_layer_state state;
	char source[128]; /* the host that served the blob, or "" */
};

/*
 * A LOOKUP waiting for a pull. Exactly one of these answers it: the pull's
 * worker (the lookup's result) or on_interrupt (EINTR); whichever takes it
 * off the pull's list under pull_lock. The other leaves it alone.
 */
struct fs_pull_waiter {
	fuse_req_t req;
	uid_t uid;		     /* who looked up */
	char *path;		     /* the virtual path looked up */
	struct fs_pull *p;	     /* pull_lock: the pull it waits for, NULL until listed */
	bool interrupted;	     /* pull_lock: interrupted before it was listed */
	struct fs_pull_waiter *next; /* pull_lock: p->waiters */
};

struct fs_pull {
	struct fs *fs;
	char *ref; /* as looked up */
	enum fs_pull_class cls;
	char *why;	     /* FS_PULL_LOCAL: why uid may not pull, for its failure */
	uid_t starter;	     /* its pull_max_per_user counts this pull */
	struct fs_uids uids; /* pull_lock: who started or joined it */
	int refs;	     /* pull_lock: the worker */
	bool done;	     /* pull_lock */
	int code;	     /* pull_lock: 0 or errno */
	time_t started;
	size_t n_layers;		/* pull_lock */
	struct fs_pull_layer *layers;	/* pull_lock */
	struct fs_pull_waiter *waiters; /* pull_lock: lookups to answer when done */
	struct fs_pull *next;		/* pull_lock */
};

static void pull_unref_locked(struct fs *fs, struct fs_pull *p)
{
	if (--p->refs > 0)
		return;
	for (struct fs_pull **pp = &fs->pulls; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	free(p->layers);
	free(p->ref);
	free(p->why);
	fs_uids_destroy(&p->uids);
	free(p);
}

static void on_progress(void *ctx, const struct imgfs_pull_progress *pr)
{
	struct fs_pull *p = ctx;
	struct fs *fs = p->fs;

	pthread_mutex_lock(&fs->pull_lock);
	if (p->n_layers != pr->n_layers) {
		struct fs_pull_layer *l = calloc(pr->n_layers ? pr->n_layers : 1, sizeof(*l));
		if (!l)
			goto out;
		free(p->layers);
		p->layers = l;
		p->n_layers = pr->n_layers;
	}
	for (size_t i = 0; i < pr->n_layers; i++) {
		struct fs_pull_layer *l = &p->layers[i];
		snprintf(l->digest, sizeof(l->digest), "%s",
			 pr->layers[i].digest ? pr->layers[i].digest : "");
		l->size = pr->layers[i].size;
		l->downloaded = pr->layers[i].downloaded;
		l->extracted = pr->layers[i].extracted;
		l->state = pr->layers[i].state;
		snprintf(l->source, sizeof(l->source), "%s",
			 pr->layers[i].source ? pr->layers[i].source : "");
	}
out:
	pthread_mutex_unlock(&fs->pull_lock);
}

/* The slot a failure of starter's takes: a free one, else its own oldest
 * once it has FS_MAX_FAILURES_PER_USER (so one user's failing lookups cannot
 * push other users' failures out), else the oldest. pull_lock held. */
static struct fs_failure *failure_slot(struct fs *fs, uid_t starter)
{
	struct fs_failure *oldest = NULL, *own = NULL;
	size_t n_own = 0;

	for (size_t i = 0; i < FS_MAX_FAILURES; i++) {
		struct fs_failure *f = &fs->failures[i];
		if (!f->ref)
			return f;
		if (!oldest || f->seq < oldest->seq)
			oldest = f;
		if (f->uids.n && f->uids.v[0] == starter) {
			n_own++;
			if (!own || f->seq < own->seq)
				own = f;
		}
	}
	if (!fs_uid_privileged(fs, starter) && n_own >= FS_MAX_FAILURES_PER_USER)
		return own;
	return oldest;
}

/* pull_lock held. uids: the first is who started it; copied. */
static void record_failure(struct fs *fs, const char *ref, const struct fs_uids *uids, int code,
			   const char *msg)
{
	struct fs_failure *f = failure_slot(fs, uids->n ? uids->v[0] : 0);

	free(f->ref);
	free(f->msg);
	fs_uids_destroy(&f->uids);
	for (size_t i = 0; i < uids->n; i++)
		fs_uids_add(&f->uids, uids->v[i]);
	f->when = time(NULL);
	f->seq = ++fs->n_failures;
	f->ref = imgfs_xstrdup(ref);
	f->code = code ? code : EIO;
	f->msg = imgfs_xstrdup(msg && msg[0] ? msg : strerror(f->code));
}

/* A refusal or early failure of uid's lookup. pull_lock not held. */
static void record_refusal(struct fs *fs, uid_t uid, const char *ref, int code, const char *msg)
{
	struct fs_uids u = {.v = &uid, .n = 1};

	pthread_mutex_lock(&fs->pull_lock);
	record_failure(fs, ref, &u, code, msg);
	pthread_mutex_unlock(&fs->pull_lock);
}

static void waiter_free(struct fs_pull_waiter *w)
{
	free(w->path);
	free(w);
}

/* libfuse's INTERRUPT handler, with the request's lock held (and the
 * request kept alive): the caller got a signal. */
static void on_interrupt(fuse_req_t req, void *data)
{
	struct fs_pull_waiter *w = data;
	struct fs *fs = fuse_req_userdata(req);
	struct fs_pull *p;

	pthread_mutex_lock(&fs->pull_lock);
	p = w->p;
	if (!p) {
		/* not listed yet (fs_pull_defer sees this and answers), or
		 * taken by the worker, which answers */
		w->interrupted = true;
		pthread_mutex_unlock(&fs->pull_lock);
		return;
	}
	for (struct fs_pull_waiter **pp = &p->waiters; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	w->p = NULL;
	if (!fs_uid_privileged(fs, w->uid))
		fs->pull_waiters--;
	pthread_mutex_unlock(&fs->pull_lock);
	/* the pull goes on for the other waiters and the store */
	fuse_reply_err(req, EINTR);
	waiter_free(w);
}

static void *pull_worker(void *arg)
{
	struct fs_pull *p = arg;
	struct fs *fs = p->fs;
	struct imgfs_pull_opts po = {.progress = on_progress, .progress_ctx = p};
	struct imgfs_error err = {0};
	struct fs_pull_waiter *waiters;
	json_t *rec = NULL;
	int rc, code;

	fs_pull_class_opts(fs, p->cls, &po);
	imgfs_info("fs: pulling %s for uid %u%s", p->ref, (unsigned)p->starter,
		   p->cls == FS_PULL_ANON    ? " (anonymous)"
		   : p->cls == FS_PULL_LOCAL ? " (from the store only)"
					     : "");
	rc = imgfs_pull(fs->store, p->ref, &po, &rec, &err);
	json_decref(rec);
	if (rc < 0 && p->cls == FS_PULL_LOCAL && err.code == ENOENT)
		imgfs_error_set(&err, EACCES, "%s", p->why ? p->why : "");
	if (rc < 0)
		imgfs_err("fs: pull %s: %s", p->ref, err.msg);
	else
		imgfs_info("fs: pulled %s", p->ref);
	fs_catalog_invalidate(fs);
	pthread_mutex_lock(&fs->pull_lock);
	p->done = true;
	p->code = rc < 0 ? (err.code ? err.code : EIO) : 0;
	if (rc < 0)
		record_failure(fs, p->ref, &p->uids, err.code, err.msg);
	waiters = p->waiters;
	p->waiters = NULL;
	for (struct fs_pull_waiter *w = waiters; w; w = w->next) {
		w->p = NULL;
		if (!fs_uid_privileged(fs, w->uid))
			fs->pull_waiters--;
	}
	code = p->code;
	pthread_mutex_unlock(&fs->pull_lock);
	/* answer the lookups that waited (and were not interrupted) */
	while (waiters) {
		struct fs_pull_waiter *w = waiters;
		waiters = w->next;
		/* waits for an on_interrupt running on it to return (it
		 * found the waiter taken and did nothing); none comes after */
		fuse_req_interrupt_func(w->req, NULL, NULL);
		fs_lookup_pulled(fs, w->req, w->path, code);
		waiter_free(w);
	}
	pthread_mutex_lock(&fs->pull_lock);
	/* only now: the daemon frees the session once no pull runs */
	fs->pulls_running--;
	pull_unref_locked(fs, p);
	pthread_mutex_unlock(&fs->pull_lock);
	return NULL;
}

/* pull_lock held. */
static struct fs_pull *pull_start(struct fs *fs, const char *ref, enum fs_pull_class cls, uid_t uid,
				  const char *why)
{
	struct fs_pull *p = calloc(1, sizeof(*p));
	pthread_attr_t attr;
	pthread_t t;

	if (!p)
		return NULL;
	p->fs = fs;
	p->ref = imgfs_xstrdup(ref);
	p->cls = cls;
	p->why = cls == FS_PULL_LOCAL ? imgfs_xstrdup(why) : NULL;
	p->starter = uid;
	fs_uids_add(&p->uids, uid);
	if (!p->uids.n) {
		free(p->why);
		free(p->ref);
		free(p);
		return NULL;
	}
	p->refs = 1; /* the worker */
	p->started = time(NULL);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, pull_worker, p) != 0) {
		pthread_attr_destroy(&attr);
		fs_uids_destroy(&p->uids);
		free(p->why);
		free(p->ref);
		free(p);
		return NULL;
	}
	pthread_attr_destroy(&attr);
	p->next = fs->pulls;
	fs->pulls = p;
	fs->pulls_running++;
	return p;
}

/* Pulls uid started that still run. pull_lock held. */
static unsigned running_pulls_of(struct fs *fs, uid_t uid)
{
	unsigned n = 0;

	for (struct fs_pull *p = fs->pulls; p; p = p->next)
		n += !p->done && p->starter == uid;
	return n;
}

/* Join the running pull of ref for cls, or start one. pull_lock held. NULL
 * with *rc set when uid may start no other pull now, or out of memory. */
static struct fs_pull *pull_join(struct fs *fs, const char *ref, enum fs_pull_class cls, uid_t uid,
				 const char *why, int *rc)
{
	struct fs_pull *p;
	char msg[200];

	for (p = fs->pulls; p; p = p->next) {
		if (!p->done && p->cls == cls && !strcmp(p->ref, ref))
			break;
	}
	if (p) {
		fs_uids_add(&p->uids, uid);
		return p;
	}
	if (!fs_uid_privileged(fs, uid) && fs->pull_max_per_user &&
	    running_pulls_of(fs, uid) >= fs->pull_max_per_user) {
		struct fs_uids u = {.v = &uid, .n = 1};
		snprintf(msg, sizeof(msg),
			 "uid %u has %u pulls running through this mount, the most it may "
			 "(-o pull_max_per_user=%u)",
			 (unsigned)uid, fs->pull_max_per_user, fs->pull_max_per_user);
		record_failure(fs, ref, &u, EAGAIN, msg);
		*rc = -EAGAIN;
		return NULL;
	}
	p = pull_start(fs, ref, cls, uid, why);
	if (!p)
		*rc = -ENOMEM;
	return p;
}

/* Lookups by uid waiting for pulls. pull_lock held. */
static size_t waiters_of(struct fs *fs, uid_t uid)
{
	size_t n = 0;

	for (struct fs_pull *p = fs->pulls; p; p = p->next) {
		for (struct fs_pull_waiter *w = p->waiters; w; w = w->next)
			n += w->uid == uid;
	}
	return n;
}

/* May uid's lookup wait for a pull, or are there too many waiting? pull_lock
 * held. Bounds the memory (and io_uring entries) waiting lookups take, and
 * no user can take it all: root's lookups never count. */
static bool may_wait(struct fs *fs, uid_t uid, const char *ref)
{
	if (fs_uid_privileged(fs, uid))
		return true;
	if (fs->pull_waiters < FS_MAX_PULL_WAITERS &&
	    waiters_of(fs, uid) < FS_MAX_PULL_WAITERS_PER_USER)
		return true;
	imgfs_warn("fs: %zu lookups wait for pulls (%zu by uid %u); %s answered EAGAIN",
		   fs->pull_waiters, waiters_of(fs, uid), (unsigned)uid, ref);
	return false;
}

int fs_pull_defer(struct fs *fs, const char *given, const char *path, fuse_req_t req)
{
	struct imgfs_error err = {0};
	struct imgfs_ref parsed = {0};
	_cleanup_free_ char *ref = NULL;
	enum fs_pull_class cls;
	uid_t uid = fs_req_uid(req);
	bool has_digest;
	char why[200];
	struct fs_pull_waiter *w;
	struct fs_pull *p = NULL;
	int rc;

	/* one pull per canonical reference: alpine:3.18 and docker.io/library/alpine:3.18 share */
	if (imgfs_ref_parse(given, &parsed, &err) < 0) {
		record_refusal(fs, uid, given, err.code ? err.code : EINVAL, err.msg);
		return -(err.code ? err.code : EINVAL);
	}
	ref = imgfs_ref_string(&parsed);
	has_digest = parsed.has_digest;
	imgfs_ref_destroy(&parsed);
	rc = fs_pull_policy(fs, uid, &cls, why, sizeof(why));
	if (rc < 0 && !has_digest) {
		record_refusal(fs, uid, ref, -rc, why);
		return rc;
	}
	if (rc < 0) /* the store may hold that digest under another name */
		cls = FS_PULL_LOCAL;
	w = calloc(1, sizeof(*w));
	if (!w || !(w->path = strdup(path))) {
		free(w);
		return -ENOMEM;
	}
	w->req = req;
	w->uid = uid;
	/* before anyone else can answer req: an INTERRUPT that came first
	 * runs on_interrupt right here, which only marks w */
	fuse_req_interrupt_func(req, on_interrupt, w);
	/* from here the reply may be made on another thread */
	fs_uring_defer();
	pthread_mutex_lock(&fs->pull_lock);
	if (w->interrupted || __atomic_load_n(&fs->exiting, __ATOMIC_ACQUIRE)) {
		rc = -EINTR;
	} else if (!may_wait(fs, uid, ref)) {
		rc = -EAGAIN;
	} else {
		p = pull_join(fs, ref, cls, uid, why, &rc);
	}
	if (p) {
		w->p = p;
		w->next = p->waiters;
		p->waiters = w;
		if (!fs_uid_privileged(fs, uid))
			fs->pull_waiters++;
		pthread_mutex_unlock(&fs->pull_lock);
		return 0;
	}
	pthread_mutex_unlock(&fs->pull_lock);
	fuse_req_interrupt_func(req, NULL, NULL);
	waiter_free(w);
	return rc;
}

void fs_pull_abandon(struct fs *fs)
{
	struct fs_pull_waiter *all = NULL;

	pthread_mutex_lock(&fs->pull_lock);
	for (struct fs_pull *p = fs->pulls; p; p = p->next) {
		while (p->waiters) {
			struct fs_pull_waiter *w = p->waiters;
			p->waiters = w->next;
			w->p = NULL;
			if (!fs_uid_privileged(fs, w->uid))
				fs->pull_waiters--;
			w->next = all;
			all = w;
		}
	}
	pthread_mutex_unlock(&fs->pull_lock);
	while (all) {
		struct fs_pull_waiter *w = all;
		all = w->next;
		fuse_req_interrupt_func(w->req, NULL, NULL);
		fuse_reply_err(w->req, EINTR);
		waiter_free(w);
	}
}

static const char *state_name(enum imgfs_layer_state s)
{
	switch (s) {
	case IMGFS_LAYER_WAITING:
		return "waiting";
	case IMGFS_LAYER_DOWNLOADING:
		return "downloading";
	case IMGFS_LAYER_EXTRACTING:
		return "extracting";
	case IMGFS_LAYER_DONE:
		return "done";
	case IMGFS_LAYER_EXISTS:
		return "exists";
	case IMGFS_LAYER_FAILED:
		return "failed";
	}
	return "?";
}

struct sbuf {
	char *s;
	size_t len, cap;
	bool oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		if (b->oom)
			return;
		va_start(ap, fmt);
		n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->s && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = (b->cap + (size_t)n + 1) * 2;
		char *s = realloc(b->s, cap);
		if (!s) {
			b->oom = true;
			return;
		}
		b->s = s;
		b->cap = cap;
	}
}

/* The failures uid may see, oldest first. pull_lock held. */
static size_t visible_failures(struct fs *fs, uid_t uid, bool all, const struct fs_failure **out)
{
	size_t n = 0;

	for (size_t i = 0; i < FS_MAX_FAILURES; i++) {
		const struct fs_failure *f = &fs->failures[i];
		if (f->ref && (all || fs_uids_has(&f->uids, uid)))
			out[n++] = f;
	}
	/* insertion sort by seq: at most FS_MAX_FAILURES */
	for (size_t i = 1; i < n; i++) {
		const struct fs_failure *f = out[i];
		size_t j = i;
		for (; j > 0 && out[j - 1]->seq > f->seq; j--)
			out[j] = out[j - 1];
		out[j] = f;
	}
	return n;
}

/* " uid 0,65534": every uid for root, only its own for another user. */
static void sb_uids(struct sbuf *b, const struct fs_uids *u, uid_t uid, bool all)
{
	if (!all) {
		sb_printf(b, " uid %u", (unsigned)uid);
		return;
	}
	for (size_t i = 0; i < u->n; i++)
		sb_printf(b, "%s%u", i ? "," : " uid ", (unsigned)u->v[i]);
}

char *fs_status_text(struct fs *fs, uid_t uid, size_t *len)
{
	const struct fs_failure *fl[FS_MAX_FAILURES];
	bool all = fs_uid_privileged(fs, uid);
	struct sbuf b = {0};
	size_t active = 0, nf;
	char when[32];

	pthread_mutex_lock(&fs->pull_lock);
	for (struct fs_pull *p = fs->pulls; p; p = p->next)
		active += !p->done && (all || fs_uids_has(&p->uids, uid));
	sb_printf(&b, "pulls in progress: %zu\n", active);
	for (struct fs_pull *p = fs->pulls; p; p = p->next) {
		if (p->done || !(all || fs_uids_has(&p->uids, uid)))
			continue;
		sb_printf(&b, "pull %s (%lds, %zu layers;", p->ref, (long)(time(NULL) - p->started),
			  p->n_layers);
		sb_uids(&b, &p->uids, uid, all);
		sb_printf(&b, "%s)\n", p->cls == FS_PULL_ANON ? ", anonymous" : "");
		for (size_t i = 0; i < p->n_layers; i++) {
			const struct fs_pull_layer *l = &p->layers[i];
			sb_printf(&b, "  layer %zu %s %s %llu/%llu bytes%s%s\n", i, l->digest,
				  state_name(l->state), (unsigned long long)l->downloaded,
				  (unsigned long long)l->size, l->source[0] ? " from " : "",
				  l->source);
		}
	}
	nf = visible_failures(fs, uid, all, fl);
	sb_printf(&b, "recent failures: %zu\n", nf);
	for (size_t i = 0; i < nf; i++) {
		const struct fs_failure *f = fl[i];
		struct tm tm;
		gmtime_r(&f->when, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		sb_printf(&b, "failed %s %s (%s;", when, f->ref, strerror(f->code));
		sb_uids(&b, &f->uids, uid, all);
		sb_printf(&b, "): %s\n", f->msg);
	}
	pthread_mutex_unlock(&fs->pull_lock);
	if (b.oom) {
		free(b.s);
		return NULL;
	}
	*len = b.len;
	return b.s;
}
