"""Benchmark: convert-multilog against the bare C conversion (daemontools' tai64nlocal).

Builds a scan directory with 3 services whose log/main directories hold
1,000,000 multilog lines in ~1 MB rotated files (as ``multilog t s1048576``
makes them), then times, best of several runs each, interleaved:

* ``qmailkit convert-multilog`` on the tree (a fresh hard-linked copy each
  time, output to a fresh log directory on the same disk, fsync'd);
* ``TZ=:/etc/localtime tai64nlocal`` over the same files, one process per
  service, output to /dev/null (no routing, no writing, no fsync).

Run: ``.venv/bin/python bench/convert_multilog.py [--lines N] [--runs N]``.
The target (issue 2 §3) is a ratio of at most 1.3.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OFFSET = (1 << 62) + 10
MESSAGES = [
    b"new msg %d",
    b"info msg %d: bytes 2841 from <alice@example.org> qp 18844 uid 1001",
    b"starting delivery %d: msg 2340981 to local bob@example.net",
    b"status: local 1/10 remote 3/40",
    b"delivery %d: success: did_0+0+1/",
    b"end msg %d",
    b"tcpserver: status: 4/40",
    b"tcpserver: pid 28764 from 192.0.2.17",
    b"tcpserver: ok 28764 mail.example.net:192.0.2.1:25 :192.0.2.17::51338",
]


def build(root: Path, lines: int, services: int = 3, file_bytes: int = 1 << 20) -> list[Path]:
    rng = random.Random(2)
    dirs = []
    per = lines // services
    for k in range(services):
        main = root / "service" / f"svc{k}" / "log" / "main"
        main.mkdir(parents=True)
        t = (1_700_000_000 + 40_000) * 10**9  # starts in the evening: crosses midnight (UTC)
        buf: list[bytes] = []
        size = 0
        for i in range(per):
            t += rng.randint(1, 170_000_000)
            s, ns = divmod(t, 10**9)
            msg = MESSAGES[i % len(MESSAGES)]
            line = b"@%016x%08x " % (s + OFFSET, ns) + (msg % i if b"%d" in msg else msg) + b"\n"
            buf.append(line)
            size += len(line)
            if size >= file_bytes - 2000 or i == per - 1:
                (main / f"@{s + OFFSET:016x}{ns + 1:08x}.s").write_bytes(b"".join(buf))
                buf, size = [], 0
        dirs.append(main)
    return dirs


def clone(src: Path, dst: Path) -> None:
    for dirpath, _dirs, files in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            os.link(Path(dirpath) / f, dst / rel / f)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    tai64nlocal = shutil.which("tai64nlocal")
    if tai64nlocal is None:
        print("tai64nlocal (daemontools) is not installed", file=sys.stderr)
        return 111
    qmailkit = Path(sys.executable).with_name("qmailkit")
    cmd_ours = [str(qmailkit)] if qmailkit.exists() else [sys.executable, "-m", "qmailkit"]
    env = dict(os.environ, TZ=":/etc/localtime")
    # An installed qmailkit has its bytecode compiled (pip does it); a source checkout
    # under PYTHONDONTWRITEBYTECODE=1 would compile it again on every run.
    import compileall

    import qmailkit

    compileall.compile_dir(os.path.dirname(qmailkit.__file__), quiet=1)
    with tempfile.TemporaryDirectory(prefix="bench-convert-", dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        pristine = root / "pristine"
        mains = build(pristine, args.lines)
        nfiles = sum(len(os.listdir(m)) for m in mains)
        total = sum(f.stat().st_size for m in mains for f in m.iterdir())
        print(f"{args.lines} lines, {nfiles} rotated files, {total / 1e6:.1f} MB, 3 services")
        c_script = " ; ".join(f"cat {m}/@* | {tai64nlocal} > /dev/null" for m in mains)
        ours_t, c_t = [], []
        for run in range(args.runs):
            work = root / f"run{run}"
            clone(pristine, work)
            (work / "log").mkdir()
            t0 = time.perf_counter()
            subprocess.run(["sh", "-c", c_script], env=env, check=True)
            c_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run(
                cmd_ours
                + [
                    "convert-multilog",
                    "-q",
                    "--service-dir",
                    str(work / "service"),
                    "--log-dir",
                    str(work / "log"),
                ],
                env=env,
                check=True,
            )
            ours_t.append(time.perf_counter() - t0)
            lines = sum(f.read_bytes().count(b"\n") for f in (work / "log").glob("svc*"))
            assert lines == args.lines // 3 * 3, lines
            shutil.rmtree(work)
        best_c, best_ours = min(c_t), min(ours_t)
        print(f"tai64nlocal (C, TZ=:/etc/localtime, to /dev/null): best {best_c:.3f} s")
        print(f"qmailkit convert-multilog (routed, fsync'd):       best {best_ours:.3f} s")
        print(f"ratio: {best_ours / best_c:.2f}  (target <= 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
