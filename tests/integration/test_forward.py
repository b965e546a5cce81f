"""The forwarding core: byte-exact transfer in splice and copy mode,
half-close, backpressure, many sessions, IPv6, failover, backend down,
connect timeout, idle timeout."""

import concurrent.futures
import os
import select
import socket
import threading
import time

import pytest

from conftest import (IO_TIMEOUT, closed_port, connect, exchange, fmt_addr,
                      free_port, have_ipv6, mini_smtp, random_bytes, recv_all,
                      recv_exactly, recv_reply, sha)

needs_ipv6 = pytest.mark.skipif(not have_ipv6(), reason="no IPv6 loopback (::1)")


def duplex_backend(down):
    """Handler: send `down` then EOF while reading the client's bytes to EOF."""
    def handler(conn):
        return exchange(conn, down)
    return handler


def check_pump(session, pump, payload_size):
    """The session line names the pump that moved the bytes."""
    assert session.get("pump") in ("splice", "copy", "none"), session
    if pump == "copy":
        assert session["pump"] in ("copy", "none"), \
            f"SMTPFWD_NO_SPLICE=1 must force the copy pump: {session}"
    elif payload_size >= 1 << 20:
        assert session["pump"] == "splice", \
            f"plaintext both sides, several MiB: expected pump=splice: {session}"


@pytest.mark.parametrize("up,down", [
    (1, 1),
    (0, 300_007),
    (200_003, 0),
    (65_536 * 3 + 7, 12_345),
    (4 * 1024 * 1024 + 1, 3 * 1024 * 1024 + 5),
], ids=["1B", "down-only", "up-only", "asym", "4MiB"])
def test_byte_exact_both_directions(smtpfwd, backend, pump, up, down):
    up_data = random_bytes(up, f"up{up}")
    down_data = random_bytes(down, f"down{down}")
    b = backend(duplex_backend(down_data))
    d = smtpfwd.forward([b.addr], pump=pump)
    with connect("127.0.0.1", d.port) as c:
        got = exchange(c, up_data)
    [rx] = b.wait_results(1)
    assert len(rx) == len(up_data) and sha(rx) == sha(up_data), "client->backend bytes differ"
    assert len(got) == len(down_data) and sha(got) == sha(down_data), "backend->client bytes differ"
    s = d.session_for(c)
    assert s["result"] == "forwarded", s
    assert s["backend"] == b.addr
    assert int(s["bytes_up"]) == up, s
    assert int(s["bytes_down"]) == down, s
    assert s["forward"] == "t"
    assert s["local"] == f"127.0.0.1:{d.port}"
    check_pump(s, pump, max(up, down))


def test_half_close_client_first(smtpfwd, backend, pump):
    """The client's EOF reaches the backend after all its data; the backend
    can still answer afterwards."""
    up_data = random_bytes(700_001, "hc-up")
    answer = random_bytes(900_003, "hc-answer")

    def handler(conn):
        got = recv_all(conn)          # returns only once EOF arrived
        conn.sendall(sha(got).encode() + b"\n" + answer)
        conn.shutdown(socket.SHUT_WR)
        return got
    b = backend(handler)
    d = smtpfwd.forward([b.addr], pump=pump)
    with connect("127.0.0.1", d.port) as c:
        c.sendall(up_data)
        c.shutdown(socket.SHUT_WR)
        got = recv_all(c)
    [rx] = b.wait_results(1)
    assert sha(rx) == sha(up_data)
    assert got == sha(up_data).encode() + b"\n" + answer
    s = d.session_for(c)
    assert s["result"] == "forwarded"
    assert int(s["bytes_up"]) == len(up_data)
    assert int(s["bytes_down"]) == len(got)


@pytest.mark.parametrize("down", [800_009, 0], ids=["data", "no-data"])
def test_half_close_backend_first(smtpfwd, backend, pump, down):
    """The backend's EOF reaches the client after all its data (possibly
    none at all); the client can still send afterwards and the backend gets
    every byte."""
    down_data = random_bytes(down, "hb-down")
    up_data = random_bytes(600_011, "hb-up")

    def handler(conn):
        conn.sendall(down_data)
        conn.shutdown(socket.SHUT_WR)
        return recv_all(conn)
    b = backend(handler)
    d = smtpfwd.forward([b.addr], pump=pump)
    with connect("127.0.0.1", d.port) as c:
        got = recv_all(c)             # EOF from the backend, our side open
        assert sha(got) == sha(down_data)
        c.sendall(up_data)
        c.shutdown(socket.SHUT_WR)
        rest = recv_all(c)
    assert rest == b""
    [rx] = b.wait_results(1)
    assert len(rx) == len(up_data) and sha(rx) == sha(up_data)
    s = d.session_for(c)
    assert s["result"] == "forwarded"
    assert int(s["bytes_up"]) == len(up_data)
    assert int(s["bytes_down"]) == len(down_data)


def test_backpressure(smtpfwd, backend, pump):
    """While the backend does not read, the daemon stops reading the client
    instead of buffering without bound; everything arrives once it reads."""
    go = threading.Event()

    def handler(conn):
        go.wait(IO_TIMEOUT * 2)
        return recv_all(conn)
    b = backend(handler, rcvbuf=65536)
    d = smtpfwd.forward([b.addr], pump=pump)
    rss_before = d.rss_kib()
    cap = 256 * 1024 * 1024
    chunk = random_bytes(1 << 20, "bp")
    sent = 0
    with connect("127.0.0.1", d.port) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        c.setblocking(False)
        blocked = False
        deadline = time.monotonic() + IO_TIMEOUT * 2
        while sent < cap and time.monotonic() < deadline:
            # blocked = not writable for 0.5 s in a row
            _, w, _ = select.select([], [c], [], 0.5)
            if not w:
                blocked = True
                break
            try:
                sent += c.send(chunk[sent % len(chunk):])
            except BlockingIOError:
                pass
        rss_blocked = d.rss_kib()
        assert blocked, f"sent {sent} bytes and the daemon still reads: no backpressure"
        assert rss_blocked - rss_before < 32 * 1024, \
            f"daemon RSS grew from {rss_before} to {rss_blocked} KiB while the backend did not read"
        go.set()
        c.setblocking(True)
        c.settimeout(IO_TIMEOUT)
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b""
    [rx] = b.wait_results(1, timeout=30)
    expect = (chunk * (sent // len(chunk) + 1))[:sent]
    assert len(rx) == sent and sha(rx) == sha(expect)


def test_many_concurrent_sessions(smtpfwd, backend, pump):
    n = 200
    size = 48 * 1024

    def handler(conn):
        got = recv_all(conn)            # read to EOF first ...
        conn.sendall(sha(got).encode() + got[::-1])   # ... then answer
        return sha(got)
    b = backend(handler)
    d = smtpfwd.forward([b.addr], pump=pump)
    clients = [connect("127.0.0.1", d.port) for _ in range(n)]
    try:
        payloads = [random_bytes(size + i, f"many{i}") for i in range(n)]

        def one(i):
            c = clients[i]
            c.sendall(payloads[i])
            c.shutdown(socket.SHUT_WR)
            got = recv_all(c)
            return got == sha(payloads[i]).encode() + payloads[i][::-1]
        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as ex:
            results = list(ex.map(one, range(n)))
        assert all(results), f"{results.count(False)} of {n} sessions were not byte-exact"
    finally:
        for c in clients:
            c.close()
    sessions = d.wait_sessions(n, timeout=30)
    assert all(s["result"] == "forwarded" for s in sessions)
    assert sorted(int(s["bytes_up"]) for s in sessions) == [size + i for i in range(n)]
    assert b.accepted == n


@needs_ipv6
def test_ipv6_listener_and_backend(smtpfwd, backend, pump):
    up_data = random_bytes(1_500_000, "v6up")
    down_data = random_bytes(1_200_000, "v6down")
    b = backend(duplex_backend(down_data), host="::1")
    d = smtpfwd.forward([b.addr], pump=pump, listen_host="::1")
    with connect("::1", d.port) as c:
        got = exchange(c, up_data)
        cport = c.getsockname()[1]
    [rx] = b.wait_results(1)
    assert sha(rx) == sha(up_data) and sha(got) == sha(down_data)
    s = d.session_for(f"[::1]:{cport}")
    assert s["local"] == f"[::1]:{d.port}"
    assert s["backend"] == f"[::1]:{b.port}"
    assert s["result"] == "forwarded"


@needs_ipv6
def test_ipv4_and_ipv6_wildcards_on_one_port(smtpfwd, backend, pump):
    """[::] is v6-only, so it can sit beside 0.0.0.0 on the same port."""
    b = backend(duplex_backend(b"pong"))
    port = free_port("0.0.0.0")
    d = smtpfwd.start(
        f"[forward both]\nlisten = 0.0.0.0:{port}, [::]:{port}\nbackend = {b.addr}\n",
        pump=pump)
    listens = {r["addr"] for r in d.events("listen")}
    assert listens == {f"0.0.0.0:{port}", f"[::]:{port}"}, d.describe()
    for host in ("127.0.0.1", "::1"):
        with connect(host, port) as c:
            assert exchange(c, b"ping") == b"pong"
            cport = c.getsockname()[1]
        s = d.session_for(fmt_addr(host, cport))
        assert s["result"] == "forwarded"
        assert s["forward"] == "both"


def test_failover_to_second_backend(smtpfwd, backend, pump):
    down = closed_port()
    b = backend(duplex_backend(b"from the second backend"))
    d = smtpfwd.forward([f"127.0.0.1:{down}", b.addr], pump=pump)
    with connect("127.0.0.1", d.port) as c:
        got = exchange(c, b"hello")
    assert got == b"from the second backend"
    assert b.wait_results(1) == [b"hello"]
    s = d.session_for(c)
    assert s["result"] == "forwarded"
    assert s["backend"] == b.addr


def test_failover_after_connect_timeout(smtpfwd, backend, blackhole, pump):
    b = backend(duplex_backend(b"second"))
    d = smtpfwd.forward([f"127.0.0.1:{blackhole}", b.addr], pump=pump,
                        connect_timeout=1)
    t0 = time.monotonic()
    with connect("127.0.0.1", d.port) as c:
        got = exchange(c, b"x")
    elapsed = time.monotonic() - t0
    assert got == b"second"
    assert 0.8 <= elapsed < 5, f"first attempt should take about connect_timeout=1s, took {elapsed:.2f}s"
    s = d.session_for(c)
    assert s["backend"] == b.addr and s["result"] == "forwarded"


def test_backend_down_gives_421(smtpfwd):
    port = closed_port()
    d = smtpfwd.forward([f"127.0.0.1:{port}"])
    with connect("127.0.0.1", d.port) as c:
        data = recv_all(c)
    assert data.startswith(b"421 4.4.1 ") and data.endswith(b"\r\n") and data.count(b"\r\n") == 1, data
    s = d.session_for(c)
    assert s["result"] == "backend_unavailable", s
    assert f"connect 127.0.0.1:{port}: Connection refused" in s["reason"], s
    assert s["reply"] == data[:-2].decode(), s
    assert s["pump"] == "none"
    assert int(s["bytes_up"]) == 0 and int(s["bytes_down"]) == 0, \
        "bytes_* count relayed bytes, not the proxy's own reply"


def test_all_backends_down_tries_each(smtpfwd, blackhole):
    refused = closed_port()
    d = smtpfwd.forward([f"127.0.0.1:{refused}", f"127.0.0.1:{blackhole}"],
                        connect_timeout=1)
    t0 = time.monotonic()
    with connect("127.0.0.1", d.port) as c:
        data = recv_all(c)
    elapsed = time.monotonic() - t0
    assert data.startswith(b"421 4.4.1 ") and data.endswith(b"\r\n"), data
    assert 0.8 <= elapsed < 5, f"took {elapsed:.2f}s with connect_timeout=1"
    s = d.session_for(c)
    assert s["result"] == "backend_unavailable"


def test_connect_timeout_gives_421(smtpfwd, blackhole):
    d = smtpfwd.forward([f"127.0.0.1:{blackhole}"], connect_timeout=1)
    t0 = time.monotonic()
    with connect("127.0.0.1", d.port) as c:
        data = recv_all(c)
    elapsed = time.monotonic() - t0
    assert data.startswith(b"421 4.4.1 ") and data.endswith(b"\r\n"), data
    assert 0.8 <= elapsed < 4, f"connect_timeout=1 but the reply came after {elapsed:.2f}s"
    s = d.session_for(c)
    assert s["result"] == "backend_unavailable", s
    assert f"connect 127.0.0.1:{blackhole}" in s["reason"], s
    assert "tim" in s["reason"].lower(), f"reason should say it timed out: {s}"


def test_idle_timeout_ends_silent_session(smtpfwd, backend, pump):
    def handler(conn):
        conn.sendall(b"220 idle.example ESMTP\r\n")
        return recv_all(conn)
    b = backend(handler)
    d = smtpfwd.forward([b.addr], pump=pump, idle_timeout=1)
    t0 = time.monotonic()
    with connect("127.0.0.1", d.port) as c:
        assert recv_reply(c) == b"220 idle.example ESMTP\r\n"
        rest = recv_all(c)              # the daemon closes us
        elapsed = time.monotonic() - t0
    assert rest == b""
    assert 0.9 <= elapsed < 4, f"idle_timeout=1 but closed after {elapsed:.2f}s"
    b.wait_results(1)                   # the backend was closed as well
    s = d.session_for(c)
    assert s["result"] == "timeout" or s["reason"] == "idle timeout", s
    assert "idle" in s["reason"], s


def test_idle_timeout_reset_by_traffic(smtpfwd, backend, pump):
    """Traffic in either direction keeps the session alive past idle_timeout."""
    def handler(conn):
        return mini_smtp(conn)
    b = backend(handler)
    d = smtpfwd.forward([b.addr], pump=pump, idle_timeout=1)
    with connect("127.0.0.1", d.port) as c:
        recv_reply(c)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:   # 2.5 x idle_timeout of chatter
            c.sendall(b"NOOP\r\n")
            assert recv_reply(c) == b"250 2.0.0 Ok\r\n"
            time.sleep(0.3)                  # pacing, not synchronisation
        c.sendall(b"QUIT\r\n")
        assert recv_reply(c).startswith(b"221")
    s = d.session_for(c)
    assert s["result"] == "forwarded", s
    assert "idle" not in s["reason"]


def daemon_pipe_fds(pid):
    fds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                fds.append(fd)
        except FileNotFoundError:
            pass
    return len(fds)


def test_idle_sessions_hold_no_pipes(smtpfwd, backend):
    """Splice pipes are taken while bytes move and given back once drained:
    40 idle sessions that each moved data do not hold 40 sets of pipes."""
    def echo(conn):
        while True:
            data = conn.recv(65536)
            if not data:
                return None
            conn.sendall(data)
    b = backend(echo)
    d = smtpfwd.forward([b.addr], pump="splice")
    base = daemon_pipe_fds(d.pid)
    payload = random_bytes(200_000, "pipes")
    clients = []
    try:
        for _ in range(40):
            c = connect("127.0.0.1", d.port)
            clients.append(c)
            c.sendall(payload)
            assert recv_exactly(c, len(payload)) == payload
        held = daemon_pipe_fds(d.pid) - base
        assert held <= 16, f"{held} pipe fds held by 40 idle sessions"
    finally:
        for c in clients:
            c.close()
    sessions = d.wait_sessions(40)
    assert all(s["pump"] == "splice" for s in sessions), sessions[0]
