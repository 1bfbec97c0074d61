#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The tree a user sees: pull on lookup from an empty store, then every part of
# an image directory checked against what a user would check it with: the
# manifest hashes to `digest`, blobs hash to their names, layers/<n> and
# layers/<diffID> are the snapshot dirs, snapshots/<chainID> is the kernel
# overlay of the chain, rootfs/ equals an independent unpack (umoci).
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/fs_lib.bash"

need_root
need_imgfs
need_fuse
need docker-registry skopeo umoci zstd curl
start_registry
build_fixtures features many multiarch zstd
F=$T/fixtures
push_layout "$F/features" v1 lab/features
push_layout "$F/many" v1 lab/many
push_layout "$F/multiarch" amd64 lab/multi:amd64
push_layout "$F/zstd" v1 lab/zstd

S=$T/store M=$T/mnt
imgfs_mount "$S" "$M"

# --- an empty store lists only the fixed directories
top=$(ls -A "$M" | tr '\n' ' ')
[ "$top" = ".imgfs blobs layers pull snapshots " ] || fail "top level of an empty store: '$top'"

# --- pull on lookup
ls "$M/pull/$REGISTRY/lab/features:v1/rootfs" >"$T/ls" || fail "ls pull/$REGISTRY/lab/features:v1/rootfs failed"
grep -qx busybox <(ls "$M/pull/$REGISTRY/lab/features:v1/rootfs/bin") || fail "no bin/busybox in the pulled rootfs"
IMG=$M/$REGISTRY/lab/features/v1
[ -d "$IMG" ] || fail "$IMG missing after the pull"
ls "$M/$REGISTRY/lab/features" | grep -qx v1 || fail "ls of the repository dir lacks v1"
imgfs_ok "$S" images
grep -q "lab/features" "$T/out" || fail "imgfs images does not list the image pulled through pull/"

# --- image files
d=$(cat "$IMG/digest")
m=$(sha256sum <"$IMG/manifest.json" | cut -d' ' -f1)
[ "$d" = "sha256:$m" ] || fail "manifest.json hashes to sha256:$m, digest says $d"
[ "$(cat "$M/pull/$REGISTRY/lab/features:v1/digest")" = "$d" ] || fail "pull/ and the image dir disagree"
cfg=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["digest"])' "$IMG/manifest.json")
[ "sha256:$(sha256sum <"$IMG/config.json" | cut -d' ' -f1)" = "$cfg" ] || fail "config.json is not the config blob"
[ ! -e "$IMG/index.json" ] || fail "index.json shown for an image pulled without an index"
touch "$IMG/digest" 2>/dev/null && fail "touch of digest succeeded"
echo x 2>"$T/err" >"$IMG/new" && fail "creating a file in an image dir succeeded"
grep -q "Read-only file system" "$T/err" || fail "write in an image dir: $(cat "$T/err"), want EROFS"

# --- blobs: every file hashes to its name, read-only
n=0
for b in "$M"/blobs/sha256/*; do
	h=$(sha256sum <"$b" | cut -d' ' -f1)
	[ "$h" = "$(basename "$b")" ] || fail "blobs/sha256/$(basename "$b") hashes to $h"
	n=$((n + 1))
done
[ "$n" -ge 6 ] || fail "only $n blobs listed"
echo x 2>"$T/err" >>"$b" && fail "appending to a blob succeeded"
grep -q "Read-only file system" "$T/err" || fail "append to a blob: $(cat "$T/err"), want EROFS"

# --- layers/<n>, layers/<diffID>, snapshots/<chainID>
imgfs_ok "$S" inspect --json "$REGISTRY/lab/features:v1"
cp "$T/out" "$T/inspect.json"
mapfile -t SNAPS < <("$PY" -c 'import json,sys
for l in json.load(open(sys.argv[1]))["layers"]: print(l["snapshot"])' "$T/inspect.json")
mapfile -t DIFFS < <("$PY" -c 'import json,sys
for l in json.load(open(sys.argv[1]))["layers"]: print(l["diffID"].split(":")[1])' "$T/inspect.json")
mapfile -t CHAINS < <("$PY" -c 'import json,sys
for l in json.load(open(sys.argv[1]))["layers"]: print(l["chainID"].split(":")[1])' "$T/inspect.json")
nl=${#SNAPS[@]}
[ "$nl" -ge 2 ] || fail "features has $nl layers"
[ "$(ls "$IMG/layers" | sort -n | tr '\n' ' ')" = "$(seq 0 $((nl - 1)) | tr '\n' ' ')" ] ||
	fail "layers/ lists $(ls "$IMG/layers" | tr '\n' ' ')"
for ((i = 0; i < nl; i++)); do
	"$PY" "$TREECMP" "$IMG/layers/$i" "${SNAPS[i]}" >"$T/cmp" 2>&1 ||
		fail "layers/$i differs from snapshot ${SNAPS[i]}: $(head -n 20 "$T/cmp")"
	"$PY" "$TREECMP" "$M/layers/${DIFFS[i]}" "${SNAPS[i]}" >"$T/cmp" 2>&1 ||
		fail "layers/${DIFFS[i]} differs from its snapshot: $(head -n 20 "$T/cmp")"
	ls "$M/layers" | grep -qx "${DIFFS[i]}" || fail "ls layers/ lacks ${DIFFS[i]}"
	ls "$M/snapshots" | grep -qx "${CHAINS[i]}" || fail "ls snapshots/ lacks ${CHAINS[i]}"
done
# a whiteout is shown as stored (a 0/0 character device) somewhere in the upper layers
find "$IMG/layers/" -type c | head -n 1 | grep -q . || fail "no whiteout (char device) in any layers/<n>"
# snapshots/<chainID> of the middle of the chain equals the kernel overlay of that chain
mid=$((nl - 2))
mount_chain "$T/chain" "${SNAPS[@]:0:mid+1}"
"$PY" "$TREECMP" "$M/snapshots/${CHAINS[mid]}" "$T/chain" >"$T/cmp" 2>&1 ||
	fail "snapshots/${CHAINS[mid]} differs from the kernel overlay of its chain: $(head -n 20 "$T/cmp")"
# ... and lists its entries in the same order (find and tar go in readdir order)
(cd "$M/snapshots/${CHAINS[mid]}" && find .) >"$T/order.imgfs"
(cd "$T/chain" && find .) >"$T/order.kernel"
cmp -s "$T/order.imgfs" "$T/order.kernel" ||
	fail "snapshots/${CHAINS[mid]} lists in another order than the kernel overlay: $(diff "$T/order.imgfs" "$T/order.kernel" | head -n 6)"
umount "$T/chain"
mkdir "$M/snapshots/${CHAINS[mid]}/x" 2>/dev/null && fail "mkdir in snapshots/ succeeded"

# --- rootfs equals an independent unpack, for each fixture
check_rootfs() { # REF-PATH LAYOUT TAG
	local root=$1 layout=$2 tag=$3 name
	name=$(basename "$layout")-$tag
	umoci_unpack "$layout" "$tag" "$T/umoci-$name"
	"$PY" "$TREECMP" "$root" "$T/umoci-$name/rootfs" >"$T/cmp" 2>&1 ||
		fail "$root differs from umoci's unpack: $(head -n 30 "$T/cmp")"
}
check_rootfs "$IMG/rootfs" "$F/features" v1
ls "$M/pull/$REGISTRY/lab/many:v1" >/dev/null || fail "pull of lab/many failed: $(cat "$M/.imgfs/status")"
check_rootfs "$M/$REGISTRY/lab/many/v1/rootfs" "$F/many" v1
ls "$M/pull/$REGISTRY/lab/multi:amd64/rootfs" >/dev/null || fail "pull of lab/multi failed"
check_rootfs "$M/$REGISTRY/lab/multi/amd64/rootfs" "$F/multiarch" amd64
ls "$M/pull/$REGISTRY/lab/zstd:v1/rootfs" >/dev/null || fail "pull of lab/zstd failed"
check_rootfs "$M/$REGISTRY/lab/zstd/v1/rootfs" "$F/zstd" ref-gzip
# the snapshot of a whole chain is the image's rootfs (no writes yet)
"$PY" "$TREECMP" "$M/snapshots/${CHAINS[nl - 1]}" "$IMG/rootfs" >"$T/cmp" 2>&1 ||
	fail "snapshots/<top chainID> differs from rootfs/: $(head -n 20 "$T/cmp")"

# --- readers on both CPUs at once (one ring per CPU over io_uring) read the same bytes
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
	sync
	echo 3 >/proc/sys/vm/drop_caches
	(cd "$IMG/rootfs" && taskset -c 0 tar cf - . | sha256sum) >"$T/cpu0" &
	(cd "$IMG/rootfs" && taskset -c 1 tar cf - . | sha256sum) >"$T/cpu1"
	wait $!
	(cd "$IMG/rootfs" && tar cf - . | sha256sum) >"$T/cpu-any"
	cmp -s "$T/cpu0" "$T/cpu1" && cmp -s "$T/cpu0" "$T/cpu-any" ||
		fail "concurrent reads on two CPUs differ: $(cat "$T/cpu0" "$T/cpu1" "$T/cpu-any")"
fi

# --- pull by digest: shown as @sha256:<hex>
ls "$M/pull/$REGISTRY/lab/features@$d" >/dev/null || fail "pull by digest failed: $(tail -n 3 "$M/.imgfs/status")"
[ -d "$M/$REGISTRY/lab/features/v1" ] || fail "image dir gone after a digest lookup"

# --- st_ino is stable across cache drops
i1=$(stat -c %i "$IMG/rootfs/bin/busybox" "$IMG/manifest.json" "$IMG/layers")
sync; echo 3 >/proc/sys/vm/drop_caches
i2=$(stat -c %i "$IMG/rootfs/bin/busybox" "$IMG/manifest.json" "$IMG/layers")
[ "$i1" = "$i2" ] || fail "inode numbers changed after dropping caches: $i1 / $i2"

# --- images pulled or removed from outside show up without a remount
push_layout "$F/features" v1 lab/outside:v9
imgfs_ok "$S" pull -q "$REGISTRY/lab/outside:v9"
for ((i = 0; i < 50; i++)); do [ -d "$M/$REGISTRY/lab/outside/v9" ] && break; sleep 0.1; done
[ -d "$M/$REGISTRY/lab/outside/v9/rootfs/bin" ] || fail "an image pulled by imgfs pull does not appear"
imgfs_ok "$S" rm "$REGISTRY/lab/outside:v9"
for ((i = 0; i < 50; i++)); do [ -e "$M/$REGISTRY/lab/outside/v9" ] || break; sleep 0.1; done
[ ! -e "$M/$REGISTRY/lab/outside/v9" ] || fail "an image removed by imgfs rm is still shown"
ls "$M/$REGISTRY/lab" | grep -qx outside && fail "ls still lists the removed repository"

imgfs_unmount "$M" "$MOUNT_PID"
no_store_mounts "$S"
log "ok"
