#!/usr/bin/env python3
"""postern against Postfix, relaying the same load on the same machine.

For each relay (postern, and Postfix configured as a relay-only smarthost
client), with Postfix's smtp-source as the neutral load generator and
smtp-sink as the upstream, both on loopback, this measures:

  - messages per second end to end (smtp-source start to the last message at
    the sink), 4 KiB messages at 1 and 10 senders, 1 MiB messages at 10;
  - latency from the end of DATA to the 250 reply (median, p99), measured by
    a small client here (smtp-source does not report it);
  - total RSS of all the relay's processes, idle and peak under load;
  - bytes written to the storage device per message and fsync-family calls
    per message, with each relay's queue on its own ext4 filesystem in a
    loop device;
  - the ceiling: smtp-source straight into smtp-sink, no relay.

Both relays sync before they answer 250 (postern always; Postfix by design).

Usage (as root; needs postfix, smtp-source/smtp-sink, linux-perf, e2fsprogs):
  python3 bench/compare.py [--short] [--bin target/release/postern] [--markdown FILE]
                           [--filters N]

--short runs small counts (for CI: figures printed, not asserted).
--filters N gives every postern instance N [[filter]] rules (see
filter_rules: every stage, globs and regular expressions, one rule that
matches and edits the header section), and adds a row: 4 KiB at 10
senders through a postern with the rules against one without, measured
alternately in the same run (the machine may be shared).
"""
import argparse
import os
import pty
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SINK = "/usr/sbin/smtp-sink"
# Alternate runs with and without [[filter]] rules (--filters).
RULES_ROUNDS = 5
SOURCE = "/usr/sbin/smtp-source"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


class Loop:
    """An ext4 filesystem in a loop device, mounted at `mnt`."""

    def __init__(self, work, name, size_mb=512):
        self.img = os.path.join(work, f"{name}.img")
        self.mnt = os.path.join(work, name)
        os.makedirs(self.mnt)
        with open(self.img, "wb") as f:
            f.truncate(size_mb << 20)
        self.dev = subprocess.check_output(["losetup", "-f", "--show", self.img], text=True).strip()
        # No lazy init: ext4lazyinit would otherwise zero inode tables in
        # the background and its writes would count as the relay's.
        # 4 KiB blocks, as on an SD card's root filesystem: below 512 MiB
        # mke2fs picks 1 KiB blocks ("small"), which makes every metadata
        # write four times cheaper than on a real card (Postfix's 4 KiB
        # messages cost 16 KB there, 53 KB with 4 KiB blocks).
        run(["mkfs.ext4", "-q", "-F", "-b", "4096",
             "-E", "lazy_itable_init=0,lazy_journal_init=0", self.dev])
        run(["mount", "-o", "noatime", self.dev, self.mnt])
        os.chmod(self.mnt, 0o755)

    def sectors_written(self):
        # /sys/block/loopN/stat: field 7 is sectors written (512 bytes each).
        with open(f"/sys/block/{os.path.basename(self.dev)}/stat") as f:
            return int(f.read().split()[6])

    def flushes(self):
        # Field 16: flush requests completed (kernel 5.5+): the syncs that
        # reached the device, counted without slowing the relay down.
        with open(f"/sys/block/{os.path.basename(self.dev)}/stat") as f:
            fields = f.read().split()
        return int(fields[15]) if len(fields) > 15 else None

    def settle(self):
        # Write back everything dirty (the relay's and the journal's) so the
        # count covers what a message really costs the device.
        os.sync()
        time.sleep(0.2)
        os.sync()

    def close(self):
        subprocess.run(["umount", self.mnt], check=False)
        subprocess.run(["losetup", "-d", self.dev], check=False)


class Tmpfs:
    """A tmpfs mounted at `mnt`: syncs there cost nothing, which shows what
    the device's syncs cost the relay."""

    def __init__(self, work, name, size_mb=512):
        self.mnt = os.path.join(work, name)
        os.makedirs(self.mnt)
        run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=755", "tmpfs", self.mnt])

    def close(self):
        subprocess.run(["umount", self.mnt], check=False)


def pids_of(pred):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pred(int(p), cmd):
            out.append(int(p))
    return out


def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class RssSampler(threading.Thread):
    def __init__(self, find_pids):
        super().__init__(daemon=True)
        self.find_pids = find_pids
        self.peak = 0
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            self.peak = max(self.peak, rss_kib(self.find_pids()))
            time.sleep(0.05)

    def stop(self):
        self.stop_ev.set()
        self.join()
        return self.peak


def filter_rules(n):
    """`n` [[filter]] rules as a site might write them: sender, recipient,
    Subject (regular expressions), header and attachment rules, so every
    stage evaluates some; none matches smtp-source's mail but the last,
    which adds a field and removes one (the header section is then kept
    back and rewritten for every message)."""
    kinds = [
        lambda i: f'name = "sender-{i}"\nsender = ["*@device-{i}.lan", "alerts-{i}@*"]\nhold = true\n',
        lambda i: f'name = "rcpt-{i}"\nrecipient = ["nobody-{i}@*"]\nredirect = ["ops@example.com"]\n',
        lambda i: f'name = "subject-{i}"\nsubject = ["/^alert {i}: .* (failed|degraded)$/i"]\ndiscard = true\n',
        lambda i: f'name = "header-{i}"\nheader = ["X-Mailer: Device-{i}*"]\nadd_header = ["X-Device: {i}"]\n',
        lambda i: f'name = "attach-{i}"\nattachment_ext = ["x{i}", "y{i}"]\nreject = "550 5.7.1 no .x{i}"\n',
    ]
    rules = [kinds[i % len(kinds)](i) for i in range(max(n - 1, 0))]
    if n > 0:
        rules.append('name = "tag-all"\nsender = ["*"]\nadd_header = ["X-Relayed-By: bench"]\n'
                     'remove_header = ["X-Internal-Ip"]\n')
    return "".join(f"\n[[filter]]\n{r}" for r in rules)


class Postern:
    name = "postern"

    def __init__(self, binary, work, qdir, sink_port, tag="postern", filters=0):
        self.port = free_port()
        self.dir = os.path.join(work, tag)
        os.makedirs(self.dir)
        self.cfg = os.path.join(self.dir, "postern.toml")
        with open(self.cfg, "w") as f:
            f.write(f"""hostname = "postern.bench"
log_level = "warn"
[server]
listen = ["127.0.0.1:{self.port}"]
max_message_size = "10MiB"
max_connections = 64
# A benchmark is one client sending fast: lift the per-client abuse limits.
max_connections_per_client = 1000
max_connections_per_minute = 1000000
max_messages_per_minute = 1000000
max_recipients_per_minute = 1000000
[policy]
allow_clients = ["127.0.0.1/32"]
[queue]
dir = "{qdir}"
max_size = "400MiB"
max_messages = 100000
[upstream]
kind = "smarthost"
host = "127.0.0.1"
port = {sink_port}
tls = "none"
max_connections = 10
""" + filter_rules(filters))
        self.log = open(os.path.join(self.dir, "postern.log"), "w")
        self.proc = subprocess.Popen([binary, "serve", "--config", self.cfg], cwd=self.dir,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        wait_port(self.port)

    def pids(self):
        return [self.proc.pid] if self.proc.poll() is None else []

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


class Postfix:
    name = "Postfix"

    def __init__(self, work, qdir, sink_port):
        self.port = free_port()
        self.conf = os.path.join(work, "postfix-conf")
        self.data = os.path.join(work, "postfix-data")
        os.makedirs(self.conf)
        os.makedirs(self.data)
        shutil.chown(self.data, "postfix")
        self.qdir = qdir
        self.logf = os.path.join(work, "postfix.log")
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {qdir}
data_directory = {self.data}
maillog_file = {self.logf}
maillog_file_prefixes = {work}
myhostname = postfix.bench
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
mydestination =
local_recipient_maps =
local_transport = error:no local delivery
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = none
smtpd_tls_security_level = none
default_process_limit = 100
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
biff = no
""")
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(f"""127.0.0.1:{self.port} inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
""")
        run(["postfix", "-c", self.conf, "check"])
        run(["postfix", "-c", self.conf, "start"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def master_pid(self):
        try:
            with open(os.path.join(self.qdir, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def pids(self):
        m = self.master_pid()
        if m is None:
            return []
        # The master and everything it spawned (smtpd, cleanup, qmgr, smtp, …).
        kids = []
        for p in pids_of(lambda pid, cmd: True):
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == m:
                kids.append(p)
        return [m] + kids

    def stop(self):
        subprocess.run(["postfix", "-c", self.conf, "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        end = time.monotonic() + 30
        while self.master_pid() and time.monotonic() < end and os.path.exists(f"/proc/{self.master_pid()}"):
            time.sleep(0.1)


class Sink:
    """smtp-sink on loopback, with its running message counter (-c) read
    as it goes, so a run can end exactly when its last message arrives."""

    def __init__(self, port):
        self.port = port
        self.msgs = 0
        self.cond = threading.Condition()
        # smtp-sink writes its counter unbuffered only to a terminal.
        master, slave = pty.openpty()
        self.proc = subprocess.Popen([SINK, "-u", "nobody", "-c", f"127.0.0.1:{port}", "1024"],
                                     stdout=slave, stderr=subprocess.DEVNULL)
        os.close(slave)
        self.out = os.fdopen(master, "rb", buffering=0)
        threading.Thread(target=self._read, daemon=True).start()
        wait_port(port)

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = self.out.read(4096)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *records, buf = buf.split(b"\r")
            for r in records:
                for field in r.split():
                    if field.startswith(b"mesg="):
                        with self.cond:
                            self.msgs = int(field[5:])
                            self.cond.notify_all()

    def wait_for(self, target, timeout=600):
        with self.cond:
            if not self.cond.wait_for(lambda: self.msgs >= target, timeout):
                sys.exit(f"sink got {self.msgs} of {target} messages in {timeout}s")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def source(port, senders, count, size):
    run([SOURCE, "-s", str(senders), "-m", str(count), "-l", str(size), "-f", "dev@lan.bench",
         "-t", "ops@example.bench", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL)


def throughput(port, sink, senders, count, size):
    """Messages/s from source start to the sink's last message."""
    target = sink.msgs + count
    t0 = time.monotonic()
    source(port, senders, count, size)
    sink.wait_for(target)
    return count / (time.monotonic() - t0)


def latency(port, senders, count, size=4096):
    """End of DATA to the 250 reply, per message, from `senders` threads."""
    body = b"Subject: latency\r\n\r\n" + (b"x" * 76 + b"\r\n") * (size // 78)
    samples = []
    lock = threading.Lock()

    def one(n):
        s = socket.create_connection(("127.0.0.1", port))
        # Without this, the final ".\r\n" waits for the ACK of the body
        # (Nagle) and the relay's delayed ACK adds 40 ms to every sample.
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")

        def reply():
            while True:
                line = f.readline()
                if not line or line[3:4] != b"-":
                    return line

        reply()
        s.sendall(b"EHLO bench\r\n")
        reply()
        mine = []
        for _ in range(n):
            s.sendall(b"MAIL FROM:<dev@lan.bench>\r\n")
            reply()
            s.sendall(b"RCPT TO:<ops@example.bench>\r\n")
            reply()
            s.sendall(b"DATA\r\n")
            reply()
            s.sendall(body)
            t = time.perf_counter()
            s.sendall(b".\r\n")
            r = reply()
            mine.append(time.perf_counter() - t)
            if not r.startswith(b"250"):
                raise RuntimeError(f"not accepted: {r!r}")
        s.sendall(b"QUIT\r\n")
        reply()
        s.close()
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=one, args=(count // senders,)) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples.sort()
    return statistics.median(samples) * 1000, samples[max(0, int(len(samples) * 0.99) - 1)] * 1000


SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "syncfs", "msync")


def fsyncs(action):
    """Count fsync-family system calls made during action(), machine-wide,
    with perf counting the syscall tracepoints (in kernel, so the relay is
    not slowed: strace stops every traced process on every call, and a
    slowed relay batches its syncs differently). The load generator and
    sink never sync; `main` checks that by counting the ceiling run."""
    if not os.path.isdir("/sys/kernel/tracing/events/syscalls"):
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], check=False)
    d = tempfile.mkdtemp(prefix="perf-")
    ctl, ack, out = (os.path.join(d, n) for n in ("ctl", "ack", "out"))
    os.mkfifo(ctl)
    os.mkfifo(ack)
    events = ",".join("syscalls:sys_enter_" + c for c in SYNC_CALLS)
    p = subprocess.Popen(["perf", "stat", "-a", "-x,", "-o", out, "-D", "-1",
                          "--control", f"fifo:{ctl},{ack}", "-e", events],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Open the control fifo without blocking until perf reads it, so that a
    # perf that cannot start (no tracepoints) fails the run instead of
    # hanging it.
    deadline = time.monotonic() + 20
    fd = None
    while fd is None:
        try:
            fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            if p.poll() is not None or time.monotonic() > deadline:
                p.kill()
                raise RuntimeError("perf stat did not start: needs root, linux-perf and the "
                                   "syscalls tracepoints (tracefs at /sys/kernel/tracing)")
            time.sleep(0.01)
    os.set_blocking(fd, True)
    try:
        with os.fdopen(fd, "w") as c, open(ack) as k:
            # Each command is answered on the ack fifo once perf has done it:
            # counting starts before the load and stops after it.
            c.write("enable\n")
            c.flush()
            k.readline()
            action()
            c.write("disable\n")
            c.flush()
            k.readline()
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)
    total = 0
    with open(out) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls:") and parts[0].isdigit():
                total += int(parts[0])
    shutil.rmtree(d, ignore_errors=True)
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/postern")
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--markdown")
    ap.add_argument("--only", choices=("postern", "Postfix"),
                    help="measure one relay only (for profiling); no table")
    ap.add_argument("--big", type=int, help="1 MiB messages to send (default 200, short 20)")
    ap.add_argument("--filters", type=int, default=0, metavar="N",
                    help="give postern N [[filter]] rules, and add the row comparing it with none")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (loop devices, Postfix)")
    binary = os.path.abspath(a.bin)
    n_small = 200 if a.short else 5000
    n_big = a.big or (20 if a.short else 200)
    n_lat = 100 if a.short else 1000
    n_io = 100 if a.short else 1000
    n_rules = 2000 if a.short else 5000
    work = tempfile.mkdtemp(prefix="postern-bench-")
    os.chmod(work, 0o755)
    loops = []
    relays = []
    results = {}
    try:
        sink_port = free_port()
        sink = Sink(sink_port)
        # Ceiling: the load generator straight into the sink.
        box = []
        stray = fsyncs(lambda: box.append(throughput(sink_port, sink, 10, n_small, 4096)))
        # The fsync counts are machine-wide: they are the relay's only if
        # nothing else syncs (the generator and sink never do).
        print(f"compare.py: fsync-family calls during the ceiling run (no relay): {stray}", flush=True)
        ceil = {
            (4096, 1): throughput(sink_port, sink, 1, n_small, 4096),
            (4096, 10): box[0],
            (1 << 20, 10): throughput(sink_port, sink, 10, n_big, 1 << 20),
        }
        for kind in (a.only,) if a.only else ("postern", "Postfix"):
            loop = Loop(work, f"fs-{kind.lower()}")
            loops.append(loop)
            qdir = os.path.join(loop.mnt, "queue")
            os.makedirs(qdir)
            if kind == "postern":
                r = Postern(binary, work, qdir, sink_port, filters=a.filters)
            else:
                r = Postfix(work, qdir, sink_port)
            relays.append(r)
            time.sleep(1.0)
            res = {"idle_rss": rss_kib(r.pids())}
            sampler = RssSampler(r.pids)
            sampler.start()
            res[("tput", 4096, 1)] = throughput(r.port, sink, 1, n_small, 4096)
            res[("tput", 4096, 10)] = throughput(r.port, sink, 10, n_small, 4096)
            res[("tput", 1 << 20, 10)] = throughput(r.port, sink, 10, n_big, 1 << 20)
            res["peak_rss"] = sampler.stop()
            target = sink.msgs + n_lat * 2
            res[("lat", 1)] = latency(r.port, 1, n_lat)
            res[("lat", 10)] = latency(r.port, 10, n_lat)
            sink.wait_for(target)
            for senders in (1, 10):
                loop.settle()
                before = loop.sectors_written()
                calls = fsyncs(lambda: throughput(r.port, sink, senders, n_io, 4096))
                loop.settle()
                res[("bytes", senders)] = (loop.sectors_written() - before) * 512 / n_io
                res[("fsync", senders)] = calls / n_io
            results[kind] = res
            r.stop()
            relays.remove(r)
        nosync = None
        if a.only in (None, "postern"):
            # Where postern's time goes: the same load with its queue on
            # tmpfs, where a sync costs nothing.
            tf = Tmpfs(work, "fs-tmpfs")
            loops.append(tf)
            qdir = os.path.join(tf.mnt, "queue")
            os.makedirs(qdir)
            r = Postern(binary, work, qdir, sink_port, tag="postern-tmpfs")
            relays.append(r)
            nosync = {
                (4096, 1): throughput(r.port, sink, 1, n_small, 4096),
                (4096, 10): throughput(r.port, sink, 10, n_small, 4096),
                (1 << 20, 10): throughput(r.port, sink, 10, n_big, 1 << 20),
            }
            r.stop()
            relays.remove(r)
        rules_row = None
        if a.filters and a.only in (None, "postern"):
            # The rules' cost: the same load through postern with and
            # without them, alternately, each on a filesystem of its own.
            both = {}
            for n in (0, a.filters):
                lp = Loop(work, f"fs-rules-{n}")
                loops.append(lp)
                qd = os.path.join(lp.mnt, "queue")
                os.makedirs(qd)
                both[n] = Postern(binary, work, qd, sink_port, tag=f"postern-rules-{n}", filters=n)
                relays.append(both[n])
            # Longer and more often than the table's runs: the difference
            # sought is small, and a run of a fraction of a second on a
            # shared machine says more about the neighbours.
            got = {0: [], a.filters: []}
            for _ in range(RULES_ROUNDS):
                for n in (0, a.filters):
                    got[n].append(throughput(both[n].port, sink, 10, n_rules, 4096))
            for r in both.values():
                r.stop()
                relays.remove(r)
            rules_row = (statistics.median(got[0]), statistics.median(got[a.filters]), got)
        sink.stop()
        if a.only:
            print({str(k): v for k, v in results[a.only].items()}, "ceiling", ceil, "tmpfs", nosync)
            return 0
    finally:
        for r in relays:
            r.stop()
        for lp in loops:
            lp.close()

    rows = []

    def row(label, key, fmt, better):
        p, f = results["postern"][key], results["Postfix"][key]
        ratio = (p / f) if f else float("nan")
        rows.append((label, fmt(p), fmt(f), f"{ratio:.2f}", better))

    num = lambda v: f"{v:.0f}"  # noqa: E731
    ms = lambda v: f"{v[0]:.2f} / {v[1]:.2f}"  # noqa: E731
    row("msg/s, 4 KiB, 1 sender", ("tput", 4096, 1), num, "higher")
    row("msg/s, 4 KiB, 10 senders", ("tput", 4096, 10), num, "higher")
    row("msg/s, 1 MiB, 10 senders", ("tput", 1 << 20, 10), lambda v: f"{v:.1f}", "higher")
    for s in (1, 10):
        p, f = results["postern"][("lat", s)], results["Postfix"][("lat", s)]
        rows.append((f"end of DATA → 250, ms, median / p99, {s} sender{'s' if s > 1 else ''}",
                     ms(p), ms(f), f"{p[0] / f[0]:.2f}", "lower"))
    row("RSS idle, KiB (all processes)", "idle_rss", num, "lower")
    row("RSS peak under load, KiB", "peak_rss", num, "lower")
    row("bytes written to the device per 4 KiB message, 1 sender", ("bytes", 1), num, "lower")
    row("bytes written to the device per 4 KiB message, 10 senders", ("bytes", 10), num, "lower")
    row("fsync calls per message, 1 sender", ("fsync", 1), lambda v: f"{v:.2f}", "lower")
    row("fsync calls per message, 10 senders", ("fsync", 10), lambda v: f"{v:.2f}", "lower")

    lines = ["| measure | postern | Postfix | postern/Postfix | better |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    tp = results["postern"]
    lines.append("")
    lines.append("Ceiling (smtp-source straight into smtp-sink, no relay): "
                 f"{ceil[(4096, 1)]:.0f} msg/s at 1 sender, {ceil[(4096, 10)]:.0f} at 10 (4 KiB), "
                 f"{ceil[(1 << 20, 10)]:.1f} at 10 (1 MiB); postern reaches "
                 f"{100 * tp[('tput', 4096, 1)] / ceil[(4096, 1)]:.0f} %, "
                 f"{100 * tp[('tput', 4096, 10)] / ceil[(4096, 10)]:.0f} % and "
                 f"{100 * tp[('tput', 1 << 20, 10)] / ceil[(1 << 20, 10)]:.0f} % of it.")
    lines.append("")
    lines.append("Where the rest goes: with its queue on tmpfs (a sync costs nothing) postern relays "
                 f"{nosync[(4096, 1)]:.0f}, {nosync[(4096, 10)]:.0f} and {nosync[(1 << 20, 10)]:.1f} msg/s "
                 "in the same three loads; what separates that from the ceiling is postern's own work "
                 "(receiving, queueing and forwarding each message on the same CPUs as the load "
                 "generator and the sink), what separates it from the table is waiting for the device.")
    if rules_row:
        without, with_, got = rules_row
        runs = lambda v: ", ".join(f"{x:.0f}" for x in v)  # noqa: E731
        lines.append("")
        lines.append(f"{a.filters} [[filter]] rules (bench/compare.py filter_rules; the table's postern "
                     f"has them too): 4 KiB at 10 senders, {with_:.0f} msg/s with them, {without:.0f} "
                     f"without, {100 * with_ / without:.0f} % (medians of {RULES_ROUNDS} alternate runs of {n_rules} messages: "
                     f"{runs(got[a.filters])} against {runs(got[0])}).")
    counts = f"counts: {n_small} x 4 KiB, {n_big} x 1 MiB, {n_lat} latency samples, {n_io} for I/O"
    lines.append("")
    lines.append(f"Machine: {os.cpu_count()} CPUs, {platform_line()}; {counts}.")
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def platform_line():
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        model = "?"
    pf = subprocess.run(["postconf", "-d", "mail_version"], capture_output=True, text=True).stdout.strip()
    return f"{model}, kernel {os.uname().release}, {pf.replace('mail_version = ', 'Postfix ')}"


if __name__ == "__main__":
    sys.exit(main())
