"""Presence and connections per user over a cluster (--bus, real
redis-server and PostgreSQL): a user is online while any node holds a
session of theirs, and their contacts hear it wherever they are; a node
that dies (kill -9) stops counting within --node-ttl, and its users go
offline for their contacts; a node restarted under the same id drops what
its previous life had left; after a Redis restart every node writes its
part of the roster again; --max-user-conns counts every node's sessions.
"""

import json

from parley_client import (Client, arun, direct, get_metrics, login, mval, on, poll,
                           retry_after_header, users, ws_handshake)


def node(parley, db, redis, name, *flags):
    return parley("--store", db.dsn, "--bus", redis.url, "--node-id", name, *flags)


def roster(redis):
    """{uid: {node: count}} of the roster in Redis."""
    r = redis.client()
    return {k.split(":")[-1]: {n: int(c) for n, c in r.hgetall(k).items()}
            for k in r.scan_iter("parley:p:*")}


def only_sessions(redis, want):
    """Polls until the roster's counts (over users) are `want`, a sorted
    list of {node: count}; returns the last."""
    got = poll(lambda: sorted((sorted(v.items()) for v in roster(redis).values())),
               lambda v: v == want)
    return got


async def presence_of(client, name, online):
    """The next presence frame of name's that says `online`; the ones of
    name's read before it are dropped (a session's first frames tell it
    its contacts' presence as of its connect)."""
    f = await client.wait(lambda f: f.get("type") == "presence" and f.get("user") == name and
                          f.get("online") is online, what=f"{name} online={online}")
    client.pending = [g for g in client.pending
                      if not (g.get("type") == "presence" and g.get("user") == name)]
    return f


def test_online_while_any_node_holds_a_session(parley, pg_database, redis):
    n1, n2 = node(parley, pg_database, redis, "n1"), node(parley, pg_database, redis, "n2")
    a, b = users(n1, 2)
    direct(a, b)
    a2 = login(n2, a.name)

    async def go():
        cb = await Client.open(on(n2, b))
        assert only_sessions(redis, [[("n2", 1)]]) == [[("n2", 1)]]
        ca = await Client.open(a)  # a comes online on n1: b, on n2, hears it
        await presence_of(cb, a.name, True)
        # the contacts' presence at a's connect comes from the roster: b is on n2
        await presence_of(ca, b.name, True)
        ca2 = await Client.open(a2)  # a's second device, on n2
        assert only_sessions(redis, [[("n1", 1), ("n2", 1)], [("n2", 1)]])
        await ca.close()  # a is still online on n2
        assert only_sessions(redis, [[("n2", 1)], [("n2", 1)]])
        # a new session of b's on n1 is told a is online (a has no session on n1)
        cb1 = await Client.open(b)
        await presence_of(cb1, a.name, True)
        await cb.ping()
        assert not [f for f in cb.pending if f.get("type") == "presence" and
                    f.get("user") == a.name], cb.pending  # no offline while a is on n2
        await ca2.close()  # a's last session anywhere: b hears it on both nodes
        f = await presence_of(cb, a.name, False)
        assert f["last_seen"] > 0, f
        await presence_of(cb1, a.name, False)
        assert not [f for f in cb.pending if f.get("type") == "presence" and
                    f.get("user") == a.name and f.get("online") is False]
        for c in (cb, cb1):
            await c.close()

    arun(go())
    assert only_sessions(redis, []) == []


def test_a_dead_nodes_users_go_offline_within_the_ttl(parley, pg_database, redis):
    n1 = node(parley, pg_database, redis, "n1", "--node-ttl", "1000")
    n2 = node(parley, pg_database, redis, "n2", "--node-ttl", "1000")
    a, b = users(n1, 2)
    direct(a, b)

    async def go():
        cb = await Client.open(b)
        ca = await Client.open(on(n2, a))
        await presence_of(cb, a.name, True)
        assert only_sessions(redis, [[("n1", 1)], [("n2", 1)]])
        n2.expect_exit = True
        n2.proc.kill()  # kill -9: nobody says goodbye for a
        n2.proc.wait(timeout=10)
        await presence_of(cb, a.name, False)
        assert only_sessions(redis, [[("n1", 1)]]) == [[("n1", 1)]]
        assert "n2" not in redis.client().smembers("parley:nodes")
        await cb.close()
        try:
            await ca.close()
        except Exception:
            pass

    arun(go())
    assert mval(get_metrics(n1.port), "parley_bus_swept_total") == 1


def test_a_node_restarted_under_its_id_drops_its_old_sessions(parley, pg_database, redis):
    """The TTL is long: only the restarted node's own clean-up can make a
    offline before it ends."""
    n1 = node(parley, pg_database, redis, "n1", "--node-ttl", "600000")
    n2 = node(parley, pg_database, redis, "n2", "--node-ttl", "600000")
    a, b = users(n1, 2)
    direct(a, b)

    async def go():
        cb = await Client.open(b)
        ca = await Client.open(on(n2, a))
        await presence_of(cb, a.name, True)
        n2.expect_exit = True
        n2.proc.kill()
        n2.proc.wait(timeout=10)
        assert only_sessions(redis, [[("n1", 1)], [("n2", 1)]])  # n2 looks alive still
        again = node(parley, pg_database, redis, "n2", "--node-ttl", "600000")
        await presence_of(cb, a.name, False)
        assert only_sessions(redis, [[("n1", 1)]]) == [[("n1", 1)]]
        assert mval(get_metrics(again.port), "parley_bus_roster_syncs_total") >= 1
        await cb.close()
        try:
            await ca.close()
        except Exception:
            pass

    arun(go())


def test_the_roster_is_written_again_after_a_redis_restart(parley, pg_database, redis):
    n1, n2 = node(parley, pg_database, redis, "n1"), node(parley, pg_database, redis, "n2")
    a, b = users(n1, 2)
    direct(a, b)

    async def go():
        ca = await Client.open(a)
        cb = await Client.open(on(n2, b))
        cb2 = await Client.open(on(n2, b))
        want = [[("n1", 1)], [("n2", 2)]]
        assert only_sessions(redis, want) == want
        redis.restart(kill=True)  # no persistence: the roster is gone
        for c in (ca, cb, cb2):
            await c.wait_type("resync")
        assert only_sessions(redis, want) == want
        assert sorted(redis.client().smembers("parley:nodes")) == ["n1", "n2"]
        # and it follows the sessions again
        await cb2.close()
        assert only_sessions(redis, [[("n1", 1)], [("n2", 1)]])
        for c in (ca, cb):
            await c.close()

    arun(go())
    assert only_sessions(redis, []) == []


def test_connections_per_user_count_every_node(parley, pg_database, redis):
    """--max-user-conns 2: one session on n1 and one on n2 fill it; a third
    on either node gets 429 too_many_connections; one closed frees a place."""
    n1 = node(parley, pg_database, redis, "n1", "--max-user-conns", "2")
    n2 = node(parley, pg_database, redis, "n2", "--max-user-conns", "2")
    u = users(n1, 1)[0]
    dev2 = login(n2, u.name)

    async def go():
        c1 = await Client.open(u)
        c2 = await Client.open(dev2)
        assert only_sessions(redis, [[("n1", 1), ("n2", 1)]])
        for srv, token in ((n1, u.token), (n2, dev2.token)):
            resp = ws_handshake(srv.port, token)
            assert resp.status == 429, resp
            assert json.loads(resp.body)["error"]["code"] == "too_many_connections", resp
            assert retry_after_header(resp) >= 1
        await c2.close()
        assert only_sessions(redis, [[("n1", 1)]])
        c3 = await Client.open(on(n2, u))
        await c3.ping()
        for c in (c1, c3):
            await c.close()

    arun(go())


def test_a_node_that_stops_leaves_the_roster(parley, pg_database, redis):
    """n2 stops (SIGTERM) with its TTL ten minutes long: it deletes its
    heartbeat, and n1 (heartbeat every 250 ms) sweeps its user offline."""
    n1 = node(parley, pg_database, redis, "n1", "--node-ttl", "1000")
    n2 = node(parley, pg_database, redis, "n2", "--node-ttl", "600000")
    a, b = users(n1, 2)
    direct(a, b)

    async def go():
        cb = await Client.open(b)
        ca = await Client.open(on(n2, a))
        await presence_of(cb, a.name, True)
        assert n2.kill() == 0
        await presence_of(cb, a.name, False)
        assert only_sessions(redis, [[("n1", 1)]]) == [[("n1", 1)]]
        await cb.close()
        try:
            await ca.close()
        except Exception:
            pass

    arun(go())
