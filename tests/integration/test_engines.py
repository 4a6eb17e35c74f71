"""engines.py, the real PostgreSQL and Redis of the cluster tests: they
start on 127.0.0.1 on ports of their own, answer, survive kill -9 and
restart with the committed data, and leave no process and no temp dir
behind, not even when the test process dies."""

import os
import pwd
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import engines
from engines import EngineError, start_postgres, start_redis

HERE = Path(__file__).resolve().parent


def gone(pid, timeout=15):
    """Waits (bounded) until no live process has this PID."""
    deadline = time.monotonic() + timeout
    while engines._pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def proc_uid(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


# --------------------------------------------------------------------------
# PostgreSQL


def test_postgres_starts_on_loopback_and_answers(postgres):
    assert postgres.psql("select 1") == "1"
    assert postgres.dsn == f"postgresql://parley@127.0.0.1:{postgres.port}/parley"
    assert postgres.psql("show listen_addresses") == "127.0.0.1"
    assert postgres.psql("show fsync") == "on"
    assert postgres.psql("show synchronous_commit") == "on"
    assert int(postgres.psql("show max_connections")) >= 100
    assert postgres.port < engines._port_range()[1] + 1
    if os.geteuid() == 0:  # postgres refuses root: it runs as the postgres user
        assert proc_uid(postgres.pid) == pwd.getpwnam("postgres").pw_uid


def test_postgres_has_the_parley_role_and_database(postgres):
    assert postgres.psql("select current_user || ' ' || current_database()") == "parley parley"
    assert postgres.psql("select datdba::regrole from pg_database where datname = 'parley'") \
        == "parley"
    postgres.psql("create table t (id bigint primary key, body text)")  # the owner may
    postgres.psql("insert into t values (1, 'hello')")
    assert postgres.psql("select body from t") == "hello"


def test_psql_raises_on_an_sql_error(postgres):
    with pytest.raises(EngineError, match="no_such_table"):
        postgres.psql("select * from no_such_table")


def test_postgres_dsn_works_for_a_client_library(postgres):
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute("select %s::int + 1", (41,))
        assert cur.fetchone() == (42,)
    conn.close()


def test_kill_then_restart_keeps_committed_data_only(postgres):
    postgres.psql("create table m (seq int primary key)")
    postgres.psql("insert into m select generate_series(1, 1000)")
    open_tx = postgres.connect(autocommit=False)
    open_tx.cursor().execute("insert into m values (5000)")  # never committed
    pid, port = postgres.pid, postgres.port

    postgres.kill()
    assert gone(pid), "the postmaster outlived SIGKILL"
    assert not engines._group_alive(pid), "a backend outlived the postmaster"
    open_tx.close()

    postgres.restart()
    assert postgres.port == port and postgres.pid != pid
    assert postgres.psql("select count(*), max(seq) from m") == "1000|1000"
    postgres.restart()  # a clean restart (fast shutdown) too
    assert postgres.psql("select count(*) from m") == "1000"


def test_stop_leaves_no_process_and_no_temp_dir(tmp_path):
    pg = start_postgres(tmp_path)
    pid, d = pg.pid, pg.dir
    assert d.is_dir() and not str(d).startswith(str(tmp_path))
    pg.psql("select 1")
    pg.stop()
    assert gone(pid, timeout=1) and not engines._group_alive(pid)
    assert not d.exists()
    assert pg not in engines._live
    pg.stop()  # twice is harmless


def test_parallel_servers_get_their_own_ports(tmp_path):
    a, b = start_postgres(tmp_path), start_postgres(tmp_path)
    try:
        assert a.port != b.port
        a.psql("create table only_a (x int)")
        assert b.psql("select count(*) from pg_tables where tablename = 'only_a'") == "0"
    finally:
        a.stop()
        b.stop()


def test_a_failed_start_is_a_clear_error_with_the_log_tail(postgres):
    postgres.shutdown()
    squat = socket.socket()
    squat.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squat.bind(("127.0.0.1", postgres.port))
    squat.listen()
    try:
        with pytest.raises(EngineError) as e:
            postgres.restart()  # same port: taken
        assert "Address already in use" in str(e.value), str(e.value)
    finally:
        squat.close()
    assert not postgres.alive()


def test_pg_database_is_a_fresh_database_on_the_shared_server(pg_server, pg_database):
    assert pg_database.port == pg_server.port
    assert pg_database.dsn == f"postgresql://parley@127.0.0.1:{pg_server.port}/{pg_database.name}"
    assert pg_database.psql("select current_user || ' ' || current_database()") \
        == f"parley {pg_database.name}"
    pg_database.psql("create table t (x int)")  # the owner may
    other = pg_server.new_database()
    try:
        assert other.psql("select count(*) from pg_tables where tablename = 't'") == "0"
        conn = other.connect()  # drop() ends open sessions
    finally:
        other.drop()
    assert pg_server.psql(f"select count(*) from pg_database where datname = '{other.name}'") \
        == "0"
    conn.close()


# --------------------------------------------------------------------------
# Redis


def test_redis_starts_on_loopback_and_answers(redis):
    assert redis.url == f"redis://127.0.0.1:{redis.port}"
    assert redis.cli("PING") == "PONG"
    assert redis.cli("SET", "k", "v 1") == "OK"
    assert redis.cli("GET", "k") == "v 1"
    assert redis.cli("GET", "none") is None
    assert redis.cli("INCR", "n") == "1"
    assert redis.cli("CONFIG", "GET", "bind").splitlines()[-1].endswith('"127.0.0.1"')
    with pytest.raises(EngineError, match="WRONGTYPE"):
        redis.cli("LPUSH", "k", "x")
    c = redis.client()
    assert c.get("k") == "v 1"


def test_redis_pubsub_through_the_client(redis):
    c = redis.client()
    p = c.pubsub()
    p.subscribe("bus")
    assert p.get_message(timeout=5)["type"] == "subscribe"
    assert c.publish("bus", "hello") == 1
    msg = p.get_message(timeout=5)
    assert msg["type"] == "message" and msg["data"] == "hello"
    p.close()


def test_redis_restart_same_port_and_kill(redis):
    redis.cli("SET", "k", "v")
    pid, port = redis.pid, redis.port
    redis.restart()
    assert gone(pid, timeout=1)
    assert redis.port == port and redis.cli("PING") == "PONG"
    assert redis.cli("GET", "k") is None  # no persistence: a bus keeps nothing
    pid = redis.pid
    redis.kill()
    assert gone(pid)
    redis.restart()
    assert redis.cli("PING") == "PONG"


def test_redis_with_persistence_keeps_writes_across_kill(tmp_path):
    r = start_redis(tmp_path, persist=True)
    try:
        r.cli("SET", "k", "kept")
        r.kill()
        r.restart()
        assert r.cli("GET", "k") == "kept"
    finally:
        r.stop()


def test_redis_stop_leaves_no_process(tmp_path):
    r = start_redis(tmp_path)
    pid = r.pid
    r.stop()
    assert gone(pid, timeout=1) and not r.alive()
    assert r not in engines._live


# --------------------------------------------------------------------------
# Nothing outlives the test process


def run_child(tmp_path, body):
    """A python process that imports engines, runs body, prints lines."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(HERE)!r})
        import engines
        tmp = {str(tmp_path)!r}
    """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_engines_left_running_are_killed_at_exit(tmp_path):
    child = run_child(tmp_path, """
        pg = engines.start_postgres(tmp)
        r = engines.start_redis(tmp)
        print(pg.pid, pg.dir, r.pid, flush=True)
        # exits without stopping them
    """)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    pg_pid, pg_dir, r_pid = out.split()
    assert gone(int(pg_pid)) and gone(int(r_pid))
    assert not Path(pg_dir).exists()
    assert not list(Path(pg_dir).parent.glob(f"parley-pg*-{child.pid}-*"))


def test_engines_die_with_a_sigkilled_test_process(tmp_path):
    child = run_child(tmp_path, """
        pg = engines.start_postgres(tmp)
        r = engines.start_redis(tmp)
        print(pg.pid, r.pid, flush=True)
        time.sleep(120)
    """)
    try:
        line = child.stdout.readline()
        pg_pid, r_pid = map(int, line.split())
    finally:
        child.kill()
        child.wait(timeout=30)
    assert gone(pg_pid), "postgres outlived its SIGKILLed starter"
    assert gone(r_pid), "redis outlived its SIGKILLed starter"
    deadline = time.monotonic() + 15
    while engines._group_alive(pg_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engines._group_alive(pg_pid), "a postgres backend outlived its postmaster"
    engines._sweep_stale()  # the next run removes the dead process's temp dirs
    assert not list(Path(engines.tempfile.gettempdir()).glob(f"parley-pg*-{child.pid}-*"))
