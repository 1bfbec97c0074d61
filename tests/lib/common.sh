# SPDX-License-Identifier: Apache-2.0
# Shared helpers for tests/integration/*.sh. Source it first:
#   . "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
# It gives each test a temp dir ($T), an EXIT trap that runs registered
# cleanups in reverse order, and helpers to start a registry, push OCI
# layouts and mount layer chains. See docs/testing.md.

set -euo pipefail

: "${IMGFS_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${IMGFS:=${IMGFS_BUILD:-$IMGFS_SRC/build}/imgfs}"
export IMGFS_SRC IMGFS
PY=/usr/bin/python3
MKIMAGE="$IMGFS_SRC/tests/fixtures/mkimage.py"
TREECMP="$IMGFS_SRC/tests/lib/treecmp.py"
TEST_NAME=$(basename "${0%.sh}")

log() { printf '[%s] %s\n' "$TEST_NAME" "$*" >&2; }

# fail MSG...: print and exit 1 (the EXIT trap cleans up).
fail() {
	printf '[%s] FAIL: %s\n' "$TEST_NAME" "$*" >&2
	exit 1
}

# skip MSG...: exit 77, which ctest reports as skipped.
skip() {
	printf '[%s] skipped: %s\n' "$TEST_NAME" "$*" >&2
	exit 77
}

# need CMD...: skip the test unless every command exists.
need() {
	local c pkg
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 && continue
		case $c in
		docker-registry) pkg=docker-registry ;;
		skopeo) pkg=skopeo ;;
		umoci) pkg=umoci ;;
		zstd) pkg=zstd ;;
		getfattr | setfattr) pkg=attr ;;
		getfacl | setfacl) pkg=acl ;;
		python3 | /usr/bin/python3) pkg=python3 ;;
		busybox | /bin/busybox) pkg=busybox-static ;;
		curl) pkg=curl ;;
		*) pkg=$c ;;
		esac
		skip "$c missing — apt-get install $pkg"
	done
}

need_root() {
	[ "$(id -u)" = 0 ] || skip "needs root (overlay mounts, devices, ownership)"
}

# ---- temp dir and cleanups -------------------------------------------------

T=$(mktemp -d "/tmp/imgfs-${TEST_NAME}.XXXXXX")
export T
_CLEANUPS=()

# on_exit CMD...: register a cleanup; they run in reverse order at exit.
on_exit() {
	local q
	printf -v q '%q ' "$@"
	_CLEANUPS+=("$q")
}

_run_cleanups() {
	local rc=$? i
	set +e
	for ((i = ${#_CLEANUPS[@]} - 1; i >= 0; i--)); do
		eval "${_CLEANUPS[i]}" >/dev/null 2>&1
	done
	if [ -n "${KEEP_TMP:-}" ]; then
		log "kept $T"
	elif findmnt -rn -o TARGET | grep -q "^$T/"; then
		# never delete through a mount that failed to come down
		log "mounts remain under $T; not removing it"
	else
		rm -rf "$T"
	fi
	exit "$rc"
}
trap _run_cleanups EXIT
trap 'exit 130' INT TERM

# ---- imgfs -----------------------------------------------------------------

need_imgfs() {
	[ -x "$IMGFS" ] || skip "imgfs binary not built ($IMGFS)"
}

# imgfs_run STORE ARGS...: run imgfs on STORE, stdout to $T/out, stderr to
# $T/err, status in $RC. Never fails by itself.
imgfs_run() {
	local store=$1
	shift
	set +e
	"$IMGFS" --store "$store" "$@" >"$T/out" 2>"$T/err"
	RC=$?
	set -e
	return 0
}

# imgfs_ok STORE ARGS...: like imgfs_run, but fail the test unless exit 0.
imgfs_ok() {
	imgfs_run "$@"
	[ "$RC" = 0 ] || fail "imgfs $* exited $RC: $(tail -n 5 "$T/err")"
}

# ---- registry --------------------------------------------------------------

free_port() {
	"$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_registry: Debian's docker-registry on 127.0.0.1 with storage in
# $T/registry. Exports REGISTRY (host:port), REGISTRY_DIR (its storage root)
# and REGISTRY_LOG (its output, with one access-log line per request).
start_registry() {
	need docker-registry curl
	local dir=$T/registry port try pid
	mkdir -p "$dir/storage"
	for try in 1 2 3; do
		port=$(free_port)
		cat >"$dir/config.yml" <<-EOF
			version: 0.1
			log:
			  level: info
			  formatter: text
			  accesslog:
			    disabled: false
			storage:
			  filesystem:
			    rootdirectory: $dir/storage
			  delete:
			    enabled: true
			  maintenance:
			    uploadpurging:
			      enabled: false
			http:
			  addr: 127.0.0.1:$port
			  headers:
			    X-Content-Type-Options: [nosniff]
		EOF
		: >"$dir/log"
		docker-registry serve "$dir/config.yml" >>"$dir/log" 2>&1 &
		pid=$!
		on_exit kill "$pid"
		local i
		for ((i = 0; i < 200; i++)); do
			if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then
				export REGISTRY=127.0.0.1:$port REGISTRY_DIR=$dir/storage
				export REGISTRY_LOG=$dir/log
				log "registry at $REGISTRY (pid $pid)"
				return 0
			fi
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.05
		done
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	fail "docker-registry did not come up: $(tail -n 5 "$dir/log")"
}

# mark_log: blob_gets counts from here on.
LOG_MARK=0
mark_log() {
	LOG_MARK=$(wc -l <"$REGISTRY_LOG")
}

# blob_gets [DIGEST]: how many blob GETs (of one digest if given) the
# registry has answered since the last mark_log.
blob_gets() {
	local d=${1:-}
	local pat='"GET /v2/[^ ]*/blobs/sha256:'${d#sha256:}
	tail -n +$((LOG_MARK + 1)) "$REGISTRY_LOG" | grep -c -- "$pat" || true
}

# registry_blob DIGEST: path of a blob's data file in the registry storage.
registry_blob() {
	local hex=${1#sha256:}
	echo "$REGISTRY_DIR/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"
}

# ---- fixtures --------------------------------------------------------------

# build_fixtures [NAME...]: build OCI layouts into $T/fixtures/<name>.
build_fixtures() {
	need /usr/bin/python3 /bin/busybox zstd
	mkdir -p "$T/fixtures"
	"$PY" "$MKIMAGE" "$T/fixtures" "$@" || fail "mkimage.py $* failed"
}

# push_layout LAYOUT TAG REPO[:DESTTAG] [skopeo args...]: push one tag of an
# OCI layout (every platform of an index) to $REGISTRY/REPO. Without
# --format, digests are kept as they are (skopeo would otherwise gzip
# uncompressed layers on the way).
push_layout() {
	need skopeo
	local layout=$1 tag=$2 dest=$3 keep=--preserve-digests
	shift 3
	case $dest in *:*) ;; *) dest=$dest:$tag ;; esac
	case " $* " in *" --format "*) keep= ;; esac
	skopeo --insecure-policy copy -q --all --dest-tls-verify=false $keep "$@" \
		"oci:$layout:$tag" "docker://$REGISTRY/$dest" >"$T/skopeo.log" 2>&1 ||
		fail "skopeo push of $layout:$tag to $dest failed: $(tail -n 5 "$T/skopeo.log")"
}

# umoci_unpack LAYOUT TAG BUNDLE: the reference unpack (rootfs in BUNDLE/rootfs).
umoci_unpack() {
	need umoci
	umoci unpack --image "$1:$2" "$3" >"$T/umoci.log" 2>&1 ||
		fail "umoci unpack $1:$2 failed: $(tail -n 5 "$T/umoci.log")"
}

# ---- mounts ----------------------------------------------------------------

# mount_chain DIR SNAPSHOT...: mount the chain read-only at DIR, snapshots
# given bottom layer first. More than one: kernel overlay with
# lowerdir=top:...:bottom; one: a read-only bind mount. Unmounted at exit.
mount_chain() {
	local dir=$1 lower="" s
	shift
	[ $# -ge 1 ] || fail "mount_chain: no snapshots"
	mkdir -p "$dir"
	if [ $# = 1 ]; then
		mount --bind "$1" "$dir" || fail "bind mount of $1 failed"
		on_exit umount "$dir"
		mount -o remount,bind,ro "$dir" || fail "read-only remount of $dir failed"
		return 0
	fi
	for s in "$@"; do
		lower=$s${lower:+:$lower}
	done
	if ! mount -t overlay overlay -o "ro,lowerdir=$lower" "$dir" 2>"$T/mount.err"; then
		fail "overlay mount of ${#} layers at $dir failed: $(cat "$T/mount.err")"
	fi
	on_exit umount "$dir"
}

# inspect_snapshots REF STORE: print the image's snapshot dirs, bottom first,
# one a line (from imgfs inspect --json).
inspect_snapshots() {
	imgfs_ok "$2" inspect --json "$1"
	"$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
for l in d["layers"]:
    print(l["snapshot"])
' "$T/out" || fail "imgfs inspect --json $1: no layers[].snapshot in: $(head -c 300 "$T/out")"
}

# tree_hash DIR: one line per entry (path, type, mode, owner, size, mtime,
# content hash), hashed: changes whenever anything under DIR changes.
tree_hash() {
	if [ ! -e "$1" ]; then
		echo absent
		return 0
	fi
	(cd "$1" && find . -printf '%p %y %m %U:%G %s %T@ %n %l\n' | LC_ALL=C sort &&
		find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum) | sha256sum |
		cut -d' ' -f1
}
