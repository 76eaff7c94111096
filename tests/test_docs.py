"""The README and docs/ stay in step with the commands."""

from __future__ import annotations

import re
from pathlib import Path

from qmailkit.cli import build_parser
from qmailkit.services import config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_readme_config_example_loads():
    blocks = re.findall(r"```toml\n(.*?)```", README, re.DOTALL)
    assert blocks
    for block in blocks:
        cfg = config.loads(block, "README.md")
        assert cfg.services


def test_example_config_loads():
    cfg = config.load(ROOT / "examples" / "qmailkit.toml")
    assert list(cfg.services) == [
        "qmail-send",
        "qmail-smtpd",
        "submission",
        "smtps",
        "imap",
        "imapssl",
        "pop3ssl",
        "vpopmaild",
    ]


def test_every_command_is_in_the_readme_and_has_a_page():
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")}
    # commands documented together on one page
    page_of = {"tai64n": "tai64nlocal", "auth": "mkauth", "rcpt": "mkvalidrcptto"}
    for name in _commands():
        if name == "demo":
            assert "qmailkit demo" in README
            continue
        assert f"qmailkit {name}" in README or f"`{name}`" in README, name
        assert page_of.get(name, name) in pages, name


def test_readme_starts_with_the_two_setup_commands():
    setup = README[README.index("## Set up") : README.index("## What is in it")]
    commands = [c.strip() for c in re.findall(r"```sh\n(.*?)```", setup, re.DOTALL)]
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/qmailkit demo",
        "bash scripts/test",
    ]
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()
