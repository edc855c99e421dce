#!/usr/bin/python3
"""Disk full: the client gets a 4xx, the daemon keeps running, nothing is
delivered twice, accepting resumes by itself when space frees, and the
half-written message leaves no trace after a restart.

Two rounds, each with postern's queue on its own 12 MiB tmpfs (room for two
4 MiB segments and a little more) and the upstream down at first, so
messages stay.

1. Messages in segments: smtplib clients send 20 KiB messages until one is
   refused; then a filler file takes every byte left on the tmpfs. The
   upstream (aiosmtpd) comes up and takes everything while the disk is
   still full: each message must arrive once; a new message must get a 250
   (the delivered segments are recycled: no one frees space by hand);
   postern restarts with the disk still full, and no message may arrive a
   second time (recovery must find none left).
2. Messages in files of their own (700 KiB each) until one is refused: the
   daemon must still answer, the upstream comes up, everything
   acknowledged is delivered, the space frees and a new message gets a 250.
   Finally postern restarts: the queue recovers with nothing set aside and
   no spill file left over.

Usage (root: it mounts a tmpfs): tests/crash/diskfull.py [--bin PATH] [--port P]
Loopback ports P, P+1 (default 22025). Needs Debian's python3-aiosmtpd.
"""
import argparse
import os
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading

from aiosmtpd.controller import Controller

from common import config, listening, wait_for


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.subjects = []

    def count(self, subject):
        with self.lock:
            return self.subjects.count(subject)

    async def handle_DATA(self, server, session, envelope):
        for line in envelope.content.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                with self.lock:
                    self.subjects.append(line[9:].decode())
                break
        return "250 2.0.0 ok"


def send(port, subject, size):
    msg = f"From: dev@lan.test\r\nSubject: {subject}\r\n\r\n" + ("z" * 98 + "\r\n") * (size // 100)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("dev@lan.test", ["ops@example.test"], msg)
        return 250, ""
    except smtplib.SMTPResponseException as e:
        return e.smtp_code, e.smtp_error.decode(errors="replace")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = list(e.recipients.values())[0]
        return code, text.decode(errors="replace")


def fill(path):
    """Write a file at path until the filesystem is full."""
    chunk = b"\0" * (64 << 10)
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError:
                break
    # The last partial chunk: byte by byte is too slow; 4 KiB pages will do.
    with open(path, "ab", buffering=0) as f:
        while True:
            try:
                f.write(b"\0" * 4096)
            except OSError:
                return


def last_opened(logpath):
    """The `messages=` count of the last "queue opened" line."""
    with open(logpath, errors="replace") as f:
        lines = [l for l in f if "queue opened" in l]
    for field in lines[-1].split():
        if field.startswith("messages="):
            return int(field.split("=", 1)[1])
    raise SystemExit(f"diskfull.py: no messages= in {lines[-1]!r}")


class Round:
    """postern on its own 12 MiB tmpfs; the upstream on port+1 when up."""

    def __init__(self, a, work, name):
        self.a = a
        self.mnt = os.path.join(work, name)
        os.mkdir(self.mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", self.mnt], check=True)
        self.cfg = os.path.join(work, f"{name}.toml")
        with open(self.cfg, "w") as f:
            f.write(config("full.test", "info", a.port, a.port + 1, f"{self.mnt}/queue",
                           server_extra='max_message_size = "2MiB"',
                           queue_extra='max_size = "1GiB"\nretry_intervals = ["1s"]'))
        self.logpath = os.path.join(work, f"{name}.log")
        self.procs = []
        self.ctl = None
        self.rec = Recorder()

    def start(self):
        p = subprocess.Popen([self.a.bin, "serve", "--config", self.cfg],
                             stdout=open(self.logpath, "ab"), stderr=subprocess.STDOUT)
        self.procs.append(p)
        wait_for(lambda: listening(self.a.port) or p.poll() is not None, 20, "postern")
        if p.poll() is not None:
            raise SystemExit(f"diskfull.py: postern exited; see {self.logpath}")
        return p

    def stop(self, p):
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)

    def upstream_up(self):
        self.ctl = Controller(self.rec, hostname="127.0.0.1", port=self.a.port + 1)
        self.ctl.start()

    def queue_empty(self):
        out = subprocess.run([self.a.bin, "queue", "list", "--config", self.cfg],
                             capture_output=True, text=True)
        return out.returncode == 0 and "queue is empty" in out.stdout

    def delivered(self, subjects):
        with self.rec.lock:
            return all(s in self.rec.subjects for s in subjects)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if self.ctl:
            self.ctl.stop()
        subprocess.run(["umount", self.mnt])


def segments_round(r):
    port = r.a.port
    p = r.start()
    acked = []
    refused = None
    for i in range(2000):
        code, text = send(port, f"seg {i}", 20 * 1024)
        if code == 250:
            acked.append(f"seg {i}")
            continue
        refused = (code, text)
        break
    print(f"diskfull.py: segments: {len(acked)} accepted, then {refused}")
    assert refused is not None, "the filesystem never filled up"
    assert 400 <= refused[0] < 500, f"disk full must be a 4xx, got {refused}"
    filler = os.path.join(r.mnt, "filler")
    fill(filler)
    st = os.statvfs(r.mnt)
    print(f"diskfull.py: segments: filler {os.path.getsize(filler)} B, {st.f_bavail * st.f_frsize} B left")
    assert p.poll() is None, "postern died"
    # The upstream takes the queue while the disk stays full.
    r.upstream_up()
    wait_for(lambda: r.delivered(acked), 60, "everything acknowledged to be delivered")
    code, text = send(port, "seg after", 20 * 1024)
    assert code == 250, f"accepting must resume by itself once delivered: {code} {text}"
    wait_for(lambda: r.delivered(["seg after"]), 30, "the message after")
    wait_for(r.queue_empty, 30, "the queue to be empty")
    acked.append("seg after")
    # Restart with the disk still full: nothing may come back.
    r.stop(p)
    p = r.start()
    left = last_opened(r.logpath)
    code, text = send(port, "seg sentinel", 1000)
    assert code == 250, f"after the restart: {code} {text}"
    # Recovered messages are due at once: by the time a message sent after
    # the restart arrives, any copy sent again would have too.
    wait_for(lambda: r.delivered(["seg sentinel"]), 30, "the sentinel")
    copies = {s: r.rec.count(s) for s in acked}
    twice = sorted((s for s, n in copies.items() if n != 1), key=lambda s: s.split()[-1])
    print(f"diskfull.py: segments: {len(acked)} acknowledged, {sum(copies.values())} arrived, "
          f"{len(twice)} more than once, {left} left in the queue at the restart")
    assert not twice, f"delivered more than once: {twice[:10]} ..."
    assert left == 0, f"{left} delivered messages recovered again after the restart"
    r.stop(p)
    os.unlink(filler)


def files_round(r):
    port = r.a.port
    p = r.start()
    acked = []
    refused = None
    for i in range(40):
        code, text = send(port, f"big {i}", 700 * 1024)
        if code == 250:
            acked.append(f"big {i}")
            continue
        refused = (code, text)
        break
    print(f"diskfull.py: files: {len(acked)} accepted, then {refused}")
    assert refused is not None, "the filesystem never filled up"
    assert 400 <= refused[0] < 500, f"disk full must be a 4xx, got {refused}"
    assert p.poll() is None, "postern died"
    # Still answering: a small message is refused or accepted, not a hang.
    code, _ = send(port, "small while full", 1000)
    assert code == 250 or 400 <= code < 500, code
    if code == 250:
        acked.append("small while full")
    # Space frees as the upstream comes back and takes the queue.
    r.upstream_up()
    wait_for(lambda: r.delivered(acked), 60, "everything acknowledged to be delivered")
    code, text = send(port, "after", 700 * 1024)
    assert code == 250, f"accepting must resume when space frees: {code} {text}"
    wait_for(lambda: r.delivered(["after"]), 30, "the last message")
    # The upstream has it; postern records that a moment later. A stop in
    # between would rightly deliver it again after the restart.
    wait_for(r.queue_empty, 30, "the queue to be empty")
    r.stop(p)
    # No trace after recovery.
    p = r.start()
    r.stop(p)
    q = os.path.join(r.mnt, "queue")
    leftovers = os.listdir(os.path.join(q, "tmp")) + \
        os.listdir(os.path.join(q, "corrupt")) + \
        os.listdir(os.path.join(q, "big"))
    assert not leftovers, f"left behind: {leftovers}"
    assert last_opened(r.logpath) == 0
    print(f"diskfull.py: files: {len(acked)} acknowledged delivered, refused with {refused[0]}, "
          f"accepting resumed, no trace after restart")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("POSTERN_BIN", "target/release/postern"))
    ap.add_argument("--port", type=int, default=22025)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="postern-full-")
    ok = False
    r = None
    try:
        for name, run in (("segments", segments_round), ("files", files_round)):
            r = Round(a, work, name)
            try:
                run(r)
            finally:
                r.close()
        print("diskfull.py: ok")
        ok = True
    finally:
        if ok:
            subprocess.run(["rm", "-rf", work])
        else:
            print(f"diskfull.py: FAILED; logs in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
