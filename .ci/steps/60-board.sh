#!/usr/bin/env bash
# CI step 60 (the board). About 7 min on 2 idle cores: three cross
# release builds and the x86_64 one dominate (~90-100 s each; ring's C/asm
# with Debian's cross gcc; measured ~20 min on 2 cores shared with three
# other builds), then ~5 s of qemu-user smoke test per target and ~30 s of
# packaging checks.
#   - release builds: aarch64-gnu, armv7, aarch64-musl (static), x86_64
#   - board/smoke.sh under qemu-user for each: swaks -> postern (ARM) ->
#     smtp-sink; sendmail from a cron-style pipe and from Python's email
#     package; SIGHUP reload (new listener, broken config refused); SIGTERM
#   - board/test-deb.sh: .deb install, upgrade (config edit and queue kept),
#     remove, purge into a scratch root; the arm64 (musl) and armhf (glibc,
#     crt-static) packages build from static binaries
#   - board/test-deb-system.sh (~10 s): the same package really installed on
#     this throwaway machine (user, conffile, spool modes, postinst without
#     systemd as PID 1, upgrade with a queued message, purge), then removed
#   - systemd-analyze verify on board/postern.service (the systemd package
#     provides it; systemd need not be running)
#   - prints the release binary sizes (README "Deploy on a Raspberry Pi")
set -euo pipefail
. .ci/lib.sh

need_apt gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross \
  libc6-dev-armhf-cross qemu-user file swaks postfix iproute2 python3 \
  systemd adduser util-linux binutils
TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf aarch64-unknown-linux-musl)
rustup target add "${TARGETS[@]}"
TD=${CARGO_TARGET_DIR:-target}

# Linkers, CC_* for ring and the qemu runners come from .cargo/config.toml.
base=40100
for t in "${TARGETS[@]}"; do
  step "60-board: cargo build --release --target $t"
  cargo build --release --target "$t" --bin postern
  step "60-board: board/smoke.sh $t (qemu-user)"
  board/smoke.sh "$t" "$TD/$t/release/postern" "$base"
  base=$((base + 10))
done
step "60-board: x86_64 release, smoke, Debian packages"
cargo build --release --bin postern
board/smoke.sh x86_64-unknown-linux-gnu "$TD/release/postern" "$base"
board/test-deb.sh "$TD/release/postern"
# Only CI asks for the real install (a developer's `cargo test` never does).
POSTERN_DEB_SYSTEM_TEST=1 board/test-deb-system.sh "$TD/release/postern" x86_64-unknown-linux-gnu 40150
# The board packages ship static builds (idle RSS under 4 MiB: board/README.md):
# arm64 from the musl build, armhf from armv7 glibc with crt-static.
dist=$(mktemp -d)
for t in aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do
  f="$TD/$t/release/postern"
  if readelf -d "$f" | grep '(NEEDED)' >/dev/null; then
    echo "$t: $f is dynamically linked; the board packages ship static builds" >&2
    exit 1
  fi
  board/build-deb.sh "$t" "$f" "$dist"
done
if dpkg-deb -f "$dist"/postern_*_armhf.deb Depends | grep libc6 >/dev/null; then
  echo "the static armhf package must not depend on libc6" >&2
  exit 1
fi
rm -rf "$dist"

step "60-board: systemd-analyze verify board/postern.service"
d=$(mktemp -d)
# verify checks that ExecStart exists: point it at the built binary.
sed "s#/usr/bin/postern#$(realpath "$TD/release/postern")#g" board/postern.service > "$d/postern.service"
out=$(systemd-analyze verify "$d/postern.service" 2>&1) || { echo "$out" >&2; exit 1; }
# Unknown or misspelt keys are only warnings there; treat any output as a failure.
[ -z "$out" ] || { echo "$out" >&2; exit 1; }
rm -rf "$d"
echo "ok: systemd-analyze verify: no warnings"

step "60-board: release binary sizes (stripped, opt-level z, LTO)"
for t in "${TARGETS[@]}" .; do
  f="$TD/$t/release/postern"
  [ "$t" = . ] && { f="$TD/release/postern"; t=x86_64-unknown-linux-gnu; }
  printf '%-32s %9d bytes  %s MiB\n' "$t" "$(stat -c %s "$f")" \
    "$(awk -v s="$(stat -c %s "$f")" 'BEGIN { printf "%.2f", s / 1048576 }')"
done
# The budget the README promises for the board build.
f="$TD/aarch64-unknown-linux-musl/release/postern"
[ "$(stat -c %s "$f")" -le $((4 * 1048576)) ] || { echo "$f is over its 4 MiB budget" >&2; exit 1; }
echo "ok: aarch64-unknown-linux-musl within its 4 MiB budget"
