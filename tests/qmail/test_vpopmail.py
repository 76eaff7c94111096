"""qmail.vpopmail: vpopmail's home, QMAIL_EXT, its domains, and its SQL programs.

The SQL programs are small stand-in scripts with vuserinfo's and valias's
interface: they check their arguments and print canned output.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from qmailkit.errors import InputError, QmailkitError
from qmailkit.qmail import vpopmail
from qmailkit.qmail.delivery import Snapshot


def write_program(vphome: Path, name: str, body: str) -> Path:
    """A stand-in VPOPMAIL/bin/NAME running ``body`` under /bin/sh."""
    program = vphome / "bin" / name
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text("#!/bin/sh\n" + body)
    program.chmod(0o755)
    return program


# --------------------------------------------------------------------------- the installation


def test_home_given_else_from_passwd(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text(
        "root:x:0:0:root:/root:/bin/sh\nvpopmail:x:89:89::/home/vpopmail:/bin/false\n"
    )
    assert vpopmail.home(passwd) == Path("/home/vpopmail")
    assert vpopmail.home(passwd, "/opt/vpopmail") == Path("/opt/vpopmail")
    # A given home needs no passwd file at all.
    assert vpopmail.home(tmp_path / "missing", "/opt/vpopmail") == Path("/opt/vpopmail")


def test_home_without_a_vpopmail_user_names_the_file(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\n")
    with pytest.raises(InputError) as exc:
        vpopmail.home(passwd)
    assert str(exc.value) == (
        f"no vpopmail user in {passwd} to find vpopmail's home (give --vpopmail-home)"
    )
    assert exc.value.exit_code == 100
    # A caller that takes a guess says which (mkvalidrcptto: vpopmail's own prefix).
    assert vpopmail.home(passwd, default=vpopmail.DEFAULT_HOME) == Path("/home/vpopmail")
    assert vpopmail.home(passwd, "/opt/v", default=Path("/x")) == Path("/opt/v")


def test_the_snapshot_takes_vpopmails_prefix_without_a_vpopmail_user(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\n")
    snapshot = Snapshot(qmail_home=tmp_path, passwd=passwd)
    assert snapshot.vpopmail_home == vpopmail.DEFAULT_HOME == Path("/home/vpopmail")
    given = Snapshot(qmail_home=tmp_path, passwd=passwd, vpopmail_home_given=Path("/opt/v"))
    assert given.vpopmail_home == Path("/opt/v")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("#define QMAIL_EXT 1\n", True),
        ('#define VERSION "5.4.33"\n  #  define   QMAIL_EXT 1 /* user-ext */\n', True),
        ("/* #define QMAIL_EXT 1 */\n", False),
        ("#define QMAIL_EXT 0\n", False),
        ("#define QMAIL_EXT 10\n", False),
        ("#undef QMAIL_EXT\n", False),
        (None, False),
    ],
)
def test_qmail_ext_from_the_config_header(tmp_path, header, expected):
    if header is not None:
        (tmp_path / "include").mkdir()
        (tmp_path / "include" / "vpopmail_config.h").write_text(header)
    assert vpopmail.qmail_ext(tmp_path) is expected


def test_qmail_ext_header_that_is_a_directory_is_named(tmp_path):
    header = tmp_path / "include" / "vpopmail_config.h"
    header.mkdir(parents=True)
    with pytest.raises(QmailkitError) as exc:
        vpopmail.qmail_ext(tmp_path)
    assert str(exc.value) == (
        f"{header}: is a directory, not a regular file (replace it with a regular file)"
    )


def test_no_smtp_is_vpopmails_bit():
    assert vpopmail.NO_SMTP == 2048


# --------------------------------------------------------------------------- its domains


def make_assign(qmail: Path, lines: str) -> Path:
    (qmail / "users").mkdir(parents=True)
    path = qmail / "users" / "assign"
    path.write_text(lines + ".\n")
    return path


def test_domains_of_users_assign(tmp_path):
    files, cdb_only, sql, plain = (tmp_path / name for name in ("files", "cdb", "sql", "plain"))
    for directory in (files, cdb_only, sql, plain):
        directory.mkdir()
    (files / "vpasswd").write_text("")
    (cdb_only / "vpasswd.cdb").write_bytes(b"")
    (sql / ".qmail-default").write_text("| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n")
    (plain / ".qmail-default").write_text("./Maildir/\n")
    qmail = tmp_path / "qmail"
    assign = make_assign(
        qmail,
        f"=joe:joe:1000:1000:/home/joe:-::\n"
        f"+Files.Example-:files.example:89:89:{files}:-::\n"
        f"+alias.example-:files.example:89:89:{files}:-::\n"
        f"+cdb.example-:cdb.example:89:89:{cdb_only}:-::\n"
        f"+sql.example-:sql.example:89:89:{sql}:-::\n"
        f"+list-:ezmlm:77:77:{plain}:-::\n"
        f"+nodash:x:1:1:{files}:-::\n",
    )
    found, notes = vpopmail.domains(qmail)
    assert found == [
        vpopmail.Domain("files.example", files, f"{assign}:2", sql=False),
        vpopmail.Domain("alias.example", files, f"{assign}:3", sql=False),
        vpopmail.Domain("cdb.example", cdb_only, f"{assign}:4", sql=False),
        vpopmail.Domain("sql.example", sql, f"{assign}:5", sql=True),
    ]
    assert notes == [
        f"{assign}:6: {plain} has no vpasswd, vpasswd.cdb or vdelivermail .qmail-default, "
        "not a vpopmail domain",
        f"{assign}:7: +nodash is not a domain entry (no trailing '-')",
    ]


def test_missing_assign_means_no_domains(tmp_path):
    assert vpopmail.domains(tmp_path) == (
        [],
        [f"{tmp_path}/users/assign: missing, so no vpopmail domains"],
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n", True),
        ("|/home/vpopmail/bin/vdelivermail '' /home/vpopmail/domains/x/catchall\n", True),
        ("# not vdelivermail any more\n./Maildir/\n", False),  # a comment runs nothing
        ("|preline /usr/bin/procmail\n", False),
        ("", False),
    ],
)
def test_runs_vdelivermail_reads_the_file_as_qmail_local_does(tmp_path, text, expected):
    (tmp_path / ".qmail-default").write_text(text)
    assert vpopmail.runs_vdelivermail(tmp_path) is expected
    assert vpopmail.is_domain_dir(tmp_path) is expected


def test_a_fifo_qmail_default_is_no_vdelivermail_and_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / ".qmail-default")
    assert vpopmail.runs_vdelivermail(tmp_path) is False
    assert vpopmail.is_domain_dir(tmp_path) is False


def test_user_files_only_a_missing_one_is_absent(tmp_path):
    (tmp_path / "file").write_text("x")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "vpasswd.cdb").write_bytes(b"")
    assert vpopmail.has_user_files(tmp_path / "d")
    for missing in (tmp_path / "missing", tmp_path / "file", loop, tmp_path / "nul\0"):
        assert not vpopmail.has_user_files(missing), missing
    with pytest.raises(OSError) as exc:
        vpopmail.has_user_files(tmp_path / ("x" * 5000))
    assert exc.value.errno == errno.ENAMETOOLONG


# --------------------------------------------------------------------------- SQL backends


VUSERINFO = """\
name:   erin
passwd: $1$abcdefgh$vhxKZ/s1ygZHyCEDPyqtQ/
clear passwd: secret
uid:    1
gid:    0
flags:  0
limits: No user limits set.
dir:       /home/vpopmail/domains/sql.example/erin
------------------------------------------
name:   Frank
passwd: $1$x$y
gid:    2048
limits:
        flags: 12
dir:       /home/vpopmail/domains/sql.example/frank
"""


def test_run_tool_gives_each_value_as_one_argument(tmp_path):
    write_program(tmp_path, "echoargs", 'for arg; do printf "[%s]\\n" "$arg"; done\n')
    assert vpopmail.run_tool(tmp_path, "echoargs", "-D", "a b", "*", "") == "[-D]\n[a b]\n[*]\n[]\n"


def test_run_tool_missing_program(tmp_path):
    with pytest.raises(QmailkitError) as exc:
        vpopmail.run_tool(tmp_path, "vuserinfo", "-D", "x.example")
    assert str(exc.value) == (
        f"{tmp_path}/bin/vuserinfo: vuserinfo not found: a SQL-backed vpopmail domain "
        "needs it (give --vpopmail-home)"
    )
    assert exc.value.exit_code == 111


def test_run_tool_failure_quotes_the_last_line_of_stderr(tmp_path):
    write_program(tmp_path, "valias", "echo 'valias: connecting' >&2\necho 'db down' >&2\nexit 3\n")
    with pytest.raises(QmailkitError) as exc:
        vpopmail.run_tool(tmp_path, "valias", "-s", "x.example")
    assert str(exc.value) == (
        f"{tmp_path}/bin/valias -s x.example failed with exit code 3: db down"
    )
    assert exc.value.exit_code == 111
    write_program(tmp_path, "quiet", "exit 1\n")
    with pytest.raises(QmailkitError) as exc:
        vpopmail.run_tool(tmp_path, "quiet")
    assert str(exc.value) == f"{tmp_path}/bin/quiet failed with exit code 1"


def test_run_tool_that_cannot_run(tmp_path):
    program = write_program(tmp_path, "vuserinfo", "exit 0\n")
    program.chmod(0o644)
    with pytest.raises(QmailkitError) as exc:
        vpopmail.run_tool(tmp_path, "vuserinfo", "-D", "x.example")
    assert str(exc.value) == f"{program}: cannot run vuserinfo: Permission denied"


def test_run_tool_refuses_a_nul_without_a_traceback(tmp_path):
    write_program(tmp_path, "vuserinfo", "exit 0\n")
    with pytest.raises(InputError, match="holds a NUL byte"):
        vpopmail.run_tool(tmp_path, "vuserinfo", "-D", "x\0y")


def test_sql_mailboxes_through_vuserinfo(tmp_path):
    (tmp_path / "out").write_text(VUSERINFO)
    write_program(
        tmp_path,
        "vuserinfo",
        f'[ "$#" = 2 ] && [ "$1" = -D ] && [ "$2" = sql.example ] || exit 9\ncat {tmp_path}/out\n',
    )
    boxes, source = vpopmail.sql_mailboxes(tmp_path, "sql.example")
    assert source == f"{tmp_path}/bin/vuserinfo -D sql.example"
    assert boxes == [
        vpopmail.SqlMailbox("erin", "$1$abcdefgh$vhxKZ/s1ygZHyCEDPyqtQ/", 0),
        vpopmail.SqlMailbox("Frank", "$1$x$y", 2048),  # an indented "flags:" is a limit's
    ]


def test_sql_users_through_vuserinfo_and_valias(tmp_path):
    (tmp_path / "out").write_text(VUSERINFO)
    write_program(
        tmp_path,
        "vuserinfo",
        f'[ "$#" = 2 ] && [ "$1" = -D ] && [ "$2" = sql.example ] || exit 9\ncat {tmp_path}/out\n',
    )
    write_program(
        tmp_path,
        "valias",
        '[ "$#" = 2 ] && [ "$1" = -s ] && [ "$2" = sql.example ] || exit 9\n'
        "echo 'Sales@sql.example -> erin@sql.example'\n"
        "echo 'info -> &frank@sql.example'\n"
        "echo '@sql.example -> nowhere'\n",
    )
    assert vpopmail.sql_users(tmp_path, "sql.example") == (
        [b"erin", b"frank", b"sales", b"info"],
        "vuserinfo -D sql.example; valias -s sql.example",
    )


def test_vuserinfo_flags_not_a_number(tmp_path):
    with pytest.raises(InputError) as exc:
        vpopmail.parse_vuserinfo("name: x\nflags: lots\n", "vuserinfo -D d")
    assert str(exc.value) == "vuserinfo -D d: vuserinfo gave flags 'lots' for 'x', not a number"


@pytest.mark.parametrize("domain", ["-x.example", ""])
def test_a_domain_the_programs_would_take_for_an_option_is_refused(tmp_path, domain):
    write_program(tmp_path, "vuserinfo", "echo 'name: mallory'\n")
    for read in (vpopmail.sql_mailboxes, vpopmail.sql_users):
        with pytest.raises(InputError) as exc:
            read(tmp_path, domain)
        assert str(exc.value) == (
            f"vpopmail domain {domain!r} cannot be given to vuserinfo or valias "
            "(fix its +DOMAIN- entry in users/assign)"
        )
