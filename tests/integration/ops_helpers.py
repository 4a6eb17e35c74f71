"""Helpers for the operator tests (test_install.py, test_setup.py,
test_backup.py): running the repository's Makefile from a test."""

import os
import subprocess
from pathlib import Path

from conftest import PARLEYD, REPO

MAKE_TIMEOUT = 600  # s: `make install` may have to build (slowly, under ASan)


def make_env(extra=None):
    """The environment for a nested make.

    Under `make test` the variables given to the outer make (for example
    SANITIZE=address,undefined) arrive in MAKEFLAGS after ` -- `; keep them,
    so that the nested make uses the same build directory as the binaries
    under test, and drop the rest (the jobserver's descriptors are not
    inherited by the test)."""
    env = dict(os.environ)
    mf = env.get("MAKEFLAGS", "")
    env["MAKEFLAGS"] = mf.split(" -- ", 1)[1] if " -- " in mf else ""
    env.pop("MAKELEVEL", None)
    env.pop("MFLAGS", None)
    env.update(extra or {})
    return env


def make(*args, extra_env=None, timeout=MAKE_TIMEOUT, check=True):
    """Runs `make --no-print-directory ARGS...` in the repository."""
    r = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, env=make_env(extra_env),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"make {' '.join(args)} failed ({r.returncode}):\n" \
                                  f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def build_dir():
    """The build directory of the binaries under test (build or build/san)."""
    return Path(PARLEYD).resolve().parent


def is_sanitized(binary):
    """True if the binary carries a sanitizer runtime (its own system calls)."""
    with open(binary, "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"__ubsan_handle" in data


def help_flags(binary):
    """The long flags `binary --help` lists (without the leading --)."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30).stdout
    flags = []
    for line in out.splitlines():
        s = line.strip()
        if not s.startswith("--"):
            continue
        for word in s.split():
            w = word.rstrip(",")
            if w.startswith("--") and len(w) > 2:
                name = w[2:]
                if name not in flags:
                    flags.append(name)
            elif not w.startswith("--"):
                break
    return flags, out
