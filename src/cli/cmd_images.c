/* SPDX-License-Identifier: Apache-2.0 */
/* imgfs images, inspect, rm and gc. */
#include "cli.h"

#include <getopt.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *jstr(json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));
	return v ? v : "";
}

/* Parse "[--json] ARGS" for the simple commands. Returns -1 on help shown,
 * -2 on usage error, else the index of the first operand. */
static int simple_opts(int argc, char **argv, bool *json, const char *usage)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	int c;
	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'j' && json) {
			*json = true;
		} else if (c == 'h') {
			fputs(usage, stdout);
			return -1;
		} else {
			fputs(usage, stderr);
			return -2;
		}
	}
	return optind;
}

/* ---- images --------------------------------------------------------------- */

/* The record with the manifest's digest and media type also at the top level,
 * as inspect --json shows them. */
static json_t *image_view(json_t *rec)
{
	json_t *out = json_deep_copy(rec);
	json_t *target = json_object_get(rec, "target");
	json_object_set_new(out, "digest", json_string(jstr(target, "digest")));
	json_object_set_new(out, "mediaType", json_string(jstr(target, "mediaType")));
	return out;
}

static int add_image(void *ctx, const char *name, json_t *rec)
{
	json_array_append_new(ctx, image_view(rec));
	return 0;
}

int cmd_images(struct cli *cli, int argc, char **argv)
{
	struct imgfs_error err = {0};
	struct imgfs_store *s;
	bool as_json = false;
	json_t *all = json_array(), *rec;
	size_t i;
	int first =
	    simple_opts(argc, argv, &as_json,
			"Usage: imgfs images [--json]\n\nList the images in the store: name, "
			"manifest digest, size of its blobs, and when it was created.\n");
	if (first < 0)
		return first == -1 ? 0 : EXIT_USAGE;
	if (first != argc)
		return cli_usage_error("images", "no arguments expected");
	s = cli_open_store_how(cli, IMGFS_STORE_READ);
	if (!s)
		return 1;
	if (imgfs_store_list_images(s, add_image, all, &err) < 0) {
		imgfs_store_close(s);
		json_decref(all);
		return cli_fail(&err);
	}
	imgfs_store_close(s);
	if (as_json) {
		json_dumpf(all, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(all);
		return 0;
	}
	printf("%-50s %-19s %10s  %s\n", "NAME", "DIGEST", "SIZE", "CREATED");
	json_array_foreach(all, i, rec)
	{
		char size[32], created[32];
		const char *d = jstr(json_object_get(rec, "target"), "digest");
		snprintf(created, sizeof(created), "%.19s", jstr(rec, "created"));
		for (char *p = created; *p; p++)
			if (*p == 'T')
				*p = ' ';
		printf("%-50s %-19.19s %10s  %s\n", jstr(rec, "name"), d,
		       imgfs_human_size((uint64_t)json_integer_value(json_object_get(rec, "size")),
					size, sizeof(size)),
		       *created ? created : "-");
	}
	json_decref(all);
	return 0;
}

/* ---- inspect -------------------------------------------------------------- */

/* The user-facing parts of the image config ("config" object of it). */
static json_t *config_summary(struct imgfs_store *s, json_t *rec)
{
	static const char *keys[][2] = {{"Env", "env"},
					{"Entrypoint", "entrypoint"},
					{"Cmd", "cmd"},
					{"WorkingDir", "workingDir"},
					{"User", "user"},
					{"Labels", "labels"},
					{"ExposedPorts", "exposedPorts"},
					{"StopSignal", "stopSignal"}};
	struct imgfs_error err = {0};
	struct imgfs_digest d;
	_cleanup_free_ char *buf = NULL;
	size_t len;
	json_t *cfg, *inner, *out = json_object();

	if (imgfs_digest_parse(&d, jstr(json_object_get(rec, "config"), "digest"), &err) < 0 ||
	    imgfs_store_read_blob(s, &d, IMGFS_MAX_CONFIG_SIZE, &buf, &len, &err) < 0)
		return out;
	cfg = json_loadb(buf, len, 0, NULL);
	inner = json_object_get(cfg, "config");
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *v = json_object_get(inner, keys[i][0]);
		if (v && !json_is_null(v))
			json_object_set(out, keys[i][1], v);
	}
	if (json_object_get(cfg, "author"))
		json_object_set(out, "author", json_object_get(cfg, "author"));
	json_decref(cfg);
	return out;
}

static void print_inspect_text(json_t *o)
{
	json_t *l, *v;
	size_t i;
	char sz[32];
	printf("Name:      %s\n", jstr(o, "name"));
	printf("Digest:    %s\n", jstr(json_object_get(o, "target"), "digest"));
	printf("MediaType: %s\n", jstr(json_object_get(o, "target"), "mediaType"));
	if (json_is_object(json_object_get(o, "index")))
		printf("Index:     %s\n", jstr(json_object_get(o, "index"), "digest"));
	printf("Platform:  %s\n", jstr(o, "platform"));
	printf("Created:   %s\n", jstr(o, "created"));
	printf("Size:      %s\n",
	       imgfs_human_size((uint64_t)json_integer_value(json_object_get(o, "size")), sz,
				sizeof(sz)));
	printf("Config:    %s\n", jstr(json_object_get(o, "config"), "digest"));
	v = json_object_get(json_object_get(o, "config"), "cmd");
	if (v) {
		char *s = json_dumps(v, JSON_COMPACT);
		printf("Cmd:       %s\n", s);
		free(s);
	}
	printf("Layers:\n");
	json_array_foreach(json_object_get(o, "layers"), i, l)
	{
		printf("  %2zu %s %10s  %s\n", i, jstr(l, "digest"),
		       imgfs_human_size((uint64_t)json_integer_value(json_object_get(l, "size")),
					sz, sizeof(sz)),
		       jstr(l, "mediaType"));
	}
}

int cmd_inspect(struct cli *cli, int argc, char **argv)
{
	struct imgfs_error err = {0};
	struct imgfs_store *s;
	bool as_json = false;
	_cleanup_free_ char *name = NULL;
	json_t *rec = NULL, *out, *l, *cfg;
	size_t i;
	int first = simple_opts(
	    argc, argv, &as_json,
	    "Usage: imgfs inspect [--json] REF\n\nShow an image's manifest, config and "
	    "layers (with their diffIDs, chainIDs and snapshot directories in --json).\n");
	if (first < 0)
		return first == -1 ? 0 : EXIT_USAGE;
	if (first != argc - 1)
		return cli_usage_error("inspect", "expected one image reference");
	s = cli_open_store_how(cli, IMGFS_STORE_READ);
	if (!s)
		return 1;
	if (imgfs_pull_lookup(s, argv[first], &name, &rec, &err) < 0) {
		imgfs_store_close(s);
		return cli_fail(&err);
	}
	out = image_view(rec);
	cfg = json_object_get(out, "config");
	{
		json_t *sum = config_summary(s, rec);
		json_object_update(cfg, sum);
		json_decref(sum);
	}
	{
		char *upper =
		    imgfs_store_upper_dir(s, name, jstr(json_object_get(rec, "target"), "digest"));
		json_object_set_new(out, "upper", upper ? json_string(upper) : json_null());
		free(upper);
	}
	json_array_foreach(json_object_get(out, "layers"), i, l)
	{
		struct imgfs_digest chain;
		char *dir = NULL;
		if (imgfs_digest_parse(&chain, jstr(l, "chainID"), &err) == 0 &&
		    imgfs_store_snapshot_dir(s, &chain, &dir, &err) == 0)
			json_object_set_new(l, "snapshot", json_string(dir));
		else
			json_object_set_new(l, "snapshot", json_null());
		free(dir);
	}
	imgfs_store_close(s);
	if (as_json) {
		json_dumpf(out, stdout, JSON_INDENT(2));
		putchar('\n');
	} else {
		print_inspect_text(out);
	}
	json_decref(out);
	json_decref(rec);
	return 0;
}

/* ---- rm and gc ------------------------------------------------------------ */

static void gc_item(void *ctx, const char *what, uint64_t bytes)
{
	char sz[32];
	printf("removed %s (%s)\n", what, imgfs_human_size(bytes, sz, sizeof(sz)));
}

static int run_gc(struct imgfs_store *s)
{
	struct imgfs_error err = {0};
	struct imgfs_gc_report rep = {0};
	char a[32];
	if (imgfs_store_gc(s, gc_item, NULL, &rep, &err) < 0)
		return cli_fail(&err);
	printf("freed %s: %llu blobs, %llu snapshots, %llu rootfs writes of removed images, "
	       "%llu partial downloads\n",
	       imgfs_human_size(rep.blob_bytes + rep.snapshot_bytes + rep.upper_bytes +
				    rep.ingest_bytes + rep.tmp_bytes,
				a, sizeof(a)),
	       (unsigned long long)rep.blobs_removed, (unsigned long long)rep.snapshots_removed,
	       (unsigned long long)rep.uppers_removed,
	       (unsigned long long)(rep.ingests_removed + rep.tmp_removed));
	return 0;
}

/* A mount that is going away drops its hold on the writes a moment after
 * umount returns: wait that long, and a little more, before setting them
 * aside. */
#define RM_WAIT_MS 2000

/* The writes made in the image's rootfs go with it (a later image of the
 * same name must not get them back). */
static int rm_writes(struct imgfs_store *s, const char *name, json_t *rec)
{
	struct imgfs_error err = {0};
	const char *digest = jstr(json_object_get(rec, "target"), "digest");
	_cleanup_free_ char *dir = imgfs_store_upper_dir(s, name, digest);
	bool kept = false;

	if (!dir || access(dir, F_OK) < 0)
		return 0; /* its rootfs was never used */
	if (imgfs_store_upper_remove(s, name, digest, RM_WAIT_MS, &kept, &err) < 0)
		return cli_fail(&err);
	if (kept)
		printf("removed the writes made in its rootfs/ from the store's view: a mounted "
		       "imgfs still serves them until it is unmounted; imgfs gc deletes them "
		       "then\n");
	else
		printf("removed the writes made in its rootfs/\n");
	return 0;
}

int cmd_rm(struct cli *cli, int argc, char **argv)
{
	struct imgfs_error err = {0};
	struct imgfs_store *s;
	int rc = 0;
	int first = simple_opts(
	    argc, argv, NULL,
	    "Usage: imgfs rm REF...\n\nRemove images from the store with the writes made "
	    "in their rootfs/, then remove the blobs and snapshots no other image "
	    "uses.\n");
	if (first < 0)
		return first == -1 ? 0 : EXIT_USAGE;
	if (first >= argc)
		return cli_usage_error("rm", "expected at least one image reference");
	s = cli_open_store_how(cli, IMGFS_STORE_EXISTING);
	if (!s)
		return 1;
	for (int i = first; i < argc; i++) {
		char *name = NULL;
		json_t *rec = NULL;
		if (imgfs_pull_lookup(s, argv[i], &name, &rec, &err) < 0 ||
		    imgfs_store_delete_image(s, name, &err) < 0) {
			rc = cli_fail(&err);
		} else {
			printf("removed image %s\n", name);
			if (rm_writes(s, name, rec) < 0)
				rc = 1;
		}
		json_decref(rec);
		free(name);
	}
	if (run_gc(s) != 0)
		rc = 1;
	imgfs_store_close(s);
	return rc;
}

int cmd_gc(struct cli *cli, int argc, char **argv)
{
	struct imgfs_store *s;
	int rc;
	int first =
	    simple_opts(argc, argv, NULL,
			"Usage: imgfs gc\n\nRemove blobs and snapshots no image references, and "
			"abandoned partial downloads. Prints what it freed.\n");
	if (first < 0)
		return first == -1 ? 0 : EXIT_USAGE;
	if (first != argc)
		return cli_usage_error("gc", "no arguments expected");
	s = cli_open_store_how(cli, IMGFS_STORE_EXISTING);
	if (!s)
		return 1;
	rc = run_gc(s);
	imgfs_store_close(s);
	return rc;
}
