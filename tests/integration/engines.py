"""Real PostgreSQL and Redis servers for the cluster tests (Debian's packages,
installed by `scripts/setup.sh test`).

    pg = start_postgres(tmp_path)   # initdb'd, listening on 127.0.0.1:pg.port
    pg.dsn                          # postgresql://parley@127.0.0.1:PORT/parley
    pg.psql("select 1")             # -> "1" (psql -At; raises on an SQL error)
    pg.connect()                    # a psycopg2 connection (autocommit)
    pg.kill(); pg.restart()         # SIGKILL, then crash recovery
    pg.stop()                       # fast shutdown, data directory removed
    db = pg.new_database()          # a fresh database on it: db.dsn, db.psql()

    r = start_redis(tmp_path)       # r.port, r.url = redis://127.0.0.1:PORT
    r.cli("SET", "k", "v")          # -> "OK"; r.cli("GET", "k") -> "v"
    r.client()                      # a redis-py client (decode_responses)
    r.kill(); r.restart(); r.stop()

Both engines listen on 127.0.0.1 only, on a port picked at random below
the kernel's ephemeral range (so it never meets a port-0 parleyd or a
client socket) and re-picked if the engine finds it taken, so parallel
tests and parallel runs do not collide. Every wait is bounded (ENGINE_WAIT
seconds, stretched by PARLEY_TEST_SLOW) and fails with the engine's log tail.

PostgreSQL refuses to run as root: as root the binaries run as the
`postgres` user (Popen user=), in a data directory under a fresh
tempfile.mkdtemp() that user owns (pytest's tmp_path is root-only); the log
is written to tmp_path. The cluster is initdb'd once per process (a
template: role `parley`, database `parley` owned by it, trust auth over
127.0.0.1) and copied for each server. Tuned for tests: fsync and
synchronous_commit on (kill -9 tests need real durability), small
shared_buffers, no autovacuum, max_connections 200 (3 nodes x a pool).

Engines never outlive the test run: the fixtures stop them, an atexit hook
kills whatever is left, and each engine gets PR_SET_PDEATHSIG=SIGKILL
(through setpriv), so it dies with the thread that started it even if
pytest is SIGKILLed (start engines from the main thread, as the fixtures
do); the next run removes a dead run's temp dirs. Postgres runs as the
leader of its own process group: kill() and the last-resort cleanup signal
the group, so no backend lingers holding the shared memory.
"""

import atexit
import codecs
import itertools
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

SLOW = max(1.0, float(os.environ.get("PARLEY_TEST_SLOW") or 1))
ENGINE_WAIT = 30.0 * SLOW  # s, bound on a start, a stop or one client command
HOST = "127.0.0.1"
PG_LIB = Path(os.environ.get("PARLEY_PG_LIB", "/usr/lib/postgresql"))
PG_USER, PG_DB = "parley", "parley"

_live = set()  # engines started and not yet stopped (for the atexit hook)
_lock = threading.RLock()
_ports = set()  # ports handed out by this process
_dirs = set()  # temp dirs made by this process and not yet removed
_db_seq = itertools.count(1)
TMP_PREFIX = "parley-pg"  # mkdtemp: parley-pg-PID-*, parley-pgtemplate-PID-*


class EngineError(AssertionError):
    """An engine did not start, stop or answer in time (message: log tail)."""


# --------------------------------------------------------------------------
# helpers


def _pdeathsig(argv):
    """argv run through util-linux's setpriv (Essential in Debian), which
    sets PR_SET_PDEATHSIG=SIGKILL and execs it: same PID, no preexec_fn
    (unsafe in a threaded pytest). Set after Popen dropped root, so the
    credential change does not clear it."""
    if _SETPRIV:
        return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
    return argv


_SETPRIV = shutil.which("setpriv")


def _port_range():
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    hi = min(low, 65536) - 1
    lo = max(1024, hi - 12000) if hi > 3000 else 20000
    if hi <= lo:
        lo, hi = 20000, 30000
    return lo, hi


def pick_port():
    """A random port below the ephemeral range that nothing on HOST listens
    on now and that this process has not handed out before."""
    lo, hi = _port_range()
    for _ in range(1000):
        port = random.randint(lo, hi)
        with _lock:
            if port in _ports:
                continue
        s = socket.socket()
        try:
            s.bind((HOST, port))
        except OSError:
            continue
        finally:
            s.close()
        with _lock:
            _ports.add(port)
        return port
    raise EngineError(f"no free port in {lo}-{hi}")


def _tail(path, n=3000):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _pid_alive(pid):
    """True while a process with this PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _group_alive(pgid):
    """True while a live (non-zombie) process of group pgid exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                if int(rest[2]) == pgid and rest[0] not in ("Z", "X"):
                    return True
            except (OSError, IndexError, ValueError):
                pass
    return False


def _wait_until(cond, timeout, what, log):
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() >= deadline:
            raise EngineError(f"{what} within {timeout:.0f}s; log tail:\n{_tail(log)}")
        time.sleep(0.02)


class _Engine:
    """A server process we started (as the leader of its own process group)."""

    name = "engine"

    def __init__(self):
        self.proc = None
        self.port = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self, n=3000):
        return _tail(self.log_path, n)

    def _spawn(self, argv, **kw):
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(_pdeathsig(argv), stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT, close_fds=True,
                                         start_new_session=True, **kw)
        with _lock:
            _live.add(self)

    def _reap(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _end(self, sig, timeout):
        """Sends sig to the server (SIGKILL: to its whole group), waits for it
        and for every process of its group to be gone; SIGKILL after timeout."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None:
            try:
                if sig == signal.SIGKILL:
                    os.killpg(pgid, sig)
                else:
                    os.kill(pgid, sig)
            except ProcessLookupError:
                pass
            if not self._reap(timeout):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._reap(10)
        # backends notice the postmaster's death on their own; bound the wait
        deadline = time.monotonic() + 10
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _group_alive(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _wait_until(lambda: not _group_alive(pgid), 10, f"{self.name} group {pgid} still "
                        "alive after SIGKILL", self.log_path)
        with _lock:
            _live.discard(self)

    def _client_run(self, argv, **kw):
        """Runs a client binary, bounded; a timeout is an EngineError with
        the engine's log tail."""
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=ENGINE_WAIT,
                                  stdin=subprocess.DEVNULL, **kw)
        except subprocess.TimeoutExpired:
            raise EngineError(f"{argv[0]} got no answer from {self.name} on port {self.port} "
                              f"within {ENGINE_WAIT:.0f}s; log tail:\n{self.log()}") from None

    def kill(self):
        """SIGKILL to the server's process group (a crash): nothing is
        flushed. The data stays; restart() recovers from it."""
        self._end(signal.SIGKILL, 10)

    def _start_on_a_port(self, spawn_and_wait, fixed):
        """Runs spawn_and_wait(port); on a bind failure picks another port
        (unless fixed, e.g. a restart)."""
        for attempt in range(5):
            if not fixed and attempt:
                self.port = pick_port()
            mark = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            try:
                spawn_and_wait()
                return
            except EngineError:
                self._end(signal.SIGKILL, 5)
                with open(self.log_path, "rb") as f:
                    f.seek(mark)
                    new = f.read().decode(errors="replace")
                if fixed or "in use" not in new.lower():
                    raise
        raise EngineError(f"{self.name}: no port could be bound; log tail:\n{self.log()}")


@atexit.register
def _kill_leftovers():
    with _lock:
        left = list(_live)
    for e in left:
        try:
            e.kill()
        except Exception:
            pass
    with _lock:
        dirs = list(_dirs)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def _mkdtemp(kind=""):
    """A temp dir outside pytest's root-only tmp_path, owned by the user
    postgres runs as; removed by stop() or at exit."""
    d = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{kind}-{os.getpid()}-"))
    _, pw = _run_as()
    if pw:
        os.chown(d, pw.pw_uid, pw.pw_gid)
    with _lock:
        _dirs.add(d)
    return d


def _sweep_stale():
    """Removes the temp dirs of earlier test processes that are gone (a
    SIGKILLed pytest runs no atexit hook; its engines died by PDEATHSIG)."""
    for d in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*-*-*"):
        try:
            pid = int(d.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid) and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# PostgreSQL


def pg_bindir():
    """Debian's per-version directory of the server binaries (the newest)."""
    found = sorted(PG_LIB.glob("*/bin/initdb"), key=lambda p: _ver(p.parent.parent.name))
    if not found:
        raise EngineError(f"PostgreSQL's server binaries are not installed ({PG_LIB}/*/bin/initdb); "
                          "run scripts/setup.sh test")
    return found[-1].parent


def _ver(name):
    try:
        return int(name.split(".")[0])
    except ValueError:
        return 0


def _run_as():
    """Popen keywords that drop root to the postgres user (as root only)."""
    if os.geteuid() != 0:
        return {}, None
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}, pw


PG_CONF = """
# parley tests (engines.py)
listen_addresses = '127.0.0.1'
max_connections = 200
shared_buffers = 16MB
fsync = on
synchronous_commit = on
full_page_writes = on
autovacuum = off
max_wal_size = 64MB
min_wal_size = 8MB
log_min_messages = warning
log_checkpoints = off
log_line_prefix = '%m [%p] '
timezone = 'UTC'
"""

_template = {"dir": None, "data": None, "seconds": None}


def _pg_template():
    """An initdb'd cluster with the parley role and database, made once per
    process (about a second) and copied by every start_postgres()."""
    with _lock:
        if _template["data"]:
            return _template["data"]
        t0 = time.monotonic()
        kw, pw = _run_as()
        _sweep_stale()
        d = _mkdtemp("template")
        data = d / "data"
        bindir = pg_bindir()
        log = d / "initdb.log"
        with open(log, "wb") as f:
            if pw:
                os.chown(log, pw.pw_uid, pw.pw_gid)
            r = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                                "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--wal-segsize=1",
                                "--no-instructions"],
                               stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                               timeout=ENGINE_WAIT * 2, cwd=d, **kw)
        if r.returncode != 0:
            tail = _tail(log)
            shutil.rmtree(d, ignore_errors=True)
            raise EngineError(f"initdb failed ({r.returncode}):\n{tail}")
        with open(data / "postgresql.conf", "a") as f:
            f.write(PG_CONF)
        # The role and database, in single-user mode (no port needed); one
        # statement per line (CREATE DATABASE cannot run in a transaction).
        sql = (f"CREATE ROLE {PG_USER} LOGIN CREATEDB;\n"
               f"CREATE DATABASE {PG_DB} OWNER {PG_USER};\n")
        r = subprocess.run([str(bindir / "postgres"), "--single", "-D", str(data),
                            "-c", "log_min_messages=warning", "postgres"],
                           input=sql.encode(), capture_output=True, timeout=ENGINE_WAIT,
                           cwd=d, **kw)
        if r.returncode != 0 or b"ERROR" in r.stderr:
            shutil.rmtree(d, ignore_errors=True)
            raise EngineError(f"creating role/database failed ({r.returncode}):\n"
                              f"{r.stderr.decode(errors='replace')[-3000:]}")
        _template.update(dir=d, data=data, seconds=time.monotonic() - t0)
        return data


class Postgres(_Engine):
    """A PostgreSQL server of the tests. Attributes: port, dsn, pid,
    data (the data directory), dir (the temp dir holding it), log_path,
    startup_seconds (the last start, to ready)."""

    name = "postgres"

    def __init__(self, tmp_path):
        super().__init__()
        self.bindir = pg_bindir()
        template = _pg_template()
        self._kw, pw = _run_as()
        self.dir = _mkdtemp()
        self.data = self.dir / "data"
        r = subprocess.run(["cp", "-a", str(template), str(self.data)], capture_output=True)
        if r.returncode != 0:
            self._remove_dir()
            raise EngineError(f"copying the template cluster failed: {r.stderr!r}")
        self.port = pick_port()
        self.log_path = Path(tmp_path) / f"postgres-{self.port}.log"
        self.startup_seconds = None

    @property
    def dsn(self):
        return f"postgresql://{PG_USER}@{HOST}:{self.port}/{PG_DB}"

    def url(self, user=PG_USER, db=PG_DB):
        return f"postgresql://{user}@{HOST}:{self.port}/{db}"

    def _ready(self):
        """postmaster.pid's status line says "ready" (accepting connections)."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (len(lines) >= 8 and lines[0].strip() == str(self.proc.pid)
                and lines[7].strip() == "ready")

    def _spawn_and_wait(self):
        t0 = time.monotonic()
        self._spawn([str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                     "-c", f"unix_socket_directories={self.dir}"], cwd=self.dir, **self._kw)

        def up():
            if self.proc.poll() is not None:
                raise EngineError(f"postgres exited with status {self.proc.returncode} while "
                                  f"starting on port {self.port}; log tail:\n{self.log()}")
            return self._ready()
        _wait_until(up, ENGINE_WAIT, f"postgres not ready on port {self.port}", self.log_path)
        self.startup_seconds = time.monotonic() - t0

    def start(self, fixed_port=False):
        self._start_on_a_port(self._spawn_and_wait, fixed_port)
        return self

    def psql(self, sql, user=PG_USER, db=PG_DB, check=True):
        """Runs sql through psql (-X -A -t, ON_ERROR_STOP); returns its
        stdout without the trailing newline. Raises EngineError on failure
        (check=False: returns the CompletedProcess instead)."""
        r = self._client_run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                              "-d", self.url(user, db), "-c", sql],
                             env={**os.environ, "PGCONNECT_TIMEOUT": "10"})
        if not check:
            return r
        if r.returncode != 0:
            raise EngineError(f"psql failed ({r.returncode}) on {sql!r}: {r.stderr.strip()}")
        return r.stdout.rstrip("\n")

    def connect(self, user=PG_USER, db=PG_DB, autocommit=True):
        """A psycopg2 connection (python3-psycopg2)."""
        import psycopg2
        conn = psycopg2.connect(self.url(user, db), connect_timeout=10)
        conn.autocommit = autocommit
        return conn

    def new_database(self, name=None):
        """A fresh database owned by parley on this server (about 0.2 s,
        against about 0.7 s for a fresh server under load): a Database with
        .name, .dsn, .psql(), .connect(), .drop()."""
        name = name or f"t_{os.getpid()}_{next(_db_seq)}"
        self.psql(f'CREATE DATABASE "{name}" OWNER {PG_USER}', user="postgres", db="postgres")
        return Database(self, name)

    def stop(self):
        """Fast shutdown (SIGINT to the postmaster: running transactions are
        rolled back, a checkpoint is written), bounded, then SIGKILL;
        then the temp dir with the data is removed."""
        self._end(signal.SIGINT, ENGINE_WAIT)
        self._remove_dir()

    def shutdown(self):
        """Fast shutdown, keeping the data (restart() brings it back)."""
        self._end(signal.SIGINT, ENGINE_WAIT)

    def restart(self, kill=False):
        """Stops (fast shutdown, or SIGKILL when kill=True; nothing if it is
        already down) and starts on the same port and data directory."""
        if self.alive():
            self._end(signal.SIGKILL if kill else signal.SIGINT, ENGINE_WAIT)
        if not self.data.exists():
            raise EngineError("postgres was stopped: its data directory is gone")
        return self.start(fixed_port=True)

    def _remove_dir(self):
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            with _lock:
                _dirs.discard(self.dir)


class Database:
    """One database of a shared Postgres (the session's pg_server)."""

    def __init__(self, server, name):
        self.server, self.name = server, name

    @property
    def port(self):
        return self.server.port

    @property
    def dsn(self):
        return self.server.url(PG_USER, self.name)

    def psql(self, sql, user=PG_USER, check=True):
        return self.server.psql(sql, user=user, db=self.name, check=check)

    def connect(self, user=PG_USER, autocommit=True):
        return self.server.connect(user=user, db=self.name, autocommit=autocommit)

    def drop(self):
        """Drops it, ending its sessions (WITH (FORCE))."""
        if self.server.alive():
            self.server.psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)',
                             user="postgres", db="postgres")


def start_postgres(tmp_path):
    """A fresh PostgreSQL (role and database `parley`, trust auth) on
    127.0.0.1; returns a Postgres once it accepts connections."""
    pg = Postgres(tmp_path)
    try:
        return pg.start()
    except BaseException:
        pg.stop()
        raise


# --------------------------------------------------------------------------
# Redis


class Redis(_Engine):
    """A redis-server of the tests. Attributes: port, url, pid, dir (its
    working directory, in tmp_path), log_path, persist, startup_seconds."""

    name = "redis"

    def __init__(self, tmp_path, persist=False):
        super().__init__()
        self.port = pick_port()
        base = Path(tmp_path)
        n = 0
        self.dir = base / "redis"
        while self.dir.exists():
            n += 1
            self.dir = base / f"redis{n}"
        self.dir.mkdir(parents=True)
        self.log_path = self.dir / "redis.log"
        self.persist = persist
        self.startup_seconds = None

    @property
    def url(self):
        return f"redis://{HOST}:{self.port}"

    def _argv(self):
        argv = ["redis-server", "--port", str(self.port), "--bind", HOST,
                "--protected-mode", "yes", "--daemonize", "no", "--dir", str(self.dir),
                "--logfile", "", "--save", "", "--databases", "4", "--loglevel", "warning"]
        if self.persist:  # every write fsynced to the AOF: restart() keeps it
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        return argv

    def _ping(self):
        try:
            with socket.create_connection((HOST, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _spawn_and_wait(self):
        t0 = time.monotonic()
        self._spawn(self._argv(), cwd=self.dir)

        def up():
            if self.proc.poll() is not None:
                raise EngineError(f"redis-server exited with status {self.proc.returncode} "
                                  f"while starting on port {self.port}; log tail:\n{self.log()}")
            return self._ping()
        _wait_until(up, ENGINE_WAIT, f"redis not answering PING on port {self.port}",
                    self.log_path)
        self.startup_seconds = time.monotonic() - t0

    def start(self, fixed_port=False):
        self._start_on_a_port(self._spawn_and_wait, fixed_port)
        return self

    def cli(self, *args, check=True):
        """Runs one command through redis-cli; returns the reply as
        redis-cli prints it (--no-raw), except that a single string comes
        back unquoted, an integer as its digits and nil as None. Raises
        EngineError on an error reply or a failure (unless check=False)."""
        r = self._client_run(["redis-cli", "-h", HOST, "-p", str(self.port), "--no-raw",
                              *[str(a) for a in args]])
        out = r.stdout.rstrip("\n")
        if check and (r.returncode != 0 or out.startswith("(error)")):
            raise EngineError(f"redis-cli {' '.join(map(str, args))} failed "
                              f"({r.returncode}): {out} {r.stderr.strip()}")
        if out == "(nil)":
            return None
        if out.startswith("(integer) "):
            return out[len("(integer) "):]
        if len(out) >= 2 and out[0] == out[-1] == '"' and "\n" not in out:
            return codecs.escape_decode(out[1:-1].encode())[0].decode("utf-8", "replace")
        return out

    def client(self, **kw):
        """A redis-py client (python3-redis), decoding replies to str."""
        import redis
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", ENGINE_WAIT)
        return redis.Redis(host=HOST, port=self.port, **kw)

    def stop(self):
        """SIGTERM (redis saves nothing unless persist), bounded, then SIGKILL."""
        self._end(signal.SIGTERM, ENGINE_WAIT)

    def restart(self, kill=False):
        """Stops (SIGTERM, or SIGKILL when kill=True) and starts again on the
        same port and directory."""
        if self.alive():
            self._end(signal.SIGKILL if kill else signal.SIGTERM, ENGINE_WAIT)
        return self.start(fixed_port=True)


def start_redis(tmp_path, persist=False):
    """A fresh redis-server on 127.0.0.1 (no persistence unless persist:
    then an AOF fsynced on every write); returns it once it answers PING."""
    r = Redis(tmp_path, persist=persist)
    try:
        return r.start()
    except BaseException:
        r.stop()
        raise
