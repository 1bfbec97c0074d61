#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# What another local user (uid 65534) reaches of a store and of an
# allow_other mount of it (issue 9, item 4 and the umask nit; item 7):
#  - the store root is 0700 whatever the puller's umask, and an existing
#    store more open than that is tightened (said once): nobody cannot list
#    it or read a blob or an upper in it directly;
#  - on the mount, a layer blob (an uncompressed tar with etc/shadow 0640 in
#    it) is 0400 and nobody gets EACCES, unless -o blobs=all; manifests and
#    configs (in blobs/ and as manifest.json/config.json) stay readable;
#  - rootfs/, layers/<n>/, layers/<diffID>/ and snapshots/<chainID>/ keep the
#    image's own modes: nobody reads etc/passwd and pub/readme, not
#    etc/shadow (0640) nor root-only/key under a 0700 dir;
#  - snapshot roots are 0755 (or the layer's own root entry mode) with the
#    puller's umask 077, and rootfs/ roots the image's with the daemon's;
#  - an unprivileged pull/import/mount is refused naming the missing
#    capabilities, as is a root one without CAP_MKNOD, and an exact unpack of
#    a device node or a foreign owner fails instead of losing them.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/fs_lib.bash"

need_root
need_imgfs
need_fuse
need setpriv /usr/bin/python3
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
nobody() { "${NOBODY[@]}" "$@"; }
# the tests' temp dir is 0700: let nobody walk to the mount points in it
chmod 0711 "$T"

L=$T/layout S=$T/store M=$T/mnt
"$PY" "$IMGFS_SRC/tests/lib/mksecret.py" "$L" >/dev/null

# --- the store is 0700 whatever the umask
(
	umask 000
	"$IMGFS" --store "$S" import --name lab/secret "$L" >"$T/out" 2>"$T/err"
) || fail "import: $(cat "$T/err")"
[ "$(stat -c %a "$S")" = 700 ] || fail "store created with umask 000 is $(stat -c %a "$S"), want 700"
nobody ls "$S" >/dev/null 2>&1 && fail "nobody lists the store"
REF=lab/secret:v1
imgfs_ok "$S" inspect --json "$REF"
cp "$T/out" "$T/v1.json"
jq() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$@"; }
LAYER=$(jq "$T/v1.json" 'd["layers"][0]["digest"].split(":")[1]')
DIFF=$(jq "$T/v1.json" 'd["layers"][0]["diffID"].split(":")[1]')
CHAIN=$(jq "$T/v1.json" 'd["layers"][0]["chainID"].split(":")[1]')
CONFIG=$(jq "$T/v1.json" 'd["config"]["digest"].split(":")[1]')
MANIFEST=$(jq "$T/v1.json" 'd["target"]["digest"].split(":")[1]')
grep -q SHADOW-SECRET "$S/blobs/sha256/$LAYER" || fail "the layer blob does not hold the secret in clear (test broken)"
nobody cat "$S/blobs/sha256/$LAYER" >/dev/null 2>&1 && fail "nobody reads a layer blob in the store"

# --- an existing store more open than 0700 is tightened, and said so once
chmod 0755 "$S"
imgfs_ok "$S" images
[ "$(stat -c %a "$S")" = 700 ] || fail "a 0755 store was left $(stat -c %a "$S") by images"
grep -q "mode was 0755, now 0700" "$T/err" || fail "tightening not logged: $(cat "$T/err")"
imgfs_ok "$S" images
grep -q "mode was" "$T/err" && fail "tightening logged again: $(cat "$T/err")"

# --- snapshot roots do not take the puller's umask
S2=$T/store077
(
	umask 077
	"$IMGFS" --store "$S2" import --name lab/secret "$L" >"$T/out" 2>"$T/err"
) || fail "import with umask 077: $(cat "$T/err")"
for tag in v1 dev; do
	imgfs_ok "$S2" inspect --json "lab/secret:$tag"
	snap=$(jq "$T/out" 'd["layers"][0]["snapshot"]')
	[ "$(stat -c %a "$snap")" = 755 ] || fail "$tag: snapshot root $snap is $(stat -c %a "$snap") with umask 077, want 755"
	# a file without special bits keeps its own mode too
done
imgfs_ok "$S2" inspect --json lab/secret:root750
snap=$(jq "$T/out" 'd["layers"][0]["snapshot"]')
[ "$(stat -c %a "$snap")" = 750 ] || fail "a layer whose root entry is 0750 gave a snapshot root of $(stat -c %a "$snap")"

# --- the mount, shared with allow_other, default blobs=root
imgfs_mount "$S" "$M" allow_other
IMG=$M/lab/secret/v1
[ -r "$M/blobs/sha256/$LAYER" ] || fail "root cannot read the layer blob through the mount"
[ "$(stat -c %a "$M/blobs/sha256/$LAYER")" = 400 ] || fail "layer blob shown $(stat -c %a "$M/blobs/sha256/$LAYER"), want 400"
nobody cat "$M/blobs/sha256/$LAYER" >"$T/leak" 2>"$T/err" && fail "nobody reads the layer blob through the mount"
grep -q SHADOW-SECRET "$T/leak" && fail "nobody got the image's etc/shadow out of blobs/"
grep -q "Permission denied" "$T/err" || fail "layer blob as nobody: $(cat "$T/err"), want EACCES"
for b in "$CONFIG" "$MANIFEST"; do
	nobody cat "$M/blobs/sha256/$b" >/dev/null || fail "nobody cannot read document blob $b"
done
for f in manifest.json config.json digest; do
	nobody cat "$IMG/$f" >/dev/null || fail "nobody cannot read $f"
done
[ "sha256:$(nobody sha256sum <"$IMG/manifest.json" | cut -d' ' -f1)" = "sha256:$MANIFEST" ] ||
	fail "manifest.json as nobody is not the manifest"
# the image's own modes, through every passthrough view
for d in "$IMG/rootfs" "$IMG/layers/0" "$M/layers/$DIFF" "$M/snapshots/$CHAIN"; do
	nobody cat "$d/etc/passwd" >/dev/null || fail "nobody cannot read $d/etc/passwd (0644)"
	nobody cat "$d/pub/readme" >/dev/null || fail "nobody cannot read $d/pub/readme (0644)"
	nobody cat "$d/etc/shadow" >/dev/null 2>&1 && fail "nobody reads $d/etc/shadow (0640 root:42)"
	nobody cat "$d/root-only/key" >/dev/null 2>&1 && fail "nobody reads $d/root-only/key (under 0700)"
	nobody ls "$d/root-only" >/dev/null 2>&1 && fail "nobody lists $d/root-only (0700)"
	cat "$d/etc/shadow" | grep -q SHADOW-SECRET || fail "root cannot read $d/etc/shadow"
done
nobody ls "$M/lab/secret/root750/layers/0" >/dev/null 2>&1 && fail "nobody lists a layer whose root is 0750"
# nothing of uppers/ is on the mount, and the live upper is out of reach
echo w >"$IMG/rootfs/tmp/written-by-root"
[ -d "$S/uppers" ] || fail "no uppers/ after a write in rootfs/ (test broken)"
nobody ls "$S/uppers" >/dev/null 2>&1 && fail "nobody lists the store's uppers/"
nobody find "$M" -maxdepth 1 -name uppers | grep -q . && fail "uppers/ shown on the mount"
nobody sh -c "echo x >'$IMG/rootfs/tmp/by-nobody'" || fail "nobody cannot write to rootfs/tmp (1777 in the image)"
[ "$(stat -c %u "$IMG/rootfs/tmp/by-nobody")" = 65534 ] || fail "nobody's file in rootfs/tmp is not nobody's"

# --- the daemon's umask does not reach rootfs/ either: a new upper dir (the
# merged root shows its mode) gets the image's root mode
M3=$T/mnt-umask
umask 077
imgfs_mount "$S2" "$M3" allow_other
umask 022
for tag in v1:755 root750:750; do
	r=$M3/lab/secret/${tag%%:*}/rootfs
	[ "$(stat -c %a "$r")" = "${tag#*:}" ] || fail "daemon umask 077: $r is $(stat -c %a "$r"), want ${tag#*:}"
done
nobody cat "$M3/lab/secret/v1/rootfs/etc/passwd" >/dev/null || fail "daemon umask 077: nobody cannot read rootfs/etc/passwd"
imgfs_unmount "$M3" "$MOUNT_PID"

# --- -o blobs=all gives layer blobs to everyone
M2=$T/mnt-all
imgfs_mount "$S" "$M2" allow_other,ro,blobs=all
nobody cat "$M2/blobs/sha256/$LAYER" | grep -q SHADOW-SECRET || fail "blobs=all: nobody cannot read the layer blob"
[ "$(stat -c %a "$M2/blobs/sha256/$LAYER")" = 444 ] || fail "blobs=all: layer blob shown $(stat -c %a "$M2/blobs/sha256/$LAYER")"
imgfs_unmount "$M2" "$MOUNT_PID"

# --- unprivileged pull, import, mount: refused, naming what is missing
NS=$T/nobody-store
mkdir "$T/nb" && chown 65534:65534 "$T/nb"
for cmd in "import $L" "pull 127.0.0.1:5000/lab/secret:v1" "mount $T/nb"; do
	# shellcheck disable=SC2086
	nobody "$IMGFS" --store "$T/nb/store" $cmd >"$T/out" 2>"$T/err" && fail "nobody: imgfs $cmd succeeded"
	rc=$?
	[ "$rc" = 1 ] || fail "nobody: imgfs $cmd exited $rc, want 1"
	grep -q "needs root (missing CAP_CHOWN, .*CAP_MKNOD" "$T/err" || fail "nobody: imgfs $cmd: $(cat "$T/err")"
	[ ! -e "$T/nb/store" ] || fail "nobody: imgfs $cmd created a store"
done
findmnt -rn "$T/nb" >/dev/null && fail "nobody's imgfs mount is mounted"
# root without CAP_MKNOD: the capability, not the uid, decides
setpriv --inh-caps=-mknod --bounding-set=-mknod "$IMGFS" --store "$NS" import --name lab/secret "$L" \
	>"$T/out" 2>"$T/err" && fail "import without CAP_MKNOD succeeded"
grep -q "needs root (missing CAP_MKNOD)" "$T/err" || fail "import without CAP_MKNOD: $(cat "$T/err")"
[ ! -e "$NS" ] || fail "import without CAP_MKNOD created the store"

# an exact unpack (as imgfs runs it) of a device node or a foreign owner fails
# unprivileged: it is never a tree with entries missing
TOOL=${IMGFS_TOOLS:-${IMGFS_BUILD:-$IMGFS_SRC/build}/tests}/imgfs-apply-layer
if [ -x "$TOOL" ]; then
	mkdir "$T/nb/dest"
	chown 65534:65534 "$T/nb/dest"
	cp "$L/dev.tar" "$T/nb/dev.tar"
	IMGFS_UNPACK_EXACT=1 nobody "$TOOL" "$T/nb/dest" "$T/nb/dev.tar" >"$T/out" 2>"$T/err" &&
		fail "an unprivileged exact unpack of a layer with a device succeeded"
	grep -Eq "CAP_MKNOD|CAP_CHOWN" "$T/err" || fail "unprivileged exact unpack: $(cat "$T/err")"
	# the same layer as root: every entry is made
	mkdir "$T/rootdest"
	"$TOOL" "$T/rootdest" "$L/dev.tar" >/dev/null || fail "root unpack of the dev layer failed"
	[ -c "$T/rootdest/dev/null" ] && [ "$(stat -c %u:%g "$T/rootdest/owned")" = 1234:1234 ] ||
		fail "root unpack lost the device or the owner"
else
	log "no $TOOL: exact-unpack check skipped"
fi
log "ok"
