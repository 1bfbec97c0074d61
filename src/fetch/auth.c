/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry authentication: WWW-Authenticate parsing (RFC 7235), the
 * anonymous Bearer token flow of the distribution token spec, and the token
 * cache. Tokens are never logged and are wiped from memory when dropped.
 *
 * Credentials (creds.c) are used when the registry asks: Basic directly, or
 * Basic to the token server (an identity token is POSTed as an OAuth2
 * refresh token, as docker does).
 */
#include "fetch_i.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- WWW-Authenticate ---------------------------------------------------- */

static bool is_tchar(char c)
{
	return isascii((unsigned char)c) &&
	       (isalnum((unsigned char)c) || (c && strchr("!#$%&'*+-.^_`|~", c)));
}

/* token68 adds '/' and trailing '=' */
static bool is_t68char(char c)
{
	return isascii((unsigned char)c) &&
	       (isalnum((unsigned char)c) || (c && strchr("-._~+/", c)));
}

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

static const char *skip_ws_commas(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == ',')
		p++;
	return p;
}

static const char *scan_token(const char *p)
{
	while (is_tchar(*p))
		p++;
	return p;
}

/* p at the opening quote; returns the unescaped value, *end after the closing quote. */
static char *scan_quoted(const char *p, const char **end, struct imgfs_error *err)
{
	size_t cap = strlen(p), n = 0;
	char *v = malloc(cap + 1);
	if (!v) {
		imgfs_error_set(err, ENOMEM, "out of memory");
		return NULL;
	}
	for (p++; *p && *p != '"'; p++) {
		if (*p == '\\') {
			p++;
			if (!*p)
				break;
		}
		v[n++] = *p;
	}
	if (*p != '"') {
		free(v);
		imgfs_error_set(err, EINVAL,
				"malformed WWW-Authenticate header: unterminated quoted string");
		return NULL;
	}
	v[n] = '\0';
	*end = p + 1;
	return v;
}

static int add_param(struct imgfs_auth_challenge *c, char *key, char *value,
		     struct imgfs_error *err)
{
	struct imgfs_auth_param *np = realloc(c->params, (c->n_params + 1) * sizeof(*np));
	if (!np) {
		free(key);
		free(value);
		return imgfs_error_set(err, ENOMEM, "out of memory");
	}
	for (char *k = key; *k; k++)
		*k = (char)tolower((unsigned char)*k);
	c->params = np;
	c->params[c->n_params].key = key;
	c->params[c->n_params].value = value;
	c->n_params++;
	return 0;
}

/* Does p start an auth-param ("token BWS =" not followed by '=' / end as token68)? */
static bool starts_param(const char *p)
{
	const char *e = scan_token(p);
	if (e == p)
		return false;
	e = skip_ws(e);
	return *e == '=';
}

/* Parse the params of one challenge from p; returns where the next challenge starts. */
static const char *parse_params(const char *p, struct imgfs_auth_challenge *c,
				struct imgfs_error *err)
{
	/* token68 form: "Negotiate abc==" */
	if (!starts_param(p) && is_t68char(*p)) {
		const char *e = p;
		while (is_t68char(*e))
			e++;
		while (*e == '=')
			e++;
		e = skip_ws(e);
		if (*e == ',' || !*e) {
			if (add_param(c, imgfs_xstrdup(""), strndup(p, (size_t)(e - p)), err) < 0)
				return NULL;
			return e;
		}
	}
	while (starts_param(p)) {
		const char *ke = scan_token(p);
		char *key = strndup(p, (size_t)(ke - p));
		char *val;
		p = skip_ws(skip_ws(ke) + 1);
		if (*p == '"') {
			val = scan_quoted(p, &p, err);
			if (!val) {
				free(key);
				return NULL;
			}
		} else {
			/* token per RFC 7235; be lenient with unquoted URLs (':' and '/') */
			const char *ve = p;
			while ((unsigned char)*ve > 0x20 && (unsigned char)*ve < 0x7f &&
			       *ve != ',' && *ve != '"')
				ve++;
			val = strndup(p, (size_t)(ve - p));
			p = ve;
		}
		if (!key || !val) {
			free(key);
			free(val);
			imgfs_error_set(err, ENOMEM, "out of memory");
			return NULL;
		}
		if (add_param(c, key, val, err) < 0)
			return NULL;
		p = skip_ws(p);
		if (*p && *p != ',') {
			imgfs_error_set(
			    err, EINVAL,
			    "malformed WWW-Authenticate header: unexpected '%c' after parameter",
			    *p);
			return NULL;
		}
		p = skip_ws_commas(p);
	}
	return p;
}

int imgfs_auth_parse(const char *header, struct imgfs_auth_challenge **out, size_t *n,
		     struct imgfs_error *err)
{
	struct imgfs_auth_challenge *cs = NULL;
	size_t nc = 0;
	const char *p = header ? header : "";

	*out = NULL;
	*n = 0;
	p = skip_ws_commas(p);
	while (*p) {
		const char *e = scan_token(p);
		struct imgfs_auth_challenge *ncs;
		if (e == p) {
			imgfs_error_set(err, EINVAL,
					"malformed WWW-Authenticate header: expected an auth "
					"scheme at \"%.20s\"",
					p);
			goto fail;
		}
		ncs = realloc(cs, (nc + 1) * sizeof(*cs));
		if (!ncs) {
			imgfs_error_set(err, ENOMEM, "out of memory");
			goto fail;
		}
		cs = ncs;
		memset(&cs[nc], 0, sizeof(cs[nc]));
		cs[nc].scheme = strndup(p, (size_t)(e - p));
		nc++;
		if (!cs[nc - 1].scheme) {
			imgfs_error_set(err, ENOMEM, "out of memory");
			goto fail;
		}
		if (*e && *e != ' ' && *e != '\t' && *e != ',') {
			imgfs_error_set(err, EINVAL,
					"malformed WWW-Authenticate header: bad auth scheme");
			goto fail;
		}
		p = skip_ws(e);
		if (*p == ',') {
			p = skip_ws_commas(p);
			continue;
		}
		p = parse_params(p, &cs[nc - 1], err);
		if (!p)
			goto fail;
		p = skip_ws_commas(p);
	}
	if (nc == 0) {
		imgfs_error_set(err, EINVAL, "malformed WWW-Authenticate header: no challenge");
		goto fail;
	}
	*out = cs;
	*n = nc;
	return 0;
fail:
	imgfs_auth_challenges_free(cs, nc);
	return -1;
}

void imgfs_auth_challenges_free(struct imgfs_auth_challenge *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(c[i].scheme);
		for (size_t j = 0; j < c[i].n_params; j++) {
			free(c[i].params[j].key);
			free(c[i].params[j].value);
		}
		free(c[i].params);
	}
	free(c);
}

const char *imgfs_auth_param(const struct imgfs_auth_challenge *c, const char *key)
{
	for (size_t i = 0; i < c->n_params; i++)
		if (!strcasecmp(c->params[i].key, key))
			return c->params[i].value;
	return NULL;
}

static char *dup_or_null(const char *s)
{
	return s ? imgfs_xstrdup(s) : NULL;
}

int imgfs_auth_plan_from_header(const char *header, struct imgfs_auth_plan *plan,
				struct imgfs_error *err)
{
	struct imgfs_auth_challenge *cs;
	size_t n;
	const struct imgfs_auth_challenge *bearer = NULL, *basic = NULL;
	int rc = 0;

	memset(plan, 0, sizeof(*plan));
	if (imgfs_auth_parse(header, &cs, &n, err) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!bearer && !strcasecmp(cs[i].scheme, "bearer"))
			bearer = &cs[i];
		else if (!basic && !strcasecmp(cs[i].scheme, "basic"))
			basic = &cs[i];
	}
	if (bearer) {
		const char *realm = imgfs_auth_param(bearer, "realm");
		if (!realm || !*realm) {
			rc = imgfs_error_set(err, EINVAL,
					     "no realm specified for token auth challenge");
		} else {
			plan->scheme = IMGFS_AUTH_BEARER;
			plan->realm = imgfs_xstrdup(realm);
			plan->service = dup_or_null(imgfs_auth_param(bearer, "service"));
			plan->scope = dup_or_null(imgfs_auth_param(bearer, "scope"));
			plan->error = dup_or_null(imgfs_auth_param(bearer, "error"));
		}
	} else if (basic) {
		plan->scheme = IMGFS_AUTH_BASIC;
		plan->realm = dup_or_null(imgfs_auth_param(basic, "realm"));
	} else {
		rc = imgfs_error_set(err, EINVAL,
				     "failed to find supported auth scheme (got \"%.40s\")",
				     cs[0].scheme);
	}
	imgfs_auth_challenges_free(cs, n);
	if (rc < 0)
		imgfs_auth_plan_destroy(plan);
	return rc;
}

void imgfs_auth_plan_destroy(struct imgfs_auth_plan *plan)
{
	free(plan->realm);
	free(plan->service);
	free(plan->scope);
	free(plan->error);
	memset(plan, 0, sizeof(*plan));
}

/* ---- token responses --------------------------------------------------------- */

static bool token_chars_ok(const char *t)
{
	if (!*t)
		return false;
	for (const char *p = t; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return false;
	return true;
}

int imgfs_auth_parse_token_response(const char *body, size_t len, char **token, long *expires_in,
				    struct imgfs_error *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	const char *t = NULL;
	json_t *v;

	*token = NULL;
	*expires_in = 60;
	if (!root)
		return imgfs_error_set(
		    err, EACCES, "authorization failed: token response is not JSON: %s (line %d)",
		    jerr.text, jerr.line);
	if (!json_is_object(root)) {
		json_decref(root);
		return imgfs_error_set(err, EACCES,
				       "authorization failed: token response is not a JSON object");
	}
	v = json_object_get(root, "token");
	if (json_is_string(v) && json_string_length(v) > 0)
		t = json_string_value(v);
	if (!t) {
		v = json_object_get(root, "access_token");
		if (json_is_string(v) && json_string_length(v) > 0)
			t = json_string_value(v);
	}
	if (!t || strlen(t) != json_string_length(v) || !token_chars_ok(t)) {
		json_decref(root);
		return imgfs_error_set(err, EACCES,
				       "authorization failed: token response has no usable token");
	}
	v = json_object_get(root, "expires_in");
	if (json_is_integer(v) && json_integer_value(v) > 0)
		*expires_in =
		    json_integer_value(v) > 86400 * 7 ? 86400 * 7 : (long)json_integer_value(v);
	*token = imgfs_xstrdup(t);
	json_decref(root);
	return 0;
}

/* ---- token cache --------------------------------------------------------------- */

static void token_wipe_free(struct imgfs_token *t)
{
	if (t->token)
		explicit_bzero(t->token, strlen(t->token));
	free(t->token);
	free(t->key);
	free(t);
}

char *imgfs_token_get(struct imgfs_registry *r, const char *key)
{
	char *tok = NULL;
	double now = imgfs_now();
	pthread_mutex_lock(&r->lock);
	for (struct imgfs_token *t = r->tokens; t; t = t->next) {
		if (!strcmp(t->key, key) && t->expiry > now) {
			tok = imgfs_xstrdup(t->token);
			break;
		}
	}
	pthread_mutex_unlock(&r->lock);
	return tok;
}

void imgfs_token_drop(struct imgfs_registry *r, const char *key)
{
	pthread_mutex_lock(&r->lock);
	for (struct imgfs_token **pp = &r->tokens; *pp;) {
		struct imgfs_token *t = *pp;
		if (!strcmp(t->key, key)) {
			*pp = t->next;
			token_wipe_free(t);
		} else {
			pp = &t->next;
		}
	}
	pthread_mutex_unlock(&r->lock);
}

void imgfs_token_put(struct imgfs_registry *r, const char *key, const char *token, long expires_in)
{
	struct imgfs_token *t = imgfs_xmalloc(sizeof(*t));
	/* renew a little early so a token does not expire in flight */
	long life = expires_in > 20 ? expires_in - 10 : expires_in;
	t->key = imgfs_xstrdup(key);
	t->token = imgfs_xstrdup(token);
	t->expiry = imgfs_now() + (double)life;
	imgfs_token_drop(r, key);
	pthread_mutex_lock(&r->lock);
	t->next = r->tokens;
	r->tokens = t;
	pthread_mutex_unlock(&r->lock);
}

void imgfs_tokens_free(struct imgfs_registry *r)
{
	while (r->tokens) {
		struct imgfs_token *t = r->tokens;
		r->tokens = t->next;
		token_wipe_free(t);
	}
}

/* ---- the token request ------------------------------------------------------------ */

struct membuf {
	char *data;
	size_t len, cap, max;
	bool overflow;
};

static size_t membuf_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct membuf *m = ud;
	size_t n = size * nmemb;
	if (n > m->max - m->len) {
		m->overflow = true;
		return 0;
	}
	if (m->len + n + 1 > m->cap) {
		size_t ncap = m->cap ? m->cap : 4096;
		char *nd;
		while (ncap < m->len + n + 1)
			ncap *= 2;
		nd = realloc(m->data, ncap);
		if (!nd)
			return 0;
		m->data = nd;
		m->cap = ncap;
	}
	memcpy(m->data + m->len, ptr, n);
	m->len += n;
	m->data[m->len] = '\0';
	return n;
}

/* Check the realm URL: http(s) only, no userinfo, http only for insecure registries. */
static int check_realm(struct imgfs_endpoint *ep, const char *realm, char **host,
		       struct imgfs_error *err)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *user = NULL, *h = NULL;
	int rc = 0;
	if (!u)
		return imgfs_error_set(err, ENOMEM, "out of memory");
	if (curl_url_set(u, CURLUPART_URL, realm, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK) {
		rc = imgfs_error_set(err, EACCES, "registry %s: invalid token realm URL", ep->host);
	} else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
		rc = imgfs_error_set(err, EACCES,
				     "registry %s: token realm URL carries credentials; refused",
				     ep->host);
	} else if (strcmp(scheme, "https") &&
		   !((ep->insecure || ep->http_only) && !strcmp(scheme, "http"))) {
		rc = imgfs_error_set(
		    err, EACCES,
		    "registry %s: token realm on %s (scheme %s) refused: only https, or http "
		    "for insecure registries",
		    ep->host, h, scheme);
	} else {
		*host = imgfs_xstrdup(h);
	}
	curl_free(scheme);
	curl_free(user);
	curl_free(h);
	curl_url_cleanup(u);
	return rc;
}

static char *token_query(CURL *c, const char *service, const char *scope, const char *account)
{
	char *svc = service ? curl_easy_escape(c, service, 0) : NULL;
	char *sc = curl_easy_escape(c, scope, 0);
	char *acc = account ? curl_easy_escape(c, account, 0) : NULL;
	char *q = imgfs_xasprintf("%s%s%sscope=%s", svc ? "service=" : "", svc ? svc : "",
				  svc ? "&" : "", sc ? sc : "");
	if (acc) {
		char *q2 = imgfs_xasprintf("%s&account=%s", q, acc);
		free(q);
		q = q2;
	}
	curl_free(svc);
	curl_free(sc);
	curl_free(acc);
	return q;
}

struct token_req {
	const char *url;
	const char *realm_host;
	const char *form;		 /* POST body (identity token), or NULL for GET */
	const struct imgfs_creds *creds; /* Basic credentials for a GET, or NULL */
};

static int token_request(struct imgfs_registry *r, struct imgfs_endpoint *ep,
			 const struct token_req *q, struct membuf *m, long *status,
			 struct imgfs_error *err)
{
	CURL *c = curl_easy_init();
	char errbuf[CURL_ERROR_SIZE];
	CURLcode rc;
	*status = 0;
	if (!c)
		return imgfs_error_set(err, ENOMEM, "curl_easy_init failed");
	imgfs_endpoint_setup_easy(r, ep, c, errbuf);
	curl_easy_setopt(c, CURLOPT_URL, q->url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, membuf_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, m);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
	if (q->form) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->form);
	} else if (q->creds && q->creds->username) {
		curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(c, CURLOPT_USERNAME, q->creds->username);
		curl_easy_setopt(c, CURLOPT_PASSWORD, q->creds->password);
	}
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	if (rc != CURLE_OK && m->overflow) {
		curl_easy_cleanup(c);
		return imgfs_error_set(
		    err, EACCES, "authorization failed: token response from %s exceeds %u bytes",
		    q->realm_host, IMGFS_MAX_TOKEN_RESPONSE);
	}
	if (rc != CURLE_OK) {
		imgfs_curl_error(err, c, rc, "token request", q->realm_host, errbuf);
		curl_easy_cleanup(c);
		return -1;
	}
	curl_easy_cleanup(c);
	if ((*status == 401 || *status == 403) && q->creds)
		return imgfs_error_set(err, EACCES,
				       "authorization failed: token server %s answered HTTP %ld: "
				       "credentials for %s (from %s) were rejected",
				       q->realm_host, *status, ep->host, q->creds->source);
	if (*status == 401 || *status == 403)
		return imgfs_error_set(err, EACCES,
				       "authorization failed: token server %s answered HTTP %ld",
				       q->realm_host, *status);
	if (*status == 429 || *status >= 500)
		return imgfs_error_set(err, *status == 429 ? EAGAIN : EIO,
				       "token server %s answered HTTP %ld", q->realm_host, *status);
	if (*status != 200)
		return imgfs_error_set(err, EACCES,
				       "authorization failed: token server %s answered HTTP %ld",
				       q->realm_host, *status);
	return 0;
}

int imgfs_endpoint_creds(struct imgfs_registry *r, struct imgfs_endpoint *ep,
			 const struct imgfs_creds **out, struct imgfs_error *err)
{
	struct imgfs_creds c;
	int rc = 0;
	*out = NULL;
	if (r->anonymous)
		return 0; /* not even looked up: a helper is a program run with our rights */
	pthread_mutex_lock(&r->lock);
	if (!ep->creds_done) {
		/* the upstream of docker.io is registry-1.docker.io: look up docker.io */
		rc = imgfs_creds_lookup(ep->mirror ? ep->host : r->domain, r->auth_file, &c, err);
		if (rc == 0 && !ep->mirror && strcmp(r->domain, ep->host))
			rc = imgfs_creds_lookup(ep->host, r->auth_file, &c, err);
		if (rc >= 0) {
			ep->creds_done = true;
			ep->creds_found = rc == 1;
			if (rc == 1) {
				ep->creds = c;
				imgfs_debug("registry %s: using credentials from %s", ep->host,
					    c.source);
			}
		}
	}
	if (rc >= 0 && ep->creds_found)
		*out = &ep->creds;
	pthread_mutex_unlock(&r->lock);
	return rc < 0 ? imgfs_error_wrap(err, "registry %s: credentials", ep->host) : 0;
}

static int basic_authz(struct imgfs_endpoint *ep, const struct imgfs_auth_plan *plan,
		       const struct imgfs_creds *cr, char **authz, struct imgfs_error *err)
{
	_cleanup_free_ char *up = NULL;
	char *b64;
	size_t n;
	if (!cr || !cr->username)
		return imgfs_error_set(err, EACCES,
				       "registry %s asks for a user name and password (basic "
				       "auth, realm \"%.100s\") and none is configured: run "
				       "imgfs login %s",
				       ep->host, plan->realm ? plan->realm : "", ep->host);
	up = imgfs_xasprintf("%s:%s", cr->username, cr->password);
	n = strlen(up);
	b64 = imgfs_xmalloc(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)up, (int)n);
	explicit_bzero(up, n);
	*authz = imgfs_xasprintf("Basic %s", b64);
	explicit_bzero(b64, strlen(b64));
	free(b64);
	return 0;
}

int imgfs_auth_fetch_token(struct imgfs_registry *r, struct imgfs_endpoint *ep,
			   const struct imgfs_auth_plan *plan, const char *key, const char *path,
			   char **authz, struct imgfs_error *err)
{
	_cleanup_free_ char *realm_host = NULL;
	_cleanup_free_ char *url = NULL;
	_cleanup_free_ char *scope = NULL;
	_cleanup_free_ char *form = NULL;
	_cleanup_free_ char *query = NULL;
	const struct imgfs_creds *cr = NULL;
	struct membuf m = {.max = IMGFS_MAX_TOKEN_RESPONSE};
	struct token_req q = {0};
	char *token = NULL;
	CURL *esc;
	long expires_in, status;
	int rc;

	*authz = NULL;
	if (imgfs_endpoint_creds(r, ep, &cr, err) < 0)
		return -1;
	if (plan->scheme == IMGFS_AUTH_BASIC && r->anonymous)
		return imgfs_error_set(err, EACCES,
				       "registry %s asks for a user name and password (basic auth, "
				       "realm \"%.100s\") and this pull is anonymous",
				       ep->host, plan->realm ? plan->realm : "");
	if (plan->scheme == IMGFS_AUTH_BASIC) {
		if (basic_authz(ep, plan, cr, authz, err) < 0)
			return -1;
		imgfs_token_put(r, key, *authz, 86400);
		return 0;
	}
	if (plan->scheme != IMGFS_AUTH_BEARER)
		return imgfs_error_set(err, EACCES, "registry %s: no usable auth challenge",
				       ep->host);
	if (check_realm(ep, plan->realm, &realm_host, err) < 0)
		return -1;
	scope =
	    plan->scope ? imgfs_xstrdup(plan->scope) : imgfs_xasprintf("repository:%s:pull", path);
	esc = curl_easy_init();
	if (!esc)
		return imgfs_error_set(err, ENOMEM, "curl_easy_init failed");
	query = token_query(esc, plan->service, scope,
			    cr && cr->username && !cr->identity_token ? cr->username : NULL);
	if (cr && cr->identity_token) {
		/* docker login's identity token: the OAuth2 refresh-token grant */
		char *rt = curl_easy_escape(esc, cr->identity_token, 0);
		form =
		    imgfs_xasprintf("grant_type=refresh_token&client_id=imgfs&%s&refresh_token=%s",
				    query, rt ? rt : "");
		if (rt) {
			explicit_bzero(rt, strlen(rt));
			curl_free(rt);
		}
		url = imgfs_xstrdup(plan->realm);
	} else {
		url = imgfs_xasprintf("%s%s%s", plan->realm, strchr(plan->realm, '?') ? "&" : "?",
				      query);
	}
	curl_easy_cleanup(esc);
	imgfs_debug("fetching %s token from %s for %s", cr ? "an authenticated" : "an anonymous",
		    realm_host, scope);
	q = (struct token_req){.url = url, .realm_host = realm_host, .form = form, .creds = cr};
	rc = token_request(r, ep, &q, &m, &status, err);
	if (form)
		explicit_bzero(form, strlen(form));
	if (rc == 0)
		rc = imgfs_auth_parse_token_response(m.data ? m.data : "", m.len, &token,
						     &expires_in, err);
	if (m.data)
		explicit_bzero(m.data, m.len);
	free(m.data);
	if (rc < 0)
		return -1;
	*authz = imgfs_xasprintf("Bearer %s", token);
	explicit_bzero(token, strlen(token));
	free(token);
	imgfs_token_put(r, key, *authz, expires_in);
	return 0;
}
