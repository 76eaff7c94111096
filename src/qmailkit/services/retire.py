"""Retire the services dropped from the config (``services apply --prune``).

A retired service is unlinked from the scan directory, stopped with its logger (the
way its supervisor is meant to be told: ``Supervisor.let_go``), and its directory
renamed to ``.retired-NAME-STAMP`` so its logs are kept and a later service of the
same name starts clean.  Only directories holding apply's state file are candidates
(``plan.retirees``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from qmailkit.errors import os_error
from qmailkit.fsutil import fsync_dir, poll
from qmailkit.services.plan import RETIRED_PREFIX, Rendered, retirees
from qmailkit.supervisor import Supervisor

STOP_TIMEOUT = 10.0  # seconds a retired service and its logger get to stop


@dataclass
class Retired:
    """A service dropped from the config that apply --prune stopped and moved aside."""

    name: str
    link: str | None  # the scan directory entry removed (None: it was not linked)
    kept_in: str  # where its directory (and its logs) now are
    in_scan_dir: bool = False  # it lived in the scan directory itself (no link)


def retire(
    sup: Supervisor, root: Path, scan_dir: Path, names: Collection[str], rendered: Rendered
) -> tuple[list[Retired], list[str]]:
    """Unlink, stop and move aside the named services; (what was retired, warnings)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    todo = [r for r in retirees(rendered, root, scan_dir) if r.name in names and r.retirable]
    where: dict[str, Path] = {}
    try:
        for r in todo:
            if r.link is not None:
                r.link.unlink(missing_ok=True)
            # in the scan directory itself, a dot-name is what hides it from the scanner
            where[r.name] = move_aside(r.sdir, stamp) if r.in_scan_dir else r.sdir
        if any(r.link is not None for r in todo):
            fsync_dir(scan_dir)
    except OSError as err:
        raise os_error(err, "cannot unlink a retired service") from err

    # the link is gone, so no scanner starts them again once their supervisors exit
    sup.let_go(scan_dir, [where[r.name] for r in todo])
    dirs = [d for r in todo for d in (where[r.name], where[r.name] / "log") if d.is_dir()]
    late = _wait_unsupervised(sup, dirs)

    warnings = []
    retired = []
    for r in todo:
        here = where[r.name]
        still = [_late(sup, r.name, d, here) for d in late if d in (here, here / "log")]
        if not r.in_scan_dir:
            where[r.name] = move_aside(r.sdir, stamp)
        if still:
            warnings.append(
                f"{r.name}: still supervised {STOP_TIMEOUT:g} seconds after it was retired: "
                + ", ".join(still)
                + f" (its files are in {where[r.name]})"
            )
        retired.append(
            Retired(r.name, str(r.link) if r.link else None, str(where[r.name]), r.in_scan_dir)
        )
    return retired, warnings


def _wait_unsupervised(sup: Supervisor, dirs: list[Path]) -> list[Path]:
    """Wait until no supervisor reads the control FIFO of any of ``dirs``; those left."""
    left = list(dirs)

    def gone() -> bool:
        left[:] = [d for d in left if sup.is_supervised(d)]
        return not left

    poll(gone, STOP_TIMEOUT, 0.05)
    return left


def _late(sup: Supervisor, name: str, directory: Path, sdir: Path) -> str:
    label = name if directory == sdir else f"{name}/log"
    st = sup.status(directory)
    return f"{label} (pid {st.pid})" if st.up and st.pid else f"{label} (supervisor only)"


def move_aside(sdir: Path, stamp: str) -> Path:
    """Rename ``sdir`` to ``.retired-NAME-STAMP`` beside it (a suffix if that is taken)."""
    base = f"{RETIRED_PREFIX}{sdir.name}-{stamp}"
    target = sdir.parent / base
    n = 1
    while os.path.lexists(target):
        n += 1
        target = sdir.parent / f"{base}-{n}"
    try:
        os.rename(sdir, target)
        fsync_dir(sdir.parent)
    except OSError as err:
        raise os_error(err, "cannot move the retired service aside") from err
    return target
