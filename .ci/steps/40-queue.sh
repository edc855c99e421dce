#!/usr/bin/env bash
# The queue, proven: power-cut simulation (600 seeds, a few
# seconds), the kill -9 crash test against an aiosmtpd upstream (30 rounds,
# about 30 s), the disk-full test (a 12 MiB tmpfs, about 10 s), and the
# recovery benchmark (3000 queued messages, short mode;
# figures printed, not asserted), and the flash-cost benchmark in short mode
# (100 messages per cell, about 2 minutes). About 4 minutes once postern is built.
set -euo pipefail
. .ci/lib.sh
need_apt python3-aiosmtpd postfix strace linux-perf e2fsprogs util-linux
cargo build --release --bin postern
BIN=${CARGO_TARGET_DIR:-target}/release/postern
step "power cuts, simulated (cargo test --lib power_cuts, 600 seeds)"
POSTERN_POWERCUT_SEEDS=600 timeout 600 cargo test --lib power_cuts -- --nocapture
step "kill -9 while sending (tests/crash/crash.py)"
timeout 300 /usr/bin/python3 tests/crash/crash.py --rounds 30 --bin "$BIN"
step "disk full (tests/crash/diskfull.py, a 12 MiB tmpfs)"
timeout 300 /usr/bin/python3 tests/crash/diskfull.py --bin "$BIN"
step "recovery time (bench/recovery.py, short)"
timeout 300 /usr/bin/python3 bench/recovery.py --messages 3000 --bin "$BIN"
step "flash cost (bench/flash.py --short, postern vs Postfix on ext4 loop devices)"
timeout 600 /usr/bin/python3 bench/flash.py --short --bin "$BIN"
