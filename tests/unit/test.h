/* SPDX-License-Identifier: Apache-2.0 */
/* A minimal unit-test harness: each case is a function; CHECK records a
 * failure with its line and carries on; main runs every case. */
#ifndef IMGFS_TEST_H
#define IMGFS_TEST_H

#include <stdio.h>
#include <string.h>

static int test_failures;
static const char *test_current;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__,       \
				test_current, #cond);                                              \
			test_failures++;                                                           \
		}                                                                                  \
	} while (0)

#define CHECK_STR(a, b)                                                                            \
	do {                                                                                       \
		const char *_a = (a), *_b = (b);                                                   \
		if (!_a || !_b || strcmp(_a, _b)) {                                                \
			fprintf(stderr, "%s:%d: %s: \"%s\" != \"%s\"\n", __FILE__, __LINE__,       \
				test_current, _a ? _a : "(null)", _b ? _b : "(null)");             \
			test_failures++;                                                           \
		}                                                                                  \
	} while (0)

#define RUN(fn)                                                                                    \
	do {                                                                                       \
		test_current = #fn;                                                                \
		fn();                                                                              \
	} while (0)

#define TEST_DONE()                                                                                \
	do {                                                                                       \
		if (test_failures)                                                                 \
			fprintf(stderr, "%d check(s) failed\n", test_failures);                    \
		return test_failures ? 1 : 0;                                                      \
	} while (0)

#endif
