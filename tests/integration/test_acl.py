"""allow/deny (554 5.7.1), max_per_ip and max_connections (421 4.7.0), and
the proxy's own replies as real SMTP clients see them: smtplib, swaks and
Postfix's smtp-source."""

import contextlib
import re
import smtplib
import subprocess

import pytest

from conftest import (IO_TIMEOUT, SMTP_SOURCE, SWAKS, closed_port, connect,
                      have_ipv6, mini_smtp, recv_all, recv_reply)

GREETING = b"220 mini.example ESMTP\r\n"


def assert_own_reply(data, code, enh):
    """One complete SMTP reply line ending in CRLF, then EOF."""
    assert re.fullmatch(rb"%d %s [^\r\n]*\r\n" % (code, enh.encode()), data), \
        f"expected exactly one '{code} {enh} ...' reply line then EOF, got {data!r}"


def own_reply_session(d, result, client=None):
    def pred(r):
        return (r.get("event") == "session" and r.get("result") == result
                and (client is None or r.get("client") == client))
    return d.wait_record(pred, what=f"session line with result={result}")


# --------------------------------------------------------------------------
# allow / deny


def test_denied_client_gets_554_and_no_backend_connection(smtpfwd, backend):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], allow="127.0.0.0/8", deny="127.0.0.5/32")
    with connect("127.0.0.1", d.port, source="127.0.0.5") as c:
        data = recv_all(c)
    assert_own_reply(data, 554, "5.7.1")
    s = d.session_for(c)
    assert s["result"] == "denied", s
    assert s["reply"] == data[:-2].decode()
    assert s["reason"], s
    assert s["backend"] == "-", s
    assert s["pump"] == "none", s
    # another address of the allowed network is forwarded
    with connect("127.0.0.1", d.port, source="127.0.0.6") as c2:
        assert recv_reply(c2) == GREETING
        c2.sendall(b"QUIT\r\n")
        assert recv_reply(c2).startswith(b"221")
    assert d.session_for(c2)["result"] == "forwarded"
    assert b.accepted == 1, "the denied client must not cause a backend connection"


def test_allow_list_excludes_others(smtpfwd, backend):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], allow="10.0.0.0/8, 2001:db8::/32, 127.0.0.9")
    with connect("127.0.0.1", d.port) as c:
        assert_own_reply(recv_all(c), 554, "5.7.1")
    assert d.session_for(c)["result"] == "denied"
    with connect("127.0.0.1", d.port, source="127.0.0.9") as c:
        assert recv_reply(c) == GREETING
    assert b.wait_results(1) is not None
    assert b.accepted == 1


def test_deny_is_checked_before_allow(smtpfwd, backend):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], allow="127.0.0.1/32", deny="127.0.0.0/8")
    with connect("127.0.0.1", d.port) as c:
        assert_own_reply(recv_all(c), 554, "5.7.1")
    assert d.session_for(c)["result"] == "denied"
    assert b.accepted == 0


@pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback (::1)")
def test_ipv6_deny(smtpfwd, backend):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], listen_host="::1", deny="::1/128")
    with connect("::1", d.port) as c:
        data = recv_all(c)
        cport = c.getsockname()[1]
    assert_own_reply(data, 554, "5.7.1")
    s = d.session_for(f"[::1]:{cport}")
    assert s["result"] == "denied"
    assert s["local"] == f"[::1]:{d.port}"
    assert b.accepted == 0


# --------------------------------------------------------------------------
# limits


def hold(port, source):
    c = connect("127.0.0.1", port, source=source)
    assert recv_reply(c) == GREETING
    return c


def test_max_per_ip(smtpfwd, backend):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], max_per_ip=2)
    held = [hold(d.port, "127.0.0.1"), hold(d.port, "127.0.0.1")]
    try:
        with connect("127.0.0.1", d.port) as c:
            data = recv_all(c)
        assert_own_reply(data, 421, "4.7.0")
        s = d.session_for(c)
        assert s["result"] == "limited", s
        assert s["reply"] == data[:-2].decode()
        assert s["backend"] == "-"
        assert b.accepted == 2
        # another client address still gets through
        other = hold(d.port, "127.0.0.2")
        other.close()
        # closing one of the two frees a slot for 127.0.0.1
        held[0].close()
        d.session_for(held[0])
        held[0] = hold(d.port, "127.0.0.1")
    finally:
        for c in held:
            c.close()


def test_max_connections(smtpfwd, backend):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], glob={"max_connections": 2})
    held = [hold(d.port, "127.0.0.1"), hold(d.port, "127.0.0.2")]
    try:
        with connect("127.0.0.1", d.port, source="127.0.0.3") as c:
            data = recv_all(c)
        assert_own_reply(data, 421, "4.7.0")
        s = d.session_for(c)
        assert s["result"] == "limited", s
        assert s["reply"] == data[:-2].decode()
        assert b.accepted == 2
        held[1].close()
        d.session_for(held[1])
        held[1] = hold(d.port, "127.0.0.3")
    finally:
        for c in held:
            c.close()


# --------------------------------------------------------------------------
# the proxy's own replies, seen by real SMTP clients

SCENARIOS = {
    "denied": (554, "5.7.1", "denied"),
    "limited": (421, "4.7.0", "limited"),
    "backend_unavailable": (421, "4.4.1", "backend_unavailable"),
}


@contextlib.contextmanager
def scenario(name, smtpfwd, backend):
    if name == "denied":
        d = smtpfwd.forward([backend(mini_smtp).addr], allow="192.0.2.0/24")
        yield d
    elif name == "limited":
        d = smtpfwd.forward([backend(mini_smtp).addr], max_per_ip=1)
        with hold(d.port, "127.0.0.1"):
            yield d
    else:
        d = smtpfwd.forward([f"127.0.0.1:{closed_port()}"])
        yield d


@pytest.mark.parametrize("name", SCENARIOS)
def test_own_reply_smtplib(smtpfwd, backend, name):
    code, enh, result = SCENARIOS[name]
    with scenario(name, smtpfwd, backend) as d:
        with pytest.raises(smtplib.SMTPConnectError) as ei:
            smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.example",
                         timeout=IO_TIMEOUT)
        assert ei.value.smtp_code == code
        assert ei.value.smtp_error.startswith(enh.encode() + b" "), ei.value.smtp_error
        s = own_reply_session(d, result)
        assert s["reply"] == f"{code} {ei.value.smtp_error.decode()}"


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.skipif(not SWAKS, reason="swaks is not installed")
def test_own_reply_swaks(smtpfwd, backend, name):
    code, enh, result = SCENARIOS[name]
    with scenario(name, smtpfwd, backend) as d:
        r = subprocess.run(
            [SWAKS, "--server", "127.0.0.1", "--port", str(d.port),
             "--helo", "client.example", "--from", "a@client.example",
             "--to", "b@mx.example", "--timeout", "10"],
            capture_output=True, text=True, timeout=30)
        # swaks: 21 = error reading the initial banner
        assert r.returncode == 21, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
        m = re.search(rf"^<\*\* ({code} {re.escape(enh)} .*)$", r.stdout, re.M)
        assert m, f"swaks did not report a '{code} {enh}' banner:\n{r.stdout}"
        s = own_reply_session(d, result)
        assert s["reply"] == m.group(1)


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.skipif(not SMTP_SOURCE, reason="smtp-source (Debian package postfix) is not installed")
def test_own_reply_smtp_source(smtpfwd, backend, name):
    code, enh, result = SCENARIOS[name]
    with scenario(name, smtpfwd, backend) as d:
        r = subprocess.run([SMTP_SOURCE, "-m", "1", f"127.0.0.1:{d.port}"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        m = re.search(rf"rejected at server banner: ({code} {re.escape(enh)} .*)$",
                      r.stderr, re.M)
        assert m, f"smtp-source did not report a '{code} {enh}' banner:\n{r.stderr}"
        s = own_reply_session(d, result)
        assert s["reply"] == m.group(1).strip()


@pytest.mark.parametrize("pipelined", [False, True], ids=["silent", "pipelined"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_own_reply_is_closed_gracefully(smtpfwd, backend, name, pipelined):
    """After its reply the proxy closes with FIN, not RST; also when the
    client already sent a command that the proxy never read (a close() with
    unread input would reset the connection and can destroy the reply)."""
    code, enh, result = SCENARIOS[name]
    with scenario(name, smtpfwd, backend) as d:
        with connect("127.0.0.1", d.port) as c:
            if pipelined:
                c.sendall(b"EHLO early.example\r\n")
            try:
                data = recv_all(c)
            except ConnectionResetError:
                pytest.fail("connection reset instead of a graceful close after the reply")
        assert_own_reply(data, code, enh)
        s = own_reply_session(d, result)
        assert s["reason"], s
