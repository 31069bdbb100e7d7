#!/usr/bin/env python3
"""2,000 concurrent RRDP clients on loopback, for tests/load/run.sh.

Each client keeps one HTTP/1.1 keep-alive connection and loops: fetch the notification, then
one or two of the deltas it lists (now and then the snapshot), and check every file's SHA-256
against the notification. A referenced file that is not served whole and right is a failure;
so is any transport error on one. Prints one JSON line with the counts.

    clients.py PORT CLIENTS SECONDS
"""
import asyncio
import hashlib
import json
import random
import re
import sys
import time

PORT, CLIENTS, SECONDS = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
REF = re.compile(rb'<(snapshot|delta) [^>]*?uri="([^"]+)"[^>]*?hash="([0-9a-f]{64})"')
stats = {"clients": CLIENTS, "notifications": 0, "files": 0, "failures": 0,
         "notification_errors": 0, "reconnects": 0, "examples": []}


class Conn:
    def __init__(self):
        self.r = self.w = None

    async def get(self, path):
        for attempt in (0, 1):
            if self.w is None:
                self.r, self.w = await asyncio.open_connection("127.0.0.1", PORT)
            try:
                self.w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                head = await self.r.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                body = await self.r.readexactly(int(m.group(1))) if m else b""
                if re.search(rb"(?i)\r\nconnection: *close", head):
                    self.close()
                return status, body
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                # The server may close an idle keep-alive connection between two requests:
                # one retry on a fresh connection, as any HTTP client does.
                self.close()
                stats["reconnects"] += 1
                if attempt == 1:
                    raise e

    def close(self):
        if self.w is not None:
            self.w.close()
        self.r = self.w = None


def fail(what):
    stats["failures"] += 1
    if len(stats["examples"]) < 10:
        stats["examples"].append(what)


async def client(deadline):
    conn = Conn()
    await asyncio.sleep(random.random())  # spread the start
    while time.monotonic() < deadline:
        try:
            status, body = await conn.get("/rrdp/notification.xml")
        except Exception as e:  # noqa: BLE001 - any failure is counted
            stats["notification_errors"] += 1
            conn.close()
            await asyncio.sleep(0.5)
            continue
        if status != 200:
            stats["notification_errors"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["notifications"] += 1
        refs = REF.findall(body)
        deltas = [r for r in refs if r[0] == b"delta"][:2]
        picks = deltas if random.random() > 0.02 else [r for r in refs if r[0] == b"snapshot"]
        for _, uri, want in picks:
            path = "/" + uri.decode().split("/", 3)[3]
            try:
                status, data = await conn.get(path)
            except Exception as e:  # noqa: BLE001
                fail(f"{path}: {e!r}")
                conn.close()
                continue
            stats["files"] += 1
            if status != 200:
                fail(f"{path}: HTTP {status}")
            elif hashlib.sha256(data).hexdigest() != want.decode():
                fail(f"{path}: wrong hash")
        await asyncio.sleep(random.uniform(0.2, 1.0))
    conn.close()


async def main():
    deadline = time.monotonic() + SECONDS
    await asyncio.gather(*(client(deadline) for _ in range(CLIENTS)))
    print(json.dumps(stats))


asyncio.run(main())
