"""A full disk under the durable path: the data directory lives on a small
tmpfs (mounting one needs root: skipped otherwise), a filler file leaves
only a little space, and a client keeps sending large messages.

  * senders get a documented error frame for the refused sends (ref = the
    cmid): `disk_full` (HTTP 507 on REST) with the new write path, today
    `internal` (500, "storage error: retry"); the connection stays open;
  * nothing acknowledged is lost (history while full, after recovery, and
    after kill -9 and a restart); seqs stay gapless;
  * reads keep being served while full (history, sync, inbox), other
    clients still connect, validation errors stay what they are;
  * once the filler is removed, sends succeed again without a restart
    (the refused cmids resent with the same body are each stored once).
"""

import asyncio
import errno
import os
import subprocess
import time

import pytest

from parley_client import (SLOW, T, Client, arun, close_all, conv_get, direct, group, history,
                           inbox, send_rest, users)

MiB = 1 << 20
SIZE_MB = 96            # the tmpfs; room for a preallocated log segment of 64 MiB
LEFT = 256 * 1024       # bytes the filler leaves free
BIG = 12000             # characters of a large body (under max_text, 16 KiB)
MAX_FILL = 2 * SIZE_MB * MiB  # bytes of bodies sent at most before a refusal must come
WINDOW = 8              # large sends in flight
DOCUMENTED = {"disk_full", "internal"}  # wire codes a refused send may carry (today: internal)


# The test servers' default is 1 MiB segments (parley_client.NO_LIMITS);
# these tests fill a 96 MiB disk with the production default, one 64 MiB
# segment made at the first append, so that the store fills before the log.
SEGMENT = ("--log-segment", str(64 << 20))


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of SIZE_MB MiB mounted on tmp_path/disk, unmounted at the end
    (request it before `parley`, so that the servers are stopped first)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m,mode=0700", "tmpfs",
                            str(mnt)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        st = os.statvfs(mnt)
        assert st.f_blocks * st.f_frsize <= SIZE_MB * MiB, "the tmpfs is not the small disk"
        yield mnt
    finally:
        r = subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30)
        if r.returncode != 0:  # still busy: detach it (it goes once unused)
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


class Filler:
    """A file that takes all the free space of the disk but `left` bytes."""

    def __init__(self, mnt):
        self.path = mnt / "filler"

    def fill(self, left=LEFT):
        st = os.statvfs(self.path.parent)
        want = st.f_bavail * st.f_frsize - left
        chunk = b"\xa5" * MiB
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for _ in range(want // MiB + 2):
                n = min(want, len(chunk))
                if n <= 0:
                    break
                try:
                    want -= os.write(fd, chunk[:n])
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
        finally:
            os.close(fd)
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def remove(self):
        self.path.unlink()


def big_body(cmid):
    return {"c": cmid, "pad": "z" * BIG}


class Sent:
    """What was sent, acknowledged and refused."""

    def __init__(self):
        self.body = {}     # cmid -> (conv, body)
        self.acked = {}    # cmid -> seq
        self.refused = {}  # cmid -> error frame or REST error


async def fill_until_refused(cl, conv, sent, prefix, extra=8):
    """Large sends, WINDOW in flight, until one is refused (bounded by
    MAX_FILL bytes), then `extra` more; every answer is recorded."""
    outstanding = []
    k = 0
    first_refusal = None
    for _ in range(MAX_FILL // BIG + extra + WINDOW):
        stop = first_refusal is not None and k >= first_refusal + extra
        if stop or k * BIG > MAX_FILL:
            break
        while len(outstanding) < WINDOW:
            cmid = f"{prefix}{k}"
            k += 1
            sent.body[cmid] = (conv, big_body(cmid))
            await cl.send({"type": "send", "conv": conv, "cmid": cmid, "body": big_body(cmid)})
            outstanding.append(cmid)
        cmid = outstanding.pop(0)
        f = (await cl.answers([cmid]))[cmid]
        if f["type"] == "ack":
            assert not f.get("duplicate"), f
            sent.acked[cmid] = f["seq"]
        else:
            sent.refused[cmid] = f
            if first_refusal is None:
                first_refusal = k
    got = await cl.answers(outstanding)
    for cmid, f in got.items():
        if f["type"] == "ack":
            sent.acked[cmid] = f["seq"]
        else:
            sent.refused[cmid] = f
    assert sent.refused, (f"no send was refused after {k * BIG // MiB} MiB of bodies on a "
                          f"{SIZE_MB} MiB disk")


def check_store(user, conv, sent, complete=False):
    """History of conv: gapless, every acked message at its seq once with its
    body; complete: every cmid sent to conv is stored (once)."""
    hist = history(user, conv)
    assert [m["seq"] for m in hist] == list(range(1, len(hist) + 1)), "seqs are not gapless"
    assert conv_get(user, conv)["last_seq"] == len(hist)
    stored = {}
    for m in hist:
        assert m["cmid"] not in stored, f"{m['cmid']} stored twice"
        stored[m["cmid"]] = m["seq"]
        assert m["cmid"] in sent.body and sent.body[m["cmid"]] == (conv, m["body"]), m["cmid"]
    mine = {cm: s for cm, s in sent.acked.items() if sent.body[cm][0] == conv}
    lost = {cm: s for cm, s in mine.items() if stored.get(cm) != s}
    assert not lost, f"{len(lost)} acknowledged messages lost or moved: {sorted(lost.items())[:5]}"
    if complete:
        want = {cm for cm, (c, _) in sent.body.items() if c == conv}
        assert set(stored) == want, f"missing: {sorted(want - set(stored))[:5]}"
    return stored


async def send_small(cl, conv, sent, cmids):
    for cmid in cmids:
        body = {"c": cmid}
        sent.body[cmid] = (conv, body)
        f = await cl.send_msg(conv, cmid, body)
        assert f["type"] == "ack", f
        sent.acked[cmid] = f["seq"]


def test_disk_full_keeps_acks_serves_reads_and_recovers(small_disk, parley):
    srv = parley(*SEGMENT, data_dir=small_disk / "data")
    a, b, c = users(srv, 3)
    d = direct(a, b)
    g = group(a, [b, c], name="full")
    other = group(b, [c], name="not-a")  # a is no member
    sent = Sent()
    arun(_before(a, d, g, sent))
    filler = Filler(small_disk)
    free = filler.fill()
    assert free <= 2 * LEFT, f"the filler left {free} bytes"

    async def while_full():
        ca = await Client.open(a)
        try:
            await fill_until_refused(ca, d, sent, "f")
            for cmid, f in sent.refused.items():
                assert f["type"] == "error" and f["ref"] == cmid, f
                assert f["code"] in DOCUMENTED and isinstance(f["message"], str), f
            await ca.ping()  # the connection stays open
            # Validation still answers what it answers.
            r = await ca.send_msg(d, "huge", "h" * 20000)
            assert r["type"] == "error" and r["code"] == "too_large", r
            f = await ca.send_msg(other, "nope", "x")
            assert f["type"] == "error" and f["code"] == "forbidden", f
            # Reads are served: sync (the latest page holds the last ack).
            last = max(sent.acked[cm] for cm in sent.acked if sent.body[cm][0] == d)
            # Acked messages the store could not take yet are in the log,
            # and reads show them once space returns (checked below); while
            # the disk is full a read shows what the store holds.
            h = await ca.request({"type": "sync", "conv": d, "limit": 5}, "history")
            assert all(m["seq"] <= last for m in h["messages"]), h
            r = await ca.request({"type": "inbox"}, "inbox")
            ids = {x["id"]: x for x in r["inbox"]["conversations"]}
            assert ids[d]["last_seq"] <= last, r
            # Other clients still connect (tokens from before), and read.
            cb, cc = await Client.open(b), await Client.open(c)
            try:
                await cb.ping()
                h = await cc.request({"type": "sync", "conv": g, "after": 0}, "history")
                acked_g = [cm for cm in sent.acked if sent.body[cm][0] == g]
                got = [m["cmid"] for m in h["messages"]]
                assert got == acked_g[:len(got)], h  # a prefix: the rest is in the log
            finally:
                await close_all([cb, cc])
        finally:
            await ca.close()
    arun(while_full())
    # REST: a large send is refused with a documented error (or fits).
    rest_refused = None
    for k in range(8):
        cmid = f"rest{k}"
        sent.body[cmid] = (g, big_body(cmid))
        r = send_rest(a, g, cmid, big_body(cmid))
        if r.status == 201:
            sent.acked[cmid] = r.json()["seq"]
            continue
        rest_refused = r
        assert r.status in (500, 507) and r.error_code() in DOCUMENTED, r
        sent.refused[cmid] = r.json()
        break
    assert rest_refused is not None, "eight large REST sends fitted on the full disk"
    # While the disk is full, acked messages the store could not take yet
    # are in the log only (a read shows what the store holds): every one is
    # checked once the space returns, below.
    assert {x["id"] for x in inbox(b)["conversations"]} == {d, g, other}
    assert srv.alive()

    filler.remove()  # the space returns: sends succeed without a restart

    async def after():
        ca = await Client.open(a)
        try:
            for cmid in list(sent.refused):
                conv, body = sent.body[cmid]
                deadline = time.monotonic() + T
                for _ in range(1000):
                    f = await ca.send_msg(conv, cmid, body)
                    if f["type"] == "ack" or time.monotonic() > deadline:
                        break
                    assert f["code"] in DOCUMENTED, f
                    await asyncio.sleep(0.05 * SLOW)  # the retry the error asks for
                assert f["type"] == "ack", f"{cmid} still refused after the space returned: {f}"
                sent.acked[cmid] = f["seq"]
            for k in range(10):
                cmid = f"after{k}"
                sent.body[cmid] = (d, big_body(cmid))
                f = await ca.send_msg(d, cmid, big_body(cmid))
                assert f["type"] == "ack", f
                sent.acked[cmid] = f["seq"]
        finally:
            await ca.close()
    arun(after())
    r = send_rest(a, g, "rest-after", "fine")
    sent.body["rest-after"] = (g, "fine")
    assert r.status == 201, r
    sent.acked["rest-after"] = r.json()["seq"]
    check_store(a, d, sent, complete=True)
    check_store(a, g, sent, complete=True)

    # Nothing acknowledged is lost across kill -9 and a restart.
    srv.expect_exit = True
    srv.proc.kill()
    assert srv.wait(10 * SLOW) is not None
    srv = parley(*SEGMENT, data_dir=small_disk / "data")
    for u in (a, b, c):
        u.srv = srv
    check_store(b, d, sent, complete=True)
    check_store(c, g, sent, complete=True)
    arun(_before(a, d, g, sent, prefix="end"))


async def _before(a, d, g, sent, prefix="pre"):
    ca = await Client.open(a)
    try:
        await send_small(ca, d, sent, [f"{prefix}-d{k}" for k in range(10)])
        await send_small(ca, g, sent, [f"{prefix}-g{k}" for k in range(10)])
    finally:
        await ca.close()


def test_disk_full_is_answered_disk_full(small_disk, parley):
    srv = parley(*SEGMENT, data_dir=small_disk / "data")
    a, b = users(srv, 2)
    d = direct(a, b)
    sent = Sent()
    Filler(small_disk).fill()

    async def go():
        ca = await Client.open(a)
        try:
            await fill_until_refused(ca, d, sent, "f", extra=2)
        finally:
            await ca.close()
    arun(go())
    for cmid, f in sent.refused.items():
        assert (f["type"], f["code"], f["ref"]) == ("error", "disk_full", cmid), f
    for k in range(8):
        r = send_rest(a, d, f"rest{k}", big_body(f"rest{k}"))
        if r.status != 201:
            assert r.status == 507 and r.error_code() == "disk_full", r
            break
    else:
        raise AssertionError("eight large REST sends fitted on the full disk")
