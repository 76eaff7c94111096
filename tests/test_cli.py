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
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split()
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
        proc = subprocess.run([sys.executable, "-m", "qmailkit", *path, "--help"],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (path, proc.stderr)
        assert proc.stdout.startswith("usage: qmailkit " + " ".join(path)), (path, proc.stdout)


def test_errors_become_message_and_exit_code(capsys):
    def fail(_args):
        raise InputError("bad thing", path="/etc/x", line=3, hint="fix it")

    assert run(fail, None, "qmailkit test") == 100
    assert capsys.readouterr().err == "qmailkit test: fatal: /etc/x:3: bad thing (fix it)\n"


def test_usage_errors_exit_100():
    proc = subprocess.run([sys.executable, "-m", "qmailkit", "no-such-command"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 100
    assert "qmailkit: usage: argument COMMAND: invalid choice: 'no-such-command'" in proc.stderr
