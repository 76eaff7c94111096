"""TAI64N labels, as daemontools, runit and s6 write them.

A label is ``@`` followed by 24 lower-case hex digits: 16 for the TAI64 second,
8 for the nanosecond.  daemontools (``tai64n``, ``multilog``) and runit
(``svlogd``) store ``2^62 + 10 + unix_seconds`` and ignore leap seconds; s6
(``s6-log``, ``s6-tai64n``) stores real TAI, ``2^62 + unix_seconds + TAI-UTC``,
which is 37 s since 2017 — 27 s ahead of the daemontools convention.

Everything here works on bytes: log lines may hold anything.

What counts as a label (and is converted) is what daemontools' ``tai64nlocal``
converts correctly: ``@``, exactly 24 lower-case hex digits, nanoseconds at most
999999999, not followed by another hex digit, and a time ``localtime`` can
render with a year of at least 1.  Everything else — upper-case hex, short or
long labels, nanoseconds out of range, absurd years — is left as it is (the C
tool crashes or prints garbage on those).
"""

from __future__ import annotations

import re
import sys
import time
from array import array
from binascii import unhexlify
from bisect import bisect_right
from collections.abc import Iterator

#: daemontools and runit: label = 2^62 + 10 + Unix seconds
LABEL_OFFSET = (1 << 62) + 10
#: s6 writes real TAI: 2^62 + Unix seconds + 37 (TAI-UTC since 2017-01-01; less before,
#: see ``tai_to_unix``)
TAI_OFFSET = (1 << 62) + 37

# Unix times at which TAI-UTC grew from 10 s (1972-01-01) by one leap second, to 37 s
# (2017-01-01); IERS has announced none since.  Same as the tz database's leap-seconds.list.
_LEAP_STARTS = (
    78796800, 94694400, 126230400, 157766400, 189302400, 220924800, 252460800, 283996800,
    315532800, 362793600, 394329600, 425865600, 489024000, 567993600, 631152000, 662688000,
    709948800, 741484800, 773020800, 820454400, 867715200, 915148800, 1136073600, 1230768000,
    1341100800, 1435708800, 1483228800,
)  # fmt: skip
# the TAI second (label - 2^62) of each leap second itself, shown as 23:59:60 UTC
_LEAP_TAI = tuple(start + 10 + i for i, start in enumerate(_LEAP_STARTS))

#: length of ``@`` + 24 hex digits
LABEL_LEN = 25
_HEX = b"0123456789abcdef"

# 8 hex digits of at most 0x3b9ac9ff (999999999), as a regular expression, so
# that out-of-range nanoseconds are rejected by the same C-speed scan.
_NANOS = (
    rb"(?:[0-2][0-9a-f]|3[0-9a])[0-9a-f]{6}"
    rb"|3b(?:[0-8][0-9a-f]|9[0-9])[0-9a-f]{4}"
    rb"|3b9a(?:[0-9ab][0-9a-f]|c[0-8])[0-9a-f]{2}"
    rb"|3b9ac9[0-9a-f]{2}"
)
_LABEL_BODY = rb"@([0-9a-f]{16})(" + _NANOS + rb")(?![0-9a-f])"
#: a convertible label at the start of a line (groups: 16 hex seconds, 8 hex nanoseconds)
LABEL_RE = re.compile(_LABEL_BODY)
# the same after a newline: splitting a block on it yields [text, sec, nano, text, ...]
_LINE_LABEL_RE = re.compile(rb"\n" + _LABEL_BODY)

# 4-byte unsigned array type code, for decoding all nanoseconds of a block at once
_U32 = next(code for code in "ILH" if array(code).itemsize == 4)
_SWAP = sys.byteorder == "little"

# "00." .. "60." (60: a leap second, in real TAI or zones like right/UTC; 61 for safety)
_SECONDS = [b"%02d." % sec for sec in range(62)]
# Beyond this many cached seconds the cache starts afresh (about 3 MB).
_CACHE_LIMIT = 20_000


def is_label(data: bytes) -> bool:
    """True if ``data`` starts with ``@`` + 24 lower-case hex digits."""
    return (
        len(data) >= LABEL_LEN and data[0] == 0x40 and not data[1:LABEL_LEN].translate(None, _HEX)
    )


def decode(data: bytes, offset: int = LABEL_OFFSET) -> tuple[int, int] | None:
    """(unix_seconds, nanoseconds) of the label at the start of ``data``, or None."""
    if not is_label(data):
        return None
    nanos = int(data[17:LABEL_LEN], 16)
    if nanos > 999_999_999:
        return None
    return int(data[1:17], 16) - offset, nanos


def encode(seconds: int, nanos: int = 0, offset: int = LABEL_OFFSET) -> bytes:
    """The label for a Unix time, as ``tai64n`` would write it."""
    return b"@%016x%08x" % (seconds + offset, nanos)


def tai_to_unix(tai: int) -> tuple[int, bool]:
    """Unix time of a real-TAI label's second (``tai`` = label - 2^62), and whether it is a
    leap second (then the Unix time is that of the midnight that follows it: ``23:59:60``).

    Like s6-tai64nlocal: TAI-UTC is 10 s before 1972, then grows with each leap second.
    """
    passed = bisect_right(_LEAP_TAI, tai)
    if passed and _LEAP_TAI[passed - 1] == tai:
        return _LEAP_STARTS[passed - 1], True
    return tai - 10 - passed, False


def to_unix(label_seconds: int, offset: int = LABEL_OFFSET) -> tuple[int, bool]:
    """(Unix time, is a leap second) of a label's second (``label_seconds``: its 16 hex digits).

    With ``TAI_OFFSET`` the label is real TAI, read with the leap-second table
    (``tai_to_unix``); otherwise the offset is subtracted (daemontools ignores leap seconds).
    """
    if offset == TAI_OFFSET:
        return tai_to_unix(label_seconds - (1 << 62))
    return label_seconds - offset, False


class _SecondCache(dict[bytes, bytes | None]):
    """16 hex digits of a label's second → ``b"\\nYYYY-MM-DD HH:MM:SS."`` (None: unrenderable).

    A miss in a log read in time order fills the whole local minute at once
    (60 entries made by C-level maps), so a million lines cost about as many
    ``localtime`` calls as they span minutes.
    """

    def __init__(self, offset: int) -> None:
        super().__init__()
        self.offset = offset
        self.real_tai = offset == TAI_OFFSET
        self.last_miss = -(1 << 70)

    def unix(self, label_seconds: int) -> tuple[int, bool]:
        """(Unix time, is a leap second) of a label's second."""
        return to_unix(label_seconds, self.offset)

    def __missing__(self, hex16: bytes) -> bytes | None:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        label_seconds = int(hex16, 16)
        unix, leap = self.unix(label_seconds)
        try:
            tm = time.localtime(unix - leap)  # a leap second: the second before, plus one
        except (OverflowError, OSError, ValueError):
            tm = None
        if tm is None or tm.tm_year < 1:  # the C tool crashes or prints garbage
            self[hex16] = None
            return None
        minute = b"\n%d-%02d-%02d %02d:%02d:" % tm[:5]
        if not leap and 0 <= unix - self.last_miss <= 300:  # in time order: fill the minute
            self._fill_minute(label_seconds - tm.tm_sec, unix - tm.tm_sec, tm[:5], minute)
        self.last_miss = unix
        value = minute + _SECONDS[tm.tm_sec + leap]
        self[hex16] = value
        return value

    def _fill_minute(self, label_start: int, unix_start: int, ymdhm: tuple, minute: bytes) -> None:
        # Only if the 60 seconds from the minute's start are one plain local
        # minute: no change of UTC offset and no leap second inside it.
        if self.real_tai and (
            self.unix(label_start) != (unix_start, False)
            or self.unix(label_start + 59) != (unix_start + 59, False)
        ):
            return
        try:
            first, last = time.localtime(unix_start), time.localtime(unix_start + 59)
        except (OverflowError, OSError, ValueError):
            return
        if first[:6] != (*ymdhm, 0) or last[:6] != (*ymdhm, 59):
            return
        keys = map(b"%016x".__mod__, range(label_start, label_start + 60))
        self.update(zip(keys, map(minute.__add__, _SECONDS[:60]), strict=True))


class LocalTime:
    """Local-time rendering of labels, like daemontools' ``tai64nlocal``.

    With ``offset=TAI_OFFSET`` labels are real TAI and read with the leap
    seconds, like s6-tai64nlocal.  The time zone is read once (TZ honoured).
    Formatted seconds are cached, since log lines come in time order.
    ``convert_lines`` converts a whole block of lines at C speed; ``runs`` does
    that and groups the lines by local date (convert-multilog); ``convert`` and
    ``date`` handle one line.
    """

    def __init__(self, offset: int = LABEL_OFFSET) -> None:
        time.tzset()
        self.offset = offset
        self._cache = _SecondCache(offset)

    def second(self, hex16: bytes) -> bytes:
        """``YYYY-MM-DD HH:MM:SS.`` for the 16 hex digits of a label's second.

        Raises ValueError for a second ``localtime`` cannot render.
        """
        prefix = self._cache[hex16]
        if prefix is None:
            raise ValueError(f"label second {hex16!r} is out of range")
        return prefix[1:]

    def convert(self, line: bytes) -> bytes:
        """The line with a leading label replaced by local time; else unchanged."""
        match = LABEL_RE.match(line)
        if match is None:
            return line
        prefix = self._cache[match[1]]
        if prefix is None:
            return line
        return b"%s%09d%s" % (prefix[1:], int(match[2], 16), line[LABEL_LEN:])

    def date(self, line: bytes) -> bytes | None:
        """The local ``YYYY-MM-DD`` of a line's label; None for a line without a usable one.

        A label whose year is not four digits (before 1000, after 9999) has no
        usable date either: such a line is routed like a continuation line.
        """
        match = LABEL_RE.match(line)
        if match is None:
            return None
        return _day(self._cache[match[1]])

    def convert_lines(self, data: bytes) -> bytes:
        """``data`` (whole lines, the last may lack its newline) with every label converted."""
        return self._convert_text(data, True)

    def convert_block(self, block: bytes) -> bytes:
        """Convert the labels that follow a newline in ``block``.

        The text before the block's first newline is left alone: it is the
        rest of a line whose start was converted before.  A label at the very
        end of the block is converted, so cut blocks after a newline.
        """
        return self._convert_text(block, False)

    def _split(self, text: bytes) -> tuple[list, list[bytes]]:
        """``text`` cut at the labels after its newlines: ``[text, prefix, nanos, text, ...]``
        (each prefix ``b"\\nYYYY-MM-DD HH:MM:SS."``, None where localtime cannot render the
        second), and the labels' 16-hex-digit seconds."""
        parts = _LINE_LABEL_RE.split(text)
        seconds = parts[1::3]
        if seconds:
            nanos = array(_U32, unhexlify(b"".join(parts[2::3])))
            if _SWAP:
                nanos.byteswap()
            parts[1::3] = map(self._cache.__getitem__, seconds)
            parts[2::3] = nanos.tolist()
        return parts, seconds

    def _convert_text(self, text: bytes, at_line_start: bool) -> bytes:
        parts, seconds = self._split(text)
        if at_line_start:
            parts[0] = self.convert(parts[0])
        count = len(seconds)
        if not count:
            return parts[0]
        try:
            return (b"%s" + b"%s%09d%s" * count) % tuple(parts)
        except TypeError:  # a None prefix: a second localtime cannot render
            return b"".join(_pieces_slowly(parts, seconds))

    def runs(self, data: bytes) -> list[tuple[bytes | None, bytes, int]]:
        """``data`` (whole lines) converted, in runs ``(date, lines, line count)``, in order.

        A run's date is the ``b"YYYY-MM-DD"`` of its first line.  Lines without a
        usable label (none, a malformed one, a second localtime cannot render, a
        year that is not four digits) are continuation lines: they stay in the run
        of the line before them, or, before the first dated line, make a run whose
        date is None.  The text is what ``convert`` gives line by line, each line
        ending with a newline (a last line without one gets it).  This is how
        convert-multilog routes lines to day files.
        """
        if not data:
            return []
        if data[-1] != 0x0A:
            data += b"\n"
        # Every piece of the split starts with the newline that ends the line before it;
        # a run's text is its pieces joined, that first newline moved to the end.
        parts, seconds = self._split(b"\n" + data)
        count = len(seconds)
        days = dict.fromkeys(parts[1::3])
        if None in days:  # a second localtime cannot render: rare, piece by piece
            pieces = list(_pieces_slowly(parts, seconds))
            dates = [None, *(_day(p) for p in parts[1::3])]
            return _group(pieces, dates)
        for prefix in days:
            days[prefix] = _day(prefix)
        lead = parts[0]  # lines before the first label
        if len(set(days.values())) == 1 and None not in days.values():
            parts[0] = b""
            body = (b"%s" + b"%s%09d%s" * count) % tuple(parts)
            date = next(iter(days.values()))
            runs: list[tuple[bytes | None, bytes, int]] = []
            if lead:
                runs.append((None, lead[1:] + b"\n", lead.count(b"\n")))
            text = body[1:]
            runs.append((date, text, text.count(b"\n")))
            return runs
        pieces = [lead]
        pieces.extend(
            map(b"%s%09d%s".__mod__, zip(parts[1::3], parts[2::3], parts[3::3], strict=True))
        )
        return _group(pieces, [None, *map(days.__getitem__, parts[1::3])])


def _day(prefix: bytes | None) -> bytes | None:
    """The ``YYYY-MM-DD`` of a cached prefix; None if unrenderable or the year is not 4 digits."""
    if prefix is None or len(prefix) != 21:  # b"\nYYYY-MM-DD HH:MM:SS."
        return None
    return prefix[1:11]


def _pieces_slowly(parts: list, seconds: list[bytes]) -> Iterator[bytes]:
    """The converted pieces of a split text, a label whose second cannot be rendered kept."""
    yield parts[0]
    for i, hex16 in enumerate(seconds):
        prefix, nanos, text = parts[3 * i + 1 : 3 * i + 4]
        if prefix is None:
            yield b"\n@%s%08x%s" % (hex16, nanos, text)  # unchanged
        else:
            yield b"%s%09d%s" % (prefix, nanos, text)


def _group(pieces: list[bytes], dates: list[bytes | None]) -> list[tuple[bytes | None, bytes, int]]:
    """Runs of pieces by date, a piece without a date joining the run before it."""
    runs: list[tuple[bytes | None, bytes, int]] = []

    def close(start: int, end: int, date: bytes | None) -> None:
        text = b"".join(pieces[start:end])
        if text:  # (an empty first piece: no lines before the first label)
            text = text[1:] if end == len(pieces) else text[1:] + b"\n"
            runs.append((date, text, text.count(b"\n")))

    start, current = 0, dates[0]
    for i in range(1, len(pieces)):
        date = dates[i]
        if date is not None and date != current:
            close(start, i, current)
            start, current = i, date
    close(start, len(pieces), current)
    return runs
