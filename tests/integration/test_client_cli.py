"""The `parley` CLI (and through it libparley) against a real parleyd:
accounts and the config file, conversations, send/history/inbox (and the
delivered cursor they move), two `parley chat` sessions driven through
pipes, chats in a pseudo-terminal (ticks, no typing for /commands), and bad
input with its exit statuses.

Every process is started with bounded waits and stopped by PID. No timing
assertions: waits are upper bounds only.
"""

import http.server
import json
import os
import pty
import select
import signal
import stat
import subprocess
import threading
import time

import pytest
import requests

from parley_client import (HOST, PARLEY_CLI, PASSWORD, WAIT, Cli, cli_users, free_port, history,
                           history_page, login_attempt, rest, uname)

EXIT_OK, EXIT_USAGE, EXIT_SERVER, EXIT_NETWORK = 0, 1, 2, 3


@pytest.fixture(autouse=True)
def _cli_built():
    if not os.access(PARLEY_CLI, os.X_OK):
        pytest.fail(f"CLI not found: {PARLEY_CLI} (build it with `make`, or set PARLEY_CLI)")


def json_error(r):
    """The --json error object a failed command printed on stderr."""
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON error on stderr: {r.stderr!r}"
    return json.loads(lines[-1])["error"]


def cursors(cli, conv, user):
    """(delivered, read) of user in conv, read through REST by cli."""
    r = requests.get(f"{cli.url}/v1/conversations/{conv}/receipts",
                     headers={"Authorization": "Bearer " + cli.token()}, timeout=30)
    assert r.status_code == 200, r.text
    [m] = [m for m in r.json()["members"] if m["user"] == user]
    return m["delivered"], m["read"]


class Tty:
    """`parley chat ...` on a pseudo-terminal; everything it writes is kept in
    self.screen (raw bytes, escapes included)."""

    def __init__(self, cli, *args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec the CLI on the terminal
            try:
                os.execve(PARLEY_CLI, [PARLEY_CLI, "chat", *[str(a) for a in args]],
                          cli.env(TERM="xterm"))
            finally:
                os._exit(127)
        self.screen = b""

    def read_until(self, token, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while token not in self.screen and time.monotonic() < deadline:
            r, _, _ = select.select([self.fd], [], [], 0.2)
            if r:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                self.screen += data
        return token in self.screen

    def type(self, text):
        """Types text a key at a time, as people do: each key is echoed (so
        handled) before the next."""
        for i in range(len(text)):
            os.write(self.fd, text[i].encode())
            assert self.read_until(text[:i + 1].encode()), self.screen[-500:]

    def wait_exit(self, timeout=WAIT):
        """The exit status once the chat ended (None if it did not in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wpid, st = os.waitpid(self.pid, os.WNOHANG)
            if wpid:
                self.pid = 0
                return os.WEXITSTATUS(st) if os.WIFEXITED(st) else -1
            self.read_until(b"\x00", timeout=0.05)  # keep draining the terminal
            time.sleep(0.05)
        return None

    def close(self):
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0
        os.close(self.fd)


# --------------------------------------------------------------------------
# accounts and the config file
# --------------------------------------------------------------------------


def test_register_login_logout(parley, tmp_path):
    srv = parley("--insecure-fast-kdf")
    alice = Cli(tmp_path, srv.url)
    j = alice.register()
    assert j["user"] == alice.name and j["device"] == 1 and j["registered"] is True
    assert j["server"] == srv.url
    # the config file: created with its directories, mode 0600, the token in it
    st = os.stat(alice.config)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert stat.S_IMODE(os.stat(alice.config.parent).st_mode) == 0o700
    tok1 = alice.token()
    assert len(tok1) == 43
    assert f"user={alice.name}" in alice.config.read_text()
    assert alice.json("whoami") == {"user": alice.name, "server": srv.url}

    # login: a new device, a new token; the file stays 0600 even with a lax umask
    old = os.umask(0)
    try:
        r = alice.run("login", alice.name, input=PASSWORD + "\n")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert "logged in as" in r.stdout and alice.name in r.stdout
    assert stat.S_IMODE(os.stat(alice.config).st_mode) == 0o600
    tok2 = alice.token()
    assert tok2 and tok2 != tok1
    j = alice.json("login", alice.name, input=PASSWORD + "\n")
    assert j["device"] == 3 and j["registered"] is False

    # wrong password: exit 2, the server's code; the stored token is untouched
    tok3 = alice.token()
    r = alice.run("--json", "login", alice.name, input="wrong password\n")
    assert r.returncode == EXIT_SERVER, (r.stdout, r.stderr)
    err = json_error(r)
    assert err["code"] == "bad_credentials" and err["exit"] == EXIT_SERVER
    assert r.stdout == ""
    assert alice.token() == tok3
    r = alice.run("login", alice.name, input="wrong password\n")
    assert r.returncode == EXIT_SERVER and "bad_credentials" in r.stderr

    # a taken name and a bad name: exit 2
    other = Cli(tmp_path, srv.url)  # its own (absent) config file
    r = other.run("--json", "register", alice.name, input=PASSWORD + "\n")
    assert r.returncode == EXIT_SERVER and json_error(r)["code"] == "username_taken"
    r = other.run("--json", "register", "x!", input=PASSWORD + "\n")
    assert r.returncode == EXIT_SERVER and json_error(r)["code"] == "bad_username"
    assert not other.config.exists()

    # logout revokes the token on the server and forgets it
    j = alice.json("logout")
    assert j == {"user": alice.name, "logged_out": True, "token_was_valid": True}
    assert "token=\n" in alice.config.read_text()
    assert stat.S_IMODE(os.stat(alice.config).st_mode) == 0o600
    r = rest(srv, "GET", "/v1/conversations", token=tok3)
    assert r.status_code == 401
    # the older device tokens still work (logout is per device)
    r = rest(srv, "GET", "/v1/conversations", token=tok1)
    assert r.status_code == 200
    # logged out: commands that need a token say so, exit 2
    r = alice.run("logout")
    assert r.returncode == EXIT_SERVER and "not logged in" in r.stderr
    r = alice.run("--json", "inbox")
    assert r.returncode == EXIT_SERVER and "not logged in" in json_error(r)["message"]

    # a token revoked elsewhere: logout still forgets it (exit 0)
    alice.run("login", alice.name, input=PASSWORD + "\n")
    rest(srv, "DELETE", "/v1/sessions/current", token=alice.token())
    j = alice.json("logout")
    assert j["token_was_valid"] is False
    # the server saved at login is the default afterwards (no PARLEY_SERVER)
    alice.run("login", alice.name, input=PASSWORD + "\n")
    env = alice.env()
    del env["PARLEY_SERVER"]
    r = alice.run("--json", "whoami", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["server"] == srv.url


def device_keys(cli):
    """[(server, user, key)] of the config file's device_key lines."""
    return [tuple(ln[len("device_key="):].split(" ")) for ln in cli.config.read_text().splitlines()
            if ln.startswith("device_key=")]


def test_login_from_a_known_machine_is_not_delayed_by_strangers(parley, tmp_path):
    """Issue 12, bug 4: the CLI keeps the device_key of its last register
    or login per server and user in its config file and presents it at the
    next login. A stranger spreading wrong passwords over many source
    addresses runs the account into its ceiling (docs/protocol.md, "Failed
    logins and known devices"): a new device waits (429), while `parley
    login` from the machine that logged in before succeeds at once."""
    srv = parley("--insecure-fast-kdf")
    alice = Cli(tmp_path, srv.url)
    alice.register()
    [(server, user, key1)] = device_keys(alice)
    assert (server, user, len(key1)) == (srv.url, alice.name, 27)
    # The stranger: three wrong passwords from each of many addresses,
    # until a new device (no key, the right password) is delayed too.
    for i in range(2, 120):
        got = [login_attempt(srv, alice.name, "wrong-password", src=f"127.0.0.{i}").status
               for _ in range(3)]
        assert set(got) <= {401, 429}, got
        if got[0] == 429:  # a fresh address refused: the account's ceiling
            r = login_attempt(srv, alice.name, PASSWORD, src=HOST)
            if r.status == 429:
                assert "device_key" in r.json()["error"]["message"], r
                break
    else:
        pytest.fail("the account never reached its ceiling of failed logins")
    # The machine that logged in before: at once, and it keeps the new key.
    j = alice.json("login", alice.name, input=PASSWORD + "\n")
    assert j["user"] == alice.name and j["registered"] is False
    [(server, user, key2)] = device_keys(alice)
    assert (server, user) == (srv.url, alice.name) and len(key2) == 27 and key2 != key1
    assert stat.S_IMODE(os.stat(alice.config).st_mode) == 0o600
    # The key outlives a logout (it is no credential by itself), and the
    # next login presents it: the stranger still cannot delay it.
    alice.json("logout")
    assert device_keys(alice) == [(srv.url, alice.name, key2)]
    r = alice.run("login", alice.name.upper(), input=PASSWORD + "\n")
    assert r.returncode == EXIT_OK, r.stderr
    [(_, _, key3)] = device_keys(alice)
    assert key3 != key2


def test_device_keys_per_server_and_bad_lines(parley, tmp_path):
    """Keys are kept per server and user; config lines that are not
    `device_key=SERVER USER KEY` with a base64url KEY are dropped, never
    sent, and do not stop the CLI."""
    a, b = parley("--insecure-fast-kdf"), parley("--insecure-fast-kdf")
    u = Cli(tmp_path, a.url)
    u.register()
    on_b = u.run("--json", "--server", b.url, "register", u.name, input=PASSWORD + "\n")
    assert on_b.returncode == EXIT_OK, on_b.stderr
    keys = device_keys(u)
    assert [(s, n) for s, n, _ in keys] == [(a.url, u.name), (b.url, u.name)], keys
    text = u.config.read_text()
    bad = ["device_key=", "device_key=onlyone", "device_key=two parts",
           f"device_key={a.url} {u.name} not*base64", f"device_key={a.url} {u.name} " + "A" * 200,
           f"device_key=http://x y {u.name} AAAA", "device_key " + "x" * 3000,
           f"device_key={a.url}  AAAA", "device_key=\x01 \x02 \x03"]
    u.config.write_text(text + "\n".join(bad) + "\n")
    r = u.run("--json", "login", u.name, input=PASSWORD + "\n")
    assert r.returncode == EXIT_OK, r.stderr
    after = device_keys(u)
    assert [(s, n) for s, n, _ in after] == [(b.url, u.name), (a.url, u.name)], after
    assert after[0] == keys[1] and after[1][2] != keys[0][2]
    assert all(len(k) == 27 for _, _, k in after)
    assert "not*base64" not in u.config.read_text()
    # A wrong password changes no key.
    r = u.run("login", u.name, input="wrong password\n")
    assert r.returncode == EXIT_SERVER
    assert device_keys(u) == after


class FakeAuth:
    """A REST peer for register and login only: it answers each with a new
    device and key and keeps the JSON bodies it was sent (what the CLI
    presented)."""

    def __init__(self):
        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                bodies.append((self.path, body))
                n = len(bodies)
                out = json.dumps({"user": body["username"], "token": "t" * 43, "device": n,
                                  "expires": 4102444800000,
                                  "device_key": f"key{self.server.server_port}x{n:018d}"}).encode()
                self.send_response(201 if self.path == "/v1/users" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.httpd.server_port}"
        self.t = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.t.start()

    def presented(self):
        """The device_key the last login sent, or None."""
        return self.bodies[-1][1].get("device_key")

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_device_keys_for_a_server_list(tmp_path):
    """A list of servers (a cluster's nodes) is one key of the config file,
    normalized (no blanks around an entry, no trailing '/'); a list without
    a key of its own presents the newest key of a list that names one of
    its servers (the nodes share their accounts); a server the list does
    not name presents nothing."""
    a, b, other = FakeAuth(), FakeAuth(), FakeAuth()
    try:
        dead = f"http://{HOST}:{free_port()}"
        u = Cli(tmp_path, a.url)
        listed = f" {a.url}/ ,{b.url}"
        assert u.run("--server", listed, "register", u.name, input=PASSWORD + "\n").returncode == 0
        [(server, user, key1)] = device_keys(u)
        assert (server, user) == (f"{a.url},{b.url}", u.name)
        # the same list, spelled otherwise: its own key
        r = u.run("--server", f"{a.url},{b.url}/", "login", u.name, input=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
        assert a.presented() == key1
        [(_, _, key2)] = device_keys(u)
        # another list with a server in common (its first is down: the login
        # goes on to b): the newest key of the shared server
        r = u.run("--server", f"{dead},{b.url}", "login", u.name.upper(), input=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
        assert b.presented() == key2
        keys = device_keys(u)
        assert [s for s, _, _ in keys] == [f"{a.url},{b.url}", f"{dead},{b.url}"]
        key3 = keys[1][2]
        # one of the servers alone: the newest of the lists that name it
        assert u.run("--server", a.url, "login", u.name, input=PASSWORD + "\n").returncode == 0
        assert a.presented() == key2
        assert u.run("--server", b.url, "login", u.name, input=PASSWORD + "\n").returncode == 0
        assert b.presented() == key3
        # a server no list names: nothing presented
        assert u.run("--server", other.url, "login", u.name, input=PASSWORD + "\n").returncode == 0
        assert other.presented() is None
        # the config file's server= keeps the list as given
        assert u.run("--server", listed, "login", u.name, input=PASSWORD + "\n").returncode == 0
        assert f"server={listed}\n" in u.config.read_text()
        r = u.run("--json", "whoami", env=dict(u.env(), PARLEY_SERVER=""))
        assert r.returncode == 0 and json.loads(r.stdout)["server"] == listed, r.stdout
    finally:
        for f in (a, b, other):
            f.stop()


# --------------------------------------------------------------------------
# conversations, send, history, inbox
# --------------------------------------------------------------------------


def test_direct_send_history_inbox(parley, tmp_path):
    srv = parley("--insecure-fast-kdf")
    alice, bob, carol = cli_users(tmp_path, srv.url, 3)

    conv = alice.json("direct", bob.name)
    assert conv["type"] == "direct" and sorted(conv["members"]) == sorted([alice.name, bob.name])
    cid = conv["id"]
    assert alice.json("direct", bob.name)["id"] == cid  # the pair has one conversation
    assert bob.json("direct", "@" + alice.name)["id"] == cid
    r = alice.run("direct", bob.name)
    assert r.returncode == 0 and f"#{cid} direct @{bob.name}" in r.stdout

    s1 = alice.json("send", cid, "hello", "bob")  # arguments are joined
    assert s1["conv"] == cid and s1["seq"] == 1 and s1["duplicate"] is False
    assert len(s1["cmid"]) == 32
    s2 = alice.json("send", "@" + bob.name, "second 👋 \"quoted\"")
    assert s2["seq"] == 2
    s3 = alice.json("send", cid, "-", input="line one\nline two\n")  # from stdin
    assert s3["seq"] == 3
    r = bob.run("send", cid, "from bob")
    assert r.returncode == 0 and r.stdout.startswith("✓ sent #4")

    h = bob.json("history", cid)
    assert h["conv"] == cid and h["more"] is False
    got = [(m["seq"], m["from"], m["body"], m["cmid"]) for m in h["messages"]]
    assert got == [(1, alice.name, "hello bob", s1["cmid"]),
                   (2, alice.name, "second 👋 \"quoted\"", s2["cmid"]),
                   (3, alice.name, "line one\nline two", s3["cmid"]),
                   (4, bob.name, "from bob", got[3][3])]
    # the CLI's history agrees with an independent REST read
    assert [(m["seq"], m["cmid"]) for m in history(bob, cid)] == [(g[0], g[3]) for g in got]
    # paging
    h = bob.json("history", cid, "--limit", "1")
    assert [m["seq"] for m in h["messages"]] == [4] and h["more"] is True
    h = bob.json("history", cid, "--after", "2")
    assert [m["seq"] for m in h["messages"]] == [3, 4]
    h = bob.json("history", cid, "--after", "0", "--limit", "2")
    assert [m["seq"] for m in h["messages"]] == [1, 2] and h["more"] is True
    h = bob.json("history", cid, "--before", "3")
    assert [m["seq"] for m in h["messages"]] == [1, 2]
    r = bob.run("history", cid)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 4 and lines[0].startswith("#1 [") and f"{alice.name}: hello bob" in lines[0]
    assert "line one ↵ line two" in lines[2]  # newlines cannot break the layout

    inbox = bob.json("inbox")
    assert isinstance(inbox["cursor"], int)
    [c] = [c for c in inbox["conversations"] if c["id"] == cid]
    assert c["last_seq"] == 4 and c["last_message"]["body"] == "from bob"
    assert c["unread"] == 4 - c["read_seq"]
    again = bob.json("inbox", "--changed-since", inbox["cursor"])
    assert again["conversations"] == []
    r = bob.run("inbox")
    assert r.returncode == 0 and f"#{cid}" in r.stdout and f"@{alice.name}" in r.stdout

    # groups: create, add, remove (admins), leave (anyone)
    g = alice.json("group", "create", "Weekend plans", bob.name)
    assert g["type"] == "group" and g["name"] == "Weekend plans" and g["admins"] == [alice.name]
    gid = g["id"]
    g = alice.json("group", "add", gid, carol.name)
    assert sorted(g["members"]) == sorted([alice.name, bob.name, carol.name])
    r = bob.run("--json", "group", "add", gid, uname())
    assert r.returncode == EXIT_SERVER  # not an admin (or no such user)
    assert carol.json("send", gid, "hi all")["seq"] == 1
    assert alice.json("group", "remove", gid, carol.name) == {"conv": gid, "removed": carol.name}
    r = carol.run("--json", "send", gid, "still here?")
    assert r.returncode == EXIT_SERVER and json_error(r)["code"] == "forbidden"
    r = bob.run("group", "remove", gid, bob.name)  # leave
    assert r.returncode == 0 and "removed" in r.stdout
    r = alice.run("group", "create", "solo")
    assert r.returncode == 0 and "group solo" in r.stdout
    r = alice.run("--json", "group", "create", "x", "nosuchuser" + os.urandom(3).hex())
    assert r.returncode == EXIT_SERVER and json_error(r)["code"] == "user_not_found"


# --------------------------------------------------------------------------
# two chat sessions through pipes
# --------------------------------------------------------------------------



def test_history_and_inbox_follow_more(parley, tmp_path):
    """The server trims pages by bytes (a quarter of --max-queue) and pages
    the inbox; `history --limit N` still prints N messages and `inbox`
    every conversation: libparley asks for the following pages."""
    srv = parley("--insecure-fast-kdf", "--max-queue", "65536")  # pages of 16 KiB
    alice, bob = cli_users(tmp_path, srv.url, 2)
    cid = alice.json("direct", bob.name)["id"]
    pad = "x" * 4000
    for k in range(1, 41):  # about 4 KiB each: 4 to a page
        r = rest(srv, "POST", f"/v1/conversations/{cid}/messages",
                 {"cmid": f"c{k}", "body": f"{k}:{pad}"}, token=alice.token())
        assert r.status == 201, r
    page = history_page(bob, cid, after=0, limit=500)
    assert 1 < len(page["messages"]) < 10 and page["more"] is True  # the server trims
    h = bob.json("history", cid, "--after", "0", "--limit", "40")
    assert [m["seq"] for m in h["messages"]] == list(range(1, 41)) and h["more"] is False
    assert all(m["body"] == f"{m['seq']}:{pad}" for m in h["messages"])
    h = bob.json("history", cid, "--after", "5", "--limit", "20")
    assert [m["seq"] for m in h["messages"]] == list(range(6, 26)) and h["more"] is True
    h = bob.json("history", cid)  # the latest 50 (of 40)
    assert [m["seq"] for m in h["messages"]] == list(range(1, 41)) and h["more"] is False
    h = bob.json("history", cid, "--limit", "30")  # the latest 30: paged backward
    assert [m["seq"] for m in h["messages"]] == list(range(11, 41)) and h["more"] is True
    h = bob.json("history", cid, "--before", "20", "--limit", "12")
    assert [m["seq"] for m in h["messages"]] == list(range(8, 20))
    assert h["more"] is True
    r = bob.run("history", cid, "--limit", "40")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 40

    # 150 groups: pages of at most 16 KiB (about 60 of them), so 3 pages
    groups = [alice.json("group", "create", f"g{i}", bob.name)["id"] for i in range(150)]
    first = bob.get("/v1/conversations").json()
    assert first["more"] is True and len(first["conversations"]) < 151
    inbox = bob.json("inbox")
    ids = [c["id"] for c in inbox["conversations"]]
    assert sorted(ids) == sorted(groups + [cid]) and len(ids) == len(set(ids))
    assert ids[0] == groups[-1]  # most recent activity first
    assert bob.json("inbox", "--changed-since", inbox["cursor"])["conversations"] == []
    r = bob.run("inbox")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 151

def test_two_chats_exchange(parley, tmp_path, open_chat):
    srv = parley("--insecure-fast-kdf")
    alice, bob = cli_users(tmp_path, srv.url, 2)
    cid = alice.json("direct", bob.name)["id"]
    first = alice.json("send", cid, "before the chat")

    a = open_chat(alice, cid)
    b = open_chat(bob, "@" + alice.name)
    for c in (a, b):
        opened = c.event("open")
        assert opened["conv"] == cid and opened["type"] == "direct"
        c.event("state", state="connected")
    # both showed the earlier message first, as history
    for c in (a, b):
        [h] = c.find(lambda e: e.get("event") == "msg")
        assert h.get("history") is True and h["message"]["cmid"] == first["cmid"]

    a.line("hi bob")
    q = a.event("queued")
    ack = a.event("ack", cmid=q["cmid"])
    assert ack["seq"] == 2 and ack["duplicate"] is False
    m = b.msg("hi bob")["message"]
    assert m["from"] == alice.name and m["seq"] == 2 and m["cmid"] == q["cmid"]
    # bob's chat shows it, so it is read: alice sees ✓✓ read for it
    a.wait(lambda e: e.get("event") == "tick" and e["cmid"] == q["cmid"] and e["state"] == "read",
           "read tick")

    b.line("hi alice")
    b.line("//starts with a slash")
    b.line("/typing")
    assert a.msg("hi alice")["message"]["from"] == bob.name
    assert a.msg("/starts with a slash")["message"]["from"] == bob.name
    a.seen(lambda e: e.get("event") == "typing" and e["user"] == bob.name, "typing")
    for i in range(5):  # a burst, in order
        a.line(f"burst {i}")
    for i in range(5):
        b.msg(f"burst {i}")

    a.close_stdin()
    b.close_stdin()
    assert a.exit_code() == 0
    assert b.exit_code() == 0
    assert a.drain()[-1] == {"event": "exit", "code": 0, "unsent": 0}
    assert b.drain()[-1] == {"event": "exit", "code": 0, "unsent": 0}
    # every message stored once, in the order sent
    bodies = [m["body"] for m in history(alice, cid)]
    assert bodies == ["before the chat", "hi bob", "hi alice", "/starts with a slash"] + \
        [f"burst {i}" for i in range(5)]
    seqs = [m["seq"] for m in history(alice, cid)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_chat_plain_text_mode(parley, tmp_path):
    """Without --json and without a terminal: readable lines, scriptable."""
    srv = parley("--insecure-fast-kdf")
    alice, bob = cli_users(tmp_path, srv.url, 2)
    cid = alice.json("direct", bob.name)["id"]
    bob.json("send", cid, "earlier from bob")
    r = alice.run("chat", cid, "--last", "5", input="one\ntwo\n/help\n")
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = r.stdout
    assert f"{bob.name}: earlier from bob" in out
    assert "✓ #2 you: one" in out and "✓ #3 you: two" in out
    assert "* connected as " + alice.name in out
    assert [m["body"] for m in history(alice, cid)] == ["earlier from bob", "one", "two"]
    # stdin from a regular file works too
    f = tmp_path / "lines.txt"
    f.write_text("from a file\n")
    with open(f) as fh:
        r = subprocess.run([PARLEY_CLI, "chat", str(cid), "--last", "0"], stdin=fh,
                           capture_output=True, text=True, timeout=WAIT * 2, env=alice.env())
    assert r.returncode == 0, r.stderr
    assert history(alice, cid)[-1]["body"] == "from a file"


def test_chat_in_a_terminal(parley, tmp_path):
    """`parley chat` on a pseudo-terminal: libedit line editing, a message
    typed and sent, a message received, Ctrl-D leaves with status 0."""
    srv = parley("--insecure-fast-kdf")
    alice, bob = cli_users(tmp_path, srv.url, 2)
    cid = alice.json("direct", bob.name)["id"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec the CLI on the terminal
        try:
            os.execve(PARLEY_CLI, [PARLEY_CLI, "chat", str(cid)], alice.env(TERM="xterm"))
        finally:
            os._exit(127)
    screen = b""

    def read_until(token, timeout=WAIT):
        nonlocal screen
        deadline = time.monotonic() + timeout
        while token not in screen and time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                screen += data
        return token in screen

    try:
        assert read_until(b"connected as"), screen[-2000:]
        # type with an editing key in between: "helo" <- "l" inserted before "o"
        os.write(fd, b"helo world")
        os.write(fd, b"\x1b[D" * 7 + b"l")  # cursor left 7, insert
        os.write(fd, b"\r")
        assert read_until(b"\xe2\x9c\x93"), screen[-2000:]  # ✓ once stored
        for _ in range(200):
            msgs = history(alice, cid)
            if msgs:
                break
            time.sleep(0.05)
        assert [m["body"] for m in msgs] == ["hello world"]
        bob.json("send", cid, "answer from bob")
        assert read_until(b"answer from bob"), screen[-2000:]
        # Bob answered (with `send`, which marks nothing itself): his answer
        # says he read "hello world", and its tick turns blue in place.
        assert read_until("\x1b[1;34m✓✓ read".encode()), screen[-2000:]
        os.write(fd, b"\x04")  # Ctrl-D on an empty line
        status = None
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            wpid, st = os.waitpid(pid, os.WNOHANG)
            if wpid:
                status = st
                break
            read_until(b"\x00", timeout=0.05)  # keep draining the terminal
            time.sleep(0.05)  # (the read returns at once after the child closed it)
        assert status is not None, f"chat did not exit on Ctrl-D; screen: {screen[-1500:]!r}"
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def test_chat_ticks_follow_replies(parley, tmp_path, open_chat):
    """A reply from X at seq S says X has delivered and read up to S (no
    receipt frame tells it): the ticks of what came before follow."""
    srv = parley("--insecure-fast-kdf")
    alice, bob, carol = (Cli(tmp_path, srv.url) for _ in range(3))
    for u in (alice, bob, carol):
        u.register()
    cid = alice.json("direct", bob.name)["id"]
    a = open_chat(alice, cid)
    a.event("state", state="connected")
    a.line("are you there?")
    q = a.event("queued")
    a.event("ack", cmid=q["cmid"])
    # Bob answers from a script: `parley send` never marks anything itself.
    assert bob.json("send", cid, "yes")["seq"] == 2
    a.msg("yes")
    a.wait(lambda e: e.get("event") == "tick" and e["cmid"] == q["cmid"] and e["state"] == "read",
           "read tick from the reply")
    assert cursors(alice, cid, bob.name) == (2, 2)

    # In a group, one member's reply is not everyone's read.
    gid = alice.json("group", "create", "trio", bob.name, carol.name)["id"]
    g = open_chat(alice, gid)
    g.event("state", state="connected")
    g.line("hello both")
    q = g.event("queued")
    g.event("ack", cmid=q["cmid"])
    bob.json("send", gid, "hi from bob")
    g.msg("hi from bob")
    carol.json("send", gid, "hi from carol")
    g.msg("hi from carol")
    g.wait(lambda e: e.get("event") == "tick" and e["cmid"] == q["cmid"], "a tick once both answered")
    ticks = [e["state"] for e in g.find(lambda e: e.get("event") == "tick" and e["cmid"] == q["cmid"])]
    assert ticks == ["read"], ticks  # not before
    for c in (a, g):
        c.close_stdin()
        assert c.exit_code() == 0


def test_chat_commands_never_send_typing(parley, tmp_path, open_chat):
    """Typing /quit (or any /command) on a terminal tells nobody you type;
    typing a message does."""
    srv = parley("--insecure-fast-kdf")
    alice, bob = Cli(tmp_path, srv.url), Cli(tmp_path, srv.url)
    alice.register()
    bob.register()
    cid = alice.json("direct", bob.name)["id"]
    b = open_chat(bob, cid)
    b.event("state", state="connected")

    def alice_typing():
        return b.find(lambda e: e.get("event") == "typing" and e["user"] == alice.name)

    t = Tty(alice, cid)
    try:
        assert t.read_until(b"connected as"), t.screen[-2000:]
        b.wait(lambda e: e.get("event") == "presence" and e["user"] == alice.name and e["online"],
               "alice online")
        t.type("/help")
        os.write(t.fd, b"\r")
        assert t.read_until(b"/quit leaves"), t.screen[-2000:]
        t.type("/quit")
        os.write(t.fd, b"\r")
        assert t.wait_exit() == 0, t.screen[-1500:]
    finally:
        t.close()
    # Presence and typing reach Bob in the order Alice's session made them:
    # once he sees her go offline, any typing of hers has come before.
    b.wait(lambda e: e.get("event") == "presence" and e["user"] == alice.name and not e["online"],
           "alice offline")
    assert alice_typing() == []

    # The same terminal typing a message: Bob sees it (so the check above can see it).
    t = Tty(alice, cid)
    try:
        assert t.read_until(b"connected as"), t.screen[-2000:]
        t.type("hi")
        b.seen(lambda e: e.get("event") == "typing" and e["user"] == alice.name, "typing")
        os.write(t.fd, b"\r")
        b.msg("hi")
        os.write(t.fd, b"\x04")
        assert t.wait_exit() == 0, t.screen[-1500:]
    finally:
        t.close()
    b.close_stdin()
    assert b.exit_code() == 0


def test_history_and_inbox_mark_delivered(parley, tmp_path):
    """What `history` and `inbox` show has reached the device: they move the
    delivered cursor (never read), and the sender's ticks follow."""
    srv = parley("--insecure-fast-kdf")
    alice, bob, carol = (Cli(tmp_path, srv.url) for _ in range(3))
    for u in (alice, bob, carol):
        u.register()
    cid = alice.json("direct", bob.name)["id"]
    r = bob.run("history", cid)  # nothing to show, nothing to mark
    assert r.returncode == 0 and r.stdout == "no messages\n" and r.stderr == ""
    for i in range(3):
        alice.json("send", cid, f"m{i}")
    assert cursors(alice, cid, bob.name) == (0, 0)

    h = bob.json("history", cid, "--after", "0", "--limit", "2")
    assert [m["seq"] for m in h["messages"]] == [1, 2]
    assert cursors(alice, cid, bob.name) == (2, 0)  # shown: delivered, not read
    r = bob.run("history", cid)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert cursors(alice, cid, bob.name) == (3, 0)
    r = bob.run("history", cid, "--before", "2")  # an older page moves nothing back
    assert r.returncode == 0 and r.stderr == "" and "#1 [" in r.stdout
    assert cursors(alice, cid, bob.name) == (3, 0)

    for i in range(2):
        alice.json("send", cid, f"n{i}")
    r = bob.run("--json", "inbox")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    [c] = json.loads(r.stdout)["conversations"]
    assert (c["last_seq"], c["delivered_seq"]) == (5, 3)  # as it was when listed
    assert cursors(alice, cid, bob.name) == (5, 0)
    # ...and what Alice's receipts say for her message 5: delivered to Bob, unread
    rr = requests.get(f"{srv.url}/v1/conversations/{cid}/receipts", params={"seq": 5},
                      headers={"Authorization": "Bearer " + alice.token()}, timeout=30).json()
    assert (rr["delivered"], rr["read"]) == (1, 0)
    r = bob.run("inbox")
    assert r.returncode == 0 and r.stderr == "" and f"#{cid}" in r.stdout

    # Groups: each member's own cursor; our own messages move nothing.
    gid = alice.json("group", "create", "g", bob.name, carol.name)["id"]
    alice.json("send", gid, "to both")
    r = carol.run("inbox")
    assert r.returncode == 0 and r.stderr == ""
    assert cursors(alice, gid, carol.name) == (1, 0)
    assert cursors(alice, gid, bob.name) == (0, 0)
    r = alice.run("inbox")
    assert r.returncode == 0 and r.stderr == ""
    assert cursors(alice, gid, alice.name) == (1, 1)


def test_history_not_marked_delivered_warns(parley, tmp_path, open_chat):
    """Bad luck after showing: the live connection is refused (the user has
    every WebSocket the server allows). The messages are shown, the command
    succeeds, and a warning says they were not marked delivered."""
    srv = parley("--insecure-fast-kdf", "--max-user-conns", "1")
    alice, bob = Cli(tmp_path, srv.url), Cli(tmp_path, srv.url)
    alice.register()
    bob.register()
    cid = alice.json("direct", bob.name)["id"]
    gid = alice.json("group", "create", "other", bob.name)["id"]
    alice.json("send", cid, "are you there?")
    b = open_chat(bob, gid, "--last", "0")  # Bob's one connection, elsewhere
    b.event("state", state="connected")

    r = bob.run("--timeout", "10", "history", cid)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "are you there?" in r.stdout
    assert f"parley: history: not marked delivered: #{cid}: no live connection" in r.stderr, r.stderr
    assert cursors(alice, cid, bob.name) == (0, 0)
    r = bob.run("--json", "--timeout", "10", "inbox")
    assert r.returncode == 0, r.stderr
    assert {c["id"] for c in json.loads(r.stdout)["conversations"]} == {cid, gid}
    [w] = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
    assert w["warning"]["code"] == "not_delivered", w
    assert w["warning"]["message"].startswith("inbox: not marked delivered: #"), w
    assert cursors(alice, cid, bob.name) == (0, 0)
    b.close_stdin()
    assert b.exit_code() == 0


# --------------------------------------------------------------------------
# bad input and exit statuses
# --------------------------------------------------------------------------


def test_usage_errors_exit_1(tmp_path):
    u = Cli(tmp_path, "http://127.0.0.1:9")
    r = u.run("--help")
    assert r.returncode == 0 and "exit status" in r.stdout and "3  network" in r.stdout
    for args in (["frobnicate"], ["--frob", "inbox"], ["inbox", "--limit", "5"],
                 ["history"], ["history", "abc"], ["send", "x1", "hi"], ["chat", "@"],
                 ["group", "add", "0", "bob"], ["history", "1", "--limit", "0"],
                 ["history", "1", "--before", "2", "--after", "1"], ["send", "1"],
                 ["group"], ["group", "rename", "1"], ["chat"], ["--timeout", "x", "inbox"],
                 ["--server"], []):
        r = u.run(*args)
        assert r.returncode == EXIT_USAGE, (args, r.returncode, r.stderr)
        assert r.stderr.strip(), args
    r = u.run("--json", "frobnicate")
    assert r.returncode == EXIT_USAGE and json_error(r)["exit"] == EXIT_USAGE
    r = u.run("--server", "ftp://example", "login", "x", input="password\n")
    assert r.returncode == EXIT_USAGE and "bad server URL" in r.stderr


def test_server_down_exit_3(tmp_path):
    port = free_port()  # nothing listens there
    u = Cli(tmp_path, f"http://{HOST}:{port}")
    r = u.run("--json", "login", "alice", input=PASSWORD + "\n")
    assert r.returncode == EXIT_NETWORK, (r.stdout, r.stderr)
    assert json_error(r)["exit"] == EXIT_NETWORK
    r = u.run("register", "alice", input=PASSWORD + "\n")
    assert r.returncode == EXIT_NETWORK and "cannot reach" in r.stderr
    # with a (stale) token: inbox, history, send all fail with 3
    u.config.parent.mkdir(parents=True)
    u.config.write_text(f"server=http://{HOST}:{port}\nuser=alice\ntoken={'a' * 43}\n")
    for args in (["inbox"], ["history", "1"], ["send", "1", "hi"], ["chat", "1"],
                 ["direct", "bob"]):
        r = u.run("--timeout", "10", *args)
        assert r.returncode == EXIT_NETWORK, (args, r.returncode, r.stderr)


def test_refused_by_server_exit_2(parley, tmp_path):
    srv = parley("--insecure-fast-kdf")
    alice, bob, eve = cli_users(tmp_path, srv.url, 3)
    cid = alice.json("direct", bob.name)["id"]
    # sending to a conversation you are not in: the error is shown, exit 2
    r = eve.run("send", cid, "let me in")
    assert r.returncode == EXIT_SERVER, (r.stdout, r.stderr)
    assert "forbidden" in r.stderr and "not a member" in r.stderr
    r = eve.run("--json", "send", cid, "let me in")
    assert r.returncode == EXIT_SERVER
    err = json_error(r)
    assert err["code"] == "forbidden" and len(err["cmid"]) == 32
    r = eve.run("--json", "send", 987654, "nowhere")  # no such conversation: the same answer
    assert r.returncode == EXIT_SERVER and json_error(r)["code"] == "forbidden"
    for args in (["history", cid], ["chat", cid]):
        r = eve.run("--json", *args)
        assert r.returncode == EXIT_SERVER and json_error(r)["code"] == "forbidden", args
    r = eve.run("direct", "nobody" + os.urandom(3).hex())
    assert r.returncode == EXIT_SERVER and "user_not_found" in r.stderr
    r = eve.run("direct", eve.name)
    assert r.returncode == EXIT_SERVER
    # nothing reached the conversation
    assert history(alice, cid) == []
    # a revoked token: exit 2 for REST and for the live connection
    rest(srv, "DELETE", "/v1/sessions/current", token=eve.token())
    r = eve.run("inbox")
    assert r.returncode == EXIT_SERVER and "unauthorized" in r.stderr
    r = eve.run("--json", "send", cid, "x")
    assert r.returncode == EXIT_SERVER
