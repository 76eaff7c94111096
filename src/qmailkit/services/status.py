"""Status of every configured service and its logger, read from the supervisors' files.

One row per service directory (``mx`` and ``mx/log``), decoded from
``supervise/status`` by ``qmailkit.supervisor`` -- no svstat/sv/s6-svstat per
service.  A directory that does not exist yet is ``missing`` (not applied);
one nobody supervises is ``unsupervised`` (not linked, or the scanner is not
running).  A directory whose supervisor is of another suite than the config's
``[supervisor] kind`` (each leaves its own traces in ``supervise/``) is read as
that suite's, and the row says which (``run_by``): the config is then wrong.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from qmailkit import supervisor
from qmailkit.services.config import Config
from qmailkit.supervisor import Supervisor


@dataclass(frozen=True)
class Row:
    name: str  # "mx" or "mx/log"
    path: str
    state: str  # up, down, unsupervised, missing
    pid: int | None = None
    seconds: int | None = None
    normally_up: bool | None = None
    want: str | None = None  # "up"/"down" when it differs from the state
    paused: bool = False
    ready: bool | None = None
    run_by: str | None = None  # the suite supervising it, when not the config's kind

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def collect(config: Config, root: str | os.PathLike[str] | None = None) -> list[Row]:
    """One row per configured service and per logger, in config order."""
    sup = supervisor.get(config.supervisor.kind)
    base = Path(root if root is not None else config.supervisor.service_root)
    rows = []
    for name in config.services:
        sdir = base / name
        rows.append(_row(sup, name, sdir))
        if (sdir / "log").is_dir() or not sdir.is_dir():
            rows.append(_row(sup, f"{name}/log", sdir / "log"))
    return rows


def _row(sup: Supervisor, name: str, path: Path) -> Row:
    if not path.is_dir():
        return Row(name, str(path), "missing")
    st = sup.status(path)
    if not st.supervised:
        return Row(name, str(path), "unsupervised", normally_up=st.normally_up)
    run_by = supervisor.detect(path)
    if run_by is not None and run_by != sup.kind:
        st = supervisor.get(run_by).status(path)  # its own record, read the way it is written
    else:
        run_by = None
    return Row(
        name,
        str(path),
        "up" if st.up else "down",
        pid=st.pid,
        seconds=st.seconds,
        normally_up=st.normally_up,
        want=st.want,
        paused=st.paused,
        ready=st.ready,
        run_by=run_by,
    )


HEADER = ("SERVICE", "STATE", "PID", "SECONDS", "NORMALLY", "WANT")


def format_table(rows: list[Row]) -> str:
    """A plain text table, one line per row, columns aligned."""
    lines = [HEADER]
    for r in rows:
        state = r.state + (", paused" if r.paused else "")
        lines.append(
            (
                r.name,
                state,
                "-" if r.pid is None else str(r.pid),
                "-" if r.seconds is None else str(r.seconds),
                "-" if r.normally_up is None else ("up" if r.normally_up else "down"),
                r.want or "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = []
    for line in lines:
        cells = [cell.ljust(w) for cell, w in zip(line, widths, strict=True)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def to_json(rows: list[Row]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=1) + "\n"


def wrong_kind(rows: list[Row]) -> dict[str, list[str]]:
    """The rows supervised by another suite than the config says, by suite."""
    out: dict[str, list[str]] = {}
    for r in rows:
        if r.run_by:
            out.setdefault(r.run_by, []).append(r.name)
    return out


def problems(rows: list[Row]) -> list[Row]:
    """Rows that are not as they should be: not up while normally up, or not running at all."""
    return [r for r in rows if r.state != "up" and r.normally_up is not False]
