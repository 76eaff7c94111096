"""The qmail-send stand-in under real supervisors, in a fake qmail home, for the updater tests.

``SendSite`` lays out a qmail home (control files, ``queue/lock/sendmutex``),
installs the stand-in (``qmailkit.demo.qmail_send``) and a service directory
for it with the suite's own logger (multilog, svlogd, s6-log, each with TAI64N
labels), inside a scan directory that does not exist yet: the ``scan``
fixture then starts the scanner on it, which finds the service at once
(svscan and runsvdir would otherwise take up to 5 s to rescan).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from qmailkit import supervisor
from qmailkit.demo import qmail_send
from qmailkit.supervisor.tree import ScanTree
from support import need, wait_for

TAI_LABEL = 26  # "@" + 24 hex digits + " "


def make_home(home: Path, locals_text: bytes = b"example.com\nexample.net\n") -> Path:
    """A qmail home with control/{locals,virtualdomains,rcpthosts} and queue/lock/sendmutex."""
    control = home / "control"
    control.mkdir(parents=True)
    (control / "locals").write_bytes(locals_text)
    (control / "virtualdomains").write_bytes(b"virt.example:alice\n")
    (control / "rcpthosts").write_bytes(b"example.com\nexample.net\nvirt.example\n")
    lock = home / "queue" / "lock"
    lock.mkdir(parents=True)
    (lock / "sendmutex").touch(0o600)
    return home


class SendSite:
    """A fake qmail home and a supervised qmail-send stand-in service for suite ``kind``."""

    def __init__(self, root: Path, kind: str, delay: float = 0.0) -> None:
        self.kind = kind
        self.suite = supervisor.get(kind)
        need(*self.suite.logger("root", 100000, 3).programs)
        self.home = make_home(root / "qmail")
        self.program = qmail_send.install(root / "bin")
        self.scan_dir = root / "scan"
        self.service = root / "services" / "qmail-send"
        self._write_service(delay)
        self.scan_dir.mkdir()
        (self.scan_dir / "qmail-send").symlink_to(self.service)

    def _write_service(self, delay: float) -> None:
        log = self.service / "log"
        (log / "main").mkdir(parents=True)
        env = f"{qmail_send.DELAY_ENV}={delay}"
        run = self.service / "run"
        run.write_text(
            "#!/bin/sh\nexec 2>&1\n"
            f"exec env {env} {shlex.quote(self.program)} {shlex.quote(str(self.home))}\n"
        )
        run.chmod(0o755)
        logger = self.suite.logger("root", 100000, 3)
        for name, data in logger.files.items():
            (log / name).write_bytes(data)
        (log / "run").write_text("#!/bin/sh\nexec " + shlex.join(logger.command) + "\n")
        (log / "run").chmod(0o755)

    def start(self, scan) -> ScanTree:
        """Start the scanner (the ``scan`` fixture) and wait for the stand-in to hold the lock."""
        tree = scan(self.kind, self.scan_dir)
        tree.wait_up(self.service)
        self.wait_started()
        return tree

    # -- what the stand-in said ---------------------------------------
    def lines(self) -> list[str]:
        """The stand-in's log lines so far (labels removed), oldest first."""
        main = self.service / "log" / "main"
        out: list[str] = []
        for name in sorted(os.listdir(main)):
            if name.startswith("@") or name == "current":
                data = (main / name).read_bytes()
                out += [line[TAI_LABEL:] for line in data.decode().splitlines()]
        return out

    def pid(self) -> int | None:
        return self.suite.status(self.service).pid

    def wait_started(self, timeout: float = 15) -> int:
        """Wait until the supervised stand-in logged that it holds the lock; its pid."""

        def started() -> int | None:
            pid = self.pid()
            if pid and any(line.startswith(f"status: started pid {pid};") for line in self.lines()):
                return pid
            return None

        return wait_for(started, timeout, what=f"qmail-send stand-in to start under {self.kind}")

    def wait_line(self, line: str, after: int, timeout: float = 1.0) -> list[str]:
        """Wait until ``line`` is logged past the first ``after`` lines; the new lines."""
        return wait_for(
            lambda: [ln for ln in self.lines()[after:]] if line in self.lines()[after:] else None,
            timeout,
            what=f"{line!r} in the stand-in's log",
        )

    def runs(self) -> list[list[str]]:
        """The log split into one list per process started (each begins ``status: starting``)."""
        out: list[list[str]] = []
        for line in self.lines():
            if line.startswith("status: starting pid "):
                out.append([])
            if out:
                out[-1].append(line)
        return out


def other_holder(mutex: Path) -> subprocess.Popen[str]:
    """A Python process (comm ``python3``) holding the flock on ``mutex``, ready when returned."""
    code = (
        "import fcntl, sys, time\n"
        f"fd = open({str(mutex)!r}, 'w')\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(300)\n"
    )
    proc = subprocess.Popen(
        ["/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc
