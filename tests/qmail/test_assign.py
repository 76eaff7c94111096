"""qmailkit.qmail.assign: users/assign parsing and the users/cdb records qmail-newu writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qmailkit.errors import InputError
from qmailkit.qmail import assign

SAMPLE = (
    b"=joe:joe:500:500:/home/joe:-::\n"
    b"=Mary.Smith:mary:501:100:/home/mary:::\n"
    b"+example.com-:example.com:89:89:/home/vpopmail/domains/example.com:-::\n"
    b"+list-:ezmlm:77:77:/var/lists:-:list:\n"
    b"+:alias:7790:2108:/var/qmail/alias:-::\n"
    b".\n"
    b"=ignored:after:the:dot\n"
)


def test_parse_entries():
    entries = assign.parse(SAMPLE, "users/assign")
    assert [
        (e.kind, e.local, e.user, e.uid, e.gid, e.home, e.dash, e.ext, e.line) for e in entries
    ] == [
        ("=", "joe", "joe", 500, 500, "/home/joe", "-", "", 1),
        ("=", "Mary.Smith", "mary", 501, 100, "/home/mary", "", "", 2),
        (
            "+",
            "example.com-",
            "example.com",
            89,
            89,
            "/home/vpopmail/domains/example.com",
            "-",
            "",
            3,
        ),
        ("+", "list-", "ezmlm", 77, 77, "/var/lists", "-", "list", 4),
        ("+", "", "alias", 7790, 2108, "/var/qmail/alias", "-", "", 5),
    ]
    assert entries[2].wildcard and entries[2].prefix == "example.com-"
    assert not entries[0].wildcard


def test_records_are_qmail_newu_bytes():
    records = list(assign.records(assign.parse(SAMPLE)))
    z = b"\0".join
    assert records == [
        (b"!joe\0", z([b"joe", b"500", b"500", b"/home/joe", b"-", b""])),
        (b"!mary.smith\0", z([b"mary", b"501", b"100", b"/home/mary", b"", b""])),
        (
            b"!example.com-",
            z([b"example.com", b"89", b"89", b"/home/vpopmail/domains/example.com", b"-", b""]),
        ),
        (b"!list-", z([b"ezmlm", b"77", b"77", b"/var/lists", b"-", b"list"])),
        (b"!", z([b"alias", b"7790", b"2108", b"/var/qmail/alias", b"-", b""])),
        (b"", b"-"),
    ]


def test_wildchars_distinct_in_order_and_case_kept():
    data = b"+a-:u:1:1:/h:-::\n+b.:u:1:1:/h:-::\n+c-:u:1:1:/h:-::\n+dX:u:1:1:/h:-::\n.\n"
    records = list(assign.records(assign.parse(data)))
    # qmail-newu takes the character from the line as written, not lower-cased.
    assert records[-1] == (b"", b"-.X")
    assert records[3][0] == b"!dx"


def test_value_keeps_fields_as_written_and_drops_text_after_sixth_colon():
    data = b"=joe:joe:0500:0500:/home/joe:-:ext:trailing:stuff\n.\n"
    (entry,) = assign.parse(data)
    assert entry.uid == 500
    assert entry.value() == b"joe\x000500\x000500\x00/home/joe\x00-\x00ext"


def test_no_entries_gives_only_the_empty_key():
    assert list(assign.records(assign.parse(b".\n"))) == [(b"", b"")]


def test_dot_line_without_newline_terminates():
    assert len(assign.parse(b"=a:a:1:1:/a:-::\n.")) == 1


def test_non_utf8_bytes_survive():
    data = b"=j\xf6rg:j\xf6rg:500:500:/home/j\xf6rg:-::\n.\n"
    (key, value), _ = assign.records(assign.parse(data))
    assert key == b"!j\xf6rg\0"
    assert value.startswith(b"j\xf6rg\0")


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        (b"=joe:joe:500:500:/home/joe:-::\n", 1, 'missing the terminating line "."'),
        (b"=joe:joe:500:500:/home/joe:-::\n=x:x:1:1:/x:-::", 2, 'missing the terminating line "."'),
        (b"", 1, 'missing the terminating line "."'),
        (b"=joe:joe:500:500:/home/joe:-:\n.\n", 1, "5 fields after the address, need 6"),
        (b"=joe:joe:500\n.\n", 1, "2 fields after the address"),
        (b"=a:a:1:1:/a:-::\n=joe\n.\n", 2, "no ':' after the address"),
        (b"=a:a:1:1:/a:-::\n\n.\n", 2, "empty line"),
        (b"joe:joe:500:500:/home/joe:-::\n.\n", 1, "line starts with 'j', not '=' or '+'"),
        (b"=joe:joe:abc:500:/home/joe:-::\n.\n", 1, "uid 'abc' is not a number"),
        (b"=joe:joe:500::/home/joe:-::\n.\n", 1, "gid '' is not a number"),
        (b"=joe:joe:-1:500:/home/joe:-::\n.\n", 1, "uid '-1' is not a number"),
        (b"=jo\0e:joe:500:500:/home/joe:-::\n.\n", 1, "NUL byte"),
    ],
)
def test_errors_name_file_and_line(data, line, message):
    with pytest.raises(InputError) as exc:
        assign.parse(data, "/var/qmail/users/assign")
    err = exc.value
    assert err.path == "/var/qmail/users/assign"
    assert err.line == line
    assert message in err.message
    assert str(err).startswith(f"/var/qmail/users/assign:{line}: ")
    assert err.exit_code == 100


def test_read_missing_file(tmp_path):
    with pytest.raises(Exception) as exc:
        assign.read(tmp_path / "assign")
    assert "cannot read" in str(exc.value) and str(tmp_path / "assign") in str(exc.value)


def test_from_records_round_trip():
    entries = assign.parse(SAMPLE)
    back, chars = assign.from_records(assign.records(entries))
    assert chars == b"-"
    assert [(e.kind, e.local.lower(), e.value()) for e in back] == [
        (e.kind, e.local.lower(), e.value()) for e in entries
    ]
    assert back[1].local == "mary.smith" and back[1].line is None


def test_from_records_rejects_foreign_cdb():
    with pytest.raises(InputError, match="does not start with '!'"):
        assign.from_records([(b"joe", b"x")], "users/cdb")
    with pytest.raises(InputError, match="no empty key"):
        assign.from_records([(b"!joe\0", b"joe\x00500\x00500\x00/h\x00-\x00")], "users/cdb")
    # uid and gid: ASCII digits, at least one (int() would take "\u0665" or fail on "")
    for uid in (b"", "\u0665".encode(), b"5x", b"-1"):
        with pytest.raises(InputError, match="numeric uid and gid"):
            assign.from_records([(b"!joe\0", b"joe\0" + uid + b"\x00500\x00/h\x00-\x00")])


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("joe", "joe"),
        ("JOE", "joe"),
        ("mary.smith", "Mary.Smith"),
        ("example.com-info", "example.com-"),
        ("example.com-", "example.com-"),
        ("list-subscribe", "list-"),
        ("nobody", ""),
    ],
)
def test_lookup_like_qmail_lspawn(local, expected):
    entries = assign.parse(SAMPLE)
    assert assign.lookup(entries, local).local == expected


def test_lookup_only_tries_prefixes_ending_at_a_wildchar():
    entries = assign.parse(b"+abc:u:1:1:/h:-::\n+ab-:u:2:2:/h:-::\n.\n")
    # "c" and "-" are wildchars: "abcd" matches "+abc"; "abx" matches nothing.
    assert assign.lookup(entries, "abcd").uid == 1
    assert assign.lookup(entries, "ab-x").uid == 2
    assert assign.lookup(entries, "abx") is None


# --------------------------------------------------------------------------- properties

_text = st.binary(max_size=12).map(
    lambda b: b.replace(b":", b"").replace(b"\n", b"").replace(b"\0", b"")
)
_entry = st.tuples(
    st.sampled_from([b"=", b"+"]),
    _text,
    _text,
    st.integers(0, assign.MAX_ID),
    st.integers(0, assign.MAX_ID),
    _text,
    _text,
    _text,
)


@given(st.lists(_entry, max_size=8))
def test_records_follow_the_format_for_any_valid_file(rows):
    # An address starting with "." is fine: the kind character comes first on the line.
    lines = [b"%s%s:%s:%d:%d:%s:%s:%s:" % row for row in rows]
    data = b"".join(line + b"\n" for line in lines) + b".\n"
    entries = assign.parse(data)
    records = list(assign.records(entries))
    assert len(records) == len(rows) + 1
    chars = bytearray()
    for (kind, name, user, uid, gid, home, dash, ext), (key, value) in zip(
        rows, records, strict=False
    ):
        assert key == b"!" + name.lower() + (b"" if kind == b"+" else b"\0")
        assert value == b"\0".join([user, b"%d" % uid, b"%d" % gid, home, dash, ext])
        if kind == b"+" and name and name[-1] not in chars:
            chars.append(name[-1])
    assert records[-1] == (b"", bytes(chars))
    back, back_chars = assign.from_records(records)
    assert back_chars == bytes(chars)
    assert [e.value() for e in back] == [e.value() for e in entries]


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_give_input_error(data):
    try:
        entries = assign.parse(data, "users/assign")
    except InputError as err:
        assert err.path == "users/assign" and err.line >= 1
    else:
        list(assign.records(entries))
