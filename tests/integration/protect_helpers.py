"""Helpers for the protection and hostile-input tests (test_protect_*.py).

Every test here shows two things on one server:

  * the refusal: the documented answer (an error frame, an HTTP status, a
    close code) and the matching /metrics counter;
  * a well-behaved control client that is not affected: `Control` is two
    users in a direct conversation, connected from their own source address
    (CONTROL_SRC, so per-address limits of the attacker never touch it); at
    each checkpoint one of them sends a few messages over its WebSocket and
    the other must receive every one of them, in order, with gapless seqs.

Clients may bind to other 127.0.0.x source addresses to act as different
machines (Linux routes all of 127/8 to the loopback interface).

The conftest factory turns every rate limit off (NO_LIMITS); a test passes
the limits it exercises, and later flags win.
"""

import asyncio
import base64
import http.client
import json
import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatusCode

from conftest import HOST, OP_CLOSE, RawHTTP, RawWS, get_metrics, make_frame, ws_accept

PASSWORD = "correct horse battery"
T = 15.0  # generous bound on one wait (ASan builds are slow)
HTTP_TIMEOUT = 30.0
CONTROL_SRC = "127.0.0.200"  # the control client's own "machine"


def arun(coro, timeout=150):
    """Runs one test coroutine with a generous overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def uname(prefix="p"):
    return prefix + os.urandom(5).hex()


# --------------------------------------------------------------------------
# REST (http.client: it can bind a source address)
# --------------------------------------------------------------------------


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def error_code(self):
        try:
            return self.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None

    def __repr__(self):
        return f"<Resp {self.status} {self.headers} {self.body[:300]!r}>"


def rest(srv, method, path, body=None, token=None, src=None, headers=None):
    """One REST request on a fresh connection, optionally from address src."""
    h = dict(headers or {})
    data = None
    if token is not None:
        h["Authorization"] = "Bearer " + token
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    c = http.client.HTTPConnection(HOST, srv.port, timeout=HTTP_TIMEOUT,
                                   source_address=(src, 0) if src else None)
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        return Resp(r.status, r.getheaders(), r.read())
    finally:
        c.close()


def assert_error(resp, status, code):
    assert resp.status == status, (status, code, resp)
    assert resp.header("content-type", "").startswith("application/json"), resp
    err = resp.json()["error"]
    assert err["code"] == code, (status, code, resp)
    assert isinstance(err.get("message"), str), resp
    return err


def retry_after_header(resp):
    """The Retry-After header as an int of seconds (asserted present)."""
    v = resp.header("retry-after")
    assert v is not None and v.strip().isdigit(), f"no integer Retry-After: {resp!r}"
    return int(v)


class User:
    def __init__(self, srv, name, token, device, password=PASSWORD, src=None):
        self.srv = srv
        self.name = name
        self.token = token
        self.device = device
        self.password = password
        self.src = src

    def get(self, path):
        return rest(self.srv, "GET", path, token=self.token, src=self.src)

    def post(self, path, body=None):
        return rest(self.srv, "POST", path, body=body, token=self.token, src=self.src)

    def delete(self, path):
        return rest(self.srv, "DELETE", path, token=self.token, src=self.src)

    def __repr__(self):
        return f"<User {self.name} dev {self.device}>"


def register(srv, name=None, src=None, password=PASSWORD):
    name = name or uname()
    r = rest(srv, "POST", "/v1/users", {"username": name, "password": password}, src=src)
    assert r.status == 201, (name, r)
    j = r.json()
    return User(srv, j["user"], j["token"], j["device"], password, src)


def register_many(srv, n, src=None, prefix="p"):
    """n users, registered concurrently (the KDF runs in the server's pool)."""
    with ThreadPoolExecutor(max_workers=4) as ex:
        return list(ex.map(lambda _: register(srv, uname(prefix), src=src), range(n)))


def login(srv, name, password=PASSWORD, src=None):
    return rest(srv, "POST", "/v1/sessions", {"username": name, "password": password}, src=src)


def login_user(srv, user, src=None):
    r = login(srv, user.name, user.password, src=src or user.src)
    assert r.status == 200, r
    j = r.json()
    return User(srv, j["user"], j["token"], j["device"], user.password, src or user.src)


def direct(a, b):
    r = a.post("/v1/conversations", {"type": "direct", "with": b.name})
    assert r.status in (200, 201), r
    return r.json()["id"]


def group(admin, members, name="team"):
    r = admin.post("/v1/conversations",
                   {"type": "group", "name": name, "members": [m.name for m in members]})
    assert r.status == 201, r
    return r.json()["id"]


def history(user, conv, max_pages=200):
    """Every stored message of conv, in seq order (forward paging)."""
    out, after = [], 0
    for _ in range(max_pages):
        r = user.get(f"/v1/conversations/{conv}/messages?after={after}&limit=500")
        assert r.status == 200, r
        j = r.json()
        out.extend(j["messages"])
        if not j["more"]:
            return out
        after = j["messages"][-1]["seq"]
    raise AssertionError("history paging did not end")


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def close_key(code):
    return f'parley_ws_close_sent_total{{code="{code}"}}'


def status_key(status):
    return f'parley_http_responses_total{{status="{status}"}}'


def mval(m, key):
    return m.get(key, 0.0)


def wait_metrics(port, pred, what, timeout=T, get=None):
    """Polls /metrics until pred(metrics) holds (bounded); returns them."""
    get = get or (lambda: get_metrics(port))
    deadline = time.monotonic() + timeout
    m = None
    for _ in range(100000):
        m = get()
        if pred(m):
            return m
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for metrics: {what}; last: "
                         f"{ {k: v for k, v in (m or {}).items() if 'parley_' in k} }")


async def await_metrics(port, pred, what, timeout=T):
    """wait_metrics without blocking the event loop for long."""
    deadline = time.monotonic() + timeout
    m = None
    for _ in range(100000):
        m = get_metrics(port)
        if pred(m):
            return m
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for metrics: {what}; last: "
                         f"{ {k: v for k, v in (m or {}).items() if 'parley_' in k} }")


def rss_kb(pid):
    """VmRSS of a process in kB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc status")


# --------------------------------------------------------------------------
# Raw sockets (conftest's RawHTTP / RawWS, but bound to a source address)
# --------------------------------------------------------------------------


def raw_socket(port, src=None, rcvbuf=None, timeout=T):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if src:
            s.bind((src, 0))
        s.settimeout(timeout)
        s.connect((HOST, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        s.close()
        raise
    return s


def raw_conn(port, src=None, rcvbuf=None, timeout=T, cls=RawHTTP):
    """A RawHTTP (or RawWS) object on a socket from src, no handshake."""
    obj = cls.__new__(cls)
    obj.sock = raw_socket(port, src, rcvbuf, timeout)
    obj.timeout = timeout
    obj.buf = b""
    return obj


def upgrade_request(port, token=None, header_token=False, extra=b"", path="/v1/ws"):
    """(request bytes, key) of a WebSocket upgrade."""
    if token is not None and not header_token:
        path += "?token=" + token
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
           f"Sec-WebSocket-Version: 13\r\n").encode()
    if token is not None and header_token:
        req += f"Authorization: Bearer {token}\r\n".encode()
    return req + extra + b"\r\n", key


def ws_attempt(port, token=None, src=None, extra=b"", rcvbuf=None, header_token=False):
    """Tries an upgrade with a raw socket. Returns (RawWS, Response): on 101
    the hello has been read and the RawWS is open; otherwise the caller
    reads the body (Response.body is filled) and closes it."""
    ws = raw_conn(port, src, rcvbuf, cls=RawWS)
    try:
        req, key = upgrade_request(port, token, header_token, extra)
        ws.send(req)
        resp = ws.read_response(head_only=True)
        if resp.status == 101:
            assert resp.header("sec-websocket-accept") == ws_accept(key), resp
            hello = json.loads(ws.recv_text())
            assert hello["type"] == "hello", hello
        else:
            n = int(resp.header("content-length", "0"))
            deadline = time.monotonic() + T
            while len(ws.buf) < n:
                if not ws._fill(deadline):
                    break
            resp.body, ws.buf = ws.buf[:n], ws.buf[n:]
    except BaseException:
        ws.close()
        raise
    return ws, resp


def raw_ws(port, token, src=None, rcvbuf=None):
    ws, resp = ws_attempt(port, token, src, rcvbuf=rcvbuf)
    if resp.status != 101:
        ws.close()
        raise AssertionError(f"handshake failed: {resp!r}")
    return ws


def resp_json(resp):
    return json.loads(resp.body.decode())


def ws_close_frame(code=1000):
    return make_frame(OP_CLOSE, struct.pack("!H", code))


def drain_until_end(ws, timeout=T):
    """Reads frames until the connection ends; returns (frames, close code or
    None). A reset counts as an end (e.g. after a 1013 the queue is dropped)."""
    frames = []
    code = None
    deadline = time.monotonic() + timeout
    for _ in range(10_000_000):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the server did not end the connection in {timeout}s; "
                                 f"{len(frames)} frames read")
        try:
            fin, op, payload = ws.recv_frame(left)
        except (EOFError, ConnectionResetError):
            return frames, code
        except TimeoutError:
            continue
        if op == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        frames.append((op, payload))
    raise AssertionError("too many frames")


# --------------------------------------------------------------------------
# WebSocket clients (websockets, asyncio)
# --------------------------------------------------------------------------


def ws_url(srv, token=None):
    url = f"ws://{HOST}:{srv.port}/v1/ws"
    return url + ("?token=" + token if token else "")


async def ws_status(srv, token, src=None, origin=None, query=True):
    """Tries an upgrade with `websockets`; 101 (then closes) or the HTTP status."""
    kw = {}
    if src:
        kw["local_addr"] = (src, 0)
    hdrs = {} if query else {"Authorization": "Bearer " + token}
    try:
        ws = await asyncio.wait_for(
            websockets.connect(ws_url(srv, token if query else None), extra_headers=hdrs,
                               origin=origin, ping_interval=None, open_timeout=T,
                               close_timeout=5, **kw), T + 5)
    except InvalidStatusCode as e:
        return e.status_code
    await ws.close()
    return 101


class Client:
    """A chat WebSocket that buffers frames it read but nobody consumed."""

    def __init__(self, ws, user):
        self.ws = ws
        self.user = user
        self.pending = []
        self.hello = None

    @classmethod
    async def open(cls, user, src=None, query=False, token=None, **kw):
        token = token or user.token
        src = src or user.src
        hdrs = {} if query else {"Authorization": "Bearer " + token}
        if src:
            kw["local_addr"] = (src, 0)
        ws = await asyncio.wait_for(
            websockets.connect(ws_url(user.srv, token if query else None), extra_headers=hdrs,
                               subprotocols=["parley.v1.json"], ping_interval=None,
                               open_timeout=T, close_timeout=5, max_size=2 ** 24,
                               max_queue=None, **kw), T + 5)
        c = cls(ws, user)
        hello = json.loads(await asyncio.wait_for(ws.recv(), T))
        assert hello["type"] == "hello", hello
        c.hello = hello
        return c

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def _read(self, timeout):
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), f"binary frame from the server: {raw!r}"
        return json.loads(raw)

    async def wait(self, pred, timeout=T, what="a matching frame"):
        for i, f in enumerate(self.pending):
            if pred(f):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        for _ in range(10_000_000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                f = await self._read(left)
            except asyncio.TimeoutError:
                break
            if pred(f):
                return f
            self.pending.append(f)
        raise AssertionError(f"{self.user}: timed out waiting for {what}; "
                             f"buffered: {self.pending[-10:]!r}")

    async def wait_type(self, type_, timeout=T, **fields):
        return await self.wait(
            lambda f: f.get("type") == type_ and all(f.get(k) == v for k, v in fields.items()),
            timeout, what=f"{type_} {fields}")

    async def answers(self, cmids, timeout=T):
        """{cmid: ack or error frame} for every cmid (one answer each)."""
        want = set(cmids)
        got = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(want):
            f = await self.wait(
                lambda f: (f.get("type") == "ack" and f.get("cmid") in want) or
                          (f.get("type") == "error" and f.get("ref") in want),
                max(0.01, deadline - time.monotonic()),
                what=f"answers to {len(want)} sends ({len(got)} so far)")
            k = f.get("cmid") if f["type"] == "ack" else f["ref"]
            assert k not in got, f"two answers for {k}: {got[k]} and {f}"
            got[k] = f
        return got

    async def send_msg(self, conv, cmid, body):
        await self.send({"type": "send", "conv": conv, "cmid": cmid, "body": body})
        return (await self.answers([cmid]))[cmid]

    async def ping(self):
        await self.send({"type": "ping"})
        await self.wait_type("pong")

    async def closed_with(self, timeout=T):
        """Waits for the server to close; returns the close code."""
        try:
            for _ in range(10_000_000):
                self.pending.append(await self._read(timeout))
        except ConnectionClosed:
            pass
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), T)
        except (asyncio.TimeoutError, ConnectionClosed, OSError):
            pass


async def close_all(clients):
    for c in clients:
        if c is not None:
            await c.close()


async def flood_sends(client, conv, cmids, body="x"):
    """Pipelines one send per cmid (no waiting) in one batch of writes."""
    for cm in cmids:
        await client.ws.send(json.dumps({"type": "send", "conv": conv, "cmid": cm, "body": body}))


# --------------------------------------------------------------------------
# The control client
# --------------------------------------------------------------------------


class Control:
    """Two users in a direct conversation, from CONTROL_SRC: `a` sends over
    its WebSocket, `b` must receive every message live, in order, with
    gapless seqs; check() also compares the stored history."""

    def __init__(self, srv, a, b, conv):
        self.srv = srv
        self.a, self.b, self.conv = a, b, conv
        self.ca = self.cb = None
        self.sent = []  # (seq, cmid, body) acked
        self.seq = 0
        self.rounds = 0

    @classmethod
    async def open(cls, srv, src=CONTROL_SRC, users=None):
        a, b = users or register_many(srv, 2, src=src, prefix="ctl")
        ctl = cls(srv, a, b, direct(a, b))
        ctl.ca = await Client.open(a)
        ctl.cb = await Client.open(b)
        return ctl

    async def exchange(self, n=3, timeout=T):
        """a sends n messages; b receives exactly them next, in order."""
        self.rounds += 1
        batch = []
        for i in range(n):
            cm = f"ctl-{self.rounds}-{i}-{os.urandom(3).hex()}"
            body = {"round": self.rounds, "i": i}
            batch.append((cm, body))
            await self.ca.send({"type": "send", "conv": self.conv, "cmid": cm, "body": body})
        answers = await self.ca.answers([cm for cm, _ in batch], timeout)
        expected = []
        for cm, body in batch:
            ack = answers[cm]
            assert ack["type"] == "ack", f"control send refused: {ack}"
            self.seq += 1
            assert ack["seq"] == self.seq, (ack, self.seq)
            expected.append((ack["seq"], cm, body))
        self.sent.extend(expected)
        for seq, cm, body in expected:
            f = await self.cb.wait(lambda f: f.get("type") == "msg" and f.get("conv") == self.conv,
                                   timeout, what=f"control msg {cm}")
            assert (f["seq"], f["cmid"], f["body"], f["from"]) == (seq, cm, body, self.a.name), \
                f"control received out of order or wrong: {f}, expected seq {seq} {cm}"

    async def check(self):
        """One more exchange, then the stored history equals what was sent."""
        await self.exchange()
        msgs = history(self.b, self.conv)
        assert [(m["seq"], m["cmid"], m["body"]) for m in msgs] == self.sent, \
            "control history differs from what was acknowledged"
        assert [m["seq"] for m in msgs] == list(range(1, len(msgs) + 1))

    async def close(self):
        await close_all([self.ca, self.cb])
