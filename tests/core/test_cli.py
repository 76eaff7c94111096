"""The qmailkit command itself: start-up cost, help, error reporting."""

from __future__ import annotations

import subprocess
import sys

from qmailkit.cli import run
from qmailkit.errors import InputError


def test_startup_imports_only_the_cli():
    """Building the whole parser must not import library modules or heavy packages."""
    code = (
        "import sys; from qmailkit.cli import build_parser; build_parser();"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    mods = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    ours = [m for m in mods if m.startswith("qmailkit")]
    assert all(m == "qmailkit" or m.startswith("qmailkit.cli") for m in ours), ours
    for heavy in ("cdbx", "tomllib", "subprocess", "tempfile", "hashlib", "json"):
        assert heavy not in mods, heavy


def _subcommands(parser, prefix=()):
    """Every command path of the parser tree, e.g. ("cdb", "make")."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _subcommands(sub, prefix + (name,))


def test_every_command_has_help():
    """``--help`` works for every command and sub-command and describes it."""
    from qmailkit.cli import build_parser

    paths = list(_subcommands(build_parser()))
    assert ("demo",) in paths
    for path in paths:
        proc = subprocess.run(
            [sys.executable, "-m", "qmailkit", *path, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, (path, proc.stderr)
        assert proc.stdout.startswith("usage: qmailkit " + " ".join(path)), (path, proc.stdout)


def test_errors_become_message_and_exit_code(capsys):
    def fail(_args):
        raise InputError("bad thing", path="/etc/x", line=3, hint="fix it")

    assert run(fail, None, "qmailkit test") == 100
    assert capsys.readouterr().err == "qmailkit test: fatal: /etc/x:3: bad thing (fix it)\n"


def test_usage_errors_exit_100():
    proc = subprocess.run(
        [sys.executable, "-m", "qmailkit", "no-such-command"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 100
    assert "qmailkit: usage: argument COMMAND: invalid choice: 'no-such-command'" in proc.stderr


def test_option_types_parse_and_refuse_with_actionable_messages():
    import argparse
    import grp
    import pwd

    import pytest

    from qmailkit.cli import options

    assert [options.octal_mode(m) for m in ("644", "0640", "0", "777")] == [0o644, 0o640, 0, 0o777]
    for bad, why in (
        ("9x", "is not an octal file mode"),
        ("", "is not an octal file mode"),
        ("4755", "sets the setuid, setgid or sticky bit"),
        ("17777", "is out of range"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            options.octal_mode(bad)
    root_group = grp.getgrgid(0).gr_name
    assert options.owner("root") == (0, -1)
    assert options.owner(f"root:{root_group}") == (0, 0)
    assert options.owner(":0") == (-1, 0)
    assert options.owner("root:") == (0, pwd.getpwuid(0).pw_gid)
    assert options.owner("4294967294:4294967294") == (4294967294, 4294967294)
    for bad, why in (
        ("4294967295", "uid 4294967295 is out of range"),
        (":", "names no user"),
        ("nosuchuser-qk", "no such user"),
        (":nosuchgroup-qk", "no such group"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            options.owner(bad)
    for bad, why in (
        ("-1", "uid -1 is out of range (at least 0)"),
        (":-1", "gid -1 is out of range (at least 0)"),
        ("-0x1", "no such user: '-0x1'"),
    ):
        with pytest.raises(argparse.ArgumentTypeError) as caught:
            options.owner(bad)
        assert str(caught.value) == why
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        options.user_number("-5")
    assert str(caught.value) == "uid -5 is out of range (at least 0)"
    assert options.percent("20%") == 0.2
    with pytest.raises(argparse.ArgumentTypeError, match="not between 0 and 100"):
        options.percent("101")


def test_a_cdb_mode_gives_others_no_write_permission():
    # A17: a cdb qmail reads must never be world-writable (nor setuid, setgid or sticky)
    import argparse

    import pytest

    from qmailkit.cli import options

    assert [options.cdb_mode(m) for m in ("644", "0640", "0660", "0775", "0")] == [
        0o644,
        0o640,
        0o660,
        0o775,
        0,
    ]
    for bad in ("666", "0602", "777"):
        with pytest.raises(argparse.ArgumentTypeError) as caught:
            options.cdb_mode(bad)
        assert str(caught.value) == (
            f"{bad!r} lets every user write the database; give a mode without write "
            "permission for others (e.g. 644 or 0640)"
        )
    with pytest.raises(argparse.ArgumentTypeError, match="sets the setuid"):
        options.cdb_mode("4644")


def test_new_option_types_parse_and_refuse_with_actionable_messages():
    import argparse
    import pwd

    import pytest

    from qmailkit.cli import options

    assert options.seconds("2.5") == 2.5 and options.seconds("0") == 0
    for bad, why in (
        ("soon", "not a number of seconds: 'soon' (e.g. 10 or 2.5)"),
        ("-1", "not a duration of 0 seconds or more: '-1'"),
        ("nan", "not a duration of 0 seconds or more: 'nan'"),
        ("inf", "not a duration of 0 seconds or more: 'inf'"),
    ):
        with pytest.raises(argparse.ArgumentTypeError) as caught:
            options.seconds(bad)
        assert str(caught.value) == why
    assert options.processes("4") == 4
    for bad in ("0", "-2", "four", "٣"):
        with pytest.raises(argparse.ArgumentTypeError) as caught:
            options.processes(bad)
        assert str(caught.value) == f"not a number of processes: {bad!r} (1 or more)"
    assert options.user_number("500") == 500
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        options.user_number("root")
    assert str(caught.value) == "not a user id: 'root' (give a number, e.g. 500)"
    with pytest.raises(argparse.ArgumentTypeError, match="uid 4294967295 is out of range"):
        options.user_number("4294967295")
    # convert-multilog's day files: USER alone takes the user's login group
    assert options.owner_with_login_group("root") == (0, pwd.getpwuid(0).pw_gid)
    assert options.owner_with_login_group("root:0") == (0, 0)
    assert options.owner_with_login_group(":0") == (-1, 0)
    for bad, why in (
        ("nosuchuser-qk", "no such user: 'nosuchuser-qk'; give USER or USER:GROUP"),
        ("", "'' names no user or group (give USER, USER:GROUP or :GROUP)"),
    ):
        with pytest.raises(argparse.ArgumentTypeError) as caught:
            options.owner_with_login_group(bad)
        assert str(caught.value) == why


def test_shrink_guard_goes_on_a_parser_or_a_group_with_the_librarys_default():
    from qmailkit import cdb
    from qmailkit.cli import Parser, options

    assert options.DEFAULT_MAX_SHRINK == cdb.DEFAULT_MAX_SHRINK
    parser = Parser(prog="t")
    options.add_shrink_guard(parser.add_argument_group("safety"), "logins")
    assert vars(parser.parse_args([])) == {"max_shrink": 0.2, "force": False}
    assert vars(parser.parse_args(["--max-shrink", "40%", "--force"])) == {
        "max_shrink": 0.4,
        "force": True,
    }


def test_every_option_type_is_a_named_function():
    """argparse names a bad value's type in its message: a lambda gives 'invalid <lambda>
    value', so every type is a named function (and those of cli.options word their own)."""
    import argparse

    from qmailkit.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    types = [
        (parser.prog, action.dest, action.type)
        for parser in parsers(build_parser())
        for action in parser._actions
        if action.type is not None
    ]
    assert types, "no typed options found"
    for prog, dest, kind in types:
        assert kind.__name__ != "<lambda>", (prog, dest)


def test_a_bad_option_value_is_a_usage_error_saying_what_to_give():
    proc = subprocess.run(
        [sys.executable, "-m", "qmailkit", "newu", "--max-shrink", "lots"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 100
    assert proc.stderr.endswith(
        "qmailkit newu: usage: argument --max-shrink: not a percentage: 'lots'\n"
    )


def test_one_version_in_the_package_the_metadata_and_the_command():
    import importlib.metadata

    import qmailkit

    assert importlib.metadata.version("qmailkit") == qmailkit.__version__
    proc = subprocess.run(
        [sys.executable, "-m", "qmailkit", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout == f"qmailkit {qmailkit.__version__}\n"
