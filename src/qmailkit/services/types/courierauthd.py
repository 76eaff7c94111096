"""courierauthd: jms1's vpopmaild-protocol subset (login, quit, help) checking passwords
through courier-authlib, on 127.0.0.1.  The original's port is not known; 8901 (next
to vpopmaild's 8900) is qmailkit's default."""

from __future__ import annotations

from qmailkit.services import policy as P
from qmailkit.services import render as R
from qmailkit.services.config import Config, Option, Service, System, check_program

OPTIONS: dict[str, Option] = {
    **R.tcp_options("127.0.0.1", 8901, ""),
    "program": Option(
        "str", "courierauthd", "the courierauthd program", "", check=check_program, empty_ok=False
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
    return P.local_only(svc, "password checks (a guessing oracle)")
