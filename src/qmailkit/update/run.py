"""One pass of ``qmailkit update``: rebuild what changed, in dependency order, then the HUP.

``run_pass(settings)`` takes the pass lock (``STATE_DIR/lock``: a cron run and
the service never run a pass at once), and for each target (``targets``):

1. gathers the digests of its sources (``State.digest``: a stat, and a hash
   only for a file whose stat moved);
2. compares them with those of its last successful build: every difference is
   a ``changed FILE`` line, and a missing target is pending too;
3. builds it (the builder's own guards and lock), then writes the state, so a
   kill at any later moment loses nothing: the next pass sees what is left.
   A guard's refusal (an ``InputError``) is logged with its reason and how to
   override it, and the target stays pending: the next pass tries again.

Then the files qmail-send reads only at start are compared with what the
running qmail-send read ("restart needed", never acted on), and
``update.hup.run`` decides on, guards and sends the HUP.

Each action is one line for the caller to print (``Pass.lines``); nothing is
printed here.  ``Pass.exit_code``: 0 done, 100 a guard refused something,
111 a temporary failure (a lock held, an I/O error).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from qmailkit.errors import EXIT_PERMANENT, EXIT_TEMPORARY, InputError, QmailkitError
from qmailkit.qmail import send
from qmailkit.update import hup, state
from qmailkit.update.settings import Settings
from qmailkit.update.state import State
from qmailkit.update.targets import RESTART_FILES, Gather, Target, targets

#: seconds a one-shot pass waits for another pass (the service's) to finish
PASS_LOCK_WAIT = 60.0


@dataclass
class Pass:
    """What one pass did: its log lines (``(level, text)``) and its outcome."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    refused: bool = False
    failed: bool = False
    rebuilt: list[str] = field(default_factory=list)
    sources: dict[str, set[str]] = field(default_factory=dict)  # target -> its source paths
    dirs: set[str] = field(default_factory=set)  # the directories holding them (to watch)

    def say(self, text: str, level: str = "action") -> None:
        self.lines.append((level, text))

    @property
    def exit_code(self) -> int:
        if self.failed:
            return EXIT_TEMPORARY
        return EXIT_PERMANENT if self.refused else 0


def pending(target: Target, found: dict[str, str], seen: dict[str, str]) -> list[str]:
    """The sources of ``target`` whose digest differs from its last build's, in order
    (a directory's listing as ``DIR/``); the target itself when it is missing."""
    changed = [p for p in found if seen.get(p) != found[p]]
    changed += [p for p in seen if p not in found]
    if not os.path.lexists(target.path):
        changed.append(target.path)
    return changed


def one_line(text: str) -> str:
    """A message as one log line (a multi-line one joined with "; ")."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def _build(target: Target, rec: state.TargetRecord, force: bool, result: Pass) -> bool:
    """Build ``target``; False when it was refused or failed (the record says why)."""
    start = time.monotonic()
    rec.time = time.time()
    try:
        built = target.build(force)
    except InputError as err:
        rec.result, rec.message = "refused", one_line(str(err))
        result.refused = True
        result.say(f"refused {target.path}: {rec.message}", "error")
        return False
    except QmailkitError as err:
        rec.result, rec.message = "failed", one_line(str(err))
        result.failed = True
        result.say(f"failed {target.path}: {rec.message}", "error")
        return False
    seconds = time.monotonic() - start
    rec.result = "built" if built.written else "unchanged"
    rec.keys, rec.seconds, rec.message, rec.built_time = built.keys, seconds, "", rec.time
    if built.written:
        result.say(f"rebuilt {target.path} {built.keys} keys in {seconds:.3f} s")
        result.rebuilt.append(target.name)
    else:
        result.say(f"unchanged {target.path} ({built.keys} keys): records the same", "info")
    return True


def _targets_pass(
    settings: Settings,
    st: State,
    result: Pass,
    *,
    force: bool,
    dry_run: bool,
    only: Callable[[Target, Gather], bool] | None,
) -> None:
    told: set[str] = set()
    for target in targets(settings):
        if not target.wanted():
            continue
        g = Gather(st)
        target.gather(g)
        result.sources[target.name] = set(g.found)
        result.dirs |= g.dirs
        if only is not None and not only(target, g):
            continue
        rec = st.record(target.name)
        changed = pending(target, g.found, rec.seen)
        if not changed and rec.result not in ("refused", "failed"):
            result.say(f"up to date {target.path}", "info")
            continue
        # a target refused before: only what changed since that attempt is news
        news = pending(target, g.found, rec.tried) if rec.tried else changed
        for path in news:
            if path not in told:
                told.add(path)
                result.say(f"missing {path}" if path == target.path else f"changed {path}")
        if dry_run:
            result.say(f"would rebuild {target.path}")
            continue
        if _build(target, rec, force, result):
            rec.seen, rec.tried = g.found, {}
        else:
            rec.tried = g.found
        st.save()  # after the install: a kill later loses nothing


def _restart_check(settings: Settings, st: State, result: Pass, dry_run: bool) -> None:
    """Report files qmail-send reads only at start that changed since it started."""
    control = os.path.join(settings.qmail_home, "control")
    now = {name: st.digest(os.path.join(control, name), control=True) for name in RESTART_FILES}
    found = send.holder(settings.qmail_home)
    holder = None if found is None else [found.pid, found.start_ticks]
    if found is None or holder is None or st.restart.get("holder") != holder:
        # down (it reads fresh files when it starts) or started since: what it read is now
        st.restart = {"holder": holder, "seen": now, "pending": []}
        return
    seen = st.restart.get("seen") or {}
    changed = [name for name in RESTART_FILES if seen.get(name) != now[name]]
    st.restart["pending"] = changed
    for name in changed:
        result.say(
            f"restart needed: control/{name} changed (qmail-send pid {found.pid} reads it "
            "only at start; restart it when convenient)"
        )


def _hup(settings: Settings, result: Pass, force: bool, dry_run: bool) -> None:
    decision = hup.run(settings.qmail_home, settings.state_dir, force=force, dry_run=dry_run)
    for error in decision.errors:
        result.refused = True
        result.say(f"error: {one_line(error)}", "error")
    if isinstance(decision, hup.Refused):
        result.refused = True
        how = "check, then run with --force" if decision.overridable else "fix the file"
        result.say(f"refused {one_line(str(decision))} [{how}]", "error")
    elif isinstance(decision, hup.NotNeeded):
        result.say(str(decision), "info")
    else:
        result.say(str(decision))


def run_pass(
    settings: Settings,
    *,
    force: bool = False,
    dry_run: bool = False,
    only: Callable[[Target, Gather], bool] | None = None,
    hup_too: bool = True,
    lock_wait: bool | float = PASS_LOCK_WAIT,
) -> Pass:
    """One pass (see the module doc); ``only`` limits it to the targets it accepts."""
    result = Pass()
    try:
        with state.lock(settings.state_dir, wait=lock_wait):
            st = state.load(settings.state_dir)
            _targets_pass(settings, st, result, force=force, dry_run=dry_run, only=only)
            if not dry_run:
                _restart_check(settings, st, result, dry_run)
                st.save()
            result.dirs.add(os.path.join(settings.qmail_home, "control"))
            if hup_too and settings.values["hup"]:
                _hup(settings, result, force, dry_run)
    except InputError as err:
        result.refused = True
        result.say(f"refused: {one_line(str(err))}", "error")
    except QmailkitError as err:
        result.failed = True
        result.say(f"failed: {one_line(str(err))}", "error")
    return result


# -- status ---------------------------------------------------------------------------------


def status(settings: Settings) -> dict[str, Any]:
    """Each target's last build, result, key count, pending sources; restart-needed files
    and the last HUP (read only: nothing is built, the state is not written)."""
    st = state.load(settings.state_dir)
    out: dict[str, Any] = {"targets": [], "restart_needed": [], "hup": None}
    for target in targets(settings):
        if not target.wanted():
            continue
        g = Gather(st)
        target.gather(g)
        rec = st.targets.get(target.name) or state.TargetRecord()
        out["targets"].append(
            {
                "name": target.name,
                "path": target.path,
                "result": rec.result,
                "last_attempt": rec.time,
                "last_built": rec.built_time,
                "keys": rec.keys,
                "seconds": rec.seconds,
                "message": rec.message,
                "pending": pending(target, g.found, rec.seen),
            }
        )
    out["restart_needed"] = [f"control/{n}" for n in st.restart.get("pending") or []]
    record = hup.load_record(settings.state_dir)
    if record is not None:
        out["hup"] = {"pid": record.pid, "time": record.time, "event": record.event}
    return out


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def status_lines(report: dict[str, Any]) -> Iterable[str]:
    """``status`` as text, one line per fact."""
    for t in report["targets"]:
        keys = "" if t["keys"] is None else f", {t['keys']} keys"
        line = f"{t['path']}: {t['result']} ({_when(t['last_attempt'])}{keys})"
        if t["message"]:
            line += f": {t['message']}"
        yield line
        for path in t["pending"]:
            yield f"  pending: {path}"
    for name in report["restart_needed"]:
        yield f"restart needed: {name} changed"
    h = report["hup"]
    if h is not None:
        yield f"last hup record: qmail-send pid {h['pid']} ({h['event']}, {_when(h['time'])})"
