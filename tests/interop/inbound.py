#!/usr/bin/env python3
"""postern's listener against software nobody here wrote.

Upstream: Postfix's smtp-sink, dumping every message it receives to a file.
Clients: swaks (STARTTLS + AUTH), curl (implicit TLS, smtps://), Python
smtplib (STARTTLS + AUTH LOGIN), and raw sockets for the published SMTP
smuggling payloads (SEC Consult, Dec 2023, and variants from the
SMTP-Smuggling-Tools list).

Every smuggling payload is sent twice: from 127.0.0.1 (listed in
bare_newline_normalize_clients) and from 127.0.0.2 (default: reject). Each
time at most one message may be accepted, and what reaches Postfix's sink is
exactly that one message with the payload (the hidden transaction) inside,
without a NUL; the hidden transaction never arrives on its own. In reject
mode a payload with a bare CR, LF or a NUL is refused with 550 5.6.0.

Usage: inbound.py --bin target/release/postern --work DIR --port-base N
"""

import argparse
import base64
import glob
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time

# The endings that must NOT end the data, each put where a lenient server
# would see the end of the carrier message.
PAYLOADS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "CR.CR": b"\r.\r",
    "LF.CR": b"\n.\r",
    "CR.LF": b"\r.\n",
    "CRLF.CRCRLF": b"\r\n.\r\r\n",
    "CRCRLF.CRCRLF": b"\r\r\n.\r\r\n",
    "LFLF.LFLF": b"\n\n.\n\n",
    "CRLF-NUL.CRLF": b"\r\n\x00.\r\n",
    "CRLF.NUL-CRLF": b"\r\n.\x00\r\n",
    "CRLF-SP.CRLF": b"\r\n .\r\n",
    "LF.LF-CRLF": b"\n.\n\r\n",
}

# Not a smuggling payload, a control: CR CR LF . CR LF holds a literal
# CRLF.CRLF, which ends the data at every RFC 5321 server. In normalize mode
# the bare CR becomes a line break and the data ends there (the rest is a
# second transaction, answered and delivered as such: no hop disagrees); in
# reject mode the bare CR refuses the message.
CONTROL = ("CRCRLF.CRLF", b"\r\r\n.\r\n")

DEADLINE = 30.0
FAILURES = []


def check(name, ok, detail=""):
    print("%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""), flush=True)
    if not ok:
        FAILURES.append(name)


def wait_port(port, host="127.0.0.1", timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def read_reply(s, deadline):
    """One complete SMTP reply (all its lines) from socket s."""
    buf = b""
    while time.monotonic() < deadline:
        m = re.search(rb"(?m)^\d{3} [^\n]*\n", buf)
        if m:
            return buf[: m.end()], buf[m.end():]
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    return buf, b""


def sink_files(sink):
    return sorted(glob.glob(os.path.join(sink, "*")))


def smuggle(port, src, name, ending, token):
    """Send one carrier with a hidden second transaction behind `ending`.
    Returns (replies text, number of 'queued as')."""
    carrier = "%s-%s-carrier" % (token, name)
    hidden = "%s-%s-hidden" % (token, name)
    data = ("From: dev@lan.example\r\nTo: ops@example.net\r\nSubject: %s\r\n\r\ncarrier body\r\n" % carrier).encode()
    data += b"ends here?" + ending
    data += ("MAIL FROM:<evil@lan.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
             "From: ceo@lan.example\r\nSubject: %s\r\n\r\nsmuggled body\r\n" % hidden).encode()
    data += b"\r\n.\r\n"
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    deadline = time.monotonic() + DEADLINE
    replies = b""
    try:
        r, _ = read_reply(s, deadline)
        replies += r
        for cmd in (b"EHLO smuggler.lan.example\r\n", b"MAIL FROM:<dev@lan.example>\r\n",
                    b"RCPT TO:<ops@example.net>\r\n", b"DATA\r\n"):
            s.sendall(cmd)
            r, _ = read_reply(s, deadline)
            replies += r
        s.sendall(data)
        r, _ = read_reply(s, deadline)
        replies += r
        try:
            s.sendall(b"QUIT\r\n")
            # Anything a smuggled transaction caused would come before 221.
            while time.monotonic() < deadline:
                r, _ = read_reply(s, deadline)
                if not r:
                    break
                replies += r
                if r.startswith(b"221"):
                    break
        except OSError:
            pass  # reject mode closes the connection after its 550
    finally:
        s.close()
    text = replies.decode("utf-8", "replace")
    return text, len(re.findall(r"queued as \S+", text)), carrier, hidden


def run_smuggling(port, sink, token):
    tried = 0
    expected_msgs = []
    for src, mode in (("127.0.0.1", "normalize"), ("127.0.0.2", "reject")):
        for name, ending in PAYLOADS.items():
            tried += 1
            text, queued, carrier, hidden = smuggle(port, src, "%s-%s" % (mode, name), ending, token)
            ok = queued <= 1
            if mode == "normalize":
                ok = ok and queued == 1
            bare = b"\r" in ending.replace(b"\r\n", b"") or b"\n" in ending.replace(b"\r\n", b"")
            # A NUL is refused like a bare newline: a next hop that strips
            # NULs would see CRLF.CRLF.
            if mode == "reject" and (bare or b"\x00" in ending):
                ok = ok and queued == 0 and "550 5.6.0" in text
            final = [l for l in text.split("\r\n") if "queued as" in l or l.startswith(("550", "554", "421"))]
            check("smuggling %s %s (from %s)" % (mode, name, src), ok,
                  "queued %d; %s" % (queued, " | ".join(final)[:120]))
            if queued == 1:
                expected_msgs.append((carrier, hidden))
    for src, mode, want in (("127.0.0.1", "normalize", 2), ("127.0.0.2", "reject", 0)):
        tried += 1
        name, ending = CONTROL
        text, queued, carrier, hidden = smuggle(port, src, "control-%s-%s" % (mode, name), ending, token)
        check("control %s %s: a literal CRLF.CRLF ends the data (%d transactions)" % (mode, name, want),
              queued == want, "queued %d" % queued)
        if queued == 2:
            expected_msgs.append((carrier, None))
            expected_msgs.append((hidden, None))
    # Everything accepted reaches the sink; nothing else ever does.
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end and len(sink_files(sink)) < len(expected_msgs):
        time.sleep(0.1)
    time.sleep(2.0)  # a smuggled extra message would be delivered in the same batch
    files = sink_files(sink)
    bodies = [open(f, "rb").read() for f in files]
    check("smuggling: sink got exactly one message per accepted carrier", len(bodies) == len(expected_msgs),
          "%d files for %d accepted carriers" % (len(bodies), len(expected_msgs)))
    for carrier, hidden in expected_msgs:
        if hidden is None:
            n = len([b for b in bodies if carrier.encode() in b])
            check("control: %s arrived once" % carrier.split("-", 1)[1], n == 1, "%d copies" % n)
            continue
        with_carrier = [b for b in bodies if carrier.encode() in b]
        ok = len(with_carrier) == 1 and hidden.encode() in with_carrier[0] and b"\x00" not in with_carrier[0]
        alone = [b for b in bodies if hidden.encode() in b and carrier.encode() not in b]
        check("smuggling: %s arrived once with the payload inside" % carrier.split("-", 1)[1], ok and not alone,
              "%d copies, %d smuggled alone" % (len(with_carrier), len(alone)))
    return tried, len(expected_msgs)


def hops_message(hops, subject):
    m = "".join("Received: from hop%d.lan.example ([192.0.2.%d])\r\n\tby relay.test (postern) with ESMTP id %X;"
                " Mon, 23 Nov 2026 18:01:43 +0000\r\n" % (i, i % 250 + 1, i) for i in range(hops))
    return m + "From: dev@lan.example\r\nSubject: %s\r\n\r\nround and round\r\n" % subject


def sized_message(n, subject):
    """Exactly n octets, ending in CRLF, without Date or Message-ID."""
    head = "From: dev@lan.example\r\nSubject: %s\r\n\r\n" % subject
    rest = n - len(head) - 2
    body = ("x" * 900 + "\r\n") * (rest // 902) + "x" * (rest % 902) + "\r\n"
    return head + body


def run_edges(port, sink, token, ca, log):
    """A mail loop (51 Received fields), AUTH PLAIN's empty challenge, and
    a message exactly at the SIZE advertised under an upstream limit."""
    # Loop: 51 Received fields get 554 5.4.6 at the dot; 50 still relay.
    loop51, loop50 = token + "-hops51", token + "-hops50"
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="loop.lan.example", timeout=30) as c:
            try:
                c.sendmail("dev@lan.example", ["ops@example.net"], hops_message(51, loop51))
                check("smtplib: a message with 51 Received fields gets 554 5.4.6", False, "it was accepted")
            except smtplib.SMTPDataError as e:
                check("smtplib: a message with 51 Received fields gets 554 5.4.6",
                      e.smtp_code == 554 and e.smtp_error.startswith(b"5.4.6"), "%d %r" % (e.smtp_code, e.smtp_error))
            c.sendmail("dev@lan.example", ["ops@example.net"], hops_message(50, loop50))
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        check("smtplib: the hop limit", False, repr(e)[:120])
    # AUTH PLAIN without an initial response: "334 " with its space (RFC
    # 4954 §4), read off the wire after STARTTLS.
    try:
        ctx = ssl.create_default_context(cafile=ca)
        with smtplib.SMTP("127.0.0.1", port, local_hostname="py.lan.example", timeout=30,
                          source_address=("127.0.0.3", 0)) as c:
            c.ehlo()
            c.starttls(context=ctx)
            c.ehlo()
            c.send(b"AUTH PLAIN\r\n")
            raw = b""
            while not raw.endswith(b"\r\n"):
                chunk = c.sock.recv(64)
                if not chunk:
                    break
                raw += chunk
            c.send(base64.b64encode(b"\0scanner\0scanner-pw") + b"\r\n")
            code, _ = c.getreply()
            check("AUTH PLAIN without an initial response: the challenge is exactly '334 ' CRLF, then 235",
                  raw == b"334 \r\n" and code == 235, "%r then %d" % (raw, code))
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        check("AUTH PLAIN without an initial response", False, repr(e)[:120])
    # SIZE under the upstream's 100 KiB leaves room for what postern adds:
    # exactly SIZE is accepted and stored within 102400 octets; one more is
    # refused at the dot.
    at, over = token + "-atsize", token + "-oversize"
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="size.lan.example", timeout=30) as c:
            c.ehlo()
            size = int(c.esmtp_features.get("size", "0"))
            # smtplib says SIZE= at MAIL, so that is where it is refused.
            try:
                c.sendmail("dev@lan.example", ["ops@example.net"], sized_message(size + 1, over))
                check("smtplib: SIZE+1 octets refused", False, "accepted")
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as e:
                check("smtplib: SIZE+1 octets refused with 552 5.3.4",
                      e.smtp_code == 552 and e.smtp_error.startswith(b"5.3.4"), "%d %r" % (e.smtp_code, e.smtp_error))
            c.sendmail("dev@lan.example", ["ops@example.net"], sized_message(size, at))
        check("SIZE advertised under the upstream's 102400 leaves room (%d)" % size, 0 < size < 102400)
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        check("smtplib: a message exactly at SIZE", False, repr(e)[:120])
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end and len(sink_files(sink)) < 2:
        time.sleep(0.1)
    time.sleep(1.0)
    bodies = [open(f, "rb").read() for f in sink_files(sink)]
    check("the 50-hop message reached the sink, the 51-hop one did not",
          any(loop50.encode() in b for b in bodies) and not any(loop51.encode() in b for b in bodies),
          "%d files" % len(bodies))
    check("the message exactly at SIZE reached the sink", any(at.encode() in b for b in bodies))
    logged = re.sub(r"\x1b\[[0-9;]*m", "", open(log, errors="replace").read())
    sizes = [int(m) for m in re.findall(r"queued.* size=(\d+)", logged)]
    check("every stored message is within the upstream's 102400 octets", bool(sizes) and max(sizes) <= 102400,
          "largest %s" % (max(sizes) if sizes else None))
    check("the loop is logged", "too many hops" in logged)


def start(cmd, log, **kw):
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--port-base", type=int, default=31000)
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    sink = os.path.join(work, "sink")
    os.makedirs(sink)
    if os.getuid() == 0:
        shutil.chown(sink, "postfix")
    p_sink, p_smtp, p_tls = a.port_base, a.port_base + 1, a.port_base + 2
    procs = []
    try:
        # Throwaway certificate for localhost / 127.0.0.1.
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", os.path.join(work, "key.pem"), "-out", os.path.join(work, "cert.pem")],
                       check=True, capture_output=True)
        hash_ = subprocess.run([a.bin, "passwd"], input=b"scanner-pw\n", check=True,
                               capture_output=True).stdout.decode().strip()
        user = ["-u", "postfix"] if os.getuid() == 0 else []
        sink_log = open(os.path.join(work, "sink.log"), "w")
        procs.append(start(["smtp-sink"] + user + ["-h", "sink.test", "-d", sink + "/%Y%m%d%H%M%S.",
                                                   "127.0.0.1:%d" % p_sink, "64"], sink_log))
        if not wait_port(p_sink):
            check("smtp-sink listens", False)
            return 1
        cfg = os.path.join(work, "postern.toml")
        with open(cfg, "w") as f:
            f.write('''hostname = "relay.test"
log_level = "debug"
[server]
listen = ["127.0.0.1:%d"]
listen_tls = ["127.0.0.1:%d"]
tls_cert = "%s/cert.pem"
tls_key = "%s/key.pem"
bare_newline_normalize_clients = ["127.0.0.1/32"]
max_connections_per_minute = 1000
greeting_timeout = "2s"
[policy]
allow_clients = ["127.0.0.1/32", "127.0.0.2/32"]
relay_authenticated = true
[queue]
dir = "%s/queue"
retry_intervals = ["1s"]
[upstream]
kind = "smarthost"
host = "127.0.0.1"
port = %d
tls = "none"
max_message_size = "100KiB"
[[user]]
name = "scanner"
password_hash = "%s"
''' % (p_smtp, p_tls, work, work, work, p_sink, hash_))
        plog = open(os.path.join(work, "postern.log"), "w")
        procs.append(start([a.bin, "serve", "--config", cfg], plog))
        if not (wait_port(p_smtp) and wait_port(p_tls)):
            check("postern listens", False)
            return 1
        token = "tok%d" % os.getpid()

        # swaks: STARTTLS + AUTH PLAIN from an address outside allow_clients.
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(p_smtp), "--local-interface", "127.0.0.3",
                            "--tls", "--tls-verify", "--tls-ca-path", os.path.join(work, "cert.pem"),
                            "--auth", "PLAIN", "--auth-user", "scanner", "--auth-password", "scanner-pw",
                            "-f", "scan@lan.example", "-t", "ops@example.net", "--h-Subject", token + "-swaks",
                            "--timeout", "30"], capture_output=True, text=True)
        check("swaks STARTTLS + AUTH PLAIN from 127.0.0.3 (outside allow_clients) relays",
              r.returncode == 0 and "235 2.7.0" in r.stdout, (r.stdout + r.stderr).strip().splitlines()[-1][:100] if (r.stdout + r.stderr).strip() else "")
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(p_smtp), "--local-interface", "127.0.0.3",
                            "-f", "scan@lan.example", "-t", "ops@example.net", "--timeout", "30"],
                           capture_output=True, text=True)
        check("swaks without AUTH from 127.0.0.3: 550 5.7.1 at RCPT", "550 5.7.1" in r.stdout and r.returncode != 0,
              next((l for l in r.stdout.splitlines() if "550" in l), "")[:100])
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(p_smtp), "--local-interface", "127.0.0.3",
                            "--auth", "PLAIN", "--auth-user", "scanner", "--auth-password", "scanner-pw",
                            "-f", "scan@lan.example", "-t", "ops@example.net", "--timeout", "30"],
                           capture_output=True, text=True)
        check("swaks AUTH without TLS is not offered (no allow_plain_auth_clients)",
              r.returncode != 0 and "AUTH PLAIN LOGIN" not in r.stdout, "swaks exit %d" % r.returncode)

        # curl: implicit TLS (smtps://) on listen_tls.
        msg = os.path.join(work, "curl.eml")
        with open(msg, "w") as f:
            f.write("From: dev@lan.example\r\nTo: ops@example.net\r\nSubject: %s-curl\r\n\r\nover 465\r\n" % token)
        r = subprocess.run(["curl", "--silent", "--show-error", "--max-time", "30",
                            "--cacert", os.path.join(work, "cert.pem"),
                            "smtps://localhost:%d/curl.lan.example" % p_tls, "--resolve", "localhost:%d:127.0.0.1" % p_tls,
                            "--mail-from", "dev@lan.example", "--mail-rcpt", "ops@example.net", "--upload-file", msg],
                           capture_output=True, text=True)
        check("curl smtps:// (implicit TLS) relays", r.returncode == 0, r.stderr.strip()[:100])

        # smtplib: STARTTLS + AUTH LOGIN, and the TLS version is 1.2 or 1.3.
        ctx = ssl.create_default_context(cafile=os.path.join(work, "cert.pem"))
        try:
            with smtplib.SMTP("127.0.0.1", p_smtp, local_hostname="py.lan.example", timeout=30,
                              source_address=("127.0.0.3", 0)) as c:
                c.ehlo()
                c.starttls(context=ctx)
                version = c.sock.version()
                c.ehlo()
                c.login("scanner", "scanner-pw")  # smtplib prefers CRAM-MD5, PLAIN, LOGIN: PLAIN here
                c.sendmail("scan@lan.example", ["ops@example.net"],
                           "From: scan@lan.example\r\nSubject: %s-smtplib\r\n\r\nhi\r\n" % token)
            check("smtplib STARTTLS (%s) + AUTH relays" % version, version in ("TLSv1.2", "TLSv1.3"))
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            check("smtplib STARTTLS + AUTH relays", False, repr(e)[:120])
        # greeting_timeout: smtplib connects (reads the 220) and says nothing.
        try:
            c = smtplib.SMTP("127.0.0.1", p_smtp, timeout=30)
            quiet = time.monotonic()
            said = c.sock.recv(512)
            tail = c.sock.recv(512)
            waited = time.monotonic() - quiet
            c.close()
            check("smtplib silent after the greeting: 421 4.4.2 after greeting_timeout (2s), not command_timeout (5m)",
                  said.startswith(b"421 4.4.2") and tail == b"" and 1.5 < waited < 25,
                  "%r after %.1fs" % (said[:40], waited))
        except Exception as e:  # noqa: BLE001 - reported as a failed check
            check("smtplib silent after the greeting is cut", False, repr(e)[:120])

        # TLS 1.1 is refused.
        ctx11 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx11.check_hostname = False
        ctx11.verify_mode = ssl.CERT_NONE
        try:
            ctx11.minimum_version = ssl.TLSVersion.TLSv1
            ctx11.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx11.set_ciphers("ALL:@SECLEVEL=0")
            with socket.create_connection(("127.0.0.1", p_tls), timeout=10) as raw:
                try:
                    with ctx11.wrap_socket(raw) as t:
                        check("TLS 1.1 refused on listen_tls", False, "handshake succeeded: " + str(t.version()))
                except (ssl.SSLError, OSError) as e:
                    check("TLS 1.1 refused on listen_tls", True, type(e).__name__)
        except (ValueError, ssl.SSLError) as e:
            print("skip TLS 1.1 check: this OpenSSL cannot offer TLS 1.1 (%s)" % e)

        # Wait for the 3 client messages, then clear the sink for smuggling.
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end and len(sink_files(sink)) < 3:
            time.sleep(0.1)
        got = sink_files(sink)
        check("swaks, curl, smtplib messages reached Postfix's sink", len(got) == 3, "%d files" % len(got))
        for f in got:
            os.remove(f)

        tried, accepted = run_smuggling(p_smtp, sink, token)
        print("smuggling payloads tried: %d (%d endings x 2 modes); %d carriers accepted" % (tried, len(PAYLOADS), accepted))
        for f in sink_files(sink):
            os.remove(f)
        run_edges(p_smtp, sink, token, os.path.join(work, "cert.pem"), os.path.join(work, "postern.log"))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    if FAILURES:
        print("FAILED: %d check(s): %s" % (len(FAILURES), ", ".join(FAILURES)))
        print("--- postern log (tail) ---")
        print("".join(open(os.path.join(work, "postern.log")).readlines()[-40:]))
        return 1
    print("all inbound interop checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
