"""Helpers for the convert-multilog tests: sample log trees and an independent oracle."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import support

OFFSET = (1 << 62) + 10
QMAILKIT = [sys.executable, "-m", "qmailkit"]
_LABEL = re.compile(rb"@[0-9a-f]{24}")


def label(unix_ns: int, offset: int = OFFSET) -> bytes:
    s, ns = divmod(unix_ns, 10**9)
    return b"@%016x%08x" % (s + offset, ns)


def lines_between(start: int, stop: int, count: int, seed: int = 0, text: bytes = b"msg"):
    """``count`` labelled lines with times (Unix ns) spread in order over [start, stop)."""
    rng = random.Random(seed)
    times = sorted(rng.randrange(start, stop) for _ in range(count))
    return [label(t) + b" " + text + b" %d" % i for i, t in enumerate(times)]


def write_rotated(main: Path, chunks: list[list[bytes]], start_ns: int = 1_700_000_000 * 10**9):
    """Write each chunk of lines as one rotated ``@label.s`` file; returns the paths in order."""
    main.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, chunk in enumerate(chunks):
        path = main / (label(start_ns + i * 10**9).decode() + ".s")
        path.write_bytes(b"".join(line + b"\n" for line in chunk))
        paths.append(path)
    return paths


def service(root: Path, name: str) -> Path:
    main = root / name / "log" / "main"
    main.mkdir(parents=True, exist_ok=True)
    return main


def tai64nlocal(data: bytes, tz: str | None = None, prog: str = "tai64nlocal") -> bytes:
    """The real C tool's output for ``data``."""
    env = dict(os.environ)
    if tz is not None:
        env["TZ"] = tz
    return subprocess.run([prog], input=data, capture_output=True, check=True, env=env).stdout


def expected_outputs(
    name: str,
    inputs: list[bytes],
    tz: str | None = None,
    prog: str = "tai64nlocal",
    last: bytes | None = None,
) -> dict[str, bytes]:
    """What convert-multilog must produce for one service, from the C tool's conversion.

    ``inputs`` are the rotated files' contents in order.  A line is dated when
    it starts with a well-formed label; continuation lines follow the previous
    line, or, at the start, the first dated line after them in the same file.
    (Inputs here always have one, and no malformed labels the C tool crashes on.)
    """
    out: dict[str, list[bytes]] = {}
    for data in inputs:
        if data and not data.endswith(b"\n"):
            data += b"\n"
        raw = data.split(b"\n")[:-1]
        conv = tai64nlocal(data, tz, prog).split(b"\n")[:-1]
        assert len(raw) == len(conv)
        pending: list[bytes] = []
        for r, c in zip(raw, conv, strict=True):
            if _LABEL.match(r):
                date = c[:10]
                for p in pending:
                    out.setdefault(f"{name}.{date.decode()}", []).append(p)
                pending = []
                last = date
            elif last is None:
                pending.append(c)
                continue
            out.setdefault(f"{name}.{last.decode()}", []).append(c)
        assert not pending, "test inputs must have a dated line after leading continuations"
    return {k: b"".join(line + b"\n" for line in v) for k, v in out.items()}


def day_files(log_dir: Path) -> dict[str, bytes]:
    """Every day file in ``log_dir`` (not the state directory) with its content."""
    return {p.name: p.read_bytes() for p in sorted(log_dir.iterdir()) if p.is_file()}


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return support.run("convert-multilog", *args, env=env, text=False, timeout=timeout)
