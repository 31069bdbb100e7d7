#!/usr/bin/env python3
"""Holds N idle keep-alive connections to an HTTP/1.1 server.

    idle.py HOST PORT PATH N

Opens N connections, sends one GET on each and reads its whole response (so each
connection has served a request and is now waiting for the next one, as an RP's pooled
connection does), prints "ready N" on stdout, then holds them until stdin closes. Exits
non-zero if any connection fails, so a figure is never taken with fewer connections than
it claims.
"""
import resource
import selectors
import socket
import sys


def main():
    host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 64)), hard))
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    conns = []
    # Connect in batches so the listen backlog never overflows.
    for start in range(0, n, 256):
        batch = []
        for _ in range(min(256, n - start)):
            s = socket.create_connection((host, port))
            s.sendall(request)
            s.setblocking(False)
            batch.append(s)
            sel.register(s, selectors.EVENT_READ, bytearray())
        pending = set(batch)
        while pending:
            events = sel.select(timeout=30)
            if not events:
                sys.exit(f"no answer in 30 s; {len(conns)} connections were ready")
            for key, _ in events:
                s, buf = key.fileobj, key.data
                chunk = s.recv(65536)
                if not chunk:
                    sys.exit(f"connection closed by the server after {len(conns)} were ready")
                buf += chunk
                head, sep, body = bytes(buf).partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(body) >= length:
                    sel.unregister(s)
                    pending.discard(s)
                    conns.append(s)
    print(f"ready {len(conns)}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
