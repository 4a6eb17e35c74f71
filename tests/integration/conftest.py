"""Fixtures of the parleyd integration tests; the client helpers they use
are in parley_client.py.

Every server started through the `parley` factory is stopped by PID at
teardown (SIGTERM, bounded wait, SIGKILL). Teardown also fails the test if a
server died on its own during the test (contract point 7: bad input never
crashes the server) or did not exit 0 on SIGTERM, unless the test set
`srv.expect_exit = True`.

The engines of the cluster tests (engines.py): `postgres` and `redis` are a
fresh PostgreSQL and redis-server per test, stopped by PID at teardown (the
PostgreSQL data directory removed); engines.py also kills any left at exit.
A PostgreSQL start copies a cluster initdb'd once per run (the first costs
about 1-2 s, then 0.1 s idle, 0.7 s on a loaded machine); tests that only
need an empty database and never kill or restart it take `pg_database`, a
fresh database (about 0.2 s) on the session-wide `pg_server`.
"""

import os

import pytest

import parley_client
from engines import start_postgres, start_redis
from parley_client import ChatProc, start_server


@pytest.fixture(scope="session", autouse=True)
def store_mode(tmp_path_factory):
    """PARLEY_TEST_STORE=postgresql: every parleyd of the run stores in
    PostgreSQL (--store), a database of its own per data directory on one
    server for the run; unset, the embedded store (the default)."""
    mode = os.environ.get("PARLEY_TEST_STORE", "")
    if mode not in ("postgresql", "cluster"):
        assert mode in ("", "embedded"), \
            f"PARLEY_TEST_STORE={mode!r}: embedded, postgresql or cluster"
        yield None
        return
    pg = start_postgres(tmp_path_factory.mktemp("store_pg"))
    dbs, buses = {}, {}

    def store_for(data):
        key = str(os.path.realpath(data))
        if key not in dbs:
            dbs[key] = pg.new_database()
        return dbs[key].dsn

    def cluster_for(data):
        """PARLEY_TEST_STORE=cluster: a database per data directory (kept
        for a restart) and a redis-server per running cluster."""
        key = str(os.path.realpath(data))
        if key not in buses:
            buses[key] = start_redis(tmp_path_factory.mktemp("bus"))
        r = buses[key]

        def release():
            if buses.get(key) is r:
                del buses[key]
            r.stop()
        return store_for(data), r.url, release

    if mode == "cluster":
        parley_client.CLUSTER_FOR = cluster_for
    else:
        parley_client.STORE_FOR = store_for
    yield pg
    parley_client.STORE_FOR = parley_client.CLUSTER_FOR = None
    for r in list(buses.values()):
        r.stop()
    pg.stop()


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
def postgres(tmp_path):
    """A fresh PostgreSQL on 127.0.0.1 (engines.Postgres: .port, .dsn,
    .psql(), .connect(), .kill(), .restart(), .stop()); role and database
    `parley`. Stopped and removed at teardown."""
    pg = start_postgres(tmp_path)
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """One PostgreSQL for the whole run, shared: never kill, restart or
    stop it in a test (take `postgres` for that)."""
    pg = start_postgres(tmp_path_factory.mktemp("pg_server"))
    yield pg
    pg.stop()


@pytest.fixture
def pg_database(pg_server):
    """A fresh database owned by parley on pg_server (engines.Database:
    .dsn, .port, .psql(), .connect()); dropped at teardown."""
    db = pg_server.new_database()
    yield db
    db.drop()


@pytest.fixture
def redis(tmp_path):
    """A fresh redis-server on 127.0.0.1 (engines.Redis: .port, .url,
    .cli(), .client(), .kill(), .restart(), .stop()), no persistence.
    Stopped at teardown."""
    r = start_redis(tmp_path)
    yield r
    r.stop()


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
