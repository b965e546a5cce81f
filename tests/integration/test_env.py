"""Containers: the forward can come from SMTPFWD_LISTEN / SMTPFWD_BACKEND /
SMTPFWD_PROXY_PROTOCOL when the command line names no -c and no -l/-b."""

import subprocess

from conftest import (BIN, base_env, closed_port, connect, free_port, ini,
                      recv_reply)


def greeter(conn):
    conn.sendall(b"220 env.test ESMTP\r\n")
    head = conn.recv(200)
    return head


def test_environment_defines_the_forward(smtpfwd, backend):
    b = backend(greeter)
    port = free_port()
    env = base_env() | {"SMTPFWD_LISTEN": f"127.0.0.1:{port}",
                        "SMTPFWD_BACKEND": f"127.0.0.1:{closed_port()}, {b.addr}",
                        "SMTPFWD_PROXY_PROTOCOL": "v1"}
    d = smtpfwd.start(None, env=env)
    with connect("127.0.0.1", port) as c:
        assert recv_reply(c) == b"220 env.test ESMTP\r\n"
        c.sendall(b"QUIT\r\n")
    [head] = b.wait_results(1)
    assert head.startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 ")
    s = d.session_for(c)
    assert s["forward"] == "env" and s["backend"] == b.addr


def test_file_wins_over_environment(smtpfwd, backend):
    b = backend(greeter)
    port, env_port = free_port(), free_port()
    env = base_env() | {"SMTPFWD_LISTEN": f"127.0.0.1:{env_port}",
                        "SMTPFWD_BACKEND": b.addr}
    d = smtpfwd.start(ini({}, {"file": {"listen": f"127.0.0.1:{port}", "backend": b.addr,
                                        "client_identity": "none"}}), env=env)
    assert [r["forward"] for r in d.events("listen")] == ["file"]


def test_environment_errors_name_the_variable_line():
    env = base_env() | {"SMTPFWD_LISTEN": "127.0.0.1:99999", "SMTPFWD_BACKEND": "127.0.0.1:25"}
    r = subprocess.run([BIN, "-t"], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "environment:2: listen 127.0.0.1:99999: bad port" in r.stderr, r.stderr
