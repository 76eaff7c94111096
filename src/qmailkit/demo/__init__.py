"""``qmailkit demo``: a guided tour in a throw-away sandbox.

Each feature has a module here with ``run(sandbox, say)``; they run in the
order of PARTS, each in its own sub-directory of one sandbox.  A part whose
module is missing is skipped, so the demo grows with the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

PARTS = (
    ("logs", "Logs: multilog files to dated, readable files"),
    ("cdb", "Constant databases and tcpserver rules"),
    ("rcpt", "Valid recipients (validrcptto.cdb)"),
    ("services", "Supervised services from one config file"),
)


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
        part_dir = sandbox / name
        part_dir.mkdir(parents=True, exist_ok=True)
        module.run(part_dir, say)
        ran.append(name)
    return ran
