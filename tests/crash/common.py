"""Helpers shared by the crash and disk-full scripts and bench/recovery.py
(imported, not run): postern's config for them, and waiting for a port."""
import os
import socket
import sys
import time


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_for(pred, timeout, what):
    """Poll pred() until true or fail the script after timeout seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    sys.exit(f"{os.path.basename(sys.argv[0])}: timed out waiting for {what}")


def config(hostname, log_level, port, up, queue_dir, server_extra="", queue_extra=""):
    """postern relaying from 127.0.0.1 to a plain-SMTP upstream on `up`,
    with the per-client limits raised out of the tests' way."""
    return f"""hostname = "{hostname}"
log_level = "{log_level}"

[server]
listen = ["127.0.0.1:{port}"]
max_messages_per_minute = 1000000
max_recipients_per_minute = 1000000
max_connections_per_minute = 1000000
max_connections_per_client = 1000
{server_extra}

[policy]
allow_clients = ["127.0.0.1/32"]

[queue]
dir = "{queue_dir}"
{queue_extra}

[upstream]
kind = "smarthost"
host = "127.0.0.1"
port = {up}
tls = "none"
"""
