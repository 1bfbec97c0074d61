// SPDX-License-Identifier: Apache-2.0
/*
 * WWW-Authenticate (src/fetch/auth.c): a registry's 401 challenge header,
 * parsed into challenges and into the plan the client acts on.
 */
#include "fetch/fetch_i.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imgfs_error err;
	struct imgfs_auth_challenge *c = NULL;
	struct imgfs_auth_plan plan;
	size_t n = 0;
	char *s = fuzz_str(data, size);

	if (imgfs_auth_parse(s, &c, &n, &err) == 0) {
		for (size_t i = 0; i < n; i++) {
			FUZZ_CHECK(c[i].scheme && *c[i].scheme);
			for (size_t j = 0; j < c[i].n_params; j++)
				FUZZ_CHECK(imgfs_auth_param(&c[i], c[i].params[j].key) != NULL);
			(void)imgfs_auth_param(&c[i], "realm");
		}
		imgfs_auth_challenges_free(c, n);
	}
	memset(&plan, 0, sizeof(plan));
	if (imgfs_auth_plan_from_header(s, &plan, &err) == 0) {
		FUZZ_CHECK(plan.scheme == IMGFS_AUTH_BASIC || plan.scheme == IMGFS_AUTH_BEARER);
		if (plan.scheme == IMGFS_AUTH_BEARER)
			FUZZ_CHECK(plan.realm != NULL);
	}
	imgfs_auth_plan_destroy(&plan);
	free(s);
	return 0;
}
