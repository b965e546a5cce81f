"""workers = N: several worker processes on SO_REUSEPORT sockets. Limits
and metrics hold across them; reload and drain reach every worker."""

import os
import signal
import socket
import urllib.request

import pytest

from conftest import (IO_TIMEOUT, connect, exchange, free_port, is_listening,
                      random_bytes, recv_reply, sha, wait_for)


def echo(conn):
    total = 0
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return total
        total += len(data)
        conn.sendall(data)


def greeter(conn):
    conn.sendall(b"220 mx.workers.test ESMTP\r\n")
    while conn.recv(65536):
        pass
    return True


def worker_pids(d):
    """Pids named by the workers' ready lines."""
    pids = set()
    for r in d.events("ready"):
        msg = r.get("msg", "")
        if "(pid " in msg:
            pids.add(int(msg.split("(pid ")[1].split(")")[0]))
    return pids


def start_workers(smtpfwd, backends, n=2, pump=None, glob=None, **opts):
    port = free_port()
    g = {"log_level": "info", "workers": n}
    g.update(glob or {})
    fwd = {"listen": f"127.0.0.1:{port}", "backend": backends,
           "client_identity": "none"}
    fwd.update(opts)
    text = "[global]\n" + "".join(f"{k} = {v}\n" for k, v in g.items())
    text += "\n[forward t]\n" + "".join(
        f"{k} = {', '.join(v) if isinstance(v, list) else v}\n" for k, v in fwd.items())
    d = smtpfwd.start(text, pump=pump, wait_ready=False)
    wait_for(lambda: len(worker_pids(d)) == n, IO_TIMEOUT, f"{n} workers ready")
    d.port = port
    return d


def test_workers_serve_byte_exact(smtpfwd, backend, pump):
    b = backend(echo)
    d = start_workers(smtpfwd, [b.addr], pump=pump)
    pids = worker_pids(d)
    assert len(pids) == 2 and os.getpid() not in pids
    for i in range(20):
        data = random_bytes(50_000 + i, f"w{i}")
        with connect("127.0.0.1", d.port) as c:
            got = exchange(c, data)
        assert sha(got) == sha(data)
    d.wait_sessions(20)
    assert all(s["result"] == "forwarded" for s in d.sessions())


def test_max_per_ip_holds_across_workers(smtpfwd, backend):
    """Two sessions may land on different workers; the third from the same
    address is refused whichever worker takes it."""
    b = backend(greeter)
    d = start_workers(smtpfwd, [b.addr], max_per_ip=2)
    held = []
    try:
        for _ in range(2):
            c = connect("127.0.0.1", d.port)
            held.append(c)
            assert recv_reply(c).startswith(b"220 ")
        for _ in range(6):   # whichever worker the kernel picks
            with connect("127.0.0.1", d.port) as c:
                assert recv_reply(c).startswith(b"421 4.7.0 ")
    finally:
        for c in held:
            c.close()


def test_metrics_cover_all_workers(smtpfwd, backend):
    b = backend(greeter)
    stats = free_port()
    d = start_workers(smtpfwd, [b.addr], glob={"stats_listen": f"127.0.0.1:{stats}"})
    for _ in range(10):
        with connect("127.0.0.1", d.port) as c:
            assert recv_reply(c).startswith(b"220 ")
    d.wait_sessions(10)
    # the sessions were spread by the kernel; the counter sees all of them
    body = urllib.request.urlopen(f"http://127.0.0.1:{stats}/metrics",
                                  timeout=IO_TIMEOUT).read().decode()
    line = [l for l in body.splitlines()
            if l.startswith('smtpfwd_sessions_total{forward="t",result="forwarded"}')]
    assert line and int(line[0].split()[-1]) == 10, body


def test_workers_reload_and_drain(smtpfwd, backend):
    b = backend(echo)
    d = start_workers(smtpfwd, [b.addr], glob={"shutdown_timeout": 20})
    with connect("127.0.0.1", d.port) as c:
        c.sendall(b"before\r\n")
        assert recv_reply(c) == b"before\r\n"
        d.signal(signal.SIGHUP)
        wait_for(lambda: len(d.events("reload")) >= 2, IO_TIMEOUT,
                 "both workers to reload")
        c.sendall(b"after reload\r\n")
        assert recv_reply(c) == b"after reload\r\n"
        d.signal(signal.SIGTERM)
        wait_for(lambda: not is_listening(d.port), 5, "the listeners to close")
        c.sendall(b"during drain\r\n")
        assert recv_reply(c) == b"during drain\r\n"
    assert d.wait_exit() == 0


def test_crashed_worker_is_restarted(smtpfwd, backend):
    b = backend(echo)
    d = start_workers(smtpfwd, [b.addr])
    victim = sorted(worker_pids(d))[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(worker_pids(d)) == 3, IO_TIMEOUT, "a new worker")
    for i in range(5):
        with connect("127.0.0.1", d.port) as c:
            c.sendall(b"x\r\n")
            assert recv_reply(c) == b"x\r\n"


def test_group_sigterm_still_drains(smtpfwd, backend):
    """systemd and Ctrl-C signal the whole process group: every worker
    gets SIGTERM from the kernel and again from the master. That is one
    drain, not "stop now"; a second SIGTERM to the master cuts it."""
    b = backend(echo)
    d = start_workers(smtpfwd, [b.addr], glob={"shutdown_timeout": 30})
    with connect("127.0.0.1", d.port) as c:
        c.sendall(b"before\r\n")
        assert recv_reply(c) == b"before\r\n"
        for pid in worker_pids(d) | {d.pid}:
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not is_listening(d.port), 5, "the listeners to close")
        c.sendall(b"still here\r\n")
        assert recv_reply(c) == b"still here\r\n"
        d.signal(signal.SIGTERM)
        assert d.wait_exit(timeout=5) == 0
    assert [s["reason"] for s in d.sessions()] == ["shutdown"]
