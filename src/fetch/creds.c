/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry credentials, found where docker, podman and skopeo keep them:
 * $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json,
 * ~/.config/containers/auth.json, ${DOCKER_CONFIG:-~/.docker}/config.json.
 * In a file: credHelpers[host], then credsStore, then auths[host] ("auth":
 * base64 user:password, or "identitytoken"). Helpers are run as
 * `docker-credential-<name> get` with the server on stdin; nothing secret is
 * ever put in argv, the environment, logs or error messages, and secrets are
 * wiped from memory when dropped.
 */
#include "fetch_i.h"

#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_AUTH_FILE (4u << 20)
#define MAX_HELPER_OUTPUT (64u << 10)
#define DOCKER_HUB_KEY "https://index.docker.io/v1/"

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

void imgfs_creds_destroy(struct imgfs_creds *c)
{
	wipe_free(c->username);
	wipe_free(c->password);
	wipe_free(c->identity_token);
	free(c->source);
	memset(c, 0, sizeof(*c));
}

static bool is_docker_hub(const char *h)
{
	return !strcasecmp(h, "docker.io") || !strcasecmp(h, "index.docker.io") ||
	       !strcasecmp(h, "registry-1.docker.io") || !strcasecmp(h, "registry.hub.docker.com");
}

/* An auths key as the host it names: scheme and path dropped, Docker Hub's
 * aliases folded to docker.io ("https://index.docker.io/v1/" -> docker.io).
 * Caller frees. */
char *imgfs_creds_normalize_key(const char *key)
{
	const char *p = key, *e;
	char *h;
	if (!strncasecmp(p, "https://", 8))
		p += 8;
	else if (!strncasecmp(p, "http://", 7))
		p += 7;
	e = strchr(p, '/');
	h = strndup(p, e ? (size_t)(e - p) : strlen(p));
	if (!h)
		abort();
	for (char *q = h; *q; q++)
		if (*q >= 'A' && *q <= 'Z')
			*q = (char)(*q - 'A' + 'a');
	if (is_docker_hub(h)) {
		free(h);
		h = imgfs_xstrdup("docker.io");
	}
	return h;
}

/* ---- base64 ------------------------------------------------------------------- */

static char *b64_encode(const char *s, size_t n)
{
	char *out = imgfs_xmalloc(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
	return out;
}

/* Decode "user:password"; 0 or -1 (no message: the caller says which file). */
static int decode_auth(const char *b64, char **user, char **pass)
{
	size_t n = strlen(b64), pad = 0;
	unsigned char *buf;
	int len;
	char *colon;
	if (n == 0 || n % 4 || n > 1 << 20)
		return -1;
	buf = imgfs_xmalloc(n / 4 * 3 + 1);
	len = EVP_DecodeBlock(buf, (const unsigned char *)b64, (int)n);
	if (len < 0) {
		free(buf);
		return -1;
	}
	if (b64[n - 1] == '=')
		pad++;
	if (b64[n - 2] == '=')
		pad++;
	len -= (int)pad;
	buf[len] = '\0';
	colon = memchr(buf, ':', (size_t)len);
	if (!colon || strlen((char *)buf) != (size_t)len) {
		explicit_bzero(buf, (size_t)len);
		free(buf);
		return -1;
	}
	*user = strndup((char *)buf, (size_t)(colon - (char *)buf));
	*pass = imgfs_xstrdup(colon + 1);
	explicit_bzero(buf, (size_t)len);
	free(buf);
	return *user ? 0 : -1;
}

/* ---- credential helpers ---------------------------------------------------------- */

static bool helper_name_ok(const char *n)
{
	if (!*n || strlen(n) > 64)
		return false;
	for (const char *p = n; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || strchr("-_.", *p)))
			return false;
	return n[0] != '.';
}

/* Run docker-credential-<name> get, server on stdin; its stdout in *out.
 * 1 ok, 0 "not found" (non-zero exit), -1 error. */
static int helper_run(const char *name, const char *server, char **out, size_t *outlen,
		      struct imgfs_error *err)
{
	_cleanup_free_ char *prog = imgfs_xasprintf("docker-credential-%s", name);
	int in[2], o[2], status;
	char *buf = imgfs_xmalloc(MAX_HELPER_OUTPUT + 1);
	size_t len = 0;
	pid_t pid;

	if (pipe2(in, O_CLOEXEC) < 0) {
		free(buf);
		return imgfs_error_errno(err, errno, "credential helper %s: pipe", prog);
	}
	if (pipe2(o, O_CLOEXEC) < 0) {
		close(in[0]);
		close(in[1]);
		free(buf);
		return imgfs_error_errno(err, errno, "credential helper %s: pipe", prog);
	}
	pid = fork();
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(in[0], 0);
		dup2(o[1], 1);
		if (devnull >= 0)
			dup2(devnull, 2);
		signal(SIGPIPE, SIG_DFL);
		execlp(prog, prog, "get", (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(o[1]);
	if (pid < 0) {
		close(in[1]);
		close(o[0]);
		free(buf);
		return imgfs_error_errno(err, errno, "credential helper %s: fork", prog);
	}
	/* the server name is short: it fits in the pipe buffer. A helper that
	 * is gone already (not on PATH: exit 127) makes the write raise
	 * SIGPIPE, which would kill a process that does not ignore it, with no
	 * message: block it for this write and take back any it raised. */
	sigset_t pipe_set, old_set;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
	if (imgfs_write_all(in[1], server, strlen(server)) < 0) {
		const struct timespec zero = {0, 0};
		imgfs_debug("credential helper %s: did not read its input", prog);
		while (sigtimedwait(&pipe_set, NULL, &zero) == SIGPIPE)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old_set, NULL);
	close(in[1]);
	for (;;) {
		ssize_t n = read(o[0], buf + len, MAX_HELPER_OUTPUT - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == MAX_HELPER_OUTPUT)
			break;
	}
	close(o[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	buf[len] = '\0';
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
		explicit_bzero(buf, len);
		free(buf);
		return imgfs_error_set(err, EACCES,
				       "credential helper %s for %s: not found on PATH or not "
				       "executable",
				       prog, server);
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		/* "credentials not found in native keychain" */
		explicit_bzero(buf, len);
		free(buf);
		return 0;
	}
	*out = buf;
	*outlen = len;
	return 1;
}

static int helper_get(const char *name, const char *host, struct imgfs_creds *c,
		      struct imgfs_error *err)
{
	const char *server = !strcmp(host, "docker.io") ? DOCKER_HUB_KEY : host;
	char *out = NULL;
	size_t len = 0;
	json_t *root, *u, *s;
	int rc;

	if (!helper_name_ok(name))
		return imgfs_error_set(err, EINVAL, "invalid credential helper name \"%.64s\"",
				       name);
	rc = helper_run(name, server, &out, &len, err);
	if (rc <= 0)
		return rc;
	root = json_loadb(out, len, 0, NULL);
	explicit_bzero(out, len);
	free(out);
	u = json_object_get(root, "Username");
	s = json_object_get(root, "Secret");
	if (!json_is_string(u) || !json_is_string(s) || !json_string_length(s)) {
		json_decref(root);
		return imgfs_error_set(err, EACCES,
				       "credential helper docker-credential-%s for %s: output is "
				       "not {\"Username\", \"Secret\"} JSON",
				       name, host);
	}
	if (!strcmp(json_string_value(u), "<token>")) {
		c->identity_token = imgfs_xstrdup(json_string_value(s));
	} else {
		c->username = imgfs_xstrdup(json_string_value(u));
		c->password = imgfs_xstrdup(json_string_value(s));
	}
	/* jansson keeps its own copy: wipe it */
	explicit_bzero((char *)json_string_value(s), json_string_length(s));
	json_decref(root);
	c->source = imgfs_xasprintf("docker-credential-%s", name);
	return 1;
}

/* ---- auth files ----------------------------------------------------------------------- */

/* The auths entry for host (several keys may name it; the first wins). */
static json_t *auths_entry(json_t *auths, const char *host)
{
	const char *k;
	json_t *v;
	json_object_foreach(auths, k, v)
	{
		_cleanup_free_ char *n = imgfs_creds_normalize_key(k);
		if (!strcmp(n, host))
			return v;
	}
	return NULL;
}

static int entry_creds(json_t *e, const char *host, const char *file, struct imgfs_creds *c,
		       struct imgfs_error *err)
{
	json_t *a = json_object_get(e, "auth");
	json_t *it = json_object_get(e, "identitytoken");
	json_t *u = json_object_get(e, "username"), *p = json_object_get(e, "password");

	if (json_is_string(it) && json_string_length(it))
		c->identity_token = imgfs_xstrdup(json_string_value(it));
	if (json_is_string(a) && json_string_length(a)) {
		if (decode_auth(json_string_value(a), &c->username, &c->password) < 0) {
			imgfs_creds_destroy(c);
			return imgfs_error_set(err, EINVAL,
					       "auth file %s: the \"auth\" of %s is not base64 "
					       "of user:password",
					       file, host);
		}
	} else if (json_is_string(u) && json_is_string(p)) {
		c->username = imgfs_xstrdup(json_string_value(u));
		c->password = imgfs_xstrdup(json_string_value(p));
	}
	if (!c->username && !c->identity_token)
		return 0;
	c->source = imgfs_xstrdup(file);
	return 1;
}

/* Look host up in one file. 1 found, 0 not, -1 error. */
static int file_lookup(const char *file, const char *host, struct imgfs_creds *c,
		       struct imgfs_error *err)
{
	json_error_t jerr;
	json_t *root, *helpers, *store, *e;
	int rc = 0;

	if (access(file, F_OK) < 0)
		return 0;
	root = json_load_file(file, 0, &jerr);
	if (!root)
		return imgfs_error_set(err, EINVAL, "auth file %s: %s (line %d)", file, jerr.text,
				       jerr.line);
	helpers = json_object_get(root, "credHelpers");
	if (json_is_object(helpers)) {
		const char *k;
		json_t *v;
		json_object_foreach(helpers, k, v)
		{
			_cleanup_free_ char *n = imgfs_creds_normalize_key(k);
			if (!strcmp(n, host) && json_is_string(v)) {
				rc = helper_get(json_string_value(v), host, c, err);
				break;
			}
		}
	}
	store = json_object_get(root, "credsStore");
	if (rc == 0 && json_is_string(store) && json_string_length(store))
		rc = helper_get(json_string_value(store), host, c, err);
	e = auths_entry(json_object_get(root, "auths"), host);
	if (rc == 0 && json_is_object(e))
		rc = entry_creds(e, host, file, c, err);
	/* wipe the file's secrets held by jansson */
	json_decref(root);
	return rc;
}

static char *home_path(const char *rel)
{
	const char *home = getenv("HOME");
	return home && *home ? imgfs_xasprintf("%s/%s", home, rel) : NULL;
}

static char *docker_config_path(void)
{
	const char *d = getenv("DOCKER_CONFIG");
	if (d && *d)
		return imgfs_xasprintf("%s/config.json", d);
	return home_path(".docker/config.json");
}

int imgfs_creds_lookup(const char *host, const char *auth_file, struct imgfs_creds *out,
		       struct imgfs_error *err)
{
	_cleanup_free_ char *h = imgfs_creds_normalize_key(host);
	char *files[5] = {0};
	const char *env;
	int rc = 0, n = 0;

	memset(out, 0, sizeof(*out));
	if (auth_file) {
		files[n++] = imgfs_xstrdup(auth_file);
	} else {
		env = getenv("REGISTRY_AUTH_FILE");
		if (env && *env)
			files[n++] = imgfs_xstrdup(env);
		env = getenv("XDG_RUNTIME_DIR");
		if (env && *env)
			files[n++] = imgfs_xasprintf("%s/containers/auth.json", env);
		files[n] = home_path(".config/containers/auth.json");
		if (files[n])
			n++;
		files[n] = docker_config_path();
		if (files[n])
			n++;
	}
	for (int i = 0; i < n && rc == 0; i++)
		rc = file_lookup(files[i], h, out, err);
	for (int i = 0; i < n; i++)
		free(files[i]);
	return rc;
}

char *imgfs_creds_default_file(const char *auth_file)
{
	const char *env;
	if (auth_file)
		return imgfs_xstrdup(auth_file);
	env = getenv("REGISTRY_AUTH_FILE");
	if (env && *env)
		return imgfs_xstrdup(env);
	env = getenv("XDG_RUNTIME_DIR");
	if (env && *env)
		return imgfs_xasprintf("%s/containers/auth.json", env);
	return docker_config_path();
}

/* ---- writing ----------------------------------------------------------------------- */

static int mkdir_parents(const char *file, struct imgfs_error *err)
{
	_cleanup_free_ char *d = imgfs_xstrdup(file);
	for (char *p = d + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(d, 0700) < 0 && errno != EEXIST)
			return imgfs_error_errno(err, errno, "auth file %s: mkdir %s", file, d);
		*p = '/';
	}
	return 0;
}

static json_t *load_for_update(const char *file, struct imgfs_error *err)
{
	json_error_t jerr;
	json_t *root;
	if (access(file, F_OK) < 0 && errno == ENOENT)
		return json_object();
	root = json_load_file(file, 0, &jerr);
	if (!root || !json_is_object(root)) {
		json_decref(root);
		imgfs_error_set(err, EINVAL, "auth file %s: %s (line %d)", file,
				root ? "not a JSON object" : jerr.text, jerr.line);
		return NULL;
	}
	return root;
}

/* Write root to file: a 0600 temp file beside it, fsync, rename. */
static int save_file(const char *file, json_t *root, struct imgfs_error *err)
{
	_cleanup_free_ char *tmp = imgfs_xasprintf("%s.XXXXXX", file);
	char *text;
	int fd, r;

	if (mkdir_parents(file, err) < 0)
		return -1;
	text = json_dumps(root, JSON_INDENT(1));
	if (!text)
		return imgfs_error_set(err, ENOMEM, "auth file %s: cannot serialise", file);
	fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
	if (fd < 0) {
		wipe_free(text);
		return imgfs_error_errno(err, errno, "auth file %s: create %s", file, tmp);
	}
	r = imgfs_write_all(fd, text, strlen(text));
	if (r == 0)
		r = imgfs_write_all(fd, "\n", 1);
	wipe_free(text);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && rename(tmp, file) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return imgfs_error_errno(err, -r, "auth file %s: write", file);
	}
	return 0;
}

static size_t remove_entries(json_t *auths, const char *host)
{
	const char *k;
	json_t *v;
	void *tmp;
	size_t n = 0;
	json_object_foreach_safe(auths, tmp, k, v)
	{
		_cleanup_free_ char *nk = imgfs_creds_normalize_key(k);
		if (!strcmp(nk, host)) {
			json_object_del(auths, k);
			n++;
		}
	}
	return n;
}

int imgfs_creds_store(const char *file, const char *host, const char *user, const char *password,
		      struct imgfs_error *err)
{
	_cleanup_free_ char *h = imgfs_creds_normalize_key(host);
	_cleanup_free_ char *up = imgfs_xasprintf("%s:%s", user, password);
	json_t *root = load_for_update(file, err);
	json_t *auths;
	char *b64;
	int rc;

	if (!root) {
		explicit_bzero(up, strlen(up));
		return -1;
	}
	auths = json_object_get(root, "auths");
	if (!json_is_object(auths)) {
		auths = json_object();
		json_object_set_new(root, "auths", auths);
	}
	remove_entries(auths, h);
	b64 = b64_encode(up, strlen(up));
	explicit_bzero(up, strlen(up));
	json_object_set_new(auths, !strcmp(h, "docker.io") ? DOCKER_HUB_KEY : h,
			    json_pack("{s:s}", "auth", b64));
	wipe_free(b64);
	rc = save_file(file, root, err);
	json_decref(root);
	return rc;
}

int imgfs_creds_erase(const char *file, const char *host, struct imgfs_error *err)
{
	_cleanup_free_ char *h = imgfs_creds_normalize_key(host);
	json_t *root;
	json_t *auths;
	int rc;

	if (access(file, F_OK) < 0 && errno == ENOENT)
		return imgfs_error_set(err, ENOENT, "not logged in to %s (no auth file %s)", host,
				       file);
	root = load_for_update(file, err);
	if (!root)
		return -1;
	auths = json_object_get(root, "auths");
	if (!json_is_object(auths) || remove_entries(auths, h) == 0) {
		json_decref(root);
		return imgfs_error_set(err, ENOENT, "not logged in to %s (no entry in %s)", host,
				       file);
	}
	rc = save_file(file, root, err);
	json_decref(root);
	return rc;
}
