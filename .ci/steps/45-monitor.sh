#!/usr/bin/env bash
# Monitoring against real software, with the release binary (~30 s once
# built): tests/monitor/check.py serves /metrics and the status page from a
# running postern with a failing route and a refusal, parses /metrics with
# Prometheus's own text-format parser (python3-prometheus-client), renders
# the page in headless Chromium (DOM text assertions, hostile upstream text
# shown as text, a screenshot), and checks `postern status` exit codes
# (0 healthy, 1 warning, 2 down; critical for a full queue and the systemd
# STATUS= line are in cargo test, tests/it/status.rs).
set -euo pipefail
. .ci/lib.sh
need_apt build-essential ca-certificates python3-prometheus-client chromium
cargo build --release --bin postern
BIN=${CARGO_TARGET_DIR:-target}/release/postern
mkdir -p target/monitor
timeout 300 /usr/bin/python3 tests/monitor/check.py --bin "$BIN" --shot target/monitor/status.png
