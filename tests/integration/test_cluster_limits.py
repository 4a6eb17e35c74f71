"""Per-user limits over a cluster (--bus, real redis-server and PostgreSQL):
a user's message rate counts every node's sends (each node alone would
let its own burst through), and failed logins spread over nodes delay the
next attempt on any of them; with Redis away each node's own limits still
hold.
"""

import time

from parley_client import (Client, arun, assert_error, direct, flood_sends, login, login_attempt,
                           poll, retry_after_header, users)


def node(parley, db, redis, name, *flags):
    return parley("--store", db.dsn, "--bus", redis.url, "--node-id", name, *flags)


def one_key(redis, pattern):
    keys = list(redis.client().scan_iter(pattern))
    return keys[0] if len(keys) == 1 else None


def test_a_users_message_rate_counts_every_node(parley, pg_database, redis):
    """--rate-user-msgs 5 (burst 20) on both nodes: 20 sends on n1 empty the
    user's bucket; n2's own bucket is full, but its sends are refused once
    it hears of the cluster's (a few pass, one round trip late)."""
    n1 = node(parley, pg_database, redis, "n1", "--rate-user-msgs", "5")
    n2 = node(parley, pg_database, redis, "n2", "--rate-user-msgs", "5")
    u, v = users(n1, 2)
    conv = direct(u, v)
    u2 = login(n2, u.name)

    async def go():
        d1 = await Client.open(u)
        d2 = await Client.open(u2)
        assert u2.srv is n2
        first = [f"a{i}" for i in range(20)]
        await flood_sends(d1, conv, first)
        ans = await d1.answers(first)
        assert all(ans[c]["type"] == "ack" for c in first), ans
        # the 20 are in the user's bucket in Redis
        key = poll(lambda: one_key(redis, "parley:r:*"), lambda k: k is not None)
        assert key, "no bucket in Redis"
        tokens = poll(lambda: float(redis.client().hget(key, "tokens") or 99),
                      lambda t: t < 5)
        assert tokens < 5, tokens
        acked = refused = 0
        for i in range(20):  # one at a time: each waits for its answer
            f = await d2.send_msg(conv, f"b{i}", "x")
            if f["type"] == "ack":
                acked += 1
            else:
                assert f["code"] == "rate_limited" and f["retry_after_ms"] > 0, f
                refused += 1
        # n2 alone would have taken all 20 (its own burst)
        assert refused > 0 and acked < 10, (acked, refused)
        await d1.close()
        await d2.close()

    arun(go())


def test_failed_logins_on_several_nodes_delay_every_node(parley, pg_database, redis):
    """Five wrong passwords from one address, alternately on n1 and n2 (each
    node sees at most three: n2 alone would not delay), then the right
    one on n2: refused, 429, the cluster's delay (4 s after the fifth)."""
    n1, n2 = node(parley, pg_database, redis, "n1"), node(parley, pg_database, redis, "n2")
    u = users(n1, 1)[0]
    fails = 0
    for _ in range(50):
        srv = (n1, n2)[fails % 2]
        r = login_attempt(srv, u.name, "wrong-password")
        if r.status == 401:
            fails += 1
            if fails == 5:
                break
            continue
        # the delay of the cluster (or of the node) after the third: wait it out
        assert_error(r, 429, "rate_limited")
        time.sleep(retry_after_header(r))
    assert fails == 5
    key = poll(lambda: one_key(redis, "parley:lf:*"), lambda k: k is not None)
    assert poll(lambda: redis.client().hget(key, "failures"), lambda f: f == "5") == "5"
    r = login_attempt(n2, u.name, u.password)
    err = assert_error(r, 429, "rate_limited")
    assert 2000 < err["retry_after_ms"] <= 4000 and retry_after_header(r) >= 2, r


def test_limits_hold_per_node_while_redis_is_away(parley, pg_database, redis):
    n1 = node(parley, pg_database, redis, "n1", "--rate-user-msgs", "5")
    u, v = users(n1, 2)
    conv = direct(u, v)
    redis.stop()

    async def go():
        d1 = await Client.open(u)
        sends = [f"a{i}" for i in range(30)]
        await flood_sends(d1, conv, sends)
        ans = await d1.answers(sends)
        acked = [c for c in sends if ans[c]["type"] == "ack"]
        assert 20 <= len(acked) < 30, len(acked)  # the node's own burst
        await d1.close()

    arun(go())
    for _ in range(3):
        assert_error(login_attempt(n1, u.name, "wrong-password"), 401, "bad_credentials")
    assert_error(login_attempt(n1, u.name, u.password), 429, "rate_limited")
