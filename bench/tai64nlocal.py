"""Benchmark: ``qmailkit tai64nlocal`` against daemontools' ``tai64nlocal``.

    .venv/bin/python bench/tai64nlocal.py [--lines N] [--runs R] [--tz ZONE]

Generates N (default 1,000,000) typical multilog lines in a temp dir, then runs
``TZ=:/etc/localtime tai64nlocal`` and ``qmailkit tai64nlocal`` (same TZ) on the
same file, output to /dev/null, alternating, R times each (default 7), and
prints the best wall time of each and their ratio (target: at most 1.5).  It
also prints our peak RSS on N and 4N lines: it must stay flat.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QMAILKIT = str(Path(sys.executable).with_name("qmailkit"))

MESSAGES = [
    b"tcpserver: status: 3/100",
    b"tcpserver: pid 12345 from 192.0.2.17",
    b"tcpserver: ok 12345 mail.example.org:192.0.2.1:25 :198.51.100.7::40312",
    (
        b"qmail-smtpd: pid 12345 from 198.51.100.7 HELO <mx.example.net> "
        b"MAIL FROM:<a@example.net> RCPT TO:<b@example.org>"
    ),
    b"tcpserver: end 12345 status 0",
    b"delivery 4711: success: did_0+0+1/",
    b"status: local 0/10 remote 1/20",
]


def generate(path: Path, lines: int, seed: int = 1) -> None:
    """Multilog lines about 85 ms apart (a busy day), written in pieces."""
    rng = random.Random(seed)
    t = 1_700_000_000 * 10**9
    offset = (1 << 62) + 10
    with open(path, "wb") as out:
        for start in range(0, lines, 100_000):
            batch = []
            for _ in range(min(100_000, lines - start)):
                t += rng.randrange(1, 170_000_000)
                s, ns = divmod(t, 10**9)
                batch.append(b"@%016x%08x %s\n" % (s + offset, ns, rng.choice(MESSAGES)))
            out.write(b"".join(batch))


def spawn(cmd: list[str], src: Path, env: dict[str, str]) -> int:
    with open(src, "rb") as stdin, open(os.devnull, "wb") as devnull:
        actions = [
            (os.POSIX_SPAWN_DUP2, stdin.fileno(), 0),
            (os.POSIX_SPAWN_DUP2, devnull.fileno(), 1),
        ]
        return os.posix_spawn(cmd[0], cmd, env, file_actions=actions)


def check_status(cmd: list[str], status: int) -> None:
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed with status {os.waitstatus_to_exitcode(status)}")


def wall(cmd: list[str], src: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    _, status = os.waitpid(spawn(cmd, src, env), 0)
    elapsed = time.perf_counter() - start
    check_status(cmd, status)
    return elapsed


def peak_rss(cmd: list[str], src: Path, env: dict[str, str]) -> int:
    """The child's peak RSS in KiB, from /proc/PID/status VmHWM while it runs.

    (ru_maxrss would include the RSS of this process, which the child starts as.)
    """
    pid, peak = spawn(cmd, src, env), 0
    while True:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            check_status(cmd, status)
            return peak
        time.sleep(0.005)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tz", default=":/etc/localtime", help="TZ for both (default %(default)s)")
    args = parser.parse_args()
    c_tool = shutil.which("tai64nlocal")
    if c_tool is None:
        sys.exit("tai64nlocal (daemontools) is not installed")
    env = dict(os.environ, TZ=args.tz)
    with tempfile.TemporaryDirectory(prefix="bench-tai64nlocal-") as tmp:
        src, big = Path(tmp) / "lines", Path(tmp) / "lines4"
        generate(src, args.lines)
        size = src.stat().st_size
        print(f"{args.lines:,} lines, {size / 1e6:.1f} MB, TZ={args.tz}, best of {args.runs}")
        # same bytes first: a fast wrong answer is no answer
        # the same bytes first: a fast wrong answer is no answer (compared on disk, so
        # that this process stays small: a forked child starts with our RSS)
        outputs = [Path(tmp) / "ours", Path(tmp) / "theirs"]
        for cmd, dst in zip(([QMAILKIT, "tai64nlocal"], [c_tool]), outputs, strict=True):
            with open(src, "rb") as stdin, open(dst, "wb") as stdout:
                subprocess.run(cmd, stdin=stdin, stdout=stdout, env=env, check=True)
        if not filecmp.cmp(*outputs, shallow=False):
            sys.exit("outputs differ!")
        for dst in outputs:
            dst.unlink()
        c_times, py_times = [], []
        for _ in range(args.runs):
            c_times.append(wall([c_tool], src, env))
            py_times.append(wall([QMAILKIT, "tai64nlocal"], src, env))
        c_best, py_best = min(c_times), min(py_times)
        print(f"tai64nlocal (C)       {c_best:.3f} s")
        print(f"qmailkit tai64nlocal  {py_best:.3f} s")
        median = sorted(py_times)[args.runs // 2] / sorted(c_times)[args.runs // 2]
        print(
            f"ratio                 {py_best / c_best:.2f}  (target <= 1.5; medians: {median:.2f})"
        )
        with open(big, "wb") as out:
            for _ in range(4):
                with open(src, "rb") as piece:
                    shutil.copyfileobj(piece, out)
        rss1, rss4 = (peak_rss([QMAILKIT, "tai64nlocal"], f, env) for f in (src, big))
        print(
            f"peak RSS              {rss1 / 1024:.1f} MiB on {args.lines:,} lines, "
            f"{rss4 / 1024:.1f} MiB on {4 * args.lines:,} lines"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
