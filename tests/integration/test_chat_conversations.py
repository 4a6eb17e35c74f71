"""Conversations: direct (idempotent), groups, members (add, remove, leave,
roles), the `conv` and `removed` frames, and the non-member answer."""

from parley_client import (Client, arun, assert_error, conv_get, direct, group, inbox, register,
                           uname, users)

PER_USER = ("read_seq", "delivered_seq", "unread")


def test_direct_is_idempotent_from_either_side(server):
    a, b = users(server, 2)

    async def go():
        cb = await Client.open(b)
        r = a.post("/v1/conversations", {"type": "direct", "with": b.name})
        assert r.status_code == 201, r.text
        conv = r.json()
        assert conv["type"] == "direct" and conv["name"] == ""
        assert sorted(conv["members"]) == sorted([a.name, b.name])
        assert conv["admins"] == []
        assert conv["last_seq"] == 0 and conv["unread"] == 0
        assert conv["last_message"] is None
        # B (online) is told with a conv frame, without A's per-user fields.
        f = await cb.wait(lambda f: f["type"] == "conv" and f["conv"]["id"] == conv["id"])
        assert sorted(f["conv"]["members"]) == sorted([a.name, b.name])
        assert not any(k in f["conv"] for k in PER_USER), f
        await cb.close()
        return conv["id"]
    cid = arun(go())

    r = a.post("/v1/conversations", {"type": "direct", "with": b.name})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == cid
    r = b.post("/v1/conversations", {"type": "direct", "with": a.name.upper()})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == cid
    assert [c["id"] for c in inbox(a)["conversations"]] == [cid]
    assert [c["id"] for c in inbox(b)["conversations"]] == [cid]


def test_direct_bad_targets(server):
    a = register(server)
    assert_error(a.post("/v1/conversations", {"type": "direct", "with": a.name}), 400, "bad_request")
    assert_error(a.post("/v1/conversations", {"type": "direct", "with": a.name.upper()}), 400,
                 "bad_request")
    assert_error(a.post("/v1/conversations", {"type": "direct", "with": uname("ghost")}), 404,
                 "user_not_found")
    assert_error(a.post("/v1/conversations", {"type": "direct"}), 400, "bad_request")
    assert_error(a.post("/v1/conversations", {"type": "direct", "with": 7}), 400, "bad_request")
    assert_error(a.post("/v1/conversations", {"type": "triangle", "with": "x"}), 400, "bad_request")
    assert_error(a.post("/v1/conversations", {"with": "x"}), 400, "bad_request")
    assert_error(a.post("/v1/conversations", data=b'{"type":"direct",'), 400, "bad_json")
    assert inbox(a)["conversations"] == []


def test_group_creation(server):
    a, b, c = users(server, 3)

    async def go():
        cb = await Client.open(b)
        r = a.post("/v1/conversations", {"type": "group", "name": "Weekend",
                                         "members": [b.name, c.name.upper(), b.name]})
        assert r.status_code == 201, r.text
        g = r.json()
        assert g["type"] == "group" and g["name"] == "Weekend"
        assert sorted(g["members"]) == sorted([a.name, b.name, c.name])
        assert g["admins"] == [a.name]
        assert g["last_seq"] == 0 and g["last_message"] is None
        assert (g["read_seq"], g["delivered_seq"], g["unread"]) == (0, 0, 0)
        f = await cb.wait(lambda f: f["type"] == "conv" and f["conv"]["id"] == g["id"])
        assert sorted(f["conv"]["members"]) == sorted([a.name, b.name, c.name])
        assert f["conv"]["admins"] == [a.name]
        assert not any(k in f["conv"] for k in PER_USER), f
        await cb.close()
        return g["id"]
    gid = arun(go())
    for u in (a, b, c):
        assert conv_get(u, gid)["members"] and gid in [x["id"] for x in inbox(u)["conversations"]]


def test_group_bad_input(server):
    a, b = users(server, 2)
    before = inbox(a)["conversations"]
    assert_error(a.post("/v1/conversations", {"type": "group", "name": "g",
                                              "members": [b.name, uname("ghost")]}),
                 404, "user_not_found")
    assert_error(a.post("/v1/conversations", {"type": "group", "name": "", "members": []}),
                 400, "bad_request")
    assert_error(a.post("/v1/conversations", {"type": "group", "name": "n" * 65}), 400, "bad_request")
    assert_error(a.post("/v1/conversations", {"type": "group", "members": [b.name]}), 400,
                 "bad_request")
    assert_error(a.post("/v1/conversations", {"type": "group", "name": 5}), 400, "bad_request")
    assert_error(a.post("/v1/conversations", {"type": "group", "name": "g", "members": b.name}),
                 400, "bad_request")
    assert_error(a.post("/v1/conversations", {"type": "group", "name": "g", "members": [1, 2]}),
                 400, "bad_request")
    # Nothing was created by any of them, for A or B.
    assert inbox(a)["conversations"] == before
    assert inbox(b)["conversations"] == []
    # A group of one (name at the 64-byte limit) is fine.
    r = a.post("/v1/conversations", {"type": "group", "name": "n" * 64})
    assert r.status_code == 201, r.text
    assert r.json()["members"] == [a.name]


def test_add_member_rules_and_conv_frames(server):
    a, b, c, d = users(server, 4)
    gid = group(a, [b])

    async def go():
        cb = await Client.open(b)
        cd = await Client.open(d)
        # Non-admin member cannot add.
        assert_error(b.post(f"/v1/conversations/{gid}/members", {"user": c.name}), 403, "forbidden")
        # Non-member cannot add.
        assert_error(c.post(f"/v1/conversations/{gid}/members", {"user": c.name}), 403, "forbidden")
        # Admin adds D.
        r = a.post(f"/v1/conversations/{gid}/members", {"user": d.name})
        assert r.status_code == 200, r.text
        assert sorted(r.json()["members"]) == sorted([a.name, b.name, d.name])
        # Existing member -> 409; unknown user -> 404; direct -> 400.
        assert_error(a.post(f"/v1/conversations/{gid}/members", {"user": b.name}), 409,
                     "already_member")
        assert_error(a.post(f"/v1/conversations/{gid}/members", {"user": uname("ghost")}), 404,
                     "user_not_found")
        assert_error(a.post(f"/v1/conversations/{gid}/members", {"usr": d.name}), 400)
        assert_error(a.post(f"/v1/conversations/{gid}/members", {"user": 3}), 400)
        # B (member) and D (new member) get the conv frame with D in it.
        for cl in (cb, cd):
            f = await cl.wait(lambda f: f["type"] == "conv" and f["conv"]["id"] == gid and
                              d.name in f["conv"]["members"])
            assert sorted(f["conv"]["members"]) == sorted([a.name, b.name, d.name])
        await cb.close()
        await cd.close()
    arun(go())
    assert sorted(conv_get(d, gid)["members"]) == sorted([a.name, b.name, d.name])


def test_remove_and_leave(server):
    a, b, c, d = users(server, 4)
    gid = group(a, [b, c, d])

    async def go():
        cb = await Client.open(b)
        cc = await Client.open(c)
        # A non-admin cannot remove another member.
        assert_error(b.delete(f"/v1/conversations/{gid}/members/{d.name}"), 403, "forbidden")
        # The admin removes C: C gets `removed`, B a conv frame without C.
        r = a.delete(f"/v1/conversations/{gid}/members/{c.name}")
        assert r.status_code == 204, r.text
        f = await cc.wait_type("removed")
        assert f == {"type": "removed", "conv": gid}
        f = await cb.wait(lambda f: f["type"] == "conv" and f["conv"]["id"] == gid and
                          c.name not in f["conv"]["members"])
        assert sorted(f["conv"]["members"]) == sorted([a.name, b.name, d.name])
        # Removing a non-member (or an unknown user) -> 404.
        assert_error(a.delete(f"/v1/conversations/{gid}/members/{c.name}"), 404, "not_member")
        assert_error(a.delete(f"/v1/conversations/{gid}/members/{uname('ghost')}"), 404)
        # C is out: no access.
        assert_error(c.get(f"/v1/conversations/{gid}"), 403, "forbidden")
        assert_error(c.delete(f"/v1/conversations/{gid}/members/{d.name}"), 403, "forbidden")
        # B leaves itself.
        r = b.delete(f"/v1/conversations/{gid}/members/{b.name}")
        assert r.status_code == 204, r.text
        await cb.wait(lambda f: f["type"] == "removed" and f["conv"] == gid)
        assert_error(b.get(f"/v1/conversations/{gid}"), 403, "forbidden")
        await cb.close()
        await cc.close()
    arun(go())
    g = conv_get(a, gid)
    assert sorted(g["members"]) == sorted([a.name, d.name])
    assert gid not in [x["id"] for x in inbox(b)["conversations"]]
    assert gid not in [x["id"] for x in inbox(c)["conversations"]]
    assert gid in [x["id"] for x in inbox(d)["conversations"]]


def test_direct_members_cannot_change(server):
    """protocol.md: direct conversations cannot change members (400 bad_request)."""
    a, b, c = users(server, 3)
    did = direct(a, b)
    # Leaving a direct conversation is refused.
    assert_error(b.delete(f"/v1/conversations/{did}/members/{b.name}"), 400, "bad_request")
    # Adding to or removing from a direct conversation, by one of its members.
    errors = []
    for what, r in [("add", a.post(f"/v1/conversations/{did}/members", {"user": c.name})),
                    ("remove", a.delete(f"/v1/conversations/{did}/members/{b.name}"))]:
        if r.status_code != 400 or r.json()["error"]["code"] != "bad_request":
            errors.append((what, r.status_code, r.text))
    # Whatever the answer, nothing changed.
    assert sorted(conv_get(a, did)["members"]) == sorted([a.name, b.name])
    assert sorted(conv_get(b, did)["members"]) == sorted([a.name, b.name])
    assert_error(c.get(f"/v1/conversations/{did}"), 403, "forbidden")
    assert not errors, f"expected 400 bad_request for a member changing a direct conversation: {errors}"


def test_get_conversation_nonmember_and_nonexistent_same_answer(server):
    a, b, c = users(server, 3)
    gid = group(a, [b])
    assert conv_get(b, gid)["id"] == gid
    r1 = c.get(f"/v1/conversations/{gid}")
    r2 = c.get(f"/v1/conversations/{gid + 100000}")
    r3 = a.get(f"/v1/conversations/{gid + 100000}")
    for r in (r1, r2, r3):
        assert_error(r, 403, "forbidden")
    assert r1.content == r2.content == r3.content


def test_the_last_admin_leaving_hands_the_role_to_a_member(server):
    a, b, c = register(server), register(server), register(server)  # uids in this order
    gid = group(a, [c, b])
    r = a.delete(f"/v1/conversations/{gid}/members/{a.name}")  # the only admin leaves
    assert r.status == 204, r
    assert conv_get(c, gid)["admins"] == [b.name]  # the lowest uid left
    # the new admin can add; removing a member changes no role
    r = b.post(f"/v1/conversations/{gid}/members", {"user": a.name})
    assert r.status == 200, r
    assert b.delete(f"/v1/conversations/{gid}/members/{c.name}").status == 204
    assert conv_get(a, gid)["admins"] == [b.name]
    # the batch leave too
    r = b.post("/v1/conversations/leave", {"convs": [gid]})
    assert r.status == 200, r
    assert conv_get(a, gid)["admins"] == [a.name]
