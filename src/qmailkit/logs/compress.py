"""Compressing old day files: ``SERVICE.YYYY-MM-DD`` → ``SERVICE.YYYY-MM-DD.gz``, safely.

The ``.gz`` replaces the old one atomically (same mode and owner as the plain
file), then the plain file is removed.  If both exist (a crash in between, or
lines for an old day that arrived later), the plain file's content is appended
as a new gzip member unless the ``.gz`` already ends with it; ``zcat`` reads
all members.  Day files can be large, so everything is streamed: memory stays
at a few buffers whatever their size.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import os
import stat
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from qmailkit import fsutil
from qmailkit.logs import logdir

#: bytes per read or write while streaming a day file
BLOCK = 1 << 20

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


def gzip_old_days(
    log_dir: Path, service: str, days: int, today: str | None = None, log: Log | None = None
) -> list[str]:
    """gzip ``LOGDIR/SERVICE.YYYY-MM-DD`` files more than ``days`` days old; the names done.

    ``today`` is ``YYYY-MM-DD`` (default: the local date).  Only regular files
    are compressed, never through a symlink.
    """
    log = log or _quiet
    if today is None:
        today = time.strftime("%Y-%m-%d")
    limit = (datetime.date.fromisoformat(today) - datetime.timedelta(days=days)).isoformat()
    done = []
    for entry in sorted(os.listdir(log_dir)):
        date = logdir.day_file_date(entry, service)
        if date is not None and date < limit and _gzip_day_file(Path(log_dir), entry, log):
            done.append(entry)
    return done


def _gzip_day_file(log_dir: Path, entry: str, log: Log) -> bool:
    """Compress one day file; False if it is gone or not a regular file (left alone)."""
    plain = log_dir / entry
    try:
        info = os.lstat(plain)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode):
        return False  # never through a symlink, never a FIFO
    packed = plain.with_name(entry + ".gz")
    with contextlib.ExitStack() as files:
        plain_file = files.enter_context(fsutil.open_input(plain, follow=False))
        packed_file = None
        if os.path.lexists(packed):  # a regular file too, or an error naming it
            packed_file = files.enter_context(fsutil.open_input(packed, follow=False))
        if packed_file is None or not _ends_with(packed_file, plain_file):
            log(f"Compressing {plain}")
            _write_packed(packed, packed_file, plain_file, entry, info)
    os.unlink(plain)
    fsutil.fsync_dir(log_dir)
    return True


def _write_packed(
    packed: Path,
    packed_file: BinaryIO | None,
    plain_file: BinaryIO,
    entry: str,
    info: os.stat_result,
) -> None:
    """Replace ``packed`` by its old members (if any) and a new one holding ``plain_file``."""
    owner = (info.st_uid, info.st_gid) if os.geteuid() == 0 else None
    plain_file.seek(0)
    with fsutil.atomic_file(packed, mode=info.st_mode & 0o7777, owner=owner) as out:
        if packed_file is not None:
            packed_file.seek(0)
            _copy(packed_file, out)
        with gzip.GzipFile(filename=entry, mode="wb", fileobj=out, compresslevel=6, mtime=0) as gz:
            _copy(plain_file, gz)


def _copy(source: BinaryIO, target: BinaryIO | gzip.GzipFile) -> None:
    # (not shutil.copyfileobj: importing shutil costs every convert-multilog run 2 ms)
    while block := source.read(BLOCK):
        target.write(block)


def _ends_with(packed_file: BinaryIO, plain_file: BinaryIO) -> bool:
    """True if ``packed_file`` decompressed ends with ``plain_file``'s content.

    Two streamed passes over the ``.gz`` (its length, then the comparison of
    its tail), so memory stays bounded.  A damaged or empty ``.gz`` ends with
    nothing: the plain file then goes in a new member after it.
    """
    if os.fstat(packed_file.fileno()).st_size == 0:
        return False
    want = os.fstat(plain_file.fileno()).st_size
    try:
        with gzip.GzipFile(fileobj=packed_file) as gz:
            total = _drop(gz, 1 << 62)
        if total < want:
            return False
        packed_file.seek(0)
        with gzip.GzipFile(fileobj=packed_file) as gz:
            _drop(gz, total - want)
            plain_file.seek(0)
            while block := plain_file.read(BLOCK):
                if gz.read(len(block)) != block:
                    return False
            return gz.read(1) == b""
    except (OSError, EOFError, zlib.error):
        return False


def _drop(source: BinaryIO | gzip.GzipFile, count: int) -> int:
    """Read and drop up to ``count`` bytes of ``source``; how many there were."""
    dropped = 0
    while dropped < count and (block := source.read(min(BLOCK, count - dropped))):
        dropped += len(block)
    return dropped
