"""qmailkit.supervisor against real svscan, runsvdir and s6-svscan."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support import need, wait_for

from qmailkit import supervisor
from qmailkit.errors import QmailkitError

LOGGER = {
    "daemontools": "exec multilog t s4096 n3 ./main\n",
    "runit": "mkdir -p main\nprintf 's4096\\nn3\\n' > main/config\nexec svlogd -t ./main\n",
    "s6": "exec s6-log t s4096 n3 ./main\n",
}


def make_service(root: Path, kind: str, name: str = "hello") -> Path:
    svc = root / name
    (svc / "log").mkdir(parents=True)
    run = svc / "run"
    run.write_text(
        "#!/bin/sh\nexec 2>&1\necho started $$\n"
        "trap 'echo got HUP' HUP\ntrap 'echo got TERM; exit 0' TERM\n"
        "while :; do sleep 1 & wait $!; done\n"
    )
    run.chmod(0o755)
    logrun = svc / "log" / "run"
    logrun.write_text("#!/bin/sh\n" + LOGGER[kind])
    logrun.chmod(0o755)
    return svc


def pid_cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def reference_pid(kind: str, svc: Path) -> int | None:
    """The pid as the suite's own status tool prints it."""
    import re

    tool = {"daemontools": ["svstat"], "runit": ["sv", "status"], "s6": ["s6-svstat"]}[kind]
    out = subprocess.run(tool + [str(svc)], capture_output=True, text=True, check=False).stdout
    m = re.search(r"\(pid (\d+)\)", out) or re.search(r"pid (\d+)", out)
    return int(m.group(1)) if m else None


@pytest.mark.parametrize("kind", supervisor.KINDS)
def test_commands_and_status(kind, scan, tmp_path):
    if kind == "daemontools":
        need("svscan", "supervise", "multilog", "svstat")
    elif kind == "runit":
        need("runsvdir", "runsv", "svlogd", "sv")
    else:
        need("s6-svscan", "s6-supervise", "s6-log", "s6-svstat")
    sup = supervisor.get(kind)
    tree = scan(kind)
    svc = make_service(tmp_path / "services", kind)
    link = tree.add(svc)
    tree.wait_up(link)

    assert supervisor.detect(link) == kind
    assert supervisor.detect(link / "log") == kind
    st = sup.status(link)
    assert st.supervised and st.up and st.normally_up and st.want is None
    assert st.pid == reference_pid(kind, link)
    assert b"sh" in pid_cmdline(st.pid)
    assert 0 <= st.seconds < 15  # a wrong TAI convention would be 27 s off
    logst = sup.status(link / "log")
    assert logst.up and logst.pid != st.pid

    current = link / "log" / "main" / "current"
    sup.hup(link)
    wait_for(lambda: current.exists() and b"got HUP" in current.read_bytes(), what="HUP logged")

    # restart = TERM + up: a new pid, still up
    old = st.pid
    sup.restart(link)
    wait_for(
        lambda: sup.status(link).up and sup.status(link).pid not in (None, old), what="restart"
    )
    assert b"got TERM" in current.read_bytes()

    # alarm on the log service: the logger rotates a non-empty current into an @ file
    main = link / "log" / "main"
    before = {p.name for p in main.glob("@*")}
    sup.alarm(link / "log")
    wait_for(lambda: {p.name for p in main.glob("@*")} - before, what="rotation")
    new = ({p.name for p in main.glob("@*")} - before).pop()
    assert len(new) == 27 and new.endswith((".s", ".u"))

    sup.down(link)
    wait_for(lambda: not sup.status(link).up, what="down")
    st = sup.status(link)
    assert st.supervised and st.pid is None and st.normally_up and st.want is None
    (svc / "down").write_text("")
    assert sup.status(link).normally_up is False
    sup.up(link)
    wait_for(lambda: sup.status(link).up, what="up again")
    assert sup.status(link).normally_up is False


def test_unsupervised_directory(tmp_path):
    svc = tmp_path / "nothing"
    (svc / "supervise").mkdir(parents=True)
    sup = supervisor.get("daemontools")
    st = sup.status(svc)
    assert not st.supervised and not st.up and st.pid is None
    assert supervisor.detect(svc) is None
    with pytest.raises(QmailkitError, match="no daemontools supervisor is running"):
        sup.hup(svc)


def test_unknown_kind():
    with pytest.raises(QmailkitError, match="unknown supervisor 'systemd'"):
        supervisor.get("systemd")


@pytest.mark.parametrize("kind", supervisor.KINDS)
def test_each_suite_module_says_everything_about_its_suite(kind):
    """Scan directory, scanner, logger and the package of every program it names: what
    config, render, check and the scan tree ask of a suite, all from its module."""
    sup = supervisor.get(kind)
    assert sup.kind == kind and sup.scan_dir.startswith("/")
    logger = sup.logger("qmaill", 4096, 3)
    named = [sup.scanner[0], *logger.programs]
    assert {program: sup.packages[program] for program in named} == dict.fromkeys(named, kind)
    assert logger.command[-1] == "./main" and logger.command[0] in logger.programs
