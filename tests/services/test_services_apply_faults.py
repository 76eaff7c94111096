"""services apply and render --out against a hostile or broken file system: planted symlinks
(A5), things in the way and names too long (A14): a message naming the path, exit 100 or 111,
nothing half-applied, nothing followed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.services import need_root, public_tempdir
from support.services_prune import tree_of
from test_services_apply import config, svc, tree

from qmailkit.errors import InputError, QmailkitError
from qmailkit.services import install
from qmailkit.services import plan as planning

# -- render --out -----------------------------------------------------------------------


def victim(tmp_path):
    d = tmp_path / "victim"
    d.mkdir()
    (d / "run").write_text("ORIGINAL sshd run script\n")
    return d


def test_out_made_by_another_user_is_refused(tmp_path):
    """The finding: nobody makes /tmp/review with mx -> /tmp/victimdir; root renders."""
    need_root()
    target = victim(tmp_path)
    out = tmp_path / "review"
    out.mkdir()
    (out / "mx").symlink_to(target)
    os.lchown(out / "mx", 65534, 65534)
    os.chown(out, 65534, 65534)
    with pytest.raises(InputError) as exc:
        install.export({"mx": svc()}, out)
    assert str(exc.value) == (
        f"{out}: output directory is owned by uid 65534, not by you (uid 0) (name a directory "
        "that does not exist yet; render creates it)"
    )
    assert exc.value.exit_code == 100
    assert sorted(p.name for p in target.iterdir()) == ["run"]
    assert (target / "run").read_text() == "ORIGINAL sshd run script\n"


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        ("symlink", "is a symbolic link, not a directory"),
        ("writable", "may be written by others (mode 0777)"),
        ("sticky", "may be written by others (mode 1777)"),
        ("file", "is a file, not a directory"),
        ("not-empty", "is not empty"),
    ],
)
def test_out_that_others_could_have_touched_is_refused(tmp_path, setup, problem):
    target = victim(tmp_path)
    out = tmp_path / "review"
    if setup == "symlink":
        out.symlink_to(target)
    elif setup == "file":
        out.write_text("x")
    else:
        out.mkdir()
        if setup == "not-empty":
            (out / "mx").symlink_to(target)
        else:
            os.chmod(out, 0o777 if setup == "writable" else 0o1777)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(InputError) as exc:
        install.export({"mx": svc()}, out)
    assert str(exc.value).startswith(f"{out}: output directory {problem} (")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before


def test_an_empty_directory_of_our_own_is_used(tmp_path):
    out = tmp_path / "review"
    out.mkdir(mode=0o700)
    assert install.export({"mx": svc()}, out) == ["mx/run", "mx/log/run"]
    assert (out / "mx/run").read_bytes() == b"#!/bin/sh\nexec sleep 100\n"


def test_cli_render_out_into_a_used_directory(tmp_path):
    from test_services_apply_cli import qk, write_config

    cfg = write_config(tmp_path)
    out = tmp_path / "review"
    assert qk("render", "--out", str(out), config=cfg).returncode == 0
    again = qk("render", "--out", str(out), config=cfg)
    assert (again.returncode, again.stdout) == (100, "")
    assert again.stderr == (
        f"qmailkit services: fatal: {out}: output directory is not empty "
        "(name a directory that does not exist yet; render creates it)\n"
    )


# -- render --out: the finding as a real other user plays it ------------------------------


def as_nobody(cmd: str) -> None:
    subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", cmd], check=True)


@pytest.fixture
def pub():
    with public_tempdir() as d:
        yield d


def test_out_planted_by_nobody_as_in_the_finding(pub):
    """nobody makes review/ with mx -> victimdir; root renders there: refused, exit 100."""
    need_root()
    from test_services_apply_cli import qk, write_config

    target = victim(pub)
    shared = pub / "tmp"  # like /tmp: sticky, everyone may create
    shared.mkdir()
    os.chmod(shared, 0o1777)
    out = shared / "review"
    as_nobody(f"mkdir {out} && ln -s {target} {out}/mx")
    cfg = write_config(pub)
    r = qk("render", "--out", str(out), config=cfg)
    assert (r.returncode, r.stdout) == (100, "")
    assert r.stderr == (
        f"qmailkit services: fatal: {out}: output directory is owned by uid 65534, not by you "
        "(uid 0) (name a directory that does not exist yet; render creates it)\n"
    )
    assert sorted(p.name for p in target.iterdir()) == ["run"]
    assert (target / "run").read_text() == "ORIGINAL sshd run script\n"


def nobodys_dir(pub: Path) -> Path:
    parent = pub / "nobodys"
    parent.mkdir()
    os.chown(parent, 65534, 65534)
    return parent


def swap_when(monkeypatch, wanted, out: Path, target: Path) -> list[str]:
    """After the os.mkdir that ``wanted(args)`` picks, nobody moves ``out`` away and puts a
    symlink to ``target`` in its place (the parent is nobody's: rename needs no more)."""
    real = os.mkdir
    done: list[str] = []

    def mkdir(*args, **kw):
        real(*args, **kw)
        if not done and wanted(args, kw):
            as_nobody(f"mv {out} {out}.moved && ln -s {target} {out}")
            done.append("swapped")

    monkeypatch.setattr(os, "mkdir", mkdir)
    return done


def test_out_swapped_for_a_symlink_right_after_it_is_made(pub, monkeypatch):
    need_root()
    target = victim(pub)
    parent = nobodys_dir(pub)
    out = parent / "review"
    done = swap_when(monkeypatch, lambda args, kw: Path(args[0]) == out, out, target)
    with pytest.raises(InputError) as exc:
        install.export({"mx": svc()}, out)
    assert done == ["swapped"]
    assert str(exc.value) == (
        f"{out}: output directory is a symbolic link, not a directory (name a directory "
        "that does not exist yet; render creates it)"
    )
    assert sorted(p.name for p in target.iterdir()) == ["run"]
    assert (target / "run").read_text() == "ORIGINAL sshd run script\n"


def test_out_swapped_while_it_is_written_keeps_the_writes_inside(pub, monkeypatch):
    """Once render holds the directory, a rename of it moves the review copy, nothing more."""
    need_root()
    etc_sv = pub / "etc-sv"  # where the symlink leads: a service dir named like ours
    etc_sv.mkdir()
    victim(etc_sv).rename(etc_sv / "mx")
    parent = nobodys_dir(pub)
    out = parent / "review"
    done = swap_when(monkeypatch, lambda args, kw: args[0] == "mx", out, etc_sv)
    assert install.export({"mx": svc()}, out) == ["mx/run", "mx/log/run"]
    assert done == ["swapped"]
    assert sorted(str(p.relative_to(etc_sv)) for p in etc_sv.rglob("*")) == ["mx", "mx/run"]
    assert (etc_sv / "mx/run").read_text() == "ORIGINAL sshd run script\n"
    moved = parent / "review.moved"
    assert (moved / "mx/run").read_bytes() == b"#!/bin/sh\nexec sleep 100\n"
    assert (moved / "mx/log/run").read_bytes() == b"#!/bin/sh\nexec cat\n"
    assert sorted(str(p.relative_to(moved)) for p in moved.rglob("*")) == [
        "mx",
        "mx/log",
        "mx/log/main",
        "mx/log/run",
        "mx/run",
    ]


def test_cli_render_out_with_a_missing_parent(tmp_path):
    from test_services_apply_cli import qk, write_config

    cfg = write_config(tmp_path)
    out = tmp_path / "no" / "review"
    r = qk("render", "--out", str(out), config=cfg)
    assert (r.returncode, r.stdout) == (100, "")
    assert r.stderr == (
        f"qmailkit services: fatal: {out}: its parent directory does not exist (create the "
        "parent first; render creates only DIR itself)\n"
    )
    assert not (tmp_path / "no").exists()


# -- log/main is the log user's: nothing there is followed ----------------------------------


def runit_svc(**kw):
    return svc(extra={"log/main/config": (b"s4096\nn3\n", 0o644)}, **kw)


def secret_file(pub: Path) -> Path:
    secret = pub / "shadow"
    secret.write_text("root:SECRET-HASH:19000:0:99999:7:::\n")
    os.chmod(secret, 0o600)
    return secret


def test_a_log_user_symlink_in_log_main_is_not_read(pub):
    """The log user replaces log/main/config by a link to a root-only file: the plan (and
    its diff, which cron mails) shows the link, never the file's text; --force replaces
    the link, the file is untouched."""
    need_root()
    cfg = config(pub, "runit")
    install.apply(cfg, {"send": runit_svc()})
    main = pub / "services/send/log/main"
    secret = secret_file(pub)
    as_nobody(f"rm {main}/config && ln -s {secret} {main}/config")
    changes = planning.plan(cfg, {"send": runit_svc()})
    assert [c.describe() for c in changes] == [
        f"edited      send/log/main/config  (a symbolic link to {secret}, not followed)"
    ]
    assert "SECRET" not in changes[0].diff
    with pytest.raises(InputError):
        install.apply(cfg, {"send": runit_svc()})
    install.apply(cfg, {"send": runit_svc()}, force=True)
    assert not (main / "config").is_symlink()
    assert (main / "config").read_bytes() == b"s4096\nn3\n"
    assert secret.read_text() == "root:SECRET-HASH:19000:0:99999:7:::\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_a_link_swapped_in_after_the_plan_is_not_chmodded(pub, monkeypatch):
    """Between the plan (mode 0600 -> 0644) and the chmod, the log user swaps the file for
    a link to a root-only file: apply stops naming it, the file keeps its mode."""
    need_root()
    cfg = config(pub, "runit")
    install.apply(cfg, {"send": runit_svc()})
    main = pub / "services/send/log/main"
    os.chmod(main / "config", 0o600)
    secret = secret_file(pub)
    real = planning.changes

    def changes_then_swap(*args, **kw):
        out = real(*args, **kw)
        as_nobody(f"rm -f {main}/config && ln -s {secret} {main}/config")
        return out

    monkeypatch.setattr(planning, "changes", changes_then_swap)
    with pytest.raises(QmailkitError) as exc:
        install.apply(cfg, {"send": runit_svc()})
    assert str(exc.value) == (
        f"{main}/config: is a symbolic link (not followed) (replace it with a regular file)"
    )
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


# -- apply: things in the way -----------------------------------------------------------


def test_scan_entry_that_is_a_symlink_loop(tmp_path):
    cfg = config(tmp_path)
    (tmp_path / "scan/mx").symlink_to("mx")
    with pytest.raises(InputError) as exc:
        install.apply(cfg, {"mx": svc()})
    assert str(exc.value) == (
        f"{tmp_path}/scan/mx: scan directory entry points to mx, not to "
        f"{tmp_path}/services/mx (remove the old link (stop that service first) and run apply "
        "again)"
    )
    assert not (tmp_path / "services/mx").exists()


@pytest.mark.parametrize("kind", ["file", "link-to-dir", "dangling-link", "dir"])
def test_leftover_half_made_service_is_replaced_not_followed(tmp_path, kind):
    cfg = config(tmp_path)
    root = tmp_path / "services"
    root.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep").write_text("mine\n")
    stale = root / ".mx.qmailkit-new"
    if kind == "file":
        stale.write_text("half\n")
    elif kind == "link-to-dir":
        stale.symlink_to(other)
    elif kind == "dangling-link":
        stale.symlink_to(tmp_path / "nowhere")
    else:  # half made, and holding a link out: removed, the link's target kept
        (stale / "log").mkdir(parents=True)
        (stale / "run").write_text("half\n")
        (stale / "log/main").symlink_to(other)
    install.apply(cfg, {"mx": svc()})
    assert sorted(p.name for p in root.iterdir()) == [install.LOCK_FILE, "mx"]
    assert (root / "mx/run").read_bytes() == b"#!/bin/sh\nexec sleep 100\n"
    assert sorted(p.name for p in other.iterdir()) == ["keep"]
    assert (other / "keep").read_text() == "mine\n"


@pytest.mark.parametrize("rel", ["log/main", "log"])
def test_a_file_where_a_directory_belongs(tmp_path, rel):
    cfg = config(tmp_path)
    install.apply(cfg, {"mx": svc()})
    sdir = tmp_path / "services/mx"
    if rel == "log":
        os.rename(sdir / "log", tmp_path / "old-log")
    else:
        os.rmdir(sdir / "log/main")
    (sdir / rel).write_text("in the way\n")
    before = tree(tmp_path)
    with pytest.raises(QmailkitError) as exc:
        install.apply(cfg, {"mx": svc(run=b"#!/bin/sh\nexec sleep 9\n")})
    assert str(exc.value) == (
        f"{sdir}/{rel}: exists but is not a directory (move it away; apply makes a directory here)"
    )
    assert exc.value.exit_code == 111
    assert tree(tmp_path) == before


# -- the finding's table (row 14) through the command: a message, never a traceback ----------


def _plant(tmp_path: Path, setup: str) -> None:
    root, scan = tmp_path / "services", tmp_path / "scan"
    send = root / "send"
    if setup == "scan-loop":
        (scan / "send").symlink_to("send")
    elif setup == "log-main-file":
        os.rename(send / "log/main", tmp_path / "old-main")
        (send / "log/main").write_text("in the way\n")
    elif setup == "run-dir":
        (send / "run").unlink()
        (send / "run").mkdir()
    elif setup == "run-fifo":
        (send / "run").unlink()
        os.mkfifo(send / "run")
    elif setup == "service-dir-file":
        os.rename(send, tmp_path / "old-send")
        send.write_text("in the way\n")


@pytest.mark.parametrize(
    ("setup", "code", "message"),
    [
        (
            "scan-loop",
            100,
            "{scan}/send: scan directory entry points to send, not to {root}/send (remove the "
            "old link (stop that service first) and run apply again)",
        ),
        (
            "log-main-file",
            111,
            "{root}/send/log/main: exists but is not a directory (move it away; apply makes a "
            "directory here)",
        ),
        (
            "run-dir",
            111,
            "{root}/send/run: is a directory, not a regular file (replace it with a regular file)",
        ),
        (
            "run-fifo",
            111,
            "{root}/send/run: is a FIFO, not a regular file (replace it with a regular file)",
        ),
        (
            "service-dir-file",
            111,
            "{root}/send: exists but is not a directory (move it away; apply creates the "
            "service directory here)",
        ),
    ],
)
def test_cli_things_in_the_way(tmp_path, setup, code, message):
    """Each gives one line naming the path, exit 100 or 111, and changes nothing."""
    cfg = tmp_path / "c.toml"
    (tmp_path / "scan").mkdir()
    text = (
        f'[supervisor]\nkind = "runit"\nscan_dir = "{tmp_path}/scan"\n'
        f'service_root = "{tmp_path}/services"\nlog_user = "nobody"\n'
        '[services.send]\ntype = "qmail-send"\ndefault_delivery = "./Maildir/"\n'
    )
    cfg.write_text(text)
    first = _apply_cli(cfg)
    assert first.returncode == 0, first.stderr
    if setup == "scan-loop":
        (tmp_path / "scan/send").unlink()
    _plant(tmp_path, setup)
    cfg.write_text(text.replace("./Maildir/", "./Maildir2/"))
    before = tree_of(tmp_path)  # FIFOs left out: reading one would block
    p = _apply_cli(cfg)
    assert (p.returncode, p.stdout) == (code, "")
    assert (
        p.stderr
        == "qmailkit services: fatal: "
        + message.format(scan=tmp_path / "scan", root=tmp_path / "services")
        + "\n"
    )
    assert tree_of(tmp_path) == before


def _apply_cli(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qmailkit", "services", "apply", "-q", "--config", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("size", [228, 240, 254, 255])
def test_a_name_too_long_for_the_file_system_stops_before_anything(tmp_path, size):
    cfg = config(tmp_path)
    name = "a" * size
    with pytest.raises(InputError) as exc:
        install.apply(cfg, {name: svc()})
    assert str(exc.value) == (
        f"{tmp_path}/services: service name {'a' * 40}... is {size} bytes: too long for this "
        "file system (use at most 227 bytes (apply also makes names like "
        ".retired-NAME-STAMP beside it))"
    )
    assert not (tmp_path / "services").exists()  # not even the service root was made
    assert list((tmp_path / "scan").iterdir()) == []


def test_the_longest_name_allowed_is_applied_and_retired(tmp_path):
    cfg = config(tmp_path)
    name = "a" * 227
    install.apply(cfg, {name: svc()})
    assert os.readlink(tmp_path / "scan" / name) == str(tmp_path / "services" / name)
    result = install.apply(cfg, {"other": svc()}, prune=True)
    assert [r.name for r in result.retired] == [name]
    assert not os.path.lexists(tmp_path / "scan" / name)


def test_cli_long_name_exit_code(tmp_path):
    """Through the command: exit 100 and one line, whatever the config allows."""
    cfg = tmp_path / "c.toml"
    (tmp_path / "scan").mkdir()
    name = "a" * 254
    cfg.write_text(
        f'[supervisor]\nkind = "runit"\nscan_dir = "{tmp_path}/scan"\n'
        f'service_root = "{tmp_path}/services"\n'
        f'[services.{name}]\ntype = "qmail-send"\n'
    )
    p = subprocess.run(
        [sys.executable, "-m", "qmailkit", "services", "apply", "--config", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 100, p.stderr
    assert p.stderr.startswith("qmailkit services: fatal: ") and "Traceback" not in p.stderr
    assert len(p.stderr.splitlines()) == 1
    assert not (tmp_path / "services" / name).exists()


def test_damaged_pending_file_is_reported(tmp_path):
    cfg = config(tmp_path)
    install.apply(cfg, {"mx": svc()})
    (tmp_path / "services" / planning.PENDING_FILE).write_text("[1, 2]")
    with pytest.raises(InputError) as exc:
        install.apply(cfg, {"mx": svc()})
    assert str(exc.value).startswith(
        f"{tmp_path}/services/{planning.PENDING_FILE}: pending-restart file is damaged (remove it"
    )
