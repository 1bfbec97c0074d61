#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Compare two directory trees entry by entry, without following symlinks.

usage: treecmp.py [--no-content] A B

Compares the set of paths and, per path: file type, permission bits
(with setuid/setgid/sticky), uid, gid, size of regular files, mtime in
nanoseconds (directories included), device numbers, symlink targets, xattrs
(trusted.overlay.* excepted), hard-link groups and, unless --no-content,
regular files' bytes. Prints one line per difference (at most 50) and exits 1
if there are any, 0 if the trees are the same.
"""
import hashlib
import os
import stat
import sys

MAX_REPORT = 50


def xattrs(path):
	try:
		names = os.listxattr(path, follow_symlinks=False)
	except OSError:
		return {}
	out = {}
	for n in names:
		if n.startswith("trusted.overlay.") or n.startswith("user.overlay."):
			continue
		try:
			out[n] = os.getxattr(path, n, follow_symlinks=False)
		except OSError as e:
			out[n] = "error %d" % e.errno
	return out


def file_hash(path):
	h = hashlib.sha256()
	with open(path, "rb") as f:
		while True:
			b = f.read(1 << 20)
			if not b:
				break
			h.update(b)
	return h.hexdigest()


def scan(root, content):
	entries = {}
	inodes = {}
	for dirpath, dirnames, filenames in os.walk(root):
		for name in dirnames + filenames:
			full = os.path.join(dirpath, name)
			rel = os.path.relpath(full, root)
			st = os.lstat(full)
			e = {
				"type": stat.S_IFMT(st.st_mode),
				"mode": oct(stat.S_IMODE(st.st_mode)),
				"uid": st.st_uid,
				"gid": st.st_gid,
				"mtime_ns": st.st_mtime_ns,
				"xattrs": xattrs(full),
			}
			if stat.S_ISREG(st.st_mode):
				e["size"] = st.st_size
				if content:
					e["sha256"] = file_hash(full)
				inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
			elif stat.S_ISLNK(st.st_mode):
				e["target"] = os.readlink(full)
			elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
				e["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
			entries[rel] = e
	# Hard-link group of each file: the sorted names sharing its inode.
	for names in inodes.values():
		group = tuple(sorted(names))
		for n in names:
			entries[n]["links"] = group
	return entries


def main():
	args = sys.argv[1:]
	content = True
	if args and args[0] == "--no-content":
		content = False
		args = args[1:]
	if len(args) != 2:
		sys.exit(__doc__)
	a, b = scan(args[0], content), scan(args[1], content)
	diffs = []
	for p in sorted(set(a) - set(b)):
		diffs.append("only in %s: %s" % (args[0], p))
	for p in sorted(set(b) - set(a)):
		diffs.append("only in %s: %s" % (args[1], p))
	for p in sorted(set(a) & set(b)):
		ea, eb = a[p], b[p]
		for k in sorted(set(ea) | set(eb)):
			if ea.get(k) != eb.get(k):
				diffs.append("%s: %s differs: %r vs %r" % (p, k, ea.get(k), eb.get(k)))
	for d in diffs[:MAX_REPORT]:
		print(d)
	if len(diffs) > MAX_REPORT:
		print("... and %d more differences" % (len(diffs) - MAX_REPORT))
	print("treecmp: %d entries in %s, %d in %s, %d differences" %
	      (len(a), args[0], len(b), args[1], len(diffs)))
	sys.exit(1 if diffs else 0)


if __name__ == "__main__":
	main()
