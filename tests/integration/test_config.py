"""parleyd's settings from a config file and PARLEY_* variables, end to end:
the real binary starts from them and serves; a bad file or variable stops
it with exit status 2 and a message naming the file and line (or the
variable). Precedence and every value rule are in tests/unit/test_config.c."""

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from parley_client import HOST, PARLEY_WEB, PARLEYD, REPO, Server, read_listening_line


def clean_env(**extra):
    """This environment without PARLEY_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def launch(tmp_path, args, env):
    """Starts parleyd with exactly `args`; returns a Server once it printed
    its listening line (the port it reports), or fails the test."""
    log_path = Path(tmp_path) / f"parleyd-{time.monotonic_ns()}.log"
    logf = open(log_path, "wb")
    try:
        proc = subprocess.Popen([PARLEYD, *map(str, args)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=logf, close_fds=True, env=env)
    finally:
        logf.close()
    buf, line, drainer = read_listening_line(proc)
    m = re.fullmatch(r"parleyd listening on http://([^ ]+):(\d+)", line)
    srv = Server(proc, int(m.group(2)) if m else None, log_path, None, None)
    srv.listen = m.group(1) if m else None
    srv._stdout_thread = drainer
    if m is None:
        srv.kill()
        pytest.fail(f"parleyd did not start: stdout={buf!r}\nlog:\n{srv.log()}")
    return srv


@pytest.fixture
def servers():
    started = []
    yield started
    for srv in started:
        alive = srv.alive()
        status = srv.kill()
        assert alive, f"parleyd exited on its own; log:\n{srv.log()}"
        assert status == 0, f"parleyd exited {status} on SIGTERM; log:\n{srv.log()}"


def run_to_exit(args, env):
    return subprocess.run([PARLEYD, *map(str, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=10, env=env)


def assert_serves(srv):
    r = requests.get(f"http://{HOST}:{srv.port}/healthz", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text


# ---- serving from a file and from the environment ---------------------------


def test_serves_from_a_config_file(tmp_path, servers):
    port = free_port()
    data = tmp_path / "from-file"
    conf = tmp_path / "parleyd.conf"
    conf.write_text(f"""# parleyd for the test
listen = {HOST}
port = {port}

data-dir = {data}
web-dir = {PARLEY_WEB}
threads = 2
log-level = warn
max-message = 64K
request-timeout = 10s
insecure-fast-kdf = true
""")
    srv = launch(tmp_path, ["--config", conf], clean_env())
    servers.append(srv)
    assert (srv.listen, srv.port) == (HOST, port)
    assert_serves(srv)
    assert data.is_dir(), "data-dir from the file was not used"
    log = srv.log()
    assert "msg=listening" not in log, "log-level from the file was not used"
    assert "INSECURE" in log, "insecure-fast-kdf from the file was not used"
    r = requests.get(f"http://{HOST}:{srv.port}/", timeout=10)
    assert r.status_code == 200, "web-dir from the file was not used"


def test_serves_on_parley_port(tmp_path, servers):
    port = free_port()
    data = tmp_path / "from-env"
    env = clean_env(PARLEY_PORT=port, PARLEY_LISTEN=HOST, PARLEY_DATA_DIR=data,
                    PARLEY_WEB_DIR=PARLEY_WEB, PARLEY_THREADS=2)
    srv = launch(tmp_path, [], env)
    servers.append(srv)
    assert (srv.listen, srv.port) == (HOST, port)
    assert_serves(srv)
    assert data.is_dir()


def test_flags_beat_environment_beat_file(tmp_path, servers):
    file_port, env_port = free_port(), free_port()
    conf = tmp_path / "p.conf"
    conf.write_text(f"listen = {HOST}\nport = {file_port}\ndata-dir = {tmp_path / 'file-data'}\n"
                    "threads = 2\n")
    env = clean_env(PARLEY_PORT=env_port, PARLEY_DATA_DIR=tmp_path / "env-data")
    srv = launch(tmp_path, ["--config", conf], env)
    servers.append(srv)
    assert srv.port == env_port  # environment over file
    assert_serves(srv)
    assert (tmp_path / "env-data").is_dir() and not (tmp_path / "file-data").exists()
    # a flag before --config still wins over both (its own data directory:
    # one parleyd per data directory)
    srv2 = launch(tmp_path, ["--port", "0", "--data-dir", str(tmp_path / "flag-data"),
                             "--config", conf], env)
    servers.append(srv2)
    assert srv2.port not in (None, file_port, env_port)
    assert_serves(srv2)
    assert (tmp_path / "flag-data").is_dir()


def test_readme_example_config_file_is_valid(tmp_path, servers):
    """The example in README.md's Configuration section parses; flags take
    over where it names machine paths (TLS files, data dir, a fixed port)."""
    text = (Path(REPO) / "README.md").read_text()
    section = text[text.index("## Configuration"):text.index("## What works today")]
    m = re.search(r"```ini\n(.*?)```", section, re.S)
    assert m, "README's Configuration section lost its config file example"
    conf = tmp_path / "example.conf"
    conf.write_text(m.group(1))
    srv = launch(tmp_path, ["--config", conf, "--listen", HOST, "--port", "0", "--tls-cert=",
                            "--tls-key=", "--data-dir", tmp_path / "d", "--threads", "2"],
                 clean_env())
    servers.append(srv)
    assert_serves(srv)


# ---- bad input stops it with a clear message ----------------------------------


@pytest.mark.parametrize("text,line,what", [
    ("port = 8080\n\nbogus-key = 1\n", 3, "unknown key 'bogus-key'"),
    ("# ok\nport = 70000\n", 2, "port: 70000 is above the maximum 65535"),
    ("port = 1\nnot a setting\n", 2, "expected key = value"),
    ("threads = 2\nthreads = 3\n", 2, "threads is already set on line 1"),
    ("max-message = 64 parsecs\n", 1, "max-message: '64 parsecs' is not a size"),
    ("listen = " + "1" * 200 + "\n", 1, "listen: the value is 200 bytes long"),
    ("\x00\x01\x02garbage\n", 1, "a NUL byte"),
], ids=["unknown-key", "out-of-range", "garbage", "duplicate", "bad-unit", "oversize", "binary"])
def test_bad_config_file_exits_2_naming_the_line(tmp_path, text, line, what):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    p = run_to_exit(["--config", conf, "--listen", HOST, "--port", "0",
                     "--data-dir", tmp_path / "d"], clean_env())
    assert p.returncode == 2, p
    err = p.stderr.decode()
    assert f"{conf}:{line}: " in err, err
    assert what in err, err
    assert b"listening" not in p.stdout
    assert not (tmp_path / "d").exists(), "parleyd went on after a bad config file"


def test_missing_config_file_exits_2(tmp_path):
    p = run_to_exit(["--config", tmp_path / "nope.conf", "--port", "0", "--listen", HOST],
                    clean_env())
    assert p.returncode == 2, p
    assert f"cannot read config file {tmp_path / 'nope.conf'}" in p.stderr.decode()


def test_bad_environment_variable_exits_2(tmp_path):
    p = run_to_exit(["--listen", HOST, "--data-dir", tmp_path / "d"],
                    clean_env(PARLEY_PORT="eighty"))
    assert p.returncode == 2, p
    assert p.stderr.decode() == "parleyd: PARLEY_PORT: 'eighty' is not a number\n"
