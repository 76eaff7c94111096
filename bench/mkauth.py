"""Benchmark: mkauth -c on a big vpopmail tree against tinycdb's cdb -c.

    .venv/bin/python bench/mkauth.py [--domains 10000] [--mailboxes 100] [--reps 5]

Uses the tree of bench/mkvalidrcptto.py (bench/gen_vpopmail_tree.py, generated
once and kept in /tmp), then, in the same run and taking the best of --reps for
each side:

* A: ``mkauth -c OUT`` from scratch (OUT removed before each run);
* A': ``mkauth -c OUT`` when nothing changed (the cron case: OUT left alone);
* B: ``cdb -c OUT`` on the same records (mkauth -m output).

Prints the times, the ratios A/B and A'/B, and mkauth's peak memory, and checks
that both cdbs are byte-identical.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(HERE))

from mkvalidrcptto import (  # noqa: E402 - bench/ is no package: its sibling is on sys.path
    timed,  # the same measurement as its sibling
    tree_from_args,
)


def main() -> int:
    args, tree = tree_from_args(__doc__)
    # auth.cdb holds hashes: mkauth refuses a world-writable directory.
    work = tree / "out" / "auth"
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    # As installed (pip writes .pyc files): not compiling the sources on every run.
    import qmailkit

    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(qmailkit.__file__).parent)],
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
    )
    ours, theirs, recordlist = work / "auth.cdb", work / "tinycdb.cdb", work / "records.txt"
    mk = [
        str(BIN / "mkauth"),
        "--qmail-home",
        str(tree / "var-qmail"),
        "--passwd",
        str(tree / "passwd"),
        "--vpopmail-home",
        str(tree / "home-vpopmail"),
    ]
    with open(recordlist, "wb") as fh:
        subprocess.run([*mk, "-m"], stdout=fh, check=True)
    records = sum(1 for line in open(recordlist, "rb") if line.startswith(b"+"))  # noqa: SIM115

    fresh, unchanged, tiny, peak = [], [], [], 0
    for _ in range(args.reps):  # interleaved, so that both sides see the same machine load
        ours.unlink(missing_ok=True)
        seconds, rss = timed([*mk, "-c", str(ours)])
        fresh.append(seconds)
        peak = max(peak, rss)
        mtime = ours.stat().st_mtime_ns
        seconds, rss = timed([*mk, "-c", str(ours)])
        unchanged.append(seconds)
        peak = max(peak, rss)
        if ours.stat().st_mtime_ns != mtime:
            raise SystemExit("mkauth -c rewrote an unchanged file")
        tiny.append(timed(["cdb", "-c", str(theirs)], recordlist)[0])
    identical = ours.read_bytes() == theirs.read_bytes()

    a, a2, b = min(fresh), min(unchanged), min(tiny)
    print(
        f"tree: {args.domains} domains x {args.mailboxes} mailboxes: {records} logins, "
        f"{ours.stat().st_size:,} bytes of cdb"
    )
    print(
        f"A  mkauth -c (new file):       best {a:.3f} s of {args.reps}, "
        f"peak RSS {peak / 1024:.0f} MiB"
    )
    print(f"A' mkauth -c (unchanged):      best {a2:.3f} s")
    print(f"B  tinycdb cdb -c on the same: best {b:.3f} s")
    print(f"ratio A/B: {a / b:.2f}x, A'/B: {a2 / b:.2f}x; cdb files byte-identical: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
