"""valgrind --leak-check=full over a representative run: plaintext in
splice and copy mode, implicit TLS, STARTTLS, PROXY v2, XCLIENT-less
identity none, a denied client, a dead backend, a reload, then SIGTERM.
No invalid read or write, no leak, exit 0."""

import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile

import pytest

from conftest import (BIN, IO_TIMEOUT, base_env, closed_port, connect,
                      exchange, free_port, ini, random_bytes, recv_reply, sha,
                      wait_for)

VALGRIND = shutil.which("valgrind")


def _sanitized():
    with open(BIN, "rb") as f:
        return b"__asan_init" in f.read()


pytestmark = [
    pytest.mark.skipif(VALGRIND is None, reason="valgrind is not installed"),
    pytest.mark.skipif(VALGRIND is not None and _sanitized(),
                       reason="an ASan build cannot run under valgrind"),
]


def smtp_backend(conn):
    """Enough SMTP for smtplib: greeting, EHLO, a transaction, QUIT; then
    raw echo for anything that is not a command it knows."""
    conn.sendall(b"220 vg.example ESMTP\r\n")
    f = conn.makefile("rb")
    in_data = False
    for line in f:
        if in_data:
            if line == b".\r\n":
                in_data = False
                conn.sendall(b"250 2.0.0 queued\r\n")
            continue
        verb = line[:4].upper()
        if verb == b"EHLO":
            conn.sendall(b"250-vg.example\r\n250 PIPELINING\r\n")
        elif verb == b"DATA":
            in_data = True
            conn.sendall(b"354 go\r\n")
        elif verb == b"QUIT":
            conn.sendall(b"221 bye\r\n")
            return True
        elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            conn.sendall(b"250 ok\r\n")
        elif verb == b"BULK":
            got = f.read(int(line.split()[1]))
            conn.sendall(sha(got).encode() + b"\r\n")
        else:
            conn.sendall(b"500 what\r\n")
    return True


def make_cert(d):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-keyout", "vg.key", "-out", "vg.crt", "-subj", "/CN=vg.example"],
                   cwd=d, capture_output=True, check=True, timeout=30)
    return os.path.join(d, "vg.crt"), os.path.join(d, "vg.key")


def test_valgrind_clean(workdir, backend):
    b = backend(smtp_backend)
    tmp = tempfile.mkdtemp(prefix="smtpfwd-vg-")
    try:
        crt, key = make_cert(tmp)
        plain, implicit, sub, denied, dead, stats = (free_port() for _ in range(6))
        cfg = workdir / "vg.ini"
        cfg.write_text(ini({"log_level": "debug", "stats_listen": f"127.0.0.1:{stats}"}, {
            "plain": {"listen": f"127.0.0.1:{plain}", "backend": b.addr,
                      "client_identity": "none"},
            "implicit": {"listen": f"127.0.0.1:{implicit}", "backend": b.addr,
                         "tls": "implicit", "tls_cert": crt, "tls_key": key,
                         "client_identity": "none"},
            "sub": {"listen": f"127.0.0.1:{sub}", "backend": b.addr,
                    "tls": "starttls", "tls_cert": crt, "tls_key": key,
                    "tls_required": "yes", "client_identity": "none"},
            "denied": {"listen": f"127.0.0.1:{denied}", "backend": b.addr,
                       "deny": "127.0.0.0/8", "client_identity": "none"},
            "dead": {"listen": f"127.0.0.1:{dead}", "backend": f"127.0.0.1:{closed_port()}",
                     "client_identity": "none"},
        }))
        vlog = os.path.join(tmp, "valgrind.log")
        argv = [VALGRIND, "--leak-check=full", "--show-leak-kinds=definite,indirect",
                "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
                f"--log-file={vlog}", BIN, "-c", str(cfg)]
        errlog = open(os.path.join(tmp, "stderr"), "wb")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=errlog, env=base_env())
        try:
            wait_for(lambda: b"event=ready" in open(errlog.name, "rb").read(), 60,
                     "smtpfwd under valgrind to be ready")
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            for _ in range(3):
                s = smtplib.SMTP("127.0.0.1", plain, timeout=30)
                s.sendmail("a@example.org", ["b@example.org"], "Subject: vg\r\n\r\nhi\r\n")
                s.quit()
                s = smtplib.SMTP_SSL("127.0.0.1", implicit, timeout=30, context=ctx)
                s.sendmail("a@example.org", ["b@example.org"], "Subject: vg\r\n\r\nhi\r\n")
                s.quit()
                s = smtplib.SMTP("127.0.0.1", sub, timeout=30)
                s.ehlo()
                assert s.mail("a@example.org")[0] == 530
                s.starttls(context=ctx)
                s.sendmail("a@example.org", ["b@example.org"], "Subject: vg\r\n\r\nhi\r\n")
                s.quit()
            # a bulk transfer, long enough to leave the SMTP phase and splice
            data = random_bytes(2_000_000, "vg")
            with connect("127.0.0.1", plain, timeout=60) as c:
                assert recv_reply(c).startswith(b"220 ")
                c.sendall(b"EHLO vg\r\n")
                recv_reply(c)
                c.sendall(b"BULK %d\r\n" % len(data) + data)
                assert recv_reply(c) == sha(data).encode() + b"\r\n"
            with connect("127.0.0.1", denied, timeout=30) as c:
                assert recv_reply(c).startswith(b"554 5.7.1 ")
            with connect("127.0.0.1", dead, timeout=30) as c:
                assert recv_reply(c).startswith(b"421 4.4.1 ")
            with socket.create_connection(("127.0.0.1", stats), timeout=30) as c:
                c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                assert c.recv(100).startswith(b"HTTP/1.0 200")
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: b"event=reload" in open(errlog.name, "rb").read(), 60,
                     "the reload")
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            errlog.close()
        report = open(vlog).read()
        assert rc == 0, f"exit {rc}\n{report[-6000:]}"
        assert re.search(r"ERROR SUMMARY: 0 errors", report), report[-6000:]
        assert "definitely lost: 0 bytes" in report or "All heap blocks were freed" in report, \
            report[-6000:]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
