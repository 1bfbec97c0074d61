/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image references with Docker's grammar and normalisation (the rules of
 * distribution/reference: splitDockerDomain, ParseNormalizedNamed):
 *
 *   reference   := name [ ":" tag ] [ "@" digest ]
 *   name        := [domain "/"] component ("/" component)*
 *   domain      := host [":" port]     host: dns-ish labels or "[" ipv6 "]"
 *   component   := [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
 *   tag         := [\w][\w.-]{0,127}
 *
 * The first component is a domain when it contains '.' or ':', is
 * "localhost", or has an uppercase letter; otherwise the name is on Docker
 * Hub, and single-component Hub names get "library/".
 */
#include "fetch.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define REF_NAME_MAX 255
#define REF_TAG_MAX 128
#define HUB_DOMAIN "docker.io"
#define HUB_LEGACY "index.docker.io"
#define HUB_API_HOST "registry-1.docker.io"

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_word(char c)
{
	return isascii((unsigned char)c) && (isalnum((unsigned char)c) || c == '_');
}

/* One path component [s, e): [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* */
static bool component_ok(const char *s, const char *e)
{
	const char *p = s;
	if (p == e || !is_lower_alnum(*p))
		return false;
	while (p < e) {
		while (p < e && is_lower_alnum(*p))
			p++;
		if (p == e)
			return true;
		/* a separator, then alphanumerics again */
		if (*p == '.') {
			p++;
		} else if (*p == '_') {
			p++;
			if (p < e && *p == '_')
				p++;
		} else if (*p == '-') {
			while (p < e && *p == '-')
				p++;
		} else {
			return false;
		}
		if (p == e || !is_lower_alnum(*p))
			return false;
	}
	return true;
}

/* remote-name: component ("/" component)* */
static bool path_ok(const char *s)
{
	const char *p = s;
	for (;;) {
		const char *slash = strchr(p, '/');
		const char *e = slash ? slash : p + strlen(p);
		if (!component_ok(p, e))
			return false;
		if (!slash)
			return true;
		p = slash + 1;
	}
}

/* A DNS-ish label: [a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])? */
static bool label_ok(const char *s, const char *e)
{
	if (s == e || !isalnum((unsigned char)*s) || !isalnum((unsigned char)e[-1]))
		return false;
	for (const char *p = s; p < e; p++)
		if (!isascii((unsigned char)*p) || !(isalnum((unsigned char)*p) || *p == '-'))
			return false;
	return true;
}

/* domain := (label ("." label)* | "[" [0-9a-fA-F:]+ "]") [":" port], port 1..65535 */
static bool domain_ok(const char *d)
{
	const char *p = d, *host_end;
	if (*p == '[') {
		const char *close = strchr(p, ']');
		if (!close || close == p + 1)
			return false;
		for (const char *q = p + 1; q < close; q++)
			if (!isxdigit((unsigned char)*q) && *q != ':')
				return false;
		host_end = close + 1;
	} else {
		const char *colon = strchr(p, ':');
		host_end = colon ? colon : p + strlen(p);
		while (p < host_end) {
			const char *dot = memchr(p, '.', (size_t)(host_end - p));
			const char *e = dot ? dot : host_end;
			if (!label_ok(p, e))
				return false;
			p = dot ? dot + 1 : host_end;
			if (dot && p == host_end)
				return false; /* trailing dot */
		}
		if (host_end == d)
			return false;
	}
	if (*host_end == '\0')
		return true;
	if (*host_end != ':' || !host_end[1])
		return false;
	/* a TCP port: 1..65535 (99999 would reach the network layer as EINVAL) */
	unsigned long port = 0;
	for (const char *q = host_end + 1; *q; q++) {
		if (!isdigit((unsigned char)*q))
			return false;
		port = port * 10 + (unsigned long)(*q - '0');
		if (port > 65535)
			return false;
	}
	return port > 0;
}

static bool tag_ok(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > REF_TAG_MAX || !is_word(t[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!is_word(t[i]) && t[i] != '.' && t[i] != '-')
			return false;
	return true;
}

static bool is_hex64(const char *s)
{
	size_t n = strlen(s);
	if (n != 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* The first component is a registry domain (distribution's splitDockerDomain). */
static bool looks_like_domain(const char *s, size_t n)
{
	if (n == 9 && !strncmp(s, "localhost", 9))
		return true;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '.' || s[i] == ':' || (s[i] >= 'A' && s[i] <= 'Z'))
			return true;
	return false;
}

static int bad_format(struct imgfs_error *err, const char *s, const char *why)
{
	return imgfs_error_set(err, EINVAL, "invalid reference format \"%.300s\": %s", s, why);
}

/* Split "name[:tag]" (name may hold a host:port) and validate the tag. */
static int split_tag(const char *in, char *name, char **tag, struct imgfs_error *err)
{
	char *slash = strrchr(name, '/');
	char *colon = strrchr(name, ':');
	*tag = NULL;
	if (colon && (!slash || colon > slash)) {
		*colon = '\0';
		if (!tag_ok(colon + 1))
			return imgfs_error_set(
			    err, EINVAL,
			    "invalid reference format \"%.300s\": invalid tag \"%.200s\" "
			    "(want [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})",
			    in, colon + 1);
		*tag = imgfs_xstrdup(colon + 1);
	}
	return 0;
}

/* Split name into domain and path with Docker Hub defaults. */
static int split_domain(const char *in, const char *name, struct imgfs_ref *ref,
			struct imgfs_error *err)
{
	const char *slash = strchr(name, '/');
	const char *rest;
	if (slash && looks_like_domain(name, (size_t)(slash - name))) {
		ref->domain = strndup(name, (size_t)(slash - name));
		rest = slash + 1;
		if (!ref->domain)
			return imgfs_error_set(err, ENOMEM, "out of memory");
		if (!strcmp(ref->domain, HUB_LEGACY)) {
			free(ref->domain);
			ref->domain = imgfs_xstrdup(HUB_DOMAIN);
		}
	} else {
		ref->domain = imgfs_xstrdup(HUB_DOMAIN);
		rest = name;
	}
	for (const char *p = rest; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			return imgfs_error_set(
			    err, EINVAL,
			    "invalid reference format \"%.300s\": repository name "
			    "\"%.300s\" must be lowercase",
			    in, rest);
	if (!domain_ok(ref->domain))
		return bad_format(err, in, "invalid registry domain");
	if (!path_ok(rest))
		return bad_format(err, in, "invalid repository name");
	if (!strcmp(ref->domain, HUB_DOMAIN) && !strchr(rest, '/'))
		ref->path = imgfs_xasprintf("library/%s", rest);
	else
		ref->path = imgfs_xstrdup(rest);
	if (strlen(ref->domain) + 1 + strlen(ref->path) > REF_NAME_MAX)
		return imgfs_error_set(
		    err, EINVAL,
		    "invalid reference \"%.300s\": repository name must not be more "
		    "than %d characters",
		    in, REF_NAME_MAX);
	return 0;
}

static int parse_digest_part(const char *in, const char *ds, struct imgfs_ref *ref,
			     struct imgfs_error *err)
{
	struct imgfs_error derr;
	if (imgfs_digest_parse(&ref->digest, ds, &derr) < 0)
		return imgfs_error_set(err, EINVAL, "invalid reference \"%.300s\": %s", in,
				       derr.msg);
	ref->has_digest = true;
	return 0;
}

int imgfs_ref_parse(const char *s, struct imgfs_ref *ref, struct imgfs_error *err)
{
	_cleanup_free_ char *name = NULL;
	const char *at;
	int rc;

	memset(ref, 0, sizeof(*ref));
	if (!s || !*s)
		return imgfs_error_set(err, EINVAL, "invalid reference format: empty reference");
	if (strlen(s) > 4096)
		return imgfs_error_set(err, EINVAL, "invalid reference format: reference too long");
	if (is_hex64(s))
		return imgfs_error_set(err, EINVAL,
				       "invalid repository name \"%s\": cannot specify 64-byte "
				       "hexadecimal strings",
				       s);
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return bad_format(err, s, "contains whitespace or non-ASCII characters");

	at = strchr(s, '@');
	name = at ? strndup(s, (size_t)(at - s)) : strdup(s);
	if (!name)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	if (!*name)
		return bad_format(err, s, "missing repository name");

	rc = split_tag(s, name, &ref->tag, err);
	if (rc == 0 && !*name)
		rc = bad_format(err, s, "missing repository name");
	if (rc == 0)
		rc = split_domain(s, name, ref, err);
	if (rc == 0 && at)
		rc = parse_digest_part(s, at + 1, ref, err);
	if (rc < 0) {
		imgfs_ref_destroy(ref);
		return -1;
	}
	if (!ref->tag && !ref->has_digest)
		ref->tag = imgfs_xstrdup("latest");
	return 0;
}

void imgfs_ref_destroy(struct imgfs_ref *ref)
{
	if (!ref)
		return;
	free(ref->domain);
	free(ref->path);
	free(ref->tag);
	memset(ref, 0, sizeof(*ref));
}

char *imgfs_ref_string(const struct imgfs_ref *ref)
{
	return imgfs_xasprintf("%s/%s%s%s%s%s", ref->domain, ref->path, ref->tag ? ":" : "",
			       ref->tag ? ref->tag : "", ref->has_digest ? "@" : "",
			       ref->has_digest ? ref->digest.str : "");
}

char *imgfs_ref_store_name(const struct imgfs_ref *ref)
{
	if (ref->has_digest)
		return imgfs_xasprintf("%s/%s@%s", ref->domain, ref->path, ref->digest.str);
	return imgfs_xasprintf("%s/%s:%s", ref->domain, ref->path, ref->tag);
}

/* How many leading bytes of the canonical repository "<domain>/<path>" the
 * familiar form drops: "docker.io/" and a single-component "library/", but
 * never so much that the rest starts with what parses as a domain (then
 * docker.io/a.b/c and a.b/c would be one name). */
static size_t familiar_skip(const struct imgfs_ref *ref)
{
	const char *slash = strchr(ref->path, '/');
	size_t first = slash ? (size_t)(slash - ref->path) : strlen(ref->path);

	if (strcmp(ref->domain, HUB_DOMAIN))
		return 0;
	/* library/ only goes for single-component names: library/a/b stays */
	if (!strncmp(ref->path, "library/", 8) && !strchr(ref->path + 8, '/'))
		return strlen(HUB_DOMAIN) + 1 + 8;
	/* a one-component rest is never read as a domain */
	if (slash && looks_like_domain(ref->path, first))
		return 0;
	return strlen(HUB_DOMAIN) + 1;
}

char *imgfs_ref_familiar(const struct imgfs_ref *ref)
{
	_cleanup_free_ char *full = imgfs_ref_string(ref);
	return imgfs_xstrdup(full + familiar_skip(ref));
}

char *imgfs_ref_tree_path(const struct imgfs_ref *ref)
{
	_cleanup_free_ char *repo = imgfs_xasprintf("%s/%s", ref->domain, ref->path);
	if (ref->tag)
		return imgfs_xasprintf("%s/%s", repo + familiar_skip(ref), ref->tag);
	return imgfs_xasprintf("%s/@%s", repo + familiar_skip(ref), ref->digest.str);
}

char *imgfs_ref_api_host(const struct imgfs_ref *ref)
{
	if (!strcmp(ref->domain, HUB_DOMAIN))
		return imgfs_xstrdup(HUB_API_HOST);
	return imgfs_xstrdup(ref->domain);
}
