"""Generated log data for the tai64nlocal tests: labels around the hard dates, odd lines."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from qmailkit.logs.tai64n import LABEL_OFFSET

QMAILKIT = str(Path(sys.executable).with_name("qmailkit"))

# Time zones: plain, DST north and south, half-hour offset, a 30-minute DST
# (Lord Howe), an offset with seconds in its history (Amsterdam, +00:19:32 until
# 1937) and one that counts leap seconds (right/UTC prints 23:59:60).
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Europe/Amsterdam",
    "right/UTC",
]

# (first Unix second, how many seconds to cover densely)
HARD_TIMES = [
    (0, 300),  # 1970-01-01 00:00:00 UTC
    (-200, 200),  # just before 1970
    (-1_000_000_000, 120),  # 1938
    (-1_025_000_000, 120),
    (-1_029_189_600 - 7200, 10800),  # 1937-05-22: Amsterdam +00:19:32 to +01:19:32
    (-1_025_744_400 - 7200, 10800),  # 1937-07-01: Amsterdam +01:19:32 to +01:20
    (2_147_483_647 - 150, 300),  # 2038-01-19 03:14:07 UTC, the 32-bit end
    (1_679_792_400 - 3700, 7400),  # 2023-03-26 01:00 UTC: Europe spring forward
    (1_698_541_200 - 3700, 7400),  # 2023-10-29 01:00 UTC: Europe fall back
    (1_710_054_000 - 3700, 7400),  # 2024-03-10 07:00 UTC: New York spring forward
    (1_730_613_600 - 3700, 7400),  # 2024-11-03 06:00 UTC: New York fall back
    (1_712_415_600 - 3700, 7400),  # 2024-04-06/07: Lord Howe, 30 minutes back
    (1_483_228_800 - 120, 300),  # 2016-12-31 23:59:60 (right/UTC counts it)
    (1_483_228_800 + 27 - 120, 300),  # the same moment in right/ time_t terms
    (4_102_444_800 - 150, 300),  # 2100-01-01 00:00 UTC
    (4_109_878_800 - 3700, 7400),  # 2100-03-28 01:00 UTC: Europe spring forward
    (4_128_022_800 - 3700, 7400),  # 2100-10-24 01:00 UTC: Europe fall back
]

# Lines the C tool converts correctly, with what may follow a label.
TEXTS = [
    b" tcpserver: status: 1/100",
    b" qmail-smtpd: pid 4711 from 192.0.2.7 HELO <x.example> \xff\xfe not utf-8",
    b" with\rembedded CR\r",
    b" NUL\x00byte",
    b"",  # a bare label
    b"X glued to the label",
    b"@ a second at-sign",
    b" ",
    b"\t\ttabs",
]
PLAIN_LINES = [
    b"",
    b"no label at all",
    b"\r",
    b" @4000000065a1b2c300000000 label not at the start",
    b"x@4000000065a1b2c300000000",
    b"\x00\x01\x02 binary",
    b"continuation of a split line",
]

# Lines daemontools' tai64nlocal crashes on or garbles; ours passes them unchanged.
BAD_LINES = [
    b"@",
    b"@ text",
    b"@short 123",
    b"@4000000065a1b2c3 short",
    b"@4000000065A1B2C300000000 upper-case hex",
    b"@4000000065a1b2c30000574A upper-case nanoseconds",
    b"@4000000065a1b2c33b9aca00 nanoseconds 1000000000",
    b"@4000000065a1b2c3ffffffff nanoseconds 4294967295",
    b"@4000000065a1b2c300000000abc followed by hex digits",
    b"@4000000065a1b2c300000000f",
    b"@0000000000000000000000000 year out of range",
    b"@00000000000000000000000 x",
    b"@7fffffffffffffff00000000 year out of range",
    b"@3ffffff1886b660a0000000a two days before year 1",
]


def label(unix: int, nanos: int, offset: int = LABEL_OFFSET) -> bytes:
    return b"@%016x%08x" % (unix + offset, nanos)


def good_lines(seed: int = 7, spread: int = 3000) -> list[bytes]:
    """Well-formed lines: dense labels over the hard times, a random spread, plain lines."""
    rng = random.Random(seed)
    lines = []
    for start, span in HARD_TIMES:
        t = start * 10**9
        end = (start + span) * 10**9
        while t < end:
            t += rng.randrange(1, max(2, span * 10**9 // 400))
            lines.append(label(t // 10**9, t % 10**9) + rng.choice(TEXTS))
            if rng.random() < 0.05:
                lines.append(rng.choice(PLAIN_LINES))
    for _ in range(spread):  # out of order, 1000..2200 and a few huge years
        unix = rng.randrange(-30_610_224_000, 7_258_118_400)
        lines.append(label(unix, rng.randrange(10**9)) + rng.choice(TEXTS))
    lines.append(label(-30_610_224_000 - 86400 * 400, 5) + b" year 999")
    lines.append(label(281_474_976_710_000, 999_999_999) + b" year 8921556")
    lines.append(label(1_700_000_000, 0) + b" nanoseconds 0")
    lines.append(label(1_700_000_000, 999_999_999) + b" nanoseconds 999999999")
    return lines


def run_c(data: bytes, tz: str, prog: str = "tai64nlocal") -> subprocess.CompletedProcess:
    env = dict(os.environ, TZ=tz)
    return subprocess.run([prog], input=data, capture_output=True, env=env, timeout=60, check=False)


def run_ours(
    data: bytes, tz: str, *args: str, command: str = "tai64nlocal"
) -> subprocess.CompletedProcess:
    env = dict(os.environ, TZ=tz)
    return subprocess.run(
        [QMAILKIT, command, *args],
        input=data,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


def set_tz(monkeypatch, tz: str) -> None:
    """Set TZ for this process (undone, and re-read, by the ``restore_tz`` fixture)."""
    monkeypatch.setenv("TZ", tz)
    time.tzset()


@contextlib.contextmanager
def zone(tz: str):
    """TZ=tz for this process inside the block (for hypothesis tests, where fixtures persist)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = tz
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
