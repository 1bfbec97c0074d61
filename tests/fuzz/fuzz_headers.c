// SPDX-License-Identifier: Apache-2.0
/*
 * Values from a registry's response headers (src/fetch/registry.c): the
 * input's first line is a header value (Content-Range, Content-Type,
 * Docker-Content-Digest, a host), the rest is a body whose digest is checked
 * against it, as a manifest's bytes are.
 */
#include "fetch/fetch_i.h"
#include "fuzz.h"

static char *const insecure[] = {"10.0.0.0/8", "fd00::/8", "reg.local:5000", "[::1]:80", NULL};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t hlen = nl ? (size_t)(nl - data) : size;
	const char *body = nl ? (const char *)nl + 1 : "";
	size_t blen = nl ? size - hlen - 1 : 0;
	char *h = fuzz_str(data, hlen);
	struct imgfs_digest d, out, want;
	struct imgfs_error err;
	uint64_t start, end;

	if (imgfs_parse_content_range(h, &start, &end) == 0)
		FUZZ_CHECK(start <= end);
	free(imgfs_media_type_strip(h));
	if (imgfs_digest_parse(&d, h, &err) == 0) {
		FUZZ_CHECK(d.hex == d.str + strlen(imgfs_digest_alg_name(d.alg)) + 1);
		FUZZ_CHECK(strlen(d.hex) == (d.alg == IMGFS_SHA256 ? 64 : 128));
	}
	/* the header alone, then the header against the body's own digest */
	if (imgfs_fetch_check_digest(body, blen, NULL, h, &out, &err) == 0 && *h)
		FUZZ_CHECK(!strcmp(out.str, h) || strncmp(h, "sha256:", 7));
	imgfs_digest_buf(IMGFS_SHA512, body, blen, &want);
	(void)imgfs_fetch_check_digest(body, blen, &want, h, &out, &err);
	(void)imgfs_registry_host_insecure(h, insecure);
	free(imgfs_creds_normalize_key(h));
	free(h);
	return 0;
}
