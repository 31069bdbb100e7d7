#!/usr/bin/env python3
"""Publishes the next serial of an RRDP directory (a copy of Krill's) with one ROA broken:
the last byte of its signature flipped. Prints the ROA's URI.

    inject.py RRDP_DIR PUBLIC_BASE

The e2e suite points rrdp-proxy at such a directory: a broken object between the
Publication Server and the proxy, which validate = "refuse" must keep from the RPs."""
import base64
import hashlib
import os
import re
import sys
import uuid

NS = "http://www.ripe.net/rpki/rrdp"
d, public = sys.argv[1], sys.argv[2]
with open(f"{d}/notification.xml") as f:
    notif = f.read()
session = re.search(r'session_id="([^"]+)"', notif).group(1)
serial = int(re.search(r'<notification[^>]* serial="(\d+)"', notif).group(1))
snap_uri = re.search(r'<snapshot uri="([^"]+)"', notif).group(1)
with open(os.path.join(d, snap_uri[len(public):])) as f:
    snap = f.read()
m = re.search(r'<publish uri="([^"]+\.roa)">([^<]+)</publish>', snap)
uri, b64 = m.group(1), m.group(2)
old = base64.b64decode(b64)
der = bytearray(old)
der[-1] ^= 1
new_b64 = base64.b64encode(bytes(der)).decode()
new = serial + 1
snap = snap.replace(b64, new_b64, 1)
snap = re.sub(r'(<snapshot[^>]* serial=")\d+"', rf'\g<1>{new}"', snap, count=1)
delta = (
    f'<delta xmlns="{NS}" version="1" session_id="{session}" serial="{new}">\n'
    f'  <publish uri="{uri}" hash="{hashlib.sha256(old).hexdigest()}">{new_b64}</publish>\n'
    "</delta>\n"
)
rel = f"{session}/{new}/{uuid.uuid4().hex[:16]}"
os.makedirs(os.path.join(d, rel))
for name, body in (("snapshot.xml", snap), ("delta.xml", delta)):
    with open(os.path.join(d, rel, name), "w") as f:
        f.write(body)
sha = lambda s: hashlib.sha256(s.encode()).hexdigest()
old_deltas = re.findall(r"<delta [^>]*/>", notif)
lines = [
    f'<notification xmlns="{NS}" version="1" session_id="{session}" serial="{new}">',
    f'  <snapshot uri="{public}{rel}/snapshot.xml" hash="{sha(snap)}"/>',
    f'  <delta serial="{new}" uri="{public}{rel}/delta.xml" hash="{sha(delta)}"/>',
] + ["  " + x for x in old_deltas] + ["</notification>"]
tmp = os.path.join(d, "notification.xml.tmp")
with open(tmp, "w") as f:
    f.write("\n".join(lines) + "\n")
os.rename(tmp, os.path.join(d, "notification.xml"))
print(uri)
