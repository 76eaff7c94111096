"""courierpassd: password changes for webmail (poppassd protocol) on 127.0.0.1:106.

Runs as root (changing passwords needs it) and logs to stderr (``--stderr``)
so the lines reach the log service.
"""

from __future__ import annotations

from qmailkit.services import policy as P
from qmailkit.services import render as R
from qmailkit.services.config import (
    Config,
    Option,
    Service,
    System,
    check_one_line,
    check_program,
)
from qmailkit.services.shell import Word

OPTIONS: dict[str, Option] = {
    **R.tcp_options("127.0.0.1", 106, ""),
    "program": Option(
        "str", "courierpassd", "the courierpassd program", "", check=check_program, empty_ok=False
    ),
    "authservice": Option(
        "str", "", "courier-authlib service name (-s); empty = login", "", check=check_one_line
    ),
}

PROFILES: dict[str, dict[str, object]] = {}
DEFAULT_PROFILE: str | None = None


def validate(svc: Service, system: System) -> tuple[str, str, str] | None:
    return None


def build(svc: Service, config: Config) -> R.Built:
    args: list[Word] = ["--stderr"]
    if svc.options["authservice"]:
        args += ["-s", svc.options["authservice"]]
    return R.build_tcp_service(svc, config, OPTIONS, args)


def policy(svc: Service) -> list[P.Finding]:
    """For this host's programs only: never open to the world."""
    return P.local_only(svc, "password changes")
