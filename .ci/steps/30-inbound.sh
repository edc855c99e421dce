#!/usr/bin/env bash
# Inbound hardening, against the real release binary:
#  - tests/interop/inbound.sh: swaks STARTTLS+AUTH, curl smtps://, smtplib,
#    31 smuggling sends (15 payloads x 2 modes + control) through postern to
#    Postfix's smtp-sink, a mail loop (554 5.4.6), AUTH PLAIN's "334 ", a
#    message exactly at SIZE under an upstream limit (~20 s once built);
#  - tests/interop/filters.sh: [[filter]] actions (reject, discard, header
#    edits, redirect, hold and release, route, attachments) and a 30-copy
#    alert storm, with swaks and smtplib to aiosmtpd and smtp-sink (~20 s);
#  - bench/flood.py: 500 connections from one address while a device on
#    another relays; prints latency and peak RSS (~5 s);
#  - fuzz/run.sh: eight libFuzzer targets (command, data, reply, header,
#    session, config, and the token endpoint's https reply reader and token
#    JSON), 15 s each (~2 min), after building the fuzz crate
#    (a few minutes on 2 cores; 13 min on a machine shared by four builds).
# The state-machine and allow/deny tests against the binary run in `cargo
# test` (tests/it/inbound.rs, src/server/session.rs property test).
set -euo pipefail
. .ci/lib.sh
need_apt build-essential ca-certificates openssl curl swaks postfix libnet-ssleay-perl python3-aiosmtpd
cargo build --release --bin postern
BIN=${CARGO_TARGET_DIR:-target}/release/postern
POSTERN_BIN=$BIN timeout 300 tests/interop/inbound.sh
POSTERN_BIN=$BIN timeout 300 tests/interop/filters.sh
ulimit -n 4096
timeout 120 python3 bench/flood.py --bin "$BIN" --flood 500 --port 33025
timeout 1500 fuzz/run.sh "${FUZZ_SECONDS:-15}"
