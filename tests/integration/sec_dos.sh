#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# One slow pull must not freeze the mount (issue 9, item 5). A "black hole"
# registry accepts connections and never answers; 100 lookups under pull/
# wait for it, half by root, half by uid 65534 (-o pull=all, no per-user
# limit) on an allow_other mount. Then, while they wait:
# lookups of different names in that directory reach the daemon in
# parallel (all 100 pulls run), root's lookups of an image already in the
# store answer, another name in the same directory answers, a program
# waiting on such a lookup gets EINTR from SIGINT and dies from SIGKILL at
# once (not state D), and every stalled pull fails with ETIMEDOUT after the
# configured connect-timeout, with the reason in .imgfs/status.
# Run over both transports (sec_dos_devfuse: -o no_uring).
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/fs_lib.bash"

need_root
need_imgfs
need_fuse
need docker-registry skopeo curl setpriv
start_registry
build_fixtures features
push_layout "$T/fixtures/features" v1 lab/features

NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
TIMEOUT_S=15 # connect-timeout: long enough for the checks made meanwhile
N=100

# the stored image
S=$T/store M=$T/mnt
"$IMGFS" --store "$S" pull "$REGISTRY/lab/features:v1" >/dev/null 2>"$T/err" ||
	fail "pull into the store: $(cat "$T/err")"

# the black hole
"$PY" "$IMGFS_SRC/tests/lib/blackhole.py" --ready "$T/bh.addr" >"$T/bh.log" 2>&1 &
BHPID=$!
on_exit kill "$BHPID"
for ((i = 0; i < 200; i++)); do [ -s "$T/bh.addr" ] && break; sleep 0.05; done
[ -s "$T/bh.addr" ] || fail "the black hole did not come up: $(cat "$T/bh.log")"
BH=$(cat "$T/bh.addr")
# nothing answers there: a plain request times out
curl -s -m 2 "http://$BH/v2/" && fail "the black hole answered"

cat >"$T/config.json" <<EOF
{"connect-timeout": $TIMEOUT_S, "stall-timeout": $TIMEOUT_S, "max-download-attempts": 1}
EOF
opts="allow_other,config=$T/config.json"
# other users may pull only where the mount allows it (-o pull=, when
# this imgfs has that option; and without a limit on their pulls, the
# worst case); without it, the lookups run as root
AS=()
if "$IMGFS" mount --help 2>&1 | grep -q "pull=root|all|none"; then
	opts=$opts,pull=all,pull_max_per_user=0
	AS=("${NOBODY[@]}")
else
	log "no -o pull= in this imgfs: the $N lookups run as root"
fi
chmod 711 "$T"
imgfs_mount "$S" "$M" "$opts"
D=$M/pull/$BH/dos

# gone PID: not running (exited, or a zombie waiting to be reaped)
gone() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
	[ -z "$st" ] || [ "$st" = Z ] || [ "$st" = X ]
}
# answers SECONDS WHAT CMD...: CMD ends within SECONDS (it runs in the
# background: a lookup stuck in the kernel cannot be timed out otherwise)
answers() {
	local secs=$1 what=$2 pid i
	shift 2
	"$@" >"$T/answer.out" 2>&1 &
	pid=$!
	for ((i = 0; i < secs * 20; i++)); do
		gone "$pid" && break
		sleep 0.05
	done
	gone "$pid" || fail "$what did not answer within $secs s ($(awk '{print "state " $3}' "/proc/$pid/stat"))"
	wait "$pid" || fail "$what failed: $(cat "$T/answer.out")"
}
# pulls_running: the count .imgfs/status shows
pulls_running() {
	sed -n 's/^pulls in progress: //p' "$M/.imgfs/status"
}

# --- 100 lookups of different names in one directory, all waiting: half
# by root, half by the other user
t0=$(date +%s)
pids=()
for i in $(seq "$N"); do
	if ((i % 2)); then
		stat "$D/x$i:v1" >"$T/x.$i" 2>&1 &
	else
		"${AS[@]}" stat "$D/x$i:v1" >"$T/x.$i" 2>&1 &
	fi
	pids+=($!)
done
for ((i = 0; i < 200; i++)); do
	[ "$(pulls_running)" -ge "$N" ] && break
	sleep 0.05
done
[ "$(pulls_running)" -ge "$N" ] ||
	fail "lookups in one directory do not run in parallel: $(pulls_running) of $N pulls started after 10 s"

# --- meanwhile, everything else answers
answers 5 "root's lookup of a stored image under pull/" stat "$M/pull/$REGISTRY/lab/features:v1"
answers 5 "root's read of a stored image" cat "$M/$REGISTRY/lab/features/v1/digest"
answers 5 "a listing of the stored image's rootfs" ls "$M/$REGISTRY/lab/features/v1/rootfs/bin"
answers 5 "another name in the same directory" stat "$D/sub"
[ -d "$D/sub" ] || fail "$D/sub (a partial reference) is not a directory"
answers 5 "an invalid reference in the same directory" sh -c "! stat '$D/BAD:UPPER'"
answers 5 ".imgfs/status" cat "$M/.imgfs/status"

# --- a waiter that handles SIGINT gets EINTR at once
cat >"$T/waiter.py" <<'EOF'
import ctypes, errno, os, signal, sys, time
signal.signal(signal.SIGINT, lambda *a: None)
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(256)
print("waiting", flush=True)
t = time.monotonic()
rc = libc.stat(sys.argv[1].encode(), buf)
err = ctypes.get_errno()
print("rc", rc, errno.errorcode.get(err, err) if rc else "", "after %.2f s" % (time.monotonic() - t))
EOF
"${AS[@]}" "$PY" "$T/waiter.py" "$D/py:v1" >"$T/waiter.out" 2>&1 &
WPID=$!
for ((i = 0; i < 200; i++)); do grep -q "^pull .*dos/py:v1" "$M/.imgfs/status" && break; sleep 0.05; done
grep -q "^pull .*dos/py:v1" "$M/.imgfs/status" || fail "the Python waiter's pull did not start: $(cat "$T/waiter.out")"
sleep 0.2 # its LOOKUP is in the daemon with its pull
kill -INT "$WPID"
for ((i = 0; i < 40; i++)); do gone "$WPID" && break; sleep 0.05; done
gone "$WPID" || fail "a waiter did not return within 2 s of SIGINT (state $(awk '{print $3}' "/proc/$WPID/stat"))"
wait "$WPID" || fail "the Python waiter failed: $(cat "$T/waiter.out")"
grep -q "^rc -1 EINTR" "$T/waiter.out" || fail "SIGINT to a waiter: $(cat "$T/waiter.out"), want EINTR"

# --- a SIGKILLed waiter is gone at once
"${AS[@]}" stat "$D/killme:v1" >/dev/null 2>&1 &
KPID=$!
for ((i = 0; i < 200; i++)); do grep -q "^pull .*dos/killme:v1" "$M/.imgfs/status" && break; sleep 0.05; done
grep -q "^pull .*dos/killme:v1" "$M/.imgfs/status" || fail "the killed waiter's pull did not start"
sleep 0.2
kill -KILL "$KPID"
for ((i = 0; i < 40; i++)); do gone "$KPID" && break; sleep 0.05; done
gone "$KPID" || fail "a SIGKILLed waiter is still there after 2 s (state $(awk '{print $3}' "/proc/$KPID/stat"))"
# the interrupted lookups' pulls go on (others may be waiting for them)
grep -q "^pull .*dos/py:v1" "$M/.imgfs/status" || fail "the interrupted lookup's pull stopped"

# --- the stalled pulls time out as configured
for i in "${!pids[@]}"; do
	for ((k = 0; k < (TIMEOUT_S + 60) * 10; k++)); do
		gone "${pids[i]}" && break
		sleep 0.1
	done
	gone "${pids[i]}" || fail "lookup $((i + 1)) still waits $((TIMEOUT_S + 60)) s after it began"
	wait "${pids[i]}" && fail "lookup $((i + 1)) at the black hole succeeded: $(cat "$T/x.$((i + 1))")"
	grep -q "Connection timed out" "$T/x.$((i + 1))" ||
		fail "lookup $((i + 1)) at the black hole: $(cat "$T/x.$((i + 1))"), want ETIMEDOUT"
done
el=$(($(date +%s) - t0))
[ "$el" -ge $((TIMEOUT_S - 1)) ] || fail "the lookups failed after $el s, before the $TIMEOUT_S s timeout"
grep -q "^failed .*dos/x[0-9]*:v1 (Connection timed out[^)]*): .*$BH.*within $TIMEOUT_S s" "$M/.imgfs/status" ||
	fail "status does not show the timeouts: $(cat "$M/.imgfs/status")"
[ "$(pulls_running)" = 0 ] || sleep 3
[ "$(pulls_running)" = 0 ] || fail "pulls still running: $(cat "$M/.imgfs/status")"

# --- at most 256 lookups by one user other than root wait for pulls (the
# daemon's memory and io_uring entries); more answer EAGAIN at once, and
# root's lookups never count
if [ "${#AS[@]}" -gt 0 ]; then
	pids=()
	for i in $(seq 256); do
		"${NOBODY[@]}" stat "$D/y$i:v1" >/dev/null 2>&1 &
		pids+=($!)
	done
	for ((i = 0; i < 400; i++)); do
		[ "$(pulls_running)" -ge 256 ] && break
		sleep 0.05
	done
	[ "$(pulls_running)" -ge 256 ] || fail "256 lookups by uid 65534: $(pulls_running) pulls after 20 s"
	answers 5 "uid 65534's 257th waiting lookup" sh -c "! ${NOBODY[*]} stat '$D/y257:v1' 2>'$T/y257'"
	grep -q "Resource temporarily unavailable" "$T/y257" || fail "the 257th: $(cat "$T/y257"), want EAGAIN"
	stat "$D/rootmore:v1" >/dev/null 2>&1 &
	RPID=$!
	for ((i = 0; i < 100; i++)); do grep -q "^pull .*dos/rootmore:v1" "$M/.imgfs/status" && break; sleep 0.05; done
	grep -q "^pull .*dos/rootmore:v1" "$M/.imgfs/status" || fail "root's lookup did not wait for its pull"
	kill -TERM "$RPID" # (background jobs ignore SIGINT)
	for ((i = 0; i < 40; i++)); do gone "$RPID" && break; sleep 0.05; done
	gone "$RPID" || fail "root's lookup did not end within 2 s of SIGTERM"
	for pid in "${pids[@]}"; do
		for ((k = 0; k < (TIMEOUT_S + 60) * 10; k++)); do gone "$pid" && break; sleep 0.1; done
		gone "$pid" || fail "a lookup of the 256 still waits $((TIMEOUT_S + 60)) s on"
		wait "$pid" || true
	done
	wait "$RPID" || true
fi

# --- and the mount still serves
answers 5 "a lookup after the storm" ls "$M/$REGISTRY/lab/features/v1/rootfs/etc"
imgfs_unmount "$M" "$MOUNT_PID" || fail "the daemon did not exit after umount"
grep -q "Sanitizer\|runtime error" "$MOUNT_LOG" && fail "the daemon: $(grep -A5 "Sanitizer\|runtime error" "$MOUNT_LOG")"
log "ok"
