#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Issue 9, item 2: other users of an allow_other mount must not pull with
# root's credentials. A registry behind htpasswd holds a private image; root's
# auth file (REGISTRY_AUTH_FILE of the daemon) has the password; a second
# registry without auth holds a public image. Both are reached through fault
# proxies, whose logs show every request and whether it carried an
# Authorization header. As uid 65534 (and 65533):
#   - the private registry answers 401 directly;
#   - default mount (pull=root): lookups of the private and of the public image
#     are EACCES at once with no request at all to either registry; what root
#     pulled (with its credentials) is then seen from the store, with no request;
#   - pull=none: root cannot pull either, no request;
#   - pull=all: the public image is pulled anonymously; the private one is EACCES
#     after the registry's 401, every request without Authorization and no
#     credential helper of root's run (root's own pull runs it), even while
#     root's credentialed pull of the same reference runs; the failure shows in
#     .imgfs/status to that user and root, not to uid 65533; a fifth pull while
#     four run is EAGAIN at once;
#   - pull=all,pull_creds=shared: the private image pulls;
#   - pull_max_size: a larger image is EFBIG before any blob GET; root is not bound.
. "${IMGFS_SRC:-$(dirname "$0")/../..}/tests/lib/common.sh"
. "$IMGFS_SRC/tests/integration/fs_lib.bash"
. "$IMGFS_SRC/tests/integration/registry_lib.bash"

need_root
need_imgfs
need_fuse
need docker-registry skopeo curl htpasswd setpriv timeout

PASS='s3cret-Pa55-pullpolicy'
export REGISTRY_AUTH_FILE=$T/root-auth.json
export HOME=$T/home
unset XDG_RUNTIME_DIR DOCKER_CONFIG
mkdir -p "$HOME"
chmod o+x "$T" # mktemp -d made it 0700: the other users reach the mounts below
build_fixtures multiarch

# ---- registries -------------------------------------------------------------
printf '%s\n' "$PASS" | htpasswd -iBc "$T/htpasswd" alice >/dev/null 2>&1 || fail "htpasswd failed"
start_reg priv "auth:
  htpasswd:
    realm: imgfs-test
    path: $T/htpasswd"
start_reg pub ""
push_to "$REG_priv" lab/app:v1 --dest-creds "alice:$PASS"
push_to "$REG_pub" lab/pub:v1
push_to "$REG_pub" lab/pub:v2
start_proxy pp "$REG_priv"
start_proxy pq "$REG_pub"
start_proxy ph "$REG_priv" # the private registry again, credentials from a helper
PRIV=$PROXY_pp PUB=$PROXY_pq HELPED=$PROXY_ph
printf '%s\n' "$PASS" | "$IMGFS" login -u alice "$PRIV" >/dev/null 2>"$T/err" || fail "login: $(cat "$T/err")"
grep -q "$PRIV" "$REGISTRY_AUTH_FILE" || fail "no credentials in root's auth file"
PRIV_REF=$PRIV/lab/app:v1 PUB_REF=$PUB/lab/pub:v1
# root's ~/.docker/config.json names a credential helper for $HELPED, which
# logs every call
mkdir -p "$T/bin" "$HOME/.docker"
cat >"$T/bin/docker-credential-imgfstest" <<EOF2
#!/bin/sh
read -r host
echo "uid=\$(id -u) host=\$host" >>"$T/helper.log"
printf '{"ServerURL":"%s","Username":"alice","Secret":"%s"}\n' "\$host" "$PASS"
EOF2
chmod +x "$T/bin/docker-credential-imgfstest"
printf '{"credHelpers": {"%s": "imgfstest"}}\n' "$HELPED" >"$HOME/.docker/config.json"
export PATH=$T/bin:$PATH
: >"$T/helper.log"

# as UID CMD...: run CMD as that user, no groups, with a HOME of its own.
as() {
	local uid=$1
	shift
	HOME=/nonexistent LC_ALL=C setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"
}
# lookup UID PATH: stat PATH as UID within 10 s; prints OK or the errno's name.
lookup() {
	as "$1" timeout 10 "$PY" -c 'import errno, os, sys
try:
    os.stat(sys.argv[1]); print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))' "$2" || echo TIMEOUT
}
expect() { # expect UID PATH WANT
	local got
	got=$(lookup "$1" "$2")
	[ "$got" = "$3" ] || fail "uid $1: stat $2: $got, want $3"
}
# Requests through the proxies since mark_proxies; auth_requests: those that
# carried an Authorization header.
mark_proxies() { PP_MARK=$(wc -l <"$T/pp.log") PQ_MARK=$(wc -l <"$T/pq.log"); }
requests() { echo $(($(wc -l <"$T/pp.log") - PP_MARK + $(wc -l <"$T/pq.log") - PQ_MARK)); }
auth_requests() {
	tail -n +$((PP_MARK + 1)) "$T/pp.log" | grep -c '"authorization": true' || true
}
no_requests() {
	[ "$(requests)" = 0 ] || fail "$1: requests reached a registry: $(tail -n +$((PP_MARK + 1)) "$T/pp.log") $(tail -n +$((PQ_MARK + 1)) "$T/pq.log")"
}
status_of() { as "$1" cat "$2/.imgfs/status"; }

log "direct access without credentials: 401"
code=$(as 65534 curl -s -o /dev/null -w '%{http_code}' "http://$PRIV/v2/lab/app/manifests/v1")
[ "$code" = 401 ] || fail "the private registry answered $code to uid 65534"

# ---- pull=root (the default) ---------------------------------------------------
log "default mount: other users cannot make it pull"
S1=$T/s1 M1=$T/m1
imgfs_mount "$S1" "$M1" allow_other
mark_proxies
expect 65534 "$M1/pull/$PRIV_REF" EACCES
expect 65534 "$M1/pull/$PUB_REF" EACCES
expect 65534 "$M1/pull/$PUB/lab/pub@sha256:$(printf %064d 0)" EACCES
no_requests "pull=root, lookups by uid 65534"
status_of 65534 "$M1" >"$T/st"
grep -q "only root may pull" "$T/st" || fail "no reason for uid 65534: $(cat "$T/st")"
grep -q "$PRIV_REF (Permission denied; uid 65534)" "$T/st" || fail "status: $(cat "$T/st")"
status_of 65533 "$M1" >"$T/st"
grep -q "^failed" "$T/st" && fail "uid 65533 sees uid 65534's failures: $(cat "$T/st")"

log "root pulls the private image; then every user sees it from the store"
ls "$M1/pull/$PRIV_REF/rootfs" >"$T/ls" || fail "root's lookup of the private image failed"
grep -qx etc "$T/ls" || fail "rootfs: $(cat "$T/ls")"
[ "$(auth_requests)" -gt 0 ] || fail "root's pull sent no credentials"
DIGEST=$(cat "$M1/pull/$PRIV_REF/digest")
mark_proxies
expect 65534 "$M1/pull/$PRIV_REF/rootfs/etc" OK
expect 65534 "$M1/pull/$PRIV/lab/app@$DIGEST/rootfs/etc" OK
expect 65534 "$M1/$PRIV/lab/app/v1/rootfs/etc" OK
no_requests "pull=root, lookups of a stored image by uid 65534"
imgfs_unmount "$M1" "$MOUNT_PID"

log "pull=none: nobody pulls"
imgfs_mount "$T/s0" "$T/m0" allow_other,pull=none
mark_proxies
expect 0 "$T/m0/pull/$PUB_REF" EACCES
expect 65534 "$T/m0/pull/$PUB_REF" EACCES
no_requests "pull=none"
grep -q "pull=none" "$T/m0/.imgfs/status" || fail "status: $(cat "$T/m0/.imgfs/status")"
imgfs_unmount "$T/m0" "$MOUNT_PID"

# ---- pull=all -------------------------------------------------------------------
log "pull=all: other users pull anonymously"
S2=$T/s2 M2=$T/m2
imgfs_mount "$S2" "$M2" allow_other,pull=all
mark_proxies
expect 65534 "$M2/pull/$PUB_REF/rootfs/etc" OK
[ "$(tail -n +$((PQ_MARK + 1)) "$T/pq.log" | grep -c '/blobs/')" -gt 0 ] || fail "no blob was fetched"
mark_proxies
reg_mark=$(wc -l <"$T/priv/log")
expect 65534 "$M2/pull/$PRIV_REF" EACCES
[ "$(requests)" -gt 0 ] || fail "the private lookup sent no request"
[ "$(auth_requests)" = 0 ] || fail "uid 65534's pull sent credentials: $(tail -n +$((PP_MARK + 1)) "$T/pp.log")"
tail -n +$((reg_mark + 1)) "$T/priv/log" | grep -q '"GET /v2/lab/app/manifests/v1 HTTP/1.1" 401 .*imgfs' ||
	fail "the registry answered imgfs no 401: $(tail -n 5 "$T/priv/log")"
log "pull=all: no credential helper runs for another user's pull"
expect 65534 "$M2/pull/$HELPED/lab/app:v1" EACCES
grep -q '"authorization": true' "$T/ph.log" && fail "uid 65534's pull sent credentials: $(cat "$T/ph.log")"
[ -s "$T/helper.log" ] && fail "the credential helper ran for uid 65534's pull: $(cat "$T/helper.log")"
expect 0 "$M2/pull/$HELPED/lab/app:v1/rootfs/etc" OK # root's pull runs it
grep -qx "uid=0 host=$HELPED" "$T/helper.log" || fail "root's pull did not use the helper: $(cat "$T/helper.log")"

log ".imgfs/status: each user sees its own pulls, root all"
status_of 65534 "$M2" >"$T/st"
grep -q "^failed .* $PRIV_REF (Permission denied; uid 65534)" "$T/st" || fail "uid 65534's status: $(cat "$T/st")"
status_of 65533 "$M2" >"$T/st"
grep -q "$PRIV_REF" "$T/st" && fail "uid 65533 sees uid 65534's failure: $(cat "$T/st")"
grep -qx "recent failures: 0" "$T/st" || fail "uid 65533's status: $(cat "$T/st")"
grep -q "^failed .* $PRIV_REF (Permission denied; uid 65534)" "$M2/.imgfs/status" ||
	fail "root's status: $(cat "$M2/.imgfs/status")"

log "pulls by different users of one reference: neither answers the other"
# The kernel makes a lookup of a name wait for a lookup of the same name in
# progress and then, if that one failed, ask again: an anonymous failure never
# answers root, and what root's pull put in the store is what the mount shows.
# The daemon keys running pulls by reference and credential class as well (for
# spellings of one reference that are different names: alpine, library/alpine).
# The store has every blob already (pub:v1 is the same image): hold the first
# manifest request, which is uid 65534's.
rules pp '[{"match": "/manifests/", "times": 1, "action": "delay", "seconds": 3}]'
lookup 65534 "$M2/pull/$PRIV_REF" >"$T/nobody.res" &
nobodypid=$!
for ((i = 0; i < 100; i++)); do grep -q "^pull $PRIV_REF" "$M2/.imgfs/status" && break; sleep 0.05; done
grep -q "^pull $PRIV_REF (.*uid 65534, anonymous)" "$M2/.imgfs/status" ||
	fail "uid 65534's pull is not running: $(cat "$M2/.imgfs/status")"
status_of 65533 "$M2" | grep -qx "pulls in progress: 0" || fail "uid 65533 sees uid 65534's pull"
ls "$M2/pull/$PRIV_REF/rootfs" >"$T/ls.root" 2>&1 || fail "root's lookup failed: $(cat "$T/ls.root")"
wait "$nobodypid"
[ "$(cat "$T/nobody.res")" = EACCES ] || fail "uid 65534's lookup: $(cat "$T/nobody.res"), want EACCES"
rules pp '[]'
mark_proxies
expect 65534 "$M2/pull/$PRIV_REF/rootfs/etc" OK # in the store now: the mount shows it
no_requests "a lookup of what root pulled"

imgfs_unmount "$M2" "$MOUNT_PID"

log "pull_max_per_user: a fifth pull while four run is EAGAIN at once"
# Over /dev/fuse: over io_uring a lookup waiting for a pull may still hold
# its CPU's ring entry and make the next request from that CPU wait (issue 9,
# item 5), which is not what this case is about.
imgfs_mount "$T/s6" "$T/m6" allow_other,pull=all,no_uring
M6=$T/m6
# (each in a directory of its own: lookups in one directory may be serialised)
rules pq '[{"match": "/manifests/", "action": "delay", "seconds": 4}]'
pids=()
for i in 1 2 3 4; do
	lookup 65534 "$M6/pull/$PUB/lab$i/pub:slow" >"$T/slow.$i" &
	pids+=($!)
done
for ((i = 0; i < 100; i++)); do
	[ "$(grep -c "^pull " "$M6/.imgfs/status")" = 4 ] && break
	sleep 0.05
done
[ "$(grep -c "^pull " "$M6/.imgfs/status")" = 4 ] || fail "not 4 pulls: $(cat "$M6/.imgfs/status")"
start=$(date +%s%N)
expect 65534 "$M6/pull/$PUB/lab5/pub:slow" EAGAIN
[ $(($(date +%s%N) - start)) -lt 2000000000 ] || fail "the fifth pull was not refused at once"
grep -q "lab5" "$T/pq.log" && fail "the refused pull reached the registry"
grep -q "pull_max_per_user" <(status_of 65534 "$M6") || fail "no reason for EAGAIN in the status"
expect 65533 "$M6/pull/$PUB/lab6/pub:slow" ENOENT # another user has its own count
for p in "${pids[@]}"; do wait "$p"; done
rules pq '[]'
imgfs_unmount "$M6" "$MOUNT_PID"

log "pull=all,pull_creds=shared: other users pull with the mounter's credentials"
imgfs_mount "$T/s3" "$T/m3" allow_other,pull=all,pull_creds=shared
expect 65534 "$T/m3/pull/$PRIV_REF/rootfs/etc" OK
imgfs_unmount "$T/m3" "$MOUNT_PID"

# ---- pull_max_size ---------------------------------------------------------------
log "pull_max_size: a larger image is refused before any blob is fetched"
imgfs_mount "$T/s4" "$T/m4" allow_other,pull=all,pull_max_size=16K
mark_proxies
expect 65534 "$T/m4/pull/$PUB/lab/pub:v2" EFBIG
tail -n +$((PQ_MARK + 1)) "$T/pq.log" | grep -q '/manifests/' || fail "the manifest was not fetched"
tail -n +$((PQ_MARK + 1)) "$T/pq.log" | grep -q '/blobs/' && fail "blobs were fetched: $(tail -n +$((PQ_MARK + 1)) "$T/pq.log")"
status_of 65534 "$T/m4" | grep -q "bytes this pull may bring in" || fail "status: $(status_of 65534 "$T/m4")"
expect 0 "$T/m4/pull/$PUB/lab/pub:v2/rootfs/etc" OK # root is not bound
imgfs_unmount "$T/m4" "$MOUNT_PID"

log "bad option values are usage errors"
for o in pull=maybe pull_creds=yes pull_max_size=4X pull_max_size= pull_max_per_user=-1; do
	set +e
	"$IMGFS" --store "$T/s5" mount -f -o "$o" "$T/m4" >/dev/null 2>"$T/err"
	rc=$?
	set -e
	[ "$rc" = 2 ] || fail "-o $o: exit $rc, want 2: $(cat "$T/err")"
done

no_secret "$PASS" "$T"/daemon.*.log "$T/pp.log" "$T/pq.log"
log "ok"
