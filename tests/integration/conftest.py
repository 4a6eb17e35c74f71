"""Shared fixtures and helpers for the parleyd integration tests.

The tests drive the real `parleyd` binary over 127.0.0.1 with independent
clients: `requests`, `websockets` (asyncio API, 10.x) and two small raw-socket
helpers defined here (RawHTTP for byte-exact requests, RawWS for hand-made
WebSocket frames).

Environment:
  PARLEYD     path of the server binary (default: <repo>/build/parleyd)
  PARLEY_WEB  default static web root (default: <repo>/web)
  PARLEY_TEST_SLOW  factor (default 1) stretching every timeout below, for a
              slow server build (ThreadSanitizer: `make tsan` sets 10)

Every server started through the `parley` factory is stopped by PID at
teardown (SIGTERM, bounded wait, SIGKILL). Teardown also fails the test if the
server died on its own during the test (contract point 7: bad input never
crashes the server), unless the test set `srv.expect_exit = True`.
"""

import asyncio
import base64
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import websockets
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parents[2]
PARLEYD = os.environ.get("PARLEYD", str(REPO / "build" / "parleyd"))
PARLEY_WEB = os.environ.get("PARLEY_WEB", str(REPO / "web"))

HOST = "127.0.0.1"
SLOW = max(1.0, float(os.environ.get("PARLEY_TEST_SLOW") or 1))
START_TIMEOUT = 10.0 * SLOW  # s, bound on waiting for the "listening" line
STOP_TIMEOUT = 15.0 * SLOW  # s, bound on a SIGTERM stop before SIGKILL
IO_TIMEOUT = 10.0 * SLOW  # s, generous bound on any single network wait

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------


# Every test client comes from 127.0.0.1 and many register users or open
# hundreds of sockets at once: the rate limits are off unless a test (the
# protection tests) passes its own values, which come later and win.
NO_LIMITS = ["--rate-frames", "0", "--rate-msgs", "0", "--rate-user-msgs", "0",
             "--rate-handshakes", "0", "--rate-logins", "0", "--admit-rate", "0",
             "--max-user-conns", "100000"]

TOKENS = {}  # port -> token of the server's test user


def token_for(port):
    """Registers a test user on the server at port once; returns its token."""
    if port not in TOKENS:
        name = "t" + os.urandom(6).hex()
        r = requests.post(f"http://{HOST}:{port}/v1/users",
                          json={"username": name, "password": "password-" + name},
                          timeout=30 * SLOW)
        assert r.status_code == 201, r.text
        TOKENS[port] = r.json()["token"]
    return TOKENS[port]


class Server:
    """A running parleyd. Attributes: port, url, ws_url, proc, log_path."""

    def __init__(self, proc, port, log_path, data_dir, web_dir, scheme="http"):
        self.proc = proc
        self.port = port
        self.scheme = scheme
        self.url = f"{scheme}://{HOST}:{port}"
        self._token = None
        self.log_path = log_path
        self.data_dir = data_dir
        self.web_dir = web_dir
        self.expect_exit = False  # set by tests that stop the server themselves
        self._stdout_thread = None

    @property
    def token(self):
        """A token of a user registered on first use (WebSockets need one)."""
        return token_for(self.port)

    @property
    def ws_url(self):
        return f"ws://{HOST}:{self.port}/v1/ws?token={self.token}"

    def log(self, tail=4000):
        try:
            return Path(self.log_path).read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def signal(self, signum):
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout):
        """Waits for exit; returns the exit status or None on timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        """SIGTERM, bounded wait, SIGKILL. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._stdout_thread is not None:
            self._stdout_thread.join(timeout=5)
        return self.proc.returncode


def _drain(fd):
    """Reads a pipe to EOF so the child never blocks on a full pipe."""
    try:
        while True:
            if not os.read(fd, 65536):
                break
    except OSError:
        pass
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def start_server(tmp_path, *flags, web_dir=None, name="srv"):
    """Starts parleyd on a free port; returns a Server once it listens."""
    if not os.access(PARLEYD, os.X_OK):
        pytest.fail(f"server binary not found or not executable: {PARLEYD} "
                    "(build it with `make`, or set PARLEYD)")
    base = Path(tmp_path) / name
    n = 0
    while base.exists() and n < 100:  # several servers in one test
        n += 1
        base = Path(tmp_path) / f"{name}{n}"
    base.mkdir(parents=True)
    data_dir = base / "data"
    web = str(web_dir if web_dir is not None else PARLEY_WEB)
    log_path = base / "parleyd.log"
    argv = [PARLEYD, "--port", "0", "--listen", HOST, "--data-dir", str(data_dir),
            "--web-dir", web, "--threads", "2", *NO_LIMITS, *[str(f) for f in flags]]
    logf = open(log_path, "wb")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=logf, close_fds=True)
    finally:
        logf.close()  # the child holds its own copy
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + START_TIMEOUT
    port = None
    while time.monotonic() < deadline and b"\n" not in buf:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    line = buf.split(b"\n", 1)[0].decode(errors="replace")
    scheme = "http"
    for sch in ("http", "https"):
        prefix = f"parleyd listening on {sch}://{HOST}:"
        if line.startswith(prefix) and line[len(prefix):].isdigit():
            port, scheme = int(line[len(prefix):]), sch
    TOKENS.pop(port, None)  # a token of an earlier server on this port is void
    srv = Server(proc, port, log_path, data_dir, web, scheme)
    # Keep draining stdout (nothing else is expected there) in the background.
    dup = os.dup(fd)
    proc.stdout.close()
    t = threading.Thread(target=_drain, args=(dup,), daemon=True)
    t.start()
    srv._stdout_thread = t
    if port is None:
        srv.kill()
        pytest.fail(f"parleyd did not print its listening line within {START_TIMEOUT}s; "
                    f"stdout={buf!r}\nlog:\n{srv.log()}")
    return srv


@pytest.fixture
def parley(tmp_path):
    """Factory: parley(*flags, web_dir=None) -> Server. Stops them all."""
    started = []

    def factory(*flags, web_dir=None):
        srv = start_server(tmp_path, *flags, web_dir=web_dir)
        started.append(srv)
        return srv

    yield factory
    problems = []
    for srv in started:
        crashed = not srv.expect_exit and not srv.alive()
        status = srv.kill()
        if crashed:
            problems.append(f"parleyd (port {srv.port}) exited on its own during the test "
                            f"with status {status}; log tail:\n{srv.log()}")
        elif not srv.expect_exit and status != 0:
            problems.append(f"parleyd (port {srv.port}) exited with status {status} on "
                            f"SIGTERM; log tail:\n{srv.log()}")
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def server(parley):
    """A parleyd with default flags (web root PARLEY_WEB)."""
    return parley()


@pytest.fixture
def webroot(tmp_path):
    """A static web root with known files, and a secret file next to it."""
    root = tmp_path / "webroot"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("TOP-SECRET-OUTSIDE-WEBROOT\n")
    (tmp_path / "passwd").write_text("TOP-SECRET-OUTSIDE-WEBROOT passwd\n")
    files = {
        "index.html": b"<!doctype html><title>parley</title><p>INDEX-PAGE</p>\n",
        "style.css": b"body { color: #333 }\n",
        "app.js": b"console.log('parley');\n",
        "data.json": b'{"ok": true}\n',
        "logo.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>\n',
        "pic.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
        "notes.txt": b"plain notes\n",
        "hello world.txt": b"spaced name\n",
        "sub/page.html": b"<p>SUB-PAGE</p>\n",
        ".secret": b"TOP-SECRET-HIDDEN-FILE\n",
        "sub/.hidden.txt": b"TOP-SECRET-HIDDEN-IN-SUB\n",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    os.symlink(secret, root / "escape.txt")  # file symlink leaving the root
    os.symlink(outside, root / "outdir")  # directory symlink leaving the root
    return {"root": root, "files": files, "secret_marker": b"TOP-SECRET"}


# --------------------------------------------------------------------------
# Raw HTTP
# --------------------------------------------------------------------------


class Response:
    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lower-case name, value)
        self.body = body
        self.raw_head = raw_head

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} body={self.body[:200]!r}>"


class RawHTTP:
    """A raw TCP client: send exact bytes, parse responses, detect EOF."""

    def __init__(self, port, timeout=IO_TIMEOUT):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Reads more bytes into buf; returns False on EOF/reset."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out waiting for data from the server")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("timed out waiting for data from the server")
        except (ConnectionResetError, BrokenPipeError):
            return False
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_response(self, head_only=False, timeout=None):
        """Reads and returns one response (Content-Length framed)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise EOFError(f"connection closed before a full response head; got {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ", 2)
        assert len(parts) >= 2, f"bad status line {lines[0]!r}"
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for ln in lines[1:]:
            k, _, v = ln.decode("latin-1").partition(":")
            headers.append((k.strip().lower(), v.strip()))
        resp = Response(version, status, reason, headers, b"", head)
        no_body = head_only or status in (204, 304) or 100 <= status < 200
        if not no_body:
            cl = resp.header("content-length")
            assert cl is not None, f"response without Content-Length: {head!r}"
            n = int(cl)
            while len(self.buf) < n:
                if not self._fill(deadline):
                    raise EOFError(f"connection closed inside a body; got {self.buf!r}")
            resp.body, self.buf = self.buf[:n], self.buf[n:]
        return resp

    def request(self, data, head_only=False):
        self.send(data)
        return self.read_response(head_only=head_only)

    def read_until_eof(self, timeout=None):
        """Returns every byte until the server closes (bounded)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._fill(deadline):
            pass
        data, self.buf = self.buf, b""
        return data

    def closed_by_server(self, timeout=None):
        """True if the server closes the connection (EOF/reset) in time and
        sends nothing more before that; False on timeout."""
        try:
            rest = self.read_until_eof(timeout)
        except TimeoutError:
            return False
        assert rest == b"", f"unexpected bytes before EOF: {rest[:300]!r}"
        return True


def http_get(port, path, headers=b"", method=b"GET"):
    """One request on a fresh connection; returns the Response."""
    with RawHTTP(port) as c:
        req = method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
        return c.request(req, head_only=(method == b"HEAD"))


def assert_error_closes(conn, resp, status):
    """An error response: the status, Connection: close, a JSON error body,
    then the server closes the connection."""
    assert resp.status == status, resp
    assert (resp.header("connection") or "").lower() == "close", resp
    assert resp.header("content-type", "").startswith("application/json"), resp
    err = resp.json()["error"]
    assert isinstance(err["code"], str) and err["code"], resp
    assert conn.closed_by_server(), "the server did not close the connection after an error"


# --------------------------------------------------------------------------
# Raw WebSocket
# --------------------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def make_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
    """One client frame. `length` overrides the advertised payload length."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class RawWS(RawHTTP):
    """A hand-made WebSocket client: handshake by hand, then raw frames."""

    def __init__(self, port, path="/v1/ws", extra_headers=b"", timeout=IO_TIMEOUT, hello=True):
        super().__init__(port, timeout)
        if path == "/v1/ws":
            path += "?token=" + token_for(port)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n").encode() + extra_headers + b"\r\n"
        self.send(req)
        resp = self.read_response(head_only=True)
        if resp.status != 101:
            self.close()
            raise AssertionError(f"handshake failed: {resp!r}")
        assert resp.header("sec-websocket-accept") == ws_accept(key), resp
        self.handshake = resp
        if hello:  # the server greets every session first
            assert json.loads(self.recv_text())["type"] == "hello"

    def send_frame(self, opcode, payload=b"", **kw):
        self.send(make_frame(opcode, payload, **kw))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def recv_frame(self, timeout=None):
        """Returns (fin, opcode, payload) of the next server frame.
        Raises EOFError if the connection ends first."""
        deadline = time.monotonic() + (timeout or self.timeout)

        def need(n):
            while len(self.buf) < n:
                if not self._fill(deadline):
                    raise EOFError(f"connection closed inside/before a frame; buf={self.buf!r}")

        need(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert b1 & 0x80 == 0, "server frames must not be masked"
        assert b0 & 0x70 == 0, "server frames must not set RSV bits"
        n = b1 & 0x7F
        off = 2
        if n == 126:
            need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        need(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_text(self, timeout=None):
        """Next data message as str, answering nothing, skipping pings."""
        deadline = time.monotonic() + (timeout or self.timeout)
        for _ in range(1000):
            fin, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op in (OP_PING, OP_PONG):
                continue
            assert op == OP_TEXT and fin, f"expected a whole text frame, got op={op} fin={fin}"
            return payload.decode("utf-8")
        raise AssertionError("too many control frames")

    def recv_close(self, timeout=None):
        """Reads frames until a close frame; returns (code or None, reason)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        for _ in range(10000):
            fin, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op == OP_CLOSE:
                if len(payload) >= 2:
                    return struct.unpack("!H", payload[:2])[0], payload[2:]
                return None, b""
        raise AssertionError("no close frame among 10000 frames")


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def parse_metrics(text):
    """Prometheus text -> {"name" or 'name{labels}': float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        out[key.strip()] = float(val)
    return out


def get_metrics(port):
    resp = http_get(port, b"/metrics")
    assert resp.status == 200, resp
    return parse_metrics(resp.body.decode())


def poll_metric(port, name, want, timeout=IO_TIMEOUT):
    """Polls /metrics until metric == want (bounded); returns the last value."""
    deadline = time.monotonic() + timeout
    val = None
    for _ in range(10000):
        val = get_metrics(port).get(name)
        if val == want or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return val


# --------------------------------------------------------------------------
# websockets (asyncio) helpers
# --------------------------------------------------------------------------

T = 10 * SLOW  # generous bound on any single await


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60 * SLOW))


async def connect(srv, subprotocols=("parley.v1.json",), hello=True, **kw):
    kw.setdefault("ping_interval", None)
    kw.setdefault("close_timeout", 5)
    kw.setdefault("open_timeout", T)
    ws = await asyncio.wait_for(
        websockets.connect(srv.ws_url, subprotocols=list(subprotocols) or None, **kw),
        kw["open_timeout"] + 5)
    if hello:  # the server greets every session first
        assert json.loads(await asyncio.wait_for(ws.recv(), T))["type"] == "hello"
    return ws


async def request(ws, obj_or_text):
    text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text)
    await ws.send(text)
    return await asyncio.wait_for(ws.recv(), T)


async def expect_close(ws, code):
    """Waits for the server to close; asserts the close code it sent."""
    try:
        for _ in range(100):
            await asyncio.wait_for(ws.recv(), T)
    except ConnectionClosed:
        pass
    await asyncio.wait_for(ws.wait_closed(), T)
    assert ws.close_code == code, (ws.close_code, ws.close_reason)


async def assert_ping_pong(ws):
    reply = await request(ws, {"type": "ping"})
    assert json.loads(reply) == {"type": "pong"}


def assert_ws_works(srv):
    async def go():
        ws = await connect(srv)
        try:
            await assert_ping_pong(ws)
        finally:
            await ws.close()
    run(go())
