"""Operations: privilege drop, second SIGTERM, reload beside an open
session, syslog facility mail."""

import os
import pwd
import signal
import socket
import time

import pytest

from conftest import (IO_TIMEOUT, connect, free_port, ini, is_listening,
                      recv_reply, wait_for)


def echo(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return True
        conn.sendall(data)


def low_free_port():
    """A free port below 1024 on 127.0.0.1 (needs root to bind)."""
    for port in range(700, 1000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    pytest.skip("no free port below 1024")


def proc_ids(pid):
    ids = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                ids[key] = rest.split()
    return ids


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_privilege_drop_keeps_low_port(smtpfwd, backend):
    b = backend(echo)
    port = low_free_port()
    nobody = pwd.getpwnam("nobody")
    d = smtpfwd.start(ini({"user": "nobody"},
                          {"t": {"listen": f"127.0.0.1:{port}", "backend": b.addr,
                                 "client_identity": "none"}}))
    ids = proc_ids(d.pid)
    assert ids["Uid"] == [str(nobody.pw_uid)] * 4, ids
    assert ids["Gid"] == [str(nobody.pw_gid)] * 4, ids
    assert ids.get("Groups", []) in ([], [str(nobody.pw_gid)]), ids
    d.wait_record(lambda r: r.get("event") == "privileges", what="privileges line")
    with connect("127.0.0.1", port) as c:
        c.sendall(b"hello\r\n")
        assert recv_reply(c) == b"hello\r\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_unknown_user_refuses_to_start(smtpfwd, backend):
    b = backend(echo)
    d = smtpfwd.start(ini({"user": "no-such-user-smtpfwd"},
                          {"t": {"listen": f"127.0.0.1:{free_port()}", "backend": b.addr,
                                 "client_identity": "none"}}), wait_ready=False)
    assert d.wait_exit() == 1
    assert b"no-such-user-smtpfwd" in d.raw()


def test_second_sigterm_stops_at_once(smtpfwd, backend):
    b = backend(echo)
    d = smtpfwd.forward([b.addr], glob={"shutdown_timeout": 60},
                        client_identity="none")
    with connect("127.0.0.1", d.port) as c:
        c.sendall(b"x\r\n")
        assert recv_reply(c) == b"x\r\n"
        d.signal(signal.SIGTERM)
        wait_for(lambda: not is_listening(d.port), 5, "the listener to close")
        start = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.wait_exit(timeout=5) == 0
        assert time.monotonic() - start < 5
    [s] = d.sessions()
    assert s["reason"] == "shutdown", s


def test_reload_leaves_open_session_alone(smtpfwd, backend, workdir):
    b = backend(echo)
    port, port2 = free_port(), free_port()
    path = workdir / "reload.ini"
    path.write_text(ini({}, {"a": {"listen": f"127.0.0.1:{port}", "backend": b.addr,
                                   "client_identity": "none"}}))
    d = smtpfwd.start(None, args=["-c", str(path)])
    with connect("127.0.0.1", port) as c:
        c.sendall(b"one\r\n")
        assert recv_reply(c) == b"one\r\n"
        path.write_text(ini({}, {"a": {"listen": f"127.0.0.1:{port}", "backend": b.addr,
                                       "client_identity": "none", "idle_timeout": 5},
                                 "b": {"listen": f"127.0.0.1:{port2}", "backend": b.addr,
                                       "client_identity": "none"}}))
        d.signal(signal.SIGHUP)
        d.wait_record(lambda r: r.get("event") == "reload", what="the reload")
        wait_for(lambda: is_listening(port2), IO_TIMEOUT, "the new listener")
        c.sendall(b"two\r\n")
        assert recv_reply(c) == b"two\r\n"
    with connect("127.0.0.1", port2) as c2:
        c2.sendall(b"three\r\n")
        assert recv_reply(c2) == b"three\r\n"


@pytest.mark.skipif(os.geteuid() != 0 or os.path.exists("/dev/log"),
                    reason="needs root and no syslog daemon owning /dev/log")
def test_syslog_facility_mail(smtpfwd, backend):
    """With syslog = yes the lines go to /dev/log with facility mail
    (priority <22> = mail.info)."""
    b = backend(echo)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/dev/log")
    try:
        sock.settimeout(IO_TIMEOUT)
        port = free_port()
        d = smtpfwd.start(ini({"syslog": "yes"},
                              {"t": {"listen": f"127.0.0.1:{port}", "backend": b.addr,
                                     "client_identity": "none"}}), wait_ready=False)
        wait_for(lambda: is_listening(port), IO_TIMEOUT, "the listener")
        msgs = []
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline:
            msg = sock.recv(4096).decode(errors="replace")
            msgs.append(msg)
            if "event=ready" in msg:
                break
        ready = [m for m in msgs if "event=ready" in m]
        assert ready, msgs
        assert ready[0].startswith("<22>"), ready[0]
        assert "smtpfwd" in ready[0]
        d.stop()
    finally:
        sock.close()
        os.unlink("/dev/log")
