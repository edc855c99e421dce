#!/usr/bin/env bash
# postern's outbound side against software nobody here wrote,
# over loopback only:
#
#   DNS      : dnsmasq serving MX, null MX (RFC 7505), no-MX and SERVFAIL names
#   upstream : Postfix's smtp-sink (MX delivery, failover, From rewriting)
#              aiosmtpd with STARTTLS + AUTH PLAIN/LOGIN (check --connect, send-test)
#              aiosmtpd with STARTTLS + AUTH XOAUTH2, fed by a token endpoint
#              on Python's http.server over TLS
#              aiosmtpd strict about SMTPUTF8 as Postfix is (failure reports
#              to a UTF-8 sender)
#   readers  : Python's email package parses what postern wrote (rewritten
#              From, RFC 6533 reports)
#   client   : swaks; Python's smtplib (bare root/cron qualified, a U+202E
#              address refused, a 130-message burst from an allowed client)
#
# Usage: tests/interop/outbound.sh [--keep]
# Environment: POSTERN_BIN (else cargo build --release), OUTBOUND_PORT_BASE (default 11025).
# Needs root (smtp-sink -u), swaks, smtp-sink (postfix), dnsmasq (dnsmasq-base),
# openssl, ss, Debian's /usr/bin/python3 with python3-aiosmtpd.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1

BASE=${OUTBOUND_PORT_BASE:-11025}
P_SINK=$BASE P_DNS=$((BASE + 1)) P_AUTH=$((BASE + 2)) P_TOK=$((BASE + 3)) P_XO=$((BASE + 4))
P_CC=$((BASE + 6)) P_U8=$((BASE + 7)) P_POSTERN=$((BASE + 10))
# The dead host of the failover route: a port the kernel just handed out
# and took back, so nothing left over from an earlier step listens there.
P_DEAD=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
WAIT=20
PIDS=()
PASSED=0
FAILED=()

die() { echo "outbound.sh: $*" >&2; exit 1; }
wait_until() { local d=$((SECONDS + $1)); shift; until "$@"; do [ "$SECONDS" -lt "$d" ] || return 1; sleep 0.2; done; }
listening() { [ -n "$(ss -Hltn "src 127.0.0.1 and sport = :$1" 2>/dev/null)" ]; }
listening_udp() { [ -n "$(ss -Hlun "src 127.0.0.1 and sport = :$1" 2>/dev/null)" ]; }
plain() { sed 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null; }

check() { # check NAME FUNC: FUNC prints its reason last and returns non-zero on failure
  local name=$1 out=$WORK/check.out
  shift
  if "$@" >"$out" 2>&1; then
    PASSED=$((PASSED + 1)); printf 'PASS %s: %s\n' "$name" "$(tail -n 1 "$out")"
  else
    FAILED+=("$name"); printf 'FAIL %s: %s\n' "$name" "$(tail -n 1 "$out")"
    head -n -1 "$out" | tail -n 25 | sed 's/^/       /'
  fi
}

cleanup() {
  local rc=$? pid
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait_until 10 eval "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid" 2>/dev/null; done
  if [ "${#FAILED[@]}" -gt 0 ] || [ "$rc" -ne 0 ] || [ "$KEEP" -eq 1 ]; then
    [ -n "${WORK:-}" ] && echo "work directory kept: $WORK"
  elif [ -n "${WORK:-}" ]; then
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" -eq 0 ] || die "needs root (smtp-sink drops to the postfix user)"
for t in swaks smtp-sink dnsmasq openssl ss; do command -v "$t" >/dev/null || die "$t not found"; done
"$PY" -c 'import aiosmtpd' 2>/dev/null || die "$PY cannot import aiosmtpd"
for p in $P_SINK $P_DNS $P_AUTH $P_TOK $P_XO $P_CC $P_U8 $(seq "$P_POSTERN" $((P_POSTERN + 6))); do
  listening "$p" && die "port $p is in use (OUTBOUND_PORT_BASE moves the ports)"
done
if [ -n "${POSTERN_BIN:-}" ]; then
  POSTERN=$POSTERN_BIN
else
  (cd "$ROOT" && cargo build --release --bin postern)
  POSTERN=${CARGO_TARGET_DIR:-$ROOT/target}/release/postern
fi
[ -x "$POSTERN" ] || die "no postern binary at $POSTERN"

WORK=$(mktemp -d /tmp/postern-outbound.XXXXXX)
chmod 755 "$WORK"

# --- PKI: a CA and a certificate for localhost / 127.0.0.1
mkdir -p "$WORK/pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/pki/ca.key" \
  -out "$WORK/pki/ca.pem" -days 2 -subj "/CN=postern outbound CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/pki/server.key" \
  -out "$WORK/pki/server.csr" -subj "/CN=localhost" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$WORK/pki/ext"
openssl x509 -req -in "$WORK/pki/server.csr" -CA "$WORK/pki/ca.pem" -CAkey "$WORK/pki/ca.key" -CAcreateserial \
  -days 2 -extfile "$WORK/pki/ext" -out "$WORK/pki/server.pem" 2>/dev/null
# A client certificate for the certificate-authenticated connector.
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/pki/client.key" \
  -out "$WORK/pki/client.csr" -subj "/CN=relay.test" 2>/dev/null
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$WORK/pki/client-ext"
openssl x509 -req -in "$WORK/pki/client.csr" -CA "$WORK/pki/ca.pem" -CAkey "$WORK/pki/ca.key" -CAcreateserial \
  -days 2 -extfile "$WORK/pki/client-ext" -out "$WORK/pki/client.pem" 2>/dev/null

# --- peers
mkdir -p "$WORK/sink" && chown postfix "$WORK/sink" 2>/dev/null || true
smtp-sink -u postfix -h sink.test -d "$WORK/sink/%Y%m%d%H%M%S." "127.0.0.1:$P_SINK" 64 >"$WORK/sink.log" 2>&1 &
PIDS+=($!)
dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll --user=root \
  --pid-file= --port="$P_DNS" --listen-address=127.0.0.1 --bind-interfaces --log-queries --log-facility=- \
  --local=/test/ --mx-host=mx.test,mail.mx.test,10 --host-record=mail.mx.test,127.0.0.1 \
  --host-record=nomx.test,127.0.0.1 --dns-rr=nullmx.test,15,000000 --server=/servfail.test/127.0.0.1#9 \
  >"$WORK/dnsmasq.log" 2>&1 &
PIDS+=($!)
echo "s3cret-pw" >"$WORK/auth.pass"
"$PY" "$HERE/upstream_auth.py" --port "$P_AUTH" --cert "$WORK/pki/server.pem" --key "$WORK/pki/server.key" \
  --user device@relay.test --password-file "$WORK/auth.pass" --outdir "$WORK/auth" \
  --ready-file "$WORK/auth.ready" >"$WORK/auth.log" 2>&1 &
PIDS+=($!)
"$PY" "$HERE/upstream_auth.py" --port "$P_CC" --cert "$WORK/pki/server.pem" --key "$WORK/pki/server.key" \
  --client-ca "$WORK/pki/ca.pem" --no-auth --outdir "$WORK/cc" \
  --ready-file "$WORK/cc.ready" >"$WORK/cc.log" 2>&1 &
PIDS+=($!)
echo "rt-interop-1" >"$WORK/refresh-token"
echo "cs-interop-1" >"$WORK/client-secret"
chmod 600 "$WORK/refresh-token" "$WORK/client-secret"
"$PY" "$HERE/token_endpoint.py" --port "$P_TOK" --cert "$WORK/pki/server.pem" --key "$WORK/pki/server.key" \
  --refresh-token rt-interop-1 --client-secret cs-interop-1 --token-file "$WORK/tokens" \
  --log "$WORK/token-requests.log" --ready-file "$WORK/tok.ready" >"$WORK/token.log" 2>&1 &
PIDS+=($!)
"$PY" "$HERE/xoauth2_upstream.py" --port "$P_XO" --cert "$WORK/pki/server.pem" --key "$WORK/pki/server.key" \
  --user alerts@example.test --token-file "$WORK/tokens" --outdir "$WORK/xo" \
  --ready-file "$WORK/xo.ready" >"$WORK/xo.log" 2>&1 &
PIDS+=($!)
"$PY" "$HERE/strict_utf8_upstream.py" --port "$P_U8" --outdir "$WORK/u8" \
  --ready-file "$WORK/u8.ready" >"$WORK/u8.log" 2>&1 &
PIDS+=($!)
wait_until 20 listening "$P_SINK" || die "smtp-sink did not start: $(cat "$WORK/sink.log")"
wait_until 20 listening_udp "$P_DNS" || die "dnsmasq did not start: $(cat "$WORK/dnsmasq.log")"
wait_until 20 listening "$P_AUTH" || die "aiosmtpd (AUTH) did not start: $(cat "$WORK/auth.log")"
wait_until 20 listening "$P_TOK" || die "token endpoint did not start: $(cat "$WORK/token.log")"
wait_until 20 listening "$P_XO" || die "aiosmtpd (XOAUTH2) did not start: $(cat "$WORK/xo.log")"
wait_until 20 listening "$P_CC" || die "aiosmtpd (client certificate) did not start: $(cat "$WORK/cc.log")"
wait_until 20 listening "$P_U8" || die "aiosmtpd (strict SMTPUTF8) did not start: $(cat "$WORK/u8.log")"

# --- postern instances
N=0
start_postern() { # start_postern NAME TOP TAIL
  local dir=$WORK/postern-$1 port=$((P_POSTERN + N))
  N=$((N + 1))
  mkdir -p "$dir"
  cat >"$dir/postern.toml" <<CONF
hostname = "relay.test"
log_level = "debug"
$2

[server]
listen = ["127.0.0.1:$port"]

[policy]
allow_clients = ["127.0.0.0/8"]

[queue]
dir = "$dir/queue"
retry_intervals = ["2s"]

$3
CONF
  "$POSTERN" check --config "$dir/postern.toml" >"$dir/check.out" 2>&1 || { cat "$dir/check.out"; return 1; }
  NO_COLOR=1 "$POSTERN" serve --config "$dir/postern.toml" >/dev/null 2>"$dir/postern.log" &
  PIDS+=($!)
  wait_until 20 listening "$port" || { tail "$dir/postern.log"; return 1; }
  eval "PORT_$1=$port"
}

start_postern mx "dns_servers = [\"127.0.0.1:$P_DNS\"]" "[upstream]
kind = \"mx\"
port = $P_SINK"
start_postern failover "rewrite_sender = \"alerts@example.test\"
rewrite_from = true" "[upstream]
kind = \"smarthost\"
hosts = [\"127.0.0.1:$P_DEAD\", \"127.0.0.1:$P_SINK\"]
tls = \"none\""
AUTH_ROUTE="[upstream]
kind = \"smarthost\"
host = \"localhost\"
port = $P_AUTH
tls = \"starttls\"
ca_file = \"$WORK/pki/ca.pem\"
username = \"device@relay.test\"
password_file = \"$WORK/auth.pass\""
start_postern auth "" "$AUTH_ROUTE"
start_postern xoauth2 "" "[upstream]
kind = \"smarthost\"
host = \"localhost\"
port = $P_XO
tls = \"starttls\"
ca_file = \"$WORK/pki/ca.pem\"
username = \"alerts@example.test\"
auth = \"xoauth2\"
oauth_token_url = \"https://127.0.0.1:$P_TOK/token\"
oauth_client_id = \"interop-client\"
oauth_client_secret_file = \"$WORK/client-secret\"
oauth_refresh_token_file = \"$WORK/refresh-token\"
oauth_ca_file = \"$WORK/pki/ca.pem\""

CC_ROUTE="[upstream]
kind = \"smarthost\"
host = \"localhost\"
port = $P_CC
tls = \"starttls\"
ca_file = \"$WORK/pki/ca.pem\""
start_postern cert "" "$CC_ROUTE
client_cert = \"$WORK/pki/client.pem\"
client_key = \"$WORK/pki/client.key\""
start_postern nocert "" "$CC_ROUTE"
start_postern utf8 "" "[upstream]
kind = \"smarthost\"
host = \"127.0.0.1\"
port = $P_U8
tls = \"none\""

# Never `log_of X | grep -q`: under pipefail, grep -q leaving at the first
# match makes sed die of SIGPIPE on a long log, and the check fails although
# the line is there. grep reads on to the end with its output discarded.
log_of() { plain "$WORK/postern-$1/postern.log"; }
sink_has() { grep -lF -- "$1" "$WORK"/sink/* 2>/dev/null | head -n 1; }

chk_mx() {
  local tok=mx-$RANDOM$RANDOM
  swaks --server "127.0.0.1:$PORT_mx" --from dev@lan.test \
    --to u@mx.test,u@nomx.test,u@nullmx.test,u@servfail.test --header "Subject: $tok" >/dev/null ||
    { echo "swaks failed"; return 1; }
  wait_until $WAIT eval "[ \$(grep -lF -- '$tok' '$WORK'/sink/* 2>/dev/null | wc -l) -ge 2 ]" ||
    { echo "smtp-sink did not get the mx.test and nomx.test messages"; return 1; }
  wait_until $WAIT eval "log_of mx | grep 'status=bounced' >/dev/null" || { log_of mx | tail; echo "no bounce for the null MX"; return 1; }
  wait_until $WAIT eval "log_of mx | grep 'status=deferred' | grep servfail.test >/dev/null" || { log_of mx | tail; echo "SERVFAIL was not a deferral"; return 1; }
  log_of mx | grep 'nullmx.test accepts no mail (null MX record, RFC 7505)' >/dev/null || { echo "null MX reason missing"; return 1; }
  log_of mx | grep 'status=sent' | grep 'relay=mail.mx.test\[127.0.0.1\]' >/dev/null || { echo "not delivered via the MX host"; return 1; }
  grep -q 'query\[MX\] nullmx.test' "$WORK/dnsmasq.log" || { echo "dnsmasq was not asked"; return 1; }
  echo "dnsmasq MX/null MX/no MX/SERVFAIL: 2 delivered to smtp-sink, null MX bounced, SERVFAIL deferred"
}

chk_failover_rewrite() {
  local tok=fo-$RANDOM$RANDOM f
  swaks --server "127.0.0.1:$PORT_failover" --from printer@lan.test --to ops@example.test \
    --header "Subject: $tok" --header "From: Printer <printer@lan.test>" >/dev/null || { echo "swaks failed"; return 1; }
  wait_until $WAIT eval "[ -n \"\$(sink_has '$tok')\" ]" || { log_of failover | tail; echo "nothing at smtp-sink"; return 1; }
  f=$(sink_has "$tok")
  grep -q '^From: Printer <alerts@example.test>' "$f" || { head -20 "$f"; echo "From not rewritten"; return 1; }
  grep -q '^Reply-To: <printer@lan.test>' "$f" || { head -20 "$f"; echo "no Reply-To"; return 1; }
  log_of failover | grep 'trying the next one' >/dev/null || {
    log_of failover | grep -E 'delivery|host failed' | sed -n 1,5p
    ss -Hltnp "sport = :$P_DEAD" 2>/dev/null
    echo "no failover logged (dead host 127.0.0.1:$P_DEAD)"; return 1; }
  echo "dead first host skipped; smtp-sink got From: Printer <alerts@example.test> with Reply-To"
}

chk_rewrite_refusals() {
  # A comma in the display name: one author, re-quoted; Python's parser
  # must read one address with the whole name.
  local tok=rq-$RANDOM$RANDOM two=r2-$RANDOM$RANDOM f
  swaks --server "127.0.0.1:$PORT_failover" --from printer@lan.test --to ops@example.test \
    --header "Subject: $tok" --header "From: Smith, John <printer@lan.test>" >/dev/null || { echo "swaks failed"; return 1; }
  wait_until $WAIT eval "[ -n \"\$(sink_has '$tok')\" ]" || { log_of failover | tail; echo "nothing at smtp-sink"; return 1; }
  "$PY" - "$(sink_has "$tok")" <<'PYEOF' || return 1
import email, email.policy, sys
m = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
froms = m.get_all("From")
assert len(froms) == 1, froms
a = froms[0].addresses
assert len(a) == 1 and a[0].display_name == "Smith, John" and a[0].addr_spec == "alerts@example.test", a
assert not froms[0].defects, froms[0].defects
PYEOF
  # A second From: not sent; the sender gets a report saying why.
  swaks --server "127.0.0.1:$PORT_failover" --from printer@lan.test --to ops@example.test \
    --header "Subject: $two" --header "From: Printer <printer@lan.test>" --add-header "From: ceo@bank.example" \
    >/dev/null || { echo "swaks failed"; return 1; }
  wait_until $WAIT eval "[ -n \"\$(sink_has '$two')\" ]" || { log_of failover | tail; echo "no report at smtp-sink"; return 1; }
  for f in $(grep -lF -- "$two" "$WORK"/sink/*); do
    grep -q 'multipart/report' "$f" || { head -20 "$f"; echo "the message with two From fields went out"; return 1; }
    grep -q 'rewrite_from: the message has 2 From header fields' "$f" || { echo "report does not say why"; return 1; }
  done
  echo "From: \"Smith, John\" <alerts@example.test> read as one address by Python's email; two From fields: report, nothing sent"
}

chk_utf8_report() {
  # A failure report to a UTF-8 sender, through an upstream that refuses
  # UTF-8 without SMTPUTF8: it must go with SMTPUTF8 and RFC 6533 types.
  local tok=u8-$RANDOM$RANDOM f
  "$PY" - "$PORT_utf8" "$tok" <<'PYEOF' || { echo "smtplib could not send"; return 1; }
import smtplib, sys
port, tok = int(sys.argv[1]), sys.argv[2]
msg = ("From: Δοκιμή <δοκιμή@παράδειγμα.test>\r\nTo: <nobody@example.test>\r\n"
       "Subject: %s ação\r\n\r\nbody\r\n" % tok).encode()
with smtplib.SMTP("127.0.0.1", port) as s:
    s.ehlo("dev.lan.test")
    s.sendmail("δοκιμή@παράδειγμα.test", ["nobody@example.test"], msg, mail_options=["SMTPUTF8"])
PYEOF
  wait_until $WAIT eval "grep -lF -- '$tok' '$WORK'/u8/*.eml >/dev/null 2>&1" ||
    { log_of utf8 | tail; cat "$WORK/u8/refused.log" 2>/dev/null; echo "no report at the strict upstream"; return 1; }
  f=$(grep -lF -- "$tok" "$WORK"/u8/*.eml | head -n 1)
  "$PY" - "$f" <<'PYEOF' || return 1
import email, email.policy, json, sys
eml = sys.argv[1]
meta = json.load(open(eml[:-4] + ".json", encoding="utf-8"))
assert meta["mail_from"] in ("", "<>") and meta["smtputf8"], meta
assert meta["rcpt_tos"] == ["δοκιμή@παράδειγμα.test"], meta
m = email.message_from_bytes(open(eml, "rb").read(), policy=email.policy.default)
assert m.get_content_type() == "multipart/report", m["Content-Type"]
assert m.get_param("report-type") == "global-delivery-status", m["Content-Type"]
types = [p.get_content_type() for p in m.iter_parts()]
assert types == ["text/plain", "message/global-delivery-status", "message/global-headers"], types
print("report from <> with SMTPUTF8 to %s: %s" % (meta["rcpt_tos"][0], ", ".join(types)))
PYEOF
}

chk_check_connect() {
  local out=$WORK/check-connect.out
  "$POSTERN" check --config "$WORK/postern-auth/postern.toml" --connect >"$out" 2>&1 || { cat "$out"; echo "check --connect failed"; return 1; }
  grep -q 'C: AUTH PLAIN \*\*\*\*\*\*\*\*' "$out" && grep -q 'S: 235' "$out" && grep -q '   OK' "$out" ||
    { cat "$out"; echo "conversation incomplete"; return 1; }
  ! grep -q 's3cret-pw' "$out" || { echo "password printed"; return 1; }
  echo "aiosmtpd: STARTTLS, certificate shown, AUTH PLAIN masked, OK"
}

chk_send_test() {
  local out=$WORK/send-test.out n
  n=$(ls "$WORK/auth/"*.json 2>/dev/null | wc -l)
  "$POSTERN" send-test --config "$WORK/postern-auth/postern.toml" --to ops@example.test --wait 20s >"$out" 2>&1 ||
    { cat "$out"; echo "send-test failed"; return 1; }
  [ "$(ls "$WORK/auth/"*.json | wc -l)" -gt "$n" ] || { echo "aiosmtpd recorded nothing"; return 1; }
  grep -q '"auth_user": "device@relay.test"' "$(ls "$WORK/auth/"*.json | tail -n 1)" || { echo "not authenticated"; return 1; }
  echo "send-test delivered through aiosmtpd with AUTH"
}

chk_xoauth2() {
  local tok=xo-$RANDOM$RANDOM f
  swaks --server "127.0.0.1:$PORT_xoauth2" --from scanner@lan.test --to ops@example.test \
    --header "Subject: $tok" >/dev/null || { echo "swaks failed"; return 1; }
  wait_until $WAIT eval "grep -lF -- '$tok' '$WORK'/xo/*.eml >/dev/null 2>&1" ||
    { log_of xoauth2 | tail; cat "$WORK/xo/auth.log" 2>/dev/null; echo "aiosmtpd (XOAUTH2) got nothing"; return 1; }
  f=$(grep -lF -- "$tok" "$WORK"/xo/*.eml); f=${f%.eml}.json
  "$PY" - "$f" <<'PYEOF' || return 1
import json, sys
m = json.load(open(sys.argv[1]))
assert m["tls"] and m["auth_user"] == "alerts@example.test" and m["token_len"] > 2500, m
PYEOF
  grep -q '"grant_type": "refresh_token"' "$WORK/token-requests.log" &&
    grep -q '"refresh_token": "rt-interop-1"' "$WORK/token-requests.log" || { echo "token request not a refresh_token grant"; return 1; }
  ! log_of xoauth2 | grep -E 'rt-interop-1|cs-interop-1|ya29\.interop' >/dev/null || { echo "secret in the log"; return 1; }
  echo "token from https endpoint (refresh_token grant), AUTH XOAUTH2 with a $(grep -o '"token_len": [0-9]*' "$f") token over STARTTLS"
}

chk_client_cert() {
  local tok=cc-$RANDOM$RANDOM bad=nocc-$RANDOM$RANDOM f
  swaks --server "127.0.0.1:$PORT_cert" --from ups@lan.test --to ops@example.test \
    --header "Subject: $tok" >/dev/null || { echo "swaks failed"; return 1; }
  wait_until $WAIT eval "grep -lF -- '$tok' '$WORK'/cc/*.eml >/dev/null 2>&1" ||
    { log_of cert | tail; echo "aiosmtpd (client certificate) got nothing"; return 1; }
  f=$(grep -lF -- "$tok" "$WORK"/cc/*.eml); f=${f%.eml}.json
  grep -q '"client_cert_cn": "relay.test"' "$f" || { cat "$f"; echo "no client certificate seen by aiosmtpd"; return 1; }
  # The same route without the certificate: the handshake fails, the
  # message is deferred, nothing arrives.
  swaks --server "127.0.0.1:$PORT_nocert" --from ups@lan.test --to ops@example.test \
    --header "Subject: $bad" >/dev/null || { echo "swaks failed"; return 1; }
  wait_until $WAIT eval "log_of nocert | grep 'status=deferred' >/dev/null" || { log_of nocert | tail; echo "no deferral without the certificate"; return 1; }
  ! grep -lF -- "$bad" "$WORK"/cc/*.eml >/dev/null 2>&1 || { echo "delivered without a client certificate"; return 1; }
  echo "client certificate CN=relay.test presented over STARTTLS; without it: deferred, nothing delivered"
}

chk_bare_addresses() {
  # cron's root and a script's bare sender reach smtp-sink qualified with
  # our domain (they used to go out as RCPT TO:<root>).
  local tok=bare-$RANDOM$RANDOM f
  "$PY" - "$PORT_failover" "$tok" <<'PYEOF' || { echo "smtplib could not send"; return 1; }
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20) as s:
    s.sendmail("cron", ["root"], "Subject: %s\r\n\r\ndisk full\r\n" % sys.argv[2])
PYEOF
  wait_until $WAIT eval "[ -n \"\$(sink_has '$tok')\" ]" || { log_of failover | tail; echo "nothing at smtp-sink"; return 1; }
  f=$(sink_has "$tok")
  grep -q '^X-Rcpt-Args: <root@relay.test>' "$f" || { head -8 "$f"; echo "recipient not qualified"; return 1; }
  echo "smtplib MAIL FROM:<cron> RCPT TO:<root> -> smtp-sink saw $(grep -m1 '^X-Rcpt-Args' "$f")"
}

chk_hidden_and_burst() {
  # A bidi override in an address is refused (smtplib with SMTPUTF8); a
  # burst from an allowed client (past the per-client rates) all gets 250.
  "$PY" - "$PORT_failover" <<'PYEOF'
import smtplib, sys
port = int(sys.argv[1])
with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
    try:
        s.sendmail("admin\u202emoc.knab@lan.test", ["ops@example.test"],
                   "Subject: x\r\n\r\ny\r\n".encode(), mail_options=["SMTPUTF8"])
        sys.exit("an address with U+202E was accepted")
    except smtplib.SMTPSenderRefused as e:
        code = e.smtp_code
for i in range(130):
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        s.sendmail("ups@lan.test", ["ops@example.test"], "Subject: burst %d\r\n\r\nx\r\n" % i)
print("U+202E sender refused with %d; 130 one-connection messages in a row all taken" % code)
PYEOF
}

check "client certificate vs aiosmtpd requiring one" chk_client_cert
check "bare sender and recipient qualified -> smtp-sink" chk_bare_addresses
check "smtplib: hidden characters refused, a burst all taken" chk_hidden_and_burst
check "MX via dnsmasq -> smtp-sink" chk_mx
check "failover + From rewriting -> smtp-sink" chk_failover_rewrite
check "rewrite_from: comma display name, second From -> smtp-sink" chk_rewrite_refusals
check "report to a UTF-8 sender vs aiosmtpd strict about SMTPUTF8" chk_utf8_report
check "check --connect vs aiosmtpd AUTH" chk_check_connect
check "send-test vs aiosmtpd AUTH" chk_send_test
check "XOAUTH2 vs aiosmtpd + https token endpoint" chk_xoauth2

echo "$PASSED passed, ${#FAILED[@]} failed"
[ "${#FAILED[@]}" -eq 0 ]
