"""The bus between cluster nodes (--bus redis://...), on real redis-server and
PostgreSQL (engines.py): events committed on one node reach the sessions
of their users on the others (messages, the sender's other devices,
receipts, typing, conversation and membership changes, logouts); a user's
channel follows their sessions on the node; Redis restarted or away at the
start: /healthz says so, the node's sessions are told to `resync` when the
bus is back, nothing acked is lost and delivery resumes; what is not
parley's on the bus is counted and ignored; bad flags are refused.
"""

import asyncio

from parley_client import (Client, arun, direct, get_metrics, group, history, login, on, poll,
                           mval, rest, run_parleyd, users)




def node(parley, db, redis, name, *flags):
    return parley("--store", db.dsn, "--bus", redis.url, "--node-id", name, *flags)




def health(srv):
    r = rest(srv, "GET", "/healthz")
    return r.status, r.json()


def channels(redis):
    """The parley channels someone subscribes to, sorted (but the nodes'
    own echo channels, parley:n:<node>, always there)."""
    return sorted(c for c in redis.client().pubsub_channels("parley:*")
                  if not c.startswith("parley:n:"))


def subscriptions(redis):
    """Subscriptions to parley's user channels, over every node."""
    chans = [c for c in channels(redis) if c != "parley:all"]
    return sum(n for _, n in redis.client().pubsub_numsub(*chans)) if chans else 0


def test_events_reach_the_sessions_on_other_nodes(parley, pg_database, redis):
    n1, n2 = node(parley, pg_database, redis, "n1"), node(parley, pg_database, redis, "n2")
    a, b, c = users(n1, 3)
    a2 = login(n2, a.name)  # a's second device, on the other node
    conv = direct(a, b)

    async def go():
        cb = await Client.open(on(n2, b))
        ca = await Client.open(a)
        ca2 = await Client.open(a2)
        # n1 subscribes to a's channel, n2 to a's and b's
        assert poll(lambda: subscriptions(redis), lambda n: n == 3) == 3, channels(redis)
        ack = await ca.send_msg(conv, "m1", {"text": "hello"})
        assert ack["type"] == "ack" and ack["seq"] == 1, ack
        want = {"type": "msg", "conv": conv, "seq": 1, "from": a.name, "cmid": "m1",
                "ts": ack["ts"], "body": {"text": "hello"}}
        assert await cb.wait_type("msg") == want
        assert await ca2.wait_type("msg") == want  # the sender's other device
        # a receipt from n2 reaches the sender on n1
        await cb.send({"type": "read", "conv": conv, "seq": 1})
        r = await ca.wait_type("receipt", user=b.name)
        assert r["read"] == 1, r
        # typing travels too (the lossy lane)
        await ca.send({"type": "typing", "conv": conv})
        t = await cb.wait_type("typing")
        assert t == {"type": "typing", "conv": conv, "user": a.name}, t
        # a group made on n1: its members on n2 hear of it, then of changes
        gid = group(a, [b])
        f = await cb.wait(lambda f: f.get("type") == "conv" and f["conv"]["id"] == gid,
                          what="the new group")
        assert sorted(f["conv"]["members"]) == sorted([a.name, b.name])
        assert a.post(f"/v1/conversations/{gid}/members", {"user": c.name}).status_code == 200
        f = await cb.wait(lambda f: f.get("type") == "conv" and f["conv"]["id"] == gid and
                          c.name in f["conv"]["members"], what="c added")
        r = a.delete(f"/v1/conversations/{gid}/members/{b.name}")
        assert r.status_code in (200, 204), r.text
        assert await cb.wait_type("removed", conv=gid) == {"type": "removed", "conv": gid}
        # and the other way round: a message sent on n2 reaches n1
        ack = await cb.send_msg(conv, "m2", "back")
        f = await ca.wait_type("msg", cmid="m2")
        assert f["seq"] == 2 and f["from"] == b.name, f
        # nothing arrived twice (a node skips its own messages on the bus)
        await ca.ping()
        assert [f for f in ca.pending if f.get("type") == "msg"] == []
        for cl in (ca, ca2, cb):
            await cl.close()

    arun(go())
    m1, m2 = get_metrics(n1.port), get_metrics(n2.port)
    assert mval(m1, "parley_bus_up") == 1 and mval(m2, "parley_bus_up") == 1
    assert mval(m2, "parley_bus_received_total") >= 5, m2
    assert mval(m1, "parley_bus_refused_total") == 0 == mval(m2, "parley_bus_refused_total")
    assert mval(m1, "parley_bus_publish_seconds_count") > 0
    assert health(n1) == (200, {"status": "ok"}) and health(n2) == (200, {"status": "ok"})
    # the channels follow the sessions: all closed, none left
    assert poll(lambda: channels(redis), lambda v: v == ["parley:all"]) == ["parley:all"]


def two_devices_on_n2(parley, db, redis):
    """Two nodes and a user with two devices' tokens: (n1, n2, u, other),
    u's token to be revoked, other's to stay; both will be used on n2."""
    n1, n2 = node(parley, db, redis, "n1"), node(parley, db, redis, "n2")
    u = users(n1, 1)[0]
    return n1, n2, u, login(n2, u.name)


async def open_both_on_n2(n2, u, other, redis):
    """Both devices' sessions on n2, once n2 subscribed the user's channel."""
    c2 = await Client.open(on(n2, u))      # the token to revoke
    keep = await Client.open(other)        # another device
    assert poll(lambda: subscriptions(redis), lambda n: n == 1) == 1
    return c2, keep


async def logout_through_n1(u):
    r = await asyncio.get_running_loop().run_in_executor(
        None, lambda: u.delete("/v1/sessions/current"))  # u's client talks to n1
    assert r.status_code == 204, r.text


async def revoked_closed_other_kept(c2, keep):
    assert await c2.closed_with() == 1008
    await keep.ping()
    await keep.close()


def test_a_logout_closes_its_sessions_on_every_node(parley, pg_database, redis):
    n1, n2, u, other = two_devices_on_n2(parley, pg_database, redis)

    async def go():
        c2, keep = await open_both_on_n2(n2, u, other, redis)
        await logout_through_n1(u)
        await revoked_closed_other_kept(c2, keep)

    arun(go())


def test_channels_follow_sessions_that_come_and_go_quickly(parley, pg_database, redis):
    """Opens and closes a user's session on n2 over and over (subscribe and
    unsubscribe race each other in Redis): at the end the channel is there
    exactly while a session is, and delivery works."""
    n1, n2 = node(parley, pg_database, redis, "n1"), node(parley, pg_database, redis, "n2")
    a, b = users(n1, 2)
    conv = direct(a, b)

    async def go():
        for _ in range(15):
            c = await Client.open(on(n2, b))
            await c.close()
        c = await Client.open(on(n2, b))
        assert poll(lambda: subscriptions(redis), lambda n: n == 1) == 1, channels(redis)
        for i in range(5):
            assert a.post(f"/v1/conversations/{conv}/messages",
                          {"cmid": f"q{i}", "body": i}).status_code == 201
            f = await c.wait_type("msg", cmid=f"q{i}")
            assert f["body"] == i
        await c.close()

    arun(go())
    assert poll(lambda: channels(redis), lambda v: v == ["parley:all"]) == ["parley:all"]


def test_redis_restarted_sessions_resync_and_delivery_resumes(parley, pg_database, redis):
    n1, n2 = node(parley, pg_database, redis, "n1"), node(parley, pg_database, redis, "n2")
    a, b = users(n1, 2)
    conv = direct(a, b)

    async def go():
        ca = await Client.open(a)
        cb = await Client.open(on(n2, b))
        assert poll(lambda: subscriptions(redis), lambda n: n == 2) == 2
        assert (await ca.send_msg(conv, "before", 0))["seq"] == 1
        await cb.wait_type("msg", cmid="before")
        redis.kill()
        # both nodes say they cannot reach the bus: a load balancer drains them
        for srv in (n1, n2):
            st = poll(lambda: health(srv), lambda h: h[0] == 503)
            assert st == (503, {"status": "unavailable", "bus": "down"}), st
        # the store still takes messages: acked while the bus is away
        acks = [await ca.send_msg(conv, f"away{i}", i) for i in range(3)]
        assert [x["seq"] for x in acks] == [2, 3, 4], acks
        redis.restart()
        for srv in (n1, n2):
            st = poll(lambda: health(srv), lambda h: h[0] == 200)
            assert st == (200, {"status": "ok"}), st
        # b's session, still open, is told to resync, and finds every message
        f = await cb.wait_type("resync")
        assert f == {"type": "resync", "reason": "bus"}, f
        r = await cb.request({"type": "sync", "conv": conv, "after": 1}, "history")
        assert [m["cmid"] for m in r["messages"]] == ["away0", "away1", "away2"], r
        # delivery over the bus works again, both ways
        await ca.send_msg(conv, "after", 9)
        assert (await cb.wait_type("msg", cmid="after"))["seq"] == 5
        await cb.send_msg(conv, "reply", 10)
        assert (await ca.wait_type("msg", cmid="reply"))["seq"] == 6
        await ca.close()
        await cb.close()

    arun(go())
    assert [m["cmid"] for m in history(a, conv)] == [
        "before", "away0", "away1", "away2", "after", "reply"]
    m2 = get_metrics(n2.port)
    assert mval(m2, "parley_bus_reconnects_total") >= 1, m2
    assert mval(m2, "parley_bus_resyncs_total") >= 1, m2


def test_a_node_started_while_redis_is_away_serves_once_it_is_back(parley, pg_database, redis):
    redis.kill()
    n1 = node(parley, pg_database, redis, "n1")
    assert poll(lambda: health(n1), lambda h: h[0] == 503) == (
        503, {"status": "unavailable", "bus": "down"})
    a, b = users(n1, 2)  # the store serves meanwhile
    conv = direct(a, b)
    redis.restart()
    assert poll(lambda: health(n1), lambda h: h[0] == 200) == (200, {"status": "ok"})
    n2 = node(parley, pg_database, redis, "n2")

    async def go():
        cb = await Client.open(on(n2, b))
        assert poll(lambda: subscriptions(redis), lambda n: n == 1) == 1
        assert a.post(f"/v1/conversations/{conv}/messages",
                      {"cmid": "x", "body": 1}).status_code == 201
        assert (await cb.wait_type("msg", cmid="x"))["seq"] == 1
        await cb.close()

    arun(go())


def test_what_is_not_parleys_on_the_bus_is_counted_and_ignored(parley, pg_database, redis):
    n1, n2 = node(parley, pg_database, redis, "n1"), node(parley, pg_database, redis, "n2")
    a, b = users(n1, 2)
    conv = direct(a, b)

    async def go():
        cb = await Client.open(on(n2, b))
        chans = poll(lambda: channels(redis), lambda v: len(v) == 2)
        user_chan = [c for c in chans if c != "parley:all"][0]
        bad = [
            (user_chan, "garbage"),
            (user_chan, "P1 x msg 1 1 0\nnot json"),
            (user_chan, "P1 x msg 1 1 0\n"),
            (user_chan, "P1 x resync 0 0 0\n"),          # resync belongs on parley:all
            (user_chan, "P1 x msg 01 1 0\n{}"),
            (user_chan, "P1 bad/node msg 1 1 0\n{}"),
            ("parley:all", 'P1 x msg 1 1 0\n{"type":"msg"}'),  # only resync there
            (user_chan, "P1 x msg 1 1 0\n" + "[" * 100000),
        ]
        for chan, payload in bad:
            assert redis.client().publish(chan, payload) >= 1
        await asyncio.sleep(0)
        m = poll(lambda: get_metrics(n2.port),
                 lambda m: mval(m, "parley_bus_refused_total") == len(bad))
        assert mval(m, "parley_bus_refused_total") == len(bad), m
        # the session got none of it, and still gets what is real
        assert a.post(f"/v1/conversations/{conv}/messages",
                      {"cmid": "real", "body": "ok"}).status_code == 201
        before, f = await cb.until(lambda f: f.get("type") == "msg")
        assert f["cmid"] == "real", f
        assert [x["type"] for x in before] in ([], ["presence"]), before  # a's, at connect
        await cb.close()

    arun(go())
    assert health(n2) == (200, {"status": "ok"})


def test_bus_flags_are_checked(tmp_path, pg_database, redis):
    web = ("--web-dir", str(tmp_path))
    r = run_parleyd(tmp_path, "--bus", redis.url, *web)
    assert r.returncode == 1 and b"--bus needs --store postgresql://" in r.stderr, r
    for flags in (("--bus", "http://127.0.0.1:1"), ("--node-id", "a b"), ("--node-id", "x" * 65),
                  ("--bus", "redis://127.0.0.1:99999")):
        r = run_parleyd(tmp_path, "--store", pg_database.dsn, *flags, *web)
        assert r.returncode != 0, (flags, r)
        assert r.stderr, flags


def test_a_connection_redis_reset_is_seen_as_lost(parley, pg_database, redis):
    """Redis frozen with a PUBLISH unread, then killed: the kernel resets the
    connections (not a clean close). The node must see both as lost (503),
    and serve again once Redis is back."""
    import os
    import signal
    n1 = node(parley, pg_database, redis, "n1")
    a, b = users(n1, 2)
    conv = direct(a, b)

    async def go():
        cb = await Client.open(b)
        assert poll(lambda: subscriptions(redis), lambda n: n == 1) == 1
        os.kill(redis.pid, signal.SIGSTOP)
        try:
            assert a.post(f"/v1/conversations/{conv}/messages",
                          {"cmid": "frozen", "body": 1}).status_code == 201
            await cb.wait_type("msg", cmid="frozen")  # delivered here, published to Redis
            await asyncio.sleep(0.2)
        finally:
            os.kill(redis.pid, signal.SIGKILL)
        st = poll(lambda: health(n1), lambda h: h[0] == 503)
        assert st == (503, {"status": "unavailable", "bus": "down"}), st
        redis.restart()
        assert poll(lambda: health(n1), lambda h: h[0] == 200) == (200, {"status": "ok"})
        assert (await cb.wait_type("resync"))["reason"] == "bus"
        await cb.close()

    arun(go())


def test_a_frozen_redis_is_seen_and_its_return_brings_a_resync(parley, pg_database, redis):
    """Redis frozen (SIGSTOP): its connections stay open and nothing
    answers. The node's echo on its own channel does not come back: the
    links are dropped (503 "bus":"down"), made again, and not healthy
    while Redis stays frozen (connecting is not enough); once it runs
    again the sessions resync and delivery works."""
    import os
    import signal
    n1, n2 = node(parley, pg_database, redis, "n1"), node(parley, pg_database, redis, "n2")
    a, b = users(n1, 2)
    conv = direct(a, b)

    async def go():
        ca = await Client.open(a)
        cb = await Client.open(on(n2, b))
        assert poll(lambda: subscriptions(redis), lambda n: n == 2) == 2
        assert poll(lambda: health(n1), lambda h: h[0] == 200) == (200, {"status": "ok"})
        os.kill(redis.pid, signal.SIGSTOP)
        try:
            for srv in (n1, n2):
                st = poll(lambda: health(srv), lambda h: h[0] == 503)
                assert st == (503, {"status": "unavailable", "bus": "down"}), st
            ack = await ca.send_msg(conv, "frozen", 1)  # the store still acks
            assert ack["type"] == "ack", ack
        finally:
            os.kill(redis.pid, signal.SIGCONT)
        for srv in (n1, n2):
            assert poll(lambda: health(srv), lambda h: h[0] == 200) == (200, {"status": "ok"})
        assert (await cb.wait_type("resync"))["reason"] == "bus"
        r = await cb.request({"type": "sync", "conv": conv, "after": 0}, "history")
        assert "frozen" in [m["cmid"] for m in r["messages"]], r
        await ca.send_msg(conv, "after", 2)
        await cb.wait_type("msg", cmid="after")
        await ca.close()
        await cb.close()

    arun(go())
    assert mval(get_metrics(n1.port), "parley_bus_reconnects_total") >= 1


def test_a_read_that_did_not_wait_for_its_channel_brings_a_resync(parley, pg_database, redis):
    """Redis paused (CLIENT PAUSE, every command) while b's session opens on
    n2: b's channel is not confirmed, so its first sync waits its 1 s and
    reads anyway; a message sent meanwhile could have missed b. When Redis
    runs again and confirms the channel, b is told to resync. The pause is
    shorter than --bus-timeout, so no connection is dropped: the resync is
    this read's own."""
    n1 = node(parley, pg_database, redis, "n1", "--bus-timeout", "20000")
    n2 = node(parley, pg_database, redis, "n2", "--bus-timeout", "20000")
    a, b = users(n1, 2)
    conv = direct(a, b)
    assert a.post(f"/v1/conversations/{conv}/messages", {"cmid": "m1", "body": 1}).status_code == 201

    async def go():
        redis.client().execute_command("CLIENT", "PAUSE", "6000", "ALL")
        cb = await Client.open(on(n2, b))
        r = await cb.request({"type": "sync", "conv": conv, "after": 0}, "history")
        assert [m["cmid"] for m in r["messages"]] == ["m1"], r
        f = await cb.wait_type("resync", timeout=30)
        assert f == {"type": "resync", "reason": "bus"}, f
        await cb.close()

    arun(go())
    m2 = get_metrics(n2.port)
    assert mval(m2, "parley_bus_reconnects_total") == 0, m2
    assert mval(m2, "parley_bus_resyncs_total") == 1, m2


def test_a_stopping_node_publishes_what_it_queued_first(parley, pg_database, redis):
    """Redis holds PUBLISH back (CLIENT PAUSE WRITE) when n1 acks a message
    and is stopped at once: n1 waits (bounded) for Redis to take it before
    it closes its connections (Redis drops what a closed client had not run),
    so b, on n2, gets the message."""
    n1, n2 = node(parley, pg_database, redis, "n1"), node(parley, pg_database, redis, "n2")
    a, b = users(n1, 2)
    conv = direct(a, b)

    async def go():
        cb = await Client.open(on(n2, b))
        assert poll(lambda: subscriptions(redis), lambda n: n == 1) == 1
        redis.client().execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        r = await asyncio.get_running_loop().run_in_executor(
            None, lambda: a.post(f"/v1/conversations/{conv}/messages", {"cmid": "last", "body": 1}))
        assert r.status_code == 201, r.text
        assert n1.kill() == 0  # SIGTERM while the PUBLISH waits in Redis
        f = await cb.wait_type("msg", cmid="last")
        assert f["seq"] == 1, f
        await cb.close()

    arun(go())


def test_connection_ids_in_the_logs_name_their_node(parley, pg_database, redis):
    """With --bus a connection's id in the log lines is qualified by the
    node (chat-1/42): ids from several nodes' logs never meet."""
    n1 = node(parley, pg_database, redis, "chat-1", "--log-level", "debug")
    u = users(n1, 1)[0]

    async def go():
        c = await Client.open(u)
        await c.ping()
        await c.close()

    arun(go())
    log = poll(lambda: n1.log(tail=200000), lambda t: '"ws close"' in t)
    opens = [ln for ln in log.splitlines() if 'msg="ws open"' in ln]
    assert opens and all(" conn=chat-1/" in ln for ln in opens), opens
    closes = [ln for ln in log.splitlines() if 'msg="ws close"' in ln]
    assert closes and all(" conn=chat-1/" in ln for ln in closes), closes


def test_a_logout_missed_on_the_bus_is_read_from_the_journal(parley, pg_database, redis):
    """n2 frozen (SIGSTOP) and its subscriber connection killed in Redis: the
    logout made through n1 meanwhile never reaches n2 as a message. When n2
    runs again it reconnects, and reading the user's revocation journal at
    the channel's confirmation closes the revoked token's session (1008);
    the user's other device stays."""
    import os
    import signal
    n1, n2, u, other = two_devices_on_n2(parley, pg_database, redis)

    async def go():
        c2, keep = await open_both_on_n2(n2, u, other, redis)
        r = redis.client()
        sub = [c for c in r.client_list() if c.get("name") == "parley-n2-sub"]
        assert len(sub) == 1, r.client_list()
        os.kill(n2.proc.pid, signal.SIGSTOP)
        try:
            r.client_kill_filter(_id=sub[0]["id"])
            await logout_through_n1(u)
            assert r.zcard(next(iter(r.scan_iter("parley:rv:*")))) == 1
        finally:
            os.kill(n2.proc.pid, signal.SIGCONT)
        await revoked_closed_other_kept(c2, keep)

    arun(go())
