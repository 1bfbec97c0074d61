/* SPDX-License-Identifier: Apache-2.0 */
/*
 * imgfs-fetch: drive the fetch module from the shell (integration tests,
 * debugging a registry).
 *
 *   imgfs-fetch [opts] ref REF                  print the parsed reference
 *   imgfs-fetch [opts] manifest REF             GET the manifest (tag or digest of REF)
 *   imgfs-fetch [opts] select REF PLATFORM      manifest of REF; if an index, choose PLATFORM
 *   imgfs-fetch [opts] blob REF DIGEST FILE     stream a blob into FILE (resume: --offset)
 *   imgfs-fetch [opts] blob-mem REF DIGEST SIZE GET a small blob into memory
 *
 * opts: --insecure HOST (repeatable), --max BYTES (manifest cap), -o FILE
 * (write the bytes), --offset N (blob: FILE already holds N bytes),
 * --limit N (blob: the sink refuses more than N bytes in total).
 * On failure: "imgfs-fetch: <ERRNO-NAME>: <message>" on stderr, exit 1.
 */
#include "fetch/fetch.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

struct opts {
	char *insecure[16];
	int n_insecure;
	size_t max;
	const char *out;
	uint64_t offset;
	uint64_t limit;
};

static int die(const struct imgfs_error *err)
{
	const char *name = strerrorname_np(err->code);
	fprintf(stderr, "imgfs-fetch: %s: %s\n", name ? name : "E?", err->msg);
	return 1;
}

static int write_out(const char *path, const char *data, size_t len)
{
	_cleanup_close_ int fd = -1;
	if (!path)
		return 0;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || imgfs_write_all(fd, data, len) < 0) {
		perror(path);
		return -1;
	}
	return 0;
}

static int open_registry(const char *s, const struct opts *o, struct imgfs_ref *ref,
			 struct imgfs_registry **r, struct imgfs_error *err)
{
	struct imgfs_fetch_config cfg;
	char *list[17];
	imgfs_fetch_config_init(&cfg);
	for (int i = 0; i < o->n_insecure; i++)
		list[i] = o->insecure[i];
	list[o->n_insecure] = NULL;
	cfg.insecure_registries = list;
	if (imgfs_ref_parse(s, ref, err) < 0)
		return -1;
	if (imgfs_registry_new(ref, &cfg, r, err) < 0) {
		imgfs_ref_destroy(ref);
		return -1;
	}
	return 0;
}

static int cmd_ref(const char *s)
{
	struct imgfs_ref ref;
	struct imgfs_error err;
	char *a, *b, *c, *d;
	if (imgfs_ref_parse(s, &ref, &err) < 0)
		return die(&err);
	a = imgfs_ref_string(&ref);
	b = imgfs_ref_store_name(&ref);
	c = imgfs_ref_familiar(&ref);
	d = imgfs_ref_api_host(&ref);
	printf("string=%s\nstore_name=%s\nfamiliar=%s\napi_host=%s\ndomain=%s\npath=%s\ntag=%"
	       "s\ndigest=%s\n",
	       a, b, c, d, ref.domain, ref.path, ref.tag ? ref.tag : "",
	       ref.has_digest ? ref.digest.str : "");
	free(a);
	free(b);
	free(c);
	free(d);
	imgfs_ref_destroy(&ref);
	return 0;
}

static int cmd_manifest(const char *s, const struct opts *o)
{
	struct imgfs_ref ref;
	struct imgfs_registry *r;
	struct imgfs_fetched f;
	struct imgfs_error err;
	int rc;
	if (open_registry(s, o, &ref, &r, &err) < 0)
		return die(&err);
	rc = imgfs_registry_get_manifest(r, ref.path, ref.has_digest ? ref.digest.str : ref.tag,
					 o->max ? o->max : IMGFS_MAX_MANIFEST_SIZE, &f, &err);
	if (rc == 0) {
		printf("digest=%s\nmedia_type=%s\nsize=%zu\n", f.digest.str,
		       f.content_type ? f.content_type : "", f.len);
		if (write_out(o->out, f.data, f.len) < 0)
			rc = -1, imgfs_error_set(&err, EIO, "cannot write %s", o->out);
		imgfs_fetched_destroy(&f);
	}
	imgfs_registry_free(r);
	imgfs_ref_destroy(&ref);
	return rc < 0 ? die(&err) : 0;
}

static int select_in(struct imgfs_registry *r, const struct imgfs_ref *ref,
		     const struct imgfs_fetched *f, const char *plat, struct imgfs_error *err)
{
	struct imgfs_index *idx;
	struct imgfs_platform p;
	size_t i;
	int rc;
	if (imgfs_oci_parse_index(f->data, f->len, &idx, err) < 0)
		return -1;
	if (imgfs_platform_parse(plat, &p, err) < 0) {
		imgfs_index_free(idx);
		return -1;
	}
	rc = imgfs_platform_select(idx, &p, &i, err);
	if (rc == 0) {
		struct imgfs_fetched m;
		char *ps = imgfs_platform_string(&idx->manifests[i].platform);
		printf("chosen=%zu\nplatform=%s\nmanifest=%s\n", i, ps,
		       idx->manifests[i].digest.str);
		free(ps);
		/* and the chosen manifest itself, by digest */
		rc = imgfs_registry_get_manifest(r, ref->path, idx->manifests[i].digest.str,
						 IMGFS_MAX_MANIFEST_SIZE, &m, err);
		if (rc == 0) {
			printf("manifest_media_type=%s\nmanifest_size=%zu\n",
			       m.content_type ? m.content_type : "", m.len);
			imgfs_fetched_destroy(&m);
		}
	}
	imgfs_platform_destroy(&p);
	imgfs_index_free(idx);
	return rc;
}

static int cmd_select(const char *s, const char *plat, const struct opts *o)
{
	struct imgfs_ref ref;
	struct imgfs_registry *r;
	struct imgfs_fetched f;
	struct imgfs_error err;
	enum imgfs_doc_kind kind;
	char *mt = NULL;
	int rc;
	if (open_registry(s, o, &ref, &r, &err) < 0)
		return die(&err);
	rc = imgfs_registry_get_manifest(r, ref.path, ref.has_digest ? ref.digest.str : ref.tag,
					 IMGFS_MAX_MANIFEST_SIZE, &f, &err);
	if (rc == 0) {
		rc = imgfs_oci_classify(f.data, f.len, f.content_type, &kind, &mt, &err);
		if (rc == 0 && kind == IMGFS_DOC_INDEX)
			rc = select_in(r, &ref, &f, plat, &err);
		else if (rc == 0)
			printf("chosen=none\nmanifest=%s\n", f.digest.str);
		free(mt);
		imgfs_fetched_destroy(&f);
	}
	imgfs_registry_free(r);
	imgfs_ref_destroy(&ref);
	return rc < 0 ? die(&err) : 0;
}

struct file_sink {
	int fd;
	bool *restarted;
	bool reset_done;
	uint64_t total; /* bytes in the file */
	uint64_t limit;
};

static int file_sink(void *ctx, const void *buf, size_t len, struct imgfs_error *err)
{
	struct file_sink *fs = ctx;
	if (*fs->restarted && !fs->reset_done) {
		/* the server ignored Range: start the file over */
		fs->reset_done = true;
		fs->total = 0;
		if (ftruncate(fs->fd, 0) < 0 || lseek(fs->fd, 0, SEEK_SET) < 0)
			return imgfs_error_errno(err, errno, "truncate");
	}
	if (fs->limit && fs->total + len > fs->limit)
		return imgfs_error_set(
		    err, EIO, "blob is larger than the expected %" PRIu64 " bytes", fs->limit);
	if (imgfs_write_all(fs->fd, buf, len) < 0)
		return imgfs_error_errno(err, errno, "write");
	fs->total += len;
	return 0;
}

static int cmd_blob(const char *s, const char *dg, const char *file, const struct opts *o)
{
	struct imgfs_ref ref;
	struct imgfs_registry *r;
	struct imgfs_digest d;
	struct imgfs_error err;
	bool restarted = false;
	struct file_sink fs = {.restarted = &restarted, .total = o->offset, .limit = o->limit};
	int rc;
	if (imgfs_digest_parse(&d, dg, &err) < 0)
		return die(&err);
	fs.fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fs.fd < 0 || ftruncate(fs.fd, (off_t)o->offset) < 0 ||
	    lseek(fs.fd, (off_t)o->offset, SEEK_SET) < 0) {
		perror(file);
		return 1;
	}
	if (open_registry(s, o, &ref, &r, &err) < 0) {
		close(fs.fd);
		return die(&err);
	}
	rc = imgfs_registry_get_blob(r, ref.path, &d, o->offset, file_sink, &fs, &restarted, NULL,
				     &err);
	close(fs.fd);
	imgfs_registry_free(r);
	imgfs_ref_destroy(&ref);
	if (rc < 0)
		return die(&err);
	printf("restarted=%d\nbytes=%" PRIu64 "\n", restarted ? 1 : 0, fs.total);
	return 0;
}

static int cmd_blob_mem(const char *s, const char *dg, const char *size, const struct opts *o)
{
	struct imgfs_ref ref;
	struct imgfs_registry *r;
	struct imgfs_digest d;
	struct imgfs_fetched f;
	struct imgfs_error err;
	int rc;
	if (imgfs_digest_parse(&d, dg, &err) < 0)
		return die(&err);
	if (open_registry(s, o, &ref, &r, &err) < 0)
		return die(&err);
	rc = imgfs_registry_get_blob_mem(r, ref.path, &d, strtoull(size, NULL, 10), &f, &err);
	if (rc == 0) {
		printf("digest=%s\nsize=%zu\n", f.digest.str, f.len);
		if (write_out(o->out, f.data, f.len) < 0)
			rc = -1, imgfs_error_set(&err, EIO, "cannot write %s", o->out);
		imgfs_fetched_destroy(&f);
	}
	imgfs_registry_free(r);
	imgfs_ref_destroy(&ref);
	return rc < 0 ? die(&err) : 0;
}

static int usage(void)
{
	fprintf(
	    stderr,
	    "usage: imgfs-fetch [--insecure HOST] [--max N] [-o FILE] [--offset N] [--limit N]\n"
	    "  ref REF | manifest REF | select REF PLATFORM | blob REF DIGEST FILE |\n"
	    "  blob-mem REF DIGEST SIZE\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	char *args[8];
	int n = 0;
	if (getenv("IMGFS_DEBUG"))
		imgfs_log_set_level(IMGFS_LOG_DEBUG);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has_val = i + 1 < argc;
		if (!strcmp(a, "--insecure") && has_val && o.n_insecure < 16)
			o.insecure[o.n_insecure++] = argv[++i];
		else if (!strcmp(a, "--max") && has_val)
			o.max = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(a, "-o") && has_val)
			o.out = argv[++i];
		else if (!strcmp(a, "--offset") && has_val)
			o.offset = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(a, "--limit") && has_val)
			o.limit = strtoull(argv[++i], NULL, 10);
		else if (a[0] == '-' && a[1])
			return usage();
		else if (n < 8)
			args[n++] = argv[i];
	}
	if (n == 2 && !strcmp(args[0], "ref"))
		return cmd_ref(args[1]);
	if (n == 2 && !strcmp(args[0], "manifest"))
		return cmd_manifest(args[1], &o);
	if (n == 3 && !strcmp(args[0], "select"))
		return cmd_select(args[1], args[2], &o);
	if (n == 4 && !strcmp(args[0], "blob"))
		return cmd_blob(args[1], args[2], args[3], &o);
	if (n == 4 && !strcmp(args[0], "blob-mem"))
		return cmd_blob_mem(args[1], args[2], args[3], &o);
	return usage();
}
