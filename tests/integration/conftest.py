"""Fixtures of the parleyd integration tests; the client helpers they use
are in parley_client.py.

Every server started through the `parley` factory is stopped by PID at
teardown (SIGTERM, bounded wait, SIGKILL). Teardown also fails the test if a
server died on its own during the test (contract point 7: bad input never
crashes the server) or did not exit 0 on SIGTERM, unless the test set
`srv.expect_exit = True`.
"""

import os

import pytest

from parley_client import ChatProc, start_server


@pytest.fixture
def parley(tmp_path):
    """Factory: parley(*flags, web_dir=None, data_dir=None, port=0) -> Server
    (see parley_client.start_server). Stops them all."""
    started = []

    def factory(*flags, web_dir=None, data_dir=None, port=0):
        srv = start_server(tmp_path, *flags, web_dir=web_dir, data_dir=data_dir, port=port)
        started.append(srv)
        return srv

    yield factory
    problems = []
    for srv in started:
        died = not srv.expect_exit and not srv.stopped and not srv.alive()
        status = srv.kill()
        if died:
            problems.append(f"parleyd (port {srv.port}) exited on its own during the test "
                            f"with status {status}; log tail:\n{srv.log()}")
        elif not srv.expect_exit and status != 0:
            problems.append(f"parleyd (port {srv.port}) exited with status {status} on "
                            f"SIGTERM; log tail:\n{srv.log()}")
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def server(parley):
    """A parleyd with default flags (web root PARLEY_WEB)."""
    return parley()


@pytest.fixture
def open_chat():
    """Factory: open_chat(cli, conv, *extra) -> ChatProc (`parley --json
    chat CONV EXTRA...`). Stops each by PID at teardown."""
    started = []

    def factory(cli, conv, *extra):
        c = ChatProc(cli, conv, *extra)
        started.append(c)
        return c

    yield factory
    for c in started:
        c.kill()


@pytest.fixture
def webroot(tmp_path):
    """A static web root with known files, and a secret file next to it."""
    root = tmp_path / "webroot"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("TOP-SECRET-OUTSIDE-WEBROOT\n")
    (tmp_path / "passwd").write_text("TOP-SECRET-OUTSIDE-WEBROOT passwd\n")
    files = {
        "index.html": b"<!doctype html><title>parley</title><p>INDEX-PAGE</p>\n",
        "style.css": b"body { color: #333 }\n",
        "app.js": b"console.log('parley');\n",
        "data.json": b'{"ok": true}\n',
        "logo.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>\n',
        "pic.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
        "notes.txt": b"plain notes\n",
        "hello world.txt": b"spaced name\n",
        "sub/page.html": b"<p>SUB-PAGE</p>\n",
        ".secret": b"TOP-SECRET-HIDDEN-FILE\n",
        "sub/.hidden.txt": b"TOP-SECRET-HIDDEN-IN-SUB\n",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    os.symlink(secret, root / "escape.txt")  # file symlink leaving the root
    os.symlink(outside, root / "outdir")  # directory symlink leaving the root
    return {"root": root, "files": files, "secret_marker": b"TOP-SECRET"}
