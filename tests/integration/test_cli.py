"""Command line: -V, -h, -t (file and quick mode), refusing bad configs,
quick mode forwarding, startup log lines."""

import re
import subprocess

import pytest

from conftest import (BIN, IO_TIMEOUT, base_env, connect, exchange, free_port,
                      ini, random_bytes, recv_all, sha)


def run(args, timeout=IO_TIMEOUT):
    return subprocess.run([BIN] + args, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout,
                          env=base_env())


def test_version():
    r = run(["-V"])
    assert r.returncode == 0, r.stderr
    assert re.search(r"\d+\.\d+\.\d+", r.stdout), r.stdout


def test_help():
    r = run(["-h"])
    assert r.returncode == 0, r.stderr
    assert "-c" in r.stdout and "-t" in r.stdout, r.stdout


def test_unknown_option_fails():
    r = run(["--no-such-option"])
    assert r.returncode != 0


def test_check_valid_file(workdir):
    cfg = workdir / "ok.ini"
    cfg.write_text(
        "; every key with a sensible value\n"
        "[global]\n"
        "log_level = debug\n"
        "log_format = json\n"
        "syslog = no\n"
        "max_connections = 100\n"
        "workers = 1\n"
        "shutdown_timeout = 5s\n"
        "\n"
        "[forward smtp]\n"
        f"listen = 127.0.0.1:{free_port()}, [::1]:{free_port('::1')}\n"
        "backend = 127.0.0.1:2525, [::1]:2525\n"
        "allow = 127.0.0.0/8, ::1/128, 192.0.2.0/24, 2001:db8::/32\n"
        "deny = 127.0.0.5/32\n"
        "max_per_ip = 10\n"
        "connect_timeout = 3\n"
        "idle_timeout = 10m\n"
        "proxy_protocol = v2\n"
        "log_greeting = no\n"
        "tls = off\n"
        "\n"
        "[forward submission]\n"
        f"listen = 127.0.0.1:{free_port()}\n"
        "backend = 127.0.0.1:587\n"
        "proxy_protocol = v1\n")
    r = run(["-t", "-c", str(cfg)])
    assert r.returncode == 0, f"stdout={r.stdout!r} stderr={r.stderr!r}"
    assert "ok" in r.stdout.lower(), r.stdout


# Several kinds of error in one file; each must be reported at its line.
BAD_CONFIG = """\
[global]
log_level = loud
max_connections = 10
bogus_key = 1

[forward a]
listen = 127.0.0.1:2525
backend = 127.0.0.1:99999, 127.0.0.1:25
allow = 10.0.0.0/33
colour = blue

[forward b]
listen = 127.0.0.1:2525

[forward c]
listen = 300.1.1.1:25, 127.0.0.1:2626
backend = 127.0.0.1:25
proxy_protocol = v3
deny = not-a-cidr
"""

EXPECTED_ERRORS = {
    2: "log_level",
    4: "bogus_key",
    8: "99999",
    9: "10.0.0.0/33",
    10: "colour",
    12: "backend",      # [forward b] has no backend: reported at its header
    13: "2525",         # duplicate listen address
    16: "300.1.1.1",
    18: "v3",
    19: "not-a-cidr",
}


def test_check_reports_each_error_with_its_line(workdir):
    cfg = workdir / "bad.ini"
    cfg.write_text(BAD_CONFIG)
    r = run(["-t", "-c", str(cfg)])
    assert r.returncode != 0
    assert "ok" not in r.stdout.lower()
    errors = {}
    for line in r.stderr.splitlines():
        m = re.match(re.escape(str(cfg)) + r":(\d+): (.+)$", line)
        assert m, f"not a FILE:LINE: message line: {line!r}\n{r.stderr}"
        if m.group(2).startswith("warning: "):
            continue  # e.g. no client identity method: not an error
        errors.setdefault(int(m.group(1)), []).append(m.group(2))
    for lineno, word in EXPECTED_ERRORS.items():
        assert lineno in errors, f"no error reported for line {lineno}:\n{r.stderr}"
        assert any(word in msg for msg in errors[lineno]), \
            f"line {lineno}: expected a message mentioning {word!r}, got {errors[lineno]}"
    unexpected = set(errors) - set(EXPECTED_ERRORS)
    assert not unexpected, f"errors at unexpected lines {unexpected}:\n{r.stderr}"


@pytest.mark.parametrize("body,lineno", [
    ("[global]\n\n[forward x]\nlisten = 127.0.0.1:1\n", 3),           # no backend
    ("[forward x]\nbackend = 127.0.0.1:25\n", 1),                      # no listen
    ("[global]\nlog_format = xml\n", 2),
    ("[forward x]\nlisten = 127.0.0.1:1\nbackend = 127.0.0.1:25\nmax_per_ip = -3\n", 4),
    ("[forward x]\nlisten = 127.0.0.1:1\nbackend = 127.0.0.1:25\nidle_timeout = soon\n", 4),
    ("[nonsense]\n", 1),
    ("[forward x]\nlisten = 127.0.0.1:1\nbackend = [::1:25\n", 3),
    ("[forward x]\nlisten = 127.0.0.1:1, 127.0.0.1:1\nbackend = 127.0.0.1:25\n", 2),
])
def test_check_single_errors(workdir, body, lineno):
    cfg = workdir / "one.ini"
    cfg.write_text(body)
    r = run(["-t", "-c", str(cfg)])
    assert r.returncode != 0, f"accepted:\n{body}"
    assert f"{cfg}:{lineno}: " in r.stderr, f"expected an error at line {lineno}:\n{r.stderr}"


def test_daemon_refuses_to_start_on_errors(workdir):
    cfg = workdir / "bad.ini"
    cfg.write_text(BAD_CONFIG)
    r = run(["-c", str(cfg)])
    assert r.returncode != 0
    assert f"{cfg}:2: " in r.stderr and f"{cfg}:16: " in r.stderr, r.stderr


def test_missing_config_file(workdir):
    r = run(["-t", "-c", str(workdir / "absent.ini")])
    assert r.returncode != 0
    assert "absent.ini" in r.stderr


def test_quick_mode_check():
    r = run(["-t", "-l", f"127.0.0.1:{free_port()}", "-b", "127.0.0.1:2525", "-P", "v2"])
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout.lower()
    r = run(["-t", "-l", "127.0.0.1:99999", "-b", "127.0.0.1:2525"])
    assert r.returncode != 0
    assert r.stderr.strip()
    r = run(["-t", "-l", f"127.0.0.1:{free_port()}"])
    assert r.returncode != 0, "a listen address without a backend must be refused"


def test_startup_log_lines(smtpfwd):
    p1, p2 = free_port(), free_port()
    d = smtpfwd.start(ini({}, {
        "one": {"listen": f"127.0.0.1:{p1}", "backend": "127.0.0.1:1"},
        "two": {"listen": f"127.0.0.1:{p2}", "backend": "127.0.0.1:1"},
    }))
    recs = d.records()
    listens = [r for r in recs if r["event"] == "listen"]
    assert {(r.get("forward"), r.get("addr")) for r in listens} == {
        ("one", f"127.0.0.1:{p1}"), ("two", f"127.0.0.1:{p2}")}, d.describe()
    events = [r["event"] for r in recs]
    assert events.index("ready") > max(i for i, e in enumerate(events) if e == "listen")
    for r in recs:
        assert r["level"] in ("error", "warn", "info", "debug")


def test_quick_mode_forwards(smtpfwd, backend, pump):
    """-l/-b pairs (repeatable) run forwards without a file."""
    b1 = backend(lambda c: exchange(c, b"one" * 1000))
    b2 = backend(lambda c: exchange(c, b"two" * 1000))
    p1, p2 = free_port(), free_port()
    d = smtpfwd.start(args=["-l", f"127.0.0.1:{p1}", "-b", b1.addr,
                            "-l", f"127.0.0.1:{p2}", "-b", b2.addr], pump=pump)
    for port, want, b in ((p1, b"one" * 1000, b1), (p2, b"two" * 1000, b2)):
        up = random_bytes(5000, port)
        with connect("127.0.0.1", port) as c:
            got = exchange(c, up)
            assert got == want
            [rx] = b.wait_results(1)
            assert sha(rx) == sha(up)
            s = d.session_for(c)
            assert s["result"] == "forwarded"
            assert s["backend"] == b.addr


def test_quick_mode_proxy_v1(smtpfwd, backend):
    def handler(c):
        got = recv_all(c)
        c.sendall(b"bye")
        return got
    b = backend(handler)
    p = free_port()
    smtpfwd.start(args=["-l", f"127.0.0.1:{p}", "-b", b.addr, "-P", "v1"])
    with connect("127.0.0.1", p) as c:
        cport = c.getsockname()[1]
        assert exchange(c, b"hello") == b"bye"
    [rx] = b.wait_results(1)
    assert rx == f"PROXY TCP4 127.0.0.1 127.0.0.1 {cport} {p}\r\n".encode() + b"hello"


def test_log_level_warn_hides_session_lines(smtpfwd, backend):
    from conftest import is_listening, wait_for
    b = backend(lambda c: exchange(c, b"x"))
    port = free_port()
    d = smtpfwd.start(ini({"log_level": "warn"},
                          {"t": {"listen": f"127.0.0.1:{port}", "backend": b.addr}}),
                      wait_ready=False)
    wait_for(lambda: is_listening(port), IO_TIMEOUT, "the listener")
    with connect("127.0.0.1", port) as c:
        assert exchange(c, b"y") == b"x"
    b.wait_results(1)
    assert d.stop() == 0
    recs = d.records()
    assert all(r["level"] in ("warn", "error") for r in recs), d.describe()


def test_log_level_debug_keeps_session_lines(smtpfwd, backend):
    b = backend(lambda c: exchange(c, b"x"))
    port = free_port()
    d = smtpfwd.start(ini({"log_level": "debug"},
                          {"t": {"listen": f"127.0.0.1:{port}", "backend": b.addr}}))
    with connect("127.0.0.1", port) as c:
        assert exchange(c, b"y") == b"x"
    assert d.session_for(c)["result"] == "forwarded"
