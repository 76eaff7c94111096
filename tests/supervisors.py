"""Start and stop real svscan, runsvdir and s6-svscan trees in temp dirs.

Recipes from ../shared/reference/components.md §1.3-1.4.  Only processes this
module started (and their descendants) are ever signalled, by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import need, wait_for


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name may contain spaces/parens; ppid follows the last ')'
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for kid in _children(todo.pop()):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    state = stat[stat.rindex(b")") + 2 :].split()[0]
    if state == b"Z":
        try:  # our child (or re-parented to us): reap it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def _fifo_has_reader(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


class ScanTree:
    """A scan directory with its running scanner (svscan, runsvdir or s6-svscan)."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.known: set[int] = set()
        prog = {"daemontools": ["svscan"], "runit": ["runsvdir", "-P"], "s6": ["s6-svscan"]}[kind]
        need(prog[0])
        argv = prog + [str(root)]
        if kind == "runit":
            argv.append("log: " + "." * 40)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if kind == "s6":
            # s6-svscanctl needs the scanner's control FIFO; it appears shortly after start
            wait_for(lambda: _fifo_has_reader(root / ".s6-svscan" / "control"), 10,
                     what="s6-svscan control FIFO")

    def remember(self) -> None:
        """Record the current descendants so that they can be stopped later."""
        self.known |= descendants(self.proc.pid)

    def add(self, service_dir: Path, name: str | None = None) -> Path:
        """Link a service directory into the scan dir and make the scanner see it now."""
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
        """Wait until the supervisor of ``service`` (and of its log) answers."""
        from qmailkit import supervisor

        sup = supervisor.get(self.kind)
        dirs = [service] + ([service / "log"] if (service / "log").is_dir() else [])
        for d in dirs:
            wait_for(lambda d=d: sup.status(d).up, timeout, what=f"{d} up")
        self.remember()

    def stop(self) -> None:
        self.remember()
        if self.proc.poll() is None:
            if self.kind == "daemontools":
                self.proc.send_signal(signal.SIGTERM)
            elif self.kind == "runit":
                self.proc.send_signal(signal.SIGHUP)
            else:
                subprocess.run(["s6-svscanctl", "-t", str(self.root)], check=False)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.kind == "daemontools":
            for entry in sorted(self.root.iterdir()):
                for d in (entry, entry / "log"):
                    if (d / "supervise").is_dir():
                        subprocess.run(
                            ["svc", "-dx", str(d)], check=False, stderr=subprocess.DEVNULL
                        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in self.known):
            time.sleep(0.02)
        for pid in self.known:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        wait_for(lambda: not any(_alive(p) for p in self.known), 10, what="processes gone")


def start_scan(kind: str, root: Path) -> ScanTree:
    return ScanTree(kind, root)
