"""An operator's view (README "Logs" and "Metrics"): log lines that explain
WebSocket opens and closes (1008 and 1013 with their reasons), startup
failures with the system's reason, a missing web root, the optional access
log; metrics with histograms, message counters, gauges, process_* and
build_info; --metrics-listen serving /metrics and nothing else.

Log lines are read from the server's stderr file. A line that must NOT be
there is checked after a causal barrier: parleyd writes a session's close
line before it counts parley_sessions_closed_total, and an access line
before the response leaves."""

import asyncio
import os
import re
import resource
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from parley_client import (HOST, PARLEYD, SLOW, START_TIMEOUT, T, Client, RawHTTP, RawWS, arun,
                           await_metrics, direct, get_metrics, http_get, mval, parse_metrics,
                           register, rest, users)

FIELD = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|\S*)')


def logfmt(line):
    """{key: value} of one logfmt line (quotes removed, escapes kept)."""
    out = {}
    for k, v in FIELD.findall(line):
        out[k] = v[1:-1] if v.startswith('"') else v
    return out


def log_lines(srv, msg=None):
    """The server's log lines as dicts (all, or those whose msg is msg)."""
    text = Path(srv.log_path).read_text(errors="replace")
    lines = [logfmt(l) for l in text.splitlines() if l.startswith("ts=")]
    return [l for l in lines if msg is None or l.get("msg") == msg]


def wait_log(srv, pred, what, timeout=T):
    """Polls the log until a line matches pred (bounded); returns it."""
    deadline = time.monotonic() + timeout
    for _ in range(100000):
        for l in log_lines(srv):
            if pred(l):
                return l
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    raise AssertionError(f"no log line with {what}; log:\n{srv.log()}")


def closes_of(srv, user):
    return [l for l in log_lines(srv, "ws close") if l.get("user") == user.name]


ADDR = re.compile(r"^127\.0\.0\.\d+:\d+$")


# --------------------------------------------------------------------------
# WebSocket open and close lines
# --------------------------------------------------------------------------


def test_open_and_normal_close_are_logged_at_debug(parley):
    srv = parley("--log-level", "debug")
    u = register(srv)

    async def go():
        c = await Client.open(u, src="127.0.0.21")
        await c.ping()
        await c.close()  # 1000 from the client
    arun(go())
    opened = wait_log(srv, lambda l: l.get("msg") == "ws open" and l.get("user") == u.name,
                      "the open line")
    assert opened["level"] == "debug", opened
    assert opened["device"] == str(u.device), opened
    assert opened["addr"].startswith("127.0.0.21:"), opened
    assert ADDR.match(opened["addr"]), opened
    closed = wait_log(srv, lambda l: l.get("msg") == "ws close" and l.get("user") == u.name,
                      "the close line")
    assert closed["level"] == "debug", closed  # a normal end: debug
    assert closed["code"] == "1000" and closed["by"] == "client", closed
    assert closed["conn"] == opened["conn"] and closed["addr"] == opened["addr"], (opened, closed)
    assert closed["device"] == str(u.device), closed


def test_normal_close_is_quiet_at_the_default_level(parley):
    srv = parley()
    u = register(srv)
    m0 = get_metrics(srv.port)

    async def go():
        c = await Client.open(u)
        await c.ping()
        await c.close()
        # The close line (if any) is written before the close is counted.
        await await_metrics(srv.port, lambda m: mval(m, "parley_sessions_closed_total") >
                            mval(m0, "parley_sessions_closed_total"), "the session closed")
    arun(go())
    assert closes_of(srv, u) == [], srv.log()
    assert not [l for l in log_lines(srv, "ws open") if l.get("user") == u.name]


def test_policy_close_1008_is_logged_with_code_and_reason(parley):
    srv = parley()
    u = register(srv)

    async def go():
        c = await Client.open(u, src="127.0.0.22")
        await c.ping()
        r = await asyncio.get_running_loop().run_in_executor(
            None, lambda: u.delete("/v1/sessions/current"))
        assert r.status_code == 204, r.text
        assert await c.closed_with() == 1008
    arun(go())
    line = wait_log(srv, lambda l: l.get("msg") == "ws close" and l.get("user") == u.name,
                    "the 1008 close line")
    assert line["level"] == "info", line
    assert line["code"] == "1008" and line["reason"] == "token revoked", line
    assert line["by"] == "server" and line["device"] == str(u.device), line
    assert line["addr"].startswith("127.0.0.22:"), line


def test_try_again_close_1013_is_logged_with_code_and_reason(parley):
    """An echo larger than --max-queue cannot be queued: 1013."""
    srv = parley("--max-queue", "4096")
    u = register(srv)

    async def go():
        c = await Client.open(u, src="127.0.0.23")
        await c.send('{"type":"echo","pad":"' + "x" * 6000 + '"}')
        assert await c.closed_with() == 1013
    arun(go())
    line = wait_log(srv, lambda l: l.get("msg") == "ws close" and l.get("user") == u.name,
                    "the 1013 close line")
    assert line["level"] == "info", line
    assert line["code"] == "1013", line
    assert line["reason"] == "output queue full: resume with sync", line
    assert line["by"] == "server" and line["addr"].startswith("127.0.0.23:"), line


def test_reset_connection_is_logged_1006_with_its_address(parley):
    """A peer that resets the connection (no close frame) has no address by
    the time the server notices: the line still names it."""
    srv = parley()
    u = register(srv)
    ws = RawWS(srv.port, token=u.token, src="127.0.0.24")
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.close()  # RST
    line = wait_log(srv, lambda l: l.get("msg") == "ws close" and l.get("user") == u.name,
                    "the 1006 close line")
    assert line["level"] == "info" and line["code"] == "1006", line
    assert line["by"] == "client" and line["reason"], line
    assert line["addr"].startswith("127.0.0.24:"), line


def test_close_reason_from_the_client_is_quoted(parley):
    """A client's close reason is its text: quoted and escaped, one line."""
    srv = parley("--log-level", "debug")
    u = register(srv)
    ws = RawWS(srv.port, token=u.token)
    reason = 'bye "now"\tx=1'.encode()
    ws.send_frame(0x8, struct.pack("!H", 4000) + reason)
    ws.read_until_eof()
    ws.close()
    line = wait_log(srv, lambda l: l.get("msg") == "ws close" and l.get("user") == u.name,
                    "the close line")
    assert line["code"] == "4000" and line["by"] == "client", line
    assert line["reason"] == r'bye \"now\"\tx=1', line
    assert line["level"] == "info", line  # not 1000/1001: worth a line


# --------------------------------------------------------------------------
# Startup
# --------------------------------------------------------------------------


def run_unprivileged(args):
    """Runs parleyd to completion as a user that file permissions bind
    (nobody when the tests run as root, who would pass any chmod)."""
    kw = {}
    if os.geteuid() == 0:
        kw = {"user": 65534, "group": 65534, "extra_groups": []}
    argv = [PARLEYD, "--port", "0", "--listen", HOST, *[str(a) for a in args]]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=30 * SLOW, **kw)


@pytest.fixture
def readonly_dir():
    """A directory nobody but root may write (outside the root-only pytest
    tree, so an unprivileged parleyd can reach it)."""
    base = Path(tempfile.mkdtemp(prefix="parley-ro-", dir="/tmp"))
    os.chmod(base, 0o755)
    ro = base / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    if os.geteuid() == 0 and not os.access(PARLEYD, os.X_OK, effective_ids=False):
        pytest.skip("parleyd is not reachable by an unprivileged user")
    yield ro
    os.chmod(ro, 0o755)
    shutil.rmtree(base)


@pytest.mark.parametrize("where", ["missing", "existing"])
def test_unwritable_data_dir_fails_with_the_systems_reason(readonly_dir, where):
    """A data directory that cannot be created (missing, under a read-only
    parent) or used (existing, read-only) stops parleyd with exit status 1
    and "Permission denied", not a bare error name."""
    data = readonly_dir / "sub" / "data" if where == "missing" else readonly_dir
    p = run_unprivileged(["--data-dir", data, "--web-dir", readonly_dir])
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, (p.returncode, err)
    assert b"listening" not in p.stdout, p.stdout
    assert "permission denied" in err.lower(), err
    assert "err=io" not in err, err
    failed = [logfmt(l) for l in err.splitlines() if "level=error" in l]
    assert failed and "dir" in failed[0], err
    assert failed[0]["dir"].startswith(str(readonly_dir)), err


def test_data_dir_that_is_a_file_is_explained(tmp_path):
    f = tmp_path / "plain-file"
    f.write_text("not a directory\n")
    p = subprocess.run([PARLEYD, "--port", "0", "--listen", HOST, "--data-dir", str(f)],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30 * SLOW)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, err
    assert "not a directory" in err.lower(), err
    assert "err=io" not in err, err


def test_unreadable_tls_key_names_the_file_and_reason(tmp_path):
    p = subprocess.run([PARLEYD, "--port", "0", "--listen", HOST, "--data-dir",
                        str(tmp_path / "d"), "--tls-cert", str(tmp_path / "missing-cert.pem"),
                        "--tls-key", str(tmp_path / "missing-key.pem")],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30 * SLOW)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, err
    assert "missing-cert.pem" in err and "no such file or directory" in err.lower(), err


def test_port_taken_by_another_process_names_the_reason(tmp_path):
    s = socket.socket()
    s.bind((HOST, 0))
    s.listen()
    try:
        port = s.getsockname()[1]
        p = subprocess.run([PARLEYD, "--port", str(port), "--listen", HOST, "--data-dir",
                            str(tmp_path / "d")], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=30 * SLOW)
    finally:
        s.close()
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, err
    assert "address already in use" in err.lower(), err


def test_out_of_file_descriptors_at_any_step_is_explained(tmp_path):
    """Whichever startup step runs out of descriptors (the main loop, a
    socket, an I/O thread's loop, the store) says so and exits 1: never a
    crash, never a failure without its reason."""
    def limit(n):
        return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    reasons = set()
    started = False
    # LeakSanitizer (ASan builds) needs descriptors of its own at exit: with
    # none left it aborts, which is the sanitizer's failure, not parleyd's.
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
    for n in range(6, 129):
        p = subprocess.Popen([PARLEYD, "--port", "0", "--listen", HOST, "--data-dir",
                              str(tmp_path / "d"), "--threads", "2", "--metrics-listen",
                              f"{HOST}:0"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, preexec_fn=limit(n), env=env)
        try:
            line = p.stdout.readline()  # the listening line, or EOF when it fails
            if line.startswith(b"parleyd listening"):
                started = True
                p.terminate()
            out, err = p.communicate(timeout=START_TIMEOUT)
        except BaseException:
            p.kill()
            p.communicate(timeout=10)
            raise
        err = err.decode(errors="replace")
        if started:
            assert p.returncode == 0, (n, err)
            break
        assert p.returncode == 1, (n, p.returncode, err)
        errors = [logfmt(l) for l in err.splitlines() if "level=error" in l]
        assert errors and "too many open files" in errors[0].get("err", "").lower(), (n, err)
        reasons.add(errors[0]["msg"])
    assert started, "parleyd never started, even with 128 descriptors"
    assert len(reasons) >= 3, reasons  # several different steps were reached


def test_missing_web_dir_warns(parley, tmp_path):
    missing = tmp_path / "no-such-web"
    srv = parley(web_dir=missing)
    warn = [l for l in log_lines(srv) if l.get("level") == "warn" and "web dir" in l.get("msg", "")]
    assert warn, srv.log()
    assert warn[0]["dir"] == str(missing), warn
    assert "no such file or directory" in warn[0].get("err", "").lower(), warn
    assert http_get(srv.port, b"/index.html").status == 404


def test_web_dir_that_exists_does_not_warn(parley, webroot):
    srv = parley(web_dir=webroot["root"])
    assert not [l for l in log_lines(srv) if "web dir" in l.get("msg", "")], srv.log()


# --------------------------------------------------------------------------
# Access log
# --------------------------------------------------------------------------


def access_lines(srv):
    return log_lines(srv, "access")


def test_access_log_is_off_by_default(server):
    assert http_get(server.port, b"/healthz").status == 200
    assert access_lines(server) == []


def test_access_log_one_logfmt_line_per_request(parley):
    srv = parley("--access-log")
    assert http_get(srv.port, b"/healthz?probe=1&secret=x").status == 200
    assert http_get(srv.port, b"/no/such/file").status == 404
    u = register(srv, src="127.0.0.25")  # an asynchronous reply (the KDF runs off the loop)
    with RawHTTP(srv.port) as raw:  # a malformed request: nothing is known but the status
        raw.send(b"BROKEN\r\n\r\n")
        assert raw.read_response().status == 400
    RawWS(srv.port, token=u.token).close()  # the upgrade: 101
    lines = access_lines(srv)
    by_path = {l["path"]: l for l in lines}
    h = by_path["/healthz"]  # the query is not logged
    assert h["method"] == "GET" and h["status"] == "200", h
    assert int(h["bytes"]) == len(b'{"status":"ok"}'), h
    assert float(h["duration_ms"]) >= 0 and ADDR.match(h["addr"]), h
    assert h["level"] == "info", h
    assert by_path["/no/such/file"]["status"] == "404", lines
    reg = by_path["/v1/users"]
    assert reg["method"] == "POST" and reg["status"] == "201", reg
    assert reg["addr"].startswith("127.0.0.25:") and int(reg["bytes"]) > 0, reg
    assert by_path["/v1/ws"]["status"] == "101" and by_path["/v1/ws"]["bytes"] == "0", lines
    bad = [l for l in lines if l["status"] == "400"]
    assert len(bad) == 1 and bad[0]["method"] == "-" and bad[0]["path"] == "-", lines
    assert bad[0]["duration_ms"] == "-", bad
    for l in lines:
        assert set(l) >= {"ts", "level", "msg", "method", "path", "status", "bytes",
                          "duration_ms", "addr"}, l
    assert not any("secret" in l for l in Path(srv.log_path).read_text().splitlines()
                   if "msg=access" in l)


def test_access_log_quotes_odd_paths(parley):
    srv = parley("--access-log")
    assert http_get(srv.port, b'/a"b\\c').status == 404
    line = [l for l in access_lines(srv) if l["status"] == "404"][0]
    assert line["path"] == r'/a\"b\\c', line


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def histogram(m, name):
    """(buckets [(le, count)] in order, sum, count) of a histogram."""
    buckets = []
    for k, v in m.items():
        mm = re.fullmatch(name + r'_bucket\{le="([^"]+)"\}', k)
        if mm:
            le = float("inf") if mm.group(1) == "+Inf" else float(mm.group(1))
            buckets.append((le, v))
    buckets.sort()
    return buckets, m.get(name + "_sum"), m.get(name + "_count")


def check_histogram(m, name):
    buckets, total, count = histogram(m, name)
    assert len(buckets) >= 5 and buckets[-1][0] == float("inf"), (name, buckets)
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), f"{name}: buckets are not cumulative: {buckets}"
    assert counts[-1] == count, (name, buckets, count)
    assert total is not None and total >= 0, name
    return buckets, total, count


def metric_types(text):
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


HISTOGRAMS = ["parley_send_ack_seconds", "parley_commit_batch_seconds",
              "parley_commit_fsync_seconds", "parley_commit_batch_size"]


def test_histograms_and_counters_grow_with_sends(parley):
    srv = parley()
    text = http_get(srv.port, b"/metrics").body.decode()
    types = metric_types(text)
    for h in HISTOGRAMS:
        assert types.get(h) == "histogram", (h, types.get(h))
    for g in ("parley_users", "parley_conversations", "parley_sessions"):
        assert types.get(g) == "gauge", g
    for c in ("parley_messages_sent_total", "parley_messages_delivered_total"):
        assert types.get(c) == "counter", c
    a, b = users(srv, 2)
    conv = direct(a, b)
    m0 = get_metrics(srv.port)
    assert m0["parley_users"] >= 2 and m0["parley_conversations"] >= 1, m0
    n = 20

    async def go():
        ca, cb = await Client.open(a), await Client.open(b)
        m1 = await await_metrics(srv.port, lambda m: m["parley_sessions"] ==
                                 m0["parley_sessions"] + 2, "two sessions")
        for i in range(n):
            ack = await ca.send_msg(conv, f"c{i}", f"hello {i}")
            assert ack["type"] == "ack", ack
        for i in range(n):
            await cb.wait_type("msg", cmid=f"c{i}")
        # A resend of a cmid is acknowledged again but not sent again.
        dup = await ca.send_msg(conv, "c0", "hello 0")
        assert dup.get("duplicate") is True, dup
        m2 = await await_metrics(srv.port, lambda m: m["parley_messages_delivered_total"] >=
                                 m0["parley_messages_delivered_total"] + n, "deliveries")
        await ca.close()
        await cb.close()
        m3 = await await_metrics(srv.port, lambda m: m["parley_sessions"] ==
                                 m0["parley_sessions"], "the sessions closed")
        return m1, m2, m3
    m1, m2, m3 = arun(go())
    assert m2["parley_messages_sent_total"] - m0["parley_messages_sent_total"] == n, m2
    assert m2["parley_messages_delivered_total"] - m0["parley_messages_delivered_total"] == n
    _, s0, c0 = check_histogram(m0, "parley_send_ack_seconds")
    _, s2, c2 = check_histogram(m2, "parley_send_ack_seconds")
    assert c2 - c0 == n + 1, (c0, c2)  # every ack, the duplicate's too
    assert s2 > s0, (s0, s2)
    for h in HISTOGRAMS[1:]:
        _, _, before = check_histogram(m0, h)
        _, _, after = check_histogram(m2, h)
        assert after > before, (h, before, after)
    _, ops0, _ = check_histogram(m0, "parley_commit_batch_size")
    _, ops2, _ = check_histogram(m2, "parley_commit_batch_size")
    assert ops2 - ops0 >= n, (ops0, ops2)  # every send was in some batch
    # Monotonic: later scrapes never count less.
    for h in HISTOGRAMS:
        b2, _, _ = check_histogram(m2, h)
        b3, _, _ = check_histogram(m3, h)
        assert all(y >= x for (_, x), (_, y) in zip(b2, b3)), (h, b2, b3)
    assert m3["parley_users"] == m0["parley_users"]
    assert m3["parley_conversations"] == m0["parley_conversations"]
    # The message log: every send was appended (fewer appends than sends
    # when batches group them), its bytes counted; the store catches up.
    for c in ("parley_log_appends_total", "parley_log_bytes_total",
              "parley_store_applies_total"):
        assert types.get(c) == "counter", c
    assert types.get("parley_store_unapplied_batches") == "gauge"
    assert 1 <= m2["parley_log_appends_total"] - m0["parley_log_appends_total"] <= n
    assert m2["parley_log_bytes_total"] - m0["parley_log_bytes_total"] >= n * len("hello 0")
    m4 = arun(await_metrics(srv.port, lambda m: m["parley_store_unapplied_batches"] == 0 and
                            m["parley_store_applies_total"] > m0["parley_store_applies_total"],
                            "the store applied the log"))
    assert m4["parley_store_unapplied_batches"] == 0
    # The read pool: the token checks and reads above ran there.
    for c in ("parley_reads_total", "parley_reads_refused_total"):
        assert types.get(c) == "counter", c
    for g in ("parley_read_queue", "parley_reads_running"):
        assert types.get(g) == "gauge", g
    assert m4["parley_reads_total"] > m0["parley_reads_total"], (m0, m4)
    assert m4["parley_reads_refused_total"] == 0


def test_user_and_conversation_gauges_count_at_change(parley):
    srv = parley()
    m0 = get_metrics(srv.port)
    a, b, c = users(srv, 3)
    direct(a, b)
    direct(a, c)
    direct(a, b)  # the same direct again: no new conversation
    m1 = get_metrics(srv.port)
    assert m1["parley_users"] - m0["parley_users"] == 3, (m0, m1)
    assert m1["parley_conversations"] - m0["parley_conversations"] == 2, (m0, m1)


def test_gauges_survive_a_restart(parley, tmp_path):
    data = tmp_path / "kept"
    srv = parley(data_dir=data)
    a, b = users(srv, 2)
    direct(a, b)
    before = get_metrics(srv.port)
    srv.kill()
    srv2 = parley(data_dir=data)
    after = get_metrics(srv2.port)
    assert after["parley_users"] == before["parley_users"] >= 2
    assert after["parley_conversations"] == before["parley_conversations"] >= 1


def test_process_metrics_and_build_info(server):
    m = get_metrics(server.port)
    assert m["process_cpu_seconds_total"] > 0, m
    with open(f"/proc/{server.proc.pid}/status") as f:
        vmrss = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:")][0]
    rss = m["process_resident_memory_bytes"]
    assert vmrss / 4 < rss < vmrss * 4, (rss, vmrss)
    assert m["process_virtual_memory_bytes"] >= rss
    fds = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
    assert 3 <= m["process_open_fds"] <= fds + 8, (m["process_open_fds"], fds)
    assert m["process_max_fds"] >= m["process_open_fds"]
    # Its start: the process's own, from the kernel (within the tick).
    with open(f"/proc/{server.proc.pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        btime = [int(l.split()[1]) for l in f if l.startswith("btime ")][0]
    expect = btime + ticks / os.sysconf("SC_CLK_TCK")
    assert abs(m["process_start_time_seconds"] - expect) < 0.05, (m, expect)
    assert m["process_start_time_seconds"] <= time.time()
    version = subprocess.run([PARLEYD, "--version"], capture_output=True, text=True,
                             timeout=10).stdout.split()[-1]
    assert m[f'parley_build_info{{version="{version}"}}'] == 1, \
        [k for k in m if k.startswith("parley_build")]
    types = metric_types(http_get(server.port, b"/metrics").body.decode())
    assert types["process_cpu_seconds_total"] == "counter"
    assert types["process_resident_memory_bytes"] == "gauge"
    assert types["parley_build_info"] == "gauge"


# --------------------------------------------------------------------------
# --metrics-listen
# --------------------------------------------------------------------------


def metrics_port(srv):
    line = wait_log(srv, lambda l: l.get("msg") == "metrics listening", "metrics listening")
    assert line["addr"] == HOST, line
    return int(line["port"])


def test_metrics_listen_serves_only_metrics(parley):
    srv = parley("--metrics-listen", f"{HOST}:0")
    port = metrics_port(srv)
    assert port != srv.port
    r = http_get(port, b"/metrics")
    assert r.status == 200 and r.header("content-type").startswith("text/plain"), r
    m = parse_metrics(r.body.decode())
    assert "parley_send_ack_seconds_count" in m and "process_cpu_seconds_total" in m
    for path in (b"/v1/users", b"/healthz", b"/v1/ws", b"/", b"/index.html", b"/metrics/x",
                 b"/v1/conversations"):
        r = http_get(port, path)
        assert r.status == 404, (path, r)
    r = rest(port, "POST", "/v1/users", {"username": "someone", "password": "x" * 20})
    assert r.status == 404, r
    with RawHTTP(port) as raw:
        raw.send(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert raw.read_response().status == 405
    with RawHTTP(port) as raw:
        raw.send(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.read_response(head_only=True).status == 200
    # The public port keeps serving /metrics (compatibility) and everything else.
    assert http_get(srv.port, b"/metrics").status == 200
    assert http_get(srv.port, b"/healthz").status == 200
    register(srv)
    # The internal port counts like the public one (same metrics blocks).
    m1 = get_metrics(port)
    assert m1["parley_users"] >= 1


def test_metrics_listen_stops_with_the_server(parley):
    srv = parley("--metrics-listen", f"{HOST}:0")
    port = metrics_port(srv)
    assert http_get(port, b"/metrics").status == 200
    srv.expect_exit = True
    assert srv.kill() == 0
    with pytest.raises(OSError):
        socket.create_connection((HOST, port), timeout=2).close()


@pytest.mark.parametrize("value", ["nope", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536",
                                   "::1:9100", "[::1]9100", ":9100", "127.0.0.1:9x"])
def test_metrics_listen_bad_value_exits_2(tmp_path, value):
    p = subprocess.run([PARLEYD, "--port", "0", "--listen", HOST, "--data-dir",
                        str(tmp_path / "d"), "--metrics-listen", value],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30 * SLOW)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 2, (value, err)
    assert "--metrics-listen" in err and "HOST:PORT" in err, err


def test_metrics_listen_on_a_taken_port_fails(tmp_path):
    """Not shared with anyone: the public port itself or another process's
    port is refused, with the system's reason."""
    s = socket.socket()
    s.bind((HOST, 0))
    s.listen()
    try:
        port = s.getsockname()[1]
        p = subprocess.run([PARLEYD, "--port", "0", "--listen", HOST, "--data-dir",
                            str(tmp_path / "d"), "--metrics-listen", f"{HOST}:{port}"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30 * SLOW)
    finally:
        s.close()
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, err
    assert "address already in use" in err.lower(), err


def test_metrics_listen_cannot_share_the_public_port(tmp_path):
    probe = socket.socket()
    probe.bind((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()
    p = subprocess.Popen([PARLEYD, "--port", str(port), "--listen", HOST, "--data-dir",
                          str(tmp_path / "d"), "--metrics-listen", f"{HOST}:{port}"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate(timeout=10)
        raise AssertionError("parleyd started with --metrics-listen on its public port")
    assert p.returncode == 1, (out, err)
    assert b"address already in use" in err.lower(), err
