"""The `resync` server frame (docs/protocol.md) through `parley chat` and
libparley, against a real parleyd: a proxy between the chat and the server
reads the server's WebSocket frames, swallows the live frames of one kind
(as a node does that lost the bus between nodes), then slips a `resync` in
between two frames. The chat must fetch the missed message by sync, ask
the receipts again, keep its connection, and resend nothing.

Every process is stopped by PID; waits are bounded; nothing is timed.
"""

import json
import select
import socket
import struct
import threading
import time

import pytest

from parley_client import HOST, WAIT, Cli, cli_users, history


class FrameProxy:
    """127.0.0.1:port -> upstream. Client to server bytes pass as they are;
    server to client bytes are cut into WebSocket frames (after the HTTP
    head of the upgrade), so that text frames of the types in `swallow` are
    dropped (kept in `dropped`) and inject() adds a frame between two."""

    def __init__(self, upstream_port):
        self.up = upstream_port
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((HOST, 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self.swallow = set()
        self.dropped = []
        self.ws = []          # (client socket, lock) of each upgraded connection
        self.lock = threading.Lock()
        self.stopping = False
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while not self.stopping:
            r, _, _ = select.select([self.ls], [], [], 0.2)
            if not r:
                continue
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            s = socket.create_connection((HOST, self.up), timeout=10)
            s.settimeout(None)
            wlock = threading.Lock()
            threading.Thread(target=self._pump_up, args=(c, s), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(s, c, wlock), daemon=True).start()

    @staticmethod
    def _close(*socks):
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _pump_up(self, src, dst):
        try:
            for _ in range(10_000_000):
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        self._close(src, dst)

    def _pump_down(self, src, dst, wlock):
        buf = b""
        head = True
        try:
            for _ in range(10_000_000):
                data = src.recv(65536)
                if not data:
                    break
                buf += data
                if head:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    with wlock:
                        dst.sendall(buf[:end + 4])
                    upgraded = buf.startswith(b"HTTP/1.1 101")
                    buf = buf[end + 4:]
                    head = False
                    if not upgraded:  # a REST answer: the rest as it comes
                        with wlock:
                            dst.sendall(buf)
                        buf = b""
                        head = None
                    else:
                        with self.lock:
                            self.ws.append((dst, wlock))
                if head is None:
                    with wlock:
                        dst.sendall(buf)
                    buf = b""
                    continue
                while True:
                    frame = self._frame(buf)
                    if frame is None:
                        break
                    n, opcode, payload = frame
                    raw, buf = buf[:n], buf[n:]
                    if opcode == 1 and self.swallow:
                        try:
                            kind = json.loads(payload).get("type")
                        except ValueError:
                            kind = None
                        if kind in self.swallow:
                            self.dropped.append(json.loads(payload))
                            continue
                    with wlock:
                        dst.sendall(raw)
        except OSError:
            pass
        self._close(src, dst)

    @staticmethod
    def _frame(buf):
        """(length, opcode, payload) of the first whole unmasked frame, or None."""
        if len(buf) < 2:
            return None
        n = buf[1] & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            n = struct.unpack(">H", buf[2:4])[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n = struct.unpack(">Q", buf[2:10])[0]
            pos = 10
        if len(buf) < pos + n:
            return None
        return pos + n, buf[0] & 0x0F, buf[pos:pos + n]

    def inject(self, obj):
        """A text frame to every upgraded client, between two server frames."""
        payload = json.dumps(obj).encode()
        assert len(payload) < 126
        frame = bytes([0x81, len(payload)]) + payload
        with self.lock:
            conns = list(self.ws)
        assert conns, "no WebSocket through the proxy"
        for dst, wlock in conns:
            with wlock:
                dst.sendall(frame)

    def stop(self):
        self.stopping = True
        self.ls.close()
        with self.lock:
            for dst, _ in self.ws:
                self._close(dst)
        self.t.join(timeout=5)


@pytest.fixture
def proxy_to(parley):
    """Factory: proxy_to(srv) -> FrameProxy in front of srv; stopped at teardown."""
    made = []

    def factory(srv):
        p = FrameProxy(srv.port)
        made.append(p)
        return p

    yield factory
    for p in made:
        p.stop()


def wait_dropped(proxy, pred, what):
    """Until the proxy has swallowed a frame that satisfies pred (bounded)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if any(pred(f) for f in list(proxy.dropped)):
            return
        time.sleep(0.02)
    raise AssertionError(f"the proxy never swallowed {what}: {proxy.dropped!r}")


def test_resync_fetches_what_was_missed(parley, proxy_to, open_chat, tmp_path):
    srv = parley("--insecure-fast-kdf")
    proxy = proxy_to(srv)
    alice, bob = cli_users(tmp_path, srv.url, 2)
    alice_via = Cli(tmp_path, proxy.url)
    alice_via.name, alice_via.config = alice.name, alice.config
    cid = alice.json("direct", bob.name)["id"]
    a = open_chat(alice_via, cid, "--last", "0")
    b = open_chat(bob, cid, "--last", "0")
    a.event("state", state="connected")
    b.event("state", state="connected")
    a.line("a1")
    a1 = a.event("queued", text="a1")["cmid"]
    a.event("ack", cmid=a1)
    b.msg("a1")
    a.seen(lambda e: e.get("event") == "tick" and e["cmid"] == a1 and e["state"] == "read",
           "read tick of a1")

    # 1. bob's message does not reach alice live; then the resync
    proxy.swallow = {"msg"}
    b.line("b1")
    b.event("ack", cmid=b.event("queued", text="b1")["cmid"])
    wait_dropped(proxy, lambda f: f.get("body") == "b1", "the msg b1")
    proxy.swallow = set()
    proxy.inject({"type": "resync", "reason": "bus"})
    a.event("resync", reason="bus")
    got = a.msg("b1")
    assert got["message"]["seq"] == 2

    # 2. bob reads alice's a2 but the receipt is lost: the resync asks again
    proxy.swallow = {"receipt"}
    a.line("a2")
    a2 = a.event("queued", text="a2")["cmid"]
    seq2 = a.event("ack", cmid=a2)["seq"]
    b.msg("a2")
    wait_dropped(proxy, lambda f: f.get("read", 0) >= seq2, "bob's read receipt of a2")
    proxy.swallow = set()
    assert not a.find(lambda e: e.get("event") == "tick" and e["cmid"] == a2 and e["state"] == "read")
    proxy.inject({"type": "resync"})
    a.event("resync", reason="")
    a.seen(lambda e: e.get("event") == "tick" and e["cmid"] == a2 and e["state"] == "read",
           "read tick of a2 after the resync")

    a.close_stdin()
    b.close_stdin()
    assert a.exit_code() == 0
    assert b.exit_code() == 0
    events = a.drain()
    # one connection all along, each message acked once, each seq seen once
    assert [e["state"] for e in events if e.get("event") == "state"] == ["connecting", "connected"]
    assert sorted(e["cmid"] for e in events if e.get("event") == "ack") == sorted([a1, a2])
    assert [e["message"]["seq"] for e in events if e.get("event") == "msg"] == [2]
    # nothing stored twice
    assert [m["body"] for m in history(alice, cid)] == ["a1", "b1", "a2"]
