#!/usr/bin/env python3
"""New-serial storm: N clients start together, and each fetches the notification, then every
given path (the files the origin just published). The snapshot is asked for with a Range of
its first KiB, so the storm measures origin load, not loopback bandwidth. Prints JSON:
requests, errors, a few error samples.

    storm.py BASE_URL CLIENTS PATH...

Standard library only: one thread and one keep-alive connection per client.
"""
import http.client
import json
import sys
import threading
import urllib.parse

base, clients, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
u = urllib.parse.urlsplit(base)
start = threading.Barrier(clients)
lock = threading.Lock()
totals = {"requests": 0, "errors": 0, "error_samples": []}
full_bodies = [0]  # responses that ignored the Range (counted without a lock: approximate)


def client():
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    requests = errors = 0
    samples = []
    start.wait()
    for path in [u.path + "notification.xml"] + paths:
        headers = {"Range": "bytes=0-1023"} if path.endswith("snapshot.xml") else {}
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            requests += 1
            if r.status not in (200, 206):
                errors += 1
                samples.append(f"{path} {r.status}")
            if headers and r.status == 200:
                # The whole file despite the Range: read a little, then drop the connection
                # rather than pull (and hold) hundreds of MB per client.
                r.read(1 << 20)
                full_bodies[0] += 1
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
                continue
            while r.read(1 << 16):
                pass
        except Exception as e:  # a reset or refused connection is a client error too
            requests += 1
            errors += 1
            samples.append(f"{path} {e!r}")
            conn.close()
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    with lock:
        totals["requests"] += requests
        totals["errors"] += errors
        totals["error_samples"] += samples[:2]


threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
totals["error_samples"] = totals["error_samples"][:5]
totals["range_ignored"] = full_bodies[0]
print(json.dumps(totals))
