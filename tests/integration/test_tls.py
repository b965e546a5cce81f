"""TLS termination (issue 4): implicit TLS and STARTTLS offload.

Certificates are generated at run time with the openssl CLI in a private
temporary directory (EC P-256, so generation is quick); nothing here is
committed. Clients are Python's ssl/smtplib, `openssl s_client` and swaks;
backends are Postfix's smtp-sink (real delivery) and Python servers that
record every line they receive (exact byte checks). No sleeps: every wait
polls a condition (a log line, a kernel socket queue) with a deadline.
"""

import contextlib
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest

from conftest import (BIN, IO_TIMEOUT, SWAKS, connect, fmt_addr, free_port,
                      ini, wait_for)

READY = b"220 2.0.0 Ready to start TLS\r\n"
MUST = b"530 5.7.0 Must issue a STARTTLS command first\r\n"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
SINK_HOST = "mx.test.example"
MESSAGE = (b"From: a@client.example\r\nTo: b@mx.test.example\r\n"
           b"Subject: through smtpfwd over TLS\r\n\r\nhello\r\n")


# --------------------------------------------------------------------------
# certificates (generated once per module, removed afterwards)


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True,
                       timeout=30)
    assert r.returncode == 0, (args, r.stderr.decode(errors="replace"))
    return r.stdout


def _self_signed(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.crt",
             "-subj", f"/CN={name}.example",
             "-addext", f"subjectAltName=DNS:{name}.example", cwd=d)


def _ca_chain(d):
    """root CA -> intermediate -> leaf mail.example; chain.crt = leaf +
    intermediate (what Let's Encrypt's fullchain.pem looks like)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-days", "2", "-keyout", "root.key",
             "-out", "root.crt", "-subj", "/CN=smtpfwd test root", cwd=d)
    (d / "int.ext").write_text(
        "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n")
    (d / "leaf.ext").write_text(
        "basicConstraints=CA:false\nsubjectAltName=DNS:mail.example\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n")
    _openssl("req", "-new", *ec, "-keyout", "int.key", "-out", "int.csr",
             "-subj", "/CN=smtpfwd test intermediate", cwd=d)
    _openssl("x509", "-req", "-in", "int.csr", "-CA", "root.crt", "-CAkey",
             "root.key", "-CAcreateserial", "-days", "2", "-extfile", "int.ext",
             "-out", "int.crt", cwd=d)
    _openssl("req", "-new", *ec, "-keyout", "leaf.key", "-out", "leaf.csr",
             "-subj", "/CN=mail.example", cwd=d)
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "int.crt", "-CAkey",
             "int.key", "-CAcreateserial", "-days", "2", "-extfile", "leaf.ext",
             "-out", "leaf.crt", cwd=d)
    (d / "chain.crt").write_bytes((d / "leaf.crt").read_bytes() +
                                  (d / "int.crt").read_bytes())


class Certs:
    def __init__(self, d):
        self.dir = d
        for name in ("a", "b"):
            _self_signed(d, name)
        _ca_chain(d)

    def crt(self, name):
        return str(self.dir / f"{name}.crt")

    def key(self, name):
        return str(self.dir / f"{name}.key")

    def der(self, name):
        return ssl.PEM_cert_to_DER_cert((self.dir / f"{name}.crt").read_text())


@pytest.fixture(scope="module")
def certs():
    d = Path(tempfile.mkdtemp(prefix="smtpfwd-tls-certs-"))
    os.chmod(d, 0o755)
    try:
        yield Certs(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def subject_of(der):
    """The subject line openssl prints for a DER certificate (for messages
    and for the check itself)."""
    pem = ssl.DER_cert_to_PEM_cert(der).encode()
    r = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem,
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


# --------------------------------------------------------------------------
# clients


def client_ctx(minimum=None, maximum=None, ciphers=None, cafile=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if ciphers:
            ctx.set_ciphers(ciphers)
        if minimum:
            ctx.minimum_version = minimum
        if maximum:
            ctx.maximum_version = maximum
    return ctx


def old_tls_ctx(version):
    """A client that offers only TLS 1.0 or 1.1 (the local OpenSSL policy
    is lowered so that it really sends such a ClientHello)."""
    return client_ctx(minimum=version, maximum=version,
                      ciphers="DEFAULT:@SECLEVEL=0")


class Conn:
    """Line-oriented SMTP client over a plain socket that can switch to TLS.
    Reads are buffered by us (MSG_PEEK does not work on TLS sockets)."""

    def __init__(self, raw):
        self.raw = raw  # conftest ClientSocket: .client_addr for the log
        self.sock = raw
        self.buf = b""

    @classmethod
    def open(cls, port):
        return cls(connect("127.0.0.1", port))

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def reply(self):
        data = b""
        while True:
            line = self.line()
            data += line
            if not line.endswith(b"\r\n") or line[3:4] != b"-":
                return data

    def cmd(self, line):
        self.send(line + b"\r\n")
        return self.reply()

    def tls(self, ctx, sni=None):
        assert self.buf == b"", f"plaintext bytes before the handshake: {self.buf!r}"
        self.sock = ctx.wrap_socket(self.raw, server_hostname=sni,
                                    suppress_ragged_eofs=False)
        return self.sock

    def rest(self):
        """Everything until EOF. Over TLS, EOF without close_notify raises
        (suppress_ragged_eofs=False), so b'' here proves a clean close."""
        data = self.buf
        self.buf = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(OSError):
            self.raw.close()


class BioTLS:
    """A TLS client on memory BIOs, so that the client's Finished and its
    first command leave in one send (a fast client; makes the server see
    both at once, deterministically). recv/sendall like a socket."""

    def __init__(self, sock, ctx, sni=None):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=sni)

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if data:
            self.inc.write(data)
        else:
            self.inc.write_eof()

    def handshake(self, first=b""):
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        if first:
            self.obj.write(first)
        self._flush()  # Finished (+ first) in one send

    def recv(self, n):
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            except ssl.SSLZeroReturnError:
                return b""

    def sendall(self, data):
        self.obj.write(data)
        self._flush()

    def shutdown_write(self):
        """Send close_notify but keep reading (TLS half-close)."""
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass  # sent; the peer's close_notify has not come yet
        self._flush()

    def close(self):
        self.sock.close()


def ehlo_lines(reply):
    lines = reply.split(b"\r\n")
    assert lines[-1] == b"", reply
    return lines[:-1]


def well_formed_250(reply):
    """A multi-line 250 reply: '250-' on every line but the last, '250 ' on
    the last."""
    lines = ehlo_lines(reply)
    assert all(l.startswith(b"250-") for l in lines[:-1]), reply
    assert lines[-1].startswith(b"250 ") or lines[-1] == b"250", reply
    return lines


def starttls_count(reply):
    """Lines whose EHLO keyword (first word) is STARTTLS, any case."""
    return sum(1 for l in ehlo_lines(reply)[1:]
               if (l[4:].split() or [b""])[0].upper() == b"STARTTLS")


def open_implicit(port, ctx=None, sni=None):
    c = Conn.open(port)
    c.tls(ctx or client_ctx(), sni)
    return c


def open_starttls(port, ctx=None, sni=None, helo=b"client.example"):
    """Greeting, EHLO, STARTTLS, handshake. Returns (conn, greeting,
    pre-TLS EHLO reply)."""
    c = Conn.open(port)
    greeting = c.reply()
    pre = c.cmd(b"EHLO " + helo)
    assert c.cmd(b"STARTTLS") == READY
    c.tls(ctx or client_ctx(), sni)
    return c, greeting, pre


class SNI_SMTP_SSL(smtplib.SMTP_SSL):
    """SMTP_SSL that sends a chosen SNI name (smtplib would send the host,
    and no SNI at all for an IP address)."""

    def __init__(self, sni, *args, **kw):
        self._sni = sni
        super().__init__(*args, **kw)

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout,
                                        self.source_address)
        return self.context.wrap_socket(sock, server_hostname=self._sni)


def client_of(smtp):
    name = smtp.sock.getsockname()
    return fmt_addr(name[0], name[1])


# --------------------------------------------------------------------------
# backends


class Recorder:
    """A Python SMTP backend that records every line it receives (commands
    and message lines) and keeps the connections, so a test can write
    unsolicited bytes into them."""

    def __init__(self, ehlo=(b"250-rec.example", b"250-PIPELINING",
                             b"250 8BITMIME"), starttls_reply=None):
        self.ehlo = b"".join(l + b"\r\n" for l in ehlo)
        self.starttls_reply = starttls_reply
        self.lines = []
        self.conns = []
        self.lock = threading.Lock()

    def seen(self):
        with self.lock:
            return list(self.lines)

    def __call__(self, conn, buffered=b""):
        with self.lock:
            self.conns.append(conn)
        conn.sendall(b"220 rec.example ESMTP\r\n")
        buf = buffered
        in_data = False
        while True:
            while b"\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return "eof"
                buf += chunk
            line, buf = buf.split(b"\r\n", 1)
            with self.lock:
                self.lines.append(line)
            if in_data:
                if line == b".":
                    in_data = False
                    conn.sendall(b"250 2.0.0 Ok: queued\r\n")
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(self.ehlo)
            elif verb == b"HELO":
                conn.sendall(b"250 rec.example\r\n")
            elif verb == b"DATA":
                in_data = True
                conn.sendall(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 2.0.0 Bye\r\n")
                return "quit"
            elif verb == b"AUTH":
                conn.sendall(b"235 2.7.0 Authentication successful\r\n")
            elif line.upper() == b"STARTTLS" and self.starttls_reply:
                conn.sendall(self.starttls_reply)
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                conn.sendall(b"250 2.0.0 Ok\r\n")
            else:
                conn.sendall(b"500 5.5.2 Error: command not recognized\r\n")


def tcp_queues(local_port, remote_port):
    """(tx_queue, rx_queue) of the loopback IPv4 socket local_port ->
    remote_port, from /proc/net/tcp; None when there is none."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            lport = int(fields[1].rsplit(":", 1)[1], 16)
            rport = int(fields[2].rsplit(":", 1)[1], 16)
            if lport == local_port and rport == remote_port and fields[3] == "01":
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


# --------------------------------------------------------------------------
# daemon helpers


def tls_forward(smtpfwd, backends, mode, certs, names=("a",), **opts):
    if "proxy_protocol" not in opts:
        # these backends are meant to see the proxy as the client
        opts.setdefault("client_identity", "none")
    return smtpfwd.forward(backends, tls=mode,
                           tls_cert=[certs.crt(n) for n in names],
                           tls_key=[certs.key(n) for n in names], **opts)


def assert_tls_failed(s, *needles):
    assert s["result"] == "tls_failed", s
    assert s["reason"].startswith("TLS handshake: "), s
    for n in needles:
        assert n in s["reason"], f"{n!r} not in reason: {s}"
    assert s["tls"] == "no", s


def assert_daemon_serves(d, certs, name="a"):
    """A normal implicit-TLS client still gets through after a failure."""
    c = open_implicit(d.port)
    try:
        assert c.reply().startswith(b"220 "), "no greeting over TLS"
        assert c.sock.getpeercert(binary_form=True) == certs.der(name)
        assert c.cmd(b"QUIT").startswith(b"221")
    finally:
        c.close()


# ==========================================================================
# implicit TLS


def test_implicit_delivers_to_smtp_sink(smtpfwd, smtp_sink, certs):
    sink = smtp_sink(hostname=SINK_HOST)
    d = tls_forward(smtpfwd, [sink.addr], "implicit", certs)
    s = SNI_SMTP_SSL("a.example", "127.0.0.1", d.port,
                     local_hostname="tls-client.example", timeout=IO_TIMEOUT,
                     context=client_ctx())
    client = client_of(s)
    version, cipher = s.sock.version(), s.sock.cipher()[0]
    code, _ = s.ehlo()
    assert code == 250
    refused = s.sendmail("a@client.example", ["b@mx.test.example"], MESSAGE)
    assert refused == {}
    s.quit()
    rec = d.session_for(client)
    assert rec["result"] == "forwarded", rec
    assert rec["tls"] == version == "TLSv1.3", rec
    assert rec["cipher"] == cipher, rec
    assert rec["sni"] == "a.example", rec
    assert rec["greeting"] == f"220 {SINK_HOST} ESMTP", rec
    assert rec["helo"] == "tls-client.example", rec
    assert rec["backend"] == sink.addr, rec
    assert int(rec["bytes_up"]) > len(MESSAGE), rec


def test_implicit_session_without_sni_has_no_sni_key(smtpfwd, smtp_sink, certs):
    sink = smtp_sink(hostname=SINK_HOST)
    d = tls_forward(smtpfwd, [sink.addr], "implicit", certs)
    # smtplib sends no SNI for an IP address
    s = smtplib.SMTP_SSL("127.0.0.1", d.port, local_hostname="nosni.example",
                         timeout=IO_TIMEOUT, context=client_ctx())
    client = client_of(s)
    s.ehlo()
    assert s.sendmail("a@client.example", ["b@mx.test.example"], MESSAGE) == {}
    s.quit()
    rec = d.session_for(client)
    assert rec["result"] == "forwarded", rec
    assert rec["tls"] == "TLSv1.3", rec
    assert "sni" not in rec, rec
    assert rec["helo"] == "nosni.example", rec


def test_implicit_tls12_client_accepted_by_default(smtpfwd, smtp_sink, certs):
    sink = smtp_sink(hostname=SINK_HOST)
    d = tls_forward(smtpfwd, [sink.addr], "implicit", certs)
    ctx = client_ctx(maximum=ssl.TLSVersion.TLSv1_2)
    c = open_implicit(d.port, ctx)
    try:
        assert c.sock.version() == "TLSv1.2"
        cipher = c.sock.cipher()[0]
        assert c.reply() == f"220 {SINK_HOST} ESMTP\r\n".encode()
        assert c.cmd(b"QUIT").startswith(b"221")
    finally:
        c.close()
    rec = d.session_for(c.raw)
    assert rec["tls"] == "TLSv1.2", rec
    assert rec["cipher"] == cipher, rec


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1],
                         ids=["TLSv1.0", "TLSv1.1"])
def test_implicit_refuses_old_tls(smtpfwd, backend, certs, version):
    rec_b = Recorder()
    b = backend(rec_b)
    d = tls_forward(smtpfwd, [b.addr], "implicit", certs)
    raw = connect("127.0.0.1", d.port)
    try:
        with pytest.raises(ssl.SSLError):
            old_tls_ctx(version).wrap_socket(raw, server_hostname=None)
    finally:
        raw.close()
    s = d.session_for(raw)
    # the server refused the version (not a client-side failure)
    assert_tls_failed(s, "unsupported protocol")
    assert s["backend"] == "-", s
    assert b.accepted == 0
    assert_daemon_serves(d, certs)


def test_tls_protocols_tlsv13_refuses_tls12_client(smtpfwd, backend, certs):
    b = backend(Recorder())
    d = tls_forward(smtpfwd, [b.addr], "implicit", certs, tls_protocols="TLSv1.3")
    raw = connect("127.0.0.1", d.port)
    try:
        with pytest.raises(ssl.SSLError):
            client_ctx(maximum=ssl.TLSVersion.TLSv1_2).wrap_socket(raw)
    finally:
        raw.close()
    assert_tls_failed(d.session_for(raw), "unsupported protocol")
    # a TLS 1.3 client is fine
    c = open_implicit(d.port)
    try:
        assert c.sock.version() == "TLSv1.3"
        assert c.reply() == b"220 rec.example ESMTP\r\n"
        assert c.cmd(b"QUIT").startswith(b"221")
    finally:
        c.close()
    assert d.session_for(c.raw)["tls"] == "TLSv1.3"


def test_tls_ciphers_restricts_tls12_ciphers(smtpfwd, backend, certs):
    b = backend(Recorder())
    d = tls_forward(smtpfwd, [b.addr], "implicit", certs,
                    tls_ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")
    tls12 = ssl.TLSVersion.TLSv1_2
    ctx = client_ctx(maximum=tls12,
                     ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
    c = open_implicit(d.port, ctx)
    try:
        assert c.sock.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
        assert c.reply().startswith(b"220 ")
        assert c.cmd(b"QUIT").startswith(b"221")
    finally:
        c.close()
    assert d.session_for(c.raw)["cipher"] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    raw = connect("127.0.0.1", d.port)
    try:
        with pytest.raises(ssl.SSLError):
            client_ctx(maximum=tls12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"
                       ).wrap_socket(raw)
    finally:
        raw.close()
    assert_tls_failed(d.session_for(raw), "no shared cipher")


def test_plaintext_to_implicit_port_fails_and_daemon_keeps_serving(smtpfwd, backend, certs):
    b = backend(Recorder())
    d = tls_forward(smtpfwd, [b.addr], "implicit", certs)
    with connect("127.0.0.1", d.port) as c:
        c.sendall(b"EHLO plain.example\r\n")
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                got += chunk
    # at most a TLS alert record comes back, never SMTP
    assert not got.startswith(b"2") and b"rec.example" not in got, got
    s = d.session_for(c)
    assert_tls_failed(s)
    assert "timed out" not in s["reason"] and "closed" not in s["reason"], s
    assert s["backend"] == "-", s
    assert b.accepted == 0
    assert d.proc.poll() is None
    assert_daemon_serves(d, certs)


def test_handshake_timeout(smtpfwd, backend, certs):
    b = backend(Recorder())
    d = tls_forward(smtpfwd, [b.addr], "implicit", certs, idle_timeout=2)
    t0 = time.monotonic()
    with connect("127.0.0.1", d.port) as c:
        assert c.recv(1) == b""  # closed by the proxy, silent client
    elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed < 6, f"closed after {elapsed:.2f}s, idle_timeout = 2"
    s = d.session_for(c)
    assert_tls_failed(s, "timed out")
    assert b.accepted == 0
    assert_daemon_serves(d, certs)


def test_implicit_close_notify_after_quit(smtpfwd, smtp_sink, certs):
    sink = smtp_sink(hostname=SINK_HOST)
    d = tls_forward(smtpfwd, [sink.addr], "implicit", certs)
    c = open_implicit(d.port, sni="a.example")
    try:
        assert c.reply().startswith(b"220 ")
        assert c.cmd(b"EHLO closer.example").startswith(b"250")
        assert c.cmd(b"QUIT").startswith(b"221")
        # the backend closed after 221: the proxy ends TLS with close_notify
        # (a bare TCP FIN would raise SSLEOFError here)
        assert c.rest() == b""
    finally:
        c.close()
    s = d.session_for(c.raw)
    assert s["result"] == "forwarded", s
    assert s["tls"] == "TLSv1.3", s


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_client_close_notify_is_a_half_close(smtpfwd, backend, certs, mode):
    """The client's close_notify reaches the backend as EOF (shutdown
    SHUT_WR) after the data before it; the backend's answer after that EOF
    still reaches the client inside TLS, then close_notify."""
    def handler(conn):
        conn.sendall(b"220 hc.example ESMTP\r\n")
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.endswith(b"EHLO client.example\r\n"):
                conn.sendall(b"250 hc.example\r\n")
        conn.sendall(b"250 2.0.0 got %d bytes before EOF\r\n" % len(data))
        return data
    b = backend(handler)
    d = tls_forward(smtpfwd, [b.addr], mode, certs)
    pre = b"EHLO client.example\r\n" if mode == "starttls" else b""
    c = Conn.open(d.port)
    try:
        if mode == "starttls":
            assert c.reply() == b"220 hc.example ESMTP\r\n"
            assert c.cmd(b"EHLO client.example") == (b"250-hc.example\r\n"
                                                     b"250 STARTTLS\r\n")
            assert c.cmd(b"STARTTLS") == READY
        bio = BioTLS(c.raw, client_ctx())
        bio.handshake()
        c.sock = bio
        if mode == "implicit":
            assert c.reply() == b"220 hc.example ESMTP\r\n"
        bio.sendall(b"NOOP\r\n")
        bio.shutdown_write()
        assert c.rest() == b"250 2.0.0 got %d bytes before EOF\r\n" % (len(pre) + 6)
    finally:
        c.close()
    assert b.wait_results(1) == [pre + b"NOOP\r\n"]
    s = d.session_for(c.raw)
    assert s["result"] == "forwarded", s
    assert s["tls"] == "TLSv1.3", s


# ==========================================================================
# SNI and certificate files


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_sni_selects_certificate(smtpfwd, backend, certs, mode):
    b = backend(Recorder())
    d = tls_forward(smtpfwd, [b.addr], mode, certs, names=("a", "b"))
    cases = [("b.example", "b"), ("a.example", "a"), (None, "a"),
             ("unknown.example", "a")]
    for sni, expect in cases:
        if mode == "implicit":
            c = open_implicit(d.port, sni=sni)
            assert c.reply().startswith(b"220 ")
        else:
            c, _, _ = open_starttls(d.port, sni=sni)
        try:
            der = c.sock.getpeercert(binary_form=True)
            assert subject_of(der) == f"subject=CN = {expect}.example", (sni, mode)
            assert der == certs.der(expect), (sni, mode)
            assert c.cmd(b"QUIT").startswith(b"221")
        finally:
            c.close()
        s = d.session_for(c.raw)
        assert s["result"] == "forwarded", s
        if sni is None:
            assert "sni" not in s, s
        else:
            assert s["sni"] == sni, s


def test_certificate_chain_file_is_sent(smtpfwd, backend, certs):
    """tls_cert may be a chain (leaf + intermediate): a client that trusts
    only the root verifies mail.example (Python, and openssl s_client with
    -starttls smtp)."""
    b = backend(Recorder())
    d = smtpfwd.forward([b.addr], tls="starttls", tls_cert=certs.crt("chain"),
                        tls_key=certs.key("leaf"), client_identity="none")
    ctx = client_ctx(cafile=certs.crt("root"))
    c, _, _ = open_starttls(d.port, ctx=ctx, sni="mail.example")
    try:
        assert c.sock.getpeercert()["subject"] == ((("commonName", "mail.example"),),)
        assert c.cmd(b"QUIT").startswith(b"221")
    finally:
        c.close()
    r = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{d.port}",
         "-starttls", "smtp", "-servername", "mail.example",
         "-CAfile", certs.crt("root"), "-verify_return_error",
         "-verify_hostname", "mail.example", "-showcerts"],
        input=b"QUIT\r\n", capture_output=True, timeout=20)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in out, out
    assert out.count("-----BEGIN CERTIFICATE-----") == 2, out


# ==========================================================================
# STARTTLS


def test_starttls_delivers_to_smtp_sink(smtpfwd, smtp_sink, certs):
    sink = smtp_sink(hostname=SINK_HOST)
    d = tls_forward(smtpfwd, [sink.addr], "starttls", certs)
    s = smtplib.SMTP("127.0.0.1", d.port, local_hostname="st-client.example",
                     timeout=IO_TIMEOUT)
    client = client_of(s)
    s.ehlo()
    assert s.has_extn("starttls"), s.esmtp_features
    code, msg = s.starttls(context=client_ctx())
    assert (code, msg) == (220, b"2.0.0 Ready to start TLS")
    version, cipher = s.sock.version(), s.sock.cipher()[0]
    s.ehlo()
    assert not s.has_extn("starttls"), s.esmtp_features
    assert s.has_extn("pipelining")  # the backend's own features survive
    assert s.sendmail("a@client.example", ["b@mx.test.example"], MESSAGE) == {}
    s.quit()
    rec = d.session_for(client)
    assert rec["result"] == "forwarded", rec
    assert rec["tls"] == version == "TLSv1.3", rec
    assert rec["cipher"] == cipher, rec
    assert rec["greeting"] == f"220 {SINK_HOST} ESMTP", rec
    assert rec["helo"] == "st-client.example", rec


@pytest.mark.parametrize("backend_ehlo", [
    (b"250-rec.example", b"250-PIPELINING", b"250-SIZE 10240000", b"250 8BITMIME"),
    (b"250 rec.example",),
    (b"250-rec.example", b"250-PIPELINING", b"250 "),  # empty last line, like smtp-sink
], ids=["multiline", "oneline", "empty-last"])
def test_starttls_advertised_exactly_once(smtpfwd, backend, certs, backend_ehlo):
    rec = Recorder(ehlo=backend_ehlo)
    b = backend(rec)
    d = tls_forward(smtpfwd, [b.addr], "starttls", certs)
    c = Conn.open(d.port)
    try:
        assert c.reply() == b"220 rec.example ESMTP\r\n"
        pre = c.cmd(b"EHLO client.example")
        lines = well_formed_250(pre)
        assert starttls_count(pre) == 1, pre
        # every non-empty backend feature is still there, in order
        feats = [l[4:] for l in lines if l[4:].strip().upper() != b"STARTTLS"]
        want = [l[4:] for l in backend_ehlo if l[4:].strip()]
        assert feats == want, pre
        assert c.cmd(b"STARTTLS") == READY
        c.tls(client_ctx())
        post = c.cmd(b"EHLO client.example")
        well_formed_250(post)
        assert starttls_count(post) == 0, post
        assert [l[4:] for l in ehlo_lines(post) if l[4:].strip()] == want, post
        assert c.cmd(b"QUIT").startswith(b"221")
        assert c.rest() == b""
    finally:
        c.close()
    b.wait_results(1)
    # the backend saw both EHLOs in plaintext, never STARTTLS
    assert rec.seen() == [b"EHLO client.example", b"EHLO client.example", b"QUIT"]
    s = d.session_for(c.raw)
    assert s["result"] == "forwarded", s
    assert s["tls"] == "TLSv1.3", s


@pytest.mark.parametrize("position", ["middle", "last", "lowercase-with-param"])
def test_backend_starttls_not_duplicated(smtpfwd, backend, certs, position):
    ehlo = {
        "middle": (b"250-rec.example", b"250-STARTTLS", b"250 8BITMIME"),
        "last": (b"250-rec.example", b"250-8BITMIME", b"250 STARTTLS"),
        "lowercase-with-param": (b"250-rec.example", b"250-starttls x",
                                 b"250 8BITMIME"),
    }[position]
    rec = Recorder(ehlo=ehlo, starttls_reply=b"220 backend would do TLS\r\n")
    b = backend(rec)
    d = tls_forward(smtpfwd, [b.addr], "starttls", certs)
    c = Conn.open(d.port)
    try:
        c.reply()
        pre = c.cmd(b"EHLO client.example")
        well_formed_250(pre)
        assert starttls_count(pre) == 1, pre
        assert b"8BITMIME" in pre
        assert c.cmd(b"STARTTLS") == READY
        c.tls(client_ctx())
        post = c.cmd(b"EHLO again.example")
        well_formed_250(post)
        assert starttls_count(post) == 0, post
        assert b"8BITMIME" in post and b"rec.example" in post, post
        assert c.cmd(b"NOOP") == b"250 2.0.0 Ok\r\n"
        # every later EHLO reply loses the backend's STARTTLS, too
        third = c.cmd(b"EHLO third.example")
        well_formed_250(third)
        assert starttls_count(third) == 0, third
        assert c.cmd(b"QUIT").startswith(b"221")
    finally:
        c.close()
    b.wait_results(1)
    seen = rec.seen()
    assert seen == [b"EHLO client.example", b"EHLO again.example", b"NOOP",
                    b"EHLO third.example", b"QUIT"], seen


@pytest.mark.parametrize("pipelined", [b"MAIL FROM:<evil@x>", b"RSET"])
def test_starttls_command_injection_discarded(smtpfwd, backend, certs, pipelined):
    rec = Recorder()
    b = backend(rec)
    d = tls_forward(smtpfwd, [b.addr], "starttls", certs)
    c = Conn.open(d.port)
    try:
        c.reply()
        c.cmd(b"EHLO client.example")
        c.send(b"STARTTLS\r\n" + pipelined + b"\r\n")  # one send
        assert c.line() == READY
        c.tls(client_ctx())  # asserts nothing else came in plaintext
        post = c.cmd(b"EHLO client.example")
        assert post.startswith(b"250-rec.example\r\n"), post
        well_formed_250(post)
        # the next reply answers QUIT: nothing answered the injected line
        assert c.cmd(b"QUIT") == b"221 2.0.0 Bye\r\n"
        assert c.rest() == b""
    finally:
        c.close()
    b.wait_results(1)
    seen = rec.seen()
    assert pipelined not in seen, seen
    assert seen == [b"EHLO client.example", b"EHLO client.example", b"QUIT"], seen


@pytest.mark.parametrize("when", ["before-starttls", "during-handshake"])
def test_unsolicited_backend_bytes_not_sent_inside_tls(smtpfwd, backend, certs, when):
    """Backend bytes nobody asked for, arriving before the handshake is
    done, must not reach the client inside TLS as if they answered the
    post-TLS EHLO."""
    rec = Recorder()
    b = backend(rec)
    d = tls_forward(smtpfwd, [b.addr], "starttls", certs)
    evil = b"250-evil.example\r\n250 AUTH PLAIN\r\n"
    c = Conn.open(d.port)
    try:
        c.reply()
        c.cmd(b"EHLO client.example")
        wait_for(lambda: rec.conns, IO_TIMEOUT, "backend connection")
        bconn = rec.conns[0]
        bport = bconn.getsockname()[1]
        pport = bconn.getpeername()[1]  # the proxy's side of it

        def inject():
            bconn.sendall(evil)
            # delivered into the proxy's socket (acknowledged by its kernel)
            wait_for(lambda: (tcp_queues(bport, pport) or (1, 0))[0] == 0,
                     IO_TIMEOUT, "unsolicited bytes to reach the proxy")

        if when == "before-starttls":
            inject()
            # the proxy reads (and drops) them while it waits for a command
            wait_for(lambda: (tcp_queues(pport, bport) or (0, 1))[1] == 0,
                     IO_TIMEOUT, "the proxy to read the unsolicited bytes")
        c.send(b"STARTTLS\r\n")
        assert c.line() == READY
        if when == "during-handshake":
            inject()
        assert c.buf == b""
        bio = BioTLS(c.raw, client_ctx())
        bio.handshake(first=b"EHLO client.example\r\n")
        c.sock = bio
        post = c.reply()
        assert b"evil" not in post, post
        assert post.startswith(b"250-rec.example\r\n"), post
        assert c.cmd(b"QUIT") == b"221 2.0.0 Bye\r\n"
        tail = c.rest()
        assert b"evil" not in tail, tail
    finally:
        c.close()


def test_starttls_with_argument_and_repeat_answered_by_proxy(smtpfwd, backend, certs):
    """STARTTLS with an argument is a syntax error (no TLS); STARTTLS as the
    first command inside TLS is refused; neither reaches the backend."""
    rec = Recorder()
    b = backend(rec)
    d = tls_forward(smtpfwd, [b.addr], "starttls", certs)
    c = Conn.open(d.port)
    try:
        c.reply()
        c.cmd(b"EHLO client.example")
        assert c.cmd(b"STARTTLS now").startswith(b"501 ")
        assert c.cmd(b"STARTTLS") == READY
        c.tls(client_ctx())
        again = c.cmd(b"STARTTLS")
        assert again.startswith(b"554 "), again
        assert c.cmd(b"EHLO client.example").startswith(b"250-rec.example")
        assert c.cmd(b"QUIT").startswith(b"221")
    finally:
        c.close()
    b.wait_results(1)
    seen = rec.seen()
    assert seen == [b"EHLO client.example", b"EHLO client.example", b"QUIT"], seen


def test_starttls_after_post_tls_ehlo_not_forwarded(smtpfwd, backend, certs):
    """RFC 3207: a client must not start TLS twice. A STARTTLS after the
    post-TLS EHLO must not reach a backend that does STARTTLS itself (it
    would answer 220 and wait for a handshake inside the tunnel); the
    proxy refuses it like the one before EHLO."""
    rec = Recorder(ehlo=(b"250-rec.example", b"250 STARTTLS"),
                   starttls_reply=b"220 2.0.0 backend ready\r\n")
    b = backend(rec)
    d = tls_forward(smtpfwd, [b.addr], "starttls", certs)
    c, _, _ = open_starttls(d.port)
    try:
        assert c.cmd(b"EHLO client.example").startswith(b"250")
        again = c.cmd(b"STARTTLS")
        assert again.startswith(b"5"), again
    finally:
        c.close()
    b.wait_results(1)
    seen = rec.seen()
    assert b"STARTTLS" not in [l.upper() for l in seen], seen


def test_tls_required_refuses_mail_before_starttls(smtpfwd, backend, certs):
    rec = Recorder()
    b = backend(rec)
    d = tls_forward(smtpfwd, [b.addr], "starttls", certs, tls_required="yes")
    refused = [b"MAIL FROM:<a@client.example>", b"RCPT TO:<b@rec.example>",
               b"DATA", b"AUTH PLAIN AGFAYg==", b"mail from:<lower@client.example>",
               b" MAIL FROM:<space@client.example>"]
    c = Conn.open(d.port)
    try:
        c.reply()
        pre = c.cmd(b"EHLO client.example")
        assert starttls_count(pre) == 1, pre
        for line in refused:
            assert c.cmd(line) == MUST, line
        assert c.cmd(b"NOOP") == b"250 2.0.0 Ok\r\n"  # others still relayed
        assert c.cmd(b"STARTTLS") == READY
        c.tls(client_ctx())
        c.cmd(b"EHLO client.example")
        assert c.cmd(b"AUTH PLAIN AGFAYg==").startswith(b"235")
        assert c.cmd(b"MAIL FROM:<a@client.example>") == b"250 2.0.0 Ok\r\n"
        assert c.cmd(b"RCPT TO:<b@rec.example>") == b"250 2.0.0 Ok\r\n"
        assert c.cmd(b"DATA").startswith(b"354")
        assert c.cmd(MESSAGE + b".") == b"250 2.0.0 Ok: queued\r\n"
        assert c.cmd(b"QUIT").startswith(b"221")
        assert c.rest() == b""
    finally:
        c.close()
    b.wait_results(1)
    seen = rec.seen()
    body = MESSAGE.rstrip(b"\r\n").split(b"\r\n")
    assert seen == ([b"EHLO client.example", b"NOOP", b"EHLO client.example",
                     b"AUTH PLAIN AGFAYg==", b"MAIL FROM:<a@client.example>",
                     b"RCPT TO:<b@rec.example>", b"DATA"] + body +
                    [b".", b"QUIT"]), seen
    s = d.session_for(c.raw)
    assert s["result"] == "forwarded", s
    assert s["tls"] == "TLSv1.3", s


def test_tls_required_smtplib_starttls_delivers(smtpfwd, smtp_sink, certs):
    sink = smtp_sink(hostname=SINK_HOST)
    d = tls_forward(smtpfwd, [sink.addr], "starttls", certs, tls_required="yes")
    s = smtplib.SMTP("127.0.0.1", d.port, local_hostname="req.example",
                     timeout=IO_TIMEOUT)
    client = client_of(s)
    s.ehlo()
    code, msg = s.mail("a@client.example")
    assert (code, msg) == (530, b"5.7.0 Must issue a STARTTLS command first")
    s.rset()
    s.starttls(context=client_ctx())
    assert s.sendmail("a@client.example", ["b@mx.test.example"], MESSAGE) == {}
    s.quit()
    rec = d.session_for(client)
    assert rec["result"] == "forwarded", rec
    assert rec["tls"] == "TLSv1.3", rec


def test_tls_not_required_plaintext_mail_goes_through(smtpfwd, smtp_sink, certs):
    sink = smtp_sink(hostname=SINK_HOST)
    d = tls_forward(smtpfwd, [sink.addr], "starttls", certs, tls_required="no")
    s = smtplib.SMTP("127.0.0.1", d.port, local_hostname="plain.example",
                     timeout=IO_TIMEOUT)
    client = client_of(s)
    s.ehlo()
    assert s.has_extn("starttls")
    assert s.sendmail("a@client.example", ["b@mx.test.example"], MESSAGE) == {}
    # after MAIL the proxy relays blindly: later commands still work
    code, _ = s.noop()
    assert code == 250
    s.quit()
    rec = d.session_for(client)
    assert rec["result"] == "forwarded", rec
    assert rec["tls"] == "no", rec
    assert rec["helo"] == "plain.example", rec
    assert rec["greeting"] == f"220 {SINK_HOST} ESMTP", rec


def test_starttls_close_notify_after_quit(smtpfwd, smtp_sink, certs):
    sink = smtp_sink(hostname=SINK_HOST)
    d = tls_forward(smtpfwd, [sink.addr], "starttls", certs)
    c, greeting, _ = open_starttls(d.port)
    try:
        assert greeting == f"220 {SINK_HOST} ESMTP\r\n".encode()
        assert c.cmd(b"EHLO client.example").startswith(b"250")
        assert c.cmd(b"QUIT").startswith(b"221")
        assert c.rest() == b""  # close_notify, not a bare FIN
    finally:
        c.close()
    s = d.session_for(c.raw)
    assert s["result"] == "forwarded", s
    assert s["tls"] == "TLSv1.3", s


# ==========================================================================
# PROXY protocol v2 with the SSL TLV


def read_v2(conn):
    buf = b""
    while len(buf) < 16 or len(buf) < 16 + struct.unpack("!H", buf[14:16])[0]:
        chunk = conn.recv(65536)
        if not chunk:
            raise AssertionError(f"EOF inside the PROXY header: {buf!r}")
        buf += chunk
        if len(buf) >= 12 and not buf.startswith(V2_SIG):
            raise AssertionError(f"no v2 signature: {buf[:32]!r}")
    total = 16 + struct.unpack("!H", buf[14:16])[0]
    return buf[:total], buf[total:]


def parse_tlvs(data):
    out = []
    i = 0
    while i < len(data):
        assert i + 3 <= len(data), f"truncated TLV at {i}: {data!r}"
        t, n = data[i], struct.unpack("!H", data[i + 1:i + 3])[0]
        assert i + 3 + n <= len(data), f"TLV {t:#x} overruns: {data!r}"
        out.append((t, data[i + 3:i + 3 + n]))
        i += 3 + n
    return out


def test_proxy_v2_carries_ssl_tlv(smtpfwd, backend, certs):
    headers = []
    rec = Recorder()

    def handler(conn):
        hdr, rest = read_v2(conn)
        headers.append(hdr)
        return rec(conn, rest)
    b = backend(handler)
    d = tls_forward(smtpfwd, [b.addr], "implicit", certs, proxy_protocol="v2")
    c = open_implicit(d.port, sni="a.example")
    try:
        assert c.reply() == b"220 rec.example ESMTP\r\n"
        version, cipher = c.sock.version(), c.sock.cipher()[0]
        assert c.cmd(b"QUIT").startswith(b"221")
    finally:
        c.close()
    b.wait_results(1)
    hdr = headers[0]
    assert hdr[12] == 0x21, hdr  # version 2, PROXY
    assert hdr[13] == 0x11, hdr  # TCP over IPv4
    body = hdr[16:]
    src, dst = socket.inet_ntoa(body[0:4]), socket.inet_ntoa(body[4:8])
    sport, dport = struct.unpack("!HH", body[8:12])
    assert fmt_addr(src, sport) == c.raw.client_addr
    assert (dst, dport) == ("127.0.0.1", d.port)
    tlvs = parse_tlvs(body[12:])
    ssl_tlvs = [v for t, v in tlvs if t == 0x20]
    assert len(ssl_tlvs) == 1, tlvs
    v = ssl_tlvs[0]
    assert v[0] & 0x01, f"PP2_CLIENT_SSL not set: {v!r}"
    assert not v[0] & 0x06, f"client-certificate bits set without one: {v!r}"
    subs = dict(parse_tlvs(v[5:]))
    assert subs.get(0x21) == version.encode() == b"TLSv1.3", subs
    assert subs.get(0x23) == cipher.encode(), subs
    top = dict(tlvs)
    assert top.get(0x02) == b"a.example", tlvs  # PP2_TYPE_AUTHORITY = SNI
    s = d.session_for(c.raw)
    assert s["result"] == "forwarded", s


# ==========================================================================
# configuration check (-t) and refusal to start


def run_check(workdir, text):
    path = Path(workdir) / "check.ini"
    path.write_text(text)
    r = subprocess.run([BIN, "-t", "-c", str(path)], capture_output=True,
                       timeout=20, stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout.decode(errors="replace"), \
        r.stderr.decode(errors="replace"), str(path)


def tls_ini(cert, key, **extra):
    fwd = {"listen": f"127.0.0.1:{free_port()}", "backend": "127.0.0.1:2525",
           "tls": "implicit", "tls_cert": cert, "tls_key": key,
           "client_identity": "none"}
    fwd.update(extra)
    return ini({}, {"t": fwd})


def error_lines(path, stderr):
    return [l for l in stderr.splitlines()
            if re.match(re.escape(path) + r":\d+: ", l)]


def test_check_valid_pair(workdir, certs):
    rc, out, err, _ = run_check(workdir, tls_ini(certs.crt("a"), certs.key("a")))
    assert rc == 0, err
    assert "ok" in (out + err).lower()
    rc, _, err, _ = run_check(workdir, tls_ini(
        f"{certs.crt('a')}, {certs.crt('b')}", f"{certs.key('a')}, {certs.key('b')}"))
    assert rc == 0, err


def test_check_key_mismatch(workdir, certs, smtpfwd):
    text = tls_ini(certs.crt("a"), certs.key("b"))
    rc, _, err, path = run_check(workdir, text)
    assert rc == 1, err
    lines = error_lines(path, err)
    assert lines, err
    assert any(re.search(r"mismatch|does not match|not match", l, re.I) for l in lines), err
    # the daemon refuses to start on the same error
    d = smtpfwd.start(text, wait_ready=False)
    assert d.wait_exit() != 0, d.describe()
    assert not d.events("ready"), d.describe()


def test_check_key_mismatch_in_list(workdir, certs):
    rc, _, err, path = run_check(workdir, tls_ini(
        f"{certs.crt('a')}, {certs.crt('b')}", f"{certs.key('a')}, {certs.key('a')}"))
    assert rc != 0, err
    assert error_lines(path, err), err


def test_check_missing_cert(workdir, certs):
    missing = str(Path(workdir) / "nope.crt")
    rc, _, err, path = run_check(workdir, tls_ini(missing, certs.key("a")))
    assert rc != 0, err
    lines = error_lines(path, err)
    assert any("nope.crt" in l for l in lines), err


def test_check_list_length_mismatch(workdir, certs):
    rc, _, err, path = run_check(workdir, tls_ini(
        f"{certs.crt('a')}, {certs.crt('b')}", certs.key("a")))
    assert rc != 0, err
    assert error_lines(path, err), err


def test_check_bad_tls_protocols(workdir, certs):
    rc, _, err, path = run_check(workdir, tls_ini(
        certs.crt("a"), certs.key("a"), tls_protocols="TLSv1.1"))
    assert rc != 0, err
    assert any("tls_protocols" in l for l in error_lines(path, err)), err


# ==========================================================================
# SIGHUP re-reads certificates


def test_sighup_reloads_certificate(smtpfwd, backend, certs, workdir):
    b = backend(Recorder())
    live_crt, live_key = Path(workdir) / "live.crt", Path(workdir) / "live.key"
    shutil.copy(certs.crt("a"), live_crt)
    shutil.copy(certs.key("a"), live_key)
    d = smtpfwd.forward([b.addr], tls="implicit", tls_cert=str(live_crt),
                        tls_key=str(live_key), client_identity="none")

    def peer_der():
        c = open_implicit(d.port)
        try:
            assert c.reply() == b"220 rec.example ESMTP\r\n"
            der = c.sock.getpeercert(binary_form=True)
            assert c.cmd(b"QUIT").startswith(b"221")
            return der
        finally:
            c.close()

    def reloads(level):
        return [r for r in d.events("reload") if r.get("level") == level]

    assert peer_der() == certs.der("a")
    # a session open across the reload keeps working
    held = open_implicit(d.port)
    assert held.reply().startswith(b"220 ")
    # renew: new files on disk (written aside, then renamed, like certbot)
    for src, dst in ((certs.crt("b"), live_crt), (certs.key("b"), live_key)):
        tmp = dst.with_suffix(".new")
        shutil.copy(src, tmp)
        os.replace(tmp, dst)
    n = len(reloads("info"))
    d.signal(signal.SIGHUP)
    wait_for(lambda: len(reloads("info")) > n, IO_TIMEOUT, "the reload log line")
    der = peer_der()
    assert der == certs.der("b"), subject_of(der)
    assert held.cmd(b"NOOP") == b"250 2.0.0 Ok\r\n"
    assert held.cmd(b"QUIT").startswith(b"221")
    held.close()
    # a broken renewal (key of another certificate) is refused; the running
    # certificate stays
    shutil.copy(certs.key("a"), live_key)
    e = len(reloads("error"))
    d.signal(signal.SIGHUP)
    wait_for(lambda: len(reloads("error")) > e, IO_TIMEOUT, "the reload error line")
    assert d.proc.poll() is None
    der = peer_der()
    assert der == certs.der("b"), subject_of(der)


# ==========================================================================
# swaks


@pytest.mark.skipif(not SWAKS, reason="swaks is not installed")
@pytest.mark.parametrize("mode,flag", [("starttls", "--tls"), ("implicit", "--tlsc")])
def test_swaks(smtpfwd, smtp_sink, certs, mode, flag):
    sink = smtp_sink(hostname=SINK_HOST)
    d = tls_forward(smtpfwd, [sink.addr], mode, certs)
    r = subprocess.run(
        [SWAKS, "--server", f"127.0.0.1:{d.port}", flag,
         "--from", "a@client.example", "--to", "b@mx.test.example",
         "--helo", "swaks.example", "--timeout", "10"],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    assert r.returncode == 0, out
    assert "=== TLS started with cipher TLSv1.3" in out, out
    assert "=== TLS peer DN=\"/CN=a.example\"" in out, out
    # "<~" marks replies read over TLS: the message was accepted inside TLS
    assert "<~  354 " in out and "<~  250 2.0.0 Ok" in out, out
    assert "<~  221 " in out, out
    s = d.wait_sessions(1)[0]
    assert s["result"] == "forwarded", s
    assert s["tls"].startswith("TLSv1."), s
    assert s["helo"] == "swaks.example", s


# --------------------------------------------------------------------------
# half-close during the plaintext dialogue


def held_greeter(started):
    """A backend that greets only once `started` is set, so a client can
    be made to talk first without any timing."""
    def handler(conn):
        started.wait(IO_TIMEOUT)
        try:
            conn.sendall(b"220 slow.example ESMTP\r\n")
            return conn.recv(100)
        except OSError:
            return b""
    return handler


def test_tls_required_survives_pipelining_and_half_close(smtpfwd, backend, certs):
    """A client that pipelines a whole transaction before TLS and then
    half-closes must not get it past tls_required: every command is still
    examined one by one; the EOF is passed on only after the last one."""
    rec = Recorder(ehlo=(b"250-rec.example", b"250-STARTTLS", b"250 PIPELINING"))
    b = backend(rec)
    d = tls_forward(smtpfwd, [b.addr], "starttls", certs, tls_required="yes")
    c = Conn.open(d.port)
    try:
        c.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
               b"Subject: smuggled\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        c.raw.shutdown(socket.SHUT_WR)
        got = c.rest()
    finally:
        c.close()
    assert got.count(b"530 5.7.0 Must issue a STARTTLS command first\r\n") == 3, got
    assert starttls_count(got.split(b"\r\n", 1)[1]) == 1, got   # the EHLO reply was still rewritten
    b.wait_results(1)
    seen = rec.seen()
    assert not [l for l in seen if l[:4].upper() in (b"MAIL", b"RCPT", b"DATA")], seen
    assert seen[0] == b"EHLO x" and seen[-1] == b"QUIT", seen


def test_reject_early_talkers_in_starttls_dialogue(smtpfwd, backend, certs):
    """tls = starttls: a client talking before the greeting gets 554 5.5.1."""
    started = threading.Event()
    b = backend(held_greeter(started))
    d = tls_forward(smtpfwd, [b.addr], "starttls", certs, reject_early_talkers="yes")
    c = Conn.open(d.port)
    try:
        c.send(b"EHLO bot\r\n")
        assert c.line().startswith(b"554 5.5.1 "), "early talker not refused"
    finally:
        started.set()
        c.close()
    s = d.session_for(c.raw)
    assert s["result"] == "denied" and s["early_talker"] == "yes", s


def test_reject_early_talkers_implicit_tls(smtpfwd, backend, certs):
    """tls = implicit: application data before the greeting is early."""
    started = threading.Event()
    b = backend(held_greeter(started))
    d = tls_forward(smtpfwd, [b.addr], "implicit", certs, reject_early_talkers="yes")
    c = Conn.open(d.port)
    try:
        bio = BioTLS(c.raw, client_ctx())
        bio.handshake(first=b"EHLO bot\r\n")
        c.sock = bio
        assert c.line().startswith(b"554 5.5.1 "), "early talker not refused"
    finally:
        started.set()
        c.close()
    s = d.session_for(c.raw)
    assert s["result"] == "denied" and s["early_talker"] == "yes", s


def test_patient_client_implicit_tls_with_reject_early_talkers(smtpfwd, smtp_sink, certs):
    sink = smtp_sink()
    d = tls_forward(smtpfwd, [sink.addr], "implicit", certs, reject_early_talkers="yes")
    ctx = client_ctx()
    s = smtplib.SMTP_SSL("127.0.0.1", d.port, timeout=IO_TIMEOUT, context=ctx)
    assert s.ehlo()[0] == 250
    s.quit()
