"""Helpers for the run-script tests: stand-in programs and running a script under a shell."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from qmailkit.services.shell import CLEAN_MARK

# Records its arguments and environment, NUL-separated, next to $QK_DUMP (./dump when the
# environment was emptied); exits 0.
DUMP = """#!/bin/sh
printf '%s\\0' "$@" > "${QK_DUMP:-dump}.argv"
/usr/bin/env -0 > "${QK_DUMP:-dump}.env"
"""

# A sleep that does not wait but records that it was asked to (the fatal path sleeps 5).
SLEEP = """#!/bin/sh
printf '%s\\n' "$*" >> "${QK_DUMP:-dump}.sleep"
"""

STANDINS = ("tcpserver", "sslserver", "softlimit", "qmail-start", "couriertcpd")

SHELLS = ["sh", "dash"] + (["bash"] if os.path.exists("/bin/bash") else [])

# The system programs the run scripts and stand-ins use; PATH holds only these and the
# stand-ins, so a real tcpserver can never be started by mistake.
SYSTEM_TOOLS = ("id", "head", "cat", "chmod", "env", "sleep")


def toml_str(value: str) -> str:
    """A TOML basic string holding exactly ``value``."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def make_standins(bindir: Path, names: tuple[str, ...] = STANDINS) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    for name in names:
        p = bindir / name
        p.write_text(DUMP)
        p.chmod(0o755)
    p = bindir / "sleep"
    p.write_text(SLEEP)
    p.chmod(0o755)


def make_box(tmp_path: Path) -> Path:
    """A sandbox: stand-in programs first on PATH (bin, then sys with SYSTEM_TOOLS), a qmail
    home with control/me and rcpthosts, a certificate and a rules cdb.

    The ``box`` fixture of the run-script tests: ``box = pytest.fixture(make_box)``.
    """
    make_standins(tmp_path / "bin")
    (tmp_path / "sys").mkdir()
    for tool in SYSTEM_TOOLS:
        found = shutil.which(tool)
        assert found is not None, f"{tool} is not installed"
        (tmp_path / "sys" / tool).symlink_to(found)
    control = tmp_path / "qmail" / "control"
    control.mkdir(parents=True)
    (control / "me").write_text("mx.example.org\nsecond line\n")
    (control / "rcpthosts").write_text("example.org\n")
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "rules.cdb").write_text("x")
    return tmp_path


@dataclass
class Run:
    rc: int
    output: str  # stdout and stderr together, as the log service would see them
    argv: list[str] | None  # what the stand-in received (without argv[0])
    env: dict[str, str] | None
    slept: list[str]

    def logged_command(self) -> list[str]:
        """The arguments of the ``command-line:`` log line, as shlex reads them back."""
        marker = "command-line: "
        at = self.output.rindex(marker)
        return shlex.split(self.output[at + len(marker) :])


def run_script(
    shell: str,
    script: Path,
    workdir: Path,
    env: dict[str, str] | None = None,
    *,
    clean: bool = False,
) -> Run:
    """Run ``script`` under ``shell`` with ``env`` (and QK_DUMP, PATH).

    A run script first starts itself again under ``env -i /bin/sh``; to test it under
    each shell, with the test's environment, that step is skipped (the marker holds the
    script's pid: exec keeps it) unless ``clean`` is set.
    """
    dump = workdir / "dump"
    for suffix in (".argv", ".env", ".sleep"):
        Path(f"{dump}{suffix}").unlink(missing_ok=True)
    cmd = [shell, "--posix", str(script)] if shell == "bash" else [shell, str(script)]
    if not clean:
        cmd = ["/bin/sh", "-c", f'{CLEAN_MARK}=$$; export {CLEAN_MARK}; exec "$@"', "sh", *cmd]
    full_env = {"QK_DUMP": str(dump), "PATH": "/usr/bin:/bin", **(env or {})}
    p = subprocess.run(
        cmd,
        cwd=workdir,
        env=full_env,
        stdout=subprocess.PIPE,
        check=False,
        stderr=subprocess.STDOUT,
        timeout=30,
    )
    argv = envd = None
    if Path(f"{dump}.argv").exists():
        argv = [a.decode() for a in Path(f"{dump}.argv").read_bytes().split(b"\0")[:-1]]
        envd = {}
        for item in Path(f"{dump}.env").read_bytes().split(b"\0")[:-1]:
            name, _, value = item.decode().partition("=")
            envd[name] = value
    sleep_file = Path(f"{dump}.sleep")
    slept = sleep_file.read_text().splitlines() if sleep_file.exists() else []
    return Run(p.returncode, p.stdout.decode(), argv, envd, slept)
