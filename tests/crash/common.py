"""Helpers shared by the crash and disk-full scripts (imported, not run)."""
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
