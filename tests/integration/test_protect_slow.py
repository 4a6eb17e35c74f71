"""Slow consumers (docs/protocol.md close code 1013, README "Protection"):
a member that never reads while its group is flooded is closed with 1013
once its output queue passes --max-queue; typing frames to it are dropped
once its queue is over half full; the server's memory stays bounded; a
control member of the same group receives every message in order, and the
slow member resumes by sync after reconnecting."""

import json

from parley_client import (OP_TEXT, Client, Control, RawWS, arun, close_all, close_key,
                           drain_until_end, get_metrics, group, history, mval, rss_kb, users)

MAX_QUEUE = 65536
BODY = "m" * 8000  # ~8 KB frames: the queue passes its half in a few rounds
MAX_ROUNDS = 2000  # bound: 16 MB of messages


def test_slow_consumer_closed_with_1013(parley):
    srv = parley("--max-queue", str(MAX_QUEUE))

    async def body():
        ctl = await Control.open(srv)
        f_user, s_user, c_user, t_user = users(srv, 4)
        g = group(f_user, [s_user, c_user, t_user], name="flooded")
        g2 = group(t_user, [s_user, c_user], name="typing")
        flood = await Client.open(f_user)
        member = await Client.open(c_user)  # the control member of the flooded group
        typer = await Client.open(t_user)
        slow = RawWS(srv.port, token=s_user.token, src="127.0.0.30", rcvbuf=4096)
        try:
            await ctl.exchange()
            m0 = get_metrics(srv.port)
            rss0 = rss_kb(srv.proc.pid)
            closed_at = None
            sent = 0

            async def send_and_check(n):
                nonlocal sent
                first = sent
                for i in range(n):
                    await flood.send({"type": "send", "conv": g, "cmid": f"flood-{sent}",
                                      "body": BODY})
                    sent += 1
                for i in range(first, sent):
                    msg = await member.wait(
                        lambda f: f.get("type") == "msg" and f.get("conv") == g,
                        what=f"flood message {i}")
                    assert (msg["seq"], msg["cmid"]) == (i + 1, f"flood-{i}"), \
                        f"the control member got {msg['seq']}/{msg['cmid']}, expected {i + 1}"

            # phase 1, fast: 4 messages a round until a write blocks (the slow
            # reader's kernel buffers are full: from now on its queue grows)
            blocked0 = mval(m0, "parley_writes_blocked_total")
            for _ in range(MAX_ROUNDS // 4):
                await send_and_check(4)
                if mval(get_metrics(srv.port), "parley_writes_blocked_total") > blocked0:
                    break
            phase1 = sent
            # phase 2: one message and one typing frame a round, until the 1013
            for rnd in range(MAX_ROUNDS):
                await send_and_check(1)
                # a typing frame to every member (alternating conversations, so
                # the sender's 1-per-second typing throttle does not apply)
                tconv = g if rnd % 2 == 0 else g2
                await typer.send({"type": "typing", "conv": tconv})
                await member.wait(lambda f: f.get("type") == "typing" and f.get("conv") == tconv,
                                  what="typing barrier")
                m = get_metrics(srv.port)
                if mval(m, close_key(1013)) > mval(m0, close_key(1013)):
                    closed_at = sent - 1
                    break
            assert closed_at is not None, \
                f"{MAX_ROUNDS} rounds of 8 KB messages never closed the reader that does not read"
            rss1 = rss_kb(srv.proc.pid)
            acks = await flood.answers([f"flood-{i}" for i in range(closed_at + 1)])
            assert [acks[f"flood-{i}"]["seq"] for i in range(closed_at + 1)] == \
                list(range(1, closed_at + 2))
            m1 = get_metrics(srv.port)
            assert mval(m1, "parley_queue_full_total") > mval(m0, "parley_queue_full_total")
            assert mval(m1, close_key(1013)) - mval(m0, close_key(1013)) == 1
            dropped = mval(m1, "parley_lossy_dropped_total") - mval(m0, "parley_lossy_dropped_total")
            assert dropped > 0, "no typing frame was dropped for the reader over half its queue"
            # the rest of the chat goes on
            for i in range(5):
                await flood.send({"type": "send", "conv": g, "cmid": f"after-{i}", "body": i})
            for i in range(5):
                msg = await member.wait(lambda f: f.get("type") == "msg" and f.get("conv") == g)
                assert (msg["seq"], msg["cmid"]) == (closed_at + 2 + i, f"after-{i}"), msg
            await ctl.exchange()
            # the slow reader now reads: an in-order prefix, then the end (the
            # server dropped its queue, so the 1013 frame itself may be lost)
            frames, code = drain_until_end(slow, timeout=30)
            got = [json.loads(p) for op, p in frames if op == OP_TEXT]
            seqs = [x["seq"] for x in got if x.get("type") == "msg" and x.get("conv") == g]
            assert seqs == list(range(1, len(seqs) + 1)), "the slow reader's frames are not a prefix"
            assert code in (None, 1013), code
            rss2 = rss_kb(srv.proc.pid)
            print(f"\nslow consumer: closed after {closed_at + 1} messages of 8 KB "
                  f"({phase1} before a write blocked); "
                  f"{len(seqs)} reached it before the close; {dropped:.0f} typing frames dropped; "
                  f"VmRSS before {rss0} kB, at the 1013 {rss1} kB, after {rss2} kB")
            assert rss1 - rss0 < 200 * 1024 and rss2 - rss0 < 200 * 1024
            # it resumes by sync after reconnecting
            back = await Client.open(s_user)
            await back.send({"type": "sync", "conv": g, "after": seqs[-1] if seqs else 0,
                             "limit": 500, "id": "resume"})
            h = await back.wait_type("history", id="resume")
            last = seqs[-1] if seqs else 0
            assert [x["seq"] for x in h["messages"]][:1] == [last + 1], h["messages"][:1]
            assert [x["seq"] for x in history(c_user, g)] == list(range(1, closed_at + 7))
            await back.close()
            await ctl.check()
        finally:
            slow.close()
            await close_all([flood, member, typer])
            await ctl.close()

    arun(body())
