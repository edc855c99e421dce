#!/usr/bin/env bash
# End-to-end smoke test of one build, under qemu-user for ARM targets:
#   swaks -> postern (ARM, emulated) -> smtp-sink (Postfix) over loopback:
#   receive, queue, deliver; `sendmail -t -oi` from a cron-style pipe and from
#   Python's email package (no smtplib); reload on SIGHUP (a new listener
#   appears, a broken config is refused); SIGTERM stops cleanly.
# Usage: board/smoke.sh TRIPLE BINARY [PORT_BASE]   (root; ~20 s per target)
# Ports PORT_BASE..PORT_BASE+3 on 127.0.0.1 (default 40100).
set -euo pipefail
triple=$1 bin=$(realpath "$2") base=${3:-40100}
case "$triple" in
  aarch64-unknown-linux-gnu) runner=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
  armv7-unknown-linux-gnueabihf) runner=(qemu-arm -L /usr/arm-linux-gnueabihf) ;;
  aarch64-unknown-linux-musl) runner=(qemu-aarch64) ;;
  x86_64-*) runner=() ;;
  *) echo "smoke.sh: unknown target $triple" >&2; exit 2 ;;
esac
sink_port=$base port=$((base + 1)) port2=$((base + 2))
work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "smoke[$triple]: $*" >&2
  echo "--- postern log ---" >&2; cat "$work/postern.log" >&2 || true
  exit 1
}
# wait_for SECONDS CMD...: poll until CMD succeeds.
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -lt $end ] || return 1; sleep 0.1; done
}
logged() { grep -q -- "$1" "$work/postern.log"; }
logged_n() { [ "$(grep -c -- "$1" "$work/postern.log")" -ge "$2" ]; }
delivered() { grep -rqs -- "$1" "$work/sink"; }
listening() { [ -n "$(ss -Hltn "sport = :$1")" ]; }

# smtp-sink runs as postfix and writes the dumps.
chmod 755 "$work"
mkdir -p "$work/sink"
chmod 777 "$work/sink"
smtp-sink -u postfix -h sink.test -d "$work/sink/%M%S." "127.0.0.1:$sink_port" 16 \
  >"$work/sink.log" 2>&1 &
pids+=($!)
wait_for 10 listening "$sink_port" || fail "smtp-sink did not start: $(cat "$work/sink.log")"

config() { # config LISTEN...: the config text
  local l
  printf 'hostname = "board.test"\nlog_level = "info"\n[server]\nlisten = ['
  for l in "$@"; do printf '"127.0.0.1:%s", ' "$l"; done
  printf ']\n[policy]\nallow_clients = ["127.0.0.0/8"]\n'
  printf '[queue]\ndir = "%s/queue"\nretry_intervals = ["1s"]\n' "$work"
  printf '[upstream]\nkind = "smarthost"\nhost = "127.0.0.1"\nport = %s\ntls = "none"\n' "$sink_port"
}
config "$port" > "$work/postern.toml"
start=$SECONDS
"${runner[@]}" "$bin" serve --config "$work/postern.toml" >"$work/postern.log" 2>&1 &
pid=$!
pids+=($pid)
wait_for 30 logged "postern started" || fail "postern did not start"
echo "ok: postern ($triple) started in $((SECONDS - start))s: $(file -b "$bin" | cut -d, -f1-2)"

# 1. swaks (a real client) -> postern -> smtp-sink.
tok="smoke-$triple-$RANDOM"
swaks --server "127.0.0.1:$port" --from nas@lan.test --to ops@example.test \
  --header "Subject: $tok" --body "disk check passed" >"$work/swaks.log" 2>&1 ||
  fail "swaks failed: $(tail -5 "$work/swaks.log")"
wait_for 30 delivered "$tok" || fail "smtp-sink never got $tok"
wait_for 10 logged "status=sent" || fail "no status=sent"
echo "ok: swaks -> postern -> smtp-sink (received, queued, delivered)"

# 2. sendmail as cron calls it (argv[0] = sendmail, -t -oi, LF line ends).
ln -s "$bin" "$work/sendmail"
tok2="cron-$RANDOM"
printf 'To: ops@example.test\nSubject: %s\n\n.\nbackup done\n' "$tok2" |
  "${runner[@]}" "$work/sendmail" -t -oi -f root@board.test -C "$work/postern.toml" ||
  fail "sendmail exited $?"
wait_for 30 delivered "$tok2" || fail "smtp-sink never got $tok2"
echo "ok: cron-style pipe into sendmail -t -oi -> postern -> smtp-sink"

# 3. Python's email package handing a message to sendmail (no smtplib).
tok3="python-$RANDOM"
/usr/bin/python3 - "$tok3" "$work/sendmail" "$work/postern.toml" "${runner[@]}" <<'PY' ||
import subprocess, sys
from email.message import EmailMessage
tok, sendmail, cfg, runner = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
m = EmailMessage()
m["From"] = "Unattended Upgrades <root@board.test>"
m["To"] = "ops@example.test"
m["Subject"] = tok
m.set_content("3 packages upgraded\n")
r = subprocess.run(runner + [sendmail, "-t", "-oi", "-C", cfg], input=m.as_bytes())
sys.exit(r.returncode)
PY
  fail "python -> sendmail failed"
wait_for 30 delivered "$tok3" || fail "smtp-sink never got $tok3"
echo "ok: Python email.message | sendmail -t -oi -> postern -> smtp-sink"

# 4. Reload: a second listener appears; a broken config is refused.
config "$port" "$port2" > "$work/postern.toml"
kill -HUP "$pid"
wait_for 30 logged "config reloaded" || fail "no reload"
tok4="reload-$RANDOM"
swaks --server "127.0.0.1:$port2" --from nas@lan.test --to ops@example.test \
  --header "Subject: $tok4" >"$work/swaks.log" 2>&1 || fail "swaks on the new listener failed"
wait_for 30 delivered "$tok4" || fail "smtp-sink never got $tok4"
echo 'this is [not toml' >> "$work/postern.toml"
kill -HUP "$pid"
wait_for 30 logged "reload failed" || fail "a broken config was not refused"
swaks --server "127.0.0.1:$port" --quit-after RCPT --from nas@lan.test --to ops@example.test \
  >"$work/swaks.log" 2>&1 || fail "not serving after a refused reload"
echo "ok: SIGHUP added a listener (swaks delivered through it); a broken config was refused, old one kept"

# 5. SIGTERM: clean exit.
kill -TERM "$pid"
wait_for 30 logged "stopped" || fail "did not stop on SIGTERM"
wait "$pid" || fail "exit status $? after SIGTERM"
echo "ok: SIGTERM -> stopped, exit 0 ($((SECONDS - start))s in all)"
