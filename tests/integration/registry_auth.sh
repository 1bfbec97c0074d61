#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Credentials end to end with imgfs pull: docker-registry with htpasswd (Basic)
# and with auth: token (Bearer, tests/lib/tokenserver.py checking a user and
# password); imgfs login/logout writing the auth file from stdin; a wrong
# password (a clear EACCES); ~/.docker/config.json with credHelpers running a
# docker-credential-* script from PATH; an identity token (OAuth2 refresh
# grant); a token that is already expired when first used (refreshed on
# 401); and no secret in logs, messages or the helper's arguments.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/registry_lib.bash"
need_imgfs
need docker-registry skopeo curl openssl htpasswd

PASS='s3cret-Pa55-imgfs'
PASS_B64=$(printf 'alice:%s' "$PASS" | base64 -w0)
export REGISTRY_AUTH_FILE=$T/auth.json
export HOME=$T/home
unset XDG_RUNTIME_DIR DOCKER_CONFIG
mkdir -p "$HOME"
build_fixtures multiarch
secret_files() { echo "$T/err" "$T/out" "$T/helper.log" "$T/basic/log" "$T/tok/log"; }

# ---- Basic (htpasswd) ----------------------------------------------------------
log "htpasswd registry"
mkdir -p "$T/basic"
printf '%s\n' "$PASS" | htpasswd -iBc "$T/basic/htpasswd" alice >/dev/null 2>&1 ||
	fail "htpasswd failed"
start_reg basic "auth:
  htpasswd:
    realm: imgfs-test
    path: $T/basic/htpasswd"
B=$REG_basic
push_to "$B" lab/app:v1 --dest-creds "alice:$PASS"

log "no credentials: a clear refusal"
pull_fails "imgfs login $B" "$T/s1" "$B/lab/app:v1"
grep -q "EACCES\|asks for a user name and password" "$T/err" || fail "$(cat "$T/err")"

log "login with a wrong password"
printf 'wrong-password\n' | "$IMGFS" login -u alice "$B" >"$T/out" 2>"$T/err" || fail "login: $(cat "$T/err")"
[ "$(stat -c %a "$REGISTRY_AUTH_FILE")" = 600 ] || fail "auth file mode $(stat -c %a "$REGISTRY_AUTH_FILE")"
pull_fails "credentials for $B (from $REGISTRY_AUTH_FILE) were rejected" "$T/s1" "$B/lab/app:v1"
no_secret wrong-password $(secret_files)

log "login, pull, logout"
printf '%s\n' "$PASS" | "$IMGFS" login -u alice "$B" >"$T/out" 2>"$T/err" || fail "login: $(cat "$T/err")"
"$PY" -c '
import json, sys
a = json.load(open(sys.argv[1]))["auths"]
assert list(a) == [sys.argv[2]], a
assert a[sys.argv[2]]["auth"] == sys.argv[3]' "$REGISTRY_AUTH_FILE" "$B" "$PASS_B64" ||
	fail "auth file: $(cat "$REGISTRY_AUTH_FILE")"
pull_ok "$T/s1" "$B/lab/app:v1" -v
no_secret "$PASS" $(secret_files)
no_secret "$PASS_B64" $(secret_files)
"$IMGFS" --store "$T/s1" images >"$T/out" 2>&1 && grep -q "lab/app" "$T/out" || fail "image not listed"
"$IMGFS" logout "$B" >"$T/out" 2>"$T/err" || fail "logout: $(cat "$T/err")"
grep -q "$B" "$REGISTRY_AUTH_FILE" && fail "logout left the entry"
"$IMGFS" logout "$B" >"$T/out" 2>"$T/err" && fail "second logout succeeded"
grep -q "not logged in" "$T/err" || fail "$(cat "$T/err")"
pull_fails "imgfs login" "$T/s2" "$B/lab/app:v1"

log "credential helper from ~/.docker/config.json"
unset REGISTRY_AUTH_FILE
mkdir -p "$T/bin" "$HOME/.docker"
cat >"$T/bin/docker-credential-imgfstest" <<EOF2
#!/bin/sh
read -r host
echo "argv=\$* stdin=\$host" >>"$T/helper.log"
[ "\$host" = "$B" ] || exit 1
printf '{"ServerURL":"%s","Username":"alice","Secret":"%s"}\n' "\$host" "$PASS"
EOF2
chmod +x "$T/bin/docker-credential-imgfstest"
printf '{"credHelpers": {"%s": "imgfstest"}}\n' "$B" >"$HOME/.docker/config.json"
PATH=$T/bin:$PATH pull_ok "$T/s3" "$B/lab/app:v1"
grep -qx "argv=get stdin=$B" "$T/helper.log" || fail "helper calls: $(cat "$T/helper.log")"
no_secret "$PASS" $(secret_files)
# a helper that is not on PATH is named in the error
printf '{"credHelpers": {"%s": "absent"}}\n' "$B" >"$HOME/.docker/config.json"
pull_fails "docker-credential-absent" "$T/s3b" "$B/lab/app:v1"
# credsStore, and an auths entry with username/password fields
printf '{"credsStore": "imgfstest"}\n' >"$HOME/.docker/config.json"
PATH=$T/bin:$PATH pull_ok "$T/s3c" "$B/lab/app:v1"

# ---- Bearer with credentials ------------------------------------------------------
log "token registry with a user and password; the first token expires mid-pull"
start_tokens tok --user "alice:$PASS" --refresh-token "rt-$PASS" --expire-file "$T/expire"
start_reg tok "$(token_yaml tok)"
TR=$REG_tok
export REGISTRY_AUTH_FILE=$T/auth2.json
rm -f "$HOME/.docker/config.json"
# push with a token the server issues (skopeo logs in with Basic to the realm)
push_to "$TR" lab/private:v1 --dest-creds "alice:$PASS"
: >"$T/tok.log"
echo 1 >"$T/expire"
printf '%s\n' "$PASS" | "$IMGFS" login -u alice "$TR" >/dev/null 2>"$T/err" || fail "login: $(cat "$T/err")"
# Through the fault proxy. The token server's first token expires after 2 s,
# and the proxy answers the first blob request as the registry answers an
# expired token (401 invalid_token with a fresh challenge), since the
# registry itself allows clock skew: imgfs must drop the token and get another.
start_proxy slow "$TR"
chal="Bearer realm=\"http://$TOKENS_tok/token\",service=\"imgfs-test-registry\",scope=\"repository:lab/private:pull\",error=\"invalid_token\""
rules slow "[{\"match\": \"/blobs/\", \"action\": \"status\", \"code\": 401, \"times\": 1,
  \"headers\": {\"WWW-Authenticate\": $(printf '%s' "$chal" | "$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}}]"
sed -i "s/$TR/$PROXY_slow/" "$REGISTRY_AUTH_FILE"
pull_ok "$T/s4" "$PROXY_slow/lab/private:v1" -v
grep -q "auth=basic result=ok short" "$T/tok.log" || fail "no short token issued: $(cat "$T/tok.log")"
n=$(grep -c "repository:lab/private:pull auth=basic result=ok" "$T/tok.log")
[ "$n" -ge 2 ] || fail "the expired token was not replaced: $(cat "$T/tok.log")"
grep -q '"action": "status"' "$T/slow.log" || fail "the proxy injected no 401"
sed -i "s/$PROXY_slow/$TR/" "$REGISTRY_AUTH_FILE"
no_secret "$PASS" $(secret_files)

log "token registry, wrong password"
printf 'nope\n' | "$IMGFS" login -u alice "$TR" >/dev/null 2>&1
pull_fails "answered HTTP 401: credentials for $TR (from $REGISTRY_AUTH_FILE) were rejected" \
	"$T/s5" "$TR/lab/private:v1"
grep -q "result=denied" "$T/tok.log" || fail "token server saw no denied request"

log "identity token (refresh grant)"
printf '{"auths": {"%s": {"identitytoken": "rt-%s"}}}\n' "$TR" "$PASS" >"$REGISTRY_AUTH_FILE"
: >"$T/tok.log"
pull_ok "$T/s6" "$TR/lab/private:v1"
grep -q "token POST imgfs-test-registry repository:lab/private:pull auth=refresh result=ok" \
	"$T/tok.log" || fail "no refresh-token grant: $(cat "$T/tok.log")"
no_secret "rt-$PASS" $(secret_files)

log "ok"
