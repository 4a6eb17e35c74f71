"""Backpressure on the WebSocket (docs/protocol.md "Backpressure"): a
`rate_limited` refusal pauses the whole connection for `retry_after_ms`;
refusals of frames that were already on their way (they arrive during the
pause, up to 64 per pause) cost no strike; the server refuses every send
during the pause, so none overtakes a refused one. A client that follows
the rule gets every message through, paced, in order, stored once, and is
never disconnected (here a websockets client following the rule by hand,
and libparley through `parley chat` reading pasted lines); a client that
ignores the pause is still closed with 1008."""

import asyncio
import json
import signal
import time

from websockets.exceptions import ConnectionClosed

from parley_client import (SLOW, T, Client, Control, arun, cli_users, close_key, get_metrics,
                           group, history, mval, users)

RL = "parley_rate_limited_total"
UPGRADES = "parley_ws_upgrades_total"
# the defaults, passed explicitly (the test servers turn limits off otherwise)
DEFAULT_LIMITS = ("--rate-msgs", "50", "--rate-user-msgs", "100", "--rate-frames", "200")
PAUSE_FREE = 64  # refusals per pause that cost no strike (docs/protocol.md)
N = 500


async def paste(client, conv, bodies, window):
    """Sends every body as a message, following docs/protocol.md
    "Backpressure": at most `window` sends unanswered; a rate_limited
    refusal pauses the connection until retry_after_ms from its arrival
    (no frame at all is sent meanwhile); refused messages go again after
    the pause, oldest first, with the same cmid. Returns (acks by cmid in
    ack order, refusals, pauses)."""
    items = [{"cmid": f"paste-{i}", "body": b, "inflight": False} for i, b in enumerate(bodies)]
    left = {it["cmid"]: it for it in items}
    acks, refusals, pauses = [], [], 0
    paused_until = 0.0
    deadline = time.monotonic() + 30 * T
    while left:
        now = time.monotonic()
        assert now < deadline, f"{len(left)} of {len(items)} messages left unacked"
        if now >= paused_until:
            inflight = sum(1 for it in left.values() if it["inflight"])
            for it in items:  # oldest first: refused ones before new ones
                if inflight >= window:
                    break
                if it["cmid"] in left and not it["inflight"]:
                    await client.send({"type": "send", "conv": conv, "cmid": it["cmid"],
                                       "body": it["body"]})
                    it["inflight"] = True
                    inflight += 1
        wait = paused_until - now if now < paused_until else T
        try:
            f = await client.next(timeout=max(0.001, wait))
        except asyncio.TimeoutError:
            assert now < paused_until, "no answer within the bound"
            continue
        if f.get("type") == "ack" and f.get("cmid") in left:
            del left[f["cmid"]]
            acks.append(f)
        elif f.get("type") == "error" and f.get("ref") in left:
            assert f["code"] == "rate_limited", f
            assert isinstance(f["retry_after_ms"], int) and f["retry_after_ms"] > 0, f
            refusals.append(f)
            left[f["ref"]]["inflight"] = False
            until = time.monotonic() + f["retry_after_ms"] / 1000
            if until > paused_until:
                if time.monotonic() >= paused_until:
                    pauses += 1
                paused_until = until
        elif f.get("type") in ("error", "ack"):
            raise AssertionError(f"unexpected answer while pasting: {f}")
    return acks, refusals, pauses


def check_pasted(reader, conv, cmids, bodies, acks):
    """Every message stored once, in the order sent, with gapless seqs."""
    assert sorted(a["cmid"] for a in acks) == sorted(cmids)
    assert not [a for a in acks if a.get("duplicate")], "a message was sent twice"
    by_seq = sorted(acks, key=lambda a: a["seq"])
    assert [a["cmid"] for a in by_seq] == cmids, "stored out of order"
    stored = history(reader, conv)
    assert [m["cmid"] for m in stored] == cmids
    assert [m["body"] for m in stored] == bodies
    assert [m["seq"] for m in stored] == list(range(1, len(cmids) + 1))


def test_paste_following_the_rule_gets_everything_through(parley):
    """Default limits (50 msgs/s, burst 200): 500 messages pasted by a
    client that keeps 64 sends in flight (the most the rule allows) and
    pauses as told. The burst passes, then the server paces it with
    refusals; every message is acked once, stored once in order, the
    connection is never closed, and the control client is unaffected."""
    srv = parley(*DEFAULT_LIMITS)

    async def body():
        ctl = await Control.open(srv)
        a, b = users(srv, 2)
        g = group(a, [b])
        ca = await Client.open(a)
        m0 = get_metrics(srv.port)
        bodies = [f"line {i}" for i in range(N)]
        acks, refusals, pauses = await paste(ca, g, bodies, window=PAUSE_FREE)
        assert refusals and pauses, "500 messages at once were never paced"
        check_pasted(b, g, [f"paste-{i}" for i in range(N)], bodies, acks)
        await ca.ping()  # still open
        await ctl.exchange()
        m1 = get_metrics(srv.port)
        assert mval(m1, close_key(1008)) == mval(m0, close_key(1008)), "closed for following the rule"
        assert mval(m1, RL) - mval(m0, RL) == len(refusals)
        await ctl.check()
        await ca.close()
        await ctl.close()

    arun(body(), timeout=300)


def test_issue_case_four_in_flight_is_never_cut_off(parley):
    """The reported case: 4 sends in flight, resending after
    retry_after_ms. With the pause rule the connection survives 500
    messages (it was closed with 1008 after 278 acks)."""
    srv = parley(*DEFAULT_LIMITS)

    async def body():
        a, b = users(srv, 2)
        g = group(a, [b])
        ca = await Client.open(a)
        m0 = get_metrics(srv.port)
        bodies = [{"n": i} for i in range(N)]
        acks, refusals, _ = await paste(ca, g, bodies, window=4)
        assert refusals, "never paced"
        check_pasted(b, g, [f"paste-{i}" for i in range(N)], bodies, acks)
        await ca.ping()
        assert mval(get_metrics(srv.port), close_key(1008)) == mval(m0, close_key(1008))
        await ca.close()

    arun(body(), timeout=300)


def test_refusals_during_the_pause_name_one_deadline(parley):
    """--rate-msgs 5 (burst 20): 40 sends at once. The first refusal
    starts the pause; the sends behind it are all refused too (none
    overtakes a refused one, even if the bucket refills meanwhile), every
    refusal names the same end of the pause (retry_after_ms falls as time
    passes, never rises), and the pause lasts until a quarter second's
    worth of the rate is back (more than 250 ms)."""
    srv = parley("--rate-msgs", "5")

    async def body():
        a, b = users(srv, 2)
        g = group(a, [b])
        ca = await Client.open(a)
        cmids = [f"p-{i}" for i in range(40)]
        for cm in cmids:
            await ca.send({"type": "send", "conv": g, "cmid": cm, "body": "x"})
        ans = await ca.answers(cmids)
        acked = [c for c in cmids if ans[c]["type"] == "ack"]
        assert acked == cmids[:20], acked
        refused = [ans[c] for c in cmids[20:]]
        assert all(f["type"] == "error" and f["code"] == "rate_limited" for f in refused), refused
        waits = [f["retry_after_ms"] for f in refused]
        assert waits == sorted(waits, reverse=True), waits
        assert waits[0] > 250, waits
        await ca.ping()
        assert [m["cmid"] for m in history(b, g)] == acked
        await ca.close()

    arun(body())


def test_client_ignoring_the_pause_is_closed_1008(parley):
    """Default limits: a client that keeps pipelining sends through the
    pause is refused; 64 refusals in the pause are free, the rest count,
    and after 50 strikes it is closed with 1008. Only the accepted prefix
    is stored."""
    srv = parley(*DEFAULT_LIMITS)

    async def body():
        ctl = await Control.open(srv)
        a, b = users(srv, 2)
        g = group(a, [b])
        ca = await Client.open(a)
        m0 = get_metrics(srv.port)
        sent = 0
        try:
            for i in range(2000):
                await ca.ws.send(json.dumps({"type": "send", "conv": g, "cmid": f"ign-{i}",
                                             "body": "spam"}))
                sent += 1
        except ConnectionClosed:
            pass
        code = await ca.closed_with()
        assert code == 1008, (code, ca.ws.close_reason)
        errors = [f for f in ca.pending if f.get("type") == "error"]
        assert errors and all(f["code"] == "rate_limited" for f in errors)
        m1 = get_metrics(srv.port)
        assert mval(m1, close_key(1008)) - mval(m0, close_key(1008)) == 1
        refused = mval(m1, RL) - mval(m0, RL)
        assert refused >= 50 + PAUSE_FREE, refused
        # a barrier after the accepted prefix: nothing refused was stored
        r = b.post(f"/v1/conversations/{g}/messages", {"cmid": "barrier", "body": "b"})
        assert r.status == 201, r
        stored = [m["cmid"] for m in history(b, g)]
        assert stored[-1] == "barrier"
        stored = stored[:-1]
        assert stored == [f"ign-{i}" for i in range(len(stored))] and len(stored) >= 200
        assert not set(stored) & {f.get("ref") for f in errors}
        await ctl.check()
        await ctl.close()

    arun(body())


def test_client_resuming_early_pays_strikes(parley):
    """--rate-msgs 1 (burst 4): a pause's free refusals cover only what
    was already on its way, 64 of them. A client that is refused and then
    keeps sending without waiting gets: the first refusal (a strike, it
    starts the pause), 64 free refusals, then a strike for each refusal
    until the 50th closes the connection with 1008 (without an answer)."""
    srv = parley("--rate-msgs", "1")

    async def body():
        a, b = users(srv, 2)
        g = group(a, [b])
        ca = await Client.open(a)
        first = [f"e-{i}" for i in range(5)]
        for cm in first:
            await ca.send({"type": "send", "conv": g, "cmid": cm, "body": "x"})
        ans = await ca.answers(first)
        assert [ans[c]["type"] for c in first] == ["ack"] * 4 + ["error"], ans
        assert ans["e-4"]["retry_after_ms"] > 1000, ans["e-4"]
        m0 = get_metrics(srv.port)
        try:
            for i in range(300):
                await ca.ws.send(json.dumps({"type": "send", "conv": g, "cmid": f"early-{i}",
                                             "body": "x"}))
        except ConnectionClosed:
            pass
        code = await ca.closed_with()
        assert code == 1008, (code, ca.ws.close_reason)
        errors = [f for f in ca.pending if f.get("type") == "error"]
        assert [f["ref"] for f in errors] == [f"early-{i}" for i in range(PAUSE_FREE + 48)]
        m1 = get_metrics(srv.port)
        assert mval(m1, RL) - mval(m0, RL) == PAUSE_FREE + 49
        assert [m["cmid"] for m in history(b, g)] == first[:4]

    arun(body())


def test_cli_paste_500_lines_with_default_limits(parley, open_chat, tmp_path):
    """500 lines pasted into `parley chat` (libparley) under the default
    limits: the library pauses as told and resends the refused ones
    first. Every line is acked once and stored once, in the order pasted;
    the connection is never lost (one upgrade, no backoff, no 1008)."""
    srv = parley(*DEFAULT_LIMITS)
    alice, bob = cli_users(tmp_path, srv.url, 2)
    cid = alice.json("direct", bob.name)["id"]
    m0 = get_metrics(srv.port)
    a = open_chat(alice, cid, "--last", "0", "--wait", "120")
    a.event("state", state="connected")
    lines = [f"pasted line {i}" for i in range(N)]
    for t in lines:
        a.line(t)
    a.close_stdin()
    assert a.exit_code(timeout=240) == 0, a.events[-5:]
    events = a.drain()
    assert events[-1] == {"event": "exit", "code": 0, "unsent": 0}
    queued = [e["cmid"] for e in events if e.get("event") == "queued"]
    acks = [e for e in events if e.get("event") == "ack"]
    assert len(queued) == N and len(set(queued)) == N
    assert sorted(e["cmid"] for e in acks) == sorted(queued), "each acked exactly once"
    states = [e["state"] for e in events if e.get("event") == "state"]
    assert states.count("connected") == 1 and "backoff" not in states, \
        f"the connection was lost: {states}"
    assert not [e for e in events if e.get("event") == "error"], \
        [e for e in events if e.get("event") == "error"][:3]
    stored = history(bob, cid)
    assert [m["cmid"] for m in stored] == queued, "stored out of order or not once"
    assert [m["body"] for m in stored] == lines
    assert [m["seq"] for m in stored] == list(range(1, N + 1))
    m1 = get_metrics(srv.port)
    assert mval(m1, UPGRADES) - mval(m0, UPGRADES) == 1
    assert mval(m1, close_key(1008)) == mval(m0, close_key(1008))
    assert mval(m1, RL) > mval(m0, RL), "500 lines at once were never paced"


def test_cli_waits_while_the_server_paces(parley, open_chat, tmp_path):
    """`parley chat` at end of input waits for the acks while they come:
    --wait bounds the wait without an acknowledgement, not the whole drain.
    --rate-msgs 10 (burst 40) paces 100 lines over several seconds, longer
    than --wait 3; all are acked and the exit status is 0. (It used to stop
    after 58-82 acks now and then: a pause that ended between libparley's
    last write and the timer it armed left nothing but the keepalive to wake
    it; tests/unit/test_client_outbox.c and test_client.c hold that case.)
    Bad input: a server that stops answering still ends the wait (exit 3,
    unsent)."""
    srv = parley("--rate-msgs", "10")
    alice, bob = cli_users(tmp_path, srv.url, 2)
    cid = alice.json("direct", bob.name)["id"]
    # --wait is a time bound of the CLI: stretched for slow (sanitizer) builds
    a = open_chat(alice, cid, "--last", "0", "--wait", str(int(3 * SLOW)))
    a.event("state", state="connected")
    lines = [f"paced {i}" for i in range(100)]
    for t in lines:
        a.line(t)
    a.close_stdin()
    assert a.exit_code(timeout=120) == 0, a.events[-5:]
    assert a.drain()[-1] == {"event": "exit", "code": 0, "unsent": 0}
    assert [m["body"] for m in history(bob, cid)] == lines
    # the server stops (SIGSTOP): no ack comes, the CLI gives up after --wait
    b = open_chat(bob, cid, "--last", "0", "--wait", str(int(2 * SLOW)))
    b.event("state", state="connected")
    srv.signal(signal.SIGSTOP)
    try:
        b.line("into the void")
        b.close_stdin()
        assert b.exit_code(timeout=60) == 3
    finally:
        srv.signal(signal.SIGCONT)
    assert b.drain()[-1] == {"event": "exit", "code": 3, "unsent": 1}
