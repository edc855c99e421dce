#!/usr/bin/python3
"""A recording SMTP upstream for the interop tests: STARTTLS required, AUTH
PLAIN/LOGIN required, one user; or, with --client-ca and --no-auth, a
certificate-authenticated connector (a client certificate instead of AUTH).

Run with Debian's /usr/bin/python3 (python3-aiosmtpd). Each accepted message
is written as two files in --outdir, both renamed into place only when
complete, so a test can poll for the .json file:

    NNNN.eml   the DATA bytes exactly as received (dot-unstuffed only)
    NNNN.json  envelope, TLS and AUTH facts about the session

Every AUTH attempt (never the password) is appended to --outdir/auth.log as
one JSON line. --ready-file is created once the listener accepts.
"""

import argparse
import asyncio
import itertools
import json
import logging
import os
import signal
import ssl
import sys

from aiosmtpd.controller import UnthreadedController
from aiosmtpd.smtp import AuthResult, LoginPassword


def write_atomically(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class Recorder:
    def __init__(self, outdir, user, password):
        self.outdir = outdir
        self.user = user.encode()
        self.password = password.encode()
        self.seq = itertools.count(1)

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        )
        login = auth_data.login.decode("utf-8", "replace") if isinstance(auth_data, LoginPassword) else None
        line = json.dumps({"mechanism": mechanism, "login": login, "success": ok,
                           "tls": session.ssl is not None, "peer": list(session.peer or [])})
        with open(os.path.join(self.outdir, "auth.log"), "a") as f:
            f.write(line + "\n")
        # handled=False: let aiosmtpd send 235 or "535 5.7.8" itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    async def handle_DATA(self, server, session, envelope):
        n = next(self.seq)
        base = os.path.join(self.outdir, "%04d" % n)
        user = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            user = session.auth_data.login.decode("utf-8", "replace")
        cipher = None
        if session.ssl is not None:
            c = session.ssl.get("cipher")
            cipher = list(c) if c else None
        client_cn = None
        peercert = session.ssl.get("peercert") if session.ssl is not None else None
        for rdn in (peercert or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    client_cn = value
        meta = {
            "peer": list(session.peer or []),
            "client_cert_cn": client_cn,
            "helo": session.host_name,
            "tls": session.ssl is not None,
            "cipher": cipher,
            "authenticated": bool(session.authenticated),
            "auth_user": user,
            "mail_from": envelope.mail_from,
            "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos,
            "rcpt_options": envelope.rcpt_options,
            "size": len(envelope.original_content),
        }
        write_atomically(base + ".eml", envelope.original_content)
        write_atomically(base + ".json", json.dumps(meta, indent=1).encode())
        return "250 2.0.0 Ok: recorded as %04d" % n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", default="")
    p.add_argument("--password-file")
    p.add_argument("--client-ca", help="require a client certificate issued by this CA")
    p.add_argument("--no-auth", action="store_true", help="do not require AUTH")
    p.add_argument("--outdir", required=True)
    p.add_argument("--ready-file", required=True)
    a = p.parse_args()

    # aiosmtpd warns about its own use of a deprecated attribute on every AUTH.
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    password = ""
    if a.password_file:
        with open(a.password_file) as f:
            password = f.readline().rstrip("\r\n")
    os.makedirs(a.outdir, exist_ok=True)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    if a.client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(a.client_ca)

    rec = Recorder(a.outdir, a.user, password)
    loop = asyncio.new_event_loop()
    ctl = UnthreadedController(
        rec,
        hostname=a.host,
        port=a.port,
        loop=loop,
        server_hostname="auth-upstream.test",
        tls_context=ctx,
        require_starttls=True,
        auth_required=not a.no_auth,
        auth_require_tls=True,
        authenticator=rec.authenticate,
    )
    ctl.begin()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    with open(a.ready_file, "w") as f:
        f.write("%d\n" % os.getpid())
    print("upstream_auth: listening on %s:%d" % (a.host, a.port), file=sys.stderr, flush=True)
    loop.run_forever()
    ctl.end()
    loop.close()


if __name__ == "__main__":
    main()
