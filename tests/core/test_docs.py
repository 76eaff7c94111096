"""The README and docs/ stay in step with the commands."""

from __future__ import annotations

import re
from pathlib import Path

from qmailkit.cli import build_parser
from qmailkit.services import config

ROOT = Path(__file__).resolve().parents[2]
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


def _pages() -> list[Path]:
    return sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "README.md")


def _admin_pages() -> list[Path]:
    """The pages written for the admin (architecture.md is for contributors)."""
    return [p for p in _pages() if p.name != "architecture.md"]


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n") + 1
    following = re.search(rf"\n#{{1,{len(level)}}} ", text[start + len(heading) :])
    return text[start : start + len(heading) + following.start()] if following else text[start:]


def test_every_page_is_in_the_index_once():
    index = (ROOT / "docs" / "README.md").read_text()
    entries = re.findall(r"^\* \[([^\]]+)\]\(([^)]+)\) — ", index, re.MULTILINE)
    assert [target for _, target in entries] == [name for name, _ in entries]
    assert sorted(name for name, _ in entries) == [p.name for p in _pages()]


def test_every_command_in_the_readme_table_has_a_page():
    table = _section(README, "## What is in it")
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    header, *rows = rows
    assert header.split("|")[-2].strip() == "page"
    listed = set()
    for row in rows:
        qmailkit_cell, page_cell = row.split("|")[3], row.split("|")[4]
        listed.update(re.findall(r"`qmailkit ([a-z0-9-]+)", qmailkit_cell))
        listed.update(re.findall(r"`(convert-multilog|mkvalidrcptto|mkauth)`", qmailkit_cell))
        links = re.findall(r"\]\((docs/[^)]+\.md)\)", page_cell)
        assert links or "demo" in qmailkit_cell, row
        for link in links:
            assert (ROOT / link).is_file(), link
    assert set(_commands()) <= listed


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


ADMIN_DOCS = ["README.md", "CONTRIBUTING.md", "CHANGES.md", "bench/README.md"]


def test_relative_links_lead_to_files_and_headings():
    files = [ROOT / name for name in ADMIN_DOCS] + sorted((ROOT / "docs").glob("*.md"))
    for source in files:
        text = re.sub(r"```.*?```", "", source.read_text(), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            name, _, anchor = target.partition("#")
            path = (source.parent / name).resolve() if name else source
            assert path.exists(), f"{source.name}: {target}"
            if anchor:
                assert anchor in _anchors(path), f"{source.name}: {target}"


def test_exit_codes_are_one_table_shape():
    for page in _admin_pages():
        text = page.read_text()
        if "\n## Exit codes\n" not in text:
            continue
        section = _section(text, "## Exit codes")
        headers = [
            line
            for i, line in enumerate(section.splitlines()[:-1])
            if line.startswith("|") and section.splitlines()[i + 1].startswith("|---")
        ]
        assert headers, page.name
        assert set(headers) == {"| code | meaning |"}, page.name
        for row in re.findall(r"^\| ([^|]+) \|", section, re.MULTILINE):
            assert row in ("code", "---") or row.isdigit(), (page.name, row)


def test_admin_pages_name_no_module_paths():
    # module paths change with the code; the admin needs commands and files
    for page in _admin_pages():
        module = re.search(r"\bqmailkit\.(?!toml\b)[a-z_]+|src/qmailkit", page.read_text())
        assert module is None, (page.name, module)
