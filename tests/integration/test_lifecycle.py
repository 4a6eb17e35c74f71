"""Process lifecycle and operations: flags, /metrics, 500 concurrent
WebSockets, graceful shutdown on SIGTERM/SIGINT."""

import asyncio
import json
import re
import select
import signal
import subprocess
import time

import pytest
import requests

from parley_client import (HOST, OP_PING, OP_TEXT, PARLEYD, RawHTTP, RawWS, arun,
                           assert_ping_pong, connect, expect_close, get_metrics, http_get,
                           make_frame, poll_metric, request, run_parleyd)

# ---- flags -------------------------------------------------------------------


def test_help_exits_0_and_documents_flags(tmp_path):
    p = run_parleyd(tmp_path, "--help")
    assert p.returncode == 0, p
    out = p.stdout.decode()
    for flag in ("--port", "--data-dir", "--threads", "--web-dir", "--max-message",
                 "--ping-interval", "--shutdown-timeout"):
        assert flag in out, f"--help does not mention {flag}"


def test_version_exits_0(tmp_path):
    p = run_parleyd(tmp_path, "--version")
    assert p.returncode == 0, p
    assert re.search(rb"\d+\.\d+", p.stdout), p


@pytest.mark.parametrize("args", [
    ["--bogus"],
    ["--port", "abc"],
    ["--port", "70000"],
    ["--port", "-1"],
    ["--threads", "0"],
    ["--threads", "many"],
    ["--max-message", "12x"],
    ["--ping-interval", ""],
    ["--log-level", "verbose"],
    ["stray-argument"],
    ["--threads"],
], ids=lambda a: " ".join(a) or "empty")
def test_bad_flags_exit_2(tmp_path, args):
    p = run_parleyd(tmp_path, *args)
    assert p.returncode == 2, p
    assert p.stderr.strip(), "a bad flag must be explained on stderr"
    assert b"listening" not in p.stdout


# ---- metrics -----------------------------------------------------------------

REQUIRED = {
    "parley_connections_open": "gauge",
    "parley_ws_connections_open": "gauge",
    "parley_connections_accepted_total": "counter",
    "parley_http_requests_total": "counter",
    "parley_ws_upgrades_total": "counter",
    "parley_ws_frames_in_total": "counter",
    "parley_ws_frames_out_total": "counter",
    "parley_bytes_in_total": "counter",
    "parley_bytes_out_total": "counter",
    "parley_http_responses_total": "counter",
    "parley_ws_close_sent_total": "counter",
    "parley_errors_total": "counter",
}

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"'
                    r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? -?[0-9.eE+]+$')


def test_metrics_format(server):
    r = requests.get(server.url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    types = {}
    for line in r.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            assert SAMPLE.match(line), f"malformed sample line: {line!r}"
    for name, kind in REQUIRED.items():
        assert types.get(name) == kind, f"{name}: TYPE {types.get(name)!r}, want {kind}"
    m = get_metrics(server.port)
    for name, kind in REQUIRED.items():
        if "{" not in name and name not in ("parley_http_responses_total",
                                            "parley_ws_close_sent_total",
                                            "parley_errors_total"):
            assert name in m, f"no sample for {name}"


def test_metrics_count_activity(server):
    before = get_metrics(server.port)
    assert http_get(server.port, b"/definitely-missing").status == 404

    async def go():
        ws = await connect(server)
        await assert_ping_pong(ws)
        reply = json.loads(await request(ws, "not json"))
        assert reply["code"] == "bad_json"
        await ws.send(b"\x01\x02")  # binary: closed with 1003
        await expect_close(ws, 1003)
    arun(go())

    after = get_metrics(server.port)

    def delta(name):
        return after.get(name, 0) - before.get(name, 0)

    assert delta("parley_ws_upgrades_total") == 1
    assert delta("parley_ws_frames_in_total") >= 3  # ping, bad json, binary (+ close)
    assert delta("parley_ws_frames_out_total") >= 3  # pong, error, close
    assert delta("parley_http_requests_total") >= 3  # /metrics, 404, upgrade
    assert delta("parley_connections_accepted_total") >= 3
    assert delta("parley_bytes_in_total") > 0
    assert delta("parley_bytes_out_total") > 0
    assert delta('parley_http_responses_total{status="404"}') == 1
    assert delta('parley_http_responses_total{status="101"}') == 1
    assert delta('parley_http_responses_total{status="200"}') >= 1
    assert delta('parley_ws_close_sent_total{code="1003"}') == 1
    errs = [k for k in after if k.startswith("parley_errors_total{kind=")]
    assert errs and sum(after[k] for k in errs) >= 2, after
    assert poll_metric(server.port, "parley_ws_connections_open", 0) == 0


def test_metrics_count_http_errors(server):
    with RawHTTP(server.port) as c:
        assert c.request(b"BAD\r\n\r\n").status == 400
        assert c.closed_by_server()
    m = get_metrics(server.port)
    assert m.get('parley_http_responses_total{status="400"}') == 1, m


# ---- concurrency -------------------------------------------------------------

N_CONC = 500


def test_500_concurrent_websockets(server):
    async def go():
        sem = asyncio.Semaphore(100)  # bound simultaneous handshakes, not connections
        opened = []

        async def one(i):
            async with sem:
                ws = await connect(server, open_timeout=30)
            opened.append(ws)
            await assert_ping_pong(ws)
            text = '{"type":"echo","client":%d}' % i
            assert await request(ws, text) == text
            return ws

        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(one(i) for i in range(N_CONC)), return_exceptions=True), 60)
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, f"{len(errors)} clients failed, first: {errors[0]!r}"
            # All are open at once now.
            val = await asyncio.to_thread(poll_metric, server.port,
                                          "parley_ws_connections_open", N_CONC)
            assert val == N_CONC
            m = await asyncio.to_thread(get_metrics, server.port)
            assert m["parley_connections_open"] >= N_CONC
            # Everyone still answers while all are connected.
            await asyncio.wait_for(asyncio.gather(*(assert_ping_pong(w) for w in opened)), 30)
        finally:
            await asyncio.wait_for(
                asyncio.gather(*(w.close() for w in opened), return_exceptions=True), 30)
        assert all(w.close_code == 1000 for w in opened)
        val = await asyncio.to_thread(poll_metric, server.port,
                                      "parley_ws_connections_open", 0, 15)
        assert val == 0
    arun(go())


# ---- graceful shutdown ---------------------------------------------------------


def settle():
    """Lets a just-started server install its signal handlers: it announces
    readiness just before doing so (test_signal_right_after_listening_line_
    exits_0 reports that race); the other signal tests are about other things."""
    time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_with_no_clients_exits_0(parley, signum):
    srv = parley()
    assert http_get(srv.port, b"/healthz").status == 200
    settle()
    srv.expect_exit = True
    srv.signal(signum)
    assert srv.wait(15) == 0, srv.log()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_right_after_listening_line_exits_0(tmp_path, signum):
    """Once parleyd has printed its listening line it is ready: a supervisor
    may stop it at once, and the stop must still be graceful (exit 0), not the
    signal's default action (a negative status here)."""
    statuses = []
    for i in range(10):
        argv = [PARLEYD, "--port", "0", "--listen", HOST, "--data-dir",
                str(tmp_path / f"d{i}"), "--web-dir", str(tmp_path), "--threads", "2"]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        try:
            r, _, _ = select.select([p.stdout], [], [], 10)
            assert r, "no listening line within 10 s"
            line = p.stdout.readline()
            assert line.startswith(b"parleyd listening on "), line
            p.send_signal(signum)
            statuses.append(p.wait(timeout=15))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
            p.stdout.close()
    assert statuses == [0] * 10, f"exit statuses {statuses}"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_closes_websockets_with_1001_and_exits_0(parley, signum):
    srv = parley("--shutdown-timeout", "2000")

    async def go():
        clients = [await connect(srv) for _ in range(4)]
        for ws in clients:
            await assert_ping_pong(ws)
        settle()
        srv.expect_exit = True
        srv.signal(signum)
        await asyncio.wait_for(asyncio.gather(*(expect_close(ws, 1001) for ws in clients)), 15)
    arun(go())
    assert srv.wait(15) == 0, srv.log()


def test_shutdown_is_bounded_when_a_client_ignores_the_close(parley):
    """A raw client that never answers the close frame nor closes its socket
    cannot hold the server: it still exits 0 within the bound."""
    srv = parley("--shutdown-timeout", "2000")
    with RawWS(srv.port) as raw:
        raw.send_text('{"type":"ping"}')
        assert json.loads(raw.recv_text()) == {"type": "pong"}
        settle()
        srv.expect_exit = True
        srv.signal(signal.SIGTERM)
        code, _ = raw.recv_close(timeout=15)
        assert code == 1001
        assert srv.wait(15) == 0, srv.log()


def test_shutdown_with_mixed_clients(parley):
    """Idle keep-alive HTTP, a half-sent HTTP request, a WebSocket in the
    middle of a fragmented message: all end, exit 0."""
    srv = parley("--shutdown-timeout", "2000")
    idle = RawHTTP(srv.port)
    partial = RawHTTP(srv.port)
    raw = RawWS(srv.port)
    try:
        assert idle.request(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").status == 200
        partial.send(b"GET /healthz HTTP/1.1\r\nHo")
        raw.send(make_frame(OP_TEXT, b'{"type":"echo",', fin=False))
        raw.send(make_frame(OP_PING, b"alive"))
        assert raw.recv_frame()[2] == b"alive"
        settle()
        srv.expect_exit = True
        srv.signal(signal.SIGTERM)
        code, _ = raw.recv_close(timeout=15)
        assert code == 1001
        assert idle.closed_by_server(timeout=15)
        partial.read_until_eof(timeout=15)  # closed, with or without a response
        assert srv.wait(15) == 0, srv.log()
    finally:
        idle.close()
        partial.close()
        raw.close()

