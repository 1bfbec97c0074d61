/* SPDX-License-Identifier: Apache-2.0 */
/* The imgfs command: global options and subcommand dispatch. */
#include "cli.h"

#include <getopt.h>
#include <sys/prctl.h>
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
    "  login [-u USER] HOST      store credentials for HOST (password read from stdin)\n"
    "  logout HOST               remove HOST's credentials\n"
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
    {"pull", cmd_pull},	  {"import", cmd_import}, {"images", cmd_images}, {"inspect", cmd_inspect},
    {"rm", cmd_rm},	  {"gc", cmd_gc},	  {"mount", cmd_mount},	  {"reset", cmd_reset},
    {"login", cmd_login}, {"logout", cmd_logout},
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
	fprintf(stderr, "\nTry 'imgfs %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
	return EXIT_USAGE;
}

struct imgfs_store *cli_open_store_how(struct cli *cli, enum imgfs_store_how how)
{
	struct imgfs_error err = {0};
	struct imgfs_store *s;
	if (imgfs_store_open_how(cli->store_dir, how, &s, &err) < 0) {
		cli_fail(&err);
		return NULL;
	}
	return s;
}

struct imgfs_store *cli_open_store(struct cli *cli)
{
	return cli_open_store_how(cli, IMGFS_STORE_CREATE);
}

int cli_need_privileges(const char *cmd)
{
	char missing[256];

	if (!imgfs_caps_missing(imgfs_unpack_caps, imgfs_unpack_ncaps, missing, sizeof(missing)))
		return 0;
	fprintf(stderr,
		"imgfs %s: needs root (missing %s): unpacking layers exactly sets owners, "
		"creates device nodes and overlay whiteouts; unprivileged (rootless) use is not "
		"supported yet\n",
		cmd, missing);
	return -1;
}

/* Registry settings (src/fetch/config.c). A missing default file is fine; a
 * missing --config file or a malformed one is an error. */
static int load_config(struct cli *cli, bool explicit)
{
	struct imgfs_error err = {0};
	imgfs_fetch_config_init(&cli->fetch);
	if (imgfs_fetch_config_load(&cli->fetch, cli->config_path, explicit, &err) < 0) {
		cli_fail(&err);
		return -1;
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

	/* Tokens and passwords live in this process: no core dumps of it, no
	 * ptrace by others (docs/registry.md). */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
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
		imgfs_fetch_config_destroy(&cli.fetch);
		return rc;
	}
	return cli_usage_error(NULL, "unknown command '%s'", argv[optind]);
}
