#!/usr/bin/env python3
"""make test-lib: libparley as an application sees it.

1. include/parley.h includes only standard C headers and declares only
   parley_* / PARLEY_* names (types, tags, enumerators, functions, macros).
2. tests/lib/public_header.c, which includes <parley.h> and no other header
   of parley, compiles as C11 (and as C++11 when a C++ compiler is there)
   with -Wall -Wextra -Wpedantic -Werror and the flags of build/parley.pc,
   links against build/libparley.a and against build/libparley.so, and runs.
3. The archive holds no server object: no member named like, no symbol
   defined by, and no reference to a symbol of src/net, src/store or
   src/chat (the server objects are given on the command line), and no
   definition with such a module's prefix (conn_, hub_, store_, ...; srv_).
4. libparley.so has the soname libparley.so.0 and exports exactly the
   functions parley.h declares; none of its symbols, hidden ones included,
   is a server symbol.

Environment: CC, CXX (optional), SAN_FLAGS (sanitizer builds), CLIENT_LIBS
(what a static link of libparley needs). Exit status 1 on any failure.
"""
import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = os.path.join(ROOT, "include", "parley.h")
PROGRAM = os.path.join(ROOT, "tests", "lib", "public_header.c")

STD_HEADERS = {
    "assert.h", "complex.h", "ctype.h", "errno.h", "fenv.h", "float.h", "inttypes.h",
    "iso646.h", "limits.h", "locale.h", "math.h", "setjmp.h", "signal.h", "stdalign.h",
    "stdarg.h", "stdatomic.h", "stdbool.h", "stddef.h", "stdint.h", "stdio.h", "stdlib.h",
    "stdnoreturn.h", "string.h", "tgmath.h", "threads.h", "time.h", "uchar.h", "wchar.h",
    "wctype.h",
}

KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch",
    "typedef", "union", "unsigned", "void", "volatile", "while", "_Alignas", "_Alignof",
    "_Atomic", "_Bool", "_Complex", "_Generic", "_Imaginary", "_Noreturn",
    "_Static_assert", "_Thread_local", "__restrict", "__inline", "__extension__",
}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, file=sys.stderr)


def public(name):
    return name.startswith("parley_") or name.startswith("PARLEY_")


def run(cmd, env=None, check=True):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=env)
    if check and p.returncode != 0:
        fail("%s exited %d:\n%s" % (" ".join(shlex.quote(c) for c in cmd), p.returncode,
                                    p.stdout))
    return p


# ---- 1. the header's names -------------------------------------------------------------

TOKEN = re.compile(r'[A-Za-z_]\w*|\d[\w.]*|"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|\.\.\.|\S')


def ident(t):
    return re.match(r"[A-Za-z_]\w*$", t) is not None and t not in KEYWORDS


def header_tokens(cc):
    """Tokens of parley.h itself after preprocessing (as C), without the
    headers it includes."""
    p = subprocess.run(cc + ["-E", "-I", os.path.dirname(HEADER), "-x", "c", "-"],
                       input="#include <parley.h>\n", stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        fail("preprocessing parley.h failed:\n" + p.stderr)
        return []
    toks, mine = [], False
    for line in p.stdout.splitlines():
        m = re.match(r'#\s*(?:line\s+)?\d+\s+"([^"]*)"', line)
        if m:
            mine = os.path.realpath(m.group(1)) == os.path.realpath(HEADER)
            continue
        if mine:
            toks.extend(TOKEN.findall(line))
    return toks


def drop_attributes(toks):
    out, i = [], 0
    while i < len(toks):
        if toks[i] in ("__attribute__", "__attribute", "__asm__", "__asm") and \
                i + 1 < len(toks) and toks[i + 1] == "(":
            depth, i = 0, i + 1
            while i < len(toks):
                depth += toks[i] == "("
                depth -= toks[i] == ")"
                i += 1
                if depth == 0:
                    break
            continue
        out.append(toks[i])
        i += 1
    return out


def declared_names(toks):
    """(every name the tokens declare at file scope, the function names)."""
    toks = drop_attributes(toks)
    names, funcs = set(), set()
    for k, t in enumerate(toks[:-1]):          # tags are file scope wherever declared
        if t in ("struct", "union", "enum") and ident(toks[k + 1]):
            names.add(toks[k + 1])
    k = 0
    while k < len(toks):                       # enumerators
        if toks[k] == "enum":
            j = k + 1 + (k + 1 < len(toks) and ident(toks[k + 1]))
            if j < len(toks) and toks[j] == "{":
                depth, expect, j = 0, True, j + 1
                while j < len(toks) and not (toks[j] == "}" and depth == 0):
                    t = toks[j]
                    if t in "([{":
                        depth += 1
                    elif t in ")]}":
                        depth -= 1
                    elif depth == 0 and t == ",":
                        expect = True
                    elif depth == 0 and expect and ident(t):
                        names.add(t)
                        expect = False
                    j += 1
                k = j
        k += 1
    brace = paren = 0                          # declarators at file scope
    last = None
    for k, t in enumerate(toks):
        nxt = toks[k + 1] if k + 1 < len(toks) else ""
        if t == "{":
            brace += 1
        elif t == "}":
            brace -= 1
        elif brace:
            continue
        elif t == "(":
            paren += 1
        elif t == ")":
            paren -= 1
        elif paren == 0 and ident(t):
            last = t
            if nxt == "(":
                names.add(t)
                funcs.add(t)
        elif paren == 1 and ident(t) and toks[k - 2:k] == ["(", "*"] and \
                toks[k + 1:k + 3] == [")", "("]:
            names.add(t)                       # typedef void (*name)(...)
        elif paren == 0 and t in (";", ",", "=", "["):
            if last:
                names.add(last)
            last = None
        if t == ";" and paren == 0:
            last = None
    return names, funcs


def check_header(cc):
    text = open(HEADER).read()
    for inc in re.findall(r'^\s*#\s*include\s*([<"][^>"]+[>"])', text, re.M):
        if inc[0] != "<" or inc[1:-1] not in STD_HEADERS:
            fail("parley.h includes %s: only standard C headers are allowed" % inc)
    for macro in re.findall(r"^\s*#\s*define\s+(\w+)", text, re.M):
        if not public(macro) and macro != "PARLEY_H":
            fail("parley.h defines the macro %s (not PARLEY_*)" % macro)
    names, funcs = declared_names(header_tokens(cc))
    for want in ("parley_client", "parley_new", "parley_strerror", "PARLEY_EAUTH",
                 "parley_errcode", "parley_options", "PARLEY_CONNECTED"):
        if want not in names:
            fail("the header scan did not find %s (scanner broken?)" % want)
    for n in sorted(names):
        if not public(n):
            fail("parley.h declares %s (not parley_* / PARLEY_*)" % n)
    return funcs


# ---- 2. build and run the program ------------------------------------------------------

def pkg_config(build, *args):
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.abspath(build))
    p = subprocess.run(["pkg-config"] + list(args) + ["parley"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, env=env)
    if p.returncode != 0:
        fail("pkg-config %s parley: %s" % (" ".join(args), p.stderr.strip()))
        return []
    return shlex.split(p.stdout)


def build_and_run(build, lang, compiler, san, client_libs, pc_cflags, pc_libs):
    out = os.path.join(build, "tests", "lib")
    os.makedirs(out, exist_ok=True)
    std = ["-std=c11"] if lang == "c" else ["-x", "c++", "-std=c++11"]
    obj = os.path.join(out, "public_header_%s.o" % lang)
    flags = std + ["-Wall", "-Wextra", "-Wpedantic", "-Werror"] + pc_cflags + san
    if run(compiler + flags + ["-c", PROGRAM, "-o", obj]).returncode != 0:
        return
    for kind in ("static", "shared"):
        exe = os.path.join(out, "public_header_%s_%s" % (lang, kind))
        if kind == "static":
            link = [obj, os.path.join(build, "libparley.a")] + client_libs
        else:
            link = [obj] + pc_libs + ["-Wl,-rpath," + os.path.abspath(build)]
        if run(compiler + san + link + ["-o", exe]).returncode != 0:
            continue
        needed = re.findall(r"\(NEEDED\).*\[(.*)\]", run(["readelf", "-d", exe]).stdout)
        if kind == "shared" and "libparley.so.0" not in needed:
            fail("%s does not load libparley.so.0 (NEEDED: %s)" % (exe, ", ".join(needed)))
        if kind == "static" and any(n.startswith("libparley") for n in needed):
            fail("%s loads %s: it was to link the archive" % (exe, needed))
        p = run([exe], check=False)
        if p.returncode != 0:
            fail("%s exited %d:\n%s" % (exe, p.returncode, p.stdout))
        else:
            print("  %s (%s, %s): %s" % (lang, kind, os.path.basename(exe), p.stdout.strip()))


# ---- 3 and 4. what the libraries hold --------------------------------------------------

def nm(args, path):
    """[(member or None, type letter, name)] from nm output."""
    rows = []
    for line in run(["nm"] + args + [path]).stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or line.endswith(":"):
            continue
        where = None
        if "-A" in args:                       # archive:member:[address]
            fields = parts[0].split(":")
            where = fields[1] if len(fields) > 2 else fields[0]
        rows.append((where, parts[-2], parts[-1]))
    return rows


def check_archive(build, server_objs):
    archive = os.path.join(build, "libparley.a")
    server_syms = set()
    for o in server_objs:
        server_syms |= {n for _, _, n in nm(["-g", "--defined-only"], o)}
    modules = {os.path.splitext(os.path.basename(o))[0] for o in server_objs}
    prefixes = tuple(sorted(m + "_" for m in modules)) + ("srv_",)
    if not server_syms:
        fail("no server symbols found in %s: the check would prove nothing" % server_objs)
    members = run(["ar", "t", archive]).stdout.split()
    for m in members:
        if os.path.splitext(m)[0] in modules:
            fail("libparley.a holds %s, a server object" % m)
    for where, kind, name in nm(["-A", "-g"], archive):
        if kind == "U":
            if name in server_syms:
                fail("libparley.a (%s) calls %s of the server" % (where, name))
        elif name in server_syms or name.startswith(prefixes):
            fail("libparley.a (%s) defines %s, a server symbol" % (where, name))
    print("  libparley.a: %d members, none of %d server objects" % (len(members),
                                                                   len(server_objs)))
    return server_syms, prefixes


def check_shared(build, funcs, server_syms, prefixes):
    so = os.path.join(build, "libparley.so")
    soname = re.findall(r"\(SONAME\).*\[(.*)\]", run(["readelf", "-d", so]).stdout)
    if soname != ["libparley.so.0"]:
        fail("libparley.so has the soname %s, want libparley.so.0" % soname)
    exported = {n for _, _, n in nm(["-D", "--defined-only"], so)}
    for n in sorted(exported - funcs):
        fail("libparley.so exports %s, which parley.h does not declare" % n)
    for n in sorted(funcs - exported):
        fail("libparley.so does not export %s (declared in parley.h)" % n)
    for _, _, n in nm(["--defined-only"], so):  # hidden ones too (local once linked)
        if n in server_syms:
            fail("libparley.so holds %s, a server symbol" % n)
    print("  libparley.so: soname %s, exports %d functions, all parley_*" % (
        ",".join(soname), len(exported)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("server_objs", nargs="+", help="object files of src/net, store, chat")
    a = ap.parse_args()
    cc = shlex.split(os.environ.get("CC") or "cc")
    cxx = shlex.split(os.environ.get("CXX") or "c++")
    san = shlex.split(os.environ.get("SAN_FLAGS", ""))
    client_libs = shlex.split(os.environ.get("CLIENT_LIBS", "-luv -lcrypto -lpthread -lm"))

    print("test-lib:")
    funcs = check_header(cc)
    pc_cflags = pkg_config(a.build, "--cflags")
    pc_libs = pkg_config(a.build, "--libs")
    build_and_run(a.build, "c", cc, san, client_libs, pc_cflags, pc_libs)
    if shutil.which(cxx[0]):
        build_and_run(a.build, "c++", cxx, san, client_libs, pc_cflags, pc_libs)
    else:
        print("  (no C++ compiler %s: C++ build skipped)" % cxx[0])
    server_syms, prefixes = check_archive(a.build, a.server_objs)
    check_shared(a.build, funcs, server_syms, prefixes)
    if failures:
        print("test-lib: %d failures" % len(failures), file=sys.stderr)
        return 1
    print("test-lib: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
