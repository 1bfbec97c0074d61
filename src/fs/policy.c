// SPDX-License-Identifier: Apache-2.0
/*
 * Who may make the mount pull, and with whose credentials: the daemon runs as
 * root and holds root's auth file, so on an allow_other mount a lookup under
 * pull/ by another user must not become a pull with root's credentials.
 * -o pull=root (the default): only root pulls, other users see the store;
 * pull=all: other users pull too, anonymously unless pull_creds=shared, within
 * pull_max_size and pull_max_per_user; pull=none: nobody pulls. The decision
 * is made before anything reaches the network. See mount.fuse.imgfs(8).
 */
#include "fs_i.h"

#include <stdio.h>
#include <stdlib.h>

bool fs_uid_privileged(const struct fs *fs, uid_t uid)
{
	return uid == 0 || uid == fs->owner;
}

int fs_pull_policy(const struct fs *fs, uid_t uid, enum fs_pull_class *cls, char *why,
		   size_t whylen)
{
	bool priv = fs_uid_privileged(fs, uid);

	if (fs->pull_policy == IMGFS_FS_PULL_NONE) {
		snprintf(why, whylen,
			 "this mount does not pull (-o pull=none): it shows the "
			 "store's images only");
		return -EACCES;
	}
	if (!priv && fs->pull_policy == IMGFS_FS_PULL_ROOT) {
		snprintf(why, whylen,
			 "only root may pull through this mount (-o pull=root) and the store "
			 "has no such image");
		return -EACCES;
	}
	*cls = priv ? FS_PULL_OWNER : fs->pull_creds_shared ? FS_PULL_SHARED : FS_PULL_ANON;
	return 0;
}

void fs_pull_class_opts(const struct fs *fs, enum fs_pull_class cls, struct imgfs_pull_opts *po)
{
	po->fetch = cls == FS_PULL_ANON || cls == FS_PULL_LOCAL ? &fs->fetch_anon : fs->fetch;
	po->max_size = cls == FS_PULL_OWNER || cls == FS_PULL_LOCAL ? 0 : fs->pull_max_size;
	po->offline = cls == FS_PULL_LOCAL;
}

bool fs_uids_has(const struct fs_uids *u, uid_t uid)
{
	for (size_t i = 0; i < u->n; i++) {
		if (u->v[i] == uid)
			return true;
	}
	return false;
}

void fs_uids_add(struct fs_uids *u, uid_t uid)
{
	uid_t *v;

	if (fs_uids_has(u, uid))
		return;
	v = realloc(u->v, (u->n + 1) * sizeof(*v));
	if (!v)
		return; /* then the status does not show it this user: nothing leaks */
	v[u->n++] = uid;
	u->v = v;
}

void fs_uids_destroy(struct fs_uids *u)
{
	free(u->v);
	u->v = NULL;
	u->n = 0;
}
