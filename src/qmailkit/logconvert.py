"""convert-multilog: rotated multilog files → ``LOGDIR/SERVICE.YYYY-MM-DD``, crash-safe.

For every service directory under the scan directory, each rotated file of
``SERVICE/log/main`` (oldest first) is converted like ``tai64nlocal`` and its
lines are appended to the day file of their local date; then the input is
deleted (or renamed ``FILE.done``).

Continuation lines (no label: a long line multilog split at a rotation, a
program that wrote a raw newline, a logger run without ``t``) go to the file of
the line before them; that state carries across the input files of a service
and across runs.  Continuation lines with no line before them (first run, or
the state was lost) go to the file of the first dated line after them in the
same input file, and if that file has no dated line at all, to the local date
of the file's rotation time (its ``@`` name).  Nothing is ever dropped.

Crash safety, per batch of input files of a service (up to 64 MB), with a
journal per service in ``LOGDIR/.convert-multilog/SERVICE.journal`` (replaced
atomically):

1. before a day file is first touched, the journal records its size (or that
   it did not exist) together with the batch's input names;
2. the lines are appended, the day files fsync'd (and the directory, for new files);
3. the journal is marked done (it keeps the continuation state);
4. the inputs are deleted or renamed, and their directory fsync'd.

A run that finds a journal not marked done cuts every recorded day file back
to its recorded size and converts the inputs again; one marked done only
finishes step 4.  So a kill -9 at any instant, a full disk or an unopenable
day file never loses a line or writes one twice.  When an append fails, that
input's lines are cut off at once and the inputs before it are committed.  A
lock (``LOGDIR/.convert-multilog/lock``) keeps two runs apart.

Runs as root over directories other accounts write (``log/main`` belongs to the
log user, LOGDIR may be group-writable): inputs are read only if they are
regular files (no symlink followed, no FIFO opened blocking, at most
``multilog.MAX_FILE`` bytes), day files are appended to only if they are
regular files (never through a symlink), the state directory must be a real
directory only root can use, and a journal naming anything but this service's
rotated files and day files is refused.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import re
import selectors
import signal
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qmailkit import fsutil, multilog, tai64n, workers
from qmailkit.errors import QmailkitError
from qmailkit.workers import write_all

STATE_DIR = ".convert-multilog"
LOCK_NAME = "lock"
#: how ``services apply --prune`` renames a retired service directory (services/apply.py:
#: RETIRED_PREFIX + NAME + "-" + a UTC stamp, "-N" if taken); not imported, to start fast
RETIRED = re.compile(r"\.retired-(?P<name>.+)-(?P<stamp>[0-9]{8}T[0-9]{6})(?:-(?P<n>[0-9]+))?\Z")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
Log = Callable[[str], None]


# --------------------------------------------------------------------------
# Options and results
# --------------------------------------------------------------------------


@dataclass
class Options:
    service_dir: Path = Path("/service")
    log_dir: Path = Path("/var/log")
    rename: bool = False  # -r: keep inputs as FILE.done
    alarm: bool = False  # -a: rotate current first
    supervisor: str | None = None  # None: detect
    exclude: frozenset[str] = frozenset()
    mode: int = 0o640
    owner: tuple[int, int] | None = None  # for new files, when root
    tai: bool = False  # s6-log's real-TAI labels
    alarm_timeout: float = 10.0
    jobs: int = 0  # worker processes; 0: one per CPU
    wait: float = 0.0  # seconds to wait for another run's lock
    gzip_after: int | None = None  # compress day files older than this many days
    service_roots: tuple[Path, ...] = ()  # more places to find retired services in
    batch_bytes: int = 64 << 20  # inputs committed together (one round of fsyncs)


@dataclass
class ServiceResult:
    name: str
    files: int = 0
    lines: int = 0
    outputs: dict[str, int] = field(default_factory=dict)  # day file -> lines added
    error: str | None = None  # "FILE: why" when the service failed
    warnings: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        if self.skipped:
            return f"{self.name}: skipped ({self.skipped})"
        text = (
            f"{self.name}: {self.files} file{'s' * (self.files != 1)}, "
            f"{self.lines} line{'s' * (self.lines != 1)} into "
            f"{len(self.outputs)} day file{'s' * (len(self.outputs) != 1)}"
        )
        if self.error:
            text += f"; FAILED: {self.error}"
        return text


@dataclass
class RunResult:
    services: list[ServiceResult]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.services)


@dataclass(frozen=True)
class Service:
    """A service's name and the service directories whose ``log/main`` are converted for it:
    retired ones first (oldest first), then the one in the scan directory, if any."""

    name: str
    dirs: tuple[Path, ...]

    @property
    def live(self) -> Path | None:
        last = self.dirs[-1]
        return None if last.name.startswith(".") else last


def find_services(
    service_dir: Path,
    exclude: Iterable[str] = (),
    log: Log | None = None,
    service_roots: Iterable[Path] = (),
) -> list[Service]:
    """Every service with a ``log/main`` directory, in name order.

    Dot-names are never services (no supervisor starts them), except retired
    ones (``.retired-NAME-STAMP``, left by ``services apply --prune``): those in
    the scan directory, in the directories its links lead into (the service
    roots in use) and in ``service_roots`` are converted into NAME's day files.
    """
    log = log or _quiet
    excluded = set(exclude)
    try:
        names = sorted(os.listdir(service_dir))
    except OSError as err:
        raise _unreadable(
            service_dir, err, "the service directory", "give the scan directory with --service-dir"
        ) from None
    live: dict[str, Path] = {}
    retired: dict[str, list[tuple[tuple[str, int], Path]]] = {}
    explicit = [Path(r) for r in service_roots]
    roots = list(explicit)
    for name in names:
        path = Path(service_dir) / name
        if name.startswith("."):
            _note_retired(path, retired)
            continue
        if os.path.islink(path):
            roots.append(Path(os.path.realpath(path)).parent)
        if not (path / "log" / "main").is_dir():
            log(f"No log/main directory under {path}")
            continue
        live[name] = path
    seen = {os.path.realpath(service_dir)}
    for root in roots:
        real = os.path.realpath(root)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.listdir(root))
        except OSError as err:
            if root in explicit:
                raise _unreadable(root, err, "the service root", "check --service-root") from None
            continue
        for name in entries:
            if name.startswith("."):
                _note_retired(root / name, retired)
    found = []
    for name in sorted(live.keys() | retired.keys()):
        dirs = [path for _key, path in sorted(retired.get(name, []))]
        if name in live:
            dirs.append(live[name])
        if name in excluded:
            for path in dirs:
                log(f"Skipping {path}")
            continue
        found.append(Service(name, tuple(dirs)))
    return found


def _unreadable(path: Path, err: OSError, what: str, hint: str) -> QmailkitError:
    return QmailkitError(f"cannot read {what}: {err.strerror}", path=path, hint=hint)


def _note_retired(path: Path, retired: dict) -> None:
    m = RETIRED.match(path.name)
    if m and (path / "log" / "main").is_dir():
        key = (m["stamp"], int(m["n"] or 1))
        retired.setdefault(m["name"], []).append((key, path))


def _quiet(_msg: str) -> None:
    pass


# --------------------------------------------------------------------------
# One service
# --------------------------------------------------------------------------


class _Journal:
    """The per-service journal file: what the batch in progress may have changed.

    Its names are checked before anything is done with them: inputs must be
    rotated-file names (plain names in the log directory they came from), day
    files ``SERVICE.YYYY-MM-DD`` of this service, the source directory a
    retired service of this name.
    """

    LIMIT = 1 << 20  # a journal names at most BATCH_FILES inputs and their day files

    def __init__(self, path: Path, service: str) -> None:
        self.path = path
        self.service = service

    def read(self) -> dict:
        try:
            state = json.loads(fsutil.read_bounded(self.path, self.LIMIT, follow=False))
        except FileNotFoundError:
            return {}
        except (QmailkitError, ValueError) as err:
            raise QmailkitError(
                f"cannot read the journal: {getattr(err, 'message', err)}",
                path=self.path,
                hint="if no other run is active, check it by hand; removing it may duplicate lines",
            ) from None
        problem = self._problem(state)
        if problem:
            raise QmailkitError(
                f"journal {problem}; nothing done",
                path=self.path,
                hint="convert-multilog did not write this: check it by hand; if no run was "
                "interrupted, remove it",
            )
        return state

    def _problem(self, state) -> str | None:
        """What is wrong with a journal's content, or None."""
        if not isinstance(state, dict):
            return "is not a JSON object"
        inputs, sizes, last = state.get("inputs", []), state.get("sizes", {}), state.get("last")
        if not isinstance(inputs, list):
            return "has inputs that are not a list"
        for name in inputs:
            if not (isinstance(name, str) and multilog.is_rotated_name(name)):
                return f"names an input {_short(name)} that is not a rotated file name"
        if not isinstance(sizes, dict):
            return "has sizes that are not an object"
        for out, size in sizes.items():
            if not _is_day_file(out, self.service):
                return f"names a day file {_short(out)} that is not {self.service}.YYYY-MM-DD"
            if type(size) is not int or size < -1:
                return f"has a bad size {_short(size)} for {out}"
        if last is not None and not (isinstance(last, str) and _DATE.match(last)):
            return f"has a bad date {_short(last)}"
        if not isinstance(state.get("done", False), bool):
            return "has a bad done flag"
        source = state.get("dir")
        if source is not None and not (
            isinstance(source, str) and (m := RETIRED.match(source)) and m["name"] == self.service
        ):
            return f"names a directory {_short(source)} that is not a retired {self.service}"
        return None

    def write(self, state: dict) -> None:
        fsutil.atomic_write(self.path, json.dumps(state, sort_keys=True).encode(), mode=0o600)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_day_file(name: str, service: str) -> bool:
    head, dot, date = name.rpartition(".")
    return bool(dot) and head == service and bool(_DATE.match(date))


#: at most this many inputs in one batch (besides Options.batch_bytes)
BATCH_FILES = 256


class _ServiceRun:
    def __init__(
        self,
        service: Service,
        opts: Options,
        log: Log,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.name = service.name
        self.service = service
        self.opts = opts
        self.log = log
        self.progress = progress or (lambda _n: None)
        self.out_dir = Path(opts.log_dir)
        self.journal = _Journal(self.out_dir / STATE_DIR / f"{self.name}.journal", self.name)
        self.result = ServiceResult(self.name)
        self.offset = tai64n.TAI_OFFSET if opts.tai else tai64n.LABEL_OFFSET
        self.local = tai64n.LocalTime(self.offset)
        self.last: str | None = None  # date of the last dated line (continuation state)
        self.current_out: str | None = None  # for the Adding/Closing messages
        self.current_count = 0
        # the source in progress: its log directory, and its name in journals (None: the live one)
        self.logdir = multilog.LogDir(service.dirs[-1] / "log" / "main")
        self.source: str | None = None
        self.reading: Path | None = None  # the input being converted, for messages
        # the batch in progress
        self.sizes: dict[str, int] = {}  # day file -> size before the batch (-1: absent)
        self.fds: dict[str, int] = {}
        self.ends: dict[str, int] = {}  # day file -> its size now
        self.created = False

    # -- the whole service --------------------------------------------------
    def run(self) -> ServiceResult:
        try:
            self.recover()
            for sdir in self.service.dirs:
                self.use_source(sdir)
                if self.opts.alarm and sdir == self.service.live:
                    self.rotate_current(sdir)
                files = self.logdir.rotated()
                while files:
                    size = 0
                    count = 0
                    for path in files:
                        if count and (size >= self.opts.batch_bytes or count >= BATCH_FILES):
                            break
                        size += _size(path)
                        count += 1
                    self.convert_batch(files[:count])
                    files = files[count:]
        except QmailkitError as err:
            self.result.error = str(err)
        except OSError as err:
            self.result.error = f"{err.filename or self.logdir.path}: {err.strerror or err}"
        self.close_current()
        return self.result

    def use_source(self, sdir: Path) -> None:
        self.logdir = multilog.LogDir(sdir / "log" / "main")
        self.source = None if sdir == self.service.live else sdir.name

    def journal_state(self, **state) -> dict:
        if self.source is not None:
            state["dir"] = self.source
        return state

    def recover(self) -> None:
        """Finish or undo what an interrupted run left, as its journal says."""
        fsutil.remove_stale_temps(self.journal.path)
        state = self.journal.read()
        self.last = state.get("last")
        names = state.get("inputs") or []
        if not names:
            return
        source = state.get("dir")  # a retired service's directory; None: the live one
        # (no "dir" and no live service: it was retired since, and its files went with it)
        sdir = (
            next((d for d in self.service.dirs if d.name == source), None)
            if source
            else self.service.live or self.service.dirs[-1]
        )
        if sdir is not None:
            self.use_source(sdir)
        main = sdir / "log" / "main" if sdir is not None else None
        inputs = [main / n for n in names] if main else []
        if state.get("done"):
            left = [p for p in inputs if os.path.lexists(p)]
            for src in left:
                self.log(f"Finishing {src} (converted by an interrupted run)")
                self.dispose(src)
            if left:
                fsutil.fsync_dir(main)
            return
        if main is None:
            self.warn(
                f"{source or 'log/main'}: gone while a run converting its files was interrupted"
            )
        for src in inputs:
            if not os.path.lexists(src):
                self.warn(f"{src} was removed while a run converting it was interrupted")
        self.log(f"Undoing the interrupted conversion of {len(names)} file(s) in {main or source}")
        self.rollback(state.get("sizes", {}))
        self.journal.write({"last": self.last})

    def rollback(self, sizes: dict[str, int]) -> None:
        """Cut day files back to the given sizes (-1: remove); durable on return."""
        for out, size in sizes.items():
            target = self.out_dir / out
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
        fsutil.fsync_dir(self.out_dir)

    def rotate_current(self, sdir: Path) -> None:
        """-a: make the logger rotate a non-empty ``current`` and wait for the new file."""
        from qmailkit import supervisor

        if self.logdir.current_size() == 0:
            return
        log_service = sdir / "log"
        kind = self.opts.supervisor or supervisor.detect(log_service)
        if kind is None:
            self.warn(f"{log_service}: cannot tell which supervisor runs it (use --supervisor)")
            return
        before = self.logdir.rotated_names()
        self.log(f"alarm {log_service} ({kind})")
        try:
            supervisor.get(kind).alarm(log_service)
        except QmailkitError as err:
            self.warn(f"cannot rotate: {err}")
            return
        if not self.logdir.wait_for_rotation(before, self.opts.alarm_timeout):
            self.warn(f"{log_service}: no rotated file after {self.opts.alarm_timeout:g}s")

    def warn(self, text: str) -> None:
        self.result.warnings.append(text)
        self.log(f"warning: {text}")

    # -- a batch of input files -------------------------------------------------
    def convert_batch(self, files: list[Path]) -> None:
        """Convert ``files`` (oldest first) with one journal and one round of fsyncs.

        If one file fails, its own appends are cut off again and the files
        before it are committed; the error is raised after that.
        """
        self.batch_names = [p.name for p in files]
        self.batch_last = self.last
        self.sizes, self.fds, self.ends, self.created = {}, {}, {}, False
        done: list[tuple[Path, list[tuple[str, int]]]] = []
        failure: QmailkitError | None = None
        try:
            for src in files:
                file_ends = dict(self.ends)
                file_last = self.last
                self.log(f"Reading {src}")
                self.reading = src
                try:
                    added = self.convert_file(src)
                except (OSError, QmailkitError) as err:
                    self.last = file_last
                    failure = _describe(src, err)
                    if not self.cut_back(file_ends):
                        raise failure from None
                    break
                done.append((src, added))
            if done:
                try:
                    self.sync()
                except OSError as err:
                    self.last = self.batch_last
                    failure = _describe(done[0][0], err)
                    with contextlib.suppress(OSError, QmailkitError):
                        self.rollback(self.sizes)
                        self.journal.write({"last": self.batch_last})
                    raise failure from None
                self.commit(done)
            elif self.sizes:
                # the cut-back must be durable before the journal forgets the sizes
                with contextlib.suppress(OSError, QmailkitError):
                    self.sync()
                    self.journal.write({"last": self.batch_last})
        finally:
            for fd in self.fds.values():
                os.close(fd)
            self.fds = {}
        if failure is not None:
            raise failure

    def convert_file(self, src: Path) -> list[tuple[str, int]]:
        """Append one input's lines; returns (date, lines) in order."""
        added: list[tuple[str, int]] = []
        pending: list[bytes] = []  # continuation lines before any dated line
        pending_count = 0
        for data in multilog.read_chunks(src):
            self.progress(len(data))
            batches: dict[str, list[bytes]] = {}
            for date_b, text, count in self.local.runs(data):
                if date_b is None:
                    if self.last is None:
                        pending.append(text)
                        pending_count += count
                        continue
                    date = self.last
                else:
                    date = date_b.decode("ascii")
                    if pending:
                        text = b"".join(pending) + text
                        count += pending_count
                        pending, pending_count = [], 0
                    self.last = date
                batches.setdefault(date, []).append(text)
                added.append((date, count))
            if batches:
                self.append(batches)
        if pending:
            when = multilog.rotation_time(src, self.offset)
            date = time.strftime("%Y-%m-%d", time.localtime(when))
            self.append({date: pending})
            added.append((date, pending_count))
        return added

    def append(self, batches: dict[str, list[bytes]]) -> None:
        """Append each date's lines to its day file, journalling first-touched files first."""
        new = [d for d in batches if f"{self.name}.{d}" not in self.sizes]
        if new:
            for date in new:
                out = f"{self.name}.{date}"
                # an existing day file is opened (not written) before its size is journalled
                fd = self.open_output(out, create=False)
                self.sizes[out] = -1 if fd is None else self.ends[out]
            self.journal.write(
                self.journal_state(inputs=self.batch_names, sizes=self.sizes, last=self.batch_last)
            )
        for date, texts in batches.items():
            out = f"{self.name}.{date}"
            fd = self.fds.get(out)
            if fd is None:
                fd = self.open_output(out, create=True)
            data = b"".join(texts) if len(texts) > 1 else texts[0]
            self.ends[out] += len(data)  # counted first: a partial write is cut back too
            try:
                write_all(fd, data)
            except OSError as err:
                raise self.output_error(out, err) from None

    def open_output(self, out: str, create: bool) -> int | None:
        """Open a day file for appending (None: it does not exist and ``create`` is false).

        Only a regular file, never through a symlink; a new one is made O_EXCL
        with the run's mode and owner."""
        path = self.out_dir / out
        try:
            try:
                fd = fsutil.open_append(path)
            except FileNotFoundError:
                if not create:
                    return None
                fd = fsutil.open_append(path, create_mode=0o600)
                self.created = True
                try:
                    if self.opts.owner is not None and os.geteuid() == 0:
                        os.fchown(fd, *self.opts.owner)
                    os.fchmod(fd, self.opts.mode)
                except OSError:
                    os.close(fd)
                    raise
        except (OSError, QmailkitError) as err:
            raise self.output_error(out, err) from None
        self.fds[out] = fd
        self.ends[out] = os.fstat(fd).st_size
        return fd

    def output_error(self, out: str, err: OSError | QmailkitError) -> QmailkitError:
        """An error of a day file, named as such (not the input's)."""
        if isinstance(err, QmailkitError):
            reason = err.message
        else:
            reason = err.strerror or str(err)
        hint = "the input is kept and converted on the next run"
        if isinstance(err, fsutil.NotRegular):
            hint = "day files must be regular files: remove it or move it away; " + hint
        elif getattr(err, "errno", None) == errno.ENOSPC:
            hint = f"free some space in {self.out_dir}; " + hint
        return QmailkitError(
            f"{reason} (while converting {self.reading})", path=self.out_dir / out, hint=hint
        )

    def cut_back(self, file_ends: dict[str, int]) -> bool:
        """Undo the appends of the failed file; False if that failed too (the journal then
        still says to undo the whole batch, which the next run does)."""
        try:
            for out in self.fds:
                size = file_ends.get(out, self.sizes[out])
                if size < 0:
                    os.unlink(self.out_dir / out)
                    self.created = True  # the directory changed: fsync it at commit
                else:
                    os.ftruncate(self.fds[out], size)
                self.ends[out] = max(size, 0)
        except OSError:
            return False
        return True

    def commit(self, done: list[tuple[Path, list[tuple[str, int]]]]) -> None:
        """Mark the (durable) batch done, then remove its inputs."""
        self.journal.write(
            self.journal_state(inputs=[p.name for p, _ in done], done=True, last=self.last)
        )
        for src, added in done:
            nlines = 0
            for date, count in added:
                self.note_output(f"{self.name}.{date}", count)
                nlines += count
            how = self.dispose(src)
            self.log(f"Done reading {src} ({nlines} lines read) ({how})")
            self.result.files += 1
            self.result.lines += nlines
        fsutil.fsync_dir(self.logdir.path)
        # forget the names: a later file of the same name must not count as converted
        self.journal.write({"last": self.last})

    def sync(self) -> None:
        """Make the batch's appends durable."""
        for out, fd in self.fds.items():
            try:
                os.fsync(fd)
            except OSError as err:
                raise self.output_error(out, err) from None
        if self.created:
            fsutil.fsync_dir(self.out_dir)

    def note_output(self, out: str, count: int) -> None:
        if out != self.current_out:
            self.close_current()
            self.current_out = out
            self.log(f"Adding to {self.out_dir / out}")
        self.current_count += count
        self.result.outputs[out] = self.result.outputs.get(out, 0) + count

    def close_current(self) -> None:
        if self.current_out is not None:
            self.log(
                f"Closing {self.out_dir / self.current_out} ({self.current_count} lines added)"
            )
        self.current_out = None
        self.current_count = 0

    def dispose(self, src: Path) -> str:
        if self.opts.rename:
            os.rename(src, f"{src}.done")
            return "renamed"
        os.unlink(src)
        return "removed"


def _describe(src: Path, err: OSError | QmailkitError) -> QmailkitError:
    if isinstance(err, QmailkitError):
        return err
    reason = err.strerror or str(err)
    hint = "the input is kept and converted on the next run"
    if err.errno == errno.ENOSPC:
        hint = "free some space; " + hint
    return QmailkitError(f"{reason} (while converting {src})", path=err.filename or src, hint=hint)


def convert_service(
    service: Service, opts: Options, log: Log | None = None, progress=None
) -> ServiceResult:
    """Convert one service's rotated files (the caller holds the lock)."""
    return _ServiceRun(service, opts, log or _quiet, progress).run()


# --------------------------------------------------------------------------
# The whole run: lock, services, worker processes
# --------------------------------------------------------------------------


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


def convert_all(
    opts: Options,
    log: Log | None = None,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> RunResult:
    """Convert every service under ``opts.service_dir`` (and the retired ones found).

    ``log`` gets the messages, ``total`` the number of input bytes found, and
    ``progress`` the bytes read as the work goes on.
    """
    log = log or _quiet
    sdir = state_dir(opts.log_dir)
    with fsutil.locked(sdir / LOCK_NAME, wait=opts.wait or False, what="another convert-multilog"):
        log("Starting")
        services = find_services(opts.service_dir, opts.exclude, log, opts.service_roots)
        if total is not None:
            total(
                sum(
                    _size(p)
                    for s in services
                    for d in s.dirs
                    for p in multilog.LogDir(d / "log" / "main").rotated()
                )
            )
        jobs = opts.jobs or len(os.sched_getaffinity(0))
        if jobs <= 1 or len(services) <= 1:
            results = [convert_service(s, opts, log, progress) for s in services]
        else:
            results = _parallel(services, opts, jobs, log, progress)
        if opts.gzip_after is not None:
            for result in results:
                if result.ok:  # a failed service may still have a roll-back to do
                    try:
                        gzip_old_days(opts.log_dir, result.name, opts.gzip_after, log=log)
                    except (OSError, QmailkitError) as err:
                        result.error = f"compressing: {err}"
        log("Done")
    return RunResult(results)


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _parallel(
    services: list[Service], opts: Options, jobs: int, log: Log, progress
) -> list[ServiceResult]:
    """One forked worker per service, at most ``jobs`` at a time.

    Workers send their messages, progress and result back through a pipe; they
    die with the parent (PR_SET_PDEATHSIG), so a killed run leaves no writer
    behind holding the lock.
    """
    results: dict[str, ServiceResult] = {}
    todo = list(services)
    running: dict[int, tuple[int, str, bytearray]] = {}  # fd -> (pid, name, buffer)
    sel = selectors.DefaultSelector()
    try:
        while todo or running:
            while todo and len(running) < jobs:
                service = todo.pop(0)
                name = service.name
                spawned = workers.spawn(lambda wfd, s=service: _worker(s, opts, wfd))
                if spawned is None:  # out of descriptors or processes: do this one here
                    results[name] = convert_service(service, opts, log, progress)
                    continue
                pid, rfd = spawned
                running[rfd] = (pid, name, bytearray())
                sel.register(rfd, selectors.EVENT_READ)
            if not running:
                continue
            for key, _ in sel.select():
                fd = key.fd
                pid, name, buf = running[fd]
                data = os.read(fd, 1 << 16)
                if data:
                    buf += data
                    while len(buf) >= 4:
                        size = int.from_bytes(buf[:4], "big")
                        if len(buf) < 4 + size:
                            break
                        kind, value = pickle.loads(bytes(buf[4 : 4 + size]))
                        del buf[: 4 + size]
                        if kind == "log":
                            log(value)
                        elif kind == "progress":
                            if progress:
                                progress(value)
                        else:
                            results[name] = ServiceResult(**value)
                    continue
                sel.unregister(fd)
                os.close(fd)
                del running[fd]
                _, status = os.waitpid(pid, 0)
                if name not in results:
                    results[name] = ServiceResult(
                        name, error=f"worker process died (wait status {status})"
                    )
    finally:
        sel.close()
        for fd, (pid, _name, _buf) in running.items():
            os.close(fd)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return [results[s.name] for s in services]


def _worker(service: Service, opts: Options, wfd: int) -> None:
    """In a forked worker: convert one service, streaming messages and the result to ``wfd``."""

    def send(kind: str, value) -> None:
        blob = pickle.dumps((kind, value))
        write_all(wfd, len(blob).to_bytes(4, "big") + blob)

    result = convert_service(service, opts, lambda m: send("log", m), lambda n: send("progress", n))
    send("result", asdict(result))


# --------------------------------------------------------------------------
# Compressing old day files
# --------------------------------------------------------------------------

_DAY_NAME = re.compile(r"(?P<name>.+)\.(?P<date>\d{4}-\d{2}-\d{2})\Z")


def gzip_old_days(
    log_dir: Path, service: str, days: int, today: str | None = None, log: Log | None = None
) -> list[str]:
    """gzip ``LOGDIR/SERVICE.YYYY-MM-DD`` files more than ``days`` days old; the names done.

    ``SERVICE.DATE.gz`` replaces the file atomically (same mode and owner),
    then the plain file is removed.  If both exist (a crash in between, or
    lines for an old day that arrived later), the plain file's content is
    appended as a new gzip member unless the ``.gz`` already ends with it.
    """
    import datetime

    log = log or _quiet
    if today is None:
        today = time.strftime("%Y-%m-%d")
    limit = (datetime.date.fromisoformat(today) - datetime.timedelta(days=days)).isoformat()
    done = []
    for entry in sorted(os.listdir(log_dir)):
        m = _DAY_NAME.match(entry)
        if not m or m["name"] != service or m["date"] >= limit:
            continue
        plain = Path(log_dir) / entry
        try:
            st_ = os.lstat(plain)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st_.st_mode):
            continue  # never through a symlink, never a FIFO
        packed = plain.with_name(entry + ".gz")
        data = _read_regular(plain)
        old = _read_regular(packed) if os.path.lexists(packed) else b""
        if not (old and _gz_ends_with(old, data)):
            log(f"Compressing {plain}")
            fsutil.atomic_write(
                packed,
                old + _gzip_member(data, entry),
                mode=st_.st_mode & 0o7777,
                owner=(st_.st_uid, st_.st_gid) if os.geteuid() == 0 else None,
            )
        os.unlink(plain)
        fsutil.fsync_dir(log_dir)
        done.append(entry)
    return done


def _read_regular(path: Path) -> bytes:
    with fsutil.open_input(path, follow=False) as fh:
        return fh.read()


def _gzip_member(data: bytes, name: str) -> bytes:
    import gzip
    import io

    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, compresslevel=6, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def _gz_ends_with(packed: bytes, tail: bytes) -> bool:
    """True if the decompressed ``packed`` ends with ``tail`` (streamed)."""
    import gzip
    import io

    keep = b""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(packed)) as gz:
            while block := gz.read(1 << 20):
                keep = (keep + block)[-len(tail) :] if tail else b""
    except (OSError, EOFError):
        return False
    return keep == tail
