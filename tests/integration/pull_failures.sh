#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Pulls that must fail, and fail cleanly: a corrupted blob or manifest in the
# registry, a wrong diffID, layers that try to write outside the store, an
# unknown tag, an invalid reference, a schema1 manifest. Then the store
# housekeeping: rm + gc free what only the removed image used, and import of
# an OCI layout written by skopeo.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"

need_root
need_imgfs
need docker-registry skopeo umoci zstd curl
start_registry
build_fixtures features junk hostile
F=$T/fixtures

push_layout "$F/junk" v1 junk
push_layout "$F/junk" v1 corrupt:v1
push_layout "$F/features" v1 features
for t in baddiffid dotdot linkout; do
	push_layout "$F/hostile" "$t" hostile
done

json_get() {
	"$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# manifest_of LAYOUT TAG: path of the manifest blob of LAYOUT:TAG
manifest_of() {
	local d
	d=$("$PY" -c '
import json, sys
for m in json.load(open(sys.argv[1] + "/index.json"))["manifests"]:
    if m["annotations"]["org.opencontainers.image.ref.name"] == sys.argv[2]:
        print(m["digest"])
' "$1" "$2")
	echo "$1/blobs/sha256/${d#sha256:}"
}

lasterr() {
	grep -v '^[[:space:]]*$' "$T/err" | tail -n 1
}

# image_count STORE: number of images the store lists
image_count() {
	imgfs_ok "$1" images --json
	json_get "$T/out" 'len(d)'
}

# assert_clean STORE MAXSNAP WHAT: no image, at most MAXSNAP committed
# snapshots, no unpack left in progress, every blob in blobs/ hashes to its name.
assert_clean() {
	local store=$1 max=$2 what=$3 n f
	[ "$(image_count "$store")" = 0 ] || fail "$what: an image was recorded"
	n=$(find "$store/snapshots" -mindepth 1 -maxdepth 1 -type d ! -name 'tmp-*' 2>/dev/null | wc -l)
	[ "$n" -le "$max" ] || fail "$what: $n snapshots committed, at most $max may be"
	[ -z "$(find "$store/snapshots" -mindepth 1 -maxdepth 1 -name 'tmp-*' 2>/dev/null)" ] ||
		fail "$what: unpack directories left behind in $store/snapshots"
	for f in "$store"/blobs/sha256/*; do
		[ -e "$f" ] || continue
		[ "$(sha256sum <"$f" | cut -d' ' -f1)" = "$(basename "$f")" ] ||
			fail "$what: $f does not hash to its name"
	done
}

# ---- a corrupted layer blob -------------------------------------------------------

man=$(manifest_of "$F/junk" v1)
top=$(json_get "$man" 'd["layers"][-1]["digest"]')
blob=$(registry_blob "$top")
[ -f "$blob" ] || fail "registry has no data file for $top at $blob"
cp "$blob" "$T/blob.orig"
"$PY" - "$blob" <<-'EOF'
	import sys
	p = sys.argv[1]
	b = bytearray(open(p, "rb").read())
	for i in range(len(b) // 3, len(b) // 3 + 16):
	    b[i] ^= 0xFF
	open(p, "wb").write(bytes(b))
EOF
store=$T/stores/corrupt
imgfs_run "$store" pull "$REGISTRY/corrupt:v1"
msg=$(lasterr)
[ "$RC" = 1 ] || fail "pull of a corrupted layer: exit $RC, wanted 1"
grep -qF "${top#sha256:}" "$T/err" || fail "corrupted layer: error does not name $top: $(cat "$T/err")"
[ ! -e "$store/blobs/sha256/${top#sha256:}" ] || fail "corrupted layer $top landed in blobs/"
assert_clean "$store" 1 "corrupted layer"
log "corrupted layer refused: $msg"
# the store is not poisoned: with the blob repaired, the same pull works
cp "$T/blob.orig" "$blob"
imgfs_ok "$store" pull "$REGISTRY/corrupt:v1"
[ -e "$store/blobs/sha256/${top#sha256:}" ] || fail "repaired pull did not store $top"

# ---- a corrupted manifest ----------------------------------------------------------

mdig=sha256:$(basename "$(manifest_of "$F/features" v1)")
mblob=$(registry_blob "$mdig")
cp "$mblob" "$T/manifest.orig"
sed -i 's/"schemaVersion":2/"schemaVersion":2 /' "$mblob"
store=$T/stores/corrupt-manifest
imgfs_run "$store" pull "$REGISTRY/features:v1"
[ "$RC" = 1 ] || fail "pull of a corrupted manifest: exit $RC, wanted 1"
grep -qF "${mdig#sha256:}" "$T/err" || fail "corrupted manifest: error does not name $mdig: $(cat "$T/err")"
assert_clean "$store" 0 "corrupted manifest"
imgfs_run "$store" pull "$REGISTRY/features@$mdig"
[ "$RC" = 1 ] || fail "pull by digest of a corrupted manifest: exit $RC, wanted 1"
assert_clean "$store" 0 "corrupted manifest by digest"
cp "$T/manifest.orig" "$mblob"

# ---- diffID mismatch -----------------------------------------------------------------

man=$(manifest_of "$F/hostile" baddiffid)
cfg=$F/hostile/blobs/sha256/$(json_get "$man" 'd["config"]["digest"][7:]')
bad=$(json_get "$cfg" 'd["rootfs"]["diff_ids"][-1]')
store=$T/stores/baddiffid
imgfs_run "$store" pull "$REGISTRY/hostile:baddiffid"
msg=$(lasterr)
[ "$RC" = 1 ] || fail "pull with a wrong diffID: exit $RC, wanted 1"
grep -qF "${bad#sha256:}" "$T/err" || fail "wrong diffID: error does not name $bad: $(cat "$T/err")"
assert_clean "$store" 1 "wrong diffID"
log "wrong diffID refused: $msg"

# ---- hostile layers: nothing written outside the store ------------------------------

SENT=/tmp/imgfs-hostile-sentinel # the path mkimage.py's hostile layers aim at
if [ -e "$SENT" ]; then
	fail "$SENT exists already; remove it (another run, or a leak from an earlier one)"
fi
mkdir -p "$SENT" "$T/victim"
on_exit rm -rf "$SENT"
echo sentinel >"$SENT/secret"
echo hello >"$T/victim/hello"
echo secret >"$T/victim/secret"
chmod 0400 "$T/victim/secret" "$SENT/secret"
umoci_unpack "$F/hostile" dotdot "$T/ref-dotdot" # umoci clamps, like imgfs should
# snapshots live at $T/hst/snapshots/<n>/fs: four "../" reach $T
outside() {
	echo "victim $(tree_hash "$T/victim") sentinel $(tree_hash "$SENT")"
	ls -a "$T"
	ls -a /tmp | grep -E 'dotdot|pwned|x-dot|x-inner|esc-' || true
}
for tag in dotdot linkout; do
	store=$T/hst
	rm -rf "$store"
	mkdir -p "$store"
	before=$(outside)
	imgfs_run "$store" pull "$REGISTRY/hostile:$tag"
	msg=$(lasterr)
	after=$(outside)
	[ "$before" = "$after" ] || fail "hostile:$tag wrote outside the store:
$(diff <(echo "$before") <(echo "$after"))"
	# inside the store, nothing may land outside a snapshot's fs/
	stray=$(find "$store" -path "$store/snapshots/*/fs" -prune -o \
		\( -name 'dotdot-1up' -o -name 'pwned*' -o -name 'x-*' -o -name 'victim' -o \
		-name 'through-*' -o -name 'stolen*' \) -print)
	[ -z "$stray" ] || fail "hostile:$tag wrote outside its snapshot: $stray"
	[ "$(stat -c %h "$T/victim/secret")" = 1 ] || fail "hostile:$tag hardlinked $T/victim/secret"
	[ "$(stat -c %h "$SENT/secret")" = 1 ] || fail "hostile:$tag hardlinked $SENT/secret"
	if [ "$RC" = 0 ] && [ "$tag" = dotdot ]; then
		# contained ("clamp"): the tree must be what umoci made of it
		mapfile -t snaps < <(inspect_snapshots "$REGISTRY/hostile:$tag" "$store")
		mount_chain "$T/mnt/$tag" "${snaps[@]}"
		# the layer has no entries for these parents: their mtimes are the
		# unpackers' own choice (umoci: the time of the unpack)
		"$PY" "$TREECMP" --no-mtime tmp --no-mtime "${SENT#/}" --no-mtime victim \
			"$T/ref-dotdot/rootfs" "$T/mnt/$tag" >"$T/treecmp.out" 2>&1 || {
			cat "$T/treecmp.out" >&2
			fail "hostile:dotdot: the contained tree differs from umoci's"
		}
		umount "$T/mnt/$tag"
		log "hostile:$tag contained"
	elif [ "$RC" = 0 ]; then
		log "hostile:$tag pulled, nothing written outside"
	else
		[ "$RC" = 1 ] || fail "hostile:$tag: exit $RC"
		assert_clean "$store" 1 "hostile:$tag"
		log "hostile:$tag refused: $msg"
	fi
done

# ---- unknown tag, unknown repository, invalid references, schema1 --------------------

store=$T/stores/errors
for ref in "$REGISTRY/features:no-such-tag" "$REGISTRY/no/such/repo:v1"; do
	imgfs_run "$store" pull "$ref"
	[ "$RC" = 1 ] || fail "pull $ref: exit $RC, wanted 1"
	grep -qF "$ref" "$T/err" || fail "pull $ref: error does not name the reference: $(cat "$T/err")"
done
for ref in "$REGISTRY/UPPER:v1" "$REGISTRY/features:v1:v2" "$REGISTRY/features@sha256:abc" \
	"$REGISTRY/features:bad/tag" "$REGISTRY/a//b:v1" "$REGISTRY/features:-v1"; do
	imgfs_run "$store" pull "$ref"
	[ "$RC" = 1 ] || fail "pull $ref: exit $RC, wanted 1"
	grep -qi "invalid reference" "$T/err" || fail "pull $ref: no \"invalid reference\" in: $(cat "$T/err")"
done
imgfs_run "$store" pull
[ "$RC" = 2 ] || fail "pull without a reference: exit $RC, wanted 2 (usage)"

base=$(json_get "$(manifest_of "$F/junk" v1)" 'd["layers"][0]["digest"]')
s1=$("$PY" "$IMGFS_SRC/tests/fixtures/schema1.py" "$REGISTRY_DIR" junk schema1 "$base")
imgfs_run "$store" pull "$REGISTRY/junk:schema1"
[ "$RC" = 1 ] || fail "pull of schema1 by tag: exit $RC, wanted 1"
grep -qiE 'schema ?1|v1\+prettyjws|manifest\.v1' "$T/err" ||
	fail "pull of schema1 by tag: the error does not say schema1 is unsupported: $(cat "$T/err")"
# docker-registry 2.8 re-signs schema1 manifests as it serves them, so the
# bytes never match the digest: refusing by media type or by digest both do.
imgfs_run "$store" pull "$REGISTRY/junk@$s1"
[ "$RC" = 1 ] || fail "pull of schema1 by digest: exit $RC, wanted 1"
grep -qiE 'schema ?1|v1\+prettyjws|manifest\.v1|digest mismatch' "$T/err" ||
	fail "pull of schema1 by digest: unclear error: $(cat "$T/err")"
[ "$(image_count "$store")" = 0 ] || fail "failed pulls recorded an image"

# ---- rm and gc ------------------------------------------------------------------------------

store=$T/stores/gc
imgfs_ok "$store" pull "$REGISTRY/features:v1"
imgfs_ok "$store" pull "$REGISTRY/junk:v1" # shares its base layer with features
nblobs=$(ls "$store/blobs/sha256" | wc -l)
[ "$nblobs" = 9 ] || fail "features + junk: $nblobs blobs, wanted 9 (2 manifests, 2 configs, 4+2-1 layers)"
imgfs_ok "$store" rm "$REGISTRY/features:v1"
cat "$T/out" "$T/err" >"$T/rmgc.out"
imgfs_ok "$store" gc
cat "$T/out" "$T/err" >>"$T/rmgc.out"
grep -qE '[1-9][0-9]* *(bytes|B|KB|KiB|kB|MB|MiB)' "$T/rmgc.out" ||
	fail "rm + gc did not report the bytes freed: $(cat "$T/rmgc.out")"
[ "$(image_count "$store")" = 1 ] || fail "rm of features left $(image_count "$store") images"
for d in $(json_get "$(manifest_of "$F/features" v1)" \
	'" ".join([d["config"]["digest"][7:]] + [l["digest"][7:] for l in d["layers"][1:]])'); do
	[ ! -e "$store/blobs/sha256/$d" ] || fail "gc kept blob $d that only features used"
done
for d in $(json_get "$(manifest_of "$F/junk" v1)" \
	'" ".join([d["config"]["digest"][7:]] + [l["digest"][7:] for l in d["layers"]])'); do
	[ -e "$store/blobs/sha256/$d" ] || fail "gc removed blob $d that junk still uses"
done
nsnap=$(find "$store/snapshots" -mindepth 1 -maxdepth 1 -type d | wc -l)
[ "$nsnap" = 2 ] || fail "after rm of features: $nsnap snapshots, wanted junk's 2"
mapfile -t snaps < <(inspect_snapshots "$REGISTRY/junk:v1" "$store")
mount_chain "$T/mnt/gc" "${snaps[@]}"
umoci_unpack "$F/junk" v1 "$T/ref-junk"
"$PY" "$TREECMP" "$T/ref-junk/rootfs" "$T/mnt/gc" >"$T/treecmp.out" 2>&1 ||
	{ cat "$T/treecmp.out" >&2; fail "junk changed after gc"; }
umount "$T/mnt/gc"
imgfs_ok "$store" rm "$REGISTRY/junk:v1"
imgfs_ok "$store" gc
[ -z "$(ls -A "$store/blobs/sha256")" ] || fail "blobs left after removing every image"
[ -z "$(find "$store/snapshots" -mindepth 1 -maxdepth 1)" ] || fail "snapshots left after removing every image"
imgfs_run "$store" rm "$REGISTRY/junk:v1"
[ "$RC" = 1 ] || fail "rm of an absent image: exit $RC, wanted 1"
log "rm + gc: $(tr '\n' ' ' <"$T/rmgc.out")"

# ---- import of a layout skopeo wrote -----------------------------------------------------

skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$REGISTRY/features:v1" \
	"oci:$T/skopeo-layout:v1" >"$T/skopeo.log" 2>&1 || fail "skopeo copy to a layout failed"
store=$T/stores/import
# skopeo names the manifest "v1" only, so imgfs needs a repository for it
imgfs_run "$store" import "$T/skopeo-layout"
[ "$RC" = 0 ] || grep -q -- "--name" "$T/err" || fail "import without --name: exit $RC: $(cat "$T/err")"
imgfs_ok "$store" import --name imported/features "$T/skopeo-layout"
imgfs_ok "$store" images --json
want=$mdig
name=$(json_get "$T/out" '[i["name"] for i in d if (i.get("digest") or i["target"]["digest"]) == "'"$want"'"][0]') ||
	fail "import: no image with digest $want in: $(cat "$T/out")"
mapfile -t snaps < <(inspect_snapshots "$name" "$store")
mount_chain "$T/mnt/import" "${snaps[@]}"
umoci_unpack "$F/features" v1 "$T/ref-features"
"$PY" "$TREECMP" "$T/ref-features/rootfs" "$T/mnt/import" >"$T/treecmp.out" 2>&1 ||
	{ head -n 40 "$T/treecmp.out" >&2; fail "imported features differs from umoci's unpack"; }
umount "$T/mnt/import"
log "import: $name ok"

log "ok"
