"""Origin check and token hygiene (README "Protection", docs/protocol.md):
--allowed-origins answers 403 forbidden_origin to other browser origins;
tokens never reach the log; an expired or revoked token closes the
WebSockets opened with it (1008) and nothing else."""

import json
from pathlib import Path

from parley_client import (PASSWORD, Client, Control, arun, assert_error, close_all, close_key,
                           direct, get_metrics, login, login_attempt, mval, register, rest,
                           status_key, users, ws_handshake, ws_status)


def attempt_origin(port, token, origin):
    extra = b"" if origin is None else b"Origin: " + origin.encode() + b"\r\n"
    return ws_handshake(port, token, extra=extra)


def test_allowed_origins(parley):
    """--allowed-origins http://good.example,https://app.example: an upgrade
    from another origin gets 403 forbidden_origin; a listed origin or no
    Origin at all (a non-browser client) gets 101."""
    srv = parley("--allowed-origins", "http://good.example,https://app.example")

    async def body():
        ctl = await Control.open(srv)
        u = register(srv)
        m0 = get_metrics(srv.port)
        bad = ["http://evil.example", "http://good.example.evil.example", "null",
               "https://good.example", "http://good.example:8080"]
        for origin in bad:
            r = attempt_origin(srv.port, u.token, origin)
            assert r.status == 403, (origin, r)
            assert json.loads(r.body)["error"]["code"] == "forbidden_origin", (origin, r)
        for origin in ["http://good.example", "https://app.example", None]:
            r = attempt_origin(srv.port, u.token, origin)
            assert r.status == 101, (origin, r)
        # the same through a real client library
        assert await ws_status(srv, query_token=u.token, origin="http://evil.example") == 403
        assert await ws_status(srv, query_token=u.token, origin="http://good.example") == 101
        await ctl.exchange()
        m1 = get_metrics(srv.port)
        assert mval(m1, status_key(403)) - mval(m0, status_key(403)) == len(bad) + 1
        await ctl.check()
        await ctl.close()

    arun(body())


def test_tokens_never_in_the_log(parley):
    """With --log-level debug, after registrations, logins, REST calls with
    the token in the Authorization header and in ?token=, WebSockets opened
    both ways, refused tokens and a logout, no token (nor a prefix of one)
    and no password appears in the server's log."""
    srv = parley("--log-level", "debug")

    async def body():
        ctl = await Control.open(srv)
        a, b = users(srv, 2)
        a2 = login(srv, a.name, a.password)
        secrets = [a.token, b.token, a2.token, ctl.a.token, ctl.b.token]
        conv = direct(a, b)
        assert a.post(f"/v1/conversations/{conv}/messages",
                      {"cmid": "c1", "body": "hi"}).status == 201
        rest(srv, "GET", f"/v1/conversations?token={a.token}")
        rest(srv, "GET", f"/v1/conversations/{conv}/messages?token={b.token}&after=0")
        rest(srv, "GET", "/v1/conversations", token=a.token[:-1] + "x")  # a wrong token
        c1 = await Client.open(a)  # Authorization header
        c2 = await Client.open(b, query=True)  # ?token=
        await c1.ping()
        await c2.ping()
        resp = ws_handshake(srv.port, a.token[:-2] + "zz")
        assert resp.status == 401, resp
        assert login_attempt(srv, a.name, "not-the-password").status == 401
        await ctl.exchange()
        assert a2.delete("/v1/sessions/current").status == 204
        assert rest(srv, "GET", "/v1/conversations", token=a2.token).status == 401
        await close_all([c1, c2])
        await ctl.check()
        await ctl.close()
        return secrets

    secrets = arun(body())
    srv.expect_exit = True  # stopped here so that the whole log is written
    assert srv.kill() == 0
    log = Path(srv.log_path).read_text(errors="replace")
    assert "listening" in log, log[:500]
    for t in secrets:
        assert t not in log and t[:12] not in log, "a token (or its prefix) is in the log"
    for p in (PASSWORD, "not-the-password"):
        assert p not in log, "a password is in the log"


def test_expired_token_closes_open_websocket(parley):
    """--token-ttl 2 --ping-interval 300: a WebSocket opened with a token
    that then expires is closed with 1008; the token gets 401 afterwards; a
    fresh session chats normally."""
    # fast password hashing: every token lives 2 s, registrations must not eat it
    srv = parley("--token-ttl", "2", "--ping-interval", "300", "--insecure-fast-kdf")

    async def body():
        m0 = get_metrics(srv.port)
        v = register(srv)
        victim = await Client.open(v)
        ctl = await Control.open(srv)  # tokens as short-lived: checked while valid
        await ctl.exchange()
        await victim.ping()
        code = await victim.closed_with(timeout=20)
        assert code == 1008, (code, victim.ws.close_reason)
        assert_error(rest(srv, "GET", "/v1/conversations", token=v.token), 401, "unauthorized")
        resp = ws_handshake(srv.port, v.token)
        assert resp.status == 401, resp
        # the control's tokens expired as well: their sockets close the same way
        assert await ctl.ca.closed_with(timeout=20) == 1008
        assert await ctl.cb.closed_with(timeout=20) == 1008
        m1 = get_metrics(srv.port)
        assert mval(m1, close_key(1008)) - mval(m0, close_key(1008)) == 3
        # a fresh session (new tokens, valid 2 s) is served normally
        fresh = await Control.open(srv)
        await fresh.exchange(2)
        await fresh.close()

    arun(body())


def test_revoked_token_closes_its_websockets(parley):
    """DELETE /v1/sessions/current revokes the token: both WebSockets opened
    with it (header and ?token=) are closed with 1008; the same user's other
    device keeps its socket and its messages in order."""
    srv = parley()

    async def body():
        ctl = await Control.open(srv)
        u, b = users(srv, 2)
        u2 = login(srv, u.name, u.password)
        conv = direct(b, u)
        ca1 = await Client.open(u)
        ca2 = await Client.open(u, query=True)
        other = await Client.open(u2)
        cb = await Client.open(b)
        m0 = get_metrics(srv.port)
        r = u.delete("/v1/sessions/current")
        assert r.status == 204, r
        assert await ca1.closed_with() == 1008
        assert await ca2.closed_with() == 1008
        m1 = get_metrics(srv.port)
        assert mval(m1, close_key(1008)) - mval(m0, close_key(1008)) == 2
        assert_error(u.get("/v1/conversations"), 401, "unauthorized")
        resp = ws_handshake(srv.port, u.token)
        assert resp.status == 401, resp
        # the other device is untouched
        for i in range(5):
            ack = await cb.send_msg(conv, f"to-u-{i}", i)
            assert ack["type"] == "ack" and ack["seq"] == i + 1, ack
        for i in range(5):
            f = await other.wait_type("msg", conv=conv)
            assert (f["seq"], f["cmid"]) == (i + 1, f"to-u-{i}"), f
        assert u2.get("/v1/conversations").status == 200
        await ctl.check()
        await close_all([other, cb])
        await ctl.close()

    arun(body())
