#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Mirrors: a mirror that is down falls back to the next and then upstream; a
# pull-through cache (docker-registry with proxy.remoteurl) as a mirror
# serves the second pull without the upstream sending a blob again; the host
# that served each blob is logged; registry-mirrors serves docker.io
# references (the mirror answers, so Docker Hub is never contacted).
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/registry_lib.bash"
need_imgfs
need docker-registry skopeo curl

build_fixtures features
start_reg up ""
U=$REG_up
skopeo --insecure-policy copy -q --dest-tls-verify=false --preserve-digests \
	"oci:$T/fixtures/features:v1" "docker://$U/lab/feat:v1" >"$T/skopeo.log" 2>&1 ||
	fail "push failed: $(cat "$T/skopeo.log")"
# the upstream as the cache sees it, through a proxy that logs every request
start_proxy up "$U"
start_reg cache "proxy:
  remoteurl: http://$PROXY_up"
C=$REG_cache
dead=127.0.0.1:$(free_port)
blob_gets_up() { grep -c '"GET", "path": "/v2/[^"]*/blobs/' "$T/up.log" || true; }
store() { mktemp -d -u "$T/store.XXXXXX"; }

log "a mirror that is down: fall back to upstream"
cat >"$T/cfg-dead.json" <<EOF2
{"registries": {"$U": {"mirrors": ["http://$dead"]}}}
EOF2
pull_ok "$(store)" "$U/lab/feat:v1" --config "$T/cfg-dead.json"
grep -q "mirror $dead: .*trying upstream" "$T/err" || fail "no fallback message: $(cat "$T/err")"
grep -q "from $U$" "$T/err" || fail "upstream not named as the source: $(cat "$T/err")"

log "pull-through cache as a mirror (after a dead one)"
cat >"$T/cfg.json" <<EOF2
{"registries": {"$U": {"mirrors": ["http://$dead", "http://$C/"]}}}
EOF2
pull_ok "$(store)" "$U/lab/feat:v1" --config "$T/cfg.json"
grep -q "from $C (mirror)" "$T/err" || fail "the cache did not serve: $(cat "$T/err")"
grep -q "mirror $dead: .*trying the next mirror" "$T/err" || fail "$(cat "$T/err")"
first=$(blob_gets_up)
[ "$first" -gt 0 ] || fail "the cache fetched nothing from upstream"
: >"$T/up.log"
pull_ok "$(store)" "$U/lab/feat:v1" --config "$T/cfg.json"
grep -q "from $C (mirror)" "$T/err" || fail "second pull not from the cache"
grep -q "^layer 1/.*: done (.* from $C (mirror))$" "$T/err" ||
	fail "the progress line does not name the mirror that served the layer: $(cat "$T/err")"
[ "$(blob_gets_up)" = 0 ] || fail "upstream sent blobs again: $(cat "$T/up.log")"

log "a mirror that lacks the image: upstream answers"
start_reg empty ""
cat >"$T/cfg-empty.json" <<EOF2
{"registries": {"$U": {"mirrors": ["http://$REG_empty"]}}}
EOF2
pull_ok "$(store)" "$U/lab/feat:v1" --config "$T/cfg-empty.json"
grep -q "mirror $REG_empty: .*manifest unknown" "$T/err" || fail "$(cat "$T/err")"

log "registry-mirrors for docker.io"
start_reg hub "proxy:
  remoteurl: http://$U"
cat >"$T/cfg-hub.json" <<EOF2
{"registry-mirrors": ["http://$REG_hub"]}
EOF2
s=$(store)
pull_ok "$s" lab/feat:v1 --config "$T/cfg-hub.json"
grep -q "from $REG_hub (mirror)" "$T/err" || fail "$(cat "$T/err")"
"$IMGFS" --store "$s" images >"$T/out" 2>&1
grep -q "lab/feat:v1" "$T/out" || fail "docker.io image not listed: $(cat "$T/out")"

log "a bad mirror URL is a config error"
echo '{"registry-mirrors": ["ftp://x"]}' >"$T/cfg-bad.json"
pull_fails "must be an http:// or https:// URL" "$(store)" "$U/lab/feat:v1" --config "$T/cfg-bad.json"

log "ok"
