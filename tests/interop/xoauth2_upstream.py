#!/usr/bin/python3
"""A recording SMTP upstream that accepts AUTH XOAUTH2 (as Gmail and
Microsoft 365 do) after STARTTLS, for the outbound interop tests.

Run with Debian's /usr/bin/python3 (python3-aiosmtpd). A bearer token is
accepted when it is the last one --token-file holds (the token endpoint
writes it). Each accepted message becomes NNNN.json (envelope, TLS, the
XOAUTH2 user and token length) and NNNN.eml in --outdir.
"""

import argparse
import asyncio
import base64
import collections
import itertools
import json
import os
import signal
import ssl
import sys

from aiosmtpd.controller import UnthreadedController
from aiosmtpd.smtp import SMTP, AuthResult


class BigLineSMTP(SMTP):
    # XOAUTH2 lines carry the whole token: several KB with Microsoft's.
    line_length_limit = 16384

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.command_size_limits = collections.defaultdict(lambda: 16384)


class Handler:
    def __init__(self, outdir, token_file, user):
        self.outdir = outdir
        self.token_file = token_file
        self.user = user
        self.seq = itertools.count(1)

    async def auth_XOAUTH2(self, server, args):
        if len(args) < 2:
            blob = await server.challenge_auth("", encode_to_b64=False)
        else:
            blob = base64.b64decode(args[1])
        text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else str(blob)
        parts = dict(p.split("=", 1) for p in text.split("\x01") if "=" in p)
        token = parts.get("auth", "").removeprefix("Bearer ")
        try:
            with open(self.token_file) as f:
                valid = f.read().split()
        except OSError:
            valid = []
        ok = parts.get("user") == self.user and bool(valid) and token == valid[-1]
        with open(os.path.join(self.outdir, "auth.log"), "a") as f:
            f.write(json.dumps({"mechanism": "XOAUTH2", "user": parts.get("user"), "success": ok,
                                "token_len": len(token), "tls": server.session.ssl is not None}) + "\n")
        return AuthResult(success=ok, handled=False, auth_data=(parts.get("user"), len(token)))

    async def handle_DATA(self, server, session, envelope):
        n = next(self.seq)
        base = os.path.join(self.outdir, "%04d" % n)
        user, token_len = session.auth_data if session.authenticated else (None, 0)
        meta = {"tls": session.ssl is not None, "auth_user": user, "token_len": token_len,
                "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(base + ".eml.tmp", base + ".eml")
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 Ok: recorded as %04d" % n


class Controller(UnthreadedController):
    def factory(self):
        return BigLineSMTP(self.handler, **self.SMTP_kwargs)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--ready-file", required=True)
    a = p.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    loop = asyncio.new_event_loop()
    ctl = Controller(Handler(a.outdir, a.token_file, a.user), hostname="127.0.0.1", port=a.port,
                     loop=loop, server_hostname="xoauth2-upstream.test", tls_context=ctx,
                     require_starttls=True, auth_required=True, auth_require_tls=True,
                     auth_exclude_mechanism=["LOGIN", "PLAIN"])
    ctl.begin()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    with open(a.ready_file, "w") as f:
        f.write("%d\n" % os.getpid())
    print("xoauth2_upstream: listening on 127.0.0.1:%d" % a.port, file=sys.stderr, flush=True)
    loop.run_forever()
    ctl.end()
    loop.close()


if __name__ == "__main__":
    main()
