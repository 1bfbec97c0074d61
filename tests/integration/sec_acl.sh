#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# POSIX ACLs and new-file ownership in rootfs/ of a mount shared with other
# users (allow_other) behave exactly as on a kernel overlay mount of the same
# layers with an upper dir: the same files, modes and ACLs are made in both
# (rootfs/tmp/acl), then the same accesses run as uid 65534 (no groups) and as
# uid 1234 with supplementary groups, and every result, mode, owner and
# getfacl output must be equal. Some results are also checked against what
# they must be (a denying ACL denies), so that both being wrong still fails.
# Read-only parts of the tree answer EROFS to setfacl. A CREATE is an
# O_CREAT|O_EXCL|O_NOFOLLOW open in the daemon (strace).
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/fs_lib.bash"

need_root
need_imgfs
need_fuse
need docker-registry skopeo zstd curl setpriv setfacl getfacl
start_registry
build_fixtures features
push_layout "$T/fixtures/features" v1 lab/features

S=$T/store M=$T/mnt K=$T/kov
REF=$REGISTRY/lab/features:v1
chmod 755 "$T" # mktemp -d made it 0700: the users below must reach the mounts
imgfs_mount "$S" "$M" allow_other
ls "$M/pull/$REF/rootfs" >/dev/null || fail "pull through pull/ failed: $(cat "$M/.imgfs/status")"
IMG=$M/$REGISTRY/lab/features/v1 R=$M/$REGISTRY/lab/features/v1/rootfs

# the kernel overlay of the same layers, with an upper dir of its own
mapfile -t SNAPS < <(inspect_snapshots "$REF" "$S")
lower=""
for s in "${SNAPS[@]}"; do lower=$s${lower:+:$lower}; done
mkdir -p "$K" "$T/kup/upper" "$T/kup/work"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$T/kup/upper,workdir=$T/kup/work" "$K" ||
	fail "kernel overlay of ${#SNAPS[@]} layers failed"
on_exit umount "$K"

G2=2345 G3=3456 # uid 1234 is in both, nobody in neither
# setup.sh DIR: as root, the files and ACLs the users are let at
cat >"$T/setup.sh" <<EOF
set -e
cd "\$1"
umask 022
# an ACL on a lower file (copy-up) and a default ACL on a lower dir
setfacl -m u:nobody:--- etc/passwd
setfacl -m u:nobody:rwx,u:1234:rwx,d:u:nobody:r-x,d:g::r-x,d:o::--- usr
cd tmp && mkdir acl && cd acl && chmod 755 .
echo secret >denied && chmod 644 denied && setfacl -m u:nobody:--- denied
mkdir nodir && echo inside >nodir/f && chmod 755 nodir && setfacl -m u:nobody:--- nodir
echo allowed >allow && chmod 600 allow && setfacl -m u:nobody:r-- allow
echo masked >masked && chmod 600 masked && setfacl -m u:nobody:rw-,m::r-- masked
echo group >gfile && chmod 600 gfile && setfacl -m g:$G2:rw- gfile
echo gdeny >gdeny && chmod 644 gdeny && setfacl -m g:$G3:--- gdeny
mkdir dacl && chmod 755 dacl
setfacl -m u:nobody:rwx,u:1234:rwx,d:u:nobody:rwx,d:g:$G2:r-x,d:g::r-x,d:o::--- dacl
mkdir pub && chmod 1777 pub
mkdir sg && chown :$G2 sg && chmod 2777 sg
mkdir gw && chown :$G2 gw && chmod 770 gw
mkdir gacl && chmod 755 gacl && setfacl -m g:$G2:rwx gacl
echo s >sgfile-nobody && chown 65534:$G2 sgfile-nobody && chmod 2755 sgfile-nobody
echo s >sgfile-u1234 && chown 1234:$G2 sgfile-u1234 && chmod 2755 sgfile-u1234
echo w >suid && chmod 4777 suid
# root's own creations: umask, default ACLs
for m in 002 077 022; do
	(umask \$m && echo x >pub/root-f\$m && mkdir pub/root-d\$m && mkfifo pub/root-p\$m)
done
(umask 077 && echo x >dacl/root-f && mkdir dacl/root-d && mkdir dacl/root-d/sub)
(umask 077 && echo x >../../usr/root-f && mkdir ../../usr/root-d)
EOF
bash "$T/setup.sh" "$R" || fail "setting up ACLs in rootfs/ failed"
bash "$T/setup.sh" "$K" || fail "setting up ACLs in the kernel overlay failed"

# the accesses, as one user; one line each, with the error text (not paths)
cat >"$T/probe.sh" <<'EOF'
cd "$1" || exit 1
u=$2
umask 022
r() {
	local n=$1 out
	shift
	if out=$("$@" 2>&1); then echo "$n: ok ${out//$'\n'/|}"; else echo "$n: failed ${out##*: }"; fi
}
r passwd-lower cat etc/passwd
r usr-dacl sh -c "umask 022; echo x >usr/f-$u"
cd tmp/acl || exit 1
r read-denied cat denied
r read-allowed cat allow
r walk-denied cat nodir/f
r list-denied ls nodir
r read-masked cat masked
r write-masked sh -c 'echo more >>masked'
r read-group cat gfile
r write-group sh -c 'echo more >>gfile'
r read-groupdeny cat gdeny
r write-suid sh -c 'echo more >>suid'
r dacl-file sh -c "umask 022; echo x >dacl/f-$u"
r dacl-dir sh -c "umask 077; mkdir dacl/d-$u"
r dacl-sub sh -c "umask 077; mkdir dacl/d-$u/sub && echo y >dacl/d-$u/sub/f"
r dacl-fifo sh -c "umask 077; mkfifo dacl/p-$u"
for m in 002 077 022; do
	r umask$m-file sh -c "umask $m; echo x >pub/f$m-$u"
	r umask$m-dir sh -c "umask $m; mkdir pub/d$m-$u"
	r umask$m-fifo sh -c "umask $m; mkfifo pub/p$m-$u"
done
r symlink ln -s target pub/l-$u
r hardlink-unwritable ln allow pub/hl-$u
r sgid-file python3 -c 'import os, sys
os.umask(0)
os.close(os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o2775))' sg/f-$u
r sgid-dir mkdir sg/d-$u
r group-create sh -c "echo x >gw/f-$u"
r group-acl-create mkdir gacl/d-$u
r chmod-mask chmod 640 dacl/f-$u
r setfacl-own setfacl -m u:4321:rw pub/f022-$u
r setfacl-other setfacl -m u:4321:rw allow
r setfacl-sgid setfacl -m u:4321:r sgfile-$u
r getfacl-denied getfacl -p -n denied
# what the kernel checks with or without ACLs, for good measure
r sticky-unlink rm -f pub/root-f022
r sticky-rename mv pub/root-f002 pub/m-$u
r chown-own chown 0 pub/f022-$u
r chgrp-supp chgrp 2345 pub/f022-$u
r chmod-other chmod 777 allow
r utime-other touch -d 2000-01-01 allow
r truncate-denied truncate -s 0 denied
r xattr-own setfattr -n user.x -v 1 pub/f022-$u
r rename-own mv pub/f077-$u pub/f077-$u.moved
r rmdir-own rmdir pub/d077-$u
r getfacl-dacl getfacl -p -n dacl/d-$u
EOF

# state DIR: every entry of tmp/acl and the ones made in usr/ (sorted):
# type, mode, owner, size, ACL
state() {
	(
		cd "$1"
		find tmp/acl usr etc/passwd | LC_ALL=C sort |
			while read -r p; do
				stat -c '%n %F %a %u:%g %s' "$p"
				[ -L "$p" ] || getfacl -p -n --omit-header "$p" 2>&1 | sed '/^$/d; s/^/  /'
			done
	)
}

for who in nobody u1234; do
	case $who in
	nobody) ids=(--reuid=65534 --regid=65534 --clear-groups) ;;
	u1234) ids=(--reuid=1234 --regid=1234 --groups=$G2,$G3) ;;
	esac
	setpriv "${ids[@]}" bash "$T/probe.sh" "$R" "$who" >"$T/imgfs.$who" 2>&1 || fail "probe as $who on imgfs"
	setpriv "${ids[@]}" bash "$T/probe.sh" "$K" "$who" >"$T/kernel.$who" 2>&1 || fail "probe as $who on the kernel overlay"
	diff -u "$T/kernel.$who" "$T/imgfs.$who" >"$T/diff.$who" ||
		fail "accesses as $who differ from the kernel overlay's (- kernel, + imgfs):
$(cat "$T/diff.$who")"
done
state "$R" >"$T/imgfs.state"
state "$K" >"$T/kernel.state"
diff -u "$T/kernel.state" "$T/imgfs.state" >"$T/diff.state" ||
	fail "modes, owners or ACLs differ from the kernel overlay's (- kernel, + imgfs):
$(cat "$T/diff.state")"

# what the results must be, whatever the kernel does
want() { # FILE LINE
	grep -qxF -- "$2" "$1" || fail "$(basename "$1"): want '$2', got: $(grep -F -- "${2%%:*}:" "$1")"
}
want "$T/imgfs.nobody" "walk-denied: failed Permission denied"
want "$T/imgfs.u1234" "walk-denied: ok inside"
want "$T/imgfs.nobody" "read-allowed: ok allowed"
want "$T/imgfs.u1234" "read-allowed: failed Permission denied"
want "$T/imgfs.nobody" "hardlink-unwritable: failed Operation not permitted"
want "$T/imgfs.nobody" "read-denied: failed Permission denied"
want "$T/imgfs.nobody" "passwd-lower: failed Permission denied"
want "$T/imgfs.nobody" "list-denied: failed Permission denied"
want "$T/imgfs.nobody" "read-masked: ok masked"
want "$T/imgfs.nobody" "write-masked: failed Permission denied"
want "$T/imgfs.nobody" "read-group: failed Permission denied"
want "$T/imgfs.u1234" "write-group: ok "
want "$T/imgfs.u1234" "read-groupdeny: failed Permission denied"
want "$T/imgfs.nobody" "read-groupdeny: ok gdeny"
want "$T/imgfs.nobody" "setfacl-other: failed Operation not permitted"
want "$T/imgfs.nobody" "setfacl-own: ok "
# allowed only through a supplementary group (which the daemon must take on too)
want "$T/imgfs.u1234" "group-create: ok "
want "$T/imgfs.u1234" "group-acl-create: ok "
want "$T/imgfs.nobody" "group-acl-create: failed Permission denied"
st() { stat -c '%a %u:%g' "$R/tmp/acl/$1"; }
[ "$(st pub/f002-nobody)" = "664 65534:65534" ] || fail "umask 002 file: $(st pub/f002-nobody)"
[ "$(st pub/d002-nobody)" = "775 65534:65534" ] || fail "umask 002 dir: $(st pub/d002-nobody)"
[ "$(st pub/f077-u1234.moved)" = "600 1234:1234" ] || fail "umask 077 file: $(st pub/f077-u1234.moved)"
[ "$(st pub/d022-u1234)" = "755 1234:1234" ] || fail "umask 022 dir: $(st pub/d022-u1234)"
[ "$(st pub/p077-u1234)" = "600 1234:1234" ] || fail "umask 077 fifo: $(st pub/p077-u1234)"
[ "$(st pub/root-f002)" = "664 0:0" ] || fail "root's umask 002 file: $(st pub/root-f002)"
[ "$(st sg/f-u1234)" = "2775 1234:$G2" ] || fail "new file in a set-group-ID dir by a member: $(st sg/f-u1234)"
[ "$(st sg/f-nobody)" = "775 65534:$G2" ] || fail "new file in a set-group-ID dir by a non-member: $(st sg/f-nobody)"
[ "$(st sg/d-nobody)" = "2755 65534:$G2" ] || fail "new dir in a set-group-ID dir: $(st sg/d-nobody)"
[ "$(st sgfile-nobody)" = "755 65534:$G2" ] || fail "setfacl by a non-member kept set-group-ID: $(st sgfile-nobody)"
[ "$(st sgfile-u1234)" = "2755 1234:$G2" ] || fail "setfacl by a member dropped set-group-ID: $(st sgfile-u1234)"
# default ACL under umask 077: the ACL, not the umask, decides
[ "$(st dacl/d-nobody)" = "770 65534:65534" ] || fail "dir in a default-ACL dir: $(st dacl/d-nobody)"
getfacl -p -n --omit-header "$R/tmp/acl/dacl/d-nobody" >"$T/acl.out"
grep -qx "user:65534:rwx" "$T/acl.out" && grep -qx "default:group:$G2:r-x" "$T/acl.out" ||
	fail "dir in a default-ACL dir did not inherit it: $(cat "$T/acl.out")"
getfacl -p -n --omit-header "$R/tmp/acl/dacl/f-nobody" >"$T/acl.out"
grep -qx "mask::r--" "$T/acl.out" || fail "chmod 640 did not set the ACL mask: $(cat "$T/acl.out")"

# --- setfacl where nothing may be written: EROFS
LAYFILE=$IMG/layers/0/etc/passwd
SNAPDIR=$M/snapshots/$(ls "$M/snapshots" | head -n 1)
BLOB=$(ls -d "$M"/blobs/sha256/* | head -n 1)
for p in "$LAYFILE" "$SNAPDIR" "$BLOB" "$IMG" "$IMG/manifest.json" "$M/.imgfs" "$M/pull"; do
	setfacl -m u:nobody:--- "$p" 2>"$T/err" && fail "setfacl on $p succeeded"
	grep -q "Read-only file system" "$T/err" || fail "setfacl on $p: $(cat "$T/err"), want EROFS"
	getfacl -p "$p" >/dev/null || fail "getfacl on $p failed"
done
[ "$(cat "$LAYFILE")" = "$(cat "${SNAPS[0]}/etc/passwd")" ] || fail "layers/0/etc/passwd differs"
setpriv --reuid=65534 --regid=65534 --clear-groups cat "$LAYFILE" >/dev/null ||
	fail "nobody cannot read layers/0/etc/passwd (the ACL set in rootfs/ leaked into the layer)"

# --- CREATE makes a new file: O_EXCL|O_NOFOLLOW in the daemon
if command -v strace >/dev/null; then
	strace -f -qq -e trace=openat -o "$T/strace" -p "$MOUNT_PID" 2>"$T/strace.err" &
	SPID=$!
	on_exit kill "$SPID"
	sleep 1 # strace attaches to every thread
	for i in 1 2 3 4 5; do echo x >"$R/tmp/created-$i"; done
	sleep 0.5
	kill "$SPID" && wait "$SPID" 2>/dev/null || true
	grep -q '"created-1", .*O_CREAT' "$T/strace" || fail "the daemon's create not seen by strace: $(head -c 600 "$T/strace")"
	grep '"created-[1-5]", .*O_CREAT' "$T/strace" | grep -v 'O_EXCL' && fail "CREATE opened without O_EXCL"
	grep '"created-[1-5]", .*O_CREAT' "$T/strace" | grep -v 'O_NOFOLLOW' && fail "CREATE opened without O_NOFOLLOW"
else
	log "strace missing: the O_EXCL|O_NOFOLLOW check is skipped"
fi
log "ok"
