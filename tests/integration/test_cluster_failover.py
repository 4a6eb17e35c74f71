"""Failures under load on three nodes (real redis-server and PostgreSQL):
three senders and three receivers, each CLI homed on a different node
(its --server list starts there and goes round the others), send and
read while
- the first node is killed (kill -9): the clients that were on it go on to
  the next node of their list, resend what was not acked with the same
  cmids and resume;
- Redis is killed and restarted (empty): the nodes tell their sessions to
  resync, and the clients catch up what the bus lost;
either way every message is acked, none lost, none stored twice, seqs
gapless, and every receiver sees each message once.

Every process is stopped by PID; waits are bounded; nothing is timed.
"""

import pytest

from parley_client import WAIT, cli_users, history

PER_SENDER = 30
BEFORE, DURING = 10, 10  # acked before the kill; written just before it


@pytest.mark.parametrize("failure", ["kill_a_node", "restart_redis"])
def test_three_nodes_under_load(failure, parley, open_chat, pg_database, redis, tmp_path):
    nodes = [parley("--store", pg_database.dsn, "--bus", redis.url, "--node-id", f"n{k + 1}",
                    "--node-ttl", "1000", "--insecure-fast-kdf") for k in range(3)]
    urls = [n.url for n in nodes]
    orders = [",".join(urls[k:] + urls[:k]) for k in range(3)]  # user k starts on node k
    homed = [cli_users(tmp_path, orders[k], 2) for k in range(3)]
    pairs = []  # (sender on node k, receiver on node k+1, conv)
    for k in range(3):
        s, r = homed[k][0], homed[(k + 1) % 3][1]
        pairs.append((s, r, s.json("direct", r.name)["id"]))
    chats = []
    for k, (s, r, cid) in enumerate(pairs):
        a = open_chat(s, cid, "--wait", "120")
        b = open_chat(r, cid, "--last", "0")
        a.event("state", state="connected", server=urls[k])
        b.event("state", state="connected", server=urls[(k + 1) % 3])
        chats.append((a, b))

    texts = [[f"p{k}-m{i}" for i in range(PER_SENDER)] for k in range(3)]
    cmids = [dict() for _ in range(3)]

    def write(k, i):
        a = chats[k][0]
        a.line(texts[k][i])
        cmids[k][texts[k][i]] = a.event("queued", text=texts[k][i])["cmid"]

    for i in range(BEFORE):
        for k in range(3):
            write(k, i)
    for k in range(3):
        for i in range(BEFORE):
            chats[k][0].seen(lambda e, c=cmids[k][texts[k][i]]: e.get("event") == "ack" and
                             e["cmid"] == c, f"ack of {texts[k][i]}")
    # under load: messages in flight to every node when node 1 dies
    for i in range(BEFORE, BEFORE + DURING):
        for k in range(3):
            write(k, i)
    if failure == "kill_a_node":
        nodes[0].expect_exit = True
        nodes[0].proc.kill()
        nodes[0].proc.wait(timeout=30)
    else:
        redis.restart(kill=True)
    for i in range(BEFORE + DURING, PER_SENDER):
        for k in range(3):
            write(k, i)

    # every message acked, each once; every receiver sees each once
    for k, (a, b) in enumerate(chats):
        for t in texts[k]:
            a.seen(lambda e, c=cmids[k][t]: e.get("event") == "ack" and e["cmid"] == c,
                   f"ack of {t}", timeout=WAIT * 3)
        for t in texts[k]:
            b.seen(lambda e, t=t: e.get("event") == "msg" and e["message"].get("body") == t,
                   f"msg {t}", timeout=WAIT * 3)
    for a, b in chats:
        a.close_stdin()
        b.close_stdin()
    for a, b in chats:
        assert a.exit_code() == 0
        assert b.exit_code() == 0
    for k, (a, b) in enumerate(chats):
        a_events, b_events = a.drain(), b.drain()
        acked = [e["cmid"] for e in a_events if e.get("event") == "ack"]
        assert sorted(acked) == sorted(cmids[k].values()), (k, len(acked))
        assert [e["message"]["seq"] for e in b_events if e.get("event") == "msg"] == \
            list(range(1, PER_SENDER + 1)), k
        # Redis's return made every session catch up
        if failure == "restart_redis":
            assert [e for e in b.events if e.get("event") == "resync" and e["reason"] == "bus"], k
        # the clients homed on node 1 went on to another node of their list
        if failure == "kill_a_node" and k in (0, 2):
            moved = a if k == 0 else b
            assert {e["server"] for e in moved.events if e.get("event") == "state" and
                    e["state"] == "connected"} - {urls[0]}, k
        # nothing lost, nothing stored twice, gapless, in the sender's order
        s, r, cid = pairs[k]
        r.url = urls[1]
        assert [(m["seq"], m["body"], m["cmid"]) for m in history(r, cid)] == \
            [(i + 1, t, cmids[k][t]) for i, t in enumerate(texts[k])], k
