#!/usr/bin/python3
"""kill -9 test: no acknowledged message is ever lost.

Concurrent senders (Python's smtplib) send numbered messages to postern,
which relays to an aiosmtpd upstream that records every message it gets.
Meanwhile the daemon is killed with SIGKILL at random moments, many rounds,
and restarted each time. At the end every message that got a 250 must have
reached the upstream; duplicates (possible only for messages in flight to
the upstream at a kill) are counted and reported, not failed.

Usage: tests/crash/crash.py [--rounds N] [--senders N] [--bin PATH] [--port P]
Needs Debian's python3-aiosmtpd. Loopback only; ports P and P+1 (20025).
Exit status 0 when nothing acknowledged was lost.
"""
import argparse
import os
import random
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

from aiosmtpd.controller import Controller

from common import config, listening, wait_for


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.got = {}  # seq -> count

    async def handle_DATA(self, server, session, envelope):
        for line in envelope.content.split(b"\r\n"):
            if line.startswith(b"X-Seq: "):
                n = int(line[7:])
                with self.lock:
                    self.got[n] = self.got.get(n, 0) + 1
                break
        return "250 2.0.0 recorded"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--senders", type=int, default=6)
    ap.add_argument("--bin", default=os.environ.get("POSTERN_BIN", "target/release/postern"))
    ap.add_argument("--port", type=int, default=20025)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"crash.py: seed {seed}, {a.rounds} rounds, {a.senders} senders")

    rec = Recorder()
    ctl = Controller(rec, hostname="127.0.0.1", port=a.port + 1)
    ctl.start()
    work = tempfile.mkdtemp(prefix="postern-crash-")
    cfg = os.path.join(work, "postern.toml")
    with open(cfg, "w") as f:
        f.write(config("crash.test", "warn", a.port, a.port + 1, f"{work}/queue",
                       queue_extra='retry_intervals = ["1s"]'))
    log = open(os.path.join(work, "postern.log"), "ab")

    def start():
        p = subprocess.Popen([a.bin, "serve", "--config", cfg], stdout=log, stderr=log)
        wait_for(lambda: listening(a.port) or p.poll() is not None, 20, "postern to listen")
        if p.poll() is not None:
            sys.exit(f"crash.py: postern exited with {p.returncode}; see {work}/postern.log")
        return p

    acked = set()
    refused = 0
    counter = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def sender(k):
        nonlocal refused
        r = random.Random(seed + k)
        while not stop.is_set():
            with lock:
                counter[0] += 1
                n = counter[0]
            body = "x" * r.choice([100, 3000, 20000, 100000])
            msg = (f"From: s{k}@lan.test\r\nTo: ops@example.test\r\nSubject: crash {n}\r\n"
                   f"X-Seq: {n}\r\n\r\n{body}\r\n")
            try:
                with smtplib.SMTP("127.0.0.1", a.port, timeout=10) as s:
                    s.sendmail(f"s{k}@lan.test", ["ops@example.test"], msg)
                with lock:
                    acked.add(n)
            except (OSError, smtplib.SMTPException):
                # Refused, cut off by the kill, or 4xx: never acknowledged.
                with lock:
                    refused += 1
                time.sleep(0.02)

    p = start()
    threads = [threading.Thread(target=sender, args=(k,)) for k in range(a.senders)]
    for t in threads:
        t.start()
    for rnd in range(a.rounds):
        time.sleep(rng.uniform(0.05, 0.6))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p = start()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()

    def all_arrived():
        with rec.lock:
            return all(n in rec.got for n in acked)

    end = time.monotonic() + 60
    while time.monotonic() < end and not all_arrived():
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    ctl.stop()

    with rec.lock:
        got = dict(rec.got)
    missing = sorted(n for n in acked if n not in got)
    dups = sum(c - 1 for c in got.values() if c > 1)
    unacked_arrived = sum(1 for n in got if n not in acked)
    print(f"crash.py: {len(acked)} acknowledged, {refused} refused or cut off, "
          f"{len(got)} distinct arrived ({unacked_arrived} never acknowledged but delivered), "
          f"{dups} duplicates, {len(missing)} missing")
    if missing:
        print(f"crash.py: LOST {missing[:20]}...; work dir kept: {work}")
        return 1
    subprocess.run(["rm", "-rf", work])
    return 0


if __name__ == "__main__":
    sys.exit(main())
