"""The supervisors qmailkit drives: daemontools, runit and s6, behind one interface.

Every piece of knowledge about one suite (scan directory, scanner, logger, rescan,
retiring a service, the status file, label offset, Debian packages) lives in its
module; ``base.Supervisor`` is the interface.  Adding a suite is one module and one
line in ``SUITES``.

Use ``get(kind)`` for a named supervisor, or ``detect(service_dir)``.
"""

from __future__ import annotations

import os
from pathlib import Path

from qmailkit.errors import InputError
from qmailkit.supervisor.base import LoggerRun, ServiceStatus, Supervisor
from qmailkit.supervisor.daemontools import Daemontools
from qmailkit.supervisor.runit import Runit
from qmailkit.supervisor.s6 import S6

__all__ = [
    "DEFAULT_KIND",
    "KINDS",
    "SUITES",
    "LoggerRun",
    "ServiceStatus",
    "Supervisor",
    "detect",
    "get",
]

#: the registry: kind -> suite, in the order ``detect`` asks them
SUITES: dict[str, type[Supervisor]] = {suite.kind: suite for suite in (Daemontools, Runit, S6)}
KINDS = tuple(SUITES)
#: the suite a config uses unless it says otherwise: qmail's own
DEFAULT_KIND = Daemontools.kind


def get(kind: str) -> Supervisor:
    """The supervisor called ``kind`` (one of KINDS)."""
    suite = SUITES.get(kind)
    if suite is None:
        raise InputError(f"unknown supervisor {kind!r}", hint="use one of: " + ", ".join(KINDS))
    return suite()


def detect(service: str | os.PathLike[str]) -> str | None:
    """Which suite supervises ``service``, from its ``supervise/`` directory; None if unknown.

    Each suite leaves its own traces there (the size of ``supervise/status``, runit's
    ``supervise/stat``).
    """
    supervise = Path(service) / "supervise"
    try:
        size = (supervise / "status").stat().st_size
    except OSError:
        size = -1
    for kind, suite in SUITES.items():
        if suite.left_traces(supervise, size):
            return kind
    return None
