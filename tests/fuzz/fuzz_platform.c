// SPDX-License-Identifier: Apache-2.0
/*
 * Platform strings (src/fetch/platform.c, `--platform`): parse, normalise,
 * print; the printed form parses again to itself.
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
	struct imgfs_platform p = {0}, q = {0};
	char *s = fuzz_str(data, size);

	if (imgfs_platform_parse(s, &p, &err) == 0) {
		char *str = imgfs_platform_string(&p);
		FUZZ_CHECK(imgfs_platform_parse(str, &q, &err) == 0);
		char *str2 = imgfs_platform_string(&q);
		FUZZ_CHECK(!strcmp(str, str2));
		free(str);
		free(str2);
		imgfs_platform_destroy(&q);
		imgfs_platform_destroy(&p);
	}
	free(s);
	return 0;
}
