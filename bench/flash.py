#!/usr/bin/python3
"""Flash cost: bytes written to the storage device, fsync-family
calls and device flushes per message, postern against Postfix, same load,
same machine, same run.

Each relay's queue is on its own ext4 filesystem (4 KiB blocks, as on an
SD card) in a loop device. Bytes are the device's sectors written
(/sys/block/loopN/stat) from just before the load to after everything dirty
was written back (sync), divided by the messages; fsync-family calls are
counted by perf on the syscall tracepoints (machine-wide; nothing else
syncs); flushes are the device's completed flush requests, the syncs that
reached it. Each cell first sends a warm-up of two segment files' worth
(8 MiB) and then measures: the steady state of a running appliance, whose
segment files already exist and are recycled. Creating a segment file
writes it full of zeroes once (4 MiB, at most max_segments files ever);
that one-off cost is printed as the warm-up figure.
The load is Postfix's smtp-source (1 and 10 concurrent senders; 1 KiB,
4 KiB and 64 KiB messages), the upstream smtp-sink. The loop devices,
relays and sink come from bench/compare.py (imported, not copied).

Usage (root; postfix, linux-perf, e2fsprogs):
  bench/flash.py [--short] [--bin target/release/postern] [--markdown FILE]
Figures are printed (and written as a markdown table), never asserted.
Loopback ports from 23000 up (this developer's range).
"""
import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

_ports = itertools.count(23000)


def port_in_range():
    return next(_ports)


# compare.py picks any free port; keep this script's inside its range.
compare.free_port = port_in_range

SIZES = (1024, 4096, 65536)
SENDERS = (1, 10)


def measure(kind, binary, work, sink, n):
    out = {}
    for size in SIZES:
        for senders in SENDERS:
            cell = os.path.join(work, f"{kind.lower()}-{size}-{senders}")
            os.makedirs(cell)
            os.chmod(cell, 0o755)
            loop = compare.Loop(cell, "fs", size_mb=256)
            try:
                qdir = os.path.join(loop.mnt, "queue")
                os.makedirs(qdir)
                if kind == "postern":
                    r = compare.Postern(binary, cell, qdir, sink.port)
                else:
                    r = compare.Postfix(cell, qdir, sink.port)
                try:
                    time.sleep(0.5)
                    warm = 20 + (8 << 20) // size
                    loop.settle()
                    w0 = loop.sectors_written()
                    compare.throughput(r.port, sink, senders, warm, size)
                    loop.settle()
                    warm_bytes = (loop.sectors_written() - w0) * 512 / warm
                    before = loop.sectors_written()
                    flushes = loop.flushes()

                    def load():
                        compare.throughput(r.port, sink, senders, n, size)

                    calls = compare.fsyncs(load)
                    flushes = loop.flushes() - flushes
                    loop.settle()
                    written = (loop.sectors_written() - before) * 512 / n
                    out[(size, senders)] = (written, calls / n, flushes / n)
                    print(f"flash.py: {kind:8} {size // 1024:3} KiB x{senders:<2}: "
                          f"{written:9.0f} B/msg ({written / size:.2f}x payload), "
                          f"{calls / n:.2f} fsync/msg, {flushes / n:.2f} flush/msg "
                          f"(warm-up of {warm}: {warm_bytes:.0f} B/msg)", flush=True)
                finally:
                    r.stop()
            finally:
                loop.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/postern")
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--markdown")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (loop devices, Postfix)")
    binary = os.path.abspath(a.bin)
    n = 100 if a.short else 1000
    work = tempfile.mkdtemp(prefix="postern-flash-")
    os.chmod(work, 0o755)
    sink = compare.Sink(compare.free_port())
    try:
        res = {k: measure(k, binary, work, sink, n) for k in ("postern", "Postfix")}
    finally:
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    lines = [f"{n} messages per cell after a warm-up; device bytes per message (x payload), "
             "fsync-family calls and device flushes per message.",
             "",
             "| size | senders | postern B/msg | Postfix B/msg | postern/Postfix | "
             "postern fsync/msg | Postfix fsync/msg | postern flush/msg | Postfix flush/msg |",
             "|---|---|---|---|---|---|---|---|---|"]
    for size in SIZES:
        for senders in SENDERS:
            pb, pf, pd = res["postern"][(size, senders)]
            xb, xf, xd = res["Postfix"][(size, senders)]
            lines.append(f"| {size // 1024} KiB | {senders} | {pb:.0f} ({pb / size:.2f}x) | "
                         f"{xb:.0f} ({xb / size:.2f}x) | {pb / xb:.2f} | {pf:.2f} | {xf:.2f} | "
                         f"{pd:.2f} | {xd:.2f} |")
    table = "\n".join(lines)
    print(table)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
