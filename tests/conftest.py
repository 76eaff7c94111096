"""Shared test helpers: real programs, polling, ports, and our own supervisors.

Under CI (CI=true) a missing program is a failure, never a skip.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest


def _become_subreaper() -> None:
    """Orphaned supervise/runsv processes get re-parented to us, so we reap them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except OSError:
        pass


_become_subreaper()


@pytest.fixture
def scan(tmp_path, request):
    """A factory for real supervision trees: ``scan("daemontools"|"runit"|"s6")``.

    Every tree started is stopped at teardown, by PID.
    """
    from support.supervisors import start_scan

    started = []

    def factory(kind: str, root: Path | None = None):
        tree = start_scan(kind, root or tmp_path / f"scan-{kind}")
        started.append(tree)
        return tree

    yield factory
    for tree in reversed(started):
        tree.stop()
