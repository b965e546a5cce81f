"""The real client identity towards the backend (client_identity), the
open-relay self-test (--check-relay) and reject_early_talkers.

Real Postfix instances, private to this module, run from temporary config
directories: a "closed" one (mynetworks = 127.0.0.0/8) and an "open" one
(mynetworks = 0.0.0.0/0, an open relay), each with several smtpd services
that differ only in how they learn the client (PROXY header, XCLIENT from
127.0.0.1, XCLIENT from nobody, nothing). Mail that the closed Postfix
accepts is relayed to a Python sink on 127.0.0.2, so the Received header
Postfix wrote can be read. Python backends cover the exact XCLIENT
dialogue and early talkers. Every wait polls a condition with a deadline;
the only deliberate delay is a backend that is slow to greet.
"""

import contextlib
import os
import re
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import (BIN, IO_TIMEOUT, POSTFIX, STOP_TIMEOUT, Backend,
                      connect, free_port, have_ipv6, ini,
                      is_listening, mini_smtp, recv_all, recv_line,
                      recv_reply, wait_for)

CHECK_RELAY_TIMEOUT = 30
OUTSIDE = "192.0.2.1"  # what --check-relay pretends to be
IDENTITY_WARNING = "the backend will see every client as coming from smtpfwd"


# --------------------------------------------------------------------------
# a sink that keeps every message Postfix relays to it


class MessageSink:
    """A tiny SMTP server that stores (MAIL, [RCPT], data) per message."""

    def __init__(self, host="127.0.0.2"):
        self.messages = []
        self.lock = threading.Lock()
        self.backend = Backend(self._handle, host)
        self.host, self.port = host, self.backend.port

    def _handle(self, conn):
        f = conn.makefile("rb")
        conn.sendall(b"220 sink.example ESMTP\r\n")
        mail, rcpts = None, []
        while True:
            line = f.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                conn.sendall(b"250 sink.example\r\n")
            elif verb == b"MAIL":
                mail, rcpts = line.strip(), []
                conn.sendall(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                rcpts.append(line.strip())
                conn.sendall(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                data = b""
                while True:
                    dl = f.readline()
                    if not dl:
                        return
                    if dl == b".\r\n":
                        break
                    data += dl[1:] if dl.startswith(b"..") else dl
                with self.lock:
                    self.messages.append((mail, rcpts, data))
                conn.sendall(b"250 2.0.0 Ok: stored\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                conn.sendall(b"250 2.0.0 Ok\r\n")

    def find(self, marker):
        with self.lock:
            for m in self.messages:
                if marker in m[2]:
                    return m
        return None

    def close(self):
        self.backend.close()


# --------------------------------------------------------------------------
# private Postfix instances

MASTER_BASE = """\
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
mail_owner = postfix
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = pf.test.example
mydomain = test.example
myorigin = $myhostname
mydestination = $myhostname
mynetworks = {mynetworks}
local_recipient_maps =
alias_maps =
alias_database =
local_transport = discard:
relayhost = [{sink_host}]:{sink_port}
smtp_tls_security_level = none
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_banner = $myhostname ESMTP private-postfix
smtpd_upstream_proxy_timeout = 5s
smtpd_peername_lookup = no
smtpd_client_port_logging = yes
"""

# service name -> extra smtpd options (each runs on its own port, and logs
# as postfix/NAME/smtpd)
SERVICES = {
    "proxy": ["smtpd_upstream_proxy_protocol=haproxy"],
    # Postfix's default relay restrictions: unauthorised relaying gets 454
    "proxydefer": ["smtpd_upstream_proxy_protocol=haproxy",
                   "smtpd_relay_restrictions=permit_mynetworks,"
                   "permit_sasl_authenticated,defer_unauth_destination"],
    "xclient": ["smtpd_authorized_xclient_hosts=127.0.0.1"],
    "xnoauth": ["smtpd_authorized_xclient_hosts="],
    "plain": [],
}


class IdentityPostfix:
    def __init__(self, name, mynetworks, sink):
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"smtpfwd-pf-{name}-"))
        os.chmod(self.dir, 0o755)
        self.etc = self.dir / "etc"
        self.etc.mkdir()
        (self.dir / "queue").mkdir()
        data = self.dir / "data"
        data.mkdir()
        shutil.chown(data, "postfix")
        self.maillog = self.dir / "maillog"
        self.ports = {}
        master = []
        for svc, opts in SERVICES.items():
            port = free_port()
            self.ports[svc] = port
            master.append(f"127.0.0.1:{port} inet n - n - - smtpd")
            master.append(f"  -o syslog_name=postfix/{svc}")
            master += [f"  -o {o}" for o in opts]
        (self.etc / "master.cf").write_text("\n".join(master) + "\n" + MASTER_BASE)
        (self.etc / "main.cf").write_text(MAIN_CF.format(
            dir=self.dir, mynetworks=mynetworks, sink_host=sink.host,
            sink_port=sink.port))
        r = self.postfix("start")
        if r.returncode != 0:
            self._fail(f"postfix start failed ({r.returncode})", r)
        try:
            for port in self.ports.values():
                wait_for(lambda: is_listening(port), 20, "Postfix smtpd to listen")
        except AssertionError:
            self.stop()
            self._fail("Postfix did not listen", r)

    def addr(self, svc):
        return f"127.0.0.1:{self.ports[svc]}"

    def postfix(self, cmd):
        return subprocess.run([POSTFIX, "-c", str(self.etc), cmd],
                              capture_output=True, text=True, timeout=60)

    def log(self):
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self):
        """Where the log ends now: pass to lines_since()."""
        return len(self.log())

    def lines_since(self, mark, svc):
        """Log lines of smtpd service svc written after mark."""
        tag = f"postfix/{svc}/smtpd["
        return [l for l in self.log()[mark:].splitlines() if tag in l]

    def wait_line(self, mark, svc, pattern, what):
        rx = re.compile(pattern)

        def find():
            for l in self.lines_since(mark, svc):
                m = rx.search(l)
                if m:
                    return m
            return None
        try:
            return wait_for(find, IO_TIMEOUT, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- Postfix maillog ({self.name}) ---\n"
                                 f"{self.log()[mark:]}") from None

    def _fail(self, what, r):
        text = f"{what}\n{r.stdout}\n{r.stderr}\n--- maillog ---\n{self.log()}"
        shutil.rmtree(self.dir, ignore_errors=True)
        pytest.fail(text)

    def stop(self):
        try:
            pid = int((self.dir / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        self.postfix("stop")
        if pid:
            def gone():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        return f.read().split(")")[-1].split()[0] == "Z"
                except FileNotFoundError:
                    return True
            try:
                wait_for(gone, STOP_TIMEOUT, "Postfix master to exit")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def need_postfix():
    if not POSTFIX:
        pytest.skip("Postfix is not installed (Debian package postfix)")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (postfix start runs master as root)")


@pytest.fixture(scope="module")
def sink():
    s = MessageSink()
    yield s
    s.close()


@pytest.fixture(scope="module")
def closed_postfix(sink):
    """Relays only for 127.0.0.0/8: a correctly configured server."""
    need_postfix()
    pf = IdentityPostfix("closed", "127.0.0.0/8", sink)
    yield pf
    pf.stop()


@pytest.fixture(scope="module")
def open_postfix(sink):
    """Trusts everybody: an open relay."""
    need_postfix()
    pf = IdentityPostfix("open", "0.0.0.0/0", sink)
    yield pf
    pf.stop()


# --------------------------------------------------------------------------
# helpers


def write_config(workdir, name, fwd, glob=None):
    path = Path(workdir) / name
    path.write_text(ini(glob or {}, {"t": fwd}))
    return path


def line_of(path, text):
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip() == text:
            return i
    raise AssertionError(f"{text!r} not in {path}")


def run_smtpfwd(*args, timeout=CHECK_RELAY_TIMEOUT):
    return subprocess.run([BIN, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def check_relay(workdir, backend, identity, flag="--check-relay"):
    path = write_config(workdir, f"check-{identity}-{time.monotonic_ns()}.ini", {
        "listen": f"127.0.0.1:{free_port()}",
        "backend": backend,
        "client_identity": identity,
    })
    r = run_smtpfwd(flag, "t", "-c", str(path))
    return r, f"exit {r.returncode}\n--- stdout ---\n{r.stdout}--- stderr ---\n{r.stderr}"


def read_v2_header(conn):
    buf = b""
    while len(buf) < 16:
        chunk = conn.recv(4096)
        if not chunk:
            raise AssertionError(f"EOF before a PROXY v2 header: {buf!r}")
        buf += chunk
    assert buf.startswith(b"\r\n\r\n\x00\r\nQUIT\n"), f"no PROXY v2 header: {buf[:32]!r}"
    total = 16 + struct.unpack("!H", buf[14:16])[0]
    while len(buf) < total:
        chunk = conn.recv(4096)
        if not chunk:
            raise AssertionError("EOF inside the PROXY v2 header")
        buf += chunk
    return buf[:total], buf[total:]


def read_line(conn, buf):
    """(line without CRLF, rest) from buf plus what conn sends; line is
    None at EOF."""
    while b"\r\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            return None, buf
        buf += chunk
    line, rest = buf.split(b"\r\n", 1)
    return line, rest


def drain(conn, limit=IO_TIMEOUT):
    """Everything conn sends until EOF (or limit seconds)."""
    conn.settimeout(limit)
    data = b""
    with contextlib.suppress(OSError):
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


# --------------------------------------------------------------------------
# configuration: client_identity and proxy_protocol, the warning


def test_check_warns_when_no_identity_method(workdir):
    path = write_config(workdir, "noid.ini", {
        "listen": f"127.0.0.1:{free_port()}", "backend": "127.0.0.1:2525"})
    r = run_smtpfwd("-t", "-c", str(path))
    assert r.returncode == 0, r.stderr
    line = line_of(path, "[forward t]")
    want = f"{path}:{line}: warning: [forward t]: {IDENTITY_WARNING}"
    assert any(l.startswith(want) for l in r.stderr.splitlines()), \
        f"expected a line starting with\n  {want}\ngot stderr:\n{r.stderr}"


@pytest.mark.parametrize("opts", [
    {"client_identity": "none"},
    {"client_identity": "proxy-v1"},
    {"client_identity": "proxy-v2"},
    {"client_identity": "xclient"},
    {"proxy_protocol": "v1"},
    {"proxy_protocol": "v2"},
    {"client_identity": "proxy-v1", "proxy_protocol": "v1"},
    {"client_identity": "proxy-v2", "proxy_protocol": "v2"},
    {"client_identity": "xclient", "proxy_protocol": "off"},
    {"client_identity": "none", "proxy_protocol": "off"},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_check_accepts_identity_settings_without_warning(workdir, opts):
    path = write_config(workdir, "id.ini", {
        "listen": f"127.0.0.1:{free_port()}", "backend": "127.0.0.1:2525", **opts})
    r = run_smtpfwd("-t", "-c", str(path))
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr


@pytest.mark.parametrize("identity,proxy", [
    ("proxy-v2", "v1"), ("proxy-v1", "v2"), ("proxy-v2", "off"),
    ("none", "v2"), ("xclient", "v1"), ("xclient", "v2"),
])
def test_check_rejects_contradicting_proxy_protocol(workdir, identity, proxy):
    path = write_config(workdir, "contra.ini", {
        "listen": f"127.0.0.1:{free_port()}", "backend": "127.0.0.1:2525",
        "client_identity": identity, "proxy_protocol": proxy})
    r = run_smtpfwd("-t", "-c", str(path))
    assert r.returncode != 0, f"accepted client_identity={identity} with proxy_protocol={proxy}"
    lines = (line_of(path, f"client_identity = {identity}"),
             line_of(path, f"proxy_protocol = {proxy}"))
    assert re.search(rf"^{re.escape(str(path))}:({lines[0]}|{lines[1]}): .*client_identity",
                     r.stderr, re.M), r.stderr
    # the daemon refuses to start on the same error
    d = subprocess.run([BIN, "-c", str(path)], capture_output=True, text=True,
                       timeout=IO_TIMEOUT, stdin=subprocess.DEVNULL)
    assert d.returncode != 0, d.stderr


def test_check_rejects_unknown_identity(workdir):
    path = write_config(workdir, "bad.ini", {
        "listen": f"127.0.0.1:{free_port()}", "backend": "127.0.0.1:2525",
        "client_identity": "proxy-v3"})
    r = run_smtpfwd("-t", "-c", str(path))
    assert r.returncode != 0
    line = line_of(path, "client_identity = proxy-v3")
    assert re.search(rf"^{re.escape(str(path))}:{line}: ", r.stderr, re.M), r.stderr


def test_daemon_warns_at_start(smtpfwd, backend):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr])
    w = [r for r in d.records() if IDENTITY_WARNING in r.get("msg", "")]
    assert w and w[0]["level"] == "warn", d.describe()


def test_daemon_silent_with_identity_none(smtpfwd, backend):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], client_identity="none")
    assert not [r for r in d.records() if IDENTITY_WARNING in r.get("msg", "")], d.describe()


# --------------------------------------------------------------------------
# client_identity = xclient against Python backends: the exact dialogue


def xclient_backend(ehlo_line, final=b"220 after.example ESMTP ready for you\r\n",
                    first=b"220 before.example ESMTP\r\n", wait=None):
    """A Postfix-like XCLIENT server. Returns (our EHLO, XCLIENT line,
    lines received after XCLIENT)."""
    def handler(conn):
        if wait is not None:
            wait.wait(IO_TIMEOUT)
        conn.sendall(first)
        ehlo, buf = read_line(conn, b"")
        conn.sendall(b"250-before.example\r\n250-PIPELINING\r\n" + ehlo_line
                     + b"\r\n250 8BITMIME\r\n")
        xclient, buf = read_line(conn, buf)
        if xclient is None or not xclient.upper().startswith(b"XCLIENT "):
            return ehlo, xclient, []
        if final[:3] != b"220":
            conn.sendall(final)
            return ehlo, xclient, drain(conn)
        return ehlo, xclient, mini_smtp(conn, buffered=buf, greeting=final)
    return handler


def parse_xclient(line):
    words = line.decode().split()
    assert words[0] == "XCLIENT", line
    attrs = dict(w.split("=", 1) for w in words[1:])
    assert len(attrs) == len(words) - 1, f"duplicate attribute: {line!r}"
    return attrs


def test_xclient_dialogue(smtpfwd, backend):
    b = backend(xclient_backend(
        b"250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT"))
    d = smtpfwd.forward([b.addr], client_identity="xclient")
    with connect("127.0.0.1", d.port, source="127.0.0.9") as c:
        cport = c.getsockname()[1]
        assert recv_reply(c) == b"220 after.example ESMTP ready for you\r\n", \
            "the client's greeting is the one after XCLIENT"
        c.sendall(b"EHLO xc.client.example\r\n")
        assert recv_reply(c) == b"250 mini.example\r\n"
        c.sendall(b"QUIT\r\n")
        assert recv_reply(c).startswith(b"221")
    [(ehlo, xclient, lines)] = b.wait_results(1)
    assert ehlo == f"EHLO {socket.gethostname()}".encode(), ehlo
    assert len(xclient) + 2 <= 512
    assert parse_xclient(xclient) == {
        "ADDR": "127.0.0.9", "PORT": str(cport), "NAME": "[UNAVAILABLE]",
        "PROTO": "ESMTP", "DESTADDR": "127.0.0.1", "DESTPORT": str(d.port)}, xclient
    assert lines == [b"EHLO xc.client.example", b"QUIT"], \
        "after XCLIENT the client's own commands reach the backend unchanged"
    s = d.session_for(f"127.0.0.9:{cport}")
    assert s["result"] == "forwarded", s
    assert s["greeting"] == "220 after.example ESMTP ready for you", s
    assert s["helo"] == "xc.client.example", s


def test_xclient_sends_only_advertised_attributes(smtpfwd, backend):
    b = backend(xclient_backend(b"250-XCLIENT ADDR NAME"))
    d = smtpfwd.forward([b.addr], client_identity="xclient")
    with connect("127.0.0.1", d.port, source="127.0.0.9") as c:
        assert recv_reply(c).startswith(b"220 after.example")
        c.sendall(b"QUIT\r\n")
        recv_reply(c)
    [(_, xclient, _)] = b.wait_results(1)
    assert parse_xclient(xclient) == {"ADDR": "127.0.0.9", "NAME": "[UNAVAILABLE]"}, xclient


@pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback (::1)")
def test_xclient_ipv6_address(smtpfwd, backend):
    b = backend(xclient_backend(b"250-XCLIENT ADDR PORT NAME DESTADDR DESTPORT"),
                host="::1")
    d = smtpfwd.forward([b.addr], listen_host="::1", client_identity="xclient")
    with connect("::1", d.port) as c:
        cport = c.getsockname()[1]
        assert recv_reply(c).startswith(b"220 after.example")
        c.sendall(b"QUIT\r\n")
        recv_reply(c)
    [(_, xclient, _)] = b.wait_results(1)
    assert parse_xclient(xclient) == {
        "ADDR": "IPV6:::1", "PORT": str(cport), "NAME": "[UNAVAILABLE]",
        "DESTADDR": "IPV6:::1", "DESTPORT": str(d.port)}, xclient


@pytest.mark.parametrize("ehlo_line,final,reason_has", [
    (b"250-XCLIENT ADDR NAME", b"550 5.7.0 Error: insufficient authorization\r\n",
     "550 5.7.0 Error: insufficient authorization"),
    (b"250-XCLIENT ADDR NAME", b"421 4.3.2 Service shutting down\r\n",
     "421 4.3.2 Service shutting down"),
    (b"250-XCLIENT NAME HELO", None, "250-before.example"),   # no ADDR
    (b"250-SIZE 10240000", None, "250-before.example"),       # no XCLIENT at all
], ids=["550", "421", "no-ADDR", "not-offered"])
def test_xclient_failure_gives_421_and_logs_reply(smtpfwd, backend, ehlo_line,
                                                  final, reason_has):
    b = backend(xclient_backend(ehlo_line, final=final or b""))
    d = smtpfwd.forward([b.addr], client_identity="xclient")
    with connect("127.0.0.1", d.port, source="127.0.0.9") as c:
        reply = recv_reply(c)
        rest = recv_all(c)
    assert reply.startswith(b"421 4.7.0 "), reply
    assert rest == b"", f"the client got more after 421: {rest!r}"
    [(_, xclient, after)] = b.wait_results(1)
    if final is None:
        assert xclient is None, f"XCLIENT sent although not usable: {xclient!r}"
    assert not after, f"client bytes reached the backend: {after!r}"
    s = d.session_for(c)
    assert s["result"] == "error", s
    assert s["reason"].startswith("XCLIENT: "), s
    assert reason_has in s["reason"], s


# --------------------------------------------------------------------------
# client_identity = xclient against a real Postfix


MESSAGE = b"Subject: identity {marker}\r\nMessage-ID: <{marker}@client.example>\r\n\r\nhello\r\n"


def test_xclient_real_postfix_sees_real_client(smtpfwd, closed_postfix, sink):
    pf = closed_postfix
    mark = pf.mark()
    d = smtpfwd.forward([pf.addr("xclient")], client_identity="xclient")
    marker = f"xclient-{time.monotonic_ns()}"
    s = smtplib.SMTP("127.0.0.1", d.port, local_hostname="xc.client.example",
                     timeout=IO_TIMEOUT, source_address=("127.0.0.9", 0))
    cport = s.sock.getsockname()[1]
    code, _ = s.ehlo()
    assert code == 250
    s.mail("a@client.example")
    code, msg = s.rcpt("someone@example.com")   # relayed: 127.0.0.9 is in mynetworks
    assert code == 250, msg
    code, msg = s.data(MESSAGE.replace(b"{marker}", marker.encode()))
    assert code == 250, msg
    s.quit()
    qid = re.search(rb"queued as ([0-9A-Za-z]+)", msg).group(1).decode()
    m = pf.wait_line(mark, "xclient", rf": {qid}: client=(\S+)",
                     f"Postfix to log client= for {qid}")
    assert m.group(1) == f"unknown[127.0.0.9]:{cport}", \
        f"Postfix saw {m.group(1)}, expected the real client 127.0.0.9:{cport}"
    got = wait_for(lambda: sink.find(marker.encode()), IO_TIMEOUT,
                   "the relayed message at the sink")
    headers = got[2].split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    received = re.findall(r"^Received:.*(?:\r\n[ \t].*)*", headers, re.M)
    assert received, headers
    assert "[127.0.0.9]" in received[0] and "127.0.0.1" not in received[0], \
        f"Postfix's Received header does not name the real client:\n{received[0]}"
    sess = d.session_for(f"127.0.0.9:{cport}")
    assert sess["result"] == "forwarded", sess
    assert sess["greeting"] == "220 pf.test.example ESMTP private-postfix", sess
    assert sess["helo"] == "xc.client.example", sess


def test_xclient_real_postfix_not_authorized(smtpfwd, closed_postfix):
    """smtpd_authorized_xclient_hosts does not name the proxy: Postfix does
    not offer XCLIENT, so the client gets 421 and nothing is forwarded."""
    pf = closed_postfix
    mark = pf.mark()
    d = smtpfwd.forward([pf.addr("xnoauth")], client_identity="xclient")
    with connect("127.0.0.1", d.port, source="127.0.0.9") as c:
        reply = recv_reply(c)
        rest = recv_all(c)
    assert reply.startswith(b"421 4.7.0 "), reply
    assert rest == b"", rest
    s = d.session_for(c)
    assert s["result"] == "error", s
    assert s["reason"].startswith("XCLIENT: "), s
    assert "XCLIENT" in s["reason"][len("XCLIENT: "):], s
    # The issue: any failure "logs the backend's exact reply". Here that is
    # Postfix's answer to the proxy's EHLO (250-pf.test.example ...), which
    # lacks XCLIENT.
    assert "250-pf.test.example" in s["reason"], \
        f"the session line does not carry the backend's EHLO reply: {s}"
    m = pf.wait_line(mark, "xnoauth", r"disconnect from \S+ (.*)",
                     "Postfix to log the disconnect")
    assert "mail=" not in m.group(1) and "rcpt=" not in m.group(1), m.group(0)


# --------------------------------------------------------------------------
# client_identity = proxy-v2 (synonym of proxy_protocol = v2) with Postfix


@pytest.mark.parametrize("early", ["no", "yes"], ids=["", "reject_early_talkers"])
def test_proxy_v2_identity_real_postfix(smtpfwd, closed_postfix, early):
    """client_identity = proxy-v2 sends the header Postfix expects; a
    patient client is served also with reject_early_talkers = yes."""
    pf = closed_postfix
    mark = pf.mark()
    d = smtpfwd.forward([pf.addr("proxy")], client_identity="proxy-v2",
                        reject_early_talkers=early)
    try:
        s = smtplib.SMTP("127.0.0.1", d.port, local_hostname="pp.client.example",
                         timeout=IO_TIMEOUT, source_address=("127.0.0.9", 0))
    except (smtplib.SMTPException, OSError) as e:
        pytest.fail(f"no session with reject_early_talkers={early}: {e!r}\n"
                    f"--- Postfix ---\n{''.join(l + chr(10) for l in pf.lines_since(mark, 'proxy'))}"
                    f"{d.describe()}")
    cport = s.sock.getsockname()[1]
    s.ehlo()
    s.mail("a@client.example")
    code, msg = s.rcpt("u@pf.test.example")
    assert code == 250, msg
    s.rset()
    s.quit()
    pf.wait_line(mark, "proxy", rf"connect from unknown\[127\.0\.0\.9\]:{cport}\b",
                 "Postfix to log the real client from the PROXY v2 header")


# --------------------------------------------------------------------------
# --check-relay


def assert_dialogue(out):
    for cmd in ("EHLO ", "MAIL FROM:<check@example.org>", "RCPT TO:<check@example.net>"):
        assert cmd in out, f"{cmd!r} missing from the dialogue"


def assert_no_mail_sent(pf, mark, svc, client):
    m = pf.wait_line(mark, svc, rf"disconnect from unknown\[{re.escape(client)}\]\S* (.*)",
                     f"Postfix to log the disconnect of {client}")
    stats = m.group(1)
    assert "data=" not in stats and "bdat=" not in stats, f"a message was sent: {m.group(0)}"
    assert "rset=1" in stats and "quit=1" in stats, f"no RSET/QUIT: {m.group(0)}"


@pytest.mark.parametrize("identity,svc", [("proxy-v2", "proxy"), ("xclient", "xclient")])
def test_check_relay_closed(workdir, closed_postfix, identity, svc):
    pf = closed_postfix
    mark = pf.mark()
    r, info = check_relay(workdir, pf.addr(svc), identity)
    assert r.returncode == 0, info
    assert_dialogue(r.stdout)
    assert "554" in r.stdout and "Relay access denied" in r.stdout, info
    assert "not an open relay" in r.stdout, info
    assert "OPEN RELAY" not in r.stdout, info
    pf.wait_line(mark, svc, rf"reject: RCPT from unknown\[{re.escape(OUTSIDE)}\]",
                 "Postfix to reject the outside client")
    assert_no_mail_sent(pf, mark, svc, OUTSIDE)


@pytest.mark.parametrize("identity,svc", [("proxy-v2", "proxy"), ("xclient", "xclient")])
def test_check_relay_open(workdir, open_postfix, sink, identity, svc):
    pf = open_postfix
    mark = pf.mark()
    before = len(sink.messages)
    r, info = check_relay(workdir, pf.addr(svc), identity, flag="-R")
    assert r.returncode == 1, info
    assert_dialogue(r.stdout)
    assert "OPEN RELAY" in r.stdout, info
    assert "not an open relay" not in r.stdout, info
    assert "RSET" in r.stdout and "QUIT" in r.stdout, info
    assert_no_mail_sent(pf, mark, svc, OUTSIDE)
    assert len(sink.messages) == before


def test_check_relay_deferred_is_not_open(workdir, closed_postfix):
    """Postfix's default smtpd_relay_restrictions answer 454, not 554:
    refused all the same."""
    pf = closed_postfix
    mark = pf.mark()
    r, info = check_relay(workdir, pf.addr("proxydefer"), "proxy-v2")
    assert r.returncode == 0, info
    assert "454" in r.stdout and "Relay access denied" in r.stdout, info
    assert "OPEN RELAY" not in r.stdout, info
    assert_no_mail_sent(pf, mark, "proxydefer", OUTSIDE)


def test_check_relay_trap_identity_none(workdir, closed_postfix):
    """The classic mistake: no identity, and the backend trusts the
    forwarder's own address (127.0.0.0/8 in mynetworks). Every outside
    client may relay: check-relay must say so."""
    pf = closed_postfix
    mark = pf.mark()
    r, info = check_relay(workdir, pf.addr("plain"), "none")
    assert r.returncode == 1, info
    assert "OPEN RELAY" in r.stdout, info
    assert "client_identity = none" in r.stdout, info
    assert_no_mail_sent(pf, mark, "plain", "127.0.0.1")
    assert not [l for l in pf.lines_since(mark, "plain") if OUTSIDE in l], \
        "Postfix cannot have seen the outside address"


def test_check_relay_xclient_not_authorized(workdir, closed_postfix):
    r, info = check_relay(workdir, closed_postfix.addr("xnoauth"), "xclient")
    assert r.returncode == 2, info
    assert "XCLIENT" in r.stdout, info
    assert "OPEN RELAY" not in r.stdout, info


def test_check_relay_no_backend(workdir):
    r, info = check_relay(workdir, f"127.0.0.1:{free_port()}", "proxy-v2")
    assert r.returncode == 2, info
    assert "OPEN RELAY" not in r.stdout and "not an open relay" not in r.stdout, info


def test_check_relay_unknown_forward(workdir):
    path = write_config(workdir, "unk.ini", {
        "listen": f"127.0.0.1:{free_port()}", "backend": "127.0.0.1:2525",
        "client_identity": "none"})
    r = run_smtpfwd("--check-relay", "nosuch", "-c", str(path))
    assert r.returncode == 2, r


# --------------------------------------------------------------------------
# reject_early_talkers


V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def slow_greeter(answered):
    """Withholds its greeting until the client got its answer (or 3 s):
    an early talker necessarily talks before the greeting. Returns every
    byte it received from the client (a PROXY v2 header removed)."""
    def handler(conn):
        answered.wait(3)
        with contextlib.suppress(OSError):
            conn.sendall(b"220 slow.example ESMTP\r\n")
        data = drain(conn, 3)
        if data.startswith(V2_SIG) and len(data) >= 16:
            data = data[16 + struct.unpack("!H", data[14:16])[0]:]
        return data
    return handler


@pytest.mark.parametrize("identity", ["none", "proxy-v2"])
def test_early_talker_rejected(smtpfwd, backend, identity):
    answered = threading.Event()
    b = backend(slow_greeter(answered))
    d = smtpfwd.forward([b.addr], client_identity=identity, reject_early_talkers="yes")
    try:
        with connect("127.0.0.1", d.port) as c:
            c.sendall(b"EHLO early.example\r\n")
            reply = recv_line(c)
            rest = recv_all(c)
    finally:
        answered.set()
    assert reply.startswith(b"554 5.5.1 Protocol error"), reply
    assert rest == b"", f"not closed after 554: {rest!r}"
    s = d.session_for(c)
    assert s["early_talker"] == "yes", s
    assert s["result"] == "denied", s
    [got] = b.wait_results(1)
    assert got == b"", f"the backend saw the early talker's bytes: {got!r}"


def test_early_talker_rejected_with_xclient(smtpfwd, backend):
    """With XCLIENT the proxy speaks first; a client that talks meanwhile
    has still not seen any greeting."""
    sent = threading.Event()
    b = backend(xclient_backend(b"250-XCLIENT ADDR PORT NAME", wait=sent))
    d = smtpfwd.forward([b.addr], client_identity="xclient", reject_early_talkers="yes")
    try:
        with connect("127.0.0.1", d.port, source="127.0.0.9") as c:
            c.sendall(b"EHLO early.example\r\n")
            sent.set()   # only now does the backend greet
            reply = recv_line(c)
            assert reply.startswith(b"554 5.5.1 Protocol error"), \
                f"early talker during the XCLIENT exchange got {reply!r}, not 554"
            rest = recv_all(c)
    finally:
        sent.set()
    assert rest == b"", rest
    [(_, xclient, after)] = b.wait_results(1)
    assert not after, f"the backend saw the early talker's commands: {after!r}"
    s = d.session_for(c)
    assert s["early_talker"] == "yes", s
    assert s["result"] == "denied", s


@pytest.mark.parametrize("identity", ["none", "proxy-v2", "xclient"])
def test_patient_client_unaffected(smtpfwd, backend, identity):
    if identity == "xclient":
        b = backend(xclient_backend(b"250-XCLIENT ADDR PORT NAME"))
        greeting = b"220 after.example ESMTP ready for you\r\n"
    else:
        def handler(conn):
            rest = b""
            if identity == "proxy-v2":   # like Postfix: no greeting before the header
                _, rest = read_v2_header(conn)
            time.sleep(0.5)   # a slow server, not synchronisation
            return None, None, mini_smtp(conn, buffered=rest,
                                         greeting=b"220 slow.example ESMTP\r\n")
        b = backend(handler)
        greeting = b"220 slow.example ESMTP\r\n"
    d = smtpfwd.forward([b.addr], client_identity=identity, reject_early_talkers="yes")
    with connect("127.0.0.1", d.port, timeout=5) as c:
        try:
            got = recv_reply(c)
        except socket.timeout:
            b.check()
            pytest.fail(f"no greeting within 5 s with client_identity={identity} and "
                        f"reject_early_talkers=yes (backend accepted {b.accepted})")
        assert got == greeting
        c.sendall(b"EHLO patient.example\r\n")
        assert recv_reply(c) == b"250 mini.example\r\n"
        c.sendall(b"QUIT\r\n")
        assert recv_reply(c).startswith(b"221")
    [(_, _, lines)] = b.wait_results(1)
    assert lines == [b"EHLO patient.example", b"QUIT"]
    s = d.session_for(c)
    assert s["early_talker"] == "no", s
    assert s["result"] == "forwarded", s
    assert s["helo"] == "patient.example", s


def test_early_talker_forwarded_when_off(smtpfwd, backend):
    """Default (reject_early_talkers = no): the early talker is only noted.
    The backend greets only after it received the client's command."""
    def handler(conn):
        line, rest = read_line(conn, b"")   # the client's EHLO, before any greeting
        conn.sendall(b"220 late.example ESMTP\r\n250 mini.example\r\n")
        return [line] + mini_smtp(conn, buffered=rest, greeting=None)
    b = backend(handler)
    d = smtpfwd.forward([b.addr], client_identity="none")
    with connect("127.0.0.1", d.port) as c:
        c.sendall(b"EHLO early.example\r\n")
        assert recv_reply(c) == b"220 late.example ESMTP\r\n"
        assert recv_reply(c) == b"250 mini.example\r\n"
        c.sendall(b"QUIT\r\n")
        assert recv_reply(c).startswith(b"221")
    [lines] = b.wait_results(1)
    assert lines == [b"EHLO early.example", b"QUIT"]
    s = d.session_for(c)
    assert s["early_talker"] == "yes", s
    assert s["result"] == "forwarded", s
