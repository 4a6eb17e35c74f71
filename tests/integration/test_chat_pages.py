"""Every response fits the output queue (docs/protocol.md "Pages"): a
history page (WebSocket `sync`, REST GET messages) is trimmed to the page
budget (a quarter of --max-queue, never below one message) with `more`,
at message boundaries in both directions; the inbox comes in pages bounded
by count and bytes, walked with `page` = `next`, over the WebSocket and
REST; bad `page` tokens and limits are refused with `bad_request`."""

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from parley_client import (HOST, OP_CLOSE, OP_TEXT, T, Client, RawWS, arun, assert_error, rest,
                           close_key, get_metrics, group, history_page, inbox_pages, make_frame,
                           mval, users)

BIG = "x" * (16 * 1024 - 2)  # a 16 KiB body as JSON: the largest --max-text allows
N_BIG = 64
DEFAULT_QUEUE = 1 << 20
ENVELOPE = 200  # the frame around the messages: type, conv, id, more


def post_big(srv, a, gid, n=N_BIG):
    """a sends n 16 KiB messages to gid over one WebSocket; returns the acks."""
    async def go():
        ca = await Client.open(a)
        for k in range(1, n + 1):
            await ca.send({"type": "send", "conv": gid, "cmid": f"big{k}", "body": BIG})
        acks = await ca.answers([f"big{k}" for k in range(1, n + 1)])
        await ca.close()
        return acks
    acks = arun(go())
    assert sorted(a["seq"] for a in acks.values()) == list(range(1, n + 1))


def msg_bytes(m):
    return len(json.dumps(m, separators=(",", ":")))


@pytest.fixture
def big_conv(server):
    a, b = users(server, 2)
    gid = group(a, [b], name="large")
    post_big(server, a, gid)
    return server, a, b, gid


def test_ws_sync_of_64_large_messages_comes_in_pages_without_1013(big_conv):
    """The issue's case: 64 messages of 16 KiB and a sync with limit 500
    closed the reader with 1013 every time; now the pages fit and the
    reader walks them with `more`, forward and backward."""
    srv, a, b, gid = big_conv
    budget = DEFAULT_QUEUE // 4
    m0 = get_metrics(srv.port)

    async def go():
        cb = await Client.open(b)
        got, pages, after = [], 0, 0
        for _ in range(N_BIG + 1):
            h = await cb.request({"type": "sync", "conv": gid, "after": after, "limit": 500},
                                 "history")
            assert h["type"] == "history", h
            msgs = h["messages"]
            assert msgs, "a page is never empty while there is more"
            assert sum(map(msg_bytes, msgs)) <= budget or len(msgs) == 1
            got += msgs
            pages += 1
            if not h["more"]:
                break
            after = msgs[-1]["seq"]
        assert [m["seq"] for m in got] == list(range(1, N_BIG + 1))
        assert all(m["body"] == BIG for m in got)
        assert pages > 1, "one page of 1 MiB: not trimmed"
        # Backward from the latest page (neither after nor before).
        back, frame = [], {"type": "sync", "conv": gid, "limit": 500}
        for _ in range(N_BIG + 1):
            h = await cb.request(frame, "history")
            msgs = h["messages"]
            assert sum(map(msg_bytes, msgs)) <= budget or len(msgs) == 1
            assert [m["seq"] for m in msgs] == sorted(m["seq"] for m in msgs)
            back = msgs + back
            if not h["more"]:
                break
            frame = {"type": "sync", "conv": gid, "before": msgs[0]["seq"], "limit": 500}
        assert [m["seq"] for m in back] == list(range(1, N_BIG + 1))
        # A small limit is still a count limit.
        h = await cb.request({"type": "sync", "conv": gid, "after": 10, "limit": 3}, "history")
        assert [m["seq"] for m in h["messages"]] == [11, 12, 13] and h["more"] is True
        await cb.ping()
        await cb.close()
    arun(go())
    m1 = get_metrics(srv.port)
    assert mval(m1, close_key(1013)) == mval(m0, close_key(1013))


def test_rest_history_pages_are_trimmed_by_bytes(big_conv):
    srv, a, b, gid = big_conv
    budget = DEFAULT_QUEUE // 4
    got, after = [], 0
    for _ in range(N_BIG + 1):
        j = history_page(b, gid, after=after, limit=500)
        assert sum(map(msg_bytes, j["messages"])) <= budget or len(j["messages"]) == 1
        got += j["messages"]
        if not j["more"]:
            break
        after = j["messages"][-1]["seq"]
    assert [m["seq"] for m in got] == list(range(1, N_BIG + 1))
    j = history_page(b, gid, before=N_BIG + 1, limit=500)
    seqs = [m["seq"] for m in j["messages"]]
    assert j["more"] is True and seqs == list(range(N_BIG - len(seqs) + 1, N_BIG + 1))


def pipelined_syncs(gid, n):
    return b"".join(make_frame(OP_TEXT, json.dumps(
        {"type": "sync", "conv": gid, "after": 0, "limit": 500, "id": f"p{i}"}).encode())
        for i in range(n))


def test_pipelined_syncs_are_paced_not_closed(big_conv):
    """A client that writes 20 syncs at once (libparley syncs every changed
    conversation after a reconnect) asks for 20 pages of 256 KiB: the
    server stops reading its frames while its queue is over half full and
    goes on as it drains, instead of closing it with 1013."""
    srv, a, b, gid = big_conv
    n = 20
    with RawWS(srv.port, token=b.token, timeout=T) as raw:
        raw.send(pipelined_syncs(gid, n))
        got = []
        for _ in range(n + 50):
            fin, op, payload = raw.recv_frame()
            assert op != OP_CLOSE, payload
            f = json.loads(payload)
            if f.get("type") == "history":
                assert f["messages"][0]["seq"] == 1 and f["more"] is True
                got.append(f["id"])
            if len(got) == n:
                break
        assert got == [f"p{i}" for i in range(n)]
    assert mval(get_metrics(srv.port), close_key(1013)) == 0


def test_one_message_larger_than_the_budget_is_still_one_page(parley):
    """--max-queue 64 KiB: the budget (16 KiB) is below one 16 KiB message
    with its fields; each page holds exactly one, and the walk still ends."""
    srv = parley("--max-queue", "65536")
    a, b = users(srv, 2)
    gid = group(a, [b])
    post_big(srv, a, gid, n=5)

    async def go():
        cb = await Client.open(b)
        seqs, after = [], 0
        for _ in range(10):
            h = await cb.request({"type": "sync", "conv": gid, "after": after}, "history")
            assert len(h["messages"]) == 1, [m["seq"] for m in h["messages"]]
            seqs += [m["seq"] for m in h["messages"]]
            if not h["more"]:
                break
            after = seqs[-1]
        assert seqs == [1, 2, 3, 4, 5]
        await cb.close()
    arun(go())


def test_max_text_is_lowered_to_fit_the_output_queue(parley):
    """A message must fit a connection's output queue with room to spare, or
    no member could ever receive it, live or by sync (a page holds at least
    one): with --max-queue 8192 the default --max-text (16 KiB) is lowered to
    8192 / 2 - 1024 = 3072 with a warning, a larger body is too_large (never
    acknowledged), and one that fits reaches the other member."""
    srv = parley("--max-queue", "8192")
    assert "max-text lowered" in srv.log() and "now=3072" in srv.log(), srv.log()
    a, b = users(srv, 2)
    gid = group(a, [b])
    path = f"/v1/conversations/{gid}/messages"
    assert_error(rest(srv, "POST", path, {"cmid": "big", "body": "x" * 3100}, token=a.token),
                 413, "too_large")
    r = rest(srv, "POST", path, {"cmid": "fits", "body": "y" * 3000}, token=a.token)
    assert r.status == 201, r

    async def go():
        cb = await Client.open(b)
        h = await cb.request({"type": "sync", "conv": gid, "after": 0}, "history")
        assert [m["cmid"] for m in h["messages"]] == ["fits"], h
        await cb.close()
    arun(go())


# ---- the inbox ---------------------------------------------------------------------

N_CONVS = 3000
SMALL_QUEUE = 16384


def create_groups(user, n, workers=8):
    """n groups of user alone, over a few keep-alive connections at once."""
    def batch(k):
        c = http.client.HTTPConnection(HOST, user.srv.port, timeout=T)
        ids = []
        try:
            for i in range(k, n, workers):
                body = json.dumps({"type": "group", "name": f"g{i}", "members": []})
                c.request("POST", "/v1/conversations", body=body,
                          headers={"Authorization": "Bearer " + user.token,
                                   "Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read()
                assert r.status == 201, (r.status, data)
                ids.append(json.loads(data)["id"])
        finally:
            c.close()
        return ids
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return [i for ids in ex.map(batch, range(workers)) for i in ids]


@pytest.fixture
def crowded(parley):
    srv = parley("--max-queue", str(SMALL_QUEUE))
    (u,) = users(srv, 1)
    ids = create_groups(u, N_CONVS)
    assert len(set(ids)) == N_CONVS
    return srv, u, set(ids)


def recency(c):
    return (c["last_ts"], c["id"])


def test_inbox_of_3000_conversations_over_rest_by_pages(crowded):
    srv, u, ids = crowded
    pages = inbox_pages(u)
    assert len(pages) > 1, "one response for the whole inbox"
    cursors = {p["cursor"] for p in pages}
    assert len(cursors) == 1, "every page of a walk carries the walk's cursor"
    seen = [c for p in pages for c in p["conversations"]]
    assert len(seen) == N_CONVS and {c["id"] for c in seen} == ids, "missing or repeated"
    assert [recency(c) for c in seen] == sorted(map(recency, seen), reverse=True)
    for p in pages:
        assert len(p["conversations"]) <= 100
        size = sum(len(json.dumps(c, separators=(",", ":"))) for c in p["conversations"])
        assert size <= SMALL_QUEUE // 4 or len(p["conversations"]) == 1
        assert p["more"] is (p is not pages[-1])
        assert ("next" in p) is p["more"]
    # A limit: a count bound; changed_since keeps working, and is paged too.
    j = u.get("/v1/conversations", params={"limit": 3}).json()
    assert len(j["conversations"]) == 3 and j["more"] is True
    assert inbox_pages(u, changed_since=pages[0]["cursor"]) == \
        [{"conversations": [], "cursor": pages[0]["cursor"], "more": False}]


def test_inbox_of_3000_conversations_over_the_websocket(crowded):
    """Before: one frame of ~450 KB for a 16 KiB queue, closed with 1013.
    Now: pages; a conversation that gets a message during the walk leaves
    the later pages and is listed by changed_since = the walk's cursor."""
    srv, u, ids = crowded

    async def go():
        cu = await Client.open(u)
        seen, frame, cursor = [], {"type": "inbox", "limit": 50}, None
        moved = None
        for n in range(N_CONVS + 1):
            r = await cu.request(frame, "inbox")
            assert r["type"] == "inbox", r
            page = r["inbox"]
            cursor = cursor or page["cursor"]
            assert page["cursor"] == cursor
            assert len(page["conversations"]) <= 50
            seen += page["conversations"]
            if n == 2:
                # The oldest conversation (last in order, not listed yet)
                # gets a message: it moves to the front, behind the walk.
                left = sorted(ids - {c["id"] for c in seen})
                moved = left[0]
                await cu.send({"type": "send", "conv": moved, "cmid": "m1", "body": "hi"})
                await cu.wait_type("ack", cmid="m1")
            if not page["more"]:
                break
            frame = {"type": "inbox", "page": page["next"], "limit": 50}
        listed = [c["id"] for c in seen]
        assert len(listed) == len(set(listed)), "a conversation listed twice in one walk"
        assert set(listed) == ids - {moved}
        r = await cu.request({"type": "inbox", "changed_since": cursor}, "inbox")
        assert [c["id"] for c in r["inbox"]["conversations"]] == [moved]
        assert r["inbox"]["conversations"][0]["last_seq"] == 1
        await cu.ping()
        await cu.close()
    arun(go())
    assert mval(get_metrics(srv.port), close_key(1013)) == 0


def test_bad_page_and_limit_are_refused(server):
    a, b = users(server, 2)
    for _ in range(3):
        group(a, [b])
    first = a.get("/v1/conversations", params={"limit": 1}).json()
    tok = first["next"]
    c = first["cursor"]
    bad_pages = ["", "x", "1.2.3", "1.2.3.4.5", "0.1.2.-3", "-0.1.2.3", "0.1.-0.3", "01.2.3.4",
                 "0.99999999999999999999.1.1", "0.%d.1.0" % c, "%d.%d.1.1" % (c + 1, c),
                 "0.%d.1.1" % (c + 1000), " " + tok, tok + ".", tok.replace(".", ",")]
    for bad in bad_pages:
        assert_error(a.get("/v1/conversations", params={"page": bad}), 400, "bad_request")
    for lim in ["0", "1001", "-1", "x", ""]:
        assert_error(a.get("/v1/conversations", params={"limit": lim}), 400, "bad_request")
    # changed_since with a page must be the walk's own
    assert_error(a.get("/v1/conversations", params={"page": tok, "changed_since": 5}),
                 400, "bad_request")
    assert a.get("/v1/conversations", params={"page": tok, "changed_since": 0}).status == 200
    nxt = a.get("/v1/conversations", params={"page": tok}).json()
    assert len(nxt["conversations"]) == 3 - 1 and nxt["more"] is False

    async def go():
        ca = await Client.open(a)
        for i, frame in enumerate([
                {"page": 5}, {"page": "x"}, {"page": "0.%d.1.0" % first["cursor"]},
                {"limit": 0}, {"limit": 1001}, {"limit": "5"},
                {"page": tok, "changed_since": 7}]):
            r = await ca.request(dict(frame, type="inbox", id=f"b{i}"), "inbox")
            assert r["type"] == "error" and r["code"] == "bad_request" and r["ref"] == f"b{i}", r
        r = await ca.request({"type": "inbox", "page": tok}, "inbox")
        assert len(r["inbox"]["conversations"]) == 2
        await ca.close()
    arun(go())
