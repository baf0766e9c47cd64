#!/usr/bin/env python3
"""What a running node's resident memory is made of.

    testnet/resident.py PID

Prints the process's resident set split into anonymous memory (heap,
stacks, caches) and pages of files, and the resident pages of the `agora`
binary by ELF section (.text, .rodata, relocations...), from
/proc/PID/pagemap. Needs root (pagemap) and readelf (binutils).

Most of an idle node's resident memory is pages of its own binary: code
run once (startup, calibration) stays resident, and the kernel maps up to
16 pages around each page of code it faults in.
"""

import re
import struct
import subprocess
import sys
from collections import Counter

PAGE = 4096


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    pid = int(sys.argv[1])
    binary = None
    maps = []
    try:
        lines = open(f"/proc/{pid}/maps").readlines()
    except FileNotFoundError:
        sys.exit(f"no process {pid}: give the pid of a running `agora node`")
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[5].endswith("/agora"):
            binary = parts[5]
            start, end = (int(x, 16) for x in parts[0].split("-"))
            maps.append((start, end, int(parts[2], 16)))
    if binary is None:
        sys.exit(f"process {pid} has no mapping of an `agora` binary")

    rollup = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        m = re.match(r"(\w+):\s+(\d+) kB", line)
        if m:
            rollup[m.group(1)] = int(m.group(2)) / 1024
    print(f"resident {rollup['Rss']:.1f} MB: anonymous {rollup['Anonymous']:.1f} MB, "
          f"files {rollup['Rss'] - rollup['Anonymous']:.1f} MB")

    # File offsets of the binary's resident pages.
    resident = []
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for start, end, offset in maps:
            pages = (end - start) // PAGE
            pagemap.seek(start // PAGE * 8)
            entries = pagemap.read(pages * 8)
            for i in range(pages):
                if struct.unpack_from("<Q", entries, i * 8)[0] >> 63:
                    resident.append(offset + i * PAGE)

    sections = []
    out = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if m:
            sections.append((m.group(1), int(m.group(2), 16), int(m.group(3), 16)))
    by_section = Counter()
    for page in resident:
        name = next((n for n, off, size in sections if off <= page < off + size), "other")
        by_section[name] += PAGE
    sizes = {n: size for n, _, size in sections}
    print(f"{binary}: {len(resident) * PAGE / 2**20:.1f} MB resident")
    for name, size in by_section.most_common():
        if size >= 64 * 1024:
            print(f"  {name:<20} {size / 2**20:6.1f} MB of {sizes.get(name, 0) / 2**20:6.1f} MB")


if __name__ == "__main__":
    main()
