"""A private supervision tree: a scanner we start in a directory and stop again.

``qmailkit demo`` and the test suite run real svscan, runsvdir and s6-svscan
in sandboxes.  None of the three has a "stop everything" command that also
ends its supervisors, so this module remembers every process the scanner
started and, at the end, signals exactly those, by PID — never by name, so
nothing else on the machine is touched.  How each scanner is started, told and
stopped is its suite's knowledge (``qmailkit.supervisor``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from qmailkit import fsutil, supervisor
from qmailkit.errors import QmailkitError


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields follow the last ')'
    return stat[stat.rindex(b")") + 2 :].split()


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for kid in parents.get(todo.pop(), ()):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie child of ours is reaped and counts as gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return False
    if fields[0] == b"Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


class ScanTree:
    """A scan directory with its running scanner (svscan, runsvdir or s6-svscan)."""

    def __init__(self, kind: str, root: Path, env: Mapping[str, str] | None = None) -> None:
        """Start the scanner on ``root``, with ``env`` (default: ours) as its environment."""
        if kind not in supervisor.KINDS:
            raise QmailkitError(
                f"unknown supervisor {kind!r}", hint="use one of: " + ", ".join(supervisor.KINDS)
            )
        self.suite = supervisor.get(kind)
        argv = self.suite.scanner_argv(root)
        if shutil.which(argv[0]) is None:
            raise QmailkitError(
                f"{argv[0]} is not installed", hint=f"install {self.suite.packages[argv[0]]}"
            )
        self.kind = kind
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.known: set[int] = set()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        fsutil.poll_or_fail(
            lambda: self.suite.scanner_ready(root), 10, f"{argv[0]} to take commands"
        )

    def remember(self) -> None:
        """Record the scanner's current descendants, to stop them later."""
        self.known |= descendants(self.proc.pid)

    def add(self, service_dir: Path, name: str | None = None) -> Path:
        """Link a service directory into the scan dir and make the scanner see it."""
        link = self.root / (name or service_dir.name)
        link.symlink_to(service_dir)
        self.rescan()
        return link

    def rescan(self) -> None:
        # s6-svscan is told; svscan and runsvdir look every 5 s by themselves (neither
        # has a rescan command: ALRM would kill them)
        self.suite.rescan(self.root)

    def wait_up(self, service: Path, timeout: float = 15.0) -> None:
        """Wait until ``service`` (and its log service, if any) is up."""
        dirs = [service] + ([service / "log"] if (service / "log").is_dir() else [])
        for directory in dirs:
            fsutil.poll_or_fail(partial(self._up, directory), timeout, f"{directory} to be up")
        self.remember()

    def _up(self, directory: Path) -> bool:
        return self.suite.status(directory).up

    def stop(self) -> None:
        """Stop the scanner, its supervisors and their services; only processes it started."""
        self.remember()
        if self.proc.poll() is None:
            self.suite.stop_scanner(self.proc, self.root)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.suite.after_scanner(self.root)
        fsutil.poll(lambda: not any(alive(pid) for pid in self.known), 10)
        for pid in self.known:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        fsutil.poll_or_fail(
            lambda: not any(alive(pid) for pid in self.known), 10, "the tree's processes to end"
        )
