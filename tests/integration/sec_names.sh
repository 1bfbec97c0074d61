#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Names and what they pin (issue 9, item 3 and the name findings):
#  - a reference with a digest is answered by that digest only, under pull/
#    and by `imgfs pull`, and never creates or moves a tag; a user of an
#    allow_other mount (uid 65534) cannot plant a digest under a tag that
#    root later gets from the store;
#  - docker.io/a.b/c and a.b/c are two directories, and pull/ reaches each;
#  - a reference at the length limits still gets a writable rootfs/;
#  - rootfs writes belong to one image name at one digest: rm removes them
#    (nobody's re-pull through pull/ does not bring root's back), a moved tag
#    starts clean, gc removes the old ones, reset after rm has nothing to do;
#  - `umount DIR && imgfs reset REF` works every time.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/fs_lib.bash"

need_root
need_imgfs
need_fuse
need docker-registry skopeo zstd curl setpriv
start_registry
build_fixtures multiarch features
chmod o+x "$T" # mktemp -d made it 0700; nobody walks to the mounts below

# layout_digest LAYOUT TAG: the digest index.json gives TAG
layout_digest() {
	"$PY" -c 'import json, sys
for m in json.load(open(sys.argv[1] + "/index.json"))["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
        print(m["digest"])' "$1" "$2"
}
MA=$T/fixtures/multiarch
AMD=$(layout_digest "$MA" amd64) ARM=$(layout_digest "$MA" arm64) ARMV7=$(layout_digest "$MA" armv7)
FEAT=$(layout_digest "$T/fixtures/features" v1)
[ -n "$AMD" ] && [ -n "$ARM" ] && [ -n "$ARMV7" ] && [ -n "$FEAT" ] || fail "fixture digests missing"
push_layout "$MA" v1 multi
push_layout "$MA" armv7 multi
push_layout "$T/fixtures/features" v1 lab/app # the tag moves to AMD further down

# as_nobody CMD...: run as uid/gid 65534 with no groups
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }

# Other users may pull through pull/ (the attacks below need them to): say so
# where the mount has a pull policy option.
OPTS=allow_other
if "$IMGFS" mount --help 2>&1 | grep -q 'pull='; then
	OPTS=$OPTS,pull=all
fi

# manifest_gets: manifest requests the registry answered since mark_log
manifest_gets() { tail -n +$((LOG_MARK + 1)) "$REGISTRY_LOG" | grep -c '"[A-Z]* /v2/[^ ]*/manifests/' || true; }

# --- pull/repo:tag@D answers D, not what the store has under the tag
S=$T/store M=$T/mnt
imgfs_ok "$S" pull -q --platform linux/arm64 "$REGISTRY/multi:v1"
grep -qx "Digest: $ARM" "$T/out" || fail "multi:v1 for arm64: $(cat "$T/out"), want $ARM"
imgfs_mount "$S" "$M" "$OPTS"
got=$(as_nobody cat "$M/pull/$REGISTRY/multi:v1@$AMD/digest" 2>"$T/err") ||
	fail "nobody: pull/multi:v1@amd64: $(cat "$T/err") $(cat "$M/.imgfs/status")"
[ "$got" = "$AMD" ] || fail "pull/multi:v1@$AMD answered $got (the stored tag's digest?)"
as_nobody grep -q '"architecture":"amd64"' "$M/pull/$REGISTRY/multi:v1@$AMD/config.json" ||
	fail "pull/multi:v1@amd64 is not the amd64 image: $(head -c 300 "$M/pull/$REGISTRY/multi:v1@$AMD/config.json")"
[ "$(cat "$M/$REGISTRY/multi/v1/digest")" = "$ARM" ] || fail "multi/v1 moved to $(cat "$M/$REGISTRY/multi/v1/digest")"
[ "$(cat "$M/$REGISTRY/multi/@$AMD/digest")" = "$AMD" ] || fail "multi/@amd64 not shown under its digest"
imgfs_ok "$S" inspect "$REGISTRY/multi:v1"
grep -q "^Digest: *$ARM" "$T/out" || fail "the tag's record changed: $(cat "$T/out")"
# a pinned lookup of content stored under another tag of the repository is
# answered from the store (no manifest request), still by its digest
imgfs_ok "$S" pull -q "$REGISTRY/multi:armv7"
mark_log
got=$(as_nobody cat "$M/pull/$REGISTRY/multi:v1@$ARMV7/digest" 2>"$T/err") || fail "pull/multi:v1@armv7: $(cat "$T/err")"
[ "$got" = "$ARMV7" ] || fail "pull/multi:v1@$ARMV7 answered $got"
[ "$(manifest_gets)" = 0 ] || fail "a digest the store holds was asked of the registry: $(tail -n 3 "$REGISTRY_LOG")"
[ "$(cat "$M/$REGISTRY/multi/v1/digest")" = "$ARM" ] || fail "multi/v1 moved after the armv7 lookup"

# --- imgfs pull repo:tag@D: stored under the digest, the tag untouched, no tag made up
imgfs_ok "$S" pull -q "$REGISTRY/multi:v1@$AMD"
[ "$(head -n 1 "$T/out")" = "$REGISTRY/multi@$AMD" ] || fail "pull multi:v1@amd64 recorded as $(head -n 1 "$T/out")"
imgfs_ok "$S" inspect "$REGISTRY/multi:v1"
grep -q "^Digest: *$ARM" "$T/out" || fail "imgfs pull multi:v1@D repointed the tag: $(cat "$T/out")"
imgfs_ok "$S" pull -q "$REGISTRY/multi:nosuchtag@$AMD"
imgfs_ok "$S" images
grep -q "multi:nosuchtag" "$T/out" && fail "pull of :nosuchtag@D made up a tag: $(cat "$T/out")"
imgfs_run "$S" inspect "$REGISTRY/multi:nosuchtag"
[ "$RC" != 0 ] || fail "inspect multi:nosuchtag found a record"
imgfs_unmount "$M" "$MOUNT_PID"

# --- nobody plants an old digest under a tag; root then asks for the tag
OLD=$FEAT
push_layout "$MA" amd64 lab/app:v1 # lab/app:v1 now names AMD; FEAT is its old digest
S2=$T/store2 M2=$T/mnt2
imgfs_mount "$S2" "$M2" "$OPTS"
got=$(as_nobody cat "$M2/pull/$REGISTRY/lab/app:v1@$OLD/digest" 2>"$T/err") ||
	fail "nobody: pull/lab/app:v1@old: $(cat "$T/err")"
[ "$got" = "$OLD" ] || fail "pull/lab/app:v1@old answered $got"
imgfs_ok "$S2" images
grep -q "lab/app:v1" "$T/out" && fail "a pinned lookup by nobody recorded the tag: $(cat "$T/out")"
got=$(cat "$M2/pull/$REGISTRY/lab/app:v1/digest") || fail "root: pull/lab/app:v1 failed"
[ "$got" = "$AMD" ] || fail "root got the planted $got for lab/app:v1, the registry says $AMD"
imgfs_unmount "$M2" "$MOUNT_PID"

# --- docker.io/a.b/c and a.b/c: two images, two paths; pull/ reaches each
# from the store (nothing reaches docker.io here: a lookup that went to the
# network would fail)
S3=$T/store3 M3=$T/mnt3
imgfs_ok "$S3" import --name docker.io/a.b/c "$T/fixtures/features"
imgfs_ok "$S3" import --name a.b/c "$MA"
imgfs_mount "$S3" "$M3" "$OPTS"
[ "$(cat "$M3/docker.io/a.b/c/v1/digest")" = "$FEAT" ] || fail "docker.io/a.b/c:v1 not at docker.io/a.b/c/v1"
[ "$(cat "$M3/a.b/c/amd64/digest")" = "$AMD" ] || fail "a.b/c:amd64 not at a.b/c/amd64"
got=$(cat "$M3/a.b/c/v1/digest") || fail "a.b/c:v1 not at a.b/c/v1"
[ "$got" != "$FEAT" ] || fail "a.b/c/v1 shows docker.io/a.b/c:v1"
ls "$M3/docker.io" | grep -qx a.b || fail "ls docker.io/: $(ls "$M3/docker.io")"
got=$(as_nobody cat "$M3/pull/docker.io/a.b/c:v1/digest" 2>"$T/err") || fail "pull/docker.io/a.b/c:v1: $(cat "$T/err")"
[ "$got" = "$FEAT" ] || fail "pull/docker.io/a.b/c:v1 answered $got"
got=$(as_nobody cat "$M3/pull/a.b/c:amd64/digest" 2>"$T/err") || fail "pull/a.b/c:amd64: $(cat "$T/err")"
[ "$got" = "$AMD" ] || fail "pull/a.b/c:amd64 answered $got"

# --- imgfs import: a ref.name that pins another digest than its entry's is refused
mkdir -p "$T/liar"
cp -r "$T/fixtures/features/." "$T/liar/"
"$PY" -c 'import json, sys
p = sys.argv[1] + "/index.json"; d = json.load(open(p))
for m in d["manifests"]: m["annotations"]["org.opencontainers.image.ref.name"] = sys.argv[2]
json.dump(d, open(p, "w"))' "$T/liar" "$REGISTRY/liar:v1@$AMD"
imgfs_run "$S3" import "$T/liar"
[ "$RC" != 0 ] || fail "import of an entry named with another digest succeeded"
grep -q "pins another digest" "$T/err" || fail "import of a lying ref.name: $(cat "$T/err")"
imgfs_ok "$S3" images
grep -q "liar" "$T/out" && fail "a lying ref.name was recorded: $(cat "$T/out")"

# --- a reference at the length limits: 255-character repository, 128-character tag
LONGREPO=long.example/$(printf 'a%.0s' {1..110})/$(printf 'b%.0s' {1..131})
LONGTAG=$(printf 't%.0s' {1..128})
[ ${#LONGREPO} = 255 ] || fail "test bug: repository is ${#LONGREPO} characters"
mkdir -p "$T/longlayout"
cp -r "$T/fixtures/features/." "$T/longlayout/"
"$PY" -c 'import json, sys
p = sys.argv[1] + "/index.json"; d = json.load(open(p))
for m in d["manifests"]: m["annotations"]["org.opencontainers.image.ref.name"] = sys.argv[2]
json.dump(d, open(p, "w"))' "$T/longlayout" "$LONGTAG"
imgfs_ok "$S3" import --name "$LONGREPO" "$T/longlayout"
R=$M3/$LONGREPO/$LONGTAG/rootfs
ls "$R/" >/dev/null 2>"$T/err" || fail "rootfs of a long reference: $(cat "$T/err")"
echo long >"$R/longfile" || fail "write into the rootfs of a long reference failed"
[ "$(cat "$R/longfile")" = long ] || fail "long reference: written file not read back"
imgfs_unmount "$M3" "$MOUNT_PID"
no_store_mounts "$S3"

# upper_of STORE REF: the directory holding REF's rootfs writes
upper_of() {
	imgfs_ok "$1" inspect --json "$2"
	"$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["upper"])' "$T/out"
}

# --- writes go with their image
S4=$T/store4 M4=$T/mnt4 W=$REGISTRY/lab/w:v1
push_layout "$T/fixtures/features" v1 lab/w:v1
imgfs_ok "$S4" pull -q "$W"
U1=$(upper_of "$S4" "$W")
imgfs_mount "$S4" "$M4" "$OPTS"
R=$M4/$REGISTRY/lab/w/v1/rootfs
echo mine >"$R/written-before-rm" || fail "write into rootfs failed"
imgfs_unmount "$M4" "$MOUNT_PID"
[ -e "$U1/upper/written-before-rm" ] || fail "the write is not in $U1"
imgfs_ok "$S4" rm "$W"
grep -q "removed the writes made in its rootfs" "$T/out" || fail "rm does not say it removed the writes: $(cat "$T/out")"
[ ! -e "$U1" ] || fail "rm left the writes in $U1"
imgfs_run "$S4" reset "$W"
[ "$RC" = 0 ] || fail "reset after rm: rc $RC: $(cat "$T/err")"
grep -q "nothing to reset" "$T/err" || fail "reset after rm does not say there is nothing to reset: $(cat "$T/err")"
imgfs_ok "$S4" pull -q "$W"
imgfs_mount "$S4" "$M4" "$OPTS"
[ ! -e "$R/written-before-rm" ] || fail "a re-pull brought the removed image's writes back"

# root's writes, rm while the mount serves them, then nobody re-pulls the
# image through pull/: the writes must not come back
echo secret >"$R/root-secret" && chmod 644 "$R/root-secret" || fail "write into rootfs failed"
imgfs_ok "$S4" rm "$W"
grep -q "still serves them" "$T/out" || fail "rm while mounted: $(cat "$T/out")"
sleep 1.2 # the image's name times out in the kernel
as_nobody ls "$M4/pull/$W/rootfs/" >/dev/null 2>"$T/err" || fail "nobody: re-pull through pull/: $(cat "$T/err")"
as_nobody cat "$M4/pull/$W/rootfs/root-secret" 2>/dev/null && fail "nobody's re-pull shows root's writes made before rm"
[ ! -e "$R/root-secret" ] || fail "the re-pulled image shows the removed image's writes"
imgfs_unmount "$M4" "$MOUNT_PID"
imgfs_ok "$S4" gc
grep -q "rootfs writes of $W" "$T/out" || fail "gc did not remove the set-aside writes: $(cat "$T/out")"
ls "$S4/uppers" | grep -q '^removed-' && fail "gc left set-aside writes: $(ls "$S4/uppers")"

# a tag that moves to new content starts clean; the old writes stay until gc
U1=$(upper_of "$S4" "$W")
imgfs_mount "$S4" "$M4" "$OPTS"
echo old >"$R/written-on-old" || fail "write into rootfs failed"
rm "$R/bin/busybox" || fail "rm of a lower file failed"
imgfs_unmount "$M4" "$MOUNT_PID"
push_layout "$MA" amd64 lab/w:v1
imgfs_ok "$S4" pull -q "$W"
grep -qx "Digest: $AMD" "$T/out" || fail "lab/w:v1 did not move: $(cat "$T/out")"
U2=$(upper_of "$S4" "$W")
[ "$U1" != "$U2" ] || fail "the moved tag kept the old digest's upper dir $U1"
imgfs_mount "$S4" "$M4" "$OPTS"
[ ! -e "$R/written-on-old" ] || fail "the moved tag shows writes made to the old content"
[ -e "$R/bin/busybox" ] || fail "a whiteout made on the old content hides bin/busybox of the new"
imgfs_unmount "$M4" "$MOUNT_PID"
[ -e "$U1/upper/written-on-old" ] || fail "the old digest's writes were not kept until gc"
imgfs_ok "$S4" gc
grep -q "rootfs writes of $W" "$T/out" || fail "gc did not remove the old digest's writes: $(cat "$T/out")"
[ ! -e "$U1" ] || fail "gc left the old digest's writes in $U1"
[ -d "$U2" ] || fail "gc removed the writes of an image in the store"

# --- umount DIR && imgfs reset REF: every time
for ((i = 0; i < 10; i++)); do
	imgfs_mount "$S4" "$M4"
	echo "$i" >"$R/loop" || fail "loop $i: write into rootfs failed"
	umount "$M4" || fail "loop $i: umount failed"
	imgfs_run "$S4" reset "$W"
	[ "$RC" = 0 ] || fail "loop $i: umount && reset: rc $RC: $(cat "$T/err")"
	[ ! -e "$U2/upper/loop" ] || fail "loop $i: reset left the write"
	imgfs_unmount "$M4" "$MOUNT_PID"
done
no_store_mounts "$S4"
log "ok"
