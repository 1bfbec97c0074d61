/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry client (libcurl). One struct imgfs_registry per host, shared
 * by the threads of a pull: each request runs on its own easy handle; DNS,
 * connections and TLS sessions are shared through a CURLSH with a mutex per
 * lock data kind; the token cache has its own mutex.
 *
 * Redirects are followed by hand (at most 10 hops): each hop is checked
 * (https only, or http for an insecure origin; no https -> http downgrade)
 * and the Bearer token goes only to the registry's own origin (scheme, host
 * and port), so blob-storage redirects never see it. See docs/registry.md.
 */
#include "fetch_i.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#define ACCEPT_MANIFESTS                                                                           \
	"Accept: " IMGFS_MT_OCI_INDEX ", " IMGFS_MT_OCI_MANIFEST ", " IMGFS_MT_DOCKER_LIST         \
	", " IMGFS_MT_DOCKER_MANIFEST ", */*"

/* ---- global init, transport policy ----------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_global(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ud)
{
	struct imgfs_registry *r = ud;
	if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
		pthread_mutex_lock(&r->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ud)
{
	struct imgfs_registry *r = ud;
	if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
		pthread_mutex_unlock(&r->share_locks[data]);
}

/* Split "host", "host:port", "[v6]:port" into the bare host. */
static void bare_host(const char *hostport, char *out, size_t outlen)
{
	const char *end;
	if (hostport[0] == '[') {
		end = strchr(hostport, ']');
		hostport++;
		if (!end)
			end = hostport + strlen(hostport);
	} else {
		end = strchr(hostport, ':');
		if (!end)
			end = hostport + strlen(hostport);
	}
	snprintf(out, outlen, "%.*s", (int)(end - hostport), hostport);
}

/* Does the IP address host fall in cidr ("10.0.0.0/8", "fd00::/8")? */
static bool in_cidr(const char *host, const char *cidr)
{
	char net[64];
	const char *slash = strchr(cidr, '/');
	unsigned char a[16], n[16];
	char *e;
	long bits;
	int af, len;

	if (!slash || (size_t)(slash - cidr) >= sizeof(net))
		return false;
	snprintf(net, sizeof(net), "%.*s", (int)(slash - cidr), cidr);
	af = strchr(net, ':') ? AF_INET6 : AF_INET;
	len = af == AF_INET6 ? 16 : 4;
	errno = 0;
	bits = strtol(slash + 1, &e, 10);
	if (errno || *e || e == slash + 1 || bits < 0 || bits > len * 8)
		return false;
	if (inet_pton(af, net, n) != 1 || inet_pton(af, host, a) != 1)
		return false;
	for (long i = 0; i < bits; i++) {
		unsigned char m = (unsigned char)(0x80u >> (i % 8));
		if ((a[i / 8] & m) != (n[i / 8] & m))
			return false;
	}
	return true;
}

bool imgfs_registry_host_insecure(const char *hostport, char *const *list)
{
	char host[256];
	struct in_addr a4;
	struct in6_addr a6;

	bare_host(hostport, host, sizeof(host));
	if (!strcasecmp(host, "localhost"))
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127)
		return true;
	if (inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6))
		return true;
	for (char *const *p = list; p && *p; p++) {
		/* an entry names a host (any port), host:port, or a CIDR */
		if (!strcasecmp(*p, hostport))
			return true;
		if (strchr(*p, '/')) {
			if (in_cidr(host, *p))
				return true;
			continue;
		}
		if (!strchr(*p, ':') && !strcasecmp(*p, host))
			return true;
		if ((*p)[0] == '[' && !strchr(strchr(*p, ']') ? strchr(*p, ']') : *p, ':')) {
			char lh[256];
			bare_host(*p, lh, sizeof(lh));
			if (!strcasecmp(lh, host))
				return true;
		}
	}
	return false;
}

/* certs.d: every *.crt in <ca_dir>/<host>/ is trusted for that host, in
 * addition to the system's CAs (Docker's and containerd's layout). */
static CURLcode add_ca_files(CURL *c, void *sslctx, void *ud)
{
	struct imgfs_endpoint *ep = ud;
	X509_STORE *store = SSL_CTX_get_cert_store((SSL_CTX *)sslctx);
	DIR *d = opendir(ep->ca_dir);
	struct dirent *e;
	if (!d)
		return CURLE_OK;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		_cleanup_free_ char *f = NULL;
		if (n < 5 || strcmp(e->d_name + n - 4, ".crt"))
			continue;
		f = imgfs_xasprintf("%s/%s", ep->ca_dir, e->d_name);
		if (X509_STORE_load_file(store, f) != 1)
			imgfs_warn("registry %s: cannot load CA file %s", ep->host, f);
	}
	closedir(d);
	return CURLE_OK;
}

/* certs.d client certificate: the first <name>.cert with a <name>.key. */
static void find_client_cert(struct imgfs_endpoint *ep)
{
	DIR *d = opendir(ep->ca_dir);
	struct dirent *e;
	if (!d)
		return;
	while (!ep->cert_file && (e = readdir(d))) {
		size_t n = strlen(e->d_name);
		_cleanup_free_ char *key = NULL;
		if (n < 6 || strcmp(e->d_name + n - 5, ".cert"))
			continue;
		key = imgfs_xasprintf("%s/%.*s.key", ep->ca_dir, (int)(n - 5), e->d_name);
		if (access(key, R_OK) < 0) {
			imgfs_warn("registry %s: client certificate %s/%s has no %s", ep->host,
				   ep->ca_dir, e->d_name, key);
			continue;
		}
		ep->cert_file = imgfs_xasprintf("%s/%s", ep->ca_dir, e->d_name);
		ep->key_file = steal_pointer(&key);
	}
	closedir(d);
}

void imgfs_endpoint_setup_easy(struct imgfs_registry *r, struct imgfs_endpoint *ep, CURL *c,
			       char *errbuf)
{
	curl_easy_setopt(c, CURLOPT_SHARE, r->share);
	curl_easy_setopt(c, CURLOPT_USERAGENT, IMGFS_USER_AGENT);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, ep->insecure ? 0L : 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, ep->insecure ? 0L : 2L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)r->connect_time);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, r->stall_speed);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)r->stall_time);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR,
			 ep->insecure || ep->http_only ? "http,https" : "https");
	if (errbuf) {
		errbuf[0] = '\0';
		curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	}
	if (ep->ca_dir) {
		curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, add_ca_files);
		curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, ep);
	}
	if (ep->cert_file) {
		curl_easy_setopt(c, CURLOPT_SSLCERT, ep->cert_file);
		curl_easy_setopt(c, CURLOPT_SSLKEY, ep->key_file);
	}
}

static bool tls_error(CURLcode rc)
{
	return rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_PEER_FAILED_VERIFICATION ||
	       rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CIPHER ||
	       rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_ISSUER_ERROR ||
	       rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH;
}

int imgfs_curl_error(struct imgfs_error *err, CURL *c, CURLcode rc, const char *what,
		     const char *host, const char *errbuf)
{
	long os_errno = 0;
	int code;
	curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
	if (tls_error(rc)) {
		long vr = 0;
		const char *why = errbuf && *errbuf ? errbuf : curl_easy_strerror(rc);
		curl_easy_getinfo(c, CURLINFO_SSL_VERIFYRESULT, &vr);
		if (rc == CURLE_PEER_FAILED_VERIFICATION && vr != 0 && (!errbuf || !*errbuf))
			why = X509_verify_cert_error_string(vr);
		return imgfs_error_set(err, EIO,
				       "%s: %s: TLS: %s (a private CA goes in certs.d/%s/ca.crt; "
				       "see imgfs(1))",
				       what, host, why, host);
	}
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
		code = (os_errno == EHOSTUNREACH || os_errno == ENETUNREACH) ? EHOSTUNREACH
		       : os_errno == ETIMEDOUT				     ? ETIMEDOUT
									     : ECONNREFUSED;
		break;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		code = EHOSTUNREACH;
		break;
	case CURLE_OPERATION_TIMEDOUT:
		code = ETIMEDOUT;
		break;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		code = ECONNRESET;
		break;
	case CURLE_OUT_OF_MEMORY:
		code = ENOMEM;
		break;
	case CURLE_UNSUPPORTED_PROTOCOL:
		code = EACCES;
		break;
	default:
		code = EIO;
	}
	if (os_errno && code != EIO)
		return imgfs_error_set(err, code, "%s: %s: %s (%s)", what, host,
				       curl_easy_strerror(rc), strerror((int)os_errno));
	if (errbuf && *errbuf)
		return imgfs_error_set(err, code, "%s: %s: %s", what, host, errbuf);
	return imgfs_error_set(err, code, "%s: %s: %s", what, host, curl_easy_strerror(rc));
}

static char *ca_dir_for(const char *root, const char *host)
{
	struct stat st;
	char *d;
	if (!root)
		return NULL;
	d = imgfs_xasprintf("%s/%s", root, host);
	if (stat(d, &st) == 0 && S_ISDIR(st.st_mode))
		return d;
	free(d);
	return NULL;
}

/* The mirrors configured for domain: registry-mirrors for docker.io, then
 * registries.<domain>.mirrors. */
static void config_mirrors(const struct imgfs_fetch_config *cfg, const char *domain,
			   char *const **a, char *const **b)
{
	*a = *b = NULL;
	if (!cfg)
		return;
	if (!strcmp(domain, "docker.io"))
		*a = cfg->registry_mirrors;
	for (size_t i = 0; i < cfg->n_hosts; i++)
		if (!strcasecmp(cfg->hosts[i].host, domain))
			*b = cfg->hosts[i].mirrors;
}

static void endpoint_init(struct imgfs_endpoint *ep, const char *host, const char *prefix,
			  bool mirror, bool http_only, const struct imgfs_fetch_config *cfg)
{
	char *const *insecure = cfg ? cfg->insecure_registries : NULL;
	ep->host = imgfs_xstrdup(host);
	ep->label = mirror ? imgfs_xasprintf("%s (mirror)", host) : imgfs_xstrdup(host);
	ep->mirror = mirror;
	ep->http_only = http_only;
	ep->insecure = imgfs_registry_host_insecure(host, insecure);
	ep->https = imgfs_xasprintf("https://%s%s", host, prefix);
	if (ep->insecure || http_only)
		ep->http = imgfs_xasprintf("http://%s%s", host, prefix);
	ep->use_http = http_only;
	ep->ca_dir = ca_dir_for(cfg ? cfg->ca_dir : NULL, host);
	if (ep->ca_dir && !(cfg && cfg->anonymous))
		find_client_cert(ep);
}

/* A mirror URL "http(s)://host[:port][/prefix]" as an endpoint. */
static int add_mirror(struct imgfs_registry *r, const char *url,
		      const struct imgfs_fetch_config *cfg, struct imgfs_error *err)
{
	bool http = !strncmp(url, "http://", 7);
	const char *h = url + (http ? 7 : 8);
	const char *slash = strchr(h, '/');
	_cleanup_free_ char *host = strndup(h, slash ? (size_t)(slash - h) : strlen(h));
	_cleanup_free_ char *prefix = imgfs_xstrdup(slash ? slash : "");
	size_t pl = strlen(prefix);

	if (!host || !*host)
		return imgfs_error_set(err, EINVAL, "mirror \"%.200s\": no host", url);
	while (pl && prefix[pl - 1] == '/')
		prefix[--pl] = '\0';
	/* "https://m.local/v2" means the same as "https://m.local" */
	if (pl >= 3 && !strcmp(prefix + pl - 3, "/v2"))
		prefix[pl - 3] = '\0';
	endpoint_init(&r->eps[r->n_eps++], host, prefix, true, http, cfg);
	return 0;
}

static int registry_endpoints(struct imgfs_registry *r, const struct imgfs_fetch_config *cfg,
			      struct imgfs_error *err)
{
	char *const *m1, *const *m2;
	size_t n = 1;
	config_mirrors(cfg, r->domain, &m1, &m2);
	for (char *const *p = m1; p && *p; p++)
		n++;
	for (char *const *p = m2; p && *p; p++)
		n++;
	r->eps = imgfs_xmalloc(n * sizeof(*r->eps));
	memset(r->eps, 0, n * sizeof(*r->eps));
	for (char *const *p = m1; p && *p; p++)
		if (add_mirror(r, *p, cfg, err) < 0)
			return -1;
	for (char *const *p = m2; p && *p; p++)
		if (add_mirror(r, *p, cfg, err) < 0)
			return -1;
	endpoint_init(&r->eps[r->n_eps++], r->host, "", false, false, cfg);
	/* insecure-registries and certs.d may name the reference's domain too */
	if (strcmp(r->domain, r->host)) {
		struct imgfs_endpoint *up = &r->eps[r->n_eps - 1];
		char *const *insecure = cfg ? cfg->insecure_registries : NULL;
		if (!up->insecure && imgfs_registry_host_insecure(r->domain, insecure)) {
			up->insecure = true;
			up->http = imgfs_xasprintf("http://%s", r->host);
		}
		if (!up->ca_dir) {
			up->ca_dir = ca_dir_for(cfg ? cfg->ca_dir : NULL, r->domain);
			if (up->ca_dir && !(cfg && cfg->anonymous))
				find_client_cert(up);
		}
	}
	return 0;
}

int imgfs_registry_new(const struct imgfs_ref *ref, const struct imgfs_fetch_config *cfg,
		       struct imgfs_registry **out, struct imgfs_error *err)
{
	struct imgfs_registry *r;
	struct imgfs_fetch_config def;

	*out = NULL;
	pthread_once(&curl_once, curl_global);
	if (curl_init_rc != CURLE_OK)
		return imgfs_error_set(err, EIO, "curl_global_init: %s",
				       curl_easy_strerror(curl_init_rc));
	if (!cfg) {
		imgfs_fetch_config_init(&def);
		cfg = &def;
	}
	r = imgfs_xmalloc(sizeof(*r));
	memset(r, 0, sizeof(*r));
	r->host = imgfs_ref_api_host(ref);
	r->domain = imgfs_xstrdup(ref->domain);
	r->auth_file = cfg->auth_file ? imgfs_xstrdup(cfg->auth_file) : NULL;
	r->anonymous = cfg->anonymous;
	r->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 1;
	r->max_retry_after = cfg->max_retry_after;
	r->stall_time = cfg->stall_time > 0 ? cfg->stall_time : 30;
	r->stall_speed = cfg->stall_speed > 0 ? cfg->stall_speed : 1;
	r->connect_time = cfg->connect_time > 0 ? cfg->connect_time : 30;
	pthread_mutex_init(&r->lock, NULL);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&r->share_locks[i], NULL);
	if (registry_endpoints(r, cfg, err) < 0) {
		imgfs_registry_free(r);
		return -1;
	}
	r->share = curl_share_init();
	if (!r->share) {
		imgfs_registry_free(r);
		return imgfs_error_set(err, ENOMEM, "curl_share_init failed");
	}
	curl_share_setopt(r->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(r->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(r->share, CURLSHOPT_USERDATA, r);
	curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(r->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	*out = r;
	return 0;
}

void imgfs_registry_free(struct imgfs_registry *r)
{
	if (!r)
		return;
	if (r->share)
		curl_share_cleanup(r->share);
	imgfs_tokens_free(r);
	pthread_mutex_destroy(&r->lock);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&r->share_locks[i]);
	for (size_t i = 0; r->eps && i < r->n_eps; i++) {
		struct imgfs_endpoint *ep = &r->eps[i];
		free(ep->host);
		free(ep->label);
		free(ep->https);
		free(ep->http);
		free(ep->ca_dir);
		free(ep->cert_file);
		free(ep->key_file);
		imgfs_creds_destroy(&ep->creds);
	}
	free(r->eps);
	free(r->host);
	free(r->domain);
	free(r->auth_file);
	free(r);
}

void imgfs_fetched_destroy(struct imgfs_fetched *f)
{
	if (!f)
		return;
	free(f->data);
	free(f->content_type);
	memset(f, 0, sizeof(*f));
}

/* ---- small parsers ------------------------------------------------------------ */

char *imgfs_media_type_strip(const char *ct)
{
	const char *s, *e;
	if (!ct)
		return NULL;
	s = ct;
	while (*s == ' ' || *s == '\t')
		s++;
	e = strchr(s, ';');
	if (!e)
		e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		e--;
	return strndup(s, (size_t)(e - s));
}

int imgfs_parse_content_range(const char *v, uint64_t *start, uint64_t *end)
{
	char *e;
	unsigned long long a, b;
	while (*v == ' ')
		v++;
	if (strncasecmp(v, "bytes ", 6))
		return -1;
	v += 6;
	while (*v == ' ')
		v++;
	if (!isdigit((unsigned char)*v))
		return -1;
	errno = 0;
	a = strtoull(v, &e, 10);
	if (errno || *e != '-' || !isdigit((unsigned char)e[1]))
		return -1;
	b = strtoull(e + 1, &e, 10);
	if (errno || *e != '/' || b < a)
		return -1;
	*start = a;
	*end = b;
	return 0;
}

int imgfs_fetch_check_digest(const char *data, size_t len, const struct imgfs_digest *want,
			     const char *header_digest, struct imgfs_digest *out,
			     struct imgfs_error *err)
{
	imgfs_digest_buf(want ? want->alg : IMGFS_SHA256, data, len, out);
	if (want && !imgfs_digest_equal(want, out))
		return imgfs_error_set(err, EIO, "digest mismatch: requested %s, content is %s",
				       want->str, out->str);
	if (header_digest && *header_digest) {
		struct imgfs_digest hd, actual;
		struct imgfs_error herr;
		if (imgfs_digest_parse(&hd, header_digest, &herr) < 0)
			return imgfs_error_set(err, EIO,
					       "registry sent an invalid Docker-Content-Digest: %s",
					       herr.msg);
		imgfs_digest_buf(hd.alg, data, len, &actual);
		if (!imgfs_digest_equal(&hd, &actual))
			return imgfs_error_set(
			    err, EIO,
			    "digest mismatch: Docker-Content-Digest says %s, content is %s", hd.str,
			    actual.str);
	}
	return 0;
}

/* ---- one request ------------------------------------------------------------------ */

enum body_mode { BODY_MEM, BODY_SINK };

struct xfer {
	/* the request */
	const char *what; /* "manifest", "blob" */
	const char *path;
	const char *reference; /* tag or digest, for messages */
	const char *accept;    /* full header line or NULL */
	enum body_mode mode;
	bool head;  /* HEAD: headers only */
	size_t max; /* BODY_MEM cap */
	imgfs_sink_fn sink;
	void *ctx;
	bool *restarted;
	uint64_t offset; /* where the caller's data ends (BODY_SINK) */

	/* per response, reset for each hop */
	struct imgfs_http_headers h;
	bool first_body;
	char errbody[IMGFS_MAX_ERROR_BODY + 1];
	size_t errlen;

	/* body state */
	char *buf;
	size_t len, cap;
	uint64_t pos;	  /* BODY_SINK: absolute offset of the next byte the sink wants */
	uint64_t range;	  /* BODY_SINK: the Range start sent for this hop */
	uint64_t skip;	  /* bytes of this response to drop (server ignored Range on a retry) */
	bool delivered;	  /* some byte went to the sink in this call */
	int fail;	  /* why the write callback stopped: 0, or an errno */
	CURL *easy;	  /* the handle of the hop in flight */
	CURLcode curl_rc; /* of the last hop */
	const char *creds_source; /* credentials were sent (for messages) */
	struct imgfs_endpoint *served_by;
	struct imgfs_error *sink_err;
	char fail_msg[256];
};

static void xfer_reset_response(struct xfer *x)
{
	imgfs_http_headers_reset(&x->h);
	x->first_body = true;
	x->errlen = 0;
	x->errbody[0] = '\0';
	x->len = 0;
	x->skip = 0;
	x->fail = 0;
	x->fail_msg[0] = '\0';
}

static void xfer_destroy(struct xfer *x)
{
	xfer_reset_response(x);
	free(x->buf);
	x->buf = NULL;
}

/* The value of header name in line[0..n) (trimmed), or NULL. Never reads
 * outside the line: libcurl's header lines are not NUL-terminated. */
static char *header_value(const char *line, size_t n, const char *name)
{
	size_t nl = strlen(name);
	const char *v, *e;
	if (n <= nl || strncasecmp(line, name, nl) || line[nl] != ':')
		return NULL;
	v = line + nl + 1;
	e = line + n;
	while (v < e && (*v == ' ' || *v == '\t'))
		v++;
	while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
		e--;
	if (memchr(v, '\0', (size_t)(e - v)))
		return NULL; /* a NUL would cut the value short: ignore the line */
	return strndup(v, (size_t)(e - v));
}

static void set_header(char **dst, char *v)
{
	if (!v)
		return;
	free(*dst);
	*dst = v;
}

void imgfs_http_headers_reset(struct imgfs_http_headers *h)
{
	free(h->content_type);
	free(h->dcd);
	free(h->content_range);
	free(h->content_encoding);
	free(h->location);
	free(h->www_auth);
	h->content_type = h->dcd = h->content_range = h->content_encoding = h->location =
	    h->www_auth = NULL;
	h->status = 0;
	h->retry_after = -1;
}

/* "HTTP/1.1 200 OK": the three-digit code after the first space, 0 when
 * there is none. Only line[0..n) is read. */
static long status_code(const char *line, size_t n)
{
	const char *p = memchr(line, ' ', n), *e = line + n;
	long code = 0;
	int digits = 0;

	if (!p)
		return 0;
	while (p < e && *p == ' ')
		p++;
	for (; p < e && digits < 3 && *p >= '0' && *p <= '9'; p++, digits++)
		code = code * 10 + (*p - '0');
	if (digits != 3 || (p < e && *p >= '0' && *p <= '9'))
		return 0;
	return code;
}

bool imgfs_http_header_line(struct imgfs_http_headers *h, const char *line, size_t n)
{
	char *v;

	if (n >= 5 && !memcmp(line, "HTTP/", 5)) {
		/* a new response: forget the previous headers */
		imgfs_http_headers_reset(h);
		h->status = status_code(line, n);
		return true;
	}
	set_header(&h->content_type, header_value(line, n, "Content-Type"));
	set_header(&h->dcd, header_value(line, n, "Docker-Content-Digest"));
	set_header(&h->content_range, header_value(line, n, "Content-Range"));
	set_header(&h->content_encoding, header_value(line, n, "Content-Encoding"));
	set_header(&h->location, header_value(line, n, "Location"));
	v = header_value(line, n, "Retry-After");
	if (v) {
		char *e;
		long s;
		errno = 0;
		s = strtol(v, &e, 10);
		h->retry_after = (e != v && *e == '\0' && s >= 0 && !errno) ? s : -1;
		free(v);
	}
	v = header_value(line, n, "WWW-Authenticate");
	if (v) {
		/* several challenge lines are one comma-separated list */
		size_t have = h->www_auth ? strlen(h->www_auth) : 0;
		if (have + strlen(v) + 3 > IMGFS_MAX_AUTH_HEADER) {
			free(v);
			return false; /* keep what fits; the parser reports what is malformed */
		}
		if (h->www_auth) {
			char *j = imgfs_xasprintf("%s, %s", h->www_auth, v);
			free(h->www_auth);
			free(v);
			h->www_auth = j;
		} else {
			h->www_auth = v;
		}
	}
	return false;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	size_t n = size * nmemb;

	if (n >= 5 && !memcmp(line, "HTTP/", 5))
		xfer_reset_response(x); /* a new response (e.g. after 100 Continue) */
	imgfs_http_header_line(&x->h, line, n);
	return n;
}

static int xfer_fail(struct xfer *x, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int xfer_fail(struct xfer *x, int code, const char *fmt, ...)
{
	va_list ap;
	x->fail = code;
	va_start(ap, fmt);
	vsnprintf(x->fail_msg, sizeof(x->fail_msg), fmt, ap);
	va_end(ap);
	return 0;
}

/* First body byte of a 2xx response: decide how it maps onto the caller's data. */
static int body_start(struct xfer *x, CURL *c)
{
	curl_off_t cl = -1;
	if (x->h.content_encoding && strcasecmp(x->h.content_encoding, "identity"))
		return xfer_fail(x, EIO, "unsupported Content-Encoding \"%.40s\"",
				 x->h.content_encoding);
	curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
	if (x->mode == BODY_MEM) {
		if (cl >= 0 && (uint64_t)cl > x->max)
			return xfer_fail(x, EIO,
					 "refusing %" PRId64 " byte body: limit is %zu bytes",
					 (int64_t)cl, x->max);
		return 1;
	}
	if (x->h.status == 206) {
		uint64_t s, e;
		if (!x->h.content_range ||
		    imgfs_parse_content_range(x->h.content_range, &s, &e) < 0)
			return xfer_fail(x, EIO,
					 "206 response with missing or bad Content-Range \"%.60s\"",
					 x->h.content_range ? x->h.content_range : "");
		if (s != x->range)
			return xfer_fail(x, EIO,
					 "unhandled content range: asked for bytes %" PRIu64
					 "-, got %" PRIu64 "-",
					 x->range, s);
		return 1;
	}
	if (x->range > 0) {
		/* the server ignored Range and sends everything from byte 0 */
		if (!x->delivered) {
			if (x->restarted)
				*x->restarted = true;
			x->pos = 0;
		} else {
			x->skip = x->range;
		}
	}
	return 1;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	CURL *c = x->easy;
	size_t n = size * nmemb;

	if (x->h.status < 200 || x->h.status >= 300) {
		/* error and redirect bodies: keep the first few KiB only */
		size_t room = IMGFS_MAX_ERROR_BODY - x->errlen;
		size_t k = n < room ? n : room;
		memcpy(x->errbody + x->errlen, data, k);
		x->errlen += k;
		x->errbody[x->errlen] = '\0';
		return x->errlen >= IMGFS_MAX_ERROR_BODY ? 0 : n;
	}
	if (x->first_body) {
		x->first_body = false;
		if (!body_start(x, c))
			return 0;
	}
	if (x->mode == BODY_MEM) {
		if (n > x->max - x->len) {
			xfer_fail(x, EIO, "body exceeds the limit of %zu bytes", x->max);
			return 0;
		}
		if (x->len + n + 1 > x->cap) {
			size_t ncap = x->cap ? x->cap : 16384;
			char *nb;
			while (ncap < x->len + n + 1)
				ncap *= 2;
			nb = realloc(x->buf, ncap);
			if (!nb) {
				xfer_fail(x, ENOMEM, "out of memory");
				return 0;
			}
			x->buf = nb;
			x->cap = ncap;
		}
		memcpy(x->buf + x->len, data, n);
		x->len += n;
		x->buf[x->len] = '\0';
		return n;
	}
	{
		const char *p = data;
		size_t left = n;
		if (x->skip) {
			size_t k = left < x->skip ? left : (size_t)x->skip;
			x->skip -= k;
			p += k;
			left -= k;
		}
		if (left) {
			if (x->sink(x->ctx, p, left, x->sink_err) != 0) {
				x->fail = -1; /* the sink's own error */
				return 0;
			}
			x->delivered = true;
			x->pos += left;
		}
	}
	return n;
}

/* scheme://host:port of url, lowercased; caller frees. */
static char *origin_of(const char *url)
{
	CURLU *u = curl_url();
	char *s = NULL, *h = NULL, *p = NULL, *o = NULL;
	if (!u)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &s, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PORT, &p, CURLU_DEFAULT_PORT) == CURLUE_OK) {
		o = imgfs_xasprintf("%s://%s:%s", s, h, p);
		for (char *q = o; *q; q++)
			*q = (char)tolower((unsigned char)*q);
	}
	curl_free(s);
	curl_free(h);
	curl_free(p);
	curl_url_cleanup(u);
	return o;
}

/* Perform one HTTP exchange on url. Returns the CURLcode; x holds the response. */
static CURLcode perform_hop(struct imgfs_registry *r, struct imgfs_endpoint *ep, struct xfer *x,
			    const char *url, const char *authz)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	_cleanup_free_ char *auth = NULL;
	char errbuf[CURL_ERROR_SIZE];
	CURLcode rc;
	char range[64];

	if (!c)
		return CURLE_OUT_OF_MEMORY;
	xfer_reset_response(x);
	x->curl_rc = CURLE_OK;
	imgfs_endpoint_setup_easy(r, ep, c, errbuf);
	curl_easy_setopt(c, CURLOPT_URL, url);
	if (x->accept)
		hdrs = curl_slist_append(hdrs, x->accept);
	if (authz) {
		auth = imgfs_xasprintf("Authorization: %s", authz);
		hdrs = curl_slist_append(hdrs, auth);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	if (x->head)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	if (x->mode == BODY_SINK) {
		x->range = x->pos;
		if (x->pos > 0) {
			snprintf(range, sizeof(range), "%" PRIu64 "-", x->pos);
			curl_easy_setopt(c, CURLOPT_RANGE, range);
		}
	}
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
	x->easy = c;
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &x->h.status);
	/* an error body cut at the cap, or shorter than its Content-Length (Go's
	 * http.ServeContent sends a 416 so), is not a transport error */
	if ((rc == CURLE_WRITE_ERROR || rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR) &&
	    !x->fail && x->h.status >= 300)
		rc = CURLE_OK;
	x->curl_rc = rc;
	/* not CONNECT_TIME: it is 0 on a connection reused from the pool, and
	 * a stall there is not a failure to connect */
	curl_off_t connected = 0;
	curl_easy_getinfo(c, CURLINFO_PRETRANSFER_TIME_T, &connected);
	if (rc == CURLE_OPERATION_TIMEDOUT && !x->fail && !connected)
		imgfs_error_set(x->sink_err, ETIMEDOUT, "%s: %s: no connection within %d s",
				x->what, ep->host, r->connect_time);
	else if (rc == CURLE_OPERATION_TIMEDOUT && !x->fail)
		imgfs_error_set(x->sink_err, ETIMEDOUT,
				"%s: %s: transfer stalled: less than %ld bytes/s for %d s", x->what,
				ep->host, r->stall_speed, r->stall_time);
	else if (rc != CURLE_OK && !x->fail)
		imgfs_curl_error(x->sink_err, c, rc, x->what, ep->host, errbuf);
	curl_easy_cleanup(c);
	x->easy = NULL;
	curl_slist_free_all(hdrs);
	if (auth)
		explicit_bzero(auth, strlen(auth));
	return rc;
}

/* Resolve a redirect's Location against url and check its scheme. */
static int next_hop(struct imgfs_endpoint *ep, struct xfer *x, char **url, struct imgfs_error *err)
{
	CURLU *u = curl_url();
	char *nu = NULL, *scheme = NULL;
	int rc = 0;
	if (!u)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	if (!x->h.location || curl_url_set(u, CURLUPART_URL, *url, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_URL, x->h.location, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &nu, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
		rc = imgfs_error_set(
		    err, EIO, "%s %s/%s: HTTP %ld redirect with a missing or invalid Location",
		    x->what, ep->host, x->path, x->h.status);
	} else if (strcmp(scheme, "https") &&
		   !((ep->insecure || ep->http_only) && !strcmp(scheme, "http"))) {
		rc = imgfs_error_set(err, EACCES, "%s %s/%s: redirect to a %s URL refused", x->what,
				     ep->host, x->path, scheme);
	} else {
		free(*url);
		*url = imgfs_xstrdup(nu);
	}
	curl_free(nu);
	curl_free(scheme);
	curl_url_cleanup(u);
	return rc;
}

/* "MANIFEST_UNKNOWN: manifest unknown" from an OCI error body, printable only. */
static void error_detail(const struct xfer *x, char *out, size_t outlen)
{
	json_t *root = json_loadb(x->errbody, x->errlen, 0, NULL);
	json_t *e0 = json_array_get(json_object_get(root, "errors"), 0);
	const char *code = json_string_value(json_object_get(e0, "code"));
	const char *msg = json_string_value(json_object_get(e0, "message"));
	out[0] = '\0';
	if (code || msg)
		snprintf(out, outlen, "%.60s%s%.200s", code ? code : "", code && msg ? ": " : "",
			 msg ? msg : "");
	json_decref(root);
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
}

static bool tag_ok(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > 128 || t[0] == '.' || t[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(isascii((unsigned char)t[i]) &&
		      (isalnum((unsigned char)t[i]) || strchr("_.-", t[i]))))
			return false;
	return true;
}

static const char *ref_sep(const char *reference)
{
	return strchr(reference, ':') ? "@" : ":";
}

static int status_error(struct imgfs_registry *r, struct imgfs_endpoint *ep, struct xfer *x,
			struct imgfs_error *err)
{
	char detail[300];
	char name[700];
	char via[300] = "";
	long s = x->h.status;
	snprintf(name, sizeof(name), "%s/%s%s%s", r->domain, x->path, ref_sep(x->reference),
		 x->reference);
	if (ep->mirror)
		snprintf(via, sizeof(via), " (mirror %s)", ep->host);
	error_detail(x, detail, sizeof(detail));
	if (s == 404)
		return imgfs_error_set(err, ENOENT, "%s %s%s: %s unknown%s%s%s", x->what, name, via,
				       x->what, detail[0] ? " (" : "", detail,
				       detail[0] ? ")" : "");
	if ((s == 401 || s == 403) && x->creds_source)
		return imgfs_error_set(err, EACCES,
				       "%s %s%s: HTTP %ld: credentials for %s (from %s) were "
				       "rejected%s%s",
				       x->what, name, via, s, ep->host, x->creds_source,
				       detail[0] ? ": " : "", detail);
	if (s == 401 || s == 403)
		return imgfs_error_set(
		    err, EACCES,
		    "%s %s%s: pull access denied for %s/%s, repository does not exist or "
		    "may require authorization: HTTP %ld%s%s",
		    x->what, name, via, r->domain, x->path, s, detail[0] ? ": " : "", detail);
	if (s == 429)
		return imgfs_error_set(err, EAGAIN, "%s %s%s: HTTP 429 Too Many Requests%s%s",
				       x->what, name, via, detail[0] ? ": " : "", detail);
	if (s == 416)
		return imgfs_error_set(err, EIO, "%s %s%s: HTTP 416 Range Not Satisfiable", x->what,
				       name, via);
	return imgfs_error_set(err, EIO, "%s %s%s: unexpected HTTP status %ld%s%s", x->what, name,
			       via, s, detail[0] ? ": " : "", detail);
}

/* 416 to "Range: bytes=N-": fine when the blob is exactly N bytes long
 * ("Content-Range: bytes *\/N"), the caller then has it all. */
static int range_done(struct imgfs_registry *r, struct imgfs_endpoint *ep, struct xfer *x,
		      struct imgfs_error *err)
{
	const char *cr = x->h.content_range;
	char *e;
	unsigned long long total;
	if (cr && !strncasecmp(cr, "bytes */", 8)) {
		errno = 0;
		total = strtoull(cr + 8, &e, 10);
		if (!errno && *e == '\0' && e != cr + 8 && total == x->range)
			return 0;
		if (!errno && *e == '\0' && e != cr + 8)
			return imgfs_error_set(err, EIO,
					       "blob %s/%s@%s: resuming at byte %" PRIu64
					       " but the blob is %llu bytes",
					       r->domain, x->path, x->reference, x->range, total);
	}
	return status_error(r, ep, x, err);
}

/* A 401 on ep: drop what was refused, get a fresh Authorization value. */
static int answer_challenge(struct imgfs_registry *r, struct imgfs_endpoint *ep, struct xfer *x,
			    const char *key, char **authz, struct imgfs_error *err)
{
	struct imgfs_auth_plan plan;
	const struct imgfs_creds *cr = NULL;
	int rc;

	if (imgfs_auth_plan_from_header(x->h.www_auth, &plan, err) < 0)
		return imgfs_error_wrap(err, "%s %s/%s", x->what, ep->host, x->path);
	if (*authz) {
		/* the cached token was refused (expired, revoked): drop it */
		imgfs_token_drop(r, key);
		explicit_bzero(*authz, strlen(*authz));
		free(*authz);
		*authz = NULL;
	}
	if (imgfs_endpoint_creds(r, ep, &cr, err) < 0) {
		imgfs_auth_plan_destroy(&plan);
		return -1;
	}
	x->creds_source = cr ? cr->source : NULL;
	rc = imgfs_auth_fetch_token(r, ep, &plan, key, x->path, authz, err);
	imgfs_auth_plan_destroy(&plan);
	if (rc < 0)
		return imgfs_error_wrap(err, "%s %s/%s", x->what, ep->host, x->path);
	return 0;
}

static char *endpoint_url(struct imgfs_registry *r, struct imgfs_endpoint *ep, const char *suffix)
{
	bool http;
	pthread_mutex_lock(&r->lock);
	http = ep->use_http;
	pthread_mutex_unlock(&r->lock);
	return imgfs_xasprintf("%s%s", http ? ep->http : ep->https, suffix);
}

/*
 * One attempt on one endpoint: the request with its redirects, one auth
 * round on 401 and one on 403 with a cached token. 0 on a 2xx (or 416 on a
 * resumed blob: nothing left to send), else -1.
 */
static int send_request(struct imgfs_registry *r, struct imgfs_endpoint *ep, struct xfer *x,
			const char *suffix, struct imgfs_error *err)
{
	_cleanup_free_ char *url0 = endpoint_url(r, ep, suffix);
	_cleanup_free_ char *url = imgfs_xstrdup(url0);
	_cleanup_free_ char *reg_origin = origin_of(url0);
	_cleanup_free_ char *key = imgfs_xasprintf("%s|repository:%s:pull", ep->host, x->path);
	_cleanup_free_ char *authz = imgfs_token_get(r, key);
	bool auth_done = false, retried_403 = false;
	int hops = 0;

	x->sink_err = err;
	x->creds_source = NULL;
	for (;;) {
		_cleanup_free_ char *origin = origin_of(url);
		bool same = origin && reg_origin && !strcmp(origin, reg_origin);
		CURLcode rc = perform_hop(r, ep, x, url, same ? authz : NULL);
		if (x->fail > 0)
			return imgfs_error_set(err, x->fail, "%s %s/%s%s%s: %s", x->what, r->domain,
					       x->path, ref_sep(x->reference), x->reference,
					       x->fail_msg);
		if (x->fail < 0 || rc != CURLE_OK)
			return -1; /* the sink's error, or the transport's, is in err */
		if (x->h.status >= 300 && x->h.status < 400 && x->h.status != 304) {
			if (++hops > IMGFS_MAX_REDIRECTS)
				return imgfs_error_set(
				    err, EIO, "%s %s/%s: stopped after %d redirects", x->what,
				    ep->host, x->path, IMGFS_MAX_REDIRECTS);
			if (next_hop(ep, x, &url, err) < 0)
				return -1;
			continue;
		}
		if (x->h.status == 403 && same && authz && !retried_403) {
			/* maybe a stale token: once more with fresh credentials */
			retried_403 = true;
			auth_done = false;
			imgfs_token_drop(r, key);
			explicit_bzero(authz, strlen(authz));
			free(authz);
			authz = NULL;
			free(url);
			url = imgfs_xstrdup(url0);
			hops = 0;
			continue;
		}
		if (x->h.status == 401 && same && !auth_done && x->h.www_auth) {
			auth_done = true;
			if (answer_challenge(r, ep, x, key, &authz, err) < 0)
				return -1;
			free(url);
			url = imgfs_xstrdup(url0);
			hops = 0;
			continue;
		}
		if (x->h.status == 416 && x->mode == BODY_SINK && x->range > 0)
			return range_done(r, ep, x, err);
		if (x->h.status >= 200 && x->h.status < 300)
			return 0;
		return status_error(r, ep, x, err);
	}
}

static bool transient(struct xfer *x, const struct imgfs_error *err)
{
	if (x->fail)
		return false;
	if (x->h.status == 429 || x->h.status == 500 || x->h.status == 502 || x->h.status == 503 ||
	    x->h.status == 504)
		return true;
	if (x->h.status == 0 || (x->h.status >= 200 && x->h.status < 300))
		return err->code == ECONNREFUSED || err->code == ECONNRESET ||
		       err->code == ETIMEDOUT || err->code == EHOSTUNREACH;
	return false;
}

/* Exponential backoff (0.5 s doubling, at most 30 s) with full jitter in its
 * upper half; a Retry-After is honoured up to the configured cap. */
static double backoff_delay(struct imgfs_registry *r, int attempt, long retry_after)
{
	double base, s;
	unsigned int seed = (unsigned int)(imgfs_now() * 1e6) ^ (unsigned int)pthread_self();
	if (retry_after >= 0)
		return retry_after > r->max_retry_after ? (double)r->max_retry_after
							: (double)retry_after;
	base = 0.5 * (double)(1u << (attempt > 6 ? 6 : attempt - 1));
	if (base > 30)
		base = 30;
	s = base / 2 + (base / 2) * ((double)rand_r(&seed) / RAND_MAX);
	return s;
}

static void sleep_s(double s)
{
	struct timespec ts;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* An insecure host that does not speak TLS: fall back to plain HTTP, once. */
static bool try_plain_http(struct imgfs_registry *r, struct imgfs_endpoint *ep, struct xfer *x)
{
	bool switched = false;
	if (!ep->http || x->h.status != 0 || !tls_error(x->curl_rc))
		return false;
	pthread_mutex_lock(&r->lock);
	if (!ep->use_http) {
		ep->use_http = true;
		switched = true;
	}
	pthread_mutex_unlock(&r->lock);
	if (switched)
		imgfs_debug("registry %s does not speak TLS; using plain HTTP (insecure)",
			    ep->host);
	return switched;
}

/* Requests on one endpoint, with retries. */
static int run_endpoint(struct imgfs_registry *r, struct imgfs_endpoint *ep, struct xfer *x,
			const char *suffix, struct imgfs_error *err)
{
	int attempts = ep->mirror ? 1 : r->max_attempts, progress_resets = 0;
	for (int attempt = 1;; attempt++) {
		int rc;
		uint64_t before = x->pos;
		double d;
		imgfs_error_clear(err);
		x->curl_rc = CURLE_OK;
		rc = send_request(r, ep, x, suffix, err);
		if (rc == 0)
			return 0;
		if (try_plain_http(r, ep, x)) {
			attempt--;
			continue;
		}
		/* a transfer that moved forward earns its attempts back (a few times) */
		if (x->mode == BODY_SINK && x->pos > before && progress_resets < 10 &&
		    transient(x, err)) {
			progress_resets++;
			attempt = 1;
		}
		if (attempt >= attempts || !transient(x, err))
			return -1;
		d = backoff_delay(r, attempt,
				  x->h.status == 429 || x->h.status == 503 ? x->h.retry_after : -1);
		imgfs_warn("%s (attempt %d of %d; retrying in %.1f s%s)", err->msg, attempt,
			   attempts, d,
			   x->mode == BODY_SINK && x->pos > 0 ? " from where it stopped" : "");
		sleep_s(d);
	}
}

/* Try the mirrors in order, then upstream. Which endpoint answered is logged. */
static int run(struct imgfs_registry *r, struct xfer *x, const char *suffix,
	       struct imgfs_error *err)
{
	for (size_t i = 0; i < r->n_eps; i++) {
		struct imgfs_endpoint *ep = &r->eps[i];
		bool down;
		pthread_mutex_lock(&r->lock);
		down = ep->down;
		pthread_mutex_unlock(&r->lock);
		if (down)
			continue;
		if (run_endpoint(r, ep, x, suffix, err) == 0) {
			x->served_by = ep;
			if (r->n_eps > 1)
				imgfs_info("%s %s/%s%s%s: from %s%s", x->what, r->domain, x->path,
					   ref_sep(x->reference), x->reference, ep->host,
					   ep->mirror ? " (mirror)" : "");
			return 0;
		}
		if (!ep->mirror || x->fail < 0)
			return -1;
		if (err->code == ECONNREFUSED || err->code == EHOSTUNREACH) {
			pthread_mutex_lock(&r->lock);
			ep->down = true;
			pthread_mutex_unlock(&r->lock);
		}
		imgfs_warn("mirror %s: %s; trying %s", ep->host, err->msg,
			   i + 2 < r->n_eps ? "the next mirror" : "upstream");
	}
	return -1;
}

/* ---- the public calls ---------------------------------------------------------------- */

static int check_path(const char *path, struct imgfs_error *err)
{
	/* paths come from parsed references; refuse anything else before it reaches a URL */
	for (const char *p = path; p && *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("._-/", *p)))
			return imgfs_error_set(err, EINVAL, "invalid repository path \"%.200s\"",
					       path);
	if (!path || !*path || strstr(path, "..") || path[0] == '/')
		return imgfs_error_set(err, EINVAL, "invalid repository path \"%.200s\"",
				       path ? path : "");
	return 0;
}

int imgfs_registry_get_manifest(struct imgfs_registry *r, const char *path, const char *reference,
				size_t max, struct imgfs_fetched *out, struct imgfs_error *err)
{
	struct xfer x = {.what = "manifest",
			 .path = path,
			 .reference = reference,
			 .accept = ACCEPT_MANIFESTS,
			 .mode = BODY_MEM,
			 .max = max};
	struct imgfs_digest want;
	bool by_digest = strchr(reference, ':') != NULL;
	_cleanup_free_ char *suffix = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if (check_path(path, err) < 0)
		return -1;
	if (by_digest) {
		if (imgfs_digest_parse(&want, reference, err) < 0)
			return -1;
	} else if (!tag_ok(reference)) {
		return imgfs_error_set(err, EINVAL, "invalid tag \"%.200s\"", reference);
	}
	suffix = imgfs_xasprintf("/v2/%s/manifests/%s", path, reference);
	rc = run(r, &x, suffix, err);
	if (rc == 0 && imgfs_fetch_check_digest(x.buf ? x.buf : "", x.len, by_digest ? &want : NULL,
						x.h.dcd, &out->digest, err) < 0) {
		imgfs_error_wrap(err, "manifest %s/%s%s%s (from %s)", r->domain, path,
				 ref_sep(reference), reference, x.served_by->host);
		rc = -1;
	}
	if (rc == 0) {
		out->data = x.buf ? steal_pointer(&x.buf) : imgfs_xstrdup("");
		out->len = x.len;
		out->content_type = imgfs_media_type_strip(x.h.content_type);
		if (out->digest.hex)
			out->digest.hex =
			    out->digest.str + strlen(imgfs_digest_alg_name(out->digest.alg)) + 1;
	}
	xfer_destroy(&x);
	return rc;
}

int imgfs_registry_head_manifest(struct imgfs_registry *r, const char *path, const char *tag,
				 struct imgfs_digest *digest, struct imgfs_error *err)
{
	struct xfer x = {.what = "manifest",
			 .path = path,
			 .reference = tag,
			 .accept = ACCEPT_MANIFESTS,
			 .mode = BODY_MEM,
			 .head = true,
			 .max = IMGFS_MAX_MANIFEST_SIZE};
	_cleanup_free_ char *suffix = NULL;
	struct imgfs_error e2;
	int rc;

	if (check_path(path, err) < 0)
		return -1;
	if (!tag_ok(tag))
		return imgfs_error_set(err, EINVAL, "invalid tag \"%.200s\"", tag);
	suffix = imgfs_xasprintf("/v2/%s/manifests/%s", path, tag);
	rc = run(r, &x, suffix, err);
	if (rc == 0 && (!x.h.dcd || imgfs_digest_parse(digest, x.h.dcd, &e2) < 0))
		rc =
		    imgfs_error_set(err, ENODATA, "manifest %s/%s:%s: no digest in the HEAD answer",
				    r->domain, path, tag);
	xfer_destroy(&x);
	return rc;
}

int imgfs_registry_get_blob_mem(struct imgfs_registry *r, const char *path,
				const struct imgfs_digest *d, uint64_t expected_size,
				struct imgfs_fetched *out, struct imgfs_error *err)
{
	struct xfer x = {.what = "blob", .path = path, .reference = d->str, .mode = BODY_MEM};
	_cleanup_free_ char *suffix = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if (check_path(path, err) < 0)
		return -1;
	if (expected_size > SIZE_MAX - 1)
		return imgfs_error_set(err, EIO, "blob %s: size %" PRIu64 " too large", d->str,
				       expected_size);
	x.max = (size_t)expected_size;
	suffix = imgfs_xasprintf("/v2/%s/blobs/%s", path, d->str);
	rc = run(r, &x, suffix, err);
	if (rc == 0 && x.len != expected_size)
		rc = imgfs_error_set(
		    err, EIO, "blob %s/%s@%s: size mismatch: expected %" PRIu64 " bytes, got %zu",
		    r->domain, path, d->str, expected_size, x.len);
	if (rc == 0 &&
	    imgfs_fetch_check_digest(x.buf ? x.buf : "", x.len, d, NULL, &out->digest, err) < 0) {
		imgfs_error_wrap(err, "blob %s/%s@%s (from %s)", r->domain, path, d->str,
				 x.served_by->host);
		rc = -1;
	}
	if (rc == 0) {
		out->data = x.buf ? steal_pointer(&x.buf) : imgfs_xstrdup("");
		out->len = x.len;
		out->content_type = imgfs_media_type_strip(x.h.content_type);
		out->digest.hex =
		    out->digest.str + strlen(imgfs_digest_alg_name(out->digest.alg)) + 1;
	}
	xfer_destroy(&x);
	return rc;
}

int imgfs_registry_get_blob(struct imgfs_registry *r, const char *path,
			    const struct imgfs_digest *d, uint64_t offset, imgfs_sink_fn sink,
			    void *ctx, bool *restarted, const char **served_by,
			    struct imgfs_error *err)
{
	struct xfer x = {.what = "blob",
			 .path = path,
			 .reference = d->str,
			 .mode = BODY_SINK,
			 .sink = sink,
			 .ctx = ctx,
			 .restarted = restarted,
			 .offset = offset,
			 .pos = offset};
	_cleanup_free_ char *suffix = NULL;
	int rc;

	if (restarted)
		*restarted = false;
	if (check_path(path, err) < 0)
		return -1;
	suffix = imgfs_xasprintf("/v2/%s/blobs/%s", path, d->str);
	rc = run(r, &x, suffix, err);
	if (rc == 0 && served_by && x.served_by)
		*served_by = x.served_by->label;
	xfer_destroy(&x);
	return rc;
}
