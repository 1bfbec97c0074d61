/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry trust checks that need no network: WWW-Authenticate parsing
 * (bad-inputs.md S1), token responses (S2), the token cache, the insecure
 * host policy, and the digest checks on fetched manifests (M3: a
 * Docker-Content-Digest header that lies cannot be produced by the real
 * registry the integration test runs, so it is checked here).
 */
#include "fetch/fetch_i.h"
#include "test.h"

#include <stdlib.h>

static struct imgfs_auth_challenge *parse_ok(const char *h, size_t *n)
{
	struct imgfs_auth_challenge *c = NULL;
	struct imgfs_error err;
	if (imgfs_auth_parse(h, &c, n, &err) < 0) {
		fprintf(stderr, "%s: unexpected error: %s\n", h, err.msg);
		test_failures++;
		*n = 0;
		return NULL;
	}
	return c;
}

static void test_bearer_single_scope(void)
{
	size_t n;
	struct imgfs_auth_challenge *c =
	    parse_ok("Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
		     "scope=\"repository:library/alpine:pull\"",
		     &n);
	CHECK(n == 1);
	if (n != 1)
		return;
	CHECK_STR(c[0].scheme, "Bearer");
	CHECK(c[0].n_params == 3);
	CHECK_STR(imgfs_auth_param(&c[0], "realm"), "https://auth.docker.io/token");
	CHECK_STR(imgfs_auth_param(&c[0], "service"), "registry.docker.io");
	CHECK_STR(imgfs_auth_param(&c[0], "scope"), "repository:library/alpine:pull");
	imgfs_auth_challenges_free(c, n);
}

static void test_bearer_multiple_scopes(void)
{
	size_t n;
	struct imgfs_auth_challenge *c =
	    parse_ok("Bearer realm=\"https://a/t\", scope=\"repository:foo/bar:pull,push "
		     "repository:foo/baz:pull\"",
		     &n);
	CHECK(n == 1);
	if (n == 1)
		CHECK_STR(imgfs_auth_param(&c[0], "scope"),
			  "repository:foo/bar:pull,push repository:foo/baz:pull");
	imgfs_auth_challenges_free(c, n);
}

static void test_empty_and_token_values(void)
{
	size_t n;
	struct imgfs_auth_challenge *c =
	    parse_ok("Bearer empty=\"\", realm=https://a/t , Service = svc", &n);
	CHECK(n == 1);
	if (n == 1) {
		CHECK_STR(imgfs_auth_param(&c[0], "empty"), "");
		CHECK_STR(imgfs_auth_param(&c[0], "realm"), "https://a/t");
		/* parameter names are case-insensitive; BWS around '=' is allowed */
		CHECK_STR(imgfs_auth_param(&c[0], "service"), "svc");
	}
	imgfs_auth_challenges_free(c, n);
}

static void test_escapes_and_commas(void)
{
	size_t n;
	struct imgfs_auth_challenge *c =
	    parse_ok("Bearer realm=\"https://a/\\\"x\\\"\",service=\"a,b\\\\c\",scope=\"x\"", &n);
	CHECK(n == 1);
	if (n == 1) {
		CHECK_STR(imgfs_auth_param(&c[0], "realm"), "https://a/\"x\"");
		CHECK_STR(imgfs_auth_param(&c[0], "service"), "a,b\\c");
		CHECK_STR(imgfs_auth_param(&c[0], "scope"), "x");
	}
	imgfs_auth_challenges_free(c, n);
}

static void test_several_challenges(void)
{
	size_t n;
	struct imgfs_auth_plan plan;
	struct imgfs_error err;
	/* two header lines, joined as the client joins them */
	const char *h = "Basic realm=\"x\", Bearer realm=\"https://auth/t\",service=\"s\"";
	struct imgfs_auth_challenge *c = parse_ok(h, &n);
	CHECK(n == 2);
	if (n == 2) {
		CHECK_STR(c[0].scheme, "Basic");
		CHECK_STR(imgfs_auth_param(&c[0], "realm"), "x");
		CHECK_STR(c[1].scheme, "Bearer");
		CHECK_STR(imgfs_auth_param(&c[1], "service"), "s");
	}
	imgfs_auth_challenges_free(c, n);
	/* Bearer is preferred over Basic whatever the order */
	CHECK(imgfs_auth_plan_from_header(h, &plan, &err) == 0);
	CHECK(plan.scheme == IMGFS_AUTH_BEARER);
	CHECK_STR(plan.realm, "https://auth/t");
	CHECK_STR(plan.service, "s");
	CHECK(plan.scope == NULL);
	imgfs_auth_plan_destroy(&plan);
	/* a challenge without parameters followed by another; token68 */
	c = parse_ok("Negotiate, Basic realm=r, Newauth abc/+=", &n);
	CHECK(n == 3);
	if (n == 3) {
		CHECK_STR(c[0].scheme, "Negotiate");
		CHECK(c[0].n_params == 0);
		CHECK_STR(c[2].scheme, "Newauth");
		CHECK(c[2].n_params == 1 && !strcmp(c[2].params[0].value, "abc/+="));
	}
	imgfs_auth_challenges_free(c, n);
}

static void test_scheme_case(void)
{
	const char *hs[] = {"BEARER realm=\"https://a/t\"", "bearer realm=\"https://a/t\"",
			    "bEaReR realm=\"https://a/t\""};
	for (size_t i = 0; i < 3; i++) {
		struct imgfs_auth_plan plan;
		struct imgfs_error err;
		CHECK(imgfs_auth_plan_from_header(hs[i], &plan, &err) == 0);
		CHECK(plan.scheme == IMGFS_AUTH_BEARER);
		CHECK_STR(plan.realm, "https://a/t");
		imgfs_auth_plan_destroy(&plan);
	}
}

static void test_plan_errors(void)
{
	struct imgfs_auth_plan plan;
	struct imgfs_error err;

	CHECK(imgfs_auth_plan_from_header("Bearer service=\"s\",scope=\"x\"", &plan, &err) < 0);
	CHECK_STR(err.msg, "no realm specified for token auth challenge");
	CHECK(imgfs_auth_plan_from_header("Bearer realm=\"\"", &plan, &err) < 0);
	CHECK(strstr(err.msg, "no realm") != NULL);
	CHECK(imgfs_auth_plan_from_header("Negotiate", &plan, &err) < 0);
	CHECK(strstr(err.msg, "failed to find supported auth scheme") != NULL);
	CHECK(imgfs_auth_plan_from_header("Bearer realm=\"https://a/t", &plan, &err) < 0);
	CHECK(strstr(err.msg, "unterminated") != NULL);
	CHECK(imgfs_auth_plan_from_header("", &plan, &err) < 0);
	CHECK(imgfs_auth_plan_from_header("=x", &plan, &err) < 0);
	CHECK(imgfs_auth_plan_from_header("Bearer realm=\"a\" junk", &plan, &err) < 0);
	CHECK(imgfs_auth_plan_from_header("Bearer realm=\"a\\", &plan, &err) < 0);
	/* Basic alone: a plan that says so (credentials are refused later) */
	CHECK(imgfs_auth_plan_from_header("Basic realm=\"Registry\"", &plan, &err) == 0);
	CHECK(plan.scheme == IMGFS_AUTH_BASIC);
	imgfs_auth_plan_destroy(&plan);
	/* error= is kept for the message */
	CHECK(imgfs_auth_plan_from_header("Bearer realm=\"https://a\",error=\"invalid_token\"",
					  &plan, &err) == 0);
	CHECK_STR(plan.error, "invalid_token");
	imgfs_auth_plan_destroy(&plan);
	CHECK(imgfs_auth_plan_from_header("Bearer realm=\"https://a\",error=\"insufficient_scope\"",
					  &plan, &err) == 0);
	CHECK_STR(plan.error, "insufficient_scope");
	imgfs_auth_plan_destroy(&plan);
}

/* 64 KiB values parse in full and without overread. */
static void test_huge_header(void)
{
	size_t big = 64 * 1024;
	char *h = malloc(big + 64);
	struct imgfs_auth_plan plan;
	struct imgfs_error err;
	int len = sprintf(h, "Bearer realm=\"https://a/");
	memset(h + len, 'x', big);
	strcpy(h + len + big, "\"");
	CHECK(imgfs_auth_plan_from_header(h, &plan, &err) == 0);
	CHECK(plan.realm && strlen(plan.realm) == big + strlen("https://a/"));
	imgfs_auth_plan_destroy(&plan);
	h[len + big] = '\0'; /* unterminated */
	CHECK(imgfs_auth_plan_from_header(h, &plan, &err) < 0);
	free(h);
}

/* ---- token responses (S2) -------------------------------------------------------- */

static void test_token_response(void)
{
	char *tok;
	long exp;
	struct imgfs_error err;
#define TR(s) imgfs_auth_parse_token_response(s, strlen(s), &tok, &exp, &err)
	CHECK(TR("{\"token\":\"abc\",\"expires_in\":300}") == 0);
	CHECK_STR(tok, "abc");
	CHECK(exp == 300);
	free(tok);
	CHECK(TR("{\"access_token\":\"def\"}") == 0);
	CHECK_STR(tok, "def");
	CHECK(exp == 60);
	free(tok);
	CHECK(TR("{\"token\":\"one\",\"access_token\":\"two\",\"expires_in\":0}") == 0);
	CHECK_STR(tok, "one");
	CHECK(exp == 60);
	free(tok);
	CHECK(TR("{\"token\":\"x\",\"expires_in\":-5}") == 0);
	CHECK(exp == 60);
	free(tok);
	CHECK(TR("{\"token\":\"\",\"access_token\":\"y\"}") == 0);
	CHECK_STR(tok, "y");
	free(tok);
	CHECK(TR("{}") < 0);
	CHECK(err.code == EACCES);
	CHECK(TR("{\"token\":5}") < 0);
	CHECK(TR("[\"token\"]") < 0);
	CHECK(TR("not json") < 0);
	CHECK(TR("") < 0);
	/* a token that would inject a header line */
	CHECK(TR("{\"token\":\"abc\\r\\nX-Evil: 1\"}") < 0);
	CHECK(TR("{\"token\":\"a\\u0000b\"}") < 0);
	CHECK(TR("{\"token\":\"a b\"}") < 0);
#undef TR
}

/* ---- token cache and host policy --------------------------------------------------------- */

static void test_token_cache(void)
{
	struct imgfs_ref ref;
	struct imgfs_registry *r;
	struct imgfs_error err;
	char *t;
	CHECK(imgfs_ref_parse("127.0.0.1:5000/lab/app:v1", &ref, &err) == 0);
	CHECK(imgfs_registry_new(&ref, NULL, &r, &err) == 0);
	CHECK(imgfs_token_get(r, "repository:lab/app:pull") == NULL);
	imgfs_token_put(r, "repository:lab/app:pull", "tok1", 300);
	imgfs_token_put(r, "repository:lab/other:pull", "tok2", 300);
	t = imgfs_token_get(r, "repository:lab/app:pull");
	CHECK_STR(t, "tok1");
	free(t);
	imgfs_token_put(r, "repository:lab/app:pull", "tok3", 300);
	t = imgfs_token_get(r, "repository:lab/app:pull");
	CHECK_STR(t, "tok3");
	free(t);
	imgfs_token_drop(r, "repository:lab/app:pull");
	CHECK(imgfs_token_get(r, "repository:lab/app:pull") == NULL);
	t = imgfs_token_get(r, "repository:lab/other:pull");
	CHECK_STR(t, "tok2");
	free(t);
	/* an expired token is not returned */
	imgfs_token_put(r, "repository:lab/old:pull", "tok4", -1);
	CHECK(imgfs_token_get(r, "repository:lab/old:pull") == NULL);
	imgfs_registry_free(r);
	imgfs_ref_destroy(&ref);
}

static void test_insecure_hosts(void)
{
	char *list[] = {"registry.lan", "10.0.0.5:5000", "[fd00::1]", NULL};
	CHECK(imgfs_registry_host_insecure("localhost", NULL));
	CHECK(imgfs_registry_host_insecure("localhost:5000", NULL));
	CHECK(imgfs_registry_host_insecure("127.0.0.1:5000", NULL));
	CHECK(imgfs_registry_host_insecure("127.1.2.3", NULL));
	CHECK(imgfs_registry_host_insecure("[::1]:5000", NULL));
	CHECK(!imgfs_registry_host_insecure("128.0.0.1", NULL));
	CHECK(!imgfs_registry_host_insecure("registry-1.docker.io", NULL));
	CHECK(!imgfs_registry_host_insecure("localhost.evil.com", NULL));
	CHECK(!imgfs_registry_host_insecure("127.0.0.1.nip.io", NULL));
	CHECK(imgfs_registry_host_insecure("registry.lan", list));
	CHECK(imgfs_registry_host_insecure("registry.lan:443", list));
	CHECK(imgfs_registry_host_insecure("10.0.0.5:5000", list));
	CHECK(!imgfs_registry_host_insecure("10.0.0.5:5001", list));
	CHECK(!imgfs_registry_host_insecure("10.0.0.5", list));
	CHECK(imgfs_registry_host_insecure("[fd00::1]:5000", list));
	CHECK(!imgfs_registry_host_insecure("ghcr.io", list));
}

/* ---- digests of fetched manifests (M3) ------------------------------------------------------ */

static void test_digest_checks(void)
{
	const char *body = "{\"schemaVersion\":2}";
	struct imgfs_digest good, want, other, out;
	struct imgfs_error err;
	char hdr[200];
	imgfs_digest_buf(IMGFS_SHA256, body, strlen(body), &good);
	CHECK(imgfs_digest_parse(&want, good.str, &err) == 0);
	imgfs_digest_buf(IMGFS_SHA256, "other", 5, &other);

	/* by tag, no header: the digest is computed */
	CHECK(imgfs_fetch_check_digest(body, strlen(body), NULL, NULL, &out, &err) == 0);
	CHECK_STR(out.str, good.str);
	/* by tag, an honest header */
	CHECK(imgfs_fetch_check_digest(body, strlen(body), NULL, good.str, &out, &err) == 0);
	/* by tag, a lying header */
	CHECK(imgfs_fetch_check_digest(body, strlen(body), NULL, other.str, &out, &err) < 0);
	CHECK(err.code == EIO);
	CHECK(strstr(err.msg, other.str) && strstr(err.msg, good.str));
	/* by digest, other bytes */
	CHECK(imgfs_fetch_check_digest("x", 1, &want, NULL, &out, &err) < 0);
	CHECK(err.code == EIO && strstr(err.msg, want.str));
	/* by digest, right bytes, lying header */
	CHECK(imgfs_fetch_check_digest(body, strlen(body), &want, other.str, &out, &err) < 0);
	/* a sha512 header is checked with sha512 */
	imgfs_digest_buf(IMGFS_SHA512, body, strlen(body), &other);
	CHECK(imgfs_fetch_check_digest(body, strlen(body), &want, other.str, &out, &err) == 0);
	CHECK_STR(out.str, good.str);
	snprintf(hdr, sizeof(hdr), "%s", other.str);
	hdr[10] = hdr[10] == 'a' ? 'b' : 'a';
	CHECK(imgfs_fetch_check_digest(body, strlen(body), &want, hdr, &out, &err) < 0);
	/* an unparsable header */
	CHECK(imgfs_fetch_check_digest(body, strlen(body), NULL, "sha256:../../etc", &out, &err) <
	      0);
	CHECK(err.code == EIO);
	/* a sha512 reference hashes with sha512 */
	CHECK(imgfs_digest_parse(&want, other.str, &err) == 0);
	CHECK(imgfs_fetch_check_digest(body, strlen(body), &want, NULL, &out, &err) == 0);
	CHECK(out.alg == IMGFS_SHA512);
}

static void test_content_range_and_types(void)
{
	uint64_t s, e;
	char *t;
	CHECK(imgfs_parse_content_range("bytes 100-199/200", &s, &e) == 0 && s == 100 && e == 199);
	CHECK(imgfs_parse_content_range("bytes 0-0/*", &s, &e) == 0 && s == 0 && e == 0);
	CHECK(imgfs_parse_content_range("bytes */200", &s, &e) < 0);
	CHECK(imgfs_parse_content_range("bytes 5-4/10", &s, &e) < 0);
	CHECK(imgfs_parse_content_range("items 0-1/2", &s, &e) < 0);
	CHECK(imgfs_parse_content_range("bytes 99999999999999999999-1/2", &s, &e) < 0);
	t = imgfs_media_type_strip("application/vnd.oci.image.index.v1+json; charset=utf-8");
	CHECK_STR(t, "application/vnd.oci.image.index.v1+json");
	free(t);
	t = imgfs_media_type_strip("  text/plain  ");
	CHECK_STR(t, "text/plain");
	free(t);
}

int main(void)
{
	RUN(test_bearer_single_scope);
	RUN(test_bearer_multiple_scopes);
	RUN(test_empty_and_token_values);
	RUN(test_escapes_and_commas);
	RUN(test_several_challenges);
	RUN(test_scheme_case);
	RUN(test_plan_errors);
	RUN(test_huge_header);
	RUN(test_token_response);
	RUN(test_token_cache);
	RUN(test_insecure_hosts);
	RUN(test_digest_checks);
	RUN(test_content_range_and_types);
	TEST_DONE();
}
