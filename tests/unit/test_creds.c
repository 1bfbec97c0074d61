/* SPDX-License-Identifier: Apache-2.0 */
/* Credentials (src/fetch/creds.c), the config (config.c) and the
 * insecure-registries matcher: auth file keys as docker/podman write them,
 * base64 "auth" and username/password entries, identity tokens, credential
 * helpers run from PATH, login/logout round trips that keep other keys, and
 * the config's validation. */
#include "fetch/fetch_i.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/imgfs-test-creds.XXXXXX";

static char *write_file(const char *name, const char *text, int mode)
{
	char *p = imgfs_xasprintf("%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	fputs(text, f);
	fclose(f);
	chmod(p, (mode_t)mode);
	return p;
}

static void test_normalize(void)
{
	const char *cases[][2] = {
	    {"https://index.docker.io/v1/", "docker.io"},
	    {"index.docker.io", "docker.io"},
	    {"registry-1.docker.io", "docker.io"},
	    {"docker.io", "docker.io"},
	    {"https://GHCR.io/", "ghcr.io"},
	    {"http://127.0.0.1:5000", "127.0.0.1:5000"},
	    {"quay.io/org/repo", "quay.io"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *n = imgfs_creds_normalize_key(cases[i][0]);
		CHECK_STR(n, cases[i][1]);
		free(n);
	}
}

static void test_lookup_file(void)
{
	struct imgfs_creds c;
	struct imgfs_error err = {0};
	/* alice:pw:with:colons */
	char *f = write_file("auth.json",
			     "{\"auths\": {\"https://index.docker.io/v1/\": {\"auth\": "
			     "\"YWxpY2U6cHc6d2l0aDpjb2xvbnM=\"},"
			     "\"ghcr.io\": {\"username\": \"bob\", \"password\": \"x\"},"
			     "\"reg.local:5000\": {\"identitytoken\": \"rt\"},"
			     "\"bad.local\": {\"auth\": \"!!notbase64\"}}}",
			     0600);
	CHECK(imgfs_creds_lookup("registry-1.docker.io", f, &c, &err) == 1);
	CHECK_STR(c.username, "alice");
	CHECK_STR(c.password, "pw:with:colons");
	CHECK_STR(c.source, f);
	imgfs_creds_destroy(&c);
	CHECK(imgfs_creds_lookup("ghcr.io", f, &c, &err) == 1);
	CHECK_STR(c.username, "bob");
	imgfs_creds_destroy(&c);
	CHECK(imgfs_creds_lookup("reg.local:5000", f, &c, &err) == 1);
	CHECK(c.username == NULL);
	CHECK_STR(c.identity_token, "rt");
	imgfs_creds_destroy(&c);
	CHECK(imgfs_creds_lookup("reg.local", f, &c, &err) == 0);
	CHECK(imgfs_creds_lookup("bad.local", f, &c, &err) == -1);
	CHECK(err.code == EINVAL && strstr(err.msg, "bad.local") && strstr(err.msg, f));
	free(f);
}

static void test_search_order(void)
{
	struct imgfs_creds c;
	struct imgfs_error err = {0};
	char *home = imgfs_xasprintf("%s/home", dir);
	char *rt = imgfs_xasprintf("%s/run", dir);
	char *d;
	mkdir(home, 0700);
	d = imgfs_xasprintf("%s/.docker", home);
	mkdir(d, 0700);
	free(d);
	d = imgfs_xasprintf("%s/containers", rt);
	mkdir(rt, 0700);
	mkdir(d, 0700);
	free(d);
	free(write_file("home/.docker/config.json",
			"{\"auths\": {\"a.io\": {\"auth\": \"ZG9ja2VyOjE=\"}, \"b.io\": {\"auth\": "
			"\"ZG9ja2VyOjI=\"}}}",
			0600));
	free(write_file("run/containers/auth.json",
			"{\"auths\": {\"a.io\": {\"auth\": \"cG9kbWFuOjE=\"}}}", 0600));
	setenv("HOME", home, 1);
	setenv("XDG_RUNTIME_DIR", rt, 1);
	unsetenv("REGISTRY_AUTH_FILE");
	unsetenv("DOCKER_CONFIG");
	/* podman's file first, docker's after */
	CHECK(imgfs_creds_lookup("a.io", NULL, &c, &err) == 1);
	CHECK_STR(c.username, "podman");
	imgfs_creds_destroy(&c);
	CHECK(imgfs_creds_lookup("b.io", NULL, &c, &err) == 1);
	CHECK_STR(c.username, "docker");
	imgfs_creds_destroy(&c);
	free(home);
	free(rt);
}

static void test_helper(void)
{
	struct imgfs_creds c;
	struct imgfs_error err = {0};
	char *bin = imgfs_xasprintf("%s/bin", dir);
	char *path = imgfs_xasprintf("%s:%s", bin, getenv("PATH"));
	char *f;
	mkdir(bin, 0700);
	free(write_file(
	    "bin/docker-credential-t",
	    "#!/bin/sh\nread h\n[ \"$1\" = get ] || exit 3\n"
	    "case $h in h.io) echo '{\"Username\":\"u\",\"Secret\":\"s\"}';;\n"
	    "tok.io) echo '{\"Username\":\"<token>\",\"Secret\":\"idt\"}';;\n"
	    "https://index.docker.io/v1/) echo '{\"Username\":\"hub\",\"Secret\":\"s\"}';;\n"
	    "junk.io) echo nope;; *) echo not found; exit 1;; esac\n",
	    0755));
	setenv("PATH", path, 1);
	f = write_file("helpers.json",
		       "{\"credHelpers\": {\"h.io\": \"t\", \"tok.io\": \"t\", \"junk.io\": \"t\", "
		       "\"gone.io\": \"absent\", \"evil.io\": \"../x\", \"docker.io\": \"t\"}}",
		       0600);
	CHECK(imgfs_creds_lookup("h.io", f, &c, &err) == 1);
	CHECK_STR(c.username, "u");
	CHECK_STR(c.password, "s");
	CHECK_STR(c.source, "docker-credential-t");
	imgfs_creds_destroy(&c);
	CHECK(imgfs_creds_lookup("tok.io", f, &c, &err) == 1);
	CHECK_STR(c.identity_token, "idt");
	imgfs_creds_destroy(&c);
	CHECK(imgfs_creds_lookup("docker.io", f, &c, &err) == 1);
	CHECK_STR(c.username, "hub");
	imgfs_creds_destroy(&c);
	CHECK(imgfs_creds_lookup("junk.io", f, &c, &err) == -1 && err.code == EACCES);
	CHECK(imgfs_creds_lookup("gone.io", f, &c, &err) == -1 &&
	      strstr(err.msg, "docker-credential-absent"));
	CHECK(imgfs_creds_lookup("evil.io", f, &c, &err) == -1 && err.code == EINVAL);
	free(f);
	free(bin);
	free(path);
}

static void test_store_erase(void)
{
	struct imgfs_creds c;
	struct imgfs_error err = {0};
	struct stat st;
	char *f = imgfs_xasprintf("%s/new/dir/auth.json", dir);
	char *g = write_file("keep.json", "{\"credsStore\": \"x\", \"auths\": {}}", 0600);
	CHECK(imgfs_creds_store(f, "docker.io", "me", "p@ss:word", &err) == 0);
	CHECK(stat(f, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK(imgfs_creds_lookup("index.docker.io", f, &c, &err) == 1);
	CHECK_STR(c.password, "p@ss:word");
	imgfs_creds_destroy(&c);
	CHECK(imgfs_creds_store(f, "docker.io", "me2", "q", &err) == 0);
	CHECK(imgfs_creds_lookup("docker.io", f, &c, &err) == 1);
	CHECK_STR(c.username, "me2");
	imgfs_creds_destroy(&c);
	CHECK(imgfs_creds_erase(f, "https://index.docker.io/v1/", &err) == 0);
	CHECK(imgfs_creds_lookup("docker.io", f, &c, &err) == 0);
	CHECK(imgfs_creds_erase(f, "docker.io", &err) == -1 && err.code == ENOENT);
	/* other keys survive */
	CHECK(imgfs_creds_store(g, "r.io", "u", "p", &err) == 0);
	{
		char *text = NULL;
		size_t n;
		CHECK(imgfs_read_file(g, 1 << 20, &text, &n, &err) == 0);
		CHECK(text && strstr(text, "credsStore"));
		free(text);
	}
	free(f);
	free(g);
}

static void test_insecure_match(void)
{
	char *list[] = {"10.1.0.0/16", "fd00::/8", "reg.local", "other:5000", NULL};
	CHECK(imgfs_registry_host_insecure("127.0.0.1:5000", NULL));
	CHECK(imgfs_registry_host_insecure("10.1.2.3:443", list));
	CHECK(!imgfs_registry_host_insecure("10.2.2.3", list));
	CHECK(imgfs_registry_host_insecure("[fd12::1]:5000", list));
	CHECK(imgfs_registry_host_insecure("reg.local:8443", list));
	CHECK(imgfs_registry_host_insecure("other:5000", list));
	CHECK(!imgfs_registry_host_insecure("other:5001", list));
	CHECK(!imgfs_registry_host_insecure("ghcr.io", list));
}

static void test_config(void)
{
	struct imgfs_fetch_config cfg;
	struct imgfs_error err = {0};
	char *f = write_file("cfg.json",
			     "{\"max-concurrent-downloads\": 5, \"registry-mirrors\": "
			     "[\"https://m.local\"], \"registries\": {\"ghcr.io\": {\"mirrors\": "
			     "[\"http://10.0.0.1:5000\"]}}, \"stall-timeout\": 7, "
			     "\"connect-timeout\": 4, \"insecure-registries\": [\"10.0.0.0/8\"]}",
			     0644);
	imgfs_fetch_config_init(&cfg);
	CHECK(cfg.max_concurrent_downloads == 3 && cfg.max_attempts == 5 && cfg.connect_time == 30);
	CHECK(imgfs_fetch_config_load(&cfg, f, true, &err) == 0);
	CHECK(cfg.max_concurrent_downloads == 5 && cfg.stall_time == 7 && cfg.connect_time == 4);
	CHECK_STR(cfg.registry_mirrors[0], "https://m.local");
	CHECK(cfg.n_hosts == 1);
	CHECK_STR(cfg.hosts[0].host, "ghcr.io");
	CHECK_STR(cfg.hosts[0].mirrors[0], "http://10.0.0.1:5000");
	CHECK_STR(cfg.insecure_registries[0], "10.0.0.0/8");
	imgfs_fetch_config_destroy(&cfg);
	free(f);
	f = write_file("bad.json", "{\"stall-timeout\": 0}", 0644);
	imgfs_fetch_config_init(&cfg);
	CHECK(imgfs_fetch_config_load(&cfg, f, true, &err) == -1 && err.code == EINVAL &&
	      strstr(err.msg, "stall-timeout"));
	imgfs_fetch_config_destroy(&cfg);
	free(f);
	f = write_file("bad.json", "{\"connect-timeout\": 0}", 0644);
	imgfs_fetch_config_init(&cfg);
	CHECK(imgfs_fetch_config_load(&cfg, f, true, &err) == -1 && err.code == EINVAL &&
	      strstr(err.msg, "connect-timeout"));
	imgfs_fetch_config_destroy(&cfg);
	free(f);
	imgfs_fetch_config_init(&cfg);
	CHECK(imgfs_fetch_config_load(&cfg, "/nonexistent/x.json", false, &err) == 0);
	CHECK(imgfs_fetch_config_load(&cfg, "/nonexistent/x.json", true, &err) == -1);
	imgfs_fetch_config_destroy(&cfg);
}

int main(void)
{
	char *cmd;
	if (!mkdtemp(dir))
		return 1;
	RUN(test_normalize);
	RUN(test_lookup_file);
	RUN(test_search_order);
	RUN(test_helper);
	RUN(test_store_erase);
	RUN(test_insecure_match);
	RUN(test_config);
	cmd = imgfs_xasprintf("rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", dir);
	free(cmd);
	TEST_DONE();
}
