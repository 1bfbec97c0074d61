#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Write the seed corpora of tests/fuzz/corpus/ from the project's own test
inputs: string literals of the unit tests (references, platforms,
WWW-Authenticate headers, token responses, auth and config files), the
manifests of tests/data/, the hostile tar cases of tests/hostile/hostile.py,
and a few hand-made inputs. Seeds are named seed-<what>-<sha1 prefix>;
reproducers that fuzzing found (crash-*, leak-*, timeout-*, oom-*) are
never touched. Run from anywhere: python3 tests/fuzz/mkseeds.py
"""
import gzip
import hashlib
import importlib.util
import io
import os
import re
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
HEX64 = "0123456789abcdef" * 4


def literals(path):
    """C string literals of a file, adjacent ones joined, HEX64 expanded."""
    text = open(path, encoding="utf-8").read().replace("HEX64", '"%s"' % HEX64)
    out, cur, i, n = [], None, 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            i = text.find("*/", i) + 2
        elif c == "'":
            i = text.index("'", i + 2 if text[i + 1] == "\\" else i + 1) + 1
        elif c == '"':
            j, lit = i + 1, []
            while text[j] != '"':
                if text[j] == "\\":
                    lit.append(text[j:j + 2])
                    j += 2
                else:
                    lit.append(text[j])
                    j += 1
            cur = (cur or "") + "".join(lit)
            i = j + 1
        elif c.isspace():
            i += 1
        else:
            if cur is not None:
                out.append(cur)
                cur = None
            i += 1
    if cur is not None:
        out.append(cur)
    res = []
    for s in out:
        try:
            res.append(s.encode("latin-1", "backslashreplace").decode("unicode_escape")
                       .encode("latin-1"))
        except (UnicodeDecodeError, UnicodeEncodeError):
            res.append(s.encode())
    return res


def put(harness, what, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    name = "seed-%s-%s" % (what, hashlib.sha1(data).hexdigest()[:12])
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def unit(name):
    return literals(os.path.join(SRC, "tests", "unit", name))


def seeds_strings():
    for s in unit("test_ref.c"):
        if s and "%" not in s.decode("latin-1"):
            put("ref", "unit", s)
    for s in unit("test_platform.c"):
        if b"/" in s and b"%" not in s and len(s) < 80:
            put("platform", "unit", s)
    for s in unit("test_auth.c"):
        if s.startswith((b"Bearer", b"Basic", b"Negotiate")) or b"realm" in s:
            put("auth", "unit", s)
        if s.startswith(b"{"):
            put("token", "unit", s)
    for s in unit("test_creds.c"):
        if s.startswith(b"{") and b"auths" in s or b"credHelpers" in s or b"credsStore" in s:
            put("creds", "unit", s)
        if s.startswith(b"{") and (b"mirrors" in s or b"stall" in s or b"max-" in s):
            put("config", "unit", s)


def seeds_manifests():
    for sub in ("manifests", "bad-manifests"):
        d = os.path.join(SRC, "tests", "data", sub)
        for n in sorted(os.listdir(d)):
            if n.endswith(".json"):
                with open(os.path.join(d, n), "rb") as f:
                    put("oci", sub, f.read())


HANDMADE = {
    "headers": [
        b"bytes 0-99/100\n", b"bytes 5-4/*\n", b"bytes  18446744073709551615-18446744073709551615/*\n",
        b"BYTES 1-2/3\nbody", b"application/vnd.oci.image.index.v1+json; charset=utf-8\n{}",
        ("sha256:%s\n" % hashlib.sha256(b"").hexdigest()).encode(),
        ("sha256:%s\nhello" % hashlib.sha256(b"hello").hexdigest()).encode(),
        ("sha512:%s\n" % hashlib.sha512(b"").hexdigest()).encode(),
        b"sha256:XYZ\n", b"sha384:abc\n", b"10.1.2.3\n", b"[fd00::1]:5000\n", b"reg.local:5000\n",
        b"https://index.docker.io/v1/\n", b"HTTP://GHCR.IO/\n",
    ],
    "http_header": [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n"
        b"Docker-Content-Digest: sha256:" + HEX64.encode() + b"\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"https://a/t\",service=\"s\"\r\n"
        b"WWW-Authenticate: Basic realm=\"x\"\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 206 Partial Content\r\nContent-Range: bytes 10-19/20\r\n\r\n",
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: https://blobs.example/x?sig=1\r\n\r\n",
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nRetry-After: x\r\n\r\n",
        b"HTTP/2 200\r\ncontent-encoding: gzip\r\n\r\n",
        b"Content-Type:", b"HTTP/", b"HTTP/1.1 \r\n",
    ],
    "token": [b"{\"token\":\"abc\",\"expires_in\":300}", b"[]", b"{\"token\":\"a\", \"token\":\"b\"}"],
    "creds": [
        b"{\"auths\": {\"docker.io\": {\"auth\": \"dTpw\"}}}",
        b"{\"auths\": {\"https://index.docker.io/v1/\": {\"auth\": \"Og==\"}}}",
        b"{\"auths\": {\"ghcr.io\": {\"auth\": \"=\"}, \"127.0.0.1:5000\": {\"auth\": \"QQ==\"}}}",
        b"{\"credHelpers\": {\"ghcr.io\": \"../../bin/sh\"}, \"credsStore\": \"pass\"}",
        b"[1, 2]", b"{\"auths\": []}",
    ],
    "config": [
        b"{\"insecure-registries\": [\"10.0.0.0/8\", \"reg.local:5000\"], \"registry-mirrors\": "
        b"[\"http://127.0.0.1:5001/prefix\"], \"certs-dir\": \"/nonexistent\", \"auth-file\": \"/x\"}",
        b"{\"registries\": {\"docker.io\": {\"mirrors\": [\"https://m/\", \"ftp://x\"]}}}",
        b"{\"max-download-attempts\": 99999999999999999999}", b"{\"a\": 1, \"a\": 2}", b"null",
    ],
    "platform": [b"linux/arm64/v8", b"LINUX/AARCH64", b"windows/amd64/v3", b"linux//v7", b"/"],
    "ref": [b"a" * 300, b"localhost:99999/x", b"x@sha256:" + HEX64.encode(), b"[::1/x"],
}


def seeds_handmade():
    for h, items in HANDMADE.items():
        for data in items:
            put(h, "hand", data)


def seeds_layers():
    spec = importlib.util.spec_from_file_location(
        "hostile", os.path.join(SRC, "tests", "hostile", "hostile.py"))
    hostile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hostile)

    class Ctx:  # what a case's tar function may look at
        T = "/tmp/imgfs-fuzz-T"
        dest = T + "/dest"
        lower = T + "/lower"

        def d(self, p):
            return os.path.join(self.dest, p)

    for case in hostile.cases():
        try:
            data = case.tar(Ctx()) if callable(case.tar) else hostile.tar_bytes(case.tar)
            if case.compress:
                data = case.compress(data)
        except Exception:
            continue
        if len(data) > 64 << 10:  # small seeds only
            continue
        put("apply", "hostile-" + re.sub(r"[^a-zA-Z0-9]+", "_", case.name)[:40], data)
    # one plain layer of every entry type, gzip-compressed as registries serve layers
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, extra in [("etc", tarfile.DIRTYPE, ""), ("etc/f", tarfile.REGTYPE, ""),
                                  ("etc/l", tarfile.SYMTYPE, "f"), ("etc/h", tarfile.LNKTYPE, "etc/f"),
                                  ("etc/.wh.passwd", tarfile.REGTYPE, ""),
                                  ("usr/bin/.wh..wh..opq", tarfile.REGTYPE, ""),
                                  ("fifo", tarfile.FIFOTYPE, "")]:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime = kind, 0o755, 1700000000
            ti.linkname = extra
            ti.pax_headers = {"SCHILY.xattr.user.k": "v"} if kind == tarfile.REGTYPE else {}
            data = b"hello\n" if name == "etc/f" else b""
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    put("apply", "types", buf.getvalue())
    # devices (the harness's sandbox is nodev), a file over one, a hardlink to one
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, major, minor, kind in [("null", 1, 3, tarfile.CHRTYPE),
                                         ("sda", 8, 0, tarfile.BLKTYPE)]:
            ti = tarfile.TarInfo(name)
            ti.type, ti.devmajor, ti.devminor, ti.mode = kind, major, minor, 0o666
            tf.addfile(ti)
        ti = tarfile.TarInfo("null")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
        ti = tarfile.TarInfo("h")
        ti.type, ti.linkname = tarfile.LNKTYPE, "sda"
        tf.addfile(ti)
    put("apply", "devices", buf.getvalue())
    put("apply", "types-gz", gzip.compress(buf.getvalue(), mtime=0))


def main():
    seeds_strings()
    seeds_manifests()
    seeds_handmade()
    seeds_layers()
    for h in sorted(os.listdir(CORPUS)):
        print("%-12s %d" % (h, len(os.listdir(os.path.join(CORPUS, h)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
