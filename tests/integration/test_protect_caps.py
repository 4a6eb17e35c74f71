"""Caps (README "Protection", docs/protocol.md): WebSockets per user (429
too_many_connections), members per group and conversations per user (400
too_many_members), message body size (too_large), WebSocket message size
(1009), header and URL sizes (431 / 414). Each refusal is the documented
answer; a control client keeps chatting."""

import json

from parley_client import (OP_CONT, OP_TEXT, Client, Control, RawHTTP, RawWS, arun,
                           assert_error, assert_error_closes, await_metrics, close_all, close_key,
                           get_metrics, group, history, login, make_frame, mval, rest,
                           retry_after_header, status_key, users, ws_close_frame, ws_handshake)

RL = "parley_rate_limited_total"
WS_OPEN = "parley_ws_connections_open"


def test_connections_per_user(parley):
    """--max-user-conns 3: the 4th WebSocket of a user (any device) gets
    429 too_many_connections before the upgrade; another user is not
    limited; closing one lets the next one in."""
    srv = parley("--max-user-conns", "3")

    async def body():
        ctl = await Control.open(srv)
        u, v = users(srv, 2)
        dev2 = login(srv, u.name, u.password)
        mine = [await Client.open(u), await Client.open(u, query=True),
                await Client.open(dev2)]
        m0 = get_metrics(srv.port)
        for token in (u.token, dev2.token):
            resp = ws_handshake(srv.port, token)
            assert resp.status == 429, resp
            err = json.loads(resp.body)["error"]
            assert err["code"] == "too_many_connections", resp
            assert retry_after_header(resp) >= 1
        m1 = get_metrics(srv.port)
        assert mval(m1, RL) - mval(m0, RL) == 2
        assert mval(m1, WS_OPEN) == 3 + 2  # u's three and the control's two
        # the open ones work, other users are not limited
        for c in mine:
            await c.ping()
        theirs = [await Client.open(v) for _ in range(3)]
        await ctl.exchange()
        # closing one frees a place
        await mine.pop().close()
        await await_metrics(srv.port, lambda m: mval(m, WS_OPEN) == 2 + 2 + 3, "one closed")
        mine.append(await Client.open(u))
        await mine[-1].ping()
        await ctl.check()
        await close_all(mine + theirs)
        await ctl.close()

    arun(body())


def test_members_per_group(parley):
    """--max-group-members 3: adding a 4th member to a group of 3 gets 400
    too_many_members and changes nothing; after one leaves there is room."""
    srv = parley("--max-group-members", "3")

    async def body():
        ctl = await Control.open(srv)
        a, b, c, d = users(srv, 4)
        g = group(a, [b, c])
        m0 = get_metrics(srv.port)
        assert_error(a.post(f"/v1/conversations/{g}/members", {"user": d.name}),
                     400, "too_many_members")
        conv = a.get(f"/v1/conversations/{g}").json()
        assert sorted(conv["members"]) == sorted([a.name, b.name, c.name]), conv
        assert d.get(f"/v1/conversations/{g}").status == 403
        assert d.get("/v1/conversations").json()["conversations"] == []
        await ctl.exchange()
        # after someone leaves there is room again
        assert c.delete(f"/v1/conversations/{g}/members/{c.name}").status == 204
        r = a.post(f"/v1/conversations/{g}/members", {"user": d.name})
        assert r.status == 200, r
        assert_error(a.post(f"/v1/conversations/{g}/members", {"user": c.name}),
                     400, "too_many_members")
        m1 = get_metrics(srv.port)
        assert mval(m1, status_key(400)) - mval(m0, status_key(400)) == 2
        await ctl.check()
        await ctl.close()

    arun(body())


def test_members_per_group_counts_the_creator(parley):
    """--max-group-members 3: the creator is a member (docs/protocol.md), so
    creating a group that lists 3 other users (4 members) gets 400
    too_many_members, like adding a 4th member does; nothing is created."""
    srv = parley("--max-group-members", "3")
    a, b, c, d = users(srv, 4)
    r = a.post("/v1/conversations", {"type": "group", "name": "four",
                                     "members": [b.name, c.name, d.name]})
    assert r.status == 400 and r.error_code() == "too_many_members", (
        f"a group of 4 members was created with --max-group-members 3: {r!r}")
    assert a.get("/v1/conversations").json()["conversations"] == []
    assert rest(srv, "GET", "/healthz").status == 200


def test_conversations_per_user(parley):
    """--max-user-convs 2: a user in 2 conversations cannot make a third
    (direct or group): 400 too_many_members; the existing direct
    conversation is still returned. Others may still invite the user (an
    invitation does not count until accepted) up to 2 invitations; accepting
    one with a full cap is too_many_members; after leaving one there is
    room (test_protect_invites.py has the rest of the rule)."""
    srv = parley("--max-user-convs", "2")

    async def body():
        ctl = await Control.open(srv)
        a, b, c, d, e = users(srv, 5)
        r = a.post("/v1/conversations", {"type": "direct", "with": b.name})
        assert r.status == 201, r
        dab = r.json()["id"]
        g = group(a, [c], name="second")
        m0 = get_metrics(srv.port)
        assert_error(a.post("/v1/conversations", {"type": "direct", "with": d.name}),
                     400, "too_many_members")
        assert_error(a.post("/v1/conversations", {"type": "group", "name": "third",
                                                  "members": [d.name]}),
                     400, "too_many_members")
        # others invite a: not counted, but invitations have a cap of their own
        r = e.post("/v1/conversations", {"type": "direct", "with": a.name})
        assert r.status == 201, r
        dea = r.json()["id"]
        ge = group(e, [a, d], name="x")
        gc = group(c, [d], name="without-a")
        assert_error(c.post(f"/v1/conversations/{gc}/members", {"user": a.name}),
                     400, "too_many_members")
        assert [a.get(f"/v1/conversations/{k}").json()["invited"] for k in (dab, g, dea, ge)] \
            == [False, False, True, True]
        # the existing direct conversation is not a new one
        r = a.post("/v1/conversations", {"type": "direct", "with": b.name})
        assert r.status == 200 and r.json()["id"] == dab, r
        ids = sorted(x["id"] for x in a.get("/v1/conversations").json()["conversations"])
        assert ids == sorted([dab, g, dea, ge]), ids
        m1 = get_metrics(srv.port)
        assert mval(m1, status_key(400)) - mval(m0, status_key(400)) == 3
        # accepting with a full cap is refused, by read and by send
        ca = await Client.open(a)
        r = await ca.request({"type": "read", "conv": dea, "seq": 0}, "never")
        assert r["type"] == "error" and r["code"] == "too_many_members", r
        err = await ca.send_msg(ge, "hi", "hello")
        assert err["type"] == "error" and err["code"] == "too_many_members", err
        assert history(a, ge) == []
        await ctl.exchange()
        assert a.delete(f"/v1/conversations/{g}/members/{a.name}").status == 204
        ack = await ca.send_msg(ge, "hi", "hello")
        assert ack["type"] == "ack", ack
        assert a.get(f"/v1/conversations/{ge}").json()["invited"] is False
        assert_error(a.post("/v1/conversations", {"type": "direct", "with": d.name}),
                     400, "too_many_members")
        await ca.close()
        await ctl.check()
        await ctl.close()

    arun(body())


def test_message_body_size(parley):
    """--max-text 1024: the hello announces it (max_text), a body of 1024
    bytes as JSON passes, 1025 gets too_large (WebSocket: error frame with
    ref = cmid, connection open; REST: 413), and is not stored."""
    srv = parley("--max-text", "1024")

    async def body():
        ctl = await Control.open(srv)
        a, b = users(srv, 2)
        g = group(a, [b])
        c = await Client.open(a)
        assert c.hello["max_text"] == 1024, c.hello
        m0 = get_metrics(srv.port)
        ok = await c.send_msg(g, "fits", "x" * 1022)  # "xx…x" = 1024 bytes
        assert ok["type"] == "ack", ok
        err = await c.send_msg(g, "too-big", "x" * 1023)
        assert (err["type"], err["code"], err["ref"]) == ("error", "too_large", "too-big"), err
        err = await c.send_msg(g, "too-big-obj", {"t": "y" * 2000})
        assert (err["type"], err["code"], err["ref"]) == ("error", "too_large", "too-big-obj")
        assert_error(a.post(f"/v1/conversations/{g}/messages",
                            {"cmid": "rest-big", "body": "z" * 5000}), 413, "too_large")
        await c.ping()  # still open
        await ctl.exchange()
        m1 = get_metrics(srv.port)
        assert mval(m1, status_key(413)) - mval(m0, status_key(413)) == 1
        assert sum(v for k, v in m1.items() if k.startswith("parley_errors_total")) - \
            sum(v for k, v in m0.items() if k.startswith("parley_errors_total")) >= 2
        assert [m["cmid"] for m in history(a, g)] == ["fits"]
        ok = await c.send_msg(g, "fits-again", "small")
        assert ok["type"] == "ack" and ok["seq"] == 2, ok
        await ctl.check()
        await c.close()
        await ctl.close()

    arun(body())


def test_websocket_message_size(parley):
    """--max-message 4096: a frame header announcing 5000 bytes closes with
    1009 before the payload is sent; so does a fragmented message growing
    over the limit."""
    srv = parley("--max-message", "4096")

    async def body():
        ctl = await Control.open(srv)
        m0 = get_metrics(srv.port)
        with RawWS(srv.port) as ws:
            ws.send(make_frame(OP_TEXT, b"", length=5000)[:8])  # header and mask only
            assert ws.recv_close()[0] == 1009
            assert ws.closed_by_server()
        with RawWS(srv.port) as ws:
            ws.send(make_frame(OP_TEXT, b"a" * 2000, fin=False))
            ws.send(make_frame(OP_CONT, b"b" * 2000, fin=False))
            ws.send(make_frame(OP_CONT, b"c" * 2000, fin=True))
            assert ws.recv_close()[0] == 1009
        with RawWS(srv.port) as ws:  # at the limit: fine
            payload = json.dumps({"type": "echo", "pad": "p" * (4096 - 30)})
            payload += " " * (4096 - len(payload))
            ws.send_text(payload)
            assert ws.recv_text() == payload
            ws.send(ws_close_frame())
        await ctl.exchange()
        m1 = get_metrics(srv.port)
        assert mval(m1, close_key(1009)) - mval(m0, close_key(1009)) == 2
        await ctl.check()
        await ctl.close()

    arun(body())


def test_header_and_url_sizes(parley):
    """A head over --max-header-bytes (16 KiB) or with more than 64 fields
    gets 431, a request line over 8192 bytes 414, each closing the
    connection; an upgrade with a huge head too."""
    srv = parley()

    async def body():
        ctl = await Control.open(srv)
        m0 = get_metrics(srv.port)
        with RawHTTP(srv.port) as c:
            r = c.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 17000 + b"\r\n\r\n")
            assert_error_closes(c, r, 431)
        with RawHTTP(srv.port) as c:
            fields = b"".join(b"X-F%d: v\r\n" % i for i in range(65))
            r = c.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
            assert_error_closes(c, r, 431)
        with RawHTTP(srv.port) as c:
            r = c.request(b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert_error_closes(c, r, 414)
        with RawHTTP(srv.port) as c:
            r = c.request(b"GET /v1/ws?token=" + b"t" * 9000 + b" HTTP/1.1\r\nHost: x\r\n"
                          b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            assert_error_closes(c, r, 414)
        with RawHTTP(srv.port) as c:
            r = c.request(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          b"Cookie: " + b"c" * 20000 + b"\r\n\r\n")
            assert_error_closes(c, r, 431)
        await ctl.exchange()
        m1 = get_metrics(srv.port)
        assert mval(m1, status_key(431)) - mval(m0, status_key(431)) == 3
        assert mval(m1, status_key(414)) - mval(m0, status_key(414)) == 2
        assert rest(srv, "GET", "/healthz").status == 200
        await ctl.check()
        await ctl.close()

    arun(body())
