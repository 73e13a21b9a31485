#!/usr/bin/env python3
"""Send exactly N GETs over one keep-alive connection and check every answer.

Used by bench/profile.sh between two callgrind counter resets, so that the
instructions counted belong to exactly N requests. Exits non-zero if any answer
is not a whole 200 (and, with --expect-tag, lacks the widget tag), so a profile
of error pages is never written down as a profile of pages.
"""

import argparse
import gzip
import http.client
import sys

TAG = b'id="operator-chat-panel-script"'


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--encoding", default="identity")
    ap.add_argument("-n", type=int, required=True)
    ap.add_argument("--expect-tag", action="store_true")
    a = ap.parse_args()

    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=120)
    headers = {"Host": a.host, "Accept-Encoding": a.encoding}
    for i in range(a.n):
        conn.request("GET", a.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            print(f"request {i}: status {resp.status}", file=sys.stderr)
            return 1
        if resp.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if not body.rstrip().endswith(b"</html>"):
            print(f"request {i}: the page is not whole", file=sys.stderr)
            return 1
        if a.expect_tag and TAG not in body:
            print(f"request {i}: no widget tag", file=sys.stderr)
            return 1
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
