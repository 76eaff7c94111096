"""Install rendered service directories: plan the changes, then make them.

``plan`` compares what ``render`` produced with what is on disk and returns
the list of changes (with a unified diff per file) without touching anything.
``apply`` makes them: every file replaced atomically with its exact mode,
``log/main`` owned by the log user, tcp rules compiled, new services linked
into the scan directory, and services whose files changed restarted through
their supervisor (term + up).  Running it twice in a row changes nothing.

Hand edits are never lost silently: each service directory keeps a small
state file (``.qmailkit-state``) with the SHA-256 of every file we wrote.  A
file whose content no longer matches what we wrote (or that exists but was
never written by us) was edited by hand; replacing it needs ``force``.

An apply that is interrupted (kill -9, power loss) is finished by the next one:
before the first file is written, ``.qmailkit-pending`` in the service root
records the services to restart and the SHA-256 of every file about to be
written; it is removed once the restarts are done.  The next apply restarts
what is listed there and counts those files as its own.

A service dropped from the config is left running unless ``prune`` is set; then
it is retired: unlinked from the scan directory, stopped with its logger (the
way its supervisor is meant to be told), and its directory renamed to
``.retired-NAME-STAMP`` so its logs are kept and a later service of the same
name starts clean.  Only directories holding our state file are candidates.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import pwd
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmailkit.errors import InputError, QmailkitError, os_error
from qmailkit.fsutil import atomic_write, file_kind, fsync_dir, locked, read_bounded

STATE_FILE = ".qmailkit-state"
LOCK_FILE = ".qmailkit-apply.lock"
PENDING_FILE = ".qmailkit-pending"
LOG_DIR = "log/main"
RETIRED_PREFIX = ".retired-"
STOP_TIMEOUT = 10.0  # seconds a retired service and its logger get to stop


@dataclass
class Change:
    """One thing ``apply`` does (or would do) to one service."""

    service: str
    action: str  # new-service, mkdir, create, update, remove, mode, owner, rules, link, edited,
    #              retire, restart (left pending by an interrupted apply)
    path: str  # relative to the service directory ("" for the directory itself)
    diff: str = ""  # unified diff for created/updated/removed files
    detail: str = ""

    def describe(self) -> str:
        where = f"{self.service}/{self.path}" if self.path else self.service
        text = f"{self.action:<11} {where}"
        return f"{text}  ({self.detail})" if self.detail else text


@dataclass
class Retired:
    """A service dropped from the config that apply --prune stopped and moved aside."""

    name: str
    link: str | None  # the scan directory entry removed (None: it was not linked)
    kept_in: str  # where its directory (and its logs) now are
    in_scan_dir: bool = False  # it lived in the scan directory itself (no link)


@dataclass
class ApplyResult:
    changes: list[Change] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)  # "mx", "mx/log"
    warnings: list[str] = field(default_factory=list)
    retired: list[Retired] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


# -- helpers ------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes | None:
    """A file of the service directory, None if missing; anything but a regular file (a
    directory, a FIFO) in the way is an error naming it."""
    try:
        return read_bounded(path)
    except FileNotFoundError:
        return None


def _text(data: bytes) -> list[str]:
    return data.decode("utf-8", "replace").splitlines(keepends=True)


def unified_diff(old: bytes | None, new: bytes | None, label: str) -> str:
    """A unified diff between two versions of a file (either may be absent)."""
    lines = difflib.unified_diff(
        _text(old or b""),
        _text(new or b""),
        "/dev/null" if old is None else f"a/{label}",
        "/dev/null" if new is None else f"b/{label}",
    )
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def read_state(service_dir: Path) -> dict[str, str]:
    """The hashes of the files we wrote last time (empty if never applied)."""
    data = _read(service_dir / STATE_FILE)
    if data is None:
        return {}
    try:
        files = json.loads(data)["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise InputError(
            "state file is damaged",
            path=service_dir / STATE_FILE,
            hint="remove it and run apply --force after checking the service's files",
        ) from None
    return {str(k): str(v) for k, v in files.items()}


@dataclass
class Pending:
    """What an apply still has to finish: written before its first file, removed at its end."""

    restart: list[str] = field(default_factory=list)  # "mx", "mx/log"
    written: dict[str, list[str]] = field(default_factory=dict)  # "mx/run" -> SHA-256s

    def ours(self, name: str, rel: str, digest: str) -> bool:
        return digest in self.written.get(f"{name}/{rel}", ())


def read_pending(root: Path) -> Pending | None:
    """The restarts (and files) an interrupted apply left unfinished; None if none."""
    path = root / PENDING_FILE
    try:
        data = read_bounded(path, follow=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        raw = json.loads(data)
        pending = Pending(
            [str(t) for t in raw["restart"]],
            {str(k): [str(d) for d in v] for k, v in raw["written"].items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(
            "pending-restart file is damaged",
            path=path,
            hint="remove it, restart the services whose files apply changed last "
            "(services status), then run apply again",
        ) from None
    return pending


def _write_pending(root: Path, pending: Pending) -> None:
    body = {"restart": pending.restart, "written": dict(sorted(pending.written.items()))}
    atomic_write(root / PENDING_FILE, (json.dumps(body, indent=1) + "\n").encode(), mode=0o644)


def _clear_pending(root: Path) -> None:
    try:
        (root / PENDING_FILE).unlink(missing_ok=True)
        fsync_dir(root)
    except OSError as err:
        raise os_error(err, "cannot remove the pending-restart file") from err


def _user_ids(name: str, what: str) -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise InputError(
            f"{what} {name!r} does not exist",
            hint=f"create the user (useradd -r {name}) or choose another in the config",
        ) from None
    return pw.pw_uid, pw.pw_gid


def _root_of(config: Any, root: str | os.PathLike[str] | None) -> Path:
    return Path(root if root is not None else config.supervisor.service_root)


def _rules_pairs(rendered: Mapping[str, Any]) -> list[tuple[str, Path, Path]]:
    """(service, rules source, cdb) once per distinct pair, in service order."""
    seen = set()
    pairs = []
    for name, svc in rendered.items():
        if not svc.rules:
            continue
        src, cdb = (Path(p) for p in svc.rules)
        if (src, cdb) in seen:
            continue
        seen.add((src, cdb))
        pairs.append((name, src, cdb))
    return pairs


# -- planning -----------------------------------------------------------------


def _plan_service(
    name: str,
    svc: Any,
    sdir: Path,
    log_ids: tuple[int, int] | None,
    pending: Pending,
    changes: list[Change],
    edited: list[Change],
) -> None:
    if not os.path.lexists(sdir):
        changes.append(Change(name, "new-service", "", detail=str(sdir)))
    elif not sdir.is_dir():
        raise QmailkitError(
            "exists but is not a directory",
            path=sdir,
            hint="move it away; apply creates the service directory here",
        )
    state = read_state(sdir) if sdir.is_dir() else {}

    for rel in _all_dirs(svc):
        d = sdir / rel
        if not d.is_dir():
            if os.path.lexists(d):
                raise QmailkitError(
                    "exists but is not a directory",
                    path=d,
                    hint="move it away; apply makes a directory here",
                )
            changes.append(Change(name, "mkdir", rel))
            continue
        if rel == LOG_DIR and log_ids is not None:
            st = d.stat()
            if (st.st_uid, st.st_gid) != log_ids:
                changes.append(Change(name, "owner", rel, detail=f"{log_ids[0]}:{log_ids[1]}"))

    for rel, (data, mode) in sorted(svc.files.items()):
        path = sdir / rel
        old = _read(path)
        if old is None:
            changes.append(Change(name, "create", rel, unified_diff(None, data, f"{name}/{rel}")))
            continue
        if old == data:
            if stat.S_IMODE(path.stat().st_mode) != mode:
                changes.append(Change(name, "mode", rel, detail=f"{mode:04o}"))
            continue
        recorded = state.get(rel)
        diff = unified_diff(old, data, f"{name}/{rel}")
        if recorded != _sha(old) and not pending.ours(name, rel, _sha(old)):
            why = "edited by hand since the last apply" if recorded else "not written by qmailkit"
            edited.append(Change(name, "edited", rel, diff, detail=why))
        else:
            changes.append(Change(name, "update", rel, diff))

    # files we wrote before that the config no longer produces
    for rel, digest in sorted(state.items()):
        if rel in svc.files:
            continue
        old = _read(sdir / rel)
        if old is not None and _sha(old) == digest:
            changes.append(Change(name, "remove", rel, unified_diff(old, None, f"{name}/{rel}")))


def _all_dirs(svc: Any) -> list[str]:
    """Every directory the service needs: the declared ones and the parents of its files."""
    dirs: set[str] = set(svc.dirs)
    for rel in svc.files:
        parent = os.path.dirname(rel)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    for rel in list(dirs):
        parent = os.path.dirname(rel)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def _plan_link(name: str, sdir: Path, scan_dir: Path, changes: list[Change]) -> None:
    if not scan_dir.is_dir():
        raise InputError(
            "scan directory does not exist",
            path=scan_dir,
            hint="create it and start the scanner (svscan, runsvdir or s6-svscan) on it, "
            "or set supervisor.scan_dir",
        )
    if scan_dir.resolve() == sdir.parent.resolve():
        return  # the service directories live in the scan directory itself
    link = scan_dir / name
    if link.is_symlink():
        # realpath, not resolve: a link loop must not raise, it just leads elsewhere
        if Path(os.readlink(link)) == sdir or os.path.realpath(link) == os.path.realpath(sdir):
            return
        raise InputError(
            f"scan directory entry points to {os.readlink(link)}, not to {sdir}",
            path=link,
            hint="remove the old link (stop that service first) and run apply again",
        )
    if os.path.lexists(link):
        raise InputError(
            "scan directory already has an entry that is not our link",
            path=link,
            hint="stop and move that service away, then run apply again",
        )
    changes.append(Change(name, "link", "", detail=f"{link} -> {sdir}"))


def _log_ids(svc: Any) -> tuple[int, int] | None:
    """uid/gid for log/main; only root can give files away, so None otherwise."""
    if os.geteuid() != 0 or not svc.log_owner:
        return None
    return _user_ids(svc.log_owner, "log user")


def _plan(
    config: Any, rendered: Mapping[str, Any], root: Path, prune: bool = False
) -> tuple[list[Change], list[Change]]:
    changes: list[Change] = []
    edited: list[Change] = []
    scan_dir = Path(config.supervisor.scan_dir)
    for name in rendered:
        _check_name_fits(root, name)
    pending = read_pending(root) or Pending()
    for target in pending.restart:
        name, _, log = target.partition("/")
        changes.append(Change(name, "restart", log, detail="left pending by an interrupted apply"))
    if prune:
        # first: a dropped service may hold a port or a name a new one needs
        changes += [r.change() for r in retirees(rendered, root, scan_dir) if r.retirable]
    for name, svc in rendered.items():
        _plan_service(name, svc, root / name, _log_ids(svc), pending, changes, edited)
        _plan_link(name, root / name, scan_dir, changes)
    for name, src, cdb in _rules_pairs(rendered):
        if _rules_stale(src, cdb):
            changes.append(Change(name, "rules", "", detail=f"{src} -> {cdb}"))
    return changes, edited


# the longest name apply makes from a service name: .retired-NAME-YYYYmmddTHHMMSS-NN
# (.NAME.qmailkit-new and .NAME.qmailkit-link.PID are shorter)
EXTRA_NAME_BYTES = len(RETIRED_PREFIX) + len("-YYYYmmddTHHMMSS-NN")


def _check_name_fits(root: Path, name: str) -> None:
    """Refuse, before anything is written, a service name the file system cannot hold with
    the names apply derives from it (a half-applied service otherwise)."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        name_max = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    size = len(os.fsencode(name))
    if size + EXTRA_NAME_BYTES > name_max:
        raise InputError(
            f"service name {name[:40]}... is {size} bytes: too long for this file system",
            path=root,
            hint=f"use at most {name_max - EXTRA_NAME_BYTES} bytes (apply also makes names "
            "like .retired-NAME-STAMP beside it)",
        )


def _rules_stale(src: Path, cdb: Path) -> bool:
    """The cdb is missing or older than its rules source (as cron.qmail judged it)."""
    try:
        src_m = src.stat().st_mtime_ns
    except FileNotFoundError:
        return False  # nothing to compile; reported as a warning
    try:
        return cdb.stat().st_mtime_ns < src_m
    except FileNotFoundError:
        return True


def plan(
    config: Any,
    rendered: Mapping[str, Any],
    root: str | os.PathLike[str] | None = None,
    *,
    prune: bool = False,
) -> list[Change]:
    """What ``apply`` would change, hand-edited files included (action ``edited``), and with
    ``prune`` the dropped services it would retire (action ``retire``).

    A rules source that would be compiled is parsed too: a bad rule is an InputError.
    """
    changes, edited = _plan(config, rendered, _root_of(config, root), prune)
    _parse_stale_rules(rendered)
    return changes + edited


# -- applying -----------------------------------------------------------------


def _write_service(
    name: str, svc: Any, sdir: Path, todo: list[Change], log_owner: tuple[int, int] | None
) -> None:
    try:
        for rel in _all_dirs(svc):
            d = sdir / rel
            d.mkdir(parents=True, exist_ok=True)
            if rel == LOG_DIR and log_owner is not None:
                st = d.stat()
                if (st.st_uid, st.st_gid) != log_owner:
                    _chown_tree(d, log_owner)
        actions = {c.path: c.action for c in todo if c.service == name}
        for rel, (data, mode) in sorted(svc.files.items()):
            action = actions.get(rel)
            if action in ("create", "update", "edited"):
                atomic_write(sdir / rel, data, mode=mode)
            elif action == "mode":
                os.chmod(sdir / rel, mode)
        for c in todo:
            if c.service == name and c.action == "remove":
                (sdir / c.path).unlink()
                fsync_dir((sdir / c.path).parent)
    except OSError as err:
        raise os_error(err, "cannot update the service directory") from err
    state = {rel: _sha(data) for rel, (data, _mode) in svc.files.items()}
    if state != _safe_state(sdir):
        body = json.dumps({"files": dict(sorted(state.items()))}, indent=1) + "\n"
        atomic_write(sdir / STATE_FILE, body.encode(), mode=0o644)


def _create_service(
    name: str, svc: Any, sdir: Path, todo: list[Change], log_owner: tuple[int, int] | None
) -> None:
    """Build a new service directory under a dot-name, then rename it into place.

    Scanners ignore names starting with a dot, so even when the service root is the scan
    directory itself, no supervisor ever sees a half-made service (a log/ without log/run).
    """
    tmp = sdir.parent / f".{sdir.name}.qmailkit-new"
    try:
        # left by an interrupted apply (we hold the lock); a link goes, never its target
        if tmp.is_dir() and not tmp.is_symlink():
            import shutil

            shutil.rmtree(tmp)
        elif os.path.lexists(tmp):
            tmp.unlink()
        tmp.mkdir(mode=0o755)
        _write_service(name, svc, tmp, todo, log_owner)
        os.rename(tmp, sdir)
        fsync_dir(sdir.parent)
    except OSError as err:
        raise os_error(err, "cannot create the service directory") from err


def _chown_tree(top: Path, owner: tuple[int, int]) -> None:
    """Give the log directory and what the old logger left in it (current, lock, state,
    rotated files) to the log user, so that the new logger can write there."""
    os.chown(top, *owner)
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            os.chown(os.path.join(dirpath, n), *owner, follow_symlinks=False)


def _safe_state(sdir: Path) -> dict[str, str]:
    try:
        return read_state(sdir)
    except InputError:
        return {}


def _link(link: Path, target: Path) -> None:
    """Create the symlink atomically (temp name, then rename), so a scanner never sees half."""
    tmp = link.parent / f".{link.name}.qmailkit-link.{os.getpid()}"
    try:
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(target, tmp)
        os.rename(tmp, link)
        fsync_dir(link.parent)
    except OSError as err:
        raise os_error(err, "cannot link the service into the scan directory") from err


def _rescan(kind: str, scan_dir: Path, letters: bytes = b"a") -> None:
    """Ask s6-svscan to look at the scan directory now (what ``s6-svscanctl -a`` does;
    ``an`` also ends the supervisors of entries that are gone, like ``s6-svscanctl -an``).

    svscan and runsvdir notice new entries by themselves (each looks at least every 5 s).
    """
    if kind != "s6":
        return
    fifo = scan_dir / ".s6-svscan" / "control"
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # no scanner running: the services start when it does
    try:
        os.write(fd, letters)
    finally:
        os.close(fd)


def _parse_stale_rules(rendered: Mapping[str, Any]) -> list[tuple[Path, Path, Any]]:
    """Parse every rules source whose cdb needs compiling, before anything is written, so a
    bad rule stops apply with its file and line while every file is still as it was."""
    from qmailkit import tcprules

    return [
        (src, cdb, tcprules.compile_source(src))
        for _name, src, cdb in _rules_pairs(rendered)
        if _rules_stale(src, cdb)
    ]


def _refuse_dangerous(config: Any, rendered: Mapping[str, Any]) -> None:
    from qmailkit.services.check import policy_errors

    found = policy_errors(config, rendered)
    if found:
        raise InputError(
            "refusing to install: "
            + "; ".join(f"{f.service}: {f.message} [{f.key}] ({f.hint})" for f in found),
            path=getattr(config, "path", None),
            hint="fix the config (qmailkit services check explains each finding)",
        )


def apply(
    config: Any,
    rendered: Mapping[str, Any] | None = None,
    root: str | os.PathLike[str] | None = None,
    *,
    dry_run: bool = False,
    force: bool = False,
    prune: bool = False,
) -> ApplyResult:
    """Bring the service directories in line with the config; see the module text.

    Raises InputError, before writing anything, when the config would open a
    relay (or force TLS or AUTH on the MX) — ``force`` does not override that —
    or when a file was edited by hand since the last apply and ``force`` is not set.
    With ``prune``, services dropped from the config are retired (``retire``);
    without it, each one only gets a warning.
    """
    if rendered is None:
        from qmailkit.services.render import render

        rendered = render(config)
    _refuse_dangerous(config, rendered)
    root_dir = _root_of(config, root)
    scan_dir = Path(config.supervisor.scan_dir)
    result = ApplyResult()
    for name, src, cdb in _rules_pairs(rendered):
        if not src.exists() and not cdb.exists():
            result.warnings.append(
                f"{name}: neither the tcp rules file {src} nor its cdb exists; the service "
                "will not start until they do"
            )

    if dry_run:
        result.changes = plan(config, rendered, root_dir, prune=prune)
        result.warnings += _dropped_warnings(rendered, root_dir, scan_dir, prune)
        return result

    try:
        root_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise os_error(err, "cannot create the service root") from err
    with locked(root_dir / LOCK_FILE, wait=10, what="another qmailkit services apply"):
        changes, edited = _plan(config, rendered, root_dir, prune)
        result.warnings += _dropped_warnings(rendered, root_dir, scan_dir, prune)
        if edited and not force:
            files = ", ".join(f"{c.service}/{c.path}" for c in edited)
            raise InputError(
                f"changed since the last apply, not overwritten: {files}",
                path=root_dir,
                hint="put the change into the config, or run apply --force to replace it",
            )
        todo = changes + edited
        result.changes = todo
        if not todo:
            if read_pending(root_dir) is not None:
                _clear_pending(root_dir)  # an interrupted apply that had nothing to restart
            result.warnings += _unreadable_rules(rendered)
            return result
        from qmailkit import tcprules

        parsed_rules = _parse_stale_rules(rendered)
        sup = _supervisor(config)
        # before the first file: what to restart, and which contents are ours, even if this
        # apply is killed halfway (the next one reads it)
        pending = _pending_after(read_pending(root_dir) or Pending(), rendered, todo)
        _write_pending(root_dir, pending)
        if any(c.action == "retire" for c in todo):
            retired, late = _retire(
                config.supervisor.kind,
                sup,
                root_dir,
                scan_dir,
                {c.service for c in todo if c.action == "retire"},
                rendered,
            )
            result.retired = retired
            result.warnings += late
        for name, svc in rendered.items():
            sdir = root_dir / name
            mine = [c for c in todo if c.service == name]
            if not mine:
                continue
            if any(c.action == "new-service" for c in mine):
                _create_service(name, svc, sdir, todo, _log_ids(svc))
            else:
                _write_service(name, svc, sdir, todo, _log_ids(svc))
        for _src, cdb, rules in parsed_rules:
            tcprules.compile_rules(rules, cdb)
        linked = False
        for c in todo:
            if c.action == "link":
                _link(scan_dir / c.service, root_dir / c.service)
                linked = True
        if linked:
            _rescan(config.supervisor.kind, scan_dir)
        result.restarted = _restart(sup, root_dir, pending.restart)
        _clear_pending(root_dir)
    result.warnings += _unreadable_rules(rendered)
    return result


def _unreadable_rules(rendered: Mapping[str, Any]) -> list[str]:
    """tcpserver opens its rules cdb after dropping privileges, for every connection: a cdb
    the service user cannot read drops every client (components.md, trap 9)."""
    from qmailkit.services.check import Account

    out = []
    for name, svc in rendered.items():
        for fc in getattr(svc.checks, "files", []):
            if fc.kind != "rules" or not os.path.exists(fc.path):
                continue
            try:
                reason = Account(fc.user).can_read(Path(fc.path))
            except KeyError:
                continue  # a missing user: services check says so
            if reason:
                out.append(
                    f"{name}: tcp rules {fc.path}: {reason}; tcpserver will drop every "
                    "connection (run qmailkit services check)"
                )
    return out


def _supervisor(config: Any):
    from qmailkit import supervisor

    return supervisor.get(config.supervisor.kind)


RESTART_ACTIONS = ("update", "edited", "remove", "create", "restart")
WRITE_ACTIONS = ("update", "edited", "create")


def _pending_after(before: Pending, rendered: Mapping[str, Any], todo: list[Change]) -> Pending:
    """``before`` (from an interrupted apply) plus what ``todo`` writes and restarts."""
    targets = list(before.restart)
    new = {c.service for c in todo if c.action == "new-service"}
    for c in todo:
        if c.action not in RESTART_ACTIONS or c.service in new:
            continue
        target = f"{c.service}/log" if c.path == "log" or c.path.startswith("log/") else c.service
        if target not in targets:
            targets.append(target)
    written = {k: list(v) for k, v in before.written.items()}
    for c in todo:
        if c.action in WRITE_ACTIONS:
            digest = _sha(rendered[c.service].files[c.path][0])
            key = f"{c.service}/{c.path}"
            if digest not in written.setdefault(key, []):
                written[key].append(digest)
    return Pending(targets, written)


def _restart(sup: Any, root_dir: Path, targets: list[str]) -> list[str]:
    """TERM + up every target ("mx", "mx/log") that is running: those whose files changed."""
    restarted = []
    for target in targets:
        d = root_dir / target
        status = sup.status(d)
        if status.supervised and status.up:
            sup.restart(d)
            restarted.append(target)
    return restarted


# -- retiring dropped services ------------------------------------------------


@dataclass
class Retiree:
    """A directory under the service root that apply made, for a service the config lost."""

    name: str
    sdir: Path
    in_scan_dir: bool  # the service root is the scan directory: no link, the dir is seen
    link: Path | None  # scan_dir/NAME when it is our symlink to sdir
    foreign: Path | None  # scan_dir/NAME when it is something else: left alone
    other_links: list[Path]  # other scan directory names that lead to sdir

    @property
    def retirable(self) -> bool:
        # linked under another name, the scanner would keep (or bring back) its supervisor
        return not self.other_links

    def change(self) -> Change:
        if self.in_scan_dir:
            detail = "in the scan directory"
        elif self.link is not None:
            detail = f"linked as {self.link}"
        else:
            detail = "not linked"
        if self.foreign is not None:
            detail += f"; {self.foreign} is not its link, left alone"
        return Change(self.name, "retire", "", detail=detail)


def retirees(rendered: Mapping[str, Any], root: Path, scan_dir: Path) -> list[Retiree]:
    """Every directory directly under ``root`` that holds our state file and whose name is
    no service of the config.  Dot-names (retired or half-made services) never are."""
    try:
        with os.scandir(root) as it:
            names = sorted(
                e.name
                for e in it
                if not e.name.startswith(".")
                and e.name not in rendered
                and e.is_dir(follow_symlinks=False)
            )
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as err:
        raise os_error(err, "cannot read the service root") from err
    in_scan = _same_dir(root, scan_dir)
    links = {} if in_scan else _scan_links(scan_dir)
    found = []
    for name in names:
        sdir = root / name
        if not (sdir / STATE_FILE).is_file():
            continue  # not made by qmailkit: not ours to stop
        target = sdir.resolve()
        mine = sorted(p for p, to in links.items() if to == target)
        entry = scan_dir / name
        link = entry if entry in mine else None
        foreign = entry if not in_scan and link is None and os.path.lexists(entry) else None
        found.append(Retiree(name, sdir, in_scan, link, foreign, [p for p in mine if p != entry]))
    return found


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _scan_links(scan_dir: Path) -> dict[Path, Path]:
    """The scan directory's symlinks and where they lead."""
    out = {}
    try:
        with os.scandir(scan_dir) as it:
            entries = [Path(e.path) for e in it if e.is_symlink()]
    except OSError:
        return {}
    for entry in entries:
        try:
            out[entry] = entry.resolve()
        except (OSError, RuntimeError):
            continue  # a link loop leads nowhere of ours
    return out


def _dropped_warnings(
    rendered: Mapping[str, Any], root: Path, scan_dir: Path, prune: bool
) -> list[str]:
    out = []
    for r in retirees(rendered, root, scan_dir):
        if not prune:
            out.append(f"{r.name}: in {root} but no longer in the config; apply --prune retires it")
        elif not r.retirable:
            out.append(
                f"{r.name}: no longer in the config, but still linked as "
                + ", ".join(str(p) for p in r.other_links)
                + "; not retired (remove that link first)"
            )
    return out


def _retire(
    kind: str, sup: Any, root: Path, scan_dir: Path, names: set[str], rendered: Mapping[str, Any]
) -> tuple[list[Retired], list[str]]:
    """Unlink, stop and move aside the named services; (what was retired, warnings)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    todo = [r for r in retirees(rendered, root, scan_dir) if r.name in names and r.retirable]
    where: dict[str, Path] = {}
    try:
        for r in todo:
            if r.link is not None:
                r.link.unlink(missing_ok=True)
            # in the scan directory itself, a dot-name is what hides it from the scanner
            where[r.name] = _move_aside(r.sdir, stamp) if r.in_scan_dir else r.sdir
        if any(r.link is not None for r in todo):
            fsync_dir(scan_dir)
    except OSError as err:
        raise os_error(err, "cannot unlink a retired service") from err

    dirs = [d for r in todo for d in (where[r.name], where[r.name] / "log") if d.is_dir()]
    if kind == "s6":
        _rescan(kind, scan_dir, b"an")  # rescan, and end the supervisors of vanished entries
    else:
        # daemontools: svc -dx on the service, then on its log: supervise exits once its
        # process is down, and svscan forgets an entry it no longer sees.  runit: runsvdir
        # TERMs the runsv of a vanished entry, but only at its next look (up to 5 s later,
        # or never if runsvdir is not running); "dx" (sv exit) has runsv stop the service,
        # then its logger, and exit now.  The link is gone, so no scanner starts it again.
        # (one runsv serves both: its log/supervise/control is only for the logger)
        told = dirs if kind == "daemontools" else [where[r.name] for r in todo]
        for d in told:
            try:
                if sup.is_supervised(d):
                    sup.control(d, "dx")
            except QmailkitError:
                pass  # gone meanwhile: what we wanted
    late = _wait_unsupervised(sup, dirs, STOP_TIMEOUT)

    warnings = []
    retired = []
    for r in todo:
        here = where[r.name]
        still = [_late(sup, r.name, d, here) for d in late if d in (here, here / "log")]
        if not r.in_scan_dir:
            where[r.name] = _move_aside(r.sdir, stamp)
        if still:
            warnings.append(
                f"{r.name}: still supervised {STOP_TIMEOUT:g} seconds after it was retired: "
                + ", ".join(still)
                + f" (its files are in {where[r.name]})"
            )
        retired.append(
            Retired(r.name, str(r.link) if r.link else None, str(where[r.name]), r.in_scan_dir)
        )
    return retired, warnings


def _late(sup: Any, name: str, d: Path, sdir: Path) -> str:
    label = name if d == sdir else f"{name}/log"
    st = sup.status(d)
    return f"{label} (pid {st.pid})" if st.up and st.pid else f"{label} (supervisor only)"


def _move_aside(sdir: Path, stamp: str) -> Path:
    """Rename ``sdir`` to ``.retired-NAME-STAMP`` beside it (a suffix if that is taken)."""
    base = f"{RETIRED_PREFIX}{sdir.name}-{stamp}"
    target = sdir.parent / base
    n = 1
    while os.path.lexists(target):
        n += 1
        target = sdir.parent / f"{base}-{n}"
    try:
        os.rename(sdir, target)
        fsync_dir(sdir.parent)
    except OSError as err:
        raise os_error(err, "cannot move the retired service aside") from err
    return target


def _wait_unsupervised(sup: Any, dirs: list[Path], timeout: float) -> list[Path]:
    """Poll until no supervisor reads the control FIFO of any of ``dirs``; those left."""
    deadline = time.monotonic() + timeout
    while True:
        left = [d for d in dirs if sup.is_supervised(d)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


# -- render --out -------------------------------------------------------------


def export(rendered: Mapping[str, Any], out: str | os.PathLike[str]) -> list[str]:
    """Write the rendered service directories under ``out`` for review; nothing else.

    ``out`` must be new (it is created) or an empty directory of this user that nobody
    else may write to: nobody can then plant a symlink under it that the writes would
    follow (render runs as root).  No owners, no rules, no links, no state.  Returns the
    paths written.
    """
    out_dir = Path(out)
    _fresh_dir(out_dir)
    written = []
    for name, svc in rendered.items():
        sdir = out_dir / name
        try:
            for d in [sdir, *(sdir / rel for rel in _all_dirs(svc))]:
                os.mkdir(d, 0o755)  # new: never an existing entry (or a link) reused
        except OSError as err:
            raise os_error(err, "cannot create directory") from err
        for rel, (data, mode) in sorted(
            svc.files.items(), key=lambda item: (item[0].count("/"), item[0])
        ):
            atomic_write(sdir / rel, data, mode=mode)
            written.append(f"{name}/{rel}")
    return written


def _fresh_dir(path: Path) -> None:
    """Create ``path``, or accept it when it is an empty directory only we can write to."""
    try:
        os.mkdir(path, 0o755)
        return
    except FileExistsError:
        pass
    except OSError as err:
        raise os_error(err, "cannot create the output directory") from err
    try:
        st = os.lstat(path)
        empty = stat.S_ISDIR(st.st_mode) and not os.listdir(path)
    except OSError as err:
        raise os_error(err, "cannot use the output directory") from err
    problem = None
    if not stat.S_ISDIR(st.st_mode):
        kind = "a file" if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)
        problem = f"is {kind}, not a directory"
    elif st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    elif st.st_mode & 0o022:
        problem = f"may be written by others (mode {stat.S_IMODE(st.st_mode):04o})"
    elif not empty:
        problem = "is not empty"
    if problem:
        raise InputError(
            f"output directory {problem}",
            path=path,
            hint="name a directory that does not exist yet; render creates it",
        )


# -- waiting --------------------------------------------------------------------


def wait_up(
    config: Any,
    targets: list[str],
    root: str | os.PathLike[str] | None = None,
    timeout: float = 10.0,
) -> list[str]:
    """Wait until every target ("mx", "mx/log") is up; returns those still not up.

    A scanner needs a moment to notice a new service (svscan and runsvdir up to 5 s,
    s6-svscan at once when told), so "applied" is not "running" yet.
    """
    import time

    sup = _supervisor(config)
    base = _root_of(config, root)
    waiting = list(targets)
    deadline = time.monotonic() + timeout
    while True:
        waiting = [t for t in waiting if not sup.status(base / t).up]
        if not waiting or time.monotonic() >= deadline:
            return waiting
        time.sleep(0.1)


def started_targets(result: ApplyResult) -> list[str]:
    """The services and loggers this apply created or restarted: the ones to wait for."""
    targets = []
    for c in result.changes:
        if c.action == "new-service":
            targets += [c.service, f"{c.service}/log"]
    return targets + [t for t in result.restarted if t not in targets]
