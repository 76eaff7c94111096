"""``qmailkit demo --part logs``: the story, the files, and nothing left running."""

from __future__ import annotations

import os
import subprocess
import sys

from support import need


def _my_processes() -> set[int]:
    from support.supervisors import descendants

    return descendants(os.getpid())


def test_demo_logs_converts_samples_and_a_live_multilog(tmp_path):
    need("svscan", "supervise", "multilog", "svc")
    from qmailkit.demo import logs

    said: list[str] = []
    before = _my_processes()
    logs.run(tmp_path, said.append)
    text = "\n".join(said)
    assert "smtpd-live: 1 file, 6 lines into 1 day file" in text
    assert "stopped svscan, supervise, multilog and the service (by PID)" in text
    assert "was kept whole in qmail-send." in text
    days = sorted(p.name for p in (tmp_path / "var-log").iterdir() if p.is_file())
    for name in ("pop3d", "qmail-send", "qmail-smtpd"):
        assert sum(d.startswith(name + ".") for d in days) >= 3  # several days each
    # every rotated file was converted; nothing started by the demo is still running
    for main in (tmp_path / "service").glob("*/log/main"):
        assert not [p for p in main.iterdir() if p.name.startswith("@")]
    assert _my_processes() <= before


def test_demo_command_runs_the_logs_part(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "qmailkit", "demo", "--part", "logs", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "== Logs: multilog files to dated, readable files ==" in res.stdout
    assert "qmail-send: " in res.stdout and "Day files in" in res.stdout
