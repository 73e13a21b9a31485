#!/usr/bin/env python3
"""The functions with the most instructions of their own in one callgrind dump.

bench/profile.sh uses this instead of callgrind_annotate, which in valgrind
3.19 puts every instruction of a later dump (after `callgrind_control -d`) on
the thread's `clone`. Needs a dump written with --compress-strings=no and
--compress-pos=no.

    callgrind_top.py FILE [N]   -> markdown table of the top N (default 30)
"""

import sys
from collections import defaultdict


def main() -> int:
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    own = defaultdict(int)
    total = 0
    fn = "?"
    after_calls = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                fn = line[3:].strip()
            elif line.startswith("summary:"):
                total = int(line.split()[1])
            elif line.startswith("calls="):
                after_calls = True  # the next cost line is the callee's, inclusive
            elif line[:1].isdigit():
                if after_calls:
                    after_calls = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    own[fn] += int(parts[1])
    if total == 0:
        total = sum(own.values()) or 1
    print(f"| instructions | share | function (own instructions only) |")
    print("|---:|---:|---|")
    for name, ir in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| {ir:,} | {100 * ir / total:.1f} % | `{name[:140]}` |")
    print(f"\nTotal: {total:,} instructions.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
