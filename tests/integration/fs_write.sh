#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Writes into rootfs/: they land in the image's upper dir with overlay
# semantics (copy-up, whiteouts), never touch the snapshots, survive a
# remount, and `imgfs reset` discards them. Everything else is read-only, and
# so is rootfs/ when mounted -o ro.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/fs_lib.bash"

need_root
need_imgfs
need_fuse
need docker-registry skopeo zstd curl setfattr getfattr setpriv
start_registry
build_fixtures features
push_layout "$T/fixtures/features" v1 lab/features

S=$T/store M=$T/mnt
REF=$REGISTRY/lab/features:v1
imgfs_mount "$S" "$M" allow_other
ls "$M/pull/$REF/rootfs" >/dev/null || fail "pull through pull/ failed: $(cat "$M/.imgfs/status")"
IMG=$M/$REGISTRY/lab/features/v1 R=$M/$REGISTRY/lab/features/v1/rootfs
imgfs_ok "$S" inspect --json "$REF"
U=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["upper"])' "$T/out")/upper
case $U in "$S/uppers/"*) ;; *) fail "inspect --json: upper $U is not under $S/uppers" ;; esac
mapfile -t SNAPS < <("$PY" -c 'import json,sys
for l in json.load(open(sys.argv[1]))["layers"]: print(l["snapshot"])' "$T/out")
before=$(for s in "${SNAPS[@]}"; do tree_hash "$s"; done)

# a lower regular file and a lower symlink to work on
LOWFILE=$(cd "$R" && find etc -type f | head -n 1)
LOWLINK=$(cd "$R" && find bin -type l | head -n 1)
[ -n "$LOWFILE" ] && [ -n "$LOWLINK" ] || fail "fixture lacks a file in etc/ or a symlink in bin/"

# --- create, write, truncate, mkdir, rename, chmod, chown, symlink, link, xattr, mknod
echo hello >"$R/newfile" || fail "create in rootfs failed"
[ "$(cat "$U/newfile")" = hello ] || fail "newfile did not land in the upper dir $U"
printf 'abcdef' >"$R/trunc" && truncate -s 3 "$R/trunc"
echo "a longer first line" >"$R/otrunc" && echo x >"$R/otrunc"
[ "$(cat "$R/otrunc")" = x ] || fail "> of an existing file did not truncate it: '$(cat "$R/otrunc")'"
[ "$(cat "$R/trunc")" = abc ] || fail "truncate: got '$(cat "$R/trunc")'"
mkdir -p "$R/d1/d2" && mv "$R/d1" "$R/d3" || fail "mkdir/rename failed"
[ -d "$R/d3/d2" ] && [ ! -e "$R/d1" ] || fail "rename of a directory not seen"
rmdir "$R/d3/d2" || fail "rmdir failed"
chmod 0600 "$R/newfile" && chown 123:456 "$R/newfile" || fail "chmod/chown failed"
[ "$(stat -c '%a %u %g' "$R/newfile")" = "600 123 456" ] || fail "chmod/chown: $(stat -c '%a %u %g' "$R/newfile")"
ln -s newfile "$R/sym" && [ "$(readlink "$R/sym")" = newfile ] || fail "symlink failed"
ln "$R/trunc" "$R/hard" && [ "$(stat -c %h "$R/trunc")" = 2 ] || fail "hardlink failed"
[ "$(stat -c %i "$R/trunc")" = "$(stat -c %i "$R/hard")" ] || fail "hardlinks with different inode numbers"
setfattr -n user.test -v yes "$R/newfile" || fail "setfattr failed"
[ "$(getfattr --absolute-names --only-values -n user.test "$R/newfile")" = yes ] || fail "getfattr after setfattr"
# xattrs of a symlink itself (trusted.*: user.* ones are not allowed on symlinks)
setfattr -h -n trusted.test -v onlink "$R/sym" || fail "setfattr -h on a symlink failed"
[ "$(getfattr -h --absolute-names --only-values -n trusted.test "$R/sym")" = onlink ] ||
	fail "getfattr -h of a symlink's xattr through the mount"
[ "$(getfattr -h --absolute-names --only-values -n trusted.test "$U/sym")" = onlink ] ||
	fail "a symlink's xattr did not land on the symlink in the upper dir"
setfattr -h -n user.test -v no "$R/sym" 2>/dev/null && fail "user.* xattr set on a symlink"
setfattr -h -x trusted.test "$R/sym" || fail "setfattr -h -x on a symlink failed"
getfattr -h --absolute-names -n trusted.test "$R/sym" 2>/dev/null && fail "removed symlink xattr still there"
mknod "$R/fifo" p && [ -p "$R/fifo" ] || fail "mknod fifo failed"
mknod "$R/null2" c 1 3 && [ -c "$R/null2" ] || fail "mknod char device failed"
# a new file belongs to its creator
chmod o+x "$T" # mktemp -d made it 0700
mkdir "$R/shared" && chmod 1777 "$R/shared"
setpriv --reuid 1000 --regid 1000 --clear-groups sh -c "echo u >'$R/shared/userfile'" ||
	fail "a user could not create a file in a 1777 directory"
[ "$(stat -c %u:%g "$R/shared/userfile")" = 1000:1000 ] ||
	fail "user's file owned by $(stat -c %u:%g "$R/shared/userfile")"

# --- copy-up and whiteouts
echo appended >>"$R/$LOWFILE" || fail "append to a lower file failed"
tail -n 1 "$R/$LOWFILE" | grep -qx appended || fail "appended line not read back"
[ -f "$U/$LOWFILE" ] || fail "no copy-up of $LOWFILE in the upper dir"
rm "$R/$LOWLINK" || fail "rm of a lower symlink failed"
[ ! -e "$R/$LOWLINK" ] && [ ! -L "$R/$LOWLINK" ] || fail "removed lower entry still visible"
ls "$R/bin" | grep -qx "$(basename "$LOWLINK")" && fail "ls still lists the removed entry"
[ "$(stat -c '%F %t:%T' "$U/$LOWLINK")" = "character special file 0:0" ] || fail "no whiteout for $LOWLINK in upper"
after=$(for s in "${SNAPS[@]}"; do tree_hash "$s"; done)
[ "$before" = "$after" ] || fail "a lower snapshot changed"
[ -e "$IMG/layers/0/$LOWLINK" ] || [ -L "$IMG/layers/0/$LOWLINK" ] || fail "layers/0 lost $LOWLINK"

# --- read-ahead (reading a file reads ahead the files listed after it) opens
# only the files that were listed, never what their names mean now: a listed
# file replaced by a fifo with a writer waiting for a reader stays unopened
mkdir "$R/ra" && for i in 1 2 3 4 5; do echo "file $i" >"$R/ra/f$i"; done
sync && echo 3 >/proc/sys/vm/drop_caches # so the reads below go to the daemon
ls -l "$R/ra" >/dev/null
rm "$R/ra/f3" && mkfifo "$R/ra/f3"
timeout 5 sh -c 'exec 3>"$1"; echo opened >"$2"' sh "$R/ra/f3" "$T/fifo-opened" &
WRITER=$!
[ "$(cat "$R/ra/f1" "$R/ra/f2" "$R/ra/f4" "$R/ra/f5")" = "$(printf 'file %s\n' 1 2 4 5)" ] ||
	fail "files read back wrong next to the fifo"
sleep 1
[ -e "$T/fifo-opened" ] && fail "the daemon opened a fifo put under a listed name"
kill "$WRITER" 2>/dev/null
wait "$WRITER" 2>/dev/null || true
rm -r "$R/ra"

# --- EROFS everywhere else
for p in "$IMG/x" "$IMG/layers/0/x" "$M/blobs/x" "$M/snapshots/x" "$M/x" "$M/pull/x" "$M/.imgfs/x"; do
	if touch "$p" 2>"$T/err"; then fail "touch $p succeeded"; fi
done
touch "$IMG/layers/0/$LOWFILE" 2>"$T/err" && fail "touch of a layer file succeeded"
grep -q "Read-only file system" "$T/err" || fail "touch of a layer file: $(cat "$T/err"), want EROFS"
rm "$IMG/manifest.json" 2>"$T/err" && fail "rm manifest.json succeeded"
# read-only files: an open that truncates fails at open(2) with EROFS; other
# writable opens succeed (the kernel opens without asking the daemon: see
# imgfs(5)) and their first write fails with EROFS
BLOB=$(ls -d "$M"/blobs/sha256/* | head -n 1)
LAYFILE=$IMG/layers/0/$(cd "$IMG/layers/0" && find . -type f | head -n 1)
SNAPDIR=$M/snapshots/$(ls "$M/snapshots" | head -n 1)
SNAPFILE=$SNAPDIR/$(cd "$SNAPDIR" && find . -type f | head -n 1)
[ -f "$LAYFILE" ] && [ -f "$SNAPFILE" ] || fail "no regular file in layers/0 or snapshots/"
for p in "$BLOB" "$IMG/manifest.json" "$LAYFILE" "$SNAPFILE"; do
	"$PY" - "$p" <<'EOF' 2>"$T/err" || fail "writable open of $p: $(cat "$T/err")"
import errno, os, sys
p = sys.argv[1]
before = open(p, "rb").read()
for flags in (os.O_WRONLY | os.O_TRUNC, os.O_RDWR | os.O_TRUNC, os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
    try:
        fd = os.open(p, flags)
    except OSError as e:
        if e.errno != errno.EROFS:
            sys.exit("flags %#o: %s, want EROFS" % (flags, e))
        continue
    os.close(fd)
    sys.exit("open with flags %#o succeeded" % flags)
for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND):
    try:
        fd = os.open(p, flags)
    except OSError as e:
        if e.errno != errno.EROFS:
            sys.exit("flags %#o: %s, want EROFS" % (flags, e))
        continue
    try:
        os.write(fd, b"x")
        sys.exit("write after open with flags %#o succeeded" % flags)
    except OSError as e:
        if e.errno != errno.EROFS:
            sys.exit("write after open with flags %#o: %s, want EROFS" % (flags, e))
    finally:
        os.close(fd)
if open(p, "rb").read() != before:
    sys.exit("content changed")
EOF
done
: 2>"$T/err" >"$IMG/manifest.json" && fail ": > manifest.json succeeded"
grep -q "Read-only file system" "$T/err" || fail ": > manifest.json: $(cat "$T/err"), want EROFS"
truncate -s 0 "$BLOB" 2>"$T/err" && fail "truncate of a blob succeeded"
grep -q "Read-only file system" "$T/err" || fail "truncate of a blob: $(cat "$T/err"), want EROFS"
[ "sha256:$(sha256sum <"$BLOB" | cut -d' ' -f1)" = "sha256:$(basename "$BLOB")" ] || fail "a blob changed"

# --- writes survive a remount; reset refuses while in use, then discards
imgfs_run "$S" reset "$REF"
[ "$RC" != 0 ] || fail "reset succeeded while the rootfs is mounted"
grep -q "in use" "$T/err" || fail "reset while mounted: $(cat "$T/err")"
imgfs_unmount "$M" "$MOUNT_PID"
no_store_mounts "$S"
imgfs_mount "$S" "$M"
[ "$(cat "$R/newfile")" = hello ] || fail "newfile lost over a remount"
[ ! -e "$R/$LOWLINK" ] || fail "whiteout lost over a remount"
imgfs_unmount "$M" "$MOUNT_PID"
imgfs_ok "$S" reset "$REF"
imgfs_mount "$S" "$M" ro
[ ! -e "$R/newfile" ] || fail "newfile survived reset"
[ -L "$R/$LOWLINK" ] || fail "$LOWLINK not back after reset"
[ "$(tail -n 1 "$R/$LOWFILE")" != appended ] || fail "copy-up survived reset"

# --- -o ro: rootfs is read-only too
echo x 2>"$T/err" >"$R/rofile" && fail "write into rootfs succeeded with -o ro"
grep -q "Read-only file system" "$T/err" || fail "write with -o ro: $(cat "$T/err")"
imgfs_unmount "$M" "$MOUNT_PID"
no_store_mounts "$S"
after=$(for s in "${SNAPS[@]}"; do tree_hash "$s"; done)
[ "$before" = "$after" ] || fail "a lower snapshot changed"
log "ok"
