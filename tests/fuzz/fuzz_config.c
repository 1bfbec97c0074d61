// SPDX-License-Identifier: Apache-2.0
/*
 * The config file (src/fetch/config.c, /etc/imgfs/config.json): load it,
 * then build the registry client from it for a few references, which parses
 * every mirror URL and insecure-registries entry (no request is sent).
 */
#include "fetch/fetch.h"
#include "fuzz.h"

#include <limits.h>

static const char *const refs[] = {"alpine", "ghcr.io/a/b:1", "127.0.0.1:5000/x/y"};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[PATH_MAX];
	int fd = fuzz_memfd(data, size, path, sizeof(path));
	struct imgfs_fetch_config cfg;
	struct imgfs_error err;

	imgfs_fetch_config_init(&cfg);
	if (imgfs_fetch_config_load(&cfg, path, true, &err) == 0) {
		FUZZ_CHECK(cfg.max_concurrent_downloads > 0);
		FUZZ_CHECK(cfg.max_attempts > 0);
		for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++) {
			struct imgfs_ref ref;
			struct imgfs_registry *r;
			FUZZ_CHECK(imgfs_ref_parse(refs[i], &ref, &err) == 0);
			if (imgfs_registry_new(&ref, &cfg, &r, &err) == 0)
				imgfs_registry_free(r);
			imgfs_ref_destroy(&ref);
		}
	} else {
		FUZZ_CHECK(err.code == EINVAL || err.code == ENOENT);
	}
	imgfs_fetch_config_destroy(&cfg);
	close(fd);
	return 0;
}
