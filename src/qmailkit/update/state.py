"""What ``qmailkit update`` remembers between passes: ``STATE_DIR/state.json``.

* **files**: per source its content digest (sha256) and the stat signature
  (mtime_ns, ctime_ns, size, inode) it was taken at.  The signature only
  decides when to hash again: a file whose signature is unchanged keeps its
  digest (a run with nothing changed hashes nothing); any difference, even
  an older mtime (``rsync -a``, ``cp -p``: the ctime and inode still move),
  means hashing, and only a different digest is a change.  A qmail control
  file is hashed by its *effective* content, as qmail's control_readfile
  reads it (``update.hup.effective_lines``): a comment-only edit is no change.
* **dirs**: per directory whose entries are sources (a home's ``.qmail*``
  files, a vpopmail domain's files) its signature and the names last seen.
* **targets**: per target the digests of the sources of its last successful
  build (``seen``), and the last attempt's time, result, key count, seconds
  taken and message (a refusal's reason).
* **restart**: the digests of the files qmail-send reads only at start, as
  the running qmail-send (pid, start ticks) read them.

The file is written atomically (``fsutil.atomic_file``) in a private directory
(``fsutil.private_dir``), and only after a target is installed, so a kill at
any moment loses at most work that the next pass redoes.  A state that is
missing, corrupt or of another version is ignored: everything is pending.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from typing import Any

from qmailkit import fsutil
from qmailkit.errors import QmailkitError, os_error
from qmailkit.update.hup import effective_lines

STATE_NAME = "state.json"
STATE_VERSION = 1
STATE_LIMIT = 256 * 2**20
LOCK_NAME = "lock"
MISSING = "missing"
_CHUNK = 1 << 20

Signature = tuple[int, int, int, int]


def signature(st: os.stat_result) -> Signature:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def content_digest(path: str, *, control: bool = False) -> str:
    """sha256 of the file's bytes (of its effective lines for a control file); MISSING
    when it does not exist.  Something that is not a regular file gets a digest of its
    kind, so the builder that reads it reports it (and a fix is seen as a change)."""
    try:
        fd = fsutil.open_regular(path)
    except FileNotFoundError:
        return MISSING
    except NotADirectoryError:
        return MISSING
    except fsutil.NotRegular as err:
        return "unreadable: " + err.message
    with open(fd, "rb") as fh:
        if control:
            data = fh.read(fsutil.READ_LIMIT)
            return hashlib.sha256(b"\n".join(effective_lines(data))).hexdigest()
        h = hashlib.sha256()
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
        return h.hexdigest()


@dataclass
class TargetRecord:
    """What is known of one target: the sources of its last build, and its last attempt."""

    seen: dict[str, str] = field(default_factory=dict)
    tried: dict[str, str] = field(default_factory=dict)  # sources of a refused/failed attempt
    time: float | None = None  # last attempt
    result: str = "never built"  # built, unchanged, refused, failed
    keys: int | None = None
    seconds: float | None = None
    message: str = ""
    built_time: float | None = None  # last success

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TargetRecord:
        rec = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        if not (isinstance(rec.seen, dict) and isinstance(rec.tried, dict)):
            raise ValueError("seen")
        return rec


@dataclass
class State:
    """The state of ``state_dir`` (``load``), changed by a pass and ``save``d."""

    state_dir: str
    files: dict[str, list[Any]] = field(default_factory=dict)  # path -> [*signature, digest]
    dirs: dict[str, list[Any]] = field(default_factory=dict)  # dir -> [*signature, names]
    targets: dict[str, TargetRecord] = field(default_factory=dict)
    restart: dict[str, Any] = field(default_factory=dict)  # {"holder": [pid, ticks], "seen": {}}
    derived: dict[str, Any] = field(default_factory=dict)  # what was read out of sources: homes
    hashed: int = 0  # digests computed in this process (the cost of a pass)

    # -- sources --------------------------------------------------------------------
    def digest(self, path: str, *, control: bool = False) -> str:
        """The digest of ``path`` now, hashing only when its stat signature changed."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            self.files.pop(path, None)
            return MISSING
        except OSError as err:
            return f"unreadable: {err.strerror}"
        sig = signature(st)
        known = self.files.get(path)
        if known is not None and tuple(known[:4]) == sig and stat.S_ISREG(st.st_mode):
            return str(known[4])
        self.hashed += 1
        found = content_digest(path, control=control)
        if stat.S_ISREG(st.st_mode):
            self.files[path] = [*sig, found]
        return found

    def entries(self, directory: str, wanted: Any) -> list[str]:
        """The names in ``directory`` that ``wanted(name)`` takes, listed again only when the
        directory's signature changed; [] for a missing directory."""
        try:
            st = os.stat(directory)
        except OSError:
            self.dirs.pop(directory, None)
            return []
        sig = signature(st)
        known = self.dirs.get(directory)
        if known is not None and tuple(known[:4]) == sig:
            return list(known[4])
        try:
            names = sorted(n for n in os.listdir(directory) if wanted(n))
        except OSError:
            return []
        self.dirs[directory] = [*sig, names]
        return names

    def record(self, name: str) -> TargetRecord:
        return self.targets.setdefault(name, TargetRecord())

    # -- persistence ------------------------------------------------------------------
    def save(self) -> None:
        fsutil.private_dir(self.state_dir)
        data = {
            "version": STATE_VERSION,
            "files": self.files,
            "dirs": self.dirs,
            "targets": {k: v.to_json() for k, v in self.targets.items()},
            "restart": self.restart,
            "derived": self.derived,
        }
        with fsutil.atomic_file(os.path.join(self.state_dir, STATE_NAME), mode=0o600) as fh:
            fh.write(json.dumps(data, separators=(",", ":"), sort_keys=True).encode() + b"\n")


def load(state_dir: str) -> State:
    """The state kept in ``state_dir``; an empty one when it is missing, unreadable,
    corrupt or of another version (never trusted: everything is then pending)."""
    path = os.path.join(state_dir, STATE_NAME)
    try:
        data = json.loads(fsutil.read_bounded(path, STATE_LIMIT, follow=False))
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return State(state_dir)
        files, dirs, restart = data["files"], data["dirs"], data["restart"]
        derived = data["derived"]
        tables = (files, dirs, restart, derived)
        if not all(isinstance(t, dict) for t in tables):
            return State(state_dir)
        for entry in (*files.values(), *dirs.values()):
            if not (isinstance(entry, list) and len(entry) == 5):
                return State(state_dir)
        targets = {str(k): TargetRecord.from_json(v) for k, v in data["targets"].items()}
    except (OSError, QmailkitError, ValueError, TypeError, KeyError, AttributeError):
        return State(state_dir)
    return State(state_dir, files, dirs, targets, restart, derived)


def lock(state_dir: str, *, wait: bool | float) -> Any:
    """The lock of one pass (``STATE_DIR/lock``): cron runs and the service never run a pass
    at the same time (each builder's own ``.FILE.lock`` keeps manual runs out)."""
    parent = os.path.dirname(os.path.abspath(state_dir))
    try:
        os.makedirs(parent, 0o755, exist_ok=True)
    except OSError as err:
        raise os_error(err, "cannot make the state directory's parent") from err
    fsutil.private_dir(state_dir)
    return fsutil.locked(
        os.path.join(state_dir, LOCK_NAME), wait=wait, what="another qmailkit update"
    )
