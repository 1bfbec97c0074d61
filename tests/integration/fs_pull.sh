#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Pulls through pull/: 16 concurrent first lookups of one reference are one
# pull (each blob fetched once), failures answer a fitting errno with the
# reason in .imgfs/status, an interrupted lookup leaves the pull running, a
# second mount of one store works (but for a rootfs/ the first one serves),
# and unmounting (idle, or signalled during a pull) leaves no mounts and no
# daemon behind.
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
push_layout "$T/fixtures/many" v1 lab/many2:v1
# Pulls go through a fault proxy that can hold blob GETs back, so a pull is
# certainly still running while a case needs it to be.
. "$IMGFS_SRC/tests/integration/registry_lib.bash"
start_proxy slow "$REGISTRY"
SLOW=$PROXY_slow
# hold_first_blob SECONDS: delay the next blob GET through the proxy.
hold_first_blob() {
	rules slow '[{"match": "/blobs/sha256:", "method": "GET", "times": 1, "action": "delay", "seconds": '"$1"'}]'
}

# --- daemon mode: `imgfs mount` returns once mounted; umount ends the daemon
S=$T/store M=$T/mnt
mkdir -p "$M"
"$IMGFS" --store "$S" mount ${FS_TEST_OPTS:+-o "$FS_TEST_OPTS"} "$M" 2>"$T/err" || fail "imgfs mount (daemon) failed: $(cat "$T/err")"
on_exit umount -l "$M"
findmnt -rn -o FSTYPE "$M" | grep -qx fuse.imgfs || fail "no fuse.imgfs mount at $M after imgfs mount returned"
DPID=$(pgrep -f -x "$IMGFS --store $S mount ${FS_TEST_OPTS:+-o $FS_TEST_OPTS }$M" | head -n 1)
[ -n "$DPID" ] || fail "no daemon process found"
on_exit kill "$DPID"

# --- 16 concurrent first lookups: one pull
REF=$SLOW/lab/features:v1
hold_first_blob 2
pids=()
for i in $(seq 16); do
	ls "$M/pull/$REF/rootfs" >"$T/ls.$i" 2>&1 &
	pids+=($!)
done
# all 16 are waiting on one pull (held 2 s at its first blob)
for ((i = 0; i < 40; i++)); do grep -q "^pull " "$M/.imgfs/status" && break; sleep 0.025; done
[ "$(grep -c "^pull " "$M/.imgfs/status")" = 1 ] ||
	fail "not exactly one pull running: $(cat "$M/.imgfs/status")"
for i in "${!pids[@]}"; do
	wait "${pids[i]}" || fail "concurrent lookup $i failed: $(cat "$T/ls.$((i + 1))")"
done
grep -qx bin "$T/ls.16" || fail "lookup 16 listed: $(cat "$T/ls.16")"
mapfile -t LAYERS < <("$PY" -c 'import json,sys
m = json.load(open(sys.argv[1]))
print(m["config"]["digest"])
for l in m["layers"]: print(l["digest"])' "$M/$SLOW/lab/features/v1/manifest.json")
[ "${#LAYERS[@]}" -ge 3 ] || fail "manifest has ${#LAYERS[@]} blobs"
for d in "${LAYERS[@]}"; do
	n=$(blob_gets "$d")
	[ "$n" = 1 ] || fail "blob $d fetched $n times by 16 concurrent lookups"
done
# a second lookup of the same ref, by another spelling, fetches nothing
before=$(blob_gets)
ls "$M/pull/$SLOW/lab/features:v1/digest" >/dev/null || fail "second lookup failed"
[ "$(blob_gets)" = "$before" ] || fail "a lookup of a stored image fetched blobs"
# readdir never pulls
ls -R "$M/pull" >/dev/null
[ "$(ls -A "$M/pull")" = "" ] || fail "ls pull/ lists: $(ls -A "$M/pull")"

# --- failures: errno and reason
ls "$M/pull/$SLOW/lab/features:nope" 2>"$T/err" && fail "lookup of an unknown tag succeeded"
grep -q "No such file or directory" "$T/err" || fail "unknown tag: $(cat "$T/err"), want ENOENT"
grep -q "lab/features:nope" "$M/.imgfs/status" || fail "status lacks the failed ref: $(cat "$M/.imgfs/status")"
grep "lab/features:nope" "$M/.imgfs/status" | grep -qi "not found\|unknown\|manifest" ||
	fail "status gives no reason: $(grep nope "$M/.imgfs/status")"
ls "$M/pull/127.0.0.1:1/lab/x:v1" 2>"$T/err" && fail "lookup at a closed port succeeded"
grep -q "No such file" "$T/err" && fail "a network failure answered ENOENT: $(cat "$T/err")"
grep -q "127.0.0.1:1/lab/x:v1" "$M/.imgfs/status" || fail "status lacks the network failure"
# a partial reference is a directory to walk, without any network
[ -d "$M/pull/$SLOW/lab" ] || fail "pull/<host>/lab is not a directory"

# --- an interrupted lookup returns; the pull goes on in the background
hold_first_blob 4
t0=$(date +%s%N)
timeout -s INT 0.3 ls "$M/pull/$SLOW/lab/many:v1" >/dev/null 2>&1 || true
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$ms" -lt 2500 ] || fail "an interrupted lookup took $ms ms to return (the pull is held 4 s)"
grep -q "^pull .*lab/many:v1" "$M/.imgfs/status" || fail "no pull in progress after the interrupt: $(cat "$M/.imgfs/status")"
for ((i = 0; i < 300; i++)); do [ -d "$M/$SLOW/lab/many/v1" ] && break; sleep 0.1; done
[ -d "$M/$SLOW/lab/many/v1/rootfs" ] || fail "the interrupted pull did not finish: $(cat "$M/.imgfs/status")"

# --- a second mount of the same store
M2=$T/mnt2
imgfs_mount "$S" "$M2"
[ "$(cat "$M2/$SLOW/lab/features/v1/digest")" = "$(cat "$M/$SLOW/lab/features/v1/digest")" ] ||
	fail "the second mount does not show the image"
ls "$M2/snapshots/"* >/dev/null || fail "snapshots through the second mount"
# ... but not a rootfs/ the first one serves read-write: two overlays on one
# upper dir are undefined behaviour, so the second gets EBUSY and says why
ls "$M/$SLOW/lab/features/v1/rootfs/bin" >/dev/null || fail "rootfs through the first mount"
ls "$M2/$SLOW/lab/features/v1/rootfs/bin" 2>"$T/err" >/dev/null &&
	fail "a second mount served the rootfs/ the first one writes to"
grep -q "Device or resource busy" "$T/err" || fail "rootfs/ in use elsewhere: $(cat "$T/err"), want EBUSY"
grep -q "features:v1: its upper dir is in use by another imgfs mount" "$MOUNT_LOG" ||
	fail "no reason logged for the EBUSY: $(tail -n 3 "$MOUNT_LOG")"
imgfs_unmount "$M2" "$MOUNT_PID" || fail "second daemon did not exit"

# --- the mount helper, run as mount(8) runs it for `mount -t fuse.imgfs` and fstab
M4=$T/mnt4
mkdir -p "$M4"
IMGFS=$IMGFS sh "$IMGFS_SRC/mount-helper/mount.fuse.imgfs" imgfs "$M4" -o "rw,store=$S,nosuid,nodev${FS_TEST_OPTS:+,$FS_TEST_OPTS}" 2>"$T/err" ||
	fail "mount.fuse.imgfs failed: $(cat "$T/err")"
on_exit umount -l "$M4"
P4=$(pgrep -f -x "$IMGFS mount -o rw,store=$S,nosuid,nodev${FS_TEST_OPTS:+,$FS_TEST_OPTS} $M4" | head -n 1)
[ -n "$P4" ] || fail "no daemon started by the mount helper"
[ -d "$M4/$SLOW/lab/features/v1/layers/0/bin" ] || fail "the helper's mount does not show the image"
umount "$M4" || fail "umount $M4 failed"
for ((i = 0; i < 600; i++)); do kill -0 "$P4" 2>/dev/null || break; sleep 0.05; done
kill -0 "$P4" 2>/dev/null && fail "helper-started daemon still running after umount"

# --- idle unmount ends the daemon, leaves nothing mounted
ls "$M/$SLOW/lab/features/v1/rootfs/bin" "$M/snapshots/"* >/dev/null # overlay mounts in use
umount "$M" || fail "umount $M failed"
for ((i = 0; i < 600; i++)); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.05; done
kill -0 "$DPID" 2>/dev/null && fail "daemon $DPID still running after umount"
grep -F "$M" /proc/self/mountinfo && fail "mounts remain at $M"
no_store_mounts "$S"

# --- SIGTERM during a pull: the daemon exits, the lookup fails, nothing remains
S3=$T/store3 M3=$T/mnt3
imgfs_mount "$S3" "$M3"
hold_first_blob 30 # far longer than the 10 s the daemon gets to exit
ls "$M3/pull/$SLOW/lab/many2:v1" >/dev/null 2>&1 &
LSPID=$!
for ((i = 0; i < 200; i++)); do grep -q "^pull " "$M3/.imgfs/status" 2>/dev/null && break; sleep 0.02; done
grep -q "^pull " "$M3/.imgfs/status" || fail "no pull in progress to interrupt: $(cat "$M3/.imgfs/status")"
kill -TERM "$MOUNT_PID"
for ((i = 0; i < 200; i++)); do kill -0 "$MOUNT_PID" 2>/dev/null || break; sleep 0.05; done
kill -0 "$MOUNT_PID" 2>/dev/null && fail "daemon still running 10 s after SIGTERM during a pull"
for ((i = 0; i < 200; i++)); do kill -0 "$LSPID" 2>/dev/null || break; sleep 0.05; done
kill -0 "$LSPID" 2>/dev/null && fail "the lookup still hangs after the daemon exited"
grep -F "$M3" /proc/self/mountinfo && fail "mounts remain at $M3"
no_store_mounts "$S3"
pgrep -f -- "--store $S3" && fail "processes for $S3 remain"
log "ok"
