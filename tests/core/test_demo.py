"""``qmailkit demo`` end to end: every part runs, and nothing it started survives it."""

from __future__ import annotations

import os
import subprocess
import sys

from support import need
from support.services import public_tempdir


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry}: {cmdline}")
    return found


def test_demo_runs_every_part_and_stops_what_it_started():
    need("svscan", "supervise", "multilog", "tcpserver", "tcprules", "setforward")
    with public_tempdir() as pub:  # the services run as nobody: it must reach the sandbox
        run_every_part(pub / "sandbox")


def run_every_part(sandbox):
    proc = subprocess.run(
        [sys.executable, "-m", "qmailkit", "demo", "--dir", str(sandbox)],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"qmailkit demo: sandbox {sandbox}\n")
    assert "\ndemo finished: logs, cdb, rcpt, services\n" in proc.stdout
    assert f"everything it made is in {sandbox} (remove it with: rm -r {sandbox})" in proc.stdout
    assert "Stopped svscan and every supervise, service and logger it started." in proc.stdout
    assert _processes_mentioning(str(sandbox)) == []
    # the results it talks about are there to look at
    assert sorted(p.name for p in sandbox.iterdir()) == ["cdb", "logs", "rcpt", "services"]


def test_demo_clean_removes_the_sandbox(tmp_path):
    sandbox = tmp_path / "sandbox"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qmailkit",
            "demo",
            "--dir",
            str(sandbox),
            "--part",
            "cdb",
            "--clean",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\ndemo finished: cdb\n" in proc.stdout
    assert not sandbox.exists()


def test_demo_unknown_part_is_an_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "qmailkit", "demo", "--dir", str(tmp_path), "--part", "nosuch"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 100
    assert "qmailkit demo: usage: argument --part: invalid choice: 'nosuch'" in proc.stderr


def test_demo_part_choices_match_the_parts():
    from qmailkit.cli import build_parser
    from qmailkit.demo import PARTS

    parser = build_parser()
    demo = next(a for a in parser._actions if a.dest == "command").choices["demo"]
    part = next(a for a in demo._actions if a.dest == "part")
    assert tuple(part.choices) == tuple(name for name, _title in PARTS)


def _demo(*args):
    return subprocess.run(
        [sys.executable, "-m", "qmailkit", "demo", "--part", "cdb", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_demo_dir_that_is_a_file_is_refused(tmp_path):
    # A14: it was a FileExistsError traceback
    target = tmp_path / "afile"
    target.write_text("keep me\n")
    proc = _demo("--dir", str(target))
    assert proc.returncode == 100
    assert proc.stderr == (
        f"qmailkit demo: fatal: {target}: is a file, not a directory (name a "
        "new or an existing directory for the sandbox)\n"
    )
    assert target.read_text() == "keep me\n"


def test_demo_dir_with_a_missing_parent_is_refused(tmp_path):
    # it used to create every missing parent (/nonexist/x/y made /nonexist)
    target = tmp_path / "nonexist" / "x" / "y"
    proc = _demo("--dir", str(target))
    assert proc.returncode == 100
    assert proc.stderr == (
        f"qmailkit demo: fatal: {target}: its parent directory does not exist "
        "(create the parent first, or leave out --dir)\n"
    )
    assert not (tmp_path / "nonexist").exists()


def test_demo_part_dir_that_is_a_symlink_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "cdb").symlink_to(outside)
    proc = _demo("--dir", str(sandbox))
    assert proc.returncode == 100
    assert f"{sandbox}/cdb: is a symbolic link, not a directory" in proc.stderr
    assert os.listdir(outside) == []


def test_demo_without_daemontools_says_once_what_to_install():
    """A machine without daemontools and ucspi-tcp (none on PATH): one line says which
    packages would let the services start, and check's result is a summary."""
    with public_tempdir() as pub:
        env = {**os.environ, "PATH": str(pub / "empty")}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "qmailkit",
                "demo",
                "--dir",
                str(pub / "sandbox"),
                "--part",
                "services",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
        )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "qmailkit services check: 0 error(s), 0 warning(s)" in lines
    assert [ln for ln in lines if "daemontools" in ln] == [
        "Not starting the services: they need the Debian packages daemontools and ucspi-tcp "
        + "(apt-get install daemontools ucspi-tcp)."
    ]
    assert not [ln for ln in lines if "error:" in ln]


def test_demo_check_summary_of_a_machine_without_the_programs():
    """Where daemontools and ucspi-tcp are missing, check's 19 errors are one line."""
    from qmailkit.demo import services as demo
    from qmailkit.services import check, config

    with public_tempdir() as base:
        ports = demo.build_sandbox(base)
        text = demo.sample_config(base, ports, "nobody").replace(
            f'path = ["{base}/bin", "/usr/local/bin", "/usr/bin", "/bin"]', f'path = ["{base}/bin"]'
        )
        path = base / "qmailkit.toml"
        path.write_text(text)
        findings = check.check(config.load(path))
    lines = demo.check_summary(findings, path)
    assert lines == [
        "qmailkit services check: 19 error(s), 0 warning(s); 19 of them for programs not "
        + "installed here: setuidgid, multilog, tcpserver",
        f"    (qmailkit services check -v --config {path} lists each one)",
    ]


def test_demo_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("keep me\n")
    target = tmp_path / "afile" / "x"
    proc = _demo("--dir", str(target))
    assert (proc.returncode, proc.stdout) == (100, "")
    assert proc.stderr == (
        f"qmailkit demo: fatal: {target}: a part of its parent is not a directory (name a "
        "directory whose parents are directories, or leave out --dir)\n"
    )
    assert (tmp_path / "afile").read_text() == "keep me\n"


def test_demo_dir_name_too_long_is_a_message(tmp_path):
    target = tmp_path / ("a" * 300)
    proc = _demo("--dir", str(target))
    assert (proc.returncode, proc.stdout) == (111, "")
    assert proc.stderr == (
        f"qmailkit demo: fatal: {target}: cannot create the sandbox directory: File name too long\n"
    )
    assert list(tmp_path.iterdir()) == []
