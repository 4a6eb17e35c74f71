"""The PostgreSQL backend (--store postgresql://...), on real PostgreSQL
servers started by the tests (engines.py): the schema migrated at start
and a newer one refused; several nodes writing one conversation at once
(seq gapless in commit order, a cmid stored once whichever node it is
resent to); the inbox's changed_since missing nothing while two nodes
write; PostgreSQL stopped: `unavailable` with Retry-After, nothing acked
lost, service back when it returns.

(The chat suite itself also runs on this backend: make test-integration-pg.)
"""

import json
import os
import random
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from parley_client import (PARLEYD, SLOW, RawWS, User, direct, group, history, inbox_pages, on, poll,
                           login_attempt, rest, run_parleyd, send_rest, users)




def node(parley, dsn, *flags):
    """A parleyd on the shared database (its own data directory)."""
    return parley("--store", dsn, *flags)




def test_schema_is_migrated_at_start_and_a_newer_one_is_refused(parley, pg_database, tmp_path):
    srv = node(parley, pg_database.dsn)
    assert pg_database.psql("select version from parley_schema").strip() == "1"
    a, b = users(srv, 2)
    conv = direct(a, b)
    assert send_rest(a, conv, "m1", "hello").status == 201
    srv.kill()
    # A second start finds the schema current and the data there.
    srv = node(parley, pg_database.dsn)
    assert [m["cmid"] for m in history(on(srv, a), conv)] == ["m1"]
    srv.kill()
    # A database from a newer parleyd is refused, and left as it is.
    pg_database.psql("update parley_schema set version = 99")
    r = run_parleyd(tmp_path, "--store", pg_database.dsn, "--web-dir", str(tmp_path))
    assert r.returncode == 1, r
    err = r.stderr.decode()
    assert "schema is newer than this parleyd" in err and "found=99" in err, err
    assert pg_database.psql("select version from parley_schema").strip() == "99"
    assert pg_database.psql("select count(*) from messages").strip() == "1"


def test_two_nodes_write_one_conversation_gapless_and_each_cmid_once(parley, pg_database):
    n1, n2 = node(parley, pg_database.dsn), node(parley, pg_database.dsn)
    members = users(n1, 4)
    gid = group(members[0], members[1:])
    per_sender, resend = 40, 5
    acks = {}  # cmid -> seq
    lock = threading.Lock()

    def sender(i):
        me = members[i]
        here, there = on(n1 if i % 2 else n2, me), on(n2 if i % 2 else n1, me)
        for k in range(per_sender):
            cmid = f"s{i}-{k}"
            r = send_rest(here, gid, cmid, f"hello {i} {k}")
            assert r.status == 201, r
            with lock:
                acks[cmid] = r.json()["seq"]
            if k < resend:  # the same message resent through the other node
                r = send_rest(there, gid, cmid, f"hello {i} {k}")
                assert r.status == 200 and r.json().get("duplicate") is True, r
                with lock:
                    assert r.json()["seq"] == acks[cmid], (cmid, r.json(), acks[cmid])

    with ThreadPoolExecutor(max_workers=4) as ex:
        list(ex.map(sender, range(4)))
    total = 4 * per_sender
    for srv in (n1, n2):
        msgs = history(on(srv, members[0]), gid)
        assert [m["seq"] for m in msgs] == list(range(1, total + 1))  # gapless, in order
        assert sorted(m["cmid"] for m in msgs) == sorted(acks)         # each cmid once
        assert {m["cmid"]: m["seq"] for m in msgs} == acks              # at its acked seq
        # each sender's messages in the order it sent them
        for i in range(4):
            mine = [m for m in msgs if m["cmid"].startswith(f"s{i}-")]
            assert [m["cmid"] for m in mine] == [f"s{i}-{k}" for k in range(per_sender)]


def listed_since(user, cursor):
    """{conv id: last_seq} of one changed_since walk."""
    out = {}
    for p in inbox_pages(user, changed_since=cursor):
        for c in p["conversations"]:
            out[c["id"]] = max(out.get(c["id"], 0), c["last_seq"])
    return out


def test_changed_since_misses_no_change_while_two_nodes_write(parley, pg_database):
    n1, n2 = node(parley, pg_database.dsn), node(parley, pg_database.dsn)
    reader, *others = users(n1, 7)
    convs = [direct(o, reader) for o in others]
    stop = threading.Event()
    started = []  # (monotonic time the send began, conv, acked seq)
    lock = threading.Lock()

    def writer(i):
        srv = n1 if i % 2 else n2
        rnd = random.Random(i)
        for k in range(400):
            if stop.is_set():
                return
            j = rnd.randrange(len(others))
            t = time.monotonic()
            r = send_rest(on(srv, others[j]), convs[j], f"w{i}-{k}", "x")
            assert r.status == 201, r
            with lock:
                started.append((t, convs[j], r.json()["seq"]))

    cursors = []  # (monotonic time the answer arrived, cursor)
    with ThreadPoolExecutor(max_workers=2) as ex:
        futs = [ex.submit(writer, i) for i in range(2)]
        last = None
        for _ in range(25):
            pages = inbox_pages(on(n2, reader), changed_since=last)
            last = pages[-1]["cursor"]
            cursors.append((time.monotonic(), last))
            time.sleep(0.02)
        stop.set()
        for f in futs:
            f.result()
    assert len(started) > 50, "the writers did not get going"
    # Every send that began after a cursor was answered is listed by
    # changed_since = that cursor, with at least its seq.
    for t, cursor in cursors:
        listed = listed_since(on(n1, reader), cursor)
        for ts, conv, seq in started:
            if ts > t:
                assert listed.get(conv, 0) >= seq, (cursor, conv, seq, listed)


def test_postgresql_stopped_answers_unavailable_and_loses_nothing(parley, postgres):
    srv = node(parley, postgres.dsn)
    a, b = users(srv, 2)
    conv = direct(a, b)
    assert send_rest(a, conv, "m1", "before").status == 201
    assert rest(srv, "GET", "/healthz").json() == {"status": "ok"}
    postgres.kill()
    # /healthz says so (a load balancer drains the node), within the ping interval.
    health = poll(lambda: rest(srv, "GET", "/healthz"), lambda r: r.status == 503)
    assert health.json() == {"status": "unavailable", "store": "down"}, health
    # REST: 503 unavailable with Retry-After, for a send and for a read.
    r = send_rest(a, conv, "m2", "during")
    assert r.status == 503 and r.error_code() == "unavailable", r
    assert r.header("retry-after") == "1", r
    r = a.get(f"/v1/conversations/{conv}/messages")
    assert r.status == 503 and r.error_code() == "unavailable", r
    r = login_attempt(srv, a.name)  # not "wrong password"
    assert r.status == 503 and r.error_code() == "unavailable", r
    # A WebSocket opened before keeps its connection and gets an error frame.
    postgres.restart()
    with RawWS(srv.port, token=a.token) as ws:
        postgres.kill()
        ws.send_text(json.dumps({"type": "send", "conv": conv, "cmid": "m3", "body": "ws"}))
        f = json.loads(ws.recv_text())
        while f["type"] == "presence":
            f = json.loads(ws.recv_text())
        assert f["type"] == "error" and f["code"] == "unavailable", f
        assert f.get("retry_after_ms", 0) > 0 and f.get("ref") == "m3", f  # a send's ref: its cmid
    # Back: the same cmids go through, nothing acked is lost, nothing doubled.
    postgres.restart()
    deadline = time.monotonic() + 30
    while True:
        r = send_rest(a, conv, "m2", "during")
        if r.status == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status == 201, r
    assert poll(lambda: rest(srv, "GET", "/healthz"), lambda r: r.status == 200).status == 200
    assert send_rest(b, conv, "m3", "ws").status == 201
    assert [m["cmid"] for m in history(a, conv)] == ["m1", "m2", "m3"]
    assert srv.alive()


def test_changed_since_lists_a_write_that_was_in_flight_at_the_cursor(parley, pg_database):
    """Another node's send still uncommitted when the inbox was read (and a
    later transaction already committed): its conversation comes with
    changed_since = that cursor once it commits."""
    srv = node(parley, pg_database.dsn)
    reader, other, third = users(srv, 3)
    conv, conv2 = direct(other, reader), direct(third, reader)
    assert send_rest(other, conv, "m1", "first").status == 201
    uid = int(pg_database.psql(f"select id from users where name = '{other.name}'").strip())
    peer = pg_database.connect(autocommit=False)  # "another node", mid-transaction
    try:
        cur = peer.cursor()
        cur.execute("select rc, seq_out from parley_send(%s, %s, 'm2', '\"second\"', 1, 100)",
                    (conv, uid))
        assert cur.fetchone() == ("ok", 2)
        # a transaction that began after it commits first
        assert send_rest(third, conv2, "n1", "meanwhile").status == 201
        first = inbox_pages(reader)
        cursor = first[-1]["cursor"]
        seen = {c["id"]: c["last_seq"] for p in first for c in p["conversations"]}
        assert seen[conv] == 1 and seen[conv2] == 1  # the uncommitted send is not seen
        peer.commit()
    finally:
        peer.close()
    listed = listed_since(reader, cursor)
    assert listed.get(conv) == 2, (cursor, listed)


def test_backend_conformance_suite_on_postgresql(pg_server):
    """tests/unit/test_db.c, the storage interface's suite, on this backend
    too (each of its tests on a fresh database of pg_server)."""
    binary = Path(PARLEYD).parent / "tests" / "test_db"
    assert binary.exists(), f"{binary}: build it (make test builds every unit test)"
    r = subprocess.run([str(binary)], env={**os.environ, "PARLEY_TEST_PG_HOSTPORT":
                                           f"127.0.0.1:{pg_server.port}"},
                       capture_output=True, text=True, timeout=300 * SLOW)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "FAIL" not in out, out[-4000:]
    assert re.search(r"db: (\d+) passed, 0 failed", out), out[-2000:]
    passed = int(re.search(r"db: (\d+) passed", out).group(1))
    assert passed >= 30, out[-2000:]  # both backends ran


def test_reads_after_a_postgresql_restart_need_no_retry(parley, postgres):
    """Pooled connections whose server went away are found out before a read
    uses them: the first reads after a restart are answered."""
    srv = node(parley, postgres.dsn)
    a, b = users(srv, 2)
    conv = direct(a, b)
    assert send_rest(a, conv, "m1", "before").status == 201
    with ThreadPoolExecutor(max_workers=8) as ex:  # fill the read connections
        assert all(r.status == 200 for r in ex.map(
            lambda _: a.get(f"/v1/conversations/{conv}/messages"), range(32)))
    postgres.restart(kill=True)
    for _ in range(12):
        r = a.get(f"/v1/conversations/{conv}/messages")
        assert r.status == 200 and [m["cmid"] for m in r.json()["messages"]] == ["m1"], (r, srv.log())
