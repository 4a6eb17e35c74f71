"""One parleyd per port and per data directory (issue 12, bug 1).

SO_REUSEPORT lets listeners of one user share a port, and the kernel then
splits connections between them: a second parleyd on a busy port, or on
the data directory of a running one, must refuse to start, say why, and
exit non-zero, leaving the first one serving."""

import os
import select
import signal
import socket
import subprocess
import time

import requests

from parley_client import HOST, NO_LIMITS, PARLEYD, START_TIMEOUT, start_server

RUN_TIMEOUT = 10  # s, bound on a refused start (it exits at once)


def run_second(tmp_path, port, data_dir, name="second"):
    """Runs a second parleyd to completion (bounded). Before the fix it
    would start and serve: subprocess.run then times out and the test fails."""
    argv = [PARLEYD, "--port", str(port), "--listen", HOST, "--data-dir", str(data_dir),
            "--web-dir", str(tmp_path), "--threads", "2", *NO_LIMITS]
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:  # run() has killed it
        raise AssertionError(f"a second parleyd ({name}) started instead of refusing: "
                             f"{e.stdout!r}") from None


def assert_serving(srv):
    r = requests.get(f"{srv.url}/healthz", timeout=10)
    assert r.status_code == 200, r.text


def register(srv, name="owner"):
    r = requests.post(f"{srv.url}/v1/users", timeout=30,
                      json={"username": name, "password": "password-" + name})
    assert r.status_code == 201, r.text


def login(srv, name="owner"):
    return requests.post(f"{srv.url}/v1/sessions", timeout=30,
                         json={"username": name, "password": "password-" + name})


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_second_server_on_a_busy_port_is_refused(parley, tmp_path):
    first = parley()
    p = run_second(tmp_path, first.port, tmp_path / "other-data")
    assert p.returncode != 0, p
    err = p.stderr.decode(errors="replace")
    assert b"listening" not in p.stdout, p
    assert f"port={first.port}" in err and "already in use" in err, err
    assert "Address already in use" in err, err  # the system's reason
    assert_serving(first)
    # Every connection reaches the first server: its user logs in each time.
    register(first)
    for _ in range(10):
        r = login(first)
        assert r.status_code == 200, r.text


def test_busy_port_with_one_thread_each(parley, tmp_path):
    first = parley("--threads", "1")
    argv = [PARLEYD, "--port", str(first.port), "--listen", HOST,
            "--data-dir", str(tmp_path / "d1"), "--threads", "1", *NO_LIMITS]
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError("a second single-thread parleyd started on a busy port") from None
    assert p.returncode != 0 and b"already in use" in p.stderr, p
    assert_serving(first)


def test_port_held_by_another_program_is_refused(tmp_path):
    # A plain listener (no SO_REUSEPORT) and a SO_REUSEPORT one of our user.
    for reuse in (False, True):
        s = socket.socket()
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((HOST, 0))
        s.listen(8)
        try:
            p = run_second(tmp_path, s.getsockname()[1], tmp_path / f"d-{reuse}")
        finally:
            s.close()
        assert p.returncode != 0, p
        assert b"already in use" in p.stderr, p


def test_second_server_on_the_same_data_dir_is_refused(parley, tmp_path):
    first = parley()
    p = run_second(tmp_path, 0, first.data_dir)
    assert p.returncode != 0, p
    assert b"listening" not in p.stdout, p
    err = p.stderr.decode(errors="replace")
    assert "data directory is in use" in err, err
    assert f"dir={first.data_dir}" in err, err
    assert f"pid={first.proc.pid}" in err, err
    assert_serving(first)
    # The refused one changed nothing: the first one's users still log in.
    register(first)
    assert login(first).status_code == 200


def test_bad_data_dir_names_the_reason(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    p = run_second(tmp_path, 0, blocker / "data")
    assert p.returncode != 0, p
    assert b"listening" not in p.stdout
    assert p.stderr.strip(), p


def test_port_and_data_dir_are_free_again_after_a_stop_or_a_crash(parley, tmp_path):
    first = parley()
    port, data = first.port, first.data_dir
    register(first)
    first.expect_exit = True
    assert first.kill() == 0
    second = parley("--port", str(port), "--data-dir", str(data))
    assert second.port == port
    assert_serving(second)
    # kill -9: the kernel drops the lock and the listeners with the process.
    second.expect_exit = True
    second.proc.send_signal(signal.SIGKILL)
    second.proc.wait(timeout=10)
    third = parley("--port", str(port), "--data-dir", str(data))
    assert login(third).status_code == 200


def start_raw(port, data_dir, log):
    argv = [PARLEYD, "--port", str(port), "--listen", HOST, "--data-dir", str(data_dir),
            "--threads", "2", *NO_LIMITS]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=open(log, "wb"), close_fds=True)


def listening(proc):
    """True once proc printed its listening line, False if it exited first."""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + START_TIMEOUT
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            return False
        buf += chunk
        if b"listening" in buf:
            return True
    raise AssertionError(f"parleyd neither listened nor exited: {buf!r}")


def test_two_servers_started_at_once_never_both_serve(tmp_path):
    """The probe leaves a window between two starts; the check after binding
    closes it: of two servers started together, at most one serves."""
    for i in range(5):
        port = free_port()
        procs = [start_raw(port, tmp_path / f"r{i}-{k}", tmp_path / f"r{i}-{k}.log")
                 for k in range(2)]
        try:
            up = [listening(p) for p in procs]
            assert up.count(True) <= 1, f"round {i}: both servers serve port {port}"
            for p, ok in zip(procs, up):
                if not ok:
                    assert p.wait(timeout=10) != 0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait(timeout=10)
                p.stdout.close()
