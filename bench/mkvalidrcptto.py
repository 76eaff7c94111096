"""Benchmark: mkvalidrcptto -c on a big vpopmail tree against tinycdb's cdb -c.

    .venv/bin/python bench/mkvalidrcptto.py [--domains 10000] [--mailboxes 100] [--reps 5]

Generates the tree once (bench/gen_vpopmail_tree.py, kept in /tmp between
runs), then, in the same run and taking the best of --reps for each side:

* A: ``mkvalidrcptto -c OUT`` from scratch (OUT removed before each run),
  with a worker process per CPU; also with ``-j 1`` (one process) for comparison;
* B: ``cdb -c OUT`` on the resulting key list (mkvalidrcptto -m output);
* also ``mkvalidrcptto -c`` when nothing changed (the every-minute cron case);
* C: ``cat`` of every file in the vpopmail tree (through xargs), for scale:
  what merely reading the input costs a C program.

Prints both times, the ratio A/B (target: at most 5) and A's peak memory
(target: under 1 GiB), and checks that both cdbs are byte-identical.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def timed(cmd: list[str], stdin_path: Path | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run of ``cmd``."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
    finally:
        if stdin_path:
            stdin.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with exit code {proc.returncode}")
    return elapsed, usage.ru_maxrss


def tree_from_args(doc: str) -> tuple[argparse.Namespace, Path]:
    """The options both vpopmail-tree benchmarks take, and the tree (generated once)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--domains", type=int, default=10_000)
    ap.add_argument("--mailboxes", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tree", type=Path, help="where the tree lives (default: in /tmp)")
    args = ap.parse_args()
    tree = args.tree or Path(f"/tmp/qmailkit-bench-vpopmail-{args.domains}x{args.mailboxes}")
    done = tree / ".complete"
    if not done.exists():
        print(f"generating {tree} ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                str(HERE / "gen_vpopmail_tree.py"),
                str(tree),
                "--domains",
                str(args.domains),
                "--mailboxes",
                str(args.mailboxes),
            ],
            check=True,
        )
        done.touch()
    return args, tree


def main() -> int:
    args, tree = tree_from_args(__doc__)
    work = tree / "out"
    work.mkdir(exist_ok=True)
    # As installed (pip writes .pyc files): not compiling the sources on every run
    # even when PYTHONDONTWRITEBYTECODE is set here.
    import qmailkit

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(qmailkit.__file__).parent)],
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
    )
    ours, theirs, keylist = work / "validrcptto.cdb", work / "tinycdb.cdb", work / "keys.txt"
    common = [
        "--qmail-home",
        str(tree / "var-qmail"),
        "--passwd",
        str(tree / "passwd"),
        "--vpopmail-home",
        str(tree / "home-vpopmail"),
        "-q",
    ]
    mk = [str(BIN / "mkvalidrcptto"), *common]
    with open(keylist, "wb") as fh:
        subprocess.run([*mk, "-m"], stdout=fh, check=True)
    keys = sum(1 for line in open(keylist, "rb") if line.startswith(b"+"))  # noqa: SIM115

    # The C floor of the input side: just reading every file of the vpopmail tree.
    files = work / "files.txt"
    with open(files, "wb") as fh:
        subprocess.run(
            ["find", str(tree / "home-vpopmail" / "domains"), "-type", "f", "-print0"],
            stdout=fh,
            check=True,
        )
    reading = ["sh", "-c", f"xargs -0 cat < {files} > /dev/null"]

    fresh, single, unchanged, tiny, floor, peak = [], [], [], [], [], 0
    for _ in range(args.reps):  # interleaved, so that both sides see the same machine load
        ours.unlink(missing_ok=True)
        seconds, rss = timed([*mk, "-c", str(ours)])
        fresh.append(seconds)
        peak = max(peak, rss)
        unchanged.append(timed([*mk, "-c", str(ours)])[0])
        ours.unlink()
        seconds, rss = timed([*mk, "-j1", "-c", str(ours)])
        single.append(seconds)
        peak = max(peak, rss)
        tiny.append(timed(["cdb", "-c", str(theirs)], keylist)[0])
        floor.append(timed(reading)[0])
    identical = ours.read_bytes() == theirs.read_bytes()

    a, b = min(fresh), min(tiny)
    print(
        f"tree: {args.domains} domains x {args.mailboxes} mailboxes (+ aliases, lists, "
        f"catch-alls, bouncesaying): {keys} keys, {ours.stat().st_size:,} bytes of cdb"
    )
    print(
        f"A  mkvalidrcptto -c (new file):   best {a:.3f} s of {args.reps}, "
        f"peak RSS {peak / 1024:.0f} MiB"
    )
    print(f"   mkvalidrcptto -c -j1 (new):    best {min(single):.3f} s (one process)")
    print(f"   mkvalidrcptto -c (unchanged):  best {min(unchanged):.3f} s")
    print(f"B  tinycdb cdb -c on the keys:    best {b:.3f} s")
    print(
        f"C  cat of every file of the tree: best {min(floor):.3f} s (reading the input alone, in C)"
    )
    print(
        f"ratio A/B: {a / b:.2f}x (target <= 5x); memory {'under' if peak < 1 << 20 else 'OVER'}"
        f" 1 GiB; cdb files byte-identical: {identical}"
    )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
