#!/usr/bin/python3
"""Chaos harness: postern against upstreams that misbehave, counting copies.

One postern relays to one scripted upstream per case (a [[route]] per
recipient domain). Each upstream follows a script, one behaviour per
connection, the last one repeating: no greeting, garbage for a greeting,
closing after 354, 250 then closing, hanging after the dot, a 100 KB or a
300-line 250 to the dot, a recipient mix (250 / 450 once / 550), a
certificate postern must not trust, a slow reader; and a route back into
postern itself (a mail loop, once with the sender inside the loop so that
its failure report loops too). Failure reports go to the
sender's domain, a well-behaved upstream that counts them. Then, per case:
how many copies of each message arrived (by Message-ID), how many failure
reports, and whether that is what the case allows:

  - nothing lost: every message arrives, or is still queued when the case
    says so (the untrusted certificate), or is reported;
  - nothing duplicated where the protocol lets the relay avoid it (a 250
    that came, however long or oddly formatted, is final); a connection
    lost after the dot before any reply is RFC 1047's ambiguity, counted
    but allowed one extra copy;
  - every failure reported exactly once;
  - a route whose upstream never greets delays only its own mail: a
    message to a healthy route meanwhile arrives within a few seconds.

Usage: tests/chaos/chaos.py [--bin PATH] [--port-base P] [--only CASE ...]
Loopback ports P .. P+20 (default 23025). Python's standard library only.
Exits 1 if any case fails; prints a table either way.
"""
import argparse
import asyncio
import os
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crash"))
from common import listening, wait_for  # noqa: E402

DEADLINE = 90  # seconds for every case to reach its end state
ID = re.compile(rb"chaos-([a-z0-9_]+)-(\d+)@")


class Upstream:
    """A scripted SMTP server: behaviour per connection, recording what it
    accepts (Message-ID tokens) and, for the report sink, what reports
    mention."""

    def __init__(self, name, script, tls=None):
        self.name = name
        self.script = script
        self.tls = tls
        self.conns = 0
        self.open_conns = 0
        self.lock = threading.Lock()
        self.copies = {}  # (case, n) -> [rcpts of each copy]
        self.mentions = {}  # (case, n) -> number of reports naming it
        self.seen_rcpt = set()

    def mode(self):
        with self.lock:
            m = self.script[min(self.conns, len(self.script) - 1)]
            self.conns += 1
            return m

    async def handle(self, reader, writer):
        mode = self.mode()
        with self.lock:
            self.open_conns += 1
        try:
            await self.session(mode, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            pass
        finally:
            with self.lock:
                self.open_conns -= 1
            try:
                writer.close()
            except Exception:
                pass

    async def session(self, mode, reader, writer):
        async def say(text):
            writer.write(text.encode() if isinstance(text, str) else text)
            await writer.drain()

        if mode == "nogreet":
            await reader.read()  # until postern gives up
            return
        if mode == "garbage":
            await say(b"\x00\xff\xfe garbage \x01\x02\r\n")
            await reader.read()
            return
        await say("220 chaos.test ESMTP\r\n")
        rcpts = []
        secure = False
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                ext = ["chaos.test", "PIPELINING", "8BITMIME", "SIZE 20000000"]
                if self.tls and not secure:
                    ext.append("STARTTLS")
                await say("".join(f"250-{e}\r\n" for e in ext[:-1]) + f"250 {ext[-1]}\r\n")
            elif verb == b"STAR":
                await say("220 2.0.0 go ahead\r\n")
                await writer.start_tls(self.tls)
                secure = True
            elif verb == b"MAIL":
                rcpts = []
                await say("250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                addr = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
                local = addr.split("@")[0]
                if mode == "rcpt_mix" and local.startswith("bad"):
                    await say("550 5.1.1 no such user here\r\n")
                elif mode == "rcpt_mix" and local.startswith("tmp") and addr not in self.seen_rcpt:
                    self.seen_rcpt.add(addr)
                    await say("450 4.2.1 mailbox busy, try later\r\n")
                else:
                    rcpts.append(addr)
                    await say("250 2.1.5 ok\r\n")
            elif verb == b"DATA":
                if not rcpts:
                    await say("554 5.5.1 no valid recipients\r\n")
                    continue
                await say("354 go ahead\r\n")
                if mode == "close_after_354":
                    return
                data = await self.read_data(reader, slow=(mode == "slow_reader"))
                if data is None:
                    return
                self.record(data, rcpts)
                if mode == "ok_then_close":
                    await say("250 2.0.0 ok\r\n")
                    return
                if mode == "hang_after_dot":
                    # Accepted on our side; the reply never comes and the
                    # connection drops: postern cannot know.
                    await asyncio.sleep(2)
                    return
                if mode == "long_250":
                    await say("250 2.0.0 " + "x" * 100_000 + "\r\n")
                elif mode == "multiline_250":
                    await say("".join(f"250-2.0.0 line {i} of a chatty reply\r\n" for i in range(300)) + "250 2.0.0 ok\r\n")
                else:
                    await say("250 2.0.0 ok queued\r\n")
            elif verb == b"RSET" or verb == b"NOOP":
                await say("250 2.0.0 ok\r\n")
            elif verb == b"QUIT":
                await say("221 2.0.0 bye\r\n")
                return
            else:
                await say("502 5.5.2 what?\r\n")

    async def read_data(self, reader, slow):
        buf = bytearray()
        while True:
            if slow:
                chunk = await reader.read(2048)
                await asyncio.sleep(0.02)  # about 100 KB/s: a slow reader
            else:
                chunk = await reader.read(65536)
            if not chunk:
                return None
            buf += chunk
            if buf.endswith(b"\r\n.\r\n") or buf == b".\r\n":
                return bytes(buf)

    def record(self, data, rcpts):
        head = data.split(b"\r\n\r\n", 1)[0]
        own = ID.search(head)
        with self.lock:
            if self.name == "reports":
                for m in set(ID.findall(data)):
                    key = (m[0].decode(), int(m[1]))
                    self.mentions[key] = self.mentions.get(key, 0) + 1
            elif own:
                key = (own.group(1).decode(), int(own.group(2)))
                self.copies.setdefault(key, []).append(list(rcpts))


# case: (script, recipients' local parts, route tls, what is expected)
# expected: copies per message (exact, or (min, max)), reports, still queued
CASES = {
    "good": (["good"], ["ok"], "none", dict(copies=1)),
    # Several messages, so that more wait for the stuck route's only
    # connection than there are delivery workers.
    "nogreet": (["nogreet", "good"], ["ok"], "none", dict(copies=1, count=6)),
    "garbage": (["garbage", "good"], ["ok"], "none", dict(copies=1)),
    "close_after_354": (["close_after_354", "good"], ["ok"], "none", dict(copies=1)),
    "ok_then_close": (["ok_then_close", "good"], ["ok"], "none", dict(copies=1)),
    "hang_after_dot": (["hang_after_dot", "good"], ["ok"], "none", dict(copies=(1, 2))),
    "long_250": (["long_250"], ["ok"], "none", dict(copies=1)),
    "multiline_250": (["multiline_250"], ["ok"], "none", dict(copies=1)),
    "rcpt_mix": (["rcpt_mix"], ["ok", "tmp", "bad"], "none", dict(copies=2, reports=1)),
    "untrusted_tls": (["good"], ["ok"], "starttls", dict(copies=0, queued=True)),
    "slow_reader": (["slow_reader"], ["ok"], "none", dict(copies=1, size=200_000)),
    # A route back into postern itself: the hop count stops the loop
    # (554 5.4.6) and the sender gets one report; the report does not loop.
    "loop": (None, ["ok"], "none", dict(copies=0, reports=1)),
    # The same, with the sender inside the loop: its report loops too until
    # the hop count stops it; a report about a report is not made, the
    # postmaster gets one copy (and the queue ends empty).
    "loop_report": (None, ["ok"], "none", dict(copies=0, reports=1, sender="dev@loop-report.test")),
}


def run_loop(loop):
    asyncio.set_event_loop(loop)
    loop.run_forever()


def self_signed(work):
    key, crt = os.path.join(work, "bad.key"), os.path.join(work, "bad.crt")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", crt],
        check=True, capture_output=True,
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    return ctx


def config(port, routes, queue_dir):
    out = f"""hostname = "relay.test"
log_level = "info"
postmaster = "postmaster@lan.test"

[server]
listen = ["127.0.0.1:{port}"]
max_message_size = "10MiB"
max_messages_per_minute = 1000000
max_recipients_per_minute = 1000000
max_connections_per_minute = 1000000

[policy]
allow_clients = ["127.0.0.1/32"]

[queue]
dir = "{queue_dir}"
retry_intervals = ["1s"]
"""
    for domain, up_port, tls, timeout in routes:
        out += f"""
[[route]]
domains = ["{domain}"]
kind = "smarthost"
host = "127.0.0.1"
port = {up_port}
tls = "{tls}"
connect_timeout = "2s"
command_timeout = "{timeout}"
max_connections = 1
"""
    return out


def send(port, case, n, rcpts, size=0, sender="dev@lan.test"):
    body = ("chaos " * 16 + "\r\n") * (size // 100) if size else "one message\r\n"
    msg = (f"From: {sender}\r\nSubject: chaos {case} {n}\r\n"
           f"Message-ID: <chaos-{case}-{n}@lan.test>\r\n\r\n{body}")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(sender, [f"{r}@{case.replace('_', '-')}.test" for r in rcpts], msg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "postern"))
    ap.add_argument("--port-base", type=int, default=23025)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    cases = {k: v for k, v in CASES.items() if not args.only or k in args.only}
    work = tempfile.mkdtemp(prefix="postern-chaos-")
    loop = asyncio.new_event_loop()
    # A refused handshake (the untrusted certificate) is the expected end
    # of that case, not something to print.
    loop.set_exception_handler(
        lambda lp, ctx: None if isinstance(ctx.get("exception"), ssl.SSLError) else lp.default_exception_handler(ctx))
    threading.Thread(target=run_loop, args=(loop,), daemon=True).start()
    bad_tls = self_signed(work)
    ups, routes = {}, []
    port = args.port_base + 1
    pport = args.port_base
    for name, (script, _, tls, _) in cases.items():
        up = Upstream(name, script or ["good"], tls=bad_tls if tls != "none" else None)
        ups[name] = up
        if script is None:
            # Not an upstream of ours: postern's own listener.
            routes.append((f"{name.replace('_', '-')}.test", pport, tls, "5s"))
            continue
        asyncio.run_coroutine_threadsafe(asyncio.start_server(up.handle, "127.0.0.1", port, limit=1 << 20), loop).result()
        # The stuck route's greeting wait is long enough to show whether it
        # holds up other routes' mail.
        routes.append((f"{name.replace('_', '-')}.test", port, tls, "20s" if name == "nogreet" else "5s"))
        port += 1
    reports = Upstream("reports", ["good"])
    asyncio.run_coroutine_threadsafe(asyncio.start_server(reports.handle, "127.0.0.1", port), loop).result()
    routes.append(("lan.test", port, "none", "5s"))
    healthy = Upstream("healthy", ["good"])
    asyncio.run_coroutine_threadsafe(asyncio.start_server(healthy.handle, "127.0.0.1", port + 1), loop).result()
    routes.append(("healthy.test", port + 1, "none", "5s"))

    cfg = os.path.join(work, "postern.toml")
    with open(cfg, "w") as f:
        f.write(config(pport, routes, os.path.join(work, "queue")))
    log = open(os.path.join(work, "postern.log"), "w")
    daemon = subprocess.Popen([args.bin, "serve", "--config", cfg], stderr=log, cwd=work)
    failures = []
    try:
        wait_for(lambda: listening(pport), 20, "postern to listen")
        t0 = time.monotonic()
        for name, (_, rcpts, _, exp) in cases.items():
            for n in range(1, exp.get("count", 1) + 1):
                send(pport, name, n, rcpts, exp.get("size", 0), exp.get("sender", "dev@lan.test"))
        stall = None
        if "nogreet" in cases:
            # While the stuck route waits for a greeting, other routes'
            # mail flows.
            wait_for(lambda: ups["nogreet"].open_conns > 0, 10, "postern to connect to the stuck route")
            t1 = time.monotonic()
            send(pport, "healthy", 1, ["ok"])
            wait_for(lambda: ("healthy", 1) in healthy.copies, 60, "the healthy route's message")
            stall = time.monotonic() - t1
            if stall > 10:
                failures.append(f"healthy route's message took {stall:.1f}s while another route was stuck")

        def settled():
            for name, (_, _, _, exp) in cases.items():
                for n in range(1, exp.get("count", 1) + 1):
                    got = len(ups[name].copies.get((name, n), []))
                    want = exp.get("copies", 1)
                    lo = want[0] if isinstance(want, tuple) else want
                    if got < lo or reports.mentions.get((name, n), 0) < exp.get("reports", 0):
                        return False
            return True
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and not settled():
            time.sleep(0.1)
        # Give late duplicates a chance to show: a few retry intervals.
        time.sleep(4)
        queued = subprocess.run([args.bin, "queue", "list", "--config", cfg], capture_output=True, text=True, cwd=work).stdout
        print(f"\n{'case':<16} {'msgs':>4} {'copies':>6} {'reports':>7} {'queued':>6}  verdict")
        for name, (_, rcpts, _, exp) in cases.items():
            count = exp.get("count", 1)
            copies = [ups[name].copies.get((name, n), []) for n in range(1, count + 1)]
            got = copies[0]
            nreps = [reports.mentions.get((name, n), 0) for n in range(1, count + 1)]
            nrep = sum(nreps)
            inq = f"@{name.replace('_', '-')}.test" in queued
            want = exp.get("copies", 1)
            lo, hi = want if isinstance(want, tuple) else (want, want)
            problems = []
            for n, c in enumerate(copies, 1):
                if not lo <= len(c) <= hi:
                    problems.append(f"message {n}: {len(c)} copies, want {lo}..{hi}")
            for n, r in enumerate(nreps, 1):
                if r != exp.get("reports", 0):
                    problems.append(f"message {n}: {r} reports, want {exp.get('reports', 0)}")
            if exp.get("queued", False) != inq:
                problems.append("still queued" if inq else "not queued")
            if name == "rcpt_mix":
                flat = sorted(r for copy in got for r in copy)
                if flat != ["ok@rcpt-mix.test", "tmp@rcpt-mix.test"]:
                    problems.append(f"recipients delivered {flat}")
            verdict = "ok" if not problems else "FAIL: " + "; ".join(problems)
            if problems:
                failures.append(f"{name}: {verdict}")
            ncopies = sum(len(c) for c in copies)
            print(f"{name:<16} {count:>4} {ncopies:>6} {nrep:>7} {('yes' if inq else 'no'):>6}  {verdict}")
        if stall is not None:
            print(f"\nhealthy route's message while the stuck route waited for a greeting: {stall:.2f} s")
        print(f"all cases settled in {time.monotonic() - t0:.1f} s")
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
    if failures:
        print("\nchaos: FAILED\n  " + "\n  ".join(failures))
        print(f"(work directory kept: {work}; postern log: {work}/postern.log)")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
    print("chaos: every case held")


if __name__ == "__main__":
    main()
