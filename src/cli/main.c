/* SPDX-License-Identifier: Apache-2.0 */
/* The imgfs command: global options and subcommand dispatch. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char usage_text[] =
	"Usage: imgfs [--store DIR] [--config FILE] [-v] COMMAND [ARGS]\n"
	"\n"
	"Container images as a browsable tree, with a content store underneath.\n"
	"\n"
	"Commands:\n"
	"  pull [--platform P] REF   fetch, verify and unpack an image from a registry\n"
	"  import [--name REPO] DIR  import the images of an OCI image layout\n"
	"  images [--json]           list images in the store\n"
	"  inspect [--json] REF      show an image's manifest, config and layers\n"
	"  rm REF...                 remove images (then collect garbage)\n"
	"  gc                        remove blobs and snapshots no image references\n"
	"  mount [-f] [-o OPTS] DIR  mount the images as a tree at DIR (imgfs(5))\n"
	"  reset REF                 discard the writes made in an image's rootfs/\n"
	"\n"
	"Options:\n"
	"  --store DIR     the store (default $IMGFS_STORE, else " IMGFS_DEFAULT_STORE ")\n"
	"  --config FILE   registry configuration (default /etc/imgfs/config.json)\n"
	"  -v, --verbose   debug logging\n"
	"  --version       print the version\n"
	"\n"
	"Exit status: 0 ok, 1 failed, 2 usage error. See imgfs(1).\n";

static const struct {
	const char *name;
	int (*fn)(struct cli *, int, char **);
} commands[] = {
	{"pull", cmd_pull},   {"import", cmd_import}, {"images", cmd_images},
	{"inspect", cmd_inspect}, {"rm", cmd_rm},     {"gc", cmd_gc},
	{"mount", cmd_mount},	  {"reset", cmd_reset},
};

bool cli_is_help(const char *arg)
{
	return !strcmp(arg, "-h") || !strcmp(arg, "--help");
}

int cli_fail(const struct imgfs_error *err)
{
	fprintf(stderr, "imgfs: %s\n", err->msg);
	return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "imgfs%s%s: ", cmd ? " " : "", cmd ? cmd : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'imgfs %s--help'.\n", cmd ? cmd : "");
	return EXIT_USAGE;
}

struct imgfs_store *cli_open_store(struct cli *cli)
{
	struct imgfs_error err = {0};
	struct imgfs_store *s;
	if (imgfs_store_open(cli->store_dir, &s, &err) < 0) {
		cli_fail(&err);
		return NULL;
	}
	return s;
}

/* Registry settings with Docker's daemon.json keys. A missing default file is
 * fine; a missing --config file or a malformed one is an error. */
static int load_config(struct cli *cli, bool explicit)
{
	json_error_t jerr;
	json_t *v;
	size_t i, n = 0;

	imgfs_fetch_config_init(&cli->fetch);
	if (!explicit && access(cli->config_path, F_OK) < 0)
		return 0;
	cli->config = json_load_file(cli->config_path, JSON_REJECT_DUPLICATES, &jerr);
	if (!cli->config || !json_is_object(cli->config)) {
		fprintf(stderr, "imgfs: config %s: %s (line %d)\n", cli->config_path,
			cli->config ? "not a JSON object" : jerr.text, jerr.line);
		return -1;
	}
	v = json_object_get(cli->config, "max-concurrent-downloads");
	if (v) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 16) {
			fprintf(stderr, "imgfs: config %s: max-concurrent-downloads must be 1..16\n",
				cli->config_path);
			return -1;
		}
		cli->fetch.max_concurrent_downloads = (int)json_integer_value(v);
	}
	v = json_object_get(cli->config, "insecure-registries");
	if (v) {
		if (!json_is_array(v)) {
			fprintf(stderr, "imgfs: config %s: insecure-registries must be an array\n",
				cli->config_path);
			return -1;
		}
		cli->fetch.insecure_registries = calloc(json_array_size(v) + 1, sizeof(char *));
		json_array_foreach(v, i, v) {
			if (json_is_string(v))
				cli->fetch.insecure_registries[n++] = (char *)json_string_value(v);
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'}, {"config", required_argument, NULL, 'c'},
		{"verbose", no_argument, NULL, 'v'},     {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},     {NULL, 0, NULL, 0},
	};
	struct cli cli = {0};
	bool explicit_config = false;
	int c, rc;

	cli.store_dir = getenv("IMGFS_STORE");
	if (!cli.store_dir || !*cli.store_dir)
		cli.store_dir = IMGFS_DEFAULT_STORE;
	cli.config_path = "/etc/imgfs/config.json";
	while ((c = getopt_long(argc, argv, "+vh", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			cli.store_dir = optarg;
			break;
		case 'c':
			cli.config_path = optarg;
			explicit_config = true;
			break;
		case 'v':
			imgfs_log_set_level(IMGFS_LOG_DEBUG);
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case 'V':
			printf("imgfs %s\n", IMGFS_VERSION);
			return 0;
		default:
			fputs(usage_text, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fputs(usage_text, stderr);
		return EXIT_USAGE;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[optind], commands[i].name))
			continue;
		if (load_config(&cli, explicit_config) < 0)
			return 1;
		optind++;
		rc = commands[i].fn(&cli, argc - optind + 1, argv + optind - 1);
		free(cli.fetch.insecure_registries);
		json_decref(cli.config);
		return rc;
	}
	return cli_usage_error(NULL, "unknown command '%s'", argv[optind]);
}
