"""The log service every service gets: ``log/run`` writing to ``log/main``.

``log/main`` is where convert-multilog reads.  Size and count follow multilog's
meaning (``s1048576 n1024``: files of up to 1 MiB, ``n`` files in all counting
``current``); each suite's logger line is its module's
(``qmailkit.supervisor.*.logger``).
"""

from __future__ import annotations

from qmailkit import supervisor
from qmailkit.services.config import Config, Service
from qmailkit.services.shell import Script, quote


def render(
    svc: Service, config: Config
) -> tuple[dict[str, tuple[bytes, int]], list[str], list[str]]:
    """Files, directories and programs of the log service of ``svc``."""
    kind = config.supervisor.kind
    user, size, count = svc.log_user, svc.log_size, svc.log_count
    logger = supervisor.get(kind).logger(user, size, count)
    script = Script(
        f'log service of "{svc.name}" ({kind})',
        config.path,
        [("log_user", user, ""), ("log_size", size, ""), ("log_count", count, "")],
        svc.options["path"],
        prelude=False,
    )
    if logger.comment:
        script.comment(logger.comment)
    script.line("exec " + " ".join(quote(word) for word in logger.command))
    files = {f"log/{rel}": (data, 0o644) for rel, data in logger.files.items()}
    files["log/run"] = (script.text().encode("utf-8"), 0o755)
    return files, ["log", "log/main"], list(logger.programs)
