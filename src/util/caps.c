// SPDX-License-Identifier: Apache-2.0
/*
 * Which of the capabilities a command needs the process lacks, from the
 * kernel's own answer (capget), not from the uid: root in a container may
 * lack CAP_MKNOD, and a non-root process may hold file capabilities.
 */
#include "util.h"

#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static const struct {
	int cap;
	const char *name;
} cap_names[] = {
    {CAP_CHOWN, "CAP_CHOWN"},	      {CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"},
    {CAP_FOWNER, "CAP_FOWNER"},	      {CAP_FSETID, "CAP_FSETID"},
    {CAP_MKNOD, "CAP_MKNOD"},	      {CAP_SETFCAP, "CAP_SETFCAP"},
    {CAP_SYS_ADMIN, "CAP_SYS_ADMIN"},
};

static const char *cap_name(int cap)
{
	for (size_t i = 0; i < sizeof(cap_names) / sizeof(cap_names[0]); i++)
		if (cap_names[i].cap == cap)
			return cap_names[i].name;
	return "CAP_?";
}

bool imgfs_cap_effective(int cap)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	memset(d, 0, sizeof(d));
	if (cap < 0 || cap >= 32 * _LINUX_CAPABILITY_U32S_3 || syscall(SYS_capget, &h, d) < 0)
		return false;
	return d[cap / 32].effective & (1u << (cap % 32));
}

size_t imgfs_caps_missing(const int *caps, size_t n, char *buf, size_t len)
{
	size_t missing = 0, used = 0;

	if (len)
		buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (imgfs_cap_effective(caps[i]))
			continue;
		int w = snprintf(buf + used, len - used, "%s%s", missing ? ", " : "",
				 cap_name(caps[i]));
		if (w > 0 && (size_t)w < len - used)
			used += (size_t)w;
		missing++;
	}
	return missing;
}

/* What unpacking a layer exactly needs: owners (CHOWN), modes and times of
 * files owned by others (FOWNER), setgid of foreign groups (FSETID), device
 * nodes (MKNOD), security.capability (SETFCAP), trusted.overlay.opaque
 * (SYS_ADMIN), reading lower dirs of any mode (DAC_OVERRIDE). The daemon also
 * needs SYS_ADMIN for its overlay mounts. */
const int imgfs_unpack_caps[] = {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER,   CAP_FSETID,
				 CAP_MKNOD, CAP_SETFCAP,      CAP_SYS_ADMIN};
const size_t imgfs_unpack_ncaps = sizeof(imgfs_unpack_caps) / sizeof(imgfs_unpack_caps[0]);
