"""SMTP awareness: the backend's greeting and the client's EHLO/HELO in the
session line, early talkers, escaping, non-SMTP and silent clients, JSON
logs. Bytes are always relayed unchanged."""

import json
import smtplib
import socket
import subprocess
import threading

import pytest

from conftest import (IO_TIMEOUT, SWAKS, connect, exchange, mini_smtp,
                      random_bytes, recv_all, recv_exactly, recv_reply,
                      recv_until, sha)

SESSION_KEYS = ("forward", "client", "local", "backend", "result", "reason",
                "greeting", "greeting_code", "helo", "early_talker", "tls",
                "pump", "bytes_up", "bytes_down", "duration")

MESSAGE = (b"From: a@client.example\r\nTo: b@mx.sink.example\r\n"
           b"Subject: through smtpfwd\r\n\r\nhello\r\n")


def send_mail(port, helo="client.test.example", source=None):
    s = smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=IO_TIMEOUT,
                     source_address=(source, 0) if source else None)
    client = s.sock.getsockname()
    s.ehlo()
    s.mail("a@client.example")
    s.rcpt("b@mx.sink.example")
    code, msg = s.data(MESSAGE)
    assert code == 250, msg
    s.quit()
    return f"{client[0]}:{client[1]}", msg


def test_greeting_and_helo_with_smtp_sink(smtpfwd, smtp_sink, pump):
    sink = smtp_sink(hostname="mx.sink.example")
    with connect("127.0.0.1", sink.port) as c:
        direct_greeting = recv_reply(c)
    d = smtpfwd.forward([sink.addr], pump=pump)
    client, _ = send_mail(d.port, helo="client.test.example")
    s = d.session_for(client)
    for key in SESSION_KEYS:
        assert key in s, f"session line lacks {key}=: {s}"
    assert s["greeting"] == direct_greeting.decode().rstrip("\r\n")
    assert s["greeting"] == "220 mx.sink.example ESMTP"
    assert s["greeting_code"] == "220"
    assert s["helo"] == "client.test.example"
    assert s["early_talker"] == "no"
    assert s["tls"] == "no"
    assert s["result"] == "forwarded"
    assert s["backend"] == sink.addr
    assert int(s["bytes_down"]) > len(direct_greeting)
    assert int(s["bytes_up"]) > len(MESSAGE)
    assert float(s["duration"]) >= 0


def test_helo_command_is_logged(smtpfwd, backend, pump):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], pump=pump)
    with connect("127.0.0.1", d.port) as c:
        recv_reply(c)
        c.sendall(b"HELO old.style.example\r\n")
        assert recv_reply(c).startswith(b"250")
        c.sendall(b"EHLO second.example\r\nQUIT\r\n")
        recv_reply(c)
        assert recv_reply(c).startswith(b"221")
    s = d.session_for(c)
    assert s["helo"] == "old.style.example", "the first EHLO/HELO argument is logged"
    assert b.wait_results(1)[0] == [b"HELO old.style.example", b"EHLO second.example", b"QUIT"]


@pytest.mark.skipif(not SWAKS, reason="swaks is not installed")
def test_swaks_through_proxy_to_smtp_sink(smtpfwd, smtp_sink, pump):
    sink = smtp_sink()
    d = smtpfwd.forward([sink.addr], pump=pump)
    r = subprocess.run([SWAKS, "--server", "127.0.0.1", "--port", str(d.port),
                        "--helo", "swaks.client.example", "--from", "a@client.example",
                        "--to", "b@mx.sink.example", "--timeout", "10"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    s = d.wait_record(lambda r: r.get("event") == "session")
    assert s["helo"] == "swaks.client.example"
    assert s["greeting_code"] == "220"


def test_backend_421_greeting(smtpfwd, backend):
    def handler(conn):
        conn.sendall(b"421 4.3.2 busy, try later\r\n")
        return recv_all(conn)
    b = backend(handler)
    d = smtpfwd.forward([b.addr])
    with pytest.raises(smtplib.SMTPConnectError) as ei:
        smtplib.SMTP("127.0.0.1", d.port, timeout=IO_TIMEOUT)
    assert ei.value.smtp_code == 421
    s = d.wait_record(lambda r: r.get("event") == "session")
    assert s["greeting"] == "421 4.3.2 busy, try later"
    assert s["greeting_code"] == "421"
    assert s["result"] == "forwarded", "the backend's own 421 is relayed, not a proxy reply"
    assert "reply" not in s or s["reply"] in ("", "-"), s


def test_multiline_greeting_split_across_writes(smtpfwd, backend, pump):
    """A 220- continuation greeting is relayed as it arrives (the first part
    reaches the client before the rest is sent) and logged joined with \\n."""
    first_seen = threading.Event()
    part1 = b"220-mx.multi.example first line\r\n22"
    part2 = b"0-second line\r\n220 third line\r\n"

    def handler(conn):
        conn.sendall(part1)
        if not first_seen.wait(IO_TIMEOUT):
            raise AssertionError("the client never saw the first part")
        conn.sendall(part2)
        return mini_smtp(conn, greeting=b"")
    b = backend(handler)
    d = smtpfwd.forward([b.addr], pump=pump)
    with connect("127.0.0.1", d.port) as c:
        got = recv_exactly(c, len(part1))   # relayed without waiting for a full line
        assert got == part1
        first_seen.set()
        assert recv_exactly(c, len(part2)) == part2
        c.sendall(b"EHLO multi.client.example\r\n")
        assert recv_reply(c).startswith(b"250")
        c.sendall(b"QUIT\r\n")
        assert recv_reply(c).startswith(b"221")
    s = d.session_for(c)
    assert s["greeting"] == "220-mx.multi.example first line\n220-second line\n220 third line"
    assert s["greeting_code"] == "220"
    assert s["helo"] == "multi.client.example"


def test_early_talker(smtpfwd, backend, pump):
    """A client that speaks before the greeting: its bytes reach the backend
    at once (no waiting for the greeting) and early_talker=yes is logged."""
    def handler(conn):
        early = recv_until(conn, b"\r\n")   # before we greet
        return mini_smtp(conn, buffered=early, greeting=b"220 late.example ESMTP\r\n")
    b = backend(handler)
    d = smtpfwd.forward([b.addr], pump=pump)
    with connect("127.0.0.1", d.port) as c:
        c.sendall(b"EHLO early.example\r\n")
        assert recv_reply(c) == b"220 late.example ESMTP\r\n"
        assert recv_reply(c) == b"250 mini.example\r\n"
        c.sendall(b"QUIT\r\n")
        assert recv_reply(c).startswith(b"221")
    s = d.session_for(c)
    assert s["early_talker"] == "yes", s
    assert s["greeting"] == "220 late.example ESMTP"
    assert s["helo"] == "early.example"
    assert b.wait_results(1)[0] == [b"EHLO early.example", b"QUIT"]


# One token (the EHLO argument ends at white space), with a quote, a
# backslash, control bytes, DEL and a non-ASCII byte.
HOSTILE_HELO = b'we"ird\\name\x01\x1b[31m\x7f\xffend'


def test_helo_with_quotes_and_control_bytes_is_escaped(smtpfwd, backend):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr])
    with connect("127.0.0.1", d.port) as c:
        recv_reply(c)
        c.sendall(b"EHLO " + HOSTILE_HELO + b"\r\n")
        recv_reply(c)
        c.sendall(b"QUIT\r\n")
        recv_reply(c)
    s = d.session_for(c)           # parse_text_line rejects raw control bytes
    raw = d.raw()
    assert all(0x20 <= ch < 0x7f or ch == 0x0a for ch in raw), \
        f"raw control or non-ASCII bytes in the log: {raw!r}"
    assert s["helo"].encode("utf-8", "surrogateescape") == HOSTILE_HELO, s["helo"]
    assert b.wait_results(1)[0][0] == b"EHLO " + HOSTILE_HELO, "bytes are relayed unchanged"


def test_overlong_helo_is_truncated_in_log_not_on_the_wire(smtpfwd, backend, pump):
    helo = b"h" * 3000
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], pump=pump)
    with connect("127.0.0.1", d.port) as c:
        recv_reply(c)
        c.sendall(b"EHLO " + helo + b"\r\n")
        assert recv_reply(c).startswith(b"250")
        c.sendall(b"QUIT\r\n")
        recv_reply(c)
    s = d.session_for(c)
    assert 0 < len(s["helo"]) <= 512 and helo.decode().startswith(s["helo"]), len(s["helo"])
    assert b.wait_results(1)[0][0] == b"EHLO " + helo


def test_overlong_greeting_is_truncated(smtpfwd, backend, pump):
    greeting = b"220 " + b"g" * 5000 + b"\r\n"
    b = backend(lambda conn: mini_smtp(conn, greeting=greeting))
    d = smtpfwd.forward([b.addr], pump=pump)
    with connect("127.0.0.1", d.port) as c:
        assert recv_reply(c) == greeting
        c.sendall(b"QUIT\r\n")
        recv_reply(c)
    s = d.session_for(c)
    assert s["greeting_code"] == "220", \
        f"the code is in the first 3 bytes of an over-long greeting: {s}"
    assert 4 < len(s["greeting"]) <= 512 and greeting.decode().startswith(s["greeting"])


def test_non_smtp_client_does_not_stall(smtpfwd, backend, pump):
    """An HTTP request instead of EHLO, followed by binary data: forwarded
    byte for byte in both directions."""
    up = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n" + random_bytes(400_000, "http")
    down_tail = random_bytes(500_000, "http-down")

    def handler(conn):
        conn.sendall(b"220 web.example ESMTP\r\n")
        return exchange(conn, down_tail)
    b = backend(handler)
    d = smtpfwd.forward([b.addr], pump=pump)
    with connect("127.0.0.1", d.port) as c:
        got = exchange(c, up)
    assert sha(got) == sha(b"220 web.example ESMTP\r\n" + down_tail)
    [rx] = b.wait_results(1)
    assert sha(rx) == sha(up)
    s = d.session_for(c)
    assert s["result"] == "forwarded"
    assert s.get("helo", "-") in ("", "-"), s


def test_silent_client_does_not_stall(smtpfwd, backend, pump):
    """The client says nothing; everything the backend sends after its
    greeting still arrives, and later client bytes still reach it."""
    down = b"220 quiet.example ESMTP\r\n" + random_bytes(2_000_000, "silent")
    up = random_bytes(300_000, "silent-up")

    def handler(conn):
        conn.sendall(down)
        return recv_all(conn)
    b = backend(handler)
    d = smtpfwd.forward([b.addr], pump=pump)
    with connect("127.0.0.1", d.port) as c:
        got = recv_exactly(c, len(down))
        assert sha(got) == sha(down)
        c.sendall(up)
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b""
    [rx] = b.wait_results(1)
    assert sha(rx) == sha(up)
    s = d.session_for(c)
    assert int(s["bytes_up"]) == len(up) and int(s["bytes_down"]) == len(down)


def test_log_greeting_no(smtpfwd, backend, pump):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], pump=pump, log_greeting="no")
    with connect("127.0.0.1", d.port) as c:
        recv_reply(c)
        c.sendall(b"EHLO not.logged.example\r\nQUIT\r\n")
        recv_reply(c)
        recv_reply(c)
    s = d.session_for(c)
    assert "not.logged.example" not in json.dumps(s)
    assert s["result"] == "forwarded"


def test_json_log_format(smtpfwd, backend):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], json_log=True)
    with connect("127.0.0.1", d.port) as c:
        recv_reply(c)
        c.sendall(b"EHLO " + HOSTILE_HELO + b"\r\n")
        recv_reply(c)
        c.sendall(b"QUIT\r\n")
        recv_reply(c)
        client = "127.0.0.1:%d" % c.getsockname()[1]
    s = d.session_for(client)           # every line parsed as one JSON object
    raw = d.raw()
    raw.decode("utf-8")                 # strict: JSON text is UTF-8
    assert not any(ch < 0x20 and ch != 0x0a for ch in raw), \
        f"raw control bytes in the JSON log: {raw!r}"
    events = [r["event"] for r in d.records()]
    assert "listen" in events and "ready" in events
    for key in SESSION_KEYS + ("ts", "level", "event"):
        assert key in s["_json"], f"JSON session line lacks {key}: {s['_json']}"
    assert s["level"] == "info"
    assert s["greeting"] == "220 mini.example ESMTP"
    assert s["greeting_code"] == "220"
    assert s["forward"] == "t"
    assert s["helo"].startswith('we"ird\\name\x01\x1b[31m\x7f'), repr(s["helo"])
    assert int(s["bytes_up"]) > 0
