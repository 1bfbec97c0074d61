#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# fd exhaustion (issue 9, item 6): the daemon keeps a bounded number of fds
# however many inodes the kernel remembers. Started with `ulimit -n 256`, it
# serves walks of rootfs/, layers/<n>/ and snapshots/ of an image with far more
# entries than that (as root and as uid 65534), to files kept open by a
# reader, and through renames and unlinks in rootfs/ while the inodes are
# cached: every lookup succeeds, every result equals the kernel overlay of the
# same snapshots (and umoci), the daemon's fd count stays under half its
# limit, and it logs once that it closes fds.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/fs_lib.bash"

need_root
need_imgfs
need_fuse
need docker-registry skopeo umoci setpriv sha256sum
start_registry
build_fixtures wide many
push_layout "$T/fixtures/wide" v1 lab/wide
push_layout "$T/fixtures/many" v1 lab/many

LIMIT=256
S=$T/store M=$T/mnt
REF=$REGISTRY/lab/wide:v1
imgfs_ok "$S" pull "$REF"
imgfs_ok "$S" pull "$REGISTRY/lab/many:v1"
imgfs_ok "$S" inspect --json "$REF"
cp "$T/out" "$T/inspect.json"
mapfile -t SNAPS < <("$PY" -c 'import json,sys
for l in json.load(open(sys.argv[1]))["layers"]: print(l["snapshot"])' "$T/inspect.json")
mapfile -t CHAINS < <("$PY" -c 'import json,sys
for l in json.load(open(sys.argv[1]))["layers"]: print(l["chainID"].split(":")[1])' "$T/inspect.json")
NL=${#SNAPS[@]}
[ "$NL" = 3 ] || fail "the wide fixture has $NL layers, want 3"

# references, reachable by uid 65534 too (the store itself may not be): each
# layer's snapshot dir bound read-only, the kernel overlay of each chain, umoci
chmod o+x "$T"
for ((i = 0; i < NL; i++)); do
	mount_chain "$T/ref-layer$i" "${SNAPS[i]}"
	mount_chain "$T/ref-chain$i" "${SNAPS[@]:0:i+1}"
done
umoci_unpack "$T/fixtures/wide" v1 "$T/bundle"

# the daemon, with a low limit set in the shell that starts it
REAL_IMGFS=$IMGFS
IMGFS=$T/imgfs-lowfd
printf '#!/bin/bash\nulimit -n %d || exit 1\nexec %q "$@"\n' "$LIMIT" "$REAL_IMGFS" >"$IMGFS"
chmod +x "$IMGFS"
imgfs_mount "$S" "$M" allow_other
IMGFS=$REAL_IMGFS
PID=$MOUNT_PID
grep -q "^Max open files *$LIMIT *$LIMIT " "/proc/$PID/limits" ||
	fail "the daemon does not run with a limit of $LIMIT fds: $(grep 'Max open files' "/proc/$PID/limits")"
IMG=$M/$REGISTRY/lab/wide/v1
R=$IMG/rootfs
[ -d "$R/w" ] || fail "no rootfs/w in the mounted image: $(cat "$M/.imgfs/status")"

# the daemon's fd count, sampled all along
(
	while kill -0 "$PID" 2>/dev/null; do
		n=$(ls "/proc/$PID/fd" 2>/dev/null | wc -l)
		echo "$n" >>"$T/fdcounts"
		sleep 0.05
	done
) &
SAMPLER=$!
on_exit kill "$SAMPLER"

# listing DIR: one line per entry, and the hash of every file the caller can
# read (as the caller: RUN is empty or a setpriv prefix)
listing() {
	(cd "$1" && $RUN find . -printf '%p %y %m %U:%G %s %l\n' | LC_ALL=C sort &&
		$RUN find . -type f -readable -print0 | LC_ALL=C sort -z | $RUN xargs -0r sha256sum)
}

# walk DIR REFDIR WHAT: find -ls succeeds on DIR, and DIR lists and reads as REFDIR
walk() {
	local dir=$1 ref=$2 what=$3
	$RUN find "$dir" -ls >/dev/null 2>"$T/find.err" || fail "$WHO: find -ls $what: $(head -n 5 "$T/find.err")"
	[ -s "$T/find.err" ] && fail "$WHO: find -ls $what: $(head -n 5 "$T/find.err")"
	listing "$dir" >"$T/got" 2>"$T/got.err" || fail "$WHO: listing $what: $(head -n 5 "$T/got.err")"
	listing "$ref" >"$T/want" 2>/dev/null || fail "$WHO: listing the reference of $what"
	cmp -s "$T/got" "$T/want" || fail "$WHO: $what differs from its reference: $(diff "$T/got" "$T/want" | head -n 8)"
}

walk_all() {
	walk "$R" "$T/ref-chain$((NL - 1))" rootfs/
	for ((i = 0; i < NL; i++)); do
		walk "$IMG/layers/$i" "$T/ref-layer$i" "layers/$i"
		walk "$M/snapshots/${CHAINS[i]}" "$T/ref-chain$i" "snapshots/${CHAINS[i]:0:12}"
	done
}

# --- walks of ~17,000 entries in all, each view remembered by the kernel
WHO=root RUN=
walk_all
"$PY" "$TREECMP" "$R" "$T/bundle/rootfs" >"$T/cmp" 2>&1 ||
	fail "rootfs/ differs from umoci's unpack: $(head -n 20 "$T/cmp")"
WHO="uid 65534" RUN="setpriv --reuid=65534 --regid=65534 --clear-groups"
walk_all
WHO=root RUN=

# --- a reader keeps 600 files open while the daemon closes and reopens their fds
mkdir "$R/tmp/t" || fail "mkdir rootfs/tmp/t"
for i in $(seq 0 99); do echo "tmp file $i" >"$R/tmp/t/f$i"; done
(cd "$R" && find w -type f -path '*/s[0-4]/*') >"$T/files"
(sed -n "1,500s|^|$R/|p" "$T/files" && for i in $(seq 0 99); do echo "$R/tmp/t/f$i"; done) >"$T/open.list"
[ "$(wc -l <"$T/open.list")" = 600 ] || fail "open list has $(wc -l <"$T/open.list") files"
cat >"$T/reader.py" <<'EOF'
import hashlib, os, sys
paths = [l.rstrip("\n") for l in open(sys.argv[1])]
fds = [os.open(p, os.O_RDONLY) for p in paths]
def digest(fd):
    st = os.fstat(fd)
    return hashlib.sha256(os.pread(fd, st.st_size + 1, 0)).hexdigest()
first = [digest(fd) for fd in fds]
print("ready", flush=True)
sys.stdin.readline()
for p, fd, d in zip(paths, fds, first):
    print(p, d, digest(fd))
print("done", flush=True)
EOF
coproc READER { ulimit -n 4096 && exec "$PY" "$T/reader.py" "$T/open.list" 2>&1; }
# bash closes a coproc's fds when it ends: its output is read through copies
exec {RIN}<&"${READER[0]}" {ROUT}>&"${READER[1]}"
read -r -t 120 line <&"$RIN" || fail "the reader did not get ready"
[ "$line" = ready ] || fail "reader: $line"

# --- renames and unlinks in rootfs/tmp while those inodes are cached (and
# their fds closed by the walks in between)
WHO="uid 65534" RUN="setpriv --reuid=65534 --regid=65534 --clear-groups"
walk "$R/w" "$T/ref-chain$((NL - 1))/w" rootfs/w
WHO=root RUN=
mv "$R/tmp/t" "$R/tmp/t2" || fail "rename of tmp/t"
mkdir "$R/tmp/t2/sub" && mv "$R/tmp/t2/f20" "$R/tmp/t2/sub/g20" || fail "rename into a new dir"
for i in $(seq 0 9); do rm "$R/tmp/t2/f$i" || fail "rm tmp/t2/f$i"; done
mv "$R/tmp/t2/f30" "$R/tmp/t2/f31" || fail "rename over tmp/t2/f31"
ln "$R/tmp/t2/f40" "$R/tmp/t2/h40" && rm "$R/tmp/t2/f40" || fail "link and unlink of f40"
mv "$R/tmp/t2/sub" "$R/tmp/sub2" || fail "rename of tmp/t2/sub out of t2"
walk "$R/w" "$T/ref-chain$((NL - 1))/w" rootfs/w
for i in $(seq 10 99); do
	case $i in
	20) f=$R/tmp/sub2/g20 ;;
	30 | 40) continue ;;
	31) f=$R/tmp/t2/f31 want="tmp file 30" ;;
	*) f=$R/tmp/t2/f$i ;;
	esac
	[ "$i" = 31 ] || want="tmp file $i"
	[ "$(cat "$f" 2>&1)" = "$want" ] || fail "$f after the renames: $(cat "$f" 2>&1), want '$want'"
done
[ "$(cat "$R/tmp/t2/h40")" = "tmp file 40" ] || fail "tmp/t2/h40: $(cat "$R/tmp/t2/h40" 2>&1)"
for f in f0 f9 f20 f30 f40 sub; do
	[ ! -e "$R/tmp/t2/$f" ] || fail "tmp/t2/$f still there"
done
echo appended >>"$R/tmp/sub2/g20" || fail "append to a renamed file"
walk "$R/w" "$T/ref-chain$((NL - 1))/w" rootfs/w
[ "$(tail -n 1 "$R/tmp/sub2/g20")" = appended ] || fail "tmp/sub2/g20 after the append: $(cat "$R/tmp/sub2/g20")"

# --- the reader reads its 600 fds again: unlinked, renamed, replaced and all
echo go >&"$ROUT"
: >"$T/reader.out"
while read -r -t 120 line <&"$RIN"; do
	[ "$line" = done ] && break
	echo "$line" >>"$T/reader.out"
done
[ "$line" = done ] || fail "the reader did not finish: $(tail -n 3 "$T/reader.out")"
[ "$(wc -l <"$T/reader.out")" = 600 ] || fail "reader: $(head -n 5 "$T/reader.out")"
sum() { printf "$1" | sha256sum | cut -d' ' -f1; }
while read -r p first again; do
	case $p in
	"$R"/tmp/t/f20) want0=$(sum 'tmp file 20\n') want=$(sum 'tmp file 20\nappended\n') ;;
	"$R"/tmp/t/*) want=$(sum "tmp file ${p##*/f}\\n") want0=$want ;;
	*) want=$(sha256sum <"$T/ref-chain$((NL - 1))/${p#"$R"/}" | cut -d' ' -f1) want0=$want ;;
	esac
	[ "$first" = "$want0" ] || fail "$p read through a kept fd: $first, want $want0"
	[ "$again" = "$want" ] || fail "$p read again through a kept fd: $again, want $want"
done <"$T/reader.out"
exec {RIN}<&- {ROUT}>&-

# --- a last walk of everything, as both users, after all that
rm -r "$R/tmp/t2" "$R/tmp/sub2" || fail "rm -r of the tmp dirs"
walk_all
[ "$(wc -l <"$T/got")" -gt 3000 ] || fail "the walks saw only $(wc -l <"$T/got") lines of snapshots/<top>"
WHO="uid 65534" RUN="setpriv --reuid=65534 --regid=65534 --clear-groups"
walk "$IMG/layers/1" "$T/ref-layer1" "layers/1"
WHO=root RUN=

# --- the daemon held a bounded number of fds, logged once, never ran out
kill "$SAMPLER" 2>/dev/null
wait "$SAMPLER" 2>/dev/null || true
max=$(sort -n "$T/fdcounts" | tail -n 1)
log "daemon fds: at most $max over $(wc -l <"$T/fdcounts") samples (limit $LIMIT)"
[ "$(wc -l <"$T/fdcounts")" -gt 10 ] || fail "too few fd count samples"
[ "$max" -lt $((LIMIT / 2)) ] || fail "the daemon held $max fds (limit $LIMIT)"
grep -q "out of open files" "$MOUNT_LOG" && fail "the daemon ran out of fds: $(grep 'out of open files' "$MOUNT_LOG")"
n=$(grep -c "opened again by name" "$MOUNT_LOG")
[ "$n" = 1 ] || fail "the daemon logged $n times that it closes fds, want once: $(tail -n 5 "$MOUNT_LOG")"

# --- snapshots/ of every chain of a 40-layer image: each overlay of n layers
# holds its n snapshots, but the daemon holds each snapshot once (it held
# n(n+1)/2 = 820 fds for these, and ran out)
imgfs_ok "$S" inspect --json "$REGISTRY/lab/many:v1"
mapfile -t MANY < <("$PY" -c 'import json,sys
for l in json.load(open(sys.argv[1]))["layers"]: print(l["chainID"].split(":")[1])' "$T/out")
[ "${#MANY[@]}" = 40 ] || fail "the many fixture has ${#MANY[@]} layers"
for c in "${MANY[@]}"; do
	setpriv --reuid=65534 --regid=65534 --clear-groups ls "$M/snapshots/$c/bin/busybox" >/dev/null 2>"$T/err" ||
		fail "snapshots/${c:0:12}: $(cat "$T/err")"
done
ls -l "/proc/$PID/fd" >"$T/fds"
dups=$(grep -o 'chain-[0-9a-f]*\.use' "$T/fds" | sort | uniq -d | head -n 3)
[ -z "$dups" ] || fail "the daemon holds snapshots more than once: $dups"
n=$(grep -c 'chain-[0-9a-f]*\.use' "$T/fds" || true)
[ "$n" -le 43 ] || fail "the daemon holds $n snapshots, want at most 43"
log "after snapshots/ of 40 chains: $(wc -l <"$T/fds") fds, $n snapshot holds"
grep -q "out of open files" "$MOUNT_LOG" && fail "the daemon ran out of fds: $(grep 'out of open files' "$MOUNT_LOG")"
log ok
