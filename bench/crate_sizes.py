#!/usr/bin/env python3
"""Code size per crate of a release build (what each dependency costs on the board).

Builds nothing itself; give it an unstripped release binary:
  CARGO_TARGET_DIR=target/size CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --bin postern
  python3 bench/crate_sizes.py target/size/release/postern

Sums symbol sizes (nm -S) by the crate that names them. With LTO, generic
code is counted where it was instantiated (mostly in `postern`), so a
library's figure is what it costs on its own, not everything it causes.
"""
import collections
import re
import subprocess
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = subprocess.run(["nm", "-S", "--size-sort", "-C", sys.argv[1]],
                         capture_output=True, text=True, check=True).stdout
    per = collections.Counter()
    total = 0
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 4:
            continue
        size, name = int(parts[1], 16), parts[3]
        total += size
        m = re.match(r"[<&*]*(?:impl |dyn )?([A-Za-z_][A-Za-z0-9_]*)::", name)
        if name.startswith(("ring_core_", "ecp_nistz256", "p256_", "p384_")):
            crate = "ring"  # its C and assembly, and their tables
        else:
            crate = m.group(1) if m else "(other C code)"
        per[crate] += size
    print(f"{total / 1024:8.0f} KiB  all symbols")
    try:
        for crate, size in per.most_common(20):
            print(f"{size / 1024:8.0f} KiB  {crate}")
    except BrokenPipeError:
        pass


if __name__ == "__main__":
    main()
