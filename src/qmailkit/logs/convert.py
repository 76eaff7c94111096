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

Inputs are converted in batches (up to ``Options.batch_bytes`` and
``BATCH_FILES`` files), each committed through the service's journal
(``logs/journal.py``: day-file fsync, journal, input unlink, directory fsync),
so a kill -9 at any instant, a full disk or an unopenable day file never loses
a line or writes one twice.  When an append fails, that input's lines are cut
off at once and the inputs before it are committed.  A lock
(``LOGDIR/.convert-multilog/lock``) keeps two runs apart; services are
converted in worker processes (``workers.map_ordered``), one each.

Runs as root over directories other accounts write (``log/main`` belongs to the
log user, LOGDIR may be group-writable): inputs are read only if they are
regular files (no symlink followed, no FIFO opened blocking, at most
``logdir.MAX_FILE`` bytes), day files are appended to only if they are
regular files (never through a symlink).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from qmailkit import fsutil, supervisor, workers
from qmailkit.errors import QmailkitError
from qmailkit.logs import logdir, tai64n
from qmailkit.logs.compress import gzip_old_days
from qmailkit.logs.journal import Batch, Converted, DayFileSettings, Journal, state_dir

LOCK_NAME = "lock"
#: at most this many inputs in one batch (besides Options.batch_bytes)
BATCH_FILES = 256

Log = Callable[[str], None]
Progress = Callable[[int], None]


def _quiet(_message: str) -> None:
    pass


def _no_progress(_count: int) -> None:
    pass


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
    owner: tuple[int, int] | None = None  # for new files, when root (-1: keep that part)
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

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
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


# --------------------------------------------------------------------------
# Finding the services
# --------------------------------------------------------------------------


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


#: service name -> [(sort key, directory)] of its retired directories
_Retired = dict[str, list[tuple[tuple[str, int], Path]]]


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
    explicit = [Path(root) for root in service_roots]
    retired: _Retired = {}
    live, roots_in_use = _live_services(Path(service_dir), retired, log)
    _find_retired(Path(service_dir), [*explicit, *roots_in_use], explicit, retired)
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


def _live_services(
    service_dir: Path, retired: _Retired, log: Log
) -> tuple[dict[str, Path], list[Path]]:
    """The scan directory's services with a ``log/main`` (name -> directory) and the
    directories its links lead into; its retired directories go into ``retired``."""
    try:
        names = sorted(os.listdir(service_dir))
    except OSError as err:
        raise _unreadable(
            service_dir, err, "the service directory", "give the scan directory with --service-dir"
        ) from None
    live: dict[str, Path] = {}
    roots: list[Path] = []
    for name in names:
        path = service_dir / name
        if name.startswith("."):
            _note_retired(path, retired)
            continue
        if os.path.islink(path):
            roots.append(Path(os.path.realpath(path)).parent)
        if not (path / "log" / "main").is_dir():
            log(f"No log/main directory under {path}")
            continue
        live[name] = path
    return live, roots


def _find_retired(
    service_dir: Path, roots: list[Path], explicit: list[Path], retired: _Retired
) -> None:
    """Note the retired directories in ``roots`` (each real directory once); an
    unreadable root given on the command line (``explicit``) is an error."""
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


def _unreadable(path: Path, err: OSError, what: str, hint: str) -> QmailkitError:
    return QmailkitError(f"cannot read {what}: {err.strerror}", path=path, hint=hint)


def _note_retired(path: Path, retired: _Retired) -> None:
    parsed = logdir.retired_name(path.name)
    if parsed is not None and (path / "log" / "main").is_dir():
        name, key = parsed
        retired.setdefault(name, []).append((key, path))


# --------------------------------------------------------------------------
# One service
# --------------------------------------------------------------------------


class ServiceConversion:
    """Converting one service's inputs: its directories in order, in batches."""

    def __init__(
        self, service: Service, opts: Options, log: Log, progress: Progress | None = None
    ) -> None:
        self.name = service.name
        self.service = service
        self.opts = opts
        self.log = log
        self.progress = progress or _no_progress
        self.out_dir = Path(opts.log_dir)
        self.journal = Journal(self.out_dir, self.name, keep_inputs=opts.rename)
        self.new_files = DayFileSettings(opts.mode, opts.owner)
        self.result = ServiceResult(self.name)
        self.offset = tai64n.TAI_OFFSET if opts.tai else tai64n.LABEL_OFFSET
        self.local = tai64n.LocalTime(self.offset)
        self.last: str | None = None  # date of the last dated line (continuation state)
        self.current_out: str | None = None  # for the Adding/Closing messages
        self.current_count = 0
        # the source in progress: its log directory, and its name in journals (None: the live one)
        self.logdir = logdir.LogDir(service.dirs[-1] / "log" / "main")
        self.source: str | None = None

    # -- the whole service --------------------------------------------------
    def run(self) -> ServiceResult:
        try:
            recovered = self.journal.recover(
                self.service.dirs, self.service.live, self.log, self.warn
            )
            self.last = recovered.last
            if recovered.source_dir is not None:
                self.use_source(recovered.source_dir)
            for sdir in self.service.dirs:
                self.use_source(sdir)
                if self.opts.alarm and sdir == self.service.live:
                    self.rotate_current(sdir)
                self.convert_in_batches(self.logdir.rotated())
        except QmailkitError as err:
            self.result.error = str(err)
        except OSError as err:
            self.result.error = f"{err.filename or self.logdir.path}: {err.strerror or err}"
        self.close_current()
        return self.result

    def use_source(self, sdir: Path) -> None:
        self.logdir = logdir.LogDir(sdir / "log" / "main")
        self.source = None if sdir == self.service.live else sdir.name

    def convert_in_batches(self, files: list[Path]) -> None:
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

    def rotate_current(self, sdir: Path) -> None:
        """-a: make the logger rotate a non-empty ``current`` and wait for the new file."""
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
        batch = self.journal.begin(files, self.last, self.source, self.new_files)
        try:
            converted, failure = self.append_files(batch, files)
            if converted:
                try:
                    batch.sync()
                except OSError as err:
                    self.last = batch.last_before
                    batch.abandon()
                    raise _input_error(converted[0][0], err) from None
                batch.commit(converted, self.last, self.logdir.path, self)
            else:
                batch.forget_cut_back()
        finally:
            batch.close()
        if failure is not None:
            raise failure

    def append_files(
        self, batch: Batch, files: list[Path]
    ) -> tuple[Converted, QmailkitError | None]:
        """Append the files' lines, up to the first that fails (its appends cut off again):
        the files done, and that failure."""
        converted: Converted = []
        for src in files:
            mark = batch.mark()
            last_before = self.last
            self.log(f"Reading {src}")
            batch.reading = src
            try:
                added = self.convert_file(src, batch)
            except (OSError, QmailkitError) as err:
                self.last = last_before
                failure = _input_error(src, err)
                if not batch.cut_back(mark):
                    raise failure from None
                return converted, failure
            converted.append((src, added))
        return converted, None

    def convert_file(self, src: Path, batch: Batch) -> list[tuple[str, int]]:
        """Append one input's lines; returns (date, lines) in order."""
        added: list[tuple[str, int]] = []
        pending: list[bytes] = []  # continuation lines before any dated line
        pending_count = 0
        for data in logdir.read_chunks(src):
            self.progress(len(data))
            lines_by_date: dict[str, list[bytes]] = {}
            for date_bytes, text, count in self.local.runs(data):
                if date_bytes is None:
                    if self.last is None:
                        pending.append(text)
                        pending_count += count
                        continue
                    date = self.last
                else:
                    date = date_bytes.decode("ascii")
                    if pending:
                        text = b"".join(pending) + text
                        count += pending_count
                        pending, pending_count = [], 0
                    self.last = date
                lines_by_date.setdefault(date, []).append(text)
                added.append((date, count))
            if lines_by_date:
                batch.append(lines_by_date)
        if pending:
            when = logdir.rotation_time(src, self.offset)
            date = time.strftime("%Y-%m-%d", time.localtime(when))
            batch.append({date: pending})
            added.append((date, pending_count))
        return added

    # -- messages as a batch is committed (journal.CommitReport) ------------------
    def committed(self, src: Path, added: list[tuple[str, int]]) -> None:
        for date, count in added:
            self.note_output(logdir.day_file(self.name, date), count)

    def disposed(self, src: Path, added: list[tuple[str, int]], how: str) -> None:
        lines = sum(count for _date, count in added)
        self.log(f"Done reading {src} ({lines} lines read) ({how})")
        self.result.files += 1
        self.result.lines += lines

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


def _input_error(src: Path, err: OSError | QmailkitError) -> QmailkitError:
    """An input's error (a day file's comes named already), saying that the input is kept."""
    if isinstance(err, QmailkitError):
        return err
    reason = err.strerror or str(err)
    hint = "the input is kept and converted on the next run"
    if err.errno == errno.ENOSPC:
        hint = "free some space; " + hint
    return QmailkitError(f"{reason} (while converting {src})", path=err.filename or src, hint=hint)


def convert_service(
    service: Service, opts: Options, log: Log | None = None, progress: Progress | None = None
) -> ServiceResult:
    """Convert one service's rotated files (the caller holds the lock)."""
    return ServiceConversion(service, opts, log or _quiet, progress).run()


# --------------------------------------------------------------------------
# The whole run: lock, services, worker processes
# --------------------------------------------------------------------------


def convert_all(
    opts: Options,
    log: Log | None = None,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
) -> RunResult:
    """Convert every service under ``opts.service_dir`` (and the retired ones found).

    ``log`` gets the messages, ``total`` the number of input bytes found, and
    ``progress`` the bytes read as the work goes on.
    """
    log = log or _quiet
    state = state_dir(opts.log_dir)
    with fsutil.locked(state / LOCK_NAME, wait=opts.wait or False, what="another convert-multilog"):
        log("Starting")
        services = find_services(opts.service_dir, opts.exclude, log, opts.service_roots)
        if total is not None:
            total(sum(_size(path) for service in services for path in _inputs(service)))
        results = _convert_services(services, opts, log, progress or _no_progress)
        if opts.gzip_after is not None:
            for result in results:
                if result.ok:  # a failed service may still have a roll-back to do
                    try:
                        gzip_old_days(opts.log_dir, result.name, opts.gzip_after, log=log)
                    except (OSError, QmailkitError) as err:
                        result.error = f"compressing: {err}"
        log("Done")
    return RunResult(results)


def _inputs(service: Service) -> list[Path]:
    return [
        path for sdir in service.dirs for path in logdir.LogDir(sdir / "log" / "main").rotated()
    ]


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _convert_services(
    services: list[Service], opts: Options, log: Log, progress: Progress
) -> list[ServiceResult]:
    """Each service converted in a worker process of its own (at most ``opts.jobs`` at once),
    the results in service order.

    Workers stream their messages and their result back as they go and die
    with this process, so a killed run leaves no worker behind holding the
    lock.  A worker that dies is its service's error; the others go on.
    """
    jobs = opts.jobs or len(os.sched_getaffinity(0))
    results: dict[str, ServiceResult] = {}
    started: set[str] = set()

    def on_message(message: object) -> None:
        match message:
            case ("log", str(text)):
                log(text)
            case ("progress", int(count)):
                progress(count)
            case ("started", str(name)):
                started.add(name)
            case ("result", ServiceResult() as result):
                results[result.name] = result

    def convert(service: Service, send: workers.Send) -> None:
        send(("started", service.name))
        try:
            result = convert_service(
                service,
                opts,
                lambda text: send(("log", text)),
                lambda count: send(("progress", count)),
            )
        except Exception as err:  # a bug: this service's error, not the end of the run
            result = ServiceResult(
                service.name, error=f"internal error: {type(err).__name__}: {err}"
            )
        send(("result", result))

    todo = services
    while todo:
        try:
            workers.map_ordered(convert, todo, jobs=jobs, chunk=1, on_message=on_message)
        except workers.WorkerFailed as err:
            # the pool stops at a dead worker: its service failed, the ones not started go again
            left = [service for service in todo if service.name not in results]
            dead = [service for service in left if service.name in started] or left[:1]
            for service in dead:
                results[service.name] = ServiceResult(service.name, error=str(err))
        todo = [service for service in todo if service.name not in results]
    return [results[service.name] for service in services]
