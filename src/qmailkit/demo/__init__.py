"""``qmailkit demo``: a guided tour in a throw-away sandbox.

Each feature has a module here with ``run(sandbox, say)``; they run in the
order of PARTS, each in its own sub-directory of one sandbox.  A part whose
module is missing is skipped, so the demo grows with the package.
"""

from __future__ import annotations

import importlib
import stat
from collections.abc import Callable
from pathlib import Path

from qmailkit.errors import InputError, os_error
from qmailkit.fsutil import file_kind

PARTS = (
    ("logs", "Logs: multilog files to dated, readable files"),
    ("cdb", "Constant databases and tcpserver rules"),
    ("rcpt", "Valid recipients (validrcptto.cdb)"),
    ("services", "Supervised services from one config file"),
)


def sandbox_dir(path: Path) -> Path:
    """Make ``path`` (its parent must exist) or take it if it is a real directory already.

    A missing parent is refused rather than created (a typo would otherwise
    make /nonexist/...), and so is a symlink: the demo writes only below the
    sandbox it names.
    """
    try:
        path.mkdir()
    except FileNotFoundError:
        raise InputError(
            "its parent directory does not exist",
            path=path,
            hint="create the parent first, or leave out --dir",
        ) from None
    except FileExistsError:
        mode = path.lstat().st_mode
        if not stat.S_ISDIR(mode):
            kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
            raise InputError(
                f"is {kind}, not a directory",
                path=path,
                hint="name a new or an existing directory for the sandbox",
            ) from None
    except NotADirectoryError:
        raise InputError(
            "a part of its parent is not a directory",
            path=path,
            hint="name a directory whose parents are directories, or leave out --dir",
        ) from None
    except OSError as err:  # a name too long, a read-only place
        raise os_error(err, "cannot create the sandbox directory") from err
    return path


def run(sandbox: Path, say: Callable[[str], None], only: list[str] | None = None) -> list[str]:
    """Run the demo parts in ``sandbox``; returns the names of the parts that ran."""
    ran = []
    for name, title in PARTS:
        if only and name not in only:
            continue
        try:
            module = importlib.import_module(f"qmailkit.demo.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"qmailkit.demo.{name}":
                raise
            continue
        say("")
        say(f"== {title} ==")
        part_dir = sandbox_dir(sandbox / name)
        module.run(part_dir, say)
        ran.append(name)
    return ran
