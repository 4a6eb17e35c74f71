"""Offline catch-up: 1,000 messages while a member is offline, found again
through the inbox (changed_since), REST history paging both ways and the
WebSocket `sync`; limit and cursor validation."""

import pytest

from parley_client import (T, Client, arun, assert_error, group, history_page, inbox, users)

N = 1000


def body(k):
    return f"message {k}"


@pytest.fixture
def offline_catchup(server):
    """A sends N messages to B (offline) over one WebSocket; returns the
    state for the checks."""
    a, b = users(server, 2)
    gid = group(a, [b], name="pair")
    quiet = group(b, [], name="alone")  # B's other conversation: unchanged
    c0 = inbox(b)["cursor"]

    async def go():
        ca = await Client.open(a)
        for k in range(1, N + 1):
            await ca.send({"type": "send", "conv": gid, "cmid": f"m{k}", "body": body(k)})
        acks = {}
        for _ in range(N * 2 + 10):
            if len(acks) == N:
                break
            f = await ca.next(T)
            if f["type"] in ("presence", "conv"):  # B may be listed as offline
                continue
            assert f["type"] == "ack", f
            assert f["cmid"] not in acks, f"second ack for {f['cmid']}"
            acks[f["cmid"]] = f["seq"]
        await ca.close()
        return acks
    acks = arun(go())
    assert acks == {f"m{k}": k for k in range(1, N + 1)}, "acks out of order or with gaps"
    return server, a, b, gid, quiet, c0


def test_inbox_changed_since_after_offline(offline_catchup):
    srv, a, b, gid, quiet, c0 = offline_catchup
    ib = inbox(b, changed_since=c0)
    convs = {c["id"]: c for c in ib["conversations"]}
    assert list(convs) == [gid], "only the changed conversation is listed"
    c = convs[gid]
    assert c["last_seq"] == N and c["unread"] == N and c["read_seq"] == 0
    assert c["last_message"]["seq"] == N and c["last_message"]["body"] == body(N)
    assert c["last_message"]["from"] == a.name
    assert ib["cursor"] > c0
    # Nothing changed since the new cursor; the full inbox has both.
    assert inbox(b, changed_since=ib["cursor"])["conversations"] == []
    assert {c["id"] for c in inbox(b)["conversations"]} == {gid, quiet}
    # Bad cursors.
    for bad in ["x", "-1", "1.5"]:
        assert_error(b.get("/v1/conversations", params={"changed_since": bad}), 400, "bad_request")


def test_rest_history_paging_forward_and_backward(offline_catchup):
    srv, a, b, gid, quiet, c0 = offline_catchup
    seen = []
    after = 0
    pages = []
    for _ in range(10):
        j = history_page(b, gid, after=after, limit=500)
        pages.append((len(j["messages"]), j["more"]))
        seen += j["messages"]
        if not j["messages"]:
            break
        after = j["messages"][-1]["seq"]
    assert pages == [(500, True), (500, False), (0, False)], pages
    assert [m["seq"] for m in seen] == list(range(1, N + 1)), "missing, repeated or out of order"
    for m in seen:
        assert (m["from"], m["cmid"], m["body"]) == (a.name, f"m{m['seq']}", body(m["seq"]))
    # Backwards from the end.
    j = history_page(b, gid, before=N + 1, limit=500)
    assert [m["seq"] for m in j["messages"]] == list(range(501, N + 1)) and j["more"] is True
    j = history_page(b, gid, before=501, limit=500)
    assert [m["seq"] for m in j["messages"]] == list(range(1, 501)) and j["more"] is False
    j = history_page(b, gid, before=11, limit=3)
    assert [m["seq"] for m in j["messages"]] == [8, 9, 10] and j["more"] is True
    # Neither: the latest page; default limit 50.
    j = history_page(b, gid, limit=10)
    assert [m["seq"] for m in j["messages"]] == list(range(N - 9, N + 1)) and j["more"] is True
    j = history_page(b, gid)
    assert [m["seq"] for m in j["messages"]] == list(range(N - 49, N + 1))
    j = history_page(b, gid, after=990)
    assert [m["seq"] for m in j["messages"]] == list(range(991, N + 1)) and j["more"] is False


def test_rest_history_limit_validation(offline_catchup):
    srv, a, b, gid, quiet, c0 = offline_catchup
    p = f"/v1/conversations/{gid}/messages"
    for params in [{"limit": 0}, {"limit": 501}, {"after": 1, "before": 5}, {"limit": -1},
                   {"after": "x"}, {"before": "1e3"}, {"limit": ""}]:
        assert_error(b.get(p, params=params), 400, "bad_request")
    j = history_page(b, gid, after=0, limit=500)
    assert len(j["messages"]) == 500


def test_ws_sync_after_and_before(offline_catchup):
    srv, a, b, gid, quiet, c0 = offline_catchup

    async def go():
        cb = await Client.open(b)
        got = []
        after = 0
        for _ in range(10):
            h = await cb.request({"type": "sync", "conv": gid, "after": after, "limit": 500},
                                 "history")
            assert h["type"] == "history" and h["conv"] == gid, h
            got += h["messages"]
            if not h["more"]:
                break
            after = h["messages"][-1]["seq"]
        assert [m["seq"] for m in got] == list(range(1, N + 1))
        assert all(m["body"] == body(m["seq"]) and m["from"] == a.name for m in got)
        h = await cb.request({"type": "sync", "conv": gid, "after": 995}, "history")
        assert [m["seq"] for m in h["messages"]] == [996, 997, 998, 999, 1000] and h["more"] is False
        h = await cb.request({"type": "sync", "conv": gid, "before": 501, "limit": 100}, "history")
        assert [m["seq"] for m in h["messages"]] == list(range(401, 501)) and h["more"] is True
        h = await cb.request({"type": "sync", "conv": gid, "before": 3, "limit": 100}, "history")
        assert [m["seq"] for m in h["messages"]] == [1, 2] and h["more"] is False
        # The inbox over the WebSocket agrees with REST.
        ib = await cb.request({"type": "inbox", "changed_since": c0}, "inbox")
        assert [c["id"] for c in ib["inbox"]["conversations"]] == [gid]
        assert ib["inbox"]["conversations"][0]["unread"] == N
        await cb.close()
    arun(go())


@pytest.mark.parametrize("frame", [
    {"limit": 0},
    {"limit": 501},
    {"after": 1, "before": 10},
    {"after": -1},
    {"limit": "10"},
    {"before": 1.5},
], ids=["limit0", "limit501", "after+before", "after-negative", "limit-string", "before-float"])
def test_ws_sync_validation(server, frame):
    a, b = users(server, 2)
    gid = group(a, [b])

    async def go():
        ca = await Client.open(a)
        try:
            r = await ca.request(dict({"type": "sync", "conv": gid}, **frame), "history")
            assert r["type"] == "error" and r["code"] == "bad_request", r
            # The connection stays usable.
            ack = await ca.send_msg(gid, "after-bad-sync", "still here")
            assert ack["type"] == "ack" and ack["seq"] == 1, ack
        finally:
            await ca.close()
    arun(go())
