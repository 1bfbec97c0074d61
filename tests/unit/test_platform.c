/* SPDX-License-Identifier: Apache-2.0 */
/* Platform parsing, normalisation and selection from an index (bad-inputs.md M6). */
#include "fetch/fetch.h"
#include "test.h"

#include <stdlib.h>

/* ---- normalisation -------------------------------------------------------- */

static const struct {
	const char *in, *out;
} norms[] = {
    {"linux/amd64", "linux/amd64"},	   {"linux/x86_64", "linux/amd64"},
    {"linux/x86-64", "linux/amd64"},	   {"Linux/AMD64", "linux/amd64"},
    {"linux/amd64/v1", "linux/amd64"},	   {"linux/amd64/v3", "linux/amd64/v3"},
    {"linux/i386", "linux/386"},	   {"linux/386", "linux/386"},
    {"linux/aarch64", "linux/arm64/v8"},   {"linux/arm64", "linux/arm64/v8"},
    {"linux/arm64/v8", "linux/arm64/v8"},  {"linux/arm64/8", "linux/arm64/v8"},
    {"linux/arm64/8.0", "linux/arm64/v8"}, {"linux/arm64/v8.0", "linux/arm64/v8"},
    {"linux/armhf", "linux/arm/v7"},	   {"linux/armel", "linux/arm/v6"},
    {"linux/arm", "linux/arm/v7"},	   {"linux/arm/7", "linux/arm/v7"},
    {"linux/arm/v6", "linux/arm/v6"},	   {"linux/arm/5", "linux/arm/v5"},
    {"linux/s390x", "linux/s390x"},	   {"linux/ppc64le", "linux/ppc64le"},
    {"windows/amd64", "windows/amd64"},	   {"macos/arm64", "darwin/arm64/v8"},
};

static void test_normalize(void)
{
	for (size_t i = 0; i < sizeof(norms) / sizeof(norms[0]); i++) {
		struct imgfs_platform p;
		struct imgfs_error err;
		char *s;
		test_current = norms[i].in;
		if (imgfs_platform_parse(norms[i].in, &p, &err) < 0) {
			fprintf(stderr, "%s: %s\n", norms[i].in, err.msg);
			test_failures++;
			continue;
		}
		s = imgfs_platform_string(&p);
		CHECK_STR(s, norms[i].out);
		free(s);
		imgfs_platform_destroy(&p);
	}
}

static void test_parse_errors(void)
{
	const char *bad[] = {
	    "",		 "linux",	 "linux/",	 "/amd64",	"linux/amd64/v7/x",
	    "linux//v7", "linux/am d64", "linux/amd64/", "linux/../etc"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct imgfs_platform p;
		struct imgfs_error err;
		test_current = bad[i];
		CHECK(imgfs_platform_parse(bad[i], &p, &err) < 0);
		CHECK(err.code == EINVAL);
		CHECK(strstr(err.msg, "invalid platform") != NULL);
	}
}

static void test_host(void)
{
	struct imgfs_platform p;
	imgfs_platform_host(&p);
	CHECK_STR(p.os, "linux");
	CHECK(p.architecture && *p.architecture);
#if defined(__x86_64__)
	CHECK_STR(p.architecture, "amd64");
	CHECK(p.variant == NULL);
#elif defined(__aarch64__)
	CHECK_STR(p.architecture, "arm64");
	CHECK_STR(p.variant, "v8");
#endif
	imgfs_platform_destroy(&p);
}

/* ---- selection ------------------------------------------------------------------- */

/*
 * Build an index from entries: "os/arch[/variant]", "-" (no platform),
 * "att" (attestation: unknown/unknown with the docker annotation),
 * "unk:os/arch" (an entry of an unknown media type). Entry i gets digest
 * sha256:<i repeated>, so the chosen index can be checked.
 */
static struct imgfs_index *mkindex(const char *const *entries, size_t n)
{
	char *json = imgfs_xstrdup("{\"schemaVersion\":2,\"mediaType\":\"" IMGFS_MT_OCI_INDEX
				   "\",\"manifests\":[");
	struct imgfs_index *idx = NULL;
	struct imgfs_error err;
	for (size_t i = 0; i < n; i++) {
		const char *e = entries[i];
		const char *mt = IMGFS_MT_OCI_MANIFEST;
		char plat[256] = "", ann[200] = "";
		char hex[65];
		char *next;
		for (int k = 0; k < 64; k++)
			hex[k] = "0123456789abcdef"[i % 16];
		hex[64] = '\0';
		if (!strncmp(e, "unk:", 4)) {
			mt = "application/vnd.example.unknown+json";
			e += 4;
		}
		if (!strcmp(e, "att")) {
			snprintf(plat, sizeof(plat),
				 ",\"platform\":{\"os\":\"unknown\",\"architecture\":\"unknown\"}");
			snprintf(ann, sizeof(ann),
				 ",\"annotations\":{\"vnd.docker.reference.type\":\"attestation-"
				 "manifest\"}");
		} else if (strcmp(e, "-")) {
			char os[64], arch[64], var[64] = "";
			if (sscanf(e, "%63[^/]/%63[^/]/%63s", os, arch, var) < 2)
				abort();
			snprintf(plat, sizeof(plat),
				 ",\"platform\":{\"os\":\"%s\",\"architecture\":\"%s\"%s%s%s}", os,
				 arch, var[0] ? ",\"variant\":\"" : "", var, var[0] ? "\"" : "");
		}
		next = imgfs_xasprintf(
		    "%s%s{\"mediaType\":\"%s\",\"digest\":\"sha256:%s\",\"size\":100%s%s}", json,
		    i ? "," : "", mt, hex, plat, ann);
		free(json);
		json = next;
	}
	{
		char *next = imgfs_xasprintf("%s]}", json);
		free(json);
		json = next;
	}
	if (imgfs_oci_parse_index(json, strlen(json), &idx, &err) < 0) {
		fprintf(stderr, "mkindex: %s\n%s\n", err.msg, json);
		abort();
	}
	free(json);
	return idx;
}

/* Select want from entries; return the chosen position or -1 (err filled). */
static int pick(const char *want, const char *const *entries, size_t n, struct imgfs_error *err)
{
	struct imgfs_index *idx = mkindex(entries, n);
	struct imgfs_platform p;
	size_t chosen = (size_t)-1;
	int rc;
	if (imgfs_platform_parse(want, &p, err) < 0)
		abort();
	rc = imgfs_platform_select(idx, &p, &chosen, err);
	imgfs_platform_destroy(&p);
	imgfs_index_free(idx);
	return rc < 0 ? -1 : (int)chosen;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* The M6 index, in an order that puts fallbacks before the best match. */
static const char *const m6[] = {
    "att",	      /* 0 */
    "linux/386",      /* 1 */
    "linux/arm/v5",   /* 2 */
    "linux/arm/v6",   /* 3 */
    "linux/amd64/v3", /* 4 */
    "linux/arm64",    /* 5 */
    "linux/arm/v7",   /* 6 */
    "linux/amd64",    /* 7 */
    "windows/amd64",  /* 8 */
    "linux/arm64/v8", /* 9 */
    "linux/arm/v8",   /* 10 */
};

static void test_select_matrix(void)
{
	struct imgfs_error err;
	CHECK(pick("linux/amd64", m6, N(m6), &err) == 7);
	CHECK(pick("linux/x86_64", m6, N(m6), &err) == 7);
	CHECK(pick("linux/amd64/v3", m6, N(m6), &err) == 4);
	/* an amd64/v2 host cannot run v3: it takes plain amd64 */
	CHECK(pick("linux/amd64/v2", m6, N(m6), &err) == 7);
	CHECK(pick("linux/386", m6, N(m6), &err) == 1);
	CHECK(pick("linux/arm/v7", m6, N(m6), &err) == 6);
	CHECK(pick("linux/arm", m6, N(m6), &err) == 6);
	CHECK(pick("linux/arm/v6", m6, N(m6), &err) == 3);
	CHECK(pick("linux/arm/v5", m6, N(m6), &err) == 2);
	/* arm64 and arm64/v8 are the same: the first of the two in index order */
	CHECK(pick("linux/arm64", m6, N(m6), &err) == 5);
	CHECK(pick("linux/arm64/v8", m6, N(m6), &err) == 5);
	CHECK(pick("linux/aarch64", m6, N(m6), &err) == 5);
	CHECK(pick("windows/amd64", m6, N(m6), &err) == 8);
}

static void test_select_fallbacks(void)
{
	struct imgfs_error err;
	const char *arm_v5_v6[] = {"linux/arm/v5", "linux/arm/v6", "linux/arm64/v8",
				   "linux/arm/v8"};
	const char *arm_v5[] = {"linux/arm64", "linux/arm/v5"};
	const char *only_v8[] = {"linux/arm64/v8", "linux/arm/v8", "linux/amd64"};
	const char *amd_levels[] = {"linux/amd64/v2", "linux/386", "linux/amd64/v4"};
	const char *amd_v1[] = {"linux/386", "linux/amd64/v1"};
	const char *amd_386[] = {"linux/arm64", "linux/386"};
	const char *arm64_arm[] = {"linux/arm/v6", "linux/arm/v7", "linux/amd64"};

	/* arm/v7 prefers v7 > v6 > v5 and never v8 */
	CHECK(pick("linux/arm/v7", arm_v5_v6, N(arm_v5_v6), &err) == 1);
	CHECK(pick("linux/arm/v7", arm_v5, N(arm_v5), &err) == 1);
	CHECK(pick("linux/arm/v6", arm_v5_v6, N(arm_v5_v6), &err) == 1);
	CHECK(pick("linux/arm/v7", only_v8, N(only_v8), &err) == -1);
	CHECK(err.code == ENOENT);
	/* amd64 vN accepts lower levels, never higher */
	CHECK(pick("linux/amd64/v3", amd_levels, N(amd_levels), &err) == 0);
	CHECK(pick("linux/amd64/v4", amd_levels, N(amd_levels), &err) == 2);
	CHECK(pick("linux/amd64", amd_levels, N(amd_levels), &err) == 1);
	/* a plain amd64 host accepts "" and v1 (before 386) */
	CHECK(pick("linux/amd64", amd_v1, N(amd_v1), &err) == 1);
	CHECK(pick("linux/amd64", amd_386, N(amd_386), &err) == 1);
	/* arm64 may fall back to 32-bit arm, best variant first */
	CHECK(pick("linux/arm64", arm64_arm, N(arm64_arm), &err) == 1);
}

static void test_select_skips(void)
{
	struct imgfs_error err;
	const char *att_first[] = {"att", "linux/amd64", "att"};
	const char *unknown_mt[] = {"unk:linux/amd64", "linux/amd64"};
	const char *only_att[] = {"att", "unk:linux/amd64"};
	const char *no_platform[] = {"-", "linux/amd64"};
	const char *no_platform_only[] = {"linux/arm64", "-"};
	const char *dupes[] = {"linux/arm64", "linux/amd64", "linux/amd64"};

	CHECK(pick("linux/amd64", att_first, N(att_first), &err) == 1);
	/* unknown/unknown attestation is never chosen, even when asked for */
	CHECK(pick("unknown/unknown", att_first, N(att_first), &err) == -1);
	CHECK(pick("linux/amd64", unknown_mt, N(unknown_mt), &err) == 1);
	CHECK(pick("linux/amd64", only_att, N(only_att), &err) == -1);
	CHECK(err.code == ENOENT);
	CHECK_STR(err.msg, "no manifest for platform linux/amd64 in index (offered: none)");
	/* an entry without a platform is a last resort */
	CHECK(pick("linux/amd64", no_platform, N(no_platform), &err) == 1);
	CHECK(pick("linux/amd64", no_platform_only, N(no_platform_only), &err) == 1);
	/* first in index order among equals */
	CHECK(pick("linux/amd64", dupes, N(dupes), &err) == 1);
}

static void test_select_message(void)
{
	struct imgfs_error err;
	const char *two[] = {"att", "linux/amd64", "linux/arm64/v8", "linux/amd64"};
	const char *empty[] = {"unk:linux/s390x"};
	CHECK(pick("linux/s390x", two, N(two), &err) == -1);
	CHECK(err.code == ENOENT);
	CHECK_STR(
	    err.msg,
	    "no manifest for platform linux/s390x in index (offered: linux/amd64, linux/arm64/v8)");
	CHECK(pick("linux/s390x", empty, 0, &err) == -1);
	CHECK_STR(err.msg, "no manifest for platform linux/s390x in index (offered: none)");
}

int main(void)
{
	RUN(test_normalize);
	RUN(test_parse_errors);
	RUN(test_host);
	RUN(test_select_matrix);
	RUN(test_select_fallbacks);
	RUN(test_select_skips);
	RUN(test_select_message);
	TEST_DONE();
}
