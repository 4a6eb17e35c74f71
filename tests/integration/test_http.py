"""HTTP/1.1 behaviour of parleyd: health, keep-alive, pipelining, framing,
limits and timeouts. Byte-exact requests go through RawHTTP."""

import json
import time

import pytest
import requests

from parley_client import RawHTTP, assert_error_closes, http_get

H = b"Host: test\r\n"


def still_serving(port):
    resp = http_get(port, b"/healthz")
    assert resp.status == 200 and resp.json() == {"status": "ok"}, resp


# ---- health -----------------------------------------------------------------


def test_healthz_ok(server):
    r = requests.get(server.url + "/healthz", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"status": "ok"}


def test_healthz_head_has_no_body(server):
    with RawHTTP(server.port) as c:
        c.send(b"HEAD /healthz HTTP/1.1\r\n" + H + b"\r\n")
        head = c.read_response(head_only=True)
        assert head.status == 200
        assert int(head.header("content-length")) == len(b'{"status":"ok"}')
        # If HEAD had sent a body, it would be read as the next response.
        get = c.request(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
        assert get.status == 200 and get.json() == {"status": "ok"}, get


# ---- keep-alive and pipelining ---------------------------------------------


def test_keep_alive_several_requests_one_socket(server):
    with RawHTTP(server.port) as c:
        for _ in range(5):
            resp = c.request(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
            assert resp.status == 200 and resp.json() == {"status": "ok"}, resp
            assert (resp.header("connection") or "").lower() != "close"


def test_requests_session_reuses_connection(server):
    with requests.Session() as s:
        for _ in range(3):
            r = s.get(server.url + "/healthz", timeout=10)
            assert r.status_code == 200
    # one TCP connection accepted for the three requests (+1 for /metrics)
    with RawHTTP(server.port) as c:
        body = c.request(b"GET /metrics HTTP/1.1\r\n" + H + b"\r\n").body.decode()
    accepted = [ln for ln in body.splitlines()
                if ln.startswith("parley_connections_accepted_total ")]
    assert accepted and float(accepted[0].split()[1]) == 2.0, accepted


def test_pipelined_requests_answered_in_order(server):
    with RawHTTP(server.port) as c:
        c.send(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n"
               b"GET /metrics HTTP/1.1\r\n" + H + b"\r\n"
               b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
        r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
    assert r1.status == 200 and r1.json() == {"status": "ok"}
    assert r2.status == 200 and r2.header("content-type").startswith("text/plain")
    assert b"parley_connections_open" in r2.body
    assert r3.status == 200 and r3.json() == {"status": "ok"}


def test_request_split_into_single_bytes(server):
    with RawHTTP(server.port) as c:
        for b in b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n":
            c.send(bytes([b]))
        resp = c.read_response()
    assert resp.status == 200 and resp.json() == {"status": "ok"}


def test_connection_close_request_is_honoured(server):
    with RawHTTP(server.port) as c:
        resp = c.request(b"GET /healthz HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
        assert resp.status == 200
        assert (resp.header("connection") or "").lower() == "close"
        assert c.closed_by_server()


def test_http10_without_keep_alive_closes(server):
    with RawHTTP(server.port) as c:
        resp = c.request(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert resp.status == 200 and resp.json() == {"status": "ok"}
        assert c.closed_by_server()


def test_body_is_consumed_before_next_request(server):
    """A POST with a body (Content-Length, then chunked) is answered, and its
    body bytes are not parsed as the next request on the same connection."""
    with RawHTTP(server.port) as c:
        body = b"GET /evil HTTP/1.1\r\n\r\n"  # looks like a request: must not be one
        c.send(b"POST /healthz HTTP/1.1\r\n" + H
               + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        first = c.read_response()
        assert first.status in (404, 405), first
        chunk = b"GET /evil2 HTTP/1.1\r\n\r\n"
        c.send(b"POST /healthz HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n")
        second = c.read_response()
        assert second.status in (404, 405), second
        third = c.request(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
        assert third.status == 200 and third.json() == {"status": "ok"}, third


# ---- malformed requests and limits -----------------------------------------


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /healthz\r\n\r\n",
    b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTX/1.1\r\nHost: x\r\n\r\n",
    b"GET healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS hello-ish
    b"GET /healthz HTTP/1.1\r\nNo-Colon-Here\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
], ids=["garbage", "method-only", "no-version", "extra-token",
        "bad-protocol", "relative-target", "tls", "no-colon", "space-in-name",
        "two-hosts", "bad-content-length"])
def test_malformed_request_gets_400_and_close(server, raw):
    with RawHTTP(server.port) as c:
        resp = c.request(raw)
        assert_error_closes(c, resp, 400)
    still_serving(server.port)


def test_http11_request_without_host_gets_400(server):
    """RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request that
    lacks a Host header field."""
    with RawHTTP(server.port) as c:
        resp = c.request(b"GET /healthz HTTP/1.1\r\n\r\n")
        assert_error_closes(c, resp, 400)


def test_request_line_too_long_gets_414(server):
    with RawHTTP(server.port) as c:
        resp = c.request(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n")
        assert_error_closes(c, resp, 414)
    still_serving(server.port)


def test_request_line_too_long_is_answered_before_its_end(server):
    """414 as soon as 8192 bytes without CRLF arrived, no need to finish."""
    with RawHTTP(server.port) as c:
        c.send(b"GET /" + b"a" * 9000)
        resp = c.read_response()
        assert_error_closes(c, resp, 414)


def test_too_many_headers_gets_431(server):
    hdrs = b"".join(b"X-H%d: v\r\n" % i for i in range(70))
    with RawHTTP(server.port) as c:
        resp = c.request(b"GET /healthz HTTP/1.1\r\n" + H + hdrs + b"\r\n")
        assert_error_closes(c, resp, 431)
    still_serving(server.port)


def test_64_headers_are_accepted(server):
    hdrs = b"".join(b"X-H%d: v\r\n" % i for i in range(63))  # + Host = 64
    with RawHTTP(server.port) as c:
        resp = c.request(b"GET /healthz HTTP/1.1\r\n" + H + hdrs + b"\r\n")
        assert resp.status == 200, resp


def test_head_over_max_header_bytes_gets_431(parley):
    srv = parley("--max-header-bytes", "1024")
    with RawHTTP(srv.port) as c:
        resp = c.request(b"GET /healthz HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 2000
                         + b"\r\n\r\n")
        assert_error_closes(c, resp, 431)
    # under the limit still works
    with RawHTTP(srv.port) as c:
        resp = c.request(b"GET /healthz HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 500
                         + b"\r\n\r\n")
        assert resp.status == 200, resp


def test_content_length_over_max_body_gets_413_before_body(parley):
    srv = parley("--max-body", "1000")
    with RawHTTP(srv.port) as c:
        # Only the head is sent: the 413 must come without waiting for 5 MB.
        c.send(b"POST /healthz HTTP/1.1\r\n" + H + b"Content-Length: 5000000\r\n\r\n")
        resp = c.read_response()
        assert_error_closes(c, resp, 413)
    still_serving(srv.port)


def test_chunked_body_over_max_body_gets_413(parley):
    srv = parley("--max-body", "1000")
    with RawHTTP(srv.port) as c:
        c.send(b"POST /healthz HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
               + b"800\r\n" + b"x" * 0x800 + b"\r\n0\r\n\r\n")
        resp = c.read_response()
        assert_error_closes(c, resp, 413)


def test_transfer_encoding_gzip_gets_501(server):
    with RawHTTP(server.port) as c:
        resp = c.request(b"POST /healthz HTTP/1.1\r\n" + H
                         + b"Transfer-Encoding: gzip\r\n\r\n")
        assert_error_closes(c, resp, 501)
    still_serving(server.port)


def test_http2_version_gets_505(server):
    with RawHTTP(server.port) as c:
        resp = c.request(b"GET /healthz HTTP/2.0\r\n" + H + b"\r\n")
        assert_error_closes(c, resp, 505)


def test_content_length_and_transfer_encoding_gets_400(server):
    with RawHTTP(server.port) as c:
        resp = c.request(b"POST /healthz HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert_error_closes(c, resp, 400)


def test_conflicting_content_lengths_get_400(server):
    with RawHTTP(server.port) as c:
        resp = c.request(b"POST /healthz HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
                         b"Content-Length: 6\r\n\r\nhello!")
        assert_error_closes(c, resp, 400)


def test_error_after_good_request_on_same_connection(server):
    """A good response, then a bad request on the same socket: 400 + close."""
    with RawHTTP(server.port) as c:
        ok = c.request(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
        assert ok.status == 200
        bad = c.request(b"BROKEN\r\n\r\n")
        assert_error_closes(c, bad, 400)


# ---- timeouts ---------------------------------------------------------------


def test_partial_request_times_out_with_408(parley):
    srv = parley("--request-timeout", "500")
    with RawHTTP(srv.port) as c:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: te")
        resp = c.read_response(timeout=10)
        assert_error_closes(c, resp, 408)
    still_serving(srv.port)


def test_silent_connection_is_closed_without_response(parley):
    srv = parley("--request-timeout", "500")
    with RawHTTP(srv.port) as c:
        data = c.read_until_eof(timeout=10)  # raises TimeoutError if never closed
        assert data == b"", data


def test_request_timeout_does_not_cut_a_live_connection(parley):
    """A keep-alive connection that completes requests is not hit by the
    request timeout while it keeps sending whole requests."""
    srv = parley("--request-timeout", "500", "--idle-timeout", "60000")
    with RawHTTP(srv.port) as c:
        for _ in range(3):
            resp = c.request(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
            assert resp.status == 200
            time.sleep(0.3)
        # idle for longer than the request timeout: still open (idle timeout 60s)
        time.sleep(0.8)
        resp = c.request(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
        assert resp.status == 200, resp


def test_idle_keep_alive_connection_is_closed(parley):
    srv = parley("--idle-timeout", "300")
    with RawHTTP(srv.port) as c:
        resp = c.request(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
        assert resp.status == 200
        assert c.closed_by_server(timeout=10)


# ---- error bodies -----------------------------------------------------------


def test_unknown_path_404_json(server):
    r = requests.get(server.url + "/no/such/thing", timeout=10)
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["error"]["code"] == "not_found"
    assert isinstance(body["error"]["message"], str)


def test_404_keeps_connection_alive(server):
    with RawHTTP(server.port) as c:
        r = c.request(b"GET /missing HTTP/1.1\r\n" + H + b"\r\n")
        assert r.status == 404
        json.loads(r.body)
        r = c.request(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
        assert r.status == 200


def test_pipelined_flood_without_reading_is_answered_in_order(parley):
    """A client pipelines many requests before reading any response (more
    output than --max-queue): the server pauses and resumes, every response
    arrives, in order, and the server still serves others."""
    srv = parley("--max-queue", "4096")
    n = 2000
    with RawHTTP(srv.port, timeout=30) as c:
        reqs = b"".join(b"GET /healthz?i=%d HTTP/1.1\r\n" % i + H + b"\r\n" for i in range(n - 1))
        c.send(reqs + b"GET /metrics HTTP/1.1\r\n" + H + b"\r\n")
        for i in range(n - 1):
            r = c.read_response()
            assert r.status == 200 and r.json() == {"status": "ok"}, (i, r)
        last = c.read_response()
        assert last.header("content-type").startswith("text/plain"), last
    still_serving(srv.port)
