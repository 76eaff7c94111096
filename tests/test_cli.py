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


def test_help_lists_every_group():
    out = subprocess.run([sys.executable, "-m", "qmailkit", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "demo" in out


def test_errors_become_message_and_exit_code(capsys):
    def fail(_args):
        raise InputError("bad thing", path="/etc/x", line=3, hint="fix it")

    assert run(fail, None, "qmailkit test") == 100
    assert capsys.readouterr().err == "qmailkit test: fatal: /etc/x:3: bad thing (fix it)\n"
