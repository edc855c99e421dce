#!/usr/bin/python3
"""Disk full: the client gets a 4xx, the daemon keeps running,
accepting resumes when space frees, and the half-written message leaves no
trace after a restart.

postern's queue lives on a 12 MiB tmpfs (room for two 4 MiB segments and a
little more); the upstream is down, so messages stay. Clients (smtplib)
send 700 KiB messages (each a file of its own) until one is refused. Then:
the daemon must still answer, the upstream (aiosmtpd) comes up, everything
acknowledged is delivered, the space frees and a new message gets a 250.
Finally postern restarts: the queue recovers with nothing set aside and no
spill file left over.

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
import time

from aiosmtpd.controller import Controller

from common import config, listening, wait_for


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.subjects = []

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("POSTERN_BIN", "target/release/postern"))
    ap.add_argument("--port", type=int, default=22025)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="postern-full-")
    mnt = os.path.join(work, "mnt")
    os.mkdir(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", mnt], check=True)
    cfg = os.path.join(work, "postern.toml")
    with open(cfg, "w") as f:
        f.write(config("full.test", "info", a.port, a.port + 1, f"{mnt}/queue",
                       server_extra='max_message_size = "2MiB"',
                       queue_extra='max_size = "1GiB"\nretry_intervals = ["1s"]'))
    logpath = os.path.join(work, "postern.log")
    procs = []

    def start():
        p = subprocess.Popen([a.bin, "serve", "--config", cfg],
                             stdout=open(logpath, "ab"), stderr=subprocess.STDOUT)
        procs.append(p)
        wait_for(lambda: listening(a.port) or p.poll() is not None, 20, "postern")
        if p.poll() is not None:
            raise SystemExit(f"diskfull.py: postern exited; see {logpath}")
        return p

    ok = False
    ctl = None
    try:
        p = start()
        acked = []
        refused = None
        for i in range(40):
            code, text = send(a.port, f"big {i}", 700 * 1024)
            if code == 250:
                acked.append(f"big {i}")
                continue
            refused = (code, text)
            break
        print(f"diskfull.py: {len(acked)} accepted, then {refused}")
        assert refused is not None, "the filesystem never filled up"
        assert 400 <= refused[0] < 500, f"disk full must be a 4xx, got {refused}"
        assert p.poll() is None, "postern died"
        # Still answering: a small message is refused or accepted, not a hang.
        code, _ = send(a.port, "small while full", 1000)
        assert code == 250 or 400 <= code < 500, code
        if code == 250:
            acked.append("small while full")
        # Space frees as the upstream comes back and takes the queue.
        rec = Recorder()
        ctl = Controller(rec, hostname="127.0.0.1", port=a.port + 1)
        ctl.start()

        def delivered():
            with rec.lock:
                return all(s in rec.subjects for s in acked)

        wait_for(delivered, 60, "everything acknowledged to be delivered")
        code, text = send(a.port, "after", 700 * 1024)
        assert code == 250, f"accepting must resume when space frees: {code} {text}"
        wait_for(lambda: "after" in rec.subjects, 30, "the last message")
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        # No trace after recovery.
        p = start()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        leftovers = os.listdir(os.path.join(mnt, "queue", "tmp")) + \
            os.listdir(os.path.join(mnt, "queue", "corrupt")) + \
            os.listdir(os.path.join(mnt, "queue", "big"))
        assert not leftovers, f"left behind: {leftovers}"
        with open(logpath, errors="replace") as f:
            log = f.read()
        assert "messages=0" in log.split("queue opened")[-2][-300:] or "messages=0" in log, log[-2000:]
        print(f"diskfull.py: ok ({len(acked)} acknowledged delivered, refused with {refused[0]}, "
              f"accepting resumed, no trace after restart)")
        ok = True
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if ctl:
            ctl.stop()
        subprocess.run(["umount", mnt])
        if ok:
            subprocess.run(["rm", "-rf", work])
        else:
            print(f"diskfull.py: FAILED; log in {logpath}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
