#!/usr/bin/env bash
# [[filter]] rules and [storm] suppression against real peers over
# loopback: swaks and Python smtplib as clients (MIME attachments built by
# Python's email package), aiosmtpd and Postfix's smtp-sink as upstreams
# (tests/interop/filters.py says what is checked).
#
# Usage: tests/interop/filters.sh     (POSTERN_BIN to use a given binary)
# Ports: 32000-32002 on 127.0.0.1. Needs swaks, smtp-sink (postfix) and
# Debian's /usr/bin/python3 with python3-aiosmtpd; root for smtp-sink -u.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BIN=${POSTERN_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --bin postern
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/postern
fi
WORK=$(mktemp -d /tmp/postern-filters.XXXXXX)
chmod 755 "$WORK" # smtp-sink runs as postfix and writes under it
if /usr/bin/python3 tests/interop/filters.py --bin "$BIN" --work "$WORK/run" --port-base 32000; then
  rm -rf "$WORK"
else
  echo "work directory kept: $WORK"
  exit 1
fi
