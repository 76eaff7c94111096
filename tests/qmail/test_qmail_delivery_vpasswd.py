"""The bulk vpasswd readers of the delivery rules (C and Python) give exactly the careful reader's
names."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.rcpt import Tree

from qmailkit import cdb
from qmailkit.errors import InputError, QmailkitError
from qmailkit.qmail import vpopmail
from qmailkit.qmail.delivery import Rules, Snapshot
from qmailkit.qmail.dotqmail import Kind, classify
from qmailkit.qmail.recipients import Options, build
from qmailkit.qmail.validrcptto import fold
from qmailkit.qmail.vpopmail import read_vpasswd


def names_of(tmp_path, data: bytes) -> list[bytes]:
    path = tmp_path / "vpasswd"
    path.write_bytes(data)
    rules = Rules(Snapshot(vpopmail_sql=False), [])
    names, source = rules.vpopmail_users(str(tmp_path), "example.com")
    assert source == str(path)
    return names


def careful(tmp_path) -> list[bytes]:
    """The careful twin: read_vpasswd's names without those holding capitals (vdelivermail
    lower-cases the address and looks the name up as it is: they never get mail)."""
    return [
        e.name.encode("utf-8", "surrogateescape")
        for e in read_vpasswd(tmp_path / "vpasswd")
        if e.name == fold(e.name)
    ]


def line(name: str, extra: str = "") -> str:
    return (
        f"{name}:$1$salt$hash:1:0:{name}:/home/vpopmail/domains/example.com/{name}:NOQUOTA{extra}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "".join(
            line(f"User{i:05d}" if i % 7 == 3 else f"user{i:05d}") + "\n" for i in range(1000)
        ),  # > 64 KiB, some capitals
        "".join(line(f"user{i:05d}") + "\n" for i in range(1000)),
        "".join(line(f"u{i}", ":clearpw") + "\r\n" for i in range(10)),  # 8 fields, CRLF
        line("a") + "\n" + line("b", ":clear") + "\n",  # 7 and 8 fields mixed
        line("a") + "\n\n" + line("b") + "\n\r\n",  # empty lines are skipped
        line("last"),  # no newline at the end
        "",
    ],
)
def test_names_are_the_careful_readers(tmp_path, text):
    data = text.encode()
    assert len(data) < 1 << 16 or text.count("\n") == 1000
    assert names_of(tmp_path, data) == careful(tmp_path)
    assert vpopmail._python_names(data, str(tmp_path / "vpasswd"))[0] == careful(tmp_path)


def test_the_c_scanner_is_built_and_takes_the_usual_file():
    data = "".join(line(f"user{i}") + "\n" for i in range(100)).encode()
    assert vpopmail._c_names is not None
    assert vpopmail._c_names(data) == [b"user%d" % i for i in range(100)]
    # what it leaves to the Python reader: blank lines, short lines, empty names, capitals, NUL
    for odd in (
        b"\n" + data,
        data + b"\r\n",
        b"a:b:c:d:e:f\n",
        b":b:c:d:e:f:g\n",
        data + line("Zed").encode(),
        data + line("z\0d").encode(),
    ):
        assert vpopmail._c_names(odd) is None


@pytest.mark.parametrize(
    ("text", "number"),
    [
        (line("ann") + "\n" + line("Bob") + "\n" + line("cy") + "\n", 2),  # the bulk path
        (line("ann") + "\n\n" + line("Bob", ":clear") + "\r\n", 3),  # the careful one
    ],
)
def test_a_name_with_capitals_is_skipped_with_a_warning(tmp_path, text, number):
    path = tmp_path / "vpasswd"
    path.write_text(text)
    notes: list[str] = []
    names, _source = Rules(Snapshot(vpopmail_sql=False), notes).vpopmail_users(
        str(tmp_path), "example.com"
    )
    assert b"bob" not in names and b"Bob" not in names
    assert notes == [
        (
            f"{path}:{number}: mailbox 'Bob' skipped: vdelivermail looks up the lower-cased "
            "address, so a name with capitals never gets mail"
        )
    ]


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(
        st.sampled_from(
            [
                b"a",
                b"B",
                b":",
                b"::::::",
                b"\n",
                b"\r",
                b"\0",
                b"\xc3\x89",
                line("Ab").encode(),
                line("ab").encode(),
            ]
        ),
        max_size=30,
    ).map(b"".join)
)
def test_c_scanner_agrees_with_the_python_reader(tmp_path, data):
    got = vpopmail._c_names(data)
    if got is None:
        return  # the Python reader decides (tested above)
    (tmp_path / "vpasswd").write_bytes(data)
    assert (got, []) == vpopmail._python_names(data, str(tmp_path / "vpasswd"))
    # with the domain appended in C (the model's keys at once)
    assert vpopmail._c_names(data, b"@example.com") == [n + b"@example.com" for n in got]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(st.text(alphabet="aZé-\0\n", min_size=1, max_size=4), max_size=8),
    as_cdb=st.booleans(),
)
def test_model_keys_for_any_names(tmp_path_factory, names, as_cdb):
    """Names with capitals, NUL or a newline through the whole model, from vpasswd (bulk
    and careful readers) or vpasswd.cdb (which alone can hold a newline): the keys are
    the careful reader's names, less what no address can reach."""
    tree = Tree(tmp_path_factory.mktemp("t"))
    tree.ctl("rcpthosts", "example.com")
    tree.ctl("virtualdomains", "example.com:example.com")
    names = list(dict.fromkeys(n for n in names if ":" not in n and (as_cdb or "\n" not in n)))
    ddir = tree.vdomain("example.com", [], vpasswd=False)
    if as_cdb:
        cdb.write(ddir / "vpasswd.cdb", [(n.encode(), b"x:1:0::/d:NOQUOTA") for n in names])
    else:
        (ddir / "vpasswd").write_text("".join(line(n) + "\n" for n in names))
    tree.write_assign()
    rec = build(Options(qmail_home=tree.qmail, passwd=tree.passwd, vpopmail_home=tree.vpopmail))
    reachable = [n for n in names if n == fold(n) and "\n" not in n and "\0" not in n]
    assert sorted(k for k, _ in rec.records()) == sorted(
        f"{n}@example.com".encode() for n in reachable
    )
    if not as_cdb:
        careful_names = {n.decode() for n in careful(ddir)}
        assert careful_names - set(reachable) <= {n for n in names if "\0" in n}
    assert len(rec.warnings) == len(names) - len(reachable) + (not reachable)


@pytest.mark.parametrize(
    ("text", "number", "message"),
    [
        (line("a") + "\nbroken\n", 2, "malformed vpasswd line: 1 fields, expected at least 7"),
        (line("a") + "\n" + line("") + "\n", 2, "malformed vpasswd line: empty user name"),
        ("a:b:c:d:e:f\n", 1, "malformed vpasswd line: 6 fields, expected at least 7"),
    ],
)
def test_a_damaged_line_is_named(tmp_path, text, number, message):
    with pytest.raises(InputError) as caught:
        names_of(tmp_path, text.encode())
    assert caught.value.line == number
    assert caught.value.message == message
    assert caught.value.path == str(tmp_path / "vpasswd")


def test_same_dotqmail_text_same_verdict_with_its_own_path(tmp_path):
    snapshot = Snapshot()
    paths = []
    for i, text in enumerate(
        [
            "|bouncesaying 'gone'\n",
            "|bouncesaying 'gone'\n",
            "&someone@example.net\n",
            "|bouncesaying 'gone' prog\n",
        ]
    ):
        path = tmp_path / f".qmail-{i}"
        path.write_text(text)
        paths.append(str(path))
    found = [snapshot.delivery(p) for p in paths]
    assert found == [classify(p) for p in paths]
    assert [d.kind for d in found] == [Kind.BOUNCE, Kind.BOUNCE, Kind.DELIVER, Kind.DELIVER]
    assert [d.path for d in found] == paths
    os.unlink(paths[0])
    assert snapshot.delivery(paths[0]) == found[0]  # cached: the file is read once
    with pytest.raises(QmailkitError) as caught:
        snapshot.delivery(str(tmp_path / ".qmail-missing"))
    assert str(caught.value) == (
        f"{tmp_path}/.qmail-missing: cannot read .qmail file: No such file or directory"
    )
