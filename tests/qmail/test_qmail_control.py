"""qmail.control and qmail.vpopmail: files read exactly as qmail and vpopmail read them."""

from __future__ import annotations

import pytest

from qmailkit import cdb
from qmailkit.errors import InputError
from qmailkit.qmail.control import (
    locals_file,
    read_control,
    read_control_line,
    read_control_numbered,
)
from qmailkit.qmail.vpopmail import VpasswdEntry, read_domain_users, read_vpasswd, read_vpasswd_cdb


def test_control_strips_trailing_blanks_comments_and_empty_lines(tmp_path):
    path = tmp_path / "rcpthosts"
    path.write_bytes(b"example.com  \t\n# a comment\n\n   \n  lead.example\nhash#inside\r\nlast")
    assert read_control(path) == ["example.com", "  lead.example", "hash#inside", "last"]
    assert read_control_numbered(path) == [
        (1, "example.com"),
        (5, "  lead.example"),
        (6, "hash#inside"),
        (7, "last"),
    ]


def test_control_missing_file_is_empty_unless_required(tmp_path):
    assert read_control(tmp_path / "none") == []
    with pytest.raises(InputError, match="control file is missing"):
        read_control(tmp_path / "none", missing_ok=False)


def test_control_bad_utf8_names_the_line(tmp_path):
    path = tmp_path / "locals"
    path.write_bytes(b"ok.example\nbad\xff.example\n")
    with pytest.raises(InputError) as err:
        read_control(path)
    assert str(err.value) == f"{path}:2: not valid UTF-8 text"


def test_control_line_reads_the_first_line_only(tmp_path):
    (tmp_path / "me").write_bytes(b"mail.example.com \nsecond\n")
    assert read_control_line(tmp_path / "me") == "mail.example.com"
    assert read_control_line(tmp_path / "absent") is None


def test_locals_falls_back_to_me_only_when_locals_is_absent(tmp_path):
    control = tmp_path / "control"
    control.mkdir()
    (control / "me").write_text("Mail.Example.COM\n")
    assert locals_file(tmp_path) == (control / "me", ["mail.example.com"])
    (control / "locals").write_text("# nothing local here\n")
    assert locals_file(tmp_path) == (control / "locals", [])
    (control / "locals").write_text("Example.com\nlocalhost\n")
    assert locals_file(tmp_path) == (control / "locals", ["example.com", "localhost"])


def test_vpasswd_entries(tmp_path):
    path = tmp_path / "vpasswd"
    path.write_bytes(
        b"bob:$1$ab$xyz:1:0:Bob B:/d/bob:NOQUOTA:clear:text\n\nal:$1$cd$uvw:1:64::/d/al:1000S\n"
    )
    assert read_vpasswd(path) == [
        VpasswdEntry("bob", "$1$ab$xyz", 1, 0, "Bob B", "/d/bob", "NOQUOTA", "clear:text", 1),
        VpasswdEntry("al", "$1$cd$uvw", 1, 64, "", "/d/al", "1000S", None, 3),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"bob:x:1:0:Bob:/d/bob", "malformed vpasswd line: 6 fields, expected at least 7"),
        (b":x:1:0:Bob:/d/bob:NOQUOTA", "malformed vpasswd line: empty user name"),
        (b"bob:x:one:0:Bob:/d/bob:NOQUOTA", "uid field is not a number: 'one'"),
    ],
)
def test_vpasswd_malformed_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "vpasswd"
    path.write_bytes(b"ok:x:1:0::/d/ok:NOQUOTA\n" + line + b"\n")
    with pytest.raises(InputError) as err:
        read_vpasswd(path)
    assert str(err.value).startswith(f"{path}:2: {message}")
    assert err.value.exit_code == 100


def test_vpasswd_cdb_as_vpopmail_builds_it(tmp_path):
    # vpopmail: key = the name, value = the rest of the line after the first colon.
    db = tmp_path / "vpasswd.cdb"
    cdb.write(
        db, [(b"bob", b"$1$ab$xyz:1:0:Bob:/d/bob:NOQUOTA:pw"), (b"al", b"h:1:0::/d/al:NOQUOTA")]
    )
    got = read_vpasswd_cdb(db)
    assert [(e.name, e.hash, e.dir, e.clear) for e in got] == [
        ("bob", "$1$ab$xyz", "/d/bob", "pw"),
        ("al", "h", "/d/al", None),
    ]


def test_domain_users_prefers_vpasswd_then_cdb(tmp_path):
    cdb.write(tmp_path / "vpasswd.cdb", [(b"fromcdb", b"h:1:0::/d:NOQUOTA")])
    assert [e.name for e in read_domain_users(tmp_path)[1]] == ["fromcdb"]
    (tmp_path / "vpasswd").write_text("fromtext:h:1:0::/d:NOQUOTA\n")
    assert [e.name for e in read_domain_users(tmp_path)[1]] == ["fromtext"]
    with pytest.raises(InputError, match="neither vpasswd nor vpasswd.cdb"):
        read_domain_users(tmp_path / "nothing")
