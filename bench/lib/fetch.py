#!/usr/bin/env python3
"""One HTTP/1.1 GET over a raw socket, timed, for bench/run.sh.

Reports (as one JSON object on stdout): status, headers of interest, time to the
response head and to the FIRST BODY BYTE (after chunked framing is removed, which
curl's time_starttransfer does not tell apart), total time, body bytes, whether
the widget tag is in the body, and the token it carries. The body is never kept
whole: only its first and last few KB, so a 1 GB page costs no memory here.

With --pid, a thread samples VmRSS of those processes every 50 ms during the
transfer and reports the maximum.
"""

import argparse
import json
import re
import socket
import sys
import threading
import time
import zlib

TAG_ID = b'id="operator-chat-panel-script"'
TOKEN_RE = re.compile(rb'id="operator-chat-panel-script"[^>]*?\btoken="([^"]*)"')
KEEP = 64 * 1024


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids = pids
        self.max_kb = {p: 0 for p in pids}
        self.stop = threading.Event()

    def run(self):
        # Bounded by the caller's stop and by the request timeout.
        while not self.stop.wait(0.05):
            for p in self.pids:
                self.max_kb[p] = max(self.max_kb[p], rss_kb(p))


class Body:
    """Collects a body's size, head, tail and timing without keeping it."""

    def __init__(self, gzip_coded: bool, t0: float):
        self.t0 = t0
        self.first = None
        self.n = 0
        self.head = b""
        self.tail = b""
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip_coded else None
        self.wire = 0

    def feed(self, data: bytes):
        if not data:
            return
        self.wire += len(data)
        if self.inflate is not None:
            data = self.inflate.decompress(data)
            if not data:
                return
        if self.first is None:
            self.first = time.monotonic() - self.t0
        self.n += len(data)
        if len(self.head) < KEEP:
            self.head += data[: KEEP - len(self.head)]
        self.tail = (self.tail + data)[-KEEP:]


def fetch(args) -> dict:
    t0 = time.monotonic()
    sock = socket.create_connection((args.addr, args.port), timeout=args.timeout)
    sock.settimeout(args.timeout)
    lines = [f"GET {args.path} HTTP/1.1", f"Host: {args.host}", "Accept: text/html,application/xhtml+xml", "User-Agent: bench-fetch"]
    if args.accept_encoding:
        lines.append(f"Accept-Encoding: {args.accept_encoding}")
    for h in args.header or []:
        lines.append(h)
    lines.append("Connection: close")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed before the response head")
        buf += data
        if len(buf) > 1 << 20:
            raise ValueError("response head too large")
    t_head = time.monotonic() - t0
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    rest = bytes(buf[end + 4 :])
    status = int(head[0].split(" ")[1])
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    body = Body(headers.get("content-encoding", "").lower() == "gzip", t0)
    deadline = t0 + args.max_seconds

    def recv():
        if time.monotonic() > deadline:
            raise TimeoutError("transfer exceeded --max-seconds")
        return sock.recv(1 << 20)

    if "chunked" in headers.get("transfer-encoding", "").lower():
        pending = rest
        while True:
            while b"\r\n" not in pending:
                data = recv()
                if not data:
                    raise ConnectionError("connection closed inside chunked framing")
                pending += data
            size_line, _, pending = pending.partition(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            # Feed as it arrives, so that the first body byte is timed when it lands.
            need = size
            while need > 0:
                if not pending:
                    pending = recv()
                    if not pending:
                        raise ConnectionError("connection closed inside a chunk")
                take = pending[:need]
                body.feed(take)
                need -= len(take)
                pending = pending[len(take) :]
            while len(pending) < 2:
                data = recv()
                if not data:
                    break
                pending += data
            pending = pending[2:]
    elif "content-length" in headers:
        need = int(headers["content-length"])
        body.feed(rest[:need])
        need -= min(need, len(rest))
        while need > 0:
            data = recv()
            if not data:
                raise ConnectionError("connection closed before Content-Length bytes")
            body.feed(data[:need])
            need -= min(need, len(data))
    else:
        body.feed(rest)
        while True:
            data = recv()
            if not data:
                break
            body.feed(data)
    t_total = time.monotonic() - t0
    sock.close()
    m = TOKEN_RE.search(body.tail) or TOKEN_RE.search(body.head)
    return {
        "status": status,
        "content_encoding": headers.get("content-encoding", ""),
        "x_chathub_inject": headers.get("x-chathub-inject", ""),
        "set_cookie": headers.get("set-cookie", ""),
        "t_head": t_head,
        "t_first_body": body.first,
        "t_total": t_total,
        "body_bytes": body.n,
        "wire_bytes": body.wire,
        "tag": TAG_ID in body.tail or TAG_ID in body.head,
        "tags_in_tail": body.tail.count(TAG_ID),
        "token": m.group(1).decode("latin-1") if m else None,
        "ends_html": body.tail.rstrip().endswith(b"</html>"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", required=True, help="Host header")
    ap.add_argument("--path", default="/")
    ap.add_argument("--accept-encoding", default="")
    ap.add_argument("--header", action="append", help="extra header line, e.g. 'Cookie: a=b'")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0, help="socket timeout per recv")
    ap.add_argument("--max-seconds", type=float, default=300.0, help="cap on one transfer")
    ap.add_argument("--pid", type=int, action="append", default=[])
    args = ap.parse_args()
    results = []
    sampler = Sampler(args.pid) if args.pid else None
    if sampler:
        sampler.start()
    for _ in range(max(1, min(args.repeat, 100))):
        try:
            results.append(fetch(args))
        except (OSError, ValueError) as e:
            results.append({"error": f"{type(e).__name__}: {e}"})
    out = {"runs": results}
    if sampler:
        sampler.stop.set()
        sampler.join(1)
        out["max_rss_kb"] = sampler.max_kb
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
