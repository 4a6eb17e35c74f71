"""Isolation: non-members (and removed members) cannot read, send, sync,
mark read or get receipts, over REST or the WebSocket; the answer does not
reveal whether the conversation exists; bad and revoked tokens get 401."""

from parley_client import (Client, arun, assert_error, close_all, conv_get, direct, group,
                           history, inbox, login, register, rest, send_rest, users, ws_status)


def rest_attempts(user, conv):
    """Every conversation endpoint a non-member might try: (label, response)."""
    p = f"/v1/conversations/{conv}"
    return [
        ("get", user.get(p)),
        ("history", user.get(p + "/messages")),
        ("history-after", user.get(p + "/messages", params={"after": 0, "limit": 10})),
        ("send", send_rest(user, conv, "intruder-1", "let me in")),
        ("receipts", user.get(p + "/receipts")),
        ("receipts-seq", user.get(p + "/receipts", params={"seq": 1})),
        ("add-self", user.post(p + "/members", {"user": user.name})),
    ]


def test_nonmember_rest_is_forbidden_and_same_for_missing(server):
    a, b = users(server, 2)
    eve = register(server)
    cid = direct(a, b)
    assert send_rest(a, cid, "m1", "secret").status_code == 201
    real = rest_attempts(eve, cid)
    ghost = rest_attempts(eve, cid + 100000)
    for (label, r), (_, g) in zip(real, ghost):
        assert_error(r, 403, "forbidden")
        assert_error(g, 403, "forbidden")
        assert r.content == g.content, (label, r.text, g.text)
        assert "secret" not in r.text
    # Removing a member (existing or not) is forbidden for an outsider too.
    assert_error(eve.delete(f"/v1/conversations/{cid}/members/{a.name}"), 403, "forbidden")
    assert_error(eve.delete(f"/v1/conversations/{cid}/members/nosuchuser"), 403, "forbidden")
    # Nothing changed.
    assert [(m["cmid"], m["body"]) for m in history(a, cid)] == [("m1", "secret")]
    assert sorted(conv_get(b, cid)["members"]) == sorted([a.name, b.name])
    assert inbox(eve)["conversations"] == []


def test_nonmember_ws_is_forbidden(server):
    a, b = users(server, 2)
    eve = register(server)
    cid = direct(a, b)

    async def go():
        ce, cb = await Client.open(eve), await Client.open(b)
        try:
            r = await ce.send_msg(cid, "evil-1", "spam")
            assert r["type"] == "error" and r["code"] == "forbidden" and r["ref"] == "evil-1", r
            r = await ce.send_msg(cid + 100000, "evil-2", "spam")
            assert r["type"] == "error" and r["code"] == "forbidden" and r["ref"] == "evil-2", r
            for frame in [{"type": "sync", "conv": cid, "after": 0},
                          {"type": "sync", "conv": cid + 100000},
                          {"type": "read", "conv": cid, "seq": 1},
                          {"type": "delivered", "conv": cid, "seq": 1},
                          {"type": "typing", "conv": cid}]:
                r = await ce.request(dict(frame, id="x-" + frame["type"]), "history")
                assert r["type"] == "error" and r["code"] == "forbidden", (frame, r)
                assert r["ref"] == "x-" + frame["type"]
            ib = await ce.request({"type": "inbox"}, "inbox")
            assert ib["inbox"]["conversations"] == []
            # B received nothing of it: a real message from A is the first thing.
            await send_a(a, cid)
            before, m = await cb.until(lambda f: f["type"] == "msg")
            assert m["cmid"] == "real" and m["seq"] == 1, m
            assert not [f for f in before if f["type"] in ("typing", "receipt")], before
        finally:
            await close_all([ce, cb])
    arun(go())
    assert [m["cmid"] for m in history(b, cid)] == ["real"]
    rec = b.get(f"/v1/conversations/{cid}/receipts").json()
    assert {m["user"] for m in rec["members"]} == {a.name, b.name}


async def send_a(a, cid):
    ca = await Client.open(a)
    try:
        ack = await ca.send_msg(cid, "real", "hello b")
        assert ack["type"] == "ack", ack
    finally:
        await ca.close()


def test_removed_member_loses_access(server):
    a, b, c = users(server, 3)
    gid = group(a, [b, c])
    assert send_rest(a, gid, "before", "visible to c").status_code == 201
    assert history(c, gid)[0]["body"] == "visible to c"
    r = a.delete(f"/v1/conversations/{gid}/members/{c.name}")
    assert r.status_code == 204, r.text
    for label, resp in rest_attempts(c, gid):
        if label == "add-self":
            continue
        assert_error(resp, 403, "forbidden")
    assert send_rest(a, gid, "after", "not for c").status_code == 201

    async def go():
        cc = await Client.open(c)
        try:
            r = await cc.send_msg(gid, "c-after", "x")
            assert r["type"] == "error" and r["code"] == "forbidden", r
            r = await cc.request({"type": "sync", "conv": gid}, "history")
            assert r["type"] == "error" and r["code"] == "forbidden", r
        finally:
            await cc.close()
    arun(go())
    assert [m["cmid"] for m in history(b, gid)] == ["before", "after"]


def test_tokens_bad_and_revoked_everywhere(server):
    a, b = users(server, 2)
    cid = direct(a, b)
    s = login(server, a.name)
    r = s.delete("/v1/sessions/current")
    assert r.status_code == 204, r.text
    bad_tokens = [s.token, "x" * 43, "", "not-a-token"]
    for tok in bad_tokens:
        h = {"Authorization": "Bearer " + tok}
        for method, path, body in [
            ("GET", "/v1/conversations", None),
            ("POST", "/v1/conversations", {"type": "direct", "with": b.name}),
            ("GET", f"/v1/conversations/{cid}", None),
            ("GET", f"/v1/conversations/{cid}/messages", None),
            ("POST", f"/v1/conversations/{cid}/messages", {"cmid": "t", "body": "t"}),
            ("GET", f"/v1/conversations/{cid}/receipts", None),
            ("POST", f"/v1/conversations/{cid}/members", {"user": b.name}),
            ("DELETE", f"/v1/conversations/{cid}/members/{b.name}", None),
            ("DELETE", "/v1/sessions/current", None),
        ]:
            resp = rest(server, method, path, body=body, headers=h)
            assert_error(resp, 401, "unauthorized")
            assert "bearer" in resp.headers.get("WWW-Authenticate", "").lower(), resp.headers

    async def go():
        for tok in bad_tokens:
            assert await ws_status(server, token=tok or "x") == 401
    arun(go())
    # None of it reached the conversation; A's first token still works.
    assert history(a, cid) == []
