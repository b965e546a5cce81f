"""Active SMTP health checks (health_interval) and GET /health."""

import socket
import threading
import urllib.error
import urllib.request

from conftest import (IO_TIMEOUT, closed_port, connect, free_port, ini,
                      recv_reply, wait_for)

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def health(port):
    try:
        r = urllib.request.urlopen(f"http://127.0.0.1:{port}/health",
                                   timeout=IO_TIMEOUT)
        return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Greeter:
    """A tiny SMTP-ish server that records what each connection sent
    before its greeting was answered."""

    def __init__(self, port=0, proxy=False):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.proxy = proxy
        self.first_bytes = []
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        c.settimeout(IO_TIMEOUT)
        try:
            head = b""
            if self.proxy:
                while len(head) < 16:
                    chunk = c.recv(16 - len(head))
                    if not chunk:
                        return
                    head += chunk
                rest = int.from_bytes(head[14:16], "big")
                while len(head) < 16 + rest:
                    head += c.recv(16 + rest - len(head))
            c.sendall(b"220 health.test ESMTP\r\n")
            data = c.recv(100)
            with self.lock:
                self.first_bytes.append((head, data))
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


def test_failing_backend_skipped_then_back(smtpfwd):
    dead_port = closed_port()
    good = Greeter()
    stats = free_port()
    port = free_port()
    d = smtpfwd.start(ini({"health_interval": 1, "stats_listen": f"127.0.0.1:{stats}"},
                          {"t": {"listen": f"127.0.0.1:{port}",
                                 "backend": [f"127.0.0.1:{dead_port}", good.addr],
                                 "client_identity": "none"}}))
    d.wait_record(lambda r: r.get("event") == "health" and "check failed" in r.get("msg", ""),
                  what="a failed health check")
    with connect("127.0.0.1", port) as c:
        assert recv_reply(c) == b"220 health.test ESMTP\r\n"
    s = d.session_for(c)
    assert s["backend"] == good.addr
    # the dead backend was not tried for the session: no connect failure
    assert not [r for r in d.events("backend_failed")], d.events("backend_failed")
    # it comes back: the checks notice
    back = Greeter(port=dead_port)
    d.wait_record(lambda r: r.get("event") == "health" and "healthy again" in r.get("msg", ""),
                  timeout=IO_TIMEOUT, what="the backend to be healthy again")
    with connect("127.0.0.1", port) as c:
        assert recv_reply(c).startswith(b"220 ")
    assert d.session_for(c)["backend"] == back.addr
    status, body = health(stats)
    assert status == 200, body
    good.close()
    back.close()


def test_health_endpoint_503_when_no_backend(smtpfwd):
    stats = free_port()
    port = free_port()
    smtpfwd.start(ini({"health_interval": 1, "stats_listen": f"127.0.0.1:{stats}"},
                      {"t": {"listen": f"127.0.0.1:{port}",
                             "backend": f"127.0.0.1:{closed_port()}",
                             "client_identity": "none"}}))
    wait_for(lambda: health(stats)[0] == 503, IO_TIMEOUT, "/health to say 503")
    assert "t failing" in health(stats)[1]


def test_check_sends_proxy_local_header_and_quit(smtpfwd):
    g = Greeter(proxy=True)
    port = free_port()
    d = smtpfwd.start(ini({"health_interval": 1},
                          {"t": {"listen": f"127.0.0.1:{port}", "backend": g.addr,
                                 "client_identity": "proxy-v2"}}))
    wait_for(lambda: g.first_bytes, IO_TIMEOUT, "a health check")
    head, data = g.first_bytes[0]
    assert head[:12] == V2_SIG
    assert head[12] == 0x20, "command LOCAL"
    assert head[13] == 0x00, "family UNSPEC"
    assert data == b"QUIT\r\n"
    assert not d.events("health"), "a passing check logs nothing"
    g.close()
