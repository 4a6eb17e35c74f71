"""libparley's list of servers (--server URL,URL... of the CLI, which hands
it to the library as it is): a first entry nobody listens on is skipped by
REST calls and by the live connection; when the node a chat is connected
to dies, the client goes on to the next node of the list (another parleyd
on the same data directory and another port: the nodes of one cluster
share their data), resends what was not acked with the same cmids, and
nothing is lost or stored twice.

Servers that come back run on fixed ports; every process is stopped by
PID; waits are bounded; nothing is timed.
"""

import copy
import signal

from parley_client import HOST, WAIT, Cli, cli_users, free_port, history


def on(cli, url):
    """The same CLI user (config file, token) read through one server."""
    other = copy.copy(cli)
    other.url = url
    return other


def test_first_server_down(parley, open_chat, tmp_path):
    srv = parley("--insecure-fast-kdf")
    dead = f"http://{HOST}:{free_port()}"  # nothing listens there
    servers = f"{dead}, {srv.url}/"
    # REST (register, direct) goes on to the second server at once
    alice, bob = cli_users(tmp_path, servers, 2)
    cid = alice.json("direct", bob.name)["id"]

    # `send` (no REST first): the live connection tries the dead one,
    # backs off, and connects to the next
    r = alice.run("--json", "send", cid, "via the list")
    assert r.returncode == 0, (r.stdout, r.stderr)

    # `chat`: its REST calls found the live server, so it connects there
    a = open_chat(alice, cid)
    a.event("state", state="connected", server=srv.url)
    a.line("from chat")
    a.event("ack", cmid=a.event("queued", text="from chat")["cmid"])
    a.close_stdin()
    assert a.exit_code() == 0
    assert [m["body"] for m in history(on(bob, srv.url), cid)] == ["via the list", "from chat"]


def test_send_connects_past_a_dead_first_server(parley, tmp_path):
    """The live connection itself (no REST before it): refused by the first,
    it goes to the second after one backoff and sends."""
    srv = parley("--insecure-fast-kdf")
    alice, bob = cli_users(tmp_path, srv.url, 2)
    cid = alice.json("direct", bob.name)["id"]
    dead = f"http://{HOST}:{free_port()}"
    r = alice.run("--json", "--server", f"{dead},{srv.url}", "send", cid, "second try")
    assert r.returncode == 0, (r.stdout, r.stderr)
    [m] = history(bob, cid)
    assert m["body"] == "second try"


def test_failover_to_another_node(parley, open_chat, tmp_path):
    port1, port2 = free_port(), free_port()
    data_dir = tmp_path / "data"
    srv1 = parley("--insecure-fast-kdf", port=port1, data_dir=data_dir)
    servers = f"http://{HOST}:{port1},http://{HOST}:{port2}"
    alice, bob = cli_users(tmp_path, servers, 2)
    cid = alice.json("direct", bob.name)["id"]
    a = open_chat(alice, cid, "--wait", "120")
    b = open_chat(bob, cid, "--last", "0")
    a.event("state", state="connected", server=f"http://{HOST}:{port1}")
    b.event("state", state="connected", server=f"http://{HOST}:{port1}")

    cmids = {}
    a.line("m1")
    cmids["m1"] = a.event("queued", text="m1")["cmid"]
    a.event("ack", cmid=cmids["m1"])
    b.msg("m1")

    # m2 goes into the socket of a frozen node, which then dies without
    # reading it: unacked, lost on the wire
    srv1.proc.send_signal(signal.SIGSTOP)
    a.line("m2")
    cmids["m2"] = a.event("queued", text="m2")["cmid"]
    srv1.expect_exit = True
    srv1.proc.kill()
    srv1.proc.wait(timeout=30)
    a.event("state", state="backoff")
    # m3 is written while no node runs
    a.line("m3")
    cmids["m3"] = a.event("queued", text="m3")["cmid"]
    assert not a.find(lambda e: e.get("event") == "ack" and e["cmid"] in (cmids["m2"], cmids["m3"]))

    # the other node of the list, on the same data
    srv2 = parley("--insecure-fast-kdf", port=port2, data_dir=data_dir)
    a.event("state", state="connected", server=srv2.url, timeout=WAIT * 3)
    acks = {t: a.event("ack", cmid=cmids[t], timeout=WAIT * 3) for t in ("m2", "m3")}
    assert [acks[t]["seq"] for t in ("m2", "m3")] == [2, 3]
    b.event("state", state="connected", server=srv2.url, timeout=WAIT * 3)
    for text in ("m2", "m3"):
        b.msg(text, timeout=WAIT * 3)
    # the receiver's read cursor reaches the sender through the new node
    a.seen(lambda e: e.get("event") == "tick" and e["cmid"] == cmids["m3"] and e["state"] == "read",
           "read tick of m3", timeout=WAIT * 3)
    a.close_stdin()
    b.close_stdin()
    assert a.exit_code() == 0
    assert b.exit_code() == 0
    a_events, b_events = a.drain(), b.drain()

    # the retries went round the list: the backoff named each server
    tried = {e["server"] for e in a_events if e.get("event") == "state" and e["state"] == "connecting"}
    assert tried == {f"http://{HOST}:{port1}", srv2.url}, tried
    assert all(0 <= e["delay_ms"] <= 60000 for e in a_events
               if e.get("event") == "state" and e["state"] == "backoff")
    # each cmid acked once; the receiver saw each seq once, in order
    assert sorted(e["cmid"] for e in a_events if e.get("event") == "ack") == sorted(cmids.values())
    assert [e["message"]["seq"] for e in b_events if e.get("event") == "msg"] == [1, 2, 3]
    # nothing lost, nothing stored twice
    assert [(m["seq"], m["body"], m["cmid"]) for m in history(on(alice, srv2.url), cid)] == \
        [(i + 1, t, cmids[t]) for i, t in enumerate(("m1", "m2", "m3"))]


def test_bad_server_lists_are_usage_errors(tmp_path):
    u = Cli(tmp_path, "http://127.0.0.1:9")
    for servers in (f"http://{HOST}:9,", f"http://{HOST}:9,,http://{HOST}:10",
                    f"http://{HOST}:9,{HOST}:10", ",".join([f"http://{HOST}:{9 + i}" for i in range(17)])):
        r = u.run("--server", servers, "login", "alice", input="password\n")
        assert r.returncode == 1 and "bad server URL" in r.stderr, (servers, r.stderr)
    r = u.run("--server", ",".join([f"http://h{i}.example:8080" for i in range(40)]), "inbox")
    assert r.returncode == 1 and "too long" in r.stderr, r.stderr
