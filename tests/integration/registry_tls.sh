#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# TLS: docker-registry serving a certificate from a test CA on the host's
# non-loopback address (loopback is insecure by default, as in Docker). The
# pull fails without the CA (the message names the host and the reason),
# works with the CA in certs.d/<host:port>/ca.crt, works with the host in
# insecure-registries (by host and by CIDR), fails on a name mismatch, and a
# registry that requires a client certificate accepts certs.d's
# client.cert/client.key.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/registry_lib.bash"
need_imgfs
need docker-registry skopeo curl openssl
ip=$(hostname -I 2>/dev/null | awk '{print $1}')
[ -n "$ip" ] && [[ $ip != 127.* ]] && [[ $ip != *:* ]] || skip "no non-loopback IPv4 address"

cd "$T"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=imgfs-test-ca \
	>/dev/null 2>&1 || fail "CA"
cert() { # NAME SAN
	openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" >/dev/null 2>&1
	printf 'subjectAltName=%s\n' "$2" >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
		-extfile "$1.ext" -out "$1.crt" >/dev/null 2>&1 || fail "cert $1"
}
cert server "IP:$ip"
cert wrong "DNS:other.example"
cert client "DNS:client"
cd - >/dev/null

# start_tls NAME CERT [clientcas]: a TLS registry on $ip; sets TLS_<NAME>
start_tls() {
	local name=$1 port dir=$T/$1 i code extra=""
	port=$(free_port)
	[ -n "${3:-}" ] && extra="
    clientcas:
      - $T/ca.crt"
	mkdir -p "$dir/storage"
	cat >"$dir/config.yml" <<-EOF2
		version: 0.1
		log:
		  level: info
		storage:
		  filesystem:
		    rootdirectory: $dir/storage
		http:
		  addr: $ip:$port
		  tls:
		    certificate: $T/$2.crt
		    key: $T/$2.key$extra
	EOF2
	env $(env | sed -n 's/^\(REGISTRY[A-Za-z0-9_]*\)=.*/-u \1/p') \
		docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
	on_exit kill $!
	for ((i = 0; i < 200; i++)); do
		code=$(curl -ks --cert "$T/client.crt" --key "$T/client.key" -o /dev/null -w "%{http_code}" "https://$ip:$port/v2/" || true)
		[ "$code" != 000 ] && break
		sleep 0.05
	done
	[ "$code" != 000 ] || fail "TLS registry $name did not come up: $(tail -n 3 "$dir/log")"
	printf -v "TLS_$name" '%s' "$ip:$port"
}

build_fixtures multiarch
start_tls good server
G=$TLS_good
push_to "$G" lab/app:v1
store() { mktemp -d -u "$T/store.XXXXXX"; }
echo '{"certs-dir": "'"$T"'/certs.d"}' >"$T/cfg.json"

log "unknown CA"
pull_fails "$G" "$(store)" "$G/lab/app:v1" --config "$T/cfg.json"
grep -q "TLS: .*unable to get local issuer certificate" "$T/err" || fail "no reason: $(cat "$T/err")"

log "the CA in certs.d"
mkdir -p "$T/certs.d/$G"
cp "$T/ca.crt" "$T/certs.d/$G/ca.crt"
pull_ok "$(store)" "$G/lab/app:v1" --config "$T/cfg.json"

log "insecure-registries (host, CIDR)"
echo '{"insecure-registries": ["'"$ip"'"]}' >"$T/cfg-i.json"
pull_ok "$(store)" "$G/lab/app:v1" --config "$T/cfg-i.json"
echo '{"insecure-registries": ["'"$ip"'/32"]}' >"$T/cfg-i.json"
pull_ok "$(store)" "$G/lab/app:v1" --config "$T/cfg-i.json"
echo '{"insecure-registries": ["10.255.255.0/24"]}' >"$T/cfg-i.json"
pull_fails "unable to get local issuer certificate" "$(store)" "$G/lab/app:v1" --config "$T/cfg-i.json"

log "name mismatch"
start_tls wrong wrong
W=$TLS_wrong
mkdir -p "$T/certs.d/$W"
cp "$T/ca.crt" "$T/certs.d/$W/ca.crt"
pull_fails "$W" "$(store)" "$W/lab/app:v1" --config "$T/cfg.json"
grep -qi "TLS: .*\(subject name\|hostname mismatch\|does not match\)" "$T/err" || fail "$(cat "$T/err")"

log "client certificate from certs.d"
start_tls mtls server clientcas
M=$TLS_mtls
mkdir -p "$T/certs.d/$M"
cp "$T/ca.crt" "$T/certs.d/$M/ca.crt"
pull_fails "$M" "$(store)" "$M/lab/app:v1" --config "$T/cfg.json"
cp "$T/client.crt" "$T/certs.d/$M/client.cert"
cp "$T/client.key" "$T/certs.d/$M/client.key"
push_to "$M" lab/app:v1 --dest-cert-dir "$T/certs.d/$M"
pull_ok "$(store)" "$M/lab/app:v1" --config "$T/cfg.json"

log "ok"
