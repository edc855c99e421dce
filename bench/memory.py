#!/usr/bin/env python3
"""Measure postern's memory: idle RSS, and peak RSS while N concurrent SMTP
sessions each send one message of SIZE bytes (defaults: 50 x 1 MiB).

Usage: python3 bench/memory.py [--bin target/release/postern] [--sessions 50] [--size 1048576]
                               [--tls-upstream] [--idle-touch SECONDS] [--status-listener]

Runs the real binary on loopback with a maildir outbox (--tls-upstream: a
STARTTLS smarthost route, so the trust store is loaded), drives it with
Python's smtplib (a client nobody here wrote), and reads VmRSS / VmHWM from
/proc/PID/status, plus at idle /proc/PID/smaps_rollup and /proc/PID/smaps
grouped by mapping (postern's code and data, libc, libm, ld.so, libgcc_s,
heap, stacks, other anonymous memory: where the idle RSS goes) and the
thread count. Prints one line per figure; nothing is asserted.
--status-listener turns on [status] listen and, after the idle figures,
fetches the status page and /metrics 20 times each and reports the RSS
again (what the status listener costs: compare with a run without it).

Under qemu-user (ARM builds) /proc/PID of the emulator measures qemu, not
the board: ARM figures must be taken on the board itself.
"""
import argparse
import os
import re
import struct
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rollup_kib(pid):
    """/proc/PID/smaps_rollup as {field: KiB}: where the RSS is (shared
    library pages vs. our own dirty memory)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def thread_stack_pointers(pid):
    """Each thread's stack pointer, from /proc/PID/task/TID/syscall (a
    thread blocked in a system call: "nr args... sp pc"), so the mapping
    that holds it can be called a stack without guessing from its shape."""
    sps = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            continue
        if len(fields) >= 3 and fields[-2].startswith("0x"):
            sps.append(int(fields[-2], 16))
    return sps


def smaps_breakdown(pid, binary):
    """/proc/PID/smaps grouped by what is mapped: {group: [rss, pss, anon]}
    in KiB. Groups: postern's text (r-x), read-only data and relro (r--),
    data/bss (rw-); each shared library by name; heap; the main stack and
    thread stacks (the mappings holding each thread's stack pointer); other
    anonymous memory (malloc arenas, mmap); vdso/vvar."""
    groups = {}
    binary = os.path.realpath(binary)
    sps = thread_stack_pointers(pid)
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if re.match(r"^[0-9a-f]+-[0-9a-f]+$", first):
                parts = line.split()
                start, end = (int(x, 16) for x in first.split("-"))
                perms = parts[1]
                path = parts[5] if len(parts) > 5 else ""
                if path == binary:
                    kind = {"r-x": "postern text", "r--": "postern rodata/relro",
                            "rw-": "postern data/bss"}.get(perms[:3], "postern other")
                elif path.startswith("/"):
                    # libc.so.6, libm.so.6, ld-linux-x86-64.so.2, libgcc_s.so.1
                    kind = os.path.basename(path)
                elif path == "[heap]":
                    kind = "heap (brk)"
                elif path == "[stack]":
                    kind = "main stack"
                elif path.startswith("[v"):
                    kind = "vdso/vvar"
                elif any(start <= sp < end for sp in sps):
                    kind = "thread stacks"
                elif path == "":
                    kind = "other anonymous (malloc arenas, mmap)"
                else:
                    kind = path
                cur = groups.setdefault(kind, [0, 0, 0])
                continue
            if cur is None:
                continue
            idx = {"Rss:": 0, "Pss:": 1, "Anonymous:": 2}.get(first)
            if idx is not None:
                cur[idx] += int(line.split()[1])
    return groups


def print_breakdown(groups):
    print("idle RSS by mapping (KiB)                  rss     pss    anon")
    total = [0, 0, 0]
    for k, v in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        if v[0] == 0:
            continue
        print(f"  {k:<38} {v[0]:6d}  {v[1]:6d}  {v[2]:6d}")
        total = [t + x for t, x in zip(total, v)]
    print(f"  {'total':<38} {total[0]:6d}  {total[1]:6d}  {total[2]:6d}")


def load_segments_kib(path):
    """Sum of an ELF file's PT_LOAD segments (memory size, each rounded out
    to 4 KiB pages), in KiB: the most of the file a process can have
    resident, whatever it touches. 32- and 64-bit little-endian ELF."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[5] != 1:
        raise SystemExit(f"{path}: not a little-endian ELF file")
    if data[4] == 2:
        phoff, = struct.unpack_from("<Q", data, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
        fmt, (ty_at, va_at, msz_at) = "<Q", (0, 0x10, 0x28)
    else:
        phoff, = struct.unpack_from("<I", data, 0x1C)
        phentsize, phnum = struct.unpack_from("<HH", data, 0x2A)
        fmt, (ty_at, va_at, msz_at) = "<I", (0, 0x08, 0x14)
    total = 0
    for i in range(phnum):
        at = phoff + i * phentsize
        if struct.unpack_from("<I", data, at + ty_at)[0] != 1:  # PT_LOAD
            continue
        va, = struct.unpack_from(fmt, data, at + va_at)
        msz, = struct.unpack_from(fmt, data, at + msz_at)
        first, end = va & ~0xFFF, (va + msz + 0xFFF) & ~0xFFF
        total += end - first
    return total // 1024


def print_bounds(groups, binaries):
    """For builds that cannot be measured here (ARM under qemu-user), an
    upper bound of their idle RSS: every page of their segments resident,
    plus the memory measured here that is not the binary's (heap, malloc
    arenas, stacks, vdso). Pointers are half as wide on 32-bit ARM, so the
    measured heap over-states armv7's."""
    other = sum(v[0] for k, v in groups.items() if not k.startswith("postern "))
    for b in binaries:
        seg = load_segments_kib(b)
        print(f"idle_rss_bound_kib={seg + other} for {b}: {seg} KiB of segments (every page)"
              f" + {other} KiB heap, arenas, stacks and vdso measured here")


def referenced_after(pid, binary, seconds):
    """Clear the accessed bits (/proc/PID/clear_refs), let the daemon idle
    for SECONDS and sum smaps' Referenced: the pages an idle postern
    actually uses again, as (postern's code, everything) in KiB."""
    binary = os.path.realpath(binary)
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("1")
    time.sleep(seconds)
    code = total = 0
    in_code = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+$", parts[0]):
                in_code = len(parts) > 5 and parts[5] == binary and parts[1].startswith("r-x")
            elif parts[0] == "Referenced:":
                total += int(parts[1])
                if in_code:
                    code += int(parts[1])
    return code, total


def thread_count(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def wait_for(pred, what, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    sys.exit(f"timed out waiting for {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/postern")
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--tls-upstream", action="store_true",
                    help="a STARTTLS smarthost route (loads the system trust store, as a "
                         "real board config does) that is down: messages are queued, not delivered")
    ap.add_argument("--status-listener", action="store_true",
                    help="serve /metrics and the status page ([status] listen) and fetch them")
    ap.add_argument("--bound", nargs="+", default=[], metavar="ELF",
                    help="also print an upper bound of the idle RSS of these builds "
                         "(e.g. the ARM ones, which qemu-user cannot measure)")
    ap.add_argument("--idle-touch", type=float, default=0, metavar="SECONDS",
                    help="also report what the idle daemon touches in SECONDS (clear_refs)")
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    work = tempfile.mkdtemp(prefix="postern-mem-")
    port = free_port()
    web_port = free_port()
    status = f'[status]\nlisten = "127.0.0.1:{web_port}"\n' if a.status_listener else ""
    if a.tls_upstream:
        # Nothing listens there: every delivery attempt is refused and
        # retried later, so the figures are receiving and queueing only.
        upstream = (f'kind = "smarthost"\nhost = "127.0.0.1"\nport = {free_port()}\n'
                    'tls = "starttls"')
    else:
        upstream = 'kind = "maildir"\ndir = "outbox"'
    with open(os.path.join(work, "postern.toml"), "w") as f:
        f.write(f"""hostname = "bench.test"
log_level = "info"
[server]
listen = ["127.0.0.1:{port}"]
max_message_size = "{max(a.size * 2, 1 << 20)}"
max_connections = {a.sessions + 14}
max_connections_per_client = {a.sessions + 14}
max_connections_per_minute = {a.sessions * 4 + 100}
max_messages_per_minute = {a.sessions * 4 + 100}
[policy]
allow_clients = ["127.0.0.1/32"]
[queue]
dir = "queue"
max_size = "{a.sessions * a.size * 2 + (64 << 20)}"
{status}[upstream]
{upstream}
""")
    log = open(os.path.join(work, "postern.log"), "w")
    # As under systemd: no SSL_CERT_FILE/SSL_CERT_DIR from a login shell,
    # which would make postern read the trust store from both places.
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    proc = subprocess.Popen([binary, "serve", "--config", "postern.toml"], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=log, env=env)

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        wait_for(up, "postern to listen")
        # Let start-up settle (queue recovery, resolver) before calling it idle.
        time.sleep(1.0)
        idle = status_kib(proc.pid, "VmRSS")
        idle_roll = rollup_kib(proc.pid)
        idle_threads = thread_count(proc.pid)
        idle_groups = smaps_breakdown(proc.pid, binary)
        touched = referenced_after(proc.pid, binary, a.idle_touch) if a.idle_touch else None
        served = None
        if a.status_listener:
            import urllib.request
            for _ in range(20):
                for path in ("/", "/metrics"):
                    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}{path}", timeout=10) as r:
                        r.read()
            time.sleep(0.5)
            served = status_kib(proc.pid, "VmRSS")
        line = b"x" * 76 + b"\r\n"
        body = b"Subject: memory bench\r\n\r\n" + line * (a.size // len(line))
        # A session that fails before the barrier breaks it instead of
        # leaving the others waiting forever.
        barrier = threading.Barrier(a.sessions, timeout=60)
        errors = []

        def send(i):
            try:
                s = smtplib.SMTP("127.0.0.1", port, timeout=60)
                s.ehlo("bench")
                barrier.wait()
                s.sendmail(f"dev{i}@lan.test", ["ops@example.test"], body)
                s.quit()
            except Exception as e:  # noqa: BLE001 - report, don't hide
                errors.append(repr(e))
                barrier.abort()

        t0 = time.monotonic()
        threads = [threading.Thread(target=send, args=(i,)) for i in range(a.sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        outbox = os.path.join(work, "outbox")
        if not a.tls_upstream:
            wait_for(lambda: os.path.isdir(outbox) and
                     len([n for n in os.listdir(outbox) if n.endswith(".eml")])
                     == a.sessions - len(errors),
                     "deliveries")
        peak = status_kib(proc.pid, "VmHWM")
        print(f"postern memory: sessions={a.sessions} size={a.size} errors={len(errors)} took={took:.2f}s"
              f" upstream={'starttls smarthost (down; queued only)' if a.tls_upstream else 'maildir'}")
        print(f"idle_rss_kib={idle}")
        if served is not None:
            print(f"status_listener: idle_rss_kib={idle} after_40_requests_rss_kib={served}")
        r = idle_roll
        print(f"idle_smaps_rollup_kib: rss={r.get('Rss')} pss={r.get('Pss')} "
              f"shared_clean={r.get('Shared_Clean')} private_clean={r.get('Private_Clean')} "
              f"private_dirty={r.get('Private_Dirty')} anonymous={r.get('Anonymous')} "
              f"threads={idle_threads}")
        print_breakdown(idle_groups)
        print_bounds(idle_groups, a.bound)
        if touched:
            print(f"idle_referenced_kib (after clear_refs, {a.idle_touch:g} s idle): "
                  f"postern_code={touched[0]} all={touched[1]}")
        print(f"peak_rss_kib={peak}")
        for e in errors[:5]:
            print("error:", e)
        return 1 if errors else 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
