"""The demo's cdb part: what it says and what it leaves behind."""

from __future__ import annotations

import subprocess

from support import need

from qmailkit import cdb, demo


def test_demo_part_cdb(tmp_path):
    (tcprules_prog,) = need("tcprules")
    lines: list[str] = []
    assert demo.run(tmp_path, lines.append, only=["cdb"]) == ["cdb"]
    text = "\n".join(lines)
    part = tmp_path / "cdb"
    assert "Compiled 4 rules from tcp.smtp into tcp.smtp.cdb" in text
    assert "  127.0.0.1      allowed, RELAYCLIENT=''  (line 3: key '127.')" in lines
    assert "  198.51.100.7   refused, no variables  (line 6: key '198.51.100.7')" in lines
    assert f"  {part}/tcp.smtp:9: expected 'allow' or 'deny' after ':', found 'alow'" in text
    assert "  and tcp.smtp.cdb, which tcpserver reads for every connection, is unchanged" in lines
    assert "alice@example.com present: True, mallory@example.com present: False" in text
    # what it left is what the real tcprules makes from the rules it left
    with open(part / "tcp.smtp", "rb") as rules:
        subprocess.run(
            [tcprules_prog, part / "real.cdb", part / "real.tmp"], stdin=rules, check=True
        )
    assert (part / "tcp.smtp.cdb").read_bytes() == (part / "real.cdb").read_bytes()
    with cdb.Reader(part / "validrcptto.cdb") as reader:
        assert len(reader) == 3
