"""``qmailkit services apply --prune``: services dropped from the config are retired.

Under real svscan, runsvdir and s6-svscan: the link goes, the service and its
logger stop (checked by the PIDs their supervisors reported), the other service
keeps running untouched, and the directory is kept under a dot-name.  Without
--prune only a warning is given; directories qmailkit did not make, and scan
directory entries that are not our links, are never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import need, wait_for
from support.services import public_tempdir
from support.services_prune import Site, retired_dirs, tree_of

from qmailkit import supervisor
from qmailkit.services import install, retire
from qmailkit.services import plan as planning
from qmailkit.services.render import render
from qmailkit.supervisor.tree import alive

LOGGER = {
    "daemontools": ["multilog", "setuidgid"],
    "runit": ["svlogd", "chpst"],
    "s6": ["s6-log", "s6-setuidgid"],
}


@pytest.fixture
def pub():
    with public_tempdir() as d:
        yield d


def qk(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "QMAILKIT_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "qmailkit", "services", "apply", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("kind", ["daemontools", "runit", "s6"])
def test_prune_under_real_supervisor(pub, scan, kind):
    need(*LOGGER[kind])
    site = Site(pub, kind)
    tree = scan(kind, site.scan_dir)
    sup = supervisor.get(kind)
    first = install.apply(site.config("keep", "old"))
    assert first.retired == [] and first.warnings == []
    for name in ("keep", "old"):
        tree.wait_up(site.dir(name))
    old, keep = site.dir("old"), site.dir("keep")
    pids = {str(d): sup.status(d).pid for d in (old, old / "log", keep, keep / "log")}
    assert None not in pids.values()
    wait_for(
        lambda: (
            b"qmail-start" in (old / "log/main/current").read_bytes()
            if (old / "log/main/current").exists()
            else False
        ),
        10,
        what="old's log",
    )

    # without --prune: a warning, nothing else
    config = site.config("keep")
    result = install.apply(config)
    assert result.changes == [] and result.retired == []
    assert result.warnings == [
        f"old: in {site.root} but no longer in the config; apply --prune retires it"
    ]
    assert (site.scan_dir / "old").is_symlink()
    for d, pid in pids.items():
        assert sup.status(d).pid == pid, d

    # dry run with --prune: the plan, nothing else
    dry = install.apply(config, dry_run=True, prune=True)
    assert [c.describe() for c in dry.changes] == [
        f"retire      old  (linked as {site.scan_dir}/old)"
    ]
    assert dry.warnings == [] and dry.retired == []
    assert (site.scan_dir / "old").is_symlink() and old.is_dir()
    before = tree_of(old)

    tree.remember()
    result = install.apply(config, prune=True)
    assert [c.describe() for c in result.changes] == [
        f"retire      old  (linked as {site.scan_dir}/old)"
    ]
    assert result.warnings == [] and result.restarted == []
    [kept] = retired_dirs(site.root, "old")
    assert result.retired == [retire.Retired("old", f"{site.scan_dir}/old", str(kept))]
    assert kept.name.startswith(".retired-old-") and len(kept.name) == len(".retired-old-") + 15
    assert not os.path.lexists(site.scan_dir / "old") and not old.exists()
    # the service and its logger are gone, and so are their supervisors
    for d in (old, old / "log"):
        assert not alive(pids[str(d)]), d
    assert not sup.is_supervised(kept) and not sup.is_supervised(kept / "log")
    # the other service never noticed
    for d in (keep, keep / "log"):
        assert sup.status(d).pid == pids[str(d)], d
    # everything that was there is still there (the logger may have written more)
    after = tree_of(kept)
    ours = [
        rel for rel in before if not rel.startswith(("supervise", "log/supervise", "log/main/"))
    ]
    assert {"run", "log/run", ".qmailkit-state"} <= set(ours)
    for rel in ours:
        assert after[rel] == before[rel], rel
    assert after["log/main/current"].startswith(before["log/main/current"])
    assert b"qmail-start" in after["log/main/current"]

    again = install.apply(config, prune=True)
    assert (again.changes, again.retired, again.warnings) == ([], [], [])
    assert retired_dirs(site.root, "old") == [kept]

    if kind == "daemontools":
        return  # svscan would take up to 5 s more to see the new one; s6 and runit show it
    # a new service of the same name starts clean, beside the kept one
    back = install.apply(site.config("keep", "old"), prune=True)
    assert ("old", "new-service") in {(c.service, c.action) for c in back.changes}
    tree.wait_up(old)
    assert sup.status(old).pid not in (None, pids[str(old)])
    assert tree_of(kept) == after  # the kept directory is nobody's now


def test_cli_prune_without_a_scanner(pub):
    """The CLI output; nothing supervises, so retiring needs no waiting."""
    site = Site(pub)
    cfg = site.write("keep", "old", "gone")
    assert qk(cfg, "-q").returncode == 0
    site.write("keep")
    r = qk(cfg)
    assert (r.returncode, r.stdout) == (0, "nothing to change\n")
    assert r.stderr == "".join(
        f"qmailkit services apply: warning: {n}: in {site.root} but no longer in the config; "
        "apply --prune retires it\n"
        for n in ("gone", "old")
    )

    r = qk(cfg, "--dry-run", "--prune")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == (
        f"retire      gone  (linked as {site.scan_dir}/gone)\n"
        f"retire      old  (linked as {site.scan_dir}/old)\n"
        "dry run: nothing was changed\n"
    )
    assert site.dir("old").is_dir() and (site.scan_dir / "old").is_symlink()

    r = qk(cfg, "--prune")
    assert r.returncode == 0 and r.stderr == ""
    [gone] = retired_dirs(site.root, "gone")
    [old] = retired_dirs(site.root, "old")
    assert r.stdout.splitlines()[2:] == [
        f"retired gone (was linked as {site.scan_dir}/gone); kept its files in {gone}",
        f"retired old (was linked as {site.scan_dir}/old); kept its files in {old}",
    ]
    assert sorted(p.name for p in site.scan_dir.iterdir()) == ["keep"]
    assert (old / "run").is_file() and (old / "log/run").is_file()
    r = qk(cfg, "--prune")
    assert (r.returncode, r.stdout, r.stderr) == (0, "nothing to change\n", "")


def test_never_touches_what_is_not_ours(pub):
    """No state file: not ours.  A scan entry that leads elsewhere stays.  A dropped service
    still linked under another name is not retired (its scanner would bring it back)."""
    site = Site(pub)
    config = site.config("keep", "old", "alias")
    install.apply(config)
    # made by hand, linked by hand, never applied
    mine = site.root / "mine"
    (mine / "log").mkdir(parents=True)
    (mine / "run").write_text("#!/bin/sh\nexec sleep 1000\n")
    (site.scan_dir / "mine").symlink_to(mine)
    # scan/old now leads somewhere else
    elsewhere = pub / "elsewhere"
    elsewhere.mkdir()
    (site.scan_dir / "old").unlink()
    (site.scan_dir / "old").symlink_to(elsewhere)
    # alias is also linked as scan/other
    (site.scan_dir / "other").symlink_to(site.dir("alias"))
    scan_before = {p.name: os.readlink(p) for p in site.scan_dir.iterdir()}
    mine_before = tree_of(mine)

    config = site.config("keep")
    result = install.apply(config)
    assert result.warnings == [
        f"{n}: in {site.root} but no longer in the config; apply --prune retires it"
        for n in ("alias", "old")
    ]

    dry = install.apply(config, dry_run=True, prune=True)
    assert [c.describe() for c in dry.changes] == [
        f"retire      old  (not linked; {site.scan_dir}/old is not its link, left alone)"
    ]
    assert dry.warnings == [
        (
            f"alias: no longer in the config, but still linked as {site.scan_dir}/other; not "
            "retired (remove that link first)"
        )
    ]

    result = install.apply(config, prune=True)
    [old] = retired_dirs(site.root, "old")
    assert result.retired == [retire.Retired("old", None, str(old))]
    assert result.warnings == dry.warnings
    assert {p.name: os.readlink(p) for p in site.scan_dir.iterdir()} == scan_before
    assert tree_of(mine) == mine_before and site.dir("alias").is_dir()
    assert retired_dirs(site.root, "alias") == [] and retired_dirs(site.root, "mine") == []


def test_dry_run_prune_changes_nothing(pub):
    site = Site(pub)
    install.apply(site.config("keep", "old"))
    config = site.config("keep")
    before = tree_of(pub)
    result = install.apply(config, dry_run=True, prune=True)
    assert [(c.service, c.action) for c in result.changes] == [("old", "retire")]
    assert planning.plan(config, render(config), prune=True) == result.changes
    assert planning.plan(config, render(config)) == []
    assert tree_of(pub) == before


def test_service_root_is_the_scan_directory(pub, scan):
    """With no links, the rename itself hides the service from the scanner."""
    need(*LOGGER["runit"])
    site = Site(pub, "runit", root=pub / "scan")
    tree = scan("runit", site.scan_dir)
    sup = supervisor.get("runit")
    install.apply(site.config("keep", "old"))
    for name in ("keep", "old"):
        tree.wait_up(site.dir(name))
    old_pid, keep_pid = sup.status(site.dir("old")).pid, sup.status(site.dir("keep")).pid
    tree.remember()
    result = install.apply(site.config("keep"), prune=True)
    [kept] = retired_dirs(site.root, "old")
    assert [c.describe() for c in result.changes] == ["retire      old  (in the scan directory)"]
    assert result.retired == [retire.Retired("old", None, str(kept), True)]
    assert result.warnings == []
    assert not alive(old_pid) and not sup.is_supervised(kept)
    assert sup.status(site.dir("keep")).pid == keep_pid
    assert (kept / "run").is_file()


def test_a_supervisor_that_does_not_stop_is_a_warning(pub, monkeypatch):
    """A stop that does not finish in time is reported, not fatal; the files are kept."""
    site = Site(pub)
    install.apply(site.config("keep", "old"))
    monkeypatch.setattr(retire, "STOP_TIMEOUT", 0.2)
    from qmailkit.supervisor.runit import Runit

    monkeypatch.setattr(
        Runit,
        "is_supervised",
        lambda self, d: Path(d).name in ("old", "log") and "keep" not in str(d),
    )
    result = install.apply(site.config("keep"), prune=True)
    [kept] = retired_dirs(site.root, "old")
    assert result.retired == [retire.Retired("old", f"{site.scan_dir}/old", str(kept))]
    assert result.warnings == [
        (
            "old: still supervised 0.2 seconds after it was retired: old (supervisor only), "
            f"old/log (supervisor only) (its files are in {kept})"
        )
    ]


def test_a_retired_name_already_taken_gets_a_suffix(tmp_path):
    sdir = tmp_path / "old"
    for n in range(3):
        sdir.mkdir()
        (sdir / "run").write_text(f"{n}\n")
        moved = retire.move_aside(sdir, "20261125T210500")
        assert (moved / "run").read_text() == f"{n}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".retired-old-20261125T210500",
        ".retired-old-20261125T210500-2",
        ".retired-old-20261125T210500-3",
    ]
