"""Shared test helpers: real programs, polling, ports, and our own supervisors.

Under CI (CI=true) a missing program is a failure, never a skip.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _become_subreaper() -> None:
    """Orphaned supervise/runsv processes get re-parented to us, so we reap them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except OSError:
        pass


_become_subreaper()


def need(*programs: str) -> list[str]:
    """Paths of the given programs; skip (or fail under CI) if one is missing."""
    paths = []
    for prog in programs:
        path = shutil.which(prog)
        if path is None:
            msg = f"required program {prog!r} is not installed (run scripts/test as root)"
            if CI:
                pytest.fail(msg)
            pytest.skip(msg)
        paths.append(path)
    return paths


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a true value; fail the test after ``timeout`` s."""
    from qmailkit.errors import QmailkitError
    from qmailkit.supervisor.tree import poll

    try:
        return poll(predicate, timeout, what, interval)
    except QmailkitError as err:
        raise AssertionError(err.message) from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 chosen by the OS (free at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def scan(tmp_path, request):
    """A factory for real supervision trees: ``scan("daemontools"|"runit"|"s6")``.

    Every tree started is stopped at teardown, by PID.
    """
    from supervisors import start_scan

    started = []

    def factory(kind: str, root: Path | None = None):
        tree = start_scan(kind, root or tmp_path / f"scan-{kind}")
        started.append(tree)
        return tree

    yield factory
    for tree in reversed(started):
        tree.stop()
