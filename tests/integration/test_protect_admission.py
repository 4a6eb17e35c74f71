"""Admission control and the pending-connection cap (README "Protection"):
a reconnect storm gets 503 busy with a jittered Retry-After and ramps in;
connections that never send a request are shed at accept beyond
--max-pending. A control client keeps chatting throughout."""

import asyncio
import json
import random
import selectors
import time

from parley_client import (HOST, T, Client, Control, RawHTTP, arun, await_metrics, get_metrics,
                           mval, parse_metrics, raw_socket, register, upgrade_request)

ADMIT = "parley_admission_refused_total"
PENDING = "parley_pending_refused_total"
OPEN = "parley_connections_open"
WS_OPEN = "parley_ws_connections_open"


async def async_handshake(port, token, src=None):
    """One raw upgrade. Returns (status, headers, body, writer or None)."""
    kw = {"local_addr": (src, 0)} if src else {}
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port, **kw), T)
    try:
        req, _ = upgrade_request(port, token)
        writer.write(req)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        if status != 101:
            body = await asyncio.wait_for(
                reader.readexactly(int(headers.get("content-length", "0"))), T)
            writer.close()
            return status, headers, body, None
        return status, headers, body, writer
    except BaseException:
        writer.close()
        raise


def check_busy(status, headers, body):
    assert status == 503, (status, headers, body)
    ra = headers.get("retry-after", "")
    assert ra.isdigit() and 1 <= int(ra) <= 5, f"Retry-After {ra!r} not in 1..5 s"
    assert json.loads(body)["error"]["code"] == "busy", body
    return int(ra)


def test_admission_control_reconnect_storm(parley):
    """--admit-rate 20 (per I/O thread): 200 simultaneous handshakes ->
    101 or 503 busy with Retry-After 1..5 s, nothing else, nothing hangs;
    refusals are counted; clients retrying after Retry-After (with jitter,
    at most 8 attempts) all get in."""
    srv = parley("--admit-rate", "20")

    async def body():
        ctl = await Control.open(srv)
        u = register(srv)
        m0 = get_metrics(srv.port)
        first = await asyncio.gather(*[async_handshake(srv.port, u.token, "127.0.0.10")
                                       for _ in range(200)])
        statuses = [r[0] for r in first]
        assert set(statuses) <= {101, 503}, sorted(set(statuses))
        refused = [r for r in first if r[0] == 503]
        admitted = [r[3] for r in first if r[0] == 101]
        assert refused, "200 simultaneous handshakes with --admit-rate 20 were all admitted"
        assert admitted, "no handshake of the storm was admitted"
        for status, headers, b, _ in refused:
            check_busy(status, headers, b)
        m1 = get_metrics(srv.port)
        assert mval(m1, ADMIT) - mval(m0, ADMIT) == len(refused)
        await ctl.exchange()  # the control's open sockets are not affected

        retries = {"refused": 0}

        async def retry(wait_s):
            for _ in range(8):
                await asyncio.sleep(wait_s + random.uniform(0, 0.5))
                status, headers, b, w = await async_handshake(srv.port, u.token, "127.0.0.10")
                if status == 101:
                    return w
                wait_s = check_busy(status, headers, b)
                retries["refused"] += 1
            return None

        later = await asyncio.gather(*[retry(int(r[1]["retry-after"])) for r in refused])
        assert all(w is not None for w in later), \
            f"{sum(w is None for w in later)} clients did not get in after 8 attempts"
        writers = admitted + later
        m2 = await await_metrics(srv.port, lambda m: mval(m, WS_OPEN) == 200 + 2,
                                 "all 200 storm sockets and the 2 control sockets open")
        assert mval(m2, ADMIT) - mval(m0, ADMIT) == len(refused) + retries["refused"]
        print(f"\nadmission storm: {len(admitted)} admitted at once, {len(refused)} refused, "
              f"{retries['refused']} refusals while retrying")
        await ctl.exchange()
        for w in writers:
            w.close()
        await await_metrics(srv.port, lambda m: mval(m, WS_OPEN) == 2, "storm sockets closed")
        await ctl.check()
        await ctl.close()

    arun(body())


def ka_metrics(km):
    """/metrics over a kept-alive connection (it already holds a slot)."""
    r = km.request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.status == 200, r
    return parse_metrics(r.body.decode())


def wait_ka(km, pred, what, timeout=T):
    deadline = time.monotonic() + timeout
    m = None
    for _ in range(100000):
        m = ka_metrics(km)
        if pred(m) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert pred(m), f"timed out: {what}; {m.get(OPEN)} open, {m.get(PENDING)} refused"
    return m


def test_pending_cap_sheds_idle_connections(parley):
    """--max-pending 50 per I/O thread (2 threads): 300 TCP connections
    that send nothing -> the extra ones are closed at accept (EOF/reset),
    counted in parley_pending_refused_total; the open WebSocket and a
    kept-alive HTTP connection keep working; a new connection is shed while
    the cap is full; after the idle ones close, everything is back."""
    srv = parley("--max-pending", "50", "--request-timeout", "60000")

    async def body():
        ctl = await Control.open(srv)
        km = RawHTTP(srv.port)  # holds one pending slot, opened before the flood
        socks = []
        sel = selectors.DefaultSelector()
        try:
            base = ka_metrics(km)
            for _ in range(300):
                s = raw_socket(srv.port, src="127.0.0.20")
                s.setblocking(False)
                socks.append(s)
                sel.register(s, selectors.EVENT_READ)
            closed = set()

            def poll(timeout):
                for key, _ in sel.select(timeout):
                    try:
                        data = key.fileobj.recv(1)
                    except (ConnectionResetError, BlockingIOError):
                        data = b""
                    assert data == b"", f"the server sent bytes to a silent connection: {data!r}"
                    closed.add(key.fileobj)
                    sel.unregister(key.fileobj)

            deadline = time.monotonic() + T
            m = base
            for _ in range(100000):
                poll(0.05)
                m = ka_metrics(km)
                refused = mval(m, PENDING) - mval(base, PENDING)
                if (refused >= 200 and len(closed) == refused) or time.monotonic() > deadline:
                    break
            refused = mval(m, PENDING) - mval(base, PENDING)
            print(f"\npending cap: {refused:.0f} of 300 shed at accept, {len(closed)} saw EOF")
            assert refused >= 200, f"only {refused} of 300 idle connections shed (cap 2 x 50)"
            assert len(closed) == refused, (len(closed), refused)
            # what is kept: at most the cap, still open and silent
            poll(0.2)
            assert len(closed) == refused, "a connection under the cap was closed"
            # the control's WebSockets and the kept-alive connection still work
            await ctl.exchange()
            r = km.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert r.status == 200 and json.loads(r.body) == {"status": "ok"}, r
            # a new connection is shed while both threads are at the cap
            with RawHTTP(srv.port) as fresh:
                try:
                    fresh.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                except OSError:
                    pass
                try:
                    assert fresh.read_until_eof(T) == b""
                except (ConnectionResetError, OSError):
                    pass
            # close the idle ones: everything is back
            for s in socks:
                if s not in closed:
                    sel.unregister(s)
                s.close()
            socks = []
            wait_ka(km, lambda m: mval(m, OPEN) == mval(base, OPEN),
                    "parley_connections_open back to the baseline")
            with RawHTTP(srv.port) as fresh:
                r = fresh.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert r.status == 200, r
            u = register(srv)
            c = await Client.open(u)
            await c.ping()
            await c.close()
            await ctl.check()
        finally:
            for s in socks:
                s.close()
            sel.close()
            km.close()
        await ctl.close()

    arun(body())
