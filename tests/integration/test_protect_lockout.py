"""Failed logins by a stranger do not lock the owner out (issue 12, bug 4).

Delays after failed logins are kept per (account, source address): the
attacker's address waits, the owner at another address logs in a new
device at once. A device that logged in before presents its `device_key`
and is never delayed by others' failures, even from the attacker's
address. Guessing stays expensive: the attacker's line waits even with
the right password. Clients bind to 127.0.0.x source addresses to act as
different machines."""

import asyncio
import json

from parley_client import (PASSWORD, Control, arun, assert_error, login_attempt, register, rest,
                             retry_after_header)

ATTACKER = "127.0.0.2"
OWNER = "127.0.0.3"
CAFE = "127.0.0.4"  # a shared address: the attacker and the owner's phone


def login_key(srv, name, password, key, src):
    body = {"username": name, "password": password}
    if key is not None:
        body["device_key"] = key
    return rest(srv, "POST", "/v1/sessions", body, src=src)


def fail_three(srv, name, src):
    for _ in range(3):
        assert_error(login_attempt(srv, name, "wrong-password", src=src), 401, "bad_credentials")


def test_stranger_at_one_address_does_not_lock_the_owner_out(parley):
    srv = parley()  # no per-address login rate: only the failure delays

    async def body():
        ctl = await Control.open(srv)
        owner = register(srv, src=OWNER)
        fail_three(srv, owner.name, ATTACKER)
        # The attacker waits, even with the right password...
        r = login_attempt(srv, owner.name, owner.password, src=ATTACKER)
        err = assert_error(r, 429, "rate_limited")
        assert 0 < err["retry_after_ms"] <= 1000 and retry_after_header(r) >= 1, r
        # ... and the owner logs in a new device from another address.
        r = login_attempt(srv, owner.name, owner.password, src=OWNER)
        assert r.status == 200, r
        assert r.json()["device"] == 2
        # The attacker keeps going, once per delay: still only his wait.
        for want in (1000, 2000):
            await asyncio.sleep(want / 1000 + 0.05)
            assert_error(login_attempt(srv, owner.name, "wrong-again", src=ATTACKER), 401,
                         "bad_credentials")
            r = login_attempt(srv, owner.name, owner.password, src=ATTACKER)
            wait = assert_error(r, 429, "rate_limited")["retry_after_ms"]
            assert want < wait <= 2 * want, (want, r)
            assert login_attempt(srv, owner.name, owner.password, src=OWNER).status == 200
        await ctl.check()
        await ctl.close()

    arun(body())


def test_known_device_is_not_delayed_from_the_attackers_own_address(parley):
    srv = parley()

    async def body():
        ctl = await Control.open(srv)
        r = rest(srv, "POST", "/v1/users", {"username": "phoneowner", "password": PASSWORD},
                 src=OWNER)
        assert r.status == 201, r
        key1 = r.json()["device_key"]
        assert isinstance(key1, str) and len(key1) == 27, r
        fail_three(srv, "phoneowner", CAFE)
        # Without its key, the owner's phone at the cafe waits like the attacker.
        assert_error(login_attempt(srv, "phoneowner", PASSWORD, src=CAFE), 429, "rate_limited")
        # With it, it logs in at once, and gets the key of its new device.
        r = login_key(srv, "phoneowner", PASSWORD, key1, CAFE)
        assert r.status == 200, r
        j = r.json()
        assert j["device"] == 2 and len(j["device_key"]) == 27 and j["device_key"] != key1, j
        key2 = j["device_key"]
        # Others' failures from anywhere never delay it.
        for src in (ATTACKER, OWNER):
            fail_three(srv, "phoneowner", src)
        assert login_key(srv, "phoneowner", PASSWORD, key2, ATTACKER).status == 200
        assert login_key(srv, "phoneowner", PASSWORD, key2, OWNER).status == 200
        # A key does not get past the password.
        assert_error(login_key(srv, "phoneowner", "wrong-password", key2, OWNER), 401,
                     "bad_credentials")
        await ctl.check()
        await ctl.close()

    arun(body())


def test_a_device_key_delays_only_that_device(parley):
    srv = parley()
    r = rest(srv, "POST", "/v1/users", {"username": "stolenphone", "password": PASSWORD},
             src=OWNER)
    key = r.json()["device_key"]
    # A stolen phone (its key) guessing the password: that key waits...
    for _ in range(3):
        assert_error(login_key(srv, "stolenphone", "guess-guess", key, ATTACKER), 401,
                     "bad_credentials")
    r = login_key(srv, "stolenphone", PASSWORD, key, OWNER)
    err = assert_error(r, 429, "rate_limited")
    assert "on this device" in err["message"], err
    # ... the owner's new device elsewhere does not.
    r = login_attempt(srv, "stolenphone", PASSWORD, src=OWNER)
    assert r.status == 200, r
    assert login_key(srv, "stolenphone", PASSWORD, r.json()["device_key"], CAFE).status == 200


def test_device_key_bad_input(parley):
    srv = parley()
    a = rest(srv, "POST", "/v1/users", {"username": "keyowner", "password": PASSWORD},
             src=OWNER).json()
    b = rest(srv, "POST", "/v1/users", {"username": "otheruser", "password": PASSWORD},
             src=OWNER).json()
    # Not a string: 400, before any password check.
    for bad in (12345, None, True, ["x"], {"k": "v"}):
        r = rest(srv, "POST", "/v1/sessions",
                 {"username": "keyowner", "password": PASSWORD, "device_key": bad}, src=OWNER)
        assert_error(r, 400, "bad_request")
    # Strings that are not this account's keys are ignored: an unknown
    # device, delayed by its address's failures like any other.
    fail_three(srv, "keyowner", ATTACKER)
    forged = a["device_key"][:-1] + ("A" if a["device_key"][-1] != "A" else "B")
    for key in ("", "x", "A" * 27, "A" * 4000, forged, b["device_key"], a["device_key"] + "A",
                "\u00e9" * 27, a["token"]):
        r = login_key(srv, "keyowner", PASSWORD, key, ATTACKER)
        assert_error(r, 429, "rate_limited")
    # The real key passes; an unknown user with a key is the usual 401.
    assert login_key(srv, "keyowner", PASSWORD, a["device_key"], ATTACKER).status == 200
    assert_error(login_key(srv, "nosuchuser", PASSWORD, a["device_key"], ATTACKER), 401,
                 "bad_credentials")
    # Malformed JSON around it is still a 400.
    r = rest(srv, "POST", "/v1/sessions", None, src=OWNER,
             headers={"Content-Type": "application/json"})
    assert r.status == 400, r
    assert json.loads(r.body)["error"]["code"]
