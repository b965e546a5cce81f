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


def test_quick_mode_identity_choices():
    """-P v1|v2|xclient|none; without -P the identity advice is printed."""
    base = [BIN, "-t", "-l", f"127.0.0.1:{free_port()}", "-b", "127.0.0.1:2525"]
    r = subprocess.run(base, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "client_identity" in r.stderr, r.stderr
    for choice in ("v1", "v2", "xclient", "none"):
        r = subprocess.run(base + ["-P", choice], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and r.stderr == "", (choice, r.stderr)
    r = subprocess.run(base + ["-P", "v3"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "-P takes" in r.stderr


def test_environment_client_identity():
    env = base_env() | {"SMTPFWD_LISTEN": f"127.0.0.1:{free_port()}",
                        "SMTPFWD_BACKEND": "127.0.0.1:25",
                        "SMTPFWD_CLIENT_IDENTITY": "none"}
    r = subprocess.run([BIN, "-t"], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    env["SMTPFWD_PROXY_PROTOCOL"] = "v2"
    r = subprocess.run([BIN, "-t"], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "environment:4: [forward env]: proxy_protocol = v2 contradicts" in r.stderr, r.stderr
