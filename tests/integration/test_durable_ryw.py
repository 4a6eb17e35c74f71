"""Read-your-writes on the durable path (docs/protocol.md, Guarantees 2 and
4): right after an `ack` (or a REST `201`) the message is in every read of
its conversation: the WebSocket `sync` (its `history` answer; after, before
and the latest page) and REST `GET /v1/conversations/{id}/messages`; a
member that got the `msg` frame finds it there too; the conversation and
the inbox show it. After a cursor move is confirmed by its `receipt`
frame, REST receipts and the conversation object show the new cursor.
Several writers on several conversations at once, many iterations; and
the boundary: nothing beyond what was acked (a `read` beyond last_seq is
refused, the cursor stays)."""

import asyncio

from parley_client import (Client, arun, close_all, conv_get, cursors, direct, group,
                           history_page, inbox, login, receipts, send_rest, users)

ITERATIONS = 60  # acks per writer


def body_for(cmid):
    return {"text": f"hello {cmid}", "n": len(cmid)}


def same(m, seq, cmid, body, sender):
    return (m["seq"], m["cmid"], m["body"], m["from"]) == (seq, cmid, body, sender)


async def ws_sees(c, conv, seq, cmid, body, sender):
    """The WebSocket `sync` pages that must hold the message at seq."""
    h = await c.request({"type": "sync", "conv": conv, "after": seq - 1, "limit": 1}, "history")
    assert h["type"] == "history", h
    assert h["messages"] and same(h["messages"][0], seq, cmid, body, sender), \
        f"sync after={seq - 1} right after the ack of {cmid} at {seq}: {h}"
    h = await c.request({"type": "sync", "conv": conv, "before": seq + 1, "limit": 1}, "history")
    assert h["messages"] and same(h["messages"][-1], seq, cmid, body, sender), \
        f"sync before={seq + 1} right after the ack of {cmid}: {h}"
    h = await c.request({"type": "sync", "conv": conv, "limit": 50}, "history")
    assert any(same(m, seq, cmid, body, sender) for m in h["messages"]), \
        f"the latest page right after the ack of {cmid} at {seq}: " \
        f"{[m['seq'] for m in h['messages']]}"


def rest_sees(user, conv, seq, cmid, body, sender):
    """REST GET .../messages: after, before and the latest page."""
    j = history_page(user, conv, after=seq - 1, limit=1)
    assert j["messages"] and same(j["messages"][0], seq, cmid, body, sender), \
        f"GET messages?after={seq - 1} right after the ack of {cmid} at {seq}: {j}"
    j = history_page(user, conv, before=seq + 1, limit=1)
    assert j["messages"] and same(j["messages"][-1], seq, cmid, body, sender), (cmid, seq, j)
    j = history_page(user, conv)
    assert any(same(m, seq, cmid, body, sender) for m in j["messages"]), \
        f"GET messages (latest) right after the ack of {cmid} at {seq}: " \
        f"{[m['seq'] for m in j['messages']]}"


def test_ryw_history_and_sync_right_after_each_ack(server):
    a, b, c = users(server, 3)
    g = group(a, [b, c], name="ryw")
    ab, ac = direct(a, b), direct(a, c)
    plan = {a.name: (a, [g, ab, ac]), b.name: (b, [g, ab]), c.name: (c, [ac, g])}

    async def writer(cl, user, convs):
        for k in range(ITERATIONS):
            conv = convs[k % len(convs)]
            cmid = f"{user.name}-{k}"
            body = body_for(cmid)
            if k % 4 == 3:  # a REST send (backends, bots) must read back the same
                r = send_rest(user, conv, cmid, body)
                assert r.status == 201, r
                seq = r.json()["seq"]
            else:
                ack = await cl.send_msg(conv, cmid, body)
                assert ack["type"] == "ack" and not ack.get("duplicate"), ack
                seq = ack["seq"]
            await ws_sees(cl, conv, seq, cmid, body, user.name)
            rest_sees(user, conv, seq, cmid, body, user.name)
            if k % 10 == 5:  # a resend answers the original seq and stores nothing
                ack = await cl.send_msg(conv, cmid, body)
                assert ack["type"] == "ack" and ack.get("duplicate") is True and \
                    ack["seq"] == seq, ack
                assert conv_get(user, conv)["last_seq"] >= seq
                j = history_page(user, conv, after=seq - 1, limit=2)
                assert [m["cmid"] for m in j["messages"]].count(cmid) == 1, j

    async def go():
        cls = {n: await Client.open(u) for n, (u, _) in plan.items()}
        try:
            await asyncio.gather(*(writer(cls[n], u, convs) for n, (u, convs) in plan.items()))
        finally:
            await close_all(cls.values())
    arun(go())
    assert len({m["seq"] for m in history_page(a, g, limit=500)["messages"]}) == \
        conv_get(a, g)["last_seq"]


def test_ryw_pipelined_acks(server):
    """Sends pipelined 16 deep: each ack is followed at once by a `sync` on
    the same connection, while later sends are still on their way."""
    a, b = users(server, 2)
    conv = direct(a, b)
    n, window = 200, 16

    async def go():
        ca = await Client.open(a)
        try:
            cmids = [f"p{k}" for k in range(n)]
            for cm in cmids[:window]:
                await ca.send({"type": "send", "conv": conv, "cmid": cm, "body": body_for(cm)})
            nxt = window
            pending = {}  # sync id -> (seq, cmid)
            acked = 0
            for _ in range(20 * n):
                if acked == n and not pending:
                    break
                f = await ca.next()
                if f["type"] == "ack":
                    acked += 1
                    rid = "s" + f["cmid"]
                    pending[rid] = (f["seq"], f["cmid"])
                    await ca.send({"type": "sync", "conv": conv, "after": f["seq"] - 1,
                                   "limit": 1, "id": rid})
                    if acked % 20 == 0:
                        rest_sees(a, conv, f["seq"], f["cmid"], body_for(f["cmid"]), a.name)
                    if nxt < n:
                        cm = cmids[nxt]
                        nxt += 1
                        await ca.send({"type": "send", "conv": conv, "cmid": cm,
                                       "body": body_for(cm)})
                elif f["type"] == "history":
                    seq, cm = pending.pop(f["id"])
                    m = f["messages"]
                    assert m and same(m[0], seq, cm, body_for(cm), a.name), \
                        f"sync right after the ack of {cm} at {seq}: {f}"
                elif f["type"] == "error":
                    raise AssertionError(f"error frame: {f}")
            assert acked == n and not pending, (acked, pending)
        finally:
            await ca.close()
    arun(go())


def test_ryw_receiver_after_msg_frame(server):
    """A member that got the `msg` frame finds the message with sync and
    REST right away (on another device of the sender too)."""
    a, b, c = users(server, 3)
    a2 = login(server, a.name)  # a second device of the sender
    g = group(a, [b, c], name="fanout")

    async def go():
        ca, cb, cc, ca2 = [await Client.open(u) for u in (a, b, c, a2)]
        try:
            for k in range(ITERATIONS):
                cmid, body = f"m{k}", body_for(f"m{k}")
                ack = await ca.send_msg(g, cmid, body)
                seq = ack["seq"]
                for cl, u in ((cb, b), (cc, c), (ca2, a2)):
                    f = await cl.wait(lambda f: f.get("type") == "msg" and f.get("conv") == g,
                                      what=f"msg {cmid}")
                    assert same(f, seq, cmid, body, a.name), f
                    if k % 3 == 0 or cl is cb:
                        await ws_sees(cl, g, seq, cmid, body, a.name)
                    if k % 5 == 0:
                        rest_sees(u, g, seq, cmid, body, a.name)
        finally:
            await close_all([ca, cb, cc, ca2])
    arun(go())


def test_ryw_conversation_and_inbox_after_ack(server):
    """After an ack, the conversation object and the inbox carry it."""
    a, b = users(server, 2)
    convs = [direct(a, b), group(a, [b], name="one"), group(b, [a], name="two")]

    async def go():
        ca, cb = await Client.open(a), await Client.open(b)
        try:
            for k in range(30):
                conv = convs[k % len(convs)]
                since = inbox(b)["cursor"]
                cmid, body = f"i{k}", body_for(f"i{k}")
                ack = await ca.send_msg(conv, cmid, body)
                seq = ack["seq"]
                cv = conv_get(a, conv)
                assert cv["last_seq"] >= seq and cv["last_message"]["seq"] >= seq, (ack, cv)
                listed = {x["id"]: x for x in inbox(b, changed_since=since)["conversations"]}
                assert conv in listed and listed[conv]["last_seq"] >= seq, (ack, list(listed))
                r = await cb.request({"type": "inbox", "changed_since": since}, "inbox")
                got = {x["id"]: x for x in r["inbox"]["conversations"]}
                assert conv in got and got[conv]["last_seq"] >= seq, (ack, r)
        finally:
            await close_all([ca, cb])
    arun(go())


def test_ryw_cursor_moves_then_receipts(server):
    """`read` / `delivered`, confirmed by the `receipt` frame another member
    gets: REST receipts and the mover's conversation object show the new
    cursor right away."""
    a, b, c = users(server, 3)
    g = group(a, [b, c], name="cursors")

    async def go():
        ca, cb, cc = [await Client.open(u) for u in (a, b, c)]
        try:
            for k in range(1, ITERATIONS + 1):
                ack = await ca.send_msg(g, f"c{k}", body_for(f"c{k}"))
                seq = ack["seq"]
                assert seq == k, ack
                await cb.send({"type": "read", "conv": g, "seq": seq})
                await cc.send({"type": "delivered", "conv": g, "seq": seq})
                for who in (b.name, c.name):
                    await ca.wait(lambda f: f.get("type") == "receipt" and f["conv"] == g and
                                  f["user"] == who and f["delivered"] >= seq,
                                  what=f"receipt of {who} at {seq}")
                cur = cursors(receipts(a, g))
                assert cur[b.name] == (seq, seq), (seq, cur)  # read moves delivered with it
                assert cur[c.name][0] == seq and cur[c.name][1] == 0, (seq, cur)
                assert cur[a.name] == (seq, seq), (seq, cur)  # sending moves the sender's
                j = receipts(c, g, seq)
                assert (j["seq"], j["delivered"], j["read"]) == (seq, 2, 1), j
                cv = conv_get(b, g)
                assert (cv["read_seq"], cv["delivered_seq"], cv["unread"]) == (seq, seq, 0), cv
                assert conv_get(c, g)["delivered_seq"] == seq
        finally:
            await close_all([ca, cb, cc])
    arun(go())


def test_ryw_nothing_beyond_the_ack(server):
    """Bad input at the boundary: a `read` beyond the acked last_seq is
    refused and moves nothing; a sync after the last ack is empty."""
    a, b = users(server, 2)
    conv = direct(a, b)

    async def go():
        ca, cb = await Client.open(a), await Client.open(b)
        try:
            for k in range(1, 11):
                ack = await ca.send_msg(conv, f"b{k}", body_for(f"b{k}"))
                seq = ack["seq"]
                r = await cb.request({"type": "read", "conv": conv, "seq": seq + 1}, "never")
                assert r["type"] == "error" and r["code"] == "bad_request", r
                await cb.send({"type": "read", "conv": conv, "seq": seq})
                await ca.wait(lambda f: f.get("type") == "receipt" and f["user"] == b.name and
                              f["read"] == seq, what=f"receipt read {seq}")
                assert cursors(receipts(a, conv))[b.name] == (seq, seq)
                h = await cb.request({"type": "sync", "conv": conv, "after": seq}, "history")
                assert h["messages"] == [] and h["more"] is False, h
                assert history_page(b, conv, after=seq)["messages"] == []
        finally:
            await close_all([ca, cb])
    arun(go())
