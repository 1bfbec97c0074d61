/* SPDX-License-Identifier: Apache-2.0 */
/* Reference parsing and normalisation: bad-inputs.md M1 and issue 2's cases. */
#include "fetch/fetch.h"
#include "test.h"

#include <stdlib.h>

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HEX128 HEX64 HEX64

struct good {
	const char *in;
	const char *canonical;		 /* imgfs_ref_string */
	const char *store;		 /* imgfs_ref_store_name */
	const char *familiar;		 /* imgfs_ref_familiar */
	const char *api_host;		 /* imgfs_ref_api_host */
	const char *domain, *path, *tag; /* tag NULL when absent */
};

static const struct good goods[] = {
    {"alpine", "docker.io/library/alpine:latest", "docker.io/library/alpine:latest",
     "alpine:latest", "registry-1.docker.io", "docker.io", "library/alpine", "latest"},
    {"alpine:3.19", "docker.io/library/alpine:3.19", "docker.io/library/alpine:3.19", "alpine:3.19",
     "registry-1.docker.io", "docker.io", "library/alpine", "3.19"},
    {"library/alpine", "docker.io/library/alpine:latest", "docker.io/library/alpine:latest",
     "alpine:latest", "registry-1.docker.io", "docker.io", "library/alpine", "latest"},
    {"docker.io/alpine", "docker.io/library/alpine:latest", "docker.io/library/alpine:latest",
     "alpine:latest", "registry-1.docker.io", "docker.io", "library/alpine", "latest"},
    {"index.docker.io/alpine", "docker.io/library/alpine:latest", "docker.io/library/alpine:latest",
     "alpine:latest", "registry-1.docker.io", "docker.io", "library/alpine", "latest"},
    {"docker.io/foo/bar", "docker.io/foo/bar:latest", "docker.io/foo/bar:latest", "foo/bar:latest",
     "registry-1.docker.io", "docker.io", "foo/bar", "latest"},
    {"user/app:v2", "docker.io/user/app:v2", "docker.io/user/app:v2", "user/app:v2",
     "registry-1.docker.io", "docker.io", "user/app", "v2"},
    {"docker.io/library/foo/bar", "docker.io/library/foo/bar:latest",
     "docker.io/library/foo/bar:latest", "library/foo/bar:latest", "registry-1.docker.io",
     "docker.io", "library/foo/bar", "latest"},
    {"example.com/ubuntu", "example.com/ubuntu:latest", "example.com/ubuntu:latest",
     "example.com/ubuntu:latest", "example.com", "example.com", "ubuntu", "latest"},
    {"localhost/foo", "localhost/foo:latest", "localhost/foo:latest", "localhost/foo:latest",
     "localhost", "localhost", "foo", "latest"},
    {"localhost:5000/foo", "localhost:5000/foo:latest", "localhost:5000/foo:latest",
     "localhost:5000/foo:latest", "localhost:5000", "localhost:5000", "foo", "latest"},
    {"foo:5000/bar", "foo:5000/bar:latest", "foo:5000/bar:latest", "foo:5000/bar:latest",
     "foo:5000", "foo:5000", "bar", "latest"},
    {"[::1]:5000/foo", "[::1]:5000/foo:latest", "[::1]:5000/foo:latest", "[::1]:5000/foo:latest",
     "[::1]:5000", "[::1]:5000", "foo", "latest"},
    {"[2001:db8::1]/foo:1", "[2001:db8::1]/foo:1", "[2001:db8::1]/foo:1", "[2001:db8::1]/foo:1",
     "[2001:db8::1]", "[2001:db8::1]", "foo", "1"},
    {"Foo/bar", "Foo/bar:latest", "Foo/bar:latest", "Foo/bar:latest", "Foo", "Foo", "bar",
     "latest"},
    {"127.0.0.1:5000/lab/app:v1", "127.0.0.1:5000/lab/app:v1", "127.0.0.1:5000/lab/app:v1",
     "127.0.0.1:5000/lab/app:v1", "127.0.0.1:5000", "127.0.0.1:5000", "lab/app", "v1"},
    {"ghcr.io/org/tool:1.0", "ghcr.io/org/tool:1.0", "ghcr.io/org/tool:1.0", "ghcr.io/org/tool:1.0",
     "ghcr.io", "ghcr.io", "org/tool", "1.0"},
    {"a.b-c.example/x__y/z-----w/v.1_2:Tag_with.dots-1",
     "a.b-c.example/x__y/z-----w/v.1_2:Tag_with.dots-1",
     "a.b-c.example/x__y/z-----w/v.1_2:Tag_with.dots-1",
     "a.b-c.example/x__y/z-----w/v.1_2:Tag_with.dots-1", "a.b-c.example", "a.b-c.example",
     "x__y/z-----w/v.1_2", "Tag_with.dots-1"},
    {"alpine@sha256:" HEX64, "docker.io/library/alpine@sha256:" HEX64,
     "docker.io/library/alpine@sha256:" HEX64, "alpine@sha256:" HEX64, "registry-1.docker.io",
     "docker.io", "library/alpine", NULL},
    /* a pinned reference is stored under its digest: the tag plays no part */
    {"alpine:3.18@sha256:" HEX64, "docker.io/library/alpine:3.18@sha256:" HEX64,
     "docker.io/library/alpine@sha256:" HEX64, "alpine:3.18@sha256:" HEX64, "registry-1.docker.io",
     "docker.io", "library/alpine", "3.18"},
    {"127.0.0.1:5000/multi:v1@sha256:" HEX64, "127.0.0.1:5000/multi:v1@sha256:" HEX64,
     "127.0.0.1:5000/multi@sha256:" HEX64, "127.0.0.1:5000/multi:v1@sha256:" HEX64,
     "127.0.0.1:5000", "127.0.0.1:5000", "multi", "v1"},
    /* a Hub path whose first component reads as a domain keeps docker.io/ in
     * its familiar form: "a.b/c" would be registry a.b */
    {"docker.io/a.b/c", "docker.io/a.b/c:latest", "docker.io/a.b/c:latest",
     "docker.io/a.b/c:latest", "registry-1.docker.io", "docker.io", "a.b/c", "latest"},
    {"docker.io/localhost/c:1", "docker.io/localhost/c:1", "docker.io/localhost/c:1",
     "docker.io/localhost/c:1", "registry-1.docker.io", "docker.io", "localhost/c", "1"},
    {"a.b/c", "a.b/c:latest", "a.b/c:latest", "a.b/c:latest", "a.b", "a.b", "c", "latest"},
    {"docker.io/library/a.b", "docker.io/library/a.b:latest", "docker.io/library/a.b:latest",
     "a.b:latest", "registry-1.docker.io", "docker.io", "library/a.b", "latest"},
    {"host:5000/x@sha512:" HEX128, "host:5000/x@sha512:" HEX128, "host:5000/x@sha512:" HEX128,
     "host:5000/x@sha512:" HEX128, "host:5000", "host:5000", "x", NULL},
    /* a bare host:port with no path is a Hub name with a tag (Docker does the same) */
    {"localhost:5000", "docker.io/library/localhost:5000", "docker.io/library/localhost:5000",
     "localhost:5000", "registry-1.docker.io", "docker.io", "library/localhost", "5000"},
};

static void test_good(void)
{
	for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
		const struct good *g = &goods[i];
		struct imgfs_ref ref;
		struct imgfs_error err = {0};
		char *s;
		test_current = g->in;
		if (imgfs_ref_parse(g->in, &ref, &err) < 0) {
			fprintf(stderr, "%s: unexpected error: %s\n", g->in, err.msg);
			test_failures++;
			continue;
		}
		CHECK_STR(ref.domain, g->domain);
		CHECK_STR(ref.path, g->path);
		if (g->tag)
			CHECK_STR(ref.tag, g->tag);
		else
			CHECK(ref.tag == NULL);
		CHECK(ref.has_digest == (strchr(g->in, '@') != NULL));
		s = imgfs_ref_string(&ref);
		CHECK_STR(s, g->canonical);
		free(s);
		s = imgfs_ref_store_name(&ref);
		CHECK_STR(s, g->store);
		free(s);
		s = imgfs_ref_familiar(&ref);
		CHECK_STR(s, g->familiar);
		free(s);
		s = imgfs_ref_api_host(&ref);
		CHECK_STR(s, g->api_host);
		free(s);
		/* the canonical string parses back to itself */
		{
			struct imgfs_ref again;
			char *c1 = imgfs_ref_string(&ref), *c2;
			CHECK(imgfs_ref_parse(c1, &again, &err) == 0);
			c2 = imgfs_ref_string(&again);
			CHECK_STR(c2, c1);
			free(c1);
			free(c2);
			imgfs_ref_destroy(&again);
		}
		imgfs_ref_destroy(&ref);
	}
}

static void test_digest_fields(void)
{
	struct imgfs_ref ref;
	struct imgfs_error err;
	CHECK(imgfs_ref_parse("alpine:3.18@sha256:" HEX64, &ref, &err) == 0);
	CHECK(ref.has_digest);
	CHECK(ref.digest.alg == IMGFS_SHA256);
	CHECK_STR(ref.digest.str, "sha256:" HEX64);
	CHECK_STR(ref.digest.hex, HEX64);
	imgfs_ref_destroy(&ref);
}

struct bad {
	const char *in;
	const char *needle; /* a substring the message must contain */
};

static char long_name[300], long_tag[200], tag128[200], name255[300];

static const struct bad bads[] = {
    {"", "invalid reference format"},
    {":tag", "invalid reference format"},
    {"@sha256:" HEX64, "invalid reference format"},
    {"a//b", "invalid reference format"},
    {"a/", "invalid reference format"},
    {"a..b", "invalid reference format"},
    {"/a", "invalid reference format"},
    {"UPPER", "repository name \"UPPER\" must be lowercase"},
    {"docker.io/UPPER", "must be lowercase"},
    {"example.com/Foo/bar", "must be lowercase"},
    {HEX64, "cannot specify 64-byte hexadecimal strings"},
    {"alpine:-tag", "invalid tag"},
    {"alpine:.tag", "invalid tag"},
    {"alpine:", "invalid tag"},
    {"alpine:a b", "invalid reference format"},
    {"alpine@sha256:"
     "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
     "invalid digest"},
    {"alpine@sha256:"
     "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
     "invalid digest"},
    {"alpine@sha256:../../../../etc/passwd", "invalid digest"},
    {"alpine@md5:d41d8cd98f00b204e9800998ecf8427e", "alpine@md5"},
    {"alpine@", "invalid digest"},
    {"a/-b", "invalid reference format"},
    {"a/b_", "invalid reference format"},
    {"a/b___c", "invalid reference format"},
    {"-host.com/a", "invalid reference format"},
    {"host-.com/a", "invalid reference format"},
    {"host.com:/a", "invalid reference format"},
    {"host.com:50a/a", "invalid reference format"},
    {"[::1/a", "invalid reference format"},
    {"[zz::1]:5000/a", "invalid reference format"},
    {"alpine:tag:tag", "invalid reference format"},
    {"a\xc3\xa9/b", "invalid reference format"},
    {long_tag, "invalid tag"},
    {long_name, "must not be more than 255 characters"},
};

static void test_bad(void)
{
	/* 129-character tag; 256-character name */
	snprintf(long_tag, sizeof(long_tag), "alpine:%0129d", 0);
	snprintf(long_name, sizeof(long_name), "example.com/%0244d", 0); /* 12 + 244 = 256 */
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		struct imgfs_ref ref;
		struct imgfs_error err = {0};
		test_current = bads[i].in;
		if (imgfs_ref_parse(bads[i].in, &ref, &err) == 0) {
			char *s = imgfs_ref_string(&ref);
			fprintf(stderr, "\"%s\": accepted as %s\n", bads[i].in, s);
			free(s);
			imgfs_ref_destroy(&ref);
			test_failures++;
			continue;
		}
		CHECK(err.code == EINVAL);
		if (!strstr(err.msg, bads[i].needle)) {
			fprintf(stderr, "\"%s\": message \"%s\" lacks \"%s\"\n", bads[i].in,
				err.msg, bads[i].needle);
			test_failures++;
		}
	}
}

/* Lengths at the limits are accepted: 128-char tag, 255-char name. */
static void test_limits(void)
{
	struct imgfs_ref ref;
	struct imgfs_error err;
	snprintf(tag128, sizeof(tag128), "alpine:%0128d", 0);
	CHECK(imgfs_ref_parse(tag128, &ref, &err) == 0);
	CHECK(ref.tag && strlen(ref.tag) == 128);
	imgfs_ref_destroy(&ref);
	snprintf(name255, sizeof(name255), "example.com/%0243d", 0); /* 12 + 243 = 255 */
	CHECK(imgfs_ref_parse(name255, &ref, &err) == 0);
	imgfs_ref_destroy(&ref);
	/* the library/ prefix counts: docker.io/library/ + 238 = 256 */
	snprintf(name255, sizeof(name255), "%0238d", 0);
	CHECK(imgfs_ref_parse(name255, &ref, &err) < 0 && strstr(err.msg, "255"));
	snprintf(name255, sizeof(name255), "%0237d", 0);
	CHECK(imgfs_ref_parse(name255, &ref, &err) == 0);
	imgfs_ref_destroy(&ref);
}

/* Where an image's directory is on a mount: familiar names, and never one
 * path for two references (docker.io/a.b/c and a.b/c). */
static void test_tree_path(void)
{
	static const char *const cases[][2] = {
	    {"alpine:3.18", "alpine/3.18"},
	    {"docker.io/user/app:v2", "user/app/v2"},
	    {"docker.io/library/foo/bar:1", "library/foo/bar/1"},
	    {"docker.io/a.b/c", "docker.io/a.b/c/latest"},
	    {"a.b/c", "a.b/c/latest"},
	    {"docker.io/localhost/c:1", "docker.io/localhost/c/1"},
	    {"localhost/c:1", "localhost/c/1"},
	    {"docker.io/a:5000/c:1", NULL}, /* not a valid Hub path: refused at parse */
	    {"127.0.0.1:5000/lab/app@sha256:" HEX64, "127.0.0.1:5000/lab/app/@sha256:" HEX64},
	    {"127.0.0.1:5000/multi@sha256:" HEX64, "127.0.0.1:5000/multi/@sha256:" HEX64},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct imgfs_ref ref;
		struct imgfs_error err = {0};
		char *p, *again;

		test_current = cases[i][0];
		if (!cases[i][1]) {
			CHECK(imgfs_ref_parse(cases[i][0], &ref, &err) < 0);
			continue;
		}
		CHECK(imgfs_ref_parse(cases[i][0], &ref, &err) == 0);
		p = imgfs_ref_tree_path(&ref);
		CHECK_STR(p, cases[i][1]);
		imgfs_ref_destroy(&ref);
		/* the familiar name parses back to the same reference */
		CHECK(imgfs_ref_parse(cases[i][0], &ref, &err) == 0);
		again = imgfs_ref_familiar(&ref);
		{
			struct imgfs_ref r2;
			char *a, *b;
			CHECK(imgfs_ref_parse(again, &r2, &err) == 0);
			a = imgfs_ref_string(&ref);
			b = imgfs_ref_string(&r2);
			CHECK_STR(b, a);
			free(a);
			free(b);
			imgfs_ref_destroy(&r2);
		}
		free(again);
		free(p);
		imgfs_ref_destroy(&ref);
	}
	/* the two colliding names get two paths */
	{
		struct imgfs_ref a, b;
		struct imgfs_error err = {0};
		char *pa, *pb;
		CHECK(imgfs_ref_parse("docker.io/a.b/c:x", &a, &err) == 0);
		CHECK(imgfs_ref_parse("a.b/c:x", &b, &err) == 0);
		pa = imgfs_ref_tree_path(&a);
		pb = imgfs_ref_tree_path(&b);
		CHECK(strcmp(pa, pb) != 0);
		free(pa);
		free(pb);
		imgfs_ref_destroy(&a);
		imgfs_ref_destroy(&b);
	}
}

int main(void)
{
	RUN(test_good);
	RUN(test_digest_fields);
	RUN(test_bad);
	RUN(test_limits);
	RUN(test_tree_path);
	TEST_DONE();
}
