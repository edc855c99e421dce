#!/usr/bin/env bash
# Idle and peak RSS of the three ways postern can be linked, on x86_64
# stand-ins for the board builds (qemu-user cannot measure an ARM process:
# /proc shows the emulator). Prints bench/memory.py's report for each,
# including the idle RSS broken down by mapping. Nothing is asserted.
#   glibc, dynamic   target/release/postern (development, CI, the amd64 package)
#   glibc, static    like the armhf package (.cargo/config.toml: crt-static)
#   musl, static     like the arm64 package (aarch64-unknown-linux-musl)
# About 10 min on 2 idle cores (three LTO release builds), then ~20 s per build:
# once with a maildir upstream, once with a STARTTLS smarthost (trust store loaded).
# Needs musl-tools (x86_64-linux-musl-gcc compiles ring's C for the musl build).
# Usage: bench/memory-builds.sh [SESSIONS] [SIZE]   (default 50 x 1048576)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sessions=${1:-50} size=${2:-1048576}
TD=${CARGO_TARGET_DIR:-target}
rustup target add x86_64-unknown-linux-musl >/dev/null
cargo build --release --bin postern
# RUSTFLAGS with --target reaches only postern's own artifacts, not the
# build scripts and proc-macros (which cannot be linked statically).
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --target x86_64-unknown-linux-gnu --bin postern
cargo build --release --target x86_64-unknown-linux-musl --bin postern
for b in release x86_64-unknown-linux-gnu/release x86_64-unknown-linux-musl/release; do
  f="$TD/$b/postern"
  echo "=== $b/postern: $(stat -c %s "$f") bytes; $(file -b "$f" | cut -d, -f1-2,4)"
  python3 bench/memory.py --bin "$f" --sessions "$sessions" --size "$size"
  python3 bench/memory.py --bin "$f" --sessions "$sessions" --size "$size" --tls-upstream
done
