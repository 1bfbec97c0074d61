/* SPDX-License-Identifier: Apache-2.0 */
/* Error object, logging, allocation and file helpers. */
#include "util.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>

void *imgfs_xmalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);
	if (!p)
		abort();
	return p;
}

char *imgfs_xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		abort();
	return p;
}

char *imgfs_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	va_start(ap, fmt);
	if (vasprintf(&p, fmt, ap) < 0)
		abort();
	va_end(ap);
	return p;
}

int imgfs_mul_overflow(size_t a, size_t b, size_t *out)
{
	return __builtin_mul_overflow(a, b, out);
}

/* ---- errors ------------------------------------------------------------ */

int imgfs_error_set(struct imgfs_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	if (!err)
		return -1;
	err->code = code ? code : EIO;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return -1;
}

int imgfs_error_errno(struct imgfs_error *err, int errnum, const char *fmt, ...)
{
	va_list ap;
	size_t n;
	if (!err)
		return -1;
	err->code = errnum ? errnum : EIO;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	n = strlen(err->msg);
	snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", strerror(errnum));
	return -1;
}

int imgfs_error_wrap(struct imgfs_error *err, const char *fmt, ...)
{
	char prefix[1024];
	char old[sizeof(err->msg)];
	va_list ap;
	if (!err)
		return -1;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	{
		size_t pl = strnlen(prefix, sizeof(prefix) - 1);
		size_t room = sizeof(err->msg) - 1 - pl;
		memcpy(err->msg, prefix, pl);
		if (room >= 2) {
			size_t ol = strnlen(old, room - 2);
			memcpy(err->msg + pl, ": ", 2);
			memcpy(err->msg + pl + 2, old, ol);
			pl += 2 + ol;
		}
		err->msg[pl] = '\0';
	}
	if (!err->code)
		err->code = EIO;
	return -1;
}

/* ---- logging ----------------------------------------------------------- */

static int log_level = IMGFS_LOG_INFO;
static bool log_syslog;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void imgfs_log_set_level(enum imgfs_log_level level)
{
	log_level = level;
}

void imgfs_log_use_syslog(const char *ident)
{
	openlog(ident, LOG_PID, LOG_DAEMON);
	log_syslog = true;
}

void imgfs_log(enum imgfs_log_level level, const char *fmt, ...)
{
	static const char *names[] = {[IMGFS_LOG_ERR] = "error",
				      [IMGFS_LOG_WARN] = "warning",
				      [IMGFS_LOG_INFO] = "info",
				      [IMGFS_LOG_DEBUG] = "debug"};
	va_list ap;
	if ((int)level > log_level)
		return;
	va_start(ap, fmt);
	if (log_syslog) {
		vsyslog((int)level, fmt, ap);
	} else {
		pthread_mutex_lock(&log_lock);
		fprintf(stderr, "imgfs: %s: ", names[level]);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		pthread_mutex_unlock(&log_lock);
	}
	va_end(ap);
}

/* ---- files --------------------------------------------------------------- */

int imgfs_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int imgfs_read_file(const char *path, size_t max, char **out, size_t *len, struct imgfs_error *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf;
	size_t got = 0;

	if (fd < 0)
		return imgfs_error_errno(err, errno, "open %s", path);
	if (fstat(fd, &st) < 0)
		return imgfs_error_errno(err, errno, "stat %s", path);
	if (!S_ISREG(st.st_mode))
		return imgfs_error_set(err, EINVAL, "%s: not a regular file", path);
	if ((uint64_t)st.st_size > max)
		return imgfs_error_set(err, EFBIG, "%s: %lld bytes, more than the limit of %zu",
				       path, (long long)st.st_size, max);
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return imgfs_error_set(err, ENOMEM, "%s: out of memory", path);
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			return imgfs_error_errno(err, errno, "read %s", path);
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	*out = buf;
	if (len)
		*len = got;
	return 0;
}

int imgfs_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
			    struct imgfs_error *err)
{
	_cleanup_free_ char *tmp = imgfs_xasprintf("%s.tmp.%d", path, (int)getpid());
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	int r;
	if (fd < 0)
		return imgfs_error_errno(err, errno, "create %s", tmp);
	r = imgfs_write_all(fd, data, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return imgfs_error_errno(err, -r, "write %s", tmp);
	}
	if (rename(tmp, path) < 0) {
		r = errno;
		unlink(tmp);
		return imgfs_error_errno(err, r, "rename %s", path);
	}
	return 0;
}

int imgfs_mkdir_p(const char *path, mode_t mode, struct imgfs_error *err)
{
	_cleanup_free_ char *p = imgfs_xstrdup(path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return imgfs_error_errno(err, errno, "mkdir %s", p);
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return imgfs_error_errno(err, errno, "mkdir %s", p);
	return 0;
}

/*
 * rm -rf without recursion and with a bounded number of fds: one level per
 * directory on a heap stack, but only the deepest RM_OPEN_LEVELS keep their
 * directory open. Going back up to a closed level reopens it as ".." of the
 * child, checked against the dev/ino it had on the way down (a directory
 * moved meanwhile gives ESTALE instead of removing elsewhere), and reads it
 * again from the start: what was removed is gone, so that only continues.
 * A layer can build trees tens of thousands of levels deep (chained
 * symlinks); recursion overflowed the stack and one fd per level hit EMFILE.
 */
#define RM_OPEN_LEVELS 16

struct rm_level {
	DIR *d; /* NULL while closed to bound the fds */
	dev_t dev;
	ino_t ino;
	char *name; /* in the parent level (unused for the top) */
};

static DIR *rm_open(int dirfd, const char *name, dev_t dev, ino_t ino, int *err)
{
	struct stat st;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d;

	if (fd < 0) {
		*err = -errno;
		return NULL;
	}
	if (fstat(fd, &st) < 0 || st.st_dev != dev || st.st_ino != ino) {
		*err = -ESTALE;
		close(fd);
		return NULL;
	}
	d = fdopendir(fd);
	if (!d) {
		*err = -errno;
		close(fd);
	}
	return d;
}

int imgfs_rm_rf_at(int at, const char *name)
{
	struct rm_level *lv = NULL;
	size_t depth = 0, cap = 0;
	struct stat st;
	int r = 0;

	if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(at, name, 0) < 0 && errno != ENOENT ? -errno : 0;
	lv = calloc(cap = 64, sizeof(*lv));
	if (!lv)
		return -ENOMEM;
	lv[0].dev = st.st_dev;
	lv[0].ino = st.st_ino;
	lv[0].d = rm_open(at, name, st.st_dev, st.st_ino, &r);
	if (!lv[0].d)
		goto out;
	depth = 1;
	while (depth > 0) {
		struct rm_level *l = &lv[depth - 1];
		struct dirent *de;

		errno = 0;
		de = readdir(l->d);
		if (!de && errno) {
			r = -errno;
			break;
		}
		if (!de) {
			/* this level is empty: remove it from its parent */
			if (depth == 1) {
				closedir(l->d);
				l->d = NULL;
				depth = 0;
				if (unlinkat(at, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
					r = -errno;
				break;
			}
			struct rm_level *p = &lv[depth - 2];
			if (!p->d && !(p->d = rm_open(dirfd(l->d), "..", p->dev, p->ino, &r)))
				break;
			closedir(l->d);
			l->d = NULL;
			if (unlinkat(dirfd(p->d), l->name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
				r = -errno;
				break;
			}
			free(l->name);
			l->name = NULL;
			depth--;
			continue;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) {
			if (unlinkat(dirfd(l->d), de->d_name, 0) < 0 && errno != ENOENT) {
				r = -errno;
				break;
			}
			continue;
		}
		if (fstatat(dirfd(l->d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			r = -errno;
			break;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (unlinkat(dirfd(l->d), de->d_name, 0) < 0 && errno != ENOENT) {
				r = -errno;
				break;
			}
			continue;
		}
		/* descend */
		if (depth == cap) {
			struct rm_level *n = realloc(lv, cap * 2 * sizeof(*lv));
			if (!n) {
				r = -ENOMEM;
				break;
			}
			memset(n + cap, 0, cap * sizeof(*lv));
			lv = n;
			cap *= 2;
			l = &lv[depth - 1];
		}
		lv[depth].name = strdup(de->d_name);
		if (!lv[depth].name) {
			r = -ENOMEM;
			break;
		}
		lv[depth].dev = st.st_dev;
		lv[depth].ino = st.st_ino;
		lv[depth].d = rm_open(dirfd(l->d), de->d_name, st.st_dev, st.st_ino, &r);
		if (!lv[depth].d) {
			free(lv[depth].name);
			lv[depth].name = NULL;
			break;
		}
		depth++;
		if (depth > RM_OPEN_LEVELS && lv[depth - 1 - RM_OPEN_LEVELS].d) {
			closedir(lv[depth - 1 - RM_OPEN_LEVELS].d);
			lv[depth - 1 - RM_OPEN_LEVELS].d = NULL;
		}
	}
out:
	for (size_t i = 0; i < cap; i++) {
		if (lv[i].d)
			closedir(lv[i].d);
		free(lv[i].name);
	}
	free(lv);
	return r;
}

int imgfs_rm_rf(const char *path)
{
	return imgfs_rm_rf_at(AT_FDCWD, path);
}

const char *imgfs_human_size(uint64_t bytes, char *buf, size_t buflen)
{
	static const char *units[] = {"B", "kB", "MB", "GB", "TB"};
	double v = (double)bytes;
	int u = 0;
	while (v >= 1000 && u < 4) {
		v /= 1000;
		u++;
	}
	if (u == 0)
		snprintf(buf, buflen, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, buflen, "%.1f %s", v, units[u]);
	return buf;
}

double imgfs_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
