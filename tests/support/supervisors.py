"""Real svscan, runsvdir and s6-svscan trees in temp dirs, for the tests.

The tree itself is the package's (qmailkit.supervisor.tree, also used by the
demo); here a missing scanner fails under CI and skips elsewhere, like every
other missing program.
"""

from __future__ import annotations

from pathlib import Path

from qmailkit import supervisor
from qmailkit.supervisor.tree import ScanTree, descendants
from support import need

__all__ = ["ScanTree", "descendants", "start_scan"]


def start_scan(kind: str, root: Path, env: dict[str, str] | None = None) -> ScanTree:
    need(supervisor.get(kind).scanner[0])
    return ScanTree(kind, root, env)
