#!/usr/bin/python3
"""A recording SMTP upstream that is strict about SMTPUTF8 (RFC 6531), as
Postfix's smtpd is with smtputf8_enable: it offers SMTPUTF8 and refuses a
non-ASCII address in a transaction that did not declare it, with Postfix's
reply "553 5.6.7 Must declare SMTPUTF8 to send unicode address". Recipients
whose local part starts with "nobody" get 550 5.1.1 (to make reports).

Run with Debian's /usr/bin/python3 (python3-aiosmtpd). Each accepted message
is written to --outdir as NNNN.eml (DATA as received) and NNNN.json
(envelope, and whether MAIL carried SMTPUTF8), the .json renamed into place
last. Every refusal is appended to --outdir/refused.log as one JSON line.
--ready-file is created once the listener accepts.
"""

import argparse
import asyncio
import itertools
import json
import logging
import os
import signal
import sys

from aiosmtpd.controller import UnthreadedController


def write_atomically(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class Strict:
    def __init__(self, outdir):
        self.outdir = outdir
        self.seq = itertools.count(1)

    def refuse(self, what, address, reply):
        with open(os.path.join(self.outdir, "refused.log"), "a") as f:
            f.write(json.dumps({"command": what, "address": address, "reply": reply}) + "\n")
        return reply

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if not address.isascii() and not envelope.smtp_utf8:
            return self.refuse("MAIL", address, "553 5.6.7 Must declare SMTPUTF8 to send unicode address")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not address.isascii() and not envelope.smtp_utf8:
            return self.refuse("RCPT", address, "553 5.6.7 Must declare SMTPUTF8 to send unicode address")
        if address.lower().startswith("nobody"):
            return self.refuse("RCPT", address, "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        n = next(self.seq)
        base = os.path.join(self.outdir, "%04d" % n)
        meta = {
            "mail_from": envelope.mail_from,
            "smtputf8": bool(envelope.smtp_utf8),
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
        }
        write_atomically(base + ".eml", envelope.original_content)
        write_atomically(base + ".json", json.dumps(meta, indent=1, ensure_ascii=False).encode())
        return "250 2.0.0 Ok: recorded as %04d" % n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--ready-file", required=True)
    a = p.parse_args()
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    os.makedirs(a.outdir, exist_ok=True)
    loop = asyncio.new_event_loop()
    ctl = UnthreadedController(
        Strict(a.outdir),
        hostname=a.host,
        port=a.port,
        loop=loop,
        server_hostname="strict-utf8.test",
        enable_SMTPUTF8=True,
        decode_data=False,
    )
    ctl.begin()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    with open(a.ready_file, "w") as f:
        f.write("%d\n" % os.getpid())
    print("strict_utf8_upstream: listening on %s:%d" % (a.host, a.port), file=sys.stderr, flush=True)
    loop.run_forever()
    ctl.end()
    loop.close()


if __name__ == "__main__":
    main()
