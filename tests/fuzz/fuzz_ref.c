// SPDX-License-Identifier: Apache-2.0
/*
 * Image references (src/fetch/ref.c): parse, and every string derived from a
 * parsed reference; the canonical string must parse again to the same
 * reference.
 */
#include "fetch/fetch.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imgfs_error err;
	struct imgfs_ref ref, again;
	char *s = fuzz_str(data, size);

	if (imgfs_ref_parse(s, &ref, &err) == 0) {
		char *canon = imgfs_ref_string(&ref);
		char *store = imgfs_ref_store_name(&ref);
		char *fam = imgfs_ref_familiar(&ref);
		char *api = imgfs_ref_api_host(&ref);
		FUZZ_CHECK(imgfs_ref_parse(canon, &again, &err) == 0);
		char *canon2 = imgfs_ref_string(&again);
		FUZZ_CHECK(!strcmp(canon, canon2));
		free(canon2);
		imgfs_ref_destroy(&again);
		FUZZ_CHECK(imgfs_ref_parse(store, &again, &err) == 0);
		imgfs_ref_destroy(&again);
		FUZZ_CHECK(imgfs_ref_parse(fam, &again, &err) == 0);
		imgfs_ref_destroy(&again);
		free(canon);
		free(store);
		free(fam);
		free(api);
		imgfs_ref_destroy(&ref);
	} else {
		FUZZ_CHECK(err.code != 0 && err.msg[0]);
	}
	free(s);
	return 0;
}
