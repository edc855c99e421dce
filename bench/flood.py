#!/usr/bin/env python3
"""Flood postern from one address while a device on another relays.

Starts the given binary with a maildir upstream on 127.0.0.1:PORT, opens
--flood connections from 127.0.0.2 (half of them idle after the greeting,
half sending one byte every few seconds, slowloris style), keeps them open,
then times one complete message (connect, EHLO, MAIL, RCPT, DATA, 250) from
127.0.0.1. Prints the latency, how the flood connections were answered,
and postern's peak RSS (VmHWM) over the run.

Figures are printed, not asserted, except that the device's message must
be accepted (exit 1 otherwise).

Usage: python3 bench/flood.py --bin target/release/postern [--flood 500] [--port 33025]
"""

import argparse
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def wait_port(port, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def recv_reply(s):
    buf = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return buf
        buf += chunk
        lines = buf.split(b"\r\n")
        for l in lines[:-1]:
            if len(l) >= 4 and l[3:4] == b" ":
                return buf


def device_message(port):
    t0 = time.monotonic()
    s = socket.socket()
    s.settimeout(30)
    s.bind(("127.0.0.1", 0))
    s.connect(("127.0.0.1", port))
    replies = [recv_reply(s)]
    for cmd in (b"EHLO printer.lan\r\n", b"MAIL FROM:<printer@lan.example>\r\n",
                b"RCPT TO:<ops@example.net>\r\n", b"DATA\r\n",
                b"Subject: during the flood\r\n\r\nscan attached\r\n.\r\n"):
        s.sendall(cmd)
        replies.append(recv_reply(s))
    s.sendall(b"QUIT\r\n")
    s.close()
    return time.monotonic() - t0, replies[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--flood", type=int, default=500)
    ap.add_argument("--port", type=int, default=33025)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="postern-flood-")
    cfg = os.path.join(work, "postern.toml")
    with open(cfg, "w") as f:
        f.write('''hostname = "relay.test"
log_level = "warn"
[server]
listen = ["127.0.0.1:%d"]
[policy]
allow_clients = ["127.0.0.1/32", "127.0.0.2/32"]
[queue]
dir = "%s/queue"
[upstream]
kind = "maildir"
dir = "%s/outbox"
''' % (a.port, work, work))
    log = open(os.path.join(work, "postern.log"), "w")
    p = subprocess.Popen([a.bin, "serve", "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
    flood = []
    try:
        if not wait_port(a.port):
            print("postern did not start")
            return 1
        idle_hwm = hwm_kib(p.pid)
        answers = collections.Counter()
        t0 = time.monotonic()
        for i in range(a.flood):
            s = socket.socket()
            s.setblocking(True)
            s.settimeout(5)
            s.bind(("127.0.0.2", 0))
            try:
                s.connect(("127.0.0.1", a.port))
            except OSError as e:
                answers["connect failed: %s" % e.strerror] += 1
                s.close()
                continue
            flood.append(s)
        # What each flood connection was told (greeting or refusal).
        for s in flood:
            try:
                first = s.recv(512)[:3].decode("ascii", "replace") or "closed"
            except OSError:
                first = "no answer"
            answers[first] += 1
        opened = time.monotonic() - t0
        # Slowloris: half of the open ones drip a byte now and then.
        drip = [s for i, s in enumerate(flood) if i % 2 == 0]
        for s in drip:
            try:
                s.sendall(b"E")
            except OSError:
                pass
        latency, final = device_message(a.port)
        for s in drip:
            try:
                s.sendall(b"H")
            except OSError:
                pass
        peak = hwm_kib(p.pid)
        ok = final.startswith(b"250")
        print("flood: %d connections from 127.0.0.2 in %.2fs; answers: %s" % (
            a.flood, opened, ", ".join("%s x%d" % kv for kv in sorted(answers.items()))))
        print("device on 127.0.0.1: message %s in %.3fs during the flood" % (
            "accepted" if ok else "NOT accepted (%r)" % final[:80], latency))
        print("postern peak RSS (VmHWM): %d KiB (%.1f MiB); at idle: %d KiB" % (peak, peak / 1024, idle_hwm))
        return 0 if ok else 1
    finally:
        for s in flood:
            s.close()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
