"""docs/cluster.md, "Running three nodes": the node configuration it shows,
with its hosts replaced by this test's PostgreSQL and redis-server, starts
three nodes (parleyd --config), each under its node id, and a message
from a user on the first reaches a user on the third."""

import re
from pathlib import Path

from parley_client import Client, arun, direct, on, users

DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"


def guide_config():
    text = DOC.read_text()
    section = text.split("## Running three nodes", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```ini\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the guide shows one node configuration"
    return blocks[0]


def test_the_guides_configuration_runs_three_nodes(parley, pg_database, redis, tmp_path):
    conf = guide_config()
    assert "node-id = chat-1" in conf and "store = postgresql://" in conf and "bus = redis://" in conf
    nodes = []
    for i in (1, 2, 3):
        c = re.sub(r"^store = .*$", f"store = {pg_database.dsn}", conf, flags=re.M)
        c = re.sub(r"^bus = .*$", f"bus = {redis.url}", c, flags=re.M)
        c = c.replace("node-id = chat-1", f"node-id = chat-{i}")
        path = tmp_path / f"chat-{i}.conf"
        path.write_text(c)
        nodes.append(parley("--config", str(path)))  # port, listen, dirs: the test's own
    for i, n in enumerate(nodes, 1):
        assert f"node=chat-{i}" in n.log(), n.log()
    a, b = users(nodes[0], 2)
    conv = direct(a, b)

    async def go():
        cb = await Client.open(on(nodes[2], b))
        ca = await Client.open(a)
        ack = await ca.send_msg(conv, "m1", "across the cluster")
        assert ack["type"] == "ack", ack
        f = await cb.wait_type("msg", cmid="m1")
        assert f["body"] == "across the cluster" and f["seq"] == ack["seq"], f
        await ca.close()
        await cb.close()

    arun(go())
