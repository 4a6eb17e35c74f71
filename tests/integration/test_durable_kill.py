"""The durable path under kill -9: many rounds on one data directory.

Four users stream messages concurrently over WebSockets on a group and
three direct conversations (nine sender streams, each with a window of
unacknowledged messages) while they move their read and delivered cursors;
parleyd gets SIGKILL at varied points (before any ack, after a few, mid
stream, right after a burst whose acks all came back, and right after a
restart) and is restarted on the same data directory. After each restart:

  * every acknowledged message is stored exactly once at its acked seq, with
    its body; seqs are gapless 1..last_seq and last_seq is the count;
    nothing is stored that nobody sent; the messages of one stream that are
    stored keep the order they were sent in;
  * resending the unacknowledged cmids (and a sample of acknowledged ones)
    stores each once: a cmid already stored gets its original seq back with
    "duplicate", one that was not gets a new seq; a second resend is a
    duplicate of the first; an acknowledged cmid with another body is
    refused (cmid_reused) and stores nothing;
  * cursors (docs/protocol.md: per-member cursors that only move forward; a
    crash may lose the last moments of cursor movement, never a message):
    delivered >= read, both at most last_seq, never below what an earlier
    restart read back, and never below a value the server confirmed (a
    `receipt` frame, or the ack of the user's own message) at least
    CURSOR_GRACE before the kill.
"""

import asyncio
import time
import zlib

from websockets.exceptions import ConnectionClosed

from parley_client import (SLOW, T, Client, arun, close_all, conv_get, cursors, direct, group,
                           history, receipts, users)

# A cursor confirmed this long before a kill must survive it ("about one
# round"): the crash may lose only the last moments of cursor movement.
CURSOR_GRACE = 1.0 * SLOW
WINDOW = 8          # unacknowledged sends per stream while streaming
PER_STREAM = 60     # sends per stream and round at most (the kill comes first)
BURST = 20          # a burst: every stream sends this many at once (<= 64 per connection)
READ_EVERY = 7      # a client sends `read` after this many msg frames of a conversation
DELIVERED_EVERY = 3  # ... and `delivered` after this many

# One round per entry: (kind, n, restart_kill). kind: "sent" kills once n
# sends are written (before or at the first acks), "acks" once n acks came
# back, "burst" right after every ack of a burst of n per stream, "paced"
# after n seconds of a paced stream (cursors confirmed early in it are older
# than CURSOR_GRACE at the kill). restart_kill: the restarted server is
# killed again at once (replay and applier catch-up), then restarted.
SCHEDULE = [
    ("sent", 9, False), ("acks", 1, False), ("acks", 40, False), ("burst", BURST, True),
    ("acks", 150, False), ("paced", 1.3, False), ("acks", 5, False), ("sent", 30, True),
    ("acks", 260, False), ("burst", BURST, False), ("acks", 70, False), ("sent", 1, False),
    ("acks", 200, True), ("acks", 15, False), ("burst", BURST, True), ("acks", 100, False),
    ("paced", 1.3, False), ("acks", 2, False), ("acks", 320, False), ("burst", BURST, False),
    ("acks", 30, False), ("sent", 60, False),
]
KILLS = len(SCHEDULE) + sum(1 for s in SCHEDULE if s[2])  # 26 kills in all

USERS = ("a", "b", "c", "d")
CONVS = {"g": None, "ab": ("a", "b"), "bd": ("b", "d"), "cd": ("c", "d")}  # None: the group
STREAMS = [("a", "g"), ("b", "g"), ("c", "g"), ("a", "ab"), ("b", "ab"), ("b", "bd"),
           ("d", "bd"), ("c", "cd"), ("d", "cd")]


def body_for(cmid):
    """The body of a cmid (the same JSON text on every resend), of varied
    sizes so that records of many lengths are torn by the kills."""
    h = zlib.crc32(cmid.encode())
    pad = 6000 if h % 17 == 0 else (h % 5) * 200
    return {"c": cmid, "pad": "x" * pad}


class World:
    """What the test knows across rounds."""

    def __init__(self, srv, us, conv_ids):
        self.srv = srv
        self.us = us                  # name -> User
        self.conv = conv_ids          # short name -> id
        self.members = {cid: [n for n in USERS if CONVS[k] is None or n in CONVS[k]]
                        for k, cid in conv_ids.items()}
        self.sent = {}                # cmid -> (user, conv id, body): every send attempted
        self.acked = {}               # cmid -> seq
        self.floor = {}               # (conv, username) -> (delivered, read) read after a restart
        self.conf = []                # (t, conv, username, delivered, read) confirmed since

    def point_at(self, srv):
        self.srv = srv
        for u in self.us.values():
            u.srv = srv


async def stream_round(w, rnd, kind, n):
    """One round of concurrent streams, ended by SIGKILL. Returns (acks
    {cmid: seq}, attempted {stream: [cmid...]}, kill time, errors)."""
    srv = w.srv
    clients = {}
    for name in USERS:
        clients[name] = await Client.open(w.us[name])
    per_stream = BURST if kind == "burst" else PER_STREAM
    window = BURST if kind == "burst" else WINDOW
    pace = 0.03 if kind == "paced" else 0.0
    windows = {s: asyncio.Semaphore(window) for s in STREAMS}
    stream_of = {}
    attempted = {s: [] for s in STREAMS}
    acks = {}
    errors = []
    killed = asyncio.Event()
    state = {"sent": 0, "kill_t": None, "why": None}
    total = per_stream * len(STREAMS)

    def kill(why):
        if killed.is_set():
            return
        srv.expect_exit = True
        srv.proc.kill()  # SIGKILL
        state["kill_t"] = time.monotonic()
        state["why"] = why
        killed.set()
        for sem in windows.values():  # unblock the senders
            for _ in range(window + 1):
                sem.release()

    async def sender(s):
        user, ck = s
        c = clients[user]
        cid = w.conv[ck]
        for k in range(per_stream):
            await asyncio.wait_for(windows[s].acquire(), T)
            if pace:
                await asyncio.sleep(pace)
            if killed.is_set():
                return
            cmid = f"r{rnd}.{user}.{ck}.{k}"
            body = body_for(cmid)
            w.sent[cmid] = (user, cid, body)
            stream_of[cmid] = s
            attempted[s].append(cmid)
            try:
                await c.send({"type": "send", "conv": cid, "cmid": cmid, "body": body})
            except (ConnectionClosed, OSError):
                return
            state["sent"] += 1
            if kind == "sent" and state["sent"] >= n:
                kill("sent")

    async def cursor(c, typ, cid, seq):
        if killed.is_set():
            return
        try:
            await c.send({"type": typ, "conv": cid, "seq": seq})
        except (ConnectionClosed, OSError):
            pass

    async def reader(name):
        c = clients[name]
        high, seen, last_rcpt = {}, {}, {}
        for _ in range(1_000_000):
            try:
                f = await c.next(T)
            except (ConnectionClosed, OSError):
                break
            except asyncio.TimeoutError:
                if not killed.is_set():
                    errors.append(f"{name}: no frame for {T}s while streaming")
                    kill("stalled")
                break
            now = time.monotonic()
            t = f.get("type")
            if t == "ack":
                cmid = f.get("cmid")
                if cmid in acks or f.get("duplicate") or cmid not in stream_of:
                    errors.append(f"unexpected ack (second, duplicate or unknown): {f}")
                    continue
                acks[cmid] = f["seq"]
                w.conf.append((now, f["conv"], w.us[name].name, f["seq"], f["seq"]))
                windows[stream_of[cmid]].release()
                if kind == "acks" and len(acks) >= n:
                    kill("acks")
                elif kind == "burst" and len(acks) >= total:
                    kill("burst acked")
                elif len(acks) >= total:
                    kill("stream ended")
            elif t == "msg":
                cid = f["conv"]
                high[cid] = max(high.get(cid, 0), f["seq"])
                seen[cid] = seen.get(cid, 0) + 1
                if seen[cid] % READ_EVERY == 0:
                    await cursor(c, "read", cid, high[cid])
                elif seen[cid] % DELIVERED_EVERY == 0:
                    await cursor(c, "delivered", cid, high[cid])
            elif t == "receipt":
                key = (f["conv"], f["user"])
                cur = (f["delivered"], f["read"])
                prev = last_rcpt.get(key, (0, 0))
                if cur[0] < prev[0] or cur[1] < prev[1]:
                    errors.append(f"{name}: receipt went backwards {prev} -> {f}")
                last_rcpt[key] = cur
                w.conf.append((now, f["conv"], f["user"], cur[0], cur[1]))
            elif t == "error":
                errors.append(f"{name}: error frame while streaming: {f}")
                kill("error")

    async def timer():
        await asyncio.sleep(n)
        kill("paced")

    readers = [asyncio.create_task(reader(u)) for u in USERS]
    extra = [asyncio.create_task(timer())] if kind == "paced" else []
    try:
        await asyncio.gather(*(sender(s) for s in STREAMS))
        await asyncio.wait_for(killed.wait(), T)
        await asyncio.gather(*readers)
    finally:
        kill("end of round")
        for x in extra:
            x.cancel()
        await close_all(clients.values())
    if state["why"] != {"sent": "sent", "acks": "acks", "burst": "burst acked",
                        "paced": "paced"}[kind]:
        errors.append(f"round {rnd}: killed by {state['why']!r}, not by its {kind} point")
    return acks, attempted, state["kill_t"], errors


def check_store(w):
    """Every conversation's history against what was sent and acked;
    returns ({cmid: seq} stored, {conv: last_seq})."""
    stored, last = {}, {}
    for k, cid in sorted(w.conv.items()):
        viewer = w.us[w.members[cid][len(stored) % len(w.members[cid])]]
        hist = history(viewer, cid)
        seqs = [m["seq"] for m in hist]
        assert seqs == list(range(1, len(hist) + 1)), f"conv {k}: seqs are not gapless 1..N"
        last[cid] = conv_get(viewer, cid)["last_seq"]
        assert last[cid] == len(hist), f"conv {k}: last_seq {last[cid]} with {len(hist)} stored"
        for m in hist:
            cmid = m["cmid"]
            assert cmid in w.sent, f"conv {k}: stored a message nobody sent: {m}"
            user, c, body = w.sent[cmid]
            assert (m["from"], c, m["body"]) == (w.us[user].name, cid, body), (m, w.sent[cmid])
            assert cmid not in stored, f"{cmid} stored twice: seqs {stored[cmid]} and {m['seq']}"
            stored[cmid] = m["seq"]
    lost = {c: s for c, s in w.acked.items() if stored.get(c) != s}
    assert not lost, (f"{len(lost)} acknowledged messages missing or moved, e.g. "
                      f"{sorted(lost.items())[:5]} -> {[stored.get(c) for c in sorted(lost)[:5]]}")
    return stored, last


def check_cursors(w, last, kill_t):
    """Read back every member's cursors after a restart (see the module
    docstring); they become the new floor."""
    old = {}
    for t, cid, user, dl, rd in w.conf:
        if kill_t - t >= CURSOR_GRACE:
            p = old.get((cid, user), (0, 0))
            old[(cid, user)] = (max(p[0], dl), max(p[1], rd))
    for k, cid in sorted(w.conv.items()):
        got = cursors(receipts(w.us[w.members[cid][0]], cid))
        assert set(got) == {w.us[n].name for n in w.members[cid]}, (k, got)
        for user, (dl, rd) in got.items():
            assert rd <= dl <= last[cid], \
                f"conv {k} {user}: read {rd} delivered {dl} last_seq {last[cid]}"
            fl = w.floor.get((cid, user), (0, 0))
            assert dl >= fl[0] and rd >= fl[1], \
                f"conv {k} {user}: cursors ({dl}, {rd}) went back from ({fl[0]}, {fl[1]})"
            o = old.get((cid, user), (0, 0))
            assert dl >= o[0] and rd >= o[1], \
                (f"conv {k} {user}: cursors ({dl}, {rd}) lost ({o[0]}, {o[1]}), confirmed at "
                 f"least {CURSOR_GRACE}s before the kill")
            w.floor[(cid, user)] = (dl, rd)
    w.conf = []


async def resend(w, rnd, cmids, stored, last, twice):
    """Resends cmids (same body) on one connection per user; checks every
    answer (see the module docstring); returns {cmid: seq}."""
    out = {}

    async def one_user(name, mine):
        c = await Client.open(w.us[name])
        try:
            for i in range(0, len(mine), 40):  # at most 64 frames in flight
                part = mine[i:i + 40]
                for cmid in part:
                    _, cid, body = w.sent[cmid]
                    await c.send({"type": "send", "conv": cid, "cmid": cmid, "body": body})
                got = await c.answers(part)
                now = time.monotonic()
                for cmid in part:
                    f = got[cmid]
                    assert f["type"] == "ack", f"resend of {cmid} refused: {f}"
                    if cmid in stored:
                        assert f.get("duplicate") is True and f["seq"] == stored[cmid], \
                            (cmid, f, stored[cmid])
                    else:
                        cid = w.sent[cmid][1]
                        assert not f.get("duplicate") and f["seq"] > last[cid], \
                            f"{cmid} was not in history after the restart, yet: {f}"
                        w.conf.append((now, cid, w.us[name].name, f["seq"], f["seq"]))
                    out[cmid] = f["seq"]
            again = [cm for cm in mine if cm in twice]
            for cmid in again:
                _, cid, body = w.sent[cmid]
                await c.send({"type": "send", "conv": cid, "cmid": cmid, "body": body})
            got = await c.answers(again)
            for cmid in again:
                f = got[cmid]
                assert f["type"] == "ack" and f.get("duplicate") is True and \
                    f["seq"] == out[cmid], f"second resend of {cmid}: {f}, first {out[cmid]}"
            # Bad input: an acknowledged cmid with another body stores nothing.
            if mine and rnd % 3 == 0:
                cmid = mine[0]
                _, cid, body = w.sent[cmid]
                await c.send({"type": "send", "conv": cid, "cmid": cmid,
                              "body": dict(body, pad="another body")})
                f = (await c.answers([cmid]))[cmid]
                assert f["type"] == "error" and f["code"] == "cmid_reused", f
        finally:
            await c.close()

    by_user = {}
    for cmid in cmids:
        by_user.setdefault(w.sent[cmid][0], []).append(cmid)
    await asyncio.gather(*(one_user(n, m) for n, m in sorted(by_user.items())))
    return out


def restart(w, parley, data_dir):
    srv = parley(data_dir=data_dir)
    w.point_at(srv)
    return srv


def test_kill9_rounds_lose_nothing_acknowledged(parley):
    assert KILLS >= 20
    first = parley()
    data_dir = first.data_dir
    us = dict(zip(USERS, users(first, len(USERS))))
    conv_ids = {}
    for k, pair in CONVS.items():
        if pair is None:
            conv_ids[k] = group(us["a"], [us[n] for n in USERS[1:]], name="durable")
        else:
            conv_ids[k] = direct(us[pair[0]], us[pair[1]])
    w = World(first, us, conv_ids)
    kills = 0
    t_start = time.monotonic()
    for rnd, (kind, n, restart_kill) in enumerate(SCHEDULE, 1):
        srv = w.srv
        acks, attempted, kill_t, errors = arun(stream_round(w, rnd, kind, n))
        assert not errors, errors
        assert srv.wait(10 * SLOW) is not None, "the killed server did not exit"
        kills += 1
        w.acked.update(acks)
        n_att = sum(len(v) for v in attempted.values())
        assert n_att < PER_STREAM * len(STREAMS) or kind == "burst", "killed after the stream ended"
        srv = restart(w, parley, data_dir)
        if restart_kill:  # again at once: replay / applier catch-up
            srv.expect_exit = True
            srv.proc.kill()
            assert srv.wait(10 * SLOW) is not None
            kills += 1
            srv = restart(w, parley, data_dir)
        stored, last = check_store(w)
        for s, cms in attempted.items():  # one stream's stored messages keep the send order
            seqs = [stored[cm] for cm in cms if cm in stored]
            assert seqs == sorted(seqs), f"stream {s}: stored out of send order: {seqs}"
        check_cursors(w, last, kill_t)
        unacked = [cm for cms in attempted.values() for cm in cms if cm not in acks]
        sample = [cms[0] for cms in attempted.values() if cms and cms[0] in acks]
        twice = set(unacked[::2]) if rnd % 2 else set(unacked)
        print(f"round {rnd} {kind} {n}: attempted {n_att}, acked {len(acks)}, unacked stored "
              f"{sum(1 for cm in unacked if cm in stored)}/{len(unacked)}")
        got = arun(resend(w, rnd, unacked + sample, stored, last, twice))
        w.acked.update(got)
        stored, _ = check_store(w)
        assert set(stored) == set(w.sent), "a resent message is missing"
    print(f"{kills} kills in {time.monotonic() - t_start:.1f}s, {len(w.acked)} messages")
    assert kills == KILLS
    # The last server stops cleanly, and everything is there after it.
    assert w.srv.kill() == 0, w.srv.log()
    restart(w, parley, data_dir)
    stored, last = check_store(w)
    assert set(stored) == set(w.sent)
    check_cursors(w, last, time.monotonic())
