#!/usr/bin/env python3
"""Write the benchmark pages: exactly 2 KB, 64 KB and 1 MB of HTML each ending in
`</body></html>`, plus a `.gz` beside each for nginx's gzip_static."""

import gzip
import random
import sys
from pathlib import Path

SIZES = {"2k": 2 * 1024, "64k": 64 * 1024, "1m": 1024 * 1024}

HEAD = (
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>Benchmark page</title>\n<link rel=\"stylesheet\" href=\"/style.css\">\n"
    "<script>window.dataLayer = window.dataLayer || [];</script>\n</head>\n<body>\n"
    "<header><nav><a href=\"/\">Home</a> <a href=\"/shop\">Shop</a> <a href=\"/help\">Help</a></nav></header>\n<main>\n"
)
TAIL = "</main>\n<footer><p>&copy; Example Ltd.</p></footer>\n</body></html>"
BLOCK = (
    "<article class=\"card\" data-id=\"{i}\"><h2>Product {i}</h2>"
    "<img src=\"/img/{i}.jpg\" alt=\"Product {i}\" width=\"320\" height=\"200\">"
    "<p>{text} <a href=\"/p/{i}?ref=list&amp;x=1\">{link}</a> {more}.</p></article>\n"
)
# Words drawn at random (fixed seed) so that gzip does about as well as on real
# pages (3-5x), not the 25x of one paragraph repeated.
WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore "
    "et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip "
    "ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla "
    "pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim "
    "id est laborum price delivery size colour stock order basket review rating warranty return shipping"
).split()


def page(size: int) -> bytes:
    rng = random.Random(size)
    out = [HEAD]
    n = len(HEAD) + len(TAIL)
    i = 0
    while True:  # bounded: each block adds > 300 bytes, size is at most 1 MB
        b = BLOCK.format(
            i=i,
            text=" ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30))).capitalize(),
            link=rng.choice(WORDS),
            more=" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))),
        )
        if n + len(b) > size:
            break
        out.append(b)
        n += len(b)
        i += 1
    # Pad with a comment so that the page is exactly `size` bytes.
    pad = size - n
    if pad >= 8:
        out.append("<!--" + "x" * (pad - 8) + "-->\n")
    else:
        out.append(" " * pad)
    out.append(TAIL)
    data = "".join(out).encode()
    assert len(data) == size, (len(data), size)
    return data


def main():
    root = Path(sys.argv[1])
    root.mkdir(parents=True, exist_ok=True)
    for name, size in SIZES.items():
        data = page(size)
        (root / f"page-{name}.html").write_bytes(data)
        (root / f"page-{name}.html.gz").write_bytes(gzip.compress(data, compresslevel=6, mtime=0))


if __name__ == "__main__":
    main()
