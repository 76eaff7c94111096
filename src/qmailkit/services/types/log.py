"""The log service every service gets: ``log/run`` writing to ``log/main``.

``log/main`` is where convert-multilog reads.  Size and count follow multilog's
meaning (``s1048576 n1024``: files of up to 1 MiB, ``n`` files in all counting
``current``).  multilog keeps n-1 old files while svlogd and s6-log keep n, so
they are given n-1 to keep the same number.
"""

from __future__ import annotations

from qmailkit.services.config import Config, Service
from qmailkit.services.shell import Script, quote


def render(
    svc: Service, config: Config
) -> tuple[dict[str, tuple[bytes, int]], list[str], list[str]]:
    """Files, directories and programs of the log service of ``svc``."""
    kind = config.supervisor.kind
    user, size, count = svc.log_user, svc.log_size, svc.log_count
    script = Script(
        f'log service of "{svc.name}" ({kind})',
        config.path,
        [("log_user", user, ""), ("log_size", size, ""), ("log_count", count, "")],
        svc.options["path"],
        prelude=False,
    )
    files: dict[str, tuple[bytes, int]] = {}
    if kind == "daemontools":
        programs = ["setuidgid", "multilog"]
        script.line(f"exec setuidgid {quote(user)} multilog t s{size} n{count} ./main")
    elif kind == "runit":
        programs = ["chpst", "svlogd"]
        script.comment(
            f"Size and count are in main/config (n{count - 1}: svlogd keeps n old "
            "files, multilog n-1)."
        )
        script.line(f"exec chpst -u {quote(user)} svlogd -t ./main")
        files["log/main/config"] = (f"s{size}\nn{count - 1}\n".encode(), 0o644)
    else:
        programs = ["s6-setuidgid", "s6-log"]
        script.comment(f"n{count - 1}: s6-log keeps n old files, multilog n-1.")
        script.line(f"exec s6-setuidgid {quote(user)} s6-log t s{size} n{count - 1} ./main")
    files["log/run"] = (script.text().encode("utf-8"), 0o755)
    return files, ["log", "log/main"], programs
