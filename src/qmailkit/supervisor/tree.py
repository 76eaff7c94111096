"""A private supervision tree: a scanner we start in a directory and stop again.

``qmailkit demo`` and the test suite run real svscan, runsvdir and s6-svscan
in sandboxes.  None of the three has a "stop everything" command that also
ends its supervisors, so this module remembers every process the scanner
started and, at the end, signals exactly those, by PID — never by name, so
nothing else on the machine is touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from qmailkit.errors import QmailkitError
from qmailkit.fsutil import fifo_has_reader

T = TypeVar("T")

SCANNERS = {"daemontools": ["svscan"], "runit": ["runsvdir", "-P"], "s6": ["s6-svscan"]}


def poll(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Call ``predicate`` until it returns a true value; QmailkitError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise QmailkitError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


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
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


class ScanTree:
    """A scan directory with its running scanner (svscan, runsvdir or s6-svscan)."""

    def __init__(self, kind: str, root: Path, env: Mapping[str, str] | None = None) -> None:
        """Start the scanner on ``root``, with ``env`` (default: ours) as its environment."""
        if kind not in SCANNERS:
            raise QmailkitError(f"unknown supervisor {kind!r}", hint="daemontools, runit or s6")
        argv = SCANNERS[kind] + [str(root)]
        if shutil.which(argv[0]) is None:
            raise QmailkitError(f"{argv[0]} is not installed", hint=f"install {kind}")
        self.kind = kind
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.known: set[int] = set()
        if kind == "runit":
            argv.append("log: " + "." * 40)  # runsvdir's status line; -P needs the argument
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        if kind == "s6":
            # s6-svscanctl needs the scanner's control FIFO; it appears shortly after start
            poll(
                lambda: fifo_has_reader(root / ".s6-svscan" / "control"),
                10,
                "s6-svscan's control FIFO",
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
        # svscan rescans every 5 s and runsvdir notices a changed directory
        # within a second; neither has a rescan signal (ALRM would kill them).
        if self.kind == "s6":
            subprocess.run(["s6-svscanctl", "-a", str(self.root)], check=True)

    def wait_up(self, service: Path, timeout: float = 15.0) -> None:
        """Wait until ``service`` (and its log service, if any) is up."""
        from qmailkit import supervisor

        sup = supervisor.get(self.kind)
        dirs = [service] + ([service / "log"] if (service / "log").is_dir() else [])
        for d in dirs:
            poll(lambda d=d: sup.status(d).up, timeout, f"{d} to be up")
        self.remember()

    def stop(self) -> None:
        """Stop the scanner, its supervisors and their services; only processes it started."""
        self.remember()
        if self.proc.poll() is None:
            if self.kind == "daemontools":
                self.proc.send_signal(signal.SIGTERM)  # svscan alone; supervise stays
            elif self.kind == "runit":
                self.proc.send_signal(signal.SIGHUP)  # runsvdir stops every runsv
            else:
                subprocess.run(["s6-svscanctl", "-t", str(self.root)], check=False)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.kind == "daemontools":
            from qmailkit import supervisor

            sup = supervisor.get("daemontools")
            for entry in sorted(self.root.iterdir()):
                for d in (entry, entry / "log"):
                    if sup.is_supervised(d):
                        sup.control(d, "dx")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p) for p in self.known):
            time.sleep(0.02)
        for pid in self.known:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        poll(lambda: not any(alive(p) for p in self.known), 10, "the tree's processes to end")
