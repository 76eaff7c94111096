"""qmailkit.logs.tai64n: labels, and the block converter against the one-line one and an oracle."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from support.tai64n import BAD_LINES, label, set_tz, zone

from qmailkit.logs.tai64n import (
    _LEAP_TAI,
    LABEL_LEN,
    LABEL_OFFSET,
    LABEL_RE,
    TAI_OFFSET,
    LocalTime,
    decode,
    encode,
    is_label,
)

OFFSETS = st.sampled_from([LABEL_OFFSET, TAI_OFFSET])
NANOS = st.integers(0, 999_999_999)


@pytest.fixture(autouse=True)
def restore_tz(monkeypatch):
    yield
    monkeypatch.undo()
    time.tzset()


@settings(deadline=None)  # the machine is shared: no per-example time limit
@given(offset=OFFSETS, data=st.data(), nanos=NANOS)
def test_encode_decode_round_trip(offset, data, nanos):
    seconds = data.draw(st.integers(-offset, (1 << 64) - 1 - offset))
    encoded = encode(seconds, nanos, offset)
    assert len(encoded) == LABEL_LEN and is_label(encoded)
    assert encoded == encoded.lower()
    assert decode(encoded + b" text", offset) == (seconds, nanos)


@settings(deadline=None)
@given(hex24=st.binary(min_size=24, max_size=24).map(lambda b: b.hex()[:24].encode()))
def test_decode_encode_round_trip(hex24):
    label_bytes = b"@" + hex24
    decoded = decode(label_bytes)
    if int(hex24[16:], 16) > 999_999_999:
        assert decoded is None
    else:
        assert encode(*decoded) == label_bytes


def test_the_two_conventions_are_27_seconds_apart():
    s6_label = encode(1_700_000_000, 0, TAI_OFFSET)
    assert decode(s6_label) == (1_700_000_027, 0)
    assert decode(s6_label, TAI_OFFSET) == (1_700_000_000, 0)


@pytest.mark.parametrize("line", [b"", b"@", b"@4000", b"x" * 30, b"@4000000065A1B2C300000000"])
def test_not_labels(line):
    assert not is_label(line)
    assert decode(line) is None


@settings(deadline=None)
@given(nanos=st.integers(0, 0xFFFFFFFF))
@example(nanos=999_999_999)
@example(nanos=1_000_000_000)
@example(nanos=0x3B9AC9F0)
@example(nanos=0x3B9AD000)
@example(nanos=0x3B9A0000)
@example(nanos=0x3B000000)
def test_the_label_pattern_takes_nanoseconds_up_to_999999999(nanos):
    line = b"@4000000065a1b2c3%08x x" % nanos
    assert (LABEL_RE.match(line) is not None) == (nanos <= 999_999_999)


def test_every_boundary_of_the_nanosecond_pattern():
    # each hex digit of 3b9ac9ff, one above and one below
    for n in range(0x3B9AC900, 0x3B9ACA10):
        assert (LABEL_RE.match(b"@4000000065a1b2c3%08x" % n) is not None) == (n <= 999_999_999)
    for shift in range(0, 32, 4):
        for n in (999_999_999 - (1 << shift), 999_999_999 + (1 << shift)):
            assert (LABEL_RE.match(b"@4000000065a1b2c3%08x" % n) is not None) == (n <= 999_999_999)


@settings(max_examples=300, deadline=None)
@given(seconds=st.integers(-2_208_988_800, 7_258_118_400), nanos=NANOS, text=st.binary())
def test_convert_matches_an_independent_oracle_in_utc(seconds, nanos, text):
    when = datetime.fromtimestamp(seconds, UTC)
    expected = b"%d-%02d-%02d %02d:%02d:%02d.%09d" % (
        when.year,
        when.month,
        when.day,
        when.hour,
        when.minute,
        when.second,
        nanos,
    )
    text = text.lstrip(b"0123456789abcdef")
    with zone("UTC"):
        local = LocalTime()
        assert local.convert(label(seconds, nanos) + text) == expected + text
        assert local.date(label(seconds, nanos) + text) == expected[:10]
        assert local.second(b"%016x" % (seconds + LABEL_OFFSET)) == expected[:20]


# Lines close to labels: valid ones, near misses, random bytes (no newline inside).
LINE = st.one_of(
    st.builds(
        lambda s, n, t: label(s, n) + t,
        st.integers(-3_000_000_000, 5_000_000_000),
        NANOS,
        st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")),
    ),
    st.sampled_from(BAD_LINES),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.builds(lambda t: b"@" + t, st.text("0123456789abcdefABX @", max_size=30).map(str.encode)),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(LINE, max_size=30), tz=st.sampled_from(["UTC", "Europe/Berlin"]))
def test_block_conversion_equals_line_by_line(lines, tz):
    with zone(tz):
        local = LocalTime()
        data = b"\n".join(lines)
        assert local.convert_lines(data) == b"\n".join(local.convert(line) for line in lines)
        # a block that starts inside a line leaves that line's start alone
        assert local.convert_block(data) == b"\n".join(
            [lines[0], *map(local.convert, lines[1:])] if lines else []
        )


# Label seconds: ordinary times, years that are not four digits, and real TAI's leap seconds.
_LEAPS = [t for leap in _LEAP_TAI for t in range(leap - 2, leap + 3)]
RUN_LINE = st.one_of(
    st.builds(
        lambda s, n, t: b"@%016x%08x" % (s + (1 << 62), n) + t,
        st.one_of(
            st.integers(1_600_000_000, 1_600_300_000),  # one file's few days
            st.integers(-40_000_000_000, 300_000_000_000),  # years 700 to 11000
            st.sampled_from(_LEAPS),
            st.integers(2**62, 2**63),  # beyond localtime
        ),
        NANOS,
        st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")),
    ),
    st.sampled_from(BAD_LINES),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
)


@settings(max_examples=400, deadline=None)
@given(
    offset=OFFSETS,
    lines=st.lists(RUN_LINE, min_size=1, max_size=40),
    tz=st.sampled_from(["UTC", "Europe/Berlin", "right/UTC"]),
    newline=st.booleans(),
)
def test_runs_equal_the_line_by_line_engine(offset, lines, tz, newline):
    """convert-multilog's bulk path (runs) is convert + date line by line, for both offsets."""
    assume(newline or lines[-1])  # else the last "line" is no line at all
    with zone(tz):
        local = LocalTime(offset)
        runs = local.runs(b"\n".join(lines) + b"\n" * newline)
        assert b"".join(text for _, text, _ in runs) == b"".join(
            local.convert(line) + b"\n" for line in lines
        )
        assert sum(n for _, _, n in runs) == len(lines)
        want, date = [], None
        for line in lines:  # a line without a usable date goes with the line before it
            date = local.date(line) or date
            want.append(date)
        assert [d for d, _, n in runs for _ in range(n)] == want
        dates = [d for d, _, _ in runs]
        assert all(a != b for a, b in pairwise(dates))  # each run as long as it can be
        assert None not in dates[1:]


def test_bad_lines_are_unchanged_and_dateless(monkeypatch):
    set_tz(monkeypatch, "UTC")
    local = LocalTime()
    for line in BAD_LINES:
        assert local.convert(line) == line
        assert local.date(line) is None
    block = b"\n".join(BAD_LINES) + b"\n"
    assert local.convert_lines(block) == block


def test_unrenderable_second_is_an_error_for_second():
    with pytest.raises(ValueError, match="out of range"):
        LocalTime().second(b"7fffffffffffffff")


def test_the_cache_stays_bounded(monkeypatch):
    set_tz(monkeypatch, "UTC")
    local = LocalTime()
    lines = [label(1_000_000_000 + 7 * i, i) + b" x" for i in range(60_000)]
    out = local.convert_lines(b"\n".join(lines))
    assert len(local._cache) <= 20_061
    last = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(1_000_000_000 + 7 * 59_999))
    assert out.split(b"\n")[-1] == last.encode() + b".000059999 x"


def test_year_before_1000_and_after_9999_like_the_c_tool(monkeypatch):
    set_tz(monkeypatch, "UTC")
    local = LocalTime()
    assert local.convert(label(-30_610_224_000 - 86400, 5) + b" y") == (
        b"999-12-31 00:00:00.000000005 y"
    )
    assert local.convert(label(253_402_300_800, 0)) == b"10000-01-01 00:00:00.000000000"
    # no day file "svc.999-12-31": such a line is routed like a continuation line
    assert local.date(label(-30_610_224_000 - 86400, 5)) is None
    assert local.date(label(253_402_300_800, 0)) is None
    assert local.date(label(253_402_300_799, 0)) == b"9999-12-31"
    assert local.date(label(-30_610_224_000, 0)) == b"1000-01-01"


@settings(deadline=None)
@given(unix=st.integers(-(10**10), 10**10))
def test_real_tai_round_trip(unix):
    """tai_to_unix undoes TAI = Unix + TAI-UTC (10 s before 1972, +1 per leap second)."""
    from qmailkit.logs.tai64n import _LEAP_STARTS, tai_to_unix

    tai_minus_utc = 10 + sum(1 for start in _LEAP_STARTS if start <= unix)
    assert tai_to_unix(unix + tai_minus_utc) == (unix, False)


def test_leap_seconds_are_marked():
    from qmailkit.logs.tai64n import tai_to_unix

    assert tai_to_unix(1_483_228_800 + 36) == (1_483_228_800, True)  # 2016-12-31 23:59:60
    assert tai_to_unix(1_483_228_800 + 37) == (1_483_228_800, False)
    assert tai_to_unix(78_796_800 + 10) == (78_796_800, True)  # 1972-06-30 23:59:60
    local = LocalTime(TAI_OFFSET)
    assert local.second(b"%016x" % ((1 << 62) + 1_483_228_836))[-3:] == b"60."
    assert local.date(b"@%016x00000000 x" % ((1 << 62) + 1_483_228_836)) in (
        b"2016-12-31",
        b"2017-01-01",  # east of Greenwich
    )
