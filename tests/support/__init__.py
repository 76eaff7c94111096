"""What every test area shares: the real programs, waiting, ports, and the one CLI runner.

Importable as ``support`` (pyproject's pytest ``pythonpath = ["tests"]``).
Under CI (CI=true) a missing program is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import pytest

from qmailkit import fsutil
from qmailkit.errors import QmailkitError

__all__ = ["CI", "ENTRY_POINTS", "free_port", "need", "run", "wait_for"]

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

T = TypeVar("T")

# The installed commands, run as the console scripts run them (pyproject [project.scripts]).
ENTRY_POINTS = {
    "qmailkit": "qmailkit.cli:main",
    "convert-multilog": "qmailkit.cli.logs:convert_multilog_main",
    "mkvalidrcptto": "qmailkit.cli.rcpt:mkvalidrcptto_main",
    "mkauth": "qmailkit.cli.auth:mkauth_main",
}


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


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a true value; fail the test after ``timeout`` s."""
    try:
        return fsutil.poll_or_fail(predicate, timeout, what, interval)
    except QmailkitError as err:
        raise AssertionError(err.message) from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 chosen by the OS (free at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(prog: str = "qmailkit") -> list[str]:
    """The argv prefix that runs the installed command ``prog`` with this interpreter."""
    module, func = ENTRY_POINTS[prog].split(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


def run(
    *args: str | os.PathLike[str],
    prog: str = "qmailkit",
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    drop_env: tuple[str, ...] = (),
    cwd: str | os.PathLike[str] | None = None,
    text: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run ``prog ARGS`` as an admin would: a new process, its output and exit code captured.

    ``env`` is added to this process's environment, ``drop_env`` names are
    removed from it; standard input is ``input`` (empty when None, never the
    terminal).
    """
    environ = dict(os.environ, **(env or {}))
    for name in drop_env:
        environ.pop(name, None)
    if input is None:
        input = "" if text else b""
    return subprocess.run(
        [*command(prog), *map(str, args)],
        input=input,
        capture_output=True,
        text=text,
        env=environ,
        cwd=None if cwd is None else Path(cwd),
        check=False,
        timeout=timeout,
    )
