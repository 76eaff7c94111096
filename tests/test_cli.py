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
    assert options.percent("20%") == 0.2
    with pytest.raises(argparse.ArgumentTypeError, match="not between 0 and 100"):
        options.percent("101")
