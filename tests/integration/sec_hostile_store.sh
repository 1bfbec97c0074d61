#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# A compromised store (issue 9): an image record planted with the store API
# whose digests are paths ("sha256:../../../../etc/passwd") is refused by the
# mount, never followed: its manifest.json, config.json, layers/ and
# snapshots/ names serve nothing, while the genuine image still reads.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/fs_lib.bash"

need_root
need_imgfs
need_fuse
PLANT=${IMGFS_TOOLS:?}/imgfs-plant-record
[ -x "$PLANT" ] || skip "no $PLANT"
build_fixtures features
S=$T/store M=$T/mnt
imgfs_ok "$S" import --name lab/features "$T/fixtures/features"
imgfs_ok "$S" images --json
SRC=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["name"])' "$T/out")
EVIL="sha256:$(printf '../%.0s' $(seq 1 40))etc/passwd"
"$PLANT" "$S" "$SRC" "lab/evil:v1" "$EVIL" || fail "planting the record failed"

imgfs_mount "$S" "$M"
G=$M/lab/features/v1
[ "$SRC" = docker.io/lab/features:v1 ] || fail "imported as $SRC, want docker.io/lab/features:v1"
[ -r "$G/manifest.json" ] || fail "the genuine image's manifest.json is not readable"
E=$M/lab/evil/v1
[ -d "$E" ] || fail "the planted image is not listed at $E: $(ls -R "$M/lab" | head)"
for f in manifest.json config.json; do
	if out=$(setpriv --reuid=65534 --regid=65534 --clear-groups cat "$E/$f" 2>&1) ||
		out2=$(cat "$E/$f" 2>&1); then
		grep -q root: <<<"$out$out2" && fail "$E/$f served the host's /etc/passwd"
		fail "$E/$f read something: ${out:0:80}${out2:0:80}"
	fi
done
# no layer or snapshot name may come from the planted digests
for d in layers snapshots; do
	if ls -a "$M/$d" | grep -q '\.\.\.\|/\|passwd'; then
		fail "$d/ lists a name from a planted digest: $(ls -a "$M/$d" | tr '\n' ' ')"
	fi
done
ls "$E/layers" >"$T/ls" 2>&1
! grep -q passwd "$T/ls" || fail "the planted image's layers/ lists a path name"
[ ! -r "$E/rootfs/etc/passwd" ] || ! grep -q "^root:x:0:0:root:/root:/bin/bash" "$E/rootfs/etc/passwd" ||
	fail "the planted image's rootfs shows the host's /etc/passwd"
ls "$E/rootfs" >/dev/null 2>&1 && fail "the planted image's rootfs mounted"
kill -0 "$MOUNT_PID" || fail "the daemon died on the planted record"
# the genuine image is still served in full
[ "sha256:$(sha256sum <"$G/manifest.json" | cut -d' ' -f1)" = "$(cat "$G/digest")" ] ||
	fail "the genuine manifest.json does not hash to its digest"
ls "$G/rootfs/bin" >/dev/null || fail "the genuine image's rootfs does not list"
echo "planted record refused"
