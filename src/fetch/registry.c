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

#define CONNECT_TIMEOUT_S 30L
#define LOW_SPEED_TIME_S 60L
#define MAX_RETRY_AFTER_S 10

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

void imgfs_fetch_config_init(struct imgfs_fetch_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_concurrent_downloads = 3;
	cfg->ca_dir = "/etc/imgfs/certs.d";
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
		/* an entry names a host (any port) or host:port */
		if (!strcasecmp(*p, hostport))
			return true;
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
	struct imgfs_registry *r = ud;
	X509_STORE *store = SSL_CTX_get_cert_store((SSL_CTX *)sslctx);
	DIR *d = opendir(r->ca_dir);
	struct dirent *e;
	if (!d)
		return CURLE_OK;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		_cleanup_free_ char *f = NULL;
		if (n < 5 || strcmp(e->d_name + n - 4, ".crt"))
			continue;
		f = imgfs_xasprintf("%s/%s", r->ca_dir, e->d_name);
		if (X509_STORE_load_file(store, f) != 1)
			imgfs_warn("registry %s: cannot load CA file %s", r->host, f);
	}
	closedir(d);
	return CURLE_OK;
}

void imgfs_registry_setup_easy(struct imgfs_registry *r, CURL *c)
{
	curl_easy_setopt(c, CURLOPT_SHARE, r->share);
	curl_easy_setopt(c, CURLOPT_USERAGENT, IMGFS_USER_AGENT);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_UNRESTRICTED_AUTH, 0L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, LOW_SPEED_TIME_S);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, r->insecure ? "http,https" : "https");
	if (r->ca_dir) {
		curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, add_ca_files);
		curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, r);
	}
}

int imgfs_curl_error(struct imgfs_error *err, CURL *c, CURLcode rc, const char *what,
		     const char *host)
{
	long os_errno = 0;
	int code;
	curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
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
	return imgfs_error_set(err, code, "%s: %s: %s", what, host, curl_easy_strerror(rc));
}

static int ca_dir_for(const struct imgfs_fetch_config *cfg, const char *host, char **out)
{
	struct stat st;
	char *d;
	*out = NULL;
	if (!cfg || !cfg->ca_dir)
		return 0;
	d = imgfs_xasprintf("%s/%s", cfg->ca_dir, host);
	if (stat(d, &st) == 0 && S_ISDIR(st.st_mode))
		*out = d;
	else
		free(d);
	return 0;
}

int imgfs_registry_new(const struct imgfs_ref *ref, const struct imgfs_fetch_config *cfg,
		       struct imgfs_registry **out, struct imgfs_error *err)
{
	struct imgfs_registry *r;
	char *const *insecure_list = cfg ? cfg->insecure_registries : NULL;

	*out = NULL;
	pthread_once(&curl_once, curl_global);
	if (curl_init_rc != CURLE_OK)
		return imgfs_error_set(err, EIO, "curl_global_init: %s",
				       curl_easy_strerror(curl_init_rc));
	r = imgfs_xmalloc(sizeof(*r));
	r->host = imgfs_ref_api_host(ref);
	r->domain = imgfs_xstrdup(ref->domain);
	/* insecure-registries may name the reference's domain or the API host */
	r->insecure = imgfs_registry_host_insecure(r->host, insecure_list) ||
		      imgfs_registry_host_insecure(r->domain, insecure_list);
	r->base = imgfs_xasprintf("%s://%s", r->insecure ? "http" : "https", r->host);
	ca_dir_for(cfg, r->domain, &r->ca_dir);
	if (!r->ca_dir && strcmp(r->domain, r->host))
		ca_dir_for(cfg, r->host, &r->ca_dir);
	pthread_mutex_init(&r->lock, NULL);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&r->share_locks[i], NULL);
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
	free(r->host);
	free(r->domain);
	free(r->base);
	free(r->ca_dir);
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
	size_t max; /* BODY_MEM cap */
	imgfs_sink_fn sink;
	void *ctx;
	bool *restarted;
	uint64_t offset; /* where the caller's data ends (BODY_SINK) */

	/* per response, reset for each hop */
	long status;
	char *content_type;
	char *dcd; /* Docker-Content-Digest */
	char *content_range;
	char *content_encoding;
	char *location;
	char *www_auth;
	long retry_after;
	bool first_body;
	char errbody[IMGFS_MAX_ERROR_BODY + 1];
	size_t errlen;

	/* body state */
	char *buf;
	size_t len, cap;
	uint64_t pos;	/* BODY_SINK: absolute offset of the next byte the sink wants */
	uint64_t range; /* BODY_SINK: the Range start sent for this hop */
	uint64_t skip;	/* bytes of this response to drop (server ignored Range on a retry) */
	bool delivered; /* some byte went to the sink in this call */
	int fail;	/* why the write callback stopped: 0, or an errno */
	CURL *easy;	/* the handle of the hop in flight */
	struct imgfs_error *sink_err;
	char fail_msg[256];
};

static void xfer_reset_response(struct xfer *x)
{
	free(x->content_type);
	free(x->dcd);
	free(x->content_range);
	free(x->content_encoding);
	free(x->location);
	free(x->www_auth);
	x->content_type = x->dcd = x->content_range = x->content_encoding = x->location =
	    x->www_auth = NULL;
	x->status = 0;
	x->retry_after = -1;
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
	return strndup(v, (size_t)(e - v));
}

static void set_header(char **dst, char *v)
{
	if (!v)
		return;
	free(*dst);
	*dst = v;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	size_t n = size * nmemb;
	char *v;

	if (n >= 5 && !strncmp(line, "HTTP/", 5)) {
		/* a new response (e.g. after 100 Continue): forget the previous headers */
		const char *sp = memchr(line, ' ', n);
		xfer_reset_response(x);
		if (sp && sp + 4 <= line + n)
			x->status = strtol(sp + 1, NULL, 10);
		return n;
	}
	set_header(&x->content_type, header_value(line, n, "Content-Type"));
	set_header(&x->dcd, header_value(line, n, "Docker-Content-Digest"));
	set_header(&x->content_range, header_value(line, n, "Content-Range"));
	set_header(&x->content_encoding, header_value(line, n, "Content-Encoding"));
	set_header(&x->location, header_value(line, n, "Location"));
	v = header_value(line, n, "Retry-After");
	if (v) {
		char *e;
		long s = strtol(v, &e, 10);
		x->retry_after = (e != v && *e == '\0' && s >= 0) ? s : -1;
		free(v);
	}
	v = header_value(line, n, "WWW-Authenticate");
	if (v) {
		/* several challenge lines are one comma-separated list */
		size_t have = x->www_auth ? strlen(x->www_auth) : 0;
		if (have + strlen(v) + 3 > IMGFS_MAX_AUTH_HEADER) {
			free(v);
			return n; /* keep what fits; the parser reports what is malformed */
		}
		if (x->www_auth) {
			char *j = imgfs_xasprintf("%s, %s", x->www_auth, v);
			free(x->www_auth);
			free(v);
			x->www_auth = j;
		} else {
			x->www_auth = v;
		}
	}
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
	if (x->content_encoding && strcasecmp(x->content_encoding, "identity"))
		return xfer_fail(x, EIO, "unsupported Content-Encoding \"%.40s\"",
				 x->content_encoding);
	curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
	if (x->mode == BODY_MEM) {
		if (cl >= 0 && (uint64_t)cl > x->max)
			return xfer_fail(x, EIO,
					 "refusing %" PRId64 " byte body: limit is %zu bytes",
					 (int64_t)cl, x->max);
		return 1;
	}
	if (x->status == 206) {
		uint64_t s, e;
		if (!x->content_range || imgfs_parse_content_range(x->content_range, &s, &e) < 0)
			return xfer_fail(x, EIO,
					 "206 response with missing or bad Content-Range \"%.60s\"",
					 x->content_range ? x->content_range : "");
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

	if (x->status < 200 || x->status >= 300) {
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
static CURLcode perform_hop(struct imgfs_registry *r, struct xfer *x, const char *url,
			    const char *token)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	_cleanup_free_ char *auth = NULL;
	CURLcode rc;
	char range[64];

	if (!c)
		return CURLE_OUT_OF_MEMORY;
	xfer_reset_response(x);
	imgfs_registry_setup_easy(r, c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	if (x->accept)
		hdrs = curl_slist_append(hdrs, x->accept);
	if (token) {
		auth = imgfs_xasprintf("Authorization: Bearer %s", token);
		hdrs = curl_slist_append(hdrs, auth);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
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
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &x->status);
	/* an error body cut at the cap is not a transport error */
	/* an error body cut at the cap, or shorter than its Content-Length (Go's
	 * http.ServeContent sends a 416 so), is not a transport error */
	if ((rc == CURLE_WRITE_ERROR || rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR) &&
	    !x->fail && x->status >= 300)
		rc = CURLE_OK;
	if (rc != CURLE_OK && !x->fail)
		imgfs_curl_error(x->sink_err, c, rc, x->what, r->host);
	curl_easy_cleanup(c);
	x->easy = NULL;
	curl_slist_free_all(hdrs);
	if (auth)
		explicit_bzero(auth, strlen(auth));
	return rc;
}

/* Resolve a redirect's Location against url and check its scheme. */
static int next_hop(struct imgfs_registry *r, struct xfer *x, char **url, struct imgfs_error *err)
{
	CURLU *u = curl_url();
	char *nu = NULL, *scheme = NULL;
	int rc = 0;
	if (!u)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	if (!x->location || curl_url_set(u, CURLUPART_URL, *url, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_URL, x->location, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &nu, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
		rc = imgfs_error_set(
		    err, EIO, "%s %s/%s: HTTP %ld redirect with a missing or invalid Location",
		    x->what, r->host, x->path, x->status);
	} else if (strcmp(scheme, "https") && !(r->insecure && !strcmp(scheme, "http"))) {
		rc = imgfs_error_set(err, EACCES, "%s %s/%s: redirect to a %s URL refused", x->what,
				     r->host, x->path, scheme);
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

static int status_error(struct imgfs_registry *r, struct xfer *x, struct imgfs_error *err)
{
	char detail[300];
	char name[700];
	long s = x->status;
	snprintf(name, sizeof(name), "%s/%s%s%s", r->domain, x->path, ref_sep(x->reference),
		 x->reference);
	error_detail(x, detail, sizeof(detail));
	if (s == 404)
		return imgfs_error_set(err, ENOENT, "%s %s: %s unknown%s%s%s", x->what, name,
				       x->what, detail[0] ? " (" : "", detail,
				       detail[0] ? ")" : "");
	if (s == 401 || s == 403)
		return imgfs_error_set(
		    err, EACCES,
		    "%s %s: pull access denied for %s/%s, repository does not exist or "
		    "may require authorization: HTTP %ld%s%s",
		    x->what, name, r->domain, x->path, s, detail[0] ? ": " : "", detail);
	if (s == 429)
		return imgfs_error_set(err, EAGAIN, "%s %s: HTTP 429 Too Many Requests%s%s",
				       x->what, name, detail[0] ? ": " : "", detail);
	if (s == 416)
		return imgfs_error_set(err, EIO, "%s %s: HTTP 416 Range Not Satisfiable", x->what,
				       name);
	return imgfs_error_set(err, EIO, "%s %s: unexpected HTTP status %ld%s%s", x->what, name, s,
			       detail[0] ? ": " : "", detail);
}

/* 416 to "Range: bytes=N-": fine when the blob is exactly N bytes long
 * ("Content-Range: bytes *\/N"), the caller then has it all. */
static int range_done(struct imgfs_registry *r, struct xfer *x, struct imgfs_error *err)
{
	const char *cr = x->content_range;
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
	return status_error(r, x, err);
}

/*
 * One attempt: the request with its redirects and one Bearer round. 0 on a
 * 2xx (or 416 on a resumed blob: nothing left to send), else -1.
 */
static int send_request(struct imgfs_registry *r, struct xfer *x, const char *url0,
			struct imgfs_error *err)
{
	_cleanup_free_ char *url = imgfs_xstrdup(url0);
	_cleanup_free_ char *reg_origin = origin_of(r->base);
	_cleanup_free_ char *key = imgfs_xasprintf("repository:%s:pull", x->path);
	_cleanup_free_ char *token = imgfs_token_get(r, key);
	bool auth_done = false;
	int hops = 0;

	x->sink_err = err;
	for (;;) {
		_cleanup_free_ char *origin = origin_of(url);
		bool same = origin && reg_origin && !strcmp(origin, reg_origin);
		CURLcode rc = perform_hop(r, x, url, same ? token : NULL);
		if (x->fail > 0)
			return imgfs_error_set(err, x->fail, "%s %s/%s%s%s: %s", x->what, r->domain,
					       x->path, ref_sep(x->reference), x->reference,
					       x->fail_msg);
		if (x->fail < 0)
			return -1; /* the sink's error is in err */
		if (rc != CURLE_OK)
			return -1;
		if (x->status >= 300 && x->status < 400 && x->status != 304) {
			if (++hops > IMGFS_MAX_REDIRECTS)
				return imgfs_error_set(
				    err, EIO, "%s %s/%s: stopped after %d redirects", x->what,
				    r->host, x->path, IMGFS_MAX_REDIRECTS);
			if (next_hop(r, x, &url, err) < 0)
				return -1;
			continue;
		}
		if (x->status == 401 && same && !auth_done && x->www_auth) {
			struct imgfs_auth_plan plan;
			int arc;
			auth_done = true;
			if (imgfs_auth_plan_from_header(x->www_auth, &plan, err) < 0)
				return imgfs_error_wrap(err, "%s %s/%s", x->what, r->host, x->path);
			if (token) {
				/* the cached token was refused (expired, revoked): drop it */
				imgfs_token_drop(r, key);
				explicit_bzero(token, strlen(token));
				free(token);
				token = NULL;
			}
			arc = imgfs_auth_fetch_token(r, &plan, key, x->path, &token, err);
			imgfs_auth_plan_destroy(&plan);
			if (arc < 0)
				return imgfs_error_wrap(err, "%s %s/%s", x->what, r->domain,
							x->path);
			free(url);
			url = imgfs_xstrdup(url0);
			hops = 0;
			continue;
		}
		if (x->status == 416 && x->mode == BODY_SINK && x->range > 0)
			return range_done(r, x, err);
		if (x->status >= 200 && x->status < 300)
			return 0;
		return status_error(r, x, err);
	}
}

static bool transient(struct xfer *x, const struct imgfs_error *err)
{
	if (x->fail)
		return false;
	if (x->status == 502 || x->status == 503 || x->status == 504)
		return true;
	if (x->status == 429)
		return x->retry_after >= 0 && x->retry_after <= MAX_RETRY_AFTER_S;
	if (x->status == 0 || (x->status >= 200 && x->status < 300))
		return err->code == ECONNREFUSED || err->code == ECONNRESET ||
		       err->code == ETIMEDOUT;
	return false;
}

static void backoff(int attempt, long retry_after)
{
	struct timespec ts;
	double s =
	    retry_after >= 0 ? (double)retry_after : 0.25 * (double)(1 << (2 * (attempt - 1)));
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);
}

static int run(struct imgfs_registry *r, struct xfer *x, const char *url, struct imgfs_error *err)
{
	for (int attempt = 1;; attempt++) {
		int rc;
		uint64_t before = x->pos;
		imgfs_error_clear(err);
		rc = send_request(r, x, url, err);
		if (rc == 0)
			return 0;
		if (attempt >= IMGFS_FETCH_ATTEMPTS || !transient(x, err))
			return -1;
		imgfs_warn("%s (attempt %d of %d, retrying%s)", err->msg, attempt,
			   IMGFS_FETCH_ATTEMPTS,
			   x->mode == BODY_SINK && x->pos > before ? " from where it stopped" : "");
		backoff(attempt, x->status == 429 ? x->retry_after : -1);
	}
}

/* ---- the public calls ---------------------------------------------------------------- */

static int check_path(struct imgfs_registry *r, const char *path, struct imgfs_error *err)
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
	_cleanup_free_ char *url = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if (check_path(r, path, err) < 0)
		return -1;
	if (by_digest) {
		if (imgfs_digest_parse(&want, reference, err) < 0)
			return -1;
	} else if (!tag_ok(reference)) {
		return imgfs_error_set(err, EINVAL, "invalid tag \"%.200s\"", reference);
	}
	url = imgfs_xasprintf("%s/v2/%s/manifests/%s", r->base, path, reference);
	rc = run(r, &x, url, err);
	if (rc == 0 && imgfs_fetch_check_digest(x.buf ? x.buf : "", x.len, by_digest ? &want : NULL,
						x.dcd, &out->digest, err) < 0) {
		imgfs_error_wrap(err, "manifest %s/%s%s%s", r->domain, path, ref_sep(reference),
				 reference);
		rc = -1;
	}
	if (rc == 0) {
		out->data = x.buf ? steal_pointer(&x.buf) : imgfs_xstrdup("");
		out->len = x.len;
		out->content_type = imgfs_media_type_strip(x.content_type);
		if (out->digest.hex)
			out->digest.hex =
			    out->digest.str + strlen(imgfs_digest_alg_name(out->digest.alg)) + 1;
	}
	xfer_destroy(&x);
	return rc;
}

int imgfs_registry_get_blob_mem(struct imgfs_registry *r, const char *path,
				const struct imgfs_digest *d, uint64_t expected_size,
				struct imgfs_fetched *out, struct imgfs_error *err)
{
	struct xfer x = {.what = "blob", .path = path, .reference = d->str, .mode = BODY_MEM};
	_cleanup_free_ char *url = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if (check_path(r, path, err) < 0)
		return -1;
	if (expected_size > SIZE_MAX - 1)
		return imgfs_error_set(err, EIO, "blob %s: size %" PRIu64 " too large", d->str,
				       expected_size);
	x.max = (size_t)expected_size;
	url = imgfs_xasprintf("%s/v2/%s/blobs/%s", r->base, path, d->str);
	rc = run(r, &x, url, err);
	if (rc == 0 && x.len != expected_size)
		rc = imgfs_error_set(
		    err, EIO, "blob %s/%s@%s: size mismatch: expected %" PRIu64 " bytes, got %zu",
		    r->domain, path, d->str, expected_size, x.len);
	if (rc == 0 &&
	    imgfs_fetch_check_digest(x.buf ? x.buf : "", x.len, d, NULL, &out->digest, err) < 0) {
		imgfs_error_wrap(err, "blob %s/%s@%s", r->domain, path, d->str);
		rc = -1;
	}
	if (rc == 0) {
		out->data = x.buf ? steal_pointer(&x.buf) : imgfs_xstrdup("");
		out->len = x.len;
		out->content_type = imgfs_media_type_strip(x.content_type);
		out->digest.hex =
		    out->digest.str + strlen(imgfs_digest_alg_name(out->digest.alg)) + 1;
	}
	xfer_destroy(&x);
	return rc;
}

int imgfs_registry_get_blob(struct imgfs_registry *r, const char *path,
			    const struct imgfs_digest *d, uint64_t offset, imgfs_sink_fn sink,
			    void *ctx, bool *restarted, struct imgfs_error *err)
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
	_cleanup_free_ char *url = NULL;
	int rc;

	if (restarted)
		*restarted = false;
	if (check_path(r, path, err) < 0)
		return -1;
	url = imgfs_xasprintf("%s/v2/%s/blobs/%s", r->base, path, d->str);
	rc = run(r, &x, url, err);
	xfer_destroy(&x);
	return rc;
}
