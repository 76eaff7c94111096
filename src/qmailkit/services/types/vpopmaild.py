"""vpopmaild: vpopmail's administration daemon, as the vpopmail user on 127.0.0.1:8900
(the original's setting since 2012)."""

from __future__ import annotations

from qmailkit.services import policy as P
from qmailkit.services import render as R
from qmailkit.services.config import Config, Option, Service, System, check_program

OPTIONS: dict[str, Option] = {
    **R.tcp_options("127.0.0.1", 8900, "vpopmail"),
    "program": Option(
        "str",
        lambda system: system.vpopmail_home + "/bin/vpopmaild",
        "the vpopmaild program",
        "",
        check=check_program,
        empty_ok=False,
    ),
}

PROFILES: dict[str, dict[str, object]] = {}
DEFAULT_PROFILE: str | None = None


def validate(svc: Service, system: System) -> tuple[str, str, str] | None:
    return None


def build(svc: Service, config: Config) -> R.Built:
    return R.build_tcp_service(svc, config, OPTIONS, [])


def policy(svc: Service) -> list[P.Finding]:
    """For this host's programs only: never open to the world."""
    return P.local_only(
        svc, "vpopmail's administration protocol (add, delete, change any account)"
    ) + _root_policy(svc)


def _root_policy(svc: Service) -> list[P.Finding]:
    if svc.options["user"] != "root":
        return []
    return [
        P.warning(
            svc,
            "user",
            "vpopmaild runs as root: a flaw in it gives root",
            'run it as the vpopmail account (user = "vpopmail")',
        )
    ]
