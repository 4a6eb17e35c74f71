"""Helpers for the chat-core integration tests (tests/integration/test_chat_*.py).

REST calls go through `requests`; WebSockets through `websockets` (asyncio,
10.x) wrapped in `Client`, which keeps every frame it reads so that a test can
wait for one kind of frame without losing the others.

Negative checks ("X is NOT delivered") never sleep: they use a causal
barrier, i.e. a later frame that the server must deliver after X if X were
delivered at all (per-connection delivery is FIFO), and assert that X is not
among the frames received before the barrier.
"""

import asyncio
import json
import os
import select
import subprocess
import threading
import time
from pathlib import Path

import requests
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatusCode

import conftest
from conftest import (HOST, PARLEY_WEB, PARLEYD, START_TIMEOUT, Server, _drain)

# The flags the conftest factory adds to every server (e.g. rate limits off),
# so that servers started here behave like the factory's.
FACTORY_FLAGS = list(getattr(conftest, "NO_LIMITS", []))

PASSWORD = "correct horse battery"
T = 15.0  # generous bound on one wait (ASan builds are slow)
HTTP_TIMEOUT = 30


def arun(coro, timeout=150):
    """Runs a coroutine with a generous overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def uname(prefix="u"):
    """A fresh valid username (lower case, 3-32 characters)."""
    return prefix + os.urandom(5).hex()


# --------------------------------------------------------------------------
# REST
# --------------------------------------------------------------------------


def http(srv, method, path, body=None, token=None, data=None, headers=None, params=None):
    """One REST request. `body` is sent as JSON, `data` as raw bytes."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    kw = {}
    if body is not None:
        kw["data"] = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    elif data is not None:
        kw["data"] = data
        h.setdefault("Content-Type", "application/json")
    return requests.request(method, srv.url + path, headers=h, params=params,
                            timeout=HTTP_TIMEOUT, **kw)


def assert_error(resp, status, code=None):
    """A JSON error response with this status (and code)."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    err = resp.json()["error"]
    assert isinstance(err.get("code"), str) and err["code"], resp.text
    assert isinstance(err.get("message"), str), resp.text
    if code is not None:
        assert err["code"] == code, (status, code, resp.text)
    return err


class User:
    def __init__(self, srv, name, token, device, expires, password=PASSWORD):
        self.srv = srv
        self.name = name
        self.token = token
        self.device = device
        self.expires = expires
        self.password = password

    def get(self, path, **kw):
        return http(self.srv, "GET", path, token=self.token, **kw)

    def post(self, path, body=None, **kw):
        return http(self.srv, "POST", path, body=body, token=self.token, **kw)

    def delete(self, path, **kw):
        return http(self.srv, "DELETE", path, token=self.token, **kw)

    def __repr__(self):
        return f"<User {self.name} dev {self.device}>"


def register(srv, name=None, password=PASSWORD):
    name = name or uname()
    r = http(srv, "POST", "/v1/users", body={"username": name, "password": password})
    assert r.status_code == 201, (name, r.status_code, r.text)
    j = r.json()
    return User(srv, j["user"], j["token"], j["device"], j["expires"], password)


def users(srv, n, prefix="u"):
    return [register(srv, uname(prefix)) for _ in range(n)]


def login(srv, name, password=PASSWORD):
    r = http(srv, "POST", "/v1/sessions", body={"username": name, "password": password})
    assert r.status_code == 200, (name, r.status_code, r.text)
    j = r.json()
    return User(srv, j["user"], j["token"], j["device"], j["expires"], password)


def direct(a, b):
    r = a.post("/v1/conversations", {"type": "direct", "with": b.name})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


def group(admin, members, name="team"):
    r = admin.post("/v1/conversations",
                   {"type": "group", "name": name, "members": [m.name for m in members]})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def conv_get(user, conv):
    r = user.get(f"/v1/conversations/{conv}")
    assert r.status_code == 200, r.text
    return r.json()


def inbox(user, changed_since=None):
    params = {} if changed_since is None else {"changed_since": changed_since}
    r = user.get("/v1/conversations", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def history_page(user, conv, **params):
    r = user.get(f"/v1/conversations/{conv}/messages", params=params)
    assert r.status_code == 200, (params, r.text)
    return r.json()


def history_all(user, conv, page=500, max_pages=100):
    """Every message by forward paging (after=, limit=page); checks `more`."""
    out = []
    after = 0
    for _ in range(max_pages):
        j = history_page(user, conv, after=after, limit=page)
        msgs = j["messages"]
        out.extend(msgs)
        if not j["more"]:
            break
        assert msgs, "more=true with an empty page"
        after = msgs[-1]["seq"]
    else:
        raise AssertionError("history paging did not end")
    return out


def send_rest(user, conv, cmid, body):
    return user.post(f"/v1/conversations/{conv}/messages", {"cmid": cmid, "body": body})


def receipts(user, conv, seq=None):
    params = {} if seq is None else {"seq": seq}
    r = user.get(f"/v1/conversations/{conv}/receipts", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def cursors(rec):
    """receipts members list -> {user: (delivered, read)}"""
    return {m["user"]: (m["delivered"], m["read"]) for m in rec["members"]}


# --------------------------------------------------------------------------
# WebSocket
# --------------------------------------------------------------------------


def ws_url(srv):
    return f"ws://{HOST}:{srv.port}/v1/ws"


async def ws_status(srv, token=None, query_token=None):
    """Tries an upgrade; returns 101 on success (closing it) or the HTTP status."""
    url = ws_url(srv)
    hdrs = {}
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    if query_token is not None:
        url += "?token=" + query_token
    try:
        ws = await asyncio.wait_for(
            websockets.connect(url, extra_headers=hdrs, ping_interval=None,
                               open_timeout=T, close_timeout=5), T + 5)
    except InvalidStatusCode as e:
        return e.status_code
    await ws.close()
    return 101


class Client:
    """A chat WebSocket connection that buffers unconsumed frames."""

    def __init__(self, ws, user):
        self.ws = ws
        self.user = user
        self.pending = []  # frames read but not consumed, in arrival order
        self.hello = None

    @classmethod
    async def open(cls, user, query=False):
        url = ws_url(user.srv)
        hdrs = {}
        if query:
            url += "?token=" + user.token
        else:
            hdrs["Authorization"] = "Bearer " + user.token
        ws = await asyncio.wait_for(
            websockets.connect(url, extra_headers=hdrs, subprotocols=["parley.v1.json"],
                               ping_interval=None, open_timeout=T, close_timeout=5,
                               max_size=2 ** 24, max_queue=None), T + 5)
        c = cls(ws, user)
        hello = json.loads(await asyncio.wait_for(ws.recv(), T))
        assert hello["type"] == "hello", hello
        assert hello["user"] == user.name, hello
        c.hello = hello
        return c

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def _read(self, timeout):
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), f"binary frame from the server: {raw!r}"
        return json.loads(raw)

    async def next(self, timeout=T):
        if self.pending:
            return self.pending.pop(0)
        return await self._read(timeout)

    async def wait(self, pred, timeout=T, what="a matching frame"):
        """The first frame (buffered or new) matching pred; others stay buffered."""
        for i, f in enumerate(self.pending):
            if pred(f):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        for _ in range(1_000_000):
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
                             f"buffered: {self.pending[-20:]!r}")

    async def wait_type(self, type_, timeout=T, **fields):
        def pred(f):
            return f.get("type") == type_ and all(f.get(k) == v for k, v in fields.items())
        return await self.wait(pred, timeout, what=f"{type_} {fields}")

    async def until(self, pred, timeout=T, what="a barrier frame"):
        """Reads up to (and including) the first frame matching pred; returns
        (frames before it, the frame). Buffered frames are consumed too."""
        before = []
        while self.pending:
            f = self.pending.pop(0)
            if pred(f):
                return before, f
            before.append(f)
        deadline = time.monotonic() + timeout
        for _ in range(1_000_000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                f = await self._read(left)
            except asyncio.TimeoutError:
                break
            if pred(f):
                return before, f
            before.append(f)
        raise AssertionError(f"{self.user}: timed out waiting for {what}; got {before[-20:]!r}")

    async def request(self, obj, type_, timeout=T):
        """Sends a frame with a fresh "id"; returns the reply of type_ (or
        error) that carries it back (as "id" or "ref")."""
        rid = obj.get("id") or ("r" + os.urandom(4).hex())
        obj = dict(obj, id=rid)
        await self.send(obj)
        return await self.wait(
            lambda f: (f.get("type") == type_ and f.get("id") == rid) or
                      (f.get("type") == "error" and f.get("ref") == rid),
            timeout, what=f"reply to {obj}")

    async def send_msg(self, conv, cmid, body):
        """send; returns the ack (or the error that refers to the cmid)."""
        await self.send({"type": "send", "conv": conv, "cmid": cmid, "body": body})
        return await self.wait(
            lambda f: f.get("type") in ("ack", "error") and
                      (f.get("cmid") == cmid or f.get("ref") == cmid),
            what=f"ack of {cmid}")

    async def ping(self):
        """Round trip: the connection is open and answering."""
        await self.send({"type": "ping"})
        await self.wait_type("pong")

    async def closed_with(self, timeout=T):
        """Waits for the server to close; returns the close code."""
        try:
            for _ in range(100000):
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


# --------------------------------------------------------------------------
# parleyd on a given data directory (the conftest factory always makes a new one)
# --------------------------------------------------------------------------


class Spawner:
    """Starts parleyd processes on chosen data directories and stops them
    (by PID) in stop_all()."""

    def __init__(self, tmp_path):
        self.tmp_path = Path(tmp_path)
        self.servers = []

    def start(self, data_dir, *flags):
        n = len(self.servers)
        log_path = self.tmp_path / f"spawned{n}.log"
        argv = [PARLEYD, "--port", "0", "--listen", HOST, "--data-dir", str(data_dir),
                "--web-dir", PARLEY_WEB, "--threads", "2", *FACTORY_FLAGS,
                *[str(f) for f in flags]]
        logf = open(log_path, "wb")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=logf, close_fds=True)
        finally:
            logf.close()
        fd = proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and b"\n" not in buf:
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
        line = buf.split(b"\n", 1)[0].decode(errors="replace")
        prefix = f"parleyd listening on http://{HOST}:"
        port = int(line[len(prefix):]) if (line.startswith(prefix) and
                                           line[len(prefix):].isdigit()) else None
        srv = Server(proc, port, log_path, Path(data_dir), PARLEY_WEB)
        dup = os.dup(fd)
        proc.stdout.close()
        t = threading.Thread(target=_drain, args=(dup,), daemon=True)
        t.start()
        srv._stdout_thread = t
        self.servers.append(srv)
        if port is None:
            srv.kill()
            raise AssertionError(f"parleyd did not start on {data_dir}: stdout={buf!r}\n"
                                 f"log:\n{srv.log()}")
        return srv

    def stop_all(self):
        for srv in self.servers:
            srv.kill()
