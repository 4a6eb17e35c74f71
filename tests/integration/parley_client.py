"""Client helpers for the parleyd integration tests: the one module every
test file imports (conftest.py holds only the fixtures built on it).

The tests drive the real `parleyd` binary (and the `parley` CLI) over
127.0.0.0/8 with independent clients:

  * Server processes: start_server() (free or fixed port, fresh or given
    data directory; stopped by PID), run_parleyd() for runs to completion.
  * REST: rest() on http.client (it can bind a 127.0.0.x source address),
    User and the user / conversation factories (register, users, login,
    direct, group, history, ...).
  * Raw sockets: RawHTTP for byte-exact requests, RawWS for hand-made
    WebSocket frames, make_frame() and friends.
  * websockets (10.x, legacy asyncio API): connect() for the bare library
    connection, Client for a chat session that buffers the frames it read
    so a test can wait for one kind of frame without losing the others,
    and Control, the well-behaved client of the protection tests.
  * Metrics: get_metrics(), await_metrics(), counter keys.
  * The CLI: Cli (one user with its own config file) and ChatProc
    (`parley --json chat` on pipes).

Negative checks ("X is NOT delivered") never sleep: they use a causal
barrier, i.e. a later frame that the server must deliver after X if X were
delivered at all (per-connection delivery is FIFO), and assert that X is not
among the frames received before the barrier (Client.until).

Clients may bind to other 127.0.0.x source addresses to act as different
machines (Linux routes all of 127/8 to the loopback interface).

Environment:
  PARLEYD     path of the server binary (default: <repo>/build/parleyd)
  PARLEY_CLI  path of the CLI (default: <repo>/build/parley)
  PARLEY_WEB  default static web root (default: <repo>/web)
"""

import asyncio
import base64
import hashlib
import http.client
import json
import os
import queue
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import websockets
from requests.structures import CaseInsensitiveDict
from websockets.exceptions import ConnectionClosed, InvalidStatusCode

REPO = Path(__file__).resolve().parents[2]
PARLEYD = os.environ.get("PARLEYD", str(REPO / "build" / "parleyd"))
PARLEY_CLI = os.environ.get("PARLEY_CLI", str(REPO / "build" / "parley"))
PARLEY_WEB = os.environ.get("PARLEY_WEB", str(REPO / "web"))

HOST = "127.0.0.1"
# PARLEY_TEST_SLOW: a factor (default 1) stretching every bound below, for a
# slow server build (ThreadSanitizer: `make tsan` sets 10).
SLOW = max(1.0, float(os.environ.get("PARLEY_TEST_SLOW") or 1))
T = 15.0 * SLOW  # s, generous bound on one network wait (ASan builds are slow)
HTTP_TIMEOUT = 30.0 * SLOW  # s, bound on one REST call (the password KDF is slow)
WAIT = 30.0 * SLOW  # s, bound on one wait for a CLI process
START_TIMEOUT = 10.0 * SLOW  # s, bound on waiting for the "listening" line
STOP_TIMEOUT = 15.0 * SLOW  # s, bound on a SIGTERM stop before SIGKILL

PASSWORD = "correct horse battery"
CONTROL_SRC = "127.0.0.200"  # the control client's own "machine"

# Every test client comes from 127.0.0.1 and many register users or open
# hundreds of sockets at once: the rate limits are off unless a test (the
# protection tests) passes its own values, which come later and win.
NO_LIMITS = ["--rate-frames", "0", "--rate-msgs", "0", "--rate-user-msgs", "0",
             "--rate-handshakes", "0", "--rate-logins", "0", "--admit-rate", "0",
             "--max-user-conns", "100000", "--rate-groups", "0",
             # 1 MiB message-log segments (not 64 MiB): hundreds of test
             # servers, three suites a CI run, must not fill the disk.
             "--log-segment", "1048576"]


def arun(coro, timeout=150):
    """Runs one test coroutine with a generous overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout * SLOW))


def uname(prefix="u"):
    """A fresh valid username (lower case, 3-32 characters)."""
    return prefix + os.urandom(5).hex()


def free_port():
    """A TCP port on HOST that nothing listens on (at the time of asking)."""
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------
# Server processes
# --------------------------------------------------------------------------


class Server:
    """A running parleyd. Attributes: port, url, scheme, proc, log_path,
    data_dir; expect_exit is set by tests that end it on purpose."""

    def __init__(self, proc, port, log_path, data_dir, scheme):
        self.proc = proc
        self.port = port
        self.scheme = scheme
        self.url = f"{scheme}://{HOST}:{port}"
        self.log_path = log_path
        self.data_dir = data_dir
        self.expect_exit = False  # set by tests that stop or kill the server themselves
        self.stopped = False  # kill() ended it (as opposed to exiting on its own)
        self._stdout_thread = None

    @property
    def token(self):
        """A token of a user registered on first use (WebSockets need one)."""
        return token_for(self.port)

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

    def next_node(self):
        """The node a new user or session goes to: round robin over the
        cluster's nodes (PARLEY_TEST_STORE=cluster), else this server."""
        peers = getattr(self, "peers", None)
        if not peers:
            return self
        self._next = (getattr(self, "_next", -1) + 1) % len(peers)
        return peers[self._next]

    def kill(self):
        """SIGCONT (in case a test stopped it), SIGTERM, bounded wait,
        SIGKILL. Returns the exit status. A cluster's first node stops the
        others too, and its Redis."""
        for p in getattr(self, "peers", [])[1:]:
            p.kill()
        if getattr(self, "release", None):
            self.release()
            self.release = None
        if self.proc.poll() is None:
            self.stopped = True
            self.proc.send_signal(signal.SIGCONT)
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


def read_listening_line(proc):
    """The first line a starting parleyd prints on stdout (its listening
    line, or "" if none came within START_TIMEOUT), with all it printed so
    far; from then on stdout is drained in the background by the returned
    thread (nothing else is expected there)."""
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
    dup = os.dup(fd)
    proc.stdout.close()
    t = threading.Thread(target=_drain, args=(dup,), daemon=True)
    t.start()
    return buf, line, t


def _spawn(argv, log_path, data_dir, port):
    """Starts argv; returns a Server once it printed its listening line (on
    `port` if not 0), or raises AssertionError (the process is stopped)."""
    with open(log_path, "ab") as logf:  # the child holds its own copy
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=logf, close_fds=True)
    buf, line, drainer = read_listening_line(proc)
    got, scheme = None, "http"
    for sch in ("http", "https"):
        prefix = f"parleyd listening on {sch}://{HOST}:"
        if line.startswith(prefix) and line[len(prefix):].isdigit():
            got, scheme = int(line[len(prefix):]), sch
    srv = Server(proc, got, log_path, data_dir, scheme)
    srv._stdout_thread = drainer
    if got is None or (port and got != port):
        srv.kill()
        raise AssertionError(f"parleyd did not print its listening line (port {port or 'any'}) "
                             f"within {START_TIMEOUT}s; stdout={buf!r}\nlog:\n{srv.log()}")
    TOKENS.pop(got, None)  # a token of an earlier server on this port is void
    return srv


# Cluster mode: when set (conftest.py does, for PARLEY_TEST_STORE=postgresql),
# STORE_FOR(data_dir) -> a --store URL: every server runs on a database of
# its own, one per data directory, so that a restart on the same data
# directory finds its data again.
STORE_FOR = None

# Three-node cluster mode (conftest.py sets it for PARLEY_TEST_STORE=cluster):
# CLUSTER_FOR(data_dir) -> (store URL, bus URL, release()): each server the
# tests start is the first node of a cluster of three on one database and
# one redis-server of its own; users registered through it (register,
# users, login) are spread over its nodes round robin, so the same tests
# talk to several nodes. release() stops that Redis when the server stops.
CLUSTER_FOR = None
CLUSTER_NODES = 3
_cluster_seq = [0]


def cluster_mode():
    """Whether the servers the tests start are three-node clusters."""
    return CLUSTER_FOR is not None


def start_server(tmp_path, *flags, web_dir=None, data_dir=None, port=0):
    """Starts parleyd under tmp_path (its own directory for the log and, by
    default, the data) with NO_LIMITS then flags; returns a Server once it
    listens. port=0 takes a free port; a fixed port is retried for a while
    (it may be in use for a moment after a kill). data_dir reuses a data
    directory (a restart)."""
    if not os.access(PARLEYD, os.X_OK):
        raise AssertionError(f"server binary not found or not executable: {PARLEYD} "
                             "(build it with `make`, or set PARLEYD)")
    for attempt in range(50 if port else 1):
        base = Path(tmp_path) / "srv"
        n = 0
        while base.exists() and n < 1000:  # several servers in one test
            n += 1
            base = Path(tmp_path) / f"srv{n}"
        base.mkdir(parents=True)
        data = Path(data_dir) if data_dir is not None else base / "data"
        web = str(web_dir if web_dir is not None else PARLEY_WEB)
        argv = [PARLEYD, "--port", str(port), "--listen", HOST, "--data-dir", str(data),
                "--web-dir", web, "--threads", "2", *NO_LIMITS, *[str(f) for f in flags]]
        if STORE_FOR and "--store" not in argv:
            argv += ["--store", STORE_FOR(data)]
        if CLUSTER_FOR and "--store" not in argv:
            return _start_cluster(base, data, argv, port, flags, web)
        try:
            return _spawn(argv, base / "parleyd.log", data, port)
        except AssertionError:
            if not port or attempt == 49:
                raise
            time.sleep(0.2)


def _start_cluster(base, data, argv, port, flags, web):
    """The first node on argv (its port, its data directory), then the
    others on free ports; returns the first with .peers (every node)."""
    store, bus, release = CLUSTER_FOR(data)
    _cluster_seq[0] += 1
    tag = f"c{_cluster_seq[0]}"
    common = ["--store", store, "--bus", bus]
    peers = []
    try:
        peers.append(_spawn(argv + common + ["--node-id", f"{tag}-1"], base / "parleyd.log",
                            data, port))
        for i in range(2, CLUSTER_NODES + 1):
            d = base / f"node{i}"
            d.mkdir()
            a = [PARLEYD, "--port", "0", "--listen", HOST, "--data-dir", str(d / "data"),
                 "--web-dir", web, "--threads", "2", *NO_LIMITS, *[str(f) for f in flags],
                 *common, "--node-id", f"{tag}-{i}"]
            peers.append(_spawn(a, d / "parleyd.log", d / "data", 0))
    except BaseException:
        for p in peers:
            p.kill()
        release()
        raise
    first = peers[0]
    first.peers = peers
    first.release = release
    return first


def run_parleyd(tmp_path, *args):
    """Runs parleyd to completion (bounded; for flag checks); safe flags go
    first so that a wrongly accepted flag cannot bind a public port."""
    argv = [PARLEYD, "--port", "0", "--listen", HOST, "--data-dir", str(Path(tmp_path) / "d"),
            *[str(a) for a in args]]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30 * SLOW)


# --------------------------------------------------------------------------
# HTTP responses, raw HTTP
# --------------------------------------------------------------------------


class Response:
    """An HTTP response: status, headers (case-insensitive; the first of a
    repeated field), body. It also answers to the `requests` names
    (status_code, content), as the REST checks were written against them."""

    def __init__(self, status, headers, body=b""):
        self.status = status
        self.headers = CaseInsensitiveDict()
        for k, v in headers:
            self.headers.setdefault(k, v)
        self.body = body

    @property
    def status_code(self):
        return self.status

    @property
    def content(self):
        return self.body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def error_code(self):
        try:
            return self.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None

    def __repr__(self):
        return f"<Response {self.status} {dict(self.headers)!r} body={self.body[:300]!r}>"


def raw_socket(port, src=None, rcvbuf=None, timeout=T):
    """A connected TCP socket to HOST:port, optionally from address src and
    with a small receive buffer."""
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


class RawHTTP:
    """A raw TCP client: send exact bytes, parse responses, detect EOF."""

    def __init__(self, port, timeout=T, src=None, rcvbuf=None):
        self.sock = raw_socket(port, src, rcvbuf, timeout)
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

    def _take_body(self, resp, n, deadline):
        """Moves the next n bytes of the stream into resp.body."""
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise EOFError(f"connection closed inside a body; got {self.buf!r}")
        resp.body, self.buf = self.buf[:n], self.buf[n:]

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
        status = int(parts[1])
        headers = []
        for ln in lines[1:]:
            k, _, v = ln.decode("latin-1").partition(":")
            headers.append((k.strip().lower(), v.strip()))
        resp = Response(status, headers)
        no_body = head_only or status in (204, 304) or 100 <= status < 200
        if not no_body:
            cl = resp.header("content-length")
            assert cl is not None, f"response without Content-Length: {head!r}"
            self._take_body(resp, int(cl), deadline)
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
    """One raw request (GET, or HEAD) on a fresh connection; returns the Response."""
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
# REST, users and conversations
# --------------------------------------------------------------------------


def rest(srv, method, path, body=None, token=None, data=None, headers=None, params=None,
         src=None):
    """One REST request on a fresh connection, optionally from address src.
    srv is a Server (anything with .port) or a port; `body` is sent as
    JSON, `data` as raw bytes; `params` are added to the query string."""
    port = srv if isinstance(srv, int) else srv.port
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
    elif data is not None:
        payload = data
    if payload is not None:
        h.setdefault("Content-Type", "application/json")
    if params:
        path += ("&" if "?" in path else "?") + urlencode(params)
    c = http.client.HTTPConnection(HOST, port, timeout=HTTP_TIMEOUT,
                                   source_address=(src, 0) if src else None)
    try:
        c.request(method, path, body=payload, headers=h)
        r = c.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        c.close()


def assert_error(resp, status, code=None):
    """A JSON error response with this status (and code); returns the error."""
    assert resp.status == status, (status, code, resp)
    assert resp.header("content-type", "").startswith("application/json"), resp
    err = resp.json()["error"]
    assert isinstance(err.get("code"), str) and err["code"], resp
    assert isinstance(err.get("message"), str), resp
    if code is not None:
        assert err["code"] == code, (status, code, resp)
    return err


def retry_after_header(resp):
    """The Retry-After header as an int of seconds (asserted present)."""
    v = resp.header("retry-after")
    assert v is not None and v.strip().isdigit(), f"no integer Retry-After: {resp!r}"
    return int(v)


class User:
    """One device session of a user: REST calls with its token (from its
    source address, if it has one)."""

    def __init__(self, srv, name, token, device, expires=None, password=PASSWORD, src=None):
        self.srv = srv
        self.name = name
        self.token = token
        self.device = device
        self.expires = expires
        self.password = password
        self.src = src

    def get(self, path, **kw):
        return rest(self.srv, "GET", path, token=self.token, src=self.src, **kw)

    def post(self, path, body=None, **kw):
        return rest(self.srv, "POST", path, body=body, token=self.token, src=self.src, **kw)

    def delete(self, path, **kw):
        return rest(self.srv, "DELETE", path, token=self.token, src=self.src, **kw)

    def __repr__(self):
        return f"<User {self.name} dev {self.device}>"


def _session(srv, resp, password, src):
    j = resp.json()
    return User(srv, j["user"], j["token"], j["device"], j["expires"], password, src)


def register(srv, name=None, password=PASSWORD, src=None):
    """A new user (a fresh name unless given); returns its first session."""
    name = name or uname()
    if isinstance(srv, Server):
        srv = srv.next_node()
    r = rest(srv, "POST", "/v1/users", {"username": name, "password": password}, src=src)
    assert r.status == 201, (name, r)
    return _session(srv, r, password, src)


def users(srv, n, prefix="u", src=None):
    """n new users, registered concurrently (the KDF runs in the server's pool)."""
    with ThreadPoolExecutor(max_workers=4) as ex:
        return list(ex.map(lambda _: register(srv, uname(prefix), src=src), range(n)))


def login_attempt(srv, name, password=PASSWORD, src=None):
    """POST /v1/sessions; returns the Response, whatever it is."""
    return rest(srv, "POST", "/v1/sessions", {"username": name, "password": password}, src=src)


def login(srv, name, password=PASSWORD, src=None):
    """A new session (device) of an existing user."""
    if isinstance(srv, Server):
        srv = srv.next_node()
    r = login_attempt(srv, name, password, src)
    assert r.status == 200, (name, r)
    return _session(srv, r, password, src)


TOKENS = {}  # port -> token of the server's test user (Server.token, RawWS)


def token_for(port):
    """Registers a test user on the server at port once; returns its token."""
    if port not in TOKENS:
        name = "t" + os.urandom(6).hex()
        TOKENS[port] = register(port, name, "password-" + name).token
    return TOKENS[port]


def direct(a, b):
    r = a.post("/v1/conversations", {"type": "direct", "with": b.name})
    assert r.status in (200, 201), r
    return r.json()["id"]


def group(admin, members, name="team"):
    r = admin.post("/v1/conversations",
                   {"type": "group", "name": name, "members": [m.name for m in members]})
    assert r.status == 201, r
    return r.json()["id"]


def conv_get(user, conv):
    r = user.get(f"/v1/conversations/{conv}")
    assert r.status == 200, r
    return r.json()


def inbox_pages(user, changed_since=None, limit=None, max_pages=10000):
    """Every page of one walk of user's inbox (GET /v1/conversations, then
    page = the previous page's next while more), in order."""
    params = {} if changed_since is None else {"changed_since": changed_since}
    if limit is not None:
        params["limit"] = limit
    pages = []
    for _ in range(max_pages):
        r = user.get("/v1/conversations", params=params)
        assert r.status == 200, (params, r)
        j = r.json()
        pages.append(j)
        if not j["more"]:
            return pages
        assert j["conversations"] and j["next"], "more=true with an empty page"
        params = {"page": j["next"]} if limit is None else {"page": j["next"], "limit": limit}
    raise AssertionError("inbox paging did not end")


def inbox(user, changed_since=None):
    """The whole inbox (every page of one walk):
    {"conversations": [...], "cursor": C}."""
    pages = inbox_pages(user, changed_since)
    return {"conversations": [c for p in pages for c in p["conversations"]],
            "cursor": pages[-1]["cursor"]}


def history_page(user, conv, **params):
    r = user.get(f"/v1/conversations/{conv}/messages", params=params)
    assert r.status == 200, (params, r)
    return r.json()


def history(user, conv):
    """Every stored message of conv in seq order, by forward paging (after=,
    limit=500); checks `more`. user is anything with get() (User, Cli)."""
    out = []
    after = 0
    for _ in range(200):
        j = history_page(user, conv, after=after, limit=500)
        msgs = j["messages"]
        out.extend(msgs)
        if not j["more"]:
            return out
        assert msgs, "more=true with an empty page"
        after = msgs[-1]["seq"]
    raise AssertionError("history paging did not end")


def send_rest(user, conv, cmid, body):
    return user.post(f"/v1/conversations/{conv}/messages", {"cmid": cmid, "body": body})


def receipts(user, conv, seq=None):
    params = {} if seq is None else {"seq": seq}
    r = user.get(f"/v1/conversations/{conv}/receipts", params=params)
    assert r.status == 200, r
    return r.json()


def cursors(rec):
    """receipts members list -> {user: (delivered, read)}"""
    return {m["user"]: (m["delivered"], m["read"]) for m in rec["members"]}


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


def poll(get, ok, timeout=20 * SLOW, every=0.05):
    """get() until ok(result) (bounded); the last result."""
    deadline = time.monotonic() + timeout
    while True:
        r = get()
        if ok(r) or time.monotonic() > deadline:
            return r
        time.sleep(every)


def on(srv, u):
    """u's session (same token) used through another server or node: tokens
    are the store's."""
    return User(srv, u.name, u.token, u.device, u.expires, u.password)


def poll_metric(port, name, want, timeout=T):
    """Polls /metrics until metric == want (bounded); returns the last value."""
    deadline = time.monotonic() + timeout
    val = None
    for _ in range(10000):
        val = get_metrics(port).get(name)
        if val == want or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return val


async def await_metrics(port, pred, what, timeout=T):
    """Polls /metrics until pred(metrics) holds (bounded, without blocking
    the event loop for long); returns them."""
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


def mval(m, key):
    return m.get(key, 0.0)


def close_key(code):
    return f'parley_ws_close_sent_total{{code="{code}"}}'


def status_key(status):
    return f'parley_http_responses_total{{status="{status}"}}'


def rss_kb(pid):
    """VmRSS of a process in kB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc status")


# --------------------------------------------------------------------------
# Raw WebSocket
# --------------------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


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


def ws_close_frame(code=1000):
    return make_frame(OP_CLOSE, close_payload(code))


def upgrade_request(port, token, extra=b""):
    """(request bytes, key) of a WebSocket upgrade of /v1/ws?token=token
    with the extra header lines."""
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET /v1/ws?token={token} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
           f"Sec-WebSocket-Version: 13\r\n").encode()
    return req + extra + b"\r\n", key


class RawWS(RawHTTP):
    """A hand-made WebSocket client: handshake by hand (then the hello is
    read), then raw frames. Without a token it uses the server's test user
    (token_for). The handshake Response is kept in .handshake; with
    refusal_ok a refused upgrade (its body read) leaves the object for the
    caller to close."""

    def __init__(self, port, extra_headers=b"", timeout=T, token=None, src=None, rcvbuf=None,
                 refusal_ok=False):
        super().__init__(port, timeout, src=src, rcvbuf=rcvbuf)
        try:
            if token is None:
                token = token_for(port)
            req, key = upgrade_request(port, token, extra_headers)
            self.send(req)
            resp = self.read_response(head_only=True)
            self.handshake = resp
            if resp.status != 101:
                if not refusal_ok:
                    raise AssertionError(f"handshake failed: {resp!r}")
                n = int(resp.header("content-length", "0"))
                self._take_body(resp, n, time.monotonic() + timeout)
                return
            assert resp.header("sec-websocket-accept") == ws_accept(key), resp
            hello = json.loads(self.recv_text())  # the server greets every session first
            assert hello["type"] == "hello", hello
        except BaseException:
            self.close()
            raise

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


def ws_handshake(port, token, src=None, extra=b""):
    """Tries a raw upgrade with ?token=; returns the Response (with its body
    when refused). An accepted connection is closed after the hello."""
    ws = RawWS(port, token=token, src=src, extra_headers=extra, refusal_ok=True)
    try:
        if ws.handshake.status == 101:
            ws.send(ws_close_frame())
        return ws.handshake
    finally:
        ws.close()


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


async def ws_open(srv, token=None, query_token=None, src=None, **kw):
    """Opens a WebSocket to srv's /v1/ws with the websockets library: token
    in the Authorization header, query_token in ?token=, from address src.
    Returns the connection without reading from it."""
    url = f"ws://{HOST}:{srv.port}/v1/ws"
    if query_token is not None:
        url += "?token=" + query_token
    hdrs = {} if token is None else {"Authorization": "Bearer " + token}
    if src:
        kw["local_addr"] = (src, 0)
    kw.setdefault("ping_interval", None)
    kw.setdefault("close_timeout", 5)
    kw.setdefault("open_timeout", T)
    return await asyncio.wait_for(websockets.connect(url, extra_headers=hdrs, **kw),
                                  kw["open_timeout"] + 5)


async def ws_status(srv, token=None, query_token=None, origin=None):
    """Tries an upgrade; returns 101 on success (closing it) or the HTTP status."""
    try:
        ws = await ws_open(srv, token, query_token, origin=origin)
    except InvalidStatusCode as e:
        return e.status_code
    await ws.close()
    return 101


async def connect(srv, subprotocols=("parley.v1.json",), token=None, **kw):
    """A bare websockets connection (token in ?token=; by default the
    server's test user); reads and checks the hello first."""
    ws = await ws_open(srv, query_token=srv.token if token is None else token,
                       subprotocols=list(subprotocols) or None, **kw)
    # the server greets every session first
    assert json.loads(await asyncio.wait_for(ws.recv(), T))["type"] == "hello"
    return ws


async def request(ws, obj_or_text):
    """Sends one message on a bare connection; returns the next one."""
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
    arun(go())


class Client:
    """A chat WebSocket session that buffers frames it read but nobody
    consumed (in arrival order), so that waiting for one kind of frame
    loses none of the others."""

    def __init__(self, ws, user):
        self.ws = ws
        self.user = user
        self.pending = []  # frames read but not consumed, in arrival order
        self.hello = None

    @classmethod
    async def open(cls, user, src=None, query=False, token=None):
        """Connects as user (its token, or another token of it) in the
        Authorization header or (query) in ?token=; checks the hello."""
        token = token or user.token
        ws = await ws_open(user.srv, token=None if query else token,
                           query_token=token if query else None, src=src or user.src,
                           subprotocols=["parley.v1.json"], max_size=2 ** 24, max_queue=None)
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
        """The oldest buffered frame, or the next one to arrive."""
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
        """The first frame of this type (with these field values)."""
        return await self.wait(
            lambda f: f.get("type") == type_ and all(f.get(k) == v for k, v in fields.items()),
            timeout, what=f"{type_} {fields}")

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
        """send; returns the ack (or the error that refers to the cmid)."""
        await self.send({"type": "send", "conv": conv, "cmid": cmid, "body": body})
        return (await self.answers([cmid]))[cmid]

    async def ping(self):
        """Round trip: the connection is open and answering."""
        await self.send({"type": "ping"})
        await self.wait_type("pong")

    async def closed_with(self, timeout=T):
        """Waits for the server to close (buffering what comes before);
        returns the close code."""
        try:
            for _ in range(1_000_000):
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
# The control client of the protection tests
# --------------------------------------------------------------------------


class Control:
    """Two users in a direct conversation, connected from their own source
    address (CONTROL_SRC, so per-address limits of an attacker never touch
    it): `a` sends over its WebSocket, `b` must receive every message live,
    in order, with gapless seqs; check() also compares the stored history."""

    def __init__(self, srv, a, b, conv):
        self.srv = srv
        self.a, self.b, self.conv = a, b, conv
        self.ca = self.cb = None
        self.sent = []  # (seq, cmid, body) acked
        self.seq = 0
        self.rounds = 0

    @classmethod
    async def open(cls, srv):
        a, b = users(srv, 2, prefix="ctl", src=CONTROL_SRC)
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


# --------------------------------------------------------------------------
# The parley CLI
# --------------------------------------------------------------------------


class Cli:
    """One CLI user: its own config file, pointed at one server URL. For
    checks independent of the CLI it also reads REST with the token the CLI
    stored (get(), so history() takes it like a User)."""

    def __init__(self, tmp_path, url):
        self.name = uname()
        self.url = url
        self.config = Path(tmp_path) / f"cfg-{self.name}" / "parley" / "config"
        self.password = PASSWORD

    @property
    def port(self):
        return urlsplit(self.url).port

    def env(self, **extra):
        e = dict(os.environ)
        e.pop("PARLEY_SERVER", None)
        e.update(PARLEY_CONFIG=str(self.config), PARLEY_SERVER=self.url, LC_ALL="C.UTF-8")
        e.update(extra)
        return e

    def run(self, *args, input=None, env=None):
        return subprocess.run([PARLEY_CLI, *[str(a) for a in args]], input=input,
                              capture_output=True, text=True, timeout=WAIT * 2,
                              env=env or self.env())

    def json(self, *args, input=None):
        """Runs with --json; asserts success; returns the parsed stdout."""
        r = self.run("--json", *args, input=input)
        assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        return json.loads(r.stdout)

    def register(self):
        r = self.run("--json", "register", self.name, input=self.password + "\n")
        assert r.returncode == 0, (r.stdout, r.stderr)
        return json.loads(r.stdout)

    def token(self):
        for line in self.config.read_text().splitlines():
            if line.startswith("token="):
                return line[6:]
        return ""

    def get(self, path, **kw):
        return rest(self, "GET", path, token=self.token(), **kw)


def cli_users(tmp_path, url, n):
    """n CLI users on url, each registered through the CLI."""
    out = [Cli(tmp_path, url) for _ in range(n)]
    for u in out:
        u.register()
    return out


class ChatProc:
    """`parley --json chat CONV` on pipes; events are read by a thread."""

    def __init__(self, cli, conv, *extra):
        self.cli = cli
        self.proc = subprocess.Popen([PARLEY_CLI, "--json", "chat", str(conv), *extra],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=cli.env())
        self.events = []      # every event, in order
        self._q = queue.Queue()
        self._cursor = 0      # events before this index were consumed by wait()
        self.stderr = b""
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        self._te = threading.Thread(target=self._read_err, daemon=True)
        self._te.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self._q.put(json.loads(line))
            except ValueError:
                self._q.put({"event": "garbage", "line": line.decode(errors="replace")})
        self._q.put(None)

    def _read_err(self):
        self.stderr = self.proc.stderr.read()

    def _pump(self, timeout):
        try:
            ev = self._q.get(timeout=timeout)
        except queue.Empty:
            return False
        if ev is None:
            self._q.put(None)  # keep the EOF mark
            return None
        self.events.append(ev)
        return True

    def wait(self, pred, what="an event", timeout=WAIT):
        """The first event after the previous wait's match that satisfies pred."""
        deadline = time.monotonic() + timeout
        for _ in range(1_000_000):
            while self._cursor < len(self.events):
                ev = self.events[self._cursor]
                self._cursor += 1
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = self._pump(min(left, 0.5))
            if got is None:
                break
        raise AssertionError(f"{self.cli.name}: no {what}; events: {self.events[-15:]!r}; "
                             f"stderr: {self.stderr[-2000:]!r}")

    def find(self, pred):
        """Any event so far (without consuming) that satisfies pred."""
        while self._pump(0):
            pass
        return [e for e in self.events if pred(e)]

    def seen(self, pred, what="an event", timeout=WAIT):
        """Any event so far or to come that satisfies pred, whatever its
        position (for the lossy lane: typing may overtake messages)."""
        deadline = time.monotonic() + timeout
        for _ in range(1_000_000):
            hits = self.find(pred)
            if hits:
                return hits[0]
            left = deadline - time.monotonic()
            if left <= 0 or self._pump(min(left, 0.5)) is None:
                break
        raise AssertionError(f"{self.cli.name}: no {what}; events: {self.events[-15:]!r}")

    def event(self, name, timeout=WAIT, **fields):
        return self.wait(lambda e: e.get("event") == name and
                         all(e.get(k) == v for k, v in fields.items()),
                         f"{name} {fields}", timeout)

    def msg(self, text, timeout=WAIT):
        return self.wait(lambda e: e.get("event") == "msg" and
                         e["message"].get("body") == text, f"msg {text!r}", timeout)

    def drain(self):
        """After exit: every remaining event (up to the end of stdout)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self._pump(0.5) is None:
                break
        return self.events

    def line(self, text):
        self.proc.stdin.write((text + "\n").encode())
        self.proc.stdin.flush()

    def close_stdin(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def exit_code(self, timeout=WAIT * 2):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.cli.name}: chat did not exit; events {self.events[-10:]!r}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# --------------------------------------------------------------------------
# the operator tests (test_install.py, test_setup.py): the repository's
# Makefile and the binaries under test
# --------------------------------------------------------------------------

MAKE_TIMEOUT = 600  # s: `make install` may have to build (slowly, under ASan)


def make_env(extra=None):
    """The environment for a nested make.

    Under `make test` the variables given to the outer make (for example
    SANITIZE=address,undefined) arrive in MAKEFLAGS after ` -- `; keep them,
    so that the nested make uses the same build directory as the binaries
    under test, and drop the rest (the jobserver's descriptors are not
    inherited by the test)."""
    env = dict(os.environ)
    mf = env.get("MAKEFLAGS", "")
    env["MAKEFLAGS"] = mf.split(" -- ", 1)[1] if " -- " in mf else ""
    env.pop("MAKELEVEL", None)
    env.pop("MFLAGS", None)
    env.update(extra or {})
    return env


def make(*args, extra_env=None, timeout=MAKE_TIMEOUT, check=True):
    """Runs `make --no-print-directory ARGS...` in the repository."""
    r = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, env=make_env(extra_env),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"make {' '.join(args)} failed ({r.returncode}):\n" \
                                  f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def build_dir():
    """The build directory of the binaries under test (build or build/san)."""
    return Path(PARLEYD).resolve().parent


def is_sanitized(binary):
    """True if the binary carries a sanitizer runtime (its own system calls)."""
    with open(binary, "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"__ubsan_handle" in data or b"__tsan_init" in data


def help_flags(binary):
    """The long flags `binary --help` lists (without the leading --)."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30).stdout
    flags = []
    for line in out.splitlines():
        if not line.startswith("  --"):  # flag lines, not the prose about them
            continue
        s = line.strip()
        for word in s.split():
            w = word.rstrip(",")
            if w.startswith("--") and len(w) > 2:
                name = w[2:]
                if name not in flags:
                    flags.append(name)
            elif not w.startswith("--"):
                break
    return flags, out
