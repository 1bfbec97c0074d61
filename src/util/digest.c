/* SPDX-License-Identifier: Apache-2.0 */
/* Digest validation (OCI descriptor grammar) and incremental hashing. */
#include "util.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

struct imgfs_hasher {
	enum imgfs_digest_alg alg;
	EVP_MD_CTX *ctx;
};

static const char *alg_names[] = {"sha256", "sha512"};
static const size_t alg_hexlen[] = {64, 128};

const char *imgfs_digest_alg_name(enum imgfs_digest_alg alg)
{
	return alg_names[alg];
}

/* algorithm-component ::= [a-z0-9]+ ; separator ::= [+._-] ;
 * encoded ::= [a-zA-Z0-9=_-]+ */
static bool grammar_ok(const char *s, const char **colon)
{
	const char *c = strchr(s, ':');
	bool prev_sep = true;
	if (!c || c == s)
		return false;
	for (const char *p = s; p < c; p++) {
		bool sep = strchr("+._-", *p) != NULL;
		if (sep) {
			if (prev_sep)
				return false;
		} else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))) {
			return false;
		}
		prev_sep = sep;
	}
	if (prev_sep || !c[1])
		return false;
	for (const char *p = c + 1; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || strchr("=_-", *p)))
			return false;
	*colon = c;
	return true;
}

int imgfs_digest_parse(struct imgfs_digest *d, const char *s, struct imgfs_error *err)
{
	const char *colon;
	size_t alen, hlen;
	int alg = -1;

	if (!s || !grammar_ok(s, &colon))
		return imgfs_error_set(err, EINVAL, "invalid digest \"%.80s\"", s ? s : "");
	alen = (size_t)(colon - s);
	for (int i = 0; i < 2; i++)
		if (strlen(alg_names[i]) == alen && !strncmp(s, alg_names[i], alen))
			alg = i;
	if (alg < 0)
		return imgfs_error_set(err, ENOTSUP, "unsupported digest algorithm in \"%.80s\"",
				       s);
	hlen = strlen(colon + 1);
	if (hlen != alg_hexlen[alg])
		return imgfs_error_set(err, EINVAL,
				       "invalid digest \"%.80s\": %s needs %zu hex digits, got %zu",
				       s, alg_names[alg], alg_hexlen[alg], hlen);
	for (const char *p = colon + 1; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return imgfs_error_set(
			    err, EINVAL, "invalid digest \"%.80s\": only lowercase hex allowed", s);
	d->alg = (enum imgfs_digest_alg)alg;
	memcpy(d->str, s, alen + 1 + hlen + 1);
	d->hex = d->str + alen + 1;
	return 0;
}

bool imgfs_digest_equal(const struct imgfs_digest *a, const struct imgfs_digest *b)
{
	return a->alg == b->alg && !strcmp(a->str, b->str);
}

struct imgfs_hasher *imgfs_hasher_new(enum imgfs_digest_alg alg)
{
	struct imgfs_hasher *h = imgfs_xmalloc(sizeof(*h));
	h->alg = alg;
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx ||
	    !EVP_DigestInit_ex(h->ctx, alg == IMGFS_SHA256 ? EVP_sha256() : EVP_sha512(), NULL))
		abort();
	return h;
}

void imgfs_hasher_update(struct imgfs_hasher *h, const void *buf, size_t len)
{
	EVP_DigestUpdate(h->ctx, buf, len);
}

void imgfs_hasher_final(struct imgfs_hasher *h, struct imgfs_digest *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	size_t off;
	EVP_DigestFinal_ex(h->ctx, md, &n);
	off = (size_t)snprintf(out->str, sizeof(out->str), "%s:", alg_names[h->alg]);
	for (unsigned int i = 0; i < n; i++)
		snprintf(out->str + off + 2 * i, 3, "%02x", md[i]);
	out->alg = h->alg;
	out->hex = out->str + off;
}

void imgfs_hasher_free(struct imgfs_hasher *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->ctx);
	free(h);
}

void imgfs_digest_buf(enum imgfs_digest_alg alg, const void *buf, size_t len,
		      struct imgfs_digest *out)
{
	struct imgfs_hasher *h = imgfs_hasher_new(alg);
	imgfs_hasher_update(h, buf, len);
	imgfs_hasher_final(h, out);
	imgfs_hasher_free(h);
}
