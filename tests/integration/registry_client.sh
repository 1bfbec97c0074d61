#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The registry client (src/fetch) against Debian's docker-registry on
# loopback, driven through tests/tools/imgfs-fetch: manifests by tag and by
# digest (bytes checked against the registry's own Docker-Content-Digest),
# platform selection from a pushed multi-arch index, configs into memory,
# layers streamed whole and resumed with Range, the error mapping (ENOENT,
# ECONNREFUSED, EIO on caps and size mismatches), https by default for
# hosts that are not loopback, and the anonymous Bearer token flow against
# the registry in token-auth mode.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"

FETCH=${IMGFS_TOOLS:-${IMGFS_BUILD:-$IMGFS_SRC/build}/tests}/imgfs-fetch
[ -x "$FETCH" ] || skip "imgfs-fetch not built ($FETCH)"
if ! command -v docker-registry >/dev/null || ! command -v skopeo >/dev/null; then
	apt-get install -y -q docker-registry skopeo >/dev/null 2>&1 || true
fi
need docker-registry skopeo curl sha256sum openssl

# fx ARGS...: run imgfs-fetch, stdout in $T/fo, stderr in $T/fe, status in $RC.
fx() {
	set +e
	"$FETCH" "$@" >"$T/fo" 2>"$T/fe"
	RC=$?
	set -e
}
fx_ok() {
	fx "$@"
	[ "$RC" = 0 ] || fail "imgfs-fetch $* exited $RC: $(cat "$T/fe")"
}
# fx_err ERRNO TEXT ARGS...: must fail with that errno name and message text.
fx_err() {
	local code=$1 text=$2
	shift 2
	fx "$@"
	[ "$RC" = 1 ] || fail "imgfs-fetch $* exited $RC (want failure $code): $(cat "$T/fo" "$T/fe")"
	grep -q "^imgfs-fetch: $code: " "$T/fe" || fail "imgfs-fetch $*: want $code, got: $(cat "$T/fe")"
	grep -qF -- "$text" "$T/fe" || fail "imgfs-fetch $*: message lacks '$text': $(cat "$T/fe")"
}
val() { sed -n "s/^$1=//p" "$T/fo"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

start_registry
build_fixtures multiarch
push_layout "$T/fixtures/multiarch" v1 lab/multi:v1
push_layout "$T/fixtures/multiarch" amd64 lab/multi:amd64
R=$REGISTRY
ACCEPT='application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json'

# ---- manifests -----------------------------------------------------------------
log "manifest by tag"
fx_ok manifest "$R/lab/multi:v1" -o "$T/index.json"
idx_digest=$(val digest)
[ "$(val media_type)" = application/vnd.oci.image.index.v1+json ] || fail "media type: $(cat "$T/fo")"
[ "$idx_digest" = "sha256:$(sha "$T/index.json")" ] || fail "digest is not the bytes' sha256"
[ "$(val size)" = "$(stat -c %s "$T/index.json")" ] || fail "size"
reg_digest=$(curl -fsSI -H "Accept: $ACCEPT" "http://$R/v2/lab/multi/manifests/v1" |
	tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
[ "$idx_digest" = "$reg_digest" ] || fail "digest $idx_digest != registry's $reg_digest"
cmp -s "$T/index.json" "$T/fixtures/multiarch/blobs/sha256/${idx_digest#sha256:}" ||
	fail "index bytes differ from the pushed layout's"

log "manifest by digest"
fx_ok manifest "$R/lab/multi@$idx_digest" -o "$T/index2.json"
cmp -s "$T/index.json" "$T/index2.json" || fail "by-digest bytes differ"
fx_ok manifest "$R/lab/multi:v1@$idx_digest"
[ "$(val digest)" = "$idx_digest" ] || fail "tag@digest"

log "platform selection from the pushed index"
fx_ok manifest "$R/lab/multi:amd64"
amd64_digest=$(val digest)
fx_ok select "$R/lab/multi:v1" linux/amd64
[ "$(val manifest)" = "$amd64_digest" ] || fail "linux/amd64 chose $(val manifest), not $amd64_digest"
[ "$(val manifest_media_type)" = application/vnd.oci.image.manifest.v1+json ] || fail "$(cat "$T/fo")"
fx_ok select "$R/lab/multi:v1" linux/aarch64
[ "$(val platform)" = linux/arm64/v8 ] || fail "aarch64 chose $(val platform)"
fx_ok select "$R/lab/multi:v1" linux/arm/v7
[ "$(val platform)" = linux/arm/v7 ] || fail "arm/v7 chose $(val platform)"
fx_err ENOENT "no manifest for platform linux/s390x in index (offered: linux/amd64, linux/arm64/v8, linux/arm/v7)" \
	select "$R/lab/multi:v1" linux/s390x
fx_err ENOENT "(offered: linux/amd64, linux/arm64/v8, linux/arm/v7)" select "$R/lab/multi:v1" linux/arm/v6

log "config and layers"
fx_ok manifest "$R/lab/multi:amd64" -o "$T/m.json"
read -r cfg_digest cfg_size layer_digest layer_size < <("$PY" -c '
import json, sys
m = json.load(open(sys.argv[1]))
l = max(m["layers"], key=lambda d: d["size"])
print(m["config"]["digest"], m["config"]["size"], l["digest"], l["size"])' "$T/m.json")
fx_ok blob-mem "$R/lab/multi" "$cfg_digest" "$cfg_size" -o "$T/config.json"
[ "sha256:$(sha "$T/config.json")" = "$cfg_digest" ] || fail "config bytes"
fx_err EIO "size mismatch" blob-mem "$R/lab/multi" "$cfg_digest" $((cfg_size + 1))
fx_err EIO "limit" blob-mem "$R/lab/multi" "$cfg_digest" $((cfg_size - 1))

fx_ok blob "$R/lab/multi" "$layer_digest" "$T/layer"
[ "sha256:$(sha "$T/layer")" = "$layer_digest" ] || fail "layer bytes"
[ "$(val bytes)" = "$layer_size" ] && [ "$(val restarted)" = 0 ] || fail "blob: $(cat "$T/fo")"

log "resume with Range"
half=$((layer_size / 2))
head -c "$half" "$T/layer" >"$T/part"
fx_ok blob "$R/lab/multi" "$layer_digest" "$T/part" --offset "$half"
[ "$(val restarted)" = 0 ] || fail "the registry's 206 was taken for an ignored Range"
cmp -s "$T/layer" "$T/part" || fail "resumed blob differs"
# a wrong prefix stays wrong: only the tail was fetched
head -c "$half" /dev/zero >"$T/part0"
fx_ok blob "$R/lab/multi" "$layer_digest" "$T/part0" --offset "$half"
cmp -s "$T/layer" "$T/part0" && fail "resume re-fetched the whole blob"
cmp -s <(tail -c +$((half + 1)) "$T/layer") <(tail -c +$((half + 1)) "$T/part0") || fail "tail differs"
# offset == size: the registry answers 416, nothing more to fetch
cp "$T/layer" "$T/full"
fx_ok blob "$R/lab/multi" "$layer_digest" "$T/full" --offset "$layer_size"
cmp -s "$T/layer" "$T/full" || fail "complete blob changed"
# the sink refusing more bytes aborts the transfer with its error
fx_err EIO "larger than the expected" blob "$R/lab/multi" "$layer_digest" "$T/short" --limit $((layer_size - 1))

# ---- errors ----------------------------------------------------------------------------
log "error mapping"
fx_err ENOENT "manifest unknown" manifest "$R/lab/multi:nope"
fx_err ENOENT "MANIFEST_UNKNOWN" manifest "$R/lab/multi:nope"
fx_err ENOENT "$R/lab/multi:nope" manifest "$R/lab/multi:nope"
fx_err ENOENT "manifest unknown" manifest "$R/lab/absent:v1"
fx_err ENOENT "blob unknown" blob "$R/lab/multi" "sha256:$(printf x | sha256sum | cut -d' ' -f1)" "$T/x"
fx_err EIO "limit is 100 bytes" manifest "$R/lab/multi:v1" --max 100
fx_err EINVAL "invalid reference" manifest "$R/lab/multi@sha256:abc"
dead=$(free_port)
fx_err ECONNREFUSED "127.0.0.1" manifest "127.0.0.1:$dead/lab/multi:v1"

# https unless configured insecure: a plain-HTTP server on a non-loopback address
ip=$(hostname -I 2>/dev/null | awk '{print $1}')
if [ -n "$ip" ] && [[ $ip != 127.* ]]; then
	log "https by default for $ip"
	port=$(free_port)
	mkdir -p "$T/www"
	(cd "$T/www" && exec "$PY" -m http.server --bind "$ip" "$port") >"$T/www.log" 2>&1 &
	on_exit kill $!
	for ((i = 0; i < 100; i++)); do
		curl -fsS -o /dev/null "http://$ip:$port/" 2>/dev/null && break
		sleep 0.05
	done
	fx_err EIO "SSL" manifest "$ip:$port/lab/x:v1"
	grep -q "GET /v2" "$T/www.log" && fail "plain HTTP request sent to a secure host"
	fx_err ENOENT "manifest unknown" manifest "$ip:$port/lab/x:v1" --insecure "$ip:$port"
	grep -q '"GET /v2/lab/x/manifests/v1 HTTP' "$T/www.log" || fail "no request seen: $(cat "$T/www.log")"
fi

# ---- anonymous Bearer flow -------------------------------------------------------------
# docker-registry in token mode; a small token server signs RS256 JWTs with
# a key whose self-signed certificate is the registry's root bundle.
log "anonymous Bearer token flow"
A=$T/auth
mkdir -p "$A/storage"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$A/key.pem" -out "$A/cert.pem" -days 2 \
	-subj /CN=imgfs-test-token >/dev/null 2>&1 || fail "openssl req failed"
tport=$(free_port)
cat >"$A/token.py" <<'EOF'
import base64, json, subprocess, sys, time, urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
key, cert, port, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"], capture_output=True, check=True).stdout
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        scopes = " ".join(q.get("scope", [])).split()
        access = []
        for s in scopes:
            typ, name, actions = s.split(":")
            access.append({"type": typ, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        hdr = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": "imgfs-test", "sub": "", "aud": q.get("service", [""])[0], "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": str(now) + self.path, "access": access}
        signing = (b64(json.dumps(hdr).encode()) + "." + b64(json.dumps(claims).encode())).encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing,
                             capture_output=True, check=True).stdout
        body = json.dumps({"token": signing.decode() + "." + b64(sig), "expires_in": 300}).encode()
        with open(log, "a") as f:
            f.write("token %s %s\n" % (q.get("service", [""])[0], " ".join(scopes)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
"$PY" "$A/token.py" "$A/key.pem" "$A/cert.pem" "$tport" "$A/token.log" >"$A/token.out" 2>&1 &
on_exit kill $!
aport=$(free_port)
cat >"$A/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $A/storage
http:
  addr: 127.0.0.1:$aport
auth:
  token:
    realm: http://127.0.0.1:$tport/token
    service: imgfs-test-registry
    issuer: imgfs-test
    rootcertbundle: $A/cert.pem
EOF
env -u REGISTRY -u REGISTRY_DIR -u REGISTRY_LOG docker-registry serve "$A/config.yml" >"$A/log" 2>&1 &
on_exit kill $!
for ((i = 0; i < 200; i++)); do
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$aport/v2/" 2>/dev/null || true)
	[ "$code" = 401 ] && break
	sleep 0.05
done
[ "$code" = 401 ] || fail "token-auth registry did not come up: $(tail -n 5 "$A/log")"
for ((i = 0; i < 200; i++)); do
	curl -fsS -o /dev/null "http://127.0.0.1:$tport/token?service=x&scope=repository:a/b:pull" 2>/dev/null &&
		break
	sleep 0.05
done
[ "$i" -lt 200 ] || fail "token server did not come up: $(cat "$A/token.out")"
AR=127.0.0.1:$aport
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$T/fixtures/multiarch:amd64" \
	"docker://$AR/lab/private:v1" >"$T/skopeo-auth.log" 2>&1 ||
	fail "push to the token-auth registry failed: $(tail -n 5 "$T/skopeo-auth.log")"
: >"$A/token.log"
fx_ok manifest "$AR/lab/private:v1"
[ "$(val digest)" = "$amd64_digest" ] || fail "token-auth manifest digest $(val digest)"
grep -q "^token imgfs-test-registry repository:lab/private:pull$" "$A/token.log" ||
	fail "no anonymous pull token was requested: $(cat "$A/token.log")"
fx_ok blob "$AR/lab/private" "$layer_digest" "$T/layer-auth"
cmp -s "$T/layer" "$T/layer-auth" || fail "blob through token auth differs"
# without a token the registry refuses; a token for another repository does not open this one
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$AR/v2/lab/private/manifests/v1")" = 401 ] ||
	fail "registry did not require a token"
fx_err ENOENT "unknown" manifest "$AR/lab/nothing:v1"

log "ok"
