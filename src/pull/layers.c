/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The layer pipeline. Download threads stream blobs into the store's ingest
 * (hashing as they go); unpack threads follow each ingest file as it grows
 * and extract it into a temporary snapshot directory; the calling thread
 * commits snapshots in layer order once both the blob digest and the diffID
 * are verified, and reports progress.
 */
#include "pull_i.h"

#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct pull_ctx;

struct layer_job {
	struct pull_ctx *p;
	size_t index;
	const struct imgfs_descriptor *desc;
	const struct imgfs_digest *diff_id;
	const struct imgfs_digest *chain_id;
	bool need_blob, need_snapshot;

	/* All below guarded by p->mu. */
	int read_fd;	  /* the bytes being written (ingest data) or the blob */
	uint64_t written; /* bytes readable through read_fd */
	unsigned gen;	  /* bumped when the download restarts from 0 */
	bool restarted;	  /* set by the registry client before the first byte */
	bool dl_done;
	int dl_rc;
	struct imgfs_error dl_err;
	bool unpack_done;
	int unpack_rc;
	struct imgfs_error unpack_err;
	char *tmpdir;
	struct imgfs_unpack_result res;
	struct imgfs_pull_layer_progress prog;
};

struct pull_ctx {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool cancel;	       /* guarded by mu */
	size_t next_dl;	       /* guarded by mu: position in order */
	size_t next_unpack;    /* guarded by mu: position in order */
	struct imgfs_store *s; /* immutable below */
	struct pull_source *src;
	struct layer_job *jobs;
	size_t *order; /* job indexes, largest layer first: the longest unpack
			* is the critical path, so it starts first */
	size_t n;
	uint64_t max_layer_size; /* unpack limits from the config */
	uint32_t max_ratio;
};

static void job_fail_locked(struct layer_job *j, int *rc, struct imgfs_error *dst,
			    const struct imgfs_error *src)
{
	*rc = -1;
	*dst = *src;
	j->prog.state = IMGFS_LAYER_FAILED;
}

/* ---- download ------------------------------------------------------------- */

struct dl_sink {
	struct layer_job *j;
	struct imgfs_ingest *w;
};

static int dl_sink_write(void *ctx, const void *buf, size_t len, struct imgfs_error *err)
{
	struct dl_sink *d = ctx;
	struct layer_job *j = d->j;
	struct pull_ctx *p = j->p;
	bool restart;

	pthread_mutex_lock(&p->mu);
	if (p->cancel) {
		pthread_mutex_unlock(&p->mu);
		return imgfs_error_set(err, ECANCELED, "cancelled");
	}
	restart = j->restarted;
	j->restarted = false;
	pthread_mutex_unlock(&p->mu);

	if (restart) {
		/* The server ignored our Range: tell the unpacker its bytes are
		 * stale (before they change under it), then start over. */
		pthread_mutex_lock(&p->mu);
		j->gen++;
		j->written = 0;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->mu);
		if (imgfs_ingest_reset(d->w, err) < 0)
			return -1;
	}
	if (imgfs_ingest_write(d->w, buf, len, err) < 0)
		return -1;
	pthread_mutex_lock(&p->mu);
	j->written += len;
	j->prog.downloaded = j->written;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

static void download_one(struct layer_job *j)
{
	struct pull_ctx *p = j->p;
	struct imgfs_error err = {0};
	struct imgfs_ingest *w = NULL;
	struct dl_sink sink = {.j = j};
	const char *served_by = NULL;
	int fd = -1, rc;

	rc = imgfs_ingest_open(p->s, &j->desc->digest, j->desc->size, &w, &err);
	if (rc == 0 && !w) {
		/* Committed meanwhile (another pull): read the blob. */
		_cleanup_free_ char *path = imgfs_store_blob_path(p->s, &j->desc->digest);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			rc = imgfs_error_errno(&err, errno, "open %s", path);
		pthread_mutex_lock(&p->mu);
		j->read_fd = fd;
		j->written = j->desc->size;
		j->prog.downloaded = j->desc->size;
		goto done_locked;
	}
	if (rc == 0) {
		fd = open(imgfs_ingest_data_path(w), O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			rc = imgfs_error_errno(&err, errno, "open %s", imgfs_ingest_data_path(w));
	}
	if (rc < 0) {
		if (w)
			imgfs_ingest_abort(w);
		pthread_mutex_lock(&p->mu);
		goto done_locked;
	}
	pthread_mutex_lock(&p->mu);
	j->read_fd = fd;
	j->written = imgfs_ingest_offset(w);
	j->prog.downloaded = j->written;
	j->prog.state = IMGFS_LAYER_DOWNLOADING;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->mu);

	sink.w = w;
	uint64_t resumed_at = imgfs_ingest_offset(w);
	rc = p->src->get_blob(p->src->ctx, &j->desc->digest, resumed_at, dl_sink_write, &sink,
			      &j->restarted, &served_by, &err);
	if (rc == 0) {
		rc = imgfs_ingest_commit(w, j->desc->media_type, &err);
	} else {
		struct imgfs_error e2 = {0};
		bool bad;
		pthread_mutex_lock(&p->mu);
		bad = j->unpack_done && j->unpack_rc < 0;
		pthread_mutex_unlock(&p->mu);
		/* the unpack refused bytes a previous run left: they may be what
		 * is wrong (altered on disk), so the next pull starts from zero */
		if (bad && resumed_at > 0 && imgfs_ingest_reset(w, &e2) == 0)
			imgfs_warn("layer %s: unpack failed on resumed data: discarded",
				   j->desc->digest.str);
		imgfs_ingest_abort(w);
	}
	pthread_mutex_lock(&p->mu);
	j->prog.source = served_by;
done_locked:
	j->dl_done = true;
	if (rc < 0)
		job_fail_locked(j, &j->dl_rc, &j->dl_err, &err);
	else if (j->prog.state == IMGFS_LAYER_DOWNLOADING || j->prog.state == IMGFS_LAYER_WAITING)
		j->prog.state = j->need_snapshot ? IMGFS_LAYER_EXTRACTING : IMGFS_LAYER_DONE;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->mu);
}

/* The next job, in size order, that needs a download (blob) or an unpack;
 * NULL when none is left or the pull is cancelled. cursor is guarded by mu. */
static struct layer_job *next_job(struct pull_ctx *p, size_t *cursor, bool blob)
{
	struct layer_job *j = NULL;
	pthread_mutex_lock(&p->mu);
	while (*cursor < p->n && !(blob ? p->jobs[p->order[*cursor]].need_blob
					: p->jobs[p->order[*cursor]].need_snapshot))
		(*cursor)++;
	if (*cursor < p->n && !p->cancel)
		j = &p->jobs[p->order[(*cursor)++]];
	pthread_mutex_unlock(&p->mu);
	return j;
}

static void *download_thread(void *arg)
{
	struct pull_ctx *p = arg;
	struct layer_job *j;
	while ((j = next_job(p, &p->next_dl, true)))
		download_one(j);
	return NULL;
}

/* ---- unpack --------------------------------------------------------------- */

struct follow {
	struct layer_job *j;
	uint64_t pos;
	unsigned gen;
	bool stale;
};

/* Read the layer's bytes as the download writes them. */
static ssize_t follow_read(void *ctx, void *buf, size_t len)
{
	struct follow *f = ctx;
	struct layer_job *j = f->j;
	struct pull_ctx *p = j->p;
	uint64_t avail;
	ssize_t n;
	int fd;

	pthread_mutex_lock(&p->mu);
	while (!p->cancel && j->gen == f->gen && f->pos >= j->written && !j->dl_done)
		pthread_cond_wait(&p->cond, &p->mu);
	if (p->cancel) {
		pthread_mutex_unlock(&p->mu);
		return -ECANCELED;
	}
	if (j->gen != f->gen) {
		f->stale = true;
		pthread_mutex_unlock(&p->mu);
		return -ESTALE;
	}
	if (f->pos >= j->written) {
		int rc = j->dl_rc;
		pthread_mutex_unlock(&p->mu);
		return rc < 0 ? -EIO : 0;
	}
	avail = j->written - f->pos;
	fd = j->read_fd;
	pthread_mutex_unlock(&p->mu);
	if (len > avail)
		len = (size_t)avail;
	do
		n = pread(fd, buf, len, (off_t)f->pos);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	/* A restart may have truncated the file while we read. */
	pthread_mutex_lock(&p->mu);
	if (j->gen != f->gen) {
		f->stale = true;
		n = -ESTALE;
	}
	pthread_mutex_unlock(&p->mu);
	if (n == 0)
		return -EIO; /* shorter than what was written: cannot happen */
	if (n > 0)
		f->pos += (uint64_t)n;
	return n;
}

static void unpack_progress(void *ctx, uint64_t compressed, uint64_t uncompressed)
{
	struct layer_job *j = ctx;
	pthread_mutex_lock(&j->p->mu);
	j->prog.extracted = compressed;
	pthread_mutex_unlock(&j->p->mu);
}

static void unpack_one(struct layer_job *j)
{
	struct pull_ctx *p = j->p;
	struct imgfs_error err = {0};
	struct imgfs_unpack_result res = {0};
	char *dir = NULL;
	int rc;

	for (;;) {
		struct follow f = {.j = j};
		struct imgfs_unpack_source source = {.read = follow_read, .ctx = &f};
		struct imgfs_unpack_opts uo = {.progress = unpack_progress,
					       .progress_ctx = j,
					       .max_bytes = p->max_layer_size,
					       .compressed_size = j->desc->size,
					       .max_ratio = p->max_ratio};

		pthread_mutex_lock(&p->mu);
		while (!p->cancel && j->read_fd < 0 && !j->dl_done)
			pthread_cond_wait(&p->cond, &p->mu);
		if (p->cancel || j->read_fd < 0) {
			pthread_mutex_unlock(&p->mu);
			rc = imgfs_error_set(&err, ECANCELED, "cancelled");
			break;
		}
		f.gen = j->gen;
		pthread_mutex_unlock(&p->mu);

		rc = imgfs_store_snapshot_prepare(p->s, &dir, &err);
		if (rc < 0)
			break;
		rc = imgfs_unpack_layer(dir, &source, &uo, &res, &err);
		if (rc < 0 && f.stale) {
			imgfs_store_snapshot_discard(p->s, dir);
			free(dir);
			dir = NULL;
			imgfs_unpack_result_destroy(&res);
			memset(&res, 0, sizeof(res));
			continue;
		}
		if (rc == 0 && !imgfs_digest_equal(&res.diff_id, j->diff_id))
			rc = imgfs_error_set(
			    &err, EIO,
			    "diffID mismatch: the image config says %s, the layer's content is %s",
			    j->diff_id->str, res.diff_id.str);
		break;
	}
	if (rc < 0 && dir) {
		imgfs_store_snapshot_discard(p->s, dir);
		free(dir);
		dir = NULL;
		imgfs_unpack_result_destroy(&res);
	}
	pthread_mutex_lock(&p->mu);
	j->unpack_done = true;
	if (rc < 0) {
		job_fail_locked(j, &j->unpack_rc, &j->unpack_err, &err);
	} else {
		j->tmpdir = dir;
		j->res = res;
	}
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->mu);
}

static void *unpack_thread(void *arg)
{
	struct pull_ctx *p = arg;
	struct layer_job *j;
	while ((j = next_job(p, &p->next_unpack, false)))
		unpack_one(j);
	return NULL;
}

/* ---- the committing thread ---------------------------------------------- */

static void report(const struct imgfs_pull_opts *opts, const char *name, struct pull_ctx *p,
		   bool finished)
{
	struct imgfs_pull_layer_progress *copy;
	struct imgfs_pull_progress pr;
	if (!opts || !opts->progress)
		return;
	copy = calloc(p->n ? p->n : 1, sizeof(*copy));
	if (!copy)
		return;
	pthread_mutex_lock(&p->mu);
	for (size_t i = 0; i < p->n; i++)
		copy[i] = p->jobs[i].prog;
	pthread_mutex_unlock(&p->mu);
	pr = (struct imgfs_pull_progress){
	    .name = name, .n_layers = p->n, .layers = copy, .finished = finished};
	opts->progress(opts->progress_ctx, &pr);
	free(copy);
}

/* The first failure of any job, or NULL. Caller holds mu. */
static const struct imgfs_error *first_failure(struct pull_ctx *p, size_t *which)
{
	for (size_t i = 0; i < p->n; i++) {
		struct layer_job *j = &p->jobs[i];
		*which = i;
		if (j->dl_done && j->dl_rc < 0)
			return &j->dl_err;
		if (j->unpack_done && j->unpack_rc < 0 && j->unpack_err.code != ECANCELED)
			return &j->unpack_err;
	}
	return NULL;
}

static bool job_ready(const struct layer_job *j)
{
	if (j->need_snapshot && !j->unpack_done)
		return false;
	if (j->need_blob && !j->dl_done)
		return false;
	return true;
}

/* Wait until job i is ready or anything failed. Returns 0, or -1 with err. */
static int wait_job(struct pull_ctx *p, size_t i, const struct imgfs_pull_opts *opts,
		    const char *name, struct imgfs_error *err)
{
	for (;;) {
		const struct imgfs_error *fe;
		size_t which;
		struct timespec ts;
		bool ready;

		pthread_mutex_lock(&p->mu);
		fe = first_failure(p, &which);
		if (fe) {
			*err = *fe;
			pthread_mutex_unlock(&p->mu);
			return imgfs_error_wrap(err, "layer %zu (%s)", which,
						p->jobs[which].desc->digest.str);
		}
		ready = job_ready(&p->jobs[i]);
		if (!ready) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 100 * 1000 * 1000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&p->cond, &p->mu, &ts);
		}
		pthread_mutex_unlock(&p->mu);
		if (ready)
			return 0;
		report(opts, name, p, false);
	}
}

static int commit_job(struct pull_ctx *p, size_t i, char **dirs, struct imgfs_error *err)
{
	struct layer_job *j = &p->jobs[i];
	_cleanup_free_ const char **lowers = calloc(i + 1, sizeof(*lowers));
	int rc;

	if (!lowers)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	for (size_t k = 0; k < i; k++)
		lowers[k] = dirs[i - 1 - k];
	if (!j->need_snapshot)
		return imgfs_store_snapshot_dir(p->s, j->chain_id, &dirs[i], err);
	rc = imgfs_unpack_fix_implied(j->tmpdir, j->res.implied_dirs, lowers, err);
	if (rc == 0)
		rc = imgfs_store_snapshot_commit(p->s, j->tmpdir, j->chain_id,
						 i ? p->jobs[i - 1].chain_id : NULL, j->diff_id,
						 j->res.disk_bytes, &dirs[i], err);
	if (rc < 0)
		return imgfs_error_wrap(err, "layer %zu (%s)", i, j->desc->digest.str);
	free(j->tmpdir);
	j->tmpdir = NULL;
	pthread_mutex_lock(&p->mu);
	j->prog.state = IMGFS_LAYER_DONE;
	j->prog.extracted = j->desc->size;
	pthread_mutex_unlock(&p->mu);
	return 0;
}

/* Order job indexes by layer size, largest first (stable: ties keep index order). */
static void order_by_size(struct pull_ctx *p)
{
	for (size_t i = 0; i < p->n; i++) {
		size_t k = i;
		while (k > 0 && p->jobs[p->order[k - 1]].desc->size < p->jobs[i].desc->size) {
			p->order[k] = p->order[k - 1];
			k--;
		}
		p->order[k] = i;
	}
}

static int cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 2 ? 2 : n > 8 ? 8 : (int)n;
}

int pull_layers(struct imgfs_store *s, struct pull_source *src, const char *name,
		const struct imgfs_manifest *m, const struct imgfs_config *c,
		struct imgfs_digest *chain_ids, const struct imgfs_pull_opts *opts,
		struct imgfs_error *err)
{
	struct pull_ctx p = {.s = s, .src = src, .n = m->n_layers};
	pthread_t dl_threads[16], up_threads[16];
	int n_dl = 0, n_up = 0, want_dl, want_up, rc = 0;
	char **dirs;

	if (opts && opts->fetch) {
		p.max_layer_size = opts->fetch->max_layer_size;
		p.max_ratio = opts->fetch->max_layer_ratio ? (uint32_t)opts->fetch->max_layer_ratio
							   : IMGFS_UNPACK_NO_RATIO;
	}

	p.jobs = calloc(p.n ? p.n : 1, sizeof(*p.jobs));
	p.order = calloc(p.n ? p.n : 1, sizeof(*p.order));
	dirs = calloc(p.n ? p.n : 1, sizeof(*dirs));
	if (!p.jobs || !p.order || !dirs) {
		free(p.jobs);
		free(p.order);
		free(dirs);
		return imgfs_error_set(err, ENOMEM, "out of memory");
	}
	pthread_mutex_init(&p.mu, NULL);
	pthread_cond_init(&p.cond, NULL);

	for (size_t i = 0; i < p.n; i++) {
		struct layer_job *j = &p.jobs[i];
		struct imgfs_error e2;
		char *dir = NULL;
		imgfs_chain_id(i ? &chain_ids[i - 1] : NULL, &c->diff_ids[i], &chain_ids[i]);
		j->p = &p;
		j->index = i;
		j->desc = &m->layers[i];
		j->diff_id = &c->diff_ids[i];
		j->chain_id = &chain_ids[i];
		j->read_fd = -1;
		j->need_blob = !imgfs_store_has_blob(s, &j->desc->digest, j->desc->size);
		j->need_snapshot = imgfs_store_snapshot_dir(s, j->chain_id, &dir, &e2) < 0;
		free(dir);
		j->prog.digest = j->desc->digest.str;
		j->prog.size = j->desc->size;
		if (!j->need_blob) {
			_cleanup_free_ char *path = imgfs_store_blob_path(s, &j->desc->digest);
			j->prog.downloaded = j->desc->size;
			j->dl_done = true;
			if (j->need_snapshot) {
				j->read_fd = open(path, O_RDONLY | O_CLOEXEC);
				j->written = j->desc->size;
				if (j->read_fd < 0) {
					j->dl_rc =
					    imgfs_error_errno(&j->dl_err, errno, "open %s", path);
				}
			}
		}
		j->prog.state = !j->need_blob && !j->need_snapshot ? IMGFS_LAYER_EXISTS
				: !j->need_blob			   ? IMGFS_LAYER_EXTRACTING
								   : IMGFS_LAYER_WAITING;
	}

	order_by_size(&p);
	want_dl = src->max_downloads > 0 ? src->max_downloads : 3;
	want_up = cpu_count();
	for (int k = 0; k < want_dl && k < 16 && (size_t)k < p.n; k++)
		if (pthread_create(&dl_threads[n_dl], NULL, download_thread, &p) == 0)
			n_dl++;
	for (int k = 0; k < want_up && k < 16 && (size_t)k < p.n; k++)
		if (pthread_create(&up_threads[n_up], NULL, unpack_thread, &p) == 0)
			n_up++;
	if (p.n && (!n_dl || !n_up))
		rc = imgfs_error_set(err, EAGAIN, "cannot start threads");

	for (size_t i = 0; rc == 0 && i < p.n; i++) {
		rc = wait_job(&p, i, opts, name, err);
		if (rc == 0)
			rc = commit_job(&p, i, dirs, err);
	}

	pthread_mutex_lock(&p.mu);
	if (rc < 0)
		p.cancel = true;
	pthread_cond_broadcast(&p.cond);
	pthread_mutex_unlock(&p.mu);
	for (int k = 0; k < n_dl; k++)
		pthread_join(dl_threads[k], NULL);
	for (int k = 0; k < n_up; k++)
		pthread_join(up_threads[k], NULL);
	if (rc == 0)
		report(opts, name, &p, true);

	for (size_t i = 0; i < p.n; i++) {
		struct layer_job *j = &p.jobs[i];
		if (j->tmpdir) {
			imgfs_store_snapshot_discard(s, j->tmpdir);
			free(j->tmpdir);
		}
		imgfs_unpack_result_destroy(&j->res);
		if (j->read_fd >= 0)
			close(j->read_fd);
		free(dirs[i]);
	}
	free(dirs);
	free(p.jobs);
	free(p.order);
	pthread_cond_destroy(&p.cond);
	pthread_mutex_destroy(&p.mu);
	return rc;
}
