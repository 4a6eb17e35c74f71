"""`make install`: the file list, the paths rewritten for PREFIX, the
configuration kept across installs, the man pages (rendered without
warnings, covering every flag), and the systemd unit (hardened, accepted by
systemd-analyze, and its system call filter covering what parleyd calls).

Tools that are not part of the build (man, groff, systemd-analyze, strace)
are optional: a test that needs a missing one is skipped."""

import asyncio
import json
import os
import re
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import websockets

from parley_client import HOST, PARLEY_WEB, PARLEYD, REPO, START_TIMEOUT
from parley_client import build_dir, help_flags, is_sanitized, make

WEB_FILES = sorted(str(p.relative_to(REPO / "web")) for p in (REPO / "web").rglob("*")
                   if p.is_file())


def installed_files(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")
                  if p.is_file() or p.is_symlink())


@pytest.fixture(scope="module")
def usr(tmp_path_factory):
    """`make install DESTDIR=<tmp> PREFIX=/usr`, once for the module."""
    dest = tmp_path_factory.mktemp("destdir")
    make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    return dest


def unit_settings(path):
    """[Service] etc. of a unit file as {key: [values...]}."""
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        k, _, v = line.partition("=")
        out.setdefault(k.strip(), []).append(v.strip())
    return out


# ---- the files ------------------------------------------------------------


def test_install_puts_every_file_in_place(usr):
    expected = sorted([
        "etc/parley/parleyd.conf",
        "usr/bin/parley",
        "usr/bin/parleyd",
        "usr/include/parley.h",
        "usr/lib/libparley.a",
        "usr/lib/systemd/system/parleyd.service",
        "usr/lib/sysusers.d/parley.conf",
        "usr/share/doc/parley/LICENSE",
        "usr/share/doc/parley/README.md",
        "usr/share/doc/parley/parleyd.conf.example",
        "usr/share/man/man1/parley.1",
        "usr/share/man/man8/parleyd.8",
    ] + [f"usr/share/parley/web/{f}" for f in WEB_FILES])
    assert installed_files(usr) == expected
    for f in expected:
        mode = (usr / f).stat().st_mode & 0o777
        assert mode == (0o755 if f.startswith("usr/bin/") else 0o644), (f, oct(mode))
    for f in WEB_FILES:
        assert (usr / "usr/share/parley/web" / f).read_bytes() == (REPO / "web" / f).read_bytes()
    assert (usr / "usr/include/parley.h").read_bytes() == (REPO / "include/parley.h").read_bytes()
    for b in ("parleyd", "parley"):
        r = subprocess.run([str(usr / "usr/bin" / b), "--version"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.startswith(b + " "), (b, r.stdout, r.stderr)


def test_install_rewrites_paths_for_the_prefix(usr):
    unit = (usr / "usr/lib/systemd/system/parleyd.service").read_text()
    conf = (usr / "etc/parley/parleyd.conf").read_text()
    assert "ExecStart=/usr/bin/parleyd --config /etc/parley/parleyd.conf\n" in unit
    assert re.search(r"^web-dir = /usr/share/parley/web$", conf, re.M), conf
    assert re.search(r"^data-dir = /var/lib/parley$", conf, re.M), conf
    assert conf == (usr / "usr/share/doc/parley/parleyd.conf.example").read_text()
    for f in ("usr/lib/systemd/system/parleyd.service", "etc/parley/parleyd.conf",
              "usr/share/man/man8/parleyd.8", "usr/share/man/man1/parley.1",
              "usr/lib/sysusers.d/parley.conf"):
        assert "/usr/local" not in (usr / f).read_text(), f
    man8 = (usr / "usr/share/man/man8/parleyd.8").read_text()
    assert "/etc/parley/parleyd.conf" in man8 and "/usr/lib/systemd/system/parleyd.service" in man8


def test_default_prefix_and_an_edited_config_survives_reinstall(tmp_path):
    dest = tmp_path / "dest"
    make("install", f"DESTDIR={dest}")
    local = dest / "usr/local"
    for f in ("bin/parleyd", "bin/parley", "lib/libparley.a", "include/parley.h",
              "share/parley/web/index.html", "share/man/man8/parleyd.8",
              "share/man/man1/parley.1", "lib/systemd/system/parleyd.service",
              "etc/parley/parleyd.conf"):
        assert (local / f).is_file(), f
    assert not (dest / "etc").exists()
    unit = (local / "lib/systemd/system/parleyd.service").read_text()
    assert "ExecStart=/usr/local/bin/parleyd --config /usr/local/etc/parley/parleyd.conf\n" in unit
    conf = local / "etc/parley/parleyd.conf"
    conf.write_text("port = 9999\n")
    r = make("install", f"DESTDIR={dest}")
    assert conf.read_text() == "port = 9999\n"
    assert "keeping" in r.stdout
    assert (local / "share/doc/parley/parleyd.conf.example").read_text() == \
        (REPO / "dist/parleyd.conf").read_text()


def test_the_example_config_lists_every_flag_with_its_default():
    flags, helptext = help_flags(PARLEYD)
    assert "port" in flags and "max-user-convs" in flags, helptext
    conf = (REPO / "dist/parleyd.conf").read_text()
    keys = set()
    for line in conf.splitlines():
        m = re.match(r"^#?([a-z][a-z0-9-]*) = (\S.*)$", line)
        if m:
            keys.add(m.group(1))
        else:
            assert line == "" or line.startswith("#"), f"not a comment nor key = value: {line!r}"
    missing = [f for f in flags if f not in keys and f not in ("help", "version", "config")]
    assert not missing, f"dist/parleyd.conf lacks {missing}"
    unknown = sorted(keys - set(flags))
    assert not unknown, f"dist/parleyd.conf names flags parleyd does not know: {unknown}"
    # The defaults written there are the ones --help states.
    for name in ("port", "max-message", "max-queue", "shutdown-timeout", "rate-msgs",
                 "max-user-convs", "token-ttl", "apply-delay", "commit-window", "commit-delay"):
        joined = re.sub(r"\n {20,}", " ", helptext)  # help wraps a flag's text
        m = re.search(r"--%s \S+ .*\(default (\d+)" % re.escape(name), joined)
        assert m, name
        assert f"#{name} = {m.group(1)}\n" in conf, name


# ---- man pages --------------------------------------------------------------


def render(page):
    """Renders a man page; returns (text, warnings). Skips without man/groff."""
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80", MAN_KEEP_FORMATTING="")
    if shutil.which("man"):
        argv = ["man", "--warnings", "-E", "UTF-8", "-l", str(page)]
    elif shutil.which("groff"):
        argv = ["groff", "-man", "-ww", "-Tutf8", str(page)]
    else:
        pytest.skip("neither man nor groff is installed")
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, (argv, r.stderr)
    return re.sub(r".\x08", "", r.stdout), r.stderr


@pytest.mark.parametrize("page", ["usr/share/man/man8/parleyd.8", "usr/share/man/man1/parley.1"])
def test_man_pages_render_without_warnings(usr, page):
    text, warnings = render(usr / page)
    assert warnings == "", warnings
    for section in ("NAME", "SYNOPSIS", "OPTIONS", "EXIT STATUS", "FILES", "SEE ALSO"):
        assert re.search(rf"^{section}$", text, re.M), (page, section)
    if page.endswith("parleyd.8"):
        assert re.search(r"^SIGNALS$", text, re.M)


def test_a_broken_page_is_reported(tmp_path):
    """The warning check above can fail: a page with an unknown macro warns."""
    bad = tmp_path / "bad.1"
    bad.write_text(".TH BAD 1\n.SH NAME\nbad \\- page\n.NOSUCHMACRO\n")
    _, warnings = render(bad)
    assert "NOSUCHMACRO" in warnings


def test_man_pages_document_every_flag_and_exit_status():
    page = (REPO / "docs/man/parleyd.8").read_text().replace("\\-", "-")
    flags, _ = help_flags(PARLEYD)
    missing = [f for f in flags if f"--{f}" not in page]
    assert not missing, f"parleyd.8 lacks {missing}"
    version = subprocess.run([PARLEYD, "--version"], capture_output=True, text=True,
                             timeout=30).stdout.split()[-1]
    assert f'"parley {version}"' in page.splitlines()[1], "parleyd.8 .TH names another version"
    for code in ("0", "1", "2"):
        assert re.search(rf"^\.B {code}$", page, re.M), f"exit status {code}"

    cli = os.environ.get("PARLEY_CLI", str(build_dir() / "parley"))
    page1 = (REPO / "docs/man/parley.1").read_text().replace("\\-", "-")
    flags1, helptext = help_flags(cli)
    assert "server" in flags1 and "json" in flags1, helptext
    missing = [f for f in flags1 if f"--{f}" not in page1]
    assert not missing, f"parley.1 lacks {missing}"
    for cmd in re.findall(r"^  ([a-z]+(?: (?:create|add|remove))?) ", helptext.split("commands:")[1]
                          .split("\n\n")[0], re.M):
        assert re.search(rf"^\.B[IR]? \"?{cmd}\b", page1, re.M), f"parley.1 lacks the command {cmd}"
    for code in re.findall(r"^  (\d)  ", helptext, re.M):
        assert re.search(rf"^\.B {code}$", page1, re.M), f"parley.1 lacks exit status {code}"
    assert f'"parley {version}"' in page1.splitlines()[1]


# ---- the systemd unit -------------------------------------------------------


def test_unit_is_hardened():
    u = unit_settings(REPO / "dist/parleyd.service")
    want = {
        "User": "parley", "Group": "parley", "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/parley", "StateDirectory": "parley",
        "NoNewPrivileges": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
        "AmbientCapabilities": "", "ProtectHome": "yes", "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "Restart": "on-failure", "KillSignal": "SIGTERM", "MemoryDenyWriteExecute": "yes",
    }
    for k, v in want.items():
        assert u.get(k) == [v], (k, u.get(k))
    assert "@system-service" in u["SystemCallFilter"]
    assert int(u["LimitNOFILE"][0]) >= 65536
    # systemd's stop timeout must leave parleyd its whole graceful stop.
    _, helptext = help_flags(PARLEYD)
    shutdown_ms = int(re.search(r"--shutdown-timeout MS .*\(default (\d+)\)", helptext).group(1))
    stop = u["TimeoutStopSec"][0]
    assert stop.endswith("s") and int(stop[:-1]) * 1000 > shutdown_ms, stop
    assert u["ExecStart"] == ["/usr/local/bin/parleyd --config /usr/local/etc/parley/parleyd.conf"]


def verifiable_unit(usr, tmp_path):
    """The installed unit with ExecStart pointing into DESTDIR (systemd checks
    that the binary exists), and MANPATH for its Documentation= page."""
    src = (usr / "usr/lib/systemd/system/parleyd.service").read_text()
    unit = tmp_path / "parleyd.service"
    unit.write_text(src.replace("ExecStart=/usr/bin/parleyd", f"ExecStart={usr}/usr/bin/parleyd"))
    env = dict(os.environ, MANPATH=str(usr / "usr/share/man"), SYSTEMD_LOG_COLOR="0")
    return unit, env


def test_systemd_analyze_verify_accepts_the_unit(usr, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    unit, env = verifiable_unit(usr, tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       env=env, timeout=120)
    ours = [l for l in (r.stdout + r.stderr).splitlines() if "parleyd" in l]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr


def test_systemd_analyze_verify_catches_a_broken_unit(usr, tmp_path):
    """The check above can fail: an unknown setting is reported."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    unit, env = verifiable_unit(usr, tmp_path)
    unit.write_text(unit.read_text().replace("[Service]\n", "[Service]\nProtectEverything=yes\n"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert "ProtectEverything" in r.stdout + r.stderr


def test_systemd_analyze_security_rates_the_unit_ok(usr, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    unit, env = verifiable_unit(usr, tmp_path)
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, env=env, timeout=120)
    m = re.search(r"Overall exposure level for parleyd\.service: ([0-9.]+)", r.stdout + r.stderr)
    if r.returncode != 0 and not m:
        pytest.skip(f"systemd-analyze security --offline is not supported here: {r.stderr[-300:]}")
    assert m, r.stdout[-2000:]
    assert float(m.group(1)) <= 2.0, r.stdout


def syscall_groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                         timeout=60).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if not line.startswith(" "):
            cur = s
            groups[cur] = set()
        elif cur:
            groups[cur].add(s)
    return groups


def expand(groups, names, seen=None):
    seen = set() if seen is None else seen
    out = set()
    for n in names:
        if n.startswith("@"):
            if n not in seen:
                seen.add(n)
                out |= expand(groups, groups.get(n, ()), seen)
        else:
            out.add(n)
    return out


def unit_allowed_syscalls(unit):
    groups = syscall_groups()
    allow, deny = set(), set()
    for v in unit_settings(unit)["SystemCallFilter"]:
        if v.startswith("~"):
            deny |= expand(groups, v[1:].split())
        else:
            allow |= expand(groups, v.split())
    return allow - deny


# libuv probes io_uring where it may use it and falls back when the call
# fails; the unit answers filtered calls with EPERM (SystemCallErrorNumber).
PROBED = {"io_uring_setup", "io_uring_enter", "io_uring_register"}


def test_system_call_filter_covers_what_parleyd_calls(tmp_path):
    """Runs parleyd under strace through a session (register, login,
    WebSocket send and delivery, static files, metrics, graceful stop) and
    checks every system call is one the unit's SystemCallFilter allows: a
    filtered call would kill the service."""
    if not shutil.which("systemd-analyze") or not shutil.which("strace"):
        pytest.skip("needs systemd-analyze and strace")
    if is_sanitized(PARLEYD):
        pytest.skip("the sanitizer runtime makes system calls of its own")
    allowed = unit_allowed_syscalls(REPO / "dist/parleyd.service")
    assert "epoll_wait" in allowed and "fdatasync" in allowed
    probe = subprocess.run(["strace", "-f", "-qq", "-o", os.devnull, "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.strip()[-200:]}")

    trace = tmp_path / "trace"
    log = open(tmp_path / "parleyd.log", "wb")
    proc = subprocess.Popen(
        ["strace", "-f", "-qq", "-o", str(trace), PARLEYD, "--port", "0", "--listen", HOST,
         "--data-dir", str(tmp_path / "data"), "--web-dir", PARLEY_WEB, "--threads", "2",
         "--insecure-fast-kdf", "--rate-logins", "0", "--rate-handshakes", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
    log.close()
    try:
        port = None
        deadline = time.monotonic() + START_TIMEOUT * 3
        buf = b""
        while time.monotonic() < deadline and b"\n" not in buf:
            r, _, _ = select.select([proc.stdout], [], [], 1.0)
            if r:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
        m = re.search(rb":(\d+)\n", buf)
        assert m, buf
        port = int(m.group(1))
        base = f"http://{HOST}:{port}"
        toks = {}
        for name in ("alice", "bob"):
            r = requests.post(base + "/v1/users", json={"username": name, "password": "pw-" + name * 2},
                              timeout=60)
            assert r.status_code == 201, r.text
            toks[name] = r.json()["token"]
        r = requests.post(base + "/v1/sessions", json={"username": "alice", "password": "pw-alicealice"},
                          timeout=60)
        assert r.status_code == 200, r.text
        r = requests.post(base + "/v1/conversations", json={"type": "direct", "with": "bob"},
                          headers={"Authorization": "Bearer " + toks["alice"]}, timeout=30)
        assert r.status_code in (200, 201), r.text
        conv = r.json()["id"]

        async def session():
            url = f"ws://{HOST}:{port}/v1/ws?token="
            a = await websockets.connect(url + toks["alice"], subprotocols=["parley.v1.json"])
            b = await websockets.connect(url + toks["bob"], subprotocols=["parley.v1.json"])
            try:
                for ws in (a, b):
                    assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "hello"
                await a.send(json.dumps({"type": "send", "conv": conv, "cmid": "c1", "body": "hi"}))
                got = set()
                while got != {"ack", "msg"}:
                    for ws, want in ((a, "ack"), (b, "msg")):
                        if want in got:
                            continue
                        f = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        if f["type"] == want:
                            got.add(want)
            finally:
                await a.close()
                await b.close()

        asyncio.run(asyncio.wait_for(session(), 120))
        assert requests.get(base + "/", timeout=30).status_code == 200
        assert requests.get(base + "/metrics", timeout=30).status_code == 200
        assert requests.get(base + "/healthz", timeout=30).status_code == 200
    finally:
        # Stop parleyd itself (the first process in the trace), gracefully.
        first = trace.read_text(errors="replace").split(None, 1) if trace.exists() else []
        pid = int(first[0]) if first and first[0].isdigit() else None
        if proc.poll() is None and pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == 0, (tmp_path / "parleyd.log").read_text()[-2000:]
    used = set()
    for line in trace.read_text(errors="replace").splitlines():
        m = re.match(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]", line)
        if m and m.group(1) not in ("exited", "killed", "resumed"):
            used.add(m.group(1))
    assert {"epoll_wait", "accept4", "fdatasync"} <= used, sorted(used)
    outside = sorted(used - allowed - PROBED)
    assert not outside, f"parleyd calls {outside}, which SystemCallFilter in " \
                        f"dist/parleyd.service does not allow"
