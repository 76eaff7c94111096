"""What every supervision suite shares, and what each one has to say for itself.

Every suite runs a supervisor process per service directory that reads
one-letter commands from the FIFO ``DIR/supervise/control`` (the same letters
for the common commands: u d h a t k) and publishes the service's state in
``DIR/supervise/status`` (a small binary record whose layout differs).  So the
commands here need no ``svc``/``sv``/``s6-svc`` subprocess: they write the
letter to the FIFO, exactly as those tools do, and ``status`` decodes the file.

A suite module (daemontools.py, runit.py, s6.py) subclasses ``Supervisor`` and
fills in everything only it knows: its scan directory, scanner, logger, how it
is told to rescan and to let a retired service go, how its status file reads,
the offset of its TAI64N labels and the Debian packages that ship it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qmailkit.errors import QmailkitError
from qmailkit.fsutil import fifo_has_reader, read_bounded
from qmailkit.logs.tai64n import LABEL_OFFSET

Target = str | os.PathLike[str]


@dataclass(frozen=True)
class ServiceStatus:
    """What the supervisor of one service directory says about it."""

    path: str
    supervised: bool  # a supervisor process is running for the directory
    up: bool  # the service process is running
    pid: int | None
    seconds: int | None  # since the last change of state
    normally_up: bool  # no ``down`` file in the directory
    want: str | None  # "up"/"down" when that differs from the current state
    paused: bool = False
    ready: bool | None = None  # s6 only: readiness notified

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LoggerRun:
    """How ``log/run`` starts a suite's logger on ``./main``."""

    programs: tuple[str, ...]  # what must be installed (services check looks for them)
    command: tuple[str, ...]  # the words after ``exec``
    comment: str = ""  # why size and count read as they do, when not multilog's way
    files: Mapping[str, bytes] = field(default_factory=dict)  # under log/, e.g. main/config


class Supervisor:
    """One supervision suite.  Subclasses fill in the class attributes and ``decode_status``."""

    kind: str = ""
    #: where the suite's scanner looks by default (Debian's packages)
    scan_dir: str = ""
    #: the scanner and its options; the scan directory is appended
    scanner: tuple[str, ...] = ()
    #: offset of TAI64 labels over Unix time written by this suite (2^62 + N)
    tai_offset: int = LABEL_OFFSET
    #: program -> the Debian package that ships it, for every program of the suite
    packages: Mapping[str, str] = {}

    # -- commands -------------------------------------------------------
    def control(self, service: Target, letters: str) -> None:
        """Send command letters to the supervisor of ``service`` (like ``svc -LETTERS``)."""
        fifo = os.path.join(service, "supervise", "control")
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno in (errno.ENXIO, errno.ENOENT):
                raise QmailkitError(
                    f"no {self.kind} supervisor is running for this directory",
                    path=os.fspath(service),
                    hint="is it linked into the scan directory and the scanner running?",
                ) from None
            raise QmailkitError(f"cannot control: {err.strerror}", path=fifo) from None
        try:
            os.write(fd, letters.encode())
        except OSError as err:
            raise QmailkitError(f"cannot control: {err.strerror}", path=fifo) from None
        finally:
            os.close(fd)

    def up(self, service: Target) -> None:
        self.control(service, "u")

    def down(self, service: Target) -> None:
        self.control(service, "d")

    def term(self, service: Target) -> None:
        self.control(service, "t")

    def hup(self, service: Target) -> None:
        self.control(service, "h")

    def alarm(self, service: Target) -> None:
        """ALRM: makes multilog, svlogd and s6-log rotate a non-empty ``current``."""
        self.control(service, "a")

    def restart(self, service: Target) -> None:
        """TERM the service and make sure it is wanted up, so it starts again."""
        self.control(service, "tu")

    def exit_if_supervised(self, service: Target) -> None:
        """``dx``: stop the service and have its supervisor exit (if one still runs)."""
        # gone meanwhile is what we wanted
        with contextlib.suppress(QmailkitError):
            if self.is_supervised(service):
                self.control(service, "dx")

    # -- the scan directory ---------------------------------------------
    def rescan(self, scan_dir: Path) -> None:
        """Make the scanner notice new entries now, if the suite can be told; by default it
        looks by itself (svscan and runsvdir at least every 5 s)."""

    def let_go(self, scan_dir: Path, services: Sequence[Path]) -> None:
        """Have the supervisors of ``services`` (directories just unlinked from ``scan_dir``)
        stop them and their loggers and exit.  Each suite says how it is told."""
        raise NotImplementedError

    def logger(self, user: str, size: int, count: int) -> LoggerRun:
        """The logger of a log service: files of ``size`` bytes, ``count`` in all counting
        ``current`` (multilog's meaning), run as ``user``."""
        raise NotImplementedError

    # -- a private scanner (qmailkit.supervisor.tree) --------------------
    def scanner_argv(self, root: Path) -> list[str]:
        return [*self.scanner, str(root)]

    def scanner_ready(self, root: Path) -> bool:
        """The scanner just started on ``root`` takes commands (by default: at once)."""
        return True

    def stop_scanner(self, proc: subprocess.Popen[bytes], root: Path) -> None:
        """Ask the scanner to end (the supervisors it started may outlive it)."""
        proc.send_signal(signal.SIGTERM)

    def after_scanner(self, root: Path) -> None:
        """Once the scanner is gone: end what it leaves running (by default nothing)."""

    # -- status ---------------------------------------------------------
    def is_supervised(self, service: Target) -> bool:
        """True when a supervisor reads ``service``'s control FIFO (what svok checks)."""
        return fifo_has_reader(os.path.join(service, "supervise", "control"))

    def status(self, service: Target) -> ServiceStatus:
        service = os.fspath(service)
        normally_up = not os.path.exists(os.path.join(service, "down"))
        supervised = self.is_supervised(service)
        try:
            raw = read_bounded(os.path.join(service, "supervise", "status"), 64)
        except (OSError, QmailkitError):
            raw = b""
        if not supervised or not raw:
            return ServiceStatus(service, supervised, False, None, None, normally_up, None)
        return self.decode_status(service, raw, normally_up)

    def decode_status(self, service: str, raw: bytes, normally_up: bool) -> ServiceStatus:
        raise NotImplementedError

    @classmethod
    def left_traces(cls, supervise: Path, status_size: int) -> bool:
        """Whether ``supervise/`` (its status file ``status_size`` bytes, -1 if none) is
        this suite's."""
        raise NotImplementedError

    def seconds_since(self, label: bytes) -> int:
        """Seconds between a packed 12-byte TAI64N label and now."""
        secs = int.from_bytes(label[:8], "big") - self.tai_offset
        return max(0, int(time.time()) - secs)

    @staticmethod
    def _want(up: bool, want_byte: int) -> str | None:
        if up and want_byte == ord("d"):
            return "down"
        if not up and want_byte == ord("u"):
            return "up"
        return None
