"""An apply killed halfway (kill -9 between writing the files and restarting) is finished by
the next one, under a real supervisor (A8), whatever spelling of the config path it is given
(A12).

The kill is real: the apply runs in a child whose os.rename sends it SIGKILL right after the
rename that installs the chosen file, so the point of interruption is exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import need, wait_for
from support.services import public_tempdir
from support.services_prune import Site

from qmailkit import supervisor
from qmailkit.demo import standins
from qmailkit.services import plan as planning

LOGGER = {
    "daemontools": ["multilog", "setuidgid"],
    "runit": ["svlogd", "chpst"],
    "s6": ["s6-log", "s6-setuidgid"],
}

# python -c KILLER TARGET ARGS...: qmailkit ARGS, killed by SIGKILL once TARGET is renamed into
KILLER = """
import os, signal, sys
from qmailkit.cli import main
real = os.rename
def rename(src, dst, *args, **kw):
    real(src, dst, *args, **kw)
    if os.fspath(dst) == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture
def pub():
    with public_tempdir() as d:
        yield d


def qk(cwd, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "QMAILKIT_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "qmailkit", "services", "apply", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )


def deliveries(site: Site) -> list[str]:
    """The default delivery each qmail-start stand-in was started with, oldest first."""
    return [r["argv"][1] for r in standins.read_records(str(site.pub / "records"), "qmail-start")]


@pytest.mark.parametrize(
    ("kind", "killed_after", "spelling"),
    [
        ("s6", "run", "same"),
        ("s6", planning.STATE_FILE, "relative"),
        ("daemontools", "run", "relative"),
        ("runit", planning.STATE_FILE, "same"),
    ],
)
def test_interrupted_apply_is_finished_by_the_next(pub, scan, kind, killed_after, spelling):
    need(*LOGGER[kind])
    site = Site(pub, kind)
    tree = scan(kind, site.scan_dir)
    sup = supervisor.get(kind)
    config = site.write("send", delivery="./Maildir2/")
    assert qk(pub, "--config", str(config), "--wait", "15").returncode == 0
    send = site.dir("send")
    wait_for(lambda: deliveries(site) == ["./Maildir2/"], 10, what="the first qmail-start")
    tree.remember()
    pid = sup.status(send).pid

    site.write("send", delivery="./Maildir3/")
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLER,
            str(send / killed_after),
            "services",
            "apply",
            "-q",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    assert b"./Maildir3/" in (send / "run").read_bytes()
    pending = json.loads((site.root / planning.PENDING_FILE).read_text())
    assert pending["restart"] == ["send"]
    assert sup.status(send).pid == pid  # the old one still runs: nothing restarted it

    name = str(config) if spelling == "same" else os.path.relpath(config, pub / "scan")
    again = qk(pub / "scan", "-q", "--config", name)
    assert again.returncode == 0, again.stderr
    assert again.stdout == (
        "restart     send  (left pending by an interrupted apply)\nrestarted send\n"
    )
    wait_for(
        lambda: deliveries(site) == ["./Maildir2/", "./Maildir3/"],
        15,
        what="qmail-start with the new delivery",
    )
    tree.remember()
    assert not (site.root / planning.PENDING_FILE).exists()
    state = json.loads((send / planning.STATE_FILE).read_text())["files"]
    assert state["run"] == planning.sha((send / "run").read_bytes())
    third = qk(pub, "--config", str(config))
    assert (third.returncode, third.stdout) == (0, "nothing to change\n")


def test_a_file_written_by_an_interrupted_apply_is_not_a_hand_edit(pub):
    """Killed after run was replaced, before the state file: the next apply, with the config
    changed again, replaces run as its own file (no --force wanted)."""
    site = Site(pub, "runit")  # no scanner: nothing runs, nothing is restarted
    config = site.write("send", delivery="./Maildir2/")
    assert qk(pub, "--config", str(config)).returncode == 0
    send = site.dir("send")
    site.write("send", delivery="./Maildir3/")
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLER,
            str(send / "run"),
            "services",
            "apply",
            "-q",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    site.write("send", delivery="./Maildir4/")
    again = qk(pub, "-q", "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert again.stdout == (
        "restart     send  (left pending by an interrupted apply)\nupdate      send/run\n"
    )
    assert b"./Maildir4/" in (send / "run").read_bytes()
    assert qk(pub, "--config", str(config)).stdout == "nothing to change\n"


def killed_apply(config: Path, target: Path) -> subprocess.CompletedProcess:
    """services apply -q, SIGKILLed right after it renames something onto ``target``."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            KILLER,
            str(target),
            "services",
            "apply",
            "-q",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("kind", "killed_at"),
    [
        ("s6", "link"),  # s6-svscan looks only when told: the rescan was lost with the kill
        ("s6", "dir"),  # the new directory in place, not linked yet
        ("daemontools", "link"),
    ],
)
def test_an_interrupted_new_service_is_started_by_the_next_apply(pub, scan, kind, killed_at):
    need(*LOGGER[kind])
    site = Site(pub, kind)
    tree = scan(kind, site.scan_dir)
    sup = supervisor.get(kind)
    config = site.write("send")
    assert qk(pub, "--config", str(config), "--wait", "15").returncode == 0
    config = site.write("send", "send2")
    where = site.scan_dir / "send2" if killed_at == "link" else site.dir("send2")
    killed = killed_apply(config, where)
    assert killed.returncode == -9, killed.stderr
    assert os.path.lexists(where)
    pending = json.loads((site.root / planning.PENDING_FILE).read_text())
    assert pending["restart"] == []

    again = qk(pub, "-q", "--config", str(config), "--wait", "15")
    assert again.returncode == 0, again.stderr
    said = {
        "link": "rescan      send2  (left pending by an interrupted apply)\n",
        "dir": f"link        send2  ({site.scan_dir}/send2 -> {site.dir('send2')})\n",
    }[killed_at]
    assert again.stdout == said + "up: send2, send2/log\n"
    assert sup.status(site.dir("send2")).up
    tree.remember()
    assert not (site.root / planning.PENDING_FILE).exists()
    third = qk(pub, "--config", str(config))
    assert (third.returncode, third.stdout) == (0, "nothing to change\n")


@pytest.mark.parametrize("killed_after", [planning.PENDING_FILE, "log/run", "run"])
def test_each_step_of_an_update_is_finished_by_the_next_apply(pub, scan, killed_after):
    """The config changes both scripts (delivery: run; log_size: log/run); wherever the kill
    falls, the next apply leaves both running the new scripts, and says what it redid."""
    need(*LOGGER["daemontools"])
    site = Site(pub, "daemontools")
    tree = scan("daemontools", site.scan_dir)
    sup = supervisor.get("daemontools")
    config = site.write("send", delivery="./Maildir2/")
    assert qk(pub, "--config", str(config), "--wait", "15").returncode == 0
    send = site.dir("send")
    wait_for(lambda: deliveries(site) == ["./Maildir2/"], 10, what="the first qmail-start")
    tree.remember()
    pids = {t: sup.status(site.root / t).pid for t in ("send", "send/log")}

    site.write("send", delivery="./Maildir3/")
    config.write_text(config.read_text().replace("log_size = 4096", "log_size = 8192"))
    target = (
        site.root / killed_after if killed_after == planning.PENDING_FILE else send / killed_after
    )
    killed = killed_apply(config, target)
    assert killed.returncode == -9, killed.stderr
    pending = json.loads((site.root / planning.PENDING_FILE).read_text())
    assert pending["restart"] == ["send/log", "send"]
    assert {t: sup.status(site.root / t).pid for t in pids} == pids

    again = qk(pub, "-q", "--config", str(config), "--wait", "15")
    assert again.returncode == 0, again.stderr
    left = {
        planning.PENDING_FILE: "update      send/log/run\nupdate      send/run\n",
        "log/run": "update      send/run\n",
        "run": "",
    }[killed_after]
    assert again.stdout == (
        "restart     send/log  (left pending by an interrupted apply)\n"
        "restart     send  (left pending by an interrupted apply)\n"
        + left
        + "restarted send/log\nrestarted send\nup: send/log, send\n"
    )
    wait_for(
        lambda: deliveries(site) == ["./Maildir2/", "./Maildir3/"],
        15,
        what="qmail-start with the new delivery",
    )
    tree.remember()
    new = {t: sup.status(site.root / t).pid for t in pids}
    assert all(new[t] not in (None, pids[t]) for t in pids)
    assert b"s8192" in (send / "log/run").read_bytes()
    assert not (site.root / planning.PENDING_FILE).exists()
    third = qk(pub, "--config", str(config))
    assert (third.returncode, third.stdout) == (0, "nothing to change\n")


def test_every_spelling_of_the_config_path_changes_and_restarts_nothing(pub, scan):
    """A12: relative, through a symlink, with "..", or from $QMAILKIT_CONFIG: the files name
    the config by its real path, so apply finds nothing to change and restarts nothing."""
    need(*LOGGER["daemontools"])
    site = Site(pub, "daemontools")
    tree = scan("daemontools", site.scan_dir)
    sup = supervisor.get("daemontools")
    config = site.write("send")
    assert qk(pub, "--config", str(config), "--wait", "15").returncode == 0
    tree.remember()
    targets = ("send", "send/log")
    pids = {t: sup.status(site.root / t).pid for t in targets}
    files = {p: p.read_bytes() for p in sorted(site.root.rglob("run"))}
    assert f'from "{config}"'.encode() in files[site.dir("send") / "run"]
    (pub / "elsewhere").mkdir()
    (pub / "elsewhere/link.toml").symlink_to(config)
    (pub / "dirlink").symlink_to(pub)
    spellings = [
        ("--config", "qmailkit.toml"),
        ("--config", "./scan/../qmailkit.toml"),
        ("--config", str(pub / "elsewhere/link.toml")),
        ("--config", str(pub / "dirlink/qmailkit.toml")),
        ("--config", "elsewhere/link.toml"),
    ]
    for args in spellings:
        r = qk(pub, *args)
        assert (r.returncode, r.stdout, r.stderr) == (0, "nothing to change\n", ""), args
    env = {k: v for k, v in os.environ.items() if k != "QMAILKIT_CONFIG"}
    env["QMAILKIT_CONFIG"] = "elsewhere/link.toml"
    r = subprocess.run(
        [sys.executable, "-m", "qmailkit", "services", "apply"],
        capture_output=True,
        text=True,
        env=env,
        cwd=pub,
        check=False,
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "nothing to change\n", "")
    assert {p: p.read_bytes() for p in sorted(site.root.rglob("run"))} == files
    assert {t: sup.status(site.root / t).pid for t in targets} == pids
