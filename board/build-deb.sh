#!/usr/bin/env bash
# Build the Debian packages with plain dpkg-deb (no cargo-deb, no debhelper):
#   postern_VERSION_ARCH.deb           binary, hardened unit, commented default
#                                      config in /etc/postern (a conffile: an
#                                      upgrade keeps the admin's edits), the
#                                      system user, /var/lib/postern (the queue,
#                                      never touched by an upgrade)
#   postern-sendmail_VERSION_ARCH.deb  /usr/sbin/sendmail -> postern, for cron,
#                                      smartd, mdadm (Provides/Conflicts
#                                      mail-transport-agent, like msmtp-mta)
#
# Usage: board/build-deb.sh TARGET-TRIPLE BINARY OUTDIR [VERSION]
#   e.g. board/build-deb.sh aarch64-unknown-linux-musl \
#          target/aarch64-unknown-linux-musl/release/postern dist
# The board packages ship static builds (arm64: musl; armhf: glibc with
# crt-static), which keep idle RSS under 4 MiB: board/README.md, "Memory".
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
triple=$1 bin=$2 out=$3
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
version=${4:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)}
case "$triple" in
  aarch64-unknown-linux-*) arch=arm64 ;;
  armv7-unknown-linux-gnueabihf) arch=armhf ;;
  x86_64-unknown-linux-*) arch=amd64 ;;
  *) echo "build-deb.sh: unknown target $triple" >&2; exit 2 ;;
esac
# A static build (musl, or glibc with crt-static as .cargo/config.toml
# builds armv7) needs no libc6; a dynamic glibc one needs 2.34 or newer.
depends=""
if readelf -d "$bin" | grep '(NEEDED)' >/dev/null; then depends="libc6 (>= 2.34)"; fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- postern ---------------------------------------------------------------
p="$work/postern"
install -D -m 0755 "$bin" "$p/usr/bin/postern"
install -D -m 0644 "$here/postern.service" "$p/lib/systemd/system/postern.service"
install -d -m 0755 "$p/etc/postern"
"$here/default-config.sh" > "$p/etc/postern/postern.toml"
chmod 0644 "$p/etc/postern/postern.toml"
install -D -m 0644 "$root/README.md" "$p/usr/share/doc/postern/README.md"
install -D -m 0644 "$here/README.md" "$p/usr/share/doc/postern/board.md"
for f in "$root"/config/examples/*.toml; do
  install -D -m 0644 "$f" "$p/usr/share/doc/postern/examples/$(basename "$f")"
done
printf 'postern: MIT OR Apache-2.0\n' > "$p/usr/share/doc/postern/copyright"
install -d "$p/DEBIAN"
echo /etc/postern/postern.toml > "$p/DEBIAN/conffiles"
size=$(du -sk "$p" | cut -f1)
{
  echo "Package: postern"
  echo "Version: $version"
  echo "Architecture: $arch"
  echo "Maintainer: postern developers <postern@localhost>"
  echo "Installed-Size: $size"
  [ -n "$depends" ] && echo "Depends: $depends"
  echo "Recommends: ca-certificates"
  echo "Section: mail"
  echo "Priority: optional"
  echo "Description: small SMTP relay appliance for LAN devices"
  echo " Accepts mail from printers, NAS boxes and cron on the LAN, keeps it in"
  echo " a durable flash-friendly queue and forwards it to a smarthost."
} > "$p/DEBIAN/control"

# Maintainer scripts honour $DPKG_ROOT (dpkg --root with
# --force-script-chrootless, as CI uses): then no user, no systemctl.
cat > "$p/DEBIAN/postinst" <<'SH'
#!/bin/sh
set -e
R="${DPKG_ROOT:-}"
if [ "$1" = configure ]; then
  if [ -z "$R" ] && ! getent passwd postern >/dev/null; then
    if command -v adduser >/dev/null; then
      adduser --system --group --home /var/lib/postern --no-create-home \
        --gecos "postern SMTP relay" postern >/dev/null
    else
      useradd --system --user-group --home-dir /var/lib/postern \
        --no-create-home --shell /usr/sbin/nologin postern
    fi
  fi
  # The queue lives here; upgrades never touch its contents. 0711: other
  # users may pass through (not list) to the drop directory, where
  # `sendmail` keeps mail while the daemon is down; the queue itself is
  # private (0700, made by the daemon).
  install -d -m 0711 "$R/var/lib/postern"
  install -d -m 1733 "$R/var/lib/postern/maildrop"
  [ -n "$R" ] || chown postern:postern /var/lib/postern /var/lib/postern/maildrop
  if [ -z "$R" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ -z "$2" ]; then
      systemctl enable --now postern.service || true
    else
      # Upgrade: restart on the new binary (a graceful stop keeps the queue).
      systemctl try-restart postern.service || true
    fi
  fi
fi
exit 0
SH
cat > "$p/DEBIAN/prerm" <<'SH'
#!/bin/sh
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl disable --now postern.service || true
fi
exit 0
SH
cat > "$p/DEBIAN/postrm" <<'SH'
#!/bin/sh
set -e
R="${DPKG_ROOT:-}"
if [ "$1" = purge ]; then
  # Only on purge: the queue (undelivered mail!) and the config go.
  rm -rf "$R/var/lib/postern" "$R/var/lib/private/postern"
  rmdir "$R/etc/postern" 2>/dev/null || true
fi
if [ -z "$R" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
exit 0
SH
chmod 0755 "$p/DEBIAN/postinst" "$p/DEBIAN/prerm" "$p/DEBIAN/postrm"
dpkg-deb --root-owner-group --build "$p" "$out/postern_${version}_${arch}.deb" >/dev/null

# --- postern-sendmail ------------------------------------------------------
s="$work/postern-sendmail"
install -d "$s/usr/sbin" "$s/usr/bin" "$s/DEBIAN"
ln -s ../bin/postern "$s/usr/sbin/sendmail"
# mailq, as every Debian MTA ships it: postern prints its queue list.
ln -s postern "$s/usr/bin/mailq"
cat > "$s/DEBIAN/control" <<CTL
Package: postern-sendmail
Version: $version
Architecture: $arch
Maintainer: postern developers <postern@localhost>
Depends: postern (= $version)
Provides: mail-transport-agent
Conflicts: mail-transport-agent
Replaces: mail-transport-agent
Section: mail
Priority: optional
Description: /usr/sbin/sendmail through the local postern daemon
 cron, smartd, mdadm and unattended-upgrades call /usr/sbin/sendmail; this
 hands their mail to the running postern daemon over loopback SMTP.
CTL
dpkg-deb --root-owner-group --build "$s" "$out/postern-sendmail_${version}_${arch}.deb" >/dev/null
ls -l "$out/postern_${version}_${arch}.deb" "$out/postern-sendmail_${version}_${arch}.deb"
