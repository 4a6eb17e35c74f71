"""Receipts: delivered/read cursors move only forward, read implies
delivered, never beyond last_seq, `receipt` frames live, exact "delivered to N /
read by N" counts excluding the sender, and inbox unread."""

from parley_client import (Client, arun, assert_error, close_all, cursors, group, inbox,
                           receipts, register, users)

NO_CONV = 987654321  # no such conversation


async def cursor_barrier(c):
    """The writer applies one user's cursor updates in order: a refused one
    (no such conversation) answers only after the earlier ones are applied."""
    r = await c.request({"type": "read", "conv": NO_CONV, "seq": 1}, "never")
    assert r["type"] == "error" and r["code"] == "forbidden", r


def counts(user, conv, seq):
    j = receipts(user, conv, seq)
    assert j["seq"] == seq, j
    return j["delivered"], j["read"]


def conv_of(user, gid):
    return {c["id"]: c for c in inbox(user)["conversations"]}[gid]


def test_receipts_cursors_and_counts(server):
    a, b, c, d = users(server, 4)
    gid = group(a, [b, c, d])

    async def go():
        ca, cb, cc, cd = [await Client.open(u) for u in (a, b, c, d)]
        try:
            for k in (1, 2, 3):
                ack = await ca.send_msg(gid, f"m{k}", f"hello {k}")
                assert ack["seq"] == k
            for k in (1, 2, 3):
                assert counts(b, gid, k) == (0, 0)
            assert {u: cursors(receipts(a, gid))[u] for u in (b.name, c.name, d.name)} == \
                {b.name: (0, 0), c.name: (0, 0), d.name: (0, 0)}
            assert "seq" not in receipts(a, gid)

            def rcpt(user, dl, rd):
                return lambda f: (f["type"] == "receipt" and f["conv"] == gid and
                                  f["user"] == user.name and f["delivered"] == dl and f["read"] == rd)

            # B: delivered 2 -> A sees the receipt live.
            await cb.send({"type": "delivered", "conv": gid, "seq": 2})
            await ca.wait(rcpt(b, 2, 0), what="receipt B 2/0")
            assert counts(a, gid, 1) == (1, 0)
            assert counts(a, gid, 2) == (1, 0)
            assert counts(a, gid, 3) == (0, 0)

            # C: read 3 implies delivered 3.
            await cc.send({"type": "read", "conv": gid, "seq": 3})
            await ca.wait(rcpt(c, 3, 3), what="receipt C 3/3")
            assert cursors(receipts(a, gid))[c.name] == (3, 3)
            assert counts(a, gid, 1) == (2, 1)
            assert counts(a, gid, 3) == (1, 1)

            # B: a lower delivered is ignored, then read 1 (delivered stays 2).
            await cb.send({"type": "delivered", "conv": gid, "seq": 1})
            await cb.send({"type": "read", "conv": gid, "seq": 1})
            f = await ca.wait(lambda f: f["type"] == "receipt" and f["user"] == b.name and
                              f["read"] == 1, what="receipt B read 1")
            assert f["delivered"] == 2, f"delivered cursor moved back: {f}"
            assert cursors(receipts(a, gid))[b.name] == (2, 1)

            # D: read beyond the end is refused (the cursor stays), then up to it.
            r = await cd.request({"type": "read", "conv": gid, "seq": 99}, "never")
            assert r["type"] == "error" and r["code"] == "bad_request", r
            assert cursors(receipts(a, gid))[d.name] == (0, 0)
            await cd.send({"type": "read", "conv": gid, "seq": 3})
            await ca.wait(rcpt(d, 3, 3), what="receipt D 3/3")
            assert cursors(receipts(a, gid))[d.name] == (3, 3)

            # C: lower read and delivered are ignored.
            await cc.send({"type": "read", "conv": gid, "seq": 1})
            await cc.send({"type": "delivered", "conv": gid, "seq": 0})
            await cursor_barrier(cc)
            assert cursors(receipts(a, gid))[c.name] == (3, 3)

            assert counts(a, gid, 1) == (3, 3)
            assert counts(a, gid, 2) == (3, 2)
            assert counts(a, gid, 3) == (2, 2)

            # Inbox: unread = last_seq - read_seq, and the cursors.
            for u, (dl, rd) in [(b, (2, 1)), (c, (3, 3)), (d, (3, 3))]:
                cv = conv_of(u, gid)
                assert (cv["delivered_seq"], cv["read_seq"], cv["unread"]) == (dl, rd, 3 - rd), (u, cv)

            # A message from B: B (the sender) is not counted.
            ack = await cb.send_msg(gid, "from-b", "hi all")
            assert ack["seq"] == 4
            assert counts(c, gid, 4) == (0, 0)
            await cd.send({"type": "delivered", "conv": gid, "seq": 4})
            await ca.wait(rcpt(d, 4, 3), what="receipt D 4/3")
            assert counts(c, gid, 4) == (1, 0)
            assert conv_of(c, gid)["unread"] == 1
            assert conv_of(d, gid)["unread"] == 1
        finally:
            await close_all([ca, cb, cc, cd])
    arun(go())


def test_receipts_bad_input_and_nonmembers(server):
    a, b = users(server, 2)
    outsider = register(server)
    gid = group(a, [b])
    r = a.post(f"/v1/conversations/{gid}/messages", {"cmid": "x", "body": "x"})
    assert r.status_code == 201
    p = f"/v1/conversations/{gid}/receipts"
    for seq in ["abc", "-1", "1.0", ""]:
        assert_error(a.get(p, params={"seq": seq}), 400, "bad_request")
    r1 = outsider.get(p, params={"seq": 1})
    r2 = outsider.get(f"/v1/conversations/{gid + 1000}/receipts", params={"seq": 1})
    assert_error(r1, 403, "forbidden")
    assert_error(r2, 403, "forbidden")
    assert r1.content == r2.content
    assert counts(a, gid, 1) == (0, 0)

    async def go():
        co = await Client.open(outsider)
        cb = await Client.open(b)
        try:
            for t in ("read", "delivered"):
                r = await co.request({"type": t, "conv": gid, "seq": 1}, "never")
                assert r["type"] == "error" and r["code"] == "forbidden", r
            # B's valid read, after the outsider's attempts: only B counts.
            await cb.send({"type": "read", "conv": gid, "seq": 1})
            await cursor_barrier(cb)
        finally:
            await close_all([co, cb])
    arun(go())
    assert counts(a, gid, 1) == (1, 1)
    assert set(cursors(receipts(a, gid))) == {a.name, b.name}
