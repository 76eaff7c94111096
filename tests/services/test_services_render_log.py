"""The generated log/run scripts with the real loggers: multilog, svlogd and s6-log write
timestamped lines to ./main as the log user, and keep the same number of old files."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from support import CI, need
from support.services_render import toml_str

from qmailkit.services import config, render


@pytest.fixture
def pubdir():
    """A 0755 temp dir under /tmp: the log user must be able to enter it."""
    d = Path(tempfile.mkdtemp(prefix="qmailkit-log-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


LOGGERS = {
    "daemontools": ("setuidgid", "multilog"),
    "runit": ("chpst", "svlogd"),
    "s6": ("s6-setuidgid", "s6-log"),
}


@pytest.mark.parametrize("kind", list(LOGGERS))
def test_log_service_rotates_and_keeps_count_minus_one_old_files(kind, pubdir):
    need(*LOGGERS[kind])
    if os.geteuid() != 0:
        msg = "the log run script switches to the log user: needs root"
        pytest.fail(msg) if CI else pytest.skip(msg)
    nobody = pwd.getpwnam("nobody")
    text = "\n".join(
        [
            "[supervisor]",
            f'kind = "{kind}"',
            'log_user = "nobody"',
            "log_size = 4096",
            "log_count = 3",
            "[system]",
            f"path = [{toml_str(os.path.dirname(need(LOGGERS[kind][1])[0]))}]",
            "[services.mx]",
            'type = "qmail-smtpd"',
            "",
        ]
    )
    r = render.render(config.loads(text))["mx"]
    service = pubdir / "mx"
    for d in r.dirs:
        (service / d).mkdir(parents=True)
    os.chown(service / "log" / "main", nobody.pw_uid, nobody.pw_gid)
    for rel, (data, mode) in r.files.items():
        (service / rel).write_bytes(data)
        os.chmod(service / rel, mode)
    lines = b"".join(b"line %05d %s\n" % (i, b"x" * 90) for i in range(1500))  # ~150 KB
    p = subprocess.run(
        ["./run"], cwd=service / "log", input=lines, capture_output=True, timeout=60, check=False
    )
    assert p.returncode == 0, p.stderr
    main = service / "log" / "main"
    old = sorted(f for f in os.listdir(main) if f.startswith("@"))
    assert len(old) == 2, old  # log_count 3 = current + 2 old, like multilog n3
    assert all(Path(main, f).stat().st_uid == nobody.pw_uid for f in old)
    logged = b"".join(Path(main, f).read_bytes() for f in [*old, "current"]).splitlines()
    last = logged[-1]  # the newest line, timestamped (current may just have been rotated)
    assert last.startswith(b"@4000") and last.endswith(b" line 01499 " + b"x" * 90)
    for f in old:  # files are rotated near the configured size (s6-log's cap is soft)
        assert Path(main, f).stat().st_size < 4096 * 4
