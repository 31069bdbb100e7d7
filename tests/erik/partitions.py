"""Prints an Erik index's partitions, one per line, as the base64url names (RFC 6920, no
padding) they are served under, then "indexTime <time>". Reads the DER with openssl.

    python3 tests/erik/partitions.py INDEX.der
"""
import base64
import subprocess
import sys

out = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", sys.argv[1]],
                     capture_output=True, text=True, check=True).stdout
for line in out.splitlines():
    # ContentInfo > [0] > ErikIndex > partitionList > PartitionRef > hash: depth 5.
    if "d=5" in line and "OCTET STRING" in line and "[HEX DUMP]:" in line:
        h = bytes.fromhex(line.split("[HEX DUMP]:")[1])
        print(base64.urlsafe_b64encode(h).decode().rstrip("="))
    if "d=3" in line and "GENERALIZEDTIME" in line:
        print("indexTime " + line.split(":")[-1])
