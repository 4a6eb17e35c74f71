"""Presence (online / offline with last_seen, per user across connections)
and typing (relayed to the other members only, rate-limited, members only)."""

from parley_client import (Client, arun, close_all, direct, group, register, users)


def is_presence(user, online):
    return lambda f: f["type"] == "presence" and f["user"] == user.name and f["online"] is online


def test_presence_online_offline_last_connection(server):
    a, b = users(server, 2)
    cid = direct(a, b)

    async def go():
        ca = await Client.open(a)
        b1 = b2 = None
        try:
            b1 = await Client.open(b)
            f = await ca.wait(is_presence(b, True), what="B online")
            assert isinstance(f["last_seen"], int)
            ca.pending.clear()  # what came before (e.g. B listed as offline at A's hello)
            # The new connection is told that A (its contact) is online.
            await b1.wait(is_presence(a, True), what="A online, to B's new connection")
            # A second connection of B, then the first closes: B is still online.
            b2 = await Client.open(b)
            await b2.wait(is_presence(a, True), what="A online, to B's second connection")
            await b1.close()
            b1 = None
            ack = await b2.send_msg(cid, "still-here", "b2 says hi")
            assert ack["type"] == "ack"
            before, _ = await ca.until(lambda f: f["type"] == "msg" and f["cmid"] == "still-here")
            flips = [f for f in before if f["type"] == "presence" and f["user"] == b.name]
            assert flips == [], f"B reported offline/online while a connection remained: {flips}"
            # The last connection closes: offline with last_seen.
            await b2.close()
            b2 = None
            f = await ca.wait(is_presence(b, False), what="B offline")
            assert isinstance(f["last_seen"], int) and f["last_seen"] >= ack["ts"], (f, ack)
        finally:
            await close_all([ca, b1, b2])
    arun(go())


def test_presence_only_for_contacts(server):
    a, b = users(server, 2)
    stranger = register(server)
    direct(a, b)

    async def go():
        ca = await Client.open(a)
        cs = cb = None
        try:
            cs = await Client.open(stranger)
            cb = await Client.open(b)
            await ca.wait(is_presence(b, True), what="B online")
            # The stranger shares no conversation: A was not told about it,
            # and the stranger is not told about A. Barrier: a message from B.
            ack = await cb.send_msg(direct(b, a), "bar", "barrier")
            before, _ = await ca.until(lambda f: f["type"] == "msg" and f["cmid"] == "bar")
            assert not [f for f in before if f["type"] == "presence" and f["user"] == stranger.name]
            assert ack["type"] == "ack"
            await cs.ping()
            assert not [f for f in cs.pending if f["type"] == "presence"], cs.pending
        finally:
            await close_all([ca, cs, cb])
    arun(go())


def test_typing_relayed_to_others_not_sender(server):
    a, b, c = users(server, 3)
    gid = group(a, [b, c])

    async def go():
        ca, cb, cc = [await Client.open(u) for u in (a, b, c)]
        try:
            await ca.send({"type": "typing", "conv": gid})
            for cl in (cb, cc):
                f = await cl.wait_type("typing", conv=gid)
                assert f == {"type": "typing", "conv": gid, "user": a.name}, f
            # A's own connection gets no typing back: the ack of a later send
            # would come after it.
            ack = await ca.send_msg(gid, "after-typing", "x")
            assert ack["type"] == "ack"
            # (send_msg kept every frame that came before the ack in pending)
            assert not [f for f in ca.pending if f["type"] == "typing"], ca.pending
        finally:
            await close_all([ca, cb, cc])
    arun(go())


def test_typing_rate_limited(server):
    a, b = users(server, 2)
    gid = group(a, [b])

    async def go():
        ca, cb = await Client.open(a), await Client.open(b)
        try:
            await ca.send({"type": "typing", "conv": gid})
            await ca.send({"type": "typing", "conv": gid})
            # Barrier: a message sent after both typing frames.
            await ca.send({"type": "send", "conv": gid, "cmid": "bar", "body": "x"})
            before, _ = await cb.until(lambda f: f["type"] == "msg" and f["cmid"] == "bar")
            typing = [f for f in before if f["type"] == "typing"]
            assert typing == [{"type": "typing", "conv": gid, "user": a.name}], typing
        finally:
            await close_all([ca, cb])
    arun(go())


def test_typing_nonmember_forbidden(server):
    a, b = users(server, 2)
    outsider = register(server)
    gid = group(a, [b])

    async def go():
        co, cb = await Client.open(outsider), await Client.open(b)
        try:
            r = await co.request({"type": "typing", "conv": gid, "id": "t1"}, "never")
            assert r == {"type": "error", "code": "forbidden", "message": r["message"], "ref": "t1"}, r
            r = await co.request({"type": "typing", "conv": gid + 1000, "id": 7}, "never")
            assert r["type"] == "error" and r["code"] == "forbidden" and r["ref"] == 7, r
            r = await co.request({"type": "typing", "conv": "x", "id": "t3"}, "never")
            assert r["type"] == "error" and r["code"] == "bad_request" and r["ref"] == "t3", r
            await co.ping()
            # B saw no typing from the outsider (barrier: a message from A).
            ca = await Client.open(a)
            try:
                await ca.send_msg(gid, "bar", "x")
            finally:
                await ca.close()
            before, _ = await cb.until(lambda f: f["type"] == "msg" and f["cmid"] == "bar")
            assert not [f for f in before if f["type"] == "typing"], before
        finally:
            await close_all([co, cb])
    arun(go())


def test_new_contacts_get_each_others_presence(server):
    """Creating a direct chat or a group, or adding a member, tells members
    who now share a conversation each other's presence, right after the
    conv frame: online ones as online, others with last_seen (0: never)."""
    a, b, c, d, e = users(server, 5)

    async def go():
        ca, cb, cc, cd = [await Client.open(u) for u in (a, b, c, d)]
        try:
            await ca.ping()
            assert not [f for f in ca.pending if f["type"] == "presence"], ca.pending
            dab = direct(a, b)
            for cl, other in ((ca, b), (cb, a)):
                await cl.until(lambda f: f["type"] == "conv" and f["conv"]["id"] == dab,
                               what="the direct's conv frame")
                await cl.wait(is_presence(other, True), what=f"{other.name} online, after conv")
            gid = group(a, [c, e])
            await ca.until(lambda f: f["type"] == "conv" and f["conv"]["id"] == gid)
            await ca.wait(is_presence(c, True), what="C online, to A")
            f = await ca.wait(is_presence(e, False), what="E (never connected) offline, to A")
            assert f["last_seen"] == 0, f
            await cc.until(lambda f: f["type"] == "conv" and f["conv"]["id"] == gid)
            await cc.wait(is_presence(a, True), what="A online, to C")
            await cc.wait(is_presence(e, False), what="E offline, to C")
            # Adding D: D learns A, C and E; A and C learn D; B (not a member) nothing.
            r = a.post(f"/v1/conversations/{gid}/members", {"user": d.name})
            assert r.status == 200, r
            await cd.until(lambda f: f["type"] == "conv" and f["conv"]["id"] == gid)
            for u, on in ((a, True), (c, True), (e, False)):
                await cd.wait(is_presence(u, on), what=f"{u.name} to the added D")
            for cl in (ca, cc):
                await cl.wait(is_presence(d, True), what="the added D online")
            ack = await ca.send_msg(dab, "barrier", "x")
            before, _ = await cb.until(lambda f: f["type"] == "msg" and f["cmid"] == "barrier")
            assert not [f for f in before if f["type"] == "presence"], before
            assert ack["type"] == "ack"
        finally:
            await close_all([ca, cb, cc, cd])
    arun(go())
