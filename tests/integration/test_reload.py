"""SIGHUP: new listeners open, removed ones close, changed settings apply
to new sessions, open sessions are untouched, an invalid file is logged and
ignored."""

import signal

from conftest import (IO_TIMEOUT, connect, free_port, ini, is_listening,
                      mini_smtp, recv_all, recv_reply, wait_for)

GREETING = b"220 mini.example ESMTP\r\n"


def talk(sock, line=b"NOOP"):
    sock.sendall(line + b"\r\n")
    return recv_reply(sock)


def test_reload_adds_removes_and_changes(smtpfwd, backend, workdir):
    b = backend(mini_smtp)
    pa, pb = free_port(), free_port()
    d = smtpfwd.start(ini({}, {"a": {"listen": f"127.0.0.1:{pa}", "backend": b.addr}}))
    cfg = workdir / "smtpfwd-1.ini"
    old = connect("127.0.0.1", pa)
    try:
        assert recv_reply(old) == GREETING
        # add forward b, deny everyone on a
        cfg.write_text(ini({}, {
            "a": {"listen": f"127.0.0.1:{pa}", "backend": b.addr, "deny": "0.0.0.0/0"},
            "b": {"listen": f"127.0.0.1:{pb}", "backend": b.addr},
        }))
        d.signal(signal.SIGHUP)
        wait_for(lambda: is_listening(pb), IO_TIMEOUT, "the new listener")
        with connect("127.0.0.1", pb) as c:
            assert recv_reply(c) == GREETING

        def denied_now():
            with connect("127.0.0.1", pa) as c:
                return recv_all(c).startswith(b"554 5.7.1 ")
        wait_for(denied_now, IO_TIMEOUT, "the new deny rule on forward a")
        # the session opened before the reload is untouched
        assert talk(old) == b"250 2.0.0 Ok\r\n"
        # remove forward a
        cfg.write_text(ini({}, {"b": {"listen": f"127.0.0.1:{pb}", "backend": b.addr}}))
        d.signal(signal.SIGHUP)
        wait_for(lambda: not is_listening(pa), IO_TIMEOUT, "the removed listener to close")
        assert talk(old) == b"250 2.0.0 Ok\r\n"
        assert talk(old, b"QUIT").startswith(b"221")
    finally:
        old.close()
    s = d.session_for(old)
    assert s["result"] == "forwarded" and s["forward"] == "a"


def test_reload_with_invalid_file_keeps_running(smtpfwd, backend, workdir):
    b = backend(mini_smtp)
    pa = free_port()
    d = smtpfwd.start(ini({}, {"a": {"listen": f"127.0.0.1:{pa}", "backend": b.addr}}))
    cfg = workdir / "smtpfwd-1.ini"
    errors_before = sum(r["level"] == "error" for r in d.records())
    cfg.write_text("[forward a]\nlisten = 127.0.0.1:99999\nbogus = 1\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: sum(r["level"] == "error" for r in d.records()) > errors_before,
             IO_TIMEOUT, "an error line about the invalid file")
    assert d.proc.poll() is None, d.describe()
    with connect("127.0.0.1", pa) as c:
        assert recv_reply(c) == GREETING
        assert talk(c, b"QUIT").startswith(b"221")
    assert d.session_for(c)["result"] == "forwarded"
