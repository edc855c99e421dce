#!/usr/bin/env bash
# The listener against real peers over loopback: swaks (STARTTLS +
# AUTH), curl (smtps://), Python smtplib, Postfix's smtp-sink as upstream,
# and the published SMTP smuggling payloads (tests/interop/inbound.py).
#
# Usage: tests/interop/inbound.sh     (POSTERN_BIN to use a given binary)
# Ports: 31000-31002 on 127.0.0.1 (the inbound developer's range).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BIN=${POSTERN_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --bin postern
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/postern
fi
WORK=$(mktemp -d /tmp/postern-inbound.XXXXXX)
chmod 755 "$WORK" # smtp-sink runs as postfix and writes under it
trap 'rm -rf "$WORK"' EXIT
/usr/bin/python3 tests/interop/inbound.py --bin "$BIN" --work "$WORK/run" --port-base 31000
