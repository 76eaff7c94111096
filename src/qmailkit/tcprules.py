"""tcpserver access rules: parse, compile (byte-identical to ucspi-tcp's
``tcprules``) and explain which rule a connection matches.

A rules line is ``ADDRESS:allow`` or ``ADDRESS:deny``, optionally followed by
``,VAR="value"`` assignments (any character may quote the value).  ADDRESS is
an IP (``1.2.3.4``), a prefix ending in a dot (``10.``), a range of the last
named number (``1.2.3.4-7``, ``10.1-3.``), ``=host`` or ``=.domain``,
``info@ip`` / ``info@=host``, or empty (the default).  Lines starting with
``#``, blank lines and, as in tcprules, lines without a ``:`` are skipped.

In the cdb, every key maps to ``D\\0`` for deny (nothing for allow), then
``+VAR=value\\0`` per assignment.  tcpserver reads the cdb for every
connection and tries keys in a fixed order (``lookup_keys``); the first key
present decides.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from qmailkit import cdb
from qmailkit.errors import InputError, os_error
from qmailkit.fsutil import read_bounded

# tcprules exits 100 when a line cannot be parsed; so do we.
BAD_RULE_EXIT = 100
_ULONG = 1 << 64  # tcprules reads range numbers as C unsigned longs (they wrap)


@dataclass(frozen=True)
class Rule:
    """One rules line and what it compiles to."""

    line: int  # 1-based line in the source
    text: bytes  # the line as tcprules sees it (trailing blanks removed)
    address: bytes  # the left side, as written
    allow: bool
    env: tuple[tuple[bytes, bytes], ...]  # (name, value), in order
    keys: tuple[bytes, ...]  # the cdb keys (a range expands to several, possibly none)

    @property
    def data(self) -> bytes:
        """The cdb value tcprules stores for this rule."""
        parts = [] if self.allow else [b"D\0"]
        parts += [b"+%s=%s\0" % (name, value) for name, value in self.env]
        return b"".join(parts)


@dataclass
class Rules:
    """Parsed rules: the rules in order, and the lines tcprules would skip silently."""

    path: str
    rules: list[Rule] = field(default_factory=list)
    ignored: list[tuple[int, bytes]] = field(default_factory=list)  # lines without ':'

    def records(self) -> Iterable[tuple[bytes, bytes]]:
        for rule in self.rules:
            data = rule.data
            for key in rule.keys:
                yield key, data


def _bad(path: str, line: int, text: bytes, what: str, hint: str | None = None) -> InputError:
    if text.endswith(b"\r"):
        hint = "the line ends in a carriage return: convert the file from DOS line endings"
    shown = text.decode("utf-8", "backslashreplace").replace("\r", "\\r")
    return InputError(
        f"{what}: {shown}",
        path=path,
        line=line,
        hint=hint or 'rules look like 1.2.3.:allow,VAR="value" or =host:deny',
        exit_code=BAD_RULE_EXIT,
    )


def _range_number(digits: bytes) -> int | None:
    """A range number as tcprules reads it: decimal digits (none means 0), wrapping at 2**64."""
    if digits and not digits.isdigit():
        return None
    return int(digits or b"0") % _ULONG


def _expand(address: bytes) -> tuple[bytes, ...] | None:
    """The keys of ``address``: itself, or one per number of an ``A-B`` range (None: bad range)."""
    if b"=" in address or b"@" in address:
        return (address,)
    dash = address.find(b"-")
    if dash < 0:
        return (address,)
    left = address.rfind(b".", 0, dash) + 1  # the range covers the number the dash is in
    right = address.find(b".", dash + 1)
    if right < 0:
        right = len(address)
    bottom = _range_number(address[left:dash])
    top = _range_number(address[dash + 1 : right])
    if bottom is None or top is None:
        return None
    top = min(top, 255)
    head, tail = address[:left], address[right:]
    return tuple(b"%s%d%s" % (head, n, tail) for n in range(bottom, top + 1))


def _parse_line(path: str, number: int, text: bytes, colon: int) -> Rule:
    address = text[:colon]
    rest = text[colon + 1 :]
    if rest.startswith(b"deny"):
        allow, pos = False, 4
    elif rest.startswith(b"allow"):
        allow, pos = True, 5
    else:
        found = rest.split(b",", 1)[0].decode("utf-8", "backslashreplace")
        raise _bad(path, number, text, f"expected 'allow' or 'deny' after ':', found {found!r}")
    env = []
    while pos < len(rest):
        if rest[pos : pos + 1] != b",":
            junk = rest[pos : pos + 10].decode("utf-8", "backslashreplace")
            raise _bad(
                path,
                number,
                text,
                f"expected ',VAR=\"value\"' after {rest[:pos].decode(errors='replace')!r}, "
                f"found {junk!r}",
                'no blanks are allowed between the parts of a rule; write ,VAR="value"',
            )
        equals = rest.find(b"=", pos)
        if equals < 0:
            raise _bad(path, number, text, f"no '=' in {rest[pos:].decode(errors='replace')!r}")
        name = rest[pos + 1 : equals]
        shown_name = name.decode(errors="replace")
        if equals + 1 >= len(rest):
            raise _bad(path, number, text, f"no value after '{shown_name}='")
        quote = rest[equals + 1 : equals + 2]
        close = rest.find(quote, equals + 2)
        if close < 0:
            raise _bad(
                path,
                number,
                text,
                f"the value of {shown_name} has no closing {quote.decode(errors='replace')!r}",
            )
        env.append((name, rest[equals + 2 : close]))
        pos = close + 1
    keys = _expand(address)
    if keys is None:
        raise _bad(
            path,
            number,
            text,
            f"bad address range {address.decode(errors='replace')!r}",
            "a range is two decimal numbers around '-', as in 1.2.3.4-7 or 10.1-3.",
        )
    return Rule(number, text, address, allow, tuple(env), keys)


#: the longest rules line read (a stream of junk fails here instead of filling memory)
MAX_LINE = 1 << 20


def _lines(source: BinaryIO, path: str) -> Iterator[bytes]:
    """The lines of ``source`` without their newlines, read one at a time."""
    number = 0
    while line := source.readline(MAX_LINE + 1):
        number += 1
        if len(line) > MAX_LINE:
            raise InputError(
                f"line longer than {MAX_LINE} bytes",
                path=path,
                line=number,
                hint="is this a tcprules source?",
                exit_code=BAD_RULE_EXIT,
            )
        yield line.removesuffix(b"\n")


def parse(text: bytes | str | BinaryIO, path: str | os.PathLike[str] = "rules") -> Rules:
    """Parse tcprules source; raises InputError (exit 100) naming the line of a bad rule.

    ``text`` may be a binary stream (standard input): it is read a line at a
    time, and reading stops at the first bad line, as tcprules stops.
    """
    name = os.fspath(path)
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    result = Rules(name)
    for number, raw in enumerate(
        _lines(io.BytesIO(text) if isinstance(text, bytes) else text, name), 1
    ):
        if not raw or raw.startswith(b"#"):
            continue
        line = raw.rstrip(b" \t")
        colon = line.find(b":")
        if colon < 0:
            if line:
                result.ignored.append((number, line))
            continue
        result.rules.append(_parse_line(name, number, line, colon))
    return result


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        return read_bounded(path)  # a regular file only: never hang on a FIFO
    except FileNotFoundError as err:
        raise os_error(err, "cannot read rules") from err


def compile_source(rules_path: str | os.PathLike[str]) -> Rules:
    """Read and parse a rules file (InputError naming the line of a bad rule)."""
    return parse(_read(rules_path), rules_path)


def compile_rules(
    rules: Rules,
    cdb_path: str | os.PathLike[str],
    tmp_path: str | os.PathLike[str] | None = None,
    mode: int = 0o644,
) -> int:
    """Write the cdb for parsed ``rules``; returns the number of keys.

    With ``tmp_path`` the cdb is written there, fsync'd and renamed over
    ``cdb_path`` (as tcprules does, and the temp is removed on failure);
    without it a temp name of our own in the same directory is used.
    """

    def fill(writer: cdb.Writer) -> None:
        for key, data in rules.records():
            writer.add(key, data)

    return cdb.install(cdb_path, fill, mode=mode, tmp=tmp_path, what="another tcprules run").count


def compile_file(
    rules_path: str | os.PathLike[str],
    cdb_path: str | os.PathLike[str],
    tmp_path: str | os.PathLike[str] | None = None,
) -> Rules:
    """Compile a rules file exactly like ``tcprules cdb tmp < rules``; returns the parsed rules.

    On a bad rule nothing is written and the old cdb stays in place.
    """
    rules = compile_source(rules_path)
    compile_rules(rules, cdb_path, tmp_path)
    return rules


# -- matching ---------------------------------------------------------------------------------


def lookup_keys(ip: str, host: str | None = None, info: str | None = None) -> list[bytes]:
    """The keys tcpserver tries for a connection, in its order (first found decides)."""
    ipb = ip.encode()
    hostb = host.encode() if host is not None else None
    keys: list[bytes] = []
    if info is not None:
        keys.append(info.encode() + b"@" + ipb)
        if hostb is not None:
            keys.append(info.encode() + b"@=" + hostb)
    keys.append(ipb)
    if hostb is not None:
        keys.append(b"=" + hostb)
    keys += [ipb[:end] for end in range(len(ipb), 0, -1) if ipb[end - 1 : end] == b"."]
    if hostb is not None:
        keys += [b"=" + hostb[i:] for i in range(len(hostb)) if hostb[i : i + 1] == b"."]
        keys.append(b"=")
    keys.append(b"")
    return keys


@dataclass(frozen=True)
class Match:
    """What tcpserver does with a connection, and why."""

    key: bytes | None  # the key found; None: no rule matched (tcpserver allows)
    allow: bool
    env: tuple[tuple[bytes, bytes], ...]  # variables set (tcpserver sets them even on deny)
    rule: Rule | None  # the source rule, when explaining from rules
    tried: tuple[bytes, ...]  # keys looked up, in order, up to the one found
    data: bytes = b""  # the raw cdb value


def decode_data(data: bytes) -> tuple[bool, tuple[tuple[bytes, bytes], ...]]:
    """Read a rules value as tcpserver does: 'D' denies, '+VAR=value' sets a variable."""
    allow = True
    env = []
    parts = data.split(b"\0")
    for part in parts[:-1]:  # text after the last NUL is ignored, as by tcpserver
        if part.startswith(b"D"):
            allow = False
        elif part.startswith(b"+") and b"=" in part:
            name, _, value = part[1:].partition(b"=")
            env.append((name, value))
    return allow, tuple(env)


def explain(
    cdb_or_rules: str | os.PathLike[str] | Rules | Sequence[Rule],
    ip: str,
    host: str | None = None,
    info: str | None = None,
) -> Match:
    """Which key (and, from rules, which line) a connection from ``ip`` matches."""
    keys = lookup_keys(ip, host, info)
    if isinstance(cdb_or_rules, (str, os.PathLike)):
        return _explain_cdb(cdb_or_rules, keys)
    return _explain_rules(
        cdb_or_rules.rules if isinstance(cdb_or_rules, Rules) else cdb_or_rules, keys
    )


def _explain_cdb(path: str | os.PathLike[str], keys: list[bytes]) -> Match:
    with cdb.Reader(path) as reader:
        for number, key in enumerate(keys, 1):
            data = reader.get(key)
            if data is not None:
                allow, env = decode_data(data)
                return Match(key, allow, env, None, tuple(keys[:number]), data)
    return Match(None, True, (), None, tuple(keys))


def _explain_rules(rules: Sequence[Rule], keys: list[bytes]) -> Match:
    first: dict[bytes, Rule] = {}
    for rule in rules:
        for key in rule.keys:
            first.setdefault(key, rule)  # cdb lookups return the first record of a key
    for number, key in enumerate(keys, 1):
        found = first.get(key)
        if found is not None:
            return Match(key, found.allow, found.env, found, tuple(keys[:number]), found.data)
    return Match(None, True, (), None, tuple(keys))


def check_ip(ip: str) -> None:
    """Refuse something that is plainly not an IP address (tcprulescheck would just miss)."""
    if not ip or any(c not in "0123456789.:abcdefABCDEF" for c in ip):
        raise InputError(
            f"not an IP address: {ip!r}", hint="give the client's address, e.g. 1.2.3.4"
        )


# -- who gets RELAYCLIENT ---------------------------------------------------------------------
#
# qmail-smtpd relays for a client when RELAYCLIENT is in its environment, and tcpserver puts it
# there from the first key it finds (lookup_keys).  For an IPv4 client a.b.c.d, with no name
# (a client chooses its PTR, so any =host rule is a rule it can pick; see relaying()), the keys
# are a.b.c.d, a.b.c., a.b., a. and '' in that order: the longest present prefix decides.  So
# the addresses given RELAYCLIENT follow from the key set alone, however the rules spelled
# them (ranges, prefixes, many lines), and the same analysis serves a rules file and a cdb.

# Not globally reachable (RFC 6890 and its updates), disjoint and sorted: relaying for these is
# the admin's own business (10., 127., 192.168., ...); for the rest of the space it is not.
_NOT_PUBLIC = tuple(
    (
        int.from_bytes(bytes(map(int, net.split("/")[0].split("."))), "big"),
        1 << (32 - int(net.split("/")[1])),
    )
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
    )
)
_OCTET = {b"%d" % n: n for n in range(256)}  # tcpserver writes each octet in plain decimal


def first_values(records: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """key → the value tcpserver finds for it (a cdb lookup returns the first record)."""
    table: dict[bytes, bytes] = {}
    for key, data in records:
        table.setdefault(key, data)
    return table


def gives_relay(data: bytes) -> bool:
    """A rules value that lets the connection in with RELAYCLIENT set (on deny nothing runs)."""
    allow, env = decode_data(data)
    return allow and any(name == b"RELAYCLIENT" for name, _value in env)


def _ipv4_block(key: bytes) -> tuple[int, int] | None:
    """The addresses a key stands for when tcpserver looks it up for IPv4 clients (a.b.c.d,
    a.b.c., a.b., a., ''): (first, how many); None for a key it never looks up that way
    (names, info@, 010., 256., IPv6...)."""
    if not key:
        parts = []
    elif key.endswith(b"."):
        parts = key[:-1].split(b".")
        if len(parts) > 3:
            return None
    else:
        parts = key.split(b".")
        if len(parts) != 4:
            return None
    first = 0
    for part in parts:
        octet = _OCTET.get(part)
        if octet is None:
            return None
        first = first << 8 | octet
    shift = 8 * (4 - len(parts))
    return first << shift, 1 << shift


def _public_in_range(start: int, size: int) -> int:
    """How many of the addresses start .. start+size-1 are public."""
    hidden = 0
    for low, length in _NOT_PUBLIC:
        top = min(start + size, low + length)
        if top > max(start, low):
            hidden += top - max(start, low)
    return size - hidden


_SLASH8 = 1 << 24
_PUBLIC_PER_SLASH8 = tuple(_public_in_range(a * _SLASH8, _SLASH8) for a in range(256))


def _public_in(start: int, size: int) -> int:
    """``_public_in_range``, a /8 at a time: only the few /8s that are partly public need
    the ranges.  (The sweep's spans are disjoint, so all of them cross 256 /8s at most.)"""
    public = 0
    end = start + size
    while start < end:
        stop = min(end, ((start >> 24) + 1) << 24)
        whole = _PUBLIC_PER_SLASH8[start >> 24]
        if whole == _SLASH8:
            public += stop - start
        elif whole:
            public += _public_in_range(start, stop - start)
        start = stop
    return public


def lets_in(data: bytes) -> bool:
    """A rules value that lets the connection in (no D)."""
    return decode_data(data)[0]


@dataclass(frozen=True)
class Coverage:
    """Which clients a rules table does something to (see the comment above ``first_values``)."""

    public: int  # public IPv4 addresses whose lookup ends in what was asked for
    by_key: dict[bytes | None, int]  # those addresses per deciding key (None: no key matched)
    names: tuple[bytes, ...]  # =host keys doing it: reachable by any client that picks the name


def coverage(
    table: dict[bytes, bytes], wanted: Callable[[bytes], bool] = gives_relay, default: bool = False
) -> Coverage:
    """The clients for which tcpserver, reading ``table`` (key → value, as ``first_values``
    gives it), finds a value that is ``wanted``; ``default`` is the answer when no key
    matches (tcpserver lets such a client in, without setting anything)."""
    names = []
    verdicts: dict[bytes, bool] = {}  # most keys share one of a few values
    blocks: list[tuple[int, int, bytes, bool]] = []
    for key, data in table.items():
        verdict = verdicts.get(data)
        if verdict is None:
            verdict = verdicts[data] = wanted(data)
        block = _ipv4_block(key)
        if block is not None:
            blocks.append((block[0], -block[1], key, verdict))
        elif key.startswith(b"=") and verdict:
            names.append(key)
    # The blocks nest (a.b. inside a.) or are apart, and an address is decided by the
    # smallest block holding it: sweep them in order (the larger first where two begin
    # together), keeping the blocks open here on a stack, and credit each span to the top.
    by_key: dict[bytes | None, int] = {}
    open_blocks: list[tuple[int, bytes | None, bool]] = [(1 << 32, None, default)]
    done = 0  # the addresses below are credited

    def credit(upto: int) -> None:
        nonlocal done
        _end, key, verdict = open_blocks[-1]
        public = _public_in(done, upto - done) if verdict and upto > done else 0
        if public:
            by_key[key] = by_key.get(key, 0) + public
        done = upto

    for start, minus_size, key, verdict in sorted(blocks):
        while open_blocks[-1][0] <= start:
            credit(open_blocks[-1][0])
            open_blocks.pop()
        credit(start)
        open_blocks.append((start - minus_size, key, verdict))
    while open_blocks:
        credit(open_blocks[-1][0])
        open_blocks.pop()
    return Coverage(sum(by_key.values()), by_key, tuple(sorted(names)))


def relaying(table: dict[bytes, bytes]) -> Coverage:
    """The clients ``table`` gives RELAYCLIENT to."""
    return coverage(table)


#: every public IPv4 address (what a catch-all rule relays for)
PUBLIC_IPV4 = _public_in_range(0, 1 << 32)
