"""``qmailkit services`` end to end: render, apply, status, check, exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import support
from support.services import need_root


def write_config(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "scan").mkdir(exist_ok=True)
    path = tmp_path / "qmailkit.toml"
    path.write_text(f"""
[supervisor]
kind = "runit"
scan_dir = "{tmp_path}/scan"
service_root = "{tmp_path}/services"
log_user = "nobody"

[system]
qmail_home = "{tmp_path}/qmail"

[services.send]
type = "qmail-send"
default_delivery = "./Maildir/"

[services.local]
type = "qmail-smtpd"
profile = "local"
port = 2525
hostname = "localhost"
user = "nobody"
tls_cert = ""
{extra}
""")
    return path


def qk(*args: str, config: Path | None = None, env_config: Path | None = None):
    extra = [] if config is None else ["--config", str(config)]
    if env_config is None:
        return support.run("services", *args, *extra, drop_env=("QMAILKIT_CONFIG",))
    return support.run("services", *args, *extra, env={"QMAILKIT_CONFIG": str(env_config)})


def test_render_prints_and_writes_only_out(tmp_path):
    cfg = write_config(tmp_path)
    r = qk("render", config=cfg)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("==> send/run (0755) <==\n#!/bin/sh\n")
    assert "==> local/log/run (0755) <==\n" in r.stdout
    out = tmp_path / "out"
    r = qk("render", "--out", str(out), env_config=cfg)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"{out}/send/run",
        f"{out}/send/log/run",
        f"{out}/send/log/main/config",
        f"{out}/local/run",
        f"{out}/local/log/run",
        f"{out}/local/log/main/config",
    ]
    assert sorted(r.stdout.splitlines()) == sorted(str(p) for p in out.rglob("*") if p.is_file())
    assert not (tmp_path / "services").exists() and not any((tmp_path / "scan").iterdir())


def test_dry_run_apply_and_apply_again(tmp_path):
    cfg = write_config(tmp_path)
    r = qk("apply", "--dry-run", config=cfg)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"new-service send  ({tmp_path}/services/send)" in lines
    assert "create      local/run" in lines
    assert f"link        local  ({tmp_path}/scan/local -> {tmp_path}/services/local)" in lines
    assert lines[-1] == "dry run: nothing was changed"
    assert "+++ b/local/run\n" in r.stdout
    assert not (tmp_path / "services").exists()

    r = qk("apply", "-q", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "create      local/run" in r.stdout.splitlines() and "+++" not in r.stdout
    assert (tmp_path / "scan/local").is_symlink()

    r = qk("apply", config=cfg)
    assert (r.returncode, r.stdout, r.stderr) == (0, "nothing to change\n", "")


def test_hand_edit_refused_with_exit_100(tmp_path):
    cfg = write_config(tmp_path)
    assert qk("apply", config=cfg).returncode == 0
    run = tmp_path / "services/local/run"
    run.write_text(run.read_text() + "# mine\n")
    write_config(tmp_path, 'greeting = "hi"')
    r = qk("apply", config=cfg)
    assert r.returncode == 100
    assert r.stderr == (
        f"qmailkit services: fatal: {tmp_path}/services: changed since the last apply, not "
        "overwritten: local/run (put the change into the config, or run apply --force to "
        "replace it)\n"
    )
    assert run.read_text().endswith("# mine\n")
    r = qk("apply", "--dry-run", config=cfg)
    assert r.returncode == 0
    assert "edited      local/run  (edited by hand since the last apply)" in r.stdout
    assert r.stdout.endswith(
        "dry run: nothing was changed\nnote: the files marked 'edited' "
        "were changed by hand; apply needs --force to replace them\n"
    )
    r = qk("apply", "--force", config=cfg)
    assert r.returncode == 0 and "edited      local/run" in r.stdout
    assert "SMTPGREETING hi" in run.read_text()


def test_status_json_and_table(tmp_path):
    cfg = write_config(tmp_path)
    qk("apply", config=cfg)
    r = qk("status", "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(row["name"], row["state"]) for row in rows] == [
        ("send", "unsupervised"),
        ("send/log", "unsupervised"),
        ("local", "unsupervised"),
        ("local/log", "unsupervised"),
    ]
    assert r.stderr == ""
    r = qk("status", config=cfg)
    assert r.stdout.splitlines()[0].split() == [
        "SERVICE",
        "STATE",
        "PID",
        "SECONDS",
        "NORMALLY",
        "WANT",
    ]
    assert r.stderr == (
        "note: 'unsupervised' services have no runit supervisor: is the scanner running on "
        f"{tmp_path}/scan, and are they linked there?\n"
    )


def test_check_exit_codes(tmp_path):
    need_root()
    cfg = write_config(tmp_path, 'smtpd = "/nonexistent/qmail-smtpd"')
    r = qk("check", config=cfg)
    assert r.returncode == 100
    assert (
        "error: local: program /nonexistent/qmail-smtpd not found "
        "[services.local.smtpd] (install it, or give its full path in the config)"
    ) in r.stdout.splitlines()
    assert r.stdout.splitlines()[-1].endswith("warning(s)")


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[supervisor]\nkind = "upstart"\n')
    r = qk("apply", config=bad)
    assert r.returncode == 100
    assert r.stderr.startswith(f"qmailkit services: fatal: {bad}:2: supervisor.kind: ")
    r = qk("status", env_config=tmp_path / "missing.toml")
    assert r.returncode == 100
    assert r.stderr == (
        f"qmailkit services: fatal: {tmp_path}/missing.toml: config file not "
        "found (create it (see examples/qmailkit.toml) or pass --config)\n"
    )


def test_wait_reports_services_that_do_not_come_up(tmp_path):
    cfg = write_config(tmp_path)
    r = qk("apply", "-q", "--wait", "0.3", config=cfg)  # no scanner runs here
    assert r.returncode == 111
    assert r.stderr == (
        "qmailkit services apply: not up after 0.3 seconds: send, send/log, local, local/log "
        "(see each one's log/main/current, and qmailkit services status)\n"
    )
    r = qk("apply", "--wait", "0.3", config=cfg)  # nothing new, nothing to wait for
    assert (r.returncode, r.stdout) == (0, "nothing to change\n")


def test_check_says_a_missing_program_once_and_which_package_has_it(tmp_path):
    """The same finding for several services is one line; -v lists each; the Debian
    packages of the missing programs are named once."""
    (tmp_path / "scan").mkdir()
    (tmp_path / "bin").mkdir()
    for prog in ("qmail-start", "qmail-smtpd"):
        (tmp_path / "bin" / prog).write_text("#!/bin/sh\n")
        (tmp_path / "bin" / prog).chmod(0o755)
    cfg = tmp_path / "qmailkit.toml"
    cfg.write_text(f"""
[supervisor]
kind = "daemontools"
scan_dir = "{tmp_path}/scan"
service_root = "{tmp_path}/services"
log_user = "nobody"
[system]
qmail_home = "{tmp_path}/qmail"
path = ["{tmp_path}/bin"]
[services.send]
type = "qmail-send"
default_delivery = "./Maildir/"
[services.send2]
type = "qmail-send"
default_delivery = "./Maildir/"
""")
    r = qk("check", config=cfg)
    assert r.returncode == 100
    where = (
        f"not found in {tmp_path}/bin [supervisor.kind] (install it, or give its full path "
        "in the config)"
    )
    note = (
        "note: setuidgid, multilog: in the Debian package daemontools (apt-get install daemontools)"
    )
    assert r.stdout.splitlines() == [
        f"error: send, send2: program setuidgid {where}",
        f"error: send, send2: program multilog {where}",
        note,
        "4 error(s), 0 warning(s) (2 distinct; -v lists each)",
    ]
    r = qk("check", "-v", config=cfg)
    assert r.returncode == 100
    assert r.stdout.splitlines() == [
        f"error: send: program setuidgid {where}",
        f"error: send: program multilog {where}",
        f"error: send2: program setuidgid {where}",
        f"error: send2: program multilog {where}",
        note,
        "4 error(s), 0 warning(s)",
    ]
