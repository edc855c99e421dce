#!/usr/bin/python3
"""An OAuth2 token endpoint over HTTPS for the outbound interop tests
(Python's http.server + ssl). POST /token with grant_type=refresh_token or
client_credentials returns a new access token; every request (form fields,
secrets included: this is a test) goes to --log, every token issued is
appended to --token-file (the XOAUTH2 upstream accepts the last one).
"""

import argparse
import http.server
import json
import ssl
import sys
import urllib.parse


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--refresh-token", required=True)
    p.add_argument("--client-secret", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--ready-file", required=True)
    a = p.parse_args()
    count = [0]

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
            with open(a.log, "a") as f:
                f.write(json.dumps({"path": self.path, "form": form}) + "\n")
            ok = form.get("client_secret") == a.client_secret and (
                form.get("grant_type") == "client_credentials"
                or (form.get("grant_type") == "refresh_token" and form.get("refresh_token") == a.refresh_token))
            if ok:
                count[0] += 1
                token = "ya29.interop-%d-%s" % (count[0], "t" * 2500)
                with open(a.token_file, "a") as f:
                    f.write(token + "\n")
                body = json.dumps({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})
                self.send_response(200)
            else:
                body = json.dumps({"error": "invalid_grant", "error_description": "Bad Request"})
                self.send_response(400)
            data = body.encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):
            print("token_endpoint: " + fmt % args, file=sys.stderr, flush=True)

    srv = http.server.HTTPServer(("127.0.0.1", a.port), H)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    with open(a.ready_file, "w") as f:
        f.write("ready\n")
    srv.serve_forever()


if __name__ == "__main__":
    main()
