"""SIGTERM/SIGINT: listeners close at once, open sessions finish (up to
shutdown_timeout), then exit 0."""

import signal
import socket
import time

import pytest

from conftest import (connect, is_listening, mini_smtp, recv_all,
                      recv_reply, wait_for)


def echo(conn):
    total = 0
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return total
        total += len(data)
        conn.sendall(data)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_drains_open_sessions(smtpfwd, backend, pump, sig):
    b = backend(echo)
    d = smtpfwd.forward([b.addr], pump=pump, glob={"shutdown_timeout": 20})
    with connect("127.0.0.1", d.port) as c:
        c.sendall(b"before\r\n")
        assert recv_reply(c) == b"before\r\n"
        d.signal(sig)
        wait_for(lambda: not is_listening(d.port), 5, "the listener to close")
        with pytest.raises(ConnectionRefusedError):
            connect("127.0.0.1", d.port).close()
        # the open session still works during the drain
        for i in range(3):
            line = b"during %d\r\n" % i
            c.sendall(line)
            assert recv_reply(c) == line
        assert d.proc.poll() is None, "exited while a session was open"
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b""
    t0 = time.monotonic()
    rc = d.wait_exit(5)
    assert rc == 0, d.describe()
    assert time.monotonic() - t0 < 5
    s = d.session_for(c)
    assert s["result"] == "forwarded", s
    assert s["reason"] != "shutdown", s
    assert int(s["bytes_up"]) == len(b"before\r\n") + 3 * len(b"during 0\r\n")


def test_shutdown_timeout_ends_held_sessions(smtpfwd, backend, pump):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], pump=pump, glob={"shutdown_timeout": 1},
                        idle_timeout=60)
    with connect("127.0.0.1", d.port) as c:
        recv_reply(c)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        assert recv_all(c) == b""          # the daemon closes us after 1 s
        rc = d.wait_exit(6)
        elapsed = time.monotonic() - t0
    assert rc == 0, d.describe()
    assert 0.8 <= elapsed < 5, f"shutdown_timeout=1, exited after {elapsed:.2f}s"
    s = d.session_for(c)
    assert s["reason"] == "shutdown", s


def test_sigterm_with_no_sessions_exits_at_once(smtpfwd, backend):
    b = backend(mini_smtp)
    d = smtpfwd.forward([b.addr], glob={"shutdown_timeout": 30})
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(5) == 0
    assert time.monotonic() - t0 < 2
