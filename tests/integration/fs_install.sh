#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# What `cmake --install` puts in place (imgfs, mount.fuse.imgfs in /sbin, the
# three man pages, which render cleanly), and mounting the way users do it:
# `mount -t fuse.imgfs imgfs DIR -o store=…` and an fstab line (`mount -T
# FSTAB DIR`), both through mount(8) and the installed helper, then `umount`.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/fs_lib.bash"

need_root
need_imgfs
need_fuse
need cmake man mount umount

# ---- cmake --install into a staging root ------------------------------------
[ -n "${IMGFS_BUILD:-}" ] || skip "IMGFS_BUILD not set (run under ctest)"
DESTDIR=$T/root cmake --install "$IMGFS_BUILD" --prefix /usr/local >"$T/install.log" 2>&1 ||
	fail "cmake --install failed: $(tail -n 5 "$T/install.log")"
for f in usr/local/bin/imgfs sbin/mount.fuse.imgfs; do
	[ -x "$T/root/$f" ] || fail "cmake --install did not install an executable /$f"
done
for m in man1/imgfs.1 man5/imgfs.5 man8/mount.fuse.imgfs.8; do
	p=$T/root/usr/local/share/man/$m
	[ -f "$p" ] || fail "cmake --install did not install $m"
	# renders, with no warnings from groff (-ww) on stderr
	MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings=w -l "$p" >"$T/man.out" 2>"$T/man.err" ||
		fail "man -l $m failed: $(cat "$T/man.err")"
	[ ! -s "$T/man.err" ] || fail "man -l $m warns: $(head -n 5 "$T/man.err")"
	[ "$(wc -l <"$T/man.out")" -gt 20 ] || fail "man -l $m rendered almost nothing"
done
"$T/root/usr/local/bin/imgfs" --version | grep -q '^imgfs ' || fail "installed imgfs --version"

# ---- mount(8) with the helper ---------------------------------------------------
# mount(8) looks for /sbin/mount.fuse.imgfs. Use the installed one if the host
# has it, else put this build's there for the test and take it away after.
HELPER=/sbin/mount.fuse.imgfs
if [ ! -e "$HELPER" ]; then
	cp "$T/root/sbin/mount.fuse.imgfs" "$HELPER"
	on_exit rm -f "$HELPER"
fi
export IMGFS # the helper runs this build's imgfs

start_registry
build_fixtures features
push_layout "$T/fixtures/features" v1 lab/features
S=$T/store M=$T/mnt
mkdir -p "$M"

mount -t fuse.imgfs imgfs "$M" -o "store=$S" 2>"$T/err" || fail "mount -t fuse.imgfs: $(cat "$T/err")"
on_exit umount -l "$M"
findmnt -rn -o FSTYPE "$M" | grep -qx fuse.imgfs || fail "mount -t fuse.imgfs: no fuse.imgfs mount at $M"
ls "$M/pull/$REGISTRY/lab/features:v1/rootfs/bin/busybox" >/dev/null ||
	fail "pull by lookup through a mount(8) mount"
cmp -s "$M/$REGISTRY/lab/features/v1/rootfs/bin/busybox" /bin/busybox || fail "busybox differs"
umount "$M" || fail "umount $M"
for ((i = 0; i < 100; i++)); do pgrep -f "imgfs .*mount .*$M\$" >/dev/null || break; sleep 0.05; done
pgrep -f "imgfs .*mount .*$M\$" && fail "the daemon is still running after umount"

# an fstab line (mount -T reads another fstab); ro is honoured
cat >"$T/fstab" <<EOF
imgfs $M fuse.imgfs store=$S,ro,nofail 0 0
EOF
mount -T "$T/fstab" "$M" 2>"$T/err" || fail "mount from an fstab line: $(cat "$T/err")"
findmnt -rn -o FSTYPE "$M" | grep -qx fuse.imgfs || fail "fstab: no fuse.imgfs mount at $M"
imgfs_ok "$S" inspect --json "$REGISTRY/lab/features:v1"
want=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["digest"])' "$T/out")
[ "$(cat "$M/$REGISTRY/lab/features/v1/digest")" = "$want" ] || fail "fstab mount: digest is not $want"
if touch "$M/$REGISTRY/lab/features/v1/rootfs/new" 2>"$T/err"; then
	fail "fstab mount with ro: a write into rootfs succeeded"
fi
grep -q "Read-only file system" "$T/err" || fail "ro mount: write failed with $(cat "$T/err"), not EROFS"
umount "$M" || fail "umount $M (fstab)"
no_store_mounts "$S"
log "ok"
