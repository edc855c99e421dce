#!/usr/bin/env python3
"""Measure postern's memory: idle RSS, and peak RSS while N concurrent SMTP
sessions each send one message of SIZE bytes (defaults: 50 x 1 MiB).

Usage: python3 bench/memory.py [--bin target/release/postern] [--sessions 50] [--size 1048576]

Runs the real binary on loopback with a maildir outbox, drives it with
Python's smtplib (a client nobody here wrote), and reads VmRSS / VmHWM from
/proc/PID/status, plus /proc/PID/smaps_rollup at idle (how much of the RSS
is shared library pages and how much postern's own memory) and the thread
count. Prints one line per figure; nothing is asserted.

Under qemu-user (ARM builds) /proc/PID of the emulator measures qemu, not
the board: ARM figures must be taken on the board itself.
"""
import argparse
import os
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
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    work = tempfile.mkdtemp(prefix="postern-mem-")
    port = free_port()
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
[upstream]
kind = "maildir"
dir = "outbox"
""")
    log = open(os.path.join(work, "postern.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--config", "postern.toml"], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=log)

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
        wait_for(lambda: os.path.isdir(outbox) and
                 len([n for n in os.listdir(outbox) if n.endswith(".eml")]) == a.sessions - len(errors),
                 "deliveries")
        peak = status_kib(proc.pid, "VmHWM")
        print(f"postern memory: sessions={a.sessions} size={a.size} errors={len(errors)} took={took:.2f}s")
        print(f"idle_rss_kib={idle}")
        r = idle_roll
        print(f"idle_smaps_rollup_kib: rss={r.get('Rss')} pss={r.get('Pss')} "
              f"shared_clean={r.get('Shared_Clean')} private_clean={r.get('Private_Clean')} "
              f"private_dirty={r.get('Private_Dirty')} anonymous={r.get('Anonymous')} "
              f"threads={idle_threads}")
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
