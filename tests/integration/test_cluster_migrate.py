"""`parleyd migrate --from DATA_DIR --to postgresql://...`: an embedded
store grows into a cluster database (docs/cluster.md, "Growing from
embedded to cluster"). Data is made through the API of an embedded
parleyd, migrated, then read back through the API of a parleyd on the
database: logins, old tokens, history byte for byte, inboxes, cursors,
and ids that go on after the old ones. A second run is safe; a database
that differs from the store is refused naming the conversation; messages
still only in the message log arrive; bad input is a clear exit 1."""

import asyncio
import os
import signal
import subprocess
import time

from parley_client import (PARLEYD, SLOW, T, Client, User, arun, conv_get, direct, group, on,
                           history, inbox, login, receipts, register, rest, send_rest)

EMBEDDED = ("--store", "")  # embedded even when PARLEY_TEST_PG runs the suite on PostgreSQL


def migrate(*args):
    return subprocess.run([PARLEYD, "migrate", *[str(a) for a in args]],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120 * SLOW)


def run_migrate(data_dir, dsn):
    r = migrate("--from", data_dir, "--to", dsn)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout


def count(db, table):
    return int(db.psql(f"select count(*) from {table}"))


def raw_history(user, conv):
    """The history response's bytes (one page holds it all here)."""
    r = user.get(f"/v1/conversations/{conv}/messages", params={"after": 0, "limit": 500})
    assert r.status == 200, r
    assert not r.json()["more"]
    return r.body


def wait_cursor(user, conv, name, want):
    deadline = time.monotonic() + T
    while True:
        got = {m["user"]: (m["delivered"], m["read"]) for m in receipts(user, conv)["members"]}
        if got.get(name) == want:
            return
        assert time.monotonic() < deadline, (got, name, want)
        time.sleep(0.05)




BODIES = [
    "héllo wörld ✓ — 😀",
    'quotes " and \\ backslash, tab\there, new\nline, \r return',
    {"text": "rich \u2028 body", "n": [1, 2.5, -3e10, True, None], "nested": {"k": "\\u00e9"}},
    "<script>alert('x')</script> %s %d \\x00",
    ["an", "array", {"of": "things"}],
    "a" * 3000,
]


def build(srv):
    """Users, a direct conversation (accepted), a group with an invitee,
    messages with unicode and escapes, a resend, cursors, a logout.
    Returns what the checks need."""
    alice, bob, carol, dave = (register(srv) for _ in range(4))
    alice2 = login(srv, alice.name)  # a second device
    d = direct(alice, bob)
    direct(bob, alice)  # bob accepts
    g = group(alice, [bob, carol], name="Wéekend ✓")  # carol: not a contact, invited
    seqs = {}
    for i, body in enumerate(BODIES):
        r = send_rest(alice if i % 2 == 0 else bob, d, f"d-{i}", body)
        assert r.status in (200, 201), r
        seqs[f"d-{i}"] = r.json()["seq"]
    r = send_rest(alice, d, "d-0", BODIES[0])  # a resend: the original seq
    assert r.json()["seq"] == seqs["d-0"], r
    for i in range(5):
        r = send_rest(alice2 if i % 2 else alice, g, f"g-{i}", {"i": i, "t": f"grüß {i}"})
        assert r.status in (200, 201), r
    empty = group(alice, [bob], name="empty")  # no messages

    async def cursors():
        cb = await Client.open(bob)
        cc = await Client.open(carol)
        try:
            await cb.send({"type": "read", "conv": g, "seq": 3})
            await cc.send({"type": "delivered", "conv": g, "seq": 2})
            await cb.ping()
            await cc.ping()
        finally:
            await cb.close()
            await cc.close()

    arun(cursors())
    wait_cursor(alice, g, bob.name, (3, 3))
    wait_cursor(alice, g, carol.name, (2, 0))
    gone = login(srv, dave.name)
    r = rest(srv, "DELETE", "/v1/sessions/current", token=gone.token)
    assert r.status == 204, r
    return {"users": [alice, alice2, bob, carol, dave], "gone": gone, "convs": [d, g, empty],
            "d": d, "g": g}


def snapshot(world):
    """What each user sees: history bytes, inbox, conversations, receipts."""
    out = {}
    for u in world["users"]:
        ib = inbox(u)["conversations"]
        out[(u.name, u.device)] = {
            "inbox": ib,
            "convs": {c["id"]: conv_get(u, c["id"]) for c in ib},
            "history": {c["id"]: raw_history(u, c["id"]) for c in ib},
            "receipts": {c["id"]: receipts(u, c["id"]) for c in ib},
        }
    return out


def test_migrate_keeps_accounts_tokens_history_inbox_and_cursors(parley, pg_database):
    srv = parley(*EMBEDDED)
    w = build(srv)
    before = snapshot(w)
    alice, bob = w["users"][0], w["users"][2]
    old_cursor = inbox(alice)["cursor"]
    assert srv.kill() == 0
    r = migrate("--from", srv.data_dir, "--to", pg_database.dsn)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert "warning" not in r.stderr, r.stderr
    out = r.stdout
    assert "copied   users 4, sessions 5, conversations 3, directs 1, members 7, messages 11" \
        in out, out
    assert "verified users 4, sessions 5, conversations 3, directs 1, members 7, messages 11; " \
           "3 conversation checksums match" in out, out
    for table, n in (("users", 4), ("sessions", 5), ("convs", 3), ("directs", 1),
                     ("members", 7), ("messages", 11)):
        assert count(pg_database, table) == n, table

    # a second run: nothing copied, nothing doubled, verified again
    out2 = run_migrate(srv.data_dir, pg_database.dsn)
    assert "copied   nothing: the database already holds this store" in out2, out2
    assert "3 conversation checksums match" in out2, out2
    assert count(pg_database, "messages") == 11 and count(pg_database, "users") == 4

    pg = parley("--store", pg_database.dsn)
    # the old password logs in, the old tokens authenticate, the revoked one does not
    for u in w["users"]:
        login(pg, u.name, u.password)
        assert on(pg, u).get("/v1/conversations").status == 200, u
    assert on(pg, w["gone"]).get("/v1/conversations").status == 401
    assert rest(pg, "POST", "/v1/sessions",
                {"username": alice.name, "password": "wrong password"}).status == 401
    # history byte for byte, inbox, conversations, receipts: as before
    after = snapshot({**w, "users": [on(pg, u) for u in w["users"]]})
    for key, b in before.items():
        a = after[key]
        assert a["history"] == b["history"], key
        assert a["inbox"] == b["inbox"], key
        assert a["convs"] == b["convs"], key
        assert a["receipts"] == b["receipts"], key
    # an inbox cursor from the embedded store lists every conversation once (not none),
    # and the database's cursors start above every one the store gave
    assert len(inbox(on(pg, alice), changed_since=old_cursor)["conversations"]) == 3
    new_cursor = inbox(on(pg, alice))["cursor"]
    assert new_cursor > old_cursor, (old_cursor, new_cursor)
    assert inbox(on(pg, alice), changed_since=new_cursor)["conversations"] == []
    g, d = w["g"], w["d"]
    assert before[(w["users"][3].name, w["users"][3].device)]["convs"][g]["invited"] is True
    msgs = history(on(pg, bob), d)
    assert [m["cmid"] for m in msgs] == [f"d-{i}" for i in range(len(BODIES))]
    assert [m["body"] for m in msgs] == BODIES
    # the resend of a migrated cmid answers the original seq (the cmid index came along)
    r = send_rest(on(pg, alice), d, "d-0", BODIES[0])
    assert r.status in (200, 201) and r.json()["seq"] == msgs[0]["seq"], r
    # a new message takes the next seq; new users and conversations get fresh ids
    r = send_rest(on(pg, alice), g, "new-1", "after the move")
    assert r.status in (200, 201) and r.json()["seq"] == 6, r
    old_max_user = int(pg_database.psql("select max(id) from users"))
    eve = register(pg)
    assert int(pg_database.psql(f"select id from users where name = '{eve.name}'")) \
        == old_max_user + 1
    new = group(on(pg, alice), [eve], name="fresh")
    assert new > max(w["convs"]), new
    assert len(history(on(pg, alice), new)) == 0
    pg.kill()
    # the database now holds more than the store: refused, and left as it is
    r = migrate("--from", srv.data_dir, "--to", pg_database.dsn)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "refusing" in r.stderr, r.stderr
    assert count(pg_database, "messages") == 12


def test_migrate_finds_a_tampered_message_and_names_its_conversation(parley, pg_database):
    srv = parley(*EMBEDDED)
    a, b = register(srv), register(srv)
    d = direct(a, b)
    g = group(a, [b])
    for i in range(3):
        send_rest(a, d, f"d{i}", f"direct {i}")
        send_rest(b, g, f"g{i}", f"group {i}")
    srv.kill()
    run_migrate(srv.data_dir, pg_database.dsn)
    pg_database.psql(f"update messages set body = '\"tampered\"' where conv = {g} and seq = 2")
    r = migrate("--from", srv.data_dir, "--to", pg_database.dsn)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"conversation {g}: messages differ" in r.stderr, r.stderr
    # a member's cursor is a difference too
    pg_database.psql(f"update messages set body = '\"group 1\"' where conv = {g} and seq = 2")
    run_migrate(srv.data_dir, pg_database.dsn)
    pg_database.psql(f"update members set read_seq = 1 where conv = {d}")
    r = migrate("--from", srv.data_dir, "--to", pg_database.dsn)
    assert r.returncode == 1 and f"conversation {d}: member" in r.stderr, r.stderr


def test_migrate_brings_messages_still_only_in_the_log(parley, pg_database):
    """Acked messages the applier had not written into LMDB yet (a long
    --apply-delay, then kill -9) are replayed and migrated."""
    srv = parley(*EMBEDDED, "--apply-delay", "10000")
    a, b = register(srv), register(srv)
    d = direct(a, b)
    acked = {}
    for i in range(30):
        r = send_rest(a if i % 3 else b, d, f"log-{i}", {"i": i, "s": "ünapplied"})
        assert r.status in (200, 201), r
        acked[f"log-{i}"] = r.json()["seq"]
    srv.expect_exit = True
    srv.proc.send_signal(signal.SIGKILL)
    srv.wait(T)
    out = run_migrate(srv.data_dir, pg_database.dsn)
    assert "messages 30" in out, out
    pg = parley("--store", pg_database.dsn)
    msgs = history(on(pg, a), d)
    assert {m["cmid"]: m["seq"] for m in msgs} == acked
    assert [m["seq"] for m in msgs] == list(range(1, 31))
    assert conv_get(on(pg, b), d)["last_seq"] == 30


def test_migrate_refuses_bad_input_clearly(parley, pg_database, tmp_path):
    r = migrate("--help")
    assert r.returncode == 0 and "--from DATA_DIR" in r.stdout and "--to" in r.stdout
    r = migrate("--from", tmp_path)
    assert r.returncode == 2 and "required" in r.stderr, r.stderr
    r = migrate("--from", tmp_path, "--to", "mysql://x", )
    assert r.returncode == 2, r.stderr
    # not a store: an empty directory, a missing one (nothing is created)
    (tmp_path / "empty").mkdir()
    r = migrate("--from", tmp_path / "empty", "--to", pg_database.dsn)
    assert r.returncode == 1 and "not a parley data directory" in r.stderr, r.stderr
    assert not (tmp_path / "empty" / "data.mdb").exists()
    r = migrate("--from", tmp_path / "missing", "--to", pg_database.dsn)
    assert r.returncode == 1 and "missing" in r.stderr, r.stderr
    assert not (tmp_path / "missing").exists()
    # a server still running on the store: its lock refuses us
    srv = parley(*EMBEDDED)
    register(srv)
    r = migrate("--from", srv.data_dir, "--to", pg_database.dsn)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "in use by another process" in r.stderr and f"pid {srv.proc.pid}" in r.stderr, \
        r.stderr
    assert count(pg_database, "users") == 0
    srv.kill()
    # the database cannot be reached
    r = migrate("--from", srv.data_dir, "--to", "postgresql://parley@127.0.0.1:1/nope")
    assert r.returncode == 1 and "cannot connect to the database" in r.stderr, r.stderr
    # a store of another format version: refused, untouched
    p = subprocess.run(["mdb_load", "-T", "-s", "meta", str(srv.data_dir)],
                       input=b"version\n\\00\\00\\00\\09\n", capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    r = migrate("--from", srv.data_dir, "--to", pg_database.dsn)
    assert r.returncode == 1 and "another storage format version" in r.stderr, r.stderr
    assert count(pg_database, "users") == 0


def test_migrate_time_for_many_messages(parley, pg_database, tmp_path):
    """Not a timing assertion: prints how long N messages take (the figure
    goes to the report), and checks they all arrive."""
    n = int(os.environ.get("PARLEY_MIGRATE_N", "2000"))
    srv = parley(*EMBEDDED, "--apply-delay", "0")
    a, b = register(srv), register(srv)
    d = direct(a, b)

    async def flood():
        c = await Client.open(a)
        try:
            for start in range(0, n, 200):
                cm = [f"m{i}" for i in range(start, min(n, start + 200))]
                for x in cm:
                    await c.send({"type": "send", "conv": d, "cmid": x, "body": f"message {x}"})
                got = await c.answers(cm, timeout=60 * SLOW)
                assert all(f["type"] == "ack" for f in got.values())
        finally:
            await c.close()

    arun(flood(), timeout=600)
    srv.kill()
    t0 = time.monotonic()
    out = run_migrate(srv.data_dir, pg_database.dsn)
    took = time.monotonic() - t0
    print(f"\nmigrate: {n} messages in {took:.2f} s\n{out}")
    assert f"messages {n}" in out
    assert count(pg_database, "messages") == n
