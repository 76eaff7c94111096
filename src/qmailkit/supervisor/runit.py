"""runit (runsvdir/runsv/svlogd): a 20-byte ``supervise/status``.

The first 18 bytes are laid out as daemontools' (TAI64N, pid little-endian,
paused, want); then a "term sent" flag and the state (0 down, 1 run, 2 finish).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from qmailkit.supervisor.base import LoggerRun, ServiceStatus, Supervisor


class Runit(Supervisor):
    kind = "runit"
    scan_dir = "/etc/service"
    scanner = ("runsvdir", "-P")
    packages = dict.fromkeys(("runsvdir", "runsv", "chpst", "svlogd"), "runit")

    def let_go(self, scan_dir: Path, services: Sequence[Path]) -> None:
        # runsvdir TERMs the runsv of a vanished entry, but only at its next look (up to
        # 5 s later, or never if runsvdir is not running); "dx" (sv exit) has runsv stop
        # the service, then its logger, and exit now.  One runsv serves both: its
        # log/supervise/control is only for the logger.
        for service in services:
            self.exit_if_supervised(service)

    def logger(self, user: str, size: int, count: int) -> LoggerRun:
        # svlogd reads size and count from main/config, and keeps n old files
        return LoggerRun(
            programs=("chpst", "svlogd"),
            command=("chpst", "-u", user, "svlogd", "-t", "./main"),
            comment=(
                f"Size and count are in main/config (n{count - 1}: svlogd keeps n old "
                "files, multilog n-1)."
            ),
            files={"main/config": f"s{size}\nn{count - 1}\n".encode()},
        )

    def scanner_argv(self, root: Path) -> list[str]:
        # -P needs runsvdir's status-line argument after the directory
        return [*self.scanner, str(root), "log: " + "." * 40]

    def stop_scanner(self, proc: subprocess.Popen[bytes], root: Path) -> None:
        proc.send_signal(signal.SIGHUP)  # runsvdir stops every runsv

    @classmethod
    def left_traces(cls, supervise: Path, status_size: int) -> bool:
        return status_size == 20 or (supervise / "stat").exists()

    def decode_status(self, service: str, raw: bytes, normally_up: bool) -> ServiceStatus:
        if len(raw) < 20:
            return ServiceStatus(service, True, False, None, None, normally_up, None)
        pid = int.from_bytes(raw[12:16], "little")
        up = pid != 0 and raw[19] == 1
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
