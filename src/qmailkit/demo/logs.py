"""Demo part "logs": multilog files → dated, readable day files with convert-multilog.

Builds a scan directory with three services whose ``log/main`` directories hold
generated multilog files (three days, a midnight crossing, a line multilog
split at a rotation), and, when daemontools is installed, one more service run
by a real ``svscan``/``supervise``/``multilog`` so its files are genuine.  Then
it runs convert-multilog (with ``-a`` for the live one), shows the results and
stops every process it started, by PID.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from qmailkit import fsutil
from qmailkit.logs import convert, tai64n
from qmailkit.supervisor.tree import ScanTree

Say = Callable[[str], None]

SAMPLES = {
    "qmail-send": [
        b"new msg 2340981",
        b"info msg 2340981: bytes 2841 from <alice@example.org> qp 18844 uid 1001",
        b"starting delivery 9912: msg 2340981 to local bob@example.net",
        b"status: local 1/10 remote 0/40",
        b"delivery 9912: success: did_0+0+1/",
        b"end msg 2340981",
    ],
    "qmail-smtpd": [
        b"tcpserver: status: 1/40",
        b"tcpserver: pid 28764 from 192.0.2.17",
        b"tcpserver: ok 28764 mail.example.net:192.0.2.1:25 :192.0.2.17::51338",
        b"tcpserver: end 28764 status 0",
    ],
    "pop3d": [
        b"tcpserver: pid 3011 from 198.51.100.4",
        b"tcpserver: ok 3011 pop.example.net:192.0.2.1:110 :198.51.100.4::40022",
        b"tcpserver: end 3011 status 0",
    ],
}


def make_sample_files(service_dir: Path, now: float | None = None, seed: int = 7) -> dict[str, int]:
    """Write rotated multilog files for three services covering the last three days.

    Returns {service: number of lines written}.
    """
    rng = random.Random(seed)
    now = time.time() if now is None else now
    start = now - 3 * 86400
    written: dict[str, int] = {}
    for name, texts in SAMPLES.items():
        main = service_dir / name / "log" / "main"
        main.mkdir(parents=True, exist_ok=True)
        t = start + rng.uniform(0, 600)
        lines: list[bytes] = []
        files = 0
        while t < now - 3600:
            t += rng.expovariate(1 / 900)
            secs = int(t)
            nanos = int((t - secs) * 1e9)
            lines.append(tai64n.encode(secs, nanos) + b" " + rng.choice(texts) + b"\n")
            if len(lines) >= 60 or t >= now - 3600:
                if name == "qmail-send" and files == 1:
                    # multilog split an over-long line at this rotation: the tail
                    # starts the next file without a label (a continuation line)
                    lines[-1] = lines[-1][:-1] + b" [a very long line, cut by multilog"
                    tail = b" ... and its tail in the next file]\n"
                else:
                    tail = b""
                label = tai64n.encode(secs, nanos + 1 if nanos < 999_999_999 else nanos)
                (main / (label.decode() + ".s")).write_bytes(b"".join(lines))
                written[name] = written.get(name, 0) + len(lines)
                lines = [tail] if tail else []
                files += 1
        if lines:
            label = tai64n.encode(int(t), 0)
            (main / (label.decode() + ".s")).write_bytes(b"".join(lines))
            written[name] = written.get(name, 0) + len(lines)
        (main / "current").write_bytes(b"")
    return written


class _LiveService:
    """A real svscan on a scan directory with one service logging through multilog."""

    def __init__(self, scan_dir: Path, name: str) -> None:
        self.scan_dir = scan_dir  # holds only this service: svscan starts all it finds
        self.service = scan_dir / name
        self.tree: ScanTree | None = None

    def start(self) -> None:
        svc = self.service
        (svc / "log" / "main").mkdir(parents=True)
        (svc / "run").write_text(
            "#!/bin/sh\nexec 2>&1\n"
            'for n in 1 2 3 4 5; do echo "tcpserver: status: $n/20"; done\n'
            'echo "tcpserver: pid 4242 from 203.0.113.9"\n'
            "exec sleep 600\n"
        )
        (svc / "log" / "run").write_text("#!/bin/sh\nexec multilog t s1048576 n10 ./main\n")
        for f in (svc / "run", svc / "log" / "run"):
            f.chmod(0o755)
        self.tree = ScanTree("daemontools", self.scan_dir)

    def wait_for_lines(self, count: int, timeout: float = 15.0) -> bool:
        """True once multilog's ``current`` holds ``count`` lines; False after ``timeout`` s."""
        tree = self.tree
        if tree is None:
            return False
        current = self.service / "log" / "main" / "current"

        def logged_enough() -> bool:
            tree.remember()  # the processes svscan started so far, to stop them by PID
            try:
                return current.read_bytes().count(b"\n") >= count
            except FileNotFoundError:
                return False

        return fsutil.poll(logged_enough, timeout, interval=0.05)

    def stop(self) -> None:
        if self.tree is not None:
            self.tree.stop()


def run(sandbox: Path, say: Say) -> None:
    service_dir = sandbox / "service"
    log_dir = sandbox / "var-log"
    log_dir.mkdir(parents=True, exist_ok=True)
    say("convert-multilog moves what multilog rotated out of SERVICE/log/main into one")
    say("readable file per service and day, like /var/log/qmail-send.2024-05-01.")
    written = make_sample_files(service_dir)
    for name, count in sorted(written.items()):
        n = len(list((service_dir / name / "log" / "main").glob("@*.s")))
        say(f"  {service_dir / name / 'log/main'}: {n} rotated files, {count} lines")

    live = None
    if all(shutil.which(p) for p in ("svscan", "supervise", "multilog", "svc")):
        live = _LiveService(sandbox / "live-scan", "smtpd-live")
        say("daemontools is installed: starting svscan with a service 'smtpd-live' whose")
        say("log service is a real multilog (its lines are still in 'current').")
        live.start()
        (service_dir / "smtpd-live").symlink_to(live.service)
    try:
        if live is not None and not live.wait_for_lines(6):
            say("  (the live service did not log in time; converting the samples only)")
        say("")
        say(f"$ convert-multilog -a --service-dir {service_dir} --log-dir {log_dir}")
        opts = convert.Options(
            service_dir=service_dir,
            log_dir=log_dir,
            alarm=True,
            supervisor="daemontools" if live is not None else None,
            alarm_timeout=10,
        )
        result = convert.convert_all(opts)
    finally:
        if live is not None:
            live.stop()
            say("stopped svscan, supervise, multilog and the service (by PID)")
    for service in result.services:
        say("  " + service.summary())
    say("")
    say(f"Day files in {log_dir}:")
    for path in sorted(log_dir.iterdir()):
        if path.is_file():
            count = path.read_bytes().count(b"\n")
            say(f"  {path.name:32s} {count:5d} lines")
    sample = sorted(log_dir.glob("qmail-send.*"))
    if sample:
        say("")
        say(f"The start of {sample[0].name} (TAI64N labels are now local times):")
        for line in sample[0].read_bytes().splitlines()[:3]:
            say("  " + line.decode(errors="replace"))
    cont = [p for p in log_dir.glob("qmail-send.*") if b"and its tail" in p.read_bytes()]
    if cont:
        say(f"The line multilog split at a rotation was kept whole in {cont[0].name}.")
    say("Lines of one day can sit in two input files and one input file can feed two days")
    say("(the midnight crossings above); every input is deleted only once its lines are safe.")
