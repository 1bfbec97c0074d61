#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""An OCI layout whose image holds files only root may read, for the tests
of what other users can reach (tests/integration/sec_*.sh).

    mksecret.py OUTDIR

Tags (in OUTDIR/index.json):
  v1    one uncompressed layer (so the secret is in the blob as plain text):
        a root entry "./" 0755, etc/passwd 0644, etc/shadow 0640 0:42 holding
        SHADOW-SECRET, root-only/ 0700 with root-only/key 0600, tmp 1777,
        pub/readme 0644 owned by 1000:1000
  root750  one layer whose root entry "./" is 0750 (a snapshot root takes it)
  dev   one layer with a character device (dev/null 1:3) and a file owned by
        1234:1234: what an unprivileged unpack cannot make
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import mkimage as M  # noqa: E402

SECRET = "root:SHADOW-SECRET:19000:0:99999:7:::\n"


def main(out):
    lay = M.Layout(out)
    M._tick[0] = 50000
    root = M.D(".", 0o755)
    v1 = M.make_tar([
        root, M.D("etc"), M.F("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        M.F("etc/shadow", SECRET, 0o640, 0, 42),
        M.D("root-only", 0o700), M.F("root-only/key", "ROOT-ONLY-KEY\n", 0o600),
        M.D("tmp", 0o1777), M.D("pub"), M.F("pub/readme", "public\n", 0o644, 1000, 1000),
    ])
    lay.tag(lay.image([(v1, "none")], labels={"fixture": "secret"}), "v1")
    r750 = M.make_tar([M.D(".", 0o750), M.F("hello", "hello\n")])
    lay.tag(lay.image([(r750, "gzip")], labels={"fixture": "root750"}), "root750")
    dev = M.make_tar([M.D("dev"), M.C("dev/null", 1, 3), M.F("owned", "x\n", 0o644, 1234, 1234)])
    lay.tag(lay.image([(dev, "gzip")], labels={"fixture": "dev"}), "dev")
    lay.close()
    # the layer tarballs, for tests that apply them directly
    with open(os.path.join(out, "dev.tar"), "wb") as f:
        f.write(dev)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
