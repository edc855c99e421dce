#!/usr/bin/python3
"""Recovery time: a queue of N messages (default 10 000) restarts
and resumes delivery; how long does it take?

postern is started with its upstream down, N messages of 1 KiB are queued
through it (10 SMTP sessions, many messages each), and it is stopped. Then
the upstream (aiosmtpd, recording arrival times) comes up and postern is
started again. Printed: time from exec to the "queue opened" log line
(recovery done), to the listener accepting, and to the first message
arriving upstream (delivery resumed), plus the time until all N arrived.
Figures are printed, never asserted.

Usage: bench/recovery.py [--messages N] [--bin PATH] [--port P]
Needs Debian's python3-aiosmtpd. Loopback ports P, P+1 (default 21025).
"""
import argparse
import os
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

from aiosmtpd.controller import Controller

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "crash"))
from common import config, listening  # noqa: E402


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.times = []

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.times.append(time.monotonic())
        return "250 2.0.0 ok"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--bin", default=os.environ.get("POSTERN_BIN", "target/release/postern"))
    ap.add_argument("--port", type=int, default=21025)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="postern-recovery-")
    cfg = os.path.join(work, "postern.toml")
    with open(cfg, "w") as f:
        f.write(config("bench.test", "info", a.port, a.port + 1, f"{work}/queue",
                       queue_extra='max_messages = 100000\nmax_size = "1GiB"\nretry_intervals = ["1h"]'))
    logpath = os.path.join(work, "postern.log")

    def start():
        log = open(logpath, "wb")
        t0 = time.monotonic()
        p = subprocess.Popen([a.bin, "serve", "--config", cfg], stdout=log, stderr=log)
        return p, t0

    p, _ = start()
    end = time.monotonic() + 20
    while not listening(a.port):
        if time.monotonic() > end or p.poll() is not None:
            sys.exit("recovery.py: postern did not start; see " + logpath)
        time.sleep(0.02)
    body = "From: dev@lan.test\r\nSubject: load\r\n\r\n" + ("y" * 70 + "\r\n") * 14
    per = (a.messages + 9) // 10
    done = [0]
    lock = threading.Lock()

    def fill(k):
        n = min(per, a.messages - k * per)
        with smtplib.SMTP("127.0.0.1", a.port, timeout=30) as s:
            for _ in range(max(n, 0)):
                s.sendmail("dev@lan.test", ["ops@example.test"], body)
                with lock:
                    done[0] += 1

    t = time.monotonic()
    ths = [threading.Thread(target=fill, args=(k,)) for k in range(10)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    fill_s = time.monotonic() - t
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    print(f"recovery.py: queued {done[0]} messages in {fill_s:.1f}s; postern stopped")

    rec = Recorder()
    ctl = Controller(rec, hostname="127.0.0.1", port=a.port + 1)
    ctl.start()
    p, t0 = start()
    opened = accepting = None
    end = t0 + 60
    while time.monotonic() < end and (opened is None or accepting is None):
        if opened is None:
            with open(logpath, "rb") as f:
                if b"queue opened" in f.read():
                    opened = time.monotonic() - t0
        if accepting is None and listening(a.port):
            accepting = time.monotonic() - t0
        time.sleep(0.002)
    while time.monotonic() < end:
        with rec.lock:
            if rec.times:
                break
        time.sleep(0.002)
    with rec.lock:
        first = rec.times[0] - t0 if rec.times else None
    while time.monotonic() < t0 + 300:
        with rec.lock:
            if len(rec.times) >= done[0]:
                break
        time.sleep(0.05)
    with rec.lock:
        got, last = len(rec.times), (rec.times[-1] - t0 if rec.times else None)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    ctl.stop()

    def ms(x):
        return "n/a" if x is None else f"{x * 1000:.0f} ms"

    print(f"recovery.py: restart with {done[0]} queued: queue opened after {ms(opened)} "
          f"(includes exec and config load; 'queue opened' is logged after recovery), "
          f"accepting after {ms(accepting)}, first delivery after {ms(first)}, "
          f"{got}/{done[0]} delivered after {ms(last)}")
    subprocess.run(["rm", "-rf", work])
    return 0 if got >= done[0] else 1


if __name__ == "__main__":
    sys.exit(main())
