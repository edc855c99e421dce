#!/usr/bin/env bash
# Install, upgrade and purge the Debian packages into a scratch root
# (dpkg --root, maintainer scripts run chrootless with $DPKG_ROOT), so the
# check never touches the machine: the admin's config edits and the queue
# must survive an upgrade; /usr/sbin/sendmail must be postern's sendmail.
# Usage: board/test-deb.sh BINARY [TRIPLE]   (takes a few seconds)
set -euo pipefail
bin=$1 triple=${2:-x86_64-unknown-linux-gnu}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/build-deb.sh" "$triple" "$bin" "$work/v1" 0.0.1 >/dev/null
"$here/build-deb.sh" "$triple" "$bin" "$work/v2" 0.0.2 >/dev/null
R="$work/root"
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates"
touch "$R/var/lib/dpkg/status" "$R/var/lib/dpkg/available"
dpkg_r() {
  dpkg --root="$R" --force-script-chrootless --force-depends --force-architecture \
    --log=/dev/null "$@" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; return 1; }
}
fail() { echo "test-deb: $*" >&2; exit 1; }

dpkg_r -i "$work"/v1/postern_0.0.1_*.deb "$work"/v1/postern-sendmail_0.0.1_*.deb
[ -x "$R/usr/bin/postern" ] || fail "no /usr/bin/postern"
[ -f "$R/lib/systemd/system/postern.service" ] || fail "no unit"
[ -d "$R/var/lib/postern" ] || fail "no /var/lib/postern"
grep -q '^listen = \["127.0.0.1:25"\]' "$R/etc/postern/postern.toml" || fail "default config"
[ "$(readlink "$R/usr/sbin/sendmail")" = ../bin/postern ] || fail "sendmail link"
"$R/usr/sbin/sendmail" --help | grep -q 'sendmail-compatible' || fail "sendmail mode"
[ "$(readlink "$R/usr/bin/mailq")" = postern ] || fail "mailq link"
echo "ok: installed postern 0.0.1 and postern-sendmail into a scratch root"

# The admin edits the config; mail waits in the queue.
echo '# edited by the admin' >> "$R/etc/postern/postern.toml"
mkdir -p "$R/var/lib/postern/queue"
echo "queued mail" > "$R/var/lib/postern/queue/test-message"
dpkg_r -i "$work"/v2/postern_0.0.2_*.deb "$work"/v2/postern-sendmail_0.0.2_*.deb
grep -q '^Version: 0.0.2' <(dpkg --root="$R" -s postern) || fail "not upgraded"
grep -q '^# edited by the admin' "$R/etc/postern/postern.toml" || fail "upgrade lost the config edit"
[ "$(cat "$R/var/lib/postern/queue/test-message")" = "queued mail" ] || fail "upgrade lost the queue"
echo "ok: upgrade to 0.0.2 kept the edited config and the queue"

dpkg_r --remove postern-sendmail postern
[ -f "$R/etc/postern/postern.toml" ] || fail "remove (not purge) deleted the config"
[ -f "$R/var/lib/postern/queue/test-message" ] || fail "remove (not purge) deleted the queue"
dpkg_r --purge postern
[ ! -e "$R/etc/postern/postern.toml" ] && [ ! -e "$R/var/lib/postern" ] || fail "purge left files"
echo "ok: remove keeps config and queue; purge deletes them"
