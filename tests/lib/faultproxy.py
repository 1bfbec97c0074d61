#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A fault-injecting HTTP proxy for the registry tests (python3 stdlib only).

    faultproxy.py --listen HOST:PORT --upstream HOST:PORT --rules FILE --log FILE
                  [--ready FILE]

Forwards every request to the upstream registry and streams the answer back,
unless a rule in FILE (JSON, re-read whenever it changes; counters restart)
matches first:

    [{"match": "/blobs/sha256:ab", "method": "GET", "times": 1, "action": "cut"}, ...]

match is a regular expression searched in the request path; times (default:
unlimited) is how many requests the rule applies to. Actions:

    cut            forward, but close the connection after half the body
    status         answer "code" (default 503) with "retry_after" if given and
                   any "headers" ({"WWW-Authenticate": ...})
    stall          forward headers and half the body, then send nothing for
                   "seconds" (default 30) and close
    redirect       answer 307 to "location" + the request path (another host)
    big            answer 200 with a body of "size" bytes ("chunked": true to
                   send no Content-Length)
    corrupt        forward with one byte of the body flipped
    header         forward, setting response header "name" to "value"
    ignore_range   forward without the request's Range header
    delay          wait "seconds" (default 3), then forward

Every request is logged to the log file as one JSON line: method, path, the
Range header, whether an Authorization header came (never its value), and the
action taken.
"""
import argparse
import http.client
import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
       "upgrade", "proxy-authorization", "proxy-authenticate"}


class Rules:
    def __init__(self, path):
        self.path = path
        self.mtime = None
        self.rules = []
        self.used = []
        self.lock = threading.Lock()

    def pick(self, method, path):
        with self.lock:
            try:
                st = os.stat(self.path)
                key = (st.st_mtime_ns, st.st_size, st.st_ino)
            except FileNotFoundError:
                key = None
            if key != self.mtime:
                self.mtime = key
                self.rules = json.load(open(self.path)) if key else []
                self.used = [0] * len(self.rules)
            for i, r in enumerate(self.rules):
                if r.get("method", method) != method:
                    continue
                if not re.search(r.get("match", ""), path):
                    continue
                if "times" in r and self.used[i] >= r["times"]:
                    continue
                self.used[i] += 1
                return r
        return None


def make_handler(args, rules, log_lock):
    up_host, up_port = args.upstream.rsplit(":", 1)

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def record(self, action):
            entry = {"method": self.command, "path": self.path,
                     "range": self.headers.get("Range"),
                     "authorization": "Authorization" in self.headers,
                     "host": self.headers.get("Host"), "action": action}
            with log_lock, open(args.log, "a") as f:
                f.write(json.dumps(entry) + "\n")

        def do_GET(self):
            self.handle_any()

        def do_HEAD(self):
            self.handle_any()

        def do_POST(self):
            self.handle_any()

        def do_PUT(self):
            self.handle_any()

        def do_PATCH(self):
            self.handle_any()

        def do_DELETE(self):
            self.handle_any()

        def handle_any(self):
            rule = rules.pick(self.command, self.path)
            action = rule["action"] if rule else "forward"
            self.record(action)
            if action == "status":
                body = b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}'
                self.send_response(rule.get("code", 503))
                if "retry_after" in rule:
                    self.send_header("Retry-After", str(rule["retry_after"]))
                for k, v in rule.get("headers", {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if action == "redirect":
                self.send_response(307)
                self.send_header("Location", rule["location"] + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if action == "big":
                self.send_big(rule)
                return
            if action == "delay":
                time.sleep(rule.get("seconds", 3))
            self.forward(rule, action)

        def send_big(self, rule):
            size = rule.get("size", 5 << 20)
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            if rule.get("chunked"):
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b" " * 65536
            sent = 0
            try:
                while sent < size:
                    n = min(len(chunk), size - sent)
                    if rule.get("chunked"):
                        self.wfile.write(b"%x\r\n" % n + chunk[:n] + b"\r\n")
                    else:
                        self.wfile.write(chunk[:n])
                    sent += n
                if rule.get("chunked"):
                    self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            with log_lock, open(args.log, "a") as f:
                f.write(json.dumps({"big_sent": sent, "path": self.path}) + "\n")
            self.close_connection = True

        def forward(self, rule, action):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            if action == "ignore_range":
                headers.pop("Range", None)
            conn = http.client.HTTPConnection(up_host, int(up_port), timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
            except OSError as e:
                self.send_error(502, "upstream: %s" % e)
                return
            data = resp.read() if self.command != "HEAD" else b""
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() in HOP or k.lower() == "content-length":
                    continue
                if action == "header" and k.lower() == rule["name"].lower():
                    continue
                self.send_header(k, v)
            if action == "header":
                self.send_header(rule["name"], rule["value"])
            clen = resp.getheader("Content-Length")
            if self.command == "HEAD":
                self.send_header("Content-Length", clen or "0")
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            conn.close()
            if self.command == "HEAD":
                return
            ok = 200 <= resp.status < 300
            if ok and action == "corrupt" and data:
                i = len(data) // 2
                data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
            if ok and action in ("cut", "stall") and len(data) > 1:
                half = len(data) // 2
                self.wfile.write(data[:half])
                self.wfile.flush()
                if action == "stall":
                    time.sleep(rule.get("seconds", 30))
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self.wfile.write(data)

    return H


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--ready")
    args = ap.parse_args()
    host, port = args.listen.rsplit(":", 1)
    srv = ThreadingHTTPServer((host, int(port)),
                              make_handler(args, Rules(args.rules), threading.Lock()))
    srv.daemon_threads = True
    if args.ready:
        with open(args.ready, "w") as f:
            f.write("%s:%d\n" % srv.server_address[:2])
    srv.serve_forever()


if __name__ == "__main__":
    main()
