"""Store reads run on a read pool with a bounded queue (--read-threads,
--max-read-queue): a flood of reads on many connections at once is
answered, each read with its answer or `busy` (never a crash, never a
lost answer), each connection's answers in the order of its frames, and
the server serves normally afterwards."""

import json

from parley_client import (OP_TEXT, RawHTTP, RawWS, get_metrics, group, history, make_frame,
                           poll, send_rest, users)

CONNS = 30
MESSAGES = 40


def read_answers(ws, ids):
    """The answers of one connection up to its pong: {id: frame}, and
    whether the pong came after every answer (presence skipped)."""
    got = {}
    for _ in range(1000):
        f = json.loads(ws.recv_text())
        if f["type"] == "presence":
            continue
        if f["type"] == "pong":
            return got, set(got) == set(ids)
        key = f.get("id") if f["type"] != "error" else f.get("ref")
        assert key in ids and key not in got, (key, f)
        got[key] = f
    raise AssertionError("no pong")


def test_read_flood_answered_busy_not_a_crash(parley):
    srv = parley("--threads", "1", "--read-threads", "1", "--max-read-queue", "1")
    a, b = users(srv, 2)
    gid = group(a, [b])
    # History pages that take a while to build (the page budget, 256 KiB).
    for i in range(MESSAGES):
        assert send_rest(a, gid, f"m{i}", "x" * 8000).status == 201
    conns = [RawWS(srv.port, token=a.token) for _ in range(CONNS)]
    busy = 0
    try:
        # Every connection: a sync, an inbox and a ping, written at once.
        for k, ws in enumerate(conns):
            sync = {"type": "sync", "conv": gid, "limit": 500, "id": f"s{k}"}
            inbox = {"type": "inbox", "id": f"i{k}"}
            ws.send(make_frame(OP_TEXT, json.dumps(sync).encode()) +
                    make_frame(OP_TEXT, json.dumps(inbox).encode()) +
                    make_frame(OP_TEXT, b'{"type":"ping"}'))
        for k, ws in enumerate(conns):
            got, in_order = read_answers(ws, {f"s{k}", f"i{k}"})
            assert in_order, got
            for key, f in got.items():
                if f["type"] == "error":
                    assert f["code"] == "busy" and f["retry_after_ms"] == 1000, f
                    busy += 1
                elif key.startswith("s"):
                    assert f["type"] == "history" and f["conv"] == gid and f["messages"], f
                else:
                    assert f["type"] == "inbox" and f["inbox"]["conversations"], f
    finally:
        for ws in conns:
            ws.close()
    assert busy > 0, "the flood never filled the read queue"
    # REST at once: 200 or 503 busy (with Retry-After), each request answered.
    path = f"/v1/conversations/{gid}/messages?limit=500"
    req = (f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.token}\r\n\r\n").encode()
    rests = [RawHTTP(srv.port) for _ in range(CONNS)]
    try:
        for c in rests:
            c.send(req)
        for c in rests:
            r = c.read_response()
            assert r.status in (200, 503), r
            if r.status == 503:
                assert r.error_code() == "busy" and r.header("retry-after") == "1", r
    finally:
        for c in rests:
            c.close()
    # Afterwards everything is served as usual.
    assert [m["cmid"] for m in history(a, gid)] == [f"m{i}" for i in range(MESSAGES)]
    with RawWS(srv.port, token=b.token) as ws:
        ws.send_text(json.dumps({"type": "sync", "conv": gid, "after": MESSAGES - 1, "id": 1}))
        f = json.loads(ws.recv_text())
        while f["type"] == "presence":
            f = json.loads(ws.recv_text())
        assert f["type"] == "history" and [m["cmid"] for m in f["messages"]] == ["m39"], f
    # /metrics counts the busy answers and shows the queue drained (the
    # closes above queue presence reads of their own: polled, bounded).
    m = poll(lambda: get_metrics(srv.port), lambda m: m["parley_read_queue"] == 0)
    assert m["parley_reads_refused_total"] >= busy, m
    assert m["parley_read_queue"] == 0 and m["parley_reads_total"] > 0, m
