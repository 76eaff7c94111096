"""cdb's text formats: cdbmake input (``+KLEN,DLEN:KEY->DATA`` lines, a blank
line at the end), cdbmake-12 style ``KEY VALUE`` lines, and dumps.

Parsers stream: they read the input in chunks and yield ``(keys, values, nbytes)``
batches, so memory stays bounded however large the input.  A chunk is first
parsed in bulk (split, then checked exactly); any chunk the bulk path cannot
prove right is parsed record by record, which also finds the line of an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from qmailkit.cdb.format import MAX_SIZE
from qmailkit.cdb.writer import Writer, make
from qmailkit.errors import QmailkitError

CHUNK = 1 << 18
# The error exit of cdbmake for malformed input is 111, and qmailkit keeps it.
MALFORMED_EXIT = 111

_HEAD = re.compile(rb"\+(\d+),(\d+)")
_ARROW = b"\x01"  # stands in for "->" while splitting; inputs holding it take the slow path
_DELIMS_ONLY = bytes(b for b in range(256) if b not in b":\n\x01")
_TO_ARROW = bytes.maketrans(b":\n", _ARROW * 2)

# keys, values and (when known) their total length in bytes
Batch = tuple[list[bytes], list[bytes], int | None]


def _bulk_records(region: bytes, heads_seen: dict[bytes, tuple[int, int]]) -> Batch | None:
    """Parse ``region`` (whole one-line records) in bulk, or None if it cannot be proved exact.

    The bulk path needs every record on one line with no ":" or "->" in keys or
    data.  It checks that the delimiters come exactly as ``: -> \\n`` on every
    line and that every ``+KLEN,DLEN`` matches the lengths found; then the
    split is the parse.
    """
    if _ARROW in region:
        return None
    lines = region.count(b"\n")
    marked = region.replace(b"->", _ARROW)
    if marked.translate(None, _DELIMS_ONLY) != b":\x01\n" * lines:
        return None
    tokens = marked.translate(_TO_ARROW).split(_ARROW)
    heads, keys, values = tokens[0:-1:3], tokens[1::3], tokens[2::3]
    distinct = set(heads)
    for head in distinct.difference(heads_seen):
        match = _HEAD.fullmatch(head)
        if match is None:
            return None
        heads_seen[head] = (int(match[1]), int(match[2]))
    key_length = {head: heads_seen[head][0] for head in distinct}
    key_lengths = list(map(len, keys))
    if key_lengths != list(map(key_length.__getitem__, heads)):
        return None
    nbytes = sum(key_lengths)
    if any(heads_seen[head][1] for head in distinct):
        value_length = {head: heads_seen[head][1] for head in distinct}
        value_lengths = list(map(len, values))
        if value_lengths != list(map(value_length.__getitem__, heads)):
            return None
        nbytes += sum(value_lengths)
    elif any(values):  # every DLEN is 0 (a list of addresses): the values must be empty
        return None
    return keys, values, nbytes


class _Input:
    """A byte stream with look-ahead, counting lines as it is consumed."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.stream = stream
        self.name = name
        self.buf = b""
        self.pos = 0
        self.base = 0  # offset in the whole input of buf[0]
        self.line = 1
        self.eof = False

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def fill(self, want: int = CHUNK) -> bool:
        """Read another chunk (at least ``want`` bytes if there are); False at end of input."""
        if self.eof:
            return False
        data = self.stream.read(max(want, CHUNK))
        if not data:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + data
        self.base += self.pos
        self.pos = 0
        return True

    def take(self, count: int) -> bytes | None:
        """The next ``count`` bytes, or None if the input ends first."""
        while len(self.buf) - self.pos < count:
            # all that is missing in one read: a big record is not copied chunk by chunk
            if not self.fill(count - (len(self.buf) - self.pos)):
                return None
        data = self.buf[self.pos : self.pos + count]
        self.pos += count
        self.line += data.count(b"\n")
        return data


def _malformed(inp: _Input, line: int, record: int, what: str) -> QmailkitError:
    return QmailkitError(
        f"record {record}: {what}",
        path=inp.name,
        line=line,
        hint="cdbmake input is +KLEN,DLEN:KEY->DATA lines ending with a blank line",
        exit_code=MALFORMED_EXIT,
    )


def _lengths(inp: _Input, line: int, record: int) -> tuple[int, int]:
    """The ``KLEN,DLEN:`` after a record's ``+``."""
    lengths = []
    for name, stop in (("key length", b","), ("data length", b":")):
        digits = b""
        while True:
            char = inp.take(1)
            if char is None:
                raise _malformed(inp, line, record, f"input ends inside the {name}")
            if char == stop:
                break
            if not char.isdigit() or len(digits) > 10:
                raise _malformed(inp, line, record, f"bad {name} {digits + char!r}")
            digits += char
        if not digits:
            raise _malformed(inp, line, record, f"missing {name}")
        lengths.append(int(digits))
    return lengths[0], lengths[1]


def _expect(inp: _Input, line: int, record: int, want: bytes, *, cut: str, wrong: str) -> None:
    """The delimiter ``want`` comes next: else ``cut`` (input ended) or ``wrong`` is the error."""
    found = inp.take(len(want))
    if found is None:
        raise _malformed(inp, line, record, cut)
    if found != want:
        raise _malformed(inp, line, record, wrong)


def _field(inp: _Input, line: int, record: int, length: int, what: str) -> bytes:
    data = inp.take(length)
    if data is None:
        raise _malformed(inp, line, record, f"input ends inside the {length}-byte {what}")
    return data


def _exact_record(inp: _Input, record: int, max_size: int) -> tuple[bytes, bytes] | None:
    """Parse one record exactly; None at the closing blank line."""
    line = inp.line
    first = inp.take(1)
    if first is None:
        raise _malformed(inp, line, record, "input ends without the closing blank line")
    if first == b"\n":
        return None
    if first != b"+":
        raise _malformed(inp, line, record, f"expected '+' or a blank line, found {first!r}")
    klen, dlen = _lengths(inp, line, record)
    if klen + dlen > max_size:
        raise _malformed(inp, line, record, f"record of {klen + dlen} bytes is too large")
    key = _field(inp, line, record, klen, "key")
    _expect(
        inp,
        line,
        record,
        b"->",
        cut="input ends after the key",
        wrong="expected '->' after the key (is KLEN right?)",
    )
    value = _field(inp, line, record, dlen, "data")
    _expect(
        inp,
        line,
        record,
        b"\n",
        cut="input ends right after the data",
        wrong="expected a newline after the data (is DLEN right?)",
    )
    return key, value


def parse_cdbmake(stream: BinaryIO, name: str, max_size: int = MAX_SIZE) -> Iterator[Batch]:
    """Records of cdbmake input, in batches; errors (exit 111) give record and line."""
    inp = _Input(stream, name)
    heads_seen: dict[bytes, tuple[int, int]] = {}
    record = 1
    slow_until = 0  # input offset: after the bulk path fails on a region, go exact past it
    while True:
        if inp.offset >= slow_until:
            end = inp.buf.rfind(b"\n", inp.pos)
            if end < 0 or end == inp.pos:
                # no whole line buffered, or the blank line: read more or go exact
                if end < 0 and inp.fill():
                    continue
            else:
                stop = end + 1
                batch = _bulk_records(inp.buf[inp.pos : stop], heads_seen)
                if batch is None:
                    # Perhaps only because the closing blank line is in the region.
                    blank = inp.buf.find(b"\n\n", inp.pos, stop)
                    if blank >= 0:
                        stop = blank + 1
                        batch = _bulk_records(inp.buf[inp.pos : stop], heads_seen)
                if batch is not None:
                    inp.pos = stop
                    inp.line += len(batch[0])
                    record += len(batch[0])
                    yield batch
                    continue
                slow_until = inp.base + stop
        keys: list[bytes] = []
        values: list[bytes] = []
        done = False
        while not done and (inp.offset < slow_until or not keys):
            found = _exact_record(inp, record, max_size)
            if found is None:
                done = True
                break
            keys.append(found[0])
            values.append(found[1])
            record += 1
        if keys:
            yield keys, values, None
        if done:
            return


def _feed_cdbmake(writer: Writer, stream: BinaryIO, name: str, max_size: int) -> None:
    """cdbmake input into a writer whose backend parses it in C (the fast path).

    The C parser takes every whole record of the buffer; the exact parser takes
    the record it stops at, which is one cut by the end of a chunk (it reads
    on) or a malformed one (it reports it with its line).
    """
    inp = _Input(stream, name)
    record = 1
    while True:
        stop, count, done = writer.feed_cdbmake(inp.buf, inp.pos)
        if count:
            inp.line += inp.buf.count(b"\n", inp.pos, stop)
            record += count
        inp.pos = stop
        if done:
            return
        found = _exact_record(inp, record, max_size)
        if found is None:
            return
        writer.add(*found)
        record += 1


#: the longest ``KEY VALUE`` line read (endless input without a newline fails here)
MAX_LINE = 1 << 24


def _line_chunks(stream: BinaryIO, name: str) -> Iterator[bytes]:
    """The input in chunks of whole lines (the last one perhaps without its newline)."""
    rest: list[bytes] = []  # the start of a line that has no newline yet
    waiting = offset = 0
    while data := stream.read(CHUNK):
        cut = data.rfind(b"\n") + 1
        if not cut:
            rest.append(data)
            waiting += len(data)
            if waiting > MAX_LINE:
                raise QmailkitError(
                    f"the line at byte {offset} is longer than {MAX_LINE} bytes",
                    path=name,
                    hint="is this KEY VALUE lines?",
                    exit_code=MALFORMED_EXIT,
                )
            continue
        chunk = b"".join((*rest, data[:cut])) if rest else data[:cut]
        offset += len(chunk)
        yield chunk
        rest, waiting = ([data[cut:]], len(data) - cut) if cut < len(data) else ([], 0)
    if rest:
        yield b"".join(rest)


def _plain(chunk: bytes) -> bool:
    """Only plain keys, one per line (a list of addresses): the bulk path's input."""
    return (
        b" " not in chunk
        and b"\t" not in chunk
        and b"\r" not in chunk
        and b"\v" not in chunk
        and b"\f" not in chunk
        and b"\n#" not in chunk
        and b"\n\n" not in chunk
        and not chunk.startswith((b"#", b"\n"))
    )


def _parsed_lines(chunk: bytes) -> Batch:
    """``KEY`` or ``KEY VALUE`` lines (cdbmake-12 style) one by one.

    The key is the first whitespace-separated field, the value the rest of the
    line after the whitespace that follows it (cdbmake-12 kept only the second
    field).  Blank lines and lines starting with ``#`` are skipped.
    """
    lines = chunk.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    keys, values = [], []
    for line in lines:
        fields = line.split(None, 1)
        if not fields or fields[0].startswith(b"#"):
            continue
        keys.append(fields[0])
        values.append(fields[1].rstrip() if len(fields) > 1 else b"")
    return keys, values, None


def dump(records: Iterable[tuple[bytes, bytes]], out: BinaryIO, batch: int = 4096) -> None:
    """Write records in cdbmake format with the closing blank line (same bytes as cdbdump)."""
    pending: list[bytes] = []
    for key, value in records:
        pending.append(b"+%d,%d:%s->%s\n" % (len(key), len(value), key, value))
        if len(pending) >= batch:
            out.write(b"".join(pending))
            pending.clear()
    pending.append(b"\n")
    out.write(b"".join(pending))


def build(
    path: str,
    stream: BinaryIO,
    name: str = "standard input",
    *,
    lines: bool = False,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
) -> int:
    """Build the cdb ``path`` from cdbmake input (or ``KEY VALUE`` lines) on ``stream``.

    ``path`` is replaced atomically, and only if the whole input is good.
    Returns the number of records.
    """
    with make(path, mode=mode, owner=owner) as writer:
        if lines:
            for chunk in _line_chunks(stream, name):
                if _plain(chunk):  # no Python object per line
                    writer.add_lines(chunk[:-1] if chunk.endswith(b"\n") else chunk)
                else:
                    writer.add_many(*_parsed_lines(chunk))
        elif writer.feeds_cdbmake:
            _feed_cdbmake(writer, stream, name, writer.max_size)
        else:
            for keys, values, nbytes in parse_cdbmake(stream, name, writer.max_size):
                writer.add_many(keys, values, nbytes)
    return writer.count
