"""A log directory as multilog, svlogd and s6-log keep it.

All three write ``current`` and rotate it to ``@<label>.s`` (finished safely)
or ``@<label>.u`` (found unfinished after a crash), where the label is the
TAI64N time of the rotation: fixed-width lower-case hex, so name order is time
order.  Besides those they keep ``lock``, ``state``, ``newstate``, ``previous``,
``processed`` (multilog, s6-log) or ``config`` (svlogd); none of these is a
log file.  ``*.done`` files are inputs that convert-multilog kept (``-r``).

multilog can hand a rotated file to a processor (``!gzip``); such files are
still called ``@….s`` and are read transparently when gzip'd.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from qmailkit import tai64n

# The original's glob was ``@*.[su]``; keep it that wide so unusual but valid
# names (a processor's output) are never left behind.
_ROTATED = re.compile(r"@.*\.[su]\Z", re.DOTALL)
_LABEL_NAME = re.compile(r"@([0-9a-f]{24})\.[su]\Z")


def is_rotated_name(name: str) -> bool:
    """True for ``@….s`` / ``@….u`` names (never ``current``, never ``….done``)."""
    return bool(_ROTATED.match(name))


@dataclass(frozen=True)
class LogDir:
    """One logger's directory, e.g. ``/service/qmail-send/log/main``."""

    path: Path

    @property
    def current(self) -> Path:
        return self.path / "current"

    def rotated(self) -> list[Path]:
        """The rotated files, oldest first (name order = time order)."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return [self.path / n for n in sorted(names) if is_rotated_name(n)]

    def rotated_names(self) -> set[str]:
        try:
            return {n for n in os.listdir(self.path) if is_rotated_name(n)}
        except FileNotFoundError:
            return set()

    def current_size(self) -> int:
        try:
            return self.current.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_for_rotation(self, before: set[str], timeout: float) -> list[str]:
        """Poll until a rotated file not in ``before`` appears; returns the new names.

        The loggers rename ``current`` to its ``@`` name in one step, so a new
        name means the file is complete.  Returns [] on timeout.
        """
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            new = sorted(self.rotated_names() - before)
            if new or time.monotonic() >= deadline:
                return new
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def rotation_time(path: str | os.PathLike[str], offset: int = tai64n.LABEL_OFFSET) -> float:
    """Unix time a rotated file was made: from its ``@label`` name, else its mtime."""
    m = _LABEL_NAME.match(os.path.basename(path))
    if m:
        decoded = tai64n.decode(b"@" + m.group(1).encode(), offset)
        if decoded is not None:
            return decoded[0] + decoded[1] / 1e9
    return os.stat(path).st_mtime


#: rotated files hold up to 16 MB (multilog's cap); they are read in pieces of at most
#: this size, so that converting one (several lists of its lines) stays within ~30 MB
CHUNK = 4 << 20
_GZIP_MAGIC = b"\x1f\x8b"


def read_chunks(path: str | os.PathLike[str], size: int = CHUNK):
    """Yield the file's content in pieces that end at a newline (except a last partial line).

    A file up to ``size`` bytes (every rotated file, normally) comes in one piece.
    A gzip'd file (multilog ``!gzip`` processor) is decompressed.
    """
    with open(path, "rb", buffering=0) as fh:
        if os.fstat(fh.fileno()).st_size <= size:
            data = fh.readall()  # one exact-size read
            if data[:2] == _GZIP_MAGIC:
                import gzip  # rare: only multilog's !gzip processor makes these

                data = gzip.decompress(data)
            if data:
                yield data
            return
        head = fh.read(2)
        if head == _GZIP_MAGIC:
            import gzip

            fh.seek(0)
            yield gzip.GzipFile(fileobj=fh).read()
            return
        carry = head
        while True:
            block = fh.read(size)
            if not block:
                if carry:
                    yield carry
                return
            data = carry + block if carry else block
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry = data
                continue
            carry = data[cut:]
            yield data[:cut]
