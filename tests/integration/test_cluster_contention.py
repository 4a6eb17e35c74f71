"""Two nodes writing the same conversations at once (real PostgreSQL and
redis-server): every send is acked once, seqs stay gapless per
conversation, and the nodes' writers never deadlock each other (a batch
locks its conversations in one order, by id): PostgreSQL counts no
deadlock for the database."""

import asyncio
import random

from parley_client import Client, arun, flood_sends, group, history, login, users

ROUNDS = 60
SENDERS = 3  # per node


def node(parley, db, redis, name):
    return parley("--store", db.dsn, "--bus", redis.url, "--node-id", name)


def deadlocks(db):
    with db.connect() as c, c.cursor() as cur:
        cur.execute("select deadlocks from pg_stat_database where datname = current_database()")
        return cur.fetchone()[0]


def test_two_nodes_writing_the_same_conversations_never_deadlock(parley, pg_database, redis):
    n1, n2 = node(parley, pg_database, redis, "n1"), node(parley, pg_database, redis, "n2")
    people = users(n1, SENDERS)
    owner = people[0]
    convs = [group(owner, people[1:], name=f"g{k}") for k in range(8)]
    devices = [(u, n) for u in people for n in (n1, n2)]
    rnd = random.Random(7)

    async def go():
        clients = [await Client.open(u if n is n1 else login(n, u.name)) for u, n in devices]
        plans = []
        for j, cl in enumerate(clients):
            plan = []
            for i in range(ROUNDS):
                order = list(range(len(convs)))
                rnd.shuffle(order)  # each sender goes round in its own order
                plan += [(convs[k], f"s{j}-{k}-{i}") for k in order]
            plans.append(plan)

        async def flood(cl, plan):
            for conv, cm in plan:
                await flood_sends(cl, conv, [cm])
            return await cl.answers([cm for _, cm in plan])

        got = await asyncio.gather(*(flood(cl, p) for cl, p in zip(clients, plans)))
        for ans in got:
            bad = {k: v for k, v in ans.items() if v["type"] != "ack"}
            assert not bad, list(bad.items())[:3]
        for cl in clients:
            await cl.close()

    before = deadlocks(pg_database)
    arun(go())
    sent = len(devices) * ROUNDS
    for conv in convs:
        seqs = [m["seq"] for m in history(owner, conv)]
        assert seqs == list(range(1, sent + 1)), (conv, len(seqs))
    assert deadlocks(pg_database) - before == 0
