"""Contract gaps closed (docs/protocol.md): a cmid reused for another body
is refused (409 cmid_reused), an empty body is refused, cursors beyond
last_seq and receipts of a seq with no message are bad_request, numbers in
queries outside 0..2^53 are bad_request (never saturated or wrapped), and
the conversation object's fields are the documented ones."""

import json
import re

from parley_client import (REPO, Client, arun, assert_error, close_all, conv_get, cursors,
                           group, history, receipts, send_rest, users)

BIG = 2 ** 53


def test_cmid_reused_for_another_body_is_refused(server):
    a, b = users(server, 2)
    gid = group(a, [b])

    async def go():
        ca, cb = await Client.open(a), await Client.open(b)
        try:
            first = await ca.send_msg(gid, "c-1", {"t": "hello"})
            assert first["type"] == "ack" and first["seq"] == 1, first
            again = await ca.send_msg(gid, "c-1", {"t": "hello"})
            assert again["type"] == "ack" and again["duplicate"] is True, again
            err = await ca.send_msg(gid, "c-1", {"t": "changed"})
            assert (err["type"], err["code"], err["ref"]) == ("error", "cmid_reused", "c-1"), err
            err = await ca.send_msg(gid, "c-1", "hello")
            assert err["type"] == "error" and err["code"] == "cmid_reused", err
            nxt = await ca.send_msg(gid, "c-2", "next")
            assert nxt["seq"] == 2, nxt
            before, _ = await cb.until(lambda f: f["type"] == "msg" and f["cmid"] == "c-2")
            assert [f["seq"] for f in before if f["type"] == "msg"] == [1], before
        finally:
            await close_all([ca, cb])
    arun(go())
    assert_error(send_rest(a, gid, "c-1", "another"), 409, "cmid_reused")
    r = send_rest(a, gid, "c-1", {"t": "hello"})
    assert r.status == 200 and r.json()["duplicate"] is True, r
    assert [(m["seq"], m["body"]) for m in history(b, gid)] == [(1, {"t": "hello"}), (2, "next")]


def test_empty_body_is_refused(server):
    a, b = users(server, 2)
    gid = group(a, [b])
    assert_error(send_rest(a, gid, "e-rest", ""), 400, "bad_request")

    async def go():
        ca = await Client.open(a)
        try:
            err = await ca.send_msg(gid, "e-ws", "")
            assert (err["type"], err["code"], err["ref"]) == ("error", "bad_request", "e-ws"), err
            assert "empty" in err["message"], err
            ok = await ca.send_msg(gid, "e-ws", " ")  # not empty: a message
            assert ok["type"] == "ack" and ok["seq"] == 1, ok
        finally:
            await ca.close()
    arun(go())
    assert [m["body"] for m in history(a, gid)] == [" "]


def test_cursor_beyond_last_seq_is_refused(server):
    a, b = users(server, 2)
    gid = group(a, [b])
    for k in (1, 2):
        assert send_rest(a, gid, f"m{k}", f"hello {k}").status == 201

    async def go():
        cb = await Client.open(b)
        try:
            for t in ("read", "delivered"):
                r = await cb.request({"type": t, "conv": gid, "seq": 3}, "never")
                assert r["type"] == "error" and r["code"] == "bad_request", r
                assert "last_seq" in r["message"], r
            assert cursors(receipts(a, gid))[b.name] == (0, 0)
            # up to last_seq is fine
            await cb.send({"type": "read", "conv": gid, "seq": 2})
            r = await cb.request({"type": "read", "conv": gid, "seq": BIG}, "never")
            assert r["code"] == "bad_request", r
            assert cursors(receipts(a, gid))[b.name] == (2, 2)
        finally:
            await cb.close()
    arun(go())


def test_receipts_of_a_seq_without_message(server):
    a, b = users(server, 2)
    gid = group(a, [b])
    assert send_rest(a, gid, "m1", "hello").status == 201
    p = f"/v1/conversations/{gid}/receipts"
    for seq in (0, 2, BIG):
        err = assert_error(a.get(p, params={"seq": seq}), 400, "bad_request")
        assert "seq" in err["message"], err
    assert receipts(a, gid, 1)["seq"] == 1


def test_query_numbers_out_of_range_are_refused(server):
    a, b = users(server, 2)
    gid = group(a, [b])
    for k in (1, 2, 3):
        assert send_rest(a, gid, f"m{k}", f"hello {k}").status == 201
    p = f"/v1/conversations/{gid}/messages"
    huge = ["18446744073709551615", "18446744073709551616", "99999999999999999999999",
            str(BIG + 1)]
    for v in huge:
        for name in ("after", "before", "limit"):
            r = a.get(p, params={name: v})
            assert_error(r, 400, "bad_request")
        assert_error(a.get("/v1/conversations", params={"changed_since": v}), 400, "bad_request")
        assert_error(a.get(f"/v1/conversations/{gid}/receipts", params={"seq": v}),
                     400, "bad_request")
    # the largest allowed: an empty page after it, everything before it
    j = a.get(p, params={"after": BIG}).json()
    assert j["messages"] == [] and j["more"] is False, j
    j = a.get(p, params={"before": BIG}).json()
    assert [m["seq"] for m in j["messages"]] == [1, 2, 3], j
    assert a.get("/v1/conversations", params={"changed_since": BIG}).status == 200


def documented_conversation():
    """The conversation object example under docs/protocol.md's ## Conversations."""
    doc = (REPO / "docs/protocol.md").read_text()
    section = doc[doc.index("\n## Conversations"):]
    m = re.search(r"```json\n(.*?)```", section, re.S)
    return json.loads(m.group(1))


def test_conversation_object_fields_are_documented(server):
    a, b = users(server, 2)
    gid = group(a, [b])
    assert send_rest(a, gid, "m1", "hello").status == 201
    got = conv_get(a, gid)
    doc = documented_conversation()
    assert set(got) == set(doc), (sorted(got), sorted(doc))
    assert set(got["last_message"]) == set(doc["last_message"])
    assert got["last_ts"] == got["last_message"]["ts"], got
