#!/usr/bin/env python3
"""RPs behind a load balancer, for tests/cluster/run.sh.

Each client loops: fetch the notification through the load balancer, then every file it
lists (snapshot and deltas), each request on a new connection (so consecutive requests land
on different nodes), checking each file's SHA-256. Prints one JSON line with the counts.

    clients.py LB_PORT CLIENTS SECONDS
"""
import hashlib
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request

PORT, CLIENTS, SECONDS = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
REF = re.compile(r'<(snapshot|delta) [^>]*?uri="([^"]+)"[^>]*?hash="([0-9a-f]{64})"')
lock = threading.Lock()
stats = {"notifications": 0, "notification_errors": 0, "files": 0, "failures": 0, "statuses": {}}


def get(path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except Exception:  # noqa: BLE001 - a transport failure is a failure
        return 0, b""


def client(deadline):
    while time.monotonic() < deadline:
        status, body = get("/rrdp/notification.xml")
        if status != 200:
            with lock:
                stats["notification_errors"] += 1
            time.sleep(0.2)
            continue
        with lock:
            stats["notifications"] += 1
        for _, uri, want in REF.findall(body.decode()):
            path = "/" + uri.split("/", 3)[3]
            status, data = get(path)
            ok = status == 200 and hashlib.sha256(data).hexdigest() == want
            with lock:
                stats["files"] += 1
                if not ok:
                    stats["failures"] += 1
                    key = str(status) if status != 200 else "hash"
                    stats["statuses"][key] = stats["statuses"].get(key, 0) + 1
        time.sleep(0.1)


deadline = time.monotonic() + SECONDS
threads = [threading.Thread(target=client, args=(deadline,)) for _ in range(CLIENTS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(stats))
