"""Whether qmail-send needs a HUP, the guards that refuse one, and the record of each HUP.

On SIGHUP qmail-send rereads only ``control/locals`` and
``control/virtualdomains`` (running-qmail.md 0.1, A.4).  ``run()`` makes one
decision and acts on it:

* **who**: only the process holding the flock on ``queue/lock/sendmutex`` whose
  comm is ``qmail-send`` (``qmailkit.qmail.send``).  No holder means qmail-send
  is down: nothing is sent, it reads the files when it starts.
* **when**: the *effective* content (as qmail's control_readfile reads it:
  empty and ``#`` lines dropped, trailing newline, spaces and tabs stripped, a
  CR kept) is hashed (sha256).  A HUP is needed when that digest differs from
  the one recorded for the running qmail-send (at its last HUP, or at its
  start); with no record for it, when the files' ctime is later than its start
  time (less START_MARGIN, so a doubt means a HUP: the lock holder has its
  handler, a needless HUP costs nothing, a missed one loses mail).  So a
  comment-only edit HUPs nothing, and ``rsync -a`` keeping an old mtime is
  still seen.
* **guards** (checked when a HUP is needed; issue 11 section 3):

  ===========================================  ============  ======================
  refusal                                      ``force``     why
  ===========================================  ============  ======================
  locals empty (or locals and me both missing)  overrides     every local mail bounces
  locals lost more than half its domains        overrides     likely a truncated file
  a CR in locals, virtualdomains or rcpthosts   never         qmail keeps it: the name
                                                              never matches; fix the file
  a virtualdomains line without a colon         never         qmail ignores the line: the
                                                              domain silently stops being
                                                              virtual; fix the file
  ===========================================  ============  ======================

  A missing ``control/rcpthosts`` is no HUP matter (qmail-smtpd reads it per
  connection) but an open relay: every result carries it in ``errors`` and
  nothing overrides it; the command exits 100 while it lasts.

The record (``STATE_DIR/hup.json``, written atomically) holds the pid and
start time of the qmail-send it describes, the digest it has, and its locals
domains (the base of the shrink guard).  A record that is missing, corrupt or
of another version is ignored, never trusted.

This module's ``effective_lines`` belongs in ``qmailkit.qmail.control`` (whose
reader strips a CR, unlike qmail); it lives here until it moves.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from qmailkit import fsutil
from qmailkit.errors import QmailkitError, os_error
from qmailkit.qmail import send
from qmailkit.qmail.send import Holder, HolderChanged

RECORD_NAME = "hup.json"
RECORD_VERSION = 1
#: a HUP is refused when locals lost more than this share of the domains of the last HUP
MAX_LOCALS_LOSS = 0.5
#: seconds: a file changed this long before qmail-send's start still counts as after it
START_MARGIN = 1.0
#: HUP attempts when the holder changes between the decision and the signal
ATTEMPTS = 3

# -- reading the files, as qmail does ------------------------------------------


def numbered_lines(data: bytes) -> list[tuple[int, bytes]]:
    """control_readfile's lines with their 1-based numbers: trailing ``\\n``, space and tab
    stripped (a CR is kept, as qmail keeps it), empty lines and ``#`` lines dropped."""
    out = []
    for number, line in enumerate(data.split(b"\n"), 1):
        line = line.rstrip(b" \t")
        if line and not line.startswith(b"#"):
            out.append((number, line))
    return out


def effective_lines(data: bytes) -> list[bytes]:
    """The lines qmail uses from a control file's bytes (see numbered_lines)."""
    return [line for _number, line in numbered_lines(data)]


@dataclass(frozen=True)
class ControlFile:
    """One control file as qmail sees it; ``lines`` is None when the file is missing."""

    path: str
    lines: tuple[tuple[int, bytes], ...] | None
    ctime: float | None

    @property
    def values(self) -> list[bytes]:
        return [line for _number, line in self.lines or ()]


def read_control_file(path: str, *, first_line_only: bool = False) -> ControlFile:
    """Read ``path`` (a regular file, bounded); a missing one gives ``lines=None``."""
    try:
        data = fsutil.read_bounded(path)
        ctime = os.stat(path).st_ctime
    except FileNotFoundError:
        return ControlFile(path, None, None)
    if first_line_only:  # control/me: qmail takes its first line
        data = data.split(b"\n", 1)[0]
    return ControlFile(path, tuple(numbered_lines(data)), ctime)


@dataclass(frozen=True)
class HupInputs:
    """What a HUP would make qmail-send read, and rcpthosts for the relay check."""

    locals: ControlFile  # control/locals, or control/me when locals is missing
    virtualdomains: ControlFile
    rcpthosts: ControlFile
    control_dir_ctime: float

    @property
    def locals_from_me(self) -> bool:
        return os.path.basename(self.locals.path) == "me"

    @property
    def digest(self) -> str:
        """sha256 of the effective content of locals (or me) and virtualdomains."""
        h = hashlib.sha256()
        for name, cf in (
            (b"me" if self.locals_from_me else b"locals", self.locals),
            (b"virtualdomains", self.virtualdomains),
        ):
            body = b"\n".join(cf.values) if cf.lines is not None else b"(missing)"
            h.update(name + b"\0" + body + b"\0")
        return h.hexdigest()

    @property
    def changed_at(self) -> float:
        """The latest ctime among the files a HUP reads; a missing file counts by its
        directory's ctime (its removal changed that)."""
        times = [
            cf.ctime if cf.ctime is not None else self.control_dir_ctime
            for cf in (self.locals, self.virtualdomains)
        ]
        return max(times)

    def locals_domains(self) -> list[str]:
        return sorted({v.decode("utf-8", "replace").lower() for v in self.locals.values})


def read_inputs(qmail_home: str | os.PathLike[str]) -> HupInputs:
    """Read locals (or me), virtualdomains and rcpthosts under ``QMAIL_HOME/control``."""
    control = os.path.join(os.fspath(qmail_home), "control")
    try:
        dir_ctime = os.stat(control).st_ctime
    except OSError as err:
        raise os_error(err, "cannot read the control directory") from err
    local_domains = read_control_file(os.path.join(control, "locals"))
    if local_domains.lines is None:  # qmail-send uses me when locals is missing
        local_domains = read_control_file(os.path.join(control, "me"), first_line_only=True)
    return HupInputs(
        local_domains,
        read_control_file(os.path.join(control, "virtualdomains")),
        read_control_file(os.path.join(control, "rcpthosts")),
        dir_ctime,
    )


# -- the guards -----------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """One reason not to HUP; ``overridable`` ones give way to ``force``."""

    reason: str
    path: str
    line: int | None = None
    overridable: bool = False

    @property
    def hint(self) -> str:
        return "check the file, then run again with --force" if self.overridable else "fix the file"

    def __str__(self) -> str:
        where = self.path + (f":{self.line}" if self.line is not None else "")
        return f"{where}: {self.reason} ({self.hint})"


def _cr_refusals(files: Sequence[ControlFile]) -> list[Refusal]:
    out = []
    for cf in files:
        for number, line in cf.lines or ():
            if b"\r" in line:
                out.append(
                    Refusal(
                        "contains a CR (a DOS line end?): qmail keeps it, the name never matches",
                        cf.path,
                        number,
                    )
                )
                break  # one per file: a CRLF file would repeat it on every line
    return out


def _locals_refusals(inputs: HupInputs, previous: Sequence[str] | None) -> list[Refusal]:
    cf = inputs.locals
    if not cf.values:
        what = "is empty" if cf.lines is not None else "is missing, and so is control/locals"
        return [
            Refusal(
                f"{what}: qmail-send would treat no domain as local and bounce all local mail",
                cf.path,
                overridable=True,
            )
        ]
    if previous:
        now = set(inputs.locals_domains())
        lost = [d for d in previous if d not in now]
        if len(lost) > len(previous) * MAX_LOCALS_LOSS:
            return [
                Refusal(
                    f"lost {len(lost)} of the {len(previous)} domains of the last HUP "
                    f"(more than {MAX_LOCALS_LOSS:.0%}), e.g. {lost[0]}",
                    cf.path,
                    overridable=True,
                )
            ]
    return []


def _virtualdomains_refusals(cf: ControlFile) -> list[Refusal]:
    return [
        Refusal("line has no colon: qmail-send ignores it (write DOMAIN:PREFIX)", cf.path, number)
        for number, line in cf.lines or ()
        if b":" not in line
    ]


def refusals(inputs: HupInputs, previous_locals: Sequence[str] | None) -> list[Refusal]:
    """Every guard that refuses a HUP with these files, ``force`` or not.

    ``previous_locals`` are the domains recorded at the last HUP (None: no record).
    """
    return [
        *_locals_refusals(inputs, previous_locals),
        *_cr_refusals([inputs.locals, inputs.virtualdomains, inputs.rcpthosts]),
        *_virtualdomains_refusals(inputs.virtualdomains),
    ]


def relay_errors(inputs: HupInputs) -> list[str]:
    """Problems that are no HUP matter but must be reported: a missing rcpthosts."""
    if inputs.rcpthosts.lines is None:
        return [
            f"{inputs.rcpthosts.path}: is missing: qmail-smtpd accepts mail for every domain "
            "(an open relay) (create it with the domains this host receives mail for)"
        ]
    return []


# -- the record -------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What one qmail-send (pid + start ticks) has read: at a HUP, or at its start."""

    pid: int
    start_ticks: int
    digest: str
    locals: tuple[str, ...]
    time: float
    event: str  # "hup" or "start"

    def describes(self, found: Holder) -> bool:
        return (self.pid, self.start_ticks) == (found.pid, found.start_ticks)


def load_record(state_dir: str | os.PathLike[str]) -> Record | None:
    """The record in ``state_dir``; None if missing, unreadable, corrupt or of another version."""
    try:
        data = json.loads(fsutil.read_bounded(os.path.join(state_dir, RECORD_NAME), 1 << 20))
        if data.get("version") != RECORD_VERSION:
            return None
        return Record(
            int(data["pid"]),
            int(data["start_ticks"]),
            str(data["digest"]),
            tuple(str(d) for d in data["locals"]),
            float(data["time"]),
            str(data["event"]),
        )
    except (OSError, QmailkitError, ValueError, TypeError, KeyError, AttributeError):
        return None


def save_record(state_dir: str | os.PathLike[str], record: Record) -> None:
    """Write ``record`` to ``state_dir/hup.json`` (the directory made private if new)."""
    fsutil.private_dir(state_dir)
    data = {"version": RECORD_VERSION, **record.__dict__, "locals": list(record.locals)}
    with fsutil.atomic_file(os.path.join(state_dir, RECORD_NAME), mode=0o600) as fh:
        fh.write(json.dumps(data, indent=1, sort_keys=True).encode() + b"\n")


# -- decisions and results ------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """A HUP is needed and allowed (what ``dry_run`` returns instead of sending)."""

    holder: Holder
    reason: str
    overridden: tuple[Refusal, ...] = ()
    errors: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"would hup qmail-send pid {self.holder.pid}: {self.reason}"


@dataclass(frozen=True)
class Sent:
    """SIGHUP was sent to qmail-send ``pid`` (and recorded)."""

    pid: int
    reason: str
    overridden: tuple[Refusal, ...] = ()  # refusals ``force`` overrode: say so
    errors: tuple[str, ...] = ()

    def __str__(self) -> str:
        forced = "".join(f"; forced past: {r}" for r in self.overridden)
        return f"hup qmail-send pid {self.pid}: {self.reason}{forced}"


@dataclass(frozen=True)
class NotNeeded:
    """No HUP: qmail-send is down, or already has this content."""

    reason: str
    errors: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"no hup: {self.reason}"


@dataclass(frozen=True)
class Refused:
    """A HUP is needed but guards refuse it; ``overridable`` when ``force`` would send it."""

    pid: int
    refusals: tuple[Refusal, ...]
    errors: tuple[str, ...] = ()

    @property
    def overridable(self) -> bool:
        return all(r.overridable for r in self.refusals)

    def __str__(self) -> str:
        return f"hup of qmail-send pid {self.pid} refused: " + "; ".join(map(str, self.refusals))


Decision = Send | NotNeeded | Refused
Result = Sent | NotNeeded | Refused


def _need(inputs: HupInputs, found: Holder, record: Record | None) -> str | None:
    """Why ``found`` needs a HUP with ``inputs``, or None if it has this content."""
    if record is not None and record.describes(found):
        if record.digest == inputs.digest:
            return None
        return f"locals/virtualdomains changed since its {record.event}"
    if inputs.changed_at > found.start_time - START_MARGIN:
        return "locals/virtualdomains changed after it started"
    return None


def decide(
    inputs: HupInputs, found: Holder | None, record: Record | None, *, force: bool = False
) -> Decision:
    """The decision for these files, lock holder and record (no I/O)."""
    errors = tuple(relay_errors(inputs))
    if found is None:
        return NotNeeded("qmail-send is not running; it reads the files when it starts", errors)
    if not found.is_qmail_send:
        return NotNeeded(
            f"the lock is held by pid {found.pid} ({found.comm!r}), not qmail-send: "
            "qmail-send is not running",
            errors,
        )
    why = _need(inputs, found, record)
    if why is None:
        return NotNeeded(f"qmail-send pid {found.pid} already has this content", errors)
    found_refusals = refusals(inputs, record.locals if record is not None else None)
    blocking = tuple(r for r in found_refusals if not (force and r.overridable))
    if blocking:
        return Refused(found.pid, blocking, errors)
    return Send(found, why, tuple(found_refusals), errors)


def _record(inputs: HupInputs, found: Holder, event: str) -> Record:
    return Record(
        found.pid,
        found.start_ticks,
        inputs.digest,
        tuple(inputs.locals_domains()),
        time.time(),
        event,
    )


def run(
    qmail_home: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    dry_run: bool = False,
) -> Result | Send:
    """Decide, and HUP qmail-send if needed and allowed; record it in ``state_dir``.

    ``dry_run`` returns the decision (a ``Send`` for a HUP it would send) and
    writes nothing.  If the holder changes between decision and signal (a
    restart), the decision is made again for the new one.  A qmail-send found
    with no record and no later change gets a "start" record, so its next
    decisions compare digests.
    """
    inputs = read_inputs(qmail_home)
    record = load_record(state_dir)
    for _attempt in range(ATTEMPTS):
        found = send.lock_holder(qmail_home)
        decision = decide(inputs, found, record, force=force)
        if dry_run:
            return decision
        if not isinstance(decision, Send):
            if (
                isinstance(decision, NotNeeded)
                and found is not None
                and found.is_qmail_send
                and not (record and record.describes(found))
            ):
                save_record(state_dir, _record(inputs, found, "start"))
            return decision
        fsutil.private_dir(state_dir)  # unusable: say so before signalling, not after
        try:
            send.hup(decision.holder)
        except HolderChanged:
            continue
        save_record(state_dir, _record(inputs, decision.holder, "hup"))
        return Sent(decision.holder.pid, decision.reason, decision.overridden, decision.errors)
    raise QmailkitError(
        f"qmail-send changed {ATTEMPTS} times while being signalled",
        path=os.path.join(os.fspath(qmail_home), send.SENDMUTEX),
        hint="it is restarting; run again when it has settled",
    )


__all__ = [
    "ControlFile",
    "Decision",
    "HupInputs",
    "NotNeeded",
    "Record",
    "Refusal",
    "Refused",
    "Result",
    "Send",
    "Sent",
    "decide",
    "effective_lines",
    "load_record",
    "numbered_lines",
    "read_inputs",
    "refusals",
    "relay_errors",
    "run",
    "save_record",
]
