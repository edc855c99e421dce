#!/usr/bin/env bash
# The postern .deb installed for real (dpkg -i into /, maintainer scripts run
# as on a board), for throwaway machines only: CI's 60-board step. About 15 s.
#   install:  exit 0 whether or not systemd is PID 1; system user and group
#             `postern`; /etc/postern/postern.toml registered as a conffile
#             (root:root 0644); /var/lib/postern postern:postern 0711 (maildrop 1733); the
#             installed binary, run as `postern`, checks the config and
#             queues a message (upstream down: it stays queued)
#   upgrade:  to a second build: the admin's config edit is kept byte for
#             byte (no .dpkg-dist/.dpkg-new), the queued message survives and
#             is delivered by the new version
#   remove:   binary and unit gone, config and queue kept
#   purge:    config and queue gone; the system user is kept (Debian's rule
#             for system users: files elsewhere may still belong to it)
# The machine is left as found: package purged, the user deleted if this
# script created it, daemons stopped. postern-sendmail is not installed here
# (it conflicts with CI's Postfix); board/test-deb.sh covers it in a scratch root.
#
# Usage: POSTERN_DEB_SYSTEM_TEST=1 board/test-deb-system.sh BINARY [TRIPLE] [PORT_BASE]
#   root only; refuses to run if postern is installed or /etc/postern or
#   /var/lib/postern exist. Ports PORT_BASE, PORT_BASE+1 on 127.0.0.1 (default 40150).
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,22p' "$0" >&2; exit 2; }
if [ "$(id -u)" != 0 ] || [ "${POSTERN_DEB_SYSTEM_TEST:-}" != 1 ]; then
  echo "test-deb-system.sh installs a package on this machine: run it as root with" \
    "POSTERN_DEB_SYSTEM_TEST=1, on a throwaway machine (CI does)" >&2
  exit 2
fi
bin=$(realpath "$1") triple=${2:-x86_64-unknown-linux-gnu} base=${3:-40150}
port=$base dead=$((base + 1))
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fail() {
  echo "test-deb-system: $*" >&2
  [ -f "$work/daemon.log" ] && { echo "--- postern log ---" >&2; cat "$work/daemon.log" >&2; }
  exit 1
}
if dpkg-query -W -f='${Status}' postern 2>/dev/null | grep -qv 'not-installed'; then
  echo "test-deb-system: postern is installed here; refusing to touch it" >&2
  exit 2
fi
for d in /etc/postern /var/lib/postern; do
  [ ! -e "$d" ] || { echo "test-deb-system: $d exists; refusing (purge would delete it)" >&2; exit 2; }
done
user_existed=0
getent passwd postern >/dev/null && user_existed=1

work=$(mktemp -d)
chmod 755 "$work"
daemon=""
cleanup() {
  [ -z "$daemon" ] || { kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
  dpkg --purge postern >/dev/null 2>&1 || true
  # Both were absent at the start (checked above), so whatever is left is ours.
  rm -rf /etc/postern /var/lib/postern
  if [ "$user_existed" = 0 ] && getent passwd postern >/dev/null; then
    userdel postern 2>/dev/null || true
  fi
  if [ "$user_existed" = 0 ] && getent group postern >/dev/null; then
    groupdel postern 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# wait_for SECONDS CMD...: poll until CMD succeeds.
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -lt $end ] || return 1; sleep 0.1; done
}
listening() { [ -n "$(ss -Hltn "sport = :$1")" ]; }
systemd_pid1() { [ -d /run/systemd/system ]; }
as_postern() { setpriv --reuid=postern --regid=postern --init-groups -- "$@"; }
# The daemon as the unit runs it (user, working directory, config), in the
# foreground: no systemd needed, and no port 25.
start_daemon() {
  (cd /var/lib/postern && exec setpriv --reuid=postern --regid=postern --init-groups -- \
    /usr/bin/postern serve --config /etc/postern/postern.toml) >>"$work/daemon.log" 2>&1 &
  daemon=$!
  wait_for 20 listening "$port" || fail "installed postern did not listen on $port"
}
stop_daemon() {
  kill -TERM "$daemon"
  wait "$daemon" || fail "postern did not exit cleanly on SIGTERM"
  daemon=""
}
queue_list() { as_postern /usr/bin/postern queue list --config /etc/postern/postern.toml; }
dpkg_i() {
  dpkg -i "$1" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i $(basename "$1") failed"; }
}

"$here/build-deb.sh" "$triple" "$bin" "$work/v1" 0.0.1 >/dev/null
"$here/build-deb.sh" "$triple" "$bin" "$work/v2" 0.0.2 >/dev/null

# --- install ------------------------------------------------------------------
dpkg_i "$work"/v1/postern_0.0.1_*.deb
if systemd_pid1; then
  wait_for 20 systemctl is-active -q postern || fail "postinst did not start postern.service"
  systemctl stop postern
  echo "ok: systemd is PID 1: postinst enabled and started postern.service (now stopped for the test)"
else
  echo "ok: dpkg -i succeeded with systemd not PID 1 (postinst skipped systemctl)"
fi
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd postern) || fail "no user postern"
[ "$uid" -lt 1000 ] || fail "postern is not a system user (uid $uid)"
[ "$(getent group "$gid" | cut -d: -f1)" = postern ] || fail "postern's primary group is not postern"
[ "$home" = /var/lib/postern ] || fail "postern's home is $home"
case "$shell" in */nologin | /bin/false) ;; *) fail "postern has a login shell: $shell" ;; esac
dpkg-query -W -f='${Conffiles}\n' postern | grep -q '^ /etc/postern/postern.toml ' ||
  fail "/etc/postern/postern.toml is not a conffile"
[ "$(stat -c '%U:%G %a' /etc/postern/postern.toml)" = "root:root 644" ] ||
  fail "config: $(stat -c '%U:%G %a' /etc/postern/postern.toml)"
[ "$(stat -c '%U:%G %a' /var/lib/postern)" = "postern:postern 711" ] ||
  fail "spool: $(stat -c '%U:%G %a' /var/lib/postern)"
[ "$(stat -c '%U:%G %a' /var/lib/postern/maildrop)" = "postern:postern 1733" ] ||
  fail "maildrop: $(stat -c '%U:%G %a' /var/lib/postern/maildrop)"
[ -f /lib/systemd/system/postern.service ] || fail "no unit"
as_postern /usr/bin/postern check --config /etc/postern/postern.toml >/dev/null ||
  fail "the postern user cannot check the installed config"
echo "ok: user postern (uid $uid, $shell), conffile root:root 644, /var/lib/postern postern:postern 711, maildrop 1733"

# --- the admin's edit and a queued message ----------------------------------------
# A loopback port instead of 25, and a smarthost that is down: mail waits.
sed -i -e "s#^listen = \[\"127.0.0.1:25\"\]#listen = [\"127.0.0.1:$port\"]#" \
  -e "s#^kind = \"maildir\"#kind = \"smarthost\"\nhost = \"127.0.0.1\"\nport = $dead\ntls = \"none\"#" \
  -e '\#^dir = "/var/lib/postern/outbox"#d' /etc/postern/postern.toml
grep -q "port = $dead" /etc/postern/postern.toml || fail "config edit did not apply"
cp /etc/postern/postern.toml "$work/edited.toml"
start_daemon
subject="deb upgrade $$"
swaks --server "127.0.0.1:$port" --from dev@lan.test --to ops@example.test \
  --header "Subject: $subject" --body "queued across an upgrade" >"$work/swaks.log" 2>&1 ||
  { cat "$work/swaks.log" >&2; fail "swaks could not send to the installed postern"; }
grep -q '250 .*queued' "$work/swaks.log" || fail "no 250 queued: $(cat "$work/swaks.log")"
queue_list | grep -q 'dev@lan.test' || fail "message not in the queue: $(queue_list)"
# Queued mail is nobody else's: another user cannot list the queue, read a
# segment or take the lock (whatever the umask the daemon was started with).
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; }
! as_nobody ls /var/lib/postern/queue >/dev/null 2>&1 || fail "nobody can list the queue directory"
! as_nobody cat /var/lib/postern/queue/seg-000001.log >/dev/null 2>&1 || fail "nobody can read a queue segment"
! as_nobody flock -n /var/lib/postern/queue/lock true 2>/dev/null || fail "nobody can take the queue's lock"
stop_daemon
open_files=$(find /var/lib/postern/queue \( -type d ! -perm 700 \) -o \( -type f ! -perm 600 \) -o \( ! -user postern \))
[ -z "$open_files" ] || fail "queue files not private to postern: $(ls -laR /var/lib/postern/queue)"
echo "ok: the installed postern, run as user postern, queued a message (smarthost down)"
echo "ok: the queue is postern's alone (directories 0700, files 0600; nobody cannot list it, read it or lock it)"

# --- upgrade --------------------------------------------------------------------
dpkg_i "$work"/v2/postern_0.0.2_*.deb
[ "$(dpkg-query -W -f='${Version}' postern)" = 0.0.2 ] || fail "not upgraded"
cmp -s /etc/postern/postern.toml "$work/edited.toml" || fail "upgrade changed the edited config"
! ls /etc/postern/*.dpkg-* >/dev/null 2>&1 || fail "upgrade left $(ls /etc/postern/*.dpkg-*)"
[ "$(stat -c '%U:%G %a' /var/lib/postern)" = "postern:postern 711" ] || fail "upgrade changed the spool's owner or mode"
start_daemon
queue_list | grep -q 'dev@lan.test' || fail "upgrade lost the queued message: $(queue_list)"
stop_daemon
# The smarthost comes back (here: the packaged maildir route): the message goes out.
sed -i -e 's#^kind = "smarthost"#kind = "maildir"\ndir = "/var/lib/postern/outbox"#' \
  -e '/^host = "127.0.0.1"$/d' -e "/^port = $dead\$/d" -e '/^tls = "none"$/d' /etc/postern/postern.toml
# Meanwhile, with the daemon down, an unprivileged user's cron job mails:
# sendmail keeps it in the drop directory, which that user cannot list.
dropped="sendmail while down $$"
printf 'Subject: %s\n\nfrom a cron job of nobody\n' "$dropped" |
  as_nobody /usr/bin/postern sendmail -C /etc/postern/postern.toml ops@example.test 2>"$work/sendmail.err" ||
  fail "sendmail as nobody with the daemon down exited $?: $(cat "$work/sendmail.err")"
grep -q 'kept the message in /var/lib/postern/maildrop/' "$work/sendmail.err" ||
  fail "sendmail did not say where it kept the message: $(cat "$work/sendmail.err")"
[ "$(find /var/lib/postern/maildrop -name '*.msg' -user nobody | wc -l)" = 1 ] ||
  fail "no drop file owned by nobody: $(ls -la /var/lib/postern/maildrop)"
! as_nobody ls /var/lib/postern/maildrop >/dev/null 2>&1 || fail "nobody can list the drop directory"
start_daemon
delivered() { grep -rqs -- "Subject: $1" /var/lib/postern/outbox; }
wait_for 30 delivered "$subject" || fail "the message queued before the upgrade was not delivered after it"
wait_for 30 delivered "$dropped" || fail "the message sendmail kept while the daemon was down was not delivered"
open_files=$(find /var/lib/postern/outbox \( -type d ! -perm 700 \) -o \( -type f ! -perm 600 \))
[ -z "$open_files" ] || fail "maildir output not private: $(ls -la /var/lib/postern/outbox)"
[ -z "$(ls -A /var/lib/postern/maildrop)" ] || fail "the drop directory is not empty: $(ls -la /var/lib/postern/maildrop)"
stop_daemon
echo "ok: upgrade to 0.0.2 kept the edited config byte for byte and the queue; the message went out"
echo "ok: sendmail as nobody with the daemon down kept the message (exit 0, unlistable), the daemon delivered it"

# --- remove, purge --------------------------------------------------------------------
dpkg -r postern >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -r failed"; }
[ ! -e /usr/bin/postern ] && [ ! -e /lib/systemd/system/postern.service ] || fail "remove left the binary or unit"
[ -f /etc/postern/postern.toml ] || fail "remove (not purge) deleted the config"
[ -d /var/lib/postern/outbox ] || fail "remove (not purge) deleted /var/lib/postern"
dpkg --purge postern >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg --purge failed"; }
[ ! -e /etc/postern ] && [ ! -e /var/lib/postern ] || fail "purge left /etc/postern or /var/lib/postern"
getent passwd postern >/dev/null || fail "purge deleted the system user (Debian keeps them)"
echo "ok: remove keeps config and queue; purge deletes them and keeps the system user"
