"""Install rendered service directories: make the changes ``plan`` lists.

``apply`` writes every file atomically with its exact mode, gives ``log/main`` to
the log user, compiles tcp rules, links new services into the scan directory
(asking the scanner to look, where it can be asked) and restarts, through their
supervisor (term + up), the services whose files changed.  Running it twice in a
row changes nothing.

An apply that is interrupted (kill -9, power loss) is finished by the next one:
before the first file is written, ``.qmailkit-pending`` in the service root
records the services to restart, those to link into the scan directory and the
SHA-256 of every file about to be written; it is removed once the restarts are
done.  The next apply restarts what is listed there, tells the scanner again
about the services it linked, and counts those files as its own.

A service dropped from the config is left running unless ``prune`` is set; then
it is retired (``qmailkit.services.retire``).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from qmailkit import supervisor, tcprules
from qmailkit.errors import InputError, QmailkitError, os_error
from qmailkit.fsutil import atomic_write, file_kind, fsync_dir, locked, open_regular, poll
from qmailkit.services import plan as planning
from qmailkit.services.check import Account, policy_errors
from qmailkit.services.config import Config
from qmailkit.services.plan import (
    LOG_DIR,
    PENDING_FILE,
    STATE_FILE,
    Change,
    Pending,
    Rendered,
    read_pending,
    read_state,
    sha,
)
from qmailkit.services.render import RenderedService, render
from qmailkit.services.retire import Retired, retire
from qmailkit.supervisor import Supervisor

__all__ = ["STATE_FILE", "ApplyResult", "apply", "export", "started_targets", "wait_up"]

LOCK_FILE = ".qmailkit-apply.lock"
LOCK_WAIT = 10.0  # seconds an apply waits for another one to finish

RESTART_ACTIONS = ("update", "edited", "remove", "create", "restart")
WRITE_ACTIONS = ("update", "edited", "create")


@dataclass
class ApplyResult:
    changes: list[Change] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)  # "mx", "mx/log"
    warnings: list[str] = field(default_factory=list)
    retired: list[Retired] = field(default_factory=list)


def apply(
    config: Config,
    rendered: Rendered | None = None,
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
        rendered = render(config)
    _refuse_dangerous(config, rendered)
    root_dir = planning.service_root(config, root)
    for name in rendered:  # before even the service root is made
        planning.check_name_fits(root_dir, name)
    scan_dir = Path(config.supervisor.scan_dir)
    result = ApplyResult()
    for name, src, cdb in planning.rules_pairs(rendered):
        if not src.exists() and not cdb.exists():
            result.warnings.append(
                f"{name}: neither the tcp rules file {src} nor its cdb exists; the service "
                "will not start until they do"
            )
    if dry_run:
        result.changes = planning.plan(config, rendered, root_dir, prune=prune)
        result.warnings += planning.dropped_warnings(rendered, root_dir, scan_dir, prune)
        return result
    try:
        root_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise os_error(err, "cannot create the service root") from err
    with locked(root_dir / LOCK_FILE, wait=LOCK_WAIT, what="another qmailkit services apply"):
        _apply_locked(config, rendered, root_dir, result, force=force, prune=prune)
    result.warnings += _unreadable_rules(rendered)
    return result


def _apply_locked(
    config: Config,
    rendered: Rendered,
    root_dir: Path,
    result: ApplyResult,
    *,
    force: bool,
    prune: bool,
) -> None:
    scan_dir = Path(config.supervisor.scan_dir)
    changes, edited = planning.changes(config, rendered, root_dir, prune)
    result.warnings += planning.dropped_warnings(rendered, root_dir, scan_dir, prune)
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
        return
    parsed_rules = planning.parse_stale_rules(rendered)
    sup = supervisor.get(config.supervisor.kind)
    # before the first file: what to restart, and which contents are ours, even if this
    # apply is killed halfway (the next one reads it)
    pending = _pending_after(read_pending(root_dir) or Pending(), rendered, todo)
    _write_pending(root_dir, pending)
    dropped = {c.service for c in todo if c.action == "retire"}
    if dropped:
        result.retired, late = retire(sup, root_dir, scan_dir, dropped, rendered)
        result.warnings += late
    for name, svc in rendered.items():
        _install_service(name, svc, root_dir / name, [c for c in todo if c.service == name])
    for _src, cdb, rules in parsed_rules:
        tcprules.compile_rules(rules, cdb)
    links = [c.service for c in todo if c.action == "link"]
    for name in links:
        _link(scan_dir / name, root_dir / name)
    if links or any(c.action == "rescan" for c in todo):
        sup.rescan(scan_dir)
    result.restarted = _restart(sup, root_dir, pending.restart)
    _clear_pending(root_dir)


def _refuse_dangerous(config: Config, rendered: Rendered) -> None:
    found = policy_errors(config, rendered)
    if found:
        raise InputError(
            "refusing to install: "
            + "; ".join(f"{f.service}: {f.message} [{f.key}] ({f.hint})" for f in found),
            path=config.path,
            hint="fix the config (qmailkit services check explains each finding)",
        )


def _unreadable_rules(rendered: Rendered) -> list[str]:
    """tcpserver opens its rules cdb after dropping privileges, for every connection: a cdb
    the service user cannot read drops every client (components.md, trap 9)."""
    out = []
    for name, svc in rendered.items():
        for fc in svc.checks.files:
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


# -- the pending-restart journal --------------------------------------------------------------


def _pending_after(before: Pending, rendered: Rendered, todo: list[Change]) -> Pending:
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
            digest = sha(rendered[c.service].files[c.path][0])
            key = f"{c.service}/{c.path}"
            if digest not in written.setdefault(key, []):
                written[key].append(digest)
    rescan = list(before.rescan)
    rescan += [c.service for c in todo if c.action == "link" and c.service not in rescan]
    return Pending(targets, written, rescan)


def _write_pending(root: Path, pending: Pending) -> None:
    body = {
        "restart": pending.restart,
        "written": dict(sorted(pending.written.items())),
        "rescan": pending.rescan,
    }
    atomic_write(root / PENDING_FILE, (json.dumps(body, indent=1) + "\n").encode(), mode=0o644)


def _clear_pending(root: Path) -> None:
    try:
        (root / PENDING_FILE).unlink(missing_ok=True)
        fsync_dir(root)
    except OSError as err:
        raise os_error(err, "cannot remove the pending-restart file") from err


# -- writing service directories ---------------------------------------------------------


def _install_service(name: str, svc: RenderedService, sdir: Path, mine: list[Change]) -> None:
    if not mine:
        return
    if any(c.action == "new-service" for c in mine):
        _create_service(svc, sdir, mine)
    else:
        _write_service(svc, sdir, mine)


def _write_service(svc: RenderedService, sdir: Path, mine: list[Change]) -> None:
    log_owner = planning.log_ids(svc)
    try:
        for rel in planning.all_dirs(svc):
            directory = sdir / rel
            directory.mkdir(parents=True, exist_ok=True)
            if rel == LOG_DIR and log_owner is not None:
                st = directory.stat()
                if (st.st_uid, st.st_gid) != log_owner:
                    _chown_tree(directory, log_owner)
        actions = {c.path: c.action for c in mine}
        for rel, (data, mode) in sorted(svc.files.items()):
            action = actions.get(rel)
            if action in WRITE_ACTIONS:
                atomic_write(sdir / rel, data, mode=mode)
            elif action == "mode":
                _chmod_regular(sdir / rel, mode)
        for c in mine:
            if c.action == "remove":
                (sdir / c.path).unlink()
                fsync_dir((sdir / c.path).parent)
    except OSError as err:
        raise os_error(err, "cannot update the service directory") from err
    state = {rel: sha(data) for rel, (data, _mode) in svc.files.items()}
    if state != _safe_state(sdir):
        body = json.dumps({"files": dict(sorted(state.items()))}, indent=1) + "\n"
        atomic_write(sdir / STATE_FILE, body.encode(), mode=0o644)


def _chmod_regular(path: Path, mode: int) -> None:
    """chmod, never through a symlink swapped in since the plan (log/main is the log
    user's: chmod by name could make root give any file that mode)."""
    fd = open_regular(path, follow=False)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _create_service(svc: RenderedService, sdir: Path, mine: list[Change]) -> None:
    """Build a new service directory under a dot-name, then rename it into place.

    Scanners ignore names starting with a dot, so even when the service root is the scan
    directory itself, no supervisor ever sees a half-made service (a log/ without log/run).
    """
    tmp = sdir.parent / f".{sdir.name}.qmailkit-new"
    try:
        # left by an interrupted apply (we hold the lock); a link goes, never its target
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp)
        elif os.path.lexists(tmp):
            tmp.unlink()
        tmp.mkdir(mode=0o755)
        _write_service(svc, tmp, mine)
        os.rename(tmp, sdir)
        fsync_dir(sdir.parent)
    except OSError as err:
        raise os_error(err, "cannot create the service directory") from err


def _chown_tree(top: Path, owner: tuple[int, int]) -> None:
    """Give the log directory and what the old logger left in it (current, lock, state,
    rotated files) to the log user, so that the new logger can write there."""
    os.chown(top, *owner)
    for dirpath, dirnames, filenames in os.walk(top):
        for entry in dirnames + filenames:
            os.chown(os.path.join(dirpath, entry), *owner, follow_symlinks=False)


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


def _restart(sup: Supervisor, root_dir: Path, targets: list[str]) -> list[str]:
    """TERM + up every target ("mx", "mx/log") that is running: those whose files changed."""
    restarted = []
    for target in targets:
        directory = root_dir / target
        status = sup.status(directory)
        if status.supervised and status.up:
            sup.restart(directory)
            restarted.append(target)
    return restarted


# -- render --out -------------------------------------------------------------


def export(rendered: Rendered, out: str | os.PathLike[str]) -> list[str]:
    """Write the rendered service directories under ``out`` for review; nothing else.

    ``out`` must be new (it is created) or an empty directory of this user that nobody
    else may write to: nobody can then plant a symlink under it that the writes would
    follow (render runs as root).  Everything under it is made through the directory's
    own descriptor (mkdir, then O_NOFOLLOW; files O_CREAT|O_EXCL|O_NOFOLLOW), so even a
    parent another user can write, where ``out`` itself could be renamed away and a
    symlink put in its place, changes nothing but where the review copy ends up.
    No owners, no rules, no links, no state.  Returns the paths written.
    """
    out_dir = Path(out)
    top = _fresh_dir(out_dir)
    written = []
    try:
        for name, svc in rendered.items():
            for rel in [name, *(f"{name}/{d}" for d in planning.all_dirs(svc))]:
                _make_dir_at(top, out_dir, rel)
            for rel, (data, mode) in sorted(
                svc.files.items(), key=lambda item: (item[0].count("/"), item[0])
            ):
                _write_new_at(top, out_dir, f"{name}/{rel}", data, mode)
                written.append(f"{name}/{rel}")
        os.fsync(top)
    except OSError as err:
        raise os_error(err, f"cannot write the review copy in {out_dir}") from err
    finally:
        os.close(top)
    return written


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parent_at(top: int, out_dir: Path, rel: str) -> tuple[int, str]:
    """(an fd of the directory holding ``rel``, its last name), never through a symlink."""
    *parents, last = rel.split("/")
    fd = os.dup(top)
    try:
        for part in parents:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError as err:
        os.close(fd)
        raise _at_error(err, "cannot open directory", out_dir / rel) from err
    return fd, last


def _at_error(err: OSError, what: str, path: Path) -> QmailkitError:
    """os_error for a call made through a directory fd (its filename is only the last name)."""
    return QmailkitError(f"{what}: {err.strerror or err}", path=path)


def _make_dir_at(top: int, out_dir: Path, rel: str) -> None:
    fd, last = _parent_at(top, out_dir, rel)
    try:
        os.mkdir(last, 0o755, dir_fd=fd)  # new: never an existing entry (or a link) reused
    except OSError as err:
        raise _at_error(err, "cannot create directory", out_dir / rel) from err
    finally:
        os.close(fd)


def _write_new_at(top: int, out_dir: Path, rel: str, data: bytes, mode: int) -> None:
    fd, last = _parent_at(top, out_dir, rel)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        out = os.open(last, flags, 0o600, dir_fd=fd)
    except OSError as err:
        os.close(fd)
        raise _at_error(err, "cannot create", out_dir / rel) from err
    try:
        with os.fdopen(out, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.fsync(fd)
    except OSError as err:
        raise _at_error(err, "cannot write", out_dir / rel) from err
    finally:
        os.close(fd)


def _fresh_dir(path: Path) -> int:
    """Create ``path`` (or accept an empty directory only we can write to); its fd.

    The checks are made on the opened directory (fstat, not a path), after the mkdir
    too: a directory swapped in between (another user's, a symlink) is refused.
    """
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise InputError(
            "its parent directory does not exist",
            path=path,
            hint="create the parent first; render creates only DIR itself",
        ) from None
    except OSError as err:
        raise os_error(err, "cannot create the output directory") from err
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise os_error(err, "cannot use the output directory") from err
        _refuse_out(path, _not_a_dir(path))
    try:
        problem = _out_problem(fd)
    except OSError as err:
        os.close(fd)
        raise os_error(err, "cannot use the output directory") from err
    if problem:
        os.close(fd)
        _refuse_out(path, problem)
    return fd


def _not_a_dir(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "is not a directory"
    kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
    return f"is {kind}, not a directory"


def _out_problem(fd: int) -> str | None:
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"may be written by others (mode {stat.S_IMODE(st.st_mode):04o})"
    if os.listdir(fd):
        return "is not empty"
    return None


def _refuse_out(path: Path, problem: str) -> NoReturn:
    raise InputError(
        f"output directory {problem}",
        path=path,
        hint="name a directory that does not exist yet; render creates it",
    )


# -- waiting --------------------------------------------------------------------


def wait_up(
    config: Config,
    targets: list[str],
    root: str | os.PathLike[str] | None = None,
    timeout: float = 10.0,
) -> list[str]:
    """Wait until every target ("mx", "mx/log") is up; returns those still not up.

    A scanner needs a moment to notice a new service (svscan and runsvdir up to 5 s,
    s6-svscan at once when told), so "applied" is not "running" yet.
    """
    sup = supervisor.get(config.supervisor.kind)
    base = planning.service_root(config, root)
    waiting = list(targets)

    def all_up() -> bool:
        waiting[:] = [t for t in waiting if not sup.status(base / t).up]
        return not waiting

    poll(all_up, timeout, 0.1)
    return waiting


def started_targets(result: ApplyResult) -> list[str]:
    """The services and loggers this apply created or restarted: the ones to wait for."""
    targets = []
    for c in result.changes:
        # a service (re)linked into the scan directory starts, whether new or not
        if c.action in ("new-service", "link", "rescan") and c.service not in targets:
            targets += [c.service, f"{c.service}/log"]
    return targets + [t for t in result.restarted if t not in targets]
