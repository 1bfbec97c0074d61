#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Pull every fixture image from a real registry and check that the layer
# chain imgfs unpacked, mounted as a kernel overlay, is the same tree (bytes,
# modes, owners, mtimes, xattrs, devices, hardlinks) as umoci's unpack of the
# same OCI layout. Also: `imgfs images`, a re-pull that fetches nothing, a
# shared layer fetched once, --platform on a multi-arch index, pull by digest.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"

need_root
need_imgfs
need docker-registry skopeo umoci zstd curl
start_registry
build_fixtures
F=$T/fixtures

push_layout "$F/features" v1 features
push_layout "$F/features" v1 features-v2s2:v1 --format v2s2
push_layout "$F/multiarch" v1 multiarch
push_layout "$F/zstd" v1 zstd
push_layout "$F/uncompressed" v1 uncompressed
push_layout "$F/many" v1 many
push_layout "$F/junk" v1 junk

ACCEPT="application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json"
ACCEPT+=",application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT+=",application/vnd.docker.distribution.manifest.v2+json"

# registry_digest REPO REF: the digest the registry serves for REPO:REF.
registry_digest() {
	curl -fsSI -H "Accept: $ACCEPT" "http://$REGISTRY/v2/$1/manifests/$2" |
		tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p'
}

# layout_digest LAYOUT TAG: the digest of a tag in an OCI layout.
layout_digest() {
	"$PY" -c '
import json, sys
for m in json.load(open(sys.argv[1] + "/index.json"))["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
        print(m["digest"])
' "$1" "$2"
}

# pulled_digest: the digest on the last line of the pull's stdout.
pulled_digest() {
	local last
	last=$(tail -n 1 "$T/out")
	case $last in
	"Digest: sha256:"*) echo "${last#Digest: }" ;;
	*) fail "pull's last stdout line is not \"Digest: sha256:<hex>\": \"$last\"" ;;
	esac
}

# json_get FILE EXPR: evaluate a Python expression over the JSON in FILE (as d).
json_get() {
	"$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

REFS=$T/refs
mkdir -p "$REFS"
# reference LAYOUT TAG: umoci's unpack of LAYOUT:TAG (made once); prints its rootfs.
reference() {
	local b=$REFS/$(basename "$1")-$2
	[ -d "$b/rootfs" ] || umoci_unpack "$1" "$2" "$b"
	echo "$b/rootfs"
}

# check_tree STORE REF LAYOUT TAG: mount REF's chain and compare with umoci.
N=0
check_tree() {
	local store=$1 ref=$2 ref_root mnt snaps nlayers
	N=$((N + 1))
	mnt=$T/mnt/$N
	mapfile -t snaps < <(inspect_snapshots "$ref" "$store")
	nlayers=$(json_get "$T/out" 'len(d["layers"])')
	[ "${#snaps[@]}" = "$nlayers" ] && [ "$nlayers" -gt 0 ] ||
		fail "$ref: inspect lists $nlayers layers, ${#snaps[@]} snapshots"
	for s in "${snaps[@]}"; do
		case $s in
		"$store"/snapshots/*) [ -d "$s" ] || fail "$ref: snapshot $s does not exist" ;;
		*) fail "$ref: snapshot $s is not under $store/snapshots" ;;
		esac
	done
	mount_chain "$mnt" "${snaps[@]}"
	ref_root=$(reference "$3" "$4")
	"$PY" "$TREECMP" "$ref_root" "$mnt" >"$T/treecmp.out" 2>&1 || {
		head -n 60 "$T/treecmp.out" >&2
		fail "$ref: the unpacked tree differs from umoci's unpack of $3:$4"
	}
	log "$ref: $(tail -n 1 "$T/treecmp.out" | cut -d'(' -f1)"
	umount "$mnt"
}

# pull_check STORE REF WANT_DIGEST [pull args]: pull and check the digest line.
pull_check() {
	local store=$1 ref=$2 want=$3 got
	shift 3
	imgfs_ok "$store" pull "$@" "$ref"
	got=$(pulled_digest)
	[ "$got" = "$want" ] || fail "pull $ref: Digest $got, the registry serves $want"
}

# ---- every fixture into its own empty store -----------------------------------

for spec in features:features:v1 features-v2s2:features:v1 zstd:zstd:ref-gzip \
	uncompressed:uncompressed:v1 many:many:v1 junk:junk:v1; do
	IFS=: read -r repo layout tag <<<"$spec"
	store=$T/stores/$repo
	ref=$REGISTRY/$repo:v1
	want=$(registry_digest "$repo" v1)
	[ -n "$want" ] || fail "registry has no digest for $repo:v1"
	if [ "$repo" != features-v2s2 ]; then
		[ "$want" = "$(layout_digest "$F/$layout" v1)" ] ||
			fail "skopeo changed the manifest of $layout (registry: $want)"
	fi
	pull_check "$store" "$ref" "$want"
	check_tree "$store" "$ref" "$F/$layout" "$tag"
done

# the layer media types the store recorded are those of each fixture
imgfs_ok "$T/stores/zstd" inspect --json "$REGISTRY/zstd:v1"
[ "$(json_get "$T/out" 'sorted(set(l["mediaType"] for l in d["layers"][1:]))')" = \
	"['application/vnd.oci.image.layer.v1.tar+zstd']" ] || fail "zstd image: layer media types wrong"
imgfs_ok "$T/stores/features-v2s2" inspect --json "$REGISTRY/features-v2s2:v1"
[ "$(json_get "$T/out" 'd["mediaType"]')" = application/vnd.docker.distribution.manifest.v2+json ] ||
	fail "features-v2s2: mediaType is not Docker schema2: $(json_get "$T/out" 'd["mediaType"]')"

# ---- multi-arch index and --platform --------------------------------------------

store=$T/stores/multiarch
idx_digest=$(registry_digest multiarch v1)
for spec in ":amd64:linux/amd64" "linux/amd64:amd64:linux/amd64" "linux/arm64:arm64:linux/arm64/v8" \
	"linux/arm64/v8:arm64:linux/arm64/v8" "linux/arm/v7:armv7:linux/arm/v7"; do
	IFS=: read -r plat tag arch <<<"$spec"
	want=$(layout_digest "$F/multiarch" "$tag")
	rm -rf "$store"
	if [ -n "$plat" ]; then
		pull_check "$store" "$REGISTRY/multiarch:v1" "$want" --platform "$plat"
	else
		pull_check "$store" "$REGISTRY/multiarch:v1" "$want"
	fi
	imgfs_ok "$store" inspect --json "$REGISTRY/multiarch:v1"
	[ "$(json_get "$T/out" 'd["digest"]')" = "$want" ] || fail "multiarch ${plat:-default}: inspect digest"
	[ "$(json_get "$T/out" '(d.get("index") or {}).get("digest")')" = "$idx_digest" ] ||
		fail "multiarch ${plat:-default}: inspect .index.digest is not the index $idx_digest"
	mapfile -t snaps < <(inspect_snapshots "$REGISTRY/multiarch:v1" "$store")
	mount_chain "$T/mnt/arch" "${snaps[@]}"
	got=$(cat "$T/mnt/arch/etc/imgfs-arch")
	umount "$T/mnt/arch"
	[ "$got" = "$arch" ] || fail "--platform ${plat:-<default>} gave the $got image, wanted $arch"
	check_tree "$store" "$REGISTRY/multiarch:v1" "$F/multiarch" "$tag"
done

imgfs_run "$T/stores/nomatch" pull --platform linux/s390x "$REGISTRY/multiarch:v1"
[ "$RC" = 1 ] || fail "pull --platform linux/s390x: exit $RC, wanted 1"
for p in linux/amd64 linux/arm64/v8 linux/arm/v7 linux/s390x; do
	grep -qF "$p" "$T/err" || fail "no-match error does not name $p: $(cat "$T/err")"
done
imgfs_run "$T/stores/nomatch" images --json
[ "$RC" != 0 ] || [ "$(json_get "$T/out" 'len(d)')" = 0 ] || fail "a failed pull left an image"

# ---- one store: shared layers, re-pull, images, pull by digest -----------------

store=$T/stores/shared
feat=$(registry_digest features v1)
many=$(registry_digest many v1)
base=$(json_get "$F/features/blobs/sha256/${feat#sha256:}" 'd["layers"][0]["digest"]')
[ "$base" = "$(json_get "$F/many/blobs/sha256/${many#sha256:}" 'd["layers"][0]["digest"]')" ] ||
	fail "fixtures: features and many do not share their base layer"

mark_log
pull_check "$store" "$REGISTRY/features:v1" "$feat"
for d in $(json_get "$F/features/blobs/sha256/${feat#sha256:}" \
	'" ".join([d["config"]["digest"]] + [l["digest"] for l in d["layers"]])'); do
	n=$(blob_gets "$d")
	[ "$n" = 1 ] || fail "first pull of features fetched blob $d $n times"
done
base_gets=$(blob_gets "$base")
pull_check "$store" "$REGISTRY/many:v1" "$many"
[ "$(blob_gets "$base")" = "$base_gets" ] ||
	fail "pulling many fetched the base layer $base again (shared with features)"
after=$(blob_gets)
log "features + many: $after blob GETs"

mark_log
pull_check "$store" "$REGISTRY/features:v1" "$feat"
[ "$(blob_gets)" = 0 ] || fail "re-pull of features fetched $(blob_gets) blobs"
# an unchanged tag costs one HEAD and no manifest GET (Docker Hub counts GETs as pulls)
since=$(tail -n +$((LOG_MARK + 1)) "$REGISTRY_LOG")
[ "$(grep -c '"GET /v2/features/manifests/' <<<"$since" || true)" = 0 ] ||
	fail "re-pull of an unchanged tag GETs its manifest: $(grep manifests <<<"$since")"
[ "$(grep -c '"HEAD /v2/features/manifests/v1 ' <<<"$since" || true)" = 1 ] ||
	fail "re-pull of an unchanged tag: not one HEAD: $(grep manifests <<<"$since")"
grep -q "already present" "$T/err" || fail "re-pull does not say the layers are present: $(cat "$T/err")"
# a tag that moved is pulled again (the HEAD says so)
push_layout "$F/features" v1 moving:v1
pull_check "$store" "$REGISTRY/moving:v1" "$feat"
push_layout "$F/many" v1 moving:v1
pull_check "$store" "$REGISTRY/moving:v1" "$many"
imgfs_ok "$store" inspect --json "$REGISTRY/moving:v1"
[ "$(json_get "$T/out" 'd["digest"]')" = "$many" ] || fail "moving:v1 still records the old image"
mark_log
after=0

pull_check "$store" "$REGISTRY/features@$feat" "$feat"
[ "$(blob_gets)" = "$after" ] || fail "pull by digest of a present image fetched blobs"

imgfs_ok "$store" images
for want in "$REGISTRY/features:v1 *sha256:${feat:7:12}" "$REGISTRY/many:v1 *sha256:${many:7:12}"; do
	grep -q -- "^$want" "$T/out" || fail "imgfs images has no line \"$want\": $(cat "$T/out")"
done
head -n 1 "$T/out" | grep -q 'NAME.*DIGEST.*SIZE.*CREATED' || fail "imgfs images: no header line"
imgfs_ok "$store" images --json
cp "$T/out" "$T/images.json"
got=$(json_get "$T/images.json" 'sorted(set(i.get("digest") or i["target"]["digest"] for i in d))')
want=$("$PY" -c 'import sys; print(sorted(set(sys.argv[1:])))' "$feat" "$many")
[ "$got" = "$want" ] || fail "imgfs images --json digests $got, wanted $want"
names=$(json_get "$T/images.json" '" ".join(sorted(i["name"] for i in d))')
for want in "$REGISTRY/features:v1" "$REGISTRY/many:v1"; do
	case " $names " in *" $want "*) ;; *) fail "images --json names [$names] lack $want" ;; esac
done
check_tree "$store" "$REGISTRY/features:v1" "$F/features" v1
check_tree "$store" "$REGISTRY/many:v1" "$F/many" v1

# a digest pull into an empty store, with the digest of the arm/v7 image
want=$(layout_digest "$F/multiarch" armv7)
pull_check "$T/stores/bydigest" "$REGISTRY/multiarch@$want" "$want"
check_tree "$T/stores/bydigest" "$REGISTRY/multiarch@$want" "$F/multiarch" armv7

# ---- two imgfs processes pulling into one store at once ----------------------

store=$T/stores/concurrent
mark_log
set +e
"$IMGFS" --store "$store" pull -q "$REGISTRY/many:v1" >"$T/c1.out" 2>"$T/c1.err" &
p1=$!
"$IMGFS" --store "$store" pull -q "$REGISTRY/features:v1" >"$T/c2.out" 2>"$T/c2.err" &
p2=$!
"$IMGFS" --store "$store" pull -q "$REGISTRY/many:v1" >"$T/c3.out" 2>"$T/c3.err"
r3=$?
wait $p1
r1=$?
wait $p2
r2=$?
set -e
[ "$r1$r2$r3" = 000 ] || fail "concurrent pulls exited $r1 $r2 $r3: $(cat "$T"/c[123].err)"
for d in $(json_get "$F/many/blobs/sha256/${many#sha256:}" '" ".join(l["digest"] for l in d["layers"])'); do
	n=$(blob_gets "$d")
	[ "$n" = 1 ] || fail "three concurrent pulls fetched layer $d $n times (wanted once)"
done
imgfs_ok "$store" images --json
[ "$(json_get "$T/out" 'len(d)')" = 2 ] || fail "concurrent pulls: images lists $(json_get "$T/out" 'len(d)') images"
check_tree "$store" "$REGISTRY/many:v1" "$F/many" v1
check_tree "$store" "$REGISTRY/features:v1" "$F/features" v1
[ -z "$(ls "$store/snapshots" | grep '^tmp-')" ] || fail "concurrent pulls left tmp- snapshot dirs"
snaps=$(ls "$store/snapshots" | wc -l)
want=$(json_get "$F/many/blobs/sha256/${many#sha256:}" 'len(d["layers"])')
want=$((want + $(json_get "$F/features/blobs/sha256/${feat#sha256:}" 'len(d["layers"])') - 1))
[ "$snaps" = "$want" ] || fail "concurrent pulls: $snaps snapshot dirs, wanted $want (one per chain)"

log "ok"
