/* SPDX-License-Identifier: Apache-2.0 */
/* imgfs pull and imgfs import, with their progress display. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char *state_names[] = {
    [IMGFS_LAYER_WAITING] = "waiting",	      [IMGFS_LAYER_DOWNLOADING] = "downloading",
    [IMGFS_LAYER_EXTRACTING] = "extracting",  [IMGFS_LAYER_DONE] = "done",
    [IMGFS_LAYER_EXISTS] = "already present", [IMGFS_LAYER_FAILED] = "failed",
};

struct progress_view {
	bool tty;
	size_t drawn;		      /* lines drawn last time (tty) */
	enum imgfs_layer_state *last; /* per layer (plain output) */
	size_t n;
};

static void bar(char *out, size_t width, uint64_t done, uint64_t total)
{
	size_t fill = total ? (size_t)((double)done / (double)total * (double)width) : width;
	if (fill > width)
		fill = width;
	for (size_t i = 0; i < width; i++)
		out[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
	out[width] = '\0';
}

static void show_progress(void *ctx, const struct imgfs_pull_progress *p)
{
	struct progress_view *v = ctx;
	char a[32], b[32], line[64];

	if (!v->last) {
		v->last = calloc(p->n_layers + 1, sizeof(*v->last));
		v->n = p->n_layers;
		for (size_t i = 0; v->last && i < v->n; i++)
			v->last[i] = (enum imgfs_layer_state) - 1;
	}
	if (v->tty) {
		if (v->drawn)
			fprintf(stderr, "\033[%zuA", v->drawn);
		for (size_t i = 0; i < p->n_layers; i++) {
			const struct imgfs_pull_layer_progress *l = &p->layers[i];
			bool active = l->state == IMGFS_LAYER_DOWNLOADING ||
				      l->state == IMGFS_LAYER_EXTRACTING;
			bar(line, 30,
			    l->state == IMGFS_LAYER_DOWNLOADING ? l->downloaded : l->extracted,
			    l->size);
			fprintf(stderr, "\033[2K%.19s  %-15s", l->digest, state_names[l->state]);
			if (active)
				fprintf(stderr, " [%s] %s/%s", line,
					imgfs_human_size(l->downloaded, a, sizeof(a)),
					imgfs_human_size(l->size, b, sizeof(b)));
			else
				fprintf(stderr, " %s", imgfs_human_size(l->size, a, sizeof(a)));
			fputc('\n', stderr);
		}
		v->drawn = p->n_layers;
		return;
	}
	/* Plain output: one line per layer when it reaches a final state. */
	for (size_t i = 0; v->last && i < p->n_layers && i < v->n; i++) {
		const struct imgfs_pull_layer_progress *l = &p->layers[i];
		bool final = l->state == IMGFS_LAYER_DONE || l->state == IMGFS_LAYER_EXISTS;
		if (!final || v->last[i] == l->state)
			continue;
		v->last[i] = l->state;
		fprintf(stderr, "layer %zu/%zu %s: %s (%s%s%s)\n", i + 1, p->n_layers, l->digest,
			state_names[l->state], imgfs_human_size(l->size, a, sizeof(a)),
			l->source ? " from " : "", l->source ? l->source : "");
	}
}

/* --platform is checked when parsed: a malformed one is a usage error. */
static int check_platform(const char *cmd, const char *p)
{
	struct imgfs_error err = {0};
	struct imgfs_platform plat;

	if (imgfs_platform_parse(p, &plat, &err) < 0)
		return cli_usage_error(cmd, "%s", err.msg);
	imgfs_platform_destroy(&plat);
	return 0;
}

static int pull_usage(FILE *f)
{
	fputs("Usage: imgfs pull [--platform OS/ARCH[/VARIANT]] [-q] REF\n"
	      "\n"
	      "Resolve REF at its registry, fetch what the store lacks, verify every byte\n"
	      "and unpack each layer into its snapshot. Progress goes to stderr; the last\n"
	      "line on stdout is \"Digest: <manifest digest>\".\n"
	      "\n"
	      "  --platform P   choose P from a multi-platform index (default: this host)\n"
	      "  -q, --quiet    no progress output\n",
	      f);
	return f == stdout ? 0 : EXIT_USAGE;
}

int cmd_pull(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {{"platform", required_argument, NULL, 'p'},
					     {"quiet", no_argument, NULL, 'q'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	struct progress_view view = {.tty = isatty(2)};
	struct imgfs_pull_opts po = {
	    .fetch = &cli->fetch, .progress = show_progress, .progress_ctx = &view};
	struct imgfs_error err = {0};
	struct imgfs_store *s;
	json_t *rec = NULL;
	int c, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (check_platform("pull", optarg))
				return EXIT_USAGE;
			po.platform = optarg;
			break;
		case 'q':
			po.progress = NULL;
			break;
		case 'h':
			return pull_usage(stdout);
		default:
			return pull_usage(stderr);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error("pull", "expected one image reference");
	if (cli_need_privileges("pull") < 0)
		return 1;
	s = cli_open_store(cli);
	if (!s)
		return 1;
	rc = imgfs_pull(s, argv[optind], &po, &rec, &err);
	free(view.last);
	imgfs_store_close(s);
	if (rc < 0)
		return cli_fail(&err);
	printf("%s\nDigest: %s\n", json_string_value(json_object_get(rec, "name")),
	       json_string_value(json_object_get(json_object_get(rec, "target"), "digest")));
	json_decref(rec);
	return 0;
}

static void imported(void *ctx, const char *name, json_t *rec)
{
	printf("%s %s\n", name,
	       json_string_value(json_object_get(json_object_get(rec, "target"), "digest")));
}

int cmd_import(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
					     {"platform", required_argument, NULL, 'p'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	struct imgfs_pull_opts po = {.fetch = &cli->fetch};
	struct imgfs_error err = {0};
	const char *base = NULL;
	struct imgfs_store *s;
	int c, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			base = optarg;
			break;
		case 'p':
			if (check_platform("import", optarg))
				return EXIT_USAGE;
			po.platform = optarg;
			break;
		case 'h':
			fputs("Usage: imgfs import [--name REPO] [--platform P] DIR\n"
			      "\n"
			      "Import the images of an OCI image layout (as `skopeo copy ... "
			      "oci:DIR`\n"
			      "writes), named by their org.opencontainers.image.ref.name "
			      "annotations;\n"
			      "entries named only by a tag get the repository REPO.\n",
			      stdout);
			return 0;
		default:
			return cli_usage_error("import", "bad option");
		}
	}
	if (optind != argc - 1)
		return cli_usage_error("import", "expected one directory");
	if (cli_need_privileges("import") < 0)
		return 1;
	s = cli_open_store(cli);
	if (!s)
		return 1;
	rc = imgfs_import_layout(s, argv[optind], base, &po, imported, NULL, &err);
	imgfs_store_close(s);
	return rc < 0 ? cli_fail(&err) : 0;
}
