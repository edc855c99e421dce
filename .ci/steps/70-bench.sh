#!/usr/bin/env bash
# Benchmarks against Postfix, short mode: small counts, figures
# printed, not asserted. About 30 s once the release binary is built. The
# full run (`python3 bench/compare.py --markdown FILE`) produced the README
# table.
set -euo pipefail
. .ci/lib.sh
need_apt postfix linux-perf e2fsprogs util-linux
cargo build --release --bin postern
timeout 900 python3 bench/compare.py --short --bin "${CARGO_TARGET_DIR:-target}/release/postern"
