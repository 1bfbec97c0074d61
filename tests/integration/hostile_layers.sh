#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Hostile layers T1-T23 (shared/reference/bad-inputs.md) and T24 on (issue 9,
# listed in docs/unpack.md): tests/hostile/hostile.py
# builds each tar, applies it with imgfs-apply-layer and checks that nothing
# outside dest changed plus each case's expected result. Runs as root, then
# again as an unprivileged user (nobody) where privilege changes the outcome.
set -u
TOOL="${IMGFS_TOOLS:?}/imgfs-apply-layer"
HARNESS="${IMGFS_SRC:?}/tests/hostile/hostile.py"
PY=/usr/bin/python3
[ -x "$TOOL" ] || { echo "no $TOOL"; exit 77; }
[ -x "$PY" ] || { echo "no $PY"; exit 77; }

rc=0
echo "== as $(id -un)"
"$PY" "$HARNESS" "$TOOL" || rc=1

if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	T=$(mktemp -d /tmp/imgfs-hostile-nr.XXXXXX)
	trap 'rm -rf "$T"' EXIT
	chown 65534:65534 "$T"
	echo "== as uid 65534"
	# the harness keeps its temp dirs under TMPDIR, a dir the user owns
	TMPDIR="$T" HOME="$T" setpriv --reuid=65534 --regid=65534 --clear-groups \
		"$PY" "$HARNESS" "$TOOL" || rc=1
fi
exit $rc
