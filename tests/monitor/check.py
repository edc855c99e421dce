#!/usr/bin/env python3
"""The status listener and `postern status` against real software.

Starts postern with `[status] listen` on loopback, two routes (a maildir
outbox for most mail, and a scripted smarthost for fail.test that answers
RCPT with `451 4.7.1 <script>alert(1)</script> ...`, so the page has
hostile text to escape), and a deny list; sends mail with Python's
smtplib; then checks:

- /metrics with the Prometheus text-format parser (prometheus_client):
  every family present with its type, counters that count what was sent,
  refusals by reason word, a histogram with +Inf equal to its count;
- / with a real headless browser (Chromium): the DOM has the judgement,
  the queue, each route's state and the last failure, the upstream's text
  shown as text (no <script> element), and a screenshot is taken;
- `postern status` exit codes: 0 healthy, 1 warning (a message older
  than delay_warning), 2 when the daemon is down; --prometheus parses too.

Usage: /usr/bin/python3 tests/monitor/check.py --bin target/release/postern
       [--keep] [--shot FILE]
Needs Debian's python3-prometheus-client and chromium (see
.ci/steps/45-monitor.sh). Every wait polls with a deadline; every process
started here is stopped on exit.
"""

import argparse
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

DEADLINE = 20.0
HOSTILE = "<script>alert(1)</script> & 'quotes' \"too\""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ScriptedUpstream(threading.Thread):
    """An SMTP server that takes MAIL and answers every RCPT with 451 and
    hostile text (what a misbehaving upstream may send)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        f = conn.makefile("rb")
        try:
            conn.sendall(b"220 upstream.test ESMTP\r\n")
            for line in f:
                verb = line.split(b" ")[0].strip().upper()
                if verb in (b"EHLO", b"HELO"):
                    conn.sendall(b"250-upstream.test\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    conn.sendall(b"250 2.1.0 ok\r\n")
                elif verb == b"RCPT":
                    conn.sendall(("451 4.7.1 %s try later\r\n" % HOSTILE).encode())
                elif verb == b"QUIT":
                    conn.sendall(b"221 2.0.0 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 2.0.0 ok\r\n")
        except OSError:
            pass
        finally:
            conn.close()


def wait_for(what, probe):
    end = time.monotonic() + DEADLINE
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > end:
            raise SystemExit("FAIL: timed out waiting for %s" % what)
        time.sleep(0.1)


def http_get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams, family, name, labels=None):
    for s in fams[family].samples:
        if s.name == name and (labels is None or all(s.labels.get(k) == v for k, v in labels.items())):
            return s.value
    return None


def check(cond, what):
    if not cond:
        raise SystemExit("FAIL: " + what)
    print("ok: " + what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--shot", help="where to keep the page's screenshot")
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("FAIL: chromium is not installed (apt-get install chromium)")

    work = tempfile.mkdtemp(prefix="postern-monitor-")
    up = ScriptedUpstream()
    up.start()
    smtp_port, web_port = free_port(), free_port()
    cfg = os.path.join(work, "postern.toml")
    with open(cfg, "w") as f:
        f.write(
            """hostname = "relay.test"
[server]
listen = ["127.0.0.1:%d"]
[policy]
deny_recipients = ["blocked@example.test"]
[queue]
dir = "queue"
retry_intervals = ["1h"]
delay_warning = "3s"
[status]
listen = "127.0.0.1:%d"
[[route]]
domains = ["fail.test"]
kind = "smarthost"
host = "127.0.0.1"
port = %d
tls = "none"
[[route]]
domains = ["*"]
kind = "maildir"
dir = "out"
"""
            % (smtp_port, web_port, up.port)
        )
    log = open(os.path.join(work, "postern.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--config", cfg], cwd=work, stderr=log)
    ok = False
    try:
        logtext = lambda: open(os.path.join(work, "postern.log")).read()
        wait_for("the status listener", lambda: "status listener" in logtext())

        def status(*extra):
            r = subprocess.run([binary, "status", "--config", cfg, *extra], cwd=work,
                               capture_output=True, text=True)
            return r.returncode, r.stdout

        code, out = status()
        check(code == 0 and out.startswith("OK: 0 queued"), "postern status exits 0 when healthy")

        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as s:
            s.ehlo("sensor.lan")
            s.sendmail("dev@lan.test", ["ops@example.test"], b"Subject: ok\r\n\r\nfine\r\n")
            s.sendmail("dev@lan.test", ["ops@fail.test"], b"Subject: stuck\r\n\r\nwaits\r\n")
            try:
                s.sendmail("dev@lan.test", ["blocked@example.test"], b"Subject: no\r\n\r\nx\r\n")
            except smtplib.SMTPRecipientsRefused:
                pass
            else:
                raise SystemExit("FAIL: a denied recipient was accepted")

        def metrics_ready():
            _, _, text = http_get(web_port, "/metrics")
            fams = families(text)
            # The delivered message leaves the queue once its outcome is
            # written, a moment after it is counted.
            if (sample(fams, "postern_delivered", "postern_delivered_total", {"route": "maildir"}) == 1
                    and sample(fams, "postern_deferred", "postern_deferred_total", {"route": "127.0.0.1"}) == 1
                    and sample(fams, "postern_queue_messages", "postern_queue_messages") == 1):
                return text
            return None

        text = wait_for("one delivered, one deferred, one queued in /metrics", metrics_ready)
        _, ctype, _ = http_get(web_port, "/metrics")
        check(ctype.startswith("text/plain; version=0.0.4"), "/metrics has the Prometheus content type")
        fams = families(text)
        want = {
            "postern_up": "gauge",
            "postern_health": "gauge",
            "postern_queue_messages": "gauge",
            "postern_queue_bytes": "gauge",
            "postern_queue_deferred_messages": "gauge",
            "postern_queue_held_messages": "gauge",
            "postern_queue_oldest_age_seconds": "gauge",
            "postern_sessions_open": "gauge",
            "postern_messages_accepted": "counter",
            "postern_refused": "counter",
            "postern_delivered": "counter",
            "postern_deferred": "counter",
            "postern_bounced": "counter",
            "postern_route_waiting_messages": "gauge",
            "postern_route_failing_seconds": "gauge",
            "postern_delivery_latency_seconds": "histogram",
        }
        for name, kind in want.items():
            check(name in fams and fams[name].type == kind, "family %s is a %s" % (name, kind))
        check(sample(fams, "postern_messages_accepted", "postern_messages_accepted_total") == 2,
              "two messages accepted")
        check(sample(fams, "postern_queue_messages", "postern_queue_messages") == 1, "one message queued")
        check(sample(fams, "postern_route_waiting_messages", "postern_route_waiting_messages",
                     {"route": "127.0.0.1"}) == 1, "it waits for the fail.test route")
        refused = {s.labels["reason"]: s.value for s in fams["postern_refused"].samples
                   if s.name == "postern_refused_total"}
        check(sum(refused.values()) >= 1, "the denied recipient is counted by reason: %s" % refused)
        h = fams["postern_delivery_latency_seconds"].samples
        inf = [s.value for s in h if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"]
        count = [s.value for s in h if s.name.endswith("_count")]
        check(inf == [1.0] and count == [1.0], "latency histogram: +Inf bucket equals the count (1)")

        # The page, in a real browser.
        _, ctype, html = http_get(web_port, "/")
        check(ctype.startswith("text/html"), "/ is HTML")
        check("<script" not in html.lower(), "the page carries no script")
        url = "http://127.0.0.1:%d/" % web_port
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True,
                             timeout=120).stdout
        check("postern on relay.test" in dom, "Chromium renders the page title and heading")
        check(re.search(r'<p id="health">(OK|WARNING): 1 queued, oldest \d+s, route 127\.0\.0\.1 failing: ', dom)
              is not None, "the judgement and the failing route are on the page")
        check(re.search(r"<td>maildir</td><td>ok</td>", dom) is not None, "the maildir route is ok")
        check(re.search(r"<td>127\.0\.0\.1</td><td>failing for \d+s</td><td>1</td>", dom) is not None,
              "the failing route, with one message waiting")
        check("&lt;script&gt;alert(1)&lt;/script&gt;" in dom and "<script" not in dom.lower(),
              "the upstream's hostile text is shown as text, not run")
        check("ops@fail.test" in dom, "the last failure names its recipient")
        check('http-equiv="refresh"' in dom, "the page refreshes itself")
        shot = args.shot or os.path.join(work, "status.png")
        subprocess.run([chromium, *flags, "--window-size=1024,900", "--screenshot=" + shot, url],
                       capture_output=True, timeout=120)
        with open(shot, "rb") as f:
            png = f.read()
        check(png.startswith(b"\x89PNG") and len(png) > 2000, "screenshot taken (%d bytes, %s)" % (len(png), shot))

        # postern status: warning once the stuck message is older than 3s.
        code, out = wait_for("postern status to warn", lambda: (lambda r: r if r[0] == 1 else None)(status()))
        check(out.startswith("WARNING: 1 queued"), "postern status exits 1 when mail waits too long")
        code, prom = status("--prometheus")
        fams = families(prom)
        check(code == 1 and sample(fams, "postern_health", "postern_health") == 1,
              "postern status --prometheus parses, health 1")
        proc.terminate()
        proc.wait(timeout=DEADLINE)
        code, out = status()
        check(code == 2 and out.startswith("CRITICAL: postern is not running"), "exit 2 when the daemon is down")
        code, prom = status("--prometheus")
        check(code == 2 and sample(families(prom), "postern_up", "postern_up") == 0,
              "postern_up 0 when the daemon is down")
        ok = True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        if not ok:
            print("---- postern log ----")
            print(open(os.path.join(work, "postern.log")).read()[-4000:])
            print("work directory kept: " + work)
        elif args.keep:
            print("work directory kept: " + work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("monitor: all checks passed")


if __name__ == "__main__":
    main()
