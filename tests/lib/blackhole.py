#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A registry that never answers (python3 stdlib only).

    blackhole.py --ready FILE

Listens on 127.0.0.1 (a free port), accepts every connection and keeps it
open without reading or writing a byte, until killed. Writes "127.0.0.1:PORT"
to FILE once it listens, then counts accepted connections on stdout.
"""
import argparse
import os
import socket

ap = argparse.ArgumentParser()
ap.add_argument("--ready", required=True)
args = ap.parse_args()

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(1024)
tmp = args.ready + ".tmp"
with open(tmp, "w") as f:
    f.write("127.0.0.1:%d\n" % srv.getsockname()[1])
os.rename(tmp, args.ready)
held = []
while True:
    conn, _ = srv.accept()
    held.append(conn)  # never read, never answered, never closed
    print(len(held), flush=True)
