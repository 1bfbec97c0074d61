#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# imgfs pull through tests/lib/faultproxy.py in front of docker-registry, with
# assertions on what the proxy saw: a blob cut halfway resumes with Range;
# 503 then success; 429 with Retry-After (honoured, and capped); a stalled
# transfer is abandoned after the stall timeout and resumed; the last try
# gives a clear error; a cross-host redirect never carries Authorization to
# the second host; an oversized manifest is refused before it is read
# whole; corrupted bytes and a lying Docker-Content-Digest are errors; an
# interrupted download resumes in a new process from the saved hash state
# (or by hashing the partial data again when the state is missing), and a
# registry that ignores Range restarts cleanly.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/registry_lib.bash"
need_imgfs
need docker-registry skopeo curl openssl htpasswd

build_fixtures features
start_reg up ""
R=$REG_up
skopeo --insecure-policy copy -q --dest-tls-verify=false --preserve-digests \
	"oci:$T/fixtures/features:v1" "docker://$R/lab/feat:v1" >"$T/skopeo.log" 2>&1 ||
	fail "push failed: $(cat "$T/skopeo.log")"
read -r LAYER LSIZE < <("$PY" -c '
import json, sys
m = json.load(open(sys.argv[1] + "/blobs/sha256/" + json.load(open(sys.argv[1] + "/index.json"))["manifests"][0]["digest"][7:]))
l = max(m["layers"], key=lambda d: d["size"])
print(l["digest"], l["size"])' "$T/fixtures/features")
HEX=${LAYER#sha256:}
start_proxy p "$R"
P=$PROXY_p
cat >"$T/cfg.json" <<EOF2
{"max-download-attempts": 3, "stall-timeout": 2, "stall-speed": 1024, "max-retry-after": 2}
EOF2
CFG=(--config "$T/cfg.json")
store() { mktemp -d -u "$T/store.XXXXXX"; }
# seen FILTER: count the proxy's log lines for which the python expression FILTER holds (e = entry)
seen() {
	"$PY" -c '
import json, sys
n = 0
for line in open(sys.argv[1]):
    e = json.loads(line)
    if eval(sys.argv[2]):
        n += 1
print(n)' "$T/p.log" "$1"
}
reset_log() { : >"$T/p.log"; }
LAYERQ="'$HEX' in e.get('path', '') and e.get('method') == 'GET'"

log "a blob cut off halfway resumes with Range"
reset_log
rules p '[{"match": "'"$HEX"'", "method": "GET", "action": "cut", "times": 1}]'
pull_ok "$(store)" "$P/lab/feat:v1" "${CFG[@]}"
[ "$(seen "$LAYERQ and e['action'] == 'cut'")" = 1 ] || fail "no cut: $(cat "$T/p.log")"
[ "$(seen "$LAYERQ and (e['range'] or '').startswith('bytes=$((LSIZE / 2))-')")" = 1 ] ||
	fail "no Range request from the cut point: $(grep "$HEX" "$T/p.log")"

log "503 then success"
reset_log
rules p '[{"match": "/manifests/v1", "action": "status", "code": 503, "times": 2}]'
pull_ok "$(store)" "$P/lab/feat:v1" "${CFG[@]}"
[ "$(seen "'/manifests/v1' in e['path'] and e['method'] == 'GET'")" = 3 ] || fail "$(cat "$T/p.log")"
grep -q "HTTP status 503.*attempt 1 of 3" "$T/err" || fail "no retry message: $(cat "$T/err")"

log "429 with Retry-After is honoured, and capped"
reset_log
rules p '[{"match": "'"$HEX"'", "action": "status", "code": 429, "retry_after": 1, "times": 1}]'
t0=$(date +%s.%N)
pull_ok "$(store)" "$P/lab/feat:v1" "${CFG[@]}"
awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { exit !(b - a >= 1.0) }' || fail "Retry-After: 1 not waited"
grep -q "retrying in 1.0 s" "$T/err" || fail "$(cat "$T/err")"
rules p '[{"match": "'"$HEX"'", "action": "status", "code": 429, "retry_after": 3600, "times": 1}]'
t0=$(date +%s)
pull_ok "$(store)" "$P/lab/feat:v1" "${CFG[@]}"
[ $(($(date +%s) - t0)) -lt 15 ] || fail "Retry-After 3600 not capped"
grep -q "retrying in 2.0 s" "$T/err" || fail "cap of 2 s not applied: $(cat "$T/err")"

log "a stalled transfer is abandoned after the stall timeout and resumed"
reset_log
rules p '[{"match": "'"$HEX"'", "method": "GET", "action": "stall", "seconds": 30, "times": 1}]'
t0=$(date +%s)
pull_ok "$(store)" "$P/lab/feat:v1" "${CFG[@]}"
[ $(($(date +%s) - t0)) -lt 20 ] || fail "stall not detected in time"
grep -q "stalled: less than 1024 bytes/s for 2 s" "$T/err" || fail "$(cat "$T/err")"
[ "$(seen "$LAYERQ and (e['range'] or '').startswith('bytes=')")" = 1 ] || fail "no resume after the stall"

log "a clear error after the last try"
reset_log
rules p '[{"match": "/manifests/", "action": "status", "code": 503}]'
pull_fails "unexpected HTTP status 503" "$(store)" "$P/lab/feat:v1" "${CFG[@]}"
[ "$(seen "'/manifests/' in e['path']")" = 3 ] || fail "not 3 tries: $(cat "$T/p.log")"

log "an oversized manifest is refused before it is read whole"
reset_log
rules p '[{"match": "/manifests/", "action": "big", "size": 67108864}]'
pull_fails "limit is 4194304 bytes" "$(store)" "$P/lab/feat:v1" "${CFG[@]}"
rules p '[{"match": "/manifests/", "action": "big", "size": 67108864, "chunked": true}]'
pull_fails "exceeds the limit of 4194304 bytes" "$(store)" "$P/lab/feat:v1" "${CFG[@]}"
"$PY" -c '
import json, sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if "big_sent" in e and e["big_sent"] >= 67108864:
        sys.exit("the whole oversized manifest was read")' "$T/p.log" || fail "manifest read whole"

log "corrupted bytes and a lying Docker-Content-Digest"
rules p '[{"match": "'"$HEX"'", "method": "GET", "action": "corrupt"}]'
s=$(store)
pull_fails "digest mismatch" "$s" "$P/lab/feat:v1" "${CFG[@]}"
[ -e "$s/blobs/sha256/$HEX" ] && fail "a corrupt blob was committed"
rules p '[{"match": "/manifests/v1", "action": "header", "name": "Docker-Content-Digest", "value": "sha256:'"$(printf x | sha256sum | cut -d' ' -f1)"'"}]'
pull_fails "Docker-Content-Digest says" "$(store)" "$P/lab/feat:v1" "${CFG[@]}"

log "an interrupted download resumes in a new process, hashing the partial data again"
cat >"$T/cfg1.json" <<EOF2
{"max-download-attempts": 1, "stall-timeout": 1}
EOF2
s=$(store)
rules p '[{"match": "'"$HEX"'", "method": "GET", "action": "stall", "seconds": 30, "times": 1}]'
pull_fails "stalled" "$s" "$P/lab/feat:v1" --config "$T/cfg1.json"
ing=$s/ingest/sha256-$HEX
[ -s "$ing/data" ] || fail "no partial data in $ing"
[ ! -e "$ing/hashstate" ] || fail "a hash state was saved in $ing"
have=$(stat -c %s "$ing/data")
[ "$have" -gt 0 ] && [ "$have" -lt "$LSIZE" ] || fail "partial size $have"
reset_log
rules p '[]'
pull_ok "$s" "$P/lab/feat:v1" -v
grep -q "resuming at $have bytes, all of them hashed again" "$T/err" ||
	fail "did not resume: $(grep -i ingest "$T/err")"
[ "$(seen "$LAYERQ and e['range'] == 'bytes=$have-'")" = 1 ] || fail "no Range bytes=$have-: $(cat "$T/p.log")"
[ -e "$s/blobs/sha256/$HEX" ] && [ ! -e "$ing" ] || fail "blob not committed / ingest left"

log "killed mid-download: resume by hashing the partial data again"
s=$(store)
rules p '[{"match": "'"$HEX"'", "method": "GET", "action": "stall", "seconds": 60, "times": 1}]'
"$IMGFS" --store "$s" --config "$T/cfg.json" pull "$P/lab/feat:v1" >"$T/bg.out" 2>&1 &
bg=$!
for ((i = 0; i < 200; i++)); do
	[ -s "$s/ingest/sha256-$HEX/data" ] && break
	sleep 0.05
done
sleep 0.3
kill -9 "$bg"
wait "$bg" 2>/dev/null || true
have=$(stat -c %s "$s/ingest/sha256-$HEX/data")
[ "$have" -gt 0 ] || fail "nothing downloaded before the kill"
reset_log
rules p '[]'
pull_ok "$s" "$P/lab/feat:v1" -v
grep -q "resuming at $have bytes, all of them hashed again" "$T/err" || fail "$(grep -i ingest "$T/err")"
[ "$(seen "$LAYERQ and e['range'] == 'bytes=$have-'")" = 1 ] || fail "no Range bytes=$have-"

log "partial data altered between runs is never committed"
s=$(store)
rules p '[{"match": "'"$HEX"'", "method": "GET", "action": "stall", "seconds": 30, "times": 1}]'
pull_fails "stalled" "$s" "$P/lab/feat:v1" --config "$T/cfg1.json"
ing=$s/ingest/sha256-$HEX
have=$(stat -c %s "$ing/data")
[ "$have" -gt 0 ] || fail "nothing downloaded before the stall"
# same length, other bytes: only hashing them again can tell
printf 'altered' | dd of="$ing/data" conv=notrunc status=none
[ "$(stat -c %s "$ing/data")" = "$have" ] || fail "the alteration changed the size"
rules p '[]'
imgfs_run "$s" --config "$T/cfg.json" pull "$P/lab/feat:v1"
# the unpack (reading the data as it arrives) or the final digest check
# refuses it; the blob is never committed under a digest it does not have
if [ -e "$s/blobs/sha256/$HEX" ]; then
	[ "$(sha256sum <"$s/blobs/sha256/$HEX" | cut -d' ' -f1)" = "$HEX" ] ||
		fail "altered partial data was committed under $HEX"
else
	[ "$RC" != 0 ] || fail "altered data: exit 0 without the blob"
	grep -Eq "digest mismatch|invalid layer|decompress" "$T/err" ||
		fail "altered data: $(grep -v 'already present' "$T/err" | tail -n 3)"
fi
# and the next pull starts from zero and succeeds
pull_ok "$s" "$P/lab/feat:v1" "${CFG[@]}"
[ "$(sha256sum <"$s/blobs/sha256/$HEX" | cut -d' ' -f1)" = "$HEX" ] || fail "re-pulled blob differs"

log "a registry that ignores Range restarts cleanly"
s=$(store)
rules p '[{"match": "'"$HEX"'", "method": "GET", "action": "stall", "seconds": 30, "times": 1}]'
pull_fails "stalled" "$s" "$P/lab/feat:v1" --config "$T/cfg1.json"
rules p '[{"match": "'"$HEX"'", "method": "GET", "action": "ignore_range"}]'
pull_ok "$s" "$P/lab/feat:v1" "${CFG[@]}"
[ "$(sha256sum <"$s/blobs/sha256/$HEX" | cut -d' ' -f1)" = "$HEX" ] || fail "restarted blob differs"

log "a cross-host redirect does not carry Authorization"
# the registry needs a password; the proxy redirects the layer to a second
# host (127.0.0.2) serving the same content without auth, like object storage
printf 'pw-redirect\n' | htpasswd -iBc "$T/htpasswd" bob >/dev/null 2>&1
start_reg sec "auth:
  htpasswd:
    realm: imgfs-test
    path: $T/htpasswd"
skopeo --insecure-policy copy -q --dest-tls-verify=false --preserve-digests --dest-creds bob:pw-redirect \
	"oci:$T/fixtures/features:v1" "docker://$REG_sec/lab/feat:v1" >"$T/skopeo.log" 2>&1 ||
	fail "push failed: $(cat "$T/skopeo.log")"
start_proxy q "$REG_sec"
start_proxy s3 "$R" 127.0.0.2
rules q '[{"match": "'"$HEX"'", "method": "GET", "action": "redirect", "location": "http://'"$PROXY_s3"'"}]'
export REGISTRY_AUTH_FILE=$T/auth.json
printf 'pw-redirect\n' | "$IMGFS" login -u bob "$PROXY_q" >/dev/null 2>&1 || fail "login failed"
pull_ok "$(store)" "$PROXY_q/lab/feat:v1" "${CFG[@]}"
"$PY" -c '
import json, sys
q = [json.loads(l) for l in open(sys.argv[1])]
s3 = [json.loads(l) for l in open(sys.argv[2])]
hexd = sys.argv[3]
assert any(hexd in e["path"] and e["authorization"] and e["action"] == "redirect" for e in q), "registry request had no Authorization"
got = [e for e in s3 if hexd in e.get("path", "")]
assert got, "second host saw no request"
assert not any(e["authorization"] for e in got), "Authorization leaked to the second host"
' "$T/q.log" "$T/s3.log" "$HEX" || fail "redirect check failed: $(cat "$T/q.log" "$T/s3.log")"

log "ok"
