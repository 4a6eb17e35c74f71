"""Bad input at the application level gets a documented error and the
connection stays open: WebSocket frames (bad_json, unknown_type,
bad_request with `ref`, too_large) and REST bodies, paths and methods (one
keep-alive connection); afterwards the same connections still chat."""

import json

from parley_client import Client, RawHTTP, arun, close_all, group, history, users

MAX_TEXT = 16384


def frame_cases(gid):
    """(frame, code, ref): ref None = no "ref" expected."""
    big = "x" * (MAX_TEXT - 1)  # 16385 bytes as JSON
    return [
        ("not json", "bad_json", None),
        ("{", "bad_json", None),
        ('{"type":"send",}', "bad_json", None),
        ("[1,2,3]", "bad_json", None),
        ('"send"', "bad_json", None),
        ("", "bad_json", None),
        ({"type": "explode", "id": "u1"}, "unknown_type", "u1"),
        ({"type": "SEND", "id": 42}, "unknown_type", 42),
        ({"id": "t1"}, "bad_request", "t1"),
        ({"type": 5, "id": "t2"}, "bad_request", "t2"),
        # send
        ({"type": "send", "id": "s1", "conv": str(gid), "cmid": "c", "body": "x"}, "bad_request", "s1"),
        ({"type": "send", "id": "s2", "cmid": "c", "body": "x"}, "bad_request", "s2"),
        ({"type": "send", "id": "s3", "conv": -gid, "cmid": "c", "body": "x"}, "bad_request", "s3"),
        ({"type": "send", "id": "s4", "conv": 0, "cmid": "c", "body": "x"}, "bad_request", "s4"),
        ({"type": "send", "id": "s5", "conv": gid + 0.5, "cmid": "c", "body": "x"}, "bad_request", "s5"),
        ({"type": "send", "id": "s6", "conv": gid, "cmid": "c" * 65, "body": "x"}, "bad_request", "s6"),
        ({"type": "send", "id": "s7", "conv": gid, "cmid": "", "body": "x"}, "bad_request", "s7"),
        ({"type": "send", "id": "s8", "conv": gid, "cmid": 12, "body": "x"}, "bad_request", "s8"),
        ({"type": "send", "id": "s9", "conv": gid, "body": "x"}, "bad_request", "s9"),
        # with a valid cmid the ref of a send is its cmid
        ({"type": "send", "id": "s10", "conv": gid, "cmid": "no-body"}, "bad_request", "no-body"),
        ({"type": "send", "id": "s11", "conv": gid, "cmid": "null-body", "body": None},
         "bad_request", "null-body"),
        ({"type": "send", "id": "s12", "conv": gid, "cmid": "big", "body": big}, "too_large", "big"),
        ({"type": "send", "id": "s13", "conv": gid, "cmid": "big-obj",
          "body": {"t": "y" * MAX_TEXT}}, "too_large", "big-obj"),
        # sync
        ({"type": "sync", "id": "y1", "conv": "x"}, "bad_request", "y1"),
        ({"type": "sync", "id": "y2"}, "bad_request", "y2"),
        ({"type": "sync", "id": "y3", "conv": gid, "after": "0"}, "bad_request", "y3"),
        # cursors
        ({"type": "delivered", "id": "d1", "conv": gid, "seq": -1}, "bad_request", "d1"),
        ({"type": "delivered", "id": "d2", "conv": gid}, "bad_request", "d2"),
        ({"type": "delivered", "id": "d3", "conv": "1", "seq": 1}, "bad_request", "d3"),
        ({"type": "read", "id": "r1", "conv": gid, "seq": -5}, "bad_request", "r1"),
        ({"type": "read", "id": "r2", "conv": gid, "seq": "1"}, "bad_request", "r2"),
        ({"type": "read", "id": "r3", "conv": gid, "seq": 1.5}, "bad_request", "r3"),
        ({"type": "read", "id": "r4", "seq": 1}, "bad_request", "r4"),
        # typing, inbox
        ({"type": "typing", "id": "k1"}, "bad_request", "k1"),
        ({"type": "typing", "id": "k2", "conv": [gid]}, "bad_request", "k2"),
        ({"type": "inbox", "id": "i1", "changed_since": "x"}, "bad_request", "i1"),
        ({"type": "inbox", "id": "i2", "changed_since": -1}, "bad_request", "i2"),
    ]


def test_ws_bad_frames_get_errors_and_connection_survives(server):
    a, b = users(server, 2)
    gid = group(a, [b])

    async def go():
        ca, cb = await Client.open(a), await Client.open(b)
        try:
            problems = []
            for frame, code, ref in frame_cases(gid):
                await ca.send(frame)
                # Replies come in order on one connection: the next error is this one's.
                r = await ca.wait(lambda f: f["type"] == "error",
                                  what=f"error for {str(frame)[:80]}")
                if r.get("code") != code or r.get("ref") != ref or \
                        not isinstance(r.get("message"), str):
                    problems.append((str(frame)[:100], code, ref, r))
                await ca.ping()  # still open and answering
            assert problems == [], "\n".join(map(repr, problems))
            # At the limit: a body of exactly 16 KiB as JSON is accepted.
            ack = await ca.send_msg(gid, "at-limit", "z" * (MAX_TEXT - 2))
            assert ack["type"] == "ack" and ack["seq"] == 1, ack
            ack = await ca.send_msg(gid, "good", {"text": "still chatting"})
            assert ack["type"] == "ack" and ack["seq"] == 2, ack
            m = await cb.wait_type("msg", cmid="at-limit")
            assert m["seq"] == 1
            m = await cb.wait_type("msg", cmid="good")
            assert m["seq"] == 2 and m["body"] == {"text": "still chatting"}
            ack = await cb.send_msg(gid, "reply", "got it")
            assert ack["seq"] == 3
            m = await ca.wait_type("msg", cmid="reply")
            assert m["from"] == b.name and m["body"] == "got it"
        finally:
            await close_all([ca, cb])
    arun(go())
    hist = history(b, gid)
    assert [m["cmid"] for m in hist] == ["at-limit", "good", "reply"], "a refused frame was stored"


def raw_request(method, path, token=None, body=None, ctype="application/json"):
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    if body is not None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


def test_rest_bad_input_keeps_connection(server):
    a, b = users(server, 2)
    gid = group(a, [b])
    t = a.token
    bad_json = ["{", "nope", "[1]", "", '{"cmid":"a","body":"b"', '"x"', b'{"cmid":"\xff"}']
    cases = []
    for path in ["/v1/users", "/v1/sessions", "/v1/conversations",
                 f"/v1/conversations/{gid}/messages", f"/v1/conversations/{gid}/members"]:
        for body in bad_json:
            cases.append(("POST", path, body, 400, "bad_json", None))
    cases += [
        # wrong types
        ("POST", "/v1/users", {"username": ["x"], "password": "12345678"}, 400, None, None),
        ("POST", "/v1/conversations", {"type": 1}, 400, "bad_request", None),
        ("POST", "/v1/conversations", {"type": "group", "name": {"n": 1}}, 400, "bad_request", None),
        ("POST", f"/v1/conversations/{gid}/messages", {"cmid": 1, "body": "x"}, 400, "bad_request", None),
        ("POST", f"/v1/conversations/{gid}/messages", {"cmid": "n", "body": None}, 400, "bad_request", None),
        ("POST", f"/v1/conversations/{gid}/messages", {"cmid": "big", "body": "x" * MAX_TEXT},
         413, "too_large", None),
        ("POST", f"/v1/conversations/{gid}/members", {"user": False}, 400, "bad_request", None),
        ("GET", f"/v1/conversations/{gid}/messages?limit=abc", None, 400, "bad_request", None),
        ("GET", f"/v1/conversations/{gid}/messages?after=-3", None, 400, "bad_request", None),
        ("GET", "/v1/conversations?changed_since=soon", None, 400, "bad_request", None),
        # unknown endpoints
        ("GET", "/v1/nope", None, 404, "not_found", None),
        ("GET", "/v1/conversations/abc", None, 404, "not_found", None),
        ("GET", f"/v1/conversations/{gid}/nope", None, 404, "not_found", None),
        ("GET", f"/v1/conversations/{gid}/members/{b.name}/x", None, 404, "not_found", None),
        # wrong methods
        ("PUT", "/v1/users", {}, 405, None, {"POST"}),
        ("GET", "/v1/users", None, 405, None, {"POST"}),
        ("GET", "/v1/sessions", None, 405, None, {"POST"}),
        ("POST", "/v1/sessions/current", {}, 405, None, {"DELETE"}),
        ("DELETE", "/v1/conversations", None, 405, None, {"GET", "POST"}),
        ("PUT", f"/v1/conversations/{gid}", {}, 405, None, {"GET"}),
        ("DELETE", f"/v1/conversations/{gid}/messages", None, 405, None, {"GET", "POST"}),
        ("GET", f"/v1/conversations/{gid}/members", None, 405, None, {"POST"}),
        ("GET", f"/v1/conversations/{gid}/members/{b.name}", None, 405, None, {"DELETE"}),
        ("POST", f"/v1/conversations/{gid}/receipts", {}, 405, None, {"GET"}),
    ]
    problems = []
    with RawHTTP(server.port) as conn:
        for method, path, body, status, code, allow in cases:
            resp = conn.request(raw_request(method, path, t, body))
            label = (method, path, str(body)[:40])
            if resp.status != status:
                problems.append((label, "status", resp.status, resp.body[:200]))
                continue
            if (resp.header("connection") or "").lower() == "close":
                problems.append((label, "connection closed"))
                break
            try:
                err = resp.json()["error"]
            except (ValueError, KeyError, TypeError):
                problems.append((label, "no JSON error body", resp.body[:200]))
                continue
            if code is not None and err.get("code") != code:
                problems.append((label, "code", err))
            if allow is not None:
                got = {m.strip() for m in (resp.header("allow") or "").split(",") if m.strip()}
                if got != allow:
                    problems.append((label, "Allow", resp.header("allow")))
        # The same connection still sends a message and reads it back.
        resp = conn.request(raw_request("POST", f"/v1/conversations/{gid}/messages", t,
                                        {"cmid": "after-all", "body": "fine"}))
        assert resp.status == 201, resp
        assert resp.json()["seq"] == 1
        resp = conn.request(raw_request("GET", f"/v1/conversations/{gid}/messages", t))
        assert resp.status == 200, resp
        assert [(m["cmid"], m["body"]) for m in resp.json()["messages"]] == [("after-all", "fine")]
    assert problems == [], "\n".join(map(repr, problems))
