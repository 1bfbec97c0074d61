// SPDX-License-Identifier: Apache-2.0
/*
 * A token endpoint's JSON answer (src/fetch/auth.c). The token goes into an
 * Authorization header: it must be printable ASCII, never a line break.
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
	char *token = NULL;
	long expires = 0;

	if (imgfs_auth_parse_token_response((const char *)data, size, &token, &expires, &err) ==
	    0) {
		FUZZ_CHECK(token && *token);
		for (const char *p = token; *p; p++)
			FUZZ_CHECK(*p > 0x20 && *p < 0x7f);
		FUZZ_CHECK(expires > 0);
		free(token);
	}
	return 0;
}
