#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# gc against a live mount: `imgfs rm` (which runs gc) while a mount serves the
# image's rootfs/ keeps the snapshots under that overlay (and says so), so the
# rootfs stays readable through what the user still has open until unmount;
# after unmount `imgfs gc` frees them. The same for snapshots/<chainID>.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/fs_lib.bash"

need_root
need_imgfs
need_fuse
need docker-registry skopeo zstd curl
start_registry
build_fixtures features many
push_layout "$T/fixtures/features" v1 lab/features
push_layout "$T/fixtures/many" v1 lab/many

S=$T/store M=$T/mnt M2=$T/mnt2
REF=$REGISTRY/lab/features:v1 REF2=$REGISTRY/lab/many:v1
imgfs_ok "$S" pull "$REF"
imgfs_ok "$S" pull "$REF2"
mapfile -t SNAPS < <(inspect_snapshots "$REF" "$S")
mapfile -t SNAPS2 < <(inspect_snapshots "$REF2" "$S")
[ "${#SNAPS[@]}" -ge 1 ] && [ "${#SNAPS2[@]}" -ge 1 ] || fail "no snapshots listed by inspect"
imgfs_ok "$S" inspect --json "$REF2"
CHAIN2=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][-1]["chainID"].split(":")[1])' "$T/out")

# the expected trees, read through another mount that then goes away
imgfs_mount "$S" "$M2"
want=$(tree_hash "$M2/$REGISTRY/lab/features/v1/rootfs")
want2=$(tree_hash "$M2/snapshots/$CHAIN2")
imgfs_unmount "$M2" "$MOUNT_PID"

imgfs_mount "$S" "$M"
R=$M/$REGISTRY/lab/features/v1/rootfs
ls "$R" >/dev/null || fail "ls rootfs failed"
ls "$M/snapshots/$CHAIN2" >/dev/null || fail "ls snapshots/$CHAIN2 failed"
# users with a shell inside each view
(cd "$R" && exec sleep 600) &
HOLD=$!
on_exit kill "$HOLD"
(cd "$M/snapshots/$CHAIN2" && exec sleep 600) &
HOLD2=$!
on_exit kill "$HOLD2"
sleep 0.2

# --- rm while mounted: the snapshots in use stay, and gc says why
imgfs_run "$S" rm "$REF" "$REF2"
[ "$RC" = 0 ] || fail "imgfs rm while mounted: rc $RC: $(cat "$T/err")"
grep -q "removed image .*lab/features" "$T/out" || fail "rm did not remove the image: $(cat "$T/out")"
grep -q "kept snapshot sha256:.* in use" "$T/err" || fail "rm does not say it kept snapshots in use: $(cat "$T/err")"
grep -q "removed snapshot" "$T/out" && fail "rm removed snapshots a mount serves: $(cat "$T/out")"
for s in "${SNAPS[@]}" "${SNAPS2[@]}"; do
	[ -d "$s" ] || fail "snapshot dir $s removed under a live mount"
done
# an explicit gc while mounted keeps them too
imgfs_ok "$S" gc
grep -q "removed snapshot" "$T/out" && fail "gc removed snapshots a mount serves: $(cat "$T/out")"
sleep 1.2 # the image's name times out in the kernel
[ ! -e "$M/$REGISTRY/lab/features/v1" ] || fail "removed image still listed"

# the user's shells still read the whole tree, never read before
got=$(tree_hash "/proc/$HOLD/cwd")
[ "$got" = "$want" ] || fail "rootfs changed under a live mount after rm"
got2=$(tree_hash "/proc/$HOLD2/cwd")
[ "$got2" = "$want2" ] || fail "snapshots/$CHAIN2 changed under a live mount after rm"

# --- after unmount, gc frees them
kill "$HOLD" "$HOLD2"
wait "$HOLD" "$HOLD2" 2>/dev/null || true
imgfs_unmount "$M" "$MOUNT_PID"
no_store_mounts "$S"
imgfs_ok "$S" gc
grep -q "removed snapshot" "$T/out" || fail "gc after unmount freed no snapshot: $(cat "$T/out")"
grep -q "in use" "$T/err" && fail "gc after unmount still sees snapshots in use: $(cat "$T/err")"
for s in "${SNAPS[@]}" "${SNAPS2[@]}"; do
	[ ! -e "$s" ] || fail "snapshot dir $s left after gc"
done
left=$(find "$S/snapshots" -mindepth 1 -maxdepth 1 | wc -l)
[ "$left" = 0 ] || fail "$left entries left in $S/snapshots: $(ls "$S/snapshots")"
log "ok"
