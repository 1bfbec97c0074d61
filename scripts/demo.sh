#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The main job, end to end on loopback: start Debian's docker-registry on
# 127.0.0.1, build a sample image from local files (busybox-static plus layers
# with whiteouts), push it with skopeo, mount imgfs on an empty store, pull the
# image by looking it up under pull/, browse it, write into its rootfs, and
# list and inspect it with the CLI.
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

MNT=$T/mnt
mkdir -p "$MNT"
step imgfs --store "$STORE" mount "$MNT"
"$IMGFS" --store "$STORE" mount "$MNT"
on_exit umount "$MNT"

step "ls $MNT/pull/$REF/rootfs     # the lookup pulls the image"
ls "$MNT/pull/$REF/rootfs"
IMG=$MNT/$REGISTRY/demo/busybox/1.0
step ls "$MNT" "$MNT/$REGISTRY/demo/busybox"
ls "$MNT" "$MNT/$REGISTRY/demo/busybox"
step ls -l "$IMG"
ls -l "$IMG"
step "sha256sum $IMG/manifest.json; cat $IMG/digest"
sha256sum "$IMG/manifest.json"
cat "$IMG/digest"
step ls -la "$IMG/rootfs/features"
ls -la "$IMG/rootfs/features"
step chroot "$IMG/rootfs" /bin/busybox echo "hello from the image"
chroot "$IMG/rootfs" /bin/busybox echo "hello from the image"
step "echo written > $IMG/rootfs/tmp/note; ls $STORE/uppers/*/upper/tmp"
echo written >"$IMG/rootfs/tmp/note"
ls "$STORE"/uppers/*/upper/tmp

step imgfs --store "$STORE" images
"$IMGFS" --store "$STORE" images
step imgfs --store "$STORE" inspect "$REF"
"$IMGFS" --store "$STORE" inspect "$REF"
step "imgfs --store $STORE pull $REF     # already there: nothing fetched"
"$IMGFS" --store "$STORE" pull "$REF"
printf '\ndemo done\n'
