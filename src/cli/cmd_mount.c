// SPDX-License-Identifier: Apache-2.0
/* imgfs mount (the FUSE daemon) and imgfs reset (discard a rootfs's writes). */
#include "cli.h"
#include "../fs/fs.h"

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static int mount_usage(FILE *f)
{
	fputs("Usage: imgfs mount [-f] [-o OPTIONS] DIR\n"
	      "\n"
	      "Mount the store's images as a tree at DIR (see imgfs(5)). Without -f the\n"
	      "daemon detaches and logs to syslog. `umount DIR` or `fusermount3 -u DIR`\n"
	      "ends it.\n"
	      "\n"
	      "  -f              stay in the foreground, log to stderr\n"
	      "  -o OPTIONS      comma-separated:\n"
	      "     store=DIR    the store (default: --store, $IMGFS_STORE, " IMGFS_DEFAULT_STORE
	      ")\n"
	      "     config=FILE  registry configuration for pulls under pull/\n"
	      "     allow_other  let other users see the tree\n"
	      "     ro           rootfs/ is read-only too\n"
	      "     blobs=root|all who may read layer blobs under blobs/ (default root:\n"
	      "                  a layer tarball bypasses the modes of the files in it)\n"
	      "     debug        trace every request (implies -f)\n"
	      "     no_uring     talk to the kernel through /dev/fuse only, not FUSE\n"
	      "                  over io_uring (used by default where the kernel has it)\n"
	      "     pull=root|all|none  who may make a lookup under pull/ pull: root only\n"
	      "                  (default; other users see what the store has), every\n"
	      "                  user (others anonymously), or nobody\n"
	      "     pull_creds=shared  other users' pulls use the mounter's credentials\n"
	      "                  (default anonymous: no credentials at all)\n"
	      "     pull_max_size=SIZE  the largest image another user may pull, in bytes\n"
	      "                  compressed (K, M, G, T suffixes; 0: no limit; default 4G)\n"
	      "     pull_max_per_user=N  pulls one other user may have running (default 4)\n"
	      "  rw, suid, nosuid, dev, nodev, exec, noexec, atime, noatime, auto, noauto,\n"
	      "  user, nouser, defaults, _netdev and x-* (from fstab) are accepted and ignored.\n",
	      f);
	return f == stdout ? 0 : EXIT_USAGE;
}

static bool ignored_option(const char *o)
{
	static const char *const names[] = {
	    "rw",      "suid",	   "nosuid",	  "dev",   "nodev",  "exec",  "noexec",	  "atime",
	    "noatime", "auto",	   "noauto",	  "user",  "nouser", "users", "defaults", "_netdev",
	    "nofail",  "relatime", "strictatime", "async", "sync",   NULL};
	if (!strncmp(o, "x-", 2) || !strncmp(o, "comment=", 8))
		return true;
	for (size_t i = 0; names[i]; i++) {
		if (!strcmp(o, names[i]))
			return true;
	}
	return false;
}

/* Re-run with --config FILE so the registry settings are loaded as everywhere else. */
static int reexec_with_config(struct cli *cli, const char *config, int argc, char **argv)
{
	char **nargv = calloc((size_t)argc + 8, sizeof(char *));
	int n = 0;

	if (!nargv)
		return 1;
	nargv[n++] = "imgfs";
	nargv[n++] = "--store";
	nargv[n++] = (char *)cli->store_dir;
	nargv[n++] = "--config";
	nargv[n++] = (char *)config;
	for (int i = 0; i < argc; i++)
		nargv[n++] = argv[i];
	execv("/proc/self/exe", nargv);
	perror("imgfs mount: exec");
	free(nargv);
	return 1;
}

/* "4G", "512M", "1000": bytes, with binary K, M, G, T suffixes. */
static int parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMGT";
	unsigned long long v;
	const char *u;
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	if (*end) {
		u = strchr(units, *end & ~0x20);
		if (!u || !*u || (end[1] && strcmp(end + 1, "iB") && strcmp(end + 1, "B")))
			return -1;
		for (long i = 0; i <= u - units; i++) {
			if (v > UINT64_MAX / 1024)
				return -1;
			v *= 1024;
		}
	}
	*out = v;
	return 0;
}

/* The pull policy options (mount.fuse.imgfs(8)). 1 if o is one, 0 if not,
 * EXIT_USAGE after a usage error. */
static int pull_option(const char *o, struct imgfs_fs_opts *fo)
{
	char *end;
	unsigned long n;

	if (!strcmp(o, "pull=root"))
		fo->pull = IMGFS_FS_PULL_ROOT;
	else if (!strcmp(o, "pull=all"))
		fo->pull = IMGFS_FS_PULL_ALL;
	else if (!strcmp(o, "pull=none"))
		fo->pull = IMGFS_FS_PULL_NONE;
	else if (!strncmp(o, "pull=", 5))
		return cli_usage_error("mount", "-o %s: expected pull=root, pull=all or pull=none",
				       o);
	else if (!strcmp(o, "pull_creds=shared") || !strcmp(o, "pull_creds=anonymous"))
		fo->pull_creds_shared = o[11] == 's';
	else if (!strncmp(o, "pull_creds=", 11))
		return cli_usage_error("mount", "-o %s: expected pull_creds=anonymous or shared",
				       o);
	else if (!strncmp(o, "pull_max_size=", 14)) {
		if (parse_size(o + 14, &fo->pull_max_size) < 0)
			return cli_usage_error("mount", "-o %s: expected a size such as 4G", o);
	} else if (!strncmp(o, "pull_max_per_user=", 18)) {
		errno = 0;
		n = strtoul(o + 18, &end, 10);
		if (o[18] < '0' || o[18] > '9' || *end || errno || n > 1000000)
			return cli_usage_error("mount", "-o %s: expected a number", o);
		fo->pull_max_per_user = (unsigned)n;
	} else
		return 0;
	return 1;
}

static int parse_options(struct cli *cli, char *opts, struct imgfs_fs_opts *fo, const char **config)
{
	char *save = NULL;
	int rc;

	for (char *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		if (!strncmp(o, "pull", 4) && (rc = pull_option(o, fo)) != 0) {
			if (rc != 1)
				return rc;
		} else if (!strncmp(o, "store=", 6))
			cli->store_dir = o + 6;
		else if (!strncmp(o, "config=", 7))
			*config = o + 7;
		else if (!strcmp(o, "allow_other"))
			fo->allow_other = true;
		else if (!strcmp(o, "blobs=root") || !strcmp(o, "blobs=all"))
			fo->blobs_all = !strcmp(o, "blobs=all");
		else if (!strcmp(o, "ro"))
			fo->read_only = true;
		else if (!strcmp(o, "debug"))
			fo->debug = fo->foreground = true;
		else if (!strcmp(o, "no_uring"))
			fo->no_uring = true;
		else if (!ignored_option(o))
			return cli_usage_error("mount", "unknown option '%s'", o);
	}
	return 0;
}

int cmd_mount(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	struct imgfs_fs_opts fo = {.fetch = &cli->fetch,
				   .pull = IMGFS_FS_PULL_ROOT,
				   .pull_max_size = IMGFS_FS_PULL_MAX_SIZE_DEFAULT,
				   .pull_max_per_user = IMGFS_FS_PULL_MAX_PER_USER_DEFAULT};
	struct imgfs_error err = {0};
	const char *config = NULL;
	/* every -o, joined: store_dir and config point into it until the end */
	_cleanup_free_ char *optstr = NULL;
	int c, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, "+fo:hsnv", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			fo.foreground = true;
			break;
		case 'o': {
			char *all = optstr ? imgfs_xasprintf("%s,%s", optstr, optarg)
					   : imgfs_xstrdup(optarg);
			free(optstr);
			optstr = all;
			break;
		}
		case 's': /* -s (single thread) and -n (no mtab) as mount(8) may pass: ignored */
		case 'n':
		case 'v':
			break;
		case 'h':
			return mount_usage(stdout);
		default:
			return mount_usage(stderr);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error("mount", "expected one mount point");
	if (optstr) {
		rc = parse_options(cli, optstr, &fo, &config);
		if (rc)
			return rc;
	}
	if (config && strcmp(config, cli->config_path))
		return reexec_with_config(cli, config, argc, argv);
	if (cli_need_privileges("mount") < 0)
		return 1;
	fo.mountpoint = argv[optind];
	fo.store_dir = cli->store_dir;
	rc = imgfs_fs_main(&fo, &err);
	return rc < 0 ? cli_fail(&err) : 0;
}

/* A mount that is going away drops its hold on the upper dir a moment after
 * umount returns (~45 ms seen): reset waits that long, and a little more. */
#define RESET_WAIT_MS 2000

int cmd_reset(struct cli *cli, int argc, char **argv)
{
	struct imgfs_error err = {0};
	_cleanup_free_ char *name = NULL;
	struct imgfs_store *s;
	json_t *rec = NULL;
	int rc;

	if (argc == 2 && cli_is_help(argv[1])) {
		fputs("Usage: imgfs reset REF\n"
		      "\n"
		      "Discard the changes made in the image's rootfs/ (empty its upper\n"
		      "directory). Refused while a mounted imgfs has that rootfs in use.\n",
		      stdout);
		return 0;
	}
	if (argc != 2)
		return cli_usage_error("reset", "expected one image reference");
	s = cli_open_store_how(cli, IMGFS_STORE_EXISTING);
	if (!s)
		return 1;
	rc = imgfs_pull_lookup(s, argv[1], &name, &rec, &err);
	if (rc < 0 && err.code == ENOENT) {
		/* imgfs rm discarded its writes with it */
		imgfs_store_close(s);
		fprintf(stderr, "imgfs: reset %s: nothing to reset: %s\n", argv[1], err.msg);
		return 0;
	}
	if (rc == 0)
		rc = imgfs_store_upper_reset(
		    s, name,
		    json_string_value(json_object_get(json_object_get(rec, "target"), "digest")),
		    RESET_WAIT_MS, &err);
	json_decref(rec);
	imgfs_store_close(s);
	return rc < 0 ? cli_fail(&err) : 0;
}
