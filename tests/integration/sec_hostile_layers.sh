#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Hostile layers through the store (issue 9): a decompression bomb fails with
# an error naming the layer and the limit and leaves nothing in snapshots/;
# max-layer-ratio and max-layer-size-mib in the config move the limits; zero
# runs are stored sparse; a layer nesting past 1,024 levels fails cleanly,
# and its discarded unpack is removed even with 64 fds (ulimit -n).
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"

need_root
need_imgfs
need /usr/bin/python3
L=$T/layouts
"$PY" - "$L" "$IMGFS_SRC/tests/fixtures" <<'PYEOF'
import io, os, sys, tarfile
sys.path.insert(0, sys.argv[2])
import mkimage as mk

def zeros_tar(size):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("zeros")
        ti.size = size
        tf.addfile(ti, io.BytesIO(bytes(size)))
        tf.addfile(tarfile.TarInfo("after"), io.BytesIO(b""))
    return buf.getvalue()

def layout(name, raw):
    lo = mk.Layout(os.path.join(sys.argv[1], name))
    lo.tag(lo.image([(raw, "gzip")]), "v1")
    lo.close()

layout("bomb", zeros_tar(150 << 20))
layout("deep", mk.make_tar([mk.F("a/" * 1100 + "f", "x")]))
layout("ok", mk.make_tar([mk.D("etc"), mk.F("etc/hello", "hello")]))
PYEOF

no_tmp() { # STORE: no unpack left behind, nothing committed from the bad layer
	local left
	left=$(find "$1/snapshots" -mindepth 1 -maxdepth 1 -name 'tmp-*' | head -n 3)
	[ -z "$left" ] || fail "left in snapshots/: $left"
}

log() { echo "[sec_hostile_layers] $*"; }

log "a gzip bomb (150 MiB of zeros in ~150 KB) stops at the ratio limit"
S=$T/s1
imgfs_run "$S" import --name lab/bomb "$L/bomb"
[ "$RC" = 1 ] || fail "bomb import: exit $RC"
grep -q "layer .*sha256:[0-9a-f]\{64\}" "$T/err" || fail "the error does not name the layer: $(cat "$T/err")"
grep -q "exceeds the limit of 67108864 uncompressed bytes (100 times its [0-9]* compressed bytes: max-layer-ratio)" "$T/err" ||
	fail "the error does not name the limit: $(cat "$T/err")"
no_tmp "$S"
[ -z "$(find "$S/snapshots" -mindepth 1 -maxdepth 1 ! -name 'tmp-*' -type d | head -n1)" ] ||
	fail "a snapshot was committed: $(ls "$S/snapshots")"
imgfs_ok "$S" import --name lab/ok "$L/ok"

log "max-layer-ratio 0 in the config: the same layer unpacks, its zeros sparse"
echo '{"max-layer-ratio": 0}' >"$T/noratio.json"
S=$T/s2
imgfs_ok "$S" --config "$T/noratio.json" import --name lab/bomb "$L/bomb"
z=$(find "$S/snapshots" -name zeros -type f | head -n1)
[ -n "$z" ] || fail "no zeros file in the snapshot"
[ "$(stat -c %s "$z")" = $((150 << 20)) ] || fail "zeros: size $(stat -c %s "$z")"
alloc=$(($(stat -c %b "$z") * $(stat -c %B "$z")))
[ "$alloc" -lt $((1 << 20)) ] || fail "zeros: $alloc bytes allocated, not sparse"
[ "$(sha256sum <"$z" | cut -d' ' -f1)" = "$(head -c $((150 << 20)) /dev/zero | sha256sum | cut -d' ' -f1)" ] ||
	fail "zeros: content differs"

log "max-layer-size-mib 1: a layer over 1 MiB fails naming the setting"
echo '{"max-layer-ratio": 0, "max-layer-size-mib": 1}' >"$T/small.json"
S=$T/s3
imgfs_run "$S" --config "$T/small.json" import --name lab/bomb "$L/bomb"
[ "$RC" = 1 ] && grep -q "limit of 1048576 uncompressed bytes (max-layer-size)" "$T/err" ||
	fail "max-layer-size-mib: exit $RC, $(cat "$T/err")"
no_tmp "$S"
echo '{"max-layer-size-mib": 0}' >"$T/bad.json"
imgfs_run "$S" --config "$T/bad.json" images
[ "$RC" != 0 ] && grep -q "max-layer-size-mib must be an integer" "$T/err" ||
	fail "max-layer-size-mib 0 accepted: $(cat "$T/err")"

log "1,100 levels: a clean error, and the discarded unpack removed with 64 fds"
S=$T/s4
(
	ulimit -n 64
	"$IMGFS" --store "$S" import --name lab/deep "$L/deep" >"$T/out" 2>"$T/err"
) && fail "the deep layer was imported"
grep -q "layer exceeds the limit of 1024 directory levels" "$T/err" || fail "deep: $(cat "$T/err")"
no_tmp "$S"
log ok
