#!/usr/bin/env python3
"""A tiny HTTP/1.1 origin for the streaming checks of bench/run.sh.

  GET /pause?ms=2000        the head of a page, then a pause, then the rest (chunked)
  GET /stream?bytes=N       a page of about N bytes generated on the fly (chunked)

It binds 127.0.0.1 on the port given (0 picks one) and writes the bound port to
--port-file, so the caller never guesses a port. One response per connection
(Connection: close) keeps it simple; it stops on SIGTERM.
"""

import argparse
import asyncio
import signal
import sys
from urllib.parse import parse_qs, urlsplit

HEAD = (
    b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    b"<title>bench streaming page</title></head>\n<body>\n<h1>Streaming page</h1>\n"
    b"<p>This first part is sent at once; the rest follows later.</p>\n"
)
TAIL = b"<p>The end of the page.</p>\n</body></html>"
# Realistic markup without `</body>` in it, so the only insertion point is the end.
PARA = (
    b"<div class=\"item\"><h2>Item</h2><p>Lorem ipsum dolor sit amet, consectetur "
    b"adipiscing elit, sed do eiusmod tempor <a href=\"/x?a=1&amp;b=2\">incididunt</a> "
    b"ut labore et dolore magna aliqua.</p></div>\n"
)
FILL_CHUNK = PARA * (256 * 1024 // len(PARA))  # about 256 KB per write

MAX_STREAM = 8 * 1024 * 1024 * 1024  # refuse absurd sizes: 8 GB at most
MAX_PAUSE_MS = 30_000


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await read_head(reader)
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        url = urlsplit(parts[1])
        query = parse_qs(url.query)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Cache-Control: no-store\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        if parts[0] == "HEAD":
            await writer.drain()
            return
        if url.path == "/pause":
            ms = min(int(query.get("ms", ["2000"])[0]), MAX_PAUSE_MS)
            writer.write(chunk(HEAD))
            await writer.drain()
            await asyncio.sleep(ms / 1000)
            writer.write(chunk(PARA * 4 + TAIL))
        elif url.path == "/stream":
            total = min(int(query.get("bytes", ["1048576"])[0]), MAX_STREAM)
            writer.write(chunk(HEAD))
            sent = len(HEAD)
            body = chunk(FILL_CHUNK)
            # Bounded: at most total / len(FILL_CHUNK) + 1 iterations.
            while sent + len(FILL_CHUNK) + len(TAIL) <= total:
                writer.write(body)
                sent += len(FILL_CHUNK)
                await writer.drain()
            writer.write(chunk(TAIL))
        else:
            writer.write(chunk(HEAD + TAIL))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    args = ap.parse_args()
    server = await asyncio.start_server(handle, "127.0.0.1", args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    with open(args.port_file, "w") as f:
        f.write(f"{port}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
