/* SPDX-License-Identifier: Apache-2.0 */
/*
 * imgfs login / logout: write and remove a registry's entry in the auth file
 * docker, podman and skopeo read. The password is read from stdin (never
 * from the command line, where every user could read it in /proc).
 */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define MAX_SECRET 8192

/* One line from stdin, without the newline; echo off on a terminal. */
static char *read_secret(const char *prompt)
{
	struct termios old, quiet;
	bool tty = isatty(0) && tcgetattr(0, &old) == 0;
	char *buf = imgfs_xmalloc(MAX_SECRET + 1);
	size_t n = 0;
	int c;

	if (tty) {
		fputs(prompt, stderr);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(0, TCSAFLUSH, &quiet);
	}
	while ((c = getchar()) != EOF && c != '\n' && n < MAX_SECRET)
		buf[n++] = (char)c;
	if (n && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	if (tty) {
		tcsetattr(0, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	return buf;
}

/* "https://ghcr.io/" -> "ghcr.io"; the Docker Hub aliases -> docker.io. */
static char *login_host(const char *arg)
{
	return imgfs_creds_normalize_key(arg);
}

static const char login_usage[] =
    "Usage: imgfs login [-u USER] [--authfile FILE] HOST\n"
    "Store credentials for HOST. The password (or token) is read from stdin.\n";

int cmd_login(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"username", required_argument, NULL, 'u'},
	    {"authfile", required_argument, NULL, 'a'},
	    {"password-stdin", no_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct imgfs_error err = {0};
	_cleanup_free_ char *user = NULL;
	_cleanup_free_ char *host = NULL;
	_cleanup_free_ char *file = NULL;
	const char *authfile = cli->fetch.auth_file;
	char *pass;
	int c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "u:h", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			free(user);
			user = imgfs_xstrdup(optarg);
			break;
		case 'a':
			authfile = optarg;
			break;
		case 'p':
			break; /* always */
		case 'h':
			fputs(login_usage, stdout);
			return 0;
		default:
			fputs(login_usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1)
		return cli_usage_error("login", "expected one registry host");
	host = login_host(argv[optind]);
	if (!*host)
		return cli_usage_error("login", "empty registry host");
	if (!user) {
		user = read_secret("Username: ");
		if (isatty(0) == 0 && !*user)
			return cli_usage_error("login", "no user name (use -u USER)");
	}
	if (!*user || strchr(user, ':'))
		return cli_usage_error("login", "invalid user name");
	pass = read_secret("Password: ");
	if (!*pass) {
		free(pass);
		return cli_usage_error("login", "no password on stdin");
	}
	file = imgfs_creds_default_file(authfile);
	if (!file) {
		explicit_bzero(pass, strlen(pass));
		free(pass);
		imgfs_error_set(&err, ENOENT, "no auth file: set HOME or REGISTRY_AUTH_FILE");
		return cli_fail(&err);
	}
	rc = imgfs_creds_store(file, host, user, pass, &err);
	explicit_bzero(pass, strlen(pass));
	free(pass);
	if (rc < 0)
		return cli_fail(&err);
	printf("Login credentials for %s saved in %s\n", host, file);
	return 0;
}

int cmd_logout(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"authfile", required_argument, NULL, 'a'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct imgfs_error err = {0};
	_cleanup_free_ char *host = NULL;
	_cleanup_free_ char *file = NULL;
	const char *authfile = cli->fetch.auth_file;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			authfile = optarg;
			break;
		case 'h':
			puts("Usage: imgfs logout [--authfile FILE] HOST");
			return 0;
		default:
			return cli_usage_error("logout", "bad option");
		}
	}
	if (optind != argc - 1)
		return cli_usage_error("logout", "expected one registry host");
	host = login_host(argv[optind]);
	file = imgfs_creds_default_file(authfile);
	if (!file) {
		imgfs_error_set(&err, ENOENT, "no auth file: set HOME or REGISTRY_AUTH_FILE");
		return cli_fail(&err);
	}
	if (imgfs_creds_erase(file, host, &err) < 0)
		return cli_fail(&err);
	printf("Removed login credentials for %s from %s\n", host, file);
	return 0;
}
