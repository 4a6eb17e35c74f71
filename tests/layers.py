#!/usr/bin/env python3
"""Checks that imports run one way (docs/architecture.md, "Layers").

Reads every `#include "..."` of the C sources and fails when one points up a
layer (or sideways where that is not allowed), or when modules (a .c with
its .h) include each other in a circle. Run by `make test`:

    tests/layers.py            check the tree this file is in
    tests/layers.py --root D   check the tree at D
    tests/layers.py --self-test  plant an upward include and a cycle in a
                                 copy of the tree and see each refused

The layers, lowest first, and what each may include besides itself:
    src/base     -
    src/codec    base
    src/net      base codec
    src/store    base codec
    src/chat     base codec net store
    src/main.c   every src layer
    include/     nothing (the public header stands alone)
    lib/         base codec include     (libparley: no server code)
    cli/         base codec include cli (links libparley only)
    bench/       base codec lib include bench
    tests/       anything
"""
import os
import re
import shutil
import sys
import tempfile

ALLOWED = {
    "base": {"base"},
    "codec": {"base", "codec"},
    "net": {"base", "codec", "net"},
    "store": {"base", "codec", "store"},
    "chat": {"base", "codec", "net", "store", "chat"},
    "main": {"base", "codec", "net", "store", "chat", "main"},
    "include": {"include"},
    "lib": {"base", "codec", "include", "lib"},
    "cli": {"base", "codec", "include", "cli"},
    "bench": {"base", "codec", "lib", "include", "bench"},
}
INCLUDE_DIRS = ["src", "lib", "include"]  # the compiler's -I, in order
EXTRA_DIRS = {"bench": ["bench"]}  # bench/ builds with -Ibench first
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(rel):
    parts = rel.split("/")
    if parts[0] == "src":
        if len(parts) == 2:
            return "main"
        return parts[1] if parts[1] in ALLOWED else None
    if parts[0] == "bench" and len(parts) > 1 and parts[1] == "tests":
        return None  # the load generator's own unit tests
    if parts[0] in ("include", "lib", "cli", "bench"):
        return parts[0]
    return None  # tests, tools: not checked


def sources(root):
    for top in ("src", "include", "lib", "cli", "bench"):
        for d, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if f.endswith((".c", ".h")):
                    yield os.path.relpath(os.path.join(d, f), root)


def resolve(root, rel, name):
    """The file an include names, as the compiler finds it, or None."""
    here = os.path.join(os.path.dirname(rel), name)
    dirs = EXTRA_DIRS.get(rel.split("/")[0], []) + INCLUDE_DIRS
    candidates = [here] + [os.path.join(d, name) for d in dirs]
    for c in candidates:
        c = os.path.normpath(c)
        if os.path.isfile(os.path.join(root, c)):
            return c
    return None


def module(rel):
    return os.path.splitext(rel)[0]


def check(root):
    errors = []
    graph = {}
    for rel in sources(root):
        layer = layer_of(rel)
        if layer is None:
            continue
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        for m in INCLUDE_RE.finditer(text):
            name = m.group(1)
            line = text.count("\n", 0, m.start()) + 1
            target = resolve(root, rel, name)
            if target is None:
                errors.append(f"{rel}:{line}: #include \"{name}\" names no file of the tree")
                continue
            tlayer = layer_of(target)
            if tlayer is None or tlayer not in ALLOWED[layer]:
                errors.append(f"{rel}:{line}: #include \"{name}\": layer '{layer}' may not "
                              f"include '{tlayer}' ({target})")
            a, b = module(rel), module(target)
            if a != b:
                graph.setdefault(a, set()).add(b)
    errors += cycles(graph)
    return errors


def cycles(graph):
    """Every circle of modules, each named once."""
    found, seen_sets = [], set()
    state = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                loop = stack[stack.index(m):] + [m]
                key = frozenset(loop)
                if key not in seen_sets:
                    seen_sets.add(key)
                    found.append("circle: " + " -> ".join(loop))
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def self_test(root):
    """A planted upward include and a planted cycle must both be refused."""
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for top in ("src", "include", "lib", "cli", "bench"):
            if os.path.isdir(os.path.join(root, top)):
                shutil.copytree(os.path.join(root, top), os.path.join(tmp, top))
        if check(tmp):
            print("layers self-test: the copy of the tree is not clean to begin with")
            return False
        plants = [
            ("src/codec/json.c", '#include "chat/chat.h"\n', "may not include 'chat'"),
            ("src/net/wheel.h", '#include "net/conn.h"\n', "circle:"),
            ("include/parley.h", '#include "base/err.h"\n', "may not include 'base'"),
        ]
        for path, line, expect in plants:
            p = os.path.join(tmp, path)
            with open(p, encoding="utf-8") as fh:
                orig = fh.read()
            with open(p, "w", encoding="utf-8") as fh:
                fh.write(line + orig)
            errs = check(tmp)
            with open(p, "w", encoding="utf-8") as fh:
                fh.write(orig)
            if not any(expect in e for e in errs):
                print(f"layers self-test: planting {line.strip()} in {path} was not refused")
                ok = False
    return ok


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if "--root" in argv:
        root = argv[argv.index("--root") + 1]
    if "--self-test" in argv:
        if not self_test(root):
            return 1
        print("layers self-test: planted upward includes and a cycle are refused")
        return 0
    errors = check(root)
    for e in errors:
        print("layers:", e)
    if errors:
        print(f"layers: {len(errors)} problem(s); see docs/architecture.md, Layers")
        return 1
    n = sum(1 for _ in sources(root))
    print(f"layers: {n} files, imports run one way, no circles")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
