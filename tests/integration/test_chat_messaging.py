"""Messaging: concurrent senders in one group (exactly-once delivery, gapless
seqs, one order for everyone, history agrees) and cmid idempotency over the
same connection, after a reconnect and via REST."""

import asyncio

from parley_client import (T, Client, arun, assert_error, close_all, cluster_mode, conv_get,
                           group, history, send_rest, users)

N_MEMBERS = 4
PER_SENDER = 50


def body_for(user, k):
    # Alternate string and object bodies: any JSON value but null.
    return f"{user.name} says {k}" if k % 2 else {"text": f"{user.name}#{k}", "k": k, "ok": True}


def test_concurrent_senders_exactly_once_same_order(server):
    members = users(server, N_MEMBERS)
    gid = group(members[0], members[1:])
    total = N_MEMBERS * PER_SENDER

    async def go():
        clients = [await Client.open(u) for u in members]
        try:
            async def sender(c):
                for k in range(PER_SENDER):
                    await c.send({"type": "send", "conv": gid, "cmid": f"{c.user.name}-{k}",
                                  "body": body_for(c.user, k)})
                    if k % 10 == 0:
                        await asyncio.sleep(0)  # interleave the senders

            async def reader(c):
                acks, msgs, errors = [], [], []
                want_msgs = total - PER_SENDER
                for _ in range(100000):
                    if len(acks) >= PER_SENDER and len(msgs) >= want_msgs:
                        break
                    f = await c.next(T)
                    if f["type"] == "ack":
                        acks.append(f)
                    elif f["type"] == "msg":
                        msgs.append(f)
                    elif f["type"] == "error":
                        errors.append(f)
                        break
                return acks, msgs, errors

            readers = [asyncio.create_task(reader(c)) for c in clients]
            await asyncio.gather(*(sender(c) for c in clients))
            results = await asyncio.gather(*readers)
            # A barrier message committed after all of them: any second copy
            # of an earlier message would reach a connection before it.
            extra = []
            await clients[0].send({"type": "send", "conv": gid, "cmid": "end", "body": "end"})
            for c in clients:
                before, f = await c.until(lambda f: f.get("cmid") == "end" and
                                          f["type"] in ("msg", "ack"))
                assert f["seq"] == total + 1, f
                extra += [f for f in before if f["type"] in ("msg", "ack")]
            return results, extra
        finally:
            await close_all(clients)

    results, extra = arun(go())
    assert extra == [], f"frames beyond one copy of each message: {extra[:5]}"

    truth = {}  # seq -> (from, cmid, body), from the senders' acks
    for u, (acks, msgs, errors) in zip(members, results):
        assert errors == [], errors
        assert len(acks) == PER_SENDER, (u, len(acks))
        assert all(a["conv"] == gid and not a.get("duplicate") for a in acks)
        assert sorted(a["cmid"] for a in acks) == sorted(f"{u.name}-{k}" for k in range(PER_SENDER))
        for a in acks:
            k = int(a["cmid"].rsplit("-", 1)[1])
            assert a["seq"] not in truth, f"seq {a['seq']} acked twice"
            truth[a["seq"]] = (u.name, a["cmid"], body_for(u, k))
    assert sorted(truth) == list(range(1, total + 1)), "seqs are not gapless 1..N"

    for u, (acks, msgs, errors) in zip(members, results):
        seqs = [m["seq"] for m in msgs]
        # Everything from the others, once each, nothing of its own.
        assert len(seqs) == len(set(seqs)) == total - PER_SENDER, (u, len(seqs), len(set(seqs)))
        assert set(seqs) == {s for s, v in truth.items() if v[0] != u.name}
        # One node delivers a conversation's messages in seq order; over a
        # cluster the bus may bring another node's later seq first (the
        # client rule on gaps covers it: docs/protocol.md, docs/cluster.md).
        if not cluster_mode():
            assert seqs == sorted(seqs), f"{u} received messages out of seq order"
        for m in msgs:
            assert m["conv"] == gid
            assert (m["from"], m["cmid"], m["body"]) == truth[m["seq"]], m
            assert isinstance(m["ts"], int)

    hist = history(members[2], gid)[:-1]  # without the barrier
    assert [m["seq"] for m in hist] == list(range(1, total + 1))
    for m in hist:
        assert (m["from"], m["cmid"], m["body"]) == truth[m["seq"]], m
    # Timestamps never go backwards in seq order.
    assert all(x["ts"] <= y["ts"] for x, y in zip(hist, hist[1:]))
    c = conv_get(members[1], gid)
    assert c["last_seq"] == total + 1
    assert c["last_message"]["cmid"] == "end"


def test_resend_same_cmid_same_connection(server):
    a, b = users(server, 2)
    gid = group(a, [b])

    async def go():
        ca, cb = await Client.open(a), await Client.open(b)
        first = await ca.send_msg(gid, "c-1", "hello")
        assert first["type"] == "ack" and first["seq"] == 1 and not first.get("duplicate"), first
        again = await ca.send_msg(gid, "c-1", "hello")
        assert again["type"] == "ack", again
        assert again["duplicate"] is True
        assert (again["seq"], again["ts"], again["conv"]) == (first["seq"], first["ts"], gid)
        # A different body under the same cmid is refused (test_chat_contract.py).
        third = await ca.send_msg(gid, "c-1", "changed body")
        assert third["type"] == "error" and third["code"] == "cmid_reused", third
        nxt = await ca.send_msg(gid, "c-2", "next")
        assert nxt["seq"] == 2 and not nxt.get("duplicate")
        # B got c-1 exactly once, then c-2 (the barrier).
        before, m2 = await cb.until(lambda f: f["type"] == "msg" and f["cmid"] == "c-2")
        got = [f for f in before if f["type"] == "msg"]
        assert [(f["seq"], f["cmid"], f["body"]) for f in got] == [(1, "c-1", "hello")], got
        assert m2["seq"] == 2
        await close_all([ca, cb])
    arun(go())
    hist = history(b, gid)
    assert [(m["seq"], m["cmid"], m["body"]) for m in hist] == [(1, "c-1", "hello"), (2, "c-2", "next")]


def test_resend_after_reconnect_and_via_rest(server):
    a, b = users(server, 2)
    gid = group(a, [b])

    async def go():
        ca = await Client.open(a)
        first = await ca.send_msg(gid, "r-1", {"t": "x"})
        assert first["type"] == "ack" and first["seq"] == 1
        await ca.close()
        ca = await Client.open(a)
        again = await ca.send_msg(gid, "r-1", {"t": "x"})
        assert again["type"] == "ack" and again.get("duplicate") is True, again
        assert (again["seq"], again["ts"]) == (first["seq"], first["ts"])
        await ca.close()
        return first

    first = arun(go())
    # REST: the WebSocket's cmid is a duplicate (200) with the same seq and ts.
    r = send_rest(a, gid, "r-1", {"t": "x"})
    assert r.status_code == 200, r.text
    assert r.json() == {"seq": first["seq"], "ts": first["ts"], "duplicate": True}
    # A fresh cmid over REST: 201, then 200 duplicate.
    r1 = send_rest(a, gid, "rest-1", "via rest")
    assert r1.status_code == 201, r1.text
    j1 = r1.json()
    assert j1["seq"] == 2 and "duplicate" not in j1
    r2 = send_rest(a, gid, "rest-1", "via rest")
    assert r2.status_code == 200, r2.text
    assert r2.json() == {"seq": 2, "ts": j1["ts"], "duplicate": True}

    async def ws_dup():
        ca = await Client.open(a)
        dup = await ca.send_msg(gid, "rest-1", "via rest")
        assert dup["type"] == "ack" and dup.get("duplicate") is True and dup["seq"] == 2, dup
        await ca.close()
    arun(ws_dup())
    hist = history(b, gid)
    assert [(m["seq"], m["from"], m["cmid"]) for m in hist] == [(1, a.name, "r-1"), (2, a.name, "rest-1")]
    assert conv_get(a, gid)["last_seq"] == 2


def test_cmid_scope_is_user_and_conversation(server):
    a, b = users(server, 2)
    g1 = group(a, [b], name="one")
    g2 = group(a, [b], name="two")
    assert send_rest(a, g1, "same", "a in g1").status_code == 201
    # The same cmid from another user, or in another conversation, is new.
    rb = send_rest(b, g1, "same", "b in g1")
    assert rb.status_code == 201 and rb.json()["seq"] == 2, rb.text
    r2 = send_rest(a, g2, "same", "a in g2")
    assert r2.status_code == 201 and r2.json()["seq"] == 1, r2.text
    assert [(m["from"], m["body"]) for m in history(a, g1)] == [(a.name, "a in g1"),
                                                                    (b.name, "b in g1")]
    assert [m["body"] for m in history(a, g2)] == ["a in g2"]


def test_rest_send_bad_input(server):
    a, b = users(server, 2)
    gid = group(a, [b])
    p = f"/v1/conversations/{gid}/messages"
    for body in [{"body": "x"}, {"cmid": "", "body": "x"}, {"cmid": "c" * 65, "body": "x"},
                 {"cmid": 5, "body": "x"}, {"cmid": "c"}, {"cmid": "c", "body": None}]:
        assert_error(a.post(p, body), 400, "bad_request")
    assert_error(a.post(p, {"cmid": "big", "body": "x" * 16384}), 413, "too_large")
    assert_error(a.post(p, data=b'{"cmid":"c","body":'), 400, "bad_json")
    # At the limits: 64-character cmid, body of exactly 16 KiB as JSON.
    r = a.post(p, {"cmid": "c" * 64, "body": "y" * (16384 - 2)})
    assert r.status_code == 201, r.text
    hist = history(a, gid)
    assert [(m["cmid"], len(m["body"])) for m in hist] == [("c" * 64, 16382)]
