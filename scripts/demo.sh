#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The main job, end to end on loopback: start Debian's docker-registry on
# 127.0.0.1, build a sample image from local files (busybox-static plus layers
# with whiteouts), push it with skopeo, pull it with imgfs into a fresh store,
# list and inspect it, and browse its root filesystem.
#
#   scripts/demo.sh [path/to/imgfs]
#
# Everything it starts is stopped, and everything it made is removed, on exit.
set -euo pipefail
export IMGFS_SRC=$(cd "$(dirname "$0")/.." && pwd)
export IMGFS=$(realpath "${1:-$IMGFS_SRC/build/imgfs}")
. "$IMGFS_SRC/tests/lib/common.sh"
need_imgfs
need_root

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

start_registry
build_fixtures features >/dev/null
push_layout "$T/fixtures/features" v1 demo/busybox:1.0
REF=$REGISTRY/demo/busybox:1.0
STORE=$T/store

step imgfs --store "$STORE" pull "$REF"
"$IMGFS" --store "$STORE" pull "$REF"

step imgfs --store "$STORE" images
"$IMGFS" --store "$STORE" images

step imgfs --store "$STORE" inspect "$REF"
"$IMGFS" --store "$STORE" inspect "$REF"

if "$IMGFS" mount --help >/dev/null 2>&1; then
	MNT=$T/mnt
	mkdir -p "$MNT"
	step imgfs --store "$STORE" mount "$MNT"
	"$IMGFS" --store "$STORE" mount "$MNT"
	on_exit umount "$MNT"
	IMG=$MNT/$REGISTRY/demo/busybox/1.0
	step ls "$MNT"
	ls "$MNT"
	step ls -l "$IMG"
	ls -l "$IMG"
	step "sha256sum $IMG/manifest.json; cat $IMG/digest"
	sha256sum "$IMG/manifest.json"
	cat "$IMG/digest"
	step ls -la "$IMG/rootfs"
	ls -la "$IMG/rootfs"
	step chroot "$IMG/rootfs" /bin/busybox echo "hello from the image"
	chroot "$IMG/rootfs" /bin/busybox echo "hello from the image"
else
	# Before the filesystem: mount the snapshot chain with kernel overlayfs.
	mapfile -t snaps < <(inspect_snapshots "$REF" "$STORE")
	mount_chain "$T/rootfs" "${snaps[@]}"
	step "ls -la rootfs (kernel overlay of the ${#snaps[@]} snapshots)"
	ls -la "$T/rootfs"
	step chroot rootfs /bin/busybox echo "hello from the image"
	chroot "$T/rootfs" /bin/busybox echo "hello from the image"
fi
printf '\ndemo done\n'
