#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The command line and mounting, where a mistake used to pass silently
# (issue 9): a relative --store with a daemonized mount serves that store (not
# an empty one made at /<name>); a mount point that would hide the store is
# refused; a mount over a dead imgfs mount (daemon killed) is refused with the
# umount -l hint; commands that only read never create a store, and work on a
# read-only one (as does mount -o ro); and the nits: the usage hint's space,
# exit statuses 2 for usage errors (mount.fuse.imgfs, --platform), the
# --config message, an out-of-range port refused as an invalid reference, and
# gc's freed total counting abandoned unpacks.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/fs_lib.bash"

need_root
need_imgfs
need_fuse
need /usr/bin/python3 timeout
L=$T/layout S=$T/store
"$PY" "$IMGFS_SRC/tests/lib/mksecret.py" "$L" >/dev/null
imgfs_ok "$S" import --name lab/secret "$L"

mounted() { findmnt -rn -o FSTYPE "$1" 2>/dev/null | grep -q '^fuse.imgfs$'; }
wait_mounted() {
	local i
	for ((i = 0; i < 100; i++)); do
		mounted "$1" && [ -e "$1/.imgfs/status" ] && return 0
		sleep 0.05
	done
	return 1
}

# --- a relative --store, daemonized (the daemon's cwd is /)
mkdir -p "$T/rel" "$T/m-rel"
cp -a "$S" "$T/rel/st"
[ ! -e /st ] || fail "/st exists before the test"
(cd "$T/rel" && "$IMGFS" --store st mount "$T/m-rel") >"$T/out" 2>"$T/err" ||
	fail "daemonized mount with a relative store: $(cat "$T/err")"
on_exit umount -l "$T/m-rel"
wait_mounted "$T/m-rel" || fail "daemonized mount did not come up"
[ -d "$T/m-rel/lab/secret/v1" ] || fail "the daemon does not serve the relative store: $(ls "$T/m-rel")"
[ ! -e /st ] || { rm -rf /st; fail "the daemon created a store at /st"; }
umount "$T/m-rel"

# --- a mount point that hides the store
mkdir -p "$T/D"
for st in "$T/D/store" "$T/D" "$T/D/a/b/new-store"; do
	imgfs_run "$st" mount -f "$T/D"
	[ "$RC" = 1 ] || fail "mount of $T/D with store $st exited $RC"
	grep -q "at or below the mount point" "$T/err" || fail "store $st under the mount point: $(cat "$T/err")"
	mounted "$T/D" && fail "$T/D mounted over its own store"
done
[ ! -e "$T/D/a" ] || fail "the refused mount created its store"

# --- a dead mount (daemon killed): refused with the hint, then fine after umount -l
M=$T/mnt
imgfs_mount "$S" "$M"
kill -9 "$MOUNT_PID"
wait "$MOUNT_PID" 2>/dev/null || true
# (a stat may still be answered from the kernel's cache; a statfs always asks)
stat -f "$M" >/dev/null 2>"$T/err" && fail "statfs of a dead mount succeeded (test broken)"
grep -Eq "not connected|connection abort" "$T/err" || fail "statfs of the dead mount: $(cat "$T/err")"
imgfs_run "$S" mount -f "$M"
[ "$RC" = 1 ] || fail "mount over a dead mount exited $RC"
grep -q "a dead imgfs mount is at $M: run umount -l $M" "$T/err" || fail "mount over a dead mount: $(cat "$T/err")"
[ "$(findmnt -rn "$M" | wc -l)" = 1 ] || fail "mounts stacked at $M: $(findmnt -rn "$M")"
umount -l "$M"
imgfs_mount "$S" "$M"
[ -d "$M/lab/secret/v1" ] || fail "mount after umount -l does not serve the store"
imgfs_unmount "$M" "$MOUNT_PID"

# --- commands that only read: never create a store
for st in "$T/missing" "$T/rel"; do
	for cmd in images "inspect lab/secret:v1" gc "rm lab/secret:v1"; do
		# shellcheck disable=SC2086
		imgfs_run "$st" $cmd
		[ "$RC" = 1 ] || fail "imgfs $cmd on $st exited $RC"
		grep -Eq "does not exist|is not an imgfs store" "$T/err" || fail "imgfs $cmd on $st: $(cat "$T/err")"
	done
done
[ ! -e "$T/missing" ] || fail "a command on a missing store created it"
# a pull or mount into a non-empty directory that is not a store (--store /tmp
# by mistake) neither chmods it 0700 nor fills it with a store
mkdir -m 0755 "$T/notastore"
echo keep >"$T/notastore/file"
imgfs_run "$T/notastore" import --name lab/secret "$L"
[ "$RC" = 1 ] || fail "import into a non-empty non-store dir exited $RC"
grep -q "neither empty nor an imgfs store" "$T/err" || fail "import into a non-store dir: $(cat "$T/err")"
[ "$(stat -c %a "$T/notastore")" = 755 ] || fail "a non-store dir was chmodded $(stat -c %a "$T/notastore")"
[ "$(ls "$T/notastore")" = file ] || fail "a non-store dir got: $(ls "$T/notastore")"
[ ! -e "$T/rel/meta" ] && [ ! -e "$T/rel/blobs" ] || fail "a command on a non-store dir made a store in it"

# --- a read-only store: images, inspect, mount -o ro
RO=$T/ro
mkdir "$RO"
mount --bind "$S" "$RO"
on_exit umount -l "$RO"
mount -o remount,bind,ro "$RO"
touch "$RO/x" 2>/dev/null && fail "the read-only bind mount is writable (test broken)"
imgfs_ok "$RO" images
grep -q "lab/secret:v1" "$T/out" || fail "images on a read-only store: $(cat "$T/out")"
imgfs_ok "$RO" inspect lab/secret:v1
imgfs_run "$RO" import --name lab/other "$L"
[ "$RC" = 1 ] || fail "import into a read-only store exited $RC"
MRO=$T/mnt-ro
imgfs_mount "$RO" "$MRO" ro
IMG=$MRO/lab/secret/v1
grep -q SHADOW-SECRET "$IMG/rootfs/etc/shadow" || fail "mount -o ro of a read-only store: rootfs unreadable"
cat "$IMG/layers/0/etc/passwd" >/dev/null || fail "mount -o ro of a read-only store: layers/0 unreadable"
cat "$IMG/manifest.json" >/dev/null || fail "mount -o ro of a read-only store: manifest.json unreadable"
imgfs_unmount "$MRO" "$MOUNT_PID"
umount "$RO"

# --- nits
imgfs_run "$S" pull
[ "$RC" = 2 ] || fail "pull without a reference exited $RC"
grep -qF "Try 'imgfs pull --help'." "$T/err" || fail "usage hint: $(cat "$T/err")"
HELPER=$IMGFS_SRC/mount-helper/mount.fuse.imgfs
set +e
sh "$HELPER" only-one-arg >/dev/null 2>&1
rc=$?
set -e
[ "$rc" = 2 ] || fail "mount.fuse.imgfs usage error exited $rc, want 2 (mount.fuse.imgfs(8))"
imgfs_run "$S" pull --platform bogus lab/secret:v1
[ "$RC" = 2 ] || fail "--platform bogus exited $RC, want 2"
grep -q 'invalid platform "bogus"' "$T/err" || fail "--platform bogus: $(cat "$T/err")"
set +e
"$IMGFS" --store "$S" --config /nonexistent images >"$T/out" 2>"$T/err"
rc=$?
set -e
[ "$rc" = 1 ] || fail "--config /nonexistent exited $rc"
grep -q "line -1" "$T/err" && fail "--config /nonexistent: $(cat "$T/err")"
grep -q "/nonexistent.*No such file" "$T/err" || fail "--config /nonexistent: $(cat "$T/err")"
for ref in 127.0.0.1:99999/lab/x:v1 127.0.0.1:0/lab/x:v1 127.0.0.1:065536/lab/x:v1; do
	set +e
	timeout 20 "$IMGFS" --store "$S" pull "$ref" >"$T/out" 2>"$T/err"
	rc=$?
	set -e
	[ "$rc" = 1 ] || fail "pull $ref exited $rc"
	grep -q "invalid reference format" "$T/err" || fail "pull $ref: $(cat "$T/err")"
done
# gc's freed total includes an abandoned unpack
mkdir -p "$S/snapshots/tmp-abandoned/fs"
head -c 3000000 /dev/urandom >"$S/snapshots/tmp-abandoned/fs/big"
imgfs_ok "$S" gc
grep -q "tmp-abandoned" "$T/out" || fail "gc did not remove the abandoned unpack: $(cat "$T/out")"
grep -Eq "^freed [23]\.[0-9] MB" "$T/out" || fail "gc's freed total leaves out the abandoned unpack: $(cat "$T/out")"
log "ok"
