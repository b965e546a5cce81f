"""Fault injection: load, broken peers, hostile clients, exhausted resources.

Everything runs on loopback against the real binary, every wait is a
polled condition with a deadline (no sleeps as synchronisation), and only
processes started here are signalled, by PID. Many sessions at once are
driven from one thread on one selector (`Mass`), both the client side and
the backend side, so thousands of sockets cost no threads.

What each test proves is in its docstring; figures (sessions held, fds,
RSS, CPU) go into the assertion messages so a failure says what it saw.
"""

import contextlib
import errno
import fcntl
import hashlib
import os
import pwd
import random
import resource
import select
import selectors
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import (BIN, IO_TIMEOUT, READY_TIMEOUT, SMTP_SINK, Daemon,
                      WaitTimeout, base_env, connect, fmt_addr, free_port,
                      ini, is_listening, mini_smtp, parse_text_line,
                      random_bytes, recv_all, recv_reply, sha, wait_for)

GREETING = b"220 mini.example ESMTP\r\n"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# process-wide set-up


@pytest.fixture(scope="module", autouse=True)
def many_fds():
    """Thousands of sockets in this process: soft RLIMIT_NOFILE up to the
    hard limit for this module (children inherit it), restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def need_fds(n):
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        pytest.skip(f"needs {n} fds in the test process, RLIMIT_NOFILE is {soft}")


# --------------------------------------------------------------------------
# looking at the daemon from outside (/proc)


def fd_kinds(pid):
    """The daemon's open fds by kind: socket, pipe, other."""
    kinds = {"socket": 0, "pipe": 0, "other": 0}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        else:
            kinds["other"] += 1
    return kinds


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks (/proc/PID/stat 14, 15)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def cpu_share(pid, seconds):
    """Share of one core the process used over about `seconds` of wall
    time (the measuring window, not a synchronisation sleep)."""
    t0, c0 = time.monotonic(), cpu_ticks(pid)
    time.sleep(seconds)
    t1, c1 = time.monotonic(), cpu_ticks(pid)
    return (c1 - c0) / CLK_TCK / (t1 - t0)


def session_lines(d):
    """Parsed session lines; cheap pre-filter so thousands of lines are
    fine to poll."""
    return [parse_text_line(l) for l in d.lines() if " event=session " in l]


def wait_session_count(d, n, timeout, pred=lambda r: True):
    def check():
        if d.proc.poll() is not None:
            raise AssertionError(f"smtpfwd exited ({d.proc.returncode})\n{d.describe()[-4000:]}")
        if sum(1 for l in d.lines() if " event=session " in l) < n:
            return None
        found = [r for r in session_lines(d) if pred(r)]
        return found if len(found) >= n else None
    try:
        return wait_for(check, timeout, f"{n} session lines")
    except WaitTimeout as e:
        lines = session_lines(d)
        raise AssertionError(f"{e}: have {len(lines)} session lines; last: "
                             f"{lines[-3:]}") from None


def alive(d):
    assert d.proc.poll() is None, f"smtpfwd died ({d.proc.returncode})\n{d.describe()[-4000:]}"


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=IO_TIMEOUT) as r:
        return r.read().decode()


def metric_value(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return None


# --------------------------------------------------------------------------
# daemons with a different start (rlimit) than the shared factory's


class LimitedDaemon(Daemon):
    """smtpfwd started with a preexec_fn (e.g. a tiny RLIMIT_NOFILE); the
    rest is conftest's Daemon, and the factory stops it at teardown."""

    def __init__(self, workdir, args, env, name, preexec):  # noqa: D107
        self.workdir = Path(workdir)
        self.args = [BIN] + list(args)
        self.log_path = self.workdir / f"{name}.stderr"
        self.out_path = self.workdir / f"{name}.stdout"
        self.json = False
        self._err = open(self.log_path, "wb")
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err,
                                     env=env, cwd=self.workdir,
                                     preexec_fn=preexec)
        self.pid = self.proc.pid
        self.port = None


def start_limited(factory, config, preexec, pump=None):
    factory.n += 1
    path = factory.workdir / f"smtpfwd-{factory.n}.ini"
    path.write_text(config)
    d = LimitedDaemon(factory.workdir, ["-c", str(path)], base_env(pump),
                      f"smtpfwd-{factory.n}", preexec)
    factory.daemons.append(d)
    d.wait_ready(READY_TIMEOUT)
    return d


def nofile_limit(n):
    def preexec():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return preexec


def forward_cfg(listen_port, backends, **opts):
    fwd = {"listen": f"127.0.0.1:{listen_port}", "backend": list(backends),
           "client_identity": "none"}
    fwd.update(opts)
    return fwd


# --------------------------------------------------------------------------
# Mass: many sessions at once, both ends, one selector


class MassBackend:
    """A listening socket the Mass loop serves (accepts, sends, reads)."""

    def __init__(self, backlog=4096):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.addr = fmt_addr("127.0.0.1", self.port)

    def close(self):
        self.sock.close()


@pytest.fixture
def mass_backend():
    made = []

    def make(**kw):
        b = MassBackend(**kw)
        made.append(b)
        return b
    yield make
    for b in made:
        b.close()


class Payload:
    """A header plus a slice of a shared random blob: distinct per session
    without holding a copy per session."""

    def __init__(self, head, blob, off, size):
        self.parts = [memoryview(head), memoryview(blob)[off:off + size]]
        self.size = len(head) + size
        h = hashlib.sha256(head)
        h.update(self.parts[1])
        self.sha = h.hexdigest()


class _End:
    __slots__ = ("sock", "client", "out", "part", "pos", "hin", "nin",
                 "eof", "shut", "err", "connected", "mask", "down_sha",
                 "up_sha", "src")

    def __init__(self, sock, client, out):
        self.sock = sock
        self.client = client
        self.out = out
        self.part = 0
        self.pos = 0
        self.hin = hashlib.sha256()
        self.nin = 0
        self.eof = False
        self.shut = False
        self.err = None
        self.connected = not client
        self.mask = 0


class Mass:
    """Run n sessions through the daemon at once.

    Clients connect (at most `ramp` connects in flight); with hold=True
    nobody sends a byte until every client is connected and the backend
    has accepted all n, so the daemon holds n sessions at the same time.
    Then every client sends its up payload and shuts down its write side,
    every backend connection sends its down payload (by accept order) and
    shuts down, and both read to EOF hashing what arrives. With
    read_gate, nobody reads until read_gate() is true (used to make every
    flow hold a full pipe in the daemon)."""

    def __init__(self, port, backend, ups, downs, source=None, ramp=256,
                 hold=True, read_gate=None, on_held=None):
        assert len(ups) == len(downs)
        self.port = port
        self.backend = backend
        self.ups = ups
        self.downs = downs
        self.n = len(ups)
        self.source = source
        self.ramp = ramp
        self.hold = hold
        self.read_gate = read_gate
        self.on_held = on_held
        self.sel = selectors.DefaultSelector()
        self.clients = []
        self.bconns = []
        self.released = not hold
        self.reading = read_gate is None
        self.connecting = 0
        self.done = 0
        self.held_info = None

    # registration follows state
    def _want(self, e):
        if e.sock is None:
            return 0
        m = 0
        if not e.connected:
            return selectors.EVENT_WRITE
        if self.reading and not e.eof:
            m |= selectors.EVENT_READ
        if not self.reading and not e.eof and not self.released:
            m |= selectors.EVENT_READ  # a close before the release is an error
        if self.released and not e.shut:
            m |= selectors.EVENT_WRITE
        return m

    def _sync(self, e):
        m = self._want(e)
        if m == e.mask:
            return
        if e.mask == 0:
            self.sel.register(e.sock, m, e)
        elif m == 0:
            self.sel.unregister(e.sock)
        else:
            self.sel.modify(e.sock, m, e)
        e.mask = m

    def _finish(self, e):
        if e.sock is None:
            return
        if e.mask:
            self.sel.unregister(e.sock)
            e.mask = 0
        e.sock.close()
        e.sock = None
        self.done += 1

    def _check_done(self, e):
        if e.err is not None or (e.eof and e.shut):
            self._finish(e)

    def _start_client(self):
        i = len(self.clients)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        if self.source:
            s.bind((self.source, 0))
        e = _End(s, True, self.ups[i])
        e.up_sha = self.ups[i].sha
        self.clients.append(e)
        rc = s.connect_ex(("127.0.0.1", self.port))
        if rc not in (0, errno.EINPROGRESS):
            e.err = f"connect: {os.strerror(rc)}"
            self._finish(e)
            return
        self.connecting += 1
        self._sync(e)

    def _accept(self):
        while True:
            try:
                s, _ = self.backend.sock.accept()
            except BlockingIOError:
                return
            s.setblocking(False)
            k = len(self.bconns)
            if k >= self.n:
                s.close()  # not ours: nothing else should connect
                raise AssertionError("backend accepted more connections than sessions")
            e = _End(s, False, self.downs[k])
            self.bconns.append(e)
            self._sync(e)

    def _read(self, e):
        try:
            data = e.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError as x:
            e.err = f"recv: {x.strerror}"
            return
        if not data:
            e.eof = True
            if not self.released:
                e.err = "EOF before the release"
            return
        e.hin.update(data)
        e.nin += len(data)

    def _write(self, e):
        parts = e.out.parts
        while e.part < len(parts):
            view = parts[e.part]
            if e.pos == len(view):
                e.part += 1
                e.pos = 0
                continue
            try:
                n = e.sock.send(view[e.pos:e.pos + 262144])
            except BlockingIOError:
                return
            except OSError as x:
                e.err = f"send: {x.strerror}"
                return
            e.pos += n
        try:
            e.sock.shutdown(socket.SHUT_WR)
        except OSError as x:
            e.err = f"shutdown: {x.strerror}"
            return
        e.shut = True

    def run(self, timeout):
        deadline = time.monotonic() + timeout
        self.sel.register(self.backend.sock, selectors.EVENT_READ, None)
        try:
            while self.done < 2 * self.n:
                while len(self.clients) < self.n and self.connecting < self.ramp:
                    self._start_client()
                if not self.released and self.connecting == 0 \
                        and len(self.clients) == self.n and len(self.bconns) == self.n:
                    if self.on_held:
                        self.held_info = self.on_held()
                    self.released = True
                    for e in self.clients + self.bconns:
                        self._sync(e)
                if not self.reading and self.released and self.read_gate():
                    self.reading = True
                    for e in self.clients + self.bconns:
                        self._sync(e)
                now = time.monotonic()
                if now > deadline:
                    raise AssertionError(f"Mass timed out after {timeout}s: {self.summary()}")
                for key, ev in self.sel.select(min(0.1, deadline - now)):
                    e = key.data
                    if e is None:
                        self._accept()
                        continue
                    if e.sock is None:
                        continue
                    if not e.connected:
                        err = e.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        self.connecting -= 1
                        if err:
                            e.err = f"connect: {os.strerror(err)}"
                            self._finish(e)
                            continue
                        e.connected = True
                        self._sync(e)
                        continue
                    if ev & selectors.EVENT_READ:
                        self._read(e)
                    if ev & selectors.EVENT_WRITE and e.err is None and self.released:
                        self._write(e)
                    self._check_done(e)
                    if e.sock is not None:
                        self._sync(e)
        finally:
            for e in self.clients + self.bconns:
                if e.sock is not None:
                    with contextlib.suppress(OSError):
                        e.sock.close()
                    e.sock = None
            self.sel.close()
        return self

    def summary(self):
        cl = self.clients
        return (f"{len(cl)}/{self.n} clients started, {len(self.bconns)} accepted by the "
                f"backend, released={self.released}, reading={self.reading}, "
                f"{self.done} ends finished, client errors "
                f"{sum(1 for e in cl if e.err)}, backend errors "
                f"{sum(1 for e in self.bconns if e.err)}; first errors: "
                f"{[e.err for e in cl + self.bconns if e.err][:5]}")

    def verify(self):
        """Every byte arrived, byte-exact, both directions: the client that
        sent up payload X received exactly the down payload the backend
        connection that received X sent."""
        errs = [e.err for e in self.clients + self.bconns if e.err]
        assert not errs, f"{len(errs)} connection errors, e.g. {errs[:5]}; {self.summary()}"
        got_down = {e.up_sha: (e.hin.hexdigest(), e.nin) for e in self.clients}
        got_up = {e.hin.hexdigest(): e for e in self.bconns}
        missing = [s for s in got_down if s not in got_up]
        assert not missing, (f"{len(missing)} of {self.n} up payloads did not reach the "
                             f"backend byte-exact")
        bad = 0
        for up_sha, (down_sha, n) in got_down.items():
            b = got_up[up_sha]
            if down_sha != b.out.sha or n != b.out.size:
                bad += 1
        assert bad == 0, f"{bad} of {self.n} clients did not receive their down payload byte-exact"


def make_payloads(n, sizes_up, sizes_down, seed, blob, smtp=True):
    """Up payloads open with an EHLO, down payloads with a greeting, so
    the daemon's SMTP phase sees what it expects before random bytes."""
    rng = random.Random(seed)
    ups, downs = [], []
    for i in range(n):
        su, sd = sizes_up(rng), sizes_down(rng)
        hu = b"EHLO mass-%d.example\r\n" % i if smtp else b"%d:" % i
        hd = b"220 mass-%d.example ESMTP\r\n" % i if smtp else b"%d:" % i
        ups.append(Payload(hu, blob, rng.randrange(len(blob) - su), su))
        downs.append(Payload(hd, blob, rng.randrange(len(blob) - sd), sd))
    return ups, downs


BLOB = random_bytes(4 << 20, "faults-blob")


# --------------------------------------------------------------------------
# 2,000 concurrent sessions


@pytest.mark.parametrize("pump", ["splice", "copy"])
def test_2000_concurrent_sessions_byte_exact(smtpfwd, mass_backend, pump):
    """2,000 sessions held open at once (checked: the backend accepted all
    2,000 before anyone sent a byte), then random payloads of 1-64 KiB both
    ways at the same time; every byte arrives, byte-exact (sha256), every
    session is logged as forwarded with the right byte counts."""
    n = 2000
    need_fds(2 * n + 200)
    b = mass_backend()
    port = free_port()
    stats = free_port()
    d = smtpfwd.start(ini({"stats_listen": f"127.0.0.1:{stats}"},
                          {"t": forward_cfg(port, [b.addr])}), pump=pump)
    # 1 KiB to 64 KiB, log-uniform (median 8 KiB): the small ones pass
    # entirely during the SMTP phase (copied), the larger ones splice.
    size = lambda r: int(2 ** r.uniform(10, 16))  # noqa: E731
    ups, downs = make_payloads(n, size, size, f"c2000{pump}", BLOB)

    def held():
        return {"fds": fd_count(d.pid),
                "active": metric_value(metrics(stats), "smtpfwd_sessions_active", forward="t")}
    t0 = time.monotonic()
    m = Mass(port, b, ups, downs, on_held=held).run(timeout=60)
    elapsed = time.monotonic() - t0
    m.verify()
    assert m.held_info["active"] == n, f"sessions open at once: {m.held_info}"
    assert m.held_info["fds"] >= 2 * n, f"daemon fds while holding {n} sessions: {m.held_info}"
    lines = wait_session_count(d, n, timeout=30)
    assert len(lines) == n
    bad = [r for r in lines if r["result"] != "forwarded"]
    assert not bad, f"{len(bad)} sessions not forwarded, e.g. {bad[:3]}"
    assert sorted(int(r["bytes_up"]) for r in lines) == sorted(p.size for p in ups)
    assert sorted(int(r["bytes_down"]) for r in lines) == sorted(p.size for p in downs)
    pumps = {}
    for r in lines:
        pumps[r["pump"]] = pumps.get(r["pump"], 0) + 1
    if pump == "copy":
        assert set(pumps) <= {"copy", "none"}, f"SMTPFWD_NO_SPLICE=1 but pumps {pumps}"
    else:
        assert pumps.get("splice", 0) > 0, f"splice mode, up to 64 KiB each: pumps {pumps}"
    alive(d)
    print(f"\n2000 sessions ({pump}): {elapsed:.1f}s, held {m.held_info}, pumps {pumps}")


# --------------------------------------------------------------------------
# broken peers: backend killed or reset mid-transfer, client reset,
# backend that never greets, backend that greets and stalls

LINGER_RST = (socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, sys.byteorder) +
              (0).to_bytes(4, sys.byteorder))


def reset_close(sock):
    """close() with SO_LINGER 0: the kernel sends RST, not FIN."""
    sock.setsockopt(*LINGER_RST)
    sock.close()


def until_end(sock, payload=b"", timeout=IO_TIMEOUT, tick=None, limit=None):
    """Send payload while reading, until the connection ends (EOF or an
    error). Returns (how, sent, received): how is 'eof', an errno name, or
    'open' if it was still open at the deadline. tick() runs every round
    (the caller's fault injection). Reading stops mattering after limit
    bytes (they are counted, not kept)."""
    sock.setblocking(False)
    view = memoryview(payload)
    sent = 0
    received = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if tick:
                tick()
            w = [sock] if sent < len(view) else []
            r, w, _ = select.select([sock], w, [], 0.05)
            if r:
                try:
                    data = sock.recv(262144)
                except BlockingIOError:
                    data = None
                except OSError as e:
                    return errno.errorcode.get(e.errno, str(e)), sent, received
                if data == b"":
                    return "eof", sent, received
                if data:
                    received += len(data)
            if w:
                try:
                    sent += sock.send(view[sent:sent + 65536])
                except BlockingIOError:
                    pass
                except OSError as e:
                    return errno.errorcode.get(e.errno, str(e)), sent, received
        return "open", sent, received
    finally:
        with contextlib.suppress(OSError):
            sock.setblocking(True)
            sock.settimeout(IO_TIMEOUT)


def reader_backend(greet=True):
    """Handler: optional greeting, then read to EOF or error; returns how
    the connection ended and how many bytes came."""
    def handler(conn):
        if greet:
            conn.sendall(GREETING)
        n = 0
        while True:
            try:
                data = conn.recv(262144)
            except OSError as e:
                return errno.errorcode.get(e.errno, str(e)), n
            if not data:
                return "eof", n
            n += len(data)
    return handler


def resetting_backend(after):
    """Handler: greeting, then stream data down; after `after` bytes the
    socket is closed with RST (SO_LINGER 0)."""
    def handler(conn):
        conn.sendall(GREETING)
        sent = 0
        chunk = BLOB[:65536]
        while sent < after:
            sent += conn.send(chunk[:after - sent])
        reset_close(conn)
        return sent
    return handler


KILLABLE_BACKEND = r"""
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.sendall(b"220 doomed.example ESMTP\r\n")
n = 0
while n < int(sys.argv[1]):
    d = c.recv(65536)
    if not d:
        sys.exit(1)
    n += len(d)
print("midway", n, flush=True)
# Stop reading: when the test kills this process, unread bytes are queued,
# so the kernel answers the proxy with RST. Waits for stdin to close.
sys.stdin.read()
"""


class KillableBackend:
    """A backend in its own process, to be killed with SIGKILL mid-transfer."""

    def __init__(self, midway):
        self.proc = subprocess.Popen([sys.executable, "-c", KILLABLE_BACKEND, str(midway)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        r, _, _ = select.select([self.proc.stdout], [], [], IO_TIMEOUT)
        assert r, "killable backend did not start"
        self.port = int(self.proc.stdout.readline())
        self.addr = fmt_addr("127.0.0.1", self.port)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.out = b""
        self.killed_at = None

    def midway(self):
        with contextlib.suppress(BlockingIOError, TypeError):
            self.out += self.proc.stdout.read() or b""
        return b"midway" in self.out

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(IO_TIMEOUT)
        self.killed_at = time.monotonic()

    def close(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(IO_TIMEOUT)
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture
def killable():
    made = []

    def make(midway):
        k = KillableBackend(midway)
        made.append(k)
        return k
    yield make
    for k in made:
        k.close()


def good_session(port, source=None):
    """A short well-behaved SMTP dialogue through the proxy (mini_smtp or
    smtp-sink behind it); returns the EHLO reply code."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="good.example", timeout=IO_TIMEOUT,
                      source_address=(source, 0) if source else None) as s:
        code, _ = s.ehlo()
        s.quit()
    return code


def fault_and_good(factory, fault_backends, good_addr, pump, **opts):
    """One daemon, two forwards: 't' towards the faulty backend(s), 'ok'
    towards a good one, so "the proxy keeps serving" is asked of the very
    process that met the fault."""
    port, ok_port = free_port(), free_port()
    d = factory.start(ini({"log_level": "info"},
                          {"t": forward_cfg(port, fault_backends, **opts),
                           "ok": forward_cfg(ok_port, [good_addr])}), pump=pump)
    d.port, d.ok_port = port, ok_port
    return d


def test_backend_killed_mid_upload(smtpfwd, backend, killable, pump):
    """The backend process dies (SIGKILL) while the client is uploading:
    the client sees its connection end (no hang), the session is logged
    with a reason, and the next session is served (by the next backend)."""
    k = killable(midway=1 << 20)
    good = backend(mini_smtp)
    d = smtpfwd.forward([k.addr, good.addr], pump=pump, client_identity="none")
    c = connect("127.0.0.1", d.port)
    try:
        assert recv_reply(c) == b"220 doomed.example ESMTP\r\n"

        def tick():
            if k.killed_at is None and k.midway():
                k.kill()
        how, sent, _ = until_end(c, BLOB * 4, timeout=IO_TIMEOUT, tick=tick)
        ended = time.monotonic()
    finally:
        c.close()
    assert k.killed_at is not None, f"backend never got 1 MiB (sent {sent}): {k.out!r}"
    assert how != "open", f"client connection still open {IO_TIMEOUT}s after the backend died"
    assert ended - k.killed_at < 3, f"client saw the end {ended - k.killed_at:.2f}s after the kill"
    s = d.session_for(c)
    assert s["result"] == "error" or (s["result"] == "forwarded" and s["reason"]), s
    assert s["reason"], s
    assert int(s["bytes_up"]) >= 1 << 20, s
    # the proxy keeps serving: the dead backend refuses, the next one answers
    assert good_session(d.port) == 250
    alive(d)
    print(f"\nbackend killed: client saw {how} after {ended - k.killed_at:.3f}s; "
          f"log result={s['result']} reason={s['reason']!r}")


def test_backend_reset_mid_download(smtpfwd, backend, pump):
    """The backend resets (RST via SO_LINGER 0) while streaming to the
    client: the client sees the end before the full stream, the session
    says error, the proxy keeps serving."""
    after = 3 << 20
    b = backend(resetting_backend(after))
    d = fault_and_good(smtpfwd, [b.addr], backend(mini_smtp).addr, pump)
    with connect("127.0.0.1", d.port) as c:
        assert recv_reply(c) == GREETING
        t0 = time.monotonic()
        how, _, received = until_end(c, b"EHLO reset.example\r\n")
        elapsed = time.monotonic() - t0
    [sent] = b.wait_results(1)
    assert sent == after
    assert how != "open", "client connection still open after the backend reset"
    assert received <= after
    s = d.session_for(c)
    assert s["result"] == "error" or (s["result"] == "forwarded" and s["reason"]), s
    assert int(s["bytes_down"]) <= after + len(GREETING), s
    assert good_session(d.ok_port) == 250
    alive(d)
    print(f"\nbackend reset: client saw {how} after {received} of {after} bytes "
          f"({elapsed:.3f}s); log result={s['result']} reason={s['reason']!r}")


def test_client_reset_mid_upload(smtpfwd, backend, pump):
    """The client resets (RST) in the middle of an upload: the backend's
    connection is closed too, the session is logged, the proxy serves
    the next client."""
    b = backend(reader_backend())
    d = fault_and_good(smtpfwd, [b.addr], backend(mini_smtp).addr, pump)
    c = connect("127.0.0.1", d.port)
    assert recv_reply(c) == GREETING
    c.sendall(b"EHLO reset.example\r\n" + BLOB[:512 * 1024])
    addr = c.client_addr
    reset_close(c)
    t0 = time.monotonic()
    [(how, n)] = b.wait_results(1, timeout=IO_TIMEOUT)
    elapsed = time.monotonic() - t0
    assert elapsed < 3, f"backend side closed {elapsed:.2f}s after the client's reset"
    s = d.session_for(addr)
    assert s["result"] in ("error", "forwarded") and s["reason"], s
    assert good_session(d.ok_port) == 250
    alive(d)
    print(f"\nclient reset: backend saw {how} after {n} bytes, {elapsed:.3f}s; "
          f"log result={s['result']} reason={s['reason']!r}")


@pytest.mark.parametrize("greets", [False, True], ids=["never-greets", "greets-then-stalls"])
def test_stalled_backend_times_out(smtpfwd, backend, pump, greets):
    """A backend that accepts and says nothing, or greets and then never
    answers: with idle_timeout=1 the session ends after about a second
    with result=timeout, both sides closed; the proxy keeps serving."""
    b = backend(reader_backend(greet=greets))
    d = fault_and_good(smtpfwd, [b.addr], backend(mini_smtp).addr, pump, idle_timeout=1)
    with connect("127.0.0.1", d.port) as c:
        t0 = time.monotonic()
        if greets:
            assert recv_reply(c) == GREETING
            c.sendall(b"EHLO patient.example\r\n")
            t0 = time.monotonic()
        rest = recv_all(c)
        elapsed = time.monotonic() - t0
    assert rest == b""
    assert 0.9 <= elapsed < 4, f"idle_timeout=1, closed after {elapsed:.2f}s"
    [(how, _)] = b.wait_results(1)
    assert how == "eof", f"backend side ended with {how}"
    s = d.session_for(c)
    assert s["result"] == "timeout", s
    assert "idle" in s["reason"], s
    assert good_session(d.ok_port) == 250
    alive(d)
