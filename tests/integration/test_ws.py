"""WebSocket endpoint /v1/ws (RFC 6455): handshake, the JSON message layer,
control frames, limits, UTF-8, protocol errors and keepalive.

Well-behaved traffic goes through the `websockets` library (an independent
implementation); malformed traffic through the RawWS helper."""

import asyncio
import json
import struct
import time

import pytest

from parley_client import (OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, T, RawHTTP, RawWS,
                           arun, assert_ping_pong, assert_ws_works, close_payload, connect,
                           expect_close, make_frame, request)

def expect_raw_close(raw, code):
    """Reads to the server's close frame, checks the code, then EOF."""
    got, reason = raw.recv_close()
    assert got == code, (got, reason)
    assert raw.closed_by_server(), "TCP connection not closed after the close frame"


# ---- handshake ---------------------------------------------------------------


def test_handshake_selects_subprotocol(server):
    async def go():
        ws = await connect(server, subprotocols=["x.unknown", "parley.v1.json"])
        assert ws.subprotocol == "parley.v1.json"
        await assert_ping_pong(ws)
        await ws.close()
    arun(go())


def test_handshake_without_subprotocol(server):
    async def go():
        ws = await connect(server, subprotocols=())
        assert ws.subprotocol is None
        await assert_ping_pong(ws)
        await ws.close()
    arun(go())


def test_handshake_unknown_subprotocol_not_selected(server):
    raw = RawWS(server.port, extra_headers=b"Sec-WebSocket-Protocol: chat.v9\r\n")
    with raw:
        assert raw.handshake.header("sec-websocket-protocol") is None
        raw.send_text('{"type":"ping"}')
        assert json.loads(raw.recv_text()) == {"type": "pong"}


def ws_request(key=b"dGhlIHNhbXBsZSBub25jZQ==", version=b"13", extra=b"",
               upgrade=True, connection=b"Upgrade", token=None):
    req = b"GET /v1/ws HTTP/1.1\r\nHost: test\r\n"
    if token:
        req += b"Authorization: Bearer " + token.encode() + b"\r\n"
    if upgrade:
        req += b"Upgrade: websocket\r\n"
    if connection:
        req += b"Connection: " + connection + b"\r\n"
    if key is not None:
        req += b"Sec-WebSocket-Key: " + key + b"\r\n"
    if version is not None:
        req += b"Sec-WebSocket-Version: " + version + b"\r\n"
    return req + extra + b"\r\n"


def test_handshake_accept_value_is_rfc_example(server):
    with RawHTTP(server.port) as c:
        r = c.request(ws_request(token=server.token), head_only=True)
    assert r.status == 101, r
    assert r.header("upgrade").lower() == "websocket"
    assert "upgrade" in r.header("connection").lower()
    assert r.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("version", [b"12", b"8", b"14"])
def test_wrong_version_gets_426(server, version):
    with RawHTTP(server.port) as c:
        r = c.request(ws_request(version=version))
    assert r.status == 426, r
    assert r.header("sec-websocket-version") == "13", r


def test_missing_version_gets_426(server):
    with RawHTTP(server.port) as c:
        r = c.request(ws_request(version=None))
    assert r.status == 426, r
    assert r.header("sec-websocket-version") == "13", r


def test_plain_get_without_upgrade_gets_426(server):
    with RawHTTP(server.port) as c:
        r = c.request(b"GET /v1/ws HTTP/1.1\r\nHost: test\r\n\r\n")
    assert r.status == 426, r
    assert "error" in r.json()


@pytest.mark.parametrize("key", [b"abc", b"dGhlIHNhbXBsZSBub25jZQ", b"!!!!!!!!!!!!!!!!!!!!!!==",
                                 b"AAAAAAAAAAAAAAAAAAAAAAAAAAAA", None],
                         ids=["short", "no-padding", "not-base64", "20-bytes", "missing"])
def test_bad_key_gets_400(server, key):
    with RawHTTP(server.port) as c:
        r = c.request(ws_request(key=key))
    assert r.status == 400, r
    assert "error" in r.json()


def test_missing_connection_upgrade_gets_400(server):
    with RawHTTP(server.port) as c:
        r = c.request(ws_request(connection=b"keep-alive"))
    assert r.status == 400, r


def test_failed_handshake_leaves_server_usable(server):
    for _ in range(3):
        with RawHTTP(server.port) as c:
            assert c.request(ws_request(key=b"abc")).status == 400
    assert_ws_works(server)


# ---- JSON message layer ----------------------------------------------------


def test_ping_pong(server):
    async def go():
        ws = await connect(server)
        for _ in range(3):
            await assert_ping_pong(ws)
        await ws.close()
    arun(go())


@pytest.mark.parametrize("text", [
    '{"type":"echo"}',
    '{"type":"echo","text":"h\\u00e9llo","n":[1,2.5,{"a":null,"b":true}]}',
    '{ "type" : "echo" , "spaces" :  "kept  exactly" }',
    '{"type":"echo","utf8":"héllo wörld 🌍 中文"}',
    '{"n":1,"type":"echo","big":"' + "x" * 60000 + '"}',
], ids=["minimal", "nested", "whitespace", "utf8", "60KB"])
def test_echo_returns_identical_text(server, text):
    async def go():
        ws = await connect(server)
        reply = await request(ws, text)
        assert reply == text
        await ws.close()
    arun(go())


@pytest.mark.parametrize("text,code", [
    ("not json", "bad_json"),
    ("{", "bad_json"),
    ('{"type":"ping"', "bad_json"),
    ("", "bad_json"),
    ("[1,2]", "bad_json"),
    ('"type"', "bad_json"),
    ("{}", "bad_request"),
    ('{"type":1}', "bad_request"),
    ('{"type":null}', "bad_request"),
    ('{"Type":"ping"}', "bad_request"),
    ('{"type":"nope"}', "unknown_type"),
    ('{"type":"PING"}', "unknown_type"),
    ('{"type":""}', "unknown_type"),
])
def test_bad_messages_get_error_and_connection_stays_open(server, text, code):
    async def go():
        ws = await connect(server)
        for _ in range(2):  # twice: the first error did not break anything
            reply = json.loads(await request(ws, text))
            assert reply["type"] == "error", reply
            assert reply["code"] == code, reply
            assert isinstance(reply.get("message"), str)
            await assert_ping_pong(ws)
        await ws.close()
        assert ws.close_code == 1000
    arun(go())


def test_binary_message_closes_1003(server):
    async def go():
        ws = await connect(server)
        await ws.send(b'{"type":"ping"}')
        await expect_close(ws, 1003)
    arun(go())
    assert_ws_works(server)


def test_websocket_ping_gets_pong_with_same_payload(server):
    async def go():
        ws = await connect(server)
        for payload in (b"x", b"", b"\x00\xffbinary", b"p" * 125):
            waiter = await ws.ping(payload)
            await asyncio.wait_for(waiter, T)
        await assert_ping_pong(ws)
        await ws.close()
    arun(go())


def test_raw_ping_pong_payload(server):
    with RawWS(server.port) as raw:
        raw.send_frame(OP_PING, b"hello-ping")
        fin, op, payload = raw.recv_frame()
        assert (fin, op, payload) == (True, OP_PONG, b"hello-ping")
        raw.send_frame(OP_PONG, b"unsolicited")  # must be ignored
        raw.send_text('{"type":"ping"}')
        assert json.loads(raw.recv_text()) == {"type": "pong"}


def test_client_close_1000_is_echoed(server):
    async def go():
        ws = await connect(server)
        await assert_ping_pong(ws)
        await asyncio.wait_for(ws.close(1000, "bye"), T)
        assert ws.close_code == 1000
    arun(go())


def test_raw_client_close_echoed_then_tcp_closed(server):
    with RawWS(server.port) as raw:
        raw.send_frame(OP_CLOSE, close_payload(1000, b"bye"))
        expect_raw_close(raw, 1000)


def test_raw_client_close_without_code_gets_close(server):
    with RawWS(server.port) as raw:
        raw.send_frame(OP_CLOSE, b"")
        fin, op, payload = raw.recv_frame()
        assert op == OP_CLOSE
        assert payload == b"" or payload[:2] == struct.pack("!H", 1000), payload
        assert raw.closed_by_server()


def test_raw_client_close_4000_is_echoed(server):
    with RawWS(server.port) as raw:
        raw.send_frame(OP_CLOSE, close_payload(4000, b"app"))
        expect_raw_close(raw, 4000)


# ---- fragmentation and size limits -----------------------------------------


def test_fragmented_message_is_reassembled(server):
    async def go():
        ws = await connect(server)
        parts = ['{"type":"echo",', '"a":"' + "y" * 3000, '","b":2}']
        await ws.send(iter(parts))
        assert await asyncio.wait_for(ws.recv(), T) == "".join(parts)
        await ws.close()
    arun(go())


def test_fragmented_text_with_ping_interleaved(server):
    with RawWS(server.port) as raw:
        raw.send_frame(OP_TEXT, '{"type":"echo",', fin=False)
        raw.send_frame(OP_PING, b"mid")
        raw.send_frame(OP_CONT, '"part":', fin=False)
        raw.send_frame(OP_CONT, '"two"}', fin=True)
        fin, op, payload = raw.recv_frame()
        assert (op, payload) == (OP_PONG, b"mid")
        assert raw.recv_text() == '{"type":"echo","part":"two"}'
        # and the connection keeps working
        raw.send_text('{"type":"ping"}')
        assert json.loads(raw.recv_text()) == {"type": "pong"}


def test_utf8_char_split_across_fragments_is_valid(server):
    text = '{"type":"echo","s":"€uro"}'.encode()
    cut = text.index("€".encode()) + 1  # inside the 3-byte sequence
    with RawWS(server.port) as raw:
        raw.send_frame(OP_TEXT, text[:cut], fin=False)
        raw.send_frame(OP_CONT, text[cut:], fin=True)
        assert raw.recv_text() == text.decode()


def pad_echo(size):
    base = '{"type":"echo","p":""}'
    return base[:-2] + "z" * (size - len(base)) + '"}'


def test_message_at_limit_is_accepted(parley):
    srv = parley("--max-message", "1000")

    async def go():
        ws = await connect(srv)
        text = pad_echo(1000)
        assert len(text.encode()) == 1000
        assert await request(ws, text) == text
        await ws.close()
    arun(go())


def test_message_over_limit_closes_1009(parley):
    srv = parley("--max-message", "1000")

    async def go():
        ws = await connect(srv)
        await ws.send(pad_echo(1001))
        await expect_close(ws, 1009)
    arun(go())
    assert_ws_works(srv)


def test_fragmented_message_over_limit_closes_1009(parley):
    srv = parley("--max-message", "1000")

    async def go():
        ws = await connect(srv)
        text = pad_echo(1800)
        await ws.send(iter([text[:600], text[600:1200], text[1200:]]))
        await expect_close(ws, 1009)
    arun(go())
    assert_ws_works(srv)


def test_default_limit_is_64k(server):
    async def go():
        ws = await connect(server, max_size=None)
        ok = pad_echo(65536)
        assert await request(ws, ok) == ok
        await ws.send(pad_echo(65537))
        await expect_close(ws, 1009)
    arun(go())


def test_huge_frame_header_closes_1009_without_payload(server):
    with RawWS(server.port) as raw:
        raw.send(make_frame(OP_TEXT, b"", length=2 ** 31))  # header only
        expect_raw_close(raw, 1009)
    assert_ws_works(server)


# ---- UTF-8 -------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    b"\xff\xfe",
    b'{"type":"echo","s":"\xc0\xaf"}',  # overlong "/"
    b'{"type":"echo","s":"\xed\xa0\x80"}',  # UTF-16 surrogate
    b'{"type":"echo","s":"\xf4\x90\x80\x80"}',  # above U+10FFFF
    b'{"type":"echo","s":"\xe2\x82"}',  # truncated sequence
], ids=["ff-fe", "overlong", "surrogate", "too-high", "truncated"])
def test_invalid_utf8_text_closes_1007(server, payload):
    with RawWS(server.port) as raw:
        raw.send_frame(OP_TEXT, payload)
        expect_raw_close(raw, 1007)
    assert_ws_works(server)


def test_invalid_utf8_across_fragments_closes_1007(server):
    with RawWS(server.port) as raw:
        raw.send_frame(OP_TEXT, b'{"type":"echo","s":"\xe2\x82', fin=False)
        raw.send_frame(OP_CONT, b'("}', fin=True)
        expect_raw_close(raw, 1007)


def test_invalid_utf8_close_reason_closes_1007(server):
    with RawWS(server.port) as raw:
        raw.send_frame(OP_CLOSE, close_payload(1000, b"\xff\xfe"))
        got, _ = raw.recv_close()
        assert got == 1007


# ---- protocol errors ---------------------------------------------------------

PROTOCOL_ERRORS = {
    "rsv1": make_frame(OP_TEXT, b'{"type":"ping"}', rsv=4),
    "rsv2": make_frame(OP_TEXT, b'{"type":"ping"}', rsv=2),
    "rsv3": make_frame(OP_TEXT, b'{"type":"ping"}', rsv=1),
    "opcode-3": make_frame(0x3, b"abc"),
    "opcode-b": make_frame(0xB, b"abc"),
    "unmasked": make_frame(OP_TEXT, b'{"type":"ping"}', mask=False),
    "ping-126": make_frame(OP_PING, b"p" * 126),
    "fragmented-ping": make_frame(OP_PING, b"p", fin=False),
    "lone-continuation": make_frame(OP_CONT, b'{"type":"ping"}'),
    "text-inside-fragmented": make_frame(OP_TEXT, b'{"type":', fin=False)
    + make_frame(OP_TEXT, b'"ping"}'),
    "close-1-byte": make_frame(OP_CLOSE, b"\x03"),
    "close-999": make_frame(OP_CLOSE, close_payload(999)),
    "close-1005": make_frame(OP_CLOSE, close_payload(1005)),
    "close-1006": make_frame(OP_CLOSE, close_payload(1006)),
    "close-5000": make_frame(OP_CLOSE, close_payload(5000)),
    "garbage": b"\xff" * 64,
}


@pytest.mark.parametrize("name", list(PROTOCOL_ERRORS))
def test_protocol_error_closes_1002_and_others_keep_working(server, name):
    async def go():
        other = await connect(server)
        await assert_ping_pong(other)
        with RawWS(server.port) as raw:
            raw.send(PROTOCOL_ERRORS[name])
            expect_raw_close(raw, 1002)
        await assert_ping_pong(other)
        await other.close()
        assert other.close_code == 1000
    arun(go())


def test_frames_after_protocol_error_are_ignored(server):
    with RawWS(server.port) as raw:
        raw.send(make_frame(0x3, b"bad") + make_frame(OP_TEXT, b'{"type":"ping"}'))
        fin, op, payload = raw.recv_frame()
        assert op == OP_CLOSE and payload[:2] == struct.pack("!H", 1002)
        assert raw.closed_by_server()


def test_message_one_byte_at_a_time(server):
    frame = make_frame(OP_TEXT, b'{"type":"echo","slow":true}')
    with RawWS(server.port) as raw:
        for b in frame:
            raw.send(bytes([b]))
        assert raw.recv_text() == '{"type":"echo","slow":true}'


def test_many_messages_in_one_write(server):
    n = 200
    frames = b"".join(make_frame(OP_TEXT, ('{"type":"echo","i":%d}' % i).encode())
                      for i in range(n))
    with RawWS(server.port) as raw:
        raw.send(frames)
        for i in range(n):
            assert raw.recv_text() == '{"type":"echo","i":%d}' % i


def test_slow_reader_is_closed_and_others_keep_working(parley):
    """A client that floods echo requests and never reads: its output queue
    (--max-queue) fills, the server closes it with a close code rather than
    buffering without bound, and another client keeps working."""
    srv = parley("--max-queue", "65536")

    async def go():
        other = await connect(srv)
        frame = make_frame(OP_TEXT, pad_echo(1024).encode())
        with RawWS(srv.port, timeout=30) as raw:
            sent = 0
            for _ in range(32 * 1024):  # up to 32 MB of requests, 32 MB of echoes
                try:
                    raw.send(frame)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    break
                sent += 1
            code = None
            for _ in range(200000):
                try:
                    fin, op, payload = raw.recv_frame(timeout=30)
                except EOFError:
                    break
                if op == OP_CLOSE:
                    code = struct.unpack("!H", payload[:2])[0]
                    break
            assert code in (1008, 1013), f"close code {code} after {sent} requests"
        await assert_ping_pong(other)
        await other.close()
    arun(go())


# ---- keepalive ---------------------------------------------------------------


def test_unresponsive_client_gets_pings_then_1001(parley):
    srv = parley("--ping-interval", "300")
    with RawWS(srv.port) as raw:
        pings = 0
        for _ in range(100):
            fin, op, payload = raw.recv_frame(timeout=15)
            if op == OP_PING:
                pings += 1
                continue
            assert op == OP_CLOSE, op
            assert payload[:2] == struct.pack("!H", 1001), payload
            break
        else:
            pytest.fail("no close frame")
        assert pings >= 1
        assert raw.closed_by_server(timeout=15)


def test_responsive_raw_client_stays_open(parley):
    srv = parley("--ping-interval", "300")
    with RawWS(srv.port) as raw:
        pings = 0
        deadline = time.monotonic() + 2.5  # about 8 ping intervals
        for _ in range(1000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                fin, op, payload = raw.recv_frame(timeout=left)
            except TimeoutError:
                break
            assert op != OP_CLOSE, f"closed although pongs were sent: {payload!r}"
            if op == OP_PING:
                pings += 1
                raw.send_frame(OP_PONG, payload)
        assert pings >= 2
        raw.send_text('{"type":"ping"}')
        assert json.loads(raw.recv_text()) == {"type": "pong"}


def test_websockets_client_stays_open_across_ping_intervals(parley):
    srv = parley("--ping-interval", "300")

    async def go():
        ws = await connect(srv)  # answers pings itself; sends none of its own
        await asyncio.sleep(2.0)
        assert ws.open, (ws.close_code, ws.close_reason)
        await assert_ping_pong(ws)
        await ws.close()
        assert ws.close_code == 1000
    arun(go())
