"""What ``services apply`` would change: compare what ``render`` produced with the disk.

``plan`` returns the list of changes (with a unified diff per file) without touching
anything: new services, directories, files created, updated, removed or given a new
mode, log directories to hand to the log user, tcp rules to compile, links to make in
the scan directory, restarts (and scanner rescans) an interrupted apply left pending, and
(with ``prune``)
the dropped services to retire.

Hand edits are never lost silently: each service directory keeps a small state file
(``.qmailkit-state``) with the SHA-256 of every file apply wrote.  A file whose
content no longer matches what was written (or that exists but was never written by
qmailkit) is planned as ``edited``; replacing it needs ``force``.  The pending-restart
journal (``.qmailkit-pending``, see ``install``) counts as written by us.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import pwd
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qmailkit import tcprules
from qmailkit.errors import InputError, QmailkitError, os_error
from qmailkit.fsutil import read_bounded
from qmailkit.services.config import Config
from qmailkit.services.render import RenderedService

STATE_FILE = ".qmailkit-state"
PENDING_FILE = ".qmailkit-pending"
LOG_DIR = "log/main"
RETIRED_PREFIX = ".retired-"
# the longest name apply makes from a service name: .retired-NAME-YYYYmmddTHHMMSS-NN
# (.NAME.qmailkit-new and .NAME.qmailkit-link.PID are shorter)
EXTRA_NAME_BYTES = len(RETIRED_PREFIX) + len("-YYYYmmddTHHMMSS-NN")

Rendered = Mapping[str, RenderedService]


@dataclass
class Change:
    """One thing ``apply`` does (or would do) to one service."""

    service: str
    action: str  # new-service, mkdir, create, update, remove, mode, owner, rules, link, edited,
    #              retire, restart and rescan (left pending by an interrupted apply)
    path: str  # relative to the service directory ("" for the directory itself)
    diff: str = ""  # unified diff for created/updated/removed files
    detail: str = ""

    def describe(self) -> str:
        where = f"{self.service}/{self.path}" if self.path else self.service
        text = f"{self.action:<11} {where}"
        return f"{text}  ({self.detail})" if self.detail else text


# -- the files on disk ----------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_file(path: Path) -> bytes | None:
    """A file of the service directory, None if missing; anything but a regular file (a
    directory, a FIFO, a symlink: never followed) in the way is an error naming it.

    log/main belongs to the log user: a symlink there to a file only root may read
    would otherwise put that file's text into apply's diff."""
    try:
        return read_bounded(path, follow=False)
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
    data = read_file(service_dir / STATE_FILE)
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
    # services linked into the scan directory: a scanner that looks only when told (s6)
    # never starts them if the kill came between the link and the telling
    rescan: list[str] = field(default_factory=list)

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
            [str(n) for n in raw.get("rescan", [])],
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(
            "pending-restart file is damaged",
            path=path,
            hint="remove it, restart the services whose files apply changed last "
            "(services status), then run apply again",
        ) from None
    return pending


def service_root(config: Config, root: str | os.PathLike[str] | None) -> Path:
    return Path(root if root is not None else config.supervisor.service_root)


def all_dirs(svc: RenderedService) -> list[str]:
    """Every directory the service needs: the declared ones and the parents of its files."""
    dirs: set[str] = set(svc.dirs)
    for rel in [*svc.files, *svc.dirs]:
        parent = os.path.dirname(rel)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    return sorted(dirs, key=lambda d: (d.count("/"), d))


def user_ids(name: str, what: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise InputError(
            f"{what} {name!r} does not exist",
            hint=f"create the user (useradd -r {name}) or choose another in the config",
        ) from None
    return entry.pw_uid, entry.pw_gid


def log_ids(svc: RenderedService) -> tuple[int, int] | None:
    """uid/gid for log/main; only root can give files away, so None otherwise."""
    if os.geteuid() != 0 or not svc.log_owner:
        return None
    return user_ids(svc.log_owner, "log user")


# -- tcp rules --------------------------------------------------------------------------------


def rules_pairs(rendered: Rendered) -> list[tuple[str, Path, Path]]:
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


def rules_stale(src: Path, cdb: Path) -> bool:
    """The cdb is missing or older than its rules source (as cron.qmail judged it)."""
    try:
        src_m = src.stat().st_mtime_ns
    except FileNotFoundError:
        return False  # nothing to compile; reported as a warning
    try:
        return cdb.stat().st_mtime_ns < src_m
    except FileNotFoundError:
        return True


def parse_stale_rules(rendered: Rendered) -> list[tuple[Path, Path, tcprules.Rules]]:
    """Parse every rules source whose cdb needs compiling, before anything is written, so a
    bad rule stops apply with its file and line while every file is still as it was."""
    return [
        (src, cdb, tcprules.compile_source(src))
        for _name, src, cdb in rules_pairs(rendered)
        if rules_stale(src, cdb)
    ]


# -- one service ----------------------------------------------------------------------------


@dataclass
class _ServicePlan:
    """The planning of one service directory: what changes, and what was edited by hand."""

    name: str
    svc: RenderedService
    sdir: Path
    pending: Pending
    changes: list[Change]
    edited: list[Change]

    def plan(self, log_owner: tuple[int, int] | None) -> None:
        if not os.path.lexists(self.sdir):
            self.changes.append(Change(self.name, "new-service", "", detail=str(self.sdir)))
        elif not self.sdir.is_dir():
            raise QmailkitError(
                "exists but is not a directory",
                path=self.sdir,
                hint="move it away; apply creates the service directory here",
            )
        state = read_state(self.sdir) if self.sdir.is_dir() else {}
        self.dirs(log_owner)
        self.files(state)
        self.removed(state)

    def dirs(self, log_owner: tuple[int, int] | None) -> None:
        for rel in all_dirs(self.svc):
            directory = self.sdir / rel
            if not directory.is_dir():
                if os.path.lexists(directory):
                    raise QmailkitError(
                        "exists but is not a directory",
                        path=directory,
                        hint="move it away; apply makes a directory here",
                    )
                self.changes.append(Change(self.name, "mkdir", rel))
            elif rel == LOG_DIR and log_owner is not None:
                st = directory.stat()
                if (st.st_uid, st.st_gid) != log_owner:
                    detail = f"{log_owner[0]}:{log_owner[1]}"
                    self.changes.append(Change(self.name, "owner", rel, detail=detail))

    def files(self, state: dict[str, str]) -> None:
        for rel, (data, mode) in sorted(self.svc.files.items()):
            path = self.sdir / rel
            label = f"{self.name}/{rel}"
            if path.is_symlink():
                why = f"a symbolic link to {os.readlink(path)}, not followed"
                diff = unified_diff(None, data, label)
                self.edited.append(Change(self.name, "edited", rel, diff, detail=why))
                continue
            old = read_file(path)
            if old is None:
                self.changes.append(
                    Change(self.name, "create", rel, unified_diff(None, data, label))
                )
            elif old == data:
                if stat.S_IMODE(path.lstat().st_mode) != mode:
                    self.changes.append(Change(self.name, "mode", rel, detail=f"{mode:04o}"))
            elif state.get(rel) != sha(old) and not self.pending.ours(self.name, rel, sha(old)):
                why = (
                    "edited by hand since the last apply"
                    if state.get(rel)
                    else "not written by qmailkit"
                )
                self.edited.append(
                    Change(self.name, "edited", rel, unified_diff(old, data, label), detail=why)
                )
            else:
                self.changes.append(
                    Change(self.name, "update", rel, unified_diff(old, data, label))
                )

    def removed(self, state: dict[str, str]) -> None:
        """Files we wrote before that the config no longer produces."""
        for rel, digest in sorted(state.items()):
            if rel in self.svc.files or (self.sdir / rel).is_symlink():
                continue  # a link is not what we wrote: left alone
            old = read_file(self.sdir / rel)
            if old is not None and sha(old) == digest:
                diff = unified_diff(old, None, f"{self.name}/{rel}")
                self.changes.append(Change(self.name, "remove", rel, diff))


def _plan_link(name: str, sdir: Path, scan_dir: Path) -> Change | None:
    if not scan_dir.is_dir():
        raise InputError(
            "scan directory does not exist",
            path=scan_dir,
            hint="create it and start the scanner (svscan, runsvdir or s6-svscan) on it, "
            "or set supervisor.scan_dir",
        )
    if scan_dir.resolve() == sdir.parent.resolve():
        return None  # the service directories live in the scan directory itself
    link = scan_dir / name
    if link.is_symlink():
        # realpath, not resolve: a link loop must not raise, it just leads elsewhere
        if Path(os.readlink(link)) == sdir or os.path.realpath(link) == os.path.realpath(sdir):
            return None
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
    return Change(name, "link", "", detail=f"{link} -> {sdir}")


def check_name_fits(root: Path, name: str) -> None:
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


def changes(
    config: Config, rendered: Rendered, root: Path, prune: bool = False
) -> tuple[list[Change], list[Change]]:
    """(the changes, the files edited by hand) to bring ``root`` in line with ``rendered``."""
    todo: list[Change] = []
    edited: list[Change] = []
    scan_dir = Path(config.supervisor.scan_dir)
    for name in rendered:
        check_name_fits(root, name)
    pending = read_pending(root) or Pending()
    for target in pending.restart:
        name, _, log = target.partition("/")
        todo.append(Change(name, "restart", log, detail="left pending by an interrupted apply"))
    if prune:
        # first: a dropped service may hold a port or a name a new one needs
        todo += [r.change() for r in retirees(rendered, root, scan_dir) if r.retirable]
    for name, svc in rendered.items():
        _ServicePlan(name, svc, root / name, pending, todo, edited).plan(log_ids(svc))
        link = _plan_link(name, root / name, scan_dir)
        if link is not None:
            todo.append(link)
    linking = {c.service for c in todo if c.action == "link"}
    for name in pending.rescan:
        if name in rendered and name not in linking:
            todo.append(Change(name, "rescan", "", detail="left pending by an interrupted apply"))
    for name, src, cdb in rules_pairs(rendered):
        if rules_stale(src, cdb):
            todo.append(Change(name, "rules", "", detail=f"{src} -> {cdb}"))
    return todo, edited


def plan(
    config: Config,
    rendered: Rendered,
    root: str | os.PathLike[str] | None = None,
    *,
    prune: bool = False,
) -> list[Change]:
    """What ``apply`` would change, hand-edited files included (action ``edited``), and with
    ``prune`` the dropped services it would retire (action ``retire``).

    A rules source that would be compiled is parsed too: a bad rule is an InputError.
    """
    todo, edited = changes(config, rendered, service_root(config, root), prune)
    parse_stale_rules(rendered)
    return todo + edited


# -- services dropped from the config ---------------------------------------------------------


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


def retirees(rendered: Rendered, root: Path, scan_dir: Path) -> list[Retiree]:
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


def dropped_warnings(rendered: Rendered, root: Path, scan_dir: Path, prune: bool) -> list[str]:
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
