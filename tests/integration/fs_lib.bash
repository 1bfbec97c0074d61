# SPDX-License-Identifier: Apache-2.0
# Helpers shared by tests/integration/fs_*.sh (sourced after tests/lib/common.sh).

need_fuse() {
	[ -e /dev/fuse ] || skip "no /dev/fuse"
	need fusermount3 findmnt
}

# The transport to the kernel: the fs tests run twice (tests/CMakeLists.txt),
# as the daemon chooses (FUSE over io_uring where the kernel has it) and with
# IMGFS_TEST_FS_OPTS=no_uring (/dev/fuse).
FS_TEST_OPTS=${IMGFS_TEST_FS_OPTS:-}

# imgfs_mount STORE MNT [OPTS]: run the daemon in the foreground (in the
# background of this shell) and wait until MNT answers. Sets MOUNT_PID and
# MOUNT_LOG (its stderr).
imgfs_mount() {
	local store=$1 mnt=$2 opts=${3:-} i log
	opts=$opts${opts:+${FS_TEST_OPTS:+,}}$FS_TEST_OPTS
	mkdir -p "$mnt"
	log=$T/daemon.$(basename "$mnt").$RANDOM.log
	MOUNT_LOG=$log
	"$IMGFS" --store "$store" mount -f ${opts:+-o "$opts"} "$mnt" >"$log" 2>&1 &
	MOUNT_PID=$!
	on_exit imgfs_unmount "$mnt" "$MOUNT_PID"
	for ((i = 0; i < 200; i++)); do
		if findmnt -rn -o FSTYPE "$mnt" 2>/dev/null | grep -q '^fuse.imgfs$' && [ -e "$mnt/.imgfs/status" ]; then
			check_transport "$mnt" "$log" "$opts"
			return 0
		fi
		kill -0 "$MOUNT_PID" 2>/dev/null || fail "imgfs mount exited: $(tail -n 5 "$log")"
		sleep 0.05
	done
	fail "imgfs mount at $mnt did not come up: $(tail -n 5 "$log")"
}

# check_transport MNT LOG OPTS: the daemon talks to the kernel the way it
# should: over io_uring where the kernel allows it (CONFIG_FUSE_IO_URING, its
# enable_uring switch on, which the daemon does where sysfs is writable, and
# io_uring not disabled by sysctl), unless no_uring. The daemon logs when the
# first request comes through a ring; the rings are ready a moment after INIT.
check_transport() {
	local mnt=$1 log=$2 opts=$3 i
	if [[ ,$opts, == *,no_uring,* ]]; then
		grep -q "FUSE over io_uring" "$log" && fail "-o no_uring, but: $(grep io_uring "$log")"
	elif [ "$(cat /sys/module/fuse/parameters/enable_uring 2>/dev/null)" = Y ] &&
		[ "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0)" != 2 ]; then
		for ((i = 0; i < 100; i++)); do
			grep -q "FUSE over io_uring: serving" "$log" && return 0
			cat "$mnt/.imgfs/status" >/dev/null
			sleep 0.02
		done
		fail "the kernel has FUSE over io_uring, the daemon does not serve through it: $(cat "$log")"
	fi
	return 0
}

# imgfs_unmount MNT [PID]: unmount and wait for the daemon to exit.
imgfs_unmount() {
	local mnt=$1 pid=${2:-} i
	if findmnt -rn "$mnt" >/dev/null 2>&1; then
		fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null || umount -l "$mnt"
	fi
	[ -n "$pid" ] || return 0
	for ((i = 0; i < 600; i++)); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
		sleep 0.05
	done
	kill -9 "$pid" 2>/dev/null
	return 1
}

# no_overlay_mounts: fail if any overlay mount references the store.
no_store_mounts() {
	if grep -F "$1" /proc/self/mountinfo; then
		fail "mounts referencing $1 remain"
	fi
}
