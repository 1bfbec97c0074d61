/* SPDX-License-Identifier: Apache-2.0 */
/* Shared by the imgfs command's subcommands. */
#ifndef IMGFS_CLI_H
#define IMGFS_CLI_H

#include "../pull/pull.h"

#define EXIT_USAGE 2

struct cli {
	const char *store_dir;
	const char *config_path;
	struct imgfs_fetch_config fetch;
};

/* Open the store (creating it); prints the error and returns NULL on failure. */
struct imgfs_store *cli_open_store(struct cli *cli);
/* The same for commands that must not create one (rm, gc) or only read
 * (IMGFS_STORE_READ: images, inspect). */
struct imgfs_store *cli_open_store_how(struct cli *cli, enum imgfs_store_how how);
/* Commands that unpack layers (pull, import, mount) need the capabilities
 * of an exact unpack: -1 after naming the missing ones on stderr. */
int cli_need_privileges(const char *cmd);
/* Print "imgfs: <msg>" to stderr and return 1. */
int cli_fail(const struct imgfs_error *err);
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when argv[i] is -h/--help. */
bool cli_is_help(const char *arg);

int cmd_pull(struct cli *cli, int argc, char **argv);
int cmd_import(struct cli *cli, int argc, char **argv);
int cmd_images(struct cli *cli, int argc, char **argv);
int cmd_inspect(struct cli *cli, int argc, char **argv);
int cmd_rm(struct cli *cli, int argc, char **argv);
int cmd_gc(struct cli *cli, int argc, char **argv);
int cmd_mount(struct cli *cli, int argc, char **argv);
int cmd_reset(struct cli *cli, int argc, char **argv);
int cmd_login(struct cli *cli, int argc, char **argv);
int cmd_logout(struct cli *cli, int argc, char **argv);

#endif
