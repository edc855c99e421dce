#!/usr/bin/python3
"""postern's [[filter]] rules and [storm] suppression against real peers.

Clients: swaks and Python smtplib (messages with real MIME attachments
built by Python's email package). Upstreams: aiosmtpd (records each
envelope and message) for the default route, Postfix's smtp-sink (dumps
each message to a file) for a route a rule names.

Checks, each against what the client saw and what the upstream got:
  reject      a recipient refused at RCPT: swaks sees the rule's code and text
  discard     taken (250) and dropped: never reaches the upstream
  headers     a field added and one removed: as the upstream receives it
  redirect    the recipient replaced: the upstream's RCPT is the new one
  hold        taken (250), `queue show` says held by the rule, not sent;
              `postern queue release` sends it, once
  route       a named route: the message goes to smtp-sink, not aiosmtpd
  attachment  a .exe attachment refused at the end of data (550 and the
              text), a .pdf one passes and arrives whole
  storm       30 copies of one alert (numbers differ) from smtplib: `pass`
              arrive at once, the rest are held, and at the window's end
              one digest names the count; nothing else arrives and the
              queue is empty

Run with Debian's /usr/bin/python3 (python3-aiosmtpd).
Usage: filters.py --bin target/release/postern --work DIR --port-base N
"""

import argparse
import email
import email.policy
import glob
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time
from email.message import EmailMessage

from aiosmtpd.controller import Controller

DEADLINE = 30.0
# The storm: threshold 5, pass 2, a window of 10 s.
WINDOW = 10
PASS = 2
COPIES = 30
FAILURES = []


def check(name, ok, detail=""):
    print("%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""), flush=True)
    if not ok:
        FAILURES.append(name)


def wait_port(port, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_for(pred, timeout=DEADLINE):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return pred()


class Recorder:
    """aiosmtpd handler: keeps (mail_from, rcpt_tos, content) of each message."""

    def __init__(self):
        self.lock = threading.Lock()
        self.got = []

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.got.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 2.0.0 recorded"

    def messages(self):
        with self.lock:
            return list(self.got)

    def with_token(self, token):
        return [m for m in self.messages() if token.encode() in m[2]]


def swaks(port, *args):
    r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(port), "--timeout", "30",
                        "--helo", "device.lan"] + list(args), capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def parse(content):
    return email.message_from_bytes(content, policy=email.policy.default)


def run_checks(port, up, sink, log_path, bin_, cfg):
    def log():
        with open(log_path, errors="replace") as f:
            return f.read()

    # reject: at RCPT, with the rule's own code and text.
    rc, out = swaks(port, "-f", "dev@lan.example", "-t", "ceo@example.net",
                    "--header", "Subject: quarterly figures")
    check("reject: swaks sees the rule's 550 5.7.1 and its text at RCPT",
          rc != 0 and "550 5.7.1 Not for the CEO, write to ops@" in out,
          [l for l in out.splitlines() if " 550 " in l][:1].__repr__())
    check("reject: logged with the rule's name", "reason=filter:no-ceo" in log())

    # discard: 250 to the client, nothing upstream (a marker sent after it
    # arrives; the discarded one never does).
    rc, out = swaks(port, "-f", "selftest@nas.lan", "-t", "ops@example.net",
                    "--header", "Subject: NAS self-test passed tokdiscard")
    swaks(port, "-f", "dev@lan.example", "-t", "ops@example.net", "--header", "Subject: marker tokmarker")
    arrived = wait_for(lambda: up.with_token("tokmarker"))
    check("discard: swaks sees 250 queued, the upstream never gets it",
          rc == 0 and "250 2.0.0 Ok: queued as" in out and arrived and not up.with_token("tokdiscard"),
          "rc=%d marker=%s" % (rc, bool(arrived)))
    check("discard: logged with the rule's name", "rule=nas-selftest" in log() and "discarded by [[filter]]" in log())

    # headers: one added, one removed, as the upstream receives them.
    rc, out = swaks(port, "-f", "printer@lan.example", "-t", "ops@example.net",
                    "--header", "Subject: toner low tokheaders", "--header", "X-Mailer: HP LaserJet 4250",
                    "--header", "X-Internal-Ip: 10.0.0.5")
    got = wait_for(lambda: up.with_token("tokheaders"))
    m = parse(got[0][2]) if got else None
    check("headers: X-Device added and X-Internal-Ip removed at the upstream",
          m is not None and m["X-Device"] == "printer" and m["X-Internal-Ip"] is None
          and m["X-Mailer"] == "HP LaserJet 4250",
          "got=%s" % (None if m is None else dict(m.items()).get("X-Device")))

    # redirect: the upstream's RCPT is the rule's address.
    rc, out = swaks(port, "-f", "cron@lan.example", "-t", "root@lan.example",
                    "--header", "Subject: cron output tokredirect")
    got = wait_for(lambda: up.with_token("tokredirect"))
    check("redirect: root@ arrives for ops@example.net",
          rc == 0 and bool(got) and got[0][1] == ["ops@example.net"],
          "rcpts=%s" % (got[0][1] if got else None))

    # hold: 250 to the client, kept in the queue and not sent, until the
    # admin releases it with `postern queue release`.
    rc, out = swaks(port, "-f", "dev@lan.example", "-t", "ops@example.net",
                    "--header", "Subject: firmware update tokhold")
    qid = re.search(r"queued as ([0-9A-F]+)", out)
    qid = qid.group(1) if qid else ""
    swaks(port, "-f", "dev@lan.example", "-t", "ops@example.net", "--header", "Subject: marker tokmark2")
    arrived = wait_for(lambda: up.with_token("tokmark2"))
    shown = subprocess.run([bin_, "queue", "show", qid, "--config", cfg], capture_output=True, text=True)
    check("hold: swaks sees 250, queue show says held by the rule, the upstream does not get it",
          rc == 0 and bool(qid) and bool(arrived) and not up.with_token("tokhold")
          and "held (by a [[filter]] rule)" in shown.stdout,
          "id=%s show=%r" % (qid, shown.stdout.strip()[-120:]))
    rel = subprocess.run([bin_, "queue", "release", qid, "--config", cfg], capture_output=True, text=True)
    got = wait_for(lambda: up.with_token("tokhold"))
    check("hold: released with postern queue release, it arrives once",
          rel.returncode == 0 and len(got or []) == 1,
          "release=%r arrived=%d" % ((rel.stdout + rel.stderr).strip(), len(got or [])))

    # route: a rule sends the camera's mail over the route named "sink".
    rc, out = swaks(port, "-f", "cam1@camera.lan", "-t", "ops@example.net",
                    "--header", "Subject: motion tokroute")

    def in_sink():
        for f in glob.glob(os.path.join(sink, "*")):
            with open(f, "rb") as fh:
                if b"tokroute" in fh.read():
                    return f
        return None
    f = wait_for(in_sink)
    check("route: the named route's upstream (smtp-sink) gets it, aiosmtpd does not",
          rc == 0 and bool(f) and not up.with_token("tokroute"), "file=%s" % f)

    # attachment: real MIME from Python's email package.
    def with_attachment(name, maintype, subtype, data, token):
        msg = EmailMessage()
        msg["From"] = "scanner@lan.example"
        msg["To"] = "ops@example.net"
        msg["Subject"] = "scan %s" % token
        msg.set_content("Your scan is attached.\n")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        return msg

    exe = with_attachment("setup.exe", "application", "octet-stream", b"MZ\x90\x00" + os.urandom(2000), "tokexe")
    pdf_bytes = b"%PDF-1.4\n" + os.urandom(3000)
    pdf = with_attachment("scan 01.pdf", "application", "pdf", pdf_bytes, "tokpdf")
    refused = None
    with smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE) as s:
        try:
            s.send_message(exe)
        except smtplib.SMTPDataError as e:
            refused = (e.smtp_code, e.smtp_error.decode(errors="replace"))
        s.send_message(pdf)
    check("attachment: a .exe part is refused at the end of data with the rule's text",
          refused is not None and refused[0] == 550 and "Executables are not accepted here" in refused[1],
          "smtplib got %s" % (refused,))
    got = wait_for(lambda: up.with_token("tokpdf"))
    parts = []
    if got:
        parts = [p for p in parse(got[0][2]).iter_attachments()]
    check("attachment: a .pdf part passes and arrives whole",
          len(parts) == 1 and parts[0].get_filename() == "scan 01.pdf" and parts[0].get_content() == pdf_bytes
          and not up.with_token("tokexe"),
          "parts=%d" % len(parts))

    # storm: 30 copies of one alert, numbers differing, from smtplib.
    before = len(up.messages())
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE) as s:
        for i in range(COPIES):
            msg = EmailMessage()
            msg["From"] = "ups@ups.lan"
            msg["To"] = "ops@example.net"
            msg["Subject"] = "UPS 3: on battery since 02:%02d:%02d (event 0x%x)" % (10 + i // 6, i % 6 * 10, 0x7f3a00 + i)
            msg.set_content("Utility power failure. Runtime left: %d minutes. tokstorm\n" % (40 - i))
            s.send_message(msg, from_addr="ups@ups.lan", to_addrs=["ops@example.net"])
    sent_in = time.monotonic() - started

    def copies():
        return [m for m in up.with_token("tokstorm") if b"[alert storm]" not in m[2]]
    wait_for(lambda: len(copies()) >= PASS, 10)
    held = log().count("storm: copy held back")
    check("storm: %d copies taken (250 each) in %.1f s; %d arrive at once, %d held (one log line each)"
          % (COPIES, sent_in, PASS, COPIES - PASS),
          len(copies()) == PASS and held == COPIES - PASS, "arrived=%d held_lines=%d" % (len(copies()), held))

    def digest():
        return [m for m in up.messages() if b"[alert storm]" in m[2]]
    d = wait_for(digest, WINDOW + DEADLINE)
    text = ""
    subject = ""
    if d:
        m = parse(d[0][2])
        subject = str(m["Subject"])
        text = m.get_content()
    check("storm: one digest at the window's end naming the count",
          len(d) == 1 and "(repeated %d times)" % COPIES in subject
          and ("This alert was repeated %d times between" % COPIES) in text
          and "Subject: UPS 3: on battery since 02:14:50" in text and d[0][1] == ["ops@example.net"],
          "subject=%r" % subject)
    time.sleep(0.5)
    q = subprocess.run([bin_, "queue", "list", "--config", cfg], capture_output=True, text=True)
    check("storm: nothing else arrives, the held copies are gone from the queue",
          len(up.messages()) - before == PASS + 1 and "removed=%d" % (COPIES - PASS) in log()
          and q.returncode == 0 and "ups@ups.lan" not in q.stdout,
          "upstream got %d, queue list: %s" % (len(up.messages()) - before, q.stdout.strip()[:120]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--port-base", type=int, default=32000)
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    sink = os.path.join(work, "sink")
    os.makedirs(sink)
    if os.getuid() == 0:
        shutil.chown(sink, "postfix")
    p_up, p_sink, p_postern = a.port_base, a.port_base + 1, a.port_base + 2
    rec = Recorder()
    up = Controller(rec, hostname="127.0.0.1", port=p_up)
    up.start()
    procs = []
    try:
        user = ["-u", "postfix"] if os.getuid() == 0 else []
        sink_log = open(os.path.join(work, "sink.log"), "w")
        procs.append(subprocess.Popen(["smtp-sink"] + user + ["-h", "sink.test", "-d", sink + "/%Y%m%d%H%M%S.",
                                                             "127.0.0.1:%d" % p_sink, "64"],
                                      stdout=sink_log, stderr=subprocess.STDOUT))
        if not wait_port(p_sink):
            check("smtp-sink listens", False)
            return 1
        cfg = os.path.join(work, "postern.toml")
        with open(cfg, "w") as f:
            f.write('''hostname = "relay.test"
log_level = "debug"
[server]
listen = ["127.0.0.1:%(port)d"]
[policy]
allow_clients = ["127.0.0.1/32"]
[queue]
dir = "%(work)s/queue"
retry_intervals = ["1s"]

[[route]]
name = "sink"
domains = ["sink.invalid"]
kind = "smarthost"
host = "127.0.0.1"
port = %(sink)d
tls = "none"

[[route]]
domains = ["*"]
kind = "smarthost"
host = "127.0.0.1"
port = %(up)d
tls = "none"

[[filter]]
name = "no-ceo"
recipient = ["ceo@*"]
reject = "550 5.7.1 Not for the CEO, write to ops@"

[[filter]]
name = "nas-selftest"
sender = ["*@nas.lan"]
subject = ["*self-test passed*"]
discard = true

[[filter]]
name = "tag-printer"
header = ["X-Mailer: HP*"]
add_header = ["X-Device: printer"]
remove_header = ["X-Internal-Ip"]

[[filter]]
name = "root-to-ops"
recipient = ["root@*"]
redirect = ["ops@example.net"]

[[filter]]
name = "hold-firmware"
subject = ["*firmware update*"]
hold = true

[[filter]]
name = "cameras-by-sink"
sender = ["*@camera.lan"]
route = "sink"

[[filter]]
name = "no-executables"
attachment_ext = ["exe", "js", "scr"]
reject = "550 5.7.1 Executables are not accepted here"

[storm]
window = "%(window)ds"
threshold = 5
pass = %(pass_)d
senders = ["*@ups.lan"]
save_interval = "1m"
''' % {"port": p_postern, "work": work, "sink": p_sink, "up": p_up, "window": WINDOW, "pass_": PASS})
        chk = subprocess.run([a.bin, "check", "--config", cfg], capture_output=True, text=True)
        check("postern check accepts the rules and [storm], no warning about them",
              chk.returncode == 0 and "storm" not in (chk.stdout + chk.stderr).lower(),
              (chk.stdout + chk.stderr).strip()[:200])
        log_path = os.path.join(work, "postern.log")
        logf = open(log_path, "w")
        env = dict(os.environ, NO_COLOR="1")
        procs.append(subprocess.Popen([a.bin, "serve", "--config", cfg], stdout=subprocess.DEVNULL,
                                      stderr=logf, env=env))
        if not wait_port(p_postern):
            check("postern listens", False)
            return 1
        run_checks(p_postern, rec, sink, log_path, a.bin, cfg)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        up.stop()
    if FAILURES:
        print("%d failed: %s (work directory: %s)" % (len(FAILURES), ", ".join(FAILURES), work))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
