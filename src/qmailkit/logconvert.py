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
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import pickle
import re
import selectors
import signal
import sys
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from pathlib import Path

from qmailkit import fsutil, multilog, tai64n, workers
from qmailkit.errors import QmailkitError
from qmailkit.workers import write_all

STATE_DIR = ".convert-multilog"
LOCK_NAME = "lock"
Log = Callable[[str], None]


# --------------------------------------------------------------------------
# Conversion of bytes: labels → local time, lines grouped by date
# --------------------------------------------------------------------------

_HEX = b"0123456789abcdef"
_HEX_AT_SP = _HEX + b"@ "
_AT_TO_SPACE = bytes.maketrans(b"@", b" ")
_label_and_space = itemgetter(slice(0, 26))
_rest = itemgetter(slice(25, None))


class Converter:
    """Turns blocks of log lines into runs of converted lines per local date.

    The output is byte for byte what ``tai64nlocal`` prints (through
    ``tai64n.LocalTime``).  Ordinary lines (``@`` + 24 hex + space, as every
    logger writes them) are converted in bulk with C-level list and bytes
    operations; anything else goes through ``LocalTime`` one line at a time.
    """

    def __init__(self, offset: int = tai64n.LABEL_OFFSET) -> None:
        self.local = tai64n.LocalTime(offset)
        self.offset = offset
        self._prefix: dict[int, bytes] = {}  # TAI64 second -> b"YYYY-MM-DD HH:MM:SS."
        self._hours: dict[int, tuple[bytes, int] | None] = {}

    # -- formatting of one second, cached ---------------------------------
    def _exact(self, unix: int) -> bytes:
        tm = time.localtime(unix)
        return b"%d-%02d-%02d %02d:%02d:%02d." % tm[:6]

    def _hour(self, hour: int) -> tuple[bytes, int] | None:
        """(date, second of day at the hour's start) if local time runs evenly through it."""
        first, last = time.localtime(hour * 3600), time.localtime(hour * 3600 + 3599)
        sod0 = first.tm_hour * 3600 + first.tm_min * 60 + first.tm_sec
        sod1 = last.tm_hour * 3600 + last.tm_min * 60 + last.tm_sec
        if first[:3] != last[:3] or sod1 - sod0 != 3599:
            return None  # a zone change, a leap second or midnight inside: format exactly
        return b"%d-%02d-%02d " % first[:3], sod0

    def prefix(self, label_second: int) -> bytes:
        """``YYYY-MM-DD HH:MM:SS.`` for a label's TAI64 second (local time)."""
        text = self._prefix.get(label_second)
        if text is not None:
            return text
        if len(self._prefix) > 200_000:
            self._prefix.clear()
        unix = label_second - self.offset
        hour = unix // 3600
        try:
            info = self._hours[hour]
        except KeyError:
            info = self._hours[hour] = self._hour(hour)
        if info is None:
            text = self._exact(unix)
        else:
            sod = info[1] + unix - hour * 3600
            text = info[0] + b"%02d:%02d:%02d." % (sod // 3600, sod // 60 % 60, sod % 60)
        self._prefix[label_second] = text
        return text

    def _linear_table(self, lo: int, hi: int) -> dict[int, bytes] | None:
        """Prefixes for every label second in [lo, hi] if local time runs evenly through it.

        A rotated file spans minutes to hours; unless it holds a midnight, a zone
        change or a leap second, its seconds map to one date and consecutive
        times of day, so the whole table is built with C-level maps.  None when
        that does not hold (then each second is formatted on its own).
        """
        if hi - lo > 20_000:
            return None
        first = time.localtime(lo - self.offset)
        last = time.localtime(hi - self.offset)
        sod = first.tm_hour * 3600 + first.tm_min * 60 + first.tm_sec
        if (
            first[:3] != last[:3]
            or last.tm_hour * 3600 + last.tm_min * 60 + last.tm_sec - sod != hi - lo
            or last.tm_sec > 59
        ):
            return None
        date = b"%d-%02d-%02d " % first[:3]
        day = _times_of_day()
        return dict(zip(range(lo, hi + 1), map(date.__add__, day[sod : sod + hi - lo + 1])))

    # -- blocks -------------------------------------------------------------
    def convert(self, data: bytes) -> list[tuple[bytes | None, bytes, int]]:
        """Runs ``(date, converted lines, line count)`` in input order.

        The date is ``b"YYYY-MM-DD"``, or None for continuation lines (no label).

        Every line of the output ends with a newline (a last line without
        one gets it, so that day files stay line-structured).
        """
        lines = data.split(b"\n")
        if not lines[-1]:
            lines.pop()  # the text after the last newline; a last line without one stays
        if not lines:
            return []
        runs = self._fast(lines)
        if runs is not None:
            return runs
        return self._mixed(lines)

    def _fast(self, lines: list[bytes]) -> list | None:
        """Bulk conversion if every line is ``@`` + 24 lower-case hex + space; else None."""
        n = len(lines)
        heads = b"".join(list(map(_label_and_space, lines)))
        if (
            len(heads) != 26 * n
            or heads.translate(None, _HEX_AT_SP)
            or heads.count(b"@") != n
            or heads[0::26].count(b"@") != n
            or heads.count(b" ") != n
            or heads[25::26].count(b" ") != n
        ):
            return None
        # fromhex skips whitespace: 12 bytes a line
        raw = bytes.fromhex(heads.translate(_AT_TO_SPACE).decode("ascii"))
        secs_buf = bytearray(8 * n)
        nano_buf = bytearray(4 * n)
        for i in range(8):
            secs_buf[i::8] = raw[i::12]
        for i in range(4):
            nano_buf[i::4] = raw[8 + i :: 12]
        secs = array("Q", secs_buf)
        nanos = array("I", nano_buf)
        if sys.byteorder == "little":  # the buffers hold big-endian numbers
            secs.byteswap()
            nanos.byteswap()
        nano_list = nanos.tolist()
        if max(nano_list) > 999_999_999:
            return None
        sec_list = secs.tolist()
        try:
            table = self._linear_table(min(sec_list), max(sec_list))
            one_date = table is not None
            if table is None:
                table = {s: self.prefix(s) for s in dict.fromkeys(sec_list)}
        except (OverflowError, ValueError, OSError):
            return None  # a label out of the platform's range: let LocalTime decide per line
        prefixes = list(map(table.__getitem__, sec_list))
        args: list = [None] * (3 * n)
        args[0::3] = prefixes
        args[1::3] = nano_list
        args[2::3] = list(map(_rest, lines))
        if one_date:
            return [(prefixes[0][:-10], (b"%s%09d%s\n" * n) % tuple(args), n)]
        dates = {p[:-10] for p in table.values()}
        if len(dates) == 1:
            return [(dates.pop(), (b"%s%09d%s\n" * n) % tuple(args), n)]
        runs = []
        start = 0
        for date, group in itertools.groupby(p[:-10] for p in prefixes):
            count = sum(1 for _ in group)
            end = start + count
            runs.append(
                (date, (b"%s%09d%s\n" * count) % tuple(args[3 * start : 3 * end]), count)
            )
            start = end
        return runs

    def _mixed(self, lines: list[bytes]) -> list[tuple[bytes | None, bytes, int]]:
        """Lines of every kind: ordinary stretches in bulk, the others one by one."""
        runs: list[tuple[bytes | None, bytes, int]] = []
        good_start = 0

        def flush_good(end: int) -> None:
            if end > good_start:
                stretch = lines[good_start:end]
                fast = self._fast(stretch)
                if fast is None:
                    for line in stretch:
                        self._one(line, runs)
                else:
                    runs.extend(fast)

        for i, line in enumerate(lines):
            if len(line) > 25 and line[0] == 0x40 and line[25] == 0x20:
                continue
            flush_good(i)
            self._one(line, runs)
            good_start = i + 1
        flush_good(len(lines))
        return _merge(runs)

    def _one(self, line: bytes, runs: list) -> None:
        try:
            converted = self.local.convert(line)
            date = self.local.date(line) if converted is not line else None
        except (OverflowError, ValueError, OSError):
            converted, date = line, None  # a label beyond the platform's time range
        runs.append((date, converted + b"\n", 1))


_TIMES_OF_DAY: list[bytes] = []


def _times_of_day() -> list[bytes]:
    """``b"HH:MM:SS."`` for every second of a day (built once; workers inherit it)."""
    if not _TIMES_OF_DAY:
        hms = itertools.chain.from_iterable(
            itertools.product(range(24), range(60), range(60)))
        text = (b"%02d:%02d:%02d.\n" * 86400) % tuple(hms)
        _TIMES_OF_DAY.extend(text.split(b"\n")[:86400])
    return _TIMES_OF_DAY


def _merge(runs: list[tuple[bytes | None, bytes, int]]) -> list[tuple[bytes | None, bytes, int]]:
    """Join neighbouring runs with the same date."""
    merged = []
    for date, group in itertools.groupby(runs, key=itemgetter(0)):
        items = list(group)
        merged.append((date, b"".join(i[1] for i in items), sum(i[2] for i in items)))
    return merged


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


def find_services(
    service_dir: Path, exclude: Iterable[str] = (), log: Log | None = None
) -> list[tuple[str, Path]]:
    """(name, path) of every service with a ``log/main`` directory, in name order."""
    log = log or _quiet
    excluded = set(exclude)
    try:
        names = sorted(os.listdir(service_dir))
    except OSError as err:
        raise QmailkitError(
            f"cannot read the service directory: {err.strerror}",
            path=service_dir,
            hint="give the scan directory with --service-dir",
        ) from None
    found = []
    for name in names:
        path = Path(service_dir) / name
        if not (path / "log" / "main").is_dir():
            log(f"No log/main directory under {path}")
            continue
        if name in excluded:
            log(f"Skipping {path}")
            continue
        found.append((name, path))
    return found


def _quiet(_msg: str) -> None:
    pass


# --------------------------------------------------------------------------
# One service
# --------------------------------------------------------------------------


class _Journal:
    """The per-service journal file: what the input in progress may have changed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict:
        try:
            with open(self.path, "rb") as fh:
                data = json.loads(fh.read())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise QmailkitError(
                f"cannot read the journal: {err}",
                path=self.path,
                hint="if no other run is active, check it by hand; removing it may duplicate lines",
            ) from None
        return data

    def write(self, state: dict) -> None:
        fsutil.atomic_write(self.path, json.dumps(state, sort_keys=True).encode(), mode=0o600)


#: at most this many inputs in one batch (besides Options.batch_bytes)
BATCH_FILES = 256


class _ServiceRun:
    def __init__(
        self,
        name: str,
        path: Path,
        opts: Options,
        log: Log,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.opts = opts
        self.log = log
        self.progress = progress or (lambda _n: None)
        self.logdir = multilog.LogDir(path / "log" / "main")
        self.out_dir = Path(opts.log_dir)
        self.journal = _Journal(self.out_dir / STATE_DIR / f"{name}.journal")
        self.result = ServiceResult(name)
        self.converter = Converter(tai64n.TAI_OFFSET if opts.tai else tai64n.LABEL_OFFSET)
        self.last: str | None = None  # date of the last dated line (continuation state)
        self.current_out: str | None = None  # for the Adding/Closing messages
        self.current_count = 0
        # the batch in progress
        self.sizes: dict[str, int] = {}  # day file -> size before the batch (-1: absent)
        self.fds: dict[str, int] = {}
        self.ends: dict[str, int] = {}  # day file -> its size now
        self.created = False

    # -- the whole service --------------------------------------------------
    def run(self) -> ServiceResult:
        try:
            self.recover()
            if self.opts.alarm:
                self.rotate_current()
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
            self.result.error = f"{err.filename or self.path}: {err.strerror or err}"
        self.close_current()
        return self.result

    def recover(self) -> None:
        """Finish or undo what an interrupted run left, as its journal says."""
        fsutil.remove_stale_temps(self.journal.path)
        state = self.journal.read()
        self.last = state.get("last")
        names = state.get("inputs") or []
        if not names:
            return
        inputs = [self.logdir.path / n for n in names]
        if state.get("done"):
            left = [p for p in inputs if p.exists()]
            for src in left:
                self.log(f"Finishing {src} (converted by an interrupted run)")
                self.dispose(src)
            if left:
                fsutil.fsync_dir(self.logdir.path)
            return
        for src in inputs:
            if not src.exists():
                self.warn(f"{src} was removed while a run converting it was interrupted")
        self.log(f"Undoing the interrupted conversion of {len(inputs)} file(s) in {self.logdir.path}")
        self.rollback(state.get("sizes", {}))
        self.journal.write({"last": self.last})

    def rollback(self, sizes: dict[str, int]) -> None:
        """Cut day files back to the given sizes (-1: remove); durable on return."""
        for out, size in sizes.items():
            target = self.out_dir / out
            if size < 0:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)
                continue
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if os.fstat(fd).st_size > size:
                    os.ftruncate(fd, size)
                    os.fsync(fd)
            finally:
                os.close(fd)
        fsutil.fsync_dir(self.out_dir)

    def rotate_current(self) -> None:
        """-a: make the logger rotate a non-empty ``current`` and wait for the new file."""
        from qmailkit import supervisor

        if self.logdir.current_size() == 0:
            return
        log_service = self.path / "log"
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
            for date_b, text, count in self.converter.convert(data):
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
            when = multilog.rotation_time(src, self.converter.offset)
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
                try:
                    self.sizes[out] = os.stat(self.out_dir / out).st_size
                except FileNotFoundError:
                    self.sizes[out] = -1
            self.journal.write(
                {"inputs": self.batch_names, "sizes": self.sizes, "last": self.batch_last}
            )
        for date, texts in batches.items():
            out = f"{self.name}.{date}"
            fd = self.fds.get(out)
            if fd is None:
                fd = self.open_output(out)
            data = b"".join(texts) if len(texts) > 1 else texts[0]
            self.ends[out] += len(data)  # counted first: a partial write is cut back too
            write_all(fd, data)

    def open_output(self, out: str) -> int:
        path = self.out_dir / out
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            self.created = True
            try:
                if self.opts.owner is not None and os.geteuid() == 0:
                    os.fchown(fd, *self.opts.owner)
                os.fchmod(fd, self.opts.mode)
            except OSError:
                os.close(fd)
                raise
        self.fds[out] = fd
        self.ends[out] = os.fstat(fd).st_size
        return fd

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
        self.journal.write({"inputs": [p.name for p, _ in done], "done": True, "last": self.last})
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
        for fd in self.fds.values():
            os.fsync(fd)
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
            self.log(f"Closing {self.out_dir / self.current_out} ({self.current_count} lines added)")
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
    name: str, path: Path, opts: Options, log: Log | None = None, progress=None
) -> ServiceResult:
    """Convert one service's rotated files (the caller holds the lock)."""
    return _ServiceRun(name, Path(path), opts, log or _quiet, progress).run()


# --------------------------------------------------------------------------
# The whole run: lock, services, worker processes
# --------------------------------------------------------------------------


def state_dir(log_dir: Path) -> Path:
    """``LOGDIR/.convert-multilog``: the lock and the journals (created 0700)."""
    path = Path(log_dir) / STATE_DIR
    if not Path(log_dir).is_dir():
        raise QmailkitError(
            "the log directory does not exist", path=log_dir, hint="create it or give --log-dir"
        )
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as err:
        raise QmailkitError(
            f"cannot create the state directory: {err.strerror}",
            path=path,
            hint="is the log directory writable by this user?",
        ) from None
    return path


def convert_all(
    opts: Options,
    log: Log | None = None,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> RunResult:
    """Convert every service under ``opts.service_dir``.

    ``log`` gets the messages, ``total`` the number of input bytes found, and
    ``progress`` the bytes read as the work goes on.
    """
    log = log or _quiet
    sdir = state_dir(opts.log_dir)
    with fsutil.locked(sdir / LOCK_NAME, wait=opts.wait or False, what="another convert-multilog"):
        log("Starting")
        services = find_services(opts.service_dir, opts.exclude, log)
        if total is not None:
            total(sum(_size(p) for _, s in services
                      for p in multilog.LogDir(s / "log" / "main").rotated()))
        jobs = opts.jobs or len(os.sched_getaffinity(0))
        if services:
            _times_of_day()  # once here, not in every worker
        if jobs <= 1 or len(services) <= 1:
            results = [convert_service(n, p, opts, log, progress) for n, p in services]
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
        return path.stat().st_size
    except OSError:
        return 0


def _parallel(services, opts: Options, jobs: int, log: Log, progress) -> list[ServiceResult]:
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
                name, path = todo.pop(0)
                spawned = workers.spawn(
                    lambda wfd, name=name, path=path: _worker(name, path, opts, wfd))
                if spawned is None:  # out of descriptors or processes: do this one here
                    results[name] = convert_service(name, path, opts, log, progress)
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
    return [results[name] for name, _ in services]


def _worker(name: str, path: Path, opts: Options, wfd: int) -> None:
    """In a forked worker: convert one service, streaming messages and the result to ``wfd``."""

    def send(kind: str, value) -> None:
        blob = pickle.dumps((kind, value))
        write_all(wfd, len(blob).to_bytes(4, "big") + blob)

    result = convert_service(
        name, path, opts, lambda m: send("log", m), lambda n: send("progress", n)
    )
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
        if not plain.is_file():
            continue
        packed = plain.with_name(entry + ".gz")
        data = plain.read_bytes()
        st_ = plain.stat()
        if not (packed.exists() and _gz_ends_with(packed, data)):
            log(f"Compressing {plain}")
            old = packed.read_bytes() if packed.exists() else b""
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


def _gzip_member(data: bytes, name: str) -> bytes:
    import gzip
    import io

    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, compresslevel=6, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def _gz_ends_with(path: Path, tail: bytes) -> bool:
    """True if the decompressed content of ``path`` ends with ``tail`` (streamed)."""
    import gzip

    keep = b""
    try:
        with gzip.open(path, "rb") as gz:
            while block := gz.read(1 << 20):
                keep = (keep + block)[-len(tail) :] if tail else b""
    except (OSError, EOFError):
        return False
    return keep == tail
