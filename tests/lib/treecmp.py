#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Compare two directory trees entry by entry.

    treecmp.py [options] TREE_A TREE_B

Compared for every path (never following symlinks): file type, permission bits
(with setuid/setgid/sticky), uid, gid, size and sha256 of regular files,
symlink targets, device numbers, extended attributes (trusted.overlay.* and
security.selinux are ignored: the first is overlay's bookkeeping, the second
the host's labelling), mtime in nanoseconds (not for the roots themselves) and
hardlink grouping: paths that share an inode in one tree must share one in
the other. Every difference is printed; the exit status is 1 if there is any,
0 if none, 2 on a usage error.

Options:
  --exclude REL        leave out REL (a path relative to both roots) and what is
                       under it; may be repeated
  --no-mtime REL       do not compare the mtime of REL; may be repeated
  --quiet              print only the count
"""

import hashlib
import os
import stat
import sys

IGNORED_XATTR_PREFIXES = (b"trusted.overlay.", b"security.selinux")

TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
         stat.S_IFCHR: "char device", stat.S_IFBLK: "block device", stat.S_IFIFO: "fifo",
         stat.S_IFSOCK: "socket"}


def show(rel):
    """A path for printing: non-UTF-8 bytes escaped, control characters visible."""
    s = rel.decode("utf-8", "backslashreplace") if rel else "."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def xattrs_of(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        return {b"<listxattr error>": str(e).encode()}
    out = {}
    for n in names:
        nb = os.fsencode(n)
        if nb.startswith(IGNORED_XATTR_PREFIXES):
            continue
        try:
            out[nb] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            out[nb] = b"<getxattr error: " + str(e).encode() + b">"
    return out


def scan(root, excludes):
    """{relpath(bytes): record} for every entry under root, root included as b''."""
    entries = {}
    root = os.fsencode(root)
    stack = [b""]
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        st = os.lstat(full)
        fmt = stat.S_IFMT(st.st_mode)
        rec = {"type": TYPES.get(fmt, "unknown %o" % fmt), "mode": "%04o" % stat.S_IMODE(st.st_mode),
               "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns,
               "xattrs": xattrs_of(full), "_ino": (st.st_dev, st.st_ino)}
        if fmt == stat.S_IFREG:
            rec["size"] = st.st_size
            try:
                rec["sha256"] = sha256_of(full)
            except OSError as e:
                rec["sha256"] = "<read error: %s>" % e
        elif fmt == stat.S_IFLNK:
            rec["target"] = os.readlink(full)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            rec["rdev"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        entries[rel] = rec
        if fmt == stat.S_IFDIR:
            for name in os.listdir(full):
                child = os.path.join(rel, name) if rel else name
                if child in excludes or any(child.startswith(x + b"/") for x in excludes):
                    continue
                stack.append(child)
    groups = {}
    for rel, rec in entries.items():
        if rec["type"] != "dir":
            groups.setdefault(rec["_ino"], []).append(rel)
    for rel, rec in entries.items():
        if rec["type"] != "dir":
            rec["hardlinks"] = sorted(p for p in groups[rec["_ino"]] if p != rel)
    return entries


def fmt_xattrs(x):
    return "{" + ", ".join("%s=%r" % (k.decode(errors="backslashreplace"), v)
                           for k, v in sorted(x.items())) + "}"


def compare(a, b, no_mtime):
    diffs = []
    for rel in sorted(set(a) | set(b)):
        p = show(rel)
        if rel not in b:
            diffs.append("%s: only in A (%s)" % (p, a[rel]["type"]))
            continue
        if rel not in a:
            diffs.append("%s: only in B (%s)" % (p, b[rel]["type"]))
            continue
        ra, rb = a[rel], b[rel]
        if ra["type"] != rb["type"]:
            diffs.append("%s: type %s != %s" % (p, ra["type"], rb["type"]))
            continue
        for k in ("mode", "uid", "gid", "size", "sha256", "target", "rdev"):
            if ra.get(k) != rb.get(k):
                diffs.append("%s: %s %s != %s" % (p, k, ra.get(k), rb.get(k)))
        if ra["xattrs"] != rb["xattrs"]:
            diffs.append("%s: xattrs %s != %s" % (p, fmt_xattrs(ra["xattrs"]),
                                                  fmt_xattrs(rb["xattrs"])))
        if rel and rel not in no_mtime and ra["mtime"] != rb["mtime"]:
            diffs.append("%s: mtime %d.%09d != %d.%09d" % (
                p, ra["mtime"] // 10**9, ra["mtime"] % 10**9,
                rb["mtime"] // 10**9, rb["mtime"] % 10**9))
        if ra.get("hardlinks") != rb.get("hardlinks"):
            diffs.append("%s: hardlinked with [%s] != [%s]" % (
                p, ", ".join(map(show, ra["hardlinks"])), ", ".join(map(show, rb["hardlinks"]))))
    return diffs


def main(argv):
    args, excludes, no_mtime, quiet = [], set(), set(), False
    it = iter(argv[1:])
    for arg in it:
        if arg in ("--exclude", "--no-mtime"):
            val = next(it, None)
            if val is None:
                sys.stderr.write("treecmp: %s needs a path\n" % arg)
                return 2
            (excludes if arg == "--exclude" else no_mtime).add(os.fsencode(val.strip("/")))
        elif arg == "--quiet":
            quiet = True
        elif arg.startswith("-"):
            sys.stderr.write(__doc__)
            return 2
        else:
            args.append(arg)
    if len(args) != 2:
        sys.stderr.write(__doc__)
        return 2
    for d in args:
        if not os.path.isdir(d):
            sys.stderr.write("treecmp: %s: not a directory\n" % d)
            return 2
    a, b = scan(args[0], excludes), scan(args[1], excludes)
    diffs = compare(a, b, no_mtime)
    if not quiet:
        for d in diffs:
            print(d)
    print("treecmp: %d entries in A, %d in B, %d differences (A=%s B=%s)" % (
        len(a), len(b), len(diffs), args[0], args[1]))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
