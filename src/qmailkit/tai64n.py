"""TAI64N labels, as daemontools, runit and s6 write them.

A label is ``@`` followed by 24 lower-case hex digits: 16 for the TAI64 second,
8 for the nanosecond.  daemontools (``tai64n``, ``multilog``) and runit
(``svlogd``) store ``2^62 + 10 + unix_seconds`` and ignore leap seconds; s6
(``s6-log``, ``s6-tai64n``) stores real TAI, ``2^62 + unix_seconds + TAI-UTC``,
which is 37 s since 2017 — 27 s ahead of the daemontools convention.

Everything here works on bytes: log lines may hold anything.
"""

from __future__ import annotations

import time

#: daemontools and runit: label = 2^62 + 10 + Unix seconds
LABEL_OFFSET = (1 << 62) + 10
#: s6 writes real TAI: 2^62 + Unix seconds + 37 (TAI-UTC since 2017-01-01)
TAI_OFFSET = (1 << 62) + 37

#: length of ``@`` + 24 hex digits
LABEL_LEN = 25
_HEX = b"0123456789abcdef"


def is_label(data: bytes) -> bool:
    """True if ``data`` starts with a well-formed label (``@`` + 24 lower-case hex)."""
    return (
        len(data) >= LABEL_LEN
        and data[0] == 0x40
        and not data[1:LABEL_LEN].translate(None, _HEX)
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


def now_label(offset: int = LABEL_OFFSET) -> bytes:
    """The label for the current time."""
    ns = time.time_ns()
    return encode(ns // 1_000_000_000, ns % 1_000_000_000, offset)


class LocalTime:
    """Local-time rendering of labels, like daemontools' ``tai64nlocal``.

    Log lines come in time order, so the formatted second is cached: most
    lines cost one dict lookup.  The time zone is read once (TZ honoured).
    """

    def __init__(self, offset: int = LABEL_OFFSET) -> None:
        time.tzset()
        self.offset = offset
        self._seconds: dict[bytes, bytes] = {}

    def second(self, hex16: bytes) -> bytes:
        """``YYYY-MM-DD HH:MM:SS.`` for the 16 hex digits of a label's second."""
        text = self._seconds.get(hex16)
        if text is None:
            if len(self._seconds) > 4096:
                self._seconds.clear()
            tm = time.localtime(int(hex16, 16) - self.offset)
            text = b"%d-%02d-%02d %02d:%02d:%02d." % tm[:6]
            self._seconds[hex16] = text
        return text

    def convert(self, line: bytes) -> bytes:
        """The line with a leading well-formed label replaced by local time; else unchanged."""
        if not is_label(line) or line[17:LABEL_LEN] > b"3b9ac9ff":
            return line
        return self.second(line[1:17]) + b"%09d" % int(line[17:LABEL_LEN], 16) + line[LABEL_LEN:]

    def date(self, line: bytes) -> bytes | None:
        """The local ``YYYY-MM-DD`` of a line's label, or None for a line without one."""
        if not is_label(line):
            return None
        return self.second(line[1:17])[:-10]  # years before 1000 or after 9999 are not 4 digits
