"""PROXY protocol towards the backend: exact v1 and v2 headers (IPv4 with a
client bound to 127.0.0.7, IPv6 ::1), a real private Postfix instance with
smtpd_upstream_proxy_protocol = haproxy that must log the real client, and
a backend that does not expect the header."""

import os
import re
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import (IO_TIMEOUT, POSTFIX, STOP_TIMEOUT, closed_port, connect,
                      fmt_addr, free_port, have_ipv6, is_listening, mini_smtp,
                      recv_all, recv_reply, wait_for)

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
GREETING = b"220 pp.example ESMTP\r\n"


def read_proxy_header(conn):
    """Read exactly one PROXY header (v1 or v2); return (header, rest)."""
    buf = b""
    while True:
        if buf.startswith(b"PROXY ") and b"\r\n" in buf:
            end = buf.index(b"\r\n") + 2
            return buf[:end], buf[end:]
        if len(buf) >= 16 and buf.startswith(V2_SIG):
            total = 16 + struct.unpack("!H", buf[14:16])[0]
            if len(buf) >= total:
                return buf[:total], buf[total:]
        if len(buf) > 16 and not (buf.startswith(b"PROXY ") or buf.startswith(V2_SIG)):
            raise AssertionError(f"backend got no PROXY header first: {buf[:64]!r}")
        if len(buf) > 232:  # v1 max 107, v2 here at most 16 + 216
            raise AssertionError(f"PROXY header too long: {buf[:64]!r}")
        chunk = conn.recv(4096)
        if not chunk:
            raise AssertionError(f"EOF before a full PROXY header: {buf!r}")
        buf += chunk


def proxy_aware_backend(conn):
    header, rest = read_proxy_header(conn)
    return header, mini_smtp(conn, buffered=rest, greeting=GREETING)


def expected_header(version, src, sport, dst, dport):
    v6 = ":" in src
    if version == "v1":
        return f"PROXY {'TCP6' if v6 else 'TCP4'} {src} {dst} {sport} {dport}\r\n".encode()
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    addrs = (socket.inet_pton(fam, src) + socket.inet_pton(fam, dst)
             + struct.pack("!HH", sport, dport))
    return (V2_SIG + bytes([0x21, 0x21 if v6 else 0x11])
            + struct.pack("!H", len(addrs)) + addrs)


def run_proxy_case(smtpfwd, backend, pump, version, listen_host, source):
    b = backend(proxy_aware_backend, host=listen_host)
    d = smtpfwd.forward([b.addr], pump=pump, listen_host=listen_host,
                        proxy_protocol=version)
    with connect(listen_host, d.port, source=source) as c:
        src, sport = c.getsockname()[:2]
        assert recv_reply(c) == GREETING
        c.sendall(b"EHLO pp.client.example\r\n")
        assert recv_reply(c) == b"250 mini.example\r\n"
        c.sendall(b"QUIT\r\n")
        assert recv_reply(c).startswith(b"221")
    [(header, lines)] = b.wait_results(1)
    want = expected_header(version, src, sport, listen_host, d.port)
    assert header == want, f"PROXY {version} header\n got  {header!r}\n want {want!r}"
    assert lines == [b"EHLO pp.client.example", b"QUIT"], "client bytes follow the header unchanged"
    s = d.session_for(fmt_addr(src, sport))
    assert s["result"] == "forwarded"
    assert s["helo"] == "pp.client.example"
    assert s["greeting"] == GREETING.decode().rstrip("\r\n")
    # bytes_up counts the client's bytes, not the header the proxy added
    assert int(s["bytes_up"]) == len(b"EHLO pp.client.example\r\nQUIT\r\n")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_ipv4(smtpfwd, backend, pump, version):
    run_proxy_case(smtpfwd, backend, pump, version, "127.0.0.1", "127.0.0.7")


@pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback (::1)")
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_ipv6(smtpfwd, backend, pump, version):
    run_proxy_case(smtpfwd, backend, pump, version, "::1", None)


def test_proxy_header_not_sent_when_off(smtpfwd, backend):
    b = backend(lambda conn: recv_all(conn))
    d = smtpfwd.forward([b.addr], proxy_protocol="off")
    with connect("127.0.0.1", d.port) as c:
        c.sendall(b"EHLO x\r\n")
        c.shutdown(socket.SHUT_WR)
        recv_all(c)
    assert b.wait_results(1) == [b"EHLO x\r\n"]


def test_proxy_header_not_sent_on_failed_first_backend(smtpfwd, backend):
    """Failover: the header goes to the backend that connected, once."""
    b = backend(proxy_aware_backend)
    d = smtpfwd.forward([f"127.0.0.1:{closed_port()}", b.addr], proxy_protocol="v1")
    with connect("127.0.0.1", d.port, source="127.0.0.7") as c:
        sport = c.getsockname()[1]
        assert recv_reply(c) == GREETING
        c.sendall(b"QUIT\r\n")
        recv_reply(c)
    [(header, _)] = b.wait_results(1)
    assert header == expected_header("v1", "127.0.0.7", sport, "127.0.0.1", d.port)


# --------------------------------------------------------------------------
# a backend that does not expect the header


def test_v1_header_to_backend_that_rejects_it(smtpfwd, backend):
    """A server that reads first and answers a PROXY line with 500: the
    operator sees that error as the greeting in the session line."""
    def handler(conn):
        line = b""
        while b"\r\n" not in line:
            chunk = conn.recv(4096)
            if not chunk:
                break
            line += chunk
        if line.startswith(b"PROXY "):
            conn.sendall(b"500 5.5.1 PROXY header not expected\r\n")
            return line
        conn.sendall(b"220 plain.example ESMTP\r\n")
        return line
    b = backend(handler)
    d = smtpfwd.forward([b.addr], proxy_protocol="v1")
    with pytest.raises((smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected)) as ei:
        smtplib.SMTP("127.0.0.1", d.port, timeout=IO_TIMEOUT)
    if isinstance(ei.value, smtplib.SMTPConnectError):
        assert ei.value.smtp_code == 500
    s = d.wait_record(lambda r: r.get("event") == "session")
    assert s["greeting"] == "500 5.5.1 PROXY header not expected", s
    assert s["greeting_code"] == "500"


def test_v1_header_to_plain_smtp_sink(smtpfwd, smtp_sink):
    """smtp-sink greets, then answers the PROXY line with a 500 error; that
    error text must be visible in the session line."""
    sink = smtp_sink()
    # what smtp-sink itself says to a PROXY line
    with connect("127.0.0.1", sink.port) as c:
        recv_reply(c)
        c.sendall(b"PROXY TCP4 127.0.0.1 127.0.0.1 1 2\r\n")
        sink_error = recv_reply(c).decode().rstrip("\r\n")
    assert sink_error.startswith("5"), sink_error
    d = smtpfwd.forward([sink.addr], proxy_protocol="v1")
    with connect("127.0.0.1", d.port) as c:
        greeting = recv_reply(c)
        assert greeting.startswith(b"220 "), greeting
        c.sendall(b"QUIT\r\n")
        recv_all(c)
    s = d.session_for(c)
    assert s["greeting_code"] == "220"
    assert any(sink_error in str(v) for k, v in s.items() if k != "_json"), \
        f"the backend's error {sink_error!r} is not in the session line: {s}"


# --------------------------------------------------------------------------
# a real Postfix with smtpd_upstream_proxy_protocol = haproxy

MASTER_CF = """\
{listen} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
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
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
local_transport = discard:
default_transport = discard:
relay_transport = discard:
smtpd_banner = $myhostname ESMTP private-postfix
smtpd_upstream_proxy_protocol = haproxy
smtpd_upstream_proxy_timeout = 5s
smtpd_peername_lookup = no
smtpd_client_port_logging = yes
"""


class PrivatePostfix:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="smtpfwd-postfix-"))
        os.chmod(self.dir, 0o755)
        self.etc = self.dir / "etc"
        self.etc.mkdir()
        (self.dir / "queue").mkdir()
        data = self.dir / "data"
        data.mkdir()
        shutil.chown(data, "postfix")
        self.maillog = self.dir / "maillog"
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        (self.etc / "main.cf").write_text(MAIN_CF.format(dir=self.dir))
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=self.addr))
        r = self.postfix("start")
        if r.returncode != 0:
            self.fail(f"postfix start failed ({r.returncode})", r)
        try:
            wait_for(lambda: is_listening(self.port), 20, "Postfix smtpd to listen")
        except AssertionError:
            self.stop()
            self.fail("Postfix did not listen", r)

    def postfix(self, cmd):
        return subprocess.run([POSTFIX, "-c", str(self.etc), cmd],
                              capture_output=True, text=True, timeout=60)

    def log(self):
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return "(no maillog)"

    def fail(self, what, r):
        text = f"{what}\n{r.stdout}\n{r.stderr}\n--- maillog ---\n{self.log()}"
        shutil.rmtree(self.dir, ignore_errors=True)
        pytest.fail(text)

    def master_pid(self):
        try:
            return int((self.dir / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        pid = self.master_pid()
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


@pytest.fixture(scope="session")
def private_postfix():
    if not POSTFIX:
        pytest.skip("Postfix is not installed (Debian package postfix)")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (postfix start runs master as root)")
    pf = PrivatePostfix()
    yield pf
    pf.stop()


MESSAGE = b"Subject: via smtpfwd\r\n\r\nhello postfix\r\n"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_real_postfix_logs_real_client(smtpfwd, private_postfix, pump, version):
    pf = private_postfix
    d = smtpfwd.forward([pf.addr], pump=pump, proxy_protocol=version)
    s = smtplib.SMTP("127.0.0.1", d.port, local_hostname="pp.client.example",
                     timeout=IO_TIMEOUT, source_address=("127.0.0.7", 0))
    cport = s.sock.getsockname()[1]
    code, _ = s.ehlo()
    assert code == 250
    s.mail("a@client.example")
    s.rcpt("u@pf.test.example")
    code, msg = s.data(MESSAGE)
    assert code == 250, msg
    s.quit()
    qid = re.search(rb"queued as ([0-9A-Za-z]+)", msg).group(1).decode()
    m = wait_for(lambda: re.search(rf"postfix/smtpd\[\d+\]: {qid}: client=(\S+)", pf.log()),
                 IO_TIMEOUT, f"Postfix to log client= for {qid}")
    assert m.group(1) == f"unknown[127.0.0.7]:{cport}", \
        f"Postfix saw {m.group(1)}, expected the real client 127.0.0.7:{cport}"
    sess = d.session_for(f"127.0.0.7:{cport}")
    assert sess["greeting"] == "220 pf.test.example ESMTP private-postfix"
    assert sess["helo"] == "pp.client.example"
    assert sess["result"] == "forwarded"
