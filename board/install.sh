#!/usr/bin/env bash
# Install postern on a systemd machine without dpkg (other distributions, or
# a binary copied from a cross build). Idempotent: an existing
# /etc/postern/postern.toml and the queue in /var/lib/postern are kept.
#
# Usage: sudo board/install.sh BINARY [--sendmail]
#   --sendmail   also link /usr/sbin/sendmail to postern (only if absent)
# Env: DESTDIR (stage into a directory: no user, no systemctl),
#      PREFIX (default /usr/local: the binary goes to $PREFIX/bin).
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
bin=$1 sendmail=${2:-}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
D=${DESTDIR:-} prefix=${PREFIX:-/usr/local}

install -D -m 0755 "$bin" "$D$prefix/bin/postern"
install -d -m 0755 "$D/etc/systemd/system"
sed "s#/usr/bin/postern#$prefix/bin/postern#g" "$here/postern.service" \
  > "$D/etc/systemd/system/postern.service"
chmod 0644 "$D/etc/systemd/system/postern.service"
install -d -m 0755 "$D/etc/postern"
if [ -e "$D/etc/postern/postern.toml" ]; then
  echo "kept existing /etc/postern/postern.toml (new default: /etc/postern/postern.toml.dist)"
  "$here/default-config.sh" > "$D/etc/postern/postern.toml.dist"
else
  "$here/default-config.sh" > "$D/etc/postern/postern.toml"
fi
install -d -m 0711 "$D/var/lib/postern"
install -d -m 1733 "$D/var/lib/postern/maildrop"
if [ "$sendmail" = --sendmail ]; then
  if [ -e "$D/usr/sbin/sendmail" ] && [ "$(readlink -f "$D/usr/sbin/sendmail")" != "$(readlink -f "$D$prefix/bin/postern")" ]; then
    echo "left /usr/sbin/sendmail alone: another MTA provides it" >&2
  else
    install -d "$D/usr/sbin"
    ln -sf "$prefix/bin/postern" "$D/usr/sbin/sendmail"
    # mailq prints postern's queue list (only where no other MTA has one).
    if [ ! -e "$D/usr/bin/mailq" ]; then
      install -d "$D/usr/bin"
      ln -s "$prefix/bin/postern" "$D/usr/bin/mailq"
    fi
  fi
fi
[ -z "$D" ] || { echo "staged into $D"; exit 0; }

getent passwd postern >/dev/null ||
  useradd --system --user-group --home-dir /var/lib/postern --no-create-home \
    --shell "$(command -v nologin || echo /bin/false)" postern
chown postern:postern /var/lib/postern /var/lib/postern/maildrop
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable postern.service
  systemctl restart postern.service
  systemctl --no-pager status postern.service | head -5
fi
echo "installed: edit /etc/postern/postern.toml, then: postern check && systemctl reload postern"
