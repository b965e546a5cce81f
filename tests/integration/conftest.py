"""Harness for the smtpfwd integration tests.

The real binary ($SMTPFWD_BIN, default <repo>/smtpfwd) runs on loopback
ports picked by binding port 0. Peers are Python sockets, smtplib, swaks,
Postfix's smtp-sink / smtp-source and a private Postfix instance. Nothing
sleeps to synchronise: every wait polls a condition (a log line, a socket
state in /proc/net/tcp) with a deadline, and every socket has a timeout.
"""

import contextlib
import hashlib
import json
import os
import pwd
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SMTPFWD_BIN") or str(REPO / "smtpfwd")

IO_TIMEOUT = 10.0  # any single socket operation
READY_TIMEOUT = 10.0  # daemon start until event=ready
STOP_TIMEOUT = 10.0  # SIGTERM until exit, then SIGKILL
POLL = 0.01  # poll interval of wait_for (not a synchronisation sleep)


# --------------------------------------------------------------------------
# small helpers


class WaitTimeout(AssertionError):
    pass


def wait_for(pred, timeout, what):
    """Poll pred() until it returns a true value; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL)


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def fmt_addr(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (bound to port 0, then closed)."""
    with socket.socket(family_of(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def closed_port(host="127.0.0.1"):
    """A port nobody listens on: connecting to it is refused."""
    return free_port(host)


def have_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def listening_ports():
    """Local ports in LISTEN state, from /proc/net/tcp and tcp6."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


def is_listening(port):
    return port in listening_ports()


class ClientSocket(socket.socket):
    """A socket that remembers its local address as the daemon logs it
    (client=IP:PORT), also after it was closed."""
    client_addr = None


def connect(host, port, source=None, timeout=IO_TIMEOUT):
    s = ClientSocket(family_of(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    name = s.getsockname()
    s.client_addr = fmt_addr(name[0], name[1])
    return s


def recv_until(sock, terminator, limit=1 << 20):
    """Read until terminator is in the data (or EOF); returns all bytes."""
    data = b""
    while terminator not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise AssertionError(f"no {terminator!r} within {limit} bytes")
    return data


def recv_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(262144, n - len(data)))
        if not chunk:
            raise AssertionError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def recv_all(sock):
    """Read until EOF."""
    data = bytearray()
    while True:
        chunk = sock.recv(262144)
        if not chunk:
            return bytes(data)
        data += chunk


def recv_line(sock, limit=1 << 20):
    """Read one line up to and including CRLF, never past it (peeks first),
    so several replies in one segment are read one at a time. Returns what
    was read before EOF when the peer closes first."""
    data = b""
    while True:
        peek = sock.recv(65536, socket.MSG_PEEK)
        if not peek:
            return data
        i = peek.find(b"\r\n")
        if i >= 0:
            return data + recv_exactly(sock, i + 2)
        data += recv_exactly(sock, len(peek))
        if len(data) > limit:
            raise AssertionError(f"no CRLF within {limit} bytes")


def recv_reply(sock):
    """Read one complete SMTP reply (all lines of a multi-line reply)."""
    data = b""
    while True:
        line = recv_line(sock)
        data += line
        if not line.endswith(b"\r\n") or line[3:4] != b"-":
            return data


def sha(data):
    return hashlib.sha256(data).hexdigest()


def exchange(sock, payload, shut=True, timeout=30.0):
    """Send payload (then shutdown(SHUT_WR) when shut) while reading until
    EOF, in one thread without deadlock. Returns the bytes received."""
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    view = memoryview(payload)
    sent = 0
    received = bytearray()
    eof = False
    if shut and not payload:
        sock.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + timeout
    try:
        while not (eof and sent == len(payload)):
            events = 0 if eof else selectors.EVENT_READ
            if sent < len(payload):
                events |= selectors.EVENT_WRITE
            if not events:
                break
            sel.register(sock, events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"exchange timed out: sent {sent}/{len(payload)} bytes, "
                    f"received {len(received)}, eof={eof}")
            ready = sel.select(min(remaining, 1.0))
            sel.unregister(sock)
            for _, ev in ready:
                if ev & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(262144)
                    except BlockingIOError:
                        chunk = None
                    if chunk == b"":
                        eof = True
                    elif chunk:
                        received += chunk
                if ev & selectors.EVENT_WRITE and sent < len(payload):
                    try:
                        sent += sock.send(view[sent:sent + 262144])
                    except BlockingIOError:
                        pass
                    if sent == len(payload) and shut:
                        sock.shutdown(socket.SHUT_WR)
    finally:
        sel.close()
        sock.settimeout(IO_TIMEOUT)
    return bytes(received)


def random_bytes(n, seed):
    """Deterministic pseudo-random bytes (fast, reproducible)."""
    out = bytearray()
    block = hashlib.sha512(str(seed).encode()).digest()
    counter = 0
    while len(out) < n:
        out += hashlib.sha512(block + counter.to_bytes(8, "big")).digest() * 64
        counter += 1
    return bytes(out[:n])


# --------------------------------------------------------------------------
# log parsing

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
_ESCAPES = {"\"": b"\"", "\\": b"\\", "n": b"\n", "r": b"\r", "t": b"\t"}


class LogFormatError(ValueError):
    pass


def _unquote(text, i, line):
    """Parse a quoted value starting after the opening quote at i."""
    out = bytearray()
    while True:
        if i >= len(text):
            raise LogFormatError(f"unterminated quoted value: {line!r}")
        c = text[i]
        if c == "\"":
            return out.decode("utf-8", "surrogateescape"), i + 1
        if c == "\\":
            n = text[i + 1:i + 2]
            if n in _ESCAPES:
                out += _ESCAPES[n]
                i += 2
            elif n == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
                out.append(int(text[i + 2:i + 4], 16))
                i += 4
            else:
                raise LogFormatError(f"bad escape at {i}: {line!r}")
            continue
        if ord(c) < 0x20 or ord(c) >= 0x7f:
            raise LogFormatError(f"raw control/non-ASCII byte in value: {line!r}")
        out += c.encode()
        i += 1


def parse_text_line(line):
    """`TS level=L event=E key=value ...` -> dict (values unescaped)."""
    if any(ord(c) < 0x20 or ord(c) >= 0x7f for c in line):
        raise LogFormatError(f"raw control/non-ASCII byte in log line: {line!r}")
    ts, sep, rest = line.partition(" ")
    if not sep or not TS_RE.match(ts):
        raise LogFormatError(f"no timestamp: {line!r}")
    rec = {"ts": ts}
    keys = []
    i = 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq == -1:
            raise LogFormatError(f"expected key=value at {i}: {line!r}")
        key = rest[i:eq]
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", key):
            raise LogFormatError(f"bad key {key!r}: {line!r}")
        i = eq + 1
        if rest[i:i + 1] == "\"":
            value, i = _unquote(rest, i + 1, line)
        else:
            end = rest.find(" ", i)
            end = len(rest) if end == -1 else end
            value = rest[i:end]
            if "\"" in value or "\\" in value:
                raise LogFormatError(f"unquoted value with quote/backslash: {line!r}")
            i = end
        if key in rec:
            raise LogFormatError(f"duplicate key {key}: {line!r}")
        rec[key] = value
        keys.append(key)
        if i < len(rest):
            if rest[i] != " ":
                raise LogFormatError(f"expected space at {i}: {line!r}")
            i += 1
    if keys[:2] != ["level", "event"]:
        raise LogFormatError(f"line must start with level= event=: {line!r}")
    return rec


def parse_json_line(line):
    try:
        rec = json.loads(line)
    except ValueError as e:
        raise LogFormatError(f"not JSON ({e}): {line!r}") from e
    if not isinstance(rec, dict):
        raise LogFormatError(f"not a JSON object: {line!r}")
    for key in ("ts", "level", "event"):
        if key not in rec:
            raise LogFormatError(f"no {key}: {line!r}")
    if not TS_RE.match(str(rec["ts"])):
        raise LogFormatError(f"bad ts: {line!r}")
    return {k: (v if isinstance(v, str) else json.dumps(v) if isinstance(v, (bool, type(None))) else str(v))
            for k, v in rec.items()} | {"_json": rec}


# --------------------------------------------------------------------------
# the daemon


def base_env(pump=None):
    env = dict(os.environ)
    env.pop("SMTPFWD_NO_SPLICE", None)
    if pump == "copy":
        env["SMTPFWD_NO_SPLICE"] = "1"
    return env


def ini(global_opts=None, forwards=None):
    """Build an INI file: forwards is {name: {key: value}}."""
    out = ["[global]"]
    for k, v in (global_opts or {}).items():
        out.append(f"{k} = {v}")
    for name, opts in (forwards or {}).items():
        out.append("")
        out.append(f"[forward {name}]")
        for k, v in opts.items():
            if isinstance(v, (list, tuple)):
                v = ", ".join(v)
            out.append(f"{k} = {v}")
    return "\n".join(out) + "\n"


class Daemon:
    """One smtpfwd process; stderr goes to a file that the tests poll."""

    def __init__(self, workdir, args, env, name, json_log=False):
        self.workdir = Path(workdir)
        self.args = [BIN] + list(args)
        self.log_path = self.workdir / f"{name}.stderr"
        self.out_path = self.workdir / f"{name}.stdout"
        self.json = json_log
        self._err = open(self.log_path, "wb")
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err,
                                     env=env, cwd=self.workdir)
        self.pid = self.proc.pid
        self.port = None  # set by callers that know the main listener

    # log access
    def raw(self):
        return self.log_path.read_bytes()

    def lines(self):
        data = self.raw()
        # only complete lines: a line being written has no newline yet
        return [l.decode("utf-8", "surrogateescape")
                for l in data.split(b"\n")[:-1]]

    def records(self):
        parse = parse_json_line if self.json else parse_text_line
        return [parse(l) for l in self.lines()]

    def events(self, event):
        return [r for r in self.records() if r.get("event") == event]

    def sessions(self):
        return self.events("session")

    def describe(self):
        return (f"command: {' '.join(self.args)}\n"
                f"--- stderr ---\n{self.raw().decode('utf-8', 'replace')}"
                f"--- stdout ---\n{self.out_path.read_bytes().decode('utf-8', 'replace')}")

    def wait_record(self, pred, timeout=IO_TIMEOUT, what="log record"):
        def check():
            for r in self.records():
                if pred(r):
                    return r
            if self.proc.poll() is not None:
                # exited: one last look, then give up at once
                for r in self.records():
                    if pred(r):
                        return r
                raise AssertionError(
                    f"smtpfwd exited ({self.proc.returncode}) before {what}\n{self.describe()}")
            return None
        try:
            return wait_for(check, timeout, what)
        except WaitTimeout as e:
            raise AssertionError(f"{e}\n{self.describe()}") from None

    def wait_sessions(self, n, timeout=IO_TIMEOUT, pred=lambda r: True):
        def check():
            found = [r for r in self.sessions() if pred(r)]
            if len(found) >= n:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"smtpfwd exited before {n} session lines\n{self.describe()}")
            return None
        try:
            return wait_for(check, timeout, f"{n} session log lines")
        except WaitTimeout as e:
            raise AssertionError(f"{e}\n{self.describe()}") from None

    def session_for(self, client_sock_or_addr, timeout=IO_TIMEOUT):
        """The session line whose client= is this socket's local address."""
        if isinstance(client_sock_or_addr, socket.socket):
            addr = getattr(client_sock_or_addr, "client_addr", None)
            if addr is None:
                name = client_sock_or_addr.getsockname()
                addr = fmt_addr(name[0], name[1])
        else:
            addr = client_sock_or_addr
        return self.wait_record(
            lambda r: r.get("event") == "session" and r.get("client") == addr,
            timeout, f"session line with client={addr}")

    def wait_ready(self, timeout=READY_TIMEOUT):
        return self.wait_record(lambda r: r.get("event") == "ready", timeout,
                                "event=ready")

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"smtpfwd did not exit within {timeout}s\n{self.describe()}") from None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait, SIGKILL after the bound. Returns the exit status."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self._err.close()
        self._out.close()
        if os.environ.get("SMTPFWD_TEST_VERBOSE"):  # pytest -s shows it
            print(f"\n--- smtpfwd exit {self.proc.returncode}: {self.describe()}")
        return self.proc.returncode


class DaemonFactory:
    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.daemons = []
        self.n = 0

    def start(self, config=None, args=(), pump=None, env=None, wait_ready=True,
              json_log=False):
        """Start smtpfwd with an INI text (written to a file) and/or args."""
        self.n += 1
        argv = list(args)
        if config is not None:
            path = self.workdir / f"smtpfwd-{self.n}.ini"
            path.write_text(config)
            argv = ["-c", str(path)] + argv
        d = Daemon(self.workdir, argv, env or base_env(pump), f"smtpfwd-{self.n}",
                   json_log=json_log)
        self.daemons.append(d)
        if wait_ready:
            d.wait_ready()
        return d

    def forward(self, backends, pump=None, listen_host="127.0.0.1", glob=None,
                json_log=False, **opts):
        """One forward 't' on a free port of listen_host; returns the daemon
        with .host/.port set."""
        port = free_port(listen_host)
        fwd = {"listen": fmt_addr(listen_host, port),
               "backend": list(backends)}
        fwd.update(opts)
        g = {"log_level": "info"}
        if json_log:
            g["log_format"] = "json"
        g.update(glob or {})
        d = self.start(ini(g, {"t": fwd}), pump=pump, json_log=json_log)
        d.host, d.port = listen_host, port
        return d

    def cleanup(self):
        for d in self.daemons:
            d.stop()


@pytest.fixture
def workdir():
    # Not tmp_path: private Postfix daemons (uid postfix) must be able to
    # traverse it, and /tmp/pytest-of-root is mode 0700.
    path = tempfile.mkdtemp(prefix="smtpfwd-test-")
    os.chmod(path, 0o755)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def smtpfwd(workdir):
    if not os.access(BIN, os.X_OK):
        pytest.fail(f"smtpfwd binary not found at {BIN} (set SMTPFWD_BIN or run make)")
    f = DaemonFactory(workdir)
    yield f
    f.cleanup()


@pytest.fixture(params=["splice", "copy"])
def pump(request):
    """Every forwarding case runs twice: splice pump, and copy pump forced
    with SMTPFWD_NO_SPLICE=1."""
    return request.param


# --------------------------------------------------------------------------
# Python backends


class Backend:
    """A loopback TCP server running handler(conn) in a thread per
    connection. Handler return values land in .results, exceptions in
    .errors."""

    def __init__(self, handler, host="127.0.0.1", backlog=512, rcvbuf=None):
        self.handler = handler
        self.host = host
        self.sock = socket.socket(family_of(host), socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:  # inherited by accepted sockets, before the handshake
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((host, 0))
        self.sock.listen(backlog)
        self.sock.settimeout(0.05)  # lets the accept loop see _stop
        self.port = self.sock.getsockname()[1]
        self.addr = fmt_addr(host, self.port)
        self.accepted = 0
        self.results = []
        self.errors = []
        self.conns = []
        self.threads = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT)
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            with self.lock:
                self.accepted += 1
                self.conns.append(conn)
                self.threads.append(t)
            t.start()

    def _run(self, conn):
        try:
            r = self.handler(conn)
            with self.lock:
                self.results.append(r)
        except Exception as e:  # reported by check()
            with self.lock:
                self.errors.append(e)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def wait_results(self, n, timeout=IO_TIMEOUT):
        def done():
            with self.lock:
                if self.errors:
                    raise AssertionError(f"backend handler failed: {self.errors[0]!r}")
                return len(self.results) >= n
        wait_for(done, timeout, f"{n} backend results")
        return list(self.results)

    def check(self):
        if self.errors:
            raise AssertionError(f"backend handler failed: {self.errors[0]!r}")

    def close(self):
        self._stop.set()
        self.sock.close()
        self._thread.join(5)
        with self.lock:
            conns, threads = list(self.conns), list(self.threads)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(5)


@pytest.fixture
def backend():
    """backend(handler, host='127.0.0.1') -> Backend; closed at teardown."""
    made = []

    def make(handler, host="127.0.0.1", **kw):
        b = Backend(handler, host, **kw)
        made.append(b)
        return b
    yield make
    for b in made:
        b.close()


def mini_smtp(conn, buffered=b"", greeting=b"220 mini.example ESMTP\r\n"):
    """A tiny SMTP server loop after an optional greeting; returns the
    list of command lines it received."""
    if greeting:
        conn.sendall(greeting)
    buf = buffered
    lines = []
    in_data = False
    while True:
        while b"\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return lines
            buf += chunk
        line, buf = buf.split(b"\r\n", 1)
        if in_data:
            if line == b".":
                in_data = False
                conn.sendall(b"250 2.0.0 Ok: queued\r\n")
            continue
        lines.append(line)
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            conn.sendall(b"250 mini.example\r\n")
        elif verb == b"DATA":
            in_data = True
            conn.sendall(b"354 go ahead\r\n")
        elif verb == b"QUIT":
            conn.sendall(b"221 2.0.0 Bye\r\n")
            return lines
        elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            conn.sendall(b"250 2.0.0 Ok\r\n")
        else:
            conn.sendall(b"500 5.5.2 Error: command not recognized\r\n")


def blackhole_listener():
    """A listening socket whose accept queue is full, so further SYNs are
    dropped and connects hang. Returns (listener, fillers, port) or None when
    the kernel does not behave that way here."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fillers = []
    # Fill the queue: connects succeed until it is full.
    for _ in range(8):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    # Probe: a blocking connect must now time out.
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(("127.0.0.1", port))
        ok = False
    except socket.timeout:
        ok = True
    except OSError:
        ok = False
    finally:
        probe.close()
    if not ok:
        for s in fillers:
            s.close()
        lst.close()
        return None
    return lst, fillers, port


@pytest.fixture
def blackhole():
    bh = blackhole_listener()
    if bh is None:
        pytest.skip("cannot make a loopback port that drops SYNs (full accept queue)")
    lst, fillers, port = bh
    yield port
    for s in fillers:
        s.close()
    lst.close()


# --------------------------------------------------------------------------
# Postfix tools


def sink_user():
    """smtp-sink insists on -u when run as root."""
    for name in ("postfix", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    return None


SMTP_SINK = shutil.which("smtp-sink") or (
    "/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
SMTP_SOURCE = shutil.which("smtp-source") or (
    "/usr/sbin/smtp-source" if os.path.exists("/usr/sbin/smtp-source") else None)
SWAKS = shutil.which("swaks")
POSTFIX = shutil.which("postfix") or (
    "/usr/sbin/postfix" if os.path.exists("/usr/sbin/postfix") else None)


class SmtpSink:
    def __init__(self, workdir, hostname="mx.sink.example", host="127.0.0.1"):
        self.hostname = hostname
        self.port = free_port(host)
        self.addr = fmt_addr(host, self.port)
        argv = [SMTP_SINK]
        if os.geteuid() == 0:
            argv += ["-u", sink_user()]
        argv += ["-h", hostname, self.addr, "100"]
        self.errpath = Path(workdir) / f"smtp-sink-{self.port}.stderr"
        self._err = open(self.errpath, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._err)
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"smtp-sink exited: {self.errpath.read_text(errors='replace')}")
            return is_listening(self.port)
        wait_for(up, IO_TIMEOUT, "smtp-sink to listen")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self._err.close()


@pytest.fixture
def smtp_sink(workdir):
    if not SMTP_SINK:
        pytest.skip("smtp-sink (Debian package postfix) is not installed")
    sinks = []

    def make(**kw):
        s = SmtpSink(workdir, **kw)
        sinks.append(s)
        return s
    yield make
    for s in sinks:
        s.stop()


def pytest_report_header(config):
    return f"smtpfwd binary: {BIN}"
