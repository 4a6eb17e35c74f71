"""Hostile input (contract point 7): slowloris heads, a WebSocket frame that
never completes, absurd frame lengths, invalid UTF-8, ping floods and ten
thousand connections that never authenticate. Each gets its documented
answer (408, 1001, 1009, 1007, pongs or a rate limit) and a control client
keeps receiving its messages in order meanwhile. (The reader that never
reads while its group floods it is in test_protect_slow.py.)

Blocking socket work runs in a thread (asyncio.to_thread) so the control
client's event loop stays responsive (it answers the server's pings)."""

import asyncio
import errno
import json
import selectors
import socket
import struct
import time

from parley_client import (HOST, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, T, Control,
                           RawHTTP, RawWS, arun, await_metrics, close_key, get_metrics,
                           make_frame, mval, rest, status_key, ws_close_frame)

TIMEOUTS = "parley_timeouts_total"


async def with_control(ctl, blocking_fn, *args, max_rounds=1000, probe=None):
    """Runs blocking_fn in a thread while the control keeps exchanging
    messages (and probe() runs each round); returns its result."""
    task = asyncio.ensure_future(asyncio.to_thread(blocking_fn, *args))
    rounds = 0
    while not task.done() and rounds < max_rounds:
        await ctl.exchange(2)
        if probe is not None:
            probe()
        rounds += 1
        await asyncio.wait([task], timeout=0.1)
    return await task


def dribble(port, request, src=None):
    """Sends request one byte every 0.2 s until the server answers; returns
    (bytes sent, what the server sent until it closed)."""
    c = RawHTTP(port, src=src)
    sel = selectors.DefaultSelector()
    sel.register(c.sock, selectors.EVENT_READ)
    try:
        sent = 0
        for i in range(len(request)):
            if sel.select(0.2):
                break
            try:
                c.send(request[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
        resp = c.read_response()
        assert (resp.header("connection") or "").lower() == "close", resp
        assert c.closed_by_server(), "the connection stayed open after the 408"
        return sent, resp
    finally:
        sel.close()
        c.close()


def test_slowloris_heads_get_408(parley):
    """--request-timeout 1000: a head sent one byte every 0.2 s (plain
    request and WebSocket upgrade, from two addresses) gets 408 http_408
    and the connection is closed long before the head is complete."""
    srv = parley("--request-timeout", "1000")
    plain = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
    upgrade = (b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"X-Pad: " + b"p" * 200 + b"\r\n\r\n")

    async def body():
        ctl = await Control.open(srv)
        m0 = get_metrics(srv.port)

        def both():
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(2) as ex:
                a = ex.submit(dribble, srv.port, plain, "127.0.0.50")
                b = ex.submit(dribble, srv.port, upgrade, "127.0.0.51")
                return a.result(), b.result()

        (sent1, r1), (sent2, r2) = await with_control(ctl, both)
        for sent, r, req in ((sent1, r1, plain), (sent2, r2, upgrade)):
            assert r.status == 408, r
            assert r.json()["error"]["code"] == "http_408", r
            assert sent < len(req), "the whole head went through before the timeout"
        m1 = get_metrics(srv.port)
        assert mval(m1, status_key(408)) - mval(m0, status_key(408)) == 2
        assert mval(m1, TIMEOUTS) - mval(m0, TIMEOUTS) == 2
        await ctl.check()
        await ctl.close()

    arun(body())


def test_never_completing_frame_closed_after_unanswered_pings(parley):
    """--ping-interval 300: a frame header claiming 1000 bytes, 10 bytes of
    it, then silence -> the server pings, and closes with 1001 after two
    pings go unanswered; the control (whose library answers pings) stays."""
    srv = parley("--ping-interval", "300")

    async def body():
        ctl = await Control.open(srv)
        m0 = get_metrics(srv.port)

        def stall():
            with RawWS(srv.port) as ws:
                ws.send(make_frame(OP_TEXT, b"x" * 1000)[:8 + 10])
                ops = []
                for _ in range(100):
                    fin, op, payload = ws.recv_frame(timeout=T)
                    ops.append(op)
                    if op == OP_CLOSE:
                        code = struct.unpack("!H", payload[:2])[0]
                        assert ws.closed_by_server(), "no EOF after the close frame"
                        return ops, code
                raise AssertionError(f"no close frame: {ops}")

        ops, code = await with_control(ctl, stall)
        assert code == 1001, code
        assert ops.count(OP_PING) >= 2, f"expected unanswered pings before the close: {ops}"
        m1 = get_metrics(srv.port)
        assert mval(m1, close_key(1001)) - mval(m0, close_key(1001)) == 1
        assert mval(m1, TIMEOUTS) - mval(m0, TIMEOUTS) == 1
        await ctl.check()  # the control answered its pings and is still open
        await ctl.close()

    arun(body())


def test_absurd_frame_lengths_closed_with_1009(parley):
    """Frame headers announcing 2 GiB and 2^63-1 bytes close with 1009 at
    once (from the header, no payload sent)."""
    srv = parley()

    async def body():
        ctl = await Control.open(srv)
        m0 = get_metrics(srv.port)
        for n in (2 ** 31, 2 ** 63 - 1):
            with RawWS(srv.port) as ws:
                ws.send(make_frame(OP_TEXT, b"", length=n)[:14])  # header + mask
                assert ws.recv_close()[0] == 1009, n
                assert ws.closed_by_server()
        with RawWS(srv.port) as ws:  # a continuation of a small start that claims 2 GiB
            ws.send(make_frame(OP_TEXT, b'{"type":', fin=False))
            ws.send(make_frame(OP_CONT, b"", length=2 ** 31)[:14])
            assert ws.recv_close()[0] == 1009
        await ctl.exchange()
        m1 = get_metrics(srv.port)
        assert mval(m1, close_key(1009)) - mval(m0, close_key(1009)) == 3
        await ctl.check()
        await ctl.close()

    arun(body())


def test_invalid_utf8_closed_with_1007(parley):
    """Invalid UTF-8 in a text message closes with 1007, also when the bad
    byte is in a later fragment; a character split across fragments is
    fine."""
    srv = parley()

    async def body():
        ctl = await Control.open(srv)
        m0 = get_metrics(srv.port)
        with RawWS(srv.port) as ws:
            ws.send_text(b'{"type":"echo","x":"\xff"}')
            assert ws.recv_close()[0] == 1007
            assert ws.closed_by_server()
        with RawWS(srv.port) as ws:
            ws.send(make_frame(OP_TEXT, b'{"type":"echo","x":"\xe2\x82', fin=False))
            ws.send(make_frame(OP_CONT, b'(x"}', fin=True))
            assert ws.recv_close()[0] == 1007
        with RawWS(srv.port) as ws:
            ws.send(make_frame(OP_TEXT, b'{"type":"echo","x":"\xe2\x82', fin=False))
            ws.send(make_frame(OP_CONT, b'\xac"}', fin=True))
            assert json.loads(ws.recv_text()) == {"type": "echo", "x": "\u20ac"}
            ws.send(ws_close_frame())
        await ctl.exchange()
        m1 = get_metrics(srv.port)
        assert mval(m1, close_key(1007)) - mval(m0, close_key(1007)) == 2
        await ctl.check()
        await ctl.close()

    arun(body())


def ping_flood(port, n):
    """Sends n pings (4-byte counters) at once; reads until the barrier
    echo or the end. Returns (pong counters, texts, close code or None)."""
    with RawWS(port) as ws:
        data = b"".join(make_frame(OP_PING, struct.pack("!I", i)) for i in range(n))
        data += make_frame(OP_TEXT, b'{"type":"echo","barrier":1}')
        try:
            ws.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        pongs, texts = [], []
        for _ in range(n + 100):
            try:
                fin, op, payload = ws.recv_frame(timeout=T)
            except (EOFError, ConnectionResetError):
                return pongs, texts, None
            if op == OP_PONG:
                pongs.append(struct.unpack("!I", payload)[0])
            elif op == OP_TEXT:
                t = json.loads(payload)
                if t.get("barrier") == 1:
                    ws.send(ws_close_frame())
                    return pongs, texts, None
                texts.append(t)
            elif op == OP_CLOSE:
                return pongs, texts, struct.unpack("!H", payload[:2])[0]
        raise AssertionError("too many frames")


def test_ping_flood_answered_when_unlimited(parley):
    """10,000 pings with the frame limit off: every one is answered with a
    pong carrying its payload, in order."""
    srv = parley()

    async def body():
        ctl = await Control.open(srv)
        pongs, texts, code = await with_control(ctl, ping_flood, srv.port, 10000)
        assert code is None and texts == [], (code, texts[:3])
        assert pongs == list(range(10000)), f"{len(pongs)} pongs, first gap near " \
            f"{next((i for i, p in enumerate(pongs) if p != i), None)}"
        await ctl.check()
        await ctl.close()

    arun(body())


def test_ping_flood_rate_limited_by_default(parley):
    """10,000 pings with the default frame limit (200/s, burst 1000): the
    burst is answered in order, pings over it are dropped silently, and the
    connection is closed with 1008 after 50 strikes (refusals beyond the 64
    free ones of each pause, docs/protocol.md "Backpressure"). The server
    lives on."""
    srv = parley("--rate-frames", "200")

    async def body():
        ctl = await Control.open(srv)
        m0 = get_metrics(srv.port)
        pongs, texts, code = await with_control(ctl, ping_flood, srv.port, 10000)
        assert code == 1008, code
        assert texts == [], f"pings over the limit must be dropped silently: {texts[:3]}"
        assert len(pongs) >= 1000 and pongs == list(range(len(pongs))), len(pongs)
        m1 = get_metrics(srv.port)
        assert mval(m1, "parley_rate_limited_total") - mval(m0, "parley_rate_limited_total") >= 50 + 64
        assert mval(m1, close_key(1008)) - mval(m0, close_key(1008)) == 1
        await ctl.check()
        await ctl.close()

    arun(body())


N_CONNS = 10000
SOURCES = ["127.0.0.60", "127.0.0.61", "127.0.0.62", "127.0.0.63"]
PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # a head that never ends


def many_idle_connections(port, n):
    """Opens n connections from SOURCES; odd ones send an unfinished head.
    Waits (bounded) for the server to end every one. Returns a summary."""
    socks = []
    partial = set()
    sel = selectors.DefaultSelector()
    got = {}
    try:
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((SOURCES[i % len(SOURCES)], 0))
            if i % 2:
                s.settimeout(T)
                s.connect((HOST, port))
                s.sendall(PARTIAL)
                s.setblocking(False)
                partial.add(s)
            else:
                s.setblocking(False)
                err = s.connect_ex((HOST, port))
                assert err in (0, errno.EINPROGRESS), errno.errorcode.get(err, err)
            got[s] = b""
            sel.register(s, selectors.EVENT_READ)
        opened = time.monotonic()
        ended = 0
        deadline = opened + 60
        while ended < n and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                except BlockingIOError:
                    continue
                if data:
                    got[s] += data
                    continue
                sel.unregister(s)
                ended += 1
        silent_bytes = [got[s] for s in socks if s not in partial and got[s]]
        partial_answers = [got[s] for s in partial]
        return {"ended": ended, "silent_bytes": silent_bytes,
                "answered_408": sum(a.startswith(b"HTTP/1.1 408 ") for a in partial_answers),
                "other": [a[:80] for a in partial_answers if not a.startswith(b"HTTP/1.1 408 ")],
                "secs": time.monotonic() - opened}
    finally:
        sel.close()
        for s in socks:
            s.close()


def test_ten_thousand_unauthenticated_connections(parley):
    """10,000 connections from 4 source addresses that never send a whole
    request (half send nothing, half an unfinished head) with
    --request-timeout 2000: all are closed (the silent ones without a
    response, the others with 408); meanwhile the control chats and
    /healthz answers; afterwards the open-connection gauge is back."""
    srv = parley("--request-timeout", "2000")

    async def body():
        ctl = await Control.open(srv)
        m0 = get_metrics(srv.port)
        probes = []

        def healthz():
            probes.append(rest(srv, "GET", "/healthz").status)

        summary = await with_control(ctl, many_idle_connections, srv.port, N_CONNS,
                                     probe=healthz)
        assert probes and set(probes) == {200}, probes
        print(f"\n10k idle connections: {summary['ended']} ended, "
              f"{summary['answered_408']} answered 408, "
              f"all ended {summary['secs']:.1f}s after the last opened")
        assert summary["ended"] == N_CONNS, summary["ended"]
        assert summary["silent_bytes"] == [], summary["silent_bytes"][:3]
        assert summary["answered_408"] == N_CONNS // 2, summary["other"][:3]
        assert rest(srv, "GET", "/healthz").status == 200
        m1 = await await_metrics(
            srv.port, lambda m: mval(m, "parley_connections_open") ==
            mval(m0, "parley_connections_open"), "connections_open back to the baseline")
        assert mval(m1, TIMEOUTS) - mval(m0, TIMEOUTS) == N_CONNS
        assert mval(m1, status_key(408)) - mval(m0, status_key(408)) == N_CONNS // 2
        assert mval(m1, "parley_pending_refused_total") == 0
        await ctl.check()
        await ctl.close()

    arun(body())
