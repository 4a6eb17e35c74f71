"""Accounts and authentication: register, username/password rules, login
devices, bad credentials, logout (REST and WebSocket), token expiry."""

import asyncio
import re
import time

from parley_client import (PASSWORD, Client, arun, assert_error, login, register, rest, uname,
                           ws_status)

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def test_register_returns_user_token_device_expires(server):
    name = uname("reg")
    r = rest(server, "POST", "/v1/users", body={"username": name, "password": PASSWORD})
    assert r.status_code == 201, r.text
    j = r.json()
    assert j["user"] == name
    assert TOKEN_RE.match(j["token"]), j
    assert j["device"] == 1
    assert isinstance(j["expires"], int) and j["expires"] > time.time() * 1000, j
    # The token works.
    r = rest(server, "GET", "/v1/conversations", token=j["token"])
    assert r.status_code == 200, r.text
    assert r.json()["conversations"] == []


def test_username_rules(server):
    bad = ["ab", "a" * 33, "bad name", "bad!name", "_abc", ".abc", "-abc", "", "caf\u00e9x",
           "a/b/c"]
    for name in bad:
        r = rest(server, "POST", "/v1/users", body={"username": name, "password": PASSWORD})
        assert_error(r, 400, "bad_username")
    # The boundaries and every allowed character are accepted.
    for name in ["a" + uname("")[:2], "z" * 22 + uname("")[:10], "a.b-c_" + uname("")[:6]]:
        assert 3 <= len(name) <= 32
        u = register(server, name)
        assert u.name == name


def test_username_case_insensitive(server):
    base = uname("ci")
    u = register(server, base.upper().replace("CI", "Ci", 1))
    assert u.name == base, "usernames are stored lower case"
    r = rest(server, "POST", "/v1/users", body={"username": base, "password": PASSWORD})
    assert_error(r, 409, "username_taken")
    r = rest(server, "POST", "/v1/users", body={"username": base.upper(), "password": "other-pass-1"})
    assert_error(r, 409, "username_taken")
    # Login works with any case.
    s = login(server, base.upper())
    assert s.name == base


def test_password_rules(server):
    for pw in ["", "1234567", "x" * 257]:
        r = rest(server, "POST", "/v1/users", body={"username": uname(), "password": pw})
        assert_error(r, 400, "bad_password")
    # 8 bytes is enough; 256 is the maximum.
    register(server, password="12345678")
    register(server, password="p" * 256)


def test_register_missing_or_wrongly_typed_fields(server):
    for body in [{"username": uname()}, {"password": PASSWORD}, {},
                 {"username": 123, "password": PASSWORD},
                 {"username": uname(), "password": 12345678},
                 {"username": None, "password": PASSWORD}]:
        r = rest(server, "POST", "/v1/users", body=body)
        assert_error(r, 400)
    for data in [b"", b"{", b"not json", b"[1,2]", b'"str"']:
        r = rest(server, "POST", "/v1/users", data=data)
        assert_error(r, 400, "bad_json")


def test_login_gives_new_device_each_time(server):
    u = register(server)
    assert u.device == 1
    s2 = login(server, u.name)
    s3 = login(server, u.name)
    assert s2.name == u.name and s3.name == u.name
    assert (s2.device, s3.device) == (2, 3)
    assert len({u.token, s2.token, s3.token}) == 3
    for s in (u, s2, s3):
        assert TOKEN_RE.match(s.token)
        assert s.get("/v1/conversations").status_code == 200

    async def go():
        c = await Client.open(s3)
        assert c.hello["device"] == 3
        # the server's limits: the default --max-text (docs/protocol.md, hello)
        assert c.hello["max_text"] == 16384, c.hello
        await c.close()
    arun(go())


def test_bad_credentials_same_answer(server):
    u = register(server)
    wrong = rest(server, "POST", "/v1/sessions", body={"username": u.name, "password": "wrong-password"})
    unknown = rest(server, "POST", "/v1/sessions",
                   body={"username": uname("nobody"), "password": PASSWORD})
    invalid_name = rest(server, "POST", "/v1/sessions", body={"username": "x!", "password": PASSWORD})
    short_pw = rest(server, "POST", "/v1/sessions", body={"username": u.name, "password": "short"})
    for r in (wrong, unknown, invalid_name, short_pw):
        assert_error(r, 401, "bad_credentials")
        assert "token" not in r.text
    assert wrong.content == unknown.content, (wrong.text, unknown.text)
    # Missing fields and bad JSON are 400.
    assert_error(rest(server, "POST", "/v1/sessions", body={"username": u.name}), 400)
    assert_error(rest(server, "POST", "/v1/sessions", data=b"{nope"), 400, "bad_json")


def test_logout_revokes_token_rest_ws_and_open_sockets(server):
    u = register(server)
    other = login(server, u.name)

    async def go():
        c1 = await Client.open(u)             # opened with the token to revoke
        c2 = await Client.open(other)         # another device: stays open
        r = await asyncio.get_running_loop().run_in_executor(
            None, lambda: u.delete("/v1/sessions/current"))
        assert r.status_code == 204, r.text
        assert r.content == b""
        code = await c1.closed_with()
        assert code == 1008, code
        await c2.ping()
        # REST and WebSocket upgrade refuse the revoked token.
        r = u.get("/v1/conversations")
        assert_error(r, 401, "unauthorized")
        assert await ws_status(server, token=u.token) == 401
        assert await ws_status(server, query_token=u.token) == 401
        # Logging out again with it is 401 too.
        assert_error(u.delete("/v1/sessions/current"), 401, "unauthorized")
        # The other device's token still works.
        assert other.get("/v1/conversations").status_code == 200
        assert await ws_status(server, token=other.token) == 101
        await c2.close()
    arun(go())


def test_missing_or_garbage_authorization(server):
    u = register(server)
    cases = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Basic " + u.token},
        {"Authorization": "Bearer " + u.token[:-1]},
        {"Authorization": "Bearer " + u.token + "x"},
        {"Authorization": "Bearer " + ("A" * 43)},               # well formed, unknown
        {"Authorization": "Bearer " + u.token[:-1] + "!"},
    ]
    for h in cases:
        for method, path in [("GET", "/v1/conversations"), ("GET", "/v1/conversations/1"),
                             ("GET", "/v1/conversations/1/messages"),
                             ("DELETE", "/v1/sessions/current")]:
            r = rest(server, method, path, headers=h)
            assert_error(r, 401, "unauthorized")

    async def go():
        assert await ws_status(server) == 401
        assert await ws_status(server, token="garbage") == 401
        assert await ws_status(server, token="A" * 43) == 401
        assert await ws_status(server, query_token="A" * 43) == 401
        assert await ws_status(server, token=u.token) == 101
    arun(go())
    assert u.get("/v1/conversations").status_code == 200


def test_expired_token_is_refused(parley):
    srv = parley("--token-ttl", "1")
    u = register(srv)
    # The lifetime is the flag's, not the default 30 days.
    assert u.expires < time.time() * 1000 + 120_000, u.expires
    deadline = time.monotonic() + 20
    while time.time() * 1000 <= u.expires + 1000 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_error(u.get("/v1/conversations"), 401, "unauthorized")

    async def go():
        assert await ws_status(srv, token=u.token) == 401
    arun(go())
    # A fresh login works again (until it expires too).
    s = login(srv, u.name)
    assert s.device == 2
