"""scripts/setup.sh installs by mode (`run`: compiler, make, pkg-config and
the -dev libraries, libpq and hiredis included; `test`: also Python, Node,
npm, Chromium, openssl, mdb_copy, the npm packages and the engines of the
cluster tests, redis-server and PostgreSQL's server), and `make run` builds
quietly and passes ARGS to parleyd.

setup.sh runs with a PATH of stand-ins: a fake apt-get and npm record what
they were asked to install, so nothing is installed for real."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from parley_client import REPO
from parley_client import build_dir, make

SETUP = REPO / "scripts/setup.sh"


def fake_tools(tmp_path, have, missing_pc=()):
    """A bin directory with the tools of `have` (stand-ins that exit 0), the
    shell utilities setup.sh uses, and recording apt-get, npm and id."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("bash", "sort"):
        os.symlink(shutil.which(tool), bindir / tool)

    def script(name, body):
        p = bindir / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        p.chmod(0o755)

    script("id", "echo 0")  # as root: no sudo needed
    script("apt-get", f'echo "apt-get $*" >>{log}')
    for tool in have:
        if tool == "pkg-config":
            real = shutil.which("pkg-config")
            checks = "".join(f'[ "$2" = "{m}" ] && exit 1\n' for m in missing_pc)
            script("pkg-config", f'{checks}exec {real} "$@"')
        elif tool == "npm":
            script("npm", f'echo "npm $*" >>{log}')
        else:
            script(tool, "exit 0")
    return bindir, log


def run_setup(tmp_path, bindir, *args, env=None):
    work = tmp_path / "work"  # no node_modules here
    work.mkdir(exist_ok=True)
    r = subprocess.run([str(SETUP), *args], cwd=work,
                       env={"PATH": str(bindir), "HOME": str(work), **(env or {})},
                       capture_output=True, text=True, timeout=120)
    return r


def calls(log):
    return log.read_text().splitlines() if log.exists() else []


def installed(log):
    pkgs = set()
    for line in calls(log):
        if line.startswith("apt-get ") and " install " in line:
            pkgs |= {w for w in line.split()[2:] if not w.startswith("-")}
    return pkgs


@pytest.fixture(autouse=True)
def _needs_pkg_config():
    if not shutil.which("pkg-config"):
        pytest.skip("pkg-config is not installed")


def test_run_mode_with_everything_built_needs_installs_nothing(tmp_path):
    bindir, log = fake_tools(tmp_path, have=["cc", "make", "pkg-config"])
    r = run_setup(tmp_path, bindir, "run")
    assert r.returncode == 0, r.stderr
    assert calls(log) == [] and r.stderr == "", (calls(log), r.stderr)


def test_run_mode_installs_only_the_compiler_and_libraries(tmp_path):
    bindir, log = fake_tools(tmp_path, have=["make", "pkg-config"], missing_pc=["libuv", "lmdb"])
    r = run_setup(tmp_path, bindir, "run")
    assert r.returncode == 0, r.stderr
    assert installed(log) == {"gcc", "libuv1-dev", "liblmdb-dev"}, calls(log)
    assert not any(c.startswith("npm") for c in calls(log))


def test_test_mode_also_installs_what_the_tests_need(tmp_path):
    bindir, log = fake_tools(tmp_path, have=["cc", "make", "pkg-config", "npm"])
    r = run_setup(tmp_path, bindir, "test")
    assert r.returncode == 0, r.stderr
    assert {"nodejs", "chromium", "openssl", "lmdb-utils"} <= installed(log), calls(log)
    assert not installed(log) & {"gcc", "make", "pkg-config", "libuv1-dev"}, calls(log)
    assert any(c.startswith("npm install") for c in calls(log)), calls(log)


def test_run_mode_installs_the_cluster_client_libraries(tmp_path):
    bindir, log = fake_tools(tmp_path, have=["cc", "make", "pkg-config"],
                             missing_pc=["libpq", "hiredis"])
    r = run_setup(tmp_path, bindir, "run")
    assert r.returncode == 0, r.stderr
    assert installed(log) == {"libpq-dev", "libhiredis-dev"}, calls(log)


def fake_pg_lib(tmp_path, with_initdb):
    """A stand-in for /usr/lib/postgresql (PARLEY_PG_LIB)."""
    lib = tmp_path / "pglib"
    (lib / "15" / "bin").mkdir(parents=True)
    if with_initdb:
        initdb = lib / "15" / "bin" / "initdb"
        initdb.write_text("#!/bin/sh\nexit 0\n")
        initdb.chmod(0o755)
    return {"PARLEY_PG_LIB": str(lib)}


def test_test_mode_installs_the_engines_of_the_cluster_tests(tmp_path):
    bindir, log = fake_tools(tmp_path, have=["cc", "make", "pkg-config", "npm"])
    r = run_setup(tmp_path, bindir, "test", env=fake_pg_lib(tmp_path, with_initdb=False))
    assert r.returncode == 0, r.stderr
    assert {"redis-server", "redis-tools", "postgresql", "postgresql-client"} <= installed(log), \
        calls(log)


def test_test_mode_with_the_engines_there_installs_none(tmp_path):
    bindir, log = fake_tools(tmp_path, have=["cc", "make", "pkg-config", "npm", "redis-server",
                                             "redis-cli", "psql"])
    r = run_setup(tmp_path, bindir, "test", env=fake_pg_lib(tmp_path, with_initdb=True))
    assert r.returncode == 0, r.stderr
    assert not installed(log) & {"redis-server", "redis-tools", "postgresql",
                                 "postgresql-client"}, calls(log)


def test_run_mode_needs_no_engine(tmp_path):
    bindir, log = fake_tools(tmp_path, have=["cc", "make", "pkg-config"])
    r = run_setup(tmp_path, bindir, "run", env=fake_pg_lib(tmp_path, with_initdb=False))
    assert r.returncode == 0, r.stderr
    assert calls(log) == [], calls(log)


def test_an_unknown_mode_is_a_usage_error(tmp_path):
    bindir, log = fake_tools(tmp_path, have=["cc", "make", "pkg-config"])
    r = run_setup(tmp_path, bindir, "deploy")
    assert r.returncode == 2 and "usage" in r.stderr
    assert calls(log) == []


def test_make_targets_pick_their_setup_mode():
    def setup_lines(target):
        out = make("-n", target).stdout
        return [l for l in out.splitlines() if "scripts/setup.sh" in l]

    assert setup_lines("run") == ["scripts/setup.sh run"]
    assert setup_lines("install") == ["scripts/setup.sh run"]
    assert setup_lines("test") == ["scripts/setup.sh test"]


def copy_build(dst):
    """A build directory like the one under test, without parleyd: make
    relinks it (one compiler command line) and compiles nothing else."""
    src = build_dir()
    dst.mkdir()
    shutil.copytree(src / "obj", dst / "obj", symlinks=True)
    for f in ("libparley_core.a", "libparley.a", "parley"):
        shutil.copy2(src / f, dst / f)


def test_make_run_builds_quietly_and_passes_args(tmp_path):
    b = tmp_path / "b"
    copy_build(b)
    r = make("run", f"B={b}", "ARGS=--version")
    out = r.stdout + r.stderr
    assert r.stdout.strip().endswith("parleyd 0.1.0"), out
    assert (b / "parleyd").exists()
    assert f"-o {b}/parleyd" not in out and " -c " not in out, out

    (b / "parleyd").unlink()
    r = make("run", f"B={b}", "ARGS=--version", "V=1")
    assert f"-o {b}/parleyd" in r.stdout, r.stdout
    assert r.stdout.strip().endswith("parleyd 0.1.0")


def test_make_run_args_reach_parleyd(tmp_path):
    """A bad flag in ARGS is parleyd's usage error, not make's."""
    b = tmp_path / "b"
    copy_build(b)
    shutil.copy2(build_dir() / "parleyd", b / "parleyd")
    r = make("run", f"B={b}", "ARGS=--port 9090 --no-such-flag", check=False)
    assert r.returncode != 0
    assert "parleyd: unknown flag '--no-such-flag'" in r.stderr, r.stderr
