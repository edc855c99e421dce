#!/usr/bin/env bash
# Print the default /etc/postern/postern.toml for the board packages: the
# project's commented config/postern.toml with board paths and port 25, so
# the comments never drift from the code's defaults.
# Usage: board/default-config.sh > postern.toml
set -euo pipefail
src="$(dirname "${BASH_SOURCE[0]}")/../config/postern.toml"
cat <<'HEAD'
# postern configuration (installed by the postern package)
#
# As installed, postern listens on 127.0.0.1:25, accepts mail only from this
# machine, queues it in /var/lib/postern/queue and "delivers" each message as
# a .eml file into /var/lib/postern/outbox. Nothing leaves the machine until
# you set [upstream] (see /usr/share/doc/postern/examples/) and let the LAN
# in: add e.g. "192.168.1.2:25" to listen and "192.168.1.0/24" to
# allow_clients.
#
# Apply changes:   sudo postern check && sudo systemctl reload postern
# Password files:  sudo chown root:postern FILE && sudo chmod 640 FILE
#
HEAD
# Drop the laptop paragraph (up to the first blank comment line), keep the rest.
awk 'NR==1 {next} skip && /^#$/ {skip=0; next} NR==2 {skip=1} !skip' "$src" |
  sed -e 's#^listen = \["127.0.0.1:2525"\]#listen = ["127.0.0.1:25"]#' \
      -e 's#^dir = "var/queue"#dir = "/var/lib/postern/queue"#' \
      -e 's#^dir = "var/outbox"#dir = "/var/lib/postern/outbox"#' \
      -e 's#config/examples/#/usr/share/doc/postern/examples/#'
