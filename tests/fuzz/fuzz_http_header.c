// SPDX-License-Identifier: Apache-2.0
/*
 * The HTTP header callback (src/fetch/registry.c: on_header hands every line
 * to imgfs_http_header_line): the input is a response's header block; each
 * line (with its "\n") goes to the parser in its own buffer of exactly its
 * length, not NUL-terminated, as libcurl hands it over, so ASan sees any read
 * past a line. What it keeps must be well-formed.
 */
#include "fetch/fetch_i.h"
#include "fuzz.h"

#define MAX_LINES 256

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *lines[MAX_LINES] = {0};
	size_t lens[MAX_LINES] = {0}, n = 0, off = 0;

	while (off < size && n < MAX_LINES) {
		const uint8_t *nl = memchr(data + off, '\n', size - off);
		size_t len = nl ? (size_t)(nl - (data + off)) + 1 : size - off;
		lines[n] = malloc(len);
		if (!lines[n])
			abort();
		memcpy(lines[n], data + off, len);
		lens[n++] = len;
		off += len;
	}
	struct imgfs_http_headers h = {.retry_after = -1};
	for (size_t i = 0; i < n; i++) {
		imgfs_http_header_line(&h, lines[i], lens[i]);
		/* three digits at most ("HTTP/1.1 029" gives 29: any code < 200 is
		 * an error to the client, and curl's own code replaces it after the
		 * transfer) */
		FUZZ_CHECK(h.status >= 0 && h.status <= 999);
		FUZZ_CHECK(h.retry_after >= -1);
		free(lines[i]);
	}
	if (h.content_range) {
		uint64_t s, e;
		if (imgfs_parse_content_range(h.content_range, &s, &e) == 0)
			FUZZ_CHECK(s <= e);
	}
	free(imgfs_media_type_strip(h.content_type));
	imgfs_http_headers_reset(&h);
	return 0;
}
