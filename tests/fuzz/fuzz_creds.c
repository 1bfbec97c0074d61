// SPDX-License-Identifier: Apache-2.0
/*
 * Credential files (src/fetch/creds.c): the input is an auth file
 * (~/.docker/config.json, containers' auth.json), looked up for a few
 * hosts. Credential helpers it names are not found: PATH is emptied.
 */
#include "fetch/fetch.h"
#include "fuzz.h"

#include <limits.h>

static const char *const hosts[] = {"docker.io", "ghcr.io", "127.0.0.1:5000", "[::1]:5000"};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	setenv("PATH", "/nonexistent/imgfs-fuzz", 1);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[PATH_MAX];
	int fd = fuzz_memfd(data, size, path, sizeof(path));

	for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
		struct imgfs_creds c;
		struct imgfs_error err;
		int rc = imgfs_creds_lookup(hosts[i], path, &c, &err);
		FUZZ_CHECK(rc >= -1 && rc <= 1);
		if (rc == 1) {
			FUZZ_CHECK(c.username || c.identity_token);
			FUZZ_CHECK(!c.username || c.password);
			FUZZ_CHECK(c.source != NULL);
		}
		imgfs_creds_destroy(&c);
	}
	close(fd);
	return 0;
}
