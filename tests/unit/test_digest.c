/* SPDX-License-Identifier: Apache-2.0 */
/* Digest validation (bad-inputs M2) and hashing against known vectors. */
#include "util/util.h"
#include "test.h"

#define HEX64 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define HEX128                                                                                     \
	"cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2" \
	"877eec2f63b931bd47417a81a538327af927da3e"

struct digest_case {
	const char *in;
	int code; /* 0: valid */
};

static const struct digest_case cases[] = {
    {"sha256:" HEX64, 0},
    {"sha512:" HEX128, 0},
    {"sha256:"
     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
     EINVAL},			   /* 63 hex */
    {"sha256:" HEX64 "5", EINVAL}, /* 65 hex */
    {"sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
     EINVAL}, /* uppercase */
    {"sha256:../../../../etc/passwd", EINVAL},
    {"sha256:" HEX64 "/../x", EINVAL},
    {"sha256:", EINVAL},
    {"sha256", EINVAL},
    {"", EINVAL},
    {":" HEX64, EINVAL},
    {"SHA256:" HEX64, EINVAL},
    {"sha256:" HEX64 "\n", EINVAL},
    {"sha256:" HEX64 " ", EINVAL},
    {" sha256:" HEX64, EINVAL},
    {"sha512:" HEX64, EINVAL}, /* wrong length for the algorithm */
    {"md5:d41d8cd98f00b204e9800998ecf8427e", ENOTSUP},
    {"sha384:"
     "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b"
     "95b",
     ENOTSUP},
    {"blake3:" HEX64, ENOTSUP},
    {"multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", ENOTSUP},
};

static void test_parse_table(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct imgfs_digest d;
		struct imgfs_error err = {0};
		int r = imgfs_digest_parse(&d, cases[i].in, &err);

		if (cases[i].code == 0) {
			CHECK(r == 0);
			if (r == 0) {
				CHECK_STR(d.str, cases[i].in);
				CHECK(d.hex == strchr(d.str, ':') + 1);
			} else {
				fprintf(stderr, "  case %zu \"%s\": %s\n", i, cases[i].in, err.msg);
			}
		} else {
			CHECK(r == -1);
			if (r != -1 || err.code != cases[i].code)
				fprintf(stderr, "  case %zu \"%s\": r=%d code=%d want %d\n", i,
					cases[i].in, r, err.code, cases[i].code);
			CHECK(err.code == cases[i].code);
			CHECK(err.msg[0] != '\0');
		}
	}
}

static void test_parse_alg(void)
{
	struct imgfs_digest d;
	struct imgfs_error err;

	CHECK(imgfs_digest_parse(&d, "sha256:" HEX64, &err) == 0 && d.alg == IMGFS_SHA256);
	CHECK(imgfs_digest_parse(&d, "sha512:" HEX128, &err) == 0 && d.alg == IMGFS_SHA512);
	CHECK_STR(imgfs_digest_alg_name(IMGFS_SHA256), "sha256");
	CHECK_STR(imgfs_digest_alg_name(IMGFS_SHA512), "sha512");
	/* The message names the offending input. */
	CHECK(imgfs_digest_parse(&d, "sha256:nothex", &err) == -1);
	CHECK(strstr(err.msg, "sha256:nothex") != NULL);
	CHECK(imgfs_digest_parse(&d, NULL, &err) == -1 && err.code == EINVAL);
}

static void test_equal(void)
{
	struct imgfs_digest a, b, c;
	struct imgfs_error err;

	imgfs_digest_parse(&a, "sha256:" HEX64, &err);
	imgfs_digest_parse(&b, "sha256:" HEX64, &err);
	imgfs_digest_parse(
	    &c, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", &err);
	CHECK(imgfs_digest_equal(&a, &b));
	CHECK(!imgfs_digest_equal(&a, &c));
}

static void test_vectors(void)
{
	struct imgfs_digest d;

	imgfs_digest_buf(IMGFS_SHA256, "", 0, &d);
	CHECK_STR(d.str, "sha256:" HEX64);
	CHECK(d.alg == IMGFS_SHA256);
	imgfs_digest_buf(IMGFS_SHA256, "abc", 3, &d);
	CHECK_STR(d.str, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	imgfs_digest_buf(IMGFS_SHA512, "", 0, &d);
	CHECK_STR(d.str, "sha512:" HEX128);
	CHECK_STR(d.hex, HEX128);
	imgfs_digest_buf(IMGFS_SHA512, "abc", 3, &d);
	CHECK_STR(d.str, "sha512:"
			 "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a2"
			 "74fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
}

static void test_incremental(void)
{
	struct imgfs_hasher *h = imgfs_hasher_new(IMGFS_SHA256);
	struct imgfs_digest d, whole, check;
	struct imgfs_error err;
	static char big[1 << 20];

	/* "abc" fed byte by byte gives the one-shot answer. */
	imgfs_hasher_update(h, "a", 1);
	imgfs_hasher_update(h, "", 0);
	imgfs_hasher_update(h, "b", 1);
	imgfs_hasher_update(h, "c", 1);
	imgfs_hasher_final(h, &d);
	imgfs_hasher_free(h);
	CHECK_STR(d.str, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

	/* A megabyte in uneven pieces equals the one-shot digest, and the
	 * result parses as a valid digest. */
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7 + 3);
	h = imgfs_hasher_new(IMGFS_SHA256);
	for (size_t off = 0; off < sizeof(big);) {
		size_t n = off % 4093 + 1;
		if (n > sizeof(big) - off)
			n = sizeof(big) - off;
		imgfs_hasher_update(h, big + off, n);
		off += n;
	}
	imgfs_hasher_final(h, &d);
	imgfs_hasher_free(h);
	imgfs_digest_buf(IMGFS_SHA256, big, sizeof(big), &whole);
	CHECK_STR(d.str, whole.str);
	CHECK(imgfs_digest_parse(&check, d.str, &err) == 0);
}

int main(void)
{
	RUN(test_parse_table);
	RUN(test_parse_alg);
	RUN(test_equal);
	RUN(test_vectors);
	RUN(test_incremental);
	TEST_DONE();
}
