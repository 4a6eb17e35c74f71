"""The conversation cap cannot be used against a user (docs/protocol.md,
"Invitations and the conversation cap"): memberships made by non-contacts
are invitations that count only once accepted (by a send, a read, or asking
for the direct conversation), with a cap of their own; a contact (a direct
conversation the user accepted) adds directly; groups created and members
added are rate-limited per user (--rate-groups); many groups are left in
one call (POST /v1/conversations/leave)."""

from parley_client import (Client, Control, arun, assert_error, close_all, conv_get, direct,
                           get_metrics, group, inbox, mval, rest, retry_after_header,
                           send_rest, users)

RL = "parley_rate_limited_total"


async def barrier(c):
    """One user's cursor updates apply in order: a refused one (no such
    conversation) answers only after the earlier ones are applied."""
    r = await c.request({"type": "read", "conv": 987654321, "seq": 1}, "never")
    assert r["type"] == "error" and r["code"] == "forbidden", r


def leave(user, convs):
    return user.post("/v1/conversations/leave", {"convs": convs})


def test_strangers_cannot_fill_the_cap(parley):
    """The attack of issue 12 scaled down (--max-user-convs 5): a stranger
    puts the victim in groups; they are invitations, so the victim still
    starts a direct chat; beyond 5 invitations the stranger is refused; the
    victim leaves them all in one call and is told on its WebSocket."""
    srv = parley("--max-user-convs", "5", "--rate-groups", "0")
    attacker, victim, friend, other = users(srv, 4)

    async def body():
        cv = await Client.open(victim)
        try:
            groups = [group(attacker, [victim, other], name=f"spam{i}") for i in range(5)]
            r = attacker.post("/v1/conversations", {"type": "group", "name": "spam5",
                                                    "members": [victim.name]})
            assert_error(r, 400, "too_many_members")
            convs = {c["id"]: c for c in inbox(victim)["conversations"]}
            assert sorted(convs) == sorted(groups), convs
            assert all(c["invited"] is True for c in convs.values()), convs
            # the victim's cap is untouched: a direct chat, and its own groups
            r = victim.post("/v1/conversations", {"type": "direct", "with": friend.name})
            assert r.status == 201 and r.json()["invited"] is False, r
            dvf = r.json()["id"]
            assert conv_get(friend, dvf)["invited"] is True  # the friend has not replied yet
            # one call leaves them all
            r = leave(victim, groups)
            assert r.status == 200, r
            assert r.json() == {"left": groups, "failed": []}, r.json()
            removed = set()
            for _ in groups:
                f = await cv.wait(lambda f: f["type"] == "removed" and f["conv"] in groups,
                                  what="removed frames")
                removed.add(f["conv"])
            assert removed == set(groups)
            assert [c["id"] for c in inbox(victim)["conversations"]] == [dvf]
            for g in groups:
                assert victim.get(f"/v1/conversations/{g}").status == 403
                assert set(conv_get(attacker, g)["members"]) == {attacker.name, other.name}
        finally:
            await cv.close()

    arun(body())


def test_contacts_add_directly_and_invitations_are_accepted(parley):
    """A user who accepted a direct conversation with the admin is added as
    a member at once; others are invited until they send, read (seq 0 too)
    or ask for the direct conversation; accepting shows in the inbox after
    changed_since."""
    srv = parley()
    a, b, c, d = users(srv, 4)
    dab = direct(a, b)
    assert conv_get(b, dab)["invited"] is True
    assert send_rest(b, dab, "reply", "hi a").status == 201  # b replies: accepted
    assert conv_get(b, dab)["invited"] is False
    dac = direct(a, c)
    assert conv_get(c, dac)["invited"] is True
    assert direct(c, a) == dac  # c asks for it: accepted
    assert conv_get(c, dac)["invited"] is False
    g = group(a, [b, c, d])
    assert [conv_get(u, g)["invited"] for u in (a, b, c, d)] == [False, False, False, True]
    g2 = group(b, [a])  # a started dab (accepted it): b is a's contact
    assert conv_get(a, g2)["invited"] is False
    cursor = inbox(d)["cursor"]

    async def body():
        cd = await Client.open(d)
        try:
            await cd.send({"type": "read", "conv": g, "seq": 0})
            await barrier(cd)
            assert conv_get(d, g)["invited"] is False
        finally:
            await cd.close()

    arun(body())
    changed = inbox(d, changed_since=cursor)["conversations"]
    assert [(x["id"], x["invited"]) for x in changed] == [(g, False)], changed
    # a delivered cursor does not accept (clients send it on their own)
    e = users(srv, 1)[0]
    g3 = group(a, [e], name="three")
    assert send_rest(a, g3, "m1", "hello").status == 201

    async def delivered():
        ce = await Client.open(e)
        try:
            await ce.send({"type": "delivered", "conv": g3, "seq": 1})
            await barrier(ce)
        finally:
            await ce.close()

    arun(delivered())
    j = conv_get(e, g3)
    assert (j["delivered_seq"], j["invited"]) == (1, True), j


def test_leave_many_bad_input(server):
    a, b, c = users(server, 3)
    g1 = group(a, [b], name="one")
    g2 = group(a, [b], name="two")
    d = direct(b, a)
    gc = group(c, [a], name="without-b")
    p = "/v1/conversations/leave"
    for body in [{}, {"convs": 5}, {"convs": "1"}, {"convs": []}, {"convs": [g1, "2"]},
                 {"convs": [g1, -1]}, {"convs": [0]}, {"convs": [1.5]}, {"convs": [2 ** 53 + 1]},
                 {"convs": [g1, None]}, {"convs": list(range(1, 502))}, {"convs": [[g1]]}]:
        err = assert_error(b.post(p, body), 400, "bad_request")
        assert "convs" in err["message"], err
    assert_error(b.post(p, data=b'{"convs":[1,'), 400, "bad_json")
    r = rest(server, "POST", p, {"convs": [g1]})
    assert_error(r, 401, "unauthorized")
    r = b.get(p)
    assert_error(r, 405, "method_not_allowed")
    assert r.header("allow") == "POST", r
    assert conv_get(b, g1)["id"] == g1  # nothing left so far
    r = leave(b, [g1, gc, 987654321, d, g1, g2])
    assert r.status == 200, r
    assert r.json() == {"left": [g1, g2],
                        "failed": [{"conv": gc, "code": "forbidden"},
                                   {"conv": 987654321, "code": "forbidden"},
                                   {"conv": d, "code": "bad_request"}]}, r.json()
    assert [c_["id"] for c_ in inbox(b)["conversations"]] == [d]
    assert sorted(conv_get(a, g1)["members"]) == [a.name]
    # 500 at once is within the limit
    r = leave(b, list(range(1, 501)))
    assert r.status == 200 and r.json()["left"] == [], r


def test_rate_of_group_creation_and_adding(parley):
    """--rate-groups 3: three groups created or members added pass, the
    fourth gets 429 rate_limited with retry_after_ms and Retry-After and
    changes nothing; other users are not limited; leaving is not limited."""
    srv = parley("--rate-groups", "3")

    async def body():
        ctl = await Control.open(srv)
        a, b, c, d = users(srv, 4)
        m0 = get_metrics(srv.port)
        g1 = group(a, [b, c], name="one")  # with its members: counts once
        r = a.post(f"/v1/conversations/{g1}/members", {"user": d.name})
        assert r.status == 200, r
        g2 = group(a, [], name="two")
        r = a.post("/v1/conversations", {"type": "group", "name": "four", "members": [b.name]})
        err = assert_error(r, 429, "rate_limited")
        assert err["retry_after_ms"] > 0 and retry_after_header(r) >= 1, r
        assert_error(a.post(f"/v1/conversations/{g2}/members", {"user": b.name}),
                     429, "rate_limited")
        assert sorted(x["id"] for x in inbox(a)["conversations"]) == sorted([g1, g2])
        assert sorted(conv_get(a, g2)["members"]) == [a.name]
        # direct conversations and leaving are not group changes
        r = a.post("/v1/conversations", {"type": "direct", "with": b.name})
        assert r.status == 201, r
        assert leave(a, [g2]).json()["left"] == [g2]
        # another user has a bucket of its own
        group(b, [c], name="b's")
        m1 = get_metrics(srv.port)
        assert mval(m1, RL) - mval(m0, RL) == 2
        await ctl.exchange()
        await ctl.check()
        await ctl.close()

    arun(body())
