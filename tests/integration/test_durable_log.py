"""The message log on disk (DATA_DIR/log/*.wal, format in src/store/wal.h)
under a real parleyd: what a restart does with the bytes it finds there.

Acked messages are made to live only in the log: the server runs with a
long --apply-delay (the applier waits that long before it writes logged
batches into LMDB) and gets SIGKILL right after the acks, before any read
could make it apply them. Then the test edits the log's bytes and restarts:

  * torn tail: bytes after the last acked batch are garbage, a partial
    record, or the file is cut inside one (also in a recycled segment that
    holds stale bytes); the server starts, logs the cut (file and offset)
    at warn, every acked message is there once at its seq, and appending
    resumes over the cut (a later kill and restart keep the new message
    too). A message in flight at the kill may or may not be there, once,
    and its resend is stored once. A file cut right after a record (or
    less than a header past it) is a full segment: no cut;
  * corrupt middle: one flipped byte in an early record with valid records
    after it (or a bad length in a segment with a later segment holding
    records); parleyd refuses to start (exit 1), its log names the segment
    file and the record's byte offset, nothing in the data directory
    changes; with the byte restored it starts and has every acked message.
    So does a record with a valid checksum whose entries do not decode;
  * replay: the restarted server shows every acked message and cursor
    (history, inbox, receipts) and says it replayed the log; a second
    restart replays nothing and is still right; resends answer with the
    original seq (or cmid_reused);
  * a store without its log directory (removed, or emptied, after a clean
    stop) starts with a warning, serves what the store holds and starts a
    new log that a kill -9 does not lose;
  * bad input: garbage files named like segments in an empty data
    directory: a cut warning and a working server, or (a lone segment that
    does not start the log, a directory, a garbage log behind a store that
    is ahead of it, a log path that is a file) a refusal with a clear
    message; never a crash. A missing segment in the middle is refused too.

The log is parsed here independently of the server (CRC-32C of the LSN
and payload), with 1 MiB segments (--log-segment) to keep files small.
"""

import os
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from parley_client import (HOST, PARLEY_WEB, PARLEYD, SLOW, START_TIMEOUT, Client, User, arun,
                           conv_get, cursors, direct, flood_sends, history, inbox, receipts,
                           register)

SEGMENT = 1 << 20                  # --log-segment: the smallest
FLAGS = ("--apply-delay", "10000", "--log-segment", str(SEGMENT))
RECORD_MAX = 16 << 20              # WAL_RECORD_MAX
N = 6                              # acked messages of a round
SEG_NAME = re.compile(r"^[0-9a-f]{16}\.wal$")

# ---- the log format (independent of the server's code) ----------------------

_CRC_TAB = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TAB.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _CRC_TAB[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def pad8(n):
    return (n + 7) & ~7


def record_crc(lsn, payload):
    return crc32c(struct.pack("<Q", lsn) + payload)


def marker_crc(lsn, nxt):
    return crc32c(struct.pack("<Q", lsn) + struct.pack("<Q", nxt))


class Rec:
    """One valid record: its file, byte offset in it, LSN, payload, entries."""

    def __init__(self, path, offset, lsn, payload):
        self.path, self.offset, self.lsn, self.payload = path, offset, lsn, payload
        self.entries = decode_entries(payload)

    @property
    def end(self):
        return self.offset + 8 + pad8(len(self.payload))

    def seqs(self):
        return [e["seq"] for e in self.entries if e["kind"] == 1]


def decode_entries(p):
    """The logrec entries (src/store/logrec.h) of one record's payload."""
    out, o = [], 0
    while o < len(p):
        k = p[o]
        if k == 1:
            conv, seq, frm, ts, ver = struct.unpack_from("<QQQqQ", p, o + 1)
            cl = p[o + 41]
            bl = struct.unpack_from("<I", p, o + 42)[0]
            cmid = p[o + 46:o + 46 + cl].decode()
            body = p[o + 46 + cl:o + 46 + cl + bl]
            out.append({"kind": 1, "conv": conv, "seq": seq, "from": frm, "ts": ts, "cmid": cmid,
                        "body": body, "at": o, "len": 46 + cl + bl})
            o += 46 + cl + bl
        elif k == 2:
            conv, uid, dl, rd, ver = struct.unpack_from("<QQQQQ", p, o + 1)
            out.append({"kind": 2, "conv": conv, "uid": uid, "delivered": dl, "read": rd})
            o += 41
        elif k == 3:
            uid, ts = struct.unpack_from("<Qq", p, o + 1)
            out.append({"kind": 3, "uid": uid, "ts": ts})
            o += 17
        else:
            raise AssertionError(f"unknown log entry kind {k} at {o}: {p[o:o + 16].hex()}")
    return out


def segments(log_dir):
    """[(start LSN, path)] of the segment files, in LSN order."""
    out = [(int(n[:16], 16), Path(log_dir) / n) for n in os.listdir(log_dir) if SEG_NAME.match(n)]
    return sorted(out)


def scan(log_dir):
    """Reads the log as the format says: (records, (path, offset)) where
    offset is the first byte of the last segment read that is not a valid
    record (the end of the log: where a marker or anything else is)."""
    recs = []
    segs = segments(log_dir)
    end = None
    for i, (start, path) in enumerate(segs):
        data = path.read_bytes()
        size = len(data) & ~7
        nxt = segs[i + 1][0] if i + 1 < len(segs) else start + len(data)
        pos = 0
        stop = False
        while pos + 8 <= size:
            ln, crc = struct.unpack_from("<II", data, pos)
            if ln == 0:
                if crc == marker_crc(start + pos, nxt):
                    break                       # end of segment: the next one follows
                stop = True                     # end of log (or a torn header)
                break
            if ln > RECORD_MAX or pos + 8 + pad8(ln) > size:
                stop = True
                break
            payload = data[pos + 8:pos + 8 + ln]
            if record_crc(start + pos, payload) != crc:
                stop = True
                break
            recs.append(Rec(path, pos, start + pos, payload))
            pos += 8 + pad8(ln)
        end = (path, pos)
        if stop:
            break
    return recs, end


def patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def snapshot(data_dir):
    """{relative path: bytes} of every file of the data directory but the
    lock files (LOCK holds the pid of the last opener, lock.mdb is LMDB's
    reader table: both are rewritten by any open)."""
    out = {}
    for root, _, files in os.walk(data_dir):
        for n in files:
            p = Path(root) / n
            rel = str(p.relative_to(data_dir))
            if rel in ("LOCK", "lock.mdb"):
                continue
            out[rel] = p.read_bytes()
    return out


# ---- server runs --------------------------------------------------------------

CUT_RE = re.compile(r'msg="torn tail of the message log: cut" file="?([^"\s]+)"? '
                    r'offset=(\d+) lsn=(\d+)')
CORRUPT_RE = re.compile(r'msg="corrupt record in the message log: not starting" '
                        r'file="?([^"\s]+)"? offset=(\d+) lsn=(\d+) len=(\d+) reason="([^"]*)"')
REPLAY_RE = re.compile(r'msg="replayed the log into the store" records=(\d+) from=(\d+) to=(\d+)')
NOLOG_RE = re.compile(r'msg="the store has no message log: starting a new one" '
                      r'dir="?([^"\s]+)"? log_applied=(\d+)')


def kill9(srv):
    srv.expect_exit = True
    srv.proc.kill()
    srv.proc.wait(timeout=10)


def refused_start(data_dir, *flags):
    """Runs parleyd on data_dir expecting a refusal: (exit status, stderr).
    Fails if it starts listening (it is then killed by the timeout)."""
    argv = [PARLEYD, "--port", "0", "--listen", HOST, "--data-dir", str(data_dir), "--web-dir",
            PARLEY_WEB, "--threads", "2", *flags]
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=START_TIMEOUT * 2)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"parleyd started (or hung) instead of refusing; "
                             f"stdout={e.stdout!r} stderr={e.stderr!r}")
    return r.returncode, r.stderr.decode(errors="replace")


def on(srv, *us):
    """The users' sessions pointed at a (restarted) server."""
    return [User(srv, u.name, u.token, u.device) for u in us]


def body_of(cmid, pad=0):
    return {"t": f"text of {cmid}", "pad": "x" * pad}


async def send_acked(user, conv, cmids, pad=0, kill=None):
    """Sends each cmid in turn (each waits for its ack: one log record
    each); returns {cmid: (seq, body)}. kill: a server to SIGKILL before
    the WebSocket closes (a close logs its user's last_seen: the log then
    ends with the last ack's record)."""
    c = await Client.open(user)
    out = {}
    try:
        for cm in cmids:
            b = body_of(cm, pad)
            f = await c.send_msg(conv, cm, b)
            assert f["type"] == "ack", f
            out[cm] = (f["seq"], b)
    finally:
        if kill is not None:
            kill9(kill)
        await c.close()
    return out


def check_history(user, conv, acked, maybe=()):
    """Every acked message once at its seq with its body; seqs gapless;
    nothing else but the `maybe` cmids (in flight at a kill)."""
    msgs = history(user, conv)
    assert [m["seq"] for m in msgs] == list(range(1, len(msgs) + 1)), msgs
    by = {}
    for m in msgs:
        assert m["cmid"] not in by, f"{m['cmid']} stored twice: {by[m['cmid']]} and {m}"
        by[m["cmid"]] = m
    for cm, (seq, body) in acked.items():
        assert cm in by, f"acked {cm} (seq {seq}) is missing; stored: {sorted(by)}"
        assert by[cm]["seq"] == seq and by[cm]["body"] == body, (cm, seq, by[cm])
    extra = set(by) - set(acked)
    assert extra <= set(maybe), f"stored but never acked nor in flight: {extra}"
    return msgs


def chat_setup(parley, *flags):
    """A server, alice and bob, their direct conversation."""
    srv = parley(*FLAGS, *flags)
    a, b = register(srv), register(srv)
    return srv, a, b, direct(a, b)


def replayed(srv):
    """The number of records this start replayed (its log line), or None."""
    m = REPLAY_RE.search(srv.log(tail=100000))
    return int(m.group(1)) if m else None


def assert_replayed(srv, at_least=1):
    """What this start was given was only in the log: it replayed it. The
    acks came well within --apply-delay (10 s) before the kill; a build
    slowed down by PARLEY_TEST_SLOW may take longer, so there only the
    outcome (every acked message) is checked."""
    if SLOW > 1:
        return
    n = replayed(srv)
    assert n is not None and n >= at_least, \
        f"replayed {n} records, want {at_least}: the acks were not only in the log\n{srv.log()}"


# ---- torn tail --------------------------------------------------------------

TORN = ["garbage_after_end", "partial_record", "file_cut_inside_record", "in_flight_at_kill"]


@pytest.mark.parametrize("how", TORN)
def test_torn_tail_is_cut_and_acked_messages_survive(parley, how):
    srv, a, b, conv = chat_setup(parley)
    cmids = [f"m{i}" for i in range(N)]

    async def go():
        if how != "in_flight_at_kill":
            return await send_acked(a, conv, cmids, kill=srv)
        c = await Client.open(a)
        acked = {}
        try:
            for cm in cmids:
                f = await c.send_msg(conv, cm, body_of(cm))
                assert f["type"] == "ack", f
                acked[cm] = (f["seq"], body_of(cm))
            await c.send({"type": "send", "conv": conv, "cmid": "late", "body": body_of("late")})
        finally:
            kill9(srv)
            await c.close()
        return acked

    acked = arun(go())
    log_dir = Path(srv.data_dir) / "log"
    recs, (end_path, end) = scan(log_dir)
    assert len(segments(log_dir)) == 1
    assert [s for r in recs for s in r.seqs()][:N] == list(range(1, N + 1)), \
        "the acked messages are not in the log"
    seg = end_path
    want_cut = None
    if how == "garbage_after_end":
        rnd = random.Random(7)
        patch(seg, end, bytes(rnd.randrange(256) for _ in range(4096)))
        want_cut = end
    elif how in ("partial_record", "file_cut_inside_record"):
        # A record for seq N+1 (the last one's entry with another seq and
        # cmid) with its header and checksum, of which only the first part
        # of the payload reached the disk.
        last = recs[-1]
        e = [x for x in last.entries if x["kind"] == 1][-1]
        p = bytearray(last.payload[e["at"]:e["at"] + e["len"]])
        struct.pack_into("<Q", p, 9, N + 1)
        p[46:46 + len(e["cmid"])] = b"t" * len(e["cmid"])
        p = bytes(p)
        hdr = struct.pack("<II", len(p), record_crc(end, p))
        patch(seg, end, hdr + p[:len(p) // 2])
        if how == "file_cut_inside_record":
            os.truncate(seg, end + 8 + len(p) // 2)
        want_cut = end

    srv2 = parley(*FLAGS, data_dir=srv.data_dir)
    a2, = on(srv2, a)
    log = srv2.log(tail=100000)
    assert_replayed(srv2)
    cuts = CUT_RE.findall(log)
    if want_cut is not None:
        assert cuts, f"no cut logged\n{log}"
        f, off, lsn = cuts[0]
        assert Path(f) == seg and int(off) == want_cut and int(lsn) == want_cut, (cuts, seg, end)
    maybe = ["late"] if how == "in_flight_at_kill" else []
    msgs = check_history(a2, conv, acked, maybe)
    if how == "in_flight_at_kill":
        # the client resends what had no ack: stored once either way
        stored = {m["cmid"]: m["seq"] for m in msgs}

        async def resend():
            c = await Client.open(a2)
            try:
                return await c.send_msg(conv, "late", body_of("late"))
            finally:
                await c.close()
        f = arun(resend())
        assert f["type"] == "ack", f
        if "late" in stored:
            assert f.get("duplicate") is True and f["seq"] == stored["late"], (f, stored)
        else:
            assert not f.get("duplicate") and f["seq"] == len(msgs) + 1, (f, stored)
            msgs.append({"cmid": "late", "seq": f["seq"]})
        acked["late"] = (f["seq"], body_of("late"))

    # Appending resumes where the log was cut: a new message survives the
    # next kill, and what the cut left behind never comes back.
    after = arun(send_acked(a2, conv, ["after"], kill=srv2))
    assert after["after"][0] == len(msgs) + 1, after
    srv3 = parley(*FLAGS, data_dir=srv.data_dir)
    log3 = srv3.log(tail=100000)
    assert not CUT_RE.search(log3), f"a cut again after a clean append:\n{log3}"
    a3, = on(srv3, a)
    check_history(a3, conv, {**acked, **after}, maybe)


@pytest.mark.parametrize("tail", [b"", b"\xff\xfe\xfd"], ids=["at_record_end", "3_bytes_more"])
def test_log_cut_at_a_record_end_is_a_full_segment(parley, tail):
    """A last segment file that ends right after its last record (the
    end-of-log marker cut off, or cut to less than a header) is a segment
    whose records reach its end (its size rounded down to 8): no cut, every
    message there, and the next append starts the next segment (named by
    its LSN)."""
    srv, a, b, conv = chat_setup(parley)
    acked = arun(send_acked(a, conv, [f"m{i}" for i in range(N)], kill=srv))
    log_dir = Path(srv.data_dir) / "log"
    recs, (seg, end) = scan(log_dir)
    os.truncate(seg, end)
    with open(seg, "ab") as f:
        f.write(tail)
    srv2 = parley(*FLAGS, data_dir=srv.data_dir)
    assert not CUT_RE.search(srv2.log(tail=100000)), srv2.log()
    a2, = on(srv2, a)
    check_history(a2, conv, acked)
    after = arun(send_acked(a2, conv, ["after"], kill=srv2))
    assert (log_dir / f"{end:016x}.wal").exists(), sorted(os.listdir(log_dir))
    srv3 = parley(*FLAGS, data_dir=srv.data_dir)
    a3, = on(srv3, a)
    check_history(a3, conv, {**acked, **after})


# ---- corrupt middle -----------------------------------------------------------

@pytest.mark.parametrize("where", ["payload", "crc"])
def test_corrupt_middle_record_refuses_to_start_and_changes_nothing(parley, where):
    srv, a, b, conv = chat_setup(parley)
    acked = arun(send_acked(a, conv, [f"m{i}" for i in range(N)], kill=srv))
    data_dir = Path(srv.data_dir)
    recs, _ = scan(data_dir / "log")
    victim = next(r for r in recs if 2 in r.seqs())  # an early record, valid ones after it
    assert recs.index(victim) < len(recs) - 1
    at = victim.offset + (8 + len(victim.payload) // 2 if where == "payload" else 5)
    orig = victim.path.read_bytes()[at]
    patch(victim.path, at, bytes([orig ^ 0x10]))
    before = snapshot(data_dir)

    for attempt in range(2):  # refused every time: nothing was cut or repaired
        rc, err = refused_start(data_dir, *FLAGS)
        assert rc == 1, (rc, err)
        m = CORRUPT_RE.search(err)
        assert m, err
        assert Path(m.group(1)) == victim.path, (m.groups(), victim.path)
        assert int(m.group(2)) == victim.offset and int(m.group(3)) == victim.lsn, m.groups()
        assert m.group(5) == "a valid record follows it", m.groups()
        assert "cannot start" in err, err
        after = snapshot(data_dir)
        assert sorted(after) == sorted(before), (sorted(before), sorted(after))
        for k in before:
            assert after[k] == before[k], f"{k} changed by the refused start"

    patch(victim.path, at, bytes([orig]))
    srv2 = parley(*FLAGS, data_dir=data_dir)
    assert_replayed(srv2, len(recs))
    a2, = on(srv2, a)
    check_history(a2, conv, acked)


def test_bad_length_before_a_later_segment_refuses_to_start(parley):
    """A record whose length field is damaged so that it hides the rest of
    its segment is a torn tail only if nothing follows: with a later
    segment holding records it is corruption (the start is refused)."""
    srv, a, b, conv = chat_setup(parley)
    big = "x" * 12000
    acked = {}

    async def go():
        c = await Client.open(a)
        try:
            for k in range(4):  # ~1.2 MiB: the log moves to its second segment
                cms = [f"big{k}.{i}" for i in range(25)]
                await flood_sends(c, conv, cms, body=big)
                got = await c.answers(cms)
                for cm in cms:
                    assert got[cm]["type"] == "ack", got[cm]
                    acked[cm] = (got[cm]["seq"], big)
        finally:
            kill9(srv)
            await c.close()

    arun(go())
    data_dir = Path(srv.data_dir)
    segs = segments(data_dir / "log")
    assert len(segs) >= 2 and segs[1][0] == SEGMENT, segs
    recs, _ = scan(data_dir / "log")
    first = [r for r in recs if r.path == segs[0][1]]
    assert any(r.path == segs[1][1] for r in recs), "no record in the second segment"
    victim = first[len(first) // 2]
    orig = victim.path.read_bytes()[victim.offset:victim.offset + 4]
    patch(victim.path, victim.offset, struct.pack("<I", SEGMENT - victim.offset))  # past the end
    rc, err = refused_start(data_dir, *FLAGS)
    assert rc == 1, (rc, err)
    m = CORRUPT_RE.search(err)
    assert m, err
    assert Path(m.group(1)) == victim.path and int(m.group(2)) == victim.offset, m.groups()
    assert m.group(5) == "a later segment holds records", m.groups()
    patch(victim.path, victim.offset, orig)
    srv2 = parley(*FLAGS, data_dir=data_dir)
    a2, = on(srv2, a)
    check_history(a2, conv, acked)


# ---- replay -----------------------------------------------------------------

def test_replay_applies_acked_messages_and_cursors_once(parley):
    srv, a, b, conv = chat_setup(parley)
    acked = {}

    async def go():
        ca, cb = await Client.open(a), await Client.open(b)
        try:
            for i in range(N):
                who = cb if i in (1, 3) else ca
                cm = f"{who.user.name}.{i}"
                body = body_of(cm)
                f = await who.send_msg(conv, cm, body)
                assert f["type"] == "ack", f
                acked[cm] = (f["seq"], body)
            # bob (who sent seq 4, and so has read it) reads up to N-1,
            # confirmed by the receipt alice gets
            await cb.send({"type": "read", "conv": conv, "seq": N - 1})
            await ca.wait(lambda f: f.get("type") == "receipt" and f["user"] == b.name and
                          f["read"] == N - 1, what="bob's receipt")
        finally:
            kill9(srv)
            await ca.close()
            await cb.close()

    arun(go())
    srv2 = parley(*FLAGS, data_dir=srv.data_dir)
    assert_replayed(srv2)
    assert not CUT_RE.search(srv2.log(tail=100000)), srv2.log()

    def check(s):
        a2, b2 = on(s, a, b)
        check_history(a2, conv, acked)
        check_history(b2, conv, acked)
        cv = conv_get(b2, conv)
        assert (cv["last_seq"], cv["read_seq"], cv["unread"]) == (N, N - 1, 1), cv
        ib = {c["id"]: c for c in inbox(b2)["conversations"]}
        assert ib[conv]["last_seq"] == N and ib[conv]["read_seq"] == N - 1, ib[conv]
        ia = {c["id"]: c for c in inbox(a2)["conversations"]}
        assert (ia[conv]["last_seq"], ia[conv]["read_seq"]) == (N, N), ia[conv]  # sent seq N
        cur = cursors(receipts(a2, conv))
        assert cur[b.name] == (N - 1, N - 1) and cur[a.name] == (N, N), cur

    check(srv2)
    # A second kill and restart (no client wrote anything meanwhile: a
    # WebSocket's close would log its user's last_seen): the log past
    # log_applied is empty now.
    kill9(srv2)
    srv3 = parley(*FLAGS, data_dir=srv.data_dir)
    assert replayed(srv3) is None, f"a second replay:\n{srv3.log()}"
    check(srv3)

    # Resends after the replay: the original seq for the same body (the
    # cmids come from the replayed store), cmid_reused for another.
    async def resend():
        c = await Client.open(on(srv3, a)[0])
        try:
            cm = next(k for k in acked if k.startswith(a.name))
            f = await c.send_msg(conv, cm, acked[cm][1])
            assert f["type"] == "ack" and f.get("duplicate") is True, f
            assert f["seq"] == acked[cm][0], (f, acked[cm])
            f = await c.send_msg(conv, cm, {"t": "another body"})
            assert f["type"] == "error" and f["code"] == "cmid_reused", f
        finally:
            await c.close()
    arun(resend())
    check(srv3)
    # and the sequence continues
    arun(send_acked(on(srv3, a)[0], conv, ["next"]))
    assert history(on(srv3, a)[0], conv)[-1]["seq"] == N + 1


# ---- a store without its log --------------------------------------------------

@pytest.mark.parametrize("how", ["removed", "emptied"])
def test_store_without_its_log_starts_with_a_warning(parley, how):
    srv, a, b, conv = chat_setup(parley)
    acked = arun(send_acked(a, conv, [f"m{i}" for i in range(N)]))
    srv.kill()  # SIGTERM: a clean stop applies everything to the store
    assert srv.proc.returncode == 0, srv.log()
    log_dir = Path(srv.data_dir) / "log"
    if how == "removed":
        shutil.rmtree(log_dir)
    else:
        for n in os.listdir(log_dir):
            os.remove(log_dir / n)
    srv2 = parley(*FLAGS, data_dir=srv.data_dir)
    log = srv2.log(tail=100000)
    m = NOLOG_RE.search(log)
    assert m, log
    assert Path(m.group(1)) == log_dir and int(m.group(2)) > 0, m.groups()
    a2, b2 = on(srv2, a, b)
    check_history(a2, conv, acked)
    assert conv_get(b2, conv)["last_seq"] == N
    # a new log: its messages survive a kill -9
    after = arun(send_acked(a2, conv, ["after1", "after2"], kill=srv2))
    assert [s for s, _ in after.values()] == [N + 1, N + 2], after
    assert segments(log_dir), os.listdir(log_dir)
    srv3 = parley(*FLAGS, data_dir=srv.data_dir)
    log3 = srv3.log(tail=100000)
    assert not NOLOG_RE.search(log3), log3
    assert_replayed(srv3)
    check_history(on(srv3, a)[0], conv, {**acked, **after})


# ---- bad input: garbage segments --------------------------------------------

def _garbage(seed, n):
    rnd = random.Random(seed)
    return bytes(rnd.randrange(256) for _ in range(n))


@pytest.mark.parametrize("files", [
    {"0000000000000000.wal": (1, 4096)},
    {"0000000000000000.wal": (2, SEGMENT + 13)},
    {"0000000000000000.wal": (3, 7)},
    {"0000000000000000.wal": (4, 0)},
    {"0000000000000000.wal": (5, SEGMENT), "0000000000100000.wal": (6, SEGMENT)},
], ids=["4k", "segment_plus_13", "7_bytes", "empty", "two_segments"])
def test_garbage_segment_in_an_empty_data_dir_is_cut(parley, tmp_path, files):
    """The first record does not check: a torn tail at offset 0 (nothing
    valid follows), cut with a warning; the server works and keeps what it
    acks over a kill -9."""
    data_dir = tmp_path / "garbage"
    (data_dir / "log").mkdir(parents=True)
    for name, (seed, n) in files.items():
        (data_dir / "log" / name).write_bytes(_garbage(seed, n))
    srv = parley(*FLAGS, data_dir=data_dir)
    log = srv.log(tail=100000)
    seg0 = data_dir / "log" / "0000000000000000.wal"
    if files["0000000000000000.wal"][1] >= 8:
        cuts = CUT_RE.findall(log)
        assert cuts and Path(cuts[0][0]) == seg0 and cuts[0][1] == "0", log
    else:  # shorter than a header: an empty segment, nothing to cut
        assert not CUT_RE.search(log), log
    a, b = register(srv), register(srv)
    conv = direct(a, b)
    acked = arun(send_acked(a, conv, ["g1", "g2", "g3"], kill=srv))
    srv2 = parley(*FLAGS, data_dir=data_dir)
    assert not CUT_RE.search(srv2.log(tail=100000)), srv2.log()
    check_history(on(srv2, a)[0], conv, acked)


@pytest.mark.parametrize("name", ["0000000000100000.wal", "00000000000000ff.wal"])
def test_garbage_segment_not_at_the_start_is_refused(tmp_path, name):
    """A lone segment that does not start the log (its name is a later LSN)
    cannot hold the position an empty store starts from: refused with a
    message naming the log directory; nothing is written into the log."""
    data_dir = tmp_path / "garbage"
    (data_dir / "log").mkdir(parents=True)
    (data_dir / "log" / name).write_bytes(_garbage(9, 4096))
    before = (data_dir / "log" / name).read_bytes()
    rc, err = refused_start(data_dir, *FLAGS)
    assert rc == 1, (rc, err)
    assert "message log" in err and str(data_dir / "log") in err, err
    assert "cannot start" in err, err
    assert sorted(os.listdir(data_dir / "log")) == [name]
    assert (data_dir / "log" / name).read_bytes() == before


def test_garbage_log_behind_a_store_that_is_ahead_is_refused(parley):
    """After a clean stop the store holds the log's position; a log whose
    segment was replaced by garbage does not reach it: refused (the message
    names the log directory), nothing changed; removing the log directory
    (the README's restore step) starts a new log over the intact store."""
    srv, a, b, conv = chat_setup(parley)
    acked = arun(send_acked(a, conv, [f"m{i}" for i in range(N)]))
    srv.kill()
    assert srv.proc.returncode == 0, srv.log()
    data_dir = Path(srv.data_dir)
    (start, seg) = segments(data_dir / "log")[0]  # (the next one is prepared, empty)
    seg.write_bytes(_garbage(11, seg.stat().st_size))
    before = snapshot(data_dir)
    rc, err = refused_start(data_dir, *FLAGS)
    assert rc == 1, (rc, err)
    assert "message log" in err and str(data_dir / "log") in err, err
    assert snapshot(data_dir) == before, "the refused start changed the data directory"
    shutil.rmtree(data_dir / "log")
    srv2 = parley(*FLAGS, data_dir=data_dir)
    assert NOLOG_RE.search(srv2.log(tail=100000)), srv2.log()
    check_history(on(srv2, a)[0], conv, acked)


def test_directory_named_like_a_segment_is_refused(tmp_path):
    data_dir = tmp_path / "dirseg"
    (data_dir / "log" / "0000000000000000.wal").mkdir(parents=True)
    rc, err = refused_start(data_dir, *FLAGS)
    assert rc == 1, (rc, err)
    assert "cannot use a log segment" in err and "not a regular file" in err, err
    assert str(data_dir / "log" / "0000000000000000.wal") in err, err


@pytest.mark.parametrize("what", ["unknown_kind", "truncated_entry"])
def test_record_that_checks_but_does_not_decode_is_refused(parley, what):
    """A record with a valid checksum whose entries do not decode (only a
    bug or another format writes one): the start is refused with its LSN,
    the store is left as it was (the replay transaction is dropped), and
    without that record the server starts with every acked message."""
    srv, a, b, conv = chat_setup(parley)
    acked = arun(send_acked(a, conv, [f"m{i}" for i in range(N)], kill=srv))
    data_dir = Path(srv.data_dir)
    recs, (seg, end) = scan(data_dir / "log")
    p = b"\x09" + bytes(40) if what == "unknown_kind" else recs[-1].payload[:-3]
    orig = seg.read_bytes()[end:end + 8 + pad8(len(p))]
    patch(seg, end, struct.pack("<II", len(p), record_crc(end, p)) + p)
    before = snapshot(data_dir)
    rc, err = refused_start(data_dir, *FLAGS)
    assert rc == 1, (rc, err)
    assert re.search(rf'msg="a log record does not decode" lsn={end} ', err), err
    assert "cannot start" in err, err
    assert snapshot(data_dir) == before, "the refused start changed the data directory"
    patch(seg, end, orig)
    srv2 = parley(*FLAGS, data_dir=data_dir)
    check_history(on(srv2, a)[0], conv, acked)


def test_torn_tail_in_a_recycled_segment(parley):
    """The log has moved through several segments and recycled the old ones
    (a renamed spare keeps its stale bytes past the end of the log); a torn
    tail there is cut the same way and nothing acked is lost."""
    srv, a, b, conv = chat_setup(parley, "--apply-delay", "0")
    big = "y" * 12000
    acked = {}

    async def flood(user, rounds, prefix):
        c = await Client.open(user)
        try:
            for k in range(rounds):
                cms = [f"{prefix}{k}.{i}" for i in range(30)]
                await flood_sends(c, conv, cms, body=big)
                got = await c.answers(cms)
                for cm in cms:
                    assert got[cm]["type"] == "ack", got[cm]
                    acked[cm] = (got[cm]["seq"], big)
        finally:
            await c.close()

    arun(flood(a, 12, "r"))  # ~4.3 MiB: four segments at least
    kill9(srv)
    log_dir = Path(srv.data_dir) / "log"
    srv2 = parley(*FLAGS, data_dir=srv.data_dir)
    a2, = on(srv2, a)
    more = arun(send_acked(a2, conv, [f"m{i}" for i in range(N)], kill=srv2))
    segs = segments(log_dir)
    assert segs[0][0] >= 3 * SEGMENT, f"the old segments were not recycled: {segs}"
    recs, (seg, end) = scan(log_dir)
    assert [cm for r in recs for e in r.entries if e["kind"] == 1 for cm in [e["cmid"]]][-N:] == \
        list(more), "the last acked messages are not at the end of the log"
    patch(seg, end, _garbage(12, 512))
    srv3 = parley(*FLAGS, data_dir=srv.data_dir)
    log = srv3.log(tail=100000)
    cuts = CUT_RE.findall(log)
    assert cuts and Path(cuts[0][0]) == seg and int(cuts[0][1]) == end, (cuts, seg, end, log)
    assert int(cuts[0][2]) == int(seg.name[:16], 16) + end, cuts
    a3, = on(srv3, a)
    after = arun(send_acked(a3, conv, ["after"], kill=srv3))
    srv4 = parley(*FLAGS, data_dir=srv.data_dir)
    assert not CUT_RE.search(srv4.log(tail=100000)), srv4.log()
    check_history(on(srv4, a)[0], conv, {**acked, **more, **after})


def test_missing_segment_refuses_to_start(parley, tmp_path):
    """A segment removed from the middle of the log: the end-of-segment
    header before the gap names a next segment that is not there, and a
    later one holds records: refused, naming that header's file and offset;
    with the segment put back every acked message is there."""
    srv, a, b, conv = chat_setup(parley)
    big = "z" * 12000
    acked = {}

    async def go():
        c = await Client.open(a)
        try:
            for k in range(8):  # ~2.9 MiB: three segments, none released yet
                cms = [f"s{k}.{i}" for i in range(30)]
                await flood_sends(c, conv, cms, body=big)
                got = await c.answers(cms)
                for cm in cms:
                    assert got[cm]["type"] == "ack", got[cm]
                    acked[cm] = (got[cm]["seq"], big)
        finally:
            kill9(srv)
            await c.close()

    arun(go())
    data_dir = Path(srv.data_dir)
    log_dir = data_dir / "log"
    recs, _ = scan(log_dir)
    segs = segments(log_dir)
    assert [s for s, _ in segs][:3] == [0, SEGMENT, 2 * SEGMENT], segs
    assert any(r.path == segs[2][1] for r in recs), "no record in the third segment"
    in0 = [r for r in recs if r.path == segs[0][1]]
    eos = in0[-1].end  # the end-of-segment header follows segment 0's last record
    ln, crc = struct.unpack_from("<II", segs[0][1].read_bytes(), eos)
    assert ln == 0 and crc == marker_crc(eos, SEGMENT), (eos, ln, crc)
    moved = tmp_path / "moved.wal"
    shutil.move(segs[1][1], moved)
    before = snapshot(data_dir)
    rc, err = refused_start(data_dir, *FLAGS)
    assert rc == 1, (rc, err)
    m = CORRUPT_RE.search(err)
    assert m, err
    assert Path(m.group(1)) == segs[0][1] and int(m.group(2)) == eos, (m.groups(), eos)
    assert m.group(5) == "a later segment holds records", m.groups()
    assert snapshot(data_dir) == before, "the refused start changed the data directory"
    shutil.move(moved, segs[1][1])
    srv2 = parley(*FLAGS, data_dir=data_dir)
    check_history(on(srv2, a)[0], conv, acked)


def test_log_path_that_is_a_file_is_refused(tmp_path):
    data_dir = tmp_path / "logfile"
    data_dir.mkdir()
    (data_dir / "log").write_bytes(b"not a directory\n")
    rc, err = refused_start(data_dir, *FLAGS)
    assert rc == 1, (rc, err)
    assert "cannot open the log directory" in err and str(data_dir / "log") in err, err
    assert (data_dir / "log").read_bytes() == b"not a directory\n"
