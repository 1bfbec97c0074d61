/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Platforms: parsing "os/arch[/variant]", normalisation (containerd's
 * platforms.Normalize table), the host's platform, and choosing a manifest
 * from an index.
 *
 * Selection builds the list of platforms the wanted one can run, best first
 * (containerd's platformVector), and picks the index entry whose platform
 * comes earliest in that list; among equals the first in index order wins:
 *   amd64/vN -> amd64/vN, ..., amd64/v2, amd64 (== v1), then 386
 *   arm64    -> arm64/v8, then arm/v8, arm/v7, arm/v6, arm/v5
 *   arm/vN   -> arm/vN, ..., arm/v5 (never arm/v8 unless asked, never arm64)
 *   others   -> the exact architecture and variant
 * Entries marked as attestations (or with platform unknown/unknown) and
 * entries of media types other than manifests and indexes are never chosen.
 * An entry without a platform matches as a last resort, after every entry
 * with a matching platform (containerd's FilterPlatforms keeps them and
 * sorts them last).
 */
#include "fetch.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

static char *lower_dup(const char *s, size_t n)
{
	char *d = strndup(s, n);
	if (!d)
		abort();
	for (char *p = d; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return d;
}

static void set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = v ? imgfs_xstrdup(v) : NULL;
}

/* "7" -> "v7"; "" -> NULL */
static void variant_with_v(char **variant)
{
	char *v = *variant;
	if (!v)
		return;
	if (!*v) {
		set_str(variant, NULL);
	} else if (isdigit((unsigned char)v[0])) {
		char *n = imgfs_xasprintf("v%s", v);
		free(v);
		*variant = n;
	}
}

void imgfs_platform_normalize(struct imgfs_platform *p)
{
	const char *a;
	if (p->os) {
		char *l = lower_dup(p->os, strlen(p->os));
		free(p->os);
		p->os = l;
		if (!strcmp(p->os, "macos"))
			set_str(&p->os, "darwin");
	}
	if (p->variant) {
		char *l = lower_dup(p->variant, strlen(p->variant));
		free(p->variant);
		p->variant = l;
	}
	if (!p->architecture)
		return;
	{
		char *l = lower_dup(p->architecture, strlen(p->architecture));
		free(p->architecture);
		p->architecture = l;
	}
	a = p->architecture;
	if (!strcmp(a, "i386") || !strcmp(a, "i686")) {
		set_str(&p->architecture, "386");
		set_str(&p->variant, NULL);
	} else if (!strcmp(a, "x86_64") || !strcmp(a, "x86-64") || !strcmp(a, "amd64")) {
		set_str(&p->architecture, "amd64");
		variant_with_v(&p->variant);
		if (p->variant && !strcmp(p->variant, "v1"))
			set_str(&p->variant, NULL);
	} else if (!strcmp(a, "aarch64") || !strcmp(a, "arm64")) {
		set_str(&p->architecture, "arm64");
		variant_with_v(&p->variant); /* "8.0" -> "v8.0", "" -> NULL */
		if (!p->variant || !strcmp(p->variant, "v8") || !strcmp(p->variant, "v8.0"))
			set_str(&p->variant, "v8");
	} else if (!strcmp(a, "armhf")) {
		set_str(&p->architecture, "arm");
		set_str(&p->variant, "v7");
	} else if (!strcmp(a, "armel")) {
		set_str(&p->architecture, "arm");
		set_str(&p->variant, "v6");
	} else if (!strcmp(a, "arm")) {
		if (!p->variant || !*p->variant)
			set_str(&p->variant, "v7");
		else
			variant_with_v(&p->variant);
	}
}

int imgfs_platform_parse(const char *s, struct imgfs_platform *p, struct imgfs_error *err)
{
	const char *parts[4] = {0};
	size_t lens[3] = {0};
	int n = 0;
	const char *q = s;

	memset(p, 0, sizeof(*p));
	if (!s || !*s)
		return imgfs_error_set(err, EINVAL,
				       "invalid platform \"\": want os/arch[/variant]");
	while (n < 4) {
		const char *slash = strchr(q, '/');
		parts[n] = q;
		if (n < 3)
			lens[n] = slash ? (size_t)(slash - q) : strlen(q);
		n++;
		if (!slash)
			break;
		q = slash + 1;
	}
	if (n < 2 || n > 3)
		return imgfs_error_set(err, EINVAL,
				       "invalid platform \"%.200s\": want os/arch[/variant]", s);
	for (int i = 0; i < n; i++) {
		if (lens[i] == 0)
			return imgfs_error_set(err, EINVAL,
					       "invalid platform \"%.200s\": empty component", s);
		if (!isalnum((unsigned char)parts[i][0]))
			return imgfs_error_set(err, EINVAL,
					       "invalid platform \"%.200s\": \"%.*s\" must start "
					       "with a letter or digit",
					       s, (int)lens[i], parts[i]);
		for (size_t j = 0; j < lens[i]; j++) {
			char c = parts[i][j];
			if (!isascii((unsigned char)c) ||
			    !(isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.'))
				return imgfs_error_set(
				    err, EINVAL,
				    "invalid platform \"%.200s\": bad character in \"%.*s\"", s,
				    (int)lens[i], parts[i]);
		}
	}
	p->os = lower_dup(parts[0], lens[0]);
	p->architecture = lower_dup(parts[1], lens[1]);
	if (n == 3)
		p->variant = lower_dup(parts[2], lens[2]);
	imgfs_platform_normalize(p);
	return 0;
}

/* The arm variant of this CPU from /proc/cpuinfo ("CPU architecture: 7"). */
static char *cpuinfo_arm_variant(void)
{
	FILE *f = fopen("/proc/cpuinfo", "re");
	char line[256];
	char *v = NULL;
	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "CPU architecture", 16))
			continue;
		char *c = strchr(line, ':');
		if (!c)
			break;
		c++;
		while (*c == ' ' || *c == '\t')
			c++;
		/* "7", "8", or "AArch64" on some kernels */
		if (isdigit((unsigned char)*c))
			v = imgfs_xasprintf("v%c", *c);
		else if (!strncasecmp(c, "aarch64", 7))
			v = imgfs_xstrdup("v8");
		break;
	}
	fclose(f);
	return v;
}

void imgfs_platform_host(struct imgfs_platform *p)
{
	struct utsname u;
	memset(p, 0, sizeof(*p));
	p->os = imgfs_xstrdup("linux");
	if (uname(&u) < 0) {
		p->architecture = imgfs_xstrdup("amd64");
		return;
	}
	p->architecture = imgfs_xstrdup(u.machine);
	if (!strncmp(u.machine, "armv", 4)) {
		/* armv7l, armv6l, armv5tel */
		set_str(&p->architecture, "arm");
		p->variant = cpuinfo_arm_variant();
		if (!p->variant && isdigit((unsigned char)u.machine[4]))
			p->variant = imgfs_xasprintf("v%c", u.machine[4]);
		/* a 32-bit userland on a v8 CPU runs as arm/v8 only if asked: keep v7 */
		if (p->variant && strcmp(p->variant, "v5") && strcmp(p->variant, "v6") &&
		    strcmp(p->variant, "v7"))
			set_str(&p->variant, "v7");
	}
	imgfs_platform_normalize(p);
}

/* ---- selection ------------------------------------------------------------ */

struct cand {
	const char *arch;
	char variant[16]; /* "" for none */
};

#define MAX_CANDS 16

static int variant_level(const char *v)
{
	if (!v || v[0] != 'v' || !isdigit((unsigned char)v[1]))
		return -1;
	return atoi(v + 1);
}

static void add_cand(struct cand *c, size_t *n, const char *arch, const char *variant)
{
	if (*n >= MAX_CANDS)
		return;
	c[*n].arch = arch;
	snprintf(c[*n].variant, sizeof(c[*n].variant), "%s", variant ? variant : "");
	(*n)++;
}

static void arm_vector(struct cand *c, size_t *n, int from)
{
	for (int l = from; l >= 5; l--) {
		char v[16];
		snprintf(v, sizeof(v), "v%d", l);
		add_cand(c, n, "arm", v);
	}
}

/* The architectures/variants want can run, best first. */
static size_t platform_vector(const struct imgfs_platform *want, struct cand *c)
{
	size_t n = 0;
	const char *arch = want->architecture;
	int level = variant_level(want->variant);

	if (!strcmp(arch, "amd64")) {
		for (int l = level > 9 ? 9 : level; l >= 2; l--) {
			char v[16];
			snprintf(v, sizeof(v), "v%d", l);
			add_cand(c, &n, "amd64", v);
		}
		if (level < 0 && want->variant)
			add_cand(c, &n, "amd64", want->variant); /* an unknown variant: exact */
		add_cand(c, &n, "amd64", NULL);
		add_cand(c, &n, "386", NULL);
	} else if (!strcmp(arch, "arm64")) {
		add_cand(c, &n, "arm64", want->variant ? want->variant : "v8");
		arm_vector(c, &n, 8);
	} else if (!strcmp(arch, "arm") && level >= 5 && level <= 8) {
		arm_vector(c, &n, level);
	} else {
		add_cand(c, &n, arch, want->variant);
	}
	return n;
}

static bool known_manifest_type(const char *mt)
{
	return mt && (!strcmp(mt, IMGFS_MT_OCI_MANIFEST) || !strcmp(mt, IMGFS_MT_DOCKER_MANIFEST) ||
		      !strcmp(mt, IMGFS_MT_OCI_INDEX) || !strcmp(mt, IMGFS_MT_DOCKER_LIST));
}

static bool is_attestation(const struct imgfs_descriptor *d)
{
	if (d->is_attestation)
		return true;
	return d->has_platform && d->platform.os && d->platform.architecture &&
	       !strcmp(d->platform.os, "unknown") && !strcmp(d->platform.architecture, "unknown");
}

static bool str_eq(const char *a, const char *b)
{
	return !strcmp(a ? a : "", b ? b : "");
}

/* Rank of an entry's platform in the vector; -1 when it cannot run. */
static int rank_of(const struct imgfs_platform *want, const struct cand *c, size_t n,
		   const struct imgfs_platform *have)
{
	struct imgfs_platform p = {0};
	int rank = -1;
	p.os = have->os ? imgfs_xstrdup(have->os) : NULL;
	p.architecture = have->architecture ? imgfs_xstrdup(have->architecture) : NULL;
	p.variant = have->variant ? imgfs_xstrdup(have->variant) : NULL;
	imgfs_platform_normalize(&p);
	if (p.os && p.architecture && str_eq(p.os, want->os)) {
		for (size_t i = 0; i < n; i++) {
			if (!strcmp(p.architecture, c[i].arch) && str_eq(p.variant, c[i].variant)) {
				rank = (int)i;
				break;
			}
		}
	}
	imgfs_platform_destroy(&p);
	return rank;
}

static int no_match(const struct imgfs_index *idx, const struct imgfs_platform *want,
		    struct imgfs_error *err)
{
	char offered[1024] = "";
	size_t len = 0;
	_cleanup_free_ char *ws = imgfs_platform_string(want);

	for (size_t i = 0; i < idx->n_manifests; i++) {
		const struct imgfs_descriptor *d = &idx->manifests[i];
		_cleanup_free_ char *ps = NULL;
		if (!d->has_platform || is_attestation(d) || !known_manifest_type(d->media_type))
			continue;
		ps = imgfs_platform_string(&d->platform);
		if (!ps || strstr(offered, ps))
			continue;
		if (len + strlen(ps) + 8 >= sizeof(offered)) {
			snprintf(offered + len, sizeof(offered) - len, "%s...", len ? ", " : "");
			break;
		}
		len += (size_t)snprintf(offered + len, sizeof(offered) - len, "%s%s",
					len ? ", " : "", ps);
	}
	return imgfs_error_set(err, ENOENT, "no manifest for platform %s in index (offered: %s)",
			       ws ? ws : "?", len ? offered : "none");
}

int imgfs_platform_select(const struct imgfs_index *idx, const struct imgfs_platform *want,
			  size_t *chosen, struct imgfs_error *err)
{
	struct imgfs_platform w = {0};
	struct cand c[MAX_CANDS];
	size_t n;
	int best = -1;
	size_t best_i = 0;
	bool have_unplatformed = false;
	size_t unplatformed_i = 0;

	if (!want || !want->os || !want->architecture)
		return imgfs_error_set(err, EINVAL, "platform to select has no os or architecture");
	w.os = imgfs_xstrdup(want->os);
	w.architecture = imgfs_xstrdup(want->architecture);
	w.variant = want->variant ? imgfs_xstrdup(want->variant) : NULL;
	imgfs_platform_normalize(&w);
	n = platform_vector(&w, c);

	for (size_t i = 0; i < idx->n_manifests; i++) {
		const struct imgfs_descriptor *d = &idx->manifests[i];
		int r;
		if (!known_manifest_type(d->media_type) || is_attestation(d))
			continue;
		if (!d->has_platform) {
			if (!have_unplatformed) {
				have_unplatformed = true;
				unplatformed_i = i;
			}
			continue;
		}
		r = rank_of(&w, c, n, &d->platform);
		if (r >= 0 && (best < 0 || r < best)) {
			best = r;
			best_i = i;
		}
	}
	if (best >= 0) {
		*chosen = best_i;
	} else if (have_unplatformed) {
		*chosen = unplatformed_i;
	} else {
		no_match(idx, &w, err);
		imgfs_platform_destroy(&w);
		return -1;
	}
	imgfs_platform_destroy(&w);
	return 0;
}
