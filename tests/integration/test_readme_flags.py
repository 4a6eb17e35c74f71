"""README.md's flag tables and `parleyd --help` agree: the same flags, each
with the same value name and the same default.

The README's Configuration section has rows `| `--name ARG` | default | meaning |`
(several flags may share a row); its default cell drops a trailing
parenthesis ("`200` (burst x5)") and backticks, and "—" means none. In
--help, an entry is "  --name ARG   text (default X)" with its indented
continuation lines.
"""

import re
import subprocess
from pathlib import Path

from parley_client import PARLEYD, REPO

FLAG = r"(-{1,2}[a-z][a-z0-9-]*)(?: ([A-Z]+))?"


def readme_flags(text):
    """{flag: (value name or None, default or None)} from the Configuration section."""
    start = text.index("\n## Configuration")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else len(text)]
    flags = {}
    for line in section.splitlines():
        if not line.startswith("| `-"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) >= 3, f"README row without three cells: {line!r}"
        default = re.sub(r"\s*\(.*\)\s*$", "", cells[1]).replace("`", "").strip()
        names = re.findall(r"`" + FLAG + r"`", cells[0])
        assert names, f"README row without a flag: {line!r}"
        for name, arg in names:
            assert name not in flags, f"README lists {name} twice"
            flags[name] = (arg or None, None if default in ("", "—") else default)
    return flags


def help_flags(text):
    """{flag: (value name or None, default or None)} from `parleyd --help`."""
    entries = []  # [left, text]
    for line in text.splitlines():
        if line.startswith("  -"):
            m = re.match(r"  (\S(?:.*?\S)?)(?:\s{2,}(.*))?$", line)
            entries.append([m.group(1), m.group(2) or ""])
        elif entries and line.startswith("    ") and line.strip():
            entries[-1][1] = (entries[-1][1] + " " + line.strip()).strip()
    flags = {}
    for left, desc in entries:
        m = re.search(r"\(default (.+)\)$", desc)
        default = m.group(1) if m else None
        for part in left.split(", "):
            fm = re.fullmatch(FLAG, part)
            assert fm, f"--help entry not understood: {left!r}"
            assert fm.group(1) not in flags, f"--help lists {fm.group(1)} twice"
            flags[fm.group(1)] = (fm.group(2), default)
    return flags


def disagreements(readme, helps):
    """Human-readable differences between the two {flag: (arg, default)} maps."""
    out = []
    for name in sorted(set(readme) - set(helps)):
        out.append(f"{name} is in README.md but not in --help")
    for name in sorted(set(helps) - set(readme)):
        out.append(f"{name} is in --help but not in README.md")
    for name in sorted(set(readme) & set(helps)):
        (ra, rd), (ha, hd) = readme[name], helps[name]
        if ra != ha:
            out.append(f"{name}: value name {ra!r} in README.md, {ha!r} in --help")
        if rd != hd:
            out.append(f"{name}: default {rd!r} in README.md, {hd!r} in --help")
    return out


def parleyd_help():
    p = subprocess.run([PARLEYD, "--help"], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=10)
    assert p.returncode == 0, p
    return p.stdout.decode()


def test_readme_tables_match_help():
    readme = readme_flags((Path(REPO) / "README.md").read_text())
    helps = help_flags(parleyd_help())
    assert len(helps) >= 37, sorted(helps)
    problems = disagreements(readme, helps)
    assert not problems, "README.md and parleyd --help disagree:\n  " + "\n  ".join(problems)


def test_the_check_sees_a_missing_flag_and_a_wrong_default():
    """The comparison itself: a README that lost a row, changed a default or
    renamed a value, and a --help with an extra flag, are all reported."""
    text = (Path(REPO) / "README.md").read_text()
    helps = help_flags(parleyd_help())
    assert "| `--max-body BYTES` | `1048576` |" in text
    lost = "\n".join(l for l in text.splitlines() if not l.startswith("| `--max-user-convs"))
    assert disagreements(readme_flags(lost), helps) == [
        "--max-user-convs is in --help but not in README.md"]
    wrong = text.replace("| `--max-body BYTES` | `1048576` |", "| `--max-body BYTES` | `65536` |")
    assert disagreements(readme_flags(wrong), helps) == [
        "--max-body: default '65536' in README.md, '1048576' in --help"]
    renamed = text.replace("| `--max-body BYTES` |", "| `--max-body B` |")
    assert disagreements(readme_flags(renamed), helps) == [
        "--max-body: value name 'B' in README.md, 'BYTES' in --help"]
    extra = parleyd_help().replace(
        "  --version", "  --frobnicate N           frobs (default 3)\n  --version")
    assert disagreements(readme_flags(text), help_flags(extra)) == [
        "--frobnicate is in --help but not in README.md"]


def test_help_parser_reads_wrapped_and_long_entries():
    sample = ("usage: x\n\n"
              "  --config FILE            read settings from FILE: one key = value a line;\n"
              "                           blank lines are skipped\n"
              "  --help, -h               this text\n"
              "  --a-very-long-flag-name BYTES\n"
              "                           a long one (default\n"
              "                           64 GiB)\n"
              "  --on                     a switch (default off)\n"
              "\nsection:\n"
              "  --rate N                 per second; burst x5 (default 200)\n")
    assert help_flags(sample) == {
        "--config": ("FILE", None), "--help": (None, None), "-h": (None, None),
        "--a-very-long-flag-name": ("BYTES", "64 GiB"), "--on": (None, "off"),
        "--rate": ("N", "200")}
