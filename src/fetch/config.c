/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry configuration, /etc/imgfs/config.json, with Docker's
 * daemon.json keys where they fit (max-concurrent-downloads,
 * insecure-registries, registry-mirrors) and containerd-like per-host
 * mirrors under "registries". Strings are copied into storage the config
 * owns, so the JSON is not kept.
 */
#include "fetch_i.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* All strings the config owns, one list to free. */
struct owned {
	size_t n;
	void *p[];
};

static void *own(struct imgfs_fetch_config *cfg, void *p)
{
	struct owned *o = (struct owned *)cfg->owned_;
	size_t n = o ? o->n : 0;
	o = realloc(o, sizeof(*o) + (n + 1) * sizeof(void *));
	if (!o)
		abort();
	o->n = n + 1;
	o->p[n] = p;
	cfg->owned_ = (char *)o;
	return p;
}

void imgfs_fetch_config_init(struct imgfs_fetch_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_concurrent_downloads = 3;
	cfg->ca_dir = "/etc/imgfs/certs.d";
	cfg->max_attempts = 5;
	cfg->max_retry_after = 60;
	cfg->stall_speed = 1024;
	cfg->stall_time = 30;
	cfg->max_layer_size = 64ull << 30;
	cfg->max_layer_ratio = 100;
	cfg->connect_time = 30;
}

void imgfs_fetch_config_destroy(struct imgfs_fetch_config *cfg)
{
	struct owned *o = (struct owned *)cfg->owned_;
	for (size_t i = 0; o && i < o->n; i++)
		free(o->p[i]);
	free(o);
	cfg->owned_ = NULL;
}

/* A NULL-terminated copy of an array of strings. */
static int str_array(struct imgfs_fetch_config *cfg, const char *path, const char *key, json_t *v,
		     char ***out, struct imgfs_error *err)
{
	size_t i;
	json_t *e;
	char **a;
	if (!json_is_array(v))
		return imgfs_error_set(err, EINVAL, "config %s: %s must be an array of strings",
				       path, key);
	a = own(cfg, imgfs_xmalloc((json_array_size(v) + 1) * sizeof(char *)));
	json_array_foreach(v, i, e)
	{
		if (!json_is_string(e) || !json_string_length(e))
			return imgfs_error_set(err, EINVAL,
					       "config %s: %s[%zu] must be a non-empty string",
					       path, key, i);
		a[i] = own(cfg, imgfs_xstrdup(json_string_value(e)));
	}
	a[json_array_size(v)] = NULL;
	*out = a;
	return 0;
}

/* A mirror must be an http(s) URL (a bare host gets https://, as Docker's). */
static int check_mirrors(const char *path, const char *key, char **m, struct imgfs_error *err)
{
	for (size_t i = 0; m && m[i]; i++) {
		if (strncmp(m[i], "https://", 8) && strncmp(m[i], "http://", 7))
			return imgfs_error_set(err, EINVAL,
					       "config %s: %s: mirror \"%.200s\" must be an "
					       "http:// or https:// URL",
					       path, key, m[i]);
		if (strchr(m[i], '@') || strchr(m[i], '?') || strchr(m[i], '#'))
			return imgfs_error_set(err, EINVAL,
					       "config %s: %s: mirror \"%.200s\" may not carry "
					       "credentials, a query or a fragment",
					       path, key, m[i]);
	}
	return 0;
}

static int int_key(json_t *root, const char *path, const char *key, long lo, long hi, long *out,
		   struct imgfs_error *err)
{
	json_t *v = json_object_get(root, key);
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return imgfs_error_set(err, EINVAL, "config %s: %s must be an integer %ld..%ld",
				       path, key, lo, hi);
	*out = (long)json_integer_value(v);
	return 0;
}

static int str_key(struct imgfs_fetch_config *cfg, json_t *root, const char *path, const char *key,
		   const char **out, struct imgfs_error *err)
{
	json_t *v = json_object_get(root, key);
	if (!v)
		return 0;
	if (!json_is_string(v) || !json_string_length(v))
		return imgfs_error_set(err, EINVAL, "config %s: %s must be a non-empty string",
				       path, key);
	*out = own(cfg, imgfs_xstrdup(json_string_value(v)));
	return 0;
}

static int load_registries(struct imgfs_fetch_config *cfg, json_t *regs, const char *path,
			   struct imgfs_error *err)
{
	const char *host;
	json_t *hv;
	size_t n = 0;
	if (!json_is_object(regs))
		return imgfs_error_set(err, EINVAL, "config %s: registries must be an object",
				       path);
	cfg->hosts = own(cfg, imgfs_xmalloc((json_object_size(regs) + 1) * sizeof(*cfg->hosts)));
	json_object_foreach(regs, host, hv)
	{
		struct imgfs_fetch_host *h = &cfg->hosts[n];
		_cleanup_free_ char *key = imgfs_xasprintf("registries.%s.mirrors", host);
		json_t *m = json_object_get(hv, "mirrors");
		if (!json_is_object(hv))
			return imgfs_error_set(
			    err, EINVAL, "config %s: registries.%s must be an object", path, host);
		h->host = own(cfg, imgfs_xstrdup(host));
		h->mirrors = NULL;
		if (m && (str_array(cfg, path, key, m, &h->mirrors, err) < 0 ||
			  check_mirrors(path, key, h->mirrors, err) < 0))
			return -1;
		n++;
	}
	cfg->n_hosts = n;
	return 0;
}

static int load_root(struct imgfs_fetch_config *cfg, json_t *root, const char *path,
		     struct imgfs_error *err)
{
	long v;
	json_t *a;

	v = cfg->max_concurrent_downloads;
	if (int_key(root, path, "max-concurrent-downloads", 1, 16, &v, err) < 0)
		return -1;
	cfg->max_concurrent_downloads = (int)v;
	v = cfg->max_attempts;
	if (int_key(root, path, "max-download-attempts", 1, 20, &v, err) < 0)
		return -1;
	cfg->max_attempts = (int)v;
	v = cfg->max_retry_after;
	if (int_key(root, path, "max-retry-after", 0, 3600, &v, err) < 0)
		return -1;
	cfg->max_retry_after = (int)v;
	v = cfg->stall_time;
	if (int_key(root, path, "stall-timeout", 1, 3600, &v, err) < 0)
		return -1;
	cfg->stall_time = (int)v;
	v = cfg->stall_speed;
	if (int_key(root, path, "stall-speed", 1, 1L << 30, &v, err) < 0)
		return -1;
	cfg->stall_speed = v;
	v = (long)(cfg->max_layer_size >> 20);
	if (int_key(root, path, "max-layer-size-mib", 1, 1L << 30, &v, err) < 0)
		return -1;
	cfg->max_layer_size = (uint64_t)v << 20;
	v = cfg->max_layer_ratio;
	if (int_key(root, path, "max-layer-ratio", 0, 1000000, &v, err) < 0)
		return -1;
	cfg->max_layer_ratio = (unsigned)v;
	v = cfg->connect_time;
	if (int_key(root, path, "connect-timeout", 1, 3600, &v, err) < 0)
		return -1;
	cfg->connect_time = (int)v;
	if (str_key(cfg, root, path, "certs-dir", &cfg->ca_dir, err) < 0 ||
	    str_key(cfg, root, path, "auth-file", &cfg->auth_file, err) < 0)
		return -1;
	a = json_object_get(root, "insecure-registries");
	if (a && str_array(cfg, path, "insecure-registries", a, &cfg->insecure_registries, err) < 0)
		return -1;
	a = json_object_get(root, "registry-mirrors");
	if (a && (str_array(cfg, path, "registry-mirrors", a, &cfg->registry_mirrors, err) < 0 ||
		  check_mirrors(path, "registry-mirrors", cfg->registry_mirrors, err) < 0))
		return -1;
	a = json_object_get(root, "registries");
	if (a && load_registries(cfg, a, path, err) < 0)
		return -1;
	return 0;
}

int imgfs_fetch_config_load(struct imgfs_fetch_config *cfg, const char *path, bool must_exist,
			    struct imgfs_error *err)
{
	json_error_t jerr;
	json_t *root;
	int rc;

	if (!must_exist && access(path, F_OK) < 0 && errno == ENOENT)
		return 0;
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root && jerr.line < 1) /* not read at all: jansson's text says why */
		return imgfs_error_set(err, EINVAL, "config %s: %s", path, jerr.text);
	if (!root)
		return imgfs_error_set(err, EINVAL, "config %s: %s (line %d)", path, jerr.text,
				       jerr.line);
	if (!json_is_object(root)) {
		json_decref(root);
		return imgfs_error_set(err, EINVAL, "config %s: not a JSON object", path);
	}
	rc = load_root(cfg, root, path, err);
	json_decref(root);
	return rc;
}
