"""mkauth's fast paths: the bulk vpasswd reader, bulk gathering, the staged-cdb comparison.

Each fast path must give exactly what the careful one gives (records, skipped
logins, notes, sources, errors), and hand every odd input to the careful one.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import need

from qmailkit import auth
from qmailkit.auth.sources import gather
from qmailkit.errors import InputError
from qmailkit.qmail import vpopmail

H1, H2, H3 = "$1$aaaaaaaa$hash1", "$6$saltsalt$hash2", "$5$pepper$hash3"


def vpasswd_text(*rows: tuple[str, str, str]) -> str:
    """Plain vpasswd lines from (name, hash, gid)."""
    return "".join(
        f"{name}:{hash_}:1:{gid}:Gecos {name}:/home/vpopmail/{name}:NOQUOTA\n"
        for name, hash_, gid in rows
    )


def make_domains(root: Path, domains: dict[str, str | bytes], extra_assign: str = "") -> Path:
    """users/assign with one vpopmail domain per entry (name -> vpasswd text); the qmail home."""
    qmail = root / "qmail"
    (qmail / "users").mkdir(parents=True)
    lines = []
    for name, text in domains.items():
        home = root / "domains" / name
        home.mkdir(parents=True)
        data = text.encode() if isinstance(text, str) else text
        (home / "vpasswd").write_bytes(data)
        lines.append(f"+{name}-:{name}:89:89:{home}:-::\n")
    (qmail / "users" / "assign").write_text("".join(lines) + extra_assign + ".\n")
    return qmail


def assert_nbytes(found: auth.Collected) -> None:
    # The cdb writer trusts it for its 4 GiB check, so it must be exact.
    assert found.nbytes == sum(map(len, found.keys)) + sum(map(len, found.values))


def gathered(src: auth.Sources, careful: bool):
    got = gather(src, careful=careful)
    return (
        got.keys,
        got.hashes,
        got.sources(),
        [(s.login, s.reason, s.source) for s in got.skipped],
        got.notes,
    )


# --------------------------------------------------------------------------- the bulk reader


def careful_columns(path: Path):
    entries = vpopmail.read_vpasswd(path)
    enc = ("utf-8", "surrogateescape")
    return (
        [e.name.encode(*enc) for e in entries],
        [e.hash.encode(*enc) for e in entries],
        [e.gid for e in entries],
        [e.line for e in entries],
    )


def test_columns_of_a_plain_file(tmp_path):
    data = vpasswd_text(("Anna", H1, "0"), ("bert", H2, "2048"), ("carl", "", "")).encode()
    cols = vpopmail.vpasswd_columns(data)
    assert cols == vpopmail.VpasswdColumns(
        [b"Anna", b"bert", b"carl"], [H1.encode(), H2.encode(), b""], [b"0", b"2048", b""]
    )
    # Same without the final newline, with CRLF line ends, with a clear-text field on every line.
    assert vpopmail.vpasswd_columns(data[:-1]) == cols
    assert vpopmail.vpasswd_columns(data.replace(b"\n", b"\r\n")) == cols
    assert vpopmail.vpasswd_columns(data.replace(b"\n", b":clear\n")) == cols
    assert vpopmail.vpasswd_columns(b"") == vpopmail.VpasswdColumns([], [], [])


@pytest.mark.parametrize(
    "data",
    [
        b"a:h:1:0:g:d:q\n\nb:h:1:0:g:d:q\n",  # blank line: the careful reader numbers lines
        b"a:h:1:0:g:d:q\n\n",  # blank last line
        b"\n",
        b"a:h:1:0:g:d:q\r\n\r\nb:h:1:0:g:d:q\r\n",  # a line of only CR
        b"a:h:1:0:g:d:q:clear\nb:h:1:0:g:d:q\n",  # a clear-text field on some lines only
        b"a:h:1:0:g:d\n",  # six fields
        b"a:h:1:0:g:d:q\n:h:1:0:g:d:q\n",  # empty name
        b"a:h:x:0:g:d:q\n",  # uid not a number
        b"a:h:1:0x:g:d:q\n",  # gid not a number
        "a:h:1:\u0663:g:d:q\n".encode(),  # a digit, but not an ASCII one
    ],
)
def test_odd_files_go_to_the_careful_reader(data):
    assert vpopmail.vpasswd_columns(data) is None


FIELD = st.text(alphabet="ab:\r 0129\u0663é", max_size=5)
LINE = st.lists(FIELD, min_size=1, max_size=9).map(":".join)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(LINE, max_size=6),
    end=st.sampled_from(["", "\n", "\r\n"]),
    sep=st.sampled_from(["\n", "\r\n"]),
    raw=st.binary(max_size=60),
)
def test_bulk_reader_agrees_with_the_careful_one(tmp_path, lines, end, sep, raw):
    path = tmp_path / "vpasswd"
    for data in ((sep.join(lines) + (end if lines else "")).encode(), raw):
        path.write_bytes(data)
        cols = vpopmail.vpasswd_columns(data)
        if cols is None:
            continue  # the careful reader decides; nothing to compare
        names, hashes, gids, numbers = careful_columns(path)  # must not raise
        assert (cols.names, cols.hashes) == (names, hashes)
        assert [int(gid or b"0") for gid in cols.gids] == gids
        assert numbers == list(range(1, len(names) + 1))


# --------------------------------------------------------------------------- gathering


def test_plain_domains_in_bulk(tmp_path):
    qmail = make_domains(
        tmp_path,
        {
            "b.example": vpasswd_text(("Zoe", H1, "0"), ("adam", H2, "0")),
            "a.example": vpasswd_text(("zoe", H3, ""), ("Bea", H1, "8")),
            "empty.example": "",
        },
    )
    found = auth.collect(auth.Sources(qmail_home=qmail))
    a, b = tmp_path / "domains" / "a.example", tmp_path / "domains" / "b.example"
    assert found.records() == [
        (b"adam@b.example", H2.encode()),
        (b"bea@a.example", H1.encode()),
        (b"zoe@a.example", H3.encode()),
        (b"zoe@b.example", H1.encode()),
    ]
    assert found.sources() == [
        f"{b}/vpasswd:2",
        f"{a}/vpasswd:2",
        f"{a}/vpasswd:1",
        f"{b}/vpasswd:1",
    ]
    assert [(x.login, x.source) for x in found.logins][:1] == [("adam@b.example", f"{b}/vpasswd:2")]
    assert found.skipped == []
    assign = qmail / "users" / "assign"
    assert_nbytes(found)
    assert found.notes == [
        f"{assign}:1: vpopmail domain b.example: 2 mailboxes from {b}/vpasswd",
        f"{assign}:2: vpopmail domain a.example: 2 mailboxes from {a}/vpasswd",
        (
            f"{assign}:3: vpopmail domain empty.example: 0 mailboxes from "
            f"{tmp_path}/domains/empty.example/vpasswd"
        ),
    ]


SECOND_LOOK = {
    # a line the bulk path may not take as it is: the whole domain goes the careful way
    "flag": (("nosmtp", H1, "2056"), [("nosmtp@d.example", "vpopmail NO_SMTP flag set")]),
    "empty": (("nopass", "", "0"), [("nopass@d.example", "locked or empty password hash")]),
    "locked": (("locked", "!" + H1, "0"), [("locked@d.example", "locked or empty password hash")]),
    "star": (("star", "*", "0"), [("star@d.example", "locked or empty password hash")]),
    "space": (
        ("sp", "a b", "0"),
        [("sp@d.example", "password hash contains a character auth.cdb cannot hold")],
    ),
    "comma": (
        ("co", "a,b", "0"),
        [("co@d.example", "password hash contains a character auth.cdb cannot hold")],
    ),
    "ctrl": (
        ("ct", "a\x01b", "0"),
        [("ct@d.example", "password hash contains a character auth.cdb cannot hold")],
    ),
    "unicode": (("İlker", H2, "0"), []),  # str.lower: "i̇lker", not an ASCII lower-casing
}


@pytest.mark.parametrize("case", sorted(SECOND_LOOK))
def test_lines_needing_a_second_look(tmp_path, case):
    row, skipped = SECOND_LOOK[case]
    text = vpasswd_text(("Anna", H1, "0"), row, ("carl", H3, "0"))
    qmail = make_domains(tmp_path, {"d.example": text})
    src = auth.Sources(qmail_home=qmail)
    assert vpopmail.vpasswd_columns(text.encode()) is not None
    assert gathered(src, careful=False) == gathered(src, careful=True)
    found = auth.collect(src)
    path = tmp_path / "domains" / "d.example" / "vpasswd"
    assert [(s.login, s.reason, s.source) for s in found.skipped] == [
        (login, why, f"{path}:2") for login, why in skipped
    ]
    keys = {b"anna@d.example", b"carl@d.example"}
    if not skipped:
        keys.add(row[0].lower().encode() + b"@d.example")
    assert set(found.keys) == keys
    assert_nbytes(found)


def test_exclusions_with_bulk_domains(tmp_path):
    qmail = make_domains(
        tmp_path,
        {
            "a.example": vpasswd_text(("anna", H1, "0"), ("bert", H2, "0")),
            "b.example": vpasswd_text(("anna", H1, "0"), ("bert", H2, "0")),
            "c.example": vpasswd_text(("anna", H1, "0")),
        },
    )
    src = auth.Sources(qmail_home=qmail, exclude=["BERT@a.example", "@c.example"])
    assert gathered(src, careful=False) == gathered(src, careful=True)
    found = auth.collect(src)
    assert found.keys == [b"anna@a.example", b"anna@b.example", b"bert@b.example"]
    assert [(s.login, s.reason) for s in found.skipped] == [
        ("bert@a.example", "excluded"),
        ("@c.example", "domain excluded"),
    ]


def test_a_login_twice_is_gathered_again_carefully(tmp_path):
    a = tmp_path / "domains" / "a.example"
    qmail = make_domains(
        tmp_path,
        {"a.example": vpasswd_text(("anna", H1, "0"), ("Anna", H2, "0"))},
        extra_assign=f"+A.example-:a.example:89:89:{a}:-::\n",
    )
    passwd, shadow = tmp_path / "passwd", tmp_path / "shadow"
    passwd.write_text("anna@a.example:x:1000:1000::/home/anna:/bin/sh\n")
    shadow.write_text(f"anna@a.example:{H3}:19000:0:99999:7::20000:\n")
    found = auth.collect(auth.Sources(qmail_home=qmail, shadow=shadow, passwd=passwd))
    first = f"{a}/vpasswd:1"
    assert found.records() == [(b"anna@a.example", H1.encode())]
    assert_nbytes(found)
    assert found.sources() == [first]
    assert [(s.login, s.reason, s.source) for s in found.skipped] == [
        ("anna@a.example", f"duplicate of {first}", f"{a}/vpasswd:2"),
        ("anna@a.example", f"duplicate of {first}", first),
        ("anna@a.example", f"duplicate of {first}", f"{a}/vpasswd:2"),
        ("anna@a.example", f"duplicate of {first}", f"{shadow}:1"),
    ]


def test_settings_and_expiry_with_bulk_domains(tmp_path):
    qmail = make_domains(
        tmp_path,
        {
            "a.example": vpasswd_text(("anna", H1, "0"), ("bert", H2, "0")),
            "b.example": vpasswd_text(("anna", H1, "0")),
        },
    )
    passwd, shadow, conf = tmp_path / "passwd", tmp_path / "shadow", tmp_path / "settings"
    passwd.write_text("joe:x:1000:1000::/home/joe:/bin/sh\n")
    shadow.write_text(f"joe:{H3}:19000:0:99999:7::20000:\n")
    conf.write_text("@a.example MAXRCPT=5\nbert@a.example MAXRCPT=9 X=1\nnone@a.example Y=2\n")
    found = auth.collect(
        auth.Sources(qmail_home=qmail, shadow=shadow, passwd=passwd, settings=conf)
    )
    assert found.records() == [
        (b"anna@a.example", f'{H1},MAXRCPT="5"'.encode()),
        (b"anna@b.example", H1.encode()),
        (b"bert@a.example", f'{H2},MAXRCPT="9",X="1"'.encode()),
        (b"joe", f'{H3},PASSWORD_EXPIRES="1728000000"'.encode()),
    ]
    assert found.notes[-1] == f"{conf}:3: none@a.example matches no login"
    assert_nbytes(found)
    assert [(x.login, x.hash, x.env) for x in found.logins][2] == (
        "bert@a.example",
        H2,
        (("MAXRCPT", "9"), ("X", "1")),
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("bert:h:1:x:g:d:q", "gid field is not a number: 'x'"),
        ("bert:h:u:0:g:d:q", "uid field is not a number: 'u'"),
        (":h:1:0:g:d:q", "malformed vpasswd line: empty user name"),
        ("bert:h:1:0", "malformed vpasswd line: 4 fields, expected at least 7"),
    ],
)
def test_errors_of_the_careful_reader_behind_the_bulk_one(tmp_path, line, message):
    text = vpasswd_text(("anna", H1, "0")) + line + "\n" + vpasswd_text(("carl", H2, "0"))
    qmail = make_domains(tmp_path, {"d.example": text})
    with pytest.raises(InputError) as exc:
        auth.collect(auth.Sources(qmail_home=qmail))
    path = tmp_path / "domains" / "d.example" / "vpasswd"
    assert (exc.value.path, exc.value.line, exc.value.message) == (str(path), 2, message)


def test_unreadable_vpasswd_is_named(tmp_path):
    qmail = make_domains(tmp_path, {"d.example": vpasswd_text(("anna", H1, "0"))})
    path = tmp_path / "domains" / "d.example" / "vpasswd"
    path.unlink()
    path.mkdir()  # exists, but cannot be read as a file (also for root)
    with pytest.raises(Exception) as exc:
        auth.collect(auth.Sources(qmail_home=qmail))
    assert str(exc.value) == (
        f"{path}: is a directory, not a regular file (replace it with a regular file)"
    )


DOMAIN_TEXT = st.lists(
    st.tuples(
        st.sampled_from(["anna", "Anna", "bert", "Émile", "x@y", "carl"]),
        st.sampled_from([H1, H2, "", "!x", "*", "a b", 'q"', "ok"]),
        st.sampled_from(["0", "", "8", "2048"]),
    ),
    max_size=5,
).map(lambda rows: vpasswd_text(*rows))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(DOMAIN_TEXT, min_size=1, max_size=3),
    exclude=st.lists(
        st.sampled_from(["anna@d0.example", "@d1.example", "BERT@d2.example"]), max_size=2
    ),
)
def test_bulk_gathering_agrees_with_careful_gathering(tmp_path_factory, texts, exclude):
    root = tmp_path_factory.mktemp("tree")
    qmail = make_domains(root, {f"d{i}.example": text for i, text in enumerate(texts)})
    src = auth.Sources(qmail_home=qmail, exclude=exclude)
    careful = gathered(src, careful=True)
    fast = gathered(src, careful=False)
    if len(set(fast[0])) == len(fast[0]):  # no login twice: no second, careful gathering
        assert fast == careful
    found = auth.collect(src)
    order = sorted(range(len(careful[0])), key=careful[0].__getitem__)
    assert found.keys == [careful[0][i] for i in order]
    assert found.values == [careful[1][i] for i in order]
    assert found.sources() == [careful[2][i] for i in order]
    assert [(s.login, s.reason, s.source) for s in found.skipped] == careful[3]
    assert_nbytes(found)


# --------------------------------------------------------------------------- writing


def tinycdb_dump(path: Path) -> bytes:
    (cdb_prog,) = need("cdb")
    return subprocess.run([cdb_prog, "-d", str(path)], capture_output=True, check=True).stdout


def cdbmake(records) -> bytes:
    return b"".join(b"+%d,%d:%s->%s\n" % (len(k), len(v), k, v) for k, v in records) + b"\n"


RECORDS = [(b"anna@a.example", H1.encode()), (b"bert@a.example", b'h,X="1"'), (b"joe", b"h3")]


def test_written_as_tinycdb_writes_it(tmp_path):
    (cdb_prog,) = need("cdb")
    target, theirs = tmp_path / "auth.cdb", tmp_path / "tinycdb.cdb"
    result = auth.write_cdb(target, list(reversed(RECORDS)))
    assert (result.written, result.reason, result.count) == (True, "created", 3)
    subprocess.run([cdb_prog, "-c", str(theirs)], input=cdbmake(RECORDS), check=True)
    assert target.read_bytes() == theirs.read_bytes()
    assert sorted(os.listdir(tmp_path)) == [".auth.cdb.lock", "auth.cdb", "tinycdb.cdb"]


@pytest.mark.parametrize(
    "records",
    [
        [(b"a\nb", b"v"), (b"a", b"w\nx")],  # newlines in keys and values: the general path
        [(b"", b"only the empty key")],
        [(b"", b"v"), (b"k", b"")],
    ],
)
def test_records_with_newlines_or_empty_keys(tmp_path, records):
    target = tmp_path / "auth.cdb"
    auth.write_cdb(target, records, force=True)
    assert tinycdb_dump(target) == cdbmake(sorted(records))


def test_unchanged_when_another_tool_wrote_the_same_records(tmp_path):
    (cdb_prog,) = need("cdb")
    target = tmp_path / "auth.cdb"
    subprocess.run(
        [cdb_prog, "-c", str(target)], input=cdbmake(list(reversed(RECORDS))), check=True
    )
    os.chmod(target, 0o640)
    before = target.stat()
    result = auth.write_cdb(target, RECORDS, only_if_changed=True)
    assert (result.written, result.reason, result.previous) == (False, "unchanged", 3)
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(os.listdir(tmp_path)) == [".auth.cdb.lock", "auth.cdb"]


def test_unchanged_records_with_a_wrong_mode_are_rewritten(tmp_path):
    target = tmp_path / "auth.cdb"
    auth.write_cdb(target, RECORDS)
    os.chmod(target, 0o600)
    result = auth.write_cdb(target, RECORDS, only_if_changed=True)
    assert result.reason == "rewritten (records unchanged; mode or owner fixed)"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_collected_and_pairs_write_the_same_file(tmp_path):
    qmail = make_domains(
        tmp_path, {"a.example": vpasswd_text(("bert", H2, "0"), ("anna", H1, "0"))}
    )
    found = auth.collect(auth.Sources(qmail_home=qmail))
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    auth.write_cdb(one / "auth.cdb", found)
    auth.write_cdb(two / "auth.cdb", list(reversed(found.records())))
    assert (one / "auth.cdb").read_bytes() == (two / "auth.cdb").read_bytes()
    result = auth.write_cdb(one / "auth.cdb", found, only_if_changed=True)
    assert (result.written, result.count, result.previous) == (False, 2, 2)


def test_corrupt_records_behind_a_good_header(tmp_path):
    target = tmp_path / "auth.cdb"
    auth.write_cdb(target, RECORDS)
    data = bytearray(target.read_bytes())
    data[2048:2052] = b"\xff\xff\x00\x00"  # the first record's key length runs far past the end
    target.write_bytes(bytes(data))
    with pytest.raises(InputError) as exc:
        auth.write_cdb(target, RECORDS, only_if_changed=True)
    assert str(exc.value).startswith(f"{target}: not a valid cdb: corrupt: record at 2048 ")
    assert exc.value.hint == "the shrink guard needs the old file; use --force to replace it"
    assert target.read_bytes() == bytes(data)
    assert sorted(os.listdir(tmp_path)) == [".auth.cdb.lock", "auth.cdb"]
    result = auth.write_cdb(target, RECORDS, only_if_changed=True, force=True)
    assert (result.reason, result.previous) == ("replaced", None)
    assert tinycdb_dump(target) == cdbmake(RECORDS)


def test_shrink_refused_after_staging_leaves_nothing_behind(tmp_path):
    target = tmp_path / "auth.cdb"
    auth.write_cdb(target, RECORDS)
    before = target.read_bytes()
    with pytest.raises(InputError) as exc:
        auth.write_cdb(target, RECORDS[:1], only_if_changed=True)
    assert exc.value.message == "would shrink from 3 to 1 logins (67 % fewer, limit 20 %)"
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [".auth.cdb.lock", "auth.cdb"]


# --------------------------------------------------------------------------- the command


def test_command_output_from_bulk_domains(tmp_path):
    from test_auth import run_cli

    qmail = make_domains(
        tmp_path,
        {
            "b.example": vpasswd_text(("Zoe", H1, "0"), ("adam", H2, "2048")),
            "a.example": vpasswd_text(("zoe", H3, "0")),
        },
    )
    base = ["auth", "build", "--qmail-home", str(qmail)]
    proc = run_cli(*base)
    assert proc.stdout == f"zoe@a.example {H3}\nzoe@b.example {H1}\n"
    proc = run_cli(*base, "-m")
    assert (
        proc.stdout == f"+13,{len(H3)}:zoe@a.example->{H3}\n+13,{len(H1)}:zoe@b.example->{H1}\n\n"
    )
    proc = run_cli(*base, "-d")
    a, b = tmp_path / "domains" / "a.example", tmp_path / "domains" / "b.example"
    assign = qmail / "users" / "assign"
    assert proc.stderr.splitlines() == [
        f"note: {assign}:1: vpopmail domain b.example: 2 mailboxes from {b}/vpasswd",
        f"note: {assign}:2: vpopmail domain a.example: 1 mailboxes from {a}/vpasswd",
        f"login: zoe@a.example from {a}/vpasswd:1",
        f"login: zoe@b.example from {b}/vpasswd:1",
        f"skipped: adam@b.example (vpopmail NO_SMTP flag set) from {b}/vpasswd:2",
    ]


def test_a_fifo_vpasswd_is_named_without_hanging(tmp_path):
    # The bulk reader used open().read(), which waits for a writer on a FIFO for ever.
    qmail = make_domains(tmp_path, {"d.example": vpasswd_text(("anna", H1, "0"))})
    path = tmp_path / "domains" / "d.example" / "vpasswd"
    path.unlink()
    os.mkfifo(path)
    proc = subprocess.run(
        [sys.executable, "-m", "qmailkit", "auth", "build", "--qmail-home", str(qmail)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        111,
        "",
        f"qmailkit auth: fatal: {path}: is a FIFO, not a regular file "
        "(replace it with a regular file)\n",
    )
