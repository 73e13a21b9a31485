#!/usr/bin/env python3
"""Open N keep-alive connections to a server, one request each, and hold them
idle; report the server's memory while it holds them (for bench/run.sh).

Connections are opened in batches (bounded concurrency, a timeout per batch), each
sends one GET and reads the whole response, then stays open and silent. While they
are held, the server processes' VmRSS is sampled; VmHWM is read at the end. A
sample of the connections is then asked for a second response, to show they were
still alive (a server that dropped them would have "held" nothing).
"""

import argparse
import asyncio
import json
import os
import resource
import sys
import time


def status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        for _ in range(1_000_000):  # bounded: a 2 KB page has a handful of chunks
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            await reader.readexactly(size + 2)
    elif "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    return status


async def open_one(args, request: bytes):
    reader, writer = await asyncio.open_connection(args.addr, args.port)
    writer.write(request)
    await writer.drain()
    status = await read_response(reader)
    return reader, writer, status


async def main_async(args) -> dict:
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\nAccept: text/html\r\n"
        f"User-Agent: bench-idle\r\n\r\n"
    ).encode()
    pids = args.pid
    before = {p: {"rss_kb": status_kb(p, "VmRSS"), "fds": fd_count(p)} for p in pids}
    conns = []
    errors = 0
    statuses = {}
    t0 = time.monotonic()
    batches = (args.count + args.batch - 1) // args.batch
    for _ in range(batches):  # bounded by count / batch
        if time.monotonic() - t0 > args.max_seconds:
            break
        n = min(args.batch, args.count - len(conns) - errors)
        if n <= 0:
            break
        tasks = [asyncio.wait_for(open_one(args, request), timeout=30) for _ in range(n)]
        for r in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(r, BaseException):
                errors += 1
            else:
                conns.append(r)
                statuses[r[2]] = statuses.get(r[2], 0) + 1
    t_open = time.monotonic() - t0
    # Hold: sample RSS a few times while every connection sits idle.
    samples = {p: [] for p in pids}
    for _ in range(max(1, int(args.hold / 0.25))):
        await asyncio.sleep(0.25)
        for p in pids:
            samples[p].append(status_kb(p, "VmRSS"))
    held = {
        p: {
            "rss_kb": max(samples[p]) if samples[p] else 0,
            "hwm_kb": status_kb(p, "VmHWM"),
            "fds": fd_count(p),
        }
        for p in pids
    }
    # Liveness: a sample of the held connections must still answer.
    probe = conns[:: max(1, len(conns) // args.probe)][: args.probe] if conns else []
    alive = 0
    for reader, writer, _ in probe:
        try:
            writer.write(request)
            await writer.drain()
            if await asyncio.wait_for(read_response(reader), timeout=5) == 200:
                alive += 1
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, asyncio.LimitOverrunError):
            pass
    for _, writer, _ in conns:
        writer.close()
    return {
        "requested": args.count,
        "opened": len(conns),
        "errors": errors,
        "statuses": statuses,
        "open_seconds": round(t_open, 2),
        "hold_seconds": args.hold,
        "before": before,
        "held": held,
        "probe": len(probe),
        "probe_alive": alive,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--path", default="/page-2k.html")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--hold", type=float, default=3.0)
    ap.add_argument("--probe", type=int, default=100)
    ap.add_argument("--max-seconds", type=float, default=90.0)
    ap.add_argument("--pid", type=int, action="append", default=[])
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, args.count + 256)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < args.count + 64:
        args.count = max(0, want - 64)
    json.dump(asyncio.run(main_async(args)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
