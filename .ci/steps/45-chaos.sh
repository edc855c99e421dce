#!/usr/bin/env bash
# The chaos harness: postern against scripted misbehaving upstreams (no
# greeting, garbage, close after 354, 250 then close, hang after the dot,
# long and many-line 250s, a recipient mix, an untrusted certificate, a
# slow reader) and a route back into itself, counting copies and failure
# reports per message. About 35 s once postern is built.
set -euo pipefail
. .ci/lib.sh
need_apt openssl python3
cargo build --release --bin postern
BIN=$(pwd)/${CARGO_TARGET_DIR:-target}/release/postern
timeout 300 /usr/bin/python3 tests/chaos/chaos.py --bin "$BIN"
