#!/usr/bin/python3
"""Helpers for tests/interop/run.sh: make fixtures, wait for delivered
messages, compare what was sent with what arrived, drive smtplib sessions.

Every subcommand prints one line (the reason run.sh shows after PASS/FAIL)
on stdout, details on stderr, and exits 0 on success, 1 on a failed check,
2 on misuse. Standard library only, any Python >= 3.9.
"""

import argparse
import email.generator
import email.message
import email.utils
import io
import json
import os
import re
import smtplib
import sys
import time

# --------------------------------------------------------------------------
# Message parsing


def split_message(data):
    """Split raw message bytes into (header fields, body, line ending).

    A field is its raw bytes including folded continuation lines and line
    endings. The body starts after the first empty line.
    """
    eol = b"\r\n" if b"\r\n" in data[:2000] or not data else b"\n"
    fields = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        line = data[pos:] if end < 0 else data[pos:end + 1]
        if line in (b"\r\n", b"\n"):
            return fields, data[pos + len(line):], eol
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
        pos += len(line)
    return fields, None, eol


def field_name(field):
    return field.split(b":", 1)[0].strip().lower().decode("ascii", "replace")


def field_value(field):
    parts = field.split(b":", 1)
    return parts[1].strip().decode("utf-8", "replace") if len(parts) == 2 else ""


def to_lf(data):
    return data.replace(b"\r\n", b"\n")


SINK_PREAMBLE = ("x-client-addr", "x-client-proto", "x-helo-args", "x-mail-args", "x-rcpt-args")


def strip_sink_dump(data):
    """Undo Postfix smtp-sink's dump format: its X-* lines, its own
    three-line Received header first, the message, then one empty line."""
    lines = data.split(b"\n")
    i = 0
    while i < len(lines) and field_name(lines[i]) in SINK_PREAMBLE:
        i += 1
    if i >= len(lines) or field_name(lines[i]) != "received" or b"(smtp-sink)" not in lines[i + 1]:
        raise ValueError("not an smtp-sink dump (no X-* preamble and smtp-sink Received)")
    i += 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    rest = b"\n".join(lines[i:])
    if not rest.endswith(b"\n\n"):
        raise ValueError("smtp-sink dump does not end with its empty line (incomplete?)")
    return rest[:-1]


def sink_rcpts(data):
    out = []
    for line in data.split(b"\n"):
        if field_name(line) == "x-rcpt-args":
            m = re.match(r"<([^>]*)>", field_value(line))
            if m:
                out.append(m.group(1))
        elif field_name(line) == "received":
            break
    return out


# --------------------------------------------------------------------------
# swaks-sent


def cmd_swaks_sent(a):
    """Rebuild the DATA swaks sent from its transcript (" -> " lines between
    the 354 reply and the lone dot), dot-unstuffed, CRLF line endings."""
    with open(a.transcript, "rb") as f:
        lines = f.read().split(b"\n")
    out, inside = [], False
    for line in lines:
        if not inside:
            if re.match(rb"^<[-~]  354", line):
                inside = True
            continue
        if not re.match(rb"^ [-~]> ", line) and line not in (b" ->", b" ~>"):
            continue
        text = line[4:].rstrip(b"\r")
        if text == b".":
            break
        out.append(text[1:] if text.startswith(b".") else text)
    else:
        print("no complete DATA section in swaks transcript %s" % a.transcript)
        return 1
    with open(a.out, "wb") as f:
        f.write(b"".join(l + b"\r\n" for l in out))
    print("rebuilt %d DATA lines from the swaks transcript" % len(out))
    return 0


# --------------------------------------------------------------------------
# wait


def postfix_sent(postfix_log, qid):
    try:
        with open(postfix_log, "rb") as f:
            log = f.read()
    except OSError:
        return False
    return re.search(rb" " + re.escape(qid) + rb": to=<[^>]*>,.* status=sent ", log) is not None


def candidates(d, fmt, token, postfix_log):
    """Complete messages in d containing token: [(path, raw bytes, rcpts)]."""
    found = []
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return found
    for name in names:
        path = os.path.join(d, name)
        if name.endswith(".tmp") or not os.path.isfile(path):
            continue
        if fmt == "raw":
            if not name.endswith(".eml") or not os.path.exists(path[:-4] + ".json"):
                continue
        elif fmt == "maildir":
            if not name.endswith(".eml"):
                continue
        with open(path, "rb") as f:
            data = f.read()
        if token not in data:
            continue
        rcpts = []
        if fmt == "sink":
            # smtp-sink writes while receiving: the dump is complete once it
            # has its trailing empty line and Postfix logged the delivery.
            if not data.endswith(b"\n\n"):
                continue
            m = re.search(rb"\(Postfix\) with \S+ id ([0-9A-Za-z]+)", data)
            if postfix_log and (m is None or not postfix_sent(postfix_log, m.group(1))):
                continue
            rcpts = sink_rcpts(data)
        elif fmt == "raw":
            with open(path[:-4] + ".json") as f:
                rcpts = json.load(f).get("rcpt_tos", [])
        found.append((path, data, rcpts))
    return found


def cmd_wait(a):
    token = a.token.encode()
    want = set(a.rcpts.split(",")) if a.rcpts else None
    deadline = time.monotonic() + a.timeout
    while True:
        found = candidates(a.dir, a.format, token, a.postfix_log)
        got = set(r for _, _, rs in found for r in rs)
        if found and (want is None or want <= got):
            break
        if time.monotonic() >= deadline:
            if found:
                print("only recipients %s of %s arrived within %gs" % (sorted(got), sorted(want), a.timeout))
            else:
                n = len(os.listdir(a.dir)) if os.path.isdir(a.dir) else 0
                print("no complete message with %s in %s after %gs (%d files there)" % (a.token, a.dir, a.timeout, n))
            return 1
        time.sleep(0.2)
    if want is not None and got != want:
        print("recipients %s, expected exactly %s" % (sorted(got), sorted(want)))
        return 1
    if a.count is None and want is None:
        a.count = 1
    if a.count is not None and len(found) != a.count:
        print("%d copies arrived, expected %d: %s" % (len(found), a.count, [p for p, _, _ in found]))
        return 1
    for path, _, _ in found:
        sys.stdout.write(path + "\n")
    return 0


# --------------------------------------------------------------------------
# compare


def first_difference(x, y):
    n = min(len(x), len(y))
    for i in range(n):
        if x[i] != y[i]:
            return i
    return n


def cmd_compare(a):
    with open(a.sent, "rb") as f:
        sent = f.read()
    with open(a.got, "rb") as f:
        got = f.read()
    if a.format == "sink":
        try:
            got = strip_sink_dump(got)
        except ValueError as e:
            print(str(e))
            return 1
        # smtp-sink writes LF line endings; compare on that footing.
        sent = to_lf(sent)
    elif a.crlf:
        bare_lf = len(re.findall(rb"(?<!\r)\n", got))
        bare_cr = len(re.findall(rb"\r(?!\n)", got))
        if bare_lf or bare_cr:
            print("arrived with %d bare LF and %d bare CR (must be CRLF only)" % (bare_lf, bare_cr))
            return 1
    else:
        sent, got = to_lf(sent), to_lf(got)

    s_fields, s_body, _ = split_message(sent)
    g_fields, g_body, _ = split_message(got)
    if g_body is None:
        print("arrived message has no header/body separator")
        return 1
    if s_body is None:
        s_body = b""

    # 0. A final delivery (maildir) may record the envelope above the trace
    #    headers (RFC 5321 4.4 Return-Path); they must then match it.
    delivery = []
    if a.envelope_from is not None:
        want = {"return-path": "<%s>" % a.envelope_from, "x-envelope-to": a.envelope_to}
        while g_fields and field_name(g_fields[0]) in want:
            f = g_fields.pop(0)
            if field_value(f) != want[field_name(f)]:
                print("%s is %r, the envelope says %r" % (f.split(b":")[0].decode(), field_value(f), want[field_name(f)]))
                return 1
            delivery.append(f.split(b":")[0].decode())

    # 1. The trace headers the hops prepend.
    added_rcvd = g_fields[:a.received]
    if len(added_rcvd) < a.received or any(field_name(f) != "received" for f in added_rcvd):
        print("expected %d Received header(s) prepended, top of header is: %s"
              % (a.received, [field_name(f) for f in g_fields[:a.received + 1]]))
        return 1
    if a.tls is not None:
        has = b"using TLS" in added_rcvd[0]
        if has != (a.tls == "yes"):
            print("upstream Received %s 'using TLS': %s"
                  % ("lacks" if a.tls == "yes" else "unexpectedly has", field_value(added_rcvd[0])[:160]))
            return 1
    if a.by and ("by " + a.by) not in field_value(added_rcvd[-1]):
        print("postern's Received lacks 'by %s': %s" % (a.by, field_value(added_rcvd[-1])[:160]))
        return 1

    # 2. Every sent header, unchanged and in order; only Date/Message-ID may be added.
    rest = g_fields[a.received:]
    j = 0
    extra = []
    for f in rest:
        if j < len(s_fields) and f == s_fields[j]:
            j += 1
        else:
            extra.append(f)
    if j < len(s_fields):
        f = s_fields[j]
        same_name = [g for g in rest if field_name(g) == field_name(f)]
        print("sent header %r changed or missing%s" % (f[:100], (", arrived as %r" % same_name[0][:100]) if same_name else ""))
        return 1
    s_names = [field_name(f) for f in s_fields]
    allowed = [n for n in ("date", "message-id") if n not in s_names]
    extra_names = [field_name(f) for f in extra]
    for n in extra_names:
        if n not in allowed or extra_names.count(n) > 1:
            print("unexpected header added: %r" % [f for f in extra if field_name(f) == n][0][:120])
            return 1
    for n in allowed:
        if n not in extra_names:
            print("message had no %s header and none was added" % n)
            return 1
    for f in extra:
        v = field_value(f)
        if field_name(f) == "date":
            try:
                email.utils.parsedate_to_datetime(v)
            except (TypeError, ValueError):
                print("added Date is not RFC 5322: %r" % v)
                return 1
        elif not re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", v):
            print("added Message-ID is not <left@right>: %r" % v)
            return 1

    # 3. The body, byte for byte.
    if g_body != s_body:
        i = first_difference(s_body, g_body)
        print("body differs at byte %d of %d (arrived %d): sent %r, arrived %r"
              % (i, len(s_body), len(g_body), s_body[max(0, i - 20):i + 20], g_body[max(0, i - 20):i + 20]))
        return 1

    what = "%d Received prepended" % a.received
    if delivery:
        what = "%s matching the envelope, %s" % ("+".join(delivery), what)
    if allowed:
        what += ", added " + "+".join(n.title() for n in allowed)
    else:
        what += ", Date/Message-ID kept"
    print("%s, other %d headers unchanged, body %d bytes identical%s"
          % (what, len(s_fields), len(s_body), " (CRLF only)" if a.crlf else ""))
    return 0


# --------------------------------------------------------------------------
# fixtures


def cmd_fixture(a):
    """The curl message: 8-bit UTF-8 body, lines starting with dots, bare-LF
    lines, and a long-ish body. Written with the line endings a device would
    produce, i.e. mostly CRLF with some bare LF; `expected` is the same with
    every line ending CRLF."""
    crlf = b"\r\n"
    head = [
        b"From: Curl Device <curl@lan.example>",
        b"To: Ops <ops@example.net>",
        ("Subject: interop curl %s" % a.token).encode(),
        b"Date: Mon, 02 Mar 2026 10:00:00 +0000",
        ("Message-ID: <%s@lan.example>" % a.token).encode(),
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: 8bit",
    ]
    body = [
        "Grüße aus dem Drucker — 日本語のテキスト ✓ ½".encode(),
        b".a line that starts with a dot",
        b"..two dots",
        b".",
        b"the line above is a lone dot",
        b"",
    ]
    text = crlf.join(head) + crlf + crlf + crlf.join(body) + crlf
    text += b"bare LF line one\nbare LF line two\n"
    for i in range(2000):
        # Every 50th line starts with a dot (stuffed on the wire both ways).
        text += ("%s%05d the quick brown fox jumps over the lazy dog, ÄÖÜ äöü ß €"
                 % ("." if i % 50 == 25 else "", i)).encode() + crlf
    text += b"last line" + crlf
    with open(a.out, "wb") as f:
        f.write(text)
    with open(a.expected, "wb") as f:
        f.write(re.sub(rb"(?<!\r)\n", b"\r\n", text))
    print("wrote %s (%d bytes)" % (a.out, len(text)))
    return 0


# --------------------------------------------------------------------------
# smtplib sessions


class RecordingSMTP(smtplib.SMTP):
    """smtplib.SMTP that remembers the reply to the final dot (sendmail()
    and send_message() drop it, and it carries the queue id)."""

    last_data_reply = None

    def data(self, msg):
        code, resp = super().data(msg)
        self.last_data_reply = (code, resp.decode("utf-8", "replace"))
        return code, resp


QUEUED = re.compile(r"2\.0\.0 Ok: queued as (\S+)")


def queued_id(reply):
    code, text = reply
    m = QUEUED.search(text)
    if code != 250 or not m:
        raise AssertionError("reply to the final dot is %d %r, expected '250 2.0.0 Ok: queued as <ID>'" % (code, text))
    return m.group(1)


def plain_message(token, name, with_ids=True, extra=b""):
    lines = [b"From: Python <py@lan.example>", b"To: ops@example.net",
             ("Subject: interop %s %s" % (name, token)).encode()]
    if with_ids:
        lines.append(b"Date: Tue, 03 Mar 2026 11:00:00 +0100")
        lines.append(("Message-ID: <%s.%s@lan.example>" % (name, token)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + ("body of %s\r\n.dot start\r\n" % name).encode() + extra


def cmd_smtplib_session(a):
    """Several messages in one session: one plain, one to three recipients,
    one through send_message() without Date and Message-ID. Writes a
    manifest of what was sent for run.sh to look for at the upstream."""
    manifest = []
    with RecordingSMTP(a.host, a.port, local_hostname="python.lan.example", timeout=30) as s:
        s.ehlo()
        for name, rcpts in (("smtplib-one", ["one@example.net"]),
                            ("smtplib-multi", ["m1@example.net", "m2@example.org", "m3@example.com"])):
            msg = plain_message(a.token, name)
            refused = s.sendmail("py@lan.example", rcpts, msg)
            if refused:
                print("%s: recipients refused: %r" % (name, refused))
                return 1
            manifest.append({"name": name, "id": queued_id(s.last_data_reply), "rcpts": rcpts, "sent": msg})

        m = email.message.EmailMessage()
        m["From"] = "Python <py@lan.example>"
        m["To"] = "nodate@example.net"
        m["Subject"] = "interop smtplib-noids %s" % a.token
        m.set_content("send_message() without Date and Message-ID\n")
        s.send_message(m, from_addr="py@lan.example", to_addrs=["nodate@example.net"])
        # The same flattening smtplib.send_message() does.
        buf = io.BytesIO()
        email.generator.BytesGenerator(buf).flatten(m, linesep="\r\n")
        manifest.append({"name": "smtplib-noids", "id": queued_id(s.last_data_reply),
                         "rcpts": ["nodate@example.net"], "sent": buf.getvalue()})
    for e in manifest:
        path = os.path.join(a.outdir, e["name"] + ".sent")
        with open(path, "wb") as f:
            f.write(e["sent"])
        e["sent"] = path
    with open(a.manifest, "w") as f:
        json.dump(manifest, f, indent=1)
    print("%d messages accepted in one session: %s" % (len(manifest), " ".join(e["id"] for e in manifest)))
    return 0


def cmd_smtplib_size(a):
    """SIZE= over the limit is refused at MAIL; a message over the limit
    without SIZE= is refused after DATA; the same session then still
    delivers a small message."""
    limit = a.limit
    with RecordingSMTP(a.host, a.port, local_hostname="python.lan.example", timeout=60) as s:
        s.ehlo()
        if not s.has_extn("size"):
            print("no SIZE in EHLO reply")
            return 1
        adv = s.esmtp_features.get("size", "").strip()
        if adv and adv != str(limit):
            print("EHLO advertises SIZE %s, expected %d" % (adv, limit))
            return 1
        code, resp = s.mail("py@lan.example", ["SIZE=%d" % (limit + 1)])
        resp = resp.decode("utf-8", "replace")
        if code != 552 or "5.3.4" not in resp:
            print("MAIL with SIZE=%d got %d %r, expected 552 5.3.4" % (limit + 1, code, resp))
            return 1
        s.rset()
        # Over the limit, without announcing it: the refusal comes after the dot.
        code, resp = s.mail("py@lan.example")
        if code != 250:
            print("MAIL after the SIZE refusal got %d %r" % (code, resp))
            return 1
        code, resp = s.rcpt("big@example.net")
        if code != 250:
            print("RCPT got %d %r" % (code, resp))
            return 1
        big = plain_message(a.token, "smtplib-big", extra=(b"x" * 998 + b"\r\n") * (limit // 1000 + 10))
        try:
            code, resp = s.data(big)
        except smtplib.SMTPServerDisconnected as e:
            print("server disconnected while the oversized message was sent: %s" % e)
            return 1
        resp = resp.decode("utf-8", "replace")
        if code != 552 or "5.3.4" not in resp:
            print("oversized DATA (%d bytes) got %d %r, expected 552 5.3.4" % (len(big), code, resp))
            return 1
        small = plain_message(a.token, "smtplib-after552")
        try:
            s.sendmail("py@lan.example", ["after552@example.net"], small)
        except smtplib.SMTPException as e:
            print("small message after the 552 failed in the same session: %s" % e)
            return 1
        qid = queued_id(s.last_data_reply)
    with open(a.sent_out, "wb") as f:
        f.write(small)
    print("SIZE=%d refused at MAIL, %d-byte DATA refused with 552, same session then queued %s" % (limit + 1, len(big), qid))
    return 0


# --------------------------------------------------------------------------
# SMTP smuggling (CVE-2023-51764 family)

SMUGGLE_ENDINGS = {"LF.LF": b"\n.\n", "LF.CRLF": b"\n.\r\n", "CRLF.LF": b"\r\n.\n", "CR.CRLF": b"\r.\r\n"}


def read_replies(sock, until, deadline):
    """Read reply lines until one matches the regex `until` (bytes) or the deadline."""
    buf = b""
    while time.monotonic() < deadline:
        if re.search(until, buf):
            break
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    return buf


def cmd_smuggle(a):
    """Hide a second transaction behind a non-standard end-of-data in one
    message. Per session the client may see at most one 'queued as'; the
    manifest lists carrier tokens (which may arrive) and smuggled tokens
    (which must never arrive as messages of their own)."""
    import socket
    manifest = []
    for name, ending in SMUGGLE_ENDINGS.items():
        carrier = "%s-%s-carrier" % (a.token, name)
        hidden = "%s-%s-hidden" % (a.token, name)
        data = ("From: dev@lan.example\r\nTo: ops@example.net\r\nSubject: smuggle %s\r\n"
                "Message-ID: <%s@lan.example>\r\n\r\ncarrier body\r\n" % (carrier, carrier)).encode()
        data += b"ends here?" + ending
        data += ("MAIL FROM:<evil@lan.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
                 "From: ceo@lan.example\r\nSubject: smuggle %s\r\n\r\nsmuggled body\r\n" % hidden).encode()
        data += b".\r\n"  # the standard end: closes the carrier if the server did not stop early
        with socket.create_connection((a.host, a.port), timeout=10) as s:
            deadline = time.monotonic() + 20
            greet = read_replies(s, rb"^220 .*\r\n", deadline)
            if not greet.startswith(b"220"):
                print("%s: no 220 greeting: %r" % (name, greet[:100]))
                return 1
            s.sendall(b"EHLO smuggler.lan.example\r\n")
            read_replies(s, rb"(?m)^250 .*\r\n", deadline)
            for cmd in (b"MAIL FROM:<dev@lan.example>\r\n", b"RCPT TO:<ops@example.net>\r\n", b"DATA\r\n"):
                s.sendall(cmd)
                r = read_replies(s, rb"(?m)^\d{3} .*\r\n", deadline)
                if not re.match(rb"^(250|354)", r):
                    print("%s: %r answered %r" % (name, cmd.strip(), r.strip()[:120]))
                    return 1
            s.sendall(data)
            # One reply for the whole message; anything a smuggled transaction
            # caused would follow it. QUIT flushes them all out.
            first = read_replies(s, rb"(?m)^\d{3} .*\r\n", deadline)
            s.sendall(b"QUIT\r\n")
            rest = read_replies(s, rb"(?m)^221 .*\r\n", deadline)
        replies = (first + rest).decode("utf-8", "replace")
        queued = re.findall(r"queued as (\S+)", replies)
        if len(queued) > 1:
            print("%s: the server accepted %d messages in one DATA: %s" % (name, len(queued), replies.replace("\r\n", " | ")[:300]))
            return 1
        outcome = ("queued as %s" % queued[0]) if queued else ("refused: %s" % first.decode("utf-8", "replace").strip()[:60])
        manifest.append({"ending": name, "carrier": carrier, "hidden": hidden,
                         "id": queued[0] if queued else None, "outcome": outcome})
        print("%s: %s" % (name, outcome), file=sys.stderr)
    with open(a.manifest, "w") as f:
        json.dump(manifest, f, indent=1)
    print("; ".join("%s %s" % (m["ending"], m["outcome"]) for m in manifest))
    return 0


def cmd_smuggle_check(a):
    """After smuggle: every carrier that was queued arrived as one message
    holding the hidden text as body; no message of its own carries a hidden
    token. Absence has no signal, so the hidden tokens are polled for a
    grace period after the carriers arrived."""
    with open(a.manifest) as f:
        manifest = json.load(f)
    deadline = time.monotonic() + a.timeout
    want = [m for m in manifest if m["id"]]
    while True:
        arrived = {}
        for m in want:
            c = candidates(a.dir, a.format, m["carrier"].encode(), a.postfix_log)
            if c:
                arrived[m["carrier"]] = c
        if len(arrived) == len(want) or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    missing = [m["ending"] for m in want if m["carrier"] not in arrived]
    if missing:
        print("queued carrier(s) %s did not arrive within %gs" % (",".join(missing), a.timeout))
        return 1
    grace = time.monotonic() + a.grace
    while True:
        for m in manifest:
            for path, data, _ in candidates(a.dir, a.format, m["hidden"].encode(), None):
                if m["carrier"].encode() not in data:
                    print("%s: smuggled message arrived on its own: %s" % (m["ending"], path))
                    return 1
        if time.monotonic() >= grace:
            break
        time.sleep(0.2)
    for m in want:
        if len(arrived[m["carrier"]]) != 1:
            print("%s: carrier arrived %d times" % (m["ending"], len(arrived[m["carrier"]])))
            return 1
        if m["hidden"].encode() not in arrived[m["carrier"]][0][1]:
            print("%s: carrier arrived without the text after the bogus end (truncated)" % m["ending"])
            return 1
    print("%d carriers arrived whole with the hidden text as body, %d refused; no smuggled message after %gs"
          % (len(want), len(manifest) - len(want), a.grace))
    return 0


# --------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    q = sub.add_parser("swaks-sent", help=cmd_swaks_sent.__doc__)
    q.add_argument("transcript")
    q.add_argument("out")
    q.set_defaults(fn=cmd_swaks_sent)

    q = sub.add_parser("wait", help="wait for a complete message containing a token")
    q.add_argument("--dir", required=True)
    q.add_argument("--token", required=True)
    q.add_argument("--format", choices=("sink", "raw", "maildir"), required=True)
    q.add_argument("--postfix-log")
    q.add_argument("--rcpts", help="comma-separated envelope recipients that must all arrive")
    q.add_argument("--count", type=int, help="exact number of copies expected (default 1 without --rcpts)")
    q.add_argument("--timeout", type=float, default=20)
    q.set_defaults(fn=cmd_wait)

    q = sub.add_parser("compare", help="compare a sent message with an arrived one")
    q.add_argument("--sent", required=True)
    q.add_argument("--got", required=True)
    q.add_argument("--format", choices=("sink", "raw", "maildir"), required=True)
    q.add_argument("--received", type=int, required=True, help="Received headers the hops prepend")
    q.add_argument("--tls", choices=("yes", "no"), help="outermost Received must (not) say 'using TLS'")
    q.add_argument("--by", help="innermost added Received must say 'by BY'")
    q.add_argument("--crlf", action="store_true", help="arrived bytes must use CRLF only (raw/maildir)")
    q.add_argument("--envelope-from", help="allow leading Return-Path/X-Envelope-To; they must match this sender")
    q.add_argument("--envelope-to", help="... and this recipient (comma-separated as written)")
    q.set_defaults(fn=cmd_compare)

    q = sub.add_parser("fixture", help=cmd_fixture.__doc__)
    q.add_argument("--token", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--expected", required=True)
    q.set_defaults(fn=cmd_fixture)

    q = sub.add_parser("smtplib-session", help=cmd_smtplib_session.__doc__)
    q.add_argument("--host", default="127.0.0.1")
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--token", required=True)
    q.add_argument("--outdir", required=True)
    q.add_argument("--manifest", required=True)
    q.set_defaults(fn=cmd_smtplib_session)

    q = sub.add_parser("smtplib-size", help=cmd_smtplib_size.__doc__)
    q.add_argument("--host", default="127.0.0.1")
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--token", required=True)
    q.add_argument("--limit", type=int, required=True)
    q.add_argument("--sent-out", required=True)
    q.set_defaults(fn=cmd_smtplib_size)

    q = sub.add_parser("smuggle", help=cmd_smuggle.__doc__)
    q.add_argument("--host", default="127.0.0.1")
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--token", required=True)
    q.add_argument("--manifest", required=True)
    q.set_defaults(fn=cmd_smuggle)

    q = sub.add_parser("smuggle-check", help=cmd_smuggle_check.__doc__)
    q.add_argument("--manifest", required=True)
    q.add_argument("--dir", required=True)
    q.add_argument("--format", choices=("sink", "raw", "maildir"), required=True)
    q.add_argument("--postfix-log")
    q.add_argument("--timeout", type=float, default=20)
    q.add_argument("--grace", type=float, default=3)
    q.set_defaults(fn=cmd_smuggle_check)

    a = p.parse_args()
    try:
        return a.fn(a)
    except (OSError, smtplib.SMTPException, AssertionError) as e:
        print("%s: %s" % (type(e).__name__, e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
