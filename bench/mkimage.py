#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Build the pull benchmark's image as an OCI layout with three gzip layers.

  layer 0  a debootstrap --variant=minbase tree (given with --rootfs)
  layer 1  the contents of a few .debs (dpkg-deb -x), plus files that replace
           files of layer 0
  layer 2  deletions: whiteouts of whole directories from layers 0 and 1, an
           opaque directory, file whiteouts, a changed file and a new file

usage: mkimage.py --rootfs DIR --debs DIR --out OCI_DIR [--tag 1]
Prints one summary line per layer and the manifest digest.
"""
import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

# Contents a real image builder leaves out of a rootfs layer (kept as empty dirs).
EMPTY_DIRS = ("dev", "proc", "sys", "run", "var/cache/apt/archives")

# Layer 2: directories removed wholesale (whiteout "<parent>/.wh.<name>").
WHITEOUT_DIRS = (
	"usr/lib/python3.11/test",      # from layer 1: libpython3.11-testsuite
	"usr/share/vim/vim90/doc",      # from layer 1: vim-runtime
	"usr/share/man",                # from layer 0
	"usr/share/info",               # from layer 0
)
# Layer 2: directories made opaque ("<dir>/.wh..wh..opq") and given a new file.
OPAQUE_DIRS = ("usr/share/doc",)
# Layer 2: single files removed.
WHITEOUT_FILES = ("etc/motd", "usr/bin/git-shell", "etc/debian_version")


class HashWriter:
	"""File-like sink that hashes and counts what passes through."""

	def __init__(self, out):
		self.out = out
		self.sha = hashlib.sha256()
		self.size = 0

	def write(self, data):
		self.sha.update(data)
		self.size += len(data)
		return self.out.write(data)

	def flush(self):
		self.out.flush()


def tar_filter(info):
	info.uname = ""
	info.gname = ""
	return info


def add_tree(tar, root, skip_contents=()):
	"""Add every entry under root in sorted order (parents first)."""
	count = 0
	for dirpath, dirnames, filenames in os.walk(root):
		rel = os.path.relpath(dirpath, root)
		dirnames.sort()
		if rel != "." and rel in skip_contents:
			dirnames[:] = []
			filenames = []
		# os.walk lists symlinks to directories among dirnames; tar them as links.
		names = sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))])
		dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
		if rel != ".":
			tar.add(dirpath, arcname=rel, recursive=False, filter=tar_filter)
			count += 1
		for name in names:
			arc = name if rel == "." else os.path.join(rel, name)
			tar.add(os.path.join(dirpath, name), arcname=arc, recursive=False, filter=tar_filter)
			count += 1
	return count


def write_blob(blobs, path):
	"""gzip path into the blob dir; return (diff_id, digest, size)."""
	diff = hashlib.sha256()
	fd, tmp = tempfile.mkstemp(dir=blobs)
	with os.fdopen(fd, "wb") as raw:
		hw = HashWriter(raw)
		with gzip.GzipFile(fileobj=hw, mode="wb", compresslevel=6, mtime=0) as gz, open(path, "rb") as src:
			while True:
				chunk = src.read(1 << 20)
				if not chunk:
					break
				diff.update(chunk)
				gz.write(chunk)
	digest = hw.sha.hexdigest()
	os.rename(tmp, os.path.join(blobs, digest))
	return "sha256:" + diff.hexdigest(), "sha256:" + digest, hw.size


def write_json_blob(blobs, obj):
	data = json.dumps(obj, indent=None, separators=(",", ":"), sort_keys=True).encode()
	digest = hashlib.sha256(data).hexdigest()
	with open(os.path.join(blobs, digest), "wb") as f:
		f.write(data)
	return "sha256:" + digest, len(data)


def stage_layer1(debs, stage):
	names = sorted(n for n in os.listdir(debs) if n.endswith(".deb"))
	if not names:
		sys.exit("mkimage: no .deb files in %s" % debs)
	for n in names:
		subprocess.run(["dpkg-deb", "-x", os.path.join(debs, n), stage], check=True)
	# Files that replace files of layer 0.
	os.makedirs(os.path.join(stage, "etc"), exist_ok=True)
	with open(os.path.join(stage, "etc/issue"), "w") as f:
		f.write("imgfs bench image \\n \\l\n")
	with open(os.path.join(stage, "etc/hostname"), "w") as f:
		f.write("bench\n")


def stage_layer2(stage, lowers):
	"""Create whiteouts; parents get the mode of the same dir below."""
	def mkparent(rel):
		for i, part in enumerate(rel.split("/")):
			sub = "/".join(rel.split("/")[: i + 1])
			p = os.path.join(stage, sub)
			if os.path.isdir(p):
				continue
			os.mkdir(p)
			for low in lowers:
				if os.path.isdir(os.path.join(low, sub)):
					shutil.copystat(os.path.join(low, sub), p)
					break

	for rel in WHITEOUT_DIRS + WHITEOUT_FILES:
		parent, name = os.path.split(rel)
		mkparent(parent)
		open(os.path.join(stage, parent, ".wh." + name), "w").close()
	for rel in OPAQUE_DIRS:
		mkparent(rel)
		open(os.path.join(stage, rel, ".wh..wh..opq"), "w").close()
		with open(os.path.join(stage, rel, "README.bench"), "w") as f:
			f.write("documentation removed by layer 2\n")
	mkparent("etc")
	with open(os.path.join(stage, "etc/hostname"), "w") as f:
		f.write("bench-2\n")
	os.makedirs(os.path.join(stage, "opt/bench"), exist_ok=True)
	with open(os.path.join(stage, "opt/bench/data.bin"), "wb") as f:
		f.write(os.urandom(4 << 20))
	os.symlink("../../usr/bin/perl", os.path.join(stage, "opt/bench/perl"))


def make_tar(path, root, skip_contents=()):
	with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
		return add_tree(tar, root, skip_contents)


def main():
	ap = argparse.ArgumentParser()
	ap.add_argument("--rootfs", required=True)
	ap.add_argument("--debs", required=True)
	ap.add_argument("--out", required=True)
	ap.add_argument("--tag", default="1")
	a = ap.parse_args()

	os.makedirs(a.out)
	blobs = os.path.join(a.out, "blobs", "sha256")
	os.makedirs(blobs)
	work = tempfile.mkdtemp(prefix="mkimage.", dir=os.path.dirname(os.path.abspath(a.out)))
	try:
		s1 = os.path.join(work, "l1")
		s2 = os.path.join(work, "l2")
		os.mkdir(s1)
		os.mkdir(s2)
		stage_layer1(a.debs, s1)
		stage_layer2(s2, [s1, a.rootfs])
		layers = []
		for i, (root, skip) in enumerate(((a.rootfs, EMPTY_DIRS), (s1, ()), (s2, ()))):
			tpath = os.path.join(work, "layer%d.tar" % i)
			n = make_tar(tpath, root, skip)
			diff_id, digest, size = write_blob(blobs, tpath)
			print("layer %d: %d entries, %d bytes tar, %d bytes gzip, %s" %
			      (i, n, os.path.getsize(tpath), size, digest))
			os.unlink(tpath)
			layers.append((diff_id, digest, size))
	finally:
		shutil.rmtree(work)

	config = {
		"architecture": "amd64",
		"os": "linux",
		"created": "2024-01-01T00:00:00Z",
		"config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
			   "Cmd": ["bash"]},
		"rootfs": {"type": "layers", "diff_ids": [l[0] for l in layers]},
		"history": [{"created": "2024-01-01T00:00:00Z", "created_by": c}
			    for c in ("debootstrap --variant=minbase bookworm", "dpkg-deb -x *.deb",
				      "rm -rf docs tests")],
	}
	cdigest, csize = write_json_blob(blobs, config)
	manifest = {
		"schemaVersion": 2,
		"mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest,
			   "size": csize},
		"layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d,
			    "size": s} for _, d, s in layers],
	}
	mdigest, msize = write_json_blob(blobs, manifest)
	index = {
		"schemaVersion": 2,
		"manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest,
			       "size": msize, "annotations": {"org.opencontainers.image.ref.name": a.tag}}],
	}
	with open(os.path.join(a.out, "index.json"), "w") as f:
		json.dump(index, f)
	with open(os.path.join(a.out, "oci-layout"), "w") as f:
		json.dump({"imageLayoutVersion": "1.0.0"}, f)
	print("manifest: %s" % mdigest)


if __name__ == "__main__":
	main()
