#!/usr/bin/env bash
# Outbound against real peers over loopback: dnsmasq (MX, null MX,
# no MX, SERVFAIL), Postfix's smtp-sink, aiosmtpd with AUTH and with XOAUTH2
# fed by an HTTPS token endpoint. A few seconds once postern is built.
set -euo pipefail
. .ci/lib.sh
need_apt ca-certificates openssl iproute2 swaks postfix python3-aiosmtpd dnsmasq-base
timeout 600 tests/interop/outbound.sh
