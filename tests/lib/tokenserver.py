#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A small token server for docker-registry's `auth: token` mode (tests only).

    tokenserver.py --key KEY.pem --cert CERT.pem --listen 127.0.0.1:PORT --log FILE
                   [--user NAME:PASSWORD] [--refresh-token TOKEN] [--expire-file FILE]
                   [--ready FILE]

GET /token?service=…&scope=…[&account=…] answers {"token", "access_token",
"expires_in"} with an RS256 JWT (signed by `openssl dgst -sha256 -sign`, the
certificate in the x5c header; the registry's rootcertbundle holds the same
certificate). With --user, Basic credentials are required and checked (401
otherwise); POST with grant_type=refresh_token accepts --refresh-token. While
--expire-file holds a number N > 0, the next N tokens expire 2 s after they
are issued (but claim expires_in 300): a token that expires mid-pull. Each request is logged as
one line: "token <method> <service> <scopes> auth=<basic|refresh|none>
result=<ok|denied>" (never a secret).
"""
import argparse
import base64
import json
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--key", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--user")
    ap.add_argument("--refresh-token")
    ap.add_argument("--expire-file")
    ap.add_argument("--ready")
    args = ap.parse_args()
    der = subprocess.run(["openssl", "x509", "-in", args.cert, "-outform", "DER"],
                         capture_output=True, check=True).stdout
    state = {"issued": 0}
    lock = threading.Lock()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def log(self, line):
            with lock, open(args.log, "a") as f:
                f.write(line + "\n")

        def issue(self, q, how):
            scopes = " ".join(q.get("scope", [])).split()
            access = []
            for s in scopes:
                typ, name, actions = s.split(":")
                access.append({"type": typ, "name": name, "actions": actions.split(",")})
            expired = False
            with lock:
                state["issued"] += 1
                try:
                    n = int(open(args.expire_file).read().strip() or 0)
                except (TypeError, OSError, ValueError):
                    n = 0
                if n > 0:
                    expired = True
                    with open(args.expire_file, "w") as f:
                        f.write("%d\n" % (n - 1))
            now = int(time.time())
            exp = now + 2 if expired else now + 300
            hdr = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
            claims = {"iss": "imgfs-test", "sub": q.get("account", [""])[0],
                      "aud": q.get("service", [""])[0], "exp": exp,
                      "nbf": now - 900, "iat": now - 900, "jti": "%d-%d" % (now, state["issued"]),
                      "access": access}
            signing = (b64(json.dumps(hdr).encode()) + "." +
                       b64(json.dumps(claims).encode())).encode()
            sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", args.key],
                                 input=signing, capture_output=True, check=True).stdout
            token = signing.decode() + "." + b64(sig)
            body = json.dumps({"token": token, "access_token": token,
                               "expires_in": 300}).encode()
            self.log("token %s %s %s auth=%s result=ok%s" % (
                self.command, q.get("service", [""])[0], " ".join(scopes), how,
                " short" if expired else ""))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def deny(self, q, how):
            self.log("token %s %s %s auth=%s result=denied" % (
                self.command, q.get("service", [""])[0], " ".join(q.get("scope", [])), how))
            body = b'{"details":"incorrect username or password"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            auth = self.headers.get("Authorization", "")
            how = "basic" if auth.startswith("Basic ") else "none"
            if args.user:
                ok = False
                if how == "basic":
                    try:
                        ok = base64.b64decode(auth[6:]).decode() == args.user
                    except ValueError:
                        ok = False
                if not ok:
                    return self.deny(q, how)
            self.issue(q, how)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            q = urllib.parse.parse_qs(self.rfile.read(n).decode())
            if (q.get("grant_type") != ["refresh_token"] or not args.refresh_token or
                    q.get("refresh_token") != [args.refresh_token]):
                return self.deny(q, "refresh")
            self.issue(q, "refresh")

    host, port = args.listen.rsplit(":", 1)
    srv = ThreadingHTTPServer((host, int(port)), H)
    srv.daemon_threads = True
    if args.ready:
        with open(args.ready, "w") as f:
            f.write("%s:%d\n" % srv.server_address[:2])
    srv.serve_forever()


if __name__ == "__main__":
    main()
