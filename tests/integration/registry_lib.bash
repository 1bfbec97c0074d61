# SPDX-License-Identifier: Apache-2.0
# Helpers for tests/integration/registry_*.sh (sourced after tests/lib/common.sh):
# docker-registry instances with extra config (auth, TLS, proxy), the
# fault-injecting proxy (tests/lib/faultproxy.py) and the token server
# (tests/lib/tokenserver.py).

FAULTPROXY="$IMGFS_SRC/tests/lib/faultproxy.py"
TOKENSERVER="$IMGFS_SRC/tests/lib/tokenserver.py"

# wait_file FILE: wait (10 s) for a readiness file.
wait_file() {
	local i
	for ((i = 0; i < 200; i++)); do
		[ -s "$1" ] && return 0
		sleep 0.05
	done
	fail "timed out waiting for $1"
}

# start_reg NAME EXTRA_YAML [SCHEME]: a docker-registry on a free loopback port
# with storage in $T/NAME; EXTRA_YAML is appended at the top level (auth:,
# proxy:) and may use @PORT@. Sets REG_<NAME>=127.0.0.1:PORT.
start_reg() {
	local name=$1 extra=$2 scheme=${3:-http} dir=$T/$1 port pid i code
	mkdir -p "$dir/storage"
	port=$(free_port)
	cat >"$dir/config.yml" <<-EOF2
		version: 0.1
		log:
		  level: info
		  formatter: text
		storage:
		  filesystem:
		    rootdirectory: $dir/storage
		  maintenance:
		    uploadpurging:
		      enabled: false
		http:
		  addr: 127.0.0.1:$port
	EOF2
	printf '%s\n' "${extra//@PORT@/$port}" >>"$dir/config.yml"
	# the registry reads REGISTRY_* variables as configuration (REGISTRY_AUTH_FILE too)
	env $(env | sed -n 's/^\(REGISTRY[A-Za-z0-9_]*\)=.*/-u \1/p') \
		docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
	pid=$!
	on_exit kill "$pid"
	for ((i = 0; i < 200; i++)); do
		code=$(curl -ks -o /dev/null -w '%{http_code}' "$scheme://127.0.0.1:$port/v2/" || true)
		case $code in 200 | 401) break ;; esac
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	case $code in 200 | 401) ;; *) fail "registry $name did not come up: $(tail -n 5 "$dir/log")" ;; esac
	printf -v "REG_$name" '%s' "127.0.0.1:$port"
}

# start_proxy NAME UPSTREAM [LISTEN_HOST]: the fault proxy; rules in
# $T/NAME.rules, log in $T/NAME.log. Sets PROXY_<NAME>=HOST:PORT.
start_proxy() {
	local name=$1 up=$2 host=${3:-127.0.0.1}
	: >"$T/$name.log"
	echo '[]' >"$T/$name.rules"
	"$PY" "$FAULTPROXY" --listen "$host:0" --upstream "$up" --rules "$T/$name.rules" \
		--log "$T/$name.log" --ready "$T/$name.ready" >"$T/$name.out" 2>&1 &
	on_exit kill $!
	wait_file "$T/$name.ready"
	printf -v "PROXY_$name" '%s' "$(cat "$T/$name.ready")"
}

# rules NAME JSON: set the proxy's rules (counters restart).
rules() {
	printf '%s\n' "$2" >"$T/$1.rules.tmp"
	mv "$T/$1.rules.tmp" "$T/$1.rules"
}

# start_tokens NAME ARGS...: the token server with a fresh key and
# certificate ($T/NAME.key, $T/NAME.crt); log in $T/NAME.log. Sets TOKENS_<NAME>.
start_tokens() {
	local name=$1
	shift
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/$name.key" -out "$T/$name.crt" \
		-days 2 -subj /CN=imgfs-test-token >/dev/null 2>&1 || fail "openssl req failed"
	: >"$T/$name.log"
	"$PY" "$TOKENSERVER" --key "$T/$name.key" --cert "$T/$name.crt" --listen 127.0.0.1:0 \
		--log "$T/$name.log" --ready "$T/$name.ready" "$@" >"$T/$name.out" 2>&1 &
	on_exit kill $!
	wait_file "$T/$name.ready"
	printf -v "TOKENS_$name" '%s' "$(cat "$T/$name.ready")"
}

# token_yaml NAME: the registry's auth: section for token server NAME.
token_yaml() {
	local v=TOKENS_$1
	cat <<-EOF2
		auth:
		  token:
		    realm: http://${!v}/token
		    service: imgfs-test-registry
		    issuer: imgfs-test
		    rootcertbundle: $T/$1.crt
	EOF2
}

# push_to HOSTPORT REPO:TAG [skopeo args]: push the "multiarch" fixture's amd64 image.
push_to() {
	local dest=$1 ref=$2
	shift 2
	skopeo --insecure-policy copy -q --dest-tls-verify=false --preserve-digests "$@" \
		"oci:$T/fixtures/multiarch:amd64" "docker://$dest/$ref" >"$T/skopeo.log" 2>&1 ||
		fail "push to $dest/$ref failed: $(tail -n 5 "$T/skopeo.log")"
}

# pull_run STORE REF [imgfs options before the command]: imgfs pull, output in
# $T/out and $T/err, status in $RC.
pull_run() {
	local store=$1 ref=$2
	shift 2
	set +e
	"$IMGFS" --store "$store" "$@" pull "$ref" >"$T/out" 2>"$T/err"
	RC=$?
	set -e
}
pull_ok() {
	pull_run "$@"
	[ "$RC" = 0 ] || fail "imgfs pull $2 exited $RC: $(tail -n 5 "$T/err")"
}
# pull_fails TEXT STORE REF [options]: must fail, with TEXT in the message.
pull_fails() {
	local text=$1
	shift
	pull_run "$@"
	[ "$RC" != 0 ] || fail "imgfs pull $2 succeeded; expected failure with '$text'"
	grep -qF -- "$text" "$T/err" || fail "imgfs pull $2: message lacks '$text': $(cat "$T/err")"
}

# no_secret SECRET FILE...: fail if SECRET (or its base64 forms) appears in any FILE.
no_secret() {
	local s=$1 f
	shift
	for f in "$@"; do
		[ -e "$f" ] || continue
		grep -qF -- "$s" "$f" && fail "secret found in $f"
	done
	return 0
}
