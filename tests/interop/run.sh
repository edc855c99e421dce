#!/usr/bin/env bash
# postern against real SMTP peers, over loopback only.
#
#   clients  : swaks, curl, Python smtplib            --> postern
#   upstream : Postfix (relay-only, STARTTLS)  --> smtp-sink (dumps each message)
#              aiosmtpd (STARTTLS + AUTH PLAIN/LOGIN, records each message)
#              a maildir outbox
#
# Usage: tests/interop/run.sh [--harness-only] [--keep]
#   --harness-only  start the upstreams and check them with swaks alone (no postern)
#   --keep          keep the work directory (it is always kept when a check fails)
# Environment:
#   POSTERN_BIN        use this binary instead of building one
#   CARGO_TARGET_DIR   where `cargo build --release` puts it (default ./target)
#   INTEROP_PORT_BASE  first of the loopback ports used (default 10025; see below)
#
# Needs root (Postfix), swaks, postfix (smtp-sink), curl, openssl, ss, and
# Debian's /usr/bin/python3 with python3-aiosmtpd; .ci/run installs them.
# Every wait polls with a deadline; every process started here is stopped on exit.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3 # Debian's: the one with python3-aiosmtpd
MSGTOOL=("$PY" "$HERE/msgtool.py")

HARNESS_ONLY=0
KEEP=0
for arg in "$@"; do
  case $arg in
    --harness-only) HARNESS_ONLY=1 ;;
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

BASE=${INTEROP_PORT_BASE:-10025}
PORT_POSTFIX=$BASE              # Postfix smtpd, 127.0.0.1 and ::1
PORT_SINK=$((BASE + 1))         # smtp-sink behind Postfix
PORT_AUTH=$((BASE + 2))         # aiosmtpd with STARTTLS + AUTH
PORT_POSTERN0=$((BASE + 2500))  # postern instances: 12525, 12526, ...

HOSTNAME_POSTERN=relay.test
AUTH_USER=device@relay.test
WAIT=20 # seconds a message may take to reach an upstream

START_TIME=$SECONDS
WORK=
PIDS=()         # every background process started here
declare -A POSTERN_PID=() POSTERN_PORT=()
PASSED=0
FAILED=()
SHOW_LOGS=()    # logs printed if the run aborts outside a check
CTX_LOGS=()     # logs the current check involves; their tails follow its FAIL line

# ---------------------------------------------------------------------------
# Output and bookkeeping

banner() { printf '\n=== %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# check NAME CMD...: run one check. CMD prints its reason as the last line of
# stdout and returns non-zero on failure; it runs with errexit off (it is
# called in an if), so check functions return explicitly.
check() {
  local name=$1 out rc reason
  shift
  out=$WORK/check.out
  CTX_LOGS=()
  if "$@" >"$out" 2>"$WORK/check.err"; then rc=0; else rc=$?; fi
  { printf '### %s\n' "$name"; cat "$WORK/check.err"; } >>"$WORK/checks.stderr"
  reason=$(tail -n 1 "$out")
  if [ "$rc" -eq 0 ]; then
    PASSED=$((PASSED + 1))
    printf 'PASS %s: %s\n' "$name" "$reason"
  else
    FAILED+=("$name")
    printf 'FAIL %s: %s\n' "$name" "${reason:-exit status $rc}"
    # Context lines a check printed before its reason.
    head -n -1 "$out" | sed 's/^/       /' | head -n 20 || true
    grep -v '^$' "$WORK/check.err" | tail -n 5 | sed 's/^/       stderr: /' || true
    local f
    for f in $(printf '%s\n' "${CTX_LOGS[@]}" | awk '!seen[$0]++'); do
      [ -s "$f" ] || continue
      printf '       --- last 15 lines of %s\n' "${f#"$WORK"/}"
      plain_log "$f" | tail -n 15 | cut -c1-300 | sed 's/^/       | /'
    done
  fi
}

ctx() { CTX_LOGS+=("$@"); } # ctx LOG...: the current check involves these logs

# wait_until SECONDS CMD...: poll CMD every 0.2 s until it succeeds or the deadline passes.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

listening() { # listening ADDR PORT: something listens there (does not connect)
  [ -n "$(ss -Hltn "src $1 and sport = :$2" 2>/dev/null)" ]
}

port_free() {
  [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

alive() { kill -0 "$1" 2>/dev/null; }

# Logs without colour codes, whatever the logger decided.
plain_log() { sed 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null; }

# log_lines FILE ID PATTERN: lines of FILE mentioning ID and matching PATTERN (ERE).
log_lines() { plain_log "$1" | grep -F -- "$2" | grep -E -- "$3" || true; }
log_count() { log_lines "$@" | grep -c . || true; }
log_has() { [ "$(log_count "$@")" -gt 0 ]; }

stop_pid() { # stop_pid PID: SIGTERM, then SIGKILL after 10 s
  local pid=$1
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  wait_until 10 eval "! alive $pid" || kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid master
  trap - EXIT INT TERM
  set +e
  exec 1>&3 2>&4 # a signal may land while a check's output is redirected
  [ "$rc" -ge 128 ] && printf '\nrun.sh: interrupted (status %d), cleaning up\n' "$rc"
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [ -n "$WORK" ] && [ -f "$WORK/postfix/conf/main.cf" ]; then
    master=$(tr -dc 0-9 <"$WORK/postfix/queue/pid/master.pid" 2>/dev/null)
    postfix -c "$WORK/postfix/conf" stop >/dev/null 2>&1
    if [ -n "$master" ] && ! wait_until 10 eval "! alive $master"; then
      postfix -c "$WORK/postfix/conf" abort >/dev/null 2>&1
      kill -KILL "$master" 2>/dev/null
    fi
  fi
  if [ "$rc" -ne 0 ] && [ "${#FAILED[@]}" -eq 0 ]; then
    # Aborted outside a check (set-up): show everything there is.
    for f in "${SHOW_LOGS[@]}"; do
      [ -s "$f" ] || continue
      printf '\n--- last 40 lines of %s\n' "$f"
      plain_log "$f" | tail -n 40
    done
  fi
  if [ "${#FAILED[@]}" -gt 0 ] || [ "$rc" -ne 0 ]; then
    [ -n "$WORK" ] && printf '\nwork directory kept (logs, configs, messages): %s\n' "$WORK"
  elif [ -n "$WORK" ] && [ "$KEEP" -eq 0 ]; then
    rm -rf "$WORK"
  elif [ -n "$WORK" ]; then
    printf 'work directory kept: %s\n' "$WORK"
  fi
  exit "$rc"
}
exec 3>&1 4>&2 # the run's own stdout/stderr, for cleanup; not passed to daemons
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Preconditions, binary, work directory

[ "$(id -u)" -eq 0 ] || die "needs root (Postfix is started with its own config directory)"
for tool in swaks postfix smtp-sink curl openssl ss; do
  command -v "$tool" >/dev/null || die "$tool not found (.ci/run installs it)"
done
"$PY" -c 'import aiosmtpd' 2>/dev/null || die "$PY cannot import aiosmtpd (apt-get install python3-aiosmtpd)"
SWAKS_SUPPORT=$(swaks --support 2>&1 || true)
grep -q '=== TLS supported' <<<"$SWAKS_SUPPORT" || die "swaks lacks TLS support (apt-get install libnet-ssleay-perl)"
grep -q '=== IPv6 supported' <<<"$SWAKS_SUPPORT" || die "swaks lacks IPv6 support (apt-get install libio-socket-inet6-perl)"
for port in "$PORT_POSTFIX" "$PORT_SINK" "$PORT_AUTH"; do
  port_free "$port" || die "port $port is in use (an earlier run still alive? INTEROP_PORT_BASE moves the ports)"
done

if [ "$HARNESS_ONLY" -eq 0 ]; then
  if [ -n "${POSTERN_BIN:-}" ]; then
    POSTERN=$POSTERN_BIN
  else
    banner "build postern (cargo build --release)"
    (cd "$ROOT" && cargo build --release --bin postern)
    POSTERN=${CARGO_TARGET_DIR:-$ROOT/target}/release/postern
  fi
  [ -x "$POSTERN" ] || die "no postern binary at $POSTERN"
fi

WORK=$(mktemp -d /tmp/postern-interop.XXXXXX)
chmod 755 "$WORK" # Postfix daemons (user postfix) live below it
: >"$WORK/checks.stderr"
SHOW_LOGS+=("$WORK/checks.stderr")

# ---------------------------------------------------------------------------
# Throwaway PKI: one CA that postern trusts, one it does not

make_ca() { # make_ca NAME
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/pki/$1.key" -out "$WORK/pki/$1.pem" -days 2 \
    -subj "/CN=postern interop $1" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>>"$WORK/pki/openssl.log"
}

make_pki() {
  mkdir -p "$WORK/pki"
  make_ca ca
  make_ca other-ca
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/pki/server.key" -out "$WORK/pki/server.csr" \
    -subj "/CN=smarthost.test" 2>>"$WORK/pki/openssl.log"
  cat >"$WORK/pki/server.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:smarthost.test, DNS:localhost, IP:127.0.0.1, IP:::1
EOF
  openssl x509 -req -in "$WORK/pki/server.csr" -CA "$WORK/pki/ca.pem" -CAkey "$WORK/pki/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/pki/server.ext" -out "$WORK/pki/server.pem" 2>>"$WORK/pki/openssl.log"
  openssl verify -CAfile "$WORK/pki/ca.pem" "$WORK/pki/server.pem" >/dev/null
  chmod 600 "$WORK/pki/"*.key
}

# ---------------------------------------------------------------------------
# Postfix: relay-only smarthost on $PORT_POSTFIX, relaying everything to smtp-sink

start_postfix() {
  local pf=$WORK/postfix
  mkdir -p "$pf/conf" "$pf/queue" "$pf/data" "$WORK/sink"
  chown postfix "$pf/data" "$WORK/sink"
  cat >"$pf/conf/main.cf" <<EOF
# Generated by tests/interop/run.sh: a relay-only smarthost for postern's tests.
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
maillog_file = $pf/postfix.log
maillog_file_prefixes = $pf
myhostname = smarthost.test
mydomain = smarthost.test
myorigin = \$myhostname
inet_interfaces = loopback-only
inet_protocols = all
mynetworks = 127.0.0.0/8 [::1]/128
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# No local delivery at all; everything goes to smtp-sink.
mydestination =
local_recipient_maps =
local_transport = error:no local delivery
alias_maps =
alias_database =
relayhost = [127.0.0.1]:$PORT_SINK
# Leave the headers alone, so the tests see only what postern did:
# no Date/Message-ID/From added, no address rewriting for loopback clients.
local_header_rewrite_clients =
always_add_missing_headers = no
# Reject bare LF from the client (postern), as large providers do.
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
# STARTTLS offered (not required), recorded in the Received header.
smtpd_tls_security_level = may
smtpd_tls_chain_files = $WORK/pki/server.key, $WORK/pki/server.pem
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
smtp_tls_security_level = none
biff = no
EOF
  cat >"$pf/conf/master.cf" <<EOF
# Generated by tests/interop/run.sh. No port 25, no chroot.
127.0.0.1:$PORT_POSTFIX inet n - n - - smtpd
[::1]:$PORT_POSTFIX inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
  SHOW_LOGS+=("$pf/postfix.log" "$pf/start.out")
  # Postfix reports start-up errors on stderr only when it is a terminal.
  local runner=()
  command -v script >/dev/null && runner=(script -qec)
  if [ ${#runner[@]} -gt 0 ]; then
    "${runner[@]}" "postfix -c '$pf/conf' check && postfix -c '$pf/conf' start" /dev/null >"$pf/start.out" 2>&1 3>&- 4>&- ||
      die "Postfix did not start: $(tr -d '\r' <"$pf/start.out" | tail -n 5)"
  else
    { postfix -c "$pf/conf" check && postfix -c "$pf/conf" start; } >"$pf/start.out" 2>&1 3>&- 4>&- ||
      die "Postfix did not start (see $pf/postfix.log)"
  fi
  wait_until 20 listening 127.0.0.1 "$PORT_POSTFIX" || die "Postfix does not listen on 127.0.0.1:$PORT_POSTFIX"
  wait_until 20 listening '[::1]' "$PORT_POSTFIX" || die "Postfix does not listen on [::1]:$PORT_POSTFIX"
}

start_sink() {
  local user=()
  [ "$(id -u)" -eq 0 ] && user=(-u postfix)
  smtp-sink "${user[@]}" -h sink.test -d "$WORK/sink/%Y%m%d%H%M%S." \
    "127.0.0.1:$PORT_SINK" 64 >"$WORK/sink.log" 2>&1 3>&- 4>&- &
  PIDS+=($!)
  SHOW_LOGS+=("$WORK/sink.log")
  wait_until 10 listening 127.0.0.1 "$PORT_SINK" || die "smtp-sink does not listen on $PORT_SINK"
}

start_auth_upstream() {
  printf 'correct horse battery staple\n' >"$WORK/auth-password"
  printf 'wrong password\n' >"$WORK/auth-password-wrong"
  chmod 600 "$WORK/auth-password" "$WORK/auth-password-wrong"
  "$PY" "$HERE/upstream_auth.py" --port "$PORT_AUTH" \
    --cert "$WORK/pki/server.pem" --key "$WORK/pki/server.key" \
    --user "$AUTH_USER" --password-file "$WORK/auth-password" \
    --outdir "$WORK/auth-out" --ready-file "$WORK/auth.ready" >"$WORK/auth-upstream.log" 2>&1 3>&- 4>&- &
  PIDS+=($!)
  SHOW_LOGS+=("$WORK/auth-upstream.log")
  local pid=$!
  wait_until 20 eval "[ -s '$WORK/auth.ready' ] || ! alive $pid" && [ -s "$WORK/auth.ready" ] ||
    die "aiosmtpd upstream did not start: $(tail -n 5 "$WORK/auth-upstream.log")"
}

# ---------------------------------------------------------------------------
# swaks helpers

TOKEN_N=0
new_token() { TOKEN_N=$((TOKEN_N + 1)); TOKEN=$(printf 'tok%s%03d' "$$" "$TOKEN_N"); } # sets TOKEN

# swaks_to PORT TRANSCRIPT ARGS...: run swaks against 127.0.0.1:PORT, transcript to a file; returns swaks' status.
swaks_to() {
  local port=$1 out=$2
  shift 2
  swaks --server 127.0.0.1 --port "$port" --timeout 30 --helo device.lan.example "$@" >"$out" 2>&1
}

queued_id_from() { # queued_id_from TRANSCRIPT
  sed -n 's/^<[-~]  250 2\.0\.0 Ok: queued as \([^ ]*\).*/\1/p' "$1" | tr -d '\r' | tail -n 1
}

show_transcript() { # the SMTP replies of a transcript, as context lines
  grep -E '^(<|\*\*\*)' "$1" | tail -n 8 | sed 's/^/transcript: /'
}

# ---------------------------------------------------------------------------
# Harness self-test: the upstreams work with swaks alone

harness_postfix() {
  ctx "$WORK/postfix/postfix.log" "$WORK/sink.log"
  local tok t
  new_token
  tok=$TOKEN
  t=$WORK/harness-postfix
  if ! swaks_to "$PORT_POSTFIX" "$t.txt" -f dev@lan.example -t harness@example.net \
    --header "Subject: harness $tok" --body $'harness body\n.dot line\n'; then
    show_transcript "$t.txt"
    echo "swaks to Postfix failed"
    return 1
  fi
  "${MSGTOOL[@]}" swaks-sent "$t.txt" "$t.sent" >/dev/null || return 1
  local got
  got=$("${MSGTOOL[@]}" wait --dir "$WORK/sink" --format sink --postfix-log "$WORK/postfix/postfix.log" \
    --token "$tok" --timeout "$WAIT") || { echo "$got"; return 1; }
  "${MSGTOOL[@]}" compare --sent "$t.sent" --got "$got" --format sink --received 1 --tls no
}

harness_postfix_tls() {
  ctx "$WORK/postfix/postfix.log" "$WORK/sink.log"
  local tok t got
  new_token
  tok=$TOKEN
  t=$WORK/harness-postfix-tls
  if ! swaks_to "$PORT_POSTFIX" "$t.txt" -f dev@lan.example -t harness@example.net --tls \
    --header "Subject: harness tls $tok"; then
    show_transcript "$t.txt"
    echo "swaks --tls to Postfix failed"
    return 1
  fi
  "${MSGTOOL[@]}" swaks-sent "$t.txt" "$t.sent" >/dev/null || return 1
  got=$("${MSGTOOL[@]}" wait --dir "$WORK/sink" --format sink --postfix-log "$WORK/postfix/postfix.log" \
    --token "$tok" --timeout "$WAIT") || { echo "$got"; return 1; }
  "${MSGTOOL[@]}" compare --sent "$t.sent" --got "$got" --format sink --received 1 --tls yes
}

harness_auth() {
  ctx "$WORK/auth-upstream.log"
  local tok t got
  new_token
  tok=$TOKEN
  t=$WORK/harness-auth
  if ! swaks_to "$PORT_AUTH" "$t.txt" -f dev@lan.example -t harness@example.net --tls \
    --auth PLAIN --auth-user "$AUTH_USER" --auth-password "$(head -n 1 "$WORK/auth-password")" \
    --header "Subject: harness auth $tok"; then
    show_transcript "$t.txt"
    echo "swaks STARTTLS + AUTH PLAIN to aiosmtpd failed"
    return 1
  fi
  got=$("${MSGTOOL[@]}" wait --dir "$WORK/auth-out" --format raw --token "$tok" --timeout "$WAIT") ||
    { echo "$got"; return 1; }
  "$PY" - "${got%.eml}.json" "$AUTH_USER" <<'EOF' || return 1
import json, sys
m = json.load(open(sys.argv[1]))
if not (m["tls"] and m["auth_user"] == sys.argv[2]):
    print("aiosmtpd recorded tls=%s auth_user=%s" % (m["tls"], m["auth_user"])); sys.exit(1)
EOF
  if swaks_to "$PORT_AUTH" "$t-bad.txt" -f dev@lan.example -t harness@example.net --tls \
    --auth LOGIN --auth-user "$AUTH_USER" --auth-password nope --header "Subject: harness bad $tok"; then
    echo "aiosmtpd accepted a wrong password"
    return 1
  fi
  grep -q '^<~\* 535 5\.7\.8' "$t-bad.txt" || { show_transcript "$t-bad.txt"; echo "wrong password not refused with 535 5.7.8"; return 1; }
  echo "STARTTLS + AUTH PLAIN recorded with the user; wrong password (LOGIN) refused with 535 5.7.8"
}

harness_curl_bare_lf() { # the curl fixture really puts bare LF on the wire: Postfix refuses it
  ctx "$WORK/postfix/postfix.log"
  local t=$WORK/harness-curl rc=0
  new_token
  "${MSGTOOL[@]}" fixture --token "$TOKEN" --out "$t.eml" --expected "$t.expected" >/dev/null || return 1
  curl --silent --show-error --max-time 60 "smtp://127.0.0.1:$PORT_POSTFIX/device.lan.example" \
    --mail-from curl-harness@lan.example --mail-rcpt ops@example.net --upload-file "$t.eml" >"$t.curl" 2>&1 || rc=$?
  [ "$rc" -ne 0 ] || { echo "Postfix accepted the fixture from curl: no bare LF reached it"; return 1; }
  wait_until 10 grep -q 'bare <LF> received; from=<curl-harness@lan.example>' "$WORK/postfix/postfix.log" ||
    { echo "curl failed ($rc) but Postfix did not log 'bare <LF> received': $(tail -n 1 "$t.curl")"; return 1; }
  echo "curl sends the fixture's bare LF as is; Postfix refuses it ($(tail -n 1 "$t.curl" | cut -c1-60))"
}

# ---------------------------------------------------------------------------
# postern instances

# write_config NAME PORT UPSTREAM_TOML: a config for instance NAME.
write_config() {
  local name=$1 port=$2 upstream=$3 dir=$WORK/postern-$1
  mkdir -p "$dir"
  cat >"$dir/postern.toml" <<EOF
# Generated by tests/interop/run.sh for the "$name" checks.
hostname = "$HOSTNAME_POSTERN"
log_level = "debug"

[server]
listen = ["127.0.0.1:$port", "[::1]:$port"]
max_message_size = "1MiB"
max_recipients = 100
# The curl fixture is a legacy device that sends bare LF (refused
# unless normalised for its network).
bare_newline_normalize_clients = ["127.0.0.1/32", "::1/128"]

[policy]
allow_clients = ["127.0.0.1/32", "::1/128"]
deny_clients = []
allow_senders = []
deny_senders = ["spammer@bad.example"]
allow_recipients = []
deny_recipients = ["blocked.example"]

[queue]
dir = "$dir/queue"
retry_intervals = ["1s"]

[upstream]
$upstream

[aliases]
root = "ops@example.net"
admin = "ops@example.net"
EOF
}

# start_postern NAME UPSTREAM_TOML: check the config, serve it, wait for both listeners.
start_postern() {
  local name=$1 port dir=$WORK/postern-$1 pid
  ctx "$dir/postern.log"
  port=$((PORT_POSTERN0 + ${#POSTERN_PORT[@]}))
  port_free "$port" || { echo "port $port is in use"; return 1; }
  write_config "$name" "$port" "$2"
  if ! "$POSTERN" check --config "$dir/postern.toml" >"$dir/check.out" 2>&1; then
    sed 's/^/postern check: /' "$dir/check.out" | head -n 10
    echo "postern check rejects the generated config $dir/postern.toml"
    return 1
  fi
  NO_COLOR=1 "$POSTERN" serve --config "$dir/postern.toml" >"$dir/stdout.log" 2>"$dir/postern.log" 3>&- 4>&- &
  pid=$!
  PIDS+=("$pid")
  SHOW_LOGS+=("$dir/postern.log")
  POSTERN_PID[$name]=$pid
  POSTERN_PORT[$name]=$port
  if ! wait_until 20 eval "! alive $pid || { listening 127.0.0.1 $port && listening '[::1]' $port; }" ||
    ! alive "$pid"; then
    plain_log "$dir/postern.log" | tail -n 5 | sed 's/^/postern: /'
    echo "postern serve ($name) did not come up listening on 127.0.0.1:$port and [::1]:$port"
    return 1
  fi
  echo "listening on 127.0.0.1:$port and [::1]:$port (pid $pid); postern check accepts the config"
}

need() { # need NAME: the instance is up, or say so as the reason
  local pid=${POSTERN_PID[$1]:-} rc
  ctx "$(postern_log "$1")"
  case $1 in
    relay | tls | untrusted) ctx "$WORK/postfix/postfix.log" ;;
    auth | badauth) ctx "$WORK/auth-upstream.log" ;;
  esac
  [ -n "$pid" ] || { echo "skipped: postern instance '$1' did not start"; return 1; }
  alive "$pid" && return 0
  if wait "$pid"; then rc=0; else rc=$?; fi
  plain_log "$(postern_log "$1")" | tail -n 3 | sed 's/^/log: /'
  echo "postern instance '$1' exited unexpectedly (status $rc)"
  return 1
}

# stop_postern NAME: SIGTERM; must exit 0 within 10 s.
stop_postern() {
  local name=$1 pid rc
  need "$name" || return 1
  pid=${POSTERN_PID[$name]}
  kill -TERM "$pid"
  if ! wait_until 10 eval "! alive $pid"; then
    echo "still running 10 s after SIGTERM"
    return 1
  fi
  if wait "$pid"; then rc=0; else rc=$?; fi
  [ "$rc" -eq 0 ] || { echo "exited with status $rc after SIGTERM"; return 1; }
  echo "exited 0 after SIGTERM"
}

# Delivery outcomes in postern's log (contract: status=sent|deferred|bounced; quotes tolerated).
SENT_RE='status="?sent\b'
DEFERRED_RE='status="?deferred\b'
FINAL_RE='status="?(sent|bounced)\b'

deferred_at_least() { [ "$(log_count "$1" "$2" "$DEFERRED_RE")" -ge "$3" ]; }

# postern_log NAME: its log file
postern_log() { echo "$WORK/postern-$1/postern.log"; }

# expect_queued_sent NAME ID: the log has the queued line and a status=sent line for ID.
expect_queued_sent() {
  local log
  log=$(postern_log "$1")
  wait_until 5 log_has "$log" "$2" 'queued' || { echo "no log line with 'queued' and $2"; return 1; }
  if ! wait_until "$WAIT" log_has "$log" "$2" "$SENT_RE"; then
    log_lines "$log" "$2" . | tail -n 5 | sed 's/^/log: /'
    echo "no 'status=sent' line for $2 within ${WAIT}s"
    return 1
  fi
}

# send_swaks NAME TAG ARGS...: swaks to instance NAME; sets SENT (rebuilt DATA), QID, TOKEN.
send_swaks() {
  local name=$1 tag=$2 t
  shift 2
  new_token
  t=$WORK/$tag
  if ! swaks_to "${POSTERN_PORT[$name]}" "$t.txt" --header "Subject: interop $tag $TOKEN" "$@"; then
    show_transcript "$t.txt"
    echo "swaks could not hand the message to postern ($name)"
    return 1
  fi
  QID=$(queued_id_from "$t.txt")
  if [ -z "$QID" ]; then
    show_transcript "$t.txt"
    echo "reply to the final dot is not '250 2.0.0 Ok: queued as <ID>'"
    return 1
  fi
  "${MSGTOOL[@]}" swaks-sent "$t.txt" "$t.sent" >/dev/null || { echo "cannot rebuild what swaks sent"; return 1; }
  SENT=$t.sent
}

# arrived_at_sink TOKEN [wait args...]: path of the smtp-sink dump holding TOKEN.
arrived_at_sink() {
  local tok=$1
  shift
  "${MSGTOOL[@]}" wait --dir "$WORK/sink" --format sink --postfix-log "$WORK/postfix/postfix.log" \
    --token "$tok" --timeout "$WAIT" "$@"
}

# ---------------------------------------------------------------------------
# The checks against postern

BODY=$'Hello from swaks.\n.a line starting with a dot\n..and two\nUTF-8: Grüße ✓\n'

chk_swaks_postfix() { # swaks -> postern -> Postfix (tls=none) -> smtp-sink
  need relay || return 1
  send_swaks relay swaks-relay -f dev@lan.example -t ops@example.net --body "$BODY" || return 1
  expect_queued_sent relay "$QID" || return 1
  local got
  got=$(arrived_at_sink "$TOKEN") || { echo "$got"; return 1; }
  "${MSGTOOL[@]}" compare --sent "$SENT" --got "$got" --format sink --received 2 --tls no --by "$HOSTNAME_POSTERN"
}

chk_swaks_ipv6() {
  need relay || return 1
  local t got tok
  new_token
  tok=$TOKEN
  t=$WORK/swaks-ipv6
  if ! swaks --server ::1 --port "${POSTERN_PORT[relay]}" -6 --timeout 30 --helo device.lan.example \
    -f dev6@lan.example -t ops@example.net --header "Subject: interop ipv6 $tok" >"$t.txt" 2>&1; then
    show_transcript "$t.txt"
    echo "swaks over [::1] failed"
    return 1
  fi
  "${MSGTOOL[@]}" swaks-sent "$t.txt" "$t.sent" >/dev/null || return 1
  got=$(arrived_at_sink "$tok") || { echo "$got"; return 1; }
  "${MSGTOOL[@]}" compare --sent "$t.sent" --got "$got" --format sink --received 2 --by "$HOSTNAME_POSTERN" >/dev/null ||
    { "${MSGTOOL[@]}" compare --sent "$t.sent" --got "$got" --format sink --received 2; return 1; }
  echo "accepted from [::1] and delivered via Postfix intact"
}

# send_curl NAME TAG: the curl fixture (8-bit, dots, bare LF, ~150 KB) to instance NAME; sets TOKEN, EXPECTED.
send_curl() {
  local name=$1 t=$WORK/$2
  new_token
  "${MSGTOOL[@]}" fixture --token "$TOKEN" --out "$t.eml" --expected "$t.expected" >/dev/null || return 1
  EXPECTED=$t.expected
  if ! curl --silent --show-error --max-time 60 "smtp://127.0.0.1:${POSTERN_PORT[$name]}/device.lan.example" \
    --mail-from curl@lan.example --mail-rcpt ops@example.net --upload-file "$t.eml" >"$t.curl" 2>&1; then
    sed 's/^/curl: /' "$t.curl" | tail -n 3
    echo "curl could not hand the message to postern ($name)"
    return 1
  fi
}

chk_curl_postfix() {
  need relay || return 1
  send_curl relay curl-relay || return 1
  local got
  if ! got=$(arrived_at_sink "$TOKEN"); then
    log_lines "$(postern_log relay)" "status=" . | tail -n 3 | sed 's/^/log: /'
    echo "$got"
    return 1
  fi
  "${MSGTOOL[@]}" compare --sent "$EXPECTED" --got "$got" --format sink --received 2 --by "$HOSTNAME_POSTERN"
}

chk_curl_auth_crlf() { # the same fixture to the recording upstream: arrives with CRLF only
  need auth || return 1
  send_curl auth curl-auth || return 1
  local got
  if ! got=$("${MSGTOOL[@]}" wait --dir "$WORK/auth-out" --format raw --token "$TOKEN" --timeout "$WAIT"); then
    log_lines "$(postern_log auth)" "status=" . | tail -n 3 | sed 's/^/log: /'
    echo "$got"
    return 1
  fi
  "${MSGTOOL[@]}" compare --sent "$EXPECTED" --got "$got" --format raw --received 1 --crlf --by "$HOSTNAME_POSTERN"
}

chk_smuggling() { # bogus end-of-data variants: never a second message, here or at Postfix
  need relay || return 1
  new_token
  local m=$WORK/smuggle.json out
  "${MSGTOOL[@]}" smuggle --port "${POSTERN_PORT[relay]}" --token "$TOKEN" --manifest "$m" || return 1
  out=$("${MSGTOOL[@]}" smuggle-check --manifest "$m" --dir "$WORK/sink" --format sink \
    --postfix-log "$WORK/postfix/postfix.log" --timeout "$WAIT") || { echo "$out"; return 1; }
  echo "$out; $("$PY" -c 'import json,sys; print(", ".join("%s: %s" % (m["ending"], m["outcome"].split(":")[0]) for m in json.load(open(sys.argv[1]))))' "$m")"
}

chk_smtplib_session() {
  need relay || return 1
  new_token
  SMTPLIB_TOKEN=$TOKEN
  mkdir -p "$WORK/smtplib"
  "${MSGTOOL[@]}" smtplib-session --port "${POSTERN_PORT[relay]}" --token "$SMTPLIB_TOKEN" \
    --outdir "$WORK/smtplib" --manifest "$WORK/smtplib/manifest.json"
}

# chk_smtplib_arrived NAME: one message of the smtplib session reached the sink intact.
chk_smtplib_arrived() {
  ctx "$(postern_log relay)" "$WORK/postfix/postfix.log"
  [ -s "$WORK/smtplib/manifest.json" ] || { echo "skipped: the smtplib session did not complete"; return 1; }
  local entry qid rcpts sent got
  entry=$("$PY" -c 'import json,sys
for e in json.load(open(sys.argv[1])):
    if e["name"] == sys.argv[2]: print(e["id"], ",".join(e["rcpts"]), e["sent"])' "$WORK/smtplib/manifest.json" "$1")
  read -r qid rcpts sent <<<"$entry"
  expect_queued_sent relay "$qid" || return 1
  got=$(arrived_at_sink "$1 $SMTPLIB_TOKEN" --rcpts "$rcpts") || { echo "$got"; return 1; }
  "${MSGTOOL[@]}" compare --sent "$sent" --got "$(head -n 1 <<<"$got")" --format sink --received 2 --by "$HOSTNAME_POSTERN" ||
    return 1
}

# smtplib_dsn NAME TAG NOTIFY: one message with RFC 3461 parameters (RET=HDRS,
# ENVID, NOTIFY, ORCPT) to instance NAME via Python smtplib (Debian's swaks
# 20201014 predates its --dsn-* options); sets TOKEN and QID.
smtplib_dsn() {
  local name=$1 tag=$2 notify=$3 out
  new_token
  out=$WORK/$tag.out
  if ! "$PY" - "${POSTERN_PORT[$name]}" "$TOKEN" "$notify" >"$out" 2>&1 <<'PYEOF'; then
import smtplib, sys
port, tok, notify = int(sys.argv[1]), sys.argv[2], sys.argv[3]
msg = ("From: dev@lan.example\r\nTo: ops@example.net\r\nSubject: interop dsn %s\r\n"
       "Message-ID: <%s@lan.example>\r\n\r\nDSN test %s\r\n" % (tok, tok, tok))
with smtplib.SMTP("127.0.0.1", port, local_hostname="device.lan.example", timeout=30) as s:
    s.ehlo()
    if not s.has_extn("dsn"):
        print("postern does not advertise DSN"); sys.exit(1)
    s.mail("dev@lan.example", ["RET=HDRS", "ENVID=env-" + tok])
    code, text = s.rcpt("ops@example.net", ["NOTIFY=" + notify, "ORCPT=rfc822;ops+40example.net"])
    if code != 250:
        print("RCPT with NOTIFY/ORCPT got %d %s" % (code, text.decode())); sys.exit(1)
    code, text = s.data(msg.encode())
    print(text.decode().split()[-1] if code == 250 else "DATA got %d" % code)
    sys.exit(0 if code == 250 else 1)
PYEOF
    tail -n 3 "$out"
    echo "smtplib could not hand the DSN message to postern ($name)"
    return 1
  fi
  QID=$(tail -n 1 "$out")
}

chk_dsn_postfix() { # DSN parameters -> postern -> Postfix -> smtp-sink, which logs what Postfix passed on
  need relay || return 1
  smtplib_dsn relay dsn-relay SUCCESS,FAILURE || return 1
  expect_queued_sent relay "$QID" || return 1
  local got
  got=$(arrived_at_sink "$TOKEN") || { echo "$got"; return 1; }
  # smtp-sink records the MAIL and RCPT arguments it got from Postfix.
  grep -q "^X-Mail-Args: .*RET=HDRS" "$got" && grep -q "^X-Mail-Args: .*ENVID=env-$TOKEN" "$got" ||
    { grep '^X-Mail-Args' "$got"; echo "Postfix did not pass on RET/ENVID"; return 1; }
  grep -q "^X-Rcpt-Args: .*NOTIFY=SUCCESS,FAILURE" "$got" && grep -qE "^X-Rcpt-Args: .*ORCPT=rfc822;ops(\+40|@)example\.net" "$got" ||
    { grep '^X-Rcpt-Args' "$got"; echo "Postfix did not pass on NOTIFY/ORCPT"; return 1; }
  # Postfix took the confirmation on: postern queues none of its own.
  ! grep -q "success report queued" "$(postern_log relay)" || { echo "postern confirmed although Postfix speaks DSN"; return 1; }
  echo "Postfix got and passed on RET=HDRS ENVID NOTIFY=SUCCESS,FAILURE ORCPT; no report from postern"
}

# dsn_report_for TOKEN: the aiosmtpd message that is a relayed report about TOKEN.
dsn_report_for() {
  local f
  for f in "$WORK"/auth-out/*.eml; do
    [ -e "$f" ] || continue
    grep -q "Action: relayed" "$f" && grep -q "$1" "$f" && { echo "$f"; return 0; }
  done
  return 1
}

chk_dsn_relayed() { # NOTIFY=SUCCESS to aiosmtpd (no DSN): postern confirms with Action: relayed
  need auth || return 1
  smtplib_dsn auth dsn-auth SUCCESS || return 1
  expect_queued_sent auth "$QID" || return 1
  local rep
  wait_until "$WAIT" dsn_report_for "$TOKEN" >/dev/null || { echo "no report with Action: relayed about $TOKEN at aiosmtpd"; return 1; }
  rep=$(dsn_report_for "$TOKEN")
  grep -q "^Original-Envelope-Id: env-$TOKEN" "$rep" || { echo "report lacks Original-Envelope-Id: env-$TOKEN"; return 1; }
  grep -q "^Original-Recipient: rfc822; ops@example.net" "$rep" || { echo "report lacks Original-Recipient"; return 1; }
  grep -q "^Remote-MTA: dns; 127.0.0.1" "$rep" || { echo "report lacks Remote-MTA"; return 1; }
  "$PY" - "${rep%.eml}.json" <<'PYEOF' || return 1
import json, sys
m = json.load(open(sys.argv[1]))
if m.get("mail_from") not in ("", "<>"):
    print("the report's sender is %r, not <>" % m.get("mail_from")); sys.exit(1)
PYEOF
  echo "$(basename "$rep"): Action: relayed, Original-Envelope-Id and Original-Recipient, from <>"
}

chk_policy_client() { # 127.0.0.2 is not in allow_clients
  need relay || return 1
  local t=$WORK/policy-client rc=0
  swaks_to "${POSTERN_PORT[relay]}" "$t.txt" --local-interface 127.0.0.2 -f dev@lan.example -t ops@example.net || rc=$?
  grep -q '^<\*\* 554 5\.7\.1' "$t.txt" && [ "$rc" -eq 21 ] ||
    { show_transcript "$t.txt"; echo "expected 554 5.7.1 as the greeting (swaks status 21), got status $rc"; return 1; }
  echo "client 127.0.0.2 got $(grep -m1 '^<\*\* 554' "$t.txt" | cut -c5- | tr -d '\r')"
}

# chk_policy_refusal STATUS CODE WHAT SWAKS-ARGS...: swaks must stop with STATUS after a CODE reply.
chk_policy_refusal() {
  need relay || return 1
  local status=$1 code=$2 what=$3 t rc=0
  shift 3
  t=$WORK/policy-$status
  swaks_to "${POSTERN_PORT[relay]}" "$t.txt" "$@" || rc=$?
  if [ "$rc" -ne "$status" ] || ! grep -q "^<\*\* $code" "$t.txt"; then
    show_transcript "$t.txt"
    echo "expected '$code' at $what (swaks status $status), got status $rc"
    return 1
  fi
  echo "$what refused: $(grep -m1 "^<\*\* $code" "$t.txt" | cut -c5- | tr -d '\r')"
}

chk_policy_big_swaks() { # over max_message_size without SIZE=: 552 after the dot
  need relay || return 1
  local big=$WORK/big.eml
  { printf 'Subject: too big\r\n\r\n'; head -c 1200000 /dev/zero | tr '\0' 'y' | fold -w 76 | sed 's/$/\r/'; } >"$big"
  chk_policy_refusal 26 '552 5.3.4' 'end of DATA (1.2 MB)' -f dev@lan.example -t ops@example.net --data "@$big"
}

chk_policy_size() {
  need relay || return 1
  new_token
  SIZE_TOKEN=$TOKEN
  "${MSGTOOL[@]}" smtplib-size --port "${POSTERN_PORT[relay]}" --token "$SIZE_TOKEN" \
    --limit $((1024 * 1024)) --sent-out "$WORK/after552.sent"
}

chk_after552_arrived() {
  ctx "$(postern_log relay)" "$WORK/postfix/postfix.log"
  [ -s "$WORK/after552.sent" ] || { echo "skipped: the SIZE session did not complete"; return 1; }
  local got
  got=$(arrived_at_sink "smtplib-after552 $SIZE_TOKEN") || { echo "$got"; return 1; }
  "${MSGTOOL[@]}" compare --sent "$WORK/after552.sent" --got "$got" --format sink --received 2 --by "$HOSTNAME_POSTERN"
}

chk_starttls_postfix() {
  need tls || return 1
  send_swaks tls swaks-tls -f dev@lan.example -t ops@example.net --body "$BODY" || return 1
  expect_queued_sent tls "$QID" || return 1
  local got
  got=$(arrived_at_sink "$TOKEN") || { echo "$got"; return 1; }
  "${MSGTOOL[@]}" compare --sent "$SENT" --got "$got" --format sink --received 2 --tls yes --by "$HOSTNAME_POSTERN" || return 1
  printf '%s\n' "$(grep -m1 -o 'using TLS[^)]*' "$got"); postern->Postfix used STARTTLS"
}

chk_untrusted_ca() { # the smarthost's cert is not signed by ca_file: deferred, never sent
  need untrusted || return 1
  send_swaks untrusted swaks-untrusted -f dev@lan.example -t ops@example.net || return 1
  local log
  log=$(postern_log untrusted)
  if ! wait_until "$WAIT" log_has "$log" "$QID" "$DEFERRED_RE"; then
    log_lines "$log" "$QID" . | tail -n 5 | sed 's/^/log: /'
    echo "no status=deferred line for $QID"
    return 1
  fi
  log_has "$log" "$QID" "$FINAL_RE" && { echo "$QID was $(log_lines "$log" "$QID" "$FINAL_RE" | grep -oE 'status="?[a-z]+' | head -n 1) with an untrusted certificate"; return 1; }
  grep -qF "$TOKEN" -r "$WORK/sink" && { echo "message reached the sink despite the untrusted certificate"; return 1; }
  echo "$QID deferred: $(log_lines "$log" "$QID" "$DEFERRED_RE" | head -n 1 | grep -oE 'status="?deferred.*' | cut -c1-120)"
}

chk_auth() {
  need auth || return 1
  send_swaks auth swaks-auth -f dev@lan.example -t ops@example.net --body "$BODY" || return 1
  expect_queued_sent auth "$QID" || return 1
  local got
  got=$("${MSGTOOL[@]}" wait --dir "$WORK/auth-out" --format raw --token "$TOKEN" --timeout "$WAIT") || { echo "$got"; return 1; }
  "$PY" - "${got%.eml}.json" "$AUTH_USER" <<'EOF' || return 1
import json, sys
m = json.load(open(sys.argv[1]))
if not m["tls"]:
    print("aiosmtpd saw the message without TLS"); sys.exit(1)
if m["auth_user"] != sys.argv[2]:
    print("aiosmtpd saw auth_user=%r, expected %r" % (m["auth_user"], sys.argv[2])); sys.exit(1)
EOF
  "${MSGTOOL[@]}" compare --sent "$SENT" --got "$got" --format raw --received 1 --crlf --by "$HOSTNAME_POSTERN" || return 1
  echo "aiosmtpd saw TLS and user $AUTH_USER; message intact, CRLF only"
}

chk_aliases_once() { # two RCPTs aliased to one address, and that address: aiosmtpd sees one RCPT
  need auth || return 1
  send_swaks auth swaks-aliases -f dev@lan.example -t root,admin@localhost,ops@example.net --body "$BODY" || return 1
  expect_queued_sent auth "$QID" || return 1
  local got
  got=$("${MSGTOOL[@]}" wait --dir "$WORK/auth-out" --format raw --token "$TOKEN" --timeout "$WAIT") || { echo "$got"; return 1; }
  "$PY" - "${got%.eml}.json" <<'EOF' || return 1
import json, sys
m = json.load(open(sys.argv[1]))
if m["rcpt_tos"] != ["ops@example.net"]:
    print("aiosmtpd saw RCPT %r, expected ['ops@example.net'] once" % (m["rcpt_tos"],)); sys.exit(1)
EOF
  echo "root, admin@localhost and ops@example.net went upstream as one RCPT TO:<ops@example.net>"
}

chk_auth_wrong_password() {
  need badauth || return 1
  send_swaks badauth swaks-badauth -f dev@lan.example -t ops@example.net || return 1
  local log n
  log=$(postern_log badauth)
  # Two attempts (retry_intervals = ["1s"]) show it is retried, not given up.
  if ! wait_until "$WAIT" deferred_at_least "$log" "$QID" 2; then
    log_lines "$log" "$QID" . | tail -n 5 | sed 's/^/log: /'
    echo "fewer than 2 status=deferred lines for $QID within ${WAIT}s"
    return 1
  fi
  n=$(log_count "$log" "$QID" "$DEFERRED_RE")
  log_has "$log" "$QID" "$FINAL_RE" && { echo "$QID: $(log_lines "$log" "$QID" "$FINAL_RE" | head -n 1)"; return 1; }
  grep -q "\"login\": \"$AUTH_USER\", \"success\": false" "$WORK/auth-out/auth.log" 2>/dev/null ||
    { echo "aiosmtpd never saw a failed AUTH for $AUTH_USER"; return 1; }
  grep -qF "$TOKEN" -r "$WORK/auth-out" --include='*.eml' && { echo "the message was delivered with a wrong password"; return 1; }
  grep -qF 'wrong password' "$log" && { echo "the password appears in postern's log"; return 1; }
  echo "$QID deferred $n times, not bounced, not delivered; password not in the log"
}

chk_maildir() {
  need maildir || return 1
  send_swaks maildir swaks-maildir -f dev@lan.example -t ops@example.net --body "$BODY" || return 1
  expect_queued_sent maildir "$QID" || return 1
  local got
  got=$("${MSGTOOL[@]}" wait --dir "$WORK/outbox" --format maildir --token "$TOKEN" --timeout "$WAIT") || { echo "$got"; return 1; }
  [ "$(basename "$got")" = "$QID.eml" ] || { echo "file is $(basename "$got"), expected $QID.eml"; return 1; }
  local how crlf="LF line endings"
  how=$("${MSGTOOL[@]}" compare --sent "$SENT" --got "$got" --format maildir --received 1 --by "$HOSTNAME_POSTERN" \
    --envelope-from dev@lan.example --envelope-to ops@example.net) || { echo "$how"; return 1; }
  grep -q $'\r$' "$got" && crlf="CRLF line endings"
  echo "$(basename "$got") in the outbox ($crlf): $how"
}

chk_config_print() { # check --print: valid TOML with our values resolved, and itself accepted by check
  local cfg=$WORK/postern-relay/postern.toml out=$WORK/config-print
  [ -f "$cfg" ] || { echo "skipped: no relay config"; return 1; }
  if ! "$POSTERN" check --config "$cfg" --print >"$out.toml" 2>"$out.err"; then
    sed 's/^/stderr: /' "$out.err" | head -n 5
    echo "postern check --print exited non-zero"
    return 1
  fi
  "$PY" - "$out.toml" "$PORT_POSTFIX" <<'EOF' || return 1
import os, sys, tomllib
if os.path.getsize(sys.argv[1]) == 0:
    print("--print printed nothing"); sys.exit(1)
try:
    c = tomllib.load(open(sys.argv[1], "rb"))
except Exception as e:
    print("--print output is not TOML: %s" % e); sys.exit(1)
want = {("hostname",): "relay.test", ("server", "max_recipients"): 100,
        ("policy", "deny_senders"): ["spammer@bad.example"], ("queue", "retry_intervals"): ["1s"],
        ("upstream", "kind"): "smarthost", ("upstream", "port"): int(sys.argv[2]), ("upstream", "tls"): "none"}
for path, v in want.items():
    x = c
    for k in path:
        x = x.get(k) if isinstance(x, dict) else None
    if x != v:
        print("--print shows %s = %r, the config says %r" % (".".join(path), x, v)); sys.exit(1)
# Resolved values, not the file's spelling: "1MiB" in bytes, defaults
# such as the session timeout ("30m") and the queue's age ("5d") in their
# canonical form.
resolved = {("server", "max_message_size"): 1048576, ("server", "session_timeout"): "30m",
            ("queue", "max_age"): "5d", ("queue", "max_size"): 64 << 20}
for path, v in resolved.items():
    x = c
    for k in path:
        x = x.get(k) if isinstance(x, dict) else None
    if x != v:
        print("--print shows %s = %r, resolved it is %r" % (".".join(path), x, v)); sys.exit(1)
EOF
  if ! "$POSTERN" check --config "$out.toml" >"$out.recheck" 2>&1; then
    head -n 5 "$out.recheck" | sed 's/^/check: /'
    echo "postern check rejects its own --print output"
    return 1
  fi
  echo "effective config ($(grep -c . "$out.toml") lines) is TOML, shows the values set, and passes check itself"
}

chk_config_errors() { # two bad values: non-zero exit, one FILE:LINE:COL line for each
  local cfg=$WORK/bad.toml out=$WORK/bad.out rc=0 line
  cat >"$cfg" <<EOF
hostname = "relay.test"
[server]
listen = ["127.0.0.1:$((PORT_POSTERN0 + 99))"]
max_message_size = "lots"
[queue]
dir = "$WORK/bad-queue"
retry_intervals = ["soon"]
[upstream]
kind = "maildir"
dir = "$WORK/bad-outbox"
EOF
  "$POSTERN" check --config "$cfg" >"$out" 2>&1 || rc=$?
  [ "$rc" -ne 0 ] || { echo "postern check accepted max_message_size = \"lots\" (exit 0)"; return 1; }
  for line in 4 7; do
    grep -qE "^$cfg:$line:[0-9]+: " "$out" || {
      head -n 5 "$out" | sed 's/^/output: /'
      echo "exit $rc, but no '$cfg:$line:COL: message' line for the bad value on line $line"
      return 1
    }
  done
  echo "exit $rc; $(grep -E "^$cfg:4:" "$out" | head -n 1 | sed "s|^$WORK/||")"
}

# ---------------------------------------------------------------------------
# Main

banner "start upstreams (PKI, Postfix on $PORT_POSTFIX -> smtp-sink on $PORT_SINK, aiosmtpd on $PORT_AUTH)"
make_pki
start_sink
start_postfix
start_auth_upstream
info "work directory: $WORK"

banner "harness self-test (swaks straight to the upstreams)"
check "harness: swaks -> Postfix -> smtp-sink" harness_postfix
check "harness: swaks STARTTLS -> Postfix shows TLS in Received" harness_postfix_tls
check "harness: swaks STARTTLS+AUTH -> aiosmtpd" harness_auth
check "harness: curl fixture has bare LF (Postfix rejects it directly)" harness_curl_bare_lf

if [ "$HARNESS_ONLY" -eq 0 ]; then
  banner "start postern instances ($POSTERN)"
  # badauth first: its retries run while the other checks do.
  check "postern up: badauth (STARTTLS + AUTH, wrong password)" start_postern badauth "$(printf '%s\n' \
    'kind = "smarthost"' 'host = "127.0.0.1"' "port = $PORT_AUTH" 'tls = "starttls"' \
    "ca_file = \"$WORK/pki/ca.pem\"" "username = \"$AUTH_USER\"" "password_file = \"$WORK/auth-password-wrong\"")"
  check "postern up: relay (tls=none -> Postfix)" start_postern relay "$(printf '%s\n' \
    'kind = "smarthost"' 'host = "127.0.0.1"' "port = $PORT_POSTFIX" 'tls = "none"')"
  check "postern up: tls (STARTTLS + ca_file -> Postfix)" start_postern tls "$(printf '%s\n' \
    'kind = "smarthost"' 'host = "127.0.0.1"' "port = $PORT_POSTFIX" 'tls = "starttls"' "ca_file = \"$WORK/pki/ca.pem\"")"
  check "postern up: untrusted (STARTTLS, cert not from ca_file)" start_postern untrusted "$(printf '%s\n' \
    'kind = "smarthost"' 'host = "127.0.0.1"' "port = $PORT_POSTFIX" 'tls = "starttls"' "ca_file = \"$WORK/pki/other-ca.pem\"")"
  check "postern up: auth (STARTTLS + AUTH -> aiosmtpd)" start_postern auth "$(printf '%s\n' \
    'kind = "smarthost"' 'host = "127.0.0.1"' "port = $PORT_AUTH" 'tls = "starttls"' \
    "ca_file = \"$WORK/pki/ca.pem\"" "username = \"$AUTH_USER\"" "password_file = \"$WORK/auth-password\"")"
  mkdir -p "$WORK/outbox"
  check "postern up: maildir" start_postern maildir "$(printf '%s\n' 'kind = "maildir"' "dir = \"$WORK/outbox\"")"

  banner "postern check"
  check "check --print: effective config" chk_config_print
  check "check: errors as FILE:LINE:COL" chk_config_errors

  banner "clients -> postern -> Postfix -> smtp-sink"
  check "swaks -> postern -> Postfix: arrives, headers and body intact" chk_swaks_postfix
  check "swaks over IPv6 [::1]" chk_swaks_ipv6
  check "curl (8-bit, dots, bare LF, 150 KB) -> Postfix" chk_curl_postfix
  check "SMTP smuggling: bare LF/CR end-of-data variants" chk_smuggling
  check "smtplib: 3 messages in one session" chk_smtplib_session
  check "smtplib: plain message arrives" chk_smtplib_arrived smtplib-one
  check "smtplib: 3 recipients all arrive" chk_smtplib_arrived smtplib-multi
  check "smtplib: send_message without Date/Message-ID gets both" chk_smtplib_arrived smtplib-noids

  banner "policy"
  check "policy: client 127.0.0.2 -> 554 at connect" chk_policy_client
  check "policy: denied sender -> 550 at MAIL" chk_policy_refusal 23 '550 5.7.1' 'MAIL' \
    -f spammer@bad.example -t ops@example.net
  check "policy: denied recipient -> 550 at RCPT" chk_policy_refusal 24 '550 5.7.1' 'RCPT' \
    -f dev@lan.example -t someone@blocked.example
  check "policy: message over max_message_size -> 552" chk_policy_big_swaks
  check "policy: SIZE= over limit -> 552 at MAIL; 552 after DATA; session goes on" chk_policy_size
  check "policy: the message sent after the 552 arrives" chk_after552_arrived

  banner "DSN (RFC 3461)"
  check "DSN: RET/ENVID/NOTIFY/ORCPT -> postern -> Postfix passes them on to smtp-sink" chk_dsn_postfix

  banner "TLS and AUTH towards the upstream"
  check "STARTTLS + ca_file -> Postfix: arrives over TLS" chk_starttls_postfix
  check "STARTTLS with an untrusted certificate: deferred, not sent" chk_untrusted_ca
  check "STARTTLS + AUTH -> aiosmtpd: arrives, user seen" chk_auth
  check "curl fixture -> aiosmtpd: bare LF arrives as CRLF, byte for byte" chk_curl_auth_crlf
  check "aliases: two RCPTs aliased to one address -> aiosmtpd sees it once" chk_aliases_once
  check "AUTH with a wrong password: deferred, retried, never bounced" chk_auth_wrong_password
  check "DSN: NOTIFY=SUCCESS to aiosmtpd (no DSN): postern confirms, Action: relayed" chk_dsn_relayed

  banner "maildir upstream"
  check "swaks -> postern -> maildir outbox" chk_maildir

  banner "shutdown"
  for name in relay tls untrusted auth badauth maildir; do
    check "SIGTERM: $name exits cleanly" stop_postern "$name"
  done
fi

banner "summary"
printf '%d passed, %d failed, %d s\n' "$PASSED" "${#FAILED[@]}" "$((SECONDS - START_TIME))"
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf 'failed:\n'
  printf '  - %s\n' "${FAILED[@]}"
  exit 1
fi
