# Shared helpers for .ci/run and .ci/steps/*.sh (sourced, not run).
# Each .ci/steps/*.sh starts with: set -euo pipefail; . .ci/lib.sh   (cwd is the repo root)

START=${START:-$SECONDS}
step() { printf '\n########## %s  (+%ds)\n' "$*" "$((SECONDS - START))"; }

# need_apt PKG...: install the Debian packages that are missing (idempotent).
need_apt() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Postfix only provides the binaries; tests write their own configs.
  echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -q
    APT_UPDATED=1
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
}
