/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared by the libFuzzer harnesses (fuzz_*.c): each defines
 * LLVMFuzzerTestOneInput, and links either libFuzzer (-DIMGFS_FUZZ=ON) or
 * replay.c (every other build, where ctest replays the corpus). A harness
 * checks its own invariants with FUZZ_CHECK, which aborts: libFuzzer keeps the
 * input as a crash, the replay fails.
 */
#ifndef IMGFS_FUZZ_H
#define IMGFS_FUZZ_H

#include "util/util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,       \
				#cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* The input as a NUL-terminated string (cut at its first NUL, as a C string
 * from the network or a file would be); caller frees. */
static inline char *fuzz_str(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* Messages from the code under test are noise here. */
static inline void fuzz_quiet(void)
{
	imgfs_log_set_level((enum imgfs_log_level)0);
}

/* A file holding exactly the input, for parsers that read a path: a memfd,
 * named /proc/self/fd/N in path (PATH_MAX). Returns the fd to close. */
static inline int fuzz_memfd(const uint8_t *data, size_t size, char *path, size_t pathlen)
{
	int fd = memfd_create("imgfs-fuzz", MFD_CLOEXEC);
	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
		abort();
	snprintf(path, pathlen, "/proc/self/fd/%d", fd);
	return fd;
}

#endif
