"""The supervisors qmailkit drives: daemontools, runit and s6, behind one interface.

Every one of them runs a supervisor process per service directory that reads
one-letter commands from the FIFO ``DIR/supervise/control`` (the same letters
for the common commands: u d h a t k) and publishes the service's state in
``DIR/supervise/status`` (a small binary record whose layout differs).  So the
commands here need no ``svc``/``sv``/``s6-svc`` subprocess: they write the
letter to the FIFO, exactly as those tools do, and ``status`` decodes the file.

Use ``get(kind)`` for a named supervisor, or ``detect(service_dir)``.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

from qmailkit.errors import InputError, QmailkitError

KINDS = ("daemontools", "runit", "s6")


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

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Supervisor:
    """One supervision suite.  Subclasses say how to read the status file."""

    kind: str = ""
    #: offset of TAI64 labels over Unix time written by this suite (2^62 + N)
    tai_offset: int = (1 << 62) + 10

    # -- commands -------------------------------------------------------
    def control(self, service: str | os.PathLike[str], letters: str) -> None:
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

    def up(self, service) -> None:
        self.control(service, "u")

    def down(self, service) -> None:
        self.control(service, "d")

    def term(self, service) -> None:
        self.control(service, "t")

    def hup(self, service) -> None:
        self.control(service, "h")

    def alarm(self, service) -> None:
        """ALRM: makes multilog, svlogd and s6-log rotate a non-empty ``current``."""
        self.control(service, "a")

    def restart(self, service) -> None:
        """TERM the service and make sure it is wanted up, so it starts again."""
        self.control(service, "tu")

    # -- status ---------------------------------------------------------
    def is_supervised(self, service: str | os.PathLike[str]) -> bool:
        """True when a supervisor reads ``service``'s control FIFO (what svok checks)."""
        from qmailkit.fsutil import fifo_has_reader

        return fifo_has_reader(os.path.join(service, "supervise", "control"))

    def status(self, service: str | os.PathLike[str]) -> ServiceStatus:
        service = os.fspath(service)
        normally_up = not os.path.exists(os.path.join(service, "down"))
        supervised = self.is_supervised(service)
        try:
            with open(os.path.join(service, "supervise", "status"), "rb") as fh:
                raw = fh.read(64)
        except OSError:
            raw = b""
        if not supervised or not raw:
            return ServiceStatus(service, supervised, False, None, None, normally_up, None)
        return self.decode_status(service, raw, normally_up)

    def decode_status(self, service: str, raw: bytes, normally_up: bool) -> ServiceStatus:
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


def get(kind: str) -> Supervisor:
    """The supervisor called ``kind`` (one of KINDS)."""
    if kind == "daemontools":
        from qmailkit.supervisor.daemontools import Daemontools

        return Daemontools()
    if kind == "runit":
        from qmailkit.supervisor.runit import Runit

        return Runit()
    if kind == "s6":
        from qmailkit.supervisor.s6 import S6

        return S6()
    raise InputError(f"unknown supervisor {kind!r}", hint="use one of: " + ", ".join(KINDS))


def detect(service: str | os.PathLike[str]) -> str | None:
    """Which suite supervises ``service``, from its ``supervise/`` directory; None if unknown.

    The status file tells them apart: 18 bytes for daemontools, 20 for runit
    (which also keeps ``supervise/stat``), 35 or more for s6.
    """
    sup = Path(service) / "supervise"
    try:
        size = (sup / "status").stat().st_size
    except OSError:
        size = -1
    if size == 18:
        return "daemontools"
    if size == 20 or (sup / "stat").exists():
        return "runit"
    if size >= 35:
        return "s6"
    return None
