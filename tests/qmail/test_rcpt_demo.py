"""The rcpt part of ``qmailkit demo``: its sample tree, its cdb and its answers."""

from __future__ import annotations

from support import need
from support.rcpt import cdb_dump_keys

from qmailkit.demo import rcpt as demo_rcpt


def test_demo_builds_the_cdb_and_answers(tmp_path):
    need("setforward", "cdb")
    lines: list[str] = []
    demo_rcpt.run(tmp_path, lines.append)
    text = "\n".join(lines)
    target = tmp_path / "var-qmail" / "control" / "validrcptto.cdb"
    assert cdb_dump_keys(target) == {
        "alice@bounce.example": b"",
        "carol@bounce.example": b"",
        "sales@bounce.example": b"",
        "news@bounce.example": b"",
        "news-default@bounce.example": b"",
        "@catch.example": b"",
        "bob@example.com": b"",
        "bob-lists@example.com": b"",
        "bob-spamtrap@example.com": b"-",
        "mary@example.com": b"",
        "postmaster@example.com": b"",
        "abuse@example.com": b"",
        "noreply@example.com": b"-",
        "info@example.com": b"",
        "webmaster@example.com": b"",
    }
    answers = {
        line.split()[0]: line.split()[1]
        for line in lines
        if line.startswith("  ")
        and len(line.split()) > 2
        and line.split()[1] in ("accept", "reject")
    }
    assert answers["news-subscribe@bounce.example"] == "accept"
    assert answers["nobody@bounce.example"] == "reject"
    assert answers["noreply@example.com"] == "reject"
    assert answers["stranger@example.com"] == "reject"
    assert answers["anyone@catch.example"] == "accept"
    assert (
        "forgotten.example (var-qmail/control/rcpthosts:4) is accepted but nothing handles" in text
    )
    assert "and validrcptto.cdb is unchanged" in text
    # the demo puts rcpthosts back as it was
    assert "forgotten" not in (tmp_path / "var-qmail" / "control" / "rcpthosts").read_text()
