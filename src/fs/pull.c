// SPDX-License-Identifier: Apache-2.0
/*
 * Pulls started by lookups under pull/: one worker thread per reference,
 * shared by every lookup of that reference while it runs; progress and the
 * last failures for .imgfs/status.
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

struct fs_pull {
	struct fs *fs;
	char *ref; /* as looked up */
	int refs;  /* pull_lock: waiters + the worker */
	bool done; /* pull_lock */
	int code;  /* pull_lock: 0 or errno */
	time_t started;
	size_t n_layers;	      /* pull_lock */
	struct fs_pull_layer *layers; /* pull_lock */
	struct fs_pull *next;	      /* pull_lock */
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

static void record_failure(struct fs *fs, const char *ref, const struct imgfs_error *err)
{
	struct fs_failure *f = &fs->failures[fs->n_failures % FS_MAX_FAILURES];

	free(f->ref);
	free(f->msg);
	f->when = time(NULL);
	f->ref = imgfs_xstrdup(ref);
	f->code = err->code ? err->code : EIO;
	f->msg = imgfs_xstrdup(err->msg[0] ? err->msg : strerror(f->code));
	fs->n_failures++;
}

static void *pull_worker(void *arg)
{
	struct fs_pull *p = arg;
	struct fs *fs = p->fs;
	struct imgfs_pull_opts po = {
	    .fetch = fs->fetch, .progress = on_progress, .progress_ctx = p};
	struct imgfs_error err = {0};
	json_t *rec = NULL;
	int rc;

	imgfs_info("fs: pulling %s", p->ref);
	rc = imgfs_pull(fs->store, p->ref, &po, &rec, &err);
	json_decref(rec);
	if (rc < 0)
		imgfs_err("fs: pull %s: %s", p->ref, err.msg);
	else
		imgfs_info("fs: pulled %s", p->ref);
	fs_catalog_invalidate(fs);
	pthread_mutex_lock(&fs->pull_lock);
	p->done = true;
	p->code = rc < 0 ? (err.code ? err.code : EIO) : 0;
	if (rc < 0)
		record_failure(fs, p->ref, &err);
	fs->pulls_running--;
	pthread_cond_broadcast(&fs->pull_cond);
	pull_unref_locked(fs, p);
	pthread_mutex_unlock(&fs->pull_lock);
	return NULL;
}

/* pull_lock held. */
static struct fs_pull *pull_start(struct fs *fs, const char *ref)
{
	struct fs_pull *p = calloc(1, sizeof(*p));
	pthread_attr_t attr;
	pthread_t t;

	if (!p)
		return NULL;
	p->fs = fs;
	p->ref = imgfs_xstrdup(ref);
	p->refs = 2; /* the caller and the worker */
	p->started = time(NULL);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, pull_worker, p) != 0) {
		pthread_attr_destroy(&attr);
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

int fs_pull_wait(struct fs *fs, const char *given, fuse_req_t req)
{
	struct imgfs_error err = {0};
	struct imgfs_ref parsed = {0};
	_cleanup_free_ char *ref = NULL;
	struct fs_pull *p;
	int rc;

	/* one pull per canonical reference: alpine:3.18 and docker.io/library/alpine:3.18 share */
	if (imgfs_ref_parse(given, &parsed, &err) < 0) {
		pthread_mutex_lock(&fs->pull_lock);
		record_failure(fs, given, &err);
		pthread_mutex_unlock(&fs->pull_lock);
		return -(err.code ? err.code : EINVAL);
	}
	ref = imgfs_ref_string(&parsed);
	imgfs_ref_destroy(&parsed);
	pthread_mutex_lock(&fs->pull_lock);
	for (p = fs->pulls; p; p = p->next) {
		if (!p->done && !strcmp(p->ref, ref))
			break;
	}
	if (p) {
		p->refs++;
	} else {
		p = pull_start(fs, ref);
		if (!p) {
			pthread_mutex_unlock(&fs->pull_lock);
			return -ENOMEM;
		}
	}
	/* the session loop cancels its workers at exit; waiting here must not
	 * be cancelled while holding pull_lock, so poll for the exit instead */
	int oldstate;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &oldstate);
	while (!p->done) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&fs->pull_cond, &fs->pull_lock, &ts);
		if (!p->done &&
		    ((req && fuse_req_interrupted(req)) || fuse_session_exited(fs->se) ||
		     __atomic_load_n(&fs->exiting, __ATOMIC_ACQUIRE)))
			break;
	}
	rc = p->done ? -p->code : -EINTR;
	pull_unref_locked(fs, p);
	pthread_mutex_unlock(&fs->pull_lock);
	pthread_setcancelstate(oldstate, NULL);
	return rc;
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

char *fs_status_text(struct fs *fs, size_t *len)
{
	struct sbuf b = {0};
	size_t active = 0, nf, first;
	char when[32];

	pthread_mutex_lock(&fs->pull_lock);
	for (struct fs_pull *p = fs->pulls; p; p = p->next)
		active += !p->done;
	sb_printf(&b, "pulls in progress: %zu\n", active);
	for (struct fs_pull *p = fs->pulls; p; p = p->next) {
		if (p->done)
			continue;
		sb_printf(&b, "pull %s (%lds, %zu layers)\n", p->ref,
			  (long)(time(NULL) - p->started), p->n_layers);
		for (size_t i = 0; i < p->n_layers; i++) {
			const struct fs_pull_layer *l = &p->layers[i];
			sb_printf(&b, "  layer %zu %s %s %llu/%llu bytes%s%s\n", i, l->digest,
				  state_name(l->state), (unsigned long long)l->downloaded,
				  (unsigned long long)l->size, l->source[0] ? " from " : "",
				  l->source);
		}
	}
	nf = fs->n_failures < FS_MAX_FAILURES ? fs->n_failures : FS_MAX_FAILURES;
	first = fs->n_failures - nf;
	sb_printf(&b, "recent failures: %zu\n", nf);
	for (size_t i = first; i < fs->n_failures; i++) {
		const struct fs_failure *f = &fs->failures[i % FS_MAX_FAILURES];
		struct tm tm;
		gmtime_r(&f->when, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		sb_printf(&b, "failed %s %s (%s): %s\n", when, f->ref, strerror(f->code), f->msg);
	}
	pthread_mutex_unlock(&fs->pull_lock);
	if (b.oom) {
		free(b.s);
		return NULL;
	}
	*len = b.len;
	return b.s;
}
