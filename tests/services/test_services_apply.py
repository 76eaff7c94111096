"""services apply: plan, atomic install, hand-edit protection, links, restarts (no scanner)."""

from __future__ import annotations

import json
import os
import pwd
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from support.services import need_root

from qmailkit.errors import InputError
from qmailkit.services import install
from qmailkit.services import plan as planning
from qmailkit.services.config import Config, SupervisorSettings, System
from qmailkit.services.render import Checks, RenderedService


def svc(
    run: bytes = b"#!/bin/sh\nexec sleep 100\n", log: bytes = b"#!/bin/sh\nexec cat\n", **kw
) -> RenderedService:
    """A rendered service of a run and a log/run script (``extra`` files, other fields)."""
    files = {"run": (run, 0o755), "log/run": (log, 0o755)}
    files.update(kw.pop("extra", {}))
    fields = {
        "name": "",
        "type": "qmail-send",
        "dir": "",
        "dirs": ["log/main"],
        "log_owner": "nobody",
        "rules": None,
        "checks": Checks(),
        "listen": None,
        **kw,
    }
    return RenderedService(files=files, **fields)


def config(tmp_path: Path, kind: str = "daemontools") -> Config:
    settings = SupervisorSettings(
        kind=kind,
        scan_dir=str(tmp_path / "scan"),
        service_root=str(tmp_path / "services"),
        log_user="nobody",
        log_size=1048576,
        log_count=1024,
    )
    (tmp_path / "scan").mkdir(exist_ok=True)
    system = System("/var/qmail", "/home/vpopmail", "/usr/lib/courier-imap", ("/usr/bin", "/bin"))
    return Config(str(tmp_path / "qmailkit.toml"), settings, system)


def tree(root: Path) -> dict[str, tuple[bytes | str, int]]:
    """Every file and link under root, with its mode (for 'nothing changed' checks)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath, n)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = (os.readlink(p), 0)
            else:
                st = p.stat()
                out[rel] = (p.read_bytes(), stat.S_IMODE(st.st_mode), st.st_ino)
    return out


def test_first_apply_creates_everything(tmp_path):
    cfg = config(tmp_path)
    rendered = {"mx": svc(), "send": svc(run=b"#!/bin/sh\nexec qmail-start ./Maildir/\n")}
    result = install.apply(cfg, rendered)
    root = tmp_path / "services"
    assert (root / "mx/run").read_bytes() == b"#!/bin/sh\nexec sleep 100\n"
    assert stat.S_IMODE((root / "mx/run").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "mx/log/run").stat().st_mode) == 0o755
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() == 0:
        st = (root / "mx/log/main").stat()
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert os.readlink(tmp_path / "scan/mx") == str(root / "mx")
    assert os.readlink(tmp_path / "scan/send") == str(root / "send")
    actions = {(c.service, c.action, c.path) for c in result.changes}
    assert ("mx", "new-service", "") in actions
    assert ("mx", "create", "run") in actions
    assert ("mx", "mkdir", "log/main") in actions
    assert ("send", "link", "") in actions
    assert result.restarted == []  # nothing was supervised
    state = json.loads((root / "mx" / planning.STATE_FILE).read_text())
    assert set(state["files"]) == {"run", "log/run"}
    # the diff of a new file shows its whole content
    run_change = next(c for c in result.changes if c.service == "mx" and c.path == "run")
    assert run_change.diff.startswith("--- /dev/null\n+++ b/mx/run\n")
    assert "+exec sleep 100\n" in run_change.diff


def test_apply_twice_is_a_no_op(tmp_path):
    cfg = config(tmp_path)
    rendered = {"mx": svc()}
    install.apply(cfg, rendered)
    before = tree(tmp_path)
    again = install.apply(cfg, rendered)
    assert again.changes == [] and again.restarted == []
    assert planning.plan(cfg, rendered) == []
    assert tree(tmp_path) == before  # same inodes: not even rewritten


def test_dry_run_shows_the_diff_and_writes_nothing(tmp_path):
    cfg = config(tmp_path)
    install.apply(cfg, {"mx": svc()})
    before = tree(tmp_path)
    new = {"mx": svc(run=b"#!/bin/sh\nexec sleep 200\n"), "pop": svc()}
    result = install.apply(cfg, new, dry_run=True)
    assert tree(tmp_path) == before
    upd = [c for c in result.changes if c.action == "update"]
    assert [(c.service, c.path) for c in upd] == [("mx", "run")]
    assert upd[0].diff == (
        "--- a/mx/run\n+++ b/mx/run\n@@ -1,2 +1,2 @@\n #!/bin/sh\n"
        "-exec sleep 100\n+exec sleep 200\n"
    )
    assert ("pop", "new-service") in {(c.service, c.action) for c in result.changes}


def test_changed_file_is_updated_and_others_kept(tmp_path):
    cfg = config(tmp_path)
    install.apply(cfg, {"mx": svc(), "sub": svc()})
    before = tree(tmp_path)
    result = install.apply(cfg, {"mx": svc(run=b"#!/bin/sh\nexec sleep 5\n"), "sub": svc()})
    after = tree(tmp_path)
    assert [(c.service, c.action, c.path) for c in result.changes] == [("mx", "update", "run")]
    assert after["services/mx/run"][0] == b"#!/bin/sh\nexec sleep 5\n"
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {"services/mx/run", f"services/mx/{planning.STATE_FILE}"}


def test_hand_edited_run_script_is_not_overwritten(tmp_path):
    cfg = config(tmp_path)
    install.apply(cfg, {"mx": svc(), "sub": svc()})
    run = tmp_path / "services/mx/run"
    run.write_bytes(b"#!/bin/sh\n# my tweak\nexec sleep 100\n")
    before = tree(tmp_path)
    new = {
        "mx": svc(run=b"#!/bin/sh\nexec sleep 7\n"),
        "sub": svc(run=b"#!/bin/sh\nexec sleep 8\n"),
    }
    with pytest.raises(InputError) as exc:
        install.apply(cfg, new)
    assert "changed since the last apply, not overwritten: mx/run" in str(exc.value)
    assert "apply --force" in str(exc.value)
    assert exc.value.exit_code == 100
    assert tree(tmp_path) == before  # nothing at all was written, not even sub
    edited = [c for c in planning.plan(cfg, new) if c.action == "edited"]
    assert [(c.service, c.path, c.detail) for c in edited] == [
        ("mx", "run", "edited by hand since the last apply")
    ]
    result = install.apply(cfg, new, force=True)
    assert run.read_bytes() == b"#!/bin/sh\nexec sleep 7\n"
    assert {(c.service, c.action) for c in result.changes} == {("mx", "edited"), ("sub", "update")}


def test_foreign_run_script_needs_force(tmp_path):
    """A service directory made by hand (the original scripts) is not taken over silently."""
    cfg = config(tmp_path)
    (tmp_path / "services/mx").mkdir(parents=True)
    (tmp_path / "services/mx/run").write_bytes(b"#!/bin/sh\n# jms1 run script\n")
    with pytest.raises(InputError, match="mx/run"):
        install.apply(cfg, {"mx": svc()})
    assert (tmp_path / "services/mx/run").read_bytes() == b"#!/bin/sh\n# jms1 run script\n"
    assert not (tmp_path / "services/mx/log").exists()
    c = next(c for c in planning.plan(cfg, {"mx": svc()}) if c.action == "edited")
    assert c.detail == "not written by qmailkit"
    install.apply(cfg, {"mx": svc()}, force=True)
    assert (tmp_path / "services/mx/run").read_bytes() == b"#!/bin/sh\nexec sleep 100\n"


def test_mode_is_repaired_without_rewrite(tmp_path):
    cfg = config(tmp_path)
    install.apply(cfg, {"mx": svc()})
    run = tmp_path / "services/mx/run"
    os.chmod(run, 0o644)
    ino = run.stat().st_ino
    result = install.apply(cfg, {"mx": svc()})
    assert [(c.action, c.path, c.detail) for c in result.changes] == [("mode", "run", "0755")]
    assert stat.S_IMODE(run.stat().st_mode) == 0o755 and run.stat().st_ino == ino


def test_file_dropped_from_render_is_removed_only_if_ours(tmp_path):
    cfg = config(tmp_path)
    install.apply(cfg, {"mx": svc(extra={"env/A": (b"1\n", 0o644), "env/B": (b"2\n", 0o644)})})
    (tmp_path / "services/mx/env/B").write_bytes(b"mine\n")
    result = install.apply(cfg, {"mx": svc()})
    assert [(c.action, c.path) for c in result.changes] == [("remove", "env/A")]
    assert not (tmp_path / "services/mx/env/A").exists()
    assert (tmp_path / "services/mx/env/B").read_bytes() == b"mine\n"


def test_scan_entry_pointing_elsewhere_is_an_error(tmp_path):
    cfg = config(tmp_path)
    (tmp_path / "scan/mx").symlink_to(tmp_path / "old-mx")
    with pytest.raises(InputError) as exc:
        install.apply(cfg, {"mx": svc()})
    assert str(exc.value).startswith(f"{tmp_path}/scan/mx: scan directory entry points to ")
    assert not (tmp_path / "services/mx").exists()


def test_missing_log_user_is_an_error_before_writing(tmp_path):
    need_root()
    cfg = config(tmp_path)
    with pytest.raises(InputError) as exc:
        install.apply(cfg, {"mx": svc(log_owner="qmaill-nonexistent")})
    assert "log user 'qmaill-nonexistent' does not exist" in str(exc.value)
    assert [p.name for p in (tmp_path / "services").iterdir()] == [install.LOCK_FILE]


def test_damaged_state_file_is_reported(tmp_path):
    cfg = config(tmp_path)
    install.apply(cfg, {"mx": svc()})
    (tmp_path / "services/mx" / planning.STATE_FILE).write_text("{not json")
    with pytest.raises(InputError, match="state file is damaged"):
        planning.plan(cfg, {"mx": svc(run=b"x")})


def test_lock_keeps_a_second_apply_out(tmp_path, monkeypatch):
    from qmailkit.errors import LockBusy
    from qmailkit.fsutil import locked

    cfg = config(tmp_path)
    (tmp_path / "services").mkdir()
    monkeypatch.setattr(install, "LOCK_WAIT", 0)
    with locked(tmp_path / "services" / install.LOCK_FILE), pytest.raises(LockBusy) as exc:
        install.apply(cfg, {"mx": svc()})
    assert "another qmailkit services apply holds the lock" in str(exc.value)
    assert not (tmp_path / "services/mx").exists()


def test_export_writes_only_the_tree(tmp_path):
    out = tmp_path / "out"
    written = install.export({"mx": svc(), "send": svc()}, out)
    assert written == ["mx/run", "mx/log/run", "send/run", "send/log/run"]
    assert (out / "mx/log/main").is_dir()
    assert stat.S_IMODE((out / "mx/run").stat().st_mode) == 0o755
    assert not (out / "mx" / planning.STATE_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_missing_scan_directory_is_an_error(tmp_path):
    cfg = config(tmp_path)
    (tmp_path / "scan").rmdir()
    with pytest.raises(InputError) as exc:
        install.apply(cfg, {"mx": svc()})
    assert str(exc.value) == (
        f"{tmp_path}/scan: scan directory does not exist (create it and start the scanner "
        "(svscan, runsvdir or s6-svscan) on it, or set supervisor.scan_dir)"
    )
    assert not (tmp_path / "services/mx").exists()


def test_new_log_user_gets_the_log_directory(tmp_path):
    need_root()
    cfg = config(tmp_path)
    install.apply(cfg, {"mx": svc(log_owner="root")})
    main = tmp_path / "services/mx/log/main"
    (main / "current").write_text("old logger\n")
    result = install.apply(cfg, {"mx": svc(log_owner="nobody")})
    assert [(c.action, c.path) for c in result.changes] == [("owner", "log/main")]
    for p in (main, main / "current"):
        assert (p.stat().st_uid, p.stat().st_gid) == (65534, 65534)


def test_service_root_may_be_the_scan_directory(tmp_path):
    """runit's /etc/sv style aside, some put service dirs straight into the scan dir: then
    nothing is linked and each new directory appears whole (built under a dot-name)."""
    cfg = config(tmp_path)
    cfg.supervisor = replace(cfg.supervisor, service_root=cfg.supervisor.scan_dir)
    stale = tmp_path / "scan" / ".mx.qmailkit-new"
    stale.mkdir()
    (stale / "run").write_text("half\n")
    result = install.apply(cfg, {"mx": svc()})
    assert "link" not in {c.action for c in result.changes}
    assert sorted(p.name for p in (tmp_path / "scan").iterdir()) == [install.LOCK_FILE, "mx"]
    assert not (tmp_path / "scan" / "mx").is_symlink()
    assert (tmp_path / "scan/mx/run").read_bytes() == b"#!/bin/sh\nexec sleep 100\n"


def test_rules_are_compiled_like_tcprules_and_only_when_stale(tmp_path):
    import subprocess

    from support import need

    need("tcprules")
    cfg = config(tmp_path)
    src = tmp_path / "smtp"
    src.write_text('127.0.0.1:allow,RELAYCLIENT=""\n10.1.2.3-5:deny\n:allow\n')
    cdb = tmp_path / "smtp.cdb"
    result = install.apply(cfg, {"mx": svc(rules=(str(src), str(cdb)))})
    assert ("mx", "rules", f"{src} -> {cdb}") in {
        (c.service, c.action, c.detail) for c in result.changes
    }
    with open(src, "rb") as fh:
        subprocess.run(
            ["tcprules", str(tmp_path / "c.cdb"), str(tmp_path / "c.tmp")], stdin=fh, check=True
        )
    assert cdb.read_bytes() == (tmp_path / "c.cdb").read_bytes()
    assert stat.S_IMODE(cdb.stat().st_mode) == 0o644
    assert install.apply(cfg, {"mx": svc(rules=(str(src), str(cdb)))}).changes == []
    # a newer source is compiled again
    src.write_text(":deny\n")
    os.utime(src, ns=(cdb.stat().st_mtime_ns + 10**9,) * 2)
    result = install.apply(cfg, {"mx": svc(rules=(str(src), str(cdb)))})
    assert [c.action for c in result.changes] == ["rules"]
    assert cdb.read_bytes() != (tmp_path / "c.cdb").read_bytes()


def test_bad_rule_stops_apply_before_anything_is_written(tmp_path):
    cfg = config(tmp_path)
    src = tmp_path / "smtp"
    src.write_text("127.0.0.1:allow\n1.2.3.4-x:allow\n")
    rendered = {"mx": svc(rules=(str(src), str(tmp_path / "smtp.cdb")))}
    with pytest.raises(InputError) as exc:
        install.apply(cfg, rendered)
    assert str(exc.value).startswith(f"{src}:2: ")
    assert exc.value.exit_code == 100
    assert not (tmp_path / "services/mx").exists() and not (tmp_path / "smtp.cdb").exists()
    with pytest.raises(InputError):
        planning.plan(cfg, rendered)
