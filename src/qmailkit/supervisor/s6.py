"""s6 (s6-svscan/s6-supervise/s6-log): a 35-byte ``supervise/status``.

Layout (s6 2.11): TAI64N of the last change (12), TAI64N of readiness (12),
pid (8 bytes big-endian), wait status (2 bytes big-endian), flags (bit 0
paused, bit 1 finishing, bit 2 want up, bit 3 ready).  s6 writes real TAI
labels (leap seconds included), 27 s ahead of daemontools' convention.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from qmailkit.fsutil import fifo_has_reader
from qmailkit.logs.tai64n import TAI_OFFSET
from qmailkit.supervisor.base import LoggerRun, ServiceStatus, Supervisor


class S6(Supervisor):
    kind = "s6"
    scan_dir = "/run/service"
    scanner = ("s6-svscan",)
    tai_offset = TAI_OFFSET
    packages = dict.fromkeys(
        ("s6-svscan", "s6-supervise", "s6-log", "s6-setuidgid", "s6-softlimit"), "s6"
    )

    def rescan(self, scan_dir: Path) -> None:
        """Ask s6-svscan to look at the scan directory now (``s6-svscanctl -a``)."""
        self._tell_scanner(scan_dir, b"a")

    def let_go(self, scan_dir: Path, services: Sequence[Path]) -> None:
        # rescan, and end the supervisors of vanished entries (s6-svscanctl -an)
        self._tell_scanner(scan_dir, b"an")

    @staticmethod
    def _tell_scanner(scan_dir: Path, letters: bytes) -> None:
        fifo = scan_dir / ".s6-svscan" / "control"
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return  # no scanner running: the services start when it does
        try:
            os.write(fd, letters)
        finally:
            os.close(fd)

    def logger(self, user: str, size: int, count: int) -> LoggerRun:
        return LoggerRun(
            programs=("s6-setuidgid", "s6-log"),
            command=("s6-setuidgid", user, "s6-log", "t", f"s{size}", f"n{count - 1}", "./main"),
            comment=f"n{count - 1}: s6-log keeps n old files, multilog n-1.",
        )

    def scanner_ready(self, root: Path) -> bool:
        # s6-svscanctl needs the scanner's control FIFO; it appears shortly after start
        return fifo_has_reader(root / ".s6-svscan" / "control")

    def stop_scanner(self, proc: subprocess.Popen[bytes], root: Path) -> None:
        self._tell_scanner(root, b"t")  # s6-svscanctl -t: the whole tree ends

    @classmethod
    def left_traces(cls, supervise: Path, status_size: int) -> bool:
        return status_size >= 35

    def decode_status(self, service: str, raw: bytes, normally_up: bool) -> ServiceStatus:
        if len(raw) < 35:
            return ServiceStatus(service, True, False, None, None, normally_up, None)
        pid = int.from_bytes(raw[24:32], "big")
        flags = raw[34]
        finishing = bool(flags & 2)
        up = pid != 0 and not finishing
        want = "u" if flags & 4 else "d"
        return ServiceStatus(
            path=service,
            supervised=True,
            up=up,
            # while finishing, the pid field still names the dead process (or ./finish)
            pid=pid if up else None,
            seconds=self.seconds_since(raw[:12]),
            normally_up=normally_up,
            want=self._want(up, ord(want)),
            paused=bool(flags & 1),
            ready=bool(flags & 8),
        )
