"""services status: rows from real supervise/status files, table and JSON."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
from support import wait_for
from test_services_apply import config, svc

from qmailkit import supervisor
from qmailkit.services import install
from qmailkit.services import status as st
from qmailkit.services.config import Service

RUN = b"#!/bin/sh\nexec sleep 1000\n"
LOG = b"#!/bin/sh\nexec cat > /dev/null\n"


def _cfg(tmp_path, kind, names):
    cfg = config(tmp_path, kind)
    cfg.services = {
        n: Service(name=n, type="qmail-send", profile=None, options={}, log_user="nobody")
        for n in names
    }
    return cfg


def test_missing_and_unsupervised(tmp_path):
    cfg = _cfg(tmp_path, "daemontools", ["mx", "pop"])
    install.export({"mx": svc()}, tmp_path / "services")
    rows = st.collect(cfg)
    assert [(r.name, r.state) for r in rows] == [
        ("mx", "unsupervised"),
        ("mx/log", "unsupervised"),
        ("pop", "missing"),
        ("pop/log", "missing"),
    ]
    assert st.format_table(rows) == (
        "SERVICE  STATE         PID  SECONDS  NORMALLY  WANT\n"
        "mx       unsupervised  -    -        up        -\n"
        "mx/log   unsupervised  -    -        up        -\n"
        "pop      missing       -    -        -         -\n"
        "pop/log  missing       -    -        -         -\n"
    )
    assert [r.name for r in st.problems(rows)] == ["mx", "mx/log", "pop", "pop/log"]


@pytest.mark.parametrize("kind", ["daemontools", "runit", "s6"])
def test_status_under_real_supervisor(tmp_path, scan, kind):
    cfg = _cfg(tmp_path, kind, ["mx", "pop"])
    tree = scan(kind, tmp_path / "scan")
    install.apply(cfg, {"mx": svc(run=RUN, log=LOG), "pop": svc(run=RUN, log=LOG)})
    root = tmp_path / "services"
    (root / "pop" / "down").touch()  # normally down: the scanner starts only its logger
    tree.rescan()
    tree.wait_up(root / "mx")
    sup = supervisor.get(kind)
    wait_for(lambda: sup.status(root / "pop/log").up, 15, what="pop/log up")
    wait_for(lambda: sup.status(root / "pop").supervised, 15, what="pop supervised")
    # the scanner may have started pop before its down file existed: take it down too
    sup.down(root / "pop")
    wait_for(lambda: not sup.status(root / "pop").up, 10, what="pop down")
    tree.remember()
    rows = {r.name: r for r in st.collect(cfg)}
    assert rows["mx"].state == "up" and rows["mx/log"].state == "up"
    assert rows["mx"].pid == sup.status(root / "mx").pid
    with open(f"/proc/{rows['mx'].pid}/cmdline", "rb") as fh:
        assert fh.read().split(b"\0")[:2] == [b"sleep", b"1000"]
    assert rows["mx"].normally_up is True and rows["mx"].want is None
    assert rows["pop"].state == "down" and rows["pop"].pid is None
    assert rows["pop"].normally_up is False
    assert rows["pop/log"].state == "up"
    table = st.format_table(list(rows.values())).splitlines()
    assert table[0].split() == ["SERVICE", "STATE", "PID", "SECONDS", "NORMALLY", "WANT"]
    assert table[1].split()[:3] == ["mx", "up", str(rows["mx"].pid)]
    assert table[3].split() == ["pop", "down", "-", table[3].split()[3], "down", "-"]
    data = json.loads(st.to_json(list(rows.values())))
    assert data[0]["name"] == "mx" and data[0]["state"] == "up" and data[0]["pid"] > 0
    assert set(data[0]) == {
        "name",
        "path",
        "state",
        "pid",
        "seconds",
        "normally_up",
        "want",
        "paused",
        "ready",
        "run_by",
    }
    assert [r.name for r in st.problems(list(rows.values()))] == []
    # taken down by hand: the row says it is down but normally up
    sup.down(root / "mx")
    wait_for(lambda: not sup.status(root / "mx").up, 10, what="mx down")
    row = st.collect(cfg)[0]
    assert (row.state, row.normally_up, row.pid) == ("down", True, None)
    assert [r.name for r in st.problems(st.collect(cfg))] == ["mx"]
    assert os.path.isdir(root / "mx" / "supervise")


@pytest.mark.parametrize(
    ("actual", "configured"),
    [
        ("daemontools", "runit"),
        ("daemontools", "s6"),
        ("runit", "daemontools"),
        ("s6", "daemontools"),
    ],
)
def test_a_wrong_kind_is_named_and_the_real_state_shown(tmp_path, scan, actual, configured):
    """A18: with kind = runit while daemontools runs them, every service looked down."""
    import subprocess
    import sys

    cfg = _cfg(tmp_path, actual, ["mx"])
    tree = scan(actual, tmp_path / "scan")
    install.apply(cfg, {"mx": svc(run=RUN, log=LOG)})
    root = tmp_path / "services"
    tree.rescan()
    tree.wait_up(root / "mx")
    sup = supervisor.get(actual)
    pids = {n: sup.status(root / n).pid for n in ("mx", "mx/log")}
    cfg.supervisor = replace(cfg.supervisor, kind=configured)
    rows = st.collect(cfg)
    assert [(r.name, r.state, r.pid, r.run_by) for r in rows] == [
        ("mx", "up", pids["mx"], actual),
        ("mx/log", "up", pids["mx/log"], actual),
    ]
    assert st.wrong_kind(rows) == {actual: ["mx", "mx/log"]}

    conf = tmp_path / "qmailkit.toml"
    conf.write_text(
        f'[supervisor]\nkind = "{configured}"\nscan_dir = "{tmp_path}/scan"\n'
        f'service_root = "{root}"\n[services.mx]\ntype = "qmail-send"\n'
    )
    p = subprocess.run(
        [sys.executable, "-m", "qmailkit", "services", "status", "--config", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0
    assert [line.split()[:3] for line in p.stdout.splitlines()[1:]] == [
        ["mx", "up", str(pids["mx"])],
        ["mx/log", "up", str(pids["mx/log"])],
    ]
    assert p.stderr == (
        f"note: mx, mx/log: supervised by {actual}, not {configured} (their supervise/ "
        f'directory is {actual}\'s): set kind = "{actual}" in [supervisor] of {conf} '
        "(restarts and --prune depend on it)\n"
    )
