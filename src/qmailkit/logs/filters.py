"""Streaming log filters on file descriptors: ``tai64nlocal`` and ``tai64n``.

Both work on raw bytes in large reads, write each read's result with one
``write``, and keep at most a few chunks in memory whatever the input (a line
longer than a chunk is passed on in pieces).  Nothing waits for more input
than the read at hand, so either can sit in a pipeline (``tail -f | ...``).

Errors: a failed read or write raises ``QmailkitError`` (exit 111) naming
which; a reader that went away raises ``BrokenPipeError``, which the command
layer treats as a normal end.
"""

from __future__ import annotations

import os
import stat
import time

from qmailkit.errors import QmailkitError
from qmailkit.logs.tai64n import LABEL_OFFSET, LocalTime

#: bytes per read (256 KiB: 1 MiB buffers cost mmap/munmap per read and cache misses)
CHUNK = 1 << 18


def _read(fd: int, size: int) -> bytes:
    try:
        return os.read(fd, size)
    except OSError as err:
        raise QmailkitError(f"unable to read input: {err.strerror or err}") from err


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except BrokenPipeError:
        raise
    except OSError as err:
        raise QmailkitError(f"unable to write output: {err.strerror or err}") from err


def tai64nlocal(
    infd: int = 0, outfd: int = 1, offset: int = LABEL_OFFSET, chunk: int = CHUNK
) -> None:
    """Copy ``infd`` to ``outfd``, replacing each line's leading label by local time.

    Byte-identical to daemontools' ``tai64nlocal`` for well-formed labels;
    malformed ones pass unchanged.  One difference: a label that ends the
    input without a newline is converted (the C tool drops it).
    """
    chunk = max(chunk, 64)  # a line's label and the byte after it fit in one chunk
    localtime = LocalTime(offset)
    carry = b""  # the start of a line whose end has not been read yet
    at_line_start = True  # does ``carry`` (or the next read) start a line?
    while data := _read(infd, chunk):
        buf = carry + data
        cut = buf.rfind(b"\n") + 1  # end of the last whole line; 0: none
        if cut:
            block, carry = buf[:cut], buf[cut:]
        elif len(buf) >= chunk:
            # A very long line: its start (label included) is all here; pass it
            # on now and the rest of the line as it comes.
            block, carry = buf, b""
        else:
            carry = buf
            continue
        _write(outfd, _convert(localtime, block, at_line_start))
        at_line_start = cut > 0
    if carry:
        _write(outfd, _convert(localtime, carry, at_line_start))


def _convert(localtime: LocalTime, block: bytes, at_line_start: bool) -> bytes:
    if at_line_start:
        return localtime.convert_lines(block)
    return localtime.convert_block(block)  # its first line's start went out before


def _is_stream(fd: int) -> bool:
    """True for a pipe, socket or terminal: someone may be waiting for each line."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


def tai64n(
    infd: int = 0,
    outfd: int = 1,
    offset: int = LABEL_OFFSET,
    chunk: int = CHUNK,
    per_line: bool | None = None,
) -> None:
    """Copy ``infd`` to ``outfd``, putting the current label and a space before each line.

    Like daemontools' ``tai64n``.  A line is stamped when its first byte is
    read.  With ``per_line`` (default: when ``outfd`` is a pipe, socket or
    terminal) every line gets its own fresh time; otherwise all lines of one
    read share the time of that read.  Output is written after every read.
    """
    chunk = max(chunk, 64)
    if per_line is None:
        per_line = _is_stream(outfd)
    at_line_start = True
    while data := _read(infd, chunk):
        ends_line = data.endswith(b"\n")
        body = data[:-1] if ends_line else data
        if per_line:
            lines = body.split(b"\n")
            stamped = [_stamp(offset) + line for line in lines]
            if not at_line_start:  # the first piece continues a line already stamped
                stamped[0] = lines[0]
            out = b"\n".join(stamped)
        else:
            stamp = _stamp(offset)
            out = body.replace(b"\n", b"\n" + stamp)
            if at_line_start:
                out = stamp + out
        if ends_line:
            out += b"\n"
        at_line_start = ends_line
        _write(outfd, out)


def _stamp(offset: int) -> bytes:
    ns = time.time_ns()
    return b"@%016x%08x " % (ns // 1_000_000_000 + offset, ns % 1_000_000_000)
