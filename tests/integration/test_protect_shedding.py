"""Load shedding: when the storage writer's queue is full, a send is refused
with `busy` (WebSocket error frame with retry_after_ms, REST 503 with
Retry-After) instead of growing memory, and nothing acknowledged is lost.

The writer is made slow on purpose: a 300 ms commit window with a queue of
one means the second write of a window finds the queue full."""
import asyncio
import json

from parley_client import T, arun, connect, direct, register


def test_full_writer_queue_answers_busy_and_loses_nothing(parley):
    srv = parley("--max-writer-queue", "1", "--commit-window", "300000")
    a, b = register(srv, "shedann"), register(srv, "shedbob")
    conv = direct(a, b)

    async def go():
        ws = await connect(srv, token=a.token)
        try:
            for i in range(20):  # all inside one commit window
                await ws.send(json.dumps({"type": "send", "conv": conv, "cmid": f"m{i}",
                                          "body": f"b{i}"}))
            acked, busy = {}, {}
            while len(acked) + len(busy) < 20:
                f = json.loads(await asyncio.wait_for(ws.recv(), T))
                if f["type"] == "ack":
                    acked[f["cmid"]] = f["seq"]
                elif f["type"] == "error":
                    assert f["code"] == "busy", f
                    assert f["retry_after_ms"] > 0, f
                    busy[f["ref"]] = True  # a send's ref is its cmid
            assert acked and busy, (acked, busy)
            # The refused ones succeed when resent later, with the same cmid.
            for cmid in busy:
                await asyncio.sleep(0.35)
                await ws.send(json.dumps({"type": "send", "conv": conv, "cmid": cmid,
                                          "body": "b" + cmid[1:]}))
                while True:
                    f = json.loads(await asyncio.wait_for(ws.recv(), T))
                    if f["type"] == "ack" and f["cmid"] == cmid:
                        acked[cmid] = f["seq"]
                        break
                    assert f["type"] != "error" or f["code"] == "busy", f
                    if f["type"] == "error":  # still busy: wait a window and resend
                        await asyncio.sleep(0.35)
                        await ws.send(json.dumps({"type": "send", "conv": conv, "cmid": cmid,
                                                  "body": "b" + cmid[1:]}))
            return acked
        finally:
            await ws.close()

    acked = arun(go())
    # REST: a full queue is a 503 with Retry-After.
    codes = set()
    for i in range(6):
        r = a.post(f"/v1/conversations/{conv}/messages", {"cmid": f"r{i}", "body": "x"})
        codes.add(r.status_code)
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "busy" and int(r.headers["Retry-After"]) >= 1
    assert codes <= {201, 503}
    # Everything acknowledged is stored exactly once, at its seq, gapless.
    r = a.get(f"/v1/conversations/{conv}/messages?limit=500")
    msgs = r.json()["messages"]
    seqs = [m["seq"] for m in msgs]
    assert seqs == list(range(1, len(seqs) + 1))
    by_cmid = {m["cmid"]: m["seq"] for m in msgs}
    assert len(by_cmid) == len(msgs)
    for cmid, seq in acked.items():
        assert by_cmid[cmid] == seq
    assert len(acked) == 20
