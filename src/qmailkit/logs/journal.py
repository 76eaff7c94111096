"""convert-multilog's commit protocol: nothing lost, nothing written twice, whenever it dies.

Per batch of input files of a service, with one journal per service in
``LOGDIR/.convert-multilog/SERVICE.journal`` (replaced atomically):

1. before a day file is first touched, the journal records its size (or that
   it did not exist) together with the batch's input names;
2. the lines are appended, the day files fsync'd (and their directory, for new files);
3. the journal is marked done (it keeps the continuation state);
4. the inputs are deleted or renamed, and their directory fsync'd;
5. the journal forgets the names (a later input of the same name is new work).

A run that finds a journal not marked done cuts every recorded day file back
to its recorded size (``cut_back_day_files``) and converts the inputs again;
one marked done only finishes step 4.  So a kill -9 at any instant, a full
disk or an unopenable day file never loses a line or writes one twice.

The journals tell a run which files to cut back and remove, so their
directory must be a real one only root can use (``state_dir``), and a journal
naming anything but this service's rotated files and day files is refused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from qmailkit import fsutil
from qmailkit.errors import QmailkitError
from qmailkit.logs import logdir
from qmailkit.workers import write_all

STATE_DIR = ".convert-multilog"

Log = Callable[[str], None]


def state_dir(log_dir: Path) -> Path:
    """``LOGDIR/.convert-multilog``: the lock and the journals.

    A real directory owned by this user (root) with mode 0700, or the run is
    refused: its journals say which files to cut back and remove, so one that
    others could replace (LOGDIR may be group-writable) must not be used.
    """
    path = Path(log_dir) / STATE_DIR
    if not Path(log_dir).is_dir():
        raise QmailkitError(
            "the log directory does not exist", path=log_dir, hint="create it or give --log-dir"
        )
    try:
        return Path(fsutil.private_dir(path))
    except OSError as err:  # mkdir refused
        raise QmailkitError(
            f"cannot create the state directory: {err.strerror}",
            path=path,
            hint="is the log directory writable by this user?",
        ) from None


@dataclass
class JournalState:
    """What a journal says.  ``last`` is kept across batches and runs; the rest is one batch's."""

    last: str | None = None  # date of the last dated line (where continuation lines go)
    inputs: list[str] = field(default_factory=list)  # the batch's input names
    sizes: dict[str, int] = field(default_factory=dict)  # day file -> size before (-1: absent)
    done: bool = False  # the batch's lines are durable: only its inputs are left to remove
    source: str | None = None  # a retired service directory's name; None: the live one

    def to_json(self) -> bytes:
        """The journal file's bytes: the keys that say something, and ``last`` always."""
        fields: dict[str, object] = {"last": self.last}
        if self.inputs:
            fields["inputs"] = self.inputs
        if self.sizes:
            fields["sizes"] = self.sizes
        if self.done:
            fields["done"] = True
        if self.source is not None:
            fields["dir"] = self.source
        return json.dumps(fields, sort_keys=True).encode()


class Journal:
    """One service's journal and the protocol steps that go through it.

    ``out_dir`` holds the day files; ``keep_inputs`` renames converted inputs to
    ``FILE.done`` instead of removing them.
    """

    LIMIT = 1 << 20  # a journal names at most a batch's inputs and their day files

    def __init__(self, log_dir: Path, service: str, keep_inputs: bool = False) -> None:
        self.out_dir = Path(log_dir)
        self.path = self.out_dir / STATE_DIR / f"{service}.journal"
        self.service = service
        self.keep_inputs = keep_inputs

    # -- the file -----------------------------------------------------------------
    def read(self) -> JournalState:
        """The journal's state (an empty one if there is none); QmailkitError if it is bad."""
        try:
            raw = json.loads(fsutil.read_bounded(self.path, self.LIMIT, follow=False))
        except FileNotFoundError:
            return JournalState()
        except QmailkitError as err:
            raise self._unreadable(err.message) from None
        except ValueError as err:
            raise self._unreadable(str(err)) from None
        problem = self._problem(raw)
        if problem:
            raise QmailkitError(
                f"journal {problem}; nothing done",
                path=self.path,
                hint="convert-multilog did not write this: check it by hand; if no run was "
                "interrupted, remove it",
            )
        return JournalState(
            last=raw.get("last"),
            inputs=raw.get("inputs", []),
            sizes=raw.get("sizes", {}),
            done=raw.get("done", False),
            source=raw.get("dir"),
        )

    def _unreadable(self, why: str) -> QmailkitError:
        return QmailkitError(
            f"cannot read the journal: {why}",
            path=self.path,
            hint="if no other run is active, check it by hand; removing it may duplicate lines",
        )

    def _problem(self, raw: object) -> str | None:
        """What is wrong with a journal's content, or None."""
        if not isinstance(raw, dict):
            return "is not a JSON object"
        problem = self._names_problem(raw.get("inputs", []), raw.get("sizes", {}))
        if problem:
            return problem
        last = raw.get("last")
        if last is not None and not (isinstance(last, str) and logdir.DATE.match(last)):
            return f"has a bad date {_short(last)}"
        if not isinstance(raw.get("done", False), bool):
            return "has a bad done flag"
        source = raw.get("dir")
        if source is not None:
            retired = logdir.retired_name(source) if isinstance(source, str) else None
            if retired is None or retired[0] != self.service:
                return f"names a directory {_short(source)} that is not a retired {self.service}"
        return None

    def _names_problem(self, inputs: object, sizes: object) -> str | None:
        """What is wrong with the inputs and day files a journal names, or None."""
        if not isinstance(inputs, list):
            return "has inputs that are not a list"
        for name in inputs:
            if not (isinstance(name, str) and logdir.is_rotated_name(name)):
                return f"names an input {_short(name)} that is not a rotated file name"
        if not isinstance(sizes, dict):
            return "has sizes that are not an object"
        for out, size in sizes.items():
            if logdir.day_file_date(out, self.service) is None:
                return f"names a day file {_short(out)} that is not {self.service}.YYYY-MM-DD"
            if type(size) is not int or size < -1:
                return f"has a bad size {_short(size)} for {out}"
        return None

    def write(self, state: JournalState) -> None:
        fsutil.atomic_write(self.path, state.to_json(), mode=0o600)

    # -- the protocol -----------------------------------------------------------------
    def recover(self, dirs: tuple[Path, ...], live: Path | None, log: Log, warn: Log) -> Recovered:
        """Finish or undo what an interrupted run left, as the journal says.

        ``dirs`` are the service's directories, ``live`` the one in the scan
        directory (None: only retired ones are left).
        """
        fsutil.remove_stale_temps(self.path)
        state = self.read()
        if not state.inputs:
            return Recovered(state.last, None)
        # (no "dir" and no live service: it was retired since, and its files went with it)
        if state.source:
            sdir = next((d for d in dirs if d.name == state.source), None)
        else:
            sdir = live or dirs[-1]
        main = sdir / "log" / "main" if sdir is not None else None
        inputs = [main / name for name in state.inputs] if main else []
        if state.done:
            left = [path for path in inputs if os.path.lexists(path)]
            for src in left:
                log(f"Finishing {src} (converted by an interrupted run)")
                self.dispose(src)
            if main is not None and left:
                fsutil.fsync_dir(main)
            return Recovered(state.last, sdir)
        if main is None:
            gone = state.source or "log/main"
            warn(f"{gone}: gone while a run converting its files was interrupted")
        for src in inputs:
            if not os.path.lexists(src):
                warn(f"{src} was removed while a run converting it was interrupted")
        log(
            f"Undoing the interrupted conversion of {len(state.inputs)} file(s) in "
            f"{main or state.source}"
        )
        cut_back_day_files(self.out_dir, state.sizes)
        self.write(JournalState(state.last))
        return Recovered(state.last, sdir)

    def dispose(self, src: Path) -> str:
        """Remove a converted input (or rename it ``FILE.done``); how, in a word."""
        if self.keep_inputs:
            os.rename(src, f"{src}.done")
            return "renamed"
        os.unlink(src)
        return "removed"

    def begin(
        self,
        inputs: Iterable[Path],
        last: str | None,
        source: str | None,
        new_files: DayFileSettings,
    ) -> Batch:
        """A batch over ``inputs`` (``last``: the continuation state before it)."""
        return Batch(self, [path.name for path in inputs], last, source, new_files)


@dataclass(frozen=True)
class Recovered:
    """What recovery leaves: the continuation state, and the directory it worked in."""

    last: str | None
    source_dir: Path | None


@dataclass(frozen=True)
class DayFileSettings:
    """How new day files are made: this mode, and this owner when run as root."""

    mode: int = 0o640
    owner: tuple[int, int] | None = None


def cut_back_day_files(out_dir: Path, sizes: dict[str, int]) -> None:
    """Cut day files back to the given sizes (-1: remove); durable on return."""
    for out, size in sizes.items():
        target = out_dir / out
        if size < 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)  # a name: a symlink planted there is removed, not followed
            continue
        try:
            fd = fsutil.open_append(target)  # ftruncate works on it; never through a symlink
        except FileNotFoundError:
            continue
        except fsutil.NotRegular as err:
            raise fsutil.NotRegular(
                f"{err.message}; cannot cut it back to {size} bytes",
                path=target,
                hint="day files must be regular files: remove it, then run again",
            ) from None
        try:
            if os.fstat(fd).st_size > size:
                os.ftruncate(fd, size)
                os.fsync(fd)
        finally:
            os.close(fd)
    fsutil.fsync_dir(out_dir)


#: (input, [(date, lines added)]) for each input of a batch converted whole
Converted = list[tuple[Path, list[tuple[str, int]]]]


class CommitReport(Protocol):
    """Who hears about a batch's inputs as they are committed (the conversion's messages)."""

    def committed(self, src: Path, added: list[tuple[str, int]]) -> None: ...

    def disposed(self, src: Path, added: list[tuple[str, int]], how: str) -> None: ...


class Batch:
    """The day files one batch appends to: journalled before first touch, made durable,
    committed, or cut back.  Close it (``close``) when done."""

    def __init__(
        self,
        journal: Journal,
        inputs: list[str],
        last: str | None,
        source: str | None,
        new_files: DayFileSettings,
    ) -> None:
        self.journal = journal
        self.out_dir = journal.out_dir
        self.inputs = inputs
        self.last_before = last
        self.source = source
        self.new_files = new_files
        self.reading: Path | None = None  # the input being converted, for messages
        self.sizes: dict[str, int] = {}  # day file -> size before the batch (-1: absent)
        self.fds: dict[str, int] = {}
        self.ends: dict[str, int] = {}  # day file -> its size now
        self.created = False  # a day file was made or removed: fsync their directory

    def append(self, lines_by_date: dict[str, list[bytes]]) -> None:
        """Append each date's lines to its day file, journalling first-touched files first."""
        service = self.journal.service
        new = [date for date in lines_by_date if logdir.day_file(service, date) not in self.sizes]
        if new:
            for date in new:
                out = logdir.day_file(service, date)
                # an existing day file is opened (not written) before its size is journalled
                fd = self._open_existing(out)
                self.sizes[out] = -1 if fd is None else self.ends[out]
            self.journal.write(
                JournalState(
                    self.last_before, inputs=self.inputs, sizes=self.sizes, source=self.source
                )
            )
        for date, texts in lines_by_date.items():
            out = logdir.day_file(service, date)
            fd = self.fds.get(out)
            if fd is None:
                fd = self._open_or_create(out)
            data = b"".join(texts) if len(texts) > 1 else texts[0]
            self.ends[out] += len(data)  # counted first: a partial write is cut back too
            try:
                write_all(fd, data)
            except OSError as err:
                raise self.day_file_error(out, err) from None

    def _open_existing(self, out: str) -> int | None:
        """Open a day file for appending; None if it does not exist.

        Only a regular file, never through a symlink."""
        try:
            fd = fsutil.open_append(self.out_dir / out)
        except FileNotFoundError:
            return None
        except (OSError, QmailkitError) as err:
            raise self.day_file_error(out, err) from None
        return self._track(out, fd)

    def _open_or_create(self, out: str) -> int:
        """Open a day file for appending; a new one is made O_EXCL with the run's mode and owner."""
        fd = self._open_existing(out)
        if fd is not None:
            return fd
        try:
            fd = self._create(self.out_dir / out)
        except (OSError, QmailkitError) as err:
            raise self.day_file_error(out, err) from None
        return self._track(out, fd)

    def _track(self, out: str, fd: int) -> int:
        self.fds[out] = fd
        self.ends[out] = os.fstat(fd).st_size
        return fd

    def _create(self, path: Path) -> int:
        fd = fsutil.open_append(path, create_mode=0o600)
        self.created = True
        try:
            if self.new_files.owner is not None and os.geteuid() == 0:
                os.fchown(fd, *self.new_files.owner)
            os.fchmod(fd, self.new_files.mode)  # after chown, which may clear set-id bits
        except OSError:
            os.close(fd)
            raise
        return fd

    def day_file_error(self, out: str, err: OSError | QmailkitError) -> QmailkitError:
        """An error of a day file, named as such (not the input's)."""
        reason = err.message if isinstance(err, QmailkitError) else err.strerror or str(err)
        hint = "the input is kept and converted on the next run"
        if isinstance(err, fsutil.NotRegular):
            hint = "day files must be regular files: remove it or move it away; " + hint
        elif isinstance(err, OSError) and err.errno == errno.ENOSPC:
            hint = f"free some space in {self.out_dir}; " + hint
        return QmailkitError(
            f"{reason} (while converting {self.reading})", path=self.out_dir / out, hint=hint
        )

    def mark(self) -> dict[str, int]:
        """Where the day files end now: what ``cut_back`` returns to."""
        return dict(self.ends)

    def cut_back(self, mark: dict[str, int]) -> bool:
        """Undo the appends since ``mark``; False if that failed too (the journal then
        still says to undo the whole batch, which the next run does)."""
        try:
            for out, fd in self.fds.items():
                size = mark.get(out, self.sizes[out])
                if size < 0:
                    os.unlink(self.out_dir / out)
                    self.created = True  # the directory changed: fsync it at commit
                else:
                    os.ftruncate(fd, size)
                self.ends[out] = max(size, 0)
        except OSError:
            return False
        return True

    def sync(self) -> None:
        """Make the batch's appends durable (step 2).

        A day file's failed fsync is a QmailkitError naming it (the journal
        still says to undo the batch); a failed directory fsync is an OSError.
        """
        for out, fd in self.fds.items():
            try:
                os.fsync(fd)
            except OSError as err:
                raise self.day_file_error(out, err) from None
        if self.created:
            fsutil.fsync_dir(self.out_dir)

    def commit(
        self, converted: Converted, last: str | None, source_dir: Path, report: CommitReport
    ) -> None:
        """Steps 3 to 5 for the (durable) ``converted`` inputs; ``last``: the state after them.

        ``report.committed`` hears of each input before it goes, ``report.disposed`` after.
        """
        self.journal.write(
            JournalState(
                last, inputs=[src.name for src, _ in converted], done=True, source=self.source
            )
        )
        for src, added in converted:
            report.committed(src, added)
            report.disposed(src, added, self.journal.dispose(src))
        fsutil.fsync_dir(source_dir)
        # forget the names: a later file of the same name must not count as converted
        self.journal.write(JournalState(last))

    def abandon(self) -> None:
        """Cut every day file back and forget the batch, as far as possible (the journal
        keeps saying to undo it if this fails)."""
        with contextlib.suppress(OSError, QmailkitError):
            cut_back_day_files(self.out_dir, self.sizes)
            self.journal.write(JournalState(self.last_before))

    def forget_cut_back(self) -> None:
        """After every input failed and was cut back: make that durable, then forget it."""
        if not self.sizes:
            return
        with contextlib.suppress(OSError, QmailkitError):
            self.sync()
            self.journal.write(JournalState(self.last_before))

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
