"""Crash consistency: clients stream messages over WebSockets, parleyd is
killed with SIGKILL mid-stream, restarted on the same data directory; every
acknowledged message is there exactly once at its seq, seqs are gapless, and
resending the unacknowledged cmids stores each at most once. Three rounds on
one data directory."""

import asyncio

from parley_client import T, Client, arun, conv_get, group, history, users

ROUNDS = 3
SENDERS = 3
PER_SENDER = 200
WINDOW = 8  # unacknowledged messages per sender
KILL_AFTER_ACKS = [60, 250, 420]  # per round: acks seen (all clients) before the kill


def body_of(name, cmid):
    return {"from": name, "cmid": cmid}


async def stream_and_kill(srv, members, gid, rnd):
    """Every member streams PER_SENDER messages with at most WINDOW unacked,
    so the stream is still flowing when parleyd gets SIGKILL after
    kill_after acks. Returns (acks {(user, cmid): seq}, attempted keys)."""
    kill_after = KILL_AFTER_ACKS[(rnd - 1) % len(KILL_AFTER_ACKS)]
    clients = [await Client.open(u) for u in members]
    acks = {}
    attempted = []
    killed = asyncio.Event()
    windows = {c.user.name: asyncio.Semaphore(WINDOW) for c in clients}

    async def sender(c):
        win = windows[c.user.name]
        for k in range(PER_SENDER):
            await asyncio.wait_for(win.acquire(), T)
            if killed.is_set():
                return
            cmid = f"r{rnd}-{c.user.name}-{k}"
            attempted.append((c.user.name, cmid))
            try:
                await c.send({"type": "send", "conv": gid, "cmid": cmid,
                              "body": body_of(c.user.name, cmid)})
            except Exception:  # the server is gone
                return

    def kill():
        if not killed.is_set():
            srv.expect_exit = True
            srv.proc.kill()  # SIGKILL
            killed.set()
            for w in windows.values():  # unblock the senders
                for _ in range(WINDOW + 1):
                    w.release()

    async def reader(c):
        for _ in range(100000):
            try:
                f = await c.next(T)
            except Exception:  # closed by the kill
                break
            if f["type"] == "ack":
                key = (c.user.name, f["cmid"])
                assert key not in acks, f"second ack for {key}: {f}"
                assert not f.get("duplicate"), f
                acks[key] = f["seq"]
                windows[c.user.name].release()
                if len(acks) >= kill_after:
                    kill()
            elif f["type"] == "error":
                kill()
                raise AssertionError(f"error frame while streaming: {f}")
        kill()

    readers = [asyncio.create_task(reader(c)) for c in clients]
    try:
        await asyncio.gather(*(sender(c) for c in clients))
        await asyncio.gather(*readers)
    finally:
        kill()
        for c in clients:
            await c.close()
    return acks, attempted


def check_store(user, gid, expect_at, all_sent):
    """History: gapless, every acknowledged message at its seq once, every
    stored message one that was sent, no (from, cmid) twice."""
    hist = history(user, gid)
    seqs = [m["seq"] for m in hist]
    assert seqs == list(range(1, len(hist) + 1)), "seqs are not gapless 1..N"
    assert conv_get(user, gid)["last_seq"] == len(hist)
    by_key = {}
    for m in hist:
        key = (m["from"], m["cmid"])
        assert key not in by_key, f"{key} stored twice: seqs {by_key[key]} and {m['seq']}"
        by_key[key] = m["seq"]
        assert key in all_sent, f"stored message that nobody sent: {m}"
        assert m["body"] == body_of(*key), m
    lost = {k: s for k, s in expect_at.items() if by_key.get(k) != s}
    assert not lost, (f"{len(lost)} acknowledged messages missing or moved, e.g. "
                      f"{list(lost.items())[:5]} -> {[by_key.get(k) for k in list(lost)[:5]]}")
    return by_key


async def resend(members, gid, keys, known):
    """Resends (user, cmid) keys; returns {key: (seq, duplicate)}."""
    out = {}
    by_user = {u.name: u for u in members}
    for name in sorted({k[0] for k in keys}):
        c = await Client.open(by_user[name])
        try:
            mine = [k for k in keys if k[0] == name]
            for key in mine:
                await c.send({"type": "send", "conv": gid, "cmid": key[1],
                              "body": body_of(*key)})
            for key in mine:
                f = await c.wait(lambda f: f.get("type") in ("ack", "error") and
                                 (f.get("cmid") == key[1] or f.get("ref") == key[1]),
                                 what=f"ack of resent {key}")
                assert f["type"] == "ack", f
                out[key] = (f["seq"], bool(f.get("duplicate")))
                if key in known:
                    assert f.get("duplicate") is True and f["seq"] == known[key], (key, f, known[key])
        finally:
            await c.close()
    return out


def test_kill9_loses_no_acknowledged_message(parley):
    first = parley()
    data_dir = first.data_dir
    members = users(first, SENDERS)
    gid = group(members[0], members[1:], name="crash")
    srv = first
    acked = {}      # every acknowledged (user, cmid) -> seq, all rounds
    all_sent = set()
    for rnd in range(1, ROUNDS + 1):
        acks, attempted = arun(stream_and_kill(srv, members, gid, rnd))
        assert srv.wait(10) is not None, "the killed server did not exit"
        acked.update(acks)
        all_sent.update(attempted)
        assert len(acks) >= KILL_AFTER_ACKS[rnd - 1]
        assert len(acks) < SENDERS * PER_SENDER, "killed after the stream ended"
        # Restart on the same data directory; tokens survive too.
        srv = parley(data_dir=data_dir)
        for u in members:
            u.srv = srv
        stored = check_store(members[rnd % SENDERS], gid, acked, all_sent)
        print(f"round {rnd}: attempted {len(attempted)}, acked {len(acks)}, stored "
              f"{sum(1 for k in attempted if k in stored)}")
        # Resend everything not acknowledged (some of it may be stored
        # already), plus a few acknowledged ones.
        unacked = [k for k in attempted if k not in acks]
        sample = list(acks)[:10]
        got = arun(resend(members, gid, unacked + sample, acked))
        for key, (seq, dup) in got.items():
            if key in stored:
                assert dup and seq == stored[key], (key, seq, dup, stored[key])
            acked[key] = seq
        stored = check_store(members[0], gid, acked, all_sent)
        assert set(stored) == {k for k in all_sent}, "a resent message is missing"
    # The last server stops cleanly and everything is still there after it.
    assert srv.kill() == 0, srv.log()
    srv = parley(data_dir=data_dir)
    for u in members:
        u.srv = srv
    final = check_store(members[1], gid, acked, all_sent)
    assert len(final) == len(all_sent)
