"""``qmailkit update --watch``: a pass at start, then a pass on every batch of changes.

The watcher (``update.watch.Watcher``) is entered first and the full pass made
after, so nothing changed between the two is missed.  It watches, never
recursively, every directory holding a source of the last pass (control/,
users/, the passwd file's, ~alias, each home and vpopmail domain, each rules
file's), renewed after every pass.  A batch of paths makes a pass limited to
the targets those paths feed (and the HUP decision); a rescan batch (queue
overflow, a directory appearing or vanishing, the periodic tick, a switch to
polling) makes a full pass.  A refusal or failure is logged and retried on
the next change, never fatal.  SIGTERM (and SIGINT) end the loop between
passes; a kill -9 loses nothing (the state is written after each install).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType

from qmailkit.update.run import Pass, run_pass
from qmailkit.update.settings import Settings
from qmailkit.update.targets import Gather, Target
from qmailkit.update.watch import Watcher

#: seconds between checks for a stop request while idle
STOP_CHECK = 0.5


def _sync_dirs(watcher: Watcher, wanted: set[str]) -> None:
    have = set(watcher.dirs)
    for directory in sorted(wanted - have):
        watcher.add_dir(directory)
    for directory in sorted(have - wanted):
        watcher.remove_dir(directory)


def affected(paths: frozenset[str]) -> Callable[[Target, Gather], bool]:
    """Whether a target reads one of ``paths`` (or lists the directory holding one)."""
    parents = {os.path.dirname(p) for p in paths}

    def take(target: Target, g: Gather) -> bool:
        return bool(paths & g.found.keys()) or any(d + "/" in g.found for d in parents)

    return take


def watch(
    settings: Settings,
    *,
    force: bool = False,
    emit: Callable[[Pass], None],
    say: Callable[[str], None] = print,
    watcher: Watcher | None = None,
) -> int:
    """Run until SIGTERM or SIGINT; returns 0."""
    stopping: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with watcher or Watcher() as w:
            if w.fallback_reason:
                say(f"watch: {w.fallback_reason}")
            result = run_pass(settings, force=force, lock_wait=True)
            emit(result)
            _sync_dirs(w, result.dirs)
            while not stopping:
                batch = w.next_batch(timeout=STOP_CHECK)
                if batch is None:
                    continue
                only = None
                if batch.needs_rescan:
                    say("rescan: " + "; ".join(batch.rescan))
                else:
                    only = affected(batch.paths)
                result = run_pass(settings, force=force, only=only, lock_wait=True)
                emit(result)
                _sync_dirs(w, result.dirs)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    say("exiting")
    return 0
