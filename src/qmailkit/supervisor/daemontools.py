"""daemontools (svscan/supervise/multilog): an 18-byte ``supervise/status``.

Layout: TAI64N of the last change (12 bytes), pid (4 bytes little-endian, 0
when down), paused flag (1 byte), wanted state (``u``/``d``).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from qmailkit.supervisor.base import LoggerRun, ServiceStatus, Supervisor


class Daemontools(Supervisor):
    kind = "daemontools"
    scan_dir = "/service"
    scanner = ("svscan",)
    packages = dict.fromkeys(
        ("svscan", "supervise", "multilog", "setuidgid", "softlimit"), "daemontools"
    )

    def let_go(self, scan_dir: Path, services: Sequence[Path]) -> None:
        # svc -dx on the service, then on its log: supervise exits once its process is
        # down, and svscan forgets an entry it no longer sees
        for service in services:
            for directory in (service, service / "log"):
                if directory.is_dir():
                    self.exit_if_supervised(directory)

    def logger(self, user: str, size: int, count: int) -> LoggerRun:
        return LoggerRun(
            programs=("setuidgid", "multilog"),
            command=("setuidgid", user, "multilog", "t", f"s{size}", f"n{count}", "./main"),
        )

    def stop_scanner(self, proc: subprocess.Popen[bytes], root: Path) -> None:
        proc.send_signal(signal.SIGTERM)  # svscan alone: every supervise stays

    def after_scanner(self, root: Path) -> None:
        # svscan leaves its supervise processes running: tell each one to stop and exit
        for entry in sorted(root.iterdir()):
            for directory in (entry, entry / "log"):
                if self.is_supervised(directory):
                    self.control(directory, "dx")

    @classmethod
    def left_traces(cls, supervise: Path, status_size: int) -> bool:
        return status_size == 18

    def decode_status(self, service: str, raw: bytes, normally_up: bool) -> ServiceStatus:
        if len(raw) < 18:
            return ServiceStatus(service, True, False, None, None, normally_up, None)
        pid = int.from_bytes(raw[12:16], "little")
        up = pid != 0
        return ServiceStatus(
            path=service,
            supervised=True,
            up=up,
            pid=pid or None,
            seconds=self.seconds_since(raw[:12]),
            normally_up=normally_up,
            want=self._want(up, raw[17]),
            paused=bool(raw[16]),
        )
