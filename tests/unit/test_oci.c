/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI / Docker model: good documents in both spellings parse to the
 * right fields; every fixture in tests/data/bad-manifests/ (X.json with its
 * X.expect: parser, optional content-type, errno name, error substring)
 * fails with that errno and message.
 */
#include "store/store.h"
#include "test.h"

#include <dirent.h>

static const char *data_dir(void)
{
	const char *d = getenv("IMGFS_TEST_DATA");
	return d ? d : "tests/data";
}

static char *load(const char *rel, size_t *len)
{
	char *path = imgfs_xasprintf("%s/%s", data_dir(), rel);
	struct imgfs_error err;
	char *buf = NULL;

	if (imgfs_read_file(path, 16u << 20, &buf, len, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		buf = NULL;
	}
	free(path);
	return buf;
}

#define HA "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HB "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define HC "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

static void classify(const char *rel, const char *ct, int want_kind, const char *want_mt)
{
	size_t len;
	char *buf = load(rel, &len), *mt = NULL;
	enum imgfs_doc_kind kind = 0;
	struct imgfs_error err = {0};

	CHECK(buf != NULL);
	if (!buf)
		return;
	CHECK(imgfs_oci_classify(buf, len, ct, &kind, &mt, &err) == 0);
	if (err.code)
		fprintf(stderr, "  %s: %s\n", rel, err.msg);
	CHECK((int)kind == want_kind);
	CHECK_STR(mt, want_mt);
	free(mt);
	free(buf);
}

static void test_classify_good(void)
{
	classify("manifests/oci-manifest.json", NULL, IMGFS_DOC_MANIFEST, IMGFS_MT_OCI_MANIFEST);
	/* Parameters and case in Content-Type are ignored. */
	classify("manifests/oci-manifest.json",
		 "Application/VND.oci.image.manifest.v1+json; charset=utf-8", IMGFS_DOC_MANIFEST,
		 IMGFS_MT_OCI_MANIFEST);
	/* A generic Content-Type says nothing. */
	classify("manifests/oci-manifest.json", "application/json", IMGFS_DOC_MANIFEST,
		 IMGFS_MT_OCI_MANIFEST);
	classify("manifests/docker-manifest.json", IMGFS_MT_DOCKER_MANIFEST, IMGFS_DOC_MANIFEST,
		 IMGFS_MT_DOCKER_MANIFEST);
	classify("manifests/oci-index.json", IMGFS_MT_OCI_INDEX, IMGFS_DOC_INDEX,
		 IMGFS_MT_OCI_INDEX);
	classify("manifests/docker-list.json", NULL, IMGFS_DOC_INDEX, IMGFS_MT_DOCKER_LIST);
}

static void classify_str(const char *doc, const char *ct, int want_kind, const char *want_mt)
{
	enum imgfs_doc_kind kind = 0;
	struct imgfs_error err = {0};
	char *mt = NULL;

	CHECK(imgfs_oci_classify(doc, strlen(doc), ct, &kind, &mt, &err) == 0);
	if (err.code)
		fprintf(stderr, "  %s: %s\n", doc, err.msg);
	CHECK((int)kind == want_kind);
	CHECK_STR(mt, want_mt);
	free(mt);
}

static void test_classify_missing_mediatype(void)
{
	/* No mediaType: the shape decides when unambiguous, or Content-Type. */
	classify_str("{\"schemaVersion\":2,\"manifests\":[]}", NULL, IMGFS_DOC_INDEX,
		     IMGFS_MT_OCI_INDEX);
	classify_str("{\"schemaVersion\":2,\"config\":{},\"layers\":[]}", NULL, IMGFS_DOC_MANIFEST,
		     IMGFS_MT_OCI_MANIFEST);
	classify_str("{\"schemaVersion\":2,\"manifests\":[]}", IMGFS_MT_DOCKER_LIST,
		     IMGFS_DOC_INDEX, IMGFS_MT_DOCKER_LIST);
	classify_str("  {\"schemaVersion\":2,\"layers\":[]}\n\n", NULL, IMGFS_DOC_MANIFEST,
		     IMGFS_MT_OCI_MANIFEST);
}

static void test_parse_oci_manifest(void)
{
	size_t len;
	char *buf = load("manifests/oci-manifest.json", &len);
	struct imgfs_manifest *m = NULL;
	struct imgfs_error err = {0};

	CHECK(buf && imgfs_oci_parse_manifest(buf, len, &m, &err) == 0);
	if (!m) {
		fprintf(stderr, "  %s\n", err.msg);
		free(buf);
		return;
	}
	CHECK_STR(m->media_type, IMGFS_MT_OCI_MANIFEST);
	CHECK_STR(m->config.media_type, IMGFS_MT_OCI_CONFIG);
	CHECK_STR(m->config.digest.str, HA);
	CHECK(m->config.size == 1234);
	CHECK(m->n_layers == 3);
	CHECK_STR(m->layers[0].media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
	CHECK_STR(m->layers[0].digest.str, HB);
	CHECK(m->layers[0].size == 5678);
	CHECK_STR(m->layers[1].media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
	CHECK_STR(m->layers[1].digest.hex, HC + 7);
	CHECK(m->layers[1].size == 42);
	CHECK_STR(m->layers[2].media_type, "application/vnd.oci.image.layer.v1.tar");
	CHECK(m->layers[2].size == 0);
	CHECK(!m->layers[0].has_platform);
	imgfs_manifest_free(m);
	free(buf);
}

static void test_parse_docker_manifest(void)
{
	size_t len;
	char *buf = load("manifests/docker-manifest.json", &len);
	struct imgfs_manifest *m = NULL;
	struct imgfs_error err = {0};

	CHECK(buf && imgfs_oci_parse_manifest(buf, len, &m, &err) == 0);
	if (!m) {
		fprintf(stderr, "  %s\n", err.msg);
		free(buf);
		return;
	}
	CHECK_STR(m->media_type, IMGFS_MT_DOCKER_MANIFEST);
	CHECK_STR(m->config.media_type, IMGFS_MT_DOCKER_CONFIG);
	CHECK(m->config.size == 1500);
	CHECK(m->n_layers == 1);
	CHECK_STR(m->layers[0].media_type, "application/vnd.docker.image.rootfs.diff.tar.gzip");
	CHECK(m->layers[0].size == 3000000);
	imgfs_manifest_free(m);
	free(buf);
}

static void test_parse_manifest_limits(void)
{
	/* The largest size allowed (INT64_MAX) parses; zero layers is an image too. */
	const char *doc = "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" IMGFS_MT_OCI_CONFIG
			  "\",\"digest\":\"" HA "\",\"size\":9223372036854775807},\"layers\":[]}";
	struct imgfs_manifest *m = NULL;
	struct imgfs_error err = {0};

	CHECK(imgfs_oci_parse_manifest(doc, strlen(doc), &m, &err) == 0);
	if (m) {
		CHECK(m->config.size == (uint64_t)INT64_MAX);
		CHECK(m->n_layers == 0);
		CHECK_STR(m->media_type, IMGFS_MT_OCI_MANIFEST);
		imgfs_manifest_free(m);
	}
	/* Over the document cap: refused before parsing. */
	size_t big = IMGFS_MAX_MANIFEST_SIZE + 1;
	char *buf = imgfs_xmalloc(big);
	memset(buf, ' ', big);
	buf[0] = '{';
	buf[big - 1] = '}';
	m = NULL;
	CHECK(imgfs_oci_parse_manifest(buf, big, &m, &err) == -1 && err.code == EIO);
	CHECK(strstr(err.msg, "exceeds the limit") != NULL);
	free(buf);
}

static void test_parse_index(void)
{
	size_t len;
	char *buf = load("manifests/oci-index.json", &len);
	struct imgfs_index *idx = NULL;
	struct imgfs_error err = {0};
	char *p;

	CHECK(buf && imgfs_oci_parse_index(buf, len, &idx, &err) == 0);
	if (!idx) {
		fprintf(stderr, "  %s\n", err.msg);
		free(buf);
		return;
	}
	CHECK_STR(idx->media_type, IMGFS_MT_OCI_INDEX);
	CHECK(idx->n_manifests == 6);
	CHECK(idx->manifests[0].has_platform);
	p = imgfs_platform_string(&idx->manifests[0].platform);
	CHECK_STR(p, "linux/amd64");
	free(p);
	CHECK_STR(idx->manifests[0].ref_name, "v1");
	CHECK(!idx->manifests[0].is_attestation);
	p = imgfs_platform_string(&idx->manifests[1].platform);
	CHECK_STR(p, "linux/arm64/v8");
	free(p);
	CHECK(idx->manifests[1].ref_name == NULL);
	CHECK_STR(idx->manifests[2].platform.os, "windows");
	CHECK_STR(idx->manifests[2].platform.os_version, "10.0.17763.1");
	CHECK(idx->manifests[2].platform.variant == NULL);
	CHECK(idx->manifests[3].is_attestation);
	CHECK_STR(idx->manifests[3].platform.os, "unknown");
	/* Unknown media types are kept for the caller to skip. */
	CHECK_STR(idx->manifests[4].media_type, "application/vnd.in-toto+json");
	CHECK(!idx->manifests[4].has_platform);
	/* aarch64 is normalised. */
	CHECK_STR(idx->manifests[5].platform.architecture, "arm64");
	imgfs_index_free(idx);
	free(buf);

	buf = load("manifests/docker-list.json", &len);
	idx = NULL;
	CHECK(buf && imgfs_oci_parse_index(buf, len, &idx, &err) == 0);
	if (idx) {
		CHECK_STR(idx->media_type, IMGFS_MT_DOCKER_LIST);
		CHECK(idx->n_manifests == 1);
		p = imgfs_platform_string(&idx->manifests[0].platform);
		CHECK_STR(p, "linux/arm/v7");
		free(p);
		CHECK_STR(idx->manifests[0].media_type, IMGFS_MT_DOCKER_MANIFEST);
		imgfs_index_free(idx);
	}
	free(buf);
}

static void test_parse_empty_index(void)
{
	/* Valid per the spec; the caller reports "no manifests". */
	const char *doc =
	    "{\"schemaVersion\":2,\"mediaType\":\"" IMGFS_MT_OCI_INDEX "\",\"manifests\":[]}";
	struct imgfs_index *idx = NULL;
	struct imgfs_error err = {0};

	CHECK(imgfs_oci_parse_index(doc, strlen(doc), &idx, &err) == 0);
	CHECK(idx && idx->n_manifests == 0);
	imgfs_index_free(idx);
}

static void test_parse_large_index(void)
{
	/* 15,000 entries (about 3.3 MB, under the cap) parse in linear time. */
	const size_t n = 15000;
	size_t cap = n * 300 + 200, len = 0;
	char *buf = imgfs_xmalloc(cap);
	struct imgfs_index *idx = NULL;
	struct imgfs_error err = {0};
	double t0;

	len += (size_t)snprintf(buf + len, cap - len, "{\"schemaVersion\":2,\"manifests\":[");
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(
		    buf + len, cap - len,
		    "%s{\"mediaType\":\"%s\",\"digest\":\"sha256:%064zx\",\"size\":%zu,"
		    "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}",
		    i ? "," : "", IMGFS_MT_OCI_MANIFEST, i, i);
	len += (size_t)snprintf(buf + len, cap - len, "]}");
	CHECK(len < IMGFS_MAX_MANIFEST_SIZE);
	t0 = imgfs_now();
	CHECK(imgfs_oci_parse_index(buf, len, &idx, &err) == 0);
	if (err.code)
		fprintf(stderr, "  %s\n", err.msg);
	CHECK(imgfs_now() - t0 < 5.0);
	CHECK(idx && idx->n_manifests == n);
	if (idx) {
		CHECK(idx->manifests[n - 1].size == n - 1);
		CHECK(!strcmp(idx->manifests[12345].digest.hex + 60, "3039"));
	}
	imgfs_index_free(idx);
	free(buf);
}

static void test_parse_config(void)
{
	size_t len;
	char *buf = load("manifests/config.json", &len);
	struct imgfs_config *c = NULL;
	struct imgfs_error err = {0};
	char *p;

	CHECK(buf && imgfs_oci_parse_config(buf, len, &c, &err) == 0);
	if (c) {
		p = imgfs_platform_string(&c->platform);
		CHECK_STR(p, "linux/amd64");
		free(p);
		CHECK_STR(c->created, "2023-08-07T19:20:20.894140623Z");
		CHECK(c->n_diff_ids == 2);
		CHECK_STR(c->diff_ids[0].str, HA);
		CHECK_STR(c->diff_ids[1].str, HB);
		imgfs_config_free(c);
	}
	free(buf);
	buf = load("manifests/config-arm.json", &len);
	c = NULL;
	CHECK(buf && imgfs_oci_parse_config(buf, len, &c, &err) == 0);
	if (c) {
		p = imgfs_platform_string(&c->platform);
		CHECK_STR(p, "linux/arm/v7");
		free(p);
		CHECK(c->created == NULL);
		CHECK(c->n_diff_ids == 0);
		imgfs_config_free(c);
	}
	free(buf);
}

static void test_count_mismatch_is_callers_job(void)
{
	/* 3 layers in the manifest, 2 diff_ids in the config: both parse;
	 * comparing the counts is the puller's check. */
	size_t l1, l2;
	char *mb = load("manifests/oci-manifest.json", &l1),
	     *cb = load("manifests/config.json", &l2);
	struct imgfs_manifest *m = NULL;
	struct imgfs_config *c = NULL;
	struct imgfs_error err;

	CHECK(mb && cb);
	CHECK(imgfs_oci_parse_manifest(mb, l1, &m, &err) == 0);
	CHECK(imgfs_oci_parse_config(cb, l2, &c, &err) == 0);
	CHECK(m && c && m->n_layers != c->n_diff_ids);
	imgfs_manifest_free(m);
	imgfs_config_free(c);
	free(mb);
	free(cb);
}

static void test_platform_string(void)
{
	struct imgfs_platform p = {.os = "linux", .architecture = "arm64", .variant = NULL};
	char *s = imgfs_platform_string(&p);
	CHECK_STR(s, "linux/arm64");
	free(s);
	p.variant = "v8";
	s = imgfs_platform_string(&p);
	CHECK_STR(s, "linux/arm64/v8");
	free(s);
}

/* ---- should-fail fixtures ------------------------------------------------ */

struct expect {
	char parser[32], ct[256], code[32], error[512];
};

static int read_expect(const char *rel, struct expect *e)
{
	size_t len;
	char *buf = load(rel, &len), *line, *save = NULL;

	memset(e, 0, sizeof(*e));
	if (!buf)
		return -1;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *v = strstr(line, ": ");
		if (!v)
			continue;
		*v = '\0';
		v += 2;
		if (!strcmp(line, "parser"))
			snprintf(e->parser, sizeof(e->parser), "%s", v);
		else if (!strcmp(line, "content-type"))
			snprintf(e->ct, sizeof(e->ct), "%s", v);
		else if (!strcmp(line, "code"))
			snprintf(e->code, sizeof(e->code), "%s", v);
		else if (!strcmp(line, "error"))
			snprintf(e->error, sizeof(e->error), "%s", v);
	}
	free(buf);
	return e->parser[0] && e->code[0] && e->error[0] ? 0 : -1;
}

static int code_of(const char *name)
{
	static const struct {
		const char *n;
		int c;
	} codes[] = {{"EIO", EIO}, {"EINVAL", EINVAL}, {"ENOTSUP", ENOTSUP}};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (!strcmp(codes[i].n, name))
			return codes[i].c;
	return -1;
}

static int run_parser(const struct expect *e, const char *buf, size_t len, struct imgfs_error *err)
{
	if (!strcmp(e->parser, "classify")) {
		enum imgfs_doc_kind kind;
		char *mt = NULL;
		int r = imgfs_oci_classify(buf, len, e->ct[0] ? e->ct : NULL, &kind, &mt, err);
		free(mt);
		return r;
	}
	if (!strcmp(e->parser, "manifest")) {
		struct imgfs_manifest *m = NULL;
		int r = imgfs_oci_parse_manifest(buf, len, &m, err);
		imgfs_manifest_free(m);
		return r;
	}
	if (!strcmp(e->parser, "index")) {
		struct imgfs_index *i = NULL;
		int r = imgfs_oci_parse_index(buf, len, &i, err);
		imgfs_index_free(i);
		return r;
	}
	if (!strcmp(e->parser, "config")) {
		struct imgfs_config *c = NULL;
		int r = imgfs_oci_parse_config(buf, len, &c, err);
		imgfs_config_free(c);
		return r;
	}
	return 0;
}

static void bad_case(const char *name)
{
	char rel[512];
	struct expect e;
	struct imgfs_error err = {0};
	size_t len;
	char *buf;
	int r;

	snprintf(rel, sizeof(rel), "bad-manifests/%.*s.expect", (int)(strlen(name) - 5), name);
	CHECK(read_expect(rel, &e) == 0);
	snprintf(rel, sizeof(rel), "bad-manifests/%s", name);
	buf = load(rel, &len);
	CHECK(buf != NULL);
	if (!buf)
		return;
	r = run_parser(&e, buf, len, &err);
	if (r != -1 || err.code != code_of(e.code) || !strstr(err.msg, e.error)) {
		fprintf(stderr,
			"bad-manifests/%s (%s): r=%d code=%d (want %s) msg \"%s\" (want \"%s\")\n",
			name, e.parser, r, err.code, e.code, err.msg, e.error);
		test_failures++;
	}
	free(buf);
}

static void test_bad_fixtures(void)
{
	char *dir = imgfs_xasprintf("%s/bad-manifests", data_dir());
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	CHECK(d != NULL);
	while (d && (de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l > 5 && !strcmp(de->d_name + l - 5, ".json")) {
			bad_case(de->d_name);
			n++;
		}
	}
	if (d)
		closedir(d);
	free(dir);
	CHECK(n >= 50);
}

int main(void)
{
	RUN(test_classify_good);
	RUN(test_classify_missing_mediatype);
	RUN(test_parse_oci_manifest);
	RUN(test_parse_docker_manifest);
	RUN(test_parse_manifest_limits);
	RUN(test_parse_index);
	RUN(test_parse_empty_index);
	RUN(test_parse_large_index);
	RUN(test_parse_config);
	RUN(test_count_mismatch_is_callers_job);
	RUN(test_platform_string);
	RUN(test_bad_fixtures);
	TEST_DONE();
}
